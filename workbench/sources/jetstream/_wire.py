"""The data path: one NATS connection reading a push consumer's deliveries in bulk.

nats-py builds a ``Msg`` object and a header ``dict`` per message; that costs
more than the whole archiver may spend per message at 100k msg/s, and a dict
loses repeated header keys. This reader speaks the (small, text) NATS client
protocol over an asyncio stream, slices deliveries straight out of the read
buffer and parses JetStream's ``$JS.ACK`` reply subject for the stream
sequence, timestamp, delivery count and pending count. It answers PINGs,
flow-control requests and stall notices; everything else (stream info,
consumer creation) stays with nats-py on the control connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from dataclasses import dataclass, field
from urllib.parse import SplitResult, unquote, urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from workbench.errors import SourceError
from workbench.sources.jetstream._auth import NatsAuth
from workbench.sources.redaction import redact, remember

_CRLF = b"\r\n"
_READ_SIZE = 1 << 22


def _not_the_tls_eof_notice(record: logging.LogRecord) -> bool:
    """Drop asyncio's "returning true from eof_received() has no effect when using ssl".

    A stream upgraded with ``start_tls`` (this reader's, and nats-py's) keeps
    a protocol that still believes it is plain TCP; when the server closes,
    asyncio logs that notice, which a CLI user would read as an error.
    """
    return "eof_received() has no effect when using ssl" not in record.getMessage()


logging.getLogger("asyncio").addFilter(_not_the_tls_eof_notice)


@dataclass
class Deliveries:
    """Messages read from the wire, column by column (one entry per message)."""

    seq: list[int] = field(default_factory=list)
    ts_ns: list[int] = field(default_factory=list)
    delivered: list[int] = field(default_factory=list)
    subject: list[bytes] = field(default_factory=list)
    headers: list[bytes] = field(default_factory=list)
    payload: list[bytes] = field(default_factory=list)
    #: Bytes of payloads and headers held (what bounds an archiver's memory).
    nbytes: int = 0

    def __len__(self) -> int:
        return len(self.seq)

    def split(self, n: int) -> tuple[Deliveries, Deliveries]:
        """The first ``n`` messages and the rest."""
        head, tail = Deliveries(), Deliveries()
        for name in ("seq", "ts_ns", "delivered", "subject", "headers", "payload"):
            values = getattr(self, name)
            setattr(head, name, values[:n])
            setattr(tail, name, values[n:])
        head.nbytes = sum(map(len, head.payload)) + sum(map(len, head.headers))
        tail.nbytes = self.nbytes - head.nbytes
        return head, tail

    def extend(self, other: Deliveries) -> None:
        self.seq += other.seq
        self.ts_ns += other.ts_ns
        self.delivered += other.delivered
        self.subject += other.subject
        self.headers += other.headers
        self.payload += other.payload
        self.nbytes += other.nbytes


@dataclass
class ReadResult:
    """What one read of the wire produced, beside the messages themselves."""

    heartbeat: bool = False
    #: Consumer sequence skipped or the server said the consumer is gone: recreate it.
    reset: bool = False
    #: ``pending`` of the last delivery (messages the consumer still has to deliver).
    pending: int | None = None
    #: ``Nats-Last-Consumer`` of an idle heartbeat: the last consumer sequence sent.
    last_consumer: int | None = None


def server_urls(url: str) -> list[tuple[str, SplitResult]]:
    """Each server of a comma-separated ``url`` list, as written and parsed (nats:// by default).

    Its secrets are remembered for :func:`redact` first, and a URL that does
    not parse is a one-line error.

    >>> [parts.port for _, parts in server_urls("h1:4223, nats://h2")]
    [4223, None]
    >>> server_urls("nats://u:pw@[::1:4222")
    Traceback (most recent call last):
    ...
    workbench.errors.SourceError: cannot read the NATS URL nats://u:***@[::1:4222: Invalid IPv6 URL; percent-encode '/', '@' and ':' in a user or password (%2F, %40, %3A)
    >>> server_urls("nats://u:p@ss@127.0.0.1")
    Traceback (most recent call last):
    ...
    workbench.errors.SourceError: cannot read the NATS URL nats://u:***@127.0.0.1: an '@' in the user or password; percent-encode '/', '@' and ':' in them (%2F, %40, %3A)
    >>> server_urls("http://127.0.0.1:4222")
    Traceback (most recent call last):
    ...
    workbench.errors.SourceError: http://127.0.0.1:4222 is not a NATS URL: the scheme is one of nats://, tls://, ws://, wss://, not http://
    >>> server_urls("nats://foo..bar:4222")
    Traceback (most recent call last):
    ...
    workbench.errors.SourceError: cannot read the NATS URL nats://foo..bar:4222: 'foo..bar' is not a host name (an empty label, or one over 63 characters)
    """
    remember(url, token=True)
    servers = []
    for one in url.split(","):
        one = one.strip()
        if not one:
            raise SourceError(f"cannot read the NATS URL {redact(url)!r}: a server is missing")
        try:
            parts = urlsplit(one if "://" in one else f"nats://{one}")
            parts.port  # noqa: B018 -- parsed on access: a bad port raises here
        except ValueError as exc:
            raise SourceError(
                f"cannot read the NATS URL {redact(url)}: {exc}; percent-encode '/', '@' and "
                "':' in a user or password (%2F, %40, %3A)"
            ) from None
        if parts.netloc.count("@") > 1:  # nats-py splits at the first '@', urllib at the last
            raise SourceError(
                f"cannot read the NATS URL {redact(url)}: an '@' in the user or password; "
                "percent-encode '/', '@' and ':' in them (%2F, %40, %3A)"
            )
        if parts.scheme not in _SCHEMES:
            raise SourceError(
                f"{redact(one)} is not a NATS URL: the scheme is one of "
                f"{', '.join(s + '://' for s in _SCHEMES)}, not {parts.scheme}://"
            )
        try:  # what the resolver would fail on, as a UnicodeError
            (parts.hostname or "").encode("idna")
        except UnicodeError:
            raise SourceError(
                f"cannot read the NATS URL {redact(url)}: {parts.hostname!r} is not a host "
                "name (an empty label, or one over 63 characters)"
            ) from None
        servers.append((one, parts))
    return servers


def tls_wanted(url: str, tls: ssl.SSLContext | None) -> bool:
    """TLS for every server of ``url``: a context given, or any ``tls://`` URL in the list
    (a fallback server in plain text would undo the one that asked).

    >>> tls_wanted("nats://a,tls://b", None), tls_wanted("nats://a", None)
    (True, False)
    """
    return tls is not None or any(parts.scheme == "tls" for _, parts in server_urls(url))


#: What nats-py connects to; anything else (http://) would time out after seconds.
_SCHEMES = ("nats", "tls", "ws", "wss")


class WireConnection:
    """A raw NATS connection subscribed to one deliver subject."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._buf = b""
        self._sid = 0
        self.deliver_subject: bytes | None = None
        self.expected_cseq = 1
        self.last_activity = time.monotonic()

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        name: str = "workbench-archiver",
        tls: ssl.SSLContext | None = None,
        auth: NatsAuth | None = None,
    ) -> WireConnection:
        """Connect to the first reachable server of ``url`` (comma-separated list allowed);
        over TLS for a ``tls://`` URL, a server that requires it, or a ``tls`` context;
        ``auth`` answers the server's nonce with a user's nkey (and JWT)."""
        errors: list[str] = []
        context = tls
        if context is None and tls_wanted(url, tls):
            context = ssl.create_default_context()
        for one, parts in server_urls(url):
            if parts.scheme not in {"nats", "tls", ""}:
                raise SourceError(f"{redact(one)}: use a nats:// or tls:// URL")
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        parts.hostname or "127.0.0.1", parts.port or 4222, limit=_READ_SIZE
                    ),
                    5,
                )
            except (OSError, TimeoutError) as exc:
                errors.append(f"{redact(one)}: {exc}")
                continue
            conn = cls(reader, writer)
            await conn._handshake(
                parts.username,
                parts.password,
                name,
                tls=context,
                host=parts.hostname,
                auth=auth,
                server=redact(one),
            )
            return conn
        raise SourceError(f"cannot connect to NATS: {'; '.join(errors)}")

    async def _handshake(
        self,
        user: str | None,
        password: str | None,
        name: str,
        *,
        tls: ssl.SSLContext | None,
        host: str | None,
        auth: NatsAuth | None = None,
        server: str = "",
    ) -> None:
        line = await asyncio.wait_for(self._reader.readline(), 5)
        if not line.startswith(b"INFO "):
            raise SourceError("not a NATS server: no INFO line")
        info = json.loads(line[5:])
        if tls is not None or info.get("tls_required"):
            # As NATS clients do: upgrade after INFO, by default trusting the system's
            # CAs (SSL_CERT_FILE / SSL_CERT_DIR name others), checking the host name.
            context = tls if tls is not None else ssl.create_default_context()
            try:
                await asyncio.wait_for(self._writer.start_tls(context, server_hostname=host), 10)
            except (ssl.SSLError, OSError, TimeoutError) as exc:
                raise SourceError(f"TLS with the NATS server failed: {exc}") from None
        options: dict[str, object] = {
            "verbose": False,
            "pedantic": False,
            "name": name,
            "lang": "python",
            "version": "workbench",
            "protocol": 1,
            "headers": True,
            "no_responders": True,
        }
        nonce = info.get("nonce")
        if auth is not None and isinstance(nonce, str):
            # As nats-py and nats.go: the signed nonce with the JWT or the public key
            # instead of a user and password; a URL's token goes along (auth callout).
            options.update(auth.connect_fields(nonce))
            if user and password is None:
                options["auth_token"] = unquote(user)
        elif user and password is not None:
            options.update(user=unquote(user), **{"pass": unquote(password)})
        elif user:
            options["auth_token"] = unquote(user)
        self._writer.write(b"CONNECT " + json.dumps(options).encode() + _CRLF + b"PING\r\n")
        await self._writer.drain()
        while True:
            reply = await asyncio.wait_for(self._reader.readline(), 5)
            if reply.startswith(b"PONG"):
                return
            if reply.startswith(b"-ERR"):
                said = redact(reply[5:].strip().decode(errors="replace"))
                if auth is not None and "authorization violation" in said.lower():
                    said += auth.refused()
                raise SourceError(
                    f"NATS at {server or 'the server'} refused the connection: {said}"
                )
            if not reply:
                raise SourceError("NATS closed the connection during the handshake")

    async def subscribe(self, subject: str) -> None:
        """Subscribe to ``subject`` (the consumer's deliver subject) and wait until the
        server has it, so that no delivery can precede the subscription."""
        if self.deliver_subject is not None:
            raise RuntimeError("one subscription per connection; open a new one to resubscribe")
        self._sid = 1
        self.deliver_subject = subject.encode()
        self._writer.write(b"SUB %s 1\r\nPING\r\n" % self.deliver_subject)
        await self._writer.drain()
        while True:
            line = await asyncio.wait_for(self._reader.readline(), 5)
            if line.startswith(b"PONG"):
                return
            if line.startswith(b"PING"):
                self._writer.write(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                raise SourceError(f"NATS refused the subscription: {line[5:].strip().decode()}")
            elif not line:
                raise ConnectionError("NATS closed the connection")

    async def read(self, into: Deliveries, *, timeout: float) -> ReadResult:
        """Read what arrives within ``timeout`` and append complete deliveries to ``into``.

        Returns at the first chunk of data (or on timeout with nothing), so the
        caller keeps control of flushing. Raises ``ConnectionError`` when the
        connection is gone.
        """
        result = ReadResult()
        try:
            chunk = await asyncio.wait_for(self._reader.read(_READ_SIZE), timeout)
        except TimeoutError:
            return result
        if not chunk:
            raise ConnectionError("NATS closed the connection")
        self.last_activity = time.monotonic()
        self._buf = self._buf + chunk if self._buf else chunk
        replies = self._parse(into, result)
        if replies:
            self._writer.write(b"".join(replies))
            await self._writer.drain()
        return result

    def _parse(self, out: Deliveries, result: ReadResult) -> list[bytes]:
        """Slice complete messages out of the buffer; reply subjects are parsed in bulk."""
        buf = self._buf
        pos = 0
        end = len(buf)
        replies: list[bytes] = []
        sid = b"%d" % self._sid
        acks: list[bytes] = []
        subjects: list[bytes] = []
        headers: list[bytes] = []
        payloads: list[bytes] = []
        while pos < end:
            eol = buf.find(_CRLF, pos)
            if eol < 0:
                break
            op = buf[pos : pos + 4]
            if op == b"HMSG" or op == b"MSG ":
                parts = buf[pos:eol].split(b" ")
                size = int(parts[-1])
                hlen = int(parts[-2]) if op == b"HMSG" else 0
                start = eol + 2
                stop = start + size
                if stop + 2 > end:
                    break  # the rest of this message has not arrived yet
                pos = stop + 2
                if parts[2] != sid:
                    continue  # a late delivery to a previous subscription
                reply = parts[3] if len(parts) == (6 if hlen else 5) else b""
                if reply[:8] == b"$JS.ACK.":
                    acks.append(reply)
                    # JetStream delivers with the original subject on our subscription id.
                    subjects.append(parts[1])
                    headers.append(buf[start + 10 : start + hlen - 4] if hlen else b"")
                    payloads.append(buf[start + hlen : stop])
                elif hlen and buf[start + 8 : start + 9] == b" ":
                    self._status(buf[start : start + hlen], reply, result, replies)
            elif op == b"PING":
                replies.append(b"PONG\r\n")
                pos = eol + 2
            elif op == b"-ERR":
                raise SourceError(f"NATS error: {buf[pos + 5 : eol].decode(errors='replace')}")
            else:  # PONG, +OK, INFO
                pos = eol + 2
        self._buf = buf[pos:]
        if acks:
            self._take(acks, subjects, headers, payloads, out, result)
        if result.last_consumer is not None and result.last_consumer != self.expected_cseq - 1:
            result.reset = True  # the server delivered messages that we never saw
        return replies

    def _take(
        self,
        acks: list[bytes],
        subjects: list[bytes],
        headers: list[bytes],
        payloads: list[bytes],
        out: Deliveries,
        result: ReadResult,
    ) -> None:
        """Parse the ``$JS.ACK`` subjects of a chunk at once and keep the in-order prefix.

        v1: ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>``;
        v2 adds domain and account hash before the stream and a token at the end.
        """
        head = acks[0]
        try:
            if head.count(b".") == 8:
                # v1: every subject of this consumer starts with the same 4 tokens; the
                # other 5 are numbers that numpy reads in one go.
                prefix = head[: _nth_dot(head, 4) + 1]
                text = b" ".join(acks).replace(prefix, b"").replace(b".", b" ")
                numbers = np.fromstring(text.decode(), dtype=np.int64, sep=" ").reshape(-1, 5)
                fields = [numbers[:, k] for k in range(5)]
            else:
                tokens = pc.split_pattern(pa.array(acks, pa.binary()), b".")
                fields = [
                    np.asarray(pc.list_element(tokens, 6 + k).cast(pa.string()).cast(pa.int64()))
                    for k in range(5)
                ]
        except (ValueError, pa.ArrowException):
            raise SourceError(_unreadable_ack(acks)) from None
        delivered, seq, cseq, ts_ns, pending = fields
        ordered = np.flatnonzero(cseq != self.expected_cseq + np.arange(len(cseq)))
        keep = int(ordered[0]) if len(ordered) else len(cseq)
        if keep < len(cseq):
            result.reset = True  # an ordered consumer never skips: start over after `keep`
        self.expected_cseq += keep
        out.seq += seq[:keep].tolist()
        out.ts_ns += ts_ns[:keep].tolist()
        out.delivered += delivered[:keep].tolist()
        out.subject += subjects[:keep]
        out.headers += headers[:keep]
        out.payload += payloads[:keep]
        out.nbytes += sum(map(len, payloads[:keep])) + sum(map(len, headers[:keep]))
        if keep:
            result.pending = int(pending[keep - 1])

    def _status(self, block: bytes, reply: bytes, result: ReadResult, replies: list[bytes]) -> None:
        code = block[9:12]
        if code == b"100":
            if reply:  # flow control request: an empty reply lets the server go on
                replies.append(b"PUB %s 0\r\n\r\n" % reply)
                return
            stalled = False
            for line in block.split(_CRLF)[1:]:
                key, _, value = line.partition(b":")
                value = value.strip()
                if key == b"Nats-Consumer-Stalled" and value:
                    replies.append(b"PUB %s 0\r\n\r\n" % value)
                    stalled = True
                elif key == b"Nats-Last-Consumer" and value:
                    result.last_consumer = int(value)
            # A stalled consumer is waiting for us, not idle.
            result.heartbeat = result.heartbeat or not stalled
        elif code in (b"409", b"404", b"408"):
            result.reset = True

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()
            await asyncio.wait_for(self._writer.wait_closed(), 2)


def _unreadable_ack(acks: list[bytes]) -> str:
    """Why a chunk's ``$JS.ACK`` subjects cannot be read: one is shown, and the known cause.

    >>> _unreadable_ack([b"$JS.ACK.A%!B(uint64=1).c.1.1.1.17.4.%!d(MISSING)"])[-58:]
    "names holding '%' (upgrade the server, or name it without)"
    """
    bad = next((a for a in acks if b"%!" in a), acks[0])
    text = f"the NATS server sent an ack subject workbench cannot read: {bad.decode(errors='replace')!r}"
    if b"%!" in bad:  # Go's fmt marks a verb it could not fill: the stream name held a '%'
        text += (
            "; NATS servers before 2.10 garble them for stream names holding '%' "
            "(upgrade the server, or name it without)"
        )
    return text


def _nth_dot(text: bytes, n: int) -> int:
    """Index of the ``n``-th dot (1-based) in ``text``."""
    index = -1
    for _ in range(n):
        index = text.index(b".", index + 1)
    return index
