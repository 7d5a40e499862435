"""The exceptions a user can cause, one class per kind of mistake.

Every :class:`WorkbenchError` is a user-facing problem: the CLI prints its
message on one line and exits with code 2. Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import numbers
import os
import sys
import sysconfig
import traceback
from pathlib import Path

__all__ = [
    "ArchiveError",
    "ArgumentError",
    "DiffError",
    "EnvelopeError",
    "MappingError",
    "ProjectionError",
    "SourceError",
    "WorkbenchError",
]


class WorkbenchError(Exception):
    """A problem with the user's input or environment, told in one line.

    IPython (a notebook) shows it as that line too, not as a traceback through
    the library; when the user's own code raised it (a projection's handler),
    the frames of that code come first.

    >>> WorkbenchError("no archive at x")._render_traceback_()
    ['WorkbenchError: no archive at x']
    """

    def _render_traceback_(self) -> list[str]:
        """What IPython prints for this error instead of its traceback."""
        lines: list[str] = []
        cause = self.__cause__
        if cause is not None and not isinstance(cause, WorkbenchError):
            frames = user_frames(cause)
            if frames:
                lines.append("Traceback of your code (most recent call last):")
                for frame in frames:
                    lines.append(f"  {place(frame.filename, frame.lineno)}, in {frame.name}")
                    if frame.line:
                        lines.append(f"    {frame.line}")
                lines.append(traceback.format_exception_only(cause)[-1].rstrip("\n"))
        return [*lines, f"{type(self).__name__}: {self}"]


class ArgumentError(WorkbenchError, TypeError, ValueError):
    """A library call given arguments it cannot take: one missing or unknown, or a value
    of the wrong kind. Still a ``TypeError``/``ValueError`` to code that catches those."""


def whole_number(value: object, what: str, at_least: int | None = 0) -> int:
    """``value`` if it is a whole number (not a bool) of at least ``at_least``; else a
    one-line :class:`ArgumentError` naming ``what``.

    >>> whole_number(3, "crashes")
    3
    >>> whole_number("x", "seed", None)
    Traceback (most recent call last):
    ...
    workbench.errors.ArgumentError: seed: a whole number, not 'x'
    >>> whole_number(-1, "crashes")
    Traceback (most recent call last):
    ...
    workbench.errors.ArgumentError: crashes: a whole number of at least 0, not -1
    """
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise ArgumentError(f"{what}: a whole number, not {value!r}")
    if at_least is not None and value < at_least:
        raise ArgumentError(f"{what}: a whole number of at least {at_least}, not {value!r}")
    return int(value)


class EnvelopeError(WorkbenchError):
    """Records that do not fit the canonical envelope."""


class ArchiveError(WorkbenchError):
    """An archive that cannot be read or a write it must refuse."""


class DiffError(WorkbenchError):
    """A diff that cannot be run: an unreadable side, a missing key column, a bad option."""


class MappingError(WorkbenchError):
    """A ``--map FIELD=SPEC`` that cannot be understood."""


class SourceError(WorkbenchError):
    """A live source (NATS, Postgres) that cannot be reached or read."""


class ProjectionError(WorkbenchError):
    """A projection that cannot be loaded, is ill-defined, or failed on an event."""


_PACKAGE = str(Path(__file__).parent) + os.sep
_EXAMPLES = _PACKAGE + "examples" + os.sep
_INSTALLED = tuple(
    {sysconfig.get_paths()[name] + os.sep for name in ("stdlib", "purelib", "platlib")}
)


def user_frames(exc: BaseException) -> list[traceback.FrameSummary]:
    """The frames of ``exc``'s traceback in the user's code: not the workbench's (but
    its example projections, which users run and copy), nor an installed library's."""
    return [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if (
            frame.filename.startswith(_EXAMPLES)
            if frame.filename.startswith(_PACKAGE)
            else not frame.filename.startswith(_INSTALLED)
        )
    ]


def place(filename: str, line: int | None) -> str:
    """``memories.py:12``, or ``Cell In[7], line 12`` for code typed in a notebook."""
    cell = _notebook_cell(filename)
    if cell is not None:
        return f"Cell In[{cell}], line {line}"
    return f"{Path(filename).name}:{line}"


def _notebook_cell(filename: str) -> int | None:
    """The execution count of the IPython cell compiled as ``filename`` (a temporary
    file name such as ``3154351706.py``, which tells a user nothing), if it is one."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    cells = getattr(getattr(shell, "compile", None), "_filename_map", None)
    return cells.get(filename) if isinstance(cells, dict) else None
