"""The ``workbench`` command line: a thin shell over the library.

Exit codes: 0 success, 1 the command's finding (differences, failed
checks), 2 a usage or input error (one line on stderr, never a traceback),
3 a bug, 141 the reader of the output went away (``| head``).
"""

from __future__ import annotations

import sys

from workbench.cli._app import app, run

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``workbench`` console script."""
    sys.exit(run(argv))
