"""Postgres event stores → archive, and read-model snapshots.

- :func:`archive_postgres`: Message DB, Marten, the ``eventsourcing``
  library, or any table (``generic`` with ``--map``) into the archive,
  following the visibility watermark so that no late commit is skipped.
- :func:`snapshot_postgres`: a read-model table as it is now, with the event
  store position it reflects; :func:`read_snapshot_info` reads that back.
"""

from workbench.sources.postgres.archiver import (
    ArchivePostgresResult,
    PostgresArchiver,
    archive_postgres,
)
from workbench.sources.postgres.presets import PRESETS, Preset
from workbench.sources.postgres.snapshot import (
    SNAPSHOT_KEY,
    SnapshotInfo,
    read_snapshot_info,
    snapshot_postgres,
)

__all__ = [
    "PRESETS",
    "SNAPSHOT_KEY",
    "ArchivePostgresResult",
    "PostgresArchiver",
    "Preset",
    "SnapshotInfo",
    "archive_postgres",
    "read_snapshot_info",
    "snapshot_postgres",
]
