"""An archiver run's claim on one source of an archive, and the mapping it archives with.

Two archivers writing one source would interleave: the writer refuses the
second one's positions, so nothing is lost or written twice, but the loser
dies in the middle of its run. A run claims its source for its whole length
instead, and a second run is refused at its start, naming the first.

The mapping a source is archived with (which header or column becomes
``event_type``, ...) is recorded in the side table ``archive_mappings``. A
later run that maps the source otherwise (a cron job's flags against a
manual catch-up's) would leave events mapped two ways, which an append-only
archive cannot undo; it is refused unless it says ``remap``. A run given no
mapping at all takes the recorded one.

>>> import tempfile
>>> root = tempfile.mkdtemp()
>>> with ArchiverRun(root, "jetstream:S", "archive_jetstream") as run:
...     options = run.settle(["preset=raw", "event_type = subject:-1"], given=True)
...     run.record(options)  # once the source holds events
>>> options
['preset=raw', 'event_type=subject:-1']
>>> with ArchiverRun(root, "jetstream:S", "archive_jetstream") as run:
...     run.settle(["preset=cloudevents"], given=False)  # nothing given: the recorded one
['preset=raw', 'event_type=subject:-1']
>>> with ArchiverRun(root, "jetstream:S", "archive_jetstream") as run:
...     run.settle(["preset=raw"], given=True)
Traceback (most recent call last):
...
workbench.errors.ArchiveError: jetstream:S was archived with preset=raw event_type=subject:-1; this run maps it with preset=raw (it drops event_type=subject:-1), and the events would be mapped two ways: give the same mapping (or none, to reuse it), archive into another directory, or remap=True (--remap) to change it from here on
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import socket
from pathlib import Path
from types import TracebackType
from typing import IO

import pyarrow as pa

from workbench.archive._layout import archive_root, decode_partition, source_dir
from workbench.archive.records import MAPPING_SCHEMA
from workbench.archive.writer import append_records, read_records
from workbench.errors import ArchiveError

__all__ = ["ArchiverRun", "canonical", "recorded_mappings"]


def canonical(options: list[str]) -> list[str]:
    """``options`` in one order: ``preset=`` first, then by field, each field's specs in
    the order given (the first that yields a value wins, so their order matters).

    >>> canonical(["stream=subject:1", "event_type=header:ce-type", "preset=raw",
    ...            "event_type=subject:-1"])
    ['preset=raw', 'event_type=header:ce-type', 'event_type=subject:-1', 'stream=subject:1']
    """
    parts = [option.partition("=") for option in options]
    field = [name.strip() for name, _, _ in parts]
    order = sorted(range(len(options)), key=lambda i: (field[i] != "preset", field[i]))
    return [f"{field[i]}={parts[i][2].strip()}" for i in order]


def recorded_mappings(root: str | os.PathLike[str], prefix: str = "") -> dict[str, list[str]]:
    """Each source (whose name starts with ``prefix``) → the mapping it was last archived
    with: the sources a run given no source-specific flags may mean.

    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> with ArchiverRun(root, "postgres:public.messages", "archive_postgres") as run:
    ...     run.record(["preset=message-db"])
    >>> recorded_mappings(root, "postgres:"), recorded_mappings(root, "jetstream:")
    ({'postgres:public.messages': ['preset=message-db']}, {})
    """
    found = {}
    for directory in sorted((Path(root) / "_archive_mappings").glob("source=*")):
        source = decode_partition(directory.name.removeprefix("source="))
        if source.startswith(prefix):
            options = ArchiverRun(root, source, "").recorded()
            if options is not None:
                found[source] = options
    return found


class ArchiverRun:
    """The claim of one run on ``source`` of the archive at ``root`` (a context manager)."""

    def __init__(self, root: str | os.PathLike[str], source: str, archiver: str) -> None:
        self.root = archive_root(root)
        self.source = source
        self.archiver = archiver
        self._file: IO[str] | None = None
        self._created: list[Path] = []

    def __enter__(self) -> ArchiverRun:
        directory = source_dir(self.root, self.source)
        # What this claim creates, so that a run which writes nothing leaves nothing.
        created = [d for d in (directory, self.root) if not d.exists()]
        directory.mkdir(parents=True, exist_ok=True)
        handle = open(directory / ".archiver", "a+")  # held for the whole run
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ArchiveError(
                f"another archiver is writing {self.source} in {self.root} ({holder}); "
                "one run at a time: wait for it to end, or stop it"
            ) from None
        except OSError as exc:  # pragma: no cover - filesystems without locks
            handle.close()
            raise ArchiveError(f"cannot lock {directory}: {exc}") from None
        handle.seek(0)
        handle.truncate()
        started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        handle.write(
            f"{self.archiver}, pid {os.getpid()} on {socket.gethostname()}, since {started}"
        )
        handle.flush()
        self._file, self._created = handle, created
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._file is None:
            return
        lock = Path(self._file.name)
        if self._created and [p.name for p in lock.parent.iterdir()] == [lock.name]:
            lock.unlink()  # under the lock: this run wrote nothing, and leaves nothing
            for directory in self._created:
                with contextlib.suppress(OSError):  # not empty after all: kept
                    directory.rmdir()
        self._file.truncate(0)
        fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
        self._file.close()
        self._file = None

    def recorded(self) -> list[str] | None:
        """The mapping options the source was last archived with (None: not recorded)."""
        rows = read_records(self.root, "archive_mappings", self.source)
        if rows is None or not rows.num_rows:
            return None
        latest = rows.sort_by("recorded_at").column("options")[-1].as_py()
        options: list[str] = json.loads(latest)
        return options

    def settle(self, options: list[str], *, given: bool, remap: bool = False) -> list[str]:
        """The mapping options this run archives with (see :meth:`record`).

        ``given``: the caller chose ``options`` (else they are defaults, and a
        recorded mapping wins). A given mapping that differs from the recorded
        one is refused unless ``remap``.
        """
        if remap and not given:  # nothing to remap to: it would be ignored
            raise ArchiveError(
                "remap (--remap) goes with a preset or a mapping to archive with from here on "
                "(--preset, --map)"
            )
        mine = canonical(options)
        recorded = self.recorded()
        if recorded is not None and not given:
            return recorded
        if recorded is not None and recorded != mine and not remap:
            changes = [
                f"{verb} {' '.join(options)}"
                for verb, options in (
                    ("adds", [o for o in mine if o not in recorded]),
                    ("drops", [o for o in recorded if o not in mine]),
                )
                if options
            ]
            raise ArchiveError(
                f"{self.source} was archived with {' '.join(recorded)}; this run maps it with "
                f"{' '.join(mine)} (it {' and '.join(changes) or 'orders them otherwise'}), "
                "and the events would be mapped two ways: give the same "
                "mapping (or none, to reuse it), archive into another directory, or "
                "remap=True (--remap) to change it from here on"
            )
        return mine

    def record(self, options: list[str]) -> None:
        """Record ``options`` (from :meth:`settle`) as the source's mapping, unless it is
        already; call it once the source holds events (a run that wrote none leaves
        no mapping behind to hold the next run to)."""
        mine = canonical(options)
        if self.recorded() == mine:
            return
        row = {
            "source": self.source,
            "recorded_at": dt.datetime.now(dt.UTC),
            "archiver": self.archiver,
            "options": json.dumps(mine),
        }
        append_records(
            self.root, "archive_mappings", self.source, pa.Table.from_pylist([row], MAPPING_SCHEMA)
        )
