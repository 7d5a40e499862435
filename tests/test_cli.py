"""The command line as a user meets it: exit codes, one-line errors, the demo."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import workbench as wb
from workbench.cli import run


def workbench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workbench", *args], capture_output=True, text=True, timeout=300
    )


def test_unknown_command_is_a_usage_error() -> None:
    assert run(["no-such-command"]) == 2


@pytest.mark.parametrize("command", [[], ["archive"], ["snapshot"], ["sample"], ["demo"]])
def test_every_command_has_help(command: list[str]) -> None:
    proc = workbench(*command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout


def test_demo_finds_every_planted_fault(tmp_path: Path) -> None:
    proc = workbench("demo", "--out", str(tmp_path / "out"), "--events", "3000", "--seed", "3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "bug reproduced" in proc.stdout
    assert "REDELIVERED" in proc.stdout
    assert "✘" not in proc.stdout
    assert len(wb.open_archive(tmp_path / "out" / "archive")) == 3000
    assert (tmp_path / "out" / "report.html").stat().st_size > 100_000
