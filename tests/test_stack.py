"""The CloudFormation stack: the seed's resources with its naming bugs fixed, passing cfn-lint."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.publish import user_data as ud
from pipeline.publish.stack import MANAGED_POLICIES, build_stack, render_stack

from test_publish_support import example_raw, settings_for

CFN_LINT = Path(sys.executable).parent / "cfn-lint"


@pytest.fixture
def settings(tmp_path):
    return settings_for(example_raw(tmp_path, sg_ids=["sg-0123456789abcdef0"]), tmp_path)


def test_stack_passes_cfn_lint(settings, tmp_path):
    out = tmp_path / "stack.yaml"
    res = render_stack(settings, output=str(out))
    assert res.output == str(out) and out.read_text() == res.body
    lint = str(CFN_LINT) if CFN_LINT.exists() else shutil.which("cfn-lint")
    assert lint, "cfn-lint is a test dependency"
    proc = subprocess.run([lint, "--regions", "us-east-1", "--", str(out)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cfn_lint_is_not_blind(tmp_path):
    """The same check fails on a stack with the seed's kind of bug (a dangling reference)."""
    doc = {"AWSTemplateFormatVersion": "2010-09-09", "Resources": {
        "NodeInstanceProfile": {"Type": "AWS::IAM::InstanceProfile",
                                "Properties": {"Roles": [{"Ref": "NodeInstanceRole"}]}}}}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    lint = str(CFN_LINT) if CFN_LINT.exists() else shutil.which("cfn-lint")
    proc = subprocess.run([lint, "--", str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "NodeInstanceRole" in proc.stdout


def test_resources_reference_each_other_by_logical_id(settings):
    doc, mechanism = build_stack(settings)
    res = doc["Resources"]
    assert set(res) == {"NodeRole", "NodeAccessEntry", "NodeInstanceProfile", "NodeLaunchTemplate"}
    assert res["NodeAccessEntry"] == {"Type": "AWS::EKS::AccessEntry", "Properties": {
        "ClusterName": settings.cluster.name, "PrincipalArn": {"Fn::GetAtt": ["NodeRole", "Arn"]},
        "Type": "EC2_LINUX"}}
    role = res["NodeRole"]["Properties"]
    arns = [a["Fn::Sub"] for a in role["ManagedPolicyArns"]]
    assert arns == [f"arn:${{AWS::Partition}}:iam::aws:policy/{p}" for p in MANAGED_POLICIES]
    assert MANAGED_POLICIES == ("AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy",
                                "AmazonEC2ContainerRegistryReadOnly",
                                "AmazonSSMManagedInstanceCore")
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "ec2.amazonaws.com"}
    profile = res["NodeInstanceProfile"]["Properties"]
    assert profile["Roles"] == [{"Ref": "NodeRole"}]
    assert profile["InstanceProfileName"] == "eks-node-profile"
    lt = res["NodeLaunchTemplate"]["Properties"]
    assert lt["LaunchTemplateName"] == "eks-nodes"
    data = lt["LaunchTemplateData"]
    assert data["IamInstanceProfile"] == {"Arn": {"Fn::GetAtt": ["NodeInstanceProfile", "Arn"]}}
    assert data["ImageId"] == {"Ref": "ImageId"}
    assert data["SecurityGroupIds"] == {"Ref": "SecurityGroupIds"}
    assert doc["Parameters"]["SecurityGroupIds"]["Default"] == "sg-0123456789abcdef0"
    assert "InstanceType" not in data and "NetworkInterfaces" not in data
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] is True
    # user data: rendered for the image's mechanism, literal (no Fn::Sub placeholders), linted
    text = data["UserData"]["Fn::Base64"]
    assert isinstance(text, str) and mechanism == ud.NODEADM
    assert ud.lint(text, mechanism=mechanism, cluster=settings.cluster) == []
    assert "${" not in text and "<endpoint>" not in text


def test_bootstrap_sh_images_get_a_bootstrap_script(tmp_path):
    raw = example_raw(tmp_path)
    raw["images"][0]["require"] = "bootstrap.sh"
    doc, mechanism = build_stack(settings_for(raw, tmp_path))
    text = doc["Resources"]["NodeLaunchTemplate"]["Properties"]["LaunchTemplateData"][
        "UserData"]["Fn::Base64"]
    assert mechanism == ud.BOOTSTRAP_SH and "/etc/eks/bootstrap.sh \\" in text
    assert ud.lint(text, mechanism=mechanism) == []


def test_stdout_summary_is_the_template(settings):
    res = render_stack(settings)
    assert res.output is None and yaml.safe_load(res.summary())["Resources"]
    assert res.to_dict()["template"]["AWSTemplateFormatVersion"] == "2010-09-09"


def _two_templates(tmp_path):
    raw = example_raw(tmp_path, sg_ids=["sg-0123456789abcdef0"])
    second = dict(raw["launch_templates"][0], name="eks-nodes-gpu", instance_profile=None)
    raw["launch_templates"].append(second)
    return settings_for(raw, tmp_path)


def _cfn_lint(path: Path) -> subprocess.CompletedProcess[str]:
    lint = str(CFN_LINT) if CFN_LINT.exists() else shutil.which("cfn-lint")
    assert lint, "cfn-lint is a test dependency"
    return subprocess.run([lint, "--regions", "us-east-1", "--", str(path)], capture_output=True,
                          text=True, timeout=120)


def test_several_templates_render_all_or_the_one_asked_for(tmp_path):
    settings = _two_templates(tmp_path)
    out = tmp_path / "all.yaml"
    res = render_stack(settings, output=str(out))
    assert res.template_names == ("eks-nodes", "eks-nodes-gpu")
    assert "CAPABILITY_NAMED_IAM" in res.summary()
    doc = yaml.safe_load(out.read_text())
    lts = {k: v for k, v in doc["Resources"].items() if v["Type"] == "AWS::EC2::LaunchTemplate"}
    assert set(lts) == {"NodeLaunchTemplateEksNodes", "NodeLaunchTemplateEksNodesGpu"}
    assert lts["NodeLaunchTemplateEksNodesGpu"]["Properties"]["LaunchTemplateData"][
        "IamInstanceProfile"] == {"Arn": {"Fn::GetAtt": ["NodeInstanceProfileEksNodesGpu", "Arn"]}}
    assert {"ImageIdEksNodes", "ImageIdEksNodesGpu"} <= set(doc["Parameters"])
    assert list(doc["Resources"]).count("NodeRole") == 1
    proc = _cfn_lint(out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    one, _ = build_stack(settings, "eks-nodes-gpu")
    (lt,) = [v for v in one["Resources"].values() if v["Type"] == "AWS::EC2::LaunchTemplate"]
    assert lt["Properties"]["LaunchTemplateName"] == "eks-nodes-gpu"
    assert "NodeLaunchTemplate" in one["Resources"]
    from pipeline.core.errors import ConfigError
    with pytest.raises(ConfigError, match="--template nope: not a configured launch template"):
        build_stack(settings, "nope")


def test_access_entry_can_be_left_out(settings):
    doc, _ = build_stack(settings, access_entry=False)
    assert "NodeAccessEntry" not in doc["Resources"]
    assert "aws-auth" in doc["Outputs"]["NodeRoleArn"]["Description"]


def test_readme_shows_the_create_stack_line():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "--capabilities CAPABILITY_NAMED_IAM" in readme and "render-stack [--template NAME]" in readme
