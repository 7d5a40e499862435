"""``SqlProjection``: a projection written as DuckDB SQL over the archive's ``events``.

For full rebuilds at vectorised speed. Each table is one ``SELECT`` over the
``events`` view (the envelope columns of the replayed source, bounded by
``until`` and ``where``); DuckDB's JSON functions read the payload. Optional
``keys`` give each table its primary key, and optional ``lineage`` queries
(returning the key columns, ``global_position`` and ``event_type``) fill
``_lineage`` as the handler engine does; ``setup`` runs first, e.g. to
create a temporary table several queries share.

>>> p = SqlProjection("totals", tables={"per_type": "select event_type, count(*) n from events group by 1"},
...                   keys={"per_type": "event_type"})
>>> p.schema(), p.keys
('totals_v1', {'per_type': ('event_type',)})
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import polars as pl

from workbench import envelope
from workbench._duckdb import error_line
from workbench.archive import ArchiveReader
from workbench.errors import ProjectionError
from workbench.progress import ProgressCallback
from workbench.replay import store
from workbench.replay.coverage import Coverage
from workbench.replay.projection import check_name

__all__ = ["SqlProjection"]

if TYPE_CHECKING:
    from workbench.replay.engine import ReplayResult


class SqlProjection:
    """A named, versioned set of output tables, each defined by a query over ``events``.

    - ``tables``: table name → one ``SELECT`` over ``events`` (the envelope columns
      of the replayed source; ``data`` is JSON text: ``data->>'memory_id'``).
    - ``keys``: table name → its key column(s), made the primary key (optional; a
      table without one cannot be diffed by key or explained).
    - ``lineage``: table name → a query returning the table's key columns,
      ``global_position`` and ``event_type``: each event that wrote each row. Without
      it, ``ReplayResult.lineage`` and ``Diff.explain`` have no events for the table.
    - ``setup``: SQL run first, e.g. a temporary table several queries share.

    >>> SqlProjection(
    ...     "memories",
    ...     tables={"memories": "select data->>'memory_id' as memory_id, count(*) as events "
    ...                         "from events group by 1"},
    ...     keys={"memories": "memory_id"},
    ...     lineage={"memories": "select data->>'memory_id' as memory_id, global_position, "
    ...                          "event_type from events"},
    ... )
    SqlProjection('memories', version=1, tables=['memories'])
    """

    def __init__(
        self,
        name: str,
        tables: Mapping[str, str],
        *,
        version: int = 1,
        keys: Mapping[str, str | tuple[str, ...]] | None = None,
        lineage: Mapping[str, str] | None = None,
        setup: str | None = None,
    ) -> None:
        check_name(name)  # a promoted schema of another case would be dropped as this one's
        if not tables:
            raise ProjectionError(f"SqlProjection {name}: no tables")
        self.name = name
        self.version = version
        self.tables = dict(tables)
        self.keys = {t: (k,) if isinstance(k, str) else tuple(k) for t, k in (keys or {}).items()}
        self.lineage = dict(lineage or {})
        self.setup = setup
        for table in [*self.keys, *self.lineage]:
            if table not in self.tables:
                raise ProjectionError(f"SqlProjection {name}: no table {table}")
        for table in self.lineage:
            if table not in self.keys:
                raise ProjectionError(f"SqlProjection {name}: lineage for {table} needs its key")

    def schema(self) -> str:
        """The DuckDB schema this version writes into: ``<name>_v<version>``."""
        return f"{self.name}_v{self.version}"

    def __repr__(self) -> str:
        return f"SqlProjection({self.name!r}, version={self.version}, tables={list(self.tables)})"


def replay_sql(
    reader: ArchiveReader,
    projection: SqlProjection,
    *,
    into: str | os.PathLike[str],
    source: str,
    until: int | None,
    where: str | None,
    lineage: bool = True,
    progress: ProgressCallback | None = None,
) -> ReplayResult:
    """Rebuild every table of ``projection`` in one transaction (always a full rebuild).

    ``lineage=False`` skips the projection's lineage queries. ``progress(done, total)``
    counts events as DuckDB's own progress through each query says, each query
    (the setup, every table, every lineage) an equal share.
    """
    from workbench.replay.engine import ReplayResult, count_events, phases_frame

    counts = count_events(reader, source, where, until)
    total = int(counts["events"].sum()) if counts.height else 0
    schema = store.q(projection.schema())
    reader.refresh_if_stale()
    files = [str(f.path) for f in reader.files if f.source == source]
    if not files:
        raise ProjectionError(f"no events of source {source}")
    filters = [f"source = '{source.replace(chr(39), chr(39) * 2)}'"]
    if until is not None:
        filters.append(f"global_position <= {int(until)}")
    if where:
        filters.append(f"({where}\n)")  # a trailing -- comment ends at the newline
    paths = "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in files) + "]"
    columns = ", ".join(store.q(c) for c in envelope.COLUMNS)
    con = store.connect(into)
    lineages = projection.lineage if lineage else {}
    steps = _QueryProgress(
        con, progress, total, bool(projection.setup) + len(projection.tables) + len(lineages)
    )
    started = time.perf_counter()
    try:
        con.execute(
            f"create or replace temp view events as select {columns} from read_parquet({paths}, "
            f"union_by_name = true, hive_partitioning = false) where {' and '.join(filters)}"
        )
        # A promoted version is rebuilt in one transaction too: the stable views read the
        # old tables until the commit, the new ones after (checked not to make them worse).
        promoted = store.promoted_views(con, projection.schema())
        was = store.replay_facts(con, projection.schema()) if promoted else None
        # The setup in the rebuild's transaction: a table it makes goes if the rebuild fails.
        con.execute("begin")
        if projection.setup:
            with steps.step("setup"):
                _run(con, projection.setup, "the setup")
        con.execute(f"drop schema if exists {schema} cascade")
        con.execute(f"create schema {schema}")
        for ddl in (
            store.CHECKPOINT_DDL,
            *store.LINEAGE_DDL,
            store.INFO_DDL,
            store.DEAD_LETTER_DDL,
        ):
            con.execute(ddl.format(s=schema))
        for table, query in projection.tables.items():
            target = f"{schema}.{store.q(table)}"
            with steps.step(f"table {table}"):
                _run(con, f"create table {target} as {query}", f"table {table}")
                key = projection.keys.get(table)
                if key:
                    _check_unique(con, target, table, key)
                    _run(
                        con,
                        f"alter table {target} add primary key ({', '.join(map(store.q, key))})",
                        table,
                    )
        if lineages:
            _write_lineage(con, projection.schema(), projection, source, steps)
        last, applied = con.execute("select max(global_position), count(*) from events").fetchall()[
            0
        ]
        if last is not None:
            con.execute(
                f"insert into {schema}._checkpoint values (?, ?, ?, now())", [source, last, applied]
            )
        seconds = time.perf_counter() - started
        con.execute(
            f"insert into {schema}._replay_info values (?, ?, ?, now() - to_microseconds(?::BIGINT), "
            "now(), ?, ?, ?, null, null)",
            [
                projection.name,
                projection.version,
                str(reader.root.absolute()),
                int(seconds * 1e6),
                applied,
                until,
                where,
            ],
        )
        if was is not None:
            _refuse_worse(con, projection, promoted, was)
        con.execute("commit")
    except BaseException:
        with contextlib.suppress(duckdb.Error):  # no transaction yet: nothing to undo
            con.execute("rollback")
        raise
    finally:
        con.close()
    seconds = time.perf_counter() - started
    per_type = (
        counts.group_by("event_type")
        .agg(pl.col("events").sum())
        .with_columns(handler=pl.lit("sql", pl.String), seconds=pl.lit(None, pl.Float64))
        .sort("event_type")
    )
    return ReplayResult(
        projection=projection.name,
        version=projection.version,
        schema=projection.schema(),
        into=str(Path(into).absolute()),
        source=source,
        events_applied=int(applied),
        total_applied=int(applied),
        last_position=None if last is None else int(last),
        resumed_from=None,
        seconds=seconds,
        per_type=per_type,
        coverage=Coverage.empty(),
        archive_events=total,
        phases=phases_frame(steps.timed),
    )


def _check_unique(
    con: duckdb.DuckDBPyConnection, target: str, table: str, key: tuple[str, ...]
) -> None:
    """A one-line error for a key its query leaves null or repeats (DuckDB finds a repeat
    only at commit; nulls first: they would all count as one repeated key)."""
    cols = ", ".join(map(store.q, key))
    try:
        nulls = " or ".join(f"{store.q(c)} is null" for c in key)
        (null_rows,) = con.execute(f"select count(*) from {target} where {nulls}").fetchall()[0]
        repeated = con.execute(
            f"select {cols}, count(*) from {target} group by all having count(*) > 1 "
            f"order by count(*) desc limit 3"
        ).fetchall()
    except duckdb.Error as exc:  # a key column the query does not return
        raise ProjectionError(f"table {table}: key {', '.join(key)}: {error_line(exc)}") from None
    if null_rows:  # the primary key would refuse them with "NOT NULL constraint failed"
        raise ProjectionError(
            f"table {table}: its query returns {null_rows:,} row(s) with a null in the key "
            f"{', '.join(key)} (events without the field?); filter them out "
            f"(where {' and '.join(f'{store.q(c)} is not null' for c in key)})"
        )
    if repeated:
        shown = ", ".join(
            f"{row[0] if len(key) == 1 else row[:-1]!r} ×{row[-1]}" for row in repeated
        )
        raise ProjectionError(
            f"table {table}: its query returns the key {', '.join(key)} more than once "
            f"({shown}); group by the key, or name the right key in keys="
        )


def _run(con: duckdb.DuckDBPyConnection, sql: str, what: str, params: object = None) -> None:
    """Run ``sql``; an error names ``what`` ran it (``table t``, ``the lineage of t``)."""
    try:
        con.execute(sql, params)
    except duckdb.Error as exc:
        raise ProjectionError(f"SQL of {what} failed: {error_line(exc)}") from None


def _write_lineage(
    con: duckdb.DuckDBPyConnection,
    schema: str,
    projection: SqlProjection,
    source: str,
    steps: _QueryProgress,
) -> None:
    """The lineage queries' rows in the engine's compact form (see :mod:`store`).

    Event types are coded as the queries give them (a query may label its
    rows), and keys and types are matched null-safely: no entry is dropped.
    """
    s = store.q(schema)
    next_id = 0
    for table, query in projection.lineage.items():
        key = projection.keys[table]
        cols = ", ".join(map(store.q, key))
        same_key = " and ".join(f"l.{store.q(c)} is not distinct from i.{store.q(c)}" for c in key)
        with steps.step(f"lineage of {table}"):
            _run(
                con,
                f"create or replace temp table _wb_lineage as {query}",
                f"the lineage of {table}",
            )
        _key_as_the_table_has_it(con, f"{s}.{store.q(table)}", table, key)
        _run(
            con,
            f"insert into {s}._lineage_types select ((select coalesce(max(event_code) + 1, 0) "
            f"from {s}._lineage_types) + row_number() over (order by event_type) - 1)::INTEGER, "
            f"?, event_type, 'sql' from (select distinct l.event_type from _wb_lineage l "
            f"anti join {s}._lineage_types t on t.event_type is not distinct from l.event_type)",
            table,
            [source],
        )
        _run(
            con,
            f"create or replace temp table _wb_ids as select {cols}, "
            f"({next_id} + row_number() over () - 1)::BIGINT as row_id "
            f"from (select distinct {cols} from _wb_lineage)",
            table,
        )
        _run(
            con,
            f"insert into {s}._lineage_rows select ?, row_id, "
            f"{store.lineage_key_sql(key)} from _wb_ids",
            table,
            [table],
        )
        _run(
            con,
            f"insert into {s}._lineage_writes select i.row_id, l.global_position, "
            f"t.event_code from _wb_lineage l join _wb_ids i on {same_key} "
            f"join {s}._lineage_types t on t.event_type is not distinct from l.event_type",
            table,
        )
        next_id += con.execute("select count(*) from _wb_ids").fetchall()[0][0]
    con.execute("drop table if exists _wb_lineage")
    con.execute("drop table if exists _wb_ids")


def _refuse_worse(
    con: duckdb.DuckDBPyConnection,
    projection: SqlProjection,
    promoted: list[str],
    was: tuple[Any, ...],
) -> None:
    """Refuse the rebuild of a promoted version (before its commit) that would leave a
    stable view without its table, or make it read another archive, filter or fewer events."""
    schema = projection.schema()
    risks = [
        f"{view} would lose its table"
        for view in promoted
        if view.partition(".")[2] not in projection.tables
    ]
    risks += store.regressions(store.replay_facts(con, schema), was, f"{schema} as promoted")
    if risks:
        raise ProjectionError(
            f"{schema} is promoted ({', '.join(promoted)} read it) and was left as it was: "
            f"rebuilt, {'; '.join(risks)}; replay a new version and promote that"
        )


def _key_as_the_table_has_it(
    con: duckdb.DuckDBPyConnection, target: str, table: str, key: tuple[str, ...]
) -> None:
    """Cast the lineage query's key columns (``_wb_lineage``) to the table's types: a key
    given as text for a BIGINT column would be stored as ``"0"``, and ``lineage(t, 0)``
    would deny the row."""

    def types(relation: str) -> dict[str, str]:
        columns = con.sql(f"select * from {relation} limit 0")
        return dict(zip(columns.columns, map(str, columns.types), strict=True))

    table_types, lineage_types = types(target), types("_wb_lineage")
    casts = [
        f"cast({store.q(c)} as {table_types[c]}) as {store.q(c)}"
        for c in key
        if c in lineage_types and c in table_types and lineage_types[c] != table_types[c]
    ]
    if casts:
        _run(
            con,
            f"create or replace temp table _wb_lineage as "
            f"select * replace ({', '.join(casts)}) from _wb_lineage",
            f"the lineage of {table} (its key cast to the table's types)",
        )


class _QueryProgress:
    """Progress through a SqlProjection's queries, from DuckDB's own estimate of the
    query running (``query_progress``, asked from a thread every 0.2 s), in events:
    ``step`` of ``steps`` queries at ``p`` percent is ``total * (step + p / 100) / steps``."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        progress: ProgressCallback | None,
        total: int,
        steps: int,
    ) -> None:
        self._con, self._progress, self._total, self._steps = con, progress, total, max(steps, 1)
        self._done = 0
        #: ``(step, seconds)`` of each step run: the result's phases.
        self.timed: list[tuple[str, float]] = []
        if progress is not None:  # DuckDB tracks progress only with its bar on; it prints none
            con.execute("set enable_progress_bar = true")
            con.execute("set enable_progress_bar_print = false")

    def _report(self, percent: float) -> None:
        assert self._progress is not None
        share = (self._done + min(max(percent, 0.0), 100.0) / 100) / self._steps
        self._progress(int(self._total * share), self._total)

    @contextlib.contextmanager
    def step(self, label: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            with self._watched():
                yield
        finally:
            self.timed.append((label, time.perf_counter() - started))

    @contextlib.contextmanager
    def _watched(self) -> Iterator[None]:
        if self._progress is None:
            yield
            return
        finished = threading.Event()

        def watch() -> None:
            while not finished.wait(0.2):
                with contextlib.suppress(duckdb.Error):
                    self._report(self._con.query_progress())

        watcher = threading.Thread(target=watch, name="wb-sql-progress", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            finished.set()
            watcher.join()
        self._done += 1
        self._report(0.0)
