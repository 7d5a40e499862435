"""Connecting to PostgreSQL with ADBC, and turning its errors into one line.

Every failure a user can cause (wrong DSN, missing table or column,
permission denied) becomes a :class:`~workbench.errors.SourceError` whose
message is one line and never contains the DSN's password.

>>> quote_table("message_store.messages")
('message_store', 'messages', '"message_store"."messages"')
>>> quote_table("mt_events")
('public', 'mt_events', '"public"."mt_events"')
>>> describe_error(RuntimeError("IO: connection to server failed: password=s3cret\\nmore"))
'connection to server failed: password=*** (RuntimeError)'
>>> describe_error(RuntimeError("CANCELLED: [libpq] Failed to execute query '\\nSELECT 1\\n': "
...                             "ERROR:  canceling statement due to statement timeout"))
'canceling statement due to statement timeout (RuntimeError)'
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import adbc_driver_postgresql.dbapi as pg_dbapi

from workbench._sql import ident
from workbench.errors import SourceError
from workbench.sources.redaction import redact, remember

__all__ = [
    "TableColumns",
    "connect",
    "describe_error",
    "execute",
    "fetch_all",
    "partition_root",
    "quote_ident",
    "quote_table",
    "source_error",
    "source_name",
    "table_columns",
]

# SQLSTATE → what the user did wrong, in words.
_SQLSTATES = {
    "42P01": "table not found",
    "42703": "column not found",
    "42501": "permission denied",
    "3D000": "database not found",
    "28000": "authentication failed",
    "28P01": "authentication failed",
    "42883": "function or operator not found",
    "22P02": "invalid value",
    "57014": "query cancelled: by statement_timeout (add options=-c%20statement_timeout%3D0 "
    "to the DSN, or raise it for this role) or by an administrator",
}
# ADBC prefixes messages with a status ("IO: ", "NOT_FOUND: ") and libpq with "[libpq]",
# and quotes the failed query (over many lines) before the server's message.
_QUERY = re.compile(r"Failed to execute query '.*?':\s*", re.S)
_PREFIX = re.compile(
    r"^(?:[A-Z_]+:\s*)?(?:\[libpq\]\s*)?(?:Failed to [a-z ]+:\s*)?"
    r"(?:Execution error \[PGRES_[A-Z_]+\]:\s*)?(?:ERROR:\s*)?"
)
# A cast that fails on one row (a view's text::json) fails the whole read, mid-stream.
_BAD_CAST = re.compile(r"invalid input syntax for type (\w+( with time zone)?)")

#: column name → PostgreSQL type name (``udt_name``), in table order.
TableColumns = dict[str, str]


#: Quote an SQL identifier: ``a"b`` → ``"a""b"``.
quote_ident = ident


def quote_table(name: str, default_schema: str = "public") -> tuple[str, str, str]:
    """Split ``schema.table`` (schema optional) into schema, table and quoted SQL.

    A part may be written quoted, as in SQL (``app."Order Events"``, a dot
    inside quotes is part of the name); a bare part is taken exactly as
    written, case included, so ``public.Events`` finds EF Core's ``"Events"``.

    >>> quote_table('app."Order.Events"')
    ('app', 'Order.Events', '"app"."Order.Events"')
    >>> quote_table("Events")[2]
    '"public"."Events"'
    """
    match = _TABLE_NAME.fullmatch(name)
    if match is None:
        raise SourceError(f"table {name!r} must be TABLE or SCHEMA.TABLE")
    parts = [
        quoted.replace('""', '"') if quoted is not None else bare.strip()
        for quoted, bare in (match.group(1, 2), match.group(3, 4))
        if quoted is not None or bare is not None
    ]
    schema, table = parts if len(parts) == 2 else (default_schema, parts[0])
    if not table or not schema:
        raise SourceError(f"table {name!r} must be TABLE or SCHEMA.TABLE")
    return schema, table, f"{quote_ident(schema)}.{quote_ident(table)}"


_PART = r'\s*(?:"((?:[^"]|"")*)"|([^."]+))\s*'
_TABLE_NAME = re.compile(rf"{_PART}(?:\.{_PART})?")


def source_name(schema: str, table: str) -> str:
    """The archive source of ``schema.table``: a part holding a dot or a quote is quoted
    as SQL quotes it, so ``"a.b".c`` and ``a."b.c"`` are two sources, not one.

    >>> source_name("app", "events"), source_name("a.b", "c"), source_name("a", "b.c")
    ('postgres:app.events', 'postgres:"a.b".c', 'postgres:a."b.c"')
    """

    def part(name: str) -> str:
        return quote_ident(name) if "." in name or '"' in name else name

    return f"postgres:{part(schema)}.{part(table)}"


def describe_error(exc: BaseException) -> str:
    """One line saying what went wrong, password-free."""
    text = _QUERY.sub("", str(exc)).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    first = _PREFIX.sub("", first).strip() or type(exc).__name__
    state = getattr(exc, "sqlstate", None)
    if state is None and (cast := _BAD_CAST.search(first)) is not None:
        return redact(
            f"{first} (a row's value does not cast to {cast.group(1)} in the table's view "
            "or query: select the column as it is stored; the archiver reads JSON and "
            "times row by row, and counts the rows it cannot)"
        )
    what = _SQLSTATES.get(state or "")
    tail = (
        f"{what}, SQLSTATE {state}"
        if what
        else (f"SQLSTATE {state}" if state else type(exc).__name__)
    )
    return redact(f"{first} ({tail})")


def source_error(context: str, exc: BaseException) -> SourceError:
    """A :class:`SourceError` for ``exc`` that names what we were doing."""
    return SourceError(f"{redact(context)}: {describe_error(exc)}")


def connect(dsn: str) -> Any:
    """Open an ADBC DB-API connection in autocommit mode (transactions are explicit).

    Raises :class:`SourceError` with a one-line, password-free message.
    """
    remember(dsn)
    if not dsn or ("://" not in dsn and "=" not in dsn):
        raise SourceError("--dsn must be a PostgreSQL URI (postgresql://…) or key=value string")
    authority = dsn.partition("://")[2].partition("/")[0] if "://" in dsn else ""
    if authority.count("@") > 1:  # libpq would echo a piece of the password as a host or port
        raise SourceError(
            f"cannot read the DSN {redact(dsn)}: percent-encode '@', ':' and '/' in the user "
            "or password (%40, %3A, %2F)"
        )
    try:
        con = pg_dbapi.connect(dsn, autocommit=True)
    except Exception as exc:
        # The driver quotes the query it ran once connected; refusals to connect
        # (authentication, privileges, too many connections) come without one.
        connected = "Failed to execute query" in str(exc)
        context = (
            f"connected to {dsn}, but the driver's first query failed"
            if connected
            else (f"cannot connect to {dsn}")
        )
        raise source_error(context, exc) from None
    # The workbench only reads a store: SQL it is given (--position-sql) cannot write either.
    run(con, "set session characteristics as transaction read only", "making the session read-only")
    # Times Postgres writes as text (a tstzrange, an array read as its text) carry the
    # session's zone: in UTC, as DuckDB's side is, not as the server happens to be set.
    run(con, "set time zone 'UTC'", "setting the session's time zone")
    return con


@contextlib.contextmanager
def execute(con: Any, sql: str, context: str, parameters: Any = None) -> Iterator[Any]:
    """Run ``sql`` on a new cursor; database errors become :class:`SourceError`."""
    cur = con.cursor()
    try:
        try:
            cur.execute(sql, parameters)
        except pg_dbapi.Error as exc:
            raise source_error(context, exc) from None
        yield cur
    finally:
        cur.close()


def run(con: Any, sql: str, context: str) -> None:
    """Run a statement whose result is not needed (``begin``, ``commit``, DDL)."""
    with execute(con, sql, context):
        pass


def fetch_all(con: Any, sql: str, context: str, parameters: Any = None) -> list[tuple[Any, ...]]:
    """All rows of ``sql`` as tuples."""
    with execute(con, sql, context, parameters) as cur:
        try:
            return list(cur.fetchall())
        except pg_dbapi.Error as exc:  # an error found while the rows stream (nextval()...)
            raise source_error(context, exc) from None


def _similar_tables(con: Any, name: str) -> str:
    """``; similar tables here: …`` — the same name in other schemas, or the same suffix."""
    suffix = "%" + name.rsplit("_", 1)[-1]  # stored_events → %events, mt_events → %events
    rows = fetch_all(
        con,
        "select table_schema || '.' || table_name from information_schema.tables "
        "where table_schema not in ('pg_catalog', 'information_schema') "
        "and (lower(table_name) = lower($1) or table_name ilike $2) "
        "order by lower(table_name) = lower($1) desc, 1 limit 5",
        "looking for similar tables",
        (name, suffix),
    )
    if not rows:
        return ""
    return "; similar tables here: " + ", ".join(r[0] for r in rows) + " (name it as SCHEMA.TABLE)"


def partition_root(con: Any, table: str) -> str | None:
    """The partitioned table ``table`` is a partition of (at the top of its tree), or None."""
    _, _, quoted = quote_table(table)
    rows = fetch_all(
        con,
        "select pg_partition_root(c.oid)::text from pg_class c "
        "where c.oid = to_regclass($1) and c.relispartition",
        f"looking whether {table} is a partition",
        (quoted,),
    )
    return str(rows[0][0]) if rows else None


def table_columns(con: Any, table: str) -> TableColumns:
    """Columns of ``schema.table`` and their types; a clear error if it is missing or unreadable."""
    schema, name, quoted = quote_table(table)
    rows = fetch_all(
        con,
        "select a.attname::text, t.typname::text from pg_attribute a "
        "join pg_type t on t.oid = a.atttypid "
        "where a.attrelid = to_regclass($1) and a.attnum > 0 and not a.attisdropped "
        "order by a.attnum",
        f"reading the columns of {schema}.{name}",
        (quoted,),
    )
    if not rows:
        raise SourceError(
            f"table {schema}.{name} not found (or it has no columns)" + _similar_tables(con, name)
        )
    ok = fetch_all(
        con,
        "select has_table_privilege(to_regclass($1), 'SELECT')",
        f"checking access to {schema}.{name}",
        (quoted,),
    )
    if not ok[0][0]:
        raise SourceError(f"permission denied for table {schema}.{name}")
    return {col: typ for col, typ in rows}
