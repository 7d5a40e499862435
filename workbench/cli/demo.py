"""``workbench demo``: the whole story on the embedded default, no servers."""

from __future__ import annotations

from pathlib import Path

import typer

from workbench.cli._app import app, console


@app.command()
def demo(
    out: Path = typer.Option(
        Path("demo-out"), "--out", help="Directory for the archive and report."
    ),
    events: int = typer.Option(20_000, "--events", min=100, help="Number of events to generate."),
    seed: int = typer.Option(7, "--seed", help="Seed of the generated scenario."),
) -> None:
    """Generate a scenario with planted faults, archive it and show what was found."""
    from workbench.demo import run_demo

    run_demo(out, events=events, seed=seed, console=console)
