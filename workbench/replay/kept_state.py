"""State a projection keeps outside its tables: on its class, or on its instance.

Neither is stored with the checkpoint. A handler that keeps state on the class
(``Cls.seen.add(...)``) carries it from one in-process run into the next (a
notebook's second replay starts from the first one's); one that keeps it on the
instance (``self.seen``) starts a resumed replay, in a new process, without it.
The replay names both, and puts the class back as it was; the safety check runs
each replay from the class as it was first.

>>> class Counting:
...     seen: set[str] = set()
...     def __init__(self) -> None:
...         self.total = 0
>>> Counting.__module__ = "my_projection"
>>> state = ClassState(Counting)
>>> Counting.seen.add("a"); instance = Counting(); instance.total = 3
>>> state.changed(), instance_changes(instance, Counting())
(['Counting.seen'], ['total'])
>>> state.restore(); Counting.seen
set()
"""

from __future__ import annotations

import collections
import copy
import datetime as dt
import decimal
import math
import sys
import types
from collections.abc import Iterable
from typing import Any

__all__ = ["ClassState", "instance_changes", "same"]


class ClassState:
    """The data on a projection's own classes (counters, flags, containers), as it was
    when this was made: :meth:`changed` names what a run changed or added,
    :meth:`restore` puts it back (each run starts from a copy of what the class held at
    first; a cache filled on first use is filled again). The module globals the
    projection's code names (in its methods, and in the module's functions they call)
    are watched too, by identity and contents, not copied (a notebook's may be large,
    and are the user's): :meth:`changed_globals` names them.

    >>> class Numbering:
    ...     next_id = 1
    ...     seen = None
    >>> Numbering.__module__ = "my_projection"
    >>> state = ClassState(Numbering)
    >>> Numbering.next_id += 1; Numbering.seen = {"a"}; Numbering.cache = {}
    >>> state.changed()
    ['Numbering.next_id', 'Numbering.seen', 'Numbering.cache']
    >>> state.restore(); Numbering.next_id, Numbering.seen, hasattr(Numbering, "cache")
    (1, None, False)
    """

    def __init__(self, cls: type) -> None:
        self.saved: dict[tuple[type, str], Any] = {}
        self.unsaved: set[tuple[type, str]] = set()  # state deepcopy cannot copy
        self.classes = [
            klass
            for klass in cls.__mro__
            # The engine's own classes (and the examples') hold no run state.
            if not klass.__module__.startswith("workbench.") and klass is not object
        ]
        for klass in self.classes:
            for name, value in vars(klass).items():
                if _is_state(name, value):
                    try:
                        self.saved[(klass, name)] = copy.deepcopy(value)
                    except Exception:  # a lock, a connection: no run state to restore
                        self.unsaved.add((klass, name))
        self.globals: dict[str, dict[str, Any]] = {}
        for klass in self.classes:
            module = sys.modules.get(klass.__module__)
            if module is not None:
                watched = self.globals.setdefault(module.__name__, {})
                watched.update(_fingerprints(module, _names_used(klass, module)))

    def changed(self) -> list[str]:
        """``Cls.name`` of each value on the classes changed or added since."""
        found = [
            f"{klass.__name__}.{name}"
            for (klass, name), value in self.saved.items()
            if not same(vars(klass).get(name, _GONE), value)
        ]
        return found + [f"{klass.__name__}.{name}" for klass, name in self._added()]

    def changed_globals(self) -> list[str]:
        """``name (a global of module)`` of each watched global changed since."""
        found = []
        for module_name, before in self.globals.items():
            module = sys.modules.get(module_name)
            after = _fingerprints(module, before) if module is not None else {}
            found += [
                f"{name} (a global of {module_name})"
                for name, mark in before.items()
                if after.get(name) != mark
            ]
        return found

    def _added(self) -> list[tuple[type, str]]:
        return [
            (klass, name)
            for klass in self.classes
            for name, value in list(vars(klass).items())
            if (klass, name) not in self.saved
            and (klass, name) not in self.unsaved
            and _is_state(name, value)
        ]

    def restore(self) -> None:
        for klass, name in self._added():
            delattr(klass, name)
        for (klass, name), value in self.saved.items():
            setattr(klass, name, copy.deepcopy(value))


_GONE = object()


#: The kinds of value that are a projection's data (a counter, a flag, a container); an
#: object of another class (a client, a lock) is left alone: its equality and copies
#: would say nothing about what a run changed.
_DATA = (
    int, float, complex, str, bytes, tuple, frozenset, list, dict, set, bytearray,
    collections.deque, decimal.Decimal, dt.date, dt.time, dt.timedelta, type(None),
)  # fmt: skip

#: Containers up to this size are fingerprinted by their values' identities (a count in
#: a dict incremented in place), larger ones by their length only.
_LOOKED_INTO = 10_000


def _is_state(name: str, value: Any) -> bool:
    """Whether a class attribute or global is data a handler may change (not a dunder)."""
    return isinstance(value, _DATA) and not name.startswith("__") and not name.startswith("_wb_")


def _names_used(cls: type, module: types.ModuleType) -> set[str]:
    """The global names the code of ``cls``'s own functions (methods, properties, what a
    decorator wraps) reads or writes, and the code of the module's functions they call."""
    names: set[str] = set()
    codes = [code for attr in vars(cls).values() for code in _codes(attr)]
    seen: set[types.CodeType] = set()
    while codes:
        code = codes.pop()
        if code in seen:
            continue
        seen.add(code)
        names.update(code.co_names)
        codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
        for name in code.co_names:  # a helper of the module's the handler calls
            helper = vars(module).get(name)
            if isinstance(helper, types.FunctionType) and helper.__module__ == module.__name__:
                codes += _codes(helper)
    return names


def _codes(attr: Any) -> list[types.CodeType]:
    """The code objects of a class attribute: a function, one wrapped by a decorator or a
    static/class method, a property's accessors, a cached property's function."""
    found = []
    for fn in (
        getattr(attr, "__func__", attr),
        getattr(attr, "__wrapped__", None),
        getattr(attr, "func", None),  # functools.cached_property
        getattr(attr, "fget", None),
        getattr(attr, "fset", None),
        getattr(attr, "fdel", None),
    ):
        code = getattr(fn, "__code__", None)
        if isinstance(code, types.CodeType):
            found.append(code)
    return found


def _fingerprints(module: types.ModuleType, names: Iterable[str]) -> dict[str, Any]:
    """The identity and contents of each of ``names`` that is a plain global of ``module``."""
    found = {}
    for name in sorted(names):
        value = vars(module).get(name, _GONE)
        if value is _GONE or not _is_state(name, value):
            continue
        contents: Any = None
        if isinstance(value, dict | list | collections.deque | set | bytearray):
            contents = len(value)
            if isinstance(value, dict | list | collections.deque) and len(value) <= _LOOKED_INTO:
                contents = tuple(map(id, value.values() if isinstance(value, dict) else value))
        found[name] = (id(value), contents)
    return found


def instance_changes(instance: Any, fresh: Any) -> list[str]:
    """Attributes of ``instance`` that a fresh one (``fresh``) does not hold alike."""
    new = vars(fresh)
    return [
        name
        for name, value in vars(instance).items()
        if name not in new or not same(new[name], value)
    ]


def same(a: Any, b: Any) -> bool:
    """Equal rows, NaN equal to NaN (a handler computing NaN twice is deterministic)."""
    if a == b:
        return True
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return all(same(a[k], b[k]) for k in a)
    return isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
