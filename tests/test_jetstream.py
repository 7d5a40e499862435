"""The JetStream archiver against real servers: mapping, resume, gaps, duplicates, CLI."""

from __future__ import annotations

import base64
import json
import shutil
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from _jetstream_helpers import (
    api,
    ce_message,
    delete_messages,
    delete_stream,
    publish,
    raw_publish,
)

import workbench as wb
from workbench import cli
from workbench.archive import ArchiveReader
from workbench.errors import SourceError

pytestmark = pytest.mark.nats


@pytest.fixture
def stream(nats_url: str, stream_name: str) -> Iterator[str]:
    yield stream_name
    delete_stream(nats_url, stream_name)


def archive(
    url: str, stream: str, out: Path, **options: object
) -> wb.sources.jetstream.JetStreamArchiveResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return wb.archive_jetstream(url, stream, out, **options)  # type: ignore[arg-type]


def rows(out: Path, query: str) -> list[tuple[object, ...]]:
    return ArchiveReader(out).sql(query).fetchall()


def test_cloudevents_binary_structured_and_odd_payloads(
    nats_url: str, stream: str, tmp_path: Path
) -> None:
    prefix = stream.lower()
    publish(nats_url, stream, [ce_message(i) for i in range(3)], create={})
    structured = {
        "specversion": "1.0",
        "id": "s-1",
        "type": "MemoryUpdated",
        "time": "2024-05-02T08:00:00Z",
        "subject": "memory-9",
        "correlationid": "req-s",
        "dataschema": "https://schemas.example/memory-updated/v3",
        "data": {"memory_id": 9},
    }
    publish(
        nats_url,
        stream,
        [
            (
                "mem.updated",
                json.dumps(structured).encode(),
                {"content-type": "application/cloudevents+json"},
            ),
            (
                "mem.blob",
                b"\xff\xfe\x00not json",
                {"Nats-Msg-Id": "blob-1", "ce-time": "yesterday"},
            ),
            ("mem.bare", b"plain text", None),
        ],
    )
    raw_publish(nats_url, f"{prefix}.mem.multi", [b"ce-id: m-1", b"X-Tag: a", b"X-Tag: b"], b"{}")

    result = archive(nats_url, stream, tmp_path)

    assert (result.messages, result.first_seq, result.last_seq, result.gaps) == (7, 1, 7, [])
    got = rows(
        tmp_path,
        "select global_position, source, event_id, event_type, schema_version, stream, "
        "occurred_at, correlation_id, causation_id, subject, data, payload, delivery_count, "
        "recorded_ns, epoch_us(recorded_at), metadata from events order by 1",
    )
    first = got[0]
    assert first[1:10] == (
        f"jetstream:{stream}",
        "evt-0",
        "MemoryCreated",
        2,
        "memory-1",
        first[6],
        "req-0",
        "cmd-0",
        f"{prefix}.mem.created",
    )
    assert first[6].isoformat() == "2024-05-01T12:00:00.123456+00:00"
    assert json.loads(first[10]) == {"memory_id": 0, "text": "memory 0"}
    assert first[11] is None and first[12] == 1
    assert first[13] // 1000 == first[14] and first[13] % 1000 == first[13] % 1000  # ns beside µs
    assert json.loads(first[15])["ce-schemaversion"] == "2"
    s = got[3]  # structured mode: the event is the payload, data inside
    assert s[2:9] == ("s-1", "MemoryUpdated", 3, "memory-9", s[6], "req-s", None)
    assert json.loads(s[10]) == {"memory_id": 9}
    assert json.loads(s[11]) == structured  # attributes beside data are never dropped
    blob = got[4]  # not UTF-8 JSON: kept byte for byte, unmappable time left null
    assert (blob[2], blob[6], blob[10], blob[11]) == ("blob-1", None, None, b"\xff\xfe\x00not json")
    bare = got[5]  # no headers at all: archived with what NATS knows
    assert (bare[2], bare[15], bare[10], bare[11]) == (None, None, None, b"plain text")
    multi = got[6]
    assert json.loads(multi[15]) == {"ce-id": "m-1", "X-Tag": ["a", "b"]}
    assert multi[2] == "m-1"


def test_envelope_and_raw_presets_and_maps(nats_url: str, stream: str, tmp_path: Path) -> None:
    body = {
        "event_id": "e-1",
        "event_type": "MemoryCreated",
        "schema_version": 4,
        "stream": "memory-1",
        "stream_position": 7,
        "occurred_at": "2024-05-01T00:00:00+00:00",
        "correlation_id": "c-1",
        "data": {"k": [1, 2]},
        "meta": {"tenant": "acme"},
    }
    publish(
        nats_url,
        stream,
        [
            ("tenant.acme.created", json.dumps(body).encode(), {"X-Req": "r-9"}),
            ("tenant.acme.noted", b"{}", {"Nats-Msg-Id": "n-2"}),
        ],
        create={},
    )

    archive(nats_url, stream, tmp_path / "env", preset="envelope")
    got = rows(
        tmp_path / "env",
        "select event_id, event_type, schema_version, stream, stream_position, occurred_at, "
        "correlation_id, data, payload from events order by global_position",
    )
    assert got[0][:5] == ("e-1", "MemoryCreated", 4, "memory-1", 7)
    assert got[0][5].isoformat() == "2024-05-01T00:00:00+00:00"
    # data is part of the payload ("meta" is in no column): the bytes are kept too.
    assert (got[0][6], json.loads(got[0][7])) == ("c-1", {"k": [1, 2]})
    assert json.loads(got[0][8]) == body

    archive(nats_url, stream, tmp_path / "raw", preset="raw")
    got = rows(
        tmp_path / "raw",
        "select event_id, event_type, schema_version, data, payload from events "
        "order by global_position",
    )
    assert got[0][:3] == (None, None, 1) and json.loads(got[0][3]) == body
    assert got[0][4] is None  # data holds the payload verbatim: not stored twice
    assert got[1][0] is None  # raw reads no header, not even Nats-Msg-Id (the hint names it)

    maps = [
        "stream=subject:-2",
        "event_type=const:Created",
        "correlation_id=header:x-req",
        "causation_id=data:meta.tenant",
        "event_id=metadata:X-Req",
        "data=data:data",
    ]
    archive(nats_url, stream, tmp_path / "map", preset="raw", mappings=maps)
    got = rows(
        tmp_path / "map",
        "select stream, event_type, correlation_id, causation_id, event_id, data, payload "
        "from events",
    )
    assert got[0][:5] == ("acme", "Created", "r-9", "acme", "r-9")
    # data mapped to a part of the payload: the whole payload is kept beside it
    assert (json.loads(got[0][5]), json.loads(got[0][6])) == ({"k": [1, 2]}, body)


def test_resume_archives_each_message_once(nats_url: str, stream: str, tmp_path: Path) -> None:
    publish(nats_url, stream, [ce_message(i) for i in range(30)], create={})
    first = archive(nats_url, stream, tmp_path, file_events=7)
    assert (first.messages, first.last_seq) == (30, 30)
    assert archive(nats_url, stream, tmp_path).messages == 0
    publish(nats_url, stream, [ce_message(i) for i in range(30, 45)])
    second = archive(nats_url, stream, tmp_path)
    assert (second.messages, second.first_seq, second.last_seq) == (15, 31, 45)
    assert rows(
        tmp_path,
        "select count(*), count(distinct global_position), min(global_position), max(global_position) from events",
    ) == [(45, 45, 1, 45)]
    assert len(ArchiveReader(tmp_path).files) >= 5  # --file-events cut the batches


def test_gaps_are_recorded_not_skipped(nats_url: str, stream: str, tmp_path: Path) -> None:
    publish(nats_url, stream, [ce_message(i) for i in range(10)], create={"max_msgs": 6})
    delete_messages(nats_url, stream, [7, 10])  # interior and tail deletions
    with pytest.warns(RuntimeWarning, match="missing") as warned:
        result = wb.archive_jetstream(nats_url, stream, tmp_path)
    assert {Path(w.filename).name for w in warned} == {"test_jetstream.py"}  # the caller's line
    # Every run result reads the same way: one line, and its rows as frames.
    assert (
        repr(result)
        == f"<JetStreamArchiveResult: {result.summary()}>"
        == f"<{type(result).__name__}: {result}>"
    )
    assert result.head(1).height == 1 and result.arrow().num_rows == len(result.gaps)
    assert [(g.first, g.last, g.reason) for g in result.gaps] == [
        (1, 4, "retention"),
        (7, 7, "deleted"),
        (10, 10, "deleted"),
    ]
    assert rows(tmp_path, "select global_position from events order by 1") == [
        (5,),
        (6,),
        (8,),
        (9,),
    ]
    recorded = rows(
        tmp_path, "select first_missing, last_missing, reason from gap_records order by 1"
    )
    assert recorded == [(1, 4, "retention"), (7, 7, "deleted"), (10, 10, "deleted")]
    assert result.df().height == 3 and "retention" in result._repr_html_()
    # Each record names what removed it: the limit (not a TTL the stream may also allow).
    details = rows(tmp_path, "select first_missing, detail from gap_records order by 1")
    assert details[0][1].endswith("before its first sequence 5: removed by max_msgs 6 "
                                  "or a purge")  # fmt: skip
    assert details[1][1] == f"detected by archive_jetstream on {stream}"
    # A second run finds nothing new and records nothing twice.
    assert archive(nats_url, stream, tmp_path).gaps == []
    assert len(rows(tmp_path, "select * from gap_records")) == 3


def test_a_jump_over_messages_the_stream_holds_is_read_again_not_recorded(
    nats_url: str, stream: str, tmp_path: Path
) -> None:
    """A consumer on NATS 2.9 skips from a subject purge to the purged subject's next
    message: the messages between, still on the server, were recorded as sequence jumps
    (63,146 of 100,000, never archived). A jump is asked of the server first; and a
    deletion from inside the stream stays a deletion when a purge then moves its first
    sequence past it."""
    import asyncio

    import numpy as np

    from workbench.sources.jetstream import _client
    from workbench.sources.jetstream.archiver import _Run
    from workbench.sources.jetstream.mapping import JetStreamMapping

    publish(nats_url, stream, [ce_message(i) for i in range(20)], create={})
    delete_messages(nats_url, stream, [12])

    async def gaps() -> tuple[int | None, int | None]:
        mapping = JetStreamMapping.from_options("cloudevents", [])
        run = _Run(nats_url, stream, tmp_path, mapping, False, None, 100, 10**9, None)
        run.nc = await _client.connect(nats_url)
        try:
            # What a consumer that keeps skipping (a purge every moment) is read again by:
            # one request a message, each as the wire gives it.
            fetched = await run._fetch(11, 3)
            assert fetched.seq == [11, 13, 14]
            assert all(subject.endswith(b".mem.created") for subject in fetched.subject)
            assert fetched.headers[0].startswith(b"Nats-Msg-Id: evt-10\r\n")
            assert fetched.headers[0].endswith(b"ce-schemaversion: 2")
            assert json.loads(fetched.payload[0]) == {"memory_id": 10, "text": "memory 10"}
            held = await run._record_gaps([(3, 8), (12, 12)])  # 3..8 are on the server
            await _client.jetstream_api(run.nc, f"STREAM.PURGE.{stream}", {"keep": 2})
            run.deleted_before = np.array([12])  # as the run began
            after = await run._record_gaps([(12, 12)])
            return held, after
        finally:
            await run.nc.close()

    assert asyncio.run(gaps()) == (3, None)
    assert rows(tmp_path, "select first_missing, last_missing, reason from gap_records") == [
        (12, 12, "deleted")
    ]


def test_fail_on_gap_exit_code(nats_url: str, stream: str, tmp_path: Path) -> None:
    publish(nats_url, stream, [ce_message(i) for i in range(4)], create={})
    delete_messages(nats_url, stream, [2])
    args = [
        "archive",
        "jetstream",
        "--server",
        nats_url,
        "--stream",
        stream,
        "--out",
        str(tmp_path),
    ]
    assert cli.run([*args, "--fail-on-gap"]) == 1
    publish(nats_url, stream, [ce_message(9)])
    assert cli.run([*args, "--fail-on-gap"]) == 0  # the gap was reported once, the rest is clean
    assert rows(tmp_path, "select count(*) from events") == [(4,)]


def test_duplicate_event_ids_outside_dedupe_window_are_archived_twice(
    nats_url: str, stream: str, tmp_path: Path
) -> None:
    publish(nats_url, stream, [ce_message(1)], create={"duplicate_window": 0.2})
    publish(nats_url, stream, [ce_message(1)])  # inside the window: the server drops it
    time.sleep(0.5)
    publish(nats_url, stream, [ce_message(1)])  # outside: stored again
    archive(nats_url, stream, tmp_path)
    got = rows(
        tmp_path,
        "select event_id, list(global_position order by global_position) from events group by 1 having count(*) > 1",
    )
    assert got == [("evt-1", [1, 2])]


def test_follow_stops_after_idle_exit(nats_url: str, stream: str, tmp_path: Path) -> None:
    publish(nats_url, stream, [ce_message(i) for i in range(5)], create={})
    result = archive(nats_url, stream, tmp_path, follow=True, idle_exit=1.5)
    assert (result.messages, result.stopped) == (5, "idle")
    # The rate is the archiving's, not diluted by the idle wait that ended the run.
    assert result.elapsed >= 1.5 > result.active > 0
    assert result.rate == round(5 / result.active, 1)
    assert f"({result.active:.1f}s to the last message)" in str(result)


def test_follow_writes_files_under_steady_traffic(
    nats_url: str, stream: str, tmp_path: Path
) -> None:
    """A message every 0.25 s never leaves the stream idle for a second: files must
    still appear within seconds, not once file_events messages have gathered."""
    publish(nats_url, stream, [ce_message(0)], create={})
    done: list[wb.sources.jetstream.JetStreamArchiveResult] = []
    follower = threading.Thread(
        target=lambda: done.append(archive(nats_url, stream, tmp_path, follow=True, idle_exit=2))
    )
    follower.start()
    try:
        archived_while_busy = 0
        for i in range(1, 36):  # about 9 s of steady traffic
            publish(nats_url, stream, [ce_message(i)])
            time.sleep(0.25)
            if i == 30:  # 7 s in: the messages of the first 5 s are due on disk
                reader = ArchiveReader(tmp_path)
                archived_while_busy = reader.sql("select count(*) from events").fetchall()[0][0]
        assert archived_while_busy > 10
    finally:
        follower.join(timeout=30)
    assert done and done[0].messages == 36 and done[0].stopped == "idle"


def test_a_filtered_or_late_started_mirror_reports_only_what_it_lost(
    nats_url: str, stream: str, tmp_path: Path
) -> None:
    """A mirror filtered to some subjects has holes where its origin's other messages
    were (listed as deleted, or below its first sequence when the origin starts with
    them); one started at a sequence lacks those below. Neither lost anything: recorded
    as never-issued. A message of its own subject deleted from it is a loss. One gone
    from the origin too cannot be placed: a hole, whose detail says so."""
    kinds = ["kept" if i % 3 == 0 else "other" for i in range(10)]  # kept: 1, 4, 7, 10
    publish(nats_url, stream, [ce_message(i, subject=k) for i, k in enumerate(kinds)], create={})
    delete_messages(nats_url, stream, [2])  # an "other" message, before any mirror copied it
    kept, other, started = f"{stream}_K", f"{stream}_O", f"{stream}_S"
    mirrors = {
        kept: {"name": stream, "filter_subject": f"{stream.lower()}.kept"},
        other: {"name": stream, "filter_subject": f"{stream.lower()}.other"},
        started: {"name": stream, "opt_start_seq": 5},
    }
    try:
        for name, mirror in mirrors.items():
            reply = api(nats_url, f"$JS.API.STREAM.CREATE.{name}", {"name": name, "mirror": mirror})
            assert "error" not in reply, reply
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # mirrors copy in the background
            sizes = [
                api(nats_url, f"$JS.API.STREAM.INFO.{name}")["state"]["messages"]
                for name in mirrors
            ]
            if sizes == [4, 5, 6]:
                break
            time.sleep(0.1)
        delete_messages(nats_url, kept, [4])  # lost from the mirror: the origin has it
        got = {name: archive(nats_url, name, tmp_path / name) for name in mirrors}
        assert [got[n].messages for n in mirrors] == [3, 5, 6]
        assert [(g.first, g.last, g.reason) for g in got[kept].gaps] == [
            (2, 2, "deleted"),
            (4, 4, "deleted"),
        ]
        assert [(g.first, g.last) for g in got[other].gaps] == [(2, 2)]
        assert got[started].gaps == []
        for name in (kept, other):
            (detail,) = rows(
                tmp_path / name, "select detail from gap_records where first_missing = 2"
            )[0]
            assert detail.endswith("which no longer holds these either: whether they were on "
                                   f"{stream.lower()}.{'kept' if name == kept else 'other'} (lost) "
                                   "or on other subjects (never here) cannot be known"), detail  # fmt: skip
        for name, never in (
            (kept, {3, 5, 6, 8, 9}),
            (other, {1, 4, 7}),  # 1: below the mirror's first sequence
            (started, {1, 2, 3, 4}),
        ):
            records = rows(
                tmp_path / name,
                "select first_missing, last_missing from gap_records where reason = 'never-issued'",
            )
            assert {p for a, b in records for p in range(a, b + 1)} == never, name
    finally:
        for name in mirrors:
            delete_stream(nats_url, name)


def test_cli_user_errors_exit_2_without_secrets(
    nats_url: str, stream: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    publish(nats_url, stream, [ce_message(0)], create={})
    base = ["archive", "jetstream", "--out", str(tmp_path)]
    assert cli.run([*base, "--server", "nats://app:s3cret@127.0.0.1:1", "--stream", stream]) == 2
    # Without a scheme, with a space, as a token, unparseable: still never shown.
    for server in (
        "app:n0scheme@127.0.0.1:1",
        "nats://app:with space@127.0.0.1:1",
        "t0kenvalue@127.0.0.1:1",
        "nats://app:v6pass@[::1:4222",
    ):
        assert cli.run([*base, "--server", server, "--stream", stream]) == 2, server
    assert cli.run([*base, "--server", nats_url, "--stream", "NO_SUCH_STREAM"]) == 2
    assert cli.run([*base, "--server", nats_url, "--stream", stream.lower()]) == 2
    assert cli.run([*base, "--server", "http://127.0.0.1:4222", "--stream", stream]) == 2
    assert (
        cli.run([*base, "--server", nats_url, "--stream", stream, "--map", "colour=const:red"]) == 2
    )
    assert cli.run([*base, "--server", nats_url, "--stream", stream, "--preset", "xml"]) == 2
    err = capsys.readouterr().err
    assert "s3cret" not in err and "***" in err
    for secret in ("n0scheme", "with space", "t0kenvalue", "v6pass"):
        assert secret not in err
    assert "Invalid IPv6 URL" in err
    assert "stream NO_SUCH_STREAM not found" in err and "colour is not an envelope column" in err
    assert f"stream {stream.lower()} not found; did you mean {stream}?" in err
    assert "not a NATS URL: the scheme is one of nats://" in err
    assert "Traceback" not in err
    assert cli.run([*base, "--server", nats_url, "--stream", stream]) == 0
    assert rows(tmp_path, "select count(*) from events") == [(1,)]


def test_envelope_schema_on_disk(nats_url: str, stream: str, tmp_path: Path) -> None:
    publish(nats_url, stream, [ce_message(0)], create={})
    archive(nats_url, stream, tmp_path)
    import pyarrow.parquet as pq

    schema = pq.read_schema(ArchiveReader(tmp_path).files[0].path)
    assert schema.remove_metadata().equals(wb.envelope.SCHEMA.remove_metadata()) or [
        f.name for f in schema
    ] == list(wb.envelope.COLUMNS)
    assert pa.types.is_int64(schema.field("recorded_ns").type)


def test_scenario_round_trip_through_jetstream(nats_url: str, stream: str, tmp_path: Path) -> None:
    """The generator's stream, archived: the same events and exactly its planted gaps."""
    from workbench.scenario import generate

    scenario = generate(seed=11, entities=15, events=1_500)
    scenario.publish_jetstream(nats_url, stream, subject_prefix=stream.lower())
    result = archive(nats_url, stream, tmp_path, file_events=400)

    assert sorted((g.first, g.last, g.reason) for g in result.gaps) == sorted(
        (g.first, g.last, g.reason) for g in scenario.truth.gaps
    )
    columns = [
        "global_position",
        "event_id",
        "event_type",
        "schema_version",
        "stream",
        "correlation_id",
        "causation_id",
        "data",
        "payload",
    ]
    got = ArchiveReader(tmp_path).arrow().select(columns)
    assert got.equals(scenario.events.select(columns))
    dupes = rows(
        tmp_path,
        "select count(*) from (select event_id from events group by 1 having count(*) > 1)",
    )
    assert dupes == [(len(scenario.truth.duplicates),)]


def test_plain_messages_get_a_hint_for_what_to_map(
    nats_url: str, stream: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Messages from a client that knows no CloudEvents: archived, and the user told what to map."""
    plain = [("orders.created", b'{"id": 1}', None), ("orders.shipped", b'{"id": 1}', None)]
    publish(nats_url, stream, plain, create={})
    result = archive(nats_url, stream, tmp_path / "a")
    assert result.unfilled == {
        **{"event_id": 2, "event_type": 2, "stream": 2},
        **{"correlation_id": 2, "causation_id": 2},  # hinted at only when named so
    }
    # The hint lays out the first subject's tokens: which one is the type, the user knows.
    assert any("subject:1=orders, subject:2=created" in h for h in result.hints())
    args = ["archive", "jetstream", "--server", nats_url, "--stream", stream]
    assert cli.run([*args, "--out", str(tmp_path / "b"), "--map", "event_type=subject:-1"]) == 0
    err = capsys.readouterr().err
    assert "hint: stream is empty" in err and "hint: event_type" not in err
    assert rows(tmp_path / "b", "select event_type from events order by 1") == [
        ("created",),
        ("shipped",),
    ]


def test_the_hint_names_a_header_or_key_named_like_the_column(
    nats_url: str, stream: str, tmp_path: Path
) -> None:
    """A NATS event store's own header and payload names are the likelier mapping."""
    headers = {
        "Event-Type": "Opened",
        "Nats-Msg-Id": "m-1",
        "Content-Type": "application/json",
        "correlation-id": "c-1",
    }
    message = ("bank.account.a-1", b'{"aggregate_id": "a-1", "amount": 5}', headers)
    publish(nats_url, stream, [message], create={})
    hints = archive(nats_url, stream, tmp_path / "a").hints()
    assert hints == [
        "event_type is empty in 1 of 1 messages; map it, e.g. --map event_type=header:Event-Type",
        "stream is empty in 1 of 1 messages; map it, e.g. --map stream=data:aggregate_id",
        "correlation_id is empty in 1 of 1 messages; map it, e.g. "
        "--map correlation_id=header:correlation-id",
        # Mapping on the same --out now is refused: the archive keeps its first mapping.
        f"a mapping is kept with the archive ({tmp_path / 'a'}): archive into a new --out to "
        "map from the first event on, or add --remap (events archived so far keep their columns)",
    ]  # event_id: the cloudevents preset reads Nats-Msg-Id already; no causation header


def test_a_w3c_traceparent_gives_its_trace_id_as_the_correlation(
    nats_url: str, stream: str, tmp_path: Path
) -> None:
    """OpenTelemetry propagates a traceparent whose span part differs in every message; the
    trace id is one request's work: hinted at, and trace:traceparent reads it (a malformed
    or all-zero one is none)."""
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    parents = [f"00-{trace}-00f067aa0ba902b7-01", f"00-{trace.upper()}-b7ad6b7169203331-00",
               f"00-{'0' * 32}-b7ad6b7169203331-01", "nonsense"]  # fmt: skip
    messages = [("orders.placed", b"{}", {"traceparent": p, "Nats-Msg-Id": str(i)})
                for i, p in enumerate(parents)]  # fmt: skip
    publish(nats_url, stream, messages, create={})
    hinted = archive(nats_url, stream, tmp_path / "a").hints()
    assert any("--map correlation_id=trace:traceparent" in h for h in hinted)
    archive(nats_url, stream, tmp_path / "b", mappings=["correlation_id=trace:traceparent"])
    got = rows(tmp_path / "b", "select correlation_id from events order by global_position")
    assert got == [(trace,), (trace,), (None,), (None,)]


def test_a_mapped_header_falls_back_to_the_preset_when_asked(
    nats_url: str, stream: str, tmp_path: Path
) -> None:
    """A stream of CloudEvents and of messages typed by a header of their own."""
    typed = [("orders.paid", b"{}", {"X-Type": "Paid"}) for _ in range(2)]
    publish(nats_url, stream, [ce_message(0), *typed, ce_message(1), ce_message(2)], create={})
    only = archive(nats_url, stream, tmp_path / "only", mappings=["event_type=header:X-Type"])
    assert only.unfilled["event_type"] == 3
    assert "add the preset as a fallback: --map event_type=preset" in only.hints()[0]
    both = ["event_type=header:X-Type", "event_type=preset"]
    assert archive(nats_url, stream, tmp_path / "both", mappings=both).hints() == []
    assert rows(tmp_path / "both", "select event_type from events order by global_position") == [
        ("MemoryCreated",),
        ("Paid",),
        ("Paid",),
        ("MemoryCreated",),
        ("MemoryCreated",),
    ]


def test_structured_cloudevent_with_binary_data_keeps_the_bytes(
    nats_url: str, stream: str, tmp_path: Path
) -> None:
    """CloudEvents SDKs put binary data in data_base64: payload keeps the whole event (its
    source, specversion and extensions too), and the bytes decode from it in SQL."""
    blob = b"\x00\xffprotobuf\x10"
    event = {
        "specversion": "1.0",
        "id": "bin-1",
        "type": "ImageStored",
        "source": "/images",
        "subject": "image-1",
        "data_base64": base64.b64encode(blob).decode(),
    }
    headers = {"content-type": "application/cloudevents+json"}
    publish(nats_url, stream, [("images.stored", json.dumps(event).encode(), headers)], create={})
    archive(nats_url, stream, tmp_path)
    assert rows(tmp_path, "select event_id, event_type, stream, data, payload from events") == [
        ("bin-1", "ImageStored", "image-1", None, json.dumps(event).encode())
    ]
    decoded = "from_base64(json_extract_string(decode(payload), '$.data_base64'))"
    assert rows(tmp_path, f"select {decoded} from events") == [(blob,)]


def test_a_recreated_stream_is_never_spliced_onto_the_archive(
    nats_url: str, stream: str, tmp_path: Path
) -> None:
    publish(nats_url, stream, [ce_message(i) for i in range(5)], create={})
    assert archive(nats_url, stream, tmp_path).messages == 5
    api(nats_url, f"$JS.API.STREAM.PURGE.{stream}")  # purged, not recreated: resumes
    publish(nats_url, stream, [ce_message(i) for i in range(5, 7)])
    assert archive(nats_url, stream, tmp_path).messages == 2
    # The stream's identity is recorded once, not a side file per run.
    assert len(list((tmp_path / "_stream_samples").rglob("*.parquet"))) == 1
    delete_stream(nats_url, stream)
    # The new stream keeps none of the archived sequences (limits): only its creation tells.
    publish(nats_url, stream, [ce_message(i) for i in range(20)], create={"max_msgs": 5})
    with pytest.raises(SourceError, match=f"stream {stream} was recreated .*: it was created"):
        archive(nats_url, stream, tmp_path)
    # Sampling the new stream into the archive does not make it the archived one.
    wb.sample_jetstream(nats_url, stream, tmp_path, every=0.1, duration=0)
    with pytest.raises(SourceError, match=f"stream {stream} was recreated .*: it was created"):
        archive(nats_url, stream, tmp_path)
    # An archive written before the stream's creation was recorded: the newest archived
    # messages the stream still holds are compared instead.
    shutil.rmtree(tmp_path / "_stream_samples")
    delete_stream(nats_url, stream)
    publish(nats_url, stream, [ce_message(i) for i in range(9)], create={})  # 1..9 again
    with pytest.raises(SourceError, match=f"stream {stream} was recreated .*message 7 is not"):
        archive(nats_url, stream, tmp_path)
    delete_messages(nats_url, stream, [7])  # the one the guard compared: the one before decides
    with pytest.raises(SourceError, match=f"stream {stream} was recreated .*message 6 is not"):
        archive(nats_url, stream, tmp_path)
    delete_stream(nats_url, stream)
    publish(nats_url, stream, [ce_message(i) for i in range(3)], create={})
    with pytest.raises(SourceError, match="it ends at sequence 3, the archive at 7"):
        archive(nats_url, stream, tmp_path)
    assert rows(tmp_path, "select count(*), max(global_position) from events") == [(7, 7)]


def _while_following(nats_url: str, stream: str, out: Path, change: Any) -> BaseException | None:
    """Follow ``stream`` in a thread; once it archived a file, ``change()`` the stream.

    Returns how the run ended: None, or what it raised.
    """
    outcome: list[BaseException | None] = []

    def follow() -> None:
        try:
            archive(nats_url, stream, out, follow=True, idle_exit=60)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=follow)
    thread.start()
    deadline = time.monotonic() + 30
    while not list(out.glob("source=*/date=*/*.parquet")) and not outcome:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    change()
    thread.join(60)
    assert not thread.is_alive()
    return outcome[0]


def test_a_stream_recreated_while_following_ends_the_run_without_splicing(
    nats_url: str, stream: str, tmp_path: Path
) -> None:
    """Deleting and adding a stream (IaC, `nats stream rm/add`) takes less than a heartbeat."""
    publish(nats_url, stream, [ce_message(i) for i in range(3)], create={})

    def recreate() -> None:
        delete_stream(nats_url, stream)
        publish(nats_url, stream, [ce_message(i) for i in range(10)], create={})

    ended = _while_following(nats_url, stream, tmp_path, recreate)
    assert isinstance(ended, SourceError) and "was recreated while archiving" in str(ended)
    assert rows(tmp_path, "select count(*), max(global_position) from events") == [(3, 3)]


def test_a_stream_deleted_while_following_ends_the_run(
    nats_url: str, stream: str, tmp_path: Path
) -> None:
    publish(nats_url, stream, [ce_message(i) for i in range(3)], create={})
    ended = _while_following(nats_url, stream, tmp_path, lambda: delete_stream(nats_url, stream))
    assert isinstance(ended, SourceError) and "was deleted while archiving" in str(ended)


def test_progress_counts_every_message_once_and_never_goes_back(
    nats_url: str, stream: str, tmp_path: Path
) -> None:
    publish(nats_url, stream, [ce_message(i) for i in range(300)], create={})
    seen: list[int] = []
    archive(nats_url, stream, tmp_path, file_events=7, progress=lambda p: seen.append(p.archived))
    assert seen and seen == sorted(seen) and seen[-1] == 300


def test_thousands_of_interior_deletions_make_one_gap_file_and_a_short_warning(
    nats_url: str, stream: str, tmp_path: Path
) -> None:
    """Per-subject limits (and KV history) delete inside the stream all the time."""
    messages = [
        ce_message(i, subject="heartbeat" if i % 2 else f"entity.{i}") for i in range(2_000)
    ]
    publish(nats_url, stream, messages, create={"max_msgs_per_subject": 1})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = wb.archive_jetstream(nats_url, stream, tmp_path)
    assert result.messages == 1_001 and len(result.gaps) == 999
    # Removed by the limit, by design: retention (the detail says a delete looks the same).
    assert {g.reason for g in result.gaps} == {"retention"}
    assert len(caught) == 11 and "989 more gap(s), 989 position(s) (retention 989)" in str(
        caught[-1].message
    )
    assert len(list((tmp_path / "_gap_records").rglob("*.parquet"))) == 1
    gaps = rows(tmp_path, "select count(*), sum(last_missing - first_missing + 1) from gap_records")
    assert gaps == [(999, 999)]
    ((detail,),) = rows(tmp_path, "select distinct detail from gap_records")
    assert "max_msgs_per_subject 1" in detail and "JetStream does not say which" in detail
    publish(nats_url, stream, [ce_message(i, subject="heartbeat") for i in range(2_000, 2_003)])
    again = archive(nats_url, stream, tmp_path)  # 2001 and 2002 are already replaced by 2003
    assert (again.messages, [(g.first, g.last) for g in again.gaps]) == (1, [(2001, 2002)])
    assert rows(tmp_path, "select count(*) from gap_records") == [(1_000,)]


def test_files_are_cut_by_bytes_so_large_messages_bound_memory(
    nats_url: str, stream: str, tmp_path: Path
) -> None:
    big = [("blob", bytes([i]) * 100_000, None) for i in range(40)]  # 40 x 100 kB
    publish(nats_url, stream, big, create={})
    result = archive(nats_url, stream, tmp_path, file_bytes=1_000_000, file_events=1_000)
    assert result.messages == 40
    sizes = [
        pa.parquet.read_metadata(f).num_rows
        for f in sorted(tmp_path.glob("source=*/date=*/*.parquet"))
    ]
    assert sizes == [10, 10, 10, 10]  # 10 x 100 kB fit in 1 MB; no small remainders
    assert rows(tmp_path, "select count(distinct payload) from events") == [(40,)]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("subject=const:x", "subject is the message's NATS subject"),
        ("metadata=const:{}", "metadata holds the message's headers"),
        ("global_position=data:seq", "global_position is set by the archiver"),
        ("recorded_at=data:t", "recorded_at is the NATS timestamp"),
    ],
)
def test_what_nats_delivered_cannot_be_mapped_over(spec: str, message: str) -> None:
    from workbench.errors import MappingError
    from workbench.sources.jetstream.mapping import JetStreamMapping

    with pytest.raises(MappingError, match=message):
        JetStreamMapping.from_options("cloudevents", [spec])


def test_epoch_times_from_javascript_clients(nats_url: str, stream: str, tmp_path: Path) -> None:
    """Date.now() (ms) and epoch seconds are times too, not unfillable values."""
    at_ms = {"occurred": 1714550400123, "n": 1}
    at_s = {"occurred": 1714550400, "n": 2}
    messages = [("x", json.dumps(body).encode(), None) for body in (at_ms, at_s)]
    publish(nats_url, stream, messages, create={})
    archive(nats_url, stream, tmp_path, preset="raw", mappings=["occurred_at=data:occurred"])
    got = rows(tmp_path, "select occurred_at from events order by global_position")
    assert [r[0].isoformat() for r in got] == [
        "2024-05-01T08:00:00.123000+00:00",
        "2024-05-01T08:00:00+00:00",
    ]


def test_data_holds_only_json_every_reader_accepts(
    nats_url: str, stream: str, tmp_path: Path
) -> None:
    """DuckDB reads trailing commas and NaN; Spark, Polars and JSON libraries do not."""
    bodies = [b'{"a": 1,}', b'{"a": NaN}', b'{"a": 1}', b'{"note": "NaN, inf,}"}']
    publish(nats_url, stream, [("x", body, None) for body in bodies], create={})
    archive(nats_url, stream, tmp_path, preset="raw")
    got = rows(tmp_path, "select data, payload from events order by global_position")
    assert got == [
        (None, b'{"a": 1,}'),
        (None, b'{"a": NaN}'),
        ('{"a": 1}', None),
        ('{"note": "NaN, inf,}"}', None),
    ]


def test_a_work_queue_stream_is_refused_with_the_way_round(
    nats_url: str, stream: str, tmp_path: Path
) -> None:
    publish(nats_url, stream, [ce_message(0)], create={"retention": "workqueue"})
    with pytest.raises(SourceError, match=r"WorkQueue retention.*archive a mirror of it"):
        archive(nats_url, stream, tmp_path)
    assert api(nats_url, f"$JS.API.STREAM.INFO.{stream}")["state"]["messages"] == 1  # untouched


def test_a_sample_of_an_earlier_stream_of_the_same_name_does_not_decide_the_archive(
    nats_url: str, stream: str, tmp_path: Path
) -> None:
    # Sampled first (a look at lag before deciding to archive), then deleted and made again.
    publish(nats_url, stream, [ce_message(i) for i in range(3)], create={})
    wb.sample_jetstream(nats_url, stream, tmp_path, every=0.1, duration=0)
    delete_stream(nats_url, stream)
    time.sleep(0.01)
    publish(nats_url, stream, [ce_message(i) for i in range(4)], create={})
    # Nothing was archived of the earlier stream: this one is the archive's.
    assert archive(nats_url, stream, tmp_path).messages == 4
    publish(nats_url, stream, [ce_message(4)])
    assert archive(nats_url, stream, tmp_path).messages == 1
    # And it is now the one the archive holds: another recreation is refused.
    delete_stream(nats_url, stream)
    publish(nats_url, stream, [ce_message(i) for i in range(9)], create={})
    with pytest.raises(SourceError, match=f"stream {stream} was recreated .*: it was created"):
        archive(nats_url, stream, tmp_path)
    assert rows(tmp_path, "select count(*), max(global_position) from events") == [(5, 5)]


def test_a_kv_bucket_key_with_dots_maps_to_the_stream_whole(nats_url: str, tmp_path: Path) -> None:
    """``$KV.<bucket>.<key>``: the key may hold dots; a token range takes it whole."""
    import asyncio

    import nats

    bucket = f"WB{uuid.uuid4().hex[:8].upper()}"

    async def write() -> None:
        nc = await nats.connect(nats_url)
        kv = await nc.jetstream().create_key_value(bucket=bucket, history=5)
        await kv.put("cfg.db.host", b'{"v": "db1"}')
        await kv.put("cfg.db.host", b'{"v": "db2"}')
        await kv.put("flag", b'{"v": true}')
        await nc.close()

    asyncio.run(write())
    try:
        archive(
            nats_url, f"KV_{bucket}", tmp_path, preset="raw",
            mappings=["stream=subject:2:", "event_type=const:Put"],
        )  # fmt: skip
        got = rows(tmp_path, "select stream, event_type from events order by global_position")
        assert got == [("cfg.db.host", "Put"), ("cfg.db.host", "Put"), ("flag", "Put")]
    finally:
        delete_stream(nats_url, f"KV_{bucket}")


def test_a_resumed_archive_keeps_its_mapping_and_refuses_another(
    nats_url: str, stream: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cron job's --map and a manual catch-up without it would map the events two
    ways, which an append-only archive cannot undo: no mapping reuses the recorded
    one, another is refused in one line, and --remap changes it on purpose."""
    raw = [(f"orders.o{i}.OrderPlaced", b'{"n": 1}', None) for i in range(3)]
    publish(nats_url, stream, raw, create={})
    first = archive(nats_url, stream, tmp_path, preset="raw", mappings=["event_type=subject:-1"])
    assert first.messages == 3
    publish(nats_url, stream, raw[:2])
    again = archive(nats_url, stream, tmp_path)  # no mapping given: the recorded one
    assert again.messages == 2 and not [h for h in again.hints() if "event_type" in h]
    types = rows(tmp_path, "select distinct event_type from events")
    assert types == [("OrderPlaced",)]
    publish(nats_url, stream, raw[:1])
    args = ["archive", "jetstream", "--server", nats_url, "--stream", stream]
    args += ["--out", str(tmp_path), "--preset", "raw"]
    assert cli.run(args) == 2  # another mapping: refused before anything is read
    err = capsys.readouterr().err
    assert f"jetstream:{stream} was archived with preset=raw event_type=subject:-1" in err
    assert "this run maps it with preset=raw" in err and "--remap" in err
    assert rows(tmp_path, "select count(*) from events") == [(5,)]
    assert cli.run([*args, "--map", "event_type=subject:2", "--remap"]) == 0
    assert rows(tmp_path, "select event_type from events where global_position = 6") == [("o0",)]
    recorded = rows(tmp_path, "select options from archive_mappings order by recorded_at")
    assert [json.loads(r[0]) for r in recorded] == [
        ["preset=raw", "event_type=subject:-1"],
        ["preset=raw", "event_type=subject:2"],
    ]


def test_a_second_archiver_on_one_source_is_refused_at_its_start(
    nats_url: str, stream: str, tmp_path: Path
) -> None:
    """Two runs would interleave, and the loser die mid-run: the second never starts."""
    from workbench.archive import ArchiverRun
    from workbench.errors import ArchiveError

    publish(nats_url, stream, [ce_message(i) for i in range(3)], create={})
    with ArchiverRun(tmp_path, f"jetstream:{stream}", "archive_jetstream"):
        with pytest.raises(ArchiveError, match=rf"another archiver is writing jetstream:{stream}"):
            archive(nats_url, stream, tmp_path)
        with pytest.raises(ArchiveError, match=r"archive_jetstream, pid \d+ on "):
            archive(nats_url, stream, tmp_path)
    assert archive(nats_url, stream, tmp_path).messages == 3  # released at the end


def test_a_header_block_that_is_not_utf8_is_kept_whole(
    nats_url: str, stream: str, tmp_path: Path
) -> None:
    """A Go client may send any bytes in a header value: the values read lossily (for
    header: maps and eyes), and the block is kept whole, base64, beside them."""
    prefix = stream.lower()
    publish(nats_url, stream, [("mem.a", b"{}", {"X": "plain"})], create={})
    block = [b"Nats-Msg-Id: latin-1", b"X-Latin1: caf\xe9"]
    raw_publish(nats_url, f"{prefix}.mem.b", block, b"{}")
    archive(nats_url, stream, tmp_path)
    plain, latin = [
        json.loads(m)
        for (m,) in rows(tmp_path, "select metadata from events order by global_position")
    ]
    assert plain == {"X": "plain"}  # a UTF-8 block gets no copy
    assert latin["X-Latin1"] == "caf\ufffd" and latin["Nats-Msg-Id"] == "latin-1"
    assert base64.b64decode(latin["headers:base64"]) == b"\r\n".join(block)


def test_subjects_that_are_not_utf8_stay_apart_and_are_kept_whole(
    nats_url: str, stream: str, tmp_path: Path
) -> None:
    """The server takes any bytes in a subject token: two such subjects read with U+FFFD
    were one subject, so one stream of two entities, and their bytes were gone."""
    prefix = stream.lower().encode()
    publish(nats_url, stream, [("mem.plain", b"{}", {})], create={})
    for token in (b"caf\xe9", b"caf\xff"):
        raw_publish(nats_url, prefix + b".mem." + token, [b"X: 1"], b"{}")
    archive(nats_url, stream, tmp_path, preset="raw", mappings=["stream=subject:2"])
    got = rows(tmp_path, "select subject, stream, metadata from events order by global_position")
    assert [(subject.split(".", 1)[1], stream_) for subject, stream_, _ in got] == [
        ("mem.plain", "plain"),
        ("mem.caf\\xe9", "caf\\xe9"),
        ("mem.caf\\xff", "caf\\xff"),
    ]
    assert got[0][2] is None  # a UTF-8 subject gets no copy
    kept = [base64.b64decode(json.loads(m)["subject:base64"]) for _, _, m in got[1:]]
    assert kept == [prefix + b".mem.caf\xe9", prefix + b".mem.caf\xff"]


def test_the_kv_preset_archives_a_bucket_as_puts_deletes_and_purges(
    nats_url: str, tmp_path: Path
) -> None:
    """A KV bucket written by nats-py's KV API: the key is the stream, the operation the
    type, and the history the bucket drops by design can be accepted by the gap check."""
    import asyncio

    import nats

    bucket = f"WB{uuid.uuid4().hex[:8].upper()}"

    async def write() -> None:
        nc = await nats.connect(nats_url)
        kv = await nc.jetstream().create_key_value(bucket=bucket, history=1)
        await kv.put("cfg.db.host", b'{"v": "db1"}')
        await kv.put("cfg.db.host", b'{"v": "db2"}')  # history 1: the first is dropped
        await kv.put("port", b"5432")
        await kv.put("name", b"not json")
        await kv.delete("port")
        await kv.purge("name")
        await nc.close()

    asyncio.run(write())
    try:
        hinted = archive(nats_url, f"KV_{bucket}", tmp_path / "hint", preset="raw")
        assert any("--preset kv" in hint for hint in hinted.hints())
        archive(nats_url, f"KV_{bucket}", tmp_path / "kv", preset="kv")
        got = rows(
            tmp_path / "kv",
            "select stream, event_type, data, payload from events order by global_position",
        )
        assert [g[:2] for g in got] == [
            ("cfg.db.host", "PUT"),
            ("port", "DEL"),
            ("name", "PURGE"),
        ]
        assert got[0][2] == '{"v": "db2"}'
        gaps = wb.open_archive(tmp_path / "kv").gaps(accept=("deleted", "retention"))
        assert gaps.found == 0 and gaps.positions.height > 0
    finally:
        delete_stream(nats_url, f"KV_{bucket}")


def test_a_stream_name_holding_a_percent_sign(
    nats_url: str, stream_name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """NATS 2.9 (the system server) formats a stream name holding '%' into its ack
    subjects as a Go format string (`$JS.ACK.A%!B(uint64=1)…`): a one-line error saying
    so, not a numpy crash. A current server sends the name as it is, and it archives."""
    name = f"{stream_name}%B"
    publish(nats_url, name, [ce_message(i) for i in range(3)], create={})
    try:
        if request.node.callspec.params["nats_url"] == "system":
            with pytest.raises(SourceError) as caught:
                archive(nats_url, name, tmp_path)
            assert "before 2.10 garble them for stream names holding '%'" in str(caught.value)
            assert "\n" not in str(caught.value)
        else:
            assert archive(nats_url, name, tmp_path).messages == 3
            assert rows(tmp_path, "select distinct source from events") == [(f"jetstream:{name}",)]
    finally:
        delete_stream(nats_url, name)
