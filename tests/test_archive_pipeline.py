"""The shared background write pipeline: order kept, nothing written after a failure."""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import pyarrow as pa
import pytest

from workbench.archive import ArchiveWriter, WritePipeline
from workbench.errors import ArchiveError


def events(first: int, last: int) -> pa.Table:
    positions = list(range(first, last + 1))
    return pa.table({"global_position": positions, "recorded_at": positions})


def test_batches_land_in_submission_order(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path, "s")
    with WritePipeline(depth=1) as pipeline:
        for first in range(1, 50, 7):
            pipeline.submit(functools.partial(writer.append, events(first, first + 6)))
    # Out of order, the writer would have refused a batch below an archived one.
    assert writer.last_position == 49
    assert len(list(tmp_path.rglob("*.parquet"))) == 7


def test_a_failed_write_stops_every_later_write(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path, "s")
    pipeline = WritePipeline(depth=1)
    pipeline.submit(functools.partial(writer.append, events(1, 5)))
    pipeline.submit(functools.partial(writer.append, events(3, 4)))  # already archived
    with pytest.raises(ArchiveError, match="already archived"):
        pipeline.submit(functools.partial(writer.append, events(6, 9)))
        pipeline.flush()
    pipeline.close()  # reported once
    assert writer.last_position == 5


def test_submit_blocks_while_depth_jobs_wait() -> None:
    release = threading.Event()
    pipeline = WritePipeline(depth=1)
    pipeline.submit(release.wait)  # running
    pipeline.submit(lambda: None)  # waiting: the queue is full
    third = threading.Thread(target=pipeline.submit, args=(lambda: None,))
    third.start()
    third.join(timeout=0.2)
    assert third.is_alive()
    release.set()
    third.join()
    pipeline.close()


def test_the_reader_error_wins_over_a_write_error() -> None:
    with pytest.raises(KeyError), WritePipeline() as pipeline:
        pipeline.submit(lambda: 1 / 0)
        raise KeyError("reader")
