"""CloudEvents from every kind of producer, and times that are none, in the JetStream mapping.

Most tests evaluate the mapping on a batch directly; the last archives through
the real NATS servers.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from _jetstream_helpers import ce_message, delete_stream, publish

import workbench as wb
from workbench import cli
from workbench.archive import ArchiveReader
from workbench.sources.jetstream.mapping import JetStreamMapping, MappedBatch

#: A structured-mode event as the CloudEvents NATS binding 1.0.0/1.0.1 sends it: no headers.
EVENT: dict[str, Any] = {
    "specversion": "1.0",
    "id": "e-1",
    "type": "OrderPlaced",
    "source": "/orders",
    "subject": "order-7",
    "time": "2024-05-01T10:00:00Z",
    "correlationid": "req-1",
    "datacontenttype": "application/json",
    "data": {"order": 7, "total": 12.5},
}
COLUMNS = ["event_id", "event_type", "stream", "occurred_at", "correlation_id", "data", "payload"]


def mapped(mapping: JetStreamMapping, *messages: tuple[bytes, bytes]) -> MappedBatch:
    """``(header block, payload)`` messages through ``mapping`` as one batch."""
    n = len(messages)
    return mapping.map_batch(
        seq=list(range(1, n + 1)),
        ts_ns=[1_714_550_400_000_000_000] * n,
        delivered=[1] * n,
        subject=[b"orders.placed"] * n,
        headers=[h for h, _ in messages],
        payload=[p for _, p in messages],
    )


def rows(mapping: JetStreamMapping, *messages: tuple[bytes, bytes]) -> list[dict[str, Any]]:
    table = mapping.map_batch(
        seq=list(range(1, len(messages) + 1)),
        ts_ns=[0] * len(messages),
        delivered=[1] * len(messages),
        subject=[b"orders.placed"] * len(messages),
        headers=[h for h, _ in messages],
        payload=[p for _, p in messages],
    ).table
    return table.select(COLUMNS).to_pylist()


DEFAULT = JetStreamMapping.from_options("cloudevents", [])


def test_a_structured_cloudevent_without_headers_reads_as_with_its_content_type() -> None:
    body = json.dumps(EVENT).encode()
    headerless, nats_id_only, typed = rows(
        DEFAULT,
        (b"", body),
        (b"Nats-Msg-Id: e-1", body),  # the JavaScript client's msgID option
        (b"content-type: application/cloudevents+json", body),
    )
    assert headerless == nats_id_only == typed
    assert {k: v for k, v in headerless.items() if k not in ("occurred_at", "data")} == {
        "event_id": "e-1",
        "event_type": "OrderPlaced",
        "stream": "order-7",
        "correlation_id": "req-1",
        "payload": body,  # source, specversion, ... beside data are kept
    }
    assert headerless["occurred_at"].isoformat() == "2024-05-01T10:00:00+00:00"
    assert json.loads(headerless["data"]) == EVENT["data"]


def test_a_headerless_structured_cloudevent_with_binary_data_keeps_the_bytes() -> None:
    event = {k: v for k, v in EVENT.items() if k != "data"}
    event["data_base64"] = base64.b64encode(b"\x00\xffproto").decode()
    body = json.dumps(event).encode()
    (row,) = rows(DEFAULT, (b"", body))
    assert (row["event_id"], row["data"], row["payload"]) == ("e-1", None, body)


@pytest.mark.parametrize(
    ("headers", "body", "event_type"),
    [
        # An ordinary JSON payload: no specversion.
        (b"", {"id": "x", "type": "Shipped", "data": {"a": 1}}, None),
        # specversion must be text; id and type must be there.
        (b"", EVENT | {"specversion": 1.0}, None),
        (b"", {k: v for k, v in EVENT.items() if k != "id"}, None),
        (b"", EVENT | {"type": None}, None),
        (b"", [EVENT], None),
        # Binary mode: the headers are the event, the payload is its data, whatever it holds.
        (b"ce-specversion: 1.0\r\nce-id: b-1\r\nce-type: Binary", EVENT, "Binary"),
        (b"CE-Type: Binary", EVENT, "Binary"),
        # A content-type that says plain JSON is taken at its word.
        (b"content-type: application/json", EVENT, None),
    ],
)
def test_what_is_no_headerless_structured_cloudevent_keeps_its_payload_as_data(
    headers: bytes, body: object, event_type: str | None
) -> None:
    text = json.dumps(body)
    (row,) = rows(DEFAULT, (headers, text.encode()))
    assert (row["event_type"], row["data"], row["payload"], row["occurred_at"]) == (
        event_type,
        text,
        None,
        None,
    )


def test_data_preset_falls_back_to_the_whole_payload_of_a_binary_mode_message() -> None:
    """A stream of binary-mode CloudEvents, headerless structured ones and envelopes of the
    user's own ({"type", "data"}): the reported maps now fill data for each of them."""
    _, binary_body, binary_headers = ce_message(0)
    assert binary_headers is not None
    binary = ("\r\n".join(f"{k}: {v}" for k, v in binary_headers.items()).encode(), binary_body)
    structured = (b"", json.dumps(EVENT).encode())
    own = (b"", json.dumps({"type": "Shipped", "data": {"box": 3}}).encode())
    maps = ["event_type=preset", "event_type=data:type", "data=data:data", "data=preset"]
    got = rows(JetStreamMapping.from_options("cloudevents", maps), binary, structured, own)
    assert [(r["event_type"], json.loads(r["data"])) for r in got] == [
        ("MemoryCreated", json.loads(binary_body)),
        ("OrderPlaced", EVENT["data"]),
        ("Shipped", {"box": 3}),
    ]
    # Without data=preset, data is the mapped path alone: a binary message has none there.
    only = rows(JetStreamMapping.from_options("cloudevents", ["data=data:data"]), binary)
    assert only[0]["data"] is None and only[0]["payload"] == binary_body
    # The default preset alone maps the CloudEvents; the user's envelopes need the maps.
    assert [r["event_type"] for r in rows(DEFAULT, binary, structured, own)] == [
        "MemoryCreated",
        "OrderPlaced",
        None,
    ]


def test_times_that_are_none_are_counted_and_shown_not_only_left_null() -> None:
    structured = json.dumps(EVENT | {"time": "soon"}).encode()
    batch = mapped(
        DEFAULT,
        (b"ce-time: yesterday", b"{}"),
        (b"ce-time: infinity", b"{}"),  # DuckDB would cast it to a time nothing can show
        (b"ce-time: 2024-05-01T10:00:00Z", b"{}"),
        (b"ce-time: 1714550400123", b"{}"),  # Date.now()
        (b"ce-time:", b"{}"),  # empty: no value, nothing unreadable
        (b"X: 1", b"{}"),
        (b"", structured),
    )
    assert (batch.unread, batch.unread_example) == (
        {"occurred_at": 3},
        {"occurred_at": "yesterday"},
    )
    times = batch.table.column("occurred_at").to_pylist()
    assert [t and t.isoformat() for t in times] == [
        None,
        None,
        "2024-05-01T10:00:00+00:00",
        "2024-05-01T08:00:00.123000+00:00",
        None,
        None,
        None,
    ]
    # The archive gets the envelope columns only.
    assert (
        batch.table.column_names
        == DEFAULT.map_batch(
            seq=[1], ts_ns=[0], delivered=[1], subject=[b"a"], headers=[b""], payload=[b"{}"]
        ).table.column_names
    )


def test_a_later_candidate_that_is_a_time_leaves_nothing_to_count() -> None:
    mapping = JetStreamMapping.from_options(
        "raw", ["occurred_at=data:at", "occurred_at=header:X-At"]
    )
    long = "not a time, " * 10
    batch = mapped(
        mapping,
        (b"X-At: 1714550400", b'{"at": "garbage"}'),  # the header fills it
        (b"", json.dumps({"at": {"when": "now"}}).encode()),
        (b"", json.dumps({"at": long}).encode()),
        (b"", b'{"at": null}'),
    )
    assert batch.unread == {"occurred_at": 2}
    assert batch.unread_example == {"occurred_at": '{"when":"now"}'}
    assert batch.table.column("occurred_at").null_count == 3
    # Without a mapped time there is nothing to count.
    assert mapped(JetStreamMapping.from_options("raw", []), (b"", b"{}")).unread == {}


def test_a_position_or_version_that_is_no_integer_is_null_and_counted_not_rounded() -> None:
    """DuckDB's cast rounds "5.5" to 6: a stream position nobody wrote, which the stream-gap
    and duplicate checks would then trust. A value that is no integer is null, and said."""
    mapping = JetStreamMapping.from_options(
        "raw", ["stream_position=data:version", "schema_version=header:X-Version"]
    )
    batch = mapped(
        mapping,
        (b"X-Version: 2", b'{"version": 1}'),
        (b"X-Version: 2.5", b'{"version": "2"}'),
        (b"", b'{"version": 5.5}'),
        (b"X-Version: three", b'{"version": "six"}'),
        (b"", b'{"version": null}'),
    )
    table = batch.table
    assert table.column("stream_position").to_pylist() == [1, 2, None, None, None]
    # Given and not a number: null, not the default 1 (which only an absent one gets).
    assert table.column("schema_version").to_pylist() == [2, None, 1, None, 1]
    assert batch.unread == {"stream_position": 2, "schema_version": 2}
    assert batch.unread_example == {"stream_position": "5.5", "schema_version": "2.5"}
    # A dataschema URI that names no version gives none: the default 1, nothing unread.
    ce = mapped(
        DEFAULT,
        (b"ce-id: 1\r\nce-type: T\r\nce-dataschema: https://x.io/schemas/order.json", b"{}"),
        (b"ce-id: 2\r\nce-type: T\r\nce-dataschema: https://x.io/schemas/order/v3", b"{}"),
    )
    assert ce.table.column("schema_version").to_pylist() == [1, 3] and ce.unread == {}


@pytest.mark.nats
def test_archiving_headerless_cloudevents_and_reporting_unreadable_times(
    nats_url: str, stream_name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    subject, body, headers = ce_message(1)
    assert headers is not None
    messages = [
        ("orders.placed", json.dumps(EVENT).encode(), None),
        (subject, body, headers | {"ce-time": "yesterday"}),
        ce_message(2),
        ("orders.plain", b'{"order": 8}', None),
    ]
    try:
        publish(nats_url, stream_name, messages, create={})
        result = wb.archive_jetstream(nats_url, stream_name, tmp_path / "a", warn=False)
        assert result.unread == {"occurred_at": 1}
        assert "occurred_at: 1 value(s) not a time (kept null), e.g. 'yesterday'" in str(result)
        got = ArchiveReader(tmp_path / "a").sql(
            "select event_id, event_type, stream, strftime(occurred_at, '%Y-%m-%dT%H:%M'), data "
            "from events order by global_position"
        )
        assert got.fetchall() == [
            ("e-1", "OrderPlaced", "order-7", "2024-05-01T10:00", '{"order":7,"total":12.5}'),
            ("evt-1", "MemoryCreated", "memory-1", None, body.decode()),
            ("evt-2", "MemoryCreated", "memory-1", "2024-05-01T12:00", ce_message(2)[1].decode()),
            (None, None, None, None, '{"order": 8}'),
        ]
        args = ["archive", "jetstream", "--server", nats_url, "--stream", stream_name]
        assert cli.run([*args, "--out", str(tmp_path / "b")]) == 0
        assert "1 value(s) not a time (kept null)" in capsys.readouterr().out
    finally:
        delete_stream(nats_url, stream_name)


def test_a_mapping_that_fills_only_some_messages_is_said_with_the_fix(
    nats_url: str, stream_name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stream of binary-mode, structured and plain messages: data:seq finds the binary
    ones' field, not the structured ones' (under data), and the plain ones have no type."""
    data = {"order": 7, "seq": 3}
    binary = ce_message(1)[2] or {}
    structured = {"content-type": "application/cloudevents+json"}
    messages = [
        ("orders.o7", json.dumps(data).encode(), binary),
        ("orders.o7", json.dumps({**EVENT, "data": data}).encode(), structured),
        ("orders.o7", json.dumps(data).encode(), {"Nats-Msg-Id": "m-3"}),
    ]
    args = ["archive", "jetstream", "--server", nats_url, "--stream", stream_name]
    try:
        publish(nats_url, stream_name, messages, create={})
        assert (
            cli.run([*args, "--out", str(tmp_path / "a"), "--map", "stream_position=data:seq"]) == 0
        )
        out = "".join(capsys.readouterr())  # the summary, then the hints on stderr
        assert (
            "hint: stream_position is empty in 1 of 3 messages with your --map "
            "stream_position=data:seq; in a structured CloudEvent, data: paths start at the "
            "event (its id, type, data): add --map stream_position=data:data.seq after it"
        ) in " ".join(out.split())
        assert "hint: event_type is empty in 1 of 3 messages: a replay dispatches none" in out
        fixed = ["--map", "stream_position=data:seq", "--map", "stream_position=data:data.seq"]
        assert cli.run([*args, "--out", str(tmp_path / "b"), *fixed]) == 0
        assert "stream_position is empty" not in "".join(capsys.readouterr())
        positions = ArchiveReader(tmp_path / "b").sql("select stream_position from events")
        assert positions.fetchall() == [(3,), (3,), (3,)]
    finally:
        delete_stream(nats_url, stream_name)


def test_percent_encoded_attributes_read_as_the_sdks_read_them() -> None:
    """Java's NATS binding and Python's HTTP binding percent-encode header values (the
    JavaScript SDK does not): a stream read still encoded would split one aggregate in two."""
    got = rows(
        DEFAULT,
        (b"ce-id: e-1\r\nce-type: T\r\nce-subject: caf%C3%A9%20order%208\r\n"
         b"ce-correlationid: corr%208", b"{}"),
        (b"ce-id: 100%\r\nce-type: T\r\nce-subject: caf\xc3\xa9 order 8", b"{}"),
        (b"ce-id: 3\r\nce-type: T\r\nce-subject: caf%E9", b"{}"),  # no UTF-8 once decoded
    )  # fmt: skip
    assert [(r["event_id"], r["stream"], r["correlation_id"]) for r in got] == [
        ("e-1", "café order 8", "corr 8"),
        ("100%", "café order 8", None),  # a lone % is no encoding
        ("3", "caf%E9", None),  # kept as it came, not a failed batch
    ]


def test_a_cloudevents_batch_is_archived_whole_and_said_so(
    nats_url: str, stream_name: str, tmp_path: Path
) -> None:
    """A batch holds several events at one stream sequence, which one position cannot
    split: it is archived whole under a reserved type, not as an event without a type."""
    batch = [EVENT, {**EVENT, "id": "e-2"}]
    messages = [
        ("orders.batch", json.dumps(batch).encode(),
         {"content-type": "application/cloudevents-batch+json"}),
        ce_message(1),
    ]  # fmt: skip
    try:
        publish(nats_url, stream_name, messages, create={})
        result = wb.archive_jetstream(nats_url, stream_name, tmp_path, warn=False)
        assert result.batches == 1
        assert "1 CloudEvents batch(es) archived whole, event_type $cloudevents.batch" in str(
            result
        )
        got = ArchiveReader(tmp_path).sql(
            "select event_id, event_type, data from events order by global_position"
        )
        first, second = got.fetchall()
        assert first[:2] == (None, "$cloudevents.batch") and json.loads(first[2]) == batch
        assert second[:2] == ("evt-1", "MemoryCreated")

        # Its events reach no handler of their type: a replay must say so, not read as
        # covered (the source's own messages, NATS markers, are fine unhandled).
        class Orders(wb.Projection):
            orders = wb.Table(key="id", id=str)

            @wb.on("OrderPlaced", "MemoryCreated")
            def placed(self, event: wb.Event, tables: wb.Tables) -> None:
                tables.orders.upsert({"id": event.event_id})

        coverage = wb.check_coverage(tmp_path, Orders())
        assert coverage.uncovered_events == 1
        assert coverage.problems()[0].startswith(
            "$cloudevents.batch v1 (1 events): CloudEvents batches: the events in each are "
            "not replayed one by one"
        )

        class Unpacking(Orders):
            @wb.on("$cloudevents.batch")
            def batch(self, event: wb.Event, tables: wb.Tables) -> None:
                for inner in event.data:
                    tables.orders.upsert({"id": inner["id"]})

        assert wb.check_coverage(tmp_path, Unpacking()).ok
        done = wb.replay(tmp_path, Unpacking(), into=tmp_path / "rm.duckdb")
        assert sorted(done.table("orders")["id"]) == ["e-1", "e-2", "evt-1"]
    finally:
        delete_stream(nats_url, stream_name)


def test_a_structured_events_attributes_join_its_metadata_as_binary_mode_names_them() -> None:
    """One place to read ce-source or an extension, whichever mode a producer chose."""
    event = {**EVENT, "tenant": "acme", "seq": 5}
    table = mapped(
        DEFAULT,
        (b"content-type: application/cloudevents+json", json.dumps(event).encode()),
        (b"ce-id: e-2\r\nce-type: T\r\nce-source: /orders\r\nce-tenant: acme", b"{}"),
    ).table
    structured, binary = (json.loads(m) for m in table["metadata"].to_pylist())
    assert structured == {
        "content-type": "application/cloudevents+json",
        **{f"ce-{k}": str(v) for k, v in event.items() if k != "data"},
    }
    assert structured["ce-seq"] == "5" and "ce-data" not in structured  # text, as headers are
    assert {k: binary[k] for k in ("ce-source", "ce-tenant")} == {
        k: structured[k] for k in ("ce-source", "ce-tenant")
    }


def test_a_binary_mode_text_payload_is_a_string_as_in_structured_mode() -> None:
    """datacontenttype text/plain: "42" is the string "42", not the number; XML is text."""
    got = rows(
        DEFAULT,
        (b"ce-id: 1\r\nce-type: T\r\ncontent-type: text/plain", b"42"),
        (b"ce-id: 2\r\nce-type: T\r\ncontent-type: application/xml", b"<a/>"),
        (b"ce-id: 3\r\nce-type: T\r\ncontent-type: application/octet-stream", b"\x00\x01"),
        (b"ce-id: 4\r\nce-type: T\r\ncontent-type: application/json", b'{"x": 1}'),
    )
    assert [(r["data"], r["payload"]) for r in got] == [
        ('"42"', b"42"),
        ('"<a/>"', b"<a/>"),
        (None, b"\x00\x01"),
        ('{"x": 1}', None),
    ]
