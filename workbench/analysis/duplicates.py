"""Duplicates: the same event twice, told apart by how it came twice.

- ``event_id``: the same ``event_id`` at several positions of one source
  (a producer published it twice; the store did not deduplicate).
- ``redelivery``: ``delivery_count > 1`` (the source delivered it to the
  archiver again; the archive still holds it once).
- ``content``: different ``event_id`` but identical type, stream, data and
  correlation/causation ids within ``window`` of the previous copy (a retry
  that minted a new id; the same data from another request is no copy, nor
  is it without a correlation or causation id: two equal deposits into one
  account are two deposits unless they answer the same request).
- ``stream_position``: another event (another ``event_id``, or without ids
  other content) at a ``stream`` position an earlier one holds: two writers
  that both passed an optimistic-concurrency check, or two streams under one
  name (tenants, partitions). A replay applies both.

Each row is one *extra* copy and names the position of the first one. A
kind needs columns (``event_id``; ``delivery_count``; data and a
correlation or causation id; ``stream`` and ``stream_position``): a source
that fills them in no event is listed in ``unchecked``, not counted as clean.

>>> import tempfile, pyarrow as pa
>>> from workbench.archive import ArchiveReader, ArchiveWriter
>>> root = tempfile.mkdtemp()
>>> _ = ArchiveWriter(root, "s").append(pa.table({
...     "global_position": [1, 2, 3], "recorded_at": [0, 1, 2],
...     "event_id": ["a", "b", "a"], "data": ['{"n": 1}', '{"n": 2}', '{"n": 1}']}))
>>> find_duplicates(ArchiveReader(root)).copies.select("kind", "global_position", "first_position").rows()
[('event_id', 3, 1)]
>>> find_duplicates(ArchiveReader(root)).unchecked["check"].to_list()
['content copies', 'stream_position copies']
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import polars as pl

from workbench._sql import CE_PRODUCER
from workbench._text import as_text
from workbench.analysis._buckets import bucket_width
from workbench.analysis._unchecked import Need, find_unchecked, not_checked_lines
from workbench.analysis.result import CheckResult
from workbench.archive import ArchiveReader

if TYPE_CHECKING:
    import altair as alt

__all__ = ["DUPLICATE_KINDS", "Duplicates", "find_duplicates"]

#: The kinds of duplicate, in the order they are reported.
DUPLICATE_KINDS: tuple[str, ...] = ("event_id", "redelivery", "content", "stream_position")

#: What each kind needs of an event, as the ``where`` clauses of ``_COPIES`` filter.
_NEEDS: dict[str, Need] = {
    "event_id": Need("event_id copies", (("event_id",),), "an event_id"),
    "redelivery": Need("redelivery copies", (("delivery_count",),), "a delivery_count"),
    "content": Need(
        "content copies",
        (("data", "payload"), ("correlation_id", "causation_id")),
        "data and a correlation or causation id together",
    ),
    "stream_position": Need(
        "stream_position copies",
        (("stream",), ("stream_position",)),
        "a stream and a stream_position together",
    ),
}


# Each kind is found over fixed-width columns only: ids, streams and contents as hashes
# (a hash of a null is a value of its own, so "is distinct from" stays a comparison of
# hashes), the envelope's text joined back for the few copies found. Carrying the text
# through every window's sort took a GB per million events.
_COPIES = f"""
with ev as (
    select source, global_position, recorded_at,
           event_id is not null as has_id,
           hash(event_id) as id_hash,
           -- A CloudEvent's id is unique per its producer (ce-source), not across producers.
           hash({CE_PRODUCER}) as producer,
           stream is not null and stream_position is not null as slotted,
           hash(stream, stream_position) as slot,
           hash(event_type, stream, data, payload, correlation_id, causation_id) as content,
           (data is not null or payload is not null)
               and (correlation_id is not null or causation_id is not null) as comparable
    from events
),
firsts as (
    select *, case when has_id
                   then min(global_position) over (partition by source, id_hash, producer)
                   end as first_position
    from ev
),
by_slot as (
    select *, first_value(global_position) over s as slot_first,
           first_value(has_id) over s as slot_has_id, first_value(id_hash) over s as slot_id,
           first_value(content) over s as slot_content,
           first_value(producer) over s as slot_producer
    from ev where slotted
    window s as (partition by source, slot order by global_position)
),
by_content as (
    select *,
           lag(global_position) over w as prev_position,
           lag(recorded_at) over w as prev_at,
           lag(id_hash) over w as prev_id
    from firsts where comparable and global_position = coalesce(first_position, global_position)
    -- content hashes the type and the stream too
    window w as (partition by source, content order by recorded_at, global_position)
),
found as (
    select 'event_id' as kind, source, global_position, first_position
    from firsts where global_position > first_position
    union all
    select 'content', source, global_position, prev_position
    from by_content
    where prev_position is not null and recorded_at - prev_at <= $window
      and id_hash <> prev_id
    union all
    select 'stream_position', source, global_position, slot_first
    from by_slot
    where global_position > slot_first
      -- The same id from the same producer is the event_id kind's copy; from another
      -- producer (ce-source) that kind keeps them apart, and this one must not.
      and case when has_id and slot_has_id
               then id_hash <> slot_id or producer <> slot_producer
               else content <> slot_content end
)
select f.kind, f.source, f.global_position, e.event_id, e.event_type, e.stream,
       e.recorded_at, e.delivery_count, f.first_position
from found f join events e using (source, global_position)
union all
select 'redelivery', source, global_position, event_id, event_type, stream,
       recorded_at, delivery_count, global_position
from events where delivery_count > 1
"""


@dataclass(frozen=True, repr=False)
class Duplicates(CheckResult):
    """Extra copies of events and their count over time.

    - ``copies``: ``kind, source, global_position, event_id, event_type,
      stream, recorded_at, delivery_count, first_position``, one row per
      extra copy (``first_position`` is the earlier copy's position).
    - ``timeline``: ``bucket, kind, event_type, copies`` — copies per time
      bucket (at most a few hundred buckets), for charts.
    - ``unchecked``: ``source, check, events, null_columns, reason`` — per
      source, the kinds (``check`` is ``"<kind> copies"``) that could not be
      looked for: a column they need is null in every event. Not a finding.
    """

    name: ClassVar[str] = "duplicates"
    main: ClassVar[str] = "copies"

    copies: pl.DataFrame
    timeline: pl.DataFrame
    unchecked: pl.DataFrame

    def tables(self) -> dict[str, pl.DataFrame]:
        return {"copies": self.copies, "timeline": self.timeline, "unchecked": self.unchecked}

    def highlights(self) -> dict[str, pl.DataFrame]:
        return {"copies": self.copies}  # unchecked: the summary says it in full

    @property
    def found(self) -> int:
        return self.copies.height

    def count(self, kind: str) -> int:
        """Copies of one kind (``event_id``, ``redelivery``, ``content``, ``stream_position``)."""
        return self.copies.filter(pl.col("kind") == kind).height

    @as_text
    def summary(self) -> str:
        # A kind with no copies and a source it could not look at is no clean 0:
        # its count is left out and the sentences after it say why.
        skipped = set(self.unchecked["check"])
        counts = ", ".join(
            f"{kind}: {n}"
            for kind in DUPLICATE_KINDS
            if (n := self.count(kind)) or _NEEDS[kind].check not in skipped
        )
        n = self.copies.height
        head = f"{n} duplicate {'copy' if n == 1 else 'copies'}" + (
            f" ({counts})" if counts else ""
        )
        return "; ".join([head, *not_checked_lines(self.unchecked)])

    def chart(self) -> alt.TopLevelMixin:
        from workbench.charts.duplicates import duplicates_chart  # charts sit above analysis

        return duplicates_chart(self.timeline)


def find_duplicates(
    reader: ArchiveReader, *, window: dt.timedelta = dt.timedelta(seconds=5)
) -> Duplicates:
    """Find events archived more than once (see the module for the kinds).

    ``window``: how close in ``recorded_at`` two same-content events must be
    to count as one event sent twice.
    """
    reader.refresh_if_stale()
    table = f"_wb_copies_{uuid.uuid4().hex[:12]}"
    reader.con.execute(f"create temp table {table} as {_COPIES}", {"window": window})
    try:
        copies = reader.sql(f"select * from {table} order by kind, source, global_position").pl()
        span = reader.sql(
            f"select epoch(min(recorded_at)), epoch(max(recorded_at)) from {table}"
        ).fetchall()[0]
        width = bucket_width(span[0] or 0.0, span[1] or 0.0)
        timeline = reader.sql(
            f"select time_bucket(interval '{width}', recorded_at) as bucket, kind, event_type, "
            f"count(*) as copies from {table} group by all order by bucket, kind, event_type"
        ).pl()
    finally:
        reader.con.execute(f"drop table if exists {table}")
    kinds = pl.Enum(DUPLICATE_KINDS)
    return Duplicates(
        copies=copies.with_columns(pl.col("kind").cast(kinds)).sort(
            "kind", "source", "global_position"
        ),
        timeline=timeline.with_columns(pl.col("kind").cast(kinds)),
        unchecked=find_unchecked(reader, [_NEEDS[kind] for kind in DUPLICATE_KINDS]),
    )
