"""In-memory state of a projection's tables, the view handlers write through.

Rows live in dicts keyed by the table key; every write marks the key dirty
(flushed to DuckDB in bulk) and records lineage (which event wrote which
row). Handlers never see DuckDB.

>>> from workbench.replay.projection import Table
>>> t = Table(key="id", id=str, n=int)
>>> t.name = "things"
>>> cursor = Cursor(); cursor.event = (7,)  # the event being handled, global_position 7
>>> state = TableState(t, cursor)
>>> state.upsert({"id": "a", "n": 1})["n"]
1
>>> state.update("a", n=2)["n"], state.get("a"), len(state)
(2, {'id': 'a', 'n': 2}, 1)
>>> state.delete("a"); state.get("a") is None, sorted(state.dirty)
(True, ['a'])
"""

from __future__ import annotations

from collections.abc import Iterator
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
    in place are not flushed).
    """

    __slots__ = (
        "_cursor",
        "_key",
        "_single",
        "dirty",
        "lineage_events",
        "lineage_keys",
        "rows",
        "table",
        "track_lineage",
    )

    def __init__(self, table: Table, cursor: Cursor, *, lineage: bool = True) -> None:
        self.table = table
        self.rows: dict[Any, dict[str, Any]] = {}
        self.dirty: set[Any] = set()
        self.lineage_keys: list[Any] = []
        self.lineage_events: list[int] = []
        self.track_lineage = lineage
        self._cursor = cursor
        self._single = len(table.key) == 1
        self._key: Any = table.key[0] if self._single else table.key

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

    def get(self, key: Any, default: Any = None) -> Any:
        """The row with ``key`` (a dict), or ``default``."""
        return self.rows.get(key, default)

    def upsert(self, row: dict[str, Any]) -> dict[str, Any]:
        """Insert ``row`` or replace the row with its key; returns it."""
        key = row[self._key] if self._single else self.key_of(row)
        self.rows[key] = row
        self.dirty.add(key)
        if self.track_lineage:
            self.lineage_keys.append(key)
            self.lineage_events.append(self._cursor.event[0])
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
        self.dirty.add(key)
        if self.track_lineage:
            self.lineage_keys.append(key)
            self.lineage_events.append(self._cursor.event[0])
        return row

    def delete(self, key: Any) -> None:
        """Remove the row with ``key`` (no error if there is none)."""
        if self.rows.pop(key, None) is not None:
            self.dirty.add(key)
            if self.track_lineage:
                self.lineage_keys.append(key)
                self.lineage_events.append(self._cursor.event[0])

    def __contains__(self, key: Any) -> bool:
        return key in self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows.values())

    def take_changes(self) -> tuple[list[dict[str, Any]], list[Any]]:
        """Rows to write and keys to delete since the last call; clears the dirty set."""
        rows = self.rows
        upserts = [rows[k] for k in self.dirty if k in rows]
        deletes = [k for k in self.dirty if k not in rows]
        self.dirty = set()
        return upserts, deletes

    def take_lineage(self) -> tuple[list[Any], list[int]]:
        """Keys and event positions of the writes since the last call.

        Positions, not events: holding events would pin their batches and
        payloads until the flush.
        """
        keys, events = self.lineage_keys, self.lineage_events
        self.lineage_keys, self.lineage_events = [], []
        return keys, events


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
