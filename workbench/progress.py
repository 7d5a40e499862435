"""Progress of long work in a notebook: an HTML bar under the cell, updated in place.

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
import html
import inspect
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from workbench._env import in_notebook
from workbench.errors import ArgumentError

__all__ = ["ProgressCallback", "in_notebook", "notebook_progress", "shows_progress"]

#: ``progress(done, total)``: called as work advances.
ProgressCallback = Callable[[int, int], None]


@contextlib.contextmanager
def notebook_progress(description: str) -> Iterator[ProgressCallback | None]:
    """A ``progress(done, total)`` callback drawing a bar in Jupyter; None elsewhere.

    The bar is one HTML output updated in place (``display_id``) and emptied at
    the end: no widget (rich's needs ipywidgets, and leaves an ``Output()``
    behind in a saved notebook), nothing left under the cell but its result.
    """
    if not in_notebook():
        yield None
        return
    from IPython.display import HTML, display

    started = time.monotonic()
    shown = [0.0]  # when the bar was last drawn: a message per batch would flood the page

    def bar(done: int, total: int | None) -> HTML:
        of = f" of {total:,}" if total else ""
        value = f' value="{done}" max="{total}"' if total else ""
        return HTML(
            f'<div style="font-family: monospace">{html.escape(description)} '
            f'<progress{value} style="width: 40%; vertical-align: middle"></progress> '
            f"{done:,}{of} ({time.monotonic() - started:.1f} s)</div>"
        )

    handle = display(bar(0, None), display_id=True)

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if now - shown[0] >= 0.25 or (total and done >= total):
            shown[0] = now
            handle.update(bar(done, total))

    try:
        yield report
    finally:
        # Empty in every form: HTML("") keeps a text/plain "<IPython...HTML object>",
        # which a saved notebook (and nbconvert, GitHub) shows.
        handle.update({"text/plain": "", "text/html": ""}, raw=True)


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
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = True  # IPython and pytest show the caller's frame, not this
            try:  # a call that cannot bind is the caller's mistake: one line, not this frame
                signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise ArgumentError(f"{fn.__name__}(): {exc}") from None
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
