"""Replay engine: API, upcasters, resume after kill -9, blue/green, dead letters, lineage, coverage."""

from __future__ import annotations

import datetime as dt
import enum
import gzip
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import ClassVar

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import workbench as wb
from workbench import cli
from workbench.archive import ArchiveReader, ArchiveWriter
from workbench.errors import ArchiveError, ArgumentError, ProjectionError
from workbench.examples import MEMORIES_SQL, Memories
from workbench.replay import Event, Tables, lineage_key, load_projection
from workbench.replay.batches import prefetch, read_batches
from workbench.replay.runner import Runner
from workbench.replay.state import TableState, WriteLog
from workbench.scenario import generate

TABLES = ("memories", "agents", "daily_access")


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("archive")
    generate(5, entities=80, events=4_000).write_archive(root)
    return root


def rows(path: Path, schema: str, table: str) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(f'select * from "{schema}"."{table}" order by all').fetchall()
    finally:
        con.close()


# ---------------------------------------------------------------- API


def test_handlers_upcaster_chain_and_table_ops(tmp_path: Path) -> None:
    events = [
        ("Opened", 1, {"id": "a"}),
        ("Opened", 2, {"id": "b", "owner": "x"}),
        ("Opened", 3, {"id": "c", "owner": "y", "tier": "gold"}),
        ("Closed", 1, {"id": "a"}),
        ("Purged", 1, {"id": "b"}),
    ]
    ArchiveWriter(tmp_path / "a", "s").append(
        pa.table(
            {
                "global_position": list(range(1, 6)),
                "recorded_at": list(range(5)),
                "event_type": [e[0] for e in events],
                "schema_version": [e[1] for e in events],
                "stream": ["acc-a", "acc-b", "acc-c", "acc-a", "acc-b"],
                "stream_position": [0, 0, 0, 1, 1],
                "data": [json.dumps(e[2]) for e in events],
            }
        )
    )

    class Accounts(wb.Projection):
        accounts = wb.Table(key="id", id=str, owner=str, tier=str, open=bool)

        @wb.upcaster("Opened", from_version=1)
        def v1(self, data):
            return {**data, "owner": "nobody"}

        @wb.upcaster("Opened", from_version=2)
        def v2(self, data):
            return {**data, "tier": "basic"}

        @wb.on("Opened")
        def opened(self, event, tables):
            assert event.schema_version == 3  # handlers only ever see the newest version
            tables.accounts.upsert({**event.data, "open": True})

        @wb.on("Closed")
        def closed(self, event, tables):
            tables.accounts.update(event.data["id"], open=False)

        @wb.on("Purged")
        def purged(self, event, tables):
            tables.accounts.delete(event.data["id"])

    result = wb.replay(tmp_path / "a", Accounts, into=tmp_path / "o.duckdb")
    assert rows(tmp_path / "o.duckdb", "accounts_v1", "accounts") == [
        ("a", "nobody", "basic", False),
        ("c", "y", "gold", True),
    ]
    assert result.events_applied == 5 and result.coverage.ok
    assert result.per_type.filter(event_type="Opened")["events"].item() == 3
    assert set(result.per_handler["handler"]) == {
        "test_handlers_upcaster_chain_and_table_ops.<locals>.Accounts.opened",
        "test_handlers_upcaster_chain_and_table_ops.<locals>.Accounts.closed",
        "test_handlers_upcaster_chain_and_table_ops.<locals>.Accounts.purged",
    }
    # One event in 32 is timed, and the first of each type: a rare type has a time too.
    timed = dict(result.per_handler.select("handler", "seconds").iter_rows())
    assert all(s is not None and s > 0 for s in timed.values()), timed
    # The deleted row keeps its lineage.
    con = duckdb.connect(str(tmp_path / "o.duckdb"), read_only=True)
    lineage = con.execute(
        "select global_position, event_type from accounts_v1._lineage where key = ? order by 1",
        [lineage_key(["id"], "b")],
    ).fetchall()
    assert lineage == [(2, "Opened"), (5, "Purged")]


def test_definition_errors_are_clear() -> None:
    with pytest.raises(ProjectionError, match="two handlers"):

        class Twice(wb.Projection):
            @wb.on("A")
            def one(self, event, tables): ...

            @wb.on("A")
            def two(self, event, tables): ...

    with pytest.raises(ProjectionError, match=r"column id: unsupported column type 'money'; use"):
        wb.Table(key="id", id="money")
    with pytest.raises(ProjectionError, match=r"a list of UUID \(declare it JSON instead\)"):
        wb.Table(key="id", id=str, ids=list[uuid.UUID])

    # A name set in a base's body is inherited (the next version); a derived one is not.
    class Counting(wb.Projection):
        t = wb.Table(key="k", k=str)

    class Streams(Counting): ...

    class MemoriesV3(Memories):
        version = 3

    assert (Counting.name, Streams.name, MemoriesV3.schema()) == (
        "counting",
        "streams",
        "memories_v3",
    )
    with pytest.raises(ProjectionError, match=r"@on c: takes \(self, event\), but is called"):

        class OneArgument(wb.Projection):
            @wb.on("A")
            def c(self, event): ...


def test_handler_and_sql_projection_agree_with_lineage(archive: Path, tmp_path: Path) -> None:
    into = tmp_path / "o.duckdb"
    wb.replay(archive, Memories, into=into)
    sql = wb.replay(archive, MEMORIES_SQL, into=into)
    assert sql.events_applied == 4_000
    with pytest.raises(ProjectionError, match="nothing to resume"):
        wb.replay(archive, MEMORIES_SQL, into=into, resume=True)
    handler = wb.replay(archive, Memories, into=into)
    phases = dict(handler.phases.select("phase", "seconds").rows())
    assert list(phases) == ["reading", "decoding", "handlers", "flushing", "bookkeeping"]
    assert phases["handlers"] > 0 and phases["decoding"] > 0
    assert abs(sum(phases.values()) - handler.seconds) < 0.05 * handler.seconds + 0.01
    assert "time: " in handler.summary()
    for table in TABLES:
        assert rows(into, "memories_v1", table) == rows(into, "memories_sql_v1", table)
    con = duckdb.connect(str(into), read_only=True)
    one = "select table_name, key, global_position, event_type from {}._lineage order by all"
    assert (
        con.execute(one.format("memories_v1")).fetchall()
        == con.execute(one.format("memories_sql_v1")).fetchall()
    )
    # The lineage key joins back to output rows (the contract the diff relies on).
    unmatched = con.execute(
        "select count(*) from memories_v1.daily_access d anti join memories_v1._lineage l "
        "on l.table_name = 'daily_access' and l.key = to_json(struct_pack(agent_id := d.agent_id, day := d.day))"
    ).fetchall()[0][0]
    assert unmatched == 0
    info = con.execute(
        "select projection, version, archive, events_applied from memories_v1._replay_info"
    ).fetchall()
    assert info == [("memories", 1, str(archive.absolute()), 4_000)]
    con.close()
    # A table whose lineage was not recorded: said so, not "no event wrote" a row that is there.
    bare = wb.SqlProjection("bare", {"memories": MEMORIES_SQL.tables["memories"]},
                            keys={"memories": "memory_id"}, setup=MEMORIES_SQL.setup)  # fmt: skip
    result = wb.replay(archive, bare, into=into)
    key = result.table("memories")["memory_id"][0]
    with pytest.raises(ProjectionError, match=r"no lineage was recorded for memories: .*lineage="):
        result.lineage("memories", key)


def test_until_where_and_sources(archive: Path, tmp_path: Path) -> None:
    first = generate(5, entities=80, events=4_000).events.column("global_position")[1_000].as_py()
    r = wb.replay(
        archive,
        Memories,
        into=tmp_path / "o.duckdb",
        until=first,
        where="event_type <> 'MemoryUpdated'",
    )
    assert r.last_position <= first and "MemoryUpdated" not in set(r.per_type["event_type"])
    with pytest.raises(ProjectionError, match=r"invalid where filter \(--where\)"):
        wb.replay(archive, Memories, into=tmp_path / "o.duckdb", where="no_such_column = 1")
    with pytest.raises(ArchiveError, match="no source 'x'"):
        wb.replay(archive, Memories, into=tmp_path / "o.duckdb", source="x")
    # The name after the kind (and schema) is enough when it names one source.
    (source,) = ArchiveReader(archive).sources
    short = wb.replay(archive, Memories, into=tmp_path / "s.duckdb", source=source.split(":")[-1])
    assert short.source == source
    mistyped = source.split(":")[-1][:-1]  # MEMORIE
    with pytest.raises(ArchiveError, match=f"no source '{mistyped}'; did you mean {source}\\?"):
        wb.replay(archive, Memories, into=tmp_path / "o.duckdb", source=mistyped)
    (tmp_path / "empty").mkdir()  # no archive at all: said so, as every command says it
    with pytest.raises(ArchiveError, match=r"^no archive at .*empty"):
        wb.replay(tmp_path / "empty", Memories, into=tmp_path / "o.duckdb")


# A projection that handles only MemoryCreated, and only its v2, as a file.
CREATED_ONLY = textwrap.dedent(
    """
    import workbench as wb

    class CreatedOnly(wb.Projection):
        memories = wb.Table(key="memory_id", memory_id=str)

        @wb.on("MemoryCreated")
        def created(self, event, tables):
            if event.data:
                tables.memories.upsert({"memory_id": event.data["memory_id"]})
    """
)


def created_only(tmp_path: Path) -> str:
    script = tmp_path / "created_only.py"
    script.write_text(CREATED_ONLY)
    return f"{script}:CreatedOnly"


def test_coverage_reports_unhandled_types_and_versions(archive: Path, tmp_path: Path) -> None:
    CreatedOnly = load_projection(created_only(tmp_path))
    before = wb.check_coverage(archive, CreatedOnly)  # without running the replay
    result = wb.replay(archive, CreatedOnly, into=tmp_path / "o.duckdb")
    problems = result.coverage.problems()
    assert before.problems() == problems
    assert any(p.startswith("MemoryAccessed v1") and "no handler" in p for p in problems)
    assert any(p.startswith("MemoryCreated v1") and "not upcast to v2" in p for p in problems)
    assert not any(p.startswith("MemoryCreated v2") for p in problems)
    # A notebook's print(result) says so too, as the CLI's exit code 1 does.
    assert "; not covered: MemoryAccessed v1 (" in str(result)
    full = wb.replay(archive, Memories, into=tmp_path / "o.duckdb")
    assert full.coverage.ok and "not covered" not in str(full)

    class EveryVersion(type(CreatedOnly)):  # type: ignore[misc]
        @wb.on("MemoryCreated", any_version=True)
        def created(self, event, tables):
            super().created(event, tables)

    problems = wb.check_coverage(archive, EveryVersion).problems()
    assert not any(p.startswith("MemoryCreated") for p in problems), problems
    assert any(p.startswith("MemoryAccessed v1") for p in problems)


# ---------------------------------------------------------------- errors


class Fragile(Memories):
    name = "fragile"

    @wb.on("MemoryUpdated")
    def updated(self, event, tables):
        raise ValueError("boom")


def test_error_stops_with_event_and_handler(archive: Path, tmp_path: Path) -> None:
    with pytest.raises(
        ProjectionError,
        match=r"Fragile.updated failed on MemoryUpdated at global_position \d+ .*ValueError: boom",
    ):
        wb.replay(archive, Fragile, into=tmp_path / "o.duckdb")
    # An event without a stream position is named without "#None".
    root = tmp_path / "nopos"
    ArchiveWriter(root, "s").append(
        pa.table(
            {
                "global_position": [1],
                "recorded_at": [0],
                "event_type": ["MemoryUpdated"],
                "stream": ["o-7"],
                "data": ["{}"],
            }
        )
    )
    with pytest.raises(ProjectionError, match=r"global_position 1 \(stream o-7\) at"):
        wb.replay(root, Fragile, into=tmp_path / "p.duckdb")


class Misspelt(Memories):
    name = "misspelt"

    @wb.on("MemoryUpdated")
    def updated(self, event, tables):
        tables.memorys.get(event.data["memory_id"])


def test_a_misspelt_table_is_named_with_the_tables_there_are(archive: Path, tmp_path: Path) -> None:
    with pytest.raises(
        ProjectionError,
        match=r"Misspelt.updated failed .*: no table 'memorys'; "
        r"tables: memories, agents, daily_access$",
    ):
        wb.replay(archive, Misspelt, into=tmp_path / "o.duckdb")


class Keyless(Memories):
    name = "keyless"

    @wb.on("MemoryUpdated")
    def updated(self, event, tables):
        tables.memories.upsert({"content": "no key"})  # the line the error must name


def test_a_failure_inside_the_table_api_names_the_handler_line(
    archive: Path, tmp_path: Path
) -> None:
    line = next(
        i
        for i, text in enumerate(Path(__file__).read_text().splitlines(), 1)
        if "the line the error must name" in text
    )
    with pytest.raises(
        ProjectionError, match=rf"at test_replay.py:{line}: .*row has no key column memory_id"
    ):
        wb.replay(archive, Keyless, into=tmp_path / "o.duckdb")


class WrongType(Memories):
    name = "wrongtype"

    @wb.on("MemoryDeleted")
    def deleted(self, event, tables):
        row = tables.memories.get(event.data["memory_id"]) if event.data else None
        if row is not None:
            row["access_count"] = "many"
            tables.memories.upsert(row)


WRONG_TYPE_LINE = WrongType.deleted.__code__.co_firstlineno + 5  # its upsert


def test_a_value_of_the_wrong_type_names_its_row_and_the_event_that_wrote_it(
    archive: Path, tmp_path: Path
) -> None:
    with pytest.raises(ProjectionError) as caught:
        wb.replay(archive, WrongType, into=tmp_path / "o.duckdb")
    message = str(caught.value)
    assert re.fullmatch(
        r"table memories, column access_count: a handler wrote 'many', which is not BIGINT; "
        r"row '[0-9a-f-]+', last written by WrongType.deleted on MemoryDeleted "
        r"at global_position \d+ \(perhaps not the writer of the bad value: --dead-letter "
        r"checks each write as it is made\)",
        message,
    ), message
    position = int(message.split("at global_position ")[1].split(" ")[0])
    row_key = message.split("row '")[1].split("'")[0]
    event = wb.open_archive(archive).sql(
        f"select event_type, data->>'memory_id' from events where global_position = {position}"
    )
    assert event.fetchall() == [("MemoryDeleted", row_key)]


class Lossy(wb.Projection):
    """Values Arrow would convert with a loss: a float into an int, a datetime into a date."""

    name = "lossy"
    rows = wb.Table(key="memory_id", memory_id=str, n=int, day=dt.date)

    @wb.on("MemoryCreated")
    def created(self, event, tables):
        if event.data is not None:
            at = event.recorded_at
            day = at if event.data.get("kind") == "episodic" else at.date()
            n = event.data.get("importance", 1) * (2 if event.schema_version == 1 else 1)
            tables.rows.upsert({"memory_id": event.data["memory_id"], "n": n, "day": day})


def test_a_value_that_would_lose_digits_or_time_is_refused_not_truncated(
    archive: Path, tmp_path: Path
) -> None:
    with pytest.raises(ProjectionError, match=r"column (n|day): a handler wrote") as caught:
        wb.replay(archive, Lossy, into=tmp_path / "o.duckdb")
    assert "truncated" in str(caught.value) or "would drop its time" in str(caught.value)
    # Whole floats (v1: 0.5 * 2 = 1.0) and dates are stored as they are.

    class Whole(Lossy):
        name = "whole"

        @wb.on("MemoryCreated")
        def created(self, event, tables):
            if event.data is not None:
                row = {"memory_id": event.data["memory_id"], "n": 2.0, "day": dt.date(2024, 5, 1)}
                tables.rows.upsert(row)

    wb.replay(archive, Whole, into=tmp_path / "w.duckdb")
    got = duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True).sql(
        "select distinct n, day from whole_v1.rows"
    )
    assert got.fetchall() == [(2, dt.date(2024, 5, 1))]


class ForgotReturn(Memories):
    name = "forgot_return"

    @wb.upcaster("MemoryCreated", from_version=1)
    def created_v1(self, data):
        data["importance"] = 0.5  # and no `return data`


def test_an_upcaster_returning_none_is_an_error_not_a_skipped_event(
    archive: Path, tmp_path: Path
) -> None:
    with pytest.raises(
        ProjectionError, match=r"ForgotReturn.created_v1 failed on MemoryCreated"
    ) as caught:
        wb.replay(archive, ForgotReturn, into=tmp_path / "o.duckdb")
    assert re.search(r"the upcaster \(def at test_replay.py:\d+\) returned None", str(caught.value))


def test_dead_letters_record_and_go_on(archive: Path, tmp_path: Path) -> None:
    result = wb.replay(archive, Fragile, into=tmp_path / "o.duckdb", on_error="dead-letter")
    updates = result.per_type.filter(event_type="MemoryUpdated")["events"].item()
    assert result.dead_letters == updates > 0
    con = duckdb.connect(str(tmp_path / "o.duckdb"), read_only=True)
    letter = con.execute(
        "select event_type, handler, error, traceback, data from fragile_v1._dead_letters limit 1"
    ).fetchall()[0]
    # The error says where in the projection it was raised: two bugs of one text stay apart.
    assert letter[:2] == ("MemoryUpdated", "Fragile.updated")
    assert re.fullmatch(r"ValueError: boom \(at test_replay\.py:\d+\)", letter[2])
    assert "raise ValueError" in letter[3] and "memory_id" in letter[4]
    assert con.execute("select count(*) from fragile_v1.memories").fetchall()[0][0] > 0
    con.close()
    first = result.dead_letter_rows(limit=3)
    assert first.height == 3 and first["error"].to_list() == [letter[2]] * 3
    assert first["global_position"].is_sorted()
    assert result.dead_letter_rows().height == result.dead_letters


# ---------------------------------------------------------------- resume, blue/green


SLOW = textwrap.dedent(
    """
    import sys, time
    import workbench as wb
    from workbench.examples import Memories

    class Slow(Memories):
        name = "memories"

        @wb.on("MemoryAccessed")
        def accessed(self, event, tables):
            time.sleep(0.0003)
            super().accessed(event, tables)

    if __name__ == "__main__":
        wb.replay(sys.argv[1], Slow, into=sys.argv[2], batch_size=100,
                  flush_every=int(sys.argv[3]), flush_seconds=float(sys.argv[4]),
                  progress=lambda done, total: print(done, flush=True))
    """
)


@pytest.mark.parametrize(
    ("flush_every", "flush_seconds"),
    [(100, 1000.0), (10**9, 0.05)],  # flushed by events, by time
    ids=["by-events", "by-seconds"],
)
def test_resume_after_kill_9_gives_the_uninterrupted_rows(
    archive: Path, tmp_path: Path, flush_every: int, flush_seconds: float
) -> None:
    script = tmp_path / "slow.py"
    script.write_text(SLOW)
    into = tmp_path / "crashed.duckdb"
    env = {**os.environ, "PYTHONPATH": str(Path(wb.__file__).parent.parent)}
    child = subprocess.Popen(
        [
            sys.executable,
            str(script),
            str(archive),
            str(into),
            str(flush_every),
            str(flush_seconds),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    for line in child.stdout:
        if int(line) >= 1_500:
            break
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    with duckdb.connect(str(into), read_only=True) as con:  # how far it got, both ways
        info = con.execute("select events_applied from memories_v1._replay_info").fetchall()
        checkpoint = con.execute("select events_applied from memories_v1._checkpoint").fetchall()
    assert info == checkpoint and info[0][0] > 0
    resumed = wb.replay(archive, load_projection(f"{script}:Slow"), into=into, resume=True)
    assert resumed.resumed_from is not None and 0 < resumed.events_applied < 4_000
    assert resumed.total_applied == 4_000
    clean = tmp_path / "clean.duckdb"
    wb.replay(archive, Memories, into=clean)
    for table in TABLES:
        assert rows(into, "memories_v1", table) == rows(clean, "memories_v1", table)
    con = duckdb.connect(str(into), read_only=True)
    # No event's lineage was written twice.
    dupes = con.execute(
        "select count(*) from (select table_name, key, global_position, count(*) n "
        "from memories_v1._lineage group by all having n > 1)"
    ).fetchall()[0][0]
    assert dupes == 0
    # Rows numbered after the resume did not collide with the stored ones: the
    # lineage is the uninterrupted run's, entry for entry.
    lineage = "select table_name, key, global_position, event_type from {}memories_v1._lineage"
    con.execute(f"attach '{clean}' as clean (read_only)")
    differ = con.execute(
        f"select count(*) from (({lineage.format('')} except all {lineage.format('clean.')}) "
        f"union all ({lineage.format('clean.')} except all {lineage.format('')}))"
    ).fetchall()[0][0]
    assert differ == 0
    # Rows stored before the crash kept their row ids: one _lineage_rows entry each.
    again = con.execute(
        "select count(*) from (select table_name, key from memories_v1._lineage_rows "
        "group by all having count(*) > 1)"
    ).fetchall()[0][0]
    assert again == 0


SLEEPY = textwrap.dedent(
    """
    import time
    import workbench as wb

    class Sleepy(wb.Projection):
        seen = wb.Table(key="stream", stream=str)

        @wb.on("MemoryAccessed")
        def accessed(self, event, tables):
            if event.global_position > 1_000:
                time.sleep(0.01)
    """
)


def test_a_replay_stopped_by_sigterm_says_what_it_kept(archive: Path, tmp_path: Path) -> None:
    """systemd, Kubernetes and timeout stop with SIGTERM: the replay says what it kept."""
    script = tmp_path / "sleepy.py"
    script.write_text(SLEEPY)
    env = {**os.environ, "PYTHONPATH": str(Path(wb.__file__).parent.parent), "COLUMNS": "300"}
    into = tmp_path / "o.duckdb"
    command = [sys.executable, "-m", "workbench", "replay", "--archive", str(archive)]
    command += ["--projection", str(script), "--into", str(into)]

    def stopped(*more: str) -> str:
        child = subprocess.Popen(
            [*command, *more],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            # A job started in the background (`cmd &` in a script) ignores SIGINT.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
        assert child.stdout is not None
        assert "not covered" in child.stdout.readline()  # printed just before the run starts
        time.sleep(1)
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=60)
        assert child.returncode == 130
        return " ".join(err.split())

    # One batch of 4,000 events: stopped inside it, before any flush.
    fresh = stopped()
    assert "stopped: sleepy_v1 in" in fresh and "has no checkpoint yet: a new run" in fresh
    wb.replay(archive, load_projection(str(script)), into=into, until=1_000)
    kept = stopped("--resume")
    assert re.search(
        r"holds the events up to global_position 1,000 \(its last flush\); replay with "
        r"--resume to go on from there",
        kept,
    ), kept


def test_blue_green_versions_side_by_side_and_promote(archive: Path, tmp_path: Path) -> None:
    class MemoriesV2(Memories):
        version = 2  # keeps the name "memories": its next version

        def count_access(self, event, tables, row):
            tables.memories.update(
                row["memory_id"],
                access_count=row["access_count"] + 10,
                stream_position=event.stream_position,
            )

    into = tmp_path / "o.duckdb"
    first = wb.replay(archive, Memories, into=into)
    assert first.replaced is None and "replacing" not in first.summary()
    # Without resume, a replay over an earlier one of the same version starts afresh: said.
    again = wb.replay(archive, Memories, into=into)
    assert again.replaced == first.total_applied > 0
    assert f"replacing the earlier replay ({first.total_applied:,} events applied" in (
        again.summary()
    )
    wb.promote(into, "memories", 1)
    assert wb.replay(archive, MemoriesV2, into=into).replaced is None  # beside, not over
    con = duckdb.connect(str(into))
    total = "select sum(access_count) from memories.memories"
    v1 = con.execute(total).fetchall()[0][0]
    con.close()
    assert wb.promote(into, "memories", 2) == ["agents", "daily_access", "memories"]
    con = duckdb.connect(str(into))
    assert con.execute(total).fetchall()[0][0] == 10 * v1
    assert con.execute("select count(*) from memories_v1.memories").fetchall()[0][0] > 0
    con.close()
    with pytest.raises(ProjectionError, match=r"no schema memories_v7.*; did you mean memories_v"):
        wb.promote(into, "memories", 7)
    with pytest.raises(ProjectionError, match=r"no schema memorie_v1.*; did you mean memories_v1"):
        wb.promote(into, "memorie", 1)

    # Rebuilding the promoted version in place would empty the stable views.
    with pytest.raises(
        ProjectionError, match=r"memories_v2 is promoted \(memories.agents, .*resume=True"
    ):
        wb.replay(archive, MemoriesV2, into=into)
    con = duckdb.connect(str(into))
    assert con.execute(total).fetchall()[0][0] == 10 * v1
    con.close()
    # A notebook's replay cell run again: resuming the promoted version is what it offers.
    assert wb.replay(archive, MemoriesV2, into=into, resume=True).events_applied == 0
    wb.replay(archive, Memories, into=into)  # v1 is no longer promoted: rebuilt


# ---------------------------------------------------------------- loader, CLI


def test_cli_replay_and_errors(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = str(Path(wb.__file__).parent / "examples" / "memories.py") + ":Memories"
    code = cli.run(
        [
            "replay",
            "--archive",
            str(archive),
            "--projection",
            spec,
            "--into",
            str(tmp_path / "c.duckdb"),
        ]
    )
    assert code == 0
    assert "memories_v1: 4,000 events" in capsys.readouterr().out
    # Into a directory not there yet: made, as report --out and snapshot --out make theirs.
    deeper = str(tmp_path / "new" / "dir" / "c.duckdb")
    assert (
        cli.run(["replay", "--archive", str(archive), "--projection", spec, "--into", deeper]) == 0
    )
    capsys.readouterr()
    assert cli.run(["replay", "--archive", str(archive), "--projection", "nope.py:X"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.run(["replay", "--archive", str(tmp_path / "missing"), "--projection", spec]) == 2
    # An existing Parquet file opens as an empty in-memory database: refused, left as it was.
    live = tmp_path / "live.parquet"
    pq.write_table(pa.table({"memory_id": ["m"]}), live)
    before = live.read_bytes()
    assert (
        cli.run(["replay", "--archive", str(archive), "--projection", spec, "--into", str(live)])
        == 2
    )
    assert "live.parquet is a data file, not a DuckDB database" in capsys.readouterr().err
    assert live.read_bytes() == before
    gzipped = tmp_path / "live.csv.gz"
    gzipped.write_bytes(gzip.compress(b"memory_id\nm\n"))
    assert (
        cli.run(["replay", "--archive", str(archive), "--projection", spec, "--into", str(gzipped)])
        == 2
    )
    assert "live.csv.gz is not a DuckDB database file" in capsys.readouterr().err


def test_a_result_relation_kept_in_a_notebook_locks_nothing(archive: Path, tmp_path: Path) -> None:
    into = tmp_path / "o.duckdb"
    result = wb.replay(archive, Memories, into=into, until=500)
    relation = result.sql("select memory_id, access_count from memories order by 1")
    args = ["--archive", str(archive), "--projection", "workbench.examples:Memories"]
    again = subprocess.run(
        [sys.executable, "-m", "workbench", "replay", *args, "--into", str(into)],
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0, again.stderr
    assert relation.fetchall() == sorted(relation.fetchall())  # still readable
    # and with the file open read-write in this process (a notebook's own connection)
    con = duckdb.connect(str(into))
    assert result.sql("select count(*) from memories").fetchall()[0][0] > 0
    with pytest.raises(ProjectionError, match="read-only"):  # a look, never a change
        result.sql("delete from memories")
    with pytest.raises(ProjectionError, match=r'^query failed: .*Did you mean "memories"'):
        result.sql("select * from memorie")
    assert con.sql("select count(*) from memories_v1.memories").fetchall()[0][0] > 0
    con.close()


def test_prefetch_raises_producer_errors_and_stops_when_closed() -> None:
    def failing() -> Iterator[int]:
        yield 1
        raise ValueError("bad batch")

    with pytest.raises(ValueError, match="bad batch"):
        list(prefetch(failing()))

    produced: list[int] = []

    def endless() -> Iterator[int]:
        for i in itertools.count():
            produced.append(i)
            yield i

    items = prefetch(endless(), depth=2)
    assert next(items) == 0
    closing = threading.Thread(target=items.close)  # close() waits for the producer to stop
    closing.start()
    closing.join(timeout=10)
    assert not closing.is_alive(), "the producer did not stop"
    stopped_at = len(produced)
    time.sleep(0.3)
    assert len(produced) == stopped_at <= 5


def test_write_log_rejects_writes_outside_an_event() -> None:
    log = WriteLog()
    state = TableState(Memories.agents, log)
    state.upsert({"agent_id": "a", "memories": 0, "accesses": 0, "last_active_at": None})
    with pytest.raises(ProjectionError, match="before any event"):
        log.take()


def test_resume_refuses_a_schema_with_lineage_as_a_table(archive: Path, tmp_path: Path) -> None:
    into = tmp_path / "old.duckdb"
    wb.replay(archive, Memories, into=into, until=1_000)
    con = duckdb.connect(str(into))
    con.execute("drop view memories_v1._lineage")
    con.execute("create table memories_v1._lineage as select 1 as x")  # the earlier form
    con.close()
    with pytest.raises(ProjectionError, match=r"older workbench.*without --resume"):
        wb.replay(archive, Memories, into=into, resume=True)
    # Without --resume the version is rebuilt from scratch, in the current form.
    assert wb.replay(archive, Memories, into=into).events_applied == 4_000
    nothing_left = wb.replay(archive, Memories, into=into, resume=True)
    assert nothing_left.events_applied == 0
    assert "no events applied, so no rebuild estimate" in nothing_left.summary()


def test_a_resume_of_a_few_events_gives_no_rebuild_estimate(archive: Path, tmp_path: Path) -> None:
    into = tmp_path / "r.duckdb"
    wb.replay(archive, Memories, into=into, until=3_990)
    few = wb.replay(archive, Memories, into=into, resume=True)
    assert 0 < few.events_applied < 100
    assert f"{few.events_applied} events are too few to estimate a rebuild from" in few.summary()
    with pytest.raises(ProjectionError, match="too few to estimate a rebuild from"):
        few.estimate(5_000_000)  # the summary says there is none: so does the method
    full = wb.replay(archive, Memories, into=tmp_path / "full.duckdb")
    assert full.estimate(50_000_000) > full.estimate(4_000) > dt.timedelta(0)
    with pytest.raises(ArgumentError, match=r"estimate\('50M'\): a number of events"):
        full.estimate("50M")  # type: ignore[arg-type]
    nothing = wb.replay(archive, Memories, into=tmp_path / "none.duckdb", where="false")
    with pytest.raises(ProjectionError, match="0 events applied: too few to estimate"):
        nothing.estimate()
    assert "; no event applied;" in nothing.summary() and "None" not in nothing.summary()
    assert "rebuild of all 4,000 events" in wb.replay(archive, Memories, into=into).summary()
    # Asked to resume a replay that never flushed: it starts over, and says so.
    fresh = wb.replay(archive, Memories, into=tmp_path / "new.duckdb", resume=True)
    assert fresh.events_applied == 4_000
    assert "from the start: there was no checkpoint to resume from" in fresh.summary()


def test_lineage_false_writes_the_same_rows_and_no_lineage(archive: Path, tmp_path: Path) -> None:
    into = tmp_path / "o.duckdb"
    wb.replay(archive, Memories, into=into, lineage=False)
    wb.replay(archive, MEMORIES_SQL, into=into, lineage=False)
    reference = tmp_path / "ref.duckdb"
    wb.replay(archive, Memories, into=reference)
    con = duckdb.connect(str(into), read_only=True)
    for schema in ("memories_v1", "memories_sql_v1"):
        assert con.execute(f"select count(*) from {schema}._lineage").fetchall() == [(0,)]
        for table in TABLES:
            assert rows(into, schema, table) == rows(reference, "memories_v1", table)
    con.close()
    d = wb.diff(f"{into}:memories_sql_v1.agents", f"{reference}:memories_v1.agents", key="agent_id")
    some_agent = rows(reference, "memories_v1", "agents")[0][0]
    assert d.explain(some_agent).notes == [
        "the replay recorded no lineage for agents (replayed with lineage=False, or a SqlProjection with no lineage= query for it)"
    ]


def test_sql_lineage_keeps_labelled_types_and_null_keys(archive: Path, tmp_path: Path) -> None:
    labelled = wb.SqlProjection(
        "labelled",
        tables={"per_stream": "select stream, count(*) as n from events group by stream"},
        keys={"per_stream": "stream"},
        lineage={
            "per_stream": "select case when global_position % 7 = 0 then null else stream end "
            "as stream, global_position, 'counted:' || event_type as event_type from events"
        },
    )
    into = tmp_path / "o.duckdb"
    wb.replay(archive, labelled, into=into)
    con = duckdb.connect(str(into), read_only=True)
    entries = con.execute(
        "select count(*), count(*) filter (key = '{\"stream\":null}'), "
        "bool_and(starts_with(event_type, 'counted:')) from labelled_v1._lineage"
    ).fetchall()
    sevens = (
        ArchiveReader(archive)
        .sql("select count(*) from events where global_position % 7 = 0")
        .fetchall()[0][0]
    )
    assert entries == [(4_000, sevens, True)] and sevens > 0


def test_sql_lineage_keys_take_the_tables_types_and_setup_goes_with_a_failed_rebuild(
    archive: Path, tmp_path: Path
) -> None:
    """A lineage query giving a BIGINT key as text stored {"n":"3"}: lineage(t, 3) denied
    the row. And a table the setup made stayed behind when the rebuild failed."""
    by_position = wb.SqlProjection(
        "by_position",
        tables={"t": "select stream_position::BIGINT as n, count(*) as c from events group by 1"},
        keys={"t": "n"},
        lineage={
            "t": "select stream_position::VARCHAR as n, global_position, event_type from events"
        },
    )
    into = tmp_path / "o.duckdb"
    result = wb.replay(archive, by_position, into=into)
    assert (
        result.lineage("t", 3).height == result.sql("select c from t where n = 3").fetchall()[0][0]
    )
    broken = wb.SqlProjection(
        "by_position",
        setup="create table made_by_setup as select 1 as x",
        tables={"t": "select no_such_column from events"},
    )
    with pytest.raises(ProjectionError, match="no_such_column"):
        wb.replay(archive, broken, into=into)
    con = duckdb.connect(str(into), read_only=True)
    assert (
        con.sql("select table_name from duckdb_tables() where schema_name = 'main'").fetchall()
        == []
    )
    assert con.sql("select count(*) from by_position_v1.t").fetchall()[0][0] > 0  # kept
    con.close()


def test_resumed_lineage_names_the_handler_that_wrote_each_entry(
    archive: Path, tmp_path: Path
) -> None:
    class Renamed(Memories):
        name = "memories"

        @wb.on("MemoryAccessed")
        def accessed(self, event: Event, tables: Tables) -> None:
            super().accessed(event, tables)

    into = tmp_path / "o.duckdb"
    wb.replay(archive, Memories, into=into, until=2_000)
    wb.replay(archive, Renamed, into=into, resume=True)
    con = duckdb.connect(str(into), read_only=True)
    handlers = con.execute(
        "select handler, min(global_position) <= 2000, max(global_position) > 2000 "
        "from memories_v1._lineage where event_type = 'MemoryAccessed' group by 1 order by 1"
    ).fetchall()
    assert handlers == [
        ("Memories.accessed", True, False),
        (
            "test_resumed_lineage_names_the_handler_that_wrote_each_entry.<locals>"
            ".Renamed.accessed",
            False,
            True,
        ),
    ]


def test_a_deleted_row_written_again_gets_a_new_row_id() -> None:
    log = WriteLog()
    state = TableState(Memories.agents, log)
    row = {"agent_id": "a", "memories": 0, "accesses": 0, "last_active_at": None}
    log.event(1)
    state.upsert(dict(row))
    assert state.take_changes(log.take().written()).new_ids == [0]
    log.event(2)
    state.delete("a")
    assert state.take_changes(log.take().written()).deletes == ["a"]
    log.event(3)
    state.upsert(dict(row))
    assert state.take_changes(log.take().written()).new_ids == [1]


def test_broken_payloads_never_lend_text_to_their_neighbours(tmp_path: Path) -> None:
    # Joined for one parse, these three would read as "a,b", 1 and 2.
    texts = ['"a', 'b"', "1,2", '{"k": "x"}', "NaN"]
    ArchiveWriter(tmp_path / "a", "s").append(
        pa.table(
            {
                "global_position": list(range(1, 6)),
                "recorded_at": [0] * 5,
                "event_type": ["Seen"] * 5,
                "data": texts,
            }
        )
    )

    class Payloads(wb.Projection):
        seen = wb.Table(key="position", position=int, data=str)

        @wb.on("Seen")
        def record(self, event: Event, tables: Tables) -> None:
            tables.seen.upsert({"position": event.global_position, "data": repr(event.data)})

    into = tmp_path / "o.duckdb"
    wb.replay(tmp_path / "a", Payloads, into=into)
    assert [r[1] for r in rows(into, "payloads_v1", "seen")] == [
        "None",
        "None",
        "None",
        "{'k': 'x'}",
        "nan",  # Python's json reads NaN; DuckDB's check sends it to json.loads alone
    ]


def test_a_handler_failing_on_an_event_without_json_data_is_told_why(tmp_path: Path) -> None:
    """Most archives hold some payloads that are not JSON (event.data is None): the
    TypeError a handler then raises says so, and how to skip them."""
    ArchiveWriter(tmp_path / "a", "s").append(
        pa.table(
            {
                "global_position": [1, 2, 3],
                "recorded_at": [0] * 3,
                "event_type": ["Seen"] * 3,
                "data": ['{"k": "x"}', "{oops", None],
                "payload": [None, None, b"\x00\x01"],
            }
        )
    )

    class Keys(wb.Projection):
        seen = wb.Table(key="k", k=str)

        @wb.on("Seen")
        def record(self, event: Event, tables: Tables) -> None:
            tables.seen.upsert({"k": event.data["k"]})

    result = wb.replay(tmp_path / "a", Keys, into=tmp_path / "o.duckdb", on_error="dead-letter")
    letters = result.dead_letter_rows()["error"]
    line = Keys.record.__code__.co_firstlineno + 2  # its one statement
    skip = "skip such events with `if event.data is None: return`"
    assert [e.split(" (this event's data is None: ")[1] for e in letters] == [
        f"its data is not valid JSON; {skip}) (at test_replay.py:{line})",
        f"its payload is not JSON, event.payload holds the bytes; {skip}) (at test_replay.py:{line})",
    ]


def test_cli_reports_coverage_before_the_run(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["replay", "--archive", str(archive), "--projection", created_only(tmp_path)]
    assert cli.run([*args, "--into", str(tmp_path / "o.duckdb")]) == 1
    out = capsys.readouterr().out
    assert "not covered: MemoryAccessed v1" in out
    assert out.index("not covered") < out.index("createdonly_v1:")


def test_an_envelope_field_no_event_carries_is_said_before_and_in_the_error(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A NATS subject per aggregate has no stream_position: a guard on it cannot work."""
    events = ArchiveReader(archive)
    unpositioned = events.sql(
        "select * replace (null::BIGINT as stream_position) from events order by global_position"
    ).to_arrow_table()
    root = tmp_path / "unpositioned"
    ArchiveWriter(root, events.sources[0]).append(unpositioned)
    assert wb.check_coverage(root, Memories).notes() == [
        "no handled event has stream_position: event.stream_position is None in every "
        "handler (archive with --map to give it)"
    ]
    assert wb.check_coverage(archive, Memories).notes() == []
    with pytest.raises(
        ProjectionError, match=r"TypeError: .*NoneType.*\(this event's stream_position is None\)"
    ):
        wb.replay(root, Memories, into=tmp_path / "o.duckdb")
    args = ["replay", "--archive", str(root), "--projection", "workbench.examples:Memories"]
    assert cli.run([*args, "--into", str(tmp_path / "cli.duckdb")]) == 2
    assert "note: no handled event has stream_position" in capsys.readouterr().out


class PerMinute(wb.Projection):
    minutes = wb.Table(key="minute", minute=dt.datetime, events=int)

    @wb.on("MemoryAccessed")
    def accessed(self, event: wb.Event, tables: wb.Tables) -> None:
        minute = event.occurred_at.replace(second=0, microsecond=0)
        row = tables.minutes.get(minute) or {"minute": minute, "events": 0}
        row["events"] += 1
        tables.minutes.upsert(row)


def test_lineage_key_finds_a_row_keyed_by_a_time(archive: Path, tmp_path: Path) -> None:
    """lineage_key renders a TIMESTAMPTZ key as the replay stored it (DuckDB's +00, not
    Python's +00:00), whatever the caller's time zone."""
    into = tmp_path / "m.duckdb"
    result = wb.replay(archive, PerMinute, into=into)
    con = duckdb.connect(str(into))
    con.execute("set TimeZone = 'America/New_York'")
    minute, events = con.execute(
        f"select minute, events from {result.schema}.minutes order by minute limit 1"
    ).fetchall()[0]
    writes = con.execute(
        f"select count(*) from {result.schema}._lineage where key = ?",
        [lineage_key(["minute"], minute)],
    ).fetchall()[0][0]
    assert writes == events > 0


def test_handler_time_is_sampled_in_one_rhythm_across_batches(archive: Path) -> None:
    # Restarting the rhythm per batch would time every batch's first event.
    # Besides, the first event of each type not timed yet is timed, outside the rhythm.
    reader = ArchiveReader(archive)
    runner = Runner(Memories())
    expected, seen, timed_types = 0, 0, set()
    for batch in read_batches(reader, reader.sources[0], batch_size=10):
        decoded = runner.decode(batch)
        runner.apply(decoded)
        firsts = {}
        for i, e in enumerate(decoded):
            if e.event_type in runner.dispatch and e.event_type not in timed_types:
                firsts.setdefault(e.event_type, i)
        for i, e in enumerate(decoded):
            if firsts.get(e.event_type) == i:
                expected += 1
                timed_types.add(e.event_type)
                continue
            if seen % 32 == 0 and e.event_type in runner.dispatch:
                expected += 1
                timed_types.add(e.event_type)
            seen += 1
    assert sum(runner.sampled_events.values()) == expected
    assert set(runner.sampled_events) == timed_types == set(runner.dispatch)


def test_resume_knows_an_archive_by_its_first_event_not_its_path(
    archive: Path, tmp_path: Path
) -> None:
    place, link = tmp_path / "archive", tmp_path / "link"
    shutil.copytree(archive, place)
    link.symlink_to(place)
    into = tmp_path / "o.duckdb"
    wb.replay(place, Memories, into=into, until=1_000)
    # The same directory by another path is the same archive.
    assert wb.replay(link, Memories, into=into, until=2_000, resume=True).resumed_from == 1_000
    # Another archive copied to the same path is not.
    shutil.rmtree(place)
    generate(6, entities=80, events=4_000).write_archive(place)
    with pytest.raises(
        ProjectionError,
        match=r"holds another archive than the one it was replayed from \(its first event was 41 MemoryUpdated",
    ):
        wb.replay(place, Memories, into=into, resume=True)


class MemoriesEdited(Memories):
    """Memories with a handler changed between a replay and its resume (same name, version)."""

    name = "memories"

    @wb.on("MemoryUpdated")
    def updated(self, event, tables):
        super().updated(event, tables)


def test_a_resume_with_changed_code_says_so(archive: Path, tmp_path: Path) -> None:
    into = tmp_path / "o.duckdb"
    wb.replay(archive, Memories, into=into, until=1_000)
    same = wb.replay(archive, Memories, into=into, until=2_000, resume=True)
    assert not same.code_changed and "changed projection code" not in same.summary()
    edited = wb.replay(archive, MemoriesEdited, into=into, until=2_500, resume=True)
    assert edited.code_changed and edited.resumed_from == 2_000
    assert "with changed projection code: rows written before it came from" in edited.summary()
    # Resumed again with the new code, the rows are still mixed: still said.
    wb.replay(archive, MemoriesEdited, into=into, until=3_000, resume=True)
    assert wb.replay(archive, MemoriesEdited, into=into, resume=True).code_changed


def test_a_replay_begun_before_replay_info_knew_its_archive_and_code_resumes(
    archive: Path, tmp_path: Path
) -> None:
    into = tmp_path / "o.duckdb"
    wb.replay(archive, Memories, into=into, until=1_000)
    con = duckdb.connect(str(into))
    con.execute("alter table memories_v1._replay_info drop column archive_first")
    con.execute("alter table memories_v1._replay_info drop column code")
    con.close()
    resumed = wb.replay(archive, Memories, into=into, resume=True)
    assert resumed.resumed_from == 1_000 and not resumed.code_changed


def test_resume_never_drops_what_it_cannot_continue(archive: Path, tmp_path: Path) -> None:
    """Another source, or tables whose layout changed: refused, nothing dropped."""
    two = tmp_path / "two"
    shutil.copytree(archive, two)
    ArchiveWriter(two, "postgres:other").append(
        pa.table({"global_position": [1], "recorded_at": [0], "event_type": ["MemoryCreated"]})
    )
    into = tmp_path / "o.duckdb"
    source = ArchiveReader(archive).sources[0]
    wb.replay(two, Memories, into=into, source=source, until=1_000)
    before = rows(into, "memories_v1", "memories")
    with pytest.raises(ProjectionError, match="with source postgres:other: it holds a replay of"):
        wb.replay(two, Memories, into=into, source="postgres:other", resume=True)

    class Wider(Memories):  # same name and version, one more column
        agents = wb.Table(
            key="agent_id",
            agent_id=str,
            memories=int,
            accesses=int,
            last_active_at=dt.datetime,
            region=str,
        )

    with pytest.raises(ProjectionError, match=r"table\(s\) agents were written with other"):
        wb.replay(two, Wider, into=into, source=source, resume=True)
    at = (
        duckdb.connect(str(into), read_only=True)
        .sql("select last_position from memories_v1._checkpoint")
        .fetchall()[0][0]
    )
    with pytest.raises(ProjectionError, match=rf"until position 10: it is already at {at}"):
        wb.replay(two, Memories, into=into, source=source, resume=True, until=10)
    assert rows(into, "memories_v1", "memories") == before
    # Promoted, it is never rebuilt in place: the advice is another version, not that.
    wb.promote(into, "memories", 1)
    with pytest.raises(ProjectionError, match=r"; replay a new version .* to stop at 10$"):
        wb.replay(two, Memories, into=into, source=source, resume=True, until=10)


def test_a_sql_projection_reports_progress_through_its_queries(
    archive: Path, tmp_path: Path
) -> None:
    """A SqlProjection's rebuild drew no progress (a spinner for minutes at 10M events):
    DuckDB's own estimate of each query, each query an equal share of the events."""
    calls: list[tuple[int, int]] = []
    result = wb.replay(
        archive, MEMORIES_SQL, into=tmp_path / "o.duckdb", progress=lambda *c: calls.append(c)
    )
    total = result.archive_events
    steps = 1 + len(MEMORIES_SQL.tables) + len(MEMORIES_SQL.lineage)  # setup, tables, lineage
    assert len(calls) >= steps and calls[-1] == (total, total)
    done = [d for d, _ in calls]
    assert done == sorted(done) and {t for _, t in calls} == {total}
    # No callback: DuckDB's progress stays off (nothing polls it, nothing prints).
    assert wb.replay(archive, MEMORIES_SQL, into=tmp_path / "p.duckdb").events_applied == total


def test_a_sql_table_whose_key_is_null_in_some_rows_says_so(archive: Path, tmp_path: Path) -> None:
    """DuckDB's own words were "NOT NULL constraint failed: t.memory_id", naming no cause."""
    by_memory = wb.SqlProjection(
        "by_memory",
        tables={
            "t": "select data->>'memory_id' as memory_id, count(*) as n from events group by 1"
        },
        keys={"t": "memory_id"},
    )
    with pytest.raises(
        ProjectionError,
        match=r"^table t: its query returns 1 row\(s\) with a null in the key memory_id \(events "
        r"without the field\?\); filter them out \(where \"memory_id\" is not null\)$",
    ):
        wb.replay(archive, by_memory, into=tmp_path / "o.duckdb")
    ungrouped = wb.SqlProjection(
        "ungrouped",
        tables={"t": "select data->>'memory_id' as memory_id from events"},
        keys={"t": "memory_id"},
    )  # repeats keys too, but the nulls were told as one key repeated: "None ×4"
    with pytest.raises(
        ProjectionError, match=r"^table t: its query returns 4 row\(s\) with a null"
    ):
        wb.replay(archive, ungrouped, into=tmp_path / "o.duckdb")


def test_a_sql_replay_tells_and_charts_where_its_time_went(archive: Path, tmp_path: Path) -> None:
    """Its chart said "too few events to time any handler" of 4,000 events: a
    SqlProjection has no handlers; its phases are its queries."""
    result = wb.replay(archive, MEMORIES_SQL, into=tmp_path / "o.duckdb")
    assert result.phases["phase"].to_list() == [
        "setup",
        *(f"table {t}" for t in MEMORIES_SQL.tables),
        *(f"lineage of {t}" for t in MEMORIES_SQL.lineage),
    ]
    assert "time: " in result.summary()
    spec = json.dumps(result.chart().to_dict())
    assert "Where the replay's time went" in spec and "Cost per handler" not in spec


def test_a_promoted_sql_version_is_caught_up_in_place_never_made_worse(
    archive: Path, tmp_path: Path
) -> None:
    """A promoted SqlProjection could not be caught up: a rebuild was refused as promoted,
    a resume as a SqlProjection's. Its rebuild is one transaction, so the stable views
    go from the old tables to the new ones; one that would make them worse is refused."""
    into = tmp_path / "o.duckdb"
    first = wb.replay(archive, MEMORIES_SQL, into=into, until=2_000)
    wb.promote(into, "memories_sql", 1)
    stable = "select count(*), sum(access_count) from memories_sql.memories"

    def read() -> list[tuple]:
        con = duckdb.connect(str(into), read_only=True)
        try:
            return con.sql(stable).fetchall()
        finally:
            con.close()

    before = read()
    caught_up = wb.replay(archive, MEMORIES_SQL, into=into)
    assert caught_up.last_position > first.last_position and read() != before
    after = read()
    with pytest.raises(ProjectionError, match=r"memories_sql_v1 is promoted .* where false, "):
        wb.replay(archive, MEMORIES_SQL, into=into, where="false")
    with pytest.raises(ProjectionError, match=r"would go back in time"):
        wb.replay(archive, MEMORIES_SQL, into=into, until=1_000)
    fewer = wb.SqlProjection(
        "memories_sql",
        setup=MEMORIES_SQL.setup,
        tables={"memories": MEMORIES_SQL.tables["memories"]},
    )
    with pytest.raises(ProjectionError, match=r"memories_sql.agents would lose its table"):
        wb.replay(archive, fewer, into=into)
    assert read() == after  # each refused rebuild left the promoted version as it was
    broken = wb.SqlProjection("b", tables={"t": "select 1 as x"}, setup="select * from nowhere")
    with pytest.raises(ProjectionError, match=r"SQL of the setup failed"):
        wb.replay(archive, broken, into=into)


class NullKey(Memories):
    name = "nullkey"

    @wb.on("MemoryDeleted")
    def deleted(self, event, tables):
        tables.daily_access.upsert({"agent_id": None, "day": None, "accesses": 1})


def test_a_null_key_names_the_row_and_its_writer(archive: Path, tmp_path: Path) -> None:
    with pytest.raises(
        ProjectionError,
        match=r"table daily_access: a handler wrote a row whose key agent_id is None; row "
        r"\(None, None\), last written by NullKey.deleted on MemoryDeleted at global_position",
    ):
        wb.replay(archive, NullKey, into=tmp_path / "o.duckdb")


def test_a_projection_that_needs_arguments_is_one_line(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "needs.py"
    path.write_text(
        "from workbench.examples import Memories\n"
        "class Needs(Memories):\n"
        "    def __init__(self, region):\n"
        "        self.region = region\n"
    )
    args = ["replay", "--archive", str(archive), "--projection", f"{path}:Needs"]
    assert cli.run([*args, "--into", str(tmp_path / "o.duckdb")]) == 2
    err = capsys.readouterr().err
    assert "cannot create Needs(): " in err and "Traceback" not in err


class NaiveColumn(wb.Projection):
    name = "naive_column"
    seen = wb.Table(key="agent_id", agent_id=str, last_seen="TIMESTAMP")

    @wb.on("MemoryAccessed")
    def accessed(self, event, tables):
        if event.data:
            tables.seen.upsert({"agent_id": event.data["agent_id"], "last_seen": event.occurred_at})


def test_an_aware_datetime_into_a_naive_timestamp_column_is_refused(
    archive: Path, tmp_path: Path
) -> None:
    """Stored, it would come back naive on resume and differ from the handler's value."""
    with pytest.raises(ProjectionError, match="a datetime with a time zone, into a TIMESTAMP"):
        wb.replay(archive, NaiveColumn, into=tmp_path / "o.duckdb")


class AwareColumn(wb.Projection):
    name = "aware_column"
    seen = wb.Table(key="agent_id", agent_id=str, last_seen=dt.datetime)

    @wb.on("MemoryAccessed")
    def accessed(self, event, tables):
        if event.data:
            naive = event.occurred_at.replace(tzinfo=None)
            tables.seen.upsert({"agent_id": event.data["agent_id"], "last_seen": naive})


def test_a_naive_datetime_into_a_timestamptz_column_is_refused(
    archive: Path, tmp_path: Path
) -> None:
    """Stored as UTC, it would come back aware on resume; comparing it with a naive one raises."""
    with pytest.raises(
        ProjectionError, match=r"a datetime without a time zone, into a TIMESTAMPTZ column.*by "
    ):
        wb.replay(archive, AwareColumn, into=tmp_path / "o.duckdb")


def test_in_dead_letter_mode_a_row_a_table_cannot_store_is_a_dead_letter(
    archive: Path, tmp_path: Path
) -> None:
    into = tmp_path / "o.duckdb"
    result = wb.replay(archive, WrongType, into=into, on_error="dead-letter")
    assert result.dead_letters > 0 and result.events_applied == 4_000
    con = duckdb.connect(str(into), read_only=True)
    letters = con.execute(
        "select distinct event_type, handler, error from wrongtype_v1._dead_letters"
    ).fetchall()
    assert letters == [
        (
            "MemoryDeleted",
            "WrongType.deleted",
            "ProjectionError: table memories, column access_count: a handler wrote 'many', "
            f"which is not BIGINT; the row is dropped (at test_replay.py:{WRONG_TYPE_LINE})",
        )
    ]
    # the rows it broke are dropped, at the event that broke them; the others are written
    dropped = con.execute(
        "select count(*) from wrongtype_v1._dead_letters l "
        "semi join wrongtype_v1.memories m on m.memory_id = json_extract_string(l.data, '$.memory_id')"
    ).fetchall()[0][0]
    assert dropped == 0
    assert con.execute("select count(*) from wrongtype_v1.memories").fetchall()[0][0] > 0
    con.close()


class HalfCounts(wb.Projection):
    """Every 13th access adds a half to an integer count: that row cannot be stored."""

    name = "half_counts"
    counts = wb.Table(key="stream", stream=str, n=int)

    @wb.on("MemoryAccessed")
    def accessed(self, event, tables):
        row = tables.counts.get(event.stream) or {"stream": event.stream, "n": 0}
        row["n"] += 0.5 if event.global_position % 13 == 0 else 1
        tables.counts.upsert(row)


class Thousandfold(wb.Projection):
    """A count that grows a thousandfold an access: past BIGINT at a stream's 7th."""

    name = "half_counts"  # the same schema as HalfCounts, for the comparison below
    counts = wb.Table(key="stream", stream=str, n=int)

    @wb.on("MemoryAccessed")
    def accessed(self, event, tables):
        row = tables.counts.get(event.stream) or {"stream": event.stream, "n": 1}
        row["n"] *= 1000
        tables.counts.upsert(row)


@pytest.mark.parametrize("projection", [HalfCounts, Thousandfold], ids=["float", "overflow"])
def test_dead_letter_mode_gives_the_same_read_model_whenever_it_flushes(
    archive: Path, tmp_path: Path, projection: type[wb.Projection]
) -> None:
    """A row a table cannot store fails the write that made it, not whichever event last
    wrote it before a flush: the output, its lineage and the dead letters are the same
    however often the replay flushes (a resume moves the flushes too)."""
    seen = []
    for flush_every in (7, 100, 10**6):
        into = tmp_path / f"f{flush_every}.duckdb"
        wb.replay(
            archive,
            projection,
            into=into,
            on_error="dead-letter",
            flush_every=flush_every,
            batch_size=50,
        )
        con = duckdb.connect(str(into), read_only=True)
        seen.append(
            [
                con.execute(query).fetchall()
                for query in (
                    "select * from half_counts_v1.counts order by stream",
                    "select global_position, handler from half_counts_v1._dead_letters order by 1",
                    "select count(*) from half_counts_v1.counts c anti join half_counts_v1._lineage l "
                    "on l.key = to_json(struct_pack(stream := c.stream))",
                )
            ]
        )
        con.close()
    assert seen[0] == seen[1] == seen[2]
    rows, letters, without_lineage = seen[0]
    culprit = f"{projection.__name__}.accessed"
    assert letters and all(h == culprit for _, h in letters)
    if projection is HalfCounts:
        assert all(p % 13 == 0 for p, _ in letters)
    assert rows and without_lineage == [(0,)]


class WrongKeyType(wb.Projection):
    name = "wrong_key_type"
    things = wb.Table(key="id", id=int, n=int)

    @wb.on("MemoryAccessed")
    def accessed(self, event, tables):
        position = event.global_position
        key = f"x{position}" if position % 10 == 0 else position  # one in ten: not an int
        tables.things.upsert({"id": key, "n": "many" if position % 7 == 0 else 1})


def test_dead_letter_mode_takes_every_bad_row_of_a_flush_at_once(
    archive: Path, tmp_path: Path
) -> None:
    into = tmp_path / "o.duckdb"
    result = wb.replay(archive, WrongKeyType, into=into, on_error="dead-letter")
    con = duckdb.connect(str(into), read_only=True)
    stored, letters = con.execute(
        "select (select count(*) from wrong_key_type_v1.things), "
        "(select count(*) from wrong_key_type_v1._dead_letters)"
    ).fetchall()[0]
    con.close()
    accessed = result.per_type.filter(event_type="MemoryAccessed")["events"].item()
    # positions divisible by 10 (a string key) or 7 (a string count) are dead letters
    assert stored + letters == accessed == result.dead_letters + stored


def test_a_sql_key_its_query_repeats_is_one_line(archive: Path, tmp_path: Path) -> None:
    repeated = wb.SqlProjection(
        "dup_key",
        tables={"t": "select event_type, schema_version, count(*) n from events group by all"},
        keys={"t": "event_type"},
    )
    with pytest.raises(
        ProjectionError,
        match=r"^table t: its query returns the key event_type more than once \('MemoryCreated' ×2\)",
    ):
        wb.replay(archive, repeated, into=tmp_path / "o.duckdb")
    assert ("dup_key_v1",) not in duckdb.connect(str(tmp_path / "o.duckdb")).sql(
        "select schema_name from information_schema.schemata"
    ).fetchall()


def test_a_where_of_several_statements_is_refused_before_anything_runs(
    archive: Path, tmp_path: Path
) -> None:
    into = tmp_path / "o.duckdb"
    wb.replay(archive, MEMORIES_SQL, into=into)
    sneaky = "true; drop schema memories_sql_v1 cascade"
    for projection in (MEMORIES_SQL, Memories):
        with pytest.raises(ProjectionError, match="one condition, not several statements"):
            wb.replay(archive, projection, into=into, where=sneaky)
    con = duckdb.connect(str(into), read_only=True)
    assert con.sql("select count(*) from memories_sql_v1.memories").fetchall()[0][0] > 0


class FailsLate(Memories):
    name = "fails_late"

    @wb.on("MemoryUpdated")
    def updated(self, event, tables):
        if event.global_position > 2_000:
            raise ValueError("boom")
        super().updated(event, tables)


def test_a_diff_of_a_replay_that_stopped_half_way_says_so(archive: Path, tmp_path: Path) -> None:
    into = tmp_path / "o.duckdb"
    with pytest.raises(ProjectionError):
        wb.replay(archive, FailsLate, into=into, batch_size=200, flush_every=200)
    con = duckdb.connect(str(into))
    stopped = con.sql("select last_position from fails_late_v1._checkpoint").fetchall()[0][0]
    con.sql(f"copy fails_late_v1.memories to '{tmp_path / 'live.parquet'}'")
    con.close()
    result = wb.diff(f"{into}:fails_late_v1.memories", tmp_path / "live.parquet", key=["memory_id"])
    # The same rows, but not a finished rebuild: never "identical" (a false green in CI).
    assert result.summary.differences == 0 and not result.summary.is_identical
    assert result.summary.candidate_unfinished == stopped
    with pytest.raises(AssertionError, match="note: the candidate's replay has not finished"):
        result.assert_identical()
    assert any(
        f"has not finished and holds the events up to position {stopped} only" in note
        for note in result.summary.notes
    ), result.summary.notes
    wb.replay(archive, Memories, into=tmp_path / "full.duckdb")
    finished = wb.diff(
        f"{tmp_path / 'full.duckdb'}:memories_v1.memories",
        tmp_path / "live.parquet",
        key=["memory_id"],
    )
    assert not any("has not finished" in note for note in finished.summary.notes)
    assert finished.summary.candidate_unfinished is None


def test_api_arguments_of_the_wrong_kind_are_clear_errors(archive: Path, tmp_path: Path) -> None:
    with pytest.raises(
        ProjectionError, match=r"until is a global_position \(an integer\), not '100'"
    ):
        wb.replay(archive, Memories, into=tmp_path / "o.duckdb", until="100")  # type: ignore[arg-type]
    with pytest.raises(ProjectionError, match=r"until is a global_position, never negative: -5"):
        wb.replay(archive, Memories, into=tmp_path / "o.duckdb", until=-5)
    for bad in ({"flush_seconds": "15"}, {"flush_seconds": 0}, {"batch_size": True}):
        with pytest.raises(ProjectionError, match=r"must be a number above 0, not"):
            wb.replay(archive, Memories, into=tmp_path / "o.duckdb", **bad)  # type: ignore[arg-type]
    with pytest.raises(ProjectionError, match=r"nope\.duckdb does not exist"):
        wb.promote(tmp_path / "nope.duckdb", "memories", 1)
    assert not (tmp_path / "nope.duckdb").exists()
    wb.replay(archive, Memories, into=tmp_path / "o.duckdb")
    assert wb.promote(tmp_path / "o.duckdb", Memories, 1)  # the projection names itself
    with pytest.raises(wb.WorkbenchError, match="key: a column name or a list of them, not 5"):
        wb.diff(
            f"{tmp_path / 'o.duckdb'}:memories.memories",
            f"{tmp_path / 'o.duckdb'}:memories.memories",
            key=5,
        )  # type: ignore[arg-type]


def test_a_projection_whose_own_init_fails_is_its_error_not_ours(
    archive: Path, tmp_path: Path
) -> None:
    class NeedsConfig(Memories):
        def __init__(self) -> None:
            raise RuntimeError("MEMORIES_URL is not set")

    with pytest.raises(
        ProjectionError, match=r"NeedsConfig\(\) failed: RuntimeError: MEMORIES_URL is not set"
    ):
        wb.replay(archive, NeedsConfig, into=tmp_path / "o.duckdb")
    script = tmp_path / "broken.py"
    script.write_text("import workbench as wb\nraise KeyError('setting')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(ProjectionError, match=r"broken failed to import: KeyError: 'setting'"):
            load_projection("broken:Anything")
    finally:
        sys.path.remove(str(tmp_path))


def test_an_unfinished_version_is_never_promoted(archive: Path, tmp_path: Path) -> None:
    into = tmp_path / "o.duckdb"
    with pytest.raises(ProjectionError):
        wb.replay(archive, FailsLate, into=into, batch_size=200, flush_every=200)
    with pytest.raises(ProjectionError, match="fails_late_v1 has not finished replaying"):
        wb.promote(into, "fails_late", 1)


def test_promote_refuses_a_version_that_would_make_the_read_model_worse(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    into = tmp_path / "o.duckdb"

    class MemoriesV2(Memories):
        version = 2

    wb.replay(archive, Memories, into=into)
    wb.promote(into, "memories", 1)
    # Stopped early: the stable views would go back in time.
    wb.replay(archive, MemoriesV2, into=into, until=1_000)
    with pytest.raises(
        ProjectionError,
        match=r"not promoting memories_v2 over memories_v1: it "
        r"reaches global_position 1,000, memories_v1 4,\d+: .*--force",
    ):
        wb.promote(into, "memories", 2)
    # From another filter of the archive.
    wb.replay(archive, MemoriesV2, into=into, where="event_type <> 'MemoryUpdated'")
    with pytest.raises(
        ProjectionError, match=r"where event_type <> 'MemoryUpdated', memories_v1 from"
    ):
        wb.promote(into, "memories", 2)
    # With dead letters.
    wb.replay(archive, Fragile, into=into, on_error="dead-letter")
    with pytest.raises(ProjectionError, match=r"not promoting fragile_v1: it has \d+ dead letter"):
        wb.promote(into, "fragile", 1)
    assert wb.promote(into, "fragile", 1, force=True)

    class FragileFixed(Memories):  # the next version of fragile: no dead letters
        name, version = "fragile", 2

    # A version that fails less than the promoted one is a fix: promoted as it is.
    wb.replay(archive, FragileFixed, into=into, on_error="dead-letter")
    assert wb.promote(into, "fragile", 2)
    # The shell says what the views read before.
    wb.replay(archive, MemoriesV2, into=into)
    args = ["promote", "--into", str(into), "--name", "memories"]
    assert cli.run([*args, "--version", "2"]) == 0
    assert "now read memories_v2 in" in capsys.readouterr().out
    assert cli.run([*args, "--version", "1"]) == 0
    assert "(was memories_v2)" in capsys.readouterr().out


class Typed(wb.Projection):
    """Every column type a read model commonly has, keyed by a UUID."""

    name = "typed"
    memories = wb.Table(
        key="memory_id",
        memory_id=uuid.UUID,
        importance="DECIMAL(4,2)",
        first=dict,
        words=list[str],
        age=dt.timedelta,
        at=dt.time,
        raw=bytes,
        accesses=int,
        score="REAL",
        trace=str,
    )

    @wb.on("MemoryCreated")
    def created(self, event, tables):
        if event.data is None:
            return
        content = event.data.get("content") or ""
        tables.memories.upsert(
            {
                "memory_id": uuid.UUID(event.data["memory_id"]),
                "importance": Decimal(str(event.data.get("importance", 0.5))),
                "first": {"kind": event.data.get("kind"), "n": [1, 2.5, None]},
                "words": content.split()[:3],
                "age": dt.timedelta(0),
                "at": event.occurred_at.time(),
                "raw": content.encode()[:4],
                "accesses": 0,
                "score": 0.1,
                "trace": "",
            }
        )

    @wb.on("MemoryAccessed")
    def accessed(self, event, tables):
        # After a resume, the stored rows must come back keyed as the handler keys them.
        row = tables.memories.get(uuid.UUID(event.data["memory_id"])) if event.data else None
        if row is not None:
            row["accesses"] += 1
            row["age"] += dt.timedelta(seconds=1, microseconds=5)
            # What a handler reads back of a DECIMAL (its scale) and a REAL (a float32's
            # digits) is what a resumed run reads: Decimal("0.5") is 0.50 once stored.
            row["score"] += 0.1
            row["trace"] = f"{row['importance']} {row['score']!r}"
            tables.memories.upsert(row)


def test_tables_are_written_without_their_key_and_get_it_as_a_replay_ends(
    archive: Path, tmp_path: Path
) -> None:
    """DuckDB keeps a primary key's index in step with every write: flushes into a large
    table slowed a rebuild as its read model grew. The key is added at the end; a resume
    writes through it, keeping what a user gave the table (an index, a comment);
    meanwhile _table_keys holds it."""
    from workbench.replay import store

    into = tmp_path / "o.duckdb"

    def keys() -> list[tuple[str, list[str]]]:
        with duckdb.connect(str(into), read_only=True) as con:
            return con.execute(
                "select table_name, constraint_column_names from duckdb_constraints() "
                "where schema_name = 'memories_v1' and constraint_type = 'PRIMARY KEY' "
                "and not starts_with(table_name, '_') order by 1"
            ).fetchall()

    expected = [("agents", ["agent_id"]), ("daily_access", ["agent_id", "day"]),
                ("memories", ["memory_id"])]  # fmt: skip
    wb.replay(archive, Memories, into=into, until=800)
    assert keys() == expected
    with duckdb.connect(str(into)) as con:
        con.execute("create index by_agent on memories_v1.memories (agent_id)")
        con.execute("comment on table memories_v1.memories is 'mine'")
    resumed = wb.replay(archive, Memories, into=into, resume=True)
    assert keys() == expected
    with duckdb.connect(str(into), read_only=True) as con:
        assert con.execute(
            "select index_name from duckdb_indexes() where table_name = 'memories'"
        ).fetchall() == [("by_agent",)]
        assert con.execute(
            "select comment from duckdb_tables() where table_name = 'memories'"
        ).fetchall() == [("mine",)]
    clean = wb.replay(archive, Memories, into=tmp_path / "clean.duckdb")
    assert rows(into, "memories_v1", "memories") == rows(clean.into, "memories_v1", "memories")
    assert resumed.lineage("memories", resumed.sql("select min(memory_id) from memories")
                           .fetchall()[0][0]).height > 0  # fmt: skip
    # What a run stopped before its end leaves: no constraint, the key in _table_keys.
    con = store.connect(tmp_path / "stopped.duckdb")
    store.create_schema(con, "memories_v1", Memories.tables(), replace=True)
    assert [store.table_key(con, "memories_v1", t.name) for t in Memories.tables()] == [
        ["memory_id"],
        ["agent_id"],
        ["agent_id", "day"],
    ]
    assert not con.execute(
        "select count(*) from duckdb_constraints() where constraint_type = 'PRIMARY KEY' "
        "and schema_name = 'memories_v1' and not starts_with(table_name, '_')"
    ).fetchall()[0][0]
    con.close()


def test_rich_column_types_round_trip_through_a_resume(archive: Path, tmp_path: Path) -> None:
    clean, resumed = tmp_path / "clean.duckdb", tmp_path / "resumed.duckdb"
    result = wb.replay(archive, Typed, into=clean)
    # result.sql() keeps DuckDB's types (through Arrow a UUID or JSON came back VARCHAR);
    # result.table() gives Polars text for them.
    looked = result.sql("select memory_id, first, importance from memories")
    assert [str(t) for t in looked.types] == ["UUID", "JSON", "DECIMAL(4,2)"]
    assert isinstance(looked.limit(1).fetchall()[0][0], uuid.UUID)
    assert result.table("memories").schema["memory_id"] == pl.String
    wb.replay(archive, Typed, into=resumed, until=1_500)
    wb.replay(archive, Typed, into=resumed, resume=True)
    assert rows(resumed, "typed_v1", "memories") == rows(clean, "typed_v1", "memories")
    con = duckdb.connect(str(clean), read_only=True)
    types = dict(con.execute("describe typed_v1.memories").fetchall()[i][:2] for i in range(8))
    assert types == {
        "memory_id": "UUID",
        "importance": "DECIMAL(4,2)",
        "first": "JSON",
        "words": "VARCHAR[]",
        "age": "INTERVAL",
        "at": "TIME",
        "raw": "BLOB",
        "accesses": "BIGINT",
    }
    busiest = con.execute(
        "select importance, first->>'kind', accesses, age from typed_v1.memories "
        "order by accesses desc limit 1"
    ).fetchall()[0]
    assert isinstance(busiest[0], Decimal) and busiest[1] in {"episodic", "semantic", "procedural"}
    assert busiest[2] > 1 and busiest[3] == dt.timedelta(
        seconds=busiest[2], microseconds=5 * busiest[2]
    )


class KeyValue(wb.Projection):
    """A key-value read model: its key column is named ``key``, as KV buckets name it."""

    name = "kv"
    entries = wb.Table(key="key", columns={"key": str, "value": "JSON", "columns": int})

    @wb.on("MemoryCreated", "MemoryUpdated")
    def put(self, event, tables):
        if event.data is not None:
            old = tables.entries.get(event.data["memory_id"])
            tables.entries.upsert(
                {
                    "key": event.data["memory_id"],
                    "value": {"content": event.data["content"]},
                    "columns": (old["columns"] if old else 0) + 1,
                }
            )


def test_a_column_named_key_is_declared_as_a_mapping(archive: Path, tmp_path: Path) -> None:
    clean, resumed = tmp_path / "clean.duckdb", tmp_path / "resumed.duckdb"
    wb.replay(archive, KeyValue, into=clean)
    wb.replay(archive, KeyValue, into=resumed, until=1_500)
    wb.replay(archive, KeyValue, into=resumed, resume=True)
    assert rows(resumed, "kv_v1", "entries") == rows(clean, "kv_v1", "entries")
    con = duckdb.connect(str(clean), read_only=True)
    assert [r[:2] for r in con.execute("describe kv_v1.entries").fetchall()] == [
        ("key", "VARCHAR"),
        ("value", "JSON"),
        ("columns", "BIGINT"),
    ]
    assert con.execute("select count(*), max(columns) from kv_v1.entries").fetchall()[0][1] > 1
    with pytest.raises(ProjectionError, match="column value is declared twice"):
        wb.Table(key="key", columns={"key": str, "value": str}, value=int)


class TextUuid(Typed):
    name = "text_uuid"

    @wb.on("MemoryCreated")
    def created(self, event, tables):
        if event.data is not None:
            tables.memories.upsert({"memory_id": event.data["memory_id"], "accesses": 0})


def test_a_uuid_column_refuses_text_that_would_key_differently_after_resume(
    archive: Path, tmp_path: Path
) -> None:
    with pytest.raises(
        ProjectionError,
        match=r"column memory_id: a handler wrote '[0-9a-f-]+', which is not UUID "
        r"\(write uuid\.UUID\('[0-9a-f-]+'\), not str\)",
    ):
        wb.replay(archive, TextUuid, into=tmp_path / "o.duckdb")


def test_a_projection_file_imports_its_sibling_modules(archive: Path, tmp_path: Path) -> None:
    """The next version in its own file, on the base in another: as `python file.py` would."""
    (tmp_path / "ledger_base_wb.py").write_text(
        "from workbench.examples import Memories\n\nclass Base(Memories):\n    name = 'sib'\n"
    )
    (tmp_path / "ledger_v2_wb.py").write_text(
        "from ledger_base_wb import Base\n\nclass V2(Base):\n    version = 2\n"
    )
    result = wb.replay(
        archive, load_projection(f"{tmp_path / 'ledger_v2_wb.py'}:V2"), into=tmp_path / "o.duckdb"
    )
    assert result.schema == "sib_v2" and result.events_applied == 4_000


def test_a_file_of_one_projection_needs_no_class_name(archive: Path, tmp_path: Path) -> None:
    """`--projection file.py` takes the one projection the file defines; the classes it
    imports to extend do not count, and a file of several names them."""
    one = tmp_path / "one_wb.py"
    one.write_text(
        "from workbench.examples import Memories\n\nclass Mine(Memories):\n    name = 'mine'\n"
    )
    assert load_projection(str(one)).schema() == "mine_v1"
    assert (
        cli.run(
            [
                "replay",
                "--archive",
                str(archive),
                "--projection",
                str(one),
                "--into",
                str(tmp_path / "o.duckdb"),
            ]
        )
        == 0
    )
    two = tmp_path / "two_wb.py"
    two.write_text(one.read_text() + "\nclass Other(Mine):\n    name = 'other'\n")
    with pytest.raises(
        ProjectionError,
        match=r"defines several projections \(Mine, Other\); name one: .*two_wb.py:Mine$",
    ):
        load_projection(str(two))
    with pytest.raises(ProjectionError, match=r"has no Nope \(it defines Mine, Other\)"):
        load_projection(f"{two}:Nope")
    with pytest.raises(ProjectionError, match=r"has no Mien; did you mean Mine\? \(it defines"):
        load_projection(f"{two}:Mien")
    # A package's __init__ exports the classes it imports: they are its projections.
    with pytest.raises(ProjectionError, match=r"workbench.examples defines several projections"):
        load_projection("workbench.examples")
    with pytest.raises(ProjectionError, match=r"has no Memorie; did you mean Memories or "):
        load_projection("workbench.examples:Memorie")
    none = tmp_path / "none_wb.py"
    none.write_text("X = 1\n")
    with pytest.raises(ProjectionError, match=r"none_wb\.py defines no projection$"):
        load_projection(str(none))


class RareReader(wb.Projection):
    """The rare type is the first to read occurred_at, which converts the batch's column."""

    name = "rare_reader"
    t = wb.Table(key="k", k=str, at=dt.datetime)

    @wb.on("MemoryCreated", any_version=True)
    def created(self, event, tables):
        if event.data:
            tables.t.upsert({"k": event.data["memory_id"], "at": event.occurred_at})

    @wb.on("MemoryAccessed", "MemoryUpdated", "MemoryDeleted", "MemoryConsolidated")
    def other(self, event, tables):
        if event.data and event.data.get("memory_id") in tables.t:
            tables.t.update(event.data["memory_id"], at=event.recorded_at)


def test_handler_times_leave_lazy_column_decoding_to_the_decoding_phase(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's occurred_at is converted when a handler first reads it: decoding, not
    handler time, or the one timed event in 32 that pays it counts it 32 times."""
    from workbench.replay import event

    convert = event._to_python

    def slow(column):  # a planted cost, large enough to stand above any noise
        time.sleep(0.02)
        return convert(column)

    monkeypatch.setattr(event, "_to_python", slow)
    result = wb.replay(archive, RareReader, into=tmp_path / "o.duckdb", batch_size=500)
    seconds = dict(result.per_type.select("event_type", "seconds").iter_rows())
    phases = dict(result.phases.select("phase", "seconds").iter_rows())
    # 8 batches, each converting occurred_at and recorded_at once: 16 planted costs.
    assert phases["decoding"] >= 16 * 0.02
    assert seconds["MemoryCreated"] < 0.02  # timed on the first event, which converted
    assert phases["handlers"] < 16 * 0.02


def test_resuming_from_another_archive_names_both(archive: Path, tmp_path: Path) -> None:
    into = tmp_path / "o.duckdb"
    wb.replay(archive, Memories, into=into, until=100)
    other = tmp_path / "other"
    shutil.copytree(archive, other)
    with pytest.raises(ProjectionError) as caught:
        wb.replay(other, Memories, into=into, resume=True)
    assert str(caught.value) == (
        f"cannot resume memories_v1: it was replayed from {archive.absolute()}, "
        f"not {other.absolute()}"
    )


def test_progress_false_draws_no_bar(archive: Path, tmp_path: Path) -> None:
    """A notebook user turns the bar off with progress=False (not a callback)."""
    result = wb.replay(archive, Memories, into=tmp_path / "o.duckdb", until=200, progress=False)
    assert result.events_applied > 0 and result.head(2).equals(result.df().head(2))


class TextKeyUpdate(Typed):
    name = "text_key_update"

    @wb.on("MemoryAccessed")
    def accessed(self, event, tables):
        if event.data is not None:  # the key as the payload has it: text, not a UUID
            tables.memories.update(event.data["memory_id"], accesses=1)


def test_an_update_by_a_key_of_the_wrong_type_says_so(archive: Path, tmp_path: Path) -> None:
    with pytest.raises(
        ProjectionError,
        match=r"no row with key '[0-9a-f-]+' \(a str; the keys are UUID: memory_id UUID\)",
    ):
        wb.replay(archive, TextKeyUpdate, into=tmp_path / "o.duckdb")


class StrGuard(wb.Projection):
    """The idempotency guard looks a UUID-keyed row up by the payload's text id."""

    name = "str_guard"
    memories = wb.Table(key="memory_id", memory_id=uuid.UUID, n=int)

    @wb.on("MemoryCreated")
    def created(self, event, tables):
        if event.data is None or event.data["memory_id"] in tables.memories:
            return
        tables.memories.upsert({"memory_id": uuid.UUID(event.data["memory_id"]), "n": 1})


def test_a_lookup_by_a_key_of_the_wrong_type_fails_loudly(archive: Path, tmp_path: Path) -> None:
    """A str never finds a UUID key: the guard above would never fire and a redelivered
    event would count twice, silently. Lookups by another type are refused, naming it."""
    with pytest.raises(
        ProjectionError,
        match=r"StrGuard.created failed on MemoryCreated .* table memories: looked up "
        r"'[0-9a-f-]+', a str; its key memory_id is UUID, so no row can match "
        r"\(look it up as uuid.UUID\('",
    ):
        wb.replay(archive, StrGuard, into=tmp_path / "o.duckdb")
    from workbench.replay.state import TableState, WriteLog

    text_keyed = TableState(Memories.memories, WriteLog())
    assert text_keyed.get is not None and text_keyed.get(uuid.uuid4()) is None  # no check


def test_every_part_of_a_key_and_a_delete_are_checked_for_their_type() -> None:
    """A composite key's str order id, a date key's ISO text and a delete by text all
    missed in silence: thousands of lines lost, deleted orders kept."""
    from workbench.replay.state import TableState, WriteLog

    lines = wb.Table(key=("order_id", "line_no"), order_id=uuid.UUID, line_no=int, qty=int)
    lines.name = "lines"
    daily = wb.Table(key="day", day=dt.date, orders=int)
    daily.name = "daily"
    state, days = TableState(lines, WriteLog()), TableState(daily, WriteLog())
    order = uuid.uuid4()
    with pytest.raises(
        ProjectionError,
        match=r"^table lines: looked up '[0-9a-f-]+', a str; in its key \(order_id, line_no\), "
        r"order_id is UUID, so no row can match \(look it up as uuid.UUID\(",
    ):
        state.get((str(order), 1))
    with pytest.raises(ProjectionError, match=r"looked up '1', a str; .* line_no is BIGINT"):
        (order, "1") in state  # noqa: B015
    with pytest.raises(ProjectionError, match=r"its key is a tuple of \(order_id, line_no\)"):
        state.delete(order)
    assert state.get((order, 1)) is None  # the right types: a plain miss
    with pytest.raises(
        ProjectionError,
        match=r"its key day is DATE, so no row can match "
        r"\(look it up as datetime.date.fromisoformat\('2024-05-01'\)\)",
    ):
        days.get("2024-05-01")
    with pytest.raises(ProjectionError, match=r"a datetime; its key day is DATE"):
        days.delete(dt.datetime(2024, 5, 1))
    assert days.get(dt.date(2024, 5, 1)) is None


def test_a_table_gives_a_row_by_its_key_as_a_dict_does() -> None:
    """``tables.x[key]`` as a user tries it: the row, a KeyError naming the table, or the
    key-type refusal."""
    from workbench.replay.state import TableState, WriteLog

    orders = wb.Table(key="order_id", order_id=uuid.UUID, total=int)
    orders.name = "orders"
    state = TableState(orders, WriteLog())
    key = uuid.uuid4()
    row = state.upsert({"order_id": key, "total": 5})
    assert state[key] is row
    with pytest.raises(KeyError, match="table orders: no row with key UUID"):
        state[uuid.uuid4()]
    with pytest.raises(ProjectionError, match="a str; its key order_id is UUID"):
        state[str(key)]


def test_a_library_call_that_cannot_bind_is_one_line_of_the_callers_mistake(
    archive: Path,
) -> None:
    with pytest.raises(ArgumentError, match=r"^replay\(\): missing a required argument: 'into'$"):
        wb.replay(archive, Memories)  # type: ignore[call-arg]
    with pytest.raises(TypeError):  # still what Python code expects of a bad call
        wb.replay(archive, Memories, into="x.duckdb", nonsense=1)  # type: ignore[call-arg]


class SeenOnTheClassOnce(Memories):
    """Counts an access once per position, remembered on the class."""

    name = "seen_on_class"
    seen: ClassVar[set[int]] = set()

    @wb.on("MemoryAccessed")
    def accessed(self, event: Event, tables: Tables) -> None:
        if event.global_position not in type(self).seen:
            type(self).seen.add(event.global_position)
            super().accessed(event, tables)


class CountsOnSelf(Memories):
    name = "counts_on_self"

    def __init__(self) -> None:
        self.accesses = 0

    @wb.on("MemoryAccessed")
    def accessed(self, event: Event, tables: Tables) -> None:
        self.accesses += 1
        super().accessed(event, tables)


class NumbersOnTheClass(Memories):
    """Numbers accesses with a counter on the class (a whole number, rebound each time)
    and remembers the memories it saw in a module global."""

    name = "numbers_on_class"
    accesses_numbered = 0
    numbered = wb.Table(key="n", n=int, memory_id=str)

    @wb.on("MemoryAccessed")
    def accessed(self, event: Event, tables: Tables) -> None:
        if event.data is None:
            return
        type(self).accesses_numbered += 1
        SEEN_MEMORIES.add(event.data["memory_id"])
        tables.numbered.upsert({"n": type(self).accesses_numbered, "memory_id": "m"})


SEEN_MEMORIES: set[str] = set()


def test_a_counter_on_the_class_is_put_back_and_a_global_named(
    archive: Path, tmp_path: Path
) -> None:
    """Only containers on the class were put back: a second replay numbered on from where
    the first stopped, and neither named the counter (nor the global)."""
    first = wb.replay(archive, NumbersOnTheClass, into=tmp_path / "a.duckdb")
    second = wb.replay(archive, NumbersOnTheClass, into=tmp_path / "b.duckdb")
    numbers = "select min(n), max(n) from numbered"
    assert first.sql(numbers).fetchall() == second.sql(numbers).fetchall()
    assert NumbersOnTheClass.accesses_numbered == 0
    assert first.kept_state == [
        "NumbersOnTheClass.accesses_numbered (on the class)",
        f"SEEN_MEMORIES (a global of {__name__})",
    ]
    # A global is named when a run changes it, and not put back: it is not the
    # projection's (a notebook's list collecting what a handler saw is the user's).
    assert SEEN_MEMORIES
    assert second.kept_state == ["NumbersOnTheClass.accesses_numbered (on the class)"]


TOTALS: dict[str, int] = {"accesses": 0}
PROGRESS_SEEN: list[int] = []
REMEMBERED: list[str] = []


def remember(event_id: str) -> None:
    """A helper of the module's that a handler calls: its global is the handler's state."""
    REMEMBERED.append(event_id)


class CachesAndTotals(Memories):
    """A set made on first use (state, or a cache: put back either way), a total in a
    global dict changed in place, a global list filled through a helper."""

    name = "caches_and_totals"
    seen: ClassVar[set[str] | None] = None

    @wb.on("MemoryAccessed")
    def accessed(self, event: Event, tables: Tables) -> None:
        if type(self).seen is None:
            type(self).seen = set()
        type(self).seen.add(event.event_id)
        TOTALS["accesses"] += 1
        remember(event.event_id)
        super().accessed(event, tables)


def test_state_made_on_first_use_in_globals_and_helpers_is_named_a_progress_list_not(
    archive: Path, tmp_path: Path
) -> None:
    """A global the progress callback fills was named as the handlers'; one a handler
    fills through a module helper, or a dict value incremented in place, went unseen;
    a set the class starts without (None) is put back so the next run starts as this."""
    result = wb.replay(
        archive,
        CachesAndTotals,
        into=tmp_path / "o.duckdb",
        progress=lambda done, total: PROGRESS_SEEN.append(done),
    )
    assert PROGRESS_SEEN and REMEMBERED and CachesAndTotals.seen is None
    assert result.kept_state == [
        "CachesAndTotals.seen (on the class)",
        f"REMEMBERED (a global of {__name__})",
        f"TOTALS (a global of {__name__})",
    ]


def test_state_kept_outside_the_tables_is_named_and_the_class_put_back(
    archive: Path, tmp_path: Path
) -> None:
    """A notebook's second replay of a class keeping state on itself counted nothing (the
    first run's set was still there); state on self is lost to a resume. Both are named,
    and the class is put back as it was."""
    total = "select sum(access_count) from memories"
    first = wb.replay(archive, SeenOnTheClassOnce, into=tmp_path / "a.duckdb")
    second = wb.replay(archive, SeenOnTheClassOnce, into=tmp_path / "b.duckdb")
    assert first.sql(total).fetchall() == second.sql(total).fetchall() != [(0,)]
    assert second.kept_state == ["SeenOnTheClassOnce.seen (on the class)"]
    assert SeenOnTheClassOnce.seen == set()
    on_self = wb.replay(archive, CountsOnSelf, into=tmp_path / "c.duckdb")
    assert on_self.kept_state == ["self.accesses"]
    assert "state kept outside the tables, not stored with the checkpoint: self.accesses" in (
        on_self.summary()
    )
    assert wb.replay(archive, Memories, into=tmp_path / "m.duckdb").kept_state == []


class ReusedRow(wb.Projection):
    """One dict upserted as three rows: the earlier keys ended up holding the last row."""

    name = "reused"
    lines = wb.Table(key=("memory_id", "n"), memory_id=str, n=int)

    @wb.on("MemoryCreated")
    def created(self, event: Event, tables: Tables) -> None:
        if event.data is not None:
            row = {"memory_id": event.data["memory_id"]}
            for n in range(3):
                row["n"] = n
                tables.lines.upsert(row)


def test_a_row_whose_key_changed_after_upsert_is_refused(archive: Path, tmp_path: Path) -> None:
    with pytest.raises(
        ProjectionError,
        match=r"table lines: the row stored under key \('[0-9a-f-]+', 0\) now has key "
        r"\('[0-9a-f-]+', 2\): a handler changed its key after handing it to upsert\(\) "
        r"\(one dict reused for several rows\?\); give each row a dict of its own",
    ):
        wb.replay(archive, ReusedRow, into=tmp_path / "o.duckdb")


class Forgetful(wb.Projection):
    """Declares a column no handler writes (a field forgotten, or spelt otherwise)."""

    name = "forgetful"
    memories = wb.Table(key="memory_id", memory_id=str, kind=str, knd=str)

    @wb.on("MemoryCreated")
    def created(self, event, tables):
        if event.data is not None:
            tables.memories.upsert({"memory_id": event.data["memory_id"], "kind": "x"})


def test_a_declared_column_no_handler_writes_is_named(archive: Path, tmp_path: Path) -> None:
    result = wb.replay(archive, Forgetful, into=tmp_path / "o.duckdb")
    assert result.unwritten == ["memories.knd"]
    assert "null in every row (no handler writes them?): memories.knd" in result.summary()
    assert wb.replay(archive, Memories, into=tmp_path / "m.duckdb").unwritten == []


def _one_event_archive(root: Path) -> Path:
    ArchiveWriter(root, "s").append(
        pa.table(
            {
                "global_position": [1],
                "recorded_at": [0],
                "event_type": ["Tagged"],
                "stream": ["item-1"],
                "stream_position": [0],
                "data": ['{"id": "a"}'],
            }
        )
    )
    return root


@pytest.mark.parametrize(
    ("spec", "value", "why"),
    [
        (
            list[str],
            "gift",
            r"a text would be stored as a list of its characters; write \['gift'\]",
        ),
        (list[str], {"b", "a"}, r"a set has no order .*write sorted"),
        (list[int], [1, 1.5], r"1.5 would be truncated to an integer"),
        (int, 2**63, r"it does not fit BIGINT\)"),  # Arrow's bare OverflowError before
        (dt.datetime, 1714550400, r"a number would be read as microseconds since 1970"),
        (dt.timedelta, 90, r"write a timedelta"),
        (dt.time, dt.time(10, tzinfo=dt.UTC), r"a TIME keeps no offset"),
        (float, True, r"a bool is not a number"),
        ("DECIMAL(12,2)", True, r"a bool is not a number"),
        (str, b"abc", r"write text \(b.decode\(\)\)"),
        (bytes, "abc", r"write bytes \(s.encode\(\)\)"),
        (dict, '{"a": 1}', r"a JSON text would be stored as one string: write json.loads"),
        (uuid.UUID, uuid.UUID(int=7).bytes, r"write uuid.UUID\(bytes=...\)"),
    ],
)
def test_a_value_arrow_would_convert_silently_is_refused(
    tmp_path: Path, spec: object, value: object, why: str
) -> None:
    """Arrow stores these as other values (a str as its characters, epoch seconds as
    microseconds, True as 1.0); a read model must hold what the handler wrote."""

    class Converted(wb.Projection):
        name = "converted"
        items = wb.Table(key="id", id=str, value=spec)

        @wb.on("Tagged")
        def tagged(self, event, tables):
            tables.items.upsert({"id": event.data["id"], "value": value})

    archive = _one_event_archive(tmp_path / "a")
    with pytest.raises(ProjectionError, match=r"column value: a handler wrote .*" + why):
        wb.replay(archive, Converted, into=tmp_path / "o.duckdb")
    # Dead-letter mode finds it at the write, and keeps no row.
    result = wb.replay(archive, Converted, into=tmp_path / "d.duckdb", on_error="dead-letter")
    assert result.dead_letters == 1
    assert result.sql("select count(*) from items").fetchall() == [(0,)]


@pytest.mark.parametrize(
    ("spec", "good", "bad"),
    [
        ("DECIMAL(4,2)", Decimal("12.5"), Decimal("12.345")),  # a place more than its scale
        ("DECIMAL(4,2)", Decimal("99.99"), Decimal("100")),  # a digit more than it holds
        (list[str], ["a"], ["a", 1]),
        (list[float], [1.5], [2**53 + 1]),
        (float, 2.0, 2**53 + 1),
        (dt.time, dt.time(10), dt.time(10, tzinfo=dt.UTC)),
        (dt.timedelta, dt.timedelta(1), dt.timedelta(days=999_999_999)),
        ("SMALLINT", 7, 40_000),
    ],
)
def test_dead_letter_mode_checks_each_value_not_only_its_type(
    tmp_path: Path, spec: object, good: object, bad: object
) -> None:
    """A write of the same Python types as one that fitted is not taken on trust: the
    value that does not fit is dead-lettered at its write, not found at the flush (where
    the next event's write over it would hide it)."""

    class Checked(wb.Projection):
        name = "checked"
        items = wb.Table(key="id", id=str, value=spec)

        @wb.on("Tagged")
        def tagged(self, event, tables):
            value = bad if event.data.get("bad") else good
            tables.items.upsert({"id": event.data["id"], "value": value})

    ArchiveWriter(tmp_path / "a", "s").append(
        pa.table(
            {
                "global_position": [1, 2, 3],
                "recorded_at": [0, 0, 0],
                "event_type": ["Tagged"] * 3,
                "data": ['{"id": "a"}', '{"id": "b", "bad": true}', '{"id": "b"}'],
            }
        )
    )
    result = wb.replay(tmp_path / "a", Checked, into=tmp_path / "o.duckdb", on_error="dead-letter")
    assert result.dead_letters == 1
    assert result.dead_letter_rows()["global_position"].to_list() == [2]
    assert result.sql("select id from items order by id").fetchall() == [("a",), ("b",)]


def test_a_lone_surrogate_is_refused_in_one_line(tmp_path: Path) -> None:
    """JSON may escape half a character ("\\ud800"); json.loads gives a str UTF-8 cannot
    hold, which crashed the flush with a UnicodeEncodeError (a bug, exit 3)."""

    class Copied(wb.Projection):
        name = "copied"
        items = wb.Table(key="id", id=str, text=str)

        @wb.on("Tagged")
        def tagged(self, event, tables):
            tables.items.upsert({"id": event.data["id"], "text": "caf\ud800"})

    archive = _one_event_archive(tmp_path / "a")
    with pytest.raises(ProjectionError, match=r"it holds '\\ud800', a lone surrogate"):
        wb.replay(archive, Copied, into=tmp_path / "o.duckdb")
    result = wb.replay(archive, Copied, into=tmp_path / "d.duckdb", on_error="dead-letter")
    assert result.dead_letters == 1

    class InJson(Copied):  # DuckDB's JSON refused it at the flush, naming nothing
        name = "in_json"
        items = wb.Table(key="id", id=str, text="JSON")

    with pytest.raises(ProjectionError, match=r"it holds '\\ud800', a lone surrogate"):
        wb.replay(archive, InJson, into=tmp_path / "j.duckdb")
    result = wb.replay(archive, InJson, into=tmp_path / "k.duckdb", on_error="dead-letter")
    assert result.dead_letters == 1


def test_optional_column_types_and_float_mean_what_python_means(tmp_path: Path) -> None:
    import typing

    class Typed(wb.Projection):
        name = "typed"
        items = wb.Table(
            key="id",
            id=str,
            n=int | None,
            tags=typing.List[str],  # noqa: UP006
            f="FLOAT",
            o=typing.Optional[int],  # noqa: UP045
        )

        @wb.on("Tagged")
        def tagged(self, event, tables):
            tables.items.upsert({"id": "a", "n": None, "tags": ["x"], "f": 16777217.0, "o": 2})

    result = wb.replay(_one_event_archive(tmp_path / "a"), Typed, into=tmp_path / "o.duckdb")
    assert result.sql("select n, tags, f, o from items").fetchall() == [
        (None, ["x"], 16777217.0, 2)
    ]
    assert [c[1] for c in result.sql("describe items").fetchall()] == [
        "VARCHAR",
        "BIGINT",
        "VARCHAR[]",
        "DOUBLE",
        "BIGINT",
    ]


def test_async_and_generator_handlers_are_refused_where_the_class_is_written() -> None:
    with pytest.raises(ProjectionError, match=r"@on tagged: async def is never awaited; use def"):

        class Async(wb.Projection):
            @wb.on("Tagged")
            async def tagged(self, event, tables):
                tables.items.upsert({"id": "a"})

    with pytest.raises(ProjectionError, match=r"@on tagged: a generator \(it yields\)"):

        class Yielding(wb.Projection):
            @wb.on("Tagged")
            def tagged(self, event, tables):
                yield {"id": "a"}


def test_a_handler_that_returns_its_row_instead_of_writing_it_fails(tmp_path: Path) -> None:
    class Returning(wb.Projection):
        name = "returning"
        items = wb.Table(key="id", id=str)

        @wb.on("Tagged")
        def tagged(self, event, tables):
            return {"id": event.data["id"]}

    class Chained(Returning):  # returning what a write returns is fine, as is a guard's
        name = "chained"

        @wb.on("Tagged")
        def tagged(self, event, tables):
            if event.data is None:
                return False
            return tables.items.upsert({"id": event.data["id"]})

    class Guarded(Returning):
        name = "guarded"

        @wb.on("Tagged")
        def tagged(self, event, tables):
            return False  # a guard clause: no row, nothing meant as output

    archive = _one_event_archive(tmp_path / "a")
    with pytest.raises(
        ProjectionError,
        match=r"Returning.tagged failed on Tagged .*returned a value and wrote nothing; a "
        r"return value is ignored: write rows with tables.<table>.upsert\(row\)",
    ):
        wb.replay(archive, Returning, into=tmp_path / "o.duckdb")
    result = wb.replay(archive, Chained, into=tmp_path / "c.duckdb")
    assert result.sql("select id from items").fetchall() == [("a",)]
    assert wb.replay(archive, Guarded, into=tmp_path / "g.duckdb").events_applied == 1


def test_stacked_on_decorators_handle_every_type_they_name() -> None:
    class Stacked(wb.Projection):
        items = wb.Table(key="id", id=str)

        @wb.on("Deleted")
        @wb.on("Purged", "Expired")
        def gone(self, event, tables):
            tables.items.delete(event.data["id"])

    assert Stacked.handlers() == {"Deleted": "gone", "Purged": "gone", "Expired": "gone"}


def test_a_rows_lineage_lists_the_events_that_wrote_it(archive: Path, tmp_path: Path) -> None:
    result = wb.replay(archive, Memories, into=tmp_path / "o.duckdb")
    key, count = result.sql("select memory_id, access_count from memories limit 1").fetchall()[0]
    lineage = result.lineage("memories", key)
    assert lineage.columns == [
        "global_position", "event_type", "handler", "stream", "stream_position", "occurred_at",
        "data",
    ]  # fmt: skip
    assert lineage["global_position"].is_sorted() and lineage["event_type"][0] == "MemoryCreated"
    assert set(lineage["stream"]) == {f"memory-{key}"}
    assert lineage.filter(pl.col("event_type") == "MemoryAccessed").height == count
    assert all(json.loads(d)["memory_id"] == key for d in lineage["data"])
    agent, day = result.sql("select agent_id, day from daily_access limit 1").fetchall()[0]
    assert result.lineage("daily_access", (agent, day)).height > 0  # a composite key
    with pytest.raises(
        ProjectionError, match=r"memories_v1 has no table 'memory'; did you mean memories\?; its "
    ):
        result.lineage("memory", key)
    # The read model itself, as a frame: df() is the replay's counts per event type.
    memories = result.table("memories")
    assert memories.height == result.sql("select count(*) from memories").fetchall()[0][0]
    assert memories.filter(pl.col("memory_id") == key)["access_count"].item() == count
    with pytest.raises(ProjectionError, match=r"no table 'memorys'; did you mean memories\?"):
        result.table("memorys")
    with pytest.raises(ProjectionError, match="no event wrote a row of memories with key 'x'"):
        result.lineage("memories", "x")


class InPlace(wb.Projection):
    """Changes its counter row in place and never hands it back after the first write."""

    name = "in_place"
    counts = wb.Table(key="id", id=str, n=int)

    @wb.on("MemoryAccessed")
    def accessed(self, event, tables):
        row = tables.counts.get("all")
        if row is None:
            tables.counts.upsert({"id": "all", "n": 1})
        else:
            row["n"] += 1  # never handed back: stored only if a flush happens to take it


def test_rows_changed_in_place_and_never_handed_back_are_named(
    archive: Path, tmp_path: Path
) -> None:
    """What such a row stores depends on where flushes fall: the replay says so."""
    result = wb.replay(
        archive, InPlace, into=tmp_path / "o.duckdb", flush_every=500, batch_size=500
    )
    assert result.stale == ["counts: 1 row(s), e.g. 'all'"]
    assert "changed in place but never handed back, so not stored as they stand" in (
        result.summary()
    )
    assert wb.replay(archive, Memories, into=tmp_path / "m.duckdb", flush_every=500).stale == []


class Kinds(wb.Projection):
    """Writes values stored as written but read back as another kind: an int total in a
    float column, an Enum member as text, a time at UTC+02:00; ``seen`` records the kind
    of total the handler was handed."""

    name = "kinds"
    totals = wb.Table(key="agent_id", agent_id=str, total=float, seen=str, mood=str, at=dt.datetime)

    @wb.on("MemoryAccessed")
    def accessed(self, event, tables):
        if event.data is None:
            return
        agent = event.data["agent_id"]
        row = tables.totals.get(agent) or {"agent_id": agent, "total": 0}
        row["seen"] = type(row["total"]).__name__
        row["total"] += 1
        row["mood"] = Mood.CALM
        row["at"] = event.occurred_at.astimezone(dt.timezone(dt.timedelta(hours=2)))
        tables.totals.upsert(row)


class Mood(enum.StrEnum):
    CALM = "calm"


def test_values_a_resume_reads_back_as_another_kind_are_named(
    archive: Path, tmp_path: Path
) -> None:
    """An int in a float column is stored as written, but a resumed handler gets a float:
    the replay names each such column, which the resume below shows is no false alarm."""
    whole = wb.replay(archive, Kinds, into=tmp_path / "whole.duckdb")
    assert [re.sub(r"\(e\.g\. .*\)$", "", kind) for kind in whole.other_kinds] == [
        "totals.total: an int, read back as a float ",
        "totals.mood: a Mood, read back as a str ",
        "totals.at: a time in UTC+02:00, read back in UTC ",
    ]
    assert whole.other_kinds[1].endswith("(e.g. <Mood.CALM: 'calm'>)")
    assert re.search(r"\(e\.g\. \d{4}-\d\d-\d\d \d\d:\d\d:[\d.]+\+02:00\)$", whole.other_kinds[2])
    assert "read back as another kind by a --resume: totals.total" in whole.summary()
    assert whole.sql("select distinct seen from totals").fetchall() == [("int",)]
    into = tmp_path / "resumed.duckdb"
    wb.replay(archive, Kinds, into=into, until=whole.last_position // 2)
    resumed = wb.replay(archive, Kinds, into=into, resume=True)
    assert ("float",) in resumed.sql("select distinct seen from totals").fetchall()
    assert wb.replay(archive, Memories, into=tmp_path / "m.duckdb").other_kinds == []


def test_declaration_mistakes_name_what_to_fix(archive: Path, tmp_path: Path) -> None:
    """A bare @on registered nothing; a key column left undeclared and a broken lineage
    query were named without the fix or the query that failed."""
    with pytest.raises(ProjectionError, match=r"^@on takes the event types it handles"):

        class Bare(wb.Projection):
            @wb.on  # type: ignore[arg-type]
            def created(self, event: Event, tables: Tables) -> None: ...

    with pytest.raises(
        ProjectionError,
        match=r"^table key column order_id is not a declared column \(declared: orderid\): "
        r"declare it, order_id=<type>; did you mean orderid\?",
    ):
        wb.Table(key="order_id", orderid=str)
    broken = wb.SqlProjection(
        "bl", tables={"t": "select 1 as x"}, keys={"t": "x"}, lineage={"t": "select nope"}
    )
    with pytest.raises(ProjectionError, match=r"^SQL of the lineage of t failed"):
        wb.replay(archive, broken, into=tmp_path / "o.duckdb")


def test_a_where_filter_that_fails_on_the_events_is_the_users_error(
    archive: Path, tmp_path: Path
) -> None:
    """Valid SQL, so no early check caught it; it failed on the events as a bug (exit 3)."""
    with pytest.raises(
        ProjectionError,
        match=r"^where filter \(--where\) 'event_type = 1' fails on the archive's events: "
        r"Conversion Error",
    ):
        wb.replay(archive, Memories, into=tmp_path / "o.duckdb", where="event_type = 1")
    args = ["replay", "--archive", str(archive), "--projection", "workbench.examples:Memories"]
    assert cli.run([*args, "--into", str(tmp_path / "c.duckdb"), "--where", "event_type = 1"]) == 2


def test_sys_exit_in_a_projection_is_its_failure_not_the_replays_exit(
    archive: Path, tmp_path: Path
) -> None:
    """sys.exit(0) at import or in a handler made `workbench replay` exit 0 in silence,
    with an empty read model and no checkpoint."""
    script = tmp_path / "script.py"
    script.write_text("import sys\nimport workbench as wb\nsys.exit(0)\n")
    with pytest.raises(ProjectionError, match=r"script\.py failed to import: it called sys\.exit"):
        load_projection(f"{script}:P")
    handler = tmp_path / "quits.py"
    handler.write_text(
        "import sys\nimport workbench as wb\n\n"
        "class Quits(wb.Projection):\n"
        "    seen = wb.Table(key='id', id=str)\n\n"
        "    @wb.on('MemoryCreated')\n"
        "    def created(self, event, tables):\n"
        "        sys.exit(0)\n"
    )
    args = ["replay", "--archive", str(archive), "--projection", f"{handler}:Quits"]
    assert cli.run([*args, "--into", str(tmp_path / "q.duckdb")]) == 2
    quits = load_projection(f"{handler}:Quits")
    result = wb.replay(archive, quits, into=tmp_path / "d.duckdb", on_error="dead-letter")
    assert result.dead_letters > 0
    assert result.dead_letter_rows()["error"][0].startswith("it called sys.exit(0)")


def test_values_stored_as_another_are_that_at_once_so_a_resume_sees_the_same(
    tmp_path: Path,
) -> None:
    """A tuple in a list column reads back as a list after a resume: a handler formatting
    it wrote other rows than an uninterrupted run did. (An int in a float column and a
    Berlin time read back as 5.0 and UTC: equal values, documented, not converted.)"""
    at = dt.datetime(2024, 5, 1, 23, 30, tzinfo=dt.UTC)
    root = tmp_path / "archive"
    ArchiveWriter(root, "src").append(
        pa.table(
            {
                "global_position": [1, 2, 3],
                "recorded_at": [0, 1, 2],
                "occurred_at": pa.array([at] * 3, pa.timestamp("us", tz="UTC")),
                "event_type": ["Paid", "Paid", "Report"],
                "data": ['{"k": "a", "amount": 2}', '{"k": "a", "amount": 3}', '{"k": "a"}'],
            }
        )
    )
    berlin = dt.timezone(dt.timedelta(hours=2))

    class Account(wb.Projection):
        t = wb.Table(key="k", k=str, total=float, opened=dt.datetime, tags=list[str], report=str)

        @wb.on("Paid")
        def paid(self, event: Event, tables: Tables) -> None:
            d = event.data
            row = tables.t.get(d["k"])
            if row is None:
                opened = event.occurred_at.astimezone(berlin)
                tables.t.upsert({"k": d["k"], "total": d["amount"], "opened": opened,
                                 "tags": ("new",), "report": None})  # fmt: skip
            else:
                tables.t.update(d["k"], total=row["total"] + d["amount"])

        @wb.on("Report")
        def report(self, event: Event, tables: Tables) -> None:
            row = tables.t[event.data["k"]]
            text = f"{float(row['total'])} {row['opened'].astimezone(dt.UTC)} {row['tags']}"
            tables.t.update(event.data["k"], report=text)

    straight, resumed = tmp_path / "straight.duckdb", tmp_path / "resumed.duckdb"
    wb.replay(root, Account, into=straight)
    wb.replay(root, Account, into=resumed, until=2)
    wb.replay(root, Account, into=resumed, resume=True)
    reports = [rows(f, "account_v1", "t")[0][-1] for f in (straight, resumed)]
    assert reports == ["5.0 2024-05-01 23:30:00+00:00 ['new']"] * 2


def test_a_refused_update_in_dead_letter_mode_leaves_the_row_as_it_was(tmp_path: Path) -> None:
    """update(key, n=0.5) into an int column dropped the whole stored row, which the
    handler never spoilt: the next event found no row."""
    root = tmp_path / "archive"
    ArchiveWriter(root, "src").append(
        pa.table({"global_position": [1, 2, 3], "recorded_at": [0, 1, 2],
                  "event_type": ["Created", "Bad", "Touched"], "data": ['{"k": "a"}'] * 3})
    )  # fmt: skip

    class Counted(wb.Projection):
        t = wb.Table(key="k", k=str, n=int, touched=int)

        @wb.on("Created")
        def created(self, event: Event, tables: Tables) -> None:
            tables.t.upsert({"k": event.data["k"], "n": 1, "touched": 0})

        @wb.on("Bad")
        def bad(self, event: Event, tables: Tables) -> None:
            tables.t.update(event.data["k"], n=0.5)

        @wb.on("Touched")
        def touched(self, event: Event, tables: Tables) -> None:
            row = tables.t[event.data["k"]]
            tables.t.update(event.data["k"], touched=row["touched"] + 1)

    result = wb.replay(root, Counted, into=tmp_path / "o.duckdb", on_error="dead-letter")
    assert result.dead_letter_rows()["global_position"].to_list() == [2]
    assert rows(tmp_path / "o.duckdb", "counted_v1", "t") == [("a", 1, 1)]


def test_declarations_duckdb_would_refuse_are_refused_at_class_definition() -> None:
    """A repeated key column and a version that is no number failed as DuckDB errors (exit
    3); a reserved table name came wrapped in "Error calling __set_name__"."""
    with pytest.raises(ProjectionError, match=r"^table key \('a', 'a'\): column a is named twice"):
        wb.Table(key=("a", "a"), a=str)
    for version in ("one", 1.5, True, -1):
        with pytest.raises(ProjectionError, match=f"version = {version!r}: a version is a whole"):
            type("P", (wb.Projection,), {"version": version})
    with pytest.raises(ProjectionError, match=r"^table name '_checkpoint': names starting with _"):
        type("P", (wb.Projection,), {"_checkpoint": wb.Table(key="a", a=str)})


def test_names_and_filters_that_would_reach_sql_as_something_else(
    archive: Path, tmp_path: Path
) -> None:
    """An upper-case SqlProjection name is the lower-case schema to DuckDB (it dropped a
    promoted one); a trailing comment in --where swallowed what followed it; a position
    past 64 bits failed as a bug; a column name with a quote broke the DDL."""
    with pytest.raises(ProjectionError, match="projection name 'MEMORIES': use lower_case"):
        wb.SqlProjection("MEMORIES", {"t": "select 1 as x"})
    where = "event_type = 'MemoryCreated' -- created only"
    result = wb.replay(archive, Memories, into=tmp_path / "o.duckdb", where=where)
    assert set(result.per_type["event_type"]) == {"MemoryCreated"}
    with pytest.raises(ProjectionError, match="until 99999999999999999999999: not a position"):
        wb.replay(archive, Memories, into=tmp_path / "u.duckdb", until=99999999999999999999999)

    class Quoted(wb.Projection):
        items = wb.Table(key="id", columns={"id": str, 'say "hi"': str})

        @wb.on("MemoryCreated")
        def created(self, event, tables):
            tables.items.upsert({"id": event.data["memory_id"], 'say "hi"': "hi"})

    quoted = wb.replay(archive, Quoted, into=tmp_path / "q.duckdb")
    assert quoted.sql('select count("say ""hi""") from items').fetchall()[0][0] > 0


def test_a_read_only_connection_of_this_process_in_the_way_is_named(
    archive: Path, tmp_path: Path
) -> None:
    """A notebook that opened the output read-only to look at it, then replays again."""
    into = tmp_path / "o.duckdb"
    wb.replay(archive, Memories, into=into)
    looking = duckdb.connect(str(into), read_only=True)
    try:
        with pytest.raises(ProjectionError, match=r"this process has it open read-only"):
            wb.replay(archive, Memories, into=into)
    finally:
        looking.close()
    assert wb.replay(archive, Memories, into=into).events_applied > 0


class SlowMemories(Memories):
    """Handlers of a fifth of a millisecond an event (a database lookup per event)."""

    name = "slow_memories"

    @wb.on("MemoryAccessed")
    def accessed(self, event: Event, tables: Tables) -> None:
        time.sleep(0.0002)
        super().accessed(event, tables)


def test_slow_handlers_get_batches_small_enough_to_flush_in_time(
    archive: Path, tmp_path: Path
) -> None:
    """Flushes are looked at between batches: a batch slower than flush_seconds made a
    process killed that often never checkpoint. The batches shrink, the output holds."""
    slow = wb.replay(archive, SlowMemories, into=tmp_path / "s.duckdb", batch_size=2_000,
                     flush_seconds=0.2)  # fmt: skip
    fast = wb.replay(archive, SlowMemories, into=tmp_path / "f.duckdb", batch_size=2_000)
    assert fast.progress.height - 1 == 2  # 4,000 events in two batches
    assert slow.progress.height - 1 > 4  # the first batch took ~0.3 s: smaller ones after
    assert slow.events_applied == fast.events_applied == 4_000
    for table in (*TABLES, "_lineage"):
        assert rows(tmp_path / "s.duckdb", slow.schema, table) == rows(
            tmp_path / "f.duckdb", fast.schema, table
        )
