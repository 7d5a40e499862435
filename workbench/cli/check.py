"""``workbench check``: every check on an archive, printed as tables."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.rule import Rule

from workbench.cli._app import app, console, frame_table, notice, progress_bar
from workbench.errors import WorkbenchError

_CHECKS = ("gaps", "duplicates", "drift", "lag", "causation")


#: ``--only``, as check and report take it.
ONLY = typer.Option(
    "",
    "--only",
    help=f"Comma-separated checks to run (default: all): {', '.join(_CHECKS)}. The "
    "whole-archive causation graph is held in memory (0.3 GB per million events, and its "
    "building up to a fifth of the machine's memory).",
)


def parse_checks(value: str, option: str) -> list[str]:
    """The check names of ``option``'s comma-separated ``value``, each once.

    >>> parse_checks("gaps, lag,gaps", "--fail-on")
    ['gaps', 'lag']
    """
    names = list(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    unknown = [n for n in names if n not in _CHECKS]
    if unknown:
        raise WorkbenchError(
            f"{option}: unknown check(s) {', '.join(unknown)}; choose from {', '.join(_CHECKS)}"
        )
    return names


@app.command()
def check(
    archive: Path = typer.Option(..., "--archive", help="Archive directory to check."),
    fail_on: str = typer.Option(
        "",
        "--fail-on",
        help=f"Comma-separated checks whose findings make the exit code 1: {', '.join(_CHECKS)}.",
    ),
    correlation_id: str | None = typer.Option(
        None, "--correlation-id", help="Limit the causation check to one correlation."
    ),
    external_causes: list[str] = typer.Option(
        [],
        "--external-causes",
        help="Glob of causation ids outside the event store (commands: 'cmd-*'); "
        "such causes make roots, not orphans. Repeatable.",
    ),
    accept_gaps: str = typer.Option(
        "",
        "--accept-gaps",
        help="Comma-separated gap reasons that are expected, not faults: deleted,retention "
        "for a KV bucket or a stream with message TTLs or rollups.",
    ),
    only: str = ONLY,
    rows: int = typer.Option(15, "--rows", min=1, help="Rows shown per table."),
) -> None:
    """Check an archive for gaps, duplicates, schema drift, lag and causation faults."""
    from workbench.analysis import open_archive

    failing = parse_checks(fail_on, "--fail-on")
    chosen = parse_checks(only, "--only")
    skipped = [name for name in failing if chosen and name not in chosen]
    if skipped:
        raise WorkbenchError(f"--fail-on {', '.join(skipped)}: not among the --only checks")
    opened = open_archive(archive)
    opened.require_events()
    accepted = [r.strip() for r in accept_gaps.split(",") if r.strip()]
    runs = opened.checks(correlation_id, external_causes=external_causes, accept_gaps=accepted)
    if chosen:
        runs = {name: run for name, run in runs.items() if name in chosen}
    results = {}
    with progress_bar() as progress:
        task = progress.add_task("checking", total=len(runs))
        for name, run in runs.items():
            progress.update(task, description=f"checking {name}")
            results[name] = run()
            progress.advance(task)
    sources = escape(", ".join(opened.sources) or "-")
    if not opened.sources:  # every message gone before the first run: its gaps name it
        lost = [s for (s,) in opened.sql("select distinct source from gap_records").fetchall()]
        sources += escape(f" (gaps recorded for {', '.join(sorted(lost))})") if lost else ""
    console.print(
        f"[bold]{escape(str(archive))}[/]: {len(opened):,} events, sources {sources}", markup=True
    )
    for name, result in results.items():
        # A source the check could not look at is no clean pass: the summary says why.
        partly = result.not_fully_checked
        mark = "[red]✗[/]" if result.found else "[yellow]~[/]" if partly else "[green]✓[/]"
        console.print(Rule(f"{mark} {name}", align="left"), width=min(console.width, 100))
        console.print(result.summary(), highlight=False)
        for title, frame in result.highlights().items():
            if frame.height:
                console.print(frame_table(frame, title, rows, more="--rows N shows more"))
    failed = [name for name in failing if results[name].found]
    if failed:
        notice("failed", ", ".join(failed), style="bold red", stderr=False)
        raise typer.Exit(1)
