"""The causation graph: which event caused which, as nodes and edges.

Built by one recursive query in DuckDB. An event's parent is the archived
event its ``causation_id`` names. Roots are events whose ``causation_id`` is
empty, equals their ``correlation_id`` (the generator's and most
frameworks' convention: the first event is caused by the request/command,
which is not an archived event) or names no archived event. The last kind
is an *orphan*: its cause is missing from the archive, unless its
``causation_id`` matches an ``external`` glob pattern (``"cmd-*"``: services
that record the command an event answers as its cause; commands are not
archived events). Events that cannot be
reached from any root sit in (or below) a causation *cycle*.

Per node: ``depth`` below its root, ``children`` (fan-out), ``order`` (tree
order: depth first, siblings by time) and ``seconds`` since its parent
(time per edge, from ``occurred_at``, else ``recorded_at``). An event id
archived twice is one node (its first copy); the same id from two CloudEvents
producers (``ce-source``) is two events, and a cause named by such an id is
taken from the effect's own producer where it has one (an *ambiguous* link).

>>> import tempfile, pyarrow as pa
>>> from workbench.archive import ArchiveReader, ArchiveWriter
>>> root = tempfile.mkdtemp()
>>> _ = ArchiveWriter(root, "s").append(pa.table({
...     "global_position": [1, 2, 3, 4], "recorded_at": [0, 1_000_000, 2_000_000, 3_000_000],
...     "event_id": ["a", "b", "c", "d"], "correlation_id": ["r", "r", "r", "r"],
...     "causation_id": ["r", "a", "a", "zz"]}))
>>> graph = find_causation(ArchiveReader(root))
>>> graph.nodes.select("event_id", "depth", "children", "orphan").rows()
[('a', 0, 2, False), ('b', 1, 0, False), ('c', 1, 0, False), ('d', 0, 0, True)]
>>> graph.edges.select("parent_id", "event_id", "seconds").rows()
[('a', 'b', 1.0), ('a', 'c', 2.0)]
>>> find_causation(ArchiveReader(root), external=["z*"]).orphans.height
0
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import duckdb
import polars as pl

from workbench._duckdb import bounded_memory
from workbench._sql import CE_PRODUCER
from workbench._text import as_text, names_given
from workbench.analysis._unchecked import UNCHECKED_SCHEMA, Need, find_unchecked, not_checked_lines
from workbench.analysis.result import CheckResult
from workbench.archive import ArchiveReader
from workbench.errors import ArchiveError

if TYPE_CHECKING:
    import altair as alt

__all__ = ["Causation", "find_causation"]

#: Fewest caused events of a source, all orphans, before its causes are said to be outside.
_OUTSIDE_AT_LEAST = 10

# The graph is built in steps, each a temporary table, each dropped once the next
# is built: one query of common table expressions held every step's rows and
# hash tables at once: a peak of 2.3 GB per million events, 1.8 GB in steps.
_STEPS = (
    # One node per event id and producer: its first copy. A CloudEvent's id is unique
    # per producer (ce-source), not across producers: two producers' "17" are two events.
    """create temp table {t}_ev as
    select row_number() over () as node, event_id, source, global_position, event_type, stream,
           correlation_id, causation_id, event_at, producer
    from (select *, coalesce(occurred_at, recorded_at) as event_at, {producer} as producer
          from events where event_id is not null {where})
    qualify row_number() over (
        partition by event_id, producer order by source, global_position) = 1""",
    # Each node's parent, and whether its cause is missing from the whole archive. An id
    # several producers use names the effect's own producer's event when it has one
    # (else the first): a guess, counted as ambiguous. A first event naming itself as
    # cause and correlation (EventStoreDB's convention) is a root; one naming only
    # itself as cause may mean another producer's event of its id: ambiguous too.
    """create temp table {t}_n as
    select ev.*, p.node as parent_node, p.event_id is not null as has_parent,
           p.event_at as parent_at, p.global_position as parent_position,
           {ambiguous} as ambiguous,
           ev.causation_id is not null and ev.causation_id is distinct from ev.correlation_id
               and ev.causation_id is distinct from ev.event_id and {missing}
               and not {external} as orphan
    from {t}_ev ev
    left join {t}_ev p on p.event_id = ev.causation_id and p.node <> ev.node
        and not (ev.causation_id = ev.event_id and ev.correlation_id is not distinct from ev.event_id)
    {pick}""",
    "drop table {t}_ev",
    # Down from the roots; a node no root reaches sits in (or below) a cycle.
    """create temp table {t}_tree as
    with recursive tree(node, root_id, depth, path) as (
        select node, event_id, 0, [epoch_us(event_at), global_position]
        from {t}_n where not has_parent
        union all
        select c.node, t.root_id, t.depth + 1,
               list_concat(t.path, [epoch_us(c.event_at), c.global_position])
        from tree t join {t}_n c on c.parent_node = t.node
    )
    select * from tree""",
    """create temp table {t}_nodes as
    with fan as (
        select parent_node as node, count(*) as children from {t}_n where has_parent group by 1
    )
    select n.source, n.global_position, n.event_id, n.event_type, n.stream, n.correlation_id,
           n.causation_id, case when n.has_parent then n.causation_id end as parent_id,
           n.parent_position, n.ambiguous,
           t.root_id, t.depth, coalesce(f.children, 0) as children, n.event_at, n.parent_at,
           epoch(n.event_at) - epoch(n.parent_at) as seconds, n.orphan,
           t.node is null as cyclic, t.path
    from {t}_n n left join {t}_tree t using (node) left join fan f using (node)""",
    "drop table {t}_n",
    "drop table {t}_tree",
    # Tree order (depth first, siblings by time) sorted on the keys alone: sorting the
    # whole rows by their paths took as much again as the rest.
    """create temp table {t}_order as
    select source, global_position,
           row_number() over (order by path nulls last, global_position) as tree_order
    from {t}_nodes""",
    """create temp table {t} as
    select o.tree_order, n.* exclude (path)
    from {t}_nodes n join {t}_order o using (source, global_position)""",
    "drop table {t}_nodes",
    "drop table {t}_order",
)

#: Choosing one parent among several producers' events with the cause's id. Without
#: producers an id is one node: the join finds one parent at most, and the window over
#: every node (a third of the graph's time) is left out.
_PICK = """qualify row_number() over (
        partition by ev.node
        order by p.producer is not distinct from ev.producer desc, p.source, p.global_position
    ) = 1"""
_AMBIGUOUS = (
    "count(p.node) over (partition by ev.node) > 1 "
    "or (p.node is not null and ev.causation_id = ev.event_id)"
)

#: A cause missing from the archive: when the graph is the whole archive's, a parent
#: not found is one (every event id is a node); for one correlation, another may hold it.
_MISSING_ANYWHERE = "p.event_id is null"
_MISSING_FOR_ONE = (
    "p.event_id is null and not exists (select 1 from events a where a.event_id = ev.causation_id)"
)

_CORRELATIONS = """
select correlation_id, count(*) as events,
       count(*) filter (where parent_id is null) as roots,
       count(*) filter (where orphan) as orphans,
       count(*) filter (where cyclic) as cyclic,
       max(depth) as depth, max(children) as max_fan_out,
       min(event_at) as first_at, max(event_at) as last_at,
       epoch(max(event_at)) - epoch(min(event_at)) as seconds
from {nodes} where correlation_id is not null
group by correlation_id order by first_at, correlation_id
"""


@dataclass(frozen=True, repr=False)
class Causation(CheckResult):
    """The causation graph and its faults.

    - ``nodes``: ``tree_order, source, global_position, event_id, event_type,
      stream, correlation_id, causation_id, parent_id, parent_position,
      ambiguous, root_id, depth, children, event_at,
      parent_at, seconds, orphan, cyclic`` in tree order (``depth`` and
      ``root_id`` are null for cyclic nodes; ``ambiguous``: the parent was
      chosen among events of several producers sharing its id).
    - ``edges``: ``parent_id, event_id, seconds`` (parent → child).
    - ``correlations``: per ``correlation_id``: ``events, roots, orphans,
      cyclic, depth, max_fan_out, first_at, last_at, seconds``.
    """

    name: ClassVar[str] = "causation"
    main: ClassVar[str] = "nodes"

    nodes: pl.DataFrame
    edges: pl.DataFrame
    correlations: pl.DataFrame
    correlation_id: str | None = None
    #: Events not in the graph: no ``event_id``, or a copy of one already in it.
    left_out: int = 0
    #: Sources whose first events name themselves as cause and correlation (EventStoreDB's
    #: convention), in the whole archive: there, an event caused by its correlation id
    #: names a first event, which may be lost.
    self_rooted: tuple[str, ...] = ()
    #: Sources no event of which names its cause: no orphan or cycle could be found in
    #: them (a raw NATS stream), which is no clean 0.
    unchecked: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=UNCHECKED_SCHEMA))

    def tables(self) -> dict[str, pl.DataFrame]:
        # What found counts is a table of its own, as every check's findings are.
        return {
            "nodes": self.nodes,
            "edges": self.edges,
            "correlations": self.correlations,
            "orphans": self.orphans,
            "cycles": self.cycles,
            "unchecked": self.unchecked,
        }

    def highlights(self) -> dict[str, pl.DataFrame]:
        columns = ["source", "global_position", "event_id", "event_type", "correlation_id",
                   "causation_id"]  # fmt: skip
        return {
            "orphans": self.orphans.select(columns),
            "cycles": self.cycles.select(columns),
            "largest correlations": self.correlations.sort("events", descending=True),
        }

    @property
    def orphans(self) -> pl.DataFrame:
        """Events whose cause is neither an archived event nor their correlation id,
        in position order."""
        return self.nodes.filter(pl.col("orphan")).sort("source", "global_position")

    @property
    def cycles(self) -> pl.DataFrame:
        """Events in a causation cycle or caused by one (no root reaches them)."""
        return self.nodes.filter(pl.col("cyclic"))

    @property
    def found(self) -> int:
        return self.orphans.height + self.cycles.height

    @as_text
    def summary(self) -> str:
        depth = self.nodes.select(pl.col("depth").max()).item() or 0
        fan = self.nodes.select(pl.col("children").max()).item() or 0
        loose = self.nodes.filter(pl.col("correlation_id").is_null()).height
        without = f" ({loose} without a correlation id)" if loose else ""
        left_out = (
            f"; {self.left_out} event(s) left out (no event_id, or a copy of one in the graph)"
            if self.left_out
            else ""
        )
        outside = self._outside_lines()
        lines = [*outside, *self._doubt_lines(bool(outside)), *not_checked_lines(self.unchecked)]
        return (
            f"{self.nodes.height:,} event(s){without} in {self.correlations.height:,} correlation(s), "
            f"depth up to {depth}, fan-out up to {fan}; "
            f"{self.orphans.height} orphan(s), {self.cycles.height} cyclic event(s){left_out}"
            + "".join(f"; {line}" for line in lines)
        )

    def _doubt_lines(self, outside: bool) -> list[str]:
        """Links the graph made but cannot vouch for, and orphans that may be none
        (``outside``: the orphans' causes are said to be outside the store already)."""
        lines = []
        shared = (
            self.orphans.group_by("causation_id").len().filter(pl.col("len") > 1)
            if self.orphans.height
            else self.orphans.clear()
        )
        if shared.height and not outside:
            lines.append(
                f"{shared['len'].sum():,} of the orphans share {shared.height:,} missing "
                "cause(s), several each: a command answered by several events (Wolverine, "
                "Axon record its id), or a lost event with several effects; external=PATTERN "
                "(--external-causes) makes the commands' ids roots"
            )
        ambiguous = self.nodes.filter(pl.col("ambiguous")).height
        if ambiguous:
            lines.append(
                f"{ambiguous:,} link(s) ambiguous: the causation_id is an event id several "
                "producers (ce-source) used; the effect's own producer's event was taken "
                "where it has one"
            )
        if self.self_rooted:
            lost = self.nodes.filter(
                pl.col("source").is_in(self.self_rooted)
                & pl.col("parent_id").is_null()
                & (pl.col("causation_id") == pl.col("correlation_id"))
                & (pl.col("causation_id") != pl.col("event_id"))
            )
            if lost.height:
                lines.append(
                    f"{lost.height:,} event(s) of {', '.join(sorted(set(lost['source'])))}, "
                    "whose first events name themselves as cause and correlation "
                    "(EventStoreDB's convention), name a first event not archived (lost, or "
                    "a request): counted as roots"
                )
        early = self.nodes.filter(pl.col("seconds") < 0).height
        if early:
            lines.append(
                f"{early:,} event(s) occurred before their cause (clock skew between "
                "producers, or a wrong causation_id)"
            )
        return lines

    def _outside_lines(self) -> list[str]:
        """A source none of whose causes is an archived event records something else as
        the cause (prooph's and Axon's command ids): its orphans say nothing of loss."""
        caused = self.nodes.filter(
            pl.col("causation_id").is_not_null()
            & (pl.col("causation_id") != pl.col("correlation_id").fill_null(""))
            & ~pl.col("cyclic")
        )
        lines = []
        for source, events, orphans in (
            caused.group_by("source").agg(pl.len(), pl.col("orphan").sum()).sort("source").rows()
        ):
            if orphans == events >= _OUTSIDE_AT_LEAST:
                lines.append(
                    f"no causation_id of {source}'s {events:,} caused events names an archived "
                    "event: they name something else (commands?); external=PATTERN "
                    "(--external-causes) makes them roots ('????????-????-????-????-????????????' for UUIDs)"
                )
        return lines

    def chart(self, correlation_id: str | None = None) -> alt.TopLevelMixin:
        """Waterfall of one correlation (the one asked for, else the largest)."""
        from workbench.charts.causation import causation_waterfall

        wanted = correlation_id or self.correlation_id
        subtitle = None if wanted is None else f"correlation_id {wanted}"
        if wanted is None and self.correlations.height:
            wanted = self.correlations.sort("events", descending=True)["correlation_id"][0]
            # Drawn unasked: say which, and that the others are a call away.
            subtitle = (
                f"correlation_id {wanted}, the only one"
                if self.correlations.height == 1
                else f"correlation_id {wanted}: the largest of {self.correlations.height:,} "
                "(chart(correlation_id) draws another)"
            )
        # No correlation at all (raw NATS messages carry none): an empty waterfall.
        nodes = (
            self.nodes.clear()
            if wanted is None
            else self.nodes.filter(pl.col("correlation_id") == wanted)
        )
        if correlation_id is not None and not nodes.height:
            raise ArchiveError(f"no event of this graph has correlation_id {correlation_id!r}")
        return causation_waterfall(nodes, subtitle=subtitle)


def find_causation(
    reader: ArchiveReader,
    correlation_id: str | None = None,
    *,
    external: str | Sequence[str] = (),
) -> Causation:
    """Build the causation graph of the archive, or of one correlation.

    ``external``: glob patterns of causation ids that name something outside
    the event store (a command, a request): such a cause is a root, not an orphan.
    """
    if correlation_id is not None and not isinstance(correlation_id, str):
        raise ArchiveError(
            f"correlation_id: the id as text (str({correlation_id!r})), not "
            f"{type(correlation_id).__name__} {correlation_id!r}"
        )
    patterns = names_given(external, "external", ArchiveError, "glob pattern")
    reader.refresh_if_stale()
    where = "" if correlation_id is None else "and correlation_id = $correlation_id"
    params = {} if correlation_id is None else {"correlation_id": correlation_id}
    outside = " or ".join(f"ev.causation_id glob $external_{i}" for i in range(len(patterns)))
    table = f"_wb_causation_{uuid.uuid4().hex[:12]}"
    values = params | {f"external_{i}": pattern for i, pattern in enumerate(patterns)}

    def drop() -> None:
        for suffix in ("", "_ev", "_n", "_tree", "_nodes", "_order"):
            reader.con.execute(f"drop table if exists {table}{suffix}")

    # One scan for both: whether this graph's events have producers, and which sources
    # of the whole archive root their flows in themselves (see Causation.self_rooted).
    producers, rooted = reader.con.execute(
        f"""select coalesce(bool_or(contains(metadata, '"ce-source"'))
                                filter (where true {where}), false),
                   list(distinct source order by source)
                       filter (where causation_id = event_id and correlation_id = event_id)
            from events""",
        params or None,
    ).fetchall()[0]
    self_rooted = tuple(str(s) for s in rooted or ())

    def build() -> None:
        for step in _STEPS:
            sql = step.format(
                t=table,
                where=where,
                missing=_MISSING_ANYWHERE if correlation_id is None else _MISSING_FOR_ONE,
                producer=CE_PRODUCER if producers else "null",
                pick=_PICK if producers else "",
                ambiguous=_AMBIGUOUS if producers else "false",
                external=f"coalesce({outside}, false)" if patterns else "false",
            )
            used = {k: v for k, v in values.items() if f"${k}" in sql}
            reader.con.execute(sql, used or None)

    try:
        try:
            # Capped: uncapped, DuckDB held 1.5 GB per million events building the graph.
            with bounded_memory(reader.con):
                build()
        except duckdb.OutOfMemoryException:  # a step that could not spill: as before
            drop()
            build()
        nodes = reader.sql(f"select * from {table} order by tree_order").pl()
        correlations = reader.sql(_CORRELATIONS.format(nodes=table)).pl()
        considered = reader.sql(
            f"select count(*) from events where true {where}", params=params
        ).fetchall()[0][0]
    finally:
        drop()
    if correlation_id is not None and not nodes.height:
        raise ArchiveError(
            f"no archived event (with an event_id) has correlation_id {correlation_id!r}"
        )
    edges = nodes.filter(pl.col("parent_id").is_not_null()).select(
        "parent_id", "event_id", "seconds"
    )
    return Causation(
        nodes=nodes,
        edges=edges,
        correlations=correlations,
        correlation_id=correlation_id,
        left_out=int(considered) - nodes.height,
        self_rooted=self_rooted,
        unchecked=find_unchecked(reader, [_NEED]) if correlation_id is None else _NONE,
    )


#: What finding an orphan or a cycle takes of an event.
_NEED = Need("causation", (("event_id",), ("causation_id",)), "an event_id and a causation_id")
_NONE = pl.DataFrame(schema=UNCHECKED_SCHEMA)
