"""Verify an AMI offline through its root snapshot and record the verdict on the AMI.

The offline checks are :func:`pipeline.image.verify.verify_disk`; this module adds the
AWS side: find the root snapshot, read it lazily through the EBS direct APIs
(:mod:`pipeline.aws.snapshot_read`) and tag the AMI with the result.
"""
from __future__ import annotations

import time

from pipeline.aws.clients import Clients, call
from pipeline.aws.images import root_mapping
from pipeline.aws.snapshot_read import open_snapshot
from pipeline.core import tags as T
from pipeline.core.errors import AwsCallError, ImageReadError, InputError
from pipeline.image.kubelet import parse_cluster_version
from pipeline.image.verify import REQUIRES, VerifyReport, verify_disk

__all__ = ["verify_ami"]


def _root_snapshot(clients: Clients, ami_id: str, region: str | None) -> tuple[str, str]:
    """``(snapshot_id, root device name)`` of the AMI's root device mapping."""
    ec2 = clients.client("ec2", region=region)
    try:
        images = call(ec2.describe_images, what=f"describe AMI {ami_id}",
                      ImageIds=[ami_id])["Images"]
    except AwsCallError as err:
        if err.code.startswith("InvalidAMIID"):
            raise ImageReadError(f"AMI {ami_id} not found in {region or clients.region}; "
                                 "check the id and the region") from err
        raise
    if not images:
        raise ImageReadError(f"AMI {ami_id} not found; check the id and the region")
    root = root_mapping(images[0])
    if root is None:
        raise ImageReadError(f"AMI {ami_id} has no EBS snapshot in its block device mappings")
    return root


def verify_ami(clients: Clients, ami_id: str, require: str = "any", tag: bool = True,
               region: str | None = None, *, cluster_version: str | None = None,
               strict: bool = False) -> VerifyReport:
    """Check an AMI through its root snapshot (EBS direct APIs) and tag it with the result.

    Tags (:mod:`pipeline.core.tags` ``VERIFY_*``) are written after every completed check,
    pass or fail, unless ``tag`` is false: verdict, mechanism, time, tool version, the
    kubelet version (``unknown`` when it cannot be read) and the ids of the checks that
    warned (``none``), which ``publish-template`` repeats. ``cluster_version`` and
    ``strict``: see :func:`pipeline.image.verify.verify_disk`.
    """
    t0 = time.perf_counter()
    if require not in REQUIRES:
        raise InputError(f"--require must be one of {', '.join(REQUIRES)}, got {require!r}")
    parse_cluster_version(cluster_version)
    snapshot_id, device = _root_snapshot(clients, ami_id, region)
    with open_snapshot(clients, snapshot_id, region=region) as disk:
        report = verify_disk(disk, require, started=t0, source={
            "ami": ami_id, "snapshot": snapshot_id, "device": device},
            cluster_version=cluster_version, strict=strict)
    if tag:
        ec2 = clients.client("ec2", region=region)
        call(ec2.create_tags, what=f"tag AMI {ami_id} with the verification result",
             Resources=[ami_id], Tags=T.to_tag_list({
                 T.VERIFY_VERDICT: report.verdict,
                 T.VERIFY_MECHANISM: report.mechanism or "none",
                 T.VERIFY_TIME: report.checked_at,
                 T.VERIFY_TOOL_VERSION: report.tool_version,
                 T.VERIFY_KUBELET_VERSION: report.kubelet_version.version or "unknown",
                 T.VERIFY_WARNINGS: " ".join(report.to_verification().warnings) or "none"}))
        report.tags_written = True
    return report
