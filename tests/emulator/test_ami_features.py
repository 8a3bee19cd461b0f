"""Allowed AMIs, deregistration protection, ancestry and LastLaunchedTime with plain boto3.

Sources: botocore ec2 model (GetAllowedImagesSettings, EnableAllowedImagesSettings,
DisableAllowedImagesSettings, ReplaceImageCriteriaInAllowedImagesSettings, Image.ImageAllowed:
"If false and Allowed AMIs is set to enabled, the AMI can't be discovered or used"; "The
Allowed AMIs feature does not restrict the AMIs owned by your account";
Enable/DisableImageDeregistrationProtection, WithCooldown "enforces deregistration
protection for 24 hours after deregistration protection is disabled"; GetImageAncestry
"from the specified AMI to the root AMI"; Image.SourceImageId/SourceImageRegion/
SourceInstanceId/LastLaunchedTime), and
https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ec2-allowed-amis.html,
https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ami-deregistration-protection.html.
"""
from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from pipeline_dev.emulator import ami_features

EKS_OWNER = "602401143452"   # the seeded public EKS AMIs' owner (alias amazon)


def _code(err: pytest.ExceptionInfo[ClientError]) -> str:
    return str(err.value.response["Error"]["Code"])


def _public_eks(ec2) -> list[dict]:
    return ec2.describe_images(Owners=[EKS_OWNER])["Images"]


def test_allowed_images_settings_default_and_round_trip(boto) -> None:
    ec2 = boto("ec2")
    first = ec2.get_allowed_images_settings()
    assert first["State"] == "disabled" and first.get("ImageCriteria", []) == []
    assert first["ManagedBy"] == "account"
    assert "ImageAllowed" not in _public_eks(ec2)[0]          # only when enabled/audit
    criteria = [{"ImageProviders": ["amazon"], "CreationDateCondition":
                 {"MaximumDaysSinceCreated": 300}},
                {"ImageNames": ["my-golden-*"]}]
    assert ec2.replace_image_criteria_in_allowed_images_settings(
        ImageCriteria=criteria)["ReturnValue"] is True
    assert ec2.enable_allowed_images_settings(
        AllowedImagesSettingsState="audit-mode")["AllowedImagesSettingsState"] == "audit-mode"
    got = ec2.get_allowed_images_settings()
    assert got["State"] == "audit-mode"
    assert got["ImageCriteria"] == criteria
    assert ec2.disable_allowed_images_settings()["AllowedImagesSettingsState"] == "disabled"


def test_audit_mode_marks_and_enabled_hides(boto, emulator) -> None:
    ec2 = boto("ec2")
    own = emulator.seed_image("bare", name="own-image")
    ec2.replace_image_criteria_in_allowed_images_settings(
        ImageCriteria=[{"ImageProviders": ["123456789013"]}])   # nobody we know
    ec2.enable_allowed_images_settings(AllowedImagesSettingsState="audit-mode")
    public = _public_eks(ec2)
    assert public and all(i["ImageAllowed"] is False for i in public)
    mine = ec2.describe_images(ImageIds=[own])["Images"][0]
    assert mine["ImageAllowed"] is True                     # own AMIs are never restricted
    ec2.enable_allowed_images_settings(AllowedImagesSettingsState="enabled")
    assert _public_eks(ec2) == []                           # not discoverable
    assert ec2.describe_images(ImageIds=[own])["Images"][0]["ImageId"] == own
    ec2.replace_image_criteria_in_allowed_images_settings(
        ImageCriteria=[{"ImageProviders": ["amazon"]}])
    assert all(i["ImageAllowed"] for i in _public_eks(ec2))


def test_name_and_deprecation_criteria(boto) -> None:
    ec2 = boto("ec2")
    public = _public_eks(ec2)
    target = public[0]
    ec2.replace_image_criteria_in_allowed_images_settings(ImageCriteria=[
        {"ImageNames": [target["Name"]], "DeprecationTimeCondition":
         {"MaximumDaysSinceDeprecated": 0}}])
    ec2.enable_allowed_images_settings(AllowedImagesSettingsState="audit-mode")
    marks = {i["ImageId"]: i["ImageAllowed"] for i in _public_eks(ec2)}
    assert marks[target["ImageId"]] is True
    assert sum(marks.values()) == sum(1 for i in public if i["Name"] == target["Name"])


@pytest.mark.parametrize("criteria", [
    [{"ImageProviders": ["amazon"]}] * 11,                    # at most 10 criteria
    [{"ImageProviders": ["not-a-provider"]}],
])
def test_bad_criteria_are_refused(boto, criteria) -> None:
    with pytest.raises(ClientError) as err:
        boto("ec2").replace_image_criteria_in_allowed_images_settings(ImageCriteria=criteria)
    assert _code(err) == "InvalidParameterValue"


def test_enable_with_a_bad_state_is_refused(boto) -> None:
    with pytest.raises(ClientError):
        boto("ec2", parameter_validation=False).enable_allowed_images_settings(
            AllowedImagesSettingsState="on")


def test_deregistration_protection_and_cooldown(boto, emulator) -> None:
    ec2 = boto("ec2")
    ami = emulator.seed_image("bare", name="protected")
    assert ec2.describe_images(ImageIds=[ami])["Images"][0]["DeregistrationProtection"] == \
        "disabled"
    ec2.enable_image_deregistration_protection(ImageId=ami, WithCooldown=True)
    img = ec2.describe_images(ImageIds=[ami])["Images"][0]
    assert img["DeregistrationProtection"] == "enabled-with-cooldown"
    attr = ec2.describe_image_attribute(ImageId=ami, Attribute="deregistrationProtection")
    assert attr["DeregistrationProtection"]["Value"] == "enabled-with-cooldown"
    with pytest.raises(ClientError) as err:
        ec2.deregister_image(ImageId=ami)
    assert _code(err) == "OperationNotPermitted"
    assert ec2.disable_image_deregistration_protection(ImageId=ami)["Return"] == "true"
    state = ec2.describe_images(ImageIds=[ami])["Images"][0]["DeregistrationProtection"]
    assert state.startswith("disabled-until ")              # the 24 h cooldown
    with pytest.raises(ClientError):
        ec2.deregister_image(ImageId=ami)
    assert ec2.describe_images(ImageIds=[ami])["Images"]     # still there


def test_protection_without_cooldown_and_after_the_cooldown(boto, emulator) -> None:
    ec2 = boto("ec2")
    quick = emulator.seed_image("bare", name="quick")
    ec2.enable_image_deregistration_protection(ImageId=quick)
    assert ec2.describe_images(ImageIds=[quick])["Images"][0]["DeregistrationProtection"] == \
        "enabled"
    ec2.disable_image_deregistration_protection(ImageId=quick)
    ec2.deregister_image(ImageId=quick)
    slow = emulator.seed_image("bare", name="slow")
    ami_features.configure(cooldown_seconds=0)
    try:
        ec2.enable_image_deregistration_protection(ImageId=slow, WithCooldown=True)
        ec2.disable_image_deregistration_protection(ImageId=slow)
        ec2.deregister_image(ImageId=slow)                   # the (zero) cooldown is over
    finally:
        ami_features.configure(cooldown_seconds=24 * 3600)


def test_copy_image_ancestry(boto, emulator) -> None:
    east, west = boto("ec2"), boto("ec2", region="us-west-2")
    root = emulator.seed_image("bare", name="root-image")
    child = east.copy_image(SourceImageId=root, SourceRegion="us-east-1",
                            Name="child")["ImageId"]
    grandchild = west.copy_image(SourceImageId=child, SourceRegion="us-east-1",
                                 Name="grandchild")["ImageId"]
    img = west.describe_images(ImageIds=[grandchild])["Images"][0]
    assert (img["SourceImageId"], img["SourceImageRegion"]) == (child, "us-east-1")
    chain = west.get_image_ancestry(ImageId=grandchild)["ImageAncestryEntries"]
    assert [e["ImageId"] for e in chain] == [grandchild, child, root]
    assert chain[0]["SourceImageRegion"] == "us-east-1"
    assert "SourceImageId" not in chain[-1]
    with pytest.raises(ClientError) as err:
        east.get_image_ancestry(ImageId="ami-0123456789abcdef0")
    assert _code(err) == "InvalidAMIID.NotFound"


def test_create_image_source_fields_and_last_launched_time(boto, emulator) -> None:
    ec2 = boto("ec2")
    base = emulator.seed_image("bare", name="launch-base")
    assert "LastLaunchedTime" not in ec2.describe_images(ImageIds=[base])["Images"][0]
    inst = ec2.run_instances(ImageId=base, MinCount=1, MaxCount=1,
                             InstanceType="m5.large")["Instances"][0]["InstanceId"]
    img = ec2.describe_images(ImageIds=[base])["Images"][0]
    assert img["LastLaunchedTime"]
    attr = ec2.describe_image_attribute(ImageId=base, Attribute="lastLaunchedTime")
    assert attr["LastLaunchedTime"]["Value"] == img["LastLaunchedTime"]
    made = ec2.create_image(InstanceId=inst, Name="from-instance")["ImageId"]
    out = ec2.describe_images(ImageIds=[made])["Images"][0]
    assert (out["SourceImageId"], out["SourceImageRegion"], out["SourceInstanceId"]) == \
        (base, "us-east-1", inst)
