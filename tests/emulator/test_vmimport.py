"""EC2 VM Import against the emulator over HTTP, with real disk images from the factory.

Sources: AWS-FACTS §1; awsdocs/vm-import-export-user-guide doc_source/required-permissions.md
(trust policy, role policy), vmimport-image-import.md (task states, cancel),
vmimport-troubleshooting.md (service-role message); botocore ec2 model (ImportImage,
DescribeImportImageTasks, CancelImportTask shapes); failure messages quoted in AWS-FACTS §1
(REMnux/remnux-cli#156, keithvassallomt/windows10-ec2#3) and "Disk validation failed
[Unsupported VMDK File Format]" (qemu-img monolithicSparse VMDKs).
"""
from __future__ import annotations

import json
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from pipeline_dev.diskimage import MiB, ImageSpec, build_image, root_tree

BUCKET = "disk-images"
BS = 524288
TRUST = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "vmie.amazonaws.com"},
    "Action": "sts:AssumeRole", "Condition": {"StringEquals": {"sts:Externalid": "vmimport"}}}]}
POLICY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["s3:GetBucketLocation", "s3:GetObject", "s3:ListBucket"],
     "Resource": [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"]},
    {"Effect": "Allow", "Action": ["ec2:ModifySnapshotAttribute", "ec2:CopySnapshot",
                                   "ec2:RegisterImage", "ec2:Describe*"], "Resource": "*"}]}


@pytest.fixture(scope="session")
def disks(image_cache: Path) -> dict[str, Path]:
    """Small (64 MiB) images: a GPT raw disk in several containers, and a bare filesystem."""
    tree = root_tree(image_cache / "vmimport-tree", "al2023")
    out = {}
    for name, spec in {
        "raw": ImageSpec(fs="ext4", table="gpt", fmt="raw", size=64 * MiB),
        "bare": ImageSpec(fs="ext4", table="none", fmt="raw", size=64 * MiB),
    }.items():
        out[name] = build_image(tree, image_cache / f"vmimport-{name}.raw", spec)
    for name, args in {"vmdk": ["-O", "vmdk", "-o", "subformat=streamOptimized"],
                       "sparse": ["-O", "vmdk", "-o", "subformat=monolithicSparse"],
                       "vhd": ["-O", "vpc", "-o", "subformat=dynamic"],
                       "qcow2": ["-O", "qcow2"]}.items():
        dst = image_cache / f"vmimport-{name}.img"
        subprocess.run(["qemu-img", "convert", "-f", "raw", *args, str(out["raw"]), str(dst)],
                       check=True, capture_output=True)
        out[name] = dst
    out["ova"] = build_image(tree, image_cache / "vmimport.ova",
                             ImageSpec(fs="ext4", table="gpt", fmt="ova", size=64 * MiB))
    return out


@pytest.fixture
def aws(clients):
    """ec2/s3/iam/ebs clients with the documented vmimport role and a bucket."""
    iam, s3 = clients.client("iam"), clients.client("s3")
    iam.create_role(RoleName="vmimport", AssumeRolePolicyDocument=json.dumps(TRUST))
    iam.put_role_policy(RoleName="vmimport", PolicyName="vmimport",
                        PolicyDocument=json.dumps(POLICY))
    s3.create_bucket(Bucket=BUCKET)
    return {s: clients.client(s) for s in ("ec2", "s3", "iam", "ebs")}


def _start(ec2, key: str, fmt: str, **kw) -> dict:
    return ec2.import_image(
        Architecture=kw.pop("Architecture", "x86_64"), LicenseType="BYOL",
        DiskContainers=[{"Format": fmt, "UserBucket": {"S3Bucket": BUCKET, "S3Key": key}}], **kw)


def _wait(ec2, task_ids: list[str], timeout: float = 30) -> dict[str, dict]:
    """Poll until every task is completed or deleted; also record each StatusMessage seen."""
    seen: dict[str, list[str]] = {t: [] for t in task_ids}
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        tasks = ec2.describe_import_image_tasks(ImportTaskIds=task_ids)["ImportImageTasks"]
        for t in tasks:
            msg = t.get("StatusMessage")
            if msg and (not seen[t["ImportTaskId"]] or seen[t["ImportTaskId"]][-1] != msg):
                seen[t["ImportTaskId"]].append(msg)
        if all(t["Status"] in ("completed", "deleted") for t in tasks):
            return {t["ImportTaskId"]: {**t, "_seen": seen[t["ImportTaskId"]]} for t in tasks}
        time.sleep(0.05)
    raise AssertionError(f"import tasks still running after {timeout}s: {tasks}")


def _snapshot_bytes(ebs, sid: str) -> dict[int, bytes]:
    out = {}
    for b in ebs.list_snapshot_blocks(SnapshotId=sid)["Blocks"]:
        got = ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=b["BlockIndex"],
                                     BlockToken=b["BlockToken"])
        out[b["BlockIndex"]] = got["BlockData"].read()
    return out


def _raw_blocks(path: Path) -> dict[int, bytes]:
    data, out = path.read_bytes(), {}
    for i in range(0, len(data), BS):
        chunk = data[i:i + BS].ljust(BS, b"\0")
        if chunk.strip(b"\0"):
            out[i // BS] = chunk
    return out


def test_role_check_is_synchronous(clients):
    ec2, iam = clients.client("ec2"), clients.client("iam")
    with pytest.raises(ClientError) as exc:
        _start(ec2, "k", "VMDK")
    err = exc.value.response["Error"]
    assert err["Code"] == "InvalidParameter"
    assert err["Message"] == ("The service role vmimport provided does not exist or does not "
                              "have sufficient permissions")
    bad = json.loads(json.dumps(TRUST))
    bad["Statement"][0]["Condition"]["StringEquals"]["sts:Externalid"] = "other"
    iam.create_role(RoleName="custom", AssumeRolePolicyDocument=json.dumps(bad))
    with pytest.raises(ClientError) as exc:
        _start(ec2, "k", "VMDK", RoleName="custom")
    assert "The service role custom provided" in exc.value.response["Error"]["Message"]
    good = json.loads(json.dumps(TRUST))
    good["Statement"][0]["Condition"] = {"StringEquals": {"sts:ExternalId": "vmimport"}}
    iam.create_role(RoleName="custom2", AssumeRolePolicyDocument=json.dumps(good))
    # The condition key is case-insensitive.
    assert _start(ec2, "k", "VMDK", RoleName="custom2")["Status"] == "active"


def test_vmdk_import_walks_states_and_registers_ami_with_the_bytes(aws, disks):
    ec2, ebs = aws["ec2"], aws["ebs"]
    aws["s3"].upload_file(str(disks["vmdk"]), BUCKET, "img/disk.vmdk")
    tags = [{"ResourceType": "import-image-task", "Tags": [{"Key": "build", "Value": "b1"}]}]
    first = _start(ec2, "img/disk.vmdk", "VMDK", BootMode="legacy-bios", ClientToken="tok-1",
                   TagSpecifications=tags)
    # First response (aws-cli examples/ec2/import-image.rst): active / pending / "2".
    assert (first["Status"], first["StatusMessage"], first["Progress"]) == \
        ("active", "pending", "2")
    assert first["ImportTaskId"].startswith("import-ami-")
    assert first["SnapshotDetails"][0]["DiskImageSize"] == 0.0
    assert first["Tags"] == [{"Key": "build", "Value": "b1"}]
    # Same token, same parameters: the same task (a change would be IdempotentParameterMismatch).
    again = _start(ec2, "img/disk.vmdk", "VMDK", BootMode="legacy-bios", ClientToken="tok-1",
                   TagSpecifications=tags)
    assert again["ImportTaskId"] == first["ImportTaskId"]
    done = _wait(ec2, [first["ImportTaskId"]])[first["ImportTaskId"]]
    assert done["Status"] == "completed" and "StatusMessage" not in done
    order = ["pending", "validating", "validated", "converting", "updating", "booting",
             "preparing ami"]
    seen = [m for m in done["_seen"] if m in order]
    assert seen == sorted(set(seen), key=order.index)  # never goes backwards
    assert "converting" in seen and "preparing ami" in seen, done["_seen"]
    detail = done["SnapshotDetails"][0]
    assert detail["Status"] == "completed"
    assert detail["DiskImageSize"] == disks["vmdk"].stat().st_size
    img = ec2.describe_images(ImageIds=[done["ImageId"]])["Images"][0]
    assert (img["RootDeviceName"], img["Architecture"]) == ("/dev/sda1", "x86_64")
    assert img["BootMode"] == "legacy-bios"
    root = img["BlockDeviceMappings"][0]
    assert root["DeviceName"] == "/dev/sda1" and root["Ebs"]["SnapshotId"] == detail["SnapshotId"]
    assert _snapshot_bytes(ebs, detail["SnapshotId"]) == _raw_blocks(disks["raw"])


def _ova_raw(ova: Path, tmp: Path) -> Path:
    """The OVA's disk as raw (the factory built the OVA separately, so its bytes differ)."""
    with tarfile.open(ova) as tar:
        vmdk = next(m for m in tar.getmembers() if m.name.endswith(".vmdk"))
        tar.extract(vmdk, tmp, filter="data")
    raw = tmp / "ova.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(tmp / vmdk.name), str(raw)],
                   check=True, capture_output=True)
    return raw


@pytest.mark.parametrize("name,fmt", [("ova", "OVA"), ("vhd", "VHD")])
def test_ova_and_vhd_import(aws, disks, name, fmt, tmp_path):
    aws["s3"].upload_file(str(disks[name]), BUCKET, f"img/{name}")
    tid = _start(aws["ec2"], f"img/{name}", fmt, Architecture="arm64")["ImportTaskId"]
    done = _wait(aws["ec2"], [tid])[tid]
    assert done["Status"] == "completed", done
    sid = done["SnapshotDetails"][0]["SnapshotId"]
    expect = _ova_raw(disks["ova"], tmp_path) if name == "ova" else disks["raw"]
    assert _snapshot_bytes(aws["ebs"], sid) == _raw_blocks(expect)
    img = aws["ec2"].describe_images(ImageIds=[done["ImageId"]])["Images"][0]
    assert img["Architecture"] == "arm64"


def test_failures_end_deleted_with_documented_messages(aws, disks, clients):
    ec2, s3, iam = aws["ec2"], aws["s3"], aws["iam"]
    for name in ("sparse", "bare", "qcow2"):
        s3.upload_file(str(disks[name]), BUCKET, f"img/{name}")
    cases = {
        _start(ec2, "img/sparse", "VMDK")["ImportTaskId"]:
            "ClientError: Disk validation failed [Unsupported VMDK File Format]",
        _start(ec2, "img/qcow2", "VHD")["ImportTaskId"]:
            "ClientError: Disk validation failed [Unsupported VHD File Format]",
        _start(ec2, "img/bare", "RAW")["ImportTaskId"]:
            "ClientError: No valid partitions. Not a valid volume.",
        _start(ec2, "img/missing", "RAW")["ImportTaskId"]:
            "ClientError: Disk validation failed [We do not have access to the given "
            "resource. Reason 403 Forbidden]",
    }
    done = _wait(ec2, list(cases))
    for tid, message in cases.items():
        assert done[tid]["Status"] == "deleted"
        assert done[tid]["StatusMessage"] == message
        assert "ImageId" not in done[tid] and "Progress" not in done[tid]
    assert ec2.describe_images(Owners=["self"])["Images"] == []
    assert ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"] == []
    # A role whose policy does not grant s3:GetObject cannot read an existing object.
    iam.delete_role_policy(RoleName="vmimport", PolicyName="vmimport")
    s3.upload_file(str(disks["raw"]), BUCKET, "img/raw")
    tid = _start(ec2, "img/raw", "RAW")["ImportTaskId"]
    assert _wait(ec2, [tid])[tid]["StatusMessage"].endswith("Reason 403 Forbidden]")


def test_s3_url_form(aws, disks):
    # botocore model ImageDiskContainer.Url: "The URL to the Amazon S3-based disk image ...
    # (s3://..)".
    aws["s3"].upload_file(str(disks["raw"]), BUCKET, "img/raw")
    tid = aws["ec2"].import_image(DiskContainers=[
        {"Format": "raw", "Url": f"s3://{BUCKET}/img/raw"}])["ImportTaskId"]
    assert _wait(aws["ec2"], [tid])[tid]["Status"] == "completed"


def test_cancel_leaves_nothing(aws, disks):
    ec2 = aws["ec2"]
    aws["s3"].upload_file(str(disks["raw"]), BUCKET, "img/raw")
    tid = _start(ec2, "img/raw", "RAW")["ImportTaskId"]
    out = ec2.cancel_import_task(ImportTaskId=tid, CancelReason="changed my mind")
    assert out == {**out, "ImportTaskId": tid, "PreviousState": "active", "State": "deleting"}
    done = _wait(ec2, [tid])[tid]
    assert done["Status"] == "deleted" and "ImageId" not in done
    assert ec2.describe_images(Owners=["self"])["Images"] == []
    with pytest.raises(ClientError):
        ec2.cancel_import_task(ImportTaskId=tid)


def test_describe_filters_and_paging(aws, disks):
    ec2 = aws["ec2"]
    aws["s3"].upload_file(str(disks["raw"]), BUCKET, "img/raw")
    ids = [_start(ec2, "img/raw", "RAW")["ImportTaskId"] for _ in range(3)]
    ec2.cancel_import_task(ImportTaskId=ids[0])
    _wait(ec2, ids)
    deleted = ec2.describe_import_image_tasks(
        Filters=[{"Name": "task-state", "Values": ["deleted"]}])["ImportImageTasks"]
    assert [t["ImportTaskId"] for t in deleted] == [ids[0]]
    got, token = [], None
    while True:
        kw = {"NextToken": token} if token else {}
        page = ec2.describe_import_image_tasks(MaxResults=2, **kw)
        got += [t["ImportTaskId"] for t in page["ImportImageTasks"]]
        token = page.get("NextToken")
        if not token:
            break
    assert sorted(got) == sorted(ids)


def test_request_validation(aws):
    ec2 = aws["ec2"]
    with pytest.raises(ClientError) as exc:
        _start(ec2, "k", "QCOW2")
    assert exc.value.response["Error"]["Code"] == "InvalidParameter"
    with pytest.raises(ClientError) as exc:  # AWS-FACTS §1: not supported for imports
        _start(ec2, "k", "RAW", BootMode="uefi-preferred")
    assert exc.value.response["Error"]["Code"] == "InvalidParameter"
    with pytest.raises(ClientError):  # licensing.md: giving both returns an error
        ec2.import_image(LicenseType="BYOL", UsageOperation="RunInstances", DiskContainers=[
            {"Format": "RAW", "UserBucket": {"S3Bucket": BUCKET, "S3Key": "k"}}])


def test_reset_stops_running_imports(emulator, aws, disks):
    aws["s3"].upload_file(str(disks["raw"]), BUCKET, "img/raw")
    _start(aws["ec2"], "img/raw", "RAW")
    emulator.reset()
    time.sleep(emulator.import_seconds + 0.5)  # the worker would have finished by now
    assert aws["ec2"].describe_import_image_tasks()["ImportImageTasks"] == []
    assert aws["ec2"].describe_images(Owners=["self"])["Images"] == []


def test_enums_are_checked_synchronously(aws):
    """botocore model: BootMode legacy-bios|uefi|uefi-preferred, LicenseType AWS|BYOL,
    Platform Windows|Linux, Hypervisor xen (AWSEC2/latest/APIReference/API_ImportImage.html)."""
    ec2 = aws["ec2"]
    for kw in ({"BootMode": "bios"}, {"Platform": "Solaris"}, {"Hypervisor": "kvm"}):
        with pytest.raises(ClientError) as exc:
            _start(ec2, "k", "RAW", **kw)
        assert exc.value.response["Error"]["Code"] == "InvalidParameterValue"
    with pytest.raises(ClientError) as exc:
        ec2.import_image(LicenseType="FREE", DiskContainers=[
            {"Format": "RAW", "UserBucket": {"S3Bucket": BUCKET, "S3Key": "k"}}])
    assert exc.value.response["Error"]["Code"] == "InvalidParameterValue"
    assert ec2.describe_import_image_tasks()["ImportImageTasks"] == []


def test_uefi_refuses_encryption_and_license_configuration(aws):
    """doc_source/limitations-image.md: "If you import a VM that's compatible with UEFI, you
    can't specify encryption, you can't specify a license configuration, ..."."""
    ec2 = aws["ec2"]
    with pytest.raises(ClientError) as exc:
        _start(ec2, "k", "RAW", BootMode="uefi", Encrypted=True)
    assert exc.value.response["Error"]["Code"] == "InvalidParameter"
    with pytest.raises(ClientError) as exc:
        ec2.import_image(BootMode="uefi", DiskContainers=[
            {"Format": "RAW", "UserBucket": {"S3Bucket": BUCKET, "S3Key": "k"}}],
            LicenseSpecifications=[{"LicenseConfigurationArn":
                                    "arn:aws:license-manager:us-east-1:123456789012:"
                                    "license-configuration:lic-0123456789abcdef0123456789abcdef"}])
    assert exc.value.response["Error"]["Code"] == "InvalidParameter"


def test_unknown_os_fails_late_after_the_snapshot_exists(aws, tmp_path):
    """A partitioned disk with no Linux filesystem: "ClientError: Unknown OS / Missing OS
    files." (cornfeedhobo/packer-virtualbox-ami-centos7#1), reported after conversion; the
    snapshot exists meanwhile and is gone when the task is deleted."""
    from pipeline_dev.emulator.vmimport import MSG_UNKNOWN_OS

    ec2 = aws["ec2"]
    disk = tmp_path / "empty-partition.raw"
    subprocess.run(["truncate", "-s", "16M", str(disk)], check=True)
    subprocess.run(["sgdisk", "-n", "1:2048:0", str(disk)], check=True, capture_output=True)
    (tmp_path / "blob").write_bytes(b"\x11" * 4096)
    with open(disk, "r+b") as fh:          # some data in the partition, but no filesystem
        fh.seek(2048 * 512 + 65536)
        fh.write(b"\x11" * 4096)
    aws["s3"].upload_file(str(disk), BUCKET, "img/empty.raw")
    task_id = _start(ec2, "img/empty.raw", "RAW")["ImportTaskId"]
    snapshot_seen = None
    end = time.monotonic() + 30
    while time.monotonic() < end:
        task = ec2.describe_import_image_tasks(ImportTaskIds=[task_id])["ImportImageTasks"][0]
        sid = task["SnapshotDetails"][0].get("SnapshotId")
        if sid and task["Status"] == "active":
            snapshot_seen = sid
            assert ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["SnapshotId"] == sid
        if task["Status"] == "deleted":
            break
        time.sleep(0.05)
    assert task["Status"] == "deleted" and task["StatusMessage"] == MSG_UNKNOWN_OS
    assert snapshot_seen, "the snapshot should exist before the late failure"
    assert "ImageId" not in task
    left = ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
    assert snapshot_seen not in {s["SnapshotId"] for s in left}
