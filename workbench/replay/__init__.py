"""Replay: candidate projections from the archive into DuckDB.

Handler-style projections (:class:`Projection`, :class:`Table`, :func:`on`,
:func:`upcaster`) and SQL ones (:class:`SqlProjection`); :func:`replay`
writes them into ``<name>_v<version>`` schemas, resumably and with lineage;
:func:`promote` switches the stable views (blue/green);
:func:`check_replay_safety` replays under redelivery, reordering and twice
to find handlers that are not idempotent, order-independent or deterministic.
"""

from workbench.replay.coverage import Coverage, coverage
from workbench.replay.engine import ReplayResult, check_coverage, replay
from workbench.replay.event import Event
from workbench.replay.loader import load_projection
from workbench.replay.projection import Projection, Table, on, upcaster
from workbench.replay.safety import SafetyReport, check_replay_safety
from workbench.replay.sql_projection import SqlProjection
from workbench.replay.state import Tables, TableState
from workbench.replay.store import lineage_key, promote

__all__ = [
    "Coverage",
    "Event",
    "Projection",
    "ReplayResult",
    "SafetyReport",
    "SqlProjection",
    "Table",
    "TableState",
    "Tables",
    "check_coverage",
    "check_replay_safety",
    "coverage",
    "lineage_key",
    "load_projection",
    "on",
    "promote",
    "replay",
    "upcaster",
]
