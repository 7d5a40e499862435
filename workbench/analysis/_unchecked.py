"""What a check could not look at: a source where a column it needs is null in every event.

A check that filters out events lacking a column finds nothing in a source
that never fills it, which reads as a clean 0. These helpers find such
sources, so a result can say "not checked" instead. Events that lack the
column only sometimes are normal (a raw NATS message next to enveloped
ones) and are not reported.

>>> import tempfile, pyarrow as pa
>>> from workbench.archive import ArchiveReader, ArchiveWriter
>>> root = tempfile.mkdtemp()
>>> _ = ArchiveWriter(root, "s").append(pa.table({"global_position": [1, 2],
...     "recorded_at": [0, 1], "stream": ["a", "a"]}))
>>> need = Need("stream gaps", (("stream",), ("stream_position",)), "a stream and a stream_position")
>>> frame = find_unchecked(ArchiveReader(root), [need])
>>> frame.select("source", "check", "events", "null_columns").rows()
[('s', 'stream gaps', 2, ['stream_position'])]
>>> not_checked_lines(frame)
['stream gaps not checked for s: stream_position is null in all 2 events (map it with --map stream_position=...)']
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import polars as pl

from workbench.archive import ArchiveReader

__all__ = ["UNCHECKED_SCHEMA", "Need", "find_unchecked", "not_checked_lines"]

#: Columns of every result's ``unchecked`` table.
UNCHECKED_SCHEMA: Final[dict[str, pl.DataType]] = {
    "source": pl.String(),
    "check": pl.String(),
    "events": pl.Int64(),
    "null_columns": pl.List(pl.String()),
    "reason": pl.String(),
}

# Columns no --map can fill: the archiver keeps the message's own bytes there.
_UNMAPPABLE: Final[frozenset[str]] = frozenset({"payload"})


@dataclass(frozen=True)
class Need:
    """What one check needs of an event: every group has a non-null column (any of it)."""

    #: What goes unchecked, as the ``check`` column says it ("stream gaps").
    check: str
    #: Groups of envelope columns; an event is checkable when each group has a value.
    columns: tuple[tuple[str, ...], ...]
    #: The same in words, for a source where no single column is the culprit.
    needs: str

    def condition(self) -> str:
        """SQL true for an event this check can look at.

        >>> Need("x", (("a", "b"), ("c",)), "").condition()
        '(a is not null or b is not null) and (c is not null)'
        """
        return " and ".join(
            "(" + " or ".join(f"{c} is not null" for c in group) + ")" for group in self.columns
        )


def _names(items: Sequence[str], joiner: str = "and") -> str:
    """``a``, ``a and b``, ``a, b and c``.

    >>> _names(["a"]), _names(["a", "b"]), _names(["a", "b", "c"], "or")
    ('a', 'a and b', 'a, b or c')
    """
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {joiner} {items[-1]}"


def _reason(need: Need, events: int, filled: dict[str, int]) -> tuple[list[str], str]:
    """The columns to blame (null in every event) and the sentence saying why."""
    empty = [g for g in need.columns if not any(filled[c] for c in g)]
    if not empty:  # each column is there sometimes, never all together
        return [], f"none of its {events:,} events has {need.needs}"
    null = [c for g in empty for c in g]
    verb = "is" if len(null) == 1 else "are"
    maps = [[f"--map {c}=..." for c in g if c not in _UNMAPPABLE] for g in empty]
    maps = [m for m in maps if m]
    hint = ""
    if maps:
        it = "it" if sum(len(m) for m in maps) == 1 else "them"
        hint = f" (map {it} with {' and '.join(_names(m, 'or') for m in maps)})"
    return null, f"{_names(null)} {verb} null in all {events:,} events{hint}"


def find_unchecked(reader: ArchiveReader, needs: Sequence[Need]) -> pl.DataFrame:
    """Per source and need, a row when no event of the source meets it (one scan of ``events``)."""
    columns = sorted({c for need in needs for group in need.columns for c in group})
    counts = ", ".join(
        [f'count({c}) as "{c}"' for c in columns]
        + [
            f'count(*) filter (where {need.condition()}) as "need_{i}"'
            for i, need in enumerate(needs)
        ]
    )
    rows = reader.sql(
        f"select source, count(*) as events, {counts} from events group by source order by source"
    ).fetchall()
    found = []
    for source, events, *numbers in rows:
        filled = dict(zip(columns, numbers[: len(columns)], strict=True))
        for need, checkable in zip(needs, numbers[len(columns) :], strict=True):
            if events and not checkable:
                null, reason = _reason(need, events, filled)
                found.append((source, need.check, events, null, reason))
    return pl.DataFrame(found, schema=UNCHECKED_SCHEMA, orient="row")


def not_checked_lines(unchecked: pl.DataFrame) -> list[str]:
    """One sentence per check and cause: ``<check> not checked for <source>: <reason>``,
    the sources that share a cause in one (an archive of many raw NATS streams).

    >>> frame = pl.DataFrame([("a", "stream gaps", 2, ["s"], "s is null in all 2 events (x)"),
    ...     ("b", "stream gaps", 9, ["s"], "s is null in all 9 events (x)")],
    ...     schema=UNCHECKED_SCHEMA, orient="row")
    >>> not_checked_lines(frame)
    ['stream gaps not checked for 2 sources (a, b): s is null in all their events (x)']
    """
    groups: dict[tuple[str, tuple[str, ...]], list[tuple[str, str]]] = {}
    for source, check, null, reason in unchecked.select(
        "source", "check", "null_columns", "reason"
    ).rows():
        groups.setdefault((check, tuple(null)), []).append((source, reason))
    lines = []
    for (check, _), rows in groups.items():
        if len(rows) == 1:
            lines.append(f"{check} not checked for {rows[0][0]}: {rows[0][1]}")
            continue
        names = [source for source, _ in rows]
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        reason = re.sub(r"in all [\d,]+ events", "in all their events", rows[0][1])
        reason = re.sub(r"none of its [\d,]+ events", "none of their events", reason)
        lines.append(f"{check} not checked for {len(rows)} sources ({shown}): {reason}")
    return lines
