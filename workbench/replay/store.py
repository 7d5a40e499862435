"""The DuckDB side of a replay: schemas, bulk flushes, checkpoint, lineage, promote.

Projection ``name`` at version ``v`` writes into schema ``<name>_v<v>``: its
declared tables (key columns = primary key) and the bookkeeping tables

- ``_checkpoint(source, last_position, events_applied, updated_at)``, written
  in the same transaction as the rows it covers;
- ``_lineage(table_name, key, source, global_position, event_type, handler)``,
  one row per (output row, event that wrote it); ``key`` is
  :func:`lineage_key` of the row's key columns. A view: a rebuild writes
  millions of lineage entries, so they are stored as integers —
  ``_lineage_writes(row_id, global_position, event_code)`` — and joined to
  ``_lineage_rows(table_name, row_id, key)`` (one per row; a row deleted and
  written again gets a new row id) and
  ``_lineage_types(event_code, source, event_type, handler)``;
- ``_replay_info(projection, version, archive, started_at, finished_at,
  events_applied, until_position, where_sql)``;
- ``_dead_letters(source, global_position, event_id, event_type, handler,
  error, traceback, data)``.

:func:`promote` points the stable schema ``<name>`` at one version.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from workbench import _duckdb
from workbench._sql import ident, literal
from workbench._text import did_you_mean
from workbench.errors import ProjectionError
from workbench.replay.columns import ColumnType, Refused
from workbench.replay.projection import Table
from workbench.replay.state import Changes, TableState, WriteLog, Writes

__all__ = [
    "CHECKPOINT_DDL",
    "DEAD_LETTER_SCHEMA",
    "LINEAGE_DDL",
    "EventCodes",
    "connect",
    "lineage_key",
    "lineage_key_sql",
    "promote",
    "q",
    "unfinished_replay",
]

CHECKPOINT_DDL = (
    "create table if not exists {s}._checkpoint (source VARCHAR primary key, "
    "last_position BIGINT, events_applied BIGINT, updated_at TIMESTAMPTZ)"
)
LINEAGE_DDL = (
    "create table if not exists {s}._lineage_rows (table_name VARCHAR, row_id BIGINT, key VARCHAR)",
    "create table if not exists {s}._lineage_types "
    "(event_code INTEGER primary key, source VARCHAR, event_type VARCHAR, handler VARCHAR)",
    "create table if not exists {s}._lineage_writes "
    "(row_id BIGINT, global_position BIGINT, event_code INTEGER)",
    "create or replace view {s}._lineage as select r.table_name, r.key, t.source, "
    "w.global_position, t.event_type, t.handler from {s}._lineage_writes w "
    "join {s}._lineage_rows r using (row_id) join {s}._lineage_types t using (event_code)",
)
INFO_DDL = (
    "create table if not exists {s}._replay_info (projection VARCHAR, version INTEGER, "
    "archive VARCHAR, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, events_applied BIGINT, "
    "until_position BIGINT, where_sql VARCHAR, archive_first VARCHAR, code VARCHAR)"
)
#: Columns ``_replay_info`` gained after its first layout: added when resuming an older replay.
INFO_ADDED = ("archive_first", "code")
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

    Equals DuckDB's ``to_json(struct_pack(col := col, ...))`` in a UTC session
    (as the replay writes it), so SQL can join lineage to output rows; a key
    of times, dates, UUIDs or decimals is rendered by DuckDB itself.

    >>> lineage_key(["agent_id", "day"], ("a-1", "2024-05-01"))
    '{"agent_id":"a-1","day":"2024-05-01"}'
    >>> lineage_key(["memory_id"], "m-1")
    '{"memory_id":"m-1"}'
    >>> import datetime as dt
    >>> lineage_key(["minute"], dt.datetime(2024, 5, 1, 9, 2, tzinfo=dt.timezone.utc))
    '{"minute":"2024-05-01 09:02:00+00"}'
    """
    if len(table_key_columns) == 1 and not isinstance(values, tuple | list):
        values = (values,)
    if not all(type(v) in (str, int) for v in values):
        with _duckdb.connect() as con:  # its session is UTC, as the writer's
            rendered = con.execute(
                f"select {lineage_key_sql(table_key_columns, ['?'] * len(values))}", list(values)
            ).fetchall()[0][0]
        return str(rendered)
    return json.dumps(
        dict(zip(table_key_columns, values, strict=True)),
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )


#: Suffixes of data files DuckDB reads but cannot be an output database.
_DATA_FILES = (".parquet", ".csv", ".tsv", ".json", ".jsonl", ".ndjson", ".arrow", ".feather")


def connect(into: str | os.PathLike[str]) -> duckdb.DuckDBPyConnection:
    """Open (or create) the output DuckDB file.

    >>> connect("live.parquet")
    Traceback (most recent call last):
    ...
    workbench.errors.ProjectionError: live.parquet is a data file, not a DuckDB database: write into a .duckdb file
    """
    path = Path(into)
    if path.suffix.lower() in _DATA_FILES:
        raise ProjectionError(
            f"{path} is a data file, not a DuckDB database: write into a .duckdb file"
        )
    if path.parent.is_file():
        raise ProjectionError(f"{path.parent} is a file, not a directory to replay into")
    path.parent.mkdir(parents=True, exist_ok=True)  # as report --out and snapshot --out do
    try:
        con = _duckdb.connect(str(path))
    except duckdb.ConnectionException as exc:
        if "different configuration" not in str(exc):
            raise ProjectionError(f"cannot open {path}: {_duckdb.error_line(exc)}") from None
        # DuckDB shares one database per file within a process: a connection of this
        # process (a notebook's read_only=True one, say) is in the way, not another's.
        raise ProjectionError(
            f"cannot open {path}: this process has it open read-only or with other settings "
            "(a duckdb.connect(..., read_only=True) in this notebook?); close that "
            "connection first"
        ) from None
    except duckdb.Error as exc:
        raise ProjectionError(f"cannot open {path}: {_duckdb.error_line(exc)}") from None
    # DuckDB opens some files it cannot use as a database (Parquet, CSV) in
    # memory: everything written would be lost.
    stored = con.execute(
        "select path from duckdb_databases() where database_name = current_database()"
    ).fetchall()
    if not stored or stored[0][0] is None:
        con.close()
        raise ProjectionError(f"{path} is not a DuckDB database file: write into a .duckdb file")
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
    con.execute(TABLE_KEYS_DDL.format(s=s))
    for table in tables:
        # A table already there (a resume) keeps its key, if it has it by now.
        con.execute(
            table.ddl(schema, primary_key=False).replace(
                "create table", "create table if not exists", 1
            )
        )
        con.execute(
            f"insert or replace into {s}._table_keys values (?, ?)", [table.name, list(table.key)]
        )
    old_lineage = con.execute(
        "select count(*) from duckdb_tables() where database_name = current_database() "
        "and schema_name = ? and table_name = '_lineage'",
        [schema],
    ).fetchall()[0][0]
    if old_lineage:  # written before lineage became a view: resuming would mix two forms
        con.execute("rollback")
        raise ProjectionError(
            f"{schema} was written by an older workbench (its _lineage is a table); "
            "replay it again without --resume"
        )
    for ddl in (CHECKPOINT_DDL, *LINEAGE_DDL, INFO_DDL, DEAD_LETTER_DDL):
        con.execute(ddl.format(s=s))
    con.execute("commit")


# A fresh replay writes its tables without their primary key and adds it as it ends:
# DuckDB keeps a key's index in step with every write, and replacing 50,000 rows of a
# 120,000-row table through it (insert or replace) took 1.1-2.2 s a flush; without
# it, a delete and an insert by key take 0.1 s (0.3-0.6 s through the index, which a
# resume of a finished replay writes through: its tables keep their key, and any
# index or comment their user gave them). Meanwhile _table_keys holds each key.
TABLE_KEYS_DDL = (
    "create table if not exists {s}._table_keys "
    "(table_name VARCHAR primary key, key_columns VARCHAR[])"
)


def add_keys(con: duckdb.DuckDBPyConnection, schema: str, tables: Iterable[Table]) -> None:
    """Give each of ``tables`` that lacks it its primary key, as a replay ends."""
    database = con.execute("select current_database()").fetchall()[0][0]
    for table in tables:
        if _primary_key(con, database, schema, table.name):
            continue
        key = ", ".join(q(c) for c in table.key)
        try:
            con.execute(f"alter table {q(schema)}.{q(table.name)} add primary key ({key})")
        except duckdb.ConstraintException as exc:  # the engine keeps one row a key: a bug
            raise ProjectionError(
                f"table {table.name}: its rows repeat the key {', '.join(table.key)}: "
                f"{_duckdb.error_line(exc)}"
            ) from None


def table_key(
    con: duckdb.DuckDBPyConnection, schema: str, table: str, database: str | None = None
) -> list[str] | None:
    """The key columns of an output table: its primary key, or while a replay writes it
    (or was stopped before it ended) the key ``_table_keys`` holds; None for neither."""
    database = database or con.execute("select current_database()").fetchall()[0][0]
    found = _primary_key(con, database, schema, table)
    if found:
        return found
    recorded = con.execute(
        "select count(*) from duckdb_tables() where database_name = ? and schema_name = ? "
        "and table_name = '_table_keys'",
        [database, schema],
    ).fetchall()[0][0]
    if not recorded:
        return None
    rows = con.execute(
        f"select key_columns from {q(database)}.{q(schema)}._table_keys where table_name = ?",
        [table],
    ).fetchall()
    return list(rows[0][0]) if rows else None


def _primary_key(
    con: duckdb.DuckDBPyConnection, database: str, schema: str, table: str
) -> list[str] | None:
    rows = con.execute(
        "select constraint_column_names from duckdb_constraints() where database_name = ? "
        "and schema_name = ? and table_name = ? and constraint_type = 'PRIMARY KEY'",
        [database, schema, table],
    ).fetchall()
    return list(rows[0][0]) if rows else None


def changed_tables(
    con: duckdb.DuckDBPyConnection, schema: str, tables: Iterable[Table]
) -> list[str]:
    """Declared tables whose stored columns, types or key differ (a resume would fail on them).

    The declared tables are created in an in-memory database to compare
    like with like: DuckDB spells types its own way (``TIMESTAMPTZ`` is
    stored as ``TIMESTAMP WITH TIME ZONE``).
    """
    declared = _duckdb.connect()
    try:
        changed = []
        declared.execute(f"create schema {q(schema)}")
        for table in tables:
            declared.execute(table.ddl(schema))
            stored = _layout(con, schema, table.name)
            if stored and stored != _layout(declared, schema, table.name):
                changed.append(table.name)  # (a table added since is created, empty)
        return changed
    finally:
        declared.close()


def _layout(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> list[Any]:
    columns = con.execute(
        "select column_name, data_type from information_schema.columns "
        "where table_catalog = current_database() and table_schema = ? and table_name = ? "
        "order by ordinal_position",
        [schema, table],
    ).fetchall()
    return [*columns, table_key(con, schema, table)] if columns else []


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
) -> tuple[dict[Any, dict[str, Any]], dict[Any, int]]:
    """A table's rows and their lineage row ids, keyed like the in-memory state (for resuming).

    A row without lineage (replayed with ``lineage=False``) has no row id.
    """
    cols = ", ".join(f"t.{q(c)}" for c in table.columns)
    rendered = lineage_key_sql(table.key, [f"t.{q(c)}" for c in table.key])
    arrow = con.sql(
        f"select {cols}, r.row_id from {q(schema)}.{q(table.name)} t left join "
        f"(select key, max(row_id) as row_id from {q(schema)}._lineage_rows "
        f"where table_name = $table group by key) r on r.key = {rendered}",
        params={"table": table.name},
    ).to_arrow_table()
    row_ids = arrow.column("row_id").to_pylist()
    columns = {c: table.types[c].decode_all(arrow.column(c).to_pylist()) for c in table.columns}
    records = [
        dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)
    ]
    key = itemgetter(*table.key)
    keys = [key(r) for r in records]
    rows = dict(zip(keys, records, strict=True))
    return rows, {k: i for k, i in zip(keys, row_ids, strict=True) if i is not None}


_NOT_CONVERTIBLE = (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError)


def _column(rows: list[dict[str, Any]], column: str, ctype: ColumnType, table: str) -> pa.Array:
    if pa.types.is_timestamp(ctype.arrow):
        _refuse_other_zone(rows, column, table, aware=ctype.arrow.tz is not None)
    try:
        return ctype.array([r.get(column) for r in rows])
    except _NOT_CONVERTIBLE:
        for row in rows:  # the error path only: find the row to blame
            try:
                ctype.array([row.get(column)])
            except _NOT_CONVERTIBLE as exc:
                # Say why for a refusal (a loss, or what to write instead); for a
                # value of another type the type says it.
                why = f" ({exc})" if isinstance(exc, Refused) else ""
                raise BadRow(
                    f"table {table}, column {column}: a handler wrote {row.get(column)!r}, "
                    f"which is not {ctype.sql}{why}",
                    row,
                ) from None
        raise


def _refuse_other_zone(rows: list[dict[str, Any]], column: str, table: str, *, aware: bool) -> None:
    """Raise :class:`BadRow` for a naive datetime in a TIMESTAMPTZ column (``aware``) or
    an aware one in a TIMESTAMP column.

    Arrow would store either (as UTC); a resumed run would read back the other
    kind than the handler had, and comparing the two raises or differs.
    """
    wrong = next(
        (
            r
            for r in rows
            if isinstance(v := r.get(column), dt.datetime) and (v.tzinfo is None) == aware
        ),
        None,
    )
    if wrong is None:
        return
    if aware:
        what = "without a time zone, into a TIMESTAMPTZ column"
        fix = (
            "give it one (tzinfo=dt.UTC, or event.occurred_at's) or declare the column 'TIMESTAMP'"
        )
    else:
        what = "with a time zone, into a TIMESTAMP column without one"
        fix = "declare the column dt.datetime (TIMESTAMPTZ) or write naive datetimes"
    raise BadRow(
        f"table {table}, column {column}: a handler wrote {wrong[column]!r}, a datetime "
        f"{what}; {fix}",
        wrong,
    )


def _keys(values: list[Any], ctype: ColumnType, table: str, column: str) -> pa.Array:
    try:
        return ctype.array(values)
    except _NOT_CONVERTIBLE as exc:
        raise ProjectionError(
            f"table {table}, key column {column}: a handler wrote a key that is not "
            f"{ctype.sql}: {exc}"
        ) from None


def _key_table(table: Table, keys: list[Any]) -> pa.Table:
    if len(table.key) == 1:
        columns = [keys]
    else:
        columns = [list(c) for c in zip(*keys, strict=True)] if keys else [[] for _ in table.key]
    return pa.table(
        [_keys(v, table.types[c], table.name, c) for c, v in zip(table.key, columns, strict=True)],
        names=list(table.key),
    )


@dataclass
class Statement:
    """One SQL statement of a flush and the Arrow tables it reads, by name."""

    sql: str
    params: list[Any] = field(default_factory=list)
    tables: dict[str, pa.Table] = field(default_factory=dict)


#: Statements computed when the flush is written (on the writing thread).
Deferred = Callable[[], list[Statement]]


class BadRow(ProjectionError):
    """A row a handler wrote that cannot be stored; ``row`` is it, for locating its writer."""

    def __init__(self, message: str, row: dict[str, Any]) -> None:
        super().__init__(message)
        self.row = row


def unstored_rows(
    con: duckdb.DuckDBPyConnection, schema: str, table: Table, rows: list[dict[str, Any]]
) -> tuple[int, Any]:
    """How many of ``rows`` (in-memory rows, after the last flush) the stored table does not
    hold as they stand, and one of their keys: rows a handler changed in place and never
    handed back. A row that cannot be stored at all counts as one."""
    declared = set(table.columns)
    if not declared.issuperset(set().union(*rows)):
        return 1, None
    try:
        arrow = pa.table(
            [_column(rows, c, table.types[c], table.name) for c in table.columns],
            names=list(table.columns),
        )
    except BadRow as exc:
        return 1, exc.row.get(table.key[0]) if len(table.key) == 1 else None
    cols = ", ".join(q(c) for c in table.columns)
    typed = ", ".join(f"cast({q(c)} as {table.types[c].sql}) as {q(c)}" for c in table.columns)
    key = table.key[0] if len(table.key) == 1 else None
    con.register("_wb_memory", arrow)
    try:
        n, example = con.execute(
            f"select count(*), {'any_value(' + q(key) + ')' if key else 'null'} from "
            f"(select {typed} from _wb_memory except select {cols} from {q(schema)}.{q(table.name)})"
        ).fetchall()[0]
    finally:
        con.unregister("_wb_memory")
    return int(n), example


def rows_statement(schema: str, table: Table, rows: list[dict[str, Any]]) -> Statement | None:
    """Insert or replace ``rows`` (dicts) in one statement from an Arrow table.

    Raises :class:`BadRow` naming the first row the table cannot store (see
    :func:`bad_rows`).
    """
    if not rows:
        return None
    declared = set(table.columns)
    if declared.issuperset(set().union(*rows)) and all(
        r.get(k) is not None for r in rows for k in table.key
    ):
        try:
            arrow = pa.table(
                [_column(rows, c, table.types[c], table.name) for c in table.columns],
                names=list(table.columns),
            )
        except BadRow:
            pass  # named below, with the first row to blame
        else:
            # No primary key while a fresh replay writes (see add_keys): the rows' old versions
            # out by key, then the rows in.
            match = " and ".join(f"t.{q(c)} = _wb_rows.{q(c)}" for c in table.key)
            target = f"{q(schema)}.{q(table.name)}"
            return Statement(
                f"delete from {target} t using _wb_rows where {match}; "
                f"insert into {target} by name select * from _wb_rows",
                tables={"_wb_rows": arrow},
            )
    row, why = bad_rows(table, rows)[0]
    raise BadRow(why, row)


def bad_rows(table: Table, rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    """Every row of ``rows`` the table cannot store, with why (one pass per check;
    rows are looked at one by one only in a column that fails as a whole)."""
    declared = set(table.columns)
    found: dict[int, str] = {}
    for i, row in enumerate(rows):
        extra = row.keys() - declared
        if extra:
            found[i] = (
                f"table {table.name}: a handler wrote undeclared column(s) "
                f"{', '.join(sorted(extra))}"
            )
        else:
            keyless = next((k for k in table.key if row.get(k) is None), None)
            if keyless is not None:
                found[i] = f"table {table.name}: a handler wrote a row whose key {keyless} is None"
    for column in table.columns:
        ctype = table.types[column]
        try:
            _column([r for i, r in enumerate(rows) if i not in found], column, ctype, table.name)
        except BadRow:
            for i, row in enumerate(rows):
                if i not in found:
                    try:
                        _column([row], column, ctype, table.name)
                    except BadRow as exc:
                        found[i] = str(exc)
    return [(rows[i], found[i]) for i in sorted(found)]


def row_refusal(table: Table, row: dict[str, Any]) -> str | None:
    """Why ``table`` cannot store ``row`` (None: it can), as a flush would find it.

    >>> from workbench.replay.projection import Table
    >>> t = Table(key="id", id=str, n=int)
    >>> t.name = "t"
    >>> row_refusal(t, {"id": "a", "n": 1}), row_refusal(t, {"id": "a", "n": 0.5})
    (None, 'table t, column n: a handler wrote 0.5, which is not BIGINT (0.5 would be truncated to an integer)')
    """
    found = bad_rows(table, [row])
    return found[0][1] if found else None


def delete_statement(schema: str, table: Table, keys: list[Any]) -> Statement | None:
    if not keys:
        return None
    match = " and ".join(f"{q(table.name)}.{q(c)} = _wb_deleted.{q(c)}" for c in table.key)
    return Statement(
        f"delete from {q(schema)}.{q(table.name)} using _wb_deleted where {match}",
        tables={"_wb_deleted": _key_table(table, keys)},
    )


class EventCodes:
    """Stable small-integer codes of (event type, handler) in ``_lineage_writes``.

    A write's event type is found by a binary search of its position among
    the flush's (sorted) event positions, in numpy: no join, no Python per
    write. Codes are kept across flushes and, on resume, reused for the
    types whose handler is unchanged (a renamed handler gets a new code, so
    older entries keep the handler that wrote them); new ones are written
    to ``_lineage_types``.
    """

    def __init__(self, source: str, handler_of: dict[str, str | None]) -> None:
        self.source = source
        self.handler_of = handler_of
        self.codes: dict[str | None, int] = {}
        self.next_code = 0

    def load(self, con: duckdb.DuckDBPyConnection, schema: str) -> None:
        rows = con.execute(
            f"select event_type, event_code, handler, source from {q(schema)}._lineage_types"
        ).fetchall()
        for event_type, code, handler, source in rows:
            if source == self.source and handler == self.handler_of.get(event_type):
                self.codes[event_type] = code
        self.next_code = max((row[1] for row in rows), default=-1) + 1

    def encode(
        self, events: pa.Table, positions: np.ndarray
    ) -> tuple[np.ndarray, list[tuple[int, str, str | None, str | None]]]:
        """Codes of the events at ``positions`` (each an event of ``events``), and new codes."""
        encoded = pc.dictionary_encode(events.column("event_type")).combine_chunks()
        types: list[str | None] = encoded.dictionary.to_pylist()
        if encoded.indices.null_count:  # events without a type
            types.append(None)
        added: list[tuple[int, str, str | None, str | None]] = []
        local = []
        for event_type in types:
            code = self.codes.get(event_type)
            if code is None:
                code = self.codes[event_type] = self.next_code
                self.next_code += 1
                handler = None if event_type is None else self.handler_of.get(event_type)
                added.append((code, self.source, event_type, handler))
            local.append(code)
        indices = encoded.indices.fill_null(len(types) - 1).to_numpy(zero_copy_only=False)
        at = np.searchsorted(events.column("global_position").to_numpy(), positions)
        return np.asarray(local, np.int32)[indices[at]], added


def lineage_statements(
    schema: str,
    changes: dict[str, Changes],
    tables: dict[str, Table],
    writes: Writes,
    codes: EventCodes,
    events: pa.Table,
) -> Deferred:
    """New rows' keys, new event codes, and one lineage entry per write, in bulk.

    The new rows' keys are taken now; the entries are computed (in numpy)
    when the writing thread runs the flush.
    """
    found: list[Statement] = []
    for name, change in changes.items():
        if not change.new_ids:
            continue
        table = tables[name]
        keys = _key_table(table, change.new_keys)
        keys = keys.append_column("_wb_row_id", pa.array(change.new_ids, pa.int64()))
        found.append(
            Statement(
                f"insert into {q(schema)}._lineage_rows "
                f"select ?, _wb_row_id, {lineage_key_sql(table.key)} from _wb_keys",
                [name],
                {"_wb_keys": keys},
            )
        )

    def entries() -> list[Statement]:
        row_ids, positions = writes.pairs()
        if not len(row_ids):
            return found
        statements = list(found)
        event_codes, added = codes.encode(events, positions)
        if added:
            statements.append(
                Statement(
                    f"insert into {q(schema)}._lineage_types select * from _wb_types",
                    tables={
                        "_wb_types": pa.table(
                            list(map(list, zip(*added, strict=True))),
                            schema=pa.schema(
                                [
                                    ("event_code", pa.int32()),
                                    ("source", pa.string()),
                                    ("event_type", pa.string()),
                                    ("handler", pa.string()),
                                ]
                            ),
                        )
                    },
                )
            )
        statements.append(
            Statement(
                f"insert into {q(schema)}._lineage_writes select * from _wb_writes",
                tables={
                    "_wb_writes": pa.table(
                        {"row_id": row_ids, "global_position": positions, "event_code": event_codes}
                    )
                },
            )
        )
        return statements

    return entries


def prepare_flush(
    schema: str,
    states: Iterable[TableState],
    log: WriteLog,
    *,
    source: str,
    last_position: int,
    events_applied: int,
    codes: EventCodes | None,
    dead_letters: list[dict[str, Any]],
    events: pa.Table,
    handler_of: Mapping[str, str | None] | None = None,
    skip_bad_rows: bool = False,
) -> list[Statement | Deferred]:
    """The statements of one flush: changed rows, lineage, dead letters, checkpoint.

    A row a table cannot store (a wrong type, a ``None`` key) names the event
    and handler that last wrote it; with ``skip_bad_rows`` (dead-letter mode)
    it becomes a dead letter of that event and is not written, and the replay
    goes on.

    The Python work (snapshotting changed rows into Arrow) happens here;
    what is left for :func:`write_flush` is numpy (the lineage entries) and
    DuckDB, both of which release the GIL: the engine runs it on a second
    thread while handlers go on.
    ``events`` holds ``global_position, event_type`` of the events applied
    since the last flush, in position order (for the lineage's event types);
    without ``codes`` no lineage is written.
    """
    writes = log.take()
    written = writes.written()
    writers: _Writers | None = None  # who last wrote each row: only on a bad row
    found: list[Statement | Deferred | None] = []
    changes: dict[str, Changes] = {}
    tables: dict[str, Table] = {}
    for state in states:
        change = changes[state.table.name] = state.take_changes(written)
        tables[state.table.name] = state.table
        try:
            found.append(rows_statement(schema, state.table, change.upserts))
        except BadRow as exc:
            writers = writers or _Writers(writes, events, handler_of or {})
            if not skip_bad_rows:
                # The last writer need not have set the bad value: dead-letter mode checks
                # each write as it is made, and names the handler that did.
                raise ProjectionError(
                    f"{exc}; {writers.of(state, exc.row)} (perhaps not the writer of the "
                    "bad value: --dead-letter checks each write as it is made)"
                ) from None
            broken = bad_rows(state.table, change.upserts)
            for row, why in broken:
                dead_letters.append(writers.of(state, row).dead_letter(source, f"BadRow: {why}"))
            _drop(change, state, [row for row, _ in broken])
            found.append(rows_statement(schema, state.table, change.upserts))
        found.append(delete_statement(schema, state.table, change.deletes))
    if codes is not None:
        found.append(lineage_statements(schema, changes, tables, writes, codes, events))
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
    # _replay_info says how far a replay got too, should it never finish.
    found.append(
        Statement(f"update {q(schema)}._replay_info set events_applied = ?", [events_applied])
    )
    return [s for s in found if s is not None]


@dataclass(frozen=True)
class _LastWriter:
    """The row a flush could not store and the event that last wrote it (if known)."""

    key: Any
    position: int | None
    event_type: str | None
    handler: str | None

    def __str__(self) -> str:
        where = f"row {self.key!r}"
        if self.position is None:
            return where
        by = (
            f"{self.handler} on {self.event_type}"
            if self.handler
            else f"the {self.event_type} event"
        )
        return f"{where}, last written by {by} at global_position {self.position}"

    def dead_letter(self, source: str, error: str) -> dict[str, Any]:
        return {
            "source": source,
            "global_position": self.position,
            "event_id": None,
            "event_type": self.event_type,
            "handler": self.handler,
            "error": f"{error}; {self}",
            "traceback": "",
            "data": None,
        }


class _Writers:
    """The event (and handler) that last wrote each row of a flush, for naming a bad row."""

    def __init__(
        self, writes: Writes, events: pa.Table, handler_of: Mapping[str, str | None]
    ) -> None:
        row_ids, positions = writes.pairs()
        self.last = np.full(int(row_ids.max()) + 1 if len(row_ids) else 0, -1, np.int64)
        np.maximum.at(self.last, row_ids, positions)
        self.positions = events.column("global_position").to_numpy()
        self.types = events.column("event_type").to_pylist()
        self.handler_of = handler_of

    def of(self, state: TableState, row: dict[str, Any]) -> _LastWriter:
        key = state.key_of(row)
        row_id = state.row_id_of(key)
        if row_id is None or row_id >= len(self.last) or self.last[row_id] < 0:
            return _LastWriter(key, None, None, None)
        position = int(self.last[row_id])
        at = int(np.searchsorted(self.positions, position))  # events are in position order
        found = at < len(self.types) and int(self.positions[at]) == position
        event_type = self.types[at] if found else None
        handler = self.handler_of.get(event_type) if event_type else None
        return _LastWriter(key, position, event_type, handler)


def _drop(change: Changes, state: TableState, rows: list[dict[str, Any]]) -> None:
    """Leave ``rows`` out of the flush: not written, and no lineage row for their keys."""
    dropped = {id(row) for row in rows}
    keys = {state.key_of(row) for row in rows}
    change.upserts = [row for row in change.upserts if id(row) not in dropped]
    kept = [(i, k) for i, k in zip(change.new_ids, change.new_keys, strict=True) if k not in keys]
    change.new_ids = [i for i, _ in kept]
    change.new_keys = [k for _, k in kept]


def next_row_id(con: duckdb.DuckDBPyConnection, schema: str) -> int:
    """The first row id not yet in the schema's lineage (resume numbers new rows from it)."""
    rows = con.execute(f"select coalesce(max(row_id) + 1, 0) from {q(schema)}._lineage_rows")
    return int(rows.fetchall()[0][0])


def write_flush(con: duckdb.DuckDBPyConnection, statements: list[Statement | Deferred]) -> None:
    """Run a flush's statements in one transaction (the checkpoint commits with its rows)."""
    con.execute("begin")
    try:
        for statement in _expanded(statements):
            for name, arrow in statement.tables.items():
                con.register(name, arrow)
            try:
                con.execute(statement.sql, statement.params)
            finally:
                for name in statement.tables:
                    # In an aborted transaction this fails too; the first error is the one.
                    with contextlib.suppress(duckdb.Error):
                        con.unregister(name)
        con.execute("commit")
    except BaseException:
        # A failed commit (a full disk) has ended the transaction: the rollback would fail
        # too, and hide why.
        with contextlib.suppress(duckdb.Error):
            con.execute("rollback")
        raise


def _expanded(statements: list[Statement | Deferred]) -> Iterator[Statement]:
    for item in statements:
        if isinstance(item, Statement):
            yield item
        else:
            yield from item()


def promoted_views(con: duckdb.DuckDBPyConnection, schema: str) -> list[str]:
    """The stable views (``<name>.<table>``) that :func:`promote` pointed at ``schema``.

    Promote names the version in each view's comment (DuckDB rewrites a
    view's SQL, so the comment is what can be matched).
    """
    rows = con.execute(
        "select schema_name || '.' || view_name from duckdb_views() "
        "where database_name = current_database() and comment = ? order by 1",
        [schema],
    ).fetchall()
    return [r[0] for r in rows]


def refuse_promoted(con: duckdb.DuckDBPyConnection, schema: str) -> None:
    """Refuse to rebuild ``schema`` in place while stable views read it."""
    live = promoted_views(con, schema)
    if live:  # a rebuild drops the schema first: the stable views would read nothing
        raise ProjectionError(
            f"{schema} is promoted ({', '.join(live)} read it): rebuilding it in place "
            "would empty them; resume it (resume=True, --resume) to apply newer events, or "
            "replay a new version and promote that"
        )


def last_position(into: str | os.PathLike[str], schema: str) -> int | None:
    """The checkpoint of the replay into ``schema`` of the file ``into`` (None: no such
    file, schema or checkpoint); opens no file that is not there."""
    if not Path(into).is_file():
        return None
    con = connect(into)
    try:
        (found,) = con.execute(
            "select count(*) from duckdb_tables() where database_name = current_database() "
            "and schema_name = ? and table_name = '_checkpoint'",
            [schema],
        ).fetchall()[0]
        if not found:
            return None
        at = con.execute(f"select max(last_position) from {q(schema)}._checkpoint").fetchall()
        return None if at[0][0] is None else int(at[0][0])
    finally:
        con.close()


def unfinished_replay(
    con: duckdb.DuckDBPyConnection, schema: str, catalog: str | None = None
) -> int | None:
    """The checkpoint of a replay into ``schema`` that has not finished, else None.

    Not finished: failed, stopped, or still running (0 before its first
    flush). None also when ``schema`` (in ``catalog``, default the
    connection's database) holds no replay.
    """
    database = "current_database()" if catalog is None else literal(catalog)
    found = con.execute(
        f"select count(*) from duckdb_tables() where database_name = {database} and "
        "schema_name = ? and table_name in ('_replay_info', '_checkpoint')",
        [schema],
    ).fetchall()[0][0]
    if found < 2:
        return None
    at = q(schema) if catalog is None else f"{q(catalog)}.{q(schema)}"
    rows = con.execute(
        f"select (select max(last_position) from {at}._checkpoint) "
        f"from {at}._replay_info where finished_at is null"
    ).fetchall()
    return int(rows[0][0] or 0) if rows else None


def promoted_schema(con: duckdb.DuckDBPyConnection, projection_name: str) -> str | None:
    """The version schema the stable views ``<name>.*`` read (None: never promoted)."""
    rows = con.execute(
        "select distinct comment from duckdb_views() where schema_name = ? "
        "and database_name = current_database() and comment is not null",
        [projection_name],
    ).fetchall()
    return str(rows[0][0]) if len(rows) == 1 else None


def _promotion_risks(con: duckdb.DuckDBPyConnection, target: str, current: str | None) -> list[str]:
    """What would make the stable views worse: dead letters, another archive or filter
    than the promoted version's, or fewer events (the read model going back in time)."""

    def dead_letters(schema: str) -> int:
        return int(con.execute(f"select count(*) from {q(schema)}._dead_letters").fetchall()[0][0])

    risks = []
    dead = dead_letters(target)
    other = current is not None and current != target and schema_exists(con, current)
    was_dead = dead_letters(current) if other and current is not None else 0
    if dead > was_dead:  # a version that fails less than the promoted one is a fix
        risks.append(
            f"it has {dead:,} dead letter(s){f' ({current} {was_dead:,})' if other else ''}: "
            "rows their events would have written"
        )
    if not other or current is None:
        return risks
    return risks + regressions(
        replay_facts(con, target),
        replay_facts(con, current),
        current,
        " (a replay with --resume catches it up; a SqlProjection's, replayed again)",
    )


def replay_facts(con: duckdb.DuckDBPyConnection, schema: str) -> tuple[Any, ...]:
    """``(archive, where, last position)`` of the replay into ``schema``."""
    info = con.execute(
        f"select archive, coalesce(where_sql, ''), "
        f"(select max(last_position) from {q(schema)}._checkpoint) from {q(schema)}._replay_info"
    ).fetchall()
    return tuple(info[0]) if info else (None, "", None)


def regressions(
    now: tuple[Any, ...], was: tuple[Any, ...], current: str, catch_up: str = ""
) -> list[str]:
    """How a replay with :func:`replay_facts` ``now`` would make the stable views reading
    ``current`` (replayed as ``was``) worse: another archive or filter, or fewer events
    (``catch_up`` says how to make up for those)."""
    (archive, where, last), (was_archive, was_where, was_last) = now, was
    risks = []
    same_place = (archive is None) == (was_archive is None) and (
        archive is None or Path(archive).resolve() == Path(was_archive).resolve()
    )
    if not same_place or where != was_where:
        risks.append(
            f"it was replayed from {archive}{f' where {where}' if where else ''}, "
            f"{current} from {was_archive}{f' where {was_where}' if was_where else ''}"
        )
    elif last is not None and was_last is not None and last < was_last:
        risks.append(
            f"it reaches global_position {last:,}, {current} {was_last:,}: the read model "
            f"would go back in time{catch_up}"
        )
    return risks


def promote(
    into: str | os.PathLike[str], projection_name: str, version: int, *, force: bool = False
) -> list[str]:
    """Point the stable schema ``<name>`` at version ``version``: one view per table.

    Returns the tables promoted. Views of tables the version does not have
    are dropped, so the stable schema is exactly the promoted version. A
    version with dead letters, or one replayed from another archive or
    filter than the promoted one, or reaching fewer events, is refused
    unless ``force``.
    """
    name = getattr(projection_name, "name", projection_name)  # a projection (class) too
    if (
        not isinstance(name, str)
        or isinstance(version, bool)
        or not isinstance(version, int)
        or version < 0
    ):
        raise ProjectionError(
            f"promote(into, projection_name, version): a name and a version (0 or more), "
            f"not {projection_name!r}, {version!r}"
        )
    projection_name = name
    if Path(into).is_dir():
        raise ProjectionError(f"{into} is a directory; promote takes the replay's DuckDB file")
    if not Path(into).is_file():  # connecting would create an empty database file
        raise ProjectionError(f"{into} does not exist; replay into it first")
    target = f"{projection_name}_v{version}"
    con = connect(into)
    try:
        if not schema_exists(con, target):
            versions = [
                str(r[0])
                for r in con.execute(
                    "select schema_name from duckdb_schemas() where database_name = "
                    "current_database() and regexp_matches(schema_name, '_v[0-9]+$')"
                ).fetchall()
            ]
            raise ProjectionError(
                f"{into} has no schema {target}; replay that version first"
                + (
                    did_you_mean(target, versions) or f" (it holds {', '.join(sorted(versions))})"
                    if versions
                    else ""
                )
            )
        if unfinished_replay(con, target) is not None:  # blue/green: never half a read model
            raise ProjectionError(
                f"{target} has not finished replaying; finish it (replay --resume) "
                "before promoting it"
            )
        current = promoted_schema(con, projection_name)
        risks = [] if force else _promotion_risks(con, target, current)
        if risks:
            raise ProjectionError(
                f"not promoting {target}{f' over {current}' if current else ''}: "
                f"{'; '.join(risks)}; promote with force=True (--force) to do it anyway"
            )
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
            view = f"{q(projection_name)}.{q(table)}"
            con.execute(f"create or replace view {view} as select * from {q(target)}.{q(table)}")
            con.execute(f"comment on view {view} is {literal(target)}")
        con.execute("commit")
        return tables
    finally:
        con.close()
