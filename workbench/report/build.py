"""One self-contained HTML file: checks, charts, replay and diff, offline.

The Vega, Vega-Lite and vega-embed JavaScript comes from vl-convert and is
inlined once, so the file opens without a network.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Collection, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2

import workbench
from workbench._text import names_given
from workbench.analysis import Archive, open_archive
from workbench.archive import atomic_file, refuse_inside_archive
from workbench.charts.render import script_json, vega_bundle
from workbench.errors import ArchiveError, ArgumentError
from workbench.replay.engine import ReplayResult
from workbench.replay.safety import SafetyReport
from workbench.report._sections import (
    Section,
    archive_section,
    check_section,
    diff_section,
    replay_section,
    safety_section,
    sections_status,
)

if TYPE_CHECKING:
    from workbench.diff import Diff

__all__ = ["CHECKS", "write_report"]

#: Section titles of the checks (``Archive.checks`` names them and runs them).
CHECKS: dict[str, str] = {
    "gaps": "Gaps",
    "duplicates": "Duplicates",
    "drift": "Schema drift",
    "lag": "Lag",
    "causation": "Causation",
}


def write_report(
    out: str | os.PathLike[str],
    archive: Archive | str | os.PathLike[str],
    *,
    diff: Diff | None = None,
    extra: Sequence[Section | ReplayResult | SafetyReport] = (),
    title: str = "Event Workbench report",
    progress: Callable[[str], None] | None = None,
    external_causes: str | Sequence[str] = (),
    accept_gaps: str | Collection[str] = (),
    only: str | Collection[str] = (),
) -> Path:
    """Run the checks on ``archive`` and write the report to ``out`` (atomically).

    ``diff`` adds the diff against the live read model; ``extra`` adds
    replay results (:func:`workbench.replay`), replay safety reports
    (:func:`workbench.check_replay_safety`) and sections built elsewhere.
    ``external_causes``, ``accept_gaps`` and ``only`` (the checks to run, by the
    names ``Archive.checks`` gives them; default all) are ``workbench check``'s
    options of those names: the whole-archive causation graph is held in memory (0.3 GB
    per million events, and its building up to a fifth of the machine's memory).
    """
    report_path(out)
    only = names_given(only, "only", ArchiveError, "check name")
    archive = archive if isinstance(archive, Archive) else open_archive(archive)
    archive.require_events()
    sections = [archive_section(archive)]
    checks = archive.checks(external_causes=external_causes, accept_gaps=accept_gaps)
    unknown = sorted(set(only) - set(checks))
    if unknown:
        raise ArchiveError(
            f"unknown check(s) {', '.join(unknown)}; choose from {', '.join(checks)}"
        )
    if only:
        left_out = [CHECKS.get(name, name) for name in checks if name not in only]
        sections[0].lines.append(
            f"Not run (only {', '.join(only)} asked for): {', '.join(left_out)}."
        )
        checks = {name: run for name, run in checks.items() if name in only}
    for name, run in checks.items():
        heading = CHECKS.get(name, name)
        if progress:
            progress(heading)
        sections.append(check_section(run(), heading))
    for item in extra:
        if isinstance(item, ReplayResult):
            sections.append(replay_section(item))
        elif isinstance(item, SafetyReport):
            sections.append(safety_section(item))
        else:
            sections.append(item)
    if diff is not None:
        if progress:
            progress("Diff")
        sections.append(diff_section(diff))
    if progress:  # the charts' pictures take seconds of their own
        progress("writing the page")
    html = render(sections, title=title, subtitle=f"archive {archive.root}")
    target = Path(out)
    with atomic_file(target) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return target


def report_path(out: str | os.PathLike[str]) -> Path:
    """``out`` as the report's path; refused when writing it would replace something
    that is not an earlier report (a DuckDB file, an archive's data) or lies in an archive.

    >>> import tempfile
    >>> db = Path(tempfile.mkdtemp()) / "replay.duckdb"
    >>> _ = db.write_bytes(b"DUCK")
    >>> report_path(db)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    workbench.errors.ArgumentError: .../replay.duckdb exists and is not an HTML report; the report does not replace it (give --out another file)
    """
    target = Path(out)
    refuse_inside_archive(target, "a report")
    if target.is_file():
        with open(target, "rb") as fh:
            start = fh.read(512).lstrip().lower()
        if not start.startswith((b"<!doctype html", b"<html")):
            raise ArgumentError(
                f"{target} exists and is not an HTML report; the report does not replace it "
                "(give --out another file)"
            )
    return target


#: What each section status reads as on its badge.
BADGES = {"ok": "ok", "finding": "finding", "unchecked": "not fully checked", "info": "info"}


def render(sections: Sequence[Section], *, title: str, subtitle: str) -> str:
    """The report's HTML for ``sections``."""
    specs: list[dict[str, object]] = []
    chart_ids: dict[tuple[str, int], int] = {}
    for section in sections:
        for i, spec in enumerate(section.charts, start=1):
            chart_ids[(section.anchor, i)] = len(specs)
            specs.append(spec)
    return _template().render(
        title=title,
        subtitle=subtitle,
        version=workbench.__version__,
        generated_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        status=sections_status(sections),
        badge=BADGES,
        sections=sections,
        chart_ids=chart_ids,
        specs_json=script_json(specs),
        vega_bundle=vega_bundle(),
    )


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("workbench.report", ""),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("template.html.j2")
