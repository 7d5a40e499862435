"""Library calls given an argument of the wrong kind, as a notebook user types them:
one name where a list was expected is that name, never its letters; anything else is a
one-line error naming the argument, not a traceback from DuckDB or pathlib."""

from __future__ import annotations

from pathlib import Path

import pytest

import workbench as wb
from workbench.errors import WorkbenchError
from workbench.examples import Memories
from workbench.report import write_report
from workbench.scenario import generate


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> wb.Archive:
    root = tmp_path_factory.mktemp("arguments") / "archive"
    generate(3, entities=20, events=1_500).write_archive(root)
    return wb.open_archive(root)


def test_one_name_where_several_may_be_given_is_that_name(
    archive: wb.Archive, tmp_path: Path
) -> None:
    one, listed = archive.gaps(accept="retention"), archive.gaps(accept=["retention"])
    assert one.accepted == listed.accepted == frozenset({"retention"})
    assert one.summary() == listed.summary()
    write_report(tmp_path / "r.html", archive, only="gaps", accept_gaps="retention")
    assert "Not run (only gaps asked for)" in (tmp_path / "r.html").read_text()
    with pytest.raises(WorkbenchError, match=r"^accept: a gap reason or a list of them, not 5$"):
        archive.gaps(accept=5)  # type: ignore[arg-type]
    with pytest.raises(WorkbenchError, match=r"^only: 'gaps' is named twice$"):
        write_report(tmp_path / "s.html", archive, only=["gaps", "gaps"])
    with pytest.raises(WorkbenchError, match=r"^external: a glob pattern or a list of them"):
        archive.causation(external=[b"cmd-*"])  # type: ignore[list-item]


def test_arguments_of_the_wrong_kind_are_one_line_errors(
    archive: wb.Archive, tmp_path: Path
) -> None:
    cases = [
        (lambda: archive.causation(correlation_id=123), r"correlation_id: the id as text"),
        (lambda: wb.open_archive(42), r"an archive is a directory's path, not 42"),
        (lambda: wb.check_replay_safety(archive.root, Memories, seed="x"), r"seed: a whole"),
        (lambda: wb.check_replay_safety(archive.root, Memories, crashes=-1), r"crashes: a whole"),
        (lambda: wb.check_replay_safety(archive.root, Memories, duplicates=True), r"duplicates"),
    ]
    for call, message in cases:
        with pytest.raises(WorkbenchError, match=message) as raised:
            call()  # type: ignore[no-untyped-call]
        assert "\n" not in str(raised.value)


def test_a_chart_is_saved_into_a_directory_it_makes_and_never_half_written(
    archive: wb.Archive, tmp_path: Path
) -> None:
    target = tmp_path / "charts" / "gaps.png"
    assert wb.charts.save(archive.gaps().chart(), target) == target
    assert target.read_bytes().startswith(b"\x89PNG")
    assert [p.name for p in target.parent.iterdir()] == ["gaps.png"]  # no temporary left
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(WorkbenchError, match=r"is a directory; give a file name"):
        wb.charts.save(archive.gaps().chart(), tmp_path / "dir.png")
