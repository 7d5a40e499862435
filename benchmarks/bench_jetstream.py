"""JetStream archiver throughput against a plain nats-py ``fetch(1000)`` loop, same run.

    python benchmarks/bench_jetstream.py [--server nats://127.0.0.1:4222] [--messages 500000]

Publishes N messages of ~450 bytes with 4 headers into a fresh stream, then
times (1) the baseline: a pull consumer reading everything with
``fetch(1000)`` and acking nothing (no archive), and (2)
``wb.archive_jetstream`` end to end into Parquet. Prints both rates and the
ratio; the stream is deleted afterwards.

Measured on the 2-core development machine (shared with other jobs):
200k messages, machine quiet: 106k-114k msg/s end to end, 3.75x the fetch
loop; 500k messages at load average ~4: 52k msg/s vs 14k (3.7x) on NATS 2.9,
65k vs 16k msg/s (4.0x) on nats-server 2.15.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid

import nats
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

import workbench as wb


async def publish(url: str, stream: str, n: int) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(
        StreamConfig(name=stream, subjects=[f"{stream}.>"], storage=StorageType.FILE)
    )
    text = "x" * 330
    for i in range(n):
        headers = {
            "Nats-Msg-Id": f"evt-{i:08d}",
            "ce-type": "MemoryAccessed",
            "ce-time": "2024-05-01T12:00:00.123456Z",
            "ce-subject": f"memory-{i % 5000}",
        }
        payload = json.dumps({"memory_id": i % 5000, "n": i, "text": text}).encode()
        await nc.publish(f"{stream}.memory.accessed", payload, headers=headers)
        if i % 5000 == 4999:
            await nc.flush()
    await nc.flush()
    while (await js.stream_info(stream)).state.messages < n:
        await asyncio.sleep(0.1)
    await nc.close()


async def fetch_loop(url: str, stream: str, n: int) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe(
        f"{stream}.>", durable=None, stream=stream, config=ConsumerConfig(ack_policy=AckPolicy.NONE)
    )
    started = time.perf_counter()
    got = 0
    while got < n:
        msgs = await sub.fetch(1000, timeout=5)
        got += len(msgs)
    elapsed = time.perf_counter() - started
    await nc.close()
    return got / elapsed


async def drop(url: str, stream: str) -> None:
    nc = await nats.connect(url)
    await nc.jetstream().delete_stream(stream)
    await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="nats://127.0.0.1:4222")
    parser.add_argument("--messages", type=int, default=500_000)
    args = parser.parse_args()
    stream = f"BENCH_{uuid.uuid4().hex[:8].upper()}"
    print(f"publishing {args.messages:,} messages to {stream} ...", flush=True)
    asyncio.run(publish(args.server, stream, args.messages))
    try:
        baseline = asyncio.run(fetch_loop(args.server, stream, args.messages))
        print(f"nats-py fetch(1000) loop: {baseline:>10,.0f} msg/s", flush=True)
        with tempfile.TemporaryDirectory() as out:
            result = wb.archive_jetstream(args.server, stream, out)
            assert result.messages == args.messages, result
        print(f"archive_jetstream:        {result.rate:>10,.0f} msg/s  (end to end, into Parquet)")
        print(f"ratio:                    {result.rate / baseline:>10.2f}x")
    finally:
        asyncio.run(drop(args.server, stream))


if __name__ == "__main__":
    main()
