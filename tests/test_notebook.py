"""What a projection written in a notebook cell shows when it fails: the cell, not the engine."""

from __future__ import annotations

from pathlib import Path

import pytest

SAMPLE = Path(__file__).parents[1] / "data" / "sample" / "archive"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_errors_show_the_users_own_code_and_a_mistake_as_one_line(tmp_path: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

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
        nbformat.v4.new_code_cell(f"wb.open_archive({str(tmp_path / 'nowhere')!r})"),
    ]
    nb.cells.append(
        nbformat.v4.new_code_cell(
            f"r = wb.replay({str(SAMPLE)!r}, Memories, into={str(tmp_path / 'm.duckdb')!r})\n"
            "r.estimate(10_000_000)"
        )
    )
    nb.cells.append(nbformat.v4.new_code_cell("r.summary()"))
    NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True).execute()
    (error,) = [o for o in nb.cells[2].outputs if o["output_type"] == "error"]
    assert error["ename"] == "ProjectionError"
    # The cell the handler was typed in (IPython compiles it as a numbered temporary file).
    assert "Typo.accessed failed on MemoryAccessed" in error["evalue"]
    assert "at Cell In[2], line 4" in error["evalue"], error["evalue"]
    # The handler's own frame, then the error; none of the engine's frames.
    assert error["traceback"] == [
        "Traceback of your code (most recent call last):",
        "  Cell In[2], line 4, in accessed",
        "    tables.memory.get(event.data['memory_id'])",
        "AttributeError: 'Tables' object has no attribute 'memory'",
        f"ProjectionError: {error['evalue']}",
    ]
    # A user's mistake is its one line.
    (mistake,) = [o for o in nb.cells[3].outputs if o["output_type"] == "error"]
    assert mistake["traceback"] == [f"ArchiveError: no archive at {tmp_path / 'nowhere'}"]
    # A summary shows its lines, an estimate the time as a person reads it.
    (estimate,) = [o for o in nb.cells[4].outputs if o["output_type"] == "execute_result"]
    assert estimate["data"]["text/plain"].startswith("≈ ")
    (summary,) = [o for o in nb.cells[5].outputs if o["output_type"] == "execute_result"]
    text = summary["data"]["text/plain"]
    assert text.startswith("memories_v1: 5,000 events in "), text  # not a quoted string


def test_a_cell_run_again_carries_the_vega_bundle_again() -> None:
    """ "Run All" in the same kernel replaces the output that held the Vega bundle: the
    saved notebook kept none and showed pictures only. JupyterLab and VS Code name the
    cell of each execution (``cellId``), as sent here."""
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="python3")

    def run(code: str, cell: str) -> int:
        content = {"code": code, "silent": False, "store_history": True,
                   "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}  # fmt: skip
        request = client.session.msg("execute_request", content, metadata={"cellId": cell})
        client.shell_channel.send(request)
        sizes = [0]
        while True:
            reply = client.get_iopub_msg(timeout=120)
            if reply["parent_header"].get("msg_id") != request["header"]["msg_id"]:
                continue
            if reply["msg_type"] in ("display_data", "execute_result"):
                sizes.append(len(reply["content"]["data"].get("text/html", "")))
            if reply["msg_type"] == "error":
                raise AssertionError(reply["content"]["evalue"])
            if reply["msg_type"] == "status" and reply["content"]["execution_state"] == "idle":
                return max(sizes)

    try:
        run("import workbench as wb, altair as alt", "setup")
        chart = "alt.Chart(alt.Data(values=[{'x': 1}])).mark_point().encode(x='x:Q')"
        first, second, again, after = (run(chart, cell) for cell in ("a", "b", "a", "b"))
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert first > 500_000 > 50_000 > second  # the bundle once, with the first chart
    assert again > 500_000 > 50_000 > after  # and again when that cell runs again
