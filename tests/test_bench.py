"""`emoray bench` run small, as a user runs it: its own S3 endpoint and Ray, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.test_cli import cli_profile


def test_bench_prints_every_side_at_both_sizes(tmp_path, tiny_model):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_"))}
    done = subprocess.run(
        [sys.executable, "-m", "emoray.cli", "bench", "--config", str(cli_profile()),
         "--model", str(tiny_model), "--rows", "30,90", "--tasks", "v_oc,sst5",
         "--batch-size", "32", "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["tasks"] == ["v_oc", "sst5"]
    assert result["settings"] == {"constraint": "logprobs", "constrained": True,
                                  "enable_prefix_caching": True, "block_size": None,
                                  "batch_size": 32,
                                  "concurrency": 1}
    sides = ["bare", "engine", "unconstrained", "pipeline", "noop"]  # the default sides
    assert list(result["runs"]) == sides
    for side in sides:
        assert [r["rows"] for r in result["runs"][side]] == [60, 180], side
        assert set(result["rates"][side]) == {"rows_per_s", "prompt_tokens_per_s",
                                              "output_tokens_per_s"}
    for side in ("bare", "engine", "unconstrained", "pipeline"):
        assert result["runs"][side][1]["prompt_tokens"] > result["runs"][side][0]["prompt_tokens"]
    same = [r["prompt_tokens"] for r in result["runs"]["bare"]]
    assert [r["prompt_tokens"] for r in result["runs"]["engine"]] == same
    assert [r["prompt_tokens"] for r in result["runs"]["pipeline"]] == same
    assert set(result["ratios"]) == {"pipeline_over_bare", "engine_over_bare",
                                     "pipeline_over_engine", "constrained_over_unconstrained",
                                     "noop_us_per_row"}
    assert result["parse_rate"] == 1.0


def test_bench_rejects_unknown_side(tmp_path):
    from emoray.cli import main

    assert main(["bench", "--sides", "bare,turbo", "--rows", "10,20"]) == 2


def test_transformers_side_times_tiny_t5_and_bart_on_the_same_prompts(ray_local, tiny_model,
                                                                        tmp_path):
    from emoray.bench import run_bench
    from emoray.config import EngineConfig

    result = run_bench(EngineConfig(model=str(tiny_model), device="cpu", max_model_len=1024),
                       (30, 90), ["v_oc", "v_reg"], str(tmp_path), batch_size=32,
                       sides=("transformers",))
    assert list(result["runs"]) == ["transformers:tiny-t5", "transformers:tiny-bart"]
    for side, runs in result["runs"].items():
        assert [r["rows"] for r in runs] == [60, 180], side
        assert [r["parsed"] for r in runs] == [60, 180], side
    t5, bart = (result["runs"][s] for s in result["runs"])
    assert [r["prompt_tokens"] for r in t5] == [r["prompt_tokens"] for r in bart]
    assert result["parse_rate"] == 1.0 and result["ratios"] == {}
