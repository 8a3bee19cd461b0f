"""KMS keys on StartSnapshot, CopyImage and CopySnapshot, with plain boto3.

Sources (botocore models): ebs ``StartSnapshotRequest.KmsKeyArn`` (pattern
``arn:aws[a-z\\-]*:kms:.*:[0-9]{12}:key/.*``), ``ValidationExceptionReason``
``INVALID_CUSTOMER_KEY``, ``StartSnapshotResponse.KmsKeyArn``/``SseType``; ec2
``CopyImage.KmsKeyId``/``CopySnapshot.KmsKeyId`` ("If you specify a KMS key, you must also
set the encrypted state to true"; "Amazon Web Services authenticates the KMS key
asynchronously ... the action can appear to complete, but eventually fails"),
``CopySnapshot.Encrypted`` ("Copies of encrypted snapshots are encrypted").
https://docs.aws.amazon.com/ebs/latest/APIReference/API_StartSnapshot.html
"""
from __future__ import annotations

import pytest
from botocore.exceptions import ClientError


def _error(err: pytest.ExceptionInfo[ClientError]) -> dict:
    return err.value.response["Error"] | {"Reason": err.value.response.get("Reason")}


@pytest.fixture
def key(boto) -> str:
    return str(boto("kms").create_key(Description="snapshots")["KeyMetadata"]["Arn"])


def test_start_snapshot_with_a_key_answers_kms_fields(boto, key) -> None:
    ebs, ec2 = boto("ebs"), boto("ec2")
    out = ebs.start_snapshot(VolumeSize=1, Encrypted=True, KmsKeyArn=key)
    assert (out["KmsKeyArn"], out["SseType"]) == (key, "sse-kms")
    snap = ec2.describe_snapshots(SnapshotIds=[out["SnapshotId"]])["Snapshots"][0]
    assert snap["Encrypted"] is True and snap["KmsKeyId"] == key


def test_start_snapshot_unencrypted_says_none(boto) -> None:
    out = boto("ebs").start_snapshot(VolumeSize=1)
    assert out["SseType"] == "none" and "KmsKeyArn" not in out


def test_start_snapshot_encrypted_without_key_uses_the_default_key(boto) -> None:
    out = boto("ebs").start_snapshot(VolumeSize=1, Encrypted=True)
    assert out["SseType"] == "sse-kms" and out["KmsKeyArn"].startswith("arn:aws:kms:us-east-1:")
    snap = boto("ec2").describe_snapshots(SnapshotIds=[out["SnapshotId"]])["Snapshots"][0]
    assert snap["Encrypted"] is True


@pytest.mark.parametrize("ref", ["alias/x", "1234abcd-12ab-34cd-56ef-1234567890ab",
                                 "arn:aws:kms:us-east-1:123456789012:alias/x"])
def test_start_snapshot_key_must_be_a_key_arn(boto, ref) -> None:
    with pytest.raises(ClientError) as err:
        boto("ebs").start_snapshot(VolumeSize=1, Encrypted=True, KmsKeyArn=ref)
    assert err.value.response["Error"]["Code"] == "ValidationException"


def test_start_snapshot_unknown_or_disabled_key(boto, key) -> None:
    ebs = boto("ebs")
    missing = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    for ref in (missing, key.replace("us-east-1", "eu-west-1")):
        with pytest.raises(ClientError) as err:
            ebs.start_snapshot(VolumeSize=1, Encrypted=True, KmsKeyArn=ref)
        assert err.value.response["Error"]["Code"] == "ValidationException"
        assert err.value.response["Reason"] == "INVALID_CUSTOMER_KEY"
    boto("kms").disable_key(KeyId=key.rsplit("/", 1)[1])
    with pytest.raises(ClientError):
        ebs.start_snapshot(VolumeSize=1, Encrypted=True, KmsKeyArn=key)


def _snapshot(boto) -> str:
    ec2 = boto("ec2")
    vol = ec2.create_volume(AvailabilityZone="us-east-1a", Size=1)["VolumeId"]
    return str(ec2.create_snapshot(VolumeId=vol)["SnapshotId"])


def test_copy_snapshot_kms_key_needs_encrypted(boto, key) -> None:
    ec2 = boto("ec2")
    sid = _snapshot(boto)
    with pytest.raises(ClientError) as err:
        ec2.copy_snapshot(SourceSnapshotId=sid, SourceRegion="us-east-1", KmsKeyId=key)
    assert err.value.response["Error"]["Code"] == "InvalidParameterDependency"
    copy = ec2.copy_snapshot(SourceSnapshotId=sid, SourceRegion="us-east-1", Encrypted=True,
                             KmsKeyId=key)["SnapshotId"]
    snap = ec2.describe_snapshots(SnapshotIds=[copy])["Snapshots"][0]
    assert snap["Encrypted"] is True and snap["KmsKeyId"] == key


def test_copy_snapshot_with_an_unknown_key_fails_later(boto) -> None:
    ec2 = boto("ec2")
    sid = _snapshot(boto)
    copy = ec2.copy_snapshot(SourceSnapshotId=sid, SourceRegion="us-east-1", Encrypted=True,
                             KmsKeyId="alias/does-not-exist")["SnapshotId"]
    assert ec2.describe_snapshots(SnapshotIds=[copy])["Snapshots"][0]["State"] == "error"


def test_copy_image_with_keys(boto, emulator) -> None:
    west = boto("ec2", region="us-west-2")
    src = emulator.seed_image("bare", name="kms-source")
    west_key = boto("kms", region="us-west-2").create_key()["KeyMetadata"]["Arn"]
    with pytest.raises(ClientError) as err:
        west.copy_image(SourceImageId=src, SourceRegion="us-east-1", Name="copy-0", KmsKeyId=west_key)
    assert err.value.response["Error"]["Code"] == "InvalidParameterDependency"
    good = west.copy_image(SourceImageId=src, SourceRegion="us-east-1", Name="copy-1",
                           Encrypted=True, KmsKeyId=west_key)["ImageId"]
    img = west.describe_images(ImageIds=[good])["Images"][0]
    sid = img["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    snap = west.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
    assert snap["Encrypted"] is True and snap["KmsKeyId"] == west_key
    # A key of another Region: accepted, then the copy fails ("must exist in the
    # destination Region").
    east_key = boto("kms").create_key()["KeyMetadata"]["Arn"]
    bad = west.copy_image(SourceImageId=src, SourceRegion="us-east-1", Name="copy-2",
                          Encrypted=True, KmsKeyId=east_key)["ImageId"]
    assert west.describe_images(ImageIds=[bad])["Images"][0]["State"] == "failed"
