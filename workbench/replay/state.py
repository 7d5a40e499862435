"""In-memory state of a projection's tables, the view handlers write through.

Rows live in dicts keyed by the table key; every write records lineage
(which event wrote which row) or, without lineage, marks the key dirty; the
keys written are flushed to DuckDB in bulk. Handlers never see DuckDB. This
is the hot path: ``get`` is the dict's own, a write is a dict update and two
list appends.

>>> from workbench.replay.projection import Table
>>> t = Table(key="id", id=str, n=int)
>>> t.name = "things"
>>> cursor = Cursor(); cursor.event = (7,)  # the event being handled, global_position 7
>>> state = TableState(t, cursor)
>>> state.upsert({"id": "a", "n": 1})["n"]
1
>>> state.update("a", n=2)["n"], state.get("a"), len(state)
(2, {'id': 'a', 'n': 2}, 1)
>>> state.delete("a"); state.get("a") is None, state.take_changes()
(True, ([], ['a']))
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator
from typing import Any

from workbench.errors import ProjectionError
from workbench.replay.projection import Table

__all__ = ["Cursor", "TableState", "Tables"]


class Cursor:
    """The event being handled; table writes read it to record lineage."""

    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event: Any = None


class TableState:
    """One table's rows by key, with ``get / upsert / update / delete``.

    Keys are the key column's value, or a tuple of values for composite
    keys. Rows are dicts of column → value; :meth:`get` returns the stored
    row, so change it through :meth:`update` or :meth:`upsert` (writes made
    in place are not flushed). The keys written since the last flush are
    :meth:`take_changes`'s business: ``dirty`` alone misses them while
    lineage is on, since the lineage keys stand in for it.
    """

    __slots__ = (
        "_cursor",
        "_key",
        "_keys",
        "_mark",
        "_positions",
        "_single",
        "dirty",
        "get",
        "rows",
        "table",
        "track_lineage",
    )

    #: ``get(key, default=None)``: the row with ``key`` (a dict), or ``default``.
    #: The dict's own ``get``, bound once: handlers call it on every event.
    get: Callable[..., Any]

    def __init__(self, table: Table, cursor: Cursor, *, lineage: bool = True) -> None:
        self.table = table
        self.rows: dict[Any, dict[str, Any]] = {}
        self.get = self.rows.get
        self.dirty: set[Any] = set()
        self._mark = self.dirty.add
        self._keys: list[Any] = []
        self._positions = array("q")  # 8 bytes a write, handed to numpy without a copy
        self.track_lineage = lineage
        self._cursor = cursor
        self._single = len(table.key) == 1
        self._key: Any = table.key[0] if self._single else table.key

    def load(self, rows: dict[Any, dict[str, Any]]) -> None:
        """Replace the rows (when resuming from the stored table)."""
        self.rows.clear()
        self.rows.update(rows)

    def key_of(self, row: dict[str, Any]) -> Any:
        """The key of ``row`` (a value, or a tuple for composite keys)."""
        try:
            if self._single:
                return row[self._key]
            return tuple([row[c] for c in self._key])
        except KeyError as exc:
            raise ProjectionError(
                f"table {self.table.name}: row has no key column {exc.args[0]}"
            ) from None

    def upsert(self, row: dict[str, Any]) -> dict[str, Any]:
        """Insert ``row`` or replace the row with its key; returns it."""
        key = row[self._key] if self._single else self.key_of(row)
        self.rows[key] = row
        if self.track_lineage:  # the lineage keys double as the dirty set
            self._keys.append(key)
            self._positions.append(self._cursor.event[0])
        else:
            self._mark(key)
        return row

    def update(self, key: Any, changes: dict[str, Any] | None = None, /, **columns: Any) -> Any:
        """Change some columns of the row with ``key``; returns the row.

        Raises :class:`KeyError` when no row has ``key``.
        """
        row = self.rows[key]
        if changes is None:
            row.update(columns)
        else:
            row.update(changes, **columns)
        if self.track_lineage:  # the lineage keys double as the dirty set
            self._keys.append(key)
            self._positions.append(self._cursor.event[0])
        else:
            self._mark(key)
        return row

    def delete(self, key: Any) -> None:
        """Remove the row with ``key`` (no error if there is none)."""
        if self.rows.pop(key, None) is not None:
            if self.track_lineage:
                self._keys.append(key)
                self._positions.append(self._cursor.event[0])
            else:
                self._mark(key)

    def __contains__(self, key: Any) -> bool:
        return key in self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows.values())

    def take_changes(self) -> tuple[list[dict[str, Any]], list[Any]]:
        """Rows to write and keys to delete since the last call; clears the dirty set."""
        rows = self.rows
        dirty = self.dirty
        dirty.update(self._keys)
        upserts = [rows[k] for k in dirty if k in rows]
        deletes = [k for k in dirty if k not in rows]
        self.dirty = set()
        self._mark = self.dirty.add
        return upserts, deletes

    def take_lineage(self) -> tuple[list[Any], array[int]]:
        """Keys and event positions of the writes since the last call.

        Positions, not events: holding events would pin their batches and
        payloads until the flush.
        """
        keys, positions = self._keys, self._positions
        self.dirty.update(keys)  # still to be flushed by take_changes
        self._keys, self._positions = [], array("q")
        return keys, positions


class Tables:
    """The tables of a projection as attributes: ``tables.memories.get(...)``."""

    def __init__(self, states: dict[str, TableState]) -> None:
        self.__dict__.update(states)
        self._states = states

    def __getitem__(self, name: str) -> TableState:
        return self._states[name]

    def __getattr__(self, name: str) -> TableState:  # only called for undeclared names
        raise AttributeError(f"no table {name!r}; tables: {', '.join(self._states)}")

    def __iter__(self) -> Iterator[TableState]:
        return iter(self._states.values())

    def __repr__(self) -> str:
        return "Tables(" + ", ".join(f"{n}={len(s)} rows" for n, s in self._states.items()) + ")"
