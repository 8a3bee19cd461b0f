"""Lineage with the other steps: publish, promote, rollback (and the gate in front of them)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import json
import shutil

import pytest

from pipeline.lineage import store as lineage
from pipeline.aws.clients import Clients
from pipeline.core.config import Settings
from pipeline.bake.build import bake
from pipeline.ingest.importer import ImportRequest, import_image
from pipeline.publish.release import PublishRequest, promote, publish, rollback
from pipeline.core.records import BuildRecord, Verification

from test_import_e2e import good_raw  # noqa: F401 - session fixture: an AL2023-like disk
from test_publish_support import (ROOT, TEMPLATE, example_raw, node_security_group, settings_for,
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


# --------------------------------------------------------------------------- the whole story


@pytest.mark.packer
@pytest.mark.skipif(shutil.which("packer") is None, reason="packer not installed")
def test_history_after_import_bake_two_publishes_and_rollback(emulator, clients, tmp_path,
                                                               good_raw):
    """The links `invoke history` shows, built by the real steps against the emulator."""
    raw = example_raw(tmp_path, sg_ids=[node_security_group(clients)])
    raw["aws"]["endpoint_url"] = emulator.endpoint
    raw["aws"]["max_attempts"] = 2
    raw["build"]["state_dir"] = str(tmp_path / "state")
    raw["images"][0]["bake"]["template"] = str(ROOT / "packer" / "eks-node")
    raw["images"][1]["require"] = "nodeadm"
    raw["images"][1]["import"] = {"source": str(good_raw), "method": "snapshot"}
    settings = settings_for(raw, tmp_path)

    imported = import_image(settings, clients, ImportRequest(name="eks-node-imported"))
    baked = bake(settings, clients, IMAGE, workdir=tmp_path / "work")
    a_imp, a_bake = imported.image_id, baked.image_ids[HOME]

    v1 = publish(settings, clients, PublishRequest(ami_id=a_imp, create=True))
    v2 = publish(settings, clients, PublishRequest(ami_id=a_bake))
    assert (v1.version, v2.version, v2.default_version) == (1, 2, 2)
    # the imported AMI lands in the baked image's template: allowed, but said
    assert any("built for image 'eks-node-imported'" in w for w in v1.warnings), v1.warnings
    assert not any("built for image" in w for w in v2.warnings), v2.warnings
    back = rollback(settings, clients, TEMPLATE)
    assert (back.from_version, back.to_version) == (2, 1)

    result = lineage.history(settings, clients)
    # newest first (the emulator is fast: both may have started within the same second)
    assert {r.build_id for r in result.rows} == {baked.build_id, imported.build_id}
    assert [r.started_at for r in result.rows] == sorted((r.started_at for r in result.rows),
                                                         reverse=True)
    by_id = {r.build_id: r for r in result.rows}
    bake_row, import_row = by_id[baked.build_id], by_id[imported.build_id]
    # inputs: the base AMI and inputs hash of the bake, the file hash of the import
    assert bake_row.source == f"base {baked.base_ami}" and bake_row.method == "bake"
    # (the snapshot method records the disk's content identity, not a whole-file hash)
    assert import_row.source == f"{good_raw.name} {str(imported.source_content_id)[:20]}"
    assert (bake_row.image_ids, import_row.image_ids) == ({HOME: a_bake}, {HOME: a_imp})
    assert bake_row.verification_label == import_row.verification_label == "ok (nodeadm)"
    assert bake_row.status == import_row.status == "succeeded"
    # template versions, default marked, and the pointer moved back by the rollback
    assert [v.label() for v in bake_row.template_versions] == [f"{TEMPLATE}:v2"]
    assert [v.label() for v in import_row.template_versions] == [f"{TEMPLATE}:v1*"]
    assert bake_row.pointers == []
    assert [p.name for p in import_row.pointers] == [f"/eks-ami-pipeline/{IMAGE}/candidate"]

    # The durable records hold what a rebuild compares, and so does the CI manifest.
    last = lineage.latest_successful(settings, clients, IMAGE)
    assert last is not None and last.build_id == baked.build_id
    assert (last.inputs_sha256, last.base_ami) == (baked.inputs_sha256, baked.base_ami)
    assert last.packer_version and last.snapshot_ids[HOME] == baked.snapshot_ids[HOME]
    manifest = json.loads((tmp_path / "state" / "manifest.json").read_text())
    assert [b["build_id"] for b in manifest["builds"]] == [r.build_id for r in result.rows]

    # From each version back to its build.
    for version, build_id in ((1, imported.build_id), (2, baked.build_id)):
        link = lineage.build_for_template_version(clients, TEMPLATE, version, settings=settings)
        assert link.build_id == build_id and link.problems == []
