"""The user's door: `emoray annotate` on a local folder of Parquet, JSONL and CSV, `emoray demo`
on the embedded default, and the catalog commands."""

import json
import os
import re
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emoray import cli
from emoray.lake import table
from emoray.tasks import TASKS
from tests.conftest import ENGINE_FLAGS


def test_annotate_local_folder_of_three_formats(tmp_path, ray_local, tiny_model, cold_engine,
                                                 capsys):
    src = tmp_path / "lake"
    src.mkdir()
    pq.write_table(pa.table({"doc": ["p1", "p2"], "body": ["I am so happy", "I am so sad"]}),
                   src / "a.parquet")
    (src / "b.jsonl").write_text("".join(
        json.dumps({"doc": f"j{i}", "body": f"jsonl text {i}"}) + "\n" for i in range(3)))
    (src / "c.csv").write_text('doc,body\nc1,"a, quoted, text"\nc2,\n')
    out = tmp_path / "annotations"
    argv = ["annotate", "--input", str(src), "--output", str(out), "--tasks", "v_reg,e_c,ei_reg",
            "--model", str(tiny_model), "--id-column", "doc", "--text-column", "body",
            *ENGINE_FLAGS,
            "--run-id", "night-1", "--json"]
    # the dry run starts no engine and writes nothing; its counts are the real run's
    assert cli.main([*argv, "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert not table.AnnotationTable(str(out)).exists()
    assert (plan["rows_in"], plan["pairs"], plan["already_held"]) == (7, 42, 0)
    assert (plan["rows_to_write"], plan["prompts"], plan["reused"]) == (42, 36, 0)
    joy = plan["by_request"]["ei_reg:joy"]
    assert (joy["rows"], joy["prompts"], joy["reused"]) == (7, 6, 0) and joy["prompt_tokens"] > 0
    assert sum(r["prompt_tokens"] for r in plan["by_request"].values()) == plan["prompt_tokens"]
    assert plan["estimate"]["device_hours"] is None  # CPU engine, no measured rate given
    code = cli.main(argv)
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["prompt_tokens"] == plan["prompt_tokens"] > 0
    assert summary["usage"]["engines"] == 1 and summary["usage"]["device"] == "cpu"
    assert 0 < summary["usage"]["engine_s"] <= summary["wall_s"]
    (actor,) = summary["engine_actors"]  # its time line: loaded, first prompt, busy, idle
    assert 0 < actor["load_s"] <= actor["first_prompt_s"] < summary["wall_s"]
    assert actor["busy_s"] > 0 and actor["idle_s"] >= 0 and 0 <= actor["idle_share"] < 1
    assert summary["engine_idle_share"] == pytest.approx(actor["idle_share"], abs=1e-3)
    assert summary["rows_in"] == 7 and summary["rows_out"] == 7 * 6
    assert summary["status_counts"] == {"ok": 6 * 6, "empty_text": 6}
    assert summary["prompts_sent"] == 6 * 6
    rows = table.AnnotationTable(str(out)).read()
    assert rows.num_rows == 42
    assert sorted(set(rows["doc_id"].to_pylist())) == ["c1", "c2", "j0", "j1", "j2", "p1", "p2"]
    assert set(rows["run_id"].to_pylist()) == {"night-1"}
    assert (out / "_delta_log" / "00000000000000000001.json").is_file()
    assert sorted(p.parent.name for p in out.glob("task=*/part-night-1-00000-*.parquet")) == [
        "task=e_c", "task=ei_reg", "task=v_reg"]


def test_demo_runs_on_embedded_default(tmp_path, tiny_model):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_"))},
           "RAY_ADDRESS": "local"}  # a new Ray instance, never one left on the machine
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "emoray.cli", "demo", "--model", str(tiny_model),
         "--tasks", "v_oc,e_c", "--config", str(cli_profile())],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    wall = time.monotonic() - t0
    assert done.returncode == 0, done.stderr[-3000:]
    # quiet by default: the progress lines, at most one per 30 s, Ray's one line per engine
    # actor about its constructor arguments (emoray/runtime.py says why it stays), and room
    # for one machine-dependent Ray warning (e.g. a small /dev/shm)
    noise = [line for line in done.stderr.splitlines()
             if not line.startswith("emoray: ") and "has constructor arguments" not in line]
    assert len(noise) <= 1, noise
    progress = [line for line in done.stderr.splitlines() if line.startswith("emoray: ")]
    assert len(progress) <= wall / 30 + 1
    before_summary = done.stdout.split("\nrun ")[0].splitlines()
    assert len(before_summary) <= 40
    assert "uploaded 599 sample texts to s3://emoray-demo/input/" in done.stdout
    assert "rows annotated   1198 (2 task/target pairs per row, 0 already in the table)" in done.stdout
    assert "rows per status  ok 1198" in done.stdout
    # it ends by showing how lake tools read the Delta table, Polars and DuckDB run for real
    assert "a Delta Lake table at s3://emoray-demo/annotations (version 1)" in done.stdout
    assert done.stdout.count("-> 1198 rows (run just now)") == 2
    assert 'spark.read.format("delta").load("s3a://emoray-demo/annotations")' in done.stdout


def cli_profile():
    from tests.conftest import REPO

    return REPO / "conf" / "local.yaml"


def test_tasks_and_models_listings(capsys):
    assert cli.main(["tasks"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in TASKS)
    assert cli.main(["models"]) == 0
    listing = capsys.readouterr().out
    assert "Emollama-chat-7b" in listing
    assert "Emot5-large          lzw1008/Emot5-large            T5ForConditionalGeneration  " \
           "transformers engine" in listing


def test_a_run_over_its_budget_is_refused_before_any_engine_starts(tmp_path, ray_local,
                                                                   tiny_model, text_folder,
                                                                   capsys, monkeypatch):
    """The dry run's estimate (prompt tokens, the checkpoint's tokenizer) against
    `budget.max_prompt_tokens`: over it, exit 8 with the estimate and the budget on one line and
    no table written; a cap the estimate cannot give (dollars without a price) is a
    configuration error naming the setting."""
    out = tmp_path / "affect"
    args = ["annotate", "--input", str(text_folder), "--output", str(out), "--model",
            str(tiny_model), "--tasks", "v_reg", *ENGINE_FLAGS]
    monkeypatch.setenv("EMORAY_BUDGET__MAX_PROMPT_TOKENS", "10")
    assert cli.main(args) == 8
    line = capsys.readouterr().err.strip().splitlines()[-1]
    tokens = int(re.search(r"over budget, nothing started: (\d+) prompt tokens estimated > "
                           r"budget.max_prompt_tokens 10 \(2 prompts for 2 rows\)", line).group(1))
    assert tokens > 10 and not table.AnnotationTable(str(out)).exists()
    assert cli.main([*args, "--dry-run"]) == 8  # the dry run prints its plan, then the verdict
    assert f"{tokens} prompt tokens estimated > budget" in capsys.readouterr().err
    monkeypatch.delenv("EMORAY_BUDGET__MAX_PROMPT_TOKENS")
    monkeypatch.setenv("EMORAY_BUDGET__MAX_USD", "1")
    assert cli.main(args) == 2
    assert "budget.max_usd needs cost.gpu_hour_usd to count dollars: set it, or drop " \
           "budget.max_usd" in capsys.readouterr().err
    assert not table.AnnotationTable(str(out)).exists()


def test_allow_partial_stops_at_the_budget_and_the_next_run_completes(tmp_path, ray_local,
                                                                      tiny_model, capsys,
                                                                      monkeypatch):
    """Over budget with `--allow-partial`: the run answers until its prompt tokens reach
    `budget.max_prompt_tokens` (no batch admitted after that; the one other batch in flight
    still answered), commits every answer, and exits 9 naming the pairs left; its report is
    not a completed night's. The next run answers exactly those pairs: every row once."""
    texts = tmp_path / "texts"
    texts.mkdir()
    pq.write_table(pa.table({"id": [f"t{i:02d}" for i in range(30)],
                             "text": [f"text number {i} of the night" for i in range(30)]}),
                   texts / "night.parquet")
    out = tmp_path / "affect"
    args = ["annotate", "--input", str(texts), "--output", str(out), "--model", str(tiny_model),
            "--tasks", "v_reg", "--batch-size", "3", "--concurrency", "1", *ENGINE_FLAGS]
    assert cli.main([*args, "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cap = plan["prompt_tokens"] * 3 // 10  # about 9 of the 30 prompts
    monkeypatch.setenv("EMORAY_BUDGET__MAX_PROMPT_TOKENS", str(cap))
    assert cli.main([*args, "--run-id", "first"]) == cli.EXIT_BUDGET == 8
    capsys.readouterr()
    assert cli.main([*args, "--run-id", "first", "--allow-partial"]) == cli.EXIT_BUDGET_SPENT == 9
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == (f"emoray: {plan['prompt_tokens']} prompt tokens estimated > "
                      f"budget.max_prompt_tokens {cap} (30 prompts for 30 rows); "
                      "--allow-partial: the run stops at the budget")
    first = table.AnnotationTable(str(out)).read(["doc_id"])
    left = int(re.search(rf"budget spent \((\d+) prompt tokens spent >= budget.max_prompt_"
                         rf"tokens {cap}\): run first committed {first.num_rows} rows and left "
                         r"(\d+) input row x task pairs unanswered; the next run continues",
                         err[-1]).group(2))
    assert 0 < first.num_rows < 30 and left == 30 - first.num_rows
    report = table.run_reports(table.AnnotationTable(str(out)))[0]
    assert (report["run_id"], report["status"], report["missing_pairs"]) == (
        "first", "budget_spent", left)
    per_prompt = -(-plan["prompt_tokens"] // 30) + 1  # the texts differ by a digit at most
    assert cap <= report["prompt_tokens"] < cap + 2 * 3 * per_prompt  # two batches in flight
    monkeypatch.delenv("EMORAY_BUDGET__MAX_PROMPT_TOKENS")
    assert cli.main([*args, "--run-id", "second", "--since-last", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["already_held"], summary["prompts_sent"], summary["rows_out"]) == (
        30 - left, left, left)
    rows = table.AnnotationTable(str(out)).read(["doc_id", "run_id"])
    assert rows.num_rows == 30 and len(set(rows["doc_id"].to_pylist())) == 30
