"""Diff speed: 10M vs 10M rows with 1% changed, and a live Postgres pull vs COPY binary.

    python benchmarks/bench_diff.py [--rows 10000000] [--pg-rows 1000000] [--dsn DSN]

Target: the 10M diff under 10 s; the Postgres pull (ADBC into Arrow, what
``wb.diff`` does for ``postgresql://…#schema.table``) at least 0.8× the speed
of ``psql -c "COPY (select * from t) TO STDOUT (FORMAT binary)" > /dev/null``,
measured in the same run (best of three each).
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import duckdb

import workbench as wb
from workbench.diff.sides import read_live_table


def bench_diff(rows: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sides.duckdb"
        with duckdb.connect(str(path)) as con:
            for name, changed in (
                ("candidate", "0"),
                ("live", "case when range % 100 = 0 then 1 else 0 end"),
            ):
                con.execute(
                    f"create table {name} as select range as id, 'memory ' || (range % 1000) as title, "
                    f"range % 17 + {changed} as accesses, range * 0.25 as score, "
                    "timestamp '2024-01-01' + to_microseconds(range) as updated_at "
                    f"from range({rows})"
                )
        start = time.perf_counter()
        summary = wb.diff(f"{path}:main.candidate", f"{path}:main.live", key="id").summary
        seconds = time.perf_counter() - start
    assert summary.changed == (rows + 99) // 100, summary.changed
    print(
        f"diff {rows:,} vs {rows:,} rows, {summary.changed:,} changed: {seconds:.2f} s (target < 10 s)"
    )


def _best(fn, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_postgres(dsn: str, rows: int) -> None:
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as con:
        con.execute(f"create schema {schema}")
        con.execute(
            f"create table {schema}.memories as select g as id, 'memory ' || g as title, "
            "g % 17 as accesses, (g * 0.25)::numeric(14, 2) as amount, g / 3.0::float8 as score, "
            "timestamptz '2024-01-01' + g * interval '1 ms' as updated_at "
            f"from generate_series(1, {rows}) g"
        )
        con.execute(f"analyze {schema}.memories")
    try:
        copy = _best(
            lambda: subprocess.run(
                [
                    "psql",
                    dsn,
                    "-qc",
                    f"COPY (select * from {schema}.memories) TO STDOUT (FORMAT binary)",
                ],
                stdout=subprocess.DEVNULL,
                check=True,
            )
        )
        pull = _best(lambda: read_live_table(dsn, f"{schema}.memories"))
    finally:
        with psycopg.connect(dsn, autocommit=True) as con:
            con.execute(f"drop schema {schema} cascade")
    print(
        f"postgres {rows:,} rows: ADBC pull {pull:.2f} s ({rows / pull:,.0f} rows/s), "
        f"psql COPY binary {copy:.2f} s ({rows / copy:,.0f} rows/s), "
        f"speed ratio {copy / pull:.2f}× (target ≥ 0.8×)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--pg-rows", type=int, default=1_000_000)
    parser.add_argument("--dsn", default="postgresql://root@127.0.0.1:5432/test")
    args = parser.parse_args()
    bench_diff(args.rows)
    bench_postgres(args.dsn, args.pg_rows)


if __name__ == "__main__":
    main()
