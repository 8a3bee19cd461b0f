"""One in-memory block store for every EBS resource's data, keyed by resource id.

EBS direct snapshots, EC2 snapshots (CreateSnapshot, CreateImage, CopySnapshot,
CopyImage, VM Import, the seeded base AMIs) and volumes (RunInstances, CreateVolume)
all keep their bytes here as ``{block_index: Block}`` with AWS's 512 KiB block size, so
data follows resources: copying a snapshot copies the mapping (blocks are immutable and
shared), a volume made from a snapshot starts with the snapshot's blocks, and so on.
Unwritten blocks read as zeros and are never listed, as on AWS.

It also makes EC2 snapshot objects that are not backed by a real moto volume (AWS shows
``vol-ffffffff`` for snapshots made through the EBS direct APIs or VM Import).
"""
from __future__ import annotations

import base64
import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

__all__ = [
    "BLOCK_SIZE",
    "Block",
    "BlockStore",
    "STORE",
    "blocks_from_bytes",
    "blocks_from_file",
    "new_snapshot",
    "PHANTOM_VOLUME_ID",
]

#: The EBS direct APIs' only block size (StartSnapshot answers ``BlockSize: 524288``).
BLOCK_SIZE = 524288
GiB = 1024 ** 3
#: The VolumeId AWS reports for snapshots that were not taken from a volume.
PHANTOM_VOLUME_ID = "vol-ffffffff"


@dataclass(frozen=True, slots=True)
class Block:
    """One 512 KiB block and its SHA-256 (raw digest; base64 form for the wire)."""

    data: bytes
    digest: bytes

    @classmethod
    def of(cls, data: bytes) -> "Block":
        return cls(data, hashlib.sha256(data).digest())

    @property
    def checksum(self) -> str:
        return base64.b64encode(self.digest).decode()


class BlockStore:
    """Thread-safe ``resource id -> {index: Block}``; the emulator's one disk."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, dict[int, Block]] = {}

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def ensure(self, rid: str) -> None:
        with self._lock:
            self._data.setdefault(rid, {})

    def put(self, rid: str, index: int, block: Block) -> None:
        with self._lock:
            self._data.setdefault(rid, {})[index] = block

    def get(self, rid: str, index: int) -> Block | None:
        with self._lock:
            return self._data.get(rid, {}).get(index)

    def blocks(self, rid: str) -> dict[int, Block]:
        """A sorted copy of the resource's written blocks (empty if unknown)."""
        with self._lock:
            src = self._data.get(rid, {})
            return {i: src[i] for i in sorted(src)}

    def set(self, rid: str, blocks: dict[int, Block]) -> None:
        with self._lock:
            self._data[rid] = dict(blocks)

    def copy(self, src: str, dst: str) -> int:
        """Give ``dst`` exactly ``src``'s blocks; returns how many."""
        with self._lock:
            blocks = dict(self._data.get(src, {}))
            self._data[dst] = blocks
            return len(blocks)

    def drop(self, rid: str) -> None:
        with self._lock:
            self._data.pop(rid, None)

    def __contains__(self, rid: object) -> bool:
        with self._lock:
            return rid in self._data

    def read(self, rid: str, size: int) -> bytes:
        """The first ``size`` bytes of the resource, zeros where nothing was written."""
        out = bytearray(size)
        for index, block in self.blocks(rid).items():
            start = index * BLOCK_SIZE
            if start >= size:
                break
            chunk = block.data[: size - start]
            out[start:start + len(chunk)] = chunk
        return bytes(out)


#: The process-wide store (the emulator runs moto in-process, so one store serves all).
STORE = BlockStore()


def _split(chunks: Iterable[bytes]) -> dict[int, Block]:
    blocks: dict[int, Block] = {}
    zero = bytes(BLOCK_SIZE)
    for index, chunk in enumerate(chunks):
        if len(chunk) < BLOCK_SIZE:
            chunk = chunk + bytes(BLOCK_SIZE - len(chunk))
        if chunk != zero:
            blocks[index] = Block.of(chunk)
    return blocks


def blocks_from_bytes(data: bytes) -> dict[int, Block]:
    """Non-zero 512 KiB blocks of ``data`` (the last one zero-padded)."""
    return _split(data[i:i + BLOCK_SIZE] for i in range(0, len(data), BLOCK_SIZE))


def blocks_from_file(path: Path) -> dict[int, Block]:
    """Non-zero 512 KiB blocks of a raw disk file, read sequentially."""

    def chunks() -> Iterable[bytes]:
        with open(path, "rb") as fh:
            while chunk := fh.read(BLOCK_SIZE):
                yield chunk

    return _split(chunks())


def size_gib(nbytes: int) -> int:
    """Volume size in GiB for ``nbytes`` of disk (at least 1), as coldsnap computes it."""
    return max(1, -(-nbytes // GiB))


def new_snapshot(ec2: Any, size: int, description: str, *, owner_id: str | None = None,
                 blocks: dict[int, Block] | None = None, state: str = "completed",
                 encrypted: bool = False) -> Any:
    """Create an EC2 snapshot of ``size`` GiB holding ``blocks``, not taken from a volume.

    The snapshot's volume is a detached stand-in with id ``vol-ffffffff`` (what AWS reports
    for EBS-direct and imported snapshots); moto derives VolumeSize from it.
    """
    from moto.ec2.models.elastic_block_store import Snapshot, Volume
    from moto.ec2.utils import random_snapshot_id

    zone = ec2.get_zone_by_name(f"{ec2.region_name}a")
    volume = Volume(ec2, PHANTOM_VOLUME_ID, size, zone,  # type: ignore[abstract]
                    encrypted=encrypted)
    snap = Snapshot(ec2, random_snapshot_id(), volume, description, encrypted=encrypted,
                    owner_id=owner_id)
    snap.status = state
    ec2.snapshots[snap.id] = snap
    STORE.set(snap.id, blocks or {})
    return snap
