"""The gate in front of publication, and the channel pointers it guards.

:func:`gate_publication` is what publish, promote, rollback and rebuild call before they
write a launch template version or move an SSM pointer: it passes only when the build's
AMI exists and is ``available`` in every configured region, so a node never resolves a
half-copied release. :func:`move_pointers` and :func:`point_channel` move the channel
pointers all or nothing.
"""
from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from botocore.exceptions import ClientError

from pipeline.aws.clients import Clients, error_code
from pipeline.aws.ssm import Pointer, get_pointer, pointer_name, put_pointer
from pipeline.core import tags as T
from pipeline.core.config import ImageSettings, Settings
from pipeline.core.errors import AwsCallError, InputError, PublicationGated
from pipeline.core.progress import NO_PROGRESS, Progress, count_label
from pipeline.core.records import BuildRecord
from pipeline.publish.transaction import Transaction

__all__ = ["GateResult", "PublicationGated", "gate_publication", "move_pointers",
           "point_channel", "image_regions", "find_build_image"]

log = logging.getLogger(__name__)

WAIT_DELAY = 15.0            # seconds between DescribeImages polls (AWS copies take minutes)
FIRST_POLL = 0.5            # the gate's first re-check; doubles up to ``delay``
WAIT_TIMEOUT = 3600.0        # a cross-region copy of a small AMI takes 5-20 minutes


@dataclass(slots=True)
class GateResult:
    """The outcome of :func:`gate_publication`: the AMI per region, all available."""

    build_id: str | None
    image_name: str | None
    image_ids: dict[str, str]
    waited_seconds: float = 0.0
    regions: list[str] = field(default_factory=list)

    def image_for(self, region: str) -> str:
        return self.image_ids[region]


def image_regions(img: ImageSettings, default: str) -> list[str]:
    """The image's configured regions in order (the first is home), else ``default``."""
    return list(dict.fromkeys(img.regions)) or [default]


def find_build_image(ec2: Any, build_id: str) -> dict[str, Any] | None:
    """An AMI of this build already in the region (a previous, successful run)."""
    images = ec2.describe_images(Owners=["self"], Filters=[
        {"Name": f"tag:{T.BUILD_ID}", "Values": [build_id]}]).get("Images") or []
    usable = [i for i in images if i.get("State") in ("available", "pending")]
    return usable[0] if usable else None


def _image_in(clients: Clients, region: str, image_id: str | None,
              build_id: str | None) -> dict[str, Any] | None:
    ec2 = clients.client("ec2", region=region)
    if image_id:
        try:
            images = ec2.describe_images(ImageIds=[image_id]).get("Images") or []
        except ClientError as err:
            if error_code(err).startswith("InvalidAMIID"):
                return None
            raise AwsCallError(f"describing {image_id} in {region}: {err}") from err
        return images[0] if images else None
    if build_id:
        return find_build_image(ec2, build_id)
    return None


def _images_in(settings: Settings, clients: Clients, regions: list[str], known: dict[str, str],
               build_id: str | None) -> dict[str, dict[str, Any] | None]:
    """:func:`_image_in` for every region at once (a pool bounded by ``aws.limits``)."""
    from pipeline.aws.limits import first_error, limits_for, per_region

    outcomes = per_region(lambda r: _image_in(clients, r, known.get(r), build_id), regions,
                          workers=limits_for(settings.limits).region_workers)
    err = first_error(outcomes)
    if err is not None:
        raise err
    return {o.region: o.value for o in outcomes}  # type: ignore[misc]


def _home_facts(image: Any) -> tuple[str, str, str | None, str | None]:
    """(image id, state, build id, image name) of a DescribeImages entry or of an object
    with those attributes (such as :class:`pipeline.publish.release.ImageInfo`)."""
    if isinstance(image, Mapping):
        tags = T.from_tag_list(image.get("Tags"))
        return (str(image["ImageId"]), str(image.get("State", "")), tags.get(T.BUILD_ID),
                tags.get(T.IMAGE_NAME))
    return (str(image.image_id), str(image.state), getattr(image, "build_id", None),
            getattr(image, "image_name", None))


def _target(clients: Clients, target: str | BuildRecord, image_name: str | None, home: str,
            home_image: Any) -> tuple[str | None, str | None, dict[str, str],
                                      tuple[str, str, str | None, str | None] | None]:
    """(build id, image name, AMI id per region known so far, the home AMI's facts (None
    for a build record)) of what :func:`gate_publication` is asked to gate."""
    if isinstance(target, BuildRecord):
        return (target.build_id, image_name or target.image_name, dict(target.image_ids),
                None)
    if home_image is None:
        home_image = _image_in(clients, home, target, None)
        if home_image is None:
            raise InputError(f"AMI {target} does not exist in {home}; check the id "
                             f"with `aws ec2 describe-images --region {home}`")
    facts = _home_facts(home_image)
    if facts[0] != target:
        raise InputError(f"gate_publication: home_image describes {facts[0]}, not {target}")
    return facts[2], image_name or facts[3], {home: target}, facts


def gate_publication(settings: Settings, clients: Clients, target: str | BuildRecord, *,
                     image_name: str | None = None, region: str | None = None,
                     home_image: Any = None, wait: bool = True,
                     timeout: float = WAIT_TIMEOUT, delay: float = WAIT_DELAY,
                     progress: Progress = NO_PROGRESS) -> GateResult:
    """Pass only when the build behind ``target`` is ``available`` in every region.

    ``target`` is an AMI id in ``region`` (default ``aws.region``) or a build record. The
    regions are the image's configured ``regions`` (the image name comes from
    ``image_name``, the record, or the AMI's image-name tag); an AMI without lineage must
    be available where it is. With ``wait`` the gate waits up to ``timeout`` seconds for
    pending copies; without, it refuses at once. Raises :class:`PublicationGated` (exit 1)
    when a region lacks the build or it is not available yet. Call it before any
    CreateLaunchTemplateVersion, ModifyLaunchTemplate or PutParameter that names the AMI.

    ``home_image`` is the DescribeImages entry (or ``publish.ImageInfo``) the caller
    already holds for ``target``: with it a single-region image costs no AWS call, and a
    multi-region one DescribeImages per other region.
    """
    home = region or clients.region
    build_id, image_name, known, facts = _target(clients, target, image_name, home, home_image)
    regions = [home]
    if image_name and any(i.name == image_name for i in settings.images):
        regions = image_regions(settings.image(image_name), home)
        if home not in regions and home in known:
            regions = [home, *regions]
    started = time.monotonic()
    deadline = started + (timeout if wait else 0.0)
    result = GateResult(build_id=build_id, image_name=image_name, image_ids={}, regions=regions)
    pending = list(regions)
    progress.start(len(regions), count_label("waiting for every region"))
    first, polls = True, 0
    while True:
        still: list[str] = []
        problems: list[str] = []
        looked_up = _images_in(settings, clients, [
            w for w in pending if not (first and facts is not None and w == home)],
            known, build_id)
        for where in pending:
            if first and facts is not None and where == home:
                img: dict[str, Any] | None = {"ImageId": facts[0], "State": facts[1]}
            else:
                img = looked_up[where]
            state = (img or {}).get("State")
            if img is not None and state == "available":
                result.image_ids[where] = img["ImageId"]
                progress.advance(1)
                continue
            if img is None:
                problems.append(f"{where}: no AMI of build {build_id or '?'}")
            elif state in ("failed", "deregistered", "error", "invalid", "disabled"):
                raise PublicationGated(
                    f"{img['ImageId']} in {where} is {state!r}; nothing was published: "
                    f"distribute build {build_id} again")
            else:
                problems.append(f"{where}: {img['ImageId']} is {state!r}")
                known[where] = img["ImageId"]
            still.append(where)
        pending, first = still, False
        if not pending:
            break
        if time.monotonic() >= deadline or all("no AMI" in p for p in problems):
            raise PublicationGated(
                "not publishing: the release is not available in every region ("
                + "; ".join(problems) + "); run distribution and retry once every region "
                "is available")
        # Poll soon first (a copy often finishes while publish renders), then back off.
        time.sleep(min(delay, FIRST_POLL * 2 ** polls, max(0.0, deadline - time.monotonic())))
        polls += 1
    result.waited_seconds = round(time.monotonic() - started, 3)
    progress.done()
    return result


def move_pointers(settings: Settings, clients: Clients, gate: GateResult, channel: str, *,
                  image_name: str | None = None, tx: Transaction | None = None) -> list[Pointer]:
    """Point ``<ssm_prefix>/<image>/<channel>`` at the build's AMI in every region the gate
    checked (each region's pointer names that region's copy).

    All or nothing: each region's pointer is read first and its undo registered before
    it moves (put back, or deleted when it did not exist and still names our AMI). With
    ``tx`` the undos join the caller's :class:`~pipeline.publish.transaction.Transaction`
    (publish, promote, rollback: a later step's failure puts the pointers back too);
    without, a failure here puts back the pointers already moved. One region costs one
    GetParameter and one PutParameter.
    """
    name = image_name or gate.image_name
    if not name:
        raise InputError(f"channel {channel}: the pointer needs an image name; configure the "
                         "launch template's image or tag the AMI with its image name")
    if tx is None:
        with Transaction(f"moving pointer {name}/{channel}") as own:
            return move_pointers(settings, clients, gate, channel, image_name=name, tx=own)
    moved: list[Pointer] = []
    for region in gate.regions:
        ami = gate.image_for(region)
        tx.step(f"channel pointer in {region}")
        before = get_pointer(clients, settings.ssm_prefix, name, channel, region=region)
        tx.on_undo(f"put back pointer {name}/{channel} in {region}",
                   functools.partial(_restore_pointer, settings, clients, name, channel, region,
                                     before, ami))
        moved.append(put_pointer(clients, settings.ssm_prefix, name, channel, ami,
                                 region=region))
    return moved


def _restore_pointer(settings: Settings, clients: Clients, image_name: str, channel: str,
                     region: str, before: Pointer | None, ours: str) -> str | None:
    """Undo one pointer move: the value it had, or no pointer when it had none (deleted
    only while it still names ``ours``, re-read just before). Raises when it cannot."""
    pname = pointer_name(settings.ssm_prefix, image_name, channel)
    if before is None:
        from pipeline.aws.cleanup import delete_pointer_if_ours

        if delete_pointer_if_ours(clients, pname, ours, region=region):
            return f"removed pointer {pname} in {region} (it did not exist)"
        return None
    now = get_pointer(clients, settings.ssm_prefix, image_name, channel, region=region)
    if now is not None and now.ami_id == before.ami_id:
        return None
    put_pointer(clients, settings.ssm_prefix, image_name, channel, before.ami_id, region=region)
    return f"pointer {pname} in {region} back to {before.ami_id}"


def point_channel(settings: Settings, clients: Clients, ami_id: str, channel: str, *,
                  image_name: str, region: str | None = None,
                  tx: Transaction | None = None) -> list[Pointer]:
    """Move ``<ssm_prefix>/<image_name>/<channel>`` to the build behind ``ami_id`` in every
    region of the image (promote and rollback call this).

    For a single-region image the pointer moves in ``region``. For more regions the
    build's copy is looked up in each (without waiting: the release was gated when it
    was published) and :func:`move_pointers` moves them all or none (joining ``tx``).
    """
    region = region or clients.region
    configured = next((i for i in settings.images if i.name == image_name), None)
    if configured is None or image_regions(configured, region) == [region]:
        gate = GateResult(build_id=None, image_name=image_name, image_ids={region: ami_id},
                          regions=[region])
    else:
        gate = gate_publication(settings, clients, ami_id, image_name=image_name,
                                region=region, wait=False)
    return move_pointers(settings, clients, gate, channel, image_name=image_name, tx=tx)
