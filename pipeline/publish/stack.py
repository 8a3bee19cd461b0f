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

``render-stack`` renders one template (``--template NAME``) or every configured one (one
instance profile and launch template each, logical ids suffixed with the template's name, one
node role). The node role gets an ``AWS::EKS::AccessEntry`` of type ``EC2_LINUX`` for the
configured cluster (without one, nodes cannot join a cluster whose authentication mode uses
access entries; ``access_entry=False`` leaves it out for ``CONFIG_MAP``-only clusters). The
stack names IAM resources, so ``aws cloudformation create-stack`` needs
``--capabilities CAPABILITY_NAMED_IAM``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import re

import yaml

from pipeline.publish import user_data as ud
from pipeline.core.config import ClusterSettings, LaunchTemplateSettings, Settings
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
    template_names: tuple[str, ...] = ()

    def summary(self) -> str:
        if self.output:
            names = ", ".join(self.template_names or (self.template_name,))
            return (f"wrote CloudFormation stack for {names} to {self.output}; create it with "
                    f"aws cloudformation create-stack --stack-name NAME --template-body "
                    f"file://{self.output} --capabilities CAPABILITY_NAMED_IAM "
                    "--parameters ParameterKey=ImageId,ParameterValue=ami-...")
        return self.body.rstrip("\n")

    def to_dict(self) -> dict[str, Any]:
        return {"template_name": self.template_name, "mechanism": self.mechanism,
                "template_names": list(self.template_names or (self.template_name,)),
                "output": self.output, "template": yaml.safe_load(self.body),
                "capabilities": ["CAPABILITY_NAMED_IAM"]}


def _mechanism(settings: Settings, lt: LaunchTemplateSettings) -> str:
    if lt.image:
        require = settings.image(lt.image).require
        if require in ud.MECHANISMS:
            return require
    return ud.NODEADM  # current EKS AMIs (AL2023); AL2 images set require: bootstrap.sh


def _suffix(name: str) -> str:
    """A launch template name as a logical-id suffix (CloudFormation: alphanumeric)."""
    return "".join(p[:1].upper() + p[1:] for p in re.split(r"[^A-Za-z0-9]+", name) if p)


def build_stack(settings: Settings, template: str | None = None, *,
                access_entry: bool = True) -> tuple[dict[str, Any], str]:
    """The CloudFormation template as a dict, and the bootstrap mechanism its user data is for.

    ``template`` picks one configured launch template; None renders every configured one
    (the mechanisms are then joined with ',' when they differ).
    """
    cluster = settings.require_cluster()
    if not settings.launch_templates and template is None:
        raise ConfigError("launch_templates: configure at least one launch template to render "
                          "the stack")
    if template is not None and all(lt.name != template for lt in settings.launch_templates):
        known = ", ".join(lt.name for lt in settings.launch_templates) or "none"
        raise ConfigError(f"--template {template}: not a configured launch template "
                          f"(configured: {known}); omit --template to render every one")
    lts = ([settings.launch_template(template)] if template is not None
           else list(settings.launch_templates))
    single = len(lts) == 1
    parameters: dict[str, Any] = {}
    resources, outputs = _node_role(cluster.name, access_entry)
    mechanisms: list[str] = []
    profiles: dict[str, str] = {}          # instance profile name -> logical id
    for lt in lts:
        mechanism = _mechanism(settings, lt)
        if mechanism not in mechanisms:
            mechanisms.append(mechanism)
        _add_launch_template(cluster, lt, mechanism, "" if single else _suffix(lt.name),
                             profiles, parameters, resources, outputs)
    names = ", ".join(lt.name for lt in lts)
    doc: dict[str, Any] = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"EKS nodes for cluster {cluster.name}: node role"
                       f"{', its EC2_LINUX access entry' if access_entry else ''}, instance "
                       f"profile and launch template{'' if single else 's'} {names} "
                       "(eks-ami-pipeline); needs --capabilities CAPABILITY_NAMED_IAM",
        "Parameters": parameters,
        "Resources": resources,
        "Outputs": outputs,
    }
    return doc, ",".join(mechanisms)


def _node_role(cluster: str, access_entry: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """(resources, outputs) of the node role and, with ``access_entry``, its EKS access
    entry."""
    policy_arns = [{"Fn::Sub": f"arn:${{AWS::Partition}}:iam::aws:policy/{p}"}
                   for p in MANAGED_POLICIES]
    resources: dict[str, Any] = {
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
    }
    outputs: dict[str, Any] = {
        "NodeRoleArn": {"Value": {"Fn::GetAtt": ["NodeRole", "Arn"]},
                        "Description": ("The node role; the stack gives it an EC2_LINUX EKS access "
                                        "entry" if access_entry else
                                        "Map this role in aws-auth or an EKS access entry")},
    }
    if access_entry:
        resources["NodeAccessEntry"] = {
            "Type": "AWS::EKS::AccessEntry",
            "Properties": {"ClusterName": cluster,
                           "PrincipalArn": {"Fn::GetAtt": ["NodeRole", "Arn"]},
                           "Type": "EC2_LINUX"},
        }
    return resources, outputs


def _add_launch_template(cluster: ClusterSettings, lt: LaunchTemplateSettings, mechanism: str,
                         sfx: str, profiles: dict[str, str], parameters: dict[str, Any],
                         resources: dict[str, Any], outputs: dict[str, Any]) -> None:
    """One configured launch template's instance profile (shared by name), parameters,
    launch template resource and outputs; ``sfx`` suffixes the logical ids ('' for one)."""
    text = ud.render_for(cluster, lt.user_data, mechanism).text
    ud.check(text, mechanism=mechanism, cluster=cluster,
             what=f"stack user data ({lt.name})" if sfx else "stack user data")
    profile_name = lt.instance_profile or f"{lt.name}-node"
    profile_id = profiles.get(profile_name)
    if profile_id is None:
        profile_id = f"NodeInstanceProfile{sfx}"
        profiles[profile_name] = profile_id
        resources[profile_id] = {
            "Type": "AWS::IAM::InstanceProfile",
            "Properties": {"InstanceProfileName": profile_name, "Path": "/",
                           "Roles": [{"Ref": "NodeRole"}]},
        }
        outputs[f"NodeInstanceProfileArn{sfx}"] = {
            "Value": {"Fn::GetAtt": [profile_id, "Arn"]}}
    image_param, sg_param_id = f"ImageId{sfx}", f"SecurityGroupIds{sfx}"
    lt_id = f"NodeLaunchTemplate{sfx}"
    lt_data: dict[str, Any] = {
        "ImageId": {"Ref": image_param},
        "IamInstanceProfile": {"Arn": {"Fn::GetAtt": [profile_id, "Arn"]}},
        "SecurityGroupIds": {"Ref": sg_param_id},
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
        "Description": f"Node security groups of {lt.name}: egress TCP 443 and TCP/UDP 53 "
                       "at least",
    }
    if lt.security_group_ids:
        sg_param["Default"] = ",".join(lt.security_group_ids)
    parameters[image_param] = {
        "Type": "AWS::EC2::Image::Id",
        "Description": f"A verified EKS node AMI for {lt.name} (invoke verify --ami)"}
    parameters[sg_param_id] = sg_param
    resources[lt_id] = {
        "Type": "AWS::EC2::LaunchTemplate",
        "Properties": {"LaunchTemplateName": lt.name, "LaunchTemplateData": lt_data},
    }
    outputs[f"LaunchTemplateId{sfx}"] = {"Value": {"Ref": lt_id}}
    outputs[f"LaunchTemplateLatestVersion{sfx}"] = {
        "Value": {"Fn::GetAtt": [lt_id, "LatestVersionNumber"]}}


def render_stack(settings: Settings, output: str | None = None,
                 template: str | None = None, *, access_entry: bool = True) -> StackResult:
    """Render the stack as YAML (one template, or all); write it to ``output`` when given."""
    doc, mechanism = build_stack(settings, template, access_entry=access_entry)
    body = yaml.safe_dump(doc, sort_keys=False, width=10_000, default_flow_style=False)
    names = tuple(r["Properties"]["LaunchTemplateName"] for r in doc["Resources"].values()
                  if r["Type"] == "AWS::EC2::LaunchTemplate")
    name = names[0]
    if output:
        path = Path(output)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body, encoding="utf-8")
        except OSError as err:
            raise InputError(f"--output {output}: cannot write ({err.strerror})") from err
    return StackResult(template_name=name, mechanism=mechanism, body=body, output=output,
                       template_names=names)
