"""`ray job submit` against a real Ray head (`ray start --head` on 127.0.0.1 with the dashboard's
job server): the annotate job on the tiny model against S3 on 127.0.0.1, polled to SUCCEEDED."""

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emoray.lake import locations, table
from emoray.config import S3Config
from tests.conftest import REPO

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(s3_endpoint, tmp_path_factory):
    """A separate Ray cluster, started like a cluster's head node with token authentication
    (Ray's default for local clusters since 2.59); stopped afterwards."""
    temp = tmp_path_factory.mktemp("ray-head")
    dashboard = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update({"PATH": f"{BIN}:{os.environ['PATH']}", "RAY_TMPDIR": str(temp),
                "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)})
    # --block keeps `ray start` in the foreground, so the head's processes share its session
    # and stop with it; `ray stop` would also kill the suite's own Ray instance.
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         f"--port={free_port()}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard}", "--num-cpus=2", f"--temp-dir={temp}",
         "--disable-usage-stats",
         # every port of its own: the suite's Ray instance holds the default ones
         *(f"--{name}={free_port()}" for name in (
             "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
             "runtime-env-agent-port", "ray-client-server-port", "node-manager-port",
             "object-manager-port"))],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 300
        while subprocess.run([str(BIN / "ray"), "job", "list", "--address", address], env=env,
                             capture_output=True, timeout=120).returncode != 0:
            assert head.poll() is None, head.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "Ray head's job server did not come up"
            time.sleep(2)
        yield address, env
    finally:  # its own session and temp dir: nothing of the suite's Ray goes with it
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=5)  # `ray start --block` then stops each process in turn (~30 s)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)


def ray_job(env, address, *args) -> str:
    done = subprocess.run([str(BIN / "ray"), "job", *args, "--address", address], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def test_annotate_job_submitted_to_a_ray_head_succeeds(ray_head, tiny_model):
    address, env = ray_head
    fs, root = locations.filesystem_for("s3://emoray-test/job-submit/in/", S3Config())
    fs.create_dir(root, recursive=True)
    with fs.open_output_stream(f"{root}/texts.parquet") as f:
        pq.write_table(pa.table({"id": [f"t{i}" for i in range(25)],
                                 "text": [f"night text number {i}" for i in range(25)]}), f)
    command = [str(BIN / "ray"), "job", "submit", "--address", address, "--no-wait",
               "--submission-id", "emoray-annotate-1", "--working-dir", str(REPO), "--",
               "python", "jobs/annotate.py", "--config", "conf/local.yaml",
               "--input", "s3://emoray-test/job-submit/in/", "--output",
               "s3://emoray-test/job-submit/out/", "--tasks", "v_reg,ei_oc:joy",
               "--model", str(tiny_model), "--run-id", "job-night-1"]
    deadline = time.monotonic() + 300
    # the job server answers before the head's agent is ready to take jobs
    while "No available agent" in (submit := subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=300)).stderr:
        assert time.monotonic() < deadline, submit.stderr[-3000:]
        time.sleep(3)
    assert submit.returncode == 0, submit.stderr[-3000:]
    deadline = time.monotonic() + 900
    while not any(f"job 'emoray-annotate-1' {s}" in
                  (status := ray_job(env, address, "status", "emoray-annotate-1").lower())
                  for s in ("succeeded", "failed", "stopped")):
        assert time.monotonic() < deadline, "job did not finish in 15 minutes"
        time.sleep(3)
    logs = ray_job(env, address, "logs", "emoray-annotate-1")
    assert "job 'emoray-annotate-1' succeeded" in status, status + logs[-3000:]
    assert "run job-night-1 committed to s3://emoray-test/job-submit/out/" in logs
    rows = table.AnnotationTable("s3://emoray-test/job-submit/out/").read()
    assert rows.num_rows == 25 * 2
    assert set(rows["run_id"].to_pylist()) == {"job-night-1"}
    assert sorted(set(rows["task"].to_pylist())) == ["ei_oc", "v_reg"]
