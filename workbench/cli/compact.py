"""``workbench compact``: merge an archive's small files (a ``--follow`` run writes many)."""

from __future__ import annotations

from pathlib import Path

import typer

from workbench.cli._app import app, console, progress_bar


@app.command()
def compact(
    archive: Path = typer.Option(..., "--archive", help="Archive directory."),
    source: str | None = typer.Option(None, "--source", help="Only this source (default: all)."),
    target_events: int = typer.Option(
        1_000_000, "--target-events", min=1, help="Events per merged file, at most."
    ),
) -> None:
    """Merge adjacent small files of each source into larger ones; the events are unchanged."""
    from workbench.archive import ArchiveReader, compact

    ArchiveReader(archive).require_archive()  # a one-line error for a path that is none
    with progress_bar() as bar:
        task = bar.add_task("compacting", total=None)
        result = compact(
            archive,
            source=source,
            target_events=target_events,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    console.print(
        f"{archive}: {result.files_before:,} file(s) → {result.files_after:,}, "
        f"{result.events:,} events unchanged",
        highlight=False,
        soft_wrap=True,
    )
