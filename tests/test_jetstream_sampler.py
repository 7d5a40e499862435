"""Consumer lag sampling against real consumers that fall behind and catch up."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import nats
import pyarrow.parquet as pq
import pytest
from _jetstream_helpers import api, ce_message, delete_stream, publish
from nats.js.api import AckPolicy, ConsumerConfig

import workbench as wb
from workbench import cli
from workbench.archive import CONSUMER_SAMPLE_SCHEMA, STREAM_SAMPLE_SCHEMA, ArchiveReader
from workbench.errors import SourceError

pytestmark = pytest.mark.nats


@pytest.fixture
def stream(nats_url: str, stream_name: str) -> Iterator[str]:
    yield stream_name
    delete_stream(nats_url, stream_name)


async def consume(url: str, stream: str, durable: str, n: int, *, ack: bool) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(
            f"{stream.lower()}.>",
            durable=durable,
            stream=stream,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30),
        )
        if n:
            for msg in await sub.fetch(n, timeout=5):
                if ack:
                    await msg.ack_sync()
    finally:
        await nc.close()


def test_lag_of_consumers_falling_behind_and_catching_up(
    nats_url: str, stream: str, tmp_path: Path
) -> None:
    publish(nats_url, stream, [ce_message(i) for i in range(40)], create={})
    asyncio.run(consume(nats_url, stream, "projector", 0, ack=True))  # created, behind by 40
    asyncio.run(consume(nats_url, stream, "slow", 10, ack=False))  # 10 delivered, unacked

    first = wb.sample_jetstream(nats_url, stream, tmp_path, every=0.1, duration=0.25)
    assert first.samples == 3
    asyncio.run(consume(nats_url, stream, "projector", 40, ack=True))  # catches up
    args = [
        "sample",
        "jetstream",
        "--server",
        nats_url,
        "--stream",
        stream,
        "--out",
        str(tmp_path),
        "--consumer",
        "projector",
        "--consumer",
        "slow",
        "--every",
        "0.1",
        "--duration",
        "0",
    ]
    assert cli.run(args) == 0

    reader = ArchiveReader(tmp_path)
    lag = reader.sql(
        "select consumer, list(num_pending order by sampled_at), list(num_ack_pending order by sampled_at), "
        "last(delivered_stream_seq order by sampled_at), last(ack_floor_stream_seq order by sampled_at), "
        "max(stream_last_seq) from consumer_samples group by 1 order by 1"
    ).fetchall()
    assert lag == [
        ("projector", [40, 40, 40, 0], [0, 0, 0, 0], 40, 40, 40),
        ("slow", [30, 30, 30, 30], [10, 10, 10, 10], 10, 0, 40),
    ]
    streams = reader.sql(
        "select count(*), min(last_seq), max(messages), max(consumer_count) from stream_samples"
    ).fetchall()
    assert streams == [(4, 40, 40, 2)]
    files = sorted(tmp_path.glob("_consumer_samples/*/*.parquet")) + sorted(
        tmp_path.glob("_stream_samples/*/*.parquet")
    )
    schemas = {pq.read_schema(f).remove_metadata() for f in files}
    assert schemas == {
        CONSUMER_SAMPLE_SCHEMA.remove_metadata(),
        STREAM_SAMPLE_SCHEMA.remove_metadata(),
    }
    assert first.df().height == 6 and "projector" in first._repr_html_()


def test_sampling_an_unknown_stream_is_a_user_error(nats_url: str, tmp_path: Path) -> None:
    args = [
        "sample",
        "jetstream",
        "--server",
        nats_url,
        "--stream",
        "NO_SUCH",
        "--out",
        str(tmp_path),
        "--every",
        "0.1",
        "--duration",
        "0",
    ]
    assert cli.run(args) == 2
    # A name NATS cannot have fails at once, not as a timeout (a '.' is a subject token)
    args[5] = "ORDERS.v2"
    assert cli.run(args) == 2
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_a_consumer_deleted_while_sampling_is_noted_not_fatal(
    nats_url: str, stream: str, tmp_path: Path
) -> None:
    publish(nats_url, stream, [ce_message(i) for i in range(5)], create={})
    asyncio.run(consume(nats_url, stream, "keeper", 0, ack=True))
    asyncio.run(consume(nats_url, stream, "passing", 0, ack=True))
    with pytest.raises(SourceError, match=f"stream {stream} has no consumer nope"):
        wb.sample_jetstream(nats_url, stream, tmp_path / "x", consumers=["keeper", "nope"])
    assert not (tmp_path / "x").exists()  # nothing written

    sampled = threading.Event()

    def delete_after_a_few_samples() -> None:
        sampled.wait(30)
        api(nats_url, f"$JS.API.CONSUMER.DELETE.{stream}.passing")

    deleter = threading.Thread(target=delete_after_a_few_samples)
    deleter.start()
    result = wb.sample_jetstream(
        nats_url,
        stream,
        tmp_path,
        every=0.1,
        duration=1.5,
        progress=lambda tick: tick == 3 and sampled.set(),
    )
    deleter.join()
    assert result.gone == ["passing"] and "gone while sampling: passing" in str(result)
    counts = dict(result.df().group_by("consumer").len().rows())
    assert counts["keeper"] == result.samples > counts["passing"] > 0


def test_a_filtered_consumer_is_behind_by_its_own_messages_only(
    nats_url: str, stream: str, tmp_path: Path
) -> None:
    mine = [ce_message(i, subject="mem.mine") for i in range(4)]
    others = [ce_message(i, subject="mem.other") for i in range(4, 30)]
    publish(nats_url, stream, mine + others, create={})

    async def filtered() -> None:
        nc = await nats.connect(nats_url)
        try:
            await nc.jetstream().add_consumer(
                stream,
                ConsumerConfig(
                    durable_name="mine",
                    ack_policy=AckPolicy.EXPLICIT,
                    filter_subject=f"{stream.lower()}.mem.mine",
                ),
            )
        finally:
            await nc.close()

    asyncio.run(filtered())
    wb.sample_jetstream(nats_url, stream, tmp_path, every=0.1, duration=0)
    status = wb.open_archive(tmp_path).lag().status
    assert status.select("consumer", "backlog").rows() == [("mine", 4)]  # not 30


def test_sigterm_keeps_the_samples_taken(nats_url: str, stream: str, tmp_path: Path) -> None:
    """timeout, systemd and Kubernetes stop with SIGTERM, well before the 10 s file cut."""
    import os
    import signal
    import subprocess
    import sys
    import time

    publish(nats_url, stream, [ce_message(0)], create={})
    process = subprocess.Popen(
        [sys.executable, "-m", "workbench", "sample", "jetstream", "--server", nats_url,
         "--stream", stream, "--every", "0.2", "--duration", "60", "--out", str(tmp_path)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    time.sleep(4)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err.decode()
    samples = ArchiveReader(tmp_path).sql("select count(*) from stream_samples").fetchall()[0][0]
    assert samples >= 3
    # Run in this process, the command leaves SIGTERM as it found it.
    before = signal.getsignal(signal.SIGTERM)
    args = ["sample", "jetstream", "--server", nats_url, "--stream", stream]
    assert cli.run([*args, "--every", "0.1", "--duration", "0", "--out", str(tmp_path)]) == 0
    assert signal.getsignal(signal.SIGTERM) is before


def test_sampling_from_a_running_event_loop_as_in_jupyter(
    nats_url: str, stream: str, tmp_path: Path
) -> None:
    publish(nats_url, stream, [ce_message(0)], create={})

    async def notebook_cell() -> wb.sources.jetstream.LagSampleResult:  # type: ignore[name-defined]
        return wb.sample_jetstream(nats_url, stream, tmp_path, every=0.1, duration=0.3)

    result = asyncio.run(notebook_cell())
    assert result.streams.height >= 2


def test_an_interrupt_in_a_notebook_stops_the_work_and_keeps_what_it_did() -> None:
    """The kernel's stop button is a KeyboardInterrupt in the cell's thread; the work runs in
    another, which must be cancelled (its finally blocks run) before the interrupt goes on."""
    import signal
    import time

    from workbench.sources.jetstream._client import run_sync

    kept: list[str] = []

    async def an_hour_of_sampling() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            kept.append("saved")

    async def cell() -> float:
        threading.Timer(0.3, signal.raise_signal, (signal.SIGINT,)).start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            run_sync(an_hour_of_sampling())
        return time.monotonic() - started

    loop = asyncio.new_event_loop()  # like ipykernel's: no SIGINT handler of its own
    try:
        assert loop.run_until_complete(cell()) < 10
    finally:
        loop.close()
    assert kept == ["saved"]
