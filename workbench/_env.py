"""Where the workbench runs: in a Jupyter kernel or not.

Kept apart (and free of rich) so the lowest layers can ask too.

>>> in_notebook()  # a doctest runs in no kernel
False
"""

from __future__ import annotations

import os
import sys

__all__ = ["in_notebook"]


def in_notebook() -> bool:
    """True inside a Jupyter kernel (JupyterLab, classic, VS Code, Colab, Databricks)."""
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython is not None else None
    if shell is None:
        return False
    kind = type(shell)
    return (
        kind.__name__ == "ZMQInteractiveShell"
        or "google.colab" in kind.__module__
        or bool(os.environ.get("DATABRICKS_RUNTIME_VERSION"))
    )
