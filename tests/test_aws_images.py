"""pipeline.aws.images: the snapshots of an AMI, read from a DescribeImages answer."""
from __future__ import annotations

from pipeline.aws.images import root_mapping, snapshots_of

IMAGE = {"ImageId": "ami-0123456789abcdef0", "RootDeviceName": "/dev/xvda",
         "BlockDeviceMappings": [
             {"DeviceName": "/dev/sdb", "Ebs": {"SnapshotId": "snap-0000000000000000b"}},
             {"DeviceName": "/dev/sdc", "VirtualName": "ephemeral0"},
             {"DeviceName": "/dev/sdd", "Ebs": None},
             {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": "snap-0000000000000000a"}}]}


def test_snapshots_of_keeps_mapping_order_and_skips_non_ebs() -> None:
    assert snapshots_of(IMAGE) == ["snap-0000000000000000b", "snap-0000000000000000a"]
    assert snapshots_of(None) == []
    assert snapshots_of({"ImageId": "ami-12c6146b"}) == []


def test_root_mapping_prefers_the_root_device() -> None:
    assert root_mapping(IMAGE) == ("snap-0000000000000000a", "/dev/xvda")
    other = {**IMAGE, "RootDeviceName": "/dev/sda1"}
    assert root_mapping(other) == ("snap-0000000000000000b", "/dev/sdb")
    assert root_mapping({"BlockDeviceMappings": [{"DeviceName": "/dev/sdc"}]}) is None


def test_resolve_ssm_image_ids_in_one_place(emulator, clients) -> None:
    from pipeline.aws.ssm import ImageIdResolver, ssm_reference

    ssm = clients.client("ssm")
    ssm.put_parameter(Name="/golden/eks", Value="ami-0123456789abcdef0", Type="String",
                      DataType="aws:ec2:image")
    assert ssm_reference("ami-0123456789abcdef0") is None
    assert ssm_reference("resolve:ssm:/golden/eks") == "/golden/eks"
    assert ssm_reference("resolve:ssm:arn:aws:ssm:us-east-1:123456789012:parameter/golden/eks") \
        == "/golden/eks"
    resolve = ImageIdResolver(ssm)
    assert resolve("resolve:ssm:/golden/eks") == "ami-0123456789abcdef0"
    assert resolve("resolve:ssm:arn:aws:ssm:us-east-1:123456789012:parameter/golden/eks") \
        == "ami-0123456789abcdef0"
    assert resolve("resolve:ssm:/no/such/parameter") is None
    assert resolve("ami-12c6146b") == "ami-12c6146b"
    assert resolve(None) is None


def test_paged_walks_every_page_and_translates_errors(emulator, clients) -> None:
    import pytest

    from pipeline.aws.clients import paged
    from pipeline.core.errors import AwsCallError

    ec2 = clients.client("ec2")
    tid = ec2.create_launch_template(LaunchTemplateName="paged", LaunchTemplateData={
        "ImageId": "ami-12c6146b"})["LaunchTemplate"]["LaunchTemplateId"]
    for n in range(4):
        ec2.create_launch_template_version(LaunchTemplateId=tid, LaunchTemplateData={
            "ImageId": f"ami-0000000{n}"})
    got = list(paged(ec2, "describe_launch_template_versions", "LaunchTemplateVersions",
                     what="listing", LaunchTemplateId=tid, PaginationConfig={"PageSize": 2}))
    assert sorted(int(v["VersionNumber"]) for v in got) == [1, 2, 3, 4, 5]
    with pytest.raises(AwsCallError) as err:
        list(paged(ec2, "describe_launch_template_versions", "LaunchTemplateVersions",
                   what="listing", LaunchTemplateId="lt-0000000000000000f"))
    assert err.value.code and err.value.operation == "DescribeLaunchTemplateVersions"
