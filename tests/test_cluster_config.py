"""cluster.yaml validates against the launcher schema shipped inside the `ray` package, and the
cluster profile asks for what a cluster night needs."""

import json
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from emoray.config import ConfigError, load_config
from tests.conftest import REPO


def test_cluster_yaml_matches_ray_launcher_schema():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    cluster = yaml.safe_load((REPO / "cluster.yaml").read_text())
    jsonschema.validate(cluster, schema)
    nodes = cluster["available_node_types"]
    assert all("IamInstanceProfile" in n["node_config"] for n in nodes.values())
    assert "aws_access_key_id" not in (REPO / "cluster.yaml").read_text().lower()
    assert any("[gpu,spark]" in c for c in cluster["setup_commands"])


def test_cluster_profile_has_gate_and_nightly_enrichment():
    from emoray.nightly import for_date

    cluster = load_config(REPO / "conf" / "cluster.yaml", environ={})
    assert cluster.gate.enabled and cluster.gate.thresholds["v_reg"] == {"pearson": 0.5}
    night = for_date(cluster, "2026-11-22")
    assert night.input == "s3://my-data-lake/texts/date=2026-11-22/"
    assert night.enrich.annotations == cluster.output
    # one enriched Delta table for every night, partitioned by date, kept in Glue by name
    assert night.enrich.output == "s3://my-data-lake/analytics/posts_affect/"
    assert night.enrich.partition_by == ["date"]
    assert (night.enrich.glue_entry.glue_database, night.enrich.glue_entry.name) == (
        "analytics", "posts_affect")
    assert night.enrich.s3.region == cluster.s3.region == "us-east-1"
    with pytest.raises(ConfigError, match="--date '22/11/2026' is not a date"):
        for_date(cluster, "22/11/2026")
