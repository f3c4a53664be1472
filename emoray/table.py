"""The annotation table: its Arrow schema (a contract the Spark job and analysts rely on), its
layout in the object store, and the commit marker that makes a run visible.

Layout under the table root:
    data/run_date=YYYY-MM-DD/run_id=<run>/*.parquet   files of one run
    _commits/<run>.json                               commit marker, written last
A run's files count only once its marker exists; the marker lists them, so readers never
list data folders and never see a crashed run's leftovers.
"""

from __future__ import annotations

import json
import posixpath

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs

SCHEMA = pa.schema([
    pa.field("doc_id", pa.string(), nullable=False),
    pa.field("text_sha256", pa.string()),
    pa.field("task", pa.string(), nullable=False),
    pa.field("target", pa.string()),
    pa.field("score", pa.float64()),
    pa.field("label", pa.string()),
    pa.field("labels", pa.list_(pa.string())),
    pa.field("confidence", pa.float64()),
    pa.field("raw_output", pa.string()),
    pa.field("status", pa.string(), nullable=False),
    pa.field("error", pa.string()),
    pa.field("model", pa.string(), nullable=False),
    pa.field("prompt_version", pa.string(), nullable=False),
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("annotated_at", pa.timestamp("us", tz="UTC"), nullable=False),
])
"""Columns of the long annotation table (DESIGN.md), plus `error`: why a row is not ok."""

STATUSES = ("ok", "parse_error", "empty_text", "truncated", "failed")

COMMITS = "_commits"


def run_dir(root: str, run_id: str, run_date: str) -> str:
    return posixpath.join(root, "data", f"run_date={run_date}", f"run_id={run_id}")


def commit(fs: pafs.FileSystem, root: str, run_id: str, run_date: str, report: dict) -> list[str]:
    """List the run's files and write its commit marker last; returns the files."""
    selector = pafs.FileSelector(run_dir(root, run_id, run_date), recursive=True)
    files = sorted(i.path for i in fs.get_file_info(selector)
                   if i.type == pafs.FileType.File and i.path.endswith(".parquet"))
    manifest = {"run_id": run_id, "run_date": run_date, "files": files, **report}
    fs.create_dir(posixpath.join(root, COMMITS), recursive=True)
    with fs.open_output_stream(posixpath.join(root, COMMITS, f"{run_id}.json")) as out:
        out.write(json.dumps(manifest, indent=2, default=str).encode())
    return files


def committed_runs(fs: pafs.FileSystem, root: str) -> list[dict]:
    """Manifests of every committed run under `root`, oldest first."""
    selector = pafs.FileSelector(posixpath.join(root, COMMITS), allow_not_found=True)
    runs = []
    for info in fs.get_file_info(selector):
        if info.path.endswith(".json"):
            with fs.open_input_stream(info.path) as f:
                runs.append(json.loads(f.read()))
    return sorted(runs, key=lambda r: (r.get("started_at", ""), r["run_id"]))


def read_committed(fs: pafs.FileSystem, root: str, columns: list[str] | None = None) -> pa.Table:
    """All rows of all committed runs, read from the files their markers list."""
    files = [f for run in committed_runs(fs, root) for f in run["files"]]
    if not files:
        return SCHEMA.empty_table().select(columns or SCHEMA.names)
    return pads.dataset(files, schema=SCHEMA, filesystem=fs, format="parquet").to_table(
        columns=columns)
