"""``workbench diff``: exit 0 identical, 1 differences, 2 error; the summary as a table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest

from workbench.cli import run


@pytest.fixture
def files(tmp_path: Path) -> tuple[str, str, str]:
    path = tmp_path / "candidate.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create schema rm")
        con.execute("create table rm.m as select range id, range * 0.5 v from range(100)")
    same = tmp_path / "same.parquet"
    other = tmp_path / "other.parquet"
    duckdb.sql("select range id, range * 0.5 v from range(100)").write_parquet(str(same))
    duckdb.sql(
        "select range id, range * 0.5 + case when range = 3 then 1 else 1e-9 end v from range(100)"
    ).write_parquet(str(other))
    return f"{path}:rm.m", str(same), str(other)


def test_exit_codes(
    files: tuple[str, str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    candidate, same, other = files
    assert run(["diff", "--candidate", candidate, "--live", same, "--key", "id"]) == 0
    assert "identical" in capsys.readouterr().out
    out = tmp_path / "out"
    code = run(
        [
            "diff",
            "--candidate",
            candidate,
            "--live",
            other,
            "--key",
            "id",
            "--abs-tol",
            "v=1e-6",
            "--out",
            str(out),
        ]
    )
    assert code == 1
    printed = capsys.readouterr().out
    assert "changed rows per column" in printed and "only_in_live" in printed
    assert json.loads((out / "summary.json").read_text())["changed"] == 1
    assert pl.read_parquet(out / "rows.parquet")["id"].to_list() == [3]
    assert (
        run(["diff", "--candidate", candidate, "--live", other, "--key", "id", "--ignore", "v"])
        == 0
    )


def test_user_errors_exit_2_with_one_line(
    files: tuple[str, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    candidate, same, _ = files
    for argv in (
        ["--candidate", candidate, "--live", same, "--key", "nope"],
        ["--candidate", candidate, "--live", same, "--key", "id", "--abs-tol", "v"],
        ["--candidate", "missing.duckdb:a.b", "--live", same, "--key", "id"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "workbench", "diff", *argv], capture_output=True, text=True
        )
        assert result.returncode == 2, result.stderr
        assert (
            result.stderr.strip().startswith("error:")
            and len(result.stderr.strip().splitlines()) == 1
        )
    # A table named without its schema: DuckDB's hint names it as the user would, not by
    # the catalog the file is attached as.
    file = candidate.rpartition(":")[0]
    assert run(["diff", "--candidate", f"{file}:m", "--live", same, "--key", "id"]) == 2
    err = capsys.readouterr().err
    assert 'Did you mean "rm.m"' in err and "_wb_db" not in err
    # Options refused before the work, not after a diff printed in full.
    for wrong, told in (
        (["--live-position", "-3"], "--live-position"),
        (["--show", "-1"], "--show"),
        (["--out", file], "is a file; --out takes a directory"),
    ):
        assert run(["diff", "--candidate", candidate, "--live", same, "--key", "id", *wrong]) == 2
        captured = capsys.readouterr()
        assert told in captured.err and "candidate vs" not in captured.out


def test_the_row_preview_shows_only_columns_that_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wide = {f"col{i}": [i, i] for i in range(30)}
    pl.DataFrame({"id": [1, 2], **wide}).write_parquet(tmp_path / "c.parquet")
    pl.DataFrame({"id": [1, 2], **wide, "col7": [7, 8]}).write_parquet(tmp_path / "l.parquet")
    args = ["diff", "--candidate", str(tmp_path / "c.parquet"), "--live"]
    assert run([*args, str(tmp_path / "l.parquet"), "--key", "id"]) == 1
    printed = capsys.readouterr().out
    assert "col7__candidate" in printed and "col7__live" in printed
    assert "col8__candidate" not in printed
    assert printed.startswith("2 candidate vs 2 live rows: ")  # the verdict first
    assert "_side" not in printed and "_status" not in printed  # the same on every row


def test_many_changed_columns_are_listed_per_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Past three changed columns, side by side would be wider than any terminal."""
    wide = {f"col{i}": [i, i] for i in range(10)}
    pl.DataFrame({"id": [1, 2], **wide}).write_parquet(tmp_path / "c.parquet")
    changed = {f"col{i}": [i, i + 100] for i in range(4)}
    pl.DataFrame({"id": [1, 2], **wide, **changed}).write_parquet(tmp_path / "l.parquet")
    args = ["diff", "--candidate", str(tmp_path / "c.parquet"), "--live"]
    assert run([*args, str(tmp_path / "l.parquet"), "--key", "id"]) == 1
    printed = " ".join(capsys.readouterr().out.split())
    assert "col0__candidate" not in printed
    assert "col0: 0 → 100; col1: 1 → 101; col2: 2 → 102; col3: 3 → 103" in printed


def test_the_per_row_changes_print_lists_and_tell_null_from_empty_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A list column among them printed (it crashed), and the cells' rules hold in the
    list: null apart from '', edge spaces quoted (Django writes '' where others write null)."""
    base = {"a": [1, 1, 1, 1], "b": [1, 1, 1, 1], "c": [1, 1, 1, 1]}
    candidate = {
        "id": [1, 2, 3, 4],
        "tags": [["a"], [], None, None],
        "note": [None, "", " pad ", None],
        **base,
    }
    live = {
        "id": [1, 2, 3, 5],
        "tags": [["a", "b"], [], None, None],
        "note": ["", None, "pad", None],
    }
    pl.DataFrame(candidate).write_parquet(tmp_path / "c.parquet")
    pl.DataFrame({**live, **base, "a": [2, 1, 1, 1], "c": [2, 1, 1, 1]}).write_parquet(
        tmp_path / "l.parquet"
    )
    args = ["diff", "--candidate", str(tmp_path / "c.parquet"), "--live"]
    assert run([*args, str(tmp_path / "l.parquet"), "--key", "id"]) == 1
    printed = " ".join(capsys.readouterr().out.split())
    assert "tags: ['a'] → ['a', 'b']; note: null → ''; a: 1 → 2; c: 1 → 2" in printed
    assert "note: '' → null" in printed and "note: ' pad ' → pad" in printed
    # A row on one side only is said to be, not shown as a change to ''.
    assert "(only in candidate)" in printed and "(only in live)" in printed
    assert "│ ''" not in printed


def test_key_and_ignore_take_both_repeats_and_commas(tmp_path: Path) -> None:
    """A repeated --key once kept only the last one: a composite key diffed on half of it."""
    candidate = pl.DataFrame({"a": [1, 1], "b": [1, 2], "v": [1, 2], "w": [0, 0]})
    live = pl.DataFrame({"a": [1, 1], "b": [1, 2], "v": [1, 2], "w": [9, 9]})
    candidate.write_parquet(tmp_path / "c.parquet")
    live.write_parquet(tmp_path / "l.parquet")
    args = [
        "diff",
        "--candidate",
        str(tmp_path / "c.parquet"),
        "--live",
        str(tmp_path / "l.parquet"),
    ]
    assert run([*args, "--key", "a", "--key", "b", "--ignore", "w"]) == 0
    assert run([*args, "--key", "a,b", "--ignore", "w,v"]) == 0
    assert run([*args, "--key", "a", "--key", "b"]) == 1  # w differs
    # --columns: only those are compared (v agrees), and a misspelt one is a user error.
    assert run([*args, "--key", "a,b", "--columns", "v"]) == 0
    assert run([*args, "--key", "a,b", "--columns", "v", "--columns", "w"]) == 1
    assert run([*args, "--key", "a,b", "--columns", "nope"]) == 2


def test_normalize_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A text[] the live side keeps sorted, a candidate list in insertion order."""
    candidate = pl.DataFrame({"id": [1, 2], "tags": [["b", "a"], ["x"]], "name": ["Ann", "Bo"]})
    live = pl.DataFrame({"id": [1, 2], "tags": [["a", "b"], ["x"]], "name": ["ann", "bo"]})
    candidate.write_parquet(tmp_path / "c.parquet")
    live.write_parquet(tmp_path / "l.parquet")
    args = [
        "diff",
        "--candidate",
        str(tmp_path / "c.parquet"),
        "--live",
        str(tmp_path / "l.parquet"),
    ]
    args += ["--key", "id"]
    assert run(args) == 1
    assert run([*args, "--normalize", "tags=list_sort({})", "--normalize", "name=lower"]) == 0
    capsys.readouterr()
    assert run([*args, "--normalize", "tags"]) == 2
    assert "--normalize 'tags': expected COLUMN=SQL" in capsys.readouterr().err


def test_differing_rows_print_their_keys_whole(tmp_path: Path) -> None:
    """A key is what --explain takes: Polars' repr would cut a UUID at 30 characters."""
    keys = [f"a76994fc-72ae-4{i:03d}-9c1e-5f0d2b7e{i:04d}" for i in range(3)]
    pl.DataFrame({"id": keys, "v": [1.0, 2.0, 0.1]}).write_parquet(tmp_path / "c.parquet")
    pl.DataFrame({"id": keys, "v": [1.0, 2.0, 0.10001]}).write_parquet(tmp_path / "l.parquet")
    args = ["--candidate", str(tmp_path / "c.parquet"), "--live", str(tmp_path / "l.parquet")]
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "diff", *args, "--key", "id"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "COLUMNS"},  # pytest sets 80
    )
    assert proc.returncode == 1, proc.stderr
    assert "differing rows (1)" in proc.stdout and keys[2] in proc.stdout
    assert "0.10001" in proc.stdout  # both sides in full, not both "0.1"
    assert proc.stderr == ""  # not even the blank line rich leaves off a terminal


def test_values_that_look_like_markup_print_as_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rich markup ate "[urgent]" and a JSON array "[true,null]" from --explain's values."""
    with duckdb.connect(str(tmp_path / "c.duckdb")) as con:
        con.execute("create table t as select 1 as id, '[urgent] fix' as title, "
                    "'{\"x\":[true,null]}'::JSON as j")  # fmt: skip
        con.execute(f"copy (select 1 as id, '[bold]urgent[/bold] fix' as title, "
                    f"'{{\"x\":[false,null]}}'::JSON as j) to '{tmp_path / 'live.parquet'}'")  # fmt: skip
    args = ["diff", "--candidate", f"{tmp_path / 'c.duckdb'}:t", "--live"]
    assert run([*args, str(tmp_path / "live.parquet"), "--key", "id", "--explain", "1"]) == 1
    out = capsys.readouterr().out
    assert "title: candidate '[urgent] fix', live '[bold]urgent[/bold] fix'" in out
    assert """j: candidate '{"x":[true,null]}', live '{"x":[false,null]}'""" in out


def test_explain_and_out_mistakes_are_told_before_the_diff(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrong --explain key or a useless --archive was found after the whole diff printed,
    and its exit 2 hid the diff's exit 1."""
    with duckdb.connect(str(tmp_path / "c.duckdb")) as con:
        con.execute("create table t as select 1 as a, 2 as b, 3 as v")
        con.execute(f"copy (select 1 as a, 2 as b, 4 as v) to '{tmp_path / 'live.parquet'}'")
    args = ["diff", "--candidate", f"{tmp_path / 'c.duckdb'}:t", "--live",
            str(tmp_path / "live.parquet"), "--key", "a,b"]  # fmt: skip
    assert run([*args, "--explain", "1"]) == 2
    out, err = capsys.readouterr()
    assert "the key has 2 columns, so give 2 values" in err and "candidate vs" not in out
    (tmp_path / "empty").mkdir()
    assert run([*args, "--explain", "1,2", "--archive", str(tmp_path / "empty")]) == 2
    out, err = capsys.readouterr()
    assert f"no archive at {tmp_path / 'empty'}" in err and "candidate vs" not in out
    (tmp_path / "file").write_text("")
    assert run([*args, "--out", str(tmp_path / "file" / "sub")]) == 2
    out, err = capsys.readouterr()
    assert f"{tmp_path / 'file'} is a file" in err and "candidate vs" not in out


def test_a_time_past_year_9999_prints_and_explains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Valid in Postgres and DuckDB, beyond Python's datetime: printing it raised."""
    with duckdb.connect(str(tmp_path / "c.duckdb")) as con:
        con.execute("create table t as select 1 as id, '12000-01-01 00:00:01+00'::TIMESTAMPTZ t")
        con.execute("copy (select 1 as id, '12000-01-01 00:00:00+00'::TIMESTAMPTZ as t) "
                    f"to '{tmp_path / 'live.parquet'}'")  # fmt: skip
    args = ["diff", "--candidate", f"{tmp_path / 'c.duckdb'}:t", "--live"]
    assert run([*args, str(tmp_path / "live.parquet"), "--key", "id", "--explain", "1"]) == 1
    out = capsys.readouterr().out
    assert "t: candidate '+12000-01-01 00:00:01.000000+00:00', live '+12000-01-01 00:00:00" in out
