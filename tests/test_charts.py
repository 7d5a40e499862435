"""Each chart's spec, one offline render per chart type, and large inputs staying small."""

from __future__ import annotations

import datetime as dt
import html
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import altair as alt
import polars as pl
import pyarrow as pa
import pytest

import workbench as wb
from workbench import charts
from workbench.errors import ArgumentError
from workbench.scenario import generate


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> wb.Archive:
    scenario = generate(seed=5, events=3_000)
    return wb.open_archive(scenario.write_archive(tmp_path_factory.mktemp("charts")))


def values(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Every inline data row of a spec (top level, layers, concatenations)."""
    found: list[dict[str, Any]] = []
    if isinstance(spec.get("data"), dict) and "values" in spec["data"]:
        found += spec["data"]["values"]
    for key in ("layer", "vconcat", "hconcat", "concat"):
        for sub in spec.get(key, []):
            found += values(sub)
    if "spec" in spec:
        found += values(spec["spec"])
    return found


def marks(spec: dict[str, Any]) -> list[str]:
    own = (
        [spec["mark"]["type"] if isinstance(spec["mark"], dict) else spec["mark"]]
        if "mark" in spec
        else []
    )
    subs = [
        m for key in ("layer", "vconcat", "hconcat") for s in spec.get(key, []) for m in marks(s)
    ]
    return own + subs + (marks(spec["spec"]) if "spec" in spec else [])


def test_check_charts_have_their_data_inline(archive: wb.Archive) -> None:
    dups = archive.duplicates()
    spec = dups.chart().to_dict()
    assert spec["facet"]["row"]["field"] == "kind"
    assert sum(v["copies"] for v in values(spec)) == dups.copies.height
    drift = archive.schema_drift()
    spec = drift.chart().to_dict()
    assert marks(spec) == ["rect", "text"]
    assert len(values(spec)) == drift.fields.height
    gaps = archive.gaps()
    spec = gaps.chart().to_dict()
    assert sum(v["missing"] for v in values(spec)) == gaps.positions["missing"].sum()
    lag = archive.lag()
    spec = lag.chart().to_dict()
    (band,) = [layer for layer in spec["layer"] if layer["mark"]["type"] == "area"]
    band_rows = values(band) or spec["data"]["values"]
    assert sum(v["events"] for v in band_rows) == lag.recording["events"].sum()
    # Times in UTC, said so: Vega draws the viewer's zone unless told.
    x = json.dumps(spec)
    assert '"scale": {"type": "utc"}' in x and "recorded at (UTC)" in x
    assert '"timeUnit": "utcyearmonthdatehoursminutesseconds"' in x  # the tooltip too
    # The planted late events, far above the p95 band, are each a point on a log axis.
    slowest = lag.late["lag_seconds"].max()
    assert slowest > 300 and spec["title"]["subtitle"].startswith(
        f"red: {lag.late.height} late event(s), the slowest "
    )
    (points,) = [layer for layer in spec["layer"] if layer["mark"]["type"] == "point"]
    assert len(points["data"]["values"]) == lag.late.height
    assert spec["layer"][0]["encoding"]["y"]["scale"]["type"] == "symlog"
    # Each power of ten up to the slowest is labelled: Vega thins explicit tick values
    # down to its own tick count unless told how many there are.
    axis = spec["layer"][0]["encoding"]["y"]["axis"]
    assert axis["tickCount"] == len(axis["values"]) and max(axis["values"]) >= slowest
    causation = archive.causation()
    spec = causation.chart().to_dict()
    assert marks(spec) == ["rule", "bar", "point"]
    largest = causation.correlations.sort("events", descending=True)["events"][0]
    assert len(values(spec)) == largest


def test_waterfall_rows_are_in_tree_order_with_parent_links(archive: wb.Archive) -> None:
    cid = archive.causation().correlations.sort("events", descending=True)["correlation_id"][0]
    graph = archive.causation(cid)
    rows = values(graph.chart().to_dict())
    labels = [r["row"] for r in rows]
    assert labels == sorted(labels)  # zero-padded tree order
    by_id = {r["event_id"]: r for r in rows}
    for r in rows:
        if r["parent_id"] is not None:
            assert r["parent_row"] == by_id[r["parent_id"]]["row"] < r["row"]


def test_large_inputs_are_aggregated_not_dropped() -> None:
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    n = 50_000  # ten times Altair's row limit
    timeline = pl.DataFrame(
        {
            "bucket": [t0 + dt.timedelta(seconds=i) for i in range(n)],
            "kind": ["event_id"] * n,
            "event_type": ["A", "B"] * (n // 2),
            "copies": [1] * n,
        }
    )
    spec = charts.duplicates_chart(timeline).to_dict()
    rows = values(spec)
    assert len(rows) <= 2_000 and sum(r["copies"] for r in rows) == n
    costs = pl.DataFrame(
        {"handler": [f"h{i}" for i in range(500)], "events": [1] * 500, "seconds": [1.0] * 500}
    )
    rows = values(charts.handler_cost(costs).to_dict())
    assert len(rows) == 40 and sum(r["seconds"] for r in rows) == 500
    assert rows[-1]["handler"] == "(461 others)"
    progress = pl.DataFrame(
        {"seconds": [i / 10 for i in range(n)], "events": [i * 100 for i in range(n)]}
    )
    rows = values(charts.replay_throughput(progress).to_dict())
    assert len(rows) <= 2_001 and rows[-1]["events"] == (n - 1) * 100
    assert {round(r["events_per_second"]) for r in rows[1:]} == {1000}
    gaps = pl.DataFrame(
        {"source": ["s"] * n, "first_missing": list(range(0, 2 * n, 2)),
         "last_missing": list(range(0, 2 * n, 2)), "missing": [1] * n, "reason": ["rolled-back"] * n}
    )  # fmt: skip
    rows = values(charts.gaps_chart(gaps).to_dict())
    assert len(rows) <= 2_000 and sum(r["missing"] for r in rows) == n


def test_a_chart_given_a_result_instead_of_a_frame_says_so(archive: wb.Archive) -> None:
    with pytest.raises(TypeError, match=r"gaps_chart takes a Polars frame with the columns "):
        charts.gaps_chart(archive.gaps())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"not a Gaps \(call \.chart\(\) on it to draw it\)"):
        charts.gaps_chart(archive.gaps())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"diff_summary needs the columns changed \(rows"):
        charts.diff_summary(pl.DataFrame({"column": ["a"]}))


def test_replay_and_diff_charts_take_documented_columns() -> None:
    spec = charts.diff_summary(pl.DataFrame({"column": ["a", "b"], "changed": [3, 1]})).to_dict()
    bars, counts = spec["layer"]
    assert bars["encoding"]["x"]["field"] == "changed" and len(values(spec)) == 2
    # Whole counts: a tick at each of a short axis (not 0 1 1 2 2 3 3, halves rounded).
    assert bars["encoding"]["x"]["axis"]["values"] == [0, 1, 2, 3]
    # Each bar says its count: a column changed in one row is a sliver beside hundreds.
    assert counts["mark"]["type"] == "text" and counts["encoding"]["text"]["field"] == "changed"
    spec = charts.handler_cost(
        pl.DataFrame({"handler": ["on_created"], "events": [200], "seconds": [0.5]})
    ).to_dict()
    assert values(spec)[0]["us_per_event"] == 2500.0
    untimed = pl.DataFrame({"handler": ["a", "b"], "events": [200, 3], "seconds": [0.5, None]})
    spec = charts.handler_cost(untimed).to_dict()
    assert len(values(spec)) == 1 and "1 handler(s) ran too few events" in spec["title"]["subtitle"]
    with pytest.raises(ValueError, match=r"changed \(rows differing\)"):
        charts.diff_summary(pl.DataFrame({"column": ["a"]}))


def every_chart(archive: wb.Archive) -> dict[str, alt.TopLevelMixin]:
    lag = archive.lag()
    return {
        "gaps": archive.gaps().chart(),
        "duplicates": archive.duplicates().chart(),
        "drift": archive.schema_drift().chart(),
        "recording_lag": lag.chart(),
        "consumer_lag": charts.consumer_lag_chart(
            pl.DataFrame(
                {
                    "source": ["s", "s"],
                    "stream": ["S", "S"],
                    "consumer": ["c", "c"],
                    "bucket": [dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 1, 0, 1)],
                    "backlog": [5, 9],
                    "time_lag_seconds": [1.0, 3.0],
                    "samples": [1, 1],
                }
            )
        ),
        "causation": archive.causation().chart(),
        "throughput": charts.replay_throughput(
            pl.DataFrame({"seconds": [0.0, 1.0, 2.0], "events": [0, 900, 2000]})
        ),
        "handler_cost": charts.handler_cost(
            pl.DataFrame({"handler": ["a", "b"], "events": [10, 20], "seconds": [0.5, 0.1]})
        ),
        "replay_phases": charts.replay_phases(
            pl.DataFrame({"phase": ["decoding", "handlers"], "seconds": [1.0, 3.0]})
        ),
        "diff": charts.diff_overview(
            pl.DataFrame({"status": ["identical", "changed"], "rows": [1_000, 3]}),
            pl.DataFrame({"column": ["a", "b"], "changed": [3, 0]}),
        ),
    }


def test_every_chart_renders_offline(archive: wb.Archive, tmp_path: Path) -> None:
    for name, chart in every_chart(archive).items():
        svg = charts.to_svg(chart)
        assert (svg.startswith("<svg") and "<path" in svg) or "<rect" in svg, name
    png = charts.to_png(every_chart(archive)["causation"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    saved = charts.save(every_chart(archive)["drift"], tmp_path / "drift.png")
    assert saved.read_bytes()[:4] == b"\x89PNG"


def test_html_needs_no_network(archive: wb.Archive) -> None:
    html = charts.to_html(archive.duplicates().chart())
    sources = re.findall(r"<script[^>]*\bsrc=[\"']([^\"']+)", html)
    assert not [s for s in sources if s.startswith(("http", "//"))]
    assert "vega-lite" in html.lower() and len(html) > 500_000  # the libraries are inlined
    with pytest.raises(ArgumentError, match=r"use \.png, \.svg or \.html"):
        charts.save(archive.duplicates().chart(), "chart.pdf")


def test_charts_show_in_a_notebook_without_a_network() -> None:
    """Altair's default notebook renderer loads Vega from a CDN; the workbench's does not."""
    script = (
        "import altair as alt, polars as pl, sys, workbench as wb\n"
        "a, b = pl.DataFrame({'k': [1, 2], 'v': [1, 2]}), pl.DataFrame({'k': [1, 2], 'v': [1, 3]})\n"
        "r = wb.open_archive(sys.argv[1]).gaps() if sys.argv[2] == 'gaps' else wb.diff(a, b, 'k')\n"
        "bundle = r.chart()._repr_mimebundle_()\n"
        "html = (bundle[0] if isinstance(bundle, tuple) else bundle)['text/html']\n"
        "loads = 'cdn.jsdelivr' in html or __import__('re').search(r'<script[^>]+src=', html)\n"
        "print(alt.renderers.active, bool(loads), 'vegaEmbed' in html, len(html) > 500_000)\n"
    )
    sample = Path(__file__).parents[1] / "data" / "sample" / "archive"
    for first_chart in ("gaps", "diff"):  # whichever chart a notebook draws first
        out = subprocess.run(
            [sys.executable, "-c", script, str(sample), first_chart],
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.split() == ["workbench", "False", "True", "True"], first_chart


def test_every_chart_says_what_it_is_where_html_does_not_show(archive: wb.Archive) -> None:
    """A terminal console or a diff of a notebook shows text/plain: Altair's was
    `alt.VConcatChart(...)`; each chart's is its titles, and so is its picture's alt text."""
    from workbench.charts import notebook

    for name, chart in every_chart(archive).items():
        bundle = notebook.render(chart.to_dict())
        plain = bundle["text/plain"]
        assert plain.startswith("<chart: ") and "untitled" not in plain, (name, plain)
        if 'alt="' in bundle["text/html"]:
            assert f'alt="{html.escape(plain[8:-1], quote=True)}"' in bundle["text/html"], name


def test_every_chart_of_a_notebook_page_draws(archive: wb.Archive, tmp_path: Path) -> None:
    """A notebook page (JupyterLab, nbconvert HTML) holds every output: the second chart
    must not redeclare the first one's Vega, or it stays blank."""
    from test_report import rendered_dom

    from workbench.charts import notebook

    notebook._Kernel.bundled = False  # a fresh kernel: its first chart carries Vega
    outputs = [
        notebook.render(chart.to_dict())["text/html"]
        for chart in (archive.gaps().chart(), archive.duplicates().chart(), archive.lag().chart())
    ]
    page = tmp_path / "notebook.html"
    page.write_text("<html><body>" + "".join(outputs) + "</body></html>")
    dom = rendered_dom(page)
    drawn = re.findall(
        r'id="wb-chart-[0-9a-f]+"><div class="chart-wrapper"[^>]*><(?:svg|canvas)', dom
    )
    assert len(drawn) == 3, dom[:2000]
    assert "<img alt=" not in dom  # the pictures gave way to the charts
    # Without the first output (cleared, say), the others show their pictures.
    page.write_text("<html><body>" + "".join(outputs[1:]) + "</body></html>")
    dom = rendered_dom(page)
    assert dom.count("<img alt=") == 2 and "chart-wrapper" not in dom


def test_a_check_that_found_nothing_says_so_instead_of_empty_axes(tmp_path: Path) -> None:
    from workbench.archive import ArchiveWriter

    ArchiveWriter(tmp_path, "s").append(
        pa.table({"global_position": [1, 2], "recorded_at": [0, 1], "event_id": ["a", "b"]})
    )
    archive = wb.open_archive(tmp_path)
    for chart in (
        archive.gaps().chart(),
        archive.duplicates().chart(),
        archive.causation().chart(),
    ):
        spec = chart.to_dict()
        assert spec["mark"]["type"] == "text", spec
        assert spec["data"]["values"][0]["message"].startswith("No ")


def test_importing_the_workbench_in_a_notebook_selects_the_offline_renderer() -> None:
    """From the first cell on, not from the first workbench chart: the user's own Altair
    charts render the same before and after one (and without a network)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import altair as alt\nbefore = alt.renderers.active\nimport workbench as wb\n"
            "print(before, alt.renderers.active)"
        )
    ]
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    assert nb.cells[0].outputs[0]["text"].split() == ["default", "workbench"]
    # A plain Python process is left alone (no Altair imported for nothing).
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, workbench; print('charts' in dir(workbench), 'altair' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["True", "False"]  # listed by dir(), imported on first use


def test_a_replay_in_a_notebook_leaves_no_widget_behind(tmp_path: Path) -> None:
    """The bar is one HTML output updated in place and emptied at the end: a saved
    notebook holds no Output() widget (shown as text on GitHub) and needs no ipywidgets."""
    import nbformat
    from nbclient import NotebookClient

    sample = Path(__file__).parents[1] / "data" / "sample" / "archive"
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import workbench as wb\nfrom workbench.examples import Memories\n"
            f"r = wb.replay({str(sample)!r}, Memories, into={str(tmp_path / 'o.duckdb')!r})\n"
            "r.events_applied > 0"
        )
    ]
    NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    outputs = nb.cells[0].outputs
    kinds = [o["output_type"] for o in outputs]
    assert kinds == ["display_data", "execute_result"], outputs
    bar, result = outputs
    # Emptied at the end in every form: no "<IPython.core.display.HTML object>" text.
    assert bar["data"] == {"text/plain": "", "text/html": ""}
    assert "application/vnd.jupyter.widget-view+json" not in json.dumps(outputs)
    assert result["data"]["text/plain"] == "True"


def test_time_axes_are_24_hour_utc(archive: wb.Archive) -> None:
    """Vega's own labels are 12-hour without AM/PM: a lag chart read 19:44 UTC as 07:44."""
    for chart in (archive.lag().chart(), archive.duplicates().chart()):
        spec = json.dumps(chart.to_dict())
        assert "utcseconds(datum.value) == 0 ? '%H:%M' : '%H:%M:%S'" in spec
        assert "%I" not in spec


def test_time_labels_are_where_their_ticks_are() -> None:
    """A span of seconds puts ticks between whole seconds: cut to the second, each label
    stood up to a second from its tick."""
    import datetime as dt

    import altair as alt

    from workbench.charts._data import inline, utc_time

    start = dt.datetime(2024, 5, 1, 9, tzinfo=dt.UTC)
    frame = pl.DataFrame({"t": [start + dt.timedelta(milliseconds=300 * i) for i in range(12)]})
    chart = alt.Chart(inline(frame)).mark_point().encode(x=utc_time("t", "t"))
    labels = re.findall(r">(09:[0-9:.]+)<", charts.to_svg(chart.properties(width=500)))
    assert labels and all(re.fullmatch(r"09:00:0\d\.\d{3}", label) for label in labels), labels


def test_many_late_events_are_drawn_over_their_whole_span() -> None:
    """The latest 2,000 alone made late events seem to start where they were cut."""
    import datetime as dt

    from workbench.charts import recording_lag_chart
    from workbench.charts._data import MAX_POINTS

    start = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    n = 3 * MAX_POINTS
    late = pl.DataFrame(
        {
            "recorded_at": [start + dt.timedelta(minutes=i) for i in range(n)],
            "lag_seconds": [600.0 + (i == 7) * 9_000 for i in range(n)],
        }
    )
    recording = pl.DataFrame(
        {"source": ["s"], "bucket": [start], "events": [n], "p50_seconds": [0.1],
         "p95_seconds": [0.2], "max_seconds": [9600.0]}
    )  # fmt: skip
    spec = recording_lag_chart(recording, late=late).to_dict()
    (points,) = [layer for layer in spec["layer"] if layer["mark"]["type"] == "point"]
    drawn = points["data"]["values"]
    assert len(drawn) <= MAX_POINTS + 1
    times = sorted(row["recorded_at"] for row in drawn)
    assert times[0].startswith("2024-05-01T00:00") and times[-1] > "2024-05-04"  # all of it
    assert max(row["lag_seconds"] for row in drawn) == 9_600.0  # the slowest is kept
    assert "drawn, spread over the whole time" in spec["title"]["subtitle"]


def test_long_names_keep_the_end_that_tells_them_apart() -> None:
    """Event types under one namespace differ at the end, which a cut at the end drops."""
    from workbench.charts import drift_matrix
    from workbench.charts._data import cut_middle

    name = "com.example.platform.memoryservice.events.MemoryAccessed"
    fields = pl.DataFrame(
        {"event_type": [name], "schema_version": [2], "field": ["a"], "type": ["number"],
         "null_share": [0.0]}
    )  # fmt: skip
    axis = drift_matrix(fields).to_dict()["layer"][0]["encoding"]["y"]["axis"]
    assert axis["labelExpr"] == cut_middle()
    svg = charts.to_svg(drift_matrix(fields))
    assert "com.example.pl…vice.events.MemoryAccessed v2" in svg


def test_columns_past_the_most_changed_are_named_not_summed() -> None:
    """One row differs in many columns: an "(N others)" bar summing them towered over
    every real one."""
    from workbench.charts.diff import diff_summary

    frame = pl.DataFrame({"column": [f"c{i:03}" for i in range(120)], "changed": [5] * 120})
    spec = diff_summary(frame).to_dict()
    assert max(row["changed"] for row in spec["data"]["values"]) == 5
    assert spec["title"]["subtitle"] == "and 80 more column(s), each in as many rows or fewer"
    assert spec["layer"][0]["encoding"]["y"]["sort"][:3] == ["c000", "c001", "c002"]


def test_hundreds_of_types_make_charts_of_readable_size() -> None:
    """300 event types drew a drift matrix 24,000 pixels tall and a duplicates legend
    whose ten colours repeated down to "…68 entries"."""
    import datetime as dt

    from workbench.charts import drift_matrix, duplicates_chart

    fields = pl.DataFrame(
        [
            {"event_type": f"T{t:03}", "schema_version": 1, "field": f, "type": "number",
             "null_share": 0.5 if (t % 7 == 0 and f == "b") else 0.0}
            for t in range(300)
            for f in ("a", "b")
        ]
    )  # fmt: skip
    spec = drift_matrix(fields).to_dict()
    drawn = {row["version"] for row in spec["data"]["values"]}
    assert len(drawn) == 60 and {f"T{t:03} v1" for t in range(0, 300, 7)} <= drawn
    assert spec["title"]["subtitle"].startswith("the 60 of 300 type/versions with most fields")
    timeline = pl.DataFrame(
        {"bucket": [dt.datetime(2024, 1, 1)] * 30, "kind": ["event_id"] * 30,
         "event_type": [f"T{i}" for i in range(30)], "copies": list(range(1, 31))}
    )  # fmt: skip
    values = duplicates_chart(timeline).to_dict()["data"]["values"]
    assert {row["event_type"] for row in values} == {
        *(f"T{i}" for i in range(21, 30)),
        "(21 other types)",
    }
    assert sum(row["copies"] for row in values) == sum(range(1, 31))
