"""Deregistration protection follows the live AMIs (build.protect_live_amis): publish, promote and
rollback move it; hand-set protection is left alone (emulator over HTTP)."""
from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from pipeline.publish import protect
from pipeline.publish.release import PublishRequest, promote, publish, rollback

from test_publish_support import (TEMPLATE, clients, example_raw, module_clients,  # noqa: F401
                                  node_security_group, settings_for, verified_ami)


@pytest.fixture
def settings(tmp_path, clients):
    raw = example_raw(tmp_path, sg_ids=[node_security_group(clients)])
    raw.setdefault("build", {})["protect_live_amis"] = True
    return settings_for(raw, tmp_path)


def _state(clients, ami: str) -> str:
    (img,) = clients.client("ec2").describe_images(ImageIds=[ami])["Images"]
    return str(img.get("DeregistrationProtection") or "disabled")


def test_protection_moves_with_publish_rollback_and_promote(emulator, clients, settings):
    ami1, ami2 = verified_ami(emulator, clients), verified_ami(emulator, clients)
    first = publish(settings, clients, PublishRequest(ami_id=ami1, create=True))
    assert _state(clients, ami1) == "enabled"
    assert any(ami1 in p and "enabled" in p for p in first.protection)
    with pytest.raises(ClientError, match="OperationNotPermitted"):
        clients.client("ec2").deregister_image(ImageId=ami1)
    publish(settings, clients, PublishRequest(ami_id=ami2))
    assert (_state(clients, ami1), _state(clients, ami2)) == ("disabled", "enabled")
    rb = rollback(settings, clients, TEMPLATE)
    assert (_state(clients, ami1), _state(clients, ami2)) == ("enabled", "disabled")
    assert any("no longer live" in p for p in rb.protection)
    promote(settings, clients, TEMPLATE, 2)
    assert (_state(clients, ami1), _state(clients, ami2)) == ("disabled", "enabled")


def test_an_ami_still_named_by_another_channel_stays_protected(emulator, clients, settings):
    ami1, ami2 = verified_ami(emulator, clients), verified_ami(emulator, clients)
    publish(settings, clients, PublishRequest(ami_id=ami1, create=True, channel="stable"))
    publish(settings, clients, PublishRequest(ami_id=ami2))        # candidate -> ami2
    assert (_state(clients, ami1), _state(clients, ami2)) == ("enabled", "enabled")


def test_hand_set_protection_is_never_removed_and_off_means_no_calls(emulator, clients, settings,
                                                                       tmp_path):
    mine = verified_ami(emulator, clients)
    clients.client("ec2").enable_image_deregistration_protection(ImageId=mine)
    changes, warnings = protect.reconcile(settings, clients, ["us-east-1"],
                                          templates_region="us-east-1")
    assert (changes, warnings) == ([], []) and _state(clients, mine) == "enabled"
    off = settings_for(example_raw(tmp_path, sg_ids=list(
        settings.launch_templates[0].security_group_ids)), tmp_path)
    res = publish(off, clients, PublishRequest(ami_id=verified_ami(emulator, clients), create=True))
    assert res.protection == [] and _state(clients, res.image_id) == "disabled"


def test_the_cleanup_door_keeps_a_protected_ami_without_trying(emulator, clients):
    """The fresh describe before DeregisterImage sees the protection: ``kept`` with the
    state (an attempt would fail with OperationNotPermitted and be reported ``failed``)."""
    from pipeline.aws import cleanup

    build = "b-20261125170000-abcdef"
    ami = verified_ami(emulator, clients, build_id=build)
    clients.client("ec2").enable_image_deregistration_protection(ImageId=ami)
    out = cleanup.deregister_images(clients, None, cleanup.Owner(build), [ami],
                                    with_snapshots=True)
    assert out == [cleanup.Removal("image", ami, "us-east-1", "kept",
                                   note="protected against deregistration (enabled)")]
    assert _state(clients, ami) == "enabled"
    assert cleanup.protected_images(clients, None, [ami])[ami][0] == "enabled"
    clients.client("ec2").disable_image_deregistration_protection(ImageId=ami)
    assert cleanup.protected_images(clients, None, [ami]) == {}
    done = cleanup.deregister_images(clients, None, cleanup.Owner(build), [ami],
                                     with_snapshots=True)
    assert [(r.kind, r.outcome) for r in done][0] == ("image", "removed")
    assert all(r.outcome == "removed" for r in done), done
    assert [r.kind for r in done].count("snapshot") >= 1         # DeleteAssociatedSnapshots


def test_without_delete_associated_snapshots_the_door_deletes_them_itself(
        emulator, clients, tmp_path):
    """An SDK whose EC2 model predates DeregisterImage.DeleteAssociatedSnapshots (botocore's
    own model with the member removed, real requests to the emulator): the AMI is
    deregistered without it and its snapshots go by explicit DeleteSnapshot."""
    import gzip
    import json
    from pathlib import Path

    import boto3
    import botocore.session

    from pipeline.aws import cleanup

    data = Path(botocore.__file__).parent / "data" / "ec2" / "2016-11-15"
    raw = (data / "service-2.json.gz").read_bytes() if (data / "service-2.json.gz").exists() \
        else gzip.compress((data / "service-2.json").read_bytes())
    model = json.loads(gzip.decompress(raw))
    del model["shapes"]["DeregisterImageRequest"]["members"]["DeleteAssociatedSnapshots"]
    old = tmp_path / "models" / "ec2" / "2016-11-15"
    old.mkdir(parents=True)
    (old / "service-2.json").write_text(json.dumps(model))
    core = botocore.session.get_session()
    core.get_component("data_loader").search_paths.insert(0, str(tmp_path / "models"))
    ec2 = boto3.Session(botocore_session=core).client(
        "ec2", region_name="us-east-1", endpoint_url=clients.settings.endpoint_url,
        aws_access_key_id="testing", aws_secret_access_key="testing")
    from botocore.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match="DeleteAssociatedSnapshots"):
        ec2.deregister_image(ImageId="ami-0123456789abcdef0", DeleteAssociatedSnapshots=True)
    build = "b-20261125170000-abcdef"
    ami = verified_ami(emulator, clients, build_id=build)
    snaps = cleanup.snapshots_of(ec2.describe_images(ImageIds=[ami])["Images"][0])
    assert snaps
    done = cleanup.deregister_images(ec2, "us-east-1", cleanup.Owner(build), [ami],
                                     with_snapshots=True)
    assert sorted((r.kind, r.id, r.outcome) for r in done) == sorted(
        [("image", ami, "removed")] + [("snapshot", s, "removed") for s in snaps])
    left = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert not set(snaps) & left
