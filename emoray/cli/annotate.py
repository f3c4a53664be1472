"""`emoray annotate` and `emoray nightly`: the job over an input, once or for one night."""

from __future__ import annotations

from emoray.cli.common import command, emit, job_config, job_flags, local, ray_flag
from emoray.config import ConfigError
from emoray.errors import EXIT_OK
from emoray.runtime import start_ray

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
    "nightly": ["emoray nightly --config conf/cluster.yaml --date 2026-11-24",
                "emoray nightly --config conf/cluster.yaml --dry-run"],
}


def add(sub) -> None:
    """Declare the commands of this module and their flags."""
    a = command(sub, "annotate", EXAMPLES, help="annotate a dataset with affect labels")
    job_flags(a, None)
    ray_flag(a)
    a.set_defaults(fn=cmd_annotate)
    n = command(sub, "nightly", EXAMPLES,
                help="one night: quality gate, annotate, then enrich (Spark)")
    job_flags(n, None)
    n.add_argument("--date", help="date partition YYYY-MM-DD filling {date} in the profile's "
                   "paths (default: today, UTC)")
    ray_flag(n)
    n.set_defaults(fn=cmd_nightly)


def cmd_annotate(args) -> int:
    """Annotate the input (or a cascade over it), or with --dry-run plan it; a budget is held
    before any engine starts."""
    from emoray.quality.gate import gated_run
    from emoray.pipeline import build_annotator

    from emoray import budget

    config = job_config(args)
    if config.cascade:
        return _annotate_cascade(args, config)
    annotator = build_annotator(config, local_engine=local(args))
    start_ray(args.ray_address, args.verbose)
    if args.dry_run:
        from emoray.pipeline import render_dry_run

        plan = annotator.dry_run()
        emit(args, plan, render_dry_run)
        budget.hold(plan, annotator.config)
        return EXIT_OK
    budget.check_before_run(annotator)
    summary = gated_run(annotator)
    emit(args, summary.as_dict(), lambda _: summary.render())
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
        emit(args, p, render_plan)
        budget.hold(p, config)
        return EXIT_OK
    report = run_cascade(config)
    emit(args, report, render)
    return EXIT_OK


def cmd_nightly(args) -> int:
    """One night for a date partition, or with --dry-run its annotate step's plan."""
    from emoray.nightly import render, run_nightly

    config = job_config(args)
    start_ray(args.ray_address, args.verbose)
    if args.dry_run:
        from emoray.nightly import for_date
        from emoray.pipeline import build_annotator, render_dry_run

        plan = build_annotator(for_date(config, args.date), local_engine=local(args)).dry_run()
        emit(args, plan, lambda p: render_dry_run(p) + "\n  (a nightly dry run plans the "
             "annotate step; the gate, compaction and enrichment do not run)")
        return EXIT_OK
    result = run_nightly(config, args.date)
    emit(args, result, render)
    return EXIT_OK
