"""``workbench replay``: an archive through a projection into DuckDB, or its safety check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from workbench.cli._app import (
    app,
    console,
    frame_table,
    notice,
    progress_bar,
    refuse_without,
    sigterm_as_interrupt,
)
from workbench.errors import WorkbenchError


@app.command()
def replay(
    ctx: typer.Context,
    archive: Path = typer.Option(..., "--archive", help="Archive root directory."),
    projection: str = typer.Option(
        ...,
        "--projection",
        help="FILE.py:ClassName (or module:Name) of the projection; FILE.py alone when it defines one.",
    ),
    into: Path | None = typer.Option(
        None, "--into", help="Output DuckDB file (default replay.duckdb)."
    ),
    source: str | None = typer.Option(None, "--source", help="Source to replay (when several)."),
    resume: bool = typer.Option(False, "--resume", help="Continue after the stored checkpoint."),
    until: int | None = typer.Option(None, "--until", min=0, help="Stop at this global_position."),
    where: str | None = typer.Option(None, "--where", help="SQL filter over envelope columns."),
    dead_letter: bool = typer.Option(
        False, "--dead-letter", help="Record failing events in _dead_letters and go on."
    ),
    flush_seconds: float = typer.Option(
        15.0,
        "--flush-seconds",
        min=0.1,
        help="Flush state with its checkpoint at least this often: the most a --resume "
        "after a crash repeats.",
    ),
    check_safety: bool = typer.Option(
        False,
        "--check-safety",
        help="Replay under redelivery, crashes, reordering and twice (in a new process); compare.",
    ),
    duplicates: float = typer.Option(
        0.1, "--duplicates", min=0.0, max=1.0, help="Share redelivered (safety check), 0 to 1."
    ),
    crashes: int = typer.Option(
        3, "--crashes", min=0, help="Simulated crashes between output and checkpoint (0: none)."
    ),
    reorder: bool = typer.Option(
        True, "--reorder/--no-reorder", help="Check under reordering across streams."
    ),
    determinism: bool = typer.Option(
        True, "--determinism/--no-determinism", help="Check that a second run gives the same."
    ),
    narrow: bool = typer.Option(
        True,
        "--narrow/--no-narrow",
        help="Name the event types and handlers behind an unsafe scenario (a replay each).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the safety check's faults."),
    max_differences: int = typer.Option(
        50, "--max-differences", min=1, help="Differing rows the safety check lists at most."
    ),
) -> None:
    """Replay an archive through a candidate projection into DuckDB, or check its replay safety.

    Exit 1: unsafe, uncovered events, dead letters, or rows changed in place and never
    handed back.
    """
    from workbench.replay import check_coverage, check_replay_safety, load_projection
    from workbench.replay import replay as run_replay

    refuse_without(
        ctx, "--check-safety", check_safety,
        "duplicates", "crashes", "reorder", "determinism", "narrow", "seed", "max_differences",
    )  # fmt: skip
    candidate = load_projection(projection)
    if check_safety and (resume or dead_letter or into is not None):
        # The check replays in memory, from the start, counting failures: these do not apply.
        given = "--resume" if resume else "--dead-letter" if dead_letter else "--into"
        raise WorkbenchError(f"{given} does not go with --check-safety (which writes nothing)")
    # Coverage before the run: a long rebuild (or check) that leaves types out is worth
    # stopping early; what it leaves out is neither replayed nor checked.
    covered = check_coverage(archive, candidate, source=source, until=until, where=where)
    for problem in covered.problems():
        notice("not covered", problem, style="yellow", stderr=False)
    for note in covered.notes():
        notice("note", note, style="yellow", stderr=False)
    if check_safety:
        with sigterm_as_interrupt(), progress_bar() as bar:  # SIGTERM: 130, as Ctrl-C
            task = bar.add_task("replay safety", total=None)
            report = check_replay_safety(
                archive, candidate, source=source, duplicates=duplicates, crashes=crashes,
                reorder="across-streams" if reorder else None, determinism=determinism,
                narrow=narrow, seed=seed, until=until, where=where,
                max_differences=max_differences,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )  # fmt: skip
        console.print(report.summary(), highlight=False)
        differences = report.df()
        if differences.height:
            console.print(
                frame_table(differences, "differences from a clean replay", max_differences)
            )
        raise typer.Exit(0 if report.ok and covered.ok else 1)
    into = into or Path("replay.duckdb")
    try:
        with sigterm_as_interrupt(), progress_bar() as bar:
            task = bar.add_task("replay", total=None)

            def advance(done: int, total: int) -> None:
                # At 100% the last rows are still being written (and keyed): say so.
                what = "writing the last rows" if total and done >= total else "replay"
                bar.update(task, completed=done, total=total, description=what)

            result = run_replay(
                archive, candidate, into=into, source=source,
                resume=resume, until=until, where=where, flush_seconds=flush_seconds,
                on_error="dead-letter" if dead_letter else "raise", progress=advance,
            )  # fmt: skip
    except KeyboardInterrupt:
        notice("stopped", _kept(into, candidate), style="yellow")
        raise typer.Exit(130) from None
    console.print(result.summary(), highlight=False)
    console.print(frame_table(result.per_type, "events per type"))
    if result.dead_letters:
        letters = result.dead_letter_rows(limit=10).select(
            "global_position", "event_type", "handler", "error"
        )
        console.print(
            frame_table(
                letters,
                "dead letters",
                total=result.dead_letters,
                more=f"all are in {result.schema}._dead_letters of {into}",
            )
        )
    # Rows changed in place and never handed back: what was stored hangs on the flushes.
    raise typer.Exit(
        0 if result.coverage.ok and not result.dead_letters and not result.stale else 1
    )


def _kept(into: Path, projection: Any) -> str:
    """What an interrupted replay kept (its last flush's checkpoint), and how to go on."""
    from workbench.replay import SqlProjection
    from workbench.replay.store import last_position

    schema = projection.schema()
    if isinstance(projection, SqlProjection):  # one transaction: rolled back whole
        return f"{schema} in {into} is as it was before this run (a SqlProjection is rebuilt whole)"
    at = last_position(into, schema)
    if at is None:
        return f"{schema} in {into} has no checkpoint yet: a new run starts over"
    return (
        f"{schema} in {into} holds the events up to global_position {at:,} (its last "
        "flush); replay with --resume to go on from there"
    )


@app.command()
def promote(
    into: Path = typer.Option(..., "--into", help="The DuckDB file replayed into."),
    name: str = typer.Option(..., "--name", help="The projection's name (schema prefix)."),
    version: int = typer.Option(..., "--version", min=0, help="The version to point the views at."),
    force: bool = typer.Option(
        False,
        "--force",
        help="Promote a version with dead letters, or replayed from another archive or "
        "filter, or reaching fewer events than the promoted one.",
    ),
) -> None:
    """Point the stable views <name>.* at <name>_v<version>.* (blue/green switch)."""
    from workbench.replay import promote as run_promote
    from workbench.replay.store import connect, promoted_schema

    was = None
    if into.is_file():
        con = connect(into)
        try:
            was = promoted_schema(con, name)
        finally:
            con.close()
    tables = run_promote(into, name, version, force=force)
    console.print(
        f"{name}.{{{', '.join(tables)}}} now read {name}_v{version} in {into}"
        + (f" (was {was})" if was and was != f"{name}_v{version}" else ""),
        highlight=False,
        soft_wrap=True,
    )
