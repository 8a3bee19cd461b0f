"""ClientToken reuse on every API the pipeline calls with a token, with plain boto3.

Source: "Ensuring idempotency in Amazon EC2 API requests"
(https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html): a retry with
the same client token and the same parameters returns the first result; the same token
with different parameters fails with ``IdempotentParameterMismatch``. EBS direct APIs
(https://docs.aws.amazon.com/ebs/latest/APIReference/API_StartSnapshot.html, Errors):
``ConflictException`` "The request uses the same client token as a previous, but
non-identical request."
"""
from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

BUCKET = "idem-images"
TRUST = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "vmie.amazonaws.com"},
    "Action": "sts:AssumeRole", "Condition": {"StringEquals": {"sts:Externalid": "vmimport"}}}]}


def _code(err: pytest.ExceptionInfo[ClientError]) -> str:
    return str(err.value.response["Error"]["Code"])


@pytest.fixture
def role(boto) -> None:
    iam = boto("iam")
    iam.create_role(RoleName="vmimport", AssumeRolePolicyDocument=json.dumps(TRUST))
    boto("s3").create_bucket(Bucket=BUCKET)


def _import(ec2, token: str, key: str = "disk.raw", arch: str = "x86_64") -> dict:
    return ec2.import_image(ClientToken=token, Architecture=arch, LicenseType="BYOL",
                            DiskContainers=[{"Format": "RAW", "UserBucket": {
                                "S3Bucket": BUCKET, "S3Key": key}}])


def test_import_image_same_token_same_parameters_is_the_same_task(boto, role) -> None:
    ec2 = boto("ec2")
    first = _import(ec2, "tok-1")
    again = _import(ec2, "tok-1")
    assert again["ImportTaskId"] == first["ImportTaskId"]
    assert len(ec2.describe_import_image_tasks()["ImportImageTasks"]) == 1


def test_import_image_same_token_other_parameters_is_a_mismatch(boto, role) -> None:
    ec2 = boto("ec2")
    _import(ec2, "tok-2")
    with pytest.raises(ClientError) as err:
        _import(ec2, "tok-2", key="other.raw")
    assert _code(err) == "IdempotentParameterMismatch"
    with pytest.raises(ClientError) as err:
        _import(ec2, "tok-2", arch="arm64")
    assert _code(err) == "IdempotentParameterMismatch"
    assert len(ec2.describe_import_image_tasks()["ImportImageTasks"]) == 1


def test_copy_image_token_reuse(boto, emulator) -> None:
    ec2 = boto("ec2")
    src = emulator.seed_image("al2023", name="idem-source")
    first = ec2.copy_image(SourceImageId=src, SourceRegion="us-east-1", Name="copy-a",
                           ClientToken="copy-tok")["ImageId"]
    again = ec2.copy_image(SourceImageId=src, SourceRegion="us-east-1", Name="copy-a",
                           ClientToken="copy-tok")["ImageId"]
    assert again == first
    with pytest.raises(ClientError) as err:
        ec2.copy_image(SourceImageId=src, SourceRegion="us-east-1", Name="copy-b",
                       ClientToken="copy-tok")
    assert _code(err) == "IdempotentParameterMismatch"
    names = {i["Name"] for i in ec2.describe_images(Owners=["self"])["Images"]}
    assert "copy-b" not in names


def test_launch_template_version_token_reuse(boto) -> None:
    ec2 = boto("ec2")
    ec2.create_launch_template(LaunchTemplateName="idem-lt",
                               LaunchTemplateData={"InstanceType": "m5.large"})
    kw = {"LaunchTemplateName": "idem-lt", "ClientToken": "v-tok"}
    one = ec2.create_launch_template_version(LaunchTemplateData={"ImageId": "ami-1"}, **kw)
    two = ec2.create_launch_template_version(LaunchTemplateData={"ImageId": "ami-1"}, **kw)
    assert one["LaunchTemplateVersion"]["VersionNumber"] == \
        two["LaunchTemplateVersion"]["VersionNumber"]
    with pytest.raises(ClientError) as err:
        ec2.create_launch_template_version(LaunchTemplateData={"ImageId": "ami-2"}, **kw)
    assert _code(err) == "IdempotentParameterMismatch"


def test_create_launch_template_token_reuse(boto) -> None:
    ec2 = boto("ec2")
    ec2.create_launch_template(LaunchTemplateName="idem-a", ClientToken="lt-tok",
                               LaunchTemplateData={"InstanceType": "m5.large"})
    with pytest.raises(ClientError) as err:
        ec2.create_launch_template(LaunchTemplateName="idem-a", ClientToken="lt-tok",
                                   LaunchTemplateData={"InstanceType": "m6i.large"})
    assert _code(err) == "IdempotentParameterMismatch"


def test_start_snapshot_token_reuse_is_conflict(boto) -> None:
    ebs = boto("ebs")
    first = ebs.start_snapshot(VolumeSize=1, ClientToken="snap-tok")["SnapshotId"]
    assert ebs.start_snapshot(VolumeSize=1, ClientToken="snap-tok")["SnapshotId"] == first
    with pytest.raises(ClientError) as err:
        ebs.start_snapshot(VolumeSize=2, ClientToken="snap-tok")
    assert _code(err) == "ConflictException"
