"""What a replay-safety check delivers to a projection: the history, and faulty orders of it.

The history is held as Arrow columns (about 200 bytes an event: the columns
every event needs, and those the handlers read), not as decoded events
(about 1.7 KB each): a check replays it many times, and each replay decodes
it afresh, a chunk at a time, so every delivered copy gets a payload of its
own and memory holds one chunk of Python objects, not the history. A
delivery is an array of row numbers (a row twice: delivered twice; out of
order: reordered), with :data:`RESTART` where the process restarts.

>>> import random
>>> history_types = ["A", "A", "B"]
>>> redelivered(history_types, None, random.Random(0), 1.0).order.tolist()
[0, 1, 2, 2, 1, 0]
>>> crashed(history_types, None, random.Random(0), 1).order.tolist()  # the second event again
[0, 1, -1, 1, 2]
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from workbench import _duckdb, envelope
from workbench._text import plural
from workbench.archive import ArchiveReader
from workbench.errors import ProjectionError
from workbench.replay.batches import BASE_COLUMNS, prefetch, read_batches
from workbench.replay.event import Event, Prepared, _combined, _strings
from workbench.replay.runner import Runner

__all__ = [
    "RESTART",
    "Delivery",
    "History",
    "chosen",
    "crashed",
    "injected",
    "redelivered",
    "reordered",
    "republished",
    "restarted",
]

#: In a delivery's order: the process restarts here (a fresh projection instance).
RESTART = -1

#: Events decoded at a time: Python objects for this many, never the history's.
CHUNK = 20_000


@dataclass
class Delivery:
    """Rows of the history in the order they are delivered, :data:`RESTART` at restarts.

    ``positions``, when given, is the ``global_position`` each delivered row
    carries instead of its own where it is 0 or more (a copy stored again
    at a new position).
    """

    order: np.ndarray
    positions: np.ndarray | None = None


class History:
    """The events a check replays, in archive order, as Arrow columns.

    ``types`` is each event's type (shared string objects), ``streams`` a
    code per event's stream (events without one share a code). A column
    the handlers read beyond :data:`BASE_COLUMNS` is read from the archive
    the first time they do, for every event, and kept.
    """

    def __init__(
        self, reader: ArchiveReader, source: str, until: int | None, where: str | None
    ) -> None:
        batches = read_batches(
            reader, source, until=until, where=where, wanted=set(), prepare=False
        )
        tables = [_owned(batch.table.select(list(BASE_COLUMNS)), where) for batch in batches]
        schema = pa.schema([envelope.SCHEMA.field(c) for c in BASE_COLUMNS])
        self.table = pa.concat_tables(tables) if tables else schema.empty_table()
        positions = self.table.column("global_position")
        # Read again for a column, the archive must give the same rows: a follower
        # appending meanwhile adds none past the last one read now.
        last = pc.max(positions).as_py()
        #: The bound of the archive's rows read: any later read must give the same rows.
        self.until: int | None = until if last is None else last
        self._read = (reader, source, self.until, where)
        self.types: list[str] = _strings(
            pc.dictionary_encode(_combined(self.table.column("event_type")))
        )
        streams = pc.dictionary_encode(_combined(self.table.column("stream")))
        self.streams: np.ndarray = streams.indices.fill_null(-1).to_numpy()
        #: Columns beyond the base ones that handlers read: converted up front in a chunk.
        self.eager: tuple[str, ...] = ()
        #: The archive's rows kept (see :meth:`drop_undecodable`), None for all.
        self._kept: pa.Array | None = None

    def __len__(self) -> int:
        return self.table.num_rows

    def in_order(self) -> Delivery:
        """Every event once, in archive order: the clean replay."""
        return Delivery(np.arange(len(self), dtype=np.int64))

    def last_position(self) -> int:
        """The highest ``global_position`` (-1 for no events)."""
        last = pc.max(self.table.column("global_position")).as_py()
        return -1 if last is None else int(last)

    def column(self, name: str) -> pa.ChunkedArray:
        """Column ``name`` of every event, read from the archive on first use."""
        if name in self.table.column_names:
            return self.table.column(name)
        if name not in envelope.COLUMNS:
            raise KeyError(name)
        reader, source, until, where = self._read
        batches = read_batches(
            reader, source, until=until, where=where, wanted={name}, prepare=False
        )
        parts = [
            _owned(
                pa.table({name: batch.column(name), "p": batch.column("global_position")}), where
            )
            for batch in batches
        ]
        read = (
            pa.concat_tables(parts)
            if parts
            else pa.table({name: pa.array([], envelope.SCHEMA.field(name).type), "p": []})
        )
        if self._kept is not None and read.num_rows == len(self._kept):
            read = read.filter(self._kept)
        values = read.column(name).cast(envelope.SCHEMA.field(name).type)
        # The same rows in the same order, or the values would land on other events.
        same = read.num_rows == len(self) and read.column("p").equals(
            self.table.column("global_position")
        )
        if not same:
            raise ProjectionError(
                f"read again for its {name} column, the archive gave other events "
                f"({read.num_rows:,}, not {len(self):,}): it changed while replay safety was checked, or the "
                "where filter picks other rows each time (random(), now()); check again"
            )
        self.table = self.table.append_column(envelope.SCHEMA.field(name), values)
        self.eager = (*self.eager, name)
        return values

    def drop_undecodable(self, decoder: Runner) -> int:
        """Decode every event once with ``decoder`` and leave out those it cannot (an
        upcaster fails on them): no handler ever sees them, so no fault is drawn on them
        or counted for them. Returns how many.

        The pass also fills what upcasters cache on their class, as a replay's one
        decoding would, before the check looks at what its handlers keep there.
        """
        if not decoder.chain:  # no upcaster: nothing to fail, nothing to cache
            return 0
        before = decoder.failures
        delivered: list[int] = []
        for events in self.deliver(self.in_order(), decoder):
            delivered.extend(event.global_position for event in events or ())
        undecodable = decoder.failures - before
        if not undecodable:
            return 0
        positions = self.table.column("global_position")
        kept = pc.is_in(positions, value_set=pa.array(delivered, pa.int64()))
        kept = kept.combine_chunks() if isinstance(kept, pa.ChunkedArray) else kept
        self._kept = kept  # of the archive's rows: called once, before any is dropped
        self.table = self.table.filter(kept)
        mask = kept.to_numpy(zero_copy_only=False)
        self.types = [t for t, keep in zip(self.types, mask, strict=True) if keep]
        self.streams = self.streams[mask]
        return undecodable

    def unordered(self) -> str:
        """What the reorder scenario could not vary: events without a stream.

        >>> h = History.__new__(History)
        >>> h.table = pa.table({"stream": [None, "s"]})
        >>> h.unordered()
        '1 of 2 events have no stream and kept their order: map stream to reorder them'
        """
        without, n = self.table.column("stream").null_count, len(self)
        if not without:
            return ""
        if without == n:
            return "no event has a stream, so none was reordered: map stream to test this"
        return (
            f"{without:,} of {n:,} events have no stream and kept their order: "
            "map stream to reorder them"
        )

    def deliver(self, delivery: Delivery, decoder: Runner) -> Iterator[list[Event] | None]:
        """The delivered events a chunk at a time, decoded (and upcast) by ``decoder``;
        None where the process restarts (restart ``decoder`` too: upcasters keep state
        on their instance, as handlers do)."""
        for chunk in prefetch(self._chunks(delivery)):
            if chunk is None:
                yield None
                continue
            events = decoder.decode(chunk)
            decoder.take_dead_letters()  # counted (decoder.failures), not kept
            yield events

    def _chunks(self, delivery: Delivery) -> Iterator[_Chunk | None]:
        """The delivery's chunks of rows, taken and prepared for decoding (Arrow work,
        which releases the GIL: :meth:`deliver` runs this on the other core)."""
        order = delivery.order
        restarts = np.flatnonzero(order == RESTART).tolist()
        con = _duckdb.connect()  # to check payloads
        try:
            start = 0
            for stop in [*restarts, len(order)]:
                for lo in range(start, stop, CHUNK):
                    hi = min(lo + CHUNK, stop)
                    positions = None if delivery.positions is None else delivery.positions[lo:hi]
                    yield _Chunk(self, order[lo:hi], positions, con)
                if stop < len(order):
                    yield None
                start = stop + 1
        finally:
            con.close()


def _owned(table: pa.Table, where: str | None) -> pa.Table:
    """``table`` in buffers of its own. A ``where`` filter's rows come from DuckDB, whose
    Arrow columns share one allocation per batch: a column kept would keep every column
    of the archive (800 MB more for 300k events read lazily)."""
    if not where:
        return table
    return table.take(pa.array(np.arange(table.num_rows)))


class _Chunk:
    """Some delivered rows, as :func:`~workbench.replay.event.decode` reads them."""

    __slots__ = ("_history", "_rows", "eager", "num_rows", "prepared", "table")

    def __init__(
        self,
        history: History,
        rows: np.ndarray,
        positions: np.ndarray | None,
        con: duckdb.DuckDBPyConnection,
    ) -> None:
        self._history = history
        self._rows = pa.array(rows)
        table = history.table.take(self._rows)
        if positions is not None and (positions >= 0).any():
            moved = pa.array(positions >= 0)
            column = pc.if_else(moved, pa.array(positions), table.column("global_position"))
            table = table.set_column(0, "global_position", column)
        self.table = table
        self.num_rows = table.num_rows
        self.eager = history.eager
        self.prepared: Prepared | None = Prepared(table, con)

    def column(self, name: str) -> pa.ChunkedArray:
        if name in self.table.column_names:
            return self.table.column(name)
        return self._history.column(name).take(self._rows)  # first use: read, and kept


# ------------------------------------------------------------------ faults
# Each takes the history's event types (in archive order), the one event type to
# apply the fault to (None: all), and a seeded random generator.


def chosen(types: Sequence[str], only: str | None, rng: random.Random, share: float) -> list[int]:
    """Where the events a fault applies to are: a ``share`` of each event type's, at least
    one of each, so that a small archive, or a rare type's handler, is tried too.

    >>> chosen(["A"] * 8 + ["B"], None, random.Random(0), 0.1)
    [6, 8]
    """
    by_type: dict[str, list[int]] = {}
    for i, event_type in enumerate(types):
        if only is None or event_type == only:
            by_type.setdefault(event_type, []).append(i)
    picked: list[int] = []
    for where in by_type.values():
        picked += rng.sample(where, max(1, round(share * len(where))))
    return sorted(picked)


def _later(
    types: Sequence[str], only: str | None, rng: random.Random, share: float
) -> tuple[np.ndarray, np.ndarray]:
    """All events in order, a chosen ``share`` of them once more later; and which entries
    are those second ones.

    Half the copies come 1..100 events later (an ack that timed out), half anywhere in
    the rest of the history, log-uniformly (a consumer that came back after hours):
    only a far copy lands after its stream's later events, where a deleted row revives.
    With ``only``, the copies of that type's events the same ``rng`` gives without it,
    at the same places: narrowing a failure down retries the very faults that failed.

    >>> [_later(["A", "B", "A"], only, random.Random(1), 1.0)[0].tolist()
    ...  for only in (None, "A", "B")]
    [[0, 1, 2, 2, 1, 0], [0, 1, 2, 2, 0], [0, 1, 2, 1]]
    """
    n = len(types)
    picked = chosen(types, None, rng, share)
    later = [
        i + (rng.randint(1, 100) if rng.random() < 0.5 else _far(n - i, rng)) + 0.5 for i in picked
    ]
    if only is not None:
        kept = [(i, key) for i, key in zip(picked, later, strict=True) if types[i] == only]
        picked, later = [i for i, _ in kept], [key for _, key in kept]
    return _placed(n, picked, later)


def _far(room: int, rng: random.Random) -> int:
    """A distance of 1 to ``room`` events, each scale (10, 1,000, 100,000) as likely."""
    return min(room, max(1, int(math.exp(rng.uniform(0.0, math.log(max(room, 1)))))))


def _placed(n: int, rows: Sequence[int], keys: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """All ``n`` rows in order with ``rows`` again where their ``keys`` sort (between the
    rows of the integers around them); and which entries are those second ones."""
    all_keys = np.concatenate([np.arange(n, dtype=np.float64), np.array(keys, np.float64)])
    all_rows = np.concatenate([np.arange(n, dtype=np.int64), np.array(rows, np.int64)])
    slots = np.argsort(all_keys, kind="stable")
    return all_rows[slots], slots >= n


def redelivered(
    types: Sequence[str], only: str | None, rng: random.Random, share: float
) -> Delivery:
    """Chosen events delivered again later (see :func:`_later`)."""
    return Delivery(_later(types, only, rng, share)[0])


def restarted(types: Sequence[str], streams: np.ndarray, only: str | None) -> Delivery:
    """Each stream's first event delivered again after the stream's last (a subscription
    to the stream that restarted from its start; a creation that comes back after the
    deletion). Deterministic: every stream is tried, none by chance.

    >>> restarted(["Created", "Deleted", "Created"], np.array([0, 0, -1]), None).order.tolist()
    [0, 1, 0, 2]
    """
    firsts, lasts = _stream_ends(streams)
    if only is not None:
        keep = [types[i] == only for i in firsts.tolist()]
        firsts, lasts = firsts[keep], lasts[keep]
    return Delivery(_placed(len(types), firsts.tolist(), (lasts + 0.5).tolist())[0])


def _stream_ends(streams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The row of each stream's first and last event (events without one, code -1, left out).

    >>> [a.tolist() for a in _stream_ends(np.array([1, 0, 1, -1, 0]))]
    [[1, 0], [4, 2]]
    """
    with_stream = np.flatnonzero(streams >= 0)
    codes = streams[with_stream]
    order = np.lexsort((with_stream, codes))  # by stream, then by position
    codes, rows = codes[order], with_stream[order]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]) if len(codes) else codes
    ends = np.r_[starts[1:] - 1, len(codes) - 1] if len(codes) else codes
    return rows[starts], rows[ends]


def republished(
    types: Sequence[str], only: str | None, rng: random.Random, share: float, last: int
) -> Delivery:
    """Chosen events stored again later (see :func:`_later`), each copy at a new position past
    ``last`` (a publish retried after the duplicate window): a guard on
    ``global_position`` lets the copy through, one on ``stream_position`` or
    ``event_id`` does not.

    >>> d = republished(["A", "A"], None, random.Random(0), 1.0, last=2)
    >>> d.order.tolist(), d.positions.tolist()
    ([0, 1, 1, 0], [-1, -1, 3, 4])
    """
    order, copies = _later(types, only, rng, share)
    positions = np.full(len(order), -1, np.int64)
    positions[copies] = last + 1 + np.arange(np.count_nonzero(copies))  # in the order stored
    return Delivery(order, positions)


def crashed(types: Sequence[str], only: str | None, rng: random.Random, crashes: int) -> Delivery:
    """Crashes after output, before checkpoint: the process restarts (a new projection
    instance over the tables written so far) and events since the checkpoint come again."""
    n = len(types)
    if n < 2:
        return Delivery(np.arange(n, dtype=np.int64))
    interval = max(1, n // 10)  # a checkpoint every tenth of the history
    points = sorted(rng.sample(range(1, n), min(crashes, n - 1)))
    parts: list[np.ndarray] = []
    start = 0
    for point in points:
        parts.append(np.arange(start, point))  # handled, output written ...
        checkpoint = max(0, point - (point % interval or interval))  # ... but not checkpointed
        parts.append(np.array([RESTART]))  # what the handlers kept in memory is gone
        if only is None:
            start = checkpoint  # the restart delivers everything since again
        else:
            parts.append(np.array([i for i in range(checkpoint, point) if types[i] == only]))
            start = point
    parts.append(np.arange(start, n))
    return Delivery(np.concatenate(parts).astype(np.int64))


def reordered(
    types: Sequence[str], streams: np.ndarray, only: str | None, rng: random.Random
) -> Delivery:
    """A random interleaving of the streams that keeps each stream's order.

    Events without a stream count as one stream: nothing says which of them
    an aggregate's order binds, so none of them moves past another (shuffled
    freely, a correct projection of an unmapped stream would look unsafe).
    """
    n = len(types)
    if only is not None:
        return _reorder_type(types, streams, only, rng)
    r = np.random.default_rng(rng.randrange(2**32)).random(n)
    in_stream_order = np.lexsort((np.arange(n), streams))
    by_random = np.lexsort((r, streams))
    keys = np.empty(n)
    keys[in_stream_order] = r[by_random]  # the k-th event of a stream gets its k-th smallest key
    return Delivery(np.argsort(keys, kind="stable").astype(np.int64))


def _reorder_type(
    types: Sequence[str], streams: np.ndarray, only: str, rng: random.Random
) -> Delivery:
    """Move only events of type ``only``, later at random, never past their stream's next event."""
    n = len(types)
    next_in_stream: list[int] = [n] * n
    last_seen: dict[int, int] = {}
    codes = streams.tolist()
    for i in range(n - 1, -1, -1):
        next_in_stream[i] = last_seen.get(codes[i], n)
        last_seen[codes[i]] = i
    keys = [float(i) for i in range(n)]
    for i, event_type in enumerate(types):
        if event_type == only:
            hi = next_in_stream[i]
            # Stay before the stream's next event (whose key is itself or already moved later).
            bound = min(float(hi), keys[hi]) if hi < n else float(n)
            keys[i] = rng.uniform(keys[i], bound - 1e-9) if bound > keys[i] else keys[i]
    return Delivery(np.argsort(np.array(keys), kind="stable").astype(np.int64))


def injected(name: str, events: int, delivery: Delivery) -> str:
    """How many faults a scenario's ``delivery`` of ``events`` events holds, in words.

    >>> import numpy as np
    >>> injected("redelivery", 3, Delivery(np.array([0, 1, 2, 0])))
    '1 event delivered twice'
    >>> injected("reorder", 3, Delivery(np.array([2, 1, 0])))
    '2 events out of archive order'
    >>> injected("crash", 3, Delivery(np.array([0, RESTART, 0, 1, 2])))
    '1 crash, 1 event delivered again'
    >>> injected("stale", 3, Delivery(np.array([0, 1, 2, 0])))
    'the first event of 1 stream delivered again after its last'
    """
    order = delivery.order
    again = len(order) - events
    if name == "reorder":
        moved = int(np.count_nonzero(order != np.arange(events)))
        return plural(moved, "event") + " out of archive order"
    if name == "crash":
        crashes = int(np.count_nonzero(order == RESTART))
        again -= crashes
        return f"{plural(crashes, 'crash', 'crashes')}, {plural(again, 'event')} delivered again"
    if name == "republish":
        return f"{plural(again, 'event')} stored again"
    if name == "stale":
        return f"the first event of {plural(again, 'stream')} delivered again after its last"
    return f"{plural(again, 'event')} delivered twice"
