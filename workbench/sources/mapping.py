"""Field mapping: how a source fills envelope columns (``--map FIELD=SPEC``).

A spec is ``KIND:ARG`` with KIND one of ``header``, ``trace``, ``data``,
``metadata``, ``subject``, ``column`` or ``const``. Each archiver evaluates the kinds its
source has (JetStream: headers and subjects; Postgres: columns) and rejects
the others with a clear message.

>>> parse_mappings(["event_id=header:Nats-Msg-Id", "stream=subject:-2"])
{'event_id': FieldSpec(kind='header', arg='Nats-Msg-Id'), 'stream': FieldSpec(kind='subject', arg='-2')}
>>> FieldSpec.parse("data:meta.request.id").path
('meta', 'request', 'id')
>>> parse_mappings(["colour=const:red"])
Traceback (most recent call last):
...
workbench.errors.MappingError: --map colour=const:red: colour is not an envelope column
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from workbench import envelope
from workbench.errors import MappingError

__all__ = ["KINDS", "FieldSpec", "Mappings", "instant_sql", "mapping_options", "parse_mappings"]

#: The kinds of spec, and what ARG means for each.
KINDS: Final[Mapping[str, str]] = {
    "header": "a message header name (JetStream)",
    # OpenTelemetry's NATS instrumentation propagates W3C trace context: one trace is one
    # request's work, a correlation; the whole header differs in each message (its span).
    "trace": "a W3C traceparent header whose trace id is the value (JetStream): trace:traceparent",
    "data": "a dotted path inside the JSON payload",
    "metadata": "a dotted path inside the JSON metadata",
    "subject": "a token of the NATS subject by index (negative counts from the end), "
    "or a range of tokens START:[STOP] joined by dots",
    "column": "a column of the source table (Postgres)",
    "const": "a constant value",
}

# subject:INDEX or subject:START:[STOP], Python's slice with a step of one.
_SUBJECT_ARG = re.compile(r"-?\d+(?::(?:-?\d+)?)?")

# One key of a data:/metadata: path: "in quotes" (may hold dots), or plain.
_PATH_KEY = re.compile(r'"([^"]*)"|([^."]+)')

# Columns that the archive itself owns; a mapping must not override them.
_NOT_MAPPABLE: Final[frozenset[str]] = frozenset({"source", "global_position", "payload"})


@dataclass(frozen=True)
class FieldSpec:
    """One way to fill an envelope column."""

    kind: str
    arg: str

    @classmethod
    def parse(cls, text: str) -> FieldSpec:
        kind, sep, arg = text.partition(":")
        if not sep or kind not in KINDS:
            raise MappingError(
                f"spec {text!r} must be KIND:ARG with KIND one of {', '.join(KINDS)}"
            )
        if kind != "const" and not arg:
            raise MappingError(f"spec {text!r} needs an argument: {KINDS[kind]}")
        if kind == "subject" and not _SUBJECT_ARG.fullmatch(arg):
            raise MappingError(
                f"spec {text!r}: subject takes a token index (subject:2, subject:-1) or a "
                "range of tokens joined by dots (subject:2: for the third to the last)"
            )
        if kind in ("data", "metadata"):
            _path_keys(text, arg)  # a path it cannot split is refused now, not at the read
        return cls(kind, arg)

    @property
    def path(self) -> tuple[str, ...]:
        """The dotted path split into keys (for ``data:`` and ``metadata:``); a key in
        double quotes may hold dots, as Eventuous's ``eventuous.correlation-id`` does.

        >>> FieldSpec.parse('metadata:"eventuous.correlation-id"').path
        ('eventuous.correlation-id',)
        >>> FieldSpec.parse('data:meta."a.b".c').path
        ('meta', 'a.b', 'c')
        """
        return _path_keys(str(self), self.arg)

    @property
    def subject_part(self) -> tuple[int, int | None] | int:
        """The subject token index (``subject:2``), or a Python-style ``(start, stop)``
        range of tokens (``subject:2:``, ``subject:1:-1``), for ``subject:``.

        >>> FieldSpec.parse("subject:-1").subject_part, FieldSpec.parse("subject:2:").subject_part
        (-1, (2, None))
        """
        start, colon, stop = self.arg.partition(":")
        if not colon:
            return int(start)
        return int(start), int(stop) if stop else None

    def __str__(self) -> str:
        return f"{self.kind}:{self.arg}"


def _path_keys(spec: str, path: str) -> tuple[str, ...]:
    """The keys of a dotted ``path``, a key in double quotes holding dots as it is."""
    if '"' not in path:
        return tuple(path.split("."))
    keys = _PATH_KEY.findall(path)
    if ".".join(f'"{q}"' if q or not plain else plain for q, plain in keys) != path:
        raise MappingError(
            f"spec {spec}: a path is keys joined by dots, a key holding dots in double "
            'quotes (metadata:"eventuous.correlation-id")'
        )
    return tuple(q or plain for q, plain in keys)


#: ``--map``s as the library takes them: ``FIELD=SPEC`` strings, one such string, or a
#: dict of field → spec (a list of specs: the first that yields a value wins).
Mappings = Iterable[str] | Mapping[str, str | Iterable[str]] | str


def mapping_options(mappings: Mappings | None) -> list[str]:
    """``mappings`` as ``FIELD=SPEC`` strings, in order.

    >>> mapping_options({"event_type": "header:Event-Type", "stream": ["subject:2", "preset"]})
    ['event_type=header:Event-Type', 'stream=subject:2', 'stream=preset']
    >>> mapping_options("event_type=header:Event-Type")
    ['event_type=header:Event-Type']
    >>> mapping_options(["stream=subject:2", 7])
    Traceback (most recent call last):
    ...
    workbench.errors.MappingError: mappings: 7 is not a FIELD=SPEC string
    """
    if mappings is None:
        return []
    if isinstance(mappings, str):  # one mapping; iterated, it would be its characters
        return [mappings]
    if isinstance(mappings, Mapping):
        options = []
        for name, specs in mappings.items():
            for spec in [specs] if isinstance(specs, str) else specs:
                options.append(f"{name}={spec}")
        return options
    options = list(mappings)
    for item in options:
        if not isinstance(item, str):
            raise MappingError(f"mappings: {item!r} is not a FIELD=SPEC string")
    return options


def parse_mappings(items: Iterable[str]) -> dict[str, FieldSpec]:
    """Parse ``FIELD=SPEC`` strings into a field → spec dict (later ones win)."""
    specs: dict[str, FieldSpec] = {}
    for item in items:
        field, sep, spec = item.partition("=")
        field = field.strip()
        if not sep:
            raise MappingError(f"--map {item}: expected FIELD=SPEC")
        if field not in envelope.COLUMNS:
            raise MappingError(f"--map {item}: {field} is not an envelope column")
        if field in _NOT_MAPPABLE:
            raise MappingError(f"--map {item}: {field} is set by the archiver, not mapped")
        try:
            specs[field] = FieldSpec.parse(spec.strip())
        except MappingError as exc:
            raise MappingError(f"--map {item}: {exc}") from None
    return specs


def instant_sql(value: str) -> str:
    """DuckDB SQL reading the text ``value`` as a time: an ISO timestamp, or epoch seconds (10 digits, maybe with a fraction),
    milliseconds (13, JavaScript's ``Date.now()``), microseconds (16) or nanoseconds (19).
    Ruby's and Go's ``Time`` text, a space before the offset (``2024-05-01 10:00:00 +0200``,
    Go's with the zone's name after it), is read too.
    Anything else is null, ``infinity`` too (DuckDB casts it to a time no reader can show),
    and so is a number of 8 digits or fewer: as epoch seconds it would be before March
    1973, so it is a version or a counter mapped by mistake, not a time.

    >>> from workbench import _duckdb
    >>> con = _duckdb.connect()
    >>> [con.sql(f"select {instant_sql(repr(v))}").fetchall()[0][0].isoformat() for v in
    ...  ["2024-05-01T10:00:00+02:00", "1714550400", "1714550400.5", "1714550400123",
    ...   "1714550400123456", "1714550400123456789", "2024-05-01 10:00:00 +0200",
    ...   "2024-05-01 10:00:00.5 +0200 CEST"]]  # doctest: +NORMALIZE_WHITESPACE
    ['2024-05-01T08:00:00+00:00', '2024-05-01T08:00:00+00:00', '2024-05-01T08:00:00.500000+00:00',
     '2024-05-01T08:00:00.123000+00:00', '2024-05-01T08:00:00.123456+00:00',
     '2024-05-01T08:00:00.123456+00:00', '2024-05-01T08:00:00+00:00',
     '2024-05-01T08:00:00.500000+00:00']
    >>> [con.sql(f"select {instant_sql(repr(v))}").fetchall()[0][0] for v in
    ...  ["yesterday", "infinity", "-Infinity", "", "12:00", "62", "20240501"]]
    [None, None, None, None, None, None, None]
    """
    v = f"({value})"
    digits = f"length(regexp_extract({v}, '^\\s*-?(\\d+)', 1))"
    return (
        f"coalesce(nullif(nullif(coalesce(try_cast({v} as timestamptz), "
        f"case when contains({v}, ' ') then "  # only such text pays for the regexp
        f"try_cast(regexp_replace(trim({v}), '^(\\d{{4}}-\\d\\d-\\d\\d[ T][\\d:.]+) "
        f"([+-]\\d\\d:?\\d\\d)( [A-Za-z]{{2,5}})?$', '\\1\\2') as timestamptz) end), "
        f"'infinity'), '-infinity'), case "
        f"when not regexp_full_match(trim({v}), '-?\\d+(\\.\\d+)?') then null "
        f"when {digits} <= 8 then null "
        f"when {digits} <= 11 then to_timestamp(try_cast({v} as double)) "
        f"when {digits} <= 14 then make_timestamp(try_cast({v} as bigint) * 1000)::timestamptz "
        f"when {digits} <= 17 then make_timestamp(try_cast({v} as bigint))::timestamptz "
        f"else make_timestamp(try_cast({v} as bigint) // 1000)::timestamptz end)"
    )
