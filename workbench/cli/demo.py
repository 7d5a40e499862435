"""``workbench demo``: the whole story on the embedded default, no servers."""

from __future__ import annotations

from pathlib import Path

import typer

from workbench.cli._app import app, console


@app.command()
def demo(
    out: Path = typer.Option(
        Path("demo-out"), "--out", help="Directory for the archive, read models and report."
    ),
    events: int = typer.Option(20_000, "--events", min=500, help="Number of events to generate."),
    seed: int = typer.Option(7, "--seed", help="Seed of the generated scenario."),
) -> None:
    """Plant faults in a generated history, then find every one: archive, replay, diff, checks, report.

    Exit 0 when every planted fault was found exactly, 1 otherwise.
    """
    from workbench.demo import run_demo

    result = run_demo(out, events=events, seed=seed, console=console)
    raise typer.Exit(0 if result.all_found else 1)
