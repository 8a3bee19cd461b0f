"""Karpenter v1 follows promote and rollback: the EC2NodeClass selects the channel's SSM pointer,
and the pointer is what publish/promote/rollback move (against the emulator over HTTP)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.aws.ssm import get_pointer
from pipeline.publish.release import PublishRequest, promote, publish, rollback

from test_publish_support import (TEMPLATE, clients, example_raw, module_clients,  # noqa: F401
                                  node_security_group, settings_for, verified_ami)


@pytest.fixture
def settings(tmp_path, clients):
    raw = example_raw(tmp_path, sg_ids=[node_security_group(clients)], karpenter=True)
    return settings_for(raw, tmp_path)


def _selected_ami(clients, manifest: Path) -> str:
    """What Karpenter resolves: the EC2NodeClass's ssmParameter term, read through SSM."""
    doc = yaml.safe_load(manifest.read_text())
    (term,) = doc["spec"]["amiSelectorTerms"]
    value = clients.client("ssm").get_parameter(Name=term["ssmParameter"])["Parameter"]["Value"]
    return str(value)


def test_promote_and_rollback_move_what_the_nodeclass_selects(emulator, clients, settings):
    ami1, ami2 = verified_ami(emulator, clients), verified_ami(emulator, clients)
    first = publish(settings, clients, PublishRequest(ami_id=ami1, create=True, karpenter="v1"))
    nodeclass = next(Path(p) for p in first.karpenter_manifests if "ec2nodeclass" in p)
    before = nodeclass.read_text()
    assert "5 minutes" in first.summary() and first.karpenter_notes
    assert _selected_ami(clients, nodeclass) == ami1
    publish(settings, clients, PublishRequest(ami_id=ami2))          # no manifest re-written
    assert _selected_ami(clients, nodeclass) == ami2
    rollback(settings, clients, TEMPLATE)
    assert nodeclass.read_text() == before                           # nothing re-applied ...
    assert _selected_ami(clients, nodeclass) == ami1                 # ... and Karpenter moved
    promote(settings, clients, TEMPLATE, 2)
    assert _selected_ami(clients, nodeclass) == ami2
    assert get_pointer(clients, settings.ssm_prefix, "eks-node-al2023", "candidate").ami_id == ami2


def test_publish_with_another_channel_selects_that_channel(emulator, clients, settings):
    ami = verified_ami(emulator, clients)
    res = publish(settings, clients, PublishRequest(ami_id=ami, create=True, karpenter="v1",
                                                    channel="canary"))
    nodeclass = next(Path(p) for p in res.karpenter_manifests if "ec2nodeclass" in p)
    doc = yaml.safe_load(nodeclass.read_text())
    assert doc["spec"]["amiSelectorTerms"] == [
        {"ssmParameter": "/eks-ami-pipeline/eks-node-al2023/canary"}]
    assert _selected_ami(clients, nodeclass) == ami
