"""Archivers and snapshotters: live systems → canonical envelopes → archive."""

from workbench.sources.mapping import FieldSpec, parse_mappings
from workbench.sources.redaction import redact

__all__ = ["FieldSpec", "parse_mappings", "redact"]
