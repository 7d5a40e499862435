"""Archiving NATS JetStream streams and sampling their consumers' lag.

- :func:`archive_jetstream`: every message of a stream into the archive,
  exactly once, resuming from the archive itself, gaps on record.
- :func:`sample_jetstream`: stream state and consumer info over time, for
  lag charts.
- :func:`tls_context`: a client certificate (mutual TLS) and a CA to trust,
  for either.
- :data:`NATS_EVENT_TYPES`: the ``event_type`` of NATS's own messages in an
  archive (subject delete markers, message schedules), for a projection's
  ``ignore``.
"""

from workbench.sources.jetstream._client import tls_context
from workbench.sources.jetstream.archiver import (
    ArchiveProgress,
    Gap,
    JetStreamArchiveResult,
    archive_jetstream,
)
from workbench.sources.jetstream.mapping import NATS_EVENT_TYPES, PRESETS, JetStreamMapping
from workbench.sources.jetstream.sampler import LagSampleResult, sample_jetstream

__all__ = [
    "NATS_EVENT_TYPES",
    "PRESETS",
    "ArchiveProgress",
    "Gap",
    "JetStreamArchiveResult",
    "JetStreamMapping",
    "LagSampleResult",
    "archive_jetstream",
    "sample_jetstream",
    "tls_context",
]
