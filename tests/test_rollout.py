"""The release train on the emulator: soak measured from the pointer's history (refused
before, allowed after the clock moves), health from EC2 status checks, a blocked AMI never
promoted or published again, auto promotion stopping at the first failing gate, and the
per-channel Karpenter manifests."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.aws.ssm import get_pointer, put_pointer
from pipeline.core import tags as T
from pipeline.core.clock import ShiftedClock
from pipeline.core.config import parse_settings
from pipeline.core.errors import InputError
from pipeline.core.records import BuildRecord, Verification
from pipeline.lifecycle import rollout
from pipeline.lineage import store
from pipeline.publish.release import PublishRequest, publish

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "web"
REGIONS = ["us-east-1", "us-west-2"]
LATER = ShiftedClock(hours=25)


def _settings(tmp_path: Path, endpoint: str, *, health: dict[str, Any] | None = None,
              templates: bool = False) -> Any:
    example = yaml.safe_load((ROOT / "pipeline.example.yaml").read_text())
    source = tmp_path / "disk.raw"
    source.write_bytes(b"\0" * 4096)
    stable: dict[str, Any] = {"name": "stable", "soak": "24h", "auto_promote": True}
    if health is not None:
        stable["health"] = health
    raw: dict[str, Any] = {
        "aws": {"region": "us-east-1", "endpoint_url": endpoint, "max_attempts": 2},
        "build": {"ssm_prefix": "/eks-ami-pipeline", "state_dir": str(tmp_path / "build")},
        "cluster": example["cluster"],
        "images": [{"name": IMAGE, "require": "nodeadm", "regions": REGIONS,
                    "import": {"source": str(source), "method": "snapshot"},
                    "channels": [{"name": "candidate"}, stable]}],
        "karpenter": {"version": "v1", "output_dir": str(tmp_path / "karpenter"),
                      "name": "pool"},
    }
    if templates:
        raw["launch_templates"] = [{
            "name": "web-stable", "image": IMAGE, "channel": "stable", "karpenter": True,
            "instance_profile": "eks-node-profile", "security_group_ids": ["sg-0123456789abcdef0"]}]
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(raw))
    return parse_settings(raw, source=tmp_path / "pipeline.yaml")


def _build(settings: Any, clients: Any, emulator: Any, n: int) -> BuildRecord:
    """A verified build with a copy in each region (seeded AMIs tagged with its lineage)."""
    rec = BuildRecord(
        build_id=f"b-2026110{n}000000-abcde{n}", image_name=IMAGE, method="snapshot",
        status="succeeded", started_at=f"2026-11-0{n}T00:00:00+00:00",
        finished_at=f"2026-11-0{n}T00:10:00+00:00", source_sha256=str(n) * 64,
        image_ids={r: emulator.seed_image("al2023", region=r, name=f"web-{n}-{r}")
                   for r in REGIONS},
        verification=Verification(verdict="ok", mechanism="nodeadm",
                                  checked_at="2026-11-01T00:00:00+00:00", tool_version="t"))
    store.record_build(settings, clients, rec)
    return rec


def _onto(settings: Any, clients: Any, rec: BuildRecord, channel: str) -> None:
    for region, ami in rec.image_ids.items():
        put_pointer(clients, settings.ssm_prefix, IMAGE, channel, ami, region=region)


def _stable(settings: Any, clients: Any, region: str = "us-east-1") -> str | None:
    ptr = get_pointer(clients, settings.ssm_prefix, IMAGE, "stable", region=region)
    return ptr.ami_id if ptr else None


def test_soak_refused_before_and_allowed_after_the_clock_moves(tmp_path: Path, emulator: Any,
                                                                clients: Any) -> None:
    settings = _settings(tmp_path, emulator.endpoint)
    one = _build(settings, clients, emulator, 1)
    _onto(settings, clients, one, "candidate")

    early = rollout.promote(settings, clients, IMAGE, "stable")
    assert not early.moved and early.exit_code == 1
    d = early.decision
    assert not d.passed and d.reason.startswith("soaking: ")
    assert d.evidence["soak_source"] == "pointer history"
    assert d.evidence["soaked_seconds"] < 60 and d.evidence["soak_seconds"] == 86400
    assert "REFUSED" in d.line() and "\n" not in d.line()
    assert _stable(settings, clients) is None

    later = rollout.promote(settings, clients, IMAGE, "stable", clock=LATER)
    assert later.moved and later.decision.passed, later.decision.line()
    assert later.decision.evidence["regions"] == {
        r: {"ami_id": one.image_ids[r], "state": "available", "deprecated": False, "ok": True}
        for r in REGIONS}
    for region in REGIONS:                     # every region's pointer names its own copy
        assert _stable(settings, clients, region) == one.image_ids[region]
    promotions = store.load_build(settings, clients, IMAGE, one.build_id).extra["promotions"]
    assert promotions[-1]["channel"] == "stable" and promotions[-1]["forced"] is False

    # A soak is measured from when the pointer moved, not from the build: a second build
    # just put on candidate has to soak again, however old its record says it is.
    two = _build(settings, clients, emulator, 2)
    _onto(settings, clients, two, "candidate")
    again = rollout.evaluate_gate(settings, clients, IMAGE, "stable")
    assert not again.passed and again.ami_id == two.image_ids["us-east-1"]


def test_force_needs_a_reason_and_is_recorded(tmp_path: Path, emulator: Any, clients: Any) -> None:
    settings = _settings(tmp_path, emulator.endpoint)
    one = _build(settings, clients, emulator, 1)
    _onto(settings, clients, one, "candidate")
    with pytest.raises(InputError, match="--reason"):
        rollout.promote(settings, clients, IMAGE, "stable", force=True)
    forced = rollout.promote(settings, clients, IMAGE, "stable", force=True, reason="CVE-2026-1")
    assert forced.moved and forced.decision.forced and "FORCED" in forced.decision.line()
    entry = store.load_build(settings, clients, IMAGE, one.build_id).extra["promotions"][-1]
    assert (entry["forced"], entry["reason"]) == (True, "CVE-2026-1")


def test_a_copy_missing_in_a_region_is_refused_even_forced(tmp_path: Path, emulator: Any,
                                                           clients: Any) -> None:
    settings = _settings(tmp_path, emulator.endpoint)
    one = _build(settings, clients, emulator, 1)
    put_pointer(clients, settings.ssm_prefix, IMAGE, "candidate", one.image_ids["us-east-1"])
    res = rollout.promote(settings, clients, IMAGE, "stable", force=True, reason="hurry",
                          clock=LATER)
    assert not res.moved and "us-west-2: not there" in res.decision.reason
    assert "does not override" in res.decision.reason
    assert _stable(settings, clients) is None


def test_health_counts_instances_passing_status_checks(tmp_path: Path, emulator: Any,
                                                       clients: Any) -> None:
    settings = _settings(tmp_path, emulator.endpoint, health={"min_instances": 2})
    one = _build(settings, clients, emulator, 1)
    _onto(settings, clients, one, "candidate")
    ec2 = clients.client("ec2")
    ec2.run_instances(ImageId=one.image_ids["us-east-1"], MinCount=1, MaxCount=1,
                      InstanceType="m5.large")
    short = rollout.evaluate_gate(settings, clients, IMAGE, "stable", clock=LATER)
    assert not short.passed and "1 healthy instance(s)" in short.reason
    assert short.evidence["health"]["running"] == 1
    clients.client("ec2", region="us-west-2").run_instances(
        ImageId=one.image_ids["us-west-2"], MinCount=1, MaxCount=1, InstanceType="m5.large")
    ok = rollout.evaluate_gate(settings, clients, IMAGE, "stable", clock=LATER)
    assert ok.passed and ok.evidence["health"]["passing"] == 2, ok.line()


def test_blocked_ami_is_never_promoted_or_published_again(tmp_path: Path, emulator: Any,
                                                          clients: Any) -> None:
    settings = _settings(tmp_path, emulator.endpoint)
    one, two = _build(settings, clients, emulator, 1), None
    _onto(settings, clients, one, "candidate")
    assert rollout.promote(settings, clients, IMAGE, "stable", clock=LATER).moved
    two = _build(settings, clients, emulator, 2)
    _onto(settings, clients, two, "candidate")
    assert rollout.promote(settings, clients, IMAGE, "stable", clock=LATER).moved
    assert _stable(settings, clients) == two.image_ids["us-east-1"]

    back = rollout.rollback_channel(settings, clients, IMAGE, "stable", block=True,
                                    reason="kernel panic on m7i")
    assert (back.from_ami, back.to_ami) == (two.image_ids["us-east-1"], one.image_ids["us-east-1"])
    for region in REGIONS:
        assert _stable(settings, clients, region) == one.image_ids[region]
        img = clients.client("ec2", region=region).describe_images(
            ImageIds=[two.image_ids[region]])["Images"][0]
        assert "kernel panic on m7i" in T.from_tag_list(img["Tags"])[T.BLOCKED]
    record = store.load_build(settings, clients, IMAGE, two.build_id)
    assert record.extra["blocked"]["reason"] == "kernel panic on m7i"

    # candidate still names the blocked build: the gate refuses it, --force too
    refused = rollout.promote(settings, clients, IMAGE, "stable", clock=LATER)
    assert not refused.moved and "blocked" in refused.decision.reason
    forced = rollout.promote(settings, clients, IMAGE, "stable", force=True, reason="x",
                             clock=LATER)
    assert not forced.moved and _stable(settings, clients) == one.image_ids["us-east-1"]
    auto = rollout.auto_promote(settings, clients, clock=LATER)
    assert auto.promoted == [] and "blocked" in auto.stopped[IMAGE]
    with pytest.raises(InputError, match="blocked"):
        publish(settings, clients, PublishRequest(ami_id=two.image_ids["us-east-1"],
                                                  template="anything", create=True))
    assert clients.client("ec2").describe_launch_templates()["LaunchTemplates"] == []

    rows = store.history(settings, clients, image=IMAGE)
    blocked_row = next(r for r in rows.rows if r.build_id == two.build_id)
    assert blocked_row.blocked and "[BLOCKED]" in rows.summary()


def test_auto_promote_stops_at_the_first_failing_gate(tmp_path: Path, emulator: Any,
                                                      clients: Any) -> None:
    settings = _settings(tmp_path, emulator.endpoint)
    one = _build(settings, clients, emulator, 1)
    _onto(settings, clients, one, "candidate")
    now = rollout.auto_promote(settings, clients)
    assert now.promoted == [] and now.stopped[IMAGE].startswith("stable (soaking")
    assert now.exit_code == 0                     # a gate that is not due yet is no failure
    later = rollout.auto_promote(settings, clients, clock=LATER)
    assert later.promoted == [f"{IMAGE}: candidate -> stable {one.image_ids['us-east-1']}"]
    assert _stable(settings, clients, "us-west-2") == one.image_ids["us-west-2"]


def test_channel_manifests_follow_each_channels_pointer(tmp_path: Path, emulator: Any,
                                                        clients: Any) -> None:
    settings = _settings(tmp_path, emulator.endpoint, templates=True)
    paths = rollout.channel_manifests(settings, clients, IMAGE)
    docs = {p.name: yaml.safe_load(p.read_text()) for p in paths}
    classes = {d["metadata"]["labels"]["eks-ami-pipeline/channel"]: d for d in docs.values()
               if d["kind"] == "EC2NodeClass"}
    assert set(classes) == {"candidate", "stable"}
    assert classes["stable"]["spec"]["amiSelectorTerms"] == [
        {"ssmParameter": "/eks-ami-pipeline/web/stable"}]
    pools = [d for d in docs.values() if d["kind"] == "NodePool"]
    assert sorted(p["spec"]["template"]["spec"]["nodeClassRef"]["name"] for p in pools) == [
        "pool-web-candidate", "pool-web-stable"]


def test_bad_inputs_are_one_line_exit_2(tmp_path: Path, emulator: Any, clients: Any) -> None:
    settings = _settings(tmp_path, emulator.endpoint)
    with pytest.raises(InputError, match="not a channel of image web"):
        rollout.promote(settings, clients, IMAGE, "prod")
    with pytest.raises(InputError, match="where rebuild publishes"):
        rollout.promote(settings, clients, IMAGE, "candidate")
    with pytest.raises(InputError, match="never written"):
        rollout.rollback_channel(settings, clients, IMAGE, "stable", block=True)


def test_a_rolled_back_ami_waits_for_a_forced_promotion(tmp_path: Path, emulator: Any,
                                                        clients: Any) -> None:
    settings = _settings(tmp_path, emulator.endpoint)
    one = _build(settings, clients, emulator, 1)
    _onto(settings, clients, one, "candidate")
    assert rollout.promote(settings, clients, IMAGE, "stable", clock=LATER).moved
    two = _build(settings, clients, emulator, 2)
    _onto(settings, clients, two, "candidate")
    assert rollout.promote(settings, clients, IMAGE, "stable", clock=LATER).moved
    back = rollout.rollback_channel(settings, clients, IMAGE, "stable", reason="latency")
    assert back.to_ami == one.image_ids["us-east-1"] and not back.blocked
    again = rollout.promote(settings, clients, IMAGE, "stable", clock=LATER)
    assert not again.moved and "was rolled back on stable" in again.decision.reason
    forced = rollout.promote(settings, clients, IMAGE, "stable", clock=LATER, force=True,
                             reason="fixed by a config change")
    assert forced.moved and _stable(settings, clients) == two.image_ids["us-east-1"]


def test_promote_task_prints_the_decision_and_exits_1_when_refused(
        tmp_path: Path, emulator: Any, clients: Any) -> None:
    settings = _settings(tmp_path, emulator.endpoint)
    _onto(settings, clients, _build(settings, clients, emulator, 1), "candidate")
    env = {**os.environ, "PIPELINE_CONFIG": str(tmp_path / "pipeline.yaml")}
    out = subprocess.run([sys.executable, "-m", "invoke", "promote", "--image", IMAGE, "--to",
                          "stable", "--json"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1, out.stderr
    doc = json.loads(out.stdout)
    assert doc["moved"] is False and doc["decision"]["passed"] is False
    assert doc["decision"]["line"].startswith("web: candidate -> stable: REFUSED")
    assert doc["decision"]["evidence"]["soak_seconds"] == 86400
    human = subprocess.run([sys.executable, "-m", "invoke", "promote", "--image", IMAGE, "--to",
                            "stable"], cwd=ROOT, env={**env, "PIPELINE_CLOCK_OFFSET": "90000"},
                           capture_output=True, text=True, timeout=120)
    assert human.returncode == 0, human.stderr
    assert human.stdout.splitlines()[0].startswith("web: candidate -> stable: PASS")
