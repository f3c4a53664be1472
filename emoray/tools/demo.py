"""The embedded default: the whole annotate job on one machine with nothing but this package.

Local Ray, a real S3 endpoint on 127.0.0.1, the shipped sample texts uploaded as Parquet, and the
tiny random-weight model unless a real one is given.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc

from emoray.lake import locations, table
from emoray.config import CONF, AnnotateConfig
from emoray.quality.gate import gated_run
from emoray.pipeline import build_annotator, render_dry_run
from emoray.runtime import start_ray
from emoray.sample import sample_texts
from emoray.tools.tiny_model import build_tiny_model

BUCKET = "emoray-demo"
WORK = CONF.parent / ".emoray" if CONF.is_dir() else Path.home() / ".cache" / "emoray"
"""Where the demo and the benches keep the tiny models they build: the repository's `.emoray/`
(`make clean` removes it), else the user's cache; never the working directory."""
TINY_MODEL_DIR = WORK / "tiny-model"

WARNING = """\
=====================================================================================
 No model given: using the tiny random-weight test model. Its labels are MEANINGLESS.
 To annotate for real, give an EmoLLM, e.g. on a GPU machine:
     emoray demo --model Emollama-chat-7b --device gpu --gpu-memory-utilization 0.9
=====================================================================================
"""


def tiny_model() -> Path:
    """The tiny random LLaMA (built on first use): the demo's and the benches' default."""
    if not (TINY_MODEL_DIR / "config.json").is_file():
        build_tiny_model(TINY_MODEL_DIR)
    return TINY_MODEL_DIR.resolve()


def tiny_t5() -> Path:
    """A tiny random T5 beside the tiny model (`emoray bench cascade`'s small model)."""
    folder = TINY_MODEL_DIR.parent / "tiny-t5"
    if not (folder / "config.json").is_file():
        build_tiny_model(folder, arch="t5")
    return folder.resolve()


def upload_sample(config: AnnotateConfig) -> int:
    rows = sample_texts()
    return locations.write_texts(config.input, config.s3, [i for i, _ in rows],
                                 [t for _, t in rows], "sample.parquet")


def run_demo(config: AnnotateConfig, model_given: bool, docs: int = 2,
             verbose: bool = False, dry_run: bool = False) -> None:
    """Annotate the sample on the local S3 endpoint (which must already be running) and print
    a few rows and the summary (with `dry_run`, what annotating would send and cost)."""
    if not model_given:
        print(WARNING)
    n = upload_sample(config)
    print(f"uploaded {n} sample texts to {config.input}")
    start_ray(verbose=verbose)
    if dry_run:
        print(render_dry_run(build_annotator(config).dry_run()))
        return
    summary = gated_run(build_annotator(config))
    rows = table.AnnotationTable(config.output, config.s3).read(
        ["doc_id", "task", "target", "score", "label", "labels", "confidence", "status",
         "raw_output"])
    first = pc.unique(rows["doc_id"])[:docs]
    picked = rows.filter(pc.is_in(rows["doc_id"], first)).sort_by([("doc_id", "ascending")])
    print(f"\n{picked.num_rows} of {rows.num_rows} annotated rows in {config.output}:")
    print(picked.to_pandas().to_string(index=False))
    print()
    print(summary.render())
    print(read_it_yourself(config))
    if not model_given:
        print("\n(labels above come from the random-weight tiny model and mean nothing)")


def read_it_yourself(config: AnnotateConfig) -> str:
    """How to open the table with the tools analysts already use; the Polars and DuckDB lines
    are run here against the table just written, and their counts printed."""
    import duckdb
    import polars as pl

    annotations = table.AnnotationTable(config.output, config.s3)
    by_task = pl.scan_delta(annotations.uri, storage_options=annotations.reader_options
                            ).group_by("task").len()
    polars_rows = by_task.collect()["len"].sum()
    snapshot = annotations.snapshot()
    dataset = snapshot.to_pyarrow_dataset()  # noqa: F841 (DuckDB reads it by name)
    duckdb_rows = duckdb.sql("SELECT count(*) FROM dataset").fetchall()[0][0]
    where = annotations.uri
    spark_path = "s3a://" + where[len("s3://"):] if where.startswith("s3://") else where
    return f"""
The annotations are a Delta Lake table at {where} (version {snapshot.version()}).
Read it with what you already use (S3 settings: endpoint, region, credentials as for emoray):

  Polars   pl.scan_delta("{where}", storage_options=...).group_by("task").len().collect()
           -> {polars_rows} rows (run just now)
  DuckDB   duckdb.sql("SELECT task, count(*) FROM delta_scan('{where}') GROUP BY task")
           (delta extension), or without it, from Python:
           dataset = deltalake.DeltaTable("{where}", storage_options=...).to_pyarrow_dataset()
           duckdb.sql("SELECT task, count(*) FROM dataset GROUP BY task")
           -> {duckdb_rows} rows (run just now)
  Spark    spark.read.format("delta").load("{spark_path}")   (delta-spark on the cluster)
           or: emoray enrich --annotations {where} --downstream ... --key ...
  pandas   deltalake.DeltaTable("{where}", storage_options=...).to_pandas()
  History  emoray table history {where}"""
