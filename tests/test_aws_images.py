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
