"""A small AI-memory event history in the scenario's payload shapes, for replay tests."""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path

import pyarrow as pa

from workbench.archive import ArchiveWriter

SOURCE = "jetstream:MEMORIES"


def memory_history(n_memories: int = 60, seed: int = 1, agents: int = 4) -> pa.Table:
    """Envelope rows: per memory Created (v1 or v2), then updates/accesses, maybe consolidate/delete."""
    rng = random.Random(seed)
    streams: list[list[tuple[str, int, dict]]] = []
    for m in range(n_memories):
        mid = str(uuid.UUID(int=rng.getrandbits(128)))
        agent = f"agent-{m % agents}"
        created = {"memory_id": mid, "agent_id": agent, "content": f"fact {m}", "kind": "episodic"}
        version = 1
        if m % 3:
            created["importance"] = round(rng.random(), 3)
            version = 2
        evs = [("MemoryCreated", version, created)]
        for _ in range(rng.randint(1, 8)):
            if rng.random() < 0.7:
                reader = f"agent-{rng.randrange(agents)}"
                evs.append(
                    ("MemoryAccessed", 1, {"memory_id": mid, "agent_id": reader, "query": "q"})
                )
            else:
                evs.append(
                    ("MemoryUpdated", 1, {"memory_id": mid, "content": f"fact {m} v{len(evs)}"})
                )
        if m % 7 == 0 and m:
            evs.append(("MemoryConsolidated", 1, {"memory_id": mid, "into_memory_id": "x"}))
        elif m % 11 == 0:
            evs.append(("MemoryDeleted", 1, {"memory_id": mid, "reason": "stale"}))
        streams.append(evs)
    rows = []
    cursors = [0] * n_memories
    live = list(range(n_memories))
    t0 = 1_714_000_000_000_000  # 2024-04-24
    while live:
        k = rng.choice(live[:8])  # a few streams active at a time, like a real system
        etype, version, data = streams[k][cursors[k]]
        pos = len(rows) + 1
        rows.append(
            {
                "global_position": pos,
                "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
                "event_type": etype,
                "schema_version": version,
                "stream": f"memory-{streams[k][0][2]['memory_id']}",
                "stream_position": cursors[k],
                "occurred_at": t0 + pos * 3_600_000_000 // 4,
                "recorded_at": t0 + pos * 3_600_000_000 // 4 + 1000,
                "data": json.dumps(data),
            }
        )
        cursors[k] += 1
        if cursors[k] == len(streams[k]):
            live.remove(k)
    return pa.Table.from_pylist(rows)


def write_history(root: Path, n_memories: int = 60, seed: int = 1, source: str = SOURCE) -> Path:
    ArchiveWriter(root, source, max_file_events=97).append(memory_history(n_memories, seed))
    return root
