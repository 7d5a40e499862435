"""The shape every check returns: a small dataclass holding Polars frames.

A check result has a main table (:meth:`CheckResult.df`), other named
tables (:meth:`CheckResult.tables`), a count of findings
(:attr:`CheckResult.found`, what ``workbench check --fail-on`` tests), a one
line :meth:`CheckResult.summary`, a compact ``_repr_html_`` for notebooks
and, where a picture helps, :meth:`CheckResult.chart`. A report renders any
result through these alone.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, ClassVar

import polars as pl
import pyarrow as pa

from workbench._text import as_text

if TYPE_CHECKING:
    import altair as alt

__all__ = ["CheckResult"]

_HTML_ROWS = 10


class CheckResult:
    """Base of the check results; subclasses are frozen dataclasses of frames."""

    #: Short name of the check, as used by ``--fail-on``.
    name: ClassVar[str] = ""
    #: Name of the main table in :meth:`tables`.
    main: ClassVar[str] = ""

    def tables(self) -> dict[str, pl.DataFrame]:
        """Every table of the result by name, the main one first."""
        raise NotImplementedError

    @property
    def found(self) -> int:
        """How many findings count as a failure for ``--fail-on`` (0 = clean)."""
        raise NotImplementedError

    @as_text
    def summary(self) -> str:
        """One line saying what was found."""
        raise NotImplementedError

    def chart(self) -> alt.TopLevelMixin:
        """An Altair chart of the result."""
        raise NotImplementedError

    @property
    def not_fully_checked(self) -> bool:
        """Whether a source could not be looked at (its ``unchecked`` table has rows): no
        clean pass, whatever ``found`` says."""
        unchecked = getattr(self, "unchecked", None)
        return isinstance(unchecked, pl.DataFrame) and unchecked.height > 0

    def highlights(self) -> dict[str, pl.DataFrame]:
        """The tables worth showing a person, findings first (CLI and report print these)."""
        return self.tables()

    def df(self) -> pl.DataFrame:
        """The main table as a Polars DataFrame."""
        return self.tables()[self.main]

    def arrow(self) -> pa.Table:
        """The main table as an Arrow table."""
        return self.df().to_arrow()

    def head(self, n: int = 5) -> pl.DataFrame:
        """The first ``n`` rows of the main table."""
        return self.df().head(n)

    def __bool__(self) -> bool:
        return self.found > 0

    def _repr_html_(self) -> str:
        parts = [f"<p><b>{html.escape(self.name)}</b>: {html.escape(self.summary())}</p>"]
        for title, frame in self.highlights().items():
            if frame.height == 0:
                continue
            shown = frame.head(_HTML_ROWS)._repr_html_()
            more = f" (first {_HTML_ROWS} of {frame.height})" if frame.height > _HTML_ROWS else ""
            parts.append(f"<details><summary>{html.escape(title)}{more}</summary>{shown}</details>")
        return "\n".join(parts)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        # A plain REPL shows this: what was found first, then the tables' sizes.
        sizes = ", ".join(f"{k}={v.height} rows" for k, v in self.tables().items())
        return f"{type(self).__name__}(found={self.found}: {self.summary()}; {sizes})"
