"""Routing table in, table out (no Ray, milliseconds): the survey of tonight's text hash keys
names the rows that need the shuffle (repeated texts, texts the table holds, blank values);
planning the others batch by batch and the named ones together gives exactly the plan of all
rows together."""

import numpy as np
import pyarrow as pa

from emoray import routing, stages
from emoray.lake import key_index
from tests.test_stages import REQUESTS, VERSIONS, new_rows, stored

DOCS = [("a", "so happy"), ("b", "so sad"), ("c", "so happy"), ("d", None), ("e", "calm"),
        ("f", "   "), ("g", "angry")]


def survey_of(batch: pa.Table, old: pa.Table | None = None) -> routing.Survey:
    survey = routing.Survey.of([routing.batch_keys(batch)])
    if old is not None:
        survey.add_stored("stored.parquet", key_index.keys_of(old.append_column(
            "model", pa.array(["m"] * old.num_rows))), REQUESTS)
    return survey


def docs(batch: pa.Table) -> list[str]:
    return batch["doc_id"].to_pylist()


def canonical(plan: pa.Table) -> list[tuple]:
    return sorted((r["task"], r["text_sha256"] or "", tuple(sorted(r["doc_ids"])),
                   r["cached_output"] or "") for r in plan.to_pylist())


def test_hash_keys_are_the_first_64_bits_and_null_has_none():
    sha = pa.array(["ffffffffffffffff" + "0" * 48, "0000000000000001" + "f" * 48, None])
    keys, valid = routing.hash_keys(sha)
    assert keys.tolist() == [-1, 1, 0] and valid.tolist() == [True, True, False]


def test_survey_names_repeated_texts_and_blank_values_take_the_shuffle():
    batch = new_rows(DOCS)
    survey = survey_of(batch)
    assert (survey.rows, survey.unhashed, len(survey.keys)) == (7, 1, 5)
    assert docs(routing.take(batch, survey.named, shuffled=True)) == ["a", "c", "d"]
    assert docs(routing.take(batch, survey.named, shuffled=False)) == ["b", "e", "f", "g"]
    assert survey.shuffled_rows and survey.streamed_rows


def test_texts_the_table_holds_take_the_shuffle_and_settle_the_engine_decision():
    batch = new_rows(DOCS)
    old = stored([{"doc": "z", "text": "calm", "task": "v_reg", "answer": "0.2"},
                  {"doc": "y", "text": "nowhere tonight", "task": "v_oc", "answer": "1"}])
    survey = survey_of(batch, old)
    assert docs(routing.take(batch, survey.named, shuffled=True)) == ["a", "c", "d", "e"]
    assert docs(routing.take(old, survey.named, shuffled=True)) == ["z"]
    assert survey.prompts_wanted()
    texts = [t for _, t in DOCS if t is not None]
    every = stored([{"doc": "z", "text": t, "task": r.task.name, "answer": "1"}
                    for t in texts for r in REQUESTS])
    assert not survey_of(batch, every).prompts_wanted()
    failed = stored([{"doc": "z", "text": t, "task": r.task.name, "answer": "1",
                      "status": "failed"} for t in texts for r in REQUESTS])
    assert survey_of(batch, failed).prompts_wanted()


def test_streamed_batches_plus_the_shuffled_rows_plan_exactly_as_all_rows_together():
    batch = new_rows(DOCS)
    old = stored([{"doc": "a", "text": "so happy", "task": "v_reg", "answer": "0.2"},
                  {"doc": "q", "text": "calm", "task": "v_oc", "answer": "2"}])
    survey = survey_of(batch, old)
    streamed = routing.take(batch, survey.named, shuffled=False)
    shuffled = pa.concat_tables([routing.take(batch, survey.named, shuffled=True),
                                 routing.take(old, survey.named, shuffled=True)])
    parts = [stages.plan(streamed.slice(i, 1), REQUESTS, VERSIONS)
             for i in range(streamed.num_rows)]
    parts.append(stages.plan(shuffled, REQUESTS, VERSIONS))
    together = stages.plan(pa.concat_tables([batch, old]), REQUESTS, VERSIONS)
    assert canonical(pa.concat_tables(parts)) == canonical(together)
    # 4 texts, a blank and a null value, 2 requests; doc a's v_reg is held (c still asks it)
    assert len(canonical(together)) == 12
    assert [d for t, _, d, _ in canonical(together) if t == "v_reg" and "c" in d] == [("c",)]


def test_texts_sharing_a_key_both_take_the_shuffle():
    batch = pa.table({"text_sha256": ["ab" * 8 + "1" * 48, "ab" * 8 + "2" * 48, "cd" * 32]})
    survey = routing.Survey.of([routing.batch_keys(batch)])
    assert routing.take(batch, survey.named, shuffled=True)["text_sha256"].to_pylist() == [
        "ab" * 8 + "1" * 48, "ab" * 8 + "2" * 48]


def test_waves_split_rows_by_text_and_plan_exactly_as_one():
    """Every row lands in exactly one wave, a text's rows (input and stored) in the same one,
    rows without a hash in wave 0; planning wave by wave gives the plan of all rows."""
    batch = new_rows(DOCS)
    old = stored([{"doc": "a", "text": "so happy", "task": "v_reg", "answer": "0.2"},
                  {"doc": "q", "text": "calm", "task": "v_oc", "answer": "2"}])
    together = canonical(stages.plan(pa.concat_tables([batch, old]), REQUESTS, VERSIONS))
    assert routing.in_wave(batch, 0, 1) is batch
    for waves in (2, 3, 5):
        parts = [(routing.in_wave(batch, k, waves), routing.in_wave(old, k, waves))
                 for k in range(waves)]
        assert sorted(d for new, _ in parts for d in docs(new)) == sorted(docs(batch))
        assert sorted(d for _, o in parts for d in docs(o)) == ["a", "q"]
        wave_of = {(side, d): k for k, tables in enumerate(parts)
                   for side, t in zip(("new", "old"), tables) for d in docs(t)}
        assert wave_of["new", "a"] == wave_of["new", "c"] == wave_of["old", "a"]  # "so happy"
        assert wave_of["new", "e"] == wave_of["old", "q"]  # "calm"
        assert "d" in docs(parts[0][0])  # a null text has no hash
        assert sorted(r for new, o in parts for r in canonical(
            stages.plan(pa.concat_tables([new, o]), REQUESTS, VERSIONS))) == together


def test_the_engine_is_wanted_in_a_wave_only_for_its_unheld_texts():
    batch = new_rows([("a", "so happy"), ("b", "so sad")])
    old = stored([{"doc": "a", "text": "so happy", "task": t, "answer": "1"}
                  for t in ("v_reg", "v_oc")])
    survey = survey_of(batch, old)
    n = next(n for n in range(2, 64) if len(set(routing.wave_of(survey.keys, n))) == 2)
    happy_key = routing.hash_keys(old["text_sha256"])[0][0]
    happy = int(routing.wave_of(np.array([happy_key]), n)[0])
    sad = next(w for w in range(n) if w != happy and routing.keys_in_wave(survey.keys, w, n).size)
    assert survey.prompts_wanted() and survey.prompts_wanted((sad, n))
    assert not survey.prompts_wanted((happy, n))
    assert list(routing.keys_in_wave(survey.keys, happy, n)) == [happy_key]
