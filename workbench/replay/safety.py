"""Replay safety: does a projection survive redelivery, reordering, and a second run?

Established event stores promise at-least-once delivery and per-stream order,
nothing more. :func:`check_replay_safety` replays an archive (in memory, no
DuckDB) through a projection under exactly those guarantees and compares
each result with a clean replay:

- ``redelivery``: a share of the events delivered a second time, a little later
  or much later;
- ``stale``: each stream's first event delivered again after the stream's last
  (a stream subscription restarted from its start: a deleted row must stay deleted);
- ``republish``: (JetStream sources) a share of the events stored a second
  time, a little later at a new position with the same ``event_id``: a
  publish retried after the stream's duplicate window, which NATS keeps as
  another message (a Postgres store's unique ids refuse it);
- ``crash``: crashes between writing output and writing the checkpoint, so
  everything since the last checkpoint is delivered again;
- ``reorder``: events of different streams interleaved at random, each
  stream's own order kept;
- ``determinism``: the clean replay run twice, the second time in a fresh
  Python process with another hash seed (a clock, a random number, or
  iteration over a set of strings shows).

For a failing scenario the fault is narrowed down by applying it to one
event type at a time; the types (and their handlers) whose fault alone
changes the output are reported; what differs between the two clean
replays of ``determinism`` (a clock column, say) is left out of that
comparison, so it hides no other fault. The history is held as Arrow columns and
each replay decodes its delivery a chunk at a time (:mod:`.deliveries`); each
scenario's read model is held in memory, beside the clean one.
"""

from __future__ import annotations

import copy
import html
import os
import pickle
import random
import subprocess
import sys
import sysconfig
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice, zip_longest
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from workbench._text import as_text, plain, plural
from workbench.archive import ArchiveReader
from workbench.errors import ProjectionError, whole_number
from workbench.progress import ProgressCallback, shows_progress
from workbench.replay.deliveries import (
    Delivery,
    History,
    crashed,
    injected,
    redelivered,
    reordered,
    republished,
    restarted,
)
from workbench.replay.engine import (
    _instantiate,
    check_where,
    open_reader,
    replayed,
    select_source,
)
from workbench.replay.kept_state import ClassState, instance_changes, same
from workbench.replay.projection import Projection
from workbench.replay.runner import Runner
from workbench.replay.sql_projection import SqlProjection
from workbench.replay.state import TableState

__all__ = ["SafetyReport", "ScenarioResult", "check_replay_safety"]

Snapshot = dict[str, dict[Any, dict[str, Any]]]


#: A scenario's faults: the delivery of the history with them, applied to one event type
#: only (narrowing down) or to all (None), drawn from the seeded generator.
Faults = Callable[[str | None, random.Random], Delivery]


@dataclass
class ScenarioResult:
    """One fault scenario: whether the output matched the clean replay, and why not."""

    name: str
    description: str
    ok: bool
    differences: pl.DataFrame
    implicated_types: list[str] = field(default_factory=list)
    implicated_handlers: list[str] = field(default_factory=list)
    errors: int = 0
    #: Keys that differ, per table (all of them; ``differences`` lists some).
    counts: dict[str, int] = field(default_factory=dict)
    #: What the scenario could not vary, said with its verdict.
    caveat: str = ""
    #: The faults it injected (``"4 events delivered twice"``): a verdict on none is no
    #: verdict, so the summary always says how many.
    injected: str = ""
    #: Per implicated event type, the keys that differ when only its events take the
    #: fault: the handler whose fault alone makes most of the difference comes first (a
    #: correct handler can be implicated when another spoils the guard it relies on).
    implicated_keys: dict[str, int] = field(default_factory=dict)

    @property
    def truncated(self) -> bool:
        """True when ``differences`` lists fewer keys than differ (``max_differences``)."""
        return self.listed < sum(self.counts.values())

    @property
    def listed(self) -> int:
        """How many differing keys ``differences`` lists (a key has a line per column)."""
        return self.differences.select("table", "key").n_unique() if self.differences.height else 0

    @as_text
    def summary(self) -> str:
        caveat = f" ({self.caveat})" if self.caveat else ""
        name = f"{self.name} ({self.injected})" if self.injected else self.name
        if self.ok:
            return f"{name}: ok{caveat}"
        per_table = ", ".join(f"{t} ({n} keys)" for t, n in self.counts.items())
        if self.truncated:
            per_table += f" ({self.listed} listed; a higher max-differences lists more)"
        culprits = ", ".join(self._culprits()) or "not narrowed"
        errors = f"; {self.errors} error(s) in handlers or upcasters" if self.errors else ""
        return (
            f"{name}: differs in {per_table or 'no table'}{errors}; implicated: {culprits}{caveat}"
        )

    def _culprits(self) -> list[str]:
        """Implicated handlers (else types), with the keys each one's fault alone changes."""
        if not self.implicated_keys:
            return self.implicated_handlers or self.implicated_types
        keys: dict[str, int] = {}
        for event_type in self.implicated_types:
            name = self._handler_of.get(event_type, event_type)
            # A handler of several types: its worst one (a sum counted a key once per type).
            keys[name] = max(keys.get(name, 0), self.implicated_keys.get(event_type, 0))
        return [f"{name} ({plural(n, 'key')} alone)" for name, n in keys.items()]

    #: Event type → its handler, for :meth:`_culprits`.
    _handler_of: dict[str, str] = field(default_factory=dict, repr=False)

    def df(self) -> pl.DataFrame:
        """The differences listed: ``table, key, column, clean, faulty`` (see
        :meth:`SafetyReport.df`)."""
        return self.differences

    def arrow(self) -> pa.Table:
        """The same as :meth:`df`, as an Arrow table."""
        return self.differences.to_arrow()

    def head(self, n: int = 5) -> pl.DataFrame:
        """The first ``n`` rows of :meth:`df`."""
        return self.differences.head(n)

    def __repr__(self) -> str:
        # Not the dataclass's: a Polars table pasted into one line of every field.
        return f"<ScenarioResult {self.summary()}>"

    def _repr_html_(self) -> str:
        return f"<p>{self._verdict_html()} {html.escape(self.summary())}</p>" + _listed_html(
            self.differences
        )

    def _verdict_html(self) -> str:
        return (_OK_BUT if self.caveat else _OK) if self.ok else _UNSAFE


@dataclass
class SafetyReport:
    """Results of every scenario; ``ok`` when all matched the clean replay."""

    projection: str
    events: int
    scenarios: list[ScenarioResult]
    #: Handler and upcaster failures of the clean replay itself (no fault injected).
    clean_errors: int = 0
    #: Scenarios switched off (``"crash (crashes=0)"``): "safe" is said of the others only.
    not_run: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.scenarios)

    @property
    def truncated(self) -> bool:
        """Whether :meth:`df` lists fewer differences than there are (``max_differences``)."""
        return any(s.truncated for s in self.scenarios)

    def __getitem__(self, name: str) -> ScenarioResult:
        for scenario in self.scenarios:
            if scenario.name == name:
                return scenario
        raise KeyError(name)

    def df(self) -> pl.DataFrame:
        """Every difference listed: ``scenario, table, key, column, clean, faulty``.

        A line per column that differs, its values as text; a row only one run
        has is one line with a null ``column`` and the row, as JSON, on its side.
        """
        frames = [s.differences.with_columns(scenario=pl.lit(s.name)) for s in self.scenarios]
        if not frames:
            return pl.DataFrame(schema={"scenario": pl.String, **DIFFERENCE_SCHEMA})
        return pl.concat(frames).select("scenario", *DIFFERENCE_SCHEMA)

    def arrow(self) -> pa.Table:
        """The same as :meth:`df`, as an Arrow table."""
        return self.df().to_arrow()

    def head(self, n: int = 5) -> pl.DataFrame:
        """The first ``n`` rows of :meth:`df`."""
        return self.df().head(n)

    @as_text
    def summary(self) -> str:
        head = f"replay safety of {self.projection} over {self.events:,} events: "
        head += "safe" if self.ok else "UNSAFE"
        if self.ok and self.not_run:
            head += " under the scenarios run"
        if self.clean_errors:
            head += (
                f"; even without faults {self.clean_errors:,} event(s) failed in a handler "
                "or upcaster (replay with on_error='dead-letter', --dead-letter, to see them)"
            )
        not_run = [f"  not run: {', '.join(self.not_run)}"] if self.not_run else []
        return "\n".join([head, *("  " + s.summary() for s in self.scenarios), *not_run])

    def __repr__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        items = "".join(
            f"<li>{s._verdict_html()} {html.escape(s.summary())}</li>" for s in self.scenarios
        )
        return (
            f"<p><b>{html.escape(self.summary().splitlines()[0])}</b></p><ul>{items}</ul>"
            + _listed_html(self.df())
        )


def _listed_html(differences: pl.DataFrame) -> str:
    """The keys and values that differ, as the CLI prints them, folded (first 20)."""
    if not differences.height:
        return ""
    more = f" (first 20 of {differences.height:,})" if differences.height > 20 else ""
    return (
        f"<details><summary>differences from a clean replay{more}</summary>"
        f"{differences.head(20)._repr_html_()}</details>"
    )


# Words in colour, not emoji: a machine without an emoji font draws empty boxes.
_OK = "<b style='color:#2e7d32'>ok</b>"
#: Passed, but with what it could not vary (hash seeds in a notebook): no green light.
_OK_BUT = "<b style='color:#b26a00'>ok, with a caveat</b>"
_UNSAFE = "<b style='color:#c62828'>unsafe</b>"


@shows_progress("replay safety")
def check_replay_safety(
    archive: str | os.PathLike[str] | ArchiveReader,
    projection: Any,
    *,
    source: str | None = None,
    duplicates: float = 0.1,
    crashes: int = 3,
    republish: bool | None = None,
    reorder: str | None = "across-streams",
    determinism: bool = True,
    seed: int = 0,
    until: int | None = None,
    where: str | None = None,
    narrow: bool = True,
    max_differences: int = 50,
    progress: ProgressCallback | None = None,
) -> SafetyReport:
    """Replay under at-least-once delivery, reordering and twice; compare with a clean run.

    ``duplicates`` is the share of events delivered twice (1.0: every
    event; 0 disables the scenario), ``crashes`` the number of simulated
    crashes between output and checkpoint, ``republish`` whether the same
    share is also stored again at new positions (default: for a JetStream
    source, whose stream keeps a retried publish as a second message),
    ``reorder`` ``"across-streams"`` or None. The same ``seed`` gives the same deliveries.
    ``progress(done, total)`` is called after each in-memory replay; ``total`` is
    the most the check may run (a scenario that passes needs no narrowing down by
    event type, and ``done`` skips those replays).
    """
    if reorder not in (None, "across-streams"):
        raise ProjectionError(f"reorder must be 'across-streams' or None, not {reorder!r}")
    seed = whole_number(seed, "seed", None)
    crashes = whole_number(crashes, "crashes")
    max_differences = whole_number(max_differences, "max_differences")
    if (
        isinstance(duplicates, bool)
        or not isinstance(duplicates, int | float)
        or not 0.0 <= duplicates <= 1.0
    ):
        raise ProjectionError(f"duplicates is a share of events, from 0 to 1, not {duplicates!r}")
    if isinstance(projection, str):  # "path/to/file.py:Class", as on the CLI
        from workbench.replay.loader import load_projection

        projection = load_projection(projection)
    if isinstance(projection, SqlProjection):
        raise ProjectionError(
            f"replay safety is checked for handler projections: {projection.name} is a "
            "SqlProjection, which reads the whole archive at once (no delivery order or "
            "redelivery to vary)"
        )
    instance = _instantiate(projection)
    cls = type(instance)
    reader = open_reader(archive)
    source = select_source(reader, source)
    check_where(where)
    _refuse_what_memory_cannot_hold(
        *_history_size(reader, source, until, where), until, where, processes=1 + determinism
    )
    decoder = Runner(cls(), on_error="dead-letter")  # names the handlers
    history = History(reader, source, until, where)
    # Each replay decodes (and upcasts) afresh; this once is the one that counts failures.
    undecodable = history.drop_undecodable(decoder)
    if not len(history):  # a verdict on none is no verdict
        asked = [f"until={until}" if until is not None else "", f"where={where!r}" if where else ""]
        raise ProjectionError(
            f"no event of {source} to check"
            + (f" ({', '.join(a for a in asked if a)} keeps none)" if any(asked) else "")
            + (f"; {undecodable:,} failed in an upcaster" if undecodable else "")
        )

    scenarios: list[tuple[str, str, Faults]] = []
    if duplicates > 0:
        scenarios.append(
            (
                "redelivery",
                f"{duplicates:.0%} of the events delivered twice",
                lambda only, rng: redelivered(history.types, only, rng, duplicates),
            )
        )
        scenarios.append(
            (
                "stale",
                "each stream's first event delivered again after its last",
                lambda only, rng: restarted(history.types, history.streams, only),
            )
        )
    if republish is None:
        republish = source.startswith("jetstream:")
    if republish and duplicates > 0:
        last = history.last_position()
        scenarios.append(
            (
                "republish",
                f"{duplicates:.0%} of the events stored again later, at new positions "
                "(same event_id)",
                lambda only, rng: republished(history.types, only, rng, duplicates, last),
            )
        )
    if crashes > 0:
        scenarios.append(
            (
                "crash",
                f"{crashes} crash(es) between output and checkpoint",
                lambda only, rng: crashed(history.types, only, rng, crashes),
            )
        )
    if reorder:
        scenarios.append(
            (
                "reorder",
                "streams interleaved at random, stream order kept",
                lambda only, rng: reordered(history.types, history.streams, only, rng),
            )
        )

    not_run = [
        off
        for off, is_off in (
            ("redelivery and stale (duplicates=0)", duplicates == 0),
            ("crash (crashes=0)", crashes <= 0),
            ("reorder (reorder=None)", not reorder),
            ("determinism (determinism=False)", not determinism),
        )
        if is_off
    ]
    if not scenarios and not determinism:  # a verdict on none is no verdict
        raise ProjectionError(
            f"every scenario is switched off ({', '.join(not_run)}): nothing to check"
        )
    steps = _Steps(progress)
    handled = sorted(set(history.types) & decoder.handler_of.keys())
    # The most replays the check may run, told at once: a bar whose total grew when a
    # scenario failed and was narrowed down went backwards; one that passes skips ahead.
    narrowing = len(handled) if narrow else 0
    steps.add(len(scenarios) * (1 + narrowing) + bool(determinism))
    kept: list[str] = []  # state on `self`: lost at a restart, invisible to the tables
    class_state = ClassState(cls)  # state on the class: outlives a restart, and this run
    handed: Snapshot = {}  # each row as last handed back with upsert()/update()
    clean, clean_failed = _run(cls, history, history.in_order(), kept, handed)
    on_class, in_globals = class_state.changed(), class_state.changed_globals()
    steps.done()
    results: list[ScenarioResult] = []
    # Determinism first: a projection that reads the clock differs from the clean
    # run under every fault, so narrowing the other scenarios would blame every
    # type; they narrow on what a clean replay writes the same way twice.
    unstable: Unstable = {}
    if determinism:
        class_state.restore()
        # The same events as this history, whatever a follower appends meanwhile.
        rerun = _Rerun(cls, reader, source, history.until, where, seed)
        result, unstable = _determinism(
            cls, history, (clean, clean_failed.count), decoder, max_differences, rerun
        )
        results.append(result)
        steps.done()
    for name, description, deliver in scenarios:
        delivery = deliver(None, random.Random(seed))
        if not _injects(delivery, len(history)):  # without streams: nothing to vary
            not_run.append(f"{name} ({_nothing_to_inject(name, history)})")
            steps.done(1 + narrowing)
            continue
        class_state.restore()
        faulty, failed = _run(cls, history, delivery, class_state=class_state)
        steps.done()
        diff, counts = _compare(clean, faulty, max_differences)
        ok = not counts and not failed.beyond(clean_failed)
        # Differences only where the clean replay itself differs from run to run (a
        # clock column): the determinism verdict has them; this fault added none. Unless
        # the handlers keep state of their own, which such a fault may spoil right there.
        noise_only = (
            not ok
            and bool(unstable)
            and not kept
            and not on_class
            and not in_globals
            and not failed.beyond(clean_failed)
            and next(_differing(clean, faulty, unstable), None) is None
        )
        if noise_only:
            ok, diff, counts = True, diff.clear(), {}
        alone_keys: dict[str, int] = {}
        if ok:
            steps.done(narrowing)  # nothing to narrow down
        elif narrow:
            for event_type in handled:
                narrowed = deliver(event_type, random.Random(seed))
                if not _injects(narrowed, len(history)):  # no fault of this type: no replay
                    steps.done()
                    continue
                class_state.restore()
                alone, alone_failed = _run(cls, history, narrowed, class_state=class_state)
                steps.done()
                differing = sum(1 for _ in _differing(clean, alone, unstable))
                if differing or alone_failed.beyond(clean_failed):
                    alone_keys[event_type] = differing
        implicated = sorted(alone_keys, key=lambda t: -alone_keys[t])  # the most first
        result = _result(name, description, ok, diff, counts, implicated, decoder, failed.count)
        result.implicated_keys = alone_keys
        caveats = [history.unordered() if name == "reorder" else ""]
        if noise_only:
            caveats.append("it differs only where the clean replay is not deterministic")
        if not ok and kept:
            caveats.append(
                f"the handlers or upcasters keep state on the projection instance "
                f"({', '.join('self.' + k for k in kept)}): a restart loses it and a "
                "redelivery is not undone in it; keep it in a table"
            )
        if not ok and on_class:
            caveats.append(
                f"the handlers keep state on the class ({', '.join(on_class)}): it outlives "
                "a restart of the projection, and another replay in the same process "
                "starts with what the last one left; keep it in a table"
            )
        if not ok and in_globals:
            caveats.append(
                f"the handlers keep state in globals ({', '.join(in_globals)}): each run of "
                "this check starts with what the last one left (a class's is put back, a "
                "global is not), so any scenario may differ for it; keep it in a table"
            )
        result.caveat = "; ".join(c for c in caveats if c)
        result.injected = injected(name, len(history), delivery)
        results.append(result)
    class_state.restore()
    results.append(_handed_back(handed, clean, max_differences))
    return SafetyReport(
        projection=cls.__name__,
        events=len(history),
        scenarios=results,
        clean_errors=clean_failed.count + undecodable,
        not_run=not_run,
    )


#: Memory the check holds per event it replays, in each process that replays it (this one,
#: and the determinism rerun's), besides the payload's text: the history's other columns,
#: each event's type and stream code, the deliveries' row numbers, and the read models'
#: growth; and what a process takes before it reads an event. Measured with Memories
#: over 1M events (104 bytes of payload each): 0.97 GB in this process, 1.58 GB with the
#: rerun's (450 bytes an event estimated 1.11 GB: a check that could not fit passed).
BYTES_PER_EVENT = 550
PROCESS_BYTES = 250_000_000


def _history_size(
    reader: ArchiveReader, source: str, until: int | None, where: str | None
) -> tuple[int, int]:
    """The events a check of ``source`` replays, and the bytes their history takes."""
    [(events, texts)] = reader.stable(
        lambda: reader.sql(
            "select count(*), coalesce(sum(strlen(data)), 0)::BIGINT from events "
            f"where {replayed(until, where)}",
            params={"source": source},
        ).fetchall()
    )
    return int(events), int(texts) + int(events) * BYTES_PER_EVENT


def _refuse_what_memory_cannot_hold(
    events: int, size: int, until: int | None, where: str | None, *, processes: int = 2
) -> None:
    """Refuse, before loading, a check the free memory cannot hold: past it the kernel
    kills the process (or the machine swaps to a halt), with nothing said.

    >>> _refuse_what_memory_cannot_hold(1_000, 500_000, None, None)  # fine anywhere
    """
    needed = (size + PROCESS_BYTES) * processes
    available = _available_memory()
    if available is None or needed <= available * 0.8:
        return
    part = " a smaller part" if until is not None or where is not None else " a part"
    rerun = ", determinism=False to spare the second process's copy" if processes > 1 else ""
    raise ProjectionError(
        f"replay safety holds the {events:,} events it replays in memory, about "
        f"{needed / 1e9:.1f} GB, and {available / 1e9:.1f} GB are free: check{part} of the "
        f"history (until= / --until POSITION, where= / --where SQL, e.g. some streams{rerun}), "
        "or on a machine with more memory"
    )


def _available_memory() -> int | None:
    """Bytes this process can still take without swapping: Linux's MemAvailable, and
    less in a container whose cgroup sets a limit (the host's figure ignores it)."""
    found: list[int] = []
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    cgroup = Path("/sys/fs/cgroup")
    for limit_file, used_file in (
        (cgroup / "memory.max", cgroup / "memory.current"),  # cgroup v2
        (cgroup / "memory/memory.limit_in_bytes", cgroup / "memory/memory.usage_in_bytes"),
    ):
        try:
            limit, used = limit_file.read_text().strip(), int(used_file.read_text())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:  # "max", or v1's huge "no limit"
            found.append(max(int(limit) - used, 0))
    return min(found) if found else None


class _Steps:
    """The replays a safety check has done and plans, reported to ``progress``."""

    def __init__(self, progress: ProgressCallback | None) -> None:
        self.progress = progress
        self.finished = 0
        self.total = 1  # the clean replay

    def add(self, planned: int) -> None:
        self.total += planned
        if self.progress is not None:  # the plan shows at once, not after the first replay
            self.progress(self.finished, self.total)

    def done(self, replays: int = 1) -> None:
        """``replays`` done (or found not to be needed)."""
        if not replays:
            return
        self.finished += replays
        if self.progress is not None:
            self.progress(self.finished, self.total)


def _result(
    name: str,
    description: str,
    ok: bool,
    diff: pl.DataFrame,
    counts: dict[str, int],
    implicated: list[str],
    decoder: Runner,
    errors: int,
) -> ScenarioResult:
    handlers = list(dict.fromkeys(h for t in implicated if (h := decoder.handler_of.get(t))))
    result = ScenarioResult(name, description, ok, diff, implicated, handlers, errors, counts)
    result._handler_of = {t: h for t in implicated if (h := decoder.handler_of.get(t))}
    return result


def _run(
    cls: type[Projection],
    history: History,
    delivery: Delivery,
    kept: list[str] | None = None,
    handed: Snapshot | None = None,
    class_state: ClassState | None = None,
) -> tuple[Snapshot, _Failed]:
    """The tables after ``delivery``, and the failures of its handlers and upcasters;
    ``kept`` gets the names of attributes they changed on the projection instance,
    ``handed`` each row as it was when last handed to ``upsert()`` or ``update()``."""
    runner = Runner(cls(), on_error="dead-letter")
    decoder = Runner(cls(), on_error="dead-letter")  # its upcasters' state is this run's
    if handed is not None:
        for state in runner.states.values():
            _record_handed_back(state, handed.setdefault(state.table.name, {}))
    failed: set[Any] = set()
    for events in history.deliver(delivery, decoder):
        if events is None:  # a restart
            if class_state is not None:  # a new process: the class as it was first
                class_state.restore()
            runner.restart(cls())
            decoder.restart(cls())
        else:
            runner.apply(events)
        # Which events failed, not how often: one that fails in a clean replay fails
        # again when delivered again, and that is no new fault (a copy stored again at
        # another position is the same event by its id).
        failed.update(
            letter["event_id"] if letter["event_id"] is not None else letter["global_position"]
            for letter in runner.take_dead_letters()
        )
    if kept is not None:
        for instance in (runner.projection, decoder.projection):  # handlers', upcasters'
            kept.extend(n for n in instance_changes(instance, cls()) if n not in kept)
    snapshot = {name: state.rows for name, state in runner.states.items()}
    return snapshot, _Failed(frozenset(failed), decoder.failures)


def _injects(delivery: Delivery, events: int) -> bool:
    """Whether ``delivery`` differs from delivering ``events`` once each, in order.

    >>> _injects(Delivery(np.arange(3)), 3), _injects(Delivery(np.array([0, 2, 1])), 3)
    (False, True)
    """
    order = delivery.order
    moved = delivery.positions is not None and bool((delivery.positions >= 0).any())
    return moved or len(order) != events or bool((order != np.arange(events)).any())


def _nothing_to_inject(scenario: str, history: History) -> str:
    """Why ``scenario`` found nothing to vary in ``history``, as ``not_run`` says it."""
    streams = int(np.count_nonzero(np.unique(history.streams) >= 0))
    if scenario == "reorder" and streams == 1:
        return "the events are of one stream"
    if scenario in ("stale", "reorder") and not streams:
        return "no event has a stream"
    if len(history) == 1:
        return "one event"
    return "nothing to inject"


@dataclass(frozen=True)
class _Failed:
    """What failed in a replay: the events whose handlers raised (by id, else position),
    and how many times an upcaster raised."""

    events: frozenset[Any]
    upcasts: int

    @property
    def count(self) -> int:
        return len(self.events) + self.upcasts

    def beyond(self, clean: _Failed) -> bool:
        """Whether this replay failed where the clean one did not."""
        return not self.events <= clean.events or self.upcasts > clean.upcasts


def _record_handed_back(state: TableState, rows: dict[Any, dict[str, Any]]) -> None:
    """Make ``state`` keep in ``rows`` a copy of each row as written (the clean run's only:
    one dict copy a write), so that a change made in place afterwards shows."""
    base = type(state)

    class Recording(base):  # type: ignore[valid-type,misc]
        __slots__ = ()  # the same layout: the state's class can be swapped for it

        def upsert(self, row: dict[str, Any]) -> dict[str, Any]:
            stored = base.upsert(self, row)
            rows[self.key_of(stored)] = _as_written(stored)
            return stored

        def update(self, key: Any, changes: dict[str, Any] | None = None, /, **columns: Any) -> Any:
            stored = base.update(self, key, changes, **columns)
            rows[key] = _as_written(stored)
            return stored

        def delete(self, key: Any) -> None:
            base.delete(self, key)
            rows.pop(key, None)

    state.__class__ = Recording


def _as_written(row: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``row`` that a later change in place does not reach, into a list or a
    JSON value it holds (``row["items"].append(x)``) as well as a column.

    >>> row = {"id": "a", "items": [1]}
    >>> kept = _as_written(row); row["items"].append(2); kept
    {'id': 'a', 'items': [1]}
    """
    return {
        column: copy.deepcopy(value) if isinstance(value, list | dict) else value
        for column, value in row.items()
    }


def _handed_back(handed: Snapshot, clean: Snapshot, limit: int) -> ScenarioResult:
    """Rows the clean replay left changed in place since last handed back: a replay
    stores such a change only if a flush happens to take the row for another write."""
    diff, counts = _compare(clean, handed, limit)
    result = ScenarioResult(
        "handed back",
        "rows at the end of the clean replay against the rows as handed to upsert()/update()",
        not counts,
        # clean: the row as the handlers left it; faulty: as last handed back, which is
        # what a replay stores unless a flush happens to take the row again.
        diff,
        counts=counts,
    )
    if counts:
        result.caveat = (
            "changed in place and never handed back: what is stored depends on when "
            "flushes fall; hand a changed row back with upsert(row) or update(key)"
        )
    return result


#: Per table, the columns a clean replay does not write the same way twice, or
#: None when its rows themselves differ (a key taken from the clock, say).
Unstable = dict[str, set[str] | None]


def _differing(
    clean: Snapshot, other: Snapshot, unstable: Unstable | None = None
) -> Iterator[tuple[str, Any]]:
    """``(table, key)`` of each row that differs, table by table, leaving out the
    ``unstable`` columns and tables."""
    for table, clean_rows in clean.items():
        skip = (unstable or {}).get(table, set())
        other_rows = other[table]
        if skip is None:
            # Its keys differ between clean runs (taken from the clock, say): rows cannot
            # be matched, but a fault that adds or drops rows still shows in their count.
            if len(other_rows) != len(clean_rows):
                yield table, f"{len(other_rows):,} rows, not {len(clean_rows):,}"
            continue
        for key in clean_rows.keys() | other_rows.keys():
            a, b = clean_rows.get(key), other_rows.get(key)
            if same(a, b):
                continue
            if skip and a is not None and b is not None and same(_but(a, skip), _but(b, skip)):
                continue
            yield table, key


def _but(row: dict[str, Any], columns: set[str]) -> dict[str, Any]:
    return {c: v for c, v in row.items() if c not in columns}


def _unstable(clean: Snapshot, second: Snapshot) -> Unstable:
    """What differs between two clean replays: columns, or whole tables."""
    found: Unstable = {}
    for table, key in _differing(clean, second):
        a, b = clean[table].get(key), second[table].get(key)
        if a is None or b is None:
            found[table] = None
            continue
        columns = found.setdefault(table, set())
        if columns is not None:
            columns.update(c for c in a.keys() | b.keys() if not same(a.get(c), b.get(c)))
    return found


def _compare(clean: Snapshot, other: Snapshot, limit: int) -> tuple[pl.DataFrame, dict[str, int]]:
    """Rows that differ, at most ``limit`` keys listed (taken from the tables in turn, so
    each that differs shows some while the limit allows), and the exact count of
    differing keys per table.

    The listing has a line per differing column (``column``, and its ``clean`` and
    ``faulty`` values as text); a row only one side has is one line with a null
    ``column`` and that row, as JSON, on its side.
    """
    keys: dict[str, list[Any]] = {}
    for table, key in _differing(clean, other):
        keys.setdefault(table, []).append(key)
    turns = zip_longest(*([(t, k) for k in sorted(found, key=repr)] for t, found in keys.items()))
    listed = islice((pair for turn in turns for pair in turn if pair is not None), limit)
    rows = [
        line
        for table, key in listed
        for line in _lines(table, key, clean[table].get(key), other[table].get(key))
    ]
    listing = pl.DataFrame(rows, schema=DIFFERENCE_SCHEMA, orient="row").sort(
        "table", "key", "column", nulls_last=True
    )
    return listing, {table: len(found) for table, found in sorted(keys.items())}


#: The columns of a scenario's ``differences`` (and, after ``scenario``, of ``SafetyReport.df()``).
DIFFERENCE_SCHEMA = {
    "table": pl.String,
    "key": pl.String,
    "column": pl.String,
    "clean": pl.String,
    "faulty": pl.String,
}


def _lines(
    table: str, key: Any, clean: dict[str, Any] | None, faulty: dict[str, Any] | None
) -> list[tuple[str, str, str | None, str | None, str | None]]:
    """The listing's lines for one differing key."""
    shown = ", ".join(plain(v) or "null" for v in (key if isinstance(key, tuple) else (key,)))
    if clean is None or faulty is None:
        return [(table, shown, None, plain(clean), plain(faulty))]
    return [
        (table, shown, column, plain(clean.get(column)), plain(faulty.get(column)))
        for column in [*clean, *(c for c in faulty if c not in clean)]
        if not same(clean.get(column), faulty.get(column))
    ]


def _determinism(
    cls: type[Projection],
    history: History,
    clean: tuple[Snapshot, int],
    decoder: Runner,
    limit: int,
    rerun: _Rerun,
) -> tuple[ScenarioResult, Unstable]:
    """Run the clean replay again, in a fresh process with another hash seed when the
    projection can be imported there (so set iteration order shows too), and compare;
    also what differs between the two, for the other scenarios to leave out.

    Only when the two differ are both runs traced, event by event: the first
    event whose writes differ names the handler. Tracing costs ten times a
    replay, so a deterministic projection never pays it.
    """
    description = "the clean replay run twice, the second in a new process with another hash seed"
    caveat = ""
    try:
        second, second_errors = rerun.run(traced=False)
    except _NoRerun as exc:  # e.g. a class defined in a notebook: not importable elsewhere
        rerun.fallback = f"{exc}"
        second, second_failed = _run(cls, history, history.in_order())
        second_errors = second_failed.count
        description = f"the clean replay run twice in this process ({exc})"
        caveat = f"hash seeds not varied: {exc}"
    diff, counts = _compare(clean[0], second, limit)
    ok = not counts and clean[1] == second_errors
    implicated: list[str] = []
    if not ok:
        first_trace = _traced(cls, history)[0][1]
        try:
            if rerun.fallback:
                raise _NoRerun(rerun.fallback)
            second_trace = rerun.run(traced=True)[0][1]
        except _NoRerun:
            second_trace = _traced(cls, history)[0][1]
        # By position: either process may have left out events its upcasters failed on.
        here = {position: (event_type, crc) for position, event_type, crc in first_trace}
        there = {position: (event_type, crc) for position, event_type, crc in second_trace}
        for position in sorted(here.keys() | there.keys()):
            if here.get(position) != there.get(position):
                implicated.append((here.get(position) or there[position])[0])
                break
    result = _result(
        "determinism", description, ok, diff, counts, implicated, decoder, second_errors
    )
    result.caveat = caveat
    return result, _unstable(clean[0], second)


#: A traced replay: the tables, and each event's position and type with a checksum of what
#: it wrote; and the handlers' and upcasters' failures.
Traced = tuple[tuple[Snapshot, list[tuple[int, str, int]]], int]


def _traced(cls: type[Projection], history: History) -> Traced:
    runner = Runner(cls(), on_error="dead-letter")
    decoder = Runner(cls(), on_error="dead-letter")
    states = list(runner.states.values())
    signatures: list[tuple[int, str, int]] = []
    for events in history.deliver(history.in_order(), decoder):
        for event in events or ():
            runner.apply((event,))
            writes: list[tuple[str, Any, str]] = []
            row_ids, _ = runner.log.take().pairs()
            for state in states:
                keys = state.keys_of(row_ids)
                writes.extend((state.table.name, k, repr(state.rows.get(k))) for k in keys)
            # Not hash(): string hashes differ between processes, compared across two here.
            crc = zlib.crc32(repr(writes).encode())
            signatures.append((event.global_position, event.event_type, crc))
        runner.take_dead_letters()
    snapshot = {name: state.rows for name, state in runner.states.items()}
    return (snapshot, signatures), runner.failures


class _NoRerun(Exception):
    """Why the second determinism run cannot be done in a fresh process."""


class _Rerun:
    """The traced replay of the same events, in a child process with another hash seed.

    The child imports the projection the way it was loaded (``module:Class``
    or ``file.py:Class``), reads and decodes the same events, and sends back
    the snapshot (traced, when asked) by pickle.
    """

    def __init__(
        self,
        cls: type[Projection],
        reader: ArchiveReader,
        source: str,
        until: int | None,
        where: str | None,
        seed: int,
    ) -> None:
        self.cls = cls
        self.job = {
            "archive": str(reader.root.absolute()),
            "source": source,
            "until": until,
            "where": where,
        }
        # Reproducible, and never the seed this process was started with.
        mine = os.environ.get("PYTHONHASHSEED")
        hash_seed = 1 + seed % 4_000_000_000
        self.hash_seed = hash_seed + 1 if str(hash_seed) == mine else hash_seed
        #: Why the rerun runs in this process instead, once a child could not.
        self.fallback = ""

    def spec(self) -> str:
        cls = self.cls
        if "<locals>" in cls.__qualname__ or "." in cls.__qualname__:
            raise _NoRerun(f"{cls.__qualname__} is not a module-level class")
        module = sys.modules.get(cls.__module__)
        if cls.__module__ == "__main__" or module is None:
            raise _NoRerun(f"{cls.__qualname__} is defined in __main__ (a script or notebook)")
        if getattr(module, cls.__qualname__, None) is not cls:
            raise _NoRerun(f"{cls.__module__} has no {cls.__qualname__} of its own")
        if cls.__module__.startswith(_FILE_MODULE) and getattr(module, "__file__", None):
            return f"{module.__file__}:{cls.__qualname__}"  # loaded from FILE.py:Class
        return f"{cls.__module__}:{cls.__qualname__}"

    def run(self, *, traced: bool) -> Any:
        """The child's replay: ``(snapshot, failures)``, or with ``traced`` a :data:`Traced`."""
        env = {
            **os.environ,
            "PYTHONHASHSEED": str(self.hash_seed),
            # The parent's import path, so the child finds the module the class came from.
            "PYTHONPATH": os.pathsep.join(_own_path()),
        }
        # The result goes through a file: the projection may print to stdout.
        with tempfile.TemporaryDirectory(prefix="wb-rerun-") as tmp:
            out = Path(tmp) / "traced.pickle"
            job = {**self.job, "projection": self.spec(), "out": str(out), "traced": traced}
            try:
                done = subprocess.run(
                    [sys.executable, "-c", "from workbench.replay.safety import _rerun; _rerun()"],
                    input=pickle.dumps(job),
                    capture_output=True,
                    env=env,
                    check=False,
                )
            except OSError as exc:
                raise _NoRerun(f"cannot start a Python process: {exc}") from None
            if done.returncode != 0:
                lines = done.stderr.decode(errors="replace").strip().splitlines()
                raise _NoRerun(f"the new process failed: {lines[-1] if lines else done.returncode}")
            try:
                return pickle.loads(out.read_bytes())
            except (OSError, pickle.UnpicklingError, EOFError) as exc:
                raise _NoRerun(f"the new process gave no result: {exc}") from None


def _own_path() -> list[str]:
    """Directories on this process's import path that a new interpreter would not have
    by itself (a test or notebook directory, a PYTHONPATH): not the installation's own."""
    installed = tuple(
        {sys.prefix, sys.base_prefix, sys.exec_prefix}
        | {sysconfig.get_paths()[name] for name in ("stdlib", "platstdlib", "purelib", "platlib")}
    )
    return [p for p in sys.path if p and os.path.isdir(p) and not p.startswith(installed)]


_FILE_MODULE = "_wb_projection_"  # the loader's module names for FILE.py:Class


def _rerun() -> None:
    """The child of :class:`_Rerun`: the job from stdin, the traced replay to its file."""
    from workbench.replay.loader import load_projection

    job = pickle.loads(sys.stdin.buffer.read())
    cls = type(load_projection(job["projection"]))
    history = History(ArchiveReader(job["archive"]), job["source"], job["until"], job["where"])
    history.drop_undecodable(Runner(cls(), on_error="dead-letter"))  # as the parent does
    if job["traced"]:
        result: Any = _traced(cls, history)
    else:
        tables, failed = _run(cls, history, history.in_order())
        result = (tables, failed.count)
    Path(job["out"]).write_bytes(pickle.dumps(result))
