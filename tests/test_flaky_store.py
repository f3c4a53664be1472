"""A flaky object store between emoray and the S3 endpoint on 127.0.0.1 (`emoray.tools.flaky_s3`: 503
SlowDown, connection resets, stalls, lost replies on a seeded share of requests): reads, writes,
the lease and Delta commits ride it out through the retry settings of `emoray.lake.s3clients`;
nothing is lost and nothing lands twice. A whole run through the proxy on a multi-node cluster:
tests/test_bench.py (`emoray bench faults`)."""

import hashlib
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from emoray.lake import s3clients, table
from emoray.config import S3Config
from emoray.tools.flaky_s3 import Faults, _Draw, flaky_proxy
from emoray.lake.lock import TableLock

KEYS = ["doc_id", "task", "target", "model", "prompt_version"]


def test_draws_are_seeded_and_bounded():
    faults = Faults(slowdown=0.5, reset=0.3, stall=0.2, max_in_a_row=2, seed=3)
    first, again = _Draw(faults), _Draw(faults)
    drawn = [first() for _ in range(300)]
    assert drawn == [again() for _ in range(300)]
    assert {"slowdown", "reset", "stall"} <= set(drawn)
    assert all(None in drawn[i:i + 3] for i in range(len(drawn) - 2))  # never 3 faults in a row
    with pytest.raises(ValueError, match="add up to at most 1"):
        Faults(slowdown=0.6, reset=0.5)


def test_botocore_retries_each_failed_request_and_counts_it(s3_endpoint):
    """Every 503 and reset is one botocore retry (`s3clients.RETRIES`); every object arrives."""
    with flaky_proxy(s3_endpoint, Faults(slowdown=0.2, reset=0.1, stall=0.05, stall_s=0.5)) \
            as (url, tally):
        client = s3clients.client(S3Config(endpoint_url=url))
        before = s3clients.RETRIES["s3 request"]
        for i in range(10):
            client.put_object(Bucket="emoray-test", Key=f"flaky/boto/{i}",
                              Body=f"body {i}".encode())
        bodies = [client.get_object(Bucket="emoray-test", Key=f"flaky/boto/{i}")["Body"].read()
                  for i in range(10)]
        seen = tally()
    assert bodies == [f"body {i}".encode() for i in range(10)]
    assert seen["slowdown"] > 0 and seen["reset"] > 0 and seen["stall"] > 0
    assert s3clients.RETRIES["s3 request"] - before == seen["slowdown"] + seen["reset"]
    assert seen["requests"] == 20 + seen["slowdown"] + seen["reset"]


def test_the_lease_survives_lost_replies(s3_endpoint):
    """A lease write whose reply was lost took effect; botocore's retry is refused by the write's
    own condition, and the lease recognises its own body instead of reporting another run."""
    with flaky_proxy(s3_endpoint, Faults(slowdown=0, reset=0, stall=0, drop=0.5)) as (url, tally):
        s3 = S3Config(endpoint_url=url)
        lease = TableLock("s3://emoray-test/flaky/lease", s3, "lease-run", ttl_s=60)
        lease.acquire()
        for _ in range(8):
            lease.renew()
        lease.release()
        seen = tally()
    assert seen["drop"] > 0
    client = s3clients.client(S3Config())
    assert client.list_objects_v2(Bucket="emoray-test", Prefix="flaky/lease/")["KeyCount"] == 0


def _rows(n: int, chunk: int) -> pa.Table:
    return pa.Table.from_pylist(
        [{"doc_id": f"d{chunk}-{i}", "text_sha256": hashlib.sha256(b"t").hexdigest(),
          "task": "v_reg", "target": "", "status": "ok", "run_id": "flaky", "model": "m",
          "prompt_version": "p", "annotated_at": datetime(2026, 11, 30, tzinfo=timezone.utc)}
         for i in range(n)], schema=table.SCHEMA)


def test_delta_commits_ride_out_resets_and_lost_replies(s3_endpoint):
    """object_store does not resend a commit whose connection failed; emoray retries it, after
    checking the table for the (run, chunk) app transaction, so a commit whose reply was lost
    is not made twice: 3 chunks are exactly 3 commits."""
    out = "s3://emoray-test/flaky/commits"
    before = s3clients.RETRIES["delta commit"]
    with flaky_proxy(s3_endpoint, Faults(slowdown=0, reset=0.2, stall=0, drop=0.2)) \
            as (url, tally):
        writer = table.ChunkWriter(table.AnnotationTable(out, S3Config(endpoint_url=url)),
                                   "flaky", 10)
        for chunk in range(3):
            writer.write(_rows(10, chunk))
        writer.flush()
        seen = tally()
    assert seen["reset"] > 0 and seen["drop"] > 0
    assert s3clients.RETRIES["delta commit"] > before
    annotations = table.AnnotationTable(out)  # read straight from the endpoint
    held = annotations.read(["doc_id"])
    assert held.num_rows == 30 and len(pc.unique(held["doc_id"])) == 30
    assert [h["operation"] for h in annotations.history()] == ["WRITE"] * 3 + ["CREATE TABLE"]
    assert writer.rows == 30
