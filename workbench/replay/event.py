"""The event a handler receives, built in bulk from an Arrow batch of envelopes.

An :class:`Event` is a tuple with named fields: building a million of them
from Arrow columns is a C-level ``zip``, and reading a field is an
``itemgetter``. The payload is decoded once per batch (one JSON parse of all
payloads); envelope columns a handler rarely reads (``occurred_at``,
``correlation_id``, ...) are converted lazily, per batch, on first use.

>>> import pyarrow as pa
>>> from workbench import envelope
>>> batch = envelope.conform(pa.table({
...     "global_position": [1, 2], "recorded_at": [0, 1],
...     "event_type": ["A", "B"], "stream": ["s-1", "s-1"],
...     "stream_position": [0, 1], "data": ['{"x": 1}', "not json"]}), source="demo")
>>> events = decode(batch)
>>> events[0].event_type, events[0].data, events[1].data
('A', {'x': 1}, None)
>>> events[1].source, events[1].recorded_at.year
('demo', 1970)
"""

from __future__ import annotations

import datetime as dt
import json
from collections import namedtuple
from collections.abc import Iterable, Sequence
from functools import partial
from operator import itemgetter
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from workbench.envelope import json_validity

__all__ = [
    "ENVELOPE_FIELDS",
    "Event",
    "LazyDecoding",
    "Prepared",
    "decode",
    "decode_payloads",
    "lazy_decoding",
]

#: Envelope fields a handler may read that a source can leave null in every event (a
#: NATS subject per aggregate has no stream_position, say): said before a replay.
ENVELOPE_FIELDS = ("stream", "stream_position", "occurred_at", "event_id")

# Fields held in the tuple, in order; the rest are read lazily from the batch.
_EAGER = ("global_position", "event_type", "stream", "stream_position", "schema_version", "data")
_BATCH = len(_EAGER)
_INDEX = _BATCH + 1


class Columns(Protocol):
    """What events are decoded from: a ``pa.Table`` or an archive batch."""

    @property
    def num_rows(self) -> int: ...

    def column(self, name: str) -> Any: ...


class LazyDecoding:
    """Seconds spent converting lazy envelope columns, which happens inside handlers.

    A whole batch's column is converted when a handler first reads one of
    its values: decoding, not the handler's own cost, so the engine moves
    it out of handler times (:data:`lazy_decoding` is the running total).
    """

    __slots__ = ("seconds",)

    def __init__(self) -> None:
        self.seconds = 0.0


#: The process's running total of lazy column conversions.
lazy_decoding = LazyDecoding()


class _Columns:
    """Envelope columns of one batch, converted to Python lists on first use."""

    __slots__ = ("_cache", "_table")

    def __init__(self, table: Columns) -> None:
        self._table = table
        self._cache: dict[str, list[Any]] = {}

    def get(self, name: str, index: int) -> Any:
        values = self._cache.get(name)
        if values is None:
            started = perf_counter()
            values = self._cache[name] = _to_python(self._table.column(name))
            lazy_decoding.seconds += perf_counter() - started
        return values[index]


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _to_python(column: pa.ChunkedArray | pa.Array) -> list[Any]:
    """``to_pylist``, but UTC timestamps by way of numpy: about 15x faster."""
    if not (pa.types.is_timestamp(column.type) and column.type.tz in ("UTC", "+00:00")):
        return column.to_pylist()
    micros = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    deltas = micros.fill_null(0).to_numpy().astype("timedelta64[us]").astype(object)
    values: list[Any] = list(map(_EPOCH.__add__, deltas))
    if micros.null_count:
        for i in pc.indices_nonzero(pc.is_null(micros)).to_pylist():
            values[i] = None
    return values


def _lazy(name: str) -> property:
    def read(self: Event) -> Any:
        return self[_BATCH].get(name, self[_INDEX])

    read.__doc__ = f"The envelope's ``{name}``."
    return property(read)


# namedtuple's field getters are C descriptors: about 30% faster than
# property(itemgetter(i)), on attributes every handler reads. The tuple holds
# more than these fields (see _INDEX); Event never goes through its __new__.
if TYPE_CHECKING:  # a tuple of any length, with the attributes declared below
    _Envelope = tuple[Any, ...]
else:
    _Envelope = namedtuple("_Envelope", _EAGER)


class Event(_Envelope):
    """One decoded event: envelope fields as attributes, ``data`` as a dict (or None)."""

    __slots__ = ()

    global_position: int
    event_type: str
    stream: str | None
    stream_position: int | None
    schema_version: int
    data: Any
    source = _lazy("source")
    event_id = _lazy("event_id")
    occurred_at = _lazy("occurred_at")
    recorded_at = _lazy("recorded_at")
    recorded_ns = _lazy("recorded_ns")
    correlation_id = _lazy("correlation_id")
    causation_id = _lazy("causation_id")
    subject = _lazy("subject")
    metadata = _lazy("metadata")
    payload = _lazy("payload")
    delivery_count = _lazy("delivery_count")

    def __new__(cls, fields: Iterable[Any] = ()) -> Event:
        """An event from its values in order, as ``tuple(event)`` gives them back."""
        return tuple.__new__(cls, fields)

    def _replace(self, **changes: Any) -> Event:
        """A copy with some envelope fields changed (lazy fields keep working)."""
        values = list(self)
        for name, value in changes.items():
            if name not in _EAGER:
                raise ValueError(f"cannot replace {name!r}; fields: {', '.join(_EAGER)}")
            values[_EAGER.index(name)] = value
        return tuple.__new__(type(self), values)

    def __repr__(self) -> str:
        return (
            f"Event({self.event_type} @{self.global_position}, stream={self.stream!r}"
            f"#{self.stream_position}, v{self.schema_version}, data={self.data!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:  # a tuple subclass with a batch ref: pickle plainly
        return (tuple, (tuple(self[:_BATCH]),))


_new_event = partial(tuple.__new__, Event)
_LAYOUTS: dict[tuple[str, ...], type[Event]] = {}


def _layout(eager: tuple[str, ...]) -> type[Event]:
    """An :class:`Event` subclass holding ``eager`` columns in the tuple too.

    A column handlers read on every event (``occurred_at``, say) costs an
    ``itemgetter`` then, not a lazy lookup through the batch.
    """
    cls = _LAYOUTS.get(eager)
    if cls is None:
        attrs: dict[str, Any] = {
            name: property(itemgetter(_INDEX + 1 + i)) for i, name in enumerate(eager)
        }
        attrs["__slots__"] = ()
        attrs["__doc__"] = Event.__doc__
        cls = _LAYOUTS[eager] = type("Event", (Event,), attrs)
    return cls


def decode_payloads(texts: Sequence[str | None]) -> list[Any]:
    """Decode JSON payloads in one parse; payloads that are not JSON become None.

    One parse of ``[p1,p2,...]`` is much faster than a ``json.loads`` per
    payload; payloads that are not one JSON document each are kept out of
    it, so they cannot lend their text to a neighbour.

    >>> decode_payloads(['{"a": 1}', None, "[1, 2]", "{oops"])
    [{'a': 1}, None, [1, 2], None]
    >>> decode_payloads(['"a', 'b"', "1,2"])  # joined, these would parse as "a,b", 1, 2
    [None, None, None]
    """
    column = pa.array(texts, pa.string())
    return _payloads(column, *_join(column))


def _loads_or_none(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


class Prepared:
    """The Arrow side of decoding one batch, done where it overlaps the handlers.

    Arrow releases the GIL, so the engine's reading thread computes this on
    the other core; what is left for the handlers' thread is making Python
    objects: one ``json.loads`` and a few list conversions.
    """

    __slots__ = ("event_types", "invalid", "payloads", "streams")

    def __init__(self, table: Columns, con: duckdb.DuckDBPyConnection | None = None) -> None:
        self.payloads, self.invalid = _join(table.column("data"), con)
        self.event_types = pc.dictionary_encode(_combined(table.column("event_type")))
        self.streams = pc.dictionary_encode(_combined(table.column("stream")))


def _join(
    column: pa.ChunkedArray | pa.Array, con: duckdb.DuckDBPyConnection | None = None
) -> tuple[str, list[int]]:
    """``[p1,p2,...]`` of the valid documents (``null`` for the others), and the others' rows.

    Invalid payloads are kept out of the join so they cannot lend their
    text to a neighbour; they are decided alone, by Python's json.
    """
    column = _combined(column)
    invalid = pc.invert(json_validity(column, con).fill_null(True))
    filled = pc.if_else(invalid, "null", column.fill_null("null"))
    lists = pa.ListArray.from_arrays(pa.array([0, len(filled)], pa.int32()), filled)
    joined = f"[{pc.binary_join(lists, ',')[0].as_py()}]"
    return joined, pc.indices_nonzero(invalid).to_pylist()


def _combined(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _payloads(column: pa.ChunkedArray | pa.Array, joined: str, invalid: list[int]) -> list[Any]:
    """:func:`decode_payloads` of a string column, given its :func:`_join`.

    The rest are parsed one by one, so Python's json decides them (it reads
    ``NaN``, which DuckDB rejects).
    """
    try:
        values: list[Any] = json.loads(joined)
    except (ValueError, RecursionError):  # DuckDB and Python disagree: decide each alone
        return [_loads_or_none(t) for t in column.to_pylist()]
    for i in invalid:
        values[i] = _loads_or_none(column[i].as_py())
    return values


def _strings(encoded: pa.DictionaryArray) -> list[Any]:
    """A dictionary-encoded string column as Python strings, one object per value.

    Event types and stream names repeat: shared objects cost one allocation
    per value, and a handler lookup by event type finds them by identity.
    """
    values = np.array([*encoded.dictionary.to_pylist(), None], dtype=object)
    indices = encoded.indices.fill_null(len(values) - 1).to_numpy()
    strings: list[Any] = values[indices].tolist()
    return strings


def decode(table: Columns, eager: tuple[str, ...] = ()) -> list[Event]:
    """The batch's rows as :class:`Event` objects, in row order.

    ``eager`` columns are converted up front rather than on first use. A
    batch that carries its :class:`Prepared` (``table.prepared``) skips the
    Arrow work.
    """
    columns = _Columns(table)
    n = table.num_rows
    prepared = getattr(table, "prepared", None) or Prepared(table)
    return list(
        map(
            partial(tuple.__new__, _layout(eager)) if eager else _new_event,
            zip(
                table.column("global_position").to_pylist(),
                _strings(prepared.event_types),
                _strings(prepared.streams),
                table.column("stream_position").to_pylist(),
                table.column("schema_version").to_pylist(),
                _payloads(table.column("data"), prepared.payloads, prepared.invalid),
                [columns] * n,
                range(n),
                *[_to_python(table.column(name)) for name in eager],
                strict=True,
            ),
        )
    )


def with_payload(event: Event, version: int, data: Any) -> Event:
    """A copy of ``event`` with an upcast payload and its new schema version."""
    return tuple.__new__(type(event), (*event[:4], version, data, *event[_BATCH:]))
