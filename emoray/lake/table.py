"""The annotation table: a Delta Lake table (written with `deltalake`, i.e. delta-rs; no JVM, no
catalog service), its Arrow schema (a contract the Spark job and analysts rely on), the one
writer that commits a run chunk by chunk, and the one reader of its snapshots.

A chunk's rows become visible only in the Delta commit that adds its files, so every Delta
reader (Spark, Polars, DuckDB, Trino/Athena, Ray Data `read_delta`, pandas) sees exactly what
committed; a crash leaves only unreferenced files, which `vacuum` removes. Each commit carries an
app transaction (app id = run id, version = chunk number), so a retried or resumed chunk that
already committed is skipped, never added twice, and the run's lineage in its commit info, from
which `emoray runs` counts what a run wrote.

Partitioned by `task`: the nightly "what is already held" read asks for the requested tasks of
one model and prompt version, analysts filter by task; model, prompt version, status, run id and
annotation time are pruned by the per-file statistics each commit records (a chunk holds one
run of one model, written within seconds). Figures: docs/performance.md.
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from emoray import columns
from emoray.lake import key_index, s3clients
from emoray.config import S3Config
from emoray.errors import EXIT_INPUT, EmorayError
from emoray.lake.locations import filesystem_for

SCHEMA = columns.SCHEMA
"""Columns of the long annotation table, each described in `emoray.columns.TABLE`."""

PARTITION_BY = ["task"]

STATS_COLUMNS = tuple(f.name for f in SCHEMA if f.name not in PARTITION_BY
                      and not pa.types.is_list(f.type))
"""Columns whose null count and exact min/max each commit records, for readers to skip files.
Every non-list column: deltalake's pyarrow reader takes a column without statistics for one
whose values are all null, and would skip every file on a filter over it."""

REPORTS = "_reports"
LEGACY_COMMITS = "_commits"


class TableError(EmorayError, ValueError):
    """The annotation table is missing, in an old layout, or cannot be read as asked."""

    exit_code = EXIT_INPUT


def _uri(location: str) -> str:
    if location.startswith("s3a://"):
        location = "s3://" + location[len("s3a://"):]
    if location.startswith("s3://"):
        return location.rstrip("/")
    if "://" in location:
        raise TableError(f"unsupported table location {location!r}: use s3://bucket/prefix or "
                         "a local path")
    return os.path.abspath(location)


def _as_version(as_of: str | int | datetime) -> int | datetime:
    """A version number, or a timestamp (ISO 8601; UTC when no zone is given)."""
    if isinstance(as_of, (int, datetime)):
        return as_of
    if as_of.strip().isdigit():
        return int(as_of)
    try:
        when = datetime.fromisoformat(as_of.strip().replace("Z", "+00:00"))
    except ValueError:
        raise TableError(f"--as-of {as_of!r} is neither a table version (e.g. 3) nor a "
                         "timestamp (e.g. 2026-11-24T02:00:00Z)") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


class AnnotationTable:
    """The annotation table at `location` (local path, `s3://` or `s3a://`)."""

    def __init__(self, location: str, s3: S3Config | None = None):
        self.s3 = s3 or S3Config()
        self.uri = _uri(location)
        self.reader_options = s3clients.delta_options(self.uri, self.s3, retries=False)
        self.options = s3clients.delta_options(self.uri, self.s3)
        """deltalake's settings: where the table is, plus the same retry budget as the rest
        of emoray (`S3Config.max_attempts`)."""

    def _fs(self) -> tuple[pafs.FileSystem, str]:
        return filesystem_for(self.uri, self.s3)

    def exists(self) -> bool:
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(self.uri, self.options)

    def check_layout(self) -> None:
        """Refuse a location holding a table in the old commit-marker layout, naming `migrate`."""
        fs, root = self._fs()
        if fs.get_file_info(posixpath.join(root, LEGACY_COMMITS)).type == pafs.FileType.Directory:
            raise TableError(
                f"{self.uri} is an annotation table in the old commit-marker layout, which only "
                "emoray could read correctly; copy its committed rows into a Delta table with "
                f"`emoray table migrate {self.uri} NEW_LOCATION` and point emoray at the new one")

    def snapshot(self, as_of: str | int | datetime | None = None):
        """The `deltalake.DeltaTable` at the latest version (or `as_of` a version or time)."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            dt = DeltaTable(self.uri, storage_options=self.options)
        except TableNotFoundError:
            self.check_layout()
            raise TableError(f"no annotation table at {self.uri}: run `emoray annotate` with "
                             "this --output first, or check the path") from None
        if as_of is not None:
            try:
                dt.load_as_version(_as_version(as_of))
            except Exception as e:  # deltalake raises several kinds for an unknown version
                raise TableError(f"table {self.uri} has no version as of {as_of}: {e}") from None
        return dt

    def create(self):
        """The table, created empty with the schema and partitioning when absent; an existing
        table made before a column of SCHEMA existed gains it (nullable: older rows read it as
        null)."""
        from deltalake import DeltaTable, Field

        if self.exists():
            dt = self.snapshot()
            have = {f.name for f in dt.schema().fields}
            missing = [f for f in SCHEMA if f.name not in have]
            if missing:
                dt.alter.add_columns([Field.from_arrow(f) for f in missing])
            return dt
        self.check_layout()
        for attempt in s3clients.commit_retrying(self.s3):
            with attempt:
                try:
                    return DeltaTable.create(self.uri, SCHEMA, partition_by=PARTITION_BY,
                                             mode="ignore", storage_options=self.options)
                except Exception:  # another run (or a lost reply of ours) created it
                    if self.exists():
                        return self.snapshot()
                    raise

    def read(self, columns: list[str] | None = None, filter: pads.Expression | None = None,
             as_of: str | int | datetime | None = None) -> pa.Table:
        """Rows of one snapshot (the latest, or `as_of`), only `columns`, with `filter` pushed
        down to partitions and file statistics. An absent table reads as empty."""
        columns = columns or SCHEMA.names
        if as_of is None and not self.exists():
            self.check_layout()
            return SCHEMA.empty_table().select(columns)
        data = self.snapshot(as_of).to_pyarrow_dataset().to_table(columns=columns, filter=filter)
        return data.cast(pa.schema([SCHEMA.field(c) for c in columns]))

    def file_uris(self, dt=None) -> list[str]:
        """The data files of one snapshot, as full URIs (`s3://…` or absolute paths)."""
        dt = dt or self.snapshot()
        return [u if "://" in u or u.startswith("/") else posixpath.join(self.uri, u)
                for u in dt.file_uris()]

    def history(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Commits, newest first: version, timestamp, operation, and emoray's commit info."""
        return self.snapshot().history(limit)


def held_filter(model: pads.Expression, prompt_versions: dict[str, str]) -> pads.Expression:
    """Rows where `model` holds (`ModelSpec.same_model` of the `model` field), under the
    current prompt version of each task in `prompt_versions`."""
    expr = None
    for task, version in prompt_versions.items():
        one = (pads.field("task") == task) & (pads.field("prompt_version") == version)
        expr = one if expr is None else expr | one
    return model & expr


def _stat(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value


def file_stats(data: pa.Table) -> str:
    """Delta `stats` of one data file: row count, and min/max/null count of STATS_COLUMNS, which
    readers use to skip files."""
    mins, maxs, nulls = {}, {}, {}
    for name in STATS_COLUMNS:
        col = data[name]
        nulls[name] = col.null_count
        if col.null_count < len(col):
            mm = pc.min_max(col).as_py()
            mins[name], maxs[name] = _stat(mm["min"]), _stat(mm["max"])
    return json.dumps({"numRecords": data.num_rows, "minValues": mins, "maxValues": maxs,
                       "nullCount": nulls})


class ChunkWriter:
    """Commits one run's rows, chunk by chunk: each chunk's files are written first (one per
    task), then added in one Delta transaction carrying the app transaction (run id, chunk) and
    the run's lineage. A chunk whose number the table already records for this run is skipped,
    so a retried commit lands once and a resumed run (same run id) continues after its last
    committed chunk. A crash loses at most the chunk in flight; its files stay unreferenced."""

    def __init__(self, table: AnnotationTable, run_id: str, chunk_rows: int,
                 lineage: dict[str, str] | None = None):
        self.table, self.run_id, self.chunk_rows = table, run_id, chunk_rows
        self.lineage = lineage or {}
        self.dt = table.create()
        recorded = self.dt.transaction_version(run_id)
        self.first_chunk = self.chunks = 0 if recorded is None else recorded + 1
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.rows = 0
        self.status_counts: Counter = Counter()
        self.fs, self.root = table._fs()

    def write(self, batch: pa.Table) -> None:
        if batch.num_rows:
            self.pending.append(batch)
            self.pending_rows += batch.num_rows
        if self.pending_rows >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        self.commit_chunk(pa.concat_tables(self.pending).cast(SCHEMA), self.chunks)
        self.chunks += 1
        self.pending, self.pending_rows = [], 0

    def commit_chunk(self, data: pa.Table, chunk: int) -> bool:
        """Write and commit chunk `chunk` unless the table already records it for this run;
        True when this call committed it."""
        if self._recorded(chunk):
            return False
        self.commit(self.write_files(data, chunk), data, chunk)
        return True

    def _recorded(self, chunk: int) -> bool:
        self.dt.update_incremental()
        recorded = self.dt.transaction_version(self.run_id)
        return recorded is not None and recorded >= chunk

    def write_files(self, data: pa.Table, chunk: int) -> list:
        """One Parquet file per task (the partition column lives in the path, as Delta asks),
        each with its key index sidecar (`emoray.lake.key_index`); returns their add actions."""
        from deltalake.transaction import AddAction

        actions = []
        for task in pc.unique(data["task"]).to_pylist():
            part = data.filter(pc.equal(data["task"], task))
            rel = f"task={task}/part-{self.run_id}-{chunk:05d}-{uuid.uuid4().hex[:8]}.parquet"
            path = posixpath.join(self.root, rel)
            if isinstance(self.fs, pafs.LocalFileSystem):  # S3 has no folders to create
                self.fs.create_dir(posixpath.dirname(path), recursive=True)
            with self.fs.open_output_stream(path) as out:
                pq.write_table(part.drop_columns(PARTITION_BY), out, compression="snappy")
            key_index.write(self.fs, self.root, rel, part)
            size = self.fs.get_file_info(path).size
            actions.append(AddAction(
                path=rel, size=size, partition_values={"task": task},
                modification_time=int(datetime.now(timezone.utc).timestamp() * 1000),
                data_change=True, stats=file_stats(part)))
        return actions

    def commit(self, actions: list, data: pa.Table, chunk: int) -> None:
        """Add the chunk's files in one transaction; count what committed. A commit that fails
        on the object store is retried (`s3clients.commit_retrying`) unless the table shows the
        failed attempt landed after all."""
        from deltalake.exceptions import CommitFailedError
        from deltalake.transaction import CommitProperties, Transaction

        counts = status_counts(data)
        info = {**self.lineage, "run_id": self.run_id, "chunk": str(chunk),
                "rows": str(data.num_rows), "status_counts": json.dumps(counts)}

        for attempt in s3clients.commit_retrying(self.table.s3):
            with attempt:
                if attempt.retry_state.attempt_number > 1 and self._recorded(chunk):
                    break
                try:
                    self.dt.create_write_transaction(
                        actions, mode="append", schema=SCHEMA, partition_by=PARTITION_BY,
                        commit_properties=CommitProperties(
                            custom_metadata=info,
                            app_transactions=[Transaction(app_id=self.run_id, version=chunk)]))
                except CommitFailedError:  # a conflict with our own landed attempt is none
                    if not self._recorded(chunk):
                        raise
        self.status_counts.update(counts)
        self.rows += data.num_rows


ROW_KEY = ["doc_id", "task", "target", "model", "prompt_version"]
"""What one row answers: an input row's task request, by one model under one prompt version."""


def pair_counts(table: AnnotationTable, pairs: int, keys: list[str] = ROW_KEY) -> dict:
    """Rows, and missing and duplicate keys against the `pairs` the input asked for: the
    exactly-once check of the benchmarks."""
    held = table.read(keys)
    distinct = held.group_by(keys).aggregate([([], "count_all")]).num_rows
    return {"rows": held.num_rows, "missing": pairs - distinct,
            "duplicates": held.num_rows - distinct}


def status_counts(rows: pa.Table) -> dict[str, int]:
    """Rows per status."""
    grouped = rows.group_by("status").aggregate([("status", "count")]).to_pydict()
    return dict(zip(grouped["status"], grouped["status_count"]))


def runs(table: AnnotationTable) -> dict[str, dict]:
    """What each run committed, from the table's own commits: rows, chunks, status counts, first
    and last commit time and version."""
    out: dict[str, dict] = {}
    if not table.exists():
        return out
    for c in reversed(table.history()):
        run_id = c.get("run_id")
        if run_id is None or c.get("operation") != "WRITE":
            continue
        r = out.setdefault(run_id, {"rows_out": 0, "chunks": 0, "status_counts": Counter(),
                                    "first_commit_version": c["version"]})
        r["rows_out"] += int(c.get("rows", 0))
        r["chunks"] += 1
        r["status_counts"].update(json.loads(c.get("status_counts", "{}")))
        r["last_commit_version"] = c["version"]
        r["last_commit_at"] = datetime.fromtimestamp(c["timestamp"] / 1000, timezone.utc
                                                     ).isoformat()
    for r in out.values():
        r["status_counts"] = dict(r["status_counts"])
    return out


def write_report(table: AnnotationTable, report: dict) -> None:
    """The run's report beside the table (`_reports/<run>.json`): what the table cannot say
    (rows read, prompts, tokens, wall time, bad files). Its row counts are not trusted: readers
    take them from the table's commits (`runs`)."""
    fs, root = table._fs()
    fs.create_dir(posixpath.join(root, REPORTS), recursive=True)
    with fs.open_output_stream(posixpath.join(root, REPORTS, f"{report['run_id']}.json")) as f:
        f.write(json.dumps(report, indent=2, default=str).encode())


def read_json_files(fs: pafs.FileSystem, folder: str) -> list[dict]:
    """Every `*.json` object directly under `folder` (none when it is absent)."""
    out = []
    for info in fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True)):
        if info.base_name.endswith(".json") and not info.base_name.startswith("."):
            with fs.open_input_stream(info.path) as f:
                out.append(json.loads(f.read()))
    return out


def run_reports(table: AnnotationTable) -> list[dict]:
    """Run reports, newest first, with rows and status counts from the table's commits. Runs
    with commits but no report (a driver that died) appear with status `incomplete`."""
    table.check_layout()
    fs, root = table._fs()
    reports = {r["run_id"]: r for r in read_json_files(fs, posixpath.join(root, REPORTS))}
    committed = runs(table)
    for run_id, counts in committed.items():
        reports.setdefault(run_id, {"run_id": run_id, "status": "incomplete",
                                    "started_at": counts["last_commit_at"]})
    for run_id, r in reports.items():
        r.update(committed.get(run_id, {"rows_out": 0, "chunks": 0, "status_counts": {}}))
    return sorted(reports.values(), key=lambda r: r.get("started_at", ""), reverse=True)


def optimize(table: AnnotationTable) -> dict:
    """Compact small files into larger ones (one Delta commit; readers of older versions keep
    their files until `vacuum`), then write the new files' key index sidecars (until then the
    held check reads those files' key columns: slower, as exact)."""
    dt = table.snapshot()
    before = len(dt.file_uris())
    metrics = dt.optimize.compact()
    dt.update_incremental()
    indexed = key_index.index(dt, *table._fs())
    return {"version": dt.version(), "files_before": before, "files_after": len(dt.file_uris()),
            "files_added": metrics.get("numFilesAdded"),
            "files_removed": metrics.get("numFilesRemoved"), "sidecars_written": indexed["written"]}


def maintain(table: AnnotationTable, min_small_files: int, retain_hours: float,
             small_bytes: int = 16 << 20) -> dict | None:
    """The nightly job's upkeep: when the table holds at least `min_small_files` files under
    `small_bytes`, compact them and vacuum what no version of the last `retain_hours`
    references; otherwise nothing (None). Each night adds about one file per task and chunk,
    so compaction runs every few weeks, rewriting only the small files."""
    sizes = pa.table(table.snapshot().get_add_actions(flatten=True))["size_bytes"]
    small = pc.sum(pc.less(sizes, small_bytes)).as_py() or 0
    if small < min_small_files:
        return None
    result = optimize(table)
    result["vacuumed_files"] = len(vacuum(table, retain_hours, dry_run=False))
    return result


def index(table: AnnotationTable) -> dict:
    """Bring the key index (`emoray.lake.key_index`) in line with the latest snapshot: write the
    sidecars its data files lack, delete those of files that are gone."""
    dt = table.snapshot()
    result = key_index.index(dt, *table._fs())
    return {**result, "version": dt.version(), "pruned": key_index.prune(*table._fs())}


def vacuum(table: AnnotationTable, retain_hours: float, dry_run: bool = True) -> list[str]:
    """Files under the table that no version within `retain_hours` references: compacted-away
    files and a crashed chunk's never-committed ones. Deletes them unless `dry_run`, and then
    the key index sidecars whose data file is gone."""
    dt = table.snapshot()
    removed = dt.vacuum(retention_hours=int(retain_hours), dry_run=dry_run,
                        enforce_retention_duration=False, full=True)
    if not dry_run:
        key_index.prune(*table._fs())
    return removed
