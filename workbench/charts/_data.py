"""Getting frames into a chart small: aggregate in DuckDB, then inline the values.

Charts never hand a large frame to Altair: each chart aggregates first (time
buckets, top-N with the rest summed into one row), then inlines the result as
``alt.Data(values=...)``, which bypasses Altair's data transformers, so
``MaxRowsError`` cannot happen and the spec needs no files or network.
"""

from __future__ import annotations

from typing import Final

import altair as alt
import polars as pl

from workbench import _duckdb
from workbench.analysis._buckets import BUCKET_SECONDS

__all__ = [
    "MAX_POINTS",
    "coarsen",
    "count_axis",
    "cut_middle",
    "inline",
    "nothing_to_show",
    "require",
    "top_n",
    "utc_time",
    "utc_tooltip",
]

#: Upper bound on rows a chart aggregates down to.
MAX_POINTS: Final[int] = 2_000


def count_axis(counts: pl.Series) -> alt.Axis:
    """An axis of whole ``counts``: no tick between two whole numbers.

    Vega drops ``tickMinStep`` as vl-convert renders it, so an axis to 2 read
    ``0 1 1 2 2`` (0.5 and 1.5 rounded); up to 10 the ticks are listed instead.

    >>> count_axis(pl.Series([2, 1])).to_dict()["values"]
    [0, 1, 2]
    >>> count_axis(pl.Series([500])).to_dict()["tickMinStep"]
    1
    """
    largest = counts.cast(pl.Float64).max()
    if isinstance(largest, float) and largest <= 10:
        return alt.Axis(format=",d", values=list(range(int(largest) + 1)))
    return alt.Axis(format=",d", tickMinStep=1)


def require(frame: pl.DataFrame, columns: dict[str, str], chart: str) -> None:
    """Raise ``ValueError`` naming the missing columns a chart needs (column → meaning),
    and ``TypeError`` for what is no frame (a check's result: its ``.chart()`` draws it).

    >>> require({"a": 1}, {"a": "x"}, "gaps_chart")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    TypeError: gaps_chart takes a Polars frame with the columns a, not a dict...
    """
    if not isinstance(frame, pl.DataFrame):
        own = " (call .chart() on it to draw it)" if hasattr(frame, "chart") else ""
        raise TypeError(
            f"{chart} takes a Polars frame with the columns {', '.join(columns)}, "
            f"not a {type(frame).__name__}{own}"
        )
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        wanted = "; ".join(f"{c} ({columns[c]})" for c in missing)
        raise ValueError(f"{chart} needs the columns {wanted}")


def utc_time(field: str, title: str) -> alt.X:
    """A time axis in UTC, saying so: Vega draws times in the viewer's zone otherwise, and
    a chart would then disagree with the tables beside it. Labels are 24-hour (Vega's own
    are 12-hour without AM/PM: 19:44 read "07:44"), a date at midnight.

    >>> utc_time("bucket", "recorded at").to_dict()["scale"], utc_time("b", "t").to_dict()["title"]
    ({'type': 'utc'}, 't (UTC)')
    """
    return alt.X(
        f"{field}:T",
        title=f"{title} (UTC)",
        scale=alt.Scale(type="utc"),
        # Labels of its own make Vega's own overlap removal lax: greedy, with a gap.
        axis=alt.Axis(labelExpr=_UTC_LABEL, labelOverlap="greedy", labelSeparation=6),
    )


# A tick between whole seconds (a span of a few seconds) shows its milliseconds: cut to
# the second, a label stood 0.8 s from the tick under it.
#: Pixels a :func:`cut_middle` label may take (44 characters at Vega's 10 px font): a
#: limit Vega lays the axis title out by (with none it drew the title over the labels).
CUT_WIDTH: Final[int] = 300


def cut_middle(limit: int = 44) -> str:
    """A label expression keeping a long name's start and end: names that share a prefix
    (``com.example.platform.memoryservice.…``, a source before each type) differ at the
    end, which Vega's own cut drops.

    >>> cut_middle(10)
    "length(datum.label) > 10 ? slice(datum.label, 0, 3) + '…' + slice(datum.label, -6) : datum.label"
    """
    head = limit // 3
    return (
        f"length(datum.label) > {limit} ? slice(datum.label, 0, {head}) + '…' + "
        f"slice(datum.label, -{limit - head - 1}) : datum.label"
    )


_UTC_LABEL = (
    "utchours(datum.value) == 0 && utcminutes(datum.value) == 0 && utcseconds(datum.value) == 0"
    " && utcmilliseconds(datum.value) == 0"
    " ? utcFormat(datum.value, '%b %d')"
    " : utcFormat(datum.value, utcmilliseconds(datum.value) != 0 ? '%H:%M:%S.%L'"
    " : utcseconds(datum.value) == 0 ? '%H:%M' : '%H:%M:%S')"
)


def utc_tooltip(field: str, title: str | None = None) -> alt.Tooltip:
    """A time in a tooltip, in UTC to the microsecond's second, as :func:`utc_time` draws it."""
    return alt.Tooltip(
        f"{field}:T",
        title=f"{title or field} (UTC)",
        timeUnit="utcyearmonthdatehoursminutesseconds",
    )


def nothing_to_show(title: str, message: str) -> alt.Chart:
    """A chart that says there is nothing to draw, instead of empty axes.

    Empty data gives Vega infinite scale extents (a console warning each) and
    a bare frame a reader takes for a rendering failure.

    >>> nothing_to_show("Missing positions", "no gaps").to_dict()["mark"]["type"]
    'text'
    """
    return (
        alt.Chart(alt.Data(values=[{"message": message}]))
        .mark_text(align="left", baseline="middle", fontSize=13, color="#666")
        .encode(text="message:N")
        .properties(title=title, width=600, height=30)
    )


def inline(frame: pl.DataFrame) -> alt.Data:
    """The frame as inline values; temporal columns as ISO-8601 UTC text."""
    exprs = []
    for name, dtype in frame.schema.items():
        if isinstance(dtype, pl.Datetime):
            col = pl.col(name)
            if dtype.time_zone is None:
                col = col.dt.replace_time_zone("UTC")
            exprs.append(
                col.dt.convert_time_zone("UTC").dt.to_string("%Y-%m-%dT%H:%M:%S%.6fZ").alias(name)
            )
        elif isinstance(dtype, pl.Enum | pl.Categorical):
            exprs.append(pl.col(name).cast(pl.String))
        elif isinstance(dtype, pl.List):
            exprs.append(pl.col(name).cast(pl.List(pl.String)).list.join(", ").alias(name))
    return alt.Data(values=frame.with_columns(exprs).to_dicts() if exprs else frame.to_dicts())


def coarsen(
    frame: pl.DataFrame,
    time: str,
    keys: list[str],
    *,
    sums: tuple[str, ...] = (),
    maxes: tuple[str, ...] = (),
    limit: int = MAX_POINTS,
) -> pl.DataFrame:
    """Re-bucket a time series in DuckDB until it has at most ``limit`` rows.

    Sums add up and maxima take the maximum, so nothing is dropped.

    >>> import datetime as dt
    >>> f = pl.DataFrame({"t": [dt.datetime(2024, 1, 1, 0, 0, s) for s in range(50)], "n": [1] * 50})
    >>> coarsen(f, "t", [], sums=("n",), limit=5)["n"].to_list()
    [10, 10, 10, 10, 10]
    """
    if frame.height <= limit:
        return frame
    aggs = [f'sum("{c}") as "{c}"' for c in sums] + [f'max("{c}") as "{c}"' for c in maxes]
    key_sql = "".join(f'"{k}", ' for k in keys)
    con = _duckdb.connect()
    con.register("frame", frame)
    out = frame
    for width in BUCKET_SECONDS:
        out = con.sql(
            f'select {key_sql}time_bucket(interval \'{width} seconds\', "{time}") as "{time}", '
            f"{', '.join(aggs)} from frame group by all order by all"
        ).pl()
        if out.height <= limit:
            break
    return out.select(frame.columns).cast(frame.schema)


def top_n(frame: pl.DataFrame, key: str, value: str, *, limit: int = 40) -> pl.DataFrame:
    """Keep the ``limit - 1`` largest rows by ``value`` and sum the rest into one ``(N others)`` row.

    >>> f = pl.DataFrame({"k": list("abcd"), "v": [4, 3, 2, 1]})
    >>> top_n(f, "k", "v", limit=3).rows()
    [('a', 4), ('b', 3), ('(2 others)', 3)]
    """
    if frame.height <= limit:
        return frame
    numeric = [c for c, t in frame.schema.items() if t.is_numeric() and c != key]
    con = _duckdb.connect()
    con.register("frame", frame)
    keep = limit - 1
    sums = ", ".join(f'sum("{c}") as "{c}"' for c in numeric)
    out = con.sql(
        f"""with ranked as (select *, row_number() over (order by "{value}" desc, "{key}") as rn
                             from frame)
            select 0 as rest, "{key}"::varchar as "{key}", {", ".join(f'"{c}"' for c in numeric)}
            from ranked where rn <= {keep}
            union all
            select 1, '(' || count(*) || ' others)', {sums} from ranked where rn > {keep}
            order by rest, "{value}" desc"""
    ).pl()
    return out.select([key, *numeric]).cast({c: frame.schema[c] for c in numeric})
