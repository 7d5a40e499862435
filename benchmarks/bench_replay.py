"""Replay throughput: the handler engine and SqlProjection against a hand-written fold.

    python benchmarks/bench_replay.py [--events N] [--entities N] [--memory]

All three read the same archive (the scenario generator's history) and
produce the same three tables as :class:`workbench.examples.Memories`.

Baseline: the fastest honest plain-Python fold we could write — the same
Parquet files read batch by batch with pyarrow, payloads decoded with the
same one-parse trick and timestamps with the same numpy conversion as the
engine, folded into dicts with the same idempotency guard, then one bulk
Arrow write per table into DuckDB. It has no lineage, no checkpoint, no
dispatch, no error handling. ``--memory`` also replays 1x and 4x the events
in fresh processes and prints their peak RSS (it should follow the read
model, not the history).

"Where the gap is" splits the handlers' thread's time: the hand loop's
reading and decoding alone; Memories' own handlers run over the engine's
decoded events into bare dicts (what the handler API costs before the
engine does anything); and the engine's handler phase (plus row ids and the
lineage log, and sharing two cores with its reading and writing threads).
A variant with the hot handlers written flat (no helper methods) shows
whether the projection's own structure is the cost.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import tempfile
import time
from operator import itemgetter
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

import workbench as wb
from workbench.archive import ArchiveReader
from workbench.examples import MEMORIES_SQL, Memories
from workbench.replay.engine import open_reader, read_batches, select_source
from workbench.replay.event import Event, _to_python
from workbench.replay.runner import Runner
from workbench.replay.state import Tables
from workbench.scenario import generate

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
COLUMNS = ["event_type", "schema_version", "stream_position", "occurred_at", "data"]


def _batches(archive: Path) -> Any:
    """(event_type, stream_position, occurred_at, payload) of each event, batch by batch."""
    for data_file in sorted(ArchiveReader(archive).files):
        for batch in pq.ParquetFile(data_file.path).iter_batches(100_000, columns=COLUMNS):
            texts = batch.column("data").to_pylist()
            payloads = json.loads("[" + ",".join("null" if t is None else t for t in texts) + "]")
            yield (
                batch.num_rows,
                zip(
                    batch.column("event_type").to_pylist(),
                    batch.column("stream_position").to_pylist(),
                    _to_python(batch.column("occurred_at")),
                    payloads,
                    strict=True,
                ),
            )


def _write(into: Path, tables: dict[str, pa.Table]) -> None:
    con = duckdb.connect(str(into))
    for name, table in tables.items():
        con.register("t", table)
        con.execute(f"create or replace table {name} as select * from t")
        con.unregister("t")
    con.close()


def hand_written_dicts(archive: Path, into: Path) -> int:
    """The issue's baseline: a plain loop folding events into dicts of row dicts.

    Rows are dicts, as the engine's are and as the issue describes the hand
    loop; each table is written once, from Arrow. The agent update is
    repeated inline on purpose: a helper function would add the very
    per-call cost the engine is measured against.
    """
    memories: dict[str, dict[str, Any]] = {}
    agents: dict[str, dict[str, Any]] = {}
    daily: dict[tuple[str, dt.date], dict[str, Any]] = {}
    n = 0
    for size, rows in _batches(archive):
        n += size
        for etype, spos, at, d in rows:
            if d is None:
                continue
            m = memories.get(d.get("memory_id"))
            if etype == "MemoryAccessed":
                if m is None or m["stream_position"] >= spos:
                    continue
                m["access_count"] += 1
                m["stream_position"] = spos
                agent_id = d["agent_id"]
                a = agents.get(agent_id)
                if a is None:
                    agents[agent_id] = {
                        "agent_id": agent_id,
                        "memories": 0,
                        "accesses": 1,
                        "last_active_at": at,
                    }
                else:
                    a["accesses"] += 1
                    if at > a["last_active_at"]:
                        a["last_active_at"] = at
                key = (agent_id, at.date())
                day = daily.get(key)
                if day is None:
                    daily[key] = {"agent_id": agent_id, "day": key[1], "accesses": 1}
                else:
                    day["accesses"] += 1
            elif etype == "MemoryCreated":
                if m is not None:
                    continue
                agent_id = d["agent_id"]
                memories[d["memory_id"]] = {
                    "memory_id": d["memory_id"],
                    "agent_id": agent_id,
                    "content": d.get("content"),
                    "kind": d.get("kind"),
                    "importance": d.get("importance", 0.5),
                    "access_count": 0,
                    "status": "active",
                    "consolidated_into": None,
                    "stream_position": spos,
                }
                a = agents.get(agent_id)
                if a is None:
                    agents[agent_id] = {
                        "agent_id": agent_id,
                        "memories": 1,
                        "accesses": 0,
                        "last_active_at": at,
                    }
                else:
                    a["memories"] += 1
                    if at > a["last_active_at"]:
                        a["last_active_at"] = at
            elif m is None or m["stream_position"] >= spos:
                continue
            elif etype == "MemoryUpdated":
                m["content"] = d["content"]
                m["stream_position"] = spos
            elif etype == "MemoryConsolidated":
                m["status"] = "consolidated"
                m["consolidated_into"] = d["into_memory_id"]
                m["stream_position"] = spos
            elif etype == "MemoryDeleted":
                m["status"] = "deleted"
                m["stream_position"] = spos
    schemas = {table.name: table.arrow_schema for table in Memories.tables()}
    _write(
        into,
        {
            name: pa.Table.from_pylist(list(rows.values()), schema=schemas[name])
            for name, rows in (("memories", memories), ("agents", agents), ("daily_access", daily))
        },
    )
    return n


def hand_written(archive: Path, into: Path) -> int:
    """The fastest fold we could write: rows as lists, fields by index."""
    memories: dict[
        str, list[Any]
    ] = {}  # id → [agent, content, kind, importance, count, status, into, pos]
    agents: dict[str, list[Any]] = {}  # id → [memories, accesses, last_active_at]
    daily: dict[tuple[str, dt.date], int] = {}
    n = 0
    for size, rows in _batches(archive):
        n += size
        for etype, spos, at, d in rows:
            if d is None:
                continue
            m = memories.get(d.get("memory_id"))
            if etype == "MemoryAccessed":
                if m is None or m[7] >= spos:
                    continue
                m[4] += 1
                m[7] = spos
                a = agents.get(d["agent_id"])
                if a is None:
                    agents[d["agent_id"]] = [0, 1, at]
                else:
                    a[1] += 1
                    if at > a[2]:
                        a[2] = at
                key = (d["agent_id"], at.date())
                daily[key] = daily.get(key, 0) + 1
            elif etype == "MemoryCreated":
                if m is not None:
                    continue
                memories[d["memory_id"]] = [
                    d["agent_id"],
                    d.get("content"),
                    d.get("kind"),
                    d.get("importance", 0.5),
                    0,
                    "active",
                    None,
                    spos,
                ]
                a = agents.get(d["agent_id"])
                if a is None:
                    agents[d["agent_id"]] = [1, 0, at]
                else:
                    a[0] += 1
                    if at > a[2]:
                        a[2] = at
            elif m is None or m[7] >= spos:
                continue
            elif etype == "MemoryUpdated":
                m[1] = d["content"]
                m[7] = spos
            elif etype == "MemoryConsolidated":
                m[5], m[6], m[7] = "consolidated", d["into_memory_id"], spos
            elif etype == "MemoryDeleted":
                m[5], m[7] = "deleted", spos
    mem_cols = list(zip(*memories.values(), strict=True))
    tables = {
        "memories": pa.table(
            [list(memories), *map(list, mem_cols)],
            names=[
                "memory_id",
                "agent_id",
                "content",
                "kind",
                "importance",
                "access_count",
                "status",
                "consolidated_into",
                "stream_position",
            ],
        ),
        "agents": pa.table(
            [list(agents), *map(list, zip(*agents.values(), strict=True))],
            names=["agent_id", "memories", "accesses", "last_active_at"],
        ),
        "daily_access": pa.table(
            [[k[0] for k in daily], [k[1] for k in daily], list(daily.values())],
            names=["agent_id", "day", "accesses"],
        ),
    }
    _write(into, tables)
    return n


class MemoriesFlat(Memories):
    """:class:`Memories` with its hot handlers written flat, as the hand loop is: the
    same logic and tables, no helper methods (each Python call is ~0.1 µs an event)."""

    name = "memories_flat"

    @wb.on("MemoryCreated")
    def created(self, event: Event, tables: wb.Tables) -> None:
        d = event.data
        if d is None or d.get("memory_id") in tables.memories:
            return
        agent_id = d["agent_id"]
        tables.memories.upsert(
            {
                "memory_id": d["memory_id"],
                "agent_id": agent_id,
                "content": d.get("content"),
                "kind": d.get("kind"),
                "importance": d.get("importance", 0.5),
                "access_count": 0,
                "status": "active",
                "consolidated_into": None,
                "stream_position": event.stream_position,
            }
        )
        agents = tables.agents
        a = agents.get(agent_id)
        at = event.occurred_at
        if a is None:
            agents.upsert(
                {"agent_id": agent_id, "memories": 1, "accesses": 0, "last_active_at": at}
            )
        else:
            a["memories"] += 1
            if at > a["last_active_at"]:
                a["last_active_at"] = at
            agents.upsert(a)

    @wb.on("MemoryAccessed")
    def accessed(self, event: Event, tables: wb.Tables) -> None:
        d = event.data
        if d is None:
            return
        memories = tables.memories
        m = memories.get(d.get("memory_id"))
        spos = event.stream_position
        if m is None or m["stream_position"] >= spos:
            return
        m["access_count"] += 1
        m["stream_position"] = spos
        memories.upsert(m)
        agent_id = d["agent_id"]
        at = event.occurred_at
        agents = tables.agents
        a = agents.get(agent_id)
        if a is None:
            agents.upsert(
                {"agent_id": agent_id, "memories": 0, "accesses": 1, "last_active_at": at}
            )
        else:
            a["accesses"] += 1
            if at > a["last_active_at"]:
                a["last_active_at"] = at
            agents.upsert(a)
        key = (agent_id, at.date())
        daily_access = tables.daily_access
        day = daily_access.get(key)
        if day is None:
            daily_access.upsert({"agent_id": agent_id, "day": key[1], "accesses": 1})
        else:
            day["accesses"] += 1
            daily_access.upsert(day)


def decoding_only(archive: Path) -> int:
    """The hand loop's reading and decoding alone: its share of :func:`hand_written_dicts`."""
    n = 0
    for _, rows in _batches(archive):
        for _ in rows:
            n += 1
    return n


class _BareTable:
    """A table as a bare dict: what a handler's writes cost with no lineage, log or flush."""

    __slots__ = ("_key", "get", "rows")

    def __init__(self, key: tuple[str, ...]) -> None:
        self.rows: dict[Any, dict[str, Any]] = {}
        self.get = self.rows.get
        self._key = itemgetter(*key)

    def upsert(self, row: dict[str, Any]) -> dict[str, Any]:
        self.rows[self._key(row)] = row
        return row

    def update(self, key: Any, changes: dict[str, Any] | None = None, /, **columns: Any) -> Any:
        row = self.rows[key]
        if changes:
            row.update(changes)
        if columns:
            row.update(columns)
        return row

    def delete(self, key: Any) -> None:
        self.rows.pop(key, None)

    def __contains__(self, key: Any) -> bool:
        return key in self.rows


def handlers_into_bare_dicts(archive: Path) -> float:
    """Seconds Memories' own handlers take over the engine's decoded events, writing
    straight into bare dicts: the projection's cost without the engine's."""
    runner = Runner(Memories())
    tables = Tables({t.name: _BareTable(t.key) for t in Memories.tables()})  # type: ignore[misc]
    dispatch = runner.dispatch
    reader = open_reader(archive)
    handling = 0.0
    for batch in read_batches(reader, select_source(reader, None), wanted=set()):
        events = runner.decode(batch)
        started = time.perf_counter()
        for ev in events:
            h = dispatch.get(ev.event_type)
            if h is not None:
                h(ev, tables)
        handling += time.perf_counter() - started
    return handling


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[float, float, Any]:
    """Wall seconds, process CPU seconds (all threads) and result of ``fn``.

    CPU time is printed too: on a machine shared with other work it varies
    less than wall time.
    """
    start, cpu = time.perf_counter(), _cpu()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, _cpu() - cpu, out


def _child(code: str, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], check=True, capture_output=True, text=True
    )
    return out.stdout


def peak_rss(events: int, entities: int, workdir: Path) -> float:
    """Peak RSS (MiB) of a fresh process replaying ``events`` events.

    Read from ``VmHWM`` (this process image's high-water mark), not
    ``ru_maxrss``: Linux carries ``ru_maxrss`` over from the parent at fork
    and exec, so a child of a big benchmark process reports the parent's peak.
    The archive is generated in a child too, for the same reason.
    """
    archive = workdir / f"archive-{events}"
    if not archive.exists():
        _child(
            "import sys\nfrom workbench.scenario import generate\n"
            "generate(11, entities=int(sys.argv[2]), events=int(sys.argv[3]))"
            ".write_archive(sys.argv[1])\n",
            str(archive),
            str(entities),
            str(events),
        )
    out = _child(
        "import sys, workbench as wb\n"
        "from workbench.examples import Memories\n"
        "wb.replay(sys.argv[1], Memories, into=sys.argv[2])\n"
        "status = open('/proc/self/status').read()\n"
        "print(next(l.split()[1] for l in status.splitlines() if l.startswith('VmHWM')))\n",
        str(archive),
        str(workdir / f"mem-{events}.duckdb"),
    )
    return int(out.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=20_000)
    parser.add_argument("--memory", action="store_true", help="also compare peak RSS at 1x and 4x")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        archive = work / "archive"
        t_gen, _, _ = timed(
            generate(11, entities=args.entities, events=args.events).write_archive, archive
        )
        print(
            f"history: {args.events:,} events over {args.entities:,} memories (generated in {t_gen:.1f}s)"
        )

        cpu: dict[str, float] = {}
        t_dicts, cpu["dicts"], _ = timed(hand_written_dicts, archive, work / "dicts.duckdb")
        t_hand, cpu["hand"], n = timed(hand_written, archive, work / "hand.duckdb")
        t_eng, cpu["eng"], res = timed(wb.replay, archive, Memories, into=work / "engine.duckdb")
        t_nolin, cpu["nolin"], _ = timed(
            wb.replay, archive, Memories, into=work / "nolineage.duckdb", lineage=False
        )
        t_flat, cpu["flat"], _ = timed(wb.replay, archive, MemoriesFlat, into=work / "flat.duckdb")
        t_sql, cpu["sql"], _ = timed(wb.replay, archive, MEMORIES_SQL, into=work / "sql.duckdb")
        t_sql_nolin, cpu["sql_nolin"], _ = timed(
            wb.replay, archive, MEMORIES_SQL, into=work / "sql_nolineage.duckdb", lineage=False
        )

        t_decode, _, _ = timed(decoding_only, archive)
        bare_handlers = handlers_into_bare_dicts(archive)

        for other, schema in (
            ("nolineage", "memories_v1"),
            ("flat", "memories_flat_v1"),
            ("sql", "memories_sql_v1"),
            ("dicts", "main"),
        ):
            con = duckdb.connect(str(work / f"{other}.duckdb"))
            con.execute(f"attach '{work / 'hand.duckdb'}' as hand (read_only)")
            con.execute(f"attach '{work / 'engine.duckdb'}' as engine (read_only)")
            for table in ("memories", "agents", "daily_access"):
                for a, b in (
                    (f"engine.memories_v1.{table}", f"hand.{table}"),
                    (f"{schema}.{table}", f"hand.{table}"),
                ):
                    diff = con.execute(
                        f"select count(*) from ((select * from {a} except select * from {b}) "
                        f"union all (select * from {b} except select * from {a}))"
                    ).fetchall()[0][0]
                    assert diff == 0, f"{a} and {b} disagree"
            con.close()

        def line(label: str, seconds: float, key: str) -> None:
            print(
                f"{label:<40} {seconds:6.2f}s {n / seconds:>10,.0f} events/s "
                f"{t_dicts / seconds:5.2f}x dict loop {t_hand / seconds:5.2f}x list loop "
                f"(CPU {cpu[key]:5.2f}s, {cpu['dicts'] / cpu[key]:4.2f}x / "
                f"{cpu['hand'] / cpu[key]:4.2f}x)"
            )

        line("hand loop, dict rows (issue's baseline)", t_dicts, "dicts")
        line("hand loop, list rows (fastest we found)", t_hand, "hand")
        line("handler engine (lineage + checkpoint)", t_eng, "eng")
        line("handler engine (lineage=False)", t_nolin, "nolin")
        line("handler engine, handlers written flat", t_flat, "flat")
        line("SqlProjection (lineage)", t_sql, "sql")
        line("SqlProjection (lineage=False)", t_sql_nolin, "sql_nolin")
        print(
            "targets: engine >= 300,000 events/s and >= 0.75x the hand loop (into dicts); "
            "SqlProjection >= 2,000,000 events/s"
        )
        phases = dict(res.phases.select("phase", "seconds").iter_rows())
        print(
            "where the gap is (seconds of the handlers' thread):\n"
            f"  reading + decoding: hand loop {t_decode:.2f}, engine "
            f"{phases['reading'] + phases['decoding']:.2f}\n"
            f"  folding: hand loop inline {t_dicts - t_decode:.2f}; Memories' handlers into "
            f"bare dicts {bare_handlers:.2f} (their own Python); in the engine "
            f"{phases['handlers']:.2f} (+ lineage log, row ids); engine flushing "
            f"{phases['flushing']:.2f}"
        )
        print(f"full-rebuild estimate for 10M events: {res.estimate(10_000_000)}")
        print("per handler:\n", res.per_handler)
        if args.memory:
            one = peak_rss(args.events, args.entities, work)
            four = peak_rss(4 * args.events, args.entities, work)
            print(
                f"peak RSS: {args.events:,} events {one:,.0f} MiB; "
                f"{4 * args.events:,} events {four:,.0f} MiB ({four / one:.2f}x)"
            )
        print(
            f"benchmark process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB"
        )


if __name__ == "__main__":
    main()
