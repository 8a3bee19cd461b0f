"""Reference-safe pruning of pipeline AMIs and launch template versions, and reaping of
resources left behind by builds that did not succeed (``invoke prune`` / ``invoke reap``).

Both are dry runs unless ``apply`` is set; the returned record lists every decision with
its reason, so the dry run is the review.

**prune.** Candidates are AMIs this account owns that carry the build-id tag
(:data:`pipeline.core.tags.BUILD_ID`), grouped per configured image name; the newest ``keep``
builds of each image are kept, and so is anything younger than ``older_than_days``. A
candidate is never removed while it is named by:

- any version (not only the default) of any launch template in its region, including a
  ``resolve:ssm:`` ImageId whose parameter currently names it;
- an SSM pointer under ``ssm_prefix``;
- an instance that is not terminated;
- ``DescribeImageReferences`` (AWS's own reference check).

An AMI protected against deregistration (``DeregistrationProtection`` in DescribeImages,
e.g. set by ``build.protect_live_amis``) is kept and reported "protected against
deregistration"; DeregisterImage is never tried on it (reap skips it too).

Removal deregisters the AMI and deletes the snapshots behind it that this account owns
and no remaining AMI uses, through :func:`pipeline.aws.cleanup.deregister_images`: one
``DeregisterImage(DeleteAssociatedSnapshots=True)`` where supported (snapshots AWS skips
because another AMI uses them are kept and reported), explicit DeleteSnapshot otherwise. With ``deprecate`` the AMI is only marked (``DeprecateAt``)
and a later run without it removes it. Launch template versions of the configured
templates beyond the newest ``keep`` (and older than ``older_than_days``) are deleted,
never the default or the latest; a version that is deleted no longer protects its AMI.

**reap.** Every EC2 resource and S3 upload tagged with a build id whose build record is
``failed``, or which has no succeeded record and is older than ``grace_hours`` (a build
still running is never touched), is removed: instances, volumes, AMIs, snapshots,
security groups, key pairs, S3 objects; plus multipart uploads left open under the
uploads prefix for longer than ``grace_hours`` (S3 cannot tag those).
"""
from __future__ import annotations

import datetime as _dt
import logging
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Iterator

from botocore.exceptions import BotoCoreError, ClientError

from pipeline.aws import cleanup
from pipeline.core import tags
from pipeline.aws.clients import Clients, call, error_code
from pipeline.aws.images import snapshots_of
from pipeline.aws.ssm import ImageIdResolver, ssm_reference
from pipeline.core.clock import utc_now
from pipeline.core.naming import build_time_text, is_ami_id
from pipeline.core.config import Settings
from pipeline.core.errors import PipelineError

__all__ = [
    "ImageDecision",
    "VersionDecision",
    "PruneResult",
    "ReapItem",
    "ReapResult",
    "prune",
    "reap",
    "image_references",
]

log = logging.getLogger(__name__)

_LIVE_STATES = ["pending", "running", "shutting-down", "stopping", "stopped"]
_REFS_BATCH = 10          # DescribeImageReferences takes at most 10 image ids
UPLOAD_PREFIX = "imports/"


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class ImageDecision:
    """What prune does with one pipeline AMI, and why."""

    image_id: str
    region: str
    name: str
    image_name: str
    build_id: str
    created: str
    action: str                      # keep | deregister | deprecate
    reason: str
    snapshot_ids: tuple[str, ...] = ()
    done: bool = False
    error: str | None = None
    #: Snapshots behind a deregistered AMI left in place (another AMI uses them).
    snapshots_kept: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class VersionDecision:
    """What prune does with one launch template version."""

    template: str
    template_id: str
    region: str
    version: int
    image_id: str
    action: str                      # keep | delete
    reason: str
    done: bool = False
    error: str | None = None


@dataclass(slots=True)
class PruneResult:
    applied: bool
    keep: int
    older_than_days: int
    deprecate: bool
    images: list[ImageDecision] = field(default_factory=list)
    versions: list[VersionDecision] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        failed = [d.error for d in self.images] + [v.error for v in self.versions]
        return 1 if any(failed) else 0

    def removed_images(self) -> list[str]:
        return [d.image_id for d in self.images if d.action != "keep"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        mode = "applied" if self.applied else "dry run (pass --apply to act)"
        lines = [f"prune: keep {self.keep} newest builds per image, older than "
                 f"{self.older_than_days} days; {mode}"]
        for d in self.images:
            verb = d.action if d.action == "keep" else (
                f"{d.action}{'d' if d.done else ' (would)' if not self.applied else ' FAILED'}")
            snaps = f" + snapshots {', '.join(d.snapshot_ids)}" if d.snapshot_ids and \
                d.action == "deregister" else ""
            err = f": {d.error}" if d.error else ""
            kept = f"; snapshots {', '.join(d.snapshots_kept)} kept: another AMI uses " \
                "them" if d.snapshots_kept else ""
            lines.append(f"  {d.region} {d.image_id} {d.image_name} {d.build_id}: {verb}"
                         f"{snaps} - {d.reason}{kept}{err}")
        for v in self.versions:
            if v.action == "keep":
                continue
            state = "deleted" if v.done else ("FAILED" if v.error else "would delete")
            lines.append(f"  {v.region} template {v.template} version {v.version} "
                         f"({v.image_id}): {state} - {v.reason}"
                         f"{': ' + v.error if v.error else ''}")
        if not self.images and not [v for v in self.versions if v.action != "keep"]:
            lines.append("  nothing to prune")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class ReapItem:
    kind: str                        # instance | volume | image | snapshot | security-group |
    resource_id: str                 # key-pair | s3-object | multipart-upload
    region: str
    build_id: str
    reason: str
    done: bool = False
    error: str | None = None
    #: Why it stays although its build is reaped (an AMI protected against deregistration,
    #: a snapshot behind one); never attempted.
    kept: str | None = None


@dataclass(slots=True)
class ReapResult:
    applied: bool
    grace_hours: float
    items: list[ReapItem] = field(default_factory=list)
    builds: dict[str, str] = field(default_factory=dict)   # build id -> status seen
    #: Resources of runs still inside the grace period (kept, with the time they may go).
    waiting: list["ReapWaiting"] = field(default_factory=list)
    #: Open multipart uploads no journal records (reported, never aborted).
    unowned: list[str] = field(default_factory=list)
    #: Creation journals removed (or, in a dry run, to remove) because nothing is left.
    journals_done: list[str] = field(default_factory=list)
    now: str = ""

    @property
    def exit_code(self) -> int:
        return 1 if any(i.error for i in self.items) else 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        mode = "applied" if self.applied else "dry run (pass --apply to act)"
        lines = [f"reap: resources of builds that did not succeed; {mode}"]
        for i in self.items:
            if i.kept:
                lines.append(f"  {i.region} {i.kind} {i.resource_id} ({i.build_id}): kept - "
                             f"{i.kept}")
                continue
            state = "removed" if i.done else ("FAILED" if i.error else "would remove")
            lines.append(f"  {i.region} {i.kind} {i.resource_id} ({i.build_id}): {state} - "
                         f"{i.reason}{': ' + i.error if i.error else ''}")
        for w in self.waiting:
            lines.append("  " + w.sentence())
        for u in self.unowned:
            lines.append("  " + u)
        if self.journals_done:
            verb = "removed" if self.applied else "would remove"
            lines.append(f"  {verb} {len(self.journals_done)} creation journal(s) with "
                         "nothing left in them")
        if not self.items and not self.waiting and not self.unowned:
            lines.append("  nothing left behind by failed builds")
        return "\n".join(lines)


# --------------------------------------------------------------------------- helpers


def _regions(settings: Settings) -> list[str]:
    out = [settings.aws.region]
    for img in settings.images:
        out += [r for r in img.regions if r not in out]
    return out


def _parse_time(value: Any) -> _dt.datetime:
    if isinstance(value, _dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)
    text = str(value).replace("Z", "+00:00")
    parsed = _dt.datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=_dt.timezone.utc)


def _pages(fn: Callable[..., Any], key: str, token: str = "NextToken",
           **kwargs: Any) -> Iterator[Any]:
    """Every item under ``key`` of every page of ``fn(**kwargs)``: through botocore's
    paginator when the operation has one, else following ``token`` by hand."""
    client, name = getattr(fn, "__self__", None), getattr(fn, "__name__", "")
    if client is not None and hasattr(client, "can_paginate") and client.can_paginate(name):
        for page in client.get_paginator(name).paginate(**kwargs):
            yield from page.get(key, [])
        return
    while True:
        resp = fn(**kwargs)
        yield from resp.get(key, [])
        nxt = resp.get(token)
        if not nxt:
            return
        kwargs[token] = nxt


def _try(fn: Callable[..., Any], **kwargs: Any) -> str | None:
    """Run one mutating call; the error text or None."""
    try:
        fn(**kwargs)
        return None
    except (ClientError, BotoCoreError) as err:
        return f"{error_code(err) or type(err).__name__}: {err}"


def _pipeline_images(ec2: Any) -> list[dict[str, Any]]:
    pages = ec2.get_paginator("describe_images").paginate(
        Owners=["self"], Filters=[{"Name": "tag-key", "Values": [tags.BUILD_ID]}])
    return [img for page in pages for img in page.get("Images", [])]


def _all_own_images(ec2: Any) -> list[dict[str, Any]]:
    pages = ec2.get_paginator("describe_images").paginate(Owners=["self"])
    return [img for page in pages for img in page.get("Images", [])]


_snapshots_of = snapshots_of


# --------------------------------------------------------------------------- references


@dataclass(slots=True)
class _TemplateVersion:
    template: str
    template_id: str
    version: int
    image_id: str
    created: _dt.datetime
    default: bool


def _template_versions(ec2: Any, template_id: str, name: str,
                       default: int) -> list[_TemplateVersion]:
    out = []
    for v in _pages(ec2.describe_launch_template_versions, "LaunchTemplateVersions",
                    LaunchTemplateId=template_id, MaxResults=200):
        out.append(_TemplateVersion(name, template_id, int(v["VersionNumber"]),
                                    str((v.get("LaunchTemplateData") or {}).get("ImageId", "")),
                                    _parse_time(v.get("CreateTime") or utc_now()),
                                    int(v["VersionNumber"]) == default))
    return out


def _all_templates(ec2: Any) -> list[dict[str, Any]]:
    return list(_pages(ec2.describe_launch_templates, "LaunchTemplates", MaxResults=200))


def _resolve_ssm(ssm: Any, image_ref: str) -> str | None:
    """``resolve:ssm:NAME[:version|:label]`` to the AMI id it currently names."""
    return ImageIdResolver(ssm)(image_ref)


def image_references(clients: Clients, region: str, image_ids: Iterable[str]) -> dict[str, list[str]]:
    """AWS's own view (``DescribeImageReferences``) of what references ``image_ids``.

    Raises :class:`~pipeline.core.errors.AwsCallError` when the API is unavailable: callers
    must then treat every image as referenced.
    """
    ec2 = clients.client("ec2", region=region)
    ids = list(image_ids)
    out: dict[str, list[str]] = defaultdict(list)
    for i in range(0, len(ids), _REFS_BATCH):
        batch = ids[i:i + _REFS_BATCH]
        for ref in _pages(lambda **kw: call(ec2.describe_image_references,
                                            what="checking image references", **kw),
                          "ImageReferences", ImageIds=batch, IncludeAllResourceTypes=True):
            out[ref["ImageId"]].append(f"{ref.get('ResourceType')} {ref.get('Arn')}")
    return dict(out)


# --------------------------------------------------------------------------- prune


def prune(settings: Settings, clients: Clients, keep: int = 3, older_than_days: int = 0,
          apply: bool = False, deprecate: bool = False) -> PruneResult:
    """Plan (and with ``apply`` carry out) the removal of unreferenced pipeline AMIs."""
    from pipeline.core.errors import InputError

    if keep < 1:
        raise InputError(f"prune: --keep {keep}: keep at least the newest build (1 or more)")
    if older_than_days < 0:
        raise InputError(f"prune: --older-than {older_than_days}: expected 0 or more days")
    result = PruneResult(applied=apply, keep=keep, older_than_days=older_than_days,
                         deprecate=deprecate)
    now = utc_now()
    cutoff = now - _dt.timedelta(days=older_than_days)

    # Which builds to keep: the newest `keep` build ids per image name, across regions.
    images_by_region = {r: _pipeline_images(clients.client("ec2", region=r))
                        for r in _regions(settings)}
    builds: dict[str, dict[str, _dt.datetime]] = defaultdict(dict)
    for region_images in images_by_region.values():
        for img in region_images:
            t = tags.from_tag_list(img.get("Tags"))
            name, bid = t.get(tags.IMAGE_NAME, img.get("Name", "")), t.get(tags.BUILD_ID, "")
            created = _parse_time(img["CreationDate"])
            builds[name][bid] = max(created, builds[name].get(bid, created))
    kept_builds = {name: set(sorted(b, key=lambda k: b[k], reverse=True)[:keep])
                   for name, b in builds.items()}

    for region, region_images in images_by_region.items():
        _prune_region(settings, clients, region, region_images, kept_builds, cutoff, now,
                      result)
    if apply:
        _forget_removed_builds(settings, clients, result)
    return result


def _forget_removed_builds(settings: Settings, clients: Clients, result: PruneResult) -> None:
    """Delete the durable record of every build whose AMIs are all gone now."""
    from pipeline.lineage import store as lineage

    by_build: dict[tuple[str, str], list[ImageDecision]] = defaultdict(list)
    for d in result.images:
        by_build[(d.image_name, d.build_id)].append(d)
    for (image_name, build_id), decisions in by_build.items():
        if build_id and all(d.action == "deregister" and d.done for d in decisions):
            try:
                lineage.delete_build_record(settings, clients, image_name, build_id)
            except Exception as err:  # noqa: BLE001 - the AMIs are gone; report, go on
                log.warning("build %s: AMIs removed but its record stays: %s", build_id, err)


def _prune_region(settings: Settings, clients: Clients, region: str,
                  region_images: list[dict[str, Any]], kept_builds: dict[str, set[str]],
                  cutoff: _dt.datetime, now: _dt.datetime, result: PruneResult) -> None:
    ec2 = clients.client("ec2", region=region)
    ssm = clients.client("ssm", region=region)
    apply = result.applied

    # 1. Template versions: every version of every template references its AMI, except
    #    those this run deletes (old versions of configured templates).
    configured = {lt.name for lt in settings.launch_templates}
    refs: dict[str, list[str]] = defaultdict(list)
    planned: set[str] = set()    # dry run: templates whose old versions would be deleted
    for lt in _all_templates(ec2):
        name, tid = lt["LaunchTemplateName"], lt["LaunchTemplateId"]
        default, latest = int(lt["DefaultVersionNumber"]), int(lt["LatestVersionNumber"])
        versions = _template_versions(ec2, tid, name, default)
        removable: set[int] = set()
        if name in configured:
            newest = {v.version for v in sorted(versions, key=lambda v: v.version,
                                                reverse=True)[:result.keep]}
            for v in versions:
                if v.version in newest or v.version in (default, latest):
                    why = "default version" if v.version == default else (
                        "latest version" if v.version == latest else
                        f"one of the newest {result.keep}")
                    result.versions.append(VersionDecision(name, tid, region, v.version,
                                                           v.image_id, "keep", why))
                elif v.created > cutoff:
                    result.versions.append(VersionDecision(
                        name, tid, region, v.version, v.image_id, "keep",
                        f"younger than {result.older_than_days} days"))
                else:
                    removable.add(v.version)
            removable = _delete_versions(clients, configured, name, tid, region, versions,
                                         removable, apply, result)
            if removable and not apply:
                planned.add(tid)
        for v in versions:
            if v.version in removable or not v.image_id:
                continue
            image = v.image_id
            if ssm_reference(image) is not None:
                image = _resolve_ssm(ssm, image) or ""
            if image:
                refs[image].append(f"launch template {name} version {v.version}")

    # 2. SSM pointers under our prefix.
    try:
        pages = ssm.get_paginator("get_parameters_by_path").paginate(
            Path=settings.ssm_prefix, Recursive=True)
        for page in pages:
            for p in page.get("Parameters", []):
                if is_ami_id(p.get("Value")):
                    refs[p["Value"]].append(f"SSM pointer {p['Name']}")
    except (ClientError, BotoCoreError) as err:
        log.warning("reading SSM pointers under %s in %s: %s", settings.ssm_prefix, region, err)
        refs["*"].append(f"SSM pointers unreadable ({error_code(err)})")

    # Candidates: builds beyond retention and old enough.
    candidates: list[tuple[dict[str, Any], str, str, str]] = []
    for img in sorted(region_images, key=lambda i: i["CreationDate"], reverse=True):
        t = tags.from_tag_list(img.get("Tags"))
        name, bid = t.get(tags.IMAGE_NAME, img.get("Name", "")), t.get(tags.BUILD_ID, "")
        created = _parse_time(img["CreationDate"])
        base = (img["ImageId"], region, img.get("Name", ""), name, bid, created.isoformat())
        if bid in kept_builds.get(name, set()):
            result.images.append(ImageDecision(*base, "keep",
                                               f"one of the newest {result.keep} builds"))
        elif created > cutoff:
            result.images.append(ImageDecision(*base, "keep",
                                               f"younger than {result.older_than_days} days"))
        else:
            candidates.append((img, name, bid, created.isoformat()))
    if not candidates:
        return

    # 3. Instances that are not terminated, and 4. AWS's own reference check.
    ids = [c[0]["ImageId"] for c in candidates]
    for res in _pages(ec2.describe_instances, "Reservations",
                      Filters=[{"Name": "image-id", "Values": ids},
                               {"Name": "instance-state-name", "Values": _LIVE_STATES}]):
        for inst in res.get("Instances", []):
            refs[inst["ImageId"]].append(f"instance {inst['InstanceId']}")
    try:
        for image, found in image_references(clients, region, ids).items():
            # In a dry run AWS still sees the versions this run would delete; our own
            # listing of every version of those templates is the complete answer there.
            found = [f for f in found if not any(f.endswith(f"launch-template/{t}")
                                                 for t in planned)]
            refs[image].extend(f"DescribeImageReferences: {f}" for f in found)
    except Exception as err:  # noqa: BLE001 - any failure means: assume referenced
        refs["*"].append(f"DescribeImageReferences unavailable ({err})")

    in_use = {s for img in _all_own_images(ec2) if img["ImageId"] not in ids
              for s in _snapshots_of(img)}
    own_snaps = _own_snapshots(ec2, [s for c in candidates for s in _snapshots_of(c[0])])
    for img, name, bid, stamp in candidates:
        base = (img["ImageId"], region, img.get("Name", ""), name, bid, stamp)
        guard = cleanup.deregistration_protection(img)
        if guard:
            result.images.append(ImageDecision(
                *base, "keep", f"protected against deregistration ({guard})"))
            continue
        reasons = refs.get(img["ImageId"]) or refs.get("*")
        if reasons:
            result.images.append(ImageDecision(*base, "keep",
                                               "referenced by " + "; ".join(reasons)))
            continue
        snaps = tuple(s for s in _snapshots_of(img) if s in own_snaps and s not in in_use)
        result.images.append(_remove_image(clients, region, img, base, snaps, now, result))


def _remove_image(clients: Clients, region: str, img: dict[str, Any],
                  base: tuple[str, str, str, str, str, str], snaps: tuple[str, ...],
                  now: _dt.datetime, result: PruneResult) -> ImageDecision:
    """Deprecate, or deregister and delete the snapshots (or only plan it in a dry run).

    Removal goes through :mod:`pipeline.aws.cleanup`: the AMI must still carry the build
    id it was chosen by (a fresh describe by id), the snapshots too or be behind it."""
    ec2 = clients.client("ec2", region=region)
    image_id, apply = img["ImageId"], result.applied
    failure: str | None = None
    if result.deprecate:
        deprecated = img.get("DeprecationTime")
        if deprecated:
            return ImageDecision(*base, "keep", f"already deprecated at {deprecated}")
        if apply:
            at = (now + _dt.timedelta(minutes=2)).replace(second=0, microsecond=0)
            failure = _try(ec2.enable_image_deprecation, ImageId=image_id, DeprecateAt=at)
        return ImageDecision(*base, "deprecate", "unreferenced, beyond retention", (),
                             apply and not failure, failure)
    if not apply:
        return ImageDecision(*base, "deregister", "unreferenced, beyond retention", snaps)
    owner = cleanup.Owner(base[4], frozenset(("snapshot", s) for s in snaps))
    try:
        removals = cleanup.deregister_images(clients, region, owner, [image_id],
                                             with_snapshots=True)
    except (ClientError, BotoCoreError, PipelineError) as err:
        failure = f"{error_code(err) or type(err).__name__}: {err}"
        return ImageDecision(*base, "deregister", "unreferenced, beyond retention", snaps,
                             False, failure)
    mine = [r for r in removals if r.kind == "image" and r.id == image_id]
    if mine and mine[0].outcome == "kept":         # protected since it was listed
        return ImageDecision(*base, "keep", mine[0].note or "protected against deregistration")
    failure = next((r.error for r in removals if not r.ok), None)
    deleted = tuple(r.id for r in removals if r.kind == "snapshot"
                    and r.outcome in ("removed", "gone"))
    kept = tuple(r.id for r in removals if r.kind == "snapshot" and r.outcome == "kept")
    return ImageDecision(*base, "deregister", "unreferenced, beyond retention",
                         deleted, not failure, failure, kept)


def _own_snapshots(ec2: Any, snapshot_ids: list[str]) -> set[str]:
    if not snapshot_ids:
        return set()
    found: set[str] = set()
    for snap_id in snapshot_ids:
        try:
            resp = ec2.describe_snapshots(OwnerIds=["self"], SnapshotIds=[snap_id])
            found.update(s["SnapshotId"] for s in resp.get("Snapshots", []))
        except ClientError as err:
            if error_code(err) != "InvalidSnapshot.NotFound":
                raise
    return found


def _first_error(fn: Callable[[], list[cleanup.Removal]]) -> str | None:
    """Run one cleanup call; the first failure (or refusal) as text, else None."""
    try:
        return next((r.error for r in fn() if not r.ok), None)
    except (ClientError, BotoCoreError, PipelineError) as err:
        return f"{error_code(err) or type(err).__name__}: {err}"


def _delete_versions(clients: Clients, configured: set[str], name: str, tid: str,
                     region: str, versions: list[_TemplateVersion], removable: set[int],
                     apply: bool, result: PruneResult) -> set[int]:
    """Delete (or plan) ``removable`` versions; the ones that are gone (or would be)."""
    by_number = {v.version: v for v in versions}
    numbers = sorted(removable)
    gone: set[int] = set()
    errors: dict[int, str] = {}
    if apply and numbers:
        try:
            outcome = cleanup.delete_launch_template_versions(
                clients, region, tid, numbers, managed_names=configured)
        except (ClientError, BotoCoreError, PipelineError) as err:
            outcome = {n: f"{error_code(err) or type(err).__name__}: {err}" for n in numbers}
        gone = {n for n, e in outcome.items() if e is None}
        errors = {n: e for n, e in outcome.items() if e is not None}
    elif not apply:
        gone = set(numbers)
    for n in numbers:
        v = by_number[n]
        result.versions.append(VersionDecision(
            name, tid, region, n, v.image_id, "delete",
            f"beyond the newest {result.keep}, not default or latest",
            done=apply and n in gone, error=errors.get(n)))
    return gone


# --------------------------------------------------------------------------- reap


#: The one place reap reads the clock from the environment: ``PIPELINE_NOW`` (ISO 8601,
#: UTC) moves it (tests, "what would reap do at 14:05"); ``--now`` does the same per call.
NOW_ENV = "PIPELINE_NOW"


def reap_now(now: _dt.datetime | str | None = None) -> _dt.datetime:
    """The clock reap decides by: ``now``, else ``$PIPELINE_NOW``, else the real time."""
    import os

    value = now if now is not None else os.environ.get(NOW_ENV) or None
    if value is None:
        return utc_now()
    return _parse_time(value)


def _build_time(build_id: str) -> _dt.datetime | None:
    stamp = build_time_text(build_id)
    if stamp is None:
        return None
    return _dt.datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=_dt.timezone.utc)


def _build_statuses(settings: Settings, clients: Clients) -> dict[str, str]:
    from pipeline.lineage import store as lineage

    return {r.build_id: r.status
            for r in lineage.load_builds(settings, clients, include_untracked=False)}


@dataclass(frozen=True, slots=True)
class ReapWaiting:
    """Resources of one build kept until its grace period is over."""

    build_id: str
    until: str                        # ISO time, UTC
    resources: tuple[str, ...]        # "instance i-...", "key-pair packer_..."
    reason: str

    def sentence(self) -> str:
        until = _parse_time(self.until)
        shown = ", ".join(r.replace("-", " ", 1) if r.startswith(("key-pair", "security-group",
                                                                   "s3-object", "import-task"))
                          else r for r in self.resources[:8])
        more = f" and {len(self.resources) - 8} more" if len(self.resources) > 8 else ""
        return (f"{len(self.resources)} resource(s) of build {self.build_id} kept until "
                f"{until:%Y-%m-%d %H:%M} UTC ({self.reason}): {shown}{more}")


def _journals(settings: Settings, clients: Clients) -> list[Any]:
    from pipeline.aws.journal import load_journals

    return load_journals(clients, settings.ssm_prefix, region=settings.aws.region)


_PRODUCTS = ("image", "image-name", "snapshot")   # a kept upload is in the journal's keep


def reap(settings: Settings, clients: Clients, apply: bool = False,
         grace_hours: float = 6.0, now: _dt.datetime | str | None = None) -> ReapResult:
    """Plan (and with ``apply`` remove) everything left by runs that did not succeed.

    Sources: each run's creation journal (``<ssm_prefix>/_journal/...``: what Packer does
    not tag, upload ids, import tasks) and every resource tagged with a build id. A
    build's resources go when its record says ``failed``, or when its journal is
    ``failed``/``open`` (a killed run) or it has no record, and the grace period since
    its last sign of life has passed; a succeeded build keeps its products and only its
    temporaries left in the journal go. What is still inside the grace is reported in
    :attr:`ReapResult.waiting`. Removal goes through :mod:`pipeline.aws.cleanup`.
    """
    from pipeline.aws import cleanup

    result = ReapResult(applied=apply, grace_hours=grace_hours)
    statuses = _build_statuses(settings, clients)
    clock, grace = reap_now(now), _dt.timedelta(hours=grace_hours)
    result.now = clock.isoformat()
    journals = {j.build_id: j for j in _journals(settings, clients)}

    found: list[tuple[str, str, str, str]] = []     # kind, id, region, build id
    for region in _regions(settings):
        found += _tagged_ec2(clients.client("ec2", region=region), region)
    buckets = sorted({b for b in [settings.s3_bucket] +
                      [i.import_.bucket for i in settings.images if i.import_] if b})
    s3 = clients.client("s3")
    for bucket in buckets:
        found += _tagged_objects(s3, bucket)

    per_build: dict[str, list[cleanup.Resource]] = defaultdict(list)
    for bid, journal in journals.items():
        state = statuses.get(bid) or journal.state
        # A succeeded run's products (AMIs, snapshots; a kept upload: keep) are never reaped,
        # even when it died after its record and before closing its journal.
        entries = [r for r in journal.leftovers() if r.kind not in _PRODUCTS] \
            if state == "succeeded" else journal.resources
        per_build[bid] += list(entries)
    resolved: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for kind, rid, region, bid in found:
        if bid and statuses.get(bid) != "succeeded" and \
                (bid not in journals or journals[bid].state != "succeeded"):
            if kind in ("snapshot-behind", "task-image", "task-snapshot"):
                # untagged, but behind the build's own AMI or made by its import task
                kind = "image" if kind == "task-image" else "snapshot"
                resolved[bid].add((kind, rid))
            per_build[bid].append(cleanup.Resource(kind, rid, region))

    # Packer's temporary group is journaled by the name it printed: resolve it to its id
    # (a filtered describe); the id then counts as journaled for that build.
    for bid, rs in per_build.items():
        for r in [r for r in rs if r.kind == "security-group-name"]:
            try:
                ids = cleanup.security_group_ids(clients, r.region or None, [r.id])
            except (ClientError, BotoCoreError) as err:
                log.warning("could not look up security group %s: %s", r.id, err)
                continue
            for gid in ids.values():
                resolved[bid].add(("security-group", gid))
                rs.append(cleanup.Resource("security-group", gid, r.region))
        names = [r for r in rs if r.kind == "image-name"]
        for r in names:
            try:
                images = cleanup.image_ids_named(clients, r.region or None, [r.id])
            except (ClientError, BotoCoreError) as err:
                log.warning("could not look up AMIs named %s: %s", r.id, err)
                continue
            kept = {k.id for k in journals[bid].keep} if bid in journals else set()
            for image_id in [i for i in images if i not in kept]:   # never a product
                resolved[bid].add(("image", image_id))
                rs.append(cleanup.Resource("image", image_id, r.region))
        per_build[bid] = [r for r in rs if r.kind not in ("security-group-name", "image-name")]
    all_resources = [r for rs in per_build.values() for r in rs]
    alive = cleanup.existing(clients, all_resources) if all_resources else set()
    decided: list[ReapItem] = []
    plans: dict[str, list[cleanup.Resource]] = {}
    for bid in sorted(per_build):
        resources = [r for r in dict.fromkeys(per_build[bid]) if (r.kind, r.id) in alive]
        journal = journals.get(bid)
        if not resources:
            if journal is not None and (journal.state != "open"
                                        or clock - journal.updated >= grace):
                result.journals_done.append(journal.name)
            continue
        why, until = _decide(bid, statuses, journal, clock, grace)
        if why is None:
            if until is not None:
                result.waiting.append(ReapWaiting(
                    bid, until.isoformat(), tuple(f"{r.kind} {r.id}" for r in resources),
                    _status_text(bid, statuses, journal)))
            continue
        result.builds[bid] = statuses.get(bid) or (journal.state if journal else "unknown")
        guarded = _protected(clients, resources)
        plans[bid] = [r for r in resources if (r.kind, r.id) not in guarded]
        decided += [ReapItem(r.kind, r.id, r.region or "-", bid, why,
                             kept=guarded.get((r.kind, r.id))) for r in resources]
        if journal is not None and not guarded:     # a kept AMI stays in its journal
            result.journals_done.append(journal.name)

    for bucket in buckets:
        result.unowned += _stale_multipart(s3, bucket, clock, grace,
                                           {r.id for rs in per_build.values() for r in rs})

    if apply:
        decided = _reap_apply(clients, plans, journals, resolved, decided, result)
    result.items = decided
    return result


def _protected(clients: Clients, resources: list[cleanup.Resource]) -> dict[tuple[str, str], str]:
    """{(kind, id): why} of the AMIs among ``resources`` protected against deregistration
    (a fresh describe by id) and of the snapshots behind them: reap never tries those."""
    out: dict[tuple[str, str], str] = {}
    for region in sorted({r.region for r in resources if r.kind == "image"}):
        ids = [r.id for r in resources if r.kind == "image" and r.region == region]
        try:
            found = cleanup.protected_images(clients, region or None, ids)
        except (ClientError, BotoCoreError) as err:
            log.warning("could not read deregistration protection of %s: %s", ids, err)
            continue
        for image_id, (state, snaps) in found.items():
            out[("image", image_id)] = (f"protected against deregistration ({state}); "
                                        "disable the protection to let reap remove it")
            for snap in snaps:
                out[("snapshot", snap)] = f"behind {image_id}, which is protected against " \
                    "deregistration"
    return out


def _status_text(bid: str, statuses: dict[str, str], journal: Any) -> str:
    if statuses.get(bid):
        return f"build {statuses[bid]}"
    if journal is not None:
        return f"run journal {journal.state}, last written {journal.updated:%H:%M} UTC"
    return "no build record: maybe still running"


def _decide(bid: str, statuses: dict[str, str], journal: Any, now: _dt.datetime,
            grace: _dt.timedelta) -> tuple[str | None, _dt.datetime | None]:
    """(why the resources may go now, or None) and, when not yet, until when they wait."""
    status = statuses.get(bid)
    if status == "failed":
        return "its build failed", None
    hours = f"{grace.total_seconds() / 3600:g} h"
    started = _build_time(bid)
    seen = [t for t in (started, journal.updated if journal is not None else None) if t]
    if not seen:
        return None, None            # neither a time nor a journal: never touch
    last = max(seen)
    if now - last < grace:
        return None, last + grace
    if status == "succeeded" or (journal is not None and journal.state == "succeeded"):
        return f"temporaries of a succeeded run, still there {hours} after it", None
    if journal is not None:
        return (f"its run journal is {journal.state!r} and was last written more than "
                f"{hours} ago (the run is gone)"), None
    return (f"build {'never finished' if status else 'has no record'} and started more "
            f"than {hours} ago"), None


def _tagged_ec2(ec2: Any, region: str) -> list[tuple[str, str, str, str]]:
    flt = [{"Name": "tag-key", "Values": [tags.BUILD_ID]}]

    def bid(obj: dict[str, Any]) -> str:
        return tags.from_tag_list(obj.get("Tags")).get(tags.BUILD_ID, "")

    out = []
    for res in _pages(ec2.describe_instances, "Reservations", Filters=flt):
        for inst in res.get("Instances", []):
            if inst.get("State", {}).get("Name") != "terminated":
                out.append(("instance", inst["InstanceId"], region, bid(inst)))
    for vol in _pages(ec2.describe_volumes, "Volumes", Filters=flt):
        out.append(("volume", vol["VolumeId"], region, bid(vol)))
    behind: dict[str, str] = {}          # snapshots behind the build's AMIs
    for img in _pages(ec2.describe_images, "Images", Owners=["self"], Filters=flt):
        out.append(("image", img["ImageId"], region, bid(img)))
        behind.update({s: bid(img) for s in _snapshots_of(img)})
    for snap in _pages(ec2.describe_snapshots, "Snapshots", OwnerIds=["self"], Filters=flt):
        out.append(("snapshot", snap["SnapshotId"], region, bid(snap)))
        behind.pop(snap["SnapshotId"], None)
    for snap_id in sorted(_own_snapshots(ec2, sorted(behind))):
        out.append(("snapshot-behind", snap_id, region, behind[snap_id]))
    for sg in _pages(ec2.describe_security_groups, "SecurityGroups", Filters=flt):
        out.append(("security-group", sg["GroupId"], region, bid(sg)))
    for kp in ec2.describe_key_pairs(Filters=flt).get("KeyPairs", []):
        out.append(("key-pair", kp["KeyName"], region, bid(kp)))
    out += _tagged_import_tasks(ec2, region)
    return out


def _tagged_import_tasks(ec2: Any, region: str) -> list[tuple[str, str, str, str]]:
    """VM Import tasks carrying a build id (a run killed before ImportImage answered
    never learnt the id): active ones, and the AMI and snapshots of finished ones."""
    out: list[tuple[str, str, str, str]] = []
    try:
        tasks = list(_pages(ec2.describe_import_image_tasks, "ImportImageTasks",
                            Filters=[{"Name": "task-state",
                                      "Values": ["active", "completed"]}]))
    except (ClientError, BotoCoreError) as err:
        log.info("import tasks not listed in %s: %s", region, error_code(err) or err)
        return out
    for task in tasks:
        bid = tags.from_tag_list(task.get("Tags")).get(tags.BUILD_ID, "")
        if not bid:
            continue
        if task.get("Status") == "active":
            out.append(("import-task", task["ImportTaskId"], region, bid))
        elif task.get("ImageId"):
            out.append(("task-image", str(task["ImageId"]), region, bid))
        for d in task.get("SnapshotDetails") or ():
            if d.get("SnapshotId"):
                out.append(("task-snapshot", d["SnapshotId"], region, bid))
    return out


def _tagged_objects(s3: Any, bucket: str) -> list[tuple[str, str, str, str]]:
    """Uploads carrying a build id (object tag or ``build-id`` metadata)."""
    out = []
    try:
        pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                   Prefix=UPLOAD_PREFIX))
    except ClientError as err:
        if error_code(err) == "NoSuchBucket":
            return []
        raise
    for page in pages:
        for obj in page.get("Contents", []):
            key = obj["Key"]
            tagset = s3.get_object_tagging(Bucket=bucket, Key=key).get("TagSet", [])
            build = tags.from_tag_list(tagset).get(tags.BUILD_ID)
            if not build:
                meta = s3.head_object(Bucket=bucket, Key=key).get("Metadata", {})
                build = {k.lower(): v for k, v in meta.items()}.get("build-id")
            if build:
                out.append(("s3-object", f"s3://{bucket}/{key}", "s3", build))
    return out


def _stale_multipart(s3: Any, bucket: str, now: _dt.datetime, grace: _dt.timedelta,
                     journaled: set[str]) -> list[str]:
    """Open uploads older than the grace that no run's journal records: S3 cannot tag
    them, so nothing proves they are ours; reported (with the command), never aborted."""
    out = []
    try:
        uploads = list(_pages(s3.list_multipart_uploads, "Uploads", token="NextKeyMarker",
                              Bucket=bucket, Prefix=UPLOAD_PREFIX))
    except ClientError as err:
        if error_code(err) == "NoSuchBucket":
            return []
        raise
    for up in uploads:
        url = f"s3://{bucket}/{up['Key']}#{up['UploadId']}"
        started = _parse_time(up["Initiated"])
        if url not in journaled and now - started >= grace:
            out.append(f"{url} open since {started:%Y-%m-%d %H:%M} UTC, recorded by no run's "
                       f"journal: left alone (abort it with `aws s3api abort-multipart-upload "
                       f"--bucket {bucket} --key {up['Key']} --upload-id {up['UploadId']}` "
                       "if it is yours)")
    return out


def _reap_apply(clients: Clients, plans: dict[str, list[Any]], journals: dict[str, Any],
                resolved: dict[str, set[tuple[str, str]]], decided: list[ReapItem],
                result: ReapResult) -> list[ReapItem]:
    """Remove each build's resources through the cleanup door (dependency order there);
    a journal goes once nothing it lists is left."""
    from dataclasses import replace

    from pipeline.aws import cleanup

    outcome: dict[tuple[str, str], cleanup.Removal] = {}
    for bid, resources in plans.items():
        journal = journals.get(bid)
        owner = journal.owner() if journal is not None else cleanup.Owner(bid)
        owner = cleanup.Owner(bid, owner.journal | frozenset(resolved.get(bid, ())))
        for removal in cleanup.remove(clients, owner, resources):
            outcome[(removal.kind, removal.id)] = removal
    out = []
    for item in decided:
        if item.kept:
            out.append(item)
            continue
        r = outcome.get((item.kind, item.resource_id))
        if r is not None and r.outcome == "kept":     # protected since it was listed
            out.append(replace(item, kept=r.note or "kept"))
            continue
        out.append(replace(item, done=bool(r and r.ok),
                           error=None if r and r.ok else (r.error if r else "not attempted")))
    failed_builds = {i.build_id for i in out if i.error or i.kept}
    done_journals = []
    for name in result.journals_done:
        journal = next((j for j in journals.values() if j.name == name), None)
        if journal is None or journal.build_id in failed_builds:
            continue
        try:
            cleanup.delete_parameters(clients, None, cleanup.Owner(journal.build_id), [name])
            done_journals.append(name)
        except (ClientError, BotoCoreError) as err:
            log.warning("could not delete the journal %s: %s", name, err)
    result.journals_done = done_journals
    return out
