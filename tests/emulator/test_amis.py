"""RegisterImage/DescribeImages attributes and disk data following EC2 resources.

Sources: botocore ec2 model (RegisterImage, CreateImage, CopyImage, DeregisterImage),
AWSEC2/latest/APIReference/API_RegisterImage.html (Architecture default i386,
VirtualizationType default paravirtual), AWSEC2/latest/UserGuide/deregister-ami.html
(deregistering keeps snapshots; a snapshot used by an AMI cannot be deleted),
AWSEC2/latest/UserGuide/CopyingAMIs.html (tags copied only with CopyImageTags),
AWS-FACTS §2.
"""
from __future__ import annotations

import base64
import hashlib

import pytest
from botocore.exceptions import ClientError

BS = 524288


def _upload(ebs, blocks: dict[int, bytes], size: int = 1) -> str:
    sid = ebs.start_snapshot(VolumeSize=size)["SnapshotId"]
    for i, d in blocks.items():
        ebs.put_snapshot_block(SnapshotId=sid, BlockIndex=i, BlockData=d, DataLength=BS,
                               Checksum=base64.b64encode(hashlib.sha256(d).digest()).decode(),
                               ChecksumAlgorithm="SHA256")
    ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=len(blocks))
    return sid


def _read(ebs, sid: str) -> dict[int, bytes]:
    out = {}
    for b in ebs.list_snapshot_blocks(SnapshotId=sid)["Blocks"]:
        out[b["BlockIndex"]] = ebs.get_snapshot_block(
            SnapshotId=sid, BlockIndex=b["BlockIndex"], BlockToken=b["BlockToken"]
        )["BlockData"].read()
    return out


def _root_snap(ec2, ami: str, region_client=None) -> str:
    img = (region_client or ec2).describe_images(ImageIds=[ami])["Images"][0]
    return img["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]


@pytest.fixture
def ec2(clients):
    return clients.client("ec2")


@pytest.fixture
def ebs(clients):
    return clients.client("ebs")


DATA = {0: b"\x11" * BS, 9: b"\x99" * BS}


def _register(ec2, sid: str, name: str = "my-image", **extra) -> str:
    return ec2.register_image(
        Name=name, RootDeviceName="/dev/xvda",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {
            "SnapshotId": sid, "VolumeSize": 8, "VolumeType": "gp3",
            "DeleteOnTermination": True}}], **extra)["ImageId"]


def test_register_image_keeps_every_attribute(ec2, ebs):
    sid = _upload(ebs, DATA)
    ami = _register(ec2, sid, Architecture="arm64", VirtualizationType="hvm", EnaSupport=True,
                    BootMode="uefi", ImdsSupport="v2.0",
                    TagSpecifications=[{"ResourceType": "image",
                                        "Tags": [{"Key": "team", "Value": "eks"}]}])
    img = ec2.describe_images(ImageIds=[ami])["Images"][0]
    assert img["BlockDeviceMappings"] == [{"DeviceName": "/dev/xvda", "Ebs": {
        "DeleteOnTermination": True, "SnapshotId": sid, "VolumeSize": 8, "VolumeType": "gp3",
        "Encrypted": False}}]
    assert (img["RootDeviceName"], img["RootDeviceType"]) == ("/dev/xvda", "ebs")
    assert (img["Architecture"], img["VirtualizationType"]) == ("arm64", "hvm")
    assert img["EnaSupport"] is True and img["BootMode"] == "uefi"
    assert img["ImdsSupport"] == "v2.0"
    assert img["Tags"] == [{"Key": "team", "Value": "eks"}]
    # API_DescribeImageAttribute: bootMode / imdsSupport answer {"Value": ...}.
    for attr, key, value in (("bootMode", "BootMode", "uefi"),
                             ("imdsSupport", "ImdsSupport", "v2.0")):
        got = ec2.describe_image_attribute(ImageId=ami, Attribute=attr)
        assert got[key] == {"Value": value}
    # Filters used by lineage tooling.
    found = ec2.describe_images(Filters=[{"Name": "block-device-mapping.snapshot-id",
                                          "Values": [sid]}])["Images"]
    assert [i["ImageId"] for i in found] == [ami]


def test_register_image_defaults_and_validation(ec2, ebs):
    sid = _upload(ebs, DATA)
    ami = ec2.register_image(Name="defaults", RootDeviceName="/dev/sda1", BlockDeviceMappings=[
        {"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": sid}}])["ImageId"]
    img = ec2.describe_images(ImageIds=[ami])["Images"][0]
    # API_RegisterImage: Architecture default i386, VirtualizationType default paravirtual.
    assert (img["Architecture"], img["VirtualizationType"]) == ("i386", "paravirtual")
    assert img["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 1  # the snapshot's size
    with pytest.raises(ClientError) as exc:  # AMI names are unique per account and region
        _register(ec2, sid, name="defaults")
    assert exc.value.response["Error"]["Code"] == "InvalidAMIName.Duplicate"
    with pytest.raises(ClientError) as exc:
        _register(ec2, "snap-0123456789abcdef0", name="nosnap")
    assert exc.value.response["Error"]["Code"] == "InvalidSnapshot.NotFound"
    big = _upload(ebs, DATA, size=4)
    with pytest.raises(ClientError) as exc:  # 8 GiB mapping < ... no: ask for 2 < 4
        ec2.register_image(Name="small", BlockDeviceMappings=[
            {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": big, "VolumeSize": 2}}])
    assert exc.value.response["Error"]["Code"] == "InvalidBlockDeviceMapping"


def test_deregister_keeps_snapshot_and_in_use_snapshot_cannot_be_deleted(ec2, ebs):
    sid = _upload(ebs, DATA)
    ami = _register(ec2, sid)
    with pytest.raises(ClientError) as exc:
        ec2.delete_snapshot(SnapshotId=sid)
    assert exc.value.response["Error"]["Code"] == "InvalidSnapshot.InUse"
    ec2.deregister_image(ImageId=ami)
    assert ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["SnapshotId"] == sid
    assert _read(ebs, sid) == DATA
    ec2.delete_snapshot(SnapshotId=sid)
    with pytest.raises(ClientError) as exc:
        ec2.describe_snapshots(SnapshotIds=[sid])
    assert exc.value.response["Error"]["Code"] == "InvalidSnapshot.NotFound"


def test_deregister_with_delete_associated_snapshots(ec2, ebs):
    # botocore model DeregisterImage.DeleteAssociatedSnapshots.
    sid = _upload(ebs, DATA)
    ami = _register(ec2, sid)
    out = ec2.deregister_image(ImageId=ami, DeleteAssociatedSnapshots=True)
    assert out["DeleteSnapshotResults"] == [{"SnapshotId": sid, "ReturnCode": "success"}] or \
        [r.get("ReturnCode") for r in out["DeleteSnapshotResults"]] == ["success"]
    left = ec2.describe_snapshots(Filters=[{"Name": "snapshot-id", "Values": [sid]}])
    assert not left["Snapshots"]


def test_instance_volume_and_create_image_carry_the_bytes(ec2, ebs):
    sid = _upload(ebs, DATA)
    ami = _register(ec2, sid, Architecture="x86_64", VirtualizationType="hvm",
                    BootMode="uefi-preferred")
    inst = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1,
                             InstanceType="m5.large")["Instances"][0]
    assert inst["RootDeviceName"] == "/dev/xvda"
    vol_id = inst["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    vol = ec2.describe_volumes(VolumeIds=[vol_id])["Volumes"][0]
    assert (vol["SnapshotId"], vol["Size"], vol["VolumeType"]) == (sid, 8, "gp3")
    ec2.stop_instances(InstanceIds=[inst["InstanceId"]])
    baked = ec2.create_image(InstanceId=inst["InstanceId"], Name="baked", TagSpecifications=[
        {"ResourceType": "snapshot", "Tags": [{"Key": "k", "Value": "v"}]}])["ImageId"]
    img = ec2.describe_images(ImageIds=[baked])["Images"][0]
    assert img["SourceInstanceId"] == inst["InstanceId"]
    assert (img["Architecture"], img["BootMode"]) == ("x86_64", "uefi-preferred")
    new_sid = img["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    assert new_sid != sid and _read(ebs, new_sid) == DATA
    snap = ec2.describe_snapshots(SnapshotIds=[new_sid])["Snapshots"][0]
    assert snap["Tags"] == [{"Key": "k", "Value": "v"}]
    assert snap["Description"].startswith(f"Created by CreateImage({inst['InstanceId']})")


def test_run_instances_request_mapping_overlays_ami(ec2, ebs):
    sid = _upload(ebs, DATA)
    ami = _register(ec2, sid)
    inst = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, BlockDeviceMappings=[
        {"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 30}}])["Instances"][0]
    vol_id = inst["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    vol = ec2.describe_volumes(VolumeIds=[vol_id])["Volumes"][0]
    assert (vol["SnapshotId"], vol["Size"]) == (sid, 30)
    with pytest.raises(ClientError) as exc:
        ec2.run_instances(ImageId="ami-0123456789abcdef0", MinCount=1, MaxCount=1)
    assert exc.value.response["Error"]["Code"] == "InvalidAMIID.NotFound"


def test_copy_image_cross_region_copies_blocks_and_tags_on_request(clients, ec2, ebs):
    sid = _upload(ebs, DATA)
    ami = _register(ec2, sid, TagSpecifications=[{"ResourceType": "image",
                                                   "Tags": [{"Key": "a", "Value": "1"}]}])
    west = clients.client("ec2", region="us-west-2")
    west_ebs = clients.client("ebs", region="us-west-2")
    plain = west.copy_image(SourceImageId=ami, SourceRegion="us-east-1", Name="copy-1")["ImageId"]
    tagged = west.copy_image(SourceImageId=ami, SourceRegion="us-east-1", Name="copy-2",
                             CopyImageTags=True)["ImageId"]
    imgs = {i["ImageId"]: i for i in west.describe_images(ImageIds=[plain, tagged])["Images"]}
    assert imgs[plain].get("Tags", []) == []
    assert imgs[tagged]["Tags"] == [{"Key": "a", "Value": "1"}]
    for img in imgs.values():
        snap = img["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
        assert snap != sid and _read(west_ebs, snap) == DATA
        assert img["SourceImageId"] == ami and img["SourceImageRegion"] == "us-east-1"


def test_copy_snapshot_create_volume_create_snapshot_copy_blocks(ec2, ebs):
    sid = _upload(ebs, DATA)
    copy = ec2.copy_snapshot(SourceSnapshotId=sid, SourceRegion="us-east-1")["SnapshotId"]
    assert _read(ebs, copy) == DATA
    vol = ec2.create_volume(SnapshotId=copy, AvailabilityZone="us-east-1a")["VolumeId"]
    snap2 = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    assert _read(ebs, snap2) == DATA
    big = _upload(ebs, DATA, size=4)
    with pytest.raises(ClientError) as exc:  # a volume cannot be smaller than its snapshot
        ec2.create_volume(SnapshotId=big, Size=2, AvailabilityZone="us-east-1a")
    assert exc.value.response["Error"]["Code"] == "InvalidParameterValue"
    empty = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
    assert _read(ebs, ec2.create_snapshot(VolumeId=empty)["SnapshotId"]) == {}


def test_run_instances_from_template_resolves_ssm_image(clients, ec2):
    # AWSEC2/latest/UserGuide/create-launch-template.html#use-an-ssm-parameter-instead-of-an-ami-id:
    # resolve:ssm: is resolved when the instance launches.
    param = ("/aws/service/eks/optimized-ami/1.31/amazon-linux-2023/x86_64/standard/"
             "recommended/image_id")
    ami = clients.client("ssm").get_parameter(Name=param)["Parameter"]["Value"]
    ec2.create_launch_template(LaunchTemplateName="ssm-lt", LaunchTemplateData={
        "ImageId": f"resolve:ssm:{param}", "InstanceType": "m5.large"})
    inst = ec2.run_instances(MinCount=1, MaxCount=1,
                             LaunchTemplate={"LaunchTemplateName": "ssm-lt"})["Instances"][0]
    assert inst["ImageId"] == ami
    vol = inst["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    root = ec2.describe_images(ImageIds=[ami])["Images"][0]["BlockDeviceMappings"][0]["Ebs"]
    assert ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]["SnapshotId"] == root["SnapshotId"]
    ec2.create_launch_template(LaunchTemplateName="bad-lt", LaunchTemplateData={
        "ImageId": "resolve:ssm:/no/such/param"})
    with pytest.raises(ClientError) as exc:
        ec2.run_instances(MinCount=1, MaxCount=1, LaunchTemplate={"LaunchTemplateName": "bad-lt"})
    assert exc.value.response["Error"]["Code"] == "InvalidParameterValue"


def test_copy_image_name_must_be_unique_in_the_destination(ec2, ebs):
    sid = _upload(ebs, DATA)
    ami = _register(ec2, sid, name="dup-src")
    with pytest.raises(ClientError) as exc:  # same Region: the name is taken by the source
        ec2.copy_image(SourceImageId=ami, SourceRegion="us-east-1", Name="dup-src")
    assert exc.value.response["Error"]["Code"] == "InvalidAMIName.Duplicate"


def test_instance_type_must_match_ami_architecture(ec2, ebs):
    # EC2 refuses e.g. an x86_64 instance type for an arm64 AMI (InvalidParameterValue).
    ami = _register(ec2, _upload(ebs, DATA), Architecture="arm64", VirtualizationType="hvm")
    with pytest.raises(ClientError) as exc:
        ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, InstanceType="m5.large")
    assert exc.value.response["Error"]["Code"] == "InvalidParameterValue"
    assert "architecture" in exc.value.response["Error"]["Message"]
    ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, InstanceType="m6g.large")
