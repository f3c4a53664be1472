"""The inference engine: vLLM offline inference over task prompts, greedy, constrained to each
task's answer regex, with the smallest max_tokens a task needs and prefix caching on.

`Engine` is plain Python (usable in a script or a test); `EngineStage` wraps it as the Ray Data
actor stage of the pipeline. vLLM's `LLM.generate` is used directly rather than a
`ray.data.llm` processor: on the same prompts the processor ran at 0.73x bare generate here
(DESIGN.md), and direct use keeps per-task structured outputs, log-probabilities and our
truncation rule in one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyarrow as pa

from emoray.config import EngineConfig
from emoray.models import resolve_model
from emoray.stages import require
from emoray.tasks import TASKS, Task


@dataclass(frozen=True)
class Generation:
    raw_output: str | None
    confidence: float | None = None
    truncated: bool = False
    error: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    output_tokens: int = 0


class Engine:
    """One vLLM engine plus the per-task decoding settings."""

    def __init__(self, config: EngineConfig):
        from vllm import LLM

        self.config = config
        self.model = resolve_model(config.model)
        self.llm = LLM(
            model=self.model.source,
            max_model_len=config.max_model_len,
            enable_prefix_caching=config.enable_prefix_caching,
            gpu_memory_utilization=config.gpu_memory_utilization,
            tensor_parallel_size=config.tensor_parallel_size,
            dtype=config.dtype,
            seed=config.seed,
            enforce_eager=config.enforce_eager,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self._params: dict[str, object] = {}
        self._overhead: dict[tuple[str, str | None], int] = {}

    def sampling_params(self, task: Task):
        if task.name not in self._params:
            from vllm import SamplingParams
            from vllm.sampling_params import StructuredOutputsParams

            structured = (StructuredOutputsParams(regex=task.answer.regex())
                          if self.config.constrained else None)
            self._params[task.name] = SamplingParams(
                temperature=0.0, max_tokens=task.max_tokens,
                logprobs=0 if self.config.confidence else None,
                structured_outputs=structured,
            )
        return self._params[task.name]

    def _count(self, text: str, special: bool = True) -> list[int]:
        return self.tokenizer(text, add_special_tokens=special)["input_ids"]

    def fit(self, task: Task, text: str, target: str | None) -> tuple[str, bool]:
        """The prompt for `text`, cut so prompt plus answer fit the context; (prompt, truncated).
        Only texts that could be too long are tokenized: a token holds at least one byte."""
        template = self.config.template
        key = (task.name, target)
        if key not in self._overhead:
            self._overhead[key] = len(self._count(task.prompt("", target, template)))
        budget = self.config.max_model_len - task.max_tokens - self._overhead[key] - 2
        if len(text.encode("utf-8")) <= budget:
            return task.prompt(text, target, template), False
        ids = self._count(text, special=False)
        if len(ids) <= budget:
            return task.prompt(text, target, template), False
        limit = self.config.max_model_len - task.max_tokens
        keep = max(budget, 0)
        while True:
            prompt = task.prompt(self.tokenizer.decode(ids[:keep]), target, template)
            if len(self._count(prompt)) <= limit or keep == 0:
                return prompt, True
            keep = max(keep - 8, 0)

    def generate(self, tasks: list[Task], texts: list[str], targets: list[str | None]
                 ) -> list[Generation]:
        """Answer each (task, text, target); a request the engine rejects becomes a failed
        generation with the reason, the others still run."""
        prompts, cut = zip(*(self.fit(t, x, g) for t, x, g in zip(tasks, texts, targets)))
        params = [self.sampling_params(t) for t in tasks]
        try:
            outputs = self.llm.generate(list(prompts), params, use_tqdm=False)
        except Exception:  # isolate the rejected request(s); each row gets its own outcome
            return [self._one(p, sp, c) for p, sp, c in zip(prompts, params, cut)]
        return [self._result(o, c) for o, c in zip(outputs, cut)]

    def _one(self, prompt, params, cut) -> Generation:
        try:
            return self._result(self.llm.generate([prompt], [params], use_tqdm=False)[0], cut)
        except Exception as e:  # the engine's own error, kept on the row
            return Generation(None, truncated=cut, error=f"{type(e).__name__}: {e}")

    def _result(self, output, cut: bool) -> Generation:
        completion = output.outputs[0]
        confidence = None
        if self.config.confidence and completion.cumulative_logprob is not None:
            confidence = math.exp(completion.cumulative_logprob)
        return Generation(
            completion.text, confidence, cut, None, completion.finish_reason,
            len(output.prompt_token_ids or ()), len(completion.token_ids),
        )


class EngineStage:
    """Ray Data actor stage: adds the model's answer to each prompt row.

    Needs the plan's columns (`stages.NEEDS["engine"]`); rows whose `text_status` is not ok or
    that carry a `cached_output` (an answer stored for the same text) send no prompt.
    Adds `raw_output`, `confidence`, `truncated`, `error`, `finish_reason`, `prompt_tokens`, `output_tokens`.
    Resources: one GPU per tensor-parallel rank on GPU clusters, one CPU otherwise.
    """

    def __init__(self, config: EngineConfig, stats=None):
        self.config = config
        self.stats = stats
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        """Started on the first prompt, so a run with nothing new starts no engine."""
        if self._engine is None:
            self._engine = Engine(self.config)
            if self.stats is not None:
                self.stats.add.remote(engine_starts=1)
        return self._engine

    def __call__(self, batch: pa.Table) -> pa.Table:
        require(batch, "engine")
        rows = batch.select(["text", "task", "target", "text_status", "cached_output",
                             "cached_confidence", "cached_status"]).to_pydict()
        results: list[Generation] = [Generation(None)] * batch.num_rows
        todo, reused = [], 0
        for i, (text_status, cached) in enumerate(zip(rows["text_status"], rows["cached_output"])):
            if cached is not None:
                results[i] = Generation(cached, rows["cached_confidence"][i],
                                        rows["cached_status"][i] == "truncated")
                reused += 1
            elif text_status == "ok":
                todo.append(i)
        if todo:
            done = self.engine.generate(
                [TASKS[rows["task"][i]] for i in todo],
                [rows["text"][i] for i in todo],
                [rows["target"][i] for i in todo],
            )
            for i, g in zip(todo, done):
                results[i] = g
        if self.stats is not None:
            self.stats.add.remote(
                prompts=len(todo), reused=reused,
                prompt_tokens=sum(g.prompt_tokens for g in results),
                output_tokens=sum(g.output_tokens for g in results),
            )
        columns = {
            "raw_output": pa.array([g.raw_output for g in results], pa.string()),
            "confidence": pa.array([g.confidence for g in results], pa.float64()),
            "truncated": pa.array([g.truncated for g in results], pa.bool_()),
            "error": pa.array([g.error for g in results], pa.string()),
            "finish_reason": pa.array([g.finish_reason for g in results], pa.string()),
            "prompt_tokens": pa.array([g.prompt_tokens for g in results], pa.int64()),
            "output_tokens": pa.array([g.output_tokens for g in results], pa.int64()),
        }
        for name, values in columns.items():
            batch = batch.append_column(name, values)
        return batch
