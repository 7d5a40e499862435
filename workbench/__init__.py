"""Event Workbench: replay, diff and check event-sourced systems from Parquet archives.

>>> import workbench as wb
>>> sorted(wb.envelope.COLUMNS)[:3]
['causation_id', 'correlation_id', 'data']
"""

from workbench import envelope
from workbench.analysis import Archive, open_archive
from workbench.archive import ArchiveReader, ArchiveWriter, compact
from workbench.diff import Diff, diff
from workbench.errors import WorkbenchError
from workbench.sources.jetstream import archive_jetstream, sample_jetstream

__all__ = [
    "Archive",
    "ArchiveReader",
    "ArchiveWriter",
    "Diff",
    "WorkbenchError",
    "archive_jetstream",
    "compact",
    "diff",
    "envelope",
    "open_archive",
    "sample_jetstream",
]
__version__ = "0.1.0"
