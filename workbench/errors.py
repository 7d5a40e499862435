"""The exceptions a user can cause, one class per kind of mistake.

Every :class:`WorkbenchError` is a user-facing problem: the CLI prints its
message on one line and exits with code 2. Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

__all__ = [
    "ArchiveError",
    "DiffError",
    "EnvelopeError",
    "MappingError",
    "ProjectionError",
    "SourceError",
    "WorkbenchError",
]


class WorkbenchError(Exception):
    """A problem with the user's input or environment, told in one line."""


class EnvelopeError(WorkbenchError):
    """Records that do not fit the canonical envelope."""


class ArchiveError(WorkbenchError):
    """An archive that cannot be read or a write it must refuse."""


class DiffError(WorkbenchError):
    """A diff that cannot be run: an unreadable side, a missing key column, a bad option."""


class MappingError(WorkbenchError):
    """A ``--map FIELD=SPEC`` that cannot be understood."""


class SourceError(WorkbenchError):
    """A live source (NATS, Postgres) that cannot be reached or read."""


class ProjectionError(WorkbenchError):
    """A projection that cannot be loaded, is ill-defined, or failed on an event."""
