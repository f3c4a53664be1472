"""What every command's flags share: the flag groups, the one way flags become settings
(`settings`: a map of flag name to dotted settings key, applied over the profile and the
environment), and each command's parser with its working example."""

from __future__ import annotations

import argparse
import json
import os

from emoray.config import ConfigError, load_config

# flag name → dotted config key
ENGINE_OVERRIDES = {
    "concurrency": "concurrency", "batch_size": "batch_size",
    "model": "engine.model", "device": "engine.device",
    "tensor_parallel_size": "engine.tensor_parallel_size",
    "gpu_memory_utilization": "engine.gpu_memory_utilization",
    "max_model_len": "engine.max_model_len", "template": "engine.template",
    "kv_cache_gib": "engine.kv_cache_gib", "calibration": "calibration",
    "s3_endpoint_url": "s3.endpoint_url", "s3_region": "s3.region",
}
OVERRIDES = {
    **ENGINE_OVERRIDES, "input": "input", "input_version": "input_version", "where": "where",
    "output": "output",
    "since_last": "since_last", "format": "format", "id_column": "id_column",
    "text_column": "text_column", "task_column": "task_column",
    "run_id": "run_id", "commit_rows": "commit_rows", "on_bad_file": "on_bad_file",
    "gate": "gate.enabled", "canary": "gate.canary", "allow_partial": "budget.allow_partial",
}
EVALUATE_OVERRIDES = {
    **ENGINE_OVERRIDES, "data": "evaluate.data", "output": "evaluate.output",
    "limit": "evaluate.limit", "seed": "evaluate.seed", "previous": "evaluate.previous",
    "references": "evaluate.references",
}

CALIBRATE_OVERRIDES = {
    **ENGINE_OVERRIDES, "data": "evaluate.data", "output": "evaluate.output",
    "limit": "evaluate.limit", "seed": "evaluate.seed", "max_loss": "evaluate.max_loss",
}


def settings(args: argparse.Namespace, flags: dict[str, str], model=None, **fixed):
    """The command's settings: its profile (`--config`), then `EMORAY_*` variables, then the
    flags named in `flags` (flag name -> dotted key; a flag left unset changes nothing), then
    `fixed` (dotted key -> value). `model`: the settings class (default `AnnotateConfig`)."""
    overrides = {key: getattr(args, flag, None) for flag, key in flags.items()}
    overrides.update(fixed)
    return load_config(getattr(args, "config", None), overrides,
                       **({"model": model} if model else {}))


def job_config(args: argparse.Namespace, flags: dict[str, str] = OVERRIDES, **fixed):
    """An annotate-shaped command's settings (`settings`), with the flags that take a list or
    a switch turned into theirs: tasks, expected scores, `--full`, `--cascade`."""
    expected = getattr(args, "expected_score", None)
    return settings(args, flags, **{
        "tasks": args.tasks.split(",") if args.tasks else None,
        "engine.expected_score": (None if expected is None else [] if expected == "none"
                                  else expected.split(",")),
        "incremental": False if getattr(args, "full", False) else None,
        "cascade": cascade_steps(getattr(args, "cascade", None)), **fixed})


def cascade_steps(flag: str | None) -> list[dict] | None:
    """`--cascade SMALL@CALIBRATION,...,BIG` as the profile's `cascade:` list: every model but
    the last takes its thresholds from its calibration file (`accept: calibration`, written by
    `emoray calibrate --max-loss`)."""
    if flag is None:
        return None
    models = [m.strip() for m in flag.split(",") if m.strip()]
    steps = []
    for i, item in enumerate(models):
        model, _, cal = item.partition("@")
        last = i == len(models) - 1
        if not last and not cal:
            raise ConfigError(f"--cascade: {model} is not the last model, so it needs its "
                              "calibration file with thresholds: MODEL@CALIBRATION (`emoray "
                              "calibrate --max-loss X` writes one)")
        steps.append({"model": model, **({"calibration": cal} if cal else {}),
                      **({} if last else {"accept": "calibration"})})
    return steps


def local(args) -> bool:
    """Whether the engines run on this machine (no cluster address given, or `local`: a new
    local instance)."""
    return (args.ray_address or os.environ.get("RAY_ADDRESS") or "local") == "local"


def emit(args: argparse.Namespace, result, render) -> None:
    """Print a command's result: JSON with `--json`, else `render(result)`."""
    print(json.dumps(result, default=str) if getattr(args, "json", False) else render(result))


def command(sub, name: str, examples: dict[str, list[str]], **kwargs) -> argparse.ArgumentParser:
    """A sub-command's parser whose help ends with its working examples."""
    epilog = "example" + ("s" if len(examples[name]) > 1 else "") + ":\n" + "\n".join(
        f"  {line}" for line in examples[name])
    return sub.add_parser(name, epilog=epilog,
                          formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)


def ray_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ray-address", help="Ray cluster address (default: RAY_ADDRESS or local)")


def engine_flags(p: argparse.ArgumentParser, config_default: str | None) -> None:
    p.add_argument("--config", default=config_default, help="YAML profile (conf/*.yaml)")
    p.add_argument("--tasks", help="comma list, e.g. v_reg,e_c,ei_reg or ei_oc:joy")
    p.add_argument("--model", help="EmoLLMs name or local checkpoint folder")
    p.add_argument("--concurrency", type=int, help="engine actors (one per GPU group)")
    p.add_argument("--batch-size", type=int, help="prompts per engine call")
    p.add_argument("--tensor-parallel-size", type=int)
    p.add_argument("--gpu-memory-utilization", type=float)
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--kv-cache-gib", type=float, help="CPU engines: KV cache size (default: "
                   "sized to the machine's free memory)")
    p.add_argument("--template", type=int, help="instruction paraphrase index (0 = canonical)")
    p.add_argument("--calibration", help="calibration file from `emoray calibrate` (local or "
                   "s3://): temperature-scales class tasks' confidences")
    p.add_argument("--expected-score", help="comma list of regression tasks scored by the "
                   "expected value of the leading digit instead of the greedy answer ('none': "
                   "all greedy, whatever the calibration file chose)")
    p.add_argument("--device", choices=["auto", "gpu", "cpu"])
    p.add_argument("--s3-endpoint-url")
    p.add_argument("--s3-region")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--verbose", action="store_true",
                   help="show Ray's, Ray Data's and the engine's own logs and progress tables")


def gold_flags(p: argparse.ArgumentParser, output_help: str) -> None:
    """Flags of the commands that run a model on AEB gold data (evaluate, calibrate)."""
    engine_flags(p, None)
    p.add_argument("--data", help="folder of the AEB files (local or s3://; default: the copy "
                   "shipped with emoray)")
    p.add_argument("--output", help=output_help)
    p.add_argument("--limit", type=int, help="at most N gold rows per task/target")
    p.add_argument("--seed", type=int, help="seed of the --limit draw")


def job_flags(p: argparse.ArgumentParser, config_default: str | None) -> None:
    engine_flags(p, config_default)
    p.add_argument("--input", help="s3://bucket/prefix or local file/folder (Parquet/JSONL/CSV), "
                   "or a Delta table")
    p.add_argument("--where", help="partitioned input: read only the files whose partition "
                   "folders satisfy this SQL predicate, e.g. \"date >= '2026-12-01'\"")
    p.add_argument("--input-version", help="input table: the version (Delta), snapshot id "
                   "(Iceberg) or timestamp to read")
    since = p.add_mutually_exclusive_group()
    since.add_argument("--since-last", action="store_const", const=True, dest="since_last",
                       help="read only input the last completed night did not (default for "
                       "nightly)")
    since.add_argument("--full-input", action="store_const", const=False, dest="since_last",
                       help="read the whole input")
    p.add_argument("--output", help="annotation table root: s3://bucket/prefix or local folder")
    p.add_argument("--format", choices=["auto", "parquet", "jsonl", "csv"])
    p.add_argument("--id-column")
    p.add_argument("--text-column")
    p.add_argument("--task-column", help="column naming each row's own task request")
    p.add_argument("--full", action="store_true",
                   help="re-annotate everything, not only what the table lacks")
    p.add_argument("--commit-rows", type=int, help="rows per committed chunk")
    p.add_argument("--on-bad-file", choices=["fail", "skip", "quarantine"],
                   help="what to do with an unreadable file or one lacking a column")
    p.add_argument("--run-id")
    p.add_argument("--dry-run", action="store_true",
                   help="plan only: rows, already held, prompts and prompt tokens per task, "
                   "estimated GPU-hours and cost; no engine starts, nothing is written")
    p.add_argument("--cascade", help="models cheapest first, SMALL@CALIBRATION,...,BIG: each "
                   "but the last accepts its answers at its calibration file's thresholds "
                   "(profile key cascade; see docs/confidence.md)")
    p.add_argument("--allow-partial", action="store_const", const=True,
                   help="over budget: run anyway, stop when the budget is spent (exit 9) and "
                   "keep what was answered (profile key budget.allow_partial)")
    p.add_argument("--gate", action=argparse.BooleanOptionalAction, default=None,
                   help="score the gold canary first and stop below the thresholds "
                   "(profile key gate.enabled)")
    p.add_argument("--canary", help="gold canary file (JSONL/Parquet; default: shipped set)")
