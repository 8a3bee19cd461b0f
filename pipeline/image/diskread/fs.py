"""Partition table, LVM2 and filesystem layers, and path lookup confined to an image.

:func:`find_root` walks a :class:`~pipeline.image.diskread.containers.Disk` down to the
filesystem holding ``/etc/os-release``: the partitions of an MBR or GPT table
(``dissect.volume``), the logical volumes of an LVM2 physical volume, or the whole
disk as a bare filesystem; each candidate that holds ext2/3/4 (``dissect.extfs``) or
XFS (``dissect.xfs``) is tried in turn.

:meth:`RootFs.resolve` follows symlinks the way the kernel would inside a chroot of
the image: absolute targets restart at the image root, ``..`` walks back up, and the
host filesystem is never touched. A link whose ``..`` climbs above the image root is
reported as an escape, more than 40 links as a loop.
"""
from __future__ import annotations

import stat
from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol

from pipeline.core.errors import ImageReadError
from pipeline.image.diskread._io import DiskFile
from pipeline.image.diskread.containers import Disk

__all__ = ["Node", "Resolved", "RootFs", "Volume", "find_root", "candidate_volumes",
           "MAX_SYMLINKS"]

SECTOR = 512
MAX_SYMLINKS = 40
_EXTENDED_MBR_TYPES = (0x05, 0x0F, 0x85)
_LVM_MBR_TYPE = 0x8E


class ReadSeek(Protocol):
    """What the parsing libraries need from a file."""

    def read(self, n: int = -1, /) -> bytes: ...

    def seek(self, pos: int, whence: int = 0, /) -> int: ...


@dataclass
class Volume:
    """A place a filesystem may live: a partition, a logical volume or the whole disk."""

    partition: str           # "gpt:1", "mbr:2", "none", "lvm:vg0/root@mbr:1"
    file: ReadSeek
    size: int


@dataclass
class Node:
    """One inode, as the contract check needs it."""

    kind: str                # reg | dir | lnk | other
    mode: int                # full st_mode
    size: int
    raw: Any = field(repr=False, default=None)

    @property
    def perms(self) -> int:
        return stat.S_IMODE(self.mode)


@dataclass
class Resolved:
    """Where a path led: ``status`` ok | missing | dangling | loop | escape | not-dir."""

    path: str
    status: str
    node: Node | None = None
    target: str | None = None          # final path inside the image
    links: list[str] = field(default_factory=list)  # "link -> target" hops followed
    detail: str = ""


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "reg"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "lnk"
    return "other"


class RootFs:
    """A mounted-in-spirit filesystem: lookups and reads through a parsing library."""

    def __init__(self, kind: str, fs: Any, volume: Volume) -> None:
        self.kind = kind           # ext2 | ext3 | ext4 | xfs
        self._fs = fs
        self._dirs: dict[int, dict[str, Any]] = {}
        self.volume = volume

    # -- inode access (the two libraries differ in small ways)
    def _node(self, raw: Any) -> Node:
        ino = raw.inode
        mode = ino.i_mode if self.kind.startswith("ext") else ino.di_mode
        return Node(_kind(mode), mode, raw.size, raw)

    @property
    def root(self) -> Node:
        return self._node(self._fs.root)

    def child(self, parent: Node, name: str) -> Node | None:
        """The entry ``name`` of directory ``parent`` (no symlink following).

        Each directory is listed once (``/usr/bin`` is searched for several names).
        """
        listing = self._dirs.get(parent.raw.inum)
        if listing is None:
            listing = {}
            for entry in self._iterdir(parent.raw):
                listing.setdefault(entry.filename, entry)
            self._dirs[parent.raw.inum] = listing
        entry = listing.get(name)
        return None if entry is None else self._node(entry)

    def listdir(self, node: Node) -> list[str]:
        """The names in directory ``node`` (without ``.`` and ``..``), sorted."""
        if node.kind != "dir":
            return []
        self.child(node, ".")  # lists and caches the directory once
        return sorted(n for n in self._dirs[node.raw.inum] if n not in (".", ".."))

    def _iterdir(self, raw: Any) -> Iterator[Any]:
        if self.kind.startswith("ext"):
            from dissect.extfs.c_ext import c_ext

            if raw.inode.i_flags & c_ext.EXT4_INLINE_DATA_FL:
                yield from self._ext_inline_dir(raw)
                return
        yield from raw.iterdir()

    def _ext_inline_bytes(self, raw: Any) -> tuple[bytes, bytes]:
        """``(i_block, system.data value)`` of an ext4 inline-data inode.

        dissect.extfs reads in-inode xattrs only for 256-byte inodes, so parse the
        raw inode here (ext4 ``xattr.h``: ibody header magic 0xEA020000 at
        ``128 + i_extra_isize``, entries of 16 bytes + name, values relative to the
        first entry; ``system.data`` is name index 7, name "data").
        """
        import struct

        fs = self._fs
        group, index = divmod(raw.inum - 1, fs.sb.s_inodes_per_group)
        desc = fs._read_group_desc(group)
        table = desc.bg_inode_table_lo
        if hasattr(desc, "bg_inode_table_hi") and fs._group_desc_size >= 64:
            table |= desc.bg_inode_table_hi << 32
        fs.fh.seek(table * fs.block_size + index * fs.sb.s_inode_size)
        buf = fs.fh.read(fs.sb.s_inode_size)
        i_block = buf[40:100]
        data = b""
        if len(buf) > 132:
            base = 128 + struct.unpack_from("<H", buf, 128)[0]
            if base + 4 <= len(buf) and struct.unpack_from("<I", buf, base)[0] == 0xEA020000:
                first = pos = base + 4
                while pos + 16 <= len(buf):
                    name_len, name_index, value_offs, _inum, value_size, _hash = \
                        struct.unpack_from("<BBHIII", buf, pos)
                    if name_len == 0:
                        break
                    if name_index == 7 and buf[pos + 16:pos + 16 + name_len] == b"data":
                        data = buf[first + value_offs:first + value_offs + value_size]
                        break
                    pos += (16 + name_len + 3) & ~3
        return i_block, data

    def _ext_inline_dir(self, raw: Any) -> Iterator[Any]:
        """Entries of an ext4 inline-data directory (dissect.extfs does not parse these).

        Layout (ext4 ``inline.c``): ``i_block`` holds the parent inode number (4 bytes)
        then ext4_dir_entry_2 records; the ``system.data`` xattr continues them.
        """
        import struct

        i_block, data = self._ext_inline_bytes(raw)
        for buf in (i_block[4:], data):
            pos = 0
            while pos + 8 <= len(buf):
                inum, rec_len, name_len, _ftype = struct.unpack_from("<IHBB", buf, pos)
                if rec_len < 8:
                    break
                if inum:
                    name = buf[pos + 8:pos + 8 + name_len].decode(errors="surrogateescape")
                    yield self._fs.get_inode(inum, name)
                pos += rec_len

    def read_file(self, node: Node, limit: int | None = None) -> bytes:
        """Up to ``limit`` bytes of a regular file's content."""
        n = node.size if limit is None else min(limit, node.size)
        if self.kind.startswith("ext"):
            from dissect.extfs.c_ext import c_ext

            if node.raw.inode.i_flags & c_ext.EXT4_INLINE_DATA_FL:
                i_block, data = self._ext_inline_bytes(node.raw)
                return (i_block + data)[:n]
        fh = node.raw.open()
        return bytes(fh.read(n))

    def readlink(self, node: Node) -> str:
        target = self._ext_inline_link(node) if self.kind.startswith("ext") else None
        return target if target is not None else str(node.raw.link)

    @staticmethod
    def _ext_inline_link(node: Node) -> str | None:
        from dissect.extfs.c_ext import c_ext

        if node.raw.inode.i_flags & c_ext.EXT4_INLINE_DATA_FL:
            return bytes(node.raw.inode.i_block)[:node.size].decode(errors="surrogateescape")
        return None

    # -- path resolution
    def resolve(self, path: str, follow: bool = True) -> Resolved:
        """Resolve ``path`` inside the image (see the module docstring).

        A component that is missing is ``missing`` when it comes from ``path`` itself
        and ``dangling`` when it comes from a symlink's target.
        """
        res = Resolved(path=path, status="ok")
        # (component, came from a symlink target)
        todo = [(c, False) for c in path.split("/") if c not in ("", ".")]
        stack: list[tuple[str, Node]] = [("", self.root)]
        links = 0
        while todo:
            name, from_link = todo.pop(0)
            if name == "..":
                if len(stack) > 1:
                    stack.pop()
                elif from_link:
                    res.status, res.detail = "escape", (
                        f"symlink {res.links[-1]} climbs above the image root")
                    return res
                continue
            cur = stack[-1][1]
            here = "/" + "/".join([n for n, _ in stack[1:]] + [name])
            if cur.kind != "dir":
                res.status = "not-dir"
                res.detail = f"/{'/'.join(n for n, _ in stack[1:])} is not a directory"
                return res
            node = self.child(cur, name)
            if node is None:
                res.status = "dangling" if from_link else "missing"
                res.target = here
                res.detail = (f"symlink {res.links[-1]} points at {here}, which does not exist"
                              if from_link else f"{here} does not exist")
                return res
            if node.kind == "lnk" and (todo or follow):
                links += 1
                target = self.readlink(node)
                res.links.append(f"{here} -> {target}")
                if links > MAX_SYMLINKS:
                    res.status, res.detail = "loop", (
                        f"more than {MAX_SYMLINKS} symlinks (a loop) at {here}")
                    return res
                if not target:
                    res.status, res.detail = "dangling", f"{here} is an empty symlink"
                    return res
                parts = [(c, True) for c in target.split("/") if c not in ("", ".")]
                todo = parts + todo
                if target.startswith("/"):
                    stack = [("", self.root)]
                continue
            stack.append((name, node))
        res.node = stack[-1][1]
        res.target = "/" + "/".join(n for n, _ in stack[1:])
        return res


# --------------------------------------------------------------------------- layers


def _part_file(disk: Disk, offset: int, size: int) -> DiskFile:
    return DiskFile(lambda o, n: disk.read(offset + o, n), size)


def _has_lvm_label(fh: ReadSeek) -> bool:
    for i in range(4):
        fh.seek(i * SECTOR)
        if fh.read(8) == b"LABELONE":
            return True
    return False


def _lvm_volumes(fh: ReadSeek, where: str) -> list[Volume]:
    from dissect.volume.lvm import LVM2

    try:
        lvm = LVM2(fh)
    except ImageReadError:
        raise
    except Exception as err:  # noqa: BLE001
        raise ImageReadError(f"LVM2 physical volume on {where} cannot be read: {err}") from err
    out = []
    for lv in lvm.vg.lv:
        if not lv.is_visible:
            continue
        stream = lv.open()
        size = sum(s.extent_count for s in lv.segments) * lvm.vg.extent_size * SECTOR
        out.append(Volume(f"lvm:{lvm.vg.name}/{lv.name}@{where}", stream, size))
    return out


def _linux_numbers(whole: ReadSeek, offsets: list[int]) -> dict[int, int]:
    """Partition numbers as Linux gives them: primaries 1-4 by slot, logicals from 5."""
    import struct

    whole.seek(0)
    mbr = whole.read(512)
    primary = {}
    for slot in range(4):
        ptype = mbr[446 + 16 * slot + 4]
        start = struct.unpack_from("<I", mbr, 446 + 16 * slot + 8)[0]
        if ptype:
            primary[start * SECTOR] = slot + 1
    out, logical = {}, 5
    for off in offsets:
        if off in primary:
            out[off] = primary[off]
        else:
            out[off] = logical
            logical += 1
    return out


def candidate_volumes(disk: Disk) -> list[Volume]:
    """Every place a filesystem may live on ``disk``, in table order."""
    from dissect.volume.disk import Disk as PartitionedDisk

    whole = DiskFile.of(disk, cache_chunks=64)
    try:
        table = PartitionedDisk(whole)
    except ImageReadError:
        raise
    except Exception:  # noqa: BLE001 - "no partition table" comes as several types
        table = None
    vols: list[Volume] = []
    if table is not None:
        scheme = type(table.scheme).__name__.lower()
        numbers = _linux_numbers(whole, [p.offset for p in table.partitions]) \
            if scheme == "mbr" else {}
        for number, part in enumerate(table.partitions, 1):
            ptype = part.type if isinstance(part.type, int) else None
            if ptype == 0 or ptype in _EXTENDED_MBR_TYPES or part.size <= 0:
                continue
            if part.offset + part.size > disk.size + SECTOR:
                continue
            num = numbers.get(part.offset) or getattr(part, "number", None) or number
            label = f"{scheme}:{num}"
            fh = _part_file(disk, part.offset, min(part.size, disk.size - part.offset))
            if ptype == _LVM_MBR_TYPE or _has_lvm_label(fh):
                vols.extend(_lvm_volumes(fh, label))
            else:
                vols.append(Volume(label, fh, fh.size))
    if not vols:
        fh = _part_file(disk, 0, disk.size)
        if _has_lvm_label(fh):
            vols.extend(_lvm_volumes(fh, "none"))
        else:
            vols.append(Volume("none", fh, disk.size))
    return vols


def _open_fs(vol: Volume) -> RootFs | None:
    """The filesystem on ``vol``, or None when it holds neither ext2/3/4 nor XFS."""
    fh = vol.file
    fh.seek(0)
    head = fh.read(2048)
    if len(head) >= 1082 and head[1080:1082] == b"\x53\xef":
        from dissect.extfs import ExtFS

        fs = ExtFS(fh)
        return RootFs(f"ext{fs.type}", fs, vol)
    if head[:4] == b"XFSB":
        from dissect.xfs import XFS

        fs = XFS(fh)
        return RootFs("xfs" if fs.version == 5 else f"xfs-v{fs.version}", fs, vol)
    return None


def find_root(disk: Disk) -> tuple[RootFs, list[str]]:
    """The filesystem holding ``/etc/os-release`` and notes on every other candidate.

    Raises :class:`ImageReadError` when no Linux root filesystem is found.
    """
    notes: list[str] = []
    for vol in candidate_volumes(disk):
        try:
            fs = _open_fs(vol)
            if fs is None:
                notes.append(f"{vol.partition}: no ext2/3/4 or XFS filesystem")
                continue
            res = fs.resolve("/etc/os-release")
            if res.status == "ok" and res.node is not None and res.node.kind == "reg":
                return fs, notes
            notes.append(f"{vol.partition}: {fs.kind} without /etc/os-release")
        except ImageReadError:
            raise
        except Exception as err:  # noqa: BLE001 - a corrupt candidate; try the next
            notes.append(f"{vol.partition}: unreadable filesystem "
                         f"({type(err).__name__}: {err})")
    what = "; ".join(notes) or "no volumes"
    raise ImageReadError(f"{disk.name}: no Linux root filesystem (ext2/3/4 or XFS holding "
                         f"/etc/os-release) found: {what}")
