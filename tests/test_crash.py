"""A driver killed at each point of a chunk's life (real Ray, vLLM, S3 input on 127.0.0.1,
local Delta output so local Spark can read it too): every lake reader sees nothing of the
uncommitted chunk, the re-run of the same command completes the table exactly once, vacuum
leaves exactly the snapshot's files; two runs started together over one table."""

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from emoray import cli
from emoray.lake import locations, table
from emoray.config import EnrichConfig, S3Config
from emoray.enrich.spark_join import committed_annotations
from emoray.tools.faults import EXIT_CODE
from emoray.sample import sample_texts
from tests.readers import kernel_read
from tests.conftest import ENGINE_FLAGS

TEXTS = [t for _, t in sample_texts()]
TASKS = "v_reg,ei_oc:joy"
ROWS = 20
KEYS = ["doc_id", "task", "target", "model", "prompt_version"]
READERS = ("deltalake", "polars", "ray", "spark", "delta-kernel")


def put_input(uri: str, start: int, n: int) -> None:
    fs, path = locations.filesystem_for(uri, S3Config())
    with fs.open_output_stream(path) as out:
        pq.write_table(pa.table({"id": [f"c{i}" for i in range(start, start + n)],
                                 "text": TEXTS[start:start + n]}), out)


def annotate_args(src: str, out: str, tiny_model, run_id: str) -> list[str]:
    return ["annotate", "--input", src, "--output", out, "--tasks", TASKS,
            "--model", str(tiny_model), *ENGINE_FLAGS, "--batch-size", "8", "--commit-rows", "10",
            "--run-id", run_id, "--since-last"]


def data_files(out: str) -> set[str]:
    """The table's data files on disk (not its log, not its key index sidecars)."""
    return {str(p) for p in Path(out).glob("task=*/*.parquet")}


def seen_by_every_reader(uri: str, spark) -> dict[str, tuple[int, int]]:
    """(rows, duplicate keys) as deltalake, Polars, Ray Data and Spark see the table (all
    through delta-rs's snapshot), and DuckDB's delta extension (delta-kernel-rs)."""
    def counted(t: pa.Table) -> tuple[int, int]:
        return t.num_rows, t.num_rows - t.group_by(KEYS).aggregate([([], "count_all")]).num_rows

    spark_rows, _ = committed_annotations(spark, EnrichConfig(
        annotations=uri, downstream="-", output="-"))
    return {
        "deltalake": counted(table.AnnotationTable(uri).read(KEYS)),
        "polars": counted(pl.scan_delta(uri).select(KEYS).collect().to_arrow()),
        "ray": counted(pa.Table.from_pylist(ray.data.read_delta(uri, columns=KEYS).take_all())),
        "spark": counted(pa.Table.from_pylist([r.asDict() for r in
                                               spark_rows.select(*KEYS).collect()])),
        "delta-kernel": counted(kernel_read(uri, KEYS)),
    }


@pytest.mark.parametrize("point", ["before-files@1", "files-written@1", "before-report"])
def test_killed_driver_leaves_nothing_half_visible_and_the_rerun_completes(
        s3_endpoint, ray_local, tiny_model, spark, tmp_path, point, capsys):
    src = f"s3://emoray-test/crash-{point.replace('@', '-')}/in/a.parquet"
    out = str(tmp_path / "affect")
    put_input(src, 100, ROWS)
    args = annotate_args(src, out, tiny_model, "crashed")
    env = {**os.environ, "RAY_ADDRESS": "local"}
    crashed = subprocess.run([sys.executable, "-m", "emoray.tools.faults", point, *args], env=env,
                             capture_output=True, text=True, timeout=600)
    assert crashed.returncode == EXIT_CODE, crashed.stderr[-2000:]
    annotations = table.AnnotationTable(out)
    run = table.runs(annotations).get("crashed", {"rows_out": 0, "chunks": 0})
    committed = run["rows_out"]
    if point == "before-report":
        assert committed == ROWS * 2  # every chunk committed; only the report is missing
    else:  # exactly chunk 0 committed (it closed at the first batch reaching --commit-rows 10)
        assert run["chunks"] == 1 and 10 <= committed < ROWS * 2
    seen = seen_by_every_reader(out, spark)
    assert seen == {r: (committed, 0) for r in READERS}
    on_disk = data_files(out)
    assert (on_disk != set(annotations.file_uris())) == (point == "files-written@1")

    assert cli.main(args) == cli.EXIT_OK  # the same command again: resumes run `crashed`
    assert ("nothing new" in capsys.readouterr().out) == (point == "before-report")
    seen = seen_by_every_reader(out, spark)
    assert seen == {r: (ROWS * 2, 0) for r in READERS}
    assert table.runs(annotations)["crashed"]["rows_out"] == ROWS * 2
    # --since-last: the crashed run recorded no input as read (its report is written last), so
    # the re-run read the file again; once it completed, the file counts as read
    reread = next(r for r in table.run_reports(annotations) if r["run_id"] == "crashed")
    assert (reread["rows_in"], reread["input_files_read"], reread["input_files_skipped"]) == (
        ROWS, 1, 0)
    assert cli.main(["table", "vacuum", out, "--retain-hours", "0", "--no-dry-run"]) == 0
    assert data_files(out) == set(annotations.file_uris())


def test_two_runs_started_together_write_the_table_exactly_once(
        s3_endpoint, ray_local, tiny_model, tmp_path):
    out = "s3://emoray-test/together/out"
    put_input("s3://emoray-test/together/in/a.parquet", 200, 30)
    put_input("s3://emoray-test/together/in2/b.parquet", 215, 30)  # overlaps rows 215..229
    env = {**os.environ, "RAY_ADDRESS": "local"}
    runs = [subprocess.Popen(
        [sys.executable, "-m", "emoray.cli", *annotate_args(src, out, tiny_model, run_id)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for src, run_id in [("s3://emoray-test/together/in/", "night-a"),
                            ("s3://emoray-test/together/in2/", "night-b")]]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in runs]
    codes = sorted(code for code, _ in results)
    assert codes == [cli.EXIT_OK, cli.EXIT_LOCKED], [e[-1500:] for _, e in results]
    refused = next(err for code, err in results if code == cli.EXIT_LOCKED)
    assert "is being written by run night-" in refused and "wait for it to finish" in refused
    # the refused night runs again once the first is done: only what is new is added
    loser = "night-b" if results[1][0] == cli.EXIT_LOCKED else "night-a"
    src = "s3://emoray-test/together/in2/" if loser == "night-b" else "s3://emoray-test/together/in/"
    assert cli.main(annotate_args(src, out, tiny_model, loser + "-again")) == cli.EXIT_OK
    got = table.AnnotationTable(out).read(KEYS)
    assert got.num_rows == 45 * 2  # ids c200..c244, two requests each
    assert got.group_by(KEYS).aggregate([([], "count_all")]).num_rows == got.num_rows
