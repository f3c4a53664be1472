"""The annotation table: its Arrow schema (a contract the Spark job and analysts rely on), its
layout in the object store, and the commit marker that makes a run visible.

Layout under the table root:
    data/run_date=YYYY-MM-DD/run_id=<run>/part-<chunk>.parquet   one file per chunk
    _commits/<run>-<chunk>.json                                  commit marker, written last
    _reports/<run>.json                                          run report
A chunk's rows count only once its marker exists; markers list their files, so readers never
list data folders and never see a crashed run's leftovers.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections import Counter
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

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

STATUSES = ("ok", "parse_error", "empty_text", "invalid_text", "truncated", "failed")

COMMITS = "_commits"
REPORTS = "_reports"


def run_dir(root: str, run_id: str, run_date: str) -> str:
    return posixpath.join(root, "data", f"run_date={run_date}", f"run_id={run_id}")


def _fault(point: str, chunk: int = 0) -> None:
    """Failure injection for crash tests: EMORAY_FAULT=<point>[@<chunk>] kills the process at
    that point of chunk <chunk> (default the first)."""
    wanted, _, at = os.environ.get("EMORAY_FAULT", "").partition("@")
    if wanted == point and chunk == int(at or 0):
        os._exit(17)


def _put_atomic(fs: pafs.FileSystem, path: str, data: bytes,
                fault: tuple[str, int] | None = None) -> None:
    """Write to a hidden temporary name, then move into place: readers see all or nothing
    (a local rename, or on S3 a server-side copy of one object)."""
    parent, name = posixpath.split(path)
    tmp = posixpath.join(parent, f".tmp-{name}")
    with fs.open_output_stream(tmp) as out:
        out.write(data)
    if fault:
        _fault(*fault)
    fs.move(tmp, path)


class RunWriter:
    """Writes one run's rows in chunks: each chunk is one Parquet file with a deterministic name
    (`part-<chunk>.parquet`, so a retried write replaces rather than adds) followed by its commit
    marker `_commits/<run>-<chunk>.json`. A crash loses at most the chunk in flight; the next
    run's incremental check annotates exactly what no marker covers."""

    def __init__(self, fs: pafs.FileSystem, root: str, run_id: str, run_date: str,
                 chunk_rows: int):
        self.fs, self.root, self.run_id, self.run_date = fs, root, run_id, run_date
        self.chunk_rows = chunk_rows
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.chunks = 0
        self.rows = 0
        self.status_counts: Counter = Counter()
        self.files: list[str] = []
        fs.create_dir(run_dir(root, run_id, run_date), recursive=True)
        fs.create_dir(posixpath.join(root, COMMITS), recursive=True)

    def write(self, batch: pa.Table) -> None:
        if batch.num_rows:
            self.pending.append(batch)
            self.pending_rows += batch.num_rows
        if self.pending_rows >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        data = pa.concat_tables(self.pending).cast(SCHEMA)
        name = f"part-{self.chunks:05d}.parquet"
        path = posixpath.join(run_dir(self.root, self.run_id, self.run_date), name)
        with self.fs.open_output_stream(path) as out:
            writer = pq.ParquetWriter(out, SCHEMA)
            half = data.num_rows // 2
            writer.write_table(data.slice(0, half))
            _fault("chunk-file-partial", self.chunks)
            writer.write_table(data.slice(half))
            writer.close()
        _fault("chunk-file-written", self.chunks)
        marker = {"run_id": self.run_id, "run_date": self.run_date, "chunk": self.chunks,
                  "files": [path], "rows": data.num_rows,
                  "committed_at": datetime.now(timezone.utc).isoformat()}
        _put_atomic(self.fs, posixpath.join(self.root, COMMITS,
                                            f"{self.run_id}-{self.chunks:05d}.json"),
                    json.dumps(marker, indent=2).encode(), fault=("marker-partial", self.chunks))
        counts = data.group_by("status").aggregate([("status", "count")]).to_pydict()
        self.status_counts.update(dict(zip(counts["status"], counts["status_count"])))
        self.files.append(path)
        self.rows += data.num_rows
        self.chunks += 1
        self.pending, self.pending_rows = [], 0


def _read_json_files(fs: pafs.FileSystem, folder: str) -> list[dict]:
    selector = pafs.FileSelector(folder, allow_not_found=True)
    out = []
    for info in fs.get_file_info(selector):
        if info.base_name.endswith(".json") and not info.base_name.startswith("."):
            with fs.open_input_stream(info.path) as f:
                out.append(json.loads(f.read()))
    return out


def committed_chunks(fs: pafs.FileSystem, root: str) -> list[dict]:
    """Commit markers under `root`, oldest first."""
    return sorted(_read_json_files(fs, posixpath.join(root, COMMITS)),
                  key=lambda m: (m["committed_at"], m["run_id"], m["chunk"]))


def committed_files(fs: pafs.FileSystem, root: str) -> list[str]:
    return [f for m in committed_chunks(fs, root) for f in m["files"]]


def read_committed(fs: pafs.FileSystem, root: str, columns: list[str] | None = None) -> pa.Table:
    """All rows of all committed chunks, read from the files their markers list."""
    files = committed_files(fs, root)
    if not files:
        return SCHEMA.empty_table().select(columns or SCHEMA.names)
    return pads.dataset(files, schema=SCHEMA, filesystem=fs, format="parquet").to_table(
        columns=columns)


def write_report(fs: pafs.FileSystem, root: str, report: dict) -> None:
    fs.create_dir(posixpath.join(root, REPORTS), recursive=True)
    _put_atomic(fs, posixpath.join(root, REPORTS, f"{report['run_id']}.json"),
                json.dumps(report, indent=2, default=str).encode())


def run_reports(fs: pafs.FileSystem, root: str) -> list[dict]:
    """Run reports, newest first; runs with committed chunks but no report (a driver that died)
    appear with status `incomplete`."""
    reports = {r["run_id"]: r for r in _read_json_files(fs, posixpath.join(root, REPORTS))}
    for m in committed_chunks(fs, root):
        reports.setdefault(m["run_id"], {"run_id": m["run_id"], "status": "incomplete",
                                         "started_at": m["committed_at"], "rows_out": 0})
        if reports[m["run_id"]]["status"] == "incomplete":
            reports[m["run_id"]]["rows_out"] += m["rows"]
    return sorted(reports.values(), key=lambda r: r.get("started_at", ""), reverse=True)
