"""prune keeps every referenced AMI and deletes the rest with their snapshots (emulator over HTTP)."""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from moto.ec2.models import ec2_backends

from pipeline.lineage import store as lineage
from pipeline.core import tags
from pipeline.core.config import parse_settings
from pipeline_dev.emulator.image_references import install
from pipeline.core.errors import InputError
from pipeline.lifecycle.prune import prune
from pipeline.core.records import BuildRecord

#: Every test here runs beside resources the pipeline did not create (tests/neighbours.py).
pytestmark = pytest.mark.usefixtures("neighbours")

ACCOUNT, REGION = "123456789012", "us-east-1"


@pytest.fixture(autouse=True)
def _emulator_extensions() -> None:
    """DescribeImageReferences, deprecation and DeleteLaunchTemplateVersions on the emulator."""
    install()


def _settings(tmp_path: Path, endpoint: str) -> Any:
    raw = {"aws": {"region": REGION, "endpoint_url": endpoint, "max_attempts": 2},
           "build": {"ssm_prefix": "/eks-ami-pipeline"},
           "images": [{"name": "node", "import": {"source": "x.vmdk"}}],
           "launch_templates": [{"name": "nodes", "image": "node"}]}
    return parse_settings(raw, source=tmp_path / "pipeline.yaml")


def _backend() -> Any:
    return ec2_backends[ACCOUNT][REGION]


def _build_id(label: str) -> str:
    return f"b-20260101000000-{label.encode().hex()[:6]:0<6}"


def _ami(ec2: Any, label: str, days_old: float, *, pipeline: bool = True,
         region: str = REGION) -> str:
    """A registered AMI (tagged like a pipeline build unless ``pipeline=False``), backdated."""
    build = _build_id(label)
    image_id = ec2.register_image(Name=f"node-{label}", RootDeviceName="/dev/xvda")["ImageId"]
    if pipeline:
        ec2.create_tags(Resources=[image_id], Tags=tags.to_tag_list(
            {tags.BUILD_ID: build, tags.IMAGE_NAME: "node"}))
    ec2_backends[ACCOUNT][region].amis[image_id].creation_date = (
        dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days_old)).replace(tzinfo=None)
    return image_id


def _snapshots(ec2: Any, image_id: str) -> list[str]:
    img = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    return [m["Ebs"]["SnapshotId"] for m in img["BlockDeviceMappings"] if "Ebs" in m]


def _age_versions(template_id: str, days: float) -> None:
    for v in _backend().launch_templates[template_id].versions:
        v.create_time = (dt.datetime.now(dt.timezone.utc)
                         - dt.timedelta(days=days)).replace(tzinfo=None)


@pytest.fixture
def world(clients: Any) -> dict[str, str]:
    """Pipeline AMIs with every kind of reference, plus unreferenced ones."""
    ec2, ssm = clients.client("ec2"), clients.client("ssm")
    ids = {k: _ami(ec2, k, d) for k, d in
           [("A", 30), ("B", 29), ("C", 28), ("D", 27), ("E", 26), ("H", 40), ("G", 3),
            ("F", 1)]}
    ids["X"] = _ami(ec2, "X", 50, pipeline=False)
    # A: an old, non-default version of a template the config does not know.
    other = ec2.create_launch_template(LaunchTemplateName="other",
                                       LaunchTemplateData={"ImageId": ids["A"]})
    oid = other["LaunchTemplate"]["LaunchTemplateId"]
    ec2.create_launch_template_version(LaunchTemplateId=oid,
                                       LaunchTemplateData={"ImageId": ids["F"]})
    # H: named through resolve:ssm: in that template's latest version.
    ssm.put_parameter(Name="/custom/golden", Value=ids["H"], Type="String",
                      DataType="aws:ec2:image")
    ec2.create_launch_template_version(
        LaunchTemplateId=oid, LaunchTemplateData={"ImageId": "resolve:ssm:/custom/golden"})
    ec2.modify_launch_template(LaunchTemplateId=oid, DefaultVersion="2")
    # B: an SSM pointer of ours.
    ssm.put_parameter(Name="/eks-ami-pipeline/node/stable", Value=ids["B"], Type="String",
                      DataType="aws:ec2:image")
    # C: a running instance.
    ec2.run_instances(ImageId=ids["C"], MinCount=1, MaxCount=1)
    # E: only an old version of the configured template, which prune may delete.
    nodes = ec2.create_launch_template(LaunchTemplateName="nodes",
                                       LaunchTemplateData={"ImageId": ids["E"]})
    nid = nodes["LaunchTemplate"]["LaunchTemplateId"]
    ec2.create_launch_template_version(LaunchTemplateId=nid,
                                       LaunchTemplateData={"ImageId": ids["F"]})
    ec2.modify_launch_template(LaunchTemplateId=nid, DefaultVersion="2")
    _age_versions(nid, 20)
    _age_versions(oid, 20)
    ids["nodes"], ids["other"] = nid, oid
    return ids


def _decisions(result: Any) -> dict[str, str]:
    return {d.image_id: d.action for d in result.images}


def test_dry_run_plans_without_touching(tmp_path: Path, endpoint: str, clients: Any,
                                        world: dict[str, str]) -> None:
    ec2 = clients.client("ec2")
    before = {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]}
    result = prune(_settings(tmp_path, endpoint), clients, keep=1, older_than_days=7)
    assert not result.applied
    plan = _decisions(result)
    assert {i for i, a in plan.items() if a == "deregister"} == {world["D"], world["E"]}
    assert {v.version for v in result.versions if v.action == "delete"} == {1}
    after = {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]}
    assert after == before
    versions = ec2.describe_launch_template_versions(LaunchTemplateId=world["nodes"])
    assert len(versions["LaunchTemplateVersions"]) == 2
    assert "dry run" in result.summary()


def test_apply_keeps_every_referenced_ami_and_deletes_the_rest(
        realistic_emulator: Any, tmp_path: Path, endpoint: str, clients: Any, world: dict[str, str]) -> None:
    ec2 = clients.client("ec2")
    doomed_snaps = _snapshots(ec2, world["D"]) + _snapshots(ec2, world["E"])
    kept_snaps = _snapshots(ec2, world["A"])
    assert doomed_snaps and kept_snaps
    settings = _settings(tmp_path, endpoint)
    for label in ("A", "D"):
        lineage.record_build(settings, clients, BuildRecord(
            build_id=_build_id(label), image_name="node", method="snapshot",
            status="succeeded", image_ids={REGION: world[label]}))

    result = prune(settings, clients, keep=1, older_than_days=7, apply=True)
    assert result.exit_code == 0, result.summary()
    # The record of a build whose AMIs are all gone goes too; a kept build's stays.
    assert lineage.load_build(settings, clients, "node", _build_id("D")) is None
    assert lineage.load_build(settings, clients, "node", _build_id("A")) is not None
    left = {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]}
    for key in ("A", "B", "C", "F", "G", "H", "X"):
        assert world[key] in left, key
    assert world["D"] not in left and world["E"] not in left
    reasons = {d.image_id: d.reason for d in result.images}
    assert "launch template other version 1" in reasons[world["A"]]
    assert "SSM pointer /eks-ami-pipeline/node/stable" in reasons[world["B"]]
    assert "instance i-" in reasons[world["C"]]
    assert "launch template other version 3" in reasons[world["H"]]
    assert world["X"] not in reasons       # not built by the pipeline: never a candidate

    snaps = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert not set(doomed_snaps) & snaps
    assert set(kept_snaps) <= snaps
    # The configured template lost version 1 only; default and latest stay.
    versions = ec2.describe_launch_template_versions(LaunchTemplateId=world["nodes"])
    assert [v["VersionNumber"] for v in versions["LaunchTemplateVersions"]] == [2]
    # The unconfigured template is never pruned.
    other = ec2.describe_launch_template_versions(LaunchTemplateId=world["other"])
    assert len(other["LaunchTemplateVersions"]) == 3


def test_describe_image_references_alone_protects(tmp_path: Path, endpoint: str,
                                                  clients: Any) -> None:
    """An SSM parameter outside our prefix is seen only by DescribeImageReferences."""
    ec2, ssm = clients.client("ec2"), clients.client("ssm")
    old = _ami(ec2, "old", 40)
    _ami(ec2, "new", 1)
    ssm.put_parameter(Name="/team/ami", Value=old, Type="String", DataType="aws:ec2:image")
    result = prune(_settings(tmp_path, endpoint), clients, keep=1, apply=True)
    reason = {d.image_id: d.reason for d in result.images}[old]
    assert "DescribeImageReferences: ssm:Parameter" in reason
    assert ec2.describe_images(ImageIds=[old])["Images"]


def test_deprecate_marks_instead_of_deregistering(tmp_path: Path, endpoint: str,
                                                  clients: Any) -> None:
    ec2 = clients.client("ec2")
    old = _ami(ec2, "old", 40)
    _ami(ec2, "new", 1)
    result = prune(_settings(tmp_path, endpoint), clients, keep=1, apply=True, deprecate=True)
    assert _decisions(result)[old] == "deprecate"
    image = ec2.describe_images(ImageIds=[old])["Images"][0]
    assert image.get("DeprecationTime")
    # A later run without --deprecate removes it.
    again = prune(_settings(tmp_path, endpoint), clients, keep=1, apply=True)
    assert _decisions(again)[old] == "deregister"
    assert not ec2.describe_images(Owners=["self"], ImageIds=[old]).get("Images") or \
        ec2.describe_images(ImageIds=[old])["Images"][0]["State"] != "available"


def test_bad_keep_is_input_error(tmp_path: Path, endpoint: str, clients: Any) -> None:
    with pytest.raises(InputError, match="--keep 0"):
        prune(_settings(tmp_path, endpoint), clients, keep=0)



def test_each_region_keeps_what_its_own_templates_use(tmp_path: Path, endpoint: str,
                                                     clients: Any) -> None:
    """Copies of one old build: the us-west-2 copy is used there, the us-east-1 copy is not."""
    west = "us-west-2"
    raw = {"aws": {"region": REGION, "endpoint_url": endpoint, "max_attempts": 2},
           "build": {"ssm_prefix": "/eks-ami-pipeline"},
           "images": [{"name": "node", "regions": [REGION, west],
                       "import": {"source": "x.vmdk"}}]}
    settings = parse_settings(raw, source=tmp_path / "pipeline.yaml")
    east_ec2, west_ec2 = clients.client("ec2"), clients.client("ec2", region=west)
    old_east = _ami(east_ec2, "old", 40)
    old_west = _ami(west_ec2, "old", 40, region=west)
    _ami(east_ec2, "new", 1)
    _ami(west_ec2, "new", 1, region=west)
    west_ec2.create_launch_template(LaunchTemplateName="west-nodes",
                                    LaunchTemplateData={"ImageId": old_west})
    result = prune(settings, clients, keep=1, apply=True)
    plan = {(d.region, d.image_id): d.action for d in result.images}
    assert plan[(REGION, old_east)] == "deregister"
    assert plan[(west, old_west)] == "keep"
    assert west_ec2.describe_images(ImageIds=[old_west])["Images"]


def test_a_protected_ami_is_kept_and_never_deregistered(tmp_path: Path, endpoint: str,
                                                        clients: Any) -> None:
    """DeregistrationProtection (DescribeImages) keeps an AMI beyond retention; prune reports
    it and does not try DeregisterImage (the emulator would refuse: OperationNotPermitted)."""
    ec2 = clients.client("ec2")
    guarded, doomed = _ami(ec2, "guard", 40), _ami(ec2, "doomed", 39)
    _ami(ec2, "new", 1)
    ec2.enable_image_deregistration_protection(ImageId=guarded, WithCooldown=True)
    snaps = _snapshots(ec2, guarded)
    dry = prune(_settings(tmp_path, endpoint), clients, keep=1)
    assert _decisions(dry)[guarded] == "keep" and _decisions(dry)[doomed] == "deregister"
    result = prune(_settings(tmp_path, endpoint), clients, keep=1, apply=True)
    assert result.exit_code == 0, result.summary()
    decision = {d.image_id: d for d in result.images}[guarded]
    assert decision.action == "keep"
    assert decision.reason == "protected against deregistration (enabled-with-cooldown)"
    assert f"{guarded} node {_build_id('guard')}: keep - protected against deregistration " \
        "(enabled-with-cooldown)" in result.summary()
    ec2.get_waiter("image_available").wait(  # still there (pending a while when realistic)
        ImageIds=[guarded], WaiterConfig={"Delay": 0.1, "MaxAttempts": 100})
    assert ec2.describe_images(ImageIds=[guarded])["Images"][0]["State"] == "available"
    left = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert set(snaps) <= left
    assert {d.image_id: d for d in result.images}[doomed].done


def test_deregister_deletes_associated_snapshots_and_keeps_a_shared_one(
        tmp_path: Path, endpoint: str, clients: Any) -> None:
    """The old AMI's own snapshot goes with it (DeleteAssociatedSnapshots: success); one the
    newest build also maps is skipped by AWS, kept and reported."""
    ec2 = clients.client("ec2")

    def snapshot() -> str:
        vol = ec2.create_volume(Size=1, AvailabilityZone=f"{REGION}a")["VolumeId"]
        snap = str(ec2.create_snapshot(VolumeId=vol)["SnapshotId"])
        # RegisterImage refuses a snapshot that is not 'completed' yet (realistic timing).
        ec2.get_waiter("snapshot_completed").wait(
            SnapshotIds=[snap], WaiterConfig={"Delay": 0.1, "MaxAttempts": 100})
        return snap

    def register(label: str, mappings: list[tuple[str, str]], days_old: float) -> str:
        image_id = ec2.register_image(
            Name=f"node-{label}", RootDeviceName="/dev/xvda",
            BlockDeviceMappings=[{"DeviceName": d, "Ebs": {"SnapshotId": s}}
                                 for d, s in mappings])["ImageId"]
        ec2.create_tags(Resources=[image_id], Tags=tags.to_tag_list(
            {tags.BUILD_ID: _build_id(label), tags.IMAGE_NAME: "node"}))
        _backend().amis[image_id].creation_date = (
            dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days_old)).replace(tzinfo=None)
        return str(image_id)

    own, shared = snapshot(), snapshot()
    old = register("old", [("/dev/xvda", own), ("/dev/xvdb", shared)], 40)
    new = register("new", [("/dev/xvda", shared)], 1)
    result = prune(_settings(tmp_path, endpoint), clients, keep=1, apply=True)
    assert result.exit_code == 0, result.summary()
    decision = {d.image_id: d for d in result.images}[old]
    assert (decision.action, decision.done) == ("deregister", True)
    assert decision.snapshot_ids == (own,) and decision.snapshots_kept == (shared,)
    assert f"snapshots {shared} kept: another AMI uses them" in result.summary()
    left = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert own not in left and shared in left
    assert ec2.describe_images(ImageIds=[new])["Images"]
