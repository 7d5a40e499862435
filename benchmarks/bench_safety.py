"""Replay-safety check time against one replay of the same archive.

    python benchmarks/bench_safety.py [--events N] [--entities N]

The check replays the history in memory once clean, once more in a fresh
process (determinism) and once per fault scenario; a safe projection pays
nothing else. The baseline is ``wb.replay`` of the same archive into DuckDB,
measured in the same run; the ratio is what a safe projection's check costs
in replays.
"""

from __future__ import annotations

import argparse
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


if __name__ == "__main__":
    main()
