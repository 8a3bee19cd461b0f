"""Read disk images and EBS snapshots lazily, without mounting or converting them.

- :func:`open_disk`: a random-access raw view of raw, VMDK, qcow2, VHD, VHDX or OVA;
- :func:`open_snapshot`: the same view of an EBS snapshot through the EBS direct APIs;
- :func:`find_root`: partition table / LVM / filesystem layers down to the filesystem
  holding ``/etc/os-release``, with symlink resolution confined to that filesystem.

Parsing comes from Fox-IT's dissect libraries (``dissect.hypervisor``,
``dissect.volume``, ``dissect.extfs``, ``dissect.xfs``), checked against every image
the factory (:mod:`pipeline_dev.diskimage`) writes. They handle monolithicSparse and
streamOptimized VMDK (also VMware's footer layout), qcow2, fixed and dynamic VHD,
VHDX, MBR (with logical partitions), GPT, LVM2 linear volumes, ext2/3/4 (extents,
hash-indexed directories) and XFS v5 (multi-block directories). Gaps closed here, each
with a test in ``tests/test_diskread.py`` or ``tests/test_verify.py``:

- VHDX reads that cross a payload-block boundary return wrong data in dissect: reads
  are split at block boundaries (:class:`~pipeline.image.diskread.containers.VhdxDisk`);
- ext4 inline data: dissect cannot list inline directories (so it finds nothing below
  one) and reads in-inode xattrs through a fixed 256-byte inode layout (the rest of an
  inline file is lost with larger inodes): :class:`~pipeline.image.diskread.fs.RootFs` reads
  both from the raw inode;
- truncated containers: dissect returns short data silently; every container checks its
  tables against the file size at open and every short read is an error;
- speed: grain tables, L2 tables and BATs are parsed with ``array`` rather than
  ``cstruct``, and only the hypervisor format in use is imported (:mod:`._lazy`);
- bytes read are counted (:class:`~pipeline.image.diskread._io.CountingFile`), and reads are
  serialised because the parsers keep a file position.
"""
from __future__ import annotations

from pipeline.image.diskread.containers import Disk, merge_ranges, open_disk
from pipeline.image.diskread.fs import find_root

__all__ = ["Disk", "open_disk", "find_root", "merge_ranges"]
