"""Charts in notebooks, offline: Vega inlined, loaded once per page.

Altair's default renderer loads Vega from a CDN. Its ``inline`` template
works offline but declares the Vega bundle's names at the top level of the
page, so the second chart of a notebook (in JupyterLab, or in HTML from
``nbconvert``) fails with "Identifier ... has already been declared" and
stays blank. This renderer runs the bundle inside a function, only when the
page has no ``vegaEmbed`` yet, and each chart in its own scope. Every output
still carries the bundle (about 0.9 MB), since any of them may be the first
on the page.

>>> import altair as alt
>>> chart = alt.Chart(alt.Data(values=[{"x": 1}])).mark_point().encode(x="x:Q")
>>> html = render(chart.to_dict())["text/html"]
>>> html.count("if (!window.vegaEmbed)"), '<script src="http' in html
(1, False)
>>> '"actions": false' in render(chart.to_dict(), embed_options={"actions": False})["text/html"]
True
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import altair as alt

from workbench.charts.render import vega_bundle

__all__ = ["RENDERER", "enable", "render"]

#: The name this renderer is registered under in ``alt.renderers``.
RENDERER = "workbench"

_PAGE = """\
<div class="vega-visualization" id="{div}"></div>
<script type="text/javascript">
if (!window.vegaEmbed) {{ (function () {{ {bundle}
}})(); }}
(function () {{
  const spec = {spec};
  window.vegaEmbed("#{div}", spec, {options}).catch(console.error);
}})();
</script>
"""


def render(spec: dict[str, Any], **metadata: Any) -> dict[str, str]:
    """The ``text/html`` output of a chart's Vega-Lite ``spec`` (an Altair renderer)."""
    # "</" inside a string would end the <script> early.
    text = json.dumps(spec).replace("</", "<\\/")
    div = f"wb-chart-{uuid.uuid4().hex[:12]}"
    # alt.renderers.set_embed_options(...) arrives here as embed_options.
    options = json.dumps({**(metadata.get("embed_options") or {}), "mode": "vega-lite"})
    page = _PAGE.format(div=div, bundle=vega_bundle(), spec=text, options=options)
    return {"text/html": page}


def enable() -> None:
    """Select this renderer, unless the user chose one of their own already."""
    if RENDERER not in alt.renderers.names():
        alt.renderers.register(RENDERER, render)
    if alt.renderers.active == "default":
        alt.renderers.enable(RENDERER)
