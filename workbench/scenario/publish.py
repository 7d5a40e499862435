"""Putting a scenario into real stores: a JetStream stream or a Postgres table.

Both keep ``global_position`` exact: JetStream stream sequence == position
(gaps applied afterwards by purge and delete), Postgres rows inserted with
explicit positions. Both need a live server, so the doctest only shows the
summaries' shape.

>>> PublishSummary("S", 3, 2, 5, 6, 0.1).count
3
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import io
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from workbench.errors import SourceError

if TYPE_CHECKING:
    from workbench.scenario.model import Scenario

__all__ = ["PostgresSummary", "PublishSummary", "insert_postgres", "publish_jetstream"]

T = TypeVar("T")

#: The shortest duplicate window NATS accepts. Planted duplicate copies are
#: published after their original's Nats-Msg-Id has left this window, as a
#: producer retrying "too late" does, so the server stores them.
DUPLICATE_WINDOW_S: Final[float] = 0.1


@dataclass(frozen=True)
class PublishSummary:
    """What :func:`publish_jetstream` left in the stream."""

    stream: str
    count: int  # messages stored after the gaps were applied
    first_seq: int
    last_seq: int
    published: int  # messages published, gap positions included
    seconds: float


@dataclass(frozen=True)
class PostgresSummary:
    """What :func:`insert_postgres` inserted, and which positions it could not."""

    table: str
    layout: str
    inserted: int
    #: reason ("non_json", "duplicate") → skipped positions
    skipped: Mapping[str, tuple[int, ...]]


def publish_jetstream(
    scenario: Scenario,
    url: str,
    stream: str,
    *,
    subject_prefix: str = "memories",
    ce_source: str = "/memory-service",
    replace: bool = False,
    chunk: int = 4_000,
    timeout: float = 60.0,
) -> PublishSummary:
    """Create ``stream`` (subjects ``<prefix>.>``) and publish the scenario into it.

    Every position of :attr:`Scenario.history` is published in order on
    ``<prefix>.<event_type>.<stream>`` as a CloudEvents binary-mode message
    (``ce-*`` headers, ``Nats-Msg-Id`` = event id, body = the JSON data or
    the raw non-JSON payload), so stream sequence == ``global_position``.
    Then the retention gap is purged and the deleted ranges are deleted.
    Publishing uses core NATS in chunks of ``chunk`` and waits for the
    stream to store each chunk (current servers drop, silently, what
    overflows a stream's ingest queue). Synchronous; safe to call from a
    notebook, whose event loop is already running.
    """
    return _run_sync(
        _publish(scenario, url, stream, subject_prefix, ce_source, replace, chunk, timeout)
    )


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # Inside a running loop (Jupyter): run on a thread with its own loop.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _publish(
    scenario: Scenario,
    url: str,
    stream: str,
    prefix: str,
    ce_source: str,
    replace: bool,
    chunk: int,
    timeout: float,
) -> PublishSummary:
    import nats
    from nats.js.errors import NotFoundError

    began = time.monotonic()
    h = scenario.history
    try:
        nc = await nats.connect(url, connect_timeout=5, allow_reconnect=False)
    except Exception as exc:
        raise SourceError(f"cannot connect to NATS at {url}: {exc}") from None
    try:
        js = nc.jetstream()
        try:
            await js.stream_info(stream)
            if not replace:
                raise SourceError(
                    f"stream {stream} already exists; pass replace=True to recreate it"
                )
            await js.delete_stream(stream)
        except NotFoundError:
            pass
        await js.add_stream(
            name=stream, subjects=[f"{prefix}.>"], duplicate_window=DUPLICATE_WINDOW_S
        )

        positions = h.column("global_position").to_numpy()
        ids = h.column("event_id").to_pylist()
        types = h.column("event_type").to_pylist()
        streams = h.column("stream").to_pylist()
        times = pc.strftime(h.column("occurred_at"), format="%Y-%m-%dT%H:%M:%SZ").to_pylist()
        corr = h.column("correlation_id").to_pylist()
        cause = h.column("causation_id").to_pylist()
        versions = h.column("schema_version").cast(pa.string()).to_pylist()
        data = h.column("data").to_pylist()
        raw = h.column("payload").to_pylist()
        # Copy position → original position: copies wait out the duplicate window.
        original_of = {
            p[i]: p[0] for p in scenario.truth.duplicates.values() for i in range(1, len(p))
        }
        acks: list[bytes] = []

        async def on_ack(msg: Any) -> None:
            acks.append(msg.data)

        inbox = nc.new_inbox()
        await nc.subscribe(inbox, cb=on_ack)
        # (position, time): the stream held every sequence up to position from that time on.
        confirmations: list[tuple[int, float]] = [(0, time.monotonic())]
        sent_at: dict[int, float] = {}  # when each duplicated original was sent
        originals = set(original_of.values())
        if int(positions[0]) != 1:
            raise SourceError("history must start at position 1")
        fast = _fast_publisher(nc)
        for i, pos in enumerate(positions.tolist()):
            body = data[i].encode() if data[i] is not None else raw[i]
            header_block = (
                f"NATS/1.0\r\nNats-Msg-Id: {ids[i]}\r\nce-specversion: 1.0\r\nce-id: {ids[i]}\r\n"
                f"ce-type: {types[i]}\r\nce-source: {ce_source}\r\nce-time: {times[i]}\r\n"
                f"ce-subject: {streams[i]}\r\nce-correlationid: {corr[i]}\r\n"
                f"ce-causationid: {cause[i]}\r\nce-schemaversion: {versions[i]}\r\n"
                f"content-type: application/{'json' if data[i] is not None else 'octet-stream'}\r\n\r\n"
            )
            subject = f"{prefix}.{types[i]}.{streams[i]}"
            original = original_of.get(pos)
            if original is None:
                await fast(subject, header_block.encode(), body)
                if pos in originals:
                    sent_at[pos] = time.monotonic()
            elif _stored_since(confirmations, original) < time.monotonic() - 2 * DUPLICATE_WINDOW_S:
                # Stored long enough ago that its id has left the window: no need to wait.
                await nc.publish(subject, body, reply=inbox, headers=_parse_headers(header_block))
            else:
                await _publish_copy(
                    nc, js, subject, body, _parse_headers(header_block), pos, sent_at[original]
                )
            if pos % chunk == 0 or i == len(positions) - 1:
                # Pipelined: keep at most two chunks in the server's ingest queue.
                await nc.flush()
                done = max(pos - chunk, confirmations[-1][0])
                await _wait_for(js, stream, done, began + timeout, acks)
                confirmations.append((done, time.monotonic()))
        await _wait_for(js, stream, len(positions), began + timeout, acks)

        retention = [g for g in scenario.truth.gaps if g.reason == "retention"]
        for g in retention:
            await js.purge_stream(stream, seq=g.last + 1)  # removes every sequence below
        for g in scenario.truth.gaps:
            if g.reason != "retention":
                for seq in range(g.first, g.last + 1):
                    await js.delete_msg(stream, seq)
        state = (await js.stream_info(stream)).state
        if state.messages != scenario.events.num_rows:
            raise SourceError(
                f"stream {stream} holds {state.messages} messages, expected {scenario.events.num_rows}"
            )
        return PublishSummary(
            stream,
            state.messages,
            state.first_seq,
            state.last_seq,
            len(positions),
            time.monotonic() - began,
        )
    finally:
        await nc.close()


def _fast_publisher(nc: Any) -> Callable[[str, bytes, bytes], Awaitable[None]]:
    """``publish(subject, header_block, body)`` for the bulk of the messages.

    nats-py re-validates and re-encodes every header of every message, which
    costs more than the rest of the loop; our header values are known to be
    clean, so the HPUB frame is built here and queued exactly as nats-py's
    own publish does. Falls back to the public API if its internals change.
    """
    if not all(hasattr(nc, a) for a in ("_send_command", "_flush_pending", "_flush_queue")):

        async def slow(subject: str, header_block: bytes, body: bytes) -> None:
            await nc.publish(subject, body, headers=_parse_headers(header_block.decode()))

        return slow

    async def fast(subject: str, header_block: bytes, body: bytes) -> None:
        frame = f"HPUB {subject} {len(header_block)} {len(header_block) + len(body)}\r\n".encode()
        await nc._send_command(frame + header_block + body + b"\r\n")
        if nc._flush_queue is not None and nc._flush_queue.empty():
            await nc._flush_pending()

    return fast


def _stored_since(confirmations: list[tuple[int, float]], position: int) -> float:
    """When the stream was first known to hold ``position`` (infinity: not yet)."""
    i = bisect.bisect_left(confirmations, (position, -math.inf))
    return confirmations[i][1] if i < len(confirmations) else math.inf


def _parse_headers(block: str) -> dict[str, str]:
    lines = block.split("\r\n")[1:]
    return dict(line.split(": ", 1) for line in lines if line)


async def _publish_copy(
    nc: Any,
    js: Any,
    subject: str,
    body: bytes,
    headers: dict[str, str],
    pos: int,
    original_sent: float,
) -> None:
    """Publish a duplicate copy once the server has forgotten the original's id.

    Waits out the duplicate window since the original was sent, then
    publishes with an ack; a ``duplicate`` ack (the server's purge timer ran
    late) stores nothing, so waiting and retrying keeps sequences exact.
    """
    for _attempt in range(50):
        delay = original_sent + DUPLICATE_WINDOW_S * 1.5 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        ack = await js.publish(subject, body, headers=headers, timeout=10)
        if not ack.duplicate:
            if ack.seq != pos:
                raise SourceError(
                    f"copy of position {pos} stored at sequence {ack.seq}; a message was lost"
                )
            return
        original_sent = time.monotonic() - DUPLICATE_WINDOW_S
    raise SourceError(f"server kept deduplicating the copy at position {pos}")


async def _wait_for(js: Any, stream: str, last: int, deadline: float, acks: list[bytes]) -> None:
    """Wait until the stream has stored every sequence up to ``last``."""
    while True:
        if any(b'"duplicate":true' in ack for ack in acks):
            raise SourceError(f"the server deduplicated a planted duplicate copy in {stream}")
        acks.clear()
        state = (await js.stream_info(stream)).state
        if state.messages != state.last_seq:  # nothing is deleted before the gaps are applied
            raise SourceError(
                f"stream {stream} lost messages: {state.messages} up to {state.last_seq}"
            )
        if state.last_seq >= last:
            return
        if time.monotonic() > deadline:
            raise SourceError(f"timed out: stream {stream} at sequence {state.last_seq} of {last}")
        await asyncio.sleep(0.002)


_PG_TYPES: Final[Mapping[pa.DataType, str]] = {
    pa.string(): "text",
    pa.int64(): "bigint",
    pa.int32(): "integer",
    pa.timestamp("us", tz="UTC"): "timestamptz",
    pa.binary(): "bytea",
}


def insert_postgres(
    scenario: Scenario,
    dsn: str,
    *,
    layout: Literal["message-db", "generic"] = "message-db",
    table: str | None = None,
) -> PostgresSummary:
    """Insert :attr:`Scenario.events` into Postgres with COPY, positions kept.

    ``message-db``: the Message DB table (default ``message_store.messages``,
    created if missing with its unique indexes on ``id`` and
    ``(stream_name, position)``); ``position`` = stream_position, ``time`` =
    recorded_at, metadata with Message DB's keys (``correlationStreamName``,
    ``causationMessageGlobalPosition`` / ``StreamName`` / ``Position``,
    ``schemaVersion``) plus ``correlationId`` / ``causationId``. Rows that
    cannot go there are skipped and listed in the summary: non-JSON payloads
    (``data`` is jsonb) and duplicate copies (``id`` is unique).
    ``generic``: one column per envelope field (default ``public.wb_events``);
    every row goes in.
    """
    try:
        import psycopg
        from psycopg import sql
    except ImportError:  # pragma: no cover - psycopg is a test dependency
        raise SourceError("insert_postgres needs psycopg: pip install 'psycopg[binary]'") from None
    if layout not in ("message-db", "generic"):
        raise ValueError(f"unknown layout {layout!r}; 'message-db' or 'generic'")
    name = table or ("message_store.messages" if layout == "message-db" else "public.wb_events")
    schema, _, bare = name.rpartition(".")
    ident = sql.Identifier(*([schema] if schema else []), bare)
    frame = pl.from_arrow(scenario.events)
    assert isinstance(frame, pl.DataFrame)
    skipped: dict[str, tuple[int, ...]] = {}
    if layout == "message-db":
        frame, skipped = _message_db_rows(frame)
        ddl = sql.SQL(
            "create table if not exists {t} ("
            " global_position bigserial primary key,"
            " position bigint not null,"
            " time timestamp without time zone default (now() at time zone 'utc') not null,"
            " stream_name text not null, type text not null,"
            " data jsonb, metadata jsonb, id uuid not null);"
            "create unique index if not exists {by_id} on {t} (id);"
            "create unique index if not exists {by_stream} on {t} (stream_name, position)"
        ).format(
            t=ident, by_id=sql.Identifier(f"{bare}_id"), by_stream=sql.Identifier(f"{bare}_stream")
        )
    else:
        frame = frame.with_columns(
            pl.when(pl.col("payload").is_not_null())
            .then(pl.lit("\\x") + pl.col("payload").bin.encode("hex"))
            .alias("payload")
        )
        columns = [
            sql.SQL("{} {}{}").format(
                sql.Identifier(f.name),
                sql.SQL(_PG_TYPES[f.type]),
                sql.SQL(
                    " primary key"
                    if f.name == "global_position"
                    else (" not null" if not f.nullable else "")
                ),
            )
            for f in scenario.events.schema
        ]
        ddl = sql.SQL("create table if not exists {t} ({cols})").format(
            t=ident, cols=sql.SQL(", ").join(columns)
        )
    # Naive UTC text in the CSV; the session time zone makes timestamptz read it as UTC.
    frame = frame.with_columns(pl.col(pl.Datetime).dt.replace_time_zone(None))
    csv = io.BytesIO()
    frame.write_csv(csv, include_header=False, datetime_format="%Y-%m-%d %H:%M:%S%.6f")
    copy = sql.SQL("copy {t} ({cols}) from stdin (format csv)").format(
        t=ident, cols=sql.SQL(", ").join(sql.Identifier(c) for c in frame.columns)
    )
    try:
        with psycopg.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("set time zone 'UTC'")
            if schema:
                cur.execute(
                    sql.SQL("create schema if not exists {}").format(sql.Identifier(schema))
                )
            cur.execute(ddl)
            with cur.copy(copy) as out:
                out.write(csv.getbuffer())
            if layout == "message-db":
                # Explicit positions bypass the bigserial; move it past them for later writers.
                cur.execute(
                    sql.SQL(
                        "select setval(pg_get_serial_sequence(%s, 'global_position'),"
                        " greatest((select max(global_position) from {t}), 1))"
                    ).format(t=ident),
                    (name,),
                )
    except psycopg.Error as exc:
        raise SourceError(
            f"postgres insert into {name} failed: {str(exc).splitlines()[0]}"
        ) from None
    return PostgresSummary(name, layout, frame.height, skipped)


def _message_db_rows(frame: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, tuple[int, ...]]]:
    """Message DB columns and metadata; drop what its constraints reject."""
    first = frame.get_column("event_id").is_first_distinct()
    json_ok = frame.get_column("data").is_not_null()
    skipped = {
        "non_json": _positions(frame.filter(~json_ok)),
        "duplicate": _positions(frame.filter(json_ok & ~first)),
    }
    causes = frame.filter(first).select(
        pl.col("event_id").alias("causation_id"),
        pl.col("global_position").alias("causationMessageGlobalPosition"),
        pl.col("stream").alias("causationMessageStreamName"),
        pl.col("stream_position").alias("causationMessagePosition"),
    )
    rows = frame.filter(json_ok & first).join(
        causes, on="causation_id", how="left", maintain_order="left"
    )
    metadata = pl.struct(
        # The request is a command stream of its own, never archived.
        (pl.lit("memoryRequest-") + pl.col("correlation_id")).alias("correlationStreamName"),
        "causationMessageGlobalPosition",
        "causationMessageStreamName",
        "causationMessagePosition",
        pl.col("schema_version").alias("schemaVersion"),
        pl.col("correlation_id").alias("correlationId"),
        pl.col("causation_id").alias("causationId"),
    ).struct.json_encode()
    out = rows.select(
        "global_position",
        pl.col("stream_position").alias("position"),
        pl.col("recorded_at").alias("time"),
        pl.col("stream").alias("stream_name"),
        pl.col("event_type").alias("type"),
        "data",
        metadata.alias("metadata"),
        pl.col("event_id").alias("id"),
    )
    return out, skipped


def _positions(frame: pl.DataFrame) -> tuple[int, ...]:
    return tuple(int(p) for p in np.sort(frame.get_column("global_position").to_numpy()))
