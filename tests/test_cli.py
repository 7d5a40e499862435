"""The command line as a user meets it: exit codes, one-line errors, the demo."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

import workbench as wb
from workbench.cli import run


def workbench(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workbench", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def test_output_into_a_closed_pipe_exits_141_not_as_a_finding() -> None:
    """``workbench … | head -1``: the reader went away; 1 would read as "found something"."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench", "check", "--archive", str(SAMPLE)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the command has printed anything
    assert proc.wait(timeout=120) == 141
    assert proc.stderr.read() == b""  # quietly: no error, no traceback
    # Help goes out through Typer's own console, which exited 1 on a closed pipe.
    for args in (["--help"], ["replay", "--help"]):
        helped = subprocess.Popen(
            [sys.executable, "-m", "workbench", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert helped.stdout is not None and helped.stderr is not None
        helped.stdout.close()
        assert helped.wait(timeout=120) == 141, args
        assert helped.stderr.read() == b""
    # Help read whole, and to /dev/null, is no broken pipe.
    assert (
        subprocess.run(
            [sys.executable, "-m", "workbench", "--help"], stdout=subprocess.DEVNULL, check=False
        ).returncode
        == 0
    )


def test_every_name_the_readme_uses_is_public() -> None:
    """``wb.X`` in the README exists, and is in ``__all__`` unless a subpackage."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    names = set(re.findall(r"\bwb\.([A-Za-z_]\w*)", readme))
    assert {"replay", "diff", "open_archive"} <= names
    for name in sorted(names):
        value = getattr(wb, name)
        assert name in wb.__all__ or type(value).__name__ == "module", name
    assert all(hasattr(wb, name) for name in wb.__all__)
    assert issubclass(wb.ArchiveError, wb.WorkbenchError)  # `except wb.ArchiveError` works


def test_unknown_command_is_a_usage_error() -> None:
    assert run(["no-such-command"]) == 2


def test_help_shows_no_value_beside_a_flag(capsys: pytest.CaptureFixture[str]) -> None:
    """Typer's rich help printed `--resume <bool>`: `--resume true` is then refused."""
    assert run(["replay", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "--resume" in help_text and "<bool>" not in help_text
    assert "<path>" in help_text  # options that take a value still show its kind
    # Off a terminal the help had 80 columns, and cut option names: `--max-differenc…`.
    assert "--max-differences" in help_text and "…" not in help_text


def test_help_loads_no_data_library() -> None:
    """`workbench --help` (and a shell's tab completion, which runs the command) waited
    0.75 s for DuckDB, Polars and Arrow it does not use; the package loads its layers
    on first use, and `wb.diff` / `wb.replay` stay functions when their subpackages load."""
    probe = (
        "import sys\n"
        "from workbench.cli import run\n"
        "code = run(['--help'])\n"
        "heavy = sorted({'duckdb', 'polars', 'pyarrow', 'altair'} & set(sys.modules))\n"
        "import workbench as wb, workbench.diff, workbench.replay\n"
        "every = all(getattr(wb, n) is not None for n in wb.__all__)\n"
        "homes = set(wb.__all__) == {*wb._HOMES, 'charts', 'envelope'}\n"
        "own = {'sys', 'types', 'importlib'} & set(dir(wb))\n"
        "print(code, heavy, callable(wb.diff), callable(wb.replay), wb.Diff.__name__, every,"
        " homes, sorted(own))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines()[-1] == "0 [] True True Diff True True []"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"workbench {wb.__version__}"


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["archive"],
        ["archive", "jetstream"],
        ["archive", "postgres"],
        ["snapshot"],
        ["snapshot", "postgres"],
        ["sample"],
        ["sample", "jetstream"],
        ["replay"],
        ["diff"],
        ["check"],
        ["compact"],
        ["report"],
        ["promote"],
        ["demo"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    proc = workbench(*command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout


def test_demo_finds_every_planted_fault_and_the_readme_runs_on_it(tmp_path: Path) -> None:
    out = tmp_path / "demo-out"
    proc = workbench("demo", "--out", str(out), "--events", "3000", "--seed", "3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "bug reproduced" in proc.stdout
    assert "REDELIVERED" in proc.stdout
    assert "✘" not in proc.stdout
    assert len(wb.open_archive(out / "archive")) == 3000
    assert (out / "report.html").stat().st_size > 100_000
    # Every README example written against the demo's output runs as printed.
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    python = re.findall(r"```python\n(.*?)```", readme, re.S)
    files = {}  # blocks that are files to save ("# my_projection.py" first)
    for block in python:
        if name := re.match(r"# (\w+\.py)\n", block):
            files[name.group(1)] = block
            (tmp_path / name.group(1)).write_text(block)
    assert "my_projection.py" in files
    # The projection file, from the shell as the README shows.
    proc = workbench(
        "replay", "--archive", "demo-out/archive", "--projection", "my_projection.py:Memories",
        "--into", "replay.duckdb", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    blocks = [b for b in python if "demo-out/" in b and b not in files.values()]
    assert len(blocks) >= 4
    for block in blocks:
        ran = subprocess.run(
            [sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True
        )
        assert ran.returncode == 0, f"{block}\n{ran.stderr}"


def test_demo_refuses_a_directory_holding_outputs_it_did_not_write(tmp_path: Path) -> None:
    """`demo --out mydata` deleted a real archive at mydata/archive; it replaces only its own."""
    from workbench.demo import _clear_earlier_demo

    (tmp_path / "archive").mkdir()
    (tmp_path / "archive" / "events.parquet").write_text("mine")
    proc = workbench("demo", "--out", str(tmp_path), "--events", "500")
    assert proc.returncode == 2
    assert f"error: {tmp_path} already holds archive and no .workbench-demo file" in (
        proc.stderr + proc.stdout
    )
    assert (tmp_path / "archive" / "events.parquet").read_text() == "mine"
    # An earlier demo's output (its mark beside it) is replaced; other files stay.
    (tmp_path / ".workbench-demo").write_text("")
    (tmp_path / "report.html").write_text("old")
    (tmp_path / "notes.txt").write_text("keep")
    _clear_earlier_demo(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".workbench-demo", "notes.txt"]


SAMPLE = Path(__file__).parents[1] / "data" / "sample" / "archive"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["check", "--archive", "/tmp/[/x]"],
            "no archive at /tmp/[/x]",
        ),  # markup-looking path, printed as is
        (["check", "--archive", str(SAMPLE.parent.parent)], "the archive is"),
        (["report", "--archive", str(SAMPLE), "--out", "/tmp"], "is a directory"),
        (
            [
                "replay",
                "--archive",
                str(SAMPLE),
                "--projection",
                "workbench.examples:Memories",
                "--check-safety",
                "--duplicates",
                "7",
            ],
            "--duplicates",
        ),
        (
            [
                "replay",
                "--archive",
                str(SAMPLE),
                "--projection",
                "workbench.examples:Memories",
                "--check-safety",
                "--resume",
            ],
            "--resume does not go with --check-safety",
        ),
        (
            [
                "replay",
                "--archive",
                str(SAMPLE),
                "--projection",
                "workbench.examples:Memories",
                "--check-safety",
                "--into",
                "/tmp/wb-unused.duckdb",
            ],
            "--into does not go with --check-safety (which writes nothing)",
        ),
        (
            [
                "replay",
                "--archive",
                str(SAMPLE),
                "--projection",
                "workbench.examples:MEMORIES_SQL",
                "--dead-letter",
                "--into",
                "/tmp/wb-unused.duckdb",
            ],
            "on_error='dead-letter' (--dead-letter) does not apply",
        ),
        # Options that mean something only beside another, given without it: were ignored.
        (
            [
                "replay",
                "--archive",
                str(SAMPLE),
                "--projection",
                "workbench.examples:Memories",
                "--no-narrow",
                "--into",
                "/tmp/wb-unused.duckdb",
            ],
            "--narrow/--no-narrow goes with --check-safety; without it, it does nothing",
        ),
        (
            [
                "archive",
                "jetstream",
                "--server",
                "nats://127.0.0.1:1",
                "--stream",
                "S",
                "--out",
                "/tmp/wb-unused",
                "--idle-exit",
                "3",
            ],
            "--idle-exit goes with --follow",
        ),
        (
            ["report", "--archive", str(SAMPLE), "--check-safety", "--out", "/tmp/wb-unused.html"],
            "--check-safety goes with --projection",
        ),
        (
            [
                "replay",
                "--archive",
                str(SAMPLE),
                "--projection",
                "workbench.examples:Memories",
                "--until",
                "-5",
            ],
            "Invalid value for '--until'",
        ),
        (
            [
                "diff",
                "--candidate",
                "c.duckdb:t",
                "--live",
                "l.parquet",
                "--key",
                "id",
                "--abs-tol",
                "v=1",
                "--abs-tol",
                "v=2",
            ],
            "--abs-tol gives v twice",
        ),
        (
            ["check", "--archive", str(SAMPLE), "--only", "x" * 5_000],
            "more characters)",  # a long value is cut, not echoed whole
        ),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    proc = workbench(*args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["check"], "error: Missing option '--archive' (see workbench check --help)"),
        (["chek"], "error: No such command 'chek'. Did you mean 'check'? (see workbench --help)"),
        (["check", "--archive", ".", "--rows", "x"], "error: Invalid value for '--rows'"),
    ],
)
def test_a_usage_error_is_one_line(args: list[str], line: str) -> None:
    """Not Typer's boxed panel: the README promises one line for a user mistake."""
    proc = workbench(*args)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(line) and len(proc.stderr.strip().splitlines()) == 1


def test_a_damaged_archive_file_is_a_one_line_error(tmp_path: Path) -> None:
    damaged = tmp_path / "source=s" / "date=2024-01-01" / f"{1:020d}-{2:020d}.parquet"
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"not parquet")
    proc = workbench("check", "--archive", str(tmp_path))
    assert proc.returncode == 2
    assert f"{damaged} is named as an archive data file but cannot be read" in proc.stderr
    assert "move it out of the archive" in proc.stderr and "Traceback" not in proc.stderr
    # A Parquet file of another table under a data file's name: named, for every command.
    duckdb.sql("copy (select 'b' as global_position) to '" + str(damaged) + "'")
    for command in ("check", "compact", "report"):
        args = ["--out", str(tmp_path / "r.html")] if command == "report" else []
        proc = workbench(command, "--archive", str(tmp_path), *args)
        assert proc.returncode == 2, (command, proc.stderr)
        assert "its global_position is string, not an integer" in proc.stderr, proc.stderr


def test_a_bug_is_one_line_with_exit_3_and_its_traceback_on_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failure that is not the user's (here: a bug planted in the archive reader)
    must not look like a finding (1) or a usage error (2), nor print a traceback."""
    import workbench.analysis

    def broken(*args: object, **kwargs: object) -> None:
        raise TypeError(
            "'<=' not supported between 'str' and 'int' for postgresql://u:hunter2@db/x"
        )

    monkeypatch.setattr(workbench.analysis, "open_archive", broken)
    assert run(["check", "--archive", str(tmp_path)]) == 3
    err = capsys.readouterr().err
    assert "internal error" in err and "TypeError" in err and "WORKBENCH_TRACEBACK=1" in err
    assert "hunter2" not in err and "Traceback" not in err
    monkeypatch.setenv("WORKBENCH_TRACEBACK", "1")  # where it failed, and still code 3
    assert run(["check", "--archive", str(tmp_path)]) == 3
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["check", "report"])
def test_sigterm_stops_every_command_as_ctrl_c_does(command: str, tmp_path: Path) -> None:
    """timeout, systemd and Kubernetes send SIGTERM: 130, not a process killed silently
    (-15), whichever command it lands in (here: while the archive is being opened)."""
    args = [command, "--archive", "."] + (["--out", "r.html"] if command == "report" else [])
    script = (
        "import os, signal, sys, workbench.analysis as analysis\n"
        "from workbench.cli import run\n"
        "analysis.open_archive = lambda *a, **k: os.kill(os.getpid(), signal.SIGTERM)\n"
        f"sys.exit(run({args!r}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "r.html").exists()


def test_check_through_a_pipe_keeps_ids_whole_and_paths_literal(tmp_path: Path) -> None:
    """Off a terminal rich would assume 80 columns and fold every stream id in two."""
    archive = tmp_path / "[x]" / "archive"
    archive.parent.mkdir()
    shutil.copytree(SAMPLE, archive)
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}  # pytest sets 80
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "check", "--archive", str(archive)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{archive}: 5,000 events")  # "[x]" is not rich markup
    streams = re.findall(r"memory-[0-9a-f-]+", proc.stdout)
    assert streams and all(len(s) == len("memory-") + 36 for s in streams), streams[:3]


def test_progress_off_a_terminal_is_logged_and_its_interval_checked() -> None:
    check = [sys.executable, "-m", "workbench", "check", "--archive", str(SAMPLE)]
    logged = subprocess.run(
        check, capture_output=True, text=True, env={**os.environ, "WORKBENCH_LOG_EVERY": "0"}
    )
    assert logged.returncode == 0 and "checking causation: 4 of 5" in logged.stderr
    for every in ("10s", "nan", "inf", "1e15", "-1"):  # nan logged each tick, inf crashed
        wrong = subprocess.run(
            check, capture_output=True, text=True, env={**os.environ, "WORKBENCH_LOG_EVERY": every}
        )
        assert wrong.returncode == 2
        assert wrong.stderr.strip() == (
            f"error: WORKBENCH_LOG_EVERY is a number of seconds (0 to 86400), not {every!r}"
        )
    # A step that reports nothing for a while is logged all the same, with its time.
    quiet = subprocess.run(
        [
            sys.executable,
            "-c",
            "import time\nfrom workbench.cli._app import progress_bar\n"
            "with progress_bar() as bar:\n"
            "    bar.add_task('checking replay safety', total=None)\n"
            "    time.sleep(1.0)\n",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "WORKBENCH_LOG_EVERY": "0.2"},
    )
    lines = quiet.stderr.splitlines()
    assert quiet.returncode == 0 and 2 <= len(lines) <= 8, quiet.stderr
    assert all(re.fullmatch(r"checking replay safety, \d+s", line) for line in lines), lines


def test_promote_switches_the_stable_views_from_the_shell(tmp_path: Path) -> None:
    into = tmp_path / "r.duckdb"
    wb.replay(SAMPLE, "workbench.examples:Memories", into=into, until=2_000)
    proc = workbench("promote", "--into", str(into), "--name", "memories", "--version", "1")
    assert proc.returncode == 0, proc.stderr
    assert "memories.{agents, daily_access, memories} now read memories_v1 in" in proc.stdout
    with duckdb.connect(str(into), read_only=True) as con:
        assert con.sql("select count(*) from memories.memories").fetchall()[0][0] > 0
    missing = workbench("promote", "--into", str(into), "--name", "memories", "--version", "2")
    assert missing.returncode == 2
    assert "has no schema memories_v2; replay that version first" in missing.stderr
    folder = workbench("promote", "--into", str(tmp_path), "--name", "memories", "--version", "1")
    assert folder.returncode == 2 and "is a directory; promote takes" in folder.stderr


def test_control_characters_from_the_archive_never_reach_the_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An event type holding an escape sequence (or a newline) is printed escaped."""
    import pyarrow as pa

    from workbench.archive import ArchiveWriter
    from workbench.cli import run

    odd = "Hidden\x1b[8mCONCEALED\x1b]0;TITLE\x07"
    ArchiveWriter(tmp_path / "a", "s").append(
        pa.table({"global_position": [1, 2], "recorded_at": [0, 1],
                  "event_type": [odd, "two\nlines"], "data": ["{}", "{}"]})
    )  # fmt: skip
    run(["check", "--archive", str(tmp_path / "a")])
    (tmp_path / "p.py").write_text(
        "import workbench as wb\n"
        "class P(wb.Projection):\n"
        "    t = wb.Table(key='k', k=str)\n"
        "    @wb.on('Other')\n"
        "    def other(self, event, tables): pass\n"
    )
    run(["replay", "--archive", str(tmp_path / "a"), "--projection", f"{tmp_path / 'p.py'}:P",
         "--into", str(tmp_path / "o.duckdb")])  # fmt: skip
    printed = capsys.readouterr()
    text = printed.out + printed.err
    assert "\x1b" not in text and "\x07" not in text
    assert "Hidden\\x1b[8mCONCEALED" in text
