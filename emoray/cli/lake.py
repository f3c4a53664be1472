"""`emoray runs` and `emoray table`: an annotation table's runs, history and upkeep."""

from __future__ import annotations

from datetime import datetime, timezone

from emoray.cli.common import command, emit, settings
from emoray.config import ConfigError, RunsConfig
from emoray.errors import EXIT_OK

EXAMPLES = {
    "runs": ["emoray runs --output ./affect --limit 5"],
    "table": ["emoray table history ./affect --limit 10",
              "emoray table vacuum s3://lake/affect/ --retain-hours 168"],
}


def add(sub) -> None:
    """Declare the commands of this module and their flags."""
    r = command(sub, "runs", EXAMPLES,
                help="list recent runs of an annotation table from their reports")
    r.add_argument("--output", help="annotation table root (default: the profile's output)")
    r.add_argument("--config")
    r.add_argument("--limit", type=int, default=20)
    r.add_argument("--s3-endpoint-url")
    r.add_argument("--json", action="store_true")
    r.set_defaults(fn=cmd_runs)
    tb = command(sub, "table", EXAMPLES, help="the annotation table (Delta): history, optimize, "
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


FLAGS = {"s3_endpoint_url": "s3.endpoint_url"}


def cmd_runs(args) -> int:
    """An annotation table's recent runs, from their reports."""
    from emoray.lake import table

    config = settings(args, FLAGS, model=RunsConfig, output=args.output)
    if not config.output:
        raise ConfigError("name the annotation table with --output or a profile's `output`")
    reports = table.run_reports(table.AnnotationTable(config.output, config.s3))[: args.limit]
    emit(args, reports, lambda r: _render_runs(r) + (
        "" if r else f"\n(no runs in {config.output})"))
    return EXIT_OK


def _render_runs(reports: list[dict]) -> str:
    columns = ["run_id", "status", "started_at", "rows_in", "rows_out", "already_held",
               "prompts_sent", "reused", "wall_s", "rows_per_s", "engine_s", "cost_usd"]
    lines = ["  ".join(columns)]
    for r in reports:
        r = {**r, **{k: v for k, v in (r.get("usage") or {}).items() if k in columns}}
        lines.append("  ".join(str(r.get(c, "-")) for c in columns))
        if r.get("escalation"):  # a cascade run (`emoray.cascade`)
            lines.append("    escalated: " + ", ".join(
                f"{k} {e['escalated']}/{e['pairs']} ({e['share']:.1%})"
                for k, e in sorted(r["escalation"].items())))
    return "\n".join(lines)


def cmd_table(args) -> int:
    """One upkeep action on an annotation table (or `migrate` of an old one)."""
    from emoray.lake import table

    config = settings(args, FLAGS, model=RunsConfig, output=args.table)
    if args.action == "migrate":
        from emoray.lake.migrate import migrate

        if not (args.table and args.new):
            raise ConfigError("migrate takes OLD NEW: the old marker-layout table and where the "
                              "Delta table goes")
        emit(args, migrate(args.table, args.new, config.s3), lambda r: (
            f"migrated {r['rows_copied']} of {r['committed_rows']} committed rows "
            f"({r['chunks']} chunks) from {r['old']} to {r['new']} (version {r['version']}); "
            f"{r['uncommitted_files_skipped']} uncommitted files left behind"))
        return EXIT_OK
    if not config.output:
        raise ConfigError("name the annotation table (TABLE argument or a profile's `output`)")
    TABLE_ACTIONS[args.action](args, config, table.AnnotationTable(config.output, config.s3))
    return EXIT_OK


def _history(args, config, annotations) -> None:
    rows = [{"version": c["version"], "time": c.get("timestamp"),
             "operation": c.get("operation"), "run_id": c.get("run_id"),
             "chunk": c.get("chunk"), "rows_added": (c.get("operationMetrics") or {}).get(
                 "num_added_rows", c.get("rows"))}
            for c in annotations.history(args.limit)]
    emit(args, rows, _render_history)


def _render_history(rows: list[dict]) -> str:
    lines = ["version  time                      operation       run_id                    "
             "chunk  rows_added"]
    for r in rows:
        when = datetime.fromtimestamp(r["time"] / 1000, timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ") if r["time"] else "-"
        lines.append(f"{r['version']:<8} {when:25} {r['operation'] or '-':15} "
                     f"{r['run_id'] or '-':25} {r['chunk'] or '-':6} {r['rows_added'] or '-'}")
    return "\n".join(lines)


def _optimize(args, config, annotations) -> None:
    from emoray.lake import table

    emit(args, table.optimize(annotations), lambda r: (
        f"optimized {annotations.uri}: {r['files_before']} files before, {r['files_after']} "
        f"after (version {r['version']})"))


def _index(args, config, annotations) -> None:
    from emoray.lake import table

    emit(args, table.index(annotations), lambda r: (
        f"key index of {annotations.uri}: {r['written']} sidecars written for the "
        f"{r['files']} data files of version {r['version']} (the rest had theirs); "
        f"{r['pruned']} sidecars of removed files deleted"))


def _register(args, config, annotations) -> None:
    from emoray.lake.glue import register

    if not (args.glue_database and args.name):
        raise ConfigError("register takes --glue-database DB --name NAME")
    done = register(annotations.uri, args.glue_database, args.name, config.s3)
    emit(args, {"glue": f"{args.glue_database}.{args.name}", "entry": done}, lambda _: (
        f"Glue table {args.glue_database}.{args.name} -> {annotations.uri}: {done}"))


def _vacuum(args, config, annotations) -> None:
    from emoray.lake import table

    files = table.vacuum(annotations, args.retain_hours, dry_run=not args.no_dry_run)
    verb = "deleted" if args.no_dry_run else "would delete (dry run; --no-dry-run deletes)"
    emit(args, {"dry_run": not args.no_dry_run, "files": files}, lambda r: "\n".join(
        [f"{verb} {len(files)} files no version within {args.retain_hours} h references"]
        + [f"  {f}" for f in files]))


TABLE_ACTIONS = {"history": _history, "optimize": _optimize, "index": _index,
                 "register": _register, "vacuum": _vacuum}
"""`emoray table ACTION`: each action's function (`migrate` reads no table and runs apart)."""
