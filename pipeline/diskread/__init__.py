"""Read disk images and EBS snapshots lazily, without mounting or converting them.

- :func:`open_disk`: a random-access raw view of raw, VMDK, qcow2, VHD, VHDX or OVA;
- :func:`open_snapshot`: the same view of an EBS snapshot through the EBS direct APIs;
- :func:`find_root`: partition table / LVM / filesystem layers down to the filesystem
  holding ``/etc/os-release``, with symlink resolution confined to that filesystem.
"""
from __future__ import annotations

from .containers import Disk, merge_ranges, open_disk
from .fs import find_root
from .snapshot import SnapshotDisk, open_snapshot

__all__ = ["Disk", "SnapshotDisk", "open_disk", "open_snapshot", "find_root", "merge_ranges"]
