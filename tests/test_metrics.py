"""Metrics against hand-computed values, and gold extraction from every AEB file."""

import math
from collections import Counter

import pytest

from emoray.quality import aeb
from emoray.answers import Parsed
from emoray.config import S3Config
from emoray.quality.metrics import score
from emoray.tasks import TASKS


def scores(values):
    return [Parsed(score=float(v)) for v in values]


def sets(*rows):
    return [Parsed(labels=list(r)) for r in rows]


def test_perfect_predictions_score_one():
    assert score(TASKS["v_reg"], scores([0.1, 0.5, 0.9]), scores([0.1, 0.5, 0.9])) == {
        "pearson": 1.0}
    assert score(TASKS["sst5"], scores([0, 1, 4, 4]), scores([0, 1, 4, 4])) == {
        "accuracy": 1.0, "macro_f1": 1.0}
    gold = sets(["anger"], ["joy", "love"], ["neutral"])
    assert score(TASKS["e_c"], gold, gold) == {"jaccard": 1.0, "micro_f1": 1.0, "macro_f1": 1.0}


def test_known_permutations_give_hand_computed_values():
    # r of (1,2,3,4) and (2,1,4,3): sum dx*dy = 3.0, sum dx^2 = sum dy^2 = 5.0 -> 0.6
    assert score(TASKS["v_reg"], scores([0.1, 0.2, 0.3, 0.4]), scores([0.2, 0.1, 0.4, 0.3])) == {
        "pearson": 0.6}
    # classes 0,1,2: F1 2/3, 1, 2/3 -> macro 0.7778; 3 of 4 right
    assert score(TASKS["sst5"], scores([0, 1, 2, 2]), scores([0, 1, 2, 0])) == {
        "accuracy": 0.75, "macro_f1": 0.7778}
    # a full swap of every class: nothing right
    assert score(TASKS["tdt"], scores([-1, 0, 1]), scores([0, 1, -1])) == {
        "accuracy": 0.0, "macro_f1": 0.0}
    # Jaccard (1 + 1/2 + 1)/3; micro: tp 2, fp 0, fn 1 -> 0.8; macro over anger, joy, love
    gold = sets(["anger"], ["joy", "love"], ["neutral"])
    pred = sets(["anger"], ["joy"], ["neutral"])
    assert score(TASKS["e_c"], gold, pred) == {
        "jaccard": 0.8333, "micro_f1": 0.8, "macro_f1": 0.6667}


def test_goemotions_counts_neutral_as_a_class_and_e_c_does_not():
    gold = sets(["neutral"], ["joy"])
    pred = sets(["joy"], ["joy"])
    # e_c: neutral is "no emotion": joy has tp 1, fp 1 -> F1 2/3
    assert score(TASKS["e_c"], gold, pred)["micro_f1"] == 0.6667
    # goemotions: neutral is a label too: joy F1 2/3, neutral F1 0 -> macro 1/3
    assert score(TASKS["goemotions"], gold, pred)["macro_f1"] == 0.3333


def test_ties_constant_and_tiny_inputs_return_numbers_not_nan():
    # ties in both series are ordinary input: here they cancel exactly
    assert score(TASKS["v_reg"], scores([0.1, 0.1, 0.2, 0.2]), scores([0.1, 0.2, 0.1, 0.2])) == {
        "pearson": 0.0}
    # a constant prediction (or constant gold) has no correlation: scored 0.0, not NaN
    assert score(TASKS["v_reg"], scores([0.1, 0.5, 0.9]), scores([0.5, 0.5, 0.5])) == {
        "pearson": 0.0}
    assert score(TASKS["v_reg"], scores([0.5, 0.5]), scores([0.1, 0.9])) == {"pearson": 0.0}
    assert score(TASKS["v_reg"], scores([0.5]), scores([0.1])) == {"pearson": 0.0}
    assert score(TASKS["v_reg"], [], []) == {"pearson": 0.0}
    # no emotion anywhere: full agreement
    assert score(TASKS["e_c"], sets(["neutral"]), sets(["neutral"])) == {
        "jaccard": 1.0, "micro_f1": 1.0, "macro_f1": 1.0}
    assert all(not math.isnan(v) for v in score(TASKS["sst5"], [], []).values())
    with pytest.raises(ValueError, match="2 gold answers but 1 predictions"):
        score(TASKS["v_reg"], scores([0.1, 0.2]), scores([0.1]))


ROWS_PER_FILE = {
    "SST_test.csv": 2210, "sst5_test.csv": 2210, "TDT.csv": 692, "emobank_test.csv": 3000,
    "vader_test.csv": 4000, "goemotion_test.csv": 5427,
    "aaid_test_sample.jsonl": 39, "aaid_dev_sample.jsonl": 199,
}


def test_every_aeb_row_yields_a_text_and_a_gold_answer(aeb_dir):
    keys = [k for n, t in TASKS.items() if t.source for k in ([f"{n}:{x}" for x in t.targets]
                                                              or [n])]
    gold = aeb.extract(str(aeb_dir), S3Config(), keys)
    assert Counter(gold["file"].to_pylist()) == ROWS_PER_FILE
    assert Counter(gold["request"].to_pylist()) == {
        "sst": 2210, "sst5": 2210, "tdt": 692, "emobank_v": 1000, "emobank_a": 1000,
        "emobank_d": 1000, "vader": 4000, "goemotions": 5427, "v_reg": 74, "v_oc": 43,
        "e_c": 40, "ei_oc:joy": 50, "ei_oc:fear": 11, "ei_reg:joy": 11, "ei_reg:anger": 9}
    assert all(t.strip() for t in gold["text"].to_pylist())
    for row in gold.to_pylist()[::97]:
        task = TASKS[row["request"].partition(":")[0]]
        task.answer.parse(row["gold"])
    train = aeb.extract_file((aeb_dir / "aaid_train_sample.jsonl").read_text(),
                             "aaid_train_sample.jsonl")
    assert train.num_rows == 999


def test_sample_draws_limit_rows_per_request_reproducibly(aeb_dir):
    gold = aeb.extract(str(aeb_dir), S3Config(), ["v_reg", "sst", "ei_reg:anger"])
    a = aeb.sample(gold, 20, seed=3)
    assert Counter(a["request"].to_pylist()) == {"v_reg": 20, "sst": 20, "ei_reg:anger": 9}
    assert a["id"].to_pylist() == aeb.sample(gold, 20, seed=3)["id"].to_pylist()
    assert a["id"].to_pylist() != aeb.sample(gold, 20, seed=4)["id"].to_pylist()


def test_unmatched_instruction_names_file_and_row():
    bad = 'Instruction,Answer\n"Task: something else. Text: hi Sentiment score: ",0.5\n'
    with pytest.raises(aeb.locations.InputError, match=r"SST_test.csv row 0: no task template"):
        aeb.extract_file(bad, "SST_test.csv")
