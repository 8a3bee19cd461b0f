"""verify_ami end to end: the emulator's EBS direct APIs, real root disks, AMI tags.

The emulator seeds the public EKS AMIs (real GPT/ext4 roots, 512 KiB blocks); other
AMIs are made here by writing an image from the factory through StartSnapshot /
PutSnapshotBlock / CompleteSnapshot and RegisterImage.
"""
from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest

from pipeline.core import tags as T
from pipeline_dev.diskimage import ImageSpec, build_image, root_tree
from pipeline.aws.snapshot_read import open_snapshot
from pipeline.core.errors import ImageReadError
from pipeline.image.verify import verify_image
from pipeline.lineage.verify_ami import verify_ami

MiB = 1024 * 1024
BLOCK = 524288
AL2023 = ("/aws/service/eks/optimized-ami/1.31/amazon-linux-2023/x86_64/standard/recommended/"
          "image_id")
AL2 = "/aws/service/eks/optimized-ami/1.31/amazon-linux-2/recommended/image_id"


def _upload(clients: Any, data: bytes, gib: int = 1) -> str:
    """Write ``data`` as a new EBS snapshot (zero blocks skipped), return its id."""
    ebs = clients.client("ebs")
    snap = ebs.start_snapshot(VolumeSize=gib, Timeout=60)["SnapshotId"]
    written = 0
    for index in range(0, -(-len(data) // BLOCK)):
        block = data[index * BLOCK:(index + 1) * BLOCK].ljust(BLOCK, b"\0")
        if not block.strip(b"\0"):
            continue
        digest = base64.b64encode(hashlib.sha256(block).digest()).decode()
        ebs.put_snapshot_block(SnapshotId=snap, BlockIndex=index, BlockData=block,
                               DataLength=BLOCK, Checksum=digest, ChecksumAlgorithm="SHA256")
        written += 1
    ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=written)
    return str(snap)


def _register(clients: Any, snapshot_id: str, name: str) -> str:
    ec2 = clients.client("ec2")
    return str(ec2.register_image(
        Name=name, Architecture="x86_64", VirtualizationType="hvm", RootDeviceName="/dev/xvda",
        EnaSupport=True, BootMode="uefi-preferred",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda",
                              "Ebs": {"SnapshotId": snapshot_id, "VolumeSize": 1,
                                      "VolumeType": "gp3"}}])["ImageId"])


def _tags(clients: Any, ami: str) -> dict[str, str]:
    image = clients.client("ec2").describe_images(ImageIds=[ami])["Images"][0]
    return T.from_tag_list(image.get("Tags"))


@pytest.fixture(scope="session")
def xfs_lvm_disk(image_cache: Path) -> Path:
    out = image_cache / "ami-xfs-lvm.raw"
    if not out.exists():
        tree = root_tree(image_cache / "ami-tree-al2023", "al2023")
        build_image(tree, out, ImageSpec("xfs", "lvm", "raw", 320 * MiB))
    return out


@pytest.mark.parametrize("param,mechanism", [(AL2023, "nodeadm"), (AL2, "bootstrap.sh")])
def test_seeded_eks_amis(param: str, mechanism: str, clients: Any) -> None:
    ami = clients.client("ssm").get_parameter(Name=param)["Parameter"]["Value"]
    report = verify_ami(clients, ami)
    assert (report.verdict, report.mechanism) == ("ok", mechanism), report.summary()
    assert report.source["ami"] == ami and report.source["snapshot"].startswith("snap-")
    assert report.source["format"] == "ebs-snapshot"
    assert 0 < report.api_calls <= 200  # type: ignore[operator]
    assert report.bytes_read == report.api_calls * BLOCK  # type: ignore[operator]
    tags = _tags(clients, ami)
    assert tags[T.VERIFY_VERDICT] == "ok" and tags[T.VERIFY_MECHANISM] == mechanism
    assert tags[T.VERIFY_TIME] == report.checked_at and tags[T.VERIFY_TOOL_VERSION]
    assert report.tags_written


def test_failing_ami_is_tagged_with_its_verdict(clients: Any, emulator: Any) -> None:
    ami = emulator.seed_image("bare")
    report = verify_ami(clients, ami, require="any")
    assert report.verdict == "missing" and report.exit_code == 1
    assert _tags(clients, ami)[T.VERIFY_VERDICT] == "missing"
    assert _tags(clients, ami)[T.VERIFY_MECHANISM] == "none"


def test_require_mismatch_and_no_tag(clients: Any) -> None:
    ami = clients.client("ssm").get_parameter(Name=AL2023)["Parameter"]["Value"]
    report = verify_ami(clients, ami, require="bootstrap.sh", tag=False)
    assert report.verdict == "stub" and report.exit_code == 1
    assert T.VERIFY_VERDICT not in _tags(clients, ami)


def test_own_snapshot_xfs_on_lvm_matches_the_image(clients: Any, xfs_lvm_disk: Path) -> None:
    """The same disk read from a file and from a snapshot gives the same report."""
    data = xfs_lvm_disk.read_bytes()
    snap = _upload(clients, data)
    ami = _register(clients, snap, "verify-xfs-lvm")
    remote = verify_ami(clients, ami)
    local = verify_image(xfs_lvm_disk)
    assert remote.verdict == local.verdict == "ok"
    assert remote.mechanism == local.mechanism == "nodeadm"
    assert remote.bootstrap.sha256 == local.bootstrap.sha256
    assert remote.source["partition"] == "lvm:vg0/root@mbr:1"
    assert remote.source["filesystem"] == "xfs"
    assert remote.api_calls is not None and remote.api_calls <= 200


def test_snapshot_disk_reads_zeros_for_unwritten_blocks(clients: Any) -> None:
    data = bytearray(4 * BLOCK)
    data[BLOCK + 100:BLOCK + 105] = b"hello"
    data[3 * BLOCK:3 * BLOCK + 3] = b"end"
    snap = _upload(clients, bytes(data))
    with open_snapshot(clients, snap) as disk:
        assert disk.size == 1024 * MiB and disk.block_size == BLOCK
        assert list(disk.allocated_ranges()) == [(BLOCK, BLOCK), (3 * BLOCK, BLOCK)]
        assert disk.read(0, 10) == bytes(10) and disk.api_calls == 0
        assert disk.read(BLOCK + 98, 9) == b"\0\0hello\0\0"
        assert disk.read(BLOCK + 100, 5) == b"hello"  # cached
        assert disk.api_calls == 1
        assert disk.read(BLOCK * 2 - 2, BLOCK + 5) == bytes(BLOCK + 2) + b"end"
        assert disk.api_calls == 2 and disk.bytes_read == 2 * BLOCK


def test_unknown_ami_and_snapshot_are_read_errors(clients: Any) -> None:
    with pytest.raises(ImageReadError, match="ami-0123456789abcdef0 not found in us-east-1"):
        verify_ami(clients, "ami-0123456789abcdef0")
    with pytest.raises(ImageReadError, match="snap-0123456789abcdef0"):
        open_snapshot(clients, "snap-0123456789abcdef0")


def test_snapshot_without_linux_filesystem_is_a_read_error_and_not_tagged(clients: Any) -> None:
    snap = _upload(clients, b"\x42" * (2 * BLOCK))
    ami = _register(clients, snap, "verify-junk")
    with pytest.raises(ImageReadError, match="no Linux root filesystem"):
        verify_ami(clients, ami)
    assert T.VERIFY_VERDICT not in _tags(clients, ami)


def test_task_verify_ami(clients: Any, endpoint: str, tmp_path: Path) -> None:
    """``invoke verify --ami`` end to end: config file, --region, exit codes, tags."""
    import json
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(f"aws:\n  region: us-east-1\n  endpoint_url: {endpoint}\n  max_attempts: 2\n")
    ami = clients.client("ssm").get_parameter(Name=AL2)["Parameter"]["Value"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(Path(sys.executable).parent / "invoke"), "verify", *args,
                               "--config", str(cfg)], cwd=repo, capture_output=True, text=True,
                              timeout=120, env=dict(os.environ))

    ok = run("--ami", ami, "--region", "us-east-1", "--json")
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["verdict"] == "ok" and doc["mechanism"] == "bootstrap.sh" and doc["api_calls"] <= 200
    assert _tags(clients, ami)[T.VERIFY_VERDICT] == "ok"
    fail = run("--ami", ami, "--require", "nodeadm", "--no-tag")
    assert fail.returncode == 1 and fail.stdout.startswith("FAIL ")
    missing = run("--ami", "ami-0123456789abcdef0")
    assert missing.returncode == 2
    assert missing.stderr.strip() == ("error: AMI ami-0123456789abcdef0 not found in us-east-1; "
                                      "check the id and the region")


def test_block_failing_its_checksum_is_a_read_error(clients: Any) -> None:
    """Bit rot between the store and us: the block's SHA-256 no longer matches."""
    from pipeline_dev.emulator.blockstore import STORE, Block

    data = bytearray(2 * BLOCK)
    data[BLOCK:BLOCK + 4] = b"data"
    snap = _upload(clients, bytes(data))
    good = STORE.get(snap, 1)
    assert good is not None
    STORE.put(snap, 1, Block(b"x" + good.data[1:], good.digest))  # fault injection
    with open_snapshot(clients, snap) as disk:
        with pytest.raises(ImageReadError, match="block 1 fails its SHA-256 checksum"):
            disk.read(BLOCK, 4)


def test_kubelet_version_skew_and_warnings_are_tagged(clients: Any, image_cache: Path) -> None:
    """The kubelet version and verify's warnings land on the AMI and in the build record."""
    from pipeline.core.records import BuildRecord
    from pipeline.lineage.store import lineage_tags, record_from_tags

    out = image_cache / "ami-skew-dirty.raw"
    if not out.exists():
        tree = root_tree(image_cache / "ami-tree-skew-dirty", "al2023",
                         kubelet_version="v1.33.1-eks-1234567",
                         extra={"/etc/hostname": "ip-10-0-0-1\n",
                                "/etc/ssh/ssh_host_rsa_key": "key\n"})
        build_image(tree, out, ImageSpec("ext4", "gpt", "raw", 64 * MiB))
    ami = _register(clients, _upload(clients, out.read_bytes()), "verify-skew-dirty")
    ok = verify_ami(clients, ami, cluster_version="1.33")
    assert (ok.verdict, ok.mechanism) == ("ok", "nodeadm"), ok.summary()
    tags = _tags(clients, ami)
    assert tags[T.VERIFY_KUBELET_VERSION] == "v1.33.1-eks-1234567"
    assert tags[T.VERIFY_WARNINGS] == "ssh-host-keys hostname"
    ver = ok.to_verification()
    assert ver.kubelet_version == "v1.33.1-eks-1234567"
    assert ver.warnings == ("ssh-host-keys", "hostname")

    skewed = verify_ami(clients, ami, cluster_version="1.31")
    assert (skewed.verdict, skewed.exit_code) == ("version-skew", 1)
    assert _tags(clients, ami)[T.VERIFY_VERDICT] == "version-skew"
    strict = verify_ami(clients, ami, cluster_version="1.33", strict=True)
    assert strict.verdict == "ssh-host-keys"
    assert _tags(clients, ami)[T.VERIFY_WARNINGS] == "none"

    record = BuildRecord(build_id="b-20260101000000-abcdef", image_name="node", method="snapshot",
                         started_at="2026-01-01T00:00:00+00:00", verification=ver)
    again = BuildRecord.from_dict(record.to_dict())
    assert again.verification == ver
    back = record_from_tags(lineage_tags(record), region="us-east-1", image_id=ami)
    assert back is not None and back.verification is not None
    assert back.verification.kubelet_version == "v1.33.1-eks-1234567"
    assert back.verification.warnings == ("ssh-host-keys", "hostname")


def test_history_shows_the_kubelet_version() -> None:
    from pipeline.core.records import Verification
    from pipeline.lineage.store import HistoryResult, HistoryRow

    def row(build: str, ver: Verification | None) -> HistoryRow:
        return HistoryRow(build_id=build, image_name="node", method="bake", status="succeeded",
                          started_at="2026-01-01T00:00:00+00:00", finished_at=None,
                          source="ami-base", image_ids={"us-east-1": "ami-0123456789abcdef0"},
                          snapshot_ids={}, verification=ver)

    ver = Verification(verdict="ok", mechanism="nodeadm", checked_at="", tool_version="0",
                       kubelet_version="v1.31.2-eks-7f9249a", warnings=("hostname",))
    old = Verification(verdict="ok", mechanism="bootstrap.sh", checked_at="", tool_version="0")
    text = HistoryResult(rows=[row("b-1", ver), row("b-2", old), row("b-3", None)]).summary()
    head, first, second, third = text.splitlines()[:4]
    assert "KUBELET" in head
    assert "v1.31.2-eks-7f9249a" in first and "unknown" in second and "unverified" in third
    doc = HistoryResult(rows=[row("b-1", ver)]).to_dict()
    assert doc["builds"][0]["verification"]["kubelet_version"] == "v1.31.2-eks-7f9249a"
