"""pipeline.aws.cleanup: the one door for destructive calls acts only on what is proven
the run's own, among neighbours it must not touch."""
from __future__ import annotations

from typing import Any

import pytest

from pipeline.aws import cleanup as C
from pipeline.core import tags as T
from pipeline.core.errors import UnsafeSelection
from tests.neighbours import add_bucket

BUILD = "b-20260101000000-abcdef"


def _mine(clients: Any, build: str = BUILD) -> dict[str, str]:
    ec2 = clients.client("ec2")
    tag = [{"Key": T.BUILD_ID, "Value": build}]
    spec = lambda rt: [{"ResourceType": rt, "Tags": tag}]  # noqa: E731
    base = ec2.describe_images(Filters=[{"Name": "state", "Values": ["available"]}])["Images"][0]
    sg = ec2.create_security_group(GroupName=f"packer_{build}", Description="t")["GroupId"]
    ec2.create_key_pair(KeyName=f"packer_{build}")
    inst = ec2.run_instances(ImageId=base["ImageId"], MinCount=1, MaxCount=1,
                             SecurityGroupIds=[sg], KeyName=f"packer_{build}",
                             TagSpecifications=spec("instance"))["Instances"][0]["InstanceId"]
    vol = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a",
                            TagSpecifications=spec("volume"))["VolumeId"]
    ami = ec2.create_image(InstanceId=inst, Name=f"node-{build}",
                           TagSpecifications=spec("image"))["ImageId"]
    return {"instance": inst, "security-group": sg, "key-pair": f"packer_{build}",
            "volume": vol, "image": ami}


def test_empty_blank_or_ownerless_selection_raises_and_deletes_nothing(clients, neighbours):
    owner = C.Owner(BUILD)
    for fn in (C.terminate_instances, C.deregister_images, C.delete_snapshots,
               C.delete_volumes, C.delete_security_groups, C.delete_key_pairs,
               C.delete_launch_templates, C.delete_parameters, C.cancel_import_tasks):
        with pytest.raises(UnsafeSelection):
            fn(clients, None, owner, [])
        with pytest.raises(UnsafeSelection):
            fn(clients, None, owner, [""])
    with pytest.raises(UnsafeSelection):
        C.terminate_instances(clients, None, C.Owner(""), neighbours.ids["instance"])
    with pytest.raises(UnsafeSelection):
        C.delete_s3_objects(clients, owner, [])
    with pytest.raises(UnsafeSelection):
        C.abort_multipart_uploads(clients, owner, [])
    with pytest.raises(UnsafeSelection):
        C.wait_terminated(clients.client("ec2"), [])


def test_neighbours_are_refused_even_when_named(clients, neighbours):
    """Naming a neighbour (untagged, or another tool's tags) raises before any call."""
    owner = C.Owner(BUILD)
    mine = _mine(clients)
    with pytest.raises(UnsafeSelection, match="not proven"):
        C.terminate_instances(clients, None, owner, [mine["instance"]] + neighbours.ids["instance"])
    with pytest.raises(UnsafeSelection):
        C.delete_security_groups(clients, None, owner, neighbours.ids["security-group"])
    with pytest.raises(UnsafeSelection):
        C.delete_key_pairs(clients, None, owner, neighbours.ids["key-pair"])
    with pytest.raises(UnsafeSelection):
        C.deregister_images(clients, None, owner, neighbours.ids["image"], with_snapshots=True)
    with pytest.raises(UnsafeSelection):
        C.delete_snapshots(clients, None, owner, neighbours.ids["snapshot"])
    with pytest.raises(UnsafeSelection):
        C.delete_volumes(clients, None, owner, neighbours.ids["volume"])
    with pytest.raises(UnsafeSelection):
        C.delete_launch_templates(clients, None, owner, neighbours.ids["launch-template"])
    with pytest.raises(UnsafeSelection):
        C.delete_parameters(clients, None, owner, neighbours.ids["parameter"])
    # A journal entry cannot claim what another build's tag says is theirs.
    other = _mine(clients, "b-20250101000000-123456")
    with pytest.raises(UnsafeSelection, match="tagged b-2025"):
        C.terminate_instances(clients, None, C.Owner(BUILD, frozenset({
            ("instance", other["instance"])})), [other["instance"]])
    state = clients.client("ec2").describe_instances(InstanceIds=[mine["instance"]])
    assert state["Reservations"][0]["Instances"][0]["State"]["Name"] == "running"


def test_remove_takes_tagged_and_journaled_resources_in_order(clients, neighbours):
    mine = _mine(clients)
    owner = C.Owner(BUILD, frozenset({("security-group", mine["security-group"]),
                                      ("key-pair", mine["key-pair"])}))
    result = C.remove(clients, owner, [C.Resource(k, v, "us-east-1") for k, v in mine.items()]
                      + [C.Resource("volume", "vol-0123456789abcdef0", "us-east-1")],
                      settle=5)
    assert all(r.ok for r in result), result
    outcome = {(r.kind, r.id): r.outcome for r in result}
    assert outcome[("volume", "vol-0123456789abcdef0")] == "gone"
    # The snapshot behind the AMI goes with it.
    assert {k for (k, _), o in outcome.items() if o == "removed"} == set(mine) | {"snapshot"}
    ec2 = clients.client("ec2")
    assert ec2.describe_instances(InstanceIds=[mine["instance"]])["Reservations"][0][
        "Instances"][0]["State"]["Name"] == "terminated"
    assert mine["key-pair"] not in {k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]}
    # A second pass finds everything gone.
    again = C.remove(clients, owner, [C.Resource(k, v, "us-east-1") for k, v in mine.items()
                                      if k != "instance"], settle=5)
    assert {r.outcome for r in again} == {"gone"}


def test_s3_objects_and_uploads_need_their_build_or_the_journal(clients, neighbours):
    add_bucket(clients, neighbours, "imports")
    s3 = clients.client("s3")
    s3.put_object(Bucket="imports", Key="imports/mine.vmdk", Body=b"x",
                  Metadata={"build-id": BUILD})
    up = s3.create_multipart_upload(Bucket="imports", Key="imports/mine2.vmdk")["UploadId"]
    owner = C.Owner(BUILD)
    with pytest.raises(UnsafeSelection):
        C.abort_multipart_uploads(clients, owner, [f"s3://imports/imports/mine2.vmdk#{up}"])
    with pytest.raises(UnsafeSelection):
        C.delete_s3_objects(clients, owner, ["s3://imports/imports/neighbour/disk.vmdk"])
    journaled = C.Owner(BUILD, frozenset({("multipart-upload",
                                           f"s3://imports/imports/mine2.vmdk#{up}")}))
    got = C.abort_multipart_uploads(clients, journaled, [f"s3://imports/imports/mine2.vmdk#{up}"])
    assert [r.outcome for r in got] == ["removed"]
    got = C.delete_s3_objects(clients, owner, ["s3://imports/imports/mine.vmdk"])
    assert [r.outcome for r in got] == ["removed"]


def test_ctrl_c_names_the_upload_it_keeps_for_a_resume() -> None:
    """The last line of an interrupted task says what was kept and how to abort it."""
    import io

    from pipeline.cli import TaskExit, run_task

    def interrupted() -> None:
        err = KeyboardInterrupt()
        err.kept_for_resume = [  # type: ignore[attr-defined]
            "the upload s3://imports/imports/ab/disk.raw (upload id U1, 3 of 9 parts sent) "
            "so that a re-run resumes it; abort it with `aws s3api abort-multipart-upload "
            "--bucket imports --key imports/ab/disk.raw --upload-id U1`"]
        raise err

    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(TaskExit):
        run_task(interrupted, out=out, err=err)
    last = err.getvalue().strip().splitlines()[-1]
    assert "half-created" not in err.getvalue()
    for part in ("s3://imports/imports/ab/disk.raw", "U1", "abort-multipart-upload"):
        assert part in last
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(TaskExit):
        run_task(lambda: (_ for _ in ()).throw(KeyboardInterrupt()), out=out, err=err)
    assert "nothing left half-created" in err.getvalue()
