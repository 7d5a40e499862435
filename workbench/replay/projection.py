"""Handler-style projections: declared tables, ``@on`` handlers, ``@upcaster`` chains.

A projection is a plain Python class. Tables are declared with their key and
column types; handlers receive the decoded event and a view of the tables
(``get / upsert / update / delete`` by key); upcasters turn an old payload
version into the next one before any handler sees it.

>>> class Counts(Projection):
...     name = "counts"
...     per_type = Table(key="event_type", event_type=str, n=int)
...
...     @upcaster("Renamed", from_version=1)
...     def renamed_v1(self, data):
...         return {"new_name": data["name"]}
...
...     @on("Created", "Renamed")
...     def count(self, event, tables):
...         row = tables.per_type.get(event.event_type)
...         tables.per_type.upsert({"event_type": event.event_type,
...                                 "n": (row["n"] if row else 0) + 1})
>>> Counts.schema()
'counts_v1'
>>> [t.name for t in Counts.tables()], sorted(Counts.handlers())
(['per_type'], ['Created', 'Renamed'])
>>> Counts().upcast("Renamed", 1, {"name": "x"})
(2, {'new_name': 'x'})
"""

from __future__ import annotations

import hashlib
import inspect
import re
import types
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import pyarrow as pa

from workbench._sql import ident
from workbench._text import did_you_mean, named_twice
from workbench.errors import ProjectionError
from workbench.replay.columns import ColumnType, column_type

__all__ = ["Projection", "Table", "check_name", "on", "upcaster"]

F = TypeVar("F", bound=Callable[..., Any])

_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


class Table:
    """A declared output table: its key column(s) and typed columns.

    Column types are Python types (``str, int, float, bool, Decimal,
    datetime, date, UUID, dict, list[str]``, ...) or DuckDB names
    (``"VARCHAR"``, ``"DECIMAL(12,2)"``, ``"JSON"``, ...; see
    :func:`~workbench.replay.columns.column_type`). Key
    columns become the primary key; a composite key is a tuple of names, and
    rows are then addressed by a tuple of values.

    >>> t = Table(key=("agent_id", "day"), agent_id=str, day="DATE", n=int)
    >>> t.key, t.columns
    (('agent_id', 'day'), ('agent_id', 'day', 'n'))

    Columns whose names Python keywords cannot carry (``key`` itself, say,
    for a key-value read model) are given as a mapping:

    >>> Table(key="key", columns={"key": str, "value": "JSON"}).columns
    ('key', 'value')
    >>> Table(key="x", y=int)
    Traceback (most recent call last):
    ...
    workbench.errors.ProjectionError: table key column x is not a declared column (declared: y): declare it, x=<type>
    """

    def __init__(
        self,
        *,
        key: str | tuple[str, ...],
        columns: Mapping[str, object] | None = None,
        **more_columns: object,
    ) -> None:
        self.key: tuple[str, ...] = (key,) if isinstance(key, str) else tuple(key)
        self.name = ""
        twice = named_twice(self.key)
        if twice is not None:
            raise ProjectionError(f"table key {self.key}: column {twice} is named twice")
        both = set(columns or ()) & set(more_columns)
        if both:
            raise ProjectionError(f"column {', '.join(sorted(both))} is declared twice")
        types: dict[str, ColumnType] = {}
        for column, spec in {**(columns or {}), **more_columns}.items():
            try:
                types[column] = column_type(spec)
            except ProjectionError as exc:
                raise ProjectionError(f"column {column}: {exc}") from None
        for column in self.key:
            if column not in types:
                raise ProjectionError(
                    f"table key column {column} is not a declared column (declared: "
                    f"{', '.join(types) or 'none'}): declare it, {column}=<type>"
                    f"{did_you_mean(column, types)}"
                )
        self.types = types
        self.columns: tuple[str, ...] = tuple(types)

    def __set_name__(self, owner: type, name: str) -> None:
        # Checked by the projection class, not here: Python 3.11 buries an error raised
        # in __set_name__ under "RuntimeError: Error calling __set_name__".
        self.name = name

    def check_name(self) -> None:
        """Refuse a table name DuckDB would fold or the workbench's own tables use."""
        if self.name.startswith("_"):
            raise ProjectionError(
                f"table name {self.name!r}: names starting with _ are the workbench's own "
                "(_checkpoint, _lineage, ...); name the table without it"
            )
        if not _NAME.match(self.name):
            raise ProjectionError(f"table name {self.name!r}: use lower_case letters, digits, _")

    @property
    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema rows are written with."""
        return pa.schema([(c, self.types[c].arrow) for c in self.columns])

    def ddl(self, schema: str, *, primary_key: bool = True) -> str:
        """``CREATE TABLE`` statement for this table inside ``schema`` (``primary_key=False``:
        without its key's constraint, as a replay writes it until it ends)."""
        cols = ", ".join(f"{ident(c)} {self.types[c].sql}" for c in self.columns)
        key = ", ".join(ident(c) for c in self.key)
        constraint = f", primary key ({key})" if primary_key else ""
        return f"create table {ident(schema)}.{ident(self.name)} ({cols}{constraint})"

    def __repr__(self) -> str:
        return f"Table({self.name!r}, key={self.key}, columns={self.columns})"


def on(*event_types: str, any_version: bool = False) -> Callable[[F], F]:
    """Mark a method ``(self, event, tables)`` as the handler of ``event_types``.

    A handler expects the newest schema version of its types (older ones
    reach it through upcasters, and coverage reports those that cannot);
    ``any_version=True`` says it reads every version as it is.
    """
    if not event_types:
        raise ProjectionError("@on needs at least one event type")
    if not all(isinstance(t, str) for t in event_types):  # a bare @on over a method
        raise ProjectionError(
            '@on takes the event types it handles, @on("MemoryCreated"); a bare @on names none'
        )

    def mark(fn: F) -> F:
        _check_arity(fn, ("self", "event", "tables"), "@on")
        stacked: tuple[str, ...] = getattr(fn, "_wb_on", ())  # @on("A") over @on("B"): both
        if stacked and fn._wb_any_version != any_version:  # type: ignore[attr-defined]
            raise ProjectionError(
                f"@on {fn.__name__}: stacked @on with and without any_version; "
                "give the types of each kind to a handler of its own"
            )
        fn._wb_on = (*event_types, *stacked)  # type: ignore[attr-defined]
        fn._wb_any_version = any_version  # type: ignore[attr-defined]
        return fn

    return mark


def _check_arity(fn: Callable[..., Any], names: tuple[str, ...], decorator: str) -> None:
    """Refuse, where the class is written, a method that cannot take ``names``.

    >>> _check_arity(lambda self, event: None, ("self", "event", "tables"), "@on")
    Traceback (most recent call last):
    ...
    workbench.errors.ProjectionError: @on <lambda>: takes (self, event), but is called with (self, event, tables)
    """
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        raise ProjectionError(f"{decorator} {fn.__name__}: async def is never awaited; use def")
    if inspect.isgeneratorfunction(fn):
        raise ProjectionError(
            f"{decorator} {fn.__name__}: a generator (it yields) never runs its body; "
            "write rows with tables.<table>.upsert(row)"
            if decorator == "@on"
            else f"{decorator} {fn.__name__}: a generator (it yields); return the payload"
        )
    try:
        inspect.signature(fn).bind(*names)
    except TypeError:
        params = ", ".join(inspect.signature(fn).parameters)
        raise ProjectionError(
            f"{decorator} {fn.__name__}: takes ({params}), but is called with ({', '.join(names)})"
        ) from None
    except ValueError:  # no signature to read (a builtin): the call will tell
        pass


def upcaster(
    event_type: str, *, from_version: int, to_version: int | None = None
) -> Callable[[F], F]:
    """Mark a method ``(self, data) -> data`` turning ``from_version`` payloads into the next.

    Upcasters chain: v1 → v2 → v3 until no upcaster for the version exists.
    """

    def mark(fn: F) -> F:
        _check_arity(fn, ("self", "data"), "@upcaster")
        target = from_version + 1 if to_version is None else to_version
        if target <= from_version:
            raise ProjectionError(f"upcaster {fn.__name__}: to_version must exceed from_version")
        fn._wb_upcaster = (event_type, from_version, target)  # type: ignore[attr-defined]
        return fn

    return mark


def check_name(name: str) -> None:
    """Refuse a projection name that is not lower_case letters, digits and ``_``: DuckDB
    matches schema names whatever their case, so ``MEMORIES_v1`` would be ``memories_v1``.

    >>> check_name("Memories")
    Traceback (most recent call last):
    ...
    workbench.errors.ProjectionError: projection name 'Memories': use lower_case letters, digits, _
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ProjectionError(f"projection name {name!r}: use lower_case letters, digits, _")


class Projection:
    """Base class of handler-style projections.

    Class attributes: ``name`` (default: the class name in lower case),
    ``version`` (default 1; output goes to schema ``<name>_v<version>``),
    ``ignore`` (event types deliberately not handled, so coverage does not
    report them), tables as :class:`Table` attributes, handlers marked
    with :func:`on`, upcasters marked with :func:`upcaster`. Handlers must be
    deterministic: no clock, no randomness, no calls to services.
    """

    name: ClassVar[str] = ""
    _wb_derived_name: ClassVar[bool] = False  # name taken from the class name, not set
    version: ClassVar[int] = 1
    ignore: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A subclass keeps a name its base set in its own body: `class V2(Memories):
        # version = 2` is the next version of "memories" (blue/green). A name a base
        # only derived from its class name is not inherited, so two read models on
        # one helper base do not share (and overwrite) one schema.
        if "name" not in cls.__dict__:
            named = next(k for k in cls.__mro__[1:] if "name" in k.__dict__)
            if named is Projection or named.__dict__.get("_wb_derived_name"):
                cls.name = cls.__name__.lower()
                cls._wb_derived_name = True
        check_name(cls.name)
        # bool is an int, but version = True is no version anyone meant.
        if not isinstance(cls.version, int) or isinstance(cls.version, bool) or cls.version < 0:
            raise ProjectionError(
                f"{cls.__name__}.version = {cls.version!r}: a version is a whole number, 0 or "
                "more (its output goes to schema <name>_v<version>)"
            )
        for table in cls.tables():
            table.check_name()
        cls.handlers()  # fail at class definition on duplicate handlers
        cls.upcasters()

    @classmethod
    def code(cls) -> str:
        """A fingerprint of the projection's code: every method of its classes (the
        workbench's own aside), so a resume can tell that the handlers changed. The
        same in every process; a module-level function the methods call is not in it.

        >>> class A(Projection):
        ...     def h(self): return 1
        >>> class B(Projection):
        ...     def h(self): return 2
        >>> A.code() == A.code(), A.code() == B.code()
        (True, False)
        """
        digest = hashlib.sha256()
        for klass in cls.__mro__:
            if klass is Projection or klass is object:
                break
            for name, value in sorted(vars(klass).items()):
                fn = getattr(value, "__func__", value)  # a staticmethod or classmethod's
                if inspect.isfunction(fn):
                    digest.update(name.encode())
                    _digest_code(digest, fn.__code__)
        return digest.hexdigest()[:16]

    @classmethod
    def schema(cls) -> str:
        """The DuckDB schema this version writes into: ``<name>_v<version>``."""
        return f"{cls.name}_v{cls.version}"

    @classmethod
    def tables(cls) -> list[Table]:
        """Declared tables, in declaration order (base classes first); a subclass drops
        an inherited table by naming it anew as anything else (``tombstones = None``).

        >>> class Base(Projection):
        ...     kept = Table(key="id", id=str)
        ...     dropped = Table(key="id", id=str)
        >>> class Next(Base):
        ...     dropped = None
        >>> [t.name for t in Base.tables()], [t.name for t in Next.tables()]
        (['kept', 'dropped'], ['kept'])
        """
        found: dict[str, Table] = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if isinstance(value, Table):
                    found[name] = value
                else:
                    found.pop(name, None)
        return list(found.values())

    @classmethod
    def handlers(cls) -> dict[str, str]:
        """Event type → name of the method that handles it."""
        found: dict[str, str] = {}
        for attr in _members(cls):
            for event_type in getattr(getattr(cls, attr), "_wb_on", ()):
                if event_type in found and found[event_type] != attr:
                    raise ProjectionError(
                        f"{cls.__name__}: {event_type} has two handlers, "
                        f"{found[event_type]} and {attr}"
                    )
                found[event_type] = attr
        return found

    @classmethod
    def upcasters(cls) -> dict[tuple[str, int], tuple[int, str]]:
        """(event type, from version) → (to version, method name)."""
        found: dict[tuple[str, int], tuple[int, str]] = {}
        for attr in _members(cls):
            mark = getattr(getattr(cls, attr), "_wb_upcaster", None)
            if mark is not None:
                event_type, source, target = mark
                if (event_type, source) in found:
                    raise ProjectionError(
                        f"{cls.__name__}: two upcasters for {event_type} v{source}"
                    )
                found[(event_type, source)] = (target, attr)
        return found

    def upcast(self, event_type: str, version: int, data: Any) -> tuple[int, Any]:
        """Run the upcaster chain from ``version``; return the final version and payload."""
        chain = self.upcasters()
        seen = {version}
        while (step := chain.get((event_type, version))) is not None:
            version, attr = step
            if version in seen:
                raise ProjectionError(f"upcaster chain for {event_type} loops at v{version}")
            seen.add(version)
            data = getattr(self, attr)(data)
        return version, data

    @classmethod
    def any_version(cls) -> frozenset[str]:
        """Event types whose handler reads every schema version (``@on(..., any_version=True)``)."""
        return frozenset(
            event_type
            for event_type, attr in cls.handlers().items()
            if getattr(getattr(cls, attr), "_wb_any_version", False)
        )

    def handler_label(self, event_type: str) -> str | None:
        """``Class.method`` of the handler of ``event_type`` (as lineage records it)."""
        attr = self.handlers().get(event_type)
        return None if attr is None else getattr(type(self), attr).__qualname__


def _members(cls: type) -> list[str]:
    return [name for name in dir(cls) if not name.startswith("__")]


def _digest_code(digest: Any, code: types.CodeType) -> None:
    """Feed what a function does (bytecode, constants, names; nested code too) to ``digest``;
    not where it is (line numbers), so moving a method changes nothing."""
    digest.update(code.co_code)
    digest.update(repr(code.co_names).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _digest_code(digest, const)
        else:
            digest.update(_stable_repr(const).encode())


def _stable_repr(const: object) -> str:
    """``repr`` of a code constant, but a frozenset's (``x in {"A", "B"}``) in sorted
    order: its own order follows the process's string hash seed.

    >>> _stable_repr(frozenset({"b", "a"})), _stable_repr(("x", frozenset({2, 1})))
    ("frozenset('a', 'b')", "('x', frozenset(1, 2))")
    """
    if isinstance(const, frozenset):
        return f"frozenset({', '.join(sorted(map(_stable_repr, const)))})"
    if isinstance(const, tuple):
        return "(" + ", ".join(map(_stable_repr, const)) + ("," if len(const) == 1 else "") + ")"
    return repr(const)
