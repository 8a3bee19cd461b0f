"""What every AWS account sees: the public EKS-optimized AMIs and their SSM parameters.

The root filesystems are real disk images built once per process with
:mod:`pipeline_dev.diskimage` (64 MiB raw GPT disk, one ext4 partition; XFS as on real AL2023
would need >= 320 MiB) and cached as 512 KiB blocks; a reset only re-inserts them.

Seeded in :data:`SEED_REGIONS` for :data:`K8S_VERSIONS`, owner 602401143452 (the EKS AMI
account, alias ``amazon``, public):

- ``/aws/service/eks/optimized-ami/<k8s>/amazon-linux-2023/{x86_64,arm64}/standard/``
  ``recommended/image_id``
  → ``amazon-eks-node-al2023-<arch>-standard-<k8s>-v20241115`` (AL2023-like root:
  bootstrap.sh stub, nodeadm and its units);
- ``/aws/service/eks/optimized-ami/<k8s>/amazon-linux-2/recommended/image_id``
  → ``amazon-eks-node-<k8s>-v20241115`` (AL2-like root with a real bootstrap.sh), only
  for k8s <= 1.32: EKS publishes no AL2 AMIs for 1.33 and later
  (https://docs.aws.amazon.com/eks/latest/userguide/al2023.html).

Each ``.../recommended/image_id`` also has sibling ``.../recommended/release_version``
and ``.../recommended`` (JSON) parameters, as the real tree does.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline_dev.emulator.blockstore import Block, blocks_from_file, new_snapshot, size_gib
from pipeline_dev.emulator.amis import make_ami

__all__ = ["SEED_REGIONS", "K8S_VERSIONS", "AL2_K8S_VERSIONS", "EKS_OWNER", "RELEASE",
           "seed_all", "seed_image", "base_disk", "ssm_name", "ami_name", "SeedDisk"]

SEED_REGIONS = ("us-east-1", "us-east-2", "us-west-2", "eu-west-1")
K8S_VERSIONS = ("1.29", "1.30", "1.31", "1.32", "1.33", "1.34")
AL2_K8S_VERSIONS = ("1.29", "1.30", "1.31", "1.32")
EKS_OWNER = "602401143452"
RELEASE = "v20241115"
DISK_BYTES = 64 * 1024 * 1024
ROOT_VOLUME_GIB = 20  # the EKS AMIs' root mapping size

_lock = threading.Lock()
_disks: dict[str, "SeedDisk"] = {}


@dataclass(frozen=True, slots=True)
class SeedDisk:
    """A built base root disk: its raw bytes as non-zero blocks, and its size."""

    kind: str
    blocks: dict[int, Block]
    nbytes: int


def base_disk(kind: str) -> SeedDisk:
    """The ``al2023``/``al2``/``bare`` base disk, built on first use and then cached."""
    from pipeline_dev.diskimage import ImageSpec, build_image, root_tree

    with _lock:
        if kind in _disks:
            return _disks[kind]
        work = Path(tempfile.mkdtemp(prefix=f"emulator-seed-{kind}-"))
        try:
            tree = root_tree(work / "tree", kind)
            raw = build_image(tree, work / "disk.raw",
                              ImageSpec(fs="ext4", table="gpt", fmt="raw", size=DISK_BYTES))
            disk = SeedDisk(kind, blocks_from_file(raw), DISK_BYTES)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        _disks[kind] = disk
        return disk


def ami_name(kind: str, k8s: str, arch: str = "x86_64") -> str:
    if kind == "al2023":
        return f"amazon-eks-node-al2023-{arch}-standard-{k8s}-{RELEASE}"
    if kind == "al2":
        return f"amazon-eks-node-{k8s}-{RELEASE}" if arch == "x86_64" else \
            f"amazon-eks-arm64-node-{k8s}-{RELEASE}"
    return f"bare-linux-{arch}-{RELEASE}"


def ssm_name(kind: str, k8s: str, arch: str = "x86_64") -> str:
    base = f"/aws/service/eks/optimized-ami/{k8s}"
    if kind == "al2023":
        return f"{base}/amazon-linux-2023/{arch}/standard/recommended/image_id"
    return f"{base}/amazon-linux-2/recommended/image_id"


def seed_image(ec2: Any, kind: str, *, name: str | None = None, arch: str = "x86_64",
               k8s: str = "1.31", owner_id: str | None = None, public: bool = False,
               owner_alias: str | None = None) -> Any:
    """Create a snapshot holding the ``kind`` base disk and an AMI mapping it as root."""
    disk = base_disk(kind)
    owner = owner_id or ec2.account_id
    snap = new_snapshot(ec2, size_gib(disk.nbytes), "", owner_id=owner, blocks=disk.blocks)
    name = name or ami_name(kind, k8s, arch)
    if kind == "al2023":
        desc = (f"EKS-optimized Kubernetes node based on Amazon Linux 2023, (k8s: {k8s}, "
                "containerd: 1.7.*)")
        vtype, boot = "gp3", ("uefi" if arch == "arm64" else "uefi-preferred")
        imds: str | None = "v2.0"
    elif kind == "al2":
        desc = f"EKS Kubernetes Worker AMI with AmazonLinux2 image, (k8s: {k8s}, containerd: 1.7.*)"
        vtype, boot, imds = "gp2", None, None
    else:
        desc, vtype, boot, imds = "Minimal Linux root without an EKS bootstrap", "gp3", None, None
    snap.description = f"Created by CreateImage for {name}"
    return make_ami(
        ec2, name=name, description=desc, architecture=arch, virtualization_type="hvm",
        root_device_name="/dev/xvda", ena_support=True, sriov_net_support="simple",
        boot_mode=boot, imds_support=imds, owner_id=owner, owner_alias=owner_alias,
        public=public,
        mappings=[{"DeviceName": "/dev/xvda", "Ebs": {
            "DeleteOnTermination": True, "SnapshotId": snap.id,
            "VolumeSize": max(ROOT_VOLUME_GIB, snap.volume_size), "VolumeType": vtype,
            "Encrypted": False}}])


def _put_param(ssm: Any, account: str, name: str, value: str, data_type: str = "text") -> None:
    from moto.ssm.models import Parameter

    ssm._parameters[name].append(Parameter(  # type: ignore[abstract]
        account_id=account, name=name, value=value, parameter_type="String", description=None,
        allowed_pattern=None, keyid=None, last_modified_date=datetime.now(timezone.utc),
        version=1, data_type=data_type))


def seed_all(account: str) -> dict[str, dict[str, str]]:
    """Seed every region's EKS AMIs and SSM parameters; returns {region: {param: ami}}."""
    from moto.ec2.models import ec2_backends
    from moto.ssm.models import ssm_backends

    seeded: dict[str, dict[str, str]] = {}
    for region in SEED_REGIONS:
        ec2 = ec2_backends[account][region]
        ssm = ssm_backends[account][region]
        params: dict[str, str] = {}
        for k8s in K8S_VERSIONS:
            kinds = [("al2023", "x86_64"), ("al2023", "arm64")]
            if k8s in AL2_K8S_VERSIONS:
                kinds.append(("al2", "x86_64"))
            for kind, arch in kinds:
                ami = seed_image(ec2, kind, arch=arch, k8s=k8s, owner_id=EKS_OWNER,
                                 public=True, owner_alias="amazon")
                name = ssm_name(kind, k8s, arch)
                _put_param(ssm, account, name, ami.id, "aws:ec2:image")
                rec = name.rsplit("/", 1)[0]
                _put_param(ssm, account, f"{rec}/release_version", f"{k8s}.0-{RELEASE[1:]}")
                _put_param(ssm, account, rec, json.dumps({
                    "schema_version": "3", "image_id": ami.id, "image_name": ami.name,
                    "release_version": f"{k8s}.0-{RELEASE[1:]}"}))
                params[name] = ami.id
        seeded[region] = params
    return seeded
