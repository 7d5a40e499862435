"""The archive layer: Parquet files of envelopes, append-only, hive-partitioned.

``<root>/source=<name>/date=<YYYY-MM-DD>/<first>-<last>.parquet``; each file
is written atomically and its name says exactly which positions it holds, so
the archive is its own checkpoint.
"""

from workbench.archive._layout import (
    DataFile,
    atomic_file,
    refuse_inside_archive,
    unknown_source,
    write_atomically,
)
from workbench.archive.compaction import CompactResult, compact
from workbench.archive.pipeline import WritePipeline
from workbench.archive.reader import ArchiveReader
from workbench.archive.records import (
    CONSUMER_SAMPLE_SCHEMA,
    GAP_REASONS,
    GAP_SCHEMA,
    MAPPING_SCHEMA,
    STREAM_SAMPLE_SCHEMA,
)
from workbench.archive.runs import ArchiverRun, recorded_mappings
from workbench.archive.writer import ArchiveWriter, append_records, read_records

__all__ = [
    "CONSUMER_SAMPLE_SCHEMA",
    "GAP_REASONS",
    "GAP_SCHEMA",
    "MAPPING_SCHEMA",
    "STREAM_SAMPLE_SCHEMA",
    "ArchiveReader",
    "ArchiveWriter",
    "ArchiverRun",
    "CompactResult",
    "DataFile",
    "WritePipeline",
    "append_records",
    "atomic_file",
    "compact",
    "read_records",
    "recorded_mappings",
    "refuse_inside_archive",
    "unknown_source",
    "write_atomically",
]
