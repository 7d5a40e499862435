"""Archive write and read throughput, against plain pyarrow in the same run.

    python benchmarks/bench_archive.py [--events N]

Baseline: ``pyarrow.parquet.write_table`` / ``read_table`` of the same table
with the same settings (zstd, 100k-row groups) into one file; the archive adds
envelope validation, atomic rename, fsync and the position bookkeeping.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import workbench as wb
from workbench import envelope


def make_envelopes(n: int) -> pa.Table:
    rng = np.random.default_rng(0)
    ids = np.arange(n)
    return envelope.conform(
        pa.table(
            {
                "global_position": ids + 1,
                "event_id": pa.array(np.char.add("evt-", ids.astype(str))),
                "event_type": pa.array(
                    rng.choice(["MemoryCreated", "MemoryAccessed", "MemoryUpdated"], n)
                ),
                "stream": pa.array(np.char.add("memory-", (ids % 20_000).astype(str))),
                "stream_position": ids // 20_000,
                "recorded_at": 1_700_000_000_000_000 + ids * 1000,
                "correlation_id": pa.array(np.char.add("req-", (ids // 4).astype(str))),
                "data": pa.array(
                    np.char.add(
                        '{"memory_id": "m', np.char.add((ids % 20_000).astype(str), '", "n": 1}')
                    )
                ),
            }
        ),
        source="bench",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=100_000, help="events per append")
    args = parser.parse_args()
    table = make_envelopes(args.events)
    n = table.num_rows

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        pq.write_table(table, root / "baseline.parquet", compression="zstd", row_group_size=100_000)
        base_write = time.perf_counter() - t0
        t0 = time.perf_counter()
        pq.read_table(root / "baseline.parquet")
        base_read = time.perf_counter() - t0

        writer = wb.ArchiveWriter(root / "archive", "bench")
        t0 = time.perf_counter()
        for offset in range(0, n, args.batch):
            writer.append(table.slice(offset, args.batch))
        write = time.perf_counter() - t0
        t0 = time.perf_counter()
        got = wb.open_archive(root / "archive").arrow()
        read = time.perf_counter() - t0
        assert got.num_rows == n

    print(f"events                      {n:>12,}")
    print(f"archive write               {n / write:>12,.0f} events/s   (append of {args.batch:,})")
    print(f"pyarrow write_table         {n / base_write:>12,.0f} events/s")
    print(f"  ratio                     {base_write / write:>12.2f}x")
    print(f"archive read (events view)  {n / read:>12,.0f} events/s")
    print(f"pyarrow read_table          {n / base_read:>12,.0f} events/s")
    print(f"  ratio                     {base_read / read:>12.2f}x")


if __name__ == "__main__":
    main()
