"""The vLLM engine: offline inference over task prompts, greedy, constrained to each
task's answer (`EngineConfig.constraint`), with the smallest max_tokens a task needs and prefix
caching on.

A class task under `constraint: logprobs` generates nothing: one forward step returns the
log-probabilities of the first token of every candidate class (`logprob_token_ids`); a row whose
best first token starts a multi-token class (`-` of `-1`, `-3`) takes one more step on its
prefix-cached prompt. Picking the best token among those that continue a class, step by step,
is what grammar-constrained greedy decoding does: same answers, same confidences, no grammar.

A regression answer is generated greedily under its grammar; its confidence is the probability
of its leading-digit bucket and the two beside it along its own leading characters
(`Regression.spread`), read from the log-probabilities of the number tokens at the steps the
answer took. An expected score (`expected_score` tasks) also needs the branches it did not take
(the `0.` of an answer `1.000` on [0, 1]): one prefix-cached step each.

`VllmEngine` is plain Python (usable in a script or a test); `engines.stage.EngineStage` runs it as
the pipeline's engine actor. vLLM's `LLM.generate` is used directly rather than a
`ray.data.llm` processor: on the same prompts the processor ran at 0.73x bare generate here
(docs/performance.md), and direct use keeps per-task structured outputs, log-probabilities and our
truncation rule in one place.
"""

from __future__ import annotations

import functools
import math
import os
import sys

from emoray.answers import Regression
from emoray.config import EngineConfig
from emoray.engines.base import Engine
from emoray.engines.vllm_numbers import NumberTokens
from emoray.engines.scoring import Generation, logsumexp
from emoray.tasks import Task


@functools.cache
def _grammar(regex: str) -> str:
    """The regex as an EBNF grammar: vLLM caches compiled grammars, but compiles a regex anew
    for every request (in a fresh thread, for its timeout)."""
    import xgrammar

    return str(xgrammar.Grammar.from_regex(regex))


GIB = 1 << 30
AUTO_KV_SHARE, AUTO_KV_MAX = 0.25, 4 * GIB
"""A CPU engine's KV cache when unset: this share of the available memory, at most this much.
vLLM's own CPU rule (gpu_memory_utilization times the whole node, which must all be free at
start) fails on any machine where other processes hold more than (1 - share) of it."""


def cpu_kv_cache_bytes(config: EngineConfig, available: int | None = None) -> int | None:
    """The KV cache size a CPU engine asks vLLM for, or None to leave vLLM's share rule on
    (gpu_memory_utilization set explicitly, as the bench and test profiles do)."""
    if config.kv_cache_gib is not None:
        return int(config.kv_cache_gib * GIB)
    if "gpu_memory_utilization" in config.model_fields_set:
        return None
    if available is None:
        import psutil

        available = psutil.virtual_memory().available
    return int(min(available * AUTO_KV_SHARE, AUTO_KV_MAX))


def on_this_device(config: EngineConfig) -> EngineConfig:
    """`config` with its start-up settings decided for the device vLLM runs on here
    (`EngineConfig.on_device`)."""
    from vllm.platforms import current_platform

    return config.on_device(current_platform.is_cpu())


def llm_arguments(config: EngineConfig) -> dict:
    """The vLLM engine arguments of `config` (besides the model) on this machine's device, as
    `vllm.LLM` and `ray.data.llm`'s `engine_kwargs` take them."""
    from vllm.platforms import current_platform

    config = on_this_device(config)
    kv_bytes = cpu_kv_cache_bytes(config) if current_platform.is_cpu() else None
    return dict(
        max_model_len=config.max_model_len,
        enable_prefix_caching=config.enable_prefix_caching,
        gpu_memory_utilization=config.gpu_memory_utilization,
        tensor_parallel_size=config.tensor_parallel_size,
        dtype=config.dtype,
        seed=config.seed,
        enforce_eager=config.enforce_eager,
        **({"block_size": config.block_size} if config.block_size else {}),
        **({"kv_cache_memory_bytes": kv_bytes} if kv_bytes else {}),
    )


def _no_compile() -> None:
    """No torch.compile in this process or the engine's own: vLLM compiles its sampler's
    rank-counting helper on the first log-probability request even under `enforce_eager`
    (2.1 s of an engine's start here, 9.7 s with a cold compile cache: docs/performance.md,
    "Engine start"). Eager, it is two tensor operations per step."""
    import torch._dynamo

    torch._dynamo.config.disable = True
    os.environ["TORCH_COMPILE_DISABLE"] = "1"  # an engine core in a child process


class VllmEngine(Engine):
    """One vLLM engine plus the per-task decoding settings."""

    def _load(self) -> None:
        config = on_this_device(self.config)
        if config.in_process:  # read by vLLM as the engine is built
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        if config.enforce_eager:
            _no_compile()
        from vllm import LLM

        self.llm = LLM(model=self.model.source, **llm_arguments(config))
        self.tokenizer = self.llm.get_tokenizer()
        self.numbers = NumberTokens(self.tokenizer)

    def _reset_decoding(self) -> None:
        """Also the sampling params by task or scoring step and the regression heads' token
        ids."""
        super()._reset_decoding()
        self._params: dict[object, object] = {}
        self._heads: dict[tuple, list[int] | None] = {}

    def sampling_params(self, task: Task):
        """Greedy decoding of one answer; for a scored class task, its first scoring step."""
        if task.name not in self._params:
            from vllm import SamplingParams

            candidates, d = self.candidates(task), self.decoding(task)
            digits = (self.numbers.ids if d.confidence and isinstance(task.answer, Regression)
                      else [])
            self._params[task.name] = (
                self._scoring_params(candidates.next_tokens(())) if candidates else
                SamplingParams(temperature=0.0, max_tokens=task.max_tokens,
                               logprobs=0 if d.confidence and not digits else None,
                               logprob_token_ids=digits or None, flat_logprobs=bool(digits),
                               detokenize=not (digits and d.constrained),
                               structured_outputs=self._structured(task)))
        return self._params[task.name]

    def _scoring_params(self, tokens: list[int]):
        from vllm import SamplingParams

        key = tuple(tokens)
        if key not in self._params:
            self._params[key] = SamplingParams(temperature=0.0, max_tokens=1,
                                               logprob_token_ids=tokens, detokenize=False)
        return self._params[key]

    def _structured(self, task: Task):
        from vllm.sampling_params import StructuredOutputsParams

        method = self.decoding(task).method
        if method == "free":
            return None
        if method == "regex":
            return StructuredOutputsParams(regex=task.answer.regex())
        if method == "choice":
            return StructuredOutputsParams(choice=list(task.answer.candidates()))
        return StructuredOutputsParams(grammar=_grammar(task.answer.regex()))

    def _class_paths(self, task: Task) -> dict[tuple[int, ...], str] | None:
        """Each class's token ids after the prompt, or None when a class merges with the
        prompt's last token (it would not tokenize the same after a prompt)."""
        target = task.targets[0] if task.targets else None
        head = self.fitter.prompt(task, "x", target)
        head_ids = self.fitter.token_ids(head)
        paths = {}
        for c in task.answer.candidates():
            ids = self.fitter.token_ids(head + c)
            if ids[:len(head_ids)] != head_ids:
                print(f"emoray: class {c!r} of task {task.name} merges with the prompt's last "
                      "token; constraining that task by grammar instead", file=sys.stderr)
                return None
            paths[tuple(ids[len(head_ids):])] = c
        return paths

    def generate(self, tasks: list[Task], texts: list[str], targets: list[str | None]
                 ) -> list[Generation]:
        """Answer each (task, text, target); a request the engine rejects becomes a failed
        generation with the reason, the others still run."""
        prompts, cut = zip(*(self.fitter.cut_to_fit(t, x, g) for t, x, g in zip(tasks, texts, targets)))
        try:
            return self._run(list(prompts), list(tasks), list(targets), list(cut))
        except Exception:  # isolate the rejected request(s); each row gets its own outcome
            return [self._one(p, t, g, c) for p, t, g, c in zip(prompts, tasks, targets, cut)]

    def _one(self, prompt: str, task: Task, target: str | None, cut: bool) -> Generation:
        try:
            return self._run([prompt], [task], [target], [cut])[0]
        except Exception as e:  # the engine's own error, kept on the row
            return Generation(None, truncated=cut, error=f"{type(e).__name__}: {e}")

    def _run(self, prompts: list[str], tasks: list[Task], targets: list[str | None],
             cut: list[bool]) -> list[Generation]:
        outputs = self.llm.generate(prompts, [self.sampling_params(t) for t in tasks],
                                    use_tqdm=False)
        results = [None if self.candidates(t) else self._result(o, t, c)
                   for o, t, c in zip(outputs, tasks, cut)]
        self._spreads(targets, outputs, tasks, results)
        scored = [i for i, r in enumerate(results) if r is None]
        if scored:
            picks = self._pick([outputs[i] for i in scored], [tasks[i] for i in scored])
            for i, (answer, logprob, n_tokens) in zip(scored, picks):
                confident = self.decoding(tasks[i]).confidence
                results[i] = Generation(
                    answer, math.exp(logprob) if confident else None, cut[i], None,
                    "stop", len(outputs[i].prompt_token_ids or ()), n_tokens)
        return results

    def _pick(self, outputs, tasks: list[Task]) -> list[tuple[str, float, int]]:
        """Walk each row's candidate paths greedily from the first-step outputs: at each step
        the most probable next token among those continuing a candidate, its probability
        renormalised over them (what grammar-constrained greedy decoding picks and reports);
        a row on a multi-token class takes one more step on its prompt plus the path
        (prefix-cached). Returns (answer, log-probability, tokens) per row."""
        from vllm.inputs import TokensPrompt

        picks: list[tuple[str, float, int]] = [("", 0.0, 0)] * len(outputs)
        frontier = [(row, (), 0.0, list(o.prompt_token_ids), o.outputs[0].logprobs[0])
                    for row, o in enumerate(outputs)]
        while frontier:
            extend = []
            for row, prefix, score, ids, logprobs in frontier:
                candidates = self.candidates(tasks[row])
                options = {t: logprobs[t].logprob for t in candidates.next_tokens(prefix)}
                token = max(options, key=options.get)
                score += options[token] - logsumexp(options.values())
                path = prefix + (token,)
                if path in candidates.paths:
                    picks[row] = (candidates.paths[path], score, len(path))
                else:
                    extend.append((row, path, score, ids + [token]))
            if not extend:
                break
            outs = self.llm.generate(
                [TokensPrompt(prompt_token_ids=ids) for _, _, _, ids in extend],
                [self._scoring_params(self.candidates(tasks[row]).next_tokens(path))
                 for row, path, _, _ in extend], use_tqdm=False)
            frontier = [(row, path, score, ids, o.outputs[0].logprobs[0])
                        for (row, path, score, ids), o in zip(extend, outs)]
        return picks

    def _result(self, output, task: Task, cut: bool) -> Generation:
        completion = output.outputs[0]
        confidence = None
        if self.decoding(task).confidence and completion.cumulative_logprob is not None:
            confidence = math.exp(completion.cumulative_logprob)
        return Generation(
            self.numbers.text(completion), confidence, cut, None, completion.finish_reason,
            len(output.prompt_token_ids or ()), len(completion.token_ids))

    def _head_tokens(self, task: Task, target: str | None, head: str) -> list[int] | None:
        """The tokens an answer start `head` adds after the task's prompt (the same for every
        text: the prompt ends with the task's fixed suffix), or None when it merges with the
        prompt's last token."""
        key = (task.name, target, head)
        if key not in self._heads:
            prompt = self.fitter.prompt(task, "x", target)
            mine, ids = self.fitter.token_ids(prompt), self.fitter.token_ids(prompt + head)
            self._heads[key] = ids[len(mine):] if ids[:len(mine)] == mine else None
        return self._heads[key]

    def _spreads(self, targets: list[str | None], outputs, tasks: list[Task],
                 results: list[Generation]) -> None:
        """Regression answers' confidence (and expected score, for `expected_score` tasks)
        from `Regression.spread`. The confidence needs only the answer's own heads, which the
        greedy decode passed through; an expected score needs every head, and those it did not
        pass through take one scoring step each on the prompt plus that head (prefix-cached),
        as does an own head inside a token. An answer whose distribution cannot be had (a head
        that does not tokenize apart from the prompt, a failed answer) gets no confidence."""
        from vllm.inputs import TokensPrompt

        rows = [i for i, t in enumerate(tasks) if isinstance(t.answer, Regression)
                and self.decoding(t).confidence
                and results[i].error is None and results[i].raw_output is not None]
        branches = {i: self.numbers.branches(tasks[i].answer, outputs[i]) for i in rows}
        extra = []
        for i in rows:
            answer, expected = tasks[i].answer, self.decoding(tasks[i]).expected
            needed = answer.heads() if expected else answer.path_heads(results[i].raw_output)
            for head in (h for h in needed if h not in branches[i]):
                ids = self._head_tokens(tasks[i], targets[i], head)
                if ids is not None:
                    extra.append((i, head, list(outputs[i].prompt_token_ids) + ids))
        if extra:
            params = self._scoring_params(self.numbers.ids)
            outs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for _, _, ids in extra],
                                     [params] * len(extra), use_tqdm=False)
            for (i, head, _), o in zip(extra, outs):
                branches[i][head] = self.numbers.first_chars(o.outputs[0].logprobs, 0)
        for i in rows:
            results[i] = self.with_spread(tasks[i], results[i], branches[i])
