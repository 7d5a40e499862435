"""The offline HTML report, opened in headless Chromium as a user would."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
from conftest import service_missing

import workbench as wb
from workbench.report import write_report
from workbench.scenario import generate

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
]


def rendered_dom(page: Path) -> str:
    """The page's DOM after its scripts ran, from headless Chromium."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        service_missing("chromium is not installed (apt-get install chromium)")
        raise AssertionError  # unreachable
    proc = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, "--virtual-time-budget=20000", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    generate(5, entities=30, events=3_000).write_archive(root / "archive")
    live = pl.DataFrame({"id": [1, 2, 3], "n": [10, 20, 30]})
    candidate = pl.DataFrame({"id": [1, 2, 4], "n": [10, 21, 40]})
    diff = wb.diff(candidate, live, key=["id"])
    return write_report(root / "report.html", root / "archive", diff=diff)


def test_report_is_self_contained(report: Path) -> None:
    html = report.read_text()
    assert not re.search(r"<script[^>]+src=", html), (
        "the report must not load scripts from anywhere"
    )
    assert not re.search(r"""(href|src)=["']https?://""", html)
    for title in (
        "Gaps",
        "Duplicates",
        "Schema drift",
        "Lag",
        "Causation",
        "Diff against the live read model",
    ):
        assert title in html
    assert "<title>Event Workbench report</title>" in html
    # Printed, nothing scrolls: a wide table wraps to the page rather than losing columns.
    print_rules = html[html.index("@media print") :]
    assert ".wide { overflow: visible; }" in print_rules[: print_rules.index("</style>")]


@pytest.mark.browser
def test_every_chart_renders_in_headless_chromium(report: Path) -> None:
    dom = rendered_dom(report)
    charts = re.findall(r'<div class="chart[^"]*"[^>]*data-chart="\d+"[^>]*>', dom)
    assert len(charts) >= 6  # five checks and the diff
    assert all('data-rendered="true"' in div for div in charts), charts
    # vega-embed drew each chart as SVG marks.
    assert dom.count('class="marks"') >= len(charts)


def test_report_shows_the_findings(report: Path) -> None:
    html = report.read_text()
    assert "findings" in html
    assert "2 differing rows" in html or "differing rows" in html


def test_report_command_replays_diffs_and_checks_safety(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from workbench.archive import ArchiveReader
    from workbench.cli import run

    scenario = generate(9, entities=20, events=2_000)
    scenario.write_archive(tmp_path / "archive")
    # The "live" read model: what the non-idempotent projection built in production.
    from workbench.examples import MemoriesNonIdempotent

    live = wb.replay(tmp_path / "archive", MemoriesNonIdempotent, into=tmp_path / "live.duckdb")
    live.sql("select * from memories").write_parquet(str(tmp_path / "memories.parquet"))
    args = ["report", "--archive", str(tmp_path / "archive"), "--out", str(tmp_path / "r.html")]
    assert run([*args, "--live", str(tmp_path / "memories.parquet")]) == 2  # --key missing
    # A live side that cannot be read is refused before the replay, not after it.
    replay = ["--projection", "workbench.examples:Memories", "--into", str(tmp_path / "x.db")]
    live_file = str(tmp_path / "memories.parquet")
    for wrong, named in (
        (["--live", "postgresql://root:pw@127.0.0.1/test#public.no_such_table"], "no_such_table"),
        (["--live", "nope.parquet"], "no Parquet file at nope.parquet"),
        (["--live", live_file, "--abs-tol", "acess_count=1"], "--abs-tol acess_count: the live"),
        (
            ["--live", live_file, "--table", "memorys"],
            "--table memorys: memories has no such "
            "table; did you mean memories?; its tables: memories, agents, daily_access",
        ),
    ):
        assert run([*args, *replay, *wrong, "--key", "memory_id"]) == 2
        err = capsys.readouterr().err
        assert named in err and "pw@" not in err
        assert not (tmp_path / "x.db").exists()
    # --key repeated adds columns, as diff's does (the last one alone was taken).
    assert (
        run([*args, *replay, "--live", live_file, "--key", "memoryid", "--key", "memory_id"]) == 2
    )
    assert "--key memoryid: the live side has no such column; did you mean memory_id?" in (
        capsys.readouterr().err
    )
    code = run(
        [
            *args,
            "--projection",
            "workbench.examples:Memories",
            "--live",
            str(tmp_path / "memories.parquet"),
            "--key",
            "memory_id",
            "--check-safety",
            "--source",
            ArchiveReader(tmp_path / "archive").sources[0],
        ]
    )
    assert code == 1  # live was built by the non-idempotent projection: the diff finds it
    assert "the diff found" in capsys.readouterr().out
    html = (tmp_path / "r.html").read_text()
    for title in (
        "Replay of memories_v1",
        "Replay safety of Memories",
        "Diff against the live read model",
    ):
        assert title in html
    # What was compared and replayed: a report travels without its command line.
    candidate = f"{tmp_path / 'r.duckdb'}:memories_v1.memories"
    assert f"candidate {candidate} · live {live_file} · key memory_id" in html
    assert f"events of {ArchiveReader(tmp_path / 'archive').sources[0]} into " in html
    assert (tmp_path / "r.duckdb").exists()


def test_report_of_a_replay_that_leaves_event_types_out_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As `workbench replay` does: the report is written, and the exit code says a
    candidate left events out."""
    from workbench.cli import run

    generate(9, entities=20, events=500).write_archive(tmp_path / "archive")
    (tmp_path / "created_only.py").write_text(
        "import workbench as wb\n\n"
        "class CreatedOnly(wb.Projection):\n"
        "    name = 'created_only'\n"
        "    memories = wb.Table(key='memory_id', memory_id=str)\n\n"
        "    @wb.on('MemoryCreated')\n"
        "    def created(self, event, tables):\n"
        "        tables.memories.upsert({'memory_id': event.data['memory_id']})\n"
    )
    args = ["report", "--archive", str(tmp_path / "archive"), "--out", str(tmp_path / "r.html"),
            "--projection", f"{tmp_path / 'created_only.py'}:CreatedOnly"]  # fmt: skip
    code = run(args)
    assert code == 1
    out = capsys.readouterr().out
    assert "events no handler or upcaster covers" in out
    # Without --into the replay goes beside the report, and that is said.
    assert f"(and the replay into {tmp_path / 'r.duckdb'})" in out.replace("\n", "")
    assert "Replay of created_only_v1" in (tmp_path / "r.html").read_text()
    # Run again, it replaces its own earlier replay: the report is of this one, no more.
    assert run(args) == 1
    assert "replacing the earlier replay" not in (tmp_path / "r.html").read_text()


def test_report_never_replaces_what_is_not_a_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`report --out v2.duckdb --into v2.duckdb` wrote HTML over the replay; an archive's
    file or a DuckDB file at --out was replaced too. Refused before any work."""
    from workbench.cli import run

    archive = tmp_path / "archive"
    generate(9, entities=20, events=300).write_archive(archive)
    base = ["report", "--archive", str(archive)]
    same = str(tmp_path / "v2.duckdb")
    assert run([*base, "--projection", "workbench.examples:Memories", "--into", same,
                "--out", same]) == 2  # fmt: skip
    assert "--out and --into are both" in capsys.readouterr().err
    assert not (tmp_path / "v2.duckdb").exists()  # no replay was run
    db = tmp_path / "model.duckdb"
    db.write_bytes(b"not html")
    assert run([*base, "--out", str(db)]) == 2
    assert "exists and is not an HTML report" in capsys.readouterr().err
    assert db.read_bytes() == b"not html"
    first = min(archive.rglob("date=*/*.parquet"))
    kept = first.read_bytes()
    assert run([*base, "--out", str(first)]) == 2
    assert "is inside the archive" in capsys.readouterr().err
    assert first.read_bytes() == kept
    # An earlier report is replaced, as ever.
    html = tmp_path / "r.html"
    html.write_text("<!DOCTYPE html><html>an earlier report</html>")
    assert run([*base, "--out", str(html)]) == 0
    assert "an earlier report" not in html.read_text()


def test_report_tables_align_numbers_and_wrap_only_long_values(report: Path) -> None:
    html = report.read_text()
    numbers = re.findall(r'<td class="num">([^<]*)</td>', html)
    assert numbers and all(re.fullmatch(r"-?[\d,]+(\.\d+)?(e[+-]\d+)?|∅", n) for n in numbers)
    assert "3,000" in numbers  # thousands are grouped at any size, not from 10,000 on
    long_cells = re.findall(r'<td class="long">([^<]*)</td>', html)
    assert long_cells and all(len(v) > 40 for v in long_cells)
    # A type name is never a "long" value, so it never breaks mid-word.
    assert re.search(r"<td>MemoryAccessed</td>", html)
    # Lists (drift's unexpected fields) read as a list of names, not a Python repr.
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", html)
    assert cells and not any(c.startswith("[") for c in cells)


def test_replay_results_and_safety_reports_go_into_a_report_as_they_are(tmp_path: Path) -> None:
    from workbench.examples import Memories

    generate(5, entities=10, events=500).write_archive(tmp_path / "archive")
    result = wb.replay(tmp_path / "archive", Memories, into=tmp_path / "o.duckdb")
    safety = wb.check_replay_safety(tmp_path / "archive", Memories, determinism=False)
    page = write_report(tmp_path / "r.html", tmp_path / "archive", extra=[result, safety])
    text = page.read_text()
    assert "Replay of memories_v1" in text and "Replay safety of Memories" in text


def test_an_event_type_cannot_stop_the_charts_from_rendering(tmp_path: Path) -> None:
    """`<!--<script>` inside the chart data would keep the script element from ending."""
    import pyarrow as pa

    from workbench.archive import ArchiveWriter

    generate(5, entities=10, events=300).write_archive(tmp_path / "archive")
    types = ["<!--<script>", "</script><b>x</b>"] * 15  # in the drift chart's data
    ArchiveWriter(tmp_path / "archive", "postgres:odd.events").append(
        pa.table({"global_position": list(range(1, 31)), "recorded_at": list(range(30)),
                  "event_type": types, "data": ['{"a": 1}'] * 30})
    )  # fmt: skip
    steps: list[str] = []
    page = write_report(tmp_path / "r.html", tmp_path / "archive", progress=steps.append)
    # Each check named as it runs, and the page's own seconds (its charts' pictures) too.
    assert steps[-1] == "writing the page" and len(steps) == 6
    dom = rendered_dom(page)
    charts = re.findall(r'<div class="chart[^"]*"[^>]*data-chart="\d+"[^>]*>', dom)
    assert len(charts) >= 5 and all('data-rendered="true"' in div for div in charts), charts
    assert "<b>x</b>" not in dom  # the type is text, never markup


def test_the_report_takes_the_check_options_check_takes(tmp_path: Path) -> None:
    """Commanded's events name a command as their cause: --external-causes makes those
    roots, not orphans, in the report as in `workbench check`."""
    from workbench.archive import ArchiveWriter
    from workbench.cli import run

    ArchiveWriter(tmp_path / "archive", "s").append(
        pl.DataFrame(
            {
                "global_position": [1, 2],
                "recorded_at": [0, 1],
                "event_id": ["e1", "e2"],
                "correlation_id": ["r", "r"],
                "causation_id": ["cmd-1", "e1"],
            }
        ).to_arrow()
    )
    args = ["report", "--archive", str(tmp_path / "archive"), "--out"]
    assert run([*args, str(tmp_path / "a.html")]) == 0
    assert "1 orphan(s)" in (tmp_path / "a.html").read_text()
    assert run([*args, str(tmp_path / "b.html"), "--external-causes", "cmd-*"]) == 0
    assert "0 orphan(s)" in (tmp_path / "b.html").read_text()
    # --only, as check takes it: a report of a large archive can leave out the causation
    # graph (about a GB per million events), and says it did.
    assert run([*args, str(tmp_path / "c.html"), "--only", "gaps,lag"]) == 0
    page = (tmp_path / "c.html").read_text()
    assert "orphan(s)" not in page and "Not run (only gaps, lag asked for): Duplicates" in page
    assert run([*args, str(tmp_path / "d.html"), "--only", "gap"]) == 2
    assert not (tmp_path / "d.html").exists()
