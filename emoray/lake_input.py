"""Tables as input: a Delta table named as `--input` is read through one snapshot (its live
data files at the latest version, or the one `--input-version` pins), never as the files of its
folder, whose `_delta_log/` and removed files would read as input.

The snapshot resolves, with deltalake, to the Parquet files it holds, and the night reads those
as it reads a folder of Parquet files (the same checks, dedup and routing). A table whose files
cannot be read that way is refused before any work, naming what to do: deletion vectors (a file's
deleted rows live outside it), column mapping (its columns have other names inside the files),
or an id, text or task column that is a partition column (its values live in the folder names).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow.fs as pafs

from emoray import s3clients
from emoray.config import S3Config
from emoray.locations import InputError, InputFile

DELTA_LOG = "_delta_log"
UNREADABLE_FEATURES = {
    "deletionVectors": "deletion vectors (rows a file no longer holds are listed beside it)",
    "columnMapping": "column mapping (the files hold the columns under other names)",
}


def is_delta(fs: pafs.FileSystem, path: str) -> bool:
    """Whether the folder `path` holds a Delta table (its `_delta_log/`)."""
    return fs.get_file_info(f"{path}/{DELTA_LOG}").type == pafs.FileType.Directory


@dataclass(frozen=True)
class DeltaInput:
    """One snapshot of a Delta input table: what a night read (`record`) and its files."""

    uri: str
    table_id: str
    version: int
    files: tuple[InputFile, ...]

    def record(self) -> dict[str, str]:
        """The source as the run's commit info and report keep it."""
        return {"input_format": "delta", "input_table_id": self.table_id,
                "input_version": str(self.version)}


def delta_input(uri: str, path: str, s3: S3Config, columns: dict[str, str],
                version: str | None = None) -> DeltaInput:
    """The snapshot of the Delta table at `uri` (folder `path` in its filesystem) at `version`
    (a number or an ISO timestamp; None: the latest), checked to hold `columns` ({role: name})
    as data columns of plain Parquet files."""
    from deltalake import DeltaTable

    from emoray.table import TableError, _as_version, _uri

    location = _uri(uri)
    dt = DeltaTable(location, storage_options=s3clients.delta_options(location, s3))
    if version is not None:
        try:
            dt.load_as_version(_as_version(version))
        except TableError as e:
            raise InputError(str(e).replace("--as-of", "--input-version")) from None
        except Exception as e:  # deltalake raises several kinds for an unknown version
            raise InputError(f"input table {uri} has no version {version}: {e}") from None
    where = f"input Delta table {uri} (version {dt.version()})"
    features = set(dt.protocol().reader_features or ())
    for feature in sorted(features & set(UNREADABLE_FEATURES)):
        raise InputError(f"{where} uses {UNREADABLE_FEATURES[feature]}, which emoray does not "
                         "read yet: write the texts to a table without it (or plain Parquet "
                         "files) for the night")
    names = [f.name for f in dt.schema().fields]
    partitions = set(dt.metadata().partition_columns)
    for role, column in columns.items():
        if column not in names:
            raise InputError(f"{where} has no {role} column {column!r} (columns: "
                             f"{', '.join(names)}); name it with --{role}-column")
        if column in partitions:
            raise InputError(f"{where}: the {role} column {column!r} is a partition column, "
                             "whose values live in folder names, not in the files emoray reads; "
                             f"name a data column with --{role}-column")
    prefix = "s3://"
    files = tuple(InputFile(u[len(prefix):] if u.startswith(prefix) else u, "parquet")
                  for u in sorted(dt.file_uris()))
    if not files:
        raise InputError(f"{where} holds no rows: nothing to annotate")
    return DeltaInput(uri, dt.metadata().id, dt.version(), files)
