"""Progress of long work in a notebook: a rich bar under the cell.

On the command line each command draws its own bar; library calls made in
Jupyter get one from :func:`notebook_progress` when the caller passed no
``progress`` callback. Elsewhere (scripts, tests) nothing is drawn.

>>> with notebook_progress("replay") as report:
...     report is None  # not in a notebook
True
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

__all__ = ["ProgressCallback", "in_notebook", "notebook_progress"]

#: ``progress(done, total)``: called as work advances.
ProgressCallback = Callable[[int, int], None]


def in_notebook() -> bool:
    """True inside a Jupyter kernel."""
    return bool(Console().is_jupyter)


@contextlib.contextmanager
def notebook_progress(description: str) -> Iterator[ProgressCallback | None]:
    """A ``progress(done, total)`` callback drawing a bar in Jupyter; None elsewhere."""
    if not in_notebook():
        yield None
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
    )
    task = bar.add_task(description, total=None)
    with bar:
        yield lambda done, total: bar.update(task, completed=done, total=total)
