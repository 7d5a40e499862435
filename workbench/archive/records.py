"""Schemas of the archive's side tables: what archivers record beside events.

Side tables live under ``<root>/_<table>/source=<name>/`` (appended with
:func:`workbench.archive.append_records`) and readers see each as a DuckDB
view of the same name.

- ``gap_records``: positions a source lost or never had (archivers).
- ``stream_samples`` / ``consumer_samples``: JetStream stream state and
  consumer info over time (``workbench sample jetstream``), for lag.
- ``archive_mappings``: the mapping each source is archived with, a row
  each time it is first used (:mod:`workbench.archive.runs`).
"""

from __future__ import annotations

from typing import Final

import pyarrow as pa

__all__ = [
    "CONSUMER_SAMPLE_SCHEMA",
    "GAP_REASONS",
    "GAP_SCHEMA",
    "MAPPING_SCHEMA",
    "SIDE_TABLE_SCHEMAS",
    "STREAM_SAMPLE_SCHEMA",
]

_TS = pa.timestamp("us", tz="UTC")

#: Why positions are missing from a source: retention loss (the source's
#: first position moved past them), deletion (removed inside the range),
#: a jump in the sequence, a sequence value taken by a transaction that
#: rolled back (Postgres; harmless), positions the source never issued (a
#: JetStream stream created with ``first_seq``, a mirror started at a sequence
#: or filtered to some subjects; harmless), events that committed after the
#: archive had recorded their positions as missing (Postgres: a transaction that
#: held its position past the settle grace; lost to the archive for good).
GAP_REASONS: Final[tuple[str, ...]] = (
    "retention",
    "deleted",
    "sequence-jump",
    "rolled-back",
    "never-issued",
    "committed-late",
)

#: ``gap_records``: one row per missing range, inclusive.
GAP_SCHEMA: Final[pa.Schema] = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("first_missing", pa.int64(), nullable=False),
        pa.field("last_missing", pa.int64(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detected_at", _TS, nullable=False),
        pa.field("detail", pa.string()),
    ]
)

#: ``stream_samples``: a JetStream stream's state at one instant.
STREAM_SAMPLE_SCHEMA: Final[pa.Schema] = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("sampled_at", _TS, nullable=False),
        pa.field("stream", pa.string(), nullable=False),
        pa.field("messages", pa.int64()),
        pa.field("bytes", pa.int64()),
        pa.field("first_seq", pa.int64()),
        pa.field("last_seq", pa.int64()),
        pa.field("last_ts", _TS),
        pa.field("consumer_count", pa.int32()),
        # When the stream was created: another value under the same name is another stream.
        pa.field("created", _TS),
    ]
)

#: ``consumer_samples``: one consumer's info at one instant.
CONSUMER_SAMPLE_SCHEMA: Final[pa.Schema] = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("sampled_at", _TS, nullable=False),
        pa.field("stream", pa.string(), nullable=False),
        pa.field("consumer", pa.string(), nullable=False),
        pa.field("num_pending", pa.int64()),
        pa.field("num_ack_pending", pa.int64()),
        pa.field("num_redelivered", pa.int64()),
        pa.field("num_waiting", pa.int64()),
        pa.field("delivered_stream_seq", pa.int64()),
        pa.field("ack_floor_stream_seq", pa.int64()),
        pa.field("stream_last_seq", pa.int64()),
        pa.field("last_active", _TS),
    ]
)


#: ``archive_mappings``: the mapping a source is archived with from ``recorded_at`` on.
MAPPING_SCHEMA: Final[pa.Schema] = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("recorded_at", _TS, nullable=False),
        pa.field("archiver", pa.string(), nullable=False),
        # JSON list of "preset=NAME" and "FIELD=SPEC" options, in canonical order.
        pa.field("options", pa.string(), nullable=False),
    ]
)


#: The side tables of an archive, by name: each is a view, empty until written.
SIDE_TABLE_SCHEMAS: Final[dict[str, pa.Schema]] = {
    "gap_records": GAP_SCHEMA,
    "stream_samples": STREAM_SAMPLE_SCHEMA,
    "consumer_samples": CONSUMER_SAMPLE_SCHEMA,
    "archive_mappings": MAPPING_SCHEMA,
}
