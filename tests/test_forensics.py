"""Replay → diff → explain end to end, as in a notebook session (real engine, real lineage)."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest

import workbench as wb
from workbench.examples import Memories, MemoriesNonIdempotent
from workbench.scenario import Faults, generate


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[int]]:
    root = tmp_path_factory.mktemp("forensics")
    faults = Faults(duplicates=0.01, retention=0.0, deleted_ranges=0)
    scenario = generate(21, entities=15, events=2_000, faults=faults)
    copies = {p for ps in scenario.truth.duplicates.values() for p in ps[1:]}
    return scenario.write_archive(root / "archive"), copies


def buggy_against_fixed(
    root: Path, into: Path, key: str | list[str]
) -> tuple[wb.ReplayResult, wb.Diff]:
    """The non-idempotent replay and its diff against the correct one."""
    buggy = wb.replay(root, MemoriesNonIdempotent, into=into)
    fixed = wb.replay(root, Memories, into=into)
    diff = wb.diff(f"{into}:{buggy.schema}.memories", f"{into}:{fixed.schema}.memories", key=key)
    return buggy, diff


def test_explain_names_the_redelivered_event_behind_a_wrong_count(
    archive: tuple[Path, set[int]], tmp_path: Path
) -> None:
    root, copies = archive
    _, diff = buggy_against_fixed(root, tmp_path / "c.duckdb", key=["memory_id"])
    changed = diff.rows("changed")
    assert changed.height > 2
    assert diff.head(2).equals(diff.rows().head(2))  # .head() as dlt's and Polars' objects have
    assert (changed["access_count__candidate"] > changed["access_count__live"]).all()
    for memory_id in changed["memory_id"]:
        events = diff.explain(memory_id).events
        applied = events.filter(pl.col("applied"))
        redelivered = applied.filter(pl.col("event_id").is_duplicated())
        # Both copies of a redelivered access wrote the row; the later copy is a planted one.
        # (Copies it skipped, of a consolidation say, are listed too, as not applied.)
        assert redelivered.height >= 2
        assert set(redelivered["global_position"]) & copies
        assert set(redelivered["event_type"]) == {"MemoryAccessed"}


def test_explain_from_the_fixed_side_shows_the_copies_it_skipped(
    archive: tuple[Path, set[int]], tmp_path: Path
) -> None:
    """The usual question: the fix is the candidate, live is wrong. The fix skipped the
    redelivery, so its lineage never names it; explain still shows it, found by event_id."""
    root, copies = archive
    into = tmp_path / "c.duckdb"
    live = wb.replay(root, MemoriesNonIdempotent, into=into)
    fixed = wb.replay(root, Memories, into=into)
    diff = wb.diff(
        f"{into}:{fixed.schema}.memories", f"{into}:{live.schema}.memories", key="memory_id"
    )
    changed = diff.rows("changed")["memory_id"]
    assert changed.len() > 2
    for memory_id in changed:
        explanation = diff.explain(memory_id)
        skipped = explanation.events.filter(~pl.col("applied"))
        assert skipped.height >= 1 and set(skipped["global_position"]) <= copies
        assert skipped["redelivered"].all() and skipped["handler"].is_null().all()
        text = str(explanation)
        assert "not applied by the candidate" in text
        assert re.search(r"more (is a copy of one|are copies of them) \(same event_id\)", text)


def test_a_diff_does_not_keep_the_replay_file_open(
    archive: tuple[Path, set[int]], tmp_path: Path
) -> None:
    root, _ = archive
    into = tmp_path / "c.duckdb"
    first = wb.replay(root, Memories, into=into)
    diff = wb.diff(
        f"{into}:{first.schema}.memories", f"{into}:{first.schema}.memories", key=["memory_id"]
    )
    again = wb.replay(root, Memories, into=into)  # would fail if the diff held the file
    assert again.events_applied == first.events_applied
    diff.assert_identical()
    assert diff.rows("identical").height == diff.summary.identical


def test_a_projection_can_be_named_as_on_the_command_line(
    archive: tuple[Path, set[int]], tmp_path: Path
) -> None:
    root, _ = archive
    by_name = wb.replay(root, "workbench.examples:Memories", into=tmp_path / "a.duckdb")
    by_class = wb.replay(root, Memories, into=tmp_path / "b.duckdb")
    wb.diff(
        f"{tmp_path / 'a.duckdb'}:{by_name.schema}.memories",
        f"{tmp_path / 'b.duckdb'}:{by_class.schema}.memories",
        key=["memory_id"],
    ).assert_identical()
    assert not wb.check_replay_safety(root, "workbench.examples:MemoriesNonIdempotent", seed=2).ok


def test_a_replay_result_keeps_its_throughput_and_charts_it(
    archive: tuple[Path, set[int]], tmp_path: Path
) -> None:
    root, _ = archive
    result = wb.replay(root, Memories, into=tmp_path / "c.duckdb", batch_size=500)
    assert result.progress["events"].to_list()[-1] == result.events_applied
    assert result.progress["seconds"].is_sorted() and result.progress.height > 2
    spec = result.chart().to_dict()
    above, throughput = spec["vconcat"]  # where the time went | time per handler, over
    phases, handlers = above["hconcat"]
    assert phases["title"] == "Where the replay's time went"
    assert handlers["title"]["text"] == "Cost per handler"
    assert throughput["title"] == "Replay throughput"


def test_every_result_gives_arrow_as_well_as_polars(
    archive: tuple[Path, set[int]], tmp_path: Path
) -> None:
    root, _ = archive
    buggy, diff = buggy_against_fixed(root, tmp_path / "c.duckdb", key="memory_id")
    explanation = diff.explain(diff.rows("changed")["memory_id"][0])
    safety = wb.check_replay_safety(root, MemoriesNonIdempotent, seed=3)
    for result in (buggy, buggy.coverage, diff, explanation, safety):
        assert result.arrow().num_rows == result.df().height, type(result).__name__
    assert safety.arrow().num_rows > 0


def test_cli_explain_of_a_key_on_neither_side_is_an_input_error(
    archive: tuple[Path, set[int]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from workbench.cli import run

    root, _ = archive
    into = tmp_path / "c.duckdb"
    buggy, diff = buggy_against_fixed(root, into, key="memory_id")
    changed = str(diff.rows("changed")["memory_id"][0])
    args = ["diff", "--candidate", f"{into}:{buggy.schema}.memories"]
    args += ["--live", f"{into}:memories_v1.memories", "--key", "memory_id", "--archive", str(root)]
    assert run([*args, "--explain", changed]) == 1  # differences, explained
    assert "REDELIVERED" in capsys.readouterr().out
    out = tmp_path / "out"
    assert run([*args, "--out", str(out), "--explain", "no-such-memory"]) == 2
    err = capsys.readouterr().err
    assert "no row has memory_id 'no-such-memory' on either side (" in err
    assert (out / "rows.parquet").exists()  # written before the key was looked up
    # A key copied cut short (listings print long ids so) names the keys it starts.
    assert run([*args, "--explain", changed[:8]]) == 2
    assert f"keys that start so: '{changed[:8]}" in capsys.readouterr().err
    # a one-column key is taken as given: a trailing space is part of it
    assert run([*args, "--explain", f"{changed} "]) == 2


def test_explain_finds_the_lineage_whatever_order_the_key_is_given_in(
    archive: tuple[Path, set[int]], tmp_path: Path
) -> None:
    root, _ = archive
    into = tmp_path / "c.duckdb"
    result = wb.replay(root, Memories, into=into)
    live = result.sql("select * from daily_access").pl().with_columns(pl.col("accesses") + 1)
    agent, day = live.row(0)[:2]
    table = f"{into}:{result.schema}.daily_access"
    in_order = wb.diff(table, live, key=["agent_id", "day"], archive=root).explain((agent, day))
    reversed_ = wb.diff(table, live, key=["day", "agent_id"], archive=root).explain((day, agent))
    assert in_order.events.height > 0
    assert (
        reversed_.events["global_position"].to_list()
        == in_order.events["global_position"].to_list()
    )
