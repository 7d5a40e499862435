"""The documented tables of Message DB and Marten, and writers that write the way they do.

Other Postgres tests import these helpers; the tests here check that the
helpers reproduce the stores' own behaviour (per-stream positions, sequences).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
import pytest

# Message DB (message-db 1.3, database/tables/messages.sql and indexes).
MESSAGE_DB_DDL = """
create table {schema}.messages (
  global_position bigserial not null,
  position bigint not null,
  time timestamp without time zone default (now() at time zone 'utc') not null,
  stream_name text not null,
  type text not null,
  data jsonb,
  metadata jsonb,
  id uuid not null default gen_random_uuid()
);
alter table {schema}.messages add primary key (global_position) not deferrable initially immediate;
create unique index messages_id on {schema}.messages (id);
create unique index messages_stream on {schema}.messages (stream_name, position);
-- write_message as Message DB does it: lock the stream, next position = stream version + 1.
create function {schema}.write_message(
  id varchar, stream_name varchar, type varchar, data jsonb,
  metadata jsonb default null, expected_version bigint default null
) returns bigint language plpgsql as $$
declare
  _stream_version bigint;
  _next_position bigint;
begin
  perform pg_advisory_xact_lock(hashtext(stream_name));
  select coalesce(max(m.position), -1) into _stream_version
    from {schema}.messages m where m.stream_name = write_message.stream_name;
  if expected_version is not null and expected_version != _stream_version then
    raise exception 'Wrong expected version: % (Stream: %, Stream Version: %)',
      expected_version, stream_name, _stream_version;
  end if;
  _next_position := _stream_version + 1;
  insert into {schema}.messages (id, stream_name, position, type, data, metadata)
    values (write_message.id::uuid, write_message.stream_name, _next_position,
            write_message.type, write_message.data, write_message.metadata);
  return _next_position;
end;
$$;
"""

# Marten 7 (mt_events with the optional metadata columns enabled).
MARTEN_DDL = """
create sequence {schema}.mt_events_sequence;
create table {schema}.mt_events (
  seq_id bigint not null primary key default nextval('{schema}.mt_events_sequence'),
  id uuid not null,
  stream_id uuid,
  version bigint not null,
  data jsonb not null,
  type varchar(500) not null,
  timestamp timestamptz not null default (transaction_timestamp()),
  tenant_id varchar default '*DEFAULT*',
  mt_dotnet_type varchar,
  correlation_id varchar,
  causation_id varchar,
  headers jsonb,
  is_archived bool default false
);
"""


def create_message_db(dsn: str, schema: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as con:
        con.execute(MESSAGE_DB_DDL.format(schema=schema))
    return f"{schema}.messages"


def create_marten(dsn: str, schema: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as con:
        con.execute(MARTEN_DDL.format(schema=schema))
    return f"{schema}.mt_events"


def write_message(
    con: psycopg.Connection[Any],
    schema: str,
    stream: str,
    type_: str,
    data: dict[str, Any],
    metadata: dict[str, Any] | None = None,
    message_id: str | None = None,
) -> str:
    """One ``write_message`` call; returns the message id."""
    message_id = message_id or str(uuid.uuid4())
    con.execute(
        f"select {schema}.write_message(%s, %s, %s, %s::jsonb, %s::jsonb)",
        (message_id, stream, type_, json.dumps(data), json.dumps(metadata) if metadata else None),
    )
    return message_id


def append_marten(
    con: psycopg.Connection[Any],
    schema: str,
    stream_id: uuid.UUID,
    version: int,
    type_: str,
    data: dict[str, Any],
    **extra: Any,
) -> uuid.UUID:
    """Append one event as Marten's quick-append does (sequence default, explicit version)."""
    event_id = uuid.uuid4()
    columns = ["id", "stream_id", "version", "data", "type", "mt_dotnet_type", *extra]
    values = [
        event_id,
        stream_id,
        version,
        json.dumps(data),
        type_,
        f"Memories.{type_.title().replace('_', '')}, Memories",
        *extra.values(),
    ]
    con.execute(
        f"insert into {schema}.mt_events ({', '.join(columns)}) "
        f"values ({', '.join(['%s'] * len(values))})",
        values,
    )
    return event_id


@pytest.mark.postgres
def test_message_db_writer_numbers_streams_like_message_db(pg_dsn: str, pg_schema: str) -> None:
    create_message_db(pg_dsn, pg_schema)
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        for stream in ("memory-1", "memory-2", "memory-1"):
            write_message(con, pg_schema, stream, "MemoryCreated", {"n": 1})
        rows = con.execute(
            f"select global_position, stream_name, position from {pg_schema}.messages order by 1"
        ).fetchall()
    assert rows == [(1, "memory-1", 0), (2, "memory-2", 0), (3, "memory-1", 1)]
