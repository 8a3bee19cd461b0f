"""The seed's CloudFormation stack, rendered from config: node role, instance profile, launch template.

The seed's stack had naming bugs; the fixes, each kept by a test:

- one logical id per resource, referenced by that id (``NodeRole`` → ``NodeInstanceProfile``
  → ``NodeLaunchTemplate``), never by a physical name typed twice;
- managed policy ARNs spelled exactly as AWS names them (``AmazonEKSWorkerNodePolicy``,
  ``AmazonEKS_CNI_Policy``, ``AmazonEC2ContainerRegistryReadOnly``,
  ``AmazonSSMManagedInstanceCore``) and built with ``${AWS::Partition}`` so GovCloud and China
  work;
- the launch template takes the instance profile by ``Arn`` (``Fn::GetAtt``), not by a name
  that differs from the profile's;
- user data is rendered and linted here (no ``${ClusterName}``/``<endpoint>`` placeholders, no
  bootstrap.sh line broken without a backslash) and passed through ``Fn::Base64`` only.

The launch template follows the template rules: no instance type, no network interfaces,
IMDSv2 required, encrypted root volume.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.publish import user_data as ud
from pipeline.core.config import LaunchTemplateSettings, Settings
from pipeline.core.errors import ConfigError, InputError

__all__ = ["StackResult", "MANAGED_POLICIES", "build_stack", "render_stack"]

MANAGED_POLICIES = (
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryReadOnly",
    "AmazonSSMManagedInstanceCore",
)
_ROOT_DEVICE = "/dev/xvda"  # EKS-optimized AL2/AL2023 AMIs


@dataclass(slots=True)
class StackResult:
    """The rendered template (YAML text) and where it went."""

    template_name: str
    mechanism: str
    body: str
    output: str | None = None

    def summary(self) -> str:
        if self.output:
            return f"wrote CloudFormation stack for {self.template_name} to {self.output}"
        return self.body.rstrip("\n")

    def to_dict(self) -> dict[str, Any]:
        return {"template_name": self.template_name, "mechanism": self.mechanism,
                "output": self.output, "template": yaml.safe_load(self.body)}


def _mechanism(settings: Settings, lt: LaunchTemplateSettings) -> str:
    if lt.image:
        require = settings.image(lt.image).require
        if require in ud.MECHANISMS:
            return require
    return ud.NODEADM  # current EKS AMIs (AL2023); AL2 images set require: bootstrap.sh


def build_stack(settings: Settings, template: str | None = None) -> tuple[dict[str, Any], str]:
    """The CloudFormation template as a dict, and the bootstrap mechanism its user data is for."""
    cluster = settings.require_cluster()
    if not settings.launch_templates and template is None:
        raise ConfigError("launch_templates: configure at least one launch template to render "
                          "the stack")
    lt = settings.launch_template(template)
    mechanism = _mechanism(settings, lt)
    text = ud.render_for(cluster, lt.user_data, mechanism).text
    ud.check(text, mechanism=mechanism, cluster=cluster, what="stack user data")
    profile_name = lt.instance_profile or f"{lt.name}-node"
    policy_arns = [{"Fn::Sub": f"arn:${{AWS::Partition}}:iam::aws:policy/{p}"}
                   for p in MANAGED_POLICIES]
    lt_data: dict[str, Any] = {
        "ImageId": {"Ref": "ImageId"},
        "IamInstanceProfile": {"Arn": {"Fn::GetAtt": ["NodeInstanceProfile", "Arn"]}},
        "SecurityGroupIds": {"Ref": "SecurityGroupIds"},
        "UserData": {"Fn::Base64": text},
        "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 2,
                            "HttpEndpoint": "enabled"},
        "BlockDeviceMappings": [{"DeviceName": _ROOT_DEVICE,
                                 "Ebs": {"Encrypted": True, "VolumeType": "gp3",
                                         "VolumeSize": 20, "DeleteOnTermination": True}}],
        "TagSpecifications": [{"ResourceType": "instance", "Tags": [
            {"Key": f"kubernetes.io/cluster/{cluster.name}", "Value": "owned"}]}],
    }
    sg_param: dict[str, Any] = {
        "Type": "List<AWS::EC2::SecurityGroup::Id>",
        "Description": "Node security groups: egress TCP 443 and TCP/UDP 53 at least",
    }
    if lt.security_group_ids:
        sg_param["Default"] = ",".join(lt.security_group_ids)
    doc: dict[str, Any] = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"EKS nodes for cluster {cluster.name}: node role, instance profile and "
                       f"launch template {lt.name} (eks-ami-pipeline)",
        "Parameters": {
            "ImageId": {"Type": "AWS::EC2::Image::Id",
                        "Description": "A verified EKS node AMI (invoke verify --ami)"},
            "SecurityGroupIds": sg_param,
        },
        "Resources": {
            "NodeRole": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "AssumeRolePolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [{"Effect": "Allow",
                                       "Principal": {"Service": "ec2.amazonaws.com"},
                                       "Action": "sts:AssumeRole"}],
                    },
                    "ManagedPolicyArns": policy_arns,
                    "Path": "/",
                },
            },
            "NodeInstanceProfile": {
                "Type": "AWS::IAM::InstanceProfile",
                "Properties": {"InstanceProfileName": profile_name, "Path": "/",
                               "Roles": [{"Ref": "NodeRole"}]},
            },
            "NodeLaunchTemplate": {
                "Type": "AWS::EC2::LaunchTemplate",
                "Properties": {"LaunchTemplateName": lt.name, "LaunchTemplateData": lt_data},
            },
        },
        "Outputs": {
            "NodeRoleArn": {"Value": {"Fn::GetAtt": ["NodeRole", "Arn"]},
                            "Description": "Map this role in aws-auth or an EKS access entry"},
            "NodeInstanceProfileArn": {"Value": {"Fn::GetAtt": ["NodeInstanceProfile", "Arn"]}},
            "LaunchTemplateId": {"Value": {"Ref": "NodeLaunchTemplate"}},
            "LaunchTemplateLatestVersion": {
                "Value": {"Fn::GetAtt": ["NodeLaunchTemplate", "LatestVersionNumber"]}},
        },
    }
    return doc, mechanism


def render_stack(settings: Settings, output: str | None = None,
                 template: str | None = None) -> StackResult:
    """Render the stack as YAML; write it to ``output`` when given."""
    doc, mechanism = build_stack(settings, template)
    body = yaml.safe_dump(doc, sort_keys=False, width=10_000, default_flow_style=False)
    name = doc["Resources"]["NodeLaunchTemplate"]["Properties"]["LaunchTemplateName"]
    if output:
        path = Path(output)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body, encoding="utf-8")
        except OSError as err:
            raise InputError(f"--output {output}: cannot write ({err.strerror})") from err
    return StackResult(template_name=name, mechanism=mechanism, body=body, output=output)
