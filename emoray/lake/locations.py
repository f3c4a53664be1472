"""Input and output locations: resolve `s3://…` or local paths to a pyarrow filesystem, find the
input files, check their columns before any engine starts, and read them with Ray Data.

S3 goes through pyarrow's S3FileSystem with the standard AWS credential chain and the AWS SDK's
standard retry strategy (backoff on throttling and transient errors); an endpoint override
(config or AWS_ENDPOINT_URL) points the same code at any S3-compatible store.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pyarrow.parquet as pq

from emoray.lake import partitions, s3clients
from emoray.config import ConfigError, S3Config
from emoray.errors import EXIT_INPUT, EmorayError

EXTENSIONS = {
    ".parquet": "parquet", ".pq": "parquet",
    ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
    ".csv": "csv",
}


class InputError(EmorayError, ValueError):
    """Input that cannot be annotated as given; the message says where and what to do."""

    exit_code = EXIT_INPUT


@dataclass(frozen=True)
class InputFile:
    """A data file to read; `size` and `mtime_ns` (as listed; -1 unknown) tell a changed file
    from one a night already read."""

    path: str
    format: str
    size: int = -1
    mtime_ns: int = -1
    partitions: tuple[tuple[str, str], ...] = ()
    """The Hive-style `key=value` folders above it inside the input (`partitions.values`)."""

    def stamp(self) -> list[int]:
        """What the run report keeps of the file, to know it next night."""
        return [self.size, self.mtime_ns]


CREDENTIAL_CHAIN = (
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (plus AWS_SESSION_TOKEN for temporary keys); "
    "AWS_PROFILE naming a profile in ~/.aws/credentials or ~/.aws/config (or "
    "AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE); a web identity (AWS_ROLE_ARN with "
    "AWS_WEB_IDENTITY_TOKEN_FILE, as on EKS); a container or EC2 instance role")


def require_credentials(*uris: str | None) -> None:
    """Fail before any work when an s3:// location is named and the AWS credential chain (the
    one pyarrow's and botocore's clients both follow) finds no credentials."""
    s3 = [u for u in uris if u and u.startswith("s3://")]
    if not s3:
        return
    import botocore.exceptions
    import botocore.session

    try:
        found = botocore.session.get_session().get_credentials()
    except botocore.exceptions.BotoCoreError as e:  # e.g. AWS_PROFILE names no profile
        raise ConfigError(f"AWS credentials for {s3[0]} cannot be read: {e}. They are looked "
                          f"up in this order: {CREDENTIAL_CHAIN}.") from None
    if found is None:
        raise ConfigError(
            f"no AWS credentials for {s3[0]}: give them to emoray the standard AWS way, "
            f"looked up in this order: {CREDENTIAL_CHAIN}. Credentials never go in a profile.")


def check_apart(input_uri: str, output_uri: str) -> None:
    """The output table must not lie inside the input: the next run would read the table's own
    files back as input."""
    def norm(uri: str) -> str:
        return uri.rstrip("/") if "://" in uri else os.path.abspath(uri)

    src, out = norm(input_uri), norm(output_uri)
    if out == src or out.startswith(src + "/"):
        raise ConfigError(
            f"output {output_uri} lies inside input {input_uri}: put the annotation table "
            "beside the input (e.g. s3://bucket/annotations/ next to s3://bucket/texts/), or "
            "its files are read back as input next run")


def check_output(uri: str, fs: pafs.FileSystem, root: str) -> None:
    """An s3:// output's bucket must exist, checked with the input before Ray starts: emoray
    never creates a bucket (a bucket carries a region, policies and costs someone chose)."""
    if not uri.startswith("s3://"):
        return
    bucket = root.split("/", 1)[0]
    try:
        found = fs.get_file_info(bucket).type != pafs.FileType.NotFound
    except OSError as e:
        raise InputError(f"cannot reach the output bucket {bucket!r} of {uri}: {e}") from None
    if not found:
        raise ConfigError(f"output bucket {bucket!r} (of {uri}) does not exist: create it (e.g. "
                          f"`aws s3 mb s3://{bucket}`) or correct --output")


def filesystem_for(uri: str, s3: S3Config) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for `s3://bucket/key` or a local path."""
    if uri.startswith("s3://"):
        return s3clients.filesystem(s3), uri[len("s3://"):].rstrip("/")
    if "://" in uri:
        raise InputError(f"unsupported location {uri!r}: use s3://bucket/prefix or a local path")
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def spark_path(uri: str) -> str:
    """`uri` as Spark's Hadoop filesystems name it (s3:// is s3a:// there)."""
    return "s3a://" + uri[len("s3://"):] if uri.startswith("s3://") else uri


def _format_of(path: str, fmt: str) -> str | None:
    if fmt != "auto":
        return fmt
    name = path.lower()
    return next((f for ext, f in EXTENSIONS.items() if name.endswith(ext)), None)


def list_inputs(uri: str, fs: pafs.FileSystem, path: str, fmt: str = "auto") -> list[InputFile]:
    """Every data file under `path` (a file or a folder, searched recursively, hidden names
    skipped), sorted. A Delta table inside the folder is refused: its files are not its rows
    (`lake_input` reads a table named as the input)."""
    try:
        info = fs.get_file_info(path)
    except OSError as e:
        raise InputError(f"cannot reach input {uri}: {e}") from None
    if info.type == pafs.FileType.NotFound:
        raise InputError(f"input {uri} does not exist (no file, folder or prefix there): check "
                         "the path and bucket name")
    if info.type == pafs.FileType.File:
        found = _format_of(path, fmt)
        if not found:
            raise InputError(f"input {uri}: unknown file type; name it .parquet, .jsonl or .csv "
                             "or pass --format")
        return [InputFile(path, found, info.size, info.mtime_ns or -1)]
    files, entries = [], fs.get_file_info(pafs.FileSelector(path, recursive=True))
    tables = sorted(e.path.rsplit("/", 1)[0] for e in entries
                    if e.type == pafs.FileType.Directory and e.base_name == "_delta_log")
    if tables:
        raise InputError(f"input {uri} holds a Delta table at {tables[0]}, whose folder holds "
                         "removed files and its log beside its rows: name the table itself as "
                         "--input (it is read through its snapshot)")
    for entry in entries:
        hidden = entry.path[len(path):].strip("/").split("/")
        if entry.type != pafs.FileType.File or any(p.startswith((".", "_")) for p in hidden):
            continue  # hidden as Spark and Hive hide them: `_temporary/`, `.crc`, `_SUCCESS`
        found = _format_of(entry.path, fmt)
        if found:
            files.append(InputFile(entry.path, found, entry.size, entry.mtime_ns or -1,
                                   partitions.values(path, entry.path)))
    if not files:
        raise InputError(f"input {uri} holds no .parquet, .jsonl or .csv files")
    return sorted(files, key=lambda f: f.path)


def _schema(fs: pafs.FileSystem, f: InputFile) -> pa.Schema:
    if f.format == "parquet":
        with fs.open_input_file(f.path) as fh:
            return pq.read_schema(fh)
    with fs.open_input_stream(f.path) as fh:
        if f.format == "csv":
            return pacsv.open_csv(fh).schema
        head = fh.read(1 << 20)
    if len(head) == 1 << 20:
        head = head[: head.rfind(b"\n") + 1]
    return pajson.read_json(io.BytesIO(head)).schema


def file_problem(fs: pafs.FileSystem, f: InputFile, columns: dict[str, str]) -> str | None:
    """Why `f` cannot be annotated (unreadable, or lacking a needed column), or None.
    `columns` maps a role ("id", "text") to the column name configured for it."""
    try:
        names = _schema(fs, f).names + [k for k, _ in f.partitions]
    except (OSError, pa.ArrowInvalid, UnicodeDecodeError) as e:
        return f"cannot read {f.format} file {f.path}: {e}"
    for role, column in columns.items():
        if column not in names:
            return (f"file {f.path} has no {role} column {column!r} (columns: "
                    f"{', '.join(names)}); name it with --{role}-column")
    return None


def screen_files(fs: pafs.FileSystem, files: list[InputFile], columns: dict[str, str],
                 policy: str) -> tuple[list[InputFile], dict[str, str]]:
    """Check every file before any GPU work. Returns the good files and {path: reason} of the
    bad ones; under policy `fail` any bad file is an error naming all of them."""
    bad = {f.path: reason for f in files if (reason := file_problem(fs, f, columns))}
    if bad and policy == "fail":
        listing = "\n  ".join(bad.values())
        more = "" if len(bad) == len(files) else (
            "\n(use --on-bad-file skip or quarantine to annotate the other files)")
        raise InputError(f"{len(bad)} of {len(files)} input files are bad:\n  {listing}{more}")
    good = [f for f in files if f.path not in bad]
    if not good:
        raise InputError("no readable input files:\n  " + "\n  ".join(bad.values()))
    return good, bad


def quarantine(fs: pafs.FileSystem, paths: list[str], out_fs: pafs.FileSystem, folder: str
               ) -> list[str]:
    """Copy bad input files into `folder` (under the output root) for inspection."""
    out_fs.create_dir(folder, recursive=True)
    copied = []
    for path in paths:
        target = f"{folder}/{path.strip('/').replace('/', '__')}"
        with fs.open_input_stream(path) as src, out_fs.open_output_stream(target) as dst:
            dst.write(src.read())
        copied.append(target)
    return copied


def _read_column(fs: pafs.FileSystem, f: InputFile, column: str) -> pa.Array:
    if f.format == "parquet":
        with fs.open_input_file(f.path) as fh:
            return pq.read_table(fh, columns=[column])[column].combine_chunks()
    with fs.open_input_stream(f.path) as fh:
        if f.format == "csv":
            return pacsv.read_csv(fh, convert_options=pacsv.ConvertOptions(
                include_columns=[column], column_types={column: pa.string()}))[column]
        return pajson.read_json(fh)[column]


def check_values(fs: pafs.FileSystem, files: list[InputFile], column: str,
                 allowed: list[str]) -> None:
    """Fail before any GPU work when a row's `column` holds a value outside `allowed` (nulls
    pass), naming the file, the row and the allowed values."""
    for f in files:
        folder = dict(f.partitions).get(column)
        if folder is not None and folder not in allowed:
            raise InputError(
                f"file {f.path}: its partition folder {column}={folder} asks a task that is not "
                f"among the requested tasks ({', '.join(allowed)}); add it to --tasks or "
                "leave the folder out (--where)")
        if folder is not None:
            continue
        values = pc.cast(_read_column(fs, f, column), pa.string())
        bad = pc.and_(pc.invert(pc.is_in(values, pa.array(allowed))), pc.is_valid(values))
        rows = pc.indices_nonzero(pc.fill_null(bad, False))
        if len(rows):
            first = rows[0].as_py()
            raise InputError(
                f"file {f.path} row {first}: column {column!r} asks {values[first].as_py()!r}, "
                f"which is not among the requested tasks ({', '.join(allowed)}); "
                f"{len(rows)} rows of this file do so. Add the task to --tasks or fix the rows.")


HEAD_BYTES = 4 << 20
"""How much of a JSON Lines or CSV file `estimate_rows` reads."""


def estimate_rows(fs: pafs.FileSystem, files: list[InputFile]) -> int:
    """Rows of the input files, for sizing waves without downloading the night: Parquet
    footers' exact counts; a JSON Lines or CSV file's line breaks in its first `HEAD_BYTES`,
    scaled by its size (exact for a smaller file; a CSV's header and quoted line breaks
    count as rows)."""
    rows = 0
    for f in files:
        if f.format == "parquet":
            with fs.open_input_file(f.path) as fh:
                rows += pq.ParquetFile(fh).metadata.num_rows
            continue
        with fs.open_input_stream(f.path) as fh:
            head = fh.read(HEAD_BYTES)
        lines = head.count(b"\n") + (bool(head) and not head.endswith(b"\n"))
        rows += lines if len(head) < HEAD_BYTES else -(-lines * fs.get_file_info(f.path).size
                                                        // len(head))
    return rows


VIEW_TYPES = {pa.string_view(): pa.string(), pa.binary_view(): pa.binary()}


def plain_types(schema: pa.Schema, columns: list[str]) -> pa.Schema:
    """`columns` of a Parquet file's `schema` with Arrow's view types read as plain strings and
    binaries, the schema every Parquet input file is read with: deltalake's rewrites (a delete,
    a merge) and Polars store `string_view` in their files' Arrow schema, and Ray Data 2.60
    cannot pass those columns between its tasks ("Unhandled Arrow array type: string_view"),
    so a file read with its own schema stops the night."""
    fields = [schema.field(c) for c in columns]
    return pa.schema([f.with_type(VIEW_TYPES.get(f.type, f.type)) for f in fields])


def read_inputs(fs: pafs.FileSystem, files: list[InputFile], id_column: str, text_column: str,
                task_column: str | None = None):
    """One Ray dataset per input format, each holding only the id, text (and task) columns."""
    import ray.data

    by_format: dict[str, list[str]] = {}
    for f in files:
        by_format.setdefault(f.format, []).append(f.path)
    columns = [id_column, text_column] + ([task_column] if task_column else [])
    folders = {k for f in files for k, _ in f.partitions}
    in_files = [c for c in columns if c not in folders]  # Ray Data adds the others from paths
    if not files:  # a night whose input holds nothing new (`since_last`)
        return [ray.data.from_arrow(pa.table({c: pa.array([], pa.string()) for c in columns}))]
    out = []
    for fmt, paths in by_format.items():
        if fmt == "parquet":
            schema = plain_types(_schema(fs, InputFile(paths[0], fmt)), in_files)
            schema = pa.schema([*schema, *(pa.field(c, pa.string()) for c in columns
                                           if c in folders)])  # from the paths, as text
            ds = ray.data.read_parquet(paths, filesystem=fs, columns=columns, schema=schema)
        elif fmt == "csv":
            ds = ray.data.read_csv(
                paths, filesystem=fs, file_extensions=None,
                convert_options=pacsv.ConvertOptions(
                    include_columns=in_files,
                    column_types={id_column: pa.string(), text_column: pa.binary(),
                                  **({task_column: pa.string()} if task_column else {})},
                    strings_can_be_null=False, quoted_strings_can_be_null=False),
            ).select_columns(columns)
        else:
            ds = ray.data.read_json(paths, filesystem=fs, file_extensions=None)
            ds = ds.select_columns(columns)
        out.append(ds)
    return out


def write_texts(uri: str, s3: S3Config, ids: list[str], texts: list[str],
                name: str = "part-0.parquet") -> int:
    """Write (id, text) rows as one Parquet input file `name` in folder `uri` (local or
    s3://): the input shape of the demo and the benchmarks. Returns the rows written."""
    import pyarrow.parquet as pq

    fs, path = filesystem_for(uri, s3)
    fs.create_dir(path, recursive=True)
    data = pa.table({"id": pa.array(ids, pa.string()), "text": pa.array(texts, pa.string())})
    with fs.open_output_stream(f"{path}/{name}") as out:
        pq.write_table(data, out)
    return data.num_rows
