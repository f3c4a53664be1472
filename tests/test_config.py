"""Typed configuration: the profiles in conf/ load, environment variables and flags override in
that order, and every error names its key (and where the value came from)."""

import pytest

from emoray.config import AnnotateConfig, ConfigError, EngineConfig, load_config
from tests.conftest import REPO


def test_profiles_load():
    local = load_config(REPO / "conf" / "local.yaml", environ={})
    cluster = load_config(REPO / "conf" / "cluster.yaml", environ={})
    assert isinstance(local, AnnotateConfig) and local.engine.device == "cpu"
    assert cluster.engine.device == "gpu" and cluster.engine.model == "Emollama-chat-7b"


def test_environment_overrides_profile_and_flags_override_environment():
    env = {"EMORAY_CONCURRENCY": "8", "EMORAY_ENGINE__MODEL": "Emollama-chat-13b",
           "EMORAY_TASKS": "[v_reg, e_c]", "EMORAY_GATE__ENABLED": "false",
           "EMORAY_AEB_DIR": "/not/a/setting", "PATH": "/bin"}
    config = load_config(REPO / "conf" / "cluster.yaml", {"concurrency": 3}, environ=env)
    assert config.concurrency == 3
    assert config.engine.model == "Emollama-chat-13b" and config.tasks == ["v_reg", "e_c"]
    assert config.gate.enabled is False
    assert config.engine.device == "gpu"


@pytest.mark.parametrize("profile,env,message", [
    ("concurency: 3\n", {}, r"concurency: unknown key; did you mean 'concurrency'\?"),
    ("engine: {modle: x}\n", {}, r"engine\.modle: unknown key; did you mean 'model'\?"),
    ("", {"EMORAY_CONCURENCY": "3"},
     r"environment variable EMORAY_CONCURENCY names no setting \('concurency'\)"),
    ("", {"EMORAY_ENGINE__MODLE": "x"},
     r"environment variable EMORAY_ENGINE__MODLE names no setting \('engine\.modle'\)"),
    ("concurrency: many\n", {}, r"concurrency: Input should be a valid integer"),
    ("", {"EMORAY_BATCH_SIZE": "big"}, r"batch_size: Input should be a valid integer.*"
     r"\(from environment variable EMORAY_BATCH_SIZE\)"),
    ("engine: {gpu_memory_utilization: 2}\n", {},
     r"engine\.gpu_memory_utilization: Input should be less than or equal to 1"),
    ("gate: {thresholds: {v_reg: {pearson: high}}}\n", {},
     r"gate\.thresholds\.v_reg\.pearson: Input should be a valid number"),
])
def test_config_errors_name_the_key(tmp_path, profile, env, message):
    path = tmp_path / "p.yaml"
    path.write_text(profile)
    with pytest.raises(ConfigError, match=message):
        load_config(path, environ=env)


def test_missing_required_settings_are_named(tmp_path, capsys):
    from emoray import cli
    from emoray.enrich.spark_join import EnrichConfig

    assert cli.main(["annotate", "--tasks", "v_reg"]) == cli.EXIT_CONFIG
    assert "missing required setting(s): input (flag --input or profile key input), output" \
        in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"downstream: Field required"):
        load_config(None, {"output": "x"}, model=EnrichConfig)


def test_the_cascade_flag_is_the_profile_list_with_thresholds_from_calibration():
    from emoray.cli import cascade_steps

    steps = cascade_steps("Emot5-large@s3://lake/cal/t5.json, Emollama-chat-13b")
    assert steps == [{"model": "Emot5-large", "calibration": "s3://lake/cal/t5.json",
                      "accept": "calibration"}, {"model": "Emollama-chat-13b"}]
    config = AnnotateConfig(cascade=steps)
    assert config.cascade[0].accept == "calibration" and config.cascade[1].accept == {}
    assert cascade_steps(None) is None
    with pytest.raises(ConfigError, match=r"--cascade: Emot5-large is not the last model, so "
                       r"it needs its calibration file with thresholds: MODEL@CALIBRATION"):
        cascade_steps("Emot5-large,Emollama-chat-13b")


def test_cpu_engines_start_eager_in_process_on_32_token_blocks_unless_set():
    """The start-up settings left unset are decided by the device: a CPU engine eager, in the
    actor's process, on 32-token KV blocks; a GPU engine vLLM's defaults; a set one stands."""
    def decided(config, cpu):
        c = config.on_device(cpu)
        return c.enforce_eager, c.in_process, c.block_size

    assert decided(EngineConfig(), True) == (True, True, 32)
    assert decided(EngineConfig(), False) == (False, False, None)
    assert decided(EngineConfig(enforce_eager=False, block_size=16), True) == (False, True, 16)
    assert decided(EngineConfig(in_process=True), False) == (False, True, None)
