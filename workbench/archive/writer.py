"""Appending envelopes of one source to an archive, append-only and atomic."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from workbench import _duckdb, envelope
from workbench._sql import path_list
from workbench.archive._layout import (
    DICTIONARY_COLUMNS,
    archive_root,
    data_file_name,
    list_data_files,
    records_dir,
    remove_dead_side_temporaries,
    remove_stale_temporaries,
    source_dir,
    source_lock,
    write_atomically,
)
from workbench.archive.compaction import merge_tail
from workbench.archive.records import GAP_REASONS, GAP_SCHEMA
from workbench.errors import ArchiveError

__all__ = ["ArchiveWriter", "append_records", "read_records"]


class ArchiveWriter:
    """Appends envelopes of one source to the archive at ``root``.

    Each :meth:`append` writes whole Parquet files (zstd, sorted by
    ``global_position``), each one atomically. Positions must be above
    everything already archived for the source: the archive never rewrites
    history and never holds an event twice, and :attr:`last_position` is
    where an archiver resumes. An archiver that follows its source appends
    small files; every ``TAIL_FILES`` of them are merged into one as they
    gather (content unchanged; see :func:`~workbench.archive.compaction.merge_tail`).

    >>> import tempfile, pyarrow as pa
    >>> w = ArchiveWriter(tempfile.mkdtemp(), "demo")
    >>> w.last_position is None
    True
    >>> _ = w.append(pa.table({"global_position": [1, 2], "recorded_at": [0, 1]}))
    >>> w.last_position
    2
    >>> w.append(pa.table({"global_position": [2], "recorded_at": [5]}))
    Traceback (most recent call last):
    ...
    workbench.errors.ArchiveError: source demo: batch starts at position 2, but positions up to 2 are already archived
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        source: str,
        *,
        row_group_size: int = 100_000,
        max_file_events: int = 1_000_000,
        merge_small_files: bool = True,
    ) -> None:
        if not source:
            raise ArchiveError("a source name is required")
        self.root = archive_root(root)
        self.source = source
        self.row_group_size = row_group_size
        self.max_file_events = max_file_events
        #: Merge the newest small files as they gather (see :func:`merge_tail`).
        self.merge_small_files = merge_small_files
        #: Called once, before this writer's first data file: an archiver records the
        #: mapping of the events there, so a run killed after it (kill -9) has one.
        self.before_first_write: Callable[[], None] | None = None
        self._side_swept = False

    @property
    def last_position(self) -> int | None:
        """Highest archived ``global_position`` of this source, or None if empty."""
        lasts = [f.last for f in list_data_files(self.root, self.source)]
        return max(lasts, default=None)

    def append(self, batch: pa.Table | pa.RecordBatch) -> list[Path]:
        """Archive ``batch``; return the files written (none for an empty batch).

        Raises :class:`~workbench.errors.ArchiveError` and writes nothing if a
        position is negative, repeated or not above the archived ones.
        """
        table = envelope.conform(batch, source=self.source)
        if table.num_rows == 0:
            return []
        positions = table.column("global_position")
        if not (np.diff(positions.to_numpy()) > 0).all():  # archivers hand over sorted batches
            table = table.sort_by("global_position")
            positions = table.column("global_position")
            same = pc.equal(positions[1:], positions[:-1])
            if pc.any(same).as_py():
                repeated = positions[1:].filter(same)[0].as_py()
                raise ArchiveError(
                    f"source {self.source}: batch repeats global_position {repeated}"
                )
        first = positions[0].as_py()
        if first < 0:  # file names carry positions as unsigned digits
            raise ArchiveError(
                f"source {self.source}: position {first} is negative; the archive holds "
                "positions from 0 up"
            )
        with source_lock(self.root, self.source):
            remove_stale_temporaries(source_dir(self.root, self.source))
            if not self._side_swept:  # once a run: a dead writer's leftovers, not a race
                remove_dead_side_temporaries(self.root, self.source)
                self._side_swept = True
            last = self.last_position
            if last is not None and first <= last:
                raise ArchiveError(
                    f"source {self.source}: batch starts at position {first}, "
                    f"but positions up to {last} are already archived"
                )
            if self.before_first_write is not None:
                self.before_first_write()
                self.before_first_write = None
            written = [self._write(chunk) for chunk in self._split(table)]
            if self.merge_small_files:
                merge_tail(self.root, self.source, target_events=self.max_file_events)
            return written

    def record_gap(
        self, first_missing: int, last_missing: int, reason: str, detail: str | None = None
    ) -> None:
        """Append a gap record: positions the source no longer has or never had."""
        self.record_gaps([(first_missing, last_missing, reason)], detail)

    def record_gaps(self, gaps: list[tuple[int, int, str]], detail: str | None = None) -> None:
        """Append ``(first_missing, last_missing, reason)`` records, in one file."""
        if not gaps:
            return
        for _, _, reason in gaps:
            if reason not in GAP_REASONS:
                raise ArchiveError(
                    f"unknown gap reason {reason!r}; one of {', '.join(GAP_REASONS)}"
                )
        now = dt.datetime.now(dt.UTC)
        firsts, lasts, reasons = (list(c) for c in zip(*gaps, strict=True))
        record = pa.table(
            {
                "source": [self.source] * len(gaps),
                "first_missing": firsts,
                "last_missing": lasts,
                "reason": reasons,
                "detected_at": [now] * len(gaps),
                "detail": [detail] * len(gaps),
            },
            schema=GAP_SCHEMA,
        )
        append_records(self.root, "gap_records", self.source, record)

    def _split(self, table: pa.Table) -> list[pa.Table]:
        """Cut at most ``max_file_events`` per file and start a new file on a later day.

        The date partition is the UTC day of a file's first ``recorded_at``;
        later rows of the file may carry other days (stores do not record in
        position order), so a date is a pruning hint, not a filter.
        """
        micros = table.column("recorded_at").cast(pa.int64()).to_numpy()
        running_day = np.maximum.accumulate(micros // 86_400_000_000)
        cuts = [0, *(np.flatnonzero(np.diff(running_day)) + 1).tolist(), table.num_rows]
        chunks: list[pa.Table] = []
        for start, stop in itertools.pairwise(cuts):
            for offset in range(start, stop, self.max_file_events):
                chunks.append(table.slice(offset, min(self.max_file_events, stop - offset)))
        return chunks

    def _write(self, chunk: pa.Table) -> Path:
        positions = chunk.column("global_position")
        first, last = positions[0].as_py(), positions[-1].as_py()
        day = chunk.column("recorded_at")[0].as_py().date().isoformat()
        path = source_dir(self.root, self.source) / f"date={day}" / data_file_name(first, last)
        write_atomically(
            chunk, path, row_group_size=self.row_group_size, dictionary=DICTIONARY_COLUMNS
        )
        return path


def read_records(root: str | os.PathLike[str], table: str, source: str) -> pa.Table | None:
    """The rows ``source`` appended to the side table ``table`` (None when there are none);
    files written before a column was added lack it (null)."""
    paths = sorted(records_dir(root, table, source).glob("*.parquet"))
    if not paths:
        return None
    with _duckdb.connect() as con:
        try:
            return con.sql(
                f"select * from read_parquet({path_list(paths)}, union_by_name = true)"
            ).to_arrow_table()
        except duckdb.Error as exc:  # a file cut short by a full disk or a copy
            raise ArchiveError(
                f"the archive's {table} of {source} cannot be read: "
                f"{_duckdb.error_line(exc)} (move the damaged file aside)"
            ) from None


def append_records(
    root: str | os.PathLike[str], table: str, source: str, records: pa.Table
) -> Path:
    """Append rows to the side table ``table`` of an archive (one new file, atomic).

    Side tables hold what is not an event: gap records, lag samples. Readers
    see each as a DuckDB view of the same name.
    """
    if records.num_rows == 0:
        raise ArchiveError(f"no rows to append to {table}")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = records_dir(root, table, source) / f"{stamp}-{uuid.uuid4().hex[:8]}.parquet"
    write_atomically(records, path)
    return path
