"""Analysis of an archive: gaps, duplicates, schema drift, lag, causation.

:func:`open_archive` returns an :class:`Archive`, the archive reader with
these checks as methods.
"""

from workbench.analysis.archive import Archive, open_archive

__all__ = ["Archive", "open_archive"]
