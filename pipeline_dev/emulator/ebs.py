"""EBS direct APIs made faithful, on the shared block store.

moto answers ``BlockSize 512``, validates nothing and keeps blocks apart from EC2
(AWS-FACTS §2). This replaces ``moto.ebs.responses.EBSResponse``'s handlers with ones
that follow the API reference (https://docs.aws.amazon.com/ebs/latest/APIReference/):

- StartSnapshot answers BlockSize 524288, honours ClientToken (ConflictException when
  reused with other parameters), ParentSnapshotId (the new snapshot starts with the
  parent's blocks) and makes a *pending* EC2 snapshot (``vol-ffffffff``).
- PutSnapshotBlock requires ``x-amz-Data-Length: 524288``, a body of that length, the
  SHA256 algorithm and a matching base64 checksum; only while the snapshot is pending;
  the index must lie inside the volume.
- CompleteSnapshot checks ``x-amz-ChangedBlocksCount`` against the distinct blocks
  written and, when given, the LINEAR aggregate checksum (coldsnap's definition:
  base64(sha256(raw digests in ascending index order))), then marks the EC2 snapshot
  completed.
- ListSnapshotBlocks only for completed snapshots: written blocks in index order,
  ``maxResults`` (100–10000) / ``NextToken`` paging, ``startingBlockIndex``.
- GetSnapshotBlock requires a BlockToken issued for that snapshot and index.
- Unknown snapshots give ResourceNotFoundException (HTTP 404).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from moto.core.exceptions import ServiceException
from moto.core.responses import ActionResult
from moto.ebs.responses import EBSResponse

from pipeline_dev.emulator.blockstore import BLOCK_SIZE, GiB, STORE, Block, new_snapshot

__all__ = ["install", "reset", "aggregate_checksum", "ValidationException",
           "ResourceNotFoundException"]

_SECRET = os.urandom(16)
_BLOCKS_PER_GIB = GiB // BLOCK_SIZE
_lock = threading.Lock()


class ValidationException(ServiceException):
    code = "ValidationException"

    def __init__(self, message: str, reason: str = "INVALID_PARAMETER_VALUE") -> None:
        super().__init__(message)
        self.reason = self.Reason = reason


class ResourceNotFoundException(ServiceException):
    code = "ResourceNotFoundException"

    def __init__(self, snapshot_id: str) -> None:
        super().__init__(f"The snapshot '{snapshot_id}' does not exist.")
        self.reason = self.Reason = "SNAPSHOT_NOT_FOUND"


class ConflictException(ServiceException):
    code = "ConflictException"


@dataclass
class _Direct:
    """Write-session state of a snapshot started through StartSnapshot."""

    written: set[int] = field(default_factory=set)
    params: tuple[Any, ...] = ()


_direct: dict[str, _Direct] = {}
_tokens: dict[tuple[str, str], tuple[tuple[Any, ...], str]] = {}


def reset() -> None:
    """Forget write sessions and client tokens (the block store is cleared separately)."""
    with _lock:
        _direct.clear()
        _tokens.clear()


def aggregate_checksum(digests: list[bytes]) -> str:
    """LINEAR aggregate as coldsnap computes it (AWS-FACTS §2)."""
    return base64.b64encode(hashlib.sha256(b"".join(digests)).digest()).decode()


def _block_token(snapshot_id: str, index: int) -> str:
    mac = hmac.new(_SECRET, f"{snapshot_id}/{index}".encode(), hashlib.sha256).digest()
    return base64.b64encode(b"\x00\x05\x01" + index.to_bytes(4, "big") + mac).decode()


def _page_token(snapshot_id: str, index: int) -> str:
    body = json.dumps({"s": snapshot_id, "i": index}).encode()
    mac = hmac.new(_SECRET, body, hashlib.sha256).hexdigest()[:16]
    return base64.urlsafe_b64encode(body + b"." + mac.encode()).decode()


def _read_page_token(snapshot_id: str, token: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token.encode())
        body, mac = raw.rsplit(b".", 1)
        good = hmac.new(_SECRET, body, hashlib.sha256).hexdigest()[:16].encode()
        data = json.loads(body)
        if not hmac.compare_digest(mac, good) or data["s"] != snapshot_id:
            raise ValueError
        return int(data["i"])
    except (ValueError, KeyError, TypeError):
        raise ValidationException("The pagination token is invalid.", "INVALID_PAGE_TOKEN")


def _ec2(resp: EBSResponse) -> Any:
    from moto.ec2.models import ec2_backends

    return ec2_backends[resp.current_account][resp.region]


def _snapshot(resp: EBSResponse, snapshot_id: str) -> Any:
    snap = _ec2(resp).snapshots.get(snapshot_id)
    if snap is None:
        raise ResourceNotFoundException(snapshot_id)
    return snap


def _int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValidationException(f"{name} must be an integer, got {value!r}.")


def _tags(snap: Any) -> list[dict[str, str]]:
    return [{"Key": t["key"], "Value": t["value"]} for t in snap.get_tags()]


def _start_result(snap: Any) -> ActionResult:
    return ActionResult({
        "SnapshotId": snap.id, "OwnerId": snap.owner_id, "Status": snap.status,
        "StartTime": snap.start_time, "VolumeSize": snap.volume_size,
        "BlockSize": BLOCK_SIZE, "Tags": _tags(snap), "Description": snap.description,
        "ParentSnapshotId": getattr(snap, "parent_snapshot_id", None),
        "KmsKeyArn": getattr(snap, "kms_key_id", None) if snap.encrypted else None,
        "SseType": "sse-kms" if snap.encrypted else "none",
    })


def start_snapshot(self: EBSResponse) -> ActionResult:
    size = _int(self._get_param("VolumeSize"), "VolumeSize")
    tags = self._get_param("Tags") or []
    description = self._get_param("Description") or ""
    parent = self._get_param("ParentSnapshotId")
    token = self._get_param("ClientToken")
    encrypted = bool(self._get_param("Encrypted"))
    kms_arn = self._get_param("KmsKeyArn")
    timeout = self._get_param("Timeout")
    if not 1 <= size <= 65536:
        raise ValidationException(f"Volume size {size} GiB is out of range 1-65536.",
                                  "INVALID_VOLUME_SIZE")
    if len(description) > 255:
        raise ValidationException("Description must be at most 255 characters.")
    if encrypted and parent:
        raise ValidationException("Encrypted cannot be specified with ParentSnapshotId.",
                                  "INVALID_DEPENDENCY_REQUEST")
    if timeout is not None and not 10 <= _int(timeout, "Timeout") <= 4320:
        raise ValidationException("Timeout must be between 10 and 4320 minutes.")
    if kms_arn is not None:
        from pipeline_dev.emulator.kms_keys import ARN_RE, resolve

        if not ARN_RE.match(str(kms_arn)):
            raise ValidationException(
                "1 validation error detected: Value at 'kmsKeyArn' failed to satisfy "
                "constraint: Member must satisfy regular expression pattern: "
                "arn:aws[a-z\\-]*:kms:.*:[0-9]{12}:key/.*", "INVALID_PARAMETER_VALUE")
        if resolve(self.current_account, self.region, kms_arn) is None:
            raise ValidationException(f"The KMS key {kms_arn} does not exist in "
                                      f"{self.region} or is not enabled.",
                                      "INVALID_CUSTOMER_KEY")
    params = (size, json.dumps(tags, sort_keys=True), description, parent, encrypted, kms_arn)
    ec2 = _ec2(self)
    with _lock:
        if token and (self.current_account, token) in _tokens:
            old_params, old_id = _tokens[(self.current_account, token)]
            if old_params != params:
                raise ConflictException(
                    "The request uses the same client token as a previous, but "
                    "non-identical request.")
            if old_id in ec2.snapshots:
                return _start_result(ec2.snapshots[old_id])
    blocks: dict[int, Block] = {}
    if parent:
        parent_snap = _snapshot(self, parent)
        if parent_snap.status != "completed":
            raise ValidationException(f"The parent snapshot {parent} is not completed.",
                                      "INVALID_DEPENDENCY_REQUEST")
        if parent_snap.volume_size > size:
            raise ValidationException(
                f"Volume size {size} GiB is smaller than the parent snapshot's "
                f"{parent_snap.volume_size} GiB.", "INVALID_VOLUME_SIZE")
        blocks = STORE.blocks(parent)
    parent_snap = ec2.snapshots.get(parent) if parent else None
    encrypted = encrypted or kms_arn is not None or bool(parent_snap and parent_snap.encrypted)
    snap = new_snapshot(ec2, size, description, blocks=blocks, state="pending",
                        encrypted=encrypted)
    snap.parent_snapshot_id = parent
    if encrypted:
        from pipeline_dev.emulator.kms_keys import default_key_arn

        snap.kms_key_id = kms_arn or getattr(parent_snap, "kms_key_id", None) or \
            default_key_arn(self.current_account, self.region)
    if tags:
        snap.add_tags({t["Key"]: t["Value"] for t in tags})
    with _lock:
        _direct[snap.id] = _Direct(params=params)
        if token:
            _tokens[(self.current_account, token)] = (params, snap.id)
    return _start_result(snap)


def _pending(self: EBSResponse, snapshot_id: str) -> tuple[Any, _Direct]:
    snap = _snapshot(self, snapshot_id)
    with _lock:
        state = _direct.get(snapshot_id)
    if state is None or snap.status != "pending":
        raise ValidationException(
            f"The snapshot {snapshot_id} is {snap.status}: blocks can only be written "
            "to a pending snapshot started with StartSnapshot.", "INVALID_SNAPSHOT_ID")
    return snap, state


def put_snapshot_block(self: EBSResponse) -> ActionResult:
    snapshot_id = self._get_param("SnapshotId")
    snap, state = _pending(self, snapshot_id)
    index = _int(self._get_param("BlockIndex"), "BlockIndex")
    data = self._get_param("BlockData") or b""
    if isinstance(data, str):
        data = data.encode("latin-1")
    length = self._get_param("DataLength")
    checksum = self._get_param("Checksum")
    algorithm = self._get_param("ChecksumAlgorithm")
    if not 0 <= index < snap.volume_size * _BLOCKS_PER_GIB:
        raise ValidationException(
            f"Block index {index} is outside a {snap.volume_size} GiB volume.", "INVALID_BLOCK")
    if length is None or _int(length, "DataLength") != BLOCK_SIZE:
        raise ValidationException(
            f"The data length {length} is not supported; the only supported size is "
            f"{BLOCK_SIZE}.", "INVALID_BLOCK")
    if len(data) != BLOCK_SIZE:
        raise ValidationException(
            f"The body has {len(data)} bytes but x-amz-Data-Length says {BLOCK_SIZE}.",
            "INVALID_BLOCK")
    if algorithm != "SHA256":
        raise ValidationException("The checksum algorithm must be SHA256.")
    block = Block.of(bytes(data))
    if checksum != block.checksum:
        raise ValidationException(
            "The checksum in the request does not match the SHA256 checksum of the data.",
            "INVALID_BLOCK")
    STORE.put(snapshot_id, index, block)
    with _lock:
        state.written.add(index)
    return ActionResult({"Checksum": block.checksum, "ChecksumAlgorithm": "SHA256"})


def complete_snapshot(self: EBSResponse) -> ActionResult:
    snapshot_id = self._get_param("SnapshotId")
    snap, state = _pending(self, snapshot_id)
    count = self._get_param("ChangedBlocksCount")
    if count is None:
        raise ValidationException("x-amz-ChangedBlocksCount is required.")
    with _lock:
        written = sorted(state.written)
    if _int(count, "ChangedBlocksCount") != len(written):
        raise ValidationException(
            f"ChangedBlocksCount {count} does not match the {len(written)} blocks written "
            f"to {snapshot_id}.", "INVALID_PARAMETER_VALUE")
    checksum = self._get_param("Checksum")
    if checksum is not None:
        if self._get_param("ChecksumAlgorithm") != "SHA256":
            raise ValidationException("The checksum algorithm must be SHA256.")
        if self._get_param("ChecksumAggregationMethod") != "LINEAR":
            raise ValidationException("The checksum aggregation method must be LINEAR.")
        blocks = STORE.blocks(snapshot_id)
        expected = aggregate_checksum([blocks[i].digest for i in written])
        if checksum != expected:
            raise ValidationException(
                "The aggregate checksum does not match the checksums of the written "
                "blocks.", "INVALID_PARAMETER_VALUE")
    from pipeline_dev.emulator import timing

    snap.status = "completed"
    with _lock:
        _direct.pop(snapshot_id, None)
    timing.snapshot_pending(snap)       # realistic: pending a little longer, then completed
    return ActionResult({"Status": snap.status})


def _completed(self: EBSResponse, snapshot_id: str) -> Any:
    snap = _snapshot(self, snapshot_id)
    if snap.status != "completed":
        raise ValidationException(
            f"The snapshot {snapshot_id} is {snap.status}; blocks can only be read from a "
            "completed snapshot.", "INVALID_SNAPSHOT_ID")
    return snap


def list_snapshot_blocks(self: EBSResponse) -> ActionResult:
    snapshot_id = self._get_param("SnapshotId")
    snap = _completed(self, snapshot_id)
    max_results = self._get_param("MaxResults")
    max_results = 10000 if max_results is None else _int(max_results, "maxResults")
    if not 100 <= max_results <= 10000:
        raise ValidationException("maxResults must be between 100 and 10000.")
    token = self._get_param("NextToken")
    if token:
        start = _read_page_token(snapshot_id, token)
    else:
        start = _int(self._get_param("StartingBlockIndex") or 0, "startingBlockIndex")
    indexes = [i for i in STORE.blocks(snapshot_id) if i >= start]
    page, rest = indexes[:max_results], indexes[max_results:]
    result: dict[str, Any] = {
        "Blocks": [{"BlockIndex": i, "BlockToken": _block_token(snapshot_id, i)} for i in page],
        "ExpiryTime": datetime.now(timezone.utc) + timedelta(days=7),
        "VolumeSize": snap.volume_size,
        "BlockSize": BLOCK_SIZE,
    }
    if rest:
        result["NextToken"] = _page_token(snapshot_id, rest[0])
    return ActionResult(result)


def get_snapshot_block(self: EBSResponse) -> ActionResult:
    snapshot_id = self._get_param("SnapshotId")
    _completed(self, snapshot_id)
    index = _int(self._get_param("BlockIndex"), "BlockIndex")
    token = self._get_param("BlockToken") or ""
    block = STORE.get(snapshot_id, index)
    if block is None or not hmac.compare_digest(token, _block_token(snapshot_id, index)):
        raise ValidationException("The block token is not valid for this snapshot and "
                                  "block index.", "INVALID_BLOCK_TOKEN")
    return ActionResult({"DataLength": BLOCK_SIZE, "BlockData": block.data,
                         "Checksum": block.checksum, "ChecksumAlgorithm": "SHA256"})


def _check_related(self: EBSResponse, first: Any, second: Any) -> None:
    """ListChangedBlocks compares snapshots of one lineage: the same volume, or the second
    descends from the first through ParentSnapshotId (ValidationExceptionReason
    UNRELATED_SNAPSHOTS, botocore ebs model; the text is ours)."""
    from pipeline_dev.emulator.blockstore import PHANTOM_VOLUME_ID

    if first.volume_id == second.volume_id and first.volume_id != PHANTOM_VOLUME_ID:
        return
    ec2, seen, cur = _ec2(self), set(), second
    while cur is not None and cur.id not in seen:
        if cur.id == first.id:
            return
        seen.add(cur.id)
        parent = getattr(cur, "parent_snapshot_id", None)
        cur = ec2.snapshots.get(parent) if parent else None
    raise ValidationException(f"The snapshots {first.id} and {second.id} are not related: "
                              "they are not snapshots of the same volume or lineage.",
                              "UNRELATED_SNAPSHOTS")


def list_changed_blocks(self: EBSResponse) -> ActionResult:
    first = self._get_param("FirstSnapshotId")
    second = self._get_param("SecondSnapshotId")
    snap = _completed(self, second)
    if first:
        _check_related(self, _completed(self, first), snap)
    a = STORE.blocks(first) if first else {}
    b = STORE.blocks(second)
    start = _int(self._get_param("StartingBlockIndex") or 0, "startingBlockIndex")
    token = self._get_param("NextToken")
    if token:
        start = _read_page_token(second, token)
    max_results = _int(self._get_param("MaxResults") or 10000, "maxResults")
    changed = []
    for i in sorted(set(a) | set(b)):
        if i < start or (i in a and i in b and a[i].digest == b[i].digest):
            continue
        item: dict[str, Any] = {"BlockIndex": i}
        if i in a:
            item["FirstBlockToken"] = _block_token(first, i)
        if i in b:
            item["SecondBlockToken"] = _block_token(second, i)
        changed.append(item)
    page, rest = changed[:max_results], changed[max_results:]
    result: dict[str, Any] = {
        "ChangedBlocks": page, "VolumeSize": snap.volume_size, "BlockSize": BLOCK_SIZE,
        "ExpiryTime": datetime.now(timezone.utc) + timedelta(days=7)}
    if rest:
        result["NextToken"] = _page_token(second, rest[0]["BlockIndex"])
    return ActionResult(result)


def install() -> None:
    """Replace moto's EBS handlers (idempotent: plain attribute assignment)."""
    for fn in (start_snapshot, put_snapshot_block, complete_snapshot, list_snapshot_blocks,
               get_snapshot_block, list_changed_blocks):
        setattr(EBSResponse, fn.__name__, fn)
