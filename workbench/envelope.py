"""The canonical envelope: one archived event, from any source, as one row.

This module owns the Arrow schema of the envelope, the meaning of each
column and the conversion of arbitrary record batches into it. Every other
module takes the schema from here.

>>> import pyarrow as pa
>>> t = conform(pa.table({"global_position": [1, 2],
...                       "recorded_at": [0, 1_000_000]}), source="demo")
>>> t.schema.equals(SCHEMA)
True
>>> t.column("source").to_pylist(), t.column("schema_version").to_pylist()
(['demo', 'demo'], [1, 1])
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

import pyarrow as pa
import pyarrow.compute as pc

from workbench.errors import EnvelopeError

if TYPE_CHECKING:
    import duckdb

__all__ = [
    "BATCH_EVENT_TYPE",
    "COLUMNS",
    "DESCRIPTIONS",
    "REQUIRED",
    "SCHEMA",
    "SOURCE_OWN_PREFIX",
    "conform",
    "empty",
    "json_validity",
    "validate",
]

_TS = pa.timestamp("us", tz="UTC")

#: Column name → (Arrow type, meaning). Order is the column order on disk.
_COLUMNS: Final[dict[str, tuple[pa.DataType, str]]] = {
    "source": (pa.string(), "where it came from, e.g. jetstream:MEMORIES"),
    "global_position": (pa.int64(), "the source's total order (stream sequence, global position)"),
    "event_id": (pa.string(), "unique id of the event (Nats-Msg-Id, message id)"),
    "event_type": (pa.string(), "e.g. MemoryCreated; $-prefixed: the source's own message"),
    "schema_version": (pa.int32(), "event schema version (1 when the source has none)"),
    "stream": (pa.string(), "entity / aggregate stream the event belongs to"),
    "stream_position": (pa.int64(), "version of the event inside its stream, when known"),
    "occurred_at": (_TS, "domain time carried by the event, when known"),
    "recorded_at": (_TS, "time the store accepted it"),
    "recorded_ns": (pa.int64(), "recorded_at in nanoseconds since the epoch, where known"),
    "correlation_id": (pa.string(), "request that started the chain"),
    "causation_id": (pa.string(), "the event/command that directly caused this one"),
    "subject": (pa.string(), "NATS subject (null for Postgres)"),
    "data": (pa.string(), "the payload as JSON text"),
    "metadata": (pa.string(), "headers / metadata as JSON text"),
    "payload": (pa.binary(), "original payload bytes when they are not UTF-8 JSON"),
    "delivery_count": (pa.int32(), "times the source delivered it to the archiver"),
}

#: Columns that may never be null.
REQUIRED: Final[frozenset[str]] = frozenset({"source", "global_position", "recorded_at"})

#: The envelope's Arrow schema, the public contract users write SQL against.
SCHEMA: Final[pa.Schema] = pa.schema(
    [
        pa.field(name, typ, nullable=name not in REQUIRED, metadata={"doc": doc})
        for name, (typ, doc) in _COLUMNS.items()
    ]
)

#: Column names in order.
COLUMNS: Final[tuple[str, ...]] = tuple(_COLUMNS)

#: An ``event_type`` beginning with this is a source system's own message, archived
#: because an archive keeps everything, but no domain event: a NATS subject delete
#: marker (``$nats.marker``), a message schedule (``$nats.schedule``). A projection
#: needs no handler for one; coverage lists them as the source's own.
SOURCE_OWN_PREFIX: Final = "$"

#: The ``event_type`` of a CloudEvents batch (``application/cloudevents-batch+json``):
#: several domain events in one message, at one position, which one row cannot split.
#: Unlike the source's own messages it carries events a projection may handle.
BATCH_EVENT_TYPE: Final = f"{SOURCE_OWN_PREFIX}cloudevents.batch"

#: Column name → meaning, for documentation and notebooks.
DESCRIPTIONS: Final[Mapping[str, str]] = {name: doc for name, (_, doc) in _COLUMNS.items()}

# Columns filled with a default when a source does not provide them.
_DEFAULTS: Final[dict[str, object]] = {"schema_version": 1, "delivery_count": 1}


def empty() -> pa.Table:
    """An envelope table with no rows.

    >>> empty().num_rows
    0
    """
    return SCHEMA.empty_table()


def conform(table: pa.Table | pa.RecordBatch, *, source: str | None = None) -> pa.Table:
    """Return ``table`` as envelopes: columns in order, cast, defaults filled.

    Missing optional columns become null (``schema_version`` and
    ``delivery_count`` default to 1), ``source`` is set when given, and
    ``recorded_ns`` is derived from ``recorded_at`` when absent. Columns not
    in the envelope are an error, so a typo never silently drops data.
    """
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    extra = [name for name in table.column_names if name not in _COLUMNS]
    if extra:
        raise EnvelopeError(f"columns not in the envelope: {', '.join(extra)}")
    n = table.num_rows
    arrays: list[pa.ChunkedArray | pa.Array] = []
    for field in SCHEMA:
        name = field.name
        if name == "source" and source is not None:
            arrays.append(pa.array([source] * n, pa.string()) if n else pa.array([], pa.string()))
            continue
        if name in table.column_names:
            arrays.append(_cast(table.column(name), field))
        elif name == "recorded_ns" and "recorded_at" in table.column_names:
            at = _cast(table.column("recorded_at"), SCHEMA.field("recorded_at"))
            arrays.append(pc.multiply(at.cast(pa.int64()), 1000))
        elif name in _DEFAULTS:
            arrays.append(pa.array([_DEFAULTS[name]] * n, field.type))
        else:
            arrays.append(pa.nulls(n, field.type))
    _check_required(dict(zip(COLUMNS, arrays, strict=True)))
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def validate(table: pa.Table) -> None:
    """Raise :class:`EnvelopeError` unless ``table`` is valid envelopes.

    >>> validate(empty())
    >>> validate(empty().drop_columns(["data"]))
    Traceback (most recent call last):
    ...
    workbench.errors.EnvelopeError: not an envelope table: missing columns data
    """
    missing = [name for name in COLUMNS if name not in table.column_names]
    if missing:
        raise EnvelopeError(f"not an envelope table: missing columns {', '.join(missing)}")
    for field in SCHEMA:
        actual = table.schema.field(field.name).type
        if actual != field.type:
            raise EnvelopeError(f"column {field.name} has type {actual}, expected {field.type}")
    _check_required({name: table.column(name) for name in REQUIRED})


def _check_required(columns: Mapping[str, pa.ChunkedArray | pa.Array]) -> None:
    for name in sorted(REQUIRED):
        nulls = columns[name].null_count
        if nulls:
            raise EnvelopeError(f"column {name} has {nulls} null value(s); it is required")


def _cast(column: pa.ChunkedArray, field: pa.Field) -> pa.ChunkedArray:
    if column.type == field.type:
        return column
    typ = column.type
    if field.type == _TS and pa.types.is_timestamp(typ) and typ.tz is None:
        # Naive timestamps are taken as UTC, the only zone an event store should use.
        column = column.cast(pa.timestamp(typ.unit, tz="UTC"))
    elif field.type == _TS and pa.types.is_integer(typ):
        column = column.cast(pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    elif field.type == pa.string() and (
        pa.types.is_large_string(typ) or pa.types.is_string_view(typ)
    ):
        column = column.cast(pa.string())
    try:
        return column.cast(field.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise EnvelopeError(
            f"column {field.name}: cannot cast {typ} to {field.type}: {exc}"
        ) from None


# What DuckDB's parser lets through that JSON (RFC 8259) does not: trailing
# commas, NaN and infinities. Rows matching are decided by a strict parse.
_LENIENT = r",\s*[\]}]|[:\[,]\s*-?(?:NaN|[Ii]nf)"


def json_validity(
    column: pa.ChunkedArray | pa.Array, con: duckdb.DuckDBPyConnection | None = None
) -> pa.Array:
    """Whether each text is one JSON document by the standard (null for null), vectorised.

    ``data`` must hold JSON that any reader accepts (Spark, Polars, a JSON
    library), so DuckDB's ``json_valid`` (fast, but lenient) is backed by a
    strict parse of the few texts it may have let through.

    >>> json_validity(pa.array(['{"a": 1}', '"a', None, '{"a": 1,}', '[NaN]', '{"a": -inf}',
    ...                         '{"info": "NaN, inf"}'])).to_pylist()
    [True, False, None, False, False, False, True]
    """
    from workbench import _duckdb

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    own = con is None
    con = _duckdb.connect() if con is None else con
    try:
        con.register("_wb_texts", pa.table({"data": column}))
        valid = con.sql("select json_valid(data) as ok from _wb_texts").to_arrow_table()
        con.unregister("_wb_texts")
    finally:
        if own:
            con.close()
    ok = valid.column("ok").combine_chunks()
    suspect = pc.and_(pc.fill_null(ok, False), pc.match_substring_regex(column, _LENIENT))
    rows = pc.indices_nonzero(suspect).to_pylist()
    if not rows:
        return ok
    flags = ok.to_pylist()
    for i in rows:
        flags[i] = _strict_json(column[i].as_py())
    return pa.array(flags, pa.bool_())


def _strict_json(text: str) -> bool:
    def no_constants(name: str) -> None:
        raise ValueError(name)

    try:
        json.loads(text, parse_constant=no_constants)
    except (ValueError, RecursionError):
        return False
    return True
