"""The notebook-facing archive: the reader plus the checks as methods."""

from __future__ import annotations

import datetime as dt
import functools
import html
import os
from collections.abc import Callable, Collection, Sequence

import polars as pl
import pyarrow.parquet as pq

from workbench._text import plural
from workbench.analysis.causation import Causation, find_causation
from workbench.analysis.drift import Drift, find_drift
from workbench.analysis.duplicates import Duplicates, find_duplicates
from workbench.analysis.gaps import Gaps, find_gaps
from workbench.analysis.lag import LATE_AFTER, STEP_BACK, Lag, find_lag
from workbench.analysis.result import CheckResult
from workbench.archive import ArchiveReader
from workbench.errors import ArchiveError

__all__ = ["Archive", "open_archive"]


class Archive(ArchiveReader):
    """An opened archive: SQL over ``events``, Polars frames, and the checks.

    Each check is one or a few DuckDB queries over ``events`` and returns a
    small result object (``.df()``, ``.tables()``, ``.found``, ``.chart()``).

    >>> import tempfile, pyarrow as pa
    >>> from workbench.archive import ArchiveWriter
    >>> root = tempfile.mkdtemp()
    >>> _ = ArchiveWriter(root, "s").append(pa.table({"global_position": [1, 2, 4],
    ...     "recorded_at": [0, 1, 2], "event_type": ["A", "B", "A"]}))
    >>> archive = open_archive(root)
    >>> len(archive), archive.sources
    (3, ['s'])
    >>> archive.gaps().found, archive.duplicates().found, archive.schema_drift().found
    (1, 0, 0)
    """

    def overview(self) -> pl.DataFrame:
        """Per source: events, first and last position and recording time, event types, files.

        >>> import tempfile, pyarrow as pa
        >>> from workbench.archive import ArchiveWriter
        >>> root = tempfile.mkdtemp()
        >>> _ = ArchiveWriter(root, "s").append(pa.table({"global_position": [1, 2, 5],
        ...     "recorded_at": [0, 1, 2], "event_type": ["A", "B", "A"]}))
        >>> open_archive(root).overview().select("source", "events", "first_position",
        ...     "last_position", "event_types", "files").rows()
        [('s', 3, 1, 5, 2, 1)]
        """
        self.refresh_if_stale()
        files = (
            pl.DataFrame({"source": [f.source for f in self.files]}, schema={"source": pl.String})
            .group_by("source")
            .len("files")
        )
        return (
            self.sql(
                "select source, count(*) as events, min(global_position) as first_position, "
                "max(global_position) as last_position, min(recorded_at) as first_recorded_at, "
                "max(recorded_at) as last_recorded_at, "
                "count(distinct event_type) as event_types from events group by source"
            )
            .pl()
            .join(files.with_columns(pl.col("files").cast(pl.Int64)), on="source", how="left")
            .sort("source")
        )

    def df(self) -> pl.DataFrame:
        """All events as a Polars DataFrame (as :meth:`to_polars`)."""
        return self.to_polars()

    def head(self, n: int = 5) -> pl.DataFrame:
        """The first ``n`` events, by source and position, read from the first files only."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ArchiveError(f"head(n): n is a number of events, 0 or more, not {n!r}")
        self.refresh_if_stale()
        # The files holding the first n events bound the query: Parquet statistics
        # let DuckDB skip the rest instead of sorting the archive.
        rows, last = 0, None
        for data_file in sorted(self.files, key=lambda f: (f.source, f.first)):
            if rows >= n:
                break
            rows += pq.ParquetFile(data_file.path).metadata.num_rows
            last = data_file
        bound = (
            "false" if last is None else "source < $s or (source = $s and global_position <= $p)"
        )
        params = {} if last is None else {"s": last.source, "p": last.last}
        return self.sql(
            f"select * from events where {bound} order by source, global_position limit {n}",
            params,
        ).pl()

    def _repr_html_(self) -> str:
        # From file names and Parquet footers: a notebook shows this on every display.
        by_source: dict[str, list[int]] = {}
        for f in self.files:
            seen = by_source.setdefault(f.source, [0, 0, f.first, f.last])
            seen[0] += 1
            seen[1] += pq.ParquetFile(f.path).metadata.num_rows
            seen[2], seen[3] = min(seen[2], f.first), max(seen[3], f.last)
        rows = "".join(
            f"<tr><td>{html.escape(source)}</td><td>{events:,}</td><td>{first}</td>"
            f"<td>{last}</td><td>{files:,}</td></tr>"
            for source, (files, events, first, last) in sorted(by_source.items())
        )
        total = sum(v[1] for v in by_source.values())
        return (
            f"<p><b>archive</b> {html.escape(str(self.root))}: {plural(total, 'event')} in "
            f"{plural(len(self.files), 'file')} (<code>.overview()</code> for time spans and "
            "types)</p>"
            "<table><tr><th>source</th><th>events</th><th>first position</th>"
            f"<th>last position</th><th>files</th></tr>{rows}</table>"
        )

    def gaps(self, *, accept: str | Collection[str] = ()) -> Gaps:
        """Missing positions per source and per stream, with the reason where known;
        ``accept`` names reasons that are expected, not faults (``("deleted",
        "retention")`` for a KV bucket, or a stream with message TTLs or rollups)."""
        return find_gaps(self, accept=accept)

    def duplicates(self, *, window: dt.timedelta = dt.timedelta(seconds=5)) -> Duplicates:
        """Events archived more than once: same id, redelivered, or same content within ``window``."""
        return find_duplicates(self, window=window)

    def schema_drift(self, *, tolerance: float = 0.05) -> Drift:
        """Fields per event type and version, changes between versions, events off their version."""
        return find_drift(self, tolerance=tolerance)

    def lag(
        self,
        *,
        window: int = 10,
        late_after: dt.timedelta = LATE_AFTER,
        step_back: dt.timedelta = STEP_BACK,
    ) -> Lag:
        """Recording lag over time, late events, recorded_at stepping back (a writer's clock
        or time zone off), and, from lag samples, consumer backlog and status."""
        return find_lag(self, window=window, late_after=late_after, step_back=step_back)

    def causation(
        self, correlation_id: str | None = None, *, external: str | Sequence[str] = ()
    ) -> Causation:
        """The causation graph (of one correlation, or all), with orphans and cycles.

        ``external``: glob patterns (``"cmd-*"``) of causes outside the event store.
        """
        return find_causation(self, correlation_id, external=external)

    def checks(
        self,
        correlation_id: str | None = None,
        *,
        external_causes: str | Sequence[str] = (),
        accept_gaps: str | Collection[str] = (),
    ) -> dict[str, Callable[[], CheckResult]]:
        """Every check with its defaults, by the name ``--fail-on`` uses, not yet run.

        >>> import tempfile, pyarrow as pa
        >>> from workbench.archive import ArchiveWriter
        >>> root = tempfile.mkdtemp()
        >>> _ = ArchiveWriter(root, "s").append(pa.table({"global_position": [1],
        ...     "recorded_at": [0]}))
        >>> list(open_archive(root).checks())
        ['gaps', 'duplicates', 'drift', 'lag', 'causation']
        """
        runs: dict[str, Callable[[], CheckResult]] = {
            "gaps": lambda: self.gaps(accept=accept_gaps),
            "duplicates": self.duplicates,
            "drift": self.schema_drift,
            "lag": self.lag,
            "causation": lambda: self.causation(correlation_id, external=external_causes),
        }
        # An archiver that follows a source merges its files while a check reads them.
        return {name: functools.partial(self.stable, run) for name, run in runs.items()}


def open_archive(path: str | os.PathLike[str]) -> Archive:
    """Open the archive at ``path`` (a directory written by the archivers).

    A directory that holds no archive is refused rather than read as an
    empty one, whose checks would all come back clean; when an archive lies
    below it (``demo-out/archive``), the error names it.

    >>> import tempfile
    >>> open_archive(tempfile.mkdtemp())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    workbench.errors.ArchiveError: no archive at ... (no source=*/ directory of Parquet files...)
    """
    archive = Archive(path)
    archive.require_archive()
    return archive
