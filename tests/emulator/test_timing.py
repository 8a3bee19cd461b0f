"""The ``realistic`` timing profile: resources pass through AWS's transitional states.

Sources: AWSEC2/latest/UserGuide/ec2-instance-lifecycle.html (pending → running;
shutting-down → terminated; stopping → stopped), botocore ec2 model ``ImageState`` (pending |
available | ...), ``SnapshotState`` (pending | completed | error) and ``Snapshot.Progress``,
ebs/latest/APIReference/API_CompleteSnapshot.html (Status completed | pending | error).
The first tests drive the emulator with plain boto3; the last ones show that the
pipeline's snapshot wait and publication gate really wait.
"""
from __future__ import annotations

import base64
import hashlib
import time
from pathlib import Path

import pytest

from pipeline.core.config import ImageSettings, Settings
from pipeline.publish.gate import PublicationGated, gate_publication

BS = 524288


def _until(fn, want, timeout: float = 10.0):
    end = time.monotonic() + timeout
    seen = []
    while time.monotonic() < end:
        value = fn()
        if not seen or seen[-1] != value:
            seen.append(value)
        if value == want:
            return seen
        time.sleep(0.02)
    raise AssertionError(f"never reached {want!r}: {seen}")


def test_instant_is_the_default(boto, emulator) -> None:
    ec2 = boto("ec2")
    assert emulator.timing == "instant"
    base = emulator.seed_image("bare", name="instant-base")
    inst = ec2.run_instances(ImageId=base, MinCount=1, MaxCount=1,
                             InstanceType="m5.large")["Instances"][0]
    got = ec2.describe_instances(InstanceIds=[inst["InstanceId"]])
    assert got["Reservations"][0]["Instances"][0]["State"]["Name"] == "running"


def test_instances_walk_pending_running_shutting_down_terminated(boto, realistic_emulator):
    ec2 = boto("ec2")
    realistic_emulator.set_timing("realistic", instance_seconds=2.0)  # room for a slow poll
    base = realistic_emulator.seed_image("bare", name="walk-base")
    launched = ec2.run_instances(ImageId=base, MinCount=1, MaxCount=1,
                                 InstanceType="m5.large")["Instances"][0]
    assert launched["State"]["Name"] == "pending"
    iid = launched["InstanceId"]

    def state() -> str:
        res = ec2.describe_instances(InstanceIds=[iid])["Reservations"]
        return str(res[0]["Instances"][0]["State"]["Name"])

    assert _until(state, "running", timeout=15)[0] == "pending"
    ec2.terminate_instances(InstanceIds=[iid])
    assert _until(state, "terminated", timeout=15)[0] == "shutting-down"


def test_snapshots_and_amis_go_through_pending(boto, realistic_emulator):
    ec2 = boto("ec2")
    vol = ec2.create_volume(AvailabilityZone="us-east-1a", Size=1)["VolumeId"]
    sid = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    first = ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
    assert first["State"] == "pending" and first["Progress"] != "100%"
    seen = _until(lambda: ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["State"],
                  "completed")
    assert seen[0] == "pending"
    assert ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["Progress"] == "100%"
    src = realistic_emulator.seed_image("bare", name="timing-src")
    copy = boto("ec2", region="us-west-2").copy_image(SourceImageId=src, SourceRegion="us-east-1",
                                                      Name="timing-copy")["ImageId"]
    west = boto("ec2", region="us-west-2")
    seen = _until(lambda: west.describe_images(ImageIds=[copy])["Images"][0]["State"],
                  "available")
    assert seen[0] == "pending"


def test_complete_snapshot_answers_pending_then_completes(boto, realistic_emulator):
    ebs, ec2 = boto("ebs"), boto("ec2")
    sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    data = b"\x07" * BS
    ebs.put_snapshot_block(SnapshotId=sid, BlockIndex=0, BlockData=data, DataLength=BS,
                           Checksum=base64.b64encode(hashlib.sha256(data).digest()).decode(),
                           ChecksumAlgorithm="SHA256")
    assert ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=1)["Status"] == "pending"
    _until(lambda: ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["State"],
           "completed")


def _raw_disk(tmp_path: Path) -> Path:
    disk = tmp_path / "tiny.raw"
    with open(disk, "wb") as fh:
        fh.truncate(2 * 1024 * 1024)
        fh.write(b"\x01" * 4096)
    return disk


def test_the_pipeline_waits_for_the_snapshot_before_registering(clients, realistic_emulator,
                                                                 tmp_path):
    """RegisterImage refuses a pending snapshot (IncorrectState), so this passes only if
    write_snapshot waited for ``completed``."""
    from contextlib import ExitStack

    from pipeline.aws.ebs import import_as_snapshot

    with ExitStack() as undo:
        out = import_as_snapshot(clients, _raw_disk(tmp_path), name="timing-import",
                                 architecture="x86_64", boot_mode="uefi",
                                 tags={"eks-ami-pipeline:build-id": "b-timing"}, workers=2,
                                 undo=undo)
        undo.pop_all()
    ec2 = clients.client("ec2")
    img = ec2.describe_images(ImageIds=[out.image_id])["Images"][0]
    snap = img["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    assert ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]["State"] == "completed"


def test_the_publication_gate_waits_for_available(clients, aws_settings, realistic_emulator,
                                                   tmp_path):
    ec2 = clients.client("ec2")
    vol = ec2.create_volume(AvailabilityZone="us-east-1a", Size=1)["VolumeId"]
    sid = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[sid],
                                              WaiterConfig={"Delay": 0.2, "MaxAttempts": 50})
    ami = ec2.register_image(Name="timing-gated", RootDeviceName="/dev/xvda",
                             Architecture="x86_64", VirtualizationType="hvm",
                             BlockDeviceMappings=[{"DeviceName": "/dev/xvda",
                                                   "Ebs": {"SnapshotId": sid}}])["ImageId"]
    settings = Settings(aws=aws_settings, images=(ImageSettings(name="eks-node"),),
                        ssm_prefix="/eks-ami-pipeline", state_dir=tmp_path / "build")
    with pytest.raises(PublicationGated):
        gate_publication(settings, clients, ami, wait=False)
    gate = gate_publication(settings, clients, ami, timeout=10, delay=0.05)
    assert gate.waited_seconds > 0.1
    assert ec2.describe_images(ImageIds=[ami])["Images"][0]["State"] == "available"
