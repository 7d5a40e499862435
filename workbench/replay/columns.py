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
import json
import math
import re
import struct
import types
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


_WHOLE = frozenset({int, type(None)})


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
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            if not pa.types.is_decimal(typ) or isinstance(exc, Refused):
                raise
            if any(isinstance(v, float) for v in values):
                raise Refused("write a Decimal: a float is inexact") from None
            if isinstance(exc, pa.ArrowInvalid):  # too many places or digits
                raise Refused(f"it does not fit {self.sql} without a loss") from None
            raise
        if pa.types.is_integer(typ) and not set(map(type, values)) <= _WHOLE:  # one C pass
            for v in values:
                if (isinstance(v, float) and not v.is_integer()) or (
                    isinstance(v, Decimal) and v != v.to_integral_value()
                ):
                    raise Refused(f"{v!r} would be truncated to an integer")
        elif pa.types.is_date(typ) and any(isinstance(v, dt.datetime) for v in values):
            raise Refused("a datetime into a DATE column would drop its time")
        return array

    @property
    def normalises(self) -> bool:
        """Whether a stored value may differ from the handler's: a DECIMAL keeps its scale
        (``Decimal("1.5")`` reads back ``Decimal("1.50")``), a REAL a float32's digits.

        >>> column_type("DECIMAL(12,2)").normalises, column_type("REAL[]").normalises
        (True, True)
        >>> column_type(float).normalises
        False
        """
        typ = self.arrow.value_type if pa.types.is_list(self.arrow) else self.arrow
        return pa.types.is_decimal(typ) or pa.types.is_float32(typ)

    @property
    def normalise(self) -> Callable[[Any], Any] | None:
        """Turns a handler's value into the value it reads back as once stored, where
        those may differ: a DECIMAL keeps its scale, a REAL a float32's digits.

        A handler sees the normalised value at once, so a run that resumed from
        stored rows and one that did not hold the same values.

        >>> from decimal import Decimal
        >>> column_type("DECIMAL(12,2)").normalise(Decimal("1.5"))
        Decimal('1.50')
        >>> column_type("REAL[]").normalise([0.1])
        [0.10000000149011612]
        >>> column_type(float).normalise is None
        True
        """
        typ = self.arrow.value_type if pa.types.is_list(self.arrow) else self.arrow
        if pa.types.is_decimal(typ):
            one = _decimal_normaliser(Decimal(1).scaleb(-typ.scale))
        elif pa.types.is_float32(typ):
            one = _real
        else:
            return None
        if typ is self.arrow:
            return one
        return lambda values: [one(v) for v in values] if isinstance(values, list) else values

    def certainly_stores(self) -> Callable[[Any], bool]:
        """A quick test of one value: True when the column stores it for certain, False
        when only :meth:`array` can tell (what dead-letter mode checks each write with).

        >>> ints = column_type(int).certainly_stores()
        >>> ints(3), ints(None), ints(2**70), ints(3.0), ints(True)
        (True, True, False, False, False)
        >>> column_type(dt.datetime).certainly_stores()(dt.datetime(2024, 5, 1))
        False
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
            return lambda v: v is None or type(v) is float or type(v) is int
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
        return _none

    def decode_all(self, values: list[Any]) -> list[Any]:
        """Stored values read back (None stays None) as the handler wrote them."""
        decode = self.decode
        if decode is None:
            return values
        return [None if v is None else decode(v) for v in values]


def _none(value: Any) -> bool:
    return value is None


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
            raise Refused(f"write uuid.UUID({str(v)!r}), not {type(v).__name__}")
        out.append(None if v is None else str(v))
    return out


def _json_text(values: list[Any]) -> list[Any]:
    out: list[str | None] = []
    for v in values:
        if v is None:
            out.append(None)
            continue
        try:
            text = json.dumps(v, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise Refused(f"not JSON: {exc}") from None
        # What would not read back equal after a resume: a tuple (a list then),
        # a key that is not a string (a string then).
        if type(v) in (dict, list, tuple) and json.loads(text) != v:
            raise Refused("it would not read back the same: write lists and string keys")
        out.append(text)
    return out


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
    "FLOAT": "REAL",
    "FLOAT4": "REAL",
    "BOOL": "BOOLEAN",
    "TIMESTAMP WITH TIME ZONE": "TIMESTAMPTZ",
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
    if isinstance(spec, types.GenericAlias) and spec.__origin__ is list and len(spec.__args__) == 1:
        return _list(column_type(spec.__args__[0]), spec)
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
