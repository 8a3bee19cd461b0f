"""The fault profile: throttling and 5xx in each service's wire format; IAM propagation.

Sources: AWSEC2/latest/APIReference/throttling.html (``RequestLimitExceeded``) and
errors-overview.html (``InternalError``); AmazonS3/latest/API/ErrorResponses.html
(``SlowDown`` 503, ``InternalError`` 500); botocore's retry rules
(botocore/data/_retry.json: throttling codes Throttling, ThrottlingException,
RequestLimitExceeded, RequestThrottledException, SlowDown; general 500/502/503/504), the
ebs model (``RequestThrottledException`` Reason ``ACCOUNT_THROTTLED``); the IAM
propagation message of VM Import (AWS-FACTS §1, hashicorp/terraform-provider-aws retries
on it while IAM propagates).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

ROOT = Path(__file__).resolve().parents[2]
TRUST = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "vmie.amazonaws.com"},
    "Action": "sts:AssumeRole", "Condition": {"StringEquals": {"sts:Externalid": "vmimport"}}}]}


@pytest.fixture
def faulty(emulator):
    yield emulator
    emulator.set_faults()          # off again for the next test


CODES = {"ec2": ("RequestLimitExceeded", "InternalError"),
         "s3": ("SlowDown", "InternalError"),
         "ssm": ("ThrottlingException", "InternalFailure"),
         "iam": ("Throttling", "ServiceUnavailable"),
         "ebs": ("RequestThrottledException", "InternalServerException")}


def _call(boto, service: str):
    client = boto(service)
    return {"ec2": lambda: client.describe_images(Owners=["self"]),
            "s3": lambda: client.list_buckets(),
            "ssm": lambda: client.describe_parameters(),
            "iam": lambda: client.list_roles(),
            "ebs": lambda: client.list_snapshot_blocks(SnapshotId="snap-0123456789abcdef0")}[
        service]


@pytest.mark.parametrize("service", sorted(CODES))
def test_throttling_and_server_errors_in_each_wire_format(boto, faulty, service) -> None:
    call = _call(boto, service)
    faulty.set_faults(throttle=1.0)
    with pytest.raises(ClientError) as err:
        call()
    assert err.value.response["Error"]["Code"] == CODES[service][0]
    faulty.set_faults(server_errors=1.0)
    with pytest.raises(ClientError) as err:
        call()
    assert err.value.response["Error"]["Code"] == CODES[service][1]
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] >= 500


def test_botocore_retries_through_a_fraction_of_throttling(boto, faulty) -> None:
    from pipeline_dev.emulator import faults

    faulty.set_faults(throttle=0.3, seed=7)
    ec2 = boto("ec2", retries={"mode": "standard", "total_max_attempts": 10})
    for _ in range(30):
        ec2.describe_images(Owners=["self"])
    seen = faults.counts()
    assert seen["throttled"] > 0 and seen["calls"] > 30


def test_a_new_role_is_not_assumable_by_vm_import_for_a_while(boto, faulty) -> None:
    ec2, iam = boto("ec2"), boto("iam")     # clients first: loading models takes time
    boto("s3").create_bucket(Bucket="props")
    faulty.set_faults(iam_propagation_seconds=2.0)
    iam.create_role(RoleName="vmimport", AssumeRolePolicyDocument=json.dumps(TRUST))

    def start() -> dict:
        return ec2.import_image(LicenseType="BYOL", DiskContainers=[
            {"Format": "RAW", "UserBucket": {"S3Bucket": "props", "S3Key": "disk.raw"}}])

    with pytest.raises(ClientError) as err:
        start()
    assert err.value.response["Error"]["Code"] == "InvalidParameter"
    assert "does not have sufficient permissions" in err.value.response["Error"]["Message"]
    time.sleep(2.1)
    assert start()["Status"] == "active"


@pytest.mark.packer
@pytest.mark.skipif(shutil.which("packer") is None, reason="packer not installed")
@pytest.mark.skipif(os.environ.get("EMULATOR_FAULT_DEMO") != "1",
                    reason="a second whole demo (about 1-4 min): set EMULATOR_FAULT_DEMO=1")
def test_the_demo_story_completes_with_20_percent_of_calls_throttled(tmp_path: Path) -> None:
    """The whole `invoke demo` with every fifth AWS call throttled: still exit 0, every
    step ok."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") and k != "PIPELINE_CONFIG"}
    env["PATH"] = env.get("PATH", "") + ":/usr/sbin:/sbin"
    env["EMULATOR_THROTTLE"] = "0.2"
    invoke = Path(sys.executable).with_name("invoke")
    proc = subprocess.run([str(invoke), "demo", "--json", "--workdir", str(tmp_path / "demo")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = json.loads(proc.stdout)["steps"]
    assert [s["status"] for s in steps] == ["ok"] * len(steps)
