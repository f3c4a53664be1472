"""The engine's constraint methods on one in-process tiny-model engine: every method gives the
same answers and confidences (they constrain the same answers, greedily)."""

from __future__ import annotations

import pytest

from emoray.bench import bench_texts
from emoray.config import EngineConfig
from emoray.tasks import TASKS


@pytest.fixture(scope="module")
def engine(tiny_model):
    from emoray.engine import Engine

    engine = Engine(EngineConfig(model=str(tiny_model), device="cpu",
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


def test_unconstrained_answers_are_free_text(engine):
    task = TASKS["v_oc"]
    out = engine.variant(constrained=False).generate([task] * 4, bench_texts(4), [None] * 4)
    assert {g.output_tokens for g in out} == {task.max_tokens}
