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

import copy
import math
from typing import Any

__all__ = ["ClassState", "instance_changes", "same"]


class ClassState:
    """The mutable containers (list, dict, set) on a projection's own classes, as they
    were when this was made: :meth:`changed` names those a run changed, :meth:`restore`
    puts them back (each run starts from a copy of what the class held at first)."""

    def __init__(self, cls: type) -> None:
        self.saved: dict[tuple[type, str], Any] = {}
        for klass in cls.__mro__:
            if klass.__module__.startswith("workbench.") or klass is object:
                continue  # the engine's own classes (and the examples') hold no run state
            for name, value in vars(klass).items():
                if isinstance(value, list | dict | set | bytearray) and not name.startswith("__"):
                    try:
                        self.saved[(klass, name)] = copy.deepcopy(value)
                    except Exception:  # a lock, a connection: no run state to restore
                        continue

    def changed(self) -> list[str]:
        """``Cls.name`` of each container changed since."""
        return [
            f"{klass.__name__}.{name}"
            for (klass, name), value in self.saved.items()
            if not same(vars(klass).get(name), value)
        ]

    def restore(self) -> None:
        for (klass, name), value in self.saved.items():
            setattr(klass, name, copy.deepcopy(value))


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
