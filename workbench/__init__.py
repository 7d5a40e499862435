"""Event Workbench: replay, diff and check event-sourced systems from Parquet archives.

Where to start, in the order data flows:

- archive: :func:`archive_jetstream`, :func:`archive_postgres` copy a store's events
  into Parquet; :func:`snapshot_postgres` a live read model.
- check: :func:`open_archive` gives an :class:`Archive`: ``df()``, ``head()``,
  ``sql()`` over its ``events`` view, ``overview()``, ``gaps()``, ``duplicates()``,
  ``schema_drift()``, ``lag()``, ``causation()``.
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

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

from workbench import _env

if TYPE_CHECKING:  # the names below, for type checkers; at run time they load on first use
    from workbench import charts, envelope
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


#: Where each public name lives. The package loads none of them on import: ``workbench
#: --help`` and a shell's tab completion would otherwise wait for DuckDB, Polars, Arrow
#: and every layer (0.75 s) before printing a line.
_HOMES = {
    **dict.fromkeys(["Archive", "open_archive"], "workbench.analysis"),
    **dict.fromkeys(["ArchiveReader", "ArchiveWriter", "compact"], "workbench.archive"),
    **dict.fromkeys(["Diff", "diff"], "workbench.diff"),
    **dict.fromkeys(
        [
            "ArchiveError",
            "ArgumentError",
            "DiffError",
            "ProjectionError",
            "SourceError",
            "WorkbenchError",
        ],
        "workbench.errors",
    ),
    **dict.fromkeys(
        [
            "Event",
            "Projection",
            "ReplayResult",
            "SqlProjection",
            "Table",
            "Tables",
            "check_coverage",
            "check_replay_safety",
            "on",
            "promote",
            "replay",
            "upcaster",
        ],
        "workbench.replay",
    ),
    **dict.fromkeys(["archive_jetstream", "sample_jetstream"], "workbench.sources.jetstream"),
    **dict.fromkeys(["archive_postgres", "snapshot_postgres"], "workbench.sources.postgres"),
}


class _Package(types.ModuleType):
    """The package module, keeping ``wb.diff`` and ``wb.replay`` the functions.

    Python binds a subpackage on its parent when it first loads it: the package
    ``workbench.diff`` would replace the function ``diff`` whenever it loads after it,
    which loading on first use makes likely. The subpackage stays importable by name.
    """

    def __setattr__(self, name: str, value: object) -> None:
        if name in {"diff", "replay"} and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

# After the swap above: what the renderer loads may load workbench.diff too.
if _env.in_notebook():
    # The offline renderer from the first cell on, not from the first workbench chart:
    # a user's own Altair chart must not render differently before and after one.
    from workbench.charts import notebook as _notebook

    _notebook.enable()


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is not None:
        value = getattr(importlib.import_module(home), name)
    elif not name.startswith("_"):  # a layer: wb.charts, wb.envelope, wb.analysis, ...
        try:
            value = importlib.import_module(f"workbench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"workbench.{name}":
                raise
            raise AttributeError(f"module 'workbench' has no attribute {name!r}") from None
    else:
        raise AttributeError(f"module 'workbench' has no attribute {name!r}")
    globals()[name] = value  # once loaded, a plain attribute
    return value


#: The package's own imports: no part of its surface, so not offered by dir().
_OWN = {"TYPE_CHECKING", "annotations", "importlib", "sys", "types"}


def __dir__() -> list[str]:
    # dir(wb) and tab completion list every public name before its first use, too.
    return sorted({*globals(), *__all__} - _OWN)
