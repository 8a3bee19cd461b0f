"""DescribeImageReferences defaults, options, paging and errors, with plain boto3.

Sources: botocore ec2 model (DescribeImageReferences: ImageIds 1-10, MaxResults min 5,
ResourceType enum; ResourceTypeOption: "For state-name: Valid values: pending | running |
shutting-down | terminated | stopping | stopped  Default: All states"; "For version-depth:
Valid values: Integers between 1 and 10000  Default: 10"; options "Valid only when
ResourceType is ec2:Instance or ec2:LaunchTemplate"),
https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeImageReferences.html and
https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ec2-ami-references.html ("Identify your
resources referencing specified AMIs": your resources, not AWS's public parameters).
"""
from __future__ import annotations

import pytest
from botocore.exceptions import ClientError


def _refs(ec2, image: str, **kw) -> list[dict]:
    kw = kw or {"IncludeAllResourceTypes": True}
    return ec2.describe_image_references(ImageIds=[image], **kw)["ImageReferences"]


def test_terminated_instances_count_by_default(boto, emulator) -> None:
    ec2 = boto("ec2")
    ami = emulator.seed_image("bare", name="refs-inst")
    inst = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1,
                             InstanceType="m5.large")["Instances"][0]["InstanceId"]
    ec2.terminate_instances(InstanceIds=[inst])
    arns = [r["Arn"] for r in _refs(ec2, ami)]
    assert arns == [f"arn:aws:ec2:us-east-1:123456789012:instance/{inst}"]
    only_running = _refs(ec2, ami, ResourceTypes=[{
        "ResourceType": "ec2:Instance",
        "ResourceTypeOptions": [{"OptionName": "state-name", "OptionValues": ["running"]}]}])
    assert only_running == []


def test_launch_template_depth_defaults_to_10(boto, emulator) -> None:
    ec2 = boto("ec2")
    ami = emulator.seed_image("bare", name="refs-lt")
    ec2.create_launch_template(LaunchTemplateName="refs", LaunchTemplateData={"ImageId": ami})
    for i in range(10):                          # versions 2..11 name another image
        ec2.create_launch_template_version(LaunchTemplateName="refs",
                                           LaunchTemplateData={"ImageId": f"ami-{i:017x}"})
    assert _refs(ec2, ami) == []                 # version 1 is the 11th newest
    deep = _refs(ec2, ami, ResourceTypes=[{
        "ResourceType": "ec2:LaunchTemplate",
        "ResourceTypeOptions": [{"OptionName": "version-depth", "OptionValues": ["11"]}]}])
    assert [r["ResourceType"] for r in deep] == ["ec2:LaunchTemplate"]


def test_public_parameters_are_not_the_accounts(boto) -> None:
    ec2, ssm = boto("ec2"), boto("ssm")
    public = "/aws/service/eks/optimized-ami/1.31/amazon-linux-2023/x86_64/standard/" \
             "recommended/image_id"
    ami = ssm.get_parameter(Name=public)["Parameter"]["Value"]
    assert _refs(ec2, ami) == []
    ssm.put_parameter(Name="/mine/node-ami", Value=ami, Type="String", DataType="aws:ec2:image")
    assert [r["Arn"] for r in _refs(ec2, ami)] == \
        ["arn:aws:ssm:us-east-1:123456789012:parameter/mine/node-ami"]


def test_paging(boto, emulator) -> None:
    ec2 = boto("ec2")
    ami = emulator.seed_image("bare", name="refs-paging")
    ec2.run_instances(ImageId=ami, MinCount=7, MaxCount=7, InstanceType="m5.large")
    first = ec2.describe_image_references(ImageIds=[ami], IncludeAllResourceTypes=True,
                                          MaxResults=5)
    assert len(first["ImageReferences"]) == 5 and first["NextToken"]
    rest = ec2.describe_image_references(ImageIds=[ami], IncludeAllResourceTypes=True,
                                         MaxResults=5, NextToken=first["NextToken"])
    assert len(rest["ImageReferences"]) == 2 and "NextToken" not in rest
    pages = ec2.get_paginator("describe_image_references").paginate(
        ImageIds=[ami], IncludeAllResourceTypes=True, PaginationConfig={"PageSize": 5})
    assert sum(len(p["ImageReferences"]) for p in pages) == 7
    with pytest.raises(ClientError) as err:
        ec2.describe_image_references(ImageIds=[ami], IncludeAllResourceTypes=True,
                                      NextToken="garbage")
    assert err.value.response["Error"]["Code"] == "InvalidPaginationToken"


@pytest.mark.parametrize("kw", [
    {"ResourceTypes": [{"ResourceType": "ec2:Volume"}]},
    {"ResourceTypes": [{"ResourceType": "ssm:Parameter", "ResourceTypeOptions": [
        {"OptionName": "state-name", "OptionValues": ["running"]}]}]},
    {"ResourceTypes": [{"ResourceType": "ec2:LaunchTemplate", "ResourceTypeOptions": [
        {"OptionName": "version-depth", "OptionValues": ["0"]}]}]},
    {"ResourceTypes": [{"ResourceType": "ec2:Instance", "ResourceTypeOptions": [
        {"OptionName": "state-name", "OptionValues": ["sleeping"]}]}]},
    {},
])
def test_bad_requests(boto, kw) -> None:
    ec2 = boto("ec2", parameter_validation=False)
    with pytest.raises(ClientError) as err:
        ec2.describe_image_references(ImageIds=["ami-0123456789abcdef0"], **kw)
    assert err.value.response["Error"]["Code"] == "InvalidParameterValue"


def test_limits(boto) -> None:
    ec2 = boto("ec2", parameter_validation=False)
    with pytest.raises(ClientError):
        ec2.describe_image_references(ImageIds=[f"ami-{i:017x}" for i in range(11)],
                                      IncludeAllResourceTypes=True)
    with pytest.raises(ClientError):
        ec2.describe_image_references(ImageIds=["ami-0123456789abcdef0"],
                                      IncludeAllResourceTypes=True, MaxResults=4)
