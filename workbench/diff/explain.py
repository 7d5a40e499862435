"""Explaining one differing key: both rows and the events that wrote it in the candidate.

The candidate's replay lineage says which events (source, global_position)
wrote each output row; their types, times and data come from the archive the
replay read (``_replay_info.archive``) or the one passed to ``wb.diff``.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
import unicodedata
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import polars as pl
import pyarrow as pa

from workbench._duckdb import error_line, to_polars
from workbench._sql import ident
from workbench._text import as_text, plain, python_ready, span
from workbench.analysis.gaps import HARMLESS_REASONS, stream_gaps_sql
from workbench.archive import ArchiveReader
from workbench.errors import ArchiveError, DiffError
from workbench.replay.store import lineage_key_sql

if TYPE_CHECKING:
    from workbench.diff.result import Diff

__all__ = ["Explanation", "explain_key"]

_EVENT_COLUMNS = (
    "event_id",
    "stream",
    "stream_position",
    "schema_version",
    "occurred_at",
    "recorded_at",
    "correlation_id",
    "causation_id",
    "data",
)


#: Flag columns of an explanation's events, and what each says about the event.
_FLAGS = (
    ("redelivered", True, "REDELIVERED: same event_id at another position"),
    ("applied", False, "not applied by the candidate"),
    ("after_live_position", True, "after the live position"),
)


@dataclass
class Explanation:
    """Why one key differs: the rows on each side and the candidate's events for it.

    ``events`` are the events that wrote the key in the candidate (``applied``)
    and the copies of them (same ``event_id``) it did not apply: a redelivery
    an idempotent candidate skipped is where a live read model that counted
    it goes wrong, and no lineage names it.
    """

    key: dict[str, Any]
    status: str
    candidate_rows: pl.DataFrame
    live_rows: pl.DataFrame
    changed_columns: list[str]
    events: pl.DataFrame
    live_position: int | None = None
    notes: list[str] = field(default_factory=list)
    #: Whether the candidate carries a replay's lineage (else no event can be named).
    has_lineage: bool = True

    @property
    def candidate(self) -> dict[str, Any] | None:
        """The candidate row (the first, if the key is duplicated), or None."""
        rows = self.candidate_rows
        return python_ready(rows).row(0, named=True) if len(rows) else None

    @property
    def live(self) -> dict[str, Any] | None:
        """The live row (the first, if the key is duplicated), or None."""
        rows = self.live_rows
        return python_ready(rows).row(0, named=True) if len(rows) else None

    def df(self) -> pl.DataFrame:
        """The events, oldest first."""
        return self.events

    def arrow(self) -> pa.Table:
        """The same as :meth:`df`, as an Arrow table."""
        return self.df().to_arrow()

    def head(self, n: int = 5) -> pl.DataFrame:
        """The first ``n`` events."""
        return self.df().head(n)

    @as_text
    def summary(self) -> str:
        """The explanation as text: the changed values, both rows, the suspect events."""
        return str(self)

    def __str__(self) -> str:
        lines = [f"key {self.key}: {self.status}"]
        for column in self.changed_columns:
            c = self.candidate.get(column) if self.candidate else None
            lv = self.live.get(column) if self.live else None
            lines.append(f"  {column}: candidate {_shown(c)}, live {_shown(lv)}")
            if (alike := _lookalike(column, c, lv)) is not None:
                lines.append(f"    {alike}")
        for side, rows in (("candidate", self.candidate_rows), ("live", self.live_rows)):
            label = f"{side} row:".ljust(15)
            if len(rows) <= 1:
                lines.append(
                    f"{label}{plain(self.candidate if side == 'candidate' else self.live)}"
                )
                continue
            lines.append(f"{side} rows ({len(rows)}: the key is duplicated on this side):")
            lines += [f"  {plain(row)}" for row in rows.iter_rows(named=True)]
        lines.append(self._events_line() + (":" if self.events.height else ""))
        mixed = (
            "schema_version" in self.events.columns
            and self.events["schema_version"].drop_nulls().n_unique() > 1
        )
        previous = -1
        for e in self.suspects().iter_rows(named=True):
            if e["row"] > previous + 1:
                lines.append("  …")
            previous = e["row"]
            note = f"  ({e['why']})" if e["why"] else ""
            if "recorded_at" not in e:  # the lineage alone: the notes say why
                handler = f" (by {e['handler']})" if e.get("handler") else ""
                lines.append(f"  #{e['global_position']} {e['event_type']}{handler}{note}")
                continue
            data = e.get("data")
            lines.append(
                f"  #{e['global_position']} {e['event_type']}{_version(e, mixed)}{_placed(e)} "
                f"recorded {e.get('recorded_at')}"
                f"{_occurred(e.get('occurred_at'), e.get('recorded_at'))}"
                f" {'(no JSON payload)' if data is None else data or '(empty payload)'}{note}"
            )
        if previous < len(self.events) - 1:
            lines.append("  …")
        lines += self._all_notes()
        return "\n".join(lines)

    def _all_notes(self) -> list[str]:
        """The notes, and what a reader of several versions of one type should know."""
        if "schema_version" not in self.events.columns:
            return self.notes
        older = (
            self.events.group_by("event_type")
            .agg(pl.col("schema_version").drop_nulls().unique().sort())
            .filter(pl.col("schema_version").list.len() > 1)
            .sort("event_type")
        )
        return self.notes + [
            f"{event_type} events of v{', v'.join(map(str, versions))}: the older ones are "
            "shown as archived, before any upcaster made them what the handler read"
            for event_type, versions in older.iter_rows()
        ]

    def __repr__(self) -> str:
        changed = f" in {', '.join(self.changed_columns)}" if self.changed_columns else ""
        return f"Explanation(key {plain(self.key)}: {self.status}{changed}; {self._events_line()})"

    def _events_line(self) -> str:
        if not self.has_lineage:  # not "0 events wrote this key": none could be known
            return "the events behind it are unknown: the candidate has no replay lineage"
        skipped = (
            self.events.filter(~pl.col("applied")).height if "applied" in self.events.columns else 0
        )
        applied = self.events.height - skipped
        line = f"{applied} event{'' if applied == 1 else 's'} wrote this key in the candidate"
        if skipped:
            copies = "is a copy of one" if skipped == 1 else "are copies of them"
            line += f"; {skipped} more {copies} (same event_id) it did not apply"
        return line

    def suspects(self, ends: int = 3) -> pl.DataFrame:
        """The events worth reading first, oldest first: every redelivered one, every
        one after the live position, in a long history every event of a type the key
        had at most twice (the one consolidation among hundreds of accesses is what
        set the status that differs), and the first and last ``ends``. ``row`` is the
        event's place in :attr:`events`, ``why`` says what marks it.
        """
        n = self.events.height
        flags: list[pl.Expr] = [
            pl.when(pl.col(flag) == value).then(pl.lit(text))
            for flag, value, text in _FLAGS
            if flag in self.events.columns
        ]
        if n > 2 * ends:
            of_type = pl.len().over("event_type")
            flags.insert(
                0,
                pl.when(of_type == 1)
                .then(pl.format("the only {} event", "event_type"))
                .when(of_type == 2)
                .then(pl.format("one of 2 {} events", "event_type")),
            )
        flags += self._carrying_the_difference()
        flags += self._setting_the_times()
        why = pl.concat_str(flags, separator="; ", ignore_nulls=True) if flags else pl.lit("")
        why = pl.when(why != "").then(why)  # no flag: null, not ""
        row = pl.int_range(pl.len(), dtype=pl.Int64)
        shown = (pl.col("row") < ends) | (pl.col("row") >= n - ends) | pl.col("why").is_not_null()
        return (
            self.events.with_columns(row=row, why=why.cast(pl.String))
            # A short history in full: a few hidden events could be the very ones.
            .filter(shown if n > 4 * ends else pl.lit(True))
            .select("row", "why", pl.exclude("row", "why"))
        )

    def _carrying_the_difference(self, most: int = 3) -> list[pl.Expr]:
        """A flag for the few events whose payload holds a number a changed column is off
        by: an amount applied twice, or missed, shows as exactly that difference.
        A difference of 1 (a count) and numbers many events hold say nothing; a fraction
        (money off by 0.25) does."""
        if "data" not in self.events.columns or not self.candidate or not self.live:
            return []
        offs: list[tuple[str, Decimal, pl.Expr, str | pl.Expr]] = []
        for column in self.changed_columns:
            c, lv = self.candidate.get(column), self.live.get(column)
            if not all(
                isinstance(v, int | float | Decimal) and not isinstance(v, bool) for v in (c, lv)
            ):
                continue
            off = abs(Decimal(str(c)) - Decimal(str(lv)))
            if not off.is_finite() or off == 0:  # a NaN or infinity says nothing either
                continue
            number = re.escape(format(off.normalize(), "f"))
            # The number as a JSON value (not part of a longer one, not inside a string).
            holds = pl.col("data").str.contains(rf"[:\[,]\s*-?{number}(\.0+)?\s*[,\]}}]")
            said: str | pl.Expr = f"{off.normalize():f}"
            if off == off.to_integral_value() and off > 1 and _in_cents(column):
                # Cents in the read model, units in the payload (a v1 "price": "2.50",
                # or 2.5), as a number or as text; whole units only with their decimals
                # (3.00, not the 3 every quantity may hold).
                units = off / 100
                pattern = (
                    rf"{units:.0f}\.0+"
                    if units == units.to_integral_value()
                    else re.escape(f"{units.normalize():f}") + "0*"
                )
                in_units = pl.col("data").str.contains(rf'[:\[,]\s*"?-?{pattern}"?\s*[,\]}}]')
                said = (
                    pl.when(holds)
                    .then(pl.lit(said))
                    .otherwise(pl.lit(f"{units:.2f} ({said} in hundredths)"))
                )
                holds = holds | in_units
            offs.append((column, off, holds.fill_null(False), said))

        def few(holds: pl.Expr) -> bool:
            return 0 < self.events.select(holds.sum()).item() <= most

        def text(*parts: str | pl.Expr) -> pl.Expr:
            return pl.concat_str([p if isinstance(p, pl.Expr) else pl.lit(p) for p in parts])

        found: list[pl.Expr] = []
        told = pl.lit(False)  # events the flag of every column marks: said once
        if len(offs) > 1:  # one event holding what each column is off by: applied twice
            every = pl.all_horizontal([holds for _, _, holds, _ in offs])
            if few(every):
                told = every
                values = [part for i, o in enumerate(offs) for part in (" and " * bool(i), o[3])]
                columns = " and ".join(column for column, *_ in offs)
                found.append(
                    pl.when(every).then(text("holds ", *values, f", what {columns} are off by"))
                )
        # Alone, a difference of 1 (a count) says nothing: many events hold a 1.
        found += [
            pl.when(holds & ~told).then(text("holds ", said, f", what {column} is off by"))
            for column, off, holds, said in offs
            if off != 1 and few(holds)
        ]
        return found

    def _setting_the_times(self, most: int = 3) -> list[pl.Expr]:
        """A flag for the few events whose time a changed time column holds, on either
        side: the event that set ``last_active_at`` to the value that differs."""
        if not self.candidate or not self.live:
            return []
        found: list[pl.Expr] = []
        for column in self.changed_columns:
            for side, value in (("candidate", self.candidate.get(column)),
                                ("live", self.live.get(column))):  # fmt: skip
                if not isinstance(value, dt.datetime):
                    continue
                for when in ("occurred_at", "recorded_at"):
                    if when not in self.events.columns:
                        continue
                    same = _same_instant(pl.col(when), value, self.events.schema[when])
                    hits = self.events.select(same.fill_null(False).sum()).item()
                    if 0 < hits <= most:
                        found.append(pl.when(same).then(pl.lit(f"its {when} is {side}'s {column}")))
                        break  # occurred_at found it: recorded_at would say it again
        return found

    def _repr_html_(self) -> str:
        suspects = self.suspects()
        changed = "".join(
            f"<tr><td>{html.escape(c)}</td>"
            f"<td>{html.escape(_shown(self.candidate.get(c) if self.candidate else None))}</td>"
            f"<td>{html.escape(_shown(self.live.get(c) if self.live else None))}</td></tr>"
            for c in self.changed_columns
        )
        return (
            f"<div><b>{html.escape(json.dumps(self.key, default=str))}</b>: {self.status}"
            + (
                f"<table><tr><th>column</th><th>candidate</th><th>live</th></tr>{changed}</table>"
                if changed
                else ""
            )
            + f"<p>{html.escape(self._events_line())}"
            + (" (the suspects and the ends)" if suspects.height < self.events.height else "")
            + "</p>"
            + _events_html(suspects)
            + "".join(f"<p>{html.escape(note)}</p>" for note in self._all_notes())
            + "</div>"
        )


#: What a reader of an explanation looks at first, in this order; the rest stays in ``events``.
_SHOWN = ("global_position", "event_type", "recorded_at", "why", "data", "stream", "event_id")


def _in_cents(column: str) -> bool:
    """Whether ``column``'s name says it may count hundredths of a currency: a word of it
    (``total_cents``, ``amountMinor``, ``price``) names money.

    >>> [_in_cents(c) for c in ("total_cents", "amountMinor", "price", "amount")]
    [True, True, True, True]
    >>> [_in_cents(c) for c in ("accesses", "completion_percent", "recent_total")]
    [False, False, False]
    """
    words = re.findall(r"[a-z]+", re.sub(r"([a-z])([A-Z])", r"\1_\2", column).lower())
    return not _MONEY.isdisjoint(words)


_MONEY = frozenset({"cent", "cents", "minor", "amount", "price", "cost", "fee", "fees",
                    "balance", "money", "pence", "pennies"})  # fmt: skip


def _version(event: dict[str, Any], mixed: bool = False) -> str:
    """`` v2`` after the type; nothing for v1, the version of nearly every event, unless
    the events shown are of several versions (``mixed``)."""
    version = event.get("schema_version")
    return f" v{version}" if version is not None and (mixed or version != 1) else ""


def _placed(event: dict[str, Any]) -> str:
    """`` at stream_position 6``: where in its stream, which a fault may share (always
    the 6th event) as no global position does."""
    position = event.get("stream_position")
    return "" if position is None else f" at stream_position {position}"


def _same_instant(column: pl.Expr, value: dt.datetime, dtype: pl.DataType) -> pl.Expr:
    """Whether ``column`` (a datetime, aware or not) is the instant ``value`` is; a naive
    value is read as UTC, as the archive's times are."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    zone = getattr(dtype, "time_zone", None)
    if zone is None:
        return column == pl.lit(value.astimezone(dt.UTC).replace(tzinfo=None))
    return column == pl.lit(value).dt.convert_time_zone(zone)


def _events_html(suspects: pl.DataFrame) -> str:
    """The suspect events as a table whose texts are whole: Polars cuts strings at 30
    characters, which leaves only the key of every payload and half of every ``why``."""
    columns = [c for c in _SHOWN if c in suspects.columns]
    with pl.Config(fmt_str_lengths=400, tbl_cols=len(columns), tbl_rows=suspects.height):
        return suspects.select(columns)._repr_html_()


def _shown(value: Any) -> str:
    """A value in an explanation: as a reader writes it, text quoted, a missing one as null."""
    if value is None:
        return "null"
    return repr(value) if isinstance(value, str) else plain(value) or ""


def _occurred(occurred: Any, recorded: Any) -> str:
    """`` (occurred ...)`` when an event happened well before it was recorded: a late
    event, the likeliest to be applied out of order, is worth seeing as one.

    >>> import datetime as dt
    >>> at = dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)
    >>> _occurred(at - dt.timedelta(hours=2), at)
    ' (occurred 2024-05-01 10:00:00+00:00, 2:00:00 before)'
    >>> _occurred(at - dt.timedelta(seconds=1), at), _occurred(None, at)
    ('', '')
    """
    if not isinstance(occurred, dt.datetime) or not isinstance(recorded, dt.datetime):
        return ""
    late = recorded - occurred
    return f" (occurred {occurred}, {late} before)" if late > _LATE else ""


#: How much earlier than recorded an event must have occurred for explain to say so.
_LATE = dt.timedelta(minutes=1)


def _lookalike(column: str, candidate: Any, live: Any) -> str | None:
    """For two texts that differ yet print alike, where they differ, escaped.

    >>> print(_lookalike("name", "E\u0301mile", "\xc9mile"))
    they differ only in Unicode form: candidate 'E\u0301mile', live '\xc9mile'; --normalize 'name=nfc_normalize({})' compares them equal
    >>> print(_lookalike("name", "a\u00a0b", "a b"))
    they print alike but differ: candidate 'a\xa0b', live 'a b'
    >>> _lookalike("name", "a", "b") is None
    True
    """
    if not (isinstance(candidate, str) and isinstance(live, str)) or candidate == live:
        return None
    escaped = f"candidate {candidate!a}, live {live!a}"
    if unicodedata.normalize("NFC", candidate) == unicodedata.normalize("NFC", live):
        return (
            f"they differ only in Unicode form: {escaped}; "
            f"--normalize '{column}=nfc_normalize({{}})' compares them equal"
        )
    if _visible(candidate) == _visible(live):
        return f"they print alike but differ: {escaped}"
    return None


def _visible(text: str) -> str:
    """``text`` as a reader sees it: compatibility forms folded, spaces as one kind,
    invisible format characters (zero-width, BOM) gone."""
    folded = unicodedata.normalize("NFKC", text)
    return "".join(" " if ch.isspace() else ch for ch in folded if unicodedata.category(ch) != "Cf")


def _key_dict(diff: Diff, key: Any) -> dict[str, Any]:
    if isinstance(key, dict):
        missing = [k for k in diff.key if k not in key]
        if missing:
            raise DiffError(f"explain: the key needs {missing[0]!r}")
        extra = [k for k in key if k not in diff.key]
        if extra:
            raise DiffError(
                f"explain: {extra[0]!r} is not a key column (the key: {', '.join(diff.key)})"
            )
        return {k: key[k] for k in diff.key}
    values = list(key) if isinstance(key, tuple | list) else [key]
    if len(values) != len(diff.key):
        raise DiffError(f"explain: the key has {len(diff.key)} columns ({', '.join(diff.key)})")
    return dict(zip(diff.key, values, strict=True))


def _where(diff: Diff, key: dict[str, Any], side: str | None) -> str:
    """Rows of one ``side`` (``candidate``, ``live``; None: the diff's own table) whose key
    equals ``key`` as the diff compared it: an upper-case UUID finds the row a diff of
    a text key against a UUID key matched, as a ``1`` finds ``1.0``."""
    terms = []
    for name in key:
        lookup = diff.key_lookups.get(name)
        if lookup is None:
            terms.append(f"{ident(name)} IS NOT DISTINCT FROM ?")
            continue
        column = {"candidate": lookup.candidate, "live": lookup.live}.get(side or "", ident(name))
        terms.append(f"({column}) IS NOT DISTINCT FROM {lookup.value}")
    return " AND ".join(terms)


def explain_key(diff: Diff, key: Any) -> Explanation:
    """See :meth:`Diff.explain`."""
    values = _key_dict(diff, key)
    try:
        return _explain(diff, values)
    except duckdb.ConversionException as exc:  # '0c00d75d' for a UUID key, say
        shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
        raise DiffError(
            f"explain: the key {shown} does not fit the key's types: {error_line(exc)}"
        ) from None


def _explain(diff: Diff, values: dict[str, Any]) -> Explanation:
    params = list(values.values())
    con = diff.con
    candidate_rows, live_rows, found = (
        to_polars(
            con.sql(
                f"select * from {relation} where {_where(diff, values, side)}{order}",
                params=params,
            )
        )
        for relation, side, order in (
            (diff.candidate.relation, "candidate", ""),
            (diff.live.relation, "live", ""),
            ("_wb_diff", None, " order by _side"),
        )
    )
    if len(found):
        status = str(found["_status"][0])
        changed = [p.name for p in diff.plans if found[p.name + "__changed"][0] is True]
    elif not len(candidate_rows) and not len(live_rows):
        raise DiffError(_absent(diff, values))
    else:
        status, changed = "identical", []
    position = diff.summary.live_position
    if len(candidate_rows) == 1:  # the lineage has the key as the candidate holds it
        values = {k: candidate_rows[k][0] for k in values}
    # An identical row lacks nothing: where events are missing is no lead for it.
    events, notes = _events(diff, values, position, missing=status != "identical")
    return Explanation(
        values, status, candidate_rows, live_rows, changed, events, position, notes,
        has_lineage=diff.lineage is not None,
    )  # fmt: skip


def _absent(diff: Diff, key: dict[str, Any]) -> str:
    """Why no row was found: the key as given, and keys that start with it (a key copied
    cut short, as listings print long ids)."""
    shown = ", ".join(f"{name} {value!r}" for name, value in key.items())
    text = (
        f"explain: no row has {shown} on either side ({diff.summary.candidate_rows:,} "
        f"candidate, {diff.summary.live_rows:,} live rows)"
    )
    if len(key) == 1 and isinstance(value := next(iter(key.values())), str) and value:
        column = ident(next(iter(key)))
        found = diff.con.sql(
            f"select distinct k from (select {column}::VARCHAR as k from "
            f"{diff.candidate.relation} union all select {column}::VARCHAR from "
            f"{diff.live.relation}) where starts_with(lower(k), lower(?)) order by k limit 4",
            params=[value],
        ).fetchall()
        if found:
            more = ", ..." if len(found) > 3 else ""
            text += f"; keys that start so: {', '.join(repr(k) for (k,) in found[:3])}{more}"
    return text


def _foreign_events(reader: ArchiveReader) -> int:
    """Lineage events (``_wb_lineage_rows``) the archive lacks or holds with another type.

    Another archive's events at the same positions would explain a row with
    events that never touched it. A SqlProjection's lineage types may be
    labels its query chose, so only the handler engine's are compared.
    """
    rows = reader.sql(
        "select count(*) filter (where e.global_position is null "
        "or (l.handler is distinct from 'sql' and e.event_type is distinct from l.event_type)) "
        "from _wb_lineage_rows l left join events e using (source, global_position)"
    ).fetchall()
    return int(rows[0][0])


def _events(
    diff: Diff, key: dict[str, Any], position: int | None, *, missing: bool = True
) -> tuple[pl.DataFrame, list[str]]:
    empty = pl.DataFrame(
        schema={
            "source": pl.String,
            "global_position": pl.Int64,
            "event_type": pl.String,
            "handler": pl.String,
        }
    )
    if diff.lineage is None:
        return empty, ["give the candidate as FILE.duckdb:SCHEMA.TABLE of a replay for its events"]
    con = diff.con
    # The lineage key is the compact JSON of the key in the candidate's own types.
    order = diff.lineage.key_order(con, list(diff.key))
    casts = [f"CAST(? AS {diff.candidate.columns[k]})" for k in order]
    rendered = lineage_key_sql(order, casts)
    key_json = con.execute(f"select {rendered}", [key[k] for k in order]).fetchall()[0][0]
    lineage = con.sql(
        f"select source, global_position, event_type, handler from {diff.lineage.relation} "
        "where key = ? order by global_position, source",
        params=[key_json],
    ).to_arrow_table()
    notes: list[str] = []
    if (
        not lineage.num_rows
        and not con.sql(f"select 1 from {diff.lineage.relation} limit 1").fetchall()
    ):
        notes.append(
            f"the replay recorded no lineage for {diff.lineage.table_name} "
            "(replayed with lineage=False, or a SqlProjection with no lineage= query for it)"
        )
    archive_path = diff.archive or diff.lineage.archive_path(con)
    frame = _event_details(
        lineage, archive_path, diff.lineage.archive_path(con), notes, missing=missing
    )
    if "event_id" in frame.columns:
        # The same event applied twice is the classic cause of a wrong count.
        frame = frame.with_columns(
            redelivered=pl.col("event_id").is_not_null() & pl.col("event_id").is_duplicated()
        )
    if position is not None:
        frame = frame.with_columns(after_live_position=pl.col("global_position") > position)
    return frame, notes


def _event_details(
    lineage: pa.Table,
    archive_path: Any,
    replayed: str | None,
    notes: list[str],
    *,
    missing: bool = True,
) -> pl.DataFrame:
    """The lineage's events with their details from the archive at ``archive_path``, and
    the copies of them (same ``event_id``) the candidate did not apply; the lineage
    alone, with a note saying why, when that archive is missing or not the one the
    candidate ``replayed``.
    """
    if archive_path is None or not Path(archive_path).is_dir():
        notes.append(
            f"event details unavailable: no archive at {archive_path} (moved? name it with "
            "--archive DIR, or archive= in wb.diff)"
        )
        return pl.from_arrow(lineage)  # type: ignore[return-value]
    try:
        reader = ArchiveReader(archive_path)
    except ArchiveError as exc:
        raise DiffError(f"explain: {exc}") from None
    reader.con.register("_wb_lineage_rows", lineage)
    foreign = _foreign_events(reader)
    if foreign:
        notes.append(
            f"event details left out: the archive at {archive_path} is not the one the "
            f"candidate replayed{f' ({replayed})' if replayed else ''}: {foreign:,} of the "
            f"{lineage.num_rows:,} events the lineage names are missing from it or of "
            "another type"
        )
        return pl.from_arrow(lineage)  # type: ignore[return-value]
    extra = ", ".join(f"e.{c}" for c in _EVENT_COLUMNS)
    # Copies of those events the candidate did not apply (a redelivery an idempotent
    # handler skipped) wrote nothing, so no lineage names them; yet a live read model
    # that counted them is wrong exactly there. They are found by event_id.
    frame = reader.sql(
        f"""with applied as (
                select l.*, {extra}, true as applied from _wb_lineage_rows l
                left join events e using (source, global_position))
            select * from applied
            union all by name
            select e.source, e.global_position, e.event_type, NULL as handler, {extra},
                   false as applied
            from events e
            semi join applied a on a.source = e.source and a.event_id = e.event_id
            anti join applied b on b.source = e.source
                               and b.global_position = e.global_position
            order by global_position, source"""
    ).pl()
    if missing:
        notes += _missing_around(reader)
    return frame


def _missing_around(reader: ArchiveReader, most: int = 3) -> list[str]:
    """What the archive lacks among the key's events: the stream positions their
    streams skip, and recorded gaps between the first and the last of them. An
    event missing there is the likeliest cause of a row that lacks its effect.

    A row of one stream (an aggregate's) whose stream skips nothing lacks no
    event of it: gaps elsewhere in the archive are then not named.
    """
    notes = []
    ((streams, unplaced),) = reader.sql(
        "select count(distinct stream), count(*) filter (stream is null or stream_position is null) "
        "from events semi join _wb_lineage_rows using (source, global_position)"
    ).fetchall()
    # The stream gaps the gap check finds, of the key's streams only.
    key_streams = (
        "select distinct source, stream from events "
        "semi join _wb_lineage_rows using (source, global_position)"
    )
    holes = reader.sql(
        f"select stream, first_missing, last_missing from ({stream_gaps_sql(key_streams)}) "
        "order by stream, first_missing limit ?",
        params=[most + 1],
    ).fetchall()
    for stream, first, last in holes[:most]:
        notes.append(
            f"stream {stream} has no event at stream_position {span(first, last)} in the "
            "archive: an event missing there may be what this row lacks (archive.gaps() says why)"
        )
    if streams == 1 and not unplaced and not holes:
        return notes
    gaps = reader.sql(
        """select g.first_missing, g.last_missing, g.reason from gap_records g
           join (select source, min(global_position) as lo, max(global_position) as hi
                 from _wb_lineage_rows group by source) k
             on g.source = k.source and g.first_missing <= k.hi and g.last_missing >= k.lo
           where not list_contains(?, g.reason)  -- held no event
           order by g.first_missing limit ?""",
        params=[sorted(HARMLESS_REASONS), most + 1],
    ).fetchall()
    for first, last, reason in gaps[:most]:
        what = f"positions {span(first, last)} are" if last > first else f"position {first} is"
        notes.append(
            f"{what} missing from the archive ({reason}) between "
            "this key's first and last events: one of them may have been for this key"
        )
    if len(holes) > most or len(gaps) > most:
        notes.append("more missing positions among them: archive.gaps() lists all")
    return notes
