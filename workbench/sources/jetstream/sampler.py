"""Sampling a stream's state and its consumers' progress over time, for lag charts.

Every ``every`` seconds for ``duration`` seconds, one row per stream into the
archive's ``stream_samples`` and one per consumer into ``consumer_samples``
(schemas :data:`workbench.archive.STREAM_SAMPLE_SCHEMA` and
:data:`~workbench.archive.CONSUMER_SAMPLE_SCHEMA`), appended every few
seconds so that an interrupted run keeps what it sampled.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import os
import re
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from workbench._text import as_text
from workbench.archive import CONSUMER_SAMPLE_SCHEMA, STREAM_SAMPLE_SCHEMA, append_records
from workbench.errors import SourceError
from workbench.sources.jetstream import _client
from workbench.sources.jetstream._auth import NatsAuth, nats_auth
from workbench.sources.result import RunResult

__all__ = ["LagSampleResult", "sample_jetstream", "server_time", "stream_sample"]

_APPEND_EVERY = 10.0  # seconds of samples per side-table file


@dataclass(repr=False)
class LagSampleResult(RunResult):
    """The samples one ``sample_jetstream`` run took (also written to the archive)."""

    stream: str
    out: str
    streams: pl.DataFrame
    consumers: pl.DataFrame
    #: Consumers deleted while sampling (sampled until they went; ephemeral ones come and go).
    gone: list[str] = field(default_factory=list)

    @property
    def samples(self) -> int:
        """Number of sampling instants."""
        return self.streams.height

    def df(self) -> pl.DataFrame:
        """Consumer samples: one row per consumer and instant."""
        return self.consumers

    @as_text
    def summary(self) -> str:
        """One line for humans."""
        names = sorted(set(self.consumers["consumer"].to_list())) if self.consumers.height else []
        gone = f"; gone while sampling: {', '.join(self.gone)}" if self.gone else ""
        return (
            f"jetstream:{self.stream}: {self.samples} sample(s) of the stream and "
            f"{len(names)} consumer(s) ({', '.join(names) or 'none'}){gone}"
        )

    def _repr_html_(self) -> str:
        if not self.consumers.height:
            return f"<div><b>{html.escape(str(self))}</b></div>"
        latest = (
            self.consumers.sort("sampled_at")
            .group_by("consumer", maintain_order=True)
            .last()
            .select("consumer", "num_pending", "num_ack_pending", "num_redelivered")
        )
        return f"<div><b>{html.escape(str(self))}</b>{latest._repr_html_()}</div>"


def sample_jetstream(
    server: str,
    stream: str,
    out: str | os.PathLike[str],
    *,
    consumers: Iterable[str] | None = None,
    every: float = 1.0,
    duration: float = 60.0,
    progress: Callable[[int], None] | None = None,
    tls: ssl.SSLContext | None = None,
    creds: str | os.PathLike[str] | None = None,
    nkey: str | os.PathLike[str] | None = None,
) -> LagSampleResult:
    """Sample ``stream`` and its consumers (all of them when ``consumers`` is None).

    ``progress`` is called with the number of samples taken so far; ``tls``
    connects over TLS (see :func:`~workbench.sources.jetstream.tls_context`);
    ``creds`` (a ``.creds`` file) or ``nkey`` (a user's nkey seed file)
    authenticate as the ``nats`` CLI's ``--creds`` and ``--nkey`` do.
    """
    if every <= 0 or duration < 0:
        raise SourceError("--every must be positive and --duration not negative")
    _client.check_stream_name(stream)
    auth = nats_auth(creds, nkey)
    names = list(consumers) if consumers is not None else None
    # In Jupyter too: a notebook runs an event loop, which asyncio.run refuses.
    return _client.run_sync(
        _sample(server, stream, Path(out), names, every, duration, progress, tls, auth)
    )


async def _sample(
    server: str,
    stream: str,
    out: Path,
    names: list[str] | None,
    every: float,
    duration: float,
    progress: Callable[[int], None] | None,
    tls: ssl.SSLContext | None,
    auth: NatsAuth | None,
) -> LagSampleResult:
    source = f"jetstream:{stream}"
    nc = await _client.connect(server, tls=tls, auth=auth)
    stream_rows: list[dict[str, Any]] = []
    consumer_rows: list[dict[str, Any]] = []
    pending_streams: list[dict[str, Any]] = []
    pending_consumers: list[dict[str, Any]] = []
    gone: list[str] = []
    known: set[str] = set()
    try:
        for name in names or ():  # a named consumer that is not there: nothing written
            if await _consumer_info(nc, stream, name) is None:
                raise SourceError(f"stream {stream} has no consumer {name}")
        started = time.monotonic()
        last_append = started
        tick = 0
        while True:
            now = dt.datetime.now(dt.UTC)
            stream_info = await _client.stream_info(nc, stream)
            state = stream_info["state"]
            pending_streams.append(stream_sample(stream, stream_info, now))
            listed = names if names is not None else await _consumer_names(nc, stream)
            gone += sorted(known - set(listed) - set(gone))  # deleted since the last sample
            known.update(listed)
            for name in listed:
                info = await _consumer_info(nc, stream, name)
                if info is None:  # deleted between listing and asking (or since named)
                    if name not in gone:
                        gone.append(name)
                    continue
                delivered = info.get("delivered") or {}
                ack_floor = info.get("ack_floor") or {}
                pending_consumers.append(
                    {
                        "source": source,
                        "sampled_at": now,
                        "stream": stream,
                        "consumer": name,
                        "num_pending": info.get("num_pending"),
                        "num_ack_pending": info.get("num_ack_pending"),
                        "num_redelivered": info.get("num_redelivered"),
                        "num_waiting": info.get("num_waiting"),
                        "delivered_stream_seq": delivered.get("stream_seq"),
                        "ack_floor_stream_seq": ack_floor.get("stream_seq"),
                        "stream_last_seq": state.get("last_seq"),
                        "last_active": server_time(delivered.get("last_active")),
                    }
                )
            tick += 1
            if progress is not None:
                progress(tick)
            elapsed = time.monotonic() - started
            done = elapsed + every > duration
            if done or time.monotonic() - last_append >= _APPEND_EVERY:
                _append(out, source, pending_streams, pending_consumers)
                stream_rows += pending_streams
                consumer_rows += pending_consumers
                pending_streams, pending_consumers = [], []
                last_append = time.monotonic()
            if done:
                break
            await asyncio.sleep(max(0.0, started + tick * every - time.monotonic()))
    finally:
        if pending_streams:  # interrupted: keep what was sampled
            _append(out, source, pending_streams, pending_consumers)
        await nc.close()
    return LagSampleResult(
        stream,
        str(out),
        _frame(stream_rows, STREAM_SAMPLE_SCHEMA),
        _frame(consumer_rows, CONSUMER_SAMPLE_SCHEMA),
        gone,
    )


def stream_sample(stream: str, info: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    """A ``stream_samples`` row of the stream's info (from ``STREAM.INFO``) at ``now``."""
    state = info.get("state") or {}
    return {
        "source": f"jetstream:{stream}",
        "sampled_at": now,
        "stream": stream,
        "messages": state.get("messages"),
        "bytes": state.get("bytes"),
        "first_seq": state.get("first_seq"),
        "last_seq": state.get("last_seq"),
        "last_ts": server_time(state.get("last_ts")),
        "consumer_count": state.get("consumer_count"),
        "created": server_time(info.get("created")),
    }


async def _consumer_info(nc: Any, stream: str, name: str) -> dict[str, Any] | None:
    """The consumer's info, or None when it does not exist (any more)."""
    try:
        return await _client.jetstream_api(nc, f"CONSUMER.INFO.{stream}.{name}")
    except SourceError as exc:
        if "consumer not found" in str(exc):
            return None
        raise


async def _consumer_names(nc: Any, stream: str) -> list[str]:
    reply = await _client.jetstream_api(nc, f"CONSUMER.NAMES.{stream}")
    return sorted(reply.get("consumers") or [])


def _append(
    out: Path, source: str, streams: list[dict[str, Any]], consumers: list[dict[str, Any]]
) -> None:
    if streams:
        append_records(
            out, "stream_samples", source, pa.Table.from_pylist(streams, STREAM_SAMPLE_SCHEMA)
        )
    if consumers:
        append_records(
            out, "consumer_samples", source, pa.Table.from_pylist(consumers, CONSUMER_SAMPLE_SCHEMA)
        )


def _frame(rows: list[dict[str, Any]], schema: pa.Schema) -> pl.DataFrame:
    frame = pl.from_arrow(pa.Table.from_pylist(rows, schema))
    assert isinstance(frame, pl.DataFrame)
    return frame


_FRACTION = re.compile(r"(\.\d{6})\d+")


def server_time(text: str | None) -> dt.datetime | None:
    """An RFC 3339 time from the server (nanoseconds cut to microseconds); None for zero.

    >>> server_time("2024-05-01T12:00:00.123456789Z")
    datetime.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=datetime.timezone.utc)
    >>> server_time("0001-01-01T00:00:00Z") is None
    True
    """
    if not text or text.startswith("0001-01-01"):
        return None
    try:
        return dt.datetime.fromisoformat(_FRACTION.sub(r"\1", text).replace("Z", "+00:00"))
    except ValueError:
        return None
