"""`emoray enrich`: the latest labels joined onto a downstream table (Spark)."""

from __future__ import annotations

from emoray.cli.common import command, emit, settings
from emoray.errors import EXIT_OK

EXAMPLES = {
    "enrich": ["emoray enrich --annotations ./affect --downstream ./posts.parquet --key post_id "
               "--output ./posts_affect"],
}


def add(sub) -> None:
    """Declare the commands of this module and their flags."""
    e = command(sub, "enrich", EXAMPLES,
                help="join the latest affect labels onto a downstream dataset (Spark)")
    e.add_argument("--config", help="YAML profile of EnrichConfig settings")
    e.add_argument("--annotations", help="annotation table root (local, s3://, s3a://)")
    e.add_argument("--downstream", help="dataset to enrich (Parquet, JSONL or CSV, or a Delta "
                   "table)")
    e.add_argument("--downstream-version", help="a Delta downstream's version or timestamp")
    e.add_argument("--output", help="the enriched Delta table (one new version per run)")
    e.add_argument("--key", help="downstream key column matched to doc_id (default id)")
    e.add_argument("--model", help="model whose labels to join (default: the only one)")
    e.add_argument("--format", choices=["auto", "parquet", "jsonl", "csv"])
    e.add_argument("--partition-by", help="comma list of downstream partition columns")
    e.add_argument("--prefix", help="prefix of the added columns (default affect_)")
    e.add_argument("--master", help="Spark master (default local[*]; spark-submit sets its own)")
    e.add_argument("--as-of", help="annotation table version or timestamp to read (time "
                   "travel; default: the latest)")
    e.add_argument("--reader", choices=["files", "delta"],
                   help="files: the snapshot's Parquet files (default); delta: format('delta'), "
                   "needs delta-spark")
    e.add_argument("--writer", choices=["files", "delta"],
                   help="files: Spark's Parquet files committed by emoray in one Delta "
                   "transaction (default); delta: format('delta'), needs delta-spark")
    e.add_argument("--s3-endpoint-url")
    e.add_argument("--json", action="store_true")
    e.set_defaults(fn=cmd_enrich)


FLAGS = {name: name for name in ("annotations", "downstream", "output", "key", "model",
                                 "format", "prefix", "master", "as_of", "reader", "writer",
                                 "downstream_version")} | {"s3_endpoint_url": "s3.endpoint_url"}
"""`emoray enrich`'s flags that are settings as they are (flag name -> `EnrichConfig` key)."""


def cmd_enrich(args) -> int:
    """Join the latest labels onto the downstream table and commit the enriched table."""
    from emoray.enrich.spark_join import EnrichConfig, enrich, render, spark_session

    config = settings(args, FLAGS, model=EnrichConfig, partition_by=(
        args.partition_by.split(",") if args.partition_by else None))
    config.require("annotations")
    emit(args, enrich(spark_session(config), config), render)
    return EXIT_OK
