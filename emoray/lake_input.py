"""The night's input: a folder of files, or a lake table read through one snapshot.

A Delta table (a location holding `_delta_log/`) or an Iceberg table (`iceberg://namespace.table`,
found through a pyiceberg catalog) is read at its latest version, or at the one
`--input-version` pins, never as the files of its folder: its log, metadata and the files an
overwrite or a delete removed would read as input. The snapshot resolves to the Parquet files it
holds, and the night reads those as it reads a folder of Parquet files (the same checks, dedup
and routing). A table whose files cannot be read that way is refused before any work, saying
why: deletion vectors or Iceberg delete files (a file's deleted rows are listed beside it),
Delta column mapping (the files hold the columns under other names), or an id, text or task
column that is a Delta partition column (its values live in folder names).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow.fs as pafs

from emoray import s3clients
from emoray.config import AnnotateConfig, ConfigError, S3Config
from emoray.locations import InputError, InputFile, filesystem_for, list_inputs, screen_files

DELTA_LOG = "_delta_log"
ICEBERG = "iceberg://"
UNREADABLE_FEATURES = {
    "deletionVectors": "deletion vectors (rows a file no longer holds are listed beside it)",
    "columnMapping": "column mapping (the files hold the columns under other names)",
}


@dataclass(frozen=True)
class TableInput:
    """One snapshot of an input table: what the night read (`record`) and its data files."""

    format: str
    table_id: str
    version: int
    files: tuple[InputFile, ...]

    def record(self) -> dict[str, str]:
        """The source as the run's commit info, report and dry run keep it."""
        return {"input_format": self.format, "input_table_id": self.table_id,
                "input_version": str(self.version)}


@dataclass(frozen=True)
class NightInput:
    """Where the night's rows are: the files' filesystem, the good files, the bad ones
    ({path: reason}, under `on_bad_file` skip or quarantine) and the table snapshot, if any."""

    fs: pafs.FileSystem
    files: list[InputFile]
    bad_files: dict[str, str]
    table: TableInput | None


def resolve(config: AnnotateConfig, columns: dict[str, str]) -> NightInput:
    """The input `config` names, checked to hold `columns` ({role: name}) before any work."""
    uri, version = config.input, config.input_version
    if uri.startswith(ICEBERG):
        fs, snapshot = iceberg_input(uri, config.s3, config.iceberg_catalog, version)
    else:
        fs, path = filesystem_for(uri, config.s3)
        if is_delta(fs, path):
            snapshot = delta_input(uri, config.s3, columns, version)
        elif version is not None:
            raise ConfigError(f"--input-version {version} names a version of a table, but input "
                              f"{uri} is not one (no _delta_log/, not iceberg://)")
        else:
            good, bad = screen_files(fs, list_inputs(uri, fs, path, config.format), columns,
                                     config.on_bad_file)
            return NightInput(fs, good, bad, None)
    good, _ = screen_files(fs, list(snapshot.files), columns, "fail")
    return NightInput(fs, good, {}, snapshot)


def is_delta(fs: pafs.FileSystem, path: str) -> bool:
    """Whether the folder `path` holds a Delta table (its `_delta_log/`)."""
    return fs.get_file_info(f"{path}/{DELTA_LOG}").type == pafs.FileType.Directory


def _file_path(uri: str) -> str:
    """A data file's URI as a path in its pyarrow filesystem."""
    for scheme in ("s3://", "s3a://", "file://"):
        if uri.startswith(scheme):
            return uri[len(scheme):]
    return uri


def _files(uris) -> tuple[InputFile, ...]:
    return tuple(InputFile(_file_path(u), "parquet") for u in sorted(uris))


def delta_input(uri: str, s3: S3Config, columns: dict[str, str],
                version: str | None = None) -> TableInput:
    """The snapshot of the Delta table at `uri` at `version` (a number or an ISO timestamp;
    None: the latest), checked to hold `columns` as data columns of plain Parquet files."""
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
    for feature in sorted(set(dt.protocol().reader_features or ()) & set(UNREADABLE_FEATURES)):
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
    files = _files(dt.file_uris())
    if not files:
        raise InputError(f"{where} holds no rows: nothing to annotate")
    return TableInput("delta", dt.metadata().id, dt.version(), files)


def iceberg_input(uri: str, s3: S3Config, catalog: dict[str, str],
                  version: str | None = None) -> tuple[pafs.FileSystem, TableInput]:
    """The snapshot of the Iceberg table `iceberg://namespace.table` at `version` (a snapshot
    id or an ISO timestamp; None: the current one), found through the pyiceberg catalog of
    `catalog`'s properties (the S3 endpoint and region of `s3` fill in those unset), and the
    filesystem of its data files."""
    try:
        from pyiceberg.catalog import load_catalog
        from pyiceberg.exceptions import NoSuchTableError
    except ImportError:
        raise ConfigError(f"input {uri} is an Iceberg table: install pyiceberg "
                          "(pip install 'emoray[iceberg]')") from None
    from emoray.table import _as_version

    name = uri[len(ICEBERG):].strip("/")
    properties = dict(catalog)
    if s3.endpoint():
        properties.setdefault("s3.endpoint", s3.endpoint())
    if s3.resolved_region():
        properties.setdefault("s3.region", s3.resolved_region())
    try:
        table = load_catalog(properties.pop("name", "default"), **properties).load_table(name)
    except NoSuchTableError:
        raise InputError(f"input {uri}: the catalog holds no table {name!r}") from None
    snapshot = table.current_snapshot()
    if version is not None:
        try:
            pinned = _as_version(version)
        except ValueError as e:
            raise InputError(str(e).replace("--as-of", "--input-version")) from None
        snapshot = (table.snapshot_by_id(pinned) if isinstance(pinned, int)
                    else table.snapshot_as_of_timestamp(int(pinned.timestamp() * 1000)))
        if snapshot is None:
            raise InputError(f"input table {uri} has no snapshot {version}")
    if snapshot is None:
        raise InputError(f"input table {uri} holds no snapshot: nothing to annotate")
    tasks = list(table.scan(snapshot_id=snapshot.snapshot_id).plan_files())
    if any(t.delete_files for t in tasks):
        raise InputError(f"input Iceberg table {uri} (snapshot {snapshot.snapshot_id}) has delete "
                         "files (rows a file no longer holds are listed beside it), which emoray "
                         "does not read yet: rewrite its data files (Spark's rewrite_data_files) "
                         "or write the texts to plain Parquet files for the night")
    if any(t.file.file_format.name != "PARQUET" for t in tasks):
        raise InputError(f"input Iceberg table {uri}: emoray reads Parquet data files only")
    files = _files(t.file.file_path for t in tasks)
    if not files:
        raise InputError(f"input table {uri} (snapshot {snapshot.snapshot_id}) holds no rows")
    location = table.location()
    fs, _ = filesystem_for(_file_path(location) if location.startswith("file://") else location,
                           s3)
    return fs, TableInput("iceberg", str(table.metadata.table_uuid), snapshot.snapshot_id, files)
