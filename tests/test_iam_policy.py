"""The IAM policy covers every AWS API the code calls (scanned from the source, so it cannot rot)."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import botocore.session
import pytest
from botocore import xform_name

from pipeline.aws import iam_policy
from pipeline.core.config import parse_settings

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "pipeline"
#: Code that never talks to real AWS: the emulator, the demo (it starts its own emulator
#: and sets it up, e.g. creates the bucket), and the module that lists the actions.
EXCLUDE = {"emulator", "demo.py", "iam_policy.py"}
SERVICES = ("ec2", "ebs", "s3", "iam", "ssm", "sts", "kms")
#: Client methods boto3 injects that call S3 APIs (s3transfer) or describe other calls.
INJECTED = {"s3": {"upload_file", "upload_fileobj"}}


def _operations() -> dict[str, str]:
    """boto3 method name -> service, for the services this tool uses."""
    session = botocore.session.get_session()
    ops: dict[str, str] = {}
    for svc in SERVICES:
        for op in session.get_service_model(svc).operation_names:
            ops[xform_name(op)] = svc
        for name in INJECTED.get(svc, ()):
            ops[name] = svc
    return ops


def _waiter_operations() -> dict[tuple[str, str], str]:
    session = botocore.session.get_session()
    out: dict[tuple[str, str], str] = {}
    for svc in SERVICES:
        try:
            model = session.get_waiter_model(svc)
        except Exception:  # noqa: BLE001 - a service without waiters
            continue
        for name in model.waiter_names:
            out[(svc, xform_name(name))] = xform_name(model.get_waiter(name).operation)
    return out


def _sources() -> list[Path]:
    return [p for p in PIPELINE.rglob("*.py")
            if not (set(p.relative_to(PIPELINE).parts) & EXCLUDE)]


def scan_calls() -> set[tuple[str, str, str]]:
    """(service, operation, where) for every client operation the code references.

    Catches ``ec2.describe_images(...)``, ``call(ec2.describe_images, ...)``,
    ``get_paginator("describe_images")`` and ``get_waiter("image_available")``.
    """
    ops = _operations()
    waiters = _waiter_operations()
    found: set[tuple[str, str, str]] = set()
    for path in _sources():
        tree = ast.parse(path.read_text(), filename=str(path))
        rel = str(path.relative_to(ROOT))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ops:
                found.add((ops[node.attr], node.attr, f"{rel}:{node.lineno}"))
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("get_paginator", "get_waiter") and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)):
                name = node.args[0].value
                if node.func.attr == "get_paginator" and name in ops:
                    found.add((ops[name], name, f"{rel}:{node.lineno}"))
                if node.func.attr == "get_waiter":
                    for (svc, wname), op in waiters.items():
                        if wname == name:
                            found.add((svc, op, f"{rel}:{node.lineno}"))
    return found


def _settings(tmp_path: Path):
    raw = {
        "aws": {"region": "us-east-1"},
        "build": {"s3_bucket": "my-imports", "ssm_prefix": "/eks-ami"},
        "images": [{"name": "node", "regions": ["us-east-1", "eu-west-1"],
                    "kms_key_ids": {"eu-west-1": "1234abcd-12ab-34cd-56ef-1234567890ab"},
                    "import": {"source": "x.vmdk", "bucket": "other-bucket"}}],
    }
    return parse_settings(raw, source=tmp_path / "pipeline.yaml")


def test_scanner_finds_known_calls() -> None:
    """The scanner itself works: it sees calls in this project's own modules."""
    calls = {(svc, op) for svc, op, _ in scan_calls()}
    # pipeline.aws.clients.Clients.account_id calls STS; pipeline.lifecycle.prune deregisters images.
    assert ("sts", "get_caller_identity") in calls
    assert ("ec2", "deregister_image") in calls
    assert ("ec2", "describe_image_references") in calls


def test_every_called_api_is_granted(tmp_path: Path) -> None:
    policy = iam_policy.policy_document(_settings(tmp_path))
    missing = []
    for svc, op, where in sorted(scan_calls()):
        try:
            needed = iam_policy.actions_for(svc, op)
        except KeyError as err:
            missing.append(f"{where}: {svc}.{op}: {err}")
            continue
        for action in needed:
            if not policy.grants(action):
                missing.append(f"{where}: {svc}.{op} needs {action}")
    assert not missing, "IAM policy lacks:\n" + "\n".join(missing)


def test_packer_actions_are_granted(tmp_path: Path) -> None:
    policy = iam_policy.policy_document(_settings(tmp_path))
    assert [a for a in iam_policy.PACKER_ACTIONS if not policy.grants(a)] == []


def test_policy_is_scoped(tmp_path: Path) -> None:
    doc = iam_policy.policy_document(_settings(tmp_path)).to_dict()
    by_sid = {s["Sid"]: s for s in doc["Statement"]}
    assert doc["Version"] == "2012-10-17"
    assert by_sid["S3Objects"]["Resource"] == ["arn:aws:s3:::my-imports/*",
                                              "arn:aws:s3:::other-bucket/*"]
    assert by_sid["VmImportRole"]["Resource"] == "arn:aws:iam::*:role/vmimport"
    assert by_sid["SsmOwnParameters"]["Resource"] == "arn:aws:ssm:*:*:parameter/eks-ami/*"
    owned = by_sid["Ec2ChangeOnlyPipelineBuilt"]
    assert "ec2:DeregisterImage" in owned["Action"]
    assert owned["Condition"]["Null"] == {"aws:ResourceTag/eks-ami-pipeline:build-id": "false"}
    assert by_sid["Ec2Read"]["Condition"]["StringEquals"]["aws:RequestedRegion"] == [
        "eu-west-1", "us-east-1"]
    assert by_sid["KmsConfiguredKeys"]["Resource"] == (
        "arn:aws:kms:eu-west-1:*:key/1234abcd-12ab-34cd-56ef-1234567890ab")
    # No statement grants everything on a service.
    for s in doc["Statement"]:
        acts = s["Action"]
        assert not any(a.endswith(":*") or a == "*" for a in acts), s["Sid"]
    # Destructive EC2 actions never appear in an unconditioned-by-tag statement.
    for s in doc["Statement"]:
        if s["Sid"] != "Ec2ChangeOnlyPipelineBuilt":
            assert "ec2:DeregisterImage" not in s["Action"]
            assert "ec2:DeleteSnapshot" not in s["Action"]


def test_unknown_s3_operation_is_an_error() -> None:
    with pytest.raises(KeyError, match="OPERATION_ACTIONS"):
        iam_policy.actions_for("s3", "put_bucket_acl")
    assert iam_policy.actions_for("ec2", "describe_images") == ("ec2:DescribeImages",)
    assert iam_policy.actions_for("sts", "get_caller_identity") == ()


def test_summary_is_valid_json(tmp_path: Path) -> None:
    policy = iam_policy.policy_document(_settings(tmp_path))
    assert json.loads(policy.summary()) == policy.to_dict()


def test_no_bucket_means_no_s3_access(tmp_path: Path) -> None:
    raw = {"aws": {"region": "eu-west-1"}, "build": {"ssm_prefix": "/amis"}}
    policy = iam_policy.policy_document(parse_settings(raw, source=tmp_path / "p.yaml"))
    assert not any(a.startswith("s3:") for a in policy.actions())
    assert "KmsConfiguredKeys" not in {s.sid for s in policy.statements}
