"""Hive-style partition folders of an input of plain files (`date=2026-12-05/lang=en/x.parquet`):
each file's partition values, and `--where`, a predicate over them evaluated on the file listing
before any file is opened, so the files it rules out are never read (the pushdown a lake reader
does with a partition filter).

The predicate is DuckDB SQL (`date >= '2026-12-01' AND lang IN ('en', 'de')`), evaluated by
DuckDB over one row per file: its parser, types and error messages, rather than a hand-written
expression language. A value that reads as a whole number everywhere in its column compares as
a number, else as text (as Hive's and pyarrow's partition discovery type them);
`__HIVE_DEFAULT_PARTITION__` is null.
"""

from __future__ import annotations

from urllib.parse import unquote

import pyarrow as pa

from emoray.config import ConfigError

HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


def values(root: str, path: str) -> tuple[tuple[str, str], ...]:
    """The `key=value` folders between the input root `root` and the file `path`, in order
    (values URL-decoded, as Hive and Spark write them)."""
    folders = path[len(root):].strip("/").split("/")[:-1]
    return tuple((k, unquote(v)) for k, _, v in (p.partition("=") for p in folders) if k and _)


def _column(raw: list[str | None]) -> pa.Array:
    """One partition column's values, typed as Hive's discovery types them."""
    present = [v for v in raw if v is not None]
    try:
        return pa.array([None if v is None else int(v) for v in raw], pa.int64()) if present \
            else pa.array(raw, pa.string())
    except ValueError:
        return pa.array(raw, pa.string())


def table(files: list) -> pa.Table:
    """One row per file (`InputFile`s, in order): its index `_file` and its partition values,
    one column per partition key found in any file (null where a file's path lacks it)."""
    found = [dict(f.partitions) for f in files]
    keys = list(dict.fromkeys(k for d in found for k in d))
    columns = {k: _column([None if d.get(k) in (None, HIVE_NULL) else d[k] for d in found])
               for k in keys}
    return pa.table({"_file": pa.array(range(len(files)), pa.int64()), **columns})


def select(files: list, where: str, uri: str) -> list:
    """The files whose partition values satisfy `where`; an error naming the input's partition
    columns when the predicate does not parse or names anything else."""
    import duckdb

    listing = table(files)
    keys = [c for c in listing.column_names if c != "_file"]
    if not keys:
        raise ConfigError(f"--where {where!r}: input {uri} has no partition folders (key=value/) "
                          "to filter; drop --where or point --input at a partitioned folder")
    con = duckdb.connect()
    con.register("files", listing)
    try:
        kept = con.execute(f"SELECT _file FROM files WHERE {where}").fetchall()
    except duckdb.Error as e:
        first = str(e).splitlines()[0]
        raise ConfigError(f"--where {where!r} cannot be applied to input {uri}: {first}. It is "
                          "DuckDB SQL over the partition columns "
                          f"({', '.join(keys)}), e.g. {keys[0]} = '...'") from None
    finally:
        con.close()
    return [files[i] for (i,) in sorted(kept)]
