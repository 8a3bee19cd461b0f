"""Launch templates over HTTP: versions, tokens, paging, aliases, deletion.

Sources: botocore ec2 model (CreateLaunchTemplateVersion SourceVersion/ClientToken,
DescribeLaunchTemplateVersions MaxResults 1-200, DeleteLaunchTemplateVersions error-code
enum), AWSEC2/latest/APIReference/API_CreateLaunchTemplateVersion.html (SourceVersion
inheritance), AWSEC2/latest/UserGuide/instancedata-add-user-data.html (16 KB raw limit),
aws-cli awscli/examples/ec2/describe-launch-template-versions.rst (newest first),
AWS-FACTS §3.
"""
from __future__ import annotations

import base64

import pytest
from botocore.exceptions import ClientError


@pytest.fixture
def ec2(clients):
    return clients.client("ec2")


def _lt(ec2, name="web", **data) -> str:
    data = {"ImageId": "ami-11111111111111111", "InstanceType": "m5.large", **data}
    return ec2.create_launch_template(LaunchTemplateName=name,
                                      LaunchTemplateData=data)["LaunchTemplate"]["LaunchTemplateId"]


def _code(exc) -> str:
    return exc.value.response["Error"]["Code"]


def test_source_version_inherits_and_overlays(ec2):
    ud = base64.b64encode(b"#!/bin/bash\necho hi\n").decode()
    tid = _lt(ec2, UserData=ud, KeyName="k1")
    v2 = ec2.create_launch_template_version(
        LaunchTemplateId=tid, SourceVersion="1",
        LaunchTemplateData={"ImageId": "ami-22222222222222222"})["LaunchTemplateVersion"]
    data = v2["LaunchTemplateData"]
    assert v2["VersionNumber"] == 2
    assert data["ImageId"] == "ami-22222222222222222"
    assert (data["InstanceType"], data["KeyName"], data["UserData"]) == ("m5.large", "k1", ud)
    # Without SourceVersion the version holds only the given data.
    v3 = ec2.create_launch_template_version(
        LaunchTemplateId=tid, LaunchTemplateData={"ImageId": "ami-3"})["LaunchTemplateVersion"]
    assert "InstanceType" not in v3["LaunchTemplateData"]
    v4 = ec2.create_launch_template_version(
        LaunchTemplateId=tid, SourceVersion="$Latest",
        LaunchTemplateData={"InstanceType": "c5.large"})["LaunchTemplateVersion"]
    assert v4["LaunchTemplateData"] == {"ImageId": "ami-3", "InstanceType": "c5.large"}


def test_client_token_idempotency(ec2):
    tid = _lt(ec2)
    kw = dict(LaunchTemplateId=tid, ClientToken="tok-a",
              LaunchTemplateData={"ImageId": "ami-22222222222222222"})
    first = ec2.create_launch_template_version(**kw)["LaunchTemplateVersion"]
    again = ec2.create_launch_template_version(**kw)["LaunchTemplateVersion"]
    assert first["VersionNumber"] == again["VersionNumber"] == 2
    with pytest.raises(ClientError) as exc:
        ec2.create_launch_template_version(**{**kw, "LaunchTemplateData": {"ImageId": "ami-9"}})
    assert _code(exc) == "IdempotentParameterMismatch"
    a = ec2.create_launch_template(LaunchTemplateName="tok", ClientToken="t-1",
                                   LaunchTemplateData={"InstanceType": "m5.large"})
    b = ec2.create_launch_template(LaunchTemplateName="tok", ClientToken="t-1",
                                   LaunchTemplateData={"InstanceType": "m5.large"})
    assert a["LaunchTemplate"]["LaunchTemplateId"] == b["LaunchTemplate"]["LaunchTemplateId"]


def test_description_and_user_data_limits(ec2):
    tid = _lt(ec2)
    with pytest.raises(ClientError) as exc:
        ec2.create_launch_template_version(LaunchTemplateId=tid, VersionDescription="x" * 256,
                                          LaunchTemplateData={"ImageId": "ami-1"})
    assert _code(exc) == "InvalidParameterValue"
    with pytest.raises(ClientError) as exc:
        ec2.create_launch_template_version(LaunchTemplateId=tid,
                                          LaunchTemplateData={"UserData": "not base64!"})
    assert _code(exc) == "InvalidUserData.Malformed"
    big = base64.b64encode(b"#" * (16 * 1024 + 1)).decode()
    with pytest.raises(ClientError) as exc:
        ec2.create_launch_template_version(LaunchTemplateId=tid,
                                          LaunchTemplateData={"UserData": big})
    assert _code(exc) == "InvalidParameterValue"
    ok = base64.b64encode(b"#" * (16 * 1024)).decode()
    ec2.create_launch_template_version(LaunchTemplateId=tid, VersionDescription="y" * 255,
                                      LaunchTemplateData={"UserData": ok})


def test_describe_versions_paging_range_aliases(ec2):
    tid = _lt(ec2)
    for i in range(2, 26):
        ec2.create_launch_template_version(LaunchTemplateId=tid,
                                          LaunchTemplateData={"ImageId": f"ami-{i}"})
    # moto returned at most 15 without NextToken; AWS pages with MaxResults/NextToken.
    seen, token = [], None
    while True:
        kw = {"NextToken": token} if token else {}
        page = ec2.describe_launch_template_versions(LaunchTemplateId=tid, MaxResults=10, **kw)
        assert len(page["LaunchTemplateVersions"]) <= 10
        seen += [v["VersionNumber"] for v in page["LaunchTemplateVersions"]]
        token = page.get("NextToken")
        if not token:
            break
    assert seen == list(range(25, 0, -1))  # newest first
    rng = ec2.describe_launch_template_versions(LaunchTemplateId=tid, MinVersion="3",
                                                MaxVersion="5")["LaunchTemplateVersions"]
    assert [v["VersionNumber"] for v in rng] == [5, 4, 3]
    alias = ec2.describe_launch_template_versions(
        LaunchTemplateId=tid, Versions=["$Latest", "$Default"])["LaunchTemplateVersions"]
    assert sorted(v["VersionNumber"] for v in alias) == [1, 25]
    with pytest.raises(ClientError) as exc:
        ec2.describe_launch_template_versions(LaunchTemplateId=tid, MaxResults=201)
    assert _code(exc) == "InvalidParameterValue"
    other = _lt(ec2, name="other")
    across = ec2.describe_launch_template_versions(Versions=["$Latest"])["LaunchTemplateVersions"]
    assert {(v["LaunchTemplateId"], v["VersionNumber"]) for v in across} == {(tid, 25), (other, 1)}
    with pytest.raises(ClientError):
        ec2.describe_launch_template_versions(Versions=["3"])
    paginator = ec2.get_paginator("describe_launch_template_versions")
    total = sum(len(p["LaunchTemplateVersions"]) for p in paginator.paginate(
        LaunchTemplateId=tid, PaginationConfig={"PageSize": 7}))
    assert total == 25


def test_modify_default_and_delete_versions(ec2):
    tid = _lt(ec2)
    for i in range(2, 5):
        ec2.create_launch_template_version(LaunchTemplateId=tid,
                                          LaunchTemplateData={"ImageId": f"ami-{i}"})
    out = ec2.modify_launch_template(LaunchTemplateId=tid, DefaultVersion="$Latest")
    assert out["LaunchTemplate"]["DefaultVersionNumber"] == 4
    res = ec2.delete_launch_template_versions(LaunchTemplateId=tid, Versions=["2", "4", "9"])
    assert [v["VersionNumber"] for v in res["SuccessfullyDeletedLaunchTemplateVersions"]] == [2]
    bad = {v["VersionNumber"]: v["ResponseError"]["Code"]
           for v in res["UnsuccessfullyDeletedLaunchTemplateVersions"]}
    assert bad == {4: "unexpectedError", 9: "launchTemplateVersionDoesNotExist"}
    left = ec2.describe_launch_template_versions(LaunchTemplateId=tid)["LaunchTemplateVersions"]
    assert [v["VersionNumber"] for v in left] == [4, 3, 1]
    with pytest.raises(ClientError) as exc:
        ec2.modify_launch_template(LaunchTemplateId=tid, DefaultVersion="2")
    assert _code(exc) == "InvalidLaunchTemplateId.VersionNotFound"
    nxt = ec2.create_launch_template_version(LaunchTemplateId=tid, LaunchTemplateData={})
    assert nxt["LaunchTemplateVersion"]["VersionNumber"] == 5  # numbers are never reused
    with pytest.raises(ClientError):
        ec2.delete_launch_template_versions(LaunchTemplateId=tid,
                                            Versions=[str(i) for i in range(1, 202)])


def test_describe_launch_templates_pages_past_fifteen(ec2):
    ids = {_lt(ec2, name=f"lt-{i:02d}") for i in range(20)}
    got = set()
    for page in ec2.get_paginator("describe_launch_templates").paginate(
            PaginationConfig={"PageSize": 6}):
        got |= {t["LaunchTemplateId"] for t in page["LaunchTemplates"]}
    assert got == ids


def test_resolve_alias_shows_the_ami(clients, ec2):
    # botocore model DescribeLaunchTemplateVersions.ResolveAlias: "If true, and if a Systems
    # Manager parameter is specified for ImageId, the AMI ID is displayed in the response".
    param = "/aws/service/eks/optimized-ami/1.30/amazon-linux-2/recommended/image_id"
    ami = clients.client("ssm").get_parameter(Name=param)["Parameter"]["Value"]
    tid = _lt(ec2, ImageId=f"resolve:ssm:{param}")
    plain = ec2.describe_launch_template_versions(LaunchTemplateId=tid)["LaunchTemplateVersions"]
    assert plain[0]["LaunchTemplateData"]["ImageId"] == f"resolve:ssm:{param}"
    resolved = ec2.describe_launch_template_versions(
        LaunchTemplateId=tid, ResolveAlias=True)["LaunchTemplateVersions"]
    assert resolved[0]["LaunchTemplateData"]["ImageId"] == ami


def test_image_references_follow_deleted_versions(clients, ec2):
    # API_DescribeImageReferences (ec2:LaunchTemplate references); deleted versions refer
    # to nothing (DeleteLaunchTemplateVersions removes them).
    ami = clients.client("ssm").get_parameter(
        Name="/aws/service/eks/optimized-ami/1.31/amazon-linux-2/recommended/image_id"
    )["Parameter"]["Value"]
    tid = _lt(ec2)
    ec2.create_launch_template_version(LaunchTemplateId=tid, LaunchTemplateData={"ImageId": ami})

    def refs() -> list[str]:
        out = ec2.describe_image_references(ImageIds=[ami], ResourceTypes=[
            {"ResourceType": "ec2:LaunchTemplate"}])["ImageReferences"]
        return [r["Arn"].rsplit("/", 1)[1] for r in out]

    assert refs() == [tid]
    ec2.delete_launch_template_versions(LaunchTemplateId=tid, Versions=["2"])
    assert refs() == []
