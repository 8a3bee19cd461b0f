"""The content identity of a virtual disk: what lineage and rebuild compare.

Definition (version 1). Cut the *virtual* disk (what a VM sees, not the container file)
into blocks of :data:`BLOCK` = 512 KiB, the EBS direct-API block size; the last block is
zero-padded to 512 KiB. Let ``d[i]`` be the SHA-256 of block ``i``; an all-zero block
has the known digest :data:`ZERO_DIGEST` (= SHA-256 of 512 KiB of zeros), whether its
bytes were read or it lies in a hole or unallocated cluster. Then::

    identity = "disk-v1:" + hex(sha256(b"pipeline-disk-content-v1\\0"
                                        + virtual_size as 8 bytes big-endian
                                        + d[0] + d[1] + ... + d[n-1]))

with ``n = ceil(virtual_size / BLOCK)``. Consequences:

- the same disk content gives the same identity in raw, qcow2, VMDK (sparse or
  streamOptimized), VHD/VHDX or OVA form: only the virtual bytes count, never the
  container layout, compression or allocation (a hole and a written zero block are
  equal);
- a change of any byte, or of the virtual size, changes it;
- it needs only the allocated data: holes (``SEEK_DATA``/``SEEK_HOLE``) and
  unallocated clusters/grains/blocks are known zero blocks, never read;
- it is computed in the same pass as ``--method snapshot``'s upload, from the very
  block digests PutSnapshotBlock sends (:func:`pipeline.aws.ebs.write_snapshot`).

It differs from the whole-file SHA-256 (``source_sha256``), which names bytes of one
container file (VM Import's S3 key needs that, and only it computes it).
"""
from __future__ import annotations

import hashlib
from typing import Iterator, Protocol

__all__ = ["BLOCK", "ZERO_DIGEST", "PREFIX", "ContentHasher", "content_identity",
           "allocated_blocks", "IdentityRead", "file_identity"]

BLOCK = 512 * 1024
ZERO_DIGEST = hashlib.sha256(bytes(BLOCK)).digest()
PREFIX = "disk-v1:"
_DOMAIN = b"pipeline-disk-content-v1\0"
_ZERO_BLOCK = bytes(BLOCK)
_ZERO_RUN = ZERO_DIGEST * 4096          # 4096 zero blocks (2 GiB of disk) per update


class _Disk(Protocol):
    size: int
    name: str

    def read(self, offset: int, length: int) -> bytes: ...

    def allocated_ranges(self) -> Iterator[tuple[int, int]]: ...


class ContentHasher:
    """Incremental identity: feed the block digests of non-zero blocks, ascending.

    Blocks never given are zero blocks. ``add`` raises on out-of-order blocks, since
    a reader that broke the order would silently give another identity.
    """

    def __init__(self, virtual_size: int) -> None:
        if virtual_size < 0:
            raise ValueError(f"virtual size {virtual_size} < 0")
        self.size = virtual_size
        self.blocks = -(-virtual_size // BLOCK)
        self._h = hashlib.sha256(_DOMAIN + virtual_size.to_bytes(8, "big"))
        self._next = 0
        self._final: str | None = None

    def _zeros(self, upto: int) -> None:
        count = upto - self._next
        while count > 0:
            n = min(count, 4096)
            self._h.update(_ZERO_RUN if n == 4096 else ZERO_DIGEST * n)
            count -= n
        self._next = max(self._next, upto)

    def add(self, index: int, digest: bytes) -> None:
        """The SHA-256 of block ``index`` (the block zero-padded to :data:`BLOCK`)."""
        if self._final is not None:
            raise RuntimeError("identity already finished")
        if index < self._next or index >= self.blocks:
            raise ValueError(f"block {index} out of order or outside the disk "
                             f"(next {self._next}, {self.blocks} blocks)")
        self._zeros(index)
        self._h.update(digest)
        self._next = index + 1

    def add_data(self, offset: int, data: bytes) -> None:
        """Blocks of ``data`` at the block-aligned ``offset`` (any length; zero-padded)."""
        if offset % BLOCK:
            raise ValueError(f"offset {offset} is not a multiple of {BLOCK}")
        for pos in range(0, len(data), BLOCK):
            chunk = data[pos:pos + BLOCK]
            if len(chunk) < BLOCK:
                chunk += bytes(BLOCK - len(chunk))
            if chunk != _ZERO_BLOCK:
                self.add((offset + pos) // BLOCK, hashlib.sha256(chunk).digest())

    def identity(self) -> str:
        if self._final is None:
            self._zeros(self.blocks)
            self._final = PREFIX + self._h.hexdigest()
        return self._final


def allocated_blocks(ranges: Iterator[tuple[int, int]], block: int, name: str = "disk"
                     ) -> Iterator[int]:
    """Indices of ``block``-sized blocks touching ``ranges`` (ascending, each once)."""
    nxt = 0
    prev = -1
    for off, length in ranges:
        if off < prev:
            raise RuntimeError(f"{name}: allocated ranges out of order ({off} after {prev}); "
                               "this is a bug in pipeline.image.diskread")
        prev = off
        first = max(off // block, nxt)
        last = -(-(off + length) // block)
        yield from range(first, last)
        nxt = max(nxt, last)


class IdentityRead:
    """What :func:`content_identity` read: the identity and the bytes it took."""

    __slots__ = ("identity", "blocks_read", "bytes_read")

    def __init__(self, identity: str, blocks_read: int, bytes_read: int) -> None:
        self.identity = identity
        self.blocks_read = blocks_read
        self.bytes_read = bytes_read


def content_identity(disk: _Disk) -> IdentityRead:
    """The identity of an open :class:`~pipeline.image.diskread.Disk`, reading only
    the blocks inside ``allocated_ranges()``."""
    hasher = ContentHasher(disk.size)
    blocks = 0
    for idx in allocated_blocks(disk.allocated_ranges(), BLOCK, disk.name):
        off = idx * BLOCK
        data = disk.read(off, min(BLOCK, disk.size - off))
        blocks += 1
        hasher.add_data(off, data)
    return IdentityRead(hasher.identity(), blocks, int(getattr(disk, "bytes_read", 0)))


def file_identity(path: str) -> str:
    """The identity of the disk image at ``path`` (any container diskread opens)."""
    from pipeline.image.diskread import open_disk

    with open_disk(path) as disk:
        return content_identity(disk).identity
