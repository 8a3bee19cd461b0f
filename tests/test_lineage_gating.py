"""Gating through the real publish step: no template version and no pointer until the
build is available in every configured region."""
from __future__ import annotations

import time
from typing import Any

from moto.ec2.models import ec2_backends
from moto.ssm.models import ssm_backends

from pipeline.distribute import distribute
from pipeline.publish import PublishRequest, publish

from test_lineage_e2e import HOME, IMAGE, built
from test_publish_support import example_raw, node_security_group, settings_for

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
