"""Duplicates over time, by event type, one row of bars per kind."""

from __future__ import annotations

import altair as alt
import polars as pl

from workbench.charts._data import (
    CUT_WIDTH,
    coarsen,
    count_axis,
    cut_middle,
    inline,
    nothing_to_show,
    require,
    utc_time,
    utc_tooltip,
)

__all__ = ["duplicates_chart"]


def duplicates_chart(timeline: pl.DataFrame) -> alt.TopLevelMixin:
    """Stacked bars of duplicate copies per time bucket, coloured by type, a row per kind.

    ``timeline``: ``bucket, kind, event_type, copies`` (``Duplicates.timeline``).

    >>> import datetime as dt
    >>> f = pl.DataFrame({"bucket": [dt.datetime(2024, 1, 1)], "kind": ["event_id"],
    ...                   "event_type": ["A"], "copies": [2]})
    >>> duplicates_chart(f).to_dict()["facet"]["row"]["field"]
    'kind'
    """
    require(
        timeline,
        {
            "bucket": "time",
            "kind": "kind of duplicate",
            "event_type": "event type",
            "copies": "extra copies",
        },
        "duplicates_chart",
    )
    if timeline.is_empty():
        return nothing_to_show("Duplicates over time", "No duplicates.")
    # Ten colours tell ten types apart: past that the palette repeats and the legend is
    # cut ("…68 entries"), so the types with fewest copies share one colour.
    totals = timeline.group_by("event_type").agg(pl.col("copies").sum())
    totals = totals.sort(["copies", "event_type"], descending=[True, False])
    if totals.height > _COLOURED_TYPES:
        kept = totals["event_type"].head(_COLOURED_TYPES - 1).to_list()
        others = f"({totals.height - len(kept):,} other types)"
        timeline = timeline.with_columns(
            event_type=pl.when(pl.col("event_type").is_in(kept))
            .then(pl.col("event_type"))
            .otherwise(pl.lit(others))
        )
    frame = coarsen(
        timeline.select("bucket", "kind", "event_type", "copies"),
        "bucket",
        ["kind", "event_type"],
        sums=("copies",),
    )
    tallest = frame.group_by("bucket", "kind").agg(pl.col("copies").sum())["copies"]
    return (
        alt.Chart(inline(frame))
        .mark_bar()
        .encode(
            x=utc_time("bucket", "recorded at"),
            y=alt.Y("sum(copies):Q", title="extra copies", axis=count_axis(tallest)),
            color=alt.Color(
                "event_type:N",
                title="event type",
                legend=alt.Legend(labelExpr=cut_middle(), labelLimit=CUT_WIDTH),
            ),
            tooltip=["kind:N", "event_type:N", utc_tooltip("bucket"), "copies:Q"],
        )
        .properties(width=600, height=120)
        .facet(
            row=alt.Row(
                "kind:N",
                title=None,
                # Above each row, level: "same event_id", not a rotated bare "event_id"
                # beside the axis title, which read as a second axis title.
                header=alt.Header(
                    labelAngle=0,
                    labelOrient="top",
                    labelAnchor="start",
                    labelExpr="'copies with the same ' + datum.value",
                    labelFontWeight="bold",
                ),
            )
        )
        .properties(title="Duplicates over time")
    )


#: Event types with a colour of their own in :func:`duplicates_chart` (Vega's palette).
_COLOURED_TYPES = 10
