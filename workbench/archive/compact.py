"""Merging many small archive files into fewer large ones, content unchanged."""

from __future__ import annotations

import contextlib
import os
import time
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

__all__ = ["CompactResult", "compact", "merge_tail"]


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


def _merge(run: list[DataFile], *, remove_inputs: bool = True) -> Path:
    table = pa.concat_tables(pq.read_table(f.path) for f in run)
    target = run[0].path.parent / data_file_name(run[0].first, run[-1].last)
    write_atomically(table, target, dictionary=DICTIONARY_COLUMNS)
    if remove_inputs:
        for f in run:
            f.path.unlink()
    return target


#: Small files the newest end of a source may gather before :func:`merge_tail` merges them.
TAIL_FILES = 64
#: How long merged-away files stay for readers that listed them (see :func:`merge_tail`).
KEEP_MERGED_SECONDS = 3600.0


def merge_tail(
    root: Path,
    source: str,
    *,
    files: int = TAIL_FILES,
    target_events: int = 1_000_000,
    keep_seconds: float = KEEP_MERGED_SECONDS,
) -> Path | None:
    """Merge the newest small files of ``source`` once there are ``files`` of them.

    An archiver that follows a source writes a small file per poll or idle
    moment, thousands a day; this keeps the count near one file per
    ``target_events`` as it goes. Small means under ``target_events /
    files`` events, so a merge rewrites little and a merged file is merged
    again only while it is still small. The merged-away files are left for
    ``keep_seconds`` (readers skip them, a larger file covers them), so a
    reader that listed them before the merge can still read them; older ones
    are removed. Call it under :func:`~workbench.archive._layout.source_lock`.
    Returns the merged file, if it wrote one.
    """
    small = max(1, target_events // files)
    mine = [f for f in scan_data_files(root) if f.source == source]
    tail: list[DataFile] = []
    for f in sorted(mine, reverse=True):
        if tail and f.path.parent != tail[-1].path.parent:
            break
        # Rows <= the positions a name spans: the file is read only when that is not small.
        if f.last - f.first + 1 >= small and _rows(f.path) >= small:
            break
        tail.append(f)
    merged = None
    if len(tail) >= files:
        merged = _merge(tail[::-1], remove_inputs=False)
        for f in tail:  # their hour starts now, not when they were written
            os.utime(f.path)
    _remove_subsumed(root, source, older_than=keep_seconds)
    return merged


def _remove_subsumed(root: Path, source: str, *, older_than: float = 0.0) -> None:
    kept = set(scan_data_files(root))
    now = time.time()
    for f in list_data_files(root):
        if f not in kept and f.source == source:
            with contextlib.suppress(FileNotFoundError):
                if now - f.path.stat().st_mtime >= older_than:
                    f.path.unlink()
