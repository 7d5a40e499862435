"""What every source run's result offers: one line, and its rows as frames.

The archivers and the lag sampler each return a result whose rows (gaps
found, samples taken) come from :meth:`~RunResult.df`; the rest follows:
``arrow()``, ``head()``, and the one-line :meth:`~RunResult.summary` as
``str()`` and inside ``repr()``, as a notebook or a REPL shows it.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from workbench._text import as_text

__all__ = ["RunResult"]


class RunResult:
    """Base of the sources' run results; subclasses give :meth:`summary` and :meth:`df`."""

    @as_text
    def summary(self) -> str:
        """One line for humans."""
        raise NotImplementedError

    def df(self) -> pl.DataFrame:
        """The run's rows as a Polars DataFrame."""
        raise NotImplementedError

    def arrow(self) -> pa.Table:
        """The same as :meth:`df`, as an Arrow table."""
        return self.df().to_arrow()

    def head(self, n: int = 5) -> pl.DataFrame:
        """The first ``n`` rows of :meth:`df`."""
        return self.df().head(n)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.summary()}>"
