"""invoke rebuild: skips when nothing changed; rebuilds when the base AMI parameter moves or
the template changes; builds with the real packer binary against the emulator."""
from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.lineage import store as lineage
from pipeline.lifecycle import locks
from pipeline.core.config import parse_settings
from pipeline.core.errors import InputError
from pipeline.lifecycle.rebuild import Inputs, decide, rebuild
from pipeline.core.records import BuildRecord

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "packer" / "eks-node"
PARAM = "/aws/service/eks/optimized-ami/1.31/amazon-linux-2023/x86_64/standard/recommended/image_id"
IMAGE = "eks-node-al2023"

needs_packer = pytest.mark.skipif(shutil.which("packer") is None, reason="packer not installed")


def _settings(tmp_path: Path, endpoint: str) -> Any:
    """The example configuration, pointed at the emulator and at a copy of the template."""
    raw = yaml.safe_load((ROOT / "pipeline.example.yaml").read_text())
    template = tmp_path / "packer" / "eks-node"
    if not template.exists():
        shutil.copytree(TEMPLATE, template)
    raw["aws"].update({"endpoint_url": endpoint, "max_attempts": 2})
    raw["build"].update({"state_dir": str(tmp_path / "build")})
    raw["build"].pop("s3_bucket", None)            # exercise the SSM lock
    raw["images"] = [img for img in raw["images"] if img["name"] == IMAGE]
    raw["images"][0]["bake"]["template"] = str(template)
    raw["images"][0]["regions"] = ["us-east-1", "us-west-2"]    # distribute to a second region
    raw["launch_templates"][0].update({"karpenter": False, "set_default": True})
    return parse_settings(raw, source=tmp_path / "pipeline.yaml")


def _move_param(emulator: Any, clients: Any) -> str:
    """Point the public EKS parameter at a newly released base AMI (a new version)."""
    from moto.ssm.models import Parameter, ssm_backends

    new = emulator.seed_image("al2023", name="amazon-eks-node-al2023-x86_64-standard-1.31-v2099")
    ssm = ssm_backends["123456789012"]["us-east-1"]
    versions = ssm._parameters[PARAM]
    versions.append(Parameter(
        account_id="123456789012", name=PARAM, value=new, parameter_type="String",
        description=None, allowed_pattern=None, keyid=None,
        last_modified_date=dt.datetime.now(dt.timezone.utc), version=len(versions) + 1,
        data_type="aws:ec2:image"))
    assert clients.client("ssm").get_parameter(Name=PARAM)["Parameter"]["Value"] == new
    return new


@pytest.mark.packer
@needs_packer
def test_rebuild_skips_unchanged_and_rebuilds_when_base_or_template_changes(
        tmp_path: Path, emulator: Any, realistic_emulator: Any, clients: Any) -> None:
    settings = _settings(tmp_path, emulator.endpoint)
    ec2 = clients.client("ec2")

    first = rebuild(settings, clients)
    assert first.exit_code == 0, first.summary()
    one = first.images[0]
    assert (one.decision, one.status) == ("rebuild", "succeeded")
    assert one.reason == "no successful build yet"
    assert one.published and "eks-nodes version 1" in one.published[0]
    ami1 = one.image_ids["us-east-1"]
    west = one.image_ids["us-west-2"]                      # distributed before publishing
    assert clients.client("ec2", region="us-west-2").describe_images(
        ImageIds=[west])["Images"][0]["State"] == "available"
    assert lineage.latest_successful(settings, clients, IMAGE).build_id == one.build_id

    # Nothing changed: skip, and no new AMI.
    before = {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]}
    second = rebuild(settings, clients)
    two = second.images[0]
    assert (two.decision, two.status) == ("skip", "skipped")
    assert f"inputs unchanged since build {one.build_id}" in two.reason
    assert {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]} == before

    # The base AMI parameter moves: rebuild from the new base, publish version 2.
    old_base = one.inputs["base_ami"]
    new_base = _move_param(emulator, clients)
    third = rebuild(settings, clients)
    three = third.images[0]
    assert (three.decision, three.status) == ("rebuild", "succeeded"), third.summary()
    assert three.reason == f"base AMI moved: {old_base} -> {new_base}"
    assert three.image_ids["us-east-1"] != ami1
    assert "eks-nodes version 2" in three.published[0]
    rec = lineage.latest_successful(settings, clients, IMAGE)
    assert rec.build_id == three.build_id and rec.base_ami == new_base
    lt = ec2.describe_launch_templates(LaunchTemplateNames=["eks-nodes"])["LaunchTemplates"][0]
    assert lt["DefaultVersionNumber"] == 2

    # A provisioner changes: the dry run says rebuild, and why.
    script = next((tmp_path / "packer" / "eks-node").rglob("*.sh"))
    script.write_text(script.read_text() + "\n# patched\n")
    fourth = rebuild(settings, clients, dry_run=True)
    four = fourth.images[0]
    assert (four.decision, four.status) == ("rebuild", "planned")
    assert four.reason.startswith("templates, provisioners, var files or variables changed")
    assert "dry run" in fourth.summary()


@pytest.mark.packer
@needs_packer
def test_force_and_lock(tmp_path: Path, emulator: Any, clients: Any) -> None:
    settings = _settings(tmp_path, emulator.endpoint)
    planned = rebuild(settings, clients, dry_run=True, force=True).images[0]
    assert (planned.decision, planned.reason) == ("rebuild", "forced (--force)")
    # Another run holds the image's lock: this run says so, builds nothing, exits 1.
    held = locks.acquire(settings, clients, f"rebuild-{IMAGE}", owner="other-ci-run")
    try:
        result = rebuild(settings, clients, force=True)
    finally:
        held.release()
    assert result.images[0].status == "locked" and result.exit_code == 1
    assert "other-ci-run" in result.images[0].reason
    assert clients.client("ec2").describe_images(Owners=["self"])["Images"] == []


def test_unknown_image_is_input_error(tmp_path: Path, endpoint: str, clients: Any) -> None:
    with pytest.raises(InputError, match="no image named 'nope'"):
        rebuild(_settings(tmp_path, endpoint), clients, image="nope")


def test_decide_rules() -> None:
    """The age and source rules (the bake rules are exercised end to end above)."""
    settings_img = type("Img", (), {"max_age_days": 14})()
    now = dt.datetime(2026, 11, 25, tzinfo=dt.timezone.utc)
    rec = BuildRecord(build_id="b-20261101000000-abcdef", image_name="x", method="vm-import",
                      status="succeeded", finished_at="2026-11-01T00:00:00+00:00",
                      source_sha256="a" * 64)
    same = Inputs(method="import", source_sha256="a" * 64)
    aged = decide(settings_img, same, rec, now=now)
    assert aged.rebuild and "24 days old (max_age_days 14)" in aged.reason
    fresh = decide(settings_img, same, rec, now=now - dt.timedelta(days=20))
    assert not fresh.rebuild
    changed = decide(settings_img, Inputs(method="import", source_sha256="b" * 64), rec,
                     now=now - dt.timedelta(days=20))
    assert changed.rebuild and changed.reason.startswith("source file changed")
