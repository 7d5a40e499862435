"""Missing position ranges per source, coloured by reason."""

from __future__ import annotations

import altair as alt
import polars as pl

from workbench import _duckdb
from workbench.charts._data import (
    CUT_WIDTH,
    MAX_POINTS,
    cut_middle,
    inline,
    nothing_to_show,
    require,
)

__all__ = ["gaps_chart"]


def gaps_chart(
    positions: pl.DataFrame, *, extent: pl.DataFrame | None = None
) -> alt.Chart | alt.LayerChart:
    """Ranges of missing ``global_position`` per source as bars, coloured by reason.

    ``positions``: ``source, first_missing, last_missing, missing, reason``
    (``Gaps.positions``). Many small gaps are merged into position bins (per
    source and reason, missing counts summed), so nothing is dropped.
    ``extent`` (``source, first_position, last_position``, ``Gaps.extent``): the
    archived positions, which the axis spans, so a gap shows where it falls.

    >>> f = pl.DataFrame({"source": ["s"], "first_missing": [3], "last_missing": [5],
    ...                   "missing": [3], "reason": ["deleted"]})
    >>> [layer["mark"]["type"] for layer in gaps_chart(f).to_dict()["layer"]]
    ['bar', 'tick']
    """
    require(
        positions,
        {
            "source": "source",
            "first_missing": "first missing position",
            "last_missing": "last missing position",
            "missing": "count",
            "reason": "reason",
        },
        "gaps_chart",
    )
    frame = positions.select("source", "first_missing", "last_missing", "missing", "reason")
    if frame.is_empty():
        return nothing_to_show("Missing positions", "No gaps: every position is archived.")
    if frame.height > MAX_POINTS:
        con = _duckdb.connect()
        con.register("gaps", frame)
        bins = MAX_POINTS // max(frame["source"].n_unique() * frame["reason"].n_unique(), 1)
        frame = con.sql(
            f"""with w as (select max(last_missing) // {max(bins, 1)} + 1 as width from gaps),
                binned as (select gaps.*, first_missing // width as bin from gaps, w)
                select source, min(first_missing) as first_missing,
                       max(last_missing) as last_missing, sum(missing)::bigint as missing, reason
                from binned group by source, reason, bin order by all"""
        ).pl()
    scale = alt.Scale(zero=False)
    if extent is not None and extent.height:
        ends = pl.concat(
            [
                frame.select(low="first_missing", high="last_missing"),
                extent.select(low="first_position", high="last_position"),
            ]
        ).select(pl.col("low").min(), pl.col("high").max() + 1)
        scale = alt.Scale(domain=list(ends.row(0)), nice=False)
    base = alt.Chart(inline(frame)).encode(
        x=alt.X("first_missing:Q", title="global_position", scale=scale),
        y=alt.Y(
            "source:N", title=None, axis=alt.Axis(labelExpr=cut_middle(), labelLimit=CUT_WIDTH)
        ),
        color=alt.Color("reason:N", title="reason", scale=_reason_scale(frame["reason"])),
        tooltip=["source:N", "reason:N", "first_missing:Q", "last_missing:Q", "missing:Q"],
    )
    # A range as a bar to the position after its last, and a tick at its start: one
    # missing position among millions is narrower than a pixel, and would not show.
    bars = base.mark_bar().encode(x2="end:Q").transform_calculate(end="datum.last_missing + 1")
    ticks = base.mark_tick(thickness=2)
    return alt.LayerChart(layer=[bars, ticks], title="Missing positions", width=600)


#: Each gap reason's colour in every chart and report: unknown, the one to look into,
#: in red; the harmless ones in grey.
_REASON_COLORS = {
    "unknown": "#d62728",
    "deleted": "#4c78a8",
    "retention": "#f58518",
    "sequence-jump": "#9467bd",
    "committed-late": "#e377c2",
    "rolled-back": "#bab0ac",
    "never-issued": "#d9d4d0",
}


def _reason_scale(reasons: pl.Series) -> alt.Scale:
    """The reasons present, each in its own colour (Vega's order put retention in blue
    in one report and orange in the next).

    >>> _reason_scale(pl.Series(["retention", "unknown", "retention"])).to_dict()
    {'domain': ['retention', 'unknown'], 'range': ['#f58518', '#d62728']}
    """
    present = sorted(set(reasons.drop_nulls().to_list()))
    return alt.Scale(domain=present, range=[_REASON_COLORS.get(r, "#8c564b") for r in present])
