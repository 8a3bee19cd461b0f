"""A lock held in AWS, so two rebuilds of one image never run at once (CI runs share nothing).

Where the lock lives:

- **S3** (when ``build.s3_bucket`` is configured): the object ``locks/<name>.json``,
  created with ``PutObject If-None-Match: *`` (S3 conditional writes: only one writer
  can create a key). A stale lock is taken over with ``PutObject If-Match: <etag>`` (a
  compare-and-swap: of two runs that both saw the same stale lock, only one wins), and
  released with ``DeleteObject If-Match: <our etag>``, so a run whose lock expired and
  was taken over never deletes the new holder's lock.
- **SSM Parameter Store** otherwise, and when the configured bucket does not exist
  (a fresh account: the lock says so in one warning line): ``<ssm_prefix>/_locks/<name>``, created with
  ``PutParameter`` without ``Overwrite`` (fails with ``ParameterAlreadyExists``). SSM
  has no compare-and-swap, so a stale lock is deleted and created again; two runs that
  find the same stale lock in the same instant could both delete it, and only one of
  the two creates then succeeds. Prefer the S3 lock when a bucket exists.

Every lock carries an owner string, a random token and an expiry (``ttl_seconds``);
a lock past its expiry is stale and may be taken over, which is what frees the lock of
a CI job that was killed.

Sources: S3 conditional writes (``If-None-Match``/``If-Match`` on PutObject) and
conditional deletes (``If-Match`` on DeleteObject, which also needs ``s3:GetObject``) in
AmazonS3/latest/userguide/conditional-writes.html and conditional-deletes.html; both
answer ``412 PreconditionFailed`` when the condition fails and may answer ``409
ConditionalRequestConflict`` to one of two racing writers. moto 5.2 implements both.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import os
import secrets
import socket
from dataclasses import asdict, dataclass
from typing import Any, Iterator

from botocore.exceptions import ClientError

from pipeline.aws import cleanup
from pipeline.aws.clients import Clients, error_code
from pipeline.core.config import Settings
from pipeline.core.errors import AwsCallError, LockHeld

__all__ = ["LockInfo", "LockHeld", "Lock", "acquire", "hold", "DEFAULT_TTL_SECONDS"]

log = logging.getLogger(__name__)

DEFAULT_TTL_SECONDS = 4 * 3600
_S3_PREFIX = "locks/"
_SSM_TREE = "_locks"


class _NoBucket(Exception):
    """The configured lock bucket does not exist (S3 ``NoSuchBucket``)."""


@dataclass(frozen=True, slots=True)
class LockInfo:
    name: str
    owner: str
    token: str
    acquired_at: str
    expires_at: str
    where: str                  # s3://bucket/key or ssm:<name>

    def expired(self, now: _dt.datetime | None = None) -> bool:
        now = now or _dt.datetime.now(_dt.timezone.utc)
        return _dt.datetime.fromisoformat(self.expires_at) <= now

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def _owner() -> str:
    run = os.environ.get("GITHUB_RUN_ID")
    who = f"github-run-{run}" if run else f"{socket.gethostname()}:{os.getpid()}"
    return who[:200]


def _parse(body: str, where: str) -> LockInfo | None:
    try:
        data = json.loads(body)
        return LockInfo(**{k: str(data[k]) for k in LockInfo.__dataclass_fields__})
    except (ValueError, KeyError, TypeError):
        log.warning("unreadable lock at %s; treating it as stale", where)
        return None


class Lock:
    """A held lock; :meth:`release` it (or use :func:`hold`)."""

    def __init__(self, info: LockInfo, release: Any) -> None:
        self.info = info
        self._release = release
        self.released = False

    def release(self) -> None:
        if not self.released:
            self._release()
            self.released = True


def _held_error(name: str, info: LockInfo | None, where: str) -> LockHeld:
    if info is None:
        return LockHeld(f"lock {name} at {where} was taken by another run just now; "
                        "retry later")
    return LockHeld(f"lock {name} is held by {info.owner} since {info.acquired_at} "
                    f"(expires {info.expires_at}); another rebuild is running. Wait for it, "
                    f"or delete {where} if that run is gone")


# --------------------------------------------------------------------------- S3


def _s3_acquire(clients: Clients, bucket: str, name: str, info: LockInfo) -> Lock:
    s3 = clients.client("s3")
    key = f"{_S3_PREFIX}{name}.json"
    where = f"s3://{bucket}/{key}"
    body = info.to_json().encode()
    try:
        resp = s3.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*",
                             ContentType="application/json")
        return _s3_lock(s3, bucket, key, info, resp["ETag"])
    except ClientError as err:
        if error_code(err) == "NoSuchBucket":
            raise _NoBucket(bucket) from err
        if error_code(err) not in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
            raise AwsCallError(f"AWS refused creating the lock {where}: {error_code(err)}: "
                               f"{err}") from err
    try:
        current = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as err:
        if error_code(err) in ("NoSuchKey", "404"):
            raise _held_error(name, None, where) from err
        raise AwsCallError(f"AWS refused reading the lock {where}: {err}") from err
    etag = current["ETag"]
    held = _parse(current["Body"].read().decode(), where)
    if held is not None and not held.expired():
        raise _held_error(name, held, where)
    log.warning("lock %s: taking over the stale lock of %s (expired %s)", name,
                held.owner if held else "?", held.expires_at if held else "?")
    try:
        resp = s3.put_object(Bucket=bucket, Key=key, Body=body, IfMatch=etag,
                             ContentType="application/json")
    except ClientError as err:
        if error_code(err) in ("PreconditionFailed", "ConditionalRequestConflict", "412",
                               "NoSuchKey"):
            raise _held_error(name, None, where) from err
        raise AwsCallError(f"AWS refused taking over the lock {where}: {err}") from err
    return _s3_lock(s3, bucket, key, info, resp["ETag"])


def _s3_lock(s3: Any, bucket: str, key: str, info: LockInfo, etag: str) -> Lock:
    def release() -> None:
        try:
            # Conditional delete: only while the object is still the one we wrote.
            if not cleanup.release_s3_lock(s3, bucket, key, etag):
                log.warning("lock %s expired and was taken over before release", info.name)
        except ClientError as err:
            raise AwsCallError(f"AWS refused releasing the lock s3://{bucket}/{key}: "
                               f"{err}") from err

    return Lock(info, release)


# --------------------------------------------------------------------------- SSM


def _ssm_acquire(clients: Clients, name: str, prefix: str, info: LockInfo) -> Lock:
    ssm = clients.client("ssm")
    param = f"{prefix}/{_SSM_TREE}/{name}"
    where = f"ssm:{param}"

    def create() -> bool:
        try:
            ssm.put_parameter(Name=param, Value=info.to_json(), Type="String",
                              Overwrite=False, Description="eks-ami-pipeline lock")
            return True
        except ClientError as err:
            if error_code(err) == "ParameterAlreadyExists":
                return False
            raise AwsCallError(f"AWS refused creating the lock {where}: {err}") from err

    if not create():
        try:
            value = ssm.get_parameter(Name=param)["Parameter"]["Value"]
        except ClientError as err:
            raise _held_error(name, None, where) from err
        held = _parse(value, where)
        if held is not None and not held.expired():
            raise _held_error(name, held, where)
        log.warning("lock %s: removing the stale lock of %s", name, held.owner if held else "?")
        with contextlib.suppress(ClientError):
            cleanup.delete_lock_parameter(ssm, param, value)   # only if still that value
        if not create():
            raise _held_error(name, None, where)

    def release() -> None:
        try:
            value = ssm.get_parameter(Name=param)["Parameter"]["Value"]
        except ClientError:
            return
        current = _parse(value, where)
        if current is None or current.token != info.token:
            log.warning("lock %s expired and was taken over before release", name)
            return
        try:
            # Re-read and deleted only while it still holds our token.
            cleanup.delete_lock_parameter(ssm, param, value)
        except ClientError as err:
            raise AwsCallError(f"AWS refused releasing the lock {where}: {err}") from err

    return Lock(info, release)


# --------------------------------------------------------------------------- API


def acquire(settings: Settings, clients: Clients, name: str, *,
            ttl_seconds: int = DEFAULT_TTL_SECONDS, owner: str | None = None) -> Lock:
    """Take the lock ``name`` or raise :class:`LockHeld` naming its holder."""
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    bucket = settings.s3_bucket
    ssm_where = f"ssm:{settings.ssm_prefix}/{_SSM_TREE}/{name}"
    info = LockInfo(name=name, owner=owner or _owner(), token=secrets.token_hex(8),
                    acquired_at=now.isoformat(),
                    expires_at=(now + _dt.timedelta(seconds=ttl_seconds)).isoformat(),
                    where=f"s3://{bucket}/{_S3_PREFIX}{name}.json" if bucket else ssm_where)
    if bucket:
        try:
            return _s3_acquire(clients, bucket, name, info)
        except _NoBucket:
            # A fresh account (or the example config): build.s3_bucket names a bucket that
            # does not exist yet. Say so once and use the SSM lock, which needs no bucket.
            log.warning("lock %s: bucket s3://%s (build.s3_bucket) does not exist; using the "
                        "SSM lock %s instead (create the bucket to use the S3 lock)", name,
                        bucket, ssm_where)
            info = dataclasses.replace(info, where=ssm_where)
    return _ssm_acquire(clients, name, settings.ssm_prefix, info)


@contextlib.contextmanager
def hold(settings: Settings, clients: Clients, name: str, *,
         ttl_seconds: int = DEFAULT_TTL_SECONDS, owner: str | None = None) -> Iterator[LockInfo]:
    """``with hold(...) as info:`` takes the lock and always releases it."""
    lock = acquire(settings, clients, name, ttl_seconds=ttl_seconds, owner=owner)
    try:
        yield lock.info
    finally:
        lock.release()
