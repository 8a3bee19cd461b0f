"""An EBS snapshot as a random-access disk, read block by block through the EBS direct APIs.

``ListSnapshotBlocks`` names the written blocks (and their tokens) once; reads fetch
``GetSnapshotBlock`` only for the blocks they touch, keep a small LRU cache, check
each block's SHA-256 and answer zeros for blocks that were never written. Only this
module (and :func:`pipeline.lineage.verify_ami.verify_ami`) touches boto3, through ``Clients``.
"""
from __future__ import annotations

import base64
import hashlib
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Iterator

from pipeline.core.errors import ImageReadError
from pipeline.image.diskread.containers import Disk, merge_ranges

if TYPE_CHECKING:
    from pipeline.aws.clients import Clients

__all__ = ["SnapshotDisk", "open_snapshot"]

GiB = 1024 ** 3
#: Blocks kept in memory (64 x 512 KiB = 32 MiB).
CACHE_BLOCKS = 64


class SnapshotDisk(Disk):
    """A completed EBS snapshot; ``api_calls`` counts GetSnapshotBlock requests."""

    format = "ebs-snapshot"

    def __init__(self, ebs: Any, snapshot_id: str, cache_blocks: int = CACHE_BLOCKS) -> None:
        self._ebs = ebs
        self.snapshot_id = snapshot_id
        self.name = snapshot_id
        self.api_calls = 0
        self.list_calls = 0
        self._bytes = 0
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._max = cache_blocks
        self._tokens: dict[int, str] = {}
        self.block_size = 0
        self._list_blocks()

    def _list_blocks(self) -> None:
        kwargs: dict[str, Any] = {"SnapshotId": self.snapshot_id, "MaxResults": 10000}
        while True:
            resp = self._call(self._ebs.list_snapshot_blocks, "list the blocks of", **kwargs)
            self.list_calls += 1
            self.block_size = int(resp["BlockSize"])
            self.size = int(resp["VolumeSize"]) * GiB
            for b in resp.get("Blocks", []):
                self._tokens[int(b["BlockIndex"])] = b["BlockToken"]
            token = resp.get("NextToken")
            if not token:
                break
            kwargs["NextToken"] = token
        if self.block_size <= 0 or self.size <= 0:
            raise ImageReadError(f"snapshot {self.snapshot_id}: EBS reports block size "
                                 f"{self.block_size} and volume size {self.size}")

    def _call(self, fn: Any, what: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except ClientError as err:
            e = err.response.get("Error", {})
            code = e.get("Code") or err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            raise ImageReadError(
                f"snapshot {self.snapshot_id}: EBS direct APIs refused to {what} it: {code}: "
                f"{e.get('Message') or err}; check the id, the region and that the snapshot "
                "is completed") from err
        except BotoCoreError as err:
            raise ImageReadError(f"snapshot {self.snapshot_id}: cannot {what} it: {err}") from err

    @property
    def bytes_read(self) -> int:
        return self._bytes

    @property
    def written_blocks(self) -> int:
        return len(self._tokens)

    def _block(self, index: int) -> bytes:
        data = self._cache.get(index)
        if data is not None:
            self._cache.move_to_end(index)
            return data
        token = self._tokens.get(index)
        if token is None:
            return bytes(self.block_size)
        resp = self._call(self._ebs.get_snapshot_block, f"read block {index} of",
                          SnapshotId=self.snapshot_id, BlockIndex=index, BlockToken=token)
        self.api_calls += 1
        body = resp["BlockData"]
        try:
            data = bytes(body.read())
        finally:
            body.close()
        self._bytes += len(data)
        want = resp.get("Checksum")
        if want and resp.get("ChecksumAlgorithm", "SHA256") == "SHA256":
            got = base64.b64encode(hashlib.sha256(data).digest()).decode()
            if got != want:
                raise ImageReadError(f"snapshot {self.snapshot_id}: block {index} fails its "
                                     "SHA-256 checksum; retry, or re-create the snapshot")
        if len(data) < self.block_size:
            data += bytes(self.block_size - len(data))
        self._cache[index] = data
        if len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return data

    def _read(self, offset: int, length: int) -> bytes:
        parts = []
        pos, end = offset, offset + length
        while pos < end:
            index, skip = divmod(pos, self.block_size)
            take = min(self.block_size - skip, end - pos)
            parts.append(self._block(index)[skip:skip + take])
            pos += take
        return b"".join(parts)

    def allocated_ranges(self) -> Iterator[tuple[int, int]]:
        bs = self.block_size
        return merge_ranges((i * bs, min(bs, self.size - i * bs))
                            for i in sorted(self._tokens) if i * bs < self.size)

    def close(self) -> None:
        self._cache.clear()


def open_snapshot(clients: "Clients", snapshot_id: str, region: str | None = None) -> SnapshotDisk:
    """Open a completed EBS snapshot for lazy reading (see :class:`SnapshotDisk`)."""
    return SnapshotDisk(clients.client("ebs", region=region), snapshot_id)
