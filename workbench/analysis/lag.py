"""Lag: how far behind the store and its consumers are, over time.

- ``recording``: time from ``occurred_at`` to ``recorded_at`` per source
  and time bucket (p50, p95, max seconds and the number of events).
- ``consumers``: where lag samples exist (``consumer_samples``, written by
  ``workbench sample jetstream``), backlog (messages pending for the
  consumer plus those delivered but not acknowledged, as the server counts
  them: a filtered consumer's own) and time lag (age of the oldest unacknowledged
  event, from the archived event after the ack floor) per consumer and
  time bucket.
- ``late``: events recorded more than ``late_after`` after they occurred
  (default 5 minutes): delivered late, replayed from an outbox, or clocks
  apart; a projection that assumes arrival order meets them out of order.
- ``clock``: events whose ``recorded_at`` is more than ``step_back``
  (default 15 minutes) before the previous position's: recorded_at follows
  the position order but for a transaction's length, so a step back is a
  writer whose clock or time zone is off (a Postgres ``timestamp without
  time zone`` column written in a session whose TimeZone is not UTC).
- ``status``: one row per consumer, its status over the last ``window``
  samples by the rules Burrow uses for Kafka consumer groups:

  1. backlog zero in any sample of the window → ``ok``;
  2. no progress (ack floor moved, or the consumer active) for longer than
     the window spans → ``stopped``;
  3. ack floor never moved in the window → ``stalled``;
  4. backlog grew at every sample of the window → ``lagging``;
  5. otherwise ``ok``.

Bucket widths are chosen so each series has at most a few hundred points.

>>> import tempfile, pyarrow as pa
>>> from workbench.archive import ArchiveReader, ArchiveWriter
>>> root = tempfile.mkdtemp()
>>> _ = ArchiveWriter(root, "s").append(pa.table({
...     "global_position": [1, 2], "occurred_at": [0, 0], "recorded_at": [1_000_000, 1_500_000]}))
>>> find_lag(ArchiveReader(root)).recording.select("events", "p50_seconds", "max_seconds").rows()
[(2, 1.25, 1.5)]
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import polars as pl

from workbench._text import as_text, duration
from workbench.analysis._buckets import bucket_width
from workbench.analysis._views import has_view
from workbench.analysis.result import CheckResult
from workbench.archive import ArchiveReader

if TYPE_CHECKING:
    import altair as alt

__all__ = ["CONSUMER_STATUSES", "LATE_AFTER", "STEP_BACK", "Lag", "find_lag"]

#: Recording lag past which an event counts as late.
LATE_AFTER = dt.timedelta(minutes=5)
#: How far recorded_at may fall behind the previous position's before it is a clock fault.
STEP_BACK = dt.timedelta(minutes=15)

#: Consumer statuses, healthiest first.
CONSUMER_STATUSES: tuple[str, ...] = ("ok", "lagging", "stalled", "stopped")

_LATE = """
select source, global_position, event_id, event_type, stream, occurred_at, recorded_at,
       epoch(recorded_at) - epoch(occurred_at) as lag_seconds
from events
where occurred_at is not null and recorded_at - occurred_at > $late_after
order by source, global_position
"""

# The window sorts only what it compares; the few events that step back are joined to
# their ids afterwards (carrying ids and types through the sort doubled the peak).
_CLOCK = """
with stepped as (
    select * from (
        select source, global_position, recorded_at,
               lag(recorded_at) over (partition by source order by global_position)
                   as previous_recorded_at
        from events
    )
    where previous_recorded_at - recorded_at > $step_back
)
select s.source, s.global_position, e.event_id, e.event_type, e.stream, s.recorded_at,
       s.previous_recorded_at, epoch(s.previous_recorded_at) - epoch(s.recorded_at) as back_seconds
from stepped s join events e using (source, global_position)
order by s.source, s.global_position
"""

_RECORDING = """
select source, time_bucket(interval '{width}', recorded_at) as bucket, count(*) as events,
       quantile_cont(lag, 0.5) as p50_seconds, quantile_cont(lag, 0.95) as p95_seconds,
       max(lag) as max_seconds
from (select source, recorded_at, epoch(recorded_at) - epoch(occurred_at) as lag
      from events where occurred_at is not null
      -- a store with one time per event (the eventsourcing library's) fills both with
      -- it: a lag of 0 everywhere is no measurement, and its rows would be noise
      and source in (select source from events where occurred_at <> recorded_at))
group by all order by source, bucket
"""

# One row per sample: backlog and the age of the oldest unacknowledged event.
_SAMPLES = """
select c.source, c.stream, c.consumer, c.sampled_at, c.ack_floor_stream_seq as ack_floor,
       c.last_active, c.num_redelivered,
       b.backlog,
       case when b.backlog = 0 then 0.0
            else epoch(c.sampled_at) - epoch(e.recorded_at) end as time_lag_seconds
from consumer_samples c
cross join lateral (
    -- The server's count first: a consumer filtered to some subjects is not behind
    -- by the stream's other messages.
    select greatest(coalesce(c.num_pending + coalesce(c.num_ack_pending, 0),
                             c.stream_last_seq - c.ack_floor_stream_seq), 0) as backlog
) b
left join events e on e.source = c.source and e.global_position = c.ack_floor_stream_seq + 1
"""

_CONSUMERS = """
select source, stream, consumer, time_bucket(interval '{width}', sampled_at) as bucket,
       max(backlog) as backlog, max(time_lag_seconds) as time_lag_seconds, count(*) as samples
from {samples} group by all order by source, stream, consumer, bucket
"""

_STATUS = """
with s as (
    select *,
           row_number() over w_desc as rn,
           lag(backlog) over w as prev_backlog,
           lag(ack_floor) over w as prev_floor
    from {samples}
    window w as (partition by source, stream, consumer order by sampled_at),
           w_desc as (partition by source, stream, consumer order by sampled_at desc)
),
win as (
    select source, stream, consumer, count(*) as samples,
           arg_max(backlog, sampled_at) as backlog,
           arg_max(time_lag_seconds, sampled_at) as time_lag_seconds,
           bool_or(backlog = 0) as any_zero,
           max(ack_floor) > min(ack_floor) as moved,
           coalesce(bool_and(backlog > prev_backlog)
                    filter (where prev_backlog is not null and rn < $window), false)
               and count(*) > 2 as growing,
           min(sampled_at) as first_sample, max(sampled_at) as last_sample,
           greatest(max(last_active),
                    max(sampled_at) filter (where ack_floor > prev_floor)) as last_progress
    from s where rn <= $window group by all
)
select source, stream, consumer,
       case when any_zero then 'ok'
            when last_progress is null
              or last_sample - last_progress > last_sample - first_sample then 'stopped'
            when not moved then 'stalled'
            when growing then 'lagging'
            else 'ok' end as status,
       backlog, time_lag_seconds, samples, first_sample, last_sample, last_progress
from win order by source, stream, consumer
"""


@dataclass(frozen=True, repr=False)
class Lag(CheckResult):
    """Recording lag and consumer lag over time, and each consumer's status.

    - ``recording``: ``source, bucket, events, p50_seconds, p95_seconds, max_seconds``.
    - ``consumers``: ``source, stream, consumer, bucket, backlog, time_lag_seconds, samples``
      (maxima per bucket; empty without samples).
    - ``status``: ``source, stream, consumer, status, backlog, time_lag_seconds,
      samples, first_sample, last_sample, last_progress`` (over the last window).
    - ``late``: ``source, global_position, event_id, event_type, stream,
      occurred_at, recorded_at, lag_seconds`` for events past ``late_after``.
    - ``clock``: ``source, global_position, event_id, event_type, stream,
      recorded_at, previous_recorded_at, back_seconds`` for steps back past ``step_back``.
    """

    name: ClassVar[str] = "lag"
    #: ``df()`` is the late events: what ``found`` counts on nearly every archive
    #: (consumer status needs samples; it is ``status``).
    main: ClassVar[str] = "late"

    recording: pl.DataFrame
    consumers: pl.DataFrame
    status: pl.DataFrame
    late: pl.DataFrame
    clock: pl.DataFrame

    def tables(self) -> dict[str, pl.DataFrame]:
        return {
            "late": self.late,
            "clock": self.clock,
            "status": self.status,
            "recording": self.recording,
            "consumers": self.consumers,
        }

    def highlights(self) -> dict[str, pl.DataFrame]:
        return {
            "status": self.status,
            "late": self.late,
            "clock": self.clock,
            "recording": self.recording,
        }

    @property
    def found(self) -> int:
        """Late events, clock steps back, and consumers whose status is not ``ok``."""
        not_ok = self.status.filter(pl.col("status") != "ok").height
        return self.late.height + self.clock.height + not_ok

    @as_text
    def summary(self) -> str:
        worst = self.recording.select(pl.col("p95_seconds").max()).item()
        recording = (
            f"recording lag p95 up to {duration(worst)}"
            if worst is not None
            else "no recording lag to measure (no occurred_at apart from recorded_at)"
        )
        counts = self.status.group_by("status").len().sort("status").rows()
        consumers = (
            "consumers " + ", ".join(f"{s}: {n}" for s, n in counts)
            if counts
            else "no consumer samples"
        )
        clock = f"; recorded_at steps back {self.clock.height} time(s)" if self.clock.height else ""
        return f"{recording}; {self.late.height} late event(s){clock}; {consumers}"

    def chart(self) -> alt.TopLevelMixin:
        from workbench.charts.lag import consumer_lag_chart, recording_lag_chart

        recording = recording_lag_chart(self.recording, late=self.late)
        if self.consumers.height == 0:
            return recording
        return recording & consumer_lag_chart(self.consumers)


def _width(reader: ArchiveReader, query: str) -> str:
    first, last = reader.sql(query).fetchall()[0]
    return bucket_width(first or 0.0, last or 0.0)


def find_lag(
    reader: ArchiveReader,
    *,
    window: int = 10,
    late_after: dt.timedelta = LATE_AFTER,
    step_back: dt.timedelta = STEP_BACK,
) -> Lag:
    """Measure recording lag, late events, clock faults and, where samples exist,
    consumer lag (see the module)."""
    reader.refresh_if_stale()
    width = _width(
        reader,
        "select epoch(min(recorded_at)), epoch(max(recorded_at)) from events "
        "where occurred_at is not null",
    )
    recording = reader.sql(_RECORDING.format(width=width)).pl()
    late = reader.sql(_LATE, params={"late_after": late_after}).pl()
    clock = reader.sql(_CLOCK, params={"step_back": step_back}).pl()
    if not has_view(reader, "consumer_samples"):
        return Lag(recording, _empty_consumers(), _empty_status(), late, clock)
    samples = f"_wb_samples_{uuid.uuid4().hex[:12]}"
    reader.con.execute(f"create temp table {samples} as {_SAMPLES}")
    try:
        width = _width(
            reader, f"select epoch(min(sampled_at)), epoch(max(sampled_at)) from {samples}"
        )
        consumers = reader.sql(_CONSUMERS.format(width=width, samples=samples)).pl()
        status = reader.sql(_STATUS.format(samples=samples), params={"window": window}).pl()
    finally:
        reader.con.execute(f"drop table if exists {samples}")
    return Lag(recording, consumers, status, late, clock)


def _empty_consumers() -> pl.DataFrame:
    ts = pl.Datetime("us", "UTC")
    return pl.DataFrame(
        schema={
            "source": pl.String,
            "stream": pl.String,
            "consumer": pl.String,
            "bucket": ts,
            "backlog": pl.Int64,
            "time_lag_seconds": pl.Float64,
            "samples": pl.Int64,
        }
    )


def _empty_status() -> pl.DataFrame:
    ts = pl.Datetime("us", "UTC")
    return pl.DataFrame(
        schema={
            "source": pl.String,
            "stream": pl.String,
            "consumer": pl.String,
            "status": pl.String,
            "backlog": pl.Int64,
            "time_lag_seconds": pl.Float64,
            "samples": pl.Int64,
            "first_sample": ts,
            "last_sample": ts,
            "last_progress": ts,
        }
    )
