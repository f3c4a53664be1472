"""Security as tests: no credential value reaches what emoray prints, writes or logs; the
cluster's IAM policy grants the profile's prefixes and nothing else; the cluster exposes no Ray
port to the internet and hands Ray's authentication token to every node."""

import base64
import json
from pathlib import Path
from urllib.parse import quote, quote_plus

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import DeltaTable
import yaml

from emoray import cli
from emoray.lake import locations, table
from emoray.config import S3Config, load_config
from emoray.tools.local_s3 import LOCAL_ENV
from tests.conftest import REPO, ENGINE_FLAGS

RAW = (LOCAL_ENV["AWS_ACCESS_KEY_ID"], LOCAL_ENV["AWS_SECRET_ACCESS_KEY"])
SECRETS = tuple({form for s in RAW for form in (
    s, quote(s, safe=""), quote_plus(s), base64.b64encode(s.encode()).decode())})
"""Each credential value as written, URL-encoded (a query string, a signed URL, a log line of
a request) and base64-encoded (a basic-auth header)."""
RAY_PORTS = {6379, 8265, 10001, 8076, 8080, 52365}
"""GCS, dashboard and job server, Ray client, object manager, metrics, dashboard agent."""


def _strings(rows: pa.Table) -> str:
    return "\n".join(str(v) for c in rows.columns for v in c.to_pylist())


def test_no_credential_value_in_output_reports_commits_tables_or_logs(
        s3_endpoint, ray_local, tiny_model, tmp_path, capfd):
    """What this process and its children print at the file-descriptor level (the JVM's,
    Arrow's and Ray core's output too, which Python's own capture misses), every object the
    runs wrote, the tables' values and Ray's session logs."""
    import os

    import ray

    assert all(os.environ[k] == LOCAL_ENV[k] for k in ("AWS_ACCESS_KEY_ID",
                                                       "AWS_SECRET_ACCESS_KEY"))
    fs, root = locations.filesystem_for("s3://emoray-test/secrets", S3Config())
    with fs.open_output_stream(f"{root}/in/t.parquet") as out:
        pq.write_table(pa.table({"id": ["a", "b"], "text": ["so happy", "so sad"]}), out)
    engine = ["--model", str(tiny_model), *ENGINE_FLAGS,
              "--tasks", "v_reg,e_c"]
    # S3 in, S3 table out (deltalake, pyarrow and Ray Data all hold the credentials)
    assert cli.main(["annotate", "--input", f"s3://{root}/in/", "--output",
                     f"s3://{root}/affect", *engine, "--json"]) == 0
    # S3 in, a local table, then Spark joins it onto a downstream table (nightly)
    down = tmp_path / "orders"
    down.mkdir()
    pq.write_table(pa.table({"order": [1, 2], "doc": ["a", "b"]}), down / "o.parquet")
    profile = tmp_path / "night.yaml"
    profile.write_text(json.dumps({
        "input": f"s3://{root}/in/", "output": str(tmp_path / "affect"),
        "enrich": {"downstream": str(down), "output": str(tmp_path / "enriched"), "key": "doc",
                   "master": "local[2]"}}))
    assert cli.main(["nightly", "--config", str(profile), *engine]) == 0
    # a failing command's message
    assert cli.main(["annotate", "--input", f"s3://{root}/absent/", "--output",
                     f"s3://{root}/affect", *engine]) == cli.EXIT_INPUT
    printed = capfd.readouterr()
    seen = {"stdout": printed.out, "stderr": printed.err}
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
        if info.type == pafs.FileType.File and not info.path.endswith(".parquet"):
            with fs.open_input_stream(info.path) as f:
                seen[info.path] = f.read().decode("utf-8", "replace")
    seen["s3 table"] = _strings(table.AnnotationTable(f"s3://{root}/affect").read())
    for p in (tmp_path / "affect").rglob("*"):
        if p.is_file() and p.suffix != ".parquet":
            seen[str(p)] = p.read_text(errors="replace")
    seen["local table"] = _strings(table.AnnotationTable(str(tmp_path / "affect")).read())
    seen["enriched"] = _strings(DeltaTable(str(tmp_path / "enriched")).to_pyarrow_table())
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    for p in logs.rglob("*"):
        if p.is_file():
            seen[str(p)] = p.read_text(errors="replace")
    assert any("_delta_log" in k for k in seen) and any("_reports" in k for k in seen)
    assert len(seen) > 10
    leaks = [(where, s) for where, text in seen.items() for s in SECRETS if s in text]
    assert leaks == []


def _profile_locations():
    """(bucket, read prefixes, write prefixes) the cluster profile's nightly job touches."""
    cfg = load_config(REPO / "conf" / "cluster.yaml", environ={})

    def key(uri: str) -> tuple[str, str]:
        bucket, _, path = uri[len("s3://"):].partition("/")
        return bucket, path.split("{date}")[0]

    reads = [key(u) for u in (cfg.input, cfg.evaluate.data, cfg.enrich.downstream)]
    writes = [key(u) for u in (cfg.output, cfg.evaluate.output, cfg.enrich.output)]
    buckets = {b for b, _ in reads + writes}
    assert len(buckets) == 1
    return buckets.pop(), [p for _, p in reads], [p for _, p in writes]


def test_iam_policy_grants_the_profiles_prefixes_and_nothing_else():
    bucket, reads, writes = _profile_locations()
    policy = json.loads((REPO / "conf" / "iam-policy.json").read_text())
    granted: dict[str, set[str]] = {}
    listable: list[str] = []
    glue = [st for st in policy["Statement"] if st["Sid"] == "KeepTheEnrichedTablesGlueEntry"]
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow" and "NotAction" not in st and "NotResource" not in st
        actions = [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
        resources = [st["Resource"]] if isinstance(st["Resource"], str) else st["Resource"]
        assert all("*" not in a for a in actions)
        if st in glue:  # exactly what `emoray.lake.glue.register` calls, on the profile's entry
            entry = load_config(REPO / "conf" / "cluster.yaml", environ={}).enrich.glue_entry
            region = "arn:aws:glue:us-east-1:111122223333"
            assert sorted(actions) == ["glue:CreateTable", "glue:GetDatabase", "glue:GetTable",
                                       "glue:UpdateTable"]
            assert resources == [f"{region}:catalog", f"{region}:database/{entry.glue_database}",
                                 f"{region}:table/{entry.glue_database}/{entry.name}"]
            continue
        for a in actions:
            assert a in {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                         "s3:AbortMultipartUpload"}, a
            if a == "s3:ListBucket":
                assert resources == [f"arn:aws:s3:::{bucket}"]
                listable += st["Condition"]["StringLike"]["s3:prefix"]
                continue
            for r in resources:
                prefix = r.removeprefix(f"arn:aws:s3:::{bucket}/")
                assert prefix != r and prefix.endswith("/*") and prefix != "*", r
                granted.setdefault(a, set()).add(prefix[:-1])
    inside = lambda loc, grants: any(loc.startswith(g) for g in grants)  # noqa: E731
    # enough: every location the job reads or writes
    assert all(inside(p, granted["s3:GetObject"]) for p in reads + writes)
    for a in ("s3:PutObject", "s3:DeleteObject"):
        assert all(inside(p, granted[a]) for p in writes)
    assert all(inside(p, {lp[:-1] for lp in listable}) for p in reads + writes)
    # nothing more: each grant leads to a location; writes never reach an input
    for grants in [*granted.values(), {lp[:-1] for lp in listable}]:
        assert all(any(loc.startswith(g) for loc in reads + writes) for g in grants)
    for a in ("s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"):
        assert not any(r.startswith(g) or g.startswith(r)
                       for g in granted.get(a, ()) for r in reads)


def public_ray_ports(rules: list[dict]) -> set[int]:
    """The Ray ports that security-group ingress `rules` open to the whole internet."""
    opened: set[int] = set()
    for rule in rules:
        public = any(r.get("CidrIp") == "0.0.0.0/0" for r in rule.get("IpRanges", [])) or any(
            r.get("CidrIpv6") == "::/0" for r in rule.get("Ipv6Ranges", []))
        ports = set(range(rule.get("FromPort", 0), rule.get("ToPort", 65535) + 1))
        opened |= ports & RAY_PORTS if public else set()
    return opened


def test_cluster_opens_no_ray_port_to_the_internet_and_carries_the_auth_token():
    cluster = yaml.safe_load((REPO / "cluster.yaml").read_text())
    rules = cluster["provider"].get("security_group", {}).get("IpPermissions", [])
    assert public_ray_ports(rules) == set()
    # the check sees an open port where there is one (it is not vacuous for an empty list)
    assert public_ray_ports([{"FromPort": 8000, "ToPort": 8300,
                              "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]) == {8076, 8080, 8265}
    assert public_ray_ports([{"FromPort": 6379, "ToPort": 6379,
                              "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}]) == set()
    head = cluster["head_start_ray_commands"]
    assert any("--dashboard-host=127.0.0.1" in c for c in head)
    for commands in (head, cluster["worker_start_ray_commands"]):
        starts = [c for c in commands if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token" in c for c in starts)
    assert cluster["file_mounts"]["/home/ubuntu/.ray/auth_token"] == "~/.ray/auth_token"
