"""The object-store clients emoray uses, made in one place from one `S3Config`, so every S3 call
shares its endpoint, region and retry budget; credentials always come from the standard AWS
chain, never from here.

- `filesystem`: pyarrow's S3FileSystem (input discovery and reads, reports, quarantine), with
  the AWS SDK's standard retry strategy (backoff on throttling and transient errors);
- `client`: botocore's S3 client (the table lease's conditional writes), standard retry mode;
- `delta_options`: the storage options every delta-rs based reader and writer takes (deltalake,
  Polars, Ray Data): endpoint and region, plus deltalake's retry budget for emoray's own
  commits and reads;
- `commit_retrying`: emoray's own retry of the one call no client retries safely, a Delta
  commit (see there).

`RETRIES` counts, per process, the retries that can be counted: botocore's (each reply says how
many attempts it took) and emoray's commit retries. pyarrow's and delta-rs's own retries happen
inside the AWS C++ SDK and the Rust object_store crate, which expose no count.
"""

from __future__ import annotations

from collections import Counter

import pyarrow.fs as pafs

from emoray.config import S3Config


def filesystem(s3: S3Config) -> pafs.S3FileSystem:
    endpoint = s3.endpoint()
    kwargs: dict = {"region": s3.resolved_region() or "us-east-1",
                    "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=s3.max_attempts)}
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
    return pafs.S3FileSystem(**kwargs)


RETRIES: Counter = Counter()
"""Retries made in this process so far, by what was retried: `s3 request` (botocore),
`delta commit` (`commit_retrying`)."""


def _count_retries(parsed: dict, **_) -> None:
    RETRIES["s3 request"] += parsed.get("ResponseMetadata", {}).get("RetryAttempts", 0)


def client(s3: S3Config):
    import boto3
    from botocore.config import Config

    made = boto3.client(
        "s3", endpoint_url=s3.endpoint(), region_name=s3.resolved_region(),
        config=Config(retries={"max_attempts": s3.max_attempts, "mode": "standard"}))
    made.meta.events.register("after-call.s3", _count_retries)
    return made


def commit_retrying(s3: S3Config):
    """A `tenacity.Retrying` for a Delta commit (or create), counted in `RETRIES`.

    object_store does not resend a commit whose connection failed: the commit is a conditional
    PUT (`If-None-Match`) that may have landed, and resending one that landed would be refused
    as a conflict. The caller makes each attempt safe to repeat instead (a chunk's commit
    carries its (run, chunk) app transaction, checked before each retry). Retries deltalake's
    object-store errors (`OSError`), not conflicts, with jittered exponential backoff, up to
    `S3Config.max_attempts` attempts."""
    from tenacity import (
        Retrying,
        retry_if_exception_type,
        stop_after_attempt,
        wait_exponential,
        wait_random,
    )

    return Retrying(retry=retry_if_exception_type(OSError),
                    stop=stop_after_attempt(s3.max_attempts),
                    wait=wait_exponential(multiplier=0.2, max=10) + wait_random(0, 0.2),
                    before_sleep=lambda _: RETRIES.update(["delta commit"]), reraise=True)


def delta_options(uri: str, s3: S3Config, retries: bool = True) -> dict[str, str]:
    """Where `uri` is: the endpoint and region of `S3Config`, in the option names every
    delta-rs based reader takes ({} for a local path); with `retries`, deltalake's own retry
    budget (`max_retries` from `S3Config.max_attempts`, a 180 s `retry_timeout`), keys the
    options shown to other readers leave out."""
    if not uri.startswith("s3://"):
        return {}
    opts = {}
    endpoint = s3.endpoint()
    if endpoint:
        opts["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            opts["AWS_ALLOW_HTTP"] = "true"
    region = s3.resolved_region()
    if region:
        opts["AWS_REGION"] = region
    if retries:
        opts.update(max_retries=str(s3.max_attempts - 1), retry_timeout="180s")
    return opts
