"""cluster.yaml validates against the launcher schema shipped inside the `ray` package, and the
profiles in conf/ load as typed configs."""

import json
from pathlib import Path

import jsonschema
import ray
import yaml

from emoray.config import AnnotateConfig, load_config
from tests.conftest import REPO


def test_cluster_yaml_matches_ray_launcher_schema():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    cluster = yaml.safe_load((REPO / "cluster.yaml").read_text())
    jsonschema.validate(cluster, schema)
    nodes = cluster["available_node_types"]
    assert all("IamInstanceProfile" in n["node_config"] for n in nodes.values())
    assert "aws_access_key_id" not in (REPO / "cluster.yaml").read_text().lower()
    assert any("[gpu]" in c for c in cluster["setup_commands"])


def test_profiles_load():
    local = load_config(REPO / "conf" / "local.yaml")
    cluster = load_config(REPO / "conf" / "cluster.yaml")
    assert isinstance(local, AnnotateConfig) and local.engine.device == "cpu"
    assert cluster.engine.device == "gpu" and cluster.engine.model == "Emollama-chat-7b"
