"""`emoray`: the command line door to the annotate job, evaluation, the nightly job, the demo and
the catalogs.

Settings come from a YAML profile (`--config conf/<profile>.yaml`), `EMORAY_*` environment
variables, then command-line flags; every flag maps to one field of
`emoray.config.AnnotateConfig`. Exit codes, for schedulers: 0 ok, 1 unexpected failure,
2 bad configuration, 3 bad input, 4 table locked by another run, 5 quality gate failed (nothing
annotated), 6 partial failure (some output committed; re-running completes it), 7 the engine
could not start (or would not fit in memory; nothing annotated), 8 over the run's budget
(nothing started), 9 the run's budget spent (what was answered is committed; the next run
continues).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from emoray.config import (
    AnnotateConfig,
    BenchConfig,
    ConfigError,
    RunsConfig,
    load_config,
)
from emoray.errors import (  # noqa: F401  (the codes, re-exported for scripts and tests)
    EXIT_BUDGET,
    EXIT_BUDGET_SPENT,
    EXIT_CONFIG,
    EXIT_ENGINE,
    EXIT_FAILED,
    EXIT_GATE,
    EXIT_INPUT,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_PARTIAL,
    EmorayError,
)
from emoray.runtime import start_ray

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


def _engine_flags(p: argparse.ArgumentParser, config_default: str | None) -> None:
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


def _gold_flags(p: argparse.ArgumentParser, output_help: str) -> None:
    """Flags of the commands that run a model on AEB gold data (evaluate, calibrate)."""
    _engine_flags(p, None)
    p.add_argument("--data", help="folder of the AEB files (local or s3://; default: the copy "
                   "shipped with emoray)")
    p.add_argument("--output", help=output_help)
    p.add_argument("--limit", type=int, help="at most N gold rows per task/target")
    p.add_argument("--seed", type=int, help="seed of the --limit draw")


def _job_flags(p: argparse.ArgumentParser, config_default: str | None) -> None:
    _engine_flags(p, config_default)
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


def job_config(args: argparse.Namespace, flags: dict[str, str] = OVERRIDES,
               **fixed) -> AnnotateConfig:
    overrides = {key: getattr(args, flag) for flag, key in flags.items()}
    overrides["tasks"] = args.tasks.split(",") if args.tasks else None
    expected = getattr(args, "expected_score", None)
    overrides["engine.expected_score"] = (None if expected is None else [] if expected == "none"
                                          else expected.split(","))
    overrides["incremental"] = False if getattr(args, "full", False) else None
    overrides["cascade"] = cascade_steps(getattr(args, "cascade", None))
    overrides.update(fixed)
    return load_config(args.config, overrides)


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


def _local(args) -> bool:
    """Whether the engines run on this machine (no cluster address given, or `local`: a new
    local instance)."""
    import os

    return (args.ray_address or os.environ.get("RAY_ADDRESS") or "local") == "local"


def cmd_annotate(args) -> int:
    from emoray.quality.gate import gated_run
    from emoray.pipeline import build_annotator

    from emoray import budget

    config = job_config(args)
    if config.cascade:
        return _annotate_cascade(args, config)
    annotator = build_annotator(config, local_engine=_local(args))
    start_ray(args.ray_address, args.verbose)
    if args.dry_run:
        from emoray.pipeline import render_dry_run

        plan = annotator.dry_run()
        print(json.dumps(plan) if args.json else render_dry_run(plan))
        budget.hold(plan, annotator.config)
        return EXIT_OK
    budget.check_before_run(annotator)
    summary = gated_run(annotator)
    print(json.dumps(summary.as_dict()) if args.json else summary.render())
    return EXIT_OK


def _annotate_cascade(args, config) -> int:
    """A cascade run (`emoray.cascade`), or its dry run (the first step exactly, the later ones
    bounded) held to the budget as a one-model dry run is; a run holds its budget itself."""
    from emoray import budget
    from emoray.cascade import plan, prepare, render, render_plan, run_cascade

    if config.gate.enabled:
        raise ConfigError("the quality gate does not run over a cascade: gate each of its "
                          "models alone (emoray annotate --model M --gate), then run the "
                          "cascade with gate.enabled false (--no-gate)")
    prepare(config)  # refused before Ray starts
    start_ray(args.ray_address, args.verbose)
    if args.dry_run:
        p = plan(config)
        print(json.dumps(p, default=str) if args.json else render_plan(p))
        budget.hold(p, config)
        return EXIT_OK
    report = run_cascade(config)
    print(json.dumps(report, default=str) if args.json else render(report))
    return EXIT_OK


def cmd_evaluate(args) -> int:
    from emoray.quality.evaluate import evaluate, render_summary

    config = job_config(args, EVALUATE_OVERRIDES)
    config.require("evaluate.output")
    if config.cascade:
        from emoray.cascade import prepare
        from emoray.quality.evaluate_cascade import evaluate_cascade, render

        prepare(config)  # refused before Ray starts
        start_ray(args.ray_address, args.verbose)
        result = evaluate_cascade(config)
        print(json.dumps(result, default=str) if args.json else render(result))
        return EXIT_OK
    start_ray(args.ray_address, args.verbose)
    result = evaluate(config)
    print(json.dumps(result, default=str) if args.json else render_summary(result))
    return EXIT_OK


def cmd_calibrate(args) -> int:
    from emoray.quality.calibrate import calibrate, render

    config = job_config(args, CALIBRATE_OVERRIDES)
    config.require("evaluate.output")
    start_ray(args.ray_address, args.verbose)
    result = calibrate(config, config.evaluate.output)
    print(json.dumps(result) if args.json else render(result))
    return EXIT_OK


def cmd_canary(args) -> int:
    from emoray.quality.evaluate import gold_requests
    from emoray.quality.gate import write_canary
    from emoray.tasks import TASKS

    config = load_config(args.config, {})
    names = args.tasks.split(",") if args.tasks else [n for n, t in TASKS.items() if t.source]
    n = write_canary(args.data, args.out, gold_requests(names), args.limit, args.seed, config)
    print(f"wrote {n} gold canary rows to {args.out}")
    return EXIT_OK


def cmd_nightly(args) -> int:
    from emoray.nightly import render, run_nightly

    config = job_config(args)
    start_ray(args.ray_address, args.verbose)
    if args.dry_run:
        from emoray.nightly import for_date
        from emoray.pipeline import build_annotator, render_dry_run

        plan = build_annotator(for_date(config, args.date), local_engine=_local(args)).dry_run()
        print(json.dumps(plan) if args.json else render_dry_run(plan) +
              "\n  (a nightly dry run plans the annotate step; the gate, compaction and "
              "enrichment do not run)")
        return EXIT_OK
    result = run_nightly(config, args.date)
    print(json.dumps(result, default=str) if args.json else render(result))
    return EXIT_OK


def cmd_demo(args) -> int:
    from emoray.tools.demo import BUCKET, run_demo, tiny_model
    from emoray.tools.local_s3 import local_s3

    model = args.model or str(tiny_model())
    with local_s3(BUCKET):
        config = job_config(args, **{
            "input": args.input or f"s3://{BUCKET}/input/",
            "output": args.output or f"s3://{BUCKET}/annotations/",
            "engine.model": model,
        })
        run_demo(config, model_given=bool(args.model), verbose=args.verbose,
                 dry_run=args.dry_run)
    return EXIT_OK


def cmd_bench(args) -> int:
    from emoray.tools.bench import SIDES, main_bench
    from emoray.tools.demo import tiny_model

    sizes = tuple(int(x) for x in args.rows.split(","))
    sides = tuple(args.sides.split(","))
    unknown = sorted(set(sides) - set(SIDES))
    if unknown:
        raise ConfigError(f"--sides takes {', '.join(SIDES)}; unknown: {', '.join(unknown)}")
    if args.scenario in ("table", "nightly-input") and len(sizes) < 2:
        raise ConfigError(f"--rows takes NEW,STORED[,STORED...] for {args.scenario}, e.g. "
                          "1000,0,1000000,5000000")
    if args.scenario == "throughput" and len(sizes) != 2:
        raise ConfigError("--rows takes two sizes for throughput, e.g. 20000,100000")
    overrides = {"engine.model": args.model or str(tiny_model()), "engine.device": args.device,
                 "engine.gpu_memory_utilization": args.gpu_memory_utilization,
                 "engine.max_model_len": args.max_model_len,
                 "engine.enable_prefix_caching": (None if args.prefix_caching is None
                                                  else args.prefix_caching == "on"),
                 "engine.block_size": args.block_size,
                 "engine.constrained": False if args.constraint == "none" else None,
                 "engine.constraint": None if args.constraint in (None, "none")
                 else args.constraint}
    if not (args.model or args.config):  # the tiny model on this machine's CPU
        overrides.update({"engine.device": args.device or "cpu",
                          "engine.gpu_memory_utilization": args.gpu_memory_utilization or 0.1})
    config = load_config(args.config, {
        **overrides, "batch_size": args.batch_size, "concurrency": args.concurrency,
        "seq2seq_models": args.seq2seq_models.split(",") if args.seq2seq_models else None},
        model=BenchConfig)
    commit_rows = args.commit_rows or {"nightly": 5000, "faults": 1000}.get(args.scenario,
                                                                           100_000)
    if args.scenario == "faults":
        from emoray.tools.bench_faults import main_campaign

        main_campaign(config.engine, sizes[-1], args.tasks.split(","), sides == ("noop",),
                      config.batch_size, commit_rows, args.json)
        return EXIT_OK
    if args.scenario == "nightly-input":
        from emoray.tools.bench_nightly_input import main_input

        main_input(config.engine, sizes, args.tasks.split(","), args.json)
        return EXIT_OK
    if args.scenario == "cascade":
        from emoray.tools.bench_cascade import main_cascade
        from emoray.tools.demo import tiny_t5

        main_cascade(config.engine, args.small or str(tiny_t5()), config.engine.model,
                     sizes[-1], args.tasks.split(",")[0], args.json)
        return EXIT_OK
    if args.scenario == "memory":
        from emoray.tools.bench_memory import PLANS, main_memory

        plans = tuple(args.plans.split(","))
        if set(plans) - set(PLANS) or len(set(plans)) < len(plans):
            raise ConfigError(f"--plans takes each of {', '.join(PLANS)} at most once; got "
                              f"{args.plans}")
        waves = tuple(int(w) or None for w in args.wave_rows.split(","))
        main_memory(config.engine, sizes, args.tasks.split(","), config.batch_size,
                    commit_rows, args.json, args.file_rows, plans, waves)
        return EXIT_OK
    main_bench(args.scenario, config.engine, sizes, args.tasks.split(","), config.batch_size,
               commit_rows, args.json, config.concurrency, sides,
               tuple(config.seq2seq_models))
    return EXIT_OK


def cmd_enrich(args) -> int:
    from emoray.enrich.spark_join import EnrichConfig, enrich, render, spark_session

    overrides = {"annotations": args.annotations, "downstream": args.downstream,
                 "output": args.output, "key": args.key, "model": args.model,
                 "format": args.format, "prefix": args.prefix, "master": args.master,
                 "partition_by": args.partition_by.split(",") if args.partition_by else None,
                 "as_of": args.as_of, "reader": args.reader, "writer": args.writer,
                 "downstream_version": args.downstream_version,
                 "s3.endpoint_url": args.s3_endpoint_url}
    config = load_config(args.config, overrides, model=EnrichConfig)
    config.require("annotations")
    summary = enrich(spark_session(config), config)
    print(json.dumps(summary, default=str) if args.json else render(summary))
    return EXIT_OK


def cmd_runs(args) -> int:
    from emoray.lake import table

    config = load_config(args.config, {"output": args.output,
                                       "s3.endpoint_url": args.s3_endpoint_url}, model=RunsConfig)
    if not config.output:
        raise ConfigError("name the annotation table with --output or a profile's `output`")
    reports = table.run_reports(table.AnnotationTable(config.output, config.s3))[: args.limit]
    if args.json:
        print(json.dumps(reports, default=str))
        return EXIT_OK
    columns = ["run_id", "status", "started_at", "rows_in", "rows_out", "already_held",
               "prompts_sent", "reused", "wall_s", "rows_per_s", "engine_s", "cost_usd"]
    print("  ".join(columns))
    for r in reports:
        r = {**r, **{k: v for k, v in (r.get("usage") or {}).items() if k in columns}}
        print("  ".join(str(r.get(c, "-")) for c in columns))
        if r.get("escalation"):  # a cascade run (`emoray.cascade`)
            print("    escalated: " + ", ".join(
                f"{k} {e['escalated']}/{e['pairs']} ({e['share']:.1%})"
                for k, e in sorted(r["escalation"].items())))
    if not reports:
        print(f"(no runs in {config.output})")
    return EXIT_OK


def cmd_table(args) -> int:
    from emoray.lake import table

    config = load_config(args.config, {"output": args.table,
                                       "s3.endpoint_url": args.s3_endpoint_url}, model=RunsConfig)
    if args.action == "migrate":
        from emoray.lake.migrate import migrate

        if not (args.table and args.new):
            raise ConfigError("migrate takes OLD NEW: the old marker-layout table and where the "
                              "Delta table goes")
        result = migrate(args.table, args.new, config.s3)
        print(json.dumps(result) if args.json else
              f"migrated {result['rows_copied']} of {result['committed_rows']} committed rows "
              f"({result['chunks']} chunks) from {result['old']} to {result['new']} (version "
              f"{result['version']}); {result['uncommitted_files_skipped']} uncommitted files "
              "left behind")
        return EXIT_OK
    if not config.output:
        raise ConfigError("name the annotation table (TABLE argument or a profile's `output`)")
    annotations = table.AnnotationTable(config.output, config.s3)
    if args.action == "history":
        rows = [{"version": c["version"], "time": c.get("timestamp"),
                 "operation": c.get("operation"), "run_id": c.get("run_id"),
                 "chunk": c.get("chunk"), "rows_added": (c.get("operationMetrics") or {}).get(
                     "num_added_rows", c.get("rows"))}
                for c in annotations.history(args.limit)]
        if args.json:
            print(json.dumps(rows, default=str))
            return EXIT_OK
        print("version  time                      operation       run_id                    "
              "chunk  rows_added")
        for r in rows:
            when = datetime.fromtimestamp(r["time"] / 1000, timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%SZ") if r["time"] else "-"
            print(f"{r['version']:<8} {when:25} {r['operation'] or '-':15} "
                  f"{r['run_id'] or '-':25} {r['chunk'] or '-':6} {r['rows_added'] or '-'}")
        return EXIT_OK
    if args.action == "optimize":
        result = table.optimize(annotations)
        print(json.dumps(result) if args.json else
              f"optimized {annotations.uri}: {result['files_before']} files before, "
              f"{result['files_after']} after (version {result['version']})")
        return EXIT_OK
    if args.action == "index":
        result = table.index(annotations)
        print(json.dumps(result) if args.json else
              f"key index of {annotations.uri}: {result['written']} sidecars written for the "
              f"{result['files']} data files of version {result['version']} (the rest had "
              f"theirs); {result['pruned']} sidecars of removed files deleted")
        return EXIT_OK
    if args.action == "register":
        from emoray.lake.glue import register

        if not (args.glue_database and args.name):
            raise ConfigError("register takes --glue-database DB --name NAME")
        done = register(annotations.uri, args.glue_database, args.name, config.s3)
        print(json.dumps({"glue": f"{args.glue_database}.{args.name}", "entry": done})
              if args.json else f"Glue table {args.glue_database}.{args.name} -> "
              f"{annotations.uri}: {done}")
        return EXIT_OK
    files = table.vacuum(annotations, args.retain_hours, dry_run=not args.no_dry_run)
    if args.json:
        print(json.dumps({"dry_run": not args.no_dry_run, "files": files}))
        return EXIT_OK
    verb = "deleted" if args.no_dry_run else "would delete (dry run; --no-dry-run deletes)"
    print(f"{verb} {len(files)} files no version within {args.retain_hours} h references")
    for f in files:
        print(f"  {f}")
    return EXIT_OK


def cmd_tiny_model(args) -> int:
    from emoray.tools.tiny_model import build_tiny_model

    out = build_tiny_model(args.dir, args.shape, arch=args.arch)
    print(f"{args.shape} {args.arch} checkpoint (random weights, meaningless labels) written to "
          f"{out}")
    return EXIT_OK


def cmd_tasks(args) -> int:
    from emoray.tasks import TASKS

    for t in TASKS.values():
        targets = f" targets: {','.join(t.targets)}" if t.targets else ""
        print(f"{t.name:12} {t.family:10} {t.prompt_version()}  {t.description}{targets}")
    return EXIT_OK


def cmd_stages(args) -> int:
    from emoray.contract import render
    from emoray.pipeline import STAGES

    print(render(STAGES))
    return EXIT_OK


def cmd_models(args) -> int:
    from emoray.models import EMOLLMS

    for m in EMOLLMS.values():
        print(f"{m.name:20} {m.source:30} {m.architecture:27} {m.engine} engine")
    return EXIT_OK


EXAMPLES = {
    "annotate": ["emoray annotate --input ./texts --output ./affect --tasks v_reg,e_c "
                 "--model .emoray/tiny-model --device cpu",
                 "emoray annotate --input ./texts --output ./affect --dry-run",
                 "emoray annotate --input ./texts --output ./affect --tasks v_oc --cascade "
                 "Emot5-large@./cal/calibration.json,Emollama-chat-13b",
                 "emoray annotate --input ./texts --output ./affect --calibration "
                 "./calibration/calibration.json",
                 "emoray annotate --config conf/cluster.yaml --input s3://lake/texts/ "
                 "--output s3://lake/affect/"],
    "evaluate": ["emoray evaluate --config conf/local.yaml --model .emoray/tiny-model "
                 "--output ./eval --limit 20"],
    "calibrate": ["emoray calibrate --config conf/local.yaml --model .emoray/tiny-model "
                  "--output ./calibration --limit 50"],
    "nightly": ["emoray nightly --config conf/cluster.yaml --date 2026-11-24",
                "emoray nightly --config conf/cluster.yaml --dry-run"],
    "canary": ["emoray canary --out ./canary.jsonl --tasks v_reg,e_c --limit 10"],
    "demo": ["emoray demo", "emoray demo --tasks v_reg --verbose"],
    "bench": ["emoray bench --config conf/local.yaml --tasks v_reg --rows 2000,10000"],
    "enrich": ["emoray enrich --annotations ./affect --downstream ./posts.parquet --key post_id "
               "--output ./posts_affect"],
    "runs": ["emoray runs --output ./affect --limit 5"],
    "table": ["emoray table history ./affect --limit 10",
              "emoray table vacuum s3://lake/affect/ --retain-hours 168"],
    "tiny-model": ["emoray tiny-model .emoray/tiny-model",
                   "emoray tiny-model .emoray/tiny-opt --arch opt",
                   "emoray tiny-model .emoray/tiny-t5 --arch t5"],
    "tasks": ["emoray tasks"],
    "stages": ["emoray stages"],
    "models": ["emoray models"],
}
"""A working example per command, shown by its --help (tests parse every one)."""


def _command(sub, name: str, **kwargs) -> argparse.ArgumentParser:
    epilog = "example" + ("s" if len(EXAMPLES[name]) > 1 else "") + ":\n" + "\n".join(
        f"  {line}" for line in EXAMPLES[name])
    return sub.add_parser(name, epilog=epilog,
                          formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)


def _ray_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ray-address", help="Ray cluster address (default: RAY_ADDRESS or local)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="emoray", description=" ".join(
        __doc__.split("\n\n")[0].split()))
    sub = p.add_subparsers(dest="command", required=True)
    a = _command(sub, "annotate", help="annotate a dataset with affect labels")
    _job_flags(a, None)
    _ray_flag(a)
    a.set_defaults(fn=cmd_annotate)
    v = _command(sub, "evaluate", help="score a model on the AEB gold data through the "
                       "annotate pipeline (metrics.json, report.md, chart.png)")
    _gold_flags(v, "folder for metrics.json, report.md, chart.png")
    v.add_argument("--previous", help="metrics.json of an earlier evaluation to compare with")
    v.add_argument("--references", help="YAML of reference scores (default conf/references.yaml)")
    v.add_argument("--cascade", help="SMALL@CALIBRATION,...,BIG: the cascade's metrics beside "
                   "each model alone, the escalation share and the cost per 1 M rows")
    _ray_flag(v)
    v.set_defaults(fn=cmd_evaluate)
    k = _command(sub, "calibrate", help="fit per-task temperatures on the AEB dev sample so "
                 "class tasks' confidences mean what they say (calibration.json)")
    _gold_flags(k, "folder for calibration.json (and the dev run's table); only "
                "aaid_dev_sample.jsonl of --data is used")
    k.add_argument("--max-loss", type=float, help="also write per class task the lowest "
                   "threshold whose accepted dev answers are right >= 1 - X of the time (a "
                   "cascade step's `accept: calibration`)")
    _ray_flag(k)
    k.set_defaults(fn=cmd_calibrate)
    n = _command(sub, "nightly", help="one night: quality gate, annotate, then enrich (Spark)")
    _job_flags(n, None)
    n.add_argument("--date", help="date partition YYYY-MM-DD filling {date} in the profile's "
                   "paths (default: today, UTC)")
    _ray_flag(n)
    n.set_defaults(fn=cmd_nightly)
    c = _command(sub, "canary", help="draw a gold canary set from the AEB for the quality gate")
    c.add_argument("--data", help="folder of the AEB files (local or s3://; default: the copy "
                   "shipped with emoray)")
    c.add_argument("--out", required=True, help="JSONL file to write (local or s3://)")
    c.add_argument("--tasks", help="comma list (default: every task with gold data)")
    c.add_argument("--limit", type=int, default=10, help="rows per task/target")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--config", help="profile for S3 settings")
    c.set_defaults(fn=cmd_canary)
    d = _command(sub, "demo", help="run the job on the embedded default (local Ray + local S3)")
    _job_flags(d, "conf/local.yaml" if Path("conf/local.yaml").is_file() else None)
    d.set_defaults(fn=cmd_demo)
    b = _command(sub, "bench", help="bare LLM.generate, the engine and the full pipeline "
                       "side by side on the same prompts (rows/s, tokens/s, ratios)")
    b.add_argument("scenario", nargs="?", default="throughput",
                   choices=["throughput", "nightly", "nightly-input", "enrich", "table",
                            "faults", "memory", "cascade"],
                   help="throughput: the sides of emoray.tools.bench; nightly: re-run and crash "
                   "figures; nightly-input: a night of NEW texts read with --since-last from "
                   "inputs (Parquet files, a Delta table) also holding STORED answered ones "
                   "(--rows NEW,STORED,...); enrich: the Spark join (--rows "
                   "ANNOTATED,DOWNSTREAM); table: a "
                   "nightly of NEW rows against stored tables (--rows NEW,STORED,...), commit "
                   "paths, files before/after optimize; faults: a multi-node local cluster "
                   "through a flaky S3 with a worker node removed mid-run (--rows N; --sides "
                   "noop for the no-op engine); memory: peak driver RSS and object store "
                   "of no-op-engine runs at each --rows size; cascade: --small then --model "
                   "against --model alone at escalation shares 10/30/60 %% (--rows N, one "
                   "class task)")
    b.add_argument("--config", help="YAML profile whose `engine:` section to use")
    b.add_argument("--small", help="cascade: the small model (default: a tiny T5 built here)")
    b.add_argument("--model", help="default: the tiny test model")
    b.add_argument("--rows", default="20000,100000",
                   help="throughput: two sizes, rates are the slope between; nightly: one size")
    b.add_argument("--tasks", default="v_reg", help="comma list of task requests")
    b.add_argument("--sides", default="bare,engine,unconstrained,pipeline,noop",
                   help="which sides to run (see emoray/tools/bench.py; also no_confidence: the "
                   "engine without confidences; ray_data_llm: the bare side through a ray.data.llm "
                   "processor; one_batch: the pipeline with one batch in flight per engine actor; "
                   "streamed: the pipeline with the streaming plan "
                   "(stream_plan true); transformers: the Transformers engine on "
                   "--seq2seq-models)")
    b.add_argument("--seq2seq-models", help="transformers side: comma list of encoder-decoder "
                   "checkpoint folders (default: a tiny T5 and a tiny BART built for the run)")
    b.add_argument("--constraint", choices=["grammar", "regex", "choice", "logprobs", "none"],
                   help="answer constraint (engine.constraint; none: unconstrained)")
    b.add_argument("--prefix-caching", choices=["on", "off"])
    b.add_argument("--block-size", type=int, help="KV cache block size (engine.block_size)")
    b.add_argument("--concurrency", type=int, help="pipeline engine actors (default: profile, 1)")
    b.add_argument("--batch-size", type=int, help="prompts per engine call (default: profile, "
                   "1024)")
    b.add_argument("--commit-rows", type=int, help="rows per chunk (default: nightly 5000, "
                   "faults 1000, memory 100000)")
    b.add_argument("--file-rows", type=int, default=250_000,
                   help="memory: rows per input Parquet file (one file: the largest --rows)")
    b.add_argument("--plans", default="shuffle",
                   help="memory: comma list of plans to run at each size: stream (rows that need "
                   "no other row stream to the engine, stream_plan true) and/or shuffle (every "
                   "row through the hash shuffle, the default)")
    b.add_argument("--wave-rows", default=str(AnnotateConfig.model_fields["wave_rows"].default),
                   help="memory: comma list of wave_rows to run at each size (0: one wave; "
                   "default: the annotate default)")
    b.add_argument("--device", choices=["auto", "gpu", "cpu"])
    b.add_argument("--gpu-memory-utilization", type=float)
    b.add_argument("--max-model-len", type=int)
    b.add_argument("--json", action="store_true")
    b.set_defaults(fn=cmd_bench)
    e = _command(sub, "enrich", help="join the latest affect labels onto a downstream dataset "
                       "(Spark)")
    e.add_argument("--config", help="YAML profile of EnrichConfig settings")
    e.add_argument("--annotations", help="annotation table root (local, s3://, s3a://)")
    e.add_argument("--downstream", help="dataset to enrich (Parquet, JSONL or CSV, or a Delta "
                   "table)")
    e.add_argument("--downstream-version", help="a Delta downstream's version or timestamp")
    e.add_argument("--output", help="the enriched Delta table (one new version per run)")
    e.add_argument("--key", help="downstream key column matched to doc_id (default id)")
    e.add_argument("--model", help="model whose labels to join (default: the only one)")
    e.add_argument("--format", choices=["auto", "parquet", "jsonl", "csv"])
    e.add_argument("--partition-by", help="comma list of downstream partition columns")
    e.add_argument("--prefix", help="prefix of the added columns (default affect_)")
    e.add_argument("--master", help="Spark master (default local[*]; spark-submit sets its own)")
    e.add_argument("--as-of", help="annotation table version or timestamp to read (time "
                   "travel; default: the latest)")
    e.add_argument("--reader", choices=["files", "delta"],
                   help="files: the snapshot's Parquet files (default); delta: format('delta'), "
                   "needs delta-spark")
    e.add_argument("--writer", choices=["files", "delta"],
                   help="files: Spark's Parquet files committed by emoray in one Delta "
                   "transaction (default); delta: format('delta'), needs delta-spark")
    e.add_argument("--s3-endpoint-url")
    e.add_argument("--json", action="store_true")
    e.set_defaults(fn=cmd_enrich)
    r = _command(sub, "runs", help="list recent runs of an annotation table from their reports")
    r.add_argument("--output", help="annotation table root (default: the profile's output)")
    r.add_argument("--config")
    r.add_argument("--limit", type=int, default=20)
    r.add_argument("--s3-endpoint-url")
    r.add_argument("--json", action="store_true")
    r.set_defaults(fn=cmd_runs)
    tb = _command(sub, "table", help="the annotation table (Delta): history, optimize, "
                        "vacuum, index (rebuild the key index the nightly held check reads), "
                        "migrate from the old marker layout, register (a Delta table's AWS "
                        "Glue entry, e.g. the enriched table's)")
    tb.add_argument("action", choices=["history", "optimize", "vacuum", "index", "migrate",
                                       "register"])
    tb.add_argument("table", nargs="?", help="table location (default: the profile's output); "
                    "for migrate, the old marker-layout table")
    tb.add_argument("new", nargs="?", help="migrate: where the Delta table goes")
    tb.add_argument("--limit", type=int, help="history: newest N commits")
    tb.add_argument("--retain-hours", type=float, default=168,
                    help="vacuum: keep files a version of the last N hours references "
                    "(default 168, a week of time travel)")
    tb.add_argument("--no-dry-run", action="store_true", help="vacuum: delete (default: list)")
    tb.add_argument("--glue-database", help="register: the Glue database of the entry")
    tb.add_argument("--name", help="register: the Glue table name")
    tb.add_argument("--config")
    tb.add_argument("--s3-endpoint-url")
    tb.add_argument("--json", action="store_true")
    tb.set_defaults(fn=cmd_table)
    from emoray.tools.tiny_model import ARCHS, SHAPES

    t = _command(sub, "tiny-model", help="build a random-weight checkpoint (LLaMA, OPT, BLOOM, T5 "
                       "or BART): the tiny test model, or a real model's shape for GPU benchmarks")
    t.add_argument("--shape", choices=list(SHAPES), default="tiny",
                   help="tiny, or the shape of LLaMA-2-7B / T5-large (with --arch t5)")
    t.add_argument("--arch", choices=list(ARCHS), default="llama",
                   help="architecture: the EmoLLMs' decoder-only ones (vLLM engine) or "
                   "encoder-decoder t5 and bart (Transformers engine)")
    t.add_argument("dir")
    t.set_defaults(fn=cmd_tiny_model)
    _command(sub, "tasks", help="list the task catalog").set_defaults(fn=cmd_tasks)
    _command(sub, "stages", help="the pipeline's stages and the columns each needs and adds "
             "(Markdown)").set_defaults(fn=cmd_stages)
    _command(sub, "models", help="list the known EmoLLMs").set_defaults(fn=cmd_models)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command; an `EmorayError` ends it with its message and its own exit code,
    anything else with a traceback (exit 1)."""
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except EmorayError as e:
        print(f"emoray: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
