"""Altair charts of archives, checks, replays and diffs; they render offline.

Every chart takes a small Polars frame (a check result's table, or a frame
with documented columns), aggregates it further in DuckDB when it is large,
and inlines its values, so a chart never drops rows silently and never
raises ``MaxRowsError``. :func:`to_png`, :func:`to_svg` and :func:`to_html`
render without a network.

In a notebook, Altair's default renderer loads Vega from a CDN; unless you
chose a renderer yourself, importing the workbench selects its own (see
:mod:`workbench.charts.notebook`): the JavaScript inlined (about 0.9 MB per
chart output) and loaded once per page, so every chart shows without a
network, in JupyterLab and in HTML exported with ``nbconvert``.
"""

from workbench.charts import notebook
from workbench.charts.causation import causation_waterfall
from workbench.charts.diff import diff_overview, diff_statuses, diff_summary
from workbench.charts.drift import drift_matrix
from workbench.charts.duplicates import duplicates_chart
from workbench.charts.gaps import gaps_chart
from workbench.charts.lag import consumer_lag_chart, recording_lag_chart
from workbench.charts.render import save, to_html, to_png, to_svg
from workbench.charts.replay import handler_cost, replay_phases, replay_throughput

notebook.enable()

__all__ = [
    "causation_waterfall",
    "consumer_lag_chart",
    "diff_overview",
    "diff_statuses",
    "diff_summary",
    "drift_matrix",
    "duplicates_chart",
    "gaps_chart",
    "handler_cost",
    "recording_lag_chart",
    "replay_phases",
    "replay_throughput",
    "save",
    "to_html",
    "to_png",
    "to_svg",
]
