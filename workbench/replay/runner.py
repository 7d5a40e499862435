"""Applying decoded events to a projection's in-memory tables: the hot loop.

The runner dispatches each event to its handler, runs upcaster chains,
records lineage through the table states, samples handler time, and turns a
handler failure into an error naming the event and handler, or into a dead
letter. It knows nothing of DuckDB; the engine flushes its states.
"""

from __future__ import annotations

import gc
import traceback
from collections.abc import Callable, Collection, Sequence
from itertools import islice
from time import perf_counter
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from workbench.errors import ProjectionError, place, user_frames
from workbench.replay.event import (
    ENVELOPE_FIELDS,
    Columns,
    Event,
    decode,
    lazy_decoding,
    with_payload,
)
from workbench.replay.projection import Projection
from workbench.replay.state import Refusal, Tables, TableState, WriteLog, table_state

__all__ = ["OnError", "Runner"]

OnError = Literal["raise", "dead-letter"]

# One event in this many is timed; handler times are scaled up from the sample.
_SAMPLE = 32


class Runner:
    """A projection instance, its table states, and the loop that applies events."""

    def __init__(
        self,
        projection: Projection,
        *,
        on_error: OnError = "raise",
        event_types: Collection[str | None] | None = None,
        refusal: Refusal | None = None,
    ) -> None:
        if on_error not in ("raise", "dead-letter"):
            raise ProjectionError(f"on_error must be 'raise' or 'dead-letter', not {on_error!r}")
        self.projection = projection
        self.on_error = on_error
        self.log = WriteLog()
        # Dead-letter mode checks each write at once (``refusal``): found at a flush, a
        # row no table can store would be blamed on whichever event wrote it last.
        checks = refusal if on_error == "dead-letter" else None
        self.states = {t.name: table_state(t, self.log, checks) for t in projection.tables()}
        self.tables = Tables(self.states)
        cls = type(projection)
        self.handler_of: dict[str, str | None] = {
            event_type: getattr(cls, attr).__qualname__
            for event_type, attr in projection.handlers().items()
        }
        self.dispatch: dict[str, Callable[[Event, Tables], Any]] = {
            event_type: getattr(projection, attr)
            for event_type, attr in projection.handlers().items()
        }
        self.chain = projection.upcasters()
        self._upcast_types = pa.array(sorted({t for t, _ in self.chain}), pa.string())
        self.dead_letters: list[dict[str, Any]] = []
        self._tracebacks: dict[tuple[Any, ...], tuple[str, str | None]] = {}
        self.sampled_seconds: dict[str, float] = {}
        self.sampled_events: dict[str, int] = {}
        self.failures = 0
        self._seen = 0  # events given to apply() so far
        # Handled types to time a first event of: those the events will have, when known.
        self._untimed = set(self.dispatch)
        if event_types is not None:
            self._untimed &= set(event_types)

    def restart(self, projection: Projection) -> None:
        """Go on with a fresh instance over the same tables: a process restarted after
        a crash, whose output (the tables) survived and whose memory did not."""
        self.projection = projection
        self.dispatch = {
            event_type: getattr(projection, attr)
            for event_type, attr in projection.handlers().items()
        }

    # ------------------------------------------------------------------ decoding

    def decode(self, batch: Columns) -> list[Event]:
        """Events of ``batch`` with their payloads upcast to the handlers' versions."""
        # Decoding allocates a tuple and a payload dict per event, none of them
        # cyclic: the collector's passes over them cost 40% of decoding.
        enabled = gc.isenabled()
        gc.disable()
        try:
            events = decode(batch, eager=getattr(batch, "eager", ()))
        finally:
            if enabled:
                gc.enable()
        if len(self._upcast_types) and batch.num_rows:
            mask = pc.is_in(batch.column("event_type"), value_set=self._upcast_types)
            dropped = False
            for i in pc.indices_nonzero(mask).to_pylist():
                upcast = self._upcast(events[i])
                if upcast is None:  # the upcaster failed; the event is dead-lettered
                    dropped = True
                else:
                    events[i] = upcast
            if dropped:
                events = [e for e in events if self._upcast_ok(e)]
        return events

    def _upcast_ok(self, event: Event) -> bool:
        return event.data is None or (event.event_type, event.schema_version) not in self.chain

    def _upcast(self, event: Event) -> Event | None:
        version, data = event.schema_version, event.data
        step = self.chain.get((event.event_type, version))
        if step is None or data is None:  # nothing to upcast, or a payload that is not JSON
            return event
        attr = ""
        try:
            while step is not None:
                version, attr = step
                upcast = getattr(self.projection, attr)
                data = upcast(data)
                if data is None:  # a forgotten `return data`: the event would look unreadable
                    code = upcast.__code__
                    raise ProjectionError(
                        f"the upcaster (def at {place(code.co_filename, code.co_firstlineno)}) "
                        "returned None, not the payload; a missing return?"
                    )
                step = self.chain.get((event.event_type, version))
        except (Exception, SystemExit) as exc:
            self._fail(event, f"{type(self.projection).__qualname__}.{attr}", exc)
            return None
        return with_payload(event, version, data)

    # ------------------------------------------------------------------ applying

    def apply(self, events: Sequence[Event]) -> None:
        """Apply ``events`` in the given order.

        One event in :data:`_SAMPLE` is timed; so is the first event of each
        handled type not timed yet, so that a rare type gets a time too.
        """
        __tracebackhide__ = True  # the handler's frame is what matters
        start = 0
        for i in self._first_untimed(events):
            self._apply(events[start:i])
            self._time_one(events[i])
            start = i + 1
        self._apply(events[start:] if start else events)

    def _first_untimed(self, events: Sequence[Event]) -> list[int]:
        """Where in ``events`` the first event of each handled, never timed type is."""
        untimed = self._untimed
        if untimed:
            untimed -= self.sampled_events.keys()
        if not untimed:
            return []
        wanted = untimed & {ev[1] for ev in events}  # a set of a batch: ~25 ns an event
        found: list[int] = []
        for i, ev in enumerate(events):
            if not wanted:
                break
            if ev[1] in wanted:
                wanted.discard(ev[1])
                found.append(i)
        return found

    def _time_one(self, ev: Event) -> None:
        __tracebackhide__ = True  # the handler's frame is what matters
        h = self.dispatch.get(ev[1])
        if h is None:
            return
        self.log.append(~ev[0])
        lazy = lazy_decoding.seconds
        t = perf_counter()
        try:
            if (value := h(ev, self.tables)) is not None:
                self._returned(ev, value)
        except (Exception, SystemExit) as exc:  # not a sample: the time is the failure's
            self._fail(ev, self.handler_of.get(ev[1]) or "?", exc)
            return
        self._sample(ev[1], perf_counter() - t - (lazy_decoding.seconds - lazy))

    def _sample(self, event_type: str, seconds: float) -> None:
        """Count one timed event of ``event_type``, its handler's ``seconds``."""
        self.sampled_seconds[event_type] = self.sampled_seconds.get(event_type, 0.0) + seconds
        self.sampled_events[event_type] = self.sampled_events.get(event_type, 0) + 1

    def _apply(self, events: Sequence[Event]) -> None:
        __tracebackhide__ = True  # the handler's frame is what matters
        get = self.dispatch.get
        log = self.log
        tables = self.tables
        sample = self._sample
        it = iter(events)
        # Keep the sampling rhythm across calls: restarting it would time the
        # first event of every batch, which runs on cold caches.
        untimed = -self._seen % _SAMPLE
        self._seen += len(events)
        ev: Event | None = None
        while True:
            mark = log.append  # WriteLog.take() rebinds it between calls
            try:
                while True:
                    for ev in islice(it, untimed):
                        h = get(ev[1])
                        if h is not None:
                            mark(~ev[0])  # the event's writes follow it in the log
                            if (value := h(ev, tables)) is not None:
                                self._returned(ev, value)
                    # Then time one event; the next _SAMPLE - 1 run untimed.
                    untimed = _SAMPLE - 1
                    ev = next(it, None)
                    if ev is None:
                        return
                    h = get(ev[1])
                    if h is not None:
                        mark(~ev[0])
                        lazy = lazy_decoding.seconds
                        t = perf_counter()
                        if (value := h(ev, tables)) is not None:
                            self._returned(ev, value)
                        # A batch's column converted on this event's first read is
                        # decoding: scaled up by the sampling it would count 32 times.
                        sample(ev[1], perf_counter() - t - (lazy_decoding.seconds - lazy))
            except (Exception, SystemExit) as exc:
                assert ev is not None  # the event whose handler raised
                self._fail(ev, self.handler_of.get(ev[1]) or "?", exc)
                untimed = 0

    def _returned(self, event: Event, value: Any) -> None:
        """Refuse a handler that returned a row (a dict, or rows) and wrote nothing: it
        meant it as its output, which is ignored (``return tables.t.upsert(row)`` is fine,
        and so is a guard's ``return False``)."""
        rows = isinstance(value, dict) or (
            isinstance(value, list | tuple) and bool(value) and isinstance(value[0], dict)
        )
        if rows and not self.log.wrote_since_event():
            raise ProjectionError(
                f"the handler of {event.event_type} returned a value and wrote nothing; a "
                "return value is ignored: write rows with tables.<table>.upsert(row)"
            )

    def _fail(self, event: Event, handler: str, exc: BaseException) -> None:
        __tracebackhide__ = True  # the handler's frame is what matters
        self.failures += 1
        error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, SystemExit):  # would end the replay with its code, 0 as a success
            error = f"it called sys.exit({exc.code!r})"
        elif isinstance(exc, AttributeError) and exc.obj is self.tables:
            error = f"no table {exc.name!r}; tables: {', '.join(self.tables.names())}"
        elif isinstance(exc, TypeError) and "NoneType" in str(exc):
            # Most often an envelope field the source never filled (stream_position of
            # a NATS subject per aggregate, say): name the ones this event lacks.
            nones = [name for name in ENVELOPE_FIELDS if getattr(event, name) is None]
            if nones:
                error += f" (this event's {', '.join(nones)} is None)"
            if event.data is None:  # every real archive has some: a payload that is not JSON
                error += f" (this event's data is None: {_why_no_data(event)}; skip such events "
                error += "with `if event.data is None: return`)"
        if self.on_error == "raise":
            raise ProjectionError(
                f"{handler} failed on {event.event_type} at global_position "
                f"{event.global_position} ({_stream_of(event)})"
                f"{' ' + where if (where := _where(exc)) else ''}: {error}"
            ) from exc
        where, frames = self._told(exc)
        self.dead_letters.append(
            {
                "source": event.source,
                "global_position": event.global_position,
                "event_id": event.event_id,
                "event_type": event.event_type,
                "handler": handler,
                # Where in the projection: two bugs raising the same text stay apart.
                "error": f"{error} ({where})" if where else error,
                "traceback": frames + "".join(traceback.format_exception_only(exc))
                if frames is not None
                else "".join(traceback.format_exception(exc)),
                "data": _raw_data(event),
            }
        )

    def _told(self, exc: BaseException) -> tuple[str, str | None]:
        """Where ``exc`` was raised in the projection, and its traceback's frames (None
        for a chained exception), told once per path through the code: a handler failing
        on every event of a type spent 0.2 ms an event formatting the same frames."""
        path: list[Any] = [type(exc)]
        tb = exc.__traceback__
        while tb is not None:
            path.append((tb.tb_frame.f_code, tb.tb_lasti))  # the instruction: its carets
            tb = tb.tb_next
        key = tuple(path)
        told = self._tracebacks.get(key)
        if told is None:
            chained = exc.__cause__ is not None or (
                exc.__context__ is not None and not exc.__suppress_context__
            )
            frames = None
            if not chained:
                frames = "Traceback (most recent call last):\n" + "".join(
                    traceback.format_tb(exc.__traceback__)
                )
            told = (_where(exc), frames)
            if len(self._tracebacks) < 1_000:
                self._tracebacks[key] = told
        return told

    def take_dead_letters(self) -> list[dict[str, Any]]:
        letters, self.dead_letters = self.dead_letters, []
        return letters

    def states_list(self) -> list[TableState]:
        return list(self.states.values())


_BATCH_INDEX = 6


def _raw_data(event: Event) -> Any:
    """The archived ``data`` text of an event, as stored (before decoding)."""
    return event[_BATCH_INDEX].get("data", event[_BATCH_INDEX + 1])


def _why_no_data(event: Event) -> str:
    if event.payload is not None:
        return "its payload is not JSON, event.payload holds the bytes"
    if _raw_data(event) is not None:
        return "its data is not valid JSON"
    return "it has no payload"


def _stream_of(event: Event) -> str:
    """``stream s-1#4`` as an error names it; no ``#None`` where a position is missing."""
    if event.stream is None:
        return "no stream"
    position = "" if event.stream_position is None else f"#{event.stream_position}"
    return f"stream {event.stream}{position}"


def _where(exc: BaseException) -> str:
    """``at file.py:LINE`` in the projection's code: the innermost frame that is not
    the engine's (a table's ``upsert`` raising) nor an installed library's."""
    own = user_frames(exc)
    if not own:  # raised by the engine about the projection: its message says where
        return ""
    return "at " + place(own[-1].filename, own[-1].lineno)
