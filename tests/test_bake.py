"""``invoke bake`` end to end: the real packer binary builds from the emulator's seeded base
AMIs, the new AMI is verified offline, failures leave nothing behind.

Every test speaks HTTP to the emulator through the production ``Clients``; Packer itself
talks to the same emulator through ``custom_endpoint_ec2``.
"""
from __future__ import annotations

import re

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from pipeline.core import tags as T
from pipeline.bake.build import BakePlan, BakeResult, bake, plan_bake, run_plan, sweep_build
from pipeline.cli import run_task
from pipeline.core.config import parse_settings
from pipeline.core.errors import InputError, VerificationFailed

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "packer" / "eks-node"
AL2023_PARAM = ("/aws/service/eks/optimized-ami/1.31/amazon-linux-2023/x86_64/standard/"
                "recommended/image_id")

needs_packer = pytest.mark.skipif(shutil.which("packer") is None, reason="packer not installed")
pytestmark = [pytest.mark.packer, needs_packer]


def _settings(endpoint: str, tmp_path: Path, base: dict[str, Any], require: str = "nodeadm"):
    raw = {
        "aws": {"region": "us-east-1", "endpoint_url": endpoint, "max_attempts": 2},
        "build": {"state_dir": str(tmp_path / "state"), "ssm_prefix": "/eks-ami-pipeline"},
        "cluster": {"name": "demo", "kubernetes_version": "1.31"},
        "images": [{"name": "eks-node-al2023", "require": require,
                    "bake": {"template": str(TEMPLATE), "base": base,
                             "instance_type": "m5.large"}}],
    }
    return parse_settings(raw, source=tmp_path / "pipeline.yaml")


def _inventory(clients) -> dict[str, set[str]]:
    """Every resource kind a bake can leave behind, by id (live instances only)."""
    ec2 = clients.client("ec2")
    inst = {i["InstanceId"] for r in ec2.describe_instances()["Reservations"]
            for i in r["Instances"] if i["State"]["Name"] not in ("terminated", "shutting-down")}
    return {
        "instances": inst,
        "security_groups": {g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]
                            if g["GroupName"] != "default"},
        "key_pairs": {k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]},
        "volumes": {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]},
        "snapshots": {s["SnapshotId"]
                      for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]},
        "images": {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]},
    }


def test_good_bake_from_seeded_al2023_verifies_with_nodeadm(emulator, realistic_emulator, clients,
                                                             tmp_path):
    settings = _settings(emulator.endpoint, tmp_path, {"ssm_parameter": AL2023_PARAM})
    base = clients.client("ssm").get_parameter(Name=AL2023_PARAM)["Parameter"]["Value"]

    result = bake(settings, clients, "eks-node-al2023", workdir=tmp_path / "work")

    assert isinstance(result, BakeResult)
    assert result.base_ami == base
    ami = result.image_ids["us-east-1"]
    assert ami != base
    assert result.verification["verdict"] == "ok"
    assert result.verification["mechanism"] == "nodeadm"
    ec2 = clients.client("ec2")
    img = ec2.describe_images(ImageIds=[ami])["Images"][0]
    tags = T.from_tag_list(img.get("Tags"))
    assert tags[T.BUILD_ID] == result.build_id
    assert tags[T.INPUTS_SHA256] == result.inputs_sha256 and len(result.inputs_sha256) == 64
    assert tags[T.BASE_AMI] == base
    assert tags[T.VERIFY_MECHANISM] == "nodeadm"
    # <image>-<UTC timestamp>-<the build id's random tail>
    assert re.fullmatch(r"eks-node-al2023-\d{14}-" + result.build_id[-6:], img["Name"]), img["Name"]
    # Secure defaults: the AMI's snapshot is encrypted (encrypt_boot).
    assert img["BlockDeviceMappings"][0]["Ebs"].get("Encrypted") is True
    # IMDSv2 is the AMI's default (set by us on Packer 1.6.x, by imds_support on >= 1.7).
    assert img.get("ImdsSupport") == "v2.0" and result.imds_support == "v2.0"
    # The AMI's snapshot carries the build id too (snapshot_tags).
    snap = result.snapshot_ids["us-east-1"][0]
    stags = T.from_tag_list(ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0].get("Tags"))
    assert stags[T.BUILD_ID] == result.build_id
    # The build instance carried the build id and is gone.
    insts = [i for r in ec2.describe_instances(Filters=[
        {"Name": f"tag:{T.BUILD_ID}", "Values": [result.build_id]}])["Reservations"]
        for i in r["Instances"]]
    assert insts and {i["State"]["Name"] for i in insts} == {"terminated"}
    assert {i["MetadataOptions"]["HttpTokens"] for i in insts} == {"required"}
    # On the emulator nothing runs inside the instance; the report says so.
    assert any("offline verify" in c for c in result.checks_run)
    assert "packer validate" in result.checks_run
    assert any("validate-bootstrap.sh" in c for c in result.checks_skipped)
    # Lineage recorded: the local manifest holds the build.
    manifest = json.loads((tmp_path / "state" / "manifest.json").read_text())
    assert result.build_id in json.dumps(manifest)
    doc = result.to_dict()
    for key in ("image_ids", "build_id", "base_ami", "inputs_sha256", "verification",
                "packer_version", "seconds", "checks_run"):
        assert key in doc
    # Where the time went, step by step; the steps add up to (at most) the total.
    steps = doc["phases"]
    assert list(steps) == ["plan", "validate", "packer_build", "image", "verify", "record"]
    assert all(v > 0 for v in steps.values())
    assert sum(steps.values()) <= doc["seconds"] + 0.05


def test_bake_without_contract_fails_verification_and_leaves_no_ami(emulator, clients, tmp_path):
    bare = emulator.seed_image("bare", region="us-east-1", name="bare-linux-base")
    settings = _settings(emulator.endpoint, tmp_path, {"ami_id": bare}, require="any")
    before = _inventory(clients)

    with pytest.raises(VerificationFailed) as err:
        bake(settings, clients, "eks-node-al2023", workdir=tmp_path / "work")

    assert err.value.exit_code == 1
    assert "verdict" in err.value.message
    removed = err.value.details["removed"]
    assert {r.split("-")[0] for r in removed} == {"ami", "snap"}
    assert _inventory(clients) == before


def test_packer_failure_exits_1_with_packer_errors_and_leaves_nothing(emulator, clients, tmp_path):
    settings = _settings(emulator.endpoint, tmp_path, {"ssm_parameter": AL2023_PARAM})
    before = _inventory(clients)
    plan = plan_bake(settings, clients, None, workdir=tmp_path / "work")
    plan.variables["source_ami_id"] = "ami-0badc0ffee0000000"   # unknown to EC2
    plan.write_variables()

    out, errs = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as ex:     # through the task runner, as `invoke bake --json`
        run_task(lambda: run_plan(settings, clients, plan), as_json=True, out=out, err=errs)

    assert ex.value.code == 1
    doc = json.loads(out.getvalue())
    assert doc["exit_code"] == 1 and "packer build failed" in doc["error"]
    errors = doc["details"]["packer_errors"]
    assert errors and any("amazon-ebs.eks-node" in line for line in errors), errors
    assert errs.getvalue().startswith("error: bake eks-node-al2023: packer build failed")
    assert _inventory(clients) == before


def test_dry_run_prints_command_and_variables_and_creates_nothing(emulator, clients, tmp_path,
                                                                  capsys):
    settings = _settings(emulator.endpoint, tmp_path, {"ssm_parameter": AL2023_PARAM})
    before = _inventory(clients)
    plan = run_task(lambda: bake(settings, clients, None, dry_run=True), as_json=True)
    out = json.loads(capsys.readouterr().out)
    assert isinstance(plan, BakePlan)
    assert out["build_command"][:3] == [plan.packer, "build", "-machine-readable"]
    assert out["variables"]["communicator"] == "none"
    assert out["variables"]["custom_endpoint_ec2"] == emulator.endpoint
    assert out["variables"]["skip_aws_validation"] is True
    assert out["variables"]["build_tags"][T.BUILD_ID] == out["build_id"]
    assert _inventory(clients) == before
    assert not plan.invocation.workdir.exists()       # nothing staged on disk either


def test_unknown_base_ami_is_bad_input(emulator, clients, tmp_path):
    settings = _settings(emulator.endpoint, tmp_path, {"ami_id": "ami-0123456789abcdef0"})
    with pytest.raises(InputError, match="not found"):
        bake(settings, clients, None, workdir=tmp_path / "work")


def test_sweep_finds_resources_by_build_id(emulator, clients):
    ec2 = clients.client("ec2")
    base = emulator.seed_image("bare")
    spec = T.tag_specifications({T.BUILD_ID: "b-sweep"}, "instance", "volume")
    ec2.run_instances(ImageId=base, MinCount=1, MaxCount=1, TagSpecifications=spec)
    ec2.create_security_group(GroupName="sg-of-build", Description="x", TagSpecifications=
                              T.tag_specifications({T.BUILD_ID: "b-sweep"}, "security-group"))
    ec2.create_key_pair(KeyName="packer_b-sweep")
    vol = ec2.create_volume(AvailabilityZone="us-east-1a", Size=1, TagSpecifications=
                            T.tag_specifications({T.BUILD_ID: "b-sweep"}, "volume"))
    # An AMI the build made (tagged), and the base it started from (protected even if tagged).
    made = ec2.register_image(Name="made-by-b-sweep", TagSpecifications=
                              T.tag_specifications({T.BUILD_ID: "b-sweep"}, "image"))["ImageId"]
    ec2.create_tags(Resources=[base], Tags=T.to_tag_list({T.BUILD_ID: "b-sweep"}))
    rep = sweep_build(clients, "b-sweep", protect=frozenset({base}))
    assert rep.removed["images"] == [made]
    assert ec2.describe_images(ImageIds=[base])["Images"][0]["State"] == "available"
    assert rep.removed["key_pairs"] == ["packer_b-sweep"]
    assert vol["VolumeId"] in rep.removed["volumes"]
    assert rep.removed["security_groups"] and rep.removed["instances"]
    assert not rep.failed


def test_inputs_hash_is_stable_and_follows_inputs(emulator, clients, tmp_path):
    """Same inputs, same hash (build ids differ); another base AMI or template, another hash."""
    settings = _settings(emulator.endpoint, tmp_path, {"ssm_parameter": AL2023_PARAM})
    a = plan_bake(settings, clients, None, workdir=tmp_path / "a", stage=False)
    b = plan_bake(settings, clients, None, workdir=tmp_path / "b", stage=False)
    assert a.build_id != b.build_id and a.inputs_sha256 == b.inputs_sha256
    other = emulator.seed_image("al2023", name="another-al2023-base")
    c = plan_bake(_settings(emulator.endpoint, tmp_path, {"ami_id": other}), clients, None,
                  workdir=tmp_path / "c", stage=False)
    assert c.inputs_sha256 != a.inputs_sha256
    copy = tmp_path / "tpl"
    shutil.copytree(TEMPLATE, copy)
    (copy / "provisioners" / "cleanup.sh").write_text(
        (copy / "provisioners" / "cleanup.sh").read_text() + "# changed\n")
    raw_settings = _settings(emulator.endpoint, tmp_path, {"ssm_parameter": AL2023_PARAM})
    from dataclasses import replace
    img = raw_settings.images[0]
    changed = replace(raw_settings, images=(replace(img, bake=replace(img.bake, template=copy)),))
    d = plan_bake(changed, clients, None, workdir=tmp_path / "d", stage=False)
    assert d.inputs_sha256 != a.inputs_sha256


def test_name_filter_picks_newest_available(emulator, clients, tmp_path):
    old = emulator.seed_image("al2023", name="team-eks-base-2024-01")
    new = emulator.seed_image("al2023", name="team-eks-base-2024-02")
    settings = _settings(emulator.endpoint, tmp_path, {"name_filter": "team-eks-base-*",
                                                      "owners": ["self"]})
    plan = plan_bake(settings, clients, None, workdir=tmp_path / "w", stage=False)
    assert plan.base_ami in (old, new)
    images = {i["ImageId"]: i["CreationDate"] for i in clients.client("ec2").describe_images(
        ImageIds=[old, new])["Images"]}
    assert images[plan.base_ami] == max(images.values())
    with pytest.raises(InputError, match="no available AMI"):
        plan_bake(_settings(emulator.endpoint, tmp_path, {"name_filter": "nothing-*",
                                                          "owners": ["self"]}),
                  clients, None, workdir=tmp_path / "x", stage=False)


def test_real_aws_plan_uses_ssh_and_provisioners_and_validates(emulator, clients, tmp_path):
    """Without an endpoint (real AWS) the plan keeps the template's ssh communicator, so the
    in-instance provisioners run; `packer validate` accepts that variable set too."""
    from dataclasses import replace

    from pipeline.bake import packer as P

    settings = _settings(emulator.endpoint, tmp_path, {"ssm_parameter": AL2023_PARAM})
    real = replace(settings, aws=replace(settings.aws, endpoint_url=None))
    plan = plan_bake(real, clients, None, workdir=tmp_path / "work")   # look-ups: emulator
    for key in ("custom_endpoint_ec2", "communicator", "skip_aws_validation"):
        assert key not in plan.variables
    assert plan.variables["require"] == "nodeadm"
    P.validate(plan.invocation)
