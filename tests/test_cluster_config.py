"""cluster.yaml passes Ray's own cluster-config schema and opens nothing but SSH."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from sweeps.spec.credentials import credential_paths

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


@pytest.fixture(scope="module")
def cluster_config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_passes_ray_schema(cluster_config: dict) -> None:
    validate_config(prepare_config(copy.deepcopy(cluster_config)))


def test_unknown_key_is_rejected_by_the_same_check(cluster_config: dict) -> None:
    broken = copy.deepcopy(cluster_config)
    broken["not_a_ray_key"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))


def test_only_ssh_is_open_to_the_world(cluster_config: dict) -> None:
    permissions = cluster_config["provider"]["security_group"]["IpPermissions"]
    assert [
        (rule["IpProtocol"].lower(), rule["FromPort"], rule["ToPort"]) for rule in permissions
    ] == [("tcp", 22, 22)]
    for name, node_type in cluster_config["available_node_types"].items():
        node_config = node_type["node_config"]
        # a node's own security groups or interfaces would bypass the SSH-only group
        assert not {"SecurityGroupIds", "NetworkInterfaces"} & set(node_config), name


def test_dashboard_and_mlflow_bind_to_loopback_on_the_head(cluster_config: dict) -> None:
    commands = cluster_config["head_start_ray_commands"]
    (ray_start,) = [command for command in commands if "ray start --head" in command]
    (mlflow,) = [command for command in commands if "mlflow server" in command]
    assert "--dashboard-host=127.0.0.1" in ray_start
    assert "--host 127.0.0.1" in mlflow
    assert "0.0.0.0" not in " ".join(commands)


def test_credentials_come_from_instance_profiles(cluster_config: dict) -> None:
    found = set(credential_paths(cluster_config)) - {"auth.ssh_private_key"}  # a key file's path
    assert found == set()
    for name, node_type in cluster_config["available_node_types"].items():
        assert node_type["node_config"]["IamInstanceProfile"]["Name"], name


def test_gpu_workers_autoscale_from_zero(cluster_config: dict) -> None:
    node_types = cluster_config["available_node_types"]
    gpu_types = [name for name in node_types if name != cluster_config["head_node_type"]]
    assert gpu_types
    for name in gpu_types:
        assert node_types[name]["min_workers"] == 0
        assert node_types[name]["max_workers"] >= 1
