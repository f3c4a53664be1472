"""The object-store clients emoray uses, made in one place from one `S3Config`, so every S3 call
shares its endpoint, region and retry budget; credentials always come from the standard AWS
chain, never from here.

- `filesystem`: pyarrow's S3FileSystem (input discovery and reads, reports, quarantine), with
  the AWS SDK's standard retry strategy (backoff on throttling and transient errors);
- `client`: botocore's S3 client (the table lease's conditional writes), standard retry mode;
- `delta_options`: the storage options every delta-rs based reader and writer takes (deltalake,
  Polars, Ray Data): endpoint and region, plus deltalake's retry budget for emoray's own
  commits and reads.
"""

from __future__ import annotations

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


def client(s3: S3Config):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=s3.endpoint(), region_name=s3.resolved_region(),
        config=Config(retries={"max_attempts": s3.max_attempts, "mode": "standard"}))


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
