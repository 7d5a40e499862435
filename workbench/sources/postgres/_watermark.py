"""The visibility watermark: never read past a position that may still commit.

Positions come from a sequence, handed out when a row is inserted, not when
its transaction commits: position 100 can become visible after 101 was
committed and read. A hole in the positions a snapshot shows is either a
transaction that rolled back (the hole is permanent) or one still running
(the row will appear). We cannot see which transaction took a value, but we
can wait for every transaction that could have:

1. In snapshot ``S`` we read the highest visible position ``P`` and, after
   the snapshot was taken, the virtual transaction ids (``pg_locks``) of
   every other transaction of this database (plus prepared transactions).
2. Every position ``≤ P`` was handed out before ``P`` committed, hence before
   ``S``; its transaction had committed (visible in ``S``), had rolled back,
   or was running at ``S`` and so is in that list (or ended before we read it).
3. Once none of those transactions is running, a snapshot taken afterwards
   shows every committed position ``≤ P``; what is still missing there was
   rolled back: a harmless gap.

So the archiver keeps a list of ``(P, transactions)`` pairs. ``settled()``
returns the highest ``P`` whose transactions have all ended; holes at or
below it are final, holes above it are waited for. It assumes the usual
``CACHE 1`` sequence (the default of ``serial``/``identity``) and that a
value is inserted in the transaction that drew it.

Marten breaks the last assumption: it draws its sequence values in one
query and inserts them in a later transaction. For such stores ``grace``
also keeps a hole open until it is that old (Marten's own daemon waits its
``StaleSequenceThreshold``, 3 s, for the same reason). Holes cannot be
judged on a hot standby at all: its ``pg_locks`` does not show the
primary's transactions (:func:`require_primary`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from workbench.errors import SourceError
from workbench.sources.postgres._connection import fetch_all

__all__ = ["RUNNING_SQL", "Watermark", "require_primary"]

#: Other transactions of this database that may hold sequence values: virtual
#: xids (every transaction has one from its start) and prepared transactions.
RUNNING_SQL = (
    "select coalesce(array_agg(l.virtualxid::text), '{}'::text[]) as running, "
    "coalesce((select array_agg('prepared:' || gid) from pg_prepared_xacts "
    "          where database = current_database()), '{}'::text[]) as prepared, "
    "coalesce((select max(prepared) from pg_prepared_xacts "
    "          where database = current_database()), '1970-01-01 00:00:00+00'::timestamptz) as last_prepared, "
    "clock_timestamp() as now "
    "from pg_locks l join pg_stat_activity a on a.pid = l.pid "
    "where l.locktype = 'virtualxid' and l.pid <> pg_backend_pid() "
    "and a.datname = current_database()"
)


@dataclass
class _Pending:
    position: int
    running: frozenset[str]
    at: dt.datetime


@dataclass
class Watermark:
    """Pending ``(position, running transactions)`` pairs and the settled position."""

    settled_position: int = -1  # nothing settled: a store may number from 0
    pending: list[_Pending] = field(default_factory=list)
    #: How old a hole must also be before it is final (see the module's notes).
    grace: dt.timedelta = dt.timedelta(0)

    def running(self, con: Any) -> tuple[frozenset[str], dt.datetime, dt.datetime]:
        """Running transactions now, the latest PREPARE time, and the server clock."""
        ((running, prepared, last_prepared, now),) = fetch_all(
            con, RUNNING_SQL, "reading running transactions (pg_locks)"
        )
        return frozenset(running or ()) | frozenset(prepared or ()), last_prepared, now

    def remember(self, position: int, running: frozenset[str], at: dt.datetime) -> None:
        """Positions up to ``position`` settle once ``running`` have all ended."""
        if position > self.settled_position:
            self.pending.append(_Pending(position, running, at))

    def settle(self, con: Any) -> int:
        """Advance and return the settled position (call *before* taking the read snapshot)."""
        if self.pending:
            running, last_prepared, now = self.running(con)
            still: list[_Pending] = []
            for entry in self.pending:
                # A transaction running at `entry.at` may have been PREPAREd since (it then
                # has no virtual xid); a later PREPARE keeps the entry waiting.
                if (
                    entry.running & running
                    or last_prepared >= entry.at
                    or now - entry.at < self.grace
                ):
                    still.append(entry)
                else:
                    self.settled_position = max(self.settled_position, entry.position)
            self.pending = [e for e in still if e.position > self.settled_position]
        return self.settled_position

    def holders(self, con: Any) -> list[str]:
        """Who still holds the lowest waiting hole open: each transaction of those that were
        running when it was seen that still runs (``pid 4711 (psql, idle in transaction,
        since 2026-05-01 10:00:00+00:00)``), a notebook or pool left in a transaction, say."""
        if not self.pending:
            return []
        running = sorted(self.pending[0].running)
        vxids = [v for v in running if not v.startswith("prepared:")]
        held = [
            f"prepared transaction {v.removeprefix('prepared:')!r}"
            for v in running
            if v not in vxids
        ]
        if vxids:
            listed = ", ".join("'" + v.replace("'", "''") + "'" for v in vxids)
            rows = fetch_all(
                con,
                "select a.pid, a.application_name, a.state, date_trunc('second', a.xact_start) "
                "from pg_locks l join pg_stat_activity a on a.pid = l.pid "
                f"where l.locktype = 'virtualxid' and l.virtualxid::text in ({listed}) "
                "order by a.xact_start",
                "reading which transactions hold a hole open (pg_stat_activity)",
            )
            # A role without pg_read_all_stats sees no state or start of others' sessions.
            held[:0] = [
                f"pid {pid} ({app or 'no application_name'}, {state}, since {start})"
                if state is not None
                else f"pid {pid} ({app or 'no application_name'}; its state is hidden from "
                "this role: pg_read_all_stats shows it)"
                for pid, app, state, start in rows
            ]
        return held


def require_primary(con: Any) -> None:
    """Refuse a hot standby: holes could not be told from late commits there."""
    ((standby,),) = fetch_all(con, "select pg_is_in_recovery()", "checking for a standby")
    if standby:
        raise SourceError(
            "this server is a hot standby: the primary's running transactions are not "
            "visible here, so a late commit could be skipped; archive from the primary"
        )
