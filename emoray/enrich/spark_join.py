"""The Spark enrichment job: one snapshot of the annotation table → one wide row of typed
affect columns per doc_id → left-joined onto a downstream dataset (files, or a Delta table read
through one snapshot) → the enriched Delta table, committed in one transaction
(`emoray.enrich.enriched_table`): analysts see the previous version or the new one, never a mix.

The annotation table is a Delta table (`emoray.lake.table`). Where the cluster has delta-spark
(`reader: delta`), Spark reads it with `format("delta")`; otherwise (`reader: files`, the
default, and what runs here: the jars cannot be fetched without Maven) it reads exactly the
Parquet files of the snapshot, as listed by the Delta log, so a crashed annotate run is never
joined either way. `as_of` (a version or a timestamp) reproduces an earlier enriched table.

The latest usable answer (status ok or truncated) per (doc_id, task, target) wins; each affect
column comes with `<column>_confidence` (so analysts can filter on it) and a map of which
calibration made each task's confidence. Downstream rows are never dropped or duplicated (left
join onto one row per doc_id).
"""

from __future__ import annotations

import time

from emoray.enrich import scope as enrich_scope
from emoray.lake import locations, table
from emoray.config import EnrichConfig, S3Config
from emoray.errors import EXIT_INPUT, EmorayError
from emoray.lake.locations import spark_path
from emoray.statuses import LATEST, USABLE
from emoray.tasks import TASKS, request_key


class EnrichError(EmorayError, ValueError):
    """Input the enrichment cannot join as given; raised before the join runs."""

    exit_code = EXIT_INPUT


def column_name(task: str, target: str | None, config: EnrichConfig) -> str:
    key = request_key(task, target)
    if key in config.names or task in config.names:
        base = config.names.get(key) or config.names[task].replace("{target}", target or "")
    else:
        spec = TASKS[task]
        base = (spec.column or spec.name + spec.answer.suffix).replace("{target}", target or "")
    return config.prefix + base


def s3a_conf(s3: S3Config) -> dict[str, str]:
    """Spark settings for s3a://: the AWS default credential chain (environment, profile,
    instance role), an endpoint override for S3-compatible stores, and the S3A "magic"
    committer so task output is committed without renames. Needs the hadoop-aws jar matching
    Spark's Hadoop (spark-submit --packages org.apache.hadoop:hadoop-aws:<hadoop version>)."""
    conf = {
        "spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3a.aws.credentials.provider":
            "software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider",
        "spark.hadoop.fs.s3a.committer.name": "magic",
        "spark.hadoop.fs.s3a.committer.magic.enabled": "true",
        "spark.sql.sources.commitProtocolClass":
            "org.apache.spark.internal.io.cloud.PathOutputCommitProtocol",
        "spark.sql.parquet.output.committer.class":
            "org.apache.spark.internal.io.cloud.BindingParquetOutputCommitter",
    }
    endpoint = s3.endpoint()
    if endpoint:
        conf["spark.hadoop.fs.s3a.endpoint"] = endpoint
        conf["spark.hadoop.fs.s3a.path.style.access"] = "true"
        conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(endpoint.startswith("https"))
    region = s3.resolved_region()
    if region:
        conf["spark.hadoop.fs.s3a.endpoint.region"] = region
    return conf


def spark_conf(config: EnrichConfig) -> dict[str, str]:
    conf = {"spark.sql.sources.partitionOverwriteMode": "dynamic",
            "spark.sql.session.timeZone": "UTC",
            # Delta readers take timestamps as Parquet's micros, not Spark's default INT96
            "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
            "spark.sql.sources.partitionColumnTypeInference.enabled": "false"}
    paths = (config.annotations, config.downstream, config.output)
    if any(p.startswith(("s3://", "s3a://")) for p in paths):
        conf.update(s3a_conf(config.s3))
    return {**conf, **config.spark_conf}


def spark_session(config: EnrichConfig):
    from pyspark.sql import SparkSession

    conf = spark_conf(config)
    builder = SparkSession.builder.appName("emoray-enrich")
    if config.master:
        builder = builder.master(config.master)
    for k, v in conf.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    for k, v in conf.items():
        if k.startswith("spark.sql."):
            spark.conf.set(k, v)
    return spark


def delta_frame(spark, location: str, s3: S3Config, reader: str = "files",
                as_of: str | int | None = None, what: str = "table"):
    """One snapshot of the Delta table at `location` (latest, or `as_of`), as (Spark DataFrame,
    its version): with `reader` files, exactly the Parquet files its log lists (partition
    values from their paths; files written before a column existed read it as null); with
    delta, Spark's `format("delta")` (clusters with delta-spark)."""
    delta = table.AnnotationTable(location, s3)
    try:
        dt = delta.snapshot(as_of)
    except table.TableError as e:
        raise EnrichError(str(e) if what == "annotation table" else f"{what}: {e}") from None
    if reader == "delta":
        return (spark.read.format("delta").option("versionAsOf", dt.version())
                .load(spark_path(delta.uri)), dt.version())
    files = [spark_path(f) for f in delta.file_uris(dt)]
    if not files:
        raise EnrichError(f"{what} {location} has no committed rows (version {dt.version()})")
    return (spark.read.option("basePath", spark_path(delta.uri))
            .option("mergeSchema", "true").parquet(*files), dt.version())


def committed_annotations(spark, config: EnrichConfig):
    """One snapshot of the annotation table (latest, or `as_of`), as (Spark DataFrame, its
    Delta version)."""
    try:
        return delta_frame(spark, config.annotations, config.s3, config.reader, config.as_of,
                           "annotation table")
    except EnrichError as e:
        if "has no committed rows" in str(e):
            raise EnrichError(f"{e}; run `emoray annotate` first or check the path") from None
        raise


def pick_model(long, config: EnrichConfig) -> str:
    """The model whose labels to join: `config.model`, else the table's only one."""
    models = [r.model for r in long.select("model").distinct().collect()]
    model = config.model or (models[0] if len(models) == 1 else None)
    if model is None:
        raise EnrichError(f"the annotation table holds several models ({', '.join(models)}); "
                          "choose one with --model")
    if model not in models:
        raise EnrichError(f"model {model!r} has no annotations here (models: {', '.join(models)})")
    return model


def usable_rows(long, model: str):
    """The rows of `model` whose answer can be joined (status `ok` or `truncated`)."""
    from pyspark.sql import functions as F

    return long.where((F.col("model") == model) & F.col("status").isin(*USABLE))


def answered_pairs(long, model: str) -> list[tuple[str, str | None]]:
    """Every (task, target) the model answered: one pair of affect columns each, whichever
    docs a night joins (so a night's columns are the table's)."""
    rows = usable_rows(long, model).select("task", "target").distinct().collect()
    return sorted(((r.task, r.target) for r in rows), key=lambda p: (p[0], p[1] or ""))


def latest_wide(long, model: str, pairs: list, config: EnrichConfig):
    """Latest usable answer per (doc_id, task, target) of `model`, pivoted to one row per
    doc_id with a column pair per (task, target) of `pairs`. Returns (wide DataFrame, stats);
    lazy until the stats are asked for."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = Window.partitionBy("doc_id", "task", "target").orderBy(
        *[F.col(c).desc() if way == "descending" else F.col(c).asc() for c, way in LATEST])
    ranked = usable_rows(long, model).withColumn("_rank", F.row_number().over(order))
    latest = ranked.where("_rank = 1").drop("_rank")
    aggs = []
    for task, target in pairs:
        match = (F.col("task") == task) & (
            F.col("target").isNull() if target is None else F.col("target") == target)
        answer = TASKS[task].answer
        value = F.col(answer.column)
        value = value.cast(answer.spark_type) if answer.spark_type else value
        name = column_name(task, target, config)
        aggs += [F.first(F.when(match, value), ignorenulls=True).alias(name),
                 F.first(F.when(match, F.col("confidence")), ignorenulls=True).alias(
                     name + "_confidence")]
    key = F.concat_ws(":", "task", "target")  # concat_ws skips a null target
    aggs += [
        F.lit(model).alias(config.prefix + "model"),
        F.map_from_entries(F.collect_set(F.struct(key, "prompt_version"))).alias(
            config.prefix + "prompt_version"),
        F.map_from_entries(F.collect_set(F.struct(key, "calibration"))).alias(
            config.prefix + "calibration"),
        F.max("run_id").alias(config.prefix + "run_id"),
    ]
    wide = latest.groupBy("doc_id").agg(*aggs)
    return wide, {"ranked": ranked, "latest": latest}


def read_downstream(spark, config: EnrichConfig):
    """The downstream dataset, as (Spark DataFrame, its Delta version or None): a Delta table
    (a location holding `_delta_log/`) through one snapshot (`downstream_version` pins one),
    never its removed files; else Parquet, CSV or JSON files."""
    from emoray.lake.lake_input import is_delta

    fs, path = locations.filesystem_for(config.downstream.replace("s3a://", "s3://"), config.s3)
    if is_delta(fs, path):
        return delta_frame(spark, config.downstream, config.s3, config.reader,
                           config.downstream_version, "downstream table")
    if config.downstream_version is not None:
        raise EnrichError(f"--downstream-version names a version of a Delta table, but "
                          f"downstream {config.downstream} is not one (no _delta_log/)")
    path = spark_path(config.downstream)
    fmt = config.format
    if fmt == "auto":
        name = config.downstream.rstrip("/").lower()
        fmt = next((f for ext, f in locations.EXTENSIONS.items() if name.endswith(ext)), "parquet")
    try:
        if fmt == "parquet":
            return spark.read.parquet(path), None
        if fmt == "csv":
            return spark.read.option("header", True).option("inferSchema", True).csv(path), None
        return spark.read.json(path), None
    except Exception as e:  # Spark's AnalysisException names the path
        raise EnrichError(f"cannot read downstream {config.downstream}: {e}") from None


def write_enriched(enriched, config: EnrichConfig, info: dict[str, str],
                   replace: frozenset[tuple] | None = None,
                   replace_all: bool = False) -> tuple[int | None, float]:
    """Write the enriched rows as the output Delta table's next version (`enriched_table`:
    Spark's Parquet files staged, one deltalake commit that also replaces the partitions
    `replace` names, or with `replace_all` every partition); with `writer` delta, Spark's own `format("delta")` (clusters with
    delta-spark). Returns the version committed (None from delta-spark) and the seconds the
    commit took (0 from delta-spark: Spark's write commits)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    from emoray.enrich import enriched_table

    if config.writer == "delta":
        writer = enriched.write.format("delta").mode("overwrite")
        if config.partition_by:
            writer = writer.partitionBy(*config.partition_by).option(
                "partitionOverwriteMode", "dynamic")
        writer.save(spark_path(config.output))
        return None, 0.0
    enriched_table.check_output(config.output, config.s3)
    staged = enriched_table.staging_folder(config.output)
    writer = enriched.write.mode("errorifexists")
    if config.partition_by:
        writer = writer.partitionBy(*config.partition_by)
    writer.parquet(spark_path(staged))
    t0 = time.perf_counter()
    version = enriched_table.commit_staged(config.output, staged, to_arrow_schema(enriched.schema),
                                           config.partition_by, config.s3, info, replace,
                                           replace_all)
    return version, round(time.perf_counter() - t0, 3)


def filled_counts(config: EnrichConfig, version: int | None) -> tuple[int, dict[str, int]]:
    """The enriched table's version (`version`, or its latest) and, read through deltalake
    (its partition values from the log: the staged files' paths are not Hive paths from the
    table's root), its rows and the rows each affect column fills."""
    import pyarrow.dataset as pads

    dt = table.AnnotationTable(config.output, config.s3).snapshot(version)
    data = dt.to_pyarrow_dataset()
    affect = [c for c in data.schema.names if c.startswith(config.prefix)]
    counts = {"rows": data.count_rows()}
    counts.update({c: data.count_rows(filter=pads.field(c).is_valid()) for c in affect})
    return dt.version(), counts


def enrich(spark, config: EnrichConfig) -> dict:
    """Run the job; returns its summary (also the figures `emoray enrich` prints)."""
    from pyspark.sql import functions as F

    t0 = time.perf_counter()
    if config.glue_entry and not table._uri(config.output).startswith("s3://"):
        raise EnrichError(f"register: output {config.output} is not on S3, and a Glue entry "
                          "points at an s3:// table: drop `register` or write the table to S3")
    downstream, downstream_version = _downstream(spark, config)
    long, version = _annotations(spark, config)
    model = pick_model(long, config)
    key_type = downstream.schema[config.key].dataType
    _check_ids(long, model, key_type, config)
    pairs = answered_pairs(long, model)
    wide, stats = latest_wide(long, model, pairs, config)
    clashes = [c for c in wide.columns if c != "doc_id" and c in downstream.columns]
    if clashes:
        raise EnrichError(f"downstream already has columns {clashes}; choose another --prefix")
    columns = downstream.columns + [c for c in wide.columns if c != "doc_id"]
    scoped = enrich_scope.scope(spark, config, downstream, downstream_version, version, model,
                                columns)
    joined = downstream
    if scoped.partitions is not None:  # only the touched partitions' rows and their docs
        joined = enrich_scope.only(downstream, scoped.partitions, config.partition_by)
        keys = joined.select(F.col(config.key).alias("_key")).distinct()
        wide, stats = latest_wide(
            long.withColumn("_key", F.col("doc_id").try_cast(key_type))
            .join(keys, "_key", "left_semi").drop("_key"), model, pairs, config)
    cast = wide.withColumn("_key", F.col("doc_id").try_cast(key_type))
    enriched = joined.join(cast.drop("doc_id"), joined[config.key] == cast["_key"],
                           "left").drop("_key")
    lineage = {"annotation_table_version": str(version), "model": model,
               "downstream": config.downstream, "key": config.key}
    if downstream_version is not None:
        lineage["downstream_version"] = str(downstream_version)
    # a whole rewrite of a Delta downstream (a complete snapshot) replaces every partition; of
    # plain files (a night's folder, say) only those it wrote, as Spark's dynamic overwrite
    whole_snapshot = scoped.partitions is None and downstream_version is not None
    output_version, commit_s = write_enriched(enriched, config, lineage, scoped.partitions,
                                              whole_snapshot)
    output_version, counts = filled_counts(config, output_version)
    glue = None
    if config.glue_entry:
        from emoray.lake.glue import register

        glue = register(config.output, config.glue_entry.glue_database, config.glue_entry.name,
                        config.s3)
    return {
        "model": model, "annotation_table_version": version,
        "downstream_version": downstream_version, "output_version": output_version,
        "downstream_rows": downstream.count(), "rewritten": scoped.reason,
        "partitions_rewritten": (None if scoped.partitions is None
                                 else len(scoped.partitions)),
        "output_rows": counts.pop("rows"), "filled": counts,
        "superseded_annotations": stats["ranked"].where("_rank > 1").count(), "glue": glue,
        "label_distribution": _labels(stats["latest"]),
        "wall_s": round(time.perf_counter() - t0, 2), "commit_s": commit_s,
    }


def _downstream(spark, config: EnrichConfig):
    """The downstream table and its version, checked to hold the key and partition columns."""
    downstream, downstream_version = read_downstream(spark, config)
    if config.key not in downstream.columns:
        raise EnrichError(f"downstream {config.downstream} has no key column {config.key!r} "
                          f"(columns: {', '.join(downstream.columns)}); name it with --key")
    for col in config.partition_by:
        if col not in downstream.columns:
            raise EnrichError(f"partition column {col!r} is not in downstream "
                              f"{config.downstream} (columns: {', '.join(downstream.columns)})")
    return downstream, downstream_version


def _annotations(spark, config: EnrichConfig):
    """The committed annotation rows and the table version read, checked to be an emoray
    annotation table (a table older than the `calibration` column gains it, null)."""
    from pyspark.sql import functions as F

    long, version = committed_annotations(spark, config)
    missing = [c for c in ("doc_id", "task", "target", "score", "labels", "status", "model",
                           "annotated_at", "run_id", "prompt_version") if c not in long.columns]
    if missing:
        raise EnrichError(f"annotation table {config.annotations} lacks columns {missing}: "
                          "not an emoray annotation table")
    if "calibration" not in long.columns:
        long = long.withColumn("calibration", F.lit(None).cast("string"))
    return long, version


def _check_ids(long, model: str, key_type, config: EnrichConfig) -> None:
    """Refuse a join that would lose rows: usable doc_ids that do not cast to the key type."""
    from pyspark.sql import functions as F

    ids = usable_rows(long, model).select("doc_id").distinct().withColumn(
        "_key", F.col("doc_id").try_cast(key_type)).where(F.col("_key").isNull())
    lost = ids.select("doc_id").limit(3).collect()
    if lost:
        raise EnrichError(
            f"{ids.count()} annotation doc_ids cannot be cast to the downstream key "
            f"{config.key!r} ({key_type.simpleString()}), e.g. {[r.doc_id for r in lost]}; "
            "those rows would be lost: fix the key type or the ids")


def _labels(latest) -> dict[str, dict[str, int]]:
    """Per task request, how many latest answers hold each label."""
    labels: dict[str, dict[str, int]] = {}
    for r in latest.groupBy("task", "target", "label").count().collect():
        if r.label is not None:
            labels.setdefault(request_key(r.task, r.target), {})[r.label] = r["count"]
    return labels


def render(summary: dict) -> str:
    lines = [f"enriched {summary['output_rows']} of {summary['downstream_rows']} downstream rows "
             f"with labels of {summary['model']} (annotation table version "
             f"{summary['annotation_table_version']}) in {summary['wall_s']} s",
             f"  output version {summary['output_version']}: rewrote "
             + ("the whole table" if summary["partitions_rewritten"] is None else
                f"{summary['partitions_rewritten']} partitions") + f" ({summary['rewritten']})",
             f"  older annotations superseded by a later run: {summary['superseded_annotations']}",
             "  rows with each affect column filled:"]
    if summary.get("glue"):
        lines.insert(2, f"  Glue entry {summary['glue']}")
    lines += [f"    {c:40} {n}" for c, n in summary["filled"].items()]
    for task, dist in sorted(summary["label_distribution"].items()):
        lines.append(f"  {task}: " + ", ".join(f"{k} {v}" for k, v in sorted(dist.items())))
    return "\n".join(lines)
