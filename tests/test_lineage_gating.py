"""Gating through the real publish step: no template version and no pointer until the
build is available in every configured region."""
from __future__ import annotations

import time
from typing import Any

from moto.ec2.models import ec2_backends
from moto.ssm.models import ssm_backends

from pipeline.lifecycle.distribute import distribute
from pipeline.publish.release import PublishRequest, promote, publish, rollback

from test_lineage_e2e import HOME, IMAGE, built
from test_publish_support import TEMPLATE, example_raw, node_security_group, settings_for

ACCOUNT = "123456789012"


def test_publication_waits_until_every_region_is_available(emulator, tmp_path, clients):
    """Gating: no version and no pointer while one region's copy is still pending."""
    raw = example_raw(tmp_path, sg_ids=[node_security_group(clients)])
    raw["images"][0]["regions"] = [HOME, "us-west-2", "eu-west-1"]
    settings = settings_for(raw, tmp_path)
    rec = built(emulator, settings, clients, "b-20261125100000-333333")
    out = distribute(settings, clients, rec, wait_delay=0.05)
    eu = ec2_backends[ACCOUNT]["eu-west-1"].amis[out.image_ids["eu-west-1"]]
    eu.state = "pending"

    seen: list[dict[str, Any]] = []

    def finish_copy(parsed: dict[str, Any], **_: Any) -> None:
        """When publish's gate sees the pending copy: record what exists, then finish it."""
        states = [i.get("State") for i in parsed.get("Images", [])]
        if "pending" in states:
            seen.append({
                "versions": [lt.latest_version_number for lt in
                             ec2_backends[ACCOUNT][HOME].launch_templates.values()],
                "pointers": [p for p in ssm_backends[ACCOUNT][HOME]._parameters
                             if p.endswith("/candidate")]})
            eu.state = "available"

    clients.client("ec2", region="eu-west-1").meta.events.register(
        "after-call.ec2.DescribeImages", finish_copy)
    started = time.monotonic()
    res = publish(settings, clients, PublishRequest(ami_id=rec.image_ids[HOME], create=True))
    assert seen == [{"versions": [], "pointers": []}]  # the gate looked, and nothing existed
    assert time.monotonic() - started >= 0.5            # and it waited for the copy
    assert res.created and res.pointer == f"/eks-ami-pipeline/{IMAGE}/candidate"
    assert clients.client("ssm").get_parameter(Name=res.pointer)["Parameter"]["Value"] == \
        rec.image_ids[HOME]
    for region, ami in out.image_ids.items():  # the channel in every region, its own copy
        param = clients.client("ssm", region=region).get_parameter(Name=res.pointer)["Parameter"]
        assert (param["Value"], param["DataType"]) == (ami, "aws:ec2:image")


def test_promote_and_rollback_move_the_channel_in_every_region(emulator, tmp_path, clients):
    raw = example_raw(tmp_path, sg_ids=[node_security_group(clients)])
    raw["images"][0]["regions"] = [HOME, "us-west-2", "eu-west-1"]
    settings = settings_for(raw, tmp_path)
    old = distribute(settings, clients, built(emulator, settings, clients,
                                              "b-20261120100000-444444"), wait_delay=0.05)
    new = distribute(settings, clients, built(emulator, settings, clients,
                                              "b-20261124100000-555555"), wait_delay=0.05)
    name = f"/eks-ami-pipeline/{IMAGE}/candidate"

    def channel() -> dict[str, str]:
        return {r: clients.client("ssm", region=r).get_parameter(Name=name)["Parameter"]["Value"]
                for r in old.image_ids}

    publish(settings, clients, PublishRequest(ami_id=old.image_ids[HOME], create=True))
    publish(settings, clients, PublishRequest(ami_id=new.image_ids[HOME]))
    assert channel() == new.image_ids
    rollback(settings, clients, TEMPLATE)
    assert channel() == old.image_ids
    promote(settings, clients, TEMPLATE, 2)
    assert channel() == new.image_ids
