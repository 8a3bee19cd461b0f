"""RegisterImage / DeregisterImage refusals and answers, with plain boto3.

Sources: botocore ec2 model (``EbsBlockDevice``: Encrypted must be omitted with a snapshot,
the Iops/VolumeSize/Throughput ranges per volume type; ``DeleteSnapshotReturnCode``
{SnapshotId, ReturnCode} with success | skipped | missing-permissions | internal-error |
client-error); https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_RegisterImage.html;
AWS's texts quoted in hashicorp/terraform#1862 ("Parameter encrypted is invalid. You cannot
specify the encrypted flag if specifying a snapshot id in a block device mapping."),
hashicorp/packer#1500 ("Either snapshot ID or volume size must be provided for: ...") and
tschellenbach/Snaptastic#17 (IncorrectState "Snapshot '<id>' is not 'completed'.").
"""
from __future__ import annotations

import base64
import hashlib

import pytest
from botocore.exceptions import ClientError

BS = 524288


def _code(err: pytest.ExceptionInfo[ClientError]) -> str:
    return str(err.value.response["Error"]["Code"])


def _snapshot(ebs, complete: bool = True) -> str:
    sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    data = b"\x01" * BS
    ebs.put_snapshot_block(SnapshotId=sid, BlockIndex=0, BlockData=data, DataLength=BS,
                           Checksum=base64.b64encode(hashlib.sha256(data).digest()).decode(),
                           ChecksumAlgorithm="SHA256")
    if complete:
        ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=1)
    return sid


def _register(ec2, name: str, mappings: list[dict], root: str = "/dev/xvda") -> str:
    return str(ec2.register_image(Name=name, RootDeviceName=root, Architecture="x86_64",
                                  VirtualizationType="hvm",
                                  BlockDeviceMappings=mappings)["ImageId"])


def test_pending_snapshot_is_incorrect_state(boto) -> None:
    ec2, ebs = boto("ec2"), boto("ebs")
    sid = _snapshot(ebs, complete=False)
    with pytest.raises(ClientError) as err:
        _register(ec2, "pending-root", [{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": sid}}])
    assert _code(err) == "IncorrectState"
    assert not ec2.describe_images(Owners=["self"])["Images"]


def test_encrypted_with_snapshot_is_invalid_parameter(boto) -> None:
    ec2, ebs = boto("ec2"), boto("ebs")
    sid = _snapshot(ebs)
    for value in (True, False):      # "regardless of the value that you specify"
        with pytest.raises(ClientError) as err:
            _register(ec2, f"enc-{value}", [{"DeviceName": "/dev/xvda",
                                             "Ebs": {"SnapshotId": sid, "Encrypted": value}}])
        assert _code(err) == "InvalidParameter"
        assert "cannot specify the encrypted flag" in err.value.response["Error"]["Message"]


def test_root_device_must_be_mapped_with_a_snapshot(boto) -> None:
    ec2, ebs = boto("ec2"), boto("ebs")
    sid = _snapshot(ebs)
    with pytest.raises(ClientError) as err:
        _register(ec2, "root-elsewhere", [{"DeviceName": "/dev/xvdb", "Ebs": {"SnapshotId": sid}}])
    assert _code(err) == "InvalidBlockDeviceMapping"
    with pytest.raises(ClientError) as err:
        _register(ec2, "root-empty", [{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8}}])
    assert _code(err) == "InvalidBlockDeviceMapping"
    # A partition of a mapped disk is accepted (hashicorp/terraform#2271).
    assert _register(ec2, "root-partition", [{"DeviceName": "/dev/sda",
                                              "Ebs": {"SnapshotId": sid}}], root="/dev/sda1")


def test_mapping_without_snapshot_or_size(boto) -> None:
    ec2, ebs = boto("ec2"), boto("ebs")
    sid = _snapshot(ebs)
    with pytest.raises(ClientError) as err:
        _register(ec2, "no-size", [{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": sid}},
                                   {"DeviceName": "/dev/xvdb", "Ebs": {"VolumeType": "gp3"}}])
    assert _code(err) == "InvalidBlockDeviceMapping"
    assert "Either snapshot ID or volume size must be provided for: /dev/xvdb" in \
        err.value.response["Error"]["Message"]


@pytest.mark.parametrize("ebs_extra,code", [
    ({"VolumeType": "gp3", "Iops": 100}, "InvalidParameterValue"),        # gp3: 3,000-80,000
    ({"VolumeType": "gp3", "Iops": 3000, "Throughput": 100}, "InvalidParameterValue"),
    ({"VolumeType": "gp2", "Iops": 3000}, "InvalidParameterCombination"),
    ({"VolumeType": "gp2", "Throughput": 125}, "InvalidParameterCombination"),
    ({"VolumeType": "io2", "VolumeSize": 8}, "InvalidParameterCombination"),  # Iops required
    ({"VolumeType": "standard", "VolumeSize": 2048}, "InvalidParameterValue"),
])
def test_volume_performance_ranges(boto, ebs_extra: dict, code: str) -> None:
    ec2, ebs = boto("ec2"), boto("ebs")
    sid = _snapshot(ebs)
    with pytest.raises(ClientError) as err:
        _register(ec2, "perf", [{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": sid,
                                                                   **ebs_extra}}])
    assert _code(err) == code


def test_good_gp3_mapping_is_kept(boto) -> None:
    ec2, ebs = boto("ec2"), boto("ebs")
    sid = _snapshot(ebs)
    ami = _register(ec2, "good-gp3", [{"DeviceName": "/dev/xvda", "Ebs": {
        "SnapshotId": sid, "VolumeType": "gp3", "Iops": 4000, "Throughput": 250}}])
    ebs_map = ec2.describe_images(ImageIds=[ami])["Images"][0]["BlockDeviceMappings"][0]["Ebs"]
    assert (ebs_map["VolumeType"], ebs_map["Iops"], ebs_map["Throughput"]) == ("gp3", 4000, 250)


def test_delete_associated_snapshots_answers_the_models_shape(boto) -> None:
    """botocore keeps only SnapshotId and ReturnCode; a snapshot another AMI maps is skipped."""
    ec2, ebs = boto("ec2"), boto("ebs")
    shared, own = _snapshot(ebs), _snapshot(ebs)
    one = _register(ec2, "one", [{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": shared}},
                                 {"DeviceName": "/dev/xvdb", "Ebs": {"SnapshotId": own}}])
    _register(ec2, "two", [{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": shared}}])
    out = ec2.deregister_image(ImageId=one, DeleteAssociatedSnapshots=True)
    assert sorted(out["DeleteSnapshotResults"], key=lambda r: r["SnapshotId"]) == sorted(
        [{"SnapshotId": shared, "ReturnCode": "skipped"},
         {"SnapshotId": own, "ReturnCode": "success"}], key=lambda r: r["SnapshotId"])
    left = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert shared in left and own not in left
