"""The diff summary: changed rows per column of a read model."""

from __future__ import annotations

import altair as alt
import polars as pl

from workbench.charts._data import inline, require, top_n

__all__ = ["diff_summary"]


def diff_summary(summary: pl.DataFrame) -> alt.Chart:
    """A bar per column: how many rows differ in it between candidate and live.

    ``summary``: ``column`` (name) and ``changed`` (rows whose value
    differs). Beyond 40 columns the least changed are summed into one
    ``(N others)`` bar.

    >>> f = pl.DataFrame({"column": ["a", "b"], "changed": [3, 0]})
    >>> diff_summary(f).to_dict()["mark"]["type"]
    'bar'
    """
    require(summary, {"column": "column name", "changed": "rows differing"}, "diff_summary")
    frame = top_n(summary.select("column", "changed"), "column", "changed")
    return (
        alt.Chart(inline(frame))
        .mark_bar()
        .encode(
            x=alt.X("changed:Q", title="rows that differ"),
            y=alt.Y("column:N", sort="-x", title=None),
            tooltip=["column:N", "changed:Q"],
        )
        .properties(title="Differences by column", width=500)
    )
