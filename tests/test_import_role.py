"""The vmimport role pre-flight, against the emulator's IAM."""
from __future__ import annotations

import json

import pytest

from pipeline.core.errors import PreflightError
from pipeline.aws.iam import allows, bucket_policy, check_role, trust_policy

BUCKET = "image-bucket"


@pytest.fixture
def iam(clients):
    return clients.client("iam")


def _role(iam, trust=None, inline=None, attached=None, name="vmimport"):
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust or trust_policy()))
    if inline is not None:
        iam.put_role_policy(RoleName=name, PolicyName="p", PolicyDocument=json.dumps(inline))
    if attached is not None:
        arn = iam.create_policy(PolicyName="att", PolicyDocument=json.dumps(attached))[
            "Policy"]["Arn"]
        iam.attach_role_policy(RoleName=name, PolicyArn=arn)


def _s3(actions, resources, effect="Allow"):
    return {"Version": "2012-10-17",
            "Statement": [{"Effect": effect, "Action": actions, "Resource": resources}]}


def test_missing_role_is_refused_and_nothing_created(iam) -> None:
    with pytest.raises(PreflightError) as err:
        check_role(iam, BUCKET)
    assert "--create-role" in str(err.value) and err.value.exit_code == 2
    assert iam.list_roles()["Roles"] == []


def test_create_role_makes_the_documented_role_scoped_to_the_bucket(iam) -> None:
    result = check_role(iam, BUCKET, create=True)
    assert result.created
    role = iam.get_role(RoleName="vmimport")["Role"]
    stmt = role["AssumeRolePolicyDocument"]["Statement"][0]
    assert stmt["Principal"] == {"Service": "vmie.amazonaws.com"}
    assert stmt["Condition"] == {"StringEquals": {"sts:Externalid": "vmimport"}}
    doc = iam.get_role_policy(RoleName="vmimport", PolicyName="vmimport")["PolicyDocument"]
    assert f"arn:aws:s3:::{BUCKET}/*" in doc["Statement"][0]["Resource"]
    assert not allows([doc], "s3:GetObject", "arn:aws:s3:::other-bucket/x")
    # a second run finds it and changes nothing
    again = check_role(iam, BUCKET, create=True)
    assert not again.created and again.policy_added is None


def test_attached_policy_with_wildcards_is_enough(iam) -> None:
    _role(iam, attached=_s3("s3:Get*", "arn:aws:s3:::image-*"),
          inline=_s3(["s3:List*"], ["arn:aws:s3:::image-bucket"]))
    check_role(iam, BUCKET)  # GetObject via image-*, GetBucketLocation via s3:Get*


def test_case_insensitive_external_id_key_and_list_principal(iam) -> None:
    trust = {"Statement": [{"Effect": "Allow",
                            "Principal": {"Service": ["ec2.amazonaws.com", "vmie.amazonaws.com"]},
                            "Action": ["sts:AssumeRole"],
                            "Condition": {"StringEquals": {"STS:ExternalId": "vmimport"}}}]}
    _role(iam, trust=trust, inline=bucket_policy(BUCKET))
    check_role(iam, BUCKET)


@pytest.mark.parametrize("trust", [
    {"Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                    "Action": "sts:AssumeRole"}]},
    {"Statement": [{"Effect": "Allow", "Principal": {"Service": "vmie.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                    "Condition": {"StringEquals": {"sts:externalid": "something-else"}}}]},
])
def test_wrong_trust_policy_is_refused_even_with_create_role(iam, trust) -> None:
    _role(iam, trust=trust, inline=bucket_policy(BUCKET))
    with pytest.raises(PreflightError) as err:
        check_role(iam, BUCKET, create=True)
    assert "trust policy" in str(err.value)


def test_policy_for_another_bucket_or_denied_is_refused(iam) -> None:
    _role(iam, inline=bucket_policy("other-bucket"))
    with pytest.raises(PreflightError) as err:
        check_role(iam, BUCKET)
    assert "s3:GetObject" in str(err.value) and BUCKET in str(err.value)


def test_explicit_deny_wins_and_create_role_extends_a_role_that_cannot_read(iam) -> None:
    _role(iam, inline={"Version": "2012-10-17", "Statement": [
        *bucket_policy(BUCKET)["Statement"],
        {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::image-bucket/*"}]})
    with pytest.raises(PreflightError):
        check_role(iam, BUCKET)
    _role(iam, name="other", inline=bucket_policy("other-bucket"))
    result = check_role(iam, BUCKET, role_name="other", create=True)
    assert result.policy_added == f"vmimport-{BUCKET}"


def test_not_action_and_not_resource() -> None:
    doc = {"Statement": [{"Effect": "Allow", "NotAction": "iam:*",
                          "NotResource": "arn:aws:s3:::secret/*"}]}
    assert allows([doc], "s3:GetObject", "arn:aws:s3:::image-bucket/k")
    assert not allows([doc], "s3:GetObject", "arn:aws:s3:::secret/k")
    assert not allows([doc], "iam:PassRole", "arn:aws:s3:::image-bucket/k")


def test_trust_without_the_external_id_condition_is_refused(iam) -> None:
    trust = {"Statement": [{"Effect": "Allow", "Principal": {"Service": "vmie.amazonaws.com"},
                            "Action": "sts:AssumeRole"}]}
    _role(iam, trust=trust, inline=bucket_policy(BUCKET))
    with pytest.raises(PreflightError, match="Externalid"):
        check_role(iam, BUCKET)


def test_grant_is_checked_for_the_exact_object_key(iam) -> None:
    narrow = _s3(["s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation"],
                 ["arn:aws:s3:::image-bucket", "arn:aws:s3:::image-bucket/imports/*.vmdk"])
    _role(iam, inline=narrow)
    check_role(iam, BUCKET, key="imports/abc/node.vmdk")
    with pytest.raises(PreflightError, match="imports/abc/node.raw"):
        check_role(iam, BUCKET, key="imports/abc/node.raw")
