"""Analysis of an archive: gaps, duplicates, schema drift, lag, causation.

:func:`open_archive` returns an :class:`Archive`, the archive reader with
these checks as methods; each returns a :class:`CheckResult`.
"""

from workbench.analysis.archive import Archive, open_archive
from workbench.analysis.causation import Causation, find_causation
from workbench.analysis.drift import Drift, find_drift
from workbench.analysis.duplicates import DUPLICATE_KINDS, Duplicates, find_duplicates
from workbench.analysis.gaps import Gaps, find_gaps
from workbench.analysis.lag import CONSUMER_STATUSES, Lag, find_lag
from workbench.analysis.result import CheckResult

__all__ = [
    "CONSUMER_STATUSES",
    "DUPLICATE_KINDS",
    "Archive",
    "Causation",
    "CheckResult",
    "Drift",
    "Duplicates",
    "Gaps",
    "Lag",
    "find_causation",
    "find_drift",
    "find_duplicates",
    "find_gaps",
    "find_lag",
    "open_archive",
]
