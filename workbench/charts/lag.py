"""Lag over time: recording lag per source, consumer backlog and time lag per consumer."""

from __future__ import annotations

import altair as alt
import polars as pl

from workbench._text import duration
from workbench.charts._data import coarsen, inline, nothing_to_show, require, utc_time, utc_tooltip

__all__ = ["consumer_lag_chart", "recording_lag_chart"]


def recording_lag_chart(recording: pl.DataFrame) -> alt.TopLevelMixin:
    """p50 and p95 seconds from ``occurred_at`` to ``recorded_at`` per source over time.

    ``recording``: ``source, bucket, events, p50_seconds, p95_seconds, max_seconds``
    (``Lag.recording``).

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
    base = alt.Chart(inline(frame)).encode(
        x=utc_time("bucket", "recorded at"),
        color=alt.Color("source:N", title="source"),
        tooltip=["source:N", utc_tooltip("bucket"), "events:Q", "p50_seconds:Q", "p95_seconds:Q"],
    )
    band = base.mark_area(opacity=0.25).encode(
        y=alt.Y("p50_seconds:Q", title="seconds from occurred_at to recorded_at"),
        y2="p95_seconds:Q",
    )
    line = base.mark_line(point=True).encode(y="p50_seconds:Q")  # one bucket is one point
    # The band stops at p95: a few hours-late events would flatten it to nothing, so
    # the slowest is named instead (the late events are listed beside the chart).
    slowest = timed["max_seconds"].max() if "max_seconds" in timed.columns else None
    top = timed["p95_seconds"].max()
    heading: str | alt.TitleParams = title
    if isinstance(slowest, float) and isinstance(top, float) and slowest > 2 * top:
        heading = alt.TitleParams(
            title, subtitle=f"the slowest event took {duration(slowest)}, far above the band"
        )
    return alt.layer(band, line).properties(title=heading, width=600, height=200)


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
        color=alt.Color("name:N", title="consumer"),
        tooltip=["name:N", utc_tooltip("bucket"), "backlog:Q", "time_lag_seconds:Q"],
    )
    backlog = base.mark_line(point=True).encode(y=alt.Y("backlog:Q", title="backlog (events)"))
    seconds = base.mark_line(point=True).encode(y=alt.Y("time_lag_seconds:Q", title="time lag (s)"))
    return alt.vconcat(
        backlog.properties(title="Consumer backlog", width=600, height=160),
        seconds.properties(title="Consumer time lag", width=600, height=160),
    )
