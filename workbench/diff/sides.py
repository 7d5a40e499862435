"""Resolving one side of a diff to a relation inside the diff's DuckDB connection.

A side is one of:

- ``"path/file.duckdb:schema.table"`` — a table (or view) in a DuckDB file,
  attached read-only;
- ``"path/file.parquet"`` (or a glob) — e.g. a read-model snapshot; its
  ``workbench.snapshot`` metadata gives the event-store position it reflects;
- ``"postgresql://user@host/db#schema.table"`` — a live Postgres table, read
  through ADBC in one binary COPY;
- a Polars DataFrame, an Arrow table or a DuckDB relation (from Python).

>>> import duckdb, polars as pl
>>> con = duckdb.connect()
>>> side = resolve_side(con, pl.DataFrame({"id": [1, 2]}), "candidate")
>>> side.columns, side.label
({'id': 'BIGINT'}, 'Polars DataFrame')
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from workbench._duckdb import error_line
from workbench._sql import ident, literal
from workbench.errors import DiffError, SourceError
from workbench.sources.postgres._connection import connect, table_columns
from workbench.sources.postgres.snapshot import SnapshotInfo, read_snapshot_info
from workbench.sources.postgres.table import case_insensitive_columns, read_table
from workbench.sources.redaction import redact, remember

__all__ = [
    "DuckDBTable",
    "Side",
    "check_side",
    "detach_files",
    "files_attached",
    "parse_duckdb_spec",
    "resolve_side",
]

_DUCKDB_FILE = re.compile(r"^(?P<file>.+\.(?:duckdb|ddb|db))(?::(?P<table>[^/\\]+))?$")


@dataclass(frozen=True)
class DuckDBTable:
    """A table inside an attached DuckDB file: ``catalog.schema.table``."""

    path: Path
    catalog: str
    schema: str
    table: str

    @property
    def sql(self) -> str:
        return f"{ident(self.catalog)}.{ident(self.schema)}.{ident(self.table)}"


@dataclass
class Side:
    """One side of a diff, registered in the diff's connection as ``relation``."""

    role: str
    label: str
    relation: str
    columns: dict[str, str]
    duckdb_table: DuckDBTable | None = None
    snapshot: SnapshotInfo | None = None
    keep_alive: list[Any] = field(default_factory=list, repr=False)
    #: Columns the side's store compares without case (Postgres ``citext``).
    case_insensitive: tuple[str, ...] = ()


def parse_duckdb_spec(spec: str) -> tuple[Path, str, str] | None:
    """``"file.duckdb:schema.table"`` → (path, schema, table); None when it is no DuckDB spec.

    >>> parse_duckdb_spec("out/replay.duckdb:memories_v2.memories")
    (PosixPath('out/replay.duckdb'), 'memories_v2', 'memories')
    >>> parse_duckdb_spec("out/rm.duckdb:memories")[1:]
    ('main', 'memories')
    """
    match = _DUCKDB_FILE.match(spec)
    if match is None:
        return None
    table = match["table"]
    if not table:
        raise DiffError(f"{spec!r}: name the table as FILE.duckdb:SCHEMA.TABLE")
    schema, _, name = table.rpartition(".")
    return Path(match["file"]), (schema or "main"), name


def _describe(con: duckdb.DuckDBPyConnection, relation: str, label: str) -> dict[str, str]:
    try:
        rows = con.execute(f"describe select * from {relation}").fetchall()
    except duckdb.Error as exc:
        # DuckDB's "did you mean" names the file by the catalog it is attached as.
        line = re.sub(r"\b_wb_db\d+\.", "", error_line(exc))
        raise DiffError(f"cannot read {label}: {line}") from None
    return {str(r[0]): str(r[1]) for r in rows}


def _attach(con: duckdb.DuckDBPyConnection, path: Path) -> str:
    """Attach ``path`` read-only once per connection; returns its catalog name."""
    resolved = str(path.resolve())
    for name, db_path in con.execute(
        "select database_name, path from duckdb_databases()"
    ).fetchall():
        if db_path and str(Path(db_path).resolve()) == resolved:
            return str(name)
    if not path.is_file():
        raise DiffError(f"no DuckDB file at {path}")
    catalog = f"_wb_db{len(con.execute('from duckdb_databases()').fetchall())}"
    try:
        con.execute(f"attach {literal(resolved)} as {ident(catalog)} (read_only)")
    except duckdb.Error as exc:
        raise DiffError(_cannot_open(path, exc)) from None
    return catalog


def _cannot_open(path: Path, exc: duckdb.Error) -> str:
    """Why ``path`` cannot be attached, in one line; DuckDB's words for a file this
    process holds open elsewhere (a notebook's own ``duckdb.connect``) name no fix."""
    if "Unique file handle conflict" in str(exc):
        return (
            f"cannot open {path}: this process has it open already (a duckdb.connect() in "
            "this notebook?); close that connection first, then diff"
        )
    return f"cannot open {path}: {error_line(exc)}"


def read_live_table(dsn: str, table: str) -> pa.Table:
    """A live Postgres table, read as a snapshot is (exact decimals, one binary COPY)."""
    con = connect(dsn)
    try:
        return read_table(con, table)
    finally:
        con.close()


@contextlib.contextmanager
def files_attached(con: duckdb.DuckDBPyConnection, sides: Iterable[Side]) -> Iterator[None]:
    """Attach the sides' DuckDB files (read-only, same catalog names) while a query runs.

    A diff must not hold its files open between calls: DuckDB opens a file
    once per process, so a lingering read-only attach would make the next
    ``wb.replay`` into the same file fail in a notebook.
    """
    wanted = {(s.duckdb_table.catalog, s.duckdb_table.path) for s in sides if s.duckdb_table}
    present = {
        str(r[0]) for r in con.execute("select database_name from duckdb_databases()").fetchall()
    }
    opened = []
    try:
        for catalog, path in sorted(wanted):
            if catalog not in present:
                try:
                    con.execute(
                        f"attach {literal(str(path.resolve()))} as {ident(catalog)} (read_only)"
                    )
                except duckdb.Error as exc:
                    raise DiffError(_cannot_open(path, exc)) from None
                opened.append(catalog)
        yield
    finally:
        for catalog in opened:
            con.execute(f"detach {ident(catalog)}")


def detach_files(con: duckdb.DuckDBPyConnection, sides: Iterable[Side]) -> None:
    """Close the sides' DuckDB files; :func:`files_attached` reopens them on demand."""
    for catalog in sorted({s.duckdb_table.catalog for s in sides if s.duckdb_table}):
        con.execute(f"detach database if exists {ident(catalog)}")


def _snapshot_info(path: str) -> SnapshotInfo | None:
    """The snapshot metadata of a Parquet file; None for a plain Parquet file."""
    try:
        return read_snapshot_info(path)
    except SourceError:
        return None


def _postgres_spec(spec: str) -> tuple[str, str, str]:
    """``postgresql://…#SCHEMA.TABLE`` → (DSN, table, label with the password hidden)."""
    # The last '#': a password may hold one (percent-encoded or not).
    dsn, _, name = spec.rpartition("#") if "#" in spec else (spec, "", "")
    remember(dsn)
    label = redact(spec)
    if not name:
        raise DiffError(f"{label}: name the table as postgresql://…#SCHEMA.TABLE")
    return dsn, name, label


def check_side(side: str | os.PathLike[str], role: str) -> list[str]:
    """Refuse now, in one line, a side :func:`resolve_side` would refuse, without reading it.

    For a command that has long work to do before its diff: a mistyped
    table should not cost the user a replay first. Returns the side's
    column names, for checking the options that name them.
    """
    spec = os.fspath(side)
    if spec.startswith(("postgresql://", "postgres://")):
        dsn, name, _ = _postgres_spec(spec)
        con = connect(dsn)
        try:
            return list(table_columns(con, name))
        finally:
            con.close()
    with duckdb.connect() as con:  # a file side is only described: cheap
        return list(resolve_side(con, spec, role).columns)


def resolve_side(con: duckdb.DuckDBPyConnection, side: Any, role: str) -> Side:
    """Register ``side`` in ``con`` and describe it; ``role`` is ``candidate`` or ``live``."""
    view = f"_wb_{role}_source"
    if isinstance(side, pl.LazyFrame):
        side = side.collect()
    if isinstance(side, pa.RecordBatchReader):  # DuckDB 1.4+'s relation.arrow()
        side = side.read_all()
    if isinstance(side, pl.DataFrame | pa.Table | duckdb.DuckDBPyRelation):
        kind = {
            pl.DataFrame: "Polars DataFrame",
            pa.Table: "Arrow table",
        }.get(type(side), "DuckDB relation")
        table = side.to_arrow() if isinstance(side, pl.DataFrame) else side
        if isinstance(table, duckdb.DuckDBPyRelation):
            # A relation belongs to its own connection; Arrow carries it across.
            table = table.to_arrow_table()
        con.register(view, table)
        return Side(role, kind, ident(view), _describe(con, ident(view), kind), keep_alive=[table])
    if not isinstance(side, str | os.PathLike):
        raise DiffError(f"{role}: cannot diff a {type(side).__name__}")
    spec = os.fspath(side)
    if spec.startswith(("postgresql://", "postgres://")):
        dsn, name, label = _postgres_spec(spec)
        pulled = read_live_table(dsn, name)
        con.register(view, pulled)
        return Side(
            role,
            label,
            ident(view),
            _describe(con, ident(view), label),
            keep_alive=[pulled],
            case_insensitive=tuple(case_insensitive_columns(pulled.schema)),
        )
    parsed = parse_duckdb_spec(spec)
    if parsed is not None:
        path, schema, name = parsed
        table_ref = DuckDBTable(path, _attach(con, path), schema, name)
        return Side(role, spec, table_ref.sql, _describe(con, table_ref.sql, spec), table_ref)
    if spec.endswith(".parquet") or any(ch in spec for ch in "*?["):
        if not any(ch in spec for ch in "*?[") and not Path(spec).is_file():
            raise DiffError(f"no Parquet file at {spec}")
        relation = f"read_parquet({literal(spec)})"
        snapshot = _snapshot_info(spec) if Path(spec).is_file() else None
        citext = tuple(case_insensitive_columns(pq.read_schema(spec))) if snapshot else ()
        return Side(
            role,
            spec,
            relation,
            _describe(con, relation, spec),
            snapshot=snapshot,
            case_insensitive=citext,
        )
    raise DiffError(
        f"{role} {redact(spec)!r}: expected FILE.duckdb:SCHEMA.TABLE, a .parquet file "
        "or postgresql://…#SCHEMA.TABLE"
    )
