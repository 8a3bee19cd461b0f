"""The seeded public EKS AMIs and SSM parameters, read back over HTTP.

Sources: eks/latest/userguide/retrieve-ami-id.html (parameter names), AWS-FACTS §4 (AL2023
bootstrap.sh stub, nodeadm and units; AL2 real bootstrap.sh; no AL2 AMIs after 1.32 per
eks/latest/userguide/al2023.html), AWS-FACTS §6 (seeds are lost on reset unless re-seeded).
"""
from __future__ import annotations

import struct
import subprocess
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

REGIONS = ("us-east-1", "us-east-2", "us-west-2", "eu-west-1")
BS = 524288
EKS = "/aws/service/eks/optimized-ami"


def _param(ssm, name: str) -> str:
    return ssm.get_parameter(Name=name)["Parameter"]["Value"]


def _disk(ebs, sid: str, size: int) -> bytes:
    out = bytearray(size)
    for b in ebs.list_snapshot_blocks(SnapshotId=sid)["Blocks"]:
        if b["BlockIndex"] * BS >= size:
            break
        data = ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=b["BlockIndex"],
                                      BlockToken=b["BlockToken"])["BlockData"].read()
        start = b["BlockIndex"] * BS
        out[start:start + BS] = data[: size - start]
    return bytes(out)


def _first_gpt_partition(disk: bytes) -> bytes:
    """Partition 1 of a GPT disk, read from the header (UEFI spec 5.3), no product code."""
    assert disk[512:520] == b"EFI PART"
    entries_lba, = struct.unpack_from("<Q", disk, 512 + 72)
    entry = disk[entries_lba * 512: entries_lba * 512 + 128]
    first, last = struct.unpack_from("<QQ", entry, 32)
    return disk[first * 512:(last + 1) * 512]


def _cat(fs: bytes, path: str, tmp: Path) -> str:
    img = tmp / "fs.img"
    img.write_bytes(fs)
    proc = subprocess.run(["debugfs", "-R", f"cat {path}", str(img)], capture_output=True)
    return proc.stdout.decode("latin-1")


@pytest.mark.parametrize("region", REGIONS)
def test_parameters_exist_in_every_seed_region(clients, region):
    ssm, ec2 = clients.client("ssm", region=region), clients.client("ec2", region=region)
    ids = {}
    for k8s in ("1.29", "1.31", "1.34"):
        for arch in ("x86_64", "arm64"):
            name = (f"/aws/service/eks/optimized-ami/{k8s}/amazon-linux-2023/{arch}/standard/"
                    "recommended/image_id")
            ids[_param(ssm, name)] = (f"amazon-eks-node-al2023-{arch}-standard-{k8s}-", arch)
    ids[_param(ssm, "/aws/service/eks/optimized-ami/1.30/amazon-linux-2/recommended/image_id")] = \
        ("amazon-eks-node-1.30-", "x86_64")
    images = ec2.describe_images(ImageIds=list(ids))["Images"]
    assert len(images) == len(ids)
    for img in images:
        prefix, arch = ids[img["ImageId"]]
        assert img["Name"].startswith(prefix) and img["Architecture"] == arch
        assert img["State"] == "available" and img["OwnerId"] == "602401143452"
        assert img["RootDeviceName"] == "/dev/xvda" and img["VirtualizationType"] == "hvm"
    with pytest.raises(ClientError) as exc:  # EKS publishes no AL2 AMIs for 1.33+
        ssm.get_parameter(Name=f"{EKS}/1.33/amazon-linux-2/recommended/image_id")
    assert exc.value.response["Error"]["Code"] == "ParameterNotFound"


def test_path_query_lists_the_tree(clients):
    ssm = clients.client("ssm")
    names = [p["Name"] for page in ssm.get_paginator("get_parameters_by_path").paginate(
        Path="/aws/service/eks/optimized-ami/1.31", Recursive=True) for p in page["Parameters"]]
    assert f"{EKS}/1.31/amazon-linux-2023/arm64/standard/recommended/image_id" in names
    assert "/aws/service/eks/optimized-ami/1.31/amazon-linux-2/recommended/image_id" in names


@pytest.mark.parametrize("kind,param", [
    ("al2023", f"{EKS}/1.31/amazon-linux-2023/x86_64/standard/recommended/image_id"),
    ("al2", "/aws/service/eks/optimized-ami/1.31/amazon-linux-2/recommended/image_id"),
])
def test_root_snapshot_holds_a_real_filesystem(clients, kind, param, tmp_path):
    ssm, ec2, ebs = (clients.client(s) for s in ("ssm", "ec2", "ebs"))
    img = ec2.describe_images(ImageIds=[_param(ssm, param)])["Images"][0]
    sid = img["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    fs = _first_gpt_partition(_disk(ebs, sid, 64 * 1024 * 1024))
    assert fs[1024 + 56:1024 + 58] == b"\x53\xef"  # ext2/3/4 superblock magic
    bootstrap = _cat(fs, "/etc/eks/bootstrap.sh", tmp_path)
    os_release = _cat(fs, "/etc/os-release", tmp_path)
    if kind == "al2023":
        assert 'VERSION_ID="2023"' in os_release
        assert "bootstrap.sh has been removed" in bootstrap and "exit 1" in bootstrap
        assert _cat(fs, "/usr/bin/nodeadm", tmp_path).startswith("\x7fELF")
        assert "nodeadm" in _cat(fs, "/etc/systemd/system/nodeadm-run.service", tmp_path)
    else:
        assert 'VERSION_ID="2"' in os_release
        assert "--apiserver-endpoint" in bootstrap and "--b64-cluster-ca" in bootstrap
        assert "bootstrap.sh has been removed" not in bootstrap and len(bootstrap) > 2000


def test_reset_restores_seeds_quickly(emulator, clients):
    ssm, ec2 = clients.client("ssm"), clients.client("ec2")
    name = f"{EKS}/1.32/amazon-linux-2023/x86_64/standard/recommended/image_id"
    ami = _param(ssm, name)
    ec2.deregister_image(ImageId=ami)
    mine = emulator.seed_image("bare", name="my-bare-base")
    emulator.reset()  # its speed is a benchmark figure, not a timed test
    fresh = _param(ssm, name)
    assert ec2.describe_images(ImageIds=[fresh])["Images"][0]["State"] == "available"
    with pytest.raises(ClientError):
        ec2.describe_images(ImageIds=[mine])


def test_seed_image_bare_for_tests(emulator, clients, tmp_path):
    ec2, ebs = clients.client("ec2", region="us-west-2"), clients.client("ebs", region="us-west-2")
    ami = emulator.seed_image("bare", region="us-west-2", name="bare-base", arch="arm64")
    img = ec2.describe_images(ImageIds=[ami])["Images"][0]
    assert (img["Name"], img["Architecture"]) == ("bare-base", "arm64")
    assert img["OwnerId"] == "123456789012"
    assert [i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]] == [ami]
    fs = _first_gpt_partition(_disk(ebs, img["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"],
                                    64 * 1024 * 1024))
    assert _cat(fs, "/etc/eks/bootstrap.sh", tmp_path) == ""  # no bootstrap contract
    assert "debian" in _cat(fs, "/etc/os-release", tmp_path)
