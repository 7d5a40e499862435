"""``replay``: an archive through a projection into DuckDB, resumable, with lineage.

Events are read in ``global_position`` order, one Arrow batch at a time,
straight from the archive's Parquet files, only the columns handlers use
(each file is sorted and files do not overlap, so memory holds a batch or
two, never the history); a reading thread keeps one batch ahead. Handler
state lives in dicts, every write goes to one integer write log, and state
is flushed in bulk: each flush writes the changed rows, their lineage and
the checkpoint in one DuckDB transaction, on a writing thread while handlers
go on, so a crash at any point resumes to exactly the rows of an
uninterrupted run.

>>> import tempfile, os, pyarrow as pa
>>> from workbench.archive import ArchiveWriter
>>> from workbench.replay.projection import Projection, Table, on
>>> root = tempfile.mkdtemp()
>>> _ = ArchiveWriter(root, "demo").append(pa.table({
...     "global_position": [1, 2, 3], "recorded_at": [0, 1, 2],
...     "event_type": ["Hit", "Hit", "Miss"], "data": ['{"k": "a"}', '{"k": "a"}', "{}"]}))
>>> class Hits(Projection):
...     hits = Table(key="k", k=str, n=int)
...     @on("Hit")
...     def hit(self, event, tables):
...         row = tables.hits.get(event.data["k"])
...         tables.hits.upsert({"k": event.data["k"], "n": (row["n"] if row else 0) + 1})
>>> result = replay(root, Hits, into=os.path.join(root, "out.duckdb"))
>>> result.events_applied, result.last_position, result.coverage.problems()
(3, 3, ['Miss v1 (1 events): no handler'])
>>> result.sql("select * from hits").fetchall()
[('a', 2)]
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import html
import itertools
import os
import reprlib
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from workbench import _duckdb, envelope
from workbench._sql import ident, literal
from workbench._text import Duration, as_text, did_you_mean
from workbench.archive import ArchiveReader, unknown_source
from workbench.errors import ArchiveError, ArgumentError, ProjectionError
from workbench.progress import shows_progress
from workbench.replay import store
from workbench.replay.batches import EventBatch, prefetch, quick_switching, read_batches
from workbench.replay.coverage import Coverage, coverage
from workbench.replay.event import ENVELOPE_FIELDS, lazy_decoding
from workbench.replay.kept_state import ClassState, instance_changes
from workbench.replay.projection import Projection
from workbench.replay.runner import OnError, Runner

if TYPE_CHECKING:
    import altair as alt

    from workbench.replay.state import TableState

__all__ = [
    "ReplayResult",
    "check_coverage",
    "open_reader",
    "read_batches",
    "replay",
    "select_source",
]

Progress = Callable[[int, int], None]


@dataclass
class ReplayResult:
    """What a replay did: counts, time, per-type/per-handler figures, coverage.

    ``per_type`` is a Polars frame ``event_type, events, handler, seconds``
    (handler time is sampled: one event in 32, and the first of each type,
    scaled up to the type's events; ``seconds`` is null for a type no handler
    takes); :meth:`estimate` extrapolates the rebuild time of a larger archive.
    """

    projection: str
    version: int
    schema: str
    into: str
    source: str
    events_applied: int
    total_applied: int
    last_position: int | None
    resumed_from: int | None
    seconds: float
    per_type: pl.DataFrame
    coverage: Coverage
    dead_letters: int = 0
    archive_events: int = 0
    #: ``seconds, events``: events applied so far after each batch, for the throughput chart.
    progress: pl.DataFrame = field(
        default_factory=lambda: pl.DataFrame(schema={"seconds": pl.Float64, "events": pl.Int64})
    )
    #: ``phase, seconds, share``: where the replay's own thread spent its time —
    #: ``reading`` (waiting for the next batch), ``decoding`` events,
    #: ``handlers``, ``flushing`` (building and waiting for DuckDB writes),
    #: ``bookkeeping``. Handlers near 100% means the projection is the cost.
    phases: pl.DataFrame = field(default_factory=lambda: phases_frame([]))
    extra: dict[str, Any] = field(default_factory=dict)
    #: Whether the replay was asked to resume (it starts over without a checkpoint).
    resume: bool = False
    #: ``table.column`` of the declared columns null in every row of a table that has
    #: rows: no handler writes them (a forgotten field, or one spelt otherwise).
    unwritten: list[str] = field(default_factory=list)
    #: Per table, rows a handler changed in place and never handed back, so not stored as
    #: they stand (``"memories: 30 rows, e.g. 'm-1'"``): what is stored then depends on
    #: when flushes fell. Up to :data:`STALE_CHECKED` rows a table are looked at.
    stale: list[str] = field(default_factory=list)
    #: Columns holding values that are stored as written but read back as another kind
    #: (``"agents.total: an int, read back as a float (e.g. 5)"``): a ``--resume`` hands
    #: the handlers the stored kind, so output that depends on the kind (``f"{total}"``)
    #: would differ from an uninterrupted run's. Looked at in the same rows as ``stale``.
    other_kinds: list[str] = field(default_factory=list)
    #: State the handlers kept outside the tables (``self.seen``, ``Cls.seen (on the
    #: class)``): no checkpoint holds it, so a resume starts without it.
    kept_state: list[str] = field(default_factory=list)
    #: Events applied by the earlier replay of this schema that this one replaced, when
    #: it ran without ``resume`` over one (None: there was none).
    replaced: int | None = None
    #: Whether a resumed replay's projection code differs from the code it began with:
    #: rows written before the checkpoint came from the other code.
    code_changed: bool = False

    def chart(self) -> alt.TopLevelMixin:
        """Where the time went, throughput over the run (when it had several batches)
        and time per handler."""
        import altair as alt

        from workbench import charts

        parts: list[alt.Chart | alt.LayerChart] = []
        if self.phases["seconds"].sum() > 0:
            parts.append(charts.replay_phases(self.phases))
        # A SqlProjection has no handlers to time: its phases are its queries.
        if self.per_handler["seconds"].is_not_null().any() or not parts:
            parts.append(charts.handler_cost(self.per_handler))
        top = parts[0] if len(parts) == 1 else alt.hconcat(*parts)
        if self.progress.height > 2:
            return alt.vconcat(top, charts.replay_throughput(self.progress))
        return top

    @property
    def events_per_second(self) -> float:
        return self.events_applied / self.seconds if self.seconds > 0 else 0.0

    @property
    def per_handler(self) -> pl.DataFrame:
        """``handler, events, seconds`` summed over the types each handler takes.

        ``seconds`` is null only for a handler whose events all failed to decode.
        """
        seconds = pl.col("seconds")
        return (
            self.per_type.filter(pl.col("handler").is_not_null())
            .group_by("handler")
            .agg(
                pl.col("events").sum(),
                pl.when(seconds.is_not_null().any()).then(seconds.sum()).alias("seconds"),
            )
            .sort("seconds", descending=True, nulls_last=True)
        )

    def estimate(self, events: int | None = None) -> Duration:
        """Estimated rebuild time for ``events`` events (default: all this replay reads,
        within its ``until`` and ``where``). A :class:`ProjectionError` when the replay
        applied too few to tell (a resumed run of a few events times its fixed costs)."""
        if self._too_few_to_estimate():
            raise ProjectionError(
                f"{self.events_applied:,} events applied: too few to estimate a rebuild "
                "from (a resumed run times its fixed costs); replay without resume"
            )
        if events is not None and (isinstance(events, bool) or not isinstance(events, Integral)):
            raise ArgumentError(f"estimate({events!r}): a number of events, such as 50_000_000")
        n = self.archive_events if events is None else int(events)
        return Duration(seconds=n / self.events_per_second)

    def _too_few_to_estimate(self) -> bool:
        # A resumed run of a few events times its fixed costs, not the events.
        return (
            not self.events_applied
            or self.events_applied < min(self.archive_events, 10_000)
            or not self.seconds
        )

    def sql(self, query: str) -> duckdb.DuckDBPyRelation:
        """Query the output with the projection's schema as the search path.

        The file is opened read-only and closed again: the result is
        materialised (with its DuckDB types: a UUID stays a UUID), so a relation
        kept in a notebook holds no lock that would stop a later replay or diff
        of the same file.
        """
        con = self._look()
        try:
            con.execute(f"set search_path = {literal(self.schema)}")
            # UUID and JSON columns come back as such, not as VARCHAR, through Arrow.
            con.execute("set session arrow_lossless_conversion = true")  # this connection only
            try:
                relation = con.sql(query)
                if relation is None:
                    raise ProjectionError(f"not a query: {query}")
                table = relation.to_arrow_table()
            except duckdb.Error as exc:  # a user's query: DuckDB's hint is the help
                raise ProjectionError(f"query failed: {_duckdb.error_line(exc)}") from None
        finally:
            con.close()
        return _duckdb.connect().from_arrow(table)

    def _look(self) -> duckdb.DuckDBPyConnection:
        """A read-only connection to the output file (close it)."""
        try:
            return _duckdb.connect(self.into, read_only=True)
        except duckdb.ConnectionException:  # open read-write elsewhere in this process
            con = _duckdb.connect(self.into)
            con.execute("begin transaction read only")  # a look, never a change
            return con

    def lineage(self, table: str, key: Any) -> pl.DataFrame:
        """The events that wrote the row of ``table`` with ``key`` (its value, or a tuple
        for a composite key), oldest first: ``global_position, event_type, handler``
        and, while the archive is where the replay read it, each event's ``stream,
        stream_position, occurred_at, data``. A deleted row keeps its lineage.
        """
        con = self._look()
        try:
            columns = store.table_key(con, self.schema, table)
        finally:
            con.close()
        if not columns:
            self._require_table(table)
            raise ProjectionError(f"{self.schema}.{table} has no key to find a row by")
        written = self.sql(
            "select global_position, event_type, handler from _lineage where table_name = "
            f"{literal(table)} and key = {literal(store.lineage_key(columns, key))} "
            "order by global_position"
        ).pl()
        if not written.height:
            recorded = self.sql(
                f"select count(*) from _lineage where table_name = {literal(table)}"
            ).fetchall()[0][0]
            if not recorded:  # not "no event wrote it" of a row that is there
                raise ProjectionError(
                    f"no lineage was recorded for {table}: a SqlProjection records it only "
                    "for the tables given in lineage={...}, and replay(lineage=False) for none"
                )
            raise ProjectionError(f"no event wrote a row of {table} with key {key!r}")
        archive = self.sql("select archive from _replay_info").fetchall()
        if not archive or not archive[0][0] or not Path(archive[0][0]).is_dir():
            return written  # the archive moved: the lineage alone
        positions = ", ".join(str(p) for p in written["global_position"].to_list())
        events = (
            ArchiveReader(archive[0][0])
            .sql(
                "select global_position, stream, stream_position, occurred_at, data from events "
                f"where source = {literal(self.source)} and global_position in ({positions})"
            )
            .pl()
        )
        return written.join(events, on="global_position", how="left")

    def table(self, name: str) -> pl.DataFrame:
        """The read model's table ``name`` as this replay left it (``df()`` is the replay's
        own counts per event type), typed for Polars: UUIDs as text, as :meth:`sql` with
        ``.pl()`` would not."""
        self._require_table(name)
        return _duckdb.to_polars(self.sql(f"select * from {ident(name)}"))

    def _require_table(self, name: str) -> None:
        tables = [
            t
            for (t,) in self.sql(
                "select table_name from duckdb_tables() where schema_name = "
                f"{literal(self.schema)} and not starts_with(table_name, '_') order by 1"
            ).fetchall()
        ]
        if name not in tables:
            raise ProjectionError(
                f"{self.schema} has no table {name!r}{did_you_mean(name, tables)}; its tables: "
                + (", ".join(tables) or "none")
            )

    def dead_letter_rows(self, limit: int | None = None) -> pl.DataFrame:
        """The dead letters recorded (all of them, or the first ``limit``), oldest first:
        ``global_position, event_type, handler, error`` and the rest of ``_dead_letters``."""
        cut = f" limit {int(limit)}" if limit is not None else ""
        return self.sql(
            "select global_position, event_type, handler, error, source, event_id, traceback, "
            f"data from _dead_letters order by global_position{cut}"
        ).pl()

    def df(self) -> pl.DataFrame:
        return self.per_type

    def arrow(self) -> pa.Table:
        return self.per_type.to_arrow()

    def head(self, n: int = 5) -> pl.DataFrame:
        """The first ``n`` rows of :meth:`df`."""
        return self.per_type.head(n)

    @as_text
    def summary(self) -> str:
        resumed = f", resumed after {self.resumed_from}" if self.resumed_from is not None else ""
        if self.resume and self.resumed_from is None:  # killed before its first flush, say
            resumed = ", from the start: there was no checkpoint to resume from"
        elif self.replaced is not None:
            resumed = (
                f", replacing the earlier replay ({self.replaced:,} events applied; "
                "a resumed replay goes on from one instead)"
            )
        shares = [
            f"{phase} {share:.0%}"
            for phase, share in self.phases.sort("share", descending=True)
            .select("phase", "share")
            .rows()
            if share >= 0.01
        ]
        time_went = f"; time: {', '.join(shares)}" if shares else ""
        if not self.events_applied:
            estimate = "no events applied, so no rebuild estimate"
        elif self._too_few_to_estimate():
            estimate = f"{self.events_applied:,} events are too few to estimate a rebuild from"
        else:
            estimate = (
                f"rebuild of all {self.archive_events:,} events it reads ≈ "
                f"{self.estimate().total_seconds():.1f}s"
            )
        unwritten = (
            f"; null in every row (no handler writes them?): {', '.join(self.unwritten)}"
            if self.unwritten
            else ""
        )
        if self.kept_state:
            unwritten += (
                f"; state kept outside the tables, not stored with the checkpoint: "
                f"{', '.join(self.kept_state)} (a --resume starts without it; "
                "check_replay_safety shows what that changes; the class's is put back "
                "as it was after each replay)"
            )
        if self.stale:
            unwritten += (
                f"; changed in place but never handed back, so not stored as they stand: "
                f"{'; '.join(self.stale)} (hand a changed row back with upsert(row) or "
                "update(key))"
            )
        if self.other_kinds:
            unwritten += (
                f"; stored as written but read back as another kind by a --resume: "
                f"{'; '.join(self.other_kinds)} (write the stored kind: float(n), "
                "t.astimezone(datetime.UTC), member.value)"
            )
        if not self.coverage.ok:  # the CLI exits 1 for these: a notebook's print says them
            unwritten += f"; not covered: {'; '.join(self.coverage.problems())}"
        if self.code_changed:
            resumed += (
                " with changed projection code: rows written before it came from the "
                "earlier code (replay without resume for one code throughout)"
            )
        return (
            f"{self.schema}: {self.events_applied:,} events in {self.seconds:.2f}s "
            f"({self.events_per_second:,.0f} events/s){resumed}; "
            + (
                "no event applied"
                if self.last_position is None
                else f"last position {self.last_position}"
            )
            + f"; {self.dead_letters:,} dead letter(s); {estimate}{time_went}"
            f"{unwritten}"
        )

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return f"ReplayResult({self.summary()})"

    def _repr_html_(self) -> str:
        told = self.coverage.notes()  # its problems are in the summary
        cov = "<p>⚠ " + html.escape("; ".join(told)) + "</p>" if told else ""
        return (
            f"<p><b>replay</b> {html.escape(self.summary())}</p>{cov}{self.per_type._repr_html_()}"
        )


def open_reader(archive: str | os.PathLike[str] | ArchiveReader) -> ArchiveReader:
    return archive if isinstance(archive, ArchiveReader) else ArchiveReader(archive)


def select_source(reader: ArchiveReader, source: str | None) -> str:
    """The source to replay: the one asked for, or the archive's only one."""
    sources = reader.sources
    if source is not None:
        if source in sources:
            return source
        # library_events for postgres:public.library_events: the one source it names.
        named = [s for s in sources if s.endswith((f":{source}", f".{source}"))]
        if len(named) == 1:
            return named[0]
        raise unknown_source(source, sources)
    if not sources:
        reader.require_archive()  # a directory that is none: said so, as everywhere
        raise ArchiveError(f"archive {reader.root} holds no events")
    if len(sources) > 1:
        raise ArchiveError(
            f"archive has several sources, pick one (source=, or --source): {', '.join(sources)}"
        )
    return sources[0]


def check_where(where: str | None) -> None:
    """Fail early, in one line, on a ``where`` that is not valid SQL over the envelope."""
    if not where:
        return

    def invalid(why: str) -> ProjectionError:
        return ProjectionError(f"invalid where filter (--where) {where!r}: {why}")

    try:
        statements = duckdb.extract_statements(f"select count(*) from events where {where}")
    except duckdb.Error as exc:
        raise invalid(_duckdb.error_line(exc)) from None
    if len(statements) != 1:  # it is pasted into queries on the output file: one filter only
        raise invalid("one condition, not several statements")
    con = _duckdb.connect()
    con.register("events", envelope.empty())
    try:
        con.execute(f"select count(*) from events where {where}").fetchall()
    except duckdb.Error as exc:
        raise invalid(_duckdb.error_line(exc)) from None
    finally:
        con.close()


def count_events(
    reader: ArchiveReader, source: str, where: str | None, until: int | None
) -> pl.DataFrame:
    """``event_type, schema_version, events`` of what a replay will read, and how many
    of them carry each of :data:`~workbench.replay.event.ENVELOPE_FIELDS` (``with_<field>``)."""
    carried = "".join(f", count({name})::BIGINT as with_{name}" for name in ENVELOPE_FIELDS)
    try:
        return reader.stable(
            lambda: reader.sql(
                f"select event_type, schema_version, count(*)::BIGINT as events{carried} "
                f"from events where {replayed(until, where)} "
                "group by event_type, schema_version order by all",
                params={"source": source},
            ).pl()
        )
    except duckdb.Error as exc:
        if not where:
            raise
        # Valid SQL that fails on the events themselves (event_type = 1 casts each type).
        raise ProjectionError(
            f"where filter (--where) {where!r} fails on the archive's events: "
            f"{_duckdb.error_line(exc)}"
        ) from None


def replayed(until: int | None, where: str | None) -> str:
    """The SQL condition on the archive's ``events`` (with ``$source`` bound) that keeps
    what a replay of ``source`` within ``until`` and ``where`` reads.

    >>> replayed(10, "stream = 's'")
    "source = $source and global_position <= 10 and (stream = 's'\\n)"
    """
    filters = ["source = $source"]
    if until is not None:
        if not -(2**63) <= int(until) < 2**63:
            raise ProjectionError(f"until {until}: not a position (positions are 64-bit)")
        filters.append(f"global_position <= {int(until)}")
    if where:
        filters.append(f"({where}\n)")  # a trailing -- comment ends at the newline
    return " and ".join(filters)


def check_coverage(
    archive: str | os.PathLike[str] | ArchiveReader,
    projection: Any,
    *,
    source: str | None = None,
    until: int | None = None,
    where: str | None = None,
) -> Coverage:
    """Which event types and schema versions of ``archive`` ``projection`` handles.

    The report a replay gives as ``result.coverage``, without running it:
    worth a look before a long rebuild. A :class:`SqlProjection` reads
    every event and has no coverage to report.
    """
    from workbench.replay.loader import load_projection
    from workbench.replay.sql_projection import SqlProjection

    if isinstance(projection, str):
        projection = load_projection(projection)
    if isinstance(projection, SqlProjection):
        return Coverage.empty()
    reader = open_reader(archive)
    source = select_source(reader, source)
    check_where(where)
    counts = count_events(reader, source, where, until)
    return coverage(_instantiate(projection), counts, filtered=bool(where) or until is not None)


@shows_progress("replay")
def replay(
    archive: str | os.PathLike[str] | ArchiveReader,
    projection: Any,
    *,
    into: str | os.PathLike[str],
    source: str | None = None,
    resume: bool = False,
    until: int | None = None,
    where: str | None = None,
    on_error: OnError = "raise",
    lineage: bool = True,
    batch_size: int = 20_000,
    flush_every: int = 500_000,
    flush_seconds: float = 15.0,
    progress: Progress | None = None,
) -> ReplayResult:
    """Replay ``archive`` through ``projection`` into the DuckDB file ``into``.

    ``projection`` is a :class:`Projection` subclass or instance, a
    :class:`~workbench.replay.sql_projection.SqlProjection`, or where to load
    one from (``"path/to/file.py:Class"``, ``"module:Name"``). Output goes to
    schema ``<name>_v<version>``; without ``resume`` that schema is rebuilt
    from scratch, with it the replay continues after the stored checkpoint.
    ``until`` stops at a position, ``where`` filters events with SQL over the
    envelope columns. ``on_error="dead-letter"`` records failing events in
    ``_dead_letters`` and goes on. ``lineage=False`` records no lineage (a
    diff then cannot explain rows by their events). State is flushed with its
    checkpoint every ``flush_every`` events or ``flush_seconds`` seconds,
    whichever comes first (at batch ends), so a killed replay resumed loses
    at most that much work. ``progress(done, total)`` is called after each batch.
    """
    __tracebackhide__ = True  # a notebook's traceback shows the handler, not the engine
    from workbench.replay.loader import load_projection
    from workbench.replay.sql_projection import SqlProjection, replay_sql

    if isinstance(projection, str):  # "path/to/file.py:Class" or "module:Name", as on the CLI
        projection = load_projection(projection)
    if until is not None and (isinstance(until, bool) or not isinstance(until, int)):
        raise ProjectionError(f"until is a global_position (an integer), not {until!r}")
    if until is not None and until < 0:
        raise ProjectionError(f"until is a global_position, never negative: {until}")
    for name, value in (
        ("batch_size", batch_size),
        ("flush_every", flush_every),
        ("flush_seconds", flush_seconds),
    ):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ProjectionError(f"{name} must be a number above 0, not {value!r}")
    reader = open_reader(archive)
    source = select_source(reader, source)
    check_where(where)
    if isinstance(projection, SqlProjection):
        if on_error != "raise":
            raise ProjectionError(
                f"{projection.name} is a SqlProjection: there are no handlers to fail and "
                "go on from, so on_error='dead-letter' (--dead-letter) does not apply"
            )
        if resume:
            raise ProjectionError(
                f"{projection.name} is a SqlProjection: it is always rebuilt in one "
                "transaction, so there is nothing to resume; replay it without --resume"
            )
        return replay_sql(
            reader,
            projection,
            into=into,
            source=source,
            until=until,
            where=where,
            lineage=lineage,
            progress=progress,
        )
    instance = _instantiate(projection)
    class_state = ClassState(type(instance))
    fresh = _fresh(instance)  # before any handler runs, to compare the instance with
    counts = count_events(reader, source, where, until)
    cov = coverage(instance, counts, filtered=bool(where) or until is not None)
    total = int(counts["events"].sum()) if counts.height else 0

    schema = instance.schema()
    runner = Runner(
        instance,
        on_error=on_error,
        event_types=counts["event_type"].to_list(),
        refusal=store.row_refusal,
    )
    codes = store.EventCodes(source, runner.handler_of) if lineage else None
    con = store.connect(into)
    writer = _Writer(con)
    freezing = gc.get_freeze_count() == 0  # not when the caller froze objects of its own
    with quick_switching():  # the reading thread keeps up
        try:
            start = _prepare(
                con, instance, reader, source, runner, resume=resume, until=until, where=where
            )
            resumed_from, applied_before = start.resumed_from, start.applied_before
            if codes is not None:
                codes.load(con, schema)
            started = flushed_at = time.perf_counter()
            applied = 0
            pending = 0
            last = resumed_from
            type_counts: dict[str, int] = {}
            since_flush: list[pa.Table] = []
            ticks: list[tuple[float, int]] = [(0.0, 0)]  # (seconds since start, events applied)
            clock = _Clock()
            sizing = _Sizing(batch_size, flush_seconds)
            wanted: set[str] = set()
            for batch in sizing.batches(
                lambda after, size: read_batches(
                    reader,
                    source,
                    after=after,
                    until=until,
                    where=where,
                    batch_size=size,
                    wanted=wanted,
                ),
                resumed_from,
            ):
                batch_started = time.perf_counter()
                clock.lap("reading")
                events = runner.decode(batch)
                if freezing and not runner.failures:
                    # The collector's passes over a batch's ~200k fresh tuples and dicts
                    # (never cyclic) cost ~7% of a replay; frozen, it skips them (and any
                    # cycle a handler leaves, until the run ends). Not after a failure: a
                    # dead letter's traceback is a cycle to collect.
                    gc.freeze()
                clock.lap("decoding")
                lazy = lazy_decoding.seconds
                runner.apply(events)
                del events  # decoded events take ~1 KB each: never hold two batches of them
                clock.lap("handlers", decoding=lazy_decoding.seconds - lazy)
                for item in pc.value_counts(batch.column("event_type")).to_pylist():
                    key = item["values"]
                    type_counts[key] = type_counts.get(key, 0) + item["counts"]
                applied += batch.num_rows
                pending += batch.num_rows
                since_flush.append(batch.table.select(["global_position", "event_type"]))
                last = batch.table.column("global_position")[-1].as_py()
                if pending >= flush_every or time.perf_counter() - flushed_at >= flush_seconds:
                    clock.lap("bookkeeping")
                    writer.submit(
                        _prepare_flush(
                            schema,
                            runner,
                            codes,
                            source,
                            last,
                            applied_before + applied,
                            since_flush,
                        )
                    )
                    clock.lap("flushing")
                    pending = 0
                    since_flush = []
                    flushed_at = time.perf_counter()
                ticks.append((time.perf_counter() - started, applied))
                sizing.timed(batch.num_rows, time.perf_counter() - batch_started)
                if progress is not None:
                    progress(applied + (applied_before if resume else 0), total)
                clock.lap("bookkeeping")
            if last is not None and (pending or resumed_from is None):
                writer.submit(
                    _prepare_flush(
                        schema, runner, codes, source, last, applied_before + applied, since_flush
                    )
                )
            writer.wait()
            store.add_keys(con, schema, instance.tables())  # keyed as the run ends
            clock.lap("flushing")
            seconds = time.perf_counter() - started
            con.execute(
                f"update {store.q(schema)}._replay_info set finished_at = now(), events_applied = ?",
                [applied_before + applied],
            )
            dead = con.execute(f"select count(*) from {store.q(schema)}._dead_letters").fetchall()[
                0
            ][0]
            unwritten = _unwritten(con, schema, instance)
            looked_at = _looked_at(runner)
            stale = _stale(con, schema, looked_at)
            other_kinds = _other_kinds(looked_at)
            kept = [f"self.{name}" for name in instance_changes(instance, fresh)] if fresh else []
            kept += [f"{name} (on the class)" for name in class_state.changed()]
            kept += class_state.changed_globals()
        except BaseException:
            writer.abandon()
            raise
        finally:
            if freezing:
                gc.unfreeze()
            writer.shutdown()
            con.close()
            class_state.restore()  # a notebook's next replay starts as this one did
    return ReplayResult(
        projection=instance.name,
        version=instance.version,
        schema=schema,
        into=str(Path(into).absolute()),
        source=source,
        events_applied=applied,
        total_applied=applied_before + applied,
        last_position=last,
        resumed_from=resumed_from,
        seconds=seconds,
        per_type=_per_type(type_counts, runner),
        coverage=cov,
        dead_letters=int(dead),
        archive_events=total,
        progress=pl.DataFrame(ticks, schema=["seconds", "events"], orient="row"),
        phases=clock.frame(),
        resume=resume,
        unwritten=unwritten,
        stale=stale,
        other_kinds=other_kinds,
        kept_state=kept,
        replaced=start.replaced,
        code_changed=start.code_changed,
    )


#: Rows a table whose stored state :func:`_stale` compares with the handlers' (the first
#: ones written): a projection that changes rows in place changes many.
STALE_CHECKED = 200_000


def _looked_at(runner: Runner) -> dict[TableState, list[dict[str, Any]]]:
    """The rows of each table the end-of-run checks look at: the first written, up to
    :data:`STALE_CHECKED` (a projection that changes rows in place changes many)."""
    return {
        state: rows
        for state in runner.states_list()
        if (rows := list(itertools.islice(state.rows.values(), STALE_CHECKED)))
    }


def _stale(
    con: duckdb.DuckDBPyConnection, schema: str, looked_at: dict[TableState, list[dict[str, Any]]]
) -> list[str]:
    """Tables whose in-memory rows, all flushed, differ from the stored ones: a change made
    in place and never handed back is flushed only if the row was written again before
    the same flush, so what is stored depends on when flushes fell."""
    found = []
    for state, rows in looked_at.items():
        n, example = store.unstored_rows(con, schema, state.table, rows)
        if n:
            shown = f", e.g. {example!r}" if example is not None else ""
            found.append(f"{state.table.name}: {n:,} row(s){shown}")
    return found


def _other_kinds(looked_at: dict[TableState, list[dict[str, Any]]]) -> list[str]:
    """``table.column: what (e.g. value)`` for each column some of whose values read back
    as another kind than they were written as."""
    found = []
    for state, rows in looked_at.items():
        for column, ctype in state.table.types.items():
            other = ctype.another_kind([row.get(column) for row in rows])
            if other is not None:
                value, what = other
                shown = reprlib.repr(value)
                if isinstance(value, dt.date | dt.time):  # its repr is a constructor call
                    shown = str(value)
                found.append(f"{state.table.name}.{column}: {what} (e.g. {shown})")
    return found


def _unwritten(con: duckdb.DuckDBPyConnection, schema: str, projection: Projection) -> list[str]:
    """Declared columns null in every row of a table that has rows (one scan a table)."""
    found = []
    for table in projection.tables():
        columns = [c for c in table.columns if c not in table.key]
        if not columns:
            continue
        counts = ", ".join(f"count({store.q(c)})" for c in columns)
        rows, *filled = con.execute(
            f"select count(*), {counts} from {store.q(schema)}.{store.q(table.name)}"
        ).fetchall()[0]
        if rows:
            found += [f"{table.name}.{c}" for c, n in zip(columns, filled, strict=True) if not n]
    return found


class _Sizing:
    """Batches small enough that a flush comes about every ``flush_seconds``.

    Flushes are looked at between batches: with handlers of a millisecond an event, a
    batch of 20,000 took 20 s, and a process killed more often than that never
    checkpointed. A batch that takes over half of ``flush_seconds`` makes the reading
    start again after it with batches sized to a quarter of it (fast handlers never
    see this).
    """

    #: The smallest batch: below it, per-batch costs outweigh the handlers'.
    SMALLEST = 500

    def __init__(self, size: int, flush_seconds: float) -> None:
        self.size = size
        self.flush_seconds = flush_seconds
        self._resize = False

    def timed(self, rows: int, seconds: float) -> None:
        """Note how long a batch of ``rows`` took from reading to flushing."""
        if seconds > self.flush_seconds / 2 and self.size > self.SMALLEST and rows:
            fits = int(rows * self.flush_seconds / 4 / seconds)
            self.size = max(self.SMALLEST, min(self.size // 2, fits))
            self._resize = True

    def batches(
        self, read: Callable[[int | None, int], Iterable[EventBatch]], after: int | None
    ) -> Iterator[EventBatch]:
        """``read(after, size)``'s batches, read again after the last one given whenever
        :meth:`timed` asks for smaller ones."""
        while True:
            stream = prefetch(read(after, self.size))
            try:
                for batch in stream:
                    yield batch
                    after = batch.table.column("global_position")[-1].as_py()
                    if self._resize:
                        break
                else:
                    return
            finally:
                stream.close()  # stops the reading thread
            self._resize = False


class _Clock:
    """Seconds of the replay's own thread per phase, lap by lap."""

    PHASES = ("reading", "decoding", "handlers", "flushing", "bookkeeping")

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(self.PHASES, 0.0)
        self._last = time.perf_counter()

    def lap(self, phase: str, *, decoding: float = 0.0) -> None:
        """End a lap of ``phase``; ``decoding`` seconds of it were decoding, not ``phase``."""
        now = time.perf_counter()
        self.seconds[phase] += now - self._last - decoding
        self.seconds["decoding"] += decoding
        self._last = now

    def frame(self) -> pl.DataFrame:
        return phases_frame(list(self.seconds.items()))


def phases_frame(rows: list[tuple[str, float]]) -> pl.DataFrame:
    frame = pl.DataFrame(rows, schema={"phase": pl.String, "seconds": pl.Float64}, orient="row")
    total = frame["seconds"].sum()
    return frame.with_columns(share=pl.col("seconds") / total if total else pl.lit(0.0))


def _fresh(instance: Projection) -> Projection | None:
    """Another instance of ``instance``'s class, as a replay starts with (None when its
    class cannot make one without arguments)."""
    try:
        return type(instance)()
    except Exception:
        return None


def _instantiate(projection: Any) -> Projection:
    if isinstance(projection, type) and issubclass(projection, Projection):
        from workbench.replay.loader import instantiate

        return instantiate(projection)
    if isinstance(projection, Projection):
        return projection
    raise ProjectionError(
        f"not a projection: {projection!r} (expected a Projection subclass or a SqlProjection)"
    )


@dataclass(frozen=True)
class _Start:
    """Where a replay starts: the checkpoint it resumes from, and what it found there."""

    #: The checkpoint's position and events applied (None and 0: from the start).
    resumed_from: int | None = None
    applied_before: int = 0
    #: Events applied by an earlier replay of the schema this one replaces (None: none).
    replaced: int | None = None
    #: Whether the projection's code differs from the one the resumed replay began with.
    code_changed: bool = False


#: ``_replay_info.code`` of a replay resumed with other code than it began with.
_MIXED = "mixed"


def _first_event(reader: ArchiveReader, source: str) -> str | None:
    """The source's first event, as an archive's identity: a copy, a compaction or
    events appended since keep it; another archive at the same path does not."""
    rows = reader.sql(
        "select global_position, event_type, recorded_at, event_id from events "
        "where source = $source order by global_position limit 1",
        params={"source": source},
    ).fetchall()
    return " ".join(map(str, rows[0])) if rows else None


def _prepare(
    con: duckdb.DuckDBPyConnection,
    projection: Projection,
    reader: ArchiveReader,
    source: str,
    runner: Runner,
    *,
    resume: bool,
    until: int | None,
    where: str | None,
) -> _Start:
    """Create or reopen the schema; on resume load the state (see :class:`_Start`)."""
    schema = projection.schema()
    archive = str(reader.root.absolute())
    first = _first_event(reader, source)
    code = projection.code()
    point = None
    replaced = None
    code_changed = False
    if resume and store.schema_exists(con, schema):
        for column in store.INFO_ADDED:  # a replay begun before _replay_info had them
            con.execute(
                f"alter table {store.q(schema)}._replay_info add column if not exists "
                f"{store.q(column)} VARCHAR"
            )
        info = con.execute(
            f"select archive, where_sql, archive_first, code from {store.q(schema)}._replay_info"
        ).fetchall()

        def replay_of(root: str, condition: str | None) -> str:
            return root + (f" where {condition}" if condition else "")

        if info:
            was_archive, was_where, was_first, was_code = info[0]
            # The same directory by another path (a symlink) is the same archive.
            same_place = Path(was_archive).resolve() == reader.root.resolve()
            if not same_place or (was_where or None) != (where or None):
                raise ProjectionError(
                    f"cannot resume {schema}: it was replayed from "
                    f"{replay_of(was_archive, was_where)}, not {replay_of(archive, where)}"
                )
        checkpoints = con.execute(f"select source from {store.q(schema)}._checkpoint")
        replayed = [r[0] for r in checkpoints.fetchall()]
        if replayed and source not in replayed:  # rebuilding would drop that replay
            raise ProjectionError(
                f"cannot resume {schema} with source {source}: it holds a replay of "
                f"{', '.join(replayed)}; use another version (or file) for this source"
            )
        if info:
            if was_first is not None and was_first != first:
                raise ProjectionError(
                    f"cannot resume {schema}: {archive} holds another archive than the one it "
                    f"was replayed from (its first event was {was_first}, now {first}); "
                    "replay without --resume"
                )
            code_changed = was_code is not None and was_code != code
            if code_changed or was_code == _MIXED:  # its rows stay mixed for good
                code = _MIXED
        changed = store.changed_tables(con, schema, projection.tables())
        if changed:
            raise ProjectionError(
                f"cannot resume {schema}: table(s) {', '.join(changed)} were written with other "
                "columns, types or key; bump the projection's version, or replay without --resume"
            )
        store.create_schema(con, schema, projection.tables(), replace=False)
        point = store.checkpoint(con, schema, source)
        if point is not None and until is not None and until < point[0]:
            # The tables already hold events after `until`: there is no going back; and
            # a promoted version is never rebuilt in place.
            instead = (
                "replay a new version (or into another file)"
                if store.promoted_views(con, schema)
                else "replay without --resume"
            )
            raise ProjectionError(
                f"cannot resume {schema} until position {until}: it is already at "
                f"{point[0]}; {instead} to stop at {until}"
            )
    if point is None:
        store.refuse_promoted(con, schema)
        if not resume and store.schema_exists(con, schema):
            with contextlib.suppress(duckdb.CatalogException):  # not a replay's schema
                replaced = sum(
                    row[0]
                    for row in con.execute(
                        f"select events_applied from {store.q(schema)}._checkpoint"
                    ).fetchall()
                )
        store.create_schema(con, schema, projection.tables(), replace=True)
    else:
        for state in runner.states_list():
            state.load(*store.load_rows(con, schema, state.table))
        runner.log.restart(store.next_row_id(con, schema))
    con.execute(f"delete from {store.q(schema)}._replay_info")
    con.execute(
        f"insert into {store.q(schema)}._replay_info values (?, ?, ?, now(), null, ?, ?, ?, ?, ?)",
        [
            projection.name,
            projection.version,
            archive,
            point[1] if point else 0,
            until,
            where,
            first,
            code,
        ],
    )
    if point is None:
        return _Start(replaced=replaced)
    return _Start(point[0], point[1], code_changed=code_changed)


class _Writer:
    """Runs each flush's DuckDB statements on a second thread, one flush in flight.

    DuckDB releases the GIL, so writing rows and lineage overlaps with the
    handlers of the next events. Each flush is still one transaction with
    its checkpoint, committed in order, so a crash resumes exactly.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="workbench-flush")
        self._pending: Future[None] | None = None

    def submit(self, statements: list[store.Statement | store.Deferred]) -> None:
        self.wait()
        self._pending = self._pool.submit(store.write_flush, self._con, statements)

    def wait(self) -> None:
        """Wait for the flush in flight; its error, if any, is raised here."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def abandon(self) -> None:
        """Wait for the flush in flight while another error propagates (it wins)."""
        with contextlib.suppress(BaseException):
            self.wait()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


def _prepare_flush(
    schema: str,
    runner: Runner,
    codes: store.EventCodes | None,
    source: str,
    last: int,
    applied: int,
    batches: list[pa.Table],
) -> list[store.Statement | store.Deferred]:
    empty = {"global_position": pa.array([], pa.int64()), "event_type": pa.array([], pa.string())}
    events = pa.concat_tables(batches) if batches else pa.table(empty)
    return store.prepare_flush(
        schema,
        runner.states_list(),
        runner.log,
        source=source,
        last_position=last,
        events_applied=applied,
        codes=codes,
        dead_letters=runner.take_dead_letters(),
        events=events,
        handler_of=runner.handler_of,
        skip_bad_rows=runner.on_error == "dead-letter",
    )


def _per_type(type_counts: dict[str, int], runner: Runner) -> pl.DataFrame:
    rows = []
    for event_type, n in sorted(type_counts.items(), key=lambda kv: str(kv[0])):
        sampled = runner.sampled_events.get(event_type, 0)
        spent = runner.sampled_seconds.get(event_type, 0.0)
        seconds = (
            spent * n / sampled if sampled else None
        )  # every one failed before its handler ran
        rows.append((event_type, n, runner.handler_of.get(event_type), seconds))
    return pl.DataFrame(
        rows,
        schema={
            "event_type": pl.String,
            "events": pl.Int64,
            "handler": pl.String,
            "seconds": pl.Float64,
        },
        orient="row",
    )
