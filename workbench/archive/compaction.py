"""Merging many small archive files into fewer large ones, content unchanged."""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from workbench.archive._layout import (
    DICTIONARY_COLUMNS,
    DataFile,
    atomic_file,
    data_file_name,
    drop_subsumed,
    list_data_files,
    records_dir,
    refuse_foreign,
    retire,
    retired_files,
    scan_data_files,
    signals_held,
    source_lock,
    unknown_source,
    write_parquet,
)
from workbench.errors import ArchiveError

__all__ = ["CompactResult", "compact", "merge_tail"]

#: Small files the newest end of a source may gather before :func:`merge_tail` merges them.
TAIL_FILES = 64
#: How long merged-away files stay for readers that listed them (see :func:`merge_tail`).
KEEP_MERGED_SECONDS = 3600.0


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
    keep_seconds: float = KEEP_MERGED_SECONDS,
    progress: Callable[[int, int], None] | None = None,
) -> CompactResult:
    """Merge adjacent files of each source (same date partition) up to ``target_events``.

    The merged file is named for the positions it holds and is written
    before its inputs are retired (renamed ``*.parquet.merged``, out of
    every ``*.parquet`` glob, and removed after ``keep_seconds`` by a later
    compact or merge, so a reader that listed them can finish). A crash in
    between leaves inputs the reader ignores because a larger file covers
    them; the next compact retires them. Counts are of the files readers see.
    ``progress(events, total)`` is called after each run of files.

    >>> import tempfile, pyarrow as pa
    >>> from workbench.archive.writer import ArchiveWriter
    >>> root = tempfile.mkdtemp(); w = ArchiveWriter(root, "s")
    >>> for p in range(1, 4):
    ...     _ = w.append(pa.table({"global_position": [p], "recorded_at": [0]}))
    >>> compact(root)
    CompactResult(files_before=3, files_after=1, events=3)
    """
    root = Path(root)
    visible = scan_data_files(root)
    present = sorted({f.source for f in visible})
    if source is not None and source not in present:
        raise unknown_source(source, present)
    sources = present if source is None else [source]
    events = 0
    total = sum(_rows(f.path) for f in visible if f.source in sources)
    for name in sources:
        with source_lock(root, name):
            files = _retire_subsumed(root, name)
            for run in _runs(files, target_events, _recorded_gaps(root, name)):
                events += sum(_rows(f.path) for f in run)
                if len(run) > 1:
                    _merge(run)
                if progress is not None:
                    progress(events, total)
            _remove_retired(root, name, older_than=keep_seconds)
    return CompactResult(len(visible), len(scan_data_files(root)), events)


@functools.lru_cache(maxsize=4096)
def _rows(path: Path) -> int:
    # A data file's name says its positions and is never rewritten: its row count holds.
    return int(pq.ParquetFile(path).metadata.num_rows)


def _runs(
    files: list[DataFile], target_events: int, gaps: Sequence[tuple[int, int]] = ()
) -> list[list[DataFile]]:
    """Files to merge, in order: neighbours in one date partition, up to ``target_events``,
    with no unexplained positions between them.

    A merged file's name claims every position from its first to its last: merged
    across a hole no gap record explains (a file lost, or moved aside), it would hide
    the file put back there, which the next compact would retire for good.
    """
    runs: list[list[DataFile]] = []
    size = 0
    for f in sorted(files):
        rows = _rows(f.path)
        if (
            runs
            and runs[-1][-1].path.parent == f.path.parent
            and size + rows <= target_events
            and _explained(runs[-1][-1].last + 1, f.first - 1, gaps)
        ):
            runs[-1].append(f)
            size += rows
        else:
            runs.append([f])
            size = rows
    return runs


def _explained(first: int, last: int, gaps: Sequence[tuple[int, int]]) -> bool:
    """Whether recorded gaps (sorted ranges) cover every position from ``first`` to ``last``.

    >>> _explained(5, 4, []), _explained(5, 9, [(1, 6), (7, 9)]), _explained(5, 9, [(5, 7)])
    (True, True, False)
    """
    for gap_first, gap_last in gaps:
        if first > last:
            break
        if gap_first <= first <= gap_last:
            first = gap_last + 1
    return first > last


def _recorded_gaps(root: Path, source: str) -> list[tuple[int, int]]:
    """The source's recorded gaps as sorted ranges (read with pyarrow: the writer, which
    reads side tables with DuckDB, sits above this module)."""
    ranges: set[tuple[int, int]] = set()
    for path in records_dir(root, "gap_records", source).glob("*.parquet"):
        ranges.update(_gap_file(path))
    return sorted(ranges)


@functools.lru_cache(maxsize=16384)
def _gap_file(path: Path) -> tuple[tuple[int, int], ...]:
    # Record files are written once and never change: a follower reads each one once.
    try:
        table = pq.read_table(path, columns=["first_missing", "last_missing"])
    except (OSError, pa.ArrowInvalid) as exc:
        raise ArchiveError(f"gap records file {path} cannot be read: {exc}") from None
    return tuple(zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True))


def _merge(run: list[DataFile]) -> Path:
    for f in run:
        refuse_foreign(f.path)
    table = pa.concat_tables(pq.read_table(f.path) for f in run)
    target = run[0].path.parent / data_file_name(run[0].first, run[-1].last)
    with contextlib.ExitStack() as publishing:
        with atomic_file(target) as tmp:
            write_parquet(table, tmp, dictionary=DICTIONARY_COLUMNS)  # a signal here: no file
            # From the merged file's rename to its inputs' retiring, one step for readers
            # of a plain glob (Ctrl-C or SIGTERM between them had it read events twice).
            publishing.enter_context(signals_held())
        for f in run:
            retire(f.path)
    return target


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
    files`` events. Merges go by tier, as in a log-structured merge tree: a
    file under ``files`` events is tier 0, under ``files²`` tier 1, and so
    on. The newest files of tier ``t`` or lower are merged once they are
    ``files`` files holding enough events for tier ``t + 1`` (or twice as
    many files, when tiers interleave), so an event is rewritten about once
    per tier, two or three times, not once per merge. The merged-away files
    are retired (renamed ``*.parquet.merged``) and kept ``keep_seconds``, so
    a reader that listed them before the merge can still read them; older
    ones are removed. Call it under
    :func:`~workbench.archive._layout.source_lock`. Returns the merged file,
    if it wrote one.
    """
    small = max(1, target_events // files)
    tail: list[tuple[DataFile, int]] = []  # newest first, with its events
    gaps: list[tuple[int, int]] | None = None  # read at the first hole, if any
    for f in sorted(_retire_subsumed(root, source), reverse=True):
        if tail and f.path.parent != tail[-1][0].path.parent:
            break
        if tail and f.last + 1 < tail[-1][0].first:  # a hole: merged only if recorded
            gaps = _recorded_gaps(root, source) if gaps is None else gaps
            if not _explained(f.last + 1, tail[-1][0].first - 1, gaps):
                break
        # Sparse positions (a sequence's cache, rollbacks) make a name's span overstate
        # its rows, and so its tier: the footer says (read once per file, files never change).
        rows = _rows(f.path)
        if rows >= small:
            break
        tail.append((f, rows))
    merged = None
    for tier in sorted({_tier(rows, files) for _, rows in tail}):
        run = _leading(tail, tier, files)
        events = sum(rows for _, rows in run)
        if len(run) >= 2 * files or (len(run) >= files and events >= files ** (tier + 1)):
            merged = _merge([f for f, _ in reversed(run)])
            break
    _remove_retired(root, source, older_than=keep_seconds)
    return merged


def _leading(tail: list[tuple[DataFile, int]], tier: int, files: int) -> list[tuple[DataFile, int]]:
    """The newest files of ``tail`` up to the first of a tier above ``tier``."""
    run = []
    for f, rows in tail:
        if _tier(rows, files) > tier:
            break
        run.append((f, rows))
    return run


def _tier(rows: int, files: int) -> int:
    """0 under ``files`` rows, 1 under ``files**2``, ...: ``files`` files of a tier make the next.

    >>> [_tier(n, 64) for n in (1, 63, 64, 4095, 4096)]
    [0, 0, 1, 1, 2]
    """
    tier = 0
    while rows >= files ** (tier + 1):
        tier += 1
    return tier


def _retire_subsumed(root: Path, source: str) -> list[DataFile]:
    """Retire the inputs a crash left beside the merged file that covers them; return the
    files readers see (one listing of the source, on every append).

    A file is retired only when the covering file holds each of its positions: one put
    back into a range a merge spanned (restored from a backup) is refused, not removed.
    """
    listed = list_data_files(root, source)
    visible = drop_subsumed(listed)
    for f in set(listed) - set(visible):
        cover = next(v for v in visible if v.source == f.source and v.covers(f))
        missing = _positions(f.path) - _positions(cover.path)
        if missing:
            raise ArchiveError(
                f"{f.path} holds {len(missing):,} position(s) (from {min(missing)}) that "
                f"{cover.path.name}, whose name spans them, does not: readers see only the "
                "larger file; move one of them aside, or re-archive the source"
            )
        retire(f.path)
    return visible


def _positions(path: Path) -> set[int]:
    return set(pq.read_table(path, columns=["global_position"]).column(0).to_pylist())


def _remove_retired(root: Path, source: str, *, older_than: float) -> None:
    now = time.time()
    for path in retired_files(root, source):
        with contextlib.suppress(FileNotFoundError):
            if now - path.stat().st_mtime >= older_than:
                path.unlink()
