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

from collections.abc import Iterable

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from workbench._env import in_notebook
from workbench._sql import ident

__all__ = ["connect", "error_line", "to_arrow", "to_polars"]


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


def to_polars(
    relation: duckdb.DuckDBPyRelation, *, together: Iterable[Iterable[str]] = ()
) -> pl.DataFrame:
    """``relation.pl()``, as :func:`to_arrow` gives it.

    >>> to_polars(connect().sql("select 1 as n, interval '1 month 2 hours' as i")).row(0)
    (1, '1 month 02:00:00')
    >>> to_polars(connect().sql("select interval '1 day 2 hours' as i")).row(0)
    (datetime.timedelta(days=1, seconds=7200),)
    >>> to_polars(connect().sql("select date 'infinity' as d, date '2024-05-01' as e")).row(0)
    ('infinity', datetime.date(2024, 5, 1))
    """
    frame = pl.from_arrow(to_arrow(relation, together=together))
    assert isinstance(frame, pl.DataFrame)
    return frame


def to_arrow(
    relation: duckdb.DuckDBPyRelation, *, together: Iterable[Iterable[str]] = ()
) -> pa.Table:
    """``relation`` as Arrow that Polars, pandas and Parquet readers all take.

    - A UUID as text (Polars reads one from Parquet as 16 opaque bytes).
    - An interval as a duration when no value has months (a month has no fixed
      length), else as text: Polars refuses Arrow's interval.
    - A time column that holds ``±infinity`` as text. Polars has no infinite
      datetime: it holds one as a date beyond its range and panics showing it. As
      null, a "valid until never" would pass for an unknown one; as text the
      column says ``infinity`` as Postgres and DuckDB write it, and its other
      values in ISO form (as a decimal column holding NaN is read).

    A column made text takes the others of its group in ``together`` with it: a
    diff's candidate and live sides of one column keep one type.

    >>> t = to_arrow(connect().sql(
    ...     "select timestamp 'infinity' as a, timestamp '2024-05-01' as b, 1 as c"),
    ...     together=[("a", "b")])
    >>> t.to_pylist()
    [{'a': 'infinity', 'b': '2024-05-01 00:00:00', 'c': 1}]
    """
    table = _arrow(_as_text(relation, {c for c, t in _types(relation).items() if t == "UUID"}))
    text = {
        name
        for name, column in zip(table.column_names, table.columns, strict=True)
        if _infinite(column)
        or (_holds_interval(column.type) and not pa.types.is_interval(column.type))
        or (pa.types.is_interval(column.type) and _durations(column) is None)
    }
    for group in map(set, together):
        if group & text:
            text |= group & set(table.column_names)
    if text:
        table = _arrow(_as_text(connect().from_arrow(table), text))
    for index, column in enumerate(table.columns):
        if pa.types.is_interval(column.type):
            table = table.set_column(index, table.field(index).name, _durations(column))
    return table


def _holds_interval(typ: pa.DataType) -> bool:
    """Whether ``typ`` is an interval or nests one (a list or struct of intervals)."""
    if pa.types.is_interval(typ):
        return True
    return any(_holds_interval(typ.field(i).type) for i in range(typ.num_fields))


def _types(relation: duckdb.DuckDBPyRelation) -> dict[str, str]:
    return dict(zip(relation.columns, map(str, relation.types), strict=True))


def _durations(column: pa.ChunkedArray) -> pa.ChunkedArray | None:
    """An interval column as microsecond durations, or None when a value has months."""
    chunks = []
    for chunk in column.chunks:
        # month_day_nano is 16 bytes a value: months, days (int32) and nanoseconds (int64).
        raw = np.frombuffer(
            chunk.buffers()[1],
            dtype=np.dtype([("months", "<i4"), ("days", "<i4"), ("nanos", "<i8")]),
            count=chunk.offset + len(chunk),
        )[chunk.offset :]
        valid = ~np.asarray(chunk.is_null())
        if (raw["months"][valid] != 0).any():
            return None
        micros = raw["days"].astype(np.int64) * 86_400_000_000 + raw["nanos"] // 1_000
        chunks.append(pa.array(micros, type=pa.duration("us"), mask=~valid))
    return pa.chunked_array(chunks, type=pa.duration("us"))


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
