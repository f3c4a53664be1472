"""`emoray demo`, `emoray bench` and `emoray tiny-model`: the commands of the tools beside the
product (`emoray.tools`)."""

from __future__ import annotations

from emoray.cli.common import command, job_config, job_flags, settings
from emoray.config import CONF, AnnotateConfig, BenchConfig, ConfigError
from emoray.errors import EXIT_OK

EXAMPLES = {
    "demo": ["emoray demo", "emoray demo --tasks v_reg --verbose"],
    "bench": ["emoray bench --config conf/local.yaml --tasks v_reg --rows 2000,10000"],
    "tiny-model": ["emoray tiny-model .emoray/tiny-model",
                   "emoray tiny-model .emoray/tiny-opt --arch opt",
                   "emoray tiny-model .emoray/tiny-t5 --arch t5"],
}


def add(sub) -> None:
    """Declare the commands of this module and their flags."""
    d = command(sub, "demo", EXAMPLES,
                help="run the job on the embedded default (local Ray + local S3)")
    local = CONF / "local.yaml"  # the repository's CPU profile, wherever the command runs
    job_flags(d, str(local) if local.is_file() else None)
    d.set_defaults(fn=cmd_demo)
    _bench_flags(command(sub, "bench", EXAMPLES, help="bare LLM.generate, the engine and the "
                         "full pipeline side by side on the same prompts (rows/s, tokens/s, "
                         "ratios)"))
    from emoray.tools.tiny_model import ARCHS, SHAPES

    t = command(sub, "tiny-model", EXAMPLES, help="build a random-weight checkpoint (LLaMA, "
                "OPT, BLOOM, T5 or BART): the tiny test model, or a real model's shape for GPU "
                "benchmarks")
    t.add_argument("--shape", choices=list(SHAPES), default="tiny",
                   help="tiny, or the shape of LLaMA-2-7B / T5-large (with --arch t5)")
    t.add_argument("--arch", choices=list(ARCHS), default="llama",
                   help="architecture: the EmoLLMs' decoder-only ones (vLLM engine) or "
                   "encoder-decoder t5 and bart (Transformers engine)")
    t.add_argument("dir")
    t.set_defaults(fn=cmd_tiny_model)


def cmd_demo(args) -> int:
    """The job on the embedded default: local S3 on 127.0.0.1, the sample, a local model."""
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


BENCH_FLAGS = {"device": "engine.device",
               "gpu_memory_utilization": "engine.gpu_memory_utilization",
               "max_model_len": "engine.max_model_len", "block_size": "engine.block_size",
               "batch_size": "batch_size", "concurrency": "concurrency"}
"""`emoray bench`'s flags that are settings as they are (flag name -> dotted key)."""


def cmd_bench(args) -> int:
    """Run one benchmark scenario and print its figures."""
    from emoray.tools.bench import SIDES, main_bench

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
    config = _bench_settings(args)
    commit_rows = args.commit_rows or {"nightly": 5000, "faults": 1000}.get(args.scenario,
                                                                           100_000)
    tasks = args.tasks.split(",")
    if args.scenario in ("faults", "nightly-input", "cascade", "memory"):
        _bench_tool(args, config, sizes, tasks, sides, commit_rows)
    else:
        main_bench(args.scenario, config.engine, sizes, tasks, config.batch_size, commit_rows,
                   args.json, config.concurrency, sides, tuple(config.seq2seq_models))
    return EXIT_OK


def _bench_settings(args) -> BenchConfig:
    """The bench's settings from its profile and flags; with neither --model nor --config, the
    tiny model on this machine's CPU."""
    from emoray.tools.demo import tiny_model

    fixed = {"engine.model": args.model or str(tiny_model()),
             "engine.enable_prefix_caching": (None if args.prefix_caching is None
                                              else args.prefix_caching == "on"),
             "engine.constrained": False if args.constraint == "none" else None,
             "engine.constraint": None if args.constraint in (None, "none") else args.constraint,
             "engine.confidence": None if args.confidence is None else args.confidence == "on",
             "seq2seq_models": args.seq2seq_models.split(",") if args.seq2seq_models else None}
    if not (args.model or args.config):
        fixed.update({"engine.device": args.device or "cpu",
                      "engine.gpu_memory_utilization": args.gpu_memory_utilization or 0.1})
    return settings(args, BENCH_FLAGS, model=BenchConfig, **fixed)


def _bench_tool(args, config: BenchConfig, sizes: tuple[int, ...], tasks: list[str],
                sides: tuple[str, ...], commit_rows: int) -> None:
    """The scenarios with a tool of their own: faults, nightly-input, cascade, memory."""
    if args.scenario == "faults":
        from emoray.tools.bench_faults import main_campaign

        main_campaign(config.engine, sizes[-1], tasks, sides == ("noop",), config.batch_size,
                      commit_rows, args.json)
    elif args.scenario == "nightly-input":
        from emoray.tools.bench_nightly_input import main_input

        main_input(config.engine, sizes, tasks, args.json)
    elif args.scenario == "cascade":
        from emoray.tools.bench_cascade import main_cascade
        from emoray.tools.demo import tiny_t5

        main_cascade(config.engine, args.small or str(tiny_t5()), config.engine.model,
                     sizes[-1], tasks[0], args.json)
    else:
        from emoray.tools.bench_memory import PLANS, main_memory

        plans = tuple(args.plans.split(","))
        if set(plans) - set(PLANS) or len(set(plans)) < len(plans):
            raise ConfigError(f"--plans takes each of {', '.join(PLANS)} at most once; got "
                              f"{args.plans}")
        waves = tuple(int(w) or None for w in args.wave_rows.split(","))
        main_memory(config.engine, sizes, tasks, config.batch_size, commit_rows, args.json,
                    args.file_rows, plans, waves)


def cmd_tiny_model(args) -> int:
    """A random-weight checkpoint of a shape and architecture."""
    from emoray.tools.tiny_model import build_tiny_model

    out = build_tiny_model(args.dir, args.shape, arch=args.arch)
    print(f"{args.shape} {args.arch} checkpoint (random weights, meaningless labels) written to "
          f"{out}")
    return EXIT_OK


def _bench_flags(b) -> None:
    """`emoray bench`'s flags."""
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
    b.add_argument("--confidence", choices=["on", "off"],
                   help="answer confidences (engine.confidence; default: the profile's, on)")
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
