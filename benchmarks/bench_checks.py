"""Time each archive check against a baseline scan of the same archive, in the same run.

    python benchmarks/bench_checks.py [EVENTS]

Prints seconds per check and the ratio to the baseline (one DuckDB pass
reading every column a check touches: count, distinct ids, data lengths),
and each check's peak resident memory (Linux: the high-water mark is reset
before each), which is what decides the archive size a machine can check.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable

import workbench as wb
from workbench.scenario import generate


def _peak_mib() -> int:
    """The process's resident high-water mark since the last :func:`_reset_peak`."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) // 1024 for line in status if line.startswith("VmHWM"))


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(events: int) -> None:
    root = generate(seed=1, events=events).write_archive(tempfile.mkdtemp())
    archive = wb.open_archive(root)
    baseline = timed(
        lambda: archive.sql(
            "select count(*), count(distinct event_id), sum(length(data)), max(recorded_at) "
            "from events"
        ).fetchall()
    )
    print(f"{events:,} events; baseline scan {baseline:.3f}s")
    checks: dict[str, Callable[[], object]] = {
        "gaps": archive.gaps,
        "duplicates": archive.duplicates,
        "schema_drift": archive.schema_drift,
        "lag": archive.lag,
        "causation": archive.causation,
    }
    for name, check in checks.items():
        _reset_peak()
        seconds = timed(check)
        print(
            f"{name:13s} {seconds:7.3f}s  {seconds / baseline:6.1f}x baseline  "
            f"peak {_peak_mib():,} MiB"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("events", type=int, nargs="?", default=200_000)
    main(parser.parse_args().events)
