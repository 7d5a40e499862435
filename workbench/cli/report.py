"""``workbench report``: checks, replay and diff in one offline HTML file."""

from __future__ import annotations

from pathlib import Path

import typer

from workbench._text import did_you_mean
from workbench.cli._app import app, console, progress_bar, refuse_without
from workbench.cli.check import ONLY, parse_checks
from workbench.cli.diff import (
    ABS_TOL,
    COLUMNS,
    IGNORE,
    LIVE_POSITION,
    NORMALIZE,
    REL_TOL,
    comparison,
    split_columns,
)
from workbench.errors import WorkbenchError


@app.command()
def report(
    ctx: typer.Context,
    archive: Path = typer.Option(..., "--archive", help="Archive root directory."),
    out: Path = typer.Option(Path("report.html"), "--out", help="The HTML file to write."),
    projection: str | None = typer.Option(
        None, "--projection", help="Replay this projection (FILE.py:Class) into --into."
    ),
    into: Path | None = typer.Option(
        None, "--into", help="DuckDB file for the replay (default: --out's name, .duckdb)."
    ),
    source: str | None = typer.Option(
        None, "--source", help="The source to replay, when the archive holds several."
    ),
    live: str | None = typer.Option(
        None,
        "--live",
        help="Live read model to diff with: postgresql://…#SCHEMA.TABLE, .parquet, FILE.duckdb:SCHEMA.TABLE.",
    ),
    key: list[str] = typer.Option(
        [], "--key", help="Key column(s) of the diff: COL[,COL], or --key repeated."
    ),
    table: str | None = typer.Option(
        None, "--table", help="The projection's table to diff (default: its only or first table)."
    ),
    columns: list[str] = COLUMNS,
    ignore: list[str] = IGNORE,
    abs_tol: list[str] = ABS_TOL,
    rel_tol: list[str] = REL_TOL,
    normalize: list[str] = NORMALIZE,
    live_position: int | None = LIVE_POSITION,
    safety: bool = typer.Option(False, "--check-safety", help="Also run the replay-safety check."),
    external_causes: list[str] = typer.Option(
        [],
        "--external-causes",
        help="Glob of causation ids outside the event store (commands: 'cmd-*'), as for "
        "workbench check. Repeatable.",
    ),
    accept_gaps: str = typer.Option(
        "", "--accept-gaps", help="Comma-separated expected gap reasons, as for workbench check."
    ),
    only: str = ONLY,
) -> None:
    """Write one self-contained HTML report: checks, charts, and replay and diff when given.

    Exit 1 when the diff finds differences, or the projection is unsafe or leaves events uncovered.

    Archive checks fail a run only through `workbench check --fail-on`.
    """
    refuse_without(ctx, "--projection", projection is not None, "into", "safety", "table")
    from workbench import diff as run_diff
    from workbench.analysis import open_archive
    from workbench.diff.sides import check_side
    from workbench.replay import check_replay_safety, load_projection, replay
    from workbench.report import replay_section, safety_section, write_report
    from workbench.report.build import report_path

    report_path(out)  # before a replay, not after it
    keys = split_columns(key, "--key")
    if (live is None) != (not keys):
        raise WorkbenchError("--live and --key go together")
    checks = parse_checks(only, "--only")
    if live is not None and projection is None:
        raise WorkbenchError("--live needs --projection: the candidate is the projection's replay")
    if projection is not None and into is None:
        into = out.with_suffix(".duckdb")
    if into is not None and into.resolve() == out.resolve():
        raise WorkbenchError(
            f"--out and --into are both {out}: the report would replace the replay"
        )
    compare = comparison(columns, ignore, abs_tol, rel_tol, normalize)
    if live is not None and keys:  # before the replay, not after it
        present = check_side(live, "live")
        named = {
            "--key": keys,
            "--columns": compare["columns"] or [],
            **{
                f"--{o.replace('_', '-')}": list(compare[o])
                for o in ("abs_tol", "rel_tol", "normalize")
            },
        }
        for option, names in named.items():
            missing = [n for n in names if n not in present]
            if missing:
                raise WorkbenchError(
                    f"{option} {missing[0]}: the live side has no such column"
                    f"{did_you_mean(missing[0], present)}"
                )
    candidate = load_projection(projection) if projection is not None else None
    if candidate is not None and table is not None:
        tables = _tables(candidate)
        if table not in tables:
            raise WorkbenchError(
                f"--table {table}: {candidate.name} has no such table"
                f"{did_you_mean(table, tables)}; its tables: {', '.join(tables)}"
            )

    opened = open_archive(archive)
    extra = []
    diff = None
    findings: list[str] = []
    with progress_bar() as bar:
        if candidate is not None and into is not None:
            task = bar.add_task("replaying", total=None)
            result = replay(
                opened,
                candidate,
                into=into,
                source=source,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
            extra.append(replay_section(result))
            if not result.coverage.ok:  # as `workbench replay` judges a run
                findings.append(
                    f"{result.coverage.uncovered_events:,} events no handler or upcaster covers"
                )
            if safety:
                bar.update(task, description="checking replay safety", completed=0, total=None)
                checked = check_replay_safety(
                    opened,
                    candidate,
                    source=source,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )
                extra.append(safety_section(checked))
                if not checked.ok:
                    findings.append("the projection is not replay-safe")
            if live is not None and keys:
                bar.update(task, description="diffing with live")
                name = table or _default_table(candidate, live)
                diff = run_diff(
                    f"{into}:{result.schema}.{name}",
                    live,
                    key=keys,
                    **compare,
                    live_position=live_position,
                )
        task = bar.add_task("checks", total=None)
        path = write_report(
            out,
            opened,
            diff=diff,
            extra=extra,
            progress=lambda name: bar.update(task, description=f"check: {name}"),
            external_causes=external_causes,
            accept_gaps=[r.strip() for r in accept_gaps.split(",") if r.strip()],
            only=checks,
        )
    if diff is not None and not diff.summary.is_identical:
        findings.append(f"the diff found {diff.summary.verdict}")
    replayed_into = f" (and the replay into {into})" if projection is not None else ""
    console.print(f"wrote {path}{replayed_into}", highlight=False)
    if findings:
        console.print("; ".join(findings), highlight=False)
        raise typer.Exit(1)


def _default_table(projection: object, live: str) -> str:
    """The projection table named like the live table, else its first table."""
    tables = _tables(projection)
    live_name = Path(live.rsplit("#", 1)[-1].rsplit(":", 1)[-1]).stem.rsplit(".", 1)[-1]
    return live_name if live_name in tables else tables[0]


def _tables(projection: object) -> list[str]:
    """The names of the tables a projection writes."""
    declared = projection.tables  # type: ignore[attr-defined]
    # A SqlProjection holds a name → SQL dict; a handler Projection declares Table objects.
    return list(declared) if isinstance(declared, dict) else [t.name for t in declared()]
