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
