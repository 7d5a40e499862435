"""Finding the replay lineage of a candidate table in its DuckDB file.

The replay engine writes projection ``name`` version ``v`` into schema
``<name>_v<v>``, next to ``_lineage`` (a view with one row per output row
and event that wrote it, ``key`` = compact JSON of the key columns) and
``_replay_info`` (the archive it replayed). ``wb.promote`` adds schema
``<name>`` of views onto one version, so a candidate given as
``<name>.<table>`` is followed through its view to the versioned schema.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

import duckdb

from workbench._sql import ident
from workbench.diff.sides import DuckDBTable
from workbench.errors import DiffError
from workbench.replay.store import lineage_key_sql, unfinished_replay

__all__ = ["Lineage", "find_lineage", "key_json_sql"]

_VERSIONED_SCHEMA = re.compile(r'"?([A-Za-z_][A-Za-z0-9_]*_v\d+)"?\s*\.')


@dataclass(frozen=True)
class Lineage:
    """Where the lineage of one candidate table lives."""

    catalog: str
    schema: str
    table_name: str
    #: The replay as the diff saw it (:meth:`replay_stamp`), for :meth:`require_unchanged`.
    stamp: tuple[Any, ...] = ()

    @property
    def relation(self) -> str:
        """The lineage rows of this table only, as a SQL subquery."""
        table = self.table_name.replace("'", "''")
        return (
            f"(select * from {ident(self.catalog)}.{ident(self.schema)}._lineage "
            f"where table_name = '{table}')"
        )

    def key_order(self, con: duckdb.DuckDBPyConnection, key: list[str]) -> list[str]:
        """``key`` in the table's primary-key order: lineage keys are rendered in it,
        whatever order the diff names the key columns in."""
        from workbench.replay.store import table_key

        found = table_key(con, self.schema, self.table_name, self.catalog)
        if found and sorted(found) == sorted(key):
            return found
        return key

    def archive_path(self, con: duckdb.DuckDBPyConnection) -> str | None:
        """The archive root the replay read, from ``_replay_info`` (None when absent)."""
        if not _has_table(con, self.catalog, self.schema, "_replay_info"):
            return None
        rows = con.execute(
            f"select archive from {ident(self.catalog)}.{ident(self.schema)}._replay_info "
            "order by finished_at desc nulls last limit 1"
        ).fetchall()
        return str(rows[0][0]) if rows and rows[0][0] else None

    def sources(self, con: duckdb.DuckDBPyConnection) -> list[str]:
        """The archive sources the replay read (from its checkpoints)."""
        if not _has_table(con, self.catalog, self.schema, "_checkpoint"):
            return []
        rows = con.execute(
            f"select distinct source from {ident(self.catalog)}.{ident(self.schema)}._checkpoint "
            "order by all"
        ).fetchall()
        return [str(r[0]) for r in rows]

    def replay_stamp(self, con: duckdb.DuckDBPyConnection) -> tuple[Any, ...]:
        """When the replay into this schema started and how far it got: a rebuild or a
        resumed run changes it."""
        at = f"{ident(self.catalog)}.{ident(self.schema)}"
        info = (
            con.execute(
                f"select list((started_at, finished_at, events_applied) order by started_at) "
                f"from {at}._replay_info"
            ).fetchall()[0][0]
            if _has_table(con, self.catalog, self.schema, "_replay_info")
            else None
        )
        checkpoints = (
            con.execute(
                f"select list((source, last_position) order by source) from {at}._checkpoint"
            ).fetchall()[0][0]
            if _has_table(con, self.catalog, self.schema, "_checkpoint")
            else None
        )
        return (str(info), str(checkpoints))

    def require_unchanged(self, con: duckdb.DuckDBPyConnection, table: DuckDBTable) -> None:
        """Refuse to explain a diff whose candidate was replayed again (or promoted to
        another version) since: its rows and lineage are no longer the ones compared."""
        now = find_lineage(con, table)
        if now is not None and now.schema == self.schema and now.stamp == self.stamp:
            return
        raise DiffError(
            f"the candidate {table.schema}.{table.table} was "
            + ("replayed again" if now is not None and now.schema == self.schema else "changed")
            + " after this diff: its rows and lineage are not the ones compared; "
            "run the diff again"
        )

    def reached(self, con: duckdb.DuckDBPyConnection) -> int | None:
        """The last position the replay applied (its checkpoint), None when it has none."""
        if not _has_table(con, self.catalog, self.schema, "_checkpoint"):
            return None
        ((last,),) = con.execute(
            f"select max(last_position) from {ident(self.catalog)}.{ident(self.schema)}._checkpoint"
        ).fetchall()
        return None if last is None else int(last)

    def unfinished(self, con: duckdb.DuckDBPyConnection) -> int | None:
        """The checkpoint of a replay that has not finished (failed or still running), else None."""
        return unfinished_replay(con, self.schema, self.catalog)


def _has_table(con: duckdb.DuckDBPyConnection, catalog: str, schema: str, table: str) -> bool:
    """Whether ``table`` exists as a table or a view (the engine's ``_lineage`` is a view)."""
    return bool(
        con.execute(
            "select count(*) from (select database_name, schema_name, table_name "
            "from duckdb_tables() union all select database_name, schema_name, view_name "
            "from duckdb_views()) where database_name = ? and schema_name = ? and table_name = ?",
            [catalog, schema, table],
        ).fetchall()[0][0]
    )


def find_lineage(con: duckdb.DuckDBPyConnection, table: DuckDBTable) -> Lineage | None:
    """The lineage of ``table``: in its own schema, or in the versioned schema its view reads."""
    if _has_table(con, table.catalog, table.schema, "_lineage"):
        return _stamped(con, Lineage(table.catalog, table.schema, table.table))
    views = con.execute(
        "select sql from duckdb_views() "
        "where database_name = ? and schema_name = ? and view_name = ?",
        [table.catalog, table.schema, table.table],
    ).fetchall()
    for (sql,) in views:
        for schema in _VERSIONED_SCHEMA.findall(sql or ""):
            if _has_table(con, table.catalog, schema, "_lineage"):
                return _stamped(con, Lineage(table.catalog, schema, table.table))
    return None


def _stamped(con: duckdb.DuckDBPyConnection, lineage: Lineage) -> Lineage:
    return dataclasses.replace(lineage, stamp=lineage.replay_stamp(con))


def key_json_sql(key: list[str], prefix: str = "") -> str:
    """DuckDB SQL of the lineage key: compact JSON of the key columns in key order.

    >>> key_json_sql(["tenant", "id"], "d.")
    'to_json(struct_pack("tenant" := d."tenant", "id" := d."id"))'
    """
    return lineage_key_sql(key, [f"{prefix}{ident(k)}" for k in key])
