"""Merging many small archive files into fewer large ones, content unchanged."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from workbench.archive._layout import (
    DICTIONARY_COLUMNS,
    DataFile,
    data_file_name,
    list_data_files,
    scan_data_files,
    source_lock,
    write_atomically,
)

__all__ = ["CompactResult", "compact"]


@dataclass(frozen=True)
class CompactResult:
    """What :func:`compact` did: files before and after, per archive."""

    files_before: int
    files_after: int
    events: int


def compact(
    root: str | os.PathLike[str],
    *,
    source: str | None = None,
    target_events: int = 1_000_000,
) -> CompactResult:
    """Merge adjacent files of each source (same date partition) up to ``target_events``.

    The merged file is named for the positions it holds and is written
    before its inputs are removed; a crash in between leaves files the
    reader ignores because a larger file covers them, and the next compact
    removes them.

    >>> import tempfile, pyarrow as pa
    >>> from workbench.archive.writer import ArchiveWriter
    >>> root = tempfile.mkdtemp(); w = ArchiveWriter(root, "s")
    >>> for p in range(1, 4):
    ...     _ = w.append(pa.table({"global_position": [p], "recorded_at": [0]}))
    >>> compact(root)
    CompactResult(files_before=3, files_after=1, events=3)
    """
    root = Path(root)
    every = _all_files(root)
    before = len(every)
    sources = sorted({f.source for f in every}) if source is None else [source]
    events = 0
    for name in sources:
        with source_lock(root, name):
            _remove_subsumed(root, name)
            files = [f for f in scan_data_files(root) if f.source == name]
            for run in _runs(files, target_events):
                events += sum(_rows(f.path) for f in run)
                if len(run) > 1:
                    _merge(run)
    return CompactResult(before, len(_all_files(root)), events)


def _all_files(root: Path) -> list[DataFile]:
    return list_data_files(root)


def _rows(path: Path) -> int:
    return int(pq.ParquetFile(path).metadata.num_rows)


def _runs(files: list[DataFile], target_events: int) -> list[list[DataFile]]:
    runs: list[list[DataFile]] = []
    size = 0
    for f in sorted(files):
        rows = _rows(f.path)
        if runs and runs[-1][-1].path.parent == f.path.parent and size + rows <= target_events:
            runs[-1].append(f)
            size += rows
        else:
            runs.append([f])
            size = rows
    return runs


def _merge(run: list[DataFile]) -> None:
    table = pa.concat_tables(pq.read_table(f.path) for f in run)
    target = run[0].path.parent / data_file_name(run[0].first, run[-1].last)
    write_atomically(table, target, dictionary=DICTIONARY_COLUMNS)
    for f in run:
        f.path.unlink()


def _remove_subsumed(root: Path, source: str) -> None:
    kept = set(scan_data_files(root))
    for f in list_data_files(root):
        if f not in kept and f.source == source:
            f.path.unlink()
