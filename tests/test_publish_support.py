"""Shared set-up for the publish tests (no tests here): config from pipeline.example.yaml, verified AMIs, groups."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from pipeline.core import tags as T
from pipeline.aws.clients import Clients
from pipeline.core.config import Settings, parse_settings
from pipeline.aws.templates import list_versions

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "pipeline.example.yaml"
TEMPLATE = "eks-nodes"


def example_raw(tmp_path: Path, *, sg_ids: list[str] | None = None, karpenter: bool = False,
                **lt_overrides: Any) -> dict[str, Any]:
    """pipeline.example.yaml as a dict, outputs under ``tmp_path``."""
    raw = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    raw = copy.deepcopy(raw)
    raw["karpenter"]["output_dir"] = str(tmp_path / "karpenter")
    lt = raw["launch_templates"][0]
    lt["karpenter"] = karpenter
    lt["security_group_ids"] = sg_ids or []
    lt.update(lt_overrides)
    return raw


def settings_for(raw: dict[str, Any], tmp_path: Path) -> Settings:
    return parse_settings(raw, source=tmp_path / "pipeline.yaml")


def verified_ami(emulator: Any, clients: Clients, kind: str = "al2023", *,
                 mechanism: str | None = "nodeadm", verdict: str | None = "ok",
                 build_id: str = "b-20261125170000-abcdef", name: str | None = None) -> str:
    """A real AMI in the emulator with the verification tags verify_ami writes (simulated)."""
    ami = emulator.seed_image(kind, name=name)
    tags = {T.BUILD_ID: build_id, T.IMAGE_NAME: "eks-node-al2023"}
    if verdict is not None:
        tags[T.VERIFY_VERDICT] = verdict
        tags[T.VERIFY_MECHANISM] = mechanism or "none"
    clients.client("ec2").create_tags(Resources=[ami], Tags=T.to_tag_list(tags))
    return ami


def node_security_group(clients: Clients, *, egress: str = "all") -> str:
    """A security group in the default VPC; ``egress``: all | 443-only | none."""
    ec2 = clients.client("ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]
    sg = ec2.create_security_group(GroupName=f"nodes-{egress}", Description="eks nodes",
                                   VpcId=vpc["VpcId"])["GroupId"]
    if egress != "all":
        ec2.revoke_security_group_egress(GroupId=sg, IpPermissions=[
            {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    if egress == "443-only":
        ec2.authorize_security_group_egress(GroupId=sg, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443,
             "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    return sg


def version_count(clients: Clients, template: str = TEMPLATE) -> int:
    try:
        return len(list_versions(clients.client("ec2"), template))
    except Exception:  # noqa: BLE001 - the template does not exist
        return 0


# Fixtures the publish test modules import: one client factory per module instead of one per
# test (building an EC2 client parses botocore's 2 MB model, ~0.5 s). The emulator is still
# reset before every test by the ``emulator`` fixture, and Clients holds no AWS state.
import pytest  # noqa: E402

from pipeline.core.config import AwsSettings  # noqa: E402


@pytest.fixture(scope="module")
def module_clients(emulator_server: Any) -> Clients:
    """The production client factory pointed at the session emulator, shared by a module."""
    return Clients(AwsSettings(region="us-east-1", endpoint_url=emulator_server.endpoint,
                               max_attempts=2))


@pytest.fixture
def clients(emulator: Any, module_clients: Clients) -> Clients:
    """Overrides conftest's ``clients``: same factory, freshly reset emulator."""
    return module_clients
