"""The control connection (nats-py): connecting, stream state, ordered consumers.

Errors become :class:`~workbench.errors.SourceError` with the server URL
redacted, so a password in ``nats://user:pass@host`` is never printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import ssl
import threading
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import unquote

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from workbench._text import did_you_mean
from workbench.errors import SourceError
from workbench.sources.jetstream._auth import NatsAuth
from workbench.sources.jetstream._wire import server_urls, tls_wanted
from workbench.sources.redaction import redact

T = TypeVar("T")

__all__ = [
    "check_stream_name",
    "connect",
    "create_ordered_consumer",
    "delete_consumer",
    "deliver_subject",
    "jetstream_api",
    "message_time_ns",
    "next_matching",
    "rfc3339_ns",
    "run_sync",
    "stream_info",
    "stream_state",
    "tls_context",
]


def run_sync(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to the end from synchronous code, also inside a running event loop.

    Jupyter runs one: ``asyncio.run`` refuses to start another there, so the
    coroutine gets a thread and a loop of its own; its error is raised here.
    An interrupt (the kernel's stop button) cancels it, so its ``finally``
    blocks keep what it did, and is raised once it has stopped.

    >>> async def answer() -> int:
    ...     return 42
    >>> run_sync(answer())
    42
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main)
    box: list[Any] = []
    started: list[tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]]] = []

    async def tracked() -> T:
        task = asyncio.current_task()
        assert task is not None
        started.append((asyncio.get_running_loop(), task))
        return await main

    done = threading.Event()

    def run() -> None:
        try:
            box.append(asyncio.run(tracked()))
        except BaseException as exc:  # raised in the caller's thread below
            box.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name="workbench-nats").start()
    # Waits on an Event, not Thread.join: an interrupt inside join() leaves the thread
    # marked as stopped in CPython 3.11, and a plain join() holds the interrupt until the end.
    try:
        while not done.wait(0.1):
            pass
    except KeyboardInterrupt:
        while not started and not done.wait(0.01):
            pass
        if started:
            loop, task = started[0]
            loop.call_soon_threadsafe(task.cancel)
        done.wait()
        raise
    if isinstance(box[0], BaseException):
        raise box[0]
    result: T = box[0]
    return result


def _error_log() -> tuple[list[str], Callable[[Exception], Awaitable[None]]]:
    """The errors a connection reports, kept so a request that times out can say why.

    A permission the user lacks does not fail the request: the server
    reports it on the connection, and the request times out.
    """
    seen: list[str] = []

    async def note(exc: Exception) -> None:
        seen.append(str(exc).strip())
        del seen[:-10]

    return seen, note


def tls_context(
    cert: str | os.PathLike[str] | None = None,
    key: str | os.PathLike[str] | None = None,
    ca: str | os.PathLike[str] | None = None,
) -> ssl.SSLContext | None:
    """A TLS context from a client certificate and key (mutual TLS) and a CA file
    to trust, as the ``nats`` CLI takes them; None when none is given.

    >>> tls_context() is None
    True
    >>> tls_context(cert="/no/such.pem")
    Traceback (most recent call last):
    ...
    workbench.errors.SourceError: --tls-cert needs --tls-key (the client certificate's private key)
    >>> tls_context(ca="/no/such/ca.pem")
    Traceback (most recent call last):
    ...
    workbench.errors.SourceError: cannot read the TLS files (--tls-ca /no/such/ca.pem): No such file or directory
    """
    if cert is None and key is None and ca is None:
        return None
    if (cert is None) != (key is None):
        missing = (
            "--tls-key (the client certificate's private key)"
            if key is None
            else ("--tls-cert (the client certificate)")
        )
        given = "--tls-cert" if key is None else "--tls-key"
        raise SourceError(f"{given} needs {missing}")
    named = ", ".join(
        f"{option} {path}"
        for option, path in (("--tls-cert", cert), ("--tls-key", key), ("--tls-ca", ca))
        if path is not None
    )
    try:
        context = ssl.create_default_context(cafile=None if ca is None else os.fspath(ca))
        if cert is not None and key is not None:
            context.load_cert_chain(os.fspath(cert), os.fspath(key))
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SourceError(f"cannot read the TLS files ({named}): {reason}") from None
    return context


class _Client(Client):
    """nats-py's client, upgrading every connection to TLS when TLS is asked for.

    nats-py upgrades only when a server's INFO says ``tls_required``: a
    ``tls://`` URL to a server that merely offers TLS, a fallback server of
    the list, or one the cluster announces would get the credentials in
    plain text. Each INFO is marked as requiring TLS here, before nats-py
    reads it, so the handshake comes first, and fails on a server without
    TLS, before anything is sent.
    """

    def __init__(self, *, force_tls: bool) -> None:
        super().__init__()
        self._wb_force_tls = force_tls

    async def _process_info(self, info: dict[str, Any], initial_connection: bool = False) -> None:
        if self._wb_force_tls:
            info["tls_required"] = True  # the very dict nats-py decides the upgrade on
        await super()._process_info(info, initial_connection=initial_connection)


async def connect(
    url: str,
    *,
    reconnect: bool = True,
    tls: ssl.SSLContext | None = None,
    auth: NatsAuth | None = None,
) -> Client:
    """Connect to NATS at ``url`` (``a,b`` for several servers); keep reconnecting
    in the background if ``reconnect``. ``tls`` (see :func:`tls_context`) asks
    for TLS as a ``tls://`` URL does, with its certificate and trust; either
    way every server of the list, and every one the cluster announces, is
    talked to over TLS only. ``auth`` signs the server's nonce with a user's
    nkey (``--creds``, ``--nkey``)."""
    # nats-py retries its first connect forever when reconnects are on (a wrong
    # password, a port that is not NATS): a TCP probe, then a first connect that
    # may fail, and reconnects are switched on only once connected.
    force_tls = tls_wanted(url, tls)
    info = await _probe(url, tls_wanted=force_tls)
    servers, credentials = _servers(url)
    errors, note = _error_log()
    options: dict[str, Any] = dict(credentials)
    if tls is not None:
        options["tls"] = tls
    if auth is not None:
        options.update(auth.nats_py_options())
    nc = _Client(force_tls=force_tls)
    try:
        await nc.connect(
            servers,
            name="workbench",
            connect_timeout=5,
            # In the written order, so the server probed first is the one connected to.
            dont_randomize=True,
            allow_reconnect=False,
            reconnect_time_wait=0.25,  # type: ignore[arg-type]  # a float works; typed int
            error_cb=note,
            **options,
        )
    except Exception as exc:  # nats-py raises assorted errors for an unreachable server
        said = redact(str(exc)) or type(exc).__name__
        # Refused for want of a client certificate: an alert, or (TLS 1.3) a lost connection.
        if "CERTIFICATE_REQUIRED" in said or (
            info.get("tls_verify") and "certificate verify failed" not in said
        ):
            said += " (the server verifies clients: give --tls-cert and --tls-key)"
        elif "authorization violation" in said.lower():
            if auth is not None:
                said += auth.refused()
            elif not credentials:
                said += (
                    " (the server wants credentials: --creds, --nkey or user:password@ in the URL)"
                )
        raise SourceError(f"cannot connect to NATS at {redact(url)}: {said}") from None
    nc._wb_errors = errors  # type: ignore[attr-defined]
    if reconnect:  # read by nats-py on each disconnect
        nc.options["allow_reconnect"] = True
        nc.options["max_reconnect_attempts"] = -1
    return nc


def _servers(url: str) -> tuple[list[str], dict[str, str]]:
    """Server URLs without credentials, and the credentials, percent-decoded.

    nats-py passes ``user:p%40ss`` to the server as it is written; a
    password is decoded here, as the URL standard (and the wire reader) do.

    >>> _servers("nats://bob:p%40ss@h1:4222, h2")
    (['nats://h1:4222', 'nats://h2'], {'user': 'bob', 'password': 'p@ss'})
    >>> _servers("nats://s3cret-token@h1")
    (['nats://h1'], {'token': 's3cret-token'})
    """
    servers: list[str] = []
    credentials: dict[str, str] = {}
    for _, parts in server_urls(url):
        userinfo, _, host = parts.netloc.rpartition("@")
        if userinfo and not credentials:
            user, has_password, password = userinfo.partition(":")
            if has_password:
                credentials = {"user": unquote(user), "password": unquote(password)}
            else:
                credentials = {"token": unquote(user)}
        servers.append(parts._replace(netloc=host).geturl())
    return servers, credentials


async def _probe(url: str, *, tls_wanted: bool = False) -> dict[str, Any]:
    """Reach the first server that answers and return its INFO (read where TLS is wanted);
    refuse one that offers no TLS there, in one line rather than as a failed handshake.

    (WebSocket servers are left to nats-py: their INFO comes inside the
    WebSocket, and ``wss://`` is TLS in the transport.)
    """
    reasons = []
    for one, parts in server_urls(url):
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(parts.hostname or "127.0.0.1", parts.port or 4222), 5
            )
        except (OSError, TimeoutError) as exc:
            reasons.append(str(exc) or type(exc).__name__)
            continue
        info: dict[str, Any] = {}
        try:
            if tls_wanted and parts.scheme not in ("ws", "wss"):
                info = await _info(reader)
                _offers_tls(redact(one), info)
        finally:
            writer.close()
        return info
    raise SourceError(f"cannot connect to NATS at {redact(url)}: {'; '.join(reasons)}")


async def _info(reader: asyncio.StreamReader) -> dict[str, Any]:
    """The server's INFO (empty when the first line is not one)."""
    with contextlib.suppress(OSError, TimeoutError, ValueError):
        line = await asyncio.wait_for(reader.readline(), 5)
        if line.startswith(b"INFO "):
            info: dict[str, Any] = json.loads(line[5:])
            return info
    return {}


def _offers_tls(server: str, info: dict[str, Any]) -> None:
    """Refuse a server that offers no TLS where TLS was asked for (``tls://``, or a
    TLS context given); one that offers it without requiring it is talked to over TLS.

    >>> _offers_tls("tls://h:4222", {"tls_required": True})
    >>> _offers_tls("tls://h:4222", {"tls_available": True})
    >>> _offers_tls("tls://u:***@h:4222", {"server_id": "N1"})
    Traceback (most recent call last):
    ...
    workbench.errors.SourceError: TLS was asked for tls://u:***@h:4222, but the server there does not offer TLS; nothing was sent (use nats:// to talk to it unencrypted, knowingly)
    """
    if info.get("tls_required") or info.get("tls_available"):
        return
    if not info:
        raise SourceError(
            f"TLS was asked for {server}, but what answers there is not a NATS server"
        )
    raise SourceError(
        f"TLS was asked for {server}, but the server there does not offer TLS; nothing was "
        "sent (use nats:// to talk to it unencrypted, knowingly)"
    )


async def jetstream_api(
    nc: Client, subject: str, request: dict[str, Any] | None = None, *, timeout: float = 5
) -> dict[str, Any]:
    """One JetStream API request (``$JS.API.<subject>``); an API error becomes SourceError."""
    payload = json.dumps(request).encode() if request is not None else b""
    errors: list[str] = getattr(nc, "_wb_errors", [])
    before = list(errors)
    try:
        msg = await nc.request(f"$JS.API.{subject}", payload, timeout=timeout)
    except NoRespondersError:
        raise SourceError("JetStream is not enabled on this NATS server") from None
    except NatsTimeout:
        said = [e for e in errors if e not in before]
        if said:  # most often a permission this user lacks ($JS.API.> or _INBOX.>)
            raise SourceError(
                f"JetStream API {subject} got no reply; the server said: {redact(said[-1])}"
            ) from None
        raise SourceError(f"JetStream API {subject} timed out") from None
    reply: dict[str, Any] = json.loads(msg.data)
    error = reply.get("error")
    if error:
        raise SourceError(f"JetStream: {error.get('description', error)} ({subject})")
    return reply


def check_stream_name(stream: str) -> None:
    """Refuse a name NATS cannot have: it would fail later as a timeout or a wrong subject.

    >>> check_stream_name("ORDERS.v2")
    Traceback (most recent call last):
    ...
    workbench.errors.SourceError: 'ORDERS.v2' is not a JetStream stream name: no spaces, '.', '*', '>', '/' or '\\'
    """
    if not stream or any(ch in stream for ch in " \t\r\n.*>/\\") or not stream.isprintable():
        raise SourceError(
            f"{stream!r} is not a JetStream stream name: no spaces, '.', '*', '>', '/' or '\\'"
        )


async def stream_info(nc: Client, stream: str, *, deleted: bool = False) -> dict[str, Any]:
    """The stream's info: ``config``, ``created`` and ``state`` (with ``deleted`` if asked)."""
    try:
        return await jetstream_api(
            nc, f"STREAM.INFO.{stream}", {"deleted_details": True} if deleted else None
        )
    except SourceError as exc:
        if "not found" in str(exc):
            raise SourceError(f"stream {stream} not found{await _similar(nc, stream)}") from None
        raise


async def _similar(nc: Client, stream: str) -> str:
    """``; did you mean ...?`` naming streams whose names are close to ``stream``."""
    try:
        names = (await jetstream_api(nc, "STREAM.NAMES", {})).get("streams") or []
    except SourceError:  # no permission to list: the plain message will do
        return ""
    return did_you_mean(stream, names)


async def stream_state(nc: Client, stream: str, *, deleted: bool = False) -> dict[str, Any]:
    """The stream's ``state`` (messages, first_seq, last_seq, and the ``deleted`` list if asked)."""
    state: dict[str, Any] = (await stream_info(nc, stream, deleted=deleted))["state"]
    return state


async def message_time_ns(nc: Client, stream: str, seq: int) -> int | None:
    """The server time (ns since the epoch) of message ``seq``, None if it is gone."""
    try:
        reply = await jetstream_api(nc, f"STREAM.MSG.GET.{stream}", {"seq": seq})
    except SourceError as exc:
        if "no message found" in str(exc):
            return None
        raise
    return rfc3339_ns(reply["message"]["time"])


async def next_matching(nc: Client, stream: str, seq: int, subject: str) -> int | None:
    """The sequence of the first message of ``stream`` at or after ``seq`` on ``subject``
    (wildcards allowed), None if there is none."""
    message = await next_message(nc, stream, seq, subject)
    return None if message is None else int(message["seq"])


async def next_message(
    nc: Client, stream: str, seq: int, subject: str = ">"
) -> dict[str, Any] | None:
    """The first message of ``stream`` at or after ``seq`` on ``subject`` as the server
    stores it (``seq``, ``subject``, ``time``, base64 ``hdrs`` and ``data``), or None."""
    try:
        reply = await jetstream_api(
            nc, f"STREAM.MSG.GET.{stream}", {"seq": seq, "next_by_subj": subject}
        )
    except SourceError as exc:
        if "no message found" in str(exc):
            return None
        raise
    message: dict[str, Any] = reply["message"]
    return message


def rfc3339_ns(text: str) -> int:
    """Nanoseconds since the epoch of a NATS timestamp (RFC 3339, up to 9 digits).

    >>> rfc3339_ns("1970-01-01T00:00:01.000000123Z"), rfc3339_ns("1970-01-01T01:00:00+01:00")
    (1000000123, 0)
    """
    head, dot, rest = text.partition(".")
    digits, zone = "", ""
    if dot:  # the fraction, then the zone
        cut = next((i for i, ch in enumerate(rest) if not ch.isdigit()), len(rest))
        digits, zone = rest[:cut], rest[cut:]
    whole = dt.datetime.fromisoformat(head + zone)
    if whole.tzinfo is None:
        whole = whole.replace(tzinfo=dt.UTC)
    return int(whole.timestamp()) * 1_000_000_000 + int((digits + "000000000")[:9])


async def create_ordered_consumer(
    nc: Client, stream: str, *, start_seq: int, deliver_subject: str, heartbeat: float
) -> str:
    """An ephemeral push consumer as nats.go's ordered consumer makes one; returns its name.

    No acks, one delivery, flow control and idle heartbeats, memory storage;
    the server drops it by itself once the archiver is gone.
    """
    config = {
        "deliver_policy": "by_start_sequence",
        "opt_start_seq": max(start_seq, 1),
        "ack_policy": "none",
        "max_deliver": 1,
        "replay_policy": "instant",
        "flow_control": True,
        "idle_heartbeat": int(heartbeat * 1e9),
        "deliver_subject": deliver_subject,
        "mem_storage": True,
        "num_replicas": 1,
        "inactive_threshold": int(max(5.0, heartbeat * 5) * 1e9),
    }
    try:
        reply = await jetstream_api(
            nc, f"CONSUMER.CREATE.{stream}", {"stream_name": stream, "config": config}
        )
    except SourceError as exc:
        if "workqueue" in str(exc).lower():  # reading it would take the work from its workers
            raise SourceError(
                f"stream {stream} has WorkQueue retention: a consumer that reads it removes "
                "the messages it acknowledges; archive a mirror of it (a stream with "
                f"mirror={stream}, limits retention) instead"
            ) from None
        raise
    name: str = reply["name"]
    return name


async def delete_consumer(nc: Client, stream: str, name: str) -> None:
    """Delete a consumer, ignoring failure (it expires by itself)."""
    with contextlib.suppress(SourceError, TimeoutError, OSError):
        await asyncio.wait_for(jetstream_api(nc, f"CONSUMER.DELETE.{stream}.{name}", timeout=1), 2)


def deliver_subject() -> str:
    """A fresh, unguessable deliver subject."""
    # _INBOX.> is what a least-privileged NATS user may subscribe to, by convention.
    return f"_INBOX.wb.{uuid.uuid4().hex}"
