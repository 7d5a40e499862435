"""What a scenario is: the fault knobs, the ground truth and the event table.

Conventions every check relies on:

* ``stream_position`` counts from 0 in each stream (the Message DB
  convention); ``global_position`` counts from 1 (JetStream sequences).
* Each stream (``memory-<uuid>``) starts with ``MemoryCreated``; nothing
  follows ``MemoryDeleted``.
* A request (``correlation_id``) fans out into events, possibly across
  streams. The request itself is a command, not an archived event: the first
  event of a chain has ``causation_id == correlation_id``, later events name
  the event that caused them. Such roots are **not** orphans.

>>> f = Faults.none()
>>> f.duplicates, f.v2_share
(0.0, 0.0)
>>> Gap(5, 9, "deleted").size
5
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple

import pyarrow as pa

from workbench.archive import GAP_REASONS

if TYPE_CHECKING:
    from workbench.scenario.publish import PostgresSummary, PublishSummary

__all__ = [
    "EVENT_TYPES",
    "LATE_AFTER_US",
    "SCHEMAS",
    "Faults",
    "Gap",
    "GroundTruth",
    "Scenario",
]

#: The event types of the memory domain, in code order.
EVENT_TYPES: Final[tuple[str, ...]] = (
    "MemoryCreated",
    "MemoryUpdated",
    "MemoryAccessed",
    "MemoryConsolidated",
    "MemoryDeleted",
)

#: (event_type, schema_version) → the exact payload keys that version declares.
#: An event whose JSON keys differ from its entry here is schema drift.
SCHEMAS: Final[Mapping[tuple[str, int], frozenset[str]]] = {
    ("MemoryCreated", 1): frozenset({"memory_id", "agent_id", "content", "kind"}),
    ("MemoryCreated", 2): frozenset({"memory_id", "agent_id", "content", "kind", "importance"}),
    ("MemoryUpdated", 1): frozenset({"memory_id", "content"}),
    ("MemoryAccessed", 1): frozenset({"memory_id", "agent_id", "query"}),
    ("MemoryConsolidated", 1): frozenset({"memory_id", "into_memory_id"}),
    ("MemoryDeleted", 1): frozenset({"memory_id", "reason"}),
}

#: An event is *late* when ``recorded_at - occurred_at`` exceeds this (5 minutes).
#: Normal store lag in a scenario stays far below it.
LATE_AFTER_US: Final[int] = 5 * 60 * 1_000_000


@dataclass(frozen=True)
class Faults:
    """How much of each fault to plant; fractions are of the ``events`` rows.

    Every knob defaults to a small non-zero amount; :meth:`none` is a clean
    scenario. A fraction above zero plants at least one fault of that kind.
    """

    #: fraction of events delivered twice (same event_id and content, later position)
    duplicates: float = 0.005
    #: fraction of positions lost at the head of the source (retention)
    retention: float = 0.01
    #: number of interior ranges of deleted positions
    deleted_ranges: int = 2
    #: longest interior deleted range
    deleted_max: int = 10
    #: fraction of events whose occurred_at is moved back across other streams
    reordered: float = 0.01
    #: fraction of events recorded long (> LATE_AFTER_US) after they occurred
    late: float = 0.002
    #: fraction of events whose payload is raw non-UTF-8 bytes (data null)
    non_json: float = 0.001
    #: share of MemoryCreated events at schema version 2 (with ``importance``)
    v2_share: float = 0.5
    #: fraction of events whose data does not match their declared schema_version
    drift: float = 0.002
    #: fraction of events whose causation_id names an event not in the source
    orphans: float = 0.001

    @classmethod
    def none(cls) -> Faults:
        """No faults and a single schema version: a clean scenario.

        >>> Faults.none().deleted_ranges
        0
        """
        return cls(
            duplicates=0.0, retention=0.0, deleted_ranges=0, deleted_max=0, reordered=0.0,
            late=0.0, non_json=0.0, v2_share=0.0, drift=0.0, orphans=0.0,
        )  # fmt: skip

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < 0:
                raise ValueError(f"Faults.{f.name} must not be negative")
        if self.v2_share > 1:
            raise ValueError("Faults.v2_share is a share, at most 1")


class Gap(NamedTuple):
    """A range of missing positions, both ends inclusive, and why it is missing."""

    first: int
    last: int
    reason: Literal["retention", "deleted"]

    @property
    def size(self) -> int:
        return self.last - self.first + 1


assert {"retention", "deleted"} <= set(GAP_REASONS)  # names shared with the archivers


@dataclass(frozen=True, repr=False)
class GroundTruth:
    """Exactly which faults are in :attr:`Scenario.events`, by ``global_position``.

    Position tuples are sorted. Unless said otherwise they include duplicate
    copies (a copy of a late event is late too).
    """

    #: event_id → every position holding it (only ids held at two or more positions)
    duplicates: Mapping[str, tuple[int, ...]]
    #: missing position ranges; the first one, from position 1, is retention loss
    gaps: tuple[Gap, ...]
    #: first deliveries whose occurred_at is earlier than that of some event at a
    #: lower position (always of another stream; duplicate copies not counted)
    reordered: tuple[int, ...]
    #: recorded_at - occurred_at > LATE_AFTER_US
    late: tuple[int, ...]
    #: data is null and payload holds non-UTF-8 bytes
    non_json: tuple[int, ...]
    #: JSON data whose keys differ from SCHEMAS[(event_type, schema_version)]
    drift: tuple[int, ...]
    #: causation_id is neither the correlation_id nor an event_id in the table
    #: (planted ones, plus events whose cause fell into a gap)
    orphans: tuple[int, ...]
    #: (event_type, schema_version) → rows
    counts: Mapping[tuple[str, int], int]
    #: every correlation_id in the table
    correlation_ids: frozenset[str]

    def summary(self) -> dict[str, int]:
        """How many of each fault, for a quick look.

        >>> from workbench.scenario import generate
        >>> generate(events=200, faults=Faults.none()).truth.summary()["duplicates"]
        0
        """
        return {
            "duplicates": len(self.duplicates),
            "gaps": len(self.gaps),
            "missing_positions": sum(g.size for g in self.gaps),
            "reordered": len(self.reordered),
            "late": len(self.late),
            "non_json": len(self.non_json),
            "drift": len(self.drift),
            "orphans": len(self.orphans),
            "correlations": len(self.correlation_ids),
        }

    def __repr__(self) -> str:  # the fields hold every planted position: counts instead
        counts = ", ".join(f"{k}={v:,}" for k, v in self.summary().items())
        return f"GroundTruth({counts})"


@dataclass(frozen=True, repr=False)
class Scenario:
    """A generated event history: envelopes plus the truth about their faults.

    ``events`` conforms to :data:`workbench.envelope.SCHEMA`, sorted by
    ``global_position``; ``metadata`` is JSON text with ``correlation_id``,
    ``causation_id`` and ``schema_version``. ``history`` is every position
    the source ever held, gap positions included (what a publisher writes
    before it applies the gaps).
    """

    events: pa.Table
    truth: GroundTruth
    history: pa.Table
    seed: int
    source: str

    def __repr__(self) -> str:
        """One line (a notebook cell's output showed every column of every event).

        >>> from workbench.scenario import generate
        >>> repr(generate(seed=3, entities=10, events=300))[:60]
        "Scenario(seed=3, source='jetstream:MEMORIES', events=300, tr"
        """
        return (
            f"Scenario(seed={self.seed}, source={self.source!r}, "
            f"events={self.events.num_rows:,}, truth={self.truth!r})"
        )

    def write_archive(
        self, root: str | os.PathLike[str], *, record_gaps: bool = True, chunk_size: int = 100_000
    ) -> Path:
        """Archive :attr:`events` under ``root`` as an archiver would; return ``root``.

        Writes ``chunk_size`` events per append and, with ``record_gaps``,
        one gap record per planted gap (reason ``retention`` or ``deleted``).

        >>> import tempfile
        >>> from workbench.archive import ArchiveReader
        >>> from workbench.scenario import generate
        >>> s = generate(events=300)
        >>> len(ArchiveReader(s.write_archive(tempfile.mkdtemp()))) == s.events.num_rows
        True
        """
        from workbench.archive import ArchiveWriter

        writer = ArchiveWriter(root, self.source)
        for offset in range(0, self.events.num_rows, chunk_size):
            writer.append(self.events.slice(offset, chunk_size))
        if record_gaps:
            for gap in self.truth.gaps:
                writer.record_gap(gap.first, gap.last, gap.reason, detail="planted by scenario")
        return Path(root)

    def publish_jetstream(
        self, url: str, stream: str, *, subject_prefix: str = "memories", **options: Any
    ) -> PublishSummary:
        """Publish to a new JetStream stream; see :func:`workbench.scenario.publish.publish_jetstream`."""
        from workbench.scenario.publish import publish_jetstream

        return publish_jetstream(self, url, stream, subject_prefix=subject_prefix, **options)

    def insert_postgres(
        self,
        dsn: str,
        *,
        layout: Literal["message-db", "generic"] = "message-db",
        table: str | None = None,
    ) -> PostgresSummary:
        """Insert into Postgres; see :func:`workbench.scenario.publish.insert_postgres`."""
        from workbench.scenario.publish import insert_postgres

        return insert_postgres(self, dsn, layout=layout, table=table)
