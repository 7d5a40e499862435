"""Presets: how the tables of well-known event stores map onto the envelope.

A preset is SQL: for each envelope column, an expression over the event
table (alias ``e``), so that JSON extraction and type conversion run on the
server, next to the data. ``--map FIELD=SPEC`` overrides a preset's column
(``column:`` and ``const:`` in SQL; ``data:`` / ``metadata:`` paths are
evaluated by DuckDB over the Arrow batches, so a text column holding bad
JSON costs one null field, not the run).

>>> sorted(PRESETS)
['emmett', 'eventsourcing', 'generic', 'marten', 'message-db']
>>> q = build_query("message-db", "message_store.messages", _MESSAGE_DB_COLUMNS, {})
>>> q.source, q.position
('postgres:message_store.messages', 'e."global_position"')
>>> "->>'correlationStreamName'" in q.select(0, 10)
True
>>> q = build_query("emmett", None, _EMMETT_COLUMNS, {})
>>> q.source, q.unmapped
('postgres:public.emt_messages', ())
>>> q.select(0).split(" from ")[-1]  # the parent: archived streams too, no filter
'"public"."emt_messages" e  where e."global_position" > 0 order by e."global_position"'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from workbench import envelope
from workbench._sql import literal
from workbench.errors import MappingError, SourceError
from workbench.sources.mapping import FieldSpec
from workbench.sources.postgres._connection import (
    TableColumns,
    quote_ident,
    quote_table,
    source_name,
)

__all__ = ["PRESETS", "Preset", "Query", "build_query", "split_position_maps"]

_JSON_TYPES = frozenset({"json", "jsonb"})
_TEXT_FIELDS = frozenset(
    {
        "event_id",
        "event_type",
        "stream",
        "correlation_id",
        "causation_id",
        "subject",
        "data",
        "metadata",
    }
)
_TIME_FIELDS = frozenset({"occurred_at", "recorded_at"})
#: Column types Postgres reads as times itself; another column is read as text (below).
_TIME_PG_TYPES = frozenset({"timestamp", "timestamptz", "date"})
#: Column types that never hold a time: mapped to one, refused before anything is read.
_NEVER_TIME_PG_TYPES = frozenset(
    {"bool", "bytea", "uuid", "json", "jsonb", "interval", "time", "timetz"}
)
_INTEGER_PG_TYPES = frozenset({"int2", "int4", "int8"})
#: Column types that never hold an integer: mapped to one, refused before anything is read.
_NEVER_INT_PG_TYPES = _NEVER_TIME_PG_TYPES | _TIME_PG_TYPES
_INT_TYPES = {
    "schema_version": "int",
    "stream_position": "bigint",
    "recorded_ns": "bigint",
    "delivery_count": "int",
    "global_position": "bigint",
}

#: Fields whose null is a row-level problem worth counting, per preset.
_EXPECTED_DEFAULT: Final[tuple[str, ...]] = ("event_type", "stream", "data")


@dataclass(frozen=True)
class Query:
    """The SQL that reads one chunk of envelopes, and what is left for DuckDB.

    ``select(after, limit)`` returns rows with ``position > after`` in position
    order. Columns are envelope columns plus helper columns starting with
    ``_`` (``_state`` raw eventsourcing state, ``_bad_<field>`` the text of a value that
    is not an integer, ``_no_recorded_at``) that the archiver turns into
    fields and counts. ``instant_fields`` come as text (a text or epoch-number
    column), read as times by DuckDB over the batch.
    """

    source: str
    table: str
    position: str
    columns: Mapping[str, str]
    joins: str = ""
    path_fields: Mapping[str, FieldSpec] = field(default_factory=dict)
    instant_fields: tuple[str, ...] = ()
    validate_json: tuple[str, ...] = ()
    eventsourcing_state: bool = False
    expected: tuple[str, ...] = _EXPECTED_DEFAULT

    @property
    def unmapped(self) -> tuple[str, ...]:
        """Identity fields (``stream``, ``event_id``) no column or path fills: null in every row."""
        return tuple(
            name
            for name in ("stream", "event_id")
            if name not in self.columns and name not in self.path_fields
        )

    def select_list(self) -> str:
        return ", ".join(f"{expr} as {quote_ident(name)}" for name, expr in self.columns.items())

    def select(self, after: int, limit: int | None = None) -> str:
        """The chunk query (positions are integers, inlined so ADBC can use COPY)."""
        sql = (
            f"select {self.select_list()} from {self.table} e {self.joins} "
            f"where {self.position} > {int(after)} order by {self.position}"
        )
        return sql if limit is None else f"{sql} limit {int(limit)}"


@dataclass(frozen=True)
class Preset:
    """A known layout: its default table and the SQL for each envelope column."""

    name: str
    default_table: str | None
    description: str
    build: Callable[[str, TableColumns], Query]
    #: Seconds a hole in the positions must also stay empty before it is final:
    #: for stores that draw positions before the transaction that inserts them.
    settle_grace: float = 0.0


#: Column types a position can be read from: integers (a sequence, an identity).
_INTEGER_TYPES = frozenset({"int2", "int4", "int8", "smallint", "integer", "bigint"})


def _col(
    columns: TableColumns, name: str, table: str, *, types: frozenset[str] | None = None
) -> str:
    if name not in columns:
        raise SourceError(f"column {name} not found in {table} (columns: {', '.join(columns)})")
    if types is not None and columns[name] not in types:
        raise SourceError(
            f"column {table}.{name} is {columns[name]}, expected "
            + (
                "an integer (a position)"
                if types is _INTEGER_TYPES
                else f"{' or '.join(sorted(types))}; use --preset generic for other layouts"
            )
        )
    return f"e.{quote_ident(name)}"


def _utc(expr: str, pg_type: str) -> str:
    """A timestamp expression as timestamptz; naive timestamps are taken as UTC.

    ``±infinity`` (a "never" some tables store) is no event time: it becomes
    null, as a missing time does (ADBC would wrap it round to 290279 BC).
    """
    if pg_type == "timestamp":
        time = f"({expr} at time zone 'UTC')"
    elif pg_type == "timestamptz":
        time = expr
    else:
        time = f"({expr})::timestamptz"
    return f"(case when isfinite({time}) then {time} end)"


def _int_or_null(text_expr: str, pg_type: str = "int", digits: int = 9) -> str:
    """``text_expr`` as an integer, or null when it is not one (never a failing cast).

    Plain digits, the usual case, are recognised without the regular
    expression, which costs the server about twice as much per row.
    """
    t = f"({text_expr})"
    plain = f"({t} <> '' and length({t}) <= {digits} and ltrim({t}, '0123456789') = '')"
    regex = f"{t} ~ '^\\s*-?\\d{{1,{digits}}}\\s*$'"
    return f"(case when {plain} or {regex} then {t}::{pg_type} end)"


def _schema_version(text_expr: str) -> dict[str, str]:
    """``schema_version`` from text that should hold an integer, and that text when it does
    not (the archiver counts it and keeps it in metadata; the version is null)."""
    version = _int_or_null(text_expr)
    return {
        "schema_version": version,
        "_bad_schema_version": f"case when {version} is null then {text_expr} end",
    }


def _prefixed_stream(stream_expr: str, scope_expr: str, default_scope: str) -> str:
    """The stream id, as ``scope/stream`` outside the store's default tenant or partition:
    one stream id in two scopes is two streams."""
    return (
        f"case when {scope_expr} is null or {scope_expr} = {literal(default_scope)} "
        f"then {stream_expr}::text else {scope_expr} || '/' || {stream_expr}::text end"
    )


def _message_db(table: str, columns: TableColumns) -> Query:
    c = {
        n: _col(columns, n, table)
        for n in ("global_position", "position", "time", "stream_name", "type", "id")
    }
    meta = _col(columns, "metadata", table, types=_JSON_TYPES)
    data = _col(columns, "data", table, types=_JSON_TYPES)
    version = f"({meta}->>'schemaVersion')"
    cause = f"({meta}->>'causationMessageGlobalPosition')"
    cause_stream = f"({meta}->>'causationMessageStreamName')"
    cause_position = f"({meta}->>'causationMessagePosition')"
    # Looked up only for a cause named by stream (a join would hash the whole table
    # again on a bulk read); the (stream_name, position) index answers it.
    by_stream = (
        f"case when {cause_stream} is not null then (select cs.id::text from "
        f"{quote_table(table)[2]} cs where cs.stream_name = {cause_stream} and cs.position = "
        f"{_int_or_null(cause_position, 'bigint', 18)}) end"
    )
    return Query(
        source=f"postgres:{table}",
        table=quote_table(table)[2],
        position=c["global_position"],
        columns={
            "global_position": c["global_position"],
            "event_id": f"{c['id']}::text",
            "event_type": f"{c['type']}::text",
            "stream": f"{c['stream_name']}::text",
            "stream_position": f"{c['position']}::bigint",
            "recorded_at": _utc(c["time"], columns["time"]),
            "correlation_id": f"({meta}->>'correlationStreamName')",
            # The causing message's id (our event_id), found by its global position or by its
            # stream and position (writers may record either); when it is in neither, what
            # the metadata names, so the orphan says what is missing.
            "causation_id": (
                f"coalesce(c.id::text, {by_stream}, "
                f"nullif(concat_ws('/', {cause_stream}, {cause_position}), ''), "
                f"'global position ' || {cause})"
            ),
            "data": f"{data}::text",
            "metadata": f"{meta}::text",
            **_schema_version(version),
        },
        # A global position names a message of the store the cause was read from: a
        # component reading another service's store records that store's position. When
        # the metadata also names the cause's stream (Eventide writes all three), the
        # local message at that position is the cause only if it is in that stream at
        # that position; otherwise it is another store's, found by stream or an orphan.
        joins=(
            f"left join {quote_table(table)[2]} c on c.global_position = "
            f"{_int_or_null(cause, 'bigint', 18)} and ({cause_stream} is null or "
            f"(c.stream_name = {cause_stream} and ({cause_position} is null or "
            f"c.position = {_int_or_null(cause_position, 'bigint', 18)}))) "
        ),
    )


#: mt_events columns the Marten preset maps to envelope fields or named metadata.
_MARTEN_MAPPED = frozenset(
    {"seq_id", "id", "stream_id", "version", "type", "timestamp", "data", "tenant_id"}
    | {"correlation_id", "causation_id", "mt_dotnet_type", "headers", "is_archived", "bdata"}
)


#: The event type a Marten tombstone is archived as: the store's own row, no event.
MARTEN_TOMBSTONE: Final = f"{envelope.SOURCE_OWN_PREFIX}marten.tombstone"


def _marten_type(type_: str, columns: TableColumns) -> str:
    """Marten's ``type``; its tombstones as :data:`MARTEN_TOMBSTONE`.

    Marten fills the sequence numbers a failed append had drawn with ``tombstone``
    rows on its own stream (``mt_tombstone``, version = seq_id), at once or later:
    the store's own bookkeeping, which no projection handles and whose stream has
    no sequence to check. Told by their .NET type where the table has it (a team's
    own event aliased ``tombstone`` keeps its type).
    """
    own = f"{type_} = 'tombstone'"
    if "mt_dotnet_type" in columns:
        own += (
            " and (e.mt_dotnet_type like 'Marten.%Tombstone,%' "
            "or e.mt_dotnet_type like 'JasperFx.%Tombstone,%')"
        )
    return f"case when {own} then '{MARTEN_TOMBSTONE}' else {type_}::text end"


def _marten(table: str, columns: TableColumns) -> Query:
    c = {
        n: _col(columns, n, table)
        for n in ("seq_id", "id", "stream_id", "version", "type", "timestamp")
    }
    data = _col(columns, "data", table, types=_JSON_TYPES)
    tenant = _col(columns, "tenant_id", table)
    meta_parts = [f"'tenant_id', {tenant}"]
    for name, key in (("mt_dotnet_type", "dotnet_type"), ("is_archived", "is_archived")):
        if name in columns:
            meta_parts.append(f"'{key}', e.{quote_ident(name)}")
    # Columns Marten adds as options (user_name in Marten 7) or a team adds itself:
    # kept under their own names, so nothing an event carried is dropped.
    documents = ["headers"] if "headers" in columns else []  # JSON: added whole, below
    for name in sorted(set(columns) - _MARTEN_MAPPED):
        if columns[name] in _JSON_TYPES:
            documents.append(name)
        else:
            meta_parts.append(f"{literal(name)}, e.{quote_ident(name)}")
    # A JSON column is added after the stripping, which would also drop the nulls inside
    # it (a header's {"tenant": null}); a subquery per row instead cost 2.5 times the run.
    added = "".join(
        f" || case when e.{quote_ident(n)} is not null then jsonb_build_object("
        f"{literal(n)}, e.{quote_ident(n)}::jsonb) else '{{}}'::jsonb end"
        for n in documents
    )
    cols = {
        "global_position": c["seq_id"],
        "event_id": f"{c['id']}::text",
        "event_type": _marten_type(c["type"], columns),
        "stream": _prefixed_stream(c["stream_id"], tenant, "*DEFAULT*"),  # conjoined tenancy
        "stream_position": f"{c['version']}::bigint",
        "recorded_at": _utc(c["timestamp"], columns["timestamp"]),
        "correlation_id": "e.correlation_id::text" if "correlation_id" in columns else "null::text",
        "causation_id": "e.causation_id::text" if "causation_id" in columns else "null::text",
        "data": f"{data}::text",
        # Columns that are null are left out.
        "metadata": (
            f"(jsonb_strip_nulls(jsonb_build_object({', '.join(meta_parts)})){added})::text"
        ),
    }
    if "bdata" in columns:
        # Marten 9's binary events: the bytes in bdata, a '{}' placeholder in data. They
        # are a payload that is not JSON, kept as the envelope keeps one: data null.
        cols["data"] = f"case when e.bdata is null then {data}::text end"
        cols["payload"] = "e.bdata"
    return Query(
        source=f"postgres:{table}", table=quote_table(table)[2], position=c["seq_id"], columns=cols
    )


def _eventsourcing(table: str, columns: TableColumns) -> Query:
    if "notification_id" not in columns and {"originator_id", "state"} <= set(columns):
        # The library's snapshots table has every column but the notification id (not a
        # SourceError: build_query would add that the table is another store's).
        raise MappingError(
            f"{table} has no notification_id: it looks like the eventsourcing library's "
            "snapshots table; archive its events table (the one with notification_id) instead"
        )
    c = {
        n: _col(columns, n, table)
        for n in ("notification_id", "originator_id", "originator_version", "topic")
    }
    state = _col(columns, "state", table, types=frozenset({"bytea"}))
    topic = c["topic"]
    # ORIGINATOR_ID_TYPE=text stores a UUID as 32 hex digits (uuid.hex); hyphenated, as a
    # uuid column gives it and as the same id reads in payloads, so joins find it.
    originator = (
        f"(case when {c['originator_id']}::text ~ '^[0-9a-fA-F]{{32}}$' "
        f"then {c['originator_id']}::text::uuid::text else {c['originator_id']}::text end)"
    )
    return Query(
        source=f"postgres:{table}",
        table=quote_table(table)[2],
        position=c["notification_id"],
        columns={
            "global_position": c["notification_id"],
            # The library has no event ids; aggregate id and version identify an event.
            "event_id": f"{originator} || ':' || {c['originator_version']}",
            "event_type": f"coalesce(nullif(split_part({topic}, ':', 2), ''), {topic})",
            "stream": originator,
            "stream_position": f"{c['originator_version']}::bigint",
            "metadata": f"jsonb_build_object('topic', {topic})::text",
            "_state": state,
        },
        eventsourcing_state=True,
        expected=("event_type", "stream", "data", "occurred_at"),
    )


#: Emmett's partition for a store that does not use partitions.
_EMMETT_DEFAULT_PARTITION: Final = "emt:default"


def _emmett(table: str, columns: TableColumns) -> Query:
    """Emmett (Node.js) ``emt_messages``: the partitioned parent, read whole.

    No filter on ``is_archived``: archiving a stream is an UPDATE that moves
    its rows to the ``_archived`` partition with the same ``global_position``,
    so filtering would leave holes behind the archive's end. Commands
    (``message_kind`` 'C') share the table and are kept, marked in metadata.
    """
    position = _col(columns, "global_position", table, types=_INTEGER_TYPES)
    c = {
        n: _col(columns, n, table)
        for n in (
            "message_id",
            "message_type",
            "message_schema_version",
            "stream_id",
            "stream_position",
            "partition",
            "is_archived",
            "message_kind",
            "transaction_id",
            "created",
        )
    }
    data = _col(columns, "message_data", table, types=_JSON_TYPES)
    meta = _col(columns, "message_metadata", table, types=_JSON_TYPES)
    # Emmett writes an object; anything else is kept under a key, not concatenated into an array.
    own = f"(case when jsonb_typeof({meta}::jsonb) = 'object' then {meta}::jsonb "
    own += f"else jsonb_build_object('message_metadata', {meta}) end)"
    # The row's own columns win over same-named keys an application put in its metadata.
    store = (
        f"jsonb_build_object('partition', {c['partition']}, 'is_archived', {c['is_archived']}, "
        f"'message_kind', {c['message_kind']}, 'transaction_id', {c['transaction_id']}::text)"
    )
    return Query(
        source=f"postgres:{table}",
        table=quote_table(table)[2],
        position=position,
        columns={
            "global_position": position,
            "event_id": f"{c['message_id']}::text",
            "event_type": f"{c['message_type']}::text",
            **_schema_version(f"{c['message_schema_version']}::text"),
            "stream": _prefixed_stream(c["stream_id"], c["partition"], _EMMETT_DEFAULT_PARTITION),
            "stream_position": f"{c['stream_position']}::bigint",
            # created defaults to now(): the appending transaction's start, not its commit.
            "recorded_at": _utc(c["created"], columns["created"]),
            # Not Emmett's own fields: the keys applications put there (--map overrides them).
            "correlation_id": f"({meta}->>'correlationId')",
            "causation_id": f"({meta}->>'causationId')",
            "data": f"{data}::text",
            "metadata": f"({own} || {store})::text",
        },
    )


def _generic(table: str, columns: TableColumns) -> Query:
    return Query(source=f"postgres:{table}", table=quote_table(table)[2], position="", columns={})


PRESETS: Final[Mapping[str, Preset]] = {
    "message-db": Preset(
        "message-db",
        "message_store.messages",
        "Message DB (Eventide): global_position, position, time, stream_name, type, data, metadata, id",
        _message_db,
    ),
    "marten": Preset(
        "marten",
        "public.mt_events",
        "Marten (.NET): seq_id, id, stream_id, version, data, type, timestamp, tenant_id, …",
        _marten,
        settle_grace=3.0,  # Marten draws seq_id values before its inserting transaction
    ),
    "emmett": Preset(
        "emmett",
        "public.emt_messages",
        "Emmett (Node.js, PostgreSQL store): emt_messages, archived streams and all partitions",
        _emmett,
    ),
    "eventsourcing": Preset(
        "eventsourcing",
        "public.stored_events",
        "Python eventsourcing library: <app>_events / stored_events with bytea state",
        _eventsourcing,
    ),
    "generic": Preset(
        "generic", None, "any table; every column given by --map FIELD=column:NAME", _generic
    ),
}

_MESSAGE_DB_COLUMNS: Final[TableColumns] = {
    "global_position": "int8",
    "position": "int8",
    "time": "timestamp",
    "stream_name": "text",
    "type": "text",
    "data": "jsonb",
    "metadata": "jsonb",
    "id": "uuid",
}


_EMMETT_COLUMNS: Final[TableColumns] = {
    "stream_position": "int8",
    "global_position": "int8",
    "transaction_id": "xid8",
    "created": "timestamptz",
    "is_archived": "bool",
    "message_kind": "varchar",
    "stream_id": "text",
    "partition": "text",
    "message_schema_version": "text",
    "message_id": "text",
    "message_type": "text",
    "message_data": "jsonb",
    "message_metadata": "jsonb",
}


def split_position_maps(items: list[str]) -> tuple[dict[str, str], list[str]]:
    """Take ``global_position=column:X`` out of ``--map`` items (the archiver owns that field).

    >>> split_position_maps(["global_position=column:seq", "stream=column:s"])
    ({'global_position': 'seq'}, ['stream=column:s'])

    A field mapped twice is refused: a Postgres row has the column or not, so a
    second spec is no fallback as it is for NATS headers (one would silently win).

    >>> split_position_maps(["occurred_at=column:valid_at", "occurred_at=column:created_at"])
    Traceback (most recent call last):
    ...
    workbench.errors.MappingError: --map occurred_at is given twice (column:valid_at, column:created_at): a Postgres mapping takes one spec a field; for a fallback, archive a view with coalesce(valid_at, created_at)
    """
    fields: dict[str, list[str]] = {}
    for item in items:
        name, sep, spec = item.partition("=")
        if sep:
            fields.setdefault(name.strip(), []).append(spec.strip())
    for name, specs in fields.items():
        if len(specs) > 1:
            kinds = {spec.partition(":")[0] for spec in specs}
            args = [spec.partition(":")[2] for spec in specs]
            how = (
                f"for a fallback, archive a view with coalesce({', '.join(args)})"
                if kinds == {"column"}
                else "to take a document or value out of a column's JSON, archive a view "
                f"that selects it {_VIEWS}"
            )
            raise MappingError(
                f"--map {name} is given twice ({', '.join(specs)}): a Postgres mapping takes "
                f"one spec a field; {how}"
            )
    positions: dict[str, str] = {}
    rest: list[str] = []
    for item in items:
        name, sep, spec = item.partition("=")
        if sep and name.strip() == "global_position":
            kind, _, arg = spec.strip().partition(":")
            if kind != "column" or not arg:
                raise MappingError(f"--map {item}: global_position must be column:NAME")
            positions["global_position"] = arg
        else:
            rest.append(item)
    return positions, rest


def build_query(
    preset: str,
    table: str | None,
    columns: TableColumns,
    mappings: Mapping[str, FieldSpec],
    *,
    position_column: str | None = None,
    for_events: bool = True,
) -> Query:
    """The query for ``preset`` on ``table`` with ``--map`` overrides applied.

    ``for_events=False``: only the positions are read (a snapshot's), so the
    fields an archive needs are not required.
    """
    if preset not in PRESETS:
        raise SourceError(f"unknown preset {preset!r}; one of {', '.join(PRESETS)}")
    spec = PRESETS[preset]
    table = table or spec.default_table
    if table is None:
        raise SourceError(f"--preset {preset} needs --table SCHEMA.TABLE")
    for field_name, fs in mappings.items():
        if fs.kind in ("header", "trace", "subject"):
            raise MappingError(
                f"--map {field_name}={fs}: {fs.kind}: specs are for NATS, not Postgres"
            )
    schema, name, quoted = quote_table(table)
    table = f"{schema}.{name}"  # for messages and the source's name
    try:
        query = spec.build(quoted, columns)  # quoted: a name may hold a dot
    except SourceError as exc:  # most often: the default preset, on another store's table
        others = ", ".join(p for p in PRESETS if p != preset)
        raise SourceError(
            f"{exc}: it does not have the {preset} preset's layout; another store takes "
            f"--preset NAME ({others}; generic with --map for any table)"
        ) from None
    cols = dict(query.columns)
    position = query.position
    if position_column is not None:
        position = _col(columns, position_column, table, types=_INTEGER_TYPES)
        cols["global_position"] = f"{position}::bigint"
    if not position:
        raise MappingError(f"--preset {preset} needs --map global_position=column:NAME")
    paths: dict[str, FieldSpec] = {}
    instants: list[str] = []
    validate: list[str] = []
    for field_name, fs in mappings.items():
        if fs.kind in ("header", "trace", "subject"):
            raise MappingError(
                f"--map {field_name}={fs}: {fs.kind}: specs are for NATS, not Postgres"
            )
        if fs.kind == "const":
            cols[field_name] = _typed(field_name, literal(fs.arg), "text")
        elif fs.kind == "column":
            expr = _col(columns, fs.arg, table)
            pg_type = columns[fs.arg]
            if field_name in ("data", "metadata") and pg_type == "oid":
                # A large object (Hibernate's default for a byte[] on Postgres, as Axon's
                # JPA payload): the oid is its number; the content is what was stored.
                expr, pg_type = f"lo_get({expr})", "bytea"
            if field_name in ("data", "metadata"):
                cols[field_name] = f"{expr}::text" if pg_type != "bytea" else expr
                if pg_type not in _JSON_TYPES:
                    validate.append(field_name)
            elif field_name in _INT_TYPES and pg_type not in _INTEGER_PG_TYPES:
                if pg_type in _NEVER_INT_PG_TYPES or pg_type.startswith("_"):  # "_": an array
                    inside = (
                        f"; a number inside it is {field_name}=data:PATH or metadata:PATH, "
                        "with the column mapped as data= or metadata="
                        if pg_type in _JSON_TYPES
                        else ""
                    )
                    raise MappingError(
                        f"--map {field_name}={fs}: column {table}.{fs.arg} is {pg_type}, "
                        f"which holds no integer{inside}"
                    )
                # One bad value must not fail the whole read: null it and count it.
                as_int = _int_or_null(f"{expr}::text", _INT_TYPES[field_name], 18)
                cols[field_name] = as_int
                cols[f"_bad_{field_name}"] = f"case when {as_int} is null then {expr}::text end"
            elif field_name in _TIME_FIELDS and pg_type not in _TIME_PG_TYPES:
                if pg_type in _NEVER_TIME_PG_TYPES or pg_type.startswith("_"):  # "_": an array
                    raise MappingError(
                        f"--map {field_name}={fs}: column {table}.{fs.arg} is {pg_type}, "
                        "which holds no time; map a timestamp, date, text or epoch-number column"
                    )
                # Postgres has no cast that fails softly (pg_input_is_valid is 16+): the
                # text goes to DuckDB, which reads ISO text or epoch numbers (instant_sql)
                # and nulls one bad value, counted, instead of failing the whole read.
                # A float's text turns to exponent form past 15 digits (1.7145576e+15):
                # its numeric text keeps every digit an epoch number has.
                as_text = "::numeric::text" if pg_type in ("float4", "float8") else "::text"
                cols[field_name] = f"{expr}{as_text}"
                instants.append(field_name)
            else:
                cols[field_name] = _typed(field_name, expr, pg_type)
        else:  # data: / metadata: paths, by DuckDB over the batch
            paths[field_name] = fs
            for replaced in (field_name, f"_bad_{field_name}"):  # the preset's own: unread
                cols.pop(replaced, None)
    for field_name, fs in paths.items():
        if field_name == fs.kind:  # data=data:x: the column a path reads is itself
            raise MappingError(
                f"--map {field_name}={fs}: {fs.kind} is read from a column; map it as "
                f"{fs.kind}=column:NAME, or archive a view that selects the document inside "
                f"{_VIEWS}"
            )
        if field_name == "recorded_at":
            raise MappingError(
                f"--map recorded_at={fs}: recorded_at is read from a column (a timestamp, ISO "
                "text or epoch number); for a time inside the JSON, archive a view that selects "
                f"it {_VIEWS}"
            )
        if fs.kind not in cols and not (fs.kind == "data" and query.eventsourcing_state):
            raise MappingError(
                f"--map {field_name}={fs} reads the {fs.kind} column, which is not mapped; "
                f"add --map {fs.kind}=column:NAME"
            )
    # recorded_at from a column or const, as before (a path is not taken); event_type and
    # data may be paths. Without them every archived row would have them empty, under a
    # mapping the archive then keeps for the source: refused before anything is written.
    needed: tuple[str, ...] = _GENERIC_NEEDS if preset == "generic" else ("recorded_at",)
    if not for_events:
        needed = ()
    missing = [
        name
        for name in needed
        if name not in cols
        and (name == "recorded_at" or name not in paths)
        and not query.eventsourcing_state
    ]
    if missing:
        raise MappingError(
            f"--preset {preset} needs "
            + ", ".join(f"--map {name}=column:NAME" for name in missing)
            + _likely_columns(missing, table, columns)
            + (
                "; event_type may also be data:PATH or const:VALUE"
                if "event_type" in missing
                else ""
            )
        )
    if "recorded_at" in cols:
        cols["_no_recorded_at"] = f"({cols['recorded_at']}) is null"
        if "recorded_at" not in instants:  # else the archiver fills it, after DuckDB
            cols["recorded_at"] = f"coalesce({cols['recorded_at']}, statement_timestamp())"
    return Query(
        source=source_name(schema, name),
        table=query.table,
        position=position,
        columns=cols,
        joins=query.joins,
        path_fields=paths,
        instant_fields=tuple(instants),
        validate_json=tuple(validate),
        eventsourcing_state=query.eventsourcing_state,
        expected=query.expected,
    )


#: Where the README shows views that reshape a store's rows into one event each.
_VIEWS: Final = "(README: stores whose event lies in more than one column)"

#: Fields a generic mapping must give (global_position is checked before).
_GENERIC_NEEDS: Final = ("recorded_at", "event_type", "data")
_TEXT_PG_TYPES = frozenset({"text", "varchar", "bpchar", "name", "citext"})


def _likely_columns(fields: list[str], table: str, columns: TableColumns) -> str:
    """Columns of ``table`` that may hold ``fields``, as the tail of a one-line error.

    >>> _likely_columns(["event_type", "data"], "app.log",
    ...                 {"seq": "int8", "kind": "text", "body": "text", "meta": "jsonb"})
    ' (likely in app.log: event_type=column:kind, data=column:body or meta)'
    >>> _likely_columns(["recorded_at", "data"], "axon.domain_event_entry", {"time_stamp":
    ...     "varchar", "payload_type": "varchar", "payload_revision": "varchar", "payload": "oid"})
    ' (likely in axon.domain_event_entry: recorded_at=column:time_stamp, data=column:payload)'
    >>> _likely_columns(["data"], "app.log", {"seq": "int8"})
    ' (no likely column in app.log for data; its columns: seq)'
    """

    def named(name: str, *parts: str) -> bool:
        return any(part in name.lower() for part in parts)

    found: list[str] = []
    for field_name in fields:
        if field_name == "recorded_at":
            # A time column; else text named like one (Axon's time_stamp is ISO text).
            names = [n for n, t in columns.items() if t in _TIME_PG_TYPES] or [
                n
                for n, t in columns.items()
                if t in _TEXT_PG_TYPES and named(n, "time", "created", "recorded", "date")
            ]
        elif field_name == "event_type":
            names = [
                n
                for n, t in columns.items()
                if t in _TEXT_PG_TYPES and named(n, "type", "kind", "event_name", "class")
            ]
        else:  # data: a JSON column, or text/bytea/oid named like a payload (named first)
            names = sorted(
                (
                    n
                    for n, t in columns.items()
                    if t in _JSON_TYPES
                    or (
                        t in _TEXT_PG_TYPES | {"bytea", "oid"}
                        and named(n, "data", "body", "payload")
                        # Axon's payload_type and payload_revision describe the payload
                        and not named(n, "type", "revision", "version")
                    )
                ),
                key=lambda n: not named(n, "data", "body", "payload"),
            )
        if names:
            found.append(f"{field_name}=column:{' or '.join(names[:3])}")
    if found:
        return f" (likely in {table}: {', '.join(found)})"
    return (
        f" (no likely column in {table} for {', '.join(fields)}; its columns: {', '.join(columns)})"
    )


def _typed(field_name: str, expr: str, pg_type: str) -> str:
    if field_name in _TEXT_FIELDS and pg_type == "bytea":
        # A binary UUID (Broadway's, Doctrine's uuid_binary) as the text the same id has
        # in payloads; other bytes as Postgres prints them.
        return f"case when octet_length({expr}) = 16 then encode({expr}, 'hex')::uuid::text else {expr}::text end"
    if field_name in _TEXT_FIELDS:
        return f"{expr}::text"
    if field_name in _TIME_FIELDS:
        return _utc(expr, pg_type)
    if field_name in _INT_TYPES:
        return f"{expr}::{_INT_TYPES[field_name]}"
    if field_name in envelope.COLUMNS:
        return expr
    raise MappingError(f"{field_name} is not an envelope column")
