"""The catalog reproduces the exact AEB/AAID instructions, and every gold answer parses."""

import csv
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emoray.answers import ParseError
from emoray.config import EngineConfig
from emoray.models import EMOLLMS
from emoray.prompting import PromptFitter
from emoray.tasks import CONVERSATION, TASKS, resolve

AEB_FILES = {
    "SST_test.csv": (["sst"], 2210),
    "sst5_test.csv": (["sst5"], 2210),
    "TDT.csv": (["tdt"], 692),
    "emobank_test.csv": (["emobank_v", "emobank_a", "emobank_d"], 3000),
    "vader_test.csv": (["vader"], 4000),
    "goemotion_test.csv": (["goemotions"], 5427),
}
AAID_TASKS = ["ei_reg", "ei_oc", "v_reg", "v_oc", "e_c"]


def aaid_rows(aeb_dir):
    rows = []
    for name in ["aaid_train_sample.jsonl", "aaid_dev_sample.jsonl"]:
        for line in (aeb_dir / name).read_text().splitlines():
            conv = json.loads(line)["conversations"]
            rows.append((conv[0]["value"], conv[1]["value"]))
    for line in (aeb_dir / "aaid_test_sample.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows.append((r["instruction"], r["output"]))
    return rows


def match_one(instruction, names):
    hits = [(n, TASKS[n].match(instruction)) for n in names]
    hits = [(n, m) for n, m in hits if m]
    assert len(hits) == 1, f"{len(hits)} tasks match {instruction[:80]!r}"
    return hits[0]


def expected_value(task, answer):
    if task.answer.kind == "regression":
        return float(answer), None, None
    if task.answer.kind == "ordinal":
        value = int(re.match(r"-?\d+", answer).group())
        return float(value), task.answer.classes[value], None
    items = {x.strip() for x in answer.rstrip(".").split(",")}
    if items == {"neutral or no emotion"}:
        items = {"neutral"}
    return None, None, items


@pytest.mark.parametrize("filename", AEB_FILES)
def test_aeb_instructions_rendered_exactly_and_answers_parse(aeb_dir, filename):
    names, rows_expected = AEB_FILES[filename]
    with open(aeb_dir / filename, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == rows_expected
    for row in rows:
        name, (text, target, template) = match_one(row["Instruction"], names)
        task = TASKS[name]
        assert task.instruction(text, target, template) == row["Instruction"]
        assert template == 0
        parsed = task.answer.parse(row["Answer"])
        score, label, labels = expected_value(task, row["Answer"])
        assert parsed.score == score and parsed.label == label
        assert (set(parsed.labels) if parsed.labels is not None else None) == labels


def test_aaid_instructions_rendered_exactly_and_answers_parse(aeb_dir):
    rows = aaid_rows(aeb_dir)
    assert len(rows) == 999 + 199 + 39
    seen = {n: set() for n in AAID_TASKS}
    for instruction, answer in rows:
        name, (text, target, template) = match_one(instruction, AAID_TASKS)
        task = TASKS[name]
        seen[name].add(template)
        assert task.instruction(text, target, template) == instruction
        if name == "ei_oc":
            assert f"amount of {target}" in answer or answer.startswith("0: no " + target)
        parsed = task.answer.parse(answer)
        score, label, labels = expected_value(task, answer)
        assert parsed.score == score and parsed.label == label
        assert (set(parsed.labels) if parsed.labels is not None else None) == labels
    # ten paraphrases per family, all kept in the catalog; index 0 is the most frequent
    assert {n: len(s) for n, s in seen.items()} == {n: 10 for n in AAID_TASKS}


def test_prompt_uses_training_conversation_format():
    prompt = TASKS["v_reg"].prompt("I love it")
    assert prompt.startswith("Human: \nTask: ")
    assert prompt.endswith(" Tweet: I love it Intensity Score: \n\nAssistant: \n")
    assert CONVERSATION == "Human: \n{instruction}\n\nAssistant: \n"


@pytest.mark.parametrize("model", sorted(EMOLLMS))
def test_each_model_family_gets_its_training_wrapper_around_the_exact_aeb_instruction(
        aeb_dir, model):
    """Per catalog model: every AAID instruction, split into text and target and rebuilt by
    the prompt fitter the engine uses, comes back verbatim inside that model's conversation
    format, which is the training builder's for every EmoLLMs family (docs/models.md)."""
    spec = EMOLLMS[model]
    assert spec.prompt_format == "Human: \n{instruction}\n\nAssistant: \n"
    fitter = PromptFitter(EngineConfig(), tokenizer=None, wrapper=spec.prompt_format)
    rows = aaid_rows(aeb_dir)
    for instruction, _ in rows:
        name, (text, target, template) = match_one(instruction, AAID_TASKS)
        fitter.config = EngineConfig(template=template)
        assert fitter.prompt(TASKS[name], text, target) == \
            f"Human: \n{instruction}\n\nAssistant: \n"
    assert len(rows) == 1237


def test_another_conversation_format_is_another_prompt_version():
    task = TASKS["v_reg"]
    other = "<s>[INST] {instruction} [/INST]"
    assert EngineConfig().prompt_version(task, CONVERSATION) == task.prompt_version()
    assert EngineConfig().prompt_version(task, other) != task.prompt_version()
    assert task.prompt("hi", wrapper=other) == f"<s>[INST] {task.instruction('hi')} [/INST]"


def test_a_task_is_decoded_and_scored_as_one_object_says_and_versioned_from_it():
    """`EngineConfig.decoding` is the one place the constraint, the expected-score rule and
    the confidence are decided per task; the prompt version hashes it (values pinned: a stored
    table's versions must not move when code moves)."""
    v_oc, v_reg = TASKS["v_oc"], TASKS["v_reg"]
    assert [EngineConfig(**kw).decoding(t).method for kw, t in [
        ({}, v_oc), ({}, v_reg), ({"constraint": "choice"}, v_oc),
        ({"constraint": "choice"}, v_reg), ({"constraint": "regex"}, v_oc),
        ({"constraint": "grammar"}, v_oc), ({"constrained": False}, v_oc)]] == [
        "logprobs", "grammar", "choice", "grammar", "regex", "grammar", "free"]
    expected = EngineConfig(expected_score=["v_reg"], confidence=True)
    assert (expected.decoding(v_reg).expected, expected.decoding(v_oc).expected) == (True, False)
    assert EngineConfig().prompt_version(v_reg, CONVERSATION) == "8d4716b56d5f"
    assert expected.prompt_version(v_reg, CONVERSATION) == "eceb686cac88"
    assert EngineConfig(constrained=False).prompt_version(v_oc, CONVERSATION) == "27dc8c6c430e"


def test_text_with_braces_is_not_formatted():
    assert "{target} {0} }{" in TASKS["ei_reg"].instruction("{target} {0} }{", "joy")


def test_prompt_version_changes_with_template_and_constraint():
    task = TASKS["e_c"]
    versions = {task.prompt_version(0), task.prompt_version(1), task.prompt_version(0, False)}
    assert len(versions) == 3
    assert all(re.fullmatch(r"[0-9a-f]{12}", v) for v in versions)
    assert len({t.prompt_version() for t in TASKS.values()}) == len(TASKS)


def test_resolve_expands_targets_and_rejects_unknown_names():
    assert [r.key for r in resolve("v_reg,ei_oc:joy,ei_reg")] == [
        "v_reg", "ei_oc:joy", "ei_reg:anger", "ei_reg:fear", "ei_reg:joy", "ei_reg:sadness"]
    assert [r.key for r in resolve(["v_reg", "v_reg"])] == ["v_reg"]
    with pytest.raises(ValueError, match="unknown task 'valence': pick from ei_reg, ei_oc"):
        resolve("valence")
    with pytest.raises(ValueError, match="task 'ei_reg' has no target 'love'"):
        resolve("ei_reg:love")
    with pytest.raises(ValueError, match="no tasks given"):
        resolve(" , ")


@pytest.mark.parametrize("name", list(TASKS))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_string_the_constraint_admits_parses(name, data):
    task = TASKS[name]
    answer = data.draw(st.from_regex(task.answer.regex(), fullmatch=True))
    parsed = task.answer.parse(answer)
    assert len(answer) + 1 <= task.max_tokens
    if task.answer.kind == "regression":
        assert task.answer.low <= parsed.score <= task.answer.high
    elif task.answer.kind == "ordinal":
        assert parsed.label == task.answer.classes[int(parsed.score)]
    else:
        assert parsed.labels and len(parsed.labels) == len(set(parsed.labels))


@pytest.mark.parametrize("name,raw", [
    ("v_reg", "1.5"), ("v_reg", "high"), ("vader", "-4.5"), ("v_oc", "4"),
    ("ei_oc", "2.5"), ("e_c", "anger, hope."), ("goemotions", ""),
])
def test_parsers_reject_answers_outside_the_schema(name, raw):
    with pytest.raises(ParseError):
        TASKS[name].answer.parse(raw)


@pytest.mark.parametrize("name", ["v_reg", "emobank_v", "vader"])
def test_expected_value_agrees_with_greedy_when_certain_and_stays_in_range(name):
    """Regression.spread on constructed distributions: all mass on the answer's own leading
    digit gives back the answer itself and confidence 1; any distribution gives a score in
    the task's range and a confidence in [0, 1]."""
    import numpy as np

    answer = TASKS[name].answer
    rng = np.random.default_rng(5)
    for raw in answer.grid()[::3] + ["0.731" if answer.high == 1 else "-0.25"]:
        if not re.fullmatch(answer.regex(), raw):
            continue
        certain = {h: {raw[len(h)]: 1.0} if raw.startswith(h) and len(raw) > len(h)
                   else dict.fromkeys("-0123456789", 0.1) for h in answer.heads()}
        expected, near = answer.spread(raw, certain)
        assert expected == pytest.approx(answer.parse(raw).score) and near == pytest.approx(1.0)
        for _ in range(20):
            branches = {h: {c: float(p) for c, p in zip("-0123456789", rng.random(11))}
                        for h in answer.heads()}
            expected, near = answer.spread(raw, branches)
            assert answer.low <= expected <= answer.high and 0 <= near <= 1
    assert answer.spread("0" if answer.low <= 0 else "1", {}) is None  # no distribution known


def test_expected_value_of_a_known_distribution():
    """On [0, 1]: P(leading 1) = 0.8, and 0.0 … 0.9 share 0.2 evenly: the expected value of
    the answer 1.000 is 0.8 + 0.2 * 0.45, and its confidence 0.8 (its own bucket; the 0.02 of
    0.9 below it lies behind another leading digit). An
    answer's digits past the leading place stay inside the range (0.29 in the 1.0 bucket
    counts as 1.0). On [-4, 4] the answers -0.99 … -0.01 have a bucket of their own."""
    answer = TASKS["v_reg"].answer
    assert answer.heads() == ["", "0."]
    branches = {"": {"0": 0.2, "1": 0.8, "-": 0.5}, "0.": {str(d): 0.1 for d in range(10)}}
    assert answer.spread("1.000", branches) == (pytest.approx(0.89), pytest.approx(0.8))
    assert answer.spread("1", branches) == (pytest.approx(0.89), pytest.approx(0.8))
    # the confidence reads the answer's own heads only: 0.9 lies behind the 0 that 1.000 did
    # not take, so it counts nothing, and no step on `0.` is needed; the expected value is
    assert answer.path_heads("1.000") == [""] and answer.path_heads("0.731") == ["", "0."]
    assert answer.spread("1.000", {"": branches[""]}) == (None, pytest.approx(0.8))
    assert answer.spread("0.731", {"": branches[""]}) is None  # its own `0.` head unknown
    assert answer.spread("0.29", {"": {"0": 0.7, "1": 0.3}, "0.": {"2": 1.0}}) == (
        pytest.approx(0.7 * 0.29 + 0.3), pytest.approx(0.7))
    vader = TASKS["vader"].answer
    assert vader.grid() == ["-4", "-3", "-2", "-1", "-0", "0", "1", "2", "3", "4"]
    assert vader.heads() == ["", "-"]
    certain = vader.spread("-0.5", {"": {"-": 1.0}, "-": {"0": 1.0}})
    assert certain == (pytest.approx(-0.5), pytest.approx(1.0))
    assert vader.spread("-1.25", {"": {"-": 0.5, "1": 0.5}, "-": {"1": 0.5, "2": 0.5}}) == (
        pytest.approx(-0.25), pytest.approx(0.5))
