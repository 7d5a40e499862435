"""Schema drift: the shape of ``data`` per event type and version, inferred from the data.

Three tables, all computed in DuckDB from the top-level fields of ``data``:

- ``fields``: per ``event_type``, ``schema_version`` and field, its JSON
  type (the most common non-null one, and all seen), how many events carry
  it and the share of events where it is missing or null.
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
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import polars as pl

from workbench.analysis.result import CheckResult
from workbench.archive import ArchiveReader

if TYPE_CHECKING:
    import altair as alt

__all__ = ["Drift", "find_drift"]

# One row per (event, top-level field) with a portable JSON type name. Integers and
# fractions are one type, number, as in JSON: System.Text.Json writes a whole double
# as 1, so "integer" against "number" would flag every .NET event store as drifting.
_KV = """
with ev as (
    select source, global_position, event_type, schema_version, data::json as j
    from (select * from events where event_type is not null and json_valid(data))
    where json_type(data::json) = 'OBJECT'
)
select ev.source, ev.global_position, ev.event_type, ev.schema_version, e.key as field,
       case when e.type in ('UBIGINT', 'BIGINT', 'HUGEINT', 'DOUBLE') then 'number'
            when e.type = 'VARCHAR' then 'string'
            else lower(e.type) end as type
from ev, json_each(ev.j) as e
"""

# Events per type and version: every event of a type, whatever its data.
_COUNTS = """
select event_type, schema_version, count(*) as events
from events where event_type is not null group by all
"""

_FIELDS = """
with types as (
    select event_type, schema_version, field, type, count(*) as n from {kv} group by all
)
select t.event_type, t.schema_version, t.field,
       arg_max(t.type, t.n) filter (where t.type <> 'null') as type,
       list(t.type order by t.n desc) filter (where t.type <> 'null') as types,
       sum(t.n)::bigint as present, c.events,
       1 - (sum(t.n) filter (where t.type <> 'null'))::double / c.events as null_share
from types t join ({counts}) c
    on c.event_type = t.event_type and c.schema_version is not distinct from t.schema_version
group by t.event_type, t.schema_version, t.field, c.events
"""

_CHANGES = """
with f as (
    select *, present::double / events as share from {fields}
),
versions as (
    select event_type, schema_version as v,
           lead(schema_version) over (partition by event_type order by schema_version) as nv
    from (select distinct event_type, schema_version from f where schema_version is not null)
),
core as (select * from f where share >= $tolerance),
removed as (
    select s.event_type, s.v, s.nv, a.field, a.type from versions s
    join core a on a.event_type = s.event_type and a.schema_version = s.v
    where s.nv is not null and not exists (select 1 from core b where b.event_type = s.event_type
                                           and b.schema_version = s.nv and b.field = a.field)
),
added as (
    select s.event_type, s.v, s.nv, b.field, b.type from versions s
    join core b on b.event_type = s.event_type and b.schema_version = s.nv
    where not exists (select 1 from core a where a.event_type = s.event_type
                      and a.schema_version = s.v and a.field = b.field)
),
renamed as (
    select r.event_type, r.v, r.nv, r.field, a.field as new_field, r.type
    from removed r join added a using (event_type, v, nv, type)
    qualify count(*) over (partition by r.event_type, r.v, r.type) = 1
        and count(*) over (partition by a.event_type, a.v, a.field) = 1
        and (select count(*) from removed x where x.event_type = r.event_type
             and x.v = r.v and x.type is not distinct from r.type) = 1
        and (select count(*) from added y where y.event_type = r.event_type
             and y.v = r.v and y.type is not distinct from r.type) = 1
)
select event_type, v as from_version, nv as to_version, 'renamed' as change, field, new_field,
       type as from_type, type as to_type from renamed
union all
select event_type, v, nv, 'removed', field, null, type, null from removed r
where not exists (select 1 from renamed n where n.event_type = r.event_type and n.v = r.v
                  and n.field = r.field)
union all
select event_type, v, nv, 'added', field, null, null, type from added a
where not exists (select 1 from renamed n where n.event_type = a.event_type and n.v = a.v
                  and n.new_field = a.field)
union all
select s.event_type, s.v, s.nv, 'retyped', a.field, null, a.type, b.type from versions s
join core a on a.event_type = s.event_type and a.schema_version = s.v
join core b on b.event_type = s.event_type and b.schema_version = s.nv and b.field = a.field
where a.type is distinct from b.type
"""

# Per event: which required fields it lacks, which foreign fields or rare
# types it has; then, for the events that do not fit, the version they fit.
# Events without a version are a group of their own in `fields` (joins are
# null-safe) and are always listed: they declare no version to fit.
_MISMATCHES = """
with f as (select *, present::double / events as share from {fields}),
typeshare as (
    select event_type, schema_version, field, type, count(*)::double as n from {kv} group by all
),
req as (
    select event_type, schema_version, list(field order by field) as fields, count(*) as n
    from f where share >= 1 - $tolerance group by all
),
core as (
    select event_type, schema_version, list(field order by field) as fields
    from f where share >= $tolerance group by all
),
per_event as (
    select kv.source, kv.global_position, kv.event_type, kv.schema_version,
           list(kv.field order by kv.field) as fields,
           list(kv.field order by kv.field) filter (where f.share < $tolerance) as unexpected,
           list(kv.field order by kv.field) filter (
               where kv.type <> 'null' and kv.type is distinct from f.type
                 and ts.n / f.present < $tolerance) as retyped
    from {kv} kv
    join f on f.event_type = kv.event_type and f.field = kv.field
         and f.schema_version is not distinct from kv.schema_version
    join typeshare ts on ts.event_type = kv.event_type and ts.field = kv.field
         and ts.schema_version is not distinct from kv.schema_version and ts.type = kv.type
    group by all
),
all_events as (
    select e.source, e.global_position, e.event_id, e.event_type, e.schema_version,
           coalesce(p.fields, []) as fields, coalesce(p.unexpected, []) as unexpected,
           coalesce(p.retyped, []) as retyped,
           list_filter(coalesce(r.fields, []), lambda x: not list_contains(coalesce(p.fields, []), x))
               as missing
    from events e
    left join per_event p using (source, global_position)
    left join req r on r.event_type = e.event_type
         and r.schema_version is not distinct from e.schema_version
    where e.event_type is not null and json_valid(e.data)
)
select a.source, a.global_position, a.event_id, a.event_type, a.schema_version,
       a.missing, a.unexpected, a.retyped,
       (select min(c.schema_version) from core c
        join req r using (event_type, schema_version)
        where c.event_type = a.event_type and c.schema_version is distinct from a.schema_version
          and c.schema_version is not null
          and list_has_all(a.fields, r.fields) and list_has_all(c.fields, a.fields))
           as likely_version
from all_events a
where len(a.missing) > 0 or len(a.unexpected) > 0 or len(a.retyped) > 0
   or a.schema_version is null
"""


@dataclass(frozen=True, repr=False)
class Drift(CheckResult):
    """Fields per type and version, changes between versions, events that do not fit.

    - ``fields``: ``event_type, schema_version, field, type, types, present,
      events, null_share``.
    - ``changes``: ``event_type, from_version, to_version, change, field,
      new_field, from_type, to_type``.
    - ``mismatches``: ``source, global_position, event_id, event_type,
      schema_version, missing, unexpected, retyped, likely_version``.
    """

    name: ClassVar[str] = "drift"
    main: ClassVar[str] = "mismatches"

    fields: pl.DataFrame
    changes: pl.DataFrame
    mismatches: pl.DataFrame

    def tables(self) -> dict[str, pl.DataFrame]:
        return {"mismatches": self.mismatches, "changes": self.changes, "fields": self.fields}

    @property
    def found(self) -> int:
        """Events that do not fit their declared version (changes between versions are no fault)."""
        return self.mismatches.height

    def summary(self) -> str:
        versions = self.fields.select("event_type", "schema_version").unique().height
        return (
            f"{versions} type/version(s), {self.changes.height} change(s) between versions, "
            f"{self.mismatches.height} event(s) not fitting their version"
        )

    def chart(self) -> alt.TopLevelMixin:
        from workbench.charts.drift import drift_matrix  # charts sit above analysis

        return drift_matrix(self.fields)


def find_drift(reader: ArchiveReader, *, tolerance: float = 0.05) -> Drift:
    """Infer the schema of every event type and version and find drift (see the module)."""
    reader.refresh_if_stale()
    kv = f"_wb_kv_{uuid.uuid4().hex[:12]}"
    fields_table = f"_wb_fields_{uuid.uuid4().hex[:12]}"
    con = reader.con
    con.execute(f"create temp table {kv} as {_KV}")
    try:
        con.execute(f"create temp table {fields_table} as " + _FIELDS.format(kv=kv, counts=_COUNTS))
        params = {"tolerance": tolerance}
        fields = reader.sql(
            f"select * from {fields_table} order by event_type, schema_version, field"
        ).pl()
        changes = reader.sql(
            "select * from ("
            + _CHANGES.format(fields=fields_table)
            + ") order by event_type, from_version, change, field",
            params,
        ).pl()
        mismatches = reader.sql(
            "select * from ("
            + _MISMATCHES.format(fields=fields_table, kv=kv)
            + ") order by source, global_position",
            params,
        ).pl()
    finally:
        con.execute(f"drop table if exists {kv}")
        con.execute(f"drop table if exists {fields_table}")
    return Drift(fields=fields, changes=changes, mismatches=mismatches)
