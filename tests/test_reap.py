"""reap leaves nothing tagged by a failed build, and never touches succeeded or running builds."""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from moto.s3.models import s3_backends

from pipeline.lineage import store as lineage
from pipeline.core import tags
from pipeline.core.config import parse_settings
from pipeline_dev.emulator.image_references import install
from pipeline.lifecycle.prune import reap
from pipeline.core.records import BuildRecord
from tests.neighbours import add_bucket

BUCKET = "imports-bucket"
ACCOUNT = "123456789012"


def _settings(tmp_path: Path, endpoint: str) -> Any:
    raw = {"aws": {"region": "us-east-1", "endpoint_url": endpoint, "max_attempts": 2},
           "build": {"s3_bucket": BUCKET, "ssm_prefix": "/eks-ami-pipeline",
                     "state_dir": str(tmp_path / "build")},
           "images": [{"name": "node", "import": {"source": "x.vmdk"}}]}
    return parse_settings(raw, source=tmp_path / "pipeline.yaml")


def _build_id(hours_ago: float, suffix: str) -> str:
    when = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=hours_ago)
    return f"b-{when:%Y%m%d%H%M%S}-{suffix}"


def _leave_behind(clients: Any, build_id: str) -> dict[str, str]:
    """One of every resource kind a build can leave, tagged with ``build_id``."""
    ec2, s3 = clients.client("ec2"), clients.client("s3")
    tag = tags.to_tag_list({tags.BUILD_ID: build_id, tags.IMAGE_NAME: "node"})
    spec = lambda rt: [{"ResourceType": rt, "Tags": tag}]  # noqa: E731
    image = ec2.register_image(Name=f"node-{build_id}", TagSpecifications=spec("image"))
    image_id = image["ImageId"]
    ec2.create_tags(Resources=[image_id], Tags=tag)
    inst = ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1,
                             TagSpecifications=spec("instance"))["Instances"][0]["InstanceId"]
    vol = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a",
                            TagSpecifications=spec("volume"))["VolumeId"]
    snap = ec2.create_snapshot(VolumeId=vol, TagSpecifications=spec("snapshot"))["SnapshotId"]
    sg = ec2.create_security_group(GroupName=f"packer-{build_id}", Description="packer temp",
                                   TagSpecifications=spec("security-group"))["GroupId"]
    key = ec2.create_key_pair(KeyName=f"packer-{build_id}",
                              TagSpecifications=spec("key-pair"))["KeyName"]
    obj = f"imports/{build_id}/disk.vmdk"
    s3.put_object(Bucket=BUCKET, Key=obj, Body=b"disk", Metadata={"build-id": build_id})
    return {"image": image_id, "instance": inst, "volume": vol, "snapshot": snap,
            "security-group": sg, "key-pair": key, "s3-object": f"s3://{BUCKET}/{obj}"}


def _record(settings: Any, clients: Any, build_id: str, status: str) -> None:
    lineage.record_build(settings, clients, BuildRecord(
        build_id=build_id, image_name="node", method="vm-import", status=status,
        started_at=BuildRecord.now()))


def _tagged(clients: Any, build_id: str) -> list[str]:
    """Everything in the account still carrying ``build_id`` (terminated instances aside)."""
    ec2 = clients.client("ec2")
    flt = [{"Name": f"tag:{tags.BUILD_ID}", "Values": [build_id]}]
    out = [i["InstanceId"] for r in ec2.describe_instances(Filters=flt)["Reservations"]
           for i in r["Instances"] if i["State"]["Name"] != "terminated"]
    out += [v["VolumeId"] for v in ec2.describe_volumes(Filters=flt)["Volumes"]]
    out += [i["ImageId"] for i in ec2.describe_images(Owners=["self"], Filters=flt)["Images"]]
    out += [s["SnapshotId"] for s in
            ec2.describe_snapshots(OwnerIds=["self"], Filters=flt)["Snapshots"]]
    out += [g["GroupId"] for g in ec2.describe_security_groups(Filters=flt)["SecurityGroups"]]
    out += [k["KeyName"] for k in ec2.describe_key_pairs(Filters=flt)["KeyPairs"]]
    s3 = clients.client("s3")
    for obj in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        meta = s3.head_object(Bucket=BUCKET, Key=obj["Key"])["Metadata"]
        if meta.get("build-id") == build_id:
            out.append(obj["Key"])
    return out


@pytest.fixture(autouse=True)
def _emulator_extensions() -> None:
    """Real start times for multipart uploads (moto reports 2010 for all)."""
    install()


@pytest.fixture
def world(tmp_path: Path, endpoint: str, clients: Any, neighbours: Any) -> dict[str, Any]:
    clients.client("s3").create_bucket(Bucket=BUCKET)
    add_bucket(clients, neighbours, BUCKET)
    settings = _settings(tmp_path, endpoint)
    failed, ok = _build_id(1, "aaaaaa"), _build_id(2, "bbbbbb")
    running, orphan = _build_id(0.1, "cccccc"), _build_id(30, "dddddd")
    _record(settings, clients, failed, "failed")
    _record(settings, clients, ok, "succeeded")
    _record(settings, clients, running, "started")
    # `orphan` has no record at all and started 30 hours ago (a killed CI job).
    made = {b: _leave_behind(clients, b) for b in (failed, ok, running, orphan)}
    # An unfinished multipart upload, opened two days ago.
    s3 = clients.client("s3")
    up = s3.create_multipart_upload(Bucket=BUCKET, Key="imports/abc/old.vmdk")["UploadId"]
    mp = s3_backends[ACCOUNT]["aws"].buckets[BUCKET].multiparts[up]
    mp.initiated = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2)).replace(tzinfo=None)
    fresh = s3.create_multipart_upload(Bucket=BUCKET, Key="imports/def/new.vmdk")["UploadId"]
    return {"settings": settings, "failed": failed, "ok": ok, "running": running,
            "orphan": orphan, "made": made, "old_upload": up, "fresh_upload": fresh}


def test_dry_run_lists_without_removing(clients: Any, world: dict[str, Any]) -> None:
    result = reap(world["settings"], clients)
    assert not result.applied
    planned = {(i.kind, i.resource_id) for i in result.items}
    for kind, rid in world["made"][world["failed"]].items():
        assert (kind, rid) in planned
    assert sorted(_tagged(clients, world["failed"])) != []
    assert {i.build_id for i in result.items} - {"-"} == {world["failed"], world["orphan"]}
    assert "would remove" in result.summary()


def test_apply_leaves_nothing_tagged_by_a_failed_build(clients: Any,
                                                       world: dict[str, Any]) -> None:
    result = reap(world["settings"], clients, apply=True)
    assert result.exit_code == 0, result.summary()
    assert _tagged(clients, world["failed"]) == []
    assert _tagged(clients, world["orphan"]) == []
    # The snapshot behind the failed build's AMI went with it.
    removed = {(i.kind, i.resource_id) for i in result.items if i.done}
    assert sum(1 for k, _ in removed if k == "snapshot") == 4   # 2 tagged + 2 behind AMIs
    # Succeeded and still-running builds keep everything.
    assert len(_tagged(clients, world["ok"])) == len(world["made"][world["ok"]])
    assert len(_tagged(clients, world["running"])) == len(world["made"][world["running"]])
    # Open uploads nobody's journal records are not proven ours: reported, never aborted.
    uploads = clients.client("s3").list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    assert {world["old_upload"], world["fresh_upload"]} <= {u["UploadId"] for u in uploads}
    assert any(world["old_upload"] in u for u in result.unowned)
    assert not any(world["fresh_upload"] in u for u in result.unowned)
    assert "abort-multipart-upload" in result.summary()
    # A second run finds nothing more to do.
    again = reap(world["settings"], clients, apply=True)
    assert again.items == []


def _killed_run(clients: Any, settings: Any, build_id: str) -> tuple[Any, dict[str, str]]:
    """What a SIGKILLed bake leaves: an open journal and Packer's untagged temporaries
    (key pair, security group), a tagged instance with its volume, an untagged AMI, and a
    journaled open upload."""
    from pipeline.aws.journal import Journal

    ec2, s3 = clients.client("ec2"), clients.client("s3")
    journal = Journal.open(clients, settings.ssm_prefix, "node", build_id)
    key = ec2.create_key_pair(KeyName=f"packer_{build_id}")["KeyName"]
    journal.record("key-pair", key)
    sg_name = "packer_68f1c0de-0000-4000-8000-" + build_id[-6:] * 2
    sg = ec2.create_security_group(GroupName=sg_name, Description="Temporary group")["GroupId"]
    journal.record("security-group-name", sg_name)
    base = ec2.describe_images(Filters=[{"Name": "state", "Values": ["available"]}])["Images"][0]
    inst = ec2.run_instances(ImageId=base["ImageId"], MinCount=1, MaxCount=1, KeyName=key,
                             SecurityGroupIds=[sg], TagSpecifications=[{
                                 "ResourceType": "instance", "Tags": tags.to_tag_list(
                                     {tags.BUILD_ID: build_id})}])["Instances"][0]
    journal.record("instance", inst["InstanceId"])
    ami = ec2.create_image(InstanceId=inst["InstanceId"], Name=f"node-{build_id}")["ImageId"]
    journal.record("image", ami)
    up = s3.create_multipart_upload(Bucket=BUCKET, Key=f"imports/{build_id}/disk.raw")
    url = f"s3://{BUCKET}/imports/{build_id}/disk.raw#{up['UploadId']}"
    journal.record("multipart-upload", url, "s3")
    return journal, {"key-pair": key, "security-group": sg, "instance": inst["InstanceId"],
                     "image": ami, "multipart-upload": url}


def test_a_killed_run_waits_out_the_grace_then_its_journal_is_reaped(
        clients: Any, endpoint: str, tmp_path: Path, neighbours: Any) -> None:
    clients.client("s3").create_bucket(Bucket=BUCKET)
    add_bucket(clients, neighbours, BUCKET)
    settings = _settings(tmp_path, endpoint)
    build_id = _build_id(0, "eeeeee")
    journal, made = _killed_run(clients, settings, build_id)

    early = reap(settings, clients, apply=True)
    assert early.items == []
    [waiting] = [w for w in early.waiting if w.build_id == build_id]
    text = early.summary()
    assert f"resource(s) of build {build_id} kept until" in text
    assert "nothing left behind" not in text
    for rid in (made["instance"], made["key-pair"], made["image"], made["security-group"]):
        assert rid in text

    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=7)
    done = reap(settings, clients, apply=True, now=later)
    assert done.exit_code == 0, done.summary()
    gone = {(i.kind, i.resource_id) for i in done.items if i.done}
    assert set(made.items()) <= gone, done.summary()
    ec2 = clients.client("ec2")
    assert made["key-pair"] not in {k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]}
    assert made["security-group"] not in {
        g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]}
    assert journal.name in done.journals_done
    # Converged: the journal is gone and nothing of the run is left to report.
    again = reap(settings, clients, apply=True, now=later)
    assert [i for i in again.items if i.build_id == build_id] == []
    assert not [w for w in again.waiting if w.build_id == build_id]
    from pipeline.aws.journal import load_journals
    assert [j.build_id for j in load_journals(clients, settings.ssm_prefix)] == []


def test_the_clock_moves_by_environment_too(clients: Any, endpoint: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.lifecycle.prune import NOW_ENV, reap_now

    monkeypatch.setenv(NOW_ENV, "2030-01-02T03:04:05Z")
    assert reap_now() == dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    assert reap_now("2031-01-01T00:00:00+00:00").year == 2031


def test_a_protected_ami_of_a_failed_build_is_kept_with_a_report_line(
        clients: Any, world: dict[str, Any]) -> None:
    """Deregistration protection wins over reaping: the AMI and the snapshots behind it
    stay (DeregisterImage is never tried), the rest of the build goes, exit 0."""
    ec2 = clients.client("ec2")
    image = world["made"][world["failed"]]["image"]
    ec2.enable_image_deregistration_protection(ImageId=image)
    behind = [m["Ebs"]["SnapshotId"] for m in ec2.describe_images(
        ImageIds=[image])["Images"][0]["BlockDeviceMappings"] if "Ebs" in m]
    result = reap(world["settings"], clients, apply=True)
    assert result.exit_code == 0, result.summary()
    item = {(i.kind, i.resource_id): i for i in result.items}[("image", image)]
    assert not item.done and item.error is None
    assert item.kept and item.kept.startswith("protected against deregistration (enabled)")
    assert f"image {image} ({world['failed']}): kept - protected against deregistration " \
        "(enabled); disable the protection to let reap remove it" in result.summary()
    assert ec2.describe_images(ImageIds=[image])["Images"][0]["State"] == "available"
    left = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert set(behind) <= left
    assert _tagged(clients, world["failed"]) == [image]       # everything else went
    assert _tagged(clients, world["orphan"]) == []
