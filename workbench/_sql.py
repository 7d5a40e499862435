"""Quoting for SQL the workbench builds from user-given names and values (DuckDB and Postgres).

Both databases quote the same way, so every module quotes through here.

>>> ident('a"b')
'"a""b"'
>>> literal("it's")
"'it''s'"
>>> path_list(["/a/x.parquet", "/b/it's.parquet"])
"['/a/x.parquet', '/b/it''s.parquet']"
"""

from __future__ import annotations

import os
from collections.abc import Iterable

__all__ = ["ident", "literal", "path_list"]


def ident(name: str) -> str:
    """A quoted identifier: any column, table or schema name is safe."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    """A string literal."""
    return "'" + value.replace("'", "''") + "'"


def path_list(paths: Iterable[str | os.PathLike[str]]) -> str:
    """A DuckDB list literal of file paths, for ``read_parquet([...])``."""
    return "[" + ", ".join(literal(os.fspath(p)) for p in paths) + "]"
