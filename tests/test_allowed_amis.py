"""Allowed AMIs before publishing: refused when the account's setting blocks the AMI (with the
criterion that blocks it), a warning in audit-mode, free while disabled (emulator over HTTP)."""
from __future__ import annotations

import datetime as dt

import pytest

from pipeline.core.errors import InputError
from pipeline.publish import allowed
from pipeline.publish.release import PublishRequest, publish

from test_publish_support import (clients, example_raw, module_clients,  # noqa: F401
                                  node_security_group, settings_for, verified_ami)


@pytest.fixture
def settings(tmp_path, clients):
    raw = example_raw(tmp_path, sg_ids=[node_security_group(clients)])
    return settings_for(raw, tmp_path)


@pytest.fixture
def amazon_ami(clients) -> dict:
    """An AMI this account does not own (moto's Amazon-owned images)."""
    images = clients.client("ec2").describe_images(Owners=["amazon"])["Images"]
    return next(i for i in images if i.get("State") == "available" and i.get("Name"))


def _criteria(clients, state: str, criteria: list[dict]) -> None:
    ec2 = clients.client("ec2")
    ec2.replace_image_criteria_in_allowed_images_settings(ImageCriteria=criteria)
    ec2.enable_allowed_images_settings(AllowedImagesSettingsState=state)


def test_audit_mode_warns_with_the_blocking_criterion(emulator, clients, settings, amazon_ami):
    _criteria(clients, "audit-mode", [{"ImageNames": ["golden-*"]}])
    res = publish(settings, clients, PublishRequest(ami_id=amazon_ami["ImageId"], create=True,
                                                    allow_unverified=True))
    (w,) = [w for w in res.warnings if "Allowed AMIs" in w]
    assert "audit-mode" in w and "criterion 1: ImageNames ['golden-*']" in w


def test_enabled_refuses_a_hidden_ami_and_creates_nothing(emulator, clients, settings, amazon_ami):
    _criteria(clients, "enabled", [{"ImageProviders": ["123456789012"]}])
    with pytest.raises(InputError, match="Allowed AMIs setting is enabled") as err:
        publish(settings, clients, PublishRequest(ami_id=amazon_ami["ImageId"], create=True,
                                                  allow_unverified=True))
    assert err.value.exit_code == 2
    assert clients.client("ec2").describe_launch_templates()["LaunchTemplates"] == []


def test_own_amis_and_allowed_providers_pass(emulator, clients, settings, amazon_ami):
    _criteria(clients, "enabled", [{"ImageProviders": ["amazon"]}])
    own = verified_ami(emulator, clients)                         # never restricted
    res = publish(settings, clients, PublishRequest(ami_id=own, create=True))
    assert not [w for w in res.warnings if "Allowed AMIs" in w]
    res2 = publish(settings, clients, PublishRequest(ami_id=amazon_ami["ImageId"],
                                                     allow_unverified=True))
    assert res2.image_id == amazon_ami["ImageId"]


def test_blocking_reasons_name_the_unmet_field():
    now = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
    image = {"ImageId": "ami-1", "OwnerId": "111122223333", "Name": "eks-node-1",
             "CreationDate": "2026-01-01T00:00:00.000Z"}
    assert allowed.blocking_reasons(image, [{"ImageProviders": ["amazon"]},
                                            {"ImageNames": ["eks-*"],
                                             "CreationDateCondition":
                                                 {"MaximumDaysSinceCreated": 30}}], now) == [
        "criterion 1: ImageProviders ['amazon'] (the AMI's owner is 111122223333)",
        "criterion 2: CreationDateCondition.MaximumDaysSinceCreated 30 (the AMI is 334 days old)"]
    assert allowed.blocking_reasons(image, [{"ImageNames": ["eks-*"]}], now) == []
    assert "only this account's own" in allowed.blocking_reasons(image, [], now)[0]
