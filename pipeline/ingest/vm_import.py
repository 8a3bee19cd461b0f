"""One EC2 VM Import task: start it, follow it, cancel it, clean up after it.

- :func:`start_import` calls ImportImage with a ClientToken derived from the build
  (source SHA-256, the settings that shape the AMI, and the build id: a retried HTTP
  request cannot start a second task, yet a new run after a failed or cancelled task
  gets a new task instead of the dead one back), the architecture, boot mode,
  encryption, ``LicenseType BYOL`` (Linux is BYOL only) and the build's tags on the
  ``import-image-task``.
- :func:`wait_import` polls DescribeImportImageTasks with exponential backoff, showing
  status message and progress; on timeout or Ctrl-C it cancels the task
  (CancelImportTask) and says so, unless ``detach``.
- A task that ends ``deleting``/``deleted`` becomes :class:`ImportTaskFailed` quoting
  AWS's StatusMessage and the likely fix from :data:`KNOWN_FAILURES`, after
  :func:`remove_leftovers` deleted any AMI or snapshot the task or the build left.
"""
from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from botocore.exceptions import BotoCoreError, ClientError

from pipeline.aws import cleanup
from pipeline.core import tags
from pipeline.aws.clients import call, error_code
from pipeline.core.errors import (AwsCallError, ImportTaskFailed, OperationFailed, PipelineError,
                                  PreflightError)
from pipeline.core.progress import NO_PROGRESS, Progress, percent_label

__all__ = [
    "ImportTaskFailed",
    "KNOWN_FAILURES",
    "ImportTaskSpec",
    "ImportOutcome",
    "client_token",
    "likely_fix",
    "start_import",
    "wait_import",
    "cancel_import",
    "remove_leftovers",
]

log = logging.getLogger(__name__)

#: (regex on StatusMessage or error message, likely fix). First match wins.
KNOWN_FAILURES: tuple[tuple[str, str], ...] = (
    (r"No valid partitions",
     "the disk has no partition table VM Import can read: give a whole-disk image with an "
     "MBR or GPT partition table, not a bare filesystem"),
    (r"Unsupported kernel version",
     "VM Import supports only listed kernels: use a supported distribution kernel, or use "
     "--method snapshot, which does not inspect the kernel"),
    (r"BLSC-style GRUB",
     "set a default kernel in the BLS GRUB config (grubby --set-default), or use --method "
     "snapshot"),
    (r"EFI partition detected",
     "the image boots with UEFI: set boot_mode: uefi for this image (UEFI imports cannot be "
     "encrypted)"),
    (r"does not exist or does not have sufficient permissions|403 Forbidden|access to the "
     r"given resource",
     "the vmimport role cannot read the S3 object: re-run with --create-role or grant it "
     "s3:GetObject/ListBucket/GetBucketLocation on the bucket (and KMS if the bucket is "
     "SSE-KMS encrypted)"),
    (r"Unknown OS|missing OS|Unable to determine|not a valid OS",
     "VM Import could not find a supported Linux in the image: check /etc/os-release and "
     "the root filesystem type (ext2/3/4, XFS, Btrfs, JFS)"),
    (r"Unsupported.*format|not a valid (VMDK|VHD|OVA)|invalid disk|Disk validation failed",
     "convert the disk to streamOptimized VMDK (qemu-img convert -O vmdk -o "
     "subformat=streamOptimized) or raw"),
    (r"S3.*(not found|NoSuchKey|does not exist)|The specified key does not exist",
     "the uploaded object disappeared before VM Import read it: re-run (keep the bucket "
     "free of lifecycle rules that delete imports/ early)"),
    (r"[Ii]nsufficient|[Ll]imit|quota|ResourceLimitExceeded",
     "too many concurrent import tasks or snapshots: wait for running tasks or raise the "
     "quota"),
)

_FAILED = ("deleting", "deleted")
_MAX_DESCRIBE_FAILURES = 5


@dataclass(frozen=True, slots=True)
class ImportTaskSpec:
    """Everything ImportImage needs for one disk in S3."""

    bucket: str
    key: str
    disk_format: str                 # VMDK | RAW | VHD | VHDX | OVA
    architecture: str
    boot_mode: str                   # legacy-bios | uefi
    client_token: str
    description: str
    tags: dict[str, str] = field(default_factory=dict)
    encrypted: bool = False
    kms_key_id: str | None = None
    role_name: str = "vmimport"


@dataclass(frozen=True, slots=True)
class ImportOutcome:
    """A completed import task."""

    task_id: str
    image_id: str
    snapshot_ids: tuple[str, ...]
    seconds: float


def client_token(*parts: object) -> str:
    """A stable idempotency token (64 hex chars) from the build's defining parts."""
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()


def likely_fix(message: str) -> str:
    """The fix for a known VM Import failure message (a generic hint otherwise)."""
    for pattern, fix in KNOWN_FAILURES:
        if re.search(pattern, message or ""):
            return fix
    return ("see https://docs.aws.amazon.com/vm-import/latest/userguide/"
            "vmimport-troubleshooting.html for this message")


def start_import(ec2: Any, spec: ImportTaskSpec, *, role_grace: float = 0.0,
                 sleep: Callable[[float], None] = time.sleep) -> str:
    """ImportImage; returns the task id. A role problem AWS reports is a PreflightError.

    IAM is eventually consistent: right after ``--create-role`` AWS may still answer
    "The service role vmimport provided does not exist" (hashicorp/terraform-provider-aws
    retries on this message too). ``role_grace`` seconds of retries cover that window;
    the ClientToken makes the retries safe.
    """
    kwargs: dict[str, Any] = dict(
        Architecture=spec.architecture, BootMode=spec.boot_mode, ClientToken=spec.client_token,
        Description=spec.description[:255], LicenseType="BYOL", RoleName=spec.role_name,
        DiskContainers=[{"Description": spec.description[:255], "Format": spec.disk_format,
                         "UserBucket": {"S3Bucket": spec.bucket, "S3Key": spec.key}}],
        TagSpecifications=tags.tag_specifications(spec.tags, "import-image-task"))
    if spec.encrypted:
        kwargs["Encrypted"] = True
        if spec.kms_key_id:
            kwargs["KmsKeyId"] = spec.kms_key_id
    deadline = time.monotonic() + role_grace
    delay = min(2.0, role_grace / 20) or 2.0
    while True:
        try:
            resp = ec2.import_image(**kwargs)
            break
        except ClientError as err:
            msg = err.response.get("Error", {}).get("Message", "")
            if "service role" in msg:
                if time.monotonic() + delay <= deadline:
                    log.info("IAM has not propagated role %s yet; retrying in %.0fs",
                             spec.role_name, delay)
                    sleep(delay)
                    delay = min(delay * 2, 15.0)
                    continue
                raise PreflightError(f"ImportImage refused s3://{spec.bucket}/{spec.key}: "
                                     f"{msg}; {likely_fix(msg)}") from err
            raise AwsCallError(f"AWS refused ImportImage of s3://{spec.bucket}/{spec.key}: "
                               f"{error_code(err)}: {msg}; {likely_fix(msg)}") from err
        except BotoCoreError as err:
            raise AwsCallError(f"ImportImage of s3://{spec.bucket}/{spec.key} failed: "
                               f"{err}") from err
    task_id = str(resp["ImportTaskId"])
    log.info("started VM Import task %s for s3://%s/%s", task_id, spec.bucket, spec.key)
    return task_id


def _describe(ec2: Any, task_id: str) -> dict[str, Any]:
    resp = call(ec2.describe_import_image_tasks, what=f"reading import task {task_id}",
                ImportTaskIds=[task_id])
    found = resp.get("ImportImageTasks") or []
    if not found:
        raise AwsCallError(f"import task {task_id} is no longer listed by "
                           "DescribeImportImageTasks; check the EC2 console")
    return dict(found[0])


def cancel_import(ec2: Any, task_id: str, reason: str, build_id: str | None = None) -> None:
    """CancelImportTask of the task this run started; a task that already ended is fine."""
    owner = cleanup.Owner(build_id or "unrecorded-run", frozenset({("import-task", task_id)}))
    try:
        for r in cleanup.cancel_import_tasks(ec2, None, owner, [task_id], reason=reason):
            if not r.ok:
                log.warning("could not cancel import task %s: %s", task_id, r.error)
    except (ClientError, BotoCoreError, PipelineError) as err:
        log.warning("could not cancel import task %s: %s", task_id, error_code(err) or err)


def _snapshot_ids(task: dict[str, Any]) -> list[str]:
    return [d["SnapshotId"] for d in task.get("SnapshotDetails") or () if d.get("SnapshotId")]


def wait_import(ec2: Any, task_id: str, *, timeout: float, detach: bool = False,
                poll_interval: float = 5.0, poll_max: float = 60.0, build_id: str | None = None,
                progress: Progress = NO_PROGRESS,
                sleep: Callable[[float], None] = time.sleep) -> ImportOutcome:
    """Follow ``task_id`` until it completes; see the module docstring for the rest."""
    t0 = time.monotonic()
    delay = poll_interval
    last = ""
    failures = 0
    progress.start(100, percent_label(f"VM Import {task_id}"))
    shown = 0                                   # percent shown on the bar so far
    try:
        while True:
            try:
                task = _describe(ec2, task_id)
                failures = 0
            except AwsCallError as err:
                # A 40-minute import should not die of one network blip: botocore
                # already retried; keep polling a few more rounds, then give up (and
                # cancel, since nobody will follow the task any more).
                failures += 1
                if failures >= _MAX_DESCRIBE_FAILURES:
                    if not detach:
                        cancel_import(ec2, task_id, "the importer lost track of the task", build_id)
                    raise AwsCallError(f"{err.message}; gave up following import task "
                                       f"{task_id} after {failures} failed polls"
                                       + ("" if detach else " and cancelled it")) from err
                log.warning("%s (poll %d of %d)", err.message, failures,
                            _MAX_DESCRIBE_FAILURES)
                sleep(delay)
                continue
            status = str(task.get("Status", ""))
            message = str(task.get("StatusMessage") or "")
            pct = str(task.get("Progress") or "")
            line = f"import task {task_id}: {status}" + (f" / {message}" if message else "") + (
                f" ({pct}%)" if pct else "")
            if line != last:
                progress.status(line)
                last = line
            # The bar follows the task's own Progress field (a percentage) and ends at 100.
            target = 100 if status == "completed" else (int(pct) if pct.isdigit() else shown)
            if target > shown:
                progress.advance(min(target, 100) - shown)
                shown = min(target, 100)
            if status == "completed":
                image_id = task.get("ImageId")
                if not image_id:
                    raise ImportTaskFailed(f"import task {task_id} completed without an ImageId; "
                                           "check DescribeImportImageTasks")
                return ImportOutcome(task_id, str(image_id), tuple(_snapshot_ids(task)),
                                     time.monotonic() - t0)
            if status in _FAILED:
                raise _task_failed(ec2, task_id, task, build_id)
            if time.monotonic() - t0 + delay > timeout:
                what = "left running (--detach)" if detach else "cancelled it"
                if not detach:
                    cancel_import(ec2, task_id, f"timed out after {timeout:.0f}s", build_id)
                    remove_leftovers(ec2, _describe(ec2, task_id), build_id)
                raise OperationFailed(
                    f"import task {task_id} did not finish within {timeout:.0f}s ({status} "
                    f"{message}); {what}; raise --timeout (VM Import takes 20-60 minutes)")
            sleep(delay)
            delay = min(delay * 1.5, poll_max)
    except KeyboardInterrupt:
        _interrupted(ec2, task_id, detach=detach, build_id=build_id, progress=progress)
        raise
    finally:
        progress.done()


def _task_failed(ec2: Any, task_id: str, task: dict[str, Any],
                 build_id: str | None) -> ImportTaskFailed:
    """The error for a task AWS ended in failure, after removing what it left."""
    status, message = str(task.get("Status", "")), str(task.get("StatusMessage") or "")
    left = remove_leftovers(ec2, task, build_id)
    return ImportTaskFailed(
        f"import task {task_id} failed: AWS says {message or status!r}; likely fix: "
        f"{likely_fix(message)}"
        + (f" (removed {', '.join(left)})" if left else ""),
        details={"import_task_id": task_id, "status": status,
                 "status_message": message, "removed": left})


def _interrupted(ec2: Any, task_id: str, *, detach: bool, build_id: str | None,
                 progress: Progress) -> None:
    """Ctrl-C while following: detach (say how to follow it) or cancel and clean up."""
    if detach:
        progress.status(f"detached: import task {task_id} keeps running; follow it with "
                        f"`aws ec2 describe-import-image-tasks --import-task-ids {task_id}`")
        return
    cancel_import(ec2, task_id, "interrupted by the user (Ctrl-C)", build_id)
    try:
        remove_leftovers(ec2, _describe(ec2, task_id), build_id)
    except AwsCallError as err:
        log.warning("%s", err)
    progress.status(f"cancelled import task {task_id} (CancelImportTask) after Ctrl-C")


def remove_leftovers(ec2: Any, task: dict[str, Any], build_id: str | None) -> list[str]:
    """Deregister/delete any AMI and snapshot of this task or tagged with ``build_id``.

    The task's own AMI and snapshots are this run's (it started the task); the rest must
    carry the build id. Both re-checked by :mod:`pipeline.aws.cleanup` before the calls.
    """
    images = {str(task["ImageId"])} if task.get("ImageId") else set()
    snaps = set(_snapshot_ids(task))
    journal = {("image", i) for i in images} | {("snapshot", s) for s in snaps}
    if build_id:
        flt = [{"Name": f"tag:{tags.BUILD_ID}", "Values": [build_id]}]
        try:
            for img in ec2.describe_images(Owners=["self"], Filters=flt).get("Images") or ():
                images.add(img["ImageId"])
            pages = ec2.get_paginator("describe_snapshots").paginate(OwnerIds=["self"],
                                                                     Filters=flt)
            for page in pages:
                snaps.update(s["SnapshotId"] for s in page.get("Snapshots") or ())
        except (ClientError, BotoCoreError) as err:
            log.warning("could not list resources of build %s: %s", build_id, err)
    owner = cleanup.Owner(build_id or "unrecorded-run", frozenset(journal))
    resources = [cleanup.Resource("image", i) for i in sorted(images)] + \
        [cleanup.Resource("snapshot", s) for s in sorted(snaps)]
    if not resources:
        return []
    removed: list[str] = []
    for r in cleanup.remove(ec2, owner, resources):
        if r.outcome == "removed":
            removed.append(r.id)
        elif not r.ok:
            log.warning("could not remove %s %s: %s", r.kind, r.id, r.error)
    return removed
