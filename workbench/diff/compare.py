"""The keyed comparison, run inside DuckDB as one full outer join.

Both sides become views in one connection with the compared columns cast to
common types. Rows with a NULL key and keys that appear more than once on
either side are counted and set aside first; the remaining rows meet in one
full outer join on the key, and only the rows that differ are materialised
(the identical ones are counted by subtraction).

>>> import polars as pl
>>> live = pl.DataFrame({"id": [1, 2, 3], "n": [10, 20, None]})
>>> candidate = pl.DataFrame({"id": [1, 2, 4], "n": [10, 21, 0]})
>>> d = diff(candidate, live, key=["id"])
>>> s = d.summary
>>> (s.identical, s.changed, s.only_in_candidate, s.only_in_live)
(1, 1, 1, 1)
>>> d.rows("changed").select("id", "n__candidate", "n__live").rows()
[(2, 21, 20)]
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from workbench import _duckdb
from workbench._sql import ident
from workbench._text import did_you_mean, names_given
from workbench.diff._types import ColumnPlan, is_numeric, plan_column, register_functions
from workbench.diff.lineage import Lineage, find_lineage, key_json_sql
from workbench.diff.result import Diff, DiffSummary, KeyLookup, SchemaDiff, TypeChange
from workbench.diff.sides import detach_files, resolve_side
from workbench.errors import DiffError

__all__ = ["diff"]


def _as_list(value: str | Sequence[str] | None, what: str = "column names") -> list[str]:
    """A column name or several as a list; anything else is a one-line error.

    >>> _as_list("id"), _as_list(("a", "b")), _as_list({"c"}), _as_list(None)
    (['id'], ['a', 'b'], ['c'], [])
    >>> _as_list(5, "key")
    Traceback (most recent call last):
    ...
    workbench.errors.DiffError: key: a column name or a list of them, not 5
    >>> _as_list(["id", "day", "id"], "key")
    Traceback (most recent call last):
    ...
    workbench.errors.DiffError: key: 'id' is named twice
    """
    return names_given(value, what, DiffError, "column name")


def _normalized(expr: str, column: str) -> str:
    """``normalize`` takes a SQL template with ``{}`` for the column, or a function name."""
    quoted = ident(column)
    return expr.replace("{}", quoted) if "{}" in expr else f"{expr}({quoted})"


def _check_normalize(column: str, expr: str) -> None:
    """Refuse a ``normalize`` that is not one expression: it is pasted into the queries of
    both sides, where a second statement would run (a COPY, an ATTACH) unseen.

    >>> _check_normalize("n", "round({}, 2); copy (select 1) to 'x.csv'")
    Traceback (most recent call last):
    ...
    workbench.errors.DiffError: normalize of 'n': one expression over the column, not several statements
    """
    try:
        statements = duckdb.extract_statements(f"select {_normalized(expr, column)}\n")
    except duckdb.Error as exc:
        raise DiffError(f"normalize of {column!r}: {_duckdb.error_line(exc)[:200]}") from None
    if len(statements) != 1:
        raise DiffError(
            f"normalize of {column!r}: one expression over the column, not several statements"
        )
    if any(kind == duckdb.token_type.comment for _, kind in duckdb.tokenize(expr)):
        # Pasted among other columns, a -- comment would swallow the rest of the query.
        raise DiffError(f"normalize of {column!r}: an expression without comments")


def _key_plan(con: duckdb.DuckDBPyConnection, plan: ColumnPlan) -> ColumnPlan:
    """``plan`` for a key column. When a side's text keys do not all cast to the other
    side's type ('legacy-1' among BIGINT keys), a NULL key would lose them: keys are then
    compared as text, each as its cast spells it where it casts ('007' as '7', an
    upper-case UUID in lower case) and as it is where it does not."""
    if not plan.checked_cast:
        return plan
    col = ident(plan.name)
    for expr, short in ((plan.candidate_expr, "c"), (plan.live_expr, "l")):
        failed = con.execute(
            f"select count(*) from _wb_{short}_norm where {col} is not null and ({expr}) is null"
        ).fetchall()[0][0]
        if failed:
            candidate, live = (
                f"coalesce(CAST(({expr}) AS VARCHAR), CAST({col} AS VARCHAR))"
                for expr in (plan.candidate_expr, plan.live_expr)
            )
            return ColumnPlan(
                plan.name, plan.candidate_type, plan.live_type, "VARCHAR", candidate, live
            )
    return plan


def _key_lookup(plan: ColumnPlan, normalize: str | None) -> KeyLookup:
    """How :meth:`Diff.explain` finds a key value as ``plan`` compared it, after ``normalize``.

    >>> from workbench.diff._types import ColumnPlan
    >>> plan = ColumnPlan("id", "VARCHAR", "UUID", "UUID", 'TRY_CAST("id" AS UUID)', '"id"')
    >>> _key_lookup(plan, "lower")
    KeyLookup(candidate='TRY_CAST((lower("id")) AS UUID)', live='(lower("id"))', value='CAST(lower(?) AS UUID)')
    """
    column = ident(plan.name)
    raw = f"({_normalized(normalize, plan.name)})" if normalize else column
    value = _normalized(normalize, plan.name).replace(column, "?") if normalize else "?"
    if plan.compared_as != "JSON":  # JSON keys are compared as canonical text: as given
        value = f"CAST({value} AS {plan.compared_as})"
    return KeyLookup(
        plan.candidate_expr.replace(column, raw), plan.live_expr.replace(column, raw), value
    )


def _difference(a: str, b: str, compared_as: str) -> tuple[str | None, str]:
    """SQL for ``|a - b|``: exactly where the compared type is exact (else None; NULL
    on overflow), and as a DOUBLE.

    A tolerance of 0.01 on a DECIMAL(12,2) must take 0.50 vs 0.51: in floats
    their difference is 0.010000000000000009.
    """
    approx = f"abs(CAST({a} AS DOUBLE) - CAST({b} AS DOUBLE))"
    if compared_as.startswith("DECIMAL"):
        return f"try(abs({a} - {b}))", approx
    # HUGEINT holds any difference of two of these; of two HUGEINTs (UBIGINT vs BIGINT)
    # unless it overflows, and try() makes that NULL, left to the float comparison.
    if compared_as in _EXACT_INTEGERS or compared_as in ("HUGEINT", "UHUGEINT"):
        return f"try(abs(CAST({a} AS HUGEINT) - CAST({b} AS HUGEINT)))", approx
    return None, approx


_EXACT_INTEGERS = frozenset(
    {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"}
)


def _decimal_literal(value: float) -> str | None:
    """``value`` as the DECIMAL its shortest text says (0.01, not 0.01000000000000000021);
    None when no DECIMAL(38) holds it (1e300, 1e-40).

    >>> _decimal_literal(0.01), _decimal_literal(1e300)
    ("CAST('0.01' AS DECIMAL(38,2))", None)
    """
    whole, _, fraction = format(Decimal(repr(value)), "f").partition(".")
    if len(fraction) > 37 or len(whole.lstrip("-")) + len(fraction) > 38:
        return None
    text = f"{whole}.{fraction}" if fraction else whole
    return f"CAST('{text}' AS DECIMAL(38,{len(fraction)}))"


def _equal(plan: ColumnPlan, index: int, abs_tol: float, rel_tol: float) -> str:
    """SQL that is true when the candidate and live values of ``plan`` agree (NULL = NULL)."""
    c, lv = f"c.{ident(plan.name)}", f"l.{ident(plan.name)}"
    if abs_tol or rel_tol:
        a, b = f"CAST({c} AS DOUBLE)", f"CAST({lv} AS DOUBLE)"
        exact, approx = _difference(c, lv, plan.compared_as)
        bound = f"{abs_tol!r}" + (f" + {rel_tol!r} * abs({b})" if rel_tol else "")
        # Tolerances apply between finite numbers; NaN and infinities must match
        # exactly (|inf - x| <= NaN would hold for any x in DuckDB's ordering).
        within = f"(isfinite({a}) AND isfinite({b}) AND {approx} <= {bound})"
        # Exactly where the type is exact and the tolerances are DECIMALs: 1.10 against
        # 1.00 is within rel_tol 0.1, though in floats it is 0.10000000000000009 off.
        exact_abs, exact_rel = _decimal_literal(abs_tol), _decimal_literal(rel_tol)
        # rel_tol * |live| has the scales of both: past 38, DuckDB refuses it at planning.
        scales = re.findall(r",\s*(\d+)\)", f"{exact_rel} {plan.compared_as}")
        if (
            exact is not None
            and exact_abs is not None
            and exact_rel is not None
            and (not rel_tol or sum(map(int, scales)) <= 38)
        ):
            exact_bound = exact_abs + (f" + {exact_rel} * abs({lv})" if rel_tol else "")
            # try(): a bound past DECIMAL(38) is NULL, and the float comparison decides.
            within = f"coalesce({exact} <= try({exact_bound}), {within})"
        equal = f"({c} IS NOT DISTINCT FROM {lv} OR coalesce({within}, false))"
    else:
        equal = f"({c} IS NOT DISTINCT FROM {lv})"
    if plan.checked_cast:
        # Text that does not cast became NULL: that is a difference, not NULL = NULL.
        equal = f"({equal} AND c._wb_raw_null_{index} = l._wb_raw_null_{index})"
    return equal


def diff(
    candidate: Any,
    live: Any,
    key: str | Sequence[str],
    *,
    columns: Sequence[str] | None = None,
    ignore: str | Sequence[str] | None = None,
    abs_tol: Mapping[str, float] | None = None,
    rel_tol: Mapping[str, float] | None = None,
    normalize: Mapping[str, str] | None = None,
    live_position: int | None = None,
    archive: str | os.PathLike[str] | None = None,
) -> Diff:
    """Compare ``candidate`` with ``live`` row by row on ``key``.

    Sides: ``"file.duckdb:schema.table"``, a Parquet file (snapshot),
    ``"postgresql://…#schema.table"``, a Polars DataFrame, Arrow table or
    DuckDB relation. ``columns`` limits the compared columns (default: every
    column both sides have, minus ``ignore``). Numbers agree when
    ``|candidate - live| <= abs_tol + rel_tol·|live|``. ``normalize`` maps a
    column to SQL applied to both sides first (``"lower"``,
    ``"round({}, 2)"``). ``live_position`` (or a snapshot's
    ``event_store_position``) marks candidate rows last written by a newer
    event as ``not_yet_projected``; ``archive`` overrides the archive that
    :meth:`Diff.explain` reads events from.
    """
    con = _duckdb.connect()
    # A notebook keeps the traceback of an error, and with it this frame: a failure must
    # not keep the files it attached, or the next replay or promote into them fails.
    with _closed_on_error(con):
        keys = _as_list(key, "key")
        if not keys:
            raise DiffError("a diff needs at least one key column")
        if archive is not None and not Path(archive).is_dir():
            raise DiffError(f"no archive at {archive} (the archive explain reads events from)")
        if live_position is not None and live_position < 0:
            raise DiffError(f"live_position {live_position}: a position, 0 or more")
        ignored = set(_as_list(ignore, "ignore"))
        if keyed := [k for k in keys if k in ignored]:
            raise DiffError(f"ignored column {keyed[0]!r} is a key column: rows are matched by it")
        register_functions(con)
        cand = resolve_side(con, candidate, "candidate")
        live_side = resolve_side(con, live, "live")
        for side in (cand, live_side):
            missing = [k for k in keys if k not in side.columns]
            if missing:
                raise DiffError(
                    f"key column {missing[0]!r} is not in the {side.role} ({side.label})"
                    f"{did_you_mean(missing[0], side.columns)}"
                )
        unknown = sorted(ignored - set(cand.columns) - set(live_side.columns))
        if unknown:
            # A typo in --ignore would otherwise compare the column the user meant to skip.
            raise DiffError(
                f"ignored column {unknown[0]!r} is on neither side"
                f"{did_you_mean(unknown[0], [*cand.columns, *live_side.columns])}"
            )

        # With `columns`, only those (and the key) are compared: the schema check too.
        considered = None if columns is None else set(columns) | set(keys)
        schema = SchemaDiff(
            missing_in_candidate=[
                c
                for c in live_side.columns
                if c not in cand.columns
                and c not in ignored
                and (considered is None or c in considered)
            ],
            missing_in_live=[
                c
                for c in cand.columns
                if c not in live_side.columns
                and c not in ignored
                and (considered is None or c in considered)
            ],
        )
        if columns is not None:
            compared = list(dict.fromkeys(columns))  # a column named twice is compared once
            contradicted = [c for c in compared if c in ignored]
            if contradicted:
                raise DiffError(
                    f"column {contradicted[0]!r} is both compared (columns) and ignored (ignore)"
                )
            for name in compared:
                for side in (cand, live_side):
                    if name not in side.columns:
                        raise DiffError(
                            f"column {name!r} is not in the {side.role} ({side.label})"
                            f"{did_you_mean(name, side.columns)}"
                        )
        else:
            compared = [
                c
                for c in cand.columns
                if c in live_side.columns and c not in keys and c not in ignored
            ]
        abs_tol, rel_tol, normalize = (
            dict(abs_tol or {}),
            dict(rel_tol or {}),
            dict(normalize or {}),
        )
        for option, mapping in (
            ("abs_tol", abs_tol),
            ("rel_tol", rel_tol),
            ("normalize", normalize),
        ):
            for name in mapping:
                if name not in compared and not (option == "normalize" and name in keys):
                    raise DiffError(f"{option}: {name!r} is not a compared column")
        for name, expr in normalize.items():
            _check_normalize(name, expr)
        for option, tolerances in (("abs_tol", abs_tol), ("rel_tol", rel_tol)):
            for name, value in tolerances.items():
                if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                    raise DiffError(f"{option} of {name!r}: {value!r} is not a number 0 or above")

        # A citext column compares without case in Postgres: here too, unless normalised.
        citext_notes: list[str] = []
        for side in (cand, live_side):
            for name in side.case_insensitive:
                if name in keys + compared and name not in normalize:
                    normalize[name] = "lower"
                    citext_notes.append(
                        f"{name} is citext in {side.role}: compared without case, as Postgres "
                        f"does (normalize={{{name!r}: ...}} to change it)"
                    )

        # Layer 1: key and compared columns, normalised; its types decide the casts.
        try:  # binding the views checks the normalize SQL
            for side, short in ((cand, "c"), (live_side, "l")):
                select = [
                    f"{_normalized(normalize[n], n) if n in normalize else ident(n)} AS {ident(n)}"
                    for n in keys + compared
                ]
                con.execute(
                    f"create temp view _wb_{short}_norm as select {', '.join(select)} "
                    f"from {side.relation}"
                )
            ctypes = {r[0]: r[1] for r in con.execute("describe _wb_c_norm").fetchall()}
            ltypes = {r[0]: r[1] for r in con.execute("describe _wb_l_norm").fetchall()}
        except duckdb.Error as exc:
            raise DiffError(f"normalize: {_duckdb.error_line(exc)}") from None
        key_plans = [_key_plan(con, plan_column(con, k, ctypes[k], ltypes[k])) for k in keys]
        plans = [plan_column(con, n, ctypes[n], ltypes[n]) for n in compared]
        for name in {**abs_tol, **rel_tol}:
            plan = next(p for p in plans if p.name == name)
            if not plan.numeric:
                raise DiffError(
                    f"tolerance on {name!r}: it is compared as {plan.compared_as}, not a number"
                )
        schema.type_changes.extend(
            TypeChange(p.name, p.candidate_type, p.live_type, p.compared_as, p.how)
            for p in key_plans + plans
            if p.type_changed
        )

        # Layer 2: the comparable values.
        for short in ("c", "l"):
            select = []
            for p in key_plans + plans:
                expr = p.candidate_expr if short == "c" else p.live_expr
                select.append(f"{expr} AS {ident(p.name)}")
            for i, p in enumerate(plans):
                if p.checked_cast:
                    select.append(f"{ident(p.name)} IS NULL AS _wb_raw_null_{i}")
            con.execute(
                f"create temp view _wb_{short} as select {', '.join(select)} from _wb_{short}_norm"
            )

        key_list = ", ".join(ident(k) for k in keys)
        any_null = " OR ".join(f"{ident(k)} IS NULL" for k in keys)
        totals = {}
        for short in ("c", "l"):
            totals[short] = con.execute(
                f"select count(*), count(*) filter (where {any_null}) from _wb_{short}"
            ).fetchall()[0]
            con.execute(
                f"create temp table _wb_dup_{short} as select {key_list}, count(*) AS _n "
                f"from _wb_{short} where not ({any_null}) group by all having count(*) > 1"
            )
        con.execute(
            f"create temp table _wb_dup as select {key_list} from _wb_dup_c "
            f"union select {key_list} from _wb_dup_l"
        )
        duplicate_keys = int(con.execute("select count(*) from _wb_dup").fetchall()[0][0])
        anti = f" anti join _wb_dup using ({key_list})" if duplicate_keys else ""

        on = " AND ".join(f"c.{ident(k)} = l.{ident(k)}" for k in keys)
        equals = [
            _equal(p, i, abs_tol.get(p.name, 0.0), rel_tol.get(p.name, 0.0))
            for i, p in enumerate(plans)
        ]
        all_equal = " AND ".join(equals) or "true"
        both = "c._wb_in AND l._wb_in"
        side_by_side = ", ".join(
            f"c.{ident(p.name)} AS {ident(p.name + '__candidate')}, "
            f"l.{ident(p.name)} AS {ident(p.name + '__live')}, "
            f"CASE WHEN {both} THEN NOT {eq} END AS {ident(p.name + '__changed')}"
            for p, eq in zip(plans, equals, strict=True)
        )
        key_out = ", ".join(f"coalesce(c.{ident(k)}, l.{ident(k)}) AS {ident(k)}" for k in keys)
        sources = {
            s: f"(select x.*, true AS _wb_in from _wb_{s} x{anti} where not ({any_null}))"
            for s in ("c", "l")
        }
        from_clause = f"{sources['c']} c full join {sources['l']} l on {on}"
        status = (
            "CASE WHEN l._wb_in IS NULL THEN 'only_in_candidate' "
            "WHEN c._wb_in IS NULL THEN 'only_in_live' ELSE 'changed' END"
        )
        # _side: the one side a row is on (null for a row on both).
        one_side = (
            "CASE WHEN l._wb_in IS NULL THEN 'candidate' WHEN c._wb_in IS NULL THEN 'live' END"
        )
        select_cols = f"{key_out}, @STATUS@ AS _status, @SIDE@ AS _side" + (
            f", {side_by_side}" if side_by_side else ""
        )
        # Replaced, not formatted: column names may contain braces.
        diff_cols = select_cols.replace("@STATUS@", status, 1).replace("@SIDE@", one_side, 1)
        identical_cols = select_cols.replace("@STATUS@", "'identical'", 1).replace(
            "@SIDE@", "CAST(NULL AS VARCHAR)", 1
        )
        con.execute(
            f"create temp table _wb_diff as select {diff_cols} "
            f"from {from_clause} where c._wb_in IS NULL OR l._wb_in IS NULL OR NOT ({all_equal})"
        )
        identical_sql = f"select {identical_cols} from {from_clause} where {both} AND {all_equal}"

        # Rows set aside: NULL keys, and every row of a duplicated key, from each side.
        for short, role in (("c", "candidate"), ("l", "live")):
            values = ", ".join(f"{ident(p.name)} AS {ident(p.name + '__' + role)}" for p in plans)
            values = f", {values}" if values else ""
            con.execute(
                f"insert into _wb_diff by name select {key_list}, 'null_key' AS _status, "
                f"'{role}' AS _side{values} from _wb_{short} where {any_null}"
            )
            if duplicate_keys:
                con.execute(
                    f"insert into _wb_diff by name select {key_list}, 'duplicate_key' AS _status, "
                    f"'{role}' AS _side{values} from _wb_{short} semi join _wb_dup using ({key_list})"
                )

        lineage = find_lineage(con, cand.duckdb_table) if cand.duckdb_table else None
        notes: list[str] = [*citext_notes]
        stopped = lineage.unfinished(con) if lineage is not None else None
        if stopped is not None:
            holds = (
                "and holds no events yet (it failed, or still runs)"
                if not stopped
                else f"and holds the events up to position {stopped} only"
            )
            notes.append(
                f"the candidate's replay has not finished {holds}: it is not called identical; "
                "finish it (workbench replay --resume) before trusting this diff"
            )
        position = live_position
        snapshot = live_side.snapshot
        if position is None and snapshot is not None and snapshot.event_store_position is not None:
            replayed = lineage.sources(con) if lineage is not None else []
            if snapshot.source and replayed and snapshot.source not in replayed:
                # A position of another store says nothing about this replay's events.
                notes.append(
                    f"the live snapshot's position {snapshot.event_store_position} is of "
                    f"{snapshot.source}, not of the source the candidate replayed "
                    f"({', '.join(replayed)}): it is not used to mark rows not yet projected"
                )
            else:
                position = snapshot.event_store_position
        if position is not None:
            if lineage is None:
                if live_position is not None:
                    raise DiffError(
                        "live_position needs the candidate's replay lineage "
                        "(give the candidate as FILE.duckdb:SCHEMA.TABLE of a replay)"
                    )
                notes.append("the live snapshot has a position but the candidate has no lineage")
            else:
                notes += _position_notes(con, lineage, position)
                lagging = _mark_not_yet_projected(con, keys, lineage, position)
                if lagging:
                    notes.append(
                        f"{lagging:,} row(s) differ but were written by events after live position "
                        f"{position}: the live side may lag, or be wrong; replay the candidate "
                        f"with until={position} (--until) to compare them exactly"
                    )

        counts = dict(
            ((s, side), int(n))
            for s, side, n in con.execute(
                # Not yet projected rows keep the side they are on: a row only live
                # holds (deleted by the candidate after the position) is no candidate row.
                "select _status, case when _status in ('duplicate_key', 'null_key') or "
                "(_status = 'not_yet_projected' and _side is not null) then _side else '' end, "
                "count(*) from _wb_diff group by all"
            ).fetchall()
        )
        joined_candidate = (
            totals["c"][0] - totals["c"][1] - counts.get(("duplicate_key", "candidate"), 0)
        )
        # Each joined candidate row is identical or is in _wb_diff exactly once.
        behind = {
            side: counts.get(("not_yet_projected", side), 0) for side in ("", "candidate", "live")
        }
        candidate_not_identical = (
            counts.get(("changed", ""), 0)
            + counts.get(("only_in_candidate", ""), 0)
            + behind[""]
            + behind["candidate"]
        )
        matched = joined_candidate - counts.get(("only_in_candidate", ""), 0) - behind["candidate"]
        if not matched and joined_candidate and counts.get(("only_in_live", ""), 0):
            # Not one key on both sides: most often keys of two types that never meet
            # (a BIGINT id against a UUID), not two read models with nothing in common.
            apart = [
                f"{k} {cand.columns[k]} (candidate) vs {live_side.columns[k]} (live)"
                for k in keys
                if cand.columns[k] != live_side.columns[k]
            ]
            notes.append(
                "no key is on both sides"
                + (f": the key types differ, {'; '.join(apart)}" if apart else "")
                + "; is it the same key, of the same entities?"
            )
        if (
            len(keys) == 1
            and {cand.columns[keys[0]], live_side.columns[keys[0]]} <= {"VARCHAR", "UUID"}
            and counts.get(("only_in_candidate", ""))
            and counts.get(("only_in_live", ""))
        ):
            notes += _keys_apart_by_spelling(con, keys[0])
        summary = DiffSummary(
            candidate_rows=int(totals["c"][0]),
            live_rows=int(totals["l"][0]),
            identical=joined_candidate - candidate_not_identical,
            changed=counts.get(("changed", ""), 0),
            only_in_candidate=counts.get(("only_in_candidate", ""), 0),
            only_in_live=counts.get(("only_in_live", ""), 0),
            not_yet_projected=sum(behind.values()),
            duplicate_keys=duplicate_keys,
            # Every row of a key duplicated on either side is set aside, on both sides.
            duplicate_key_rows_candidate=counts.get(("duplicate_key", "candidate"), 0),
            duplicate_key_rows_live=counts.get(("duplicate_key", "live"), 0),
            null_key_rows_candidate=int(totals["c"][1]),
            null_key_rows_live=int(totals["l"][1]),
            schema=schema,
            columns=_column_stats(con, plans),
            live_position=position,
            notes=notes,
            candidate_unfinished=stopped,
        )
        detach_files(con, (cand, live_side))
        return Diff(
            con=con,
            key=keys,
            plans=plans,
            key_lookups={p.name: _key_lookup(p, normalize.get(p.name)) for p in key_plans},
            summary=summary,
            candidate=cand,
            live=live_side,
            identical_sql=identical_sql,
            lineage=lineage,
            archive=archive,
        )


@contextlib.contextmanager
def _closed_on_error(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    try:
        yield
    except BaseException:
        con.close()
        raise


def _keys_apart_by_spelling(con: duckdb.DuckDBPyConnection, key: str) -> list[str]:
    """A note when keys only in the candidate and only in live are the same but for
    hyphens and case: one UUID written two ways (32 hex digits as a text id stores it,
    and hyphenated), which no row of either side will ever match."""
    spelled = f"lower(replace(CAST({ident(key)} AS VARCHAR), '-', ''))"
    ((pairs,),) = con.execute(
        f"select count(*) from (select distinct {spelled} as k from _wb_diff "
        "where _status = 'only_in_candidate') c "
        f"join (select distinct {spelled} as k from _wb_diff where _status = 'only_in_live') l "
        "using (k)"
    ).fetchall()
    if not pairs:
        return []
    return [
        f"{pairs:,} key(s) only in the candidate and only in live are the same {key} but "
        "for hyphens or case: one side spells them another way (a UUID as 32 hex digits; "
        "the eventsourcing preset hyphenates a text id of 32 hex digits, as a UUID column "
        "gives it)"
    ]


def _position_notes(con: duckdb.DuckDBPyConnection, lineage: Lineage, position: int) -> list[str]:
    """What makes the live position say less than it seems: a candidate that stops short
    of it, or a table whose rows have no lineage to tell later writes by."""
    notes = []
    reached = lineage.reached(con)
    if reached is not None and reached < position:
        notes.append(
            f"the candidate's replay reached position {reached:,}, short of the live side's "
            f"{position:,}: rows live has from the events between differ for that alone "
            "(archive and replay further to compare)"
        )
    ((recorded,),) = con.execute(f"select exists (select 1 from {lineage.relation})").fetchall()
    if not recorded:
        notes.append(
            f"the candidate's {lineage.table_name} has no lineage (a SqlProjection records it "
            "only with lineage=...): rows written after the live position cannot be told "
            f"apart; replay with until={position} (--until) to compare exactly"
        )
    return notes


def _mark_not_yet_projected(
    con: duckdb.DuckDBPyConnection, keys: list[str], lineage: Lineage, position: int
) -> int:
    """Mark differing candidate rows whose newest event is after the live side's position;
    return how many."""
    con.execute(
        f"update _wb_diff set _status = 'not_yet_projected' "
        # only_in_live: a row the candidate deleted after the position (its lineage keeps
        # the deleting event), which live still holds.
        f"where _status in ('changed', 'only_in_candidate', 'only_in_live') "
        f"and {key_json_sql(lineage.key_order(con, keys))} in "
        f"(select key from {lineage.relation} group by key having max(global_position) > ?)",
        [position],
    )
    rows = con.execute("select count(*) from _wb_diff where _status = 'not_yet_projected'")
    return int(rows.fetchall()[0][0])


def _column_stats(con: duckdb.DuckDBPyConnection, plans: list[ColumnPlan]) -> pl.DataFrame:
    if not plans:
        return pl.DataFrame(
            schema={
                "column": pl.String,
                "compared_as": pl.String,
                "candidate_type": pl.String,
                "live_type": pl.String,
                "changed": pl.Int64,
                "max_abs_diff": pl.Float64,
            }
        )
    aggregates = []
    for p in plans:
        flag = ident(p.name + "__changed")
        aggregates.append(f"count(*) filter (where {flag})")
        if is_numeric(p.compared_as):
            exact, approx = _difference(
                ident(p.name + "__candidate"), ident(p.name + "__live"), p.compared_as
            )
            largest = approx if exact is None else f"coalesce(CAST({exact} AS DOUBLE), {approx})"
            aggregates.append(f"max({largest}) filter (where {flag})")
        else:
            aggregates.append("CAST(NULL AS DOUBLE)")
    row = con.execute(
        f"select {', '.join(aggregates)} from _wb_diff where _status = 'changed'"
    ).fetchall()[0]
    return pl.DataFrame(
        {
            "column": [p.name for p in plans],
            "compared_as": [p.compared_as for p in plans],
            "candidate_type": [p.candidate_type for p in plans],
            "live_type": [p.live_type for p in plans],
            "changed": [int(row[2 * i]) for i in range(len(plans))],
            "max_abs_diff": [row[2 * i + 1] for i in range(len(plans))],
        },
        schema_overrides={"max_abs_diff": pl.Float64},
    )
