"""EC2 launch templates: read versions as typed records, create versions idempotently, check rules.

The boto3 dicts stop here. :class:`TemplateVersion` is one version with its user data decoded.
Creation is idempotent through ``ClientToken`` (derived from template, AMI and user data, see
:func:`client_token`), as EC2 documents: a repeated request returns the same version.

Template rules (the seed's, issue 7) are checked on the data the new version will hold,
*before* anything is created: no ``InstanceType`` and no ``NetworkInterfaces`` (Karpenter and
node groups choose them), an ``IamInstanceProfile``, security groups that exist and allow
egress on TCP 443 and TCP/UDP 53, ``MetadataOptions.HttpTokens=required`` and an encrypted root
volume. The last two are set when absent (:func:`apply_secure_defaults`).
"""
from __future__ import annotations

import base64
import binascii

import copy
import hashlib
import logging
from datetime import datetime
from dataclasses import dataclass, field
from typing import Any, Iterable

from botocore.exceptions import BotoCoreError, ClientError

from pipeline.aws.clients import call, error_code
from pipeline.core.errors import AwsCallError, InputError

__all__ = [
    "TemplateVersion",
    "SecurityGroupInfo",
    "client_token",
    "version_description",
    "describe_versions",
    "list_versions",
    "create_template",
    "create_version",
    "set_default_version",
    "overlay",
    "apply_secure_defaults",
    "rule_problems",
    "describe_security_groups",
    "REQUIRED_EGRESS",
]

log = logging.getLogger(__name__)

MAX_DESCRIPTION = 255
MAX_CLIENT_TOKEN = 128
#: The seed's egress: nodes reach the API server/ECR/STS on 443 and DNS on 53.
REQUIRED_EGRESS = (("tcp", 443), ("tcp", 53), ("udp", 53))
_NOT_FOUND = ("InvalidLaunchTemplateName.NotFoundException", "InvalidLaunchTemplateId.NotFound",
              "InvalidLaunchTemplateId.Malformed")



def decode_user_data(b64: str | None) -> str:
    """Decode launch-template ``UserData`` (base64) back to text ('' when absent)."""
    if not b64:
        return ""
    try:
        return base64.b64decode(b64, validate=False).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return b64

@dataclass(frozen=True, slots=True)
class TemplateVersion:
    """One launch template version, user data decoded."""

    template_id: str
    template_name: str
    version: int
    default: bool
    image_id: str | None
    user_data: str
    description: str
    created_at: str
    data: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def user_data_sha256(self) -> str:
        return hashlib.sha256(self.user_data.encode("utf-8")).hexdigest()

    @classmethod
    def from_api(cls, v: dict[str, Any]) -> "TemplateVersion":
        data = v.get("LaunchTemplateData") or {}
        created = v.get("CreateTime")
        return cls(template_id=v["LaunchTemplateId"], template_name=v["LaunchTemplateName"],
                   version=int(v["VersionNumber"]), default=bool(v.get("DefaultVersion")),
                   image_id=data.get("ImageId"), user_data=decode_user_data(data.get("UserData")),
                   description=v.get("VersionDescription") or "",
                   created_at=created.isoformat() if isinstance(created, datetime) else str(created or ""),
                   data=data)

    def to_dict(self) -> dict[str, Any]:
        return {"template_id": self.template_id, "template_name": self.template_name,
                "version": self.version, "default": self.default, "image_id": self.image_id,
                "user_data_sha256": self.user_data_sha256, "description": self.description,
                "created_at": self.created_at}


@dataclass(frozen=True, slots=True)
class SecurityGroupInfo:
    """A security group's id and its egress permissions (as EC2 returns them)."""

    group_id: str
    egress: tuple[dict[str, Any], ...]


# --------------------------------------------------------------------------- naming


def _refused(err: Exception, what: str) -> AwsCallError:
    """An :class:`AwsCallError` for ``err`` in the same words :func:`pipeline.aws.clients.call` uses."""
    if isinstance(err, ClientError):
        e = err.response.get("Error", {})
        return AwsCallError(f"AWS refused {what}: {e.get('Code')}: {e.get('Message')}")
    return AwsCallError(f"AWS call failed {what}: {err}")


def client_token(template: str, ami_id: str, user_data_text: str) -> str:
    """The idempotency token: sha256 of template name, AMI id and user data (64 hex chars)."""
    h = hashlib.sha256()
    for part in (template, ami_id, user_data_text):
        h.update(part.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:MAX_CLIENT_TOKEN]


def version_description(*, ami_id: str, build_id: str | None, verdict: str | None,
                        mechanism: str | None, user_data_sha256: str) -> str:
    """``build=<id> ami=<ami> verify=<verdict>/<mechanism> ud=<sha12>``, at most 255 chars.

    Lineage reads it back to link a version to its build (issue 8); keep the key=value form.
    """
    parts = [f"build={build_id or 'unknown'}", f"ami={ami_id}",
             f"verify={verdict or 'none'}/{mechanism or 'unknown'}",
             f"ud={user_data_sha256[:12]}", "by=eks-ami-pipeline"]
    text = " ".join(parts)
    return text[:MAX_DESCRIPTION]


# --------------------------------------------------------------------------- reading


def describe_versions(ec2: Any, template: str, versions: Iterable[str]) -> list[TemplateVersion] | None:
    """The named versions (``$Default``, ``$Latest``, numbers) of ``template``; None if it is missing.

    One DescribeLaunchTemplateVersions call.
    """
    try:
        resp = ec2.describe_launch_template_versions(LaunchTemplateName=template,
                                                     Versions=list(versions))
    except (ClientError, BotoCoreError) as err:
        code = error_code(err)
        if code in _NOT_FOUND:
            return None
        if code == "InvalidLaunchTemplateId.VersionNotFound":
            raise InputError(f"launch template {template}: version not found ({err}); "
                             "list versions with `invoke template-diff` or the console") from err
        raise _refused(err, f"describing versions of launch template {template}") from err
    return [TemplateVersion.from_api(v) for v in resp.get("LaunchTemplateVersions", [])]


def list_versions(ec2: Any, template: str, *, page_size: int = 200) -> list[TemplateVersion]:
    """Every version of ``template``, oldest first (paged: templates hold up to 10,000)."""
    out: list[TemplateVersion] = []
    paginator = ec2.get_paginator("describe_launch_template_versions")
    try:
        for page in paginator.paginate(LaunchTemplateName=template,
                                       PaginationConfig={"PageSize": page_size}):
            out += [TemplateVersion.from_api(v) for v in page.get("LaunchTemplateVersions", [])]
    except (ClientError, BotoCoreError) as err:
        if error_code(err) in _NOT_FOUND:
            raise InputError(f"launch template {template!r} does not exist; check --template "
                             "or publish with --create") from err
        raise _refused(err, f"listing versions of launch template {template}") from err
    out.sort(key=lambda v: v.version)
    return out


# --------------------------------------------------------------------------- writing


def create_template(ec2: Any, name: str, data: dict[str, Any], *, description: str, token: str,
                    tags: dict[str, str]) -> TemplateVersion:
    """CreateLaunchTemplate: version 1 holds ``data`` and is the default."""
    from pipeline.core.tags import tag_specifications

    resp = call(ec2.create_launch_template, what=f"creating launch template {name}",
                LaunchTemplateName=name, LaunchTemplateData=data, VersionDescription=description,
                ClientToken=token, TagSpecifications=tag_specifications(tags, "launch-template"))
    lt = resp["LaunchTemplate"]
    return TemplateVersion(template_id=lt["LaunchTemplateId"], template_name=lt["LaunchTemplateName"],
                           version=int(lt.get("LatestVersionNumber", 1)), default=True,
                           image_id=data.get("ImageId"), user_data=decode_user_data(data.get("UserData")),
                           description=description, created_at=str(lt.get("CreateTime", "")),
                           data=data)


def create_version(ec2: Any, template_id: str, *, source_version: int | None, data: dict[str, Any],
                   description: str, token: str) -> tuple[TemplateVersion, str | None]:
    """CreateLaunchTemplateVersion from ``source_version`` with ``data`` overlaid.

    Returns the version and EC2's optional ``Warning`` text.
    """
    kwargs: dict[str, Any] = {"LaunchTemplateId": template_id, "LaunchTemplateData": data,
                              "VersionDescription": description, "ClientToken": token}
    if source_version is not None:
        kwargs["SourceVersion"] = str(source_version)
    try:
        resp = ec2.create_launch_template_version(**kwargs)
    except (ClientError, BotoCoreError) as err:
        if error_code(err) == "IdempotentParameterMismatch":
            raise _already_published(ec2, template_id, data) from err
        raise _refused(err, f"creating a version of launch template {template_id}") from err
    warning = resp.get("Warning")
    text = None
    if warning:
        errs = warning.get("Errors") or []
        text = "; ".join(f"{e.get('Code')}: {e.get('Message')}" for e in errs) or str(warning)
    return TemplateVersion.from_api(resp["LaunchTemplateVersion"]), text


def _already_published(ec2: Any, template_id: str, data: dict[str, Any]) -> InputError:
    """The ClientToken was used from another source version: name the version that has it."""
    name = template_id
    match = None
    try:
        lt = ec2.describe_launch_templates(LaunchTemplateIds=[template_id])["LaunchTemplates"][0]
        name = lt["LaunchTemplateName"]
        match = next((v for v in reversed(list_versions(ec2, name))
                      if v.image_id == data.get("ImageId")
                      and v.data.get("UserData") == data.get("UserData")), None)
    except (ClientError, BotoCoreError, InputError, IndexError, KeyError):
        pass
    if match is not None:
        return InputError(f"launch template {name}: {data.get('ImageId')} with this user data is "
                          f"already version {match.version} (published from another source "
                          f"version); run `invoke promote --template {name} --version "
                          f"{match.version}` to serve it")
    return InputError(f"launch template {name}: {data.get('ImageId')} with this user data was "
                      "already published from another source version; promote that version")


def set_default_version(ec2: Any, template_id: str, version: int) -> None:
    """ModifyLaunchTemplate DefaultVersion (switches traffic)."""
    call(ec2.modify_launch_template, what=f"making version {version} the default of {template_id}",
         LaunchTemplateId=template_id, DefaultVersion=str(version))


# --------------------------------------------------------------------------- content


def overlay(source: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """What a version created from ``source`` with ``new`` holds (top-level keys replaced)."""
    out = copy.deepcopy(source)
    out.update(copy.deepcopy(new))
    return out


def apply_secure_defaults(resulting: dict[str, Any], root_device: str | None) -> tuple[dict[str, Any], list[str]]:
    """The keys to add to the new version's data so IMDSv2 and root encryption hold.

    Only *absent* settings are filled in; explicit ``optional``/``Encrypted: false`` stay and
    are reported by :func:`rule_problems`. Returns (data to overlay, what was set).
    """
    add: dict[str, Any] = {}
    applied: list[str] = []
    md = dict(resulting.get("MetadataOptions") or {})
    if "HttpTokens" not in md:
        md["HttpTokens"] = "required"
        md.setdefault("HttpPutResponseHopLimit", 2)  # pods behind the node reach IMDSv2
        md.setdefault("HttpEndpoint", "enabled")
        add["MetadataOptions"] = md
        applied.append("MetadataOptions.HttpTokens=required")
    if root_device:
        bdms = copy.deepcopy(resulting.get("BlockDeviceMappings") or [])
        root = next((b for b in bdms if b.get("DeviceName") == root_device), None)
        if root is None:
            bdms.append({"DeviceName": root_device, "Ebs": {"Encrypted": True, "VolumeType": "gp3"}})
            applied.append(f"BlockDeviceMappings[{root_device}].Ebs.Encrypted=true")
        elif "Encrypted" not in (root.get("Ebs") or {}) and "NoDevice" not in root \
                and "VirtualName" not in root:
            root.setdefault("Ebs", {})["Encrypted"] = True
            applied.append(f"BlockDeviceMappings[{root_device}].Ebs.Encrypted=true")
        if applied and applied[-1].startswith("BlockDeviceMappings"):
            add["BlockDeviceMappings"] = bdms
    return add, applied


def rule_problems(data: dict[str, Any], *, root_device: str | None,
                  groups: dict[str, SecurityGroupInfo] | None) -> list[str]:
    """The template rules that ``data`` (a whole version's data) breaks, one line each.

    ``groups`` maps the security group ids that exist to their egress (None: not looked up).
    """
    out: list[str] = []
    if data.get("InstanceType"):
        out.append(f"InstanceType {data['InstanceType']!r} is set; leave it out so Karpenter and "
                   "node groups choose instance types")
    if data.get("InstanceRequirements"):
        out.append("InstanceRequirements is set; leave instance selection to Karpenter")
    if data.get("NetworkInterfaces"):
        out.append("NetworkInterfaces is set; leave it out (Karpenter and node groups attach them) "
                   "and use SecurityGroupIds")
    prof = data.get("IamInstanceProfile") or {}
    if not (prof.get("Name") or prof.get("Arn")):
        out.append("IamInstanceProfile is missing; set launch_templates[].instance_profile to the "
                   "node instance profile")
    md = data.get("MetadataOptions") or {}
    if md.get("HttpTokens", "required") != "required":
        out.append(f"MetadataOptions.HttpTokens is {md.get('HttpTokens')!r}; require IMDSv2 "
                   "(HttpTokens=required)")
    if root_device:
        root = next((b for b in data.get("BlockDeviceMappings") or []
                     if b.get("DeviceName") == root_device), None)
        ebs = (root or {}).get("Ebs") or {}
        if root is not None and ebs.get("Encrypted") is False:
            out.append(f"the root volume {root_device} has Encrypted=false; encrypt it")
    sg_ids = list(data.get("SecurityGroupIds") or [])
    if not sg_ids and not data.get("SecurityGroups"):
        out.append("no SecurityGroupIds; set launch_templates[].security_group_ids to groups that "
                   "allow egress on TCP 443 and TCP/UDP 53")
    if groups is not None:
        missing = [g for g in sg_ids if g not in groups]
        if missing:
            out.append(f"security group{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                       "do not exist in this region; check security_group_ids")
        present = [groups[g] for g in sg_ids if g in groups]
        if present:
            lacking = [f"{proto.upper()} {port}" for proto, port in REQUIRED_EGRESS
                       if not any(_egress_allows(sg.egress, proto, port) for sg in present)]
            if lacking:
                out.append(f"security groups {', '.join(s.group_id for s in present)} allow no "
                           f"egress on {', '.join(lacking)}; nodes need 443 to reach the API "
                           "server and 53 for DNS")
    return out


def _egress_allows(perms: Iterable[dict[str, Any]], proto: str, port: int) -> bool:
    numbers = {"tcp": "6", "udp": "17"}
    for p in perms:
        ip_proto = str(p.get("IpProtocol", ""))
        if ip_proto not in ("-1", "all", proto, numbers[proto]):
            continue
        if ip_proto in ("-1", "all"):
            return True
        lo, hi = p.get("FromPort"), p.get("ToPort")
        if lo is None or hi is None or int(lo) <= port <= int(hi) or (int(lo) == -1):
            return True
    return False


def describe_security_groups(ec2: Any, ids: list[str]) -> dict[str, SecurityGroupInfo]:
    """The groups among ``ids`` that exist (one call; missing ones are simply absent)."""
    if not ids:
        return {}
    try:
        resp = ec2.describe_security_groups(GroupIds=ids)
    except (ClientError, BotoCoreError) as err:
        if error_code(err) in ("InvalidGroup.NotFound", "InvalidGroupId.Malformed",
                               "InvalidGroupId.NotFound"):
            return _describe_existing(ec2, ids)
        raise _refused(err, f"describing security groups {', '.join(ids)}") from err
    return {g["GroupId"]: SecurityGroupInfo(g["GroupId"], tuple(g.get("IpPermissionsEgress") or ()))
            for g in resp.get("SecurityGroups", [])}


def _describe_existing(ec2: Any, ids: list[str]) -> dict[str, SecurityGroupInfo]:
    """After NotFound (the bad-input path): a filter query returns the ones that do exist."""
    resp = call(ec2.describe_security_groups, what="describing security groups",
                Filters=[{"Name": "group-id", "Values": ids}])
    return {g["GroupId"]: SecurityGroupInfo(g["GroupId"], tuple(g.get("IpPermissionsEgress") or ()))
            for g in resp.get("SecurityGroups", [])}
