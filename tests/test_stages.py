"""The planning stages table in, table out (no Ray, no engine, milliseconds): input rows are
normalized to plan input; the plan skips what the table holds, reuses stored answers for known
texts, sends each new text once per request, and lays requests out task-major."""

from datetime import datetime, timezone

import pyarrow as pa

from emoray import stages
from emoray.tasks import resolve

T0 = datetime(2026, 11, 20, tzinfo=timezone.utc)
REQUESTS = resolve(["v_oc", "v_reg"])
VERSIONS = {"v_oc": "vo1", "v_reg": "vr1"}


def new_rows(docs: list[tuple[str, str | None]], request: list[str | None] | None = None):
    table = pa.table({"id": [d for d, _ in docs], "text": [t for _, t in docs]})
    if request is not None:
        table = table.append_column("req", pa.array(request, pa.string()))
    return stages.normalize(table, "id", "text", "req" if request is not None else None)


def stored(rows: list[dict]) -> pa.Table:
    """Stored annotation rows (side "old"): doc, text, task, version, answer, status, hour."""
    sha = {r["text"]: stages._check_text(r["text"].encode())[1] for r in rows}
    return stages.as_plan_input(pa.table({
        "doc_id": [r["doc"] for r in rows],
        "text_sha256": [sha[r["text"]] for r in rows],
        "task": [r["task"] for r in rows],
        "target": pa.nulls(len(rows), pa.string()),
        "prompt_version": [r.get("version", VERSIONS[r["task"]]) for r in rows],
        "raw_output": [r["answer"] for r in rows],
        "score": pa.array([float(r["answer"]) for r in rows], pa.float64()),
        "confidence": pa.array([0.5] * len(rows), pa.float64()),
        "raw_confidence": pa.array([0.6] * len(rows), pa.float64()),
        "status": [r.get("status", "ok") for r in rows],
        "annotated_at": pa.array([T0.replace(hour=r.get("hour", 0)) for r in rows],
                                 pa.timestamp("us", tz="UTC")),
        "run_id": [r.get("run", "r0") for r in rows],
    }), "old")


def plan(*parts: pa.Table) -> list[dict]:
    out = stages.plan(pa.concat_tables(parts), REQUESTS, VERSIONS)
    assert tuple(out.column_names) == stages.PROMPT_ROW
    return out.to_pylist()


def test_normalize_gives_plan_input_with_a_status_per_text():
    table = pa.table({"id": pa.array([1, 2, 3, 4]),
                      "text": pa.array([b"so happy", b"   ", None, b"\xff\xfe"], pa.binary())})
    out = stages.normalize(table, "id", "text")
    assert out.schema == stages.PLAN_INPUT
    rows = out.to_pylist()
    assert [r["doc_id"] for r in rows] == ["1", "2", "3", "4"]
    assert [r["text_status"] for r in rows] == ["ok", "empty_text", "empty_text", "invalid_text"]
    assert [r["text"] for r in rows] == ["so happy", "   ", None, None]
    assert [r["text_sha256"] is None for r in rows] == [False, False, True, False]
    assert {r["side"] for r in rows} == {"new"} and {r["request"] for r in rows} == {None}


def test_plan_sends_each_new_text_once_per_request_task_major():
    rows = plan(new_rows([("a", "so happy"), ("b", "so happy"), ("c", "so sad")]))
    assert [r["task"] for r in rows] == ["v_oc", "v_oc", "v_reg", "v_reg"]
    assert {(r["task"], tuple(sorted(r["doc_ids"]))) for r in rows} == {
        ("v_oc", ("a", "b")), ("v_oc", ("c",)), ("v_reg", ("a", "b")), ("v_reg", ("c",))}
    assert {r["prompt_version"] for r in rows if r["task"] == "v_reg"} == {"vr1"}
    assert all(r["cached_output"] is None and r["text_status"] == "ok" for r in rows)


def test_plan_skips_held_rows_reuses_known_texts_and_retries_failures():
    old = stored([
        {"doc": "a", "text": "so happy", "task": "v_reg", "answer": "0.2", "hour": 1},
        {"doc": "z", "text": "so happy", "task": "v_reg", "answer": "0.9", "hour": 3},
        {"doc": "a", "text": "so happy", "task": "v_oc", "answer": "1", "status": "failed"},
        {"doc": "c", "text": "so sad", "task": "v_reg", "answer": "0.1", "version": "old"},
    ])
    rows = plan(new_rows([("a", "so happy"), ("b", "so happy"), ("c", "so sad")]), old)
    got = {(r["task"], tuple(sorted(r["doc_ids"]))): r for r in rows}
    # (a, v_reg) is held; b's v_reg reuses the latest stored answer for the same text (hour 3)
    assert set(got) == {("v_oc", ("a", "b")), ("v_oc", ("c",)), ("v_reg", ("b",)),
                        ("v_reg", ("c",))}
    reused = got["v_reg", ("b",)]
    assert (reused["cached_output"], reused["cached_score"], reused["cached_status"],
            reused["cached_confidence"]) == ("0.9", 0.9, "ok", 0.6)
    assert got["v_oc", ("a", "b")]["cached_output"] is None  # a failed answer is retried
    assert got["v_reg", ("c",)]["cached_output"] is None  # another prompt version: asked again
    assert not stages.sends_prompt(reused["text_status"], reused["cached_output"])


def test_plan_asks_a_row_naming_its_request_that_one_only():
    rows = plan(new_rows([("a", "so happy"), ("b", "so sad")], request=["v_reg", None]))
    assert sorted((r["task"], r["doc_ids"][0]) for r in rows) == [
        ("v_oc", "b"), ("v_reg", "a"), ("v_reg", "b")]


def test_plan_sends_no_prompt_for_text_problems():
    rows = plan(new_rows([("a", ""), ("b", None)]))
    assert {r["text_status"] for r in rows} == {"empty_text"}
    assert not any(stages.sends_prompt(r["text_status"], r["cached_output"]) for r in rows)
    assert sum(len(r["doc_ids"]) for r in rows) == 4


def test_plan_reuses_the_latest_answer_by_the_one_rule():
    """Newest annotated_at first; a tie goes to the larger run_id (`statuses.LATEST`, which the
    Spark join follows too)."""
    old = stored([
        {"doc": "x", "text": "so happy", "task": "v_reg", "answer": "0.3", "run": "r2"},
        {"doc": "y", "text": "so happy", "task": "v_reg", "answer": "0.7", "run": "r9"},
        {"doc": "w", "text": "so happy", "task": "v_reg", "answer": "0.5", "run": "r5"},
    ])
    (row,) = [r for r in plan(new_rows([("a", "so happy")]), old) if r["task"] == "v_reg"]
    assert row["cached_output"] == "0.7"


def partition(*parts: pa.Table) -> pa.Table:
    return pa.concat_tables(parts)


def test_expand_requests_asks_each_row_its_requests_and_passes_stored_rows():
    old = stored([{"doc": "z", "text": "so sad", "task": "v_reg", "answer": "0.1"}])
    out = stages.EXPAND_REQUESTS(
        partition(new_rows([("a", "so happy"), ("b", "so sad")], request=["v_reg", None]), old),
        requests=REQUESTS, versions=VERSIONS)
    assert "request" not in out.column_names
    rows = out.to_pylist()
    assert sorted((r["side"], r["doc_id"], r["task"], r["prompt_version"]) for r in rows) == [
        ("new", "a", "v_reg", "vr1"), ("new", "b", "v_oc", "vo1"), ("new", "b", "v_reg", "vr1"),
        ("old", "z", "v_reg", "vr1")]


def _expanded(*parts: pa.Table) -> pa.Table:
    return stages.EXPAND_REQUESTS(partition(*parts), requests=REQUESTS, versions=VERSIONS)


def test_skip_held_drops_what_the_table_holds_for_the_doc_and_keeps_failures():
    old = stored([
        {"doc": "a", "text": "so happy", "task": "v_reg", "answer": "0.2"},
        {"doc": "a", "text": "so happy", "task": "v_oc", "answer": "1", "status": "failed"},
        {"doc": "b", "text": "so sad", "task": "v_reg", "answer": "0.1", "version": "old"},
        {"doc": "z", "text": "so sad", "task": "v_oc", "answer": "0"},
    ])
    out = stages.SKIP_HELD(_expanded(new_rows([("a", "so happy"), ("b", "so sad")]), old))
    assert out.schema == _expanded(new_rows([("a", "x")])).schema
    new = sorted((r["doc_id"], r["task"]) for r in out.to_pylist() if r["side"] == "new")
    # (a, v_reg) is held; a's failed v_oc is asked again; b's v_reg was another version;
    # z's answer for b's text is not b's
    assert new == [("a", "v_oc"), ("b", "v_oc"), ("b", "v_reg")]
    assert sum(r["side"] == "old" for r in out.to_pylist()) == 4


def test_attach_reuse_gives_input_rows_the_latest_reusable_answer_and_drops_stored_rows():
    old = stored([
        {"doc": "x", "text": "so happy", "task": "v_reg", "answer": "0.3", "hour": 1},
        {"doc": "y", "text": "so happy", "task": "v_reg", "answer": "0.8", "hour": 2},
        {"doc": "w", "text": "so happy", "task": "v_oc", "answer": "2", "status": "failed"},
    ])
    out = stages.ATTACH_REUSE(_expanded(new_rows([("a", "so happy"), ("b", "so sad")]), old))
    assert tuple(out.column_names) == (*stages.WANTED, *stages.REUSED)
    got = {(r["doc_id"], r["task"]): r["cached_output"] for r in out.to_pylist()}
    assert got == {("a", "v_reg"): "0.8", ("a", "v_oc"): None,
                   ("b", "v_reg"): None, ("b", "v_oc"): None}


def test_group_by_text_sends_each_text_once_per_task_in_request_order():
    wanted = stages.ATTACH_REUSE(_expanded(new_rows(
        [("a", "so happy"), ("b", "so sad"), ("c", "so happy")])))
    out = stages.GROUP_BY_TEXT(wanted, requests=REQUESTS)
    assert tuple(out.column_names) == stages.PROMPT_ROW
    rows = out.to_pylist()
    assert [r["task"] for r in rows] == ["v_oc", "v_oc", "v_reg", "v_reg"]
    assert sorted((r["task"], r["text"], tuple(sorted(r["doc_ids"]))) for r in rows) == [
        ("v_oc", "so happy", ("a", "c")), ("v_oc", "so sad", ("b",)),
        ("v_reg", "so happy", ("a", "c")), ("v_reg", "so sad", ("b",))]


def test_read_stored_keeps_this_models_rows_as_plan_input():
    """A renamed copy of the same checkpoint (same digest) is the same model; another is not."""
    from emoray.models import ModelSpec

    model = ModelSpec(name="tiny", source="/m", architecture="LlamaForCausalLM", digest="abc")
    rows = pa.table({"model": ["tiny@abc", "copy@abc", "other@def"], "doc_id": ["a", "b", "c"],
                     "status": ["ok", "ok", "ok"]})
    out = stages.READ_STORED(rows, model)
    assert out.schema == stages.PLAN_INPUT
    assert [(r["side"], r["doc_id"], r["status"]) for r in out.to_pylist()] == [
        ("old", "a", "ok"), ("old", "b", "ok")]
