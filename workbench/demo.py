"""The end-to-end story on the embedded default: no servers, one command.

A production read model of an AI-memory service is wrong: some memories
show more accesses than happened. The demo

1. generates a history with planted faults (duplicates, gaps, drift, late
   and non-JSON events, orphans) and archives it;
2. builds the "live" read model with the buggy (non-idempotent) projection;
3. replays the buggy and the fixed projection as candidates, diffs both
   against live, and explains a differing row by its events;
4. checks both projections' replay safety;
5. runs every archive check and the report, and shows where each planted
   fault was found.

``workbench demo`` is a thin shell over :func:`run_demo`.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import workbench as wb
from workbench import _duckdb
from workbench.errors import ArgumentError
from workbench.examples import Memories, MemoriesNonIdempotent
from workbench.replay.safety import SafetyReport
from workbench.report import write_report
from workbench.scenario import Scenario, generate

__all__ = ["DemoResult", "FaultFinding", "run_demo"]


@dataclass(frozen=True)
class FaultFinding:
    """One kind of planted fault: how many were planted, how many found, and by what."""

    fault: str
    planted: int
    found: int
    exact: bool
    where: str


@dataclass
class DemoResult:
    """Where the demo wrote its outputs, and what it found of what it planted."""

    out: Path
    archive: Path
    report: Path
    scenario: Scenario
    findings: list[FaultFinding] = field(default_factory=list)

    @property
    def all_found(self) -> bool:
        """Every planted fault found exactly, and nothing else."""
        return all(f.exact for f in self.findings)

    def df(self) -> pl.DataFrame:
        """The findings as a Polars DataFrame."""
        return pl.DataFrame([f.__dict__ for f in self.findings])


#: What the demo writes into its directory, and the file that says it wrote them.
_OUTPUTS = ("archive", "live", "live.duckdb", "candidates.duckdb", "report.html")
_MARK = ".workbench-demo"


def _clear_earlier_demo(out: Path) -> None:
    """Remove an earlier demo's outputs from ``out``; refuse a directory whose files of
    those names the demo did not write (a real archive at ``out/archive``, say)."""
    found = [name for name in _OUTPUTS if (out / name).exists() or (out / name).is_symlink()]
    if not found:
        return
    if not (out / _MARK).is_file():
        raise ArgumentError(
            f"{out} already holds {', '.join(found)} and no {_MARK} file (which the demo leaves "
            "beside its output, since this version): give --out a new or empty directory, "
            f"or remove them yourself (the demo replaces only what it marked as its own)"
        )
    for name in found:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def run_demo(
    out: str | os.PathLike[str],
    *,
    events: int = 20_000,
    seed: int = 7,
    console: Console | None = None,
) -> DemoResult:
    """Run the demo into ``out``; an earlier demo's outputs there are replaced, anything
    else of the same names is refused, never deleted."""
    console = console or Console()
    out = Path(out)
    _clear_earlier_demo(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / _MARK).write_text("written by workbench demo: its outputs here are replaced\n")
    # The headings are markup; what is interpolated into them is escaped.
    say = functools.partial(console.print, markup=True)

    # 1. History and archive.
    scenario = generate(seed, entities=max(10, events // 100), events=events)
    archive_dir = scenario.write_archive(out / "archive")
    archive = wb.open_archive(archive_dir)
    say(
        f"[bold]1. archive[/]  {len(archive):,} events of {escape(archive.sources[0])} in "
        f"{escape(str(archive_dir))}"
    )

    # 2. The live read model, as production built it: with the buggy projection.
    live_replay = wb.replay(archive, MemoriesNonIdempotent, into=out / "live.duckdb")
    live = out / "live" / "memories.parquet"
    live.parent.mkdir(exist_ok=True)
    live_replay.sql("select * from memories").write_parquet(str(live))
    say(
        "[bold]2. live[/]     read model snapshot (built by the buggy projection) in "
        f"{escape(str(live))}"
    )

    # 3. Candidates: the bug reproduced, then the fix; each diffed against live.
    candidates = out / "candidates.duckdb"
    buggy = wb.replay(archive, MemoriesNonIdempotent, into=candidates)
    fixed = wb.replay(archive, Memories, into=candidates)
    reproduced = wb.diff(f"{candidates}:{buggy.schema}.memories", live, key=["memory_id"])
    diff = wb.diff(f"{candidates}:{fixed.schema}.memories", live, key=["memory_id"])
    say(
        f"[bold]3. replay[/]   buggy {escape(buggy.summary())}\n"
        f"           fixed {escape(fixed.summary())}\n"
        f"           buggy candidate vs live: "
        f"{'identical (bug reproduced)' if reproduced.summary.is_identical else 'differs'}; "
        f"fixed candidate vs live: {diff.summary.changed:,} changed rows"
    )
    changed = diff.rows("changed")
    if changed.height:
        # The fix skipped a redelivered event that live counted: explain shows it.
        say(f"           why live differs from the fix for memory {changed['memory_id'][0]}:")
        say(str(diff.explain(changed["memory_id"][0])), markup=False, highlight=False)

    # 4. Replay safety of both projections.
    safety = [
        wb.check_replay_safety(archive, p, seed=seed) for p in (MemoriesNonIdempotent, Memories)
    ]
    for label, report in zip(("[bold]4. safety[/]  ", "          "), safety, strict=True):
        say(f"{label} {escape(report.summary().splitlines()[0])}")

    # 5. Checks, report, and the planted truth against what was found.
    report_path = write_report(
        out / "report.html",
        archive,
        diff=diff,
        extra=[fixed, *safety],
        title="Event Workbench demo",
    )
    result = DemoResult(out, archive_dir, report_path, scenario)
    result.findings = _findings(scenario, archive, diff, safety[0])
    say(_findings_table(result))
    say(f"[bold]5. report[/]   {escape(str(report_path))}")
    return result


def _findings(
    scenario: Scenario, archive: wb.Archive, diff: wb.Diff, unsafe: SafetyReport
) -> list[FaultFinding]:
    truth = scenario.truth
    gaps = archive.gaps().positions
    copies = archive.duplicates().copies.filter(pl.col("kind") == "event_id")
    drift = archive.schema_drift().mismatches
    late = archive.lag().late
    orphans = archive.causation().orphans
    non_json = archive.sql("select global_position from events where payload is not null").pl()
    found_gaps = set(zip(gaps["first_missing"], gaps["last_missing"], strict=True))
    planted_gaps = {(g.first, g.last) for g in truth.gaps}
    planted_copies = {p for ps in truth.duplicates.values() for p in ps[1:]}
    # Memories whose access count the duplicates inflate in the buggy read model.
    inflated = _inflated_memories(scenario, planted_copies)
    changed = set(diff.rows("changed")["memory_id"])

    def finding(
        fault: str, planted: AbstractSet[Any], found: AbstractSet[Any], where: str
    ) -> FaultFinding:
        return FaultFinding(fault, len(planted), len(found), planted == found, where)

    redelivery = unsafe["redelivery"]
    return [
        finding("gaps (ranges of positions)", planted_gaps, found_gaps, "archive.gaps()"),
        finding(
            "duplicate deliveries",
            planted_copies,
            set(copies["global_position"]),
            "archive.duplicates() (event_id)",
        ),
        finding(
            "schema drift",
            set(truth.drift),
            set(drift["global_position"]),
            "archive.schema_drift()",
        ),
        finding("late events", set(truth.late), set(late["global_position"]), "archive.lag()"),
        finding(
            "orphan causation",
            set(truth.orphans),
            set(orphans["global_position"]),
            "archive.causation()",
        ),
        finding(
            "non-JSON payloads",
            set(truth.non_json),
            set(non_json["global_position"]),
            "events.payload",
        ),
        finding("memories miscounted live", inflated, changed, "wb.diff(fixed, live)"),
        FaultFinding(
            "non-idempotent handler",
            1,
            int(not redelivery.ok),
            not redelivery.ok
            and "MemoriesNonIdempotent.accessed" in redelivery.implicated_handlers,
            "wb.check_replay_safety → " + ", ".join(redelivery.implicated_handlers or ["-"]),
        ),
    ]


def _inflated_memories(scenario: Scenario, copies: set[int]) -> set[str]:
    """Memories with a duplicated MemoryAccessed that the buggy projection counted twice."""

    con = _duckdb.connect()
    con.register("events", scenario.events)
    rows = con.execute(
        f"""
        select distinct data->>'memory_id' from events
        where event_type = 'MemoryAccessed'
          and global_position in ({",".join(map(str, copies)) or "null"})
          -- only memories the read model has: some were created inside the retention gap
          and data->>'memory_id' in (
              select data->>'memory_id' from events where event_type = 'MemoryCreated')
        """
    ).fetchall()
    return {r[0] for r in rows}


def _findings_table(result: DemoResult) -> Table:
    table = Table(title="planted faults and where the workbench found them")
    for column, justify in (
        ("fault", "left"),
        ("planted", "right"),
        ("found", "right"),
        ("", "center"),
        ("found by", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for f in result.findings:
        table.add_row(f.fault, f"{f.planted:,}", f"{f.found:,}", "✔" if f.exact else "✘", f.where)
    return table
