"""Missing positions: per source in ``global_position``, per stream in ``stream_position``.

Missing ranges come from two places. The archivers' ``gap_records`` name the
reason (``retention``, ``deleted``, ``sequence-jump``, ``rolled-back``,
``never-issued``, ``committed-late``); holes in the archived positions that no record explains are told apart by where
they are: missing positions below the first archived one look like retention
loss, interior holes are ``unknown``. ``recorded`` says which is which.

Stream gaps need ``stream`` and ``stream_position``; a source that fills
either in no event is listed in ``unchecked`` rather than reported clean.

>>> import tempfile, pyarrow as pa
>>> from workbench.archive import ArchiveReader, ArchiveWriter
>>> root = tempfile.mkdtemp()
>>> w = ArchiveWriter(root, "s")
>>> _ = w.append(pa.table({"global_position": [3, 4, 7], "recorded_at": [0, 1, 2]}))
>>> w.record_gap(5, 6, "deleted")
>>> gaps = find_gaps(ArchiveReader(root))
>>> gaps.positions.select("first_missing", "last_missing", "reason", "recorded").rows()
[(1, 2, 'retention', False), (5, 6, 'deleted', True)]
>>> gaps.unchecked.select("source", "check", "null_columns").rows()
[('s', 'stream gaps', ['stream', 'stream_position'])]
"""

from __future__ import annotations

import bisect
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final

import polars as pl

from workbench._text import as_text, names_given
from workbench.analysis._unchecked import Need, find_unchecked, not_checked_lines
from workbench.analysis._views import has_view
from workbench.analysis.result import CheckResult
from workbench.archive import GAP_REASONS, ArchiveReader
from workbench.errors import ArchiveError

if TYPE_CHECKING:
    import altair as alt

__all__ = ["HARMLESS_REASONS", "STREAM_GAPS_NEED", "Gaps", "find_gaps", "stream_gaps_sql"]

#: Gap reasons that are no fault: a Postgres sequence value taken by a
#: transaction that rolled back never held an event, nor did the sequences
#: below a JetStream stream's ``first_seq``.
HARMLESS_REASONS: frozenset[str] = frozenset({"rolled-back", "never-issued"})

#: What the per-stream table needs of an event (the same filter as its SQL).
STREAM_GAPS_NEED: Final = Need(
    "stream gaps", (("stream",), ("stream_position",)), "a stream and a stream_position together"
)

# Holes in the archived positions: interior ones from the next position, a
# leading one when a source's first archived position is above 1.
_HOLES = """
with pos as (
    select source, global_position as p,
           lead(global_position) over (partition by source order by global_position) as nxt
    from events
),
holes as (
    select source, p + 1 as hf, nxt - 1 as hl, 'unknown' as guess from pos where nxt > p + 1
    union all
    select source, 1, min(p) - 1, 'retention' from pos group by source having min(p) > 1
)
"""

# Parts of each hole not covered by any gap record: the stretches between the
# (clipped, possibly overlapping) records, before the first and after the last.
_GAPS_WITH_RECORDS = (
    _HOLES
    + """,
rec as (select source, first_missing, last_missing, reason, detail from gap_records),
clipped as (
    select h.source, h.hf, h.hl, h.guess,
           greatest(r.first_missing, h.hf) as cs, least(r.last_missing, h.hl) as ce
    from holes h join rec r
      on r.source = h.source and r.first_missing <= h.hl and r.last_missing >= h.hf
),
pieces as (
    select source, guess,
           coalesce(max(ce) over (partition by source, hf order by cs
                                  rows between unbounded preceding and 1 preceding) + 1, hf) as ps,
           cs - 1 as pe
    from clipped
    union all
    select source, guess, max(ce) + 1, any_value(hl) from clipped group by source, hf, guess
    union all
    select source, guess, hf, hl from holes h
    where not exists (select 1 from rec r where r.source = h.source
                      and r.first_missing <= h.hl and r.last_missing >= h.hf)
)
select source, first_missing, last_missing, reason, true as recorded, detail from rec
union all
select source, ps, pe, guess, false, null from pieces where ps <= pe
"""
)

_GAPS_WITHOUT_RECORDS = (
    _HOLES + "select source, hf as first_missing, hl as last_missing, guess as reason, "
    "false as recorded, null::varchar as detail from holes"
)

# Holes inside each stream's positions; a stream's first position is expected
# at the lowest first position of any stream of its source (0 or 1 by convention).
# A missing version was written after the version before it first was, and before
# the version after it first was: those global positions bound where it was.
# {within}: a relation of (source, stream) to look at only, or nothing for all.
_STREAM_GAPS = """
with numbered as (
    select source, stream, stream_position, global_position,
           -- A stream of a store's own rows only (Marten's tombstones, numbered by their
           -- global position) has no sequence; such a row inside a stream keeps its place.
           bool_and(starts_with(coalesce(event_type, ''), '$'))
               over (partition by source, stream) as own_stream
    from events {within} where stream is not null and stream_position is not null
),
versions as (
    select source, stream, stream_position as p, min(global_position) as g
    from numbered where not own_stream group by all
),
sp as (
    select source, stream, p, g, lead(p) over w as nxt, lead(g) over w as next_g,
           min(p) over (partition by source, stream) as first_p
    from versions
    window w as (partition by source, stream order by p)
),
base as (select source, min(first_p) as b from sp group by source)
select source, stream, p + 1 as first_missing, nxt - 1 as last_missing,
       g as after_position, next_g as before_position
from sp where nxt > p + 1
union all
select sp.source, stream, b, first_p - 1, null::BIGINT, g
from sp join base using (source) where first_p > b and p = first_p
"""

# Each stream gap's reason for a loss: the position gaps between its neighbours (any
# before its first event, for a leading one) that lost events, the largest.
_STREAM_GAP_LOSSES = """
select s.*, s.last_missing - s.first_missing + 1 as missing,
       (select arg_max(p.reason, least(p.last_missing, s.before_position - 1)
                 - greatest(p.first_missing, coalesce(s.after_position + 1, p.first_missing)))
        from positions p
        where p.source = s.source and p.first_missing < s.before_position
          and (s.after_position is null or p.last_missing > s.after_position)
          and p.reason not in (select unnest($no_loss::VARCHAR[]))) as lost
from streams s
order by s.source, s.before_position, s.stream, s.first_missing
"""


def _stream_gap_reasons(streams: pl.DataFrame, accepted: pl.DataFrame) -> list[str]:
    """Each stream gap's reason (``streams`` in order of ``before_position``): its loss,
    else the accepted removals that can hold its missing versions, each removed position
    given to one gap only (earliest bound first, the lowest positions first), else
    ``unknown``: a version the writer skipped, or one lost beside another stream's.

    >>> gaps = pl.DataFrame({"source": ["s", "s"], "after_position": [1, 1],
    ...     "before_position": [5, 6], "missing": [1, 1], "lost": [None, None]})
    >>> removed = pl.DataFrame({"source": ["s"], "first_missing": [3], "last_missing": [3],
    ...     "reason": ["deleted"]})
    >>> _stream_gap_reasons(gaps, removed)  # one deletion: one stream's version, not two
    ['deleted', 'unknown']
    """
    rows = streams.select("source", "after_position", "before_position", "missing", "lost")
    lows: dict[str, list[int]] = {}  # per source: where windows begin (after + 1)
    for source, after, _, _, lost in rows.rows():
        if lost is None and after is not None:
            lows.setdefault(source, []).append(after + 1)
    free = {
        source: _Removed(part, sorted(set(lows.get(source, []))))
        for (source,), part in accepted.partition_by("source", as_dict=True).items()
    }
    reasons: list[str] = []
    for source, after, before, missing, lost in rows.rows():
        removed = free.get(source)
        given = (
            None if lost is not None or removed is None else removed.give(after, before, missing)
        )
        reasons.append(lost or given or "unknown")
    return reasons


class _Removed:
    """A source's accepted removed positions not given to a stream gap yet.

    Ranges are cut up front wherever a window begins, so a window takes whole ranges
    from their starts; a range given out entirely is skipped through ``_next``.
    """

    def __init__(self, removed: pl.DataFrame, cuts: list[int]) -> None:
        pieces: list[tuple[int, int, str]] = []
        for first, last, reason in (
            removed.sort("first_missing").select("first_missing", "last_missing", "reason").rows()
        ):
            at = bisect.bisect_right(cuts, first)
            while at < len(cuts) and cuts[at] <= last:
                pieces.append((first, cuts[at] - 1, reason))
                first = cuts[at]
                at += 1
            pieces.append((first, last, reason))
        self.firsts = [p[0] for p in pieces]
        self.lasts = [p[1] for p in pieces]
        self.reasons = [p[2] for p in pieces]
        self._next = list(range(len(pieces) + 1))  # the next piece with positions left

    def _live(self, i: int) -> int:
        root = i
        while self._next[root] != root:
            root = self._next[root]
        while self._next[i] != root:  # path compression
            self._next[i], i = root, self._next[i]
        return root

    def give(self, after: int | None, before: int, missing: int) -> str | None:
        """The reason of removed positions in ``(after, before)`` that can hold
        ``missing`` versions, given out; None (and nothing given) when too few."""
        i = self._live(0 if after is None else bisect.bisect_left(self.lasts, after + 1))
        taken: list[tuple[int, int]] = []  # (piece, positions taken from its start)
        need = missing
        while need and i < len(self.firsts) and self.firsts[i] < before:
            take = min(need, min(self.lasts[i], before - 1) - self.firsts[i] + 1)
            taken.append((i, take))
            need -= take
            i = self._live(i + 1)
        if need:
            return None
        for piece, take in taken:
            self.firsts[piece] += take
            if self.firsts[piece] > self.lasts[piece]:
                self._next[piece] = piece + 1
        return self.reasons[taken[0][0]]


def stream_gaps_sql(within: str = "") -> str:
    """SQL of the stream gaps (``source, stream, first_missing, last_missing``), of the
    streams the relation ``within`` (``source, stream``) names, or of all."""
    return _STREAM_GAPS.format(
        within=f"semi join ({within}) using (source, stream)" if within else ""
    )


@dataclass(frozen=True, repr=False)
class Gaps(CheckResult):
    """Missing ranges of positions; both tables have inclusive ranges and a ``missing`` count.

    - ``positions``: ``source, first_missing, last_missing, missing, reason,
      recorded, detail`` — ``reason`` is one of ``GAP_REASONS`` or
      ``unknown``; ``recorded`` is False when the reason is a guess.
    - ``streams``: ``source, stream, first_missing, last_missing, missing,
      reason`` — what removed the missing versions: the largest position
      gap that lost events between the stream's neighbouring events; else
      the ``accepted`` removals there, as far as they can hold every missing
      version (each removed position given to one stream only); else
      ``unknown`` (the writer skipped a version, or the positions say nothing).
    - ``unchecked``: ``source, check, events, null_columns, reason`` — the
      sources whose streams were not checked (``stream`` or
      ``stream_position`` null in every event); not a finding.

    ``accepted``: reasons the caller expects (``deleted`` and ``retention``
    in a KV bucket, a stream with message TTLs or rollups, which remove
    messages by design): listed, but no fault, as the harmless ones; so are the
    stream gaps they explain.
    """

    name: ClassVar[str] = "gaps"
    main: ClassVar[str] = "positions"

    positions: pl.DataFrame
    streams: pl.DataFrame
    unchecked: pl.DataFrame
    accepted: frozenset[str] = frozenset()
    #: ``source, first_position, last_position`` archived: what the chart's axis spans.
    extent: pl.DataFrame | None = None

    def tables(self) -> dict[str, pl.DataFrame]:
        return {"positions": self.positions, "streams": self.streams, "unchecked": self.unchecked}

    def highlights(self) -> dict[str, pl.DataFrame]:
        # A table shows its first rows: faults first, the rarer reasons before the common
        # (a few deleted stream gaps sat behind a thousand retention ones, by name).
        return {  # the summary says what went unchecked
            "positions": _findings_first(self.positions, self._no_fault),
            "streams": _findings_first(self.streams, sorted(self.accepted)),
        }

    @property
    def faults(self) -> pl.DataFrame:
        """Position gaps that lost events (every reason but the harmless and accepted ones)."""
        return self.positions.filter(~pl.col("reason").is_in(self._no_fault))

    @property
    def _no_fault(self) -> list[str]:
        return sorted(HARMLESS_REASONS | self.accepted)

    @property
    def stream_faults(self) -> pl.DataFrame:
        """Stream gaps that lost events (all but those the accepted reasons explain)."""
        return self.streams.filter(~pl.col("reason").is_in(sorted(self.accepted)))

    @property
    def found(self) -> int:
        return self.faults.height + self.stream_faults.height

    @as_text
    def summary(self) -> str:
        faults = self.faults
        parts = [
            f"{int(faults['missing'].sum() or 0)} missing position(s) in {faults.height} "
            f"range(s) ({_by_reason(faults) or 'none'})"
        ]
        harmless = self.positions.filter(pl.col("reason").is_in(sorted(HARMLESS_REASONS)))
        if harmless.height:
            parts.append(
                f"{int(harmless['missing'].sum())} that never held an event "
                f"({_by_reason(harmless)}; no fault)"
            )
        accepted = self.positions.filter(pl.col("reason").is_in(sorted(self.accepted)))
        if accepted.height:
            parts.append(
                f"{int(accepted['missing'].sum())} removed as expected ({_by_reason(accepted)}; "
                "accepted)"
            )
        # "0 stream gaps" would read as clean for a source that was never looked at.
        stream_faults = self.stream_faults.height
        if self.streams.height or self.unchecked.height == 0:
            explained = self.streams.height - stream_faults
            also = f" (and {explained} of the accepted reasons)" if explained else ""
            parts.append(f"{stream_faults} stream gap(s){also}")
        return "; ".join(parts + not_checked_lines(self.unchecked))

    def chart(self) -> alt.TopLevelMixin:
        from workbench.charts.gaps import gaps_chart  # charts sit above analysis

        return gaps_chart(self.positions, extent=self.extent)


def _by_reason(positions: pl.DataFrame) -> str:
    """``reason: missing`` of each reason in ``positions``, as a list in words."""
    by_reason = positions.group_by("reason").agg(pl.col("missing").sum()).sort("reason")
    return ", ".join(f"{r}: {n}" for r, n in by_reason.rows())


def _late_apart(positions: pl.DataFrame) -> pl.DataFrame:
    """Cut the positions of ``committed-late`` records out of the other ranges that hold
    them (recorded first, as a rollback): each missing position is counted once, by
    what it turned out to be. Late records are few; the cutting is plain Python.

    >>> frame = pl.DataFrame({"source": ["s", "s"], "first_missing": [13, 13],
    ...     "last_missing": [13, 50], "missing": [1, 38],
    ...     "reason": ["committed-late", "rolled-back"]})
    >>> _late_apart(frame).select("first_missing", "last_missing", "missing", "reason").rows()
    [(13, 13, 1, 'committed-late'), (14, 50, 37, 'rolled-back')]
    """
    late = positions.filter(pl.col("reason") == "committed-late")
    if not late.height:
        return positions
    cuts: dict[str, list[tuple[int, int]]] = {}
    for source, first, last in late.select("source", "first_missing", "last_missing").rows():
        cuts.setdefault(source, []).append((first, last))
    rows = []
    for row in positions.iter_rows(named=True):
        pieces = [(row["first_missing"], row["last_missing"])]
        if row["reason"] != "committed-late":
            for cut_first, cut_last in cuts.get(row["source"], []):
                pieces = [
                    piece
                    for first, last in pieces
                    for piece in (
                        (first, min(last, cut_first - 1)),
                        (max(first, cut_last + 1), last),
                    )
                    if piece[0] <= piece[1]
                ]
        rows += [
            {**row, "first_missing": a, "last_missing": b, "missing": b - a + 1} for a, b in pieces
        ]
    return pl.DataFrame(rows, schema=positions.schema).sort(
        "source", "first_missing", "last_missing"
    )


def _findings_first(frame: pl.DataFrame, no_fault: list[str]) -> pl.DataFrame:
    """``frame``'s gaps, faults first, unknown ones first of those, then rarer reasons.

    >>> f = pl.DataFrame({"reason": ["retention", "retention", "rolled-back", "deleted"]})
    >>> _findings_first(f, ["rolled-back"])["reason"].to_list()
    ['deleted', 'retention', 'retention', 'rolled-back']
    """
    if frame.is_empty():
        return frame
    return (
        frame.with_row_index("_order")
        .with_columns(_n=pl.len().over("reason"))
        .sort(
            pl.col("reason").is_in(no_fault),
            pl.col("reason") != "unknown",
            "_n",
            "_order",
        )
        .drop("_order", "_n")
    )


def find_gaps(reader: ArchiveReader, *, accept: str | Collection[str] = ()) -> Gaps:
    """Find missing positions in every source and stream of the archive; gaps of the
    ``accept`` reasons are expected (see :class:`Gaps`)."""
    accept = names_given(accept, "accept", ArchiveError, "gap reason")
    unknown = sorted(set(accept) - set(GAP_REASONS) - {"unknown"})
    if unknown:
        raise ArchiveError(
            f"accepted gap reason(s) {', '.join(unknown)}: not a reason; "
            f"one of {', '.join(GAP_REASONS)}, unknown"
        )
    reader.refresh_if_stale()
    query = _GAPS_WITH_RECORDS if has_view(reader, "gap_records") else _GAPS_WITHOUT_RECORDS
    positions = reader.sql(
        f"select *, last_missing - first_missing + 1 as missing from ({query}) "
        "order by source, first_missing, last_missing"
    ).pl()
    positions = _late_apart(positions).select(
        "source", "first_missing", "last_missing", "missing", "reason", "recorded", "detail"
    )
    accepted = positions.filter(pl.col("reason").is_in(sorted(accept)))
    streams = reader.sql(
        _STREAM_GAP_LOSSES,
        params={"no_loss": sorted(HARMLESS_REASONS | set(accept))},
        streams=reader.sql(stream_gaps_sql()).to_arrow_table(),
        positions=positions,
    ).pl()
    streams = (
        streams.with_columns(
            reason=pl.Series(_stream_gap_reasons(streams, accepted), dtype=pl.String)
        )
        .select("source", "stream", "first_missing", "last_missing", "missing", "reason")
        .sort("source", "stream", "first_missing")
    )
    return Gaps(
        positions=positions,
        streams=streams,
        unchecked=find_unchecked(reader, [STREAM_GAPS_NEED]),
        accepted=frozenset(accept),
        extent=pl.DataFrame(
            [(f.source, f.first, f.last) for f in reader.files],
            schema={"source": pl.String, "first_position": pl.Int64, "last_position": pl.Int64},
            orient="row",
        )
        .group_by("source")
        .agg(pl.col("first_position").min(), pl.col("last_position").max())
        .sort("source"),
    )
