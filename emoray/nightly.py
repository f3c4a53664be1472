"""The nightly job for one date partition: quality gate → annotate → enrich.

`{date}` in the profile's `input` and in the enrichment's `downstream`/`output` is replaced by the
night's date (default: today, UTC), so one profile serves every night. Each step's failure has
its own exit code (see `emoray.cli`): a gate miss stops before annotating; an enrichment that
fails after the annotations were committed is a partial failure (the labels stand, re-running
the night annotates nothing new and retries the join).
"""

from __future__ import annotations

from datetime import datetime, timezone

from emoray.lake import table
from emoray.config import AnnotateConfig
from emoray.errors import EXIT_PARTIAL, EmorayError


class PartialFailure(EmorayError, RuntimeError):
    """A later step failed after an earlier one committed its output."""

    exit_code = EXIT_PARTIAL


def for_date(config: AnnotateConfig, date: str | None) -> AnnotateConfig:
    """The profile with `{date}` filled in and the enrichment reading the annotate output with
    the profile's S3 settings (unless its `enrich.s3` says otherwise)."""
    day = date or datetime.now(timezone.utc).strftime("%Y-%m-%d")
    try:
        datetime.strptime(day, "%Y-%m-%d")
    except ValueError:
        from emoray.config import ConfigError

        raise ConfigError(f"--date {day!r} is not a date like 2026-11-22") from None
    update: dict = {"input": config.input and config.input.replace("{date}", day),
                    # a night reads what the last one did not, unless told otherwise
                    "since_last": (config.since_last
                                   or "since_last" not in config.model_fields_set)}
    if config.enrich is not None:
        e = config.enrich
        update["enrich"] = e.model_copy(update={
            "annotations": e.annotations or config.output,
            "downstream": e.downstream.replace("{date}", day),
            "output": e.output.replace("{date}", day),
            "s3": e.s3 if "s3" in e.model_fields_set else config.s3})
    return config.model_copy(update=update)


def run_nightly(config: AnnotateConfig, date: str | None = None) -> dict:
    """Run the night; returns the summaries of the steps that ran."""
    from emoray.quality.gate import gated_run
    from emoray.pipeline import build_annotator

    from emoray import budget

    config = for_date(config, date)
    annotator = build_annotator(config)
    budget.check_before_run(annotator)  # before the gate or any engine spends anything
    annotated = gated_run(annotator)
    result = {"input": config.input, "annotate": annotated.as_dict(), "enrich": None,
              "maintenance": table.maintain(table.AnnotationTable(config.output, config.s3),
                                            config.compact_min_files,
                                            config.vacuum_retain_hours)}
    if config.enrich is not None:
        from emoray.enrich.spark_join import enrich, spark_session

        try:
            result["enrich"] = enrich(spark_session(config.enrich), config.enrich)
        except Exception as e:
            raise PartialFailure(
                f"annotate run {annotated.run_id} committed {annotated.rows_out} rows, then the "
                f"enrichment failed: {e}. Re-run the night: nothing new is annotated and the "
                "join is retried.") from e
    return result


def render(result: dict) -> str:
    a = result["annotate"]
    lines = [f"nightly run for {result['input']}",
             f"  annotate  run {a['run_id']}: {a['rows_out']} rows written, "
             f"{a['already_held']} already held, {a['prompts_sent']} prompts, {a['wall_s']} s"]
    m = result.get("maintenance")
    lines.append(f"  compact   {m['files_before']} files -> {m['files_after']}, "
                 f"{m['vacuumed_files']} unreferenced files removed" if m else
                 "  compact   not due (few small files)")
    if result["enrich"]:
        e = result["enrich"]
        lines.append(f"  enrich    {e['output_rows']} of {e['downstream_rows']} downstream rows "
                     f"written with labels of {e['model']} in {e['wall_s']} s")
    else:
        lines.append("  enrich    (no `enrich:` section in the profile)")
    return "\n".join(lines)
