"""Event Workbench: replay, diff and check event-sourced systems from Parquet archives.

Where to start, in the order data flows:

- archive: :func:`archive_jetstream`, :func:`archive_postgres` copy a store's events
  into Parquet; :func:`snapshot_postgres` a live read model.
- check: :func:`open_archive` gives an :class:`Archive`: ``events()``, ``sql()``,
  ``gaps()``, ``duplicates()``, ``schema_drift()``, ``lag()``, ``causation()``.
- replay: a :class:`Projection` (``Table``, ``@on``, ``@upcaster``) or a
  :class:`SqlProjection` through :func:`replay` into DuckDB; :func:`check_replay_safety`;
  :func:`promote` for blue/green.
- diff: :func:`diff` a replay against the live read model; ``Diff.explain(key)``.
- show: every result has ``summary()``, ``df()``, ``chart()``; ``wb.charts`` and
  ``workbench report`` for HTML.

A user's mistake raises a :class:`WorkbenchError` (:class:`ArchiveError`,
:class:`DiffError`, :class:`ProjectionError`, :class:`SourceError`, …) told in one line.

>>> import workbench as wb
>>> sorted(wb.envelope.COLUMNS)[:3]
['causation_id', 'correlation_id', 'data']
"""

from workbench import _env, envelope
from workbench.analysis import Archive, open_archive
from workbench.archive import ArchiveReader, ArchiveWriter, compact
from workbench.diff import Diff, diff
from workbench.errors import (
    ArchiveError,
    ArgumentError,
    DiffError,
    ProjectionError,
    SourceError,
    WorkbenchError,
)
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
    "ArchiveError",
    "ArchiveReader",
    "ArchiveWriter",
    "ArgumentError",
    "Diff",
    "DiffError",
    "Event",
    "Projection",
    "ProjectionError",
    "ReplayResult",
    "SourceError",
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
