"""The end-to-end story on the embedded default: no servers, one command.

Generates an AI-memory history with planted faults, archives it, and shows
what the workbench finds; ``workbench demo`` is a thin shell over
:func:`run_demo`.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

import workbench as wb
from workbench.scenario import Scenario, generate

__all__ = ["DemoResult", "run_demo"]


@dataclass(frozen=True)
class DemoResult:
    """Where the demo wrote its outputs, and the scenario it planted."""

    out: Path
    archive: Path
    scenario: Scenario


def run_demo(
    out: str | os.PathLike[str],
    *,
    events: int = 20_000,
    seed: int = 7,
    console: Console | None = None,
) -> DemoResult:
    """Run the demo into ``out`` (replaced if it holds an earlier demo)."""
    console = console or Console()
    out = Path(out)
    archive_dir = out / "archive"
    if archive_dir.exists():
        shutil.rmtree(archive_dir)
    out.mkdir(parents=True, exist_ok=True)

    scenario = generate(seed, entities=max(10, events // 100), events=events)
    scenario.write_archive(archive_dir)
    archive = wb.open_archive(archive_dir)
    console.print(
        f"archived {len(archive):,} events of {len(archive.sources)} source(s) into {archive_dir}"
    )

    table = Table(title="planted faults (ground truth)")
    table.add_column("fault")
    table.add_column("planted", justify="right")
    for fault, count in scenario.truth.summary().items():
        table.add_row(fault, f"{count:,}" if isinstance(count, int) else str(count))
    console.print(table)
    return DemoResult(out, archive_dir, scenario)
