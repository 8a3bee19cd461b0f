"""The rebuild lock: a conditional write in AWS (S3 If-None-Match/If-Match, or SSM create-only)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.lifecycle import locks
from pipeline.core.config import parse_settings

BUCKET = "lock-bucket"


def _settings(tmp_path: Path, endpoint: str, bucket: bool) -> Any:
    raw: dict[str, Any] = {"aws": {"region": "us-east-1", "endpoint_url": endpoint},
                           "build": {"ssm_prefix": "/eks-ami-pipeline"}}
    if bucket:
        raw["build"]["s3_bucket"] = BUCKET
    return parse_settings(raw, source=tmp_path / "pipeline.yaml")


@pytest.fixture(params=["s3", "ssm"])
def settings(request: Any, tmp_path: Path, endpoint: str, clients: Any) -> Any:
    if request.param == "s3":
        clients.client("s3").create_bucket(Bucket=BUCKET)
    return _settings(tmp_path, endpoint, bucket=request.param == "s3")


def test_second_holder_is_refused_until_release(settings: Any, clients: Any) -> None:
    first = locks.acquire(settings, clients, "node", owner="run-1")
    with pytest.raises(locks.LockHeld, match="held by run-1"):
        locks.acquire(settings, clients, "node", owner="run-2")
    # Another image's lock is independent.
    locks.acquire(settings, clients, "other", owner="run-2").release()
    first.release()
    with locks.hold(settings, clients, "node", owner="run-2") as info:
        assert info.owner == "run-2"
    locks.acquire(settings, clients, "node", owner="run-3").release()


def test_stale_lock_is_taken_over_and_old_release_is_harmless(settings: Any,
                                                              clients: Any) -> None:
    stale = locks.acquire(settings, clients, "node", owner="dead-run", ttl_seconds=0)
    fresh = locks.acquire(settings, clients, "node", owner="new-run")
    # The dead run's late release must not delete the new holder's lock.
    stale.release()
    with pytest.raises(locks.LockHeld, match="new-run"):
        locks.acquire(settings, clients, "node", owner="third")
    fresh.release()
    locks.acquire(settings, clients, "node", owner="third").release()


def test_s3_lock_object_is_where_it_says(tmp_path: Path, endpoint: str, clients: Any) -> None:
    clients.client("s3").create_bucket(Bucket=BUCKET)
    s = _settings(tmp_path, endpoint, bucket=True)
    lock = locks.acquire(s, clients, "node", owner="me")
    assert lock.info.where == f"s3://{BUCKET}/locks/node.json"
    body = clients.client("s3").get_object(Bucket=BUCKET, Key="locks/node.json")["Body"].read()
    assert b'"owner": "me"' in body
    lock.release()
    listed = clients.client("s3").list_objects_v2(Bucket=BUCKET).get("Contents", [])
    assert listed == []


def test_missing_lock_bucket_falls_back_to_ssm_and_says_so(tmp_path: Path, endpoint: str,
                                                           clients: Any, caplog: Any) -> None:
    """A fresh account: build.s3_bucket names a bucket that does not exist yet."""
    s = _settings(tmp_path, endpoint, bucket=True)
    with caplog.at_level("WARNING", logger="pipeline.lifecycle.locks"):
        lock = locks.acquire(s, clients, "node", owner="me")
    assert lock.info.where == "ssm:/eks-ami-pipeline/_locks/node"
    (line,) = [r.getMessage() for r in caplog.records]
    assert "\n" not in line and f"bucket s3://{BUCKET}" in line and "does not exist" in line
    assert "using the SSM lock ssm:/eks-ami-pipeline/_locks/node" in line
    with pytest.raises(locks.LockHeld, match="held by me"):
        locks.acquire(s, clients, "node", owner="other")
    lock.release()
    locks.acquire(s, clients, "node", owner="other").release()
