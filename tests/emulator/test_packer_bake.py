"""Real Packer 1.6.6 (amazon-ebs, communicator none) bakes against the emulator, and the
baked AMI's root snapshot holds the base AMI's bytes, read back through the EBS direct APIs.

Sources: AWS-FACTS §5 (a working template for this Packer version, manifest format);
Packer's amazon-ebs does RunInstances → StopInstances → CreateImage
(hashicorp/packer-plugin-amazon builder/ebs/builder.go).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.packer,
              pytest.mark.skipif(shutil.which("packer") is None, reason="packer not installed")]

TEMPLATE = """
packer { required_version = ">= 1.6.0" }
variable "endpoint" { type = string }
variable "source_ami" { type = string }
source "amazon-ebs" "eks" {
  region                     = "us-east-1"
  source_ami                 = var.source_ami
  instance_type              = "m5.large"
  ami_name                   = "baked-${formatdate("YYYYMMDDhhmmss", timestamp())}"
  communicator               = "none"
  custom_endpoint_ec2        = var.endpoint
  skip_credential_validation = true
  skip_metadata_api_check    = true
  skip_region_validation     = true
}
build {
  sources = ["source.amazon-ebs.eks"]
  post-processor "manifest" {
    output     = "manifest.json"
    strip_path = true
  }
}
"""


def _blocks(ebs, snapshot_id: str) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    kw: dict[str, str] = {}
    while True:
        page = ebs.list_snapshot_blocks(SnapshotId=snapshot_id, **kw)
        for b in page["Blocks"]:
            out[b["BlockIndex"]] = ebs.get_snapshot_block(
                SnapshotId=snapshot_id, BlockIndex=b["BlockIndex"], BlockToken=b["BlockToken"]
            )["BlockData"].read()
        if not page.get("NextToken"):
            return out
        kw = {"NextToken": page["NextToken"]}


def test_packer_bake_carries_base_bytes(tmp_path: Path, endpoint: str, clients) -> None:
    ssm, ec2, ebs = (clients.client(s) for s in ("ssm", "ec2", "ebs"))
    base = ssm.get_parameter(
        Name="/aws/service/eks/optimized-ami/1.31/amazon-linux-2023/x86_64/standard/"
             "recommended/image_id")["Parameter"]["Value"]
    (tmp_path / "bake.pkr.hcl").write_text(TEMPLATE)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "CHECKPOINT_DISABLE": "1",
           "PACKER_LOG": "0", "HOME": str(tmp_path)}
    proc = subprocess.run(
        ["packer", "build", "-machine-readable", f"-var=endpoint={endpoint}",
         f"-var=source_ami={base}", "bake.pkr.hcl"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    baked = manifest["builds"][-1]["artifact_id"].split(":", 1)[1]
    assert baked != base
    images = {i["ImageId"]: i for i in ec2.describe_images(ImageIds=[base, baked])["Images"]}
    base_snap = images[base]["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    baked_img = images[baked]
    baked_snap = baked_img["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    assert baked_snap != base_snap
    assert baked_img["RootDeviceName"] == "/dev/xvda"
    assert baked_img["Architecture"] == "x86_64" and baked_img["EnaSupport"] is True
    base_blocks = _blocks(ebs, base_snap)
    assert base_blocks  # the seeded base really holds a filesystem
    assert _blocks(ebs, baked_snap) == base_blocks
    # Packer cleaned up: its instance is terminated.
    states = [i["State"]["Name"] for r in ec2.describe_instances()["Reservations"]
              for i in r["Instances"]]
    assert states and set(states) == {"terminated"}
