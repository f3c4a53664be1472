"""A Delta reader independent of delta-rs, for the tests' exactly-once checks: DuckDB's `delta`
extension (built on delta-kernel-rs, a second Delta implementation), loaded from its PyPI
package (`duckdb-extension-delta`, with `duckdb-extension-httpfs` for S3), so nothing is
downloaded at run time. Polars, Ray's `read_delta` and deltalake's own dataset all resolve the
snapshot through delta-rs; this one does not."""

from __future__ import annotations

import glob
import os
from urllib.parse import urlparse

import duckdb
import duckdb_extension_delta
import duckdb_extension_httpfs


def _extension(package, name: str) -> str:
    found = glob.glob(os.path.join(os.path.dirname(package.__file__), "extensions", "*",
                                   f"{name}.duckdb_extension"))
    assert found, f"no {name}.duckdb_extension in {package.__name__}"
    return found[0]


def kernel_connection() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the delta and httpfs extensions loaded from their packages,
    and the S3 settings of this process's AWS environment (the local endpoint in the tests)."""
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{_extension(duckdb_extension_httpfs, 'httpfs')}'")
    con.execute(f"LOAD '{_extension(duckdb_extension_delta, 'delta')}'")
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        settings = {"KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
                    "SECRET": os.environ["AWS_SECRET_ACCESS_KEY"],
                    "REGION": os.environ.get("AWS_REGION", "us-east-1")}
        if endpoint:
            where = urlparse(endpoint)
            settings.update(ENDPOINT=where.netloc, URL_STYLE="path")
        ssl = "" if not endpoint else f", USE_SSL {str(where.scheme == 'https').lower()}"
        quoted = ", ".join(f"{k} '{v.replace(chr(39), chr(39) * 2)}'"
                           for k, v in settings.items())
        con.execute(f"CREATE SECRET (TYPE s3, {quoted}{ssl})")
    return con


def kernel_read(uri: str, columns: list[str]):
    """The table's latest snapshot, `columns` only, as delta-kernel-rs resolves it (Arrow)."""
    cols = ", ".join(f'"{c}"' for c in columns)
    return kernel_connection().sql(f"SELECT {cols} FROM delta_scan('{uri}')").to_arrow_table()
