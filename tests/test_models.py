"""The EmoLLMs architectures end to end: decoder-only LLaMA, OPT, BLOOM through the real vLLM
engine, encoder-decoder T5 and BART through the Transformers engine (chosen from config.json);
the model identity recorded in the table; the checkpoints refused before Ray starts."""

import json
import shutil

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from emoray import cli
from emoray.lake import table
from emoray.models import resolve_model
from emoray.sample import sample_texts
from emoray.tasks import TASKS
from emoray.tools.tiny_model import build_tiny_model

ENGINE = ["--device", "cpu", "--max-model-len", "1024", "--kv-cache-gib", "0.5"]
TASK_SET = "v_reg,v_oc,e_c,ei_reg"
N_TEXTS = 12


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    d = tmp_path_factory.mktemp("texts")
    rows = sample_texts()[:N_TEXTS]
    pq.write_table(pa.table({"id": [i for i, _ in rows], "text": [t for _, t in rows]}),
                   d / "sample.parquet")
    return d


ARCHITECTURES = {"opt": "OPTForCausalLM", "bloom": "BloomForCausalLM",
                 "t5": "T5ForConditionalGeneration", "bart": "BartForConditionalGeneration"}


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_each_architecture_annotates_and_evaluates(arch, texts, ray_local, tmp_path, capsys):
    """(The tiny LLaMA's runs are the rest of the suite.)"""
    model = build_tiny_model(tmp_path / f"tiny-{arch}", arch=arch)
    assert json.loads((model / "config.json").read_text())["architectures"] == [
        ARCHITECTURES[arch]]
    assert resolve_model(str(model)).engine == ("transformers" if arch in ("t5", "bart")
                                                else "vllm")
    out = tmp_path / "affect"
    code = cli.main(["annotate", "--input", str(texts), "--output", str(out), "--tasks",
                     TASK_SET, "--model", str(model), *ENGINE, "--json"])
    assert code == 0, capsys.readouterr().err[-3000:]
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["rows_out"] == N_TEXTS * 7
    assert summary["status_counts"] == {"ok": N_TEXTS * 7}  # every answer parsed
    rows = table.AnnotationTable(str(out)).read()
    assert rows.num_rows == N_TEXTS * 7
    assert set(rows["model"].to_pylist()) == {resolve_model(str(model)).identity}
    runs = [h for h in DeltaTable(str(out)).history() if h.get("run_id")]
    assert [h["engine"] for h in runs] == [resolve_model(str(model)).engine]
    v_oc = rows.filter(pc.equal(rows["task"], "v_oc"))
    assert set(v_oc["label"].to_pylist()) <= set(TASKS["v_oc"].answer.classes.values())
    e_c = rows.filter(pc.equal(rows["task"], "e_c"))
    allowed = {*TASKS["e_c"].answer.labels, TASKS["e_c"].answer.neutral}
    assert all(labels and set(labels) <= allowed for labels in e_c["labels"].to_pylist())
    reg = rows.filter(pc.is_in(rows["task"], pa.array(["v_reg", "ei_reg"])))
    assert all(0 <= s <= 1 for s in reg["score"].to_pylist())

    evaluation = tmp_path / "eval"
    code = cli.main(["evaluate", "--output", str(evaluation), "--tasks", "v_reg,e_c",
                     "--limit", "20", "--model", str(model), *ENGINE])
    assert code == 0, capsys.readouterr().err[-3000:]
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert metrics["summary"] == {"n": 40, "parse_rate": 1.0}
    assert (evaluation / "report.md").is_file()
    assert (evaluation / "chart.png").read_bytes().startswith(b"\x89PNG")


def test_identity_separates_checkpoints_not_folder_names(texts, ray_local, tmp_path, capsys):
    """Two different checkpoints in folders of the same name share no answers; a renamed copy
    of one reuses everything the table holds for it."""
    first = build_tiny_model(tmp_path / "a" / "ckpt", seed=0)
    other = build_tiny_model(tmp_path / "b" / "ckpt", seed=1)
    renamed = tmp_path / "c" / "renamed"
    shutil.copytree(first, renamed)
    ids = [resolve_model(str(p)).identity for p in (first, other, renamed)]
    assert ids[0].startswith("ckpt@") and ids[1].startswith("ckpt@") and ids[0] != ids[1]
    assert ids[2] == "renamed@" + ids[0].split("@")[1]
    out = tmp_path / "affect"

    def annotate(model):
        assert cli.main(["annotate", "--input", str(texts), "--output", str(out), "--tasks",
                         "v_reg", "--model", str(model), *ENGINE, "--json"]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    assert annotate(first)["prompts_sent"] == N_TEXTS
    second = annotate(other)
    assert (second["already_held"], second["prompts_sent"]) == (0, N_TEXTS)
    third = annotate(renamed)
    assert (third["already_held"], third["prompts_sent"], third["rows_out"]) == (N_TEXTS, 0, 0)
    models = table.AnnotationTable(str(out)).read(["model"])["model"].to_pylist()
    assert sorted(set(models)) == sorted(ids[:2]) and len(models) == 2 * N_TEXTS


def test_checkpoints_no_engine_serves_are_refused_before_ray(tmp_path, texts, capsys):
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps({"architectures": ["FooForSequenceMagic"]}))
    pegasus = tmp_path / "pegasus"
    pegasus.mkdir()
    (pegasus / "config.json").write_text(json.dumps(
        {"architectures": ["PegasusForConditionalGeneration"], "is_encoder_decoder": True}))
    empty = tmp_path / "empty"
    empty.mkdir()
    served = ("BartForConditionalGeneration, BloomForCausalLM, LlamaForCausalLM, "
              "OPTForCausalLM, T5ForConditionalGeneration (the EmoLLMs: Emollama-7b,")
    for folder, first in [
            (odd, f"emoray: model folder {odd} holds a FooForSequenceMagic, which no emoray "
                  f"engine serves; use a checkpoint of {served}"),
            (pegasus, f"emoray: model folder {pegasus} holds a PegasusForConditionalGeneration, "
                      f"which no emoray engine serves; use a checkpoint of {served}"),
            (empty, f"emoray: model folder {empty} has no config.json: not a checkpoint")]:
        code = cli.main(["annotate", "--input", str(texts), "--output", str(tmp_path / "o"),
                         "--model", str(folder)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == cli.EXIT_CONFIG and len(err) == 1 and err[0].startswith(first)
