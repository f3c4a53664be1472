"""Which partitions of a partitioned enriched table a night must rewrite.

When the downstream is a Delta table and the enriched table's latest version was committed by
the same job (same downstream, model, key, partition columns and columns), a row of the enriched
table can only have changed if its downstream row lies in a file added or removed since the
downstream version that commit joined, or its doc id has an annotation committed since the
annotation table version it joined. The night rewrites the partitions holding such rows and
no other (`enriched_table.commit_staged` replaces exactly those); the rest stay as the last
commit left them. Anything that breaks that reasoning (the first night, a pinned version, a
plain-file downstream, another model, new columns, an earlier version that cannot be loaded)
rewrites the whole table, and the summary says why.
"""

from __future__ import annotations

from dataclasses import dataclass

from emoray.lake import table
from emoray.config import EnrichConfig
from emoray.lake.locations import spark_path


@dataclass(frozen=True)
class Scope:
    """What tonight rewrites: `partitions` (partition values, as tuples in `partition_by`
    order) or the whole table (None), and why."""

    partitions: frozenset[tuple] | None
    reason: str


def _actions(location: str, config: EnrichConfig, version: int) -> dict[str, dict]:
    """The data files of the Delta table at `location` at `version`: {URI: its add action
    (flattened: `partition.<column>` holds a partition value as the log writes it)}."""
    import pyarrow as pa

    delta = table.AnnotationTable(location, config.s3)
    dt = delta.snapshot(version)
    uris = delta.file_uris(dt)
    actions = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
    by_path = {a["path"]: a for a in actions}
    return {u: by_path.get(u[len(delta.uri):].lstrip("/"), {}) for u in uris}


def _changed_files(location: str, config: EnrichConfig, since: int,
                   now: int) -> tuple[dict[str, dict], dict[str, dict]]:
    """The data files (with their add actions) the Delta table at `location` added, and those
    it removed, between two versions."""
    before, after = (_actions(location, config, v) for v in (since, now))
    return ({u: a for u, a in after.items() if u not in before},
            {u: a for u, a in before.items() if u not in after})


def whole_reason(config: EnrichConfig, downstream_version: int | None, model: str,
                 columns: list[str]) -> str | dict:
    """Why tonight rewrites the whole table, or the last commit's info to diff against."""
    if not config.partition_by:
        return "no partition_by: the whole table is one unit"
    if config.writer != "files" or downstream_version is None:
        return "the downstream is not a Delta table: what changed in it is unknown"
    if config.as_of is not None or config.downstream_version is not None:
        return "a pinned version (--as-of or --downstream-version)"
    out = table.AnnotationTable(config.output, config.s3)
    if not out.exists():
        return "the enriched table's first version"
    dt = out.snapshot()
    last = dt.history(1)[0]
    if (last.get("emoray") != "enrich" or last.get("downstream") != config.downstream
            or last.get("model") != model or last.get("key") != config.key
            or "downstream_version" not in last):
        return "the latest version joined another downstream, model or key"
    if [f.name for f in dt.schema().fields] != columns:
        return "the enriched columns changed"
    if list(dt.metadata().partition_columns) != list(config.partition_by):
        return "the partition columns changed"
    return last


def scope(spark, config: EnrichConfig, downstream, downstream_version: int | None,
          annotation_version: int, model: str, columns: list[str]) -> Scope:
    """Tonight's `Scope` for the enriched rows `columns` of `model` joined from `downstream`
    (a Spark DataFrame of the downstream at `downstream_version`) and the annotation table at
    `annotation_version`."""
    from pyspark.sql import functions as F

    last = whole_reason(config, downstream_version, model, columns)
    if isinstance(last, str):
        return Scope(None, last)
    parts = list(config.partition_by)
    types = {c: downstream.schema[c].dataType for c in parts}
    try:
        added, removed = _changed_files(config.downstream, config,
                                        int(last["downstream_version"]), downstream_version)
        annotated, _ = _changed_files(config.annotations, config,
                                      int(last["annotation_table_version"]), annotation_version)
        frames, touched = [], set()
        changed = {**added, **removed}
        logged = all(f"partition.{c}" in a for a in changed.values() for c in parts)
        if logged:  # the downstream is partitioned by them: the values are in its log
            touched |= {tuple(a[f"partition.{c}"] for c in parts) for a in changed.values()}
        elif changed:  # from the files; a removed one vacuumed since: read whole (below)
            base = spark_path(table.AnnotationTable(config.downstream, config.s3).uri)
            frames.append(spark.read.option("basePath", base).option("mergeSchema", "true")
                          .parquet(*map(spark_path, changed))
                          .select(*[F.col(c).cast(types[c]) for c in parts]))
        if annotated:
            docs = spark.read.parquet(*map(spark_path, annotated)).select("doc_id").distinct()
            docs = docs.select(F.col("doc_id").try_cast(downstream.schema[config.key].dataType)
                               .alias("_key"))
            frames.append(downstream.join(docs, downstream[config.key] == docs["_key"],
                                          "left_semi").select(*parts))
        for frame in frames:
            touched |= {tuple(r) for r in frame.distinct().collect()}
    except Exception as e:  # vacuumed or checkpointed away: no way to tell what changed
        return Scope(None, f"what changed since the last commit cannot be read ({e})")
    return Scope(frozenset(touched), f"{len(touched)} partitions changed")


def only(frame, partitions: frozenset[tuple], partition_by: list[str]):
    """The rows of `frame` in `partitions` (values as the Delta log or Spark gives them, cast to
    the columns' types; a null value matches a null)."""
    from functools import reduce

    from pyspark.sql import functions as F

    if not partitions:
        return frame.limit(0)

    def value(c: str, v):
        return F.lit(v).cast(frame.schema[c].dataType)

    if len(partition_by) == 1:  # one column: an IN list, not a branch per partition
        column, values = F.col(partition_by[0]), [v for (v,) in partitions]
        keep = column.isin([value(partition_by[0], v) for v in values if v is not None])
        return frame.where(keep | column.isNull() if None in values else keep)
    match = [reduce(lambda a, b: a & b, [F.col(c).eqNullSafe(value(c, v))
                                         for c, v in zip(partition_by, values)])
             for values in sorted(partitions, key=str)]
    return frame.where(reduce(lambda a, b: a | b, match))
