"""Scheduled rebuilds that act only when something changed (``invoke rebuild``).

For each configured image (or the one named):

1. take the image's lock in AWS (:mod:`pipeline.lifecycle.locks`), so two runs never build it at
   once;
2. work out the current inputs: for a bake, exactly what :func:`pipeline.bake.build.plan_bake`
   hashes (the base AMI its SSM parameter names *now*, templates, var files,
   provisioners, variables and the Packer version); for an import, the SHA-256 of the
   source file;
3. compare them with the last successful build's record; a newer build that was made
   but whose distribution or publication failed (status ``distribution-failed`` /
   ``publication-failed``, see :data:`pipeline.core.records.UNFINISHED`) is finished
   instead (decision ``retry``: distribute and publish that AMI again) when the inputs
   are the same and its AMI is still available, else rebuilt (and marked ``failed`` so
   ``reap`` removes what it left);
4. rebuild when they differ, when that build is older than ``max_age_days``, when there
   is none, or with ``force``; otherwise skip, saying why;
5. before building, run every check distribution and publication will run for the
   image (sharing, regions, KMS keys, user data lint, template rules, Karpenter
   manifests): a refusal builds nothing;
6. after a rebuild (which verifies the AMI offline), distribute it to the configured
   regions and publish it to every launch template configured for the image: to its
   channel's pointer, as the default version or, with ``set_default: false``, as a
   staged non-default version (promotion stays a human decision). The build record
   ends ``succeeded``, or ``distribution-failed``/``publication-failed`` with the
   failure in ``extra["failed"]``.

A failed image's headline names the phase that failed (lock, inputs, checks, build,
distribute, publish) and its error line says why, once. One image failing does not stop the others; the result's exit code is 1 when any image
failed or was locked by another run.
"""
from __future__ import annotations

import datetime as _dt
import functools
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.aws.clients import Clients
from pipeline.core.config import ImageSettings, Settings
from pipeline.core.errors import InputError, NoSource, PipelineError
from pipeline.core.progress import NO_PROGRESS, Progress
from pipeline.core.records import UNFINISHED, BuildRecord

__all__ = ["Inputs", "Decision", "ImageRebuild", "RebuildResult", "current_inputs", "decide",
           "rebuild"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class Inputs:
    """What decides an image's content, as recorded on a build."""

    method: str                      # bake | import
    inputs_sha256: str | None = None
    base_ami: str | None = None
    packer_version: str | None = None
    source_sha256: str | None = None        # whole-file SHA-256 (records before disk-v1)
    source_content_id: str | None = None    # pipeline.image.identity (allocated data only)
    source_path: str | None = None          # to hash the whole file for an old record


@dataclass(frozen=True, slots=True)
class Decision:
    rebuild: bool
    reason: str


@dataclass(slots=True)
class ImageRebuild:
    """What happened to one image."""

    image: str
    decision: str                    # rebuild | retry | skip | locked | error
    reason: str
    status: str                      # skipped | succeeded | failed | locked | planned
    previous_build_id: str | None = None
    build_id: str | None = None
    image_ids: dict[str, str] = field(default_factory=dict)
    published: list[str] = field(default_factory=list)
    inputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    phase: str = ""                  # lock | inputs | checks | build | distribute | publish
    warnings: list[str] = field(default_factory=list)


@dataclass(slots=True)
class RebuildResult:
    images: list[ImageRebuild] = field(default_factory=list)
    forced: bool = False
    dry_run: bool = False

    @property
    def exit_code(self) -> int:
        return 1 if any(i.status in ("failed", "locked") for i in self.images) else 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["exit_code"] = self.exit_code
        return out

    def summary(self) -> str:
        lines = []
        for i in self.images:
            head = f"{i.image}: {i.decision} - {i.reason}"
            if i.status == "succeeded":
                amis = ", ".join(f"{r}: {a}" for r, a in sorted(i.image_ids.items()))
                head += f"\n  built {i.build_id}: {amis}"
                head += "".join(f"\n  published {p}" for p in i.published)
                head += "".join(f"\n  warning: {w}" for w in i.warnings)
            elif i.status == "failed":
                head += f"\n  FAILED: {i.error}"
            elif i.status == "planned":
                head += "\n  (dry run: nothing built)"
            lines.append(head)
        return "\n".join(lines) or "no images configured"


# --------------------------------------------------------------------------- inputs


def current_inputs(settings: Settings, clients: Clients, image: ImageSettings) -> Inputs:
    """The inputs a build of ``image`` would have right now (read-only in AWS)."""
    if image.bake is not None:
        from pipeline.bake.build import plan_bake

        plan = plan_bake(settings, clients, image.name, stage=False)
        shutil.rmtree(plan.invocation.workdir, ignore_errors=True)
        return Inputs(method="bake", inputs_sha256=plan.inputs_sha256, base_ami=plan.base_ami,
                      packer_version=str(plan.packer_version))
    if image.import_ is None:
        raise InputError(f"images: {image.name!r} has neither bake nor import")
    from pipeline.image.identity import file_identity

    source = image.import_.source
    if not source.is_file():
        raise NoSource(f"images: {image.name}: import.source {source} not found; "
                       "build the disk image first or fix the path")
    # The content identity reads only allocated data; the whole-file SHA-256 (a read of
    # every byte, holes included) only when the last record has nothing else.
    return Inputs(method="import", source_content_id=file_identity(str(source)),
                  source_path=str(source))


def _whole_file_sha256(inputs: Inputs) -> str | None:
    if inputs.source_sha256 or not inputs.source_path:
        return inputs.source_sha256
    st = Path(inputs.source_path).stat()
    return _sha_cached(inputs.source_path, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha_cached(path: str, size: int, mtime_ns: int) -> str:
    from pipeline.aws.s3 import hash_file

    log.info("%s: the last build recorded only a whole-file SHA-256; hashing the whole file "
             "once to compare (builds from now on record the content identity)", path)
    return hash_file(path, parts=False).sha256


def source_change(last: BuildRecord, now_inputs: Inputs) -> str | None:
    """Why the source differs from the one ``last`` was built from, or None.

    Compares the identity both sides have: the content identity (records since
    disk-v1), else the whole-file SHA-256 (older records: the file is hashed whole,
    once), else the source counts as changed (one rebuild, said so)."""
    if last.source_content_id and now_inputs.source_content_id:
        if last.source_content_id == now_inputs.source_content_id:
            return None
        return (f"source file changed (content {last.source_content_id[:20]} -> "
                f"{now_inputs.source_content_id[:20]})")
    if last.source_sha256:
        now_sha = _whole_file_sha256(now_inputs)
        if now_sha == last.source_sha256:
            return None
        return f"source file changed (sha256 {last.source_sha256[:12]} -> {str(now_sha)[:12]})"
    return ("the last build recorded no source identity (one-time rebuild; builds now record "
            "the content identity)")


def _age_days(record: BuildRecord, now: _dt.datetime) -> float | None:
    stamp = record.finished_at or record.started_at
    if not stamp:
        return None
    when = _dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return (now - when).total_seconds() / 86400


def decide(image: ImageSettings, now_inputs: Inputs, last: BuildRecord | None, *,
           force: bool = False, now: _dt.datetime | None = None) -> Decision:
    """Rebuild or not, and the one-line reason."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    if force:
        return Decision(True, "forced (--force)")
    if last is None:
        return Decision(True, "no successful build yet")
    if now_inputs.method == "bake":
        if last.base_ami != now_inputs.base_ami:
            return Decision(True, f"base AMI moved: {last.base_ami} -> {now_inputs.base_ami}")
        if last.packer_version != now_inputs.packer_version:
            return Decision(True, f"Packer version changed: {last.packer_version} -> "
                                  f"{now_inputs.packer_version}")
        if last.inputs_sha256 != now_inputs.inputs_sha256:
            return Decision(True, "templates, provisioners, var files or variables changed "
                                  f"(inputs {str(last.inputs_sha256)[:12]} -> "
                                  f"{str(now_inputs.inputs_sha256)[:12]})")
    elif (changed := source_change(last, now_inputs)) is not None:
        return Decision(True, changed)
    age = _age_days(last, now)
    if age is not None and age > image.max_age_days:
        return Decision(True, f"last build {last.build_id} is {age:.0f} days old "
                              f"(max_age_days {image.max_age_days})")
    old = f"{age:.1f} days old" if age is not None else "age unknown"
    return Decision(False, f"inputs unchanged since build {last.build_id} ({old})")


# --------------------------------------------------------------------------- the run


def _build(settings: Settings, clients: Clients, image: ImageSettings,
           progress: Progress) -> BuildRecord:
    """Bake or import ``image``; both verify the AMI and record the build."""
    if image.bake is not None:
        from pipeline.bake.build import BakeResult, bake

        result = bake(settings, clients, image.name, progress=progress)
        assert isinstance(result, BakeResult)
        return result.record
    from pipeline.ingest.importer import ImportRequest, import_image

    imported = import_image(settings, clients, ImportRequest(name=image.name), progress)
    if imported.record is None:
        raise PipelineError(f"import of {image.name} returned no build record")
    return imported.record


def _publish(settings: Settings, clients: Clients, image: ImageSettings,
             record: BuildRecord) -> list[str]:
    from pipeline.publish.release import PublishRequest, publish

    out = []
    ami = record.image_ids.get(clients.region) or next(iter(record.image_ids.values()))
    for lt in settings.launch_templates:
        if lt.image != image.name:
            continue
        res = publish(settings, clients, PublishRequest(
            ami_id=ami, template=lt.name, set_default=lt.set_default, create=True,
            channel=lt.channel))
        staged = "" if res.version == res.default_version else " (staged, not default)"
        pointer = f", pointer {res.pointer}" if res.pointer else ""
        out.append(f"{lt.name} version {res.version}{staged}{pointer}")
    return out


def _check_before_build(settings: Settings, clients: Clients, image: ImageSettings) -> list[str]:
    """Every check distribution and publication will run for a build of ``image`` (config
    semantics, regions, KMS keys, sharing, user data lint, template rules, Karpenter
    manifests), run before anything is built. Returns the template rule warnings."""
    from pipeline.lifecycle.distribute import check_before_build
    from pipeline.publish.release import check_publication

    check_before_build(settings, clients, image)
    warnings: list[str] = []
    for lt in settings.launch_templates:
        if lt.image == image.name:
            warnings += check_publication(settings, clients, lt.name, image_name=image.name)
    return warnings


def _unfinished(builds: list[BuildRecord], last: BuildRecord | None) -> BuildRecord | None:
    """The newest build after the last successful one that was made but whose
    distribution or publication failed (the next run finishes it)."""
    for rec in builds:                       # newest first
        if last is not None and rec.build_id == last.build_id:
            return None
        if rec.status in UNFINISHED:
            return rec
    return None


def _usable(settings: Settings, clients: Clients, image: ImageSettings,
            record: BuildRecord) -> bool:
    """The unfinished build's home AMI still exists and is available."""
    from pipeline.publish.gate import find_build_image, image_regions

    region = image_regions(image, settings.aws.region)[0]
    found = find_build_image(clients.client("ec2", region=region), record.build_id)
    return found is not None and found.get("State") == "available"


def _same_inputs(now_inputs: Inputs, rec: BuildRecord) -> bool:
    if now_inputs.method == "bake":
        return (rec.base_ami, rec.packer_version, rec.inputs_sha256) == (
            now_inputs.base_ami, now_inputs.packer_version, now_inputs.inputs_sha256)
    return source_change(rec, now_inputs) is None


def _mark(settings: Settings, clients: Clients, record: BuildRecord, status: str,
          step: str | None = None, error: str | None = None) -> None:
    """Record how the build ended (the build record in SSM, tags, manifest)."""
    from pipeline.lineage import store as lineage

    record.status = status
    if step:
        record.extra["failed"] = {"step": step, "error": (error or "")[:500],
                                  "at": BuildRecord.now()}
    else:
        record.extra.pop("failed", None)
    record.finished_at = record.finished_at or BuildRecord.now()
    try:
        lineage.record_build(settings, clients, record)
    except PipelineError as err:
        log.warning("%s: could not record build %s as %s: %s", record.image_name,
                    record.build_id, status, err.message)


def _one(settings: Settings, clients: Clients, image: ImageSettings, force: bool,
         dry_run: bool, progress: Progress, entry: ImageRebuild) -> ImageRebuild:
    from pipeline.lineage import store as lineage

    entry.phase = "inputs"
    try:
        now_inputs = current_inputs(settings, clients, image)
    except NoSource as err:
        # Nothing to import: a scheduled run (or the shipped example on a fresh account,
        # before `invoke demo --workdir build` made the sample disk) skips the image.
        entry.decision, entry.status = "skip", "skipped"
        entry.reason = (f"nothing to import: {err.message.split(': ', 2)[-1]} "
                        "(e.g. `invoke demo --workdir build` writes the sample disk)")
        return entry
    entry.inputs = {k: v for k, v in asdict(now_inputs).items() if v}
    builds = lineage.load_builds(settings, clients, image.name, include_untracked=False)
    last = next((b for b in builds if b.status == "succeeded"), None)
    entry.previous_build_id = last.build_id if last else None
    pending = None if force else _unfinished(builds, last)
    retry: BuildRecord | None = None
    if pending is not None:
        why = (pending.extra.get("failed") or {}).get("error") or pending.status
        step = "distribution" if pending.status == "distribution-failed" else "publication"
        if _same_inputs(now_inputs, pending) and _usable(settings, clients, image, pending):
            retry = pending
            decision = Decision(True, f"build {pending.build_id} was made but its {step} "
                                      f"failed ({why}); distributing and publishing that AMI "
                                      "again")
        else:
            decision = decide(image, now_inputs, last, force=force)
            gone = ("its AMI is gone" if _same_inputs(now_inputs, pending)
                    else "the inputs changed since")
            decision = Decision(True, f"build {pending.build_id}'s {step} failed and {gone}; "
                                      f"building again ({decision.reason})")
    else:
        decision = decide(image, now_inputs, last, force=force)
    entry.decision = ("retry" if retry else "rebuild") if decision.rebuild else "skip"
    entry.reason = decision.reason
    entry.status = "skipped"
    log.debug("%s: %s - %s", image.name, entry.decision, entry.reason)
    progress.status(f"{image.name}: {entry.decision} - {entry.reason}")
    if not decision.rebuild:
        return entry
    entry.phase, entry.status = "checks", "failed"
    entry.warnings = _check_before_build(settings, clients, image)
    if dry_run:
        entry.status = "planned"
        return entry
    from pipeline.lifecycle.distribute import distribute

    if retry is not None:
        record = retry
    else:
        entry.phase = "build"
        record = _build(settings, clients, image, progress)
        if pending is not None:     # superseded: reap may remove what it left
            _mark(settings, clients, pending, "failed", "superseded",
                  f"superseded by build {record.build_id}")
    entry.build_id = record.build_id
    entry.image_ids = dict(record.image_ids)
    try:
        entry.phase = "distribute"
        record = distribute(settings, clients, record, progress=progress)
        entry.image_ids = dict(record.image_ids)
        entry.phase = "publish"
        entry.published = _publish(settings, clients, image, record)
    except (PipelineError, KeyboardInterrupt) as err:
        failed = "distribution-failed" if entry.phase == "distribute" else "publication-failed"
        message = getattr(err, "message", None) or "interrupted"
        _mark(settings, clients, record, failed, entry.phase, message)
        raise
    _mark(settings, clients, record, "succeeded")
    entry.status = "succeeded"
    return entry


_PHASE_HEADLINE = {
    "lock": "could not take the rebuild lock",
    "inputs": "could not work out the current inputs",
    "checks": "refused before building (nothing was built)",
    "build": "the build failed",
    "distribute": "built, but distribution failed (the next run distributes it again)",
    "publish": "built, but publication failed (the next run publishes it again)",
}


def rebuild(settings: Settings, clients: Clients, image: str | None = None, force: bool = False,
            progress: Progress = NO_PROGRESS, *, dry_run: bool = False,
            lock_ttl_seconds: int = 6 * 3600) -> RebuildResult:
    """Rebuild every configured image (or ``image``) whose inputs changed or aged."""
    from pipeline.lifecycle.locks import LockHeld, hold

    images = [settings.image(image)] if image else list(settings.images)
    if not images:
        raise InputError(f"{settings.source or 'configuration'}: images: nothing configured "
                         "to rebuild")
    result = RebuildResult(forced=force, dry_run=dry_run)
    for img in images:
        entry = ImageRebuild(image=img.name, decision="error", reason="", status="failed")
        try:
            if dry_run:
                result.images.append(_one(settings, clients, img, force, True, progress, entry))
                continue
            entry.phase = "lock"
            with hold(settings, clients, f"rebuild-{img.name}", ttl_seconds=lock_ttl_seconds):
                result.images.append(_one(settings, clients, img, force, False, progress,
                                          entry))
        except LockHeld as err:
            result.images.append(ImageRebuild(img.name, "locked", err.message, "locked"))
            progress.status(f"{img.name}: locked - {err.message}")
        except PipelineError as err:
            # One line per image: the headline names the phase that failed, the error
            # line says why (logged at debug only, so it is not printed twice).
            log.debug("%s: %s failed: %s", img.name, entry.phase, err.message)
            if entry.decision in ("rebuild", "retry") and entry.reason:
                entry.reason = f"{entry.reason}; {_PHASE_HEADLINE[entry.phase]}"
            else:
                entry.decision, entry.reason = "error", _PHASE_HEADLINE[entry.phase]
            entry.status, entry.error = "failed", err.message
            result.images.append(entry)
    return result
