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

from workbench._env import in_notebook

__all__ = ["connect", "portable", "to_polars"]


def connect(database: str = ":memory:", *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection whose session time zone is UTC.

    Outside Jupyter, DuckDB's own progress bar is off: the CLI draws its own,
    and a log or a pipe wants none.
    """
    con = duckdb.connect(database, read_only=read_only)
    con.execute("set TimeZone = 'UTC'")
    if not in_notebook():
        con.execute("set enable_progress_bar = false")
    return con


#: DuckDB types Polars (and Polars reading Parquet) cannot take: given as text.
_AS_TEXT = frozenset({"INTERVAL", "UUID"})


def portable(relation: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    """``relation`` with its ``INTERVAL`` and ``UUID`` columns as text.

    Polars has neither type: it refuses an interval, and reads a UUID from
    Parquet as 16 opaque bytes.

    >>> portable(connect().sql("select uuid '0b9c7e12-0000-4000-8000-000000000001' as u")).types
    [VARCHAR]
    """
    types = dict(zip(relation.columns, map(str, relation.types), strict=True))
    if _AS_TEXT.isdisjoint(types.values()):
        return relation
    return relation.select(
        ", ".join(
            f"CAST({q} AS VARCHAR) AS {q}" if typ in _AS_TEXT else q
            for q, typ in (('"' + c.replace('"', '""') + '"', t) for c, t in types.items())
        )
    )


def to_polars(relation: duckdb.DuckDBPyRelation) -> pl.DataFrame:
    """``relation.pl()``, with the columns Polars cannot import (see :func:`portable`) as text.

    >>> to_polars(connect().sql("select 1 as n, interval '1 day 2 hours' as i")).row(0)
    (1, '1 day 02:00:00')
    """
    return portable(relation).pl()
