"""The diff charts: rows by status, and changed rows per column of a read model."""

from __future__ import annotations

import altair as alt
import polars as pl

from workbench.charts._data import (
    CUT_WIDTH,
    count_axis,
    cut_middle,
    inline,
    nothing_to_show,
    require,
)

__all__ = ["diff_overview", "diff_statuses", "diff_summary"]


def diff_statuses(counts: pl.DataFrame) -> alt.Chart | alt.LayerChart:
    """A bar per status (identical, changed, only in one side, ...) labelled with its row count.

    ``counts``: ``status`` and ``rows`` (``DiffSummary.counts()``); statuses
    with no rows are left out. The axis is linear, so bar lengths compare
    honestly; a handful of changed rows beside a million identical ones is a
    sliver, and its label says how many.

    >>> f = pl.DataFrame({"status": ["identical", "changed", "only_in_live"], "rows": [990, 7, 0]})
    >>> spec = diff_statuses(f).to_dict()
    >>> [layer["mark"]["type"] for layer in spec["layer"]], len(spec["data"]["values"])
    (['bar', 'text'], 2)
    """
    require(counts, {"status": "diff status", "rows": "rows with that status"}, "diff_statuses")
    frame = counts.select("status", "rows").filter(pl.col("rows") > 0)
    if frame.is_empty():
        return nothing_to_show("Rows by status", "Both sides are empty.")
    base = alt.Chart(inline(frame)).encode(
        x=alt.X("rows:Q", title="rows", axis=count_axis(frame["rows"])),
        y=alt.Y("status:N", sort="-x", title=None),
        tooltip=["status:N", alt.Tooltip("rows:Q", format=",d")],
    )
    bars = base.mark_bar().encode(
        color=alt.condition(
            "datum.status == 'identical'", alt.value("#4c78a8"), alt.value("#d62728")
        )
    )
    return alt.LayerChart(layer=[bars, _counts(base, "rows")], title="Rows by status", width=300)


def _counts(base: alt.Chart, field: str) -> alt.Chart:
    """Each bar's count written at its end: a bar of one row beside hundreds is a sliver."""
    return base.mark_text(align="left", dx=3).encode(text=alt.Text(f"{field}:Q", format=",d"))


def diff_summary(summary: pl.DataFrame) -> alt.Chart | alt.LayerChart:
    """A bar per column: how many rows differ in it between candidate and live.

    ``summary``: ``column`` (name) and ``changed`` (rows whose value
    differs); columns that never differ are left out. Beyond 40 columns the
    least changed are named in the subtitle, not summed into a bar: one row
    differs in many columns, so a sum counted it many times.

    >>> f = pl.DataFrame({"column": ["a", "b"], "changed": [3, 0]})
    >>> [layer["mark"]["type"] for layer in diff_summary(f).to_dict()["layer"]]
    ['bar', 'text']
    >>> diff_summary(f.with_columns(changed=0)).to_dict()["mark"]["type"]
    'text'
    """
    require(summary, {"column": "column name", "changed": "rows differing"}, "diff_summary")
    changed = summary.select("column", "changed").filter(pl.col("changed") > 0)
    if changed.is_empty():
        return nothing_to_show("Differences by column", "No column differs.")
    ranked = changed.sort(["changed", "column"], descending=[True, False])
    frame = ranked.head(_MOST_COLUMNS)
    rest = ranked.height - frame.height
    title = alt.Title(
        "Differences by column",
        subtitle=f"and {rest:,} more column(s), each in as many rows or fewer" if rest else "",
    )
    base = alt.Chart(inline(frame)).encode(
        x=alt.X("changed:Q", title="rows that differ", axis=count_axis(frame["changed"])),
        y=alt.Y(
            "column:N",
            sort=frame["column"].to_list(),  # ties by name, not as Vega meets them
            title=None,
            axis=alt.Axis(labelExpr=cut_middle(), labelLimit=CUT_WIDTH),
        ),
        tooltip=["column:N", alt.Tooltip("changed:Q", format=",d")],
    )
    bars = base.mark_bar(color="#d62728")
    return alt.LayerChart(layer=[bars, _counts(base, "changed")], title=title, width=300)


#: Columns :func:`diff_summary` draws a bar for, the most changed.
_MOST_COLUMNS = 40


def diff_overview(counts: pl.DataFrame, summary: pl.DataFrame) -> alt.HConcatChart:
    """:func:`diff_statuses` beside :func:`diff_summary` (what ``Diff.chart()`` shows).

    >>> c = pl.DataFrame({"status": ["identical", "changed"], "rows": [9, 1]})
    >>> s = pl.DataFrame({"column": ["a"], "changed": [1]})
    >>> len(diff_overview(c, s).to_dict()["hconcat"])
    2
    """
    return alt.hconcat(diff_statuses(counts), diff_summary(summary))
