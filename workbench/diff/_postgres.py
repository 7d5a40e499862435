"""Pulling a live Postgres table into Arrow through ADBC (binary COPY, never row by row).

ADBC turns ``numeric`` into text on the client, which is slow and not a
number; a ``numeric(p, s)`` with ``p <= 18`` is therefore sent as the scaled
``bigint`` (exact) and rebuilt as ``DECIMAL(p, s)`` inside DuckDB.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from workbench.diff._sql import ident
from workbench.errors import SourceError
from workbench.sources.redaction import redact

__all__ = ["PostgresTable", "pull_table"]


@dataclass(frozen=True)
class PostgresTable:
    """An Arrow table pulled from Postgres and the DuckDB select list that restores its types."""

    table: pa.Table
    select_list: str


def _split(name: str) -> tuple[str, str]:
    schema, _, table = name.rpartition(".")
    return (schema or "public"), table


def pull_table(dsn: str, qualified_name: str) -> PostgresTable:
    """Read every row of ``schema.table`` at ``dsn`` into Arrow."""
    import adbc_driver_postgresql.dbapi as pg

    schema, table = _split(qualified_name)
    try:
        with pg.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute(
                "select a.attname, a.atttypmod, t.typname from pg_attribute a "
                "join pg_type t on t.oid = a.atttypid "
                "where a.attrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass "
                "and a.attnum > 0 and not a.attisdropped order by a.attnum",
                (schema, table),
            )
            columns = cur.fetchall()
            pulled: list[str] = []
            restore: list[str] = []
            for name, typmod, typname in columns:
                precision, scale = ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF
                if typname == "numeric" and typmod >= 0 and precision <= 18:
                    pulled.append(f"({ident(name)} * 1e{scale}::numeric)::int8 as {ident(name)}")
                    # Exact: a DECIMAL times a DECIMAL literal keeps every digit.
                    factor = f"0.{'0' * (scale - 1)}1" if scale else "1"
                    restore.append(
                        f"CAST(CAST({ident(name)} AS DECIMAL(18,0)) * {factor} "
                        f"AS DECIMAL({precision},{scale})) AS {ident(name)}"
                    )
                else:
                    pulled.append(ident(name))
                    restore.append(ident(name))
            cur.execute(f"select {', '.join(pulled)} from {ident(schema)}.{ident(table)}")
            arrow = cur.fetch_arrow_table()
    except pg.Error as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SourceError(
            f"cannot read {qualified_name} from {redact(dsn)}: {redact(message)}"
        ) from None
    return PostgresTable(_plain(arrow), ", ".join(restore))


def _plain(table: pa.Table) -> pa.Table:
    """Drop ADBC's extension types (opaque Postgres types) down to their storage."""
    fields, arrays = [], []
    for field, column in zip(table.schema, table.columns, strict=True):
        if isinstance(field.type, pa.ExtensionType) or hasattr(field.type, "storage_type"):
            storage = field.type.storage_type
            column = pa.chunked_array([c.storage for c in column.chunks], type=storage)
            field = pa.field(field.name, storage)
        fields.append(field.remove_metadata())
        arrays.append(column)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))
