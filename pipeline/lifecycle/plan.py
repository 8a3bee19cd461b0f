"""``invoke rebuild --plan``: which images need a rebuild and why, and the CI matrix.

The decision is :func:`pipeline.lifecycle.rebuild.rebuild` itself in its dry-run mode
(the same inputs, the same :func:`~pipeline.lifecycle.rebuild.decide`), so the plan
can never disagree with what ``invoke rebuild --image NAME`` will then do. It takes no
lock and builds nothing: per image it reads the last successful build's record and the
current inputs (the base AMI's SSM parameter, template hashes, the Packer version, or
the source file's SHA-256).

``matrix`` is GitHub Actions' ``strategy.matrix`` (``{"include": [{"image": NAME}]}``)
of the images to rebuild. An image whose inputs cannot be worked out is in the matrix
too, so its own job fails and says why while the others build; the plan itself exits 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.aws.clients import Clients
from pipeline.core.config import Settings
from pipeline.lifecycle.rebuild import rebuild

__all__ = ["PlanEntry", "RebuildPlan", "plan"]


@dataclass(frozen=True, slots=True)
class PlanEntry:
    image: str
    rebuild: bool
    reason: str
    previous_build_id: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(slots=True)
class RebuildPlan:
    images: list[PlanEntry] = field(default_factory=list)
    forced: bool = False

    @property
    def to_build(self) -> list[str]:
        return [e.image for e in self.images if e.rebuild or e.error]

    @property
    def matrix(self) -> dict[str, list[dict[str, str]]]:
        return {"include": [{"image": name} for name in self.to_build]}

    def to_dict(self) -> dict[str, Any]:
        return {"images": [{"image": e.image, "rebuild": e.rebuild, "reason": e.reason,
                            "previous_build_id": e.previous_build_id, "inputs": dict(e.inputs),
                            "error": e.error} for e in self.images],
                "forced": self.forced, "count": len(self.to_build), "matrix": self.matrix}

    def summary(self) -> str:
        lines = [f"{e.image}: {'rebuild' if e.rebuild else 'skip'} - {e.reason}"
                 + (f" ({e.error})" if e.error else "") for e in self.images]
        lines.append(f"{len(self.to_build)} of {len(self.images)} image(s) to rebuild"
                     + (f": {', '.join(self.to_build)}" if self.to_build else ""))
        return "\n".join(lines)


def plan(settings: Settings, clients: Clients, image: str | None = None,
         force: bool = False) -> RebuildPlan:
    """Per configured image (or ``image``): rebuild or not, and why. Read-only."""
    decided = rebuild(settings, clients, image=image, force=force, dry_run=True)
    out = RebuildPlan(forced=force)
    for entry in decided.images:
        out.images.append(PlanEntry(
            image=entry.image, rebuild=entry.decision in ("rebuild", "retry"), reason=entry.reason,
            previous_build_id=entry.previous_build_id, inputs=dict(entry.inputs),
            error=entry.error))
    return out
