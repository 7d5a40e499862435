"""The ``emmett`` preset against Emmett's own PostgreSQL schema, written the way Emmett writes.

The DDL is Emmett 0.42's (``@event-driven-io/emmett-postgresql``), taken with
``pg_dump --schema-only`` from a database Emmett created itself, trimmed to
what the preset reads and what appending needs, and moved from ``public``
into the test's schema. Partitions are made by Emmett's own
``emt_add_table_partition`` (as Emmett makes ``emt:default`` and any other),
and events are appended through its ``emt_append_to_stream``, as its
``appendToStream`` does, so CI needs no Node.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

import workbench as wb
from workbench.cli import run
from workbench.errors import SourceError
from workbench.sources.postgres import PRESETS

pytestmark = pytest.mark.postgres

# pg_dump --schema-only of Emmett 0.42's schema ("public." -> "{schema}.", trailing blanks
# stripped); processors, projections and their functions left out: the preset never reads them.
EMMETT_DDL = """
CREATE FUNCTION {schema}.emt_sanitize_name(input_name text) RETURNS text
    LANGUAGE plpgsql
    AS $$
    BEGIN
        RETURN REGEXP_REPLACE(input_name, '[^a-zA-Z0-9_]', '_', 'g');
    END;
    $$;

CREATE FUNCTION {schema}.emt_add_table_partition(tablename text, partition_name text) RETURNS void
    LANGUAGE plpgsql
    AS $$
  DECLARE
    v_main_partiton_name     TEXT;
    v_active_partiton_name   TEXT;
    v_archived_partiton_name TEXT;
  BEGIN
      v_main_partiton_name     := emt_sanitize_name(tableName || '_' || partition_name);
      v_active_partiton_name   := emt_sanitize_name(v_main_partiton_name   || '_active');
      v_archived_partiton_name := emt_sanitize_name(v_main_partiton_name   || '_archived');


      -- create default partition
      EXECUTE format('
          CREATE TABLE IF NOT EXISTS %I PARTITION OF %I
          FOR VALUES IN (%L) PARTITION BY LIST (is_archived);',
          v_main_partiton_name, tableName, partition_name
      );

      EXECUTE format('
          CREATE TABLE IF NOT EXISTS %I PARTITION OF %I
          FOR VALUES IN (FALSE);',
          v_active_partiton_name, v_main_partiton_name
      );

      EXECUTE format('
          CREATE TABLE IF NOT EXISTS %I PARTITION OF %I
          FOR VALUES IN (TRUE);',
          v_archived_partiton_name, v_main_partiton_name
      );
  END;
  $$;

CREATE FUNCTION {schema}.emt_append_to_stream(v_message_ids text[], v_messages_data jsonb[], v_messages_metadata jsonb[], v_message_schema_versions text[], v_message_types text[], v_message_kinds text[], v_stream_id text, v_stream_type text, v_expected_stream_position bigint DEFAULT NULL::bigint, v_partition text DEFAULT {schema}.emt_sanitize_name('default_partition'::text)) RETURNS TABLE(success boolean, next_stream_position bigint, global_positions bigint[], transaction_id xid8)
    LANGUAGE plpgsql
    AS $$
  DECLARE
      v_next_stream_position bigint;
      v_position bigint;
      v_updated_rows int;
      v_transaction_id xid8;
      v_global_positions bigint[];
  BEGIN
      v_transaction_id := pg_current_xact_id();

      IF v_expected_stream_position IS NULL THEN
          SELECT COALESCE(
            (SELECT stream_position
            FROM emt_streams
            WHERE stream_id = v_stream_id
              AND partition = v_partition
              AND is_archived = FALSE
            LIMIT 1),
            0
        ) INTO v_expected_stream_position;
      END IF;

      v_next_stream_position := v_expected_stream_position + array_upper(v_messages_data, 1);

      IF v_expected_stream_position = 0 THEN
          INSERT INTO emt_streams
              (stream_id, stream_position, partition, stream_type, stream_metadata, is_archived)
          VALUES
              (v_stream_id, v_next_stream_position, v_partition, v_stream_type, '{{}}', FALSE);
      ELSE
          UPDATE emt_streams as s
          SET stream_position = v_next_stream_position
          WHERE stream_id = v_stream_id AND stream_position = v_expected_stream_position AND partition = v_partition AND is_archived = FALSE;

          get diagnostics v_updated_rows = row_count;

          IF v_updated_rows = 0 THEN
              RETURN QUERY SELECT FALSE, NULL::bigint, NULL::bigint[], NULL::xid8;
              RETURN;
          END IF;
      END IF;

      WITH ev AS (
          SELECT row_number() OVER () + v_expected_stream_position AS stream_position,
                message_data,
                message_metadata,
                schema_version,
                message_id,
                message_type,
                message_kind
          FROM (
              SELECT *
              FROM
                unnest(v_message_ids, v_messages_data, v_messages_metadata, v_message_schema_versions, v_message_types, v_message_kinds)
              AS message(message_id, message_data, message_metadata, schema_version, message_type, message_kind)
          ) AS message
      ),
      all_messages_insert AS (
          INSERT INTO emt_messages
              (stream_id, stream_position, partition, message_data, message_metadata, message_schema_version, message_type, message_kind, message_id, transaction_id)
          SELECT
              v_stream_id, ev.stream_position, v_partition, ev.message_data, ev.message_metadata, ev.schema_version, ev.message_type, ev.message_kind, ev.message_id, v_transaction_id
          FROM ev
          RETURNING global_position
      )
      SELECT
          array_agg(global_position ORDER BY global_position) INTO v_global_positions
      FROM
          all_messages_insert;

      RETURN QUERY SELECT TRUE, v_next_stream_position, v_global_positions, v_transaction_id;
  END;
  $$;

CREATE SEQUENCE {schema}.emt_global_message_position
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

CREATE TABLE {schema}.emt_streams (
    stream_id text NOT NULL,
    stream_position bigint NOT NULL,
    partition text DEFAULT 'emt:default'::text NOT NULL,
    stream_type text NOT NULL,
    stream_metadata jsonb NOT NULL,
    is_archived boolean DEFAULT false NOT NULL
)
PARTITION BY LIST (partition);

CREATE TABLE {schema}.emt_messages (
    stream_position bigint NOT NULL,
    global_position bigint DEFAULT nextval('{schema}.emt_global_message_position'::regclass),
    transaction_id xid8 NOT NULL,
    created timestamp with time zone DEFAULT now() NOT NULL,
    is_archived boolean DEFAULT false NOT NULL,
    message_kind character varying(1) DEFAULT 'E'::character varying NOT NULL,
    stream_id text NOT NULL,
    partition text DEFAULT 'emt:default'::text NOT NULL,
    message_schema_version text NOT NULL,
    message_id text NOT NULL,
    message_type text NOT NULL,
    message_data jsonb NOT NULL,
    message_metadata jsonb NOT NULL
)
PARTITION BY LIST (partition);

ALTER TABLE ONLY {schema}.emt_messages
    ADD CONSTRAINT emt_messages_pkey PRIMARY KEY (stream_id, stream_position, partition, is_archived);

ALTER TABLE ONLY {schema}.emt_streams
    ADD CONSTRAINT emt_streams_pkey PRIMARY KEY (stream_id, partition, is_archived);

CREATE UNIQUE INDEX idx_streams_unique ON ONLY {schema}.emt_streams USING btree (stream_id, partition, is_archived) INCLUDE (stream_position);
"""

#: Emmett's partition when none is given (``defaultTag``).
DEFAULT = "emt:default"


def connect(dsn: str, schema: str) -> psycopg.Connection[Any]:
    """A session that finds Emmett's tables as Emmett's functions name them (unqualified)."""
    con = psycopg.connect(dsn, autocommit=True)
    con.execute(f'set search_path to "{schema}"')
    return con


def add_partition(con: psycopg.Connection[Any], partition: str) -> None:
    """What Emmett's ``emt_add_partition`` does for the two tables the preset touches."""
    for table in ("emt_messages", "emt_streams"):
        con.execute("select emt_add_table_partition(%s, %s)", (table, partition))


def create_emmett(dsn: str, schema: str) -> str:
    with connect(dsn, schema) as con:
        con.execute(EMMETT_DDL.format(schema=schema))
        add_partition(con, DEFAULT)  # Emmett's schema setup creates this one
    return f"{schema}.emt_messages"


def append(
    con: psycopg.Connection[Any],
    stream: str,
    messages: list[tuple[str, dict[str, Any], dict[str, Any]]],
    *,
    kind: str = "E",
    partition: str = DEFAULT,
) -> tuple[list[str], list[int]]:
    """``appendToStream``'s SQL: one call of ``emt_append_to_stream`` per append, schema
    version '1', the metadata without Emmett's messageId (it becomes message_id)."""
    ids = [str(uuid.uuid4()) for _ in messages]
    ((ok, _, positions, _),) = con.execute(
        "select * from emt_append_to_stream(%s::text[], %s::text[]::jsonb[], "
        "%s::text[]::jsonb[], %s::text[], %s::text[], %s::text[], %s, %s, null, %s)",
        (
            ids,
            [json.dumps(data) for _, data, _ in messages],
            [json.dumps(meta) for _, _, meta in messages],
            ["1"] * len(messages),
            [kind_ for kind_, _, _ in messages],
            [kind] * len(messages),
            stream,
            "shopping_cart",
            partition,
        ),
    ).fetchall()
    assert ok
    return ids, positions


def archive_stream(con: psycopg.Connection[Any], stream: str, partition: str = DEFAULT) -> None:
    """Archiving a stream in Emmett: an UPDATE that moves its rows to the _archived partition."""
    for table in ("emt_messages", "emt_streams"):
        con.execute(
            f"update {table} set is_archived = true where stream_id = %s and partition = %s",
            (stream, partition),
        )


def archived(root: Path) -> list[dict[str, Any]]:
    return (
        wb.open_archive(root).sql("select * from events order by global_position").pl().to_dicts()
    )


def test_emmett_preset_reads_every_partition_archived_streams_and_resumes(
    pg_dsn: str, pg_schema: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = create_emmett(pg_dsn, pg_schema)
    meta = {"correlationId": "req-1", "causationId": "cmd-1", "userId": "u1"}
    with connect(pg_dsn, pg_schema) as con:
        add_partition(con, "tenant_b")
        with con.transaction():  # one append, one transaction: positions 1, 2
            ids, positions = append(
                con,
                "cart-1",
                [("ItemAdded", {"sku": "a"}, meta), ("ItemAdded", {"sku": "b"}, {})],
            )
        assert positions == [1, 2]
        append(con, "cart-2", [("AddItem", {"sku": "c"}, {})], kind="C")  # a command: 3
        with pytest.raises(psycopg.errors.RaiseException), con.transaction():
            append(con, "cart-3", [("ItemAdded", {}, {})])  # draws 4, then rolls back
            con.execute("do $$ begin raise exception 'inline projection failed'; end $$")
        append(con, "cart-old", [("CartOpened", {}, {})])  # 5, archived below
        archive_stream(con, "cart-old")
        # The same stream id in another partition: another stream, at 6.
        append(con, "cart-1", [("ItemAdded", {"sku": "z"}, {})], partition="tenant_b")
        row = con.execute(
            "select created, transaction_id::text from emt_messages where global_position = 1"
        ).fetchone()
        assert row is not None
        created, xid = row

    argv = ["archive", "postgres", "--dsn", pg_dsn, "--preset", "emmett", "--table", table]
    assert run([*argv, "--out", str(tmp_path)]) == 0
    summary = capsys.readouterr().out
    assert "archived 5 rows" in summary and "1 position(s) in 1 hole(s)" in summary, summary
    assert "not mapped" not in summary and "problems" not in summary, summary

    rows = archived(tmp_path)
    assert [r["global_position"] for r in rows] == [1, 2, 3, 5, 6]
    first = rows[0]
    assert (first["event_id"], first["event_type"], first["schema_version"]) == (
        ids[0],
        "ItemAdded",
        1,
    )
    assert (first["stream"], first["stream_position"]) == ("cart-1", 1)
    assert (first["correlation_id"], first["causation_id"]) == ("req-1", "cmd-1")
    assert json.loads(first["data"]) == {"sku": "a"}
    assert json.loads(first["metadata"]) == {
        **meta,
        "partition": DEFAULT,
        "is_archived": False,
        "message_kind": "E",
        "transaction_id": xid,
    }
    # created: the appending transaction's start, shared by its events.
    assert first["recorded_at"] == created == rows[1]["recorded_at"]
    assert first["occurred_at"] is None
    assert rows[1]["correlation_id"] is None and rows[1]["stream_position"] == 2
    assert json.loads(rows[2]["metadata"])["message_kind"] == "C"  # commands are kept
    assert rows[2]["event_type"] == "AddItem"
    old = rows[3]  # read from emt_messages_emt_default_archived
    assert (old["stream"], json.loads(old["metadata"])["is_archived"]) == ("cart-old", True)
    assert (rows[4]["stream"], rows[4]["stream_position"]) == ("tenant_b/cart-1", 1)
    gaps = wb.open_archive(tmp_path).gaps().positions.rows(named=True)
    assert [(g["first_missing"], g["last_missing"], g["reason"]) for g in gaps] == [
        (4, 4, "rolled-back")
    ]

    # The stream holding the archive's last row is archived (its row moves partition,
    # same position), then more is appended: resuming finds that row and goes on.
    with connect(pg_dsn, pg_schema) as con:
        archive_stream(con, "cart-1", "tenant_b")
        append(con, "cart-1", [("ItemRemoved", {"sku": "a"}, {})])  # 7, cart-1 position 3
        append(con, "cart-2", [("CartConfirmed", {}, {"correlationId": "req-2"})])  # 8
    again = wb.archive_postgres(pg_dsn, tmp_path, preset="emmett", table=table)
    assert (again.rows_archived, again.last_position, again.gaps) == (2, 8, [])
    assert again.unmapped == () and not again.problems
    rows = archived(tmp_path)
    assert [r["global_position"] for r in rows] == [1, 2, 3, 5, 6, 7, 8]
    assert (rows[5]["stream"], rows[5]["stream_position"]) == ("cart-1", 3)
    assert rows[6]["correlation_id"] == "req-2"
    assert json.loads(rows[4]["metadata"])["is_archived"] is False  # as it was when archived
    assert wb.archive_postgres(pg_dsn, tmp_path, preset="emmett", table=table).rows_archived == 0


def test_emmett_preset_defaults_and_overrides(pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    """Default table public.emt_messages, no settle grace (positions are drawn by the
    inserting transaction); correlation/causation keys are a convention --map replaces."""
    assert (PRESETS["emmett"].default_table, PRESETS["emmett"].settle_grace) == (
        "public.emt_messages",
        0.0,
    )
    table = create_emmett(pg_dsn, pg_schema)
    with connect(pg_dsn, pg_schema) as con:
        append(con, "cart-9", [("ItemAdded", {}, {"traceId": "t-1", "correlationId": "x"})])
    result = wb.archive_postgres(
        pg_dsn, tmp_path, preset="emmett", table=table, mappings=["correlation_id=metadata:traceId"]
    )
    assert result.rows_archived == 1
    assert archived(tmp_path)[0]["correlation_id"] == "t-1"
    with pytest.raises(SourceError, match="column global_position not found in"):
        wb.archive_postgres(
            pg_dsn, tmp_path / "other", preset="emmett", table=f"{pg_schema}.emt_streams"
        )
