"""Reading the archive for a replay: bounded batches of only the columns handlers use.

Decoding Parquet columns nobody reads (``event_id``, ``metadata``,
``payload``, ...) cost the replay more than its handlers did, so a batch
holds the envelope columns every event needs plus those a handler has asked
for so far. A column asked for the first time is read from the batch's file
then, and from the next batch on it is read with the others.

>>> import tempfile, pyarrow as pa
>>> from workbench.archive import ArchiveReader, ArchiveWriter
>>> root = tempfile.mkdtemp()
>>> _ = ArchiveWriter(root, "demo").append(pa.table({
...     "global_position": [1, 2, 3], "recorded_at": [0, 1, 2],
...     "event_type": ["A", "B", "A"], "subject": ["x", "y", "z"]}))
>>> wanted = set()
>>> [batch] = read_batches(ArchiveReader(root), "demo", after=1, wanted=wanted)
>>> batch.num_rows, "subject" in batch.table.column_names
(2, False)
>>> batch.column("subject").to_pylist(), sorted(wanted)
(['y', 'z'], ['subject'])
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
from collections.abc import Generator, Iterable, Iterator
from typing import TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from workbench import _duckdb, envelope
from workbench.archive import ArchiveReader, DataFile
from workbench.errors import ArchiveError
from workbench.replay.event import Prepared

__all__ = ["BASE_COLUMNS", "EventBatch", "prefetch", "quick_switching", "read_batches"]

T = TypeVar("T")

#: Columns every replayed event needs: its position, type, stream, version and payload.
BASE_COLUMNS = (
    "global_position",
    "event_type",
    "stream",
    "stream_position",
    "schema_version",
    "data",
)


class _File:
    """One Parquet file of the archive, with the columns read from it on demand."""

    __slots__ = ("_cache", "data_file")

    def __init__(self, data_file: DataFile) -> None:
        self.data_file = data_file
        self._cache: dict[str, pa.ChunkedArray] = {}

    def column(self, name: str) -> pa.ChunkedArray:
        found = self._cache.get(name)
        if found is None:
            typ = envelope.SCHEMA.field(name).type
            parquet = pq.ParquetFile(self.data_file.readable)
            if name in parquet.schema_arrow.names:
                found = parquet.read(columns=[name]).column(0).cast(typ)
            else:  # a file written before the column existed
                found = pa.chunked_array([pa.nulls(parquet.metadata.num_rows, typ)])
            self._cache[name] = found
        return found


class EventBatch:
    """Envelope rows of one slice of one archive file, in ``global_position`` order.

    ``table`` holds the columns read so far; :meth:`column` returns any
    envelope column, reading a missing one from the file (and adding it to
    ``wanted``, so later batches read it up front).
    """

    __slots__ = (
        "_file",
        "_mask",
        "_offset",
        "_wanted",
        "eager",
        "num_rows",
        "prepared",
        "table",
    )

    def __init__(
        self,
        table: pa.Table,
        file: _File,
        offset: int,
        mask: pa.ChunkedArray | pa.Array | None,
        wanted: set[str],
    ) -> None:
        self.table = table
        self.num_rows = table.num_rows
        #: Columns handlers asked for in earlier batches: worth converting up front,
        #: whether this batch holds them or reads them from its file (mid-file,
        #: the file's column list is fixed). Converted lazily, each read pays
        #: a Python property call: a third of a handler's cost.
        self.eager = tuple(c for c in envelope.COLUMNS if c in wanted)
        #: The Arrow side of decoding, when the reading thread computed it.
        self.prepared: Prepared | None = None
        self._file = file
        self._offset = offset
        self._mask = mask
        self._wanted = wanted

    def column(self, name: str) -> pa.ChunkedArray:
        if name in self.table.column_names:
            return self.table.column(name)
        if name not in envelope.COLUMNS:
            raise KeyError(name)
        self._wanted.add(name)  # read up front from the next batch on
        length = self.num_rows if self._mask is None else len(self._mask)
        values = self._file.column(name).slice(self._offset, length)
        if self._mask is not None:
            values = values.filter(self._mask)
        return values


def read_batches(
    reader: ArchiveReader,
    source: str,
    *,
    after: int | None = None,
    until: int | None = None,
    where: str | None = None,
    batch_size: int = 100_000,
    wanted: set[str] | None = None,
    prepare: bool = True,
) -> Iterator[EventBatch]:
    """Batches of ``source`` in ``global_position`` order, bounded and filtered.

    ``wanted`` (shared between calls, grown by :meth:`EventBatch.column`) is
    the set of extra columns to read; None reads every envelope column. A
    ``where`` filter reads every column, since it may name any of them.
    ``prepare`` does the Arrow side of decoding (:class:`Prepared`) here, on the
    reading thread; a caller that keeps only columns needs none of it.
    """
    con = _duckdb.connect()  # for `where`, and to check payloads on the reading thread
    files = sorted((f for f in reader.files if f.source == source), key=lambda f: f.first)
    extra = wanted if wanted is not None else set(envelope.COLUMNS)
    wanted = wanted if wanted is not None else set()
    try:
        for data_file in files:
            if (after is not None and data_file.last <= after) or (
                until is not None and data_file.first > until
            ):
                continue
            # A follower may merge (and retire) the tail files while a long replay runs.
            parquet = pq.ParquetFile(data_file.readable)
            present = set(parquet.schema_arrow.names)
            file = _File(data_file)
            offset = 0
            columns = [
                c
                for c in envelope.COLUMNS
                if c in present and (where or c in BASE_COLUMNS or c in extra)
            ]
            for raw in parquet.iter_batches(batch_size=batch_size, columns=columns):
                batch = pa.Table.from_batches([raw])
                start, offset = offset, offset + raw.num_rows
                batch = _conform(batch, columns)
                lowest = pc.min(batch.column("global_position")).as_py()
                if lowest is not None and lowest < 0:  # the write log codes events as ~position
                    raise ArchiveError(
                        f"{data_file.path.name}: global_position {lowest} is negative; "
                        "positions must be 0 or more"
                    )
                mask = _bounds(batch.column("global_position"), after, until)
                if mask is not None:
                    batch = batch.filter(mask)
                if where and batch.num_rows:
                    con.register("events", batch)
                    batch = con.sql(f"select * from events where {where}").to_arrow_table()
                    mask = None  # every column was read: nothing is fetched later
                if batch.num_rows:
                    events = EventBatch(batch, file, start, mask, wanted)
                    events.prepared = Prepared(batch, con) if prepare else None
                    yield events

    finally:
        con.close()


def _conform(batch: pa.Table, columns: list[str]) -> pa.Table:
    """Envelope types, and null columns for base columns an old file lacks."""
    for name in BASE_COLUMNS:
        if name not in batch.column_names:
            batch = batch.append_column(
                envelope.SCHEMA.field(name),
                pa.nulls(batch.num_rows, envelope.SCHEMA.field(name).type),
            )
    schema = pa.schema([envelope.SCHEMA.field(c) for c in batch.column_names])
    return batch if batch.schema.equals(schema) else batch.cast(schema)


def _bounds(
    positions: pa.ChunkedArray, after: int | None, until: int | None
) -> pa.ChunkedArray | None:
    """A mask keeping positions in ``(after, until]``, or None when all are kept."""
    mask = None
    if after is not None and pc.min(positions).as_py() <= after:
        mask = pc.greater(positions, after)
    if until is not None and pc.max(positions).as_py() > until:
        upper = pc.less_equal(positions, until)
        mask = upper if mask is None else pc.and_(mask, upper)
    return mask


class _Switching:
    """The interpreter's GIL switch interval, lowered while any replay reads ahead."""

    lock = threading.Lock()
    users = 0
    saved = 0.0


@contextlib.contextmanager
def quick_switching(interval: float = 0.001) -> Iterator[None]:
    """Lower the GIL switch interval to ``interval`` while the block runs.

    The handlers' thread holds the GIL; the reading thread needs it for a moment
    between Arrow calls and waits a whole switch interval (5 ms) each time. At
    1 ms it keeps a batch ahead: 10% off a rebuild (benchmarks/bench_replay.py).
    The interval is the process's: replays in several threads lower it once and
    the last to finish restores it.

    >>> before = sys.getswitchinterval()
    >>> with quick_switching():
    ...     sys.getswitchinterval() <= 0.001
    True
    >>> sys.getswitchinterval() == before
    True
    """
    with _Switching.lock:
        if _Switching.users == 0:
            _Switching.saved = sys.getswitchinterval()
            sys.setswitchinterval(min(_Switching.saved, interval))
        _Switching.users += 1
    try:
        yield
    finally:
        with _Switching.lock:
            _Switching.users -= 1
            if _Switching.users == 0:
                sys.setswitchinterval(_Switching.saved)


_DONE = object()


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetch(items: Iterable[T], depth: int = 2) -> Generator[T, None, None]:
    """``items``, produced on a second thread up to ``depth`` ahead of the consumer.

    Reading and decoding Parquet releases the GIL, so the next batch is read
    on the other core while handlers run. An error in the producer is raised
    in the consumer; closing the iterator early stops the producer.

    >>> list(prefetch(iter(range(5))))
    [0, 1, 2, 3, 4]
    """
    handoff: queue.Queue[object] = queue.Queue(depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        handoff.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            handoff.put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            handoff.put(_Failed(exc))
        finally:  # release what the source holds (files, a DuckDB connection) now
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="workbench-read", daemon=True)
    thread.start()
    try:
        while True:
            item = handoff.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                handoff.get_nowait()
            except queue.Empty:
                thread.join(0.05)
