"""What makes ``invoke bake`` cheap around Packer, and that it keeps every check.

- the base AMI's ``available`` check runs alongside ``packer validate`` when the id comes
  from SSM or the configuration, and still rejects a missing base as bad input with
  nothing created;
- one service-model loader per process behind every :class:`Clients` (each keeps its own
  session, region and endpoint);
- the sweep's wait for terminated instances polls with a short first delay.

All of it against the emulator over HTTP through the production ``Clients``.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.bake import build as B
from pipeline.aws.clients import Clients
from pipeline.core.config import AwsSettings, parse_settings
from pipeline.core.errors import InputError, PackerBuildFailed

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "packer" / "eks-node"
AL2023_PARAM = ("/aws/service/eks/optimized-ami/1.31/amazon-linux-2023/x86_64/standard/"
                "recommended/image_id")
needs_packer = pytest.mark.skipif(shutil.which("packer") is None, reason="packer not installed")


def _settings(endpoint: str, tmp_path: Path, base: dict[str, Any]) -> Any:
    raw = {
        "aws": {"region": "us-east-1", "endpoint_url": endpoint, "max_attempts": 2},
        "build": {"state_dir": str(tmp_path / "state")},
        "cluster": {"name": "demo", "kubernetes_version": "1.31"},
        "images": [{"name": "eks-node-al2023", "require": "nodeadm",
                    "bake": {"template": str(TEMPLATE), "base": base}}],
    }
    return parse_settings(raw, source=tmp_path / "pipeline.yaml")


def _owned(clients: Clients) -> dict[str, set[str]]:
    ec2 = clients.client("ec2")
    return {
        "images": {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]},
        "instances": {i["InstanceId"] for r in ec2.describe_instances()["Reservations"]
                      for i in r["Instances"]},
        "volumes": {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]},
    }


@pytest.mark.packer
@needs_packer
def test_deferred_base_check_fills_the_name_while_validate_runs(emulator, clients, tmp_path):
    settings = _settings(emulator.endpoint, tmp_path, {"ssm_parameter": AL2023_PARAM})
    base = clients.client("ssm").get_parameter(Name=AL2023_PARAM)["Parameter"]["Value"]
    name = clients.client("ec2").describe_images(ImageIds=[base])["Images"][0]["Name"]

    plan = B.plan_bake(settings, clients, None, workdir=tmp_path / "w", defer_base_check=True)
    assert (plan.base_ami, plan.base_checked, plan.base_ami_name) == (base, False, None)
    assert plan.base_source == f"SSM parameter {AL2023_PARAM}"

    B._validate_and_check_base(clients, plan)
    assert plan.base_checked and plan.base_ami_name == name

    # The dry run (no deferral) resolves and checks the base up front, as before.
    eager = B.plan_bake(settings, clients, None, workdir=tmp_path / "e", stage=False)
    assert eager.base_checked and eager.base_ami_name == name


@pytest.mark.packer
@needs_packer
def test_missing_base_behind_ssm_is_bad_input_and_creates_nothing(emulator, clients, tmp_path):
    clients.client("ssm").put_parameter(Name="/test/base/image_id", Type="String",
                                        Value="ami-0123456789abcdef0")
    settings = _settings(emulator.endpoint, tmp_path, {"ssm_parameter": "/test/base/image_id"})
    before = _owned(clients)

    with pytest.raises(InputError) as err:
        B.bake(settings, clients, None, workdir=tmp_path / "w")

    assert err.value.exit_code == 2
    assert "SSM parameter /test/base/image_id" in err.value.message
    assert "ami-0123456789abcdef0 not found" in err.value.message
    assert _owned(clients) == before


@pytest.mark.packer
@needs_packer
def test_validate_failure_still_stops_the_bake_before_packer_build(emulator, clients,
                                                                  tmp_path):
    settings = _settings(emulator.endpoint, tmp_path, {"ssm_parameter": AL2023_PARAM})
    plan = B.plan_bake(settings, clients, None, workdir=tmp_path / "w", defer_base_check=True)
    plan.variables["aws_poll_max_attempts"] = "not a number"   # validate rejects the type
    plan.write_variables()
    before = _owned(clients)

    with pytest.raises(InputError, match="packer validate"):   # exit 2: nothing was built
        B.run_plan(settings, clients, plan)

    assert plan.base_checked            # the base check ran alongside and passed
    assert _owned(clients) == before     # packer build never started


def test_clients_share_one_model_loader_but_keep_their_own_session(endpoint):
    east = Clients(AwsSettings(region="us-east-1", endpoint_url=endpoint, max_attempts=2))
    west = Clients(AwsSettings(region="us-west-2", endpoint_url=endpoint, max_attempts=2))
    paths = list(east._session._loader.search_paths)
    Clients(AwsSettings(region="eu-west-1", endpoint_url=endpoint, max_attempts=2))

    assert east._session._session is not west._session._session
    assert east._session._loader is west._session._loader
    assert list(west._session._loader.search_paths) == paths   # no growth per Clients
    assert len(paths) == len(set(paths))
    e, w = east.client("ec2"), west.client("ec2")
    assert (e.meta.region_name, w.meta.region_name) == ("us-east-1", "us-west-2")
    assert e.meta.endpoint_url == w.meta.endpoint_url == endpoint
    # Both really speak to the emulator, each in its own region.
    assert e.describe_regions()["Regions"]
    w.create_key_pair(KeyName="only-in-west")
    assert [k["KeyName"] for k in w.describe_key_pairs()["KeyPairs"]] == ["only-in-west"]
    assert e.describe_key_pairs()["KeyPairs"] == []


def test_unknown_profile_still_fails_when_clients_are_built(endpoint):
    from botocore.exceptions import ProfileNotFound

    with pytest.raises(ProfileNotFound):
        Clients(AwsSettings(region="us-east-1", profile="no-such-profile-here",
                            endpoint_url=endpoint, max_attempts=2))


def test_sweep_wait_for_termination_polls_quickly(emulator, clients):
    ec2 = clients.client("ec2")
    ami = emulator.seed_image("bare", region="us-east-1", name="wait-base")
    ids = [i["InstanceId"] for i in ec2.run_instances(ImageId=ami, MinCount=2, MaxCount=2,
                                                       InstanceType="t3.micro")["Instances"]]
    ec2.terminate_instances(InstanceIds=ids)

    t0 = time.monotonic()
    B._wait_terminated(ec2, ids, timeout=30)
    assert time.monotonic() - t0 < 2.0
    states = {i["State"]["Name"] for r in ec2.describe_instances(InstanceIds=ids)["Reservations"]
              for i in r["Instances"]}
    assert states == {"terminated"}

    live = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1,
                             InstanceType="t3.micro")["Instances"][0]["InstanceId"]
    with pytest.raises(TimeoutError, match=live):
        B._wait_terminated(ec2, [live], timeout=0.3)
    ec2.terminate_instances(InstanceIds=[live])


@pytest.mark.packer
@needs_packer
def test_prefetched_packer_version_is_used_once(tmp_path):
    from pipeline.bake import packer as P

    packer = P.find_packer()
    assert P.prefetch_version() is True
    assert P.prefetch_version() is False             # one pending detection per binary
    assert P._binary_key(packer) in P._PREFETCHED
    first = P.detect_version(packer)
    assert P._binary_key(packer) not in P._PREFETCHED   # consumed
    assert P.detect_version(packer) == first            # the next one runs packer again
    assert str(first).count(".") == 2
    assert P.prefetch_version(str(tmp_path / "no-packer-here")) is False
