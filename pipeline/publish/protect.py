"""Deregistration protection follows what is live (``build.protect_live_amis: true``).

An AMI is *live* in a Region when a configured launch template's default version launches it or
a channel pointer (``<ssm_prefix>/<image>/<channel>``) names it. After publish, promote and
rollback, :func:`reconcile` makes protection match that set in each Region of the image
(AWS-FACTS §7: ``EnableImageDeregistrationProtection`` / ``DisableImageDeregistrationProtection``;
``DeregisterImage`` of a protected AMI is refused with ``OperationNotPermitted``):

- a live pipeline AMI (one carrying the build-id tag) without protection gets it, and the tag
  ``eks-ami-pipeline:protected`` saying the pipeline set it;
- a pipeline AMI carrying that tag that is no longer live loses its protection and the tag.
  Protection someone set by hand (no tag) is never removed.

Failures are warnings: the publish, promote or rollback itself has already succeeded.
Calls per Region: GetParametersByPath (pointers), DescribeLaunchTemplateVersions ``$Default``
per configured template (publishing Region only), DescribeImages (the pipeline's own AMIs),
then one Enable/Disable plus CreateTags/DeleteTags per AMI that changes.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable

from pipeline.aws import templates as lt_mod
from pipeline.aws.clients import Clients, call
from pipeline.aws.ssm import list_pointers
from pipeline.core import tags as T
from pipeline.core.config import Settings
from pipeline.core.errors import AwsCallError

__all__ = ["PROTECTED_TAG", "live_images", "reconcile"]

log = logging.getLogger(__name__)
PROTECTED_TAG = T.PREFIX + "protected"


def live_images(settings: Settings, clients: Clients, region: str, *,
                templates_region: str) -> set[str]:
    """The AMI ids live in ``region``: named by a pointer, or by a configured template's
    default version (templates are read in ``templates_region``)."""
    live = {p.ami_id for p in list_pointers(clients, settings.ssm_prefix, region=region)}
    if region == templates_region:
        ec2 = clients.client("ec2", region=region)
        for lt in settings.launch_templates:
            found = lt_mod.describe_versions(ec2, lt.name, ["$Default"])
            live |= {v.image_id for v in found or [] if v.image_id}
    return live


def _pipeline_images(ec2: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for page in ec2.get_paginator("describe_images").paginate(
            Owners=["self"], Filters=[{"Name": "tag-key", "Values": [T.BUILD_ID]}]):
        out += page.get("Images", [])
    return out


def reconcile(settings: Settings, clients: Clients, regions: Iterable[str], *,
              templates_region: str) -> tuple[list[str], list[str]]:
    """(what changed, warnings): protection on live pipeline AMIs, off on ones no longer live."""
    changes: list[str] = []
    warnings: list[str] = []
    for region in dict.fromkeys(regions):
        try:
            live = live_images(settings, clients, region, templates_region=templates_region)
            ec2 = clients.client("ec2", region=region)
            images = call(_pipeline_images, ec2=ec2, what=f"listing pipeline AMIs in {region}")
        except AwsCallError as err:
            warnings.append(f"deregistration protection in {region} not updated: {err}")
            continue
        for img in images:
            ami = img["ImageId"]
            tags = T.from_tag_list(img.get("Tags"))
            state = str(img.get("DeregistrationProtection") or "disabled")
            protected = state != "disabled" and not state.startswith("disabled-until")
            try:
                if ami in live and not protected:
                    call(ec2.enable_image_deregistration_protection, ImageId=ami,
                         what=f"protecting live AMI {ami} in {region}")
                    call(ec2.create_tags, Resources=[ami],
                         Tags=[{"Key": PROTECTED_TAG, "Value": "live"}],
                         what=f"tagging {ami} as protected by the pipeline")
                    changes.append(f"{region}: {ami} is live: deregistration protection enabled")
                elif ami not in live and protected and PROTECTED_TAG in tags:
                    call(ec2.disable_image_deregistration_protection, ImageId=ami,
                         what=f"releasing AMI {ami} in {region}")
                    call(ec2.delete_tags, Resources=[ami], Tags=[{"Key": PROTECTED_TAG}],
                         what=f"untagging {ami}")
                    changes.append(f"{region}: {ami} is no longer live: deregistration "
                                   "protection disabled")
            except AwsCallError as err:
                warnings.append(f"deregistration protection of {ami} in {region}: {err}")
    for line in changes:
        log.info("%s", line)
    return changes, warnings
