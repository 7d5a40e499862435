"""Schema drift: the shape of ``data`` per event type and version, inferred from the data.

Four tables, all computed in DuckDB from the top-level fields of ``data``,
each per ``source`` (two services may publish one type in two shapes, and
one source's versions say nothing about another's):

- ``fields``: per ``source``, ``event_type``, ``schema_version`` and field,
  its JSON type (the most common non-null one, and all seen), how many
  events carry it and the share of events where it is missing or null.
- ``changes``: between consecutive versions of a type, fields ``added``,
  ``removed``, ``renamed`` (likely: the only field removed and the only one
  added of the same type) and ``retyped``.
- ``mismatches``: events whose shape does not fit their declared version —
  a field the version always has is missing, a field the version hardly
  ever has is present, or a field has a type the version hardly ever uses —
  with the version the shape does fit, when one does. An event with no
  ``schema_version`` (null: its store's version was missing or not an
  integer) fits no version, so it is always listed, with the version its
  shape fits.
- ``shapes``: versions holding two shapes — a field renamed without a new
  version, or two producers disagreeing: two fields no event carries
  together, each in at least ``MIN_SHAPE_EVENTS`` events and a
  ``tolerance`` share of them, that between them are in at least
  ``1 - tolerance`` of the version's events. Optional fields that are
  sometimes absent are not: together they leave many events without either.
  ``field`` is the one seen first, ``new_field`` the other, from
  ``first_new_position``.

"Always" and "hardly ever" are relative to ``tolerance`` (default 5 %): a
field carried by at least 95 % of a version's events is *required*, one
carried by fewer than 5 % is *foreign* to it.

>>> import tempfile, pyarrow as pa
>>> from workbench.archive import ArchiveReader, ArchiveWriter
>>> root = tempfile.mkdtemp()
>>> data = ['{"a": 1}'] * 30 + ['{"a": 1, "b": "x"}'] * 30 + ['{"a": 1, "b": "x"}']
>>> _ = ArchiveWriter(root, "s").append(pa.table({
...     "global_position": list(range(1, 62)), "recorded_at": list(range(61)),
...     "event_type": ["T"] * 61, "schema_version": [1] * 30 + [2] * 30 + [1], "data": data}))
>>> drift = find_drift(ArchiveReader(root))
>>> drift.changes.select("from_version", "to_version", "change", "field").rows()
[(1, 2, 'added', 'b')]
>>> drift.mismatches.select("global_position", "unexpected", "likely_version").rows()
[(61, ['b'], 2)]

The same field under two names in one version, the second from position 31:

>>> root = tempfile.mkdtemp()
>>> _ = ArchiveWriter(root, "s").append(pa.table({
...     "global_position": list(range(1, 61)), "recorded_at": list(range(60)),
...     "event_type": ["T"] * 60, "data": ['{"a": 1}'] * 30 + ['{"a_cents": 100}'] * 30}))
>>> drift = find_drift(ArchiveReader(root))
>>> drift.shapes.select("field", "present", "new_field", "new_present", "first_new_position").rows()
[('a', 30, 'a_cents', 30, 31)]
>>> drift.found, drift.mismatches.height
(1, 0)
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final

import polars as pl
import pyarrow as pa

from workbench._text import as_text
from workbench.analysis._unchecked import Need, find_unchecked, not_checked_lines
from workbench.analysis.result import CheckResult
from workbench.archive import ArchiveReader, recorded_mappings
from workbench.errors import ArchiveError

if TYPE_CHECKING:
    import altair as alt

__all__ = ["MIN_SHAPE_EVENTS", "Drift", "find_drift"]

#: Fewest events each of two exclusive fields needs before they count as two shapes.
MIN_SHAPE_EVENTS: Final[int] = 20

# An event's shape is its payload's top-level keys and their JSON types, in order (none
# for a payload that is no object). Events are counted per distinct shape in one
# streaming pass, so every later table is computed from a few shapes, not from a row
# per event and field (that took a GB per million events). ``h`` finds an event's
# shape again.
_SHAPE = "{{'fields': json_keys({data}::json), 'types': json_type({data}::json, '$.*')}}"

_SIGNATURES = f"""
select source, event_type, schema_version, shape, hash(shape) as h, count(*) as n,
       min(global_position) as first_position, max(global_position) as last_position
from (
    select source, global_position, event_type, schema_version,
           {_SHAPE.format(data="data")} as shape
    from events where event_type is not null and json_valid(data)
)
group by all
"""

# One row per (shape, top-level field) with a portable JSON type name, ``n`` events
# carrying it. Integers and fractions are one type, number, as in JSON:
# System.Text.Json writes a whole double as 1, so "integer" against "number" would
# flag every .NET event store as drifting.
_KV = """
select * exclude (json_type),
       case when json_type in ('UBIGINT', 'BIGINT', 'HUGEINT', 'UHUGEINT', 'DOUBLE') then 'number'
            when json_type = 'VARCHAR' then 'string'
            else lower(json_type) end as type
from (
    select source, event_type, schema_version, h, n, first_position, last_position,
           unnest(shape.fields) as field, unnest(shape.types) as json_type,
           unnest(range(len(shape.fields))) as i
    from {signatures}
) s
where not exists (select 1 from {versions} v where v.source = s.source and v.field = s.field)
-- A key repeated in one payload ({{"a": 1, "a": 2}}) is one field, of its last value's type,
-- as JSON.parse and json.loads read it (else present outnumbered the events).
qualify row_number() over (partition by source, event_type, schema_version, h, field
                           order by i desc) = 1
"""

# Events per source, type and version: every event of a type, whatever its data.
# Every table is per source: two services may publish one type in two shapes.
_COUNTS = """
select source, event_type, schema_version, count(*) as events
from events where event_type is not null group by all
"""

_FIELDS = """
with types as (
    select source, event_type, schema_version, field, type, sum(n) as n from {kv} group by all
)
select t.source, t.event_type, t.schema_version, t.field,
       arg_max(t.type, t.n) filter (where t.type <> 'null') as type,
       list(t.type order by t.n desc) filter (where t.type <> 'null') as types,
       sum(t.n)::bigint as present, c.events,
       1 - coalesce(sum(t.n) filter (where t.type <> 'null'), 0)::double / c.events
           as null_share
from types t join ({counts}) c
    on c.source = t.source and c.event_type = t.event_type
   and c.schema_version is not distinct from t.schema_version
group by t.source, t.event_type, t.schema_version, t.field, c.events
"""

_CHANGES = """
with f as (
    select *, present::double / events as share from {fields}
),
versions as (
    select source, event_type, schema_version as v,
           lead(schema_version) over (partition by source, event_type order by schema_version) as nv
    from (select distinct source, event_type, schema_version from f where schema_version is not null)
),
core as (select * from f where share >= $tolerance),
removed as (
    select s.source, s.event_type, s.v, s.nv, a.field, a.type from versions s
    join core a on a.source = s.source and a.event_type = s.event_type and a.schema_version = s.v
    where s.nv is not null and not exists (
        select 1 from core b where b.source = s.source and b.event_type = s.event_type
        and b.schema_version = s.nv and b.field = a.field)
),
added as (
    select s.source, s.event_type, s.v, s.nv, b.field, b.type from versions s
    join core b on b.source = s.source and b.event_type = s.event_type and b.schema_version = s.nv
    where not exists (select 1 from core a where a.source = s.source and a.event_type = s.event_type
                      and a.schema_version = s.v and a.field = b.field)
),
renamed as (
    select r.source, r.event_type, r.v, r.nv, r.field, a.field as new_field, r.type
    from removed r join added a using (source, event_type, v, nv, type)
    qualify count(*) over (partition by r.source, r.event_type, r.v, r.type) = 1
        and count(*) over (partition by a.source, a.event_type, a.v, a.field) = 1
        and (select count(*) from removed x where x.source = r.source
             and x.event_type = r.event_type and x.v = r.v
             and x.type is not distinct from r.type) = 1
        and (select count(*) from added y where y.source = r.source
             and y.event_type = r.event_type and y.v = r.v
             and y.type is not distinct from r.type) = 1
)
select source, event_type, v as from_version, nv as to_version, 'renamed' as change, field,
       new_field, type as from_type, type as to_type from renamed
union all
select source, event_type, v, nv, 'removed', field, null, type, null from removed r
where not exists (select 1 from renamed n where n.source = r.source
                  and n.event_type = r.event_type and n.v = r.v and n.field = r.field)
union all
select source, event_type, v, nv, 'added', field, null, null, type from added a
where not exists (select 1 from renamed n where n.source = a.source
                  and n.event_type = a.event_type and n.v = a.v and n.new_field = a.field)
union all
select s.source, s.event_type, s.v, s.nv, 'retyped', a.field, null, a.type, b.type from versions s
join core a on a.source = s.source and a.event_type = s.event_type and a.schema_version = s.v
join core b on b.source = s.source and b.event_type = s.event_type
           and b.schema_version = s.nv and b.field = a.field
where a.type is distinct from b.type
"""

# Per shape: which required fields it lacks, which foreign fields or rare types it
# has, and for the shapes that do not fit, the version they fit; then the events of
# those shapes. Events without a version are a group of their own in `fields` (joins
# are null-safe) and are always listed: they declare no version to fit.
_MISMATCHES = """
with f as (select *, present::double / events as share from {fields}),
typeshare as (
    select source, event_type, schema_version, field, type, sum(n)::double as n
    from {kv} group by all
),
req as (
    select source, event_type, schema_version, list(field order by field) as fields, count(*) as n
    from f where share >= 1 - $tolerance group by all
),
core as (
    select source, event_type, schema_version, list(field order by field) as fields
    from f where share >= $tolerance group by all
),
per_shape as (
    select kv.source, kv.h, kv.event_type, kv.schema_version,
           list(kv.field order by kv.field) as fields,
           list(kv.field order by kv.field) filter (where f.share < $tolerance) as unexpected,
           list(kv.field order by kv.field) filter (
               where kv.type <> 'null' and kv.type is distinct from f.type
                 and ts.n / f.present < $tolerance) as retyped
    from {kv} kv
    join f on f.source = kv.source and f.event_type = kv.event_type and f.field = kv.field
         and f.schema_version is not distinct from kv.schema_version
    join typeshare ts on ts.source = kv.source and ts.event_type = kv.event_type
         and ts.field = kv.field and ts.type = kv.type
         and ts.schema_version is not distinct from kv.schema_version
    group by kv.source, kv.h, kv.event_type, kv.schema_version
),
all_shapes as (
    select s.source, s.h, s.event_type, s.schema_version,
           coalesce(p.fields, []) as fields, coalesce(p.unexpected, []) as unexpected,
           coalesce(p.retyped, []) as retyped,
           list_filter(coalesce(r.fields, []), lambda x: not list_contains(coalesce(p.fields, []), x))
               as missing
    from {signatures} s
    left join per_shape p on p.source = s.source and p.h = s.h and p.event_type = s.event_type
         and p.schema_version is not distinct from s.schema_version
    left join req r on r.source = s.source and r.event_type = s.event_type
         and r.schema_version is not distinct from s.schema_version
),
unfit as (
select a.source, a.h, a.event_type, a.schema_version,
       concat_ws('; ',
           case when a.schema_version is null
                then 'no schema_version (none, or not an integer, in the store)' end,
           case when len(a.missing) > 0 then 'missing ' || array_to_string(a.missing, ', ') end,
           case when len(a.unexpected) > 0
                then 'unexpected ' || array_to_string(a.unexpected, ', ') end,
           case when len(a.retyped) > 0 then 'retyped ' || array_to_string(a.retyped, ', ') end
       ) as reason,
       a.missing, a.unexpected, a.retyped,
       (select min(c.schema_version) from core c
        join req r using (source, event_type, schema_version)
        where c.source = a.source and c.event_type = a.event_type
          and c.schema_version is distinct from a.schema_version
          and c.schema_version is not null
          and list_has_all(a.fields, r.fields) and list_has_all(c.fields, a.fields))
           as likely_version
from all_shapes a
where len(a.missing) > 0 or len(a.unexpected) > 0 or len(a.retyped) > 0
   or a.schema_version is null
)
select e.source, e.global_position, e.event_id, e.event_type, e.schema_version,
       u.* exclude (source, h, event_type, schema_version)
from events e join unfit u on u.source = e.source and u.event_type = e.event_type
     and u.schema_version is not distinct from e.schema_version
     and u.h = hash({shape})
where e.event_type is not null and json_valid(e.data)
"""

# Two shapes under one version (an unversioned rename, or two producers disagreeing):
# fields A and B that no event carries together, each in at least $min_events events
# and a $tolerance share, and between them in nearly every event (>= 1 - $tolerance),
# so one field goes by two names. Independent optional fields fail the last test, and
# a field in almost every event already makes the other's events mismatches.
# Co-occurrence is counted per signature (the candidate fields a shape carries), not
# per pair of events. How many of the old field's events come before the new one's
# first is counted on the events (_RENAMED), for the few pairs found.
_SHAPES = """
with f as (
    select source, event_type, schema_version, field, present, events from {fields}
    where present >= $min_events and present::double / events >= $tolerance
),
pairs as (
    select a.source, a.event_type, a.schema_version, a.events,
           a.field as a_field, a.present as a_present, b.field as b_field, b.present as b_present
    from f a join f b on b.source = a.source and b.event_type = a.event_type
         and b.schema_version is not distinct from a.schema_version and a.field < b.field
    where a.present + b.present between (1 - $tolerance) * a.events and a.events
),
candidates as (
    select source, event_type, schema_version, a_field as field from pairs
    union select source, event_type, schema_version, b_field from pairs
),
per_shape as (
    select kv.source, kv.event_type, kv.schema_version, kv.h, any_value(kv.n) as n,
           any_value(kv.first_position) as first_position,
           any_value(kv.last_position) as last_position, list_sort(list(kv.field)) as fields
    from {kv} kv semi join candidates c on c.source = kv.source
         and c.event_type = kv.event_type and c.field = kv.field
         and c.schema_version is not distinct from kv.schema_version
    group by kv.source, kv.event_type, kv.schema_version, kv.h
),
signatures as (
    select source, event_type, schema_version, fields, sum(n) as n,
           min(first_position) as first_position, max(last_position) as last_position
    from per_shape group by all
),
stats as (
    select p.source, p.event_type, p.schema_version, p.events, p.a_field, p.a_present,
           p.b_field, p.b_present,
           sum(s.n) filter (where list_contains(s.fields, p.a_field)
                              and list_contains(s.fields, p.b_field)) as together,
           min(s.first_position) filter (where list_contains(s.fields, p.a_field)) as a_first,
           max(s.last_position) filter (where list_contains(s.fields, p.a_field)) as a_last,
           min(s.first_position) filter (where list_contains(s.fields, p.b_field)) as b_first,
           max(s.last_position) filter (where list_contains(s.fields, p.b_field)) as b_last
    from pairs p join signatures s on s.source = p.source and s.event_type = p.event_type
         and s.schema_version is not distinct from p.schema_version
    group by all
),
-- The older shape is the one seen first; the new one's first event is where it begins.
select source, event_type, schema_version, events,
           case when a_first < b_first then a_field else b_field end as field,
           case when a_first < b_first then a_present else b_present end as present,
           case when a_first < b_first then a_last else b_last end as last_position,
           case when a_first < b_first then b_field else a_field end as new_field,
           case when a_first < b_first then b_present else a_present end as new_present,
           greatest(a_first, b_first) as first_new_position
from stats where together is null
"""

# A rename happens once: most of the old field's events come before the new field's
# first. Two fields mixed throughout (an email or a phone) are two shapes by design.
_RENAMED = """
select * exclude (old_before), old_before * 2 >= present as renamed from (
    select s.*, count(e.global_position) as old_before
    from {shaped} s left join events e on e.source = s.source and e.event_type = s.event_type
         and e.schema_version is not distinct from s.schema_version
         and e.global_position < s.first_new_position
         and json_valid(e.data) and json_type(e.data::json) = 'OBJECT'
         and json_exists(e.data::json, '/' || replace(replace(s.field, '~', '~0'), '/', '~1'))
    group by all
)
"""

_NO_RENAMES = "select *, true as renamed from {shaped}"

# A field of two JSON types in one version, each in at least a $tolerance share of the
# events carrying it (a rarer type makes its events mismatches instead): one producer
# writes "12.30" where another writes 12.3, and a handler must read both.
_MIXED = """
with t as (
    select source, event_type, schema_version, field, type, sum(n) as n,
           min(first_position) as first_position
    from {kv} where type <> 'null' group by all
),
shared as (
    select *, n / sum(n) over (partition by source, event_type, schema_version, field) as share
    from t
)
select source, event_type, schema_version, field, list(type order by n desc, type) as types,
       list(n order by n desc, type) as events_per_type,
       list(first_position order by n desc, type) as first_positions
from shared where share >= $tolerance
group by all having count(*) > 1
"""


@dataclass(frozen=True, repr=False)
class Drift(CheckResult):
    """Fields per type and version, changes between versions, events that do not fit.

    - ``fields``: ``source, event_type, schema_version, field, type, types,
      present, events, null_share``.
    - ``changes``: ``source, event_type, from_version, to_version, change,
      field, new_field, from_type, to_type``.
    - ``mismatches``: ``source, global_position, event_id, event_type,
      schema_version, reason, missing, unexpected, retyped, likely_version``
      (``reason`` says the rest in words).
    - ``shapes``: ``source, event_type, schema_version, events, field,
      present, last_position, new_field, new_present, first_new_position,
      renamed`` — one row per pair of fields that split a version in two
      shapes; ``renamed`` when most of the old field's events come before the
      new one's first (a rename without a new version: a finding), else the two
      are mixed throughout (one of two fields by design: a note).
    - ``mixed``: ``source, event_type, schema_version, field, types,
      events_per_type, first_positions`` — fields of two or more JSON types in
      one version, each in at least a ``tolerance`` share of the events that
      carry the field (a finding: a handler must read each).
    """

    name: ClassVar[str] = "drift"
    main: ClassVar[str] = "mismatches"

    fields: pl.DataFrame
    changes: pl.DataFrame
    mismatches: pl.DataFrame
    shapes: pl.DataFrame
    mixed: pl.DataFrame
    #: Event types and versions in the archive (with or without fields).
    versions: int
    #: Sources no event of which has a JSON payload in ``data`` (YAML, a binary format):
    #: not checked, which "0 changes" would not say.
    unchecked: pl.DataFrame
    #: The share below which a field is foreign to a version (above ``1 - tolerance``:
    #: required); fields between are optional, and drift that common is not told.
    tolerance: float = 0.05

    def tables(self) -> dict[str, pl.DataFrame]:
        return {
            "mismatches": self.mismatches,
            "shapes": self.shapes,
            "mixed": self.mixed,
            "changes": self.changes,
            "fields": self.fields,
            "unchecked": self.unchecked,
        }

    def highlights(self) -> dict[str, pl.DataFrame]:
        tables = self.tables()
        del tables["unchecked"]  # the summary says it in full
        return tables

    @property
    def found(self) -> int:
        """Events that do not fit their declared version, fields renamed or typed two ways
        within a version (changes between versions are no fault)."""
        return self.mismatches.height + self.shapes.filter("renamed").height + self.mixed.height

    @as_text
    def summary(self) -> str:
        unversioned = self.mismatches.filter(pl.col("schema_version").is_null()).height
        text = (
            f"{self.versions} type/version(s), {self.changes.height} change(s) between versions, "
            f"{self.mismatches.height} event(s) not fitting their version"
            + (f" ({unversioned:,} of them without one)" if unversioned else "")
        )
        if self.mixed.height:
            shown = "; ".join(_mixed_line(row) for row in self.mixed.head(3).iter_rows(named=True))
            more = f"; and {self.mixed.height - 3} more" if self.mixed.height > 3 else ""
            text += f", {self.mixed.height} field(s) of two JSON types in a version: {shown}{more}"
        for renamed, said in ((True, "renamed without a new version"), (False, "mixed throughout")):
            shapes = self.shapes.filter(pl.col("renamed") == renamed)
            if shapes.height:
                shown = "; ".join(_shape_line(row) for row in shapes.head(3).iter_rows(named=True))
                more = f"; and {shapes.height - 3} more" if shapes.height > 3 else ""
                text += f", {shapes.height} version(s) with two shapes, {said}: {shown}{more}"
        return "; ".join([text, *self._optional_lines(), *not_checked_lines(self.unchecked)])

    def _optional_lines(self) -> list[str]:
        """Fields in only part of their version's events: optional by design, or drift too
        common to be told from that at this tolerance (5 % of events given a new field)."""
        low = self.tolerance
        optional = self.fields.filter(
            (pl.col("present") >= low * pl.col("events"))
            & (pl.col("present") < (1 - low) * pl.col("events"))
        ).sort(pl.col("present") / pl.col("events"))
        version = ["source", "event_type", "schema_version"]
        in_shapes = pl.concat(  # told as a version's two shapes already
            [
                self.shapes.select(*version, "field"),
                self.shapes.select(*version, pl.col("new_field").alias("field")),
            ]
        )
        optional = optional.join(in_shapes, on=[*version, "field"], how="anti", nulls_equal=True)
        if optional.is_empty():
            return []
        shown = ", ".join(
            f"{row['field']} of {row['event_type']} {_version(row['schema_version'])} "
            f"({row['present'] / row['events']:.1%})"
            for row in optional.head(3).iter_rows(named=True)
        )
        more = f" and {optional.height - 3} more" if optional.height > 3 else ""
        return [
            f"{optional.height} field(s) in only part of their version's events, optional or "
            f"drift too common to tell at tolerance {low:g} (a field in under {low:.0%} of "
            f"them is drift): {shown}{more}"
        ]

    def chart(self) -> alt.TopLevelMixin:
        from workbench.charts.drift import drift_matrix  # charts sit above analysis

        return drift_matrix(self.fields)


def _version(schema_version: int | None) -> str:
    return "without a version" if schema_version is None else f"v{schema_version}"


def _mixed_line(row: dict[str, Any]) -> str:
    """One field of several JSON types in words.

    >>> _mixed_line({"source": "s", "event_type": "Paid", "schema_version": 1, "field": "amount",
    ...     "types": ["string", "number"], "events_per_type": [215, 86]})
    'Paid v1 in s: amount is string (215 events) or number (86)'
    """
    version = _version(row["schema_version"])
    first, *rest = zip(row["types"], row["events_per_type"], strict=True)
    others = " or ".join(f"{t} ({n:,})" for t, n in rest)
    return (
        f"{row['event_type']} {version} in {row['source']}: {row['field']} is "
        f"{first[0]} ({first[1]:,} events) or {others}"
    )


def _shape_line(row: dict[str, Any]) -> str:
    """One pair of shapes in words.

    >>> _shape_line({"source": "s", "event_type": "T", "schema_version": 1, "field": "a",
    ...     "present": 1013, "new_field": "b", "new_present": 928, "first_new_position": 1014})
    'T v1 in s has a (1,013 events) or b (928, from position 1,014), never both'
    """
    version = _version(row["schema_version"])
    return (
        f"{row['event_type']} {version} in {row['source']} has {row['field']} "
        f"({row['present']:,} events) or {row['new_field']} ({row['new_present']:,}, "
        f"from position {row['first_new_position']:,}), never both"
    )


def find_drift(reader: ArchiveReader, *, tolerance: float = 0.05) -> Drift:
    """Infer the schema of every source, event type and version and find drift (see the module).

    ``tolerance`` is a share below a half: "always" is at least ``1 - tolerance`` of
    the events, "hardly ever" under ``tolerance``, and the two must not meet.
    """
    if not 0 <= tolerance < 0.5:
        raise ArchiveError(
            f"tolerance {tolerance!r}: a share of the events from 0 to under 0.5 (0.05 is 5%); "
            "from a half up, every field is both always there and hardly ever"
        )
    reader.refresh_if_stale()
    con = reader.con
    tables = {
        name: f"_wb_{name}_{uuid.uuid4().hex[:12]}"
        for name in ("signatures", "kv", "fields", "shaped", "version_fields")
    }
    names = {**tables, "shape": _SHAPE.format(data="e.data")}
    con.register(tables["version_fields"], version_fields(reader))
    try:
        con.execute(f"create temp table {tables['signatures']} as {_SIGNATURES}")
        kv = _KV.format(signatures=tables["signatures"], versions=tables["version_fields"])
        con.execute(f"create temp table {tables['kv']} as {kv}")
        con.execute(
            f"create temp table {tables['fields']} as "
            + _FIELDS.format(kv=tables["kv"], counts=_COUNTS)
        )
        params = {"tolerance": tolerance}

        def frame(query: str, order: str, extra: dict[str, object] | None = None) -> pl.DataFrame:
            sql = f"select * from ({query.format(**names)}) order by {order}"
            return reader.sql(sql, {**params, **(extra or {})}).pl()

        fields = reader.sql(
            f"select * from {tables['fields']} order by source, event_type, schema_version, field"
        ).pl()
        changes = frame(_CHANGES, "source, event_type, from_version, change, field")
        mismatches = frame(_MISMATCHES, "source, global_position")
        shapes_sql = _SHAPES.format(**names)
        con.execute(
            f"create temp table {tables['shaped']} as {shapes_sql}",
            {**params, "min_events": MIN_SHAPE_EVENTS},
        )
        # Telling a rename from two shapes by design reads the events: only when found.
        found = con.execute(f"select count(*) from {tables['shaped']}").fetchall()[0][0]
        shapes = reader.sql(
            f"select * from ({(_RENAMED if found else _NO_RENAMES).format(**names)}) order by "
            "source, event_type, schema_version, first_new_position, field, new_field"
        ).pl()
        mixed = frame(_MIXED, "source, event_type, schema_version, field")
        versions = reader.sql(f"select count(*) from ({_COUNTS})").fetchall()[0][0]
    finally:
        for name, table in tables.items():
            if name != "version_fields":
                con.execute(f"drop table if exists {table}")
        con.unregister(tables["version_fields"])
    return Drift(
        fields=fields,
        changes=changes,
        mismatches=mismatches,
        shapes=shapes,
        mixed=mixed,
        versions=int(versions),
        unchecked=find_unchecked(reader, [_NEEDS_DATA]),
        tolerance=tolerance,
    )


def version_fields(reader: ArchiveReader) -> pa.Table:
    """``source, field``: the field of ``data`` each source's archiver took the schema
    version from (the eventsourcing library's ``class_version``, a ``--map
    schema_version=data:NAME``). It is the version, not a field of it: the library
    writes it from version 2 on, and every upgraded type showed "added class_version".

    >>> import tempfile
    >>> from workbench.archive import ArchiveWriter, ArchiverRun
    >>> root = tempfile.mkdtemp()
    >>> with ArchiverRun(root, "pg", "archive_postgres") as run:
    ...     run.record(["preset=eventsourcing"])
    >>> version_fields(ArchiveReader(root)).to_pylist()
    [{'source': 'pg', 'field': 'class_version'}]
    """
    found: dict[str, str] = {}
    for source, options in recorded_mappings(reader.root).items():
        field = _EVENTSOURCING_VERSION if "preset=eventsourcing" in options else None
        for option in options:
            name, _, spec = option.partition("=")
            if name.strip() == "schema_version":
                path = spec.strip().removeprefix("data:")
                field = path if spec.strip().startswith("data:") and "." not in path else None
        if field is not None:
            found[source] = field
    return pa.table(
        {"source": list(found), "field": list(found.values())},
        schema=pa.schema([("source", pa.string()), ("field", pa.string())]),
    )


#: Where the eventsourcing library keeps an event's class version in its state.
_EVENTSOURCING_VERSION = "class_version"


#: What the drift check needs of an event: a payload in ``data`` (JSON, as archived).
_NEEDS_DATA = Need("schema drift", (("data",),), "a JSON payload in data")
