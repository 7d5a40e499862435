"""``workbench check``: tables on stdout, the exit code from ``--fail-on``."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pytest

from workbench.archive import ArchiveWriter
from workbench.cli import run
from workbench.scenario import Faults, generate


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(seed=2, events=2_000).write_archive(tmp_path_factory.mktemp("faulty"))


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    scenario = generate(seed=2, events=1_000, faults=Faults.none())
    return scenario.write_archive(tmp_path_factory.mktemp("clean"))


def test_findings_print_as_tables_and_fail_only_when_asked(
    faulty: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["check", "--archive", str(faulty)]) == 0
    out = capsys.readouterr().out
    for heading in ("gaps", "duplicates", "drift", "lag", "causation", "orphans", "retention"):
        assert heading in out
    assert re.search(r"\(first 15 of [\d,]+; --rows N shows more\)", " ".join(out.split()))
    assert run(["check", "--archive", str(faulty), "--fail-on", "gaps,duplicates,drift"]) == 1
    assert "failed: gaps, duplicates, drift" in capsys.readouterr().out
    # The planted late events are lag findings.
    assert run(["check", "--archive", str(faulty), "--fail-on", "lag"]) == 1
    assert "failed: lag" in capsys.readouterr().out
    # --only: a large archive's checks without the whole-archive causation graph.
    assert run(["check", "--archive", str(faulty), "--only", "gaps,lag", "--fail-on", "lag"]) == 1
    out = capsys.readouterr().out
    assert "✗ lag" in out and "✗ gaps" in out and "duplicates" not in out and "orphans" not in out
    assert run(["check", "--archive", str(faulty), "--only", "gaps", "--fail-on", "lag"]) == 2
    assert "--fail-on lag: not among the --only checks" in capsys.readouterr().err


def test_a_clean_archive_passes(clean: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fail_on = "gaps,duplicates,drift,lag,causation"
    assert run(["check", "--archive", str(clean), "--fail-on", fail_on]) == 0
    assert "failed" not in capsys.readouterr().out


def test_user_mistakes_exit_2_in_one_line(
    faulty: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["check", "--archive", str(faulty), "--fail-on", "gaps,nonsense"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --fail-on: unknown check(s) nonsense; "
        "choose from gaps, duplicates, drift, lag, causation"
    )
    assert run(["check", "--archive", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "no archive at" in err and "Traceback" not in err


def test_an_archive_of_only_lost_messages_is_checked_not_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stream whose every message expired before the first run: no event, one recorded
    gap. The loss is the finding (exit 1), not "no archived events" (exit 2); an archive
    begun with nothing recorded at all is still refused."""
    (tmp_path / "begun" / "source=jetstream%3AORDERS").mkdir(parents=True)
    assert run(["check", "--archive", str(tmp_path / "begun")]) == 2
    assert "no archived events under" in capsys.readouterr().err
    writer = ArchiveWriter(tmp_path / "lost", "jetstream:ORDERS")
    writer.record_gaps([(1, 5, "retention")], "expired before the first run")
    assert run(["check", "--archive", str(tmp_path / "lost"), "--fail-on", "gaps"]) == 1
    out = capsys.readouterr().out
    assert "0 events, sources - (gaps recorded for jetstream:ORDERS)" in out
    assert "5 missing position(s) in 1 range(s) (retention: 5)" in out
    assert "failed: gaps" in out
    report = tmp_path / "report.html"
    assert run(["report", "--archive", str(tmp_path / "lost"), "--out", str(report)]) == 0
    assert "expired before the first run" in report.read_text()


def test_causes_outside_the_store_are_roots_when_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A service that records the command an event answers as its cause: the command is
    no archived event, so only a pattern saying so keeps it from reading as lost."""
    ArchiveWriter(tmp_path, "demo").append(
        pa.table(
            {
                "global_position": [1, 2, 3],
                "recorded_at": [0, 1, 2],
                "event_id": ["e1", "e2", "e3"],
                "correlation_id": ["r1", "r1", "r1"],
                "causation_id": ["cmd-place-o1", "e1", "lost-event"],
            }
        )
    )
    args = ["check", "--archive", str(tmp_path), "--fail-on", "causation"]
    assert run(args) == 1  # the command and the lost event are both orphans
    assert run([*args, "--external-causes", "cmd-*"]) == 1  # the lost event still is
    out = capsys.readouterr().out
    assert "lost-event" in out
    assert run([*args, "--external-causes", "cmd-*", "--external-causes", "lost-*"]) == 0


def test_stream_checks_that_could_not_run_are_printed_not_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Raw NATS messages, one subject per aggregate, no CloudEvents headers: no
    stream_position anywhere, so stream gaps and conflicts were not looked for."""
    ArchiveWriter(tmp_path, "jetstream:BANK").append(
        pa.table(
            {
                "global_position": [1, 2, 3],
                "recorded_at": [0, 1, 2],
                "event_id": ["a", "b", "c"],
                "stream": ["bank.acct.1", "bank.acct.1", "bank.acct.2"],
                "data": ['{"n": 1}', '{"n": 2}', '{"n": 3}'],
            }
        )
    )
    args = ["check", "--archive", str(tmp_path), "--fail-on", "gaps,duplicates", "--rows", "5"]
    assert run(args) == 0  # nothing found; what was not checked is said, not failed
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert (
        "stream gaps not checked for jetstream:BANK: stream_position is null in all 3 events "
        "(map it with --map stream_position=...)"
    ) in out
    assert "stream_position copies not checked for jetstream:BANK" in out
    assert "0 stream gap(s)" not in out and "stream_position: 0" not in out


def test_accepted_gap_reasons_do_not_fail_the_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A KV bucket deletes and expires keys by design: --accept-gaps says so."""
    writer = ArchiveWriter(tmp_path, "jetstream:KV_cfg")
    writer.append(pa.table({"global_position": [3, 4, 6], "recorded_at": [3, 4, 6]}))
    writer.record_gap(5, 5, "deleted")
    writer.record_gap(1, 2, "retention")
    assert run(["check", "--archive", str(tmp_path), "--fail-on", "gaps"]) == 1
    capsys.readouterr()
    argv = ["check", "--archive", str(tmp_path), "--fail-on", "gaps"]
    assert run([*argv, "--accept-gaps", "deleted,retention"]) == 0
    assert "3 removed as expected (deleted: 1, retention: 2; accepted)" in capsys.readouterr().out
    assert run([*argv, "--accept-gaps", "expired"]) == 2
    assert "accepted gap reason(s) expired: not a reason" in capsys.readouterr().err
