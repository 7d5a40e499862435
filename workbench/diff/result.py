"""The result of a diff: :class:`Diff` (rows, explain, chart) and its :class:`DiffSummary`."""

from __future__ import annotations

import contextlib
import html
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from workbench._duckdb import to_arrow, to_polars
from workbench._sql import ident, literal
from workbench._text import Text, did_you_mean, names_given
from workbench.archive import atomic_file
from workbench.diff.sides import files_attached
from workbench.errors import DiffError

if TYPE_CHECKING:
    import altair as alt

    from workbench.diff._types import ColumnPlan
    from workbench.diff.explain import Explanation
    from workbench.diff.lineage import Lineage
    from workbench.diff.sides import Side

__all__ = ["STATUSES", "Diff", "DiffSummary", "SchemaDiff", "TypeChange"]

STATUSES = (
    "identical",
    "changed",
    "only_in_candidate",
    "only_in_live",
    "not_yet_projected",
    "duplicate_key",
    "null_key",
)
# Statuses of rows that differ for certain. not_yet_projected rows differ too but
# may be the live side lagging; they still keep a diff from being "identical".
DIFFERENCE_STATUSES = ("changed", "only_in_candidate", "only_in_live", "duplicate_key", "null_key")


@dataclass(frozen=True)
class TypeChange:
    """A column whose type differs between the sides, and the type it was compared as."""

    column: str
    candidate_type: str
    live_type: str
    compared_as: str
    #: How the comparison treats the values, when the type does not say it all.
    how: str = ""


@dataclass(frozen=True)
class SchemaDiff:
    """Columns present on one side only, and columns whose type changed."""

    missing_in_candidate: list[str] = field(default_factory=list)
    missing_in_live: list[str] = field(default_factory=list)
    type_changes: list[TypeChange] = field(default_factory=list)

    @property
    def is_identical(self) -> bool:
        """No missing columns (type changes are compared after safe casts, so they may agree)."""
        return not (self.missing_in_candidate or self.missing_in_live)


@dataclass(frozen=True)
class DiffSummary:
    """Counts of rows by status, per-column differences, and schema differences.

    Rows counts are rows; ``duplicate_keys`` counts distinct keys that appear
    more than once on either side (all their rows are left out of the
    comparison and reported as ``duplicate_key``).
    """

    candidate_rows: int
    live_rows: int
    identical: int
    changed: int
    only_in_candidate: int
    only_in_live: int
    not_yet_projected: int
    duplicate_keys: int
    duplicate_key_rows_candidate: int
    duplicate_key_rows_live: int
    null_key_rows_candidate: int
    null_key_rows_live: int
    schema: SchemaDiff
    columns: pl.DataFrame
    live_position: int | None = None
    notes: list[str] = field(default_factory=list)
    #: The checkpoint of the candidate's replay when it has not finished (0: nothing
    #: flushed yet; it failed, or still runs), else None.
    candidate_unfinished: int | None = None

    @property
    def duplicate_key_rows(self) -> int:
        """Rows on either side whose key is duplicated on that side."""
        return self.duplicate_key_rows_candidate + self.duplicate_key_rows_live

    @property
    def differences(self) -> int:
        """Rows that differ (changed, on one side only, duplicate or NULL keys)."""
        return (
            self.changed
            + self.only_in_candidate
            + self.only_in_live
            + self.duplicate_key_rows
            + self.null_key_rows_candidate
            + self.null_key_rows_live
        )

    @property
    def verdict(self) -> str:
        """``identical``, or the differing rows and, apart, those live may not have
        caught up with (``not_yet_projected``), as every table of them counts both."""
        if self.is_identical:
            return "identical"
        text = f"{self.differences:,} differing rows"
        if self.not_yet_projected:
            # Written after the live position: lag, or wrong as well; said so, not as
            # reassurance (a live projection is always a little behind).
            text += (
                f" and {self.not_yet_projected:,} written after the live position "
                "(lag, or wrong too)"
            )
        missing = [*self.schema.missing_in_candidate, *self.schema.missing_in_live]
        if missing:  # "0 differing rows" alone read as identical, yet it is not
            text += (
                f"; the columns differ ({', '.join(missing)}: on one side only; ignore "
                "them to compare the rest)"
            )
        if self.duplicate_keys:
            text += (
                f"; {self.duplicate_keys:,} key(s) repeat, their rows set aside: is the key "
                "the whole key?"
            )
        return text

    @property
    def is_identical(self) -> bool:
        """No differing rows (not even ones the live side may not have caught up with),
        no missing columns, and a candidate whose replay finished: what "identical"
        promises is checked, never assumed."""
        return (
            self.differences == 0
            and self.not_yet_projected == 0
            and self.schema.is_identical
            and self.candidate_unfinished is None
        )

    def counts(self) -> pl.DataFrame:
        """The row counts as a small frame: ``status``, ``rows``."""
        statuses = {
            "identical": self.identical,
            "changed": self.changed,
            "only_in_candidate": self.only_in_candidate,
            "only_in_live": self.only_in_live,
            "not_yet_projected": self.not_yet_projected,
            "duplicate_key (candidate)": self.duplicate_key_rows_candidate,
            "duplicate_key (live)": self.duplicate_key_rows_live,
            "null_key (candidate)": self.null_key_rows_candidate,
            "null_key (live)": self.null_key_rows_live,
        }
        return pl.DataFrame({"status": list(statuses), "rows": list(statuses.values())})

    def as_dict(self) -> dict[str, Any]:
        """Everything as plain JSON-able values."""
        data = asdict(self)
        data["columns"] = self.columns.to_dicts()
        data["is_identical"] = self.is_identical
        return data

    def schema_lines(self) -> list[str]:
        """The schema differences, one sentence each (reported before any row count)."""
        lines = []
        if self.schema.missing_in_candidate:
            lines.append(f"missing in candidate: {', '.join(self.schema.missing_in_candidate)}")
        if self.schema.missing_in_live:
            lines.append(f"missing in live: {', '.join(self.schema.missing_in_live)}")
        for change in self.schema.type_changes:
            lines.append(
                f"type of {change.column}: {change.candidate_type} (candidate) vs "
                f"{change.live_type} (live), compared as {change.compared_as}"
                + (f" ({change.how})" if change.how else "")
            )
        return lines

    def __call__(self) -> Text:
        """The text, as every result's ``summary()`` gives it: ``d.summary()`` reads as
        ``r.summary()`` does elsewhere, while ``d.summary.changed`` stays a count."""
        return Text(self)

    def __repr__(self) -> str:
        # Not the dataclass's (every field, a Polars table inside): the counts, one line.
        shown = ", ".join(
            f"{r['status']} {r['rows']:,}" for r in self.counts().to_dicts() if r["rows"]
        )
        return f"DiffSummary({shown or 'no rows'})"

    def __str__(self) -> str:
        lines = [
            f"{self.candidate_rows:,} candidate vs {self.live_rows:,} live rows: {self.verdict}"
        ]
        lines += self.schema_lines()
        lines += [f"{row['status']}: {row['rows']}" for row in self.counts().to_dicts()]
        lines += [
            f"  {row['column']}: {row['changed']} changed"
            + (f", max |diff| {row['max_abs_diff']}" if row["max_abs_diff"] is not None else "")
            for row in self.columns.filter(pl.col("changed") > 0).to_dicts()
        ]
        lines += [f"note: {note}" for note in self.notes]  # why "identical" may not hold
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        verdict = self.verdict
        if self.candidate_unfinished is not None:
            verdict += " (the candidate's replay has not finished)"
        rows = "".join(
            f"<tr><td>{html.escape(r['status'])}</td><td style='text-align:right'>{r['rows']:,}</td></tr>"
            for r in self.counts().to_dicts()
            if r["rows"] or r["status"] in ("identical", "changed")
        )
        cols = "".join(
            f"<tr><td>{html.escape(r['column'])}</td><td style='text-align:right'>{r['changed']:,}</td>"
            f"<td>{'' if r['max_abs_diff'] is None else r['max_abs_diff']}</td></tr>"
            for r in self.columns.filter(pl.col("changed") > 0).to_dicts()
        )
        schema = "".join(f"<li>{html.escape(line)}</li>" for line in self.schema_lines())
        return (
            f"<div><b>Diff</b>: {self.candidate_rows:,} candidate vs {self.live_rows:,} live rows — "
            f"<b>{verdict}</b>"
            + (f"<ul>{schema}</ul>" if schema else "")
            + f"<table><tr><th>status</th><th>rows</th></tr>{rows}</table>"
            + (
                f"<table><tr><th>column</th><th>changed</th><th>max |diff|</th></tr>{cols}</table>"
                if cols
                else ""
            )
            + "</div>"
        )


@dataclass(frozen=True)
class KeyLookup:
    """One key column as the diff compared it: SQL over each side's own columns, and
    SQL that brings a given value (``?``) to the same form.

    A text key diffed against a UUID key is compared as a UUID (in any case, as
    .NET writes GUIDs), a normalised key after its ``normalize``: a key looked
    up later must meet the same rows.
    """

    candidate: str
    live: str
    value: str


class Diff:
    """A keyed comparison of a candidate read model against the live one.

    The differing rows live in one DuckDB table (``_wb_diff``) with a
    ``_status`` column, each compared column side by side
    (``<col>__candidate``, ``<col>__live``) and a ``<col>__changed`` flag;
    the summary, :meth:`rows` and :meth:`chart` are read from it.
    """

    def __init__(
        self,
        *,
        con: duckdb.DuckDBPyConnection,
        key: list[str],
        plans: list[ColumnPlan],
        summary: DiffSummary,
        key_lookups: dict[str, KeyLookup] | None = None,
        candidate: Side,
        live: Side,
        identical_sql: str,
        lineage: Lineage | None,
        archive: str | os.PathLike[str] | None,
    ) -> None:
        self.con = con
        self.key = key
        self.plans = plans
        #: How to find each key column's value as it was compared (see :class:`KeyLookup`).
        self.key_lookups = key_lookups or {}
        self.summary = summary
        self.candidate = candidate
        self.live = live
        self.lineage = lineage
        self.archive = archive
        self._identical_sql = identical_sql

    @property
    def columns(self) -> list[str]:
        """The compared columns (key columns excluded)."""
        return [p.name for p in self.plans]

    def _relation(self, status: str | Sequence[str] | None) -> duckdb.DuckDBPyRelation:
        statuses = names_given(status, "status", DiffError, "status")
        unknown = [s for s in statuses if s not in STATUSES]
        if unknown:
            close = did_you_mean(unknown[0], STATUSES)  # the summary counts duplicate_keys
            raise DiffError(
                f"unknown status {unknown[0]!r}{close} (the statuses: {', '.join(STATUSES)})"
            )
        order = ", ".join(ident(k) for k in self.key)
        parts = []
        kept = [s for s in statuses if s != "identical"]
        if kept or not statuses:
            where = f"where _status in ({', '.join(literal(s) for s in kept)})" if kept else ""
            parts.append(f"select * from _wb_diff {where}")
        if "identical" in statuses:
            parts.append(self._identical_sql)
        return self.con.sql(
            " union all by name ".join(parts) + f" order by _status, {order}, _side"
        )

    def sides_attached(self) -> contextlib.AbstractContextManager[None]:
        """The sides' DuckDB files, open for the queries run inside the ``with``."""
        return files_attached(self.con, (self.candidate, self.live))

    def rows(self, status: str | Sequence[str] | None = None) -> pl.DataFrame:
        """The rows of one status (or several; default every differing row), side by side."""
        with self.sides_attached():
            return to_polars(self._relation(status), together=self._sides())

    def _sides(self) -> list[tuple[str, str]]:
        # A column's two sides keep one type when one must become text (an infinity).
        return [(f"{p.name}__candidate", f"{p.name}__live") for p in self.plans]

    def df(self, status: str | Sequence[str] | None = None) -> pl.DataFrame:
        """Every differing row (or those of ``status``), side by side: :meth:`rows`."""
        return self.rows(status)

    def head(self, n: int = 5) -> pl.DataFrame:
        """The first ``n`` differing rows (only those are read)."""
        with self.sides_attached():
            return to_polars(self._relation(None).limit(n), together=self._sides())

    def arrow(self, status: str | Sequence[str] | None = None) -> pa.Table:
        """The rows of :meth:`rows` as Arrow, typed as :meth:`rows` types them."""
        with self.sides_attached():
            return to_arrow(self._relation(status), together=self._sides())

    def to_parquet(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``rows.parquet`` (differing rows), ``columns.parquet`` and ``summary.json``.

        Each file is written to a temporary name and renamed, so a reader never
        sees half a file.
        """
        out = Path(directory)
        if out.exists() and not out.is_dir():
            raise DiffError(f"{out} is a file; --out takes a directory")
        out.mkdir(parents=True, exist_ok=True)
        with atomic_file(out / "rows.parquet") as tmp:
            # As rows() gives them: a UUID as text, which Polars reads (not 16 bytes), an
            # infinity as text (Polars panics on it), an interval as a duration.
            pq.write_table(self.arrow(), tmp, compression="zstd")
        with atomic_file(out / "columns.parquet") as tmp:
            self.summary.columns.write_parquet(tmp)
        with atomic_file(out / "summary.json") as tmp:
            tmp.write_text(json.dumps(self.summary.as_dict(), indent=2, default=str))
        return out

    def assert_identical(self) -> None:
        """Raise ``AssertionError`` with the summary unless both sides agree (for tests)."""
        if not self.summary.is_identical:
            sample = self.rows().head(5)
            raise AssertionError(f"read models differ:\n{self.summary}\n{sample}")

    def explain(self, key: Any) -> Explanation:
        """The live row, the candidate row and the events that wrote ``key`` in the candidate.

        ``key`` is the key value (one key column), a tuple in key order, or a dict.
        """
        from workbench.diff.explain import explain_key

        with self.sides_attached():
            if self.lineage is not None and self.candidate.duckdb_table is not None:
                self.lineage.require_unchanged(self.con, self.candidate.duckdb_table)
            return explain_key(self, key)

    def chart(self) -> alt.TopLevelMixin:
        """Rows by status and changed rows per column, as an Altair chart."""
        from workbench.charts.diff import diff_overview  # charts sit above diff

        return diff_overview(self.summary.counts(), self.summary.columns)

    def _repr_html_(self) -> str:
        return self.summary._repr_html_()

    def __str__(self) -> str:
        """The summary's text, as ``print()`` of every result gives it."""
        return str(self.summary)

    def __repr__(self) -> str:
        s = self.summary
        return (
            f"Diff(key={self.key}, identical={s.identical}, changed={s.changed}, "
            f"only_in_candidate={s.only_in_candidate}, only_in_live={s.only_in_live}, "
            f"not_yet_projected={s.not_yet_projected}, duplicate_keys={s.duplicate_keys}, "
            f"null_key_rows={s.null_key_rows_candidate + s.null_key_rows_live})"
        )
