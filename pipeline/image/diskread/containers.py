"""Random-access raw views of disk-image containers, read lazily from the file.

Formats: raw, VMDK (monolithicSparse and streamOptimized), qcow2, VHD (fixed and
dynamic), VHDX, and OVA (a tar holding an OVF and a disk, read in place inside the tar).
The container parsing comes from ``dissect.hypervisor``; this module adds what it lacks:

- every byte comes through :class:`~pipeline.image.diskread._io.CountingFile` (``bytes_read``);
- reads are split at VHDX block boundaries (dissect's ``VHDX.read_sectors`` reads
  past the end of a payload block when a request crosses one);
- ``allocated_ranges()`` from the grain tables, L2 tables, BATs or ``SEEK_DATA``;
- short reads (a truncated file) and parser exceptions become one-line
  :class:`~pipeline.core.errors.ImageReadError`.
"""
from __future__ import annotations

import errno
import functools
import os
import sys
from array import array
import struct
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from pipeline.core.errors import ImageReadError
from pipeline.image.diskread._io import CountingFile
from pipeline.image.diskread._lazy import hypervisor_module

__all__ = ["Disk", "open_disk", "merge_ranges", "detect_format"]

SECTOR = 512
_LOCK_INIT = threading.Lock()


#: Allocation-table bytes read at open to prove every data block lies inside the file.
_CHECK_BUDGET = 8 * 1024 * 1024


def _int_array(code: str, raw: bytes, count: int, short: Callable[[], Exception],
               byteorder: str = "little") -> "array[int]":
    """``count`` integers of type ``code`` (``I`` 32-bit, ``Q`` 64-bit) from ``raw``."""
    arr: "array[int]" = array(code)
    if len(raw) < count * arr.itemsize:
        raise short()
    arr.frombytes(raw[:count * arr.itemsize])
    if sys.byteorder != byteorder:
        arr.byteswap()
    return arr


def merge_ranges(ranges: Iterator[tuple[int, int]] | list[tuple[int, int]]
                 ) -> Iterator[tuple[int, int]]:
    """Merge touching ``(offset, length)`` ranges given in ascending order."""
    cur_off, cur_len = -1, 0
    for off, length in ranges:
        if length <= 0:
            continue
        if cur_off >= 0 and off <= cur_off + cur_len:
            cur_len = max(cur_len, off + length - cur_off)
            continue
        if cur_off >= 0:
            yield cur_off, cur_len
        cur_off, cur_len = off, length
    if cur_off >= 0:
        yield cur_off, cur_len


class Disk:
    """A random-access raw view of a virtual disk.

    ``size`` is the virtual size in bytes, ``format`` the container name,
    ``read(offset, length)`` returns exactly the bytes asked for inside the disk
    (unallocated areas read as zeros), ``bytes_read`` counts bytes fetched from the
    underlying file or API. ``read`` may be called from several threads: the parsers
    keep a file position, so reads are serialised unless ``_thread_safe`` (raw files,
    read with ``os.pread`` only).
    """

    format: str = "raw"
    size: int = 0
    name: str = ""
    _thread_safe: bool = False
    _lock_obj: threading.Lock | None = None

    @property
    def _lock(self) -> threading.Lock:
        with _LOCK_INIT:
            if self._lock_obj is None:
                self._lock_obj = threading.Lock()
        return self._lock_obj

    # -- to implement
    def _read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at the sector-aligned ``offset`` (``length`` a sector multiple)."""
        raise NotImplementedError

    def allocated_ranges(self) -> Iterator[tuple[int, int]]:
        """``(offset, length)`` ranges that may hold data, ascending; the rest is zeros."""
        yield (0, self.size)

    @property
    def bytes_read(self) -> int:
        return 0

    def close(self) -> None:
        """Release the file or API handles."""

    # -- shared
    def read(self, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset+length)`` clipped to the disk size."""
        if offset < 0 or length < 0:
            raise ValueError(f"bad read offset={offset} length={length}")
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        start = offset - offset % SECTOR
        stop = min(-(-end // SECTOR) * SECTOR, -(-self.size // SECTOR) * SECTOR)
        try:
            if self._thread_safe:
                data = self._read(start, stop - start)
            else:
                with self._lock:
                    data = self._read(start, stop - start)
        except ImageReadError:
            raise
        except Exception as err:  # noqa: BLE001 - parser internals raise anything
            raise self._corrupt(f"cannot read {stop - start} bytes at {start}: "
                                f"{type(err).__name__}: {err}") from err
        if len(data) < end - start:
            raise self._corrupt(f"short read at offset {start} (the file is truncated)")
        return data[offset - start:end - start]

    def _corrupt(self, why: str) -> ImageReadError:
        return ImageReadError(f"{self.name}: {self.format} image is corrupt or truncated: {why}")

    def __enter__(self) -> "Disk":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.format} size={self.size} name={self.name!r}>"


class _FileDisk(Disk):
    """A disk backed by a :class:`CountingFile` (shared by every file format)."""

    def __init__(self, src: CountingFile, name: str, owns_fd: bool = True) -> None:
        self.src = src
        self.name = name
        self._owns_fd = owns_fd

    @property
    def bytes_read(self) -> int:
        return self.src.bytes_read

    def close(self) -> None:
        if self._owns_fd and self.src.fd >= 0:
            os.close(self.src.fd)
            self.src.fd = -1

    def _data_ranges(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """``SEEK_DATA``/``SEEK_HOLE`` ranges of the file window ``[start, end)``."""
        fd, base = self.src.fd, self.src.base
        pos = start
        while pos < end:
            try:
                data = os.lseek(fd, base + pos, os.SEEK_DATA) - base
            except OSError as err:
                if err.errno == errno.ENXIO:  # no data after pos
                    return
                yield (pos, end - pos)  # filesystem without SEEK_DATA: all may hold data
                return
            if data >= end:
                return
            hole = min(os.lseek(fd, base + data, os.SEEK_HOLE) - base, end)
            yield (data, hole - data)
            pos = hole


class RawDisk(_FileDisk):
    format = "raw"
    _thread_safe = True

    def __init__(self, src: CountingFile, name: str, owns_fd: bool = True) -> None:
        super().__init__(src, name, owns_fd)
        self.size = src.size

    def _read(self, offset: int, length: int) -> bytes:
        return self.src.pread(offset, length)

    def allocated_ranges(self) -> Iterator[tuple[int, int]]:
        return self._data_ranges(0, self.size)


class VmdkDisk(_FileDisk):
    """VMDK hosted sparse extent (monolithicSparse or streamOptimized)."""

    def __init__(self, src: CountingFile, name: str, owns_fd: bool = True) -> None:
        super().__init__(src, name, owns_fd)
        c_vmdk = hypervisor_module("disk.c_vmdk").c_vmdk
        SparseDisk = hypervisor_module("disk.vmdk").SparseDisk

        self._sd = SparseDisk(src)
        if self._sd.is_sesparse:
            raise ImageReadError(f"{name}: SEsparse VMDK extents are not supported")
        if self._sd.parent is not None or (
                self._sd.descriptor is not None
                and self._sd.descriptor.attr.get("parentCID", "ffffffff") != "ffffffff"):
            raise ImageReadError(f"{name}: VMDK with a parent (delta disk) is not supported; "
                                 "consolidate it first")
        compressed = self._sd.header.flags & c_vmdk.SPARSEFLAG_COMPRESSED
        self.format = "vmdk-stream" if compressed else "vmdk-sparse"
        self.size = self._sd.size
        # Grain tables parsed with array instead of cstruct (10x faster), also for reads.
        self._sd._lookup_grain_table = functools.lru_cache(maxsize=4096)(self._grain_table)
        self._check_complete(bool(compressed))

    def _grain_table(self, gd_index: int) -> "array[int] | None":
        sector = self._sd._grain_directory[gd_index]
        if not sector:
            return None
        n = self._sd._grain_table_size
        return _int_array("I", self.src.pread(sector * SECTOR, 4 * n), n,
                         lambda: self._corrupt(f"grain table {gd_index} is cut short "
                                               "(the file is truncated)"))

    def _check_complete(self, compressed: bool) -> None:
        """Every grain table, and every grain the tables point at, lies inside the file.

        The grains are checked when the tables total at most :data:`_CHECK_BUDGET`
        bytes (a 256 GiB disk); beyond that a cut-off grain shows up when it is read.
        """
        sd, fsize = self._sd, self.src.size
        grain = SECTOR if compressed else sd.header.grain_size * SECTOR
        tables = [(i, s) for i, s in enumerate(sd._grain_directory) if s]
        for gd_index, gt_sector in tables:
            if gt_sector * SECTOR + sd._grain_table_size * 4 > fsize:
                raise self._corrupt(f"grain table {gd_index} lies past the end of the file "
                                    "(the file is truncated)")
        if len(tables) * sd._grain_table_size * 4 > _CHECK_BUDGET:
            return
        top = max((max(sd._lookup_grain_table(i)) for i, _ in tables), default=0)
        if top > 1 and top * SECTOR + grain > fsize:
            raise self._corrupt("a grain lies past the end of the file (the file is truncated)")

    def _read(self, offset: int, length: int) -> bytes:
        return bytes(self._sd.read_sectors(offset // SECTOR, length // SECTOR))

    def allocated_ranges(self) -> Iterator[tuple[int, int]]:
        sd = self._sd
        grain = sd.header.grain_size * SECTOR
        per_table = sd._grain_table_size

        def grains() -> Iterator[tuple[int, int]]:
            for gd_index in range(len(sd._grain_directory)):
                table = sd._lookup_grain_table(gd_index)
                if not table:
                    continue
                for gt_index, entry in enumerate(table):
                    if entry > 1:  # 0 unallocated, 1 zero grain
                        off = (gd_index * per_table + gt_index) * grain
                        if off < self.size:
                            yield off, min(grain, self.size - off)

        return merge_ranges(grains())


class Qcow2Disk(_FileDisk):
    format = "qcow2"

    def __init__(self, src: CountingFile, name: str, owns_fd: bool = True) -> None:
        super().__init__(src, name, owns_fd)
        qcow2 = hypervisor_module("disk.qcow2")
        QCow2, QCow2Stream = qcow2.QCow2, qcow2.QCow2Stream

        self._q = QCow2(src, allow_no_backing_file=True, allow_no_data_file=True)
        if self._q.header.backing_file_offset or self._q.needs_data_file:
            raise ImageReadError(f"{name}: qcow2 with a backing or external data file is not "
                                 "supported; flatten it with 'qemu-img convert -O qcow2'")
        self._stream = QCow2Stream(self._q)
        self.size = self._q.size
        # L2 tables parsed with array instead of cstruct (10x faster), also for reads.
        self._q.l2_table = functools.lru_cache(maxsize=256)(self._l2_table)
        self._check_complete()

    def _l2_table(self, l2_offset: int) -> "_L2":
        q = self._q
        words = q.l2_size * (q._l2_entry_size // 8)
        raw = self.src.pread(l2_offset, 8 * words)
        return _L2(_int_array("Q", raw, words, lambda: self._corrupt(
            "an L2 table is cut short (the file is truncated)"), "big"), q._l2_entry_size // 8)

    def _check_complete(self) -> None:
        """The L1 table, every L2 table and every data cluster lie inside the file."""
        cq = hypervisor_module("disk.c_qcow2")
        QCow2ClusterType, c_qcow2 = cq.QCow2ClusterType, cq.c_qcow2
        get_cluster_type = hypervisor_module("disk.qcow2").get_cluster_type

        q, fsize = self._q, self.src.size
        if q.header.l1_table_offset + 8 * q.header.l1_size > fsize:
            raise self._corrupt("the L1 table lies past the end of the file (truncated)")
        l2_offsets = [e & c_qcow2.L1E_OFFSET_MASK for e in q.l1_table]
        if len([o for o in l2_offsets if o]) * q.cluster_size > _CHECK_BUDGET:
            if max(l2_offsets) + q.cluster_size > fsize:
                raise self._corrupt("an L2 table lies past the end of the file (truncated)")
            return
        for l1_entry in q.l1_table:
            l2_offset = l1_entry & c_qcow2.L1E_OFFSET_MASK
            if not l2_offset:
                continue
            if l2_offset + q.cluster_size > fsize:
                raise self._corrupt("an L2 table lies past the end of the file (truncated)")
            for entry in _l2_entries(q, l2_offset):
                if not entry:
                    continue
                ctype = get_cluster_type(q, entry)
                if ctype == QCow2ClusterType.QCOW2_CLUSTER_NORMAL:
                    end = (entry & c_qcow2.L2E_OFFSET_MASK) + q.cluster_size
                elif ctype == QCow2ClusterType.QCOW2_CLUSTER_COMPRESSED:
                    end = (entry & q.cluster_offset_mask) + 1
                else:
                    continue
                if end > fsize:
                    raise self._corrupt("a data cluster lies past the end of the file "
                                        "(the file is truncated)")

    def _read(self, offset: int, length: int) -> bytes:
        return bytes(self._stream._read(offset, length))

    def allocated_ranges(self) -> Iterator[tuple[int, int]]:
        cq = hypervisor_module("disk.c_qcow2")
        QCow2ClusterType, c_qcow2 = cq.QCow2ClusterType, cq.c_qcow2
        get_cluster_type = hypervisor_module("disk.qcow2").get_cluster_type

        q = self._q
        data_types = (QCow2ClusterType.QCOW2_CLUSTER_NORMAL,
                      QCow2ClusterType.QCOW2_CLUSTER_COMPRESSED)

        def clusters() -> Iterator[tuple[int, int]]:
            for l1_index, l1_entry in enumerate(q.l1_table):
                l2_offset = l1_entry & c_qcow2.L1E_OFFSET_MASK
                if not l2_offset:
                    continue
                for l2_index, entry in enumerate(_l2_entries(q, l2_offset)):
                    if entry and get_cluster_type(q, entry) in data_types:
                        off = ((l1_index << q.l2_bits) + l2_index) << q.cluster_bits
                        if off < self.size:
                            yield off, min(q.cluster_size, self.size - off)

        return merge_ranges(clusters())


class _L2:
    """An L2 table with dissect's ``L2Table`` interface (``entry``, ``bitmap``)."""

    def __init__(self, words: "array[int]", per_entry: int) -> None:
        self.words = words
        self.per_entry = per_entry  # 1, or 2 with subclusters (extended L2 entries)

    def entry(self, idx: int) -> int:
        return self.words[idx * self.per_entry]

    def bitmap(self, idx: int) -> int:
        return self.words[idx * 2 + 1] if self.per_entry == 2 else 0


def _l2_entries(q: Any, l2_offset: int) -> "array[int]":
    """The L2 entries of a table (the first word of each entry with subclusters)."""
    table: _L2 = q.l2_table(l2_offset)
    return table.words if table.per_entry == 1 else table.words[::2]


class VhdDisk(_FileDisk):
    """VHD: fixed (raw data + footer) or dynamic (BAT of blocks)."""

    def __init__(self, src: CountingFile, name: str, owns_fd: bool = True) -> None:
        super().__init__(src, name, owns_fd)
        vhd = hypervisor_module("disk.vhd")
        VHD, DynamicDisk = vhd.VHD, vhd.DynamicDisk

        self._vhd = VHD(src)
        self._dynamic = isinstance(self._vhd.disk, DynamicDisk)
        self.format = "vhd" if self._dynamic else "vhd-fixed"
        self.size = self._vhd.disk.size
        if self._dynamic and self._vhd.disk.footer.disk_type == 4:
            raise ImageReadError(f"{name}: differencing VHD is not supported; merge it first")
        if not self._dynamic and src.size < self.size + 511:
            raise self._corrupt(f"fixed VHD of {self.size} bytes in a {src.size}-byte file")
        self._bat: tuple[int, ...] = ()
        if self._dynamic:
            self._bat = self._read_bat()
            disk = self._vhd.disk
            block = disk.header.block_size + disk._sector_bitmap_size * SECTOR
            used = [e for e in self._bat if e != 0xFFFFFFFF]
            if used and max(used) * SECTOR + block > src.size - 511:
                raise self._corrupt("a data block lies past the end of the file (truncated)")
            # serve dissect's per-entry BAT lookups (a 4-byte read each) from the table
            bat = self._bat
            disk.bat.get = lambda b: None if bat[b] == 0xFFFFFFFF else bat[b]

    def _read_bat(self) -> tuple[int, ...]:
        hdr = self._vhd.disk.header
        count = hdr.max_table_entries
        raw = self.src.pread(hdr.table_offset, 4 * count)
        if len(raw) < 4 * count:
            raise self._corrupt("the block allocation table is cut short (truncated)")
        return struct.unpack(f">{count}I", raw)

    def _read(self, offset: int, length: int) -> bytes:
        return bytes(self._vhd.disk.read_sectors(offset // SECTOR, length // SECTOR))

    def allocated_ranges(self) -> Iterator[tuple[int, int]]:
        if not self._dynamic:
            return self._data_ranges(0, self.size)
        block = self._vhd.disk.header.block_size
        return merge_ranges((i * block, min(block, self.size - i * block))
                            for i, e in enumerate(self._bat)
                            if e != 0xFFFFFFFF and i * block < self.size)


class VhdxDisk(_FileDisk):
    format = "vhdx"

    def __init__(self, src: CountingFile, name: str, owns_fd: bool = True) -> None:
        super().__init__(src, name, owns_fd)
        VHDX = hypervisor_module("disk.vhdx").VHDX

        self._v = VHDX(src)
        if self._v.has_parent:
            raise ImageReadError(f"{name}: differencing VHDX is not supported; merge it first")
        self.size = self._v.size
        self._spb = self._v._sectors_per_block
        self._ss = self._v.sector_size
        self._bat = self._read_bat()
        self._v.bat.get = self._bat_entry  # dissect reads and parses 8 bytes per lookup
        self._check_complete()

    def _read_bat(self) -> "array[int]":
        """The whole BAT in one read (payload and interleaved sector-bitmap entries)."""
        bat = self._v.bat
        return _int_array("Q", self.src.pread(bat.offset, 8 * bat.entry_count), bat.entry_count,
                          lambda: self._corrupt("the BAT is cut short (the file is truncated)"))

    def _bat_entry(self, index: int) -> "_BatEntry":
        if not 0 <= index < len(self._bat):
            raise self._corrupt(f"BAT entry {index} out of range")
        word = self._bat[index]
        return _BatEntry(word & 7, word >> 20)

    def _check_complete(self) -> None:
        """Every present payload block lies inside the file."""
        cv = hypervisor_module("disk.c_vhdx")
        MB, c_vhdx = cv.MB, cv.c_vhdx

        v, fsize = self._v, self.src.size
        present = (c_vhdx.PAYLOAD_BLOCK_FULLY_PRESENT, c_vhdx.PAYLOAD_BLOCK_PARTIALLY_PRESENT)
        for b in range(-(-v.size // v.block_size)):
            entry = v.bat.pb(b)
            if entry.state in present:
                length = min(v.block_size, v.size - b * v.block_size)
                if entry.file_offset_mb * MB + length > fsize:
                    raise self._corrupt("a payload block lies past the end of the file "
                                        "(the file is truncated)")

    def _read(self, offset: int, length: int) -> bytes:
        # Split at payload-block boundaries (see the module docstring).
        sector, count = offset // self._ss, -(-length // self._ss)
        parts = []
        while count > 0:
            n = min(count, self._spb - sector % self._spb)
            parts.append(self._v.read_sectors(sector, n))
            sector += n
            count -= n
        data = b"".join(parts)
        return data[offset % self._ss:offset % self._ss + length]

    def allocated_ranges(self) -> Iterator[tuple[int, int]]:
        c_vhdx = hypervisor_module("disk.c_vhdx").c_vhdx

        v = self._v
        present = (c_vhdx.PAYLOAD_BLOCK_FULLY_PRESENT, c_vhdx.PAYLOAD_BLOCK_PARTIALLY_PRESENT)
        blocks = -(-v.size // v.block_size)
        return merge_ranges((b * v.block_size, min(v.block_size, v.size - b * v.block_size))
                            for b in range(blocks) if v.bat.pb(b).state in present)


@dataclass(frozen=True, slots=True)
class _BatEntry:
    """A VHDX BAT entry as dissect reads it (``state``, ``file_offset_mb``)."""

    state: int
    file_offset_mb: int


class OvaDisk(Disk):
    """The disk inside an OVA, read in place from the tar."""

    format = "ova"

    def __init__(self, inner: _FileDisk, name: str, member: str) -> None:
        self.inner = inner
        self.name = name
        self.member = member
        self.size = inner.size
        self.inner_format = inner.format

    def _read(self, offset: int, length: int) -> bytes:
        return self.inner._read(offset, length)

    def allocated_ranges(self) -> Iterator[tuple[int, int]]:
        return self.inner.allocated_ranges()

    @property
    def bytes_read(self) -> int:
        return self.inner.bytes_read

    def close(self) -> None:
        self.inner.close()


_DISK_SUFFIXES = (".vmdk", ".vhd", ".vhdx", ".img", ".raw", ".qcow2")


def detect_format(head: bytes, tail: bytes) -> str:
    """Container format from the first and last 512 bytes of a file."""
    if head[:4] == b"KDMV":
        return "vmdk"
    if head[:4] == b"QFI\xfb":
        return "qcow2"
    if head[:8] == b"vhdxfile":
        return "vhdx"
    if tail[:8] == b"conectix" or tail[1:9] == b"conectix":
        return "vhd"
    if head[:8] == b"conectix":
        return "vhd-truncated"
    if head[257:262] == b"ustar":
        return "ova"
    if head[:4] in (b"COWD", b"\xbe\xba\xfe\xca") or head[:21] == b"# Disk DescriptorFile":
        return "vmdk-other"
    return "raw"


def _open_format(fmt: str, src: CountingFile, name: str, owns_fd: bool) -> _FileDisk:
    if fmt == "vmdk":
        return VmdkDisk(src, name, owns_fd)
    if fmt == "qcow2":
        return Qcow2Disk(src, name, owns_fd)
    if fmt == "vhdx":
        return VhdxDisk(src, name, owns_fd)
    if fmt == "vhd":
        return VhdDisk(src, name, owns_fd)
    if fmt == "vhd-truncated":
        raise ImageReadError(f"{name}: VHD without its footer at the end of the file "
                             "(the file is truncated)")
    if fmt == "vmdk-other":
        raise ImageReadError(f"{name}: only monolithicSparse and streamOptimized VMDK files are "
                             "supported (this is a descriptor, COWD or SEsparse file); convert "
                             "it with 'qemu-img convert -O vmdk -o subformat=streamOptimized'")
    return RawDisk(src, name, owns_fd)


def _open_ova(src: CountingFile, name: str) -> OvaDisk:
    try:
        tar = tarfile.open(fileobj=src, mode="r:")
        members = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ImageReadError(f"{name}: OVA (tar) cannot be read: {err}") from err
    disks = [m for m in members if m.isfile() and m.name.lower().endswith(_DISK_SUFFIXES)]
    if not disks:
        names = ", ".join(m.name for m in members) or "nothing"
        raise ImageReadError(f"{name}: the OVA holds no disk image (found {names})")
    member = disks[0]
    if member.offset_data + member.size > src.size:
        raise ImageReadError(f"{name}: OVA is truncated: {member.name} needs "
                             f"{member.offset_data + member.size} bytes, file has {src.size}")
    inner_src = CountingFile(src.fd, base=member.offset_data, size=member.size,
                             counter=src.counter, name=f"{name}:{member.name}")
    inner_name = f"{name}[{member.name}]"
    head = inner_src.pread(0, 512)
    tail = inner_src.pread(max(0, member.size - 512), 512)
    fmt = detect_format(head, tail)
    if fmt == "ova":
        raise ImageReadError(f"{name}: OVA member {member.name} is itself a tar")
    return OvaDisk(_open_format(fmt, inner_src, inner_name, owns_fd=True), name, member.name)


def open_disk(path: str | os.PathLike[str]) -> Disk:
    """Open a disk image of any supported container as a random-access raw view.

    Raises :class:`~pipeline.core.errors.ImageReadError` for a missing, unknown, truncated
    or corrupt file (one line naming the file).
    """
    p = Path(path)
    name = str(p)
    if p.is_dir():
        raise ImageReadError(f"{name}: is a directory, not a disk image")
    try:
        fd = os.open(p, os.O_RDONLY)
    except FileNotFoundError as err:
        raise ImageReadError(f"{name}: no such file; give the path of a disk image") from err
    except IsADirectoryError as err:
        raise ImageReadError(f"{name}: is a directory, not a disk image") from err
    except OSError as err:
        raise ImageReadError(f"{name}: cannot open: {err.strerror}") from err
    try:
        st = os.fstat(fd)
        if not (st.st_size or os.path.isfile(p)):
            raise ImageReadError(f"{name}: not a regular file")
        src = CountingFile(fd, name=name)
        if src.size < 1024:
            raise ImageReadError(f"{name}: {src.size} bytes is too small to be a disk image")
        head = src.pread(0, 512)
        tail = src.pread(src.size - 512, 512)
        fmt = detect_format(head, tail)
        disk: Disk
        try:
            disk = _open_ova(src, name) if fmt == "ova" else _open_format(fmt, src, name, True)
        except ImageReadError:
            raise
        except Exception as err:  # noqa: BLE001 - parser internals raise anything
            raise ImageReadError(f"{name}: {fmt} image is corrupt or truncated: "
                                 f"{type(err).__name__}: {err}") from err
        if disk.size <= 0:
            raise ImageReadError(f"{name}: {disk.format} image has virtual size {disk.size}")
        return disk
    except BaseException:
        os.close(fd)
        raise
