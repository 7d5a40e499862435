"""What a report shows, as plain data: sections of text, tables and charts.

Each result type of the library becomes a :class:`Section` here; the HTML
template only lays sections out, so every number in a report is one a
notebook user can reach through the same result object.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import polars as pl

from workbench._text import plain, unmistakable

if TYPE_CHECKING:
    import altair as alt

    from workbench.analysis import Archive
    from workbench.analysis.result import CheckResult
    from workbench.diff import Diff
    from workbench.replay import ReplayResult
    from workbench.replay.safety import SafetyReport

__all__ = [
    "ReportTable",
    "Section",
    "archive_section",
    "check_section",
    "diff_section",
    "replay_section",
    "safety_section",
]

#: Rows of a table shown in the report; the rest are counted, never silently dropped.
TABLE_ROWS = 25


@dataclass(frozen=True)
class ReportTable:
    """A table cut to :data:`TABLE_ROWS` rows, with the total it was cut from."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    total: int
    #: Per column: numbers, set right-aligned so their digits line up.
    numeric: list[bool] = field(default_factory=list)

    @classmethod
    def of(
        cls, title: str, frame: pl.DataFrame, *, limit: int = TABLE_ROWS, exact: bool = False
    ) -> ReportTable:
        """``exact``: numbers in full (a diff's sides differing in the fifth digit)."""
        head = frame.head(limit)
        rows = [[_cell(v, exact) for v in row] for row in head.iter_rows()]
        numeric = [dtype.is_numeric() for dtype in frame.schema.values()]
        return cls(title, list(frame.columns), rows, frame.height, numeric)


@dataclass
class Section:
    """One part of the report: a title, a status, lines of text, tables and charts."""

    title: str
    anchor: str
    status: str = "info"  # "ok", "finding", "unchecked" (could not look at all) or "info"
    lines: list[str] = field(default_factory=list)
    tables: list[ReportTable] = field(default_factory=list)
    charts: list[dict[str, Any]] = field(default_factory=list)

    def add_chart(self, chart: alt.TopLevelMixin | None) -> None:
        if chart is not None:
            self.charts.append(chart.to_dict())


def archive_section(archive: Archive) -> Section:
    """Sources, event counts, positions and time span of the archive."""
    frame = archive.sql(
        """
        select source, count(*) as events, count(distinct stream) as streams,
               count(distinct event_type) as event_types,
               min(global_position) as first_position, max(global_position) as last_position,
               min(recorded_at) as first_recorded, max(recorded_at) as last_recorded
        from events group by source order by source
        """
    ).pl()
    section = Section("Archive", "archive")
    total = int(frame["events"].sum()) if frame.height else 0
    section.lines.append(
        f"{total:,} events in {frame.height} source(s), {len(archive.files)} file(s) at {archive.root}"
    )
    section.tables.append(ReportTable.of("sources", frame))
    # Per source when there are several: two services' "OrderPlaced" are two types.
    by = "source, " if frame.height > 1 else ""
    types = archive.sql(
        f"select {by}event_type, schema_version, count(*) as events from events "
        "group by all order by all"
    ).pl()
    section.tables.append(ReportTable.of("event types", types))
    return section


def check_section(result: CheckResult, title: str) -> Section:
    """A check's one-line summary, its chart and its highlight tables."""
    status = "finding" if result.found else "unchecked" if result.not_fully_checked else "ok"
    section = Section(title, f"check-{result.name}", status)
    section.lines.append(result.summary())
    section.add_chart(_chart_or_none(result))
    section.tables.extend(
        ReportTable.of(name, frame) for name, frame in result.highlights().items() if frame.height
    )
    return section


def diff_section(diff: Diff, *, explain: int = 3) -> Section:
    """Summary of a diff, changed columns, differing rows and the events behind the first ones."""
    summary = diff.summary
    section = Section(
        "Diff against the live read model", "diff", "ok" if summary.is_identical else "finding"
    )
    verdict = summary.verdict
    section.lines.append(
        f"{summary.candidate_rows:,} candidate vs {summary.live_rows:,} live rows: {verdict}"
    )
    # What was compared: a report travels without the command that made it.
    section.lines.append(
        f"candidate {diff.candidate.label} · live {diff.live.label} · key {', '.join(diff.key)}"
    )
    section.lines.extend(summary.schema_lines())
    section.tables.append(ReportTable.of("rows by status", summary.counts()))
    changed_columns = summary.columns.filter(pl.col("changed") > 0)
    if changed_columns.height:
        section.tables.append(ReportTable.of("changed columns", changed_columns))
    section.add_chart(_chart_or_none(diff))
    rows = diff.rows()
    if rows.height:
        # Side by side, only the columns that differ somewhere: the rest is noise.
        shown = [
            f"{column}__{side}"
            for column in changed_columns["column"]
            for side in ("candidate", "live")
        ]
        columns = [*diff.key, "_status", *(c for c in shown if c in rows.columns)]
        section.tables.append(ReportTable.of("differing rows", rows.select(columns), exact=True))
        keys = rows.select(diff.key).head(explain).iter_rows()
        for key in keys:
            explanation = diff.explain(
                key[0] if len(key) == 1 else dict(zip(diff.key, key, strict=True))
            )
            if explanation.events.height:
                label = ", ".join(f"{k}={v}" for k, v in zip(diff.key, key, strict=True))
                suspects = explanation.suspects()
                cut = (
                    f" (the suspects and the ends of {explanation.events.height:,})"
                    if suspects.height < explanation.events.height
                    else ""
                )
                # What a reader needs to tell the events apart; the rest (source, ids,
                # the key's stream) is the same on every line or in the archive.
                columns = [c for c in _EVENT_COLUMNS if c in suspects.columns] + [
                    c for c in _EVENT_FLAGS if c in suspects.columns and suspects[c].n_unique() > 1
                ]
                section.tables.append(
                    ReportTable.of(f"events behind {label}{cut}", suspects.select(columns))
                )
    return section


_EVENT_COLUMNS = (
    "row", "why", "global_position", "event_type", "handler", "stream_position", "occurred_at",
    "data",
)  # fmt: skip
_EVENT_FLAGS = ("applied", "redelivered")


def replay_section(result: ReplayResult) -> Section:
    """Rate, rebuild estimate, coverage, per-type counts, and the replay's own chart."""
    problems = [] if result.coverage.ok else result.coverage.problems()
    status = "finding" if problems or result.dead_letters else "ok"
    section = Section(f"Replay of {result.schema}", f"replay-{result.schema}", status)
    # The replay it reports, not the history of its file (an earlier run it replaced).
    section.lines.append(replace(result, replaced=None).summary())
    section.lines.append(f"events of {result.source} into {result.into}")
    section.lines.extend(f"coverage: {p}" for p in problems)
    if result.per_handler.height:
        section.add_chart(result.chart())
    section.tables.append(ReportTable.of("events per type", result.per_type))
    return section


def safety_section(report: SafetyReport) -> Section:
    """Replay safety: each scenario's verdict and the keys that differ."""
    lines = report.summary().splitlines()
    section = Section(
        f"Replay safety of {report.projection}",
        f"safety-{report.projection}",
        "ok" if report.ok else "finding",
    )
    section.lines.extend(line.strip() for line in lines)
    differences = report.df()
    if differences.height:
        section.tables.append(ReportTable.of("keys that differ from a clean replay", differences))
    return section


def _chart_or_none(result: Any) -> alt.TopLevelMixin | None:
    try:
        return result.chart()
    except NotImplementedError:
        return None


def _cell(value: object, exact: bool = False) -> str:
    """A value as a report cell: null as ∅, an empty or edge-spaced text quoted (a
    diff's '' against null), numbers rounded unless ``exact``.

    >>> [_cell(v) for v in (None, "", " a", 1234.5678, 0.123456)]
    ['∅', "''", "' a'", '1,235', '0.1235']
    >>> _cell(17.830001, exact=True)
    '17.830001'
    """
    if value is None:
        return "∅"
    if isinstance(value, str) and unmistakable(value) != value:
        return unmistakable(value)
    if isinstance(value, float) and exact:
        return repr(value)
    if isinstance(value, float):
        # Four significant digits, without an exponent for a large value (1,234,567).
        return f"{value:,.0f}" if 1e4 <= abs(value) < 1e15 else f"{value:,.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, list):  # field names, types: listed as a reader writes them
        return ", ".join(_cell(v, exact) for v in value)
    text = plain(value) or ""  # times to the microsecond: a 1 µs difference must show
    return text if len(text) <= 160 else text[:157] + "…"


def sections_status(sections: Iterable[Section]) -> str:
    """``finding`` if any section has one, else ``unchecked`` if a check could not look at
    a source, else ``ok``."""
    statuses = {s.status for s in sections}
    return next((s for s in ("finding", "unchecked") if s in statuses), "ok")
