"""The annotate job end to end over S3 on 127.0.0.1: real Ray, real vLLM (tiny model), every
task in the catalog, mixed input formats and the awkward rows a data lake holds."""

import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from emoray.lake import locations, table
from emoray.config import AnnotateConfig, EngineConfig, S3Config
from emoray.models import resolve_model
from emoray.pipeline import build_annotator
from emoray.sample import sample_texts
from emoray.tasks import TASKS, resolve
from tests.conftest import ENGINE_SETTINGS

ALL_TASKS = list(TASKS)
REQUESTS = resolve(ALL_TASKS)
LONG_TEXT = " ".join(["overwhelming"] * 3000)
SPECIAL = [
    ("dup-id", "first text behind a duplicated id"),
    ("dup-id", "second text behind a duplicated id"),
    ("same-text-a", "one text shared by two ids"),
    ("same-text-b", "one text shared by two ids"),
    ("empty", ""),
    ("blank", "  \t "),
    ("null", None),
    ("long", LONG_TEXT),
]
N_SAMPLE = 24


@pytest.fixture(scope="module")
def s3_run(s3_endpoint, ray_local, tiny_model):
    """Upload one dataset as three files (Parquet with integer ids, JSONL, CSV) and annotate it."""
    fs, root = locations.filesystem_for("s3://emoray-test/lake", S3Config())
    sample = sample_texts()[:N_SAMPLE]
    with fs.open_output_stream(f"{root}/part-a.parquet") as out:
        pq.write_table(pa.table({"id": list(range(8)), "text": [t for _, t in sample[:8]]}), out)
    lines = [json.dumps({"id": i, "text": t}) for i, t in sample[8:16] + SPECIAL]
    with fs.open_output_stream(f"{root}/nested/part-b.jsonl") as out:
        out.write(("\n".join(lines) + "\n").encode())
    with fs.open_output_stream(f"{root}/part-c.csv") as out:
        csv_rows = pa.table({"id": [i for i, _ in sample[16:]], "text": [t for _, t in sample[16:]]})
        pacsv.write_csv(csv_rows, out)
    config = AnnotateConfig(
        input="s3://emoray-test/lake/", output="s3://emoray-test/annotations", tasks=ALL_TASKS,
        engine=EngineConfig(model=str(tiny_model), **ENGINE_SETTINGS),
        batch_size=128,
    )
    annotator = build_annotator(config)
    summary = annotator.run()
    out_fs, out_root = locations.filesystem_for(config.output, config.s3)
    rows = table.AnnotationTable(config.output).read()
    return summary, rows, out_fs, out_root


def _rows(rows, doc_id):
    return rows.filter(pc.equal(rows["doc_id"], doc_id)).to_pylist()


def test_counts_are_exact(s3_run):
    summary, rows, _, _ = s3_run
    rows_in = N_SAMPLE + len(SPECIAL)
    assert len(REQUESTS) == 19
    assert summary.rows_in == rows_in
    assert summary.rows_out == rows.num_rows == rows_in * len(REQUESTS)
    # one prompt per distinct non-blank text and task: the shared text and the 3 blanks are not
    # sent twice
    distinct_texts = N_SAMPLE + 4
    assert summary.prompts_sent == distinct_texts * len(REQUESTS)
    keys = rows.group_by(["doc_id", "task", "target"]).aggregate([("status", "count")])
    counts = dict(zip(
        [f"{d}|{t}|{g}" for d, t, g in zip(*(keys[c].to_pylist() for c in ["doc_id", "task", "target"]))],
        keys["status_count"].to_pylist()))
    assert all(v == 1 for k, v in counts.items() if not k.startswith("dup-id|"))
    assert sum(v for k, v in counts.items() if k.startswith("dup-id|")) == 2 * len(REQUESTS)


def test_schema_is_the_contract(s3_run):
    _, rows, fs, root = s3_run
    assert rows.schema == table.SCHEMA
    annotations = table.AnnotationTable("s3://emoray-test/annotations")
    dt = annotations.snapshot()
    assert dt.metadata().partition_columns == ["task"]
    assert pa.schema(dt.schema().to_arrow()).names == table.SCHEMA.names
    files = annotations.file_uris(dt)
    # one chunk (one commit) of one file per task; the task lives in the path, as Delta asks
    assert sorted(f.split("/")[-2] for f in files) == sorted(f"task={t}" for t in TASKS)
    in_file = pa.schema([f for f in table.SCHEMA if f.name != "task"])
    for path in files:
        with fs.open_input_file(path[len("s3://"):]) as f:
            assert pq.read_schema(f).remove_metadata() == in_file


def test_random_model_answers_all_parse(s3_run):
    summary, rows, _, _ = s3_run
    sent = rows.filter(pc.invert(pc.equal(rows["status"], "empty_text")))
    statuses = set(sent["status"].to_pylist())
    assert statuses <= {"ok", "truncated"}, statuses
    for row in sent.to_pylist():
        parsed = TASKS[row["task"]].answer.parse(row["raw_output"])
        assert (row["score"], row["label"], row["labels"]) == (
            parsed.score, parsed.label, parsed.labels)
        assert 0 < row["confidence"] <= 1
    assert summary.status_counts == {
        "empty_text": 3 * len(REQUESTS), "truncated": len(REQUESTS),
        "ok": (N_SAMPLE + 4) * len(REQUESTS)}


def test_blank_texts_send_no_prompt(s3_run):
    _, rows, _, _ = s3_run
    for doc in ["empty", "blank", "null"]:
        got = _rows(rows, doc)
        assert len(got) == len(REQUESTS)
        assert {r["status"] for r in got} == {"empty_text"}
        assert all(r["raw_output"] is None and r["score"] is None for r in got)
    assert _rows(rows, "null")[0]["text_sha256"] is None


def test_long_text_is_truncated_not_failed(s3_run):
    _, rows, _, _ = s3_run
    got = _rows(rows, "long")
    assert {r["status"] for r in got} == {"truncated"}
    assert all(r["score"] is not None or r["labels"] for r in got)
    assert all("cut to fit" in r["error"] for r in got)


def test_duplicates_kept_and_shared_text_annotated_once(s3_run):
    _, rows, _, _ = s3_run
    a, b = _rows(rows, "same-text-a"), _rows(rows, "same-text-b")
    strip = lambda rs: sorted((r["task"], r["target"] or "", r["raw_output"]) for r in rs)
    assert strip(a) == strip(b)
    assert len({r["text_sha256"] for r in _rows(rows, "dup-id")}) == 2


def test_lineage_columns(s3_run, tiny_model):
    summary, rows, _, _ = s3_run
    assert set(rows["run_id"].to_pylist()) == {summary.run_id}
    assert set(rows["model"].to_pylist()) == {resolve_model(str(tiny_model)).identity}
    assert resolve_model(str(tiny_model)).identity.startswith(f"{tiny_model.name}@")
    for r in rows.group_by(["task", "prompt_version"]).aggregate([]).to_pylist():
        assert r["prompt_version"] == TASKS[r["task"]].prompt_version()
    assert set(rows.filter(pc.equal(rows["doc_id"], "0"))["task"].to_pylist()) == set(ALL_TASKS)
