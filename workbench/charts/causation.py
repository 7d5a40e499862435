"""The causation waterfall of one correlation: rows in tree order, x = time, parent links."""

from __future__ import annotations

from typing import Final

import altair as alt
import polars as pl

from workbench.charts._data import inline, nothing_to_show, require, utc_tooltip

__all__ = ["MAX_WATERFALL_ROWS", "causation_waterfall"]

#: Rows a waterfall shows; a larger tree shows its first rows and says so in the title.
MAX_WATERFALL_ROWS: Final[int] = 300


def causation_waterfall(nodes: pl.DataFrame, *, subtitle: str | None = None) -> alt.TopLevelMixin:
    """One row per event in tree order; a bar from the parent's time to the event's, links to the parent.

    ``nodes``: ``tree_order, event_id, event_type, parent_id, depth, event_at,
    parent_at, seconds, orphan`` (``Causation.nodes`` filtered to one
    ``correlation_id``). ``subtitle``: which correlation it is, and why that one.

    >>> import datetime as dt
    >>> t = [dt.datetime(2024, 1, 1, 0, 0, s) for s in range(3)]
    >>> f = pl.DataFrame({"tree_order": [1, 2, 3], "event_id": ["a", "b", "c"],
    ...                   "event_type": ["A", "B", "C"], "parent_id": [None, "a", "b"],
    ...                   "depth": [0, 1, 2], "event_at": t, "parent_at": [None, t[0], t[1]],
    ...                   "seconds": [None, 1.0, 1.0], "orphan": [False, False, False]})
    >>> [layer["mark"]["type"] for layer in causation_waterfall(f).to_dict()["layer"]]
    ['rule', 'bar', 'point']
    """
    require(
        nodes,
        {
            "tree_order": "tree order",
            "event_id": "event id",
            "event_type": "type",
            "parent_id": "parent event id",
            "depth": "depth",
            "event_at": "time",
            "parent_at": "parent time",
            "seconds": "seconds since parent",
            "orphan": "orphan flag",
        },
        "causation_waterfall",
    )
    if nodes.is_empty():
        return nothing_to_show("Causation waterfall", "No correlation to draw.")
    total = nodes.height
    shown = nodes.sort("tree_order").head(MAX_WATERFALL_ROWS)
    width = len(str(max(total, 1)))
    rows = shown.with_columns(
        row=pl.int_range(1, shown.height + 1).cast(pl.String).str.zfill(width)
        + " "
        + pl.lit("· ").repeat_by(pl.col("depth").fill_null(0)).list.join("")
        + pl.col("event_type").fill_null("?"),
    )
    # Linked by the parent's position too when the nodes give it: an id is unique per
    # producer only.
    exact = ["parent_id", "parent_position"]
    if {"global_position", *exact} <= set(rows.columns):
        # Positions are per source: two sources' event "7" at 7 would draw a row twice.
        parents = rows.select(
            parent_id="event_id", parent_position="global_position", parent_row="row"
        ).unique(exact, keep="first", maintain_order=True)
    else:
        exact = ["parent_id"]
        parents = rows.select(parent_id="event_id", parent_row="row").unique(
            "parent_id", keep="first"
        )
    frame = rows.join(parents, on=exact, how="left").select(
        "row",
        "event_id",
        "event_type",
        "parent_id",
        "depth",
        "event_at",
        "parent_at",
        "seconds",
        "orphan",
        "parent_row",
    )
    title = "Causation waterfall"
    if total > shown.height:
        title += f" (first {shown.height} of {total} events in tree order)"
    # Time since the first event shown, in the unit the span reads best in: a waterfall
    # is about delays, and Vega labels a sub-second span of clock times ".980".
    first = pl.col("event_at").min()
    start, span_us = frame.select(
        first.alias("start"), (pl.col("event_at").max() - first).dt.total_microseconds()
    ).row(0)
    unit, per = ("ms", 1_000.0) if (span_us or 0) < 10_000_000 else ("s", 1.0)
    after = f"{unit} after {start:%Y-%m-%d %H:%M:%S.%f}"[:-3] + " UTC" if start else unit
    frame = frame.with_columns(
        start=(pl.col("parent_at") - first).dt.total_microseconds() * per / 1e6,
        end=(pl.col("event_at") - first).dt.total_microseconds() * per / 1e6,
    )
    base = alt.Chart(inline(frame))
    x_title = alt.X("start:Q", title=after)
    y = alt.Y("row:N", title=None, sort="ascending", axis=alt.Axis(labelFontSize=9, labelLimit=300))
    links = (
        base.transform_filter("datum.parent_row != null")
        .mark_rule(color="#999", strokeDash=[2, 2])
        .encode(x=x_title, y=alt.Y("parent_row:N", sort="ascending"), y2="row:N")
    )
    bars = (
        base.transform_filter("datum.parent_at != null")
        .mark_bar(height=6, color="#4c78a8")
        .encode(x=x_title, x2="end:Q", y=y)
    )
    tooltip = [
        "event_type:N",
        "event_id:N",
        "parent_id:N",
        utc_tooltip("event_at"),
        "seconds:Q",
        "orphan:N",
    ]
    points = base.mark_point(filled=True, size=40).encode(
        x=alt.X("end:Q", title=after),
        y=y,
        color=alt.condition("datum.orphan", alt.value("#e45756"), alt.value("#4c78a8")),
        tooltip=tooltip,
    )
    # A layer with no rows gives Vega an infinite extent (a warning); a root alone has no links.
    has_parent = frame["parent_at"].is_not_null().any()
    layers = [links, bars, points] if has_parent else [points]
    heading = alt.TitleParams(title, subtitle=subtitle) if subtitle else title
    return alt.layer(*layers).properties(title=heading, width=600, height=alt.Step(14))
