"""Gating through the real publish step: no template version and no pointer until the
build is available in every configured region."""
from __future__ import annotations

import threading
from typing import Any

from moto.ec2.models import ec2_backends
from moto.ssm.models import ssm_backends

from pipeline.distribute import PublicationGated, distribute
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

    seen: dict[str, Any] = {}

    def finish_copy() -> None:
        seen["versions"] = [lt.latest_version_number for lt in
                            ec2_backends[ACCOUNT][HOME].launch_templates.values()]
        seen["pointers"] = sorted(ssm_backends[ACCOUNT][HOME]._parameters)
        eu.state = "available"

    timer = threading.Timer(0.6, finish_copy)
    timer.start()
    try:
        res = publish(settings, clients, PublishRequest(ami_id=rec.image_ids[HOME], create=True))
    except PublicationGated:  # refusing at once is also gating; then publish again
        timer.join()
        res = publish(settings, clients, PublishRequest(ami_id=rec.image_ids[HOME], create=True))
    timer.join()
    assert seen["versions"] == [] and not [p for p in seen["pointers"] if p.endswith("/candidate")]
    assert res.created and res.pointer == f"/eks-ami-pipeline/{IMAGE}/candidate"
    assert clients.client("ssm").get_parameter(Name=res.pointer)["Parameter"]["Value"] == \
        rec.image_ids[HOME]
