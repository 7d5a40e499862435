"""Lag over time: recording lag per source, consumer backlog and time lag per consumer."""

from __future__ import annotations

import altair as alt
import polars as pl
from altair.utils.schemapi import UndefinedType

from workbench._text import duration
from workbench.charts._data import (
    CUT_WIDTH,
    MAX_POINTS,
    coarsen,
    cut_middle,
    inline,
    nothing_to_show,
    require,
    utc_time,
    utc_tooltip,
)

__all__ = ["consumer_lag_chart", "recording_lag_chart"]


#: Ticks of the log lag axis: seconds and how they read.
# No tick at 0: on the symmetric log axis it sits a few pixels under 10 ms, the two
# labels printed over each other; the axis starts at 0 all the same.
_LAG_TICKS = [
    (0.01, "10 ms"), (0.1, "100 ms"), (1, "1 s"), (10, "10 s"), (60, "1 min"),
    (600, "10 min"), (3600, "1 h"), (36000, "10 h"), (86400, "1 d"), (864000, "10 d"),
]  # fmt: skip


def recording_lag_chart(
    recording: pl.DataFrame, *, late: pl.DataFrame | None = None
) -> alt.TopLevelMixin:
    """p50 and p95 seconds from ``occurred_at`` to ``recorded_at`` per source over time,
    and the ``late`` events each as a red point.

    ``recording``: ``source, bucket, events, p50_seconds, p95_seconds, max_seconds``
    (``Lag.recording``); ``late``: ``recorded_at, lag_seconds`` and, for the
    tooltip, ``global_position, event_type`` (``Lag.late``). With late events the
    axis is symmetric-log, so hours-late events and a band of milliseconds both
    show; of more than :data:`MAX_POINTS`, that many spread over the span are drawn.

    >>> import datetime as dt
    >>> f = pl.DataFrame({"source": ["s"], "bucket": [dt.datetime(2024, 1, 1)], "events": [3],
    ...                   "p50_seconds": [0.1], "p95_seconds": [0.5], "max_seconds": [0.9]})
    >>> recording_lag_chart(f).to_dict()["layer"][0]["mark"]["type"]
    'area'
    """
    require(
        recording,
        {
            "source": "source",
            "bucket": "time",
            "p50_seconds": "median lag",
            "p95_seconds": "95th percentile",
            "events": "events per bucket",
        },
        "recording_lag_chart",
    )
    title = "Recording lag (line p50, band to p95)"
    timed = recording.filter(pl.col("p50_seconds").is_not_null())
    if timed.is_empty():
        # Message DB and other stores record only one time per event.
        return nothing_to_show(title, "No event carries occurred_at, so there is no lag to draw.")
    frame = coarsen(
        timed.select("source", "bucket", "events", "p50_seconds", "p95_seconds"),
        "bucket",
        ["source"],
        sums=("events",),
        maxes=("p50_seconds", "p95_seconds"),
    )
    base = alt.Chart().encode(  # the layer holds the data once; the late points their own
        x=utc_time("bucket", "recorded at"),
        color=alt.Color(
            "source:N",
            title="source",
            legend=alt.Legend(labelExpr=cut_middle(), labelLimit=CUT_WIDTH),
        ),
        tooltip=["source:N", utc_tooltip("bucket"), "events:Q", "p50_seconds:Q", "p95_seconds:Q"],
    )
    has_late = late is not None and late.height > 0
    y_title = (
        "occurred_at to recorded_at (log scale)"
        if has_late
        else "seconds from occurred_at to recorded_at"
    )
    scale: alt.Scale | UndefinedType = alt.Undefined
    axis: alt.Axis | UndefinedType = alt.Undefined
    if late is not None and has_late:
        # Milliseconds of band and hours-late events on one axis: symmetric log (0 stays
        # 0), its ticks at each power of ten the values reach (Vega's own are few).
        top = (
            pl.concat([late["lag_seconds"].cast(pl.Float64), timed["p95_seconds"]])
            .to_frame("s")
            .select(pl.col("s").max().fill_null(0.0))
            .item()
        )
        ticks = [(s, label) for s, label in _LAG_TICKS if s <= 10 * top]
        scale = alt.Scale(type="symlog", constant=0.01)
        label = " : ".join(f"datum.value <= {s} ? '{text}'" for s, text in ticks) + " : ''"
        # tickCount too: Vega thins explicit values down to its own count (every other one).
        axis = alt.Axis(
            values=[s for s, _ in ticks], tickCount=len(ticks), labelExpr=label, labelOverlap=False
        )
    band = base.mark_area(opacity=0.25).encode(
        y=alt.Y("p50_seconds:Q", title=y_title, scale=scale, axis=axis),
        y2="p95_seconds:Q",
    )
    line = base.mark_line(point=True).encode(y="p50_seconds:Q")  # one bucket is one point
    layers: list[alt.Chart] = [band, line]
    heading: str | alt.TitleParams = title
    if late is not None and has_late:
        require(late, {"recorded_at": "time", "lag_seconds": "lag"}, "recording_lag_chart")
        # Spread over the whole span (and the slowest kept): the latest alone made late
        # events seem to start where they were cut.
        ordered = late.sort("recorded_at")
        shown = ordered
        if ordered.height > MAX_POINTS:
            step = -(-ordered.height // MAX_POINTS)
            slowest = ordered.select(pl.col("lag_seconds").arg_max()).item()
            picked = [*range(0, ordered.height, step), slowest]
            shown = ordered[sorted(set(picked))]
        cols = [c for c in ("global_position", "event_type", "stream") if c in shown.columns]
        points = (
            alt.Chart(inline(shown.select("recorded_at", "lag_seconds", *cols)))
            .mark_point(color="#d62728", filled=True, size=30)
            .encode(
                x=utc_time("recorded_at", "recorded at"),
                y=alt.Y("lag_seconds:Q", scale=scale),
                tooltip=[*(f"{c}:N" for c in cols), utc_tooltip("recorded_at"), "lag_seconds:Q"],
            )
        )
        layers.append(points)
        more = (
            f" ({shown.height:,} of them drawn, spread over the whole time)"
            if late.height > MAX_POINTS
            else ""
        )
        slowest_late = late.select(pl.col("lag_seconds").cast(pl.Float64).max()).item()
        heading = alt.TitleParams(
            title,
            subtitle=f"red: {late.height:,} late event(s){more}, the slowest "
            f"{duration(slowest_late)}",
        )
    else:
        # The band stops at p95: an event far above it is named (no late events listed).
        slowest = timed["max_seconds"].max() if "max_seconds" in timed.columns else None
        top = timed["p95_seconds"].max()
        if isinstance(slowest, float) and isinstance(top, float) and slowest > 2 * top:
            heading = alt.TitleParams(
                title, subtitle=f"the slowest event took {duration(slowest)}, far above the band"
            )
    return alt.layer(*layers, data=inline(frame)).properties(title=heading, width=600, height=200)


def consumer_lag_chart(consumers: pl.DataFrame) -> alt.VConcatChart:
    """Backlog (events) and time lag (seconds) per consumer over time.

    ``consumers``: ``source, stream, consumer, bucket, backlog, time_lag_seconds``
    (``Lag.consumers``).
    """
    require(
        consumers,
        {
            "stream": "stream",
            "consumer": "consumer",
            "bucket": "time",
            "backlog": "events not yet acknowledged",
            "time_lag_seconds": "age of the oldest one",
        },
        "consumer_lag_chart",
    )
    frame = coarsen(
        consumers.select("stream", "consumer", "bucket", "backlog", "time_lag_seconds"),
        "bucket",
        ["stream", "consumer"],
        maxes=("backlog", "time_lag_seconds"),
    ).with_columns(name=pl.col("stream") + "/" + pl.col("consumer"))
    base = alt.Chart(inline(frame)).encode(
        x=utc_time("bucket", "sampled at"),
        color=alt.Color(
            "name:N",
            title="consumer",
            legend=alt.Legend(labelExpr=cut_middle(), labelLimit=CUT_WIDTH),
        ),
        tooltip=["name:N", utc_tooltip("bucket"), "backlog:Q", "time_lag_seconds:Q"],
    )
    backlog = base.mark_line(point=True).encode(y=alt.Y("backlog:Q", title="backlog (events)"))
    seconds = base.mark_line(point=True).encode(y=alt.Y("time_lag_seconds:Q", title="time lag (s)"))
    return alt.vconcat(
        backlog.properties(title="Consumer backlog", width=600, height=160),
        seconds.properties(title="Consumer time lag", width=600, height=160),
    )
