"""Which views an archive's DuckDB connection has (side tables are optional)."""

from __future__ import annotations

from workbench.archive import ArchiveReader

__all__ = ["has_view"]


def has_view(reader: ArchiveReader, name: str) -> bool:
    """True when the archive's connection defines the view ``name`` (a side table with files)."""
    rows = reader.con.execute(
        "select count(*) from duckdb_views() where view_name = ? and not internal", [name]
    ).fetchall()
    return bool(rows[0][0])
