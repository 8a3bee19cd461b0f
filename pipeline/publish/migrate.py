"""``migrate-template``: an existing launch template version as a Karpenter v1 EC2NodeClass.

Karpenter v1 no longer takes launch templates (v0.x ``spec.provider.launchTemplate``, the seed's
``KarpenterCustomLaunchTemplate``); its own RFC proposed a converter. This reads one version
(``$Default`` unless ``--version N``) and writes the equivalent ``EC2NodeClass`` + ``NodePool``:

- ``ImageId`` -> ``amiSelectorTerms``: the channel's SSM pointer when the template is configured
  (``karpenter.ami_selector: ssm``, so promote/rollback keep steering the nodes), else
  ``{id: ami-...}``; ``resolve:ssm:NAME`` -> ``{ssmParameter: NAME}``;
- ``SecurityGroupIds``/``SecurityGroups`` -> ``securityGroupSelectorTerms`` (``id``/``name``);
- ``IamInstanceProfile`` (name or ARN) -> ``instanceProfile``;
- ``BlockDeviceMappings`` (EBS) -> ``blockDeviceMappings`` (the ``/dev/xvda``/``/dev/sda1``
  mapping is the root volume); ``MetadataOptions`` -> ``metadataOptions``;
  ``Monitoring.Enabled`` -> ``detailedMonitoring``; instance/volume ``TagSpecifications`` -> ``tags``;
- ``UserData`` -> ``amiFamily`` plus the parts Karpenter merges: a NodeConfig user data stays as
  is (``AL2023``: Karpenter merges its own NodeConfig after it); a ``bootstrap.sh`` script
  (``AL2``) loses its bootstrap call, which Karpenter appends itself, and the call's values go
  where Karpenter takes them (``--node-labels`` -> NodePool labels, ``--register-with-taints`` ->
  taints, ``--max-pods`` -> ``kubelet.maxPods``, ``--dns-cluster-ip`` -> ``kubelet.clusterDNS``);
  anything else makes the family ``Custom`` with the user data unchanged.

What has no EC2NodeClass equivalent is listed, not dropped silently: network interfaces,
instance type, placement, key pair, instance market options, and every other field.
The result is validated as in :func:`pipeline.publish.karpenter.validate`.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.aws import templates as lt_mod
from pipeline.aws.clients import Clients
from pipeline.aws.ssm import RESOLVE_SSM
from pipeline.core.config import LaunchTemplateSettings, Settings
from pipeline.core.errors import InputError, LintError
from pipeline.publish import bootstrap_sh
from pipeline.publish import karpenter as kp
from pipeline.publish import user_data as ud

__all__ = ["MigrationResult", "migrate_template", "nodeclass_from_template_data"]

_ROOT_DEVICES = ("/dev/xvda", "/dev/sda1")
#: LaunchTemplateData keys this module carries over (everything else is reported).
_CARRIED = {"ImageId", "SecurityGroupIds", "SecurityGroups", "IamInstanceProfile",
            "BlockDeviceMappings", "MetadataOptions", "TagSpecifications", "UserData",
            "Monitoring"}
_WHY = {
    "NetworkInterfaces": "Karpenter picks subnets with subnetSelectorTerms and makes the "
                         "interfaces itself (networkInterfaces only for EFA layouts)",
    "InstanceType": "the NodePool's requirements choose instance types",
    "Placement": "Karpenter chooses zones from the NodePool's requirements and the subnets",
    "KeyName": "EC2NodeClass has no key pair; use SSM Session Manager",
    "InstanceMarketOptions": "capacity type is the NodePool requirement karpenter.sh/capacity-type",
}
_RESTRICTED_TAG = re.compile(r"^(kubernetes\.io/cluster/|karpenter\.sh/nodepool$|"
                             r"karpenter\.sh/nodeclaim$|karpenter\.k8s\.aws/ec2nodeclass$|"
                             r"eks:eks-cluster-name$)")


@dataclass(frozen=True, slots=True)
class MigrationResult:
    """The manifests written for one launch template version, and what could not be carried."""

    template_name: str
    version: int
    nodeclass: dict[str, Any] = field(compare=False)
    nodepool: dict[str, Any] = field(compare=False)
    manifests: tuple[str, ...] = ()
    not_carried: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def summary(self) -> str:
        lines = [f"migrated launch template {self.template_name} version {self.version} to a "
                 f"Karpenter v1 EC2NodeClass (amiFamily {self.nodeclass['spec']['amiFamily']})"]
        lines += [f"wrote {p}" for p in self.manifests]
        lines += [f"not carried over: {n}" for n in self.not_carried]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"template_name": self.template_name, "version": self.version,
                "manifests": list(self.manifests), "not_carried": list(self.not_carried),
                "notes": list(self.notes), "ec2nodeclass": self.nodeclass,
                "nodepool": self.nodepool}


def migrate_template(settings: Settings, clients: Clients, template: str,
                     version: int | str | None = None, *, output_dir: Path | None = None,
                     ami_selector: str | None = None) -> MigrationResult:
    """Read ``template`` at ``version`` (default ``$Default``) and write its EC2NodeClass."""
    which = "$Default" if version is None else str(version)
    if which != "$Default" and not which.isdigit():
        raise InputError(f"--version {version!r}: expected a version number")
    found = lt_mod.describe_versions(clients.client("ec2"), template, [which])
    if found is None:
        raise InputError(f"launch template {template!r} does not exist in {clients.region}; "
                         "check the name (aws ec2 describe-launch-templates)")
    if not found:
        raise InputError(f"launch template {template}: version {which} not found")
    tv = found[0]
    configured = next((t for t in settings.launch_templates if t.name == template), None)
    nodeclass, nodepool, not_carried, notes = nodeclass_from_template_data(
        settings, tv.data, name=_k8s_name(template), configured=configured,
        ami_selector=ami_selector)
    problems = kp.validate(nodeclass) + kp.validate(nodepool)
    if problems:
        raise LintError(f"launch template {template} v{tv.version}: the migrated manifests would "
                        f"be refused: {problems[0]}", problems)
    out = output_dir or Path(settings.karpenter.output_dir) / "migrated"
    name = nodeclass["metadata"]["name"]
    paths = kp.write_manifests(
        [kp.Manifest("EC2NodeClass", name, f"{name}-ec2nodeclass.yaml", nodeclass,
                     "\n".join(notes)),
         kp.Manifest("NodePool", name, f"{name}-nodepool.yaml", nodepool)], out)
    return MigrationResult(template, tv.version, nodeclass, nodepool,
                           tuple(str(p) for p in paths), tuple(not_carried), tuple(notes))


def _k8s_name(template: str) -> str:
    name = re.sub(r"[^a-z0-9.-]+", "-", template.lower()).strip("-.")
    return name[:63] or "migrated"


def nodeclass_from_template_data(
        settings: Settings, data: dict[str, Any], *, name: str,
        configured: LaunchTemplateSettings | None = None, ami_selector: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any], list[str], list[str]]:
    """(EC2NodeClass, NodePool, not carried over, notes) for one ``LaunchTemplateData``."""
    cluster = settings.require_cluster()
    not_carried = [f"{k}: {_WHY.get(k, 'no EC2NodeClass field for it')}"
                   for k in sorted(data) if k not in _CARRIED]
    if data.get("InstanceType"):
        not_carried = [n + (f" (to keep {data['InstanceType']}: a requirement "
                            f"node.kubernetes.io/instance-type In [{data['InstanceType']}])"
                            if n.startswith("InstanceType:") else "") for n in not_carried]
    notes: list[str] = []
    spec: dict[str, Any] = {}
    discovery = {"karpenter.sh/discovery": cluster.name}

    spec["amiSelectorTerms"] = _ami_terms(settings, data, configured, ami_selector,
                                          not_carried, notes)
    spec["subnetSelectorTerms"] = [{"tags": discovery}]
    notes.append(f"subnetSelectorTerms select subnets tagged karpenter.sh/discovery={cluster.name}")
    _network_and_profile(data, cluster.name, spec, notes)
    not_carried += _instance_options(data, spec)

    family, user_data, kubelet, pool_meta, taints, ud_lost = _user_data(
        ud.decode(data.get("UserData")), cluster.cluster_dns_ip)
    spec = {"amiFamily": family, **spec}
    if user_data:
        spec["userData"] = user_data
    if kubelet:
        spec["kubelet"] = kubelet
    not_carried += ud_lost
    nodeclass = {"apiVersion": "karpenter.k8s.aws/v1", "kind": "EC2NodeClass",
                 "metadata": {"name": name}, "spec": spec}
    return nodeclass, _nodepool(name, taints, pool_meta, not_carried), not_carried, notes


def _ami_terms(settings: Settings, data: dict[str, Any],
               configured: LaunchTemplateSettings | None, ami_selector: str | None,
               not_carried: list[str], notes: list[str]) -> list[dict[str, Any]]:
    """``amiSelectorTerms`` for the version's ImageId (an SSM reference, a configured
    template's channel, else the AMI id pinned)."""
    image = data.get("ImageId")
    if not image:
        raise InputError("the launch template version has no ImageId; an EC2NodeClass needs an "
                         "AMI selector (migrate a version that names the AMI)")
    if str(image).startswith(RESOLVE_SSM):
        param = str(image)[len(RESOLVE_SSM):]
        name_part, sep, suffix = param.rpartition(":")
        if sep and not param.startswith("arn:") and name_part:
            not_carried.append(f"ImageId version/label :{suffix}: ssmParameter takes the "
                               "parameter name only (the newest version is used)")
            param = name_part
        return [{"ssmParameter": param}]
    if configured is not None and configured.image:
        terms, note = kp.ami_selector_terms(settings, configured, str(image),
                                            ami_selector or settings.karpenter.ami_selector)
        notes.append(note)
        return terms
    notes.append(f"amiSelectorTerms pin {image} (the template is not configured, so no "
                 "channel pointer is known); configure it to follow a channel")
    return [{"id": str(image)}]


def _network_and_profile(data: dict[str, Any], cluster: str, spec: dict[str, Any],
                         notes: list[str]) -> None:
    """Security group selector terms and the instance profile (or role) into ``spec``."""
    discovery = {"karpenter.sh/discovery": cluster}
    if data.get("SecurityGroupIds"):
        spec["securityGroupSelectorTerms"] = [{"id": g} for g in data["SecurityGroupIds"]]
    elif data.get("SecurityGroups"):
        spec["securityGroupSelectorTerms"] = [{"name": g} for g in data["SecurityGroups"]]
    else:
        spec["securityGroupSelectorTerms"] = [{"tags": discovery}]
        notes.append("the template names no security groups: selecting groups tagged "
                     f"karpenter.sh/discovery={cluster}")

    profile = data.get("IamInstanceProfile") or {}
    if profile.get("Name"):
        spec["instanceProfile"] = profile["Name"]
    elif profile.get("Arn"):
        spec["instanceProfile"] = str(profile["Arn"]).rsplit("/", 1)[-1]
    else:
        spec["role"] = f"KarpenterNodeRole-{cluster}"
        notes.append(f"the template has no instance profile: role KarpenterNodeRole-{cluster} "
                     "(Karpenter makes the profile)")


def _instance_options(data: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    """Block devices, metadata options, monitoring and tags into ``spec``; returns what
    is not carried over."""
    not_carried: list[str] = []
    bdms, bdm_lost = _block_devices(data.get("BlockDeviceMappings") or [])
    if bdms:
        spec["blockDeviceMappings"] = bdms
    not_carried += bdm_lost
    meta = data.get("MetadataOptions") or {}
    mapped = {"HttpEndpoint": "httpEndpoint", "HttpProtocolIpv6": "httpProtocolIPv6",
              "HttpPutResponseHopLimit": "httpPutResponseHopLimit", "HttpTokens": "httpTokens"}
    if meta:
        spec["metadataOptions"] = {mapped[k]: v for k, v in meta.items() if k in mapped}
        not_carried += [f"MetadataOptions.{k}: no EC2NodeClass field for it"
                        for k in sorted(meta) if k not in mapped]
    if (data.get("Monitoring") or {}).get("Enabled"):
        spec["detailedMonitoring"] = True
    tags, tag_lost = _tags(data.get("TagSpecifications") or [])
    if tags:
        spec["tags"] = tags
    return not_carried + tag_lost


def _nodepool(name: str, taints: list[dict[str, str]], pool_meta: dict[str, str],
              not_carried: list[str]) -> dict[str, Any]:
    """The NodePool that uses the EC2NodeClass ``name`` (restricted labels dropped, said
    in ``not_carried``)."""
    tmpl_spec: dict[str, Any] = {
        "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": name},
        "requirements": [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}],
    }
    if taints:
        tmpl_spec["taints"] = taints
    template: dict[str, Any] = {"spec": tmpl_spec}
    for key in [k for k in pool_meta if _restricted_label(k)]:
        not_carried.append(f"UserData: node label {key}={pool_meta.pop(key)}: a restricted label "
                           "(Karpenter sets its own; the NodePool refuses it)")
    if pool_meta:
        template["metadata"] = {"labels": pool_meta}
    return {"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": name},
            "spec": {"template": template}}


def _restricted_label(key: str) -> bool:
    domain = key.split("/", 1)[0] if "/" in key else ""
    return (key in ("kubernetes.io/hostname", "karpenter.sh/nodepool")
            or (domain.endswith("karpenter.sh") and key != "karpenter.sh/capacity-type")
            or domain.endswith("karpenter.k8s.aws"))


def _block_devices(mappings: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    out: list[dict[str, Any]] = []
    lost: list[str] = []
    root_taken = False
    ebs_keys = {"VolumeSize": "volumeSize", "VolumeType": "volumeType", "Iops": "iops",
                "Throughput": "throughput", "Encrypted": "encrypted", "KmsKeyId": "kmsKeyID",
                "DeleteOnTermination": "deleteOnTermination", "SnapshotId": "snapshotID"}
    for m in mappings:
        dev = m.get("DeviceName", "?")
        if "Ebs" not in m:
            lost.append(f"BlockDeviceMappings {dev}: only EBS volumes (not "
                        f"{'NoDevice' if 'NoDevice' in m else 'instance store'}) are carried")
            continue
        ebs = {}
        for k, v in m["Ebs"].items():
            if k not in ebs_keys:
                lost.append(f"BlockDeviceMappings {dev} Ebs.{k}: no EC2NodeClass field for it")
            else:
                ebs[ebs_keys[k]] = f"{v}Gi" if k == "VolumeSize" else v
        bdm: dict[str, Any] = {"deviceName": dev, "ebs": ebs}
        if dev in _ROOT_DEVICES and not root_taken:
            bdm["rootVolume"] = True
            root_taken = True
        out.append(bdm)
    return out, lost


def _tags(specs: list[dict[str, Any]]) -> tuple[dict[str, str], list[str]]:
    tags: dict[str, str] = {}
    lost: list[str] = []
    for s in specs:
        rtype = s.get("ResourceType")
        for t in s.get("Tags") or []:
            key, value = t.get("Key", ""), t.get("Value", "")
            if rtype not in ("instance", "volume", "network-interface"):
                lost.append(f"TagSpecifications {rtype} tag {key}: Karpenter tags instances, "
                            "volumes and interfaces alike")
            elif _RESTRICTED_TAG.match(key):
                lost.append(f"TagSpecifications tag {key}: Karpenter sets it itself (the "
                            "EC2NodeClass refuses it)")
            elif key in tags and tags[key] != value:
                lost.append(f"TagSpecifications tag {key}: different values per resource type; "
                            f"kept {tags[key]!r}")
            else:
                tags[key] = value
    return tags, lost


def _user_data(text: str, default_dns: str) -> tuple[str, str | None, dict[str, Any],
                                                     dict[str, str], list[dict[str, str]],
                                                     list[str]]:
    """(amiFamily, userData, kubelet, NodePool labels, taints, not carried)."""
    if not text.strip():
        return "AL2023", None, {}, {}, [], [
            "UserData: none; Karpenter's AL2023 NodeConfig alone boots the node"]
    mechanism = ud.detect_mechanism(text)
    if mechanism == ud.NODEADM:
        return "AL2023", text, {}, {}, [], []
    if mechanism != ud.BOOTSTRAP_SH:
        return "Custom", text, {}, {}, [], [
            "UserData: neither a NodeConfig nor a bootstrap.sh call; amiFamily Custom keeps it "
            "unchanged and Karpenter adds no bootstrap"]
    parts = ud._split(text)
    kubelet: dict[str, Any] = {}
    labels: dict[str, str] = {}
    taints: list[dict[str, str]] = []
    lost: list[str] = []
    scripts: list[str] = []
    opts = bootstrap_sh.bundled_options()
    for script in parts.shell:
        calls = ud._bootstrap_calls(script)
        kept = script
        for _, call in calls:
            words = ud._call_words(call) or []
            parsed = bootstrap_sh.parse_call(words, opts)
            for opt, value in parsed.values.items():
                if opt in ("--apiserver-endpoint", "--b64-cluster-ca"):
                    continue          # Karpenter passes the cluster's own
                if opt == "--dns-cluster-ip":
                    ips = value.split(",")
                    if ips != [default_dns]:
                        kubelet["clusterDNS"] = ips
                elif opt == "--use-max-pods":
                    continue          # Karpenter sets it with kubelet.maxPods
                elif opt == "--kubelet-extra-args":
                    lost += _kubelet_args(value, kubelet, labels, taints)
                else:
                    lost.append(f"UserData: bootstrap.sh {opt} {value}: Karpenter's bootstrap call "
                                "does not take it")
            kept = _drop_call(kept, call)
        if kept.strip() and kept.strip() not in ("#!/bin/bash", "#!/usr/bin/env bash"):
            scripts.append(kept)
    user_data = ud.mime_multipart([(ud.SHELL_CONTENT_TYPE, s) for s in scripts]) if scripts \
        else None
    return "AL2", user_data, kubelet, labels, taints, lost


def _drop_call(script: str, call: str) -> str:
    """``script`` without the (possibly backslash-continued) lines of one bootstrap.sh call."""
    lines = script.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        start = i
        buf = lines[i]
        while buf.endswith("\\") and i + 1 < len(lines):
            i += 1
            buf = buf[:-1] + " " + lines[i]
        if buf != call:
            out.extend(lines[start:i + 1])
        i += 1
    return "\n".join(out) + "\n"


def _kubelet_args(value: str, kubelet: dict[str, Any], labels: dict[str, str],
                  taints: list[dict[str, str]]) -> list[str]:
    lost: list[str] = []
    try:
        args = shlex.split(value)
    except ValueError:
        return [f"UserData: --kubelet-extra-args {value!r} does not shell-split"]
    for arg in args:
        key, _, val = arg.partition("=")
        if key == "--node-labels":
            for pair in val.strip('"').split(","):
                k, eq, v = pair.partition("=")
                if eq:
                    labels[k] = v
        elif key == "--register-with-taints":
            taints.extend(kp.taint_object(t) for t in val.strip('"').split(","))
        elif key == "--max-pods" and val.isdigit():
            kubelet["maxPods"] = int(val)
        else:
            lost.append(f"UserData: kubelet flag {arg}: set it through EC2NodeClass kubelet or a "
                        "NodeConfig if Karpenter supports it")
    return lost

