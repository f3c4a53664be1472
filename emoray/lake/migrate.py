"""Copy an annotation table of the old commit-marker layout into a Delta table.

The old layout (before the table became Delta) kept data under `data/…/part-<chunk>.parquet`
and a marker `_commits/<run>-<chunk>.json` per committed chunk, listing its files; a chunk
without a marker never committed. This module is the only code that still knows that layout:
it copies the rows of marked chunks only, one Delta commit per old chunk carrying the same app
transaction (run id, chunk), so an interrupted migration re-run copies each chunk once.
"""

from __future__ import annotations

import posixpath

import pyarrow.dataset as pads
import pyarrow.fs as pafs

from emoray.lake import locations, table
from emoray.config import S3Config


def legacy_chunks(fs: pafs.FileSystem, root: str) -> list[dict]:
    """The old layout's commit markers, oldest first."""
    markers = table.read_json_files(fs, posixpath.join(root, table.LEGACY_COMMITS))
    return sorted(markers, key=lambda m: (m["committed_at"], m["run_id"], m["chunk"]))


def migrate(old: str, new: str, s3: S3Config | None = None) -> dict:
    """Copy the committed rows of the marker-layout table `old` into the Delta table `new`;
    returns counts (committed chunks and rows found, rows copied, files left behind)."""
    s3 = s3 or S3Config()
    fs, root = locations.filesystem_for(old, s3)
    markers = legacy_chunks(fs, root)
    if not markers:
        raise table.TableError(f"{old} holds no commit markers ({table.LEGACY_COMMITS}/): not an "
                               "annotation table of the old layout")
    target = table.AnnotationTable(new, s3)
    committed = {f for m in markers for f in m["files"]}
    data_files = [i.path for i in fs.get_file_info(pafs.FileSelector(
        posixpath.join(root, "data"), recursive=True, allow_not_found=True))
        if i.type == pafs.FileType.File and i.path.endswith(".parquet")]
    copied = rows = 0
    writers: dict[str, table.ChunkWriter] = {}
    for m in markers:
        data = pads.dataset(m["files"], schema=table.SCHEMA, filesystem=fs,
                            format="parquet").to_table()
        rows += data.num_rows
        if m["run_id"] not in writers:
            writers[m["run_id"]] = table.ChunkWriter(target, m["run_id"], chunk_rows=1,
                                                     lineage={"migrated_from": old})
        if writers[m["run_id"]].commit_chunk(data, m["chunk"]):
            copied += data.num_rows
    return {"old": old, "new": target.uri, "chunks": len(markers), "committed_rows": rows,
            "rows_copied": copied, "uncommitted_files_skipped": len(set(data_files) - committed),
            "version": target.snapshot().version()}
