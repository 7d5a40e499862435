"""Diffing a candidate read model against the live one, and explaining each difference.

>>> import polars as pl
>>> d = diff(pl.DataFrame({"id": [1]}), pl.DataFrame({"id": [1]}), key="id")
>>> d.summary.is_identical
True
"""

from workbench.diff.compare import diff
from workbench.diff.explain import Explanation
from workbench.diff.result import STATUSES, Diff, DiffSummary, SchemaDiff, TypeChange

__all__ = ["STATUSES", "Diff", "DiffSummary", "Explanation", "SchemaDiff", "TypeChange", "diff"]
