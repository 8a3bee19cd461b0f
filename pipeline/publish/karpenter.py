"""Karpenter manifests for a published AMI, validated against Karpenter's own CRD schemas.

- ``v1alpha5``: the seed's ``Provisioner`` (``karpenter.sh/v1alpha5``) whose
  ``spec.provider.launchTemplate`` names the launch template (Karpenter ≤ v0.31 uses the
  template's default version, so publish/promote/rollback steer it).
- ``v1``: an ``EC2NodeClass`` (``karpenter.k8s.aws/v1``) with ``userData`` for its family
  (``AL2023``: a NodeConfig MIME that Karpenter merges with its own; ``AL2``: a MIME shell part
  that runs before the ``bootstrap.sh`` call Karpenter appends), plus a ``NodePool``
  (``karpenter.sh/v1``) referencing it. ``amiSelectorTerms`` follow ``karpenter.ami_selector``:
  ``ssm`` (default) selects ``[{ssmParameter: <the template's channel pointer>}]``, so ``publish``,
  ``promote`` and ``rollback``, which move that pointer, move Karpenter's nodes too (Karpenter
  >= v1.4; it caches custom SSM parameters for 5 minutes and re-resolves AMIs every
  ``--ami-refresh-interval``, then drift replaces the nodes); ``id`` pins the published AMI;
  ``tags`` selects the newest AMI of this account tagged with the image name.

Each manifest is validated as the API server would create it (:mod:`crd_schema`): the
``openAPIV3Schema`` of the served version in the vendored CRDs (``pipeline/data/karpenter-crds``,
see PROVENANCE.md there) with defaults applied and unknown fields refused, and every
``x-kubernetes-validations`` CEL rule evaluated with cel-python (transition rules, which only run
on update, excepted).
"""
from __future__ import annotations

import functools
import os
import secrets
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from pipeline.publish import user_data as ud
from pipeline.core.config import ClusterSettings, LaunchTemplateSettings, Settings
from pipeline.aws.ssm import pointer_name
from pipeline.core import tags as T
from pipeline.core.errors import InputError, LintError
from pipeline.publish import crd_schema as _crd

__all__ = ["VERSIONS", "Manifest", "StagedManifests", "render_manifests", "validate",
           "stage_manifests", "write_manifests", "crd_schema", "taint_object"]

VERSIONS = ("v1", "v1alpha5")
_CRD_DIR = Path(__file__).resolve().parents[1] / "data" / "karpenter-crds"
_CRDS = {
    ("karpenter.sh/v1alpha5", "Provisioner"): "v0.31.5/karpenter.sh_provisioners.yaml",
    ("karpenter.k8s.aws/v1alpha1", "AWSNodeTemplate"): "v0.31.5/karpenter.k8s.aws_awsnodetemplates.yaml",
    ("karpenter.k8s.aws/v1", "EC2NodeClass"): "v1.14.1/karpenter.k8s.aws_ec2nodeclasses.yaml",
    ("karpenter.sh/v1", "NodePool"): "v1.14.1/karpenter.sh_nodepools.yaml",
}
_AMI_FAMILY = {ud.NODEADM: "AL2023", ud.BOOTSTRAP_SH: "AL2"}
AMI_SELECTORS = ("ssm", "id", "tags")
#: What a reader of the manifest (and of publish's output) must know about ``ssmParameter``.
SSM_FOLLOW_NOTE = ("Karpenter (>= v1.4) follows the SSM parameter: it caches custom parameters "
                   "for 5 minutes and re-resolves AMIs every --ami-refresh-interval, so nodes move "
                   "(by drift) within minutes of publish/promote/rollback, not at once")


class _PlainDumper(yaml.SafeDumper):
    """No ``&id001`` anchors where one dict is used twice (e.g. the discovery tags)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class Manifest:
    """One Kubernetes object to write, and the file name it goes to."""

    kind: str
    name: str
    filename: str
    body: dict[str, Any] = field(compare=False)
    note: str = field(default="", compare=False)

    def to_yaml(self) -> str:
        text = str(yaml.dump(self.body, Dumper=_PlainDumper, sort_keys=False, width=10_000))
        return "".join(f"# {line}\n" for line in self.note.splitlines()) + text


@functools.cache
def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    """The ``openAPIV3Schema`` of ``kind`` at ``api_version`` from the vendored CRD."""
    rel = _CRDS.get((api_version, kind))
    if rel is None:
        raise InputError(f"no vendored Karpenter CRD for {kind} {api_version}")
    crd = yaml.safe_load((_CRD_DIR / rel).read_text(encoding="utf-8"))
    version = api_version.split("/")[1]
    for v in crd["spec"]["versions"]:
        if v["name"] == version and v.get("served", True):
            return dict(v["schema"]["openAPIV3Schema"])
    raise InputError(f"vendored CRD {rel} does not serve {version}")


def validate(body: dict[str, Any]) -> list[str]:
    """Problems the API server would report creating this manifest, one line each
    (``kind/name: path: message``): schema, unknown fields, every CEL rule."""
    api, kind = body.get("apiVersion", ""), body.get("kind", "")
    schema = crd_schema(api, kind)
    who = f"{kind}/{(body.get('metadata') or {}).get('name', '?')}"
    return _crd.validate(body, schema, who=who)


def render_manifests(settings: Settings, version: str, *, template: LaunchTemplateSettings,
                     ami_id: str, mechanism: str, channel: str | None = None,
                     ami_selector: str | None = None) -> list[Manifest]:
    """The manifests for ``version`` (``v1`` or ``v1alpha5``), validated; LintError if not.

    ``channel`` is the SSM channel the v1 EC2NodeClass follows (default: the template's);
    ``ami_selector`` overrides ``karpenter.ami_selector``.
    """
    if version not in VERSIONS:
        raise InputError(f"--karpenter {version!r}: expected one of {', '.join(VERSIONS)}")
    cluster = settings.require_cluster()
    name = settings.karpenter.name
    if version == "v1alpha5":
        manifests = [_provisioner(name, template)]
    else:
        selector = ami_selector or settings.karpenter.ami_selector
        terms, note = ami_selector_terms(settings, template, ami_id, selector, channel)
        manifests = _v1(name, cluster, template, ami_id, mechanism, terms=terms, note=note)
    problems = [p for m in manifests for p in validate(m.body)]
    if problems:
        raise LintError(f"Karpenter {version} manifests do not match the CRD schema: {problems[0]}",
                        problems)
    return manifests


@dataclass(slots=True)
class StagedManifests:
    """Manifests written to temporary files beside their final paths (same directory,
    so the rename into place is atomic), not yet installed."""

    pairs: list[tuple[Path, Path]]                  # (temporary file, final path)

    @property
    def paths(self) -> list[Path]:
        return [final for _, final in self.pairs]

    def install(self, on_undo: Callable[[str, Callable[[], str | None]], None]) -> list[Path]:
        """Rename each into place; before each rename register (``on_undo``) how to put
        back what was there (the previous file's bytes, or no file)."""
        for tmp, final in self.pairs:
            old = final.read_bytes() if final.is_file() else None
            on_undo(f"put back {final}", functools.partial(_put_back, final, old))
            os.replace(tmp, final)
        return self.paths

    def discard(self) -> None:
        """Remove the temporary files still there (after install: none)."""
        for tmp, _ in self.pairs:
            tmp.unlink(missing_ok=True)


def _put_back(final: Path, old: bytes | None) -> str | None:
    if old is None:
        if not final.is_file():
            return None              # never renamed (or something else is there): not ours
        final.unlink()
        return f"removed {final}"
    if final.is_file() and final.read_bytes() == old:
        return None
    tmp = final.with_name(f".{final.name}.{secrets.token_hex(4)}.restore")
    tmp.write_bytes(old)
    os.replace(tmp, final)
    return f"restored the previous {final.name}"


def stage_manifests(manifests: list[Manifest], output_dir: Path) -> StagedManifests:
    """Write every manifest to a temporary file in ``output_dir`` (created if missing).

    Everything that can go wrong with the directory goes wrong here, before publish
    touches AWS: ``output_dir`` is a file, cannot be created or written, or a manifest's
    path is a directory. Raises :class:`InputError` naming ``karpenter.output_dir``.
    """
    where = f"karpenter.output_dir {output_dir}"
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"{where} is a file, not a directory; remove it or point "
                         "karpenter.output_dir elsewhere")
    staged = StagedManifests([])
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        for m in manifests:
            final = output_dir / m.filename
            if final.is_dir():
                raise InputError(f"{where}: {final} is a directory; remove it so the "
                                 f"{m.kind} manifest can be written")
            tmp = output_dir / f".{m.filename}.{secrets.token_hex(4)}.tmp"
            staged.pairs.append((tmp, final))
            tmp.write_text("---\n" + m.to_yaml(), encoding="utf-8")
    except OSError as err:
        staged.discard()
        raise InputError(f"{where}: cannot write the Karpenter manifests there "
                         f"({err.strerror or err}); fix the directory or the setting") from err
    except InputError:
        staged.discard()
        raise
    return staged


def write_manifests(manifests: list[Manifest], output_dir: Path) -> list[Path]:
    """Write each manifest to ``output_dir/<filename>``; return the paths."""
    staged = stage_manifests(manifests, output_dir)
    try:
        return staged.install(lambda what, fn: None)
    finally:
        staged.discard()


# --------------------------------------------------------------------------- builders


def taint_object(text: str) -> dict[str, str]:
    """A kubelet taint (``key=value:Effect`` or ``key:Effect``) as a Kubernetes taint."""
    kv, _, effect = text.rpartition(":")
    key, _, value = kv.partition("=")
    taint = {"key": key, "effect": effect}
    if value:
        taint["value"] = value
    return taint


def _taints(template: LaunchTemplateSettings) -> list[dict[str, str]]:
    """The template's configured taints as Kubernetes taint objects."""
    return [taint_object(t) for t in template.user_data.taints]


def _provisioner(name: str, template: LaunchTemplateSettings) -> Manifest:
    spec: dict[str, Any] = {
        "provider": {"launchTemplate": template.name},
        "requirements": [
            {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
            {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
        ],
    }
    if template.user_data.labels:
        spec["labels"] = dict(template.user_data.labels)
    if template.user_data.taints:
        spec["taints"] = _taints(template)
    body = {"apiVersion": "karpenter.sh/v1alpha5", "kind": "Provisioner",
            "metadata": {"name": name}, "spec": spec}
    return Manifest("Provisioner", name, f"{name}-provisioner.yaml", body)


def ami_selector_terms(settings: Settings, template: LaunchTemplateSettings, ami_id: str,
                       selector: str, channel: str | None = None) -> tuple[list[dict[str, Any]], str]:
    """The EC2NodeClass ``amiSelectorTerms`` for ``selector``, and the note that goes with them."""
    if selector not in AMI_SELECTORS:
        raise InputError(f"karpenter.ami_selector {selector!r}: expected one of "
                         f"{', '.join(AMI_SELECTORS)}")
    if selector == "id":
        return [{"id": ami_id}], (f"amiSelectorTerms pin {ami_id}: promote/rollback do not move "
                                  "these nodes until the manifest is re-rendered and applied")
    if selector == "tags":
        return ([{"tags": {T.IMAGE_NAME: template.image}, "owner": "self"}],
                f"amiSelectorTerms select the newest available AMI of this account tagged "
                f"{T.IMAGE_NAME}={template.image} (the newest build, not a channel)")
    ch = channel or template.channel
    param = pointer_name(settings.ssm_prefix, template.image, ch)
    return [{"ssmParameter": param}], f"amiSelectorTerms follow {param} (channel {ch}). " + \
        SSM_FOLLOW_NOTE


def _v1(name: str, cluster: ClusterSettings, template: LaunchTemplateSettings, ami_id: str,
        mechanism: str, *, terms: list[dict[str, Any]] | None = None,
        note: str = "") -> list[Manifest]:
    family = _AMI_FAMILY.get(mechanism)
    if family is None:
        raise InputError(f"Karpenter v1: no amiFamily for bootstrap mechanism {mechanism!r}")
    discovery = {"karpenter.sh/discovery": cluster.name}
    sg_terms = ([{"id": g} for g in template.security_group_ids] if template.security_group_ids
                else [{"tags": discovery}])
    spec: dict[str, Any] = {
        "amiFamily": family,
        "amiSelectorTerms": terms or [{"id": ami_id}],
        "subnetSelectorTerms": [{"tags": discovery}],
        "securityGroupSelectorTerms": sg_terms,
        "metadataOptions": {"httpEndpoint": "enabled", "httpTokens": "required",
                            "httpPutResponseHopLimit": 2, "httpProtocolIPv6": "disabled"},
        "blockDeviceMappings": [{"deviceName": "/dev/xvda", "rootVolume": True,
                                 "ebs": {"encrypted": True, "volumeType": "gp3",
                                         "volumeSize": "20Gi"}}],
        "userData": _v1_user_data(cluster, template, mechanism),
        "tags": {"eks-ami-pipeline:launch-template": template.name},
    }
    if template.instance_profile:
        spec["instanceProfile"] = template.instance_profile
    else:
        spec["role"] = f"KarpenterNodeRole-{cluster.name}"
    if template.user_data.max_pods is not None:
        spec["kubelet"] = {"maxPods": template.user_data.max_pods,
                           "clusterDNS": [cluster.cluster_dns_ip]}
    nodeclass = {"apiVersion": "karpenter.k8s.aws/v1", "kind": "EC2NodeClass",
                 "metadata": {"name": name}, "spec": spec}
    tmpl_meta: dict[str, Any] = {}
    if template.user_data.labels:
        tmpl_meta["labels"] = dict(template.user_data.labels)
    tmpl_spec: dict[str, Any] = {
        "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": name},
        "requirements": [
            {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
            {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
        ],
    }
    if template.user_data.taints:
        tmpl_spec["taints"] = _taints(template)
    pool_template: dict[str, Any] = {"spec": tmpl_spec}
    if tmpl_meta:
        pool_template["metadata"] = tmpl_meta
    nodepool = {"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": name},
                "spec": {"template": pool_template}}
    return [Manifest("EC2NodeClass", name, f"{name}-ec2nodeclass.yaml", nodeclass, note),
            Manifest("NodePool", name, f"{name}-nodepool.yaml", nodepool)]


def _v1_user_data(cluster: ClusterSettings, template: LaunchTemplateSettings, mechanism: str) -> str:
    """User data in the form Karpenter expects for the family.

    AL2023: the rendered NodeConfig MIME (Karpenter merges it with the NodeConfig it generates).
    AL2: Karpenter appends its own ``bootstrap.sh`` call, so the user part must not call it;
    it is a MIME shell part that records which template the node belongs to.
    """
    if mechanism == ud.NODEADM:
        return ud.render_for(cluster, template.user_data, ud.NODEADM, "mime").text
    script = ("#!/bin/bash\n"
              "set -o errexit -o nounset -o pipefail\n"
              f"# eks-ami-pipeline: launch template {template.name}; Karpenter (amiFamily AL2) "
              "appends the /etc/eks/bootstrap.sh call after this part.\n"
              "mkdir -p /etc/eks-ami-pipeline\n"
              f"echo {shlex.quote(template.name)} > /etc/eks-ami-pipeline/launch-template\n")
    return ud.mime_multipart([(ud.SHELL_CONTENT_TYPE, script)])
