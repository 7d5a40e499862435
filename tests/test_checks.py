"""The checks against hand-made archives (each fault exactly) and the generator's planted truth."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

import workbench as wb
from workbench.archive import CONSUMER_SAMPLE_SCHEMA, ArchiveWriter, append_records
from workbench.errors import ArchiveError
from workbench.report import write_report
from workbench.scenario import Faults, Scenario, generate

S = 1_000_000  # microseconds per second


def table(positions: list[int], **columns: list[object]) -> pa.Table:
    return pa.table(
        {"global_position": positions, "recorded_at": [p * S for p in positions], **columns}
    )


# ------------------------------------------------------------------ opening


def test_a_directory_holding_no_archive_is_refused_not_checked_clean(tmp_path: Path) -> None:
    """Every check of an empty directory would come back clean: opening it is the error,
    naming the archive below when the user gave its parent (``workbench demo``'s out)."""
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArchiveError, match=r"^no archive at .*empty \(no source=\*/ directory"):
        wb.open_archive(tmp_path / "empty")
    ArchiveWriter(tmp_path / "out" / "archive", "s").append(table([1, 2]))
    with pytest.raises(ArchiveError, match=r"^no archive at .*out: the archive is .*out/archive$"):
        wb.open_archive(tmp_path / "out")
    assert len(wb.open_archive(tmp_path / "out" / "archive")) == 2
    # An archiver has begun here, though no event is archived yet: it opens, empty.
    (tmp_path / "begun" / "source=s").mkdir(parents=True)
    assert len(wb.open_archive(tmp_path / "begun")) == 0


# ------------------------------------------------------------------ gaps


def test_stream_gaps_are_told_by_the_removals_between_their_neighbours(tmp_path: Path) -> None:
    """A deleted message, or an aggregate's first versions gone with retention, leaves a
    stream gap too: accepting those removals accepts the stream gaps they explain, and
    no other (a version the writer skipped, or one lost beside an accepted removal)."""
    w = ArchiveWriter(tmp_path, "s")
    w.append(
        table(
            [3, 4, 5, 7, 8, 9, 10, 12, 13],
            stream=["a", "b", "a", "a", "c", "c", "b", "c", "d"],
            stream_position=[3, 1, 4, 6, 1, 2, 2, 4, 1],
        )
    )
    w.record_gap(1, 2, "retention")  # a's versions 1 and 2
    w.record_gap(6, 6, "deleted")  # a's version 5
    # c's version 3 was at 11, a hole no record explains; b and d are whole.
    gaps = wb.open_archive(tmp_path).gaps(accept=("deleted", "retention"))
    assert gaps.streams.select("stream", "first_missing", "last_missing", "reason").rows() == [
        ("a", 1, 2, "retention"),
        ("a", 5, 5, "deleted"),
        ("c", 3, 3, "unknown"),
    ]
    assert gaps.stream_faults["stream"].to_list() == ["c"]
    assert gaps.found == 2  # position 11, and c's version 3
    assert "1 stream gap(s) (and 2 of the accepted reasons)" in gaps.summary()
    assert wb.open_archive(tmp_path).gaps().found == 3 + 3  # nothing accepted: all count
    # A version skipped where no position is missing is the writer's fault, accepted or not.
    w.append(table([14], stream=["d"], stream_position=[3]))
    skipped = wb.open_archive(tmp_path).gaps(accept=("deleted", "retention"))
    assert ("d", 2, 2, "unknown") in skipped.streams.select(
        "stream", "first_missing", "last_missing", "reason"
    ).rows()


def test_one_accepted_removal_explains_one_missing_version(tmp_path: Path) -> None:
    """Each removed position holds one event: a deletion between two streams' neighbours
    excuses one of their missing versions, not both; a version's copy stored later
    does not narrow where the missing one after it was."""
    w = ArchiveWriter(tmp_path / "two", "s")
    w.append(table([1, 2, 4, 5], stream=["a", "b", "b", "a"], stream_position=[0, 0, 2, 2]))
    w.record_gap(3, 3, "deleted")  # a's v1 or b's v1: one of them is unexplained
    two = wb.open_archive(tmp_path / "two").gaps(accept=["deleted"])
    assert two.streams.height == 2 and sorted(two.streams["reason"]) == ["deleted", "unknown"]
    assert two.found == 1
    w = ArchiveWriter(tmp_path / "copy", "s")
    w.append(table([1, 2, 4, 5], stream=["a"] * 4, stream_position=[0, 1, 1, 3]))
    w.record_gap(3, 3, "deleted")  # v2, written before v1's copy at 4
    copy = wb.open_archive(tmp_path / "copy").gaps(accept=["deleted"])
    assert copy.streams.select("first_missing", "reason").rows() == [(2, "deleted")]
    assert copy.found == 0


def test_gaps_tell_recorded_reasons_from_guesses(tmp_path: Path) -> None:
    w = ArchiveWriter(tmp_path, "s")
    w.append(table([5, 6, 9, 10, 14, 20]))
    w.record_gap(7, 8, "deleted")
    w.record_gap(15, 16, "rolled-back")  # part of the hole 15..19; 17..19 stays unexplained
    gaps = wb.open_archive(tmp_path).gaps()
    assert gaps.positions.select("first_missing", "last_missing", "reason", "recorded").rows() == [
        (1, 4, "retention", False),
        (7, 8, "deleted", True),
        (11, 13, "unknown", False),
        (15, 16, "rolled-back", True),
        (17, 19, "unknown", False),
    ]
    assert gaps.positions["missing"].to_list() == [4, 2, 3, 2, 3]
    assert gaps.found == 4  # a rolled-back sequence value lost nothing
    # print() and a plain REPL say what was found, as a notebook's view does.
    assert str(gaps) == gaps.summary()
    assert repr(gaps).startswith(f"Gaps(found=4: {gaps.summary()}; positions=5 rows, streams=")
    assert gaps.summary().startswith(
        "12 missing position(s) in 4 range(s) (deleted: 2, retention: 4, unknown: 6); "
        "2 that never held an event (rolled-back: 2; no fault)"
    )
    # A KV bucket or a stream with message TTLs removes messages by design.
    kv = wb.open_archive(tmp_path).gaps(accept=("deleted", "retention"))
    assert kv.found == 2 and kv.faults["reason"].to_list() == ["unknown", "unknown"]
    assert "6 removed as expected (deleted: 2, retention: 4; accepted)" in kv.summary()
    with pytest.raises(ArchiveError, match=r"accepted gap reason\(s\) purged: not a reason"):
        wb.open_archive(tmp_path).gaps(accept=["purged"])
    # The chart's axis spans the archive, not only its gaps, so a gap shows where it falls.
    w.append(table([30]))
    spanned = wb.open_archive(tmp_path).gaps().chart().to_dict()["layer"][0]["encoding"]["x"]
    assert spanned["scale"]["domain"] == [1, 31]


def test_stream_gaps(tmp_path: Path) -> None:
    ArchiveWriter(tmp_path, "s").append(
        table(
            [1, 2, 3, 4, 5, 6],
            stream=["a", "a", "a", "b", "b", "c"],
            stream_position=[0, 1, 3, 0, 1, 2],
        )
    )
    streams = wb.open_archive(tmp_path).gaps().streams
    assert streams.select("stream", "first_missing", "last_missing").rows() == [
        ("a", 2, 2),
        ("c", 0, 1),
    ]


def test_a_store_s_own_rows_number_no_stream_of_their_own_but_keep_their_place(
    tmp_path: Path,
) -> None:
    """Marten's tombstone stream is versioned by global position (no sequence to check);
    a $-typed row inside an ordinary stream still fills its position there."""
    ArchiveWriter(tmp_path, "s").append(
        table(
            [1, 2, 3, 4, 5, 6],
            stream=["o", "o", "o", "o", "mt_tombstone", "mt_tombstone"],
            stream_position=[0, 1, 2, 3, 5, 6],
            event_type=["A", "$tombstone", "B", "C", "$marten.tombstone", "$marten.tombstone"],
        )
    )
    assert wb.open_archive(tmp_path).gaps().streams.height == 0


def _raw_nats_and_store(root: Path) -> None:
    """A raw NATS source (subject as stream, no stream_position, no ids beyond the message
    id) beside a store that fills everything, one event of which has no stream_position."""
    ArchiveWriter(root, "jetstream:BANK").append(
        table(
            [1, 2, 3],
            event_id=["n1", "n2", "n3"],
            stream=["bank.acct.1", "bank.acct.1", "bank.acct.2"],
            data=['{"n":1}', '{"n":1}', '{"n":2}'],
        )
    )
    ArchiveWriter(root, "pg").append(
        table(
            [1, 2, 3, 4],
            event_id=["p1", "p2", "p3", "p4"],
            stream=["acct-1"] * 4,
            stream_position=[1, 3, None, 3],
            correlation_id=["r1", "r2", "r3", "r4"],
            data=['{"n":1}', '{"n":2}', '{"n":3}', '{"n":4}'],
        )
    )


def test_the_gaps_shown_first_are_the_faults_and_the_rare_ones(tmp_path: Path) -> None:
    """A table shows its first rows: a few deleted gaps sat behind many retention ones."""
    w = ArchiveWriter(tmp_path, "s")
    w.append(table([*range(20, 40, 2), 41, 42]))  # leading retention, then 10 holes
    w.record_gaps([(40, 40, "rolled-back")])
    gaps = wb.open_archive(tmp_path).gaps()
    assert gaps.positions["reason"].to_list() == ["retention", *["unknown"] * 10, "rolled-back"]
    shown = gaps.highlights()["positions"]["reason"].to_list()
    assert shown == [*["unknown"] * 10, "retention", "rolled-back"]  # the harmless last


def test_stream_checks_that_cannot_run_say_so_instead_of_0(tmp_path: Path) -> None:
    """No stream_position in any event of a source: its streams were never looked at,
    which is no clean 0. A source missing it only sometimes is checked as usual."""
    _raw_nats_and_store(tmp_path)
    archive = wb.open_archive(tmp_path)
    gaps = archive.gaps()
    assert gaps.unchecked.select("source", "check", "events", "null_columns").rows() == [
        ("jetstream:BANK", "stream gaps", 3, ["stream_position"])
    ]
    assert gaps.streams.select("source", "first_missing").rows() == [("pg", 2)]
    assert gaps.found == 1  # pg's hole; not checking BANK is no finding
    assert gaps.summary().endswith(
        "; 1 stream gap(s); stream gaps not checked for jetstream:BANK: stream_position is "
        "null in all 3 events (map it with --map stream_position=...)"
    )
    assert "unchecked" in gaps.tables() and "unchecked" not in gaps.highlights()

    dups = archive.duplicates()
    assert dups.unchecked.select("source", "check", "null_columns").rows() == [
        ("jetstream:BANK", "content copies", ["correlation_id", "causation_id"]),
        ("jetstream:BANK", "stream_position copies", ["stream_position"]),
    ]
    assert dups.count("stream_position") == 1 and dups.found == 1  # pg's position 3, twice
    summary = dups.summary()
    assert summary.startswith(
        "1 duplicate copy (event_id: 0, redelivery: 0, stream_position: 1); "
        "content copies not checked for jetstream:BANK: correlation_id and causation_id are "
        "null in all 3 events (map them with --map correlation_id=... or --map causation_id=...)"
    )
    assert "content: 0" not in summary
    # No event of either names its cause: no orphan or cycle could be found.
    causation = archive.causation()
    assert causation.unchecked.select("source", "check").rows() == [
        ("jetstream:BANK", "causation"),
        ("pg", "causation"),
    ]
    assert causation.summary().endswith(
        "; causation not checked for 2 sources (jetstream:BANK, pg): causation_id is null in "
        "all their events (map it with --map causation_id=...)"
    )
    # A report shows them not fully checked, not a green ok.
    html = (write_report(tmp_path / "r.html", archive)).read_text()
    assert '<span class="badge unchecked">not fully checked</span>' in html


def test_a_clean_0_only_where_the_stream_checks_ran(tmp_path: Path) -> None:
    ArchiveWriter(tmp_path, "raw").append(table([1, 2], stream=["a", None]))
    ArchiveWriter(tmp_path, "split").append(
        table([1, 2], stream=["a", None], stream_position=[None, 1])
    )
    archive = wb.open_archive(tmp_path)
    gaps = archive.gaps()
    assert gaps.found == 0 and "stream gap(s)" not in gaps.summary()  # no "0 stream gap(s)"
    assert dict(gaps.unchecked.select("source", "reason").rows()) == {
        "raw": "stream_position is null in all 2 events (map it with --map stream_position=...)",
        "split": "none of its 2 events has a stream and a stream_position together",
    }
    assert "stream_position: 0" not in archive.duplicates().summary()
    ArchiveWriter(tmp_path / "ok", "s").append(
        table([1, 2], stream=["a", "a"], stream_position=[1, 2])
    )
    ok = wb.open_archive(tmp_path / "ok")
    assert ok.gaps().unchecked.height == 0 and ok.gaps().summary().endswith("; 0 stream gap(s)")
    assert "stream_position: 0" in ok.duplicates().summary()


# ------------------------------------------------------------ duplicates


def test_duplicates_of_each_kind(tmp_path: Path) -> None:
    ArchiveWriter(tmp_path, "s").append(
        pa.table(
            {
                "global_position": [1, 2, 3, 4, 5, 6, 7, 8],
                "recorded_at": [0, 1 * S, 2 * S, 3 * S, 100 * S, 101 * S, 200 * S, 201 * S],
                "event_id": ["a", "b", "a", "c", "d", "e", "f", "g"],
                "event_type": ["T"] * 8,
                "stream": ["x"] * 8,
                "causation_id": ["r1", "r2", "r1", "r2", "r3", "r4", None, None],
                "data": ['{"n":1}', '{"n":2}', '{"n":1}', '{"n":2}', '{"n":3}', '{"n":3}']
                + ['{"n":5}'] * 2,
                "delivery_count": [1, 1, 1, 1, 3, 1, 1, 1],
            }
        )
    )
    dups = wb.open_archive(tmp_path).duplicates()
    assert dups.copies.select("kind", "global_position", "first_position").rows() == [
        ("event_id", 3, 1),  # same id again; not also a content copy
        ("redelivery", 5, 5),
        ("content", 4, 2),  # new id, same type, stream, data and cause, 2 s later
    ]  # 6 repeats 5's data but from another request; 8 repeats 7's, no request to tell
    assert dups.timeline["copies"].sum() == 3
    assert (
        wb.open_archive(tmp_path).duplicates(window=dt.timedelta(seconds=1)).count("content") == 0
    )


def test_two_events_at_one_stream_position_are_found(tmp_path: Path) -> None:
    """Two writers that both passed a version check, or two tenants' streams under one
    name: another event where the stream already had one. The same event again (same
    id) is an event_id copy, not this; without ids, the same content is no conflict."""
    ArchiveWriter(tmp_path, "s").append(
        pa.table(
            {
                "global_position": [1, 2, 3, 4, 5, 6, 7],
                "recorded_at": [0, S, 2 * S, 3 * S, 4 * S, 5 * S, 6 * S],
                "event_id": ["a", "b", "c", "a", None, None, None],
                "stream": ["cart-1", "cart-1", "cart-1", "cart-1", "cart-2", "cart-2", "cart-2"],
                "stream_position": [1, 2, 2, 1, 1, 1, 1],
                "data": [
                    '{"n":1}',
                    '{"n":2}',
                    '{"n":3}',
                    '{"n":1}',
                    '{"x":1}',
                    '{"x":1}',
                    '{"x":2}',
                ],
            }
        )
    )
    dups = wb.open_archive(tmp_path).duplicates()
    conflicts = dups.copies.filter(pl.col("kind") == "stream_position")
    assert conflicts.select("global_position", "stream", "first_position").rows() == [
        (3, "cart-1", 2),
        (7, "cart-2", 5),
    ]
    assert dups.count("event_id") == 1 and "stream_position: 2" in dups.summary()


# ---------------------------------------------------------------- drift


def test_drift_finds_added_removed_renamed_retyped(tmp_path: Path) -> None:
    v1 = ['{"id": 1, "name": "x", "size": 3, "old": true}'] * 20
    v2 = ['{"id": 1, "title": "x", "size": "3", "new": [1]}'] * 20
    ArchiveWriter(tmp_path, "s").append(
        table(
            list(range(1, 41)),
            event_type=["T"] * 40,
            schema_version=[1] * 20 + [2] * 20,
            data=v1 + v2,
        )
    )
    drift = wb.open_archive(tmp_path).schema_drift()
    changes = {(r["change"], r["field"], r["new_field"]) for r in drift.changes.to_dicts()}
    assert changes == {
        ("renamed", "name", "title"),
        ("retyped", "size", None),
        ("removed", "old", None),
        ("added", "new", None),
    }
    assert drift.found == 0
    sizes = drift.fields.filter(pl.col("field") == "size")
    assert sizes.select("schema_version", "type").rows() == [(1, "number"), (2, "string")]


def test_a_number_written_whole_or_with_a_fraction_is_one_type(tmp_path: Path) -> None:
    """System.Text.Json writes a whole double as 1: not a retyped field."""
    scores = [f'{{"score": {v}}}' for v in ("1", "2.5", "12345678901234567890", "0.1")] * 10
    ArchiveWriter(tmp_path, "s").append(
        table(list(range(1, 41)), event_type=["T"] * 40, schema_version=[1] * 40, data=scores)
    )
    drift = wb.open_archive(tmp_path).schema_drift()
    assert drift.found == 0 and drift.mismatches.height == 0
    assert drift.fields.select("field", "type", "types").rows() == [("score", "number", ["number"])]
    # From a half up, "always" and "hardly ever" meet: every event would be drift.
    with pytest.raises(ArchiveError, match=r"tolerance 2: a share of the events from 0 to under"):
        wb.open_archive(tmp_path).schema_drift(tolerance=2)


def test_drift_finds_events_off_their_version(tmp_path: Path) -> None:
    data = ['{"a": 1, "b": 2}'] * 40 + [
        '{"a": 1}',
        '{"a": 1, "b": 2, "c": 3}',
        '{"a": "1", "b": 2}',
    ]
    ArchiveWriter(tmp_path, "s").append(table(list(range(1, 44)), event_type=["T"] * 43, data=data))
    mismatches = wb.open_archive(tmp_path).schema_drift().mismatches
    assert mismatches.select("global_position", "missing", "unexpected", "retyped").rows() == [
        (41, ["b"], [], []),
        (42, [], ["c"], []),
        (43, [], [], ["a"]),
    ]
    assert mismatches["reason"].to_list() == ["missing b", "unexpected c", "retyped a"]


def test_drift_lists_events_without_a_version_with_the_version_they_fit(tmp_path: Path) -> None:
    """A store's version that was missing or not an integer is archived as null: no
    version to fit, so the event is listed, not left out of every join."""
    data = ['{"a": 1}'] * 30 + ['{"a": 1, "b": 2}'] * 30 + ['{"a": 1, "b": 2}']
    versions = [1] * 30 + [2] * 30 + [None]
    ArchiveWriter(tmp_path, "s").append(
        table(list(range(1, 62)), event_type=["T"] * 61, schema_version=versions, data=data)
    )
    drift = wb.open_archive(tmp_path).schema_drift()
    assert drift.mismatches.select(
        "global_position", "schema_version", "likely_version"
    ).rows() == [(61, None, 2)]
    assert drift.mismatches["reason"].to_list() == [
        "no schema_version (none, or not an integer, in the store)"
    ]
    assert "1 event(s) not fitting their version (1 of them without one)" in drift.summary()
    unversioned = drift.fields.filter(pl.col("schema_version").is_null())
    assert unversioned.select("field", "present", "events").rows() == [("a", 1, 1), ("b", 1, 1)]
    assert drift.changes.select("from_version", "to_version", "change").rows() == [(1, 2, "added")]


def test_the_field_an_archiver_took_the_version_from_is_no_drift(tmp_path: Path) -> None:
    """The eventsourcing library writes class_version into a state from version 2 on:
    every upgraded type showed "added class_version", which is the version itself."""
    from workbench.archive import ArchiverRun

    data = ['{"a": 1}'] * 30 + ['{"a": 1, "b": 2, "class_version": 2}'] * 30
    for source, options in (("es", ["preset=eventsourcing"]), ("plain", ["preset=generic"])):
        ArchiveWriter(tmp_path, source).append(
            table(list(range(1, 61)), event_type=["T"] * 60,
                  schema_version=[1] * 30 + [2] * 30, data=data)
        )  # fmt: skip
        with ArchiverRun(tmp_path, source, "archive_postgres") as run:
            run.record(options)
    changes = wb.open_archive(tmp_path).schema_drift().changes
    assert changes.select("source", "change", "field").sort("source", "field").rows() == [
        ("es", "added", "b"),
        ("plain", "added", "b"),
        ("plain", "added", "class_version"),
    ]


def test_drift_of_a_source_with_no_json_payload_is_said_to_be_unchecked(tmp_path: Path) -> None:
    """Rails Event Store's default YAML, a binary format: data is null in every event
    (the bytes are in payload), so no field can drift; "0 changes" alone read as clean."""
    ArchiveWriter(tmp_path, "yaml").append(
        table([1, 2], event_type=["A", "A"], payload=[b"--- !ruby/object", b"--- x"])
    )
    ArchiveWriter(tmp_path, "json").append(table([1], event_type=["A"], data=['{"n": 1}']))
    drift = wb.open_archive(tmp_path).schema_drift()
    assert drift.unchecked["source"].to_list() == ["yaml"]
    assert "schema drift not checked for yaml: data is null in all 2 events" in drift.summary()
    assert "unchecked" not in drift.highlights() and drift.found == 0


def test_drift_keeps_sources_apart(tmp_path: Path) -> None:
    """One type from two services: a field one always sends and the other never does is
    no half-present field, and one source's versions are no change of the other's."""
    closed = ['{"id": 1, "occurred_at": "2024-01-01"}'] * 10
    ArchiveWriter(tmp_path, "a").append(
        table(list(range(1, 11)), event_type=["AccountClosed"] * 10, data=closed)
    )
    ArchiveWriter(tmp_path, "b").append(
        table(
            list(range(1, 21)),
            event_type=["AccountClosed"] * 20,
            schema_version=[2] * 20,
            data=['{"id": 1}'] * 20,
        )
    )
    drift = wb.open_archive(tmp_path).schema_drift()
    occurred = drift.fields.filter(pl.col("field") == "occurred_at")
    assert occurred.select(
        "source", "schema_version", "present", "events", "null_share"
    ).rows() == [("a", 1, 10, 10, 0.0)]
    assert drift.fields.select("source", "field").rows() == [
        ("a", "id"),
        ("a", "occurred_at"),
        ("b", "id"),
    ]
    assert drift.changes.height == 0  # a's v1 and b's v2 are no v1 -> v2 change
    assert drift.found == 0
    assert drift.summary().startswith("2 type/version(s)")
    cells = {v["version"] for v in drift.chart().to_dict()["data"]["values"]}
    assert cells == {"a: AccountClosed v1", "b: AccountClosed v2"}


def test_drift_finds_a_rename_without_a_new_version(tmp_path: Path) -> None:
    """No schema_version mapped: amount became amount_cents, never together, each in about
    half the events, so no field is required or foreign and no event is off its version."""
    data = (
        ['{"account": "a", "amount": 5}'] * 30
        + ['{"account": "a", "amount_cents": 500}'] * 5
        + ['{"account": "a", "amount": 5}'] * 2  # an old producer, still running
        + ['{"account": "a", "amount_cents": 500}'] * 23
    )
    ArchiveWriter(tmp_path, "jetstream:BANK").append(
        table(list(range(1, 61)), event_type=["Deposited"] * 60, data=data)
    )
    drift = wb.open_archive(tmp_path).schema_drift()
    assert drift.mismatches.height == 0
    assert drift.shapes.select(
        "source",
        "event_type",
        "schema_version",
        "events",
        "field",
        "present",
        "last_position",
        "new_field",
        "new_present",
        "first_new_position",
    ).rows() == [("jetstream:BANK", "Deposited", 1, 60, "amount", 32, 37, "amount_cents", 28, 31)]
    assert drift.found == 1 and drift.shapes["renamed"].to_list() == [True]
    assert drift.summary().endswith(
        "1 version(s) with two shapes, renamed without a new version: Deposited v1 in "
        "jetstream:BANK has amount (32 events) or amount_cents (28, from position 31), never both"
    )
    assert "shapes" in drift.highlights()


def test_drift_reads_shapes_whatever_the_keys_and_payloads(tmp_path: Path) -> None:
    """Keys with JSON-pointer characters, a nested empty object and payloads that are no
    object: the rename is counted on the events by its key, the array event lacks the
    required field, and an empty object is an object."""
    data = (
        ['{"a/b": 5, "meta": {}}'] * 30
        + ['{"a~b": 500, "meta": {"k": 1}}'] * 5
        + ['{"a/b": 5, "meta": {}}'] * 2
        + ['{"a~b": 500, "meta": {"k": 1}}'] * 23
        + ["[1, 2]"]
    )
    ArchiveWriter(tmp_path, "s").append(
        table(list(range(1, 62)), event_type=["Deposited"] * 61, data=data)
    )
    drift = wb.open_archive(tmp_path).schema_drift()
    assert drift.shapes.select(
        "field", "present", "new_field", "new_present", "renamed"
    ).rows() == [("a/b", 32, "a~b", 28, True)]
    assert drift.mismatches.select("global_position", "missing").rows() == [(61, ["meta"])]
    assert drift.fields.filter(pl.col("field") == "meta")["types"].to_list() == [["object"]]


def test_two_fields_mixed_throughout_are_two_shapes_by_design_not_a_finding(
    tmp_path: Path,
) -> None:
    """A contact is an email or a phone, in any order: no rename, so said but not failed."""
    data = ['{"email": "a@b"}' if i % 2 else '{"phone": "+1"}' for i in range(200)]
    ArchiveWriter(tmp_path, "s").append(
        table(list(range(1, 201)), event_type=["ContactAdded"] * 200, data=data)
    )
    drift = wb.open_archive(tmp_path).schema_drift()
    assert drift.shapes["renamed"].to_list() == [False] and drift.found == 0
    assert "1 version(s) with two shapes, mixed throughout: ContactAdded v1 in s has phone" in (
        drift.summary()
    )


def test_optional_fields_are_not_two_shapes(tmp_path: Path) -> None:
    """Correct data: optional fields absent now and then, fields apart by design but
    leaving most events without either, and too few events to tell."""
    optional = [
        '{"id": 1'
        + (', "note": "x"' if i % 3 == 0 else "")
        + (', "memo": "y"' if i % 2 else "")
        + "}"
        for i in range(100)
    ]  # note in a third, memo in half, together in a sixth
    apart = ['{"id": 1, "card": 1}'] * 30 + ['{"id": 1, "iban": 1}'] * 30 + ['{"id": 1}'] * 40
    few = ['{"a": 1}'] * 19 + ['{"b": 1}'] * 19  # each below MIN_SHAPE_EVENTS
    data = optional + apart + few
    types = ["Optional"] * 100 + ["Apart"] * 100 + ["Few"] * 38
    ArchiveWriter(tmp_path, "s").append(table(list(range(1, 239)), event_type=types, data=data))
    drift = wb.open_archive(tmp_path).schema_drift()
    assert drift.shapes.height == 0 and drift.mismatches.height == 0 and drift.found == 0
    # the same few events once more make each 38, enough to count as two shapes
    ArchiveWriter(tmp_path, "s").append(
        table(list(range(239, 277)), event_type=["Few"] * 38, data=few)
    )
    shapes = wb.open_archive(tmp_path).schema_drift().shapes
    assert shapes.select("event_type", "field", "new_field", "first_new_position").rows() == [
        ("Few", "a", "b", 220)
    ]


def test_drift_too_common_to_tell_from_an_optional_field_is_said(tmp_path: Path) -> None:
    """A field given to 8 % of a version's events is above the 5 % tolerance: no longer
    drift, and the summary said nothing at all; it names such fields now (not as found)."""
    data = ['{"id": 1, "ttl_s": 60}' if i % 12 == 0 else '{"id": 1}' for i in range(120)]
    ArchiveWriter(tmp_path, "s").append(
        table(list(range(1, 121)), event_type=["T"] * 120, data=data)
    )
    drift = wb.open_archive(tmp_path).schema_drift()
    assert drift.found == 0
    assert drift.summary().endswith(
        "1 field(s) in only part of their version's events, optional or drift too common to "
        "tell at tolerance 0.05 (a field in under 5% of them is drift): ttl_s of T v1 (8.3%)"
    )
    assert wb.open_archive(tmp_path).schema_drift(tolerance=0.1).found == 10


# ------------------------------------------------------------------ lag


def _samples(consumer: str, floors: list[int], last_seq: list[int], active: list[int]) -> pa.Table:
    n = len(floors)
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    return pa.table(
        {
            "source": ["s"] * n,
            "sampled_at": [t0 + dt.timedelta(seconds=10 * i) for i in range(n)],
            "stream": ["S"] * n,
            "consumer": [consumer] * n,
            "num_pending": [ls - f for f, ls in zip(floors, last_seq, strict=True)],
            "num_ack_pending": [0] * n,
            "num_redelivered": [0] * n,
            "num_waiting": [0] * n,
            "delivered_stream_seq": floors,
            "ack_floor_stream_seq": floors,
            "stream_last_seq": last_seq,
            "last_active": [t0 + dt.timedelta(seconds=a) for a in active],
        },
        schema=CONSUMER_SAMPLE_SCHEMA,
    )


def test_consumer_status_follows_burrow_rules(tmp_path: Path) -> None:
    ArchiveWriter(tmp_path, "s").append(table(list(range(1, 101))))
    grow = list(range(10, 100, 10))
    cases = {
        "ok": ([10, 20, 30, 40, 50], [10, 25, 30, 45, 50], [0, 10, 20, 30, 40]),
        "lagging": (grow[:5], [20, 35, 50, 65, 80], [0, 10, 20, 30, 40]),
        "stalled": ([10] * 5, [20, 30, 40, 50, 60], [0, 10, 20, 30, 40]),
        "stopped": ([10] * 5, [20] * 5, [-30] * 5),  # inactive since before the window
    }
    for name, (floors, last, active) in cases.items():
        append_records(tmp_path, "consumer_samples", "s", _samples(name, floors, last, active))
    lag = wb.open_archive(tmp_path).lag()
    status = dict(lag.status.select("consumer", "status").rows())
    assert status == {name: name for name in cases}
    assert lag.found == 3
    stalled = lag.status.filter(pl.col("consumer") == "stalled").row(0, named=True)
    assert stalled["backlog"] == 50
    # time lag: the oldest unacknowledged event (position 11, recorded at 11 s) at the last sample
    assert stalled["time_lag_seconds"] == pytest.approx(
        dt.datetime(2024, 1, 1, 0, 0, 40, tzinfo=dt.UTC).timestamp() - 11
    )
    assert lag.consumers["backlog"].max() == 50


def test_recording_lag_without_samples(tmp_path: Path) -> None:
    ArchiveWriter(tmp_path, "s").append(
        pa.table(
            {"global_position": [1, 2], "occurred_at": [0, 0], "recorded_at": [S // 4, S // 2]}
        )
    )
    lag = wb.open_archive(tmp_path).lag()
    assert lag.recording.select("events", "max_seconds").rows() == [(2, 0.5)]
    assert lag.status.height == 0 and lag.found == 0


def test_a_source_with_one_time_per_event_has_no_recording_lag(tmp_path: Path) -> None:
    """The eventsourcing library stores one timestamp: occurred_at is recorded_at, and a
    lag of 0 everywhere is no measurement (nor rows of noise)."""
    times = {"occurred_at": [S, 2 * S], "recorded_at": [S, 2 * S]}
    ArchiveWriter(tmp_path, "one-time").append(pa.table({"global_position": [1, 2], **times}))
    lag = wb.open_archive(tmp_path).lag()
    assert lag.recording.height == 0
    assert lag.summary().startswith("no recording lag to measure")
    ArchiveWriter(tmp_path, "two-times").append(
        pa.table({"global_position": [1], "occurred_at": [0], "recorded_at": [S]})
    )
    assert wb.open_archive(tmp_path).lag().recording["source"].to_list() == ["two-times"]


def test_recorded_at_stepping_back_is_a_clock_fault(tmp_path: Path) -> None:
    """A writer whose session time zone is New York stores local times in a `timestamp
    without time zone` column read as UTC: 5 h back from the position before. A long
    transaction's few seconds back are no fault."""
    hour = 3_600 * S
    ArchiveWriter(tmp_path, "s").append(
        pa.table(
            {
                "global_position": [1, 2, 3, 4],
                "recorded_at": [10 * hour, 10 * hour - 25 * S, 5 * hour + S, 10 * hour + S],
            }
        )
    )
    lag = wb.open_archive(tmp_path).lag()
    assert lag.clock.select("global_position", "back_seconds").rows() == [(3, 17_974.0)]
    assert lag.found == 1 and "recorded_at steps back 1 time(s)" in lag.summary()
    assert wb.open_archive(tmp_path).lag(step_back=dt.timedelta(hours=6)).found == 0


# ------------------------------------------------------------ causation


def test_causation_depth_fanout_orphans_cycles(tmp_path: Path) -> None:
    ArchiveWriter(tmp_path, "s").append(
        table(
            [1, 2, 3, 4, 5, 6, 7, 8],
            event_id=["a", "b", "c", "d", "x", "y", "z", "o"],
            correlation_id=["r", "r", "r", "r", "q", "q", "q", "q"],
            causation_id=["r", "a", "a", "b", "y", "x", "x", "missing"],
        )
    )
    archive = wb.open_archive(tmp_path)
    graph = archive.causation()
    by_id = {r["event_id"]: r for r in graph.nodes.to_dicts()}
    assert [by_id[e]["depth"] for e in "abcd"] == [0, 1, 1, 2]
    assert by_id["a"]["children"] == 2
    assert graph.orphans["event_id"].to_list() == ["o"]
    assert graph.tables()["orphans"]["event_id"].to_list() == ["o"]  # what found counts
    assert sorted(graph.cycles["event_id"]) == ["x", "y", "z"]  # z hangs below the cycle
    assert graph.found == 4
    assert graph.edges.filter(pl.col("event_id") == "d").select("parent_id", "seconds").row(0) == (
        "b",
        2.0,
    )
    one = archive.causation("r")
    assert one.nodes["event_id"].to_list() == ["a", "b", "d", "c"]  # tree order
    assert one.found == 0
    with pytest.raises(
        ArchiveError, match=r"no archived event \(with an event_id\) has correlation_id 'R'"
    ):
        archive.causation("R")
    with pytest.raises(ArchiveError, match=r"no event of this graph has correlation_id 'r'"):
        archive.causation("q").chart("r")


def test_one_correlations_graph_finds_causes_in_the_rest_of_the_archive(tmp_path: Path) -> None:
    """A cause archived under another correlation is no orphan of this one's graph."""
    ArchiveWriter(tmp_path, "s").append(
        table(
            [1, 2, 3, 4],
            event_id=["a", "b", "c", "d"],
            correlation_id=["r", "q", "q", "q"],
            causation_id=["r", "a", "gone", "cmd-1"],
        )
    )
    archive = wb.open_archive(tmp_path)
    assert archive.causation("q").orphans["event_id"].to_list() == ["c", "d"]
    one = archive.causation("q", external="cmd-*")
    assert one.orphans["event_id"].to_list() == ["c"]
    assert one.nodes.select("event_id", "parent_id", "depth").rows() == [
        ("b", None, 0),
        ("c", None, 0),
        ("d", None, 0),
    ]


def test_events_without_a_correlation_are_not_one_big_correlation(tmp_path: Path) -> None:
    """Most raw NATS messages carry no correlation id: they are no correlation of their own."""
    ArchiveWriter(tmp_path, "s").append(
        table(
            [1, 2, 3, 4, 5],
            event_id=["a", "b", "n1", "n2", "n3"],
            correlation_id=["r", "r", None, None, None],
            causation_id=["r", "a", None, None, None],
        )
    )
    graph = wb.open_archive(tmp_path).causation()
    assert graph.correlations["correlation_id"].to_list() == ["r"]
    assert graph.summary().startswith("5 event(s) (3 without a correlation id) in 1 correlation(s)")
    chart = graph.chart().to_dict()  # the largest real correlation, not the null group
    assert {row["event_id"] for row in chart["data"]["values"]} == {"a", "b"}
    # Drawn unasked, it says which correlation it is (the whole archive's chart looked
    # like any one correlation's).
    assert chart["title"]["subtitle"] == ("correlation_id r, the only one")
    assert graph.chart("r").to_dict()["title"]["subtitle"] == "correlation_id r"


# ---------------------------------------------------------- planted truth


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> tuple[Scenario, wb.Archive]:
    scenario = generate(seed=11, events=5_000)
    root = scenario.write_archive(tmp_path_factory.mktemp("faulty"))
    return scenario, wb.open_archive(root)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> wb.Archive:
    scenario = generate(seed=11, events=3_000, faults=Faults.none())
    return wb.open_archive(scenario.write_archive(tmp_path_factory.mktemp("clean")))


def test_every_planted_gap_is_found(faulty: tuple[Scenario, wb.Archive], tmp_path: Path) -> None:
    scenario, archive = faulty
    found = archive.gaps().positions.select("first_missing", "last_missing", "reason").rows()
    assert found == [(g.first, g.last, g.reason) for g in scenario.truth.gaps]
    # without gap records: the same ranges, leading = retention, interior = unknown
    bare = wb.open_archive(scenario.write_archive(tmp_path, record_gaps=False)).gaps()
    assert bare.positions.select("first_missing", "last_missing", "reason").rows() == [
        (g.first, g.last, "retention" if g.first == 1 else "unknown") for g in scenario.truth.gaps
    ]


def test_stream_gaps_are_the_events_lost_in_position_gaps(
    faulty: tuple[Scenario, wb.Archive],
) -> None:
    scenario, archive = faulty
    history = pl.from_arrow(scenario.history)
    held = pl.from_arrow(scenario.events.select(["stream", "stream_position"]))
    assert isinstance(history, pl.DataFrame) and isinstance(held, pl.DataFrame)
    top = held.group_by("stream").agg(pl.col("stream_position").max().alias("top"))
    lost = (
        history.join(held, on=["stream", "stream_position"], how="anti")
        .join(top, on="stream")
        .filter(pl.col("stream_position") < pl.col("top"))  # a lost tail leaves no hole
    )
    expected = set(lost.select("stream", "stream_position").unique().rows())
    streams = archive.gaps().streams
    found = {
        (s, p)
        for s, first, last in streams.select("stream", "first_missing", "last_missing").rows()
        for p in range(first, last + 1)
    }
    assert expected and found == expected


def test_every_planted_duplicate_is_found(faulty: tuple[Scenario, wb.Archive]) -> None:
    scenario, archive = faulty
    copies = archive.duplicates().copies
    by_id = copies.filter(pl.col("kind") == "event_id")
    found = {(r["event_id"], (r["first_position"], r["global_position"])) for r in by_id.to_dicts()}
    assert found == set(scenario.truth.duplicates.items())
    assert copies.filter(pl.col("kind") == "redelivery").height == 0
    # any same-content copy reported really is one: same type, stream, data and cause
    events = pl.from_arrow(scenario.events)
    assert isinstance(events, pl.DataFrame)
    key = ["event_type", "stream", "data", "correlation_id", "causation_id"]
    for row in copies.filter(pl.col("kind") == "content").to_dicts():
        pair = events.filter(
            pl.col("global_position").is_in([row["global_position"], row["first_position"]])
        )
        assert pair.select(key).unique().height == 1 and pair["event_id"].n_unique() == 2


def test_every_planted_drift_is_found(faulty: tuple[Scenario, wb.Archive]) -> None:
    scenario, archive = faulty
    drift = archive.schema_drift()
    assert drift.mismatches["global_position"].to_list() == list(scenario.truth.drift)
    assert drift.changes.select("source", "event_type", "change", "field").rows() == [
        (scenario.source, "MemoryCreated", "added", "importance")
    ]
    assert drift.shapes.height == 0 and drift.found == len(scenario.truth.drift)


def test_every_planted_orphan_is_found(faulty: tuple[Scenario, wb.Archive]) -> None:
    scenario, archive = faulty
    graph = archive.causation()
    assert graph.orphans["global_position"].sort().to_list() == list(scenario.truth.orphans)
    assert graph.cycles.height == 0
    assert set(graph.correlations["correlation_id"]) == scenario.truth.correlation_ids
    # The redelivered copies share their event_id with an event in the graph: left out, said so.
    copies = sum(len(ps) - 1 for ps in scenario.truth.duplicates.values())
    assert graph.left_out == copies > 0
    assert f"{copies} event(s) left out (no event_id, or a copy of one in the graph)" in (
        graph.summary()
    )


def test_every_planted_late_event_is_found(faulty: tuple[Scenario, wb.Archive]) -> None:
    scenario, archive = faulty
    lag = archive.lag()
    assert scenario.truth.late
    assert lag.late["global_position"].to_list() == list(scenario.truth.late)
    assert lag.found == len(scenario.truth.late)
    assert (lag.late["lag_seconds"] > 300).all()
    assert lag.df().equals(lag.late)  # df() is what `found` counts, not the empty status


def test_a_clean_scenario_reports_nothing(clean: wb.Archive) -> None:
    checks = (
        clean.gaps(),
        clean.duplicates(),
        clean.schema_drift(),
        clean.causation(),
        clean.lag(),
    )
    for result in checks:
        assert result.found == 0, result.summary()
    assert clean.gaps().positions.height == 0
    assert clean.gaps().streams.height == 0
    assert clean.duplicates().copies.height == 0
    assert clean.schema_drift().mismatches.height == 0
    assert clean.schema_drift().changes.height == 0
    assert clean.schema_drift().shapes.height == 0
    assert clean.gaps().unchecked.height == 0 and clean.duplicates().unchecked.height == 0


def test_results_render_in_a_notebook(faulty: tuple[Scenario, wb.Archive]) -> None:
    _, archive = faulty
    for result in (archive.gaps(), archive.duplicates(), archive.schema_drift(), archive.lag()):
        html = result._repr_html_()
        assert result.name in html and "<table" in html
        assert result.arrow().num_rows == result.df().height
        assert result.head(1).equals(result.df().head(1))


# ------------------------------------------------------------------ time zone


def test_frames_and_dates_are_utc_whatever_the_machine_zone(tmp_path: Path) -> None:
    """A New York machine sees the same UTC frames and dates as a UTC one."""
    late_evening = 23 * 3600 * S  # 1970-01-01 23:00 UTC is still the 1st in UTC, not in Tokyo
    ArchiveWriter(tmp_path, "s").append(
        pa.table(
            {
                "global_position": [1, 2, 3],
                "recorded_at": [late_evening] * 3,
                "event_id": ["a", "b", "b"],
            }
        )
    )
    script = (
        "import sys, workbench as wb\n"
        "a = wb.open_archive(sys.argv[1])\n"
        "dups = a.duplicates().df()\n"
        "joined = dups.join(a.scan().collect(), on=['global_position', 'recorded_at'])\n"
        "day = a.sql('select min(recorded_at::date) from events').fetchall()[0][0]\n"
        "print(dups.schema['recorded_at'], joined.height > 0, day)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        env={**os.environ, "TZ": "Asia/Tokyo"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out[-4:] == ["Datetime(time_unit='us',", "time_zone='UTC')", "True", "1970-01-01"]


def test_a_root_that_causes_itself_is_a_root_not_a_cycle(tmp_path: Path) -> None:
    """EventStoreDB's convention: the first message's causation (and correlation) id is its own."""
    ArchiveWriter(tmp_path, "s").append(
        table(
            [1, 2, 3],
            event_id=["x", "y", "z"],
            correlation_id=["x", "x", "x"],
            causation_id=["x", "x", "y"],
        )
    )
    graph = wb.open_archive(tmp_path).causation()
    assert graph.cycles.height == 0 and graph.orphans.height == 0
    assert {r["event_id"]: r["depth"] for r in graph.nodes.to_dicts()} == {"x": 0, "y": 1, "z": 2}


def test_an_archive_without_correlations_charts_an_empty_waterfall_quietly(
    tmp_path: Path,
) -> None:
    import warnings

    ArchiveWriter(tmp_path, "s").append(table([1, 2], event_id=["a", "b"]))
    graph = wb.open_archive(tmp_path).causation()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Polars warns on a comparison with None
        chart = graph.chart().to_dict()
    assert not any(v.get("values") for v in chart.get("datasets", {}).values())


def test_drift_finds_a_field_of_two_json_types_in_one_version(tmp_path: Path) -> None:
    """Money as "12.30" from one producer and 12.3 from another: neither type is rare, so
    no event is off its version, yet a handler reading the field must take both. A
    field null in every event has a null share of 1, and a type with no fields counts."""
    data = (
        ['{"amount": "12.30", "ref": null}'] * 21
        + ['{"amount": 12.3, "ref": null}'] * 9
        + ["{}"] * 3
    )
    types = ["Paid"] * 30 + ["Sent"] * 3
    ArchiveWriter(tmp_path, "postgres:shop.events").append(
        table(list(range(1, 34)), event_type=types, data=data)
    )
    drift = wb.open_archive(tmp_path).schema_drift()
    assert drift.mismatches.height == 0
    assert drift.mixed.select("event_type", "field", "types", "events_per_type").rows() == [
        ("Paid", "amount", ["string", "number"], [21, 9])
    ]
    assert drift.found == 1
    assert (
        "1 field(s) of two JSON types in a version: Paid v1 in postgres:shop.events: "
        "amount is string (21 events) or number (9)" in drift.summary()
    )
    assert drift.summary().startswith("2 type/version(s)")
    ref = drift.fields.filter(pl.col("field") == "ref")
    assert ref["null_share"].to_list() == [1.0]


def test_a_key_repeated_in_a_payload_is_one_field_of_its_last_type(tmp_path: Path) -> None:
    """{"a": 1, "a": 2} is one a to every JSON reader: counted twice, present outnumbered
    the events (40 of 30) and the null share went negative."""
    data = ['{"a": 1, "b": 3}'] * 20 + ['{"a": 1, "a": "two", "b": 3}'] * 10
    ArchiveWriter(tmp_path, "s").append(table(list(range(1, 31)), event_type=["T"] * 30, data=data))
    drift = wb.open_archive(tmp_path).schema_drift()
    fields = drift.fields.sort("field")
    assert fields.select("field", "present", "events").rows() == [("a", 30, 30), ("b", 30, 30)]
    assert fields["null_share"].to_list() == [0.0, 0.0]
    # The last value's type, as json.loads reads it: a string in 10 events of 30.
    assert drift.mixed.select("field", "types", "events_per_type").rows() == [
        ("a", ["number", "string"], [20, 10])
    ]


def test_causes_that_are_never_archived_events_are_said_to_be_outside(tmp_path: Path) -> None:
    """prooph records the command's UUID as each event's cause: every event an orphan
    says nothing of loss, and the summary says so, with a glob for UUIDs."""
    import uuid

    ids = [str(uuid.UUID(int=i)) for i in range(1, 13)]
    commands = [str(uuid.UUID(int=1000 + i)) for i in range(12)]
    ArchiveWriter(tmp_path, "postgres:public._4228e4a0").append(
        table(list(range(1, 13)), event_id=ids, causation_id=commands)
    )
    archive = wb.open_archive(tmp_path)
    causation = archive.causation()
    assert causation.orphans.height == 12
    assert (
        "no causation_id of postgres:public._4228e4a0's 12 caused events names an archived event"
        in causation.summary()
    )
    glob = "????????-????-????-????-????????????"
    assert archive.causation(external=[glob]).orphans.height == 0


def test_cloudevents_ids_repeat_across_producers_without_being_duplicates(tmp_path: Path) -> None:
    """A CloudEvent's id is unique per source (producer): two services' id "1" are two
    events; the same producer's id twice is a copy, also when one copy's header came
    percent-encoded (Java's binding) and the other not (JavaScript's)."""
    metadata = [
        '{"ce-source":"/billing"}',
        '{"ce-source":"/shipping"}',
        '{"ce-source":"/billing"}',
        '{"ce-source":"%2Fbilling"}',
        '{"ce-source":"100%"}',
    ]
    ArchiveWriter(tmp_path, "jetstream:EVENTS").append(
        table([1, 2, 3, 4, 5], event_id=["1"] * 5, event_type=["T"] * 5, metadata=metadata)
    )
    copies = wb.open_archive(tmp_path).duplicates().copies
    assert copies.filter(pl.col("kind") == "event_id").select(
        "global_position", "first_position"
    ).rows() == [(3, 1), (4, 1)]


def test_one_id_from_two_producers_at_one_stream_slot_is_a_slot_copy(tmp_path: Path) -> None:
    """Ids of two producers (ce-source) are apart for the event_id kind, so the same id
    twice at one stream position is the stream_position kind's copy: a replay applies
    both, whichever producer (or none) sent them."""
    metadata = ['{"ce-source":"/web"}', '{"ce-source":"/checkout"}', "{}", '{"ce-source":"/c"}']
    ArchiveWriter(tmp_path, "jetstream:ORDERS").append(
        table(
            [1, 2, 3, 4],
            event_id=["o1-2", "o1-2", "o2-2", "o2-2"],
            stream=["o1", "o1", "o2", "o2"],
            stream_position=[2, 2, 2, 2],
            event_type=["ItemAdded"] * 4,
            metadata=metadata,
        )
    )
    copies = wb.open_archive(tmp_path).duplicates().copies
    assert copies.select("kind", "global_position", "first_position").rows() == [
        ("stream_position", 2, 1),
        ("stream_position", 4, 3),
    ]


def test_an_id_two_producers_use_is_two_events_and_a_cause_of_its_own_producer(
    tmp_path: Path,
) -> None:
    """CloudEvents ids are unique per ce-source: /inventory's "1" and /billing's "1" are two
    events; /billing's "101" caused by "1" is caused by /billing's (an ambiguous link, said)."""
    meta = [json.dumps({"ce-source": s}) for s in ("/inventory", "%2Fbilling", "/billing")]
    ArchiveWriter(tmp_path, "s").append(
        table(
            [1, 2, 3],
            event_id=["1", "1", "101"],
            event_type=["StockReserved", "InvoiceDrafted", "InvoiceSent"],
            correlation_id=["k", "k", "k"],
            causation_id=["k", "1", "1"],
            metadata=meta,
        )
    )
    graph = wb.open_archive(tmp_path).causation()
    nodes = {r["event_type"]: r for r in graph.nodes.to_dicts()}
    assert len(nodes) == 3 and graph.left_out == 0
    assert (nodes["InvoiceDrafted"]["parent_position"], nodes["InvoiceDrafted"]["depth"]) == (1, 1)
    assert (nodes["InvoiceSent"]["parent_position"], nodes["InvoiceSent"]["depth"]) == (2, 2)
    # InvoiceDrafted names its own id: /inventory's "1" is a guess too.
    assert [r["ambiguous"] for r in graph.nodes.to_dicts()] == [False, True, True]
    assert "2 link(s) ambiguous" in graph.summary()
    rows = graph.chart("k").to_dict()["data"]["values"]
    assert [r["parent_row"] for r in rows] == [None, "1 StockReserved", "2 · InvoiceDrafted"]


def test_an_event_before_its_cause_is_said(tmp_path: Path) -> None:
    ArchiveWriter(tmp_path, "s").append(
        table(
            [1, 2],
            event_id=["a", "b"],
            correlation_id=["r", "r"],
            causation_id=["r", "a"],
            occurred_at=[
                dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC),
                dt.datetime(2024, 1, 1, 11, 40, tzinfo=dt.UTC),
            ],
        )
    )
    graph = wb.open_archive(tmp_path).causation()
    assert graph.edges["seconds"].to_list() == [-1200.0]
    assert "1 event(s) occurred before their cause" in graph.summary()


def test_an_event_of_a_self_rooted_source_naming_a_lost_first_event_is_said(
    tmp_path: Path,
) -> None:
    """EventStoreDB's convention: a flow's first event is its own cause and correlation, the
    next names it as both. When the first is lost, the next looks like a root: said, in the
    whole graph and in its correlation's, not an orphan (a request id looks the same); in a
    source without the convention, nothing is said. Two producers' self-rooted "1"s are two
    roots, not a cycle."""
    ArchiveWriter(tmp_path, "esdb").append(
        table(
            [1, 2, 3, 4],
            event_id=["x", "y", "b", "c"],
            correlation_id=["x", "x", "a", "a"],
            causation_id=["x", "x", "a", "b"],  # "a" (first of its flow) is not archived
        )
    )
    ArchiveWriter(tmp_path, "generator").append(
        table([1, 2], event_id=["p", "q"], correlation_id=["req", "req"], causation_id=["req", "p"])
    )
    archive = wb.open_archive(tmp_path)
    graph = archive.causation()
    assert graph.orphans.height == 0
    assert {r["event_id"]: r["depth"] for r in graph.nodes.to_dicts()} == {
        "x": 0, "y": 1, "b": 0, "c": 1, "p": 0, "q": 1,
    }  # fmt: skip
    said = "1 event(s) of esdb, whose first events name themselves as cause and correlation"
    assert said in graph.summary() and said in archive.causation("a").summary()
    meta = [json.dumps({"ce-source": s}) for s in ("/a", "/b")]
    ArchiveWriter(tmp_path / "two", "s").append(
        table(
            [1, 2],
            event_id=["1", "1"],
            correlation_id=["1", "1"],
            causation_id=["1", "1"],
            metadata=meta,
        )
    )
    two = wb.open_archive(tmp_path / "two").causation()
    assert (two.cycles.height, two.nodes["depth"].to_list()) == (0, [0, 0])


def test_orphans_sharing_a_missing_cause_are_told_apart(tmp_path: Path) -> None:
    """Wolverine and Axon record the command an event answers as its cause: several events
    name one missing id. Said beside the orphans (not when one orphan names each)."""
    ArchiveWriter(tmp_path, "s").append(
        table(
            [1, 2, 3, 4],
            event_id=["a", "b", "c", "d"],
            correlation_id=["r", "r", "r", "r"],
            causation_id=["cmd-1", "cmd-1", "cmd-1", "lost"],
        )
    )
    graph = wb.open_archive(tmp_path).causation()
    assert graph.orphans.height == 4
    assert "3 of the orphans share 1 missing cause(s), several each" in graph.summary()
    ArchiveWriter(tmp_path / "lone", "s").append(
        table([1, 2], event_id=["a", "b"], correlation_id=["r", "r"], causation_id=["x", "y"])
    )
    assert "share" not in wb.open_archive(tmp_path / "lone").causation().summary()
