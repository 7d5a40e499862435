"""Offline rendering: PNG and SVG through vl-convert, HTML with the JavaScript inlined.

Nothing here touches the network: vl-convert embeds Vega, Vega-Lite and
vega-embed, and :func:`to_html` bundles them into the page, so the HTML
opens without a CDN.

>>> import altair as alt
>>> chart = alt.Chart(alt.Data(values=[{"x": 1, "y": 2}])).mark_point().encode(x="x:Q", y="y:Q")
>>> to_svg(chart).startswith("<svg")
True
>>> '<script src="http' in to_html(chart)
False
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import altair as alt
import vl_convert as vlc

from workbench.archive._layout import atomic_file
from workbench.errors import ArgumentError

__all__ = ["save", "script_json", "to_html", "to_png", "to_svg", "vega_bundle"]


@functools.cache
def vega_bundle() -> str:
    """Vega, Vega-Lite and vega-embed as one script that sets ``window.vegaEmbed``.

    Safe to inline in a ``<script>`` element; about 0.9 MB.
    """
    bundle = vlc.javascript_bundle("window.vegaEmbed = vegaEmbed;")
    return str(bundle).replace("</script", "<\\/script")


def script_json(value: Any) -> str:
    """``value`` as JSON safe inside an HTML ``<script>`` element.

    Every ``<``, ``>`` and ``&`` is written as a JSON escape: ``</script>`` would end the
    element, and ``<!--<script>`` (an event type, say) would keep the real end tag from
    ending it, blanking every chart after it.

    >>> print(script_json({"t": "<!--<script></script>&"}))
    {"t": "\\u003c!--\\u003cscript\\u003e\\u003c/script\\u003e\\u0026"}
    """
    text = json.dumps(value, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _spec(chart: alt.TopLevelMixin | dict[str, Any]) -> dict[str, Any]:
    return chart if isinstance(chart, dict) else chart.to_dict()


def to_png(chart: alt.TopLevelMixin | dict[str, Any], *, scale: float = 2.0) -> bytes:
    """The chart as PNG bytes."""
    return bytes(vlc.vegalite_to_png(_spec(chart), scale=scale))


def to_svg(chart: alt.TopLevelMixin | dict[str, Any]) -> str:
    """The chart as SVG text."""
    return str(vlc.vegalite_to_svg(_spec(chart)))


def to_html(chart: alt.TopLevelMixin | dict[str, Any]) -> str:
    """A self-contained HTML page showing the chart (JavaScript inlined, no CDN)."""
    return str(vlc.vegalite_to_html(_spec(chart), bundle=True))


def save(chart: alt.TopLevelMixin | dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the chart to ``path`` (atomically, making its directory); the suffix
    (``.png``, ``.svg``, ``.html``) picks the format."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix == ".png":
        content: bytes = to_png(chart)
    elif suffix == ".svg":
        content = to_svg(chart).encode()
    elif suffix in {".html", ".htm"}:
        content = to_html(chart).encode()
    else:
        raise ArgumentError(
            f"cannot save a chart as {suffix or 'a file without suffix'}; use .png, .svg or .html"
        )
    with atomic_file(target) as tmp:
        tmp.write_bytes(content)
    return target
