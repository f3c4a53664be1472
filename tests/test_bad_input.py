"""Bad input fails with a message naming the thing, before any engine starts; per-row problems
become statuses (see test_annotate_s3 for those that need the engine)."""

import json
from datetime import datetime, timezone

import pyarrow as pa
import pytest

from emoray import cli, stages
from emoray.config import AnnotateConfig, ConfigError, EngineConfig, load_config
from emoray.lake.locations import InputError
from emoray.models import resolve_model
from emoray.pipeline import build_annotator
from emoray.lake.table import SCHEMA


def config(tiny_model, **kw):
    kw.setdefault("output", "/tmp/emoray-never-written")
    return AnnotateConfig(engine=EngineConfig(model=str(tiny_model)), **kw)


def test_missing_input_path(tmp_path, tiny_model):
    with pytest.raises(InputError, match=r"input .*/nope does not exist \(no file, folder or prefix there\): check the path"):
        build_annotator(config(tiny_model, input=str(tmp_path / "nope")))


def test_missing_s3_prefix(s3_endpoint, tiny_model):
    with pytest.raises(InputError, match=r"input s3://emoray-test/absent/ does not exist"):
        build_annotator(config(tiny_model, input="s3://emoray-test/absent/"))


def test_missing_output_bucket_is_named_with_the_input_checks(s3_endpoint, text_folder,
                                                              tiny_model, capsys):
    with pytest.raises(ConfigError, match="output bucket 'emoray-no-such-bucket'"):
        build_annotator(config(tiny_model, input=str(text_folder),
                               output="s3://emoray-no-such-bucket/affect"))
    code = cli.main(["annotate", "--input", str(text_folder), "--output",
                     "s3://emoray-no-such-bucket/affect", "--model", "Emollama-7b"])
    assert code == cli.EXIT_CONFIG
    assert capsys.readouterr().err.strip().splitlines() == [
        "emoray: output bucket 'emoray-no-such-bucket' (of s3://emoray-no-such-bucket/affect) "
        "does not exist: create it (e.g. `aws s3 mb s3://emoray-no-such-bucket`) or correct "
        "--output"]


def test_folder_without_data_files(tmp_path, tiny_model):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="holds no .parquet, .jsonl or .csv files"):
        build_annotator(config(tiny_model, input=str(tmp_path)))


@pytest.mark.parametrize("column,flag", [("id_column", "--id-column"),
                                         ("text_column", "--text-column")])
def test_missing_column_names_file_column_and_flag(text_folder, tiny_model, column, flag):
    (text_folder / "z.jsonl").write_text(json.dumps({"id": "c", "text": "z"}) + "\n")
    with pytest.raises(InputError) as e:
        build_annotator(config(tiny_model, input=str(text_folder), **{column: "body"}))
    msg = str(e.value)
    assert "good.parquet has no" in msg and "'body'" in msg and "columns: id, text" in msg
    assert flag in msg


def test_missing_column_in_one_csv_among_good_files(text_folder, tiny_model):
    (text_folder / "bad.csv").write_text("id,content\n1,hello\n")
    with pytest.raises(InputError, match=r"bad\.csv has no text column 'text' \(columns: id, content\)"):
        build_annotator(config(tiny_model, input=str(text_folder)))


def test_unreadable_file_is_named(text_folder, tiny_model):
    (text_folder / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InputError, match=r"cannot read parquet file .*broken\.parquet: "):
        build_annotator(config(tiny_model, input=str(text_folder)))


def test_unknown_task(text_folder, tiny_model):
    with pytest.raises(ValueError, match="unknown task 'joy': pick from ei_reg"):
        build_annotator(config(tiny_model, input=str(text_folder), tasks=["v_reg", "joy"]))


def test_unknown_model(text_folder):
    with pytest.raises(ValueError, match=r"unknown model 'Emollama-70b': give an EmoLLMs name "
                                         r"\(Emollama-7b, Emollama-chat-7b"):
        build_annotator(AnnotateConfig(input=str(text_folder), output="/tmp/x",
                                       engine=EngineConfig(model="Emollama-70b")))


@pytest.mark.parametrize("name", ["Emot5-large", "lzw1008/Emobart-large"])
def test_encoder_decoder_models_go_to_the_transformers_engine(name):
    spec = resolve_model(name)
    assert (spec.engine, spec.decoder_only) == ("transformers", False)
    assert spec.encoder_limit == {"T5": 512, "Bart": 1024}[spec.architecture[:-len(
        "ForConditionalGeneration")]]


def test_cli_exit_codes_and_messages(text_folder, tmp_path, capsys):
    code = cli.main(["annotate", "--input", str(tmp_path / "nope"), "--output", str(tmp_path),
                     "--model", "Emollama-7b"])
    assert code == cli.EXIT_INPUT
    assert "does not exist" in capsys.readouterr().err
    code = cli.main(["annotate", "--input", str(text_folder), "--output", str(tmp_path),
                     "--model", "Emollama-70b"])
    assert code == cli.EXIT_CONFIG
    assert "unknown model 'Emollama-70b'" in capsys.readouterr().err
    code = cli.main(["annotate", "--input", str(text_folder), "--output", str(tmp_path),
                     "--batch-size", "0"])
    assert code == cli.EXIT_CONFIG
    assert "batch_size: Input should be greater than or equal to 1" in capsys.readouterr().err


def test_config_rejects_unknown_keys_by_name(tmp_path):
    profile = tmp_path / "p.yaml"
    profile.write_text("input: a\noutput: b\nengine:\n  modle: x\n")
    with pytest.raises(ConfigError, match=r"engine\.modle: unknown key; did you mean 'model'\?"):
        load_config(profile)
    with pytest.raises(ConfigError, match=r"missing required setting\(s\): output \(flag "
                       r"--output or profile key output\)"):
        load_config(None, {"input": "a"}).require("input", "output")


def _answered(raw, error=None, text_status="ok", truncated=False, finish="stop", task="v_reg"):
    return pa.table({
        "doc_ids": pa.array([["d1", "d2"]], pa.list_(pa.string())),
        "text_sha256": ["h"], "task": [task], "target": pa.array([None], pa.string()),
        "prompt_version": ["v"], "raw_output": pa.array([raw], pa.string()),
        "confidence": pa.array([0.5], pa.float64()),
        "expected_score": pa.array([None], pa.float64()), "truncated": [truncated],
        "error": pa.array([error], pa.string()), "finish_reason": pa.array([finish], pa.string()),
        "text_status": [text_status],
    })


def test_unparseable_answer_keeps_raw_output_with_parse_error():
    out = stages.parse(_answered("very happy", finish="length"), "m", "r")
    assert out.schema == SCHEMA
    rows = out.to_pylist()
    assert [r["doc_id"] for r in rows] == ["d1", "d2"]
    assert {r["status"] for r in rows} == {"parse_error"}
    assert rows[0]["raw_output"] == "very happy" and rows[0]["score"] is None
    assert rows[0]["error"] == "no number in 'very happy' (answer hit max_tokens)"


def test_engine_error_becomes_failed_rows():
    rows = stages.parse(_answered(None, error="ValueError: prompt too long"), "m", "r").to_pylist()
    assert [(r["status"], r["error"]) for r in rows] == [("failed", "ValueError: prompt too long")] * 2
    assert rows[0]["annotated_at"] <= datetime.now(timezone.utc)


def test_stage_names_missing_columns():
    with pytest.raises(ValueError, match=r"stage Parse needs columns \['doc_ids'"):
        stages.PARSE(_answered("0.5").drop_columns(["doc_ids"]), "m", "r")
