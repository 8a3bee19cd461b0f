"""AMIs and the snapshots behind them: facts read from a ``DescribeImages`` answer.

The one place that works out "the snapshots of an AMI" (its EBS block device mappings)
and its root snapshot, so every stage, the clean-up door and the lineage store agree.
"""
from __future__ import annotations

from typing import Any, Mapping

__all__ = ["snapshots_of", "root_mapping"]


def _ebs_mappings(image: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    return [m for m in (image or {}).get("BlockDeviceMappings") or []
            if (m.get("Ebs") or {}).get("SnapshotId")]


def snapshots_of(image: Mapping[str, Any] | None) -> list[str]:
    """The EBS snapshot ids behind an AMI's block device mappings, in mapping order
    (``[]`` for None or an AMI without EBS mappings)."""
    return [m["Ebs"]["SnapshotId"] for m in _ebs_mappings(image)]


def root_mapping(image: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(snapshot id, device name)`` of the AMI's root device (its ``RootDeviceName``
    mapping, else the first EBS mapping), or None when it has no EBS snapshot."""
    mappings = _ebs_mappings(image)
    root = image.get("RootDeviceName")
    chosen = next((m for m in mappings if m.get("DeviceName") == root),
                  mappings[0] if mappings else None)
    if chosen is None:
        return None
    return str(chosen["Ebs"]["SnapshotId"]), str(chosen.get("DeviceName", ""))
