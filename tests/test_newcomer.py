"""A new user's first hour: each day-one mistake exits with its documented code and a first line
that says what to do, in seconds; an engine that cannot start says so in one paragraph; every
command's --help shows an example that parses."""

import shlex

import pytest

from emoray import cli
from emoray.lake import table

CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                        "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN",
                        "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                        "AWS_CONTAINER_CREDENTIALS_FULL_URI")


def run(argv, capsys, stdout: list | None = None) -> tuple[int, str]:
    """(exit code, first stderr line) of one command; its stdout goes to `stdout`. How fast a
    refusal comes is the benchmark's business, not a test's."""
    code = cli.main(argv)
    captured = capsys.readouterr()
    if stdout is not None:
        stdout.append(captured.out)
    err = captured.err.strip().splitlines()
    return code, err[0] if err else ""


def annotate(text_folder, tiny_model, *extra):
    return ["annotate", "--input", str(text_folder), "--output", str(text_folder.parent / "affect"),
            "--model", str(tiny_model), "--device", "cpu", *extra]


def test_misspelt_profile_key(tmp_path, text_folder, tiny_model, capsys):
    profile = tmp_path / "mine.yaml"
    profile.write_text("engine:\n  modle: x\nconcurency: 2\n")
    out = []
    code, first = run([*annotate(text_folder, tiny_model), "--config", str(profile)], capsys,
                         out)
    assert code == cli.EXIT_CONFIG == 2
    assert first == (f"emoray: invalid configuration in {profile}; fix the setting(s) below "
                     "(every key is described in emoray/config.py):")
    assert out == [""]  # no traceback, no summary


def test_misspelt_key_names_the_closest_valid_one():
    from emoray.config import ConfigError, load_config

    with pytest.raises(ConfigError) as e:
        load_config(None, {"engine.modle": "x", "concurency": 2})
    lines = sorted(str(e.value).splitlines()[1:])
    assert lines[0].startswith("  concurency: unknown key; did you mean 'concurrency'? valid "
                               "keys here: input, input_version, since_last, iceberg_catalog, "
                               "where, output, format,")
    assert lines[1].startswith("  engine.modle: unknown key; did you mean 'model'? valid keys "
                               "here: model, device, tensor_parallel_size,")


def test_s3_input_without_credentials(tmp_path, tiny_model, capsys, monkeypatch):
    for name in CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    code, first = run(["annotate", "--input", "s3://lake/texts/", "--output",
                          "s3://lake/affect/", "--model", str(tiny_model)], capsys)
    assert code == cli.EXIT_CONFIG
    assert first.startswith("emoray: no AWS credentials for s3://lake/texts/: give them to emoray "
                            "the standard AWS way, looked up in this order: AWS_ACCESS_KEY_ID "
                            "and AWS_SECRET_ACCESS_KEY")


def test_unknown_task(text_folder, tiny_model, capsys):
    code, first = run(annotate(text_folder, tiny_model, "--tasks", "v_reg,valence"), capsys)
    assert code == cli.EXIT_CONFIG
    assert first.startswith("emoray: unknown task 'valence': pick from ei_reg, ei_oc, v_reg, ")
    assert first.endswith("(`emoray tasks` describes each)")


def test_missing_input_and_empty_prefix(tmp_path, tiny_model, s3_endpoint, capsys):
    code, first = run(annotate(tmp_path / "nope", tiny_model), capsys)
    assert code == cli.EXIT_INPUT == 3
    assert first == (f"emoray: input {tmp_path / 'nope'} does not exist (no file, folder or "
                     "prefix there): check the path and bucket name")
    code, first = run(["annotate", "--input", "s3://emoray-test/nothing-here/", "--output",
                          "s3://emoray-test/affect-x/", "--model", str(tiny_model)], capsys)
    assert code == cli.EXIT_INPUT
    assert first.startswith("emoray: input s3://emoray-test/nothing-here/ does not exist")


def test_output_inside_the_input(text_folder, tiny_model, capsys):
    code, first = run(["annotate", "--input", str(text_folder), "--output",
                          str(text_folder / "affect"), "--model", str(tiny_model)], capsys)
    assert code == cli.EXIT_CONFIG
    assert first == (f"emoray: output {text_folder / 'affect'} lies inside input {text_folder}: "
                     "put the annotation table beside the input (e.g. s3://bucket/annotations/ "
                     "next to s3://bucket/texts/), or its files are read back as input next run")


def test_engine_that_cannot_fit_is_refused_before_it_starts(text_folder, tiny_model, capsys):
    code, first = run(annotate(text_folder, tiny_model, "--kv-cache-gib", "100000"), capsys)
    assert code == cli.EXIT_ENGINE == 7
    assert first.startswith(f"emoray: the CPU engine would not fit in memory: model "
                            f"{tiny_model.name} needs 0.0 GiB of weights plus 100000.0 GiB of KV cache")
    code, first = run(annotate(text_folder, tiny_model, "--max-model-len", "8192"), capsys)
    assert code == cli.EXIT_CONFIG
    assert first == (f"emoray: engine.max_model_len 8192 is longer than model {tiny_model.name} "
                     "was built for (4096 positions): set --max-model-len 4096 or less")


def test_engine_start_failure_is_one_paragraph(text_folder, tiny_model, ray_local, capsys):
    """A KV cache too small for one sequence passes the memory check and fails inside vLLM's
    engine start, on the engine actor: the driver says so in one paragraph, exit 7."""
    code = cli.main(annotate(text_folder, tiny_model, "--kv-cache-gib", "0.00001",
                             "--max-model-len", "512"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == cli.EXIT_ENGINE
    assert len([line for line in err if line.startswith("emoray: the ")]) == 1
    last = err[-1]
    assert last.startswith(f"emoray: the cpu engine for model {tiny_model} failed to start on ")
    assert last.endswith("Check the engine settings: --device, --max-model-len, "
                         "--gpu-memory-utilization (GPUs), --kv-cache-gib (CPUs), "
                         "--tensor-parallel-size; run again with --verbose to see the "
                         "engine's own log.")
    affect = table.AnnotationTable(str(text_folder.parent / "affect"))
    assert not affect.exists() or affect.read().num_rows == 0


@pytest.mark.parametrize("command", sorted(cli.EXAMPLES))
def test_every_help_shows_an_example_that_parses(command, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0
    help_text = capsys.readouterr().out
    assert "example" in help_text
    for line in cli.EXAMPLES[command]:
        assert f"  {line}" in help_text
        args = cli.parser().parse_args(shlex.split(line)[1:])
        assert args.command == command


def test_a_misspelt_aws_profile_is_a_configuration_error(tmp_path, tiny_model, capsys,
                                                          monkeypatch):
    for name in CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    code, first = run(["annotate", "--input", "s3://lake/texts/", "--output",
                      "s3://lake/affect/", "--model", str(tiny_model)], capsys)
    assert code == cli.EXIT_CONFIG
    assert first.startswith("emoray: AWS credentials for s3://lake/texts/ cannot be read: The "
                            "config profile (no-such-profile) could not be found.")


def test_weights_are_the_checkpoints_own_files(tmp_path):
    """A folder holding safetensors and a .bin copy plus optimizer state counts the
    safetensors only; a rope-scaled checkpoint's context is its positions times the factor."""
    import json

    from emoray.config import EngineConfig
    from emoray.engines.stage import check_fits
    from emoray.models import weight_files

    (tmp_path / "model.safetensors").write_bytes(b"x" * 10)
    (tmp_path / "pytorch_model.bin").write_bytes(b"x" * 10)
    (tmp_path / "optimizer.pt").write_bytes(b"x" * 20)
    assert [f.name for f in weight_files(str(tmp_path))] == ["model.safetensors"]
    (tmp_path / "model.safetensors").unlink()
    assert [f.name for f in weight_files(str(tmp_path))] == ["pytorch_model.bin"]
    (tmp_path / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "max_position_embeddings": 4096,
        "rope_scaling": {"type": "linear", "factor": 2.0}}))
    check_fits(EngineConfig(model=str(tmp_path), max_model_len=8192, device="gpu"))
