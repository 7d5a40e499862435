"""explain(): the events that wrote a differing key, from replay lineage and the archive.

The replay output is built here in the shape the replay engine writes
(``<name>_v<v>`` schema with ``_lineage`` and ``_replay_info``, promoted
schema ``<name>`` of views).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import workbench as wb
from workbench.archive import ArchiveWriter
from workbench.cli import run
from workbench.diff.explain import Explanation
from workbench.errors import DiffError
from workbench.replay.store import CHECKPOINT_DDL

SOURCE = "postgres:events"
EVENTS = [  # position, type, memory id
    (1, "MemoryCreated", 1),
    (2, "MemoryCreated", 2),
    (3, "MemoryAccessed", 1),
    (4, "MemoryAccessed", 1),
    (5, "MemoryAccessed", 2),
]


@pytest.fixture
def replay(tmp_path: Path) -> Path:
    archive = tmp_path / "archive"
    archive.mkdir()
    ArchiveWriter(archive, SOURCE).append(
        pa.table(
            {
                "global_position": [p for p, _, _ in EVENTS],
                "event_type": [t for _, t, _ in EVENTS],
                "stream": [f"memory-{m}" for _, _, m in EVENTS],
                "recorded_at": [1_700_000_000_000_000 + p * 1_000_000 for p, _, _ in EVENTS],
                "data": [json.dumps({"memory_id": m}) for _, _, m in EVENTS],
            }
        )
    )
    path = tmp_path / "replay.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create schema memories_v2")
        con.execute(
            "create table memories_v2.memories as "
            "select * from (values (1, 'first', 2), (2, 'second', 1)) t(id, title, accesses)"
        )
        con.execute(
            "create table memories_v2._lineage (table_name VARCHAR, key VARCHAR, source VARCHAR, "
            "global_position BIGINT, event_type VARCHAR, handler VARCHAR)"
        )
        for position, event_type, memory in EVENTS:
            con.execute(
                "insert into memories_v2._lineage values ('memories', ?, ?, ?, ?, ?)",
                [
                    json.dumps({"id": memory}, separators=(",", ":")),
                    SOURCE,
                    position,
                    event_type,
                    f"on_{event_type}",
                ],
            )
        con.execute(
            "create table memories_v2._replay_info as select 'memories' projection, 2 version, "
            "? archive, now() started_at, now() finished_at, 5 events_applied, "
            "NULL::BIGINT until_position, NULL::VARCHAR where_sql",
            [str(archive)],
        )
        con.execute("create schema memories")
        con.execute("create view memories.memories as select * from memories_v2.memories")
    return path


def _live_snapshot(tmp_path: Path, position: int | None) -> str:
    # The live projection applied event 3 twice (a redelivery) and has not seen event 5 yet.
    table = pa.table({"id": [1, 2], "title": ["first", "second"], "accesses": [3, 0]})
    meta = {
        "table": "public.memories",
        "taken_at": "2024-01-01T00:00:00Z",
        "source": "postgres:public.memories",
        "event_store_position": position,
        "rows": 2,
    }
    path = tmp_path / "live.parquet"
    pq.write_table(table.replace_schema_metadata({"workbench.snapshot": json.dumps(meta)}), path)
    return str(path)


@pytest.mark.parametrize("schema", ["memories_v2", "memories"])
def test_explain_returns_the_events_that_planted_a_difference(
    replay: Path, tmp_path: Path, schema: str
) -> None:
    d = wb.diff(f"{replay}:{schema}.memories", _live_snapshot(tmp_path, None), key="id")
    assert (d.summary.changed, d.summary.not_yet_projected) == (2, 0)
    e = d.explain(1)
    assert e.status == "changed" and e.changed_columns == ["accesses"]
    assert (e.candidate or {})["accesses"] == 2 and (e.live or {})["accesses"] == 3
    assert e.events["global_position"].to_list() == [1, 3, 4]
    assert e.events["event_type"].to_list() == ["MemoryCreated", "MemoryAccessed", "MemoryAccessed"]
    assert e.events["stream"].to_list() == ["memory-1"] * 3
    assert json.loads(e.events["data"][1]) == {"memory_id": 1}
    assert "#4 MemoryAccessed" in str(e)
    assert "MemoryAccessed" in e._repr_html_()


def test_a_diff_whose_candidate_was_replayed_again_is_not_explained(
    replay: Path, tmp_path: Path
) -> None:
    """explain() reads the candidate file as it is now: after a rebuild (or a promotion
    to another version) it would show rows and events the diff never compared."""
    live = _live_snapshot(tmp_path, None)
    d = wb.diff(f"{replay}:memories.memories", live, key="id")
    assert d.explain(1).status == "changed"  # the file read, not changed: explained
    with duckdb.connect(str(replay)) as con:  # a rebuild: a new run, new counts
        con.execute("update memories_v2._replay_info set started_at = now() + interval 1 second")
        con.execute("update memories_v2.memories set accesses = 3 where id = 1")
    with pytest.raises(DiffError, match=r"memories.memories was replayed again after this diff"):
        d.explain(1)
    again = wb.diff(f"{replay}:memories.memories", live, key="id")
    assert again.explain(2).status == "changed"
    with duckdb.connect(str(replay)) as con:  # promoted to another version
        con.execute("create schema memories_v3")
        con.execute("create table memories_v3.memories as select * from memories_v2.memories")
        con.execute("create table memories_v3._lineage as select * from memories_v2._lineage")
        con.execute("create or replace view memories.memories as from memories_v3.memories")
    with pytest.raises(DiffError, match=r"memories.memories was changed after this diff"):
        again.explain(2)


def test_rows_newer_than_the_snapshot_are_not_yet_projected(
    replay: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = wb.diff(f"{replay}:memories.memories", _live_snapshot(tmp_path, 4), key="id")
    s = d.summary
    assert (s.changed, s.not_yet_projected, s.live_position) == (1, 1, 4)
    assert s.verdict == "1 differing rows and 1 written after the live position (lag, or wrong too)"
    assert d.rows("not_yet_projected")["id"].to_list() == [2]
    # Maybe lag, maybe wrong: never "identical", and the note says how to tell.
    assert not s.is_identical
    assert any("replay the candidate with until=4" in note for note in s.notes)
    e = d.explain(2)
    assert e.status == "not_yet_projected"
    assert e.events.filter(pl.col("after_live_position"))["global_position"].to_list() == [5]
    # the same from an explicit position, with a live side that carries none
    live = pl.read_parquet(_live_snapshot(tmp_path, None))
    assert (
        wb.diff(
            f"{replay}:memories_v2.memories", live, key="id", live_position=4
        ).summary.not_yet_projected
        == 1
    )
    # The CLI's row table counts the rows it lists: the changed and the not yet projected.
    args = ["diff", "--candidate", f"{replay}:memories.memories", "--key", "id"]
    assert run([*args, "--live", _live_snapshot(tmp_path, 4)]) == 1
    assert "differing rows (2)" in capsys.readouterr().out


def test_a_snapshot_position_of_another_store_is_not_used(replay: Path, tmp_path: Path) -> None:
    """A position means something only in the store it was read from."""
    with duckdb.connect(str(replay)) as con:
        con.execute(CHECKPOINT_DDL.format(s="memories_v2"))
        con.execute("insert into memories_v2._checkpoint values (?, 5, 5, now())", [SOURCE])
    snapshot = _live_snapshot(tmp_path, 4)  # of postgres:public.memories
    s = wb.diff(f"{replay}:memories.memories", snapshot, key="id").summary
    assert (s.changed, s.not_yet_projected) == (2, 0)
    assert any("is of postgres:public.memories, not of" in note for note in s.notes), s.notes
    with duckdb.connect(str(replay)) as con:
        con.execute("update memories_v2._checkpoint set source = 'postgres:public.memories'")
    assert wb.diff(f"{replay}:memories.memories", snapshot, key="id").summary.not_yet_projected == 1


def test_explain_without_lineage_or_archive_says_so(replay: Path, tmp_path: Path) -> None:
    live = pl.read_parquet(_live_snapshot(tmp_path, None))
    d = wb.diff(live, live, key="id")
    assert d.explain(1).notes and d.explain(1).events.is_empty()
    # Not "0 events wrote this key": no event could have been named.
    assert "the candidate has no replay lineage" in str(d.explain(1))
    assert "0 events wrote" not in str(d.explain(1))
    with pytest.raises(DiffError, match="lineage"):
        wb.diff(live, live, key="id", live_position=3)
    with pytest.raises(DiffError, match=r"no archive at .*nowhere"):  # a mistyped --archive
        wb.diff(f"{replay}:memories.memories", live, key="id", archive=tmp_path / "nowhere")
    (tmp_path / "archive").rename(tmp_path / "moved")  # the one the replay read is gone
    e = wb.diff(f"{replay}:memories.memories", live, key="id").explain({"id": 1})
    assert e.events["global_position"].to_list() == [1, 3, 4]
    assert any("no archive at" in n and "--archive DIR" in n for n in e.notes)
    # The lineage alone is shown as such, not as events with no time and no payload.
    assert "recorded None" not in str(e) and "no JSON payload" not in str(e)
    assert "  #1 MemoryCreated (by " in str(e)


def test_explain_from_another_archive_shows_no_foreign_events(replay: Path, tmp_path: Path) -> None:
    """Another archive's events at the lineage's positions never touched the row."""
    other = tmp_path / "other"
    positions = [p for p, _, _ in EVENTS]
    ArchiveWriter(other, SOURCE).append(
        pa.table(
            {
                "global_position": positions,
                "event_type": [
                    "MemoryCreated",
                    "MemoryCreated",
                    "OrderPlaced",
                    "MemoryAccessed",
                    "X",
                ],
                "recorded_at": [1_700_000_000_000_000 + p for p in positions],
                "data": ['{"order": 9}'] * len(positions),
            }
        )
    )
    live = pl.read_parquet(_live_snapshot(tmp_path, None))
    d = wb.diff(f"{replay}:memories.memories", live, key="id", archive=other, live_position=3)
    e = d.explain(1)
    assert any("is not the one the candidate replayed" in n and "1 of the 3" in n for n in e.notes)
    assert "data" not in e.events.columns  # the lineage alone, no foreign payloads
    assert e.events["global_position"].to_list() == [1, 3, 4]
    assert e.events["after_live_position"].to_list() == [False, False, True]


def test_explain_a_key_that_does_not_fit_its_type_is_one_line(replay: Path, tmp_path: Path) -> None:
    live = pl.read_parquet(_live_snapshot(tmp_path, None))
    d = wb.diff(f"{replay}:memories.memories", live, key="id")
    with pytest.raises(DiffError, match=r"explain: the key id='x1' does not fit the key's types"):
        d.explain("x1")


def test_a_long_history_is_cut_to_its_suspects_everywhere_it_is_shown() -> None:
    # 200 events wrote the key; the redelivery at #120 is what a reader must see.
    positions = list(range(1, 201))
    events = pl.DataFrame(
        {
            "global_position": positions,
            "event_type": ["MemoryAccessed"] * 200,
            "event_id": [f"e{p}" if p != 120 else "e7" for p in positions],
            "recorded_at": [None] * 200,
            "data": ['{"memory_id": "128bf758-a528-46f1-93a2-d29ef588cd01", "query": "q"}'] * 200,
        }
    ).with_columns(
        redelivered=pl.col("event_id").is_duplicated(),
        after_live_position=pl.col("global_position") > 199,
    )
    e = Explanation({"id": 1}, "changed", pl.DataFrame(), pl.DataFrame(), [], events)
    suspects = e.suspects()
    assert suspects["global_position"].to_list() == [1, 2, 3, 7, 120, 198, 199, 200]
    assert suspects.filter(pl.col("global_position") == 200)["why"].to_list() == [
        "after the live position"
    ]
    assert suspects["row"].to_list()[3:5] == [6, 119]
    text = str(e)
    assert "#120 MemoryAccessed" in text and "REDELIVERED" in text and "#50 " not in text
    assert text.count("…") == 3  # after #3, after #7, after #120
    html = e._repr_html_()
    assert ">120<" in html and "the suspects and the ends" in html
    # Whole texts, not Polars' 30 characters: the payload's distinguishing fields show.
    assert '"query": "q"' in html.replace("&quot;", '"') and "REDELIVERED: same event_id" in html


def test_the_rare_event_that_set_a_status_is_among_the_suspects() -> None:
    """One consolidation among 200 accesses is what set the status that differs."""
    types = ["MemoryCreated"] + ["MemoryAccessed"] * 198 + ["MemoryAccessed"]
    types[90] = "MemoryConsolidated"
    events = pl.DataFrame({"global_position": list(range(1, 201)), "event_type": types})
    e = Explanation({"id": 1}, "changed", pl.DataFrame(), pl.DataFrame(), ["status"], events)
    suspects = e.suspects()
    assert suspects["global_position"].to_list() == [1, 2, 3, 91, 198, 199, 200]
    assert suspects.filter(pl.col("global_position") == 91)["why"].to_list() == [
        "the only MemoryConsolidated event"
    ]
    assert "#91 MemoryConsolidated" in str(e) and "#50 " not in str(e)
    assert repr(e) == (
        'Explanation(key {"id": 1}: changed in status; 200 events wrote this key in the candidate)'
    )
    # A short history is shown whole; nothing in it is called out for being rare.
    short = Explanation({"id": 1}, "changed", pl.DataFrame(), pl.DataFrame(), [], events.head(4))
    assert short.suspects()["why"].to_list() == [None] * 4


def test_explain_writes_values_as_a_reader_does() -> None:
    import datetime as dt
    from decimal import Decimal

    at = dt.datetime(2024, 5, 1, 7, 52, 27, 650408, tzinfo=dt.UTC)
    schema = {"id": pl.Int64, "price": pl.Decimal(12, 2), "at": pl.Datetime("us", "UTC")}
    c = pl.DataFrame({"id": [1], "price": [Decimal("0.50")], "at": [at]}, schema=schema)
    lv = c.with_columns(pl.col("at") + pl.duration(microseconds=1))
    text = str(wb.diff(c, lv, key="id").explain(1))
    assert (
        "at: candidate 2024-05-01 07:52:27.650408+00:00, live 2024-05-01 07:52:27.650409+00:00"
        in text
    )
    assert '"price": "0.50"' in text and "Decimal(" not in text and "datetime.datetime" not in text


def test_explain_finds_a_key_as_the_diff_compared_it(tmp_path: Path) -> None:
    """A text key diffed against a UUID key matches in any case (as .NET writes GUIDs);
    explaining the key as a log shows it, upper case, must find the same row and events."""
    from workbench.examples import Memories
    from workbench.scenario import generate

    generate(5, entities=10, events=300).write_archive(tmp_path / "archive")
    wb.replay(tmp_path / "archive", Memories, into=tmp_path / "c.duckdb")
    with duckdb.connect(str(tmp_path / "c.duckdb")) as con:
        ((memory_id,),) = con.sql("select min(memory_id) from memories_v1.memories").fetchall()
        con.sql(
            "select * replace (CAST(memory_id AS UUID) AS memory_id, "
            f"access_count + (memory_id = '{memory_id}')::INT AS access_count) "
            "from memories_v1.memories"
        ).write_parquet(str(tmp_path / "live.parquet"))
    d = wb.diff(
        f"{tmp_path / 'c.duckdb'}:memories_v1.memories",
        str(tmp_path / "live.parquet"),
        key="memory_id",
        archive=tmp_path / "archive",
    )
    assert d.summary.changed == 1
    shown = d.explain(memory_id.upper())
    assert shown.status == "changed"
    assert shown.candidate is not None and shown.candidate["memory_id"] == memory_id
    assert shown.live is not None
    assert len(shown.events) > 0 and (shown.events["event_type"] == "MemoryCreated").any()


def test_explain_finds_a_normalised_key_by_either_spelling() -> None:
    candidate = pl.DataFrame({"id": ["XYZ", "abc"], "v": [1, 5]})
    live = pl.DataFrame({"id": ["xyz", "abc"], "v": [2, 5]})
    d = wb.diff(candidate, live, key="id", normalize={"id": "lower"})
    assert (d.summary.changed, d.summary.identical) == (1, 1)
    for spelling in ("xyz", "XYZ", "Xyz"):
        shown = d.explain(spelling)
        assert shown.status == "changed", spelling
        assert shown.candidate == {"id": "XYZ", "v": 1} and shown.live == {"id": "xyz", "v": 2}


def test_texts_that_print_alike_are_shown_escaped_with_the_fix() -> None:
    """NFD against NFC (macOS file names, some JS front ends) and a no-break space print
    like their twins: the explanation escapes both and names the normalisation."""
    candidate = pl.DataFrame({"id": [1, 2], "name": ["E\u0301mile", "a\u00a0b"]})
    live = pl.DataFrame({"id": [1, 2], "name": ["\u00c9mile", "a b"]})
    d = wb.diff(candidate, live, key="id")
    assert d.summary.changed == 2
    nfd = str(d.explain(1))
    assert "they differ only in Unicode form: candidate 'E\\u0301mile', live '\\xc9mile'" in nfd
    assert "--normalize 'name=nfc_normalize({})'" in nfd
    assert "has no replay lineage\n" in nfd  # no lone colon after the events line
    assert "they print alike but differ: candidate 'a\\xa0b', live 'a b'" in str(d.explain(2))
    fixed = wb.diff(
        candidate.head(1), live.head(1), key="id", normalize={"name": "nfc_normalize({})"}
    )
    assert fixed.summary.is_identical


def test_explain_points_at_the_events_the_archive_lacks_around_a_key(tmp_path: Path) -> None:
    """A candidate replayed from an archive that lost one access of a memory counts one
    access fewer than live: the explanation names the stream position its stream skips
    and the recorded gap between the key's events."""
    import datetime as dt

    from workbench.archive import ArchiveReader, append_records
    from workbench.archive.records import GAP_SCHEMA
    from workbench.examples import Memories
    from workbench.scenario import Faults, generate

    full = generate(3, entities=5, events=200, faults=Faults.none()).write_archive(
        tmp_path / "full"
    )
    events = ArchiveReader(full).sql("select * from events").to_arrow_table()
    source = events.column("source")[0].as_py()
    accessed = (
        ArchiveReader(full)
        .sql(
            "select global_position, stream, stream_position from events "
            "where event_type = 'MemoryAccessed' order by global_position limit 1 offset 3"
        )
        .fetchall()[0]
    )
    lost, stream, stream_position = accessed
    kept = events.filter(pa.compute.not_equal(events.column("global_position"), lost))
    ArchiveWriter(tmp_path / "lossy", source).append(kept.drop_columns(["source"]))
    gap = {"source": source, "first_missing": lost, "last_missing": lost, "reason": "deleted"}
    gap |= {"detected_at": dt.datetime.now(dt.UTC), "detail": None}
    append_records(
        tmp_path / "lossy", "gap_records", source, pa.Table.from_pylist([gap], GAP_SCHEMA)
    )
    wb.replay(tmp_path / "lossy", Memories, into=tmp_path / "c.duckdb")
    wb.replay(full, Memories, into=tmp_path / "l.duckdb")
    d = wb.diff(
        f"{tmp_path / 'c.duckdb'}:memories_v1.memories",
        f"{tmp_path / 'l.duckdb'}:memories_v1.memories",
        key="memory_id",
    )
    assert d.summary.changed == 1
    memory_id = d.rows("changed")["memory_id"][0]
    text = str(d.explain(memory_id))
    assert (
        f"stream {stream} has no event at stream_position {stream_position} in the archive" in text
    )
    assert f"position {lost} is missing from the archive (deleted)" in text
    # Each event says where in its stream it stands, and its version when not the first.
    assert re.search(r"#\d+ MemoryCreated( v2)? at stream_position 0 recorded ", text)
    assert "schema_version" in d.explain(memory_id).events.columns


class PerStream(wb.Projection):
    counts = wb.Table(key="stream", stream=str, events=int)

    @wb.on("Happened")
    def happened(self, event: wb.Event, tables: wb.Tables) -> None:
        row = tables.counts.get(event.stream) or {"stream": event.stream, "events": 0}
        row["events"] += 1
        tables.counts.upsert(row)


def test_a_gap_is_no_lead_for_an_identical_row(tmp_path: Path) -> None:
    """Events without stream positions (a NATS subject per aggregate): a recorded gap
    may have held any key's event, but an identical row lacks none."""
    import datetime as dt

    from workbench.archive import append_records
    from workbench.archive.records import GAP_SCHEMA

    def events(positions: list[int]) -> pa.Table:
        return pa.table(
            {
                "global_position": positions,
                "recorded_at": positions,
                "event_type": ["Happened"] * len(positions),
                "stream": ["a" if p % 2 else "b" for p in positions],
                "data": ["{}"] * len(positions),
            }
        )

    ArchiveWriter(tmp_path / "full", "s").append(events([1, 2, 3, 4, 5, 6]))
    ArchiveWriter(tmp_path / "lossy", "s").append(events([1, 2, 4, 5, 6]))
    gap = {"source": "s", "first_missing": 3, "last_missing": 3, "reason": "deleted"}
    gap |= {"detected_at": dt.datetime.now(dt.UTC), "detail": None}
    append_records(tmp_path / "lossy", "gap_records", "s", pa.Table.from_pylist([gap], GAP_SCHEMA))
    wb.replay(tmp_path / "lossy", PerStream, into=tmp_path / "c.duckdb")
    wb.replay(tmp_path / "full", PerStream, into=tmp_path / "l.duckdb")
    d = wb.diff(
        f"{tmp_path / 'c.duckdb'}:perstream_v1.counts",
        f"{tmp_path / 'l.duckdb'}:perstream_v1.counts",
        key="stream",
    )
    assert "position 3 is missing from the archive (deleted)" in str(d.explain("a"))
    assert d.explain("b").status == "identical"
    assert "missing from the archive" not in str(d.explain("b"))


class Balances(wb.Projection):
    accounts = wb.Table(key="stream", stream=str, balance=int)

    @wb.on("Deposited")
    def deposited(self, event: wb.Event, tables: wb.Tables) -> None:
        row = tables.accounts.get(event.stream) or {"stream": event.stream, "balance": 0}
        row["balance"] += event.data["amount"]
        tables.accounts.upsert(row)


def test_the_event_holding_what_a_row_is_off_by_is_a_suspect(tmp_path: Path) -> None:
    """Live applied one deposit twice (a consumer's redelivery: the archive has it once):
    the event whose amount is the difference is named, among many."""
    amounts = [10, 1, 250, 32208, 7, 10, 99, 5, 1, 12, 40, 3]
    ArchiveWriter(tmp_path / "a", "s").append(
        pa.table(
            {
                "global_position": list(range(1, 13)),
                "recorded_at": list(range(12)),
                "event_type": ["Deposited"] * 12,
                "stream": ["acc-1"] * 12,
                "data": [f'{{"amount": {a}, "note": "x{a}"}}' for a in amounts],
            }
        )
    )
    wb.replay(tmp_path / "a", Balances, into=tmp_path / "c.duckdb")
    live = pl.DataFrame({"stream": ["acc-1"], "balance": [sum(amounts) + 32208]})
    explanation = wb.diff(
        f"{tmp_path / 'c.duckdb'}:balances_v1.accounts", live, key="stream"
    ).explain("acc-1")
    flagged = explanation.suspects().filter(pl.col("why").is_not_null())
    assert flagged.select("global_position", "why").rows() == [
        (4, "holds 32208, what balance is off by")
    ]
    assert "#4 Deposited" in str(explanation)  # shown though it is neither end of the history


def test_an_event_holding_what_every_column_is_off_by_is_named_once_in_any_version() -> None:
    """A cart counted one item of 12.30 twice. Four events hold 1230 and many a quantity
    of 1, so neither column alone named one; the event holding both is the lead. A v1
    event, archived before its upcaster gave it cents, holds the price as "2.50" text."""
    added = [(2, 1230), (1, 500), (3, 1230), (1, 1230), (4, 1230), (1, 700), (1, 999)]
    data = [f'{{"qty": {q}, "price_cents": {c}}}' for q, c in added]
    data += ['{"qty": 1, "price": "2.50"}']  # v1
    events = pl.DataFrame(
        {
            "global_position": list(range(1, 9)),
            "event_type": ["ItemAdded"] * 8,
            "schema_version": [2] * 7 + [1],
            "recorded_at": [None] * 8,
            "data": data,
        }
    )
    items = sum(q for q, _ in added) + 1
    total = sum(q * c for q, c in added) + 250

    def explained(live_items: int, live_total: int) -> Explanation:
        return Explanation(
            {"cart": "c-1"},
            "changed",
            pl.DataFrame({"cart": ["c-1"], "items": [items], "total_cents": [total]}),
            pl.DataFrame({"cart": ["c-1"], "items": [live_items], "total_cents": [live_total]}),
            ["items", "total_cents"],
            events,
        )

    twice = explained(items + 1, total + 1230).suspects().filter(pl.col("why").is_not_null())
    assert twice.select("global_position", "why").rows() == [
        (4, "holds 1 and 1230, what items and total_cents are off by")
    ]
    v1_twice = explained(items + 1, total + 250)
    assert v1_twice.suspects().filter(pl.col("why").is_not_null())["global_position"].to_list() == [
        8
    ]
    assert v1_twice.suspects()["why"][-1] == (
        "holds 1 and 2.50 (250 in hundredths), what items and total_cents are off by"
    )
    text = str(v1_twice)
    assert "#8 ItemAdded v1" in text and "#2 ItemAdded v2" in text  # versions mixed: all said
    assert "…" not in text  # 8 events: shown in full, none hidden between the ends
    assert text.endswith(
        "ItemAdded events of v1, v2: the older ones are shown as archived, before any "
        "upcaster made them what the handler read"
    )


def test_the_hundredths_lead_is_for_money_in_cents_and_reads_json_numbers() -> None:
    """A count off by 25 flagged events holding a weight of 0.25; a price written as the
    number 2.5 was not found for cents off by 250."""
    events = pl.DataFrame(
        {
            "global_position": [1, 2, 3],
            "event_type": ["Rated", "Paid", "Paid"],
            "recorded_at": [None] * 3,
            "data": ['{"weight": 0.25}', '{"price": 2.5}', '{"price": 3}'],
        }
    )

    def flagged(column: str, candidate: int, live: int) -> list[tuple]:
        e = Explanation(
            {"k": 1},
            "changed",
            pl.DataFrame({"k": [1], column: [candidate]}),
            pl.DataFrame({"k": [1], column: [live]}),
            [column],
            events,
        )
        return (
            e.suspects().filter(pl.col("why").is_not_null()).select("global_position", "why").rows()
        )

    assert flagged("accesses", 100, 125) == []
    assert flagged("total_cents", 100, 350) == [
        (2, "holds 2.50 (250 in hundredths), what total_cents is off by")
    ]
    assert flagged("total_cents", 100, 400) == []  # 3.00 only with its decimals


class Wallets(wb.Projection):
    wallets = wb.Table(key="stream", stream=str, balance="DECIMAL(10,2)", last_at=dt.datetime)

    @wb.on("Paid")
    def paid(self, event: wb.Event, tables: wb.Tables) -> None:
        row = tables.wallets.get(event.stream) or {"stream": event.stream, "balance": 0}
        row["balance"] += Decimal(str(event.data["amount"]))
        row["last_at"] = event.occurred_at
        tables.wallets.upsert(row)


def test_a_fraction_off_and_the_event_that_set_a_time_are_suspects(tmp_path: Path) -> None:
    """Money off by 0.25 (below 1, once never flagged) names the payment of 0.25; a time
    that differs names the events whose time each side holds."""
    amounts = ["1.50", "0.25", "3.00", "7.10", "2.00", "9.99", "4.40", "1.00"]
    at = [dt.datetime(2024, 5, 1, 10, i, tzinfo=dt.UTC) for i in range(8)]
    ArchiveWriter(tmp_path / "a", "s").append(
        pa.table(
            {
                "global_position": list(range(1, 9)),
                "recorded_at": at,
                "occurred_at": at,
                "event_type": ["Paid"] * 8,
                "stream": ["w-1"] * 8,
                "data": [f'{{"amount": {a}}}' for a in amounts],
            }
        )
    )
    wb.replay(tmp_path / "a", Wallets, into=tmp_path / "c.duckdb")
    total = sum(Decimal(a) for a in amounts)
    live = pl.DataFrame(
        {"stream": ["w-1"], "balance": [total + Decimal("0.25")], "last_at": [at[5]]},
        schema_overrides={"balance": pl.Decimal(10, 2)},
    )
    explanation = wb.diff(
        f"{tmp_path / 'c.duckdb'}:wallets_v1.wallets", live, key="stream"
    ).explain("w-1")
    flagged = explanation.suspects().filter(pl.col("why").is_not_null())
    assert flagged.select("global_position", "why").rows() == [
        (2, "holds 0.25, what balance is off by"),
        (6, "its occurred_at is live's last_at"),
        (8, "its occurred_at is candidate's last_at"),
    ]


def test_a_key_no_side_has_is_an_error_naming_near_keys() -> None:
    candidate = pl.DataFrame({"id": ["a76994fc-72ae", "a76994fc-0000", "b1"], "v": [1, 2, 3]})
    live = candidate.with_columns(pl.col("v") + 1)
    d = wb.diff(candidate, live, key="id")
    with pytest.raises(DiffError, match=r"no row has id 'zz' on either side \(3 candidate, 3 live"):
        d.explain("zz")
    with pytest.raises(DiffError, match=r"keys that start so: 'a76994fc-0000', 'a76994fc-72ae'$"):
        d.explain("A76994FC")
    with pytest.raises(DiffError, match=r"'other' is not a key column \(the key: id\)"):
        d.explain({"id": "b1", "other": 1})
    assert d.explain("b1").status == "changed"


def test_explaining_a_nan_is_no_crash(tmp_path: Path) -> None:
    ArchiveWriter(tmp_path / "a", "s").append(
        pa.table(
            {
                "global_position": [1, 2],
                "recorded_at": [0, 1],
                "event_type": ["Deposited"] * 2,
                "stream": ["acc-1"] * 2,
                "data": ['{"amount": 5}', '{"amount": 7}'],
            }
        )
    )
    wb.replay(tmp_path / "a", Balances, into=tmp_path / "c.duckdb")
    live = pl.DataFrame({"stream": ["acc-1"], "balance": [float("nan")]})
    d = wb.diff(f"{tmp_path / 'c.duckdb'}:balances_v1.accounts", live, key="stream")
    explanation = d.explain("acc-1")
    assert explanation.status == "changed" and "balance: candidate 12, live nan" in str(explanation)


class _Live(wb.Projection):
    """Memories a delete removes: a live read model behind the store keeps them."""

    name = "live_memories"
    memories = wb.Table(key="memory_id", memory_id=str, accesses=int)

    @wb.on("MemoryCreated")
    def created(self, event: wb.Event, tables: wb.Tables) -> None:
        if event.data is not None:  # the history plants payloads that are no JSON
            tables.memories.upsert({"memory_id": event.data["memory_id"], "accesses": 0})

    @wb.on("MemoryAccessed")
    def accessed(self, event: wb.Event, tables: wb.Tables) -> None:
        if event.data is not None and event.data["memory_id"] in tables.memories:
            tables.memories.update(event.data["memory_id"], accesses=tables.memories[
                event.data["memory_id"]]["accesses"] + 1)  # fmt: skip

    @wb.on("MemoryDeleted")
    def deleted(self, event: wb.Event, tables: wb.Tables) -> None:
        if event.data is not None:
            tables.memories.delete(event.data["memory_id"])


def test_the_live_position_tells_deletes_after_it_and_a_candidate_short_of_it(
    tmp_path: Path,
) -> None:
    """A row the candidate deleted after the live position is lag, not a row only live
    has; a candidate replayed short of the position, or without lineage, is said to be."""
    from workbench.scenario import generate

    root = generate(4, entities=60, events=3_000).write_archive(tmp_path / "archive")
    into = tmp_path / "c.duckdb"
    positions = wb.open_archive(root).sql("select global_position from events order by 1")
    position = positions.fetchall()[2_000][0]
    live = wb.replay(root, _Live, into=tmp_path / "live.duckdb", until=position).table("memories")
    full = wb.replay(root, _Live, into=into)
    deleted_after = set(live["memory_id"]) - set(full.table("memories")["memory_id"])
    assert deleted_after  # the history deletes memories after the position
    d = wb.diff(f"{into}:{full.schema}.memories", live, key="memory_id", live_position=position)
    assert d.summary.only_in_live == 0
    # Rows only live holds are no candidate rows: identical counts what truly is.
    truly = full.table("memories").join(live, on=["memory_id", "accesses"]).height
    assert d.summary.identical == truly
    assert deleted_after <= set(d.rows("not_yet_projected")["memory_id"])
    short = wb.replay(root, _Live, into=tmp_path / "s.duckdb", until=position - 500)
    notes = wb.diff(f"{tmp_path / 's.duckdb'}:{short.schema}.memories", live, key="memory_id",
                    live_position=position).summary.notes  # fmt: skip
    assert any(f"reached position {short.last_position:,}, short of the live side's" in n
               for n in notes), notes  # fmt: skip
    bare = wb.SqlProjection(
        "bare",
        {"memories": "select distinct data->>'memory_id' as memory_id from events "
                     "where event_type = 'MemoryCreated' and json_valid(data)"},
        keys={"memories": "memory_id"},
    )  # fmt: skip
    wb.replay(root, bare, into=tmp_path / "b.duckdb")
    notes = wb.diff(f"{tmp_path / 'b.duckdb'}:bare_v1.memories", live.select("memory_id"),
                    key="memory_id", live_position=position).summary.notes  # fmt: skip
    assert any("has no lineage (a SqlProjection records it only with lineage=" in n
               for n in notes), notes  # fmt: skip
