"""Nightly runs over S3 on 127.0.0.1: re-runs annotate only what is new, crashes leave nothing
half-visible, a killed engine actor loses and duplicates nothing, bad rows become statuses."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import ray
from deltalake import DeltaTable

from emoray import cli
from emoray.lake import locations, table
from emoray.engines.pool import release
from emoray.config import AnnotateConfig, EngineConfig, S3Config
from emoray.pipeline import build_annotator
from emoray.sample import sample_texts
from emoray.tasks import TASKS
from tests.conftest import ENGINE_FLAGS, ENGINE_SETTINGS

TASK_SPEC = ["v_reg", "ei_oc:joy"]
TEXTS = [t for _, t in sample_texts()]


def put_parquet(uri, ids, texts):
    fs, path = locations.filesystem_for(uri, S3Config())
    with fs.open_output_stream(path) as out:
        pq.write_table(pa.table({"id": ids, "text": texts}), out)


def job(tiny_model, src, out, **kw):
    engine = EngineConfig(model=str(tiny_model), **ENGINE_SETTINGS,
                          template=kw.pop("template", 0))
    config = AnnotateConfig(input=src, output=out, tasks=kw.pop("tasks", TASK_SPEC),
                            engine=engine, **kw)
    return build_annotator(config)


def annotate(tiny_model, src, out, **kw):
    return job(tiny_model, src, out, **kw).run()


def committed(out):
    return table.AnnotationTable(out).read()


def duplicate_keys(rows, keys=("doc_id", "task", "target", "prompt_version")):
    g = rows.group_by(list(keys)).aggregate([("status", "count")])
    return pc.sum(pc.greater(g["status_count"], 1)).as_py() or 0


@pytest.fixture(scope="module")
def nights(s3_endpoint, ray_local, tiny_model):
    """Four runs over one table, each test below checking one: a first night; the same input
    again; 5 new texts plus 2 new ids whose text the table knows; a changed prompt template."""
    src, out = "s3://emoray-test/inc/in", "s3://emoray-test/inc/out"
    put_parquet(f"{src}/night-1.parquet", [f"d{i}" for i in range(30)], TEXTS[:30])
    runs = {"out": out, "first": annotate(tiny_model, src, out)}
    runs["again"] = annotate(tiny_model, src, out)
    put_parquet(f"{src}/night-2.parquet", [f"n{i}" for i in range(5)] + ["d0-copy", "d1-copy"],
                TEXTS[30:35] + TEXTS[0:2])
    runs["third"] = annotate(tiny_model, src, out)
    runs["third_rows"] = committed(out)
    runs["changed"] = annotate(tiny_model, src, out, template=1)
    runs["changed_rows"] = committed(out)
    return runs


def test_first_night_sends_a_prompt_per_pair(nights):
    first = nights["first"]
    assert (first.rows_out, first.prompts_sent, first.already_held) == (60, 60, 0)


def test_rerun_sends_nothing(nights):
    again = nights["again"]
    assert (again.rows_out, again.prompts_sent, again.reused, again.already_held) == (0, 0, 0, 60)
    assert "nothing new" in again.render()
    report = next(r for r in table.run_reports(table.AnnotationTable(nights["out"]))
                  if r["run_id"] == again.run_id)
    assert report["engine_starts"] == 0 and report["status"] == "ok"


def test_new_rows_only_their_share(nights):
    # k = 5 new texts, plus 2 new ids whose text the table already knows
    third, rows = nights["third"], nights["third_rows"]
    assert (third.rows_out, third.prompts_sent, third.reused) == (7 * 2, 5 * 2, 2 * 2)
    assert rows.num_rows == 60 + 14 and duplicate_keys(rows) == 0
    copy = rows.filter(pc.equal(rows["doc_id"], "d0-copy")).sort_by("task").to_pylist()
    orig = rows.filter(pc.equal(rows["doc_id"], "d0")).sort_by("task").to_pylist()
    assert [(r["raw_output"], r["score"]) for r in copy] == [(r["raw_output"], r["score"]) for r in orig]
    assert {r["run_id"] for r in copy} == {third.run_id}


def test_changed_template_reannotates_everything(nights):
    # the old rows stay with their version
    changed, rows = nights["changed"], nights["changed_rows"]
    assert changed.rows_out == 37 * 2 and changed.prompts_sent == 35 * 2
    versions = rows.group_by(["task", "prompt_version"]).aggregate([("doc_id", "count")])
    expected = {(t, TASKS[t].prompt_version(v)): n
                for t in ("v_reg", "ei_oc") for v, n in ((0, 37), (1, 37))}
    assert dict(zip(zip(versions["task"].to_pylist(), versions["prompt_version"].to_pylist()),
                    versions["doc_id_count"].to_pylist())) == expected
    assert duplicate_keys(rows) == 0


def test_runs_lists_every_night(nights, capsys):
    assert cli.main(["runs", "--output", nights["out"], "--json"]) == 0
    listed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [(r["run_id"], r["rows_out"], r["status"]) for r in listed] == [
        (nights["changed"].run_id, 74, "ok"), (nights["third"].run_id, 14, "ok"),
        (nights["again"].run_id, 0, "ok"), (nights["first"].run_id, 60, "ok")]


def test_streaming_plan_plans_exactly_as_the_shuffle(nights, tiny_model):
    """A night of held rows, a held text under a new id, texts repeated tonight (these take the
    shuffle) and texts seen once (these stream): the dry run plans the same rows, prompts,
    reuse and prompt tokens whichever plan runs: streamed, or not, its text partitions in one
    task (a small wave: `one_task_plan_rows`) or Ray Data's hash shuffle (`0`)."""
    src = put_mixed()
    plans = {(stream, one): job(tiny_model, src, nights["out"], stream_plan=stream,
                                one_task_plan_rows=one).dry_run()
             for stream, one in ((True, 100_000), (False, 100_000), (False, 0))}
    assert plans[True, 100_000] == plans[False, 100_000] == plans[False, 0]
    assert (plans[False, 0]["rows_in"], plans[False, 0]["already_held"],
            plans[False, 0]["rows_to_write"], plans[False, 0]["prompts"],
            plans[False, 0]["reused"]) == (9, 4, 14, 8, 2)


def put_mixed() -> str:
    """Nine rows against the `nights` table: two held rows, a held text under a new id, two
    texts twice and two once."""
    src = "s3://emoray-test/inc/mixed"
    repeated = ["twice over, first", "twice over, second"]
    once = ["only once tonight", "also only once"]
    put_parquet(f"{src}/mixed.parquet", ["d0", "d1", "w", "x0", "x1", "y0", "y1", "z0", "z1"],
                TEXTS[0:2] + [TEXTS[3]] + repeated * 2 + once)
    return src


def test_waves_plan_exactly_as_one_wave(nights, tiny_model):
    """The same night in waves of about four rows plans the same rows, prompts, reuse and
    prompt tokens as in one wave."""
    src = put_mixed()
    one, waved = job(tiny_model, src, nights["out"]), job(tiny_model, src, nights["out"],
                                                          wave_rows=4)
    plans = waved.dry_run(), one.dry_run()
    assert (plans[0].pop("waves"), plans[1].pop("waves")) == (3, 1)
    assert plans[0] == plans[1]


def test_a_night_in_waves_annotates_every_pair_once(s3_endpoint, ray_local, tiny_model,
                                                     cold_engine, monkeypatch, capsys):
    """Ten rows (seven texts, two of them twice, one blank) in waves of five: two waves, one
    engine actor started once for both, each wave its own commit; every pair once, a text's
    copies sent once. The next night (21 rows in waves of seven: the ten held rows, four held
    texts under new ids, six new texts, a null text) meets stored answers in every wave; killed
    after a mid-night chunk's files were written, then resumed with the same command: exit 0,
    every pair once, stored answers reused exactly, one model load for the three waves; then
    everything is held."""
    from emoray.tools.faults import EXIT_CODE
    from emoray.routing import hash_keys, wave_of

    src, out = "s3://emoray-test/waves/in", "s3://emoray-test/waves/out"
    texts = TEXTS[0:6] + TEXTS[0:2] + ["", TEXTS[6]]
    put_parquet(f"{src}/a.parquet", [f"d{i}" for i in range(10)], texts)
    night = job(tiny_model, src, out, wave_rows=5)
    assert night.waves == 2
    summary = night.run()
    assert (summary.rows_in, summary.rows_out, summary.prompts_sent) == (10, 20, 14)
    rows = committed(out)
    assert rows.num_rows == 20 and duplicate_keys(rows) == 0
    answers = {(r["doc_id"], r["task"]): r["raw_output"] for r in rows.to_pylist()}
    assert all(answers["d6", t] == answers["d0", t] and answers["d7", t] == answers["d1", t]
               for t in ("v_reg", "ei_oc"))
    report = next(r for r in table.run_reports(table.AnnotationTable(out))
                  if r["run_id"] == summary.run_id)
    assert (report["waves"], report["engine_starts"], len(report["engine_actors"])) == (2, 1, 1)
    assert report["chunks"] == 2  # each wave committed before the next
    assert "waves            2 (each a share of the texts" in summary.render()

    # delta-rs rewrites d9's file without it (a DELETE, as an operator fixing a row would): the
    # rewritten file stores its strings as string_view and has no key index sidecar; the
    # night reads it through the table's schema like the others and re-annotates d9.
    t = table.AnnotationTable(out)
    DeltaTable(t.uri, storage_options=t.options).delete("doc_id = 'd9'")
    assert committed(out).num_rows == 18
    new_texts = [f"a new text for the second night, number {i}" for i in range(6)]
    put_parquet(f"{src}/b.parquet", [f"r{i}" for i in range(4)] + [f"n{i}" for i in range(6)]
                + ["z"], TEXTS[0:4] + new_texts + [None])
    sha = pa.array([hashlib.sha256(t.encode()).hexdigest() for t in TEXTS[0:7]])
    assert set(wave_of(hash_keys(sha)[0], 3)) == {0, 1, 2}  # every wave meets stored answers
    monkeypatch.setenv("EMORAY_WAVE_ROWS", "7")
    args = ["annotate", "--input", src, "--output", out, "--tasks", ",".join(TASK_SPEC),
            "--model", str(tiny_model), *ENGINE_FLAGS, "--run-id", "waved"]
    crashed = subprocess.run([sys.executable, "-m", "emoray.tools.faults", "files-written@1", *args],
                             env={**os.environ, "RAY_ADDRESS": "local"}, capture_output=True,
                             text=True, timeout=600)
    assert crashed.returncode == EXIT_CODE, crashed.stderr[-2000:]
    assert 18 < committed(out).num_rows < 42  # wave 1 committed, the chunk after it not
    capsys.readouterr()
    release()  # the resumed night loads the model once for its three waves
    assert cli.main(args) == cli.EXIT_OK
    assert "waves            3" in capsys.readouterr().out
    rows = committed(out)
    assert rows.num_rows == 42 and duplicate_keys(rows) == 0
    assert [r["run_id"] for r in rows.to_pylist() if r["doc_id"] == "d9"] == ["waved"] * 2
    answers = {(r["doc_id"], r["task"]): (r["raw_output"], r["status"]) for r in rows.to_pylist()}
    assert all(answers[f"r{i}", t] == answers[f"d{i}", t] for i in range(4)
               for t in ("v_reg", "ei_oc"))
    assert {answers["z", t][1] for t in ("v_reg", "ei_oc")} == {"empty_text"}
    report = next(r for r in table.run_reports(table.AnnotationTable(out))
                  if r["run_id"] == "waved")
    assert (report["waves"], report["engine_starts"], report["status"]) == (3, 1, "ok")
    again = annotate(tiny_model, src, out, wave_rows=7)
    assert (again.rows_out, again.prompts_sent, again.already_held) == (0, 0, 42)


def _engine_actor_pid():
    """The process of this Ray instance's live engine actor (from Ray's actor table)."""
    from ray._private.state import actors

    (pid,) = [a["Pid"] for a in actors(actor_state_name="ALIVE").values()
              if a["ActorClassName"] == "EngineStage"]
    return pid


def test_killed_engine_actor_loses_and_duplicates_nothing(s3_endpoint, ray_local, tiny_model,
                                                          cold_engine):
    src, out = "s3://emoray-test/kill/in", "s3://emoray-test/kill/out"
    n = 120
    texts = [f"{TEXTS[i % len(TEXTS)]} #{i}" for i in range(n)]
    put_parquet(f"{src}/a.parquet", [f"k{i}" for i in range(n)], texts)
    result = {}
    worker = threading.Thread(target=lambda: result.update(summary=annotate(
        tiny_model, src, out, batch_size=8, commit_rows=100, run_id="killed")))
    worker.start()
    killed = None
    deadline = time.time() + 600
    try:
        while worker.is_alive() and time.time() < deadline and not killed:
            try:
                progress = ray.get(ray.get_actor("emoray-stats-killed").get.remote())
            except ValueError:  # the run has not started its counters yet
                progress = {}
            if progress.get("prompts", 0) >= n:  # about half of the 2n prompts
                killed = _engine_actor_pid()
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.05)
    finally:  # the night ends before the next test's starts, whatever happened here
        worker.join(timeout=600)
    assert killed, "the run finished before half progress; make it slower"
    summary = result["summary"]
    rows = committed(out)
    assert summary.rows_out == rows.num_rows == 2 * n
    assert duplicate_keys(rows, ("doc_id", "task", "target", "run_id")) == 0
    assert set(rows["status"].to_pylist()) == {"ok"}
    report = next(r for r in table.run_reports(table.AnnotationTable(out))
                  if r["run_id"] == summary.run_id)
    assert report["engine_starts"] == 2
    assert summary.prompts_sent >= 2 * n


def test_bad_rows_become_statuses_and_a_corrupt_file_is_quarantined(
        s3_endpoint, ray_local, tiny_model):
    src, out = "s3://emoray-test/bad/in", "s3://emoray-test/bad/out"
    good = 20
    put_parquet(f"{src}/good.parquet", [f"g{i}" for i in range(good)], TEXTS[:good])
    put_parquet(f"{src}/awkward.parquet", ["empty", "null", "huge"], ["", None, "joy " * 25_000])
    fs, path = locations.filesystem_for(src, S3Config())
    with fs.open_output_stream(f"{path}/latin1.csv") as f:
        f.write(b"id,text\nbad-utf8,caf\xe9 cr\xe8me \xff\n")
    with fs.open_output_stream(f"{path}/corrupt.parquet") as f:
        f.write(b"PAR1\x00\x01garbage that is not a parquet footer")
    summary = annotate(tiny_model, src, out, on_bad_file="quarantine")
    rows = committed(out)
    assert summary.rows_in == good + 4
    assert summary.rows_out == rows.num_rows == (good + 4) * 2
    bad = rows.filter(pc.invert(pc.equal(rows["status"], "ok")))
    assert sorted(set(bad["doc_id"].to_pylist())) == ["bad-utf8", "empty", "huge", "null"]
    assert bad.num_rows == 4 * 2
    status = dict(zip(bad["doc_id"].to_pylist(), bad["status"].to_pylist()))
    assert status == {"empty": "empty_text", "null": "empty_text", "bad-utf8": "invalid_text",
                      "huge": "truncated"}
    report = next(r for r in table.run_reports(table.AnnotationTable(out))
                  if r["run_id"] == summary.run_id)
    [(bad_path, reason)] = report["bad_files"].items()
    assert bad_path.endswith("bad/in/corrupt.parquet") and "cannot read parquet file" in reason
    out_fs, out_root = locations.filesystem_for(out, S3Config())
    quarantined = out_fs.get_file_info(pafs.FileSelector(f"{out_root}/_quarantine/{summary.run_id}"))
    assert [i.base_name for i in quarantined] == ["emoray-test__bad__in__corrupt.parquet"]


def test_missing_pairs_are_counted_from_the_committed_data(s3_endpoint, ray_local, tiny_model):
    """The run's "incomplete" verdict when its counters disagree with the rows written: every
    input row x task pair without a row in the table (any status), from a fresh snapshot. Rows
    are committed straight to the table (no engine): one table holds every pair, one lacks
    two docs."""
    src, texts = "s3://emoray-test/verdict/in", TEXTS[:5] + [""]
    put_parquet(f"{src}/a.parquet", [f"d{i}" for i in range(6)], texts)
    for out, docs, missing in (("s3://emoray-test/verdict/all", range(6), 0),
                               ("s3://emoray-test/verdict/gap", (0, 1, 3, 4), 4)):
        check = job(tiny_model, src, out)
        answers = [{"doc_id": f"d{i}", "text_sha256": hashlib.sha256(texts[i].encode()).hexdigest(),
                    "task": r.task.name, "target": r.target, "status": "ok", "run_id": "r1",
                    "model": check.model.identity, "prompt_version": check.versions[r.task.name],
                    "annotated_at": datetime(2026, 11, 30, tzinfo=timezone.utc)}
                   for i in docs for r in check.requests]
        table.ChunkWriter(table.AnnotationTable(out), "r1", 100).commit_chunk(
            pa.Table.from_pylist(answers, schema=table.SCHEMA), 0)
        assert check.missing_pairs() == missing
