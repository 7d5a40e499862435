"""Event Workbench: replay, diff and check event-sourced systems from Parquet archives.

>>> import workbench as wb
>>> sorted(wb.envelope.COLUMNS)[:3]
['causation_id', 'correlation_id', 'data']
"""

from workbench import envelope
from workbench.analysis import Archive, open_archive
from workbench.archive import ArchiveReader, ArchiveWriter, compact
from workbench.errors import WorkbenchError
from workbench.replay import (
    Projection,
    ReplayResult,
    SqlProjection,
    Table,
    check_replay_safety,
    on,
    promote,
    replay,
    upcaster,
)

__all__ = [
    "Archive",
    "ArchiveReader",
    "ArchiveWriter",
    "Projection",
    "ReplayResult",
    "SqlProjection",
    "Table",
    "WorkbenchError",
    "check_replay_safety",
    "compact",
    "envelope",
    "on",
    "open_archive",
    "promote",
    "replay",
    "upcaster",
]
__version__ = "0.1.0"
