"""The annotate job as a Ray Data pipeline:

    read (Parquet/JSONL/CSV) → normalize (id, text, hash) → dedup texts (hash shuffle)
      → expand × tasks → EngineStage (vLLM actors) → parse + fan out → write Parquet → commit

`build_annotator(config)` validates everything it can without an engine (tasks, model, input
files and their columns, output location) and returns an `Annotator`; `Annotator.run()` executes
and commits the run and returns its summary.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone


from emoray import io, stages, table
from emoray.config import AnnotateConfig
from emoray.engine import EngineStage
from emoray.models import resolve_model
from emoray.tasks import resolve


class RunStats:
    """Ray actor collecting counters from the stages (rows read, prompts sent, tokens)."""

    def __init__(self):
        self.counts: Counter = Counter()

    def add(self, **counts: int) -> None:
        self.counts.update(counts)

    def get(self) -> dict:
        return dict(self.counts)


@dataclass
class RunSummary:
    run_id: str
    output: str
    rows_in: int
    rows_out: int
    requests: int
    prompts_sent: int
    status_counts: dict[str, int]
    wall_s: float
    prompt_tokens: int
    output_tokens: int
    started_at: str
    files: list[str] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        return self.rows_out / self.wall_s if self.wall_s else 0.0

    def as_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "files"}
        out["rows_per_s"] = round(self.rows_per_s, 1)
        return out

    def render(self) -> str:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(self.status_counts.items()))
        return "\n".join([
            f"run {self.run_id} committed to {self.output}",
            f"  rows in          {self.rows_in}",
            f"  rows annotated   {self.rows_out} ({self.requests} task/target pairs per row)",
            f"  prompts sent     {self.prompts_sent} (after dedup and empty texts)",
            f"  rows per status  {statuses}",
            f"  wall time        {self.wall_s:.1f} s ({self.rows_per_s:.1f} rows/s)",
            f"  tokens           {self.prompt_tokens} prompt, {self.output_tokens} generated",
        ])


class Annotator:
    """A validated annotation job. Construction fails fast on bad input; `run()` does the work."""

    def __init__(self, config: AnnotateConfig):
        self.config = config
        self.requests = resolve(config.tasks)
        self.model = resolve_model(config.engine.model)
        self.in_fs, in_path = io.filesystem_for(config.input, config.s3)
        self.inputs = io.list_inputs(config.input, self.in_fs, in_path, config.format)
        io.check_columns(self.in_fs, self.inputs,
                         {"id": config.id_column, "text": config.text_column})
        self.out_fs, self.out_root = io.filesystem_for(config.output, config.s3)
        try:
            self.out_fs.create_dir(self.out_root, recursive=True)
        except OSError as e:
            raise io.InputError(f"cannot write to output {config.output}: {e}") from None
        self.run_id = config.run_id or (
            datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6])

    def _engine_resources(self) -> dict:
        import ray

        device = self.config.engine.device
        if device == "auto":
            device = "gpu" if ray.cluster_resources().get("GPU", 0) > 0 else "cpu"
        if device == "gpu":
            return {"num_gpus": self.config.engine.tensor_parallel_size}
        return {"num_cpus": 1}

    def dataset(self, stats=None):
        """The lazy Ray dataset of annotation rows (schema `emoray.table.SCHEMA`)."""
        cfg = self.config
        parts = [
            ds.map_batches(stages.normalize, batch_format="pyarrow", batch_size=None,
                           fn_kwargs={"id_column": cfg.id_column, "text_column": cfg.text_column,
                                      "stats": stats})
            for ds in io.read_inputs(self.in_fs, self.inputs, cfg.id_column, cfg.text_column)
        ]
        docs = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
        if cfg.dedup:
            texts = docs.repartition(max(8, 4 * cfg.concurrency), keys=["text_sha256"])
            texts = texts.map_batches(stages.dedup, batch_format="pyarrow", batch_size=None)
        else:
            texts = docs.map_batches(stages.single, batch_format="pyarrow", batch_size=None)
        prompts = texts.map_batches(
            stages.expand, batch_format="pyarrow", batch_size=None,
            fn_kwargs={"requests": self.requests, "template": cfg.engine.template,
                       "constrained": cfg.engine.constrained})
        answered = prompts.map_batches(
            EngineStage, batch_format="pyarrow", batch_size=cfg.batch_size,
            fn_constructor_kwargs={"config": cfg.engine, "stats": stats},
            concurrency=cfg.concurrency, **self._engine_resources())
        return answered.map_batches(
            stages.parse, batch_format="pyarrow", batch_size=None,
            fn_kwargs={"model": self.model.name, "run_id": self.run_id})

    def run(self) -> RunSummary:
        import ray

        started = datetime.now(timezone.utc)
        t0 = time.perf_counter()
        stats = ray.remote(RunStats).options(num_cpus=0).remote()
        run_date = started.strftime("%Y-%m-%d")
        self.dataset(stats).write_parquet(
            table.run_dir(self.out_root, self.run_id, run_date), filesystem=self.out_fs)
        counts = ray.get(stats.get.remote())
        written = self._written(run_date)
        status = written.group_by("status").aggregate([("status", "count")]).to_pydict()
        rows_out = written.num_rows
        expected = counts.get("rows_in", 0) * len(self.requests)
        if rows_out != expected:
            raise RuntimeError(
                f"run {self.run_id} wrote {rows_out} rows, expected {expected} "
                f"({counts.get('rows_in', 0)} rows x {len(self.requests)} tasks); not committed")
        summary = RunSummary(
            run_id=self.run_id, output=self.config.output, rows_in=counts.get("rows_in", 0),
            rows_out=rows_out, requests=len(self.requests),
            prompts_sent=counts.get("prompts", 0),
            status_counts=dict(zip(status["status"], status["status_count"])),
            wall_s=time.perf_counter() - t0, prompt_tokens=counts.get("prompt_tokens", 0),
            output_tokens=counts.get("output_tokens", 0), started_at=started.isoformat(),
        )
        report = {**summary.as_dict(), "model": self.model.name, "model_source": self.model.source,
                  "tasks": [r.key for r in self.requests], "input": self.config.input}
        summary.files = table.commit(self.out_fs, self.out_root, self.run_id, run_date, report)
        ray.kill(stats)
        return summary

    def _written(self, run_date: str):
        import pyarrow.dataset as pads

        return pads.dataset(table.run_dir(self.out_root, self.run_id, run_date),
                            filesystem=self.out_fs, format="parquet",
                            schema=table.SCHEMA).to_table(columns=["status"])


def build_annotator(config: AnnotateConfig) -> Annotator:
    """Validate `config` against its input and return the job, before any engine starts."""
    return Annotator(config)
