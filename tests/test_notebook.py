"""What a projection written in a notebook cell shows when it fails: the cell, not the engine."""

from __future__ import annotations

from pathlib import Path

import pytest

SAMPLE = Path(__file__).parents[1] / "data" / "sample" / "archive"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_a_failing_handler_names_its_cell_and_hides_the_engine_frames(tmp_path: Path) -> None:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import workbench as wb\nfrom workbench.examples import Memories"
        ),
        nbformat.v4.new_code_cell(
            "class Typo(Memories):\n"
            "    @wb.on('MemoryAccessed')\n"
            "    def accessed(self, event, tables):\n"
            "        tables.memory.get(event.data['memory_id'])\n"
        ),
        nbformat.v4.new_code_cell(
            f"wb.replay({str(SAMPLE)!r}, Typo, into={str(tmp_path / 'o.duckdb')!r})"
        ),
    ]
    with pytest.raises(CellExecutionError):
        NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    (error,) = [o for o in nb.cells[2].outputs if o["output_type"] == "error"]
    assert error["ename"] == "ProjectionError"
    # The cell the handler was typed in (IPython compiles it as a numbered temporary file).
    assert "Typo.accessed failed on MemoryAccessed" in error["evalue"]
    assert "at Cell In[2], line 4" in error["evalue"], error["evalue"]
    shown = "\n".join(error["traceback"])
    assert "Cell In[2], line 4" in shown  # the handler's own frame stays
    # Of the engine, only the frame raising the error (IPython always shows that one).
    assert "skipping hidden" in shown
    for internal in ("engine.py", "progress.py"):
        assert internal not in shown, internal
    assert shown.count("runner.py") == 1
