"""A live Postgres table as the live side, read through ADBC."""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path

import duckdb
import polars as pl
import psycopg
import pytest

import workbench as wb
from workbench.errors import SourceError

pytestmark = pytest.mark.postgres


def test_live_postgres_table_with_planted_differences(pg_dsn: str, pg_schema: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(
            f'create table "{pg_schema}".memories (id int primary key, title text, '
            "amount numeric(12, 2), weight float8, seen timestamptz, tags numeric)"
        )
        con.execute(
            f"insert into \"{pg_schema}\".memories select g, 'm' || g, g * 1.25, g / 4.0, "
            "timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second', g "
            "from generate_series(1, 200) g"
        )
        con.execute(f'update "{pg_schema}".memories set title = null where id = 10')
    candidate = pl.DataFrame(
        {
            "id": list(range(1, 202)),
            "title": [
                None if i == 10 else ("changed" if i == 3 else f"m{i}") for i in range(1, 202)
            ],
            "amount": [
                decimal.Decimal(i) * decimal.Decimal("1.25")
                + (decimal.Decimal("0.01") if i == 7 else 0)
                for i in range(1, 202)
            ],
            "weight": [i / 4.0 + (1e-12 if i % 2 else 0) for i in range(1, 202)],
            "seen": pl.datetime_range(
                pl.datetime(2024, 1, 1, 0, 0, 1),
                pl.datetime(2024, 1, 1, 0, 3, 21),
                "1s",
                eager=True,
                time_unit="ns",
            ),
            "tags": [str(i) for i in range(1, 202)],
        }
    ).filter(pl.col("id") != 50)
    live = f"{pg_dsn}#{pg_schema}.memories"
    d = wb.diff(candidate, live, key="id", abs_tol={"weight": 1e-9})
    s = d.summary
    assert (s.live_rows, s.candidate_rows) == (200, 200)
    assert (s.changed, s.only_in_candidate, s.only_in_live, s.identical) == (2, 1, 1, 197)
    assert d.rows("changed")["id"].to_list() == [3, 7]
    cols = {r["column"]: r for r in s.columns.to_dicts()}
    assert cols["amount"]["live_type"] == "DECIMAL(12,2)"  # numeric(p, s) arrives exact
    assert cols["amount"]["max_abs_diff"] == pytest.approx(0.01)
    assert cols["tags"]["changed"] == 0  # unconstrained numeric vs text, cast safely
    assert d.explain(7).live is not None and d.explain(7).live["amount"] == decimal.Decimal("8.75")


def test_unreachable_or_missing_table_is_one_line_without_password(pg_dsn: str) -> None:
    with pytest.raises(SourceError) as info:
        wb.diff(pl.DataFrame({"id": [1]}), f"{pg_dsn}#public.nope", key="id")
    assert "public.nope" in str(info.value)
    with pytest.raises(SourceError) as info:
        wb.diff(pl.DataFrame({"id": [1]}), "postgresql://u:hunter2@127.0.0.1:1/x#a.b", key="id")
    assert "hunter2" not in str(info.value) and "***" in str(info.value)


def test_a_snapshot_and_the_live_table_read_the_same(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """Money columns stay exact decimals in a snapshot, so it diffs clean against its live table."""
    table = f"{pg_schema}.accounts"
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f"create table {table} (id int primary key, balance numeric(10,2), note text)")
        con.execute(f"insert into {table} values (1, 12.34, 'a'), (2, -0.05, null), (3, null, 'c')")
    snapshot = tmp_path / "accounts.parquet"
    wb.snapshot_postgres(pg_dsn, table, snapshot)
    frame = pl.read_parquet(snapshot)
    assert frame.schema["balance"] == pl.Decimal(10, 2)
    assert frame.sort("id")["balance"].to_list() == [
        decimal.Decimal("12.34"),
        decimal.Decimal("-0.05"),
        None,
    ]
    wb.diff(str(snapshot), f"{pg_dsn}#{table}", key="id").assert_identical()


def test_float_sums_compare_with_a_numeric_as_postgres_stored_them(
    pg_dsn: str, pg_schema: str
) -> None:
    """A live projector summing money in floats writes them to numeric(12,2) through the
    driver: Postgres rounds at 15 significant digits (0.08499999999999999 is 0.09), in a
    numeric without a scale (0.30000000000000004 is 0.3) or wider than 18 digits too,
    which come as text."""
    sums = [0.01 + 0.075, 1.0049999999999997, 0.1 + 0.2, 2.675, -0.01 - 0.075]
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(
            f'create table "{pg_schema}".sums (id int primary key, total numeric(12,2), '
            "plain numeric, wide numeric(38,10))"
        )
        with con.cursor() as cur:
            cur.executemany(
                f'insert into "{pg_schema}".sums values (%s, %s, %s, %s)',
                [(i, x, x, x) for i, x in enumerate(sums)],
            )
    candidate = pl.DataFrame(
        {"id": list(range(len(sums))), "total": sums, "plain": sums, "wide": sums}
    )
    d = wb.diff(candidate, f"{pg_dsn}#{pg_schema}.sums", key="id")
    assert d.summary.is_identical, d.rows()
    # A real difference still is one, in the 15th digit.
    off = candidate.with_columns(
        plain=pl.col("plain") + pl.when(pl.col("id") == 2).then(1e-13).otherwise(0)
    )
    assert wb.diff(off, f"{pg_dsn}#{pg_schema}.sums", key="id").rows()["id"].to_list() == [2]


def test_an_extensions_type_and_a_padded_char_read_as_postgres_writes_them(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """ADBC passes citext (and any type it does not know) as opaque bytes, and char(n)
    with its padding, which Postgres itself ignores."""
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute("create extension if not exists citext")
        con.execute(
            f'create table "{pg_schema}".people (code char(5) primary key, name citext, '
            "names citext[], tx xid)"
        )
        con.execute(
            f"insert into \"{pg_schema}\".people values ('ab', 'Zoë', '{{ÅSA,b}}', '5'), "
            "('cd', e'tab\\there', null, null), ('ef', 'e', '{}', null), "
            "('gh', 'g', '{NULL,x}', null)"
        )
    candidate = pl.DataFrame(
        {
            "code": ["ab", "cd", "ef", "gh"],
            "name": ["Zoë", "tab\there", "e", "g"],
            "names": [["ÅSA", "b"], None, [], [None, "x"]],  # a citext[] is a list of texts
            "tx": ["5", None, None, None],
        }
    )
    live = f"{pg_dsn}#{pg_schema}.people"
    d = wb.diff(candidate, live, key="code")
    assert d.summary.is_identical, d.rows()
    snapshot = tmp_path / "people.parquet"
    wb.snapshot_postgres(pg_dsn, f"{pg_schema}.people", snapshot)
    assert wb.diff(candidate, str(snapshot), key="code").summary.is_identical


def test_a_uuid_key_matches_its_text_in_any_case(pg_dsn: str, pg_schema: str) -> None:
    """.NET writes GUIDs upper case; Postgres stores uuid."""
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f'create table "{pg_schema}".notes (id uuid primary key, v int)')
        con.execute(
            f"insert into \"{pg_schema}\".notes values ('5f0c7a36-77a5-4d4e-9a76-0d8f2f3c7a11', 1)"
        )
    candidate = pl.DataFrame({"id": ["5F0C7A36-77A5-4D4E-9A76-0D8F2F3C7A11"], "v": [1]})
    assert wb.diff(candidate, f"{pg_dsn}#{pg_schema}.notes", key="id").summary.is_identical


def test_jsonb_compares_by_meaning_not_by_spelling(pg_dsn: str, pg_schema: str) -> None:
    """Postgres stores jsonb with its own key order and spacing."""
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f'create table "{pg_schema}".docs (id int primary key, doc jsonb)')
        con.execute(
            f'insert into "{pg_schema}".docs values (1, \'{{"b":1,"a":[1,2]}}\'), '
            "(2, '{\"a\": 1}'), (3, '{\"amount\": 10.00}'), "
            "(4, '{\"amount\": 0.10000000000000000001}')"
        )
    candidate = pl.DataFrame(
        {
            "id": [1, 2, 3, 4],
            "doc": ['{"b": 1, "a": [1, 2]}', '{"a": 2}', '{"amount": 10}', '{"amount": 0.1}'],
        }
    )
    d = wb.diff(candidate, f"{pg_dsn}#{pg_schema}.docs", key="id")
    # Numbers by exact value, as jsonb's own = does: 10 = 10.00, 0.1 <> 0.1000...01.
    assert d.rows("changed")["id"].to_list() == [2, 4]


def test_numeric_nan_and_negative_scale_do_not_break_the_pull(pg_dsn: str, pg_schema: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(
            f'create table "{pg_schema}".prices (id int primary key, p numeric(12,2), '
            "r numeric(5,-2))"
        )
        con.execute(f"insert into \"{pg_schema}\".prices values (1, 'NaN', 12300), (2, 12.34, 100)")
    candidate = pl.DataFrame({"id": [1, 2], "p": [None, 12.34], "r": [12300, 100]})
    d = wb.diff(candidate, f"{pg_dsn}#{pg_schema}.prices", key="id")
    # NaN is no number and no NULL: a candidate without a value differs from it.
    assert d.rows("changed").select("id", "p__changed", "r__changed").rows() == [(1, True, False)]
    assert d.explain(1).live["p"] == "NaN"


def test_numeric_columns_with_long_or_clashing_names_read(pg_dsn: str, pg_schema: str) -> None:
    """Postgres cuts identifiers at 63 bytes: nothing read may be named after a column."""
    long = "a" * 60
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(
            f'create table "{pg_schema}".wide (id int primary key, {long} numeric(10,2), '
            '"_wb_0" text, amount numeric(10,2))'
        )
        con.execute(f"insert into \"{pg_schema}\".wide values (1, 1.5, 'x', 'NaN')")
    live = pl.DataFrame({"id": [1], long: [1.5], "_wb_0": ["x"], "amount": ["NaN"]})
    wb.diff(live, f"{pg_dsn}#{pg_schema}.wide", key="id").assert_identical()


def test_types_adbc_does_not_know_compare_as_postgres_writes_them(
    pg_dsn: str, pg_schema: str
) -> None:
    """money, inet, real, and numeric without a scale, against what a handler would write."""
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(
            f'create table "{pg_schema}".hosts (id int primary key, fee money, ip inet, '
            "ratio real, exact numeric, during int4range)"
        )
        con.execute(
            f'insert into "{pg_schema}".hosts values '
            "(1, 12.34, '10.0.0.1', 0.1, 0.1234567891, '[1,5)'), "
            "(2, 5.00, '10.0.0.2/32', 0.25, 2, '[2,3)'), (3, null, null, null, null, null)"
        )
    candidate = duckdb.connect().sql(
        "select * from (values (1, 12.34::decimal(12,2), '10.0.0.1', 0.1::double, "
        "0.123456789::decimal(38,9), '[1,5)'), (2, 5.00, '10.0.0.2', 0.25, 2, '[2,3)'), "
        "(3, null, null, null, null, null)) t(id, fee, ip, ratio, exact, during)"
    )
    d = wb.diff(candidate, f"{pg_dsn}#{pg_schema}.hosts", key="id")
    changed = d.rows("changed").select(
        "id", "fee__changed", "ip__changed", "ratio__changed", "exact__changed"
    )
    # Only the tenth decimal place of `exact` differs (a cast to the candidate's
    # DECIMAL(38,9) would have rounded it away).
    assert changed.rows() == [(1, False, False, False, True)], d.summary


def test_a_citext_column_compares_without_case_as_postgres_does(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """'Ann@X.com'::citext = 'ann@x.com' in Postgres: a case-only difference was a change,
    and a citext key put the row on both sides as two."""
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute("create extension if not exists citext")
        con.execute(f"create table {pg_schema}.users (email citext primary key, name citext)")
        con.execute(
            f"insert into {pg_schema}.users values ('Ann@X.com', 'Ann'), ('bob@y.org', 'Bob')"
        )
    candidate = tmp_path / "c.duckdb"
    with duckdb.connect(str(candidate)) as con:
        con.execute(
            "create table users as select * from (values ('ann@x.com', 'ANN'), "
            "('bob@y.org', 'Rob')) t(email, name)"
        )
    live = f"{pg_dsn}#{pg_schema}.users"
    snapshot = tmp_path / "users.parquet"
    wb.snapshot_postgres(pg_dsn, f"{pg_schema}.users", snapshot)
    for side in (live, str(snapshot)):
        d = wb.diff(f"{candidate}:main.users", side, key="email")
        assert (d.summary.identical, d.summary.changed) == (1, 1), side
        assert d.rows("changed")["email"].to_list() == ["bob@y.org"]
        assert "email is citext in live: compared without case" in d.summary.notes[0]
    # Asked for, case counts again.
    strict = wb.diff(f"{candidate}:main.users", live, key="email", normalize={"name": "{}"})
    assert strict.summary.changed == 2


def test_unscaled_numerics_equal_in_postgres_read_alike(pg_dsn: str, pg_schema: str) -> None:
    """An unscaled numeric comes as text, exactly: 1.5 and 1.50 (equal in Postgres) were
    two texts, and a copy of a table computed with * 1.00 differed in every row."""
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f"create table {pg_schema}.a (id int primary key, n numeric)")
        con.execute(f"insert into {pg_schema}.a values (1, 1.5), (2, 100), (3, 2.25)")
        con.execute(f"create table {pg_schema}.b as select id, n * 1.00 as n from {pg_schema}.a")
        con.execute(f"update {pg_schema}.b set n = 2.26 where id = 3")
    d = wb.diff(f"{pg_dsn}#{pg_schema}.b", f"{pg_dsn}#{pg_schema}.a", key="id")
    assert d.rows("changed").select("id", "n__candidate", "n__live").rows() == [(3, "2.26", "2.25")]


def test_times_postgres_writes_as_text_are_in_utc_whatever_the_server_zone(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """A tstzrange is read as its text, which carries the session's zone: the same rows
    read under another database setting were all "changed"."""
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f"create table {pg_schema}.spans (id int primary key, r tstzrange)")
        con.execute(
            f"insert into {pg_schema}.spans values (1, '[2024-01-01 00:00+00,2024-02-01 00:00+00)')"
        )
    kolkata = f"{pg_dsn}{'&' if '?' in pg_dsn else '?'}options=-c%20TimeZone%3DAsia/Kolkata"
    out = tmp_path / "spans.parquet"
    wb.snapshot_postgres(kolkata, f"{pg_schema}.spans", out)
    assert duckdb.sql(f"select r from '{out}'").fetchall() == [
        ('["2024-01-01 00:00:00+00","2024-02-01 00:00:00+00")',)
    ]


def test_infinity_in_a_domain_over_a_time_or_in_an_array_of_times_is_kept(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """A domain's name matched no time type and a timestamptz[] was read natively: both
    wrapped infinity around to 290279 BC, and the CLI crashed printing it."""
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f"create domain {pg_schema}.valid_until as timestamptz")
        con.execute(
            f"create table {pg_schema}.offers (id int primary key, "
            f"v {pg_schema}.valid_until, a timestamptz[], n {pg_schema}.valid_until)"
        )
        con.execute(
            f"insert into {pg_schema}.offers values (1, 'infinity', '{{infinity}}', "
            "'2024-05-01 10:00+00'), (2, '-infinity', '{2024-05-01 10:00+00}', null)"
        )
    out = tmp_path / "offers.parquet"
    wb.snapshot_postgres(pg_dsn, f"{pg_schema}.offers", out)
    assert duckdb.sql(
        f"select id, v::VARCHAR, a::VARCHAR, n from '{out}' order by id"
    ).fetchall() == [
        (1, "infinity", "{infinity}", dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC)),
        (2, "-infinity", '{"2024-05-01 10:00:00+00"}', None),
    ]


def test_infinite_times_and_intervals_survive_a_snapshot_and_a_diff(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """'infinity' (a common valid-until) came out of ADBC as a date in 290279 BC, and an
    interval crashed the snapshot; both must round-trip and compare equal."""
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(
            f"create table {pg_schema}.terms (id int primary key, valid_to timestamptz, "
            "opened timestamp, until date, notice interval)"
        )
        con.execute(
            f"insert into {pg_schema}.terms values "
            "(1, 'infinity', '-infinity', 'infinity', '1 day 2 hours'), "
            "(2, '2024-05-01 10:00:00.123456+02', '2024-05-01 10:00:00.5', '2024-05-01', "
            "'-3 mons 4 days 00:00:00.000001'), (3, null, null, null, null)"
        )
    out = tmp_path / "terms.parquet"
    wb.snapshot_postgres(pg_dsn, f"{pg_schema}.terms", out)
    got = duckdb.sql(
        f"select id, isinf(valid_to), isinf(opened), opened < timestamp '2000-01-01', "
        f"isinf(until), notice::INTERVAL from '{out}' order by id"
    ).fetchall()
    assert got[0] == (1, True, True, True, True, dt.timedelta(days=1, hours=2))
    assert got[1][1:5] == (False, False, False, False)
    assert duckdb.sql(f"select valid_to, notice from '{out}' where id = 2").fetchall() == [
        (dt.datetime(2024, 5, 1, 8, 0, 0, 123456, tzinfo=dt.UTC), "-3 months 4 days 1 microseconds")
    ]
    candidate = tmp_path / "c.duckdb"
    con = duckdb.connect(str(candidate))
    con.execute(
        "create table terms as select * from (values "
        "(1, 'infinity'::TIMESTAMPTZ, '-infinity'::TIMESTAMP, 'infinity'::DATE, "
        "INTERVAL '1 day 2 hours'), "
        "(2, TIMESTAMPTZ '2024-05-01 08:00:00.123456+00', TIMESTAMP '2024-05-01 10:00:00.5', "
        "DATE '2024-05-01', INTERVAL '-3 months 4 days 1 microseconds'), "
        "(3, null, null, null, null)) t(id, valid_to, opened, until, notice)"
    )
    con.close()
    for live in (f"{pg_dsn}#{pg_schema}.terms", str(out)):
        result = wb.diff(f"{candidate}:main.terms", live, key=["id"])
        assert result.summary.is_identical, result.rows().to_dicts()
        assert result.rows().height == 0  # a frame with INTERVAL columns: no Polars panic
    # A row that differs beside an infinite time: the frame shows (Polars held the
    # infinity as a date past its range and panicked printing it), the infinity as text.
    with psycopg.connect(pg_dsn, autocommit=True) as pg:
        pg.execute(f"update {pg_schema}.terms set until = '-infinity' where id = 1")
    changed = wb.diff(f"{candidate}:main.terms", f"{pg_dsn}#{pg_schema}.terms", key="id")
    frame = changed.rows("changed")
    assert "infinity" in str(frame)
    assert frame.select("until__candidate", "until__live").row(0) == ("infinity", "-infinity")
    # Arrow and Parquet as rows() gives them: a column's two sides one type (the
    # candidate's finite times as text beside the live infinity), an interval without
    # months a duration; Polars panicked on the raw infinity in both.
    assert pl.from_arrow(changed.arrow("changed")).equals(frame)
    assert frame.schema["notice__live"] == frame.schema["notice__candidate"] == pl.Duration("us")
    assert frame.schema["valid_to__candidate"] == frame.schema["valid_to__live"] == pl.String
    changed.to_parquet(tmp_path / "out")
    assert pl.read_parquet(tmp_path / "out" / "rows.parquet").equals(changed.rows())
