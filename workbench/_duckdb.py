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
import pyarrow as pa
import pyarrow.compute as pc

from workbench._env import in_notebook
from workbench._sql import ident

__all__ = ["connect", "error_line", "portable", "to_polars"]


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
    return _as_text(relation, {c for c, typ in types.items() if typ in _AS_TEXT})


def to_polars(relation: duckdb.DuckDBPyRelation) -> pl.DataFrame:
    """``relation.pl()``, with the columns Polars cannot import (see :func:`portable`)
    and time columns that hold ``±infinity`` as text.

    Polars has no infinite datetime: it holds one as a date beyond its range
    and panics showing it. As null, a "valid until never" would pass for an
    unknown one and drop out of every comparison; as text the column says
    ``infinity`` as Postgres and DuckDB write it, and its other values in ISO
    form (as a decimal column holding NaN is read).

    >>> to_polars(connect().sql("select 1 as n, interval '1 day 2 hours' as i")).row(0)
    (1, '1 day 02:00:00')
    >>> to_polars(connect().sql("select date 'infinity' as d, date '2024-05-01' as e")).row(0)
    ('infinity', datetime.date(2024, 5, 1))
    """
    table = _arrow(portable(relation))
    infinite = {
        c for c, column in zip(table.column_names, table.columns, strict=True) if _infinite(column)
    }
    if infinite:
        table = _arrow(_as_text(connect().from_arrow(table), infinite))
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def _as_text(relation: duckdb.DuckDBPyRelation, names: set[str]) -> duckdb.DuckDBPyRelation:
    """``relation`` with the columns ``names`` cast to ``VARCHAR`` (as DuckDB writes them)."""
    if not names:
        return relation
    return relation.select(
        ", ".join(
            f"CAST({ident(c)} AS VARCHAR) AS {ident(c)}" if c in names else ident(c)
            for c in relation.columns
        )
    )


def _arrow(relation: duckdb.DuckDBPyRelation) -> pa.Table:
    """The relation as one Arrow table (DuckDB 1.4+ hands a batch reader)."""
    result = relation.arrow()
    return result.read_all() if isinstance(result, pa.RecordBatchReader) else result


def _infinite(column: pa.ChunkedArray) -> bool:
    """Whether a timestamp or date column holds DuckDB's ``±infinity`` (the largest
    integer of its width, or its negation)."""
    typ = column.type
    if pa.types.is_timestamp(typ):
        ints, top = pa.int64(), 2**63 - 1
    elif pa.types.is_date32(typ):
        ints, top = pa.int32(), 2**31 - 1
    else:
        return False
    extremes = pc.min_max(column.cast(ints))
    return extremes["max"].as_py() == top or extremes["min"].as_py() == -top


#: DuckDB's hint lines worth keeping when an error is told in one line.
_HINTS = ("Did you mean", "Candidate bindings:", "Candidate functions:")


def error_line(exc: BaseException) -> str:
    """DuckDB's error in one line: its first, and its hint when it gives one.

    >>> con = connect()
    >>> _ = con.execute("create table memories (memory_id int)")
    >>> try:
    ...     con.execute("select * from memory")
    ... except duckdb.Error as exc:
    ...     print(error_line(exc))
    Catalog Error: Table with name memory does not exist! Did you mean "memories"?
    """
    lines = str(exc).splitlines() or [type(exc).__name__]
    hint = next((line.strip() for line in lines[1:3] if line.startswith(_HINTS)), None)
    return f"{lines[0]} {hint}" if hint and not lines[0].endswith(hint) else lines[0]
