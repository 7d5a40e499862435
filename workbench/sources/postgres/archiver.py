"""Archiving a Postgres event store into the archive, never skipping a late commit.

Each poll runs one query for the positions above what is archived, in
position order, inside one REPEATABLE READ snapshot, and reads its record
batches as they arrive (ADBC: binary COPY straight into Arrow). A
:class:`~workbench.archive.WritePipeline` thread converts them to envelopes
(JSON work in SQL on the server, or in DuckDB over the Arrow batch) and
writes files of ``batch_size`` rows meanwhile. It never passes a hole in the
positions until every transaction that could fill it has ended (see
:mod:`workbench.sources.postgres._watermark`); holes that stay empty are
recorded in ``gap_records`` as ``rolled-back``. A row that turns up later in
such a range (a store that drew the position and committed after the grace)
is reported on every run, as it can no longer be archived in order.

Resuming, the archiver first checks that the store is the one archived: the
archive's last row must still be there, the same event. Another database's
table of the same name, or a table truncated or restored since, is refused
rather than spliced onto the archive.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import functools
import html
import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from workbench import _duckdb, envelope
from workbench._sql import literal
from workbench._text import as_text
from workbench.archive import (
    ArchiveReader,
    ArchiverRun,
    ArchiveWriter,
    WritePipeline,
    recorded_mappings,
)
from workbench.errors import ArchiveError, MappingError, SourceError
from workbench.progress import shows_progress
from workbench.sources.mapping import (
    FieldSpec,
    Mappings,
    instant_sql,
    mapping_options,
    parse_mappings,
)
from workbench.sources.postgres._connection import (
    connect,
    fetch_all,
    partition_root,
    quote_table,
    run,
    source_error,
    source_name,
    table_columns,
)
from workbench.sources.postgres._watermark import RUNNING_SQL, Watermark, require_primary
from workbench.sources.postgres.eventsourcing_codec import (
    DecodedStates,
    cipher_key_from_environment,
    decode_states,
)
from workbench.sources.postgres.presets import PRESETS, Query, build_query, split_position_maps
from workbench.sources.result import RunResult

__all__ = ["ArchivePostgresResult", "PostgresArchiver", "archive_postgres"]

#: Called with (rows archived so far, rows estimated in total).
Progress = Callable[[int, int], None]

#: What a settled hole in a source's positions is recorded as (``holes=``).
HOLES = ("rolled-back", "deleted")

#: How a run's summary tells each kind of hole.
_HOLES_TOLD = {
    # Sequences skip values a rolled-back insert took: normal, not lost events.
    "rolled-back": "left by rolled-back transactions, or by rows deleted before they were "
    "archived, which look the same (recorded in gap_records as rolled-back)",
    "deleted": "deleted before they were archived (holes=deleted: the store numbers its "
    "events without gaps)",
}


@dataclass(repr=False)
class ArchivePostgresResult(RunResult):
    """What an archive run did: rows, last position, gaps, row-level problems."""

    source: str
    archive: Path
    rows_archived: int = 0
    last_position: int | None = None
    gaps: list[tuple[int, int, str]] = field(default_factory=list)
    problems: dict[str, int] = field(default_factory=dict)
    files: int = 0
    waiting_at: int | None = None
    waits: int = 0  # polls that stopped at a hole an open transaction could still fill
    #: The transactions that held the hole at ``waiting_at`` open when the run ended.
    held_by: tuple[str, ...] = ()
    #: Positions of rows committed inside ranges recorded as missing: not archived.
    late: list[int] = field(default_factory=list)
    #: Identity fields (stream, event_id) the mapping leaves out: null in every row.
    unmapped: tuple[str, ...] = ()
    #: ``FIELD from COLUMN`` for mapped time columns without a time zone (read as UTC).
    naive_times: tuple[str, ...] = ()
    #: Columns of a ``generic`` table that no mapping reads: not in the archive.
    left_out: tuple[str, ...] = ()
    #: Values the position sequence hands each session at once, when above 1.
    sequence_cache: int | None = None

    def df(self) -> pl.DataFrame:
        """The gaps recorded in this run: first_missing, last_missing, reason."""
        return pl.DataFrame(
            self.gaps,
            schema={"first_missing": pl.Int64, "last_missing": pl.Int64, "reason": pl.String},
            orient="row",
        )

    @as_text
    def summary(self) -> str:
        """One line for humans."""
        last = (
            f"last position {self.last_position:,}"
            if self.last_position is not None
            else "no row archived yet"
        )
        text = (
            f"{self.source}: archived {self.rows_archived:,} rows into {self.files} file(s), {last}"
        )
        below = [(a, b) for a, b, reason in self.gaps if reason == "retention"]
        if below:
            a, b = below[0][0], below[-1][1]
            text += (
                f", position(s) {a:,}..{b:,} below the table's first row (deleted before "
                "archiving, or never used; recorded as retention)"
            )
        for hole_reason, told in _HOLES_TOLD.items():
            holes = [(a, b) for a, b, reason in self.gaps if reason == hole_reason]
            if holes:
                positions = sum(last - first + 1 for first, last in holes)
                text += f", {positions:,} position(s) in {len(holes):,} hole(s) {told}"
        if self.problems:
            text += "; row-level problems: " + ", ".join(
                f"{k}: {v}" for k, v in sorted(self.problems.items())
            )
        if self.unmapped:
            # Silent otherwise: the checks that need these fields just find nothing to check.
            lost = {
                "stream": "no per-stream gap or stream-position checks",
                "event_id": "no event_id duplicate check or causation links",
            }
            text += (
                f"; {' and '.join(self.unmapped)} not mapped, null in every row "
                f"({'; '.join(lost[n] for n in self.unmapped)}): "
                f"add {' '.join(f'--map {n}=column:NAME' for n in self.unmapped)}"
            )
        if self.left_out:
            # A soft-delete flag or a writer id is easily missed: said, not dropped silently.
            text += (
                f"; columns no --map reads, not archived: {', '.join(self.left_out)} "
                "(keep one with --map metadata=column:NAME, several through a view)"
            )
        if self.naive_times:
            # Right when the writers store UTC; a session in another TimeZone stores its own.
            text += (
                f"; {', '.join(self.naive_times)}: timestamp without time zone, read as UTC "
                "(a writer whose session TimeZone is not UTC stores local time there; "
                "archive.lag() flags recorded_at stepping back)"
            )
        if self.waiting_at is not None:
            text += f"; stopped before position {self.waiting_at}: " + (
                f"a transaction that may still commit holds it: {'; '.join(self.held_by)} "
                "(any open transaction of the database may have drawn it; the rest are "
                "archived once it ends)"
                if self.held_by
                else "a transaction that may still commit holds it, or it has not stayed "
                "empty for the settle grace yet"
            )
        if self.sequence_cache:
            # Each session draws from its own block of values: positions commit out of
            # order by far more than a transaction, past any settle grace.
            text += (
                f"; the position sequence hands out {self.sequence_cache} values per session "
                "(CACHE), so one session's events can commit long after higher positions: "
                "a hole passed before then loses them (ALTER SEQUENCE ... CACHE 1, or a long "
                "--settle-grace)"
            )
        if self.late:
            shown = ", ".join(map(str, self.late[:5])) + (", ..." if len(self.late) > 5 else "")
            text += (
                f"; LOST: {len(self.late)} event(s) committed at positions recorded as "
                f"missing ({shown}), too late to archive in order: archive into a new "
                "directory with a longer --settle-grace"
            )
        return text

    def _repr_html_(self) -> str:
        rows = [
            ("source", self.source),
            ("rows archived", f"{self.rows_archived:,}"),
            ("last position", self.last_position),
            ("files written", self.files),
            ("gaps recorded", len(self.gaps)),
        ]
        rows += [(f"problem: {k}", v) for k, v in sorted(self.problems.items())]
        if self.waiting_at is not None:
            rows.append(("waiting at position", self.waiting_at))
        if self.unmapped:
            rows.append(("not mapped (null in every row)", ", ".join(self.unmapped)))
        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
            f"<td>{html.escape(str(v))}</td></tr>"
            for k, v in rows
        )
        return f"<table><caption>archive_postgres → {html.escape(str(self.archive))}</caption>{body}</table>"


class PostgresArchiver:
    """Incremental archiver of one Postgres event table; :meth:`poll` archives what is settled.

    The archive is the checkpoint: a new archiver resumes after the highest
    archived position.
    """

    def __init__(
        self,
        dsn: str,
        out: str | os.PathLike[str],
        *,
        preset: str | None = None,
        table: str | None = None,
        mappings: Mappings = (),
        batch_size: int = 100_000,
        cipher_key: str | None = None,
        settle_grace: float | None = None,
        remap: bool = False,
        holes: str = "rolled-back",
    ) -> None:
        if holes not in HOLES:
            raise SourceError(f"holes={holes!r}: one of {', '.join(HOLES)}")
        #: What a settled hole in the positions is recorded as (see :data:`HOLES`).
        self.holes = holes
        mappings = mapping_options(mappings)
        given = preset is not None or bool(mappings)
        if given:
            if preset is None:  # --map alone: on the preset the source was archived with
                try:
                    preset = _recorded_run(out, table)[0]
                except SourceError:  # several sources, no --table: no preset to go by
                    preset = DEFAULT_PRESET
        else:
            preset, table, mappings = _recorded_run(out, table)
        if preset not in PRESETS:
            raise SourceError(f"unknown preset {preset!r}; one of {', '.join(PRESETS)}")
        if cipher_key is not None and preset != "eventsourcing":  # it would be ignored
            raise SourceError(
                f"a cipher key (--cipher-key) decrypts the eventsourcing preset's stores, not "
                f"{preset}'s"
            )
        if batch_size < 1:
            raise SourceError("batch_size must be at least 1")
        positions, rest = split_position_maps(mappings)
        specs = parse_mappings(rest)
        table = table or PRESETS[preset].default_table
        if table is None:
            raise SourceError(f"--preset {preset} needs --table SCHEMA.TABLE")
        self._con = connect(dsn)
        try:
            require_primary(self._con)
            columns = table_columns(self._con, table)
            root = partition_root(self._con, table)
            if root is not None:  # Emmett's _active/_archived leaves, Marten's archive
                raise SourceError(
                    f"{table} is a partition of {root}: the events in its other partitions "
                    f"would look like rolled-back positions, lost without a fault; archive {root}"
                )
            self._plan = functools.partial(
                build_query, preset, table, mappings=specs,
                position_column=positions.get("global_position"),
            )  # fmt: skip
            self._columns = set(columns)
            self.query: Query = self._plan(columns)
            self._legacy = _legacy_source(out, table)
            if self._legacy is not None:  # archived before a dot in its name was quoted
                self.query = dataclasses.replace(self.query, source=self._legacy)
        except BaseException:
            self.close()
            raise
        self.batch_size = batch_size
        # As the library itself reads it, whether the preset was given or recorded.
        #: The environment variable the key came from (None: given, or none).
        self._key_from: str | None = None
        if cipher_key is None and preset == "eventsourcing":
            cipher_key, self._key_from = cipher_key_from_environment(table) or (None, None)
        self.cipher_key = cipher_key
        # One run at a time per source, and one mapping per source (see ArchiverRun).
        self._claim: ArchiverRun | None = ArchiverRun(out, self.query.source, "archive_postgres")
        try:
            self._claim.__enter__()
            self._options = self._claim.settle(
                [f"preset={preset}", *mappings], given=given, remap=remap
            )
            self._remapped = remap
        except BaseException:
            self.close()
            raise
        self.writer = ArchiveWriter(out, self.query.source)
        # A mapping is judged on a source's first rows; a resumed source's were judged.
        self._new_source = self.writer.last_position is None
        # Recorded before the first file of events it maps, so a killed run leaves it.
        self.writer.before_first_write = functools.partial(self._claim.record, self._options)
        grace = PRESETS[preset].settle_grace if settle_grace is None else settle_grace
        self.watermark = Watermark(grace=dt.timedelta(seconds=grace))
        self.result = ArchivePostgresResult(
            self.query.source,
            Path(out),
            unmapped=self.query.unmapped,
            naive_times=tuple(
                f"{name} from {spec.arg}"
                for name, spec in specs.items()
                if name in ("recorded_at", "occurred_at")
                and spec.kind == "column"
                and columns.get(spec.arg) == "timestamp"
            ),
            left_out=tuple(
                c
                for c in columns
                if preset == "generic"
                and c != positions.get("global_position")
                and c not in {spec.arg for spec in specs.values() if spec.kind == "column"}
            ),
        )
        self.result.last_position = self.writer.last_position
        self._gaps_upto = _recorded_gaps_upto(Path(out), self.query.source)
        self._checked = False  # the archive's end, and its rolled-back ranges, against the store
        #: Ranges recorded as holes no row fills (rolled-back, retention), read from the
        #: archive once, then kept as this run records more: a row committing into one
        #: later is lost, and looked for every :data:`_LATE_EVERY` seconds, not only when a
        #: run starts (a --follow service would say nothing for weeks).
        self._passed: list[tuple[int, int]] | None = None
        #: This run's ranges with when they were passed: what the look every few seconds
        #: covers (a late commit comes minutes after, not days); the run's first and last
        #: looks cover all.
        self._recent: list[tuple[float, int, int]] = []
        self._late_recorded: set[int] | None = None
        self._late_checked_at = 0.0
        self._sequence: _Sequence | None = None
        #: Per path-mapped field: rows with a payload to look in, rows the path found a value in.
        self._path_counts: dict[str, tuple[int, int]] = {}
        self._duck = _duckdb.connect()
        self._pipeline = WritePipeline(depth=2, name="wb-pg-write")
        self.estimated_total = 0

    @property
    def waiting(self) -> bool:
        """True while a hole is held open by transactions that may still commit."""
        return bool(self.watermark.pending)

    def poll(self, progress: Progress | None = None) -> int:
        """Archive every settled row above the archive; return how many."""
        floor = self.writer.last_position
        settled = self.watermark.settle(self._con)
        run(self._con, "begin isolation level repeatable read read only", "starting a snapshot")
        before = self.result.rows_archived
        try:
            self._take_added_columns()
            ((top, running, prepared, _, now),) = fetch_all(
                self._con,
                f"select (select max({self.query.position}) from {self.query.table} e), r.* "
                f"from ({RUNNING_SQL}) r",
                f"reading the highest position of {self.query.source}",
            )
            if not self._checked:
                self._sequence = self._read_sequence()
                self._check_same_store(top)
                self.find_late_rows()
                self._count_unpositioned()
                self._checked = True
                if self._sequence is not None and self._sequence.cache > 1:
                    self.result.sequence_cache = self._sequence.cache
            elif time.monotonic() - self._late_checked_at >= _LATE_EVERY:
                self.find_late_rows(recent=True)
            if floor is None:
                floor = self._first_floor()
            if top is None or top <= floor:
                self.result.waiting_at = None
                return 0
            self.estimated_total = max(
                self.estimated_total, self.result.rows_archived + top - floor
            )
            waiting_at = self._read(floor, settled, progress)
            self.result.waiting_at = waiting_at
            if waiting_at is not None:
                self.result.waits += 1
                self.watermark.remember(
                    top, frozenset(running or ()) | frozenset(prepared or ()), now
                )
        finally:
            run(self._con, "commit", "ending the snapshot")
        if self.result.waiting_at is not None:
            self.result.held_by = tuple(self.watermark.holders(self._con))
        return self.result.rows_archived - before

    def _take_added_columns(self) -> None:
        """Plan the query again when the table gained columns since (one catalog read a
        poll): a following run kept the columns it started with, and a preset that keeps
        every other column in ``metadata`` (Marten's) left a new one out of the rows it
        archived. A dropped column is left to fail the query, naming it."""
        ((names,),) = fetch_all(
            self._con,
            "select array_agg(attname::text) from pg_attribute "
            "where attrelid = to_regclass($1) and attnum > 0 and not attisdropped",
            f"reading the columns of {self.query.table}",
            (self.query.table,),
        )
        if names is None or set(names) <= self._columns:
            return
        columns = table_columns(self._con, self.query.table)
        query = self._plan(columns)
        self.query = (
            query if self._legacy is None else dataclasses.replace(query, source=self._legacy)
        )
        self._columns = set(columns)

    def _first_floor(self) -> int:
        """Where a first run starts: below the first value of the position column's
        sequence (SqlStreamStore's starts at 0), else below 1, or below 0 for a table
        whose rows start at 0; negative positions are refused (file names cannot hold them)."""
        ((lowest,),) = fetch_all(
            self._con,
            f"select min({self.query.position}) from {self.query.table} e",
            f"reading the lowest position of {self.query.source}",
        )
        if lowest is not None and lowest < 0:
            raise SourceError(
                f"{self.query.source} has rows at negative positions (the lowest is {lowest}); "
                "the archive holds positions from 0 up: map global_position to a column "
                "that counts from 0 or 1"
            )
        start = None if self._sequence is None else self._sequence.start
        if start is not None and start >= 0 and (lowest is None or start <= lowest):
            return start - 1  # positions from the sequence's first below the first row: lost
        return -1 if lowest == 0 else 0

    def _read_sequence(self) -> _Sequence | None:
        """The sequence the position column takes its values from (a serial or identity
        column's, or its default's nextval), if it is a table's column."""
        column = re.fullmatch(r'e\."((?:[^"]|"")+)"', self.query.position)
        if column is None:
            return None
        name = column[1].replace('""', '"')
        found = fetch_all(
            self._con,
            "with col as (select a.attrelid as rel, a.attnum as num from pg_attribute a "
            f"where a.attrelid = to_regclass({literal(self.query.table)}) "
            f"and a.attname = {literal(name)}), "
            "owned as (select d.objid from pg_depend d, col where d.classid = "
            "'pg_class'::regclass and d.refobjid = col.rel and d.refobjsubid = col.num "
            "and d.deptype in ('a', 'i')) "
            "select s.start_value, s.cache_size, c.oid::regclass::text, c.oid in "
            "(select objid from owned), has_sequence_privilege(c.oid, 'SELECT') "
            "from pg_sequences s "
            "join pg_namespace n on n.nspname = s.schemaname "
            "join pg_class c on c.relnamespace = n.oid and c.relname = s.sequencename "
            "where c.oid in (select objid from owned union select d.refobjid from pg_depend d "
            "join pg_attrdef ad on ad.oid = d.objid, col where d.classid = "
            "'pg_attrdef'::regclass and d.refclassid = 'pg_class'::regclass "
            "and ad.adrelid = col.rel and ad.adnum = col.num) order by s.start_value limit 1",
            f"reading the position sequence of {self.query.source}",
        )
        if not found:
            return None
        start, cache, sequence, owned, readable = found[0]
        drawn: int | None = None  # not readable (a role without the privilege): not known
        if readable:  # the last value drawn; none since a restart or setval(..., false)
            ((last, called),) = fetch_all(
                self._con,
                f"select last_value, is_called from {sequence}",
                f"reading the sequence {sequence}",
            )
            drawn = int(last) if called else int(last) - 1
        return _Sequence(int(start), int(cache), drawn, bool(owned))

    def _count_unpositioned(self) -> None:
        """Rows without a position cannot be placed in the order: counted, not archived."""
        ((n,),) = fetch_all(
            self._con,
            f"select count(*) from {self.query.table} e where {self.query.position} is null",
            f"counting rows of {self.query.source} without a position",
        )
        self._count("no position (not archived)", n)

    def _read(self, floor: int, settled: int, progress: Progress | None) -> int | None:
        """Stream rows above ``floor``; stop at the first unsettled hole and return its position.

        One query per poll, read batch by batch while the write pipeline
        converts and writes the batches before; files hold ``batch_size`` rows.
        """
        expected = floor + 1
        held: list[pa.RecordBatch] = []
        waiting_at: int | None = None
        # Nothing archived yet: positions below the table's first row were deleted
        # (a pruned table) or never held a row, which cannot be told apart here;
        # recorded as retention, not as harmless rollbacks.
        leading = self.writer.last_position is None
        with self._stream(floor) as batches:
            for batch in batches:
                if batch.num_rows == 0:
                    continue
                positions = batch.column("global_position").to_numpy()
                repeated = _repeated(positions, expected)
                if repeated is not None:  # before the rows are handed to the writer
                    raise SourceError(
                        f"position {repeated} appears more than once in {self.query.source}: "
                        "global_position must be unique; map it to the primary key or an "
                        "identity column"
                    )
                cut, waiting_at, gaps = _holes(positions, expected, settled)
                if leading and gaps and gaps[0][0] == expected:
                    below, gaps = gaps[0], gaps[1:]
                    self._pipeline.submit(
                        functools.partial(self._record_gaps, [below], "retention", _BELOW_FIRST)
                    )
                leading = False
                if gaps:  # recorded before the rows after them are written
                    self._pipeline.submit(functools.partial(self._record_gaps, gaps))
                if cut:
                    held.append(batch.slice(0, cut))
                    held = self._submit_files(held, whole_only=True)
                if progress is not None:
                    progress(self.result.rows_archived, self.estimated_total)
                if waiting_at is not None:
                    break
                expected = int(positions[-1]) + 1
        self._submit_files(held, whole_only=False)
        self._pipeline.flush()
        if waiting_at is None:  # read up to the top: the holes below it were never rows
            self.estimated_total = self.result.rows_archived
        if progress is not None:
            progress(self.result.rows_archived, self.estimated_total)
        return waiting_at

    def _submit_files(
        self, held: list[pa.RecordBatch], *, whole_only: bool
    ) -> list[pa.RecordBatch]:
        """Hand ``batch_size`` rows at a time to the writer; return what is left over."""
        rows = sum(b.num_rows for b in held)
        if not rows or (whole_only and rows < self.batch_size):
            return held
        table = pa.Table.from_batches(held)
        start = 0
        while rows - start >= self.batch_size or (not whole_only and start < rows):
            piece = table.slice(start, self.batch_size)
            self._pipeline.submit(functools.partial(self._append, piece))
            start += piece.num_rows
        return table.slice(start).to_batches()

    @contextlib.contextmanager
    def _stream(self, after: int) -> Iterator[Iterator[pa.RecordBatch]]:
        """Record batches of the rows above ``after``; the query is cancelled if left early."""
        cur = self._con.cursor()
        reader: pa.RecordBatchReader | None = None
        done = False

        def batches() -> Iterator[pa.RecordBatch]:
            nonlocal done
            assert reader is not None
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    done = True
                    return
                except Exception as exc:
                    raise source_error(f"reading {self.query.source}", exc) from None
                yield batch

        try:
            try:
                cur.execute(self.query.select(after))
                reader = cur.fetch_record_batch()
            except Exception as exc:
                raise source_error(f"reading {self.query.source}", exc) from None
            yield batches()
        finally:
            if reader is not None and not done:
                with contextlib.suppress(Exception):  # stop the server sending the rest
                    cur.adbc_cancel()
            with contextlib.suppress(Exception):
                if reader is not None:
                    reader.close()
            cur.close()

    def _record_gaps(
        self, gaps: list[tuple[int, int]], reason: str | None = None, detail: str = ""
    ) -> None:
        reason = reason or self.holes
        # One file for all of a batch's holes: a store that rolls back often
        # (Message DB on every version conflict) has thousands.
        records: list[tuple[int, int, str]] = []
        for first, last in gaps:
            first = max(first, self._gaps_upto + 1)
            if first <= last:
                records.append((first, last, reason))
                self._gaps_upto = last
                if reason in _PASSED:
                    self._recent.append((time.monotonic(), first, last))
                    if self._passed is not None:
                        self._passed.append((first, last))
        self.writer.record_gaps(
            records, detail or (_ROLLED_BACK if reason == "rolled-back" else _DELETED)
        )
        self.result.gaps.extend(records)

    def _check_same_store(self, top: int | None) -> None:
        """Refuse a store that is not the one archived (see the module docstring).

        The newest archived row the store still has is compared: rows deleted
        from the store since they were archived (or hidden by a view that
        filters archived streams) are no other store, and the archive keeps them.
        """
        archived = self.writer.last_position
        if archived is None:
            return
        other = (
            f"{self.query.source} here is not the store {self.writer.root} was archived from "
            "(another database, the table truncated or restored since, or another --map for "
            "its ids or times); archive it into a new directory"
        )
        row = self.query.columns  # the envelope columns straight from the table
        # A row is recognised by its ids; a mapping without any (event_id, stream) by its
        # recording time (not its type, which a migration may rename): a table truncated
        # with its sequence restarted and filled again was spliced onto the archive when
        # only its end was compared. Its rows were recorded after every archived one; a
        # time filled in or corrected since is not (no refusal of the store archived).
        # Not when remapping: the time may come from elsewhere.
        compared = [(c, f"({row[c]})::text", f"{c}::VARCHAR") for c in _IDENTITY if c in row]
        if not compared:
            if (
                not self._remapped
                and "_no_recorded_at" in row
                and "recorded_at" not in self.query.instant_fields
            ):
                compared.append(
                    (
                        "recorded_at",
                        f"case when {row['_no_recorded_at']} then null else "
                        f"(extract(epoch from ({row['recorded_at']})) * 1000000)::bigint::text end",
                        "(select max(epoch_us(recorded_at)) from events where source = $source)"
                        "::VARCHAR",
                    )
                )
            if top is None or top < archived:
                if top is None and self._pruned(archived):
                    self._count_gone(after=None)
                    return
                raise SourceError(f"{other}: it ends at position {top}, the archive at {archived}")
        if not compared:  # nothing to recognise a row by: only the end could tell
            return
        names = [name for name, _, _ in compared]
        found = fetch_all(
            self._con,
            f"select {self.query.position}, {', '.join(pg for _, pg, _ in compared)} "
            f"from {self.query.table} e {self.query.joins} "
            f"where {self.query.position} <= {int(archived)} "
            f"order by {self.query.position} desc limit 1",
            f"reading the newest archived row of {self.query.source}",
        )
        if not found:
            if not self._pruned(archived):
                raise SourceError(f"{other}: it has no row at or below position {archived}")
            self._count_gone(after=None)
            return
        at, *got = found[0]
        kept = (
            ArchiveReader(self.writer.root)
            .sql(
                f"select {', '.join(duck for _, _, duck in compared)} from events "
                "where source = $source and global_position = $at",
                params={"source": self.writer.source, "at": at},
            )
            .fetchall()
        )
        if not kept:  # a position the archive recorded as missing: nothing to compare
            return
        # Only values both sides have: a mapping added since (a null archived, a value
        # now) is a change of mapping, not another store.
        for name, now, then in zip(names, got, kept[0], strict=True):
            if name == "recorded_at":  # the newest archived time, in microseconds
                if now is not None and then is not None and int(now) > int(then):
                    recorded, newest = (
                        _EPOCH + dt.timedelta(microseconds=int(v)) for v in (now, then)
                    )
                    raise SourceError(
                        f"{other}: its row at position {at} was recorded at {recorded}, after "
                        f"every archived event (the newest at {newest}): written since"
                    )
            elif now is not None and then is not None and _id_text(now) != _id_text(then):
                raise SourceError(
                    f"{other}: its row at position {at} has {name} {now!r}, the archive {then!r}"
                )
        if at < archived:
            self._count_gone(after=at)

    def _pruned(self, archived: int) -> bool:
        """Whether a store with no row up to ``archived`` had them deleted (archived, then
        pruned: why one archives): the position sequence it owns went on past them. One
        truncated and restarted, recreated (a sequence of its own starts again), or with
        no sequence of its own to tell (Marten's outlives a table), is not taken for it."""
        seq = self._sequence
        return seq is not None and seq.owned and seq.last is not None and seq.last >= archived

    def _count_gone(self, after: int | None) -> None:
        """Count the archived rows above ``after`` (all: None) as gone from the store."""
        ((gone,),) = (
            ArchiveReader(self.writer.root)
            .sql(
                "select count(*) from events where source = ? and global_position > ?",
                params=[self.writer.source, -1 if after is None else after],
            )
            .fetchall()
        )
        self._count("archived, no longer in the store (deleted, or hidden by a view)", gone)

    def find_late_rows(self, *, recent: bool = False) -> None:
        """Rows that committed inside ranges recorded as missing: lost to the archive,
        added to ``result.late`` and recorded once as ``committed-late``. ``recent``: in
        the ranges this run passed in the last :data:`_LATE_WINDOW` seconds only (50,000
        ranges of a long history took 0.25 s a look)."""
        now = self._late_checked_at = time.monotonic()
        if self._gaps_upto < 0:  # no gap recorded: no row can have come late into one
            return
        if recent:
            self._recent = [r for r in self._recent if now - r[0] <= _LATE_WINDOW]
            self._look_for_late([(a, b) for _, a, b in self._recent])
            return
        if self._passed is None:
            self._passed = [
                (int(a), int(b))
                for a, b in ArchiveReader(self.writer.root)
                .sql(
                    "select first_missing, last_missing from gap_records "
                    f"where source = ? and reason in {_PASSED} order by 1",
                    params=[self.writer.source],
                )
                .fetchall()
            ]
        self._look_for_late(list(self._passed))  # a copy: the write thread may add to it

    def _look_for_late(self, ranges: list[tuple[int, int]]) -> None:
        if not ranges:
            return
        firsts = ",".join(str(int(a)) for a, _ in ranges)
        lasts = ",".join(str(int(b)) for _, b in ranges)
        pos = self.query.position
        found = fetch_all(
            self._con,
            f"select {pos} from {self.query.table} e "
            f"join unnest(array[{firsts}]::bigint[], array[{lasts}]::bigint[]) r(a, b) "
            f"on {pos} between r.a and r.b where {pos} <= {int(self._gaps_upto)} "
            f"and not coalesce({self._store_own_row()}, false) order by 1",
            f"looking for late rows of {self.query.source}",
        )
        late = {int(r[0]) for r in found}
        self.result.late = sorted(late | set(self.result.late))
        self._record_late(sorted(late))

    def _store_own_row(self) -> str:
        """SQL over a row ``e``: whether it is the store's own (its event type starts with
        ``$``), as the filler rows Marten and Eventuous write into a failed append's
        positions, at once or long after: one that fills a passed hole loses no event."""
        event_type = self.query.columns.get("event_type")
        if event_type is None or self.query.joins:
            return "false"
        return f"starts_with(({event_type})::text, {literal(envelope.SOURCE_OWN_PREFIX)})"

    def _record_late(self, late: list[int]) -> None:
        """Record late events in gap_records once (reason ``committed-late``, no harmless
        one), so that the gaps check fails on them as this run does."""
        if not late:
            return
        if self._late_recorded is None:
            self._late_recorded = {
                int(p)
                for (p,) in ArchiveReader(self.writer.root)
                .sql(
                    "select unnest(range(first_missing, last_missing + 1)) from gap_records "
                    "where source = ? and reason = 'committed-late'",
                    params=[self.writer.source],
                )
                .fetchall()
            }
        new = [p for p in late if p not in self._late_recorded]
        if new:
            ranges = [(a, b, "committed-late") for a, b in _runs(new)]
            self.writer.record_gaps(ranges, _COMMITTED_LATE)
            self._late_recorded.update(new)

    def _append(self, chunk: pa.Table) -> None:
        table = self._to_envelopes(chunk)
        files = self.writer.append(table)
        self.result.files += len(files)
        self.result.rows_archived += table.num_rows
        self.result.last_position = int(table.column("global_position")[-1].as_py())

    def _count(self, problem: str, n: int) -> None:
        if n:
            self.result.problems[problem] = self.result.problems.get(problem, 0) + int(n)

    def _decoded(self, states: pa.Array) -> DecodedStates:
        """An eventsourcing store's states decoded; with a key from the environment that
        does not fit a store whose states are plain (another app's CIPHER_KEY), without
        it, and said so."""
        try:
            return decode_states(states, cipher_key=self.cipher_key)
        except SourceError as exc:
            if self._key_from is None:
                raise
            try:
                decoded = decode_states(states, cipher_key=None)
            except SourceError:
                raise SourceError(f"{exc} (the key is {self._key_from}'s)") from None
        self._count(
            f"decoded without {self._key_from} from the environment, which does not fit: "
            "the states are not encrypted",
            len(states) - states.null_count,
        )
        return decoded

    def _to_envelopes(self, chunk: pa.Table) -> pa.Table:
        """Helper columns → fields and problem counts; DuckDB for JSON work over the batch."""
        q = self.query
        exprs: dict[str, str] = {}
        if q.eventsourcing_state:
            decoded = self._decoded(chunk.column("_state").combine_chunks())
            self._count("state not decodable (payload kept)", decoded.undecodable)
            chunk = chunk.drop_columns(["_state"]).append_column("data", decoded.data)
            chunk = chunk.append_column("payload", decoded.payload)
            exprs["occurred_at"] = (
                "try_cast(json_extract_string(data, '$.timestamp') as timestamptz)"
            )
            # The library writes class_version into a state only above version 1.
            exprs["schema_version"] = (
                "try_cast(json_extract_string(data, '$.class_version') as integer)"
            )
        for name in q.validate_json:
            chunk = self._validate_json(chunk, name)
        for name, spec in q.path_fields.items():
            raw = _path_expr(spec)
            exprs[name] = _typed_path(name, raw)
            # A path that finds nothing in a payload that is there: misspelt, or a key
            # holding dots not quoted; a field silently null in every row otherwise.
            if name != "schema_version":  # none is version 1
                # null: no payload to look in; true: the path found nothing in it.
                exprs[f"_nopath_{name}"] = (
                    f"case when {_path_column(spec)} is not null then {raw} is null end"
                )
            if name in _INT_FIELDS:
                exprs[f"_bad_{name}"] = f"case when {exprs[name]} is null then {raw} end"
        for name in q.instant_fields:  # a text or epoch-number column's text
            exprs[name] = _finite(instant_sql(f'"{name}"'))
            exprs[f"_untimed_{name}"] = f'("{name}" is not null and {exprs[name]} is null)'
        raw = chunk
        if exprs:
            chunk = self._duck_select(chunk, exprs)
        if self._new_source and self.result.rows_archived == 0:
            _refuse_timeless(raw, chunk, q.instant_fields)
        if "recorded_at" in q.instant_fields:  # missing or no time: counted by its flag
            index = chunk.column_names.index("recorded_at")
            recorded = _or_archive_time(chunk.column(index))
            chunk = chunk.set_column(index, "recorded_at", recorded)
        if q.eventsourcing_state:
            # The library keeps no store time; the event's own timestamp is the closest.
            missing = chunk.column("occurred_at").null_count
            self._count("recorded_at missing (archive time used)", missing)
            recorded = _or_archive_time(chunk.column("occurred_at"))
            chunk = chunk.append_column("recorded_at", recorded)
        bad_version = None
        unreadable: dict[str, pa.ChunkedArray] = {}  # metadata key → text, null where fine
        for name in [n for n in chunk.column_names if n.startswith("_")]:
            flag = chunk.column(name)
            if name == "_no_recorded_at":
                problem = "recorded_at missing (archive time used)"
            elif name.startswith("_nopath_"):
                self._path_found(name.removeprefix("_nopath_"), flag)
                chunk = chunk.drop_columns([name])
                continue
            elif name.startswith("_untimed_"):
                field_name = name.removeprefix("_untimed_")
                used = "archive time used" if field_name == "recorded_at" else "null"
                problem = f"{field_name} not a time ({used})"
            else:  # _bad_<field>: the text that is no integer, kept in metadata
                field_name = name.removeprefix("_bad_")
                problem = (
                    f"{field_name} not an integer (null; its text in metadata {field_name}:text)"
                )
                if flag.null_count < len(flag):  # most batches have none: no work
                    unreadable[f"{field_name}:text"] = flag
                flag = pc.is_valid(flag)
                if name == "_bad_schema_version":
                    bad_version = flag
            self._count(problem, pc.sum(flag.cast(pa.int64())).as_py() or 0)
            chunk = chunk.drop_columns([name])
        if unreadable:
            chunk = _keep_in_metadata(chunk, unreadable)
        for name in q.expected:
            if name in chunk.column_names:
                nulls = pc.is_null(chunk.column(name))
                if name == "data" and "payload" in chunk.column_names:
                    # Data that was not JSON is null now, its text kept as payload:
                    # counted once, as "data not JSON", not again as null.
                    nulls = pc.and_(nulls, pc.is_null(chunk.column("payload")))
                self._count(f"null {name}", pc.sum(nulls.cast(pa.int64())).as_py() or 0)
        return _versioned(chunk, bad_version)

    def _path_found(self, field_name: str, missed: pa.ChunkedArray) -> None:
        """Count the rows whose payload a mapped path found nothing in; a path that has
        found nothing in any row of the run is a problem (misspelt, or a key holding dots
        left unquoted), one that merely finds nothing in some rows is not (a chain's first
        event has no causation id)."""
        tried, hits = self._path_counts.get(field_name, (0, 0))
        looked = len(missed) - missed.null_count
        misses = pc.sum(missed.cast(pa.int64())).as_py() or 0
        tried, hits = tried + looked, hits + looked - misses
        self._path_counts[field_name] = (tried, hits)
        spec = self.query.path_fields[field_name]
        quote = ' (a key holding dots goes in double quotes: "a.b")' if len(spec.path) > 1 else ""
        problem = f"{field_name}: {spec} found no value in any row (null){quote}"
        if hits == 0 and tried:
            self.result.problems[problem] = tried
        else:
            self.result.problems.pop(problem, None)

    def _validate_json(self, chunk: pa.Table, name: str) -> pa.Table:
        column = chunk.column(name).combine_chunks()
        raw = column if pa.types.is_binary(column.type) else None
        if raw is not None:
            try:
                column = raw.cast(pa.string())
            except pa.ArrowInvalid:
                column = pa.array([_utf8_or_none(v) for v in raw.to_pylist()], pa.string())
        ok_col = pc.fill_null(envelope.json_validity(column, self._duck), True)
        bad = len(ok_col) - pc.sum(ok_col.cast(pa.int64())).as_py() if len(ok_col) else 0
        idx = chunk.column_names.index(name)
        if name == "metadata" and bad:
            # No raw column holds it (data's is payload): kept whole inside the JSON, as
            # Axon's XStream XML or Java-serialised meta_data, say, with its trace ids.
            self._count("metadata not JSON (kept as metadata:text or metadata:base64)", bad)
            kept = pa.array(
                [
                    None if ok else _kept_metadata(text, blob)
                    for ok, text, blob in zip(
                        ok_col.to_pylist(),
                        column.to_pylist(),
                        raw.to_pylist() if raw is not None else [None] * len(column),
                        strict=True,
                    )
                ],
                pa.string(),
            )
            return chunk.set_column(idx, name, pc.if_else(ok_col, column, kept))
        self._count(f"{name} not JSON", bad)
        chunk = chunk.set_column(
            idx, name, pc.if_else(ok_col, column, pa.scalar(None, pa.string()))
        )
        if name == "data" and bad:
            source = raw if raw is not None else column.cast(pa.binary())
            payload = pc.if_else(ok_col, pa.scalar(None, pa.binary()), source)
            chunk = chunk.append_column("payload", payload)
        return chunk

    def _duck_select(self, chunk: pa.Table, exprs: dict[str, str]) -> pa.Table:
        self._duck.register("batch", chunk)
        try:
            keep = [f'"{c}"' for c in chunk.column_names if c not in exprs]
            sql = (
                "select "
                + ", ".join(keep + [f'{e} as "{n}"' for n, e in exprs.items()])
                + " from batch"
            )
            return self._duck.sql(sql).to_arrow_table()
        except duckdb.Error as exc:
            raise SourceError(
                f"reading JSON fields of the rows (--map paths, event timestamps): "
                f"{_duckdb.error_line(exc)}"
            ) from None
        finally:
            self._duck.unregister("batch")

    def close(self) -> None:
        """Finish the writes already read, then close the connection (idempotent).

        Raises the error of a failed write that was not raised yet.
        """
        try:
            pipeline = getattr(self, "_pipeline", None)
            if pipeline is not None:
                pipeline.close()
        finally:
            con, self._con = getattr(self, "_con", None), None
            if con is not None:
                with contextlib.suppress(Exception):  # already broken: nothing left to release
                    con.close()
            claim, self._claim = getattr(self, "_claim", None), None
            if claim is not None:
                claim.__exit__(None, None, None)

    def __enter__(self) -> PostgresArchiver:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            self.close()
            return
        with contextlib.suppress(Exception):  # the error that ended the run is the one to report
            self.close()


@contextlib.contextmanager
def _stopped_by_signals(follow: bool) -> Iterator[threading.Event]:
    """While following, SIGINT/SIGTERM end the run after the current poll (its rows
    are written and the summary returned), as the JetStream archiver does."""
    stop = threading.Event()
    previous: dict[signal.Signals, Any] = {}
    if follow and threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _versioned(chunk: pa.Table, bad: pa.ChunkedArray | None) -> pa.Table:
    """``schema_version`` 1 where the source has none (the envelope's contract);
    a version that is there but not an integer stays null (and was counted)."""
    one = pa.scalar(1, pa.int32())
    if "schema_version" not in chunk.column_names:
        return chunk.append_column("schema_version", pa.repeat(one, chunk.num_rows))
    index = chunk.column_names.index("schema_version")
    version = chunk.column(index).cast(pa.int32())
    filled = pc.coalesce(version, one)
    if bad is not None:
        filled = pc.if_else(pc.fill_null(bad, False), pa.scalar(None, pa.int32()), filled)
    return chunk.set_column(index, "schema_version", filled)


def _holes(
    positions: np.ndarray, expected: int, settled: int
) -> tuple[int, int | None, list[tuple[int, int]]]:
    """Scan ascending ``positions`` that should start at ``expected``.

    Returns how many rows to keep, the position of the first hole that may
    still fill (rows from there on wait), and the settled holes before it.

    >>> _holes(np.array([1, 2, 5, 6, 9]), 1, settled=6)
    (4, 7, [(3, 4)])
    >>> _holes(np.array([3, 4]), 1, settled=0)
    (0, 1, [])
    >>> _holes(np.array([3, 4]), 1, settled=10)
    (2, None, [(1, 2)])
    """
    previous = np.concatenate(([expected - 1], positions[:-1]))
    gaps: list[tuple[int, int]] = []
    for i in np.flatnonzero(positions - previous > 1):
        first, last = int(previous[i]) + 1, int(positions[i]) - 1
        if last <= settled:
            gaps.append((first, last))
            continue
        if first <= settled:
            gaps.append((first, settled))
        return int(i), max(first, settled + 1), gaps
    return len(positions), None, gaps


def _repeated(positions: np.ndarray, expected: int) -> int | None:
    """The first position of ascending ``positions`` that repeats the one before it
    (the previous batch ended at ``expected - 1``), or None.

    >>> _repeated(np.array([3, 4, 4, 5, 5]), 1), _repeated(np.array([3, 4]), 4)
    (4, 3)
    >>> _repeated(np.array([1, 2]), 1) is None
    True
    """
    previous = np.concatenate(([expected - 1], positions[:-1]))
    same = np.flatnonzero(positions == previous)
    return int(positions[same[0]]) if len(same) else None


def _keep_in_metadata(chunk: pa.Table, values: dict[str, pa.ChunkedArray]) -> pa.Table:
    """``chunk`` with each non-null text of ``values`` added to its row's metadata object
    under the key it is given (a payload_revision "1.0", no integer: kept, not lost).

    The pair is spliced into the metadata's text, which is left as the store wrote it
    (parsed and written again, big numbers and escapes would change).

    >>> t = pa.table({"metadata": ['{"a": 1e400}', None, "{}"], "x": [1, 2, 3]})
    >>> v = pa.chunked_array([["1.0", None, "v2"]])
    >>> _keep_in_metadata(t, {"v:text": v})["metadata"].to_pylist()
    ['{"a": 1e400, "v:text": "1.0"}', None, '{"v:text": "v2"}']
    """
    texts = {key: column.to_pylist() for key, column in values.items()}
    metas = chunk.column("metadata").to_pylist() if "metadata" in chunk.column_names else None
    merged: list[str | None] = []
    for i in range(chunk.num_rows):
        meta = metas[i] if metas is not None else None
        pairs = ", ".join(
            f"{json.dumps(key)}: {json.dumps(column[i])}"
            for key, column in texts.items()
            if column[i] is not None
        )
        if not pairs:
            merged.append(meta)
            continue
        body = (meta or "{}").rstrip()
        if not body.endswith("}"):  # JSON, but no object (a list): kept beside, whole
            merged.append(f'{{"metadata:json": {body}, {pairs}}}')
            continue
        inner = body[:-1].rstrip()
        merged.append(f"{inner}{', ' if not inner.endswith('{') else ''}{pairs}}}")
    column = pa.array(merged, pa.string())
    if metas is None:
        return chunk.append_column("metadata", column)
    return chunk.set_column(chunk.column_names.index("metadata"), "metadata", column)


def _kept_metadata(text: str | None, blob: bytes | None) -> str:
    """Metadata that is not JSON, as a JSON object holding it whole.

    >>> _kept_metadata("<meta><traceId>t1</traceId></meta>", None)
    '{"metadata:text": "<meta><traceId>t1</traceId></meta>"}'
    >>> _kept_metadata("\\x00not utf-8", b"\\xac\\xed\\x00\\x05")
    '{"metadata:base64": "rO0ABQ=="}'
    """
    if blob is not None:  # a bytea column: its text, if it is text
        try:
            text = blob.decode()
        except UnicodeDecodeError:
            return json.dumps({"metadata:base64": base64.b64encode(blob).decode()})
    return json.dumps({"metadata:text": text})


def _utf8_or_none(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "\x00not utf-8"  # never valid JSON, so it is counted and kept as payload


_DUCK_TYPES = {
    "schema_version": "integer",
    "stream_position": "bigint",
    "recorded_ns": "bigint",
    "delivery_count": "integer",
    "occurred_at": "timestamptz",
    "recorded_at": "timestamptz",
}


def _path_column(spec: FieldSpec) -> str:
    return "data" if spec.kind == "data" else "metadata"


def _path_expr(spec: FieldSpec) -> str:
    column = _path_column(spec)
    path = "$" + "".join(
        '."' + key.replace('"', '\\"').replace("'", "''") + '"' for key in spec.path
    )
    return f"json_extract_string({column}, '{path}')"


_INT_FIELDS = frozenset(n for n, t in _DUCK_TYPES.items() if t in ("integer", "bigint"))


def _typed_path(name: str, expr: str) -> str:
    if name == "occurred_at":  # ISO text or epoch s/ms/µs/ns, as the JetStream mapping reads it
        return _finite(instant_sql(expr))
    typ = _DUCK_TYPES.get(name)
    return f"try_cast({expr} as {typ})" if typ else expr


def _finite(time_expr: str) -> str:
    """DuckDB SQL: ``time_expr``, null when it is ``±infinity`` (text 'infinity' casts to
    it): no event time, as in Postgres columns (see ``presets._utc``)."""
    return f"(case when isfinite({time_expr}) then {time_expr} end)"


def _or_archive_time(times: pa.ChunkedArray) -> pa.ChunkedArray:
    """``times`` as UTC microseconds, with the time of archiving where one is null."""
    utc = pa.timestamp("us", tz="UTC")
    return pc.coalesce(times.cast(utc), pa.scalar(int(time.time() * 1_000_000), utc))


_BELOW_FIRST = (
    "below the table's first row when it was first archived: deleted before archiving "
    "(a pruned table), or never held a row"
)

_ROLLED_BACK = (
    "no row once every transaction that could have written these positions had ended: "
    "rolled back (or deleted before they were archived)"
)
_DELETED = (
    "no row once every transaction that could have written these positions had ended, in a "
    "store that numbers its events without gaps (holes=deleted): deleted before archived"
)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
#: Envelope columns that identify an event, compared when resuming.
#: (Not the event type: a mapping may name it differently from one run to the next.)
_IDENTITY = ("event_id", "stream", "stream_position")


#: The preset of a run given none, on an archive with no Postgres source recorded.
DEFAULT_PRESET = "message-db"


def _refuse_timeless(raw: pa.Table, mapped: pa.Table, fields: tuple[str, ...]) -> None:
    """Refuse, before the first file is written, a text or number column mapped to a time
    field none of whose values in the first batch reads as one (a version column, say):
    the archive would keep the mapping, and every event a time of null or of archiving.
    ``mapped`` is the batch converted, with each field's ``_untimed_`` flag."""
    for name in fields:
        untimed = pc.sum(mapped.column(f"_untimed_{name}").cast(pa.int64())).as_py() or 0
        if untimed and mapped.column(name).null_count == mapped.num_rows:
            sample = raw.column(name).drop_null()[0].as_py()
            raise MappingError(
                f"{name}: none of the first {untimed} values reads as a time (such as "
                f"{sample!r}); map a timestamp column, ISO text or an epoch number in "
                "seconds, ms, µs or ns"
            )


_HEX_ID = re.compile(r"^(?:\\x)?[0-9a-fA-F-]{32,36}$")


def _id_text(value: str) -> str:
    r"""An id as compared with the archived one: a UUID is one id with or without hyphens,
    or as the bytea hex earlier versions archived (such ids are hyphenated now).

    >>> _id_text("\\x6f1e0000000000000000000000000001") == _id_text(
    ...     "6f1e0000-0000-0000-0000-000000000001")
    True
    """
    return value.removeprefix("\\x").replace("-", "").lower() if _HEX_ID.match(value) else value


def _legacy_source(out: str | os.PathLike[str], table: str) -> str | None:
    """The source name ``table`` has in ``out`` when it was archived under the name earlier
    versions gave it (a dot in a part not quoted), and not yet under today's."""
    schema, name, _ = quote_table(table)
    legacy, now = f"postgres:{schema}.{name}", source_name(schema, name)
    if legacy == now or not Path(out).is_dir():
        return None
    recorded = recorded_mappings(out, "postgres:")
    return legacy if legacy in recorded and now not in recorded else None


def _recorded_run(
    out: str | os.PathLike[str], table: str | None
) -> tuple[str, str | None, list[str]]:
    """The preset, table and ``--map``s of a run given no preset or mapping: those the
    archive recorded for ``table``, or for the one Postgres source it holds.

    A cron job then needs no more than the DSN and the directory, as for JetStream.
    """
    recorded = recorded_mappings(out, "postgres:")
    if table is not None:
        schema, name, _ = quote_table(table)
        names = {source_name(schema, name), f"postgres:{schema}.{name}"}  # and the old one
        recorded = {s: o for s, o in recorded.items() if s in names}
    if not recorded:
        return DEFAULT_PRESET, table, []
    if len(recorded) > 1:
        raise SourceError(
            f"{out} holds {len(recorded)} Postgres sources ({', '.join(recorded)}): give "
            "--table (or --preset and --map) to say which to archive"
        )
    ((source, options),) = recorded.items()
    preset, *mappings = options
    if table is None:  # the source is postgres:SCHEMA.NAME, a part with a dot quoted
        try:
            table = quote_table(source.removeprefix("postgres:"))[2]
        except SourceError:  # recorded before such parts were quoted: the first dot splits
            schema, _, name = source.removeprefix("postgres:").partition(".")
            table = ".".join('"' + part.replace('"', '""') + '"' for part in (schema, name))
    return preset.removeprefix("preset="), table, mappings


_COMMITTED_LATE = (
    "committed after the archive had recorded its position as missing (held past the "
    "settle grace): the archive cannot take it in order; re-archive into a new directory"
)
#: Gap reasons that say no row holds the positions: a row found there later came late.
_PASSED = ("rolled-back", "retention")
#: Seconds between looks for rows committed into passed holes, after a run's first.
_LATE_EVERY = 10.0
#: How long after passing a hole the looks every few seconds keep to it.
_LATE_WINDOW = 3600.0


@dataclass(frozen=True)
class _Sequence:
    """The sequence a position column draws from: ``start`` value, values drawn per
    session at once (``cache``), and the last drawn (None: none since a restart)."""

    start: int
    cache: int
    last: int | None
    #: The table's own (serial, identity): dropped with it, not outliving the table.
    owned: bool = False


def _runs(positions: list[int]) -> list[tuple[int, int]]:
    """Sorted positions as inclusive ranges of consecutive ones.

    >>> _runs([9, 10, 11, 14, 20, 21])
    [(9, 11), (14, 14), (20, 21)]
    """
    ranges: list[tuple[int, int]] = []
    for p in positions:
        if ranges and p == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], p)
        else:
            ranges.append((p, p))
    return ranges


def _recorded_gaps_upto(root: Path, source: str) -> int:
    """Highest position already recorded as a gap for ``source`` (-1 if none: a store
    numbered from 0 can lose position 0)."""
    if not root.is_dir():
        return -1
    try:
        reader = ArchiveReader(root)
        rows = reader.sql(
            "select max(last_missing) from gap_records where source = ?", params=[source]
        ).fetchall()
    except ArchiveError:
        return -1
    return -1 if rows[0][0] is None else int(rows[0][0])


@shows_progress("archive postgres")
def archive_postgres(
    dsn: str,
    out: str | os.PathLike[str],
    *,
    preset: str | None = None,
    table: str | None = None,
    mappings: Mappings = (),
    follow: bool = False,
    idle_exit: float | None = None,
    poll_interval: float = 0.5,
    settle_timeout: float = 60.0,
    settle_grace: float | None = None,
    batch_size: int = 100_000,
    cipher_key: str | None = None,
    remap: bool = False,
    holes: str = "rolled-back",
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ArchivePostgresResult:
    """Archive a Postgres event table into ``out``; return what was done.

    Without ``follow`` it archives everything committed now and returns
    (waiting up to ``settle_timeout`` seconds for transactions that hold a
    hole). With ``follow`` it keeps polling until ``idle_exit`` seconds pass
    without a new row, or ``should_stop()`` is true.

    ``mappings`` are ``FIELD=SPEC`` strings (``column:``, ``const:``,
    ``data:``/``metadata:`` paths), or a dict of field → spec; ``generic`` needs at least
    ``global_position=column:NAME``, ``recorded_at=column:NAME``, ``event_type``
    and ``data``.
    ``settle_grace`` is how long a hole must also stay empty before it is
    final (default: the preset's; 3 s for Marten, which draws positions
    before the transaction that inserts them). A source archived with another
    preset or mapping is refused, unless ``remap`` (from here on, this one).
    ``holes``: what a hole in the positions is, once no transaction can fill it:
    ``rolled-back`` (a sequence's value a rolled-back insert took, the default) or
    ``deleted`` (a store that numbers its events without gaps, as Commanded's
    ``$all`` stream does: a hole there is a row deleted before it was archived).
    Given no ``preset`` and no ``mappings``, a run archives as the run before
    did (the one Postgres source of ``out``, or ``table``'s); on a new archive
    the preset is ``message-db``.
    """
    with (
        PostgresArchiver(
            dsn,
            out,
            preset=preset,
            table=table,
            mappings=mappings,
            batch_size=batch_size,
            cipher_key=cipher_key,
            settle_grace=settle_grace,
            remap=remap,
            holes=holes,
        ) as archiver,
        _stopped_by_signals(follow) as signalled,
    ):
        last_progress = time.monotonic()
        while True:
            before = (archiver.result.rows_archived, len(archiver.result.gaps))
            archiver.poll(progress)
            now = time.monotonic()
            if (archiver.result.rows_archived, len(archiver.result.gaps)) != before:
                last_progress = now
            idle = now - last_progress
            if signalled.is_set() or (should_stop is not None and should_stop()):
                break
            if archiver.waiting:
                if idle >= (settle_timeout if not follow else max(settle_timeout, idle_exit or 0)):
                    break
                time.sleep(min(poll_interval, 0.05))
                continue
            if not follow or (idle_exit is not None and idle >= idle_exit):
                break
            time.sleep(poll_interval)
        # Once more at the end: a row that committed into a hole this run passed is told
        # by this run, not by the next.
        archiver.find_late_rows()
        return archiver.result
