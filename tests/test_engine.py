"""The engine's constraint methods on one in-process tiny-model engine: every method gives the
same answers and confidences (they constrain the same answers, greedily)."""

from __future__ import annotations

import copy
import math
import os

import pytest

from emoray.tools.bench import bench_texts
from emoray.config import EngineConfig
from emoray.tasks import TASKS


@pytest.fixture(scope="module")
def engine(tiny_model):
    from emoray.engines.vllm_engine import VllmEngine as Engine

    engine = Engine(EngineConfig(model=str(tiny_model), device="cpu", enforce_eager=False,
                                 gpu_memory_utilization=0.1, max_model_len=1024))
    yield engine
    engine.llm.llm_engine.engine_core.shutdown()


def test_class_candidates_are_token_paths(engine):
    paths = engine.variant(constraint="logprobs").candidates(TASKS["v_oc"]).paths
    assert sorted(paths.values()) == ["-1", "-2", "-3", "0", "1", "2", "3"]
    assert {len(p) for p, c in paths.items() if c.startswith("-")} == {2}
    assert engine.variant(constraint="logprobs").candidates(TASKS["v_reg"]) is None
    assert engine.variant(constraint="grammar").candidates(TASKS["v_oc"]) is None


@pytest.mark.parametrize("name", ["v_oc", "sst5", "tdt", "ei_oc", "v_reg", "e_c"])
def test_every_constraint_method_gives_the_same_answers(engine, name):
    task = TASKS[name]
    texts = bench_texts(24)
    target = task.targets[0] if task.targets else None
    answers = {}
    for method in ("grammar", "regex", "choice", "logprobs"):
        out = engine.variant(constraint=method).generate([task] * 24, texts, [target] * 24)
        assert all(g.error is None for g in out), method
        for g in out:
            task.answer.parse(g.raw_output)
        answers[method] = [(g.raw_output, round(g.confidence, 4)) for g in out]
        assert all(0 < g.confidence <= 1 for g in out)
    assert answers["regex"] == answers["grammar"]
    assert answers["choice"] == answers["grammar"]
    assert answers["logprobs"] == answers["grammar"]


def test_regression_answers_read_without_vllm_decoding_match_its_text(engine):
    """A regression request asks vLLM for the number tokens' log-probabilities and not to
    decode them (its cost); the engine's own reading of the answer and of each step's tokens
    equals what vLLM decodes when asked."""
    task, texts = TASKS["v_reg"], bench_texts(16)
    params = engine.sampling_params(task)
    assert params.detokenize is False and len(params.logprob_token_ids) == 37
    free = engine.variant(constrained=False).sampling_params(task)  # may start with a space
    assert free.detokenize is True and free.logprob_token_ids == params.logprob_token_ids
    decoded = copy.copy(params)
    decoded.detokenize = True
    prompts = [engine.fitter.prompt(task, text, None) for text in texts]
    reference = engine.llm.generate(prompts, [decoded] * 16, use_tqdm=False)
    ours = engine.generate([task] * 16, texts, [None] * 16)
    assert [g.raw_output for g in ours] == [o.outputs[0].text for o in reference]
    steps = [step for o in reference for step in o.outputs[0].logprobs]
    assert len(steps) >= 16 * 2
    for step in steps:
        numbers = {i: lp.decoded_token for i, lp in step.items() if i in engine.numbers.texts}
        assert len(numbers) >= 37
        assert numbers == {i: engine.numbers.texts[i] for i in numbers}
    assert all(0 < g.confidence <= 1 for g in ours)


def test_regression_confidence_takes_no_step_beyond_the_greedy_decode(engine, monkeypatch):
    """A regression answer's confidence reads only the heads the greedy answer passed through:
    one `generate` call per batch, and the same confidences as when the engine also takes the
    steps an expected score needs (every head, e.g. `0.` for an answer 1.000), which it does
    only for `expected_score` tasks."""
    task, texts = TASKS["v_reg"], bench_texts(16)
    calls = []
    generate = engine.llm.generate
    monkeypatch.setattr(engine.llm, "generate",
                        lambda prompts, *a, **k: calls.append(len(prompts)) or
                        generate(prompts, *a, **k))
    greedy = engine.generate([task] * 16, texts, [None] * 16)
    assert calls == [16]
    scored = engine.variant(expected_score=["v_reg"]).generate([task] * 16, texts, [None] * 16)
    off_path = sum(1 for g in greedy for h in task.answer.heads()
                   if h not in task.answer.path_heads(g.raw_output))
    assert off_path > 0 and calls == [16, 16, off_path]
    assert [g.raw_output for g in scored] == [g.raw_output for g in greedy]
    assert [g.confidence for g in scored] == pytest.approx([g.confidence for g in greedy])
    assert all(g.expected is None for g in greedy)
    assert all(task.answer.low <= g.expected <= task.answer.high for g in scored)


def test_flat_and_per_step_log_probabilities_read_the_same(engine):
    """vLLM's flat log-probabilities list the sampled token first and again among the number
    tokens asked for; read per first character, they count it once, as the per-step dicts do."""
    from vllm.logprobs import FlatLogprobs, Logprob

    one, two = sorted(engine.numbers.texts)[:2]
    flat = FlatLogprobs()
    flat.append_fast([one, one, two], [-0.5, -0.5, -1.5], iter([1, 1, 2]), [None] * 3)
    steps = [{one: Logprob(-0.5, 1), two: Logprob(-1.5, 2)}]
    assert engine.numbers.first_chars(flat, 0) == engine.numbers.first_chars(steps, 0)
    assert sum(engine.numbers.first_chars(flat, 0).values()) == pytest.approx(
        math.exp(-0.5) + math.exp(-1.5))


def test_unconstrained_answers_are_free_text(engine):
    task = TASKS["v_oc"]
    out = engine.variant(constrained=False).generate([task] * 4, bench_texts(4), [None] * 4)
    assert {g.output_tokens for g in out} == {task.max_tokens}


@pytest.fixture(scope="module")
def seq2seq(tmp_path_factory):
    """The Transformers engine on a tiny T5 (built here: 2 s)."""
    from emoray.engines.seq2seq import Seq2SeqEngine
    from emoray.tools.tiny_model import build_tiny_model

    model = build_tiny_model(tmp_path_factory.mktemp("t5") / "tiny-t5", arch="t5")
    return Seq2SeqEngine(EngineConfig(model=str(model), device="cpu", max_model_len=1024))


@pytest.mark.parametrize("name", ["v_oc", "ei_oc", "sst5"])
def test_seq2seq_scoring_gives_the_grammars_answers(seq2seq, name):
    """Class tasks scored from one teacher-forced decoder pass pick and score what greedy
    decoding under the grammar does."""
    task = TASKS[name]
    texts = bench_texts(24)
    target = task.targets[0] if task.targets else None
    answers = {}
    for method in ("grammar", "logprobs"):
        out = seq2seq.variant(constraint=method).generate([task] * 24, texts, [target] * 24)
        assert all(g.error is None and 0 < g.confidence <= 1 for g in out), method
        answers[method] = [(g.raw_output, round(g.confidence, 4)) for g in out]
    assert seq2seq.variant(constraint="logprobs").candidates(task) is not None
    assert answers["logprobs"] == answers["grammar"]
    assert {a for a, _ in answers["logprobs"]} <= set(task.answer.candidates())


def test_vllm_and_transformers_engines_agree_on_statuses_and_types(engine, seq2seq):
    """Same prompts and task set (one text longer than both contexts): the same status per
    row and the same typed answer fields; values differ (different random models)."""
    texts = bench_texts(10) + ["so very sad " * 1500]
    rows = [(TASKS[n], t, g) for n, g in [("v_reg", None), ("v_oc", None), ("e_c", None),
                                           ("ei_reg", "joy")] for t in texts]
    seen = {}
    for name, e in (("vllm", engine), ("transformers", seq2seq)):
        out = e.generate(*map(list, zip(*rows)))
        seen[name] = []
        for (task, _, _), g in zip(rows, out):
            parsed = task.answer.parse(g.raw_output)
            fields = tuple(f for f in ("score", "label", "labels")
                           if getattr(parsed, f) is not None)
            seen[name].append((task.name, "truncated" if g.truncated else "ok", fields,
                               g.error, g.confidence is not None))
    assert seen["vllm"] == seen["transformers"]
    statuses = [s for _, s, _, _, _ in seen["transformers"]]
    assert statuses.count("truncated") == 4 and statuses.count("ok") == 40
    assert {(n, f) for n, _, f, _, _ in seen["vllm"]} == {
        ("v_reg", ("score",)), ("v_oc", ("score", "label")), ("e_c", ("labels",)),
        ("ei_reg", ("score",))}


@pytest.mark.parametrize("in_process, client", [(None, "InprocClient 0"),
                                                (False, "SyncMPClient 1")])
def test_in_process_runs_the_engine_core_in_the_callers_process(tiny_model, in_process, client):
    """A CPU engine with `engine.in_process` unset (and the variable unset) keeps vLLM's
    engine core in the engine's own process: vLLM's in-process client, no child process. Off,
    vLLM's default (what GPU engines run): the core in a child process."""
    import subprocess
    import sys

    code = ("import multiprocessing; from emoray.config import EngineConfig; "
            "from emoray.engines.vllm_engine import VllmEngine as Engine; "
            f"e = Engine(EngineConfig(model={str(tiny_model)!r}, device='cpu', "
            f"max_model_len=512, kv_cache_gib=0.25, in_process={in_process})); "
            "print('client', type(e.llm.llm_engine.engine_core).__name__, "
            "len(multiprocessing.active_children()))")
    env = {k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [line for line in done.stdout.splitlines() if line.startswith("client ")] == [
        f"client {client}"]
