"""Shared real parts for the suite: one S3 endpoint on 127.0.0.1, one local Ray instance, one
tiny model. Engines start inside the pipeline runs that need them and stay warm for the next
night that asks for the same engine (`warm_engines`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Every vLLM engine of the suite (in this process, in Ray's workers and in the subprocesses
# the tests start, which inherit it) runs its engine core in the process that builds it, as
# `engine.in_process` does: each start is about 15 s shorter. vLLM's default (a child process,
# what GPU profiles run) is tested by test_engine.py's in_process test.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
ENGINE_SETTINGS = {"device": "cpu", "gpu_memory_utilization": 0.1, "max_model_len": 1024}
"""The engine settings of every night the suite runs on the tiny model: one engine, so a night
finds the one the night before it kept warm (`warm_engines`); 1 024 positions hold the AEB
prompts evaluate and calibrate send."""
ENGINE_FLAGS = [arg for name, value in ENGINE_SETTINGS.items()
                for arg in (f"--{name.replace('_', '-')}", str(value))]
"""`ENGINE_SETTINGS` as `emoray annotate` flags."""
AEB_DIR = Path(os.environ.get("EMORAY_AEB_DIR", REPO / "emoray" / "data" / "aeb"))


FAST = {"test_table.py", "test_lock.py", "test_tasks.py", "test_metrics.py", "test_config.py",
        "test_cluster_config.py", "test_progress.py", "test_calibration.py", "test_cost.py",
        "test_imports.py", "test_stages.py", "test_routing.py", "test_contract.py",
        "test_labels.py", "test_flaky_store.py", "test_footprint.py", "test_partitions.py"}
"""The modules of the fast tier (`make test-fast`): table in, table out, with no Ray and no
engine started; what you run while changing code."""


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.name in FAST:
            item.add_marker(pytest.mark.fast)


@pytest.fixture(scope="session")
def aeb_dir() -> Path:
    if not AEB_DIR.is_dir():
        pytest.fail(f"AEB data not found at {AEB_DIR}; set EMORAY_AEB_DIR")
    return AEB_DIR


@pytest.fixture
def text_folder(tmp_path) -> Path:
    """A folder `texts/` holding one Parquet file, `good.parquet`, of two short texts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "texts"
    folder.mkdir()
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["so happy", "so sad"]}),
                   folder / "good.parquet")
    return folder


@pytest.fixture(scope="session", autouse=True)
def warm_engines():
    """Every night of the suite that asks for the engine the night before it used runs on that
    engine's actors (`engines.pool.keep_warm`, as a gated night's canary and night do): a model
    load is a fixed ~15 s each test would pay, and only the tests about engine starts need a
    cold one (`cold_engine`). Ends after Ray has (the actors are gone with it)."""
    from emoray.engines.pool import keep_warm

    with keep_warm():
        yield


@pytest.fixture
def cold_engine():
    """The test's first night loads its model (`engines.pool.release`): the starts are its point."""
    from emoray.engines.pool import release

    release()


@pytest.fixture(scope="session")
def s3_endpoint():
    from emoray.tools.local_s3 import local_s3

    with local_s3("emoray-test") as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def ray_local(s3_endpoint):
    """Local Ray, started after the S3 environment is set so its workers inherit it, the way
    every command starts it (`runtime.start_ray`); always a new instance (`local`), never one
    another process on the machine left running. Subprocesses the tests start get
    RAY_ADDRESS=local for the same reason."""
    import ray

    from emoray.runtime import start_ray

    start_ray(address="local", include_dashboard=False, num_cpus=2,
              runtime_env={"env_vars": {"VLLM_LOGGING_LEVEL": "WARNING",
                                        # vLLM's sampler compiles its logprob gather with torch
                                        # (2.3 s per engine start here); the engines of the
                                        # suite's nights run it eagerly, test_engine's compiled
                                        "TORCHDYNAMO_DISABLE": "1"}})
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def spark():
    """One local Spark session for the suite."""
    from emoray.enrich.spark_join import EnrichConfig, spark_session

    session = spark_session(EnrichConfig(annotations="-", downstream="-", output="-",
                                         master="local[2]",
                                         spark_conf={"spark.ui.enabled": "false",
                                                     "spark.sql.shuffle.partitions": "4"}))
    yield session
    session.stop()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from emoray.tools.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))
