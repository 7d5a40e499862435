"""``workbench archive jetstream`` and ``workbench sample jetstream``."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer
from rich.progress import BarColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn

from workbench.cli._app import (
    archive_app,
    console,
    notice,
    progress_bar,
    refuse_without,
    sample_app,
    sigterm_as_interrupt,
)

# As the nats CLI names them, and from the same environment variables.
TLS_CERT = typer.Option(
    None, "--tls-cert", envvar="NATS_CERT", help="Client certificate (PEM), for mutual TLS."
)
TLS_KEY = typer.Option(
    None, "--tls-key", envvar="NATS_KEY", help="The client certificate's private key (PEM)."
)
TLS_CA = typer.Option(
    None, "--tls-ca", envvar="NATS_CA", help="CA certificate(s) to trust (PEM) for the server's."
)
CREDS = typer.Option(
    None,
    "--creds",
    envvar="NATS_CREDS",
    help="User credentials file (.creds: user JWT and nkey seed), as nsc and Synadia Cloud "
    "issue them.",
)
NKEY = typer.Option(
    None, "--nkey", envvar="NATS_NKEY", help="A user's nkey seed file, for nkey authentication."
)


@archive_app.command("jetstream")
def archive_jetstream_command(
    ctx: typer.Context,
    server: str = typer.Option(..., "--server", help="NATS URL, e.g. nats://127.0.0.1:4222."),
    stream: str = typer.Option(..., "--stream", help="Name of the JetStream stream."),
    out: Path = typer.Option(..., "--out", help="Archive directory (created if missing)."),
    preset: str | None = typer.Option(
        None,
        "--preset",
        help="Field mapping preset: cloudevents (the default), envelope, raw or kv (a KV "
        "bucket's stream). With no "
        "--preset and no --map, a resumed archive keeps the mapping it was archived with.",
    ),
    maps: list[str] = typer.Option(
        [],
        "--map",
        help="FIELD=SPEC, SPEC one of header:NAME, data:dotted.path, subject:INDEX or START:[STOP], "
        "metadata:dotted.path, const:VALUE (overrides the preset; a field mapped again "
        "falls back to the next, FIELD=preset to the preset's).",
    ),
    follow: bool = typer.Option(
        False, "--follow", help="Keep tailing the stream until SIGINT/SIGTERM."
    ),
    idle_exit: float | None = typer.Option(
        None, "--idle-exit", min=0, help="With --follow: stop after SECONDS without a message."
    ),
    file_events: int = typer.Option(
        100_000, "--file-events", min=1, help="Messages per batch and Parquet file."
    ),
    file_mb: float = typer.Option(
        64,
        "--file-mb",
        min=0.001,
        help="Megabytes of payloads per file at most (bounds memory for large messages).",
    ),
    remap: bool = typer.Option(
        False,
        "--remap",
        help="Archive with this --preset/--map from here on though the archive was written "
        "with another (the events before keep theirs).",
    ),
    fail_on_gap: bool = typer.Option(
        False,
        "--fail-on-gap",
        help="Exit with code 1 when this run finds messages the stream lost (gaps an "
        "earlier run recorded are not found again: `workbench check --fail-on gaps` "
        "judges the whole archive).",
    ),
    tls_cert: Path | None = TLS_CERT,
    tls_key: Path | None = TLS_KEY,
    tls_ca: Path | None = TLS_CA,
    creds: Path | None = CREDS,
    nkey: Path | None = NKEY,
) -> None:
    """Archive every message of a JetStream stream into the Parquet archive, exactly once.

    Resumes after the highest archived sequence; gaps in the stream (retention,
    deletions, sequence jumps) are recorded in gap_records and reported.
    """
    refuse_without(ctx, "--follow", follow, "idle_exit")
    from workbench.sources.jetstream import (
        ArchiveProgress,
        JetStreamMapping,
        archive_jetstream,
        tls_context,
    )
    from workbench.sources.jetstream._auth import nats_auth
    from workbench.sources.jetstream.mapping import DEFAULT_PRESET

    # A mapping mistake is told before connecting.
    JetStreamMapping.from_options(preset or DEFAULT_PRESET, maps)
    tls = tls_context(tls_cert, tls_key, tls_ca)
    nats_auth(creds, nkey)  # a bad file is told before the progress bar starts
    with progress_bar(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        transient=False,
    ) as bar:
        task = bar.add_task(f"jetstream:{stream}", total=None, info="connecting")

        def report(p: ArchiveProgress) -> None:
            total = None if p.remaining is None else p.archived + p.remaining
            left = "" if p.remaining is None else f", {p.remaining:,} left"
            bar.update(
                task,
                completed=p.archived,
                total=None if follow else total,
                info=f"{p.archived:,} msgs, {p.rate:,.0f} msg/s{left}",
            )

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = archive_jetstream(
                server,
                stream,
                out,
                preset=preset,
                mappings=maps,
                remap=remap,
                follow=follow,
                idle_exit=idle_exit,
                file_events=file_events,
                file_bytes=max(1, int(file_mb * 2**20)),
                progress=report,
                warn=False,
                tls=tls,
                creds=creds,
                nkey=nkey,
            )
        if result.stopped != "signal":
            bar.update(task, total=max(result.messages, 1), completed=max(result.messages, 1))
    console.print(str(result), highlight=False)
    for note in result.gap_notes():
        notice("warning", note)
    for hint in result.hints():
        notice("hint", hint)
    if result.stopped == "signal" and not follow:
        # Interrupted before the end of the stream: a script must not go on as if complete.
        raise typer.Exit(130)
    if result.gaps and fail_on_gap:
        raise typer.Exit(1)


@sample_app.command("jetstream")
def sample_jetstream_command(
    server: str = typer.Option(..., "--server", help="NATS URL, e.g. nats://127.0.0.1:4222."),
    stream: str = typer.Option(..., "--stream", help="Name of the JetStream stream."),
    consumers: list[str] = typer.Option(
        [], "--consumer", help="Consumer to sample (repeatable; default: all of the stream's)."
    ),
    every: float = typer.Option(1.0, "--every", min=0.01, help="Seconds between samples."),
    duration: float = typer.Option(60.0, "--duration", min=0, help="Seconds to sample for."),
    out: Path = typer.Option(..., "--out", help="Archive directory (created if missing)."),
    tls_cert: Path | None = TLS_CERT,
    tls_key: Path | None = TLS_KEY,
    tls_ca: Path | None = TLS_CA,
    creds: Path | None = CREDS,
    nkey: Path | None = NKEY,
) -> None:
    """Record stream state and consumer lag over time into the archive (stream_samples, consumer_samples)."""
    from workbench.sources.jetstream import sample_jetstream, tls_context
    from workbench.sources.jetstream._auth import nats_auth

    tls = tls_context(tls_cert, tls_key, tls_ca)
    nats_auth(creds, nkey)
    expected = int(duration // every) + 1
    # SIGTERM ends it as Ctrl-C does, keeping the samples taken so far (the default
    # would drop up to 10 s of them).
    with sigterm_as_interrupt(), progress_bar() as bar:
        task = bar.add_task(f"sampling {stream}", total=expected)
        result = sample_jetstream(
            server,
            stream,
            out,
            consumers=consumers or None,
            every=every,
            duration=duration,
            progress=lambda n: bar.update(task, completed=n),
            tls=tls,
            creds=creds,
            nkey=nkey,
        )
    console.print(str(result), highlight=False)
