"""Charts in notebooks, offline: Vega inlined once per kernel, a picture beneath.

Altair's default renderer loads Vega from a CDN, and Altair 6 charts are
Vega-Lite 6, which JupyterLab's own Vega extension (v5) does not render.
So a chart's output is HTML: a static PNG of the chart (made offline by
vl-convert; none over :data:`PICTURE_ROWS` rows, or where it cannot draw),
replaced by the interactive chart when Vega is on the page. The Vega
bundle (about 0.9 MB) goes out with the first chart a kernel draws (and again
when that chart's cell runs again, which replaces its output), run inside a
function so that a second copy could not redeclare its names; later charts use
it from the page. Where no script runs (an
untrusted notebook, GitHub) or the first chart's output is gone, the
picture shows.

>>> import altair as alt
>>> chart = alt.Chart(alt.Data(values=[{"x": 1}])).mark_point().encode(x="x:Q")
>>> _Kernel.bundled = False  # as in a fresh kernel
>>> first, second = (render(chart.to_dict())["text/html"] for _ in range(2))
>>> len(first) > 500_000 > 50_000 > len(second), 'src="data:image/png' in second
(True, True)
>>> '"actions": false' in render(chart.to_dict(), embed_options={"actions": False})["text/html"]
True
>>> _picture({"mark": "no-such-mark"}), _picture({"datasets": {"d": [{"x": 1}] * 6_000}})
('', '')
"""

from __future__ import annotations

import base64
import html
import json
import uuid
from typing import Any

import altair as alt

from workbench.charts.render import script_json, to_png, vega_bundle

__all__ = ["RENDERER", "describe", "enable", "render"]

#: The name this renderer is registered under in ``alt.renderers``.
RENDERER = "workbench"

_PAGE = """\
<div class="vega-visualization" id="{div}">{picture}</div>
<script type="text/javascript">
{bundle}(function () {{
  if (!window.vegaEmbed) return;  // no Vega on this page: the picture stays
  const el = document.getElementById("{div}");
  el.innerHTML = "";
  window.vegaEmbed(el, {spec}, {options}).catch(console.error);
}})();
</script>
"""

_BUNDLE = """\
if (!window.vegaEmbed) {{ (function () {{ {bundle}
}})(); }}
"""


class _Kernel:
    """Whether this process has sent the Vega bundle to its notebook yet, and from which
    cell: run again ("Run All" in the same kernel), that cell's output and the bundle
    in it are replaced, so the next chart carries the bundle again (the saved notebook
    kept none, and showed pictures only)."""

    bundled = False
    #: The id of the cell running now, and of the one whose output holds the bundle.
    running: str | None = None
    cell: str | None = None
    watching = False


def _before_cell(info: Any) -> None:
    """IPython's ``pre_run_cell``: note the cell, and whether it held the bundle."""
    _Kernel.running = getattr(info, "cell_id", None)
    if _Kernel.running is not None and _Kernel.running == _Kernel.cell:
        _Kernel.bundled = False


def render(spec: dict[str, Any], **metadata: Any) -> dict[str, str]:
    """The ``text/html`` output of a chart's Vega-Lite ``spec`` (an Altair renderer)."""
    text = script_json(spec)
    div = f"wb-chart-{uuid.uuid4().hex[:12]}"
    # alt.renderers.set_embed_options(...) arrives here as embed_options.
    options = json.dumps({**(metadata.get("embed_options") or {}), "mode": "vega-lite"})
    bundle = "" if _Kernel.bundled else _BUNDLE.format(bundle=vega_bundle())
    if not _Kernel.bundled:
        _Kernel.bundled, _Kernel.cell = True, _Kernel.running
    described = describe(spec)
    picture = _picture(spec, described)
    page = _PAGE.format(div=div, picture=picture, bundle=bundle, spec=text, options=options)
    # text/plain for what shows no HTML (a terminal console, a diff of the notebook):
    # what the chart is, not Altair's `alt.VConcatChart(...)`.
    return {"text/html": page, "text/plain": f"<chart: {described}>"}


def describe(spec: dict[str, Any]) -> str:
    """A chart's titles, its panels' after its own, in one line.

    >>> describe({"title": {"text": "Lag", "subtitle": "p99"},
    ...           "vconcat": [{"title": "per source"}, {"mark": "bar"}]})
    'Lag; per source'
    >>> describe({"mark": "point"})
    'untitled'
    """
    found: list[str] = []

    def visit(part: dict[str, Any]) -> None:
        title = part.get("title")
        text = title.get("text") if isinstance(title, dict) else title
        lines = text if isinstance(text, list) else [text]
        if any(isinstance(line, str) and line for line in lines):
            found.append(" ".join(line for line in lines if isinstance(line, str) and line))
        for key in ("vconcat", "hconcat", "concat", "layer"):
            for sub in part.get(key) or []:
                if isinstance(sub, dict):
                    visit(sub)

    visit(spec)
    return "; ".join(found) or "untitled"


#: Charts over more rows than this get no picture: rendering it would hold up the cell.
PICTURE_ROWS = 5_000


def _picture(spec: dict[str, Any], described: str = "chart") -> str:
    """The chart as an inline PNG, or nothing when it is large or vl-convert cannot draw
    it (the interactive chart still shows where scripts run)."""
    rows = sum(len(v) for v in (spec.get("datasets") or {}).values() if isinstance(v, list))
    if rows > PICTURE_ROWS:
        return ""
    try:
        png = base64.b64encode(to_png(spec, scale=1.0)).decode()
    except Exception:  # a spec vl-convert cannot render
        return ""
    alt_text = html.escape(described, quote=True)
    return f'<img alt="{alt_text}" src="data:image/png;base64,{png}" style="max-width: 100%">'


def enable() -> None:
    """Select this renderer, unless the user chose one of their own already."""
    if RENDERER not in alt.renderers.names():
        alt.renderers.register(RENDERER, render)
    if alt.renderers.active == "default":
        alt.renderers.enable(RENDERER)
    _watch_cells()


def _watch_cells() -> None:
    """Follow which cell runs (IPython's ``pre_run_cell``), once per kernel."""
    if _Kernel.watching:
        return
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        shell.events.register("pre_run_cell", _before_cell)
        _Kernel.watching = True
