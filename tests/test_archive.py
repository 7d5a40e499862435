"""The archive store: append-only, atomic, exact round trips."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import workbench as wb
from workbench import envelope
from workbench.archive import ArchiveReader, ArchiveWriter, compact
from workbench.archive._layout import data_file_name
from workbench.errors import ArchiveError, EnvelopeError

DAY_US = 86_400_000_000


def events(first: int, last: int, *, day: int = 0, step: int = 1) -> pa.Table:
    positions = list(range(first, last + 1, step))
    return pa.table(
        {
            "global_position": positions,
            "recorded_at": [day * DAY_US + p for p in positions],
            "event_type": ["T" + str(p % 3) for p in positions],
            "data": [f'{{"n": {p}}}' for p in positions],
        }
    )


def files(root: Path) -> list[str]:
    """Every file but the lock and retired (merged-away, kept an hour) ones."""
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and p.name != ".lock" and not p.name.endswith(".merged")
    )


def test_layout_names_say_which_positions_they_hold(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path, "jetstream:MEMORIES")
    writer.append(events(1, 5))
    writer.append(events(6, 9, day=1))
    assert files(tmp_path) == [
        "source=jetstream%3AMEMORIES/date=1970-01-01/00000000000000000001-00000000000000000005.parquet",
        "source=jetstream%3AMEMORIES/date=1970-01-02/00000000000000000006-00000000000000000009.parquet",
    ]
    meta = pq.ParquetFile(next(tmp_path.rglob("*0005.parquet"))).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    archive = wb.open_archive(tmp_path)
    assert archive.sources == ["jetstream:MEMORIES"]
    assert archive.sql("select distinct source from events").fetchall() == [("jetstream:MEMORIES",)]


def test_a_batch_spanning_days_is_split_at_the_day(tmp_path: Path) -> None:
    table = pa.concat_tables([events(1, 3), events(4, 6, day=2)])
    written = ArchiveWriter(tmp_path, "s").append(table)
    assert [p.parent.name for p in written] == ["date=1970-01-01", "date=1970-01-03"]
    assert len(wb.open_archive(tmp_path)) == 6


def test_unsorted_batch_is_archived_in_position_order(tmp_path: Path) -> None:
    ArchiveWriter(tmp_path, "s").append(events(1, 6).take([3, 0, 5, 1, 4, 2]))
    got = pq.read_table(next(tmp_path.rglob("*.parquet"))).column("global_position").to_pylist()
    assert got == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(("first", "last"), [(5, 12), (1, 3), (10, 10)])
def test_overlapping_or_lower_batch_is_refused_and_archive_unchanged(
    tmp_path: Path, first: int, last: int
) -> None:
    writer = ArchiveWriter(tmp_path, "s")
    writer.append(events(1, 10))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.parquet")}
    with pytest.raises(ArchiveError, match="already archived"):
        writer.append(events(first, last))
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.parquet")} == before
    assert writer.last_position == 10


def test_repeated_position_in_a_batch_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="repeats"):
        ArchiveWriter(tmp_path, "s").append(events(1, 3).take([0, 1, 1, 2]))
    assert files(tmp_path) == []


def test_sources_are_independent(tmp_path: Path) -> None:
    ArchiveWriter(tmp_path, "a").append(events(1, 10))
    ArchiveWriter(tmp_path, "b").append(events(1, 3))
    assert ArchiveWriter(tmp_path, "b").last_position == 3
    archive = wb.open_archive(tmp_path)
    assert archive.sql("select source, count(*) from events group by 1 order by 1").fetchall() == [
        ("a", 10),
        ("b", 3),
    ]


def test_bad_envelopes_are_refused(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path, "s")
    with pytest.raises(EnvelopeError, match="not in the envelope: colour"):
        writer.append(events(1, 2).append_column("colour", pa.array(["r", "g"])))
    with pytest.raises(EnvelopeError, match="recorded_at has 1 null"):
        writer.append(
            pa.table({"global_position": [1], "recorded_at": pa.array([None], pa.int64())})
        )
    with pytest.raises(EnvelopeError, match="cannot cast"):
        writer.append(pa.table({"global_position": ["x"], "recorded_at": [1]}))
    assert files(tmp_path) == []


def test_round_trip_is_exact_for_every_column(tmp_path: Path) -> None:
    table = envelope.conform(
        pa.table(
            {
                "global_position": [1, 2],
                "event_id": ["a", None],
                "event_type": ["MemoryCreated", "MemoryDeleted"],
                "schema_version": [2, 1],
                "stream": ["memory-1", "memory-1"],
                "stream_position": [0, 1],
                "occurred_at": [1_700_000_000_000_001, None],
                "recorded_at": [1_700_000_000_000_002, 1_700_000_000_000_003],
                "recorded_ns": [1_700_000_000_000_002_123, None],
                "correlation_id": ["c", "c"],
                "causation_id": ["c", "a"],
                "subject": ["memories.x", None],
                "data": ['{"k": "ü"}', None],
                "metadata": ["{}", "{}"],
                "payload": [None, b"\xff\x00binary"],
                "delivery_count": [1, 3],
            }
        ),
        source="s",
    )
    ArchiveWriter(tmp_path, "s").append(table)
    assert wb.open_archive(tmp_path).arrow().equals(table)
    assert wb.open_archive(tmp_path).to_polars().to_arrow().cast(envelope.SCHEMA).equals(table)


@pytest.mark.slow
def test_a_million_envelopes_round_trip_exactly(tmp_path: Path) -> None:
    import numpy as np

    n = 1_000_000
    rng = np.random.default_rng(1)
    table = envelope.conform(
        pa.table(
            {
                "global_position": np.arange(1, n + 1),
                "event_id": pa.array(np.char.add("e", np.arange(n).astype(str))),
                "event_type": pa.array(rng.choice(["MemoryCreated", "MemoryAccessed"], n)),
                "stream": pa.array(np.char.add("memory-", (np.arange(n) % 5000).astype(str))),
                "recorded_at": 1_700_000_000_000_000 + np.arange(n) * 1000,
                "data": pa.array(
                    np.char.add('{"v": ', np.char.add(rng.integers(0, 99, n).astype(str), "}"))
                ),
            }
        ),
        source="bulk",
    )
    writer = ArchiveWriter(tmp_path, "bulk")
    for offset in range(0, n, 250_000):
        writer.append(table.slice(offset, 250_000))
    archive = wb.open_archive(tmp_path)
    assert archive.arrow().equals(table)
    assert len(archive.files) == 4


def test_compact_merges_files_without_changing_content(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path, "s")
    for first in range(1, 100, 10):
        writer.append(events(first, first + 9))
    writer.append(events(101, 110, day=1))
    before = wb.open_archive(tmp_path).arrow()
    result = compact(tmp_path, target_events=60)
    assert (result.files_before, result.files_after, result.events) == (11, 3, 110)
    assert wb.open_archive(tmp_path).arrow().equals(before)
    assert [p.rsplit("/", 1)[1] for p in files(tmp_path)] == [
        "00000000000000000001-00000000000000000060.parquet",
        "00000000000000000061-00000000000000000100.parquet",
        "00000000000000000101-00000000000000000110.parquet",
    ]
    assert writer.last_position == 110


def test_compact_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from workbench.cli import run

    writer = ArchiveWriter(tmp_path, "s")
    for first in range(1, 100, 10):
        writer.append(events(first, first + 9))
    before = wb.open_archive(tmp_path).arrow()
    assert run(["compact", "--archive", str(tmp_path)]) == 0
    assert "10 file(s) → 1, 100 events unchanged" in capsys.readouterr().out
    assert len(files(tmp_path)) == 1 and wb.open_archive(tmp_path).arrow().equals(before)
    assert run(["compact", "--archive", str(tmp_path / "nothing")]) == 2
    capsys.readouterr()
    # An existing directory that holds no archive is refused as check refuses it, not
    # "0 file(s) → 0, 0 events unchanged".
    (tmp_path / "empty").mkdir()
    assert run(["compact", "--archive", str(tmp_path / "empty")]) == 2
    assert "no archive at" in capsys.readouterr().err
    # A source the archive does not have is refused, not "0 events unchanged".
    assert run(["compact", "--archive", str(tmp_path), "--source", "S"]) == 2
    assert "archive has no source 'S'; did you mean s?; sources: s" in capsys.readouterr().err
    # Off a terminal its progress is logged, events done of the total (a large archive's
    # compact said nothing for minutes).
    for first in range(101, 200, 10):
        writer.append(events(first, first + 9))
    logged = subprocess.run(
        [sys.executable, "-m", "workbench", "compact", "--archive", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "WORKBENCH_LOG_EVERY": "0"},
    )
    assert logged.returncode == 0 and "compacting: 200 of 200" in logged.stderr, logged.stderr


def test_compact_interrupted_after_merge_is_read_once_and_cleaned(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path, "s")
    writer.append(events(1, 5))
    writer.append(events(6, 10))
    # What a compaction killed between writing the merged file and removing its inputs leaves.
    merged = pa.concat_tables(pq.read_table(p) for p in sorted(tmp_path.rglob("*.parquet")))
    pq.write_table(
        merged,
        next(tmp_path.rglob("*.parquet")).parent
        / "00000000000000000001-00000000000000000010.parquet",
    )
    assert len(wb.open_archive(tmp_path)) == 10
    # The next append's merge retires them: no outside *.parquet glob reads them twice.
    writer.append(events(11, 11))
    outside = duckdb.sql(
        f"select count(*) from read_parquet('{tmp_path}/source=*/date=*/*.parquet')"
    ).fetchall()
    assert outside == [(11,)]
    assert compact(tmp_path).files_after == 1
    assert len(wb.open_archive(tmp_path)) == 11


def test_ctrl_c_between_publishing_a_merge_and_retiring_its_inputs_waits_for_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C or SIGTERM (the CLI's KeyboardInterrupt) landing while a compact retired the
    inputs of its merged file left some of them: a plain glob read their events twice."""
    import os
    import signal

    from workbench.archive import compaction

    writer = ArchiveWriter(tmp_path, "s", merge_small_files=False)
    for first in range(1, 100, 10):
        writer.append(events(first, first + 9))
    retire = compaction.retire

    def interrupted(path: Path) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # Python's own handler: KeyboardInterrupt
        retire(path)

    monkeypatch.setattr(compaction, "retire", interrupted)
    with pytest.raises(KeyboardInterrupt):  # delivered once the step is whole
        compact(tmp_path)
    outside = duckdb.sql(
        f"select count(*), count(distinct global_position) "
        f"from read_parquet('{tmp_path}/source=*/date=*/*.parquet')"
    ).fetchall()
    assert outside == [(100, 100)] and len(files(tmp_path)) == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_a_side_table_temporary_a_dead_writer_left_is_swept_an_hour_on(tmp_path: Path) -> None:
    """kill -9 while gap records were written left a hidden temporary file for good."""
    import os
    import time

    from workbench.archive._layout import records_dir

    side = records_dir(tmp_path, "gap_records", "s")
    side.mkdir(parents=True)
    dead, young = side / ".x.parquet.dead.tmp", side / ".y.parquet.young.tmp"
    for path in (dead, young):
        path.write_bytes(b"half")
    hour_ago = time.time() - 3700
    os.utime(dead, (hour_ago, hour_ago))
    ArchiveWriter(tmp_path, "s").append(events(1, 2))
    assert not dead.exists() and young.exists()  # a write in progress is left alone


def test_a_following_archiver_s_small_files_are_merged_as_they_gather(tmp_path: Path) -> None:
    """One small file per poll would be thousands a day; readers open meanwhile keep working,
    and a plain ``*.parquet`` glob never sees an event twice."""
    from workbench.archive._layout import retired_files, scan_data_files
    from workbench.archive.compaction import TAIL_FILES, merge_tail

    writer = ArchiveWriter(tmp_path, "s")
    plain = ArchiveWriter(tmp_path / "plain", "s", merge_small_files=False)
    for p in range(1, 11):
        writer.append(events(p, p))
    early = wb.open_archive(tmp_path)  # a notebook's reader, never refreshed
    for p in range(11, 3 * TAIL_FILES + 1):
        writer.append(events(p, p))
    for p in range(1, 3 * TAIL_FILES + 1):
        plain.append(events(p, p))
    visible = scan_data_files(tmp_path, "s")
    assert len(visible) == 3 and len(scan_data_files(tmp_path / "plain")) == 3 * TAIL_FILES
    assert wb.open_archive(tmp_path).arrow().equals(wb.open_archive(tmp_path / "plain").arrow())
    outside = duckdb.sql(
        f"select count(*), count(distinct global_position) "
        f"from read_parquet('{tmp_path}/source=*/date=*/*.parquet')"
    ).fetchall()
    assert outside == [(3 * TAIL_FILES, 3 * TAIL_FILES)]
    # Merged by tier: each event was rewritten once, not once per merge.
    retired = retired_files(tmp_path, "s")
    assert sum(pq.ParquetFile(p).metadata.num_rows for p in retired) == 3 * TAIL_FILES
    # A replay that listed the files reads them under their retired name; queries re-list.
    assert early.files[0].readable.name.endswith(".parquet.merged")
    assert len(early) == 3 * TAIL_FILES and early.files == visible
    assert writer.last_position == 3 * TAIL_FILES
    merge_tail(tmp_path, "s", keep_seconds=0)  # past their hour: removed
    assert retired_files(tmp_path, "s") == [] and scan_data_files(tmp_path, "s") == visible
    # A slow follower's files are hours old when merged: readers still get their hour.
    slow = tmp_path / "slow"
    slow_writer = ArchiveWriter(slow, "s")
    for p in range(1, TAIL_FILES):
        slow_writer.append(events(p, p))
    hours_ago = time.time() - 7200
    for f in scan_data_files(slow):
        os.utime(f.path, (hours_ago, hours_ago))
    slow_writer.append(events(TAIL_FILES, TAIL_FILES))
    assert len(retired_files(slow, "s")) == TAIL_FILES
    # A file that is not small ends the tail: it is never rewritten.
    writer.append(events(1_000, 100_000))
    big = scan_data_files(tmp_path)[-1]
    for p in range(100_001, 100_001 + TAIL_FILES):
        writer.append(events(p, p))
    assert big in scan_data_files(tmp_path)
    assert len(wb.open_archive(tmp_path)) == 3 * TAIL_FILES + 99_001 + TAIL_FILES


def test_gap_records_are_a_view(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path, "s")
    writer.append(events(5, 9))
    writer.record_gap(1, 4, "retention", "stream first sequence was 5")
    rows = (
        wb.open_archive(tmp_path)
        .sql("select source, first_missing, last_missing, reason from gap_records")
        .fetchall()
    )
    assert rows == [("s", 1, 4, "retention")]
    with pytest.raises(ArchiveError, match="unknown gap reason"):
        writer.record_gap(1, 2, "lost")


def test_open_archive_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="no archive at"):
        wb.open_archive(tmp_path / "nope")
    (tmp_path / "source=s").mkdir()  # an archive holding no event yet
    archive = wb.open_archive(tmp_path)
    with pytest.raises(ArchiveError, match="query failed") as caught:
        archive.sql("select evnt_type from events")
    # One line, and DuckDB's hint kept in it.
    assert 'Candidate bindings: "event_type"' in str(caught.value)
    assert "\n" not in str(caught.value)
    with pytest.raises(ArchiveError, match='Did you mean "events"'):
        archive.sql("select * from event")


def test_writer_killed_mid_file_leaves_no_half_file_visible(tmp_path: Path) -> None:
    """A writer killed -9 while writing leaves complete files only, and resumes."""
    script = textwrap.dedent(
        f"""
        import numpy as np, pyarrow as pa, sys
        from workbench.archive import ArchiveWriter
        w = ArchiveWriter({str(tmp_path)!r}, "s", row_group_size=10_000)
        n = 400_000
        first = (w.last_position or 0) + 1
        rng = np.random.default_rng(0)
        data = pa.array(np.char.multiply(rng.integers(0, 2**62, n).astype(str), 8))
        while True:
            pos = np.arange(first, first + n)
            w.append(pa.table({{"global_position": pos, "recorded_at": pos, "data": data}}))
            print(first + n - 1, flush=True)
            first += n
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    killed_mid_file = 0
    for kill_after in (0.05, 0.15, 0.1, 0.2):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
        assert proc.stdout is not None
        proc.stdout.readline()  # one file is archived; the next is being written
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_mid_file += bool(list(tmp_path.rglob(".*.tmp")))
        archive = wb.open_archive(tmp_path)
        for f in archive.files:
            meta = pq.ParquetFile(f.path).metadata  # a half file would not parse
            assert meta.num_rows == f.last - f.first + 1
        n = len(archive)
        assert archive.sql(
            "select count(distinct global_position), min(global_position), max(global_position) from events"
        ).fetchall() == [(n, 1 if n else None, n or None)]
    assert killed_mid_file, "no kill landed while a file was being written"
    # The next writer removes what the killed ones left and resumes after them.
    last = ArchiveWriter(tmp_path, "s").last_position or 0
    ArchiveWriter(tmp_path, "s").append(events(last + 1, last + 5))
    assert not list(tmp_path.rglob(".*.tmp"))
    assert len(wb.open_archive(tmp_path)) == last + 5


def test_side_tables_are_there_empty_before_anything_is_written(tmp_path: Path) -> None:
    """`select * from gap_records` on an archive without gaps is an empty result, not an error."""
    ArchiveWriter(tmp_path, "s").append(pa.table({"global_position": [1], "recorded_at": [0]}))
    reader = ArchiveReader(tmp_path)
    for table in ("gap_records", "stream_samples", "consumer_samples"):
        assert reader.sql(f"select count(*) from {table}").fetchall() == [(0,)]
    assert reader.sql("select * from gap_records").columns[:3] == [
        "source",
        "first_missing",
        "last_missing",
    ]


def test_head_and_the_notebook_view_read_little_and_agree_with_sql(tmp_path: Path) -> None:
    for source, start in (("b", 100), ("a", 1)):
        writer = ArchiveWriter(tmp_path, source)
        for chunk in range(3):  # three files per source
            positions = list(range(start + 10 * chunk, start + 10 * chunk + 10))
            writer.append(pa.table({"global_position": positions, "recorded_at": positions}))
    archive = wb.open_archive(tmp_path)
    every = archive.sql("select * from events order by source, global_position").pl()
    for n in (0, 1, 10, 25, 35, 60, 100):
        assert archive.head(n).equals(every.head(n)), n
    view = archive._repr_html_()
    assert "60 events in 6 files" in view and "<td>a</td><td>30</td><td>1</td><td>30</td>" in view
    with pytest.raises(ArchiveError, match="head"):
        archive.head(-1)


def test_compact_never_merges_across_a_hole_no_gap_record_explains(tmp_path: Path) -> None:
    """A file moved aside (or lost) and put back after a compaction: a merged file whose
    name spanned the hole would hide it, and the next compact would retire it for good."""
    writer = ArchiveWriter(tmp_path, "s")
    for first in (1, 11, 31, 41):
        writer.append(events(first, first + 9))
    writer.record_gap(21, 30, "deleted")  # explained: merged across
    middle = next(tmp_path.rglob(data_file_name(31, 40)))
    aside = tmp_path / "aside.parquet"
    middle.rename(aside)  # 31..40 gone, no record of it
    compact(tmp_path)
    data = lambda: [p.name for p in sorted(tmp_path.glob("source=*/date=*/*.parquet"))]  # noqa: E731
    assert data() == [data_file_name(1, 20), data_file_name(41, 50)]
    aside.rename(middle)  # put back from the backup
    compact(tmp_path)
    assert data() == [data_file_name(1, 50)] and len(wb.open_archive(tmp_path)) == 40
    # A file whose positions the file spanning it does not hold is refused, never retired.
    merged = middle.parent / data_file_name(1, 50)
    table = pq.read_table(merged)
    pq.write_table(table.filter(pa.compute.less(table["global_position"], 31)),
                   middle.parent / data_file_name(1, 60))  # fmt: skip
    with pytest.raises(ArchiveError, match=r"holds 20 position\(s\) \(from 31\) that .* does not"):
        compact(tmp_path)
    assert merged.exists()


def test_a_damaged_side_table_file_is_a_one_line_archive_error(tmp_path: Path) -> None:
    from workbench.archive._layout import records_dir
    from workbench.archive.writer import read_records

    ArchiveWriter(tmp_path, "jetstream:S").append(events(1, 2))
    damaged = records_dir(tmp_path, "archive_mappings", "jetstream:S") / "cut.parquet"
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"")  # a copy cut short, a full disk
    with pytest.raises(ArchiveError, match=r"archive_mappings of jetstream:S cannot be read: .*"
                       r"\(move the damaged file aside\)"):  # fmt: skip
        read_records(tmp_path, "archive_mappings", "jetstream:S")


def test_a_query_whose_files_a_merge_retired_meanwhile_runs_again(tmp_path: Path) -> None:
    """A following archiver merges its small files between a query's listing and its
    reading: checks, reports and replays run such a query again on the merged file."""
    writer = ArchiveWriter(tmp_path, "s", merge_small_files=False)
    for p in range(1, 6):
        writer.append(events(p, p))
    reader = ArchiveReader(tmp_path)  # lists five files, then a merge retires them
    compact(tmp_path)

    def count() -> int:  # straight to DuckDB, past sql()'s own re-listing
        return int(reader.con.sql("select count(*) from events").fetchall()[0][0])

    with pytest.raises(duckdb.IOException):
        count()
    assert reader.stable(count) == 5
    assert len([run() for run in wb.open_archive(tmp_path).checks().values()]) == 5


def test_the_readme_s_glob_reads_every_event_once_in_duckdb_and_polars(tmp_path: Path) -> None:
    """`<root>/source=*/*/*.parquet`: not the side tables (another schema, under `_*/`),
    not merged-away files; `<root>/**/*.parquet` would fail on the side tables."""
    import polars as pl

    for source in ("jetstream:A", "postgres:public.b"):
        writer = ArchiveWriter(tmp_path, source)
        writer.append(events(5, 9))
        writer.append(events(10, 14))
        writer.append(events(15, 20, day=1))
        writer.record_gap(1, 4, "retention", "first sequence was 5")
    compact(tmp_path)  # leaves the merged-away files beside the merged one, for an hour
    assert list(tmp_path.rglob("*.parquet.merged"))
    glob = f"{tmp_path}/source=*/*/*.parquet"
    query = f"select source, count(*), count(distinct global_position) from read_parquet('{glob}') group by 1 order by 1"
    expected = [("jetstream:A", 16, 16), ("postgres:public.b", 16, 16)]
    assert duckdb.sql(query).fetchall() == expected
    frame = pl.scan_parquet(glob).group_by("source").agg(pl.len()).sort("source").collect()
    assert frame.rows() == [(s, n) for s, n, _ in expected]
    # With hive partitioning, the `date` partition comes along (the UTC day of a file's first event).
    dated = f"select distinct date from read_parquet('{glob}', hive_partitioning = true) order by 1"
    assert [str(d) for (d,) in duckdb.sql(dated).fetchall()] == ["1970-01-01", "1970-01-02"]


def test_an_archive_is_not_written_inside_another(tmp_path: Path) -> None:
    """--out pointed into another archive's date= directory made its files look like that
    archive's; refused in one line."""
    ArchiveWriter(tmp_path / "arch", "s").append(
        pa.table({"global_position": [1], "recorded_at": [0]})
    )
    inner = next((tmp_path / "arch" / "source=s").glob("date=*")) / "nested"
    with pytest.raises(ArchiveError, match=r"is inside the archive .*arch: an archive is not"):
        ArchiveWriter(inner, "other")
    assert not inner.exists()
