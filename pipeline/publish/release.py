"""Publish a verified AMI into a launch template: staged, idempotent and reversible.

:func:`publish` checks everything before it creates anything (exit 2, nothing created):
the AMI is ``available`` and carries a passing verification (tags written by
:func:`pipeline.lineage.verify_ami.verify_ami`); the user data, rendered for the AMI's bootstrap mechanism
or read from ``--user-data-file``, passes :func:`pipeline.publish.user_data.lint`; the resulting
version obeys the template rules (:mod:`pipeline.aws.templates`; refused for Karpenter
templates, warned otherwise); Karpenter manifests validate against the CRD schemas and are
written to temporary files in ``karpenter.output_dir`` (a bad directory is refused here).

Then one :class:`~pipeline.publish.transaction.Transaction`, in this fixed order, each step
registering its undo before it runs: the new version (``ClientToken`` from template + AMI +
user data, so a rerun returns the same version), the default version (unless
``--no-default``), the SSM channel pointer in every region of the build, the manifests
renamed into place. A failure or Ctrl-C at any step puts back the previous default
version, every region's pointer value (or removes a pointer that did not exist) and the
previous manifests, and deletes the new version; the error says which step failed and
what was rolled back (or could not be).

AWS calls for one publish to one region: DescribeImages, DescribeLaunchTemplateVersions,
DescribeSecurityGroups (when the version has groups), CreateLaunchTemplateVersion (or
CreateLaunchTemplate), ModifyLaunchTemplate (when switching the default): at most 5 for the
template; moving a channel pointer adds one GetParameter (its undo) and one PutParameter
per region.

:func:`promote` switches the default, :func:`rollback` goes back to the newest earlier version
that launches a different AMI, :func:`template_diff` compares two versions (AMI, decoded user
data as a unified diff, other changed keys).
"""
from __future__ import annotations

import difflib
import functools
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipeline.publish import allowed, protect
from pipeline.publish import karpenter as kp
from pipeline.aws import templates as lt_mod
from pipeline.core import tags as T
from pipeline.publish import user_data as ud
from pipeline.aws.clients import Clients, error_code
from pipeline.core.config import LaunchTemplateSettings, Settings
from pipeline.core.inputs import MiB, read_text
from pipeline.core.naming import is_ami_id
from pipeline.publish.gate import gate_publication, move_pointers, point_channel
from pipeline.core.errors import (AwsCallError, ImageReadError, InputError, LintError,
                                  VerificationFailed)
from pipeline.aws.templates import TemplateVersion
from pipeline.aws.ssm import Pointer, get_pointer, pointer_name
from pipeline.aws.cleanup import delete_new_template, delete_new_template_versions
from pipeline.core.progress import NO_PROGRESS, Progress
from pipeline.publish.transaction import Transaction

__all__ = [
    "PublishRequest",
    "PublishResult",
    "ImageInfo",
    "PromoteResult",
    "RollbackResult",
    "DiffResult",
    "describe_image",
    "publish",
    "promote",
    "rollback",
    "template_diff",
    "check_publication",
]

log = logging.getLogger(__name__)

MANAGED_BY = "eks-ami-pipeline"


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class PublishRequest:
    """What ``invoke publish-template`` asks for (see its flags)."""

    ami_id: str
    template: str | None = None
    source_version: str | int | None = None
    set_default: bool = True
    create: bool = False
    user_data_file: str | None = None
    allow_unverified: bool = False
    karpenter: str | None = None
    channel: str | None = None
    #: Allow a template name that the configuration does not list (rules then refuse).
    ad_hoc: bool = False


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """The AMI facts publish needs, from one DescribeImages call."""

    image_id: str
    name: str
    state: str
    root_device: str | None
    build_id: str | None
    image_name: str | None
    verdict: str | None
    mechanism: str | None
    blocked: str | None = None       # the blocklist tag (rollback --block), if any
    kubelet_version: str | None = None            # verify's kubelet version tag
    verify_warnings: tuple[str, ...] = ()         # verify's warning check ids
    #: What the Allowed AMIs check reads (ImageAllowed, owner, name, dates, product codes).
    allowed_facts: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_api(cls, image: dict[str, Any]) -> "ImageInfo":
        tags = T.from_tag_list(image.get("Tags"))
        mech = tags.get(T.VERIFY_MECHANISM)
        return cls(image_id=image["ImageId"], name=image.get("Name", ""),
                   state=image.get("State", ""), root_device=image.get("RootDeviceName"),
                   build_id=tags.get(T.BUILD_ID), image_name=tags.get(T.IMAGE_NAME),
                   verdict=tags.get(T.VERIFY_VERDICT),
                   mechanism=mech if mech in ud.MECHANISMS else None,
                   blocked=tags.get(T.BLOCKED) or None,
                   kubelet_version=(tags.get(T.VERIFY_KUBELET_VERSION) or None),
                   verify_warnings=tuple(w for w in tags.get(T.VERIFY_WARNINGS, "").split()
                                         if w != "none"),
                   allowed_facts={k: image[k] for k in allowed.FACTS if k in image})


@dataclass(slots=True)
class PublishResult:
    """What publish did; ``--json`` prints it."""

    template_id: str
    template_name: str
    version: int
    default_version: int
    image_id: str
    user_data_sha256: str
    created: bool
    template_created: bool
    mechanism: str
    description: str
    region: str
    previous_default_version: int | None = None
    pointer: str | None = None
    warnings: list[str] = field(default_factory=list)
    secure_defaults: list[str] = field(default_factory=list)
    karpenter_manifests: list[str] = field(default_factory=list)
    karpenter_notes: list[str] = field(default_factory=list)
    protection: list[str] = field(default_factory=list)

    def summary(self) -> str:
        what = "created" if self.created else "already existed (nothing created)"
        lines = [f"{self.template_name} ({self.template_id}) version {self.version} {what}: "
                 f"{self.image_id}, {self.mechanism} user data sha256 {self.user_data_sha256[:12]}",
                 f"default version: {self.default_version}"
                 + (f" (was {self.previous_default_version})"
                    if self.previous_default_version not in (None, self.default_version) else "")]
        if self.version != self.default_version:
            lines.append(f"staged: run `invoke promote --template {self.template_name} "
                         f"--version {self.version}` to switch traffic")
        if self.pointer:
            lines.append(f"pointer {self.pointer} -> {self.image_id}")
        lines += [f"set secure default: {s}" for s in self.secure_defaults]
        lines += [f"wrote {p}" for p in self.karpenter_manifests]
        lines += [f"note: {n}" for n in self.karpenter_notes]
        lines += [f"protection: {p}" for p in self.protection]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


@dataclass(slots=True)
class PromoteResult:
    template_id: str
    template_name: str
    version: int
    image_id: str | None
    previous_default_version: int
    previous_image_id: str | None
    changed: bool
    pointer: str | None = None
    protection: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if not self.changed:
            head = f"{self.template_name}: version {self.version} already is the default"
        else:
            head = (f"{self.template_name}: default version {self.previous_default_version} "
                    f"({self.previous_image_id}) -> {self.version} ({self.image_id})")
        return head + (f"\npointer {self.pointer} -> {self.image_id}" if self.pointer else "") \
            + "".join(f"\nprotection: {p}" for p in self.protection)


@dataclass(slots=True)
class RollbackResult:
    template_id: str
    template_name: str
    from_version: int
    to_version: int
    from_image_id: str | None
    to_image_id: str | None
    user_data_changed: bool
    changed_keys: list[str]
    pointer: str | None = None
    pointer_previous: str | None = None
    protection: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.template_name}: default version {self.from_version} -> {self.to_version}",
                 f"  AMI: {self.from_image_id} -> {self.to_image_id}",
                 f"  user data: {'changed' if self.user_data_changed else 'unchanged'}"]
        if self.changed_keys:
            lines.append(f"  other changed keys: {', '.join(self.changed_keys)}")
        if self.pointer:
            lines.append(f"  pointer {self.pointer}: {self.pointer_previous or '(unset)'} -> "
                         f"{self.to_image_id}")
        lines += [f"  protection: {p}" for p in self.protection]
        return "\n".join(lines)


@dataclass(slots=True)
class DiffResult:
    template_name: str
    from_version: int
    to_version: int
    from_image_id: str | None
    to_image_id: str | None
    user_data_diff: str
    changed_keys: list[str]

    @property
    def identical(self) -> bool:
        return (self.from_image_id == self.to_image_id and not self.user_data_diff
                and not self.changed_keys)

    def summary(self) -> str:
        lines = [f"{self.template_name}: version {self.from_version} -> {self.to_version}"]
        if self.from_image_id != self.to_image_id:
            lines.append(f"ImageId: {self.from_image_id} -> {self.to_image_id}")
        else:
            lines.append(f"ImageId: {self.from_image_id} (unchanged)")
        if self.changed_keys:
            lines.append(f"other changed keys: {', '.join(self.changed_keys)}")
        lines.append(self.user_data_diff.rstrip("\n") if self.user_data_diff
                     else "user data: unchanged")
        return "\n".join(lines)


# --------------------------------------------------------------------------- image


def describe_image(ec2: Any, ami_id: str) -> ImageInfo:
    """One DescribeImages call; InputError when the AMI does not exist here."""
    if not is_ami_id(ami_id):
        raise InputError(f"--ami {ami_id!r}: expected an AMI id such as ami-0123456789abcdef0")
    try:
        images = ec2.describe_images(ImageIds=[ami_id]).get("Images", [])
    except ClientError as err:
        if error_code(err) in ("InvalidAMIID.NotFound", "InvalidAMIID.Unavailable",
                               "InvalidAMIID.Malformed"):
            raise ImageReadError(f"AMI {ami_id} not found in this region; check --ami and "
                                 "aws.region") from err
        raise _refused(err, f"describing AMI {ami_id}") from err
    if not images:
        hidden = allowed.hidden_problem(ec2, ami_id, ec2.meta.region_name)
        raise ImageReadError(hidden or f"AMI {ami_id} not found in this region; check --ami and "
                             "aws.region")
    return ImageInfo.from_api(images[0])


def _check_image(image: ImageInfo, allow_unverified: bool) -> None:
    if image.blocked:
        raise InputError(f"AMI {image.image_id} is blocked ({image.blocked}); a blocked AMI is "
                         "never published again: publish another build")
    if image.state != "available":
        raise InputError(f"AMI {image.image_id} is {image.state!r}, not 'available'; wait for it "
                         "(aws ec2 wait image-available) and publish again")
    if image.verdict is None:
        if not allow_unverified:
            raise InputError(f"AMI {image.image_id} has no verification record; run `invoke verify "
                             f"--ami {image.image_id}` first, or pass --allow-unverified")
        return
    if image.verdict != "ok":
        raise InputError(f"AMI {image.image_id} failed verification (verdict {image.verdict}); "
                         "fix the image and verify it again; it cannot join a cluster")


def _verify_notes(settings: Settings, image: ImageInfo) -> list[str]:
    """Refuse a kubelet/cluster version skew; repeat verify's warnings (hygiene, runtime)."""
    from pipeline.image.kubelet import skew_of

    cluster = settings.cluster.kubernetes_version if settings.cluster is not None else None
    kubelet = image.kubelet_version if image.kubelet_version != "unknown" else None
    why = skew_of(kubelet, cluster)
    if why:
        raise VerificationFailed(f"AMI {image.image_id}: verdict version-skew: {why}; publish "
                                 f"an AMI built for Kubernetes {cluster}")
    notes = [f"verify warned: {w} (run `invoke verify --ami {image.image_id}` for the paths)"
             for w in image.verify_warnings]
    if cluster and image.kubelet_version == "unknown":
        notes.append(f"AMI {image.image_id}: kubelet version unknown; cannot check it against "
                     f"the cluster's Kubernetes {cluster}")
    return notes


def _mechanism(settings: Settings, lt: LaunchTemplateSettings, image: ImageInfo,
               user_data_text: str | None) -> str:
    """The AMI's mechanism: verified, else the image's configured ``require``, else the file's."""
    if image.mechanism:
        return image.mechanism
    if lt.image:
        try:
            require = settings.image(lt.image).require
        except InputError:
            require = "any"
        if require in ud.MECHANISMS:
            return require
    if user_data_text is not None:
        detected = ud.detect_mechanism(user_data_text)
        if detected:
            return detected
    raise InputError(f"AMI {image.image_id}: bootstrap mechanism unknown (no verification record "
                     "and the image's `require` is 'any'); run `invoke verify --ami` first")


def _check_require(settings: Settings, lt: LaunchTemplateSettings, image: ImageInfo) -> None:
    """The verified mechanism must be the one the template's image is configured to require."""
    if not (lt.image and image.mechanism):
        return
    try:
        require = settings.image(lt.image).require
    except InputError:
        return
    if require in ud.MECHANISMS and require != image.mechanism:
        raise InputError(f"AMI {image.image_id} boots with {image.mechanism}, but images[{lt.image}]"
                         f".require is {require}; publish an image built for {require} or change "
                         "`require`")


def _family_warning(lt: LaunchTemplateSettings, image: ImageInfo) -> str | None:
    """A template serves one configured image; say so when the AMI was built for another.

    Not refused: promoting an imported or hand-made AMI into a template is legitimate, but
    the channel pointer ``<prefix>/<lt.image>/<channel>`` will then name it.
    """
    if lt.image and image.image_name and image.image_name != lt.image:
        return (f"AMI {image.image_id} was built for image {image.image_name!r}, but template "
                f"{lt.name!r} serves image {lt.image!r}: its pointers will name this AMI")
    return None


# --------------------------------------------------------------------------- publish


def publish(settings: Settings, clients: Clients, req: PublishRequest, *,
            region: str | None = None, progress: Progress = NO_PROGRESS) -> PublishResult:
    """Publish ``req.ami_id`` as a new version of the launch template; see the module docstring."""
    lt = (settings.launch_template(req.template) if req.ad_hoc
          else settings.configured_launch_template(req.template))
    name = lt.name
    region = region or clients.region
    ec2 = clients.client("ec2", region=region)
    channel = req.channel or lt.channel or None
    _check_request(settings, req)
    file_text = _read_user_data_file(req.user_data_file) if req.user_data_file else None

    image = describe_image(ec2, req.ami_id)                                    # call 1
    allowed_verdict = allowed.image_problem(ec2, image.allowed_facts, region)  # no call unless blocked
    if allowed_verdict.refusal:
        raise InputError(allowed_verdict.refusal)
    _check_image(image, req.allow_unverified)
    mechanism = _mechanism(settings, lt, image, file_text)
    _check_require(settings, lt, image)
    family_warning = _family_warning(lt, image)
    verify_notes = _verify_notes(settings, image)
    cluster = settings.cluster
    if file_text is None:
        text = ud.render_for(settings.require_cluster(), lt.user_data, mechanism).text
    else:
        text = file_text
    ud_warnings = ud.check(text, mechanism=mechanism, cluster=cluster,
                           what=f"user data ({req.user_data_file or 'rendered from config'})")
    image_name = lt.image or image.image_name
    if channel and not image_name:
        raise InputError(f"--channel {channel}: the SSM pointer needs an image name; configure "
                         f"launch_templates[{name}].image or tag the AMI with {T.IMAGE_NAME}")
    if channel and image_name:
        pointer_name(settings.ssm_prefix, image_name, channel)  # refuse a bad name up front
    kversion = req.karpenter or (settings.karpenter.version if lt.karpenter else None)
    manifests = (kp.render_manifests(settings, kversion, template=lt, ami_id=image.image_id,
                                     mechanism=mechanism, channel=channel)
                 if kversion and kversion != "none" else [])

    source = str(req.source_version) if req.source_version is not None else "$Default"
    found = lt_mod.describe_versions(ec2, name, [source, "$Latest"])           # call 2
    if found is None and not req.create:
        raise InputError(f"launch template {name!r} does not exist in {region}; pass --create to "
                         "build it from config")
    src = _pick(found or [], source)
    if found is not None and src is None:
        raise InputError(f"launch template {name}: --source-version {source} not found")
    latest = max((v.version for v in found or []), default=0)

    new, resulting, applied = _template_data(lt, image, src, text)
    sg_ids = list(resulting.get("SecurityGroupIds") or [])
    groups = lt_mod.describe_security_groups(ec2, sg_ids) if sg_ids else {}   # call 3
    problems = lt_mod.rule_problems(resulting, root_device=image.root_device, groups=groups)
    warnings: list[str] = [family_warning] if family_warning else []
    if allowed_verdict.warning:
        warnings.append(allowed_verdict.warning)
    warnings += ud_warnings            # e.g. a MIME document without its closing boundary
    warnings += verify_notes
    warnings += _rule_problems(lt, req, problems)

    ud_sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    description = lt_mod.version_description(ami_id=image.image_id, build_id=image.build_id,
                                             verdict=image.verdict, mechanism=mechanism,
                                             user_data_sha256=ud_sha)
    token = lt_mod.client_token(name, image.image_id, text)
    previous_default = next((v.version for v in found or [] if v.default), None)
    # Gating (issue 8): nothing that names the AMI is written until its build is available
    # in every configured region; no AWS call for a single-region image (added by lineage).
    gate = gate_publication(settings, clients, image.image_id, region=region, home_image=image)
    # Everything that can fail without touching AWS is done: the manifests go to
    # temporary files now (a bad output_dir is refused here, exit 2, nothing created).
    staged = kp.stage_manifests(manifests, settings.karpenter.output_dir) if manifests else None
    template_created = created = False
    default_version = previous_default or 0
    pointer = None
    try:
        with Transaction(f"publishing {image.image_id} to {name} in {region}", progress) as tx:
            if found is None:
                tx.step("new launch template")
                tx.on_undo(f"delete launch template {name}", functools.partial(
                    _undo_new_template, clients, region, name, description))
                version = lt_mod.create_template(                              # call 4
                    ec2, name, new, description=description, token=token,
                    tags={T.MANAGED_BY: MANAGED_BY, T.IMAGE_NAME: image_name or ""})
                template_created = created = True
            elif src is not None and src.default and _same_content(src, new):
                version = src    # the default already serves exactly this: nothing to create
            else:
                tx.step("new template version")
                tx.on_undo(f"delete the new version of {name}", functools.partial(
                    _undo_new_versions, clients, region, name, latest, description))
                version, warning = lt_mod.create_version(                      # call 4
                    ec2, src.template_id if src else "",
                    source_version=src.version if src else None,
                    data=new, description=description, token=token)
                created = version.version > latest
                if warning:
                    warnings.append(f"EC2: {warning}")
            default_version = previous_default or version.version
            if req.set_default and not version.default and default_version != version.version:
                tx.step("default version")
                tx.on_undo(f"put back default version {default_version} of {name}",
                           functools.partial(_restore_default, ec2, version.template_id,
                                             default_version))
                lt_mod.set_default_version(ec2, version.template_id, version.version)  # 5
                default_version = version.version
            if channel and image_name:
                # The channel pointer in every region of the build, each naming that
                # region's copy; each region's undo joins this transaction.
                pointer = move_pointers(settings, clients, gate, channel,
                                        image_name=image_name, tx=tx)[0].name
            paths: list[Path] = []
            if staged is not None:
                tx.step("Karpenter manifests")
                paths = staged.install(tx.on_undo)
            tx.commit()
    finally:
        if staged is not None:
            staged.discard()
    log.info("published %s as %s version %s", image.image_id, name, version.version)
    protection = _move_protection(settings, clients, lt.image or image_name, region, warnings)
    return PublishResult(
        template_id=version.template_id, template_name=name, version=version.version,
        default_version=default_version, image_id=image.image_id, user_data_sha256=ud_sha,
        created=created, template_created=template_created, mechanism=mechanism,
        description=description if created else version.description, region=region,
        previous_default_version=previous_default, pointer=pointer, warnings=warnings,
        secure_defaults=applied, karpenter_manifests=[str(p) for p in paths],
        karpenter_notes=[m.note for m in manifests if m.note], protection=protection)


def _check_request(settings: Settings, req: PublishRequest) -> None:
    """The request's own flags, before any AWS call."""
    if req.karpenter is not None and req.karpenter not in kp.VERSIONS + ("none",):
        raise InputError(f"--karpenter {req.karpenter!r}: expected v1 or v1alpha5")
    if req.source_version is not None and not str(req.source_version).isdigit():
        raise InputError(f"--source-version {req.source_version!r}: expected a version number")
    if req.ad_hoc and any(t.name == req.template for t in settings.launch_templates):
        raise InputError(f"--ad-hoc: template {req.template!r} is configured; drop --ad-hoc")


def _template_data(lt: LaunchTemplateSettings, image: ImageInfo, src: TemplateVersion | None,
                   text: str) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """(the data the new version sets, the version's resulting data, the secure defaults
    applied): the AMI, user data, profile and groups over the source version's data."""
    new: dict[str, Any] = {"ImageId": image.image_id, "UserData": ud.encode(text)}
    if lt.instance_profile:
        new["IamInstanceProfile"] = {"Name": lt.instance_profile}
    if lt.security_group_ids:
        new["SecurityGroupIds"] = list(lt.security_group_ids)
    resulting = lt_mod.overlay(src.data if src else {}, new)
    defaults, applied = lt_mod.apply_secure_defaults(resulting, image.root_device)
    new.update(defaults)
    return new, lt_mod.overlay(resulting, defaults), applied


def _rule_problems(lt: LaunchTemplateSettings, req: PublishRequest,
                   problems: list[str]) -> list[str]:
    """The template rule problems as warnings, or a LintError for a Karpenter or an
    --ad-hoc template (which must pass the rules)."""
    if problems and (lt.karpenter or req.ad_hoc):
        lines = [f"launch template {lt.name}: {p}" for p in problems]
        why = "configured for Karpenter" if lt.karpenter else "an --ad-hoc template"
        raise LintError(f"{lines[0]} (refused: {why})"
                        if len(lines) == 1 else
                        f"launch template {lt.name}: {len(lines)} rule problems (refused: "
                        f"{why}); first: {problems[0]}", lines)
    return list(problems)


def _read_user_data_file(path: str) -> str:
    return read_text(path, what="--user-data-file", max_bytes=MiB,
                     hint="give a plain-text user data file (gzip or binary user data is not "
                          "supported)")


def _pick(versions: list[TemplateVersion], which: str) -> TemplateVersion | None:
    if which == "$Default":
        return next((v for v in versions if v.default), None)
    if which == "$Latest":
        return max(versions, key=lambda v: v.version, default=None)
    return next((v for v in versions if v.version == int(which)), None)


def _same_content(version: TemplateVersion, new: dict[str, Any]) -> bool:
    return all(version.data.get(k) == v for k, v in new.items())


def _refused(err: Exception, what: str) -> AwsCallError:
    if isinstance(err, ClientError):
        e = err.response.get("Error", {})
        return AwsCallError(f"AWS refused {what}: {e.get('Code')}: {e.get('Message')}")
    return AwsCallError(f"AWS call failed {what}: {err}")


def _undo_new_versions(clients: Clients, region: str, name: str, latest: int,
                       description: str) -> str | None:
    """Undo of the version step: delete what this run created (found by its description
    above the latest version seen before; nothing when the create never happened)."""
    deleted = delete_new_template_versions(clients, region, name, latest, description)
    if not deleted:
        return None
    return f"deleted {name} version {', '.join(map(str, deleted))}"


def _undo_new_template(clients: Clients, region: str, name: str,
                       description: str) -> str | None:
    deleted = delete_new_template(clients, region, name, description, MANAGED_BY)
    return f"deleted launch template {name} ({deleted})" if deleted else None


def _restore_default(ec2: Any, template_id: str, version: int) -> str | None:
    """Undo of the default step (idempotent: re-read first). Raises when it cannot."""
    try:
        current = ec2.describe_launch_templates(LaunchTemplateIds=[template_id])[
            "LaunchTemplates"][0]["DefaultVersionNumber"]
    except (ClientError, BotoCoreError, IndexError, KeyError) as err:
        raise _refused(err, f"reading the default version of {template_id}") from err
    if int(current) == int(version):
        return None
    lt_mod.set_default_version(ec2, template_id, version)
    return f"default version back to {version}"


# --------------------------------------------------------------------------- promote / rollback


def _channel_target(settings: Settings, template: str, channel: str | None,
                    image_tags_name: str | None) -> tuple[str | None, str | None]:
    """(channel, image name) a promote/rollback moves: ``--channel`` or the template's own."""
    lt = settings.launch_template(template)
    ch = channel or (lt.channel if lt.image else None)
    image_name = lt.image or image_tags_name
    if ch and not image_name:
        raise InputError(f"--channel {ch}: no image name for the pointer; configure "
                         f"launch_templates[{template}].image")
    return ch, image_name


def promote(settings: Settings, clients: Clients, template: str, version: int | str,
            channel: str | None = None, *, region: str | None = None,
            progress: Progress = NO_PROGRESS) -> PromoteResult:
    """Make ``version`` the default and move the channel pointer to its AMI."""
    if not str(version).isdigit():
        raise InputError(f"promote --version {version!r}: expected a version number")
    region = region or clients.region
    ec2 = clients.client("ec2", region=region)
    ch, image_name = _channel_target(settings, template, channel, None)
    found = lt_mod.describe_versions(ec2, template, [str(int(version)), "$Default"])
    if found is None:
        raise InputError(f"launch template {template!r} does not exist in {region}")
    target = _pick(found, str(int(version)))
    current = _pick(found, "$Default")
    if target is None or current is None:
        raise InputError(f"launch template {template}: version {version} not found")
    if target.image_id and is_ami_id(target.image_id):
        blocked = describe_image(ec2, target.image_id).blocked
        if blocked:
            raise InputError(f"launch template {template} version {target.version} launches "
                             f"{target.image_id}, which is blocked ({blocked}); a blocked AMI "
                             "is never promoted again")
    changed = target.version != current.version
    pointer = None
    with Transaction(f"promoting {template} version {target.version}", progress) as tx:
        if changed:
            tx.step("default version")
            tx.on_undo(f"put back default version {current.version} of {template}",
                       functools.partial(_restore_default, ec2, target.template_id,
                                         current.version))
            lt_mod.set_default_version(ec2, target.template_id, target.version)
        if ch and image_name and target.image_id and is_ami_id(target.image_id):
            pointer = point_channel(settings, clients, target.image_id, ch,  # every region
                                    image_name=image_name, region=region, tx=tx)[0].name
        tx.commit()
    warned: list[str] = []
    protection = _move_protection(settings, clients, image_name, region, warned)
    return PromoteResult(template_id=target.template_id, template_name=template,
                         version=target.version, image_id=target.image_id,
                         previous_default_version=current.version,
                         previous_image_id=current.image_id, changed=changed, pointer=pointer,
                         protection=protection + [f"warning: {w}" for w in warned])


def rollback(settings: Settings, clients: Clients, template: str, channel: str | None = None,
             *, region: str | None = None, progress: Progress = NO_PROGRESS) -> RollbackResult:
    """Make the newest version before the default whose AMI differs the default."""
    region = region or clients.region
    ec2 = clients.client("ec2", region=region)
    ch, image_name = _channel_target(settings, template, channel, None)
    versions = lt_mod.list_versions(ec2, template)
    current = next((v for v in versions if v.default), None)
    if current is None:
        raise InputError(f"launch template {template}: no default version found")
    earlier = [v for v in versions if v.version < current.version and v.image_id
               and v.image_id != current.image_id]
    if not earlier:
        raise InputError(f"launch template {template}: no version before {current.version} "
                         f"launches an AMI other than {current.image_id}; nothing to roll back to")
    target = max(earlier, key=lambda v: v.version)
    previous_ptr: Pointer | None = None
    pointer = None
    with Transaction(f"rolling {template} back to version {target.version}", progress) as tx:
        tx.step("default version")
        tx.on_undo(f"put back default version {current.version} of {template}",
                   functools.partial(_restore_default, ec2, target.template_id,
                                     current.version))
        lt_mod.set_default_version(ec2, target.template_id, target.version)
        if ch and image_name and target.image_id and is_ami_id(target.image_id):
            previous_ptr = get_pointer(clients, settings.ssm_prefix, image_name, ch, region=region)
            pointer = point_channel(settings, clients, target.image_id, ch,  # every region
                                    image_name=image_name, region=region, tx=tx)[0].name
        tx.commit()
    warned: list[str] = []
    protection = _move_protection(settings, clients, image_name, region, warned)
    protection += [f"warning: {w}" for w in warned]
    return RollbackResult(template_id=target.template_id, template_name=template,
                          from_version=current.version, to_version=target.version,
                          from_image_id=current.image_id, to_image_id=target.image_id,
                          user_data_changed=current.user_data != target.user_data,
                          changed_keys=_changed_keys(current.data, target.data),
                          pointer=pointer,
                          pointer_previous=previous_ptr.ami_id if previous_ptr else None,
                          protection=protection)


def _move_protection(settings: Settings, clients: Clients, image_name: str | None, region: str,
                     warnings: list[str]) -> list[str]:
    """With ``build.protect_live_amis``: protection follows the live AMIs (:mod:`protect`)."""
    if not settings.protect_live_amis:
        return []
    regions = [region]
    if image_name and any(i.name == image_name for i in settings.images):
        regions += list(settings.image(image_name).regions)
    changes, warned = protect.reconcile(settings, clients, regions, templates_region=region)
    warnings += warned
    return changes


# --------------------------------------------------------------------------- diff


def _changed_keys(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    keys = (set(a) | set(b)) - {"ImageId", "UserData"}
    return sorted(k for k in keys if a.get(k) != b.get(k))


def template_diff(clients: Clients, template: str, from_version: str | int | None = None,
                  to_version: str | int | None = None, *, region: str | None = None) -> DiffResult:
    """AMI and decoded user-data differences between two versions (default: $Default → $Latest)."""
    ec2 = clients.client("ec2", region=region)
    a_key = str(from_version) if from_version is not None else "$Default"
    b_key = str(to_version) if to_version is not None else "$Latest"
    for key in (a_key, b_key):
        if not (key.isdigit() or key in ("$Default", "$Latest")):
            raise InputError(f"template-diff: version {key!r}: expected a number, $Default or "
                             "$Latest")
    found = lt_mod.describe_versions(ec2, template, sorted({a_key, b_key}))
    if found is None:
        raise InputError(f"launch template {template!r} does not exist")
    a, b = _pick(found, a_key), _pick(found, b_key)
    if a is None or b is None:
        raise InputError(f"launch template {template}: version {a_key if a is None else b_key} "
                         "not found")
    diff = "".join(difflib.unified_diff(
        a.user_data.splitlines(keepends=True), b.user_data.splitlines(keepends=True),
        fromfile=f"{template} v{a.version} user data", tofile=f"{template} v{b.version} user data"))
    return DiffResult(template_name=template, from_version=a.version, to_version=b.version,
                      from_image_id=a.image_id, to_image_id=b.image_id, user_data_diff=diff,
                      changed_keys=_changed_keys(a.data, b.data))


# --------------------------------------------------------------------------- before a build


def check_publication(settings: Settings, clients: Clients, template: str, *,
                      image_name: str, region: str | None = None) -> list[str]:
    """Every check :func:`publish` runs that does not need the AMI, for a build of
    ``image_name`` about to be made (rebuild calls this before baking): the user data
    for the image's required mechanism renders and lints, the channel pointer name is
    valid, the version the template would get obeys the template rules (refused for a
    Karpenter template, else returned as warnings), the Karpenter manifests render,
    validate and can be written to ``karpenter.output_dir``. Read-only in AWS
    (DescribeLaunchTemplateVersions, DescribeSecurityGroups); raises
    :class:`InputError`/:class:`LintError`, nothing created."""
    lt = settings.launch_template(template)
    ec2 = clients.client("ec2", region=region)
    try:
        require = settings.image(image_name).require
    except InputError:
        require = "any"
    mechanisms = [require] if require in ud.MECHANISMS else []
    for mechanism in mechanisms:
        text = ud.render_for(settings.require_cluster(), lt.user_data, mechanism).text
        ud.check(text, mechanism=mechanism, cluster=settings.cluster,
                 what=f"launch_templates[{lt.name}].user_data (rendered for {mechanism})")
    channel = lt.channel or None
    if channel:
        pointer_name(settings.ssm_prefix, lt.image or image_name, channel)
    kversion = settings.karpenter.version if lt.karpenter else None
    if kversion and kversion != "none":
        for mechanism in mechanisms or list(ud.MECHANISMS):
            manifests = kp.render_manifests(settings, kversion, template=lt,
                                            ami_id="ami-00000000000000000", mechanism=mechanism)
            kp.stage_manifests(manifests, settings.karpenter.output_dir).discard()
    found = lt_mod.describe_versions(ec2, lt.name, ["$Default"])
    src = _pick(found or [], "$Default")
    new: dict[str, Any] = {"ImageId": "ami-00000000000000000", "UserData": "e30="}
    if lt.instance_profile:
        new["IamInstanceProfile"] = {"Name": lt.instance_profile}
    if lt.security_group_ids:
        new["SecurityGroupIds"] = list(lt.security_group_ids)
    resulting = lt_mod.overlay(src.data if src else {}, new)
    root = "/dev/xvda"
    resulting = lt_mod.overlay(resulting, lt_mod.apply_secure_defaults(resulting, root)[0])
    sg_ids = list(resulting.get("SecurityGroupIds") or [])
    groups = lt_mod.describe_security_groups(ec2, sg_ids) if sg_ids else {}
    problems = lt_mod.rule_problems(resulting, root_device=root, groups=groups)
    if problems and lt.karpenter:
        raise LintError(f"launch template {lt.name}: {problems[0]} (refused: the template is "
                        "configured for Karpenter)", [f"launch template {lt.name}: {p}"
                                                      for p in problems])
    return [f"launch template {lt.name}: {p}" for p in problems]
