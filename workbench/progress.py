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
import functools
import importlib.util
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from workbench._env import in_notebook

__all__ = ["ProgressCallback", "in_notebook", "notebook_progress", "shows_progress"]

#: ``progress(done, total)``: called as work advances.
ProgressCallback = Callable[[int, int], None]


@contextlib.contextmanager
def notebook_progress(description: str) -> Iterator[ProgressCallback | None]:
    """A ``progress(done, total)`` callback drawing a bar in Jupyter; None elsewhere,
    and without ipywidgets (the ``notebooks`` extra), where rich would only warn."""
    if not in_notebook() or importlib.util.find_spec("ipywidgets") is None:
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


_F = TypeVar("_F", bound=Callable[..., Any])


def shows_progress(
    description: str, adapt: Callable[[ProgressCallback], Any] | None = None
) -> Callable[[_F], _F]:
    """Decorate a long library call so that, in Jupyter, it draws a bar when given no ``progress``.

    ``progress=False`` draws none.

    ``adapt`` turns the ``(done, total)`` callback into the call's own
    progress signature, where that differs.
    """

    def decorate(fn: _F) -> _F:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("progress") is False:  # "no bar, please"
                kwargs["progress"] = None
                return fn(*args, **kwargs)
            if kwargs.get("progress") is not None or not in_notebook():
                return fn(*args, **kwargs)
            with notebook_progress(description) as bar:
                assert bar is not None  # in a notebook
                kwargs["progress"] = adapt(bar) if adapt else bar
                return fn(*args, **kwargs)

        return call  # type: ignore[return-value]

    return decorate
