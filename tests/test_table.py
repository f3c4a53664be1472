"""The annotation table as a Delta table, table-in/table-out (no engine, no Ray; seconds): exactly
once chunk commits, what every lake reader sees, pushed-down reads, run counts from commits,
the table commands, a kill during optimize, and migration from the old marker layout."""

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from emoray import cli
from emoray.lake import key_index, table
from emoray.tools.flaky_s3 import Faults, flaky_proxy
from emoray.lake.migrate import migrate
from emoray.models import resolve_model
from tests.readers import kernel_read

T0 = datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc)
KEYS = ["doc_id", "task", "target", "model", "prompt_version"]


def rows(n, task="v_reg", run="r1", model="Emollama-chat-7b", version="pv1", start=0,
         status="ok"):
    return pa.table({
        "doc_id": [f"d{i}" for i in range(start, start + n)], "text_sha256": ["h"] * n,
        "task": [task] * n, "target": pa.nulls(n, pa.string()), "score": [0.5] * n,
        "label": pa.nulls(n, pa.string()), "labels": pa.nulls(n, pa.list_(pa.string())),
        "confidence": [0.9] * n, "raw_confidence": [0.9] * n,
        "calibration": ["uncalibrated"] * n,
        "raw_output": ["0.500"] * n, "status": [status] * n,
        "error": pa.nulls(n, pa.string()), "model": [model] * n, "prompt_version": [version] * n,
        "run_id": [run] * n, "annotated_at": pa.array([T0] * n, pa.timestamp("us", tz="UTC")),
        "decided_by": pa.nulls(n, pa.string()),
    }, schema=table.SCHEMA)


@pytest.fixture(params=["local", "s3"])
def uri(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "affect")
    request.getfixturevalue("s3_endpoint")
    return f"s3://emoray-test/table-{request.node.name.replace('[', '-').rstrip(']')}"


def duplicates(t: pa.Table) -> int:
    g = t.group_by(KEYS).aggregate([([], "count_all")])
    return t.num_rows - g.num_rows


def files_under(root: Path) -> set[str]:
    """The data files under a table's folder (not its log, not its key index sidecars)."""
    return {str(p) for p in root.rglob("*.parquet")
            if "_delta_log" not in p.parts and key_index.FOLDER not in p.parts}


def sidecars_under(root: Path) -> set[str]:
    """The data files the key index sidecars under `root` stand for."""
    folder = root / key_index.FOLDER
    return {str(root / p.relative_to(folder)) for p in folder.rglob("*.parquet")}


def test_a_chunk_committed_twice_lands_once_and_a_resumed_run_continues(uri):
    annotations = table.AnnotationTable(uri)
    writer = table.ChunkWriter(annotations, "night-1", chunk_rows=10)
    assert writer.commit_chunk(rows(10), 0) is True
    assert writer.commit_chunk(rows(10), 0) is False  # a retried commit of the same chunk
    assert annotations.read().num_rows == 10
    resumed = table.ChunkWriter(annotations, "night-1", chunk_rows=10)
    assert resumed.chunks == 1  # continues after the last committed chunk
    resumed.write(rows(4, start=10))
    resumed.flush()
    got = annotations.read()
    assert got.num_rows == 14 and duplicates(got) == 0 and got.schema == table.SCHEMA
    independent = kernel_read(uri, KEYS)  # delta-kernel-rs, on the local and the S3 table
    assert independent.num_rows == 14 and duplicates(independent) == 0
    dt = annotations.snapshot()
    assert dt.transaction_version("night-1") == 1 and dt.version() == 2
    [last, first, created] = annotations.history()
    assert created["operation"] == "CREATE TABLE"
    assert (first["run_id"], first["chunk"], first["rows"]) == ("night-1", "0", "10")
    assert (last["run_id"], last["chunk"], last["rows"]) == ("night-1", "1", "4")
    assert json.loads(last["status_counts"]) == {"ok": 4}


def test_a_table_made_before_a_column_existed_gains_it_on_the_next_write(tmp_path):
    """A table written by an older emoray (no `calibration` column) takes new rows: the column
    is added to the table's schema once, its old rows read it as null, every reader sees both."""
    from deltalake import write_deltalake

    uri = str(tmp_path / "affect")
    old = rows(3).drop_columns(["raw_confidence", "calibration"])
    write_deltalake(uri, old, partition_by=table.PARTITION_BY)
    annotations = table.AnnotationTable(uri)
    assert "calibration" not in pa.schema(annotations.snapshot().schema().to_arrow()).names
    table.ChunkWriter(annotations, "night-2", chunk_rows=10).commit_chunk(rows(2, start=3), 0)
    got = annotations.read().sort_by("doc_id")
    assert got.schema == table.SCHEMA and got.num_rows == 5
    assert got["calibration"].to_pylist() == [None] * 3 + ["uncalibrated"] * 2
    assert pl.read_delta(uri)["calibration"].null_count() == 3
    snapshot = annotations.snapshot().to_pyarrow_dataset()  # noqa: F841 (DuckDB reads it by name)
    assert duckdb.sql("SELECT count(calibration) FROM snapshot").fetchall() == [(2,)]


def test_every_reader_sees_only_committed_rows_and_vacuum_removes_the_rest(tmp_path, capsys):
    uri = str(tmp_path / "affect")
    annotations = table.AnnotationTable(uri)
    writer = table.ChunkWriter(annotations, "r1", chunk_rows=100)
    writer.commit_chunk(pa.concat_tables([rows(6), rows(6, task="e_c")]), 0)
    orphans = writer.write_files(rows(5, start=100), 1)  # a crash before the commit
    assert len(orphans) == 1
    snapshot = annotations.snapshot().to_pyarrow_dataset()  # noqa: F841 (DuckDB reads it by name)
    seen = {
        "deltalake": annotations.read().num_rows,
        "polars": pl.scan_delta(uri).select(pl.len()).collect().item(),
        "duckdb": duckdb.sql("SELECT count(*) FROM snapshot").fetchall()[0][0],
        "delta-kernel": kernel_read(uri, ["doc_id"]).num_rows,
    }
    assert seen == {"deltalake": 12, "polars": 12, "duckdb": 12, "delta-kernel": 12}
    assert len(files_under(Path(uri))) == len(sidecars_under(Path(uri))) == 3
    assert cli.main(["table", "vacuum", uri, "--retain-hours", "0"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "would delete (dry run; --no-dry-run deletes) 1 files" in out
    assert orphans[0].path in out
    assert cli.main(["table", "vacuum", uri, "--retain-hours", "0", "--no-dry-run"]) == 0
    assert "deleted 1 files" in capsys.readouterr().out
    assert files_under(Path(uri)) == set(annotations.file_uris()) == sidecars_under(Path(uri))
    assert annotations.read().num_rows == 12


def test_reads_push_model_and_prompt_version_down(uri):
    annotations = table.AnnotationTable(uri)
    table.ChunkWriter(annotations, "a", 100).commit_chunk(
        pa.concat_tables([rows(5), rows(5, task="e_c")]), 0)
    table.ChunkWriter(annotations, "b", 100).commit_chunk(rows(7, model="Emoopt-13b"), 0)
    table.ChunkWriter(annotations, "c", 100).commit_chunk(rows(3, version="pv2"), 0)
    held = table.held_filter(resolve_model("Emollama-chat-7b").same_model(pads.field("model")),
                             {"v_reg": "pv1"})
    got = annotations.read(["doc_id", "task", "model", "prompt_version"], filter=held)
    assert got.num_rows == 5 and set(got["task"].to_pylist()) == {"v_reg"}
    dataset = annotations.snapshot().to_pyarrow_dataset()
    # 4 files; partitions and file statistics leave only the one that can match
    assert len(list(dataset.get_fragments())) == 4
    assert len(list(dataset.get_fragments(filter=held))) == 1


def test_runs_count_from_commits_not_from_the_report(tmp_path, capsys):
    uri = str(tmp_path / "affect")
    annotations = table.AnnotationTable(uri)
    writer = table.ChunkWriter(annotations, "night-1", chunk_rows=4)
    writer.write(rows(6))
    writer.write(rows(3, start=6, status="failed"))
    writer.flush()
    table.write_report(annotations, {"run_id": "night-1", "status": "ok", "rows_out": 999,
                                     "started_at": T0.isoformat()})
    table.ChunkWriter(annotations, "night-2", chunk_rows=4).commit_chunk(rows(2, start=20), 0)
    assert cli.main(["runs", "--output", uri, "--json"]) == cli.EXIT_OK
    listed = {r["run_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed["night-1"]["rows_out"] == 9 and listed["night-1"]["chunks"] == 2
    assert listed["night-1"]["status_counts"] == {"ok": 6, "failed": 3}
    assert (listed["night-2"]["status"], listed["night-2"]["rows_out"]) == ("incomplete", 2)


def test_history_and_optimize_of_thirty_small_nights(uri, capsys):
    annotations = table.AnnotationTable(uri)
    for night in range(30):
        table.ChunkWriter(annotations, f"n{night:02d}", 100).commit_chunk(
            pa.concat_tables([rows(3, start=3 * night, run=f"n{night:02d}"),
                              rows(3, task="e_c", start=3 * night, run=f"n{night:02d}")]), 0)
    assert cli.main(["table", "history", uri, "--limit", "2"]) == cli.EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["version", "time", "operation", "run_id", "chunk", "rows_added"]
    assert lines[1].split()[0] == "30" and lines[1].split()[2:] == ["WRITE", "n29", "0", "6"]
    assert len(lines) == 3
    assert cli.main(["table", "optimize", uri, "--json"]) == cli.EXIT_OK
    result = json.loads(capsys.readouterr().out)
    assert (result["files_before"], result["files_after"]) == (60, 2)
    got = annotations.read()
    assert got.num_rows == 180 and duplicates(got) == 0
    assert annotations.read(as_of=30).num_rows == 180  # the version before optimize


def test_a_driver_killed_during_optimize_leaves_every_reader_exact(s3_endpoint):
    """`table optimize` on S3 through a proxy that holds its Delta commit (`Faults.hold`): killed
    while it waits on that commit, its compacted file written and not committed. Every reader
    sees the 20 committed files' 1 000 rows once; vacuum removes the compacted orphan."""
    uri = "s3://emoray-test/optimize-killed/affect"
    annotations = table.AnnotationTable(uri)
    for night in range(20):
        table.ChunkWriter(annotations, f"n{night}", 100).commit_chunk(
            rows(50, start=50 * night, run=f"n{night}"), 0)
    committed = set(annotations.file_uris())
    with flaky_proxy(s3_endpoint, Faults(slowdown=0, reset=0, stall=0, hold="/_delta_log/")) \
            as (url, tally):
        driver = subprocess.Popen([sys.executable, "-m", "emoray.cli", "table", "optimize", uri],
                                  env={**os.environ, "AWS_ENDPOINT_URL": url},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while tally()["held"] == 0 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        driver.kill()
        _, err = driver.communicate(timeout=30)
        assert (driver.returncode, tally()["held"]) == (-signal.SIGKILL, 1), err[-2000:]
    fs, root = annotations._fs()
    written = {f"s3://{i.path}" for i in fs.get_file_info(pafs.FileSelector(root, recursive=True))
               if i.path.endswith(".parquet") and "/_delta_log/" not in i.path
               and f"/{key_index.FOLDER}/" not in i.path}
    assert len(committed) == 20 and len(written - committed) == 1  # compacted, never committed
    got = annotations.read()
    assert got.num_rows == 1000 and duplicates(got) == 0
    polars_options = {k: v for k, v in annotations.options.items() if k != "max_retries"}
    assert pl.scan_delta(uri, storage_options=polars_options).select(
        pl.len()).collect().item() == 1000
    assert kernel_read(uri, ["doc_id"]).num_rows == 1000
    assert cli.main(["table", "vacuum", uri, "--retain-hours", "0", "--no-dry-run"]) == 0
    assert {f"s3://{i.path}" for i in fs.get_file_info(pafs.FileSelector(root, recursive=True))
            if i.path.endswith(".parquet") and "/_delta_log/" not in i.path
            and f"/{key_index.FOLDER}/" not in i.path} == committed
    assert annotations.read().num_rows == 1000


def legacy_table(root: Path) -> None:
    """A table in the old marker layout: run r1 committed chunk 0, crashed in chunk 1."""
    folder = root / "data" / "run_date=2026-11-20" / "run_id=r1"
    folder.mkdir(parents=True)
    (root / "_commits").mkdir()
    pq.write_table(rows(8), folder / "part-00000.parquet")
    pq.write_table(rows(5, start=8), folder / "part-00001.parquet")  # no marker: not committed
    (root / "_commits" / "r1-00000.json").write_text(json.dumps({
        "run_id": "r1", "run_date": "2026-11-20", "chunk": 0, "rows": 8,
        "files": [str(folder / "part-00000.parquet")], "committed_at": T0.isoformat()}))


def test_migrate_copies_only_committed_rows_and_old_layout_is_refused(tmp_path, capsys):
    old, new = tmp_path / "old", tmp_path / "new"
    legacy_table(old)
    with pytest.raises(table.TableError, match=r"old commit-marker layout.*emoray table migrate"):
        table.AnnotationTable(str(old)).read()
    assert cli.main(["runs", "--output", str(old)]) == cli.EXIT_INPUT
    assert "emoray table migrate" in capsys.readouterr().err
    assert cli.main(["table", "migrate", str(old), str(new)]) == cli.EXIT_OK
    assert capsys.readouterr().out.startswith(
        f"migrated 8 of 8 committed rows (1 chunks) from {old} to {new} (version 1); "
        "1 uncommitted files left behind")
    got = table.AnnotationTable(str(new)).read()
    assert sorted(got["doc_id"].to_pylist()) == sorted(f"d{i}" for i in range(8))
    assert pc.all(pc.equal(got["run_id"], "r1")).as_py()
    assert migrate(str(old), str(new))["rows_copied"] == 0  # a re-run copies nothing twice
    assert table.AnnotationTable(str(new)).read().num_rows == 8


def test_nightly_upkeep_compacts_only_when_small_files_pile_up(tmp_path):
    annotations = table.AnnotationTable(str(tmp_path / "affect"))
    for night in range(12):
        table.ChunkWriter(annotations, f"n{night}", 100).commit_chunk(
            rows(4, start=4 * night, run=f"n{night}"), 0)
    assert table.maintain(annotations, min_small_files=13, retain_hours=1) is None
    done = table.maintain(annotations, min_small_files=12, retain_hours=1)
    # the replaced files are younger than the retention: time travel still reaches them
    assert (done["files_before"], done["files_after"], done["vacuumed_files"]) == (12, 1, 0)
    assert annotations.read().num_rows == 48
    assert annotations.read(as_of=12).num_rows == 48


def test_filters_on_any_column_find_their_rows(uri):
    """deltalake's pyarrow reader turns a column without statistics into an all-null guarantee
    and would skip every file on a filter over it: each commit records every column's."""
    import pyarrow.dataset as pads

    annotations = table.AnnotationTable(uri)
    mixed = rows(6)
    mixed = mixed.set_column(mixed.schema.get_field_index("label"), "label",
                             pa.array(["low", None, "high", None, None, "low"]))
    table.ChunkWriter(annotations, "r1", 100).commit_chunk(mixed, 0)
    field = pads.field
    for expr, n in [(field("text_sha256").isin(["h", "x"]), 6), (field("doc_id") == "d3", 1),
                    (field("target").is_null(), 6), (field("label") == "low", 2),
                    (field("label").is_null(), 3), (field("text_sha256").is_null(), 0),
                    (field("error").is_valid(), 0)]:
        assert annotations.read(["doc_id"], filter=expr).num_rows == n, expr
