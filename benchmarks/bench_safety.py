"""Replay-safety check time against one replay of the same archive.

    python benchmarks/bench_safety.py [--events N] [--entities N]

The check replays the history in memory once clean, once more in a fresh
process (determinism) and once per fault scenario; a safe projection pays
nothing else. The baseline is ``wb.replay`` of the same archive into DuckDB,
measured in the same run; the ratio is what a safe projection's check costs
in replays.

Then the peak memory of a check of the safe projection against a replay's,
each in a fresh process (the determinism rerun's process is not counted):
the check holds the history as Arrow columns and decodes a chunk at a time,
so it should be the replay's plus the history's columns and the read models.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import workbench as wb
from workbench.examples import Memories, MemoriesClock
from workbench.scenario import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--entities", type=int, default=5_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "archive"
        generate(11, entities=args.entities, events=args.events).write_archive(archive)
        started = time.perf_counter()
        wb.replay(archive, Memories, into=Path(tmp) / "out.duckdb", progress=False)
        replay = time.perf_counter() - started
        print(f"replay of {args.events:,} events (baseline): {replay:6.2f}s")
        for projection in (Memories, MemoriesClock):
            started = time.perf_counter()
            report = wb.check_replay_safety(archive, projection, progress=False)
            seconds = time.perf_counter() - started
            verdict = "safe" if report.ok else "unsafe"
            print(
                f"check_replay_safety({projection.__name__}, {verdict}): {seconds:6.2f}s "
                f"= {seconds / replay:5.1f} replays"
            )
        replay_peak = _peak(f"wb.replay({str(archive)!r}, Memories, into={tmp!r} + '/m.duckdb')")
        check_peak = _peak(f"wb.check_replay_safety({str(archive)!r}, Memories)")
        print(
            f"peak memory: replay {replay_peak:,.0f} MiB; check {check_peak:,.0f} MiB "
            f"({check_peak / replay_peak:.2f}x the replay; its determinism rerun process "
            "is not counted)"
        )


def _peak(call: str) -> float:
    """Peak RSS in MiB of ``call`` in a fresh process: its own ``VmHWM``, not ``ru_maxrss``,
    which a process inherits from its parent at spawn (this one holds the archive)."""
    code = (
        "import workbench as wb\n"
        "from workbench.examples import Memories\n"
        f"{call}\n"
        "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1]) / 1024  # kB


if __name__ == "__main__":
    main()
