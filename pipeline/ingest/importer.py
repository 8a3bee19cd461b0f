"""``invoke import-image``: pre-flight, then VM Import or a direct-to-snapshot import.

Pre-flight (:func:`preflight`) runs before any byte leaves the machine and refuses bad
input with :class:`~pipeline.core.errors.PreflightError` (exit 2, nothing created):

1. the file exists, is not a compressed archive, and is a container we can handle
   (``qemu-img info``);
2. the bootstrap contract holds (:func:`pipeline.image.verify.verify_image`);
3. the disk has an MBR or GPT partition table (VM Import refuses bare filesystems with
   "No valid partitions") and its boot partitions suit the configured boot mode;
4. for VM Import: the bucket exists (HeadBucket) and the ``vmimport`` role can read it
   (:mod:`pipeline.aws.iam`, ``--create-role`` creates it).

Then ``vm-import`` converts what VM Import refuses (qcow2, monolithicSparse VMDK, ...)
to streamOptimized VMDK with ``qemu-img convert``, uploads it content-addressed
(:mod:`pipeline.aws.s3`) and runs the task (:mod:`pipeline.ingest.vm_import`); ``snapshot``
writes the disk straight into an EBS snapshot (:mod:`pipeline.aws.ebs`). Both
tag the AMI and its snapshots with lineage, verify the AMI offline
(:func:`pipeline.lineage.verify_ami.verify_ami`) and record the build
(:func:`pipeline.lineage.store.record_build`).

Encryption: the S3 upload uses SSE-S3 (AES256), which VM Import reads without KMS
grants; the AMI and its snapshots are encrypted (``Encrypted``, with ``--kms-key`` as
``KmsKeyId``; ``--create-role`` then adds the documented KMS statement to the role),
except UEFI imports, which VM Import cannot encrypt.

Clean-up rule: whatever this run created is removed when it fails (ExitStack), except
an interrupted S3 upload (left resumable, see :mod:`pipeline.aws.s3`) and a task
left running on purpose with ``--detach``.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipeline import __version__
from pipeline.core import tags
from pipeline.aws import s3 as s3_upload
from pipeline.aws.journal import Journal
from pipeline.ingest import vm_import
from pipeline.aws.clients import Clients, call, error_code
from pipeline.aws.images import snapshots_of
from pipeline.core.config import ImageSettings, ImportSettings, Settings
from pipeline.core.errors import (ConfigError, InputError, OperationFailed, PreflightError,
    VerificationFailed)
from pipeline.lineage.store import record_build
from pipeline.core.inputs import check_file
from pipeline.core.progress import NO_PROGRESS, Progress
from pipeline.core.records import BuildRecord, Verification

__all__ = ["ImportRequest", "ImportResult", "Preflight", "preflight", "import_image",
           "disk_layout", "DiskLayout", "METHODS"]

log = logging.getLogger(__name__)

METHODS = ("vm-import", "snapshot")

#: qemu-img format -> VM Import DiskContainer Format (None: convert to streamOptimized VMDK).
#: Only formats pipeline.image.diskread reads too: verify and --method snapshot need them.
_VMIMPORT_FORMAT: dict[str, str | None] = {
    "raw": "RAW", "vpc": "VHD", "vhdx": "VHDX", "vmdk": None, "qcow2": None,
}
_COMPRESSED = ((b"\x1f\x8b", "gzip", "gunzip"), (b"\xfd7zXZ\x00", "xz", "unxz"),
               (b"BZh", "bzip2", "bunzip2"), (b"\x28\xb5\x2f\xfd", "zstd", "unzstd"),
               (b"PK\x03\x04", "zip", "unzip"))

_ESP = uuid.UUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B").bytes_le
_BIOS_BOOT = uuid.UUID("21686148-6449-6E6F-744E-656564454649").bytes_le


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class ImportRequest:
    """What ``invoke import-image`` asked for; None means "from the configuration"."""

    image: str | None = None
    name: str | None = None
    method: str | None = None
    bucket: str | None = None
    create_role: bool = False
    keep_upload: bool = False
    detach: bool = False
    timeout: float = 7200.0
    kms_key_id: str | None = None
    #: First DescribeImportImageTasks delay in seconds; grows 1.5x up to ``poll_max``
    #: (about ten polls in the first minute, then one a minute).
    poll_interval: float = 1.0
    poll_max: float = 60.0
    #: Parallel S3 part uploads / EBS block writes.
    workers: int = 10
    #: Seconds to retry ImportImage while a role created by --create-role propagates.
    role_grace: float = 60.0


@dataclass(frozen=True, slots=True)
class DiskLayout:
    """The partition table of a disk image, as far as booting on EC2 is concerned."""

    table: str                # gpt | mbr | none
    partitions: int
    has_esp: bool
    has_bios_boot: bool


@dataclass(frozen=True, slots=True)
class Preflight:
    """Everything pre-flight learned; the import runs from this."""

    path: Path
    image: ImageSettings
    method: str
    bucket: str | None
    kms_key_id: str | None
    qemu_format: str
    vmimport_format: str | None       # None: convert to streamOptimized VMDK first
    virtual_size: int
    layout: DiskLayout
    verdict: str
    mechanism: str | None
    digest: s3_upload.FileDigest | None     # whole-file hashes: vm-import only
    upload_key: str | None = None     # the content-addressed S3 key (vm-import)
    role: Any = None

    @property
    def needs_conversion(self) -> bool:
        return self.method == "vm-import" and self.vmimport_format is None


@dataclass(slots=True)
class ImportResult:
    """The outcome of one import (``--json`` prints :meth:`to_dict`)."""

    image_id: str
    snapshot_ids: list[str]
    method: str
    build_id: str
    source_sha256: str | None       # whole-file SHA-256 (vm-import only)
    source_file: str
    bytes_sent: int
    seconds: float
    region: str
    image_name: str
    import_task_id: str | None = None
    upload: str | None = None
    upload_kept: bool = False
    upload_skipped: bool = False
    converted_from: str | None = None
    verification: dict[str, Any] | None = None
    source_content_id: str | None = None   # pipeline.image.identity (snapshot method)
    record: BuildRecord | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "record"}
        out["seconds"] = round(self.seconds, 2)
        if self.record is not None:
            out["record"] = self.record.to_dict()
        return out

    def summary(self) -> str:
        snaps = ", ".join(self.snapshot_ids)
        how = f"VM Import task {self.import_task_id}" if self.import_task_id else "EBS snapshot"
        return (f"imported {self.source_file} as {self.image_id} ({snaps}) in {self.region} via "
                f"{how}; build {self.build_id}; sent {self.bytes_sent} bytes in "
                f"{self.seconds:.1f}s; verified: "
                f"{(self.verification or {}).get('verdict', 'n/a')}")


# --------------------------------------------------------------------------- pre-flight


def _resolve(settings: Settings, req: ImportRequest) -> tuple[ImageSettings, Path, str,
                                                              str | None, str | None]:
    if req.name:
        image = settings.image(req.name)
    else:
        importable = [i for i in settings.images if i.import_ is not None]
        if len(importable) == 1:
            image = importable[0]
        elif req.image:
            stem = re.sub(r"[^A-Za-z0-9._-]", "-", Path(req.image).stem)[:63] or "imported"
            image = ImageSettings(name=stem)
        else:
            raise ConfigError(f"{settings.source or 'configuration'}: images: "
                              f"{len(importable)} images have an import section; pass --name "
                              "NAME or --image PATH")
    imp = image.import_ or ImportSettings(source=Path(""))
    source = req.image or (str(imp.source) if image.import_ else None)
    if not source:
        raise PreflightError(f"image {image.name!r} has no import.source; pass --image PATH")
    method = req.method or imp.method or "vm-import"
    if method not in METHODS:
        raise PreflightError(f"--method {method!r} is not one of {', '.join(METHODS)}")
    if method == "snapshot":
        idle = [flag for flag, given in (("--bucket", req.bucket), ("--create-role", req.create_role),
                                         ("--keep-upload", req.keep_upload),
                                         ("--detach", req.detach)) if given]
        if idle:
            raise PreflightError(f"--method snapshot: {', '.join(idle)} only apply to --method "
                                 "vm-import (the snapshot method writes EBS blocks directly: no "
                                 "S3 upload, no import task); drop them or use vm-import")
    bucket = req.bucket or imp.bucket or settings.s3_bucket
    if method == "vm-import" and not bucket:
        raise PreflightError("VM Import needs an S3 bucket: pass --bucket NAME or set "
                             "build.s3_bucket (or images[].import.bucket) in the configuration")
    kms = req.kms_key_id or imp.kms_key_id
    return image, Path(source).expanduser(), method, bucket, kms


def _qemu_info(path: Path) -> dict[str, Any]:
    try:
        out = subprocess.run(["qemu-img", "info", "--output=json", str(path)],
                             check=True, capture_output=True, text=True, timeout=120)
    except FileNotFoundError as err:
        raise PreflightError("qemu-img not found: install qemu-utils (scripts/setup.sh)") from err
    except subprocess.CalledProcessError as err:
        tail = (err.stderr or "").strip().splitlines()[-1:] or ["?"]
        raise PreflightError(f"{path}: not a disk image qemu-img can read ({tail[0]}); give "
                             "raw, VMDK, VHD/VHDX, qcow2 or OVA") from err
    return dict(json.loads(out.stdout))


def _container(path: Path, method: str) -> tuple[str, str | None, int]:
    """(qemu format, VM Import format or None to convert, virtual size)."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    for magic, kind, tool in _COMPRESSED:
        if head.startswith(magic):
            raise PreflightError(f"{path} is a {kind}-compressed file, not a disk image; "
                                 f"decompress it first ({tool} {path.name})")
    if head[257:262] == b"ustar":
        if method == "vm-import":
            _check_ova(path)
        return "ova", "OVA", 0
    info = _qemu_info(path)
    fmt = str(info.get("format"))
    size = int(info.get("virtual-size") or 0)
    if fmt not in _VMIMPORT_FORMAT:
        raise PreflightError(f"{path}: unsupported disk format {fmt!r}; give raw, VMDK, "
                             "VHD/VHDX, qcow2 or OVA")
    vmi = _VMIMPORT_FORMAT[fmt]
    if fmt == "vmdk":
        sub = ((info.get("format-specific") or {}).get("data") or {}).get("create-type")
        vmi = "VMDK" if sub == "streamOptimized" else None
    return fmt, vmi, size


def _check_ova(path: Path) -> None:
    """VM Import reads an OVA's OVF and its disks, which must be streamOptimized VMDKs."""
    try:
        with tarfile.open(path) as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
            if not any(m.name.lower().endswith(".ovf") for m in members):
                raise PreflightError(f"{path}: OVA without an .ovf descriptor; re-export it")
            disks = [m for m in members if not m.name.lower().endswith((".ovf", ".mf",
                                                                        ".cert"))]
            for m in disks:
                fh = tar.extractfile(m)
                head = fh.read(65536) if fh else b""
                if not (head[:4] == b"KDMV" and b'createType="streamOptimized"' in head):
                    raise PreflightError(
                        f"{path}: OVA disk {m.name} is not a streamOptimized VMDK, which VM "
                        "Import requires; re-export the OVA or import the disk itself")
    except tarfile.TarError as err:
        raise PreflightError(f"{path}: OVA (tar) cannot be read: {err}") from err


def disk_layout(path: Path) -> DiskLayout:
    """Partition table type and boot partitions, read through :mod:`pipeline.image.diskread`."""
    from pipeline.image.diskread import open_disk

    with open_disk(path) as disk:
        mbr = disk.read(0, 512)
        if mbr[510:512] != b"\x55\xaa":
            return DiskLayout("none", 0, False, False)
        types = [mbr[446 + 16 * i + 4] for i in range(4)]
        if 0xEE in types:
            hdr = disk.read(512, 512)
            if hdr[:8] != b"EFI PART":
                return DiskLayout("none", 0, False, False)
            lba = int.from_bytes(hdr[72:80], "little")
            count = min(int.from_bytes(hdr[80:84], "little"), 1024)
            esize = int.from_bytes(hdr[84:88], "little") or 128
            table = disk.read(lba * 512, count * esize)
            guids = [table[i * esize:i * esize + 16] for i in range(count)]
            used = [g for g in guids if g.strip(b"\0")]
            return DiskLayout("gpt", len(used), _ESP in used, _BIOS_BOOT in used)
        used_types = [t for t in types if t]
        return DiskLayout("mbr", len(used_types), 0xEF in used_types, False)


def _cluster_version(settings: Settings) -> str | None:
    """The configured cluster's Kubernetes version (verify's kubelet skew check), if any."""
    return settings.cluster.kubernetes_version if settings.cluster is not None else None


def _bootstrap(path: Path, require: str, cluster_version: str | None = None,
               strict: bool = False) -> tuple[str, str | None]:
    from pipeline.image import verify

    report = verify.verify_image(str(path), require=require, cluster_version=cluster_version,
                                 strict=strict)
    if getattr(report, "exit_code", 0):
        verdict = getattr(report, "verdict", "failed")
        raise PreflightError(
            f"{path}: the bootstrap contract does not hold (verdict {verdict!r}, required "
            f"{require!r}); run `invoke verify --image {path}` for details and fix the image",
            details=report.to_dict() if hasattr(report, "to_dict") else None)
    return str(getattr(report, "verdict", "ok")), getattr(report, "mechanism", None)


def _check_bucket(s3: Any, bucket: str) -> None:
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as err:
        code = error_code(err)
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise PreflightError(f"S3 bucket {bucket!r} does not exist: create it (aws s3 mb "
                                 f"s3://{bucket}) or pass --bucket NAME") from err
        raise PreflightError(f"S3 bucket {bucket!r} cannot be used: {code}; check that the "
                             "caller may s3:ListBucket and s3:PutObject on it") from err
    except BotoCoreError as err:
        raise OperationFailed(f"cannot reach S3 to check bucket {bucket!r}: {err}") from err


def preflight(settings: Settings, clients: Clients, req: ImportRequest,
              progress: Progress = NO_PROGRESS) -> Preflight:
    """All checks that must pass before anything is uploaded or created; see module doc."""
    image, path, method, bucket, kms = _resolve(settings, req)
    try:
        check_file(path, what="", hint="give the path of a disk image with --image")
    except InputError as err:
        raise PreflightError(err.message) from err
    qfmt, vmi_fmt, vsize = _container(path, method)
    verdict, mechanism = _bootstrap(path, image.require, _cluster_version(settings),
                                    image.verify_strict)
    layout = disk_layout(path)
    if layout.table == "none":
        raise PreflightError(f"{path}: no MBR or GPT partition table (a bare filesystem?); EC2 "
                             "needs a whole-disk image: partition it (sfdisk) and put the "
                             "filesystem inside")
    if image.architecture == "arm64" and image.boot_mode != "uefi":
        raise PreflightError(f"image {image.name!r} is arm64, and arm64 (Graviton) AMIs boot "
                             "with UEFI only; set boot_mode: uefi")
    if image.boot_mode == "uefi" and not layout.has_esp:
        raise PreflightError(f"{path}: boot_mode is uefi but the disk has no EFI System "
                             "Partition; set boot_mode: legacy-bios or add an ESP")
    if (image.boot_mode == "legacy-bios" and layout.table == "gpt" and layout.has_esp
            and not layout.has_bios_boot):
        raise PreflightError(f"{path}: the disk has an EFI System Partition and no BIOS boot "
                             "partition, so it boots with UEFI only; set boot_mode: uefi for "
                             f"image {image.name!r}")
    role = key = None
    if method == "vm-import" and image.boot_mode == "uefi" and kms:
        raise PreflightError("VM Import cannot encrypt UEFI imports: drop --kms-key, or use "
                             "--method snapshot")
    # Local, so still "before any byte leaves": the hash names the S3 key the role must
    # be able to read. Only VM Import needs the whole-file hash; the snapshot method's
    # identity (pipeline.image.identity) comes from the upload pass, holes never read.
    digest = None
    if method == "vm-import":
        digest = s3_upload.hash_file(path, progress=progress)
        assert bucket is not None
        name = f"{path.stem}.vmdk" if vmi_fmt is None else path.name
        key = s3_upload.object_key(digest.sha256, name)
        _check_bucket(clients.client("s3"), bucket)
        from pipeline.aws.iam import check_role

        role = check_role(clients.client("iam"), bucket, create=req.create_role, key=key,
                          kms_key_arn=kms)
    return Preflight(path=path, image=image, method=method, bucket=bucket, kms_key_id=kms,
                     qemu_format=qfmt, vmimport_format=vmi_fmt, virtual_size=vsize,
                     layout=layout, verdict=verdict, mechanism=mechanism, digest=digest,
                     upload_key=key, role=role)


# --------------------------------------------------------------------------- import


def _convert(src: Path, fmt: str, out_dir: Path, progress: Progress) -> Path:
    out = out_dir / f"{src.stem}.vmdk"
    progress.status(f"converting {src.name} ({fmt}) to streamOptimized VMDK for VM Import")
    try:
        subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "vmdk", "-o",
                        "subformat=streamOptimized", str(src), str(out)],
                       check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as err:
        tail = (err.stderr or "").strip().splitlines()[-1:] or ["?"]
        raise InputError(f"{src}: qemu-img could not convert it to VMDK: {tail[0]}") from err
    return out


def _lineage_tags(pf: Preflight, build_id: str, sha: str | None) -> dict[str, str]:
    out = {tags.MANAGED_BY: "eks-ami-pipeline", tags.BUILD_ID: build_id,
           tags.IMAGE_NAME: pf.image.name, tags.METHOD: pf.method,
           tags.SOURCE_SHA256: sha or "", tags.SOURCE_FILE: pf.path.name,
           tags.TOOL_VERSION: __version__, tags.CREATED_AT: tags.utc_now().isoformat()}
    return {k: v for k, v in out.items() if v}


def _image_snapshots(ec2: Any, image_id: str) -> list[str]:
    images = call(ec2.describe_images, what=f"describing {image_id}",
                  ImageIds=[image_id]).get("Images") or []
    return [s for img in images for s in snapshots_of(img)]


def _via_vm_import(clients: Clients, pf: Preflight, req: ImportRequest, digest: Any,
                   lineage: dict[str, str], undo: ExitStack, progress: Progress,
                   journal: Journal) -> tuple[str, list[str], int, dict[str, Any]]:
    s3, ec2 = clients.client("s3"), clients.client("ec2")
    bucket = pf.bucket
    assert bucket is not None
    meta = {"source-sha256": digest.sha256, "source-file": pf.path.name[:200],
            "build-id": lineage[tags.BUILD_ID]}
    info: dict[str, Any] = {}
    key = pf.upload_key
    assert key is not None

    def on_upload(upload_id: str) -> None:
        journal.record("multipart-upload", f"s3://{bucket}/{key}#{upload_id}", "s3")
    if pf.needs_conversion:
        existing = s3_upload.head_object(s3, bucket, key)
        if existing and existing.metadata.get("source-sha256") == digest.sha256:
            log.info("s3://%s/%s already holds the converted image; skipping conversion",
                     bucket, key)
            upload = s3_upload.UploadResult(bucket, key, existing.sha256 or "", existing.size,
                                            0, 0, 0, True, False, 0.0)
        else:
            tmp = Path(tempfile.mkdtemp(prefix="import-convert-"))
            try:
                converted = _convert(pf.path, pf.qemu_format, tmp, progress)
                upload = s3_upload.upload_file(s3, converted, bucket, key=key, metadata=meta,
                                               workers=req.workers, progress=progress,
                                               on_upload=on_upload)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        info["converted_from"] = pf.qemu_format
        disk_format = "VMDK"
    else:
        upload = s3_upload.upload_file(s3, pf.path, bucket, key=key, digest=digest,
                                       metadata=meta, workers=req.workers, progress=progress,
                                       on_upload=on_upload)
        disk_format = pf.vmimport_format or "RAW"
    info.update(upload=upload.url, upload_skipped=upload.skipped)
    if not upload.skipped:
        journal.record("s3-object", upload.url, "s3")
    keep = [req.keep_upload]
    # The upload goes once the import is over, whatever the outcome (unless kept);
    # with --detach on Ctrl-C the running task still needs it.
    undo.callback(lambda: None if keep[0] else _delete_upload(s3, bucket, upload.key, journal))

    image = pf.image
    spec = vm_import.ImportTaskSpec(
        bucket=bucket, key=upload.key, disk_format=disk_format,
        architecture=image.architecture, boot_mode=image.boot_mode,
        client_token=vm_import.client_token(digest.sha256, image.name, image.architecture,
                                            image.boot_mode, pf.kms_key_id,
                                            lineage[tags.BUILD_ID]),
        description=f"{image.name} {pf.path.name} {lineage[tags.BUILD_ID]}",
        tags=lineage, encrypted=image.boot_mode != "uefi", kms_key_id=pf.kms_key_id)
    fresh_role = bool(pf.role and (pf.role.created or pf.role.policy_added))
    try:
        task_id = vm_import.start_import(ec2, spec,
                                         role_grace=req.role_grace if fresh_role else 0)
    except KeyboardInterrupt:
        # Ctrl-C while AWS answered ImportImage: the task may run without our knowing
        # its id. The same ClientToken returns that task (idempotent); cancel it.
        try:
            lost = vm_import.start_import(ec2, spec)
            journal.record("import-task", lost)
            vm_import.cancel_import(ec2, lost, "interrupted by the user (Ctrl-C)",
                                    lineage[tags.BUILD_ID])
        except Exception as err:  # noqa: BLE001 - the interrupt is what matters
            log.warning("could not find the import task ImportImage started: %s", err)
        raise
    journal.record("import-task", task_id)
    info["import_task_id"] = task_id
    try:
        outcome = vm_import.wait_import(ec2, task_id, timeout=req.timeout, detach=req.detach,
                                        poll_interval=req.poll_interval, poll_max=req.poll_max,
                                        build_id=lineage[tags.BUILD_ID], progress=progress)
    except vm_import.ImportTaskFailed:
        raise                        # the task is over: its upload goes
    except (KeyboardInterrupt, OperationFailed) as err:
        if req.detach:               # timeout / lost track / Ctrl-C: the task still runs
            keep[0] = True
            if isinstance(err, KeyboardInterrupt):
                err.kept_for_resume = [  # type: ignore[attr-defined]
                    f"import task {task_id} keeps running (--detach) and its upload "
                    f"{upload.url} stays for it; follow it with `aws ec2 "
                    f"describe-import-image-tasks --import-task-ids {task_id}`"]
        raise
    journal.record_many([("image", outcome.image_id, None)]
                        + [("snapshot", sn, None) for sn in outcome.snapshot_ids])
    undo.callback(vm_import.remove_leftovers, ec2, {"ImageId": outcome.image_id,
                                                    "SnapshotDetails": []},
                  lineage[tags.BUILD_ID])
    snaps = list(dict.fromkeys([*outcome.snapshot_ids,
                                *_image_snapshots(ec2, outcome.image_id)]))
    return outcome.image_id, snaps, upload.bytes_sent, info


def _delete_upload(s3: Any, bucket: str, key: str, journal: Journal) -> str:
    """Remove this run's upload (object and open uploads it journaled), nobody else's.

    ``removed`` (or gone), ``foreign`` when another build uploaded the object (e.g. kept
    with --keep-upload and reused by this run), ``failed`` when AWS refused."""
    url = f"s3://{bucket}/{key}"
    uploads = [r.id.rpartition("#")[2] for r in journal.resources("multipart-upload")
               if r.id.startswith(url + "#")]
    try:
        done = s3_upload.delete_upload(s3, bucket, key, build_id=journal.build_id,
                                       upload_ids=uploads)
    except Exception as err:  # noqa: BLE001 - clean-up must not hide the real outcome
        log.warning("could not delete s3://%s/%s: %s", bucket, key, err)
        return "failed"
    for r in done:
        if r.outcome == "removed":
            log.info("deleted %s %s", r.kind, r.id)
        elif not r.ok:
            log.info("%s %s stays: %s", r.kind, r.id, r.error)
    objects = [r for r in done if r.kind == "s3-object"]
    if all(r.ok for r in objects):
        return "removed"
    return "foreign" if any((r.error or "").startswith("kept:") for r in objects) else "failed"


def _via_snapshot(clients: Clients, pf: Preflight, req: ImportRequest,
                  lineage: dict[str, str], undo: ExitStack, progress: Progress,
                  journal: Journal) -> tuple[str, list[str], int, dict[str, Any]]:
    from pipeline.aws import ebs as snapshot_upload

    # 16 block writers: measured 8 GiB raw (268 MiB sent) on 2 cores, emulator: 4 workers
    # 8.6 s, 8 7.4 s, 16 6.1-6.9 s, 32 6.7-7.2 s (benchmarks/import_bench.py).
    out = snapshot_upload.import_as_snapshot(
        clients, pf.path, name=f"{pf.image.name}-{lineage[tags.BUILD_ID]}",
        architecture=pf.image.architecture, boot_mode=pf.image.boot_mode, tags=lineage,
        kms_key_id=pf.kms_key_id, workers=max(req.workers, 16), undo=undo, progress=progress,
        on_created=lambda kind, rid: journal.record(kind, rid))
    if out.content_id:          # known only now: computed in the upload pass
        lineage[tags.SOURCE_CONTENT] = out.content_id
    return out.image_id, [out.snapshot_id], out.bytes_sent, {
        "blocks_sent": out.blocks_sent, "blocks_total": out.blocks_total,
        "source_content_id": out.content_id}


def _tag(ec2: Any, ids: list[str], lineage: dict[str, str]) -> None:
    call(ec2.create_tags, what=f"tagging {', '.join(ids)} with lineage", Resources=ids,
         Tags=tags.to_tag_list(lineage))


def _verify_ami(clients: Clients, image_id: str, require: str,
                cluster_version: str | None = None, strict: bool = False) -> Verification:
    from pipeline.lineage.verify_ami import verify_ami

    report = verify_ami(clients, image_id, require=require, tag=True,
                        cluster_version=cluster_version, strict=strict)
    verdict = report.verdict
    ver: Verification = report.to_verification()
    if report.exit_code:
        raise VerificationFailed(
            f"{image_id}: verify --ami says {verdict!r} (required {require!r}) although the "
            "image passed pre-flight; the AMI was removed; report this with the image",
            details=report.to_dict() if hasattr(report, "to_dict") else None)
    return ver


def import_image(settings: Settings, clients: Clients, req: ImportRequest,
                 progress: Progress = NO_PROGRESS) -> ImportResult:
    """Pre-flight, import, tag, verify and record one disk image; see the module doc."""
    t0 = time.monotonic()
    pf = preflight(settings, clients, req, progress)
    digest = pf.digest
    build_id = tags.new_build_id()
    record = BuildRecord(build_id=build_id, image_name=pf.image.name, method=pf.method,
                         started_at=BuildRecord.now(), source_file=pf.path.name,
                         tool_version=__version__)
    record.source_sha256 = digest.sha256 if digest is not None else None
    if pf.method == "vm-import":   # snapshot: from the upload pass; here allocated data only
        from pipeline.image.identity import file_identity

        record.source_content_id = file_identity(str(pf.path))
    lineage = _lineage_tags(pf, build_id, record.source_sha256)
    ec2 = clients.client("ec2")
    journal = Journal.open(clients, settings.ssm_prefix, pf.image.name, build_id)
    try:
        return _import_journaled(settings, clients, req, pf, digest, build_id, record,
                                 lineage, ec2, journal, progress, t0)
    except BaseException:
        # The undo ran; what it could not remove (or kept for a resume) stays recorded
        # for `invoke reap`, which removes it after the grace period.
        journal.close("failed")
        raise


def _import_journaled(settings: Settings, clients: Clients, req: ImportRequest, pf: Preflight,
                      digest: Any, build_id: str, record: BuildRecord, lineage: dict[str, str],
                      ec2: Any, journal: Journal, progress: Progress,
                      t0: float) -> ImportResult:
    with ExitStack() as undo:
        if pf.method == "vm-import":
            image_id, snaps, sent, info = _via_vm_import(clients, pf, req, digest, lineage,
                                                         undo, progress, journal)
        else:
            image_id, snaps, sent, info = _via_snapshot(clients, pf, req, lineage, undo,
                                                        progress, journal)
        _tag(ec2, [image_id, *snaps], lineage)
        progress.status(f"verifying {image_id} offline (verify --ami)")
        verification = _verify_ami(clients, image_id, pf.image.require,
                                   _cluster_version(settings), pf.image.verify_strict)
        record.status = "succeeded"
        record.finished_at = BuildRecord.now()
        record.image_ids = {clients.region: image_id}
        record.snapshot_ids = {clients.region: snaps}
        record.verification = verification
        record.source_content_id = (info.pop("source_content_id", None)
                                    or record.source_content_id)
        record.extra = {k: v for k, v in info.items() if v is not None}
        record_build(settings, clients, record)      # SSM record + manifest (lineage)
        kept_upload = bool(info.get("upload")) and req.keep_upload
        foreign = False
        undo.pop_all()
        if pf.method == "vm-import" and not req.keep_upload and info.get("upload"):
            bucket, key = str(info["upload"])[5:].split("/", 1)
            gone = _delete_upload(clients.client("s3"), bucket, key, journal)
            kept_upload = gone != "removed"  # reported; reap removes a failed delete's
            foreign = gone == "foreign"      # another build's object (reused): stays
        journal.close("succeeded", keep=[("image", image_id, None)]
                      + [("snapshot", sn, None) for sn in snaps]
                      + ([("s3-object", str(info["upload"]), "s3")]
                         if req.keep_upload or foreign else []))
    return ImportResult(
        image_id=image_id, snapshot_ids=snaps, method=pf.method, build_id=build_id,
        source_sha256=record.source_sha256, source_content_id=record.source_content_id,
        source_file=str(pf.path), bytes_sent=sent,
        seconds=time.monotonic() - t0, region=clients.region, image_name=pf.image.name,
        import_task_id=info.get("import_task_id"), upload=info.get("upload"),
        upload_kept=kept_upload, upload_skipped=bool(info.get("upload_skipped")),
        converted_from=info.get("converted_from"),
        verification={"verdict": verification.verdict, "mechanism": verification.mechanism},
        record=record)
