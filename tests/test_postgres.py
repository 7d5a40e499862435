"""Postgres archiver: each preset against the real store layout, bad input, snapshots, CLI."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import polars as pl
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from test_postgres_layouts import append_marten, create_marten, create_message_db, write_message

import workbench as wb
from workbench.cli import run
from workbench.errors import ArchiveError, MappingError, SourceError
from workbench.sources.postgres import read_snapshot_info

pytestmark = pytest.mark.postgres


def archived(root: Path) -> list[dict[str, Any]]:
    return (
        wb.open_archive(root).sql("select * from events order by global_position").pl().to_dicts()
    )


def data_files(root: Path) -> list[Path]:
    return sorted(root.rglob("date=*/*.parquet"))  # events, not side tables


# ------------------------------------------------------------------ message-db


def test_message_db_preset_fills_the_envelope(pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    table = create_message_db(pg_dsn, pg_schema)
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        first = write_message(
            con,
            pg_schema,
            "memory-1",
            "MemoryCreated",
            {"text": "hi"},
            {"correlationStreamName": "request-9", "schemaVersion": "2"},
        )
        write_message(
            con,
            pg_schema,
            "memory-1",
            "MemoryAccessed",
            {"by": "ann"},
            {
                "correlationStreamName": "request-9",
                "causationMessageGlobalPosition": 1,
                "causationMessageStreamName": "memory-1",
                "causationMessagePosition": 0,
            },
        )
        write_message(
            con, pg_schema, "memory-2", "MemoryCreated", {"text": "yo"}, {"schemaVersion": "two"}
        )
        # Causes named by stream and position only, and one no lookup finds.
        # A global position of another service's store: the local message there (memory-1
        # at 0) is not the cause the stream and position name, so it is an orphan.
        causes = [
            {"causationMessageStreamName": "memory-1", "causationMessagePosition": 1},
            {"causationMessageGlobalPosition": 999},
            {
                "causationMessageGlobalPosition": 1,
                "causationMessageStreamName": "billing:command-7",
                "causationMessagePosition": 0,
            },
        ]
        for cause in causes:
            write_message(con, pg_schema, "memory-3", "MemoryTagged", {}, cause)
    result = wb.archive_postgres(pg_dsn, tmp_path, preset="message-db", table=table)
    assert (result.rows_archived, result.last_position, result.gaps) == (6, 6, [])
    assert result.problems == {
        "schema_version not an integer (null; its text in metadata schema_version:text)": 1
    }
    rows = archived(tmp_path)
    assert json.loads(rows[2]["metadata"])["schema_version:text"] == "two"
    assert [r["source"] for r in rows] == [f"postgres:{table}"] * 6
    assert [(r["stream"], r["stream_position"], r["event_type"]) for r in rows[:3]] == [
        ("memory-1", 0, "MemoryCreated"),
        ("memory-1", 1, "MemoryAccessed"),
        ("memory-2", 0, "MemoryCreated"),
    ]
    assert [r["causation_id"] for r in rows[3:]] == [
        rows[1]["event_id"],
        "global position 999",
        "billing:command-7/0",
    ]
    assert rows[0]["event_id"] == first and rows[0]["schema_version"] == 2
    assert rows[1]["schema_version"] == 1  # no schemaVersion: 1, as the envelope says
    assert rows[2]["schema_version"] is None  # one that is not a number: null, and counted
    assert rows[1]["correlation_id"] == "request-9"
    assert rows[1]["causation_id"] == first  # resolved to the causing message's id
    assert json.loads(rows[1]["data"]) == {"by": "ann"}
    assert rows[0]["recorded_at"].tzinfo is not None
    assert abs(rows[0]["recorded_at"] - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)
    # The archive is the checkpoint: a second run archives only what is new.
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        write_message(con, pg_schema, "memory-2", "MemoryAccessed", {"by": "bob"})
    again = wb.archive_postgres(pg_dsn, tmp_path, preset="message-db", table=table)
    assert (again.rows_archived, again.last_position) == (1, 7)
    assert [r["global_position"] for r in archived(tmp_path)] == [1, 2, 3, 4, 5, 6, 7]
    assert "rows archived" in again._repr_html_()


def test_options_another_preset_would_ignore_are_refused(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    table = create_message_db(pg_dsn, pg_schema)
    with pytest.raises(SourceError, match="decrypts the eventsourcing preset's stores, not mes"):
        wb.archive_postgres(pg_dsn, tmp_path, preset="message-db", table=table, cipher_key="k")
    with pytest.raises(ArchiveError, match=r"^remap \(--remap\) goes with a preset or a mapping"):
        wb.archive_postgres(pg_dsn, tmp_path, table=table, remap=True)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------ marten


def test_a_column_added_while_following_is_archived_from_then_on(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """A following run kept the columns it started with: Marten's user_name, turned on
    meanwhile, was left out of the metadata of every row it archived after."""
    from workbench.sources.postgres.archiver import PostgresArchiver

    table = create_marten(pg_dsn, pg_schema)
    with (
        PostgresArchiver(pg_dsn, tmp_path, preset="marten", table=table, settle_grace=0) as run,
        psycopg.connect(pg_dsn, autocommit=True) as con,
    ):
        append_marten(con, pg_schema, uuid.uuid4(), 1, "memory_created", {})
        assert run.poll() == 1
        con.execute(f"alter table {table} add column user_name varchar")
        append_marten(con, pg_schema, uuid.uuid4(), 1, "memory_created", {}, user_name="ann")
        assert run.poll() == 1
    metadata = [json.loads(r["metadata"]) for r in archived(tmp_path)]
    assert "user_name" not in metadata[0] and metadata[1]["user_name"] == "ann"


def test_marten_preset(pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    table = create_marten(pg_dsn, pg_schema)
    stream = uuid.uuid4()
    with psycopg.connect(pg_dsn) as con:  # one transaction, as Marten's session does
        e1 = append_marten(
            con,
            pg_schema,
            stream,
            1,
            "memory_created",
            {"Text": "hi"},
            correlation_id="req-1",
            headers=json.dumps({"user": "ann", "tenant": None}),
        )
        append_marten(
            con,
            pg_schema,
            stream,
            2,
            "memory_accessed",
            {"By": "bob"},
            correlation_id="req-1",
            causation_id=str(e1),
        )
        # Conjoined tenancy: the same stream id in another tenant is another stream.
        append_marten(con, pg_schema, stream, 1, "memory_created", {}, tenant_id="acme")
    result = wb.archive_postgres(pg_dsn, tmp_path, preset="marten", table=table)
    assert result.rows_archived == 3 and not result.problems
    rows = archived(tmp_path)
    assert [(r["stream"], r["stream_position"], r["event_type"]) for r in rows] == [
        (str(stream), 1, "memory_created"),
        (str(stream), 2, "memory_accessed"),
        (f"acme/{stream}", 1, "memory_created"),
    ]
    assert rows[0]["event_id"] == str(e1) and rows[1]["causation_id"] == str(e1)
    assert rows[1]["correlation_id"] == "req-1"
    meta = json.loads(rows[0]["metadata"])
    # A header whose value is null is kept: only columns that are null are left out.
    assert meta["tenant_id"] == "*DEFAULT*" and meta["headers"] == {"user": "ann", "tenant": None}
    assert "headers" not in json.loads(rows[1]["metadata"])
    assert meta["dotnet_type"].startswith("Memories.")
    # A column Marten adds as an option (user_name) or a team adds itself is kept.
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f"alter table {table} add column user_name varchar")
        con.execute(f'alter table {table} add column "Region" text')
        con.execute(f"update {table} set user_name = 'ann', \"Region\" = 'eu'")
    again = wb.archive_postgres(pg_dsn, tmp_path / "again", preset="marten", table=table)
    assert again.rows_archived == 3
    meta = json.loads(archived(tmp_path / "again")[0]["metadata"])
    assert (meta["user_name"], meta["Region"], meta["tenant_id"]) == ("ann", "eu", "*DEFAULT*")
    # Marten 9's binary events: bytes in bdata, a '{}' placeholder in data.
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f"alter table {table} add column bdata bytea")
        append_marten(con, pg_schema, stream, 3, "reading_taken", {}, bdata=b"\x93\x02")
    binary = wb.archive_postgres(pg_dsn, tmp_path / "binary", preset="marten", table=table)
    assert binary.rows_archived == 4 and not binary.problems
    rows = archived(tmp_path / "binary")
    assert (rows[3]["data"], rows[3]["payload"]) == (None, b"\x93\x02")
    assert rows[0]["data"] == '{"Text": "hi"}' and rows[0]["payload"] is None
    assert "bdata" not in json.loads(rows[3]["metadata"])


# ------------------------------------------------------------------ eventsourcing


class Memory(Aggregate):
    @event("Created")
    def __init__(self, text: str) -> None:
        self.text = text
        self.accesses = 0

    @event("Accessed")
    def access(self, by: str, memory: uuid.UUID) -> None:
        self.accesses += 1


class Memories(Application[uuid.UUID]):
    def remember(self, text: str, accesses: int) -> uuid.UUID:
        memory = Memory(text)
        for i in range(accesses):
            memory.access(by=f"user-{i}", memory=memory.id)
        self.save(memory)
        return memory.id


def es_env(dsn: str, schema: str, **extra: str) -> dict[str, str]:
    parts = urlsplit(dsn)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": parts.path.lstrip("/"),
        "POSTGRES_HOST": parts.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": parts.username or "root",
        "POSTGRES_PASSWORD": parts.password or "",
        "POSTGRES_SCHEMA": schema,
        **extra,
    }


def write_with_library(env: dict[str, str]) -> tuple[uuid.UUID, uuid.UUID]:
    app = Memories(env=env)
    try:
        return app.remember("first", 2), app.remember("second", 0)
    finally:
        app.close()


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"COMPRESSOR_TOPIC": "eventsourcing.compressor:ZlibCompressor"},
        # Ids in a text column, as 32 hex digits: hyphenated, as the payloads spell them.
        {"ORIGINATOR_ID_TYPE": "text"},
    ],
    ids=["plain", "zlib", "text-ids"],
)
def test_eventsourcing_preset_reads_what_the_library_writes(
    pg_dsn: str, pg_schema: str, tmp_path: Path, extra: dict[str, str]
) -> None:
    first, second = write_with_library(es_env(pg_dsn, pg_schema, **extra))
    result = wb.archive_postgres(
        pg_dsn, tmp_path, preset="eventsourcing", table=f"{pg_schema}.memories_events"
    )
    assert result.rows_archived == 4 and not result.problems
    rows = archived(tmp_path)
    assert [(r["stream"], r["stream_position"], r["event_type"]) for r in rows] == [
        (str(first), 1, "Memory.Created"),
        (str(first), 2, "Memory.Accessed"),
        (str(first), 3, "Memory.Accessed"),
        (str(second), 1, "Memory.Created"),
    ]
    data = json.loads(rows[1]["data"])
    assert data["by"] == "user-0"
    assert data["memory"] == str(first)  # a UUID in a payload as the stream writes it
    # The library's typed encoding of datetimes is decoded into the envelope's times.
    assert dt.datetime.fromisoformat(data["timestamp"]) == rows[1]["occurred_at"]
    assert rows[1]["recorded_at"] == rows[1]["occurred_at"]
    assert json.loads(rows[0]["metadata"])["topic"].endswith(":Memory.Created")
    assert rows[0]["metadata"].startswith('{"topic": ')  # as jsonb prints, like the other stores
    assert rows[0]["payload"] is None


class Note(Aggregate):
    """An aggregate whose event classes were upgraded: the library stamps class_version 2."""

    class Created(Aggregate.Created):
        class_version = 2
        text: str

    @event(Created)
    def __init__(self, text: str) -> None:
        self.text = text


class Notes(Application[uuid.UUID]):
    def write(self, text: str) -> uuid.UUID:
        note = Note(text)
        self.save(note)
        return note.id


def test_eventsourcing_class_version_and_a_state_cut_short(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    env = es_env(pg_dsn, pg_schema)
    write_with_library(env)
    app = Notes(env=env)
    try:
        app.write("v2")
    finally:
        app.close()
    table = f"{pg_schema}.notes_events"
    with psycopg.connect(pg_dsn, autocommit=True) as con:  # a state no JSON parser accepts
        con.execute(
            f"insert into {table} (originator_id, originator_version, topic, state) "
            "values (gen_random_uuid(), 1, '__main__:Note.Created', convert_to('{\"text\":\"tr', 'UTF8'))"
        )
    app = Notes(env=env)
    try:
        app.write("after")  # rows after the broken one are archived too
    finally:
        app.close()
    result = wb.archive_postgres(pg_dsn, tmp_path, preset="eventsourcing", table=table)
    assert result.rows_archived == 3
    assert result.problems["state not decodable (payload kept)"] == 1
    rows = archived(tmp_path)
    assert [r["schema_version"] for r in rows] == [2, 1, 2]
    assert rows[1]["data"] is None and rows[1]["payload"] == b'{"text":"tr'
    memories = wb.archive_postgres(
        pg_dsn, tmp_path / "m", preset="eventsourcing", table=f"{pg_schema}.memories_events"
    )
    assert memories.rows_archived == 4
    assert {r["schema_version"] for r in archived(tmp_path / "m")} == {1}  # no class_version


def test_eventsourcing_encrypted_store(pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    from eventsourcing.cryptography import AESCipher

    key = AESCipher.create_key(16)
    env = es_env(
        pg_dsn,
        pg_schema,
        CIPHER_TOPIC="eventsourcing.cryptography:AESCipher",
        CIPHER_KEY=key,
        COMPRESSOR_TOPIC="eventsourcing.compressor:ZlibCompressor",
    )
    write_with_library(env)
    table = f"{pg_schema}.memories_events"
    with pytest.raises(SourceError, match="looks encrypted"):
        wb.archive_postgres(pg_dsn, tmp_path, preset="eventsourcing", table=table)
    assert data_files(tmp_path) == []  # nothing half-written
    wrong = AESCipher.create_key(16)
    with pytest.raises(SourceError, match="does not decrypt"):
        wb.archive_postgres(pg_dsn, tmp_path, preset="eventsourcing", table=table, cipher_key=wrong)
    result = wb.archive_postgres(
        pg_dsn, tmp_path, preset="eventsourcing", table=table, cipher_key=key
    )
    assert result.rows_archived == 4 and not result.problems
    assert json.loads(archived(tmp_path)[0]["data"])["text"] == "first"


def test_the_cli_takes_an_apps_own_cipher_key_as_the_library_does(
    pg_dsn: str, pg_schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The library reads MEMORIES_CIPHER_KEY (the app's own) before CIPHER_KEY: a team that
    exports only the former had to pass --cipher-key."""
    pytest.importorskip("cryptography")
    from eventsourcing.cryptography import AESCipher

    key = AESCipher.create_key(16)
    write_with_library(
        es_env(
            pg_dsn, pg_schema, CIPHER_TOPIC="eventsourcing.cryptography:AESCipher", CIPHER_KEY=key
        )
    )
    monkeypatch.delenv("CIPHER_KEY", raising=False)
    monkeypatch.setenv("MEMORIES_CIPHER_KEY", key)
    args = ["archive", "postgres", "--dsn", pg_dsn, "--preset", "eventsourcing",
            "--table", f"{pg_schema}.memories_events", "--out", str(tmp_path)]  # fmt: skip
    assert run(args) == 0
    assert json.loads(archived(tmp_path)[0]["data"])["text"] == "first"
    # A later run goes on with the recorded preset (a cron job's `--dsn --out`), and the
    # library reads the environment as the CLI does.
    write_with_library(
        es_env(
            pg_dsn, pg_schema, CIPHER_TOPIC="eventsourcing.cryptography:AESCipher", CIPHER_KEY=key
        )
    )
    assert run(["archive", "postgres", "--dsn", pg_dsn, "--out", str(tmp_path)]) == 0
    write_with_library(
        es_env(
            pg_dsn, pg_schema, CIPHER_TOPIC="eventsourcing.cryptography:AESCipher", CIPHER_KEY=key
        )
    )
    assert wb.archive_postgres(pg_dsn, tmp_path).rows_archived == 4
    assert len(archived(tmp_path)) == 12


def test_an_unrelated_cipher_key_in_the_environment_does_not_stop_a_plain_store(
    pg_dsn: str, pg_schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CIPHER_KEY set for another tool (not even base64): a plain store is archived
    without it, and the summary says so; an encrypted one's error names the variable."""
    write_with_library(es_env(pg_dsn, pg_schema))
    monkeypatch.setenv("CIPHER_KEY", "hunter2")
    table = f"{pg_schema}.memories_events"
    result = wb.archive_postgres(pg_dsn, tmp_path, preset="eventsourcing", table=table)
    assert result.rows_archived == 4
    assert "decoded without CIPHER_KEY from the environment, which does not fit" in str(result)
    pytest.importorskip("cryptography")
    from eventsourcing.cryptography import AESCipher

    key = AESCipher.create_key(16)
    sealed = f"{pg_schema}_sealed"
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f"create schema {sealed}")
    try:
        write_with_library(
            es_env(
                pg_dsn, sealed, CIPHER_TOPIC="eventsourcing.cryptography:AESCipher", CIPHER_KEY=key
            )
        )
        with pytest.raises(SourceError, match=r"base64 CIPHER_KEY .*\(the key is CIPHER_KEY's\)$"):
            wb.archive_postgres(
                pg_dsn,
                tmp_path / "sealed",
                preset="eventsourcing",
                table=f"{sealed}.memories_events",
            )
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as con:
            con.execute(f"drop schema {sealed} cascade")


def test_a_store_that_turned_encryption_on_later_is_refused_without_its_key(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """Plain states first, encrypted ones after: archived without the key, the encrypted
    ones would be undecodable payloads for good (the archive is append-only)."""
    pytest.importorskip("cryptography")
    from eventsourcing.cryptography import AESCipher

    key = AESCipher.create_key(16)
    write_with_library(es_env(pg_dsn, pg_schema))
    write_with_library(
        es_env(
            pg_dsn, pg_schema, CIPHER_TOPIC="eventsourcing.cryptography:AESCipher", CIPHER_KEY=key
        )
    )
    table = f"{pg_schema}.memories_events"
    with pytest.raises(SourceError, match=r"4 of 8 stored states look encrypted .*--cipher-key"):
        wb.archive_postgres(pg_dsn, tmp_path, preset="eventsourcing", table=table)
    assert data_files(tmp_path) == []
    result = wb.archive_postgres(
        pg_dsn, tmp_path, preset="eventsourcing", table=table, cipher_key=key
    )
    assert result.rows_archived == 8 and not result.problems


def test_a_cipher_key_meant_for_another_app_leaves_a_plain_store_readable(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """CIPHER_KEY is often exported for an encrypted app; an unencrypted one still archives."""
    pytest.importorskip("cryptography")
    from eventsourcing.cryptography import AESCipher

    write_with_library(es_env(pg_dsn, pg_schema))
    result = wb.archive_postgres(
        pg_dsn,
        tmp_path,
        preset="eventsourcing",
        table=f"{pg_schema}.memories_events",
        cipher_key=AESCipher.create_key(16),
    )
    assert result.rows_archived == 4 and not result.problems
    assert json.loads(archived(tmp_path)[0]["data"])["text"] == "first"


# ------------------------------------------------------------------ generic and bad rows


def make_generic(dsn: str, schema: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as con:
        con.execute(
            f"create table {schema}.log (seq bigserial primary key, at timestamptz, kind text, "
            f"entity text, body text, headers jsonb)"
        )
        con.execute(
            f"insert into {schema}.log (at, kind, entity, body, headers) values "
            f'(now(), \'Created\', \'m-1\', \'{{"text": "hi", "req": {{"id": "r1"}}}}\', \'{{"v": 3}}\'), '
            f"(now(), null, 'm-1', 'not json at all', null), "
            f"(null, 'Accessed', null, null, '{{\"v\": \"x\"}}')"
        )
    return f"{schema}.log"


GENERIC_MAP = [
    "global_position=column:seq",
    "recorded_at=column:at",
    "event_type=column:kind",
    "stream=column:entity",
    "data=column:body",
    "metadata=column:headers",
    "correlation_id=data:req.id",
    "schema_version=metadata:v",
    "subject=const:none",
]


def test_generic_preset_counts_row_level_problems(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    table = make_generic(pg_dsn, pg_schema)
    result = wb.archive_postgres(
        pg_dsn, tmp_path, preset="generic", table=table, mappings=GENERIC_MAP
    )
    assert result.rows_archived == 3
    assert result.problems == {
        "data not JSON": 1,
        "null event_type": 1,
        "null stream": 1,
        "null data": 1,  # the text that is not JSON is counted once, above
        "recorded_at missing (archive time used)": 1,
        "schema_version not an integer (null; its text in metadata schema_version:text)": 1,
    }
    rows = archived(tmp_path)
    assert rows[0]["correlation_id"] == "r1" and rows[0]["schema_version"] == 3
    assert rows[1]["schema_version"] == 1  # no "v" in its metadata: 1
    assert rows[0]["subject"] == "none"
    assert rows[1]["data"] is None and rows[1]["payload"] == b"not json at all"
    assert rows[2]["schema_version"] is None and rows[2]["recorded_at"] is not None


def _numbered_log(dsn: str, schema: str, positions: list[int | None]) -> str:
    """A generic table whose ``seq`` column is the given numbers (not a primary key)."""
    with psycopg.connect(dsn, autocommit=True) as con:
        con.execute(
            f"create table {schema}.numbered (seq bigint, at timestamptz default now(), "
            "kind text, body text)"
        )
        for seq in positions:
            con.execute(
                f"insert into {schema}.numbered (seq, kind, body) values (%s, 'Created', '{{}}')",
                (seq,),
            )
    return f"{schema}.numbered"


NUMBERED_MAP = [
    "global_position=column:seq",
    "recorded_at=column:at",
    "event_type=column:kind",
    "data=column:body",
]


def test_a_table_numbered_from_zero_is_archived_whole_and_negatives_are_refused(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    table = _numbered_log(pg_dsn, pg_schema, [0, 1, 2])
    result = wb.archive_postgres(
        pg_dsn, tmp_path, preset="generic", table=table, mappings=NUMBERED_MAP, settle_grace=0
    )
    assert result.rows_archived == 3 and result.gaps == []
    assert [r["global_position"] for r in archived(tmp_path)] == [0, 1, 2]
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f"insert into {table} (seq, kind, body) values (-5, 'Created', '{{}}')")
    with pytest.raises(SourceError, match=r"negative positions \(the lowest is -5\)"):
        wb.archive_postgres(
            pg_dsn, tmp_path / "new", preset="generic", table=table, mappings=NUMBERED_MAP
        )
    assert not (tmp_path / "new").exists()


def test_a_store_s_own_row_filling_a_passed_hole_is_not_a_lost_event(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """Eventuous fills a hole its subscription timed out on with a `$tombstone`, long
    after: the store's own row, not an event committed late. A real event is."""
    table = _numbered_log(pg_dsn, pg_schema, [1, 4])
    first = wb.archive_postgres(
        pg_dsn, tmp_path, preset="generic", table=table, mappings=NUMBERED_MAP, settle_grace=0
    )
    assert first.gaps == [(2, 3, "rolled-back")]
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f"insert into {table} (seq, kind, body) values (2, '$tombstone', '{{}}')")
    again = wb.archive_postgres(pg_dsn, tmp_path, table=table, settle_grace=0)
    assert again.late == []
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f"insert into {table} (seq, kind, body) values (3, 'Created', '{{}}')")
    assert wb.archive_postgres(pg_dsn, tmp_path, table=table, settle_grace=0).late == [3]


def test_metadata_that_is_not_json_is_kept_whole(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """Axon's meta_data is XStream XML or Java-serialised bytes: the trace ids in it must
    not be dropped for want of JSON."""
    xml = "<meta-data><entry><string>traceId</string><string>t-1</string></entry></meta-data>"
    java = b"\xac\xed\x00\x05sr\x00\x11java.util.HashMap"
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(
            f"create table {pg_schema}.axon (global_index bigint primary key, "
            "time_stamp text, type text, payload text, meta_data bytea)"
        )
        for i, meta in enumerate([xml.encode(), java, b'{"traceId": "t-3"}', None], 1):
            con.execute(
                f"insert into {pg_schema}.axon values (%s, '2024-05-01T10:00:00Z', 'T', '{{}}', %s)",
                (i, meta),
            )
    mappings = [
        "global_position=column:global_index",
        "recorded_at=column:time_stamp",
        "event_type=column:type",
        "data=column:payload",
        "metadata=column:meta_data",
    ]
    result = wb.archive_postgres(
        pg_dsn, tmp_path, preset="generic", table=f"{pg_schema}.axon", mappings=mappings
    )
    assert result.problems == {"metadata not JSON (kept as metadata:text or metadata:base64)": 2}
    metas = [r["metadata"] for r in archived(tmp_path)]
    assert json.loads(metas[0]) == {"metadata:text": xml}
    assert base64.b64decode(json.loads(metas[1])["metadata:base64"]) == java
    assert json.loads(metas[2]) == {"traceId": "t-3"} and metas[3] is None


def test_a_metadata_key_holding_dots_is_mapped_quoted_and_a_path_finding_nothing_is_said(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """Eventuous keeps `eventuous.correlation-id` in its metadata: a path splits at dots,
    so the key goes in double quotes; unquoted it found nothing, silently."""
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(
            f"create table {pg_schema}.messages (global_position bigint, created timestamptz "
            "default now(), message_type text, json_data jsonb, json_metadata jsonb)"
        )
        for i in (1, 2):
            meta = {"eventuous.correlation-id": f"c{i}", "eventuous.causation-id": f"m{i}"}
            con.execute(
                f"insert into {pg_schema}.messages (global_position, message_type, json_data, "
                "json_metadata) values (%s, 'Booked', '{}', %s)",
                (i, json.dumps(meta)),
            )
    base = [
        "global_position=column:global_position",
        "recorded_at=column:created",
        "event_type=column:message_type",
        "data=column:json_data",
        "metadata=column:json_metadata",
    ]
    table = f"{pg_schema}.messages"
    quoted = wb.archive_postgres(
        pg_dsn, tmp_path / "q", preset="generic", table=table,
        mappings=[*base, 'correlation_id=metadata:"eventuous.correlation-id"'],
    )  # fmt: skip
    assert not quoted.problems
    assert [r["correlation_id"] for r in archived(tmp_path / "q")] == ["c1", "c2"]
    unquoted = wb.archive_postgres(
        pg_dsn, tmp_path / "u", preset="generic", table=table,
        mappings=[*base, "correlation_id=metadata:eventuous.correlation-id"],
    )  # fmt: skip
    assert unquoted.problems == {
        "correlation_id: metadata:eventuous.correlation-id found no value in any row (null) "
        '(a key holding dots goes in double quotes: "a.b")': 2
    }
    # A path that finds a value in some rows only is no problem (a chain's first event
    # has no causation id).
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(
            f"insert into {table} (global_position, message_type, json_data, json_metadata) "
            """values (3, 'Booked', '{}', '{"cause": "m2"}')"""
        )
    some = wb.archive_postgres(
        pg_dsn, tmp_path / "s", preset="generic", table=table,
        mappings=[*base, "causation_id=metadata:cause"],
    )  # fmt: skip
    assert not some.problems
    assert [r["causation_id"] for r in archived(tmp_path / "s")] == [None, None, "m2"]
    with pytest.raises(MappingError, match="a key holding dots in double quotes"):
        wb.archive_postgres(
            pg_dsn, tmp_path / "bad", preset="generic", table=table,
            mappings=[*base, 'correlation_id=metadata:"eventuous.correlation-id'],
        )  # fmt: skip


def test_holes_of_a_store_numbered_without_gaps_are_deletions(
    pg_dsn: str, pg_schema: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Commanded numbers its $all stream under a row lock, not from a sequence: a hole
    there is a deleted event, which the gap check must fail on, not a harmless rollback."""
    table = _numbered_log(pg_dsn, pg_schema, [1, 2, 4])
    argv = ["archive", "postgres", "--dsn", pg_dsn, "--preset", "generic", "--table", table]
    for item in NUMBERED_MAP:
        argv += ["--map", item]
    assert run([*argv, "--holes", "deleted", "--settle-grace", "0", "--out", str(tmp_path)]) == 0
    assert "1 position(s) in 1 hole(s) deleted before they were archived" in (
        capsys.readouterr().out
    )
    gaps = wb.open_archive(tmp_path).gaps()
    assert gaps.positions.select("first_missing", "reason").rows() == [(3, "deleted")]
    assert gaps.found == 1
    assert run([*argv, "--holes", "gone", "--out", str(tmp_path / "x")]) == 2
    assert "holes='gone': one of rolled-back, deleted" in capsys.readouterr().err


def test_a_repeated_position_is_named_in_one_line_and_exit_2(
    pg_dsn: str, pg_schema: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mapped position column that is not unique: the error says which position repeats,
    also when the repeat falls across two files."""
    table = _numbered_log(pg_dsn, pg_schema, [1, 2, 2, 3])
    argv = ["archive", "postgres", "--dsn", pg_dsn, "--preset", "generic", "--table", table]
    for item in NUMBERED_MAP:
        argv += ["--map", item]
    assert run([*argv, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"position 2 appears more than once in postgres:{table}" in err, err
    with pytest.raises(SourceError, match=f"position 2 appears more than once in postgres:{table}"):
        wb.archive_postgres(
            pg_dsn, tmp_path / "b", preset="generic", table=table, mappings=NUMBERED_MAP,
            batch_size=2,
        )  # fmt: skip


def test_a_pruned_table_is_not_told_as_rolled_back(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """Rows 1..999 deleted before the first run: recorded as retention, which the gap
    check flags, never as harmless rollbacks; a row without a position is counted."""
    table = _numbered_log(pg_dsn, pg_schema, [1000, 1001, None, 1003])
    result = wb.archive_postgres(
        pg_dsn, tmp_path, preset="generic", table=table, mappings=NUMBERED_MAP, settle_grace=0
    )
    assert result.rows_archived == 3
    assert result.gaps == [(1, 999, "retention"), (1002, 1002, "rolled-back")]
    assert result.problems == {"no position (not archived)": 1}
    text = result.summary()
    assert repr(result) == f"<ArchivePostgresResult: {text}>" and str(result) == text
    assert "position(s) 1..999 below the table's first row" in text
    assert "1 position(s) in 1 hole(s) left by rolled-back" in text
    gaps = wb.open_archive(tmp_path).gaps().positions
    assert gaps.filter(pl.col("reason") == "retention").rows(named=True)[0]["recorded"]


def test_positions_lost_below_the_first_row_start_at_the_sequence_s_first_value(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """SqlStreamStore's messages_seq starts at 0 (its position 0 deleted is a lost event
    too); a store whose sequence starts at 1000 lost nothing below it."""
    for start, table in ((0, "sss"), (1000, "late")):
        with psycopg.connect(pg_dsn, autocommit=True) as con:
            con.execute(f"create sequence {pg_schema}.{table}_seq start {start} minvalue 0")
            con.execute(
                f"create table {pg_schema}.{table} (position bigint primary key default "
                f"nextval('{pg_schema}.{table}_seq'), at timestamptz default now(), "
                "kind text default 'A', body text default '{}')"
            )
            for _ in range(5):
                con.execute(f"insert into {pg_schema}.{table} default values")
            con.execute(f"delete from {pg_schema}.{table} where position < {start} + 2")
        maps = ["global_position=column:position", "recorded_at=column:at"]
        maps += ["event_type=column:kind", "data=column:body"]
        result = wb.archive_postgres(
            pg_dsn, tmp_path / table, preset="generic", table=f"{pg_schema}.{table}",
            mappings=maps,
        )  # fmt: skip
        assert result.rows_archived == 3
        assert result.gaps == [(start, start + 1, "retention")]


def test_cli_archive_prints_problem_counts(
    pg_dsn: str, pg_schema: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = make_generic(pg_dsn, pg_schema)
    args = [
        "archive",
        "postgres",
        "--dsn",
        pg_dsn,
        "--preset",
        "generic",
        "--table",
        table,
        "--out",
        str(tmp_path),
    ]
    for item in GENERIC_MAP:
        args += ["--map", item]
    assert run(args) == 0
    out = capsys.readouterr().out
    assert "archived 3 rows" in out and "data not JSON: 1" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--table", "{schema}.nope"], "table {schema}.nope not found"),
        (["--table", "{schema}.event_log"], "similar tables here: .*{schema}.log"),
        (["--table", "{schema}.LOG"], "LOG not found .*similar tables here: .*{schema}.log"),
        (
            [
                "--preset",
                "generic",
                "--table",
                "{schema}.log",
                "--map",
                "global_position=column:seq",
            ],
            "needs --map recorded_at=column:NAME",
        ),
        (
            [
                "--preset",
                "generic",
                "--table",
                "{schema}.log",
                "--map",
                "global_position=column:nope",
                "--map",
                "recorded_at=column:at",
            ],
            "column nope not found",
        ),
        (
            [
                "--preset",
                "generic",
                "--table",
                "{schema}.log",
                "--map",
                "global_position=column:seq",
                "--map",
                "recorded_at=column:at",
                "--map",
                "stream=column:entity",
            ],
            # every row would have them empty: refused, with the table's likely columns
            r"generic needs --map event_type=column:NAME, --map data=column:NAME "
            r"\(likely in {schema}.log: event_type=column:kind, data=column:body or headers\)",
        ),
        (["--preset", "marten", "--table", "{schema}.log"], "column seq_id not found"),
        (["--preset", "redis"], "unknown preset 'redis'"),
        (
            ["--table", "{schema}.log", "--map", "stream=header:x"],
            "not an envelope column|for NATS",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    pg_dsn: str,
    pg_schema: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    make_generic(pg_dsn, pg_schema)
    argv = ["archive", "postgres", "--dsn", pg_dsn, "--out", str(tmp_path / "a")]
    argv += [a.format(schema=pg_schema) for a in args]
    assert run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    import re

    assert re.search(message.format(schema=pg_schema), err), err
    assert data_files(tmp_path) == []


def test_wrong_dsn_never_prints_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for dsn in (
        "postgresql://app:Sup3rSecret@127.0.0.1:1/db",
        "host=127.0.0.1 port=1 user=app password=Sup3rSecret dbname=db",
    ):
        assert run(["archive", "postgres", "--dsn", dsn, "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert (
            "Sup3rSecret" not in err
            and "cannot connect" in err
            and len(err.strip().splitlines()) == 1
        )
    # Unencoded '@' and ':' in a password: libpq would echo its tail as a port.
    dsn = "postgresql://app:Sup3r@Sec:r3t@127.0.0.1/db"
    assert run(["archive", "postgres", "--dsn", dsn, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "percent-encode" in err and "Sup3r" not in err and "r3t" not in err.replace("127", "")
    # A '#' in the password of a live side: the table is after the last '#'.
    live = "postgresql://app:Sup3r#Secret@127.0.0.1:1/db#public.t"
    assert run(["diff", "--candidate", live, "--live", live, "--key", "id"]) == 2
    err = capsys.readouterr().err
    assert "Secret" not in err and "Sup3r" not in err


def test_wrong_password_and_database(pg_dsn: str) -> None:
    parts = urlsplit(pg_dsn)
    missing_db = parts._replace(path="/wb_no_such_db").geturl()
    with pytest.raises(SourceError, match="does not exist") as info:
        wb.archive_postgres(missing_db, "/nonexistent-out")
    assert "\n" not in str(info.value)


def test_a_statement_timeout_is_named_as_one_not_as_a_failed_connection(pg_dsn: str) -> None:
    """Production roles often carry a statement_timeout; the driver's first query hits it."""
    sep = "&" if "?" in pg_dsn else "?"
    dsn = f"{pg_dsn}{sep}password=Sup3rSecret&options=-c%20statement_timeout%3D1"
    with pytest.raises(SourceError) as info:
        wb.archive_postgres(dsn, "/nonexistent-out")
    message = str(info.value)
    assert message.startswith("connected to ") and "statement_timeout" in message, message
    assert "SQLSTATE 57014" in message and "Sup3rSecret" not in message and "\n" not in message


def test_permission_denied(pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    table = create_message_db(pg_dsn, pg_schema)
    role = f"wb_reader_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f"create role {role} login")
        con.execute(f"grant usage on schema {pg_schema} to {role}")
    try:
        dsn = (
            urlsplit(pg_dsn)
            ._replace(netloc=f"{role}:pw@{urlsplit(pg_dsn).hostname}:{urlsplit(pg_dsn).port}")
            .geturl()
        )
        with pytest.raises(SourceError, match="permission denied") as info:
            wb.archive_postgres(dsn, tmp_path, table=table)
        assert ":pw@" not in str(info.value)
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as con:
            con.execute(f"drop owned by {role}")
            con.execute(f"drop role {role}")


def test_mapping_errors_are_user_errors(pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    table = make_generic(pg_dsn, pg_schema)
    with pytest.raises(MappingError, match="global_position must be column"):
        wb.archive_postgres(
            pg_dsn, tmp_path, preset="generic", table=table, mappings=["global_position=const:1"]
        )
    base = ["global_position=column:seq", "recorded_at=column:at"]
    with pytest.raises(
        MappingError, match="reads the data column, which is not mapped; add --map data=column:NAME"
    ):
        wb.archive_postgres(pg_dsn, tmp_path, preset="generic", table=table,
                            mappings=[*base, "correlation_id=data:req.id"])  # fmt: skip
    with pytest.raises(MappingError, match="map it as data=column:NAME"):
        wb.archive_postgres(pg_dsn, tmp_path, preset="generic", table=table,
                            mappings=[*base, "data=data:req"])  # fmt: skip


def test_a_generic_mapping_without_stream_or_event_id_says_so(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """data and event_type are required; stream and event_id only cost checks, said in
    the summary's one line. A payload path counts as mapped."""
    table = make_generic(pg_dsn, pg_schema)
    base = ["global_position=column:seq", "recorded_at=column:at", "data=column:body"]
    with pytest.raises(MappingError, match=r"needs --map event_type=column:NAME \(likely"):
        wb.archive_postgres(pg_dsn, tmp_path, preset="generic", table=table, mappings=base)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
    result = wb.archive_postgres(
        pg_dsn, tmp_path, preset="generic", table=table,
        mappings=[*base, "event_type=data:kind"],
    )  # fmt: skip
    assert result.rows_archived == 3 and result.unmapped == ("stream", "event_id")
    text = result.summary()
    assert "\n" not in text and "; stream and event_id not mapped, null in every row" in text
    assert "--map stream=column:NAME --map event_id=column:NAME" in text
    assert "not mapped" in result._repr_html_()
    mapped = [*GENERIC_MAP, "event_id=column:seq"]
    done = wb.archive_postgres(
        pg_dsn, tmp_path / "b", preset="generic", table=table, mappings=mapped
    )
    assert done.unmapped == () and "not mapped" not in done.summary()


def test_occurred_at_from_a_payload_path_reads_epoch_times_too(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """As the JetStream mapping does: ISO text, or epoch s / ms / µs."""
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f"create table {pg_schema}.ev (seq bigserial primary key, body jsonb)")
        for at in ('"2024-05-01T10:00:00Z"', "1714557600", "1714557600000", "1714557600000000"):
            con.execute(f"insert into {pg_schema}.ev (body) values ('{{\"at\": {at}}}')")
    result = wb.archive_postgres(
        pg_dsn, tmp_path, preset="generic", table=f"{pg_schema}.ev",
        mappings=["global_position=column:seq", "recorded_at=const:2024-05-02T00:00:00Z",
                  "event_type=const:Timed", "data=column:body", "occurred_at=data:at"],
    )  # fmt: skip
    assert result.rows_archived == 4
    times = {r["occurred_at"] for r in archived(tmp_path)}
    assert times == {dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC)}


def test_a_time_column_of_text_or_epoch_numbers_counts_each_bad_value(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """Text that is no time costs its row's time, counted, not the run; an integer column
    is read as epoch s / ms / µs / ns, as a payload path is. A column type that can never
    hold a time is refused before anything is written."""
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(
            f"create table {pg_schema}.log (seq bigserial primary key, at text, n bigint, "
            "flag boolean, kind text, body text)"
        )
        con.execute(
            f"insert into {pg_schema}.log (at, n, kind, body) values "
            "('2024-05-01T10:00:00Z', 1714557600, 'A', '{}'), "
            "('yesterday-ish', 1714557600000, 'A', '{}'), "
            "('', 1714557600000000, 'A', '{}'), "
            "(null, 1714557600000000000, 'A', '{}'), "
            "('2024-05-01 10:00:00', null, 'A', '{}')"
        )
    maps = ["global_position=column:seq", "event_type=column:kind", "data=column:body"]
    table = f"{pg_schema}.log"
    result = wb.archive_postgres(
        pg_dsn, tmp_path, preset="generic", table=table,
        mappings=[*maps, "recorded_at=column:at", "occurred_at=column:n"],
    )  # fmt: skip
    assert result.rows_archived == 5
    assert result.problems == {
        "recorded_at not a time (archive time used)": 2,
        "recorded_at missing (archive time used)": 1,
    }
    rows = archived(tmp_path)
    at = dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC)
    assert rows[0]["recorded_at"] == at and rows[4]["recorded_at"] == at  # naive text: UTC
    assert all(abs(r["recorded_at"] - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)
               for r in rows[1:4])  # fmt: skip
    assert [r["occurred_at"] for r in rows] == [at, at, at, at, None]
    epoch = wb.archive_postgres(
        pg_dsn, tmp_path / "epoch", preset="generic", table=table,
        mappings=[*maps, "recorded_at=column:n", "occurred_at=column:at"],
    )  # fmt: skip
    assert epoch.problems == {
        "recorded_at missing (archive time used)": 1,
        "occurred_at not a time (null)": 2,
    }
    assert [r["recorded_at"] for r in archived(tmp_path / "epoch")][:4] == [at] * 4
    # A float column of epoch microseconds: its text would be 1.7145576e+15.
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f"alter table {table} add column f float8")
        con.execute(f"update {table} set f = n::float8")
    floats = wb.archive_postgres(
        pg_dsn, tmp_path / "floats", preset="generic", table=table,
        mappings=[*maps, "recorded_at=column:f"],
    )  # fmt: skip
    assert floats.problems == {"recorded_at missing (archive time used)": 1}
    assert [r["recorded_at"] for r in archived(tmp_path / "floats")][:4] == [at] * 4
    with pytest.raises(MappingError, match=rf"column {pg_schema}.log.flag is bool, "):
        wb.archive_postgres(
            pg_dsn, tmp_path / "bool", preset="generic", table=table,
            mappings=[*maps, "recorded_at=column:flag"],
        )  # fmt: skip
    assert not (tmp_path / "bool").exists()


# ------------------------------------------------------------------ snapshots


def test_snapshot_records_rows_time_and_settled_position(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    table = create_message_db(pg_dsn, pg_schema)
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(
            f"create table {pg_schema}.memory_view (id text primary key, accesses int, seen jsonb)"
        )
        con.execute(
            f"insert into {pg_schema}.memory_view values ('m-1', 2, '{{\"a\": 1}}'), ('m-2', 0, null)"
        )
        for _ in range(3):
            write_message(con, pg_schema, "memory-1", "MemoryAccessed", {})
    out = tmp_path / "view.parquet"
    with psycopg.connect(pg_dsn) as late, psycopg.connect(pg_dsn, autocommit=True) as con:
        write_message(late, pg_schema, "memory-9", "MemoryCreated", {})  # position 4, not committed
        write_message(con, pg_schema, "memory-2", "MemoryCreated", {})  # position 5, committed
        late_commit = __import__("threading").Timer(0.3, late.commit)
        late_commit.start()
        info = wb.snapshot_postgres(
            pg_dsn, f"{pg_schema}.memory_view", out, events_table=table, preset="message-db"
        )
        late_commit.join()
    # Position 4 was in flight when the snapshot was taken: 5 is not counted either.
    assert info.event_store_position == 3
    assert info.rows == 2 and info.source == f"postgres:{table}"
    read = read_snapshot_info(out)
    assert (read.table, read.rows, read.event_store_position) == (f"{pg_schema}.memory_view", 2, 3)
    assert abs(read.taken_at - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)
    assert sorted(pq.read_table(out).column("id").to_pylist()) == ["m-1", "m-2"]
    assert [p.name for p in tmp_path.iterdir()] == ["view.parquet"]  # no temporaries left
    # Without in-flight transactions every committed position counts.
    again = wb.snapshot_postgres(pg_dsn, f"{pg_schema}.memory_view", out, events_table=table)
    assert again.event_store_position == 5
    # A read model whose projector stores its checkpoint knows which events it reflects.
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f"create table {pg_schema}.checkpoints (name text, position bigint)")
        con.execute(f"insert into {pg_schema}.checkpoints values ('memory_view', 2)")
    behind = wb.snapshot_postgres(
        pg_dsn,
        f"{pg_schema}.memory_view",
        out,
        events_table=table,
        position_sql=f"select position from {pg_schema}.checkpoints where name = 'memory_view'",
    )
    assert behind.event_store_position == 2 and read_snapshot_info(out).event_store_position == 2
    with pytest.raises(SourceError, match="--position-sql must return one integer"):
        wb.snapshot_postgres(pg_dsn, f"{pg_schema}.memory_view", out, position_sql="select 'x', 1")
    with pytest.raises(SourceError, match="returned -1: a position is 0 or more"):
        wb.snapshot_postgres(pg_dsn, f"{pg_schema}.memory_view", out, position_sql="select -1")
    # The workbench never writes to the store, not even through SQL it is given.
    bump = f"update {pg_schema}.checkpoints set position = 99 returning position"
    with pytest.raises(SourceError, match="read-only transaction"):
        wb.snapshot_postgres(pg_dsn, f"{pg_schema}.memory_view", out, position_sql=bump)
    with psycopg.connect(pg_dsn) as con:
        assert con.execute(f"select position from {pg_schema}.checkpoints").fetchall() == [(2,)]
    # Large objects get past a read-only transaction: the snapshot rolls it back.
    objects = "select count(*) from pg_largeobject_metadata"
    with psycopg.connect(pg_dsn) as con:
        (before,) = con.execute(objects).fetchone()  # type: ignore[misc]
    sneaky = "select lo_from_bytea(0, 'x'::bytea)::bigint"
    wb.snapshot_postgres(pg_dsn, f"{pg_schema}.memory_view", out, position_sql=sneaky)
    with psycopg.connect(pg_dsn) as con:
        assert con.execute(objects).fetchone() == (before,)
    with pytest.raises(SourceError, match=r"--position-sql|reading"):  # found while fetching
        wb.snapshot_postgres(
            pg_dsn, f"{pg_schema}.memory_view", out, position_sql="select (select 1 union select 2)"
        )


def test_snapshot_cli_without_events_table(pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f"create table {pg_schema}.v (id int)")
        con.execute(f"insert into {pg_schema}.v select generate_series(1, 10)")
    out = tmp_path / "v.parquet"
    assert (
        run(
            [
                "snapshot",
                "postgres",
                "--dsn",
                pg_dsn,
                "--table",
                f"{pg_schema}.v",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    info = read_snapshot_info(out)
    assert (info.rows, info.source, info.event_store_position) == (10, None, None)
    assert (
        run(
            [
                "snapshot",
                "postgres",
                "--dsn",
                pg_dsn,
                "--table",
                f"{pg_schema}.missing",
                "--out",
                str(tmp_path / "m.parquet"),
            ]
        )
        == 2
    )
    assert not (tmp_path / "m.parquet").exists()
    # Parquet under a CSV's name would mislead every reader of it: refused, nothing written.
    csv = ["snapshot", "postgres", "--dsn", pg_dsn, "--table", f"{pg_schema}.v"]
    assert run([*csv, "--out", str(tmp_path / "v.csv")]) == 2
    assert not (tmp_path / "v.csv").exists()
    # An archive's data file is never replaced by a snapshot; a directory is no file name.
    data = tmp_path / "arch" / "source=s" / "date=2024-05-01" / "1-2.parquet"
    data.parent.mkdir(parents=True)
    data.write_bytes(b"events")
    assert run([*csv, "--out", str(data)]) == 2
    assert data.read_bytes() == b"events"
    assert run([*csv, "--out", f"{tmp_path / 'newdir'}/"]) == 2
    assert not (tmp_path / "newdir").exists()


def test_integer_fields_from_json_text_never_fail_a_cast(pg_dsn: str) -> None:
    """schemaVersion / causation positions: plain digits take the fast test, the rest the pattern."""
    from workbench.sources.postgres.presets import _int_or_null

    values = ["7", "0012", " -3 ", "\t42\n", "12a", "", " ", "-", "--5", "1.5", "1234567890", None]
    expected = [7, 12, -3, 42, None, None, None, None, None, None, None, None]
    with psycopg.connect(pg_dsn) as con:
        got = [
            row[0]
            for v in values
            for row in con.execute(f"select {_int_or_null('v')} from (select %s::text as v) x", [v])
        ]
    assert got == expected


def test_an_integer_field_from_a_text_column_nulls_one_bad_value(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """A text column mapped to an integer field: one bad value is counted, not fatal."""
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(
            f"create table {pg_schema}.log (seq serial primary key, at timestamptz, "
            "kind text, body text, ver text, pos text)"
        )
        con.execute(
            f"insert into {pg_schema}.log (at, kind, body, ver, pos) values "
            "(now(), 'A', '{}', '2', '0'), (now(), 'A', '{}', 'x', '1'), (now(), 'A', '{}', null, 'y')"
        )
    maps = ["global_position=column:seq", "recorded_at=column:at", "event_type=column:kind"]
    maps += ["data=column:body", "schema_version=column:ver", "stream_position=column:pos"]
    result = wb.archive_postgres(
        pg_dsn, tmp_path, preset="generic", table=f"{pg_schema}.log", mappings=maps
    )
    assert result.rows_archived == 3
    assert result.problems == {
        "schema_version not an integer (null; its text in metadata schema_version:text)": 1,
        "stream_position not an integer (null; its text in metadata stream_position:text)": 1,
    }
    rows = archived(tmp_path)
    assert [(r["schema_version"], r["stream_position"]) for r in rows] == [
        (2, 0),
        (None, 1),
        (1, None),
    ]
    # What was no integer is kept (Axon's payload_revision "1.0", say), not lost.
    assert [r["metadata"] and json.loads(r["metadata"]) for r in rows] == [
        None,
        {"schema_version:text": "x"},
        {"stream_position:text": "y"},
    ]


def test_an_infinite_time_and_text_that_is_not_json_are_each_counted_once(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """'infinity' is no event time (it used to land in 290279 BC); a payload that is not
    JSON is counted as such, not again as a null payload."""
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(
            f"create table {pg_schema}.outbox (id bigserial primary key, "
            "created_at timestamp, occurred timestamptz, kind text, body text)"
        )
        con.execute(
            f"insert into {pg_schema}.outbox (created_at, occurred, kind, body) values "
            "('2024-03-31 01:30', '-infinity', 'A', '{}'), ('infinity', now(), 'A', 'oops'), "
            "('2024-03-31 01:31', now(), 'A', null)"
        )
    maps = ["global_position=column:id", "recorded_at=column:created_at"]
    maps += ["occurred_at=column:occurred", "event_type=column:kind", "data=column:body"]
    result = wb.archive_postgres(
        pg_dsn, tmp_path, preset="generic", table=f"{pg_schema}.outbox", mappings=maps
    )
    assert result.problems == {
        "recorded_at missing (archive time used)": 1,
        "data not JSON": 1,
        "null data": 1,
    }
    rows = archived(tmp_path)
    assert rows[0]["recorded_at"] == dt.datetime(2024, 3, 31, 1, 30, tzinfo=dt.UTC)
    assert rows[0]["occurred_at"] is None
    assert abs(rows[1]["recorded_at"] - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)


def test_out_naming_a_file_is_one_line_and_exit_2(
    pg_dsn: str, pg_schema: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = create_message_db(pg_dsn, pg_schema)
    out = tmp_path / "f"
    out.write_text("mine")
    args = ["archive", "postgres", "--dsn", pg_dsn, "--table", table, "--out", str(out)]
    assert run([*args, "--preset", "message-db"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("is a file: an archive is a directory") and "Traceback" not in err
    assert out.read_text() == "mine"


def test_another_store_under_the_same_name_is_refused(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """Same schema and table name, other rows (another database, or the table truncated
    and refilled): resuming would splice two histories, so it is refused."""
    table = create_message_db(pg_dsn, pg_schema)
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        for i in range(3):
            write_message(con, pg_schema, f"memory-{i}", "MemoryCreated", {})
    assert wb.archive_postgres(pg_dsn, tmp_path, table=table).rows_archived == 3
    with psycopg.connect(pg_dsn, autocommit=True) as con:  # same store, more events: fine
        write_message(con, pg_schema, "memory-9", "MemoryCreated", {})
    assert wb.archive_postgres(pg_dsn, tmp_path, table=table).rows_archived == 1
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f"truncate {table} restart identity")
        for i in range(6):
            write_message(con, pg_schema, f"other-{i}", "MemoryCreated", {})
    with pytest.raises(SourceError, match=r"not the store .* row at position 4 has event_id"):
        wb.archive_postgres(pg_dsn, tmp_path, table=table)
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f"truncate {table} restart identity")
        write_message(con, pg_schema, "other-1", "MemoryCreated", {})
    with pytest.raises(SourceError, match=r"not the store .* row at position 1 has event_id"):
        wb.archive_postgres(pg_dsn, tmp_path, table=table)
    assert len(archived(tmp_path)) == 4  # nothing was appended


def test_a_table_without_ids_truncated_and_refilled_is_refused_by_its_rows(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """A generic mapping with no event_id or stream: only the table's end was compared,
    so a table truncated (identity restarted) and refilled past the archive was spliced
    onto it, its first rows never archived. Its rows' type and time tell it now."""
    table = f"{pg_schema}.log"
    maps = ["global_position=column:seq", "recorded_at=column:at", "event_type=column:kind",
            "data=column:body"]  # fmt: skip
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(
            f"create table {table} (seq bigserial primary key, at timestamptz not null "
            "default clock_timestamp(), kind text not null, body jsonb)"
        )

        def insert(kind: str, n: int) -> None:
            con.execute(
                f"insert into {table} (kind, body) select %s, jsonb_build_object('i', g) "
                "from generate_series(1, %s) g",
                [kind, n],
            )

        def archive() -> int:
            return wb.archive_postgres(
                pg_dsn, tmp_path, preset="generic", table=table, mappings=maps
            ).rows_archived

        insert("Logged", 10)
        assert archive() == 10
        insert("Logged", 2)  # the same table, more rows: goes on
        con.execute(f"update {table} set kind = 'Log.Written'")  # a migration renames a type
        assert archive() == 2
        con.execute(f"truncate {table} restart identity")
        insert("Logged", 15)  # the same type: its times tell it
        with pytest.raises(
            SourceError,
            match=r"not the store .* its row at position 12 was recorded at 20\d\d-.*, after every "
            r"archived event \(the newest at 20\d\d-.*\): written since$",
        ):
            archive()
        # The same store, one time corrected since (filled in, or set earlier): goes on.
        con.execute(f"truncate {table}")
    assert len(archived(tmp_path)) == 12


def test_archived_rows_deleted_from_the_store_are_kept_and_resuming_goes_on(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """The newest archived rows gone from the store (deleted, or hidden by a view that
    filters archived streams) do not make it another store: the row below them is still
    the archive's, so the run goes on, keeps them, and says so."""
    table = create_message_db(pg_dsn, pg_schema)
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        for i in range(4):
            write_message(con, pg_schema, f"memory-{i}", "MemoryCreated", {})
    assert wb.archive_postgres(pg_dsn, tmp_path, table=table).rows_archived == 4
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f"delete from {table} where global_position >= 3")
        write_message(con, pg_schema, "memory-9", "MemoryCreated", {})  # position 5
    again = wb.archive_postgres(pg_dsn, tmp_path, table=table)
    assert again.rows_archived == 1
    gone = "archived, no longer in the store (deleted, or hidden by a view)"
    assert again.problems == {gone: 2} and gone in again.summary()
    assert [r["global_position"] for r in archived(tmp_path)] == [1, 2, 3, 4, 5]


def test_a_store_pruned_of_every_archived_row_goes_on(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """Archive, then delete what was archived: why one archives. No row is left to
    recognise the store by, but its sequence went on past the archive; one truncated
    and restarted is still refused."""
    table = create_message_db(pg_dsn, pg_schema)
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        for i in range(4):
            write_message(con, pg_schema, f"memory-{i}", "MemoryCreated", {})
        assert wb.archive_postgres(pg_dsn, tmp_path, table=table).rows_archived == 4
        con.execute(f"delete from {table}")
        emptied = wb.archive_postgres(pg_dsn, tmp_path, table=table)
        gone = "archived, no longer in the store (deleted, or hidden by a view)"
        assert emptied.rows_archived == 0 and emptied.problems == {gone: 4}
        write_message(con, pg_schema, "memory-9", "MemoryCreated", {})  # position 5
        assert wb.archive_postgres(pg_dsn, tmp_path, table=table).rows_archived == 1
        con.execute(f"truncate {table} restart identity")
    with pytest.raises(SourceError, match=r"not the store .* no row at or below position 5"):
        wb.archive_postgres(pg_dsn, tmp_path, table=table)
    assert [r["global_position"] for r in archived(tmp_path)] == [1, 2, 3, 4, 5]


def test_a_table_recreated_on_a_sequence_it_does_not_own_is_refused(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """A sequence of its own (serial, identity) is dropped with its table; a standalone
    one (Marten's) outlives it, so a recreated table's rows above the archive would pass
    for a pruned store's."""
    maps = ["global_position=column:seq", "recorded_at=column:at", "event_type=column:kind",
            "data=column:body", "event_id=column:id"]  # fmt: skip
    ddl = (
        f"create table {pg_schema}.log (seq bigint primary key default "
        f"nextval('{pg_schema}.shared'), id uuid default gen_random_uuid(), kind text "
        "default 'K', body jsonb default '{}', at timestamptz default now())"
    )
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f"create sequence {pg_schema}.shared")
        con.execute(ddl)
        for _ in range(3):
            con.execute(f"insert into {pg_schema}.log default values")
        first = wb.archive_postgres(
            pg_dsn, tmp_path, preset="generic", table=f"{pg_schema}.log", mappings=maps
        )
        assert first.rows_archived == 3
        con.execute(f"drop table {pg_schema}.log")
        con.execute(ddl)
        con.execute(f"insert into {pg_schema}.log default values")  # 4: another store's
    with pytest.raises(
        SourceError, match=r"not the store .*: it has no row at or below position 3"
    ):
        wb.archive_postgres(pg_dsn, tmp_path, table=f"{pg_schema}.log")


def test_a_position_column_that_is_not_an_integer_is_refused(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    table = make_generic(pg_dsn, pg_schema)
    maps = [m for m in GENERIC_MAP if not m.startswith("global_position=")]
    with pytest.raises(SourceError, match=r"log.kind is text, expected an integer \(a position\)$"):
        wb.archive_postgres(
            pg_dsn, tmp_path, preset="generic", table=table,
            mappings=["global_position=column:kind", *maps],
        )  # fmt: skip


def test_a_quoted_table_name_is_read_as_sql_writes_it(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """EF Core and friends create "Events"-style names; quoting them must not double-quote."""
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(
            f'create table {pg_schema}."Order.Log" (seq bigserial primary key, at timestamptz)'
        )
        con.execute(f'insert into {pg_schema}."Order.Log" (at) values (now()), (now())')
    maps = ["global_position=column:seq", "recorded_at=column:at"]
    maps += ["event_type=const:Logged", "data=const:{}"]  # a generic mapping must give both
    for i, table in enumerate((f'{pg_schema}."Order.Log"', f'"{pg_schema}"."Order.Log"')):
        out = tmp_path / str(i)
        result = wb.archive_postgres(pg_dsn, out, preset="generic", table=table, mappings=maps)
        assert result.rows_archived == 2 and result.source == f'postgres:{pg_schema}."Order.Log"'


def test_the_librarys_snapshots_table_is_named_as_such(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    write_with_library(es_env(pg_dsn, pg_schema, IS_SNAPSHOTTING_ENABLED="y"))
    with pytest.raises(
        MappingError, match="looks like the eventsourcing library's snapshots table"
    ) as caught:
        wb.archive_postgres(
            pg_dsn, tmp_path, preset="eventsourcing", table=f"{pg_schema}.memories_snapshots"
        )
    assert "another store takes --preset" not in str(caught.value)  # it is this store's


def test_a_mapping_added_on_a_later_run_is_not_another_store(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    table = make_generic(pg_dsn, pg_schema)
    first = [m for m in GENERIC_MAP if not m.startswith("stream=")]
    assert (
        wb.archive_postgres(
            pg_dsn, tmp_path, preset="generic", table=table, mappings=first
        ).rows_archived
        == 3
    )
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f"insert into {table} (at, kind, entity) values (now(), 'Created', 'm-2')")
    # Events mapped two ways are the user's choice to make, said with remap...
    with pytest.raises(
        ArchiveError, match=r"was archived with preset=generic .*--remap"
    ) as refused:
        wb.archive_postgres(pg_dsn, tmp_path, preset="generic", table=table, mappings=GENERIC_MAP)
    assert "or none, to reuse it" in str(refused.value)
    # ...and then it is a change of mapping, not another store.
    again = wb.archive_postgres(
        pg_dsn, tmp_path, preset="generic", table=table, mappings=GENERIC_MAP, remap=True
    )
    assert again.rows_archived == 1
    # From here on the new mapping is the archive's: the same one needs no remap.
    assert (
        wb.archive_postgres(
            pg_dsn, tmp_path, preset="generic", table=table, mappings=GENERIC_MAP
        ).rows_archived
        == 0
    )
    # A run given no preset nor mapping (a cron job's) archives as the run before.
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f"insert into {table} (at, kind, entity) values (now(), 'Created', 'm-3')")
    assert wb.archive_postgres(pg_dsn, tmp_path).rows_archived == 1
    assert wb.archive_postgres(pg_dsn, tmp_path, table=table).rows_archived == 0
    streams = wb.open_archive(tmp_path).sql("select stream from events order by global_position")
    assert streams.fetchall()[-1] == ("m-3",)  # mapped with stream=, as the run before


def test_a_run_given_no_mapping_names_the_sources_it_could_mean(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        for name in ("Order.Log", "audit"):
            con.execute(
                f'create table {pg_schema}."{name}" (seq bigserial primary key, at timestamptz)'
            )
            con.execute(f'insert into {pg_schema}."{name}" (at) values (now())')
    maps = ["global_position=column:seq", "recorded_at=column:at"]
    maps += ["event_type=const:Logged", "data=const:{}"]
    quoted = f'{pg_schema}."Order.Log"'
    wb.archive_postgres(pg_dsn, tmp_path, preset="generic", table=quoted, mappings=maps)
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f"insert into {quoted} (at) values (now())")
    # One source: a table name holding a dot is found again from the source's name.
    assert wb.archive_postgres(pg_dsn, tmp_path).rows_archived == 1
    wb.archive_postgres(
        pg_dsn, tmp_path, preset="generic", table=f"{pg_schema}.audit", mappings=maps
    )
    with pytest.raises(SourceError, match=r"holds 2 Postgres sources \(postgres:.*: give --table"):
        wb.archive_postgres(pg_dsn, tmp_path)
    assert wb.archive_postgres(pg_dsn, tmp_path, table=f"{pg_schema}.audit").rows_archived == 0


def test_a_payload_path_in_place_of_a_presets_column_resumes(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """--map event_type=data:kind on Message DB: the path wins, on every run."""
    table = create_message_db(pg_dsn, pg_schema)
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        write_message(con, pg_schema, "memory-1", "Generic", {"kind": "Kind1"})
    maps = ["event_type=data:kind"]
    assert wb.archive_postgres(pg_dsn, tmp_path, table=table, mappings=maps).rows_archived == 1
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        write_message(con, pg_schema, "memory-1", "Generic", {"kind": "Kind2"})
    assert wb.archive_postgres(pg_dsn, tmp_path, table=table, mappings=maps).rows_archived == 1
    assert [r["event_type"] for r in archived(tmp_path)] == ["Kind1", "Kind2"]


def test_a_snapshot_reads_into_polars_with_uuids_and_json_as_text(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(
            f"create table {pg_schema}.view (id uuid primary key, doc jsonb, "
            "price numeric(10,2), tags text[])"
        )
        con.execute(
            f"insert into {pg_schema}.view values "
            "('0b9c7e12-0000-4000-8000-000000000001', '{\"a\": 1}', 1.5, '{x,y}')"
        )
    info = wb.snapshot_postgres(pg_dsn, f"{pg_schema}.view", tmp_path / "view.parquet")
    frame = info.df()
    assert frame.schema["id"] == pl.String and frame.schema["price"] == pl.Decimal(10, 2)
    assert frame.row(0) == (
        "0b9c7e12-0000-4000-8000-000000000001",
        '{"a": 1}',
        Decimal("1.50"),
        ["x", "y"],
    )
    assert info.head(1).equals(frame)
    assert info.arrow().num_rows == 1 and read_snapshot_info(info.path).df().equals(frame)


def test_a_snapshot_with_infinite_times_reads_into_polars(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """±infinity (a "valid until" never) has no Polars datetime: such a column comes as
    text in df(), as Postgres writes it; arrow() keeps the exact values."""
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(
            f"create table {pg_schema}.terms (id int primary key, until timestamptz, "
            "day date, seen timestamptz)"
        )
        con.execute(
            f"insert into {pg_schema}.terms values "
            "(1, 'infinity', 'infinity', '2024-05-01 10:00+00'), "
            "(2, '-infinity', '2024-05-01', null), (3, '2024-05-01 10:00+00', null, null)"
        )
    info = wb.snapshot_postgres(pg_dsn, f"{pg_schema}.terms", tmp_path / "terms.parquet")
    frame = info.df().sort("id")
    assert str(frame)  # Polars renders every value (it panicked on ±infinity)
    assert frame["until"].to_list() == ["infinity", "-infinity", "2024-05-01 10:00:00+00"]
    assert frame["day"].to_list() == ["infinity", "2024-05-01", None]
    assert frame.schema["seen"] == pl.Datetime("us", "UTC")  # no infinity: stays a time
    exact = info.arrow().sort_by("id")
    assert exact.column("until").cast(pa.int64()).to_pylist()[:2] == [2**63 - 1, -(2**63 - 1)]
    assert exact.column("day").cast(pa.int32()).to_pylist()[0] == 2**31 - 1
    d = wb.diff(frame, f"{pg_dsn}#{pg_schema}.terms", key="id")
    assert d.summary.changed == 0 and d.summary.identical == 3


def test_a_multidimensional_array_is_kept_as_postgres_writes_it(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """ADBC would flatten {{1,2},{3,4}} into [1, 2, 3, 4], equal to a flat array's value."""
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        # A type whose name starts with "_" as array types' do is no array.
        con.execute(f"create domain {pg_schema}._score as int")
        con.execute(
            f"create table {pg_schema}.grid (id int primary key, cells int[][], flat int[], "
            f"score {pg_schema}._score)"
        )
        con.execute(
            f"insert into {pg_schema}.grid values "
            "(1, '{{1,2},{3,4}}', '{1,2}', 7), (2, '{5,6}', null, null), (3, null, '{}', 9)"
        )
    info = wb.snapshot_postgres(pg_dsn, f"{pg_schema}.grid", tmp_path / "grid.parquet")
    frame = info.df().sort("id")
    assert frame["cells"].to_list() == ["{{1,2},{3,4}}", "{5,6}", None]
    assert frame["flat"].to_list() == [[1, 2], None, []]  # no such row: a list stays a list
    assert frame["score"].to_list() == [7, None, 9]


def test_a_snapshot_of_a_generic_store_needs_only_its_position(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """A snapshot reads the store's position, not its events: the fields an archive
    needs (recorded_at, event_type, data) are not asked for."""
    table = make_generic(pg_dsn, pg_schema)
    info = wb.snapshot_postgres(
        pg_dsn,
        table,
        tmp_path / "s.parquet",
        events_table=table,
        preset="generic",
        mappings=["global_position=column:seq"],
    )
    assert info.event_store_position == 3 and info.rows == 3


def test_a_naive_time_column_is_read_as_utc_and_said_so(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """A `timestamp` column holds whatever the writer's session TimeZone made of now():
    read as UTC, and the summary says so, since a session elsewhere shifts it."""
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(
            f"create table {pg_schema}.naive (seq bigserial primary key, at timestamp, "
            "kind text, body jsonb)"
        )
        con.execute(
            f"insert into {pg_schema}.naive (at, kind, body) "
            "values ('2024-05-01 12:00:00', 'A', '{}')"
        )
    maps = ["global_position=column:seq", "recorded_at=column:at"]
    maps += ["event_type=column:kind", "data=column:body"]
    result = wb.archive_postgres(
        pg_dsn, tmp_path, preset="generic", table=f"{pg_schema}.naive", mappings=maps
    )
    assert result.naive_times == ("recorded_at from at",)
    assert "recorded_at from at: timestamp without time zone, read as UTC" in result.summary()
    (row,) = archived(tmp_path)
    assert row["recorded_at"] == dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)


def test_the_default_preset_on_another_stores_table_names_the_others(
    pg_dsn: str, pg_schema: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = make_generic(pg_dsn, pg_schema)
    args = ["archive", "postgres", "--dsn", pg_dsn, "--table", table, "--out", str(tmp_path)]
    assert run(args) == 2
    err = capsys.readouterr().err
    assert "does not have the message-db preset's layout" in err and "--preset NAME (" in err
    assert "emmett" in err and "generic with --map" in err


def test_mappings_may_be_a_dict_of_field_to_spec(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    table = make_generic(pg_dsn, pg_schema)
    as_dict = dict(m.split("=", 1) for m in GENERIC_MAP)
    by_dict = wb.archive_postgres(
        pg_dsn, tmp_path / "d", preset="generic", table=table, mappings=as_dict
    )
    by_list = wb.archive_postgres(
        pg_dsn, tmp_path / "l", preset="generic", table=table, mappings=GENERIC_MAP
    )
    query = "select * exclude (recorded_at, recorded_ns) from events order by global_position"
    assert by_dict.rows_archived == by_list.rows_archived == 3
    assert wb.open_archive(tmp_path / "d").sql(query).fetchall() == (
        wb.open_archive(tmp_path / "l").sql(query).fetchall()
    )


def test_a_large_object_payload_is_archived_as_its_content(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """Axon's JPA domain_event_entry on Postgres: Hibernate stores the payload as an oid."""
    table = f"{pg_schema}.domain_event_entry"
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(
            f"create table {table} (global_index bigserial primary key, "
            "aggregate_identifier text, sequence_number bigint, payload_type text, "
            "payload oid, time_stamp text, deleted boolean default false)"
        )
        con.execute(
            f"insert into {table} (aggregate_identifier, sequence_number, payload_type, payload, "
            "time_stamp) values ('card-1', 0, 'CardIssuedEvt', "
            "lo_from_bytea(0, convert_to('{\"amount\": 100}', 'UTF8')), '2024-05-01T10:00:00Z')"
        )
    maps = {
        "global_position": "column:global_index",
        "recorded_at": "column:time_stamp",
        "event_type": "column:payload_type",
        "data": "column:payload",
        "stream": "column:aggregate_identifier",
        "stream_position": "column:sequence_number",
    }
    result = wb.archive_postgres(pg_dsn, tmp_path, preset="generic", table=table, mappings=maps)
    assert result.rows_archived == 1 and not result.problems
    # A column no mapping reads (a soft-delete flag) is said, not dropped silently.
    assert result.left_out == ("deleted",)
    assert "columns no --map reads, not archived: deleted" in result.summary()
    (data,) = wb.open_archive(tmp_path).sql("select data from events").fetchall()[0]
    assert json.loads(data) == {"amount": 100}


def _library_log(dsn: str, schema: str) -> str:
    """A table as PHP stores write them: a version counter, JSON, a binary UUID id."""
    with psycopg.connect(dsn, autocommit=True) as con:
        con.execute(
            f"create table {schema}.messages (no bigserial primary key, aggregate_id bytea, "
            "version int, payload jsonb, event_name text, created_at timestamptz default now())"
        )
        for version in (1, 2):
            con.execute(
                f"insert into {schema}.messages (aggregate_id, version, payload, event_name) "
                "values (%s, %s, %s, 'BasketPickedUp')",
                [uuid.UUID(int=7).bytes, version, json.dumps({"basketId": str(uuid.UUID(int=7))})],
            )
    return f"{schema}.messages"


LIBRARY_MAP = [
    "global_position=column:no",
    "event_type=column:event_name",
    "data=column:payload",
    "recorded_at=column:created_at",
]


def test_a_mapping_slip_is_refused_before_anything_is_written(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """A version counter read as epoch seconds (1970), or a JSON column as an integer (null
    in every row), would be archived for good under a mapping the archive keeps."""
    table = _library_log(pg_dsn, pg_schema)
    mapped = [m for m in LIBRARY_MAP if not m.startswith("recorded_at")]
    with pytest.raises(
        MappingError,
        match=r"recorded_at: none of the first 2 values reads as a time \(such as '1'\)",
    ):
        wb.archive_postgres(
            pg_dsn,
            tmp_path,
            preset="generic",
            table=table,
            mappings=[*mapped, "recorded_at=column:version"],
        )
    with pytest.raises(
        MappingError,
        match=r"column .*messages.payload is jsonb, which holds no integer; a number inside it "
        r"is stream_position=data:PATH",
    ):
        wb.archive_postgres(
            pg_dsn,
            tmp_path,
            preset="generic",
            table=table,
            mappings=[*LIBRARY_MAP, "stream_position=column:payload"],
        )
    with pytest.raises(MappingError, match=r"recorded_at=data:at: .*archive a view"):
        wb.archive_postgres(
            pg_dsn,
            tmp_path,
            preset="generic",
            table=table,
            mappings=[*mapped, "recorded_at=data:at"],
        )
    assert data_files(tmp_path) == []


def test_a_binary_uuid_is_archived_as_the_text_its_payloads_hold(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    table = _library_log(pg_dsn, pg_schema)
    wb.archive_postgres(
        pg_dsn,
        tmp_path,
        preset="generic",
        table=table,
        mappings=[*LIBRARY_MAP, "stream=column:aggregate_id", "stream_position=column:version"],
    )
    rows = archived(tmp_path)
    assert [r["stream"] for r in rows] == [str(uuid.UUID(int=7))] * 2
    assert rows[0]["stream"] == json.loads(rows[0]["data"])["basketId"]


def test_a_map_added_on_a_later_run_is_read_on_the_recorded_preset(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """Without --preset, a run that adds one --map starts from the preset the source was
    archived with (not the default's layout, which this table does not have), and says
    what it adds."""
    table = _library_log(pg_dsn, pg_schema)
    wb.archive_postgres(pg_dsn, tmp_path, preset="generic", table=table, mappings=LIBRARY_MAP)
    with pytest.raises(ArchiveError, match=r"\(it adds stream_position=column:version\)"):
        wb.archive_postgres(
            pg_dsn, tmp_path, table=table, mappings=[*LIBRARY_MAP, "stream_position=column:version"]
        )


def test_a_view_whose_cast_fails_on_a_row_says_to_select_the_column_as_stored(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(
            f"create table {pg_schema}.t (id bigserial primary key, body text, "
            "at timestamptz default now())"
        )
        con.execute(f"insert into {pg_schema}.t (body) values ('{{}}'), ('not json')")
        con.execute(
            f"create view {pg_schema}.v as select id, body::json as body, at from {pg_schema}.t"
        )
    with pytest.raises(
        SourceError,
        match=r"reading postgres:.*\.v: invalid input syntax for type json \(a row's value does "
        r"not cast to json in the table's view or query: select the column as it is stored",
    ):
        wb.archive_postgres(
            pg_dsn, tmp_path, preset="generic", table=f"{pg_schema}.v",
            mappings=["global_position=column:id", "recorded_at=column:at",
                      "event_type=const:A", "data=column:body"],
        )  # fmt: skip


def test_a_partition_of_an_event_table_is_refused_naming_the_table_to_archive(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """Emmett partitions its messages table (active and archived leaves): one leaf's holes
    are the other's events, and would pass as rolled-back positions."""
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(
            f"create table {pg_schema}.msgs (pos bigint, archived bool, kind text, body text, "
            "at timestamptz default now()) partition by list (archived)"
        )
        con.execute(
            f"create table {pg_schema}.msgs_active partition of {pg_schema}.msgs for values in (false)"
        )
        con.execute(
            f"create table {pg_schema}.msgs_archived partition of {pg_schema}.msgs for values in (true)"
        )
        con.execute(
            f"insert into {pg_schema}.msgs values (1, false, 'A', '{{}}'), (2, true, 'A', '{{}}'), (3, false, 'A', '{{}}')"
        )
    maps = ["global_position=column:pos", "recorded_at=column:at", "event_type=column:kind",
            "data=column:body"]  # fmt: skip
    with pytest.raises(
        SourceError,
        match=rf"{pg_schema}.msgs_active is a partition of {pg_schema}.msgs: the events in its "
        rf"other partitions would look like rolled-back positions, .*; archive {pg_schema}.msgs",
    ):
        wb.archive_postgres(
            pg_dsn, tmp_path, preset="generic", table=f"{pg_schema}.msgs_active", mappings=maps
        )
    result = wb.archive_postgres(
        pg_dsn, tmp_path, preset="generic", table=f"{pg_schema}.msgs", mappings=maps
    )
    assert result.rows_archived == 3


def test_tables_whose_names_join_alike_are_two_sources(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """ "a.b".c and a."b.c" are two tables: joined with a dot they were one source, and the
    second's rows were spliced after the first's."""
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f'create schema "{pg_schema}.x"')
        for table in (f'"{pg_schema}.x".c', f'{pg_schema}."x.c"'):
            con.execute(f"create table {table} (seq bigserial primary key, at timestamptz)")
            con.execute(f"insert into {table} (at) values (now()), (now())")
    maps = ["global_position=column:seq", "recorded_at=column:at",
            "event_type=const:Logged", "data=const:{}"]  # fmt: skip
    try:
        first = wb.archive_postgres(
            pg_dsn, tmp_path, preset="generic", table=f'"{pg_schema}.x".c', mappings=maps
        )
        second = wb.archive_postgres(
            pg_dsn, tmp_path, preset="generic", table=f'{pg_schema}."x.c"', mappings=maps
        )
        assert (first.source, second.source) == (
            f'postgres:"{pg_schema}.x".c',
            f'postgres:{pg_schema}."x.c"',
        )
        assert second.rows_archived == 2 and len(wb.open_archive(tmp_path).sources) == 2
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as con:
            con.execute(f'drop schema "{pg_schema}.x" cascade')


def test_a_source_archived_under_its_old_unquoted_name_goes_on_under_it(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """Earlier versions named app."Order.Log" postgres:app.Order.Log: such an archive goes
    on under that name rather than archiving the table again as a second source."""
    from workbench.archive import ArchiverRun, ArchiveWriter

    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(
            f'create table {pg_schema}."Order.Log" (seq bigserial primary key, at timestamptz)'
        )
        con.execute(f'insert into {pg_schema}."Order.Log" (at) values (now()), (now())')
        ((first_at,),) = con.execute(  # as archived: the same row, at the same time
            f'select (extract(epoch from at) * 1000000)::bigint from {pg_schema}."Order.Log" '
            "where seq = 1"
        ).fetchall()
    maps = ["global_position=column:seq", "recorded_at=column:at",
            "event_type=const:Logged", "data=const:{}"]  # fmt: skip
    legacy = f"postgres:{pg_schema}.Order.Log"
    ArchiveWriter(tmp_path, legacy).append(
        pa.table({"global_position": [1], "recorded_at": [first_at], "event_type": ["Logged"]})
    )
    with ArchiverRun(tmp_path, legacy, "archive_postgres") as run:
        run.record(["preset=generic", *maps])
    result = wb.archive_postgres(pg_dsn, tmp_path, table=f'{pg_schema}."Order.Log"')
    assert result.source == legacy and result.rows_archived == 1
    assert wb.open_archive(tmp_path).sources == [legacy]


# ------------------------------------------------------------------ views (README)

RES_DDL = """
create table {s}.event_store_events (
  id bigserial primary key, event_id uuid not null unique, event_type varchar not null,
  metadata jsonb, data jsonb not null, created_at timestamp(6) not null,
  valid_at timestamp(6));
create table {s}.event_store_events_in_streams (
  id bigserial primary key, stream varchar not null, position integer,
  event_id uuid not null references {s}.event_store_events (event_id),
  created_at timestamp(6) not null);
"""


def _readme_view(name: str) -> str:
    """The README's `create view NAME` recipe, as printed there."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    start = readme.index(f"create view {name} as")
    return readme[start : readme.index("```", start)]


def test_the_readme_s_rails_event_store_view_archives_every_event_once(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """Rails Event Store (its ActiveRecord tables, jsonb template): an event linked into
    two streams, one published to no stream, and one whose stream was deleted are each
    archived once (an inner join made the last two holes that looked rolled back)."""
    ids = [uuid.uuid4() for _ in range(5)]
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(RES_DDL.format(s=pg_schema))
        con.execute(f"set search_path to {pg_schema}")
        for i, event_id in enumerate(ids):
            meta = {"correlation_id": f"req-{i}", "timestamp": "2024-05-01T10:00:00Z"}
            con.execute(
                "insert into event_store_events (event_id, event_type, metadata, data, "
                "created_at, valid_at) values (%s, 'OrderPlaced', %s, %s, now(), null)",
                (event_id, json.dumps(meta), json.dumps({"n": i})),
            )
        links = [("Order$1", 0, 0), ("Order$1", 1, 1), ("Order$2", 0, 3), ("$by_type", 0, 3)]
        links.append(("Order$3", 0, 4))
        for stream, position, i in links:
            con.execute(
                "insert into event_store_events_in_streams (stream, position, event_id, "
                "created_at) values (%s, %s, %s, now())",
                (stream, position, ids[i]),
            )  # ids[2]: published to no stream
        con.execute("delete from event_store_events_in_streams where stream = 'Order$3'")
        con.execute(_readme_view("res_events"))
    maps = [f"{f}=column:{f}" for f in ("global_position", "event_id", "event_type", "data")]
    maps += ["recorded_at=column:created_at", "metadata=column:metadata", "stream=column:stream"]
    maps += ["stream_position=column:stream_position", "correlation_id=metadata:correlation_id"]
    result = wb.archive_postgres(
        pg_dsn, tmp_path, preset="generic", table=f"{pg_schema}.res_events", mappings=maps
    )
    assert (result.rows_archived, result.gaps) == (5, [])
    assert result.problems == {"null stream": 2}  # said, not hidden
    rows = archived(tmp_path)
    assert [(r["global_position"], r["stream"], r["stream_position"]) for r in rows] == [
        (1, "Order$1", 0),
        (2, "Order$1", 1),
        (3, None, None),  # published to no stream: an event all the same
        (4, "Order$2", 0),  # linked into two streams: archived once, in its first
        (5, None, None),  # its stream deleted: the event stays
    ]
    assert [r["correlation_id"] for r in rows] == [f"req-{i}" for i in range(5)]
