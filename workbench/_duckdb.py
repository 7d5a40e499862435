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

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from workbench._env import in_notebook
from workbench._sql import ident

__all__ = ["bounded_memory", "connect", "error_line", "to_arrow", "to_polars"]


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
    >>> to_polars(connect().sql(  # past Arrow's interval (292 years), and past a duration
    ...     "select interval '3000000 hours' as big, interval '200000000 days' as huge")).row(0)
    (datetime.timedelta(days=125000), '200000000 days')
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
    types = _types(relation)
    # An interval is read three ways (text, exact microseconds, whether it has months)
    # and picked from after: Arrow's interval wraps past 292 years, and a duration is
    # only a duration without months. One nested in a list or struct is text.
    columns = []
    for name, typ in types.items():
        col = ident(name)
        if typ == "UUID" or (typ != "INTERVAL" and "INTERVAL" in typ):
            columns.append(f"CAST({col} AS VARCHAR) AS {col}")
        elif typ == "INTERVAL":
            columns += [
                f"CAST({col} AS VARCHAR) AS {col}",
                f"try(epoch_us(TIMESTAMP '1970-01-01' + {col})) AS {ident(name + _MICROS)}",
                f"datepart('year', {col}) * 12 + datepart('month', {col}) <> 0 "
                f"AS {ident(name + _MONTHS)}",
            ]
        else:
            columns.append(col)
    table = _arrow(relation.select(", ".join(columns)))
    text = {
        name
        for name, column in zip(table.column_names, table.columns, strict=True)
        if _infinite(column)
    }
    for group in map(set, together):
        if group & text:
            text |= group & set(table.column_names)
    if text:  # through DuckDB, before intervals are durations (it would make them intervals)
        table = _arrow(_as_text(connect().from_arrow(table), text))
    for name in (n for n, t in types.items() if t == "INTERVAL"):
        micros, months = table.column(name + _MICROS), table.column(name + _MONTHS)
        table = table.drop_columns([name + _MICROS, name + _MONTHS])
        if not pc.any(months).as_py() and micros.null_count == table.column(name).null_count:
            table = table.set_column(
                table.column_names.index(name), name, micros.cast(pa.duration("us"))
            )
    return table


#: Suffixes of an interval column's microseconds and months while :func:`to_arrow` reads it.
_MICROS, _MONTHS = "__wb_interval_micros", "__wb_interval_months"


def _types(relation: duckdb.DuckDBPyRelation) -> dict[str, str]:
    return dict(zip(relation.columns, map(str, relation.types), strict=True))


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


@contextlib.contextmanager
def bounded_memory(con: duckdb.DuckDBPyConnection, share: float = 0.2) -> Iterator[None]:
    """Run the block with DuckDB's memory capped at ``share`` of the machine's (at least
    1 GB), spilling to a temporary directory of its own beyond that; as it was after.

    DuckDB's own cap is 80% of the machine, and a query that could spill holds all it
    can first: the causation graph of 10M events took 11 GB. A block that runs out of
    memory anyway (an operator that cannot spill) raises ``duckdb.OutOfMemoryException``:
    the caller may run it again uncapped.

    >>> con = connect()
    >>> _ = con.execute("set memory_limit = '3GB'")
    >>> with bounded_memory(con):
    ...     spill = con.sql("select current_setting('temp_directory')").fetchall()[0][0]
    ...     con.sql("select count(*) from range(1000)").fetchall()
    [(1000,)]
    >>> con.sql("select current_setting('memory_limit')").fetchall(), os.path.exists(spill)
    ([('2.7 GiB',)], False)
    """
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    cap = max(2**30, int(physical * share))

    def setting(name: str) -> str:
        return str(con.execute(f"select current_setting('{name}')").fetchall()[0][0])

    limit, spill_to = setting("memory_limit"), setting("temp_directory")
    con.execute("reset memory_limit")
    limit_was_default = setting("memory_limit") == limit  # restored by a reset: no rounding
    spill = tempfile.mkdtemp(prefix="workbench-spill-")
    try:
        con.execute(f"set memory_limit = '{cap // 2**20}MB'")
        con.execute(f"set temp_directory = '{spill.replace(chr(39), chr(39) * 2)}'")
        yield
    finally:
        con.execute(
            "reset memory_limit" if limit_was_default else f"set memory_limit = '{_within(limit)}'"
        )
        con.execute(f"set temp_directory = '{spill_to.replace(chr(39), chr(39) * 2)}'")
        shutil.rmtree(spill, ignore_errors=True)


def _within(shown: str) -> str:
    """A memory limit as DuckDB shows it (cut to one decimal), set back within the same
    tenth: set as shown, ``2.7 GiB`` would read ``2.6 GiB``, lower each time.

    >>> _within("2.7 GiB"), _within("512.0 MiB"), _within("unlimited")
    ('2.75 GiB', '512.05 MiB', 'unlimited')
    """
    number, _, unit = shown.partition(" ")
    try:
        return f"{float(number) + 0.05:g} {unit}"
    except ValueError:
        return shown
