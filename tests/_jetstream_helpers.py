"""Publishing test messages to a real JetStream server (shared by the JetStream tests)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import nats
from nats.js.api import StreamConfig

Message = tuple[str, bytes, dict[str, str] | None]


def ce_message(i: int, *, subject: str = "mem.created", stream: str = "memory-1") -> Message:
    """A CloudEvents binary-mode message like the scenario generator publishes."""
    headers = {
        "Nats-Msg-Id": f"evt-{i}",
        "ce-specversion": "1.0",
        "ce-id": f"evt-{i}",
        "ce-type": "MemoryCreated",
        "ce-source": "/memories",
        "ce-time": "2024-05-01T12:00:00.123456Z",
        "ce-subject": stream,
        "ce-correlationid": f"req-{i // 2}",
        "ce-causationid": f"cmd-{i}",
        "ce-schemaversion": "2",
    }
    return subject, json.dumps({"memory_id": i, "text": f"memory {i}"}).encode(), headers


async def _publish(
    url: str,
    stream: str,
    messages: Sequence[Message],
    config: dict[str, Any] | None,
    connect: dict[str, Any],
) -> list[int]:
    nc = await nats.connect(url, **connect)
    try:
        js = nc.jetstream()
        if config is not None:
            cfg = {"subjects": [f"{stream.lower()}.>"]} | config
            await js.add_stream(StreamConfig(name=stream, **cfg))
        seqs = []
        for subject, payload, headers in messages:
            ack = await js.publish(f"{stream.lower()}.{subject}", payload, headers=headers)
            seqs.append(ack.seq)
        return seqs
    finally:
        await nc.close()


def publish(
    url: str,
    stream: str,
    messages: Sequence[Message],
    *,
    create: dict[str, Any] | None = None,
    **connect: Any,
) -> list[int]:
    """Publish ``messages`` (creating the stream first when ``create`` is given); return sequences.

    ``connect`` goes to ``nats.connect`` (``user=``, ``password=``, ``tls=``).
    """
    return asyncio.run(_publish(url, stream, messages, create, connect))


async def _api(url: str, subject: str, body: dict[str, Any] | None) -> dict[str, Any]:
    nc = await nats.connect(url)
    try:
        msg = await nc.request(subject, json.dumps(body).encode() if body else b"", timeout=5)
        return json.loads(msg.data)  # type: ignore[no-any-return]
    finally:
        await nc.close()


def api(url: str, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """A raw JetStream API request."""
    return asyncio.run(_api(url, subject, body))


def delete_messages(url: str, stream: str, seqs: Sequence[int]) -> None:
    for seq in seqs:
        reply = api(url, f"$JS.API.STREAM.MSG.DELETE.{stream}", {"seq": seq})
        assert reply.get("success"), reply


def delete_stream(url: str, stream: str) -> None:
    api(url, f"$JS.API.STREAM.DELETE.{stream}")


def raw_publish(url: str, subject: str | bytes, header_lines: list[bytes], payload: bytes) -> None:
    """Publish with exact header (and subject) bytes: repeated keys, bytes that are not
    UTF-8, which nats-py's dict and str cannot express."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port or 4222), timeout=5) as sock:
        reader = sock.makefile("rb")
        reader.readline()  # INFO
        block = b"NATS/1.0\r\n" + b"".join(line + b"\r\n" for line in header_lines) + b"\r\n"
        sock.sendall(
            b'CONNECT {"verbose":false,"headers":true,"protocol":1}\r\n'
            + b"HPUB %s %d %d\r\n"
            % (
                subject if isinstance(subject, bytes) else subject.encode(),
                len(block),
                len(block) + len(payload),
            )
            + block
            + payload
            + b"\r\nPING\r\n"
        )
        while not reader.readline().startswith(b"PONG"):
            pass
