"""Synthetic event histories of an AI-memory service, with exactly known faults.

:func:`generate` builds a :class:`Scenario`: envelopes (``.events``) and the
:class:`GroundTruth` of every planted fault, which tests and demos compare
checks against. A scenario can be archived, published to JetStream or
inserted into Postgres, so archivers are tested against real services.

>>> from workbench.scenario import Faults, generate
>>> s = generate(seed=3, entities=10, events=1_000)
>>> s.events.num_rows, len(s.truth.duplicates) > 0
(1000, True)
>>> generate(seed=3, entities=10, events=1_000, faults=Faults.none()).truth.summary()["gaps"]
0
"""

from workbench.scenario.generator import DEFAULT_START, generate
from workbench.scenario.model import (
    EVENT_TYPES,
    LATE_AFTER_US,
    SCHEMAS,
    Faults,
    Gap,
    GroundTruth,
    Scenario,
)
from workbench.scenario.publish import (
    PostgresSummary,
    PublishSummary,
    insert_postgres,
    publish_jetstream,
)

__all__ = [
    "DEFAULT_START",
    "EVENT_TYPES",
    "LATE_AFTER_US",
    "SCHEMAS",
    "Faults",
    "Gap",
    "GroundTruth",
    "PostgresSummary",
    "PublishSummary",
    "Scenario",
    "generate",
    "insert_postgres",
    "publish_jetstream",
]
