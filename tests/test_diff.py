"""wb.diff with planted differences: exact counts for every kind of difference."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import workbench as wb
from workbench._text import Text
from workbench.errors import DiffError


def _live() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": list(range(1, 101)),
            "title": [f"memory {i}" for i in range(1, 101)],
            "accesses": [i % 7 for i in range(1, 101)],
            "score": [i / 3 for i in range(1, 101)],
            "note": [None if i % 10 == 0 else f"n{i}" for i in range(1, 101)],
        }
    )


def _candidate() -> pl.DataFrame:
    live = _live()
    return (
        live.with_columns(
            # 3 changed values in accesses (ids 5, 6, 7), 1 in title (id 8)
            accesses=pl.when(pl.col("id").is_in([5, 6, 7]))
            .then(pl.col("accesses") + 1)
            .otherwise(pl.col("accesses")),
            title=pl.when(pl.col("id") == 8).then(pl.lit("MEMORY 8")).otherwise(pl.col("title")),
            # float noise inside tolerance on ids 20..29, outside on 30 and 31
            score=pl.when(pl.col("id").is_between(20, 29))
            .then(pl.col("score") + 1e-9)
            .when(pl.col("id").is_in([30, 31]))
            .then(pl.col("score") + 0.5)
            .otherwise(pl.col("score")),
        )
        # rows 95..100 missing in the candidate
        .filter(pl.col("id") <= 94)
        # 2 rows only in the candidate
        .vstack(
            pl.DataFrame(
                {
                    "id": [500, 501],
                    "title": ["x", "y"],
                    "accesses": [0, 0],
                    "score": [0.0, 0.0],
                    "note": ["a", None],
                }
            )
        )
    )


def test_planted_differences_are_counted_exactly() -> None:
    d = wb.diff(_candidate(), _live(), key="id", abs_tol={"score": 1e-6})
    s = d.summary
    # changed: 5,6,7 (accesses), 8 (title), 30,31 (score) — the 1e-9 noise is within tolerance
    assert (s.changed, s.only_in_candidate, s.only_in_live) == (6, 2, 6)
    assert s.identical == 94 - 6
    assert (s.candidate_rows, s.live_rows) == (96, 100)
    assert d.summary() == str(s) and "changed: 6" in d.summary()  # summary() as elsewhere
    assert isinstance(d.summary(), Text)  # a notebook prints its lines, not a quoted string
    cols = {r["column"]: r for r in s.columns.to_dicts()}
    assert cols["accesses"]["changed"] == 3 and cols["accesses"]["max_abs_diff"] == 1.0
    assert cols["title"]["changed"] == 1 and cols["title"]["max_abs_diff"] is None
    assert cols["score"]["changed"] == 2 and cols["score"]["max_abs_diff"] == pytest.approx(0.5)
    assert cols["note"]["changed"] == 0  # NULL = NULL on ids 10, 20, ..., 90
    changed = d.rows("changed")
    assert changed["id"].to_list() == [5, 6, 7, 8, 30, 31]
    assert changed.filter(pl.col("id") == 8)["title__candidate"].item() == "MEMORY 8"
    assert changed.filter(pl.col("id") == 8)["title__live"].item() == "memory 8"
    assert d.rows("only_in_live")["id"].to_list() == [95, 96, 97, 98, 99, 100]
    assert len(d.rows("identical")) == 88
    assert not s.is_identical
    with pytest.raises(AssertionError, match="changed: 6"):
        d.assert_identical()


def test_without_tolerance_float_noise_is_a_change() -> None:
    s = wb.diff(_candidate(), _live(), key="id").summary
    assert s.changed == 6 + 10
    rel = wb.diff(_candidate(), _live(), key="id", rel_tol={"score": 1e-6}).summary
    assert rel.changed == 6


def test_an_absolute_tolerance_on_exact_numbers_is_exact() -> None:
    """|0.50 - 0.51| <= 0.01 holds in DECIMAL; in floats it is 0.010000000000000009."""
    schema = {"k": pl.Int64, "x": pl.Decimal(12, 2), "n": pl.Int64}
    c = pl.DataFrame(
        {
            "k": [1, 2, 3],
            "x": [Decimal("0.50"), Decimal("1.10"), Decimal("100.00")],
            "n": [1, 2, 2**63 - 1],
        },
        schema=schema,
    )
    lv = pl.DataFrame(
        {
            "k": [1, 2, 3],
            "x": [Decimal("0.51"), Decimal("1.20"), Decimal("100.01")],
            "n": [2, 2, -(2**63) + 1],
        },
        schema=schema,
    )
    d = wb.diff(c, lv, key="k", abs_tol={"x": 0.01, "n": 1})
    assert d.rows("changed")["k"].to_list() == [2, 3]  # a BIGINT difference past 2^63 too
    columns = dict(d.summary.columns.select("column", "max_abs_diff").iter_rows())
    assert columns["x"] == 0.1 and columns["n"] == float(2**64 - 2)


def test_ignore_and_columns_limit_the_comparison() -> None:
    assert (
        wb.diff(_candidate(), _live(), key="id", ignore=["accesses", "score"]).summary.changed == 1
    )
    assert wb.diff(_candidate(), _live(), key="id", columns=["accesses"]).summary.changed == 3


def test_normalize_applies_sql_to_both_sides() -> None:
    s = wb.diff(
        _candidate(), _live(), key="id", columns=["title"], normalize={"title": "lower"}
    ).summary
    assert s.changed == 0
    s = wb.diff(
        _candidate(), _live(), key="id", columns=["score"], normalize={"score": "round({}, 0)"}
    ).summary
    # the 1e-9 noise rounds away; ids 30 and 31 (+0.5) round to another integer
    assert s.changed == 2


def test_duplicate_and_null_keys_are_set_aside_and_counted() -> None:
    live = pl.DataFrame({"id": [1, 2, 3, 4, None, None], "v": [1, 2, 3, 4, 5, 6]})
    candidate = pl.DataFrame({"id": [1, 2, 2, 3, 3, 3, 4, None], "v": [1, 2, 2, 3, 3, 3, 40, 7]})
    d = wb.diff(candidate, live, key="id")
    s = d.summary
    # Every row of a duplicated key is set aside and counted, on both sides.
    assert (s.duplicate_keys, s.duplicate_key_rows_candidate, s.duplicate_key_rows_live) == (
        2,
        5,
        2,
    )
    assert s.differences == len(d.rows())
    assert (s.null_key_rows_candidate, s.null_key_rows_live) == (1, 2)
    assert (s.identical, s.changed, s.only_in_candidate, s.only_in_live) == (1, 1, 0, 0)
    dup = d.rows("duplicate_key")
    assert sorted(dup.filter(pl.col("_side") == "candidate")["id"].to_list()) == [2, 2, 3, 3, 3]
    assert sorted(dup.filter(pl.col("_side") == "live")["id"].to_list()) == [2, 3]
    assert len(d.rows("null_key")) == 3
    assert d.rows("changed")["_side"].to_list() == [None]  # on both sides
    text = str(d.explain(3))
    assert "candidate rows (3: the key is duplicated on this side):" in text
    assert 'live row:      {"id": 3, "v": 3}' in text


def test_composite_key_and_identical_sides() -> None:
    frame = pl.DataFrame({"tenant": ["a", "a", "b"], "id": [1, 2, 1], "v": [1.0, None, 3.0]})
    d = wb.diff(frame, frame.reverse(), key=["tenant", "id"])
    d.assert_identical()
    assert d.summary.identical == 3 and d.summary.differences == 0
    assert "identical" in d._repr_html_()


def test_timestamps_of_different_precision_compare_at_the_coarser_one() -> None:
    base = dt.datetime(2024, 5, 1, 12, 0, 0, 123456)
    ns = pa.array(
        [1_714_564_800_123_456_789, 1_714_564_800_123_456_000, 1_714_564_800_123_457_000],
        pa.timestamp("ns"),
    )
    candidate = pa.table({"id": [1, 2, 3], "at": ns})
    live = pa.table(
        {"id": [1, 2, 3], "at": pa.array([base, base, base], pa.timestamp("us", tz="UTC"))}
    )
    d = wb.diff(candidate, live, key="id")
    s = d.summary
    assert [(t.column, t.compared_as) for t in s.schema.type_changes] == [("at", "TIMESTAMP")]
    # 1 and 2 agree to the microsecond (the nanoseconds are truncated, not rounded); 3 is 1 µs off
    assert (s.identical, s.changed) == (2, 1)
    ms = pa.table(
        {
            "id": [1, 2, 3],
            "at": pa.array([base.replace(microsecond=123000)] * 3, pa.timestamp("ms")),
        }
    )
    assert wb.diff(candidate, ms, key="id").summary.changed == 0
    # Before 1970 too: 23:59:59.999999500 is in the microsecond 23:59:59.999999, not the next.
    before = pa.table({"id": [1, 2], "at": pa.array([-500, -500], pa.timestamp("ns"))})
    last = dt.datetime(1969, 12, 31, 23, 59, 59, 999999)
    micro = pa.table({"id": [1, 2], "at": pa.array([last, dt.datetime(1970, 1, 1)])})
    assert wb.diff(before, micro, key="id").rows("changed")["id"].to_list() == [2]


def test_numbers_compare_at_the_coarser_precision_and_never_round_text_away() -> None:
    con = duckdb.connect()
    candidate = con.sql(
        "select * from (values (1, 1980.86::decimal(12,2), 0.1::double, 0.123456789::decimal(38,9)),"
        " (2, 5.00, 0.2, 10.5), (3, 5.00, 0.3, 10.5)) t(id, total, ratio, n)"
    )
    live = con.sql(
        "select * from (values (1, 1980.8600000000004::double, 0.1::real, '0.1234567891'),"
        " (2, 5.01, 0.2::real, '10.50000'), (3, 5.0, 0.3::real, 'NaN')) t(id, total, ratio, n)"
    )
    d = wb.diff(candidate, live, key="id")
    changes = {t.column: t.compared_as for t in d.summary.schema.type_changes}
    # An exact candidate against a live float: as that float.
    assert changes == {"total": "DOUBLE", "ratio": "FLOAT", "n": "DECIMAL(38,9)"}
    changed = d.rows("changed").select("id", "total__changed", "ratio__changed", "n__changed")
    # 1: the live float's noise is a difference (give a tolerance); REAL vs DOUBLE agree;
    # the 10th decimal place does not. 2: a cent off; trailing zeros are no difference.
    # 3: NaN is no number.
    assert changed.rows() == [
        (1, True, False, True),
        (2, True, False, False),
        (3, False, False, True),
    ]
    # A float rounds into a numeric as Postgres rounds it: 1.005 (1.00499... as a
    # double) is 1.01 in a numeric(10,2). An exponent no decimal keeps is a change.
    floats = con.sql(
        "select * from (values (1, 1.005::double, '1.5e-10'), (2, 2.675, '2e0')) t(id, v, w)"
    )
    stored = con.sql(
        "select * from (values (1, 1.01::decimal(10,2), 0::decimal(38,9)), (2, 2.68, 2)) t(id, v, w)"
    )
    d = wb.diff(floats, stored, key="id")
    assert d.rows("changed").select("id", "v__changed", "w__changed").rows() == [(1, False, True)]
    nan, null = (
        con.sql(f"select 1 as id, {v} as v") for v in ("'nan'::double", "null::decimal(10,2)")
    )
    assert wb.diff(nan, null, key="id").summary.changed == 1
    # Into an integer column a float goes half to even, as Postgres and DuckDB store it.
    halves = con.sql(
        "select * from (values (1, 0.5::double), (2, 2.5), (3, -0.5), (4, 2.5)) t(id, v)"
    )
    ints = con.sql("select * from (values (1, 0::bigint), (2, 2), (3, 0), (4, 3)) t(id, v)")
    assert wb.diff(halves, ints, key="id").rows("changed")["id"].to_list() == [4]


def test_tolerances_are_exact_where_the_type_is() -> None:
    """rel_tol on DECIMALs was checked in floats (1.10 vs 1.00 missed rel_tol 0.1 by
    0.00000000000000009); UBIGINT vs BIGINT with abs_tol 0.5 called 2^53 + 1 and 2^53 equal."""
    con = duckdb.connect()
    money = con.sql("select * from (values (1, 1.10::decimal(12,2)), (2, 200.02)) t(id, v)")
    base = con.sql("select * from (values (1, 1.00::decimal(12,2)), (2, 200.00)) t(id, v)")
    assert wb.diff(money, base, key="id", rel_tol={"v": 0.1}).summary.changed == 0
    assert wb.diff(money, base, key="id", rel_tol={"v": 0.0001}).rows("changed")[
        "id"
    ].to_list() == [1]
    big = pa.table({"id": [1], "v": pa.array([2**53 + 1], pa.uint64())})
    near = pa.table({"id": [1], "v": pa.array([2**53], pa.int64())})
    assert wb.diff(big, near, key="id", abs_tol={"v": 0.5}).summary.changed == 1
    # A tolerance no DECIMAL holds is compared in floats, not refused by DuckDB; so is a
    # relative bound whose scale and the column's pass 38.
    assert wb.diff(big, near, key="id", abs_tol={"v": 1e300}).summary.changed == 0
    fine = con.sql("select 1 as id, 1.10::decimal(38,30) as v")
    assert wb.diff(fine, con.sql("select 1 as id, 1.00::decimal(38,30) as v"), key="id",
                   rel_tol={"v": 1e-20}).summary.changed == 1  # fmt: skip


def test_a_float_is_rounded_only_as_the_live_column_would_store_it() -> None:
    """A candidate's float is compared at the live integer's or DECIMAL's precision (what
    that column would store), and the type line says so; an exact candidate is never
    made equal by rounding a live float: 3 is not 3.4."""
    con = duckdb.connect()
    floats = con.sql("select * from (values (1, 3.4::double), (2, 0.30000000000000004)) t(k, n)")
    exact = con.sql("select * from (values (1, 3::bigint), (2, 0.3::decimal(4,2))) t(k, n)")
    rounded = wb.diff(floats, con.sql("select * from (values (1, 3::bigint), (2, 0)) t(k, n)"), "k")
    assert rounded.summary.changed == 0
    assert (
        "compared as DECIMAL(38,0) (the candidate's float rounded to the live column's 0 "
        in (rounded.summary.schema_lines()[0])
    )
    widened = wb.diff(exact.filter("k = 1"), floats.filter("k = 1"), key="k")
    assert widened.rows("changed")["k"].to_list() == [1]
    assert widened.summary.schema_lines() == [
        "type of n: DECIMAL(21,2) (candidate) vs DOUBLE (live), compared as DOUBLE "
        "(the candidate's value as a DOUBLE, as the live column stores it)"
    ]
    # Values the live float holds apart stay apart, past any count of digits.
    apart = con.sql(
        "select 1 k, 1000001::bigint a, 1234.568::decimal(10,3) b, 1234567890123457::bigint c"
    )
    stored = con.sql("select 1 k, 1000000::real a, 1234.567::real b, 1234567890123456::double c")
    changed = wb.diff(apart, stored, key="k").rows("changed")
    assert changed.select("a__changed", "b__changed", "c__changed").rows() == [(True, True, True)]
    # The live system's float noise is a difference: a tolerance says how much is none.
    summed = wb.diff(exact.filter("k = 2"), floats.filter("k = 2"), key="k")
    assert summed.summary.changed == 1
    assert wb.diff(
        exact.filter("k = 2"), floats.filter("k = 2"), key="k", abs_tol={"n": 1e-9}
    ).summary.is_identical
    # print() of a diff says what it found, as every result's does.
    assert str(widened) == str(widened.summary) == widened.summary()
    assert str(widened).startswith("1 candidate vs 1 live rows: 1 differing rows")


def test_exact_numbers_compare_exactly_whatever_their_types() -> None:
    """One rule for every numeric pair: DECIMALs and integers exactly, a float at the
    other side's precision, and what the compared type cannot hold is a difference."""
    con = duckdb.connect()
    candidate = con.sql(
        "select * from (values (1, 1.004::decimal(38,10), 1.004::decimal(18,10), "
        "9007199254740992::double, 1e39::double, 1.004::double)) t(id, a, b, c, d, e)"
    )
    live = con.sql(
        "select * from (values (1, 1.00::decimal(38,2), 1.00::decimal(38,2), "
        "9007199254740993::bigint, 1::real, 1.00::decimal(38,2))) t(id, a, b, c, d, e)"
    )
    d = wb.diff(candidate, live, key="id")
    changed = d.rows("changed").select(*(f"{c}__changed" for c in "abcde"))
    assert changed.rows() == [(True, True, True, True, False)]
    assert {t.column: t.compared_as for t in d.summary.schema.type_changes}["a"] == (
        "DECIMAL(38,10)"
    )
    # Text against an integer as against a DECIMAL(p,0): '1.5' is not rounded to 2.
    text = con.sql("select * from (values (1, '1.5'), (2, '2.0'), (3, '2.4')) t(id, v)")
    ints = con.sql("select * from (values (1, 2::bigint), (2, 2), (3, 2)) t(id, v)")
    assert wb.diff(text, ints, key="id").rows("changed")["id"].to_list() == [1, 3]


def test_unsigned_and_signed_128_bit_integers_compare_exactly(tmp_path: Path) -> None:
    # Their common type in DuckDB is a DOUBLE, which calls these two equal.
    big = "170141183460469231731687303715884105000"
    with duckdb.connect(str(tmp_path / "n.duckdb")) as con:
        con.execute(
            f"create table u as select * from (values (1, {big}::uhugeint), (2, 7)) t(id, v)"
        )
        con.execute(
            f"create table s as select * from (values (1, {big}::hugeint - 1), (2, 7)) t(id, v)"
        )
    d = wb.diff(f"{tmp_path / 'n.duckdb'}:u", f"{tmp_path / 'n.duckdb'}:s", key="id")
    assert d.rows("changed")["id"].to_list() == [1]


def test_schema_differences_are_reported_and_types_cast_safely() -> None:
    candidate = pl.DataFrame(
        {"id": [1, 2], "n": [1, 2], "amount": ["1.50", "oops"], "extra": [0, 0]}
    )
    live = pl.DataFrame(
        {"id": [1, 2], "n": pl.Series([1, 2], dtype=pl.Int16), "amount": [1.5, 2.0], "gone": [1, 1]}
    )
    d = wb.diff(candidate, live, key="id")
    s = d.summary
    assert s.schema.missing_in_live == ["extra"]
    assert s.schema.missing_in_candidate == ["gone"]
    changes = {t.column: t.compared_as for t in s.schema.type_changes}
    assert changes == {"n": "BIGINT", "amount": "DOUBLE"}
    # "oops" does not cast to a number: a change, not NULL = NULL
    assert d.rows("changed")["id"].to_list() == [2]
    assert str(s).splitlines()[1] == "missing in candidate: gone"  # after the verdict
    # With every row alike, the verdict still says why the diff is no "identical".
    same_rows = wb.diff(candidate.select("id"), live.select("id", "gone"), key="id").summary
    assert same_rows.verdict == (
        "0 differing rows; the columns differ (gone: on one side only; ignore them to "
        "compare the rest)"
    )
    repeated = wb.diff(candidate.select("id"), pl.DataFrame({"id": [1, 1, 2]}), key="id")
    assert repeated.summary.verdict.endswith(
        "; 1 key(s) repeat, their rows set aside: is the key the whole key?"
    )


def test_a_record_batch_reader_is_a_side() -> None:
    """What a DuckDB relation's .arrow() returns in DuckDB 1.4 and later."""
    rel = duckdb.sql("select 1 as id, 2 as v")
    reader = pa.RecordBatchReader.from_batches(
        rel.to_arrow_table().schema, rel.to_arrow_table().to_batches()
    )
    assert wb.diff(reader, pl.DataFrame({"id": [1], "v": [2]}), key="id").summary.is_identical


def test_duckdb_file_parquet_and_relation_sides(tmp_path: Path) -> None:
    path = tmp_path / "readmodels.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create schema rm")
        con.execute("create table rm.memories as select range id, range * 2 v from range(1000)")
    live = tmp_path / "live.parquet"
    duckdb.sql(
        "select range id, case when range = 7 then 0 else range * 2 end v from range(1, 1000)"
    ).write_parquet(str(live))
    d = wb.diff(f"{path}:rm.memories", str(live), key="id")
    assert (d.summary.changed, d.summary.only_in_candidate, d.summary.identical) == (1, 1, 998)
    rel = duckdb.sql("select range id, range * 2 v from range(1000)")
    assert wb.diff(rel, f"{path}:rm.memories", key=["id"]).summary.is_identical


def test_to_parquet_and_chart(tmp_path: Path) -> None:
    d = wb.diff(_candidate(), _live(), key="id")
    out = d.to_parquet(tmp_path / "out")
    assert pl.read_parquet(out / "rows.parquet").height == d.summary.differences
    assert json.loads((out / "summary.json").read_text())["changed"] == d.summary.changed
    spec = d.chart().to_dict()
    assert len(spec["hconcat"]) == 2
    # A UUID key is written as text, as rows() gives it: Polars reads it back as such.
    con = duckdb.connect()
    candidate = con.sql("select uuid '0b9c7e12-0000-4000-8000-000000000001' as id, 1 as n")
    live = con.sql("select uuid '0b9c7e12-0000-4000-8000-000000000001' as id, 2 as n")
    written = wb.diff(candidate, live, key="id").to_parquet(tmp_path / "uuid")
    rows = pl.read_parquet(written / "rows.parquet")
    assert rows["id"].dtype == pl.String
    assert rows["id"].to_list() == ["0b9c7e12-0000-4000-8000-000000000001"]


def test_user_mistakes_are_diff_errors(tmp_path: Path) -> None:
    frame = pl.DataFrame({"id": [1], "v": ["a"]})
    with pytest.raises(DiffError, match="key column 'nope'"):
        wb.diff(frame, frame, key="nope")
    with pytest.raises(DiffError, match="not a number"):
        wb.diff(frame, frame, key="id", abs_tol={"v": 1})
    with pytest.raises(
        DiffError, match=r"ignored column 'vv' is on neither side; did you mean v\?"
    ):
        wb.diff(frame, frame, key="id", ignore=["vv"])
    with pytest.raises(DiffError, match=r"^key: 'id' is named twice"):  # was a BinderException
        wb.diff(frame, frame, key=["id", "id"])
    with pytest.raises(DiffError, match=r"^ignored column 'id' is a key column"):
        wb.diff(frame, frame, key="id", ignore=["id"])
    camel = pl.DataFrame({"orderId": [1], "amount": [2]})
    with pytest.raises(DiffError, match=r"key column 'orderid' .*; did you mean orderId\?"):
        wb.diff(camel, camel, key="orderid")
    with pytest.raises(DiffError, match=r"column 'amont' is not in .*; did you mean amount\?"):
        wb.diff(camel, camel, key="orderId", columns=["amont"])
    with pytest.raises(DiffError, match="no DuckDB file"):
        wb.diff(str(tmp_path / "x.duckdb") + ":a.b", frame, key="id")
    with pytest.raises(DiffError, match=r"expected FILE\.duckdb"):
        wb.diff("whatever", frame, key="id")
    with pytest.raises(DiffError, match="unknown status"):
        wb.diff(frame, frame, key="id").rows("odd")


def test_snapshot_metadata_is_read(tmp_path: Path) -> None:
    path = tmp_path / "snap.parquet"
    table = pa.table({"id": [1]}).replace_schema_metadata(
        {
            "workbench.snapshot": json.dumps(
                {
                    "table": "public.m",
                    "taken_at": "2024-01-01T00:00:00Z",
                    "source": "postgres:public.m",
                    "event_store_position": 42,
                    "rows": 1,
                }
            )
        }
    )
    pq.write_table(table, path)
    d = wb.diff(pl.DataFrame({"id": [1]}), str(path), key="id")
    assert d.live.snapshot is not None and d.live.snapshot.event_store_position == 42
    assert d.summary.live_position == 42
    assert d.summary.notes  # no lineage for a DataFrame candidate: said, not hidden


def test_awkward_column_names_are_quoted() -> None:
    a = pl.DataFrame({"id": [1, 2], 'we{i}rd "col"': [1, 2], "select": ["x", "y"]})
    b = pl.DataFrame({"id": [1, 2], 'we{i}rd "col"': [1, 3], "select": ["x", "y"]})
    d = wb.diff(a, b, key="id")
    assert d.summary.changed == 1
    assert d.rows("changed")['we{i}rd "col"__live'].to_list() == [3]


def test_tolerances_never_make_nan_or_infinity_equal_to_a_number() -> None:
    live = pl.DataFrame({"id": [1, 2, 3], "x": [float("inf"), float("nan"), 7.0]})
    candidate = pl.DataFrame({"id": [1, 2, 3], "x": [5.0, 1.0, 7.0000001]})
    assert wb.diff(candidate, live, key="id", abs_tol={"x": 1e-6}).summary.changed == 2
    # and NaN / infinity equal themselves under a tolerance too
    assert wb.diff(live, live, key="id", rel_tol={"x": 1e-9}).summary.is_identical


def test_nanosecond_timestamps_with_a_zone_compare_at_the_coarser_precision() -> None:
    live = pl.DataFrame(
        {"id": [1], "ts": [dt.datetime(2024, 5, 1, 8, 0, 0, 123456, tzinfo=dt.UTC)]}
    )
    candidate = pa.table(
        {
            "id": pa.array([1], pa.int64()),
            "ts": pa.array([1714550400123456789], pa.timestamp("ns", "UTC")),
        }
    )
    summary = wb.diff(candidate, live, key="id").summary
    assert summary.is_identical and summary.schema.type_changes[0].compared_as == "TIMESTAMP"


def test_columns_limit_the_schema_check_and_bad_options_are_one_line() -> None:
    candidate = pl.DataFrame({"id": [1], "a": [1]})
    live = pl.DataFrame({"id": [1], "a": [1], "updated_at": [2]})
    assert wb.diff(candidate, live, key="id", columns=["a"]).summary.is_identical
    for options, message in (
        ({"abs_tol": {"a": float("inf")}}, "abs_tol of 'a': inf is not a number 0 or above"),
        ({"rel_tol": {"a": -0.1}}, "rel_tol of 'a': -0.1 is not a number 0 or above"),
        ({"normalize": {"a": "nosuchfn({})"}}, "normalize: Catalog Error"),
    ):
        with pytest.raises(DiffError, match=re.escape(message)):
            wb.diff(candidate, live, key="id", **options)


def test_a_column_named_twice_is_compared_once_and_never_also_ignored() -> None:
    candidate = pl.DataFrame({"id": [1, 2], "score": [1.0, 2.0]})
    live = pl.DataFrame({"id": [1, 2], "score": [1.0, 3.0]})
    assert wb.diff(candidate, live, key="id", columns=["score", "score"]).summary.changed == 1
    with pytest.raises(DiffError, match=r"column 'score' is both compared \(columns\) and ignored"):
        wb.diff(candidate, live, key="id", columns=["score"], ignore=["score"])


def test_a_failed_diff_leaves_no_file_attached(tmp_path: Path) -> None:
    """A notebook keeps the last error, and with it the diff's frames: the DuckDB file
    it attached must be free for a replay or promote into it."""
    path = tmp_path / "readmodels.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create table t as select range id from range(3)")
    with pytest.raises(DiffError, match="key column 'idd' is not in the candidate") as caught:
        wb.diff(f"{path}:t", pl.DataFrame({"id": [0, 1, 2]}), key="idd")
    assert caught.value.__traceback__ is not None  # held, as sys.last_value holds it
    with duckdb.connect(str(path)) as con:
        con.execute("create table promoted as select 1")


@pytest.mark.parametrize(
    ("normalize", "why"),
    [
        ("round({}, 2); copy (select 1) to 'x.csv'", "not several statements"),
        ("round({}, 2) -- two places", "an expression without comments"),
        ("round({}, 2", "normalize of 'n': Parser Error"),
    ],
)
def test_normalize_is_one_expression(normalize: str, why: str) -> None:
    """It is pasted into both sides' queries: a second statement would run unseen."""
    frame = pl.DataFrame({"id": [1], "n": [1.0]})
    with pytest.raises(DiffError, match=re.escape(why)):
        wb.diff(frame, frame, key="id", normalize={"n": normalize})


def test_text_keys_that_are_not_the_other_side_s_type_are_kept_and_compared_as_text() -> None:
    """'cust-1' against BIGINT keys: a cast would make them NULL keys, set aside as such."""
    candidate = pl.DataFrame({"k": ["cust-1", "7", "8"], "v": [1, 3, 4]})
    live = pl.DataFrame({"k": [1, 7, 8], "v": [1, 3, 5]})
    d = wb.diff(candidate, live, key="k")
    s = d.summary
    assert (s.identical, s.changed, s.only_in_candidate, s.only_in_live) == (1, 1, 1, 1)
    assert s.null_key_rows_candidate == 0
    assert sorted(d.rows()["k"].to_list()) == ["1", "8", "cust-1"]
    # Text keys that all cast keep the typed comparison ('007' is 7).
    padded = wb.diff(pl.DataFrame({"k": ["007"], "v": [3]}), live.head(2).tail(1), key="k")
    assert padded.summary.is_identical
    # And those that cast still match as cast when others do not: one legacy key must
    # not turn every '007' into a row on one side only.
    mixed = pl.DataFrame({"k": ["007", "8", " 9", "legacy-1"], "v": [3, 4, 5, 6]})
    both = wb.diff(mixed, pl.DataFrame({"k": [7, 8, 9], "v": [3, 4, 5]}), key="k").summary
    assert (both.identical, both.only_in_candidate, both.only_in_live) == (3, 1, 0)


def test_a_boolean_against_a_0_1_flag_compares_as_a_number() -> None:
    candidate = pl.DataFrame({"id": [1, 2, 3, 4], "paid": [True, False, True, None]})
    live = pl.DataFrame(
        {"id": [1, 2, 3, 4], "paid": [1, 0, 2, None]}, schema_overrides={"paid": pl.Int16}
    )
    d = wb.diff(candidate, live, key="id")
    assert d.rows()["id"].to_list() == [3]  # 2 is neither true nor false


def test_a_file_this_process_holds_open_is_named_with_the_fix(tmp_path: Path) -> None:
    """A notebook's own duckdb.connect() on the file: DuckDB's "file handle conflict"
    names no fix."""
    path = tmp_path / "rm.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create table t as select 1 as id, 2 as n")
        with pytest.raises(
            DiffError, match=r"rm.duckdb: this process has it open already .*close that connection"
        ):
            wb.diff(f"{path}:t", f"{path}:t", key="id")
    assert wb.diff(f"{path}:t", f"{path}:t", key="id").summary.is_identical


def test_a_struct_map_or_list_against_json_is_compared_by_meaning(tmp_path: Path) -> None:
    """A projection's nested column against a live jsonb: as text, {'a': 1} never
    equalled {"a": 1} and every row differed."""
    d = _diff_of_values(
        tmp_path,
        "(1, {'a': 1, 'b': [1, 2]}, MAP {'k': 1}, [1, 2]), (2, {'a': 2, 'b': [3]}, MAP {'k': 2}, [3])",
        """(1, '{"b": [1,2], "a": 1}'::JSON, '{"k":1}'::JSON, '[1, 2]'::JSON), """
        """(2, '{"a": 2, "b": [4]}'::JSON, '{"k":2}'::JSON, '[3]'::JSON)""",
        "id, s, m, l",
    )
    assert d.summary.changed == 1
    assert d.rows("changed").select("id", "s__changed", "m__changed", "l__changed").rows() == [
        (2, True, False, False)
    ]
    assert {p.name: p.compared_as for p in d.plans} == {"s": "JSON", "m": "JSON", "l": "JSON"}


def test_keys_of_which_none_meet_are_said_with_their_types() -> None:
    """A BIGINT id against UUID text matched no row: "6 differing rows" said nothing of why."""
    candidate = pl.DataFrame({"id": [1, 2, 3], "n": [1, 2, 3]})
    live = pl.DataFrame({"id": ["1a", "2b", "3c"], "n": [1, 2, 3]})
    note = wb.diff(candidate, live, key="id").summary.notes[-1]
    assert note == (
        "no key is on both sides: the key types differ, id BIGINT (candidate) vs VARCHAR "
        "(live); is it the same key, of the same entities?"
    )
    assert not wb.diff(candidate, candidate.with_columns(n=0), key="id").summary.notes


def test_lists_of_numbers_or_json_that_come_as_text_are_compared_by_value(
    tmp_path: Path,
) -> None:
    """Postgres numeric[] and jsonb[] come as text lists: '[1.500, 2.000]' against
    '[1.5, 2]', and each JSON element's spacing, differed in every row."""
    d = _diff_of_values(
        tmp_path,
        "(1, [1.5, 2]::DECIMAL(18,3)[], ['{\"a\":1}'::JSON]), "
        "(2, [3]::DECIMAL(18,3)[], ['{\"a\":2}'::JSON])",
        "(1, ['1.5', '2'], ['{\"a\": 1}']), (2, ['3.25'], ['{\"a\": 2}'])",
        "id, na, ja",
    )
    assert d.rows("changed").select("id", "na__changed", "ja__changed").rows() == [(2, True, False)]


def _diff_of_values(tmp_path: Path, candidate: str, live: str, columns: str) -> wb.Diff:
    """The diff on ``id`` of two DuckDB tables of SQL ``values`` rows with ``columns``."""
    path = tmp_path / "sides.duckdb"
    with duckdb.connect(str(path)) as con:
        for name, rows in (("c", candidate), ("live", live)):
            con.execute(f"create table {name} as select * from (values {rows}) t({columns})")
    return wb.diff(f"{path}:c", f"{path}:live", key="id")


def test_a_uuid_read_as_its_16_bytes_matches_the_uuid(tmp_path: Path) -> None:
    """pl.read_database_uri with ADBC gives a Postgres UUID as 16 bytes: every key was
    only on one side."""
    ids = [uuid.UUID(int=i * 7919 + 1) for i in range(5)]
    live = tmp_path / "live.duckdb"
    with duckdb.connect(str(live)) as con:
        con.execute("create table t (id uuid, n int)")
        con.executemany("insert into t values (?, ?)", [(str(u), i) for i, u in enumerate(ids)])
    for candidate in (
        pl.DataFrame({"id": [u.bytes for u in ids], "n": [0, 1, 2, 3, 5]}),
        pa.table({"id": pa.array([u.bytes for u in ids], pa.binary(16)), "n": [0, 1, 2, 3, 5]}),
    ):
        d = wb.diff(candidate, f"{live}:main.t", key="id")
        assert (d.summary.identical, d.summary.changed, d.summary.only_in_live) == (4, 1, 0)
        assert d.rows()["id"].to_list() == [str(ids[4])]
        assert "compared as UUID (bytes read as a UUID)" in d.summary()


def test_keys_apart_only_by_hyphens_are_said_to_be_one_key_spelled_two_ways() -> None:
    """A text id of 32 hex digits archived hyphenated (or the other way round): every such
    key was only on one side, and nothing said why."""
    ids = [uuid.UUID(int=i * 104729 + 7) for i in range(4)]
    candidate = pl.DataFrame({"id": [str(u) for u in ids], "n": [1, 2, 3, 4]})
    live = pl.DataFrame({"id": [u.hex for u in ids[:3]] + [str(ids[3])], "n": [1, 2, 3, 4]})
    d = wb.diff(candidate, live, key="id")
    assert (d.summary.only_in_candidate, d.summary.only_in_live, d.summary.identical) == (3, 3, 1)
    assert any(n.startswith("3 key(s) only in the candidate and only in live are the same id")
               for n in d.summary.notes)  # fmt: skip
    apart = wb.diff(candidate, live.with_columns(id=pl.lit("x") + pl.col("id")), key="id")
    assert not any("are the same id" in n for n in apart.summary.notes)
    numbers = wb.diff(pl.DataFrame({"id": [-5, 1]}), pl.DataFrame({"id": [5, 1]}), key="id")
    assert not any("are the same id" in n for n in numbers.summary.notes)  # -5 is not 5
