"""Quoting for SQL the workbench builds from user-given names and values (DuckDB and Postgres),
and the DuckDB expressions more than one layer builds.

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

__all__ = ["CE_PRODUCER", "ident", "literal", "path_list", "url_decoded"]


def ident(name: str) -> str:
    """A quoted identifier: any column, table or schema name is safe."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    """A string literal."""
    return "'" + value.replace("'", "''") + "'"


def path_list(paths: Iterable[str | os.PathLike[str]]) -> str:
    """A DuckDB list literal of file paths, for ``read_parquet([...])``."""
    return "[" + ", ".join(literal(os.fspath(p)) for p in paths) + "]"


def url_decoded(value: str) -> str:
    """DuckDB SQL for the text ``value`` with its percent-encoding decoded, as CloudEvents'
    readers decode a ``ce-*`` header (Java's NATS binding and Python's HTTP binding
    encode them; JavaScript's does not). A ``%`` that decodes to no UTF-8 (a literal
    ``%`` in the value) keeps the value as it came.

    >>> import duckdb
    >>> duckdb.sql(f"select {url_decoded(literal('%2Forders%20svc'))}, "
    ...            f"{url_decoded(literal('100%'))}").fetchall()
    [('/orders svc', '100%')]
    """
    return f"(case when contains({value}, '%') then coalesce(try(url_decode({value})), {value}) else {value} end)"


#: An archived event's CloudEvents producer: its ``ce-source`` as CloudEvents' readers
#: read the header (``%2Forders`` is ``/orders``); null for an event with none. An event
#: id is unique per producer, not across producers: the duplicates and causation checks
#: both read ids so.
CE_PRODUCER = (
    """case when contains(metadata, '"ce-source"') then """
    + url_decoded("""json_extract_string(metadata, '$."ce-source"')""")
    + " end"
)
