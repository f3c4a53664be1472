"""The key index of the annotation table: beside each data file, a sidecar holding its rows' text
hash keys, so a night learns which stored rows its texts can match by reading compact keys, and
then reads only the data files that hold a match, never the whole table.

A sidecar lives at `<table>/_keys/<the data file's path in the table>` (Parquet): one row per
data row with `key` (int64: the text hash's first 64 bits, `routing.hash_keys`; null for a row
without a hash), `task`, `target`, `model`, `prompt_version` and `status`, sorted by key. The
chunk writer writes it with its data file, before the chunk's commit.

Exact whatever happens, because the reader trusts a sidecar only for a data file of the snapshot
it reads:
- a crash between the files and the commit leaves a sidecar of a file no snapshot holds: unread;
- a data file without a sidecar (compacted by `optimize`, written by another tool, a sidecar
  lost) is read itself, its key columns only: a missing sidecar costs a read, never an answer;
- two texts sharing a key make a file a match: the plan compares the full hashes.
`index` writes the missing sidecars (after `optimize`, or to rebuild a lost index); `prune`
removes those whose data file is gone (after `vacuum`, which keeps `_`-prefixed folders).

Why not the alternatives (docs/performance.md has the figures): file statistics cannot prune
SHA-256 hashes (every file's min/max spans the hash space), and clustering files by hash
(Z-order) narrows each file's range, but a night's thousand random keys still fall in every
file; Parquet bloom filters are written by pyarrow but not used for pruning by its dataset
scanner, which the stored read and Ray's `read_delta` use; a key table beside the table (a
second Delta table) cannot commit in the same transaction as the rows.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from emoray.routing import Survey, hash_keys
from emoray.tasks import TaskRequest

FOLDER = "_keys"
COLUMNS = ("task", "target", "model", "prompt_version", "status")
"""What a sidecar holds beside the key: what the held check filters and marks on."""
SCHEMA = pa.schema([pa.field("key", pa.int64())] + [pa.field(c, pa.string()) for c in COLUMNS])
READERS = 16
"""Sidecars read at once (small objects: on S3 the latency, not the bytes, is the cost)."""


def sidecar_path(root: str, rel: str) -> str:
    """Where the sidecar of the data file at `rel` (relative to the table's `root`) lives."""
    return posixpath.join(root, FOLDER, rel)


def keys_of(rows: pa.Table) -> pa.Table:
    """A sidecar's rows for data rows holding `text_sha256` and `COLUMNS`, sorted by key."""
    keys, valid = hash_keys(rows["text_sha256"])
    out = pa.table({"key": pa.array(keys, pa.int64(), mask=~valid),
                    **{c: rows[c].cast(pa.string()) for c in COLUMNS}}, schema=SCHEMA)
    return out.sort_by("key")


def write(fs: pafs.FileSystem, root: str, rel: str, rows: pa.Table) -> None:
    """Write the sidecar of the data file at `rel` holding `rows` (with their task column)."""
    _store(fs, root, rel, keys_of(rows))


def _store(fs: pafs.FileSystem, root: str, rel: str, keys: pa.Table) -> None:
    """Write sidecar rows (`keys_of`) for the data file at `rel`."""
    path = sidecar_path(root, rel)
    if isinstance(fs, pafs.LocalFileSystem):  # S3 has no folders to create
        fs.create_dir(posixpath.dirname(path), recursive=True)
    with fs.open_output_stream(path) as out:
        pq.write_table(keys, out, compression="zstd")


@dataclass
class Candidate:
    """A data file of the snapshot that may hold rows the held check wants."""

    fragment: pads.ParquetFileFragment
    """The file as the snapshot's dataset names it (its path on the table's filesystem)."""
    rel: str
    task: str
    rows: int

    def read_keys(self, schema: pa.Schema, held: pads.Expression) -> pa.Table:
        """Its sidecar rows under `held`, read from the data file itself (key columns only)."""
        return keys_of(self.fragment.to_table(schema=schema, columns=["text_sha256", *COLUMNS],
                                              filter=held))


@dataclass
class Read:
    """What one held check read: sidecars, data files read for want of one, and the data files
    (and their rows) that hold a match, i.e. all the stored read then reads."""

    counts: Counter = field(default_factory=Counter)

    def add(self, **counts: int) -> None:
        self.counts.update(counts)

    def as_dict(self) -> dict[str, int]:
        return {k: self.counts.get(k, 0) for k in (
            "table_files", "candidate_files", "sidecars_read", "sidecar_bytes", "key_rows",
            "files_without_sidecar", "matched_files", "matched_rows")}


def candidates(dt, dataset: pads.Dataset, root: str,
               held: pads.Expression) -> list[Candidate]:
    """The data files of the snapshot `dt` (its pyarrow `dataset`) that the held filter (`held`:
    model, prompt versions, tasks) does not rule out by partition and file statistics."""
    rows = dict(zip(*(pa.table(dt.get_add_actions(flatten=True)).select(
        ["path", "num_records"]).to_pydict().values())))
    out = []
    for frag in dataset.get_fragments(filter=held):
        rel = frag.path[len(root):].lstrip("/") if frag.path.startswith(root) else frag.path
        task = pads.get_partition_keys(frag.partition_expression).get("task")
        out.append(Candidate(frag, rel, task, int(rows.get(rel, 0) or 0)))
    return out


def _sidecar(fs: pafs.FileSystem, root: str, c: Candidate, held: pads.Expression,
             wanted: np.ndarray | None) -> tuple[pa.Table | None, int, int]:
    """The sidecar's rows the held filter keeps (of them, with `wanted`, only those whose key
    is in it or null), its size and its row count; (None, 0, 0) when it is absent."""
    path = sidecar_path(root, c.rel)
    try:
        with fs.open_input_file(path) as f:
            size = f.size()
            # strings stay dictionary-encoded until the rows tonight can match are taken: a
            # sidecar holds one model and prompt version, decoding them all cost 4x the read
            keys = pq.read_table(f, read_dictionary=list(COLUMNS))
    except FileNotFoundError:
        return None, 0, 0
    except OSError as e:  # S3 reports a missing key as an OSError naming it
        if "NotFound" in str(e) or "NoSuchKey" in str(e) or "does not exist" in str(e):
            return None, 0, 0
        raise
    return _only(keys, wanted).cast(SCHEMA).filter(held), size, keys.num_rows


def _only(keys: pa.Table, wanted: np.ndarray | None) -> pa.Table:
    """Key rows whose key is in `wanted` (sorted, unique) or null; all of them without it."""
    if wanted is None:
        return keys
    column = keys["key"].combine_chunks()
    found = column.fill_null(0).to_numpy()
    if len(wanted):
        at = np.minimum(np.searchsorted(wanted, found), len(wanted) - 1)
        keep = wanted[at] == found
    else:
        keep = np.zeros(len(found), bool)
    keep |= ~column.is_valid().to_numpy(zero_copy_only=False)
    return keys.filter(pa.array(keep))


def scan(dt, dataset: pads.Dataset, fs: pafs.FileSystem, root: str,
         held: pads.Expression, read: Read,
         wanted: np.ndarray | None = None) -> Iterator[tuple[Candidate, pa.Table]]:
    """Each candidate data file of the snapshot `dt` (its pyarrow `dataset`) with its key rows
    under `held` (with `wanted`, sorted keys: only the rows whose key is one of them, or
    null): from its sidecar, or from the file itself when it has none. Counts what was read
    in `read`."""
    files = candidates(dt, dataset, root, held)
    read.add(table_files=len(dt.file_uris()), candidate_files=len(files))
    with ThreadPoolExecutor(READERS) as pool:
        for c, (keys, size, rows) in zip(files, pool.map(
                lambda c: _sidecar(fs, root, c, held, wanted), files)):
            if keys is None:
                keys = c.read_keys(dataset.schema, held)
                rows = keys.num_rows
                keys = _only(keys, wanted)
                read.add(files_without_sidecar=1)
            else:
                read.add(sidecars_read=1, sidecar_bytes=size)
            read.add(key_rows=rows)
            yield c, keys


@dataclass
class Matched:
    """The data files of one snapshot that hold rows a night's plan must read (`match`): their
    fragments, by path, and the snapshot's schema, to read just them through that snapshot."""

    fragments: dict[str, pads.ParquetFileFragment]
    schema: pa.Schema

    def dataset(self, files: list[str]) -> pads.FileSystemDataset:
        """The snapshot's dataset restricted to `files` (partitions, statistics and the
        table's schema kept: older files lacking newer columns read them as null)."""
        first = self.fragments[files[0]]
        return pads.FileSystemDataset([self.fragments[f] for f in files], self.schema,
                                      first.format, first.filesystem)


def match(dt, fs: pafs.FileSystem, root: str, held: pads.Expression, survey: Survey,
          requests: list[TaskRequest], read: Read) -> Matched:
    """Mark in `survey` which of tonight's keys the snapshot `dt` holds (`Survey.add_stored`,
    from the key index) and return the files that hold any."""
    dataset, fragments = dt.to_pyarrow_dataset(), {}
    for c, keys in scan(dt, dataset, fs, root, held, read, survey.keys):
        if survey.add_stored(c.fragment.path, keys, requests):
            fragments[c.fragment.path] = c.fragment
            read.add(matched_files=1, matched_rows=c.rows)
    return Matched(fragments, dataset.schema)


def index(dt, fs: pafs.FileSystem, root: str) -> dict[str, int]:
    """Write the sidecar of every data file of the snapshot that lacks one (the files `optimize`
    wrote, or all of them to rebuild a lost index); returns files checked and written."""
    everything, dataset = pads.scalar(True), dt.to_pyarrow_dataset()
    files = candidates(dt, dataset, root, everything)
    written = 0
    for c in files:
        if fs.get_file_info(sidecar_path(root, c.rel)).type == pafs.FileType.NotFound:
            _store(fs, root, c.rel, c.read_keys(dataset.schema, everything))
            written += 1
    return {"files": len(files), "written": written}


def prune(fs: pafs.FileSystem, root: str) -> int:
    """Delete the sidecars whose data file no longer exists (after `vacuum`); returns how many."""
    folder = posixpath.join(root, FOLDER)
    removed = 0
    for info in fs.get_file_info(pafs.FileSelector(folder, recursive=True,
                                                   allow_not_found=True)):
        if info.type != pafs.FileType.File:
            continue
        data = posixpath.join(root, info.path[len(folder):].lstrip("/"))
        if fs.get_file_info(data).type == pafs.FileType.NotFound:
            fs.delete_file(info.path)
            removed += 1
    return removed
