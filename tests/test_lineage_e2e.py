"""Lineage with the other steps: publish, promote, rollback (and the gate in front of them)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline import lineage
from pipeline.aws import Clients
from pipeline.config import Settings
from pipeline.publish import PublishRequest, promote, publish, rollback
from pipeline.records import BuildRecord, Verification

from test_publish_support import (TEMPLATE, example_raw, node_security_group, settings_for,
                                  verified_ami)

IMAGE = "eks-node-al2023"
HOME = "us-east-1"


@pytest.fixture
def settings(tmp_path: Path, clients: Clients) -> Settings:
    """pipeline.example.yaml with a real node security group, outputs under tmp_path."""
    sg = node_security_group(clients)
    return settings_for(example_raw(tmp_path, sg_ids=[sg]), tmp_path)


def built(emulator: Any, settings: Settings, clients: Clients, build_id: str,
          **fields: Any) -> BuildRecord:
    """A verified AMI in the emulator, recorded as build ``build_id``."""
    ami = verified_ami(emulator, clients, build_id=build_id)
    stamp = build_id[2:16]
    rec = BuildRecord(
        build_id=build_id, image_name=IMAGE, method=fields.pop("method", "bake"),
        status="succeeded",
        started_at=f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[8:10]}:{stamp[10:12]}:"
                   f"{stamp[12:14]}+00:00",
        tool_version="0.1.0", image_ids={HOME: ami},
        verification=Verification(verdict="ok", mechanism="nodeadm",
                                  checked_at=BuildRecord.now(), tool_version="0.1.0"),
        **fields)
    lineage.record_build(settings, clients, rec)
    return rec


def links(result: lineage.HistoryResult) -> dict[str, tuple[list[str], list[str]]]:
    """build id -> (template version labels, pointer channels)."""
    return {r.build_id: ([v.label() for v in r.template_versions],
                         sorted(p.channel for p in r.pointers)) for r in result.rows}


def test_pointers_move_with_publish_promote_and_rollback(emulator, settings, clients):
    b1 = built(emulator, settings, clients, "b-20261120100000-111111", base_ami="ami-0aaa1111")
    b2 = built(emulator, settings, clients, "b-20261124100000-222222", base_ami="ami-0bbb2222")
    a1, a2 = b1.image_ids[HOME], b2.image_ids[HOME]

    publish(settings, clients, PublishRequest(ami_id=a1, create=True))
    publish(settings, clients, PublishRequest(ami_id=a2))
    assert links(lineage.history(settings, clients)) == {
        b2.build_id: ([f"{TEMPLATE}:v2*"], ["candidate"]),
        b1.build_id: ([f"{TEMPLATE}:v1"], []),
    }

    rollback(settings, clients, TEMPLATE)  # the template's channel follows the default
    assert links(lineage.history(settings, clients)) == {
        b2.build_id: ([f"{TEMPLATE}:v2"], []),
        b1.build_id: ([f"{TEMPLATE}:v1*"], ["candidate"]),
    }

    promote(settings, clients, TEMPLATE, 2, channel="stable")
    assert links(lineage.history(settings, clients)) == {
        b2.build_id: ([f"{TEMPLATE}:v2*"], ["stable"]),
        b1.build_id: ([f"{TEMPLATE}:v1"], ["candidate"]),
    }

    rollback(settings, clients, TEMPLATE, channel="stable")
    assert links(lineage.history(settings, clients)) == {
        b2.build_id: ([f"{TEMPLATE}:v2"], []),
        b1.build_id: ([f"{TEMPLATE}:v1*"], ["candidate", "stable"]),
    }

    # Each version leads back to its build, through its description and the AMI's tag.
    for version, rec in ((1, b1), (2, b2)):
        link = lineage.build_for_template_version(clients, TEMPLATE, version, settings=settings)
        assert (link.build_id_from_description, link.build_id_from_tag) == (rec.build_id,) * 2
        assert link.problems == [] and link.build is not None
        assert link.build.base_ami == rec.base_ami and link.build.status == "succeeded"
