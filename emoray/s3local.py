"""A real S3 protocol endpoint on 127.0.0.1 (moto's server mode) for the demo and the tests.

It is reached through the same client code that talks to AWS: the endpoint goes into
AWS_ENDPOINT_URL, which boto3 reads and `emoray.io.s3_filesystem` passes to pyarrow.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

LOCAL_ENV = {
    "AWS_ACCESS_KEY_ID": "emoray-local",
    "AWS_SECRET_ACCESS_KEY": "emoray-local",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextmanager
def local_s3(*buckets: str) -> Iterator[str]:
    """Start the endpoint, point the AWS environment of this process (and of Ray workers started
    after it) at it, create `buckets`, and yield its URL."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in [*LOCAL_ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(LOCAL_ENV, AWS_ENDPOINT_URL=endpoint)
    try:
        client = boto3.client("s3")
        for bucket in buckets:
            client.create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
