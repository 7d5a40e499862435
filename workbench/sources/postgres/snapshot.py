"""Snapshots of a live read model: its rows now, and the event position they reflect.

A snapshot is one Parquet file of the read-model table's rows (Arrow types as
ADBC gives them), written atomically, with file key-value metadata
``workbench.snapshot`` = JSON ``{"table", "taken_at", "source",
"event_store_position", "rows"}``. Rows and position come from one
REPEATABLE READ snapshot, so a diff can tell "not yet projected" (the event
is above ``event_store_position``) from "wrong".

``event_store_position`` is the highest position below the visibility
watermark of that snapshot: after the snapshot, the reader waits until every
transaction that was running at that moment has ended, and positions those
transactions committed (holes in the snapshot that are now filled) and
everything above them are not counted.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from workbench import _duckdb
from workbench._duckdb import to_polars
from workbench._text import as_text
from workbench.archive import refuse_inside_archive, write_atomically
from workbench.errors import SourceError
from workbench.sources.mapping import Mappings, mapping_options
from workbench.sources.postgres._connection import (
    connect,
    fetch_all,
    quote_table,
    run,
    table_columns,
)
from workbench.sources.postgres._watermark import RUNNING_SQL, Watermark
from workbench.sources.postgres.presets import PRESETS, build_query
from workbench.sources.postgres.table import read_table

__all__ = ["SNAPSHOT_KEY", "SnapshotInfo", "read_snapshot_info", "snapshot_postgres"]

#: Parquet key-value metadata key holding the snapshot's JSON description.
SNAPSHOT_KEY = "workbench.snapshot"


@dataclass(frozen=True)
class SnapshotInfo:
    """What a snapshot file says about itself."""

    table: str
    taken_at: dt.datetime
    source: str | None
    event_store_position: int | None
    rows: int
    path: Path | None = None

    @as_text
    def summary(self) -> str:
        """What the snapshot holds and the event-store position it reflects, in a line.

        >>> SnapshotInfo("app.memories", dt.datetime(2024, 5, 1, tzinfo=dt.UTC),
        ...     "postgres:message_store.messages", 1200, 2474).summary()
        "app.memories: 2,474 rows at 2024-05-01T00:00:00+00:00 (position 1,200 of postgres:message_store.messages, the store's head: the read model's own if a projection writes it in its events' transaction; an asynchronous projector's is its checkpoint, position_sql= / --position-sql)"
        >>> SnapshotInfo("v", dt.datetime(2024, 5, 1, tzinfo=dt.UTC), None, 7, 1).summary()
        'v: 1 rows at 2024-05-01T00:00:00+00:00 (position 7)'
        """
        # --position-sql names no store; a store's head is the read model's position only
        # for a projection in its events' transactions: a projector's lag would show as
        # differences, which the diff cannot tell from wrong rows.
        of = (
            f" of {self.source}, the store's head: the read model's own if a projection writes "
            "it in its events' transaction; an asynchronous projector's is its checkpoint, "
            "position_sql= / --position-sql"
            if self.source
            else ""
        )
        position = (
            f" (position {self.event_store_position:,}{of})"
            if self.event_store_position is not None
            else ""
        )
        return f"{self.table}: {self.rows:,} rows at {self.taken_at.isoformat()}{position}"

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("path")
        data["taken_at"] = self.taken_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
        return json.dumps(data)

    def df(self) -> pl.DataFrame:
        """The snapshot's rows as Polars reads them well: UUIDs as text, JSON as text,
        and a time or date column that holds ``±infinity`` as text.

        (``pl.read_parquet`` of the file gives a UUID's 16 bytes: Polars has
        no UUID type. DuckDB reads the file as it is.)
        """
        return to_polars(_duckdb.connect().read_parquet(str(self._file())))

    def arrow(self) -> pa.Table:
        """The snapshot's rows as written (Postgres types as ADBC gives them)."""
        return pq.read_table(self._file())

    def head(self, n: int = 5) -> pl.DataFrame:
        """The first ``n`` rows of :meth:`df`."""
        return self.df().head(n)

    def _file(self) -> Path:
        if self.path is None:
            raise SourceError("this snapshot description has no file (path is None)")
        return self.path

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><th style='text-align:left'>{k}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in asdict(self).items()
        )
        return f"<table><caption>snapshot</caption>{rows}</table>"


def read_snapshot_info(path: str | os.PathLike[str]) -> SnapshotInfo:
    """Read the ``workbench.snapshot`` metadata of a snapshot file."""
    path = Path(path)
    try:
        meta = pq.read_metadata(path).metadata or {}
    except (OSError, pa.ArrowInvalid) as exc:
        raise SourceError(f"cannot read snapshot {path}: {exc}") from None
    raw = meta.get(SNAPSHOT_KEY.encode())
    if raw is None:
        raise SourceError(f"{path} is not a workbench snapshot (no {SNAPSHOT_KEY} metadata)")
    data = json.loads(raw)
    return SnapshotInfo(
        table=data["table"],
        taken_at=dt.datetime.fromisoformat(data["taken_at"].replace("Z", "+00:00")),
        source=data.get("source"),
        event_store_position=data.get("event_store_position"),
        rows=int(data["rows"]),
        path=path,
    )


#: Suffixes of other data formats: a snapshot written under one is Parquet all the same.
_OTHER_FORMATS = (".csv", ".tsv", ".json", ".jsonl", ".ndjson", ".arrow", ".feather", ".duckdb")


def snapshot_postgres(
    dsn: str,
    table: str,
    out: str | os.PathLike[str],
    *,
    events_table: str | None = None,
    preset: str = "message-db",
    mappings: Mappings | None = None,
    settle_timeout: float = 30.0,
    position_sql: str | None = None,
) -> SnapshotInfo:
    """Write the read model ``table`` as it is now to ``out`` (one Parquet file).

    With ``events_table`` (and its ``preset``), the event store's position
    at the same instant is recorded too. A read model that stores its
    projector's checkpoint knows better than the store's head which events it
    reflects: ``position_sql`` (one integer, e.g. ``select position from
    app.checkpoints where name = 'memories'``) is then run in the same
    snapshot and recorded as the position.
    """
    given, out = str(out), Path(out)
    if out.suffix.lower() in _OTHER_FORMATS:  # it would hold Parquet under another name
        raise SourceError(f"{out}: a snapshot is one Parquet file; name it FILE.parquet")
    if out.is_dir() or given.endswith(("/", os.sep)):
        raise SourceError(f"{given} is a directory: a snapshot is one file; name it FILE.parquet")
    refuse_inside_archive(out, "a snapshot")
    schema, name, _ = quote_table(table)
    con = connect(dsn)
    try:
        table_columns(con, f"{schema}.{name}")
        query = None
        if events_table is not None:
            from workbench.sources.mapping import parse_mappings
            from workbench.sources.postgres.presets import split_position_maps

            if preset not in PRESETS:
                raise SourceError(f"unknown preset {preset!r}; one of {', '.join(PRESETS)}")
            positions, rest = split_position_maps(mapping_options(mappings))
            query = build_query(
                preset,
                events_table,
                table_columns(con, events_table),
                parse_mappings(rest),
                position_column=positions.get("global_position"),
                for_events=False,  # a snapshot reads positions only
            )
        run(con, "begin isolation level repeatable read read only", "starting a snapshot")
        try:
            ((taken_at,),) = fetch_all(con, "select statement_timestamp()", "reading the clock")
            top = holes = running = server_now = None
            if query is not None:
                pos, tbl = query.position, query.table
                ((top, running_, prepared, _, server_now),) = fetch_all(
                    con,
                    f"select (select max({pos}) from {tbl} e), r.* from ({RUNNING_SQL}) r",
                    f"reading the position of {query.source}",
                )
                running = frozenset(running_ or ()) | frozenset(prepared or ())
                holes = fetch_all(
                    con,
                    f"select p + 1, n - 1 from (select {pos} p, lead({pos}) over (order by {pos}) n "
                    f"from {tbl} e) h where n > p + 1",
                    f"finding holes in {query.source}",
                )
            rows = read_table(con, f"{schema}.{name}")
            checkpoint = _read_position(con, position_sql) if position_sql else None
        finally:
            # Rolled back, not committed: a read-only transaction still lets lo_*() and
            # pg_notify() through, and --position-sql must leave the store as it found it.
            run(con, "rollback", "ending the snapshot")
        position = None
        if checkpoint is not None:
            position = checkpoint
        elif query is not None and top is not None and server_now is not None:
            position = _settled_position(
                con,
                query.position,
                query.table,
                int(top),
                holes or [],
                running or frozenset(),
                server_now,
                settle_timeout,
            )
    finally:
        con.close()
    info = SnapshotInfo(
        table=f"{schema}.{name}",
        taken_at=taken_at,
        source=query.source if query is not None else None,
        event_store_position=position,
        rows=rows.num_rows,
    )
    meta = dict(rows.schema.metadata or {})
    meta[SNAPSHOT_KEY.encode()] = info.to_json().encode()
    write_atomically(rows.replace_schema_metadata(meta), out)
    return SnapshotInfo(**{**asdict(info), "path": out})


def _read_position(con: Any, sql: str) -> int:
    """The one integer ``sql`` returns (the read model's checkpoint)."""
    rows = fetch_all(con, sql, "reading the read model's position (--position-sql)")
    if len(rows) != 1 or len(rows[0]) != 1 or not isinstance(rows[0][0], int):
        raise SourceError(f"--position-sql must return one integer, not {rows[:2]!r}")
    if rows[0][0] < 0:  # a checkpoint's "nothing yet" (-1) is no position of an event
        raise SourceError(
            f"--position-sql returned {rows[0][0]}: a position is 0 or more (a projector that "
            "has applied nothing yet reflects no event: snapshot without --position-sql)"
        )
    return int(rows[0][0])


def _settled_position(
    con: Any,
    pos: str,
    tbl: str,
    top: int,
    holes: list[tuple[int, int]],
    running: frozenset[str],
    at: dt.datetime,
    timeout: float,
) -> int:
    """``top`` lowered below the first hole that a transaction running at the snapshot filled."""
    if not holes:
        return top
    watermark, deadline = Watermark(), time.monotonic() + timeout
    watermark.remember(top, running, at)
    while watermark.settle(con) < top:
        if time.monotonic() > deadline:
            raise SourceError(
                f"transactions open at the snapshot did not end within {timeout:g}s; "
                "the event store position is unknown (retry, or snapshot without --events-table)"
            )
        time.sleep(0.05)
    firsts = ",".join(str(int(a)) for a, _ in holes)
    lasts = ",".join(str(int(b)) for _, b in holes)
    ((filled,),) = fetch_all(
        con,
        f"select min(e.p) from unnest('{{{firsts}}}'::bigint[], '{{{lasts}}}'::bigint[]) h(a, b) "
        f"join lateral (select {pos} p from {tbl} e where {pos} between h.a and h.b "
        f"order by {pos} limit 1) e on true",
        "checking holes that filled after the snapshot",
    )
    return top if filled is None else int(filled) - 1
