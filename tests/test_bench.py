"""`emoray bench` run small: its throughput sides in the suite's Ray and S3, its fault campaign
as a user runs it (its own S3 endpoint and Ray cluster, in a subprocess)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.test_cli import cli_profile

SIDES = ("bare", "engine", "unconstrained", "ray_data_llm", "pipeline", "noop")
"""The default sides (`emoray bench`'s --sides) and ray.data.llm's."""


def test_bench_times_every_side_at_both_sizes_on_the_same_prompts(ray_local, s3_endpoint,
                                                                  tiny_model):
    """What `emoray bench` runs once it has started its S3 endpoint and Ray (`run_bench`), here
    in the suite's: conf/local.yaml's engine settings, every default side, ray.data.llm's and
    the transformers sides (a tiny T5 and a tiny BART built for the run) at both sizes."""
    from emoray.tools.bench import run_bench
    from emoray.config import BenchConfig, load_config

    config = load_config(cli_profile(), {"engine.model": str(tiny_model), "batch_size": 32},
                         model=BenchConfig)
    result = run_bench(config.engine, (10, 30), ["v_oc", "sst5"], "s3://emoray-test/bench",
                       batch_size=config.batch_size, sides=(*SIDES, "transformers"))
    assert result["tasks"] == ["v_oc", "sst5"]
    assert result["settings"] == {"constraint": "logprobs", "constrained": True,
                                  "confidence": True, "enable_prefix_caching": True,
                                  "block_size": 32, "enforce_eager": True, "in_process": True,
                                  "batch_size": 32, "concurrency": 1}
    seq2seq = ["transformers:tiny-t5", "transformers:tiny-bart"]
    assert list(result["runs"]) == ["bare", "engine", "unconstrained", *seq2seq,
                                    "ray_data_llm", "pipeline", "noop"]
    for side in result["runs"]:
        assert [r["rows"] for r in result["runs"][side]] == [20, 60], side
        assert set(result["rates"][side]) == {"rows_per_s", "prompt_tokens_per_s",
                                              "output_tokens_per_s"}
    for side in ("bare", "engine", "unconstrained", "ray_data_llm", "pipeline"):
        assert result["runs"][side][1]["prompt_tokens"] > result["runs"][side][0]["prompt_tokens"]
    same = [r["prompt_tokens"] for r in result["runs"]["bare"]]
    for side in ("engine", "ray_data_llm", "pipeline"):
        assert [r["prompt_tokens"] for r in result["runs"][side]] == same, side
    # ray.data.llm decodes the bare side's first steps with the same params: same tokens out
    assert [r["output_tokens"] for r in result["runs"]["ray_data_llm"]] == [
        r["output_tokens"] for r in result["runs"]["bare"]]
    # T5 and BART (the Transformers engine) parse every row, on the same prompts as each other
    t5, bart = (result["runs"][s] for s in seq2seq)
    assert [r["parsed"] for r in t5] == [r["parsed"] for r in bart] == [20, 60]
    assert [r["prompt_tokens"] for r in t5] == [r["prompt_tokens"] for r in bart]
    assert set(result["ratios"]) == {"pipeline_over_bare", "engine_over_bare",
                                     "pipeline_over_engine", "pipeline_over_ray_data_llm",
                                     "ray_data_llm_over_bare", "constrained_over_unconstrained",
                                     "noop_us_per_row", "tiny-t5_over_engine",
                                     "tiny-bart_over_engine"}
    assert result["parse_rate"] == 1.0


def test_bench_rejects_unknown_side(tmp_path):
    from emoray.cli import main, parser

    assert main(["bench", "--sides", "bare,turbo", "--rows", "10,20"]) == 2
    assert parser().parse_args(["bench"]).sides == "bare,engine,unconstrained,pipeline,noop"


def test_bench_confidence_flag_overrides_the_profile():
    """`--confidence off` reaches the engine settings over the profile's (the bench reads no
    EMORAY_* variables), and no flag keeps the profile's."""
    from emoray.cli import parser
    from emoray.cli.tools import _bench_settings

    def confidence(*flags):
        args = parser().parse_args(["bench", "--config", str(cli_profile()), "--model", "m",
                                    *flags])
        return _bench_settings(args).engine.confidence

    assert (confidence(), confidence("--confidence", "off"),
            confidence("--confidence", "on")) == (True, False, True)


def test_bench_faults_loses_worker_nodes_and_a_flaky_store_and_nothing_else(tmp_path,
                                                                            tiny_model):
    """`emoray bench faults` as a user runs it, small and on the no-op engine (the cluster and
    the store are the point): a head and two worker nodes, the flaky proxy; the engine's node
    killed at half the prompts (Ray restarts the engine on the other worker); then both workers
    killed (the run fails saying why, its committed chunks visible once each, the re-run
    completes). Both tables, read straight from the endpoint, hold every pair once."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_"))},
           "RAY_ADDRESS": "local"}  # a new Ray instance, never one left on the machine
    done = subprocess.run(
        [sys.executable, "-m", "emoray.cli", "bench", "faults", "--config", str(cli_profile()),
         "--model", str(tiny_model), "--rows", "300", "--tasks", "v_reg", "--sides", "noop",
         "--batch-size", "16", "--commit-rows", "50"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("rows in ")):]
    assert lines[:3] == ["rows in 300 (300 row x task pairs)", "one worker node lost:",
                         "  run one-node: 300 rows committed, engine actors started 2"]
    assert lines[3] == "both worker nodes lost:"
    assert lines[4].startswith(
        "  run all-nodes: failed: IncompleteRunError: no alive Ray node offers what an engine "
        "actor needs ({'num_cpus': 1, 'resources': {'engine_node': 1}}) for 10 s")
    visible = int(re.search(r"The run committed (\d+) rows before that", lines[4]).group(1))
    assert 0 <= visible < 300
    assert lines[5] == f"  run all-nodes-rerun: {300 - visible} rows committed, engine actors " \
                       "started 1"
    assert lines[6] == f"  visible after the failed run: {visible} rows, 0 duplicates"
    assert all(re.fullmatch(r"worker node \w+ removed after \d+ prompts", line)
               for line in lines[7:10])
    assert lines[10] == "rows committed: one node lost 300, all nodes lost 300"
    injected = dict(re.findall(r"injected (\w+) (\d+)", lines[11]))
    assert set(injected) >= {"slowdown", "reset"}
    assert lines[-1] == "missing 0, duplicates 0"


def test_bench_nightly_input_reads_only_the_new_texts_at_every_size(ray_local, s3_endpoint,
                                                                    tiny_model):
    """`emoray bench nightly-input` small, in the suite's Ray and S3: at each size of answered
    old input, Parquet files and a Delta table, left as completed nights leave them (the table's
    rows and the report of what they read), each night after new texts arrive reads and sends
    the new texts only."""
    from emoray.tools.bench_nightly_input import input_bench
    from emoray.config import EngineConfig
    from tests.conftest import ENGINE_SETTINGS

    engine = EngineConfig(model=str(tiny_model), **ENGINE_SETTINGS)
    result = input_bench(engine, 8, [0, 30], ["v_reg"], "s3://emoray-test/bench-input",
                         file_rows=20)
    assert result["tasks"] == ["v_reg"]
    assert [(r["kind"], r["old_rows"]) for r in result["runs"]] == [
        ("parquet", 0), ("parquet", 30), ("delta", 0), ("delta", 30)]
    for run in result["runs"]:
        for night in run["nights"]:
            assert (night["rows_in"], night["prompts"], night["rows_out"]) == (8, 8, 8), run
            assert night["first_prompt_s"] > 0
        assert run["night_s"] == min(n["total_s"] for n in run["nights"]) and run["over_empty"] > 0
