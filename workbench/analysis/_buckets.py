"""Time buckets for series over an archive: few enough points for a chart.

>>> bucket_width(0.0, 3600.0)
'30 seconds'
>>> bucket_width(0.0, 0.0)
'1 second'
"""

from __future__ import annotations

from typing import Final

__all__ = ["BUCKET_SECONDS", "MAX_BUCKETS", "bucket_width"]

#: At most this many buckets per series, so a chart's data stays small.
MAX_BUCKETS: Final[int] = 200

_WIDTHS: Final[tuple[tuple[float, str], ...]] = (
    (1, "1 second"),
    (5, "5 seconds"),
    (10, "10 seconds"),
    (30, "30 seconds"),
    (60, "1 minute"),
    (300, "5 minutes"),
    (900, "15 minutes"),
    (3600, "1 hour"),
    (6 * 3600, "6 hours"),
    (86400, "1 day"),
    (7 * 86400, "7 days"),
    (30 * 86400, "30 days"),
    (365 * 86400, "365 days"),
)

#: The round bucket widths, in seconds, smallest first (charts coarsen along the same ladder).
BUCKET_SECONDS: Final[tuple[int, ...]] = tuple(int(seconds) for seconds, _ in _WIDTHS)


def bucket_width(first_epoch: float, last_epoch: float, *, buckets: int = MAX_BUCKETS) -> str:
    """The smallest round interval (DuckDB interval text) giving at most ``buckets`` buckets."""
    span = max(last_epoch - first_epoch, 0.0)
    for seconds, text in _WIDTHS:
        if span / seconds < buckets:
            return text
    return f"{int(span / buckets / 86400) + 1} days"
