"""The scenario generator: determinism, envelope conformance, exact ground truth, outputs.

The truth is checked against independent computations (DuckDB / Polars over
``.events``), never against the generator's own bookkeeping.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import uuid
from pathlib import Path

import duckdb
import polars as pl
import pytest

import workbench as wb
from workbench import envelope
from workbench.archive import ArchiveReader
from workbench.scenario import LATE_AFTER_US, SCHEMAS, Faults, Scenario, generate


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return generate(11, entities=40, events=3_000)


def _sql(s: Scenario, query: str) -> list[tuple[object, ...]]:
    con = duckdb.connect()
    con.register("events", s.events)
    return con.sql(query).fetchall()


def test_same_seed_same_bytes_other_seed_differs() -> None:
    a, b = generate(5, entities=20, events=1_000), generate(5, entities=20, events=1_000)
    assert a.events.equals(b.events) and a.history.equals(b.history)
    assert a.truth == b.truth
    assert not generate(6, entities=20, events=1_000).events.equals(a.events)


def test_conforms_to_envelope(scenario: Scenario) -> None:
    envelope.validate(scenario.events)
    assert scenario.events.schema.equals(envelope.SCHEMA, check_metadata=True)
    positions = scenario.events.column("global_position").to_pylist()
    assert positions == sorted(set(positions)) and len(positions) == 3_000
    meta = json.loads(scenario.events.column("metadata")[0].as_py())
    assert set(meta) == {"correlation_id", "causation_id", "schema_version"}


def test_every_fault_planted(scenario: Scenario) -> None:
    assert all(n > 0 for n in scenario.truth.summary().values()), scenario.truth.summary()
    assert {v for (t, v) in scenario.truth.counts if t == "MemoryCreated"} == {1, 2}


def test_duplicates_exact(scenario: Scenario) -> None:
    dups = (
        pl.from_arrow(scenario.events)
        .group_by("event_id")
        .agg(pl.col("global_position").sort(), pl.len())
        .filter(pl.col("len") > 1)
    )
    found = {r["event_id"]: tuple(r["global_position"]) for r in dups.iter_rows(named=True)}
    assert found == dict(scenario.truth.duplicates)
    # Same content at the later position.
    same = _sql(
        scenario,
        "select count(*) from events a join events b on a.event_id = b.event_id "
        "and a.global_position < b.global_position where a.data is not distinct from b.data "
        "and a.metadata = b.metadata and a.occurred_at = b.occurred_at and a.stream_position = b.stream_position",
    )
    assert same[0][0] == len(found)


def test_gaps_are_exactly_the_missing_positions(scenario: Scenario) -> None:
    present = set(scenario.events.column("global_position").to_pylist())
    missing = set(range(1, max(present) + 1)) - present
    planted = {p for g in scenario.truth.gaps for p in range(g.first, g.last + 1)}
    assert missing == planted
    assert scenario.truth.gaps[0].first == 1 and scenario.truth.gaps[0].reason == "retention"
    assert {g.reason for g in scenario.truth.gaps[1:]} == {"deleted"}


def test_order_inside_streams_and_reorders_across(scenario: Scenario) -> None:
    first = "select * from events qualify row_number() over (partition by event_id order by global_position) = 1"
    inside = _sql(
        scenario,
        f"select count(*) from (select occurred_at < lag(occurred_at) over w as back, "
        f"stream_position <= lag(stream_position) over w as pos_back from ({first}) "
        f"window w as (partition by stream order by global_position)) where back or pos_back",
    )
    assert inside[0][0] == 0
    reordered = _sql(
        scenario,
        f"select global_position from (select global_position, occurred_at < max(occurred_at) over "
        f"(order by global_position rows between unbounded preceding and 1 preceding) as r "
        f"from ({first})) where r order by 1",
    )
    assert tuple(r[0] for r in reordered) == scenario.truth.reordered


def test_late_non_json_drift_orphans_counts(scenario: Scenario) -> None:
    t = scenario.truth
    late = _sql(
        scenario,
        f"select global_position from events where epoch_us(recorded_at) - epoch_us(occurred_at) "
        f"> {LATE_AFTER_US} order by 1",
    )
    assert tuple(r[0] for r in late) == t.late
    rows = pl.from_arrow(scenario.events).to_dicts()
    non_json = tuple(r["global_position"] for r in rows if r["data"] is None)
    assert non_json == t.non_json
    for r in rows:
        if r["data"] is None:
            with pytest.raises(UnicodeDecodeError):
                r["payload"].decode()
    drift = tuple(
        r["global_position"]
        for r in rows
        if r["data"] is not None
        and set(json.loads(r["data"])) != SCHEMAS[(r["event_type"], r["schema_version"])]
    )
    assert drift == t.drift
    ids = {r["event_id"] for r in rows}
    seen: set[str] = set()
    firsts = [r for r in rows if r["event_id"] not in seen and not seen.add(r["event_id"])]
    orphans = tuple(  # one per event: a redelivered copy is the same event
        r["global_position"]
        for r in firsts
        if r["causation_id"] != r["correlation_id"] and r["causation_id"] not in ids
    )
    assert orphans == t.orphans
    counts = _sql(scenario, "select event_type, schema_version, count(*) from events group by 1, 2")
    assert {(a, b): c for a, b, c in counts} == dict(t.counts)
    assert {r["correlation_id"] for r in rows} == t.correlation_ids


def test_an_orphan_delivered_twice_is_one_orphan_as_the_causation_graph_counts() -> None:
    """The demo said the workbench missed orphans at 60k events: its truth counted a
    redelivered orphan's copy, which the causation graph rightly holds as one event."""
    s = generate(5, entities=20, events=3_000, faults=Faults(duplicates=0.3, orphans=0.05))
    rows = pl.from_arrow(s.events).sort("global_position")
    orphan_ids = rows.filter(pl.col("global_position").is_in(list(s.truth.orphans)))["event_id"]
    assert orphan_ids.n_unique() == len(s.truth.orphans)
    copied = rows.filter(pl.col("event_id").is_in(orphan_ids.to_list()))
    assert copied.height > len(s.truth.orphans)  # some orphan was delivered twice
    with tempfile.TemporaryDirectory() as root:
        s.write_archive(root)
        found = wb.open_archive(root).causation().orphans["global_position"].to_list()
    assert sorted(found) == list(s.truth.orphans)


def test_stream_lifecycle() -> None:
    s = generate(3, entities=30, events=2_000, faults=Faults.none())
    df = pl.from_arrow(s.events).sort("global_position")
    per_stream = df.group_by("stream", maintain_order=True).agg("event_type", "stream_position")
    for types, positions in zip(
        per_stream["event_type"], per_stream["stream_position"], strict=True
    ):
        assert types[0] == "MemoryCreated" and "MemoryCreated" not in types[1:]
        assert "MemoryDeleted" not in types[:-1]
        assert list(positions) == list(range(len(positions)))
    # Fan-out: some requests touch several streams; roots are caused by their request.
    fan = df.group_by("correlation_id").agg(pl.col("stream").n_unique())
    assert fan["stream"].max() > 1
    roots = df.filter(pl.col("causation_id") == pl.col("correlation_id"))
    assert roots.height == df["correlation_id"].n_unique()


def test_faults_none_is_clean() -> None:
    s = generate(2, entities=10, events=1_000, faults=Faults.none())
    assert s.events.column("global_position").to_pylist() == list(range(1, 1_001))
    assert all(n == 0 for k, n in s.truth.summary().items() if k != "correlations")
    assert set(s.truth.counts) <= {(t, 1) for t, _ in SCHEMAS}


def test_a_history_without_faults_checks_clean(tmp_path: Path) -> None:
    """Accesses of one request, memory and cause once drew the same query by chance: the
    duplicates check rightly took them for retries, and a clean history had findings."""
    s = generate(7, entities=200, events=20_000, faults=Faults.none())
    archive = wb.open_archive(s.write_archive(tmp_path))
    assert archive.duplicates().found == 0
    assert archive.gaps().found == 0


def test_write_archive_round_trip(scenario: Scenario, tmp_path: object) -> None:
    root = scenario.write_archive(tmp_path, chunk_size=700)  # type: ignore[arg-type]
    reader = ArchiveReader(root)
    assert reader.arrow().equals(scenario.events)
    gaps = reader.sql(
        "select first_missing, last_missing, reason from gap_records order by 1"
    ).fetchall()
    assert [tuple(g) for g in scenario.truth.gaps] == gaps


@pytest.mark.nats
def test_publish_jetstream(nats_url: str, stream_name: str) -> None:
    import nats
    from nats.js.errors import NotFoundError

    s = generate(4, entities=20, events=1_500)
    name = stream_name
    prefix = f"wbtest{uuid.uuid4().hex[:8]}"
    summary = s.publish_jetstream(nats_url, name, subject_prefix=prefix)
    positions = s.events.column("global_position").to_pylist()
    assert (summary.count, summary.first_seq, summary.last_seq) == (
        1_500,
        positions[0],
        positions[-1],
    )

    async def check() -> None:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        try:
            rows = s.events.to_pylist()
            for row in rows:
                msg = await js.get_msg(name, row["global_position"])
                hdr = msg.headers or {}
                assert hdr["Nats-Msg-Id"] == row["event_id"] == hdr["ce-id"]
                assert hdr["ce-type"] == row["event_type"] and hdr["ce-subject"] == row["stream"]
                assert hdr["ce-causationid"] == row["causation_id"]
                assert msg.subject == f"{prefix}.{row['event_type']}.{row['stream']}"
                assert msg.data == (
                    row["data"].encode() if row["data"] is not None else row["payload"]
                )
            for gap in s.truth.gaps[1:]:
                with pytest.raises(NotFoundError):
                    await js.get_msg(name, gap.first)
        finally:
            await js.delete_stream(name)
            await nc.close()

    asyncio.run(check())


@pytest.mark.postgres
def test_insert_postgres_message_db(scenario: Scenario, pg_dsn: str, pg_schema: str) -> None:
    import psycopg

    summary = scenario.insert_postgres(pg_dsn, table=f"{pg_schema}.messages")
    copies = {p for ps in scenario.truth.duplicates.values() for p in ps[1:]}
    assert summary.skipped == {
        "non_json": scenario.truth.non_json,
        "duplicate": tuple(sorted(copies)),
    }
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(
            f"select global_position, position, stream_name, id::text, metadata "
            f"from {pg_schema}.messages order by 1"
        ).fetchall()
        nextval = conn.execute(
            f"select nextval(pg_get_serial_sequence('{pg_schema}.messages', 'global_position'))"
        ).fetchone()
    expected = [
        r for r in scenario.events.to_pylist() if r["global_position"] not in copies and r["data"]
    ]
    assert summary.inserted == len(rows) == len(expected)
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (e["global_position"], e["stream_position"], e["stream"], e["event_id"]) for e in expected
    ]
    meta = rows[-1][4]
    assert {
        "correlationStreamName",
        "causationMessageGlobalPosition",
        "schemaVersion",
        "causationId",
    } <= set(meta)
    assert nextval is not None and nextval[0] > rows[-1][0]


@pytest.mark.postgres
def test_insert_postgres_generic(scenario: Scenario, pg_dsn: str, pg_schema: str) -> None:
    import psycopg

    summary = scenario.insert_postgres(pg_dsn, layout="generic", table=f"{pg_schema}.events")
    assert summary.inserted == scenario.events.num_rows and not summary.skipped
    with psycopg.connect(pg_dsn) as conn:
        got = conn.execute(
            f"select global_position, event_id, occurred_at, data, payload from {pg_schema}.events order by 1"
        ).fetchall()
    want = scenario.events.select(["global_position", "event_id", "occurred_at", "data", "payload"])
    assert got == [tuple(r.values()) for r in want.to_pylist()]
