"""A replay's flush into a growing read model: through a primary key, or by key without one.

    python benchmarks/bench_flush.py [--rows 120000] [--batch 50000]

Why a replay writes its tables without their primary key and adds it as it
ends (``workbench.replay.store``): each flush replaces the rows its events
changed. Through the key's index (``insert or replace``, what the engine did
before) DuckDB keeps the index in step with every replaced row; without one
the flush deletes the rows' old versions by key (a hash join) and inserts the
new ones. Both write the same table as a replay's ``memories`` (UUID text
keys, nine columns), one transaction per flush as the engine writes, growing
by 10,000 keys a flush and replacing up to ``--batch`` existing ones in random
order. Prints each way's seconds per flush and their ratio, and checks both
end with the same rows.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import uuid
from pathlib import Path

import duckdb
import pyarrow as pa

COLUMNS = (
    "memory_id varchar{key}, agent_id varchar, content varchar, kind varchar, importance double, "
    "access_count bigint, status varchar, consolidated_into varchar, stream_position bigint"
)


def _rows(keys: list[str], step: int) -> pa.Table:
    n = len(keys)
    return pa.table(
        {
            "memory_id": keys,
            "agent_id": ["agent-1"] * n,
            "content": ["x" * 40] * n,
            "kind": ["episodic"] * n,
            "importance": [0.5] * n,
            "access_count": [step] * n,
            "status": ["active"] * n,
            "consolidated_into": [None] * n,
            "stream_position": [step] * n,
        }
    )


def flushes(path: Path, keyed: bool, rows: int, batch: int) -> tuple[list[float], list[tuple]]:
    """Seconds of each flush, and the table's (count, distinct keys, checksum) at the end."""
    rng = random.Random(3)
    ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(rows)]
    con = duckdb.connect(str(path))
    con.execute(f"create table m ({COLUMNS.format(key=' primary key' if keyed else '')})")
    seconds = []
    for step in range(rows // 10_000):
        grown = ids[: 10_000 * (step + 1)]
        keys = rng.sample(grown, min(len(grown), batch))
        con.register("_rows", _rows(keys, step))
        started = time.perf_counter()
        con.execute("begin")
        if keyed:
            con.execute("insert or replace into m by name select * from _rows")
        else:
            con.execute("delete from m using _rows where m.memory_id = _rows.memory_id")
            con.execute("insert into m by name select * from _rows")
        con.execute("commit")
        seconds.append(time.perf_counter() - started)
        con.unregister("_rows")
    end = con.execute(
        "select count(*), count(distinct memory_id), sum(access_count) from m"
    ).fetchall()
    con.close()
    return seconds, end


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=120_000)
    parser.add_argument("--batch", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        keyed, keyed_end = flushes(Path(tmp) / "keyed.duckdb", True, args.rows, args.batch)
        bare, bare_end = flushes(Path(tmp) / "bare.duckdb", False, args.rows, args.batch)
    assert keyed_end == bare_end, (keyed_end, bare_end)
    print(f"{len(keyed)} flushes into a table growing to {args.rows:,} rows, "
          f"replacing up to {args.batch:,} existing rows each")  # fmt: skip
    print(f"through the primary key (insert or replace): {sum(keyed):6.2f} s, "
          f"worst flush {max(keyed):.2f} s")  # fmt: skip
    print(f"by key without one (delete + insert):        {sum(bare):6.2f} s, "
          f"worst flush {max(bare):.2f} s")  # fmt: skip
    print(f"ratio: {sum(keyed) / sum(bare):.1f}x faster without the key's index")


if __name__ == "__main__":
    main()
