"""``workbench diff``: compare a candidate read model with the live one; exit 1 on differences."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from workbench._text import named_twice
from workbench.cli._app import app, cell_text, console, frame_table, notice, progress_bar
from workbench.errors import DiffError

if TYPE_CHECKING:
    import polars as pl


def _pairs(values: list[str], option: str) -> dict[str, float]:
    out = {}
    for value in values:
        column, sep, number = value.partition("=")
        try:
            if not sep or not column:
                raise ValueError
            tolerance = float(number)
        except ValueError:
            raise DiffError(f"{option} {value!r}: expected COLUMN=NUMBER") from None
        if column in out:  # the last would win in silence
            raise DiffError(f"{option} gives {column} twice")
        out[column] = tolerance
    return out


def _sql_pairs(values: list[str]) -> dict[str, str]:
    out = {}
    for value in values:
        column, sep, sql = value.partition("=")
        if not sep or not column.strip() or not sql.strip():
            raise DiffError(
                f"--normalize {value!r}: expected COLUMN=SQL, e.g. amount=round({{}}, 2)"
            )
        if column.strip() in out:
            raise DiffError(f"--normalize gives {column.strip()} twice")
        out[column.strip()] = sql.strip()
    return out


# The options that say how rows are compared, shared by `diff` and `report`.
IGNORE = typer.Option(
    [], "--ignore", help="Columns not to compare: COL[,COL], or --ignore repeated."
)
COLUMNS = typer.Option(
    [],
    "--columns",
    help="Compare only these columns (and the key): COL[,COL], or --columns repeated.",
)
ABS_TOL = typer.Option([], "--abs-tol", help="COL=X: numbers within X agree.")
REL_TOL = typer.Option([], "--rel-tol", help="COL=X: numbers within X·|live| agree.")
NORMALIZE = typer.Option(
    [],
    "--normalize",
    help="COL=SQL applied to both sides first, {} for the column: 'tags=list_sort({})', "
    "'name=lower'.",
)
LIVE_POSITION = typer.Option(
    None, "--live-position", min=0, help="Event-store position the live side reflects."
)


def comparison(
    columns: list[str],
    ignore: list[str],
    abs_tol: list[str],
    rel_tol: list[str],
    normalize: list[str],
) -> dict[str, Any]:
    """``wb.diff`` keyword arguments from the comparison options as given."""
    return {
        "columns": split_columns(columns, "--columns") or None,
        "ignore": split_columns(ignore, "--ignore"),
        "abs_tol": _pairs(abs_tol, "--abs-tol"),
        "rel_tol": _pairs(rel_tol, "--rel-tol"),
        "normalize": _sql_pairs(normalize),
    }


@app.command()
def diff(
    candidate: str = typer.Option(
        ..., "--candidate", help="The candidate: FILE.duckdb:SCHEMA.TABLE, or a .parquet file."
    ),
    live: str = typer.Option(
        ...,
        "--live",
        help="The live side: postgresql://…#SCHEMA.TABLE, a .parquet snapshot, or FILE.duckdb:SCHEMA.TABLE.",
    ),
    key: list[str] = typer.Option(
        ..., "--key", help="Key column(s): COL[,COL], or --key repeated."
    ),
    columns: list[str] = COLUMNS,
    ignore: list[str] = IGNORE,
    abs_tol: list[str] = ABS_TOL,
    rel_tol: list[str] = REL_TOL,
    normalize: list[str] = NORMALIZE,
    live_position: int | None = LIVE_POSITION,
    archive: Path | None = typer.Option(
        None, "--archive", help="Archive to read events from for --explain."
    ),
    explain: list[str] = typer.Option(
        [],
        "--explain",
        help="Explain a key (repeatable): comma-separated for a composite key, or a JSON "
        "list for values with commas or edge spaces: '[\"agent x \", 7524]'.",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Write rows.parquet, columns.parquet and summary.json here."
    ),
    limit: int = typer.Option(10, "--show", min=0, help="How many differing rows to print."),
) -> None:
    """Diff a candidate read model against the live one. Exit 0 identical, 1 differences, 2 error."""
    from workbench.diff import diff as run_diff

    # Before the work, not after it: a mistake here would lose the diff's exit code.
    if out is not None:
        _check_out(out)
    keys = split_columns(key, "--key")
    explained = [_explain_key(text, len(keys)) for text in explain]
    if explain and archive is not None:
        from workbench.archive import ArchiveReader

        ArchiveReader(archive).require_archive()
    compare = comparison(columns, ignore, abs_tol, rel_tol, normalize)
    with progress_bar(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()
    ) as progress:
        progress.add_task("comparing candidate with live", total=None)
        result = run_diff(
            candidate,
            live,
            key=keys,
            **compare,
            live_position=live_position,
            archive=archive,
        )
    summary = result.summary
    console.print(
        f"{summary.candidate_rows:,} candidate vs {summary.live_rows:,} live rows: "
        f"{summary.verdict}",
        highlight=False,
    )
    for line in summary.schema_lines():
        notice("schema", line, style="yellow", stderr=False)
    table = Table(title=f"diff on {', '.join(keys)}")
    table.add_column("status")
    table.add_column("rows", justify="right")
    for row in summary.counts().to_dicts():
        table.add_row(row["status"], f"{row['rows']:,}")
    console.print(table)
    changed = summary.columns.filter(summary.columns["changed"] > 0)
    if len(changed):
        per_column = Table(title="changed rows per column")
        for name in ("column", "compared as", "changed", "max |diff|"):
            per_column.add_column(name)
        for row in changed.to_dicts():
            diff_text = "" if row["max_abs_diff"] is None else f"{row['max_abs_diff']:g}"
            per_column.add_row(row["column"], row["compared_as"], f"{row['changed']:,}", diff_text)
        console.print(per_column)
    listed = summary.differences + summary.not_yet_projected  # the rows _wb_diff holds
    if listed and limit:
        console.print(
            frame_table(
                _preview(result, limit),
                "differing rows",
                total=listed,
                exact=True,
                more="--show N prints more, --out DIR writes all",
            )
        )
    for note in summary.notes:
        console.print(f"note: {note}", highlight=False)
    if out is not None:  # before explaining: a mistyped --explain key must not lose it
        result.to_parquet(out)
        console.print(f"wrote {out}/rows.parquet, columns.parquet, summary.json", highlight=False)
    for value in explained:
        console.print(str(result.explain(value)))
    raise typer.Exit(0 if summary.is_identical else 1)


def _check_out(out: Path) -> None:
    """Refuse an ``--out`` the diff could not be written to: a file, or a place not writable."""
    if out.exists() and not out.is_dir():
        raise DiffError(f"{out} is a file; --out takes a directory")
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise DiffError(f"cannot write to {out}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DiffError(f"cannot write to {out}: {existing} is not writable")


def _preview(result: Any, limit: int) -> pl.DataFrame:
    """The first differing rows: the key, the status and only the columns that changed
    somewhere (on a wide table the rest would push them out of the terminal). Past
    :data:`_SIDE_BY_SIDE` changed columns, one ``changes`` column lists each row's own
    (``balance: 12 → 13``): two columns a change no terminal is wide enough for."""
    import polars as pl

    changed = result.summary.columns.filter(pl.col("changed") > 0)["column"].to_list()
    head = result.head(limit)
    # _status and _side only where they tell rows apart (a diff of changes only: noise).
    shown = [*result.key, *(c for c in ("_status", "_side") if head[c].n_unique() > 1)]
    if len(changed) <= _SIDE_BY_SIDE:
        shown += [f"{c}__{side}" for c in changed for side in ("candidate", "live")]
        return head.select(shown)
    # Each value as a cell shows it (null apart from '', edge spaces quoted), of any type;
    # a row on one side only says so (an empty cell read as a change to '').
    changes = [
        "; ".join(
            f"{c}: {cell_text(row[f'{c}__candidate'], True)} → {cell_text(row[f'{c}__live'], True)}"
            for c in changed
            if row[f"{c}__changed"]
        )
        or f"({row['_status'].replace('_', ' ')})"
        for row in head.iter_rows(named=True)
    ]
    return head.select(shown).with_columns(pl.Series("changes", changes, pl.String))


#: Changed columns the CLI shows side by side; more are listed per row in one column.
_SIDE_BY_SIDE = 3


def split_columns(given: list[str], option: str) -> list[str]:
    """Column names from a repeated ``option`` whose values may also be comma-separated.

    >>> split_columns(["agent_id", "day, kind"], "--key")
    ['agent_id', 'day', 'kind']
    >>> split_columns(["agent_id", "agent_id"], "--key")
    Traceback (most recent call last):
    ...
    workbench.errors.DiffError: --key names agent_id twice
    """
    names = [c.strip() for text in given for c in text.split(",") if c.strip()]
    twice = named_twice(names)
    if twice is not None:
        raise DiffError(f"{option} names {twice} twice")
    return names


def _explain_key(text: str, columns: int) -> Any:
    """The key value(s) of ``--explain TEXT``: as given for a one-column key (spaces and
    commas are part of it), split at commas for a composite key, or a JSON list.

    >>> _explain_key("abc ", 1), _explain_key("a,b", 1), _explain_key("a, 2024-05-01", 2)
    ('abc ', 'a,b', ('a', '2024-05-01'))
    >>> _explain_key('["x,y", "2024-05-01"]', 2)
    ('x,y', '2024-05-01')
    >>> _explain_key("a", 2)
    Traceback (most recent call last):
    ...
    workbench.errors.DiffError: --explain a: the key has 2 columns, so give 2 values (a,b)
    """
    if text.startswith("["):
        try:
            values = json.loads(text)
        except ValueError:
            values = None
        if isinstance(values, list):
            if columns == 1 and len(values) == 1:
                return values[0]
            return _arity(text, tuple(values), columns)
    if columns == 1:
        return text
    return _arity(text, tuple(v.strip() for v in text.split(",")), columns)


def _arity(text: str, values: tuple[Any, ...], columns: int) -> tuple[Any, ...]:
    if len(values) != columns:  # known before the diff: told before it, not after
        raise DiffError(
            f"--explain {text}: the key has {columns} columns, so give {columns} values "
            f"({','.join('abcdefghij'[:columns]) if columns <= 10 else 'comma-separated'})"
        )
    return values
