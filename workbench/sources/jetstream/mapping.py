"""How JetStream messages fill the envelope: presets and ``--map`` specs, a batch at a time.

Every envelope column is a list of candidate specs; the first that yields a
value wins, and a message no candidate can fill keeps the column null (it is
archived all the same). ``payload`` keeps the message's bytes unless ``data``
holds them verbatim, so a mapping never drops what a message carried. Specs are evaluated over a whole batch as one DuckDB
query over Arrow columns, never row by row.

Presets:

- ``cloudevents`` (default): CloudEvents binary mode (``ce-*`` headers, the
  payload is the domain data) and structured mode (``content-type:
  application/cloudevents+json``, the event in the payload with ``data``
  inside); ``event_id`` falls back to ``Nats-Msg-Id``. A message with no
  ``content-type`` and no ``ce-*`` header whose payload is a JSON object with
  a string ``specversion``, an ``id`` and a ``type`` is a structured event
  too: the CloudEvents NATS binding before 1.0.2 has structured mode only,
  without headers, and older producers publish exactly that.
- ``envelope``: the payload is a JSON envelope with the canonical column
  names and ``data`` inside.
- ``raw``: only what NATS itself knows (sequence, subject, time, headers,
  payload).
- ``kv``: a KV bucket's stream (``KV_<bucket>``): ``stream`` is the key,
  ``event_type`` ``PUT``, ``DEL`` or ``PURGE``, the value as ``data`` when it
  is JSON (else kept in ``payload``).

Whatever the preset or ``--map``, NATS's own messages get a reserved
``event_type`` and no ``event_id`` (their headers stay in ``metadata``): a
subject delete marker (header ``Nats-Marker-Reason``, written by NATS 2.11+
when a subject's last message expires, by MaxAge or ``Nats-TTL``) is
``$nats.marker``, and a message schedule (header ``Nats-Schedule``, 2.12+:
NATS publishes a copy of it later, which is the event) is
``$nats.schedule``. A subject-derived or copied type would otherwise count
a marker, or a schedule and its copy, as domain events.

>>> t = JetStreamMapping.from_options("raw", ["event_type=subject:-1"]).map_batch(
...     seq=[1, 2, 3], ts_ns=[0, 0, 0], delivered=[1, 1, 1], subject=[b"kv.a"] * 3,
...     headers=[b"", b"Nats-Marker-Reason: MaxAge\\r\\nNats-TTL: 1m0s", b"Nats-Schedule: @every 1m"],
...     payload=[b"{}", b"", b"{}"]).table
>>> t["event_type"].to_pylist()
['a', '$nats.marker', '$nats.schedule']

>>> m = JetStreamMapping.from_options("cloudevents", ["stream=subject:-1"])
>>> [str(s) for s in m.fields["stream"]]
['subject:-1']
>>> [str(s) for s in m.fields["event_id"]]
['header:ce-id', 'event:id', 'header:Nats-Msg-Id']
>>> JetStreamMapping.from_options("xml", [])
Traceback (most recent call last):
...
workbench.errors.MappingError: unknown preset 'xml'; one of cloudevents, envelope, raw, kv
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from workbench import _duckdb, envelope
from workbench._sql import literal, url_decoded
from workbench.errors import MappingError
from workbench.sources.jetstream._headers import Headers
from workbench.sources.mapping import FieldSpec, instant_sql, parse_mappings

__all__ = [
    "BATCH_EVENT_TYPE",
    "DEFAULT_PRESET",
    "MARKER_EVENT_TYPE",
    "NATS_EVENT_TYPES",
    "PRESETS",
    "SCHEDULE_EVENT_TYPE",
    "JetStreamMapping",
    "MappedBatch",
]

#: ``event_type`` of a subject delete marker (NATS 2.11+, header ``Nats-Marker-Reason``).
MARKER_EVENT_TYPE: Final = f"{envelope.SOURCE_OWN_PREFIX}nats.marker"
#: ``event_type`` of a message schedule (NATS 2.12+, header ``Nats-Schedule``); the
#: copy NATS publishes when it fires keeps the schedule's own headers and is the event.
SCHEDULE_EVENT_TYPE: Final = f"{envelope.SOURCE_OWN_PREFIX}nats.schedule"
#: Event types of NATS's own messages, e.g. for a projection's ``ignore``.
NATS_EVENT_TYPES: Final[tuple[str, ...]] = (MARKER_EVENT_TYPE, SCHEDULE_EVENT_TYPE)
#: ``event_type`` of a CloudEvents batch (``application/cloudevents-batch+json``).
BATCH_EVENT_TYPE: Final = envelope.BATCH_EVENT_TYPE

# Internal spec kinds of the presets, which users cannot write. ``event``: a path
# inside a CloudEvents structured-mode event, looked at only in rows that are one.
# ``payload``: the whole payload of a row that is not (binary mode: it is the data).
_EVENT = "event"
_PAYLOAD = "payload"
_PER_MODE: Final = frozenset({_EVENT, _PAYLOAD})


def _specs(*texts: str) -> tuple[FieldSpec, ...]:
    return tuple(_spec(t) for t in texts)


def _spec(text: str) -> FieldSpec:
    kind, _, arg = text.partition(":")
    return FieldSpec(kind, arg) if kind in _PER_MODE else FieldSpec.parse(text)


#: The preset of a run given none, on a source archived with none recorded.
DEFAULT_PRESET: Final = "cloudevents"

#: Preset name → envelope column → candidate specs (first non-null wins).
PRESETS: Final[Mapping[str, Mapping[str, tuple[FieldSpec, ...]]]] = {
    "cloudevents": {
        "event_id": _specs("header:ce-id", "event:id", "header:Nats-Msg-Id"),
        "event_type": _specs("header:ce-type", "event:type"),
        "schema_version": _specs(
            "header:ce-schemaversion",
            "event:schemaversion",
            "header:ce-dataschema",
            "event:dataschema",
        ),
        "stream": _specs("header:ce-subject", "event:subject"),
        "stream_position": _specs("header:ce-sequence", "event:sequence"),
        "occurred_at": _specs("header:ce-time", "event:time"),
        "correlation_id": _specs("header:ce-correlationid", "event:correlationid"),
        "causation_id": _specs("header:ce-causationid", "event:causationid"),
        "data": _specs("event:data", "payload:unless-structured"),
    },
    "envelope": {
        name: _specs(f"data:{name}")
        for name in (
            "event_id",
            "event_type",
            "schema_version",
            "stream",
            "stream_position",
            "occurred_at",
            "correlation_id",
            "causation_id",
            "data",
        )
    }
    | {"event_id": _specs("data:event_id", "header:Nats-Msg-Id")},
    # Nothing read from headers or payload. (Not even Nats-Msg-Id: an archive records
    # its preset by name, so a preset that read more later would map one archive two
    # ways; the run's hint names the header.)
    "raw": {},
    # A KV bucket's stream (KV_<bucket>): subjects $KV.<bucket>.<key>, a key may hold dots;
    # a delete or purge says so in KV-Operation, a put has no such header.
    "kv": {
        "stream": _specs("subject:2:"),
        "event_type": _specs("header:KV-Operation", "const:PUT"),
    },
}

# Columns the archiver fills from NATS itself.
_FROM_NATS: Final[frozenset[str]] = frozenset({"recorded_at", "recorded_ns"})
#: Columns that hold what NATS delivered: a mapping would hide it.
_OWNED_BY_NATS: Final[dict[str, str]] = {
    "subject": "subject is the message's NATS subject (map stream=subject:INDEX to use it)",
    "metadata": "metadata holds the message's headers (read them with header:NAME)",
    "delivery_count": "delivery_count is what NATS reports",
    "payload": "payload holds the message's bytes",
}
_INT_COLUMNS: Final[Mapping[str, str]] = {
    "schema_version": "integer",
    "stream_position": "bigint",
    "delivery_count": "integer",
}


@dataclass(frozen=True)
class JetStreamMapping:
    """Envelope column → candidate specs, for one archiver run."""

    preset: str
    fields: Mapping[str, tuple[FieldSpec, ...]]
    #: The columns a ``--map`` set (the rest are the preset's).
    mapped: frozenset[str] = frozenset()

    @property
    def can_fall_back(self) -> frozenset[str]:
        """Mapped columns the preset would fill, and ``FIELD=preset`` has not added yet.

        >>> JetStreamMapping.from_options("raw", ["event_type=header:T"]).can_fall_back
        frozenset()
        """
        own = PRESETS[self.preset]
        return frozenset(
            c for c in self.mapped if own.get(c) and not set(own[c]) <= set(self.fields.get(c, ()))
        )

    @classmethod
    def from_options(
        cls, preset: str = "cloudevents", maps: Iterable[str] = ()
    ) -> JetStreamMapping:
        """A preset with ``--map FIELD=SPEC`` overrides.

        A mapped field replaces the preset's candidates; mapping it again adds
        a fallback, and ``FIELD=preset`` falls back to the preset's own (a
        stream where only some messages carry a header):

        >>> m = JetStreamMapping.from_options(
        ...     "cloudevents", ["event_type=header:X-Type", "event_type=preset"])
        >>> [str(s) for s in m.fields["event_type"]], sorted(m.mapped)
        (['header:X-Type', 'header:ce-type', 'event:type'], ['event_type'])

        ``data=preset`` falls back to what the preset gives, the whole payload
        of a message that is not a structured CloudEvent included, so a
        stream of binary-mode events and of envelopes of the user's own can
        take ``--map data=data:data --map data=preset``:

        >>> m = JetStreamMapping.from_options("cloudevents", ["data=data:data", "data=preset"])
        >>> [str(s) for s in m.fields["data"]]
        ['data:data', 'event:data', 'payload:unless-structured']
        """
        if preset not in PRESETS:
            raise MappingError(f"unknown preset {preset!r}; one of {', '.join(PRESETS)}")
        fields = dict(PRESETS[preset])
        mapped: dict[str, list[FieldSpec]] = {}
        for item in maps:
            name, _, text = item.partition("=")
            name = name.strip()
            if text.strip() == "preset" and name in envelope.COLUMNS:
                own = PRESETS[preset].get(name)
                if not own:
                    raise MappingError(f"--map {item}: the {preset} preset does not fill {name}")
                mapped.setdefault(name, []).extend(own)
                continue
            ((name, spec),) = parse_mappings([item]).items()
            if spec.kind == "column":
                raise MappingError(f"--map {name}={spec}: JetStream messages have no columns")
            if name in _FROM_NATS:
                raise MappingError(f"--map {name}={spec}: {name} is the NATS timestamp")
            if name in _OWNED_BY_NATS:
                raise MappingError(f"--map {name}={spec}: {_OWNED_BY_NATS[name]}")
            mapped.setdefault(name, []).append(spec)
        fields.update((name, tuple(specs)) for name, specs in mapped.items())
        return cls(preset, fields, frozenset(mapped))

    def map_batch(
        self,
        *,
        seq: list[int],
        ts_ns: list[int],
        delivered: list[int],
        subject: list[bytes],
        headers: list[bytes],
        payload: list[bytes],
    ) -> MappedBatch:
        """Envelope columns (without ``source``) for a batch of messages, with the values
        the mapping found but could not read: a time that is none, an integer that is
        none (``"5.5"`` is no stream position: null, not rounded to 6).

        >>> m = JetStreamMapping.from_options("cloudevents", [])
        >>> b = m.map_batch(seq=[1, 2, 3], ts_ns=[0] * 3, delivered=[1] * 3, subject=[b"a"] * 3,
        ...                 headers=[b"ce-time: yesterday", b"ce-time: 1714550400", b""],
        ...                 payload=[b"{}"] * 3)
        >>> b.unread, b.unread_example, b.table["occurred_at"].null_count
        ({'occurred_at': 1}, {'occurred_at': 'yesterday'}, 2)
        """
        raw = pa.array(headers, pa.binary())
        blocks = _text(raw, headers, errors="replace")
        parsed = Headers(blocks)
        metadata = parsed.metadata()
        if blocks is not raw and not _valid_utf8(raw):  # a Go client's Latin-1 value, say
            metadata = _with_raw(metadata, RAW_HEADERS, headers)
        # A subject's bytes escaped (\xe9), not replaced: two subjects that are not UTF-8
        # stay two streams; its bytes are kept too, as a header block's are.
        subjects = pa.array(subject, pa.binary())
        subject_text = _text(subjects, subject, errors="backslashreplace")
        if subject_text is not subjects and not _valid_utf8(subjects):
            metadata = _with_raw(metadata, RAW_SUBJECT, subject)
        payloads = pa.array(payload, pa.binary())
        columns: dict[str, pa.Array] = {
            "seq": pa.array(seq, pa.int64()),
            "ts_ns": pa.array(ts_ns, pa.int64()),
            "delivered": pa.array(delivered, pa.int32()),
            "subject": subject_text,
            "payload": payloads,
            "text": _text(payloads, payload),
            "metadata": metadata,
        }
        con = _duckdb.connect()
        try:
            table = self._evaluate(con, columns, parsed)
        finally:
            con.close()
        unread: dict[str, int] = {}
        examples: dict[str, str] = {}
        for flag in [c for c in table.column_names if c.startswith(_UNREAD)]:
            values = table.column(flag).drop_null()
            if len(values):
                name = flag.removeprefix(_UNREAD)
                unread[name] = len(values)
                examples[name] = _shortened(values[0].as_py())
            table = table.drop_columns([flag])
        return MappedBatch(table, unread, examples)

    def _evaluate(
        self, con: duckdb.DuckDBPyConnection, columns: dict[str, pa.Array], parsed: Headers
    ) -> pa.Table:
        columns["is_json"] = envelope.json_validity(columns["text"], con)
        columns["nats_marker"] = parsed.lookup("Nats-Marker-Reason")
        columns["nats_schedule"] = parsed.lookup("Nats-Schedule")
        header_names: dict[str, str] = {}
        for spec in (s for specs in self.fields.values() for s in specs):
            if spec.kind in ("header", "trace") and spec.arg.lower() not in header_names:
                column = f"h{len(header_names)}"
                header_names[spec.arg.lower()] = column
                columns[column] = parsed.lookup(spec.arg)
        structured = "false"
        if any(s.kind in _PER_MODE for specs in self.fields.values() for s in specs):
            columns["content_type"] = parsed.lookup("content-type")
            columns["ce_headers"] = parsed.any_prefixed("ce-")
            structured = _STRUCTURED
        raw = pa.table(columns)
        selects = {
            "global_position": "seq",
            "recorded_at": "make_timestamp(ts_ns // 1000)",
            "recorded_ns": "ts_ns",
            "subject": "subject",
            "metadata": "metadata",
            "delivery_count": "delivered",
        }
        sources: dict[str, str] = {}  # a time or integer column → the value its specs found
        for name in envelope.COLUMNS:
            specs = self.fields.get(name, ())
            if name in {"source", "global_position", "recorded_at", "recorded_ns", "payload"}:
                continue
            exprs = [_convert(name, _source(name, s, header_names)) for s in specs]
            if name == "data" and not specs:
                exprs.append("j")  # no spec for data (raw): the payload is the data
            if name in selects:
                exprs.append(selects[name])  # what NATS knows, when no spec fills it
            # recorded_at is the NATS timestamp, never mapped: only occurred_at is read here.
            if (name in _TIMES or name in _INT_COLUMNS) and specs:
                values = [
                    f"nullif(trim({_source(name, s, header_names)}::varchar), '')" for s in specs
                ]
                if name == "schema_version":
                    # A schema URI (CloudEvents' dataschema) naming no version gives none:
                    # the default, not a value that failed to read.
                    values = [
                        f"case when not regexp_matches({v}, '[/:]') then {v} end" for v in values
                    ]
                sources[name] = f"coalesce({', '.join(values)})"
            if name == "schema_version":  # 1 when none is given; one that is no number: null
                exprs.append(f"case when {sources[name]} is null then 1 end" if specs else "1")
            if exprs:
                selects[name] = f"coalesce({', '.join(exprs)})"
        # NATS's own messages: recognisable whatever the mapping, and never the id
        # of an event (a schedule carries the id of the copy it will publish).
        if structured != "false" and _may_be_structured(columns):
            # A structured event's attributes join its headers in metadata under the names
            # binary mode gives them (ce-source, ce-tenant...), as text: one place to read
            # them whichever mode a producer chose. (Built only for a batch that may hold
            # one: DuckDB evaluates the expression for every row, ~10% of a batch's mapping.)
            selects["metadata"] = (
                f"case when structured then {_STRUCTURED_METADATA} else metadata end"
            )
        batch = "false"
        if structured != "false":  # the CloudEvents preset: a batch is archived whole, marked
            batch = (
                "coalesce(lower(content_type) like 'application/cloudevents-batch+json%', false)"
            )
        selects["event_type"] = (
            f"case when nats_marker is not null then {literal(MARKER_EVENT_TYPE)} "
            f"when nats_schedule is not null then {literal(SCHEDULE_EVENT_TYPE)} "
            f"when {batch} then {literal(BATCH_EVENT_TYPE)} "
            f"else {selects.get('event_type', 'null')}::varchar end"
        )
        if "event_id" in selects:
            selects["event_id"] = (
                f"case when nats_marker is null and nats_schedule is null and not {batch} "
                f"then {selects['event_id']} end"
            )
        # The original bytes are kept unless data holds them verbatim: not JSON,
        # or JSON of which data is a part (a mapped path, a structured
        # CloudEvent's attributes beside its data or its data_base64).
        data = selects.get("data", "null")
        selects["payload"] = (
            f"case when j is null then payload when ({data}) is distinct from text then payload end"
        )
        # A source value there, yet no time: "yesterday" in ce-time is counted, not just
        # null (so is "5.5" for a position). Looked for only where the column is null: the
        # inputs pass through e for it (subject and metadata are there already, unchanged).
        helpers = [c for c in (*columns, "j", "structured") if c not in selects] if sources else []
        unread = "".join(
            f", case when {n} is null then {e} end as {_UNREAD}{n}" for n, e in sources.items()
        )
        query = (
            "with p as (select *, case when is_json then text end as j from raw), "
            f"r as (select *, {structured} as structured from p), "
            "e as (select "
            + ", ".join([*(f"{e} as {n}" for n, e in selects.items()), *helpers])
            + " from r) "
            f"select {', '.join(selects)}{unread} from e"
        )
        con.register("raw", raw)
        return con.sql(query).to_arrow_table()


@dataclass(frozen=True)
class MappedBatch:
    """A batch's envelope columns, and the values in it the mapping could not read."""

    table: pa.Table
    #: Column → messages whose mapped value was there but is no time (a time column) or
    #: no integer (the column is null; the value stays in the headers, payload or subject).
    unread: Mapping[str, int]
    #: Column → the first such value (cut to 40 characters), to show.
    unread_example: Mapping[str, str]


# Which rows are structured-mode CloudEvents: their content-type says so or, with no
# content-type and no ce-* header (binary mode), the payload looks like one (the NATS
# binding before 1.0.2 had structured mode only, without headers). The cheap text
# test first: most payloads are not parsed again.
_STRUCTURED: Final = (
    "case when content_type is not null "
    "then lower(content_type) like 'application/cloudevents+json%' "
    "when ce_headers or j is null or not contains(j, '\"specversion\"') then false "
    "else coalesce(json_type(j) = 'OBJECT' "
    "and json_type(j, '$.specversion') = 'VARCHAR' "
    "and json_type(j, '$.id') <> 'NULL' and json_type(j, '$.type') <> 'NULL', false) end"
)


def _may_be_structured(columns: Mapping[str, pa.Array]) -> bool:
    """Whether a batch may hold a structured CloudEvent: a message without ``ce-*`` headers
    (the binding before 1.0.2 sent none), or one whose content-type says so."""
    if not pc.all(columns["ce_headers"]).as_py():
        return True
    content_type = pc.utf8_lower(columns["content_type"].fill_null(""))
    return bool(pc.any(pc.match_substring(content_type, "cloudevents+json")).as_py())


_STRUCTURED_METADATA: Final = (
    "json_merge_patch(coalesce(metadata, '{}'), to_json(map_from_entries(list_transform("
    "list_filter(json_keys(j), lambda k: k not in ('data', 'data_base64')), "
    "lambda k: struct_pack(key := 'ce-' || k, value := json_extract_string(j, "
    "'/' || replace(replace(k, '~', '~0'), '/', '~1')))))))::varchar"  # a JSON pointer
)
# Time columns whose unreadable source values are counted (as are _INT_COLUMNS'), and the
# prefix of their flag.
_TIMES: Final = frozenset({"occurred_at", "recorded_at"})
_UNREAD: Final = "_unread_"


def _source(column: str, spec: FieldSpec, header_names: Mapping[str, str]) -> str:
    """SQL for the value ``spec`` finds for ``column``, before any conversion."""
    kind = spec.kind
    if kind == "header":
        value = header_names[spec.arg.lower()]
        # CloudEvents' attribute headers: read as their readers read them.
        return url_decoded(value) if spec.arg.lower().startswith("ce-") else value
    if kind == "trace":
        value = header_names[spec.arg.lower()]
        # version-traceid-parentid-flags; version ff and all-zero ids are invalid (W3C).
        text = f"lower(trim({value}))"
        return (
            f"case when regexp_full_match({text}, "
            "'[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-.*)?') "
            f"and split_part({text}, '-', 1) <> 'ff' "
            f"and split_part({text}, '-', 2) <> repeat('0', 32) "
            f"and split_part({text}, '-', 3) <> repeat('0', 16) "
            f"then split_part({text}, '-', 2) end"
        )
    if kind == _PAYLOAD:
        # A binary-mode payload whose content-type is text (text/plain, XML) is text: data
        # is that text as a JSON string, as structured mode gives it ("42" stays a string,
        # not the number 42); its bytes stay in payload.
        return (
            "case when structured then null "
            "when not contains(lower(content_type), 'json') and (starts_with(lower(content_type), "
            "'text/') or contains(lower(content_type), 'xml')) then to_json(text)::varchar else j end"
        )
    if kind in ("data", _EVENT):
        fn = "json_extract" if column == "data" else "json_extract_string"
        value = f"{fn}(j, {_pointer(spec.path)})"
        if column == "data":
            value = f"({value})::varchar"
        if kind == _EVENT:
            value = f"case when structured then {value} end"
        return value
    if kind == "metadata":
        return f"json_extract_string(metadata, {_pointer(spec.path)})"
    if kind == "subject":
        return _subject_sql(spec.subject_part)
    return literal(spec.arg)  # const


def _subject_sql(part: tuple[int, int | None] | int) -> str:
    """SQL for a subject token (Python index) or a range of them (Python slice), joined
    by dots; DuckDB's lists count from 1 and include the end.

    >>> from workbench import _duckdb
    >>> con = _duckdb.connect()
    >>> [con.sql(f"select {_subject_sql(t)} from (select '$KV.cfg.a.b' as subject)").fetchall()[0][0]
    ...  for t in (2, -1, (2, None), (1, -1), (4, None))]
    ['a', 'b', 'a.b', 'cfg.a', None]
    """
    if isinstance(part, int):
        return f"string_split(subject, '.')[{part + 1 if part >= 0 else part}]"
    start, stop = part
    begin = start + 1 if start >= 0 else start
    end = -1 if stop is None else (stop if stop >= 0 else stop - 1)
    if stop == 0:  # an empty range
        return "NULL"
    parts = f"list_slice(string_split(subject, '.'), {begin}, {end})"
    return f"nullif(array_to_string({parts}, '.'), '')"


#: Where a schema URI (``dataschema``) says its version, first match wins: a ``v2`` segment
#: or file at its end (``.../order-created/v2``, ``order-created-v2.json``), a registry's
#: ``/versions/3``, a bare number at its end (``.../order-created/2.json``), a ``/v2/``
#: directory. A ``v`` inside a word (``dev2``) is no version.
_URI_VERSIONS: Final = (
    r"(?:^|[/:._-])[vV]([0-9]+)(?:\.[a-z]+)?/?$",
    r"/versions/([0-9]+)/?$",
    r"/([0-9]+)(?:\.[a-z]+)?/?$",
    r"^.*[/:][vV]([0-9]+)/",
)


def _convert(column: str, value: str) -> str:
    """SQL converting a found value to ``column``'s type (null when it does not convert).

    >>> from workbench import _duckdb
    >>> con = _duckdb.connect()
    >>> [con.sql(f"select {_convert('schema_version', repr(u))}").fetchall()[0][0] for u in [
    ...     "3", "https://x.io/order-created/v2", "order-created-v4.json",
    ...     "https://registry/subjects/orders-value/versions/3", "https://x.io/order-created/2.json",
    ...     "https://x.io/schemas/v5/order-created.json", "https://x.io/schemas/dev2/order.json"]]
    [3, 2, 4, 3, 2, 5, None]
    """
    if column == "occurred_at":
        return instant_sql(value)
    if column == "schema_version":
        # "2", or the version a schema URI names (see _URI_VERSIONS)
        found = ", ".join(
            f"try_cast(nullif(regexp_extract({value}, {literal(pattern)}, 1), '') as integer)"
            for pattern in _URI_VERSIONS
        )
        # A CASE, not one coalesce: only a value that is no number pays for the patterns.
        number = _integer(value, "integer")
        return f"(case when {number} is not null then {number} else coalesce({found}) end)"
    if column in _INT_COLUMNS:
        return _integer(value, _INT_COLUMNS[column])
    return f"({value})::varchar"


def _integer(value: str, sql_type: str) -> str:
    """SQL of ``value`` as an integer when it is one (``"5"``, ``" 7 "``, ``"-1"``), else
    null: a cast alone rounds ``"5.5"`` to 6, a version or position nobody wrote.

    >>> from workbench import _duckdb
    >>> con = _duckdb.connect()
    >>> [con.sql(f"select {_integer(repr(v), 'bigint')}").fetchall()[0][0]
    ...  for v in ["5", " 7 ", "-1", "5.5", "5.0", "1e3", "six", ""]]
    [5, 7, -1, None, None, None, None, None]
    """
    text = f"trim(({value})::varchar)"
    return f"(case when regexp_full_match({text}, '[+-]?[0-9]+') then try_cast({text} as {sql_type}) end)"


def _shortened(text: str, limit: int = 40) -> str:
    """``text`` cut to ``limit`` characters, to show in one line.

    >>> _shortened("x" * 50, 10)
    'xxxxxxxxx…'
    """
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _pointer(path: tuple[str, ...]) -> str:
    """A JSON pointer (RFC 6901) as a SQL literal, so any key is addressable."""
    return literal("/" + "/".join(k.replace("~", "~0").replace("/", "~1") for k in path))


#: The ``metadata`` key holding a header block that is not UTF-8, whole and base64: its
#: values read lossily (U+FFFD), and no header's name holds a colon.
RAW_HEADERS: Final = "headers:base64"
#: The ``metadata`` key holding a subject that is not UTF-8, base64 (``subject`` has its
#: bytes escaped: ``orders.caf\xe9``).
RAW_SUBJECT: Final = "subject:base64"


def _valid_utf8(values: pa.Array) -> bool:
    try:
        values.cast(pa.string())
    except pa.ArrowInvalid:
        return False
    return True


def _with_raw(metadata: pa.Array, key: str, items: list[bytes]) -> pa.Array:
    """``metadata`` with each of ``items`` that is not UTF-8 kept whole, base64, under
    ``key``: no byte a message carried is lost.

    >>> _with_raw(pa.array(['{"X":"caf?"}', None]), RAW_HEADERS, [b"X: caf\\xe9", b""]).to_pylist()
    ['{"X":"caf?","headers:base64":"WDogY2Fm6Q=="}', None]
    """
    values = metadata.to_pylist()
    for i, block in enumerate(items):
        if block and _decode(block) is None:
            doc = json.loads(values[i]) if values[i] else {}
            doc[key] = base64.b64encode(block).decode()
            values[i] = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    return pa.array(values, pa.string())


def _text(values: pa.Array, items: list[bytes], *, errors: str | None = None) -> pa.Array:
    """UTF-8 text of binary ``values`` (built from ``items``); invalid ones become null, or
    are decoded with Python's ``errors`` handler."""
    try:
        return values.cast(pa.string())
    except pa.ArrowInvalid:
        return pa.array([_decode(v, errors) for v in items], pa.string())


def _decode(value: bytes | None, errors: str | None = None) -> str | None:
    if value is None:
        return None
    try:
        return value.decode()
    except UnicodeDecodeError:
        return value.decode(errors=errors) if errors else None
