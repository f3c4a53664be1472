"""One writer per table: a second run of the same night is refused before any engine starts;
a dead holder's lease is taken over; a run that lost its lease stops."""

import json
import os
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emoray import cli
from emoray.config import AnnotateConfig, EngineConfig, S3Config
from emoray.lake.lock import LOCK, LockedError, TableLock
from emoray.pipeline import build_annotator


@pytest.fixture(params=["local", "s3"])
def table_uri(request, tmp_path, s3_endpoint):
    if request.param == "local":
        return str(tmp_path / "table")
    return f"s3://emoray-test/lock-{time.time_ns()}"


def test_second_lease_refused_then_released(table_uri):
    with TableLock(table_uri, S3Config(), "night-a", ttl_s=900):
        with pytest.raises(LockedError, match=r"being written by run night-a .*wait for it"):
            TableLock(table_uri, S3Config(), "night-b", ttl_s=900).acquire()
    with TableLock(table_uri, S3Config(), "night-b", ttl_s=900) as lease:
        assert lease.etag


def test_stale_lease_taken_over_and_old_holder_stops(table_uri):
    old = TableLock(table_uri, S3Config(), "slow", ttl_s=0.5)
    old.acquire()
    time.sleep(0.6)
    new = TableLock(table_uri, S3Config(), "fresh", ttl_s=0.5)
    new.acquire()
    with pytest.raises(LockedError, match="lease lost to another run"):
        old.renew()
    new.release()


def test_a_timer_renews_the_lease_while_the_run_is_busy(table_uri):
    with TableLock(table_uri, S3Config(), "busy", ttl_s=0.8) as lease:
        first = lease.etag
        time.sleep(1.5)  # no batch, no renew() call: only the timer keeps the lease
        with pytest.raises(LockedError, match="being written by run busy"):
            TableLock(table_uri, S3Config(), "other", ttl_s=0.8).acquire()
        assert lease.etag != first
        lease.check()


def test_takeover_of_a_stale_local_lease_has_one_winner(tmp_path):
    uri = str(tmp_path / "table")
    TableLock(uri, S3Config(), "dead", ttl_s=0.2).acquire()
    time.sleep(0.3)
    takers = [TableLock(uri, S3Config(), f"taker-{i}", ttl_s=60) for i in range(8)]
    outcomes = []

    def take(lock):
        try:
            lock.acquire()
            outcomes.append(lock.run_id)
        except LockedError:
            outcomes.append("refused")

    threads = [threading.Thread(target=take, args=(t,)) for t in takers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in outcomes if o != "refused"]
    assert len(winners) == 1 and outcomes.count("refused") == 7
    with open(os.path.join(uri, LOCK)) as f:
        assert json.load(f)["run_id"] == winners[0]


def test_dead_process_on_this_host_releases_lease(tmp_path):
    uri = str(tmp_path / "table")
    os.makedirs(uri)
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    dead = {"run_id": "crashed", "host": os.uname().nodename, "pid": pid,
            "heartbeat": time.time(), "heartbeat_utc": "now"}
    with open(os.path.join(uri, LOCK), "w") as f:
        json.dump(dead, f)
    with TableLock(uri, S3Config(), "next", ttl_s=900):
        with open(os.path.join(uri, LOCK)) as f:
            assert json.load(f)["run_id"] == "next"


def test_locked_table_refuses_run_before_engine(tmp_path, tiny_model, capsys):
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.table({"id": ["a"], "text": ["x"]}), src / "a.parquet")
    out = str(tmp_path / "out")
    with TableLock(out, S3Config(), "holder", ttl_s=900):
        config = AnnotateConfig(input=str(src), output=out,
                                engine=EngineConfig(model=str(tiny_model)))
        with pytest.raises(LockedError, match="being written by run holder"):
            build_annotator(config).run()
        code = cli.main(["annotate", "--input", str(src), "--output", out,
                         "--model", str(tiny_model)])
        assert code == cli.EXIT_LOCKED
        assert "being written by run holder" in capsys.readouterr().err
