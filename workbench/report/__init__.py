"""The offline HTML report: every check, chart, replay and diff in one file.

>>> import tempfile, pathlib
>>> from workbench.scenario import generate
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> _ = generate(1, entities=5, events=300).write_archive(root / "archive")
>>> path = write_report(root / "report.html", root / "archive")
>>> "<svg" in path.read_text() or "vegaEmbed" in path.read_text()
True
"""

from workbench.report._sections import (
    ReportTable,
    Section,
    replay_section,
    safety_section,
)
from workbench.report.build import CHECKS, write_report

__all__ = [
    "CHECKS",
    "ReportTable",
    "Section",
    "replay_section",
    "safety_section",
    "write_report",
]
