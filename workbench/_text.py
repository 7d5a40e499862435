"""Values as a reader writes them, for messages, explanations and listings.

``repr`` shows Python's constructors (``Decimal('0.50')``,
``datetime.datetime(2024, 5, 1, ..., tzinfo=...)``); a reader of a diff or a
safety report wants ``0.50`` and ``2024-05-01 07:52:27.650408+00:00``.

>>> import datetime as dt, decimal, uuid
>>> plain(decimal.Decimal("0.50")), plain(dt.datetime(2024, 5, 1, 7, 52, 27, 650408, tzinfo=dt.UTC))
('0.50', '2024-05-01 07:52:27.650408+00:00')
>>> plain({"a": [1, dt.date(2024, 5, 1)]}), plain(None), plain(b"\\x00\\x01")
('{"a": [1, "2024-05-01"]}', None, '<2 bytes>')
"""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ParamSpec

from workbench.errors import ArgumentError, WorkbenchError

if TYPE_CHECKING:
    import polars as pl

P = ParamSpec("P")

__all__ = [
    "Duration",
    "Text",
    "as_text",
    "did_you_mean",
    "duration",
    "named_twice",
    "plain",
    "python_ready",
    "span",
    "unmistakable",
]


def plain(value: Any) -> str | None:
    """``value`` as text a reader writes (None stays None: a missing value, not ``"None"``)."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=plain, ensure_ascii=False)  # a row: its values plain
    return str(value)


def duration(seconds: float) -> str:
    """Seconds as a person reads them.

    >>> [duration(s) for s in (0.0123, 8.2, 754, 7300, 8.131e7)]
    ['12.3 ms', '8.2 s', '12.6 min', '2.03 h', '941 days']
    """
    for unit, size in (("days", 86_400), ("h", 3_600), ("min", 60), ("s", 1)):
        if abs(seconds) >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds * 1000:.3g} ms"


class Text(str):
    """Text a notebook shows as it reads: a cell ending in ``result.summary()`` prints
    the lines, not a quoted string with ``\\n`` escapes (IPython's ``_repr_pretty_``).

    >>> Text("a\\nb") == "a\\nb", isinstance(Text("x"), str)
    (True, True)
    """

    __slots__ = ()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))


def as_text(method: Callable[P, str]) -> Callable[P, Text]:
    """Make a method's string a :class:`Text` (every result's ``summary``)."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Text:
        return Text(method(*args, **kwargs))

    return wrapper


class Duration(dt.timedelta):
    """A timedelta a notebook shows as a person reads it (``≈ 6.9 min``).

    In text (an f-string) it is a timedelta to the second: an estimate has no
    microseconds worth reading.

    >>> d = Duration(seconds=415.3)
    >>> d == dt.timedelta(seconds=415.3), str(d), f"{Duration(seconds=0.25)}"
    (True, '0:06:55', '0:00:00.250000')
    """

    __slots__ = ()

    def __str__(self) -> str:
        if self >= dt.timedelta(seconds=1):
            return str(
                dt.timedelta(days=self.days, seconds=round(self.seconds + self.microseconds / 1e6))
            )
        return super().__str__()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(f"≈ {duration(self.total_seconds())} ({self})")


def python_ready(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with the time columns Python cannot hold as text: a year past 9999 (valid
    in Postgres and DuckDB) made ``rows()`` raise OverflowError; the rest are kept.

    >>> import polars as pl, datetime as dt
    >>> f = pl.DataFrame({"t": [dt.datetime(2024, 1, 1)]}).with_columns(
    ...     far=pl.lit(dt.datetime(9999, 1, 1)).dt.offset_by("2000y"))
    >>> python_ready(f).row(0)
    (datetime.datetime(2024, 1, 1, 0, 0), '+11999-01-01 00:00:00.000000')
    """
    import polars as pl  # here, not on import: the CLI's --help needs no Polars

    far = [
        name
        for name, dtype in frame.schema.items()
        if dtype.is_temporal()
        and dtype != pl.Duration
        and dtype != pl.Time
        and frame.select((pl.col(name).dt.year() > 9999) | (pl.col(name).dt.year() < 1))
        .to_series()
        .any()
    ]
    return frame.with_columns(pl.col(far).cast(pl.String)) if far else frame


def span(first: int, last: int) -> str:
    """An inclusive range of positions as a reader writes it.

    >>> span(16, 16), span(2, 5)
    ('16', '2-5')
    """
    return f"{first}" if first == last else f"{first}-{last}"


def plural(n: int, word: str, words: str | None = None) -> str:
    """``n`` and ``word``, in the plural (``words``, or ``word`` + s) unless ``n`` is 1.

    >>> plural(1, "event"), plural(1200, "crash", "crashes")
    ('1 event', '1,200 crashes')
    """
    return f"{n:,} {word if n == 1 else words or word + 's'}"


def did_you_mean(name: str, names: Iterable[str]) -> str:
    """``; did you mean X?`` naming the ``names`` closest to a mistyped ``name`` (the
    same but for case first: ``orderId`` for ``orderid``), or nothing.

    >>> did_you_mean("orderid", ["orderId", "amount"]), did_you_mean("amont", ["amount", "id"])
    ('; did you mean orderId?', '; did you mean amount?')
    >>> did_you_mean("zzz", ["amount"])
    ''
    """
    close = close_names(name, names)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def named_twice(names: Iterable[str]) -> str | None:
    """The first of ``names`` given more than once (a column named twice), or None.

    >>> named_twice(["id", "day", "id"]), named_twice(["id"])
    ('id', None)
    """
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None


def names_given(
    value: str | Iterable[str] | None,
    what: str,
    error: type[WorkbenchError] = ArgumentError,
    noun: str = "name",
) -> list[str]:
    """A name or several (a list, a set, dict keys ...) as a list: one ``str`` is one name,
    never its letters; anything else, or a name given twice, is a one-line ``error``.

    >>> names_given("retention", "accept"), names_given(("a", "b"), "only"), names_given(None, "x")
    (['retention'], ['a', 'b'], [])
    >>> names_given(5, "accept")
    Traceback (most recent call last):
    ...
    workbench.errors.ArgumentError: accept: a name or a list of them, not 5
    >>> names_given(["id", "day", "id"], "key")
    Traceback (most recent call last):
    ...
    workbench.errors.ArgumentError: key: 'id' is named twice
    """
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    try:
        values: list[Any] = list(value)
    except TypeError:
        values = [value]
    if isinstance(value, bytes) or not all(isinstance(v, str) for v in values):
        raise error(f"{what}: a {noun} or a list of them, not {value!r}")
    twice = named_twice(values)
    if twice is not None:
        raise error(f"{what}: {twice!r} is named twice")
    return values


def close_names(name: str, names: Iterable[str]) -> list[str]:
    """The ``names`` closest to a mistyped ``name``, those the same but for case first.

    >>> close_names("amont", ["amount", "id"])
    ['amount']
    """
    names = list(dict.fromkeys(names))  # a column of both sides is named once
    same = [n for n in names if n.lower() == name.lower()]
    return same or difflib.get_close_matches(name, names, n=3, cutoff=0.6)


def unmistakable(text: str) -> str:
    """``text`` quoted when it would print like another: empty or ``null`` (else like a
    missing value) or with spaces at an edge (else like the text without them).

    >>> unmistakable(""), unmistakable(" pad "), unmistakable("a b"), unmistakable("null")
    ("''", "' pad '", 'a b', "'null'")
    """
    # "null" too: a JSON null (text) printed as a missing value does.
    return repr(text) if not text or text != text.strip() or text == "null" else text
