"""Reading a whole Postgres table into Arrow, exactly, in one binary COPY.

Used for read-model snapshots and for the live side of a diff, so both see
the same types. ADBC hands ``numeric`` over as text; a ``numeric(p, s)``
with ``p <= 18`` is therefore read as its scaled ``bigint`` and rebuilt as
``decimal128(p, s)`` here, digit for digit. Other ``numeric`` columns and
types ADBC does not know stay text.

Timestamps and dates come over as integers computed in Postgres, because
ADBC's conversion overflows on ``infinity`` (a common "valid until") and
wrote it as a date in 290279 BC; ``±infinity`` become the values DuckDB
reads as ``±infinity``. An ``interval`` (no Parquet type holds one) is
read as text in the three parts Postgres keeps, ``-3 months 4 days 7200000000
microseconds``, which DuckDB casts back to the same interval. ADBC flattens a
multi-dimensional array into one list; an array column that holds one is
read as Postgres writes it, ``{{1,2},{3,4}}``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from workbench.sources.postgres._connection import (
    fetch_all,
    quote_ident,
    quote_table,
    source_error,
    table_columns,
)

__all__ = ["CASE_INSENSITIVE", "case_insensitive_columns", "read_table"]

#: Arrow schema metadata key (kept by snapshots) naming a table's ``citext`` columns,
#: comma-separated.
CASE_INSENSITIVE = "workbench.case_insensitive"


def case_insensitive_columns(schema: pa.Schema) -> list[str]:
    """The columns :data:`CASE_INSENSITIVE` names in ``schema``'s metadata.

    >>> case_insensitive_columns(pa.schema([]).with_metadata({CASE_INSENSITIVE: "email,nick"}))
    ['email', 'nick']
    """
    value = (schema.metadata or {}).get(CASE_INSENSITIVE.encode())
    return value.decode().split(",") if value else []


# A domain (`create domain valid_until as timestamptz`) is read as its base type: its
# ±infinity wrapped around to 290279 BC as the domain's own name matched no time type.
_COLUMNS_SQL = (
    "select a.attname, case when t.typtype = 'd' then t.typtypmod else a.atttypmod end, "
    "coalesce(b.typname, t.typname), coalesce(b.typcategory, t.typcategory) = 'A' "
    "from pg_attribute a join pg_type t on t.oid = a.atttypid "
    "left join pg_type b on t.typtype = 'd' and b.oid = t.typbasetype "
    "where a.attrelid = $1::regclass and a.attnum > 0 and not a.attisdropped order by a.attnum"
)


def _column_types(con: Any, table: str) -> list[tuple[str, int, str, bool]]:
    """``(name, typmod, type name, is an array)`` of each column of ``table``."""
    table_columns(con, table)  # a missing or unreadable table: one clear line
    schema, name, quoted = quote_table(table)
    return fetch_all(con, _COLUMNS_SQL, f"reading the columns of {schema}.{name}", [quoted])


def read_table(con: Any, table: str) -> pa.Table:
    """Every row of ``table`` (``schema.table`` or ``table``) as Arrow, on connection ``con``.

    Runs inside whatever transaction ``con`` has open, so a snapshot can
    read the rows and the event-store position from one database snapshot.
    """
    schema, name, quoted = quote_table(table)
    columns = _column_types(con, table)
    opaque = _opaque_columns(con, quoted, f"{schema}.{name}")
    # trim_scale came with Postgres 13.
    version = "select current_setting('server_version_num')::int >= 130000"
    trims = fetch_all(con, version, "reading the server version")[0][0]
    select: list[str] = []
    # What no Arrow value of the column's type holds (NaN, ±Infinity) comes beside it
    # as text, selected after every column and read back by position.
    specials: list[str] = []
    restore: list[tuple[int, pa.DataType | None]] = []  # column position, its type
    flags: list[str] = []  # per array column: does it hold a multi-dimensional one?
    for i, (column, typmod, typname, is_array) in enumerate(columns):
        # Postgres packs numeric(p, s) as ((p << 16) | s) + 4, s an 11-bit signed number.
        precision = ((typmod - 4) >> 16) & 0xFFFF
        scale = (((typmod - 4) & 0x7FF) ^ 1024) - 1024
        q = quote_ident(column)
        if typname == "numeric" and typmod >= 0 and precision <= 18 and scale >= 0:
            # Exact, by way of int8. NaN and ±Infinity (no decimal holds them; NaN
            # compares above every number) come beside it as text.
            inside = f"abs({q}) < 1e{precision - scale}::numeric"
            select.append(f"case when {inside} then ({q} * 1e{scale}::numeric)::int8 end as {q}")
            specials.append(f"case when not {inside} then {q}::text end as _wb_{len(specials)}")
            restore.append((i, pa.decimal128(precision, scale)))
        elif typname == "numeric" and not is_array and trims:
            # Wider or unscaled: text, exact. Its scale trimmed, so 1.50 and 1.5 (equal
            # in Postgres) read alike; a second store's copy printed 1.500, say.
            select.append(f"trim_scale({q}) as {q}")
        elif typname == "money":  # ADBC hands over the cents as an integer
            select.append(f"{q}::numeric as {q}")
        elif typname == "bpchar":  # char(n): compared without its padding, as Postgres does
            select.append(f"{q}::text as {q}")
        elif is_array and (typname.lstrip("_") in _AS_TEXT or column in opaque):
            # An array of such a type: a list of each element's text ('{Ann,Bob}' as one
            # text would differ from every list); a multi-dimensional one as its text.
            flag = f"_wb_flags_ndims_{len(flags)}"
            flags.append(f"coalesce(bool_or(array_ndims({q}) > 1), false) as {flag}")
            texts = (
                f"array(select case when e is not null then format('%s', e) end "
                f"from unnest({q}) with ordinality u(e, n) order by n)"
            )
            select.append(
                f"case when {q} is not null and not _wb_flags.{flag} then {texts} end as {q}"
            )
            specials.append(f"case when _wb_flags.{flag} then {q}::text end as _wb_{len(specials)}")
            restore.append((i, None))
        elif typname.lstrip("_") in _AS_TEXT or column in opaque:
            # Types ADBC passes as opaque wire bytes: as Postgres writes them instead
            # (its output function: inet '10.0.0.1', where ::text adds the /32).
            select.append(f"case when {q} is not null then format('%s', {q}) end as {q}")
        elif typname in _TIMES:
            # ADBC reads times natively, but wraps ±infinity around to nonsense.
            select.append(f"case when isfinite({q}) then {q} end as {q}")
            specials.append(
                f"case when not isfinite({q}) then {q}::text end as _wb_{len(specials)}"
            )
            restore.append((i, _TIMES[typname]))
        elif typname == "interval":
            select.append(_INTERVAL.format(q=q))
        elif is_array:
            # ADBC flattens a multi-dimensional array into one list: a column holding
            # any is read as Postgres writes it, '{{1,2},{3,4}}' (one more scan finds them).
            # So is an array of times holding ±infinity, which ADBC wraps around.
            flag = f"_wb_flags_ndims_{len(flags)}"
            odd = f"array_ndims({q}) > 1"
            if typname.lstrip("_") in _TIMES:
                odd += f" or exists (select from unnest({q}) e where not isfinite(e))"
            flags.append(f"coalesce(bool_or({odd}), false) as {flag}")
            select.append(f"case when not _wb_flags.{flag} then {q} end as {q}")
            specials.append(f"case when _wb_flags.{flag} then {q}::text end as _wb_{len(specials)}")
            restore.append((i, None))
        else:
            select.append(q)
    source = quoted
    if flags:
        source += f", (select {', '.join(flags)} from {quoted}) _wb_flags"
    cur = con.cursor()
    try:
        cur.execute(f"select {', '.join(select + specials)} from {source}")
        arrow = cur.fetch_arrow_table()
    except Exception as exc:
        raise source_error(f"reading {schema}.{name}", exc) from None
    finally:
        cur.close()
    rows = _restore_specials(_plain(arrow), restore, len(columns))
    # Columns Postgres compares without case: a diff must too (see CASE_INSENSITIVE).
    citext = [column for column, _, typname, _ in columns if typname == "citext"]
    if citext:
        meta = dict(rows.schema.metadata or {})
        meta[CASE_INSENSITIVE.encode()] = ",".join(citext).encode()
        rows = rows.replace_schema_metadata(meta)
    return rows


def _opaque_columns(con: Any, quoted: str, label: str) -> set[str]:
    """Columns ADBC would pass as opaque bytes (an extension's type: citext, hstore, ltree,
    xid ...), found from the driver's own schema of the table (no rows read)."""
    cur = con.cursor()
    try:
        cur.execute(f"select * from {quoted} limit 0")
        fields = cur.fetch_arrow_table().schema
    except Exception as exc:
        raise source_error(f"reading {label}", exc) from None
    finally:
        cur.close()
    return {
        field.name
        for field in fields
        if isinstance(field.type, pa.OpaqueType)
        or (pa.types.is_list(field.type) and isinstance(field.type.value_type, pa.OpaqueType))
    }


#: Types (and arrays of them) ADBC passes as opaque bytes, read as Postgres's text.
_AS_TEXT = frozenset(
    {
        "inet", "cidr", "macaddr", "macaddr8", "timetz", "bit", "varbit", "xml", "pg_lsn",
        "tsvector", "tsquery", "point", "line", "lseg", "box", "path", "polygon", "circle",
        "int4range", "int8range", "numrange", "tsrange", "tstzrange", "daterange",
        "int4multirange", "int8multirange", "nummultirange", "tsmultirange",
        "tstzmultirange", "datemultirange",
    }
)  # fmt: skip

# ±infinity as DuckDB holds them: the largest integer of the type, and its negation.
_INFINITY = {64: 2**63 - 1, 32: 2**31 - 1}

_INTERVAL = (
    "(extract(year from {q}) * 12 + extract(month from {q}))::int8 || ' months ' || "
    "extract(day from {q})::int8 || ' days ' || ((extract(hour from {q}) * 3600 + "
    "extract(minute from {q}) * 60) * 1000000 + extract(microseconds from {q}))::int8 "
    "|| ' microseconds' as {q}"
)
_TIMES: dict[str, pa.DataType] = {
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "timestamp": pa.timestamp("us"),
    "date": pa.date32(),
}


def _plain(table: pa.Table) -> pa.Table:
    """Drop ADBC's extension types (opaque Postgres types) down to their storage."""
    fields, arrays = [], []
    for field, column in zip(table.schema, table.columns, strict=True):
        if isinstance(field.type, pa.ExtensionType):
            storage = field.type.storage_type
            column = pa.chunked_array([c.storage for c in column.chunks], type=storage)
            field = pa.field(field.name, storage)
        fields.append(field.remove_metadata())
        arrays.append(column)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _restore_specials(
    table: pa.Table, restore: list[tuple[int, pa.DataType | None]], width: int
) -> pa.Table:
    """Columns selected in a form Arrow holds back to their type, with their specials.

    The table's columns after the first ``width`` hold, one per entry of
    ``restore`` in order, the NaN or ±Infinity of rows whose value the type
    does not hold; those columns are dropped. A DECIMAL comes as a scaled
    ``int64``, exactly; one with a NaN or an infinity becomes text (as NULL
    they would equal a NULL). A time's ±infinity becomes DuckDB's (the
    largest integer of the type, and its negation). An array column (type
    ``None``) whose special column holds anything becomes that text.

    >>> t = pa.table({"amount": pa.array([12345, -5, None], pa.int64()),
    ...               "_wb_0": pa.array([None, None, None], pa.string())})
    >>> _restore_specials(t, [(0, pa.decimal128(10, 2))], 1)["amount"].to_pylist()
    [Decimal('123.45'), Decimal('-0.05'), None]
    >>> t = t.set_column(1, "_wb_0", pa.array([None, None, "NaN"]))
    >>> _restore_specials(t, [(0, pa.decimal128(10, 2))], 1).to_pydict()
    {'amount': ['123.45', '-0.05', 'NaN']}
    >>> d = pa.table({"d": pa.array([1, None, None], pa.date32()),
    ...               "_wb_0": pa.array([None, "infinity", "-infinity"])})
    >>> _restore_specials(d, [(0, pa.date32())], 1)["d"].cast(pa.int32()).to_pylist()
    [1, 2147483647, -2147483647]
    """
    for k, (i, typ) in enumerate(restore):
        special = table.column(width + k)
        if typ is None:  # an array column: its text, if it holds a multi-dimensional array
            if special.null_count < len(special):
                table = table.set_column(
                    i, pa.field(table.schema.field(i).name, special.type), special
                )
            continue
        if pa.types.is_decimal(typ):
            chunks = [_decimal_from_scaled(chunk, typ) for chunk in table.column(i).chunks]
            values = pa.chunked_array(chunks, type=typ)
            if special.null_count < len(special):
                values = pc.coalesce(values.cast(pa.string()), special)
        else:
            values = table.column(i).cast(typ)
            if special.null_count < len(special):
                ints = pa.int64() if typ.bit_width == 64 else pa.int32()
                infinity = _INFINITY[typ.bit_width]
                signed = pc.if_else(pc.equal(special, "-infinity"), -infinity, infinity)
                values = pc.coalesce(values.cast(ints), signed.cast(ints)).cast(typ)
        table = table.set_column(i, pa.field(table.schema.field(i).name, values.type), values)
    return table.select(range(width))


def _decimal_from_scaled(ints: pa.Array, typ: pa.Decimal128Type) -> pa.Array:
    # A decimal128 is its unscaled value as a little-endian int128: low word, then sign.
    low = ints.fill_null(0).to_numpy().astype("<i8")
    words = np.empty(2 * len(low), dtype="<i8")
    words[0::2] = low
    words[1::2] = low >> 63
    validity = ints.buffers()[0] if ints.null_count else None
    if validity is not None and ints.offset:
        validity = pa.array(ints.is_valid()).buffers()[1]
    return pa.Array.from_buffers(typ, len(ints), [validity, pa.py_buffer(words.tobytes())])
