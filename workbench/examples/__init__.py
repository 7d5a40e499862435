"""Example projections over the scenario's AI-memory domain.

Used by the demo, the notebooks, the benchmarks and the tests; copy one as
the starting point of your own.
"""

from workbench.examples.memories import (
    MEMORIES_SQL,
    Memories,
    MemoriesClock,
    MemoriesNonIdempotent,
    MemoriesOrderDependent,
)

__all__ = [
    "MEMORIES_SQL",
    "Memories",
    "MemoriesClock",
    "MemoriesNonIdempotent",
    "MemoriesOrderDependent",
]
