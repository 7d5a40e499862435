"""Archiving a JetStream stream: every message once, gaps on record.

The archive is the checkpoint: a run resumes at the highest archived stream
sequence + 1 through an ephemeral ordered push consumer (no durable state on
the server), reads deliveries in bulk off the wire, maps each batch to
envelopes in one query, and writes it atomically while the next batch is
read. Missing sequences are classified (retention, deleted, sequence-jump)
and recorded in ``gap_records`` before the batch after them is written.

A stream that removes messages inside itself by design (a per-subject limit
such as a KV bucket's history; per-message TTL and message schedules, NATS
2.11+) lists those among its deleted sequences, as it lists a delete; holes
inside such a stream are recorded as ``retention`` with a detail naming the
causes, since JetStream does not say which it was.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import datetime as dt
import functools
import html
import itertools
import json
import os
import signal
import ssl
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from nats.aio.client import Client

from workbench._text import as_text, duration, span
from workbench.archive import (
    STREAM_SAMPLE_SCHEMA,
    ArchiveReader,
    ArchiverRun,
    ArchiveWriter,
    WritePipeline,
    append_records,
    read_records,
)
from workbench.errors import ArchiveError, SourceError
from workbench.progress import shows_progress
from workbench.sources.jetstream import _client
from workbench.sources.jetstream._auth import NatsAuth, nats_auth
from workbench.sources.jetstream._wire import Deliveries, WireConnection
from workbench.sources.jetstream.mapping import (
    BATCH_EVENT_TYPE,
    DEFAULT_PRESET,
    NATS_EVENT_TYPES,
    JetStreamMapping,
)
from workbench.sources.jetstream.sampler import server_time, stream_sample
from workbench.sources.mapping import Mappings, mapping_options
from workbench.sources.redaction import redact
from workbench.sources.result import RunResult

__all__ = ["ArchiveProgress", "Gap", "JetStreamArchiveResult", "archive_jetstream"]

_HEARTBEAT = 1.0  # seconds between the server's idle heartbeats
_IDLE_FLUSH = 1.0  # a partial batch is written after this long without messages
_MAX_HOLD = 5.0  # ... or once its oldest message has waited this long (steady traffic)
_RECONNECT_FOR = 30.0  # without --follow, give up on a server gone this long


class StreamRecreated(SourceError):
    """The stream was deleted and created again under the same name while archiving."""


@dataclass(frozen=True)
class Gap:
    """Stream sequences ``first``..``last`` (inclusive) the archive does not have, and why."""

    first: int
    last: int
    reason: str

    def __str__(self) -> str:
        """``sequence 16 missing (deleted)``, ``sequences 2-5 missing (retention)``."""
        plural = "" if self.first == self.last else "s"
        return f"sequence{plural} {span(self.first, self.last)} missing ({self.reason})"


@dataclass(frozen=True)
class ArchiveProgress:
    """Where a run is: messages archived so far and what the stream still holds past them."""

    archived: int
    last_seq: int | None
    remaining: int | None
    rate: float


#: Columns without which checks and replays lose their footing; a run reports how often they stay empty.
IDENTITY_COLUMNS: tuple[str, ...] = ("event_id", "event_type", "stream")
#: Columns the causation check reads: hinted at only when a header or key is named like them.
_CAUSAL_COLUMNS: tuple[str, ...] = ("correlation_id", "causation_id")


#: Header and payload key names that likely hold each identity column, lowercased with
#: ``-`` and ``_`` removed, likeliest first.
_LIKELY_NAMES: dict[str, tuple[str, ...]] = {
    "event_type": ("eventtype", "type", "messagetype", "kind"),
    "event_id": ("eventid", "natsmsgid", "messageid", "msgid", "id"),
    "stream": ("stream", "streamid", "streamname", "aggregateid", "aggregate", "entityid"),
    "correlation_id": ("correlationid", "correlation", "traceid"),
    "causation_id": ("causationid", "causation", "causedby"),
}


def _names_in(headers: bytes, payload: bytes) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The header names of a message, and its payload's keys when it is a JSON object.

    >>> _names_in(b"Event-Type: Opened\\r\\nNats-Msg-Id: 1", b'{"id": 1, "data": {}}')
    (('Event-Type', 'Nats-Msg-Id'), ('id', 'data'))
    """
    lines = headers.decode("utf-8", "replace").split("\r\n")
    names = tuple(line.partition(":")[0].strip() for line in lines if ":" in line)
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError):
        return names, ()
    return names, tuple(document) if isinstance(document, dict) else ()


def _named_like(column: str, headers: tuple[str, ...], keys: tuple[str, ...]) -> str | None:
    """``header:NAME`` or ``data:KEY`` of the first message named like ``column``; a W3C
    ``traceparent`` header's trace id for a correlation no header or key names.

    >>> _named_like("correlation_id", ("traceparent",), ())
    'trace:traceparent'
    """
    if column == "correlation_id" and not any(
        n.lower().replace("-", "").replace("_", "") in _LIKELY_NAMES[column]
        for n in (*headers, *keys)
    ):
        traced = [n for n in headers if n.lower() == "traceparent"]
        if traced:
            return f"trace:{traced[0]}"
    for likely in _LIKELY_NAMES[column]:
        for kind, names in (("header", headers), ("data", keys)):
            for name in names:
                if name.lower().replace("-", "").replace("_", "") == likely:
                    return f"{kind}:{name}"
    return None


@dataclass(repr=False)
class JetStreamArchiveResult(RunResult):
    """What one ``archive_jetstream`` run did.

    >>> r = JetStreamArchiveResult("S", "out", messages=10, first_seq=1, last_seq=12,
    ...                            gaps=[Gap(5, 6, "deleted")], elapsed=0.5)
    >>> r.rate, r.df()["reason"].to_list()
    (20.0, ['deleted'])
    """

    stream: str
    out: str
    messages: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    gaps: list[Gap] = field(default_factory=list)
    elapsed: float = 0.0
    #: With ``follow``, seconds from the start to the last message received: the rest of
    #: ``elapsed`` was waiting for new ones, which says nothing of the archiver's speed.
    active: float = 0.0
    #: Why the run ended: "caught-up", "signal", "idle".
    stopped: str = "caught-up"
    #: Messages the mapping left without each of :data:`IDENTITY_COLUMNS`, and without a
    #: correlation or causation id (NATS's own aside).
    unfilled: dict[str, int] = field(default_factory=dict)
    #: Of ``messages``, NATS's own: subject delete markers and message schedules, archived
    #: with an ``event_type`` of :data:`~workbench.sources.jetstream.mapping.NATS_EVENT_TYPES`.
    nats_messages: int = 0
    #: Messages that were CloudEvents batches, archived whole (event_type ``$cloudevents.batch``).
    batches: int = 0
    #: The columns a ``--map`` set, and the first message's subject (for the hints).
    mapped: frozenset[str] = frozenset()
    #: Each mapped column's specs, in order (``data:seq``, ``preset``'s...).
    mapped_specs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    can_fall_back: frozenset[str] = frozenset()
    first_subject: str | None = None
    #: The first message's header names and, when its payload is a JSON object, its keys.
    first_headers: tuple[str, ...] = ()
    first_keys: tuple[str, ...] = ()
    #: Messages whose mapped time (``occurred_at``) had a value that is no time, kept null;
    #: and the first such value of each, shown in the summary.
    #: Column → messages whose mapped value could not be read (no time, no integer): null.
    unread: dict[str, int] = field(default_factory=dict)
    unread_examples: dict[str, str] = field(default_factory=dict)

    def hints(self) -> list[str]:
        """What to map when the mapping found no event id, type or stream in most messages.

        >>> r = JetStreamArchiveResult("S", "out", messages=4, unfilled={"event_type": 4})
        >>> r.hints()[0]
        'event_type is empty in 4 of 4 messages; map it, e.g. --map event_type=data:type'
        >>> r = JetStreamArchiveResult("S", "out", messages=4, unfilled={"stream": 4},
        ...                            first_subject="shop.orders.o-7.paid")
        >>> r.hints()[0]
        'stream is empty in 4 of 4 messages; map it, e.g. from the subject (shop.orders.o-7.paid): subject:0=shop, subject:1=orders, subject:2=o-7, subject:3=paid'
        >>> JetStreamArchiveResult("KV_CFG", "out", messages=4, unfilled={"stream": 4},
        ...                        first_subject="$KV.CFG.db.host").hints()[0]
        'stream is empty in 4 of 4 messages; a KV bucket: archive it with --preset kv (stream: the key, db.host; event_type: PUT, DEL or PURGE)'
        >>> JetStreamArchiveResult("KV_CFG", "out", messages=4, unfilled={"event_id": 4},
        ...                        first_subject="$KV.CFG.db.host").hints()
        []
        >>> mapped = frozenset({"event_type"})
        >>> JetStreamArchiveResult("S", "out", messages=4, unfilled={"event_type": 3},
        ...                        mapped=mapped, can_fall_back=mapped).hints()[0]
        'event_type is empty in 3 of 4 messages with your --map event_type; add the preset as a fallback: --map event_type=preset after it'
        >>> JetStreamArchiveResult("S", "out", messages=4, unfilled={"event_type": 3},
        ...                        mapped=mapped).hints()[0]
        'event_type is empty in 3 of 4 messages with your --map event_type; check its spec against a message'
        >>> JetStreamArchiveResult("S", "out", messages=9, nats_messages=8, unfilled={"event_id": 1}).hints()[0]
        'event_id is empty in 1 of 1 messages; map it, e.g. --map event_id=data:id'

        A header or payload key named like the column is the likelier source:

        >>> JetStreamArchiveResult("S", "out", messages=4, first_subject="bank.account.a-1",
        ...     unfilled={"event_type": 4, "event_id": 4, "stream": 4},
        ...     first_headers=("Content-Type", "Event-Type", "Nats-Msg-Id"),
        ...     first_keys=("aggregate_id", "amount")).hints()  # doctest: +NORMALIZE_WHITESPACE
        ['event_type is empty in 4 of 4 messages; map it, e.g. --map event_type=header:Event-Type',
         'event_id is empty in 4 of 4 messages; map it, e.g. --map event_id=header:Nats-Msg-Id',
         'stream is empty in 4 of 4 messages; map it, e.g. --map stream=data:aggregate_id',
         'a mapping is kept with the archive (out): archive into a new --out to map from the
         first event on, or add --remap (events archived so far keep their columns)']
        >>> JetStreamArchiveResult("S", "out", messages=4, unfilled={"event_id": 4},
        ...     first_headers=("Event-Type",), first_keys=("amount",)).hints()[0][:80]
        "event_id is empty in 4 of 4 messages; none of the first message's headers or pay"

        Correlation and causation ids are hinted at only when something is named so:

        >>> JetStreamArchiveResult("S", "out", messages=4,
        ...     unfilled={"correlation_id": 4, "causation_id": 4},
        ...     first_headers=("correlation-id",)).hints()[:-1]
        ['correlation_id is empty in 4 of 4 messages; map it, e.g. --map correlation_id=header:correlation-id']
        """
        tokens = (self.first_subject or "").split(".")
        from_subject = "from the subject ({}): {}".format(
            self.first_subject, ", ".join(f"subject:{i}={t}" for i, t in enumerate(tokens))
        )
        examples: dict[str, str | None] = {
            # A KV entry or object chunk has no id of its own: its sequence is its identity.
            "event_id": None if tokens[0] in ("$KV", "$O") else "--map event_id=data:id",
            "event_type": (from_subject if self.first_subject else "--map event_type=data:type"),
            "stream": from_subject if self.first_subject else "--map stream=subject:1",
            **dict.fromkeys(_CAUSAL_COLUMNS, ""),  # only what is named like them
        }
        if tokens[0] == "$KV" and len(tokens) > 2:  # $KV.<bucket>.<key>; a key may hold dots
            examples["stream"] = examples["event_type"] = (
                "a KV bucket: archive it with --preset kv (stream: the key, "
                f"{'.'.join(tokens[2:])}; event_type: PUT, DEL or PURGE)"
            )
        for column in examples:
            named = _named_like(column, self.first_headers, self.first_keys)
            if named is not None and examples[column] is not None:
                examples[column] = f"--map {column}={named}"
            elif column in _CAUSAL_COLUMNS:
                examples[column] = None
            elif column == "event_id" and examples[column] and self.first_headers + self.first_keys:
                # The first message has no id to map: a data:id guess would only fail again.
                examples[column] = (
                    "none of the first message's headers or payload keys is an id: publish "
                    "with a Nats-Msg-Id header (the preset reads it), or --map event_id=… one"
                )
        hints = []
        events = self.messages - self.nats_messages  # markers and schedules carry no identity
        for column, missing in self.unfilled.items():
            if events and 0 < missing <= events // 2 and column in (*self.mapped, "event_type"):
                hints.append(self._partly_empty(column, missing, events))
            if not events or missing <= events // 2:
                continue
            empty = f"{column} is empty in {missing:,} of {events:,} messages"
            if column in self.mapped and self.first_subject:  # a subject index too far, say
                empty += f" (the first one's subject: {self.first_subject})"
            if column in self.can_fall_back:
                hints.append(
                    f"{empty} with your --map {column}; add the preset as a fallback: "
                    f"--map {column}=preset after it"
                )
            elif column in self.mapped:
                hints.append(f"{empty} with your --map {column}; check its spec against a message")
            elif (example := examples[column]) is not None:
                advice = (
                    f"map it, e.g. {example}" if example.startswith(("--", "from")) else example
                )
                if not any(hint.endswith(f"; {advice}") for hint in hints):  # said once
                    hints.append(f"{empty}; {advice}")
        if any("--map" in hint for hint in hints):  # the archive keeps the mapping it began with
            hints.append(
                f"a mapping is kept with the archive ({self.out}): archive into a new --out "
                "to map from the first event on, or add --remap (events archived so far keep "
                "their columns)"
            )
        return hints

    def _partly_empty(self, column: str, missing: int, events: int) -> str:
        """A column some messages leave empty: a stream of several kinds of message.

        >>> r = JetStreamArchiveResult("S", "out", messages=30, mapped=frozenset({"stream_position"}),
        ...     mapped_specs={"stream_position": ("data:seq",)}, unfilled={"stream_position": 10})
        >>> print(r.hints()[0])
        stream_position is empty in 10 of 30 messages with your --map stream_position=data:seq; in a structured CloudEvent, data: paths start at the event (its id, type, data): add --map stream_position=data:data.seq after it
        >>> print(JetStreamArchiveResult("S", "out", messages=30, unfilled={"event_type": 6}).hints()[0])
        event_type is empty in 6 of 30 messages: a replay dispatches none of them; see which with wb.open_archive('out').sql("select subject, metadata from events where event_type is null")
        """
        empty = f"{column} is empty in {missing:,} of {events:,} messages"
        if column not in self.mapped:
            return (
                f"{empty}: a replay dispatches none of them; see which with "
                f'wb.open_archive({self.out!r}).sql("select subject, metadata from events '
                f'where {column} is null")'
            )
        specs = self.mapped_specs.get(column, ())
        text = f"{empty} with your " + " ".join(f"--map {column}={spec}" for spec in specs)
        paths = [spec.removeprefix("data:") for spec in specs if spec.startswith("data:")]
        if paths and not any(p.startswith("data.") for p in paths):
            text += (
                "; in a structured CloudEvent, data: paths start at the event (its id, type, "
                f"data): add --map {column}=data:data.{paths[0]} after it"
            )
        elif column in self.can_fall_back:
            text += f"; add the preset as a fallback: --map {column}=preset after it"
        else:
            text += "; check its spec against those messages"
        return text

    @property
    def source(self) -> str:
        return f"jetstream:{self.stream}"

    @property
    def rate(self) -> float:
        """Messages archived per second, up to the last one (not while idle)."""
        seconds = self.active or self.elapsed
        return round(self.messages / seconds, 1) if seconds > 0 else 0.0

    def df(self) -> pl.DataFrame:
        """The gaps found in this run, one row per missing range."""
        return pl.DataFrame(
            {
                "first_missing": [g.first for g in self.gaps],
                "last_missing": [g.last for g in self.gaps],
                "reason": [g.reason for g in self.gaps],
            },
            schema={"first_missing": pl.Int64, "last_missing": pl.Int64, "reason": pl.String},
        )

    def gap_notes(self, limit: int = 10) -> list[str]:
        """One line per gap, or past ``limit`` the first few and one line for the rest.

        >>> r = JetStreamArchiveResult("S", "out", gaps=[Gap(i, i, "deleted") for i in range(0, 40, 2)])
        >>> r.gap_notes(limit=3)[-1]
        'jetstream:S: 17 more gap(s), 17 position(s) (deleted 17); all are in gap_records'
        """
        notes = [f"{self.source}: {gap}" for gap in self.gaps[:limit]]
        rest = self.gaps[limit:]
        if rest:
            reasons: dict[str, int] = {}
            for gap in rest:
                reasons[gap.reason] = reasons.get(gap.reason, 0) + gap.last - gap.first + 1
            by = ", ".join(f"{reason} {n:,}" for reason, n in sorted(reasons.items()))
            notes.append(
                f"{self.source}: {len(rest):,} more gap(s), {sum(reasons.values()):,} "
                f"position(s) ({by}); all are in gap_records"
            )
        return notes

    @as_text
    def summary(self) -> str:
        """One line for humans.

        >>> JetStreamArchiveResult("S", "out", messages=3, first_seq=1, last_seq=3, elapsed=1.0,
        ...                        unread={"occurred_at": 2, "stream_position": 1},
        ...                        unread_examples={"occurred_at": "yesterday",
        ...                                         "stream_position": "5.5"}).summary()
        "jetstream:S: 3 message(s) archived (sequences 1-3) in 1.0s, 3 msg/s, no gaps; occurred_at: 2 value(s) not a time (kept null), e.g. 'yesterday'; stream_position: 1 value(s) not an integer (kept null), e.g. '5.5'"
        """
        span = f"sequences {self.first_seq}-{self.last_seq}" if self.messages else "nothing new"
        gaps = f", {len(self.gaps)} gap(s)" if self.gaps else ", no gaps"
        stopped = "; stopped by a signal (run again to go on)" if self.stopped == "signal" else ""
        own = (
            f" ({self.nats_messages:,} of them NATS markers or schedules, event_type $nats.*)"
            if self.nats_messages
            else ""
        )
        if self.batches:
            own += (
                f"; {self.batches:,} CloudEvents batch(es) archived whole, event_type "
                "$cloudevents.batch, data the array of events (one sequence cannot split them)"
            )
        examples = {c: f", e.g. {v!r}" for c, v in self.unread_examples.items()}
        unread = "".join(
            f"; {column}: {n:,} value(s) not {'a time' if column.endswith('_at') else 'an integer'}"
            f" (kept null){examples.get(column, '')}"
            for column, n in sorted(self.unread.items())
        )
        waited = (
            f" ({self.active:.1f}s to the last message)"
            if self.active and self.elapsed - self.active >= 1
            else ""
        )
        return (
            f"{self.source}: {self.messages:,} message(s) archived ({span}){own} "
            f"in {self.elapsed:.1f}s{waited}, {self.rate:,.0f} msg/s{gaps}{unread}{stopped}"
        )

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{g.first}</td><td>{g.last}</td><td>{html.escape(g.reason)}</td></tr>"
            for g in self.gaps[:20]
        )
        gaps = (
            f"<table><tr><th>first</th><th>last</th><th>reason</th></tr>{rows}</table>"
            if self.gaps
            else "<p>no gaps</p>"
        )
        return f"<div><b>{html.escape(str(self))}</b>{gaps}</div>"


@shows_progress(
    "archive jetstream",
    adapt=lambda bar: lambda p: bar(p.archived, p.archived + (p.remaining or 0)),
)
def archive_jetstream(
    server: str,
    stream: str,
    out: str | os.PathLike[str],
    *,
    preset: str | None = None,
    mappings: Mappings = (),
    remap: bool = False,
    follow: bool = False,
    idle_exit: float | None = None,
    file_events: int = 100_000,
    file_bytes: int = 64 * 2**20,
    progress: Callable[[ArchiveProgress], None] | None = None,
    warn: bool = True,
    tls: ssl.SSLContext | None = None,
    creds: str | os.PathLike[str] | None = None,
    nkey: str | os.PathLike[str] | None = None,
) -> JetStreamArchiveResult:
    """Archive stream ``stream`` at ``server`` into the archive at ``out``.

    Without ``follow`` it archives up to the stream's last sequence at start
    and returns; with ``follow`` it tails the stream until SIGINT/SIGTERM
    (or ``idle_exit`` seconds without a message), writing the tail on the
    way out. Gaps are recorded in the archive's ``gap_records`` and, with
    ``warn``, issued as warnings. A file holds at most ``file_events``
    messages and about ``file_bytes`` of payloads and headers, which bounds
    the memory a run holds. ``tls`` (:func:`~workbench.sources.jetstream.tls_context`, e.g. with a client
    certificate, for a server that verifies clients) connects over TLS. ``creds``
    (a ``.creds`` file: user JWT and nkey seed, as Synadia Cloud and ``nsc``
    issue them) or ``nkey`` (a user's nkey seed file) authenticate as the
    ``nats`` CLI's ``--creds`` and ``--nkey`` do. ``mappings`` are the ``--map``s:
    ``["event_type=header:Event-Type"]`` or ``{"event_type": "header:Event-Type"}``.
    """
    _client.check_stream_name(stream)
    auth = nats_auth(creds, nkey)  # a bad file is told before the archive is touched
    mappings = mapping_options(mappings)
    options = [f"preset={preset or DEFAULT_PRESET}", *mappings]
    JetStreamMapping.from_options(preset or DEFAULT_PRESET, mappings)  # told before anything
    if file_events < 1 or file_bytes < 1:
        raise ArchiveError("file_events and file_bytes must be at least 1")
    with ArchiverRun(out, f"jetstream:{stream}", "archive_jetstream") as claim:
        options = claim.settle(options, given=preset is not None or bool(mappings), remap=remap)
        mapping = JetStreamMapping.from_options(*_preset_and_maps(options))
        run = _Run(
            server, stream, Path(out), mapping, follow, idle_exit, file_events, file_bytes,
            progress, tls=tls, auth=auth,
        )  # fmt: skip
        # The mapping is recorded before the first file of events it maps: a run killed
        # after that (kill -9) leaves it to hold the next run to.
        run.writer.before_first_write = functools.partial(claim.record, options)
        result = _client.run_sync(run.main())
    if warn:
        for note in result.gap_notes():
            # 3: past the progress decorator, at the caller's line.
            warnings.warn(note, RuntimeWarning, stacklevel=3)
    return result


def _preset_and_maps(options: list[str]) -> tuple[str, list[str]]:
    """``preset=NAME`` and the ``--map`` options of a recorded mapping, apart.

    >>> _preset_and_maps(["preset=raw", "event_type=subject:-1"])
    ('raw', ['event_type=subject:-1'])
    """
    preset = next((o.partition("=")[2] for o in options if o.startswith("preset=")), None)
    return preset or DEFAULT_PRESET, [o for o in options if not o.startswith("preset=")]


#: Jumps a flush asks the server about: a consumer's skip is the first jump it makes.
_JUMPS_ASKED = 16
#: Archived messages looked up in the stream to tell it is the same stream.
_SAME_STREAM_PROBES = 8


class _Run:
    """One archiver run; state lives here so the loop reads top to bottom."""

    def __init__(
        self,
        server: str,
        stream: str,
        out: Path,
        mapping: JetStreamMapping,
        follow: bool,
        idle_exit: float | None,
        file_events: int,
        file_bytes: int,
        progress: Callable[[ArchiveProgress], None] | None,
        *,
        tls: ssl.SSLContext | None = None,
        auth: NatsAuth | None = None,
    ) -> None:
        self.server = server
        self.tls = tls
        self.auth = auth
        self.stream = stream
        self.mapping = mapping
        self.follow = follow
        self.idle_exit = idle_exit
        self.file_events = file_events
        self.file_bytes = file_bytes
        self.progress = progress
        self.writer = ArchiveWriter(out, f"jetstream:{stream}", max_file_events=file_events)
        self.result = JetStreamArchiveResult(
            stream,
            str(out),
            mapped=mapping.mapped,
            can_fall_back=mapping.can_fall_back,
            mapped_specs={c: tuple(map(str, mapping.fields[c])) for c in mapping.mapped},
        )
        self.stop = asyncio.Event()
        self.buffer = Deliveries()
        self.pipeline: WritePipeline  # started by main()
        # The highest sequence seen (buffered or archived): gaps are measured from it.
        self.seen = 0
        # Messages handed to the writer this run (written or in flight): for progress.
        self.handed = 0
        #: The consumer skipped messages the stream holds: read again from after self.seen.
        self.reread = False
        self.held_before: int | None = None  # where the last read-again started
        self.fetching = False  # a read-again skipped too: skipped messages are fetched
        #: The sequences deleted from inside the stream as the run began: still deletions
        #: when a purge moves the first sequence past them before they are recorded.
        self.deleted_before = _NO_SEQUENCES
        self.recorded: _Recorded | None = None  # gap records, read at the first gap
        self.stream_last: int | None = None
        self.wire: WireConnection | None = None
        self.consumer: str | None = None
        self.created: dt.datetime | None = None  # when the stream archived was created
        self.mirror: _FilteredMirror | None = None  # what a filtered mirror keeps
        # Why the stream removes messages inside itself by design (None: only deletes do).
        self.removes_inside: str | None = None
        self.limits: str | None = None
        self.started = time.monotonic()

    async def main(self) -> JetStreamArchiveResult:
        started = self.started = time.monotonic()
        nc = self.nc = await _client.connect(self.server, tls=self.tls, auth=self.auth)
        loop = asyncio.get_running_loop()
        handled = []
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self._signal)
                    handled.append(sig)
        # Writes run in a background thread while the next batch is read.
        self.pipeline = WritePipeline(depth=1, name="wb-js-write")
        try:
            info = await _client.stream_info(nc, self.stream)
            state = info["state"]
            self.created = server_time(info.get("created"))
            creations = self._recorded_creations()
            await self._check_same_stream(int(state["last_seq"]), self._archived_stream(creations))
            if self.created is not None and self.created not in creations:
                # Which stream this archive is of, once: the next runs check it.
                sample = stream_sample(self.stream, info, dt.datetime.now(dt.UTC))
                append_records(
                    self.writer.root,
                    "stream_samples",
                    self.writer.source,
                    pa.Table.from_pylist([sample], STREAM_SAMPLE_SCHEMA),
                )
            self.stream_last = state["last_seq"]
            target = None if self.follow else int(state["last_seq"])
            # A stream created with first_seq (NATS 2.10+), or a mirror started at a
            # sequence of its origin, never had the sequences below it.
            config = info.get("config") or {}
            mirror = config.get("mirror") or {}
            self.mirror = _FilteredMirror.of(mirror)
            self.removes_inside = _removes_inside(config)
            self.limits = _limits(config)
            never = max(int(config.get("first_seq") or 1), int(mirror.get("opt_start_seq") or 1))
            never -= 1
            if never and self.writer.last_position is None:
                # Once, even while the stream is still empty.
                self.recorded = _Recorded(_recorded_gaps(self.writer))
                new = [(a, b, "never-issued") for a, b in self.recorded.uncovered(1, never)]
                self.writer.record_gaps(
                    new,
                    f"stream {self.stream} starts at sequence {never + 1} (first_seq, "
                    "or the mirror's start)",
                )
                self.recorded.add((a, b) for a, b, _ in new)
            self.seen = self.writer.last_position or never
            if state.get("num_deleted") and (target is None or self.seen < target):
                full = await _client.stream_state(nc, self.stream, deleted=True)
                self.deleted_before = np.unique(np.asarray(full.get("deleted") or [], np.int64))
            while True:
                try:
                    if target is None or self.seen < target:
                        await self._tail(target)
                finally:  # whatever ended the run, what was read is written
                    await self._flush()
                    await asyncio.to_thread(self.pipeline.flush)
                if self.stop.is_set() or target is None:
                    break
                if not self.reread and self.seen < target:  # the tail was removed, or skipped
                    held = await self._record_gaps([(self.seen + 1, target)])
                    self.reread, self.held_before = held is not None, held
                    self.seen = target if held is None else held - 1
                if not self.reread:
                    break
                self.reread = False
                await self._drop_consumer()  # _tail starts a consumer after self.seen
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)
            with contextlib.suppress(Exception):  # a write error was raised above
                await asyncio.to_thread(self.pipeline.close)
            await self._drop_consumer()
            with contextlib.suppress(Exception):
                await nc.close()
        self.result.elapsed = time.monotonic() - started
        return self.result

    def _signal(self) -> None:
        self.result.stopped = "signal"
        self.stop.set()

    async def _tail(self, target: int | None) -> None:
        """Read deliveries until caught up with ``target`` (or stopped, when following)."""
        await self._start_consumer()
        last_message = time.monotonic()
        held_since: float | None = None  # when the oldest buffered message arrived
        while not self.stop.is_set():
            assert self.wire is not None
            before = len(self.buffer)
            try:
                read = await self.wire.read(self.buffer, timeout=0.25)
            except (ConnectionError, OSError, asyncio.IncompleteReadError):
                await self._reconnect()
                continue
            now = time.monotonic()
            got = len(self.buffer) - before
            if got:
                last_message = now
                held_since = now if held_since is None else held_since
                if self.follow:  # what follows may be waiting: the rate stops here
                    self.result.active = now - self.started
                if self.progress is not None:
                    self._report(read.pending)
            if target is not None and self.buffer.seq and self.buffer.seq[-1] >= target:
                self._trim(target)
                return
            idle = read.heartbeat and not read.reset
            if target is not None and (idle or (got and read.pending == 0)):
                return  # nothing left to deliver: the rest up to target was removed (checked)
            while len(self.buffer) >= self.file_events or self.buffer.nbytes >= self.file_bytes:
                await self._flush_file()  # whole files: no small remainders
            if self.buffer.seq and (
                now - last_message > _IDLE_FLUSH
                # Following steady traffic; a catch-up fills whole files instead.
                or (self.follow and held_since is not None and now - held_since > _MAX_HOLD)
            ):
                await self._flush()
            if not self.buffer.seq:
                held_since = None
            if self.reread:  # a flush found the consumer skipped messages the stream holds
                self.reread = False
                await self._restart_consumer()
                continue
            if read.reset or now - self.wire.last_activity > 3 * _HEARTBEAT + 1:
                await self._restart_consumer()
            if self.idle_exit is not None and now - last_message > self.idle_exit:
                self.result.stopped = "idle"
                return

    def _trim(self, target: int) -> None:
        keep = int(np.searchsorted(np.asarray(self.buffer.seq), target, side="right"))
        self.buffer = self.buffer.split(keep)[0]

    def _report(self, pending: int | None) -> None:
        assert self.progress is not None
        archived = self.handed + len(self.buffer)
        last = self.buffer.seq[-1] if self.buffer.seq else self.seen
        if pending is not None:
            self.stream_last = max(self.stream_last or 0, last + pending)
        remaining = None if self.stream_last is None else max(self.stream_last - last, 0)
        elapsed = time.monotonic() - self.started
        rate = archived / elapsed if elapsed > 0 else 0.0
        self.progress(ArchiveProgress(archived, self.stream_last, remaining, rate))

    async def _start_consumer(self) -> None:
        if self.created is not None:  # deleted and added again while we were away?
            info = await _client.stream_info(self.nc, self.stream)
            created = server_time(info.get("created"))
            if created != self.created:
                raise StreamRecreated(
                    f"stream {self.stream} was recreated while archiving (created "
                    f"{created:%Y-%m-%d %H:%M:%S} UTC); the archive keeps the old stream's "
                    "messages: archive the new one into a new directory"
                )
        self.wire = await WireConnection.connect(self.server, tls=self.tls, auth=self.auth)
        subject = _client.deliver_subject()
        await self.wire.subscribe(subject)
        start = (self.buffer.seq[-1] if self.buffer.seq else self.seen) + 1
        self.consumer = await _client.create_ordered_consumer(
            self.nc, self.stream, start_seq=start, deliver_subject=subject, heartbeat=_HEARTBEAT
        )

    async def _drop_consumer(self) -> None:
        if self.wire is not None:
            await self.wire.close()
            self.wire = None
        if self.consumer is not None:
            await _client.delete_consumer(self.nc, self.stream, self.consumer)
            self.consumer = None

    async def _restart_consumer(self) -> None:
        """Resume after the last message received, on a fresh connection and consumer."""
        await self._drop_consumer()
        await self._reconnect()

    async def _check_same_stream(self, stream_last: int, recorded: dt.datetime | None) -> None:
        """Refuse a stream deleted and created again under the same name.

        Its sequences restart at 1: appended to this archive they would splice
        another history onto it, and its first messages would never be read.
        ``recorded`` is when the archived stream was created (None for an
        archive older than that record: its newest messages are compared).
        """
        reset = f"stream {self.stream} was recreated since {self.writer.root} was archived"
        if recorded is not None and self.created is not None and recorded != self.created:
            raise SourceError(
                f"{reset}: it was created {self.created:%Y-%m-%d %H:%M:%S.%f} UTC, the "
                f"archived one {recorded:%Y-%m-%d %H:%M:%S.%f} UTC; archive it into a new directory"
            )
        archived = self.writer.last_position
        if not archived:
            return
        if stream_last < archived:
            raise SourceError(
                f"{reset}: it ends at sequence {stream_last}, the archive at {archived}; "
                "archive it into a new directory"
            )
        # The newest archived messages, newest first: the first of them the stream
        # still holds decides (the very last may have been deleted since).
        kept = (
            ArchiveReader(self.writer.root)
            .sql(
                "select global_position, coalesce(recorded_ns, epoch_us(recorded_at) * 1000) "
                "from events where source = ? order by global_position desc limit ?",
                params=[self.writer.source, _SAME_STREAM_PROBES],
            )
            .fetchall()
        )
        for seq, then in kept:
            now = await _client.message_time_ns(self.nc, self.stream, seq)
            if now is None:  # removed since (retention, a delete): try the one before
                continue
            if then is not None and then // 1000 != now // 1000:
                raise SourceError(
                    f"{reset}: its message {seq} is not the one archived; "
                    "archive it into a new directory"
                )
            return

    def _recorded_creations(self) -> list[dt.datetime]:
        """The creation times of the streams recorded in this archive's stream samples."""
        samples = read_records(self.writer.root, "stream_samples", self.writer.source)
        if samples is None or "created" not in samples.column_names:
            return []
        return [c for c in samples.column("created").to_pylist() if c is not None]

    def _archived_stream(self, creations: list[dt.datetime]) -> dt.datetime | None:
        """When the stream whose messages this archive holds was created.

        That is the latest of ``creations`` at or before the first archived
        message: a sample taken of a stream created since (``sample
        jetstream`` after a delete) is of another stream, and one taken
        before anything was archived decides nothing. None when nothing is
        archived yet, or no recorded creation fits (an archive older than the
        record: its newest messages are compared instead).
        """
        if not self.writer.last_position or not creations:
            return None
        first = (
            ArchiveReader(self.writer.root)
            .sql(
                "select min(recorded_at) from events where source = ?", params=[self.writer.source]
            )
            .fetchall()[0][0]
        )
        if first is None:
            return None
        # Both times come from the server's clock; the slack is for rounding
        # (creation in ns, recorded_at in µs).
        fits = [c for c in creations if c <= first + dt.timedelta(milliseconds=1)]
        return max(fits) if fits else None

    async def _reconnect(self) -> None:
        """Retry until a new consumer delivers again (a server restart, a network blip)."""
        deadline = time.monotonic() + _RECONNECT_FOR
        if self.wire is not None:
            await self.wire.close()
            self.wire = None
        while not self.stop.is_set():
            try:
                await self._start_consumer()
                return
            except StreamRecreated:
                raise
            except (SourceError, ConnectionError, OSError, TimeoutError) as exc:
                if self.wire is not None:
                    await self.wire.close()
                    self.wire = None
                gone = ("stream not found", f"stream {self.stream} not found")
                if any(g in str(exc) for g in gone):  # deleted: nothing will ever deliver again
                    raise SourceError(f"stream {self.stream} was deleted while archiving") from None
                if not self.follow and time.monotonic() > deadline:
                    raise SourceError(
                        f"lost NATS at {redact(self.server)} and could not reconnect: {exc}"
                    ) from None
                await asyncio.sleep(0.25)
        # stopped while reconnecting: the loop exits and flushes what it has

    def _file_size(self) -> int:
        """Messages of the buffer that make one file: ``file_events``, or fewer to stay
        within ``file_bytes`` (at least one)."""
        if self.buffer.nbytes < self.file_bytes:  # the usual case: counting is enough
            return min(self.file_events, len(self.buffer))
        sizes = np.fromiter(
            (
                len(p) + len(h)
                for p, h in zip(self.buffer.payload, self.buffer.headers, strict=True)
            ),
            dtype=np.int64,
            count=len(self.buffer),
        )
        fits = int(np.searchsorted(np.cumsum(sizes), self.file_bytes, side="right"))
        return max(1, min(self.file_events, fits))

    async def _flush(self) -> None:
        """Hand every buffered message to the writer, a file at a time."""
        while self.buffer.seq:
            await self._flush_file()

    async def _flush_file(self) -> None:
        """Hand one file's worth of buffered messages to the writer (one write in flight)."""
        if not self.buffer.seq:
            return
        batch, self.buffer = self.buffer.split(self._file_size())
        self.handed += len(batch)
        seqs = np.asarray(batch.seq, dtype=np.int64)
        previous = np.concatenate(([self.seen], seqs[:-1]))
        jumps = np.flatnonzero(seqs - previous > 1)
        missing = [(int(previous[i]) + 1, int(seqs[i]) - 1) for i in jumps]
        self.seen = int(seqs[-1])
        if missing:
            await asyncio.to_thread(
                self.pipeline.flush
            )  # gaps and files go to the archive in order
            held = await self._record_gaps(missing)
            if held is not None:  # what came before it is written; the rest read again
                batch = batch.split(int(np.searchsorted(seqs, held)))[0]
                self.handed -= len(seqs) - len(batch)
                self.buffer = Deliveries()
                if held == self.held_before or self.fetching:
                    # Read again from here, the consumer skipped again: a purge every
                    # moment (rollups) moves it on before it delivers. Fetch them instead,
                    # from here on in this run.
                    self.buffer = await self._fetch(held, self.file_events)
                    self.fetching = True
                self.seen, self.reread, self.held_before = held - 1, True, held
                if not batch.seq:
                    return
        # Blocks (in a thread, not the event loop) while a batch waits for the writer.
        await asyncio.to_thread(self.pipeline.submit, functools.partial(self._write, batch))

    def _write(self, batch: Deliveries) -> None:
        mapped = self.mapping.map_batch(
            seq=batch.seq,
            ts_ns=batch.ts_ns,
            delivered=batch.delivered,
            subject=batch.subject,
            headers=batch.headers,
            payload=batch.payload,
        )
        table = mapped.table
        self.writer.append(table)
        result = self.result
        for column, n in mapped.unread.items():  # no time, no integer: said, not just null
            result.unread[column] = result.unread.get(column, 0) + n
            result.unread_examples.setdefault(column, mapped.unread_example[column])
        # NATS's own messages have no id or domain type to fill: no hint counts them.
        own = pc.is_in(table.column("event_type"), pa.array(NATS_EVENT_TYPES, pa.string()))
        events = table.filter(pc.invert(own)) if pc.any(own).as_py() else table
        result.nats_messages += table.num_rows - events.num_rows
        result.batches += (
            pc.sum(pc.equal(events.column("event_type"), BATCH_EVENT_TYPE)).as_py() or 0
        )
        for column in dict.fromkeys((*IDENTITY_COLUMNS, *_CAUSAL_COLUMNS, *self.mapping.mapped)):
            # A preset may leave a column out entirely (raw): all of it is empty then.
            present = column in events.column_names
            empty = events.column(column).null_count if present else events.num_rows
            result.unfilled[column] = result.unfilled.get(column, 0) + empty
        if result.first_seq is None:
            result.first_seq = batch.seq[0]
            result.first_subject = batch.subject[0].decode("utf-8", "backslashreplace")
            result.first_headers, result.first_keys = _names_in(batch.headers[0], batch.payload[0])
        result.last_seq = batch.seq[-1]
        result.messages += len(batch)

    async def _record_gaps(self, missing: list[tuple[int, int]]) -> int | None:
        """Classify missing ranges against the stream's state and record the new ones.

        A range neither before the stream's first sequence nor deleted (a jump) is asked
        of the server: a consumer on NATS 2.9 skips from a subject purge to the purged
        subject's next message, 63,000 messages it still holds taken for lost. Returns the
        first such message (only the ranges before it are recorded), else None.
        """
        state = await _client.stream_state(self.nc, self.stream, deleted=True)
        first_seq = int(state["first_seq"])
        deleted = np.unique(np.asarray(state.get("deleted") or [], dtype=np.int64))
        held = await self._first_held(missing, first_seq, deleted)
        if held is not None:
            missing = [(a, min(b, held - 1)) for a, b in missing if a < held]
        if self.recorded is None:  # read once a run: new records are added below
            self.recorded = _Recorded(_recorded_gaps(self.writer))
        new: list[tuple[int, int, str]] = []
        skipped: list[tuple[int, int, str]] = []  # a filtered mirror's: never messages here
        unknowable: list[tuple[int, int, str]] = []  # a filtered mirror's: gone from both
        origin = await self.mirror.origin_state(self.nc) if self.mirror else None
        # Inside a stream that removes messages itself, a deleted sequence may have expired.
        deleted_as = "retention" if self.removes_inside else "deleted"
        for first, last in missing:
            gaps = _classify(
                first, last, first_seq, deleted, deleted_as=deleted_as, known=self.deleted_before
            )
            for gap in gaps:
                parts = [gap]
                if self.mirror and origin and gap.reason in ("deleted", "retention"):
                    parts = await self.mirror.split(self.nc, gap, *origin)
                for part in parts:
                    reason = gap.reason if part.reason == _UNKNOWABLE else part.reason
                    for a, b in self.recorded.uncovered(part.first, part.last):
                        if reason == "never-issued":
                            skipped.append((a, b, reason))
                            continue
                        kind = unknowable if part.reason == _UNKNOWABLE else new
                        kind.append((a, b, reason))
                        self.result.gaps.append(Gap(a, b, reason))
        # One file for all of a flush's gaps: a stream with thousands of interior
        # deletions (per-subject limits, KV history) must not mean thousands of files.
        detail = f"detected by archive_jetstream on {self.stream}"
        # Before the stream's first sequence, its limits or a purge took them; inside it,
        # whatever removes messages by design did, or a delete.
        head = [g for g in new if g[0] < first_seq and g[2] == "retention"]
        heads = set(head)
        # Whatever removes messages inside it removes its oldest too (a KV key's value
        # replaced, a TTL run out).
        causes = ", ".join(c for c in (self.limits, self.removes_inside) if c)
        removed_by = f"{causes} or a purge" if causes else "a purge, or a limit it no longer has"
        self.writer.record_gaps(
            head, f"{detail}; before its first sequence {first_seq}: removed by {removed_by}"
        )
        if self.removes_inside:
            detail += (
                f"; {self.stream} removes messages itself ({self.removes_inside}): one missing "
                "inside it went that way, or was deleted (JetStream does not say which)"
            )
        self.writer.record_gaps([g for g in new if g not in heads], detail)
        if self.mirror is not None:
            self.writer.record_gaps(
                skipped,
                f"{self.stream} mirrors only {self.mirror}: its origin's messages there are "
                "on other subjects",
            )
            self.writer.record_gaps(
                unknowable,
                f"{self.stream} mirrors only {self.mirror}, which no longer holds these "
                f"either: whether they were on {', '.join(self.mirror.subjects)} (lost) or "
                "on other subjects (never here) cannot be known",
            )
        self.recorded.add((a, b) for a, b, _ in [*new, *skipped, *unknowable])
        return held

    async def _fetch(self, start: int, most: int) -> Deliveries:
        """Up to ``most`` messages from ``start`` on, one request each, as the wire gives
        them (the header block without its status line and blank line)."""
        got = Deliveries()
        seq = start
        while len(got) < most:
            message = await _client.next_message(self.nc, self.stream, seq)
            if message is None:
                break
            block = base64.b64decode(message.get("hdrs") or "")
            headers = block.split(b"\r\n", 1)[1][:-4] if block else b""
            payload = base64.b64decode(message.get("data") or "")
            got.seq.append(int(message["seq"]))
            got.ts_ns.append(_client.rfc3339_ns(message["time"]))
            got.delivered.append(1)
            got.subject.append(str(message["subject"]).encode())
            got.headers.append(headers)
            got.payload.append(payload)
            got.nbytes += len(headers) + len(payload)
            seq = got.seq[-1] + 1
        return got

    async def _first_held(
        self, missing: list[tuple[int, int]], first_seq: int, deleted: np.ndarray
    ) -> int | None:
        """The first message the stream still holds inside a jump of ``missing`` (of the
        first :data:`_JUMPS_ASKED`)."""
        jumps = (
            gap
            for first, last in missing
            for gap in _classify(first, last, first_seq, deleted, deleted_as="deleted")
            if gap.reason == "sequence-jump"
        )
        for gap in itertools.islice(jumps, _JUMPS_ASKED):
            held = await _client.next_matching(self.nc, self.stream, gap.first, ">")
            if held is not None and held <= gap.last:
                return held
        return None


@dataclass(frozen=True)
class _FilteredMirror:
    """A mirror that keeps some subjects of its origin: where it has holes the server
    lists as deleted (or, at its start, below its first sequence), the origin tells
    which were never meant for it.

    >>> _FilteredMirror.of({"name": "O", "filter_subject": "o.x"})
    _FilteredMirror(origin='O', subjects=('o.x',))
    >>> _FilteredMirror.of({"name": "O", "subject_transforms": [{"src": "a.>"}, {"src": "b.>"}]})
    _FilteredMirror(origin='O', subjects=('a.>', 'b.>'))
    >>> _FilteredMirror.of({"name": "O"}), _FilteredMirror.of({})
    (None, None)
    >>> _FilteredMirror.of({"name": "O", "filter_subject": "o.x", "external": {"api": "$JS.hub.API"}})
    """

    origin: str
    subjects: tuple[str, ...]

    @classmethod
    def of(cls, mirror: dict[str, Any]) -> _FilteredMirror | None:
        """The filter of a stream's ``mirror`` config; None for no filtered mirror, or one
        of a stream in another domain (its API is not asked: holes stay as they are)."""
        subjects = [mirror.get("filter_subject")]
        subjects += [t.get("src") for t in mirror.get("subject_transforms") or []]
        kept = tuple(s for s in subjects if s and s != ">")
        if not kept or not mirror.get("name") or mirror.get("external"):
            return None
        return cls(str(mirror["name"]), kept)

    def __str__(self) -> str:
        return f"{', '.join(self.subjects)} of {self.origin}"

    async def origin_state(self, nc: Client) -> tuple[int, np.ndarray] | None:
        """The origin's first sequence and its deleted ones; None when it cannot be asked
        (gone, not allowed)."""
        try:
            state = await _client.stream_state(nc, self.origin, deleted=True)
        except SourceError:
            return None
        deleted = np.unique(np.asarray(state.get("deleted") or [], dtype=np.int64))
        return int(state["first_seq"]), deleted

    async def split(
        self, nc: Client, gap: Gap, origin_first: int, origin_deleted: np.ndarray
    ) -> list[Gap]:
        """``gap`` cut into what the origin holds on other subjects (``never-issued``) and
        the rest (still ``gap.reason``: deleted here, or gone from the origin too, whose
        subject nobody can tell).

        One lookup per message the mirror should have had; past
        :data:`_MIRROR_LOOKUPS` of them the rest of the gap keeps its reason.
        """
        parts: list[Gap] = []
        at = gap.first
        if at < origin_first:  # gone from the origin as well: which subject is unknown
            parts.append(Gap(at, min(gap.last, origin_first - 1), _UNKNOWABLE))
            at = origin_first
        lookups = 0
        while at <= gap.last:
            if lookups == _MIRROR_LOOKUPS:
                parts.append(Gap(at, gap.last, gap.reason))
                break
            lookups += 1
            found = [await _client.next_matching(nc, self.origin, at, s) for s in self.subjects]
            nxt = min((f for f in found if f is not None), default=None)
            if nxt is None or nxt > gap.last:
                parts += _skipped(at, gap.last, origin_deleted)
                break
            if nxt > at:
                parts += _skipped(at, nxt - 1, origin_deleted)
            parts.append(Gap(nxt, nxt, gap.reason))  # one the mirror should have had
            at = nxt + 1
        return _merged(parts)


#: A filtered mirror's hole its origin no longer holds either (split()'s mark, recorded
#: under the hole's own reason): which subject it was on, so whether it was lost, no
#: one can tell.
_UNKNOWABLE: Final = "unknowable"


def _skipped(first: int, last: int, origin_deleted: np.ndarray) -> list[Gap]:
    """Positions ``first..last`` that no message of the mirror's subjects holds in the
    origin: ``never-issued`` here, but those the origin has deleted are
    :data:`_UNKNOWABLE` (the origin can no longer say which subject they were on).

    >>> _skipped(5, 9, np.array([3, 6, 7]))  # doctest: +NORMALIZE_WHITESPACE
    [Gap(first=5, last=5, reason='never-issued'), Gap(first=6, last=7, reason='unknowable'),
     Gap(first=8, last=9, reason='never-issued')]
    """
    return _split(first, last, origin_deleted, _UNKNOWABLE, "never-issued")


#: Messages a filtered mirror should have had that one gap looks up in its origin at most.
_MIRROR_LOOKUPS = 1_000


def _merged(gaps: list[Gap]) -> list[Gap]:
    """Adjacent gaps of the same reason as one.

    >>> _merged([Gap(1, 2, "deleted"), Gap(3, 3, "deleted"), Gap(4, 5, "never-issued")])
    [Gap(first=1, last=3, reason='deleted'), Gap(first=4, last=5, reason='never-issued')]
    """
    out: list[Gap] = []
    for gap in gaps:
        if out and out[-1].reason == gap.reason and out[-1].last + 1 == gap.first:
            out[-1] = Gap(out[-1].first, gap.last, gap.reason)
        else:
            out.append(gap)
    return out


def _removes_inside(config: dict[str, Any]) -> str | None:
    """What makes a stream remove messages inside itself by design, from its config.

    A subject delete marker TTL turns per-message TTL on (NATS 2.11+); a mirror
    honours its origin's ``Nats-TTL`` only with its own ``allow_msg_ttl``.

    A per-subject limit (``max_msgs_per_subject``: every KV bucket's history)
    removes a subject's older messages as new ones come.

    >>> _removes_inside({"allow_msg_ttl": True, "allow_msg_schedules": True})
    'per-message TTL (Nats-TTL), one-shot schedules once fired'
    >>> _removes_inside({"max_msgs_per_subject": 1})
    "max_msgs_per_subject 1 (a subject's older messages)"
    >>> _removes_inside({"max_age": 60, "max_msgs_per_subject": -1}) is None
    True
    """
    causes = []
    per_subject = int(config.get("max_msgs_per_subject") or 0)
    if per_subject > 0:
        causes.append(f"max_msgs_per_subject {per_subject} (a subject's older messages)")
    if config.get("allow_msg_ttl") or config.get("subject_delete_marker_ttl"):
        causes.append("per-message TTL (Nats-TTL)")
    if config.get("allow_msg_schedules"):
        causes.append("one-shot schedules once fired")
    return ", ".join(causes) or None


def _limits(config: dict[str, Any]) -> str | None:
    """The limits by which a stream drops its oldest messages, from its config (with
    discard new, a full stream refuses new messages instead: only its age limit drops).

    >>> _limits({"max_age": 4_000_000_000, "max_msgs": -1, "max_bytes": 1_048_576})
    'max_age 4 s, max_bytes 1,048,576'
    >>> _limits({"max_msgs": 10, "discard": "new"}), _limits({"max_age": 0, "max_msgs": -1})
    (None, None)
    """
    limits = []
    if (age := int(config.get("max_age") or 0)) > 0:  # nanoseconds
        limits.append(f"max_age {duration(age / 1e9)}")
    if config.get("discard") != "new":
        for name in ("max_msgs", "max_bytes"):
            if (value := int(config.get(name) or 0)) > 0:
                limits.append(f"{name} {value:,}")
    return ", ".join(limits) or None


_NO_SEQUENCES = np.array([], np.int64)


def _classify(
    first: int,
    last: int,
    first_seq: int,
    deleted: np.ndarray,
    *,
    deleted_as: str = "deleted",
    known: np.ndarray = _NO_SEQUENCES,
) -> list[Gap]:
    """Split ``first``..``last`` into runs of retention loss, deletions and plain jumps.

    ``deleted_as`` is the reason for the sequences the stream lists as deleted:
    ``retention`` for a stream that removes messages by design (TTL).

    >>> _classify(1, 9, 4, np.array([6, 7]))
    [Gap(first=1, last=3, reason='retention'), Gap(first=4, last=5, reason='sequence-jump'), Gap(first=6, last=7, reason='deleted'), Gap(first=8, last=9, reason='sequence-jump')]
    >>> _classify(6, 7, 1, np.array([2, 6, 7, 9]))
    [Gap(first=6, last=7, reason='deleted')]
    >>> _classify(6, 7, 1, np.array([6, 7]), deleted_as="retention")
    [Gap(first=6, last=7, reason='retention')]
    >>> _classify(1, 3, 9, np.array([]), known=np.array([2]))  # deleted before a purge
    [Gap(first=1, last=1, reason='retention'), Gap(first=2, last=2, reason='deleted'), Gap(first=3, last=3, reason='retention')]
    """
    gaps: list[Gap] = []
    if first < first_seq:
        # Below the first sequence now, but deleted from inside it before (``known``):
        # a purge or a limit since moved the first sequence past a deletion.
        gaps += _split(first, min(last, first_seq - 1), known, deleted_as, "retention")
        first = first_seq
    if first > last:
        return gaps
    return gaps + _split(first, last, deleted, deleted_as, "sequence-jump")


def _split(first: int, last: int, marked: np.ndarray, inside_as: str, outside_as: str) -> list[Gap]:
    """``first``..``last`` in runs: the sorted ``marked`` sequences as ``inside_as``, the
    rest as ``outside_as``.

    >>> _split(1, 6, np.array([0, 2, 3, 5]), "deleted", "sequence-jump")  # doctest: +NORMALIZE_WHITESPACE
    [Gap(first=1, last=1, reason='sequence-jump'), Gap(first=2, last=3, reason='deleted'),
     Gap(first=4, last=4, reason='sequence-jump'), Gap(first=5, last=5, reason='deleted'),
     Gap(first=6, last=6, reason='sequence-jump')]
    """
    # Two binary searches: a flush with thousands of gaps costs lookups, not scans.
    inside = marked[np.searchsorted(marked, first) : np.searchsorted(marked, last, "right")]
    breaks = np.flatnonzero(np.diff(inside) != 1) + 1
    starts = np.concatenate([inside[:1], inside[breaks]]).tolist()
    ends = np.concatenate([inside[breaks - 1], inside[-1:]]).tolist()
    gaps: list[Gap] = []
    cursor = first
    for a, b in zip(starts, ends, strict=True):
        if a > cursor:
            gaps.append(Gap(cursor, a - 1, outside_as))
        gaps.append(Gap(a, b, inside_as))
        cursor = b + 1
    if cursor <= last:
        gaps.append(Gap(cursor, last, outside_as))
    return gaps


def _recorded_gaps(writer: ArchiveWriter) -> list[tuple[int, int]]:
    """Gap ranges already in the archive for this source (a restart finds them again)."""
    try:
        reader = ArchiveReader(writer.root)
        rows = reader.sql(
            "select first_missing, last_missing from gap_records where source = ?",
            params=[writer.source],
        ).fetchall()
    except ArchiveError:
        return []
    return [(int(a), int(b)) for a, b in rows]


class _Recorded:
    """Recorded gap ranges, merged and sorted: what a new gap adds is found by bisection.

    >>> r = _Recorded([(8, 12), (3, 4)])
    >>> r.uncovered(1, 10)
    [(1, 2), (5, 7)]
    >>> r.add([(5, 7)]); r.uncovered(1, 14)
    [(1, 2), (13, 14)]
    """

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.add(ranges)

    def add(self, ranges: Iterable[tuple[int, int]]) -> None:
        merged: list[tuple[int, int]] = []
        for a, b in sorted([*zip(self.starts, self.ends, strict=True), *ranges]):
            if merged and a <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        self.starts = [a for a, _ in merged]
        self.ends = [b for _, b in merged]

    def uncovered(self, first: int, last: int) -> list[tuple[int, int]]:
        """Parts of ``first``..``last`` inside no recorded range."""
        parts: list[tuple[int, int]] = []
        i = max(bisect.bisect_right(self.starts, first) - 1, 0)
        at = first
        while at <= last and i < len(self.starts) and self.starts[i] <= last:
            if self.ends[i] >= at:
                if self.starts[i] > at:
                    parts.append((at, self.starts[i] - 1))
                at = self.ends[i] + 1
            i += 1
        if at <= last:
            parts.append((at, last))
        return parts
