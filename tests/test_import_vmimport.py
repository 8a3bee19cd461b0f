"""``--method vm-import`` end to end against the emulator's VM Import (ImportImage et al.).

Covers: conversion + upload + task + lineage + verify; re-run skipping the upload;
a task the emulator fails (the role loses S3 access after pre-flight) → exit 1 and
nothing left; Ctrl-C → CancelImportTask; ``--detach``; ``--timeout``.
"""
from __future__ import annotations

import hashlib
import json
import time

import pytest

from pipeline.core import tags
from pipeline.core.errors import ImportTaskFailed, OperationFailed
from pipeline.ingest.importer import ImportRequest, import_image
from test_import_e2e import (BUCKET, _inventory, _raw_sha256, _settings,  # noqa: F401
                                   _snapshot_sha256, bare_raw, good_qcow2, good_raw,
                                   no_table_raw)

FAST = {"poll_interval": 0.1, "poll_max": 0.3}


class Hook:
    """A Progress that runs ``fn(kind, text)`` on every start label and status line."""

    def __init__(self, fn) -> None:
        self.fn = fn
        self.lines: list[str] = []

    def start(self, total, label: str = "") -> None:
        self.lines.append(label)
        self.fn("start", label)

    def advance(self, n: int = 1) -> None:
        pass

    def status(self, message: str) -> None:
        self.lines.append(message)
        self.fn("status", message)

    def done(self) -> None:
        pass


@pytest.fixture
def bucket(clients) -> str:
    clients.client("s3").create_bucket(Bucket=BUCKET)
    return BUCKET


def _task(clients, task_id: str) -> dict:
    return clients.client("ec2").describe_import_image_tasks(
        ImportTaskIds=[task_id])["ImportImageTasks"][0]


def _wait_task_end(clients, task_id: str, timeout: float = 20) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        task = _task(clients, task_id)
        if task["Status"] in ("completed", "deleted"):
            return task
        time.sleep(0.1)
    raise AssertionError(f"{task_id} did not end")


def test_vm_import_converts_uploads_imports_tags_and_verifies(
        realistic_emulator, clients, aws_settings, tmp_path, bucket, good_qcow2) -> None:
    settings = _settings(aws_settings, tmp_path, good_qcow2)
    progress = Hook(lambda *_: None)
    result = import_image(settings, clients, ImportRequest(create_role=True, **FAST),
                          progress=progress)
    assert result.method == "vm-import" and result.converted_from == "qcow2"
    assert result.import_task_id and result.import_task_id.startswith("import-ami-")
    assert any("converting" in line for line in progress.lines)       # status was shown
    task = _task(clients, result.import_task_id)
    assert task["Status"] == "completed" and task["ImageId"] == result.image_id
    assert task["LicenseType"] == "BYOL" and task["BootMode"] == "legacy-bios"
    assert task["Encrypted"] is True
    assert task["SnapshotDetails"][0]["Format"] == "VMDK"
    task_tags = tags.from_tag_list(task["Tags"])
    assert task_tags[tags.BUILD_ID] == result.build_id

    ec2 = clients.client("ec2")
    image = ec2.describe_images(ImageIds=[result.image_id])["Images"][0]
    image_tags = tags.from_tag_list(image["Tags"])
    sha = hashlib.sha256(good_qcow2.read_bytes()).hexdigest()
    assert image_tags[tags.SOURCE_SHA256] == sha == result.source_sha256
    assert image_tags[tags.METHOD] == "vm-import" and image_tags[tags.BUILD_ID] == result.build_id
    assert image_tags[tags.SOURCE_FILE] == good_qcow2.name
    assert image_tags[tags.VERIFY_VERDICT] == "ok"
    for snap in ec2.describe_snapshots(SnapshotIds=result.snapshot_ids)["Snapshots"]:
        assert tags.from_tag_list(snap["Tags"])[tags.SOURCE_SHA256] == sha

    raw_sha, raw_size = _raw_sha256(good_qcow2, tmp_path)
    assert _snapshot_sha256(clients, result.snapshot_ids[0], raw_size)[0] == raw_sha
    inv = _inventory(clients)
    assert inv["objects"] == [] and inv["uploads"] == []                # upload deleted
    assert result.bytes_sent > 0 and result.upload.startswith(f"s3://{BUCKET}/imports/")
    manifest = json.loads((tmp_path / "build" / "manifest.json").read_text())   # lineage
    assert result.build_id in json.dumps(manifest)
    assert result.record.status == "succeeded"
    assert result.record.image_ids == {"us-east-1": result.image_id}


def test_rerun_skips_the_upload_and_keep_upload_keeps_it(
        clients, aws_settings, tmp_path, bucket, good_raw) -> None:
    settings = _settings(aws_settings, tmp_path, good_raw)
    first = import_image(settings, clients,
                         ImportRequest(create_role=True, keep_upload=True, **FAST))
    assert first.bytes_sent == good_raw.stat().st_size and first.upload_kept
    assert _inventory(clients)["objects"] == [first.upload[len(f"s3://{BUCKET}/"):]]
    second = import_image(settings, clients, ImportRequest(**FAST))
    assert second.upload_skipped and second.bytes_sent == 0
    assert second.upload == first.upload and second.image_id != first.image_id
    # The object is the first build's (kept on purpose): the second run reused it and
    # leaves it, saying so; it never deletes what another build uploaded.
    assert second.upload_kept
    assert _inventory(clients)["objects"] == [first.upload[len(f"s3://{BUCKET}/"):]]


def test_failed_task_exits_1_quotes_aws_and_leaves_nothing(
        clients, aws_settings, tmp_path, bucket, good_raw) -> None:
    """The role loses S3 access after pre-flight (during the upload): the task fails."""
    settings = _settings(aws_settings, tmp_path, good_raw)
    iam = clients.client("iam")

    def revoke(kind: str, text: str) -> None:
        if kind == "start" and text.startswith("upload"):
            iam.delete_role_policy(RoleName="vmimport", PolicyName="vmimport")

    before = _inventory(clients)
    with pytest.raises(ImportTaskFailed) as err:
        import_image(settings, clients, ImportRequest(create_role=True, **FAST),
                     progress=Hook(revoke))
    msg = str(err.value)
    assert err.value.exit_code == 1
    assert "Disk validation failed" in msg and "403 Forbidden" in msg       # AWS's words
    assert "--create-role" in msg                                          # the likely fix
    assert _inventory(clients) == before


def test_ctrl_c_cancels_the_task_and_cleans_up(clients, aws_settings, tmp_path, bucket,
                                               good_raw) -> None:
    settings = _settings(aws_settings, tmp_path, good_raw)

    def interrupt(kind: str, text: str) -> None:
        if kind == "status" and text.startswith("import task") and "active" in text:
            raise KeyboardInterrupt

    hook = Hook(interrupt)
    with pytest.raises(KeyboardInterrupt):
        import_image(settings, clients, ImportRequest(create_role=True, **FAST), progress=hook)
    assert any(line.startswith("cancelled import task") for line in hook.lines)
    task = clients.client("ec2").describe_import_image_tasks()["ImportImageTasks"][0]
    assert task["Status"] in ("deleting", "deleted")
    _wait_task_end(clients, task["ImportTaskId"])
    inv = _inventory(clients)
    assert inv["images"] == [] and inv["snapshots"] == [] and inv["objects"] == []


def test_detach_leaves_the_task_running_with_its_upload(clients, aws_settings, tmp_path,
                                                        bucket, good_raw) -> None:
    settings = _settings(aws_settings, tmp_path, good_raw)

    def interrupt(kind: str, text: str) -> None:
        if kind == "status" and text.startswith("import task") and "active" in text:
            raise KeyboardInterrupt

    hook = Hook(interrupt)
    with pytest.raises(KeyboardInterrupt):
        import_image(settings, clients, ImportRequest(create_role=True, detach=True, **FAST),
                     progress=hook)
    assert any(line.startswith("detached") for line in hook.lines)
    task = clients.client("ec2").describe_import_image_tasks()["ImportImageTasks"][0]
    assert _wait_task_end(clients, task["ImportTaskId"])["Status"] == "completed"
    assert len(_inventory(clients)["objects"]) == 1                     # still needed by it


def test_timeout_cancels_the_task(clients, aws_settings, tmp_path, bucket, good_raw) -> None:
    settings = _settings(aws_settings, tmp_path, good_raw)
    with pytest.raises(OperationFailed) as err:
        import_image(settings, clients, ImportRequest(create_role=True, timeout=0.3, **FAST))
    assert "did not finish within" in str(err.value) and "cancelled it" in str(err.value)
    assert err.value.exit_code == 1
    task = clients.client("ec2").describe_import_image_tasks()["ImportImageTasks"][0]
    _wait_task_end(clients, task["ImportTaskId"])
    inv = _inventory(clients)
    assert inv["images"] == [] and inv["snapshots"] == [] and inv["objects"] == []


class StopUploadAfter(Hook):
    """Ctrl-C after ``n`` acknowledged upload parts."""

    def __init__(self, n: int) -> None:
        super().__init__(lambda *_: None)
        self.n, self.parts, self.uploading = n, 0, False

    def start(self, total, label: str = "") -> None:
        super().start(total, label)
        self.uploading = label.startswith("upload")

    def advance(self, n: int = 1) -> None:
        if self.uploading and n:
            self.parts += 1
            if self.parts >= self.n:
                raise KeyboardInterrupt


def test_interrupted_upload_is_resumed_by_the_next_run(clients, aws_settings, tmp_path, bucket,
                                                       good_raw) -> None:
    settings = _settings(aws_settings, tmp_path, good_raw)
    with pytest.raises(KeyboardInterrupt):
        import_image(settings, clients, ImportRequest(create_role=True, workers=1, **FAST),
                     progress=StopUploadAfter(3))
    inv = _inventory(clients)
    assert len(inv["uploads"]) == 1 and inv["objects"] == []          # left resumable
    assert inv["images"] == [] and inv["snapshots"] == []
    result = import_image(settings, clients, ImportRequest(**FAST))
    size = good_raw.stat().st_size                                     # 64 MiB = 8 parts
    assert 0 < result.bytes_sent <= size - 3 * 8 * 1024 * 1024
    assert _inventory(clients)["uploads"] == []


@pytest.mark.parametrize("message, fix_words", [
    ("ClientError: No valid partitions. Not a valid volume.", "partition table"),
    ("ClientError: Unsupported kernel version 4.18.0-15-generic", "--method snapshot"),
    ("ClientError: BLSC-style GRUB found, but unable to detect default kernel", "grubby"),
    ("ClientError: EFI partition detected. UEFI booting is not supported in EC2.",
     "boot_mode: uefi"),
    ("ClientError: Disk validation failed [We do not have access to the given resource. "
     "Reason 403 Forbidden]", "--create-role"),
    ("ClientError: Disk validation failed [Unsupported VMDK File Format]", "streamOptimized"),
    ("ClientError: something nobody has seen", "vmimport-troubleshooting"),
])
def test_known_failures_map_to_a_fix(message, fix_words) -> None:
    from pipeline.ingest.vm_import import likely_fix

    assert fix_words in likely_fix(message)
