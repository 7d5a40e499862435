"""No late commit skipped: the archiver waits at holes until they can no longer fill."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from test_postgres_layouts import append_marten, create_marten, create_message_db, write_message

import workbench as wb
from workbench.sources.postgres import PostgresArchiver

pytestmark = pytest.mark.postgres


def archived_positions(root: Path) -> list[int]:
    if not any(root.glob("source=*")):  # nothing archived yet: no archive to open
        return []
    return [
        r[0]
        for r in wb.open_archive(root)
        .sql("select global_position from events order by 1")
        .fetchall()
    ]


def gap_positions(root: Path) -> set[int]:
    reader = wb.open_archive(root)
    gaps = reader.sql("select first_missing, last_missing, reason from gap_records").fetchall()
    # Interior holes are rollbacks; one below the table's first row on the first run
    # (a first insert rolled back, or rows deleted before archiving) is retention.
    assert all(r == "rolled-back" or (r == "retention" and a == 1) for a, _, r in gaps), gaps
    return {p for first, last, _ in gaps for p in range(first, last + 1)}


def test_late_commit_is_waited_for(pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    table = create_message_db(pg_dsn, pg_schema)
    with (
        PostgresArchiver(pg_dsn, tmp_path, table=table) as archiver,
        psycopg.connect(pg_dsn, application_name="notebook") as slow,
        psycopg.connect(pg_dsn, autocommit=True) as fast,
    ):
        write_message(slow, pg_schema, "memory-1", "MemoryCreated", {})  # takes 1, stays open
        write_message(fast, pg_schema, "memory-2", "MemoryCreated", {})  # takes 2, commits
        assert archiver.poll() == 0  # 2 is visible, but 1 may still commit
        assert archiver.waiting and archiver.result.waiting_at == 1
        assert archiver.poll() == 0
        # The summary names who holds it (a notebook left in a transaction, a pool, pg_dump).
        (held,) = archiver.result.held_by
        assert held.startswith(
            f"pid {slow.info.backend_pid} (notebook, idle in transaction, since "
        )
        assert held in archiver.result.summary()
        slow.commit()
        assert archiver.poll() == 2
        assert not archiver.waiting
    assert archived_positions(tmp_path) == [1, 2]
    assert gap_positions(tmp_path) == set()


def test_a_role_that_cannot_see_other_sessions_is_told_why_not(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """Without pg_read_all_stats another role's session shows no state or start."""
    table = create_message_db(pg_dsn, pg_schema)
    role = f"wb_ro_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute(f"create role {role} login")
        admin.execute(f"grant usage on schema {pg_schema} to {role}")
        admin.execute(f"grant select on {table} to {role}")
    try:
        parts = urlsplit(pg_dsn)
        as_role = parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port or 5432}").geturl()
        with (
            PostgresArchiver(as_role, tmp_path, table=table) as archiver,
            psycopg.connect(pg_dsn, application_name="notebook") as slow,
            psycopg.connect(pg_dsn, autocommit=True) as fast,
        ):
            write_message(slow, pg_schema, "memory-1", "MemoryCreated", {})  # 1, held open
            write_message(fast, pg_schema, "memory-2", "MemoryCreated", {})
            assert archiver.poll() == 0
            (held,) = archiver.result.held_by
            assert held.startswith(f"pid {slow.info.backend_pid} (")
            assert held.endswith("its state is hidden from this role: pg_read_all_stats shows it)")
            slow.rollback()
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            admin.execute(f"drop owned by {role}")
            admin.execute(f"drop role {role}")


def test_marten_positions_drawn_before_their_transaction_are_not_skipped(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """Marten draws seq_id values in one query and inserts them in a later transaction:
    no transaction holds the hole meanwhile, so only the grace period keeps it open."""
    table = create_marten(pg_dsn, pg_schema)
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        drawn = con.execute(f"select nextval('{pg_schema}.mt_events_sequence')").fetchone()
        assert drawn is not None
        append_marten(con, pg_schema, uuid.uuid4(), 1, "memory_created", {})  # takes the next
        with PostgresArchiver(pg_dsn, tmp_path, preset="marten", table=table) as archiver:
            assert archiver.poll() == 0 and archiver.waiting
            assert archiver.poll() == 0 and archiver.waiting  # no one holds it, but it is < 3 s old
            stream = uuid.uuid4()
            append_marten(con, pg_schema, stream, 1, "memory_created", {}, seq_id=drawn[0])
            assert archiver.poll() == 2
    assert archived_positions(tmp_path) == [1, 2]
    # Without the grace period (a store that draws in its own transaction), the
    # hole settles at once, as a rolled-back value.
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f"select nextval('{pg_schema}.mt_events_sequence')")
        append_marten(con, pg_schema, uuid.uuid4(), 1, "memory_created", {})
    with PostgresArchiver(
        pg_dsn, tmp_path, preset="marten", table=table, settle_grace=0
    ) as archiver:
        archiver.poll()
        archiver.poll()
    assert archived_positions(tmp_path) == [1, 2, 4]
    assert gap_positions(tmp_path) == {3}


def test_marten_tombstones_are_the_store_s_own_rows_even_when_they_fill_a_passed_hole(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """A failed Marten append leaves its drawn seq_ids to `tombstone` rows on Marten's own
    stream (version = seq_id), at once or later: archived as `$marten.tombstone`, never a
    stream gap, and one filling a hole already passed loses no event (it was "LOST" on
    every later run)."""
    table = create_marten(pg_dsn, pg_schema)
    tombstones = uuid.uuid4()

    def tombstone(con: psycopg.Connection[object], seq: int) -> None:
        con.execute(
            f"insert into {pg_schema}.mt_events (seq_id, id, stream_id, version, data, type, "
            "mt_dotnet_type) values (%s, %s, %s, %s, '{}', 'tombstone', "
            "'JasperFx.Events.Tombstone, JasperFx.Events')",
            (seq, uuid.uuid4(), tombstones, seq),
        )

    with psycopg.connect(pg_dsn, autocommit=True) as con:
        append_marten(con, pg_schema, uuid.uuid4(), 1, "memory_created", {})  # 1
        con.execute(f"select nextval('{pg_schema}.mt_events_sequence')")  # 2: a failed append's
        tombstone(con, 2)  # filled at once
        con.execute(f"select nextval('{pg_schema}.mt_events_sequence')")  # 3: filled later
        append_marten(con, pg_schema, uuid.uuid4(), 1, "memory_created", {})  # 4
        # A team's own event aliased `tombstone` stays an event.
        append_marten(con, pg_schema, uuid.uuid4(), 1, "tombstone", {})  # 5
        first = wb.archive_postgres(pg_dsn, tmp_path, preset="marten", table=table, settle_grace=0)
        assert first.gaps == [(3, 3, "rolled-back")]
        tombstone(con, 3)
    again = wb.archive_postgres(pg_dsn, tmp_path, preset="marten", table=table, settle_grace=0)
    assert again.late == [] and "LOST" not in again.summary()
    types = wb.open_archive(tmp_path).sql(
        "select global_position, event_type from events order by 1"
    )
    assert types.fetchall() == [
        (1, "memory_created"),
        (2, "$marten.tombstone"),
        (4, "memory_created"),
        (5, "tombstone"),
    ]
    gaps = wb.open_archive(tmp_path).gaps()
    assert gaps.streams.height == 0, gaps.streams  # the tombstone stream numbers nothing


def test_rolled_back_hole_becomes_a_gap_record(pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    table = create_message_db(pg_dsn, pg_schema)
    with (
        PostgresArchiver(pg_dsn, tmp_path, table=table) as archiver,
        psycopg.connect(pg_dsn) as doomed,
        psycopg.connect(pg_dsn, autocommit=True) as fast,
    ):
        write_message(fast, pg_schema, "memory-1", "MemoryCreated", {})  # 1
        write_message(doomed, pg_schema, "memory-2", "MemoryCreated", {})  # 2, rolled back below
        write_message(fast, pg_schema, "memory-3", "MemoryCreated", {})  # 3
        assert archiver.poll() == 1
        doomed.rollback()
        # The waiting list settles before the next snapshot, which then passes the hole.
        assert archiver.poll() == 1
        assert archiver.result.gaps == [(2, 2, "rolled-back")]
    assert archived_positions(tmp_path) == [1, 3]
    assert gap_positions(tmp_path) == {2}
    # A new archiver resumes after position 3 and records the gap only once.
    result = wb.archive_postgres(pg_dsn, tmp_path, table=table)
    assert (result.rows_archived, result.gaps) == (0, [])


def test_concurrent_writers_archive_exactly_the_committed_rows(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    table = create_message_db(pg_dsn, pg_schema)
    committed: list[str] = []
    lock = threading.Lock()
    writers_done = threading.Event()

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        with psycopg.connect(pg_dsn) as con:
            for i in range(25):
                ids = [
                    write_message(
                        con, pg_schema, f"memory-{seed}-{i % 3}", "MemoryAccessed", {"i": i}
                    )
                    for _ in range(rng.randint(1, 3))
                ]
                con.execute("select pg_sleep(%s)", (rng.random() * 0.05,))  # held open
                if rng.random() < 0.25:
                    con.rollback()
                else:
                    con.commit()
                    with lock:
                        committed.extend(ids)

    def follow() -> wb.sources.postgres.ArchivePostgresResult:
        return wb.archive_postgres(
            pg_dsn,
            tmp_path,
            table=table,
            follow=True,
            poll_interval=0.01,
            batch_size=7,
            should_stop=lambda: writers_done.is_set(),
        )

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    results: list[wb.sources.postgres.ArchivePostgresResult] = []
    follower = threading.Thread(target=lambda: results.append(follow()))
    follower.start()
    for t in threads:
        t.join()
    writers_done.set()
    follower.join()
    # Catch up on whatever arrived after the follower's last poll.
    wb.archive_postgres(pg_dsn, tmp_path, table=table)

    reader = wb.open_archive(tmp_path)
    ids = [
        r[0] for r in reader.sql("select event_id from events order by global_position").fetchall()
    ]
    assert sorted(ids) == sorted(committed)
    assert len(ids) == len(set(ids))
    with psycopg.connect(pg_dsn) as con:
        (top,) = con.execute(f"select max(global_position) from {table}").fetchone() or (0,)
    positions = set(archived_positions(tmp_path))
    gaps = gap_positions(tmp_path)
    # Every position up to the highest is either an archived row or a recorded rolled-back gap.
    assert positions | gaps == set(range(1, top + 1)) and not positions & gaps
    assert results and results[0].rows_archived > 0
    assert results[0].waits > 0  # the follower did meet holes that were still open


def test_follow_mode_with_idle_exit_via_cli(pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    from workbench.cli import run

    table = create_message_db(pg_dsn, pg_schema)

    def write_later() -> None:
        with psycopg.connect(pg_dsn, autocommit=True) as con:
            for i in range(5):
                write_message(con, pg_schema, "memory-1", "MemoryAccessed", {"i": i})

    later = threading.Timer(0.2, write_later)
    later.start()
    code = run(
        [
            "archive",
            "postgres",
            "--dsn",
            pg_dsn,
            "--table",
            table,
            "--out",
            str(tmp_path),
            "--follow",
            "--idle-exit",
            "3",
            "--poll-interval",
            "0.05",
        ]
    )
    later.join()
    assert code == 0
    assert archived_positions(tmp_path) == [1, 2, 3, 4, 5]


def test_a_hole_mid_stream_stops_the_read_and_the_connection_stays_usable(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """The hole sits in the first record batch of a result several batches long.

    The archiver stops reading there (cancelling the rest of the query), writes
    what is before the hole, and its next polls on the same connection work.
    """
    table = create_message_db(pg_dsn, pg_schema)
    big = {"text": "x" * 600_000}  # ~24 MB of rows: more than one ADBC batch
    with (
        PostgresArchiver(pg_dsn, tmp_path, table=table, batch_size=10) as archiver,
        psycopg.connect(pg_dsn) as slow,
        psycopg.connect(pg_dsn, autocommit=True) as fast,
    ):
        write_message(fast, pg_schema, "memory-0", "MemoryCreated", {})  # 1
        write_message(slow, pg_schema, "memory-1", "MemoryCreated", {})  # 2, stays open
        for i in range(40):  # 3..42
            write_message(fast, pg_schema, f"memory-{i % 4 + 2}", "MemoryAccessed", big)
        assert archiver.poll() == 1
        assert archiver.result.waiting_at == 2
        assert archiver.poll() == 0
        slow.commit()
        assert archiver.poll() == 41
        assert not archiver.waiting
    assert archived_positions(tmp_path) == list(range(1, 43))
    names = sorted(p.stem for p in tmp_path.rglob("date=*/*.parquet"))  # no side tables
    spans = [tuple(int(n) for n in name.split("-")) for name in names]
    assert spans == [(1, 1), (2, 11), (12, 21), (22, 31), (32, 41), (42, 42)]


def test_follow_ends_on_sigterm_with_its_summary(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    table = create_message_db(pg_dsn, pg_schema)
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        for i in range(3):
            write_message(con, pg_schema, f"memory-{i}", "MemoryCreated", {})
    command = ["archive", "postgres", "--dsn", pg_dsn, "--table", table, "--follow"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench", *command, "--out", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "WORKBENCH_LOG_EVERY": "0"},
    )
    deadline = time.monotonic() + 30
    while not (tmp_path.exists() and any(tmp_path.rglob("*.parquet"))):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "archived 3 rows" in out
    assert "archiving: 3 of 3" in err, err  # off a terminal, lines instead of a live bar
    assert archived_positions(tmp_path) == [1, 2, 3]


def test_a_late_row_in_a_range_recorded_as_rolled_back_is_reported_lost(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """A store that drew a position and committed it after the grace: the archive has
    passed it for good, so every later run says so, and the CLI exits 1."""
    table = create_marten(pg_dsn, pg_schema)
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        drawn = con.execute(f"select nextval('{pg_schema}.mt_events_sequence')").fetchone()
        assert drawn is not None
        append_marten(con, pg_schema, uuid.uuid4(), 1, "memory_created", {})  # 2
        first = wb.archive_postgres(pg_dsn, tmp_path, preset="marten", table=table, settle_grace=0)
        # Below the first row: recorded, but not as a harmless rollback (it may be pruned).
        assert first.gaps == [(1, 1, "retention")] and first.late == []
        assert "position(s) 1..1 below the table's first row" in first.summary()
        append_marten(con, pg_schema, uuid.uuid4(), 1, "memory_created", {}, seq_id=drawn[0])
    again = wb.archive_postgres(pg_dsn, tmp_path, preset="marten", table=table, settle_grace=0)
    assert again.late == [1] and again.rows_archived == 0
    assert "LOST: 1 event(s) committed at positions recorded as missing (1)" in again.summary()
    out = subprocess.run(
        [sys.executable, "-m", "workbench", "archive", "postgres", "--dsn", pg_dsn,
         "--preset", "marten", "--table", table, "--out", str(tmp_path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert "LOST: 1 event(s)" in out.stdout
    # Recorded once, as no harmless hole, so the gaps check (and a cron job's
    # `check --fail-on gaps`) fails on it as the archiver does.
    gaps = wb.open_archive(tmp_path).gaps()
    assert gaps.positions.filter(reason="committed-late").select(
        "first_missing", "last_missing"
    ).rows() == [(1, 1)]
    assert gaps.found >= 1
    # Counted once, by what it turned out to be (it was recorded as retention first).
    assert gaps.positions["missing"].sum() == 1


def test_a_follow_run_tells_a_row_committed_into_a_hole_it_passed(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """A service archiving with --follow looked for late rows only when it started: a row
    committed into a hole it had passed was lost with exit 0, told by no one for weeks.
    It is looked for as the run goes, and once more as it ends."""
    table = create_marten(pg_dsn, pg_schema)
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        append_marten(con, pg_schema, uuid.uuid4(), 1, "memory_created", {})  # 1
        drawn = con.execute(f"select nextval('{pg_schema}.mt_events_sequence')").fetchone()
        assert drawn is not None  # 2: drawn early, as Marten does, committed below
        append_marten(con, pg_schema, uuid.uuid4(), 1, "memory_created", {})  # 3
        polls = 0

        def commit_late_then_stop() -> bool:
            nonlocal polls
            polls += 1
            if polls == 2:  # the first poll stopped at 2, the second passed it
                append_marten(con, pg_schema, uuid.uuid4(), 1, "memory_created", {},
                              seq_id=drawn[0])  # fmt: skip
            return polls > 2

        result = wb.archive_postgres(
            pg_dsn, tmp_path, preset="marten", table=table, settle_grace=0, follow=True,
            poll_interval=0.01, should_stop=commit_late_then_stop,
        )  # fmt: skip
    assert result.gaps == [(2, 2, "rolled-back")] and result.rows_archived == 2
    assert result.late == [2]
    assert "LOST: 1 event(s) committed at positions recorded as missing (2)" in result.summary()
    gaps = wb.open_archive(tmp_path).gaps()
    assert gaps.positions.filter(reason="committed-late")["first_missing"].to_list() == [2]


def test_a_position_sequence_that_caches_values_is_warned_of(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """With CACHE 20 each session draws its own block: one session's events commit long
    after higher positions, past any settle grace (78 of 1,659 lost in a trial)."""
    table = create_message_db(pg_dsn, pg_schema)
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        write_message(con, pg_schema, "memory-1", "MemoryCreated", {})
        plain = wb.archive_postgres(pg_dsn, tmp_path, table=table)
        assert plain.sequence_cache is None and "CACHE" not in plain.summary()
        sequence = con.execute(
            "select pg_get_serial_sequence(%s, 'global_position')", [table]
        ).fetchone()
        assert sequence is not None and sequence[0]
        con.execute(f"alter sequence {sequence[0]} cache 20")
        write_message(con, pg_schema, "memory-2", "MemoryCreated", {})
    cached = wb.archive_postgres(pg_dsn, tmp_path, table=table)
    assert cached.sequence_cache == 20
    assert "the position sequence hands out 20 values per session (CACHE)" in cached.summary()


def test_the_holes_of_one_read_are_recorded_in_one_file(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    table = create_message_db(pg_dsn, pg_schema)
    with psycopg.connect(pg_dsn) as con:
        for i in range(30):
            write_message(con, pg_schema, f"memory-{i}", "MemoryCreated", {})
            con.rollback() if i % 2 else con.commit()
    calls: list[tuple[int, int]] = []
    result = wb.archive_postgres(
        pg_dsn, tmp_path, table=table, progress=lambda *call: calls.append(call)
    )
    assert result.rows_archived == 15 and len(result.gaps) == 14
    assert calls[-1] == (15, 15)  # the bar ends full: the holes were never rows
    assert len(list((tmp_path / "_gap_records").rglob("*.parquet"))) == 1
    assert gap_positions(tmp_path) == set(range(2, 30, 2))
    assert "14 position(s) in 14 hole(s) left by rolled-back transactions" in result.summary()


def test_a_one_shot_run_stopped_by_a_signal_keeps_its_files_and_exits_130(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """Waiting at a hole an open transaction holds, as a cron job might when stopped.

    SIGTERM, as a supervisor sends it: a SIGINT that lands inside a query is ADBC's, which
    cancels the query and, when it had finished anyway, lets the run go on.
    """
    signum = signal.SIGTERM
    table = create_message_db(pg_dsn, pg_schema)
    with (
        psycopg.connect(pg_dsn, autocommit=True) as fast,
        psycopg.connect(pg_dsn) as slow,
    ):
        for i in range(3):
            write_message(fast, pg_schema, f"memory-{i}", "MemoryCreated", {})
        write_message(slow, pg_schema, "memory-9", "MemoryCreated", {})  # takes 4, stays open
        write_message(fast, pg_schema, "memory-5", "MemoryCreated", {})  # takes 5, commits
        command = ["archive", "postgres", "--dsn", pg_dsn, "--table", table]
        proc = subprocess.Popen(
            [sys.executable, "-m", "workbench", *command, "--settle-timeout", "60",
             "--out", str(tmp_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while archived_positions(tmp_path) != [1, 2, 3]:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
        slow.rollback()
    assert proc.returncode == 130, err
    assert "stopped: by a signal; the events archived before it are kept (run again" in err
    assert "Traceback" not in err
    assert archived_positions(tmp_path) == [1, 2, 3]
