"""Every destructive AWS call of pipeline/ goes through pipeline/aws/cleanup.py.

An AST scan of every module: any attribute named for a destructive operation of the
services the pipeline uses (botocore's own operation list: Delete*, Deregister*,
Terminate*, Abort*, Cancel*, ...), called or passed on (``call(ec2.delete_snapshot, ...)``),
or named in a ``getattr`` string, fails the test unless it is in the cleanup module or
is a call of that module's own functions (``cleanup.delete_parameters(...)``).
"""
from __future__ import annotations

import ast
from pathlib import Path

import botocore.session

ROOT = Path(__file__).resolve().parents[1] / "pipeline"
DOOR = ROOT / "aws" / "cleanup.py"
SERVICES = ("ec2", "s3", "ssm", "iam", "ebs", "sts", "kms")
VERBS = ("delete_", "deregister_", "terminate_", "abort_", "cancel_", "purge_")
#: Calls that destroy no resource (the pipeline removing its own tag keys).
NOT_RESOURCES = frozenset({"delete_tags", "delete_object_tagging", "delete_bucket_tagging"})


def _snake(name: str) -> str:
    return botocore.xform_name(name)


def destructive_operations() -> frozenset[str]:
    session = botocore.session.get_session()
    names: set[str] = set()
    for svc in SERVICES:
        model = session.get_service_model(svc)
        names.update(op for op in map(_snake, model.operation_names) if op.startswith(VERBS))
    return frozenset(names - NOT_RESOURCES)


def _violations(path: Path, forbidden: frozenset[str]) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in forbidden:
            recv = node.value
            if isinstance(recv, ast.Name) and recv.id == "cleanup":
                continue
            out.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id == "getattr" and len(node.args) >= 2 \
                and isinstance(node.args[1], ast.Constant) and node.args[1].value in forbidden:
            out.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: getattr "
                       f"{node.args[1].value!r}")
    return out


def test_the_scan_knows_the_destructive_operations() -> None:
    ops = destructive_operations()
    for op in ("terminate_instances", "deregister_image", "delete_snapshot", "delete_volume",
               "delete_security_group", "delete_key_pair", "delete_launch_template",
               "delete_launch_template_versions", "delete_parameter", "delete_object",
               "delete_objects", "abort_multipart_upload", "cancel_import_task"):
        assert op in ops


def test_the_scan_finds_a_destructive_call(tmp_path: Path) -> None:
    bad = ROOT / "_probe_for_door_test.py"
    try:
        bad.write_text("def f(ec2, call):\n    ec2.terminate_instances(InstanceIds=[])\n"
                       "    call(ec2.delete_snapshot, SnapshotId='x')\n"
                       "    getattr(ec2, 'deregister_image')\n    cleanup.delete_parameters()\n")
        found = _violations(bad, destructive_operations())
    finally:
        bad.unlink()
    assert len(found) == 3, found


def test_no_destructive_call_outside_the_cleanup_module() -> None:
    forbidden = destructive_operations()
    found = [v for path in sorted(ROOT.rglob("*.py")) if path != DOOR
             for v in _violations(path, forbidden)]
    assert not found, ("destructive AWS calls outside pipeline/aws/cleanup.py (route them "
                       "through it):\n" + "\n".join(found))
