"""``workbench archive postgres`` and ``workbench snapshot postgres``."""

from __future__ import annotations

from pathlib import Path

import typer

from workbench.cli._app import (
    archive_app,
    console,
    notice,
    progress_bar,
    refuse_without,
    sigterm_as_interrupt,
    snapshot_app,
)
from workbench.errors import WorkbenchError

_DSN_HELP = "PostgreSQL URI or key=value string (its password is never printed)."


@archive_app.command("postgres")
def archive_postgres_command(
    ctx: typer.Context,
    dsn: str = typer.Option(..., "--dsn", help=_DSN_HELP),
    preset: str | None = typer.Option(
        None,
        "--preset",
        help="message-db (the default), marten, emmett, eventsourcing or generic. With no "
        "--preset and no --map, the archive's next run archives as the run before did.",
    ),
    table: str | None = typer.Option(None, "--table", help="SCHEMA.TABLE (default: the preset's)."),
    mappings: list[str] = typer.Option(
        [],
        "--map",
        help="FIELD=SPEC, SPEC one of column:NAME, const:VALUE, data:PATH, metadata:PATH "
        '(keys joined by dots; a key holding dots in double quotes: metadata:"a.b").',
    ),
    out: Path = typer.Option(..., "--out", help="Archive directory."),
    follow: bool = typer.Option(False, "--follow", help="Keep archiving new events."),
    idle_exit: float | None = typer.Option(
        None, "--idle-exit", min=0, help="With --follow: stop after SECONDS without new events."
    ),
    poll_interval: float = typer.Option(
        0.5, "--poll-interval", min=0.01, help="Seconds between polls."
    ),
    batch_size: int = typer.Option(100_000, "--batch-size", min=1, help="Rows per archive file."),
    settle_timeout: float = typer.Option(
        60.0,
        "--settle-timeout",
        min=0,
        help="Seconds to wait for transactions that hold a hole before stopping at it.",
    ),
    settle_grace: float | None = typer.Option(
        None,
        "--settle-grace",
        min=0,
        help="Seconds a hole must also stay empty before it is final (default: the preset's; "
        "marten 3).",
    ),
    holes: str = typer.Option(
        "rolled-back",
        "--holes",
        help="What a hole in the positions is once no transaction can fill it: rolled-back "
        "(a sequence's, the default) or deleted (a store numbering its events without gaps, "
        "as Commanded's $all stream: the gap check then fails on it).",
    ),
    cipher_key: str | None = typer.Option(
        None,
        "--cipher-key",
        help="eventsourcing: the store's CIPHER_KEY (default: <APP>_CIPHER_KEY for an "
        "<app>_events table, then CIPHER_KEY, from the environment, as the library reads them).",
    ),
    remap: bool = typer.Option(
        False,
        "--remap",
        help="Archive with this --preset/--map from here on though the archive was written "
        "with another (the events before keep theirs).",
    ),
) -> None:
    """Archive a Postgres event store; no late-committing transaction is ever skipped.

    With --follow, SIGINT or SIGTERM ends the run after the current poll and
    prints its summary.
    """
    refuse_without(ctx, "--follow", follow, "idle_exit")
    from workbench.sources.postgres import archive_postgres

    # A one-shot run stopped by SIGINT or SIGTERM keeps the files it wrote, as the
    # JetStream archiver does (a --follow run ends after its poll, with its summary).
    with sigterm_as_interrupt(sigint=True) as signalled, progress_bar() as bar:
        task = bar.add_task("archiving", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=max(total, done))

        try:
            result = archive_postgres(
                dsn,
                out,
                preset=preset,
                table=table,
                mappings=mappings,
                follow=follow,
                idle_exit=idle_exit,
                poll_interval=poll_interval,
                settle_timeout=settle_timeout,
                settle_grace=settle_grace,
                holes=holes,
                remap=remap,
                batch_size=batch_size,
                cipher_key=cipher_key,
                progress=progress,
            )
        except (KeyboardInterrupt, WorkbenchError) as exc:
            # ADBC answers a Ctrl-C inside a query itself, by cancelling it: the error
            # says "due to user request" (a statement timeout says otherwise).
            cancelled = "canceling statement due to user request" in str(exc)
            if not (signalled.is_set() or cancelled):
                raise
            notice(
                "stopped",
                "by a signal; the events archived before it are kept (run again to go on)",
                style="yellow",
            )
            raise typer.Exit(130) from None
    console.print(result.summary(), highlight=False, soft_wrap=True)
    if result.late:  # events the archive can never hold: a finding, not a usage error
        raise typer.Exit(1)


@snapshot_app.command("postgres")
def snapshot_postgres_command(
    dsn: str = typer.Option(..., "--dsn", help=_DSN_HELP),
    table: str = typer.Option(..., "--table", help="The read model, SCHEMA.TABLE."),
    # Text, not a Path: a trailing slash (a directory meant) must reach the check.
    out: str = typer.Option(..., "--out", help="The snapshot file, FILE.parquet."),
    events_table: str | None = typer.Option(
        None, "--events-table", help="The event table whose position to record (SCHEMA.TABLE)."
    ),
    preset: str = typer.Option("message-db", "--preset", help="Layout of --events-table."),
    mappings: list[str] = typer.Option(
        [], "--map", help="FIELD=SPEC for a generic --events-table."
    ),
    position_sql: str | None = typer.Option(
        None,
        "--position-sql",
        help="SQL returning the position the read model reflects (its projector's "
        "checkpoint), read in the same snapshot.",
    ),
) -> None:
    """Snapshot a read model table as it is now, with the event store's position."""
    from workbench.sources.postgres import snapshot_postgres

    info = snapshot_postgres(
        dsn,
        table,
        out,
        events_table=events_table,
        preset=preset,
        mappings=mappings,
        position_sql=position_sql,
    )
    console.print(f"{info.summary()} → {out}", highlight=False, soft_wrap=True)
