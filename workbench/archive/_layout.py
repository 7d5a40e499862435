"""Where things live inside an archive root, and how file names encode positions.

``<root>/source=<name>/date=<YYYY-MM-DD>/<first>-<last>.parquet``: the name of
every data file says exactly which positions it holds, so the archive is its
own checkpoint. Side tables (gap records, lag samples) live under
``<root>/_<table>/source=<name>/``.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

import pyarrow as pa
import pyarrow.parquet as pq

from workbench._text import close_names
from workbench.errors import ArchiveError

_DIGITS = 20  # int64 needs 19; one more keeps names sortable as text
_NAME = re.compile(rf"^(\d{{{_DIGITS}}})-(\d{{{_DIGITS}}})\.parquet$")
_SAFE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"

#: Envelope columns with few distinct values, dictionary-encoded in data files;
#: ids and payloads would only pay for a dictionary that overflows (a third of
#: the encoding time, and larger files).
DICTIONARY_COLUMNS = [
    "source",
    "event_type",
    "schema_version",
    "stream",
    "subject",
    "delivery_count",
]


def encode_partition(value: str) -> str:
    """Hive-style escaping, as Spark writes it: ``jetstream:M`` → ``jetstream%3AM``."""
    return "".join(ch if ch in _SAFE else quote(ch, safe="") for ch in value)


def decode_partition(name: str) -> str:
    """The value :func:`encode_partition` encoded: ``jetstream%3AM`` → ``jetstream:M``."""
    return unquote(name)


def archive_root(root: str | os.PathLike[str]) -> Path:
    """``root`` as a path, refused in one line when it names a file or lies inside
    another archive (its files would be read as that archive's)."""
    path = Path(root)
    if path.exists() and not path.is_dir():
        raise ArchiveError(f"{root} is a file: an archive is a directory")
    refuse_inside_archive(path, "an archive")
    return path


def enclosing_archive(path: str | os.PathLike[str]) -> Path | None:
    """The archive ``path`` lies inside (in or below a ``source=`` directory), if any.

    >>> import tempfile
    >>> tmp = Path(tempfile.mkdtemp())
    >>> (tmp / "arch/source=s/date=2024-05-01").mkdir(parents=True)
    >>> (tmp / "arch/_gap_records/source=s").mkdir(parents=True)
    >>> enclosing_archive(tmp / "arch/source=s/date=2024-05-01/1-2.parquet") == tmp / "arch"
    True
    >>> enclosing_archive(tmp / "arch/_gap_records/source=s/x.parquet") == tmp / "arch"
    True
    >>> (tmp / "lake/source=prod/out").mkdir(parents=True)  # a lake's partition, no archive
    >>> enclosing_archive(tmp / "lake/source=prod/out/report.html") is None
    True
    """
    given = Path(path).absolute()  # a relative path may start inside one
    for place in (given, *given.parents):
        if place.name.startswith("source=") and place.is_dir():
            root = place.parent
            # A side table's files: <root>/_<table>/source=<name>/.
            side = root.name.startswith("_")
            # An archive's source holds date= directories, a side table Parquet files: a
            # Hive-partitioned lake's source=prod/ of other things is none.
            if side or any(place.glob("date=*")):
                return root.parent if side else root
    return None


def refuse_inside_archive(path: str | os.PathLike[str], what: str) -> None:
    """Refuse to write ``what`` at ``path`` inside an archive, which is append-only and
    only its archivers' to write.

    >>> import tempfile
    >>> day = Path(tempfile.mkdtemp()) / "arch/source=s/date=2024-05-01"
    >>> day.mkdir(parents=True)
    >>> refuse_inside_archive(day / "1-2.parquet", "a snapshot")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    workbench.errors.ArchiveError: /.../arch/source=s/date=2024-05-01/1-2.parquet is inside the archive /.../arch: a snapshot is not written among its files; choose a path outside it
    """
    root = enclosing_archive(path)
    if root is not None:
        raise ArchiveError(
            f"{path} is inside the archive {root}: {what} is not written among its files; "
            "choose a path outside it"
        )


def source_dir(root: Path, source: str) -> Path:
    return root / f"source={encode_partition(source)}"


def data_file_name(first: int, last: int) -> str:
    return f"{first:0{_DIGITS}d}-{last:0{_DIGITS}d}.parquet"


@dataclass(frozen=True, order=True)
class DataFile:
    """One archived Parquet file and the positions its name promises."""

    first: int
    last: int
    source: str
    path: Path

    def covers(self, other: DataFile) -> bool:
        return self.first <= other.first and other.last <= self.last and self != other

    @property
    def readable(self) -> Path:
        """Where to read it now: its path, or its retired name once it was merged away."""
        return readable_path(self.path)


def scan_data_files(root: Path, source: str | None = None) -> list[DataFile]:
    """Every data file under ``root`` (of ``source``), files subsumed by a larger one dropped.

    A compaction that crashed after writing the merged file but before
    retiring its inputs leaves both; the names make the overlap exact, so
    readers take the merged file only.
    """
    return drop_subsumed(list_data_files(root, source))


def list_data_files(root: Path, source: str | None = None) -> list[DataFile]:
    """Every data file under ``root`` (of ``source``), subsumed ones included."""
    found: list[DataFile] = []
    if not root.is_dir():
        return found
    pattern = "source=*" if source is None else source_dir(root, source).name
    for source_path in sorted(root.glob(pattern)):
        source = decode_partition(source_path.name.removeprefix("source="))
        for path in source_path.glob("date=*/*.parquet"):
            match = _NAME.match(path.name)
            if match:
                first, last = int(match[1]), int(match[2])
                found.append(DataFile(first, last, source, path))
    return found


#: A merged-away data file is renamed with this suffix and kept for readers that listed it:
#: no ``*.parquet`` glob (DuckDB, Polars, Spark) then reads its events twice.
RETIRED_SUFFIX = ".merged"


def retire(path: Path) -> None:
    """Rename a merged-away data file out of ``*.parquet`` globs; its keeping time starts now."""
    retired = path.with_name(path.name + RETIRED_SUFFIX)
    with contextlib.suppress(FileNotFoundError):  # retired already (a crash before a fsync)
        os.replace(path, retired)
        os.utime(retired)
        _fsync_dir(path.parent)  # a power loss must not bring the name back


def refuse_foreign(path: Path) -> None:
    """Raise :class:`ArchiveError` when the Parquet file ``path``, named as a data file, is
    not one: its ``global_position`` is missing or not an integer (a file of another
    table copied in), which every reader would otherwise trip over in its own words."""
    try:
        stat = path.stat()
    except FileNotFoundError:  # merged away meanwhile: the next listing has the merged file
        return
    problem = _foreign(path, stat.st_size, stat.st_mtime_ns)
    if problem is not None:
        raise ArchiveError(
            f"{path} is named as an archive data file but {problem}: move it out of the archive"
        )


@functools.lru_cache(maxsize=65536)
def _foreign(path: Path, size: int, mtime_ns: int) -> str | None:
    # Keyed by size and time too: a file is never rewritten, but a foreign one may be.
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowInvalid) as exc:
        return f"cannot be read ({str(exc).splitlines()[0]})"
    index = schema.get_field_index("global_position")
    if index < 0:
        return "has no global_position column"
    if not pa.types.is_integer(schema.field(index).type):
        return f"its global_position is {schema.field(index).type}, not an integer"
    return None


def readable_path(path: Path) -> Path:
    """``path``, or the name it was retired under once merged away (for a reader that listed it)."""
    if path.exists():
        return path
    retired = path.with_name(path.name + RETIRED_SUFFIX)
    return retired if retired.exists() else path


def retired_files(root: Path, source: str) -> list[Path]:
    """The merged-away files of ``source`` still kept for readers."""
    return sorted(source_dir(root, source).glob(f"date=*/*.parquet{RETIRED_SUFFIX}"))


def drop_subsumed(files: list[DataFile]) -> list[DataFile]:
    files = sorted(files, key=lambda f: (f.source, f.first, -f.last))
    kept: list[DataFile] = []
    for f in files:
        if kept and kept[-1].source == f.source and kept[-1].covers(f):
            continue
        kept.append(f)
    return kept


def records_dir(root: str | os.PathLike[str], table: str, source: str) -> Path:
    """Where ``source``'s rows of the side table ``table`` are."""
    return Path(root) / f"_{table}" / f"source={encode_partition(source)}"


def side_table_files(root: Path, table: str) -> list[Path]:
    return sorted((root / f"_{table}").glob("source=*/*.parquet"))


def side_tables(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(p.name[1:] for p in root.glob("_*") if p.is_dir() and not p.name.startswith("__"))


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed to ``path``.

    Readers see the old file or the whole new one, never a half-written
    one; on an error the temporary file is removed. The temporary name is
    hidden and never ends in ``.parquet``, so archive globs skip it.

    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "note.txt"
    >>> with atomic_file(target) as tmp:
    ...     _ = tmp.write_text("all or nothing")
    >>> target.read_text()
    'all or nothing'
    """
    target = Path(path)
    if target.is_dir():
        raise ArchiveError(f"{target} is a directory; give a file name")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArchiveError(f"cannot write {target}: {exc.strerror or exc}") from None
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.rename(tmp, target)
    except OSError as exc:
        raise ArchiveError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(target.parent)


def write_atomically(
    table: pa.Table,
    path: Path,
    *,
    row_group_size: int = 100_000,
    dictionary: bool | list[str] = True,
) -> None:
    """Write ``table`` as zstd Parquet to ``path`` with :func:`atomic_file`.

    ``dictionary`` names the columns worth dictionary-encoding (all by default).
    """
    with atomic_file(path) as tmp:
        write_parquet(table, tmp, row_group_size=row_group_size, dictionary=dictionary)


def write_parquet(
    table: pa.Table,
    path: Path,
    *,
    row_group_size: int = 100_000,
    dictionary: bool | list[str] = True,
) -> None:
    """Write ``table`` as an archive writes its files: zstd Parquet with statistics."""
    pq.write_table(
        table,
        path,
        compression="zstd",
        row_group_size=row_group_size,
        write_statistics=True,
        use_dictionary=dictionary,
    )


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while the block runs and deliver them after it: steps that
    must happen together (a merged file published and its inputs retired, which a
    plain ``*.parquet`` glob would otherwise read twice) are not cut between them.

    Outside the main thread (which alone gets signals) it holds nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: held.append(signum)) for s in signals}
    try:
        yield
    finally:
        for kind, handler in previous.items():
            signal.signal(kind, handler)
        if held:  # the first, as if it came now, to whoever handled it before (both stop)
            signal.raise_signal(held[0])


def remove_stale_temporaries(directory: Path) -> int:
    """Remove temporary files of writers that died; call only under :func:`source_lock`.

    Writers hold the source lock while a temporary file exists, so under the
    lock every temporary file belongs to a dead writer.
    """
    stale = list(directory.glob("date=*/.*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


#: A side table's temporary file this old belongs to a writer that died (a write takes
#: seconds; side-table writers, a lag sampler among them, hold no source lock).
_DEAD_WRITE_SECONDS = 3600.0


def remove_dead_side_temporaries(root: Path, source: str) -> int:
    """Remove temporary files an hour old from ``source``'s side tables (gap records, lag
    samples): a writer killed mid-write left them, hidden from readers, piling up."""
    cutoff = time.time() - _DEAD_WRITE_SECONDS
    dead = [
        path
        for path in Path(root).glob(f"_*/source={encode_partition(source)}/.*.tmp")
        if path.stat().st_mtime < cutoff
    ]
    for path in dead:
        path.unlink(missing_ok=True)
    return len(dead)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def source_lock(root: Path, source: str) -> Iterator[None]:
    """Exclusive lock on one source of an archive, across processes.

    Two archivers writing the same source would race on "the highest
    archived position"; the second one waits for the first.
    """
    directory = source_dir(root, source)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        except OSError as exc:  # pragma: no cover - exotic filesystems
            raise ArchiveError(f"cannot lock {directory}: {exc}") from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def unknown_source(name: str, sources: list[str]) -> ArchiveError:
    """The error for a source the archive does not hold, naming the close ones (by the
    whole name, or by the stream or table it ends in).

    >>> print(unknown_source("MEMORIS", ["jetstream:MEMORIES", "postgres:public.orders"]))
    archive has no source 'MEMORIS'; did you mean jetstream:MEMORIES?; sources: ...
    """
    ends = {re.split(r"[:.]", s)[-1]: s for s in sources}
    close = close_names(name, sources) or [ends[e] for e in close_names(name, ends)]
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return ArchiveError(
        f"archive has no source {name!r}{hint}; sources: {', '.join(sources) or 'none'}"
    )
