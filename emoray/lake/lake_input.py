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

from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow.fs as pafs

from emoray.lake import partitions, s3clients
from emoray.config import AnnotateConfig, ConfigError, S3Config
from emoray.lake.locations import InputError, InputFile, filesystem_for, list_inputs, screen_files

DELTA_LOG = "_delta_log"
ICEBERG = "iceberg://"
UNREADABLE_FEATURES = {
    "deletionVectors": "deletion vectors (rows a file no longer holds are listed beside it)",
    "columnMapping": "column mapping (the files hold the columns under other names)",
}


@dataclass(frozen=True)
class TableInput:
    """One snapshot of an input table: what the night read (`record`), its data files, and the
    data file URIs of an earlier version of the same table (`earlier`, for `since_last`)."""

    format: str
    table_id: str
    version: int
    files: tuple[InputFile, ...]
    earlier: Callable[[int], list[str]] = field(compare=False, repr=False)

    def record(self) -> dict[str, str]:
        """The source as the run's commit info, report and dry run keep it."""
        return {"input_format": self.format, "input_table_id": self.table_id,
                "input_version": str(self.version)}


@dataclass(frozen=True)
class NightInput:
    """Where the night's rows are: the files' filesystem, the good files to read tonight, the bad
    ones ({path: reason}, under `on_bad_file` skip or quarantine), the table snapshot if any,
    what the run report keeps of the input (`read`), how many files an earlier night already
    read (`skipped`), and why the whole input is read where `since_last` asked for less."""

    fs: pafs.FileSystem
    files: list[InputFile]
    bad_files: dict[str, str]
    table: TableInput | None
    read: dict
    skipped: int = 0
    note: str | None = None


def resolve(config: AnnotateConfig, columns: dict[str, str],
            previous: dict | None = None) -> NightInput:
    """The input `config` names, checked to hold `columns` ({role: name}) before any work; with
    `previous` (what the last completed night over it read: `last_read`), only what it has not
    read: a table's files added since the version it read, or files new or changed since."""
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
            snapshot = None
            found = list_inputs(uri, fs, path, config.format)
            if config.where:
                found = partitions.select(found, config.where, uri)
                if not found:
                    raise InputError(f"no file of input {uri} lies in a partition that "
                                     f"satisfies --where {config.where!r}")
    if snapshot and config.where:
        raise ConfigError(f"--where filters the partition folders of an input of files; input "
                          f"{uri} is a {snapshot.format} table: drop --where")
    listed = list(snapshot.files) if snapshot else found
    todo, note = (listed, None) if previous is None else (
        added(snapshot, previous) if snapshot else changed(found, previous))
    good, bad = screen_files(fs, todo, columns, "fail" if snapshot else config.on_bad_file
                             ) if todo else ([], {})
    read = (snapshot.record() if snapshot else
            {"input_files": {f.path: f.stamp() for f in found if f.path not in bad}})
    return NightInput(fs, good, bad, snapshot, read, len(listed) - len(todo), note)


def last_read(reports: list[dict], config: AnnotateConfig, model: str,
              versions: dict[str, str]) -> dict | None:
    """What the newest completed night over `config.input` with this model and these prompt
    versions read (its report's `input_read`), or None. Only a finished run writes its report,
    so a crashed night never marks its input as read."""
    for r in reports:
        if (r.get("status") == "ok" and r.get("input") == config.input
                and r.get("model") == model and r.get("prompt_versions") == versions
                and "input_read" in r):
            return r["input_read"]
    return None


def added(snapshot: TableInput, previous: dict) -> tuple[list[InputFile], str | None]:
    """The snapshot's files that the version `previous` read did not hold (a rewritten file
    counts as added: the held check by text hash skips its rows), and why all of them are read
    where that version cannot tell."""
    whole = list(snapshot.files)
    if previous.get("input_table_id") != snapshot.table_id:
        return whole, ("the input table is not the one the last night read (another table id): "
                       "reading it whole")
    version = int(previous["input_version"])
    try:
        before = {_file_path(u) for u in snapshot.earlier(version)}
    except Exception as e:  # vacuumed, expired, or its log checkpointed away
        return whole, (f"version {version} of the input table, which the last night read, "
                       f"cannot be loaded ({e}): reading it whole")
    return [f for f in whole if f.path not in before], None


def changed(files: list[InputFile], previous: dict) -> tuple[list[InputFile], str | None]:
    """`files` new or changed (size or modification time) since the manifest `previous`."""
    stamps = previous.get("input_files")
    if stamps is None:
        return files, "the last night read a table here, not files: reading every file"
    return [f for f in files if stamps.get(f.path) != f.stamp()], None


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

    from emoray.lake.table import TableError, _as_version, _uri

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

    def earlier(v: int) -> list[str]:
        return DeltaTable(location, version=v,
                          storage_options=s3clients.delta_options(location, s3)).file_uris()

    return TableInput("delta", dt.metadata().id, dt.version(), files, earlier)


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
    from emoray.lake.table import _as_version

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
    def paths(snapshot_id: int) -> list[str]:
        if table.snapshot_by_id(snapshot_id) is None:
            raise InputError(f"snapshot {snapshot_id} has expired")
        return [t.file.file_path for t in table.scan(snapshot_id=snapshot_id).plan_files()]

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
    return fs, TableInput("iceberg", str(table.metadata.table_uuid), snapshot.snapshot_id, files,
                          paths)
