"""The Typer application, its sub-command groups, and the error boundary."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from workbench._text import python_ready, unmistakable
from workbench.errors import WorkbenchError
from workbench.sources.redaction import redact

if TYPE_CHECKING:
    import polars as pl

__all__ = [
    "app",
    "archive_app",
    "console",
    "err_console",
    "frame_table",
    "notice",
    "progress_bar",
    "run",
    "sample_app",
    "snapshot_app",
]

#: Off a terminal rich assumes 80 columns and folds every id in a table; a log or a pipe
#: (grep, less -S) is better served by whole lines.
_PIPE_WIDTH = 1000


#: The exit code when the reader of the output went away (``| head``): 128 + SIGPIPE, as
#: a shell reports a command killed by it; rich's own choice, 1, reads as "found something".
BROKEN_PIPE = 141


class _Console(Console):
    def on_broken_pipe(self) -> None:
        self.quiet = True
        _silence_stdout()
        raise SystemExit(BROKEN_PIPE)

    def print(self, *objects: Any, **options: Any) -> None:
        # Text from the archive (an event type, a source name) may hold control
        # characters: an escape sequence would reach the terminal, a newline split a line.
        # Nor is it markup: "[urgent] fix" or a JSON array "[true, null]" in a value
        # printed as " fix" and "" (a caller's own markup asks with markup=True).
        options.setdefault("markup", False)
        super().print(*(printable(o) if isinstance(o, str) else o for o in objects), **options)


#: Control characters (but tab and newline, which layout uses) as their escapes: C0 with
#: carriage return (it would let a value overwrite its line), DEL and C1.
_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0)]}


def printable(text: str, *, newlines: bool = True) -> str:
    r"""``text`` with control characters escaped, so it cannot drive the terminal.

    >>> printable("Hidden\x1b[8mX"), printable("a\nb", newlines=False), printable("ok\rFAKE")
    ('Hidden\\x1b[8mX', 'a\\nb', 'ok\\x0dFAKE')
    """
    text = text.translate(_CONTROL)
    return text if newlines else text.replace("\n", "\\n")


def _silence_stdout() -> None:
    """Point stdout at /dev/null: flushing it at exit would fail on the closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor (run in-process, captured)
        pass


def _to_devnull() -> bool:
    """Whether stdout's file descriptor is /dev/null (where rich points a closed pipe)."""
    try:
        out, null = os.fstat(sys.stdout.fileno()), os.stat(os.devnull)
    except (OSError, ValueError):  # no file descriptor (run in-process, captured)
        return False
    return (out.st_rdev, out.st_ino) == (null.st_rdev, null.st_ino)


def _stdout_is_closed() -> bool:
    """Whether stdout's reader went away (rather than some other pipe of the command)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return True
    except (OSError, ValueError):
        return False
    return False


def _console(*, stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and not os.environ.get("COLUMNS")
    # No emoji codes and no markup in what users typed: paths like "[x]" or ":smile:" print as is.
    return _Console(stderr=stderr, emoji=False, width=_PIPE_WIDTH if wide else None)


console = _console(stderr=False)
err_console = _console(stderr=True)

# Typer's help off a terminal is 80 columns, where its tables cut option names short
# (`--max-differenc…`): give a page or a pipe room, as the tables above get.
if (
    not sys.stdout.isatty()
    and not os.environ.get("COLUMNS")
    and not os.environ.get("TERMINAL_WIDTH")
):
    import typer.rich_utils

    typer.rich_utils.MAX_WIDTH = 120


#: The longest WORKBENCH_LOG_EVERY: a day.
_LOG_EVERY_MOST = 86_400.0


class _Progress(Progress):
    """A rich progress bar that, off a terminal, logs a line every ``WORKBENCH_LOG_EVERY`` seconds.

    Rich draws nothing off a terminal until the work ends, so a ``--follow``
    run in ``docker logs`` or under systemd would say nothing for hours. The
    line names the task last updated; a step that reports nothing for a while
    (a long safety check) is logged all the same, with the time it has taken.
    """

    def __init__(self, *columns: str | ProgressColumn, transient: bool) -> None:
        # Off a terminal rich's live display draws nothing but a stray blank line at the end.
        live = err_console.is_terminal
        super().__init__(*columns, console=err_console, transient=transient, disable=not live)
        every = os.environ.get("WORKBENCH_LOG_EVERY") or "10"
        try:
            self._log_every = float(every)
        except ValueError:
            self._log_every = math.nan
        # nan logged on every tick; inf and 1e15 overflowed the heartbeat's timer.
        if not 0 <= self._log_every <= _LOG_EVERY_MOST:
            raise WorkbenchError(
                f"WORKBENCH_LOG_EVERY is a number of seconds (0 to {_LOG_EVERY_MOST:.0f}), "
                f"not {every!r}"
            )
        self._logged = time.monotonic()
        self._current: TaskID | None = None
        self._stopped = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def start(self) -> None:
        super().start()
        if not self.console.is_terminal and self._heartbeat is None:
            self._heartbeat = threading.Thread(target=self._beat, name="wb-log", daemon=True)
            self._heartbeat.start()

    def stop(self) -> None:
        self._stopped.set()
        super().stop()

    def _beat(self) -> None:
        while not self._stopped.wait(max(self._log_every / 2, 0.05)):
            if self._current is not None:
                self._log(self._current)

    def add_task(self, description: str, *args: Any, **kwargs: Any) -> TaskID:
        task_id = super().add_task(description, *args, **kwargs)
        self._current = task_id
        return task_id

    def update(self, task_id: TaskID, **fields: Any) -> None:
        super().update(task_id, **fields)
        self._current = task_id
        self._log(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._current = task_id
        self._log(task_id)

    def _log(self, task_id: TaskID) -> None:
        now = time.monotonic()
        if self.console.is_terminal or now - self._logged < self._log_every:
            return
        self._logged = now
        task = self._tasks[task_id]
        line = task.description
        if task.total:
            line += f": {task.completed:,.0f} of {task.total:,.0f}"
        elif task.completed:
            line += f": {task.completed:,.0f}"
        if task.fields.get("info"):
            line += f" ({task.fields['info']})"
        line += f", {task.elapsed or 0:,.0f}s"
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)


def progress_bar(*columns: str | ProgressColumn, transient: bool = True) -> Progress:
    """The CLI's progress bar, on stderr: by default description, bar, done/total, time."""
    if not columns:
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
    return _Progress(*columns, transient=transient)


def frame_table(
    frame: pl.DataFrame,
    title: str,
    rows: int | None = None,
    *,
    total: int | None = None,
    exact: bool = False,
    more: str = "",
) -> Table:
    """A frame as a rich table: its first ``rows`` rows, values whole and literal.

    Polars' own repr cuts strings at 30 characters; a key to pass to
    ``--explain`` or a stream id to grep must print whole, and ``[x]`` in a
    value is not markup. ``total``: the rows there are, when ``frame`` holds
    only the first. ``exact``: numbers and times in full (a diff's sides that
    differ in the fifth digit or the microsecond must not print the same).
    ``more``: how to see the rest, said when some rows are left out.
    """
    shown = frame if rows is None else frame.head(rows)
    total = frame.height if total is None else total
    count = f"first {shown.height} of {total:,}" if total > shown.height else f"{total:,}"
    if more and total > shown.height:
        count += f"; {more}"
    table = Table(title=f"{title} ({count})", title_justify="left")
    for name, dtype in shown.schema.items():
        table.add_column(
            name,
            overflow="fold",
            max_width=64,  # a category-UUID stream id
            justify="right" if dtype.is_numeric() else "left",
        )
    for row in python_ready(shown).rows():
        table.add_row(*(Text(cell_text(v, exact)) for v in row))
    return table


def cell_text(value: object, exact: bool = False) -> str:
    """A value as a table cell; ``exact`` (a diff's rows) also tells apart what prints
    alike: null from an empty text, and a text's edge spaces (``'agent x '``).

    >>> [cell_text(v, exact=True) for v in (None, "", "agent x ", "a b", 2)]
    ['null', "''", "'agent x '", 'a b', '2']
    """
    if isinstance(value, str):
        value = printable(value, newlines=False)  # a cell stays one line
    if value is None:
        return "null" if exact else ""
    if exact:
        if isinstance(value, str):
            return unmistakable(value)
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else str(value)
    if isinstance(value, float):  # 19,078 rather than 1.908e+04: a lag read at a glance
        return f"{value:,.0f}" if abs(value) >= 1e3 else f"{value:.4g}"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return str(value)


@contextlib.contextmanager
def sigterm_as_interrupt(*, sigint: bool = False) -> Iterator[threading.Event]:
    """SIGTERM (timeout, systemd, Kubernetes) raises KeyboardInterrupt while the block runs,
    so the command ends as after Ctrl-C: it keeps what it did and says so. Raised here,
    not re-sent as SIGINT, which a job started in the background ignores.

    The event it yields is set by the signal; with ``sigint``, Ctrl-C's too, so that a
    driver turning it into an error of its own (libpq's "canceling statement") is told
    apart from a real failure (left alone otherwise: asyncio cancels its task on it).
    """
    signalled = threading.Event()
    if threading.current_thread() is not threading.main_thread():  # only it gets signals
        yield signalled
        return

    def interrupt(signum: int, frame: object) -> None:
        signalled.set()
        raise KeyboardInterrupt

    signals = (signal.SIGTERM, signal.SIGINT) if sigint else (signal.SIGTERM,)
    previous = {s: signal.signal(s, interrupt) for s in signals}
    try:
        yield signalled
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def refuse_without(ctx: typer.Context, needed: str, present: bool, *names: str) -> None:
    """Refuse options (by parameter name) given on the command line that only mean
    something with ``needed``, when ``present`` says it is not: they would be ignored."""
    if present:
        return
    for param in ctx.command.params:
        if param.name not in names:
            continue
        source = ctx.get_parameter_source(param.name)  # typer's own click: known by name
        if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
            flag = "/".join([*param.opts, *getattr(param, "secondary_opts", [])])
            raise WorkbenchError(f"{flag} goes with {needed}; without it, it does nothing")


def notice(label: str, message: str, *, style: str = "bold yellow", stderr: bool = True) -> None:
    """Print ``label: message`` with the label styled and ``message`` taken literally."""
    (err_console if stderr else console).print(
        Text.assemble((f"{label}:", style), " ", printable(message)), soft_wrap=True
    )


def _flag_types_unshown() -> None:
    """Typer 0.2x's rich help shows a type beside every flag (``--resume <bool>``), which
    reads as taking a value (``--resume true`` is then refused); Click's plain help shows
    none. Show none here too, where that Typer is installed."""
    option = getattr(getattr(typer, "core", None), "TyperOption", None)
    shown = getattr(option, "display_type_rich", None)
    if option is None or shown is None or getattr(shown, "_flags_unshown", False):
        return

    def display_type_rich(self: Any, ctx: Any) -> str | None:
        return None if self.is_flag and not self.count else shown(self, ctx)

    display_type_rich._flags_unshown = True  # type: ignore[attr-defined]
    option.display_type_rich = display_type_rich


_flag_types_unshown()

app = typer.Typer(
    name="workbench",
    help="Replay, diff and check event-sourced systems from Parquet archives.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(asked: bool) -> None:
    if asked:
        from workbench import __version__

        console.print(f"workbench {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Replay, diff and check event-sourced systems from Parquet archives."""


archive_app = typer.Typer(help="Archive a live event store into Parquet.", no_args_is_help=True)
snapshot_app = typer.Typer(help="Snapshot a live read model into Parquet.", no_args_is_help=True)
sample_app = typer.Typer(help="Sample consumer lag into the archive.", no_args_is_help=True)
app.add_typer(archive_app, name="archive")
app.add_typer(snapshot_app, name="snapshot")
app.add_typer(sample_app, name="sample")


# Click's usage errors: vendored by Typer since 0.2x, Click's own before.
try:
    from typer._click.exceptions import NoArgsIsHelpError as _NoArgsIsHelp
    from typer._click.exceptions import UsageError as _UsageError
except ImportError:  # pragma: no cover - an older Typer, on Click
    from click.exceptions import UsageError as _UsageError  # type: ignore[no-redef]

    try:
        from click.exceptions import NoArgsIsHelpError as _NoArgsIsHelp  # type: ignore[no-redef]
    except ImportError:
        _NoArgsIsHelp = _UsageError  # type: ignore[assignment,misc]


def _interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is DuckDB's answer to Ctrl-C while a query ran.

    >>> import duckdb
    >>> errors = duckdb.InterruptException("x"), RuntimeError("Query interrupted"), ValueError()
    >>> [_interrupted(e) for e in errors]
    [True, True, False]
    """
    # A command that never loaded DuckDB cannot have been interrupted in it; nor is the
    # CLI made to load DuckDB (0.15 s) only to ask.
    duckdb = sys.modules.get("duckdb")
    return (duckdb is not None and isinstance(exc, duckdb.InterruptException)) or (
        isinstance(exc, RuntimeError) and str(exc).startswith("Query interrupted")
    )


#: The longest error line: a 100 KB value echoed whole is no line anyone reads.
_ERROR_CHARS = 1_000


def _capped(text: str) -> str:
    """``text``, cut to :data:`_ERROR_CHARS` with what was left out counted.

    >>> _capped("x" * 1_010)[-30:]
    'xxxxxxxx… (10 more characters)'
    """
    if len(text) <= _ERROR_CHARS:
        return text
    return f"{text[:_ERROR_CHARS]}… ({len(text) - _ERROR_CHARS:,} more characters)"


def _no_space(exc: BaseException) -> str:
    """The line of ``exc`` that says which file a full disk refused."""
    lines = [line for line in str(exc).splitlines() if "No space left" in line]
    return (lines or [str(exc)])[0].strip()


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; user errors become one line and code 2."""
    # Importing the command modules registers them on the apps above.
    from workbench.cli import commands  # noqa: F401

    to_devnull = _to_devnull()
    try:
        with sigterm_as_interrupt():  # every command stops on SIGTERM as on Ctrl-C: 130
            code = app(
                args=argv if argv is not None else sys.argv[1:],
                prog_name="workbench",
                standalone_mode=False,  # usage errors come here, to be told in one line
            )
        return code if isinstance(code, int) else 0
    except SystemExit as exc:
        code = exc.code
        if code == 1 and not to_devnull and _to_devnull():
            # Rich's answer to a closed pipe while Typer printed help (`--help | head`):
            # stdout pointed at /dev/null, and exit 1, which would read as a finding.
            return BROKEN_PIPE
        return code if isinstance(code, int) else (0 if code is None else 2)
    except _NoArgsIsHelp:  # `workbench archive` alone: Typer printed its help
        return 2
    except _UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "workbench"
        message = _capped(exc.format_message().rstrip("."))
        notice("error", redact(f"{message} (see {where} --help)"))
        return 2
    except typer.Abort:  # Ctrl-C where the command line was read
        return 130
    except WorkbenchError as exc:
        notice("error", _capped(redact(str(exc))), style="bold red")
        return 2
    except BrokenPipeError as exc:
        if not _stdout_is_closed():  # another pipe of the command broke: an error
            notice("error", redact(f"{exc.strerror or exc}"), style="bold red")
            return 2
        _silence_stdout()  # printed other than through rich
        return BROKEN_PIPE
    except OSError as exc:  # a path the user gave: not a directory, no permission, disk full
        notice(
            "error",
            redact(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")),
            style="bold red",
        )
        return 2
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:  # a bug, not a usage error: one line and a code of its own
        if _interrupted(exc):  # Ctrl-C inside a DuckDB query: DuckDB raises its own error
            return 130
        if "No space left on device" in str(exc):  # DuckDB's own IO error, not an OSError
            notice("error", redact(_no_space(exc)), style="bold red")
            return 2
        if os.environ.get("WORKBENCH_TRACEBACK"):  # where, and still the code of a bug
            traceback.print_exception(exc)
            return 3
        first = (str(exc).strip().splitlines() or [""])[0]
        notice(
            "internal error",
            redact(f"{type(exc).__name__}: {first}")
            + " (a bug in workbench: rerun with WORKBENCH_TRACEBACK=1 to see where, and report it)",
            style="bold red",
        )
        return 3
    return 0
