"""`emoray evaluate`, `emoray calibrate` and `emoray canary`: a model on the AEB gold data."""

from __future__ import annotations

from emoray.cli.common import (
    CALIBRATE_OVERRIDES,
    EVALUATE_OVERRIDES,
    command,
    emit,
    gold_flags,
    job_config,
    ray_flag,
    settings,
)
from emoray.errors import EXIT_OK
from emoray.runtime import start_ray

EXAMPLES = {
    "evaluate": ["emoray evaluate --config conf/local.yaml --model .emoray/tiny-model "
                 "--output ./eval --limit 20"],
    "calibrate": ["emoray calibrate --config conf/local.yaml --model .emoray/tiny-model "
                  "--output ./calibration --limit 50"],
    "canary": ["emoray canary --out ./canary.jsonl --tasks v_reg,e_c --limit 10"],
}


def add(sub) -> None:
    """Declare the commands of this module and their flags."""
    v = command(sub, "evaluate", EXAMPLES, help="score a model on the AEB gold data through "
                "the annotate pipeline (metrics.json, report.md, chart.png)")
    gold_flags(v, "folder for metrics.json, report.md, chart.png")
    v.add_argument("--previous", help="metrics.json of an earlier evaluation to compare with")
    v.add_argument("--references", help="YAML of reference scores (default: the repository's conf/references.yaml)")
    v.add_argument("--cascade", help="SMALL@CALIBRATION,...,BIG: the cascade's metrics beside "
                   "each model alone, the escalation share and the cost per 1 M rows")
    ray_flag(v)
    v.set_defaults(fn=cmd_evaluate)
    k = command(sub, "calibrate", EXAMPLES, help="fit per-task temperatures on the AEB dev "
                "sample so class tasks' confidences mean what they say (calibration.json)")
    gold_flags(k, "folder for calibration.json (and the dev run's table); only "
                "aaid_dev_sample.jsonl of --data is used")
    k.add_argument("--max-loss", type=float, help="also write per class task the lowest "
                   "threshold whose accepted dev answers are right >= 1 - X of the time (a "
                   "cascade step's `accept: calibration`)")
    ray_flag(k)
    k.set_defaults(fn=cmd_calibrate)
    c = command(sub, "canary", EXAMPLES,
                help="draw a gold canary set from the AEB for the quality gate")
    c.add_argument("--data", help="folder of the AEB files (local or s3://; default: the copy "
                   "shipped with emoray)")
    c.add_argument("--out", required=True, help="JSONL file to write (local or s3://)")
    c.add_argument("--tasks", help="comma list (default: every task with gold data)")
    c.add_argument("--limit", type=int, default=10, help="rows per task/target")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--config", help="profile for S3 settings")
    c.set_defaults(fn=cmd_canary)


def cmd_evaluate(args) -> int:
    """A model (or a cascade beside each of its models) scored on the AEB gold rows."""
    from emoray.quality.evaluate import evaluate, render_summary

    config = job_config(args, EVALUATE_OVERRIDES)
    config.require("evaluate.output")
    if config.cascade:
        from emoray.cascade import prepare
        from emoray.quality.evaluate_cascade import evaluate_cascade, render

        prepare(config)  # refused before Ray starts
        start_ray(args.ray_address, args.verbose)
        result = evaluate_cascade(config)
        emit(args, result, render)
        return EXIT_OK
    start_ray(args.ray_address, args.verbose)
    result = evaluate(config)
    emit(args, result, render_summary)
    return EXIT_OK


def cmd_calibrate(args) -> int:
    """Temperatures (and with --max-loss, cascade thresholds) fitted on the AEB dev sample."""
    from emoray.quality.calibrate import calibrate, render

    config = job_config(args, CALIBRATE_OVERRIDES)
    config.require("evaluate.output")
    start_ray(args.ray_address, args.verbose)
    result = calibrate(config, config.evaluate.output)
    emit(args, result, render)
    return EXIT_OK


def cmd_canary(args) -> int:
    """A gold canary file for the quality gate."""
    from emoray.quality.evaluate import gold_requests
    from emoray.quality.gate import write_canary
    from emoray.tasks import TASKS

    config = settings(args, {})
    names = args.tasks.split(",") if args.tasks else [n for n, t in TASKS.items() if t.source]
    n = write_canary(args.data, args.out, gold_requests(names), args.limit, args.seed, config)
    print(f"wrote {n} gold canary rows to {args.out}")
    return EXIT_OK
