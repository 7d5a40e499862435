"""The DuckDB side of a replay: schemas, bulk flushes, checkpoint, lineage, promote.

Projection ``name`` at version ``v`` writes into schema ``<name>_v<v>``: its
declared tables (key columns = primary key) and the bookkeeping tables

- ``_checkpoint(source, last_position, events_applied, updated_at)``, written
  in the same transaction as the rows it covers;
- ``_lineage(table_name, key, source, global_position, event_type, handler)``,
  one row per (output row, event that wrote it); ``key`` is
  :func:`lineage_key` of the row's key columns;
- ``_replay_info(projection, version, archive, started_at, finished_at,
  events_applied, until_position, where_sql)``;
- ``_dead_letters(source, global_position, event_id, event_type, handler,
  error, traceback, data)``.

:func:`promote` points the stable schema ``<name>`` at one version.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from workbench._sql import ident
from workbench.errors import ProjectionError
from workbench.replay.projection import Table
from workbench.replay.state import TableState

__all__ = [
    "CHECKPOINT_DDL",
    "DEAD_LETTER_SCHEMA",
    "LINEAGE_DDL",
    "connect",
    "lineage_key",
    "lineage_key_sql",
    "promote",
    "q",
]

CHECKPOINT_DDL = (
    "create table if not exists {s}._checkpoint (source VARCHAR primary key, "
    "last_position BIGINT, events_applied BIGINT, updated_at TIMESTAMPTZ)"
)
LINEAGE_DDL = (
    "create table if not exists {s}._lineage (table_name VARCHAR, key VARCHAR, source VARCHAR, "
    "global_position BIGINT, event_type VARCHAR, handler VARCHAR)"
)
INFO_DDL = (
    "create table if not exists {s}._replay_info (projection VARCHAR, version INTEGER, "
    "archive VARCHAR, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, events_applied BIGINT, "
    "until_position BIGINT, where_sql VARCHAR)"
)
DEAD_LETTER_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("global_position", pa.int64()),
        ("event_id", pa.string()),
        ("event_type", pa.string()),
        ("handler", pa.string()),
        ("error", pa.string()),
        ("traceback", pa.string()),
        ("data", pa.string()),
    ]
)
DEAD_LETTER_DDL = (
    "create table if not exists {s}._dead_letters (source VARCHAR, global_position BIGINT, "
    "event_id VARCHAR, event_type VARCHAR, handler VARCHAR, error VARCHAR, traceback VARCHAR, "
    "data VARCHAR)"
)


#: Quote a DuckDB identifier (the replay modules' short name for :func:`workbench._sql.ident`).
q = ident


def lineage_key_sql(columns: Sequence[str], values: Sequence[str] | None = None) -> str:
    """DuckDB SQL rendering a ``_lineage.key``: :func:`lineage_key` computed in the database.

    ``values`` are SQL expressions for the key columns (default: the columns).

    >>> lineage_key_sql(["tenant", "id"], ["d.tenant", "d.id"])
    'to_json(struct_pack("tenant" := d.tenant, "id" := d.id))'
    """
    exprs = [q(c) for c in columns] if values is None else list(values)
    fields = ", ".join(f"{q(c)} := {e}" for c, e in zip(columns, exprs, strict=True))
    return f"to_json(struct_pack({fields}))"


def lineage_key(table_key_columns: Sequence[str], values: Any) -> str:
    """The ``_lineage.key`` of a row: compact JSON of its key columns, in key order.

    Equals DuckDB's ``to_json(struct_pack(col := col, ...))`` for string and
    integer keys, so SQL can join lineage to output rows.

    >>> lineage_key(["agent_id", "day"], ("a-1", "2024-05-01"))
    '{"agent_id":"a-1","day":"2024-05-01"}'
    >>> lineage_key(["memory_id"], "m-1")
    '{"memory_id":"m-1"}'
    """
    if len(table_key_columns) == 1 and not isinstance(values, tuple | list):
        values = (values,)
    return json.dumps(
        dict(zip(table_key_columns, values, strict=True)),
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )


def connect(into: str | os.PathLike[str]) -> duckdb.DuckDBPyConnection:
    """Open (or create) the output DuckDB file."""
    path = Path(into)
    if path.parent and not path.parent.exists():
        raise ProjectionError(f"directory {path.parent} does not exist")
    try:
        con = duckdb.connect(str(path))
    except duckdb.Error as exc:
        raise ProjectionError(f"cannot open {path}: {str(exc).splitlines()[0]}") from None
    # Bounded, so DuckDB evicts written pages instead of caching all of the lineage.
    con.execute("set memory_limit = '1GB'")
    return con


def schema_exists(con: duckdb.DuckDBPyConnection, schema: str) -> bool:
    rows = con.execute(
        "select 1 from information_schema.schemata where schema_name = ? and catalog_name = current_database()",
        [schema],
    ).fetchall()
    return bool(rows)


def create_schema(
    con: duckdb.DuckDBPyConnection, schema: str, tables: Iterable[Table], *, replace: bool
) -> None:
    """Create the version's schema with its tables and bookkeeping tables."""
    s = q(schema)
    con.execute("begin")
    if replace:
        con.execute(f"drop schema if exists {s} cascade")
    con.execute(f"create schema if not exists {s}")
    for table in tables:
        con.execute(table.ddl(schema).replace("create table", "create table if not exists", 1))
    for ddl in (CHECKPOINT_DDL, LINEAGE_DDL, INFO_DDL, DEAD_LETTER_DDL):
        con.execute(ddl.format(s=s))
    con.execute("commit")


def output_tables(con: duckdb.DuckDBPyConnection, schema: str) -> list[str]:
    """Names of the output tables of a schema (bookkeeping tables excluded)."""
    rows = con.execute(
        "select table_name from information_schema.tables where table_schema = ? "
        "and table_catalog = current_database() and not starts_with(table_name, '_') order by 1",
        [schema],
    ).fetchall()
    return [r[0] for r in rows]


def checkpoint(con: duckdb.DuckDBPyConnection, schema: str, source: str) -> tuple[int, int] | None:
    """(last_position, events_applied) of ``source``, or None before the first flush."""
    rows = con.execute(
        f"select last_position, events_applied from {q(schema)}._checkpoint where source = ?",
        [source],
    ).fetchall()
    return (int(rows[0][0]), int(rows[0][1])) if rows else None


def load_rows(
    con: duckdb.DuckDBPyConnection, schema: str, table: Table
) -> dict[Any, dict[str, Any]]:
    """A table's rows keyed like the in-memory state (for resuming)."""
    cols = ", ".join(q(c) for c in table.columns)
    rows = con.sql(f"select {cols} from {q(schema)}.{q(table.name)}").to_arrow_table()
    records = rows.to_pylist()
    if len(table.key) == 1:
        k = table.key[0]
        return {r[k]: r for r in records}
    return {tuple(r[c] for c in table.key): r for r in records}


def _column(values: list[Any], typ: pa.DataType, table: str, column: str) -> pa.Array:
    try:
        return pa.array(values, typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        raise ProjectionError(
            f"table {table}, column {column}: a handler wrote a value that is not {typ}: {exc}"
        ) from None


def _key_table(table: Table, keys: list[Any]) -> pa.Table:
    if len(table.key) == 1:
        columns = [keys]
    else:
        columns = [list(c) for c in zip(*keys, strict=True)] if keys else [[] for _ in table.key]
    return pa.table(
        [
            _column(v, table.types[c][1], table.name, c)
            for c, v in zip(table.key, columns, strict=True)
        ],
        names=list(table.key),
    )


@dataclass
class Statement:
    """One SQL statement of a flush and the Arrow tables it reads, by name."""

    sql: str
    params: list[Any] = field(default_factory=list)
    tables: dict[str, pa.Table] = field(default_factory=dict)


def rows_statement(schema: str, table: Table, rows: list[dict[str, Any]]) -> Statement | None:
    """Insert or replace ``rows`` (dicts) in one statement from an Arrow table."""
    if not rows:
        return None
    extra = set().union(*rows) - set(table.columns)
    if extra:
        raise ProjectionError(
            f"table {table.name}: handlers wrote undeclared column(s) {', '.join(sorted(extra))}"
        )
    arrow = pa.table(
        [
            _column([r.get(c) for r in rows], table.types[c][1], table.name, c)
            for c in table.columns
        ],
        names=list(table.columns),
    )
    return Statement(
        f"insert or replace into {q(schema)}.{q(table.name)} by name select * from _wb_rows",
        tables={"_wb_rows": arrow},
    )


def delete_statement(schema: str, table: Table, keys: list[Any]) -> Statement | None:
    if not keys:
        return None
    match = " and ".join(f"{q(table.name)}.{q(c)} = _wb_deleted.{q(c)}" for c in table.key)
    return Statement(
        f"delete from {q(schema)}.{q(table.name)} using _wb_deleted where {match}",
        tables={"_wb_deleted": _key_table(table, keys)},
    )


class EventTypes:
    """``global_position → event_type, handler`` of the events of one flush, in numpy.

    Lineage rows get their event type and handler by a binary search of
    their positions among the flush's (sorted) event positions, as
    dictionary-encoded Arrow columns: no join, no Python per row.
    """

    def __init__(self, events: pa.Table, handler_of: dict[str, str | None]) -> None:
        self.positions = events.column("global_position").to_numpy()
        encoded = pc.dictionary_encode(events.column("event_type")).combine_chunks()
        self.codes = encoded.indices.to_numpy(zero_copy_only=False)
        self.types = encoded.dictionary
        self.handlers = pa.array([handler_of.get(t) for t in self.types.to_pylist()], pa.string())

    def of(self, positions: np.ndarray) -> tuple[pa.Array, pa.Array]:
        """Event types and handlers of ``positions`` (each one an event of this flush)."""
        codes = pa.array(self.codes[np.searchsorted(self.positions, positions)])
        return (
            pa.DictionaryArray.from_arrays(codes, self.types),
            pa.DictionaryArray.from_arrays(codes, self.handlers),
        )


def lineage_statement(
    schema: str,
    table: Table,
    source: str,
    keys: list[Any],
    positions: Sequence[int],
    events: EventTypes,
) -> Statement | None:
    """One lineage row per write, in one insert; DuckDB renders the key JSON."""
    if not keys:
        return None
    at = np.asarray(positions, np.int64)
    event_types, handlers = events.of(at)
    if len(table.key) == 1:
        key = _column(keys, table.types[table.key[0]][1], table.name, table.key[0])
        rendered = lineage_key_sql(table.key, ["key"])
    else:
        struct = pa.struct([(c, table.types[c][1]) for c in table.key])
        key = _column(keys, struct, table.name, ", ".join(table.key))
        rendered = lineage_key_sql(table.key, [f"key.{q(c)}" for c in table.key])
    arrow = pa.table(
        [key, pa.array(at), event_types, handlers],
        names=["key", "global_position", "event_type", "handler"],
    )
    return Statement(
        f"insert into {q(schema)}._lineage select ?, {rendered}, ?, "
        "global_position, event_type, handler from _wb_lineage",
        [table.name, source],
        {"_wb_lineage": arrow},
    )


def prepare_flush(
    schema: str,
    states: Iterable[TableState],
    *,
    source: str,
    last_position: int,
    events_applied: int,
    handler_of: dict[str, str | None],
    dead_letters: list[dict[str, Any]],
    events: pa.Table,
) -> list[Statement]:
    """The statements of one flush: changed rows, lineage, dead letters, checkpoint.

    All the Python work (taking the states' changes, building Arrow tables)
    happens here, so :func:`write_flush` only runs DuckDB, which releases
    the GIL: the engine runs it on a second thread while handlers go on.
    ``events`` holds ``global_position, event_type`` of the events applied
    since the last flush, in position order (for the lineage's event types).
    """
    types = EventTypes(events, handler_of)
    found: list[Statement | None] = []
    for state in states:
        upserts, deletes = state.take_changes()
        found.append(rows_statement(schema, state.table, upserts))
        found.append(delete_statement(schema, state.table, deletes))
        keys, applied = state.take_lineage()
        found.append(lineage_statement(schema, state.table, source, keys, applied, types))
    if dead_letters:
        found.append(
            Statement(
                f"insert into {q(schema)}._dead_letters select * from _wb_dead",
                tables={"_wb_dead": pa.Table.from_pylist(dead_letters, schema=DEAD_LETTER_SCHEMA)},
            )
        )
    found.append(
        Statement(
            f"insert or replace into {q(schema)}._checkpoint values (?, ?, ?, now())",
            [source, last_position, events_applied],
        )
    )
    return [s for s in found if s is not None]


def write_flush(con: duckdb.DuckDBPyConnection, statements: list[Statement]) -> None:
    """Run a flush's statements in one transaction (the checkpoint commits with its rows)."""
    con.execute("begin")
    try:
        for statement in statements:
            for name, arrow in statement.tables.items():
                con.register(name, arrow)
            try:
                con.execute(statement.sql, statement.params)
            finally:
                for name in statement.tables:
                    con.unregister(name)
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise


def flush(
    con: duckdb.DuckDBPyConnection,
    schema: str,
    states: Iterable[TableState],
    **kwargs: Any,
) -> None:
    """:func:`prepare_flush` and :func:`write_flush` in one go."""
    write_flush(con, prepare_flush(schema, states, **kwargs))


def promote(into: str | os.PathLike[str], projection_name: str, version: int) -> list[str]:
    """Point the stable schema ``<name>`` at version ``version``: one view per table.

    Returns the tables promoted. Views of tables the version does not have
    are dropped, so the stable schema is exactly the promoted version.
    """
    target = f"{projection_name}_v{version}"
    con = connect(into)
    try:
        if not schema_exists(con, target):
            raise ProjectionError(f"{into} has no schema {target}; replay that version first")
        tables = output_tables(con, target)
        con.execute("begin")
        con.execute(f"create schema if not exists {q(projection_name)}")
        existing = con.execute(
            "select view_name from duckdb_views() where schema_name = ? and database_name = current_database()",
            [projection_name],
        ).fetchall()
        for (view,) in existing:
            if view not in tables:
                con.execute(f"drop view {q(projection_name)}.{q(view)}")
        for table in tables:
            con.execute(
                f"create or replace view {q(projection_name)}.{q(table)} as "
                f"select * from {q(target)}.{q(table)}"
            )
        con.execute("commit")
        return tables
    finally:
        con.close()
