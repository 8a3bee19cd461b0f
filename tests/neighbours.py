"""Neighbours: an account full of resources the pipeline did not create.

Every test of a failure, an interrupt, a sweep, ``reap`` or ``prune`` runs beside them
(the ``neighbours`` fixture in ``tests/conftest.py``) and ends with
:meth:`Neighbours.assert_untouched`: each one is still there and unchanged.

The set is chosen to look like the pipeline's own where a careless clean-up would
confuse them: instances launched from the same base AMI, instances in ``packer_*``
security groups and with a ``packer_*`` key pair, ``packer_*`` groups and key pairs on
their own, AMIs/snapshots/volumes with other tools' tags, launch templates with several
versions, SSM parameters under and beside the prefix, objects and open multipart
uploads (one old, one fresh) in the import bucket, under the uploads prefix too.
None carries :data:`pipeline.core.tags.BUILD_ID`.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from pipeline.core import tags as T

ACCOUNT = "123456789012"
AL2023_PARAM = ("/aws/service/eks/optimized-ami/1.31/amazon-linux-2023/x86_64/standard/"
                "recommended/image_id")
OTHER_TAGS = [{"Key": "team", "Value": "data-platform"},
              {"Key": "aws:backup:source-resource", "Value": "arn:aws:ec2:::volume/vol-1"},
              {"Key": "Name", "Value": "packer_not_ours"}]


def _spec(rt: str, extra: list[dict[str, str]] | None = None) -> list[dict[str, Any]]:
    return [{"ResourceType": rt, "Tags": list(OTHER_TAGS) + list(extra or [])}]


@dataclass
class Neighbours:
    """The ids of everything seeded, by kind, and the census taken right after."""

    region: str
    ssm_prefix: str
    ids: dict[str, list[str]] = field(default_factory=dict)
    buckets: list[str] = field(default_factory=list)
    before: dict[str, Any] = field(default_factory=dict)

    def add(self, kind: str, rid: str) -> None:
        self.ids.setdefault(kind, []).append(rid)

    def count(self) -> int:
        return sum(len(v) for v in self.ids.values())


def _base_ami(clients: Any) -> str:
    ssm = clients.client("ssm")
    try:
        return str(ssm.get_parameter(Name=AL2023_PARAM)["Parameter"]["Value"])
    except Exception:  # noqa: BLE001 - emulator without the EKS seed: any public image
        images = clients.client("ec2").describe_images(
            Filters=[{"Name": "state", "Values": ["available"]}])["Images"]
        return str(images[0]["ImageId"])


def seed(clients: Any, *, ssm_prefix: str = "/eks-ami-pipeline",
         buckets: tuple[str, ...] = ()) -> Neighbours:
    """Create the neighbours (ordinary client calls) and take their census."""
    ec2, ssm = clients.client("ec2"), clients.client("ssm")
    n = Neighbours(region=clients.region, ssm_prefix=ssm_prefix)
    base = _base_ami(clients)

    sg1 = ec2.create_security_group(GroupName="packer_5f3e0c2a-neighbour", Description="x",
                                    TagSpecifications=_spec("security-group"))["GroupId"]
    sg2 = ec2.create_security_group(GroupName="packer_idle-neighbour", Description="y")["GroupId"]
    n.add("security-group", sg1)
    n.add("security-group", sg2)
    ec2.create_key_pair(KeyName="packer_6a1b-neighbour", TagSpecifications=_spec("key-pair"))
    ec2.create_key_pair(KeyName="ops-neighbour")
    n.add("key-pair", "packer_6a1b-neighbour")
    n.add("key-pair", "ops-neighbour")

    def launch(**kw: Any) -> str:
        return str(ec2.run_instances(MinCount=1, MaxCount=1, InstanceType="m5.large",
                                     **kw)["Instances"][0]["InstanceId"])

    running_base = launch(ImageId=base, TagSpecifications=_spec("instance"))
    in_packer_sg = launch(ImageId=base, SecurityGroupIds=[sg1])
    with_packer_key = launch(ImageId=base, KeyName="packer_6a1b-neighbour")
    other_images = [i["ImageId"] for i in ec2.describe_images(
        Filters=[{"Name": "state", "Values": ["available"]}])["Images"] if i["ImageId"] != base]
    stopped = launch(ImageId=other_images[0] if other_images else base)
    ec2.stop_instances(InstanceIds=[stopped])
    for i in (running_base, in_packer_sg, with_packer_key, stopped):
        n.add("instance", i)

    vol = ec2.create_volume(Size=2, AvailabilityZone=f"{clients.region}a",
                            TagSpecifications=_spec("volume"))["VolumeId"]
    vol2 = ec2.create_volume(Size=1, AvailabilityZone=f"{clients.region}a")["VolumeId"]
    n.add("volume", vol)
    n.add("volume", vol2)
    snap = ec2.create_snapshot(VolumeId=vol, TagSpecifications=_spec("snapshot"))["SnapshotId"]
    snap2 = ec2.create_snapshot(VolumeId=vol2)["SnapshotId"]
    n.add("snapshot", snap)
    n.add("snapshot", snap2)
    # RegisterImage refuses a snapshot that is not 'completed' yet (realistic timing).
    ec2.get_waiter("snapshot_completed").wait(
        SnapshotIds=[snap2], WaiterConfig={"Delay": 0.1, "MaxAttempts": 100})
    ami = ec2.create_image(InstanceId=running_base, Name="neighbour-golden-image",
                           TagSpecifications=_spec("image"))["ImageId"]
    ami2 = ec2.register_image(Name="neighbour-registered", Architecture="x86_64",
                              RootDeviceName="/dev/xvda", VirtualizationType="hvm",
                              BlockDeviceMappings=[{"DeviceName": "/dev/xvda",
                                                    "Ebs": {"SnapshotId": snap2}}])["ImageId"]
    n.add("image", ami)
    n.add("image", ami2)

    lt = ec2.create_launch_template(
        LaunchTemplateName="neighbour-nodes", LaunchTemplateData={"ImageId": base},
        TagSpecifications=_spec("launch-template"))["LaunchTemplate"]["LaunchTemplateId"]
    for image in (ami, ami2):
        ec2.create_launch_template_version(LaunchTemplateId=lt,
                                           LaunchTemplateData={"ImageId": image})
    n.add("launch-template", lt)

    prefix = ssm_prefix.rstrip("/")
    for name, value in ((f"{prefix}/notes/readme", "hand-written, not a pointer"),
                        (f"{prefix}-other/node/stable", base),
                        (f"{prefix}x/build", "b-20200101000000-aaaaaa"),
                        ("/team/data/ami", ami)):
        ssm.put_parameter(Name=name, Value=value, Type="String")
        n.add("parameter", name)

    # Settle first: the census compares states, and under the realistic timing profile
    # these move on by themselves (pending -> available/completed/running/stopped).
    quick = {"Delay": 0.1, "MaxAttempts": 100}
    ec2.get_waiter("image_available").wait(ImageIds=[ami, ami2], WaiterConfig=quick)
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snap, snap2], WaiterConfig=quick)
    ec2.get_waiter("instance_running").wait(
        InstanceIds=[running_base, in_packer_sg, with_packer_key], WaiterConfig=quick)
    ec2.get_waiter("instance_stopped").wait(InstanceIds=[stopped], WaiterConfig=quick)
    for bucket in buckets:
        add_bucket(clients, n, bucket)
    n.before = census(clients, n)
    return n


def add_bucket(clients: Any, n: Neighbours, bucket: str) -> None:
    """Objects and open multipart uploads (one two days old) of others in ``bucket``."""
    s3 = clients.client("s3")
    try:
        s3.create_bucket(Bucket=bucket)
    except Exception as err:  # noqa: BLE001 - the test made it already
        if "BucketAlreadyOwnedByYou" not in str(err) and "BucketAlreadyExists" not in str(err):
            raise
    n.buckets.append(bucket)
    for key in ("imports/neighbour/disk.vmdk", "other-tool/report.json"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"not ours " + key.encode())
        n.add("s3-object", f"{bucket}/{key}")
    for key, days in (("imports/neighbour/big.vmdk", 2), ("other-tool/upload.bin", 0)):
        up = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        if days:
            from moto.s3.models import s3_backends

            mp = s3_backends[ACCOUNT]["aws"].buckets[bucket].multiparts[up]
            mp.initiated = (dt.datetime.now(dt.timezone.utc)
                            - dt.timedelta(days=days)).replace(tzinfo=None)
        n.add("multipart-upload", f"{bucket}/{key}#{up}")
    if n.before:
        n.before = census(clients, n)


def _tags(obj: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(T.from_tag_list(obj.get("Tags")).items()))


def census(clients: Any, n: Neighbours) -> dict[str, Any]:
    """The current state of every seeded neighbour (described by id; absent = missing)."""
    ec2, ssm, s3 = clients.client("ec2"), clients.client("ssm"), clients.client("s3")
    out: dict[str, Any] = {}
    ids = n.ids
    for r in ec2.describe_instances(Filters=[{"Name": "instance-id",
                                              "Values": ids.get("instance", [])}])["Reservations"]:
        for i in r["Instances"]:
            out[i["InstanceId"]] = (i["State"]["Name"], i.get("KeyName"), _tags(i),
                                    tuple(sorted(g["GroupId"] for g in i.get("SecurityGroups", []))))
    for img in ec2.describe_images(Owners=["self"])["Images"]:
        if img["ImageId"] in ids.get("image", []):
            out[img["ImageId"]] = (img.get("State"), img.get("Name"), _tags(img))
    for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]:
        if s["SnapshotId"] in ids.get("snapshot", []):
            out[s["SnapshotId"]] = (s.get("State"), s.get("VolumeId"), _tags(s))
    for v in ec2.describe_volumes()["Volumes"]:
        if v["VolumeId"] in ids.get("volume", []):
            out[v["VolumeId"]] = (v.get("Size"), _tags(v))
    for g in ec2.describe_security_groups()["SecurityGroups"]:
        if g["GroupId"] in ids.get("security-group", []):
            out[g["GroupId"]] = (g["GroupName"], _tags(g))
    for k in ec2.describe_key_pairs()["KeyPairs"]:
        if k["KeyName"] in ids.get("key-pair", []):
            out["key:" + k["KeyName"]] = (k.get("KeyPairId"), _tags(k))
    for lt in ec2.describe_launch_templates()["LaunchTemplates"]:
        if lt["LaunchTemplateId"] in ids.get("launch-template", []):
            versions = ec2.describe_launch_template_versions(
                LaunchTemplateId=lt["LaunchTemplateId"], MaxResults=200)["LaunchTemplateVersions"]
            out[lt["LaunchTemplateId"]] = (
                lt["DefaultVersionNumber"], lt["LatestVersionNumber"], _tags(lt),
                tuple(sorted((v["VersionNumber"], v["LaunchTemplateData"].get("ImageId"))
                             for v in versions)))
    names = ids.get("parameter", [])
    for i in range(0, len(names), 10):
        for p in ssm.get_parameters(Names=names[i:i + 10])["Parameters"]:
            out["ssm:" + p["Name"]] = (p["Value"], p["Version"])
    for bucket in n.buckets:
        for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            if f"{bucket}/{obj['Key']}" in ids.get("s3-object", []):
                out[f"s3:{bucket}/{obj['Key']}"] = (obj["ETag"], obj["Size"])
        for up in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            rid = f"{bucket}/{up['Key']}#{up['UploadId']}"
            if rid in ids.get("multipart-upload", []):
                out["mpu:" + rid] = up["Key"]
    return out


def assert_untouched(clients: Any, n: Neighbours) -> None:
    """Every neighbour is still there and unchanged since :func:`seed`."""
    now = census(clients, n)
    missing = sorted(set(n.before) - set(now))
    changed = sorted(k for k in n.before if k in now and now[k] != n.before[k])
    assert not missing and not changed, (
        f"neighbours touched: missing {missing}, changed "
        f"{[(k, n.before[k], now[k]) for k in changed]}")
    assert len(n.before) == n.count(), f"census saw {len(n.before)} of {n.count()} neighbours"
