"""In-memory state of a projection's tables, the view handlers write through.

Rows live in dicts keyed by the table key. Each row gets a row id, unique
across the projection's tables, the first time it is written. All tables
append to one :class:`WriteLog`: the runner appends the event before its
handler runs, each write appends the row id. That log is the lineage (which
event wrote which row) and, deduplicated, the set of rows to flush; it is
one list of integers (a row id is the int its table already holds, so a
write allocates nothing), handed to numpy at the flush. Handlers never see
DuckDB. This is the hot path: ``get`` is the dict's own, a write is a dict
update, a dict lookup and one list append.

>>> from workbench.replay.projection import Table
>>> t = Table(key="id", id=str, n=int)
>>> t.name = "things"
>>> log = WriteLog()
>>> state = TableState(t, log)
>>> log.event(7)  # the event being handled: global_position 7
>>> state.upsert({"id": "a", "n": 1})["n"]
1
>>> state.update("a", n=2)["n"], state.get("a"), len(state)
(2, {'id': 'a', 'n': 2}, 1)
>>> log.event(8); state.delete("a")
>>> writes = log.take()
>>> row_ids, positions = writes.pairs()
>>> row_ids.tolist(), positions.tolist(), writes.written().tolist()
([0, 0, 0], [7, 7, 8], [0])
>>> changes = state.take_changes(writes.written())
>>> state.get("a") is None, changes.upserts, changes.deletes, changes.new_keys
(True, [], ['a'], ['a'])
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import count
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from workbench.errors import ProjectionError
from workbench.replay.projection import Table

__all__ = ["Changes", "TableState", "Tables", "WriteLog", "Writes", "table_state"]


class WriteLog:
    """The writes of a projection's tables since the last :meth:`take`, in order.

    One list: an event is logged as ``~global_position`` (negative), each
    write after it as the row id it wrote (never negative). ``row_ids``
    numbers rows across all tables, so an entry needs no table column. A
    list, not an ``array("q")``: its append parses each int through
    ``PyArg_Parse``, 2,600 CPU instructions an event of ``Memories`` more. The
    price is memory until a flush takes the log: an event's mark is an int
    object of its own, about 56 MB a million events with two writes each
    (24 MB as an array).
    """

    __slots__ = ("_entries", "append", "row_ids", "states")

    def __init__(self, first_row_id: int = 0) -> None:
        self.row_ids: Iterator[int] = count(first_row_id)
        self.states: list[TableState] = []
        self._entries: list[int] = []
        #: ``append(entry)``: bound once; the runner and every table call it.
        self.append: Callable[[int], None] = self._entries.append

    def event(self, global_position: int) -> None:
        """Log that the writes which follow are made by the event at ``global_position``."""
        self.append(~global_position)

    def wrote_since_event(self) -> bool:
        """Whether a table was written since the last event was logged."""
        return bool(self._entries) and self._entries[-1] >= 0

    def restart(self, first_row_id: int) -> None:
        """Number new rows from ``first_row_id`` (on resume, after the stored ones)."""
        self.row_ids = count(first_row_id)
        for state in self.states:
            state._row_ids = self.row_ids

    def __len__(self) -> int:
        return len(self._entries)

    def take(self) -> Writes:
        """The writes logged so far; clears the log."""
        entries = np.array(self._entries, np.int64) if self._entries else _EMPTY
        if len(entries) and entries[0] >= 0:
            raise ProjectionError("a table was written before any event was logged")
        self._entries = []
        self.append = self._entries.append
        for state in self.states:
            state._log = self.append
        return Writes(entries)


class Writes:
    """The entries of a :class:`WriteLog` taken at a flush.

    :meth:`written` is what the flush must snapshot, on the handlers'
    thread; :meth:`pairs` (the lineage) is pure numpy and may run later,
    on the writing thread.
    """

    __slots__ = ("_entries",)

    def __init__(self, entries: np.ndarray) -> None:
        self._entries = entries

    def written(self) -> np.ndarray:
        """The distinct row ids written, ascending."""
        row_ids = self._entries[self._entries >= 0]
        if not len(row_ids):
            return _EMPTY
        # Row ids are dense (numbered from 0): a mask beats sorting or hashing.
        seen = np.zeros(int(row_ids.max()) + 1, np.bool_)
        seen[row_ids] = True
        return np.flatnonzero(seen)

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Each write's row id, and the position of the event that made it."""
        entries = self._entries
        is_event = entries < 0
        events = np.flatnonzero(is_event)
        # Each event is followed by its writes: repeat its position once per write.
        writes_per_event = np.diff(events, append=len(entries)) - 1
        return entries[~is_event], np.repeat(~entries[events], writes_per_event)


_EMPTY = np.zeros(0, np.int64)
_MISSING = object()


@dataclass
class Changes:
    """One table's rows to flush after some writes: upserts, deletes, and new row ids."""

    upserts: list[dict[str, Any]]
    deletes: list[Any]
    new_ids: list[int]
    new_keys: list[Any]


#: _CheckedWrites' slots (set by its checks()), declared on TableState: a class that also
#: derives from _NormalisingState cannot add slots of its own beside that one's.
_CHECKED_SLOTS = ("_columns", "_fine", "_quick", "_refusal", "_valued")


class TableState:
    """One table's rows by key, with ``get / upsert / update / delete``.

    Keys are the key column's value, or a tuple of values for composite
    keys. Rows are dicts of column → value; :meth:`get` returns the stored
    row, so a handler may change it in place and then hand it to
    :meth:`upsert` (or name it in :meth:`update`): a change that is never
    handed back is not flushed, and no lineage records it.
    """

    __slots__ = (
        "_ids",
        "_key",
        "_key_of_id",
        "_key_types",
        "_log",
        "_new_ids",
        "_new_keys",
        "_row_ids",
        "get",
        "rows",
        "table",
        *_CHECKED_SLOTS,
    )

    #: ``get(key, default=None)``: the row with ``key`` (a dict), or ``default``.
    #: The dict's own ``get``, bound once: handlers call it on every event.
    get: Callable[..., Any]

    def __init__(self, table: Table, log: WriteLog) -> None:
        self.table = table
        self.rows: dict[Any, dict[str, Any]] = {}
        self.get = self.rows.get
        # A key of another type than its column's (a str for a UUID or a date, as JSON
        # gives it) never finds a row: a guard `if key in table` would silently never
        # fire, a delete never delete. Such tables look up through a check on a miss;
        # text keys keep the dict's own get.
        self._key_types = tuple(_KEY_TYPES.get(table.types[c].sql) for c in table.key)
        if any(t not in (None, str) for t in self._key_types):
            self.get = self._checked_get
        # itemgetter of one column gives the value, of several a tuple: both in C.
        self._key = itemgetter(*table.key)
        self._ids: dict[Any, int] = {}  # key → row id
        self._key_of_id: dict[int, Any] = {}
        self._new_ids: list[int] = []
        self._new_keys: list[Any] = []
        self._row_ids = log.row_ids
        self._log = log.append
        log.states.append(self)

    def _new_id(self, key: Any) -> int:
        row_id = next(self._row_ids)
        self._ids[key] = row_id
        self._key_of_id[row_id] = key
        self._new_ids.append(row_id)
        self._new_keys.append(key)
        return row_id

    def load(self, rows: dict[Any, dict[str, Any]], row_ids: dict[Any, int]) -> None:
        """Replace the rows and their row ids (when resuming from the stored table)."""
        self.rows.clear()
        self.rows.update(rows)
        self._ids = dict(row_ids)
        self._key_of_id = {row_id: key for key, row_id in row_ids.items()}

    def row_id_of(self, key: Any) -> int | None:
        """The row id of the row with ``key`` (None if it was never written)."""
        return self._ids.get(key)

    def key_of(self, row: dict[str, Any]) -> Any:
        """The key of ``row`` (a value, or a tuple for composite keys)."""
        try:
            return self._key(row)
        except KeyError as exc:
            raise ProjectionError(
                f"table {self.table.name}: row has no key column {exc.args[0]}"
            ) from None

    def upsert(self, row: dict[str, Any]) -> dict[str, Any]:
        """Insert ``row`` or replace the row with its key; returns it."""
        try:
            key = self._key(row)
        except KeyError:
            key = self.key_of(row)  # raises a ProjectionError naming the column
        self.rows[key] = row
        row_id = self._ids.get(key)
        self._log(self._new_id(key) if row_id is None else row_id)
        return row

    def update(self, key: Any, changes: dict[str, Any] | None = None, /, **columns: Any) -> Any:
        """Change some columns of the row with ``key``; returns the row.

        With no changes it records a write of the row as it stands (after
        changes made in place). Raises :class:`KeyError` when no row has ``key``.
        """
        try:
            row = self.rows[key]
        except KeyError:
            raise KeyError(self._no_row(key)) from None
        if changes is not None:
            row.update(changes)
        if columns:
            row.update(columns)
        row_id = self._ids.get(key)
        self._log(self._new_id(key) if row_id is None else row_id)
        return row

    def _checked_get(self, key: Any, default: Any = None) -> Any:
        row = self.rows.get(key, _MISSING)
        if row is _MISSING:
            self._check_key_type(key)
            return default
        return row

    def _check_key_type(self, key: Any) -> None:
        """Refuse a key of a type the table's keys never have (a miss is certain)."""
        columns = self.table.key
        if len(columns) == 1:
            parts: tuple[Any, ...] = (key,)
        elif isinstance(key, tuple) and len(key) == len(columns):
            parts = key
        else:
            raise ProjectionError(
                f"table {self.table.name}: looked up {key!r}; its key is a tuple of "
                f"({', '.join(columns)})"
            )
        for column, expected, part in zip(columns, self._key_types, parts, strict=True):
            if part is None or expected is None or not _wrong_type(part, expected):
                continue
            fix = _KEY_FIXES.get(expected, "")
            fix = (
                f" (look it up as {fix.format(repr(part))})"
                if fix and isinstance(part, str)
                else ""
            )
            what = (
                f"its key {column} is"
                if len(columns) == 1
                else f"in its key ({', '.join(columns)}), {column} is"
            )
            raise ProjectionError(
                f"table {self.table.name}: looked up {part!r}, a {type(part).__name__}; "
                f"{what} {self.table.types[column].sql}, so no row can match{fix}"
            )

    def _no_row(self, key: Any) -> str:
        """Why ``key`` found no row, naming a key of another type than the stored ones'."""
        text = f"table {self.table.name}: no row with key {key!r}"
        stored = next(iter(self.rows), None)
        expected = type(stored) if stored is not None else _KEY_TYPES.get(self._key_sql)
        if expected is not None and not isinstance(key, expected):
            columns = ", ".join(f"{c} {self.table.types[c].sql}" for c in self.table.key)
            text += f" (a {type(key).__name__}; the keys are {expected.__name__}: {columns})"
        return text

    @property
    def _key_sql(self) -> str:
        key = self.table.key
        return self.table.types[key[0]].sql if len(key) == 1 else "tuple"

    def delete(self, key: Any) -> None:
        """Remove the row with ``key`` (no error if there is none, but for a key of a type
        no row of the table can have)."""
        if self.rows.pop(key, None) is not None:
            row_id = self._ids.get(key)
            self._log(self._new_id(key) if row_id is None else row_id)
        else:
            self._check_key_type(key)

    def __getitem__(self, key: Any) -> dict[str, Any]:
        """``table[key]``: the row with ``key``; a ``KeyError`` naming the table if none."""
        row = self.rows.get(key, _MISSING)
        if row is _MISSING:
            self._check_key_type(key)
            raise KeyError(self._no_row(key))
        return row  # type: ignore[return-value]

    def __contains__(self, key: Any) -> bool:
        if key in self.rows:
            return True
        self._check_key_type(key)
        return False

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows.values())

    def keys_of(self, row_ids: np.ndarray) -> list[Any]:
        """Keys of those ``row_ids`` that are rows of this table, in order."""
        key_of_id = self._key_of_id
        return [key_of_id[i] for i in row_ids.tolist() if i in key_of_id]

    def take_changes(self, written: np.ndarray) -> Changes:
        """What to flush after writes of the distinct ``written`` row ids (of any table)."""
        rows, key_of = self.rows, self._key
        upserts, deletes = [], []
        for key in self.keys_of(written):
            row = rows.get(key)
            if row is None:
                deletes.append(key)
                continue
            # A row whose key columns changed after it was handed over (one dict reused
            # for several rows, ``row["line_no"] = n; upsert(row)``) left the earlier keys
            # holding the last row: those rows were lost in silence.
            now = _key_or_none(key_of, row)
            if now is not key and now != key:
                raise ProjectionError(
                    f"table {self.table.name}: the row stored under key {key!r} now has key "
                    f"{now!r}: a handler changed its key after handing it to upsert() (one "
                    "dict reused for several rows?); give each row a dict of its own "
                    "(upsert(dict(row)))"
                )
            upserts.append(row)
        changes = Changes(upserts, deletes, new_ids=self._new_ids, new_keys=self._new_keys)
        self._new_ids, self._new_keys = [], []
        # A deleted row's id is not needed after this flush (written again, it
        # gets a new one): the maps follow the live rows, not every key ever seen.
        for key in changes.deletes:
            self._key_of_id.pop(self._ids.pop(key), None)
        return changes


def _key_or_none(key_of: Callable[[dict[str, Any]], Any], row: dict[str, Any]) -> Any:
    """The key of ``row``, or None when a key column was taken out of it."""
    try:
        return key_of(row)
    except KeyError:
        return None


#: The Python type of a key column's values, for naming a key of the wrong type.
_KEY_TYPES: dict[str, type] = {
    "UUID": uuid.UUID,
    "VARCHAR": str,
    "BIGINT": int,
    "INTEGER": int,
    "SMALLINT": int,
    "DATE": dt.date,
    "TIMESTAMP": dt.datetime,
    "TIMESTAMP WITH TIME ZONE": dt.datetime,
    "tuple": tuple,
}

#: How to turn the text JSON gives into a key column's type.
_KEY_FIXES: dict[type, str] = {
    uuid.UUID: "uuid.UUID({})",
    int: "int({})",
    dt.date: "datetime.date.fromisoformat({})",
    dt.datetime: "datetime.datetime.fromisoformat({})",
}


def _wrong_type(value: Any, expected: type) -> bool:
    """Whether ``value`` can never equal a key value of type ``expected``.

    >>> _wrong_type("2024-05-01", dt.date), _wrong_type(dt.datetime(2024, 5, 1), dt.date)
    (True, True)
    >>> _wrong_type(dt.date(2024, 5, 1), dt.date), _wrong_type(3, int), _wrong_type("3", int)
    (False, False, True)
    """
    if expected is dt.date:  # a datetime is a date, but never equals one
        return not isinstance(value, dt.date) or isinstance(value, dt.datetime)
    return not isinstance(value, expected)


class _NormalisingState(TableState):
    """A table with DECIMAL or REAL columns: written values become what they read back as."""

    __slots__ = ("_normalise",)

    def __init__(self, table: Table, log: WriteLog) -> None:
        super().__init__(table, log)
        self._normalise = [
            (column, fn) for column, ctype in table.types.items() if (fn := ctype.normalise)
        ]

    def _normalised(self, row: dict[str, Any]) -> dict[str, Any]:
        for column, normalise in self._normalise:
            value = row.get(column)
            if value is not None:
                row[column] = normalise(value)
        return row

    def upsert(self, row: dict[str, Any]) -> dict[str, Any]:
        return super().upsert(self._normalised(row))

    def update(self, key: Any, changes: dict[str, Any] | None = None, /, **columns: Any) -> Any:
        return self._normalised(super().update(key, changes, **columns))


#: ``refusal(table, row)``: why ``table`` cannot store ``row``, or None when it can.
Refusal = Callable[[Table, dict[str, Any]], str | None]


class _CheckedWrites(TableState):
    """Dead-letter mode: a write the table cannot store fails at once, in the handler
    that made it, which is then dead-lettered, so the outcome does not hang on when
    flushes happen; a stored row it spoilt in place is dropped, not kept spoilt."""

    __slots__ = ()

    def checks(self, refusal: Refusal) -> None:
        types = self.table.types
        self._refusal: Refusal = refusal
        self._quick: list[tuple[str, Callable[[Any], bool]]] = [
            (c, t.certainly_stores()) for c, t in types.items()
        ]
        self._columns = list(types)
        # Types of a row's values (in column order) that passed every quick check: a
        # write of the same types needs only the checks a type does not settle, of
        # the columns in _valued: a time's zone, an integer's or a decimal's range, a
        # list's items.
        self._fine: set[tuple[type, ...]] = set()
        self._valued = [(c, quick) for c, quick in self._quick if not types[c].checked_by_type]

    def upsert(self, row: dict[str, Any]) -> dict[str, Any]:
        self._check(row)
        return super().upsert(row)

    def update(self, key: Any, changes: dict[str, Any] | None = None, /, **columns: Any) -> Any:
        stored = self.rows.get(key)
        if stored is not None and (changes or columns):
            # The changes are checked before they are made: a refused one leaves the
            # stored row as it was (it dropped the whole row, which the handler never spoilt).
            try:
                self._check({**stored, **(changes or {}), **columns})
            except ProjectionError:
                self._check(stored)  # spoilt in place before: dropped, and said so
                raise
            return super().update(key, changes, **columns)
        row = super().update(key, changes, **columns)
        self._check(row)
        return row

    def _check(self, row: dict[str, Any]) -> None:
        get = row.get
        types = tuple(map(type, map(get, self._columns)))  # in C: ~0.2 µs a write
        declared = row.keys() <= self.table.types.keys()
        if types in self._fine and declared:
            for column, quick in self._valued:
                if not quick(get(column)):
                    break
            else:
                return
        elif declared and all(get(k) is not None for k in self.table.key):
            doubtful = [c for c, quick in self._quick if not quick(get(c))]
            if not doubtful:
                self._fine.add(types)
                return
            # Only the doubtful columns, one value each: a whole row's arrays cost ~13 µs.
            if all(self._stores(c, get(c)) for c in doubtful):
                return
        why = self._refusal(self.table, row)
        if why is None:
            return
        try:
            key = self._key(row)
        except KeyError:  # no key column: it was never stored
            raise ProjectionError(why) from None
        if self.rows.get(key) is row:  # changed in place: its good state is gone
            self.delete(key)
            why += "; the row is dropped"
        raise ProjectionError(why)

    def _stores(self, column: str, value: Any) -> bool:
        ctype = self.table.types[column]
        if pa.types.is_timestamp(ctype.arrow):  # the flush refuses the other zone's
            return False
        try:
            if ctype.encode is not None and pa.types.is_string(ctype.arrow):
                ctype.encode([value])  # JSON, UUID: the text it makes is stored, for certain
            else:
                ctype.array([value])
        except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError, TypeError):
            return False
        return True


class _CheckedNormalisingState(_CheckedWrites, _NormalisingState):
    __slots__ = ()


def table_state(table: Table, log: WriteLog, refusal: Refusal | None = None) -> TableState:
    """The state of ``table``; one that normalises values when a column needs it, and
    one that checks every write at once with ``refusal`` (dead-letter mode).

    >>> from decimal import Decimal
    >>> from workbench.replay.projection import Table
    >>> t = Table(key="id", id=str, price="DECIMAL(8,2)")
    >>> table_state(t, WriteLog()).upsert({"id": "a", "price": Decimal("2.5")})["price"]
    Decimal('2.50')
    """
    normalises = any(ctype.normalise for ctype in table.types.values())
    if refusal is not None:
        checked = (_CheckedNormalisingState if normalises else _CheckedWrites)(table, log)
        checked.checks(refusal)
        return checked
    if normalises:
        return _NormalisingState(table, log)
    return TableState(table, log)


class Tables:
    """The tables of a projection as attributes: ``tables.memories.get(...)``.

    A misspelt table raises :class:`AttributeError`; the runner's error names
    the tables there are. (No ``__getattr__`` here: defining one makes every
    ``tables.name`` lookup take CPython's slow path, three times an event.)
    """

    def __init__(self, states: dict[str, TableState]) -> None:
        self.__dict__.update(states)
        self._states = states

    if TYPE_CHECKING:  # for type checkers only: tables are attributes

        def __getattr__(self, name: str) -> TableState: ...

    def __getitem__(self, name: str) -> TableState:
        return self._states[name]

    def __iter__(self) -> Iterator[TableState]:
        return iter(self._states.values())

    def names(self) -> list[str]:
        return list(self._states)

    def __repr__(self) -> str:
        return "Tables(" + ", ".join(f"{n}={len(s)} rows" for n, s in self._states.items()) + ")"
