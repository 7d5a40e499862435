"""The notebook-facing archive: the reader plus the checks as methods."""

from __future__ import annotations

import os

from workbench.archive import ArchiveReader

__all__ = ["Archive", "open_archive"]


class Archive(ArchiveReader):
    """An opened archive: SQL over ``events``, Polars frames, and the checks.

    >>> import tempfile
    >>> archive = open_archive(tempfile.mkdtemp())
    >>> len(archive), archive.sources
    (0, [])
    """


def open_archive(path: str | os.PathLike[str]) -> Archive:
    """Open the archive at ``path`` (a directory written by the archivers)."""
    return Archive(path)
