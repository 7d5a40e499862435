"""Reading a whole Postgres table into Arrow, exactly, in one binary COPY.

Used for read-model snapshots and for the live side of a diff, so both see
the same types. ADBC hands ``numeric`` over as text; a ``numeric(p, s)``
with ``p <= 18`` is therefore read as its scaled ``bigint`` and rebuilt as
``decimal128(p, s)`` here, digit for digit. Other ``numeric`` columns and
types ADBC does not know stay text.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from workbench.sources.postgres._connection import fetch_all, quote_ident, quote_table, source_error

__all__ = ["read_table"]

_COLUMNS_SQL = (
    "select a.attname, a.atttypmod, t.typname from pg_attribute a "
    "join pg_type t on t.oid = a.atttypid "
    "where a.attrelid = $1::regclass and a.attnum > 0 and not a.attisdropped order by a.attnum"
)


def read_table(con: Any, table: str) -> pa.Table:
    """Every row of ``table`` (``schema.table`` or ``table``) as Arrow, on connection ``con``.

    Runs inside whatever transaction ``con`` has open, so a snapshot can
    read the rows and the event-store position from one database snapshot.
    """
    schema, name, quoted = quote_table(table)
    columns = fetch_all(con, _COLUMNS_SQL, f"reading the columns of {schema}.{name}", [quoted])
    select: list[str] = []
    decimals: dict[str, pa.Decimal128Type] = {}
    for column, typmod, typname in columns:
        # Postgres packs numeric(p, s) as ((p << 16) | s) + 4, s an 11-bit signed number.
        precision = ((typmod - 4) >> 16) & 0xFFFF
        scale = (((typmod - 4) & 0x7FF) ^ 1024) - 1024
        if typname == "numeric" and typmod >= 0 and precision <= 18 and scale >= 0:
            # Exact, by way of int8; NaN and ±Infinity (no decimal holds them) become NULL.
            q = quote_ident(column)
            select.append(
                f"case when abs({q}) < 1e{precision - scale}::numeric "
                f"then ({q} * 1e{scale}::numeric)::int8 end as {q}"
            )
            decimals[column] = pa.decimal128(precision, scale)
        else:
            select.append(quote_ident(column))
    cur = con.cursor()
    try:
        cur.execute(f"select {', '.join(select)} from {quoted}")
        arrow = cur.fetch_arrow_table()
    except Exception as exc:
        raise source_error(f"reading {schema}.{name}", exc) from None
    finally:
        cur.close()
    return _restore_decimals(_plain(arrow), decimals)


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


def _restore_decimals(table: pa.Table, decimals: dict[str, pa.Decimal128Type]) -> pa.Table:
    """Scaled ``int64`` columns back to ``decimal128(p, s)``, exactly.

    >>> t = pa.table({"amount": pa.array([12345, -5, None], pa.int64())})
    >>> _restore_decimals(t, {"amount": pa.decimal128(10, 2)})["amount"].to_pylist()
    [Decimal('123.45'), Decimal('-0.05'), None]
    """
    for name, typ in decimals.items():
        i = table.schema.get_field_index(name)
        chunks = [_decimal_from_scaled(chunk, typ) for chunk in table.column(i).chunks]
        table = table.set_column(i, pa.field(name, typ), pa.chunked_array(chunks, type=typ))
    return table


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
