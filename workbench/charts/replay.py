"""Replay charts: throughput over a run, where its time went, and cost per handler.

The replay engine calls these with plain frames, so the columns are the contract.
"""

from __future__ import annotations

import altair as alt
import polars as pl

from workbench.charts._data import MAX_POINTS, inline, nothing_to_show, require, top_n

__all__ = ["handler_cost", "replay_phases", "replay_throughput"]

#: Each phase's colour; the handler costs are drawn in the handlers' one: shown under
#: the phases, bars in the default blue read as the reading phase.
_PHASE_COLORS = {
    "reading": "#4c78a8",
    "decoding": "#72b7b2",
    "handlers": "#e45756",
    "flushing": "#f58518",
    "bookkeeping": "#bab0ac",
}
_OTHER_PHASES = ("#54a24b", "#eeca3b", "#b279a2", "#ff9da6", "#9d755d")


def replay_throughput(progress: pl.DataFrame) -> alt.Chart:
    """Events per second over a replay run.

    ``progress``: ``seconds`` (elapsed since the start, float) and ``events``
    (events replayed so far, cumulative), one row per progress report.
    Rows beyond a few thousand are thinned to evenly spaced reports (the
    curve is cumulative, so the rate between kept points stays exact).

    >>> f = pl.DataFrame({"seconds": [0.0, 1.0, 2.0], "events": [0, 1000, 3000]})
    >>> replay_throughput(f).to_dict()["mark"]["type"]
    'line'
    """
    require(
        progress,
        {"seconds": "elapsed seconds", "events": "cumulative events replayed"},
        "replay_throughput",
    )
    frame = progress.select("seconds", "events").sort("seconds")
    if frame.height > MAX_POINTS:
        step = frame.height // MAX_POINTS + 1
        frame = frame.gather_every(step).vstack(frame.tail(1)).unique("seconds", keep="last")
        frame = frame.sort("seconds")
    frame = frame.with_columns(
        events_per_second=(pl.col("events").diff() / pl.col("seconds").diff()).fill_nan(None)
    )
    return (
        alt.Chart(inline(frame))
        .mark_line(point=frame.height < 100)
        .encode(
            x=alt.X(
                "seconds:Q",
                title="seconds since start",
                axis=alt.Axis(tickCount=8, labelOverlap="greedy"),  # "0.000.05 0.10…" ran on
            ),
            y=alt.Y("events_per_second:Q", title="events / second"),
            tooltip=["seconds:Q", "events:Q", "events_per_second:Q"],
        )
        .properties(title="Replay throughput", width=600, height=200)
    )


def handler_cost(costs: pl.DataFrame) -> alt.Chart:
    """Time spent per handler, with events handled and microseconds per event.

    ``costs``: ``handler`` (name), ``events`` (events it handled),
    ``seconds`` (time spent in it). Beyond 40 handlers the cheapest are
    summed into one ``(N others)`` bar.

    >>> f = pl.DataFrame({"handler": ["a", "b"], "events": [10, 20], "seconds": [0.5, 0.1]})
    >>> handler_cost(f).to_dict()["mark"]["type"]
    'bar'
    """
    require(
        costs,
        {"handler": "handler name", "events": "events handled", "seconds": "seconds spent"},
        "handler_cost",
    )
    timed = costs.select("handler", "events", "seconds").filter(pl.col("seconds").is_not_null())
    untimed = costs.height - timed.height
    title = alt.Title(
        "Cost per handler",
        subtitle=f"{untimed} handler(s) ran too few events to be timed (one event in 32 is)"
        if untimed
        else "",
    )
    if timed.is_empty():
        return nothing_to_show("Cost per handler", "Too few events to time any handler.")
    frame = top_n(timed, "handler", "seconds").with_columns(
        us_per_event=pl.when(pl.col("events") > 0).then(pl.col("seconds") * 1e6 / pl.col("events"))
    )
    return (
        alt.Chart(inline(frame))
        .mark_bar(color=_PHASE_COLORS["handlers"])
        .encode(
            # Few, short labels: a narrow panel of thousandths printed "0.0000.002".
            x=alt.X(
                "seconds:Q",
                title="seconds spent",
                axis=alt.Axis(format="~g", tickCount=5, labelOverlap="greedy"),
            ),
            y=alt.Y("handler:N", sort="-x", title=None),
            tooltip=["handler:N", "events:Q", "seconds:Q", "us_per_event:Q"],
        )
        .properties(title=title, width=500)
    )


def replay_phases(phases: pl.DataFrame) -> alt.LayerChart:
    """Where a replay's own thread spent its time: a bar per phase, its share beside it.

    ``phases``: ``phase`` (name) and ``seconds``, one row per phase (as
    :attr:`~workbench.replay.ReplayResult.phases` gives them); the share of
    each is computed here. A bar per phase names each on its axis: one stacked
    bar needed a legend, which a combined chart puts below everything else.

    >>> f = pl.DataFrame({"phase": ["decoding", "handlers"], "seconds": [1.0, 3.0]})
    >>> chart = replay_phases(f).to_dict()
    >>> [r["share"] for r in chart["data"]["values"]]
    [0.25, 0.75]
    >>> chart["layer"][0]["encoding"]["color"]["scale"]["range"]
    ['#72b7b2', '#e45756']
    """
    require(phases, {"phase": "phase name", "seconds": "seconds spent"}, "replay_phases")
    frame = phases.select("phase", "seconds")
    total = frame["seconds"].sum()
    frame = frame.with_columns(share=pl.col("seconds") / total if total else pl.lit(0.0))
    names = frame["phase"].to_list()
    others = iter(_OTHER_PHASES * (len(names) // len(_OTHER_PHASES) + 1))
    colors = [_PHASE_COLORS.get(name) or next(others) for name in names]
    base = alt.Chart(inline(frame)).encode(
        x=alt.X(
            "share:Q",
            title="share of the replay's time",
            axis=alt.Axis(format="%", tickCount=5),
            scale=alt.Scale(domain=[0, 1]),  # not to 110%
        ),
        y=alt.Y("phase:N", sort=names, title=None, axis=alt.Axis(labelLimit=0)),
        tooltip=["phase:N", "seconds:Q", alt.Tooltip("share:Q", format=".0%")],
    )
    bars = base.mark_bar().encode(
        color=alt.Color("phase:N", scale=alt.Scale(domain=names, range=colors), legend=None)
    )
    shares = base.mark_text(align="left", dx=3).encode(text=alt.Text("share:Q", format=".0%"))
    return (bars + shares).properties(
        title="Where the replay's time went", width=300, height=20 * len(names)
    )
