"""Coverage: which event types and schema versions of an archive a projection handles.

Reported before a replay runs, so an unhandled type or a version without an
upcaster to the version the handler expects is seen before it silently
leaves rows out.

>>> import polars as pl
>>> from workbench.replay.projection import Projection, on, upcaster
>>> class P(Projection):
...     @upcaster("A", from_version=1)
...     def a_v1(self, data): return data
...     @on("A")
...     def a(self, event, tables): pass
>>> counts = pl.DataFrame({"event_type": ["A", "A", "A", "B"],
...                        "schema_version": [1, 2, 3, 1], "events": [5, 6, 7, 8]})
>>> cov = coverage(P(), counts)
>>> cov.df().select("event_type", "schema_version", "status").rows()[1:]
[('A', 2, 'not upcast to v3: its handler gets them as v2 (add an upcaster, or @on(..., any_version=True) for a handler that reads every version)'), ('A', 3, 'handled'), ('B', 1, 'no handler')]
>>> cov.ok, cov.uncovered_events
(False, 19)
>>> Coverage.empty()
Coverage(all events handled)
>>> untyped = pl.DataFrame({"event_type": [None], "schema_version": [1], "events": [3]})
>>> coverage(P(), untyped).problems()
['(no event type) v1 (3 events): no event type (archive with --map event_type=… to handle them)']
>>> unversioned = pl.DataFrame({"event_type": ["A"], "schema_version": [None], "events": [2]})
>>> coverage(P(), pl.concat([counts, unversioned])).problems()[0]
"A (no version) (2 events): no schema_version, so not upcast to v3 (its store's version was missing or not an integer; @on(..., any_version=True) reads it)"
>>> class Q(Projection):
...     @on("A", "B", any_version=True)
...     def count(self, event, tables): pass
>>> coverage(Q(), counts).ok
True
>>> class Ahead(Projection):
...     @on("A", "Archived", any_version=True)
...     def any(self, event, tables): pass
>>> coverage(Ahead(), counts.filter(pl.col("event_type") == "A")).summary()
'all events handled; no events of the handled type(s) Archived (yet to come? misspelt?)'
>>> coverage(Ahead(), counts.filter(pl.col("event_type") == "A"), filtered=True).notes()
['no events of the handled type(s) Archived (left out by where/until?)']
>>> class Typo(Projection):
...     @on("MemoryCreatd")
...     def created(self, event, tables): pass
>>> typed = pl.DataFrame({"event_type": ["MemoryCreated"], "schema_version": [1], "events": [4]})
>>> coverage(Typo(), typed).problems()[-1]
'MemoryCreatd (no events): Typo.created handles a type no event has (did you mean MemoryCreated?)'
>>> class Topic(Projection):
...     @on("memapp:MemoryCreated")
...     def created(self, event, tables): pass
>>> coverage(Topic(), typed).problems()[-1]
'memapp:MemoryCreated (no events): Topic.created handles a type no event has (did you mean MemoryCreated?)'
>>> class Bare(Projection):
...     @on("Returned")
...     def returned(self, event, tables): pass
>>> books = pl.DataFrame({"event_type": ["Book.Returned"], "schema_version": [1], "events": [4]})
>>> coverage(Bare(), books).problems()[-1]
'Returned (no events): Bare.returned handles a type no event has (did you mean Book.Returned?)'
"""

from __future__ import annotations

import difflib
import html
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from workbench import envelope
from workbench._text import as_text
from workbench.replay.event import ENVELOPE_FIELDS
from workbench.replay.projection import Projection

__all__ = ["Coverage", "coverage"]


#: Statuses that are not a problem: a handled or ignored type, a handled type yet to
#: come, a source's own message (a NATS marker: no domain event).
_SOURCE_OWN = "the source's own message (no domain event)"
_FINE = ("handled", "ignored", "no events", _SOURCE_OWN)
#: A CloudEvents batch holds domain events, which no handler of their types is given.
_BATCH = (
    "CloudEvents batches: the events in each are not replayed one by one (a handler of "
    f"{envelope.BATCH_EVENT_TYPE} gets a batch's data, the list of its events; listed in "
    "ignore, they are left out)"
)


@dataclass(frozen=True)
class Coverage:
    """Per (event type, schema version): events, handler, upcast target and status."""

    table: pl.DataFrame
    #: Envelope fields null in every handled event: a handler reading one gets None.
    absent: tuple[str, ...] = ()
    #: Whether the events counted were cut by ``where`` or ``until``.
    filtered: bool = False

    @property
    def ok(self) -> bool:
        """True when every event of the archive reaches a handler at its expected version."""
        return self.uncovered_events == 0

    @property
    def uncovered_events(self) -> int:
        """Events whose type or version no handler / upcaster chain handles."""
        gaps = self.table.filter(~pl.col("status").is_in(_FINE))
        return int(gaps["events"].sum())

    def problems(self) -> list[str]:
        """One line per uncovered (event type, version)."""
        rows = self.table.filter(~pl.col("status").is_in(_FINE)).iter_rows(named=True)
        return [
            f"{_type_label(r['event_type'])} {_version_label(r['schema_version'])} "
            f"({r['events']:,} events): {r['status']}"
            if r["events"]
            else f"{r['event_type']} (no events): {r['handler']} handles a type no event has"
            f"{r['status'].removeprefix('no events')}"
            for r in rows
        ]

    def notes(self) -> list[str]:
        """What is worth knowing but covers no less: handled types no event has (yet to
        come, or misspelt), envelope fields no handled event carries."""
        notes = []
        idle = self.table.filter(pl.col("status") == "no events")["event_type"].to_list()
        if idle:
            why = "left out by where/until?" if self.filtered else "yet to come? misspelt?"
            notes.append(f"no events of the handled type(s) {', '.join(idle)} ({why})")
        if self.absent:
            fields = ", ".join(f"event.{name}" for name in self.absent)
            notes.append(
                f"no handled event has {' or '.join(self.absent)}: {fields} is None in "
                "every handler (archive with --map to give it)"
            )
        return notes

    @as_text
    def summary(self) -> str:
        """One line: all events handled, or each uncovered type and version; and the
        :meth:`notes`."""
        text = "all events handled" if self.ok else "; ".join(self.problems())
        return "; ".join([text, *self.notes()])

    def __repr__(self) -> str:
        return f"Coverage({self.summary()})"

    @classmethod
    def empty(cls) -> Coverage:
        """Coverage with no rows (a SQL projection reads every event)."""
        return cls(_frame([]))

    def df(self) -> pl.DataFrame:
        return self.table

    def arrow(self) -> pa.Table:
        """The same as :meth:`df`, as an Arrow table."""
        return self.df().to_arrow()

    def head(self, n: int = 5) -> pl.DataFrame:
        """The first ``n`` rows of :meth:`df`."""
        return self.df().head(n)

    def _repr_html_(self) -> str:
        return f"<p>coverage: {html.escape(self.summary())}</p>" + self.table._repr_html_()


def _type_label(event_type: str | None) -> str:
    return "(no event type)" if event_type is None else event_type


def _version_label(version: int | None) -> str:
    return "(no version)" if version is None else f"v{version}"


def coverage(projection: Projection, counts: pl.DataFrame, *, filtered: bool = False) -> Coverage:
    """Coverage of ``counts`` (``event_type, schema_version, events``) by ``projection``;
    ``filtered``: the events were cut by ``where`` or ``until``."""
    handlers = projection.handlers()
    any_version = projection.any_version()
    chain = projection.upcasters()
    targets: dict[str, int] = {}
    for event_type, version in counts.select("event_type", "schema_version").iter_rows():
        targets[event_type] = max(targets.get(event_type, 0), 1 if version is None else version)
    for (event_type, _), (to_version, _) in chain.items():
        targets[event_type] = max(targets.get(event_type, 0), to_version)
    rows: list[tuple[object, ...]] = []
    for event_type, version, events in (
        counts.sort("event_type", "schema_version")
        .select("event_type", "schema_version", "events")
        .iter_rows()
    ):
        final = version  # None: the store's version was missing or not an integer
        while (step := chain.get((event_type, final))) is not None and step[0] > final:
            final = step[0]
        handler = projection.handler_label(event_type) if event_type else None
        if event_type in projection.ignore:
            status = "ignored"
        elif event_type is None:  # e.g. raw NATS messages: nothing to dispatch on
            status = "no event type (archive with --map event_type=… to handle them)"
        elif event_type == envelope.BATCH_EVENT_TYPE and event_type not in handlers:
            status = _BATCH
        elif event_type.startswith(envelope.SOURCE_OWN_PREFIX) and event_type not in handlers:
            status = _SOURCE_OWN
        elif event_type not in handlers:
            status = "no handler"
        elif event_type in any_version:
            status = "handled"
        elif final is None and targets[event_type] > 1:  # no chain starts from "unknown"
            status = (
                f"no schema_version, so not upcast to v{targets[event_type]} (its store's "
                "version was missing or not an integer; @on(..., any_version=True) reads it)"
            )
        elif final is not None and final < targets[event_type]:
            status = (
                f"not upcast to v{targets[event_type]}: its handler gets them as v{final} "
                "(add an upcaster, or @on(..., any_version=True) for a handler that reads "
                "every version)"
            )
        else:
            status = "handled"
        rows.append((event_type, version, int(events), handler, final, status))
    # A handler whose type no event has: normal for a type yet to come, a typo when an
    # unhandled type of the archive is spelt nearly the same.
    present = {t for t in counts["event_type"] if t is not None}
    unhandled = sorted(
        t
        for t in present - set(handlers) - set(projection.ignore)
        if not t.startswith(envelope.SOURCE_OWN_PREFIX)
    )
    for event_type in sorted(set(handlers) - present):
        # A topic (module:Class.Event, as the eventsourcing library stores it) for a type,
        # or a bare event class for one named with its aggregate (Book.Returned).
        named = event_type.rpartition(":")[2]
        close = [named] if named in unhandled else []
        close = close or [t for t in unhandled if t.rpartition(".")[2] == named][:1]
        close = close or difflib.get_close_matches(event_type, unhandled, n=1, cutoff=0.8)
        status = f"no events (did you mean {close[0]}?)" if close else "no events"
        label = projection.handler_label(event_type)
        rows.append((event_type, targets.get(event_type, 1), 0, label, None, status))
    table = _frame(rows)
    return Coverage(table, _absent(counts, table), filtered)


def _absent(counts: pl.DataFrame, table: pl.DataFrame) -> tuple[str, ...]:
    """The :data:`ENVELOPE_FIELDS` no handled event carries (counts has ``with_<field>``).

    >>> counts = pl.DataFrame({"event_type": ["A", "B"], "schema_version": [1, 1],
    ...     "events": [2, 3], "with_stream": [2, 0], "with_stream_position": [0, 3]})
    >>> table = pl.DataFrame({"event_type": ["A", "B"], "schema_version": [1, 1],
    ...                       "status": ["handled", "no handler"]})
    >>> _absent(counts, table)
    ('stream_position',)
    """
    handled = set(
        table.filter(pl.col("status") == "handled")
        .select("event_type", "schema_version")
        .iter_rows()
    )
    rows = [
        r for r in counts.iter_rows(named=True) if (r["event_type"], r["schema_version"]) in handled
    ]
    if not rows:
        return ()
    return tuple(
        name
        for name in ENVELOPE_FIELDS
        if f"with_{name}" in counts.columns and not any(r[f"with_{name}"] for r in rows)
    )


def _frame(rows: Sequence[tuple[object, ...]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={
            "event_type": pl.String,
            "schema_version": pl.Int32,
            "events": pl.Int64,
            "handler": pl.String,
            "upcast_to": pl.Int32,
            "status": pl.String,
        },
        orient="row",
    )
