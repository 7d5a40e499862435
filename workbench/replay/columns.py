"""Column types of declared tables: how a handler's values are stored and read back.

A column type is spelt as a Python type (``str``, ``Decimal``, ``uuid.UUID``,
``list[str]``, ``dict`` ...) or a DuckDB type name (``"DECIMAL(12,2)"``,
``"VARCHAR[]"``, ``"JSON"`` ...). Each resolves to the DuckDB type of the
column, the Arrow type rows are flushed with, and, where Arrow cannot take
the handler's value as it is, an encoder (UUID → text, JSON → text) and the
decoder that gives a resumed run back the value an uninterrupted run holds.

>>> column_type("decimal(12, 2)").sql, column_type(list[str]).sql
('DECIMAL(12,2)', 'VARCHAR[]')
>>> import uuid
>>> u = column_type(uuid.UUID)
>>> u.array([uuid.UUID(int=1), None]).to_pylist()
['00000000-0000-0000-0000-000000000001', None]
>>> u.decode('00000000-0000-0000-0000-000000000001')
UUID('00000000-0000-0000-0000-000000000001')
>>> column_type(dict).array([{"a": [1, 2]}]).to_pylist()
['{"a": [1, 2]}']
>>> column_type(dict).array([{1: "one"}])
Traceback (most recent call last):
...
workbench.replay.columns.Refused: it would not read back the same: write lists and string keys
>>> column_type(int).array([1, 2.0, None]).to_pylist()
[1, 2, None]
>>> column_type(int).array([0.65])
Traceback (most recent call last):
...
workbench.replay.columns.Refused: 0.65 would be truncated to an integer
>>> from decimal import Decimal
>>> column_type("DECIMAL(4,2)").array([Decimal("1.234")])
Traceback (most recent call last):
...
workbench.replay.columns.Refused: it does not fit DECIMAL(4,2) without a loss
>>> column_type("MONEY")
Traceback (most recent call last):
...
workbench.errors.ProjectionError: unsupported column type 'MONEY'; use a Python type (str, int, float, bool, Decimal, datetime, date, time, timedelta, UUID, bytes, dict, list[str] ...) or a DuckDB type (VARCHAR, BIGINT, INTEGER, SMALLINT, DOUBLE, REAL, BOOLEAN, DECIMAL(p,s), TIMESTAMPTZ, TIMESTAMP, DATE, TIME, INTERVAL, UUID, JSON, BLOB, or T[] of a scalar T)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import functools
import itertools
import json
import math
import re
import struct
import sys
import types
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

import pyarrow as pa

from workbench.errors import ProjectionError

__all__ = ["ColumnType", "Refused", "column_type"]


class Refused(pa.ArrowInvalid):
    """A value the column refuses to store, with why (a loss, or a value to write instead)."""


@dataclass(frozen=True)
class ColumnType:
    """One column's DuckDB type, Arrow type, and value conversions."""

    sql: str
    arrow: pa.DataType
    #: Handler values → values Arrow stores as ``arrow`` (a whole column at a time).
    encode: Callable[[list[Any]], list[Any]] | None = None
    #: A stored non-null value read back → the value the handler wrote.
    decode: Callable[[Any], Any] | None = None

    def array(self, values: list[Any]) -> pa.Array:
        """``values`` as an Arrow array of this type, refusing what would lose data.

        Arrow itself truncates a float or Decimal into an integer (0.65 → 0)
        and a datetime into a DATE (the time dropped); a read model must not.
        Raises :class:`Refused` for those, ``pa.ArrowInvalid`` or
        ``pa.ArrowTypeError`` for a value of another type.
        """
        typ = self.arrow
        try:
            array = pa.array(values if self.encode is None else self.encode(values), typ)
        except UnicodeEncodeError as exc:  # a str Python holds and UTF-8 cannot
            raise Refused(_lone_surrogate(exc.object[exc.start : exc.start + 1])) from None
        except OverflowError:  # Arrow's own words: "Python int too large to convert to C long"
            raise Refused(f"it does not fit {self.sql}") from None
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            if not pa.types.is_decimal(typ) or isinstance(exc, Refused):
                raise
            if any(isinstance(v, float) for v in values):
                raise Refused("write a Decimal: a float is inexact") from None
            if any(isinstance(v, bool) for v in values):
                raise Refused("a bool is not a number") from None
            if isinstance(exc, pa.ArrowInvalid):  # too many places or digits
                raise Refused(f"it does not fit {self.sql} without a loss") from None
            raise
        if self.encode is None:
            _refuse_conversions(typ, values)
        return array

    @property
    def normalise(self) -> Callable[[Any], Any] | None:
        """Turns a handler's value into the value it reads back as once stored, where
        those differ as values: a DECIMAL keeps its scale, a REAL a float32's digits,
        a list column makes a tuple a list. Applied as each value is written, so a
        run that resumed from stored rows and one that did not hold the same.

        (Values equal to what is stored but of another kind, an int in a float
        column or an aware time in another zone, read back as the stored kind and
        are not converted: checked on every write, that cost a replay of
        ``Memories`` 3,000 CPU instructions an event.)

        >>> from decimal import Decimal
        >>> column_type("DECIMAL(12,2)").normalise(Decimal("1.5"))
        Decimal('1.50')
        >>> column_type("REAL[]").normalise((0.1,)), column_type(list[int]).normalise((1, 2))
        ([0.10000000149011612], [1, 2])
        >>> column_type(float).normalise is None
        True
        """
        typ = self.arrow.value_type if pa.types.is_list(self.arrow) else self.arrow
        one: Callable[[Any], Any] | None = None
        if pa.types.is_decimal(typ):  # any Decimal may have another scale
            one = _decimal_normaliser(Decimal(1).scaleb(-typ.scale))
        elif pa.types.is_float32(typ):
            one = _real
        if typ is self.arrow:
            return one
        if one is None:
            return _listed
        each = one
        return lambda values: (
            [each(v) for v in _listed(values)] if isinstance(values, list | tuple) else values
        )

    def certainly_stores(self) -> Callable[[Any], bool]:
        """A quick test of one value: True when the column stores it for certain, False
        when only :meth:`array` can tell (what dead-letter mode checks each write with).

        >>> ints = column_type(int).certainly_stores()
        >>> ints(3), ints(None), ints(2**70), ints(3.0), ints(True)
        (True, True, False, False, False)
        >>> column_type(dt.datetime).certainly_stores()(dt.datetime(2024, 5, 1))
        False
        >>> money = column_type("DECIMAL(4,2)").certainly_stores()
        >>> [money(Decimal(v)) for v in ("12.5", "12.345", "100", "NaN", "1.5000")], money(1.5)
        ([True, False, False, False, True], False)
        >>> money(12), money(100), money(True)
        (True, False, False)
        >>> words = column_type(list[str]).certainly_stores()
        >>> words(["a", None]), words("ab"), words(["a", 1])
        (True, False, False)
        >>> doubles = column_type(list[float]).certainly_stores()
        >>> doubles([1.5, 2**53]), doubles([2**53 + 1])
        (True, False)
        """
        typ = self.arrow
        if typ == pa.string() and self.encode is _uuid_text:  # a UUID column
            return lambda v: v is None or type(v) is uuid.UUID
        if self.encode is not None:
            return _none
        if pa.types.is_integer(typ):
            bits = typ.bit_width - (0 if pa.types.is_unsigned_integer(typ) else 1)
            low = 0 if pa.types.is_unsigned_integer(typ) else -(2**bits)
            high = 2**bits - 1
            return lambda v: v is None or (type(v) is int and low <= v <= high)
        if pa.types.is_floating(typ):
            # An int only while the float holds it exactly (Arrow refuses one past that);
            # a REAL's float only within its range (beyond it, infinity).
            exact = 2**53 if pa.types.is_float64(typ) else 2**24
            largest = sys.float_info.max if pa.types.is_float64(typ) else 3.4e38
            return lambda v: (
                v is None
                or (type(v) is float and (-largest <= v <= largest or v != v))
                or (type(v) is int and -exact <= v <= exact)
            )
        if pa.types.is_string(typ) or pa.types.is_large_string(typ):
            return lambda v: v is None or type(v) is str
        if pa.types.is_boolean(typ):
            return lambda v: v is None or type(v) is bool
        if pa.types.is_timestamp(typ):
            aware = typ.tz is not None
            return lambda v: (
                v is None or (type(v) is dt.datetime and (v.tzinfo is not None) is aware)
            )
        if pa.types.is_date(typ):
            return lambda v: v is None or type(v) is dt.date
        if pa.types.is_time(typ):  # an offset would be dropped
            return lambda v: v is None or (type(v) is dt.time and v.tzinfo is None)
        if pa.types.is_duration(typ):  # within int64 microseconds
            return lambda v: v is None or (type(v) is dt.timedelta and -_LONGEST < v < _LONGEST)
        if pa.types.is_binary(typ):
            return lambda v: v is None or type(v) is bytes
        if pa.types.is_decimal(typ):
            # Within its digits, and no more places than its scale (the flush refuses
            # a value its scale would round); the normaliser then only pads the places.
            limit, places = Decimal(10) ** (typ.precision - typ.scale), -typ.scale
            exponent = Decimal(1).scaleb(places)

            def fits(v: Any) -> bool:
                if type(v) is int:
                    return -limit < v < limit
                if type(v) is not Decimal or not v.is_finite() or not -limit < v < limit:
                    return False
                # More places than the scale only as zeros (10.5000 in a DECIMAL(6,2)).
                return v.as_tuple().exponent >= places or v == v.quantize(exponent)

            return lambda v: v is None or fits(v)
        if pa.types.is_list(typ) and not pa.types.is_float32(typ.value_type):
            item = ColumnType(self.sql.removesuffix("[]"), typ.value_type).certainly_stores()
            return lambda v: v is None or (type(v) is list and all(map(item, v)))
        return _none

    @property
    def checked_by_type(self) -> bool:
        """Whether :meth:`certainly_stores` passes on a value's type alone (a text, a flag,
        a date, bytes, a UUID), so one write of a row's types stands for the next; else
        each value is looked at (an integer's range, a time's zone, a list's items).

        >>> column_type(str).checked_by_type, column_type(float).checked_by_type
        (True, False)
        """
        typ = self.arrow
        return self.encode in (None, _uuid_text) and (
            pa.types.is_string(typ)
            or pa.types.is_boolean(typ)
            or pa.types.is_date(typ)
            or pa.types.is_binary(typ)
        )

    def another_kind(self, values: list[Any]) -> tuple[Any, str] | None:
        """The first of ``values`` that is stored as written but reads back as another
        kind, and what it becomes: what a ``--resume`` (which reads the stored rows)
        hands a handler instead (the kinds :attr:`normalise` leaves alone).

        >>> column_type(float).another_kind([1.5, None, 2])
        (2, 'an int, read back as a float')
        >>> import enum
        >>> class Colour(enum.StrEnum):
        ...     RED = "red"
        >>> column_type(str).another_kind(["a", Colour.RED])
        (<Colour.RED: 'red'>, 'a Colour, read back as a str')
        >>> plus_one = dt.timezone(dt.timedelta(hours=1))
        >>> column_type(dt.datetime).another_kind([dt.datetime(2024, 5, 1, tzinfo=plus_one)])[1]
        'a time in UTC+01:00, read back in UTC'
        >>> column_type(list[float]).another_kind([[0.5, 1]])
        ([0.5, 1], 'an int in the list, read back as a float')
        >>> column_type(float).another_kind([1.5, None]) is None
        True
        """
        typ = self.arrow
        if pa.types.is_list(typ):
            item = ColumnType(self.sql.removesuffix("[]"), typ.value_type)
            for value in values:
                if isinstance(value, list | tuple) and (found := item.another_kind(list(value))):
                    return value, found[1].replace(",", " in the list,", 1)
            return None
        kind = _READ_BACK.get(typ.id)
        if kind is None or self.encode is not None:  # a UUID's and JSON's are refused
            return None
        others = {
            t
            for t in set(map(type, values)) - {kind, type(None)}
            # NumPy's float64 is a float in all but name; its int64 is not an int.
            if not (issubclass(t, kind) and t.__module__ == "numpy")
        }
        if others:
            value = next(v for v in values if type(v) in others)
            return value, f"{_a(type(value).__name__)}, read back as {_a(kind.__name__)}"
        if kind is dt.datetime and typ.tz is not None:
            # Another zone, even at UTC's offset (London in winter): a day added to it
            # keeps its wall time across a change of offset, in UTC it keeps 24 hours.
            # By name: dateutil's tzutc cannot be hashed.
            zones = {str(z) for z in map(_zone, values) if z is not None} - _UTC
            if zones:
                value = next(v for v in values if str(_zone(v)) in zones)
                return value, f"a time in {value.tzinfo}, read back in UTC"
        return None

    def decode_all(self, values: list[Any]) -> list[Any]:
        """Stored values read back (None stays None) as the handler wrote them."""
        decode = self.decode
        if decode is None:
            return values
        return [None if v is None else decode(v) for v in values]


#: How UTC's zones name themselves (datetime's, zoneinfo's, pytz's, dateutil's); GMT's
#: have no daylight saving either.
_UTC = frozenset({"UTC", "Etc/UTC", "UCT", "Etc/UCT", "Universal", "Etc/Universal", "Zulu",
                  "Etc/Zulu", "UTC+00:00", "Z", "GMT", "Etc/GMT", "GMT0", "Etc/GMT0",
                  "Etc/GMT+0", "Etc/GMT-0", "Greenwich", "Etc/Greenwich", "tzutc()"})  # fmt: skip


def _zone(value: dt.datetime | None) -> dt.tzinfo | None:
    return None if value is None else value.tzinfo


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


#: The kind a stored value of an Arrow type reads back as.
_READ_BACK: Final[dict[int, type]] = {
    typ.id: kind
    for typ, kind in (
        (pa.string(), str),
        (pa.int64(), int),
        (pa.int32(), int),
        (pa.int16(), int),
        (pa.float64(), float),
        (pa.float32(), float),
        (pa.bool_(), bool),
        (pa.timestamp("us"), dt.datetime),
        (pa.date32(), dt.date),
        (pa.time64("us"), dt.time),
        (pa.duration("us"), dt.timedelta),
        (pa.binary(), bytes),
        (pa.decimal128(38, 0), Decimal),
    )
}


def _none(value: Any) -> bool:
    return value is None


def _refuse_conversions(typ: pa.DataType, values: list[Any]) -> None:
    """Raise :class:`Refused` for a value Arrow accepted but stores as another value.

    Arrow converts what it can: a str into a list of its characters, epoch
    numbers into times, a bool into 1.0, bytes into text, a float into a
    truncated integer. A read model must hold what the handler wrote, so each
    is refused with what to write instead. The usual case costs one C pass
    over the values' types.
    """
    fine = _stored_as_written(typ)
    if not set(map(type, values)) <= fine:
        for v in values:
            if type(v) not in fine and (why := _why_not(typ, v)) is not None:
                raise Refused(why)
    if pa.types.is_list(typ):  # Arrow took each value as a sequence: check the items
        items = list(itertools.chain.from_iterable(v for v in values if v is not None))
        _refuse_conversions(typ.value_type, items)


@functools.cache
def _stored_as_written(typ: pa.DataType) -> frozenset[type]:
    """The value types a column of ``typ`` stores exactly as written (a TIME's are looked
    at one by one: an offset would be dropped)."""
    for test, kinds in (
        (pa.types.is_string, (str,)),
        (pa.types.is_integer, (int,)),
        (pa.types.is_floating, (float, int)),
        (pa.types.is_boolean, (bool,)),
        (pa.types.is_timestamp, (dt.datetime,)),
        (pa.types.is_date, (dt.date,)),
        (pa.types.is_duration, (dt.timedelta,)),
        (pa.types.is_binary, (bytes,)),
        (pa.types.is_decimal, (Decimal, int)),
        (pa.types.is_list, (list, tuple)),
    ):
        if test(typ):
            return frozenset({*kinds, type(None)})
    return frozenset({type(None)})


#: What Arrow makes of a number in a column of time: the unit it reads it in, and the fix.
_NUMBER_AS = {
    "timestamp": "microseconds since 1970; write a datetime "
    "(datetime.fromtimestamp(n, timezone.utc) for epoch seconds)",
    "date32": "days since 1970; write a date",
    "time64": "microseconds since midnight; write a time",
    "duration": "microseconds; write a timedelta (timedelta(seconds=n))",
}


def _why_not(typ: pa.DataType, v: Any) -> str | None:
    """Why a column of ``typ`` would not store ``v`` as written (None: it would)."""
    if v is None:
        return None
    if isinstance(v, bool) and not (pa.types.is_boolean(typ) or pa.types.is_list(typ)):
        return "a bool is not a number"
    if pa.types.is_integer(typ) and isinstance(v, float | Decimal) and v == v and v != int(v):
        return f"{v!r} would be truncated to an integer"
    if pa.types.is_string(typ) and isinstance(v, bytes | bytearray | memoryview):
        return "bytes, stored as text they would read back as str: write text (b.decode())"
    if pa.types.is_binary(typ) and isinstance(v, str):
        return "a str, stored as bytes it would read back as: write bytes (s.encode())"
    if pa.types.is_date(typ) and isinstance(v, dt.datetime):
        return "a datetime into a DATE column would drop its time"
    if pa.types.is_time(typ) and isinstance(v, dt.time) and v.tzinfo is not None:
        return "a TIME keeps no offset, which would be dropped: write a naive time"
    unit = _NUMBER_AS.get(str(typ).split("[")[0])
    if unit is not None and isinstance(v, int | float):
        return f"a number would be read as {unit}"
    if pa.types.is_list(typ):
        if isinstance(v, str | bytes):
            return f"a text would be stored as a list of its characters; write [{v!r}]"
        if isinstance(v, set | frozenset):
            return "a set has no order (it would differ from run to run): write sorted(...)"
    return None


#: Beyond this an INTERVAL's microseconds leave an int64 (about 292,000 years).
_LONGEST = dt.timedelta(days=100_000_000)


def _decimal_normaliser(exponent: Decimal) -> Callable[[Any], Any]:
    def normalise(value: Any) -> Any:
        if isinstance(value, Decimal | int) and not isinstance(value, bool):
            with contextlib.suppress(ArithmeticError):
                # The default context holds 28 digits; a DECIMAL up to 38.
                stored = Decimal(value).quantize(exponent, context=_DIGITS_38)
                if stored == value:  # a value with more places is refused at the flush
                    return stored
        return value

    return normalise


_DIGITS_38 = decimal.Context(prec=38)


def _listed(value: Any) -> Any:
    """A tuple in a list column as the list it reads back as."""
    return list(value) if type(value) is tuple else value


def _real(value: Any) -> Any:
    """A float32's value of ``value``; what float32 cannot hold (an int it would round,
    a float it would make infinite) is left for the flush to refuse or store."""
    if isinstance(value, float | int) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError, struct.error):
            stored: float = struct.unpack("f", struct.pack("f", value))[0]
            if isinstance(value, int) and stored != value:
                return value
            if math.isinf(stored) and not math.isinf(value):
                return value
            return stored
    return value


def _uuid_text(values: list[Any]) -> list[Any]:
    out = []
    for v in values:
        if v is not None and type(v) is not uuid.UUID:
            # A str would read back as a UUID after resume, and miss as a key.
            if isinstance(v, bytes) and len(v) == 16:
                raise Refused("write uuid.UUID(bytes=...), not the 16 bytes")
            raise Refused(f"write uuid.UUID({str(v)!r}), not {type(v).__name__}")
        out.append(None if v is None else str(v))
    return out


def _lone_surrogate(char: str) -> str:
    return (
        f"it holds {char!r}, a lone surrogate (a JSON escape of half a character, "
        "or bytes decoded with surrogateescape), which UTF-8 cannot store: "
        "replace it, e.g. text.encode(errors='replace').decode()"
    )


def _json_text(values: list[Any]) -> list[Any]:
    out: list[str | None] = []
    for v in values:
        if v is None:
            out.append(None)
            continue
        if type(v) is str and v[:1] in ("{", "[") and _is_json(v):
            # A JSON string holding a document: surely meant as the document.
            raise Refused("a JSON text would be stored as one string: write json.loads(text)")
        try:
            text = json.dumps(v, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise Refused(f"not JSON: {exc}") from None
        # What would not read back equal after a resume: a tuple (a list then),
        # a key that is not a string (a string then).
        if type(v) in (dict, list, tuple) and json.loads(text) != v:
            raise Refused("it would not read back the same: write lists and string keys")
        if "\\ud" in text:  # a surrogate escape: a pair (an emoji), or half of one
            try:  # which DuckDB's JSON refuses, failing the flush with no row named
                json.dumps(v, ensure_ascii=False).encode()
            except UnicodeEncodeError as exc:
                raise Refused(_lone_surrogate(exc.object[exc.start : exc.start + 1])) from None
        out.append(text)
    return out


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def _timedelta(value: Any) -> dt.timedelta:
    # DuckDB hands an INTERVAL to Arrow as months, days and nanoseconds.
    return dt.timedelta(days=30 * value.months + value.days, microseconds=value.nanoseconds // 1000)


_SCALARS: Final[dict[str, ColumnType]] = {
    "VARCHAR": ColumnType("VARCHAR", pa.string()),
    "BIGINT": ColumnType("BIGINT", pa.int64()),
    "INTEGER": ColumnType("INTEGER", pa.int32()),
    "SMALLINT": ColumnType("SMALLINT", pa.int16()),
    "DOUBLE": ColumnType("DOUBLE", pa.float64()),
    "REAL": ColumnType("REAL", pa.float32()),
    "BOOLEAN": ColumnType("BOOLEAN", pa.bool_()),
    "TIMESTAMPTZ": ColumnType("TIMESTAMPTZ", pa.timestamp("us", tz="UTC")),
    "TIMESTAMP": ColumnType("TIMESTAMP", pa.timestamp("us")),
    "DATE": ColumnType("DATE", pa.date32()),
    "TIME": ColumnType("TIME", pa.time64("us")),
    "INTERVAL": ColumnType("INTERVAL", pa.duration("us"), decode=_timedelta),
    "BLOB": ColumnType("BLOB", pa.binary()),
    "UUID": ColumnType("UUID", pa.string(), _uuid_text, uuid.UUID),
    "JSON": ColumnType("JSON", pa.string(), _json_text, json.loads),
}
_ALIASES: Final[dict[str, str]] = {
    "TEXT": "VARCHAR",
    "STRING": "VARCHAR",
    "INT8": "BIGINT",
    "LONG": "BIGINT",
    "INT": "INTEGER",
    "INT4": "INTEGER",
    "INT2": "SMALLINT",
    "FLOAT8": "DOUBLE",
    # DuckDB's FLOAT is a float32; Python's float and Postgres's FLOAT are doubles, and
    # a float32 would silently round what a handler writes (16777217.0 → 16777216.0).
    "FLOAT": "DOUBLE",
    "DOUBLE PRECISION": "DOUBLE",
    "FLOAT4": "REAL",
    "BOOL": "BOOLEAN",
    "TIMESTAMP WITH TIME ZONE": "TIMESTAMPTZ",
    "TIMESTAMP WITHOUT TIME ZONE": "TIMESTAMP",
    "JSONB": "JSON",
    "BYTEA": "BLOB",
}
_PYTHON: Final[dict[object, str]] = {
    str: "VARCHAR",
    int: "BIGINT",
    float: "DOUBLE",
    bool: "BOOLEAN",
    dt.datetime: "TIMESTAMPTZ",
    dt.date: "DATE",
    dt.time: "TIME",
    dt.timedelta: "INTERVAL",
    uuid.UUID: "UUID",
    bytes: "BLOB",
    dict: "JSON",
    list: "JSON",
}
_DECIMAL = re.compile(r"^(?:DECIMAL|NUMERIC)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?$")
_UNSUPPORTED = (
    "use a Python type (str, int, float, bool, Decimal, datetime, date, time, timedelta, "
    "UUID, bytes, dict, list[str] ...) or a DuckDB type (VARCHAR, BIGINT, INTEGER, SMALLINT, "
    "DOUBLE, REAL, BOOLEAN, DECIMAL(p,s), TIMESTAMPTZ, TIMESTAMP, DATE, TIME, INTERVAL, UUID, "
    "JSON, BLOB, or T[] of a scalar T)"
)


def _decimal(precision: int, scale: int) -> ColumnType:
    if not 1 <= precision <= 38 or scale > precision:
        raise ProjectionError(
            f"DECIMAL({precision},{scale}): precision must be 1 to 38 and scale at most precision"
        )
    return ColumnType(f"DECIMAL({precision},{scale})", pa.decimal128(precision, scale))


def column_type(spec: object) -> ColumnType:
    """The :class:`ColumnType` a column declared as ``spec`` has.

    ``Decimal`` and a bare ``"DECIMAL"`` are DuckDB's default, DECIMAL(18,3);
    ``dict`` and ``list`` are JSON; ``list[T]`` and ``"T[]"`` are lists of a
    scalar type.
    """
    if spec is Decimal:
        return _decimal(18, 3)
    origin, args = typing.get_origin(spec), typing.get_args(spec)
    if origin is list and len(args) == 1:  # list[str], typing.List[str]
        return _list(column_type(args[0]), spec)
    if origin in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        # int | None, Optional[int]: every column is nullable; the type is the other one.
        return column_type(next(a for a in args if a is not type(None)))
    if isinstance(spec, str):
        name = " ".join(spec.upper().split())
        if name.endswith("[]"):
            return _list(column_type(name[:-2].strip()), spec)
        if (match := _DECIMAL.match(name)) is not None:
            precision, scale = match.groups()
            return _decimal(int(precision or 18), int(scale or (3 if precision is None else 0)))
        found = _SCALARS.get(_ALIASES.get(name, name))
    else:
        found = _SCALARS.get(_PYTHON.get(spec, ""))
    if found is None:
        raise ProjectionError(f"unsupported column type {spec!r}; {_UNSUPPORTED}")
    return found


def _list(item: ColumnType, spec: object) -> ColumnType:
    if item.encode is not None or item.decode is not None or item.sql.endswith("[]"):
        raise ProjectionError(
            f"unsupported column type {spec!r}: a list of {item.sql} (declare it JSON instead)"
        )
    return ColumnType(f"{item.sql}[]", pa.list_(item.arrow))
