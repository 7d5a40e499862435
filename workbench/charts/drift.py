"""The schema drift matrix: event type and version × field, coloured by presence."""

from __future__ import annotations

import altair as alt
import polars as pl

from workbench.charts._data import CUT_WIDTH, cut_middle, inline, require

__all__ = ["drift_matrix"]


def drift_matrix(fields: pl.DataFrame) -> alt.TopLevelMixin:
    """A cell per (type, version, field): colour = share of events carrying it, text = JSON type.

    ``fields``: ``event_type, schema_version, field, type, null_share``
    (``Drift.fields``), and ``source`` when there is one: with several
    sources a row is a source's type and version, so no two sources share a
    cell. One row per cell already, so nothing is aggregated away; a field a
    version lacks is an empty cell.

    >>> f = pl.DataFrame({"event_type": ["A", "A"], "schema_version": [1, 2],
    ...                   "field": ["x", "x"], "type": ["integer", "string"], "null_share": [0.0, 0.5]})
    >>> drift_matrix(f).to_dict()["layer"][0]["mark"]["type"]
    'rect'
    >>> two = f.with_columns(source=pl.Series(["a", "b"]), schema_version=pl.Series([1, 1]))
    >>> sorted({v["version"] for v in drift_matrix(two).to_dict()["data"]["values"]})
    ['a: A v1', 'b: A v1']
    """
    require(
        fields,
        {
            "event_type": "event type",
            "schema_version": "version",
            "field": "field name",
            "type": "JSON type",
            "null_share": "share missing or null",
        },
        "drift_matrix",
    )
    version = pl.col("event_type") + " v" + pl.col("schema_version").cast(pl.String)
    if "source" in fields.columns and fields["source"].n_unique() > 1:
        version = pl.col("source") + ": " + version
    frame = fields.select(
        "event_type",
        "schema_version",
        "field",
        pl.col("type").fill_null("null"),
        present_share=1 - pl.col("null_share"),
        version=version,
    )
    # Hundreds of types made a matrix 24,000 pixels tall: the type/versions with most
    # fields some events lack (where drift shows) are drawn, the rest counted.
    ranked = (
        frame.group_by("version", maintain_order=True)
        .agg(partly=((pl.col("present_share") > 0) & (pl.col("present_share") < 1)).sum())
        .with_row_index("order")
        .sort(["partly", "order"], descending=[True, False])
    )
    subtitle = ""
    if ranked.height > _MOST_ROWS:
        kept = ranked["version"].head(_MOST_ROWS)
        frame = frame.filter(pl.col("version").is_in(kept.to_list()))
        subtitle = (
            f"the {_MOST_ROWS} of {ranked.height:,} type/versions with most fields some events "
            "lack; the fields table has them all"
        )
    base = alt.Chart(inline(frame)).encode(
        x=alt.X(
            "field:N",
            title="field",
            axis=alt.Axis(labelAngle=-40, labelExpr=cut_middle(), labelLimit=CUT_WIDTH),
        ),
        y=alt.Y(
            "version:N",
            title=None,  # the chart's title says it; beside long labels it overlapped them
            sort=None,
            axis=alt.Axis(labelExpr=cut_middle(), labelLimit=CUT_WIDTH),
        ),
        tooltip=["event_type:N", "schema_version:Q", "field:N", "type:N", "present_share:Q"],
    )
    cells = base.mark_rect().encode(
        color=alt.Color(
            "present_share:Q", title="share present", scale=alt.Scale(domain=[0, 1], scheme="blues")
        )
    )
    text = base.mark_text(fontSize=9).encode(
        text="type:N",
        color=alt.condition("datum.present_share > 0.6", alt.value("white"), alt.value("black")),
    )
    # Cells wide enough for the longest JSON type name ("boolean") at this font size.
    return alt.layer(cells, text).properties(
        title=alt.Title("Schema drift: fields per type and version", subtitle=subtitle),
        width=alt.Step(56),
        height=alt.Step(22),
    )


#: Type/version rows :func:`drift_matrix` draws at most.
_MOST_ROWS = 60
