"""Distribution across three regions and the publication gate, against the emulator."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError
from moto.ec2.models import ec2_backends

from pipeline_dev.emulator import timing

from pipeline.lineage import store as lineage
from pipeline.core import tags as T
from pipeline.aws.clients import Clients
from pipeline.core.config import AwsSettings, ImageSettings, Settings, parse_settings
from pipeline.lifecycle.distribute import (COPIED_FROM, PublicationGated, distribute,
    gate_publication, move_pointers, plan_distribution)
from pipeline.core.errors import ConfigError, InputError, OperationFailed
from pipeline.core.records import BuildRecord, Verification

ACCOUNT = "123456789012"
HOME, WEST, EU = "us-east-1", "us-west-2", "eu-west-1"
REGIONS = (HOME, WEST, EU)
SHARE = "111122223333"


def settings_for(aws: AwsSettings, tmp: Path, eu_key: str = "", **image: Any) -> Settings:
    img = dict(name="eks-node", regions=REGIONS, share_with=(SHARE,), kms_key_ids={EU: eu_key})
    img.update(image)
    return Settings(aws=aws, images=(ImageSettings(**img),), ssm_prefix="/eks-ami-pipeline",
                    state_dir=tmp / "build")


@pytest.fixture
def eu_key(clients: Clients) -> str:
    """A customer managed KMS key in eu-west-1 (the copy there is encrypted with it)."""
    return clients.client("kms", region=EU).create_key(Description="eu copies")["KeyMetadata"]["Arn"]


@pytest.fixture
def settings(aws_settings: AwsSettings, tmp_path: Path, eu_key: str) -> Settings:
    return settings_for(aws_settings, tmp_path, eu_key)


@pytest.fixture
def record(clients: Clients) -> BuildRecord:
    """A verified build with one AMI in the home region, recorded like import/bake do."""
    ec2 = clients.client("ec2")
    ami = ec2.register_image(Name="eks-node-b1", Architecture="x86_64", VirtualizationType="hvm",
                             RootDeviceName="/dev/xvda")["ImageId"]
    ec2.get_waiter("image_available").wait(  # pending for a while under realistic timing
        ImageIds=[ami], WaiterConfig={"Delay": 0.1, "MaxAttempts": 100})
    return BuildRecord(
        build_id=T.new_build_id(), image_name="eks-node", method="bake", status="succeeded",
        started_at=BuildRecord.now(), base_ami="ami-0123456789abcdef0", tool_version="0.1.0",
        image_ids={HOME: ami},
        verification=Verification(verdict="ok", mechanism="nodeadm",
                                  checked_at=BuildRecord.now(), tool_version="0.1.0"))


def images_of_build(clients: Clients, region: str, build_id: str) -> list[dict[str, Any]]:
    ec2 = clients.client("ec2", region=region)
    return ec2.describe_images(Owners=["self"], Filters=[
        {"Name": f"tag:{T.BUILD_ID}", "Values": [build_id]}])["Images"]


def snapshot_ids(clients: Clients, region: str) -> set[str]:
    ec2 = clients.client("ec2", region=region)
    return {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}


def tags_of(clients: Clients, region: str, resource: str) -> dict[str, str]:
    ec2 = clients.client("ec2", region=region)
    resp = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [resource]}])
    return {t["Key"]: t["Value"] for t in resp["Tags"]}


def copy_calls(clients: Clients, region: str) -> list[dict[str, Any]]:
    """Observe (not alter) the CopyImage requests sent to ``region``."""
    seen: list[dict[str, Any]] = []
    clients.client("ec2", region=region).meta.events.register(
        "provide-client-params.ec2.CopyImage", lambda params, **_: seen.append(dict(params)))
    return seen


def set_state(region: str, ami: str, state: str) -> None:
    """Emulator state, in-process: make one regional image pending/available."""
    ec2_backends[ACCOUNT][region].amis[ami].state = state


# --------------------------------------------------------------------------- distribute


def test_distribute_copies_tags_encrypts_and_shares_in_three_regions(realistic_emulator, settings,
                                                                     clients, record, eu_key):
    eu_calls, west_calls = copy_calls(clients, EU), copy_calls(clients, WEST)
    out = distribute(settings, clients, record, wait_delay=0.05, timeout=10)

    assert set(out.image_ids) == set(REGIONS)
    assert len(set(out.image_ids.values())) == 3
    # KMS: the configured key where there is one, nothing elsewhere.
    assert [(c.get("Encrypted"), c.get("KmsKeyId")) for c in eu_calls] == [(True, eu_key)]
    assert [(c.get("Encrypted"), c.get("KmsKeyId")) for c in west_calls] == [(None, None)]
    assert eu_calls[0]["SourceRegion"] == HOME
    assert eu_calls[0]["SourceImageId"] == record.image_ids[HOME]

    for region in REGIONS:
        ec2 = clients.client("ec2", region=region)
        ami = out.image_ids[region]
        img = ec2.describe_images(ImageIds=[ami])["Images"][0]
        assert img["State"] == "available" and not img.get("Public")
        snaps = [m["Ebs"]["SnapshotId"] for m in img["BlockDeviceMappings"] if "Ebs" in m]
        assert snaps and sorted(out.snapshot_ids[region]) == sorted(snaps)
        encrypted = {s["Encrypted"] for s in ec2.describe_snapshots(SnapshotIds=snaps)["Snapshots"]}
        assert encrypted == {region == EU}
        for res in [ami, *snaps]:
            t = tags_of(clients, region, res)
            assert t[T.BUILD_ID] == record.build_id and t[T.VERIFY_VERDICT] == "ok"
            if region != HOME:
                assert t[COPIED_FROM] == f"{HOME}/{record.image_ids[HOME]}"
        perms = ec2.describe_image_attribute(ImageId=ami, Attribute="launchPermission")
        assert perms["LaunchPermissions"] == [{"UserId": SHARE}]
        for snap in snaps:
            vp = ec2.describe_snapshot_attribute(SnapshotId=snap,
                                                 Attribute="createVolumePermission")
            assert vp["CreateVolumePermissions"] == [{"UserId": SHARE}]

    stored = lineage.load_build(settings, clients, "eks-node", record.build_id)
    assert stored is not None and stored.image_ids == out.image_ids


def test_distribute_again_copies_nothing_new(settings, clients, record):
    first = dict(distribute(settings, clients, record, wait_delay=0.05).image_ids)
    calls = copy_calls(clients, WEST) + copy_calls(clients, EU)
    again = distribute(settings, clients, record, wait_delay=0.05)
    assert again.image_ids == first
    assert calls == []
    for region in (WEST, EU):
        assert len(images_of_build(clients, region, record.build_id)) == 1


@pytest.mark.parametrize("group", ["all", "ALL"])
def test_sharing_with_all_is_refused_before_any_copy(aws_settings, tmp_path, clients, record, group,
                                                     eu_key):
    settings = settings_for(aws_settings, tmp_path, eu_key, share_with=(SHARE, group))
    with pytest.raises(InputError, match="public") as err:
        distribute(settings, clients, record, wait_delay=0.05)
    assert err.value.exit_code == 2
    for region in (WEST, EU):
        assert images_of_build(clients, region, record.build_id) == []
    perms = clients.client("ec2").describe_image_attribute(
        ImageId=record.image_ids[HOME], Attribute="launchPermission")
    assert perms["LaunchPermissions"] == []


def test_config_refuses_all_in_share_with():
    with pytest.raises(ConfigError, match="share_with"):
        parse_settings({"images": [{"name": "x", "share_with": ["all"],
                                    "import": {"source": "a.raw"}}]})


def test_kms_key_for_unconfigured_region_is_input_error(aws_settings, tmp_path, record):
    settings = settings_for(aws_settings, tmp_path, kms_key_ids={"ap-south-1": "key"})
    with pytest.raises(InputError, match="ap-south-1"):
        plan_distribution(settings, record)


def test_failed_copy_leaves_no_partial_copies(settings, clients, record):
    before = {r: snapshot_ids(clients, r) for r in (WEST, EU)}

    stuck: list[str] = []

    def copied(parsed: dict[str, Any], **_: Any) -> None:
        stuck.append(parsed["ImageId"])

    def still_pending(**_: Any) -> None:
        # This copy never completes: pinned to pending before every DescribeImages, so a
        # timing profile that would move it to available later cannot.
        for ami in stuck:
            if ami in ec2_backends[ACCOUNT][EU].amis:   # until the cleanup deregisters it
                set_state(EU, ami, "pending")

    eu = clients.client("ec2", region=EU)
    eu.meta.events.register("after-call.ec2.CopyImage", copied)
    eu.meta.events.register("before-call.ec2.DescribeImages", still_pending)
    home_only = dict(record.image_ids)
    with pytest.raises(OperationFailed, match=f"{EU}.*pending"):
        # Long enough for the other copies to complete under the session's timing profile.
        distribute(settings, clients, record, wait_delay=0.05,
                   timeout=0.3 + timing.current().copy_seconds * 2)
    assert record.image_ids == home_only  # the record names no deleted copy
    for region in (WEST, EU):
        assert images_of_build(clients, region, record.build_id) == []
        assert snapshot_ids(clients, region) == before[region]
    assert lineage.load_build(settings, clients, "eks-node", record.build_id) is None


# --------------------------------------------------------------------------- gate


def test_gate_refuses_until_every_region_is_available(settings, clients, record):
    out = distribute(settings, clients, record, wait_delay=0.05)
    set_state(EU, out.image_ids[EU], "pending")
    with pytest.raises(PublicationGated, match=f"{EU}: {out.image_ids[EU]} is 'pending'"):
        gate_publication(settings, clients, out.image_ids[HOME], wait=False)

    timer = threading.Timer(0.3, set_state, (EU, out.image_ids[EU], "available"))
    timer.start()
    started = time.monotonic()
    gate = gate_publication(settings, clients, out.image_ids[HOME], timeout=10, delay=0.05)
    timer.join()
    assert time.monotonic() - started >= 0.3
    assert gate.image_ids == out.image_ids and gate.build_id == record.build_id


def test_gate_times_out_and_refuses_a_build_not_distributed(settings, clients, record):
    lineage.record_build(settings, clients, record)
    with pytest.raises(PublicationGated, match=f"{WEST}: no AMI of build {record.build_id}"):
        gate_publication(settings, clients, record.image_ids[HOME], timeout=0.2, delay=0.05)
    with pytest.raises(PublicationGated):
        gate_publication(settings, clients, record, wait=False)


def test_gate_passes_a_single_region_image(aws_settings, tmp_path, clients, record):
    settings = settings_for(aws_settings, tmp_path, regions=(), share_with=(), kms_key_ids={})
    lineage.record_build(settings, clients, record)
    gate = gate_publication(settings, clients, record.image_ids[HOME], wait=False)
    assert gate.image_ids == {HOME: record.image_ids[HOME]}


def test_gate_on_unknown_ami_is_input_error(settings, clients):
    with pytest.raises(InputError, match="ami-0000000000000000f"):
        gate_publication(settings, clients, "ami-0000000000000000f", wait=False)


def count_calls(clients: Clients, regions: tuple[str, ...]) -> list[str]:
    """Observe every EC2/SSM request sent to ``regions``."""
    seen: list[str] = []
    for region in regions:
        for service in ("ec2", "ssm"):
            clients.client(service, region=region).meta.events.register(
                "before-send", lambda request, **_: seen.append(request.url))
    return seen


def test_gate_with_the_callers_image_costs_one_call_per_other_region(aws_settings, tmp_path,
                                                                     settings, clients, record):
    out = distribute(settings, clients, record, wait_delay=0.05)
    home_image = clients.client("ec2").describe_images(ImageIds=[out.image_ids[HOME]])["Images"][0]
    calls = count_calls(clients, REGIONS)
    gate = gate_publication(settings, clients, out.image_ids[HOME], home_image=home_image,
                            wait=False)
    assert gate.image_ids == out.image_ids and len(calls) == 2

    single = settings_for(aws_settings, tmp_path, regions=(), share_with=(), kms_key_ids={})
    calls.clear()
    gate_publication(single, clients, out.image_ids[HOME], home_image=home_image, wait=False)
    assert calls == []


def test_move_pointers_names_each_regions_copy(settings, clients, record):
    out = distribute(settings, clients, record, wait_delay=0.05)
    gate = gate_publication(settings, clients, record, wait=False)
    moved = move_pointers(settings, clients, gate, "candidate")
    assert {(p.region, p.ami_id) for p in moved} == set(out.image_ids.items())
    for region in REGIONS:
        param = clients.client("ssm", region=region).get_parameter(
            Name="/eks-ami-pipeline/eks-node/candidate")["Parameter"]
        assert param["Value"] == out.image_ids[region] and param["DataType"] == "aws:ec2:image"


def test_move_pointers_is_all_or_nothing(settings, clients, record):
    out = distribute(settings, clients, record, wait_delay=0.05)
    gate = gate_publication(settings, clients, record, wait=False)
    move_pointers(settings, clients, gate, "stable")
    gate.image_ids = {region: out.image_ids[HOME] for region in REGIONS}  # a bad release

    def unreachable(**_: Any) -> None:  # the network to eu-west-1 fails on this call
        raise EndpointConnectionError(endpoint_url="https://ssm.eu-west-1.amazonaws.com")

    clients.client("ssm", region=EU).meta.events.register("before-call.ssm.PutParameter",
                                                          unreachable)
    with pytest.raises(OperationFailed, match="SSM pointer"):
        move_pointers(settings, clients, gate, "stable")
    for region in REGIONS:
        value = clients.client("ssm", region=region).get_parameter(
            Name="/eks-ami-pipeline/eks-node/stable")["Parameter"]["Value"]
        assert value == out.image_ids[region]
    with pytest.raises(OperationFailed):  # a channel that did not exist is removed again
        move_pointers(settings, clients, gate, "fresh")
    for region in (HOME, WEST):
        names = [p["Name"] for p in clients.client("ssm", region=region).get_parameters_by_path(
            Path="/eks-ami-pipeline", Recursive=True)["Parameters"]]
        assert "/eks-ami-pipeline/eks-node/fresh" not in names


def test_history_shows_every_regions_copy_and_its_users(settings, clients, record):
    out = distribute(settings, clients, record, wait_delay=0.05)
    gate = gate_publication(settings, clients, record, wait=False)
    move_pointers(settings, clients, gate, "stable")
    clients.client("ec2", region=EU).create_launch_template(
        LaunchTemplateName="eu-nodes", LaunchTemplateData={"ImageId": out.image_ids[EU]})
    clients.client("ec2", region=WEST).create_launch_template(
        LaunchTemplateName="west-nodes",
        LaunchTemplateData={"ImageId": "resolve:ssm:/eks-ami-pipeline/eks-node/stable"})

    result = lineage.history(settings, clients)
    (row,) = result.rows
    assert row.image_ids == out.image_ids and result.regions == sorted(REGIONS)
    assert sorted((v.region, v.template_name, v.version, v.is_default, v.via_pointer)
                  for v in row.template_versions) == [
        (EU, "eu-nodes", 1, True, None),
        (WEST, "west-nodes", 1, True, "/eks-ami-pipeline/eks-node/stable")]
    assert sorted((p.region, p.ami_id) for p in row.pointers) == sorted(out.image_ids.items())
    text = result.summary()
    for region in REGIONS:
        assert f"{region}  {out.image_ids[region]}" in text


# --------------------------------------------------------------------------- keys and encryption


def encrypted_record(clients: Clients) -> BuildRecord:
    """A build whose AMI's root snapshot is encrypted (as an encrypted import makes it)."""
    ec2 = clients.client("ec2")
    vol = ec2.create_volume(AvailabilityZone=f"{HOME}a", Size=1, Encrypted=True)["VolumeId"]
    snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    # RegisterImage refuses a snapshot that is not 'completed' yet (realistic timing).
    ec2.get_waiter("snapshot_completed").wait(
        SnapshotIds=[snap], WaiterConfig={"Delay": 0.1, "MaxAttempts": 100})
    ami = ec2.register_image(
        Name="eks-node-encrypted", Architecture="x86_64", VirtualizationType="hvm",
        RootDeviceName="/dev/xvda",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snap}}])["ImageId"]
    return BuildRecord(build_id=T.new_build_id(), image_name="eks-node", method="vm-import",
                       status="succeeded", started_at=BuildRecord.now(), image_ids={HOME: ami})


def test_unknown_kms_key_is_refused_before_any_copy(aws_settings, tmp_path, clients, record):
    missing = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    settings = settings_for(aws_settings, tmp_path, missing)
    with pytest.raises(InputError, match=f"kms_key_ids.{EU}: key {missing} does not exist"):
        distribute(settings, clients, record, wait_delay=0.05)
    for region in (WEST, EU):
        assert images_of_build(clients, region, record.build_id) == []


def test_disabled_kms_key_is_refused(aws_settings, tmp_path, clients, record, eu_key):
    clients.client("kms", region=EU).disable_key(KeyId=eu_key.rsplit("/", 1)[1])
    with pytest.raises(InputError, match="Disabled"):
        distribute(settings_for(aws_settings, tmp_path, eu_key), clients, record, wait_delay=0.05)
    assert images_of_build(clients, EU, record.build_id) == []


def test_sharing_an_encrypted_image_needs_a_key_in_every_target_region(aws_settings, tmp_path,
                                                                       clients, eu_key):
    rec = encrypted_record(clients)
    settings = settings_for(aws_settings, tmp_path, eu_key)  # no key for us-west-2
    with pytest.raises(InputError, match=f"copy in {WEST} would use that region's AWS managed"):
        distribute(settings, clients, rec, wait_delay=0.05)
    for region in (WEST, EU):
        assert images_of_build(clients, region, rec.build_id) == []

    west_key = clients.client("kms", region=WEST).create_key()["KeyMetadata"]["Arn"]
    settings = settings_for(aws_settings, tmp_path, eu_key, kms_key_ids={EU: eu_key, WEST: west_key})
    out = distribute(settings, clients, rec, wait_delay=0.05)
    assert set(out.image_ids) == set(REGIONS)
    snaps = clients.client("ec2", region=WEST).describe_snapshots(
        SnapshotIds=out.snapshot_ids[WEST])["Snapshots"]
    assert all(s["Encrypted"] for s in snaps)


def test_an_unshared_encrypted_image_copies_with_default_keys(aws_settings, tmp_path, clients,
                                                              eu_key):
    rec = encrypted_record(clients)
    out = distribute(settings_for(aws_settings, tmp_path, eu_key, share_with=()), clients, rec,
                     wait_delay=0.05)
    assert set(out.image_ids) == set(REGIONS)


def test_rerun_after_a_failed_distribution_copies_again(settings, clients, record):
    def stuck(parsed: dict[str, Any], **_: Any) -> None:
        set_state(EU, parsed["ImageId"], "pending")

    eu = clients.client("ec2", region=EU)
    eu.meta.events.register("after-call.ec2.CopyImage", stuck, unique_id="stuck")
    with pytest.raises(OperationFailed):
        distribute(settings, clients, record, wait_delay=0.05, timeout=0.2)
    eu.meta.events.unregister("after-call.ec2.CopyImage", unique_id="stuck")
    out = distribute(settings, clients, record, wait_delay=0.05)
    for region in (WEST, EU):
        (img,) = images_of_build(clients, region, record.build_id)
        assert img["ImageId"] == out.image_ids[region] and img["State"] == "available"


def test_copy_is_renamed_when_its_name_is_taken_in_the_target_region(settings, clients, record):
    clients.client("ec2", region=WEST).register_image(Name="eks-node-b1")  # same name, older
    out = distribute(settings, clients, record, wait_delay=0.05)
    names = {r: clients.client("ec2", region=r).describe_images(
        ImageIds=[out.image_ids[r]])["Images"][0]["Name"] for r in REGIONS}
    assert names == {HOME: "eks-node-b1", EU: "eks-node-b1",
                     WEST: f"eks-node-b1-{record.build_id}"}
