"""Generating a memory-service event history with planted, exactly known faults.

Everything is drawn from one ``numpy`` generator seeded by ``seed`` and built
column-wise (numpy + Arrow compute), so the same arguments give byte-identical
tables and a million events take a few seconds.

>>> s = generate(7, entities=5, events=200)
>>> s.events.num_rows, s.events.column("global_position")[0].as_py() > 1
(200, True)
>>> generate(7, entities=5, events=200).events.equals(s.events)
True
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from workbench import envelope
from workbench.scenario.model import (
    EVENT_TYPES,
    LATE_AFTER_US,
    Faults,
    Gap,
    GroundTruth,
    Scenario,
)

__all__ = ["DEFAULT_START", "generate"]

#: Default time of the first event (fixed, so output never depends on the clock).
DEFAULT_START = dt.datetime(2024, 5, 1, 9, 0, tzinfo=dt.UTC)

CREATED, UPDATED, ACCESSED, CONSOLIDATED, DELETED = range(5)

_MEAN_SPACING_US = 10_000  # one event every ~10 ms of domain time
# A redelivery lands this many events later (~3-10 min of domain time, past
# JetStream's default 2-minute duplicate window: why real duplicates get stored).
_COPY_DELAY = (20_000, 60_000)
_NEW_REQUEST = 0.4  # chance that an event starts a new request (mean fan-out 2.5)
_DELETED_STREAMS = 0.15  # share of memories that end with MemoryDeleted

_TOPICS = [
    "the user prefers dark mode",
    "meeting notes from the planning call",
    "the capital of Peru",
    "a recipe for lentil soup",
    "the deploy runbook",
    "quarterly revenue figures",
    "the cat is called Miso",
    "the flight lands at 18:40",
    "python typing tips",
    "the customer asked for a refund",
    "allergies: peanuts",
    "the wifi password rotation",
    "a summary of the design review",
    "birthday on 12 March",
    "favourite band",
    "the on-call schedule",
    "gym on Tuesdays",
    "project deadline moved",
    "a poem draft",
    "notes on event sourcing",
]
_FRAMES = ["remember that", "note:", "user said", "learned", "fact:", "reminder:", "observed"]
_QUERIES = [
    "what does the user like",
    "when is the deadline",
    "summarise the meeting",
    "any allergies",
    "what was the recipe",
    "who is on call",
    "travel plans",
    "preferences for the UI",
    "recent decisions",
    "open questions",
]
_KINDS = ["episodic", "semantic", "procedural", "preference"]
_REASONS = ["user-request", "expired", "consolidated", "privacy"]


def generate(
    seed: int = 0,
    *,
    entities: int = 100,
    events: int = 10_000,
    source: str = "jetstream:MEMORIES",
    start: dt.datetime = DEFAULT_START,
    faults: Faults | None = None,
) -> Scenario:
    """Generate ``events`` archived rows over ``entities`` memory streams.

    ``events`` counts the rows of :attr:`Scenario.events` (duplicate copies
    included, gap positions excluded). Positions start at 1; the retention
    gap makes the first archived one larger. ``faults`` defaults to
    :class:`Faults` (a little of everything); ``Faults.none()`` is clean.

    >>> s = generate(1, entities=3, events=50, faults=Faults.none())
    >>> s.events.column("global_position").to_pylist()[:3], s.truth.gaps
    ([1, 2, 3], ())
    """
    faults = Faults() if faults is None else faults
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware (UTC)")
    rng = np.random.default_rng(seed)
    n_dup = _count(faults.duplicates, events)
    retention = _count(faults.retention, events)
    range_sizes = rng.integers(1, max(faults.deleted_max, 1) + 1, size=faults.deleted_ranges)
    n_pos = events + retention + int(range_sizes.sum())  # positions the source ever held
    n_log = n_pos - n_dup  # distinct events
    if entities < 1 or events < 1 or entities > n_log - retention:
        raise ValueError("need at least one entity, one event, and more events than entities")
    if n_dup > n_log - retention - 1:
        raise ValueError("too few events for the requested duplicates")

    h = _history(rng, n_log, entities, faults.v2_share, int(start.timestamp() * 1_000_000))

    # Global order: each duplicate copy goes in right after a later event.
    originals = np.sort(rng.choice(np.arange(retention, n_log - 1), n_dup, replace=False))
    room = n_log - 1 - originals
    after = originals + rng.integers(
        np.minimum(room // 2 + 1, _COPY_DELAY[0]), np.minimum(room, _COPY_DELAY[1]) + 1
    )
    keys = np.concatenate([2 * np.arange(n_log), 2 * after + 1])
    order = np.argsort(keys, kind="stable")
    row_src = np.concatenate([np.arange(n_log), originals])[order]
    row_copy = np.concatenate([np.zeros(n_log, bool), np.ones(n_dup, bool)])[order]
    positions = np.arange(1, n_pos + 1, dtype=np.int64)
    pos_of = np.empty(n_log, np.int64)
    pos_of[row_src[~row_copy]] = positions[~row_copy]
    copy_pos = positions[row_copy][np.argsort(row_src[row_copy], kind="stable")]

    gaps = _place_gaps(
        rng, n_pos, retention, range_sizes, np.concatenate([pos_of[originals], copy_pos])
    )
    in_gap = np.zeros(n_pos + 1, bool)
    for g in gaps:
        in_gap[g.first : g.last + 1] = True
    visible = ~in_gap[positions]
    shown = np.flatnonzero(visible[pos_of - 1])  # distinct events the archive holds

    # Plant per-event faults on visible events only, so each one is observable.
    def pick(pool: np.ndarray, rate: float) -> np.ndarray:
        k = min(_count(rate, events), len(pool))
        return np.sort(rng.choice(pool, k, replace=False)) if k else np.empty(0, np.int64)

    non_json = np.zeros(n_log, bool)
    non_json[pick(shown, faults.non_json)] = True
    drift = np.zeros(n_log, bool)
    drift[pick(shown[~non_json[shown]], faults.drift)] = True
    orphan_planted = pick(shown, faults.orphans)

    occurred = h["base"].copy()
    prev_base = np.where(h["prev"] >= 0, h["base"][h["prev"]], h["base"] - 10**13)
    # How far back an event may move and still follow its stream's previous event.
    room = h["base"] - prev_base
    late = pick(shown[room[shown] > 2 * LATE_AFTER_US], faults.late)
    high = np.minimum(room[late] - 1, 6 * 3600 * 1_000_000)
    occurred[late] = h["base"][late] - rng.integers(int(1.2 * LATE_AFTER_US), high)
    is_late = np.zeros(n_log, bool)
    is_late[late] = True
    moved = pick(shown[~is_late[shown]], faults.reordered)
    shift = rng.integers(100_000, 30_000_000, size=len(moved))
    occurred[moved] = np.maximum(h["base"][moved] - shift, prev_base[moved] + 1)

    # The store stamps recorded_at strictly increasing with position.
    slot = np.where(
        row_copy, h["base"][np.concatenate([np.arange(n_log), after])[order]], h["base"][row_src]
    )
    stamp = slot + rng.integers(500, 50_000, size=n_pos)
    ramp = np.arange(n_pos)
    recorded = np.maximum.accumulate(stamp - ramp) + ramp

    logical = _logical_table(rng, h, occurred, non_json, drift, orphan_planted, source)
    history = logical.take(pa.array(row_src))
    history = history.add_column(0, "global_position", pa.array(positions))
    history = history.append_column("recorded_at", pa.array(recorded, pa.timestamp("us", tz="UTC")))
    history = envelope.conform(history, source=source)
    table = history.filter(pa.array(visible))

    # Ground truth, on the rows the archive holds.
    rows_v, src_v, copy_v = positions[visible], row_src[visible], row_copy[visible]
    first = ~copy_v
    occ_first = occurred[src_v[first]]
    run_max = np.maximum.accumulate(occ_first)
    reordered = rows_v[first][1:][occ_first[1:] < run_max[:-1]]
    late_rows = rows_v[(recorded[visible] - occurred[src_v]) > LATE_AFTER_US]
    orphan = np.zeros(n_log, bool)
    orphan[orphan_planted] = True
    cause = h["cause"]
    held = visible[pos_of - 1]
    orphan |= (cause >= 0) & ~held[np.maximum(cause, 0)]
    dup_ids = logical.column("event_id").take(pa.array(originals)).to_pylist()
    per_code = np.bincount(h["etype"][src_v] * 10 + h["version"][src_v])
    codes = np.flatnonzero(per_code)
    truth = GroundTruth(
        duplicates={
            eid: (int(a), int(b))
            for eid, a, b in zip(dup_ids, pos_of[originals], copy_pos, strict=True)
        },
        gaps=tuple(gaps),
        reordered=_ints(reordered),
        late=_ints(late_rows),
        non_json=_ints(rows_v[non_json[src_v]]),
        drift=_ints(rows_v[drift[src_v]]),
        # One per event, as the causation graph has it: a redelivered copy is the same event.
        orphans=_ints(rows_v[orphan[src_v] & first]),
        counts={(EVENT_TYPES[c // 10], int(c % 10)): int(per_code[c]) for c in codes},
        correlation_ids=frozenset(pc.unique(table.column("correlation_id")).to_pylist()),
    )
    return Scenario(events=table, truth=truth, history=history, seed=seed, source=source)


def _count(rate: float, n: int) -> int:
    """How many of ``n`` to plant: at least one when ``rate`` is above zero."""
    return math.ceil(rate * n) if rate > 0 else 0


def _ints(a: np.ndarray) -> tuple[int, ...]:
    return tuple(int(x) for x in np.sort(a))


def _history(
    rng: np.random.Generator, n: int, entities: int, v2_share: float, start_us: int
) -> dict[str, np.ndarray]:
    """Streams, positions, types, requests and causes of ``n`` distinct events."""
    # Entity i is born (MemoryCreated) at births[i]; later events pick a live entity.
    births = np.concatenate(
        [[0], np.sort(rng.choice(np.arange(1, n), entities - 1, replace=False))]
    )
    alive = np.searchsorted(births, np.arange(n), side="right")
    ent = (rng.random(n) * alive).astype(np.int64)
    ent[births] = np.arange(entities)
    order = np.argsort(ent, kind="stable")
    sizes = np.bincount(ent, minlength=entities)
    spos = np.empty(n, np.int64)
    spos[order] = np.arange(n) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    prev = np.full(n, -1, np.int64)
    same = spos[order[1:]] > 0
    prev[order[1:][same]] = order[:-1][same]

    r = rng.random(n)
    etype = np.where(r < 0.7, ACCESSED, np.where(r < 0.92, UPDATED, CONSOLIDATED))
    ends_deleted = rng.random(entities) < _DELETED_STREAMS
    etype[(spos == sizes[ent] - 1) & ends_deleted[ent] & (spos > 0)] = DELETED
    etype[spos == 0] = CREATED
    version = np.where((etype == CREATED) & (rng.random(n) < v2_share), 2, 1)

    # Requests: runs of consecutive events; each event is caused by an earlier one of its run.
    new = rng.random(n) < _NEW_REQUEST
    new[0] = True
    req = np.cumsum(new) - 1
    req_start = np.flatnonzero(new)[req]
    offset = np.arange(n) - req_start
    cause = np.where(offset > 0, req_start + (rng.random(n) * offset).astype(np.int64), -1)
    # Another live memory, for MemoryConsolidated.into_memory_id.
    other = (rng.random(n) * alive).astype(np.int64)
    other = np.where((other == ent) & (alive > 1), (other + 1) % alive, other)

    base = start_us + np.cumsum(rng.exponential(_MEAN_SPACING_US - 1000, n).astype(np.int64) + 1000)
    return {
        "ent": ent, "spos": spos, "prev": prev, "etype": etype, "version": version,
        "req": req, "cause": cause, "other": other, "base": base - base[0] + start_us,
    }  # fmt: skip


def _place_gaps(
    rng: np.random.Generator, n_pos: int, retention: int, sizes: np.ndarray, keep: np.ndarray
) -> list[Gap]:
    """Retention loss at the head, then interior deleted ranges.

    Ranges never touch each other, the last position, or the ``keep``
    positions (duplicate originals and copies, which must stay visible).
    """
    gaps = [Gap(1, retention, "retention")] if retention else []
    blocked = np.zeros(n_pos + 2, bool)
    blocked[: retention + 2] = True
    blocked[n_pos:] = True
    blocked[keep] = True
    for size in sizes.tolist():
        filled = np.concatenate([[0], np.cumsum(blocked)])
        starts = np.arange(1, n_pos - size + 1)
        # The range and one position either side must be free.
        free = starts[filled[starts + size + 1] - filled[starts - 1] == 0]
        if len(free) == 0:
            raise ValueError("too few events for the requested deleted ranges")
        a = int(rng.choice(free))
        gaps.append(Gap(a, a + size - 1, "deleted"))
        blocked[a - 1 : a + size + 1] = True
    return sorted(gaps)


def _uuids(rng: np.random.Generator, n: int) -> pa.Array:
    """``n`` random version-4 UUID strings, built without a Python loop."""
    b = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    b[:, 6] = (b[:, 6] & 0x0F) | 0x40
    b[:, 8] = (b[:, 8] & 0x3F) | 0x80
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    hexed = np.empty((n, 32), np.uint8)
    hexed[:, 0::2] = digits[b >> 4]
    hexed[:, 1::2] = digits[b & 15]
    text = np.full((n, 36), ord("-"), np.uint8)
    text[:, [i for i in range(36) if i not in (8, 13, 18, 23)]] = hexed
    offsets = np.arange(0, 36 * (n + 1), 36, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(text.tobytes()))


def _distinct_queries(drawn: np.ndarray, h: dict[str, np.ndarray]) -> pa.Array:
    """Query indices, none repeated by an access of the same request, memory and cause.

    Two such accesses with the same query are what the duplicates check calls a content
    copy (a retry that minted a new id): a history without planted faults had a few by
    chance. A repeat takes the next query its group has not used.
    """
    accessed = np.flatnonzero(h["etype"] == ACCESSED)
    group = np.unique(
        np.stack([h["req"][accessed], h["ent"][accessed], h["cause"][accessed]]),
        axis=1,
        return_inverse=True,
    )[1].ravel()
    key = group.astype(np.int64) * len(_QUERIES) + drawn[accessed]
    _, first, counts = np.unique(key, return_index=True, return_counts=True)
    if (counts == 1).all():
        return pa.array(drawn)
    used: dict[int, set[int]] = {}
    for g, q in zip(group.tolist(), drawn[accessed].tolist(), strict=True):
        used.setdefault(g, set()).add(q)
    repeated = np.setdiff1d(np.arange(len(accessed)), first)  # each but the first of a key
    for i in repeated.tolist():
        taken = used[int(group[i])]
        q = int(drawn[accessed[i]])
        while q in taken and len(taken) < len(_QUERIES):
            q = (q + 1) % len(_QUERIES)
        taken.add(q)
        drawn[accessed[i]] = q
    return pa.array(drawn)


def _join(parts: Sequence[str | pa.Array]) -> pa.Array:
    return pc.binary_join_element_wise(
        *[pa.scalar(p) if isinstance(p, str) else p for p in parts], ""
    )


def _logical_table(
    rng: np.random.Generator,
    h: dict[str, np.ndarray],
    occurred: np.ndarray,
    non_json: np.ndarray,
    drift: np.ndarray,
    orphans: np.ndarray,
    source: str,
) -> pa.Table:
    """One row per distinct event: ids, payload JSON and metadata JSON."""
    n = len(h["ent"])
    n_req = int(h["req"][-1]) + 1
    event_ids = _uuids(rng, n)
    corr_ids = _uuids(rng, n_req)
    mem_ids = _uuids(rng, int(h["ent"].max()) + 1)
    n_agents = max(1, len(mem_ids) // 4)
    agents = pa.array([f"agent-{i:04d}" for i in range(n_agents)])
    contents = pa.array([f"{f} {t}" for t in _TOPICS for f in _FRAMES])
    importance = pa.array([f"{i / 100:.2f}" for i in range(101)])

    def draw(vocab: pa.Array | list[str]) -> pa.Array:
        vocab = pa.array(vocab) if isinstance(vocab, list) else vocab
        return vocab.take(pa.array(rng.integers(0, len(vocab), size=n)))

    mem = mem_ids.take(pa.array(h["ent"]))
    agent_of_req = rng.integers(0, n_agents, size=n_req)
    value = {
        "memory_id": mem,
        "agent_id": agents.take(pa.array(agent_of_req[h["req"]])),
        "content": draw(contents),
        "kind": draw(_KINDS),
        "query": pa.array(_QUERIES).take(
            _distinct_queries(rng.integers(0, len(_QUERIES), size=n), h)
        ),
        "into_memory_id": mem_ids.take(pa.array(h["other"])),
        "reason": draw(_REASONS),
        "importance": draw(importance),
        "ttl_s": pa.array(["3600"] * n),
    }
    keys = {
        CREATED: ["memory_id", "agent_id", "content", "kind"],
        UPDATED: ["memory_id", "content"],
        ACCESSED: ["memory_id", "agent_id", "query"],
        CONSOLIDATED: ["memory_id", "into_memory_id"],
        DELETED: ["memory_id", "reason"],
    }
    etype = h["etype"]
    # Created carries importance iff v2, except when drifted; other drifted types gain ttl_s.
    extra = np.where(etype == CREATED, (h["version"] == 2) ^ drift, drift)
    pieces: list[pa.Array] = []
    where: list[np.ndarray] = []
    for code, names in keys.items():
        for with_extra in (False, True):
            idx = np.flatnonzero((etype == code) & (extra == with_extra) & ~non_json)
            if not len(idx):
                continue
            take = pa.array(idx)
            names_here = (
                [*names, ("importance" if code == CREATED else "ttl_s")] if with_extra else names
            )
            parts: list[str | pa.Array] = ["{"]
            for i, name in enumerate(names_here):
                quoted = name not in ("importance", "ttl_s")
                q = '"' if quoted else ""
                parts += [("," if i else "") + f'"{name}":{q}', value[name].take(take), q]
            pieces.append(_join([*parts, "}"]))
            where.append(idx)
    # Non-JSON rows: data null, the raw bytes (starting 0xFF, never UTF-8) in payload.
    bad = np.flatnonzero(non_json)
    raw = [b"\xff\xfe" + rng.bytes(int(k)) for k in rng.integers(8, 33, size=len(bad))]
    pieces.append(pa.nulls(len(bad), pa.string()))
    where.append(bad)
    data = pa.concat_arrays(pieces).take(pa.array(np.argsort(np.concatenate(where), kind="stable")))
    payload_idx = np.full(n, -1, np.int64)
    payload_idx[bad] = np.arange(len(bad))
    payload = pa.array(raw, pa.binary()).take(pa.array(payload_idx, mask=payload_idx < 0))

    # Causes: an event of the same request, the request itself, or (orphans) an unknown id.
    corr = corr_ids.take(pa.array(h["req"]))
    cause_idx = np.where(h["cause"] >= 0, h["cause"], n + h["req"])
    cause_idx[orphans] = n + n_req + np.arange(len(orphans))
    causes = pa.concat_arrays([event_ids, corr_ids, _uuids(rng, len(orphans))]).take(
        pa.array(cause_idx)
    )
    version = pa.array(h["version"].astype(np.int32))
    metadata = _join(
        ['{"correlation_id":"', corr, '","causation_id":"', causes, '","schema_version":',
         version.cast(pa.string()), "}"]
    )  # fmt: skip
    types = pa.array(list(EVENT_TYPES)).take(pa.array(etype))
    streams = _join(["memory-", mem])
    subject = (
        _join(["memories.", types, ".", streams])
        if source.startswith("jetstream:")
        else pa.nulls(n, pa.string())
    )
    return pa.table(
        {
            "event_id": event_ids,
            "event_type": types,
            "schema_version": version,
            "stream": streams,
            "stream_position": pa.array(h["spos"]),
            "occurred_at": pa.array(occurred, pa.timestamp("us", tz="UTC")),
            "correlation_id": corr,
            "causation_id": causes,
            "subject": subject,
            "data": data,
            "metadata": metadata,
            "payload": payload,
        }
    )
