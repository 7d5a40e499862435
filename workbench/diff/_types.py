"""Safe casts: how two sides' column types are brought to one type before comparing.

The rules, in order:

- the same type on both sides is compared as is;
- two exact numbers (integers, DECIMALs) are compared exactly: integers as
  their common type (INTEGER vs BIGINT as BIGINT), with a DECIMAL in a
  DECIMAL(38,s) of the larger scale; a candidate's float at the live
  column's precision, as that column would store it: against a DECIMAL(p,s)
  rounded to s places as Postgres rounds into a numeric, against an integer
  to 0 places (said in the type line), a DOUBLE against a REAL as REAL; an
  exact candidate against a live float as that float (3 is not 3.4, and
  float noise, 0.1 + 0.2 against 0.3, is a difference without a
  tolerance); a value the compared type cannot hold (NaN in a DECIMAL) is a
  difference;
- two timestamp types of different precision or time zone are compared as
  UTC ``TIMESTAMP`` truncated to the coarser precision (a nanosecond clock
  against a microsecond database agrees when the microseconds agree);
- JSON (a Postgres ``jsonb`` column, say) against JSON, text, a STRUCT, a MAP
  or a list is compared by meaning: both sides as canonical JSON (keys sorted,
  no spaces), since Postgres reorders keys and spaces them its own way; a list
  of JSON (``jsonb[]``) element by element alike;
- a list of text (Postgres ``numeric[]`` comes so) against a list of numbers
  or times is cast to that list's type;
- text against a number, a time or a UUID is compared after ``TRY_CAST`` of
  the text (against a float, both at the float's 15 significant digits, as
  Postgres writes a float into a ``numeric``, which comes as text when it has
  no scale or more than 18 digits); text that does not cast counts as changed, never as NULL = NULL,
  and neither does text with more decimal places than a DECIMAL holds (a
  Postgres ``numeric`` without a scale comes as text);
- a BOOLEAN against an integer (a 0/1 flag) as an integer, true as 1;
- anything else is compared as text.

>>> import duckdb
>>> con = duckdb.connect()
>>> plan_column(con, "n", "INTEGER", "BIGINT").compared_as
'BIGINT'
>>> plan_column(con, "t", "TIMESTAMP_NS", "TIMESTAMP WITH TIME ZONE").candidate_expr
'make_timestamp((epoch_ns("t") - (epoch_ns("t") % 1000 + 1000) % 1000) // 1000)'
>>> plan_column(con, "x", "VARCHAR", "DECIMAL(18,2)").checked_cast
True
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal

import duckdb
import pyarrow as pa

from workbench._sql import ident

__all__ = ["CANONICAL_JSON", "ColumnPlan", "is_numeric", "plan_column", "register_functions"]

#: The SQL function :func:`register_functions` adds: JSON text in canonical form.
CANONICAL_JSON = "_wb_canonical_json"


def register_functions(con: duckdb.DuckDBPyConnection) -> None:
    """Add the functions comparison plans use to ``con``."""
    con.create_function(  # type: ignore[call-overload]  # the stubs want an enum; "arrow" works
        CANONICAL_JSON, _canonical_json, ["VARCHAR"], "VARCHAR", type="arrow", side_effects=False
    )


def _canonical_json(texts: pa.Array) -> pa.Array:
    """Each JSON text with its keys sorted and no spaces; text that is not JSON as it is.

    Numbers compare as Postgres's ``jsonb`` does, by exact value: ``10`` and
    ``10.00`` are equal, ``0.1`` and ``0.10000000000000000001`` are not.

    >>> _canonical_json(pa.array(['{"b": 1, "a": [1, 2.50]}', None, "not json"])).to_pylist()
    ['{"a":[1,2.5],"b":1}', None, 'not json']
    >>> _canonical_json(pa.array(['{"n": 10.00}', '{"n": 1e1}', '{"n": "10"}'])).to_pylist()
    ['{"n":10}', '{"n":10}', '{"n":"10"}']
    """

    def canonical(text: str | None) -> str | None:
        if text is None:
            return None
        try:
            # Fast, in C: json's own parser and writer, where floats write as the slow
            # path would (see _plain_float); else exact, by way of Decimal.
            return _FAST_CANONICAL(json.loads(text, parse_float=_plain_float))
        except _NotPlain:
            pass
        except (ValueError, RecursionError):
            return text
        try:
            return _canonical(json.loads(text, parse_float=Decimal, parse_int=Decimal))
        except (ValueError, RecursionError):
            return text

    return pa.array([canonical(t) for t in texts.to_pylist()], pa.string())


class _NotPlain(Exception):
    """A JSON number the fast path would not write as :func:`_canonical` does."""


_FAST_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


def _plain_float(token: str) -> float | int:
    """A JSON number with a fraction, as the fast path writes it the way :func:`_canonical`
    does: a whole one as an int (``10.00`` is ``10``), another as the float whose
    shortest text is the number itself (``2.50`` is ``2.5``). Any other (more digits
    than a float keeps, an exponent) raises :class:`_NotPlain`: the exact path takes it.

    >>> _plain_float("10.00"), _plain_float("-2.50"), _plain_float("12.345678901234567")
    (10, -2.5, 12.345678901234567)
    >>> _plain_float("0.10000000000000000001")
    Traceback (most recent call last):
    ...
    workbench.diff._types._NotPlain
    """
    whole, _, fraction = token.partition(".")
    if "e" in token or "E" in token:
        raise _NotPlain
    fraction = fraction.rstrip("0")
    if not fraction:
        return int(whole)
    value = float(token)
    if repr(value) != f"{whole}.{fraction}":
        raise _NotPlain
    return value


def _canonical(value: object) -> str:
    # json.dumps cannot write a Decimal as a number: the containers are written here.
    if isinstance(value, dict):
        items = sorted(value.items())
        return "{" + ",".join(f"{json.dumps(k)}:{_canonical(v)}" for k, v in items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_canonical(v) for v in value) + "]"
    if isinstance(value, Decimal) and value.is_finite():
        text = format(value, "f")  # exact: normalize() would round to 28 digits
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return "0" if text in ("-0", "0") else text
    return json.dumps(value)


_NUMERIC = re.compile(
    r"^(U?(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT)|FLOAT|DOUBLE|REAL|DECIMAL\(\d+,\s*\d+\))$"
)
_TEXT = {"VARCHAR", "JSON"}
_TEXT_LISTS = {"VARCHAR[]", "JSON[]"}
# Precision rank of each timestamp type; TIMESTAMP WITH TIME ZONE holds microseconds.
_TIMESTAMP_RANK = {
    "TIMESTAMP_S": 0,
    "TIMESTAMP_MS": 1,
    "TIMESTAMP": 2,
    "TIMESTAMP WITH TIME ZONE": 2,
    "TIMESTAMP_NS": 3,
    "TIMESTAMPTZ_NS": 3,
}
_TRUNCATE_TO = {0: "second", 1: "millisecond"}


def is_numeric(duckdb_type: str) -> bool:
    """Whether a DuckDB type name is a number (so tolerances and differences apply)."""
    return bool(_NUMERIC.match(duckdb_type))


def _is_temporal(duckdb_type: str) -> bool:
    return duckdb_type in _TIMESTAMP_RANK or duckdb_type == "DATE"


@dataclass(frozen=True)
class ColumnPlan:
    """How one column is compared: the type it is compared as and each side's expression."""

    name: str
    candidate_type: str
    live_type: str
    compared_as: str
    candidate_expr: str
    live_expr: str
    checked_cast: bool = False
    #: How the comparison treats the values, when the type does not say it all.
    how: str = ""

    @property
    def type_changed(self) -> bool:
        return self.candidate_type != self.live_type

    @property
    def numeric(self) -> bool:
        return is_numeric(self.compared_as)


def _timestamp_expr(column: str, duckdb_type: str, coarsest: int) -> str:
    if duckdb_type in ("TIMESTAMP_NS", "TIMESTAMPTZ_NS"):
        # A plain cast rounds; truncation keeps "equal at the coarser precision". Down, to
        # the microsecond at or before: // cuts toward zero, which is up before 1970.
        ns = f"epoch_ns({column})"
        expr = f"make_timestamp(({ns} - ({ns} % 1000 + 1000) % 1000) // 1000)"
    else:
        expr = f"CAST({column} AS TIMESTAMP)"
    if coarsest in _TRUNCATE_TO:
        expr = f"date_trunc('{_TRUNCATE_TO[coarsest]}', {expr})"
    return expr


_DECIMAL = re.compile(r"^DECIMAL\((\d+),\s*(\d+)\)$")
_INTEGERS = frozenset(
    {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER"}
    | {"UBIGINT", "UHUGEINT"}
)
_FLOATS = {"FLOAT": 0, "REAL": 0, "DOUBLE": 1}  # rank: FLOAT (REAL) holds fewer digits
#: Significant digits a float keeps through decimal text (C's FLT_DIG, DBL_DIG), as
#: Postgres's float4_numeric and float8_numeric write it.
_DIGITS = {"FLOAT": 6, "REAL": 6, "DOUBLE": 15}


def _numeric_plan(
    con: duckdb.DuckDBPyConnection, name: str, candidate_type: str, live_type: str
) -> ColumnPlan:
    """Two numbers: exact ones compared exactly, a candidate's float at the live precision.

    Integers and DECIMALs are compared exactly, in a DECIMAL with the larger
    scale (DuckDB's common type of DECIMAL(38,10) and DECIMAL(38,2) would
    round the first to 2 places). A candidate's float against a live
    DECIMAL(p,s) is rounded to s places as Postgres rounds into a numeric (a
    handler summing money in floats is right when the cents agree), against
    a live integer to 0 places, half to even as Postgres and DuckDB store a
    float in an integer column (a BIGINT beyond 2^53 is not "equal" to the
    nearest double), and a DOUBLE against a REAL is compared as REAL. An
    exact candidate against a live float is compared as that float, as the
    live column would store it: rounding the live float instead would make
    3 equal 3.4. A value the compared type cannot hold (NaN in a DECIMAL,
    1e39 in a REAL) is a difference.

    >>> import duckdb
    >>> plan = _numeric_plan(duckdb.connect(), "n", "DOUBLE", "BIGINT")
    >>> plan.compared_as, plan.how
    ('DECIMAL(38,0)', "the candidate's float rounded to the live column's 0 decimal places")
    >>> plan = _numeric_plan(duckdb.connect(), "n", "BIGINT", "DOUBLE")
    >>> plan.compared_as, plan.how
    ('DOUBLE', "the candidate's value as a DOUBLE, as the live column stores it")
    >>> _numeric_plan(duckdb.connect(), "n", "DECIMAL(18,2)", "DECIMAL(18,4)").how
    ''
    """
    col = ident(name)
    types = (candidate_type, live_type)
    floats = [t for t in types if t in _FLOATS]
    scales = [int(m[2]) if (m := _DECIMAL.match(t)) else 0 for t in types if t not in _FLOATS]
    if len(floats) == 2:
        common = min(floats, key=_FLOATS.__getitem__)
        cast = f"TRY_CAST({col} AS {common})"
        return ColumnPlan(name, *types, common, cast, cast, checked_cast=True)
    if not floats and not any(_DECIMAL.match(t) for t in types):
        # Two integer types: their common type holds both exactly (INTEGER vs BIGINT as BIGINT).
        common = con.execute(
            f"select typeof(coalesce(NULL::{candidate_type}, NULL::{live_type}))"
        ).fetchall()[0][0]
        if common not in _INTEGERS:
            # UHUGEINT against a signed type: DuckDB's common type is a DOUBLE, which
            # rounds; an integer's decimal text is canonical, so equal text is equal value.
            common = "VARCHAR"
        cast = f"CAST({col} AS {common})"
        return ColumnPlan(name, *types, common, cast, cast)
    if floats and live_type in _FLOATS:  # an exact candidate against a live float
        # As the live column would store the candidate's value: 3 is not 3.4, and
        # 1000001 is not 1000000 in a REAL, which holds both apart.
        how = f"the candidate's value as a {live_type}, as the live column stores it"
        candidate_expr = f"TRY_CAST({col} AS {live_type})"
        return ColumnPlan(name, *types, live_type, candidate_expr, col, checked_cast=True, how=how)
    common = f"DECIMAL(38,{max(scales)})"
    how = (
        f"the candidate's float rounded to the live column's {max(scales)} decimal places"
        if floats
        else ""
    )
    # A float goes into a numeric as Postgres takes it (float8_numeric): through its
    # text at 15 significant digits, then rounded half away from zero. The float sum
    # 0.01 + 0.075 is 0.08499999999999999, 0.085 at 15 digits, 0.09 in a numeric(12,2).
    # Into an integer column it goes as Postgres's float8 -> int8 (and DuckDB's cast) takes
    # it: rounded half to even, 2.5 to 2.
    to_integer = live_type in _INTEGERS
    candidate_expr, live_expr = (
        (
            f"TRY_CAST(round_even({col}, 0) AS {common})"
            if to_integer
            else f"TRY_CAST(printf('%.15g', {col}) AS {common})"
        )
        if t in _FLOATS
        else f"TRY_CAST({col} AS {common})"
        for t in types
    )
    return ColumnPlan(name, *types, common, candidate_expr, live_expr, checked_cast=True, how=how)


def _is_nested(duckdb_type: str) -> bool:
    return duckdb_type.startswith(("STRUCT", "MAP")) or duckdb_type.endswith("]")


def plan_column(
    con: duckdb.DuckDBPyConnection, name: str, candidate_type: str, live_type: str
) -> ColumnPlan:
    """The comparison plan of column ``name`` given each side's DuckDB type."""
    col = ident(name)
    if "JSON" in (candidate_type, live_type) and {candidate_type, live_type} <= _TEXT:
        canonical = f"{CANONICAL_JSON}(CAST({col} AS VARCHAR))"
        return ColumnPlan(name, candidate_type, live_type, "JSON", canonical, canonical)
    if "JSON" in (candidate_type, live_type) and any(map(_is_nested, (candidate_type, live_type))):
        # A STRUCT, MAP or list (a projection's nested column) against jsonb: as JSON,
        # by meaning; as text, {'a': 1} never equalled {"a": 1}.
        candidate, live = (
            f"{CANONICAL_JSON}(CAST(to_json({col}) AS VARCHAR))"
            if _is_nested(t)
            else f"{CANONICAL_JSON}(CAST({col} AS VARCHAR))"
            for t in (candidate_type, live_type)
        )
        return ColumnPlan(name, candidate_type, live_type, "JSON", candidate, live)
    if "JSON[]" in (candidate_type, live_type) and {candidate_type, live_type} <= _TEXT_LISTS:
        # A list of JSON (jsonb[]; or text[], as it may come) by meaning, each element as a
        # JSON column is: Postgres spaces and orders each its own way.
        each = f"list_transform({col}, lambda x: {CANONICAL_JSON}(CAST(x AS VARCHAR)))"
        return ColumnPlan(name, candidate_type, live_type, "JSON[]", each, each)
    for text, other in ((candidate_type, live_type), (live_type, candidate_type)):
        # numeric[] (and others) comes as text[]: cast to the typed list it is against.
        element = other[:-2] if other.endswith("[]") else ""
        if text == "VARCHAR[]" and (is_numeric(element) or _is_temporal(element)):
            cast = f"TRY_CAST({col} AS {other})"
            exprs = (cast, col) if text == candidate_type else (col, cast)
            return ColumnPlan(name, candidate_type, live_type, other, *exprs, checked_cast=True)
    if candidate_type == live_type:
        return ColumnPlan(name, candidate_type, live_type, candidate_type, col, col)
    if is_numeric(candidate_type) and is_numeric(live_type):
        return _numeric_plan(con, name, candidate_type, live_type)
    if {candidate_type, live_type} & {"BOOLEAN"} and {candidate_type, live_type} & _INTEGERS:
        # A flag kept as 0/1 (a smallint, MySQL's tinyint(1)): true is 1, false 0, and
        # any other number differs from both.
        cast = f"CAST({col} AS HUGEINT)"
        return ColumnPlan(name, candidate_type, live_type, "HUGEINT", cast, cast)
    if {candidate_type, live_type} == {"BLOB", "UUID"}:
        # A UUID read without its Arrow type (pl.read_database_uri with ADBC, pyarrow's
        # fixed-size binary) is its 16 bytes: as a UUID, not as text matching nothing.
        # A blob of a UUID's text (Parquet bytes without a UTF8 annotation) reads as text.
        as_uuid = (
            f"coalesce(TRY_CAST(CASE WHEN octet_length({col}) = 16 THEN hex({col}) END AS UUID), "
            f"TRY_CAST(CAST({col} AS VARCHAR) AS UUID))"
        )
        exprs = (as_uuid, col) if candidate_type == "BLOB" else (col, as_uuid)
        return ColumnPlan(
            name,
            candidate_type,
            live_type,
            "UUID",
            *exprs,
            checked_cast=True,
            how="bytes read as a UUID",
        )
    if _is_temporal(candidate_type) and _is_temporal(live_type):
        ranks = [_TIMESTAMP_RANK.get(t, 0) for t in (candidate_type, live_type)]
        coarsest = min(ranks)
        if "DATE" in (candidate_type, live_type):
            coarsest = 0
        return ColumnPlan(
            name,
            candidate_type,
            live_type,
            "TIMESTAMP",
            _timestamp_expr(col, candidate_type, coarsest),
            _timestamp_expr(col, live_type, coarsest),
        )
    for text, other, text_is_candidate in (
        (candidate_type, live_type, True),
        (live_type, candidate_type, False),
    ):
        # A UUID given as text (any case, as .NET writes GUIDs) is compared as a UUID, an
        # interval (a snapshot holds it as text) as an interval.
        if text in _TEXT and (
            is_numeric(other) or _is_temporal(other) or other in ("UUID", "INTERVAL")
        ):
            cast = f"TRY_CAST({col} AS {other})"
            if other in _FLOATS:
                # A float against text (a Postgres numeric without a scale, or wider
                # than 18 digits, comes as text): both at the float's significant
                # digits, as Postgres turns a float into a numeric (0.1 + 0.2 is 0.3).
                digits = _DIGITS[other]
                exprs = (
                    f"TRY_CAST(printf('%.{digits}g', {cast}) AS {other})",
                    f"TRY_CAST(printf('%.{digits}g', {col}) AS {other})",
                )
                if not text_is_candidate:
                    exprs = exprs[::-1]
                return ColumnPlan(name, candidate_type, live_type, other, *exprs, checked_cast=True)
            decimal = _DECIMAL.match(other)
            scale = decimal[2] if decimal else "0" if other in _INTEGERS else None
            if scale is not None:
                # A cast rounds '0.1234567891' into DECIMAL(38,9), and '1.5' into a
                # BIGINT: text with more places than the type holds (trailing zeros
                # aside) does not cast, nor an exponent form ('1.5e-10') whose value
                # the cast changes.
                places = f"length(regexp_extract({col}, '\\.(\\d*[1-9])', 1))"
                kept = f"TRY_CAST({cast} AS DOUBLE) = TRY_CAST({col} AS DOUBLE)"
                exact = (
                    f"CASE WHEN regexp_matches({col}, '[eE]') THEN {kept} "
                    f"ELSE {places} <= {scale} END"
                )
                cast = f"CASE WHEN {exact} THEN {cast} END"
            exprs = (cast, col) if text_is_candidate else (col, cast)
            return ColumnPlan(name, candidate_type, live_type, other, *exprs, checked_cast=True)
    text_cast = f"CAST({col} AS VARCHAR)"
    return ColumnPlan(name, candidate_type, live_type, "VARCHAR", text_cast, text_cast)
