"""Loading a projection from ``path/to/file.py:ClassName`` (or ``package.module:Name``).

Without ``:Name``, the one projection the file or module defines is taken.

>>> load_projection("workbench.examples.memories:Memories").schema()
'memories_v1'
>>> load_projection("workbench.examples.memories")
Traceback (most recent call last):
...
workbench.errors.ProjectionError: workbench.examples.memories defines several projections (MEMORIES_SQL, Memories, MemoriesClock, MemoriesNonIdempotent, MemoriesOrderDependent); name one: workbench.examples.memories:MEMORIES_SQL
>>> load_projection("nowhere.py:X")
Traceback (most recent call last):
...
workbench.errors.ProjectionError: projection file nowhere.py does not exist
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from workbench._text import did_you_mean
from workbench.errors import ProjectionError
from workbench.replay.projection import Projection
from workbench.replay.sql_projection import SqlProjection

__all__ = ["instantiate", "load_projection"]


def load_projection(spec: str) -> Any:
    """The projection named by ``spec``: an instance of the class, or a SqlProjection object."""
    where, sep, attr = spec.rpartition(":")
    if not sep:  # FILE.py or module alone: the one projection it defines
        where, attr = spec, ""
    if not where or (sep and not attr):
        raise ProjectionError(f"projection {spec!r}: expected FILE.py:ClassName or module:Name")
    module = _load_file(Path(where)) if where.endswith(".py") else _load_module(where)
    found = _projections(module)
    if not attr:
        if len(found) != 1:
            what = f"several projections ({', '.join(found)})" if found else "no projection"
            hint = f"; name one: {where}:{next(iter(found))}" if found else ""
            raise ProjectionError(f"{where} defines {what}{hint}")
        attr = next(iter(found))
    try:
        obj = getattr(module, attr)
    except AttributeError:
        there = f" (it defines {', '.join(found)})" if found else ""
        raise ProjectionError(f"{where} has no {attr}{did_you_mean(attr, found)}{there}") from None
    if isinstance(obj, type) and issubclass(obj, Projection):
        return instantiate(obj)
    if isinstance(obj, Projection | SqlProjection):
        return obj
    raise ProjectionError(f"{spec} is not a Projection subclass or a SqlProjection")


def _projections(module: Any) -> list[str]:
    """Names of the projections ``module`` defines, sorted: its own Projection
    subclasses (not ones it imports to extend, unless its ``__all__`` exports them, as a
    package's ``__init__`` does) and its SqlProjection objects.

    >>> import workbench.examples
    >>> _projections(workbench.examples)
    ['MEMORIES_SQL', 'Memories', 'MemoriesClock', 'MemoriesNonIdempotent', 'MemoriesOrderDependent']
    """
    exported = set(getattr(module, "__all__", ()))
    return sorted(
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (
            isinstance(obj, SqlProjection)
            or (
                isinstance(obj, type)
                and issubclass(obj, Projection)
                and (obj.__module__ == module.__name__ or name in exported)
            )
        )
    )


def instantiate(cls: type[Projection]) -> Projection:
    """``cls()``, or a one-line error when its ``__init__`` wants arguments."""
    try:
        return cls()
    except TypeError as exc:
        raise ProjectionError(
            f"cannot create {cls.__qualname__}(): {exc}; a projection is created without "
            "arguments (from Python, pass an instance instead)"
        ) from None
    except ProjectionError:
        raise
    except (Exception, SystemExit) as exc:  # the projection's own __init__: its error, not ours
        raise ProjectionError(f"{cls.__qualname__}() failed: {_failure(exc)}") from exc


def _load_file(path: Path) -> Any:
    if not path.is_file():
        raise ProjectionError(f"projection file {path} does not exist")
    # A unique module name per file, so two files named projections.py do not collide.
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"_wb_projection_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ProjectionError(f"cannot load {path} as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    # As `python file.py` does: the file's own directory first, so it imports its
    # siblings (`from base import Ledger`, then `class LedgerV2(Ledger)`).
    directory = str(path.resolve().parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        spec.loader.exec_module(module)
    except ProjectionError:
        raise
    except (Exception, SystemExit) as exc:  # sys.exit(0) at import is no success to pass on
        del sys.modules[name]
        raise ProjectionError(f"{path} failed to import: {_failure(exc)}") from None
    return module


def _failure(exc: BaseException) -> str:
    """What a projection's own code raised, in one line.

    >>> _failure(SystemExit(0))
    'it called sys.exit(0): a projection file is imported, not run (keep script code under if __name__ == "__main__":)'
    """
    if isinstance(exc, SystemExit):
        return (
            f"it called sys.exit({exc.code!r}): a projection file is imported, not run (keep "
            'script code under if __name__ == "__main__":)'
        )
    return f"{type(exc).__name__}: {exc}"


def _load_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ProjectionError(f"cannot import {name}: {exc}") from None
    except (Exception, SystemExit) as exc:  # the module's own code failed
        raise ProjectionError(f"{name} failed to import: {_failure(exc)}") from None
