"""rebuild never forgets a failed publication, checks before it builds, and the shipped
example works on a fresh account (issue 12, items 4, 5 and rebuild's fault cells).

Imported images (snapshot method, a 64 MiB disk) keep these fast; the fresh-account
test bakes with the real packer.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

import neighbours as nb
from fault_proxy import Fault, FaultProxy
from pipeline.aws.clients import Clients
from pipeline.core.config import AwsSettings, parse_settings
from pipeline.lifecycle.rebuild import rebuild
from pipeline.lineage import store as lineage
from test_publish_support import node_security_group
from test_rebuild_import import _disk

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "imported"
TEMPLATE = "imported-nodes"
POINTER = f"/eks-ami-pipeline/{IMAGE}/candidate"


def _settings(tmp_path: Path, endpoint: str, source: Path, sg: str, **karpenter: Any) -> Any:
    raw = yaml.safe_load((ROOT / "pipeline.example.yaml").read_text())
    raw["aws"].update(endpoint_url=endpoint, max_attempts=2)
    raw["build"] = {"ssm_prefix": "/eks-ami-pipeline", "state_dir": str(tmp_path / "build")}
    raw["images"] = [{"name": IMAGE, "require": "nodeadm", "max_age_days": 30,
                      "import": {"source": str(source), "method": "snapshot"}}]
    lt = raw["launch_templates"][0]
    lt.update(name=TEMPLATE, image=IMAGE, security_group_ids=[sg], karpenter=bool(karpenter))
    raw["karpenter"]["output_dir"] = str(tmp_path / "karpenter")
    raw["karpenter"].update(karpenter)
    return parse_settings(raw, source=tmp_path / "pipeline.yaml")


def _pipeline_images(clients: Clients, neighbours: nb.Neighbours) -> list[str]:
    return sorted(i["ImageId"] for i in clients.client("ec2").describe_images(
        Owners=["self"])["Images"] if i["ImageId"] not in neighbours.ids.get("image", []))


def _template(clients: Clients) -> list[Any]:
    return clients.client("ec2").describe_launch_templates(Filters=[
        {"Name": "launch-template-name", "Values": [TEMPLATE]}])["LaunchTemplates"]


def test_rebuild_checks_before_it_builds(tmp_path, endpoint, clients, neighbours):
    """A publication that would be refused (the Karpenter template's security group
    allows no egress: a template rule only AWS can tell) refuses before the import: no
    AMI, no snapshot, no record; the headline says so, the error once."""
    sg = node_security_group(clients, egress="none")
    settings = _settings(tmp_path, endpoint, _disk(tmp_path), sg, version="v1")
    snaps = {s["SnapshotId"] for s in clients.client("ec2").describe_snapshots(
        OwnerIds=["self"])["Snapshots"]}
    result = rebuild(settings, clients)
    (entry,) = result.images
    assert (entry.status, entry.phase) == ("failed", "checks") and result.exit_code == 1
    assert "refused before building (nothing was built)" in entry.reason
    assert "allow no egress" in entry.error and "configured for Karpenter" in entry.error
    assert result.summary().count("allow no egress") == 1
    assert _pipeline_images(clients, neighbours) == []
    assert {s["SnapshotId"] for s in clients.client("ec2").describe_snapshots(
        OwnerIds=["self"])["Snapshots"]} == snaps
    assert lineage.load_builds(settings, clients, IMAGE) == []


CELLS = [Fault("CreateLaunchTemplate", kind="error", code="UnauthorizedOperation"),
         Fault("CreateLaunchTemplate", kind="interrupt"),
         Fault("PutParameter", kind="error", code="AccessDeniedException",
               body=POINTER.encode())]


@pytest.mark.parametrize("fault", CELLS, ids=lambda f: f"{f.kind}-{f.action}")
def test_a_failed_publication_is_retried_by_the_next_run(tmp_path, emulator, endpoint, clients,
                                                         neighbours, fault):
    """Rebuild's fault cells: publication fails after the import (an AWS error, or Ctrl-C
    after AWS created the template). The build is recorded publication-failed, nothing
    is published, and the next run publishes that same AMI (no second import), saying
    so; the run after that skips."""
    sg = node_security_group(clients)
    settings = _settings(tmp_path, endpoint, _disk(tmp_path), sg)
    with FaultProxy(emulator.endpoint) as proxy:
        proxy.reset([fault])
        proxied = Clients(AwsSettings(region="us-east-1", endpoint_url=proxy.endpoint,
                                      max_attempts=2))
        if fault.kind == "interrupt":
            with pytest.raises(KeyboardInterrupt):
                rebuild(settings, proxied)
        else:
            (entry,) = rebuild(settings, proxied).images
            assert (entry.status, entry.phase) == ("failed", "publish"), entry
            assert "publication failed (the next run publishes it again)" in entry.reason
        assert proxy.hits == [fault]
    (built,) = lineage.load_builds(settings, clients, IMAGE)
    assert built.status == "publication-failed" and built.extra["failed"]["step"] == "publish"
    assert _template(clients) == []                                   # nothing published
    with pytest.raises(clients.client("ssm").exceptions.ParameterNotFound):
        clients.client("ssm").get_parameter(Name=POINTER)
    amis = _pipeline_images(clients, neighbours)
    assert len(amis) == 1
    print(f"\nfault matrix: rebuild: cell {fault.kind} at {fault.action} #{fault.nth}")

    (again,) = rebuild(settings, clients).images                      # the config is fine
    assert (again.decision, again.status) == ("retry", "succeeded"), again
    assert again.reason.startswith(f"build {built.build_id} was made but its publication "
                                   "failed")
    assert again.build_id == built.build_id and _pipeline_images(clients, neighbours) == amis
    assert clients.client("ssm").get_parameter(Name=POINTER)["Parameter"]["Value"] == amis[0]
    assert len(_template(clients)) == 1
    assert lineage.latest_successful(settings, clients, IMAGE).build_id == built.build_id
    (third,) = rebuild(settings, clients).images
    assert (third.decision, third.status) == ("skip", "skipped")


@pytest.mark.packer
@pytest.mark.skipif(shutil.which("packer") is None, reason="packer not installed")
def test_the_shipped_example_works_on_a_fresh_account(tmp_path, endpoint, clients, caplog):
    """pipeline.example.yaml, unchanged but for the emulator's port, on a fresh emulator:
    the lock bucket does not exist (one line each, SSM lock used), the baked image is
    built, published and pointed at; the imported image has no disk yet and is skipped."""
    text = (ROOT / "pipeline.example.yaml").read_text().replace(
        "http://127.0.0.1:5077", endpoint)
    (tmp_path / "pipeline.yaml").write_text(text)
    shutil.copytree(ROOT / "packer", tmp_path / "packer")
    settings = parse_settings(yaml.safe_load(text), source=tmp_path / "pipeline.yaml")
    with caplog.at_level(logging.WARNING):
        result = rebuild(settings, clients)
    assert result.exit_code == 0, result.summary()
    by = {i.image: i for i in result.images}
    assert by["eks-node-al2023"].status == "succeeded"
    assert by["eks-node-al2023"].published[0].startswith("eks-nodes version 1")
    assert (by["eks-node-imported"].decision, by["eks-node-imported"].status) == ("skip",
                                                                                  "skipped")
    assert by["eks-node-imported"].reason.startswith("nothing to import")
    lock_lines = [r.getMessage() for r in caplog.records if "does not exist" in r.getMessage()]
    assert len(lock_lines) == 2 and all("using the SSM lock" in x for x in lock_lines)
    assert "could not work out" not in result.summary()


def test_reap_removes_an_unfinished_build_after_its_grace(tmp_path, emulator, endpoint, clients,
                                                          neighbours):
    """An AMI whose publication failed and that no run finished is kept while the grace
    lasts, then removed by reap (the clock moved), with its snapshot; neighbours stay."""
    import datetime as dt

    from pipeline.lifecycle.prune import reap

    sg = node_security_group(clients)
    settings = _settings(tmp_path, endpoint, _disk(tmp_path), sg)
    with FaultProxy(emulator.endpoint) as proxy:
        proxy.reset([CELLS[0]])
        proxied = Clients(AwsSettings(region="us-east-1", endpoint_url=proxy.endpoint,
                                      max_attempts=2))
        assert rebuild(settings, proxied).images[0].phase == "publish"
    (ami,) = _pipeline_images(clients, neighbours)
    early = reap(settings, clients, apply=True)
    assert _pipeline_images(clients, neighbours) == [ami], early
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=7)
    reap(settings, clients, apply=True, now=later)
    assert _pipeline_images(clients, neighbours) == []
