"""Archivers and snapshotters: live systems → canonical envelopes → archive."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.sources.redaction import redact

if TYPE_CHECKING:
    from workbench.sources.mapping import FieldSpec, parse_mappings

__all__ = ["FieldSpec", "parse_mappings", "redact"]


def __getattr__(name: str) -> object:
    # The mapping loads Arrow; redact() is wanted by every CLI error line, Arrow is not.
    if name in {"FieldSpec", "parse_mappings"}:
        from workbench.sources import mapping

        return getattr(mapping, name)
    raise AttributeError(f"module 'workbench.sources' has no attribute {name!r}")
