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
import polars as pl

__all__ = ["connect", "to_polars"]


def connect(database: str = ":memory:", *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection whose session time zone is UTC."""
    con = duckdb.connect(database, read_only=read_only)
    con.execute("set TimeZone = 'UTC'")
    return con


def to_polars(relation: duckdb.DuckDBPyRelation) -> pl.DataFrame:
    """``relation.pl()``, with the columns Polars cannot import (``INTERVAL``) as text.

    >>> to_polars(connect().sql("select 1 as n, interval '1 day 2 hours' as i")).row(0)
    (1, '1 day 02:00:00')
    """
    types = dict(zip(relation.columns, map(str, relation.types), strict=True))
    if "INTERVAL" in types.values():
        relation = relation.select(
            ", ".join(
                f"CAST({q} AS VARCHAR) AS {q}" if typ == "INTERVAL" else q
                for q, typ in (('"' + c.replace('"', '""') + '"', t) for c, t in types.items())
            )
        )
    return relation.pl()
