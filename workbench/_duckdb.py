"""Every DuckDB connection the workbench opens, opened one way.

DuckDB renders ``TIMESTAMPTZ`` values, casts them to ``DATE`` and hands
them to Polars and Python in the session's time zone, which defaults to the
machine's. Envelope times are UTC, so each session is pinned to UTC: the
same archive gives the same frames, dates and charts on every machine.

>>> con = connect()
>>> con.sql("select timestamptz '2026-01-01 23:30:00+00'::date").fetchall()
[(datetime.date(2026, 1, 1),)]
"""

from __future__ import annotations

import duckdb

__all__ = ["connect"]


def connect(database: str = ":memory:", *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection whose session time zone is UTC."""
    con = duckdb.connect(database, read_only=read_only)
    con.execute("set TimeZone = 'UTC'")
    return con
