"""A real S3 protocol endpoint on 127.0.0.1 (moto's server mode) for the demo and the tests.

It is reached through the same client code that talks to AWS: the endpoint goes into
AWS_ENDPOINT_URL, which boto3 reads and `emoray.lake.s3clients.filesystem` passes to pyarrow.

The server runs in a child process, not a thread of this one: several deltalake calls
(`history`, `is_deltatable`, …) block on S3 while holding Python's GIL, so a server thread in
the same process could never answer them and the call would hang until its retries ran out.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

LOCAL_ENV = {
    # moto takes any keys; these are distinctive so tests can prove none is ever printed,
    # logged or written (tests/test_security.py)
    "AWS_ACCESS_KEY_ID": "AKIAEMORAYLOCAL0TEST",
    "AWS_SECRET_ACCESS_KEY": "emoray/local+secret/Not-A-Real-Key-7f3e9",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _serve(conn) -> None:
    """The child process: serve until told to stop (or until the parent is gone)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    conn.send(server.get_host_and_port())
    try:
        conn.recv()
    except EOFError:
        pass
    server.stop()


@contextmanager
def local_s3(*buckets: str) -> Iterator[str]:
    """Start the endpoint, point the AWS environment of this process (and of Ray workers started
    after it) at it, create `buckets`, and yield its URL."""
    import multiprocessing

    import boto3

    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    server = ctx.Process(target=_serve, args=(theirs,), daemon=True, name="emoray-local-s3")
    server.start()
    host, port = ours.recv()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in [*LOCAL_ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(LOCAL_ENV, AWS_ENDPOINT_URL=endpoint)
    try:
        client = boto3.client("s3")
        for bucket in buckets:
            client.create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        ours.send("stop")
        server.join(10)
        if server.is_alive():
            server.kill()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
