"""Quoting for the SQL the diff builds from user-given column and table names.

>>> ident('a"b')
'"a""b"'
>>> literal("it's")
"'it''s'"
"""

from __future__ import annotations

__all__ = ["ident", "literal"]


def ident(name: str) -> str:
    """A DuckDB identifier, quoted so any column name is safe."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    """A DuckDB string literal."""
    return "'" + value.replace("'", "''") + "'"
