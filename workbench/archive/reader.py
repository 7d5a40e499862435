"""Reading an archive: the ``events`` view in DuckDB, Polars frames, Arrow.

>>> import tempfile, pyarrow as pa
>>> root = tempfile.mkdtemp()
>>> _ = ArchiveWriter(root, "demo").append(
...     pa.table({"global_position": [1, 2, 3], "recorded_at": [0, 1, 2],
...               "event_type": ["A", "B", "A"]}))
>>> reader = ArchiveReader(root)
>>> reader.sql("select event_type, count(*) n from events group by 1 order by 1").fetchall()
[('A', 2), ('B', 1)]
>>> reader.scan().select("global_position").collect()["global_position"].to_list()
[1, 2, 3]
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import duckdb
import polars as pl
import pyarrow as pa

from workbench import _duckdb, envelope
from workbench._sql import ident, path_list
from workbench.archive._layout import (
    DataFile,
    refuse_foreign,
    scan_data_files,
    side_table_files,
    side_tables,
)
from workbench.archive.records import SIDE_TABLE_SCHEMAS
from workbench.archive.writer import ArchiveWriter  # noqa: F401  (used in the doctest)
from workbench.errors import ArchiveError, ArgumentError

T = TypeVar("T")

__all__ = ["ArchiveReader"]


class ArchiveReader:
    """Read-only view of an archive of one or many sources.

    ``events`` is a DuckDB view over every data file (each position of each
    source once), in the envelope's columns. Side tables written by the
    archivers (``gap_records``, lag samples) are views of their own name.
    The file list is taken when the reader is opened; call :meth:`refresh`
    to see files archived since. Files a following archiver merged away
    are renamed; a reader that finds them gone re-lists by itself at its next
    query or check (a relation or LazyFrame taken before names the old files:
    run it again).
    """

    def __init__(
        self, root: str | os.PathLike[str], *, connection: duckdb.DuckDBPyConnection | None = None
    ) -> None:
        if not isinstance(root, str | os.PathLike):
            raise ArgumentError(f"an archive is a directory's path, not {root!r}")
        self.root = Path(root)
        if not self.root.exists():
            raise ArchiveError(f"no archive at {self.root}")
        if not self.root.is_dir():
            raise ArchiveError(f"{self.root} is not a directory")
        self.con = connection if connection is not None else _duckdb.connect()
        self.files: list[DataFile] = []
        self.refresh()

    def refresh(self) -> None:
        """Re-list the archive's files and redefine the views."""
        try:
            self._refresh()
        except duckdb.Error as exc:
            # A file that is not Parquet (or is damaged) shows here first.
            raise ArchiveError(
                f"cannot read the archive at {self.root}: {_duckdb.error_line(exc)}"
            ) from None

    def written_to(self) -> bool:
        """Whether an archiver has written here: a source's directory or a side table."""
        return any(self.root.glob("source=*")) or bool(side_tables(self.root))

    def require_archive(self) -> None:
        """Raise :class:`ArchiveError` unless an archiver has written here: a directory that
        holds no archive would read as an empty one whose checks all come back clean.
        When an archive lies below it (``demo-out/archive``), the error names it."""
        if self.files or self.written_to():
            return
        below = sorted(
            p.parent
            for pattern in ("*/source=*", "*/*/source=*")
            for p in self.root.glob(pattern)
            if p.is_dir()
        )
        hint = (
            f": the archive is {below[0]}"
            if below
            else " (no source=*/ directory of Parquet files: archive a store into it first)"
        )
        raise ArchiveError(f"no archive at {self.root}{hint}")

    def require_events(self) -> None:
        """Raise :class:`ArchiveError` unless the archive holds events, or gaps it recorded:
        a stream whose every message expired before the first run holds no event, and its
        loss is what a check must show."""
        if not self.files and not side_table_files(self.root, "gap_records"):
            raise ArchiveError(
                f"no archived events under {self.root} (expected source=*/date=*/*.parquet)"
            )

    def _refresh(self) -> None:
        self.files = scan_data_files(self.root)
        for data_file in self.files:
            refuse_foreign(data_file.readable)
        self._define_events()
        present = set()
        for table in side_tables(self.root):
            paths = side_table_files(self.root, table)
            if paths:
                present.add(table)
                self.con.execute(
                    f"create or replace view {ident(table)} as "
                    f"select * from read_parquet({path_list(paths)}, union_by_name = true, hive_partitioning = false)"
                )
        # The side tables every archive may have are always there, empty until written:
        # `select * from gap_records` on an archive without gaps is no error.
        for table, schema in SIDE_TABLE_SCHEMAS.items():
            if table not in present:
                self.con.register(f"_wb_empty_{table}", schema.empty_table())
                self.con.execute(
                    f"create or replace view {ident(table)} as select * from _wb_empty_{table}"
                )

    def _define_events(self) -> None:
        columns = ", ".join(ident(c) for c in envelope.COLUMNS)
        if self.files:
            paths = [f.path for f in self.files]
            self.con.execute(
                f"create or replace view events as select {columns} from "
                f"read_parquet({path_list(paths)}, union_by_name = true, hive_partitioning = false)"
            )
        else:
            self.con.register("_wb_empty_events", envelope.empty())
            self.con.execute(
                f"create or replace view events as select {columns} from _wb_empty_events"
            )

    @property
    def sources(self) -> list[str]:
        """Names of the sources in the archive."""
        return sorted({f.source for f in self.files})

    def last_position(self, source: str) -> int | None:
        """Highest archived position of ``source`` (from file names, no data read)."""
        return max((f.last for f in self.files if f.source == source), default=None)

    def sql(self, query: str, params: object = None, **frames: object) -> duckdb.DuckDBPyRelation:
        """Run DuckDB SQL with the ``events`` view; ``.pl()``, ``.arrow()``, ``.fetchall()`` on the result.

        ``frames`` (Polars, Arrow or pandas) are tables of their keyword's name for the
        query, and stay so for later queries on this archive: DuckDB's replacement scan
        sees only the caller's variables in its own default connection.

        >>> import tempfile, polars as pl
        >>> from workbench.archive import ArchiveWriter
        >>> root = tempfile.mkdtemp()
        >>> _ = ArchiveWriter(root, "s").append(pa.table({
        ...     "global_position": [1, 2], "recorded_at": [0, 1], "event_type": ["A", "B"]}))
        >>> labels = pl.DataFrame({"event_type": ["A"], "label": ["first"]})
        >>> ArchiveReader(root).sql("select global_position, label from events "
        ...                         "join labels using (event_type)", labels=labels).fetchall()
        [(1, 'first')]
        """
        for name, frame in frames.items():
            if name == "events" or name in SIDE_TABLE_SCHEMAS:
                raise ArchiveError(f"{name}: the archive's own view has that name; use another")
            self.con.register(name, frame)
        try:
            return self.con.sql(query, params=params)
        except duckdb.Error as exc:
            if self.refresh_if_stale():
                return self.sql(query, params)
            raise ArchiveError(f"query failed: {_duckdb.error_line(exc)}") from None

    def refresh_if_stale(self) -> bool:
        """Re-list the archive when files it listed were merged away; True if it did.

        A following archiver merges its small files as they gather; a reader
        opened before (a notebook) re-lists, seeing newer events too, rather
        than reading retired files. Queries and checks call this first.
        """
        if all(f.path.exists() for f in self.files):
            return False
        self.refresh()
        return True

    def stable(self, run: Callable[[], T]) -> T:
        """``run()`` (queries of this archive), run again after a re-listing when a merge
        retired a file it was reading: an archiver following a source merges its small
        files as it goes, between a query's planning and its reading."""
        for attempt in range(3):
            try:
                return run()
            except (duckdb.IOException, ArchiveError) as exc:
                gone = any(
                    said in str(exc)
                    for said in ("Cannot open file", "No files found", "No such file")
                )
                if attempt == 2 or not gone or not self.refresh_if_stale():
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def scan(self) -> pl.LazyFrame:
        """The events as a Polars LazyFrame (envelope columns, lazily read)."""
        self.refresh_if_stale()
        if not self.files:
            return pl.from_arrow(envelope.empty()).lazy()  # type: ignore[union-attr]
        frame = pl.scan_parquet([str(f.path) for f in self.files], hive_partitioning=False)
        return frame.select(list(envelope.COLUMNS))

    def to_polars(self) -> pl.DataFrame:
        """All events as a Polars DataFrame, ordered by source and position."""
        return self.scan().sort("source", "global_position").collect()

    def arrow(self) -> pa.Table:
        """All events as an Arrow table, ordered by source and position."""
        table = self.sql("select * from events order by source, global_position").to_arrow_table()
        return table.cast(envelope.SCHEMA)

    def __len__(self) -> int:
        return int(self.sql("select count(*) from events").fetchall()[0][0])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, sources={self.sources}, files={len(self.files)})"
