"""``--method snapshot``: write a disk image straight into an EBS snapshot, register it.

The way Bottlerocket's coldsnap does it (awslabs/coldsnap ``src/upload.rs``), with no
S3 bucket, no vmimport role and no VM Import task:

1. StartSnapshot (VolumeSize = ceil(GiB), Timeout, tags, ClientToken). Its BlockSize
   (512 KiB on AWS) is the unit of everything after.
2. Read the disk as raw blocks through :func:`pipeline.image.diskread.open_disk` (raw, VMDK,
   VHD/VHDX, qcow2, OVA read in place: no temporary raw copy), only inside
   ``allocated_ranges()``, and skip blocks that are all zeros (a fresh EBS volume
   reads zeros there anyway). The last block is zero-padded.
3. Each worker reads a block, skips it if all zeros, hashes it (SHA-256) and sends it
   with PutSnapshotBlock (a bounded window of blocks in flight, so memory does not grow
   with the disk); each block is retried with exponential backoff on throttling, 5xx and
   connection errors. Raw files are read with ``pread`` in parallel; container readers
   serialise their reads while hashing and HTTP overlap.
4. CompleteSnapshot with ChangedBlocksCount and the LINEAR aggregate checksum:
   base64(sha256(raw 32-byte block digests in ascending block index)) — computed
   incrementally, results are consumed in index order. The same digests feed the
   disk's content identity (:mod:`pipeline.image.identity`), so lineage and rebuild
   get it from this one pass over the allocated data.
5. Wait for the EC2 snapshot to be ``completed`` (botocore waiter), then RegisterImage
   (hvm, /dev/xvda, gp3 root that is deleted on termination, ENA, boot mode, IMDSv2).

Anything that fails after StartSnapshot deletes the snapshot (and a registered image),
through the caller's :class:`contextlib.ExitStack`.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import random
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from botocore.exceptions import (BotoCoreError, ClientError, ConnectionClosedError,
                                 EndpointConnectionError, ReadTimeoutError, WaiterError)

from pipeline.aws import cleanup
from pipeline.core import tags as tagkeys
from pipeline.aws.clients import Clients, call, error_code
from pipeline.aws.limits import snapshot_block_rate
from pipeline.core.errors import AwsCallError, PipelineError
from pipeline.core.progress import NO_PROGRESS, Progress
from pipeline.image.identity import BLOCK as IDENTITY_BLOCK
from pipeline.image.identity import ContentHasher

__all__ = ["SnapshotWrite", "SnapshotImport", "write_snapshot", "register_root_image",
           "import_as_snapshot", "linear_checksum", "MAX_ATTEMPTS"]

log = logging.getLogger(__name__)

GiB = 1024 ** 3
MAX_ATTEMPTS = 8
_RETRY_CODES = {"ThrottlingException", "RequestThrottledException", "InternalServerException",
                "ServiceUnavailableException", "InternalError", "SlowDown",
                "RequestTimeout", "RequestTimeoutException"}


@dataclass(frozen=True, slots=True)
class SnapshotWrite:
    """A completed snapshot written from a disk image."""

    snapshot_id: str
    volume_size_gib: int
    block_size: int
    blocks_sent: int
    blocks_total: int           # blocks in the volume
    bytes_sent: int
    checksum: str               # LINEAR aggregate, base64
    seconds: float
    content_id: str = ""        # pipeline.image.identity of the disk, same pass


@dataclass(frozen=True, slots=True)
class SnapshotImport:
    """An AMI registered from a snapshot written by :func:`write_snapshot`."""

    image_id: str
    snapshot_id: str
    bytes_sent: int
    blocks_sent: int
    blocks_total: int
    seconds: float
    content_id: str = ""        # pipeline.image.identity of the disk written


def linear_checksum(digests: list[bytes]) -> str:
    """LINEAR aggregate of raw block digests given in ascending block index."""
    return base64.b64encode(hashlib.sha256(b"".join(digests)).digest()).decode()


def _retryable(err: BaseException) -> bool:
    if isinstance(err, (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError)):
        return True
    if isinstance(err, ClientError):
        status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return error_code(err) in _RETRY_CODES or status >= 500 or status == 429
    return False


def _put_block(ebs: Any, snapshot_id: str, index: int, data: bytes, checksum: str,
               progress_pct: int) -> None:
    for attempt in range(1, MAX_ATTEMPTS + 1):
        snapshot_block_rate(snapshot_id).acquire()     # 1,000/s per snapshot (aws.limits)
        try:
            ebs.put_snapshot_block(SnapshotId=snapshot_id, BlockIndex=index, BlockData=data,
                                   DataLength=len(data), Checksum=checksum,
                                   ChecksumAlgorithm="SHA256", Progress=progress_pct)
            return
        except (ClientError, BotoCoreError) as err:
            if attempt == MAX_ATTEMPTS or not _retryable(err):
                raise AwsCallError(f"PutSnapshotBlock {index} of {snapshot_id} failed after "
                                   f"{attempt} attempt(s): {error_code(err) or err}") from err
            delay = min(0.25 * 2 ** attempt, 20.0) * (0.5 + random.random())
            log.debug("block %d of %s: %s, retrying in %.1fs", index, snapshot_id,
                      error_code(err) or err, delay)
            time.sleep(delay)


def _owner(tags: Mapping[str, str], kind: str, rid: str) -> cleanup.Owner:
    """This run created ``rid`` a moment ago (and tagged it with its build id)."""
    return cleanup.Owner(tags.get(tagkeys.BUILD_ID) or "unrecorded-run",
                         frozenset({(kind, rid)}))


def _delete_snapshot(clients: Clients, tags: Mapping[str, str], snapshot_id: str) -> None:
    try:
        done = cleanup.delete_snapshots(clients, None, _owner(tags, "snapshot", snapshot_id),
                                        [snapshot_id])
    except (ClientError, BotoCoreError, PipelineError) as err:
        done = [cleanup.Removal("snapshot", snapshot_id, "", "failed", str(err))]
    for r in done:
        if r.ok:
            log.info("deleted snapshot %s", snapshot_id)
        else:
            log.warning("could not delete snapshot %s (%s): delete it with `aws ec2 "
                        "delete-snapshot --snapshot-id %s`", snapshot_id, r.error, snapshot_id)


def _blocks(disk: Any, block_size: int) -> Any:
    """Indices of blocks that may hold data, ascending, each once.

    ``allocated_ranges()`` is documented ascending; a reader that broke that would make
    us skip data silently, so it is checked.
    """
    nxt = 0
    prev = -1
    for off, length in disk.allocated_ranges():
        if off < prev:
            raise RuntimeError(f"{disk.name}: allocated ranges out of order ({off} after "
                               f"{prev}); this is a bug in pipeline.image.diskread")
        prev = off
        first = max(off // block_size, nxt)
        last = -(-(off + length) // block_size)
        for idx in range(first, last):
            yield idx
        nxt = max(nxt, last)


_Sent = tuple[int, "bytes | None", "tuple[tuple[int, bytes], ...]"]


def _identity_parts(off: int, data: bytes, digest: bytes) -> tuple[tuple[int, bytes], ...]:
    """The identity's (512 KiB block index, digest) pairs of a non-zero EBS block.

    AWS's BlockSize is 512 KiB, the identity's block: the PutSnapshotBlock digest is
    reused. Another size (never seen) is cut into 512 KiB parts, zero parts skipped."""
    if len(data) == IDENTITY_BLOCK:
        return ((off // IDENTITY_BLOCK, digest),)
    zero = bytes(IDENTITY_BLOCK)
    return tuple(((off + i) // IDENTITY_BLOCK, hashlib.sha256(data[i:i + IDENTITY_BLOCK]).digest())
                 for i in range(0, len(data), IDENTITY_BLOCK)
                 if data[i:i + IDENTITY_BLOCK] != zero)


def write_snapshot(clients: Clients, disk: Any, *, tags: Mapping[str, str],
                   client_token: str, description: str = "", kms_key_id: str | None = None,
                   workers: int = 16, timeout_minutes: int = 60, undo: ExitStack,
                   progress: Progress = NO_PROGRESS,
                   on_created: Callable[[str, str], None] | None = None) -> SnapshotWrite:
    """Steps 1–5 of the module docstring for an open :class:`~pipeline.image.diskread.Disk`.

    Registers the snapshot's deletion on ``undo`` as soon as it exists.
    """
    t0 = time.monotonic()
    ebs, ec2 = clients.client("ebs"), clients.client("ec2")
    size_gib = max(1, -(-disk.size // GiB))
    kwargs: dict[str, Any] = dict(VolumeSize=size_gib, Timeout=timeout_minutes,
                                  ClientToken=client_token[:255], Description=description[:255],
                                  Tags=tagkeys.to_tag_list(tags))
    if kms_key_id:
        kwargs.update(Encrypted=True, KmsKeyArn=kms_key_id)
    started = call(ebs.start_snapshot, what="starting an EBS snapshot (StartSnapshot)", **kwargs)
    snap = str(started["SnapshotId"])
    undo.callback(_delete_snapshot, clients, tags, snap)
    if on_created is not None:
        on_created("snapshot", snap)
    bs = int(started.get("BlockSize") or 524288)
    total_blocks = size_gib * GiB // bs
    aggregate = hashlib.sha256()
    identity = ContentHasher(disk.size)
    sent = 0
    progress.start(disk.size, f"write {snap}")
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="ebs-block")
    # Blocks are read, hashed and sent by the workers (raw files read with pread in
    # parallel; container readers serialise their reads, the hashing and HTTP still
    # overlap). Results are consumed in submission (= index) order, so the LINEAR
    # aggregate and the content identity are fed in ascending order; the window
    # bounds memory to about ``window`` blocks.
    window: deque[Future[_Sent]] = deque()
    zero = bytes(bs)
    limit = 4 * max(1, workers)
    covered = 0

    def consume(fut: Future[_Sent]) -> None:
        nonlocal sent, covered
        idx, digest, parts = fut.result()
        off = idx * bs
        if digest is not None:
            aggregate.update(digest)
            sent += 1
        for part_index, part_digest in parts:
            identity.add(part_index, part_digest)
        # Everything up to this block's end is done, holes skipped before it included.
        progress.advance(max(0, min(off + bs, disk.size) - covered))
        covered = min(off + bs, disk.size)

    def one(idx: int) -> _Sent:
        off = idx * bs
        data = disk.read(off, min(bs, disk.size - off)) if off < disk.size else b""
        if len(data) < bs:
            data += bytes(bs - len(data))
        if data == zero:
            return idx, None, ()
        digest = hashlib.sha256(data).digest()
        pct = min(99, int(100 * off / max(disk.size, 1)))
        _put_block(ebs, snap, idx, data, base64.b64encode(digest).decode(), pct)
        return idx, digest, _identity_parts(off, data, digest)
    try:
        for idx in _blocks(disk, bs):
            window.append(pool.submit(one, idx))
            if len(window) >= limit:
                consume(window.popleft())
        while window:
            consume(window.popleft())
        progress.advance(max(0, disk.size - covered))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        progress.done()
    checksum = base64.b64encode(aggregate.digest()).decode()
    call(ebs.complete_snapshot, what=f"completing snapshot {snap} (CompleteSnapshot)",
         SnapshotId=snap, ChangedBlocksCount=sent, Checksum=checksum,
         ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
    progress.status(f"snapshot {snap}: {sent} blocks written, waiting for completed")
    try:
        ec2.get_waiter("snapshot_completed").wait(
            SnapshotIds=[snap], WaiterConfig={"Delay": 2, "MaxAttempts": 1800})
    except WaiterError as err:
        raise AwsCallError(f"snapshot {snap} did not reach completed: {err}") from err
    return SnapshotWrite(snapshot_id=snap, volume_size_gib=size_gib, block_size=bs,
                         blocks_sent=sent, blocks_total=total_blocks, bytes_sent=sent * bs,
                         checksum=checksum, seconds=time.monotonic() - t0,
                         content_id=identity.identity())


def register_root_image(ec2: Any, snapshot_id: str, *, name: str, size_gib: int,
                        architecture: str, boot_mode: str, tags: Mapping[str, str],
                        description: str = "") -> str:
    """RegisterImage of a single-volume Linux AMI whose root is ``snapshot_id``."""
    resp = call(ec2.register_image, what=f"registering an AMI from {snapshot_id}",
                Name=name[:128], Description=description[:255], Architecture=architecture,
                VirtualizationType="hvm", RootDeviceName="/dev/xvda",
                BlockDeviceMappings=[{"DeviceName": "/dev/xvda",
                                      "Ebs": {"SnapshotId": snapshot_id, "VolumeSize": size_gib,
                                              "VolumeType": "gp3",
                                              "DeleteOnTermination": True}}],
                EnaSupport=True, BootMode=boot_mode, ImdsSupport="v2.0",
                TagSpecifications=tagkeys.tag_specifications(tags, "image"))
    return str(resp["ImageId"])


def _deregister(clients: Clients, tags: Mapping[str, str], image_id: str) -> None:
    try:
        done = cleanup.deregister_images(clients, None, _owner(tags, "image", image_id),
                                         [image_id])
    except (ClientError, BotoCoreError, PipelineError) as err:
        done = [cleanup.Removal("image", image_id, "", "failed", str(err))]
    for r in done:
        if not r.ok:
            log.warning("could not deregister %s: %s", image_id, r.error)


def import_as_snapshot(clients: Clients, path: Path, *, name: str, architecture: str,
                       boot_mode: str, tags: Mapping[str, str], kms_key_id: str | None = None,
                       workers: int = 16, undo: ExitStack,
                       progress: Progress = NO_PROGRESS,
                       on_created: Callable[[str, str], None] | None = None) -> SnapshotImport:
    """Write ``path`` into a snapshot and register it as an AMI (undo registered)."""
    from pipeline.image.diskread import open_disk

    t0 = time.monotonic()
    ec2 = clients.client("ec2")
    token = hashlib.sha256(f"{tags.get(tagkeys.BUILD_ID, '')}|{path}".encode()).hexdigest()
    with open_disk(path) as disk:
        written = write_snapshot(clients, disk, tags=tags, client_token=token,
                                 description=f"{name} from {path.name}", kms_key_id=kms_key_id,
                                 workers=workers, undo=undo, progress=progress,
                                 on_created=on_created)
    image_id = register_root_image(ec2, written.snapshot_id, name=name,
                                   size_gib=written.volume_size_gib, architecture=architecture,
                                   boot_mode=boot_mode, tags=tags,
                                   description=f"{name} from {path.name}")
    undo.callback(_deregister, clients, tags, image_id)
    if on_created is not None:
        on_created("image", image_id)
    # LIFO: on failure the image is deregistered before its snapshot is deleted.
    return SnapshotImport(image_id=image_id, snapshot_id=written.snapshot_id,
                          bytes_sent=written.bytes_sent, blocks_sent=written.blocks_sent,
                          blocks_total=written.blocks_total, seconds=time.monotonic() - t0,
                          content_id=written.content_id)
