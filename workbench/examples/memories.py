"""Projections over the scenario's AI-memory domain: a correct one and planted faults.

Events (stream ``memory-<uuid>``, ``stream_position`` from 0):
``MemoryCreated`` v1 ``{memory_id, agent_id, content, kind}``, v2 adds
``importance``; ``MemoryUpdated {memory_id, content}``;
``MemoryAccessed {memory_id, agent_id, query}``;
``MemoryConsolidated {memory_id, into_memory_id}``;
``MemoryDeleted {memory_id, reason}``.

- :class:`Memories` — correct: idempotent (each memory row remembers the last
  ``stream_position`` applied, so a redelivered or stale event is skipped),
  order-independent across streams (``last_active_at`` is a max, counts are
  sums), deterministic.
- :class:`MemoriesNonIdempotent` — counts accesses without the guard.
- :class:`MemoriesOrderDependent` — ``last_active_at`` = the last event seen.
- :class:`MemoriesClock` — stamps ``last_active_at`` with ``datetime.now()``.
- :data:`MEMORIES_SQL` — :class:`Memories` as a :class:`SqlProjection`.

>>> Memories.schema(), [t.name for t in Memories.tables()]
('memories_v1', ['memories', 'agents', 'daily_access'])
>>> Memories().upcast("MemoryCreated", 1, {"memory_id": "m"})
(2, {'importance': 0.5, 'memory_id': 'm'})
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from workbench.replay.event import Event
from workbench.replay.projection import Projection, Table, on, upcaster
from workbench.replay.sql_projection import SqlProjection
from workbench.replay.state import Tables

__all__ = [
    "MEMORIES_SQL",
    "Memories",
    "MemoriesClock",
    "MemoriesNonIdempotent",
    "MemoriesOrderDependent",
]

DEFAULT_IMPORTANCE = 0.5


class Memories(Projection):
    """Memories, per-agent activity, and accesses per agent and day."""

    name = "memories"
    version = 1

    memories = Table(
        key="memory_id",
        memory_id=str,
        agent_id=str,
        content=str,
        kind=str,
        importance=float,
        access_count=int,
        status=str,
        consolidated_into=str,
        stream_position=int,
    )
    agents = Table(
        key="agent_id", agent_id=str, memories=int, accesses=int, last_active_at=dt.datetime
    )
    daily_access = Table(key=("agent_id", "day"), agent_id=str, day=dt.date, accesses=int)

    @upcaster("MemoryCreated", from_version=1)
    def created_v1(self, data: dict[str, Any]) -> dict[str, Any]:
        return {"importance": DEFAULT_IMPORTANCE, **data}

    # -- helpers -------------------------------------------------------------

    @staticmethod
    def fresh(event: Event, tables: Tables) -> dict[str, Any] | None:
        """The memory row if ``event`` is new for it; None for a duplicate or stale event."""
        if event.data is None:  # a payload that is not JSON
            return None
        row: dict[str, Any] | None = tables.memories.get(event.data.get("memory_id"))
        if row is None or row["stream_position"] >= event.stream_position:
            return None
        return row

    def touch_agent(
        self, tables: Tables, agent_id: str, at: dt.datetime, memories: int = 0, accesses: int = 0
    ) -> None:
        agents = tables.agents
        row = agents.get(agent_id)
        if row is None:
            agents.upsert(
                {
                    "agent_id": agent_id,
                    "memories": memories,
                    "accesses": accesses,
                    "last_active_at": at,
                }
            )
            return
        row["memories"] += memories
        row["accesses"] += accesses
        if at > row["last_active_at"]:  # max, not latest: any order gives the same
            row["last_active_at"] = at
        agents.upsert(row)

    # -- handlers ------------------------------------------------------------
    # The hot handlers (accessed, updated) inline the guard of fresh() and
    # change rows in place before handing them back with upsert(): one call
    # less per event is a measurable share of a rebuild.

    @on("MemoryCreated")
    def created(self, event: Event, tables: Tables) -> None:
        data = event.data
        if data is None or data.get("memory_id") in tables.memories:
            return  # not JSON, or redelivered
        tables.memories.upsert(
            {
                "memory_id": data["memory_id"],
                "agent_id": data["agent_id"],
                "content": data.get("content"),
                "kind": data.get("kind"),
                "importance": data.get("importance", DEFAULT_IMPORTANCE),
                "access_count": 0,
                "status": "active",
                "consolidated_into": None,
                "stream_position": event.stream_position,
            }
        )
        self.touch_agent(tables, data["agent_id"], event.occurred_at, 1, 0)

    @on("MemoryUpdated")
    def updated(self, event: Event, tables: Tables) -> None:
        data = event.data
        if data is None:
            return
        row = tables.memories.get(data.get("memory_id"))
        if row is not None and row["stream_position"] < event.stream_position:
            row["content"] = data["content"]
            row["stream_position"] = event.stream_position
            tables.memories.upsert(row)

    @on("MemoryAccessed")
    def accessed(self, event: Event, tables: Tables) -> None:
        data = event.data
        if data is None:
            return
        row = tables.memories.get(data.get("memory_id"))
        if row is not None and row["stream_position"] < event.stream_position:
            self.count_access(event, tables, row)

    def count_access(self, event: Event, tables: Tables, row: dict[str, Any]) -> None:
        row["access_count"] += 1
        row["stream_position"] = event.stream_position
        tables.memories.upsert(row)
        at = event.occurred_at
        agent_id = event.data["agent_id"]
        self.touch_agent(tables, agent_id, at, accesses=1)
        key = (agent_id, at.date())
        daily_access = tables.daily_access
        daily = daily_access.get(key)
        if daily is None:
            daily_access.upsert({"agent_id": agent_id, "day": key[1], "accesses": 1})
        else:
            daily["accesses"] += 1
            daily_access.update(key)

    @on("MemoryConsolidated")
    def consolidated(self, event: Event, tables: Tables) -> None:
        if self.fresh(event, tables) is not None:
            tables.memories.update(
                event.data["memory_id"],
                status="consolidated",
                consolidated_into=event.data["into_memory_id"],
                stream_position=event.stream_position,
            )

    @on("MemoryDeleted")
    def deleted(self, event: Event, tables: Tables) -> None:
        # A tombstone, not a delete: a redelivered MemoryCreated must not revive it.
        if self.fresh(event, tables) is not None:
            tables.memories.update(
                event.data["memory_id"], status="deleted", stream_position=event.stream_position
            )


class MemoriesNonIdempotent(Memories):
    """Planted fault: an access is counted again when it is redelivered."""

    name = "memories_nonidempotent"

    @on("MemoryAccessed")
    def accessed(self, event: Event, tables: Tables) -> None:
        row = tables.memories.get(event.data["memory_id"]) if event.data else None
        if row is not None:
            self.count_access(event, tables, row)


class MemoriesOrderDependent(Memories):
    """Planted fault: ``last_active_at`` is whatever event came last, across streams."""

    name = "memories_orderdependent"

    def touch_agent(
        self, tables: Tables, agent_id: str, at: dt.datetime, memories: int = 0, accesses: int = 0
    ) -> None:
        row = tables.agents.get(agent_id)
        if row is None:
            tables.agents.upsert(
                {
                    "agent_id": agent_id,
                    "memories": memories,
                    "accesses": accesses,
                    "last_active_at": at,
                }
            )
        else:
            row["memories"] += memories
            row["accesses"] += accesses
            row["last_active_at"] = at
            tables.agents.upsert(row)


class MemoriesClock(Memories):
    """Planted fault: ``last_active_at`` read from the clock, not from the event."""

    name = "memories_clock"

    @on("MemoryCreated")
    def created(self, event: Event, tables: Tables) -> None:
        super().created(event, tables)
        agent_id = event.data["agent_id"]
        tables.agents.update(agent_id, last_active_at=dt.datetime.now(dt.UTC))


_TYPES = (
    "('MemoryCreated', 'MemoryUpdated', 'MemoryAccessed', 'MemoryConsolidated', 'MemoryDeleted')"
)
# The handlers' idempotency guard as SQL: a memory's first MemoryCreated, and
# after it only events whose stream_position is above every earlier one.
# Each payload is parsed once (one json_extract_string of all the fields
# used). The running max is a window, and DuckDB's window sorts every
# column it is given, so it runs over four integers only, partitioned by the
# BIGINT position of the memory's creation rather than by its VARCHAR id; it
# yields the few stale events, which an anti join drops.
_FRESH = f"""
    with ev as materialized (
        select global_position, event_type, stream_position,
               coalesce(occurred_at, recorded_at) as event_at,
               json_extract_string(data, ['$.memory_id', '$.agent_id', '$.content', '$.kind',
                                          '$.importance', '$.into_memory_id']) as j
        from events where event_type in {_TYPES}
    ),
    created as (
        select j[1] as memory_id, min(global_position) as created_at_position
        from ev where event_type = 'MemoryCreated' and j[1] is not null
        group by all
    ),
    stale as (
        select global_position
        from ev join created on created.memory_id = j[1]
        where global_position >= created_at_position
        qualify not ((event_type = 'MemoryCreated' and global_position = created_at_position)
                     or (event_type <> 'MemoryCreated' and stream_position > max(stream_position)
                         over (partition by created_at_position order by global_position
                               rows between unbounded preceding and 1 preceding)))
    )
    select global_position, event_type, stream_position, event_at,
           j[1] as memory_id, j[2] as agent_id, j[3] as content, j[4] as kind,
           j[5]::DOUBLE as importance, j[6] as into_memory_id
    from ev join created on created.memory_id = j[1]
    anti join stale using (global_position)
    where global_position >= created_at_position
"""

MEMORIES_SQL = SqlProjection(
    "memories_sql",
    tables={
        "memories": f"""
            select memory_id,
                   any_value(agent_id) filter (event_type = 'MemoryCreated') as agent_id,
                   arg_max(content, global_position)
                       filter (event_type in ('MemoryCreated', 'MemoryUpdated')) as content,
                   any_value(kind) filter (event_type = 'MemoryCreated') as kind,
                   coalesce(any_value(importance)
                       filter (event_type = 'MemoryCreated'), {DEFAULT_IMPORTANCE}) as importance,
                   count(*) filter (event_type = 'MemoryAccessed') as access_count,
                   coalesce(arg_max(case event_type when 'MemoryConsolidated' then 'consolidated'
                                                     else 'deleted' end, global_position)
                       filter (event_type in ('MemoryConsolidated', 'MemoryDeleted')), 'active') as status,
                   arg_max(into_memory_id, global_position)
                       filter (event_type = 'MemoryConsolidated') as consolidated_into,
                   max(stream_position) as stream_position
            from fresh group by memory_id""",
        "agents": """
            select agent_id,
                   count(*) filter (event_type = 'MemoryCreated') as memories,
                   count(*) filter (event_type = 'MemoryAccessed') as accesses,
                   max(event_at) as last_active_at
            from fresh where event_type in ('MemoryCreated', 'MemoryAccessed')
            group by agent_id""",
        "daily_access": """
            select agent_id, (event_at at time zone 'UTC')::DATE as day, count(*) as accesses
            from fresh where event_type = 'MemoryAccessed' group by all""",
    },
    setup=f"create or replace temp table fresh as {_FRESH}",
    keys={"memories": "memory_id", "agents": "agent_id", "daily_access": ("agent_id", "day")},
    lineage={
        "memories": "select memory_id, global_position, event_type from fresh",
        "agents": """select agent_id, global_position, event_type from fresh
                      where event_type in ('MemoryCreated', 'MemoryAccessed')""",
        "daily_access": """select agent_id, (event_at at time zone 'UTC')::DATE as day,
                            global_position, event_type from fresh
                            where event_type = 'MemoryAccessed'""",
    },
)
