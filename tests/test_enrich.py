"""The Spark enrichment job on local Spark: exact counts and types, latest-run selection,
idempotent re-runs, partition overwrite, bad input, and annotate → enrich end to end."""

import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emoray import cli
from emoray.lake import table
from emoray.config import S3Config
from emoray.enrich.spark_join import EnrichConfig, EnrichError, enrich, s3a_conf, spark_conf
from tests.readers import kernel_read


def enriched(spark, out, version=None):
    """The enriched Delta table's latest snapshot (or `version`), read by deltalake (partition
    values from the log) and handed to Spark with its Arrow types."""
    from deltalake import DeltaTable

    return spark.createDataFrame(DeltaTable(str(out), version=version).to_pyarrow_table())

T0 = datetime(2026, 11, 20, tzinfo=timezone.utc)


def row(doc, task, target=None, score=None, label=None, labels=None, status="ok", run="r1",
        at=T0, model="Emollama-chat-7b", version="v1", confidence=0.5,
        calibration="uncalibrated"):
    return {"doc_id": doc, "text_sha256": "h", "task": task, "target": target, "score": score,
            "label": label, "labels": labels, "confidence": confidence,
            "calibration": calibration, "raw_output": "x",
            "status": status, "error": None, "model": model, "prompt_version": version,
            "run_id": run, "annotated_at": at}


def commit(root, run, rows):
    writer = table.ChunkWriter(table.AnnotationTable(str(root)), run, chunk_rows=10**6)
    writer.write(pa.Table.from_pylist(rows, schema=table.SCHEMA))
    writer.flush()


@pytest.fixture
def annotations(tmp_path):
    root = tmp_path / "ann"
    commit(root, "r1", [
        row("1", "v_reg", score=0.25), row("1", "v_oc", score=-2.0, label="moderately negative"),
        row("1", "e_c", labels=["anger", "disgust"]),
        row("1", "ei_reg", "joy", score=0.1), row("1", "ei_oc", "joy", score=0.0, label="no"),
        row("2", "v_reg", score=0.5), row("3", "v_reg", status="failed"),
        row("9", "v_reg", score=0.9),
    ])
    commit(root, "r2", [row("2", "v_reg", score=0.75, run="r2", at=T0 + timedelta(days=1),
                            version="v2", confidence=0.8, calibration="temperature@abc")])
    # a crashed run's file, written but never committed, must never be read
    crashed = table.ChunkWriter(table.AnnotationTable(str(root)), "r3", chunk_rows=10**6)
    crashed.write_files(pa.Table.from_pylist([row("1", "v_reg", score=0.99, run="r3",
                                                  at=T0 + timedelta(days=2))],
                                             schema=table.SCHEMA), 0)
    return root


@pytest.fixture
def downstream(tmp_path):
    path = tmp_path / "down"
    path.mkdir()
    pq.write_table(pa.table({"id": [1, 2, 2, 3, 4], "day": ["a", "a", "b", "b", "b"],
                             "body": ["x", "y", "y2", "z", "w"]}), path / "p.parquet")
    return path


def config(annotations, downstream, out, **kw):
    return EnrichConfig(annotations=str(annotations), downstream=str(downstream),
                        output=str(out), **kw)


def test_enrich_counts_types_latest_and_nulls(spark, annotations, downstream, tmp_path):
    out = tmp_path / "out"
    summary = enrich(spark, config(annotations, downstream, out))
    assert summary["downstream_rows"] == summary["output_rows"] == 5
    df = enriched(spark, out)
    types = dict(df.dtypes)
    assert types["affect_valence"] == "double" and types["affect_valence_class"] == "int"
    assert types["affect_emotions"] == "array<string>"
    assert types["affect_joy_intensity"] == "double"
    assert types["affect_joy_intensity_class"] == "int"
    assert types["affect_model"] == "string" and types["affect_run_id"] == "string"
    assert types["affect_prompt_version"] == "map<string,string>"
    got = {(r.id, r.day): r for r in df.collect()}
    assert got[(1, "a")].affect_valence == 0.25  # r3 never committed
    assert got[(1, "a")].affect_emotions == ["anger", "disgust"]
    assert got[(1, "a")].affect_valence_class == -2
    assert got[(2, "a")].affect_valence == got[(2, "b")].affect_valence == 0.75  # latest run
    assert got[(2, "a")].affect_run_id == "r2"
    assert got[(2, "a")].affect_prompt_version == {"v_reg": "v2"}
    assert types["affect_valence_confidence"] == "double"
    assert types["affect_calibration"] == "map<string,string>"
    assert got[(2, "a")].affect_valence_confidence == 0.8  # the latest answer's confidence
    assert got[(2, "a")].affect_calibration == {"v_reg": "temperature@abc"}
    assert got[(1, "a")].affect_emotions_confidence == 0.5
    assert got[(1, "a")].affect_calibration["v_oc"] == "uncalibrated"
    assert got[(3, "b")].affect_valence is None  # failed rows are not labels
    assert got[(4, "b")].affect_valence is None and got[(4, "b")].affect_model is None
    assert summary["filled"]["affect_valence"] == 3
    assert summary["superseded_annotations"] == 1
    assert summary["label_distribution"]["v_oc"] == {"moderately negative": 1}


def test_as_of_an_earlier_version_gives_its_labels(spark, annotations, downstream, tmp_path,
                                                    capsys):
    # versions: 0 created, 1 run r1, 2 run r2 (doc 2's valence 0.5 -> 0.75)
    now = enrich(spark, config(annotations, downstream, tmp_path / "now"))
    then = enrich(spark, config(annotations, downstream, tmp_path / "then", as_of="1"))
    assert (now["annotation_table_version"], then["annotation_table_version"]) == (2, 1)
    assert now["output_rows"] == then["output_rows"] == 5
    valence = {r.id: r.affect_valence for r in enriched(spark, tmp_path / "then").collect()}
    assert valence == {1: 0.25, 2: 0.5, 3: None, 4: None}
    assert cli.main(["enrich", "--annotations", str(annotations), "--downstream", str(downstream),
                     "--output", str(tmp_path / "cli"), "--as-of", "7"]) == cli.EXIT_INPUT
    assert "has no version as of 7" in capsys.readouterr().err


def test_rerun_is_idempotent_and_partition_overwrite_is_dynamic(
        spark, annotations, downstream, tmp_path):
    out = tmp_path / "out"
    cfg = config(annotations, downstream, out, partition_by=["day"])
    enrich(spark, cfg)
    first = sorted(map(tuple, enriched(spark, out).collect()), key=str)
    enrich(spark, cfg)
    assert sorted(map(tuple, enriched(spark, out).collect()), key=str) == first
    # a re-run over only day=b replaces that partition and leaves day=a alone
    only_b = tmp_path / "down_b"
    only_b.mkdir()
    pq.write_table(pa.table({"id": [4], "day": ["b"], "body": ["only"]}), only_b / "p.parquet")
    from deltalake import DeltaTable

    def files():
        actions = pa.table(DeltaTable(str(out)).get_add_actions(flatten=True)).to_pylist()
        return {day: {a["path"] for a in actions if a["partition.day"] == day}
                for day in ("a", "b")}

    before = files()
    enrich(spark, config(annotations, only_b, out, partition_by=["day"]))
    after = files()
    assert after["a"] == before["a"] and not after["b"] & before["b"]  # only day=b rewritten
    df = enriched(spark, out)
    assert sorted(r.body for r in df.where("day = 'a'").collect()) == ["x", "y"]
    assert [r.body for r in df.where("day = 'b'").collect()] == ["only"]


def test_each_run_is_one_delta_commit_and_a_crashed_write_leaves_the_last(
        spark, annotations, downstream, tmp_path, capsys):
    from deltalake import DeltaTable

    import polars as pl

    from emoray.enrich.enriched_table import STAGED, EnrichedTableError

    out = tmp_path / "out"
    enrich(spark, config(annotations, downstream, out, as_of="1"))
    summary = enrich(spark, config(annotations, downstream, out))
    assert summary["output_version"] == 1
    history = DeltaTable(str(out)).history()
    assert [(h["version"], h["operation"], h.get("annotation_table_version"))
            for h in history] == [(1, "WRITE", "2"), (0, "CREATE TABLE", "1")]
    valence = dict(zip(*kernel_read(str(out), ["id", "affect_valence"]).to_pydict().values()))
    assert valence == {1: 0.25, 2: 0.75, 3: None, 4: None}  # id 2 twice: one entry per id
    assert kernel_read(str(out), ["id"]).num_rows == 5
    # a driver killed after Spark wrote its staged files, before the commit: nothing of it is
    # visible to deltalake, Polars or DuckDB's delta_scan; the re-run commits exactly once
    killed = subprocess.run(
        [sys.executable, "-m", "emoray.tools.faults", "enrich-staged", "enrich", "--annotations",
         str(annotations), "--downstream", str(downstream), "--output", str(out)],
        capture_output=True, text=True, timeout=600)
    assert killed.returncode == 17, killed.stderr[-2000:]
    staged = [p for p in out.glob(f"{STAGED}*/*.parquet")]
    assert staged and DeltaTable(str(out)).version() == 1
    assert kernel_read(str(out), ["id"]).num_rows == DeltaTable(str(out)).to_pyarrow_table(
        ).num_rows == pl.read_delta(str(out)).height == 5
    assert enrich(spark, config(annotations, downstream, out))["output_version"] == 2
    assert [h["operation"] for h in DeltaTable(str(out)).history()] == [
        "WRITE", "WRITE", "CREATE TABLE"]
    assert enriched(spark, out, version=0).count() == 5  # time travel: the version before
    assert cli.main(["table", "vacuum", str(out), "--retain-hours", "0", "--no-dry-run"]) == 0
    assert not any(p.exists() for p in staged)
    assert len(list(out.rglob("*.parquet"))) == len(DeltaTable(str(out)).file_uris())
    # an enriched table of an earlier emoray (plain Parquet) is not overwritten in place
    old = tmp_path / "old"
    old.mkdir()
    pq.write_table(pa.table({"id": [1]}), old / "part-0.parquet")
    with pytest.raises(EnrichedTableError, match="holds Parquet files but no Delta table"):
        enrich(spark, config(annotations, downstream, old))


def test_a_delta_downstream_is_read_through_its_snapshot(spark, annotations, tmp_path):
    from deltalake import DeltaTable, write_deltalake

    down = tmp_path / "down_delta"
    write_deltalake(str(down), pa.table({"id": [1, 2, 2, 3, 4], "body": list("abcde")}))
    write_deltalake(str(down), pa.table({"id": [1, 2, 9], "body": list("xyz")}),
                    mode="overwrite")  # version 1: the first version's file is removed
    out = tmp_path / "out"
    now = enrich(spark, config(annotations, down, out))
    assert (now["downstream_version"], now["downstream_rows"], now["output_rows"]) == (1, 3, 3)
    assert sorted(r.body for r in enriched(spark, out).collect()) == ["x", "y", "z"]
    then = enrich(spark, config(annotations, down, tmp_path / "then", downstream_version="0"))
    assert (then["downstream_version"], then["output_rows"]) == (0, 5)
    assert DeltaTable(str(tmp_path / "then")).history()[0]["downstream_version"] == "0"
    with pytest.raises(EnrichError, match="downstream table: table .* has no version as of 7"):
        enrich(spark, config(annotations, down, out, downstream_version="7"))


def test_a_night_rewrites_only_the_partitions_that_changed(spark, annotations, tmp_path):
    """A Delta downstream partitioned by day: a night replaces the days holding a downstream row
    added or removed, or a doc with a new annotation, and leaves the others' files alone; what
    it leaves is what a whole rewrite gives."""
    from deltalake import DeltaTable, write_deltalake

    down, out = tmp_path / "down_days", tmp_path / "out"
    write_deltalake(str(down), pa.table({"id": [1, 2, 3, 4, 6], "day": list("abccd"),
                                         "body": list("vwxyz")}), partition_by=["day"])
    cfg = config(annotations, down, out, partition_by=["day"])
    assert (enrich(spark, cfg)["rewritten"], enrich(spark, cfg)["partitions_rewritten"]) == (
        "the enriched table's first version", 0)  # a second night with nothing new: 0

    def files():
        actions = pa.table(DeltaTable(str(out)).get_add_actions(flatten=True)).to_pylist()
        return {a["partition.day"]: a["path"] for a in actions}

    before = files()
    assert sorted(before) == list("abcd") and DeltaTable(str(out)).version() == 1
    write_deltalake(str(down), pa.table({"id": [5], "day": ["c"], "body": ["u"]}), mode="append",
                    partition_by=["day"])
    DeltaTable(str(down)).delete("day = 'b'")
    DeltaTable(str(down)).vacuum(retention_hours=0, enforce_retention_duration=False,
                                 dry_run=False)  # day=b's file is gone: the log still tells
    commit(annotations, "r4", [row("1", "v_reg", score=0.125, run="r4", at=T0 + timedelta(days=3))])
    night = enrich(spark, cfg)
    assert (night["rewritten"], night["partitions_rewritten"], night["output_rows"]) == (
        "3 partitions changed", 3, 5)
    after = files()
    assert sorted(after) == list("acd") and after["d"] == before["d"]
    assert after["a"] != before["a"] and after["c"] != before["c"]
    whole = enrich(spark, config(annotations, down, tmp_path / "whole", partition_by=["day"]))
    assert whole["rewritten"] == "the enriched table's first version"
    key = ["id", "day", "body", "affect_valence"]
    assert sorted(kernel_read(str(out), key).to_pylist(), key=str) == sorted(
        kernel_read(str(tmp_path / "whole"), key).to_pylist(), key=str)
    assert dict(zip(*kernel_read(str(out), ["id", "affect_valence"]).to_pydict().values()))[1] \
        == 0.125
    # new columns: a whole rewrite of the (complete) Delta downstream drops the days it lacks
    DeltaTable(str(down)).delete("day = 'd'")
    renamed = enrich(spark, config(annotations, down, out, partition_by=["day"], prefix="mood_"))
    assert (renamed["rewritten"], renamed["partitions_rewritten"]) == (
        "the enriched columns changed", None)
    assert sorted(files()) == ["a", "c"]


def test_broadcast_and_shuffle_joins_give_the_same_rows(spark, annotations, downstream, tmp_path):
    results = []
    for threshold in ("10485760", "-1"):
        spark.conf.set("spark.sql.autoBroadcastJoinThreshold", threshold)
        out = tmp_path / f"out{threshold}"
        enrich(spark, config(annotations, downstream, out))
        results.append(sorted(map(str, enriched(spark, out).collect())))
    spark.conf.unset("spark.sql.autoBroadcastJoinThreshold")
    assert results[0] == results[1] and len(results[0]) == 5


def test_bad_inputs_fail_before_the_join(spark, annotations, downstream, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(EnrichError, match=r"has no key column 'doc' \(columns: id, day, body\)"):
        enrich(spark, config(annotations, downstream, out, key="doc"))
    with pytest.raises(EnrichError, match="no annotation table at .*empty: run `emoray annotate`"):
        enrich(spark, config(tmp_path / "empty", downstream, out))
    with pytest.raises(EnrichError, match="model 'Emoopt-13b' has no annotations"):
        enrich(spark, config(annotations, downstream, out, model="Emoopt-13b"))
    with pytest.raises(EnrichError, match=f"register: output {out} is not on S3"):
        enrich(spark, config(annotations, downstream, out,
                             register={"glue_database": "analytics", "name": "posts"}))
    commit(annotations, "r4", [row("abc", "v_reg", score=0.1, run="r4")])
    with pytest.raises(EnrichError, match=r"1 annotation doc_ids cannot be cast .*'id' \(bigint\)"):
        enrich(spark, config(annotations, downstream, out))
    commit(annotations, "r5", [row("1", "v_reg", score=0.1, run="r5", model="Emoopt-13b")])
    with pytest.raises(EnrichError, match="several models"):
        enrich(spark, config(annotations, downstream, out))
    assert not out.exists()


def test_s3a_settings_use_the_default_chain_and_endpoint():
    conf = s3a_conf(S3Config(endpoint_url="http://127.0.0.1:9000", region="eu-west-1"))
    assert conf["spark.hadoop.fs.s3a.aws.credentials.provider"].endswith(
        "DefaultCredentialsProvider")
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9000"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert conf["spark.hadoop.fs.s3a.endpoint.region"] == "eu-west-1"
    assert conf["spark.hadoop.fs.s3a.committer.name"] == "magic"
    cfg = EnrichConfig(annotations="s3://b/ann", downstream="s3a://b/down", output="s3a://b/out")
    assert spark_conf(cfg)["spark.sql.sources.partitionOverwriteMode"] == "dynamic"
    assert "spark.hadoop.fs.s3a.impl" in spark_conf(cfg)
    assert "spark.hadoop.fs.s3a.impl" not in spark_conf(
        EnrichConfig(annotations="/a", downstream="/b", output="/c"))


def test_enrich_profile_and_cli_errors(tmp_path, annotations, capsys):
    from emoray.config import load_config
    from tests.conftest import REPO

    cfg = load_config(REPO / "conf" / "enrich.yaml", model=EnrichConfig)
    assert cfg.key == "post_id" and cfg.partition_by == ["day"]
    assert "spark.hadoop.fs.s3a.committer.name" in spark_conf(cfg)
    code = cli.main(["enrich", "--annotations", str(annotations), "--downstream",
                     str(tmp_path / "missing.parquet"), "--output", str(tmp_path / "o"),
                     "--master", "local[1]"])
    assert code == cli.EXIT_INPUT
    assert "cannot read downstream" in capsys.readouterr().err


def test_spark_joins_exactly_the_rows_delta_kernel_sees(spark, annotations):
    """What enrich reads (Spark over the snapshot's file list, resolved by delta-rs) is what
    delta-kernel-rs, a second Delta implementation, resolves: the 9 committed rows, none of the
    crashed run's uncommitted file."""
    from emoray.enrich.spark_join import committed_annotations

    rows, _ = committed_annotations(spark, EnrichConfig(annotations=str(annotations),
                                                        downstream="-", output="-"))
    seen = sorted((r.doc_id, r.task, r.run_id)
                  for r in rows.select("doc_id", "task", "run_id").collect())
    kernel = kernel_read(str(annotations), ["doc_id", "task", "run_id"]).to_pydict()
    assert sorted(zip(kernel["doc_id"], kernel["task"], kernel["run_id"])) == seen
    assert len(seen) == 9 and "r3" not in {run for _, _, run in seen}


def test_register_gives_the_enriched_table_a_glue_entry(s3_endpoint, capsys):
    """`emoray table register` against moto's Glue on 127.0.0.1: created with the Delta table's
    location, type and columns; a second call changes nothing; a new column updates it."""
    import boto3
    from deltalake import write_deltalake

    from emoray.lake.s3clients import delta_options

    uri = "s3://emoray-test/registered/posts_affect"
    opts = delta_options(uri, S3Config())
    write_deltalake(uri, pa.table({"id": [1], "affect_valence": [0.5]}), storage_options=opts)
    glue = boto3.client("glue", region_name="us-east-1")
    args = ["table", "register", uri, "--glue-database", "analytics", "--name", "posts_affect"]
    assert cli.main(args) == cli.EXIT_INPUT
    assert "Glue database 'analytics' does not exist" in capsys.readouterr().err
    glue.create_database(DatabaseInput={"Name": "analytics"})
    assert [cli.main(args), cli.main(args)] == [0, 0]
    out = capsys.readouterr().out.splitlines()
    assert out == [f"Glue table analytics.posts_affect -> {uri}: created",
                   f"Glue table analytics.posts_affect -> {uri}: unchanged"]
    entry = glue.get_table(DatabaseName="analytics", Name="posts_affect")["Table"]
    assert entry["TableType"] == "EXTERNAL_TABLE"
    assert entry["Parameters"]["table_type"] == "DELTA"
    assert entry["StorageDescriptor"]["Location"] == uri
    assert [(c["Name"], c["Type"]) for c in entry["StorageDescriptor"]["Columns"]] == [
        ("id", "bigint"), ("affect_valence", "double")]
    wider = pa.table({"id": [2], "affect_valence": [0.1], "affect_emotions": [["joy"]]})
    write_deltalake(uri, wider, mode="append", schema_mode="merge", storage_options=opts)
    assert cli.main(args) == 0
    assert capsys.readouterr().out.strip().endswith(": updated")
    columns = glue.get_table(DatabaseName="analytics", Name="posts_affect")["Table"][
        "StorageDescriptor"]["Columns"]
    assert columns[-1] == {"Name": "affect_emotions", "Type": "array<string>"}
