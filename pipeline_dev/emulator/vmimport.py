"""EC2 VM Import (ImportImage, DescribeImportImageTasks, CancelImportTask), which moto lacks.

Follows AWS-FACTS §1 and the VM Import/Export user guide (awsdocs/vm-import-export-user-guide
doc_source/vmimport-image-import.md, required-permissions.md, vmimport-troubleshooting.md):

- ImportImage checks the service role synchronously: a missing role, or a trust policy that
  does not let ``vmie.amazonaws.com`` assume it with ``sts:ExternalId`` ``vmimport``, is
  ``InvalidParameter: The service role <name> provided does not exist or does not have
  sufficient permissions``. ``ClientToken`` makes it idempotent.
- A background thread walks the task through the documented StatusMessage/Progress
  sequence (pending 2 → validating → validated → converting 28 → updating 41 → booting 59 →
  booted → preparing ami 76–85 → completed) over ``import_seconds``.
- It validates the image on its own (never with product code): the role's policies must
  allow ``s3:GetObject`` on the object and the object must exist (else
  ``ClientError: Disk validation failed [We do not have access to the given resource. Reason
  403 Forbidden]``); ``qemu-img info`` must detect the declared format (VMDK must be
  streamOptimized; OVA a tar with an OVF and a VMDK; RAW is taken as is), else
  ``ClientError: Disk validation failed [Unsupported <FORMAT> File Format]``; the raw disk
  must carry an MBR (0x55AA with a partition entry) or a GPT header, else
  ``ClientError: No valid partitions. Not a valid volume.``
- It converts to raw with ``qemu-img convert`` and, at ``updating``, writes the non-zero
  512 KiB blocks into a new EBS snapshot (``vol-ffffffff``, shown in SnapshotDetails); at
  ``booting`` a disk none of whose partitions holds ext2/3/4, XFS, Btrfs, JFS or an LVM2 PV
  fails late with ``ClientError: Unknown OS / Missing OS files.`` (the snapshot existed
  meanwhile); at the end it registers an AMI whose ``/dev/sda1`` root maps the snapshot.
- Enums (BootMode, LicenseType, Platform, Hypervisor) are checked synchronously
  (InvalidParameterValue); a UEFI import refuses encryption and LicenseSpecifications
  (doc_source/limitations-image.md).
- Failures and cancellations end ``deleting`` → ``deleted`` with no AMI or snapshot left.
"""
from __future__ import annotations

import fnmatch
import json
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moto.core.responses import ActionResult
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.responses import EC2Response

from pipeline_dev.emulator.blockstore import STORE, blocks_from_file, new_snapshot, size_gib

__all__ = ["install", "configure", "reset", "MSG_NO_PARTITIONS", "MSG_NO_ACCESS", "MSG_UNKNOWN_OS",
           "unsupported_format", "request_fingerprint"]

MSG_NO_PARTITIONS = "ClientError: No valid partitions. Not a valid volume."
MSG_NO_ACCESS = ("ClientError: Disk validation failed [We do not have access to the given "
                 "resource. Reason 403 Forbidden]")
_FORMATS = ("OVA", "VHD", "VHDX", "VMDK", "RAW")
_BOOT_MODES = ("legacy-bios", "uefi", "uefi-preferred")
#: cornfeedhobo/packer-virtualbox-ami-centos7#1 (a btrfs-on-LVM CentOS): the late failure,
#: reported after conversion, once the snapshot exists.
MSG_UNKNOWN_OS = "ClientError: Unknown OS / Missing OS files."
_QEMU_FORMAT = {"VMDK": "vmdk", "VHD": "vpc", "VHDX": "vhdx"}

#: (fraction of import_seconds at which the step starts, StatusMessage, Progress)
_STEPS = (
    (0.05, "validating", "2"),
    (0.15, "validated", "2"),
    (0.20, "converting", "28"),
    (0.40, "updating", "41"),
    (0.50, "updated", "41"),
    (0.55, "preparing to boot", "51"),
    (0.60, "booting", "59"),
    (0.70, "booted", "68"),
    (0.75, "preparing ami", "76"),
    (0.90, "preparing ami", "85"),
)

_lock = threading.Lock()
_tasks: dict[tuple[str, str], dict[str, "_Task"]] = {}
_tokens: dict[tuple[str, str, str], tuple[str, str]] = {}
_config = {"import_seconds": 2.0}
_generation = [0]


def unsupported_format(fmt: str) -> str:
    return f"ClientError: Disk validation failed [Unsupported {fmt} File Format]"


def configure(import_seconds: float) -> None:
    """How long a task takes from pending to completed (the emulator's setting)."""
    _config["import_seconds"] = max(0.2, float(import_seconds))


def reset() -> None:
    """Forget every task; running workers notice the new generation and stop."""
    with _lock:
        _generation[0] += 1
        _tasks.clear()
        _tokens.clear()


class _Failed(Exception):
    """The task fails with this StatusMessage."""


@dataclass
class _Task:
    task_id: str
    account: str
    region: str
    disk: dict[str, Any]
    architecture: str
    boot_mode: str | None
    description: str | None
    license_type: str | None
    usage_operation: str | None
    platform: str | None
    encrypted: bool
    kms_key_id: str | None
    role: str
    tags: list[dict[str, str]]
    generation: int
    status: str = "active"
    message: str | None = "pending"
    progress: str | None = "2"
    image_id: str | None = None
    snapshot_id: str | None = None
    disk_size: float = 0.0
    snap_status: str = "active"
    cancelled: str | None = None
    created: list[tuple[str, str]] = field(default_factory=list)

    def view(self, *, initial: bool = False) -> dict[str, Any]:
        detail: dict[str, Any] = {
            "DiskImageSize": self.disk_size, "Format": self.disk["Format"],
            "Status": self.snap_status}
        if self.disk.get("UserBucket"):
            detail["UserBucket"] = dict(self.disk["UserBucket"])
        if self.disk.get("Url"):
            detail["Url"] = self.disk["Url"]
        if self.disk.get("Description"):
            detail["Description"] = self.disk["Description"]
        if self.snapshot_id:
            detail["SnapshotId"] = self.snapshot_id
            detail["DeviceName"] = "/dev/sda1"
        out: dict[str, Any] = {
            "ImportTaskId": self.task_id, "Status": self.status,
            "Architecture": self.architecture, "Description": self.description,
            "Encrypted": self.encrypted, "KmsKeyId": self.kms_key_id,
            "LicenseType": self.license_type, "Platform": self.platform,
            "UsageOperation": self.usage_operation, "SnapshotDetails": [detail],
            "Tags": self.tags}
        if self.message is not None:
            out["StatusMessage"] = self.message
        if self.progress is not None:
            out["Progress"] = self.progress
        if self.image_id:
            out["ImageId"] = self.image_id
        if not initial:
            out["BootMode"] = self.boot_mode
        return {k: v for k, v in out.items() if v is not None}


def _err(code: str, message: str) -> EC2ClientError:
    return EC2ClientError(code, message)


_NOT_PARAMETERS = {"action", "version", "clienttoken", "dryrun"}


def request_fingerprint(resp: Any) -> str:
    """The request's parameters but the token (and Action/Version/DryRun), for idempotency.

    "If you repeat a request with the same client token but different parameters ... the
    retry fails with an IdempotentParameterMismatch error"
    (ec2/latest/devguide/ec2-api-idempotency.html).
    """
    items = sorted((k, tuple(v) if isinstance(v, list) else (v,))
                   for k, v in resp.querystring.items() if k.lower() not in _NOT_PARAMETERS)
    return json.dumps(items)


# --------------------------------------------------------------------------- IAM checks


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _trust_ok(document: str) -> bool:
    """Does the trust policy let vmie.amazonaws.com assume the role with ExternalId vmimport?"""
    try:
        doc = json.loads(document)
    except (TypeError, ValueError):
        return False
    for st in _as_list(doc.get("Statement", [])):
        if not isinstance(st, dict) or st.get("Effect") != "Allow":
            continue
        actions = [str(a).lower() for a in _as_list(st.get("Action", []))]
        if not any(fnmatch.fnmatchcase("sts:assumerole", a) for a in actions):
            continue
        principal = st.get("Principal", {})
        services = _as_list(principal.get("Service", [])) if isinstance(principal, dict) else []
        if "vmie.amazonaws.com" not in services:
            continue
        cond = st.get("Condition", {}) or {}
        equals = {k.lower(): v for k, v in (cond.get("StringEquals") or {}).items()}
        if "vmimport" in _as_list(equals.get("sts:externalid", [])):
            return True
    return False


def _role(account: str, name: str) -> Any:
    from moto.iam.models import iam_backends

    try:
        return iam_backends[account]["aws"].get_role(name)
    except Exception:  # noqa: BLE001 - moto raises its NotFound; any failure = no role
        return None


def _policy_documents(role: Any) -> list[dict[str, Any]]:
    docs = []
    for raw in role.policies.values():
        docs.append(json.loads(raw) if isinstance(raw, str) else raw)
    for policy in role.managed_policies.values():
        for version in getattr(policy, "versions", []):
            if version.version_id == policy.default_version_id:
                doc = version.document
                docs.append(json.loads(doc) if isinstance(doc, str) else doc)
    return docs


def _allows(role: Any, action: str, resource: str) -> bool:
    allowed = False
    for doc in _policy_documents(role):
        for st in _as_list(doc.get("Statement", [])):
            if not isinstance(st, dict):
                continue
            acts = [str(a).lower() for a in _as_list(st.get("Action", []))]
            res = [str(r) for r in _as_list(st.get("Resource", []))]
            if any(fnmatch.fnmatchcase(action.lower(), a) for a in acts) and \
                    any(fnmatch.fnmatchcase(resource, r) for r in res):
                if st.get("Effect") == "Deny":
                    return False
                if st.get("Effect") == "Allow":
                    allowed = True
    return allowed


# --------------------------------------------------------------------------- image checks


def _qemu_info(path: Path, fmt: str | None = None) -> dict[str, Any]:
    args = ["qemu-img", "info", "--output=json"]
    if fmt:
        args += ["-f", fmt]
    proc = subprocess.run([*args, str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        return {}
    return dict(json.loads(proc.stdout))


def _stream_optimized(info: dict[str, Any]) -> bool:
    data = (info.get("format-specific") or {}).get("data") or {}
    return info.get("format") == "vmdk" and data.get("create-type") == "streamOptimized"


def _ova_disk(path: Path, work: Path) -> Path:
    """The first VMDK of an OVA (a tar holding an OVF descriptor and the disks)."""
    fail = unsupported_format("OVA")
    if not tarfile.is_tarfile(path):
        raise _Failed(fail)
    with tarfile.open(path) as tar:
        names = tar.getnames()
        if not any(n.lower().endswith(".ovf") for n in names):
            raise _Failed(fail)
        disks = [m for m in tar.getmembers() if m.name.lower().endswith(".vmdk") and m.isfile()]
        if not disks:
            raise _Failed(fail)
        src = tar.extractfile(disks[0])
        if src is None:
            raise _Failed(fail)
        out = work / "ova-disk.vmdk"
        with open(out, "wb") as fh:
            shutil.copyfileobj(src, fh)
    if not _stream_optimized(_qemu_info(out)):
        raise _Failed(unsupported_format("VMDK"))
    return out


def _to_raw(src: Path, fmt: str, work: Path) -> Path:
    """Check the declared format against what qemu-img detects and convert to raw."""
    if fmt == "RAW":
        return src
    if fmt == "OVA":
        disk, qfmt = _ova_disk(src, work), "vmdk"
    else:
        info = _qemu_info(src)
        qfmt = _QEMU_FORMAT[fmt]
        ok = _stream_optimized(info) if fmt == "VMDK" else info.get("format") == qfmt
        if not ok:
            raise _Failed(unsupported_format(fmt))
        disk = src
    out = work / "disk.raw"
    proc = subprocess.run(["qemu-img", "convert", "-f", qfmt, "-O", "raw", str(disk), str(out)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise _Failed(unsupported_format(fmt))
    return out


def _has_partitions(raw: Path) -> bool:
    with open(raw, "rb") as fh:
        head = fh.read(1024)
    if len(head) < 1024:
        return False
    if head[512:520] == b"EFI PART":
        return True
    if head[510:512] != b"\x55\xaa":
        return False
    entries = [head[446 + 16 * i: 462 + 16 * i] for i in range(4)]
    return any(e[4] != 0 for e in entries)  # a non-empty partition type


def _partition_starts(raw: Path) -> list[int]:
    """Byte offsets of the partitions in an MBR or GPT table."""
    with open(raw, "rb") as fh:
        head = fh.read(1024)
        if head[512:520] == b"EFI PART":
            lba = int.from_bytes(head[512 + 72:512 + 80], "little")
            count = min(int.from_bytes(head[512 + 80:512 + 84], "little"), 128)
            size = int.from_bytes(head[512 + 84:512 + 88], "little") or 128
            fh.seek(lba * 512)
            table = fh.read(count * size)
            starts = []
            for i in range(count):
                entry = table[i * size:(i + 1) * size]
                if len(entry) >= 40 and entry[:16] != b"\x00" * 16:
                    starts.append(int.from_bytes(entry[32:40], "little") * 512)
            return starts
    entries = [head[446 + 16 * i: 462 + 16 * i] for i in range(4)]
    return [int.from_bytes(e[8:12], "little") * 512 for e in entries if e[4] != 0]


def _has_linux_fs(raw: Path) -> bool:
    """Does a partition hold a filesystem VM Import supports (ext2/3/4, XFS, Btrfs, JFS) or
    an LVM2 physical volume? (doc_source/prerequisites.md; nothing inside is read.)"""
    with open(raw, "rb") as fh:
        for start in _partition_starts(raw):
            fh.seek(start)
            head = fh.read(0x10048)
            if head[1080:1082] == b"\x53\xef" or head[:4] == b"XFSB" or \
                    head[0x10040:0x10048] == b"_BHRfS_M" or head[32768:32772] == b"JFS1" or \
                    (head[512:520] == b"LABELONE" and head[536:544] == b"LVM2 001"):
                return True
    return False


# --------------------------------------------------------------------------- the worker


def _update(task: _Task, **fields: Any) -> bool:
    """Apply fields unless the task was cancelled or the emulator reset; False = stop."""
    with _lock:
        if task.generation != _generation[0] or task.cancelled is not None:
            return False
        for k, v in fields.items():
            setattr(task, k, v)
        return True


def _sleep_until(start: float, fraction: float, task: _Task) -> bool:
    deadline = start + fraction * _config["import_seconds"]
    while True:
        with _lock:
            if task.generation != _generation[0] or task.cancelled is not None:
                return False
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(left, 0.05))


def _fetch(task: _Task, work: Path) -> Path:
    from moto.s3.models import s3_backends

    bucket = task.disk["UserBucket"]["S3Bucket"]
    key = task.disk["UserBucket"]["S3Key"]
    role = _role(task.account, task.role)
    if role is None or not _allows(role, "s3:GetObject", f"arn:aws:s3:::{bucket}/{key}"):
        raise _Failed(MSG_NO_ACCESS)
    try:
        obj = s3_backends[task.account]["aws"].get_object(bucket, key)
    except Exception:  # noqa: BLE001 - MissingBucket and friends
        obj = None
    if obj is None:
        raise _Failed(MSG_NO_ACCESS)
    path = work / "source.img"
    path.write_bytes(obj.value)
    return path


def _cleanup(task: _Task) -> None:
    from moto.ec2.models import ec2_backends

    ec2 = ec2_backends[task.account][task.region]
    for kind, rid in reversed(task.created):
        if kind == "image":
            ec2.amis.pop(rid, None)
        else:
            ec2.snapshots.pop(rid, None)
            STORE.drop(rid)
    task.created.clear()


def _finish_failed(task: _Task, message: str) -> None:
    with _lock:
        if task.generation != _generation[0]:
            return
        task.status, task.message, task.progress = "deleting", message, None
        task.snap_status = "deleted"
    _cleanup(task)
    time.sleep(min(0.2, _config["import_seconds"] / 10))
    with _lock:
        task.status, task.snapshot_id = "deleted", None


def _run(task: _Task) -> None:
    start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="emulator-vmimport-"))
    try:
        steps = iter(_STEPS)
        frac, msg, prog = next(steps)
        if not _sleep_until(start, frac, task) or not _update(task, message=msg, progress=prog):
            return
        src = _fetch(task, work)
        _update(task, disk_size=float(src.stat().st_size))
        raw = _to_raw(src, task.disk["Format"], work)
        if not _has_partitions(raw):
            raise _Failed(MSG_NO_PARTITIONS)
        blocks = blocks_from_file(raw)
        nbytes = raw.stat().st_size
        os_found = _has_linux_fs(raw)
        # Fetching and converting took real time: start the rest of the walk from now, so
        # each later step is still shown for its share of import_seconds.
        start = max(start, time.monotonic() - 0.15 * _config["import_seconds"])
        for frac, msg, prog in steps:
            if not _sleep_until(start, frac, task) or not _update(task, message=msg, progress=prog):
                return
            if msg == "updating":          # converted: the snapshot exists from here on
                _make_snapshot(task, blocks, nbytes)
            if msg == "booting" and not os_found:
                raise _Failed(MSG_UNKNOWN_OS)
        if not _sleep_until(start, 1.0, task):
            return
        _register(task, nbytes)
        _update(task, status="completed", message=None, progress=None)
    except _Failed as failed:
        _finish_failed(task, str(failed))
    except Exception as err:  # noqa: BLE001 - surface emulator bugs on the task, not silently
        _finish_failed(task, f"ClientError: internal emulator error: {err}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if task.cancelled is not None and task.generation == _generation[0]:
            _cleanup(task)
            with _lock:
                task.status, task.snap_status = "deleted", "deleted"


def _make_snapshot(task: _Task, blocks: dict[int, Any], nbytes: int) -> None:
    from moto.ec2.models import ec2_backends

    ec2 = ec2_backends[task.account][task.region]
    snap = new_snapshot(ec2, size_gib(nbytes), f"Created by AWS-VMImport service for "
                        f"{task.task_id}", blocks=blocks, encrypted=task.encrypted)
    with _lock:
        task.created.append(("snapshot", snap.id))
        task.snapshot_id, task.snap_status = snap.id, "completed"


def _register(task: _Task, nbytes: int) -> None:
    from moto.ec2.models import ec2_backends

    from pipeline_dev.emulator.amis import make_ami

    ec2 = ec2_backends[task.account][task.region]
    snap = ec2.snapshots[str(task.snapshot_id)]
    ami = make_ami(
        ec2, name=task.task_id, description=task.description or "AWS-VMImport service: Linux",
        architecture=task.architecture, virtualization_type="hvm",
        root_device_name="/dev/sda1", ena_support=True, boot_mode=task.boot_mode,
        platform=None, image_location="",
        mappings=[{"DeviceName": "/dev/sda1", "Ebs": {
            "DeleteOnTermination": True, "SnapshotId": snap.id, "VolumeSize": snap.volume_size,
            "VolumeType": "gp2", "Encrypted": task.encrypted}}])
    with _lock:
        task.created.append(("image", ami.id))
        task.image_id = ami.id


# --------------------------------------------------------------------------- handlers


def import_image(self: Any) -> ActionResult:
    self.error_on_dryrun()
    account, region = self.current_account, self.region
    token = self._get_param("ClientToken")
    fingerprint = request_fingerprint(self)
    with _lock:
        known = _tokens.get((account, region, token)) if token else None
        if known and known[1] in _tasks.get((account, region), {}):
            if known[0] != fingerprint:
                raise _err("IdempotentParameterMismatch",
                           f"The client token {token} was already used with different "
                           "parameters.")
            return ActionResult(_tasks[(account, region)][known[1]].view(initial=True))
    disks = self._get_param("DiskContainers", []) or []
    if not disks:
        raise _err("InvalidParameter", "At least one disk container must be specified.")
    if len(disks) > 21:
        raise _err("InvalidParameter", "More than 21 volumes are not supported.")
    if len(disks) > 1:
        raise _err("InvalidParameter", "This emulator imports single-disk images only.")
    disk = dict(disks[0])
    fmt = str(disk.get("Format") or "").upper()
    if disk.get("SnapshotId"):
        raise _err("InvalidParameter", "Importing from an EBS snapshot is not emulated.")
    if fmt not in _FORMATS:
        raise _err("InvalidParameter",
                   f"Parameter disk-image-size=0 has an invalid format (format {fmt!r}); "
                   f"use one of {', '.join(_FORMATS)}.")
    url = str(disk.get("Url") or "")
    if url.startswith("s3://") and "/" in url[5:] and not disk.get("UserBucket"):
        b, k = url[5:].split("/", 1)
        disk["UserBucket"] = {"S3Bucket": b, "S3Key": k}
    elif url:
        raise _err("InvalidParameter", "This emulator imports from S3 only: give UserBucket "
                   "or an s3:// Url.")
    bucket = disk.get("UserBucket") or {}
    if not (bucket.get("S3Bucket") and bucket.get("S3Key")):
        raise _err("InvalidParameter", "Invalid S3 source location: give UserBucket "
                   "S3Bucket and S3Key.")
    disk["Format"] = fmt
    arch = self._get_param("Architecture") or "x86_64"
    if arch not in ("i386", "x86_64", "arm64"):
        raise _err("InvalidParameter", f"Value ({arch}) for parameter Architecture is invalid.")
    boot = self._get_param("BootMode")
    # botocore model enums: BootModeValues, Platform (ImportImage.Platform is a free string
    # documented "Windows | Linux"), LicenseType "AWS | BYOL", Hypervisor "xen".
    for name, value, allowed in (("BootMode", boot, _BOOT_MODES),
                                 ("LicenseType", self._get_param("LicenseType"), ("AWS", "BYOL")),
                                 ("Platform", self._get_param("Platform"), ("Windows", "Linux")),
                                 ("Hypervisor", self._get_param("Hypervisor"), ("xen",))):
        if value is not None and value not in allowed:
            raise _err("InvalidParameterValue",
                       f"Value ({value}) for parameter {name} is invalid. Valid values: "
                       f"{', '.join(allowed)}.")
    if boot == "uefi-preferred":
        raise _err("InvalidParameter", "uefi-preferred isn't supported for importing images.")
    encrypted = str(self._get_param("Encrypted", "false")).lower() == "true"
    kms = self._get_param("KmsKeyId")
    if kms and not encrypted:
        raise _err("InvalidParameter", "KmsKeyId requires Encrypted to be true.")
    # doc_source/limitations-image.md: "If you import a VM that's compatible with UEFI, you
    # can't specify encryption, you can't specify a license configuration, ..."
    if encrypted and boot == "uefi":
        raise _err("InvalidParameter", "UEFI imports cannot be encrypted.")
    if boot == "uefi" and self._get_param("LicenseSpecifications"):
        raise _err("InvalidParameter", "UEFI imports cannot have a license configuration.")
    lic, usage = self._get_param("LicenseType"), self._get_param("UsageOperation")
    if lic and usage:
        raise _err("InvalidParameter", "LicenseType and UsageOperation cannot both be specified.")
    role_name = self._get_param("RoleName") or "vmimport"
    from pipeline_dev.emulator.faults import role_propagating

    role = _role(account, role_name)
    if role is None or not _trust_ok(role.assume_role_policy_document) or \
            role_propagating(role):
        raise _err("InvalidParameter", f"The service role {role_name} provided does not exist "
                   "or does not have sufficient permissions")
    tags: list[dict[str, str]] = []
    for spec in self._get_param("TagSpecifications", []) or []:
        if spec.get("ResourceType") != "import-image-task":
            raise _err("InvalidParameterValue",
                       f"'{spec.get('ResourceType')}' is not a valid taggable resource type "
                       "for this operation.")
        tags += [{"Key": t["Key"], "Value": t.get("Value", "")} for t in spec.get("Tags", [])]
    task = _Task(
        task_id="import-ami-" + secrets.token_hex(9)[:17], account=account, region=region,
        disk=disk, architecture=arch, boot_mode=boot, description=self._get_param("Description"),
        license_type=lic or ("BYOL" if not usage else None), usage_operation=usage,
        platform=self._get_param("Platform") or "Linux", encrypted=encrypted,
        kms_key_id=kms, role=role_name, tags=tags, generation=_generation[0])
    with _lock:
        _tasks.setdefault((account, region), {})[task.task_id] = task
        if token:
            _tokens[(account, region, token)] = (fingerprint, task.task_id)
    threading.Thread(target=_run, args=(task,), daemon=True,
                     name=f"vmimport-{task.task_id}").start()
    return ActionResult(task.view(initial=True))


def describe_import_image_tasks(self: Any) -> ActionResult:
    self.error_on_dryrun()
    with _lock:
        tasks = list(_tasks.get((self.current_account, self.region), {}).values())
        ids = self._get_param("ImportTaskIds", []) or []
        if ids:
            known = {t.task_id for t in tasks}
            missing = [i for i in ids if i not in known]
            if missing:
                raise _err("InvalidConversionTaskId.Malformed",
                           f"The import task ID '{missing[0]}' is not valid.")
            tasks = [t for t in tasks if t.task_id in ids]
        for f in self._get_param("Filters", []) or []:
            values = list(f.get("Values") or [])
            if f.get("Name") == "task-state":
                tasks = [t for t in tasks if t.status in values]
            else:
                raise _err("InvalidParameterValue", f"The filter '{f.get('Name')}' is invalid")
        views = [t.view() for t in tasks]
    max_results = self._get_int_param("MaxResults")
    token = self._get_param("NextToken")
    start = int(token) if token and token.isdigit() else 0
    size = max_results or 1000
    result: dict[str, Any] = {"ImportImageTasks": views[start:start + size]}
    if start + size < len(views):
        result["NextToken"] = str(start + size)
    return ActionResult(result)


def cancel_import_task(self: Any) -> ActionResult:
    self.error_on_dryrun()
    task_id = self._get_param("ImportTaskId")
    reason = self._get_param("CancelReason")
    with _lock:
        task = _tasks.get((self.current_account, self.region), {}).get(task_id)
        if task is None:
            raise _err("InvalidConversionTaskId.Malformed",
                       f"The import task ID '{task_id}' is not valid.")
        if task.status != "active":
            raise _err("IncorrectState",
                       f"The import task {task_id} is {task.status} and cannot be cancelled.")
        task.cancelled = reason or "User initiated task cancellation"
        task.status, task.message, task.progress = "deleting", task.cancelled, None
    return ActionResult({"ImportTaskId": task_id, "PreviousState": "active",
                         "State": "deleting"})


def install() -> None:
    """Add the VM Import actions to moto's ``EC2Response`` (idempotent assignments)."""
    for fn in (import_image, describe_import_image_tasks, cancel_import_task):
        setattr(EC2Response, fn.__name__, fn)
