"""The enriched table analysts read, as a Delta table committed in one transaction.

Spark writes the joined rows as Parquet files into a staging folder inside the table's location
(`<output>/staged-<run>/`, partition folders below it); nothing reads them there, as no Delta
version lists them. One deltalake transaction then makes them the table's next version, with
each file's statistics read from its Parquet footer: readers see the previous version or the
new one, never a mix, and a crash before the commit leaves the previous version as it was (its
staged files are referenced by no version, and `emoray table vacuum` removes them).

What a commit replaces: without `partition_by`, the whole table (an overwrite); with it, only
the partitions the night wrote (their current files removed in the same transaction), as
Spark's dynamic partition overwrite did, so a night enriching one date leaves the others alone.
The staging folder is not hidden (no `_` or `.`): Delta's vacuum skips hidden folders, so files
a removed version held there would never be deleted.
"""

from __future__ import annotations

import json
import posixpath
import time
import uuid

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from emoray.lake import locations, partitions, s3clients, table
from emoray.config import S3Config
from emoray.errors import EXIT_INPUT, EmorayError
from emoray.lake.partitions import HIVE_NULL

STAGED = "staged-"
class EnrichedTableError(EmorayError, ValueError):
    """The output location cannot take the enriched Delta table as asked."""

    exit_code = EXIT_INPUT


def staging_folder(output: str) -> str:
    """A new staging folder inside the table at `output` (same scheme as `output`)."""
    return f"{output.rstrip('/')}/{STAGED}{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"


def check_output(output: str, s3: S3Config) -> None:
    """Refuse an output location holding data files but no Delta log (a plain Parquet table of
    an earlier emoray): committing there would leave its files beside the table's."""
    fs, root = locations.filesystem_for(table._uri(output), s3)
    if table.AnnotationTable(output, s3).exists():
        return
    found = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    if any(f.type == pafs.FileType.File and f.base_name.endswith(".parquet")
           and STAGED not in f.path for f in found):
        raise EnrichedTableError(
            f"output {output} holds Parquet files but no Delta table (an enriched table of an "
            "earlier emoray, written as plain Parquet): move them away or choose another "
            "--output; the enriched table is now a Delta table")


def _partition_values(relative: str, partition_by: list[str]) -> dict[str, str | None]:
    """A staged file's partition values (its Hive folders, as the input's are read)."""
    folders = dict(partitions.values("", relative))
    return {c: None if folders.get(c) in (None, HIVE_NULL) else folders[c] for c in partition_by}


def _text(value) -> str | None:
    """A partition value as Delta's log and Hive folder names write it."""
    if value is None or isinstance(value, str):
        return value
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _json_value(value):
    if isinstance(value, bytes):
        return None
    return value.isoformat() if hasattr(value, "isoformat") else value


def file_stats(metadata: pq.FileMetaData) -> str:
    """Delta's per-file statistics (rows; min, max and nulls of each top-level primitive
    column) from a Parquet footer."""
    mins, maxs, nulls = {}, {}, {}
    schema = metadata.schema.to_arrow_schema()
    for i, name in enumerate(metadata.schema.names):
        if name not in schema.names or pa.types.is_nested(schema.field(name).type):
            continue
        stats = [metadata.row_group(g).column(i).statistics for g in range(metadata.num_row_groups)]
        if not stats or any(s is None for s in stats):
            continue
        nulls[name] = sum(s.null_count for s in stats)
        have = [s for s in stats if s.has_min_max]
        if have and len(have) == len(stats):
            low, high = min(s.min for s in have), max(s.max for s in have)
            if _json_value(low) is not None:
                mins[name], maxs[name] = _json_value(low), _json_value(high)
    return json.dumps({"numRecords": metadata.num_rows, "minValues": mins, "maxValues": maxs,
                       "nullCount": nulls})


def commit_staged(output: str, staged: str, schema: pa.Schema, partition_by: list[str],
                  s3: S3Config, info: dict[str, str],
                  replace: frozenset[tuple] | None = None, replace_all: bool = False) -> int:
    """Make the Parquet files under `staged` the enriched table's next version (see the module's
    docstring), with `info` in its commit info; with `partition_by`, the partitions `replace`
    names (values in `partition_by` order) are replaced too, written or not (a partition whose
    rows all left the downstream), and with `replace_all` every partition (the night wrote the
    whole of a complete downstream: partitions it lacks are gone from it). Then delete what
    else Spark left there (its `_SUCCESS` and checksum files). Returns the new version."""
    from deltalake import DeltaTable
    from deltalake import Schema as DeltaSchema
    from deltalake.transaction import (AddAction, CommitProperties, RemoveAction,
                                       create_table_with_add_actions)

    uri = table._uri(output)
    options = s3clients.delta_options(uri, s3)
    fs, root = locations.filesystem_for(uri, s3)
    _, staged_path = locations.filesystem_for(table._uri(staged), s3)
    adds, leftovers, now = [], [], int(time.time() * 1000)
    for f in fs.get_file_info(pafs.FileSelector(staged_path, recursive=True,
                                                allow_not_found=True)):
        if f.type != pafs.FileType.File:
            continue
        relative = f.path[len(staged_path):].strip("/")
        if not f.base_name.endswith(".parquet") or f.base_name.startswith(("_", ".")):
            leftovers.append(f.path)
            continue
        with fs.open_input_file(f.path) as fh:
            stats = file_stats(pq.ParquetFile(fh).metadata)
        adds.append(AddAction(posixpath.relpath(f.path, root), f.size,
                              _partition_values(relative, partition_by), now, True, stats))
    properties = CommitProperties(custom_metadata={**info, "emoray": "enrich"})
    schema = DeltaSchema.from_arrow(schema)
    if not DeltaTable.is_deltatable(uri, options):
        create_table_with_add_actions(uri, schema, adds, mode="error", partition_by=partition_by
                                      or None, storage_options=options,
                                      commit_properties=properties)
    else:
        dt = DeltaTable(uri, storage_options=options)
        if partition_by:
            written = {tuple(a.partition_values[c] for c in partition_by) for a in adds} | {
                tuple(map(_text, values)) for values in replace or ()}
            removes = []
            for a in pa.table(dt.get_add_actions(flatten=True)).to_pylist():
                values = {c: _text(a.get(f"partition.{c}")) for c in partition_by}
                if replace_all or tuple(values.values()) in written:
                    removes.append(RemoveAction(a["path"], True, now, a["size_bytes"], values))
            dt.create_write_transaction([*removes, *adds], "append", schema, partition_by,
                                        commit_properties=properties)
        else:
            dt.create_write_transaction(adds, "overwrite", schema,
                                        commit_properties=properties)
    for path in leftovers:
        fs.delete_file(path)
    return DeltaTable(uri, storage_options=options).version()
