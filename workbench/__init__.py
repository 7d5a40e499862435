"""Event Workbench: replay, diff and check event-sourced systems from Parquet archives.

>>> import workbench as wb
>>> sorted(wb.envelope.COLUMNS)[:3]
['causation_id', 'correlation_id', 'data']
"""

from workbench import _env, envelope
from workbench.analysis import Archive, open_archive
from workbench.archive import ArchiveReader, ArchiveWriter, compact
from workbench.diff import Diff, diff
from workbench.errors import WorkbenchError
from workbench.replay import (
    Event,
    Projection,
    ReplayResult,
    SqlProjection,
    Table,
    Tables,
    check_coverage,
    check_replay_safety,
    on,
    promote,
    replay,
    upcaster,
)
from workbench.sources.jetstream import archive_jetstream, sample_jetstream
from workbench.sources.postgres import archive_postgres, snapshot_postgres

__all__ = [
    "Archive",
    "ArchiveReader",
    "ArchiveWriter",
    "Diff",
    "Event",
    "Projection",
    "ReplayResult",
    "SqlProjection",
    "Table",
    "Tables",
    "WorkbenchError",
    "archive_jetstream",
    "archive_postgres",
    "charts",
    "check_coverage",
    "check_replay_safety",
    "compact",
    "diff",
    "envelope",
    "on",
    "open_archive",
    "promote",
    "replay",
    "sample_jetstream",
    "snapshot_postgres",
    "upcaster",
]
__version__ = "0.1.0"


if _env.in_notebook():
    # The offline renderer from the first cell on, not from the first workbench chart:
    # a user's own Altair chart must not render differently before and after one.
    from workbench.charts import notebook as _notebook

    _notebook.enable()


def __getattr__(name: str) -> object:
    # ``wb.charts`` imports Altair on first use, not with the package.
    if name == "charts":
        import importlib

        return importlib.import_module("workbench.charts")
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    # dir(wb) and tab completion list wb.charts before its first use, too.
    return sorted({*globals(), *__all__})
