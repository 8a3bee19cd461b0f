"""Multi-region distribution of a build.

:func:`distribute` copies a build's AMI from the region it was built in (the first of
``images[].regions``, else ``aws.region``) to every other configured region, encrypted
with that region's KMS key when ``kms_key_ids`` names one, tags every copy and its
snapshots with the same lineage, waits until the image is ``available`` everywhere, then
shares it with the configured accounts (launch permission plus the snapshots'
createVolumePermission). It never makes an image public: ``all`` in ``share_with`` is
refused before anything is copied. When any step fails, the copies this run made are
deregistered and their snapshots deleted, so nothing is left half-distributed.

:func:`pipeline.publish.gate.gate_publication` (re-exported here) is the gate in front
of publication.
"""
from __future__ import annotations

import logging
import secrets
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, cast

from botocore.exceptions import ClientError

from pipeline.core import tags as T
from pipeline.aws.clients import Clients, call, error_code
from pipeline.aws.images import snapshots_of
from pipeline.core.config import ImageSettings, Settings
from pipeline.core.errors import AwsCallError, ConfigError, InputError, OperationFailed
from pipeline.lineage.store import lineage_tags, record_build, tag_build
from pipeline.core.progress import NO_PROGRESS, Progress
from pipeline.core.records import BuildRecord
from pipeline.aws.limits import (QUOTA_CODES, Limits, backoff_call, first_error, limits_for,
                                 per_region, region_slot)
from pipeline.publish.gate import (FIRST_POLL, WAIT_DELAY, WAIT_TIMEOUT, GateResult,
                                   PublicationGated, find_build_image, gate_publication,
                                   image_regions, move_pointers, point_channel)

__all__ = [
    "COPIED_FROM",
    "PUBLIC_GROUPS",
    "DistributionPlan",
    "GateResult",
    "PublicationGated",
    "plan_distribution",
    "check_before_build",
    "distribute",
    "gate_publication",
    "move_pointers",
    "point_channel",
]

log = logging.getLogger(__name__)

#: On a copy: ``<source-region>/<source-ami>`` it was copied from.
COPIED_FROM = T.PREFIX + "copied-from"
PUBLIC_GROUPS = frozenset({"all"})


@dataclass(frozen=True, slots=True)
class DistributionPlan:
    """Where a build goes: checked before anything is created."""

    image_name: str
    home_region: str
    source_image_id: str
    target_regions: tuple[str, ...]
    kms_key_ids: dict[str, str]
    share_with: tuple[str, ...]


# --------------------------------------------------------------------------- planning


def _image_settings(settings: Settings, name: str) -> ImageSettings:
    try:
        return settings.image(name)
    except ConfigError as err:
        raise InputError(f"build image {name!r} is not configured: {err.message}; "
                         "add it to images: in the configuration") from err


def plan_distribution(settings: Settings, record: BuildRecord,
                      home_region: str | None = None) -> DistributionPlan:
    """Check the configuration and the record; raise :class:`InputError` (exit 2) when
    distribution cannot go ahead. Makes no AWS call."""
    img = _image_settings(settings, record.image_name)
    where = f"images[{record.image_name}]"
    public = [a for a in img.share_with if str(a).strip().lower() in PUBLIC_GROUPS]
    if public:
        raise InputError(f"{where}.share_with: {public[0]!r} would make the AMI public; this tool "
                         "never does that: list 12-digit account ids instead")
    bad = [a for a in img.share_with if not (str(a).isdigit() and len(str(a)) == 12)]
    if bad:
        raise InputError(f"{where}.share_with: {bad[0]!r} is not a 12-digit AWS account id")
    regions = image_regions(img, settings.aws.region)
    stray = sorted(set(img.kms_key_ids) - set(regions))
    if stray:
        raise InputError(f"{where}.kms_key_ids: region {stray[0]} is not in regions "
                         f"{regions}; add it to regions or remove the key")
    if home_region is None:
        home_region = next((r for r in regions if r in record.image_ids),
                           next(iter(sorted(record.image_ids)), None))
    if not home_region or home_region not in record.image_ids:
        raise InputError(f"build {record.build_id} has no AMI to distribute; "
                         "import or bake it first")
    return DistributionPlan(
        image_name=record.image_name, home_region=home_region,
        source_image_id=record.image_ids[home_region],
        target_regions=tuple(r for r in regions if r != home_region),
        kms_key_ids=dict(img.kms_key_ids), share_with=tuple(img.share_with))


# --------------------------------------------------------------------------- AWS steps


def _key_meta(clients: Clients, region: str, key: str) -> dict[str, Any] | None:
    """DescribeKey, or None when this caller may not read the key (checks then skip)."""
    try:
        return dict(clients.client("kms", region=region).describe_key(KeyId=key)["KeyMetadata"])
    except ClientError as err:
        if error_code(err) in ("NotFoundException", "InvalidArnException"):
            raise InputError(f"kms_key_ids.{region}: key {key} does not exist in {region}; "
                             "give a key id, alias or ARN from that region") from err
        log.warning("cannot describe KMS key %s in %s (%s); skipping its checks", key, region,
                    error_code(err))
        return None


def _check_keys_and_sharing(clients: Clients, plan: DistributionPlan,
                            source: dict[str, Any]) -> None:
    """Refuse (exit 2, before any copy) what AWS would refuse half-way.

    Every configured key must exist and be enabled. An encrypted image can be shared
    only when every copy uses a customer managed key: snapshots encrypted with the AWS
    managed key (``aws/ebs``) cannot be shared, and a copy made without ``KmsKeyId`` of an
    encrypted source uses the target region's AWS managed key.
    """
    for region in plan.target_regions:
        key = plan.kms_key_ids.get(region)
        meta = _key_meta(clients, region, key) if key else None
        if meta is not None and meta.get("KeyState", "Enabled") != "Enabled":
            raise InputError(f"kms_key_ids.{region}: key {key} is {meta.get('KeyState')}; "
                             "enable it or configure another key")
        if meta is not None and plan.share_with and meta.get("KeyManager") == "AWS":
            raise InputError(f"kms_key_ids.{region}: {key} is an AWS managed key, and images "
                             "encrypted with it cannot be shared; use a customer managed key")
    if not plan.share_with:
        return
    snaps = _snapshots_of(source)
    if not snaps:
        return
    ec2 = clients.client("ec2", region=plan.home_region)
    described = call(ec2.describe_snapshots, SnapshotIds=snaps,
                     what=f"reading the snapshots of {plan.source_image_id}")["Snapshots"]
    encrypted = [s for s in described if s.get("Encrypted")]
    if not encrypted:
        return
    for snap in encrypted:
        meta = _key_meta(clients, plan.home_region, snap["KmsKeyId"]) if snap.get("KmsKeyId") else None
        if meta is not None and meta.get("KeyManager") == "AWS":
            raise InputError(f"{plan.source_image_id} is encrypted with the AWS managed key, "
                             "which cannot be shared; rebuild it with a customer managed key "
                             "(import.kms_key_id) or remove share_with")
    unkeyed = [r for r in plan.target_regions if r not in plan.kms_key_ids]
    if unkeyed:
        raise InputError(f"images[{plan.image_name}].kms_key_ids: {plan.source_image_id} is "
                         f"encrypted, so its copy in {unkeyed[0]} would use that region's AWS "
                         "managed key, which cannot be shared; configure a customer managed "
                         f"key for {', '.join(unkeyed)}")


_snapshots_of = snapshots_of


def _delete_copy(clients: Clients, region: str, image_id: str, build_id: str = "") -> None:
    """Deregister a copy this run started (this also stops a pending CopyImage) and
    delete its snapshots, through :mod:`pipeline.aws.cleanup` (the copy and the snapshots
    "Copied for DestinationAmi <copy>" are this run's)."""
    from pipeline.aws import cleanup

    ec2 = clients.client("ec2", region=region)
    snaps = _copy_snapshots(ec2, image_id)
    owner = cleanup.Owner(build_id or "unrecorded-run", frozenset(
        [("image", image_id)] + [("snapshot", s) for s in snaps]))
    resources = [cleanup.Resource("image", image_id, region)] + [
        cleanup.Resource("snapshot", s, region) for s in snaps]
    failed = [r for r in cleanup.remove(clients, owner, resources) if not r.ok]
    for r in failed:
        log.warning("could not remove %s %s of partial copy %s in %s: %s", r.kind, r.id,
                    image_id, region, r.error)
    if not failed:
        log.info("removed partial copy %s in %s", image_id, region)


def _copy_snapshots(ec2: Any, image_id: str) -> list[str]:
    """Snapshots CopyImage made for ``image_id``: AWS describes them as "Copied for
    DestinationAmi <ami> ...". A pending copy may not list them in its mappings yet."""
    try:
        found = ec2.describe_snapshots(OwnerIds=["self"], Filters=[
            {"Name": "description", "Values": [f"Copied for DestinationAmi {image_id}*"]}])
    except ClientError as err:
        log.warning("could not look for the snapshots of copy %s: %s", image_id, err)
        return []
    return [s["SnapshotId"] for s in found.get("Snapshots") or []
            if f"DestinationAmi {image_id} " in (s.get("Description") or "") + " "]


def _copy(clients: Clients, plan: DistributionPlan, record: BuildRecord, region: str,
          source: dict[str, Any]) -> str:
    ec2 = clients.client("ec2", region=region)
    tags = _copy_tags(plan, record)
    kwargs: dict[str, Any] = {
        "SourceRegion": plan.home_region, "SourceImageId": plan.source_image_id,
        "Name": source.get("Name") or record.build_id,
        "Description": (source.get("Description") or
                        f"{record.image_name} {record.build_id}")[:255],
        # Per run, not per build: botocore's retries of this call reuse it (idempotent),
        # while a rerun after an undo must not get the deregistered copy back.
        "ClientToken": f"{record.build_id}-{region}-{secrets.token_hex(4)}"[:64],
        "TagSpecifications": T.tag_specifications(tags, "image", "snapshot"),
    }
    key = plan.kms_key_ids.get(region)
    if key:
        kwargs.update(Encrypted=True, KmsKeyId=key)
    what = f"copying {plan.source_image_id} from {plan.home_region} to {region}"
    try:
        resp = call(ec2.copy_image, what=what, **kwargs)
    except AwsCallError as err:
        if err.__cause__ is None or error_code(err.__cause__) != "InvalidAMIName.Duplicate":
            raise
        # AMI names are unique per region: an older AMI there (say a copy kept after its
        # source was pruned) holds this name. Keep the copy findable: suffix the build id.
        log.info("%s: name %r is taken in %s; naming the copy after the build", what,
                 kwargs["Name"], region)
        kwargs["Name"] = f"{str(kwargs['Name'])[:128 - len(record.build_id) - 1]}-{record.build_id}"
        resp = call(ec2.copy_image, what=what, **kwargs)
    return str(resp["ImageId"])


def _tag_copy(clients: Clients, plan: DistributionPlan, record: BuildRecord, region: str,
              image_id: str) -> None:
    """Tag a copy at once (a pending AMI can be tagged): a rerun then finds it by its build
    id, and reap can find it, even if this run dies before the copy is available."""
    ec2 = clients.client("ec2", region=region)
    call(ec2.create_tags, Resources=[image_id], Tags=T.to_tag_list(_copy_tags(plan, record)),
         what=f"tagging the copy {image_id} in {region}")


def _copy_tags(plan: DistributionPlan, record: BuildRecord) -> dict[str, str]:
    tags = lineage_tags(record)
    tags[COPIED_FROM] = f"{plan.home_region}/{plan.source_image_id}"
    return tags


def _wait_available(clients: Clients, region: str, image_id: str, *, delay: float,
                    timeout: float) -> None:
    """Poll DescribeImages until the copy is ``available``: soon first (a small copy may
    finish in seconds), then backing off to ``delay``; a failed copy or ``timeout`` raises."""
    ec2 = clients.client("ec2", region=region)
    deadline = time.monotonic() + timeout
    polls = 0
    while True:
        img = (ec2.describe_images(ImageIds=[image_id]).get("Images") or [{}])[0]
        state = img.get("State", "unknown")
        if state == "available":
            return
        if state in ("failed", "deregistered", "error", "invalid", "disabled") or \
                time.monotonic() >= deadline:
            reason = img.get("StateReason") or {}
            raise OperationFailed(f"AMI {image_id} in {region} is {state!r}, not available, "
                                  f"after {timeout:.0f}s{': ' + reason.get('Message', '') if reason else ''}"
                                  "; rerun distribution later or check the copy in the console")
        time.sleep(min(delay, FIRST_POLL * 2 ** polls, max(0.0, deadline - time.monotonic())))
        polls += 1


def _share(clients: Clients, region: str, image_id: str, snapshots: list[str],
           accounts: tuple[str, ...]) -> None:
    ec2 = clients.client("ec2", region=region)
    perms = [{"UserId": a} for a in accounts]
    call(ec2.modify_image_attribute, ImageId=image_id, LaunchPermission={"Add": perms},
         what=f"sharing {image_id} in {region} with {', '.join(accounts)}")
    for snap in snapshots:
        call(ec2.modify_snapshot_attribute, SnapshotId=snap, Attribute="createVolumePermission",
             OperationType="add", UserIds=list(accounts),
             what=f"sharing snapshot {snap} of {image_id} in {region}")


def _unshare(clients: Clients, region: str, image_id: str, snapshots: list[str],
             accounts: tuple[str, ...]) -> None:
    ec2 = clients.client("ec2", region=region)
    try:
        ec2.modify_image_attribute(ImageId=image_id,
                                   LaunchPermission={"Remove": [{"UserId": a} for a in accounts]})
        for snap in snapshots:
            ec2.modify_snapshot_attribute(SnapshotId=snap, Attribute="createVolumePermission",
                                          OperationType="remove", UserIds=list(accounts))
    except ClientError as err:
        log.warning("could not withdraw sharing of %s in %s: %s", image_id, region, err)


def _describe(clients: Clients, region: str, image_id: str) -> dict[str, Any]:
    ec2 = clients.client("ec2", region=region)
    images = call(ec2.describe_images, ImageIds=[image_id],
                  what=f"describing {image_id} in {region}").get("Images") or []
    if not images:
        raise OperationFailed(f"AMI {image_id} is not in {region}")
    return dict(images[0])


# --------------------------------------------------------------------------- distribute


def distribute(settings: Settings, clients: Clients, record: BuildRecord, *,
               progress: Progress = NO_PROGRESS, wait_delay: float = WAIT_DELAY,
               timeout: float = WAIT_TIMEOUT) -> BuildRecord:
    """Copy the build's AMI to every configured region, tag, wait, share, record.

    Returns the record with ``image_ids``/``snapshot_ids`` for every region; it is
    written again with :func:`pipeline.lineage.store.record_build`. Running it again is
    cheap: regions that already hold this build are not copied twice.
    """
    plan = plan_distribution(settings, record)
    regions = [plan.home_region, *plan.target_regions]
    progress.start(len(regions), f"distributing {record.build_id}")
    with ExitStack() as undo:
        undo.callback(_restore_record, record, dict(record.image_ids),
                      {r: list(s) for r, s in record.snapshot_ids.items()})
        source = _describe(clients, plan.home_region, plan.source_image_id)
        _check_keys_and_sharing(clients, plan, source)
        limits = limits_for(settings.limits)
        _start_copies(clients, plan, record, source, undo, progress, limits)
        _in_every_region(lambda r: _wait_available(clients, r, record.image_ids[r],
                                                   delay=wait_delay, timeout=timeout),
                         regions, limits, progress=progress,
                         done=lambda r: f"{r}: {record.image_ids[r]} available")
        extra = {COPIED_FROM: f"{plan.home_region}/{plan.source_image_id}"}
        _in_every_region(lambda r: tag_build(clients, record, region=r, extra_tags=extra),
                         plan.target_regions, limits)  # + the snapshots
        if plan.share_with:
            for region in regions:
                ami = record.image_ids[region]
                snaps = record.snapshot_ids.get(region) or _snapshots_of(
                    _describe(clients, region, ami))
                record.snapshot_ids[region] = snaps
                undo.callback(_unshare, clients, region, ami, snaps, plan.share_with)
                _share(clients, region, ami, snaps, plan.share_with)
        record.extra["distributed_at"] = BuildRecord.now()
        record_build(settings, clients, record)
        undo.pop_all()
    progress.done()
    return record


def _start_copies(clients: Clients, plan: DistributionPlan, record: BuildRecord,
                  source: dict[str, Any], undo: ExitStack, progress: Progress,
                  limits: Limits) -> None:
    """Start the copy into every target region at once (at most ``region_workers``
    threads, each CopyImage holding one of the destination's concurrent-copy slots and
    backing off on the quota error), then register the undo of every copy started
    before raising the first failure, and tag the copies (again in parallel)."""

    def start(region: str) -> tuple[str, bool]:
        ec2 = clients.client("ec2", region=region)
        existing = call(find_build_image, ec2=ec2, build_id=record.build_id,
                        what=f"looking for build {record.build_id} in {region}")
        if existing is not None:
            return str(existing["ImageId"]), False
        with region_slot("CopyImage", region, limits.copy_image_per_region):
            return backoff_call(lambda: _copy(clients, plan, record, region, source),
                                codes=QUOTA_CODES, what=f"copying into {region}"), True

    outcomes = per_region(start, plan.target_regions, workers=limits.region_workers)
    created = []
    for o in outcomes:
        if o.error is None:
            image_id, new = cast("tuple[str, bool]", o.value)
            record.image_ids[o.region] = image_id
            if new:
                undo.callback(_delete_copy, clients, o.region, image_id, record.build_id)
                created.append(o.region)
            progress.status(f"{o.region}: {'copying as' if new else 'already holds'} {image_id}")
    err = first_error(outcomes)
    if err is not None:
        raise err
    _in_every_region(lambda r: _tag_copy(clients, plan, record, r, record.image_ids[r]),
                     created, limits)


def _in_every_region(fn: Any, regions: Any, limits: Limits, *, progress: Progress = NO_PROGRESS,
                     done: Any = None) -> None:
    """``fn(region)`` in every region in parallel (bounded); raise the first failure."""
    outcomes = per_region(fn, list(regions), workers=limits.region_workers)
    for o in outcomes:
        if o.error is None and done is not None:
            progress.advance(1)
            progress.status(done(o.region))
    err = first_error(outcomes)
    if err is not None:
        raise err


def _restore_record(record: BuildRecord, image_ids: dict[str, str],
                    snapshot_ids: dict[str, list[str]]) -> None:
    """Undo: the caller's record names only AMIs that still exist."""
    record.image_ids.clear()
    record.image_ids.update(image_ids)
    record.snapshot_ids.clear()
    record.snapshot_ids.update(snapshot_ids)


# --------------------------------------------------------------------------- before a build


def check_before_build(settings: Settings, clients: Clients, image: ImageSettings) -> None:
    """Every check :func:`distribute` will run for a build of ``image``, before it is
    built (rebuild calls this before baking or importing): sharing, regions and KMS
    keys (exist, enabled, shareable). A baked image is encrypted (``encrypt_boot``),
    so with ``share_with`` every region needs a customer managed key. Read-only (KMS
    DescribeKey per configured key); raises :class:`InputError`, nothing created."""
    regions = image_regions(image, settings.aws.region)
    placeholder = BuildRecord(build_id="(next build)", image_name=image.name, method="check",
                              image_ids={regions[0]: "ami-00000000000000000"})
    plan = plan_distribution(settings, placeholder)
    _check_keys_and_sharing(clients, plan, {})
    home_key = image.kms_key_ids.get(plan.home_region)
    if home_key:
        meta = _key_meta(clients, plan.home_region, home_key)
        if meta is not None and meta.get("KeyState", "Enabled") != "Enabled":
            raise InputError(f"images[{image.name}].kms_key_ids.{plan.home_region}: key "
                             f"{home_key} is {meta.get('KeyState')}; enable it or configure "
                             "another key")
    if image.bake is not None and plan.share_with:
        unkeyed = [r for r in regions if r not in image.kms_key_ids]
        if unkeyed:
            raise InputError(f"images[{image.name}]: a baked AMI is encrypted, and share_with "
                             f"needs a customer managed key in every region; configure "
                             f"kms_key_ids for {', '.join(unkeyed)} or remove share_with")
