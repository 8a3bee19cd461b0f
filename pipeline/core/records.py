"""Typed records that cross module boundaries (boto3 dicts stop where AWS was called).

:class:`BuildRecord` is the lineage of one import or bake: written as AMI/snapshot tags
(see :mod:`pipeline.core.tags`), as one durable record per build in AWS and as the local
``build/manifest.json`` (see :mod:`pipeline.lineage.store`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.core.clock import now_iso

__all__ = ["Verification", "BuildRecord", "UNFINISHED"]

#: Build statuses of a build whose AMI was made and verified but whose distribution or
#: publication failed: the next ``rebuild`` finishes it (distribute and publish that AMI
#: again) instead of skipping it, and ``reap`` removes it after its grace period.
UNFINISHED = ("distribution-failed", "publication-failed")


@dataclass(frozen=True, slots=True)
class Verification:
    """The outcome of an offline bootstrap-contract check of one AMI or image."""

    verdict: str                 # ok | missing | not-executable | stub | ...
    mechanism: str | None        # bootstrap.sh | nodeadm | None
    checked_at: str              # ISO 8601 UTC
    tool_version: str
    os_id: str | None = None
    os_version: str | None = None
    kubelet_version: str | None = None       # v1.31.2-eks-...; None when unknown
    warnings: tuple[str, ...] = ()           # check ids that warned (hygiene, runtime)

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"


@dataclass(slots=True)
class BuildRecord:
    """One build: its inputs, its outputs per region, its verification."""

    build_id: str
    image_name: str
    method: str                                  # vm-import | snapshot | bake
    status: str = "started"      # started | succeeded | failed | distribution-failed |
    #                              publication-failed (see UNFINISHED; extra["failed"] says why)
    started_at: str = ""
    finished_at: str | None = None
    source_file: str | None = None
    source_sha256: str | None = None             # whole-file SHA-256 (vm-import)
    #: pipeline.image.identity of the imported disk (container-independent; snapshot)
    source_content_id: str | None = None
    base_ami: str | None = None
    inputs_sha256: str | None = None
    tool_version: str = ""
    git_commit: str | None = None
    packer_version: str | None = None
    image_ids: dict[str, str] = field(default_factory=dict)          # region -> ami
    snapshot_ids: dict[str, list[str]] = field(default_factory=dict)  # region -> snaps
    verification: Verification | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BuildRecord":
        data = dict(data)
        ver = data.pop("verification", None)
        known = set(cls.__dataclass_fields__)
        rec = cls(**{k: v for k, v in data.items() if k in known})
        if ver:
            ver = {k: v for k, v in ver.items() if k in Verification.__dataclass_fields__}
            ver["warnings"] = tuple(ver.get("warnings") or ())
        rec.verification = Verification(**ver) if ver else None
        return rec

    @staticmethod
    def now() -> str:
        return now_iso()
