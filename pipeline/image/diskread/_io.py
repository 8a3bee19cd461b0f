"""Small file-like adapters: count bytes read, window into a file, cache disk chunks.

The parsing libraries (dissect.*) expect ``read``/``seek``/``tell`` file objects.
:class:`CountingFile` gives them one backed by ``os.pread`` that counts every byte it
returns, so a verification can report how much of an image it really read.
:class:`DiskFile` turns any :class:`~pipeline.image.diskread.containers.Disk` into such a file,
with an LRU cache of aligned chunks so that many small metadata reads (inodes,
directory entries) cost one container read each.
"""
from __future__ import annotations

import io
import os
from collections import OrderedDict
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from pipeline.image.diskread.containers import Disk

__all__ = ["CountingFile", "DiskFile", "CHUNK"]

#: Granularity of :class:`DiskFile` reads and of its cache.
CHUNK = 64 * 1024


class _PreadFile(io.RawIOBase):
    """A read-only, seekable file over ``pread(offset, length)`` of ``size`` bytes."""

    size: int
    label: str = ""

    def __init__(self) -> None:
        super().__init__()
        self._pos = 0

    def pread(self, offset: int, length: int) -> bytes:
        raise NotImplementedError

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self._pos = pos
        elif whence == io.SEEK_CUR:
            self._pos += pos
        else:
            self._pos = self.size + pos
        if self._pos < 0:
            raise OSError(f"seek before the start of {self.label or 'the disk'}")
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            n = self.size - self._pos
        data = self.pread(self._pos, n)
        self._pos += len(data)
        return data

    def readinto(self, b: "bytearray | memoryview") -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


class CountingFile(_PreadFile):
    """A read-only window ``[base, base+size)`` of an OS file, counting bytes read.

    Several windows may share one descriptor (an OVA member and the tar around it);
    they then share one counter through ``counter``.
    """

    def __init__(self, fd: int, base: int = 0, size: int | None = None,
                 counter: list[int] | None = None, name: str = "") -> None:
        super().__init__()
        self.fd = fd
        self.base = base
        self.size = os.fstat(fd).st_size - base if size is None else size
        self.counter = counter if counter is not None else [0]
        self.label = name

    @property
    def bytes_read(self) -> int:
        return self.counter[0]

    def pread(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` of the window (short at its end)."""
        length = max(0, min(length, self.size - offset))
        if length == 0:
            return b""
        data = os.pread(self.fd, length, self.base + offset)
        self.counter[0] += len(data)
        return data


class DiskFile(_PreadFile):
    """A file-like view of ``read(offset, length)`` with an LRU cache of aligned chunks.

    ``read_fn`` is a disk's ``read``; ``size`` its virtual size. ``cache_chunks`` bounds
    memory (default 256 x 64 KiB = 16 MiB).
    """

    def __init__(self, read_fn: Callable[[int, int], bytes], size: int,
                 cache_chunks: int = 256) -> None:
        super().__init__()
        self._read_fn = read_fn
        self.size = size
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._max = cache_chunks

    @classmethod
    def of(cls, disk: "Disk", cache_chunks: int = 256) -> "DiskFile":
        return cls(disk.read, disk.size, cache_chunks)

    def _chunk(self, index: int) -> bytes:
        data = self._cache.get(index)
        if data is not None:
            self._cache.move_to_end(index)
            return data
        start = index * CHUNK
        data = self._read_fn(start, min(CHUNK, self.size - start))
        self._cache[index] = data
        if len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return data

    def pread(self, offset: int, length: int) -> bytes:
        end = min(self.size, offset + length)
        if offset >= end:
            return b""
        parts = []
        pos = offset
        while pos < end:
            index, skip = divmod(pos, CHUNK)
            chunk = self._chunk(index)
            take = min(len(chunk) - skip, end - pos)
            if take <= 0:
                break
            parts.append(chunk[skip:skip + take])
            pos += take
        return b"".join(parts)
