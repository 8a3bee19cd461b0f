"""The release train: ordered channels per image, soak time, health, blocklist.

An image's ``channels`` (config) are stages such as ``candidate`` -> ``stable``. Rebuild
publishes to the first. :func:`promote` moves the AMI on the channel before ``to`` onto
``to`` (its SSM pointer in every Region, and the launch templates that follow ``to``)
only when :func:`evaluate_gate` passes:

1. **soak**: the AMI has been on the previous channel for at least ``soak``, measured
   from the pointer's history (SSM GetParameterHistory: when the pointer last changed
   to this AMI), never from the AMI's CreationDate;
2. **not rolled back or blocked since**: the build record has no rollback of this AMI
   after it arrived, and neither the AMI (tag ``eks-ami-pipeline:blocked``) nor the
   record is blocked;
3. **every Region**: the previous channel's pointer in each of the image's Regions
   names a copy of the same build that is ``available`` and not deprecated;
4. **health** (when the channel configures it): instances launched from the AMI since
   it arrived are running, at least ``min_instances`` of them, and (``status_checks``)
   each passes both EC2 status checks.

``--force`` overrides 1, 2 (a rollback, not a block) and 4 and must say why; the reason
goes into the build record. A blocked AMI and a missing or unavailable copy are never
overridden. The decision and its evidence are one line (:meth:`GateDecision.line`) and
the same facts in ``--json``.

:func:`rollback_channel` moves a channel back to the AMI it held before; with
``block`` the AMI (every regional copy and its snapshots) is tagged blocked and the
build record says so: it is never promoted or published again and ``history`` shows it.

:func:`auto_promote` is the scheduled step: for each image, the channels with
``auto_promote: true`` are checked in train order on the state at the start of the run,
stopping at the first failing gate; the passing ones are then moved from the last to
the first, so each stage takes what the stage before it held (one stage per soak period).

:func:`channel_manifests` writes Karpenter v1 manifests per channel: one EC2NodeClass
per channel whose ``amiSelectorTerms`` is the channel's SSM pointer (``ssmParameter``,
Karpenter >= 1.4), and a NodePool for it, so canary pools follow ``candidate`` while
production follows ``stable``.
"""
from __future__ import annotations

import datetime as _dt
import getpass
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from pipeline.aws import release_facts as facts
from pipeline.aws.clients import Clients
from pipeline.aws.limits import first_error, limits_for, per_region
from pipeline.aws.ssm import get_pointer, pointer_name
from pipeline.core import tags as T
from pipeline.core.clock import Clock, default_clock
from pipeline.core.config import ChannelSettings, ImageSettings, Settings
from pipeline.core.errors import InputError, OperationFailed, PipelineError
from pipeline.core.records import BuildRecord
from pipeline.lineage import store
from pipeline.publish.gate import image_regions, point_channel

__all__ = ["GateDecision", "PromotionResult", "ChannelRollbackResult", "AutoPromoteResult",
           "train", "evaluate_gate", "promote", "rollback_channel", "auto_promote",
           "channel_manifests", "is_blocked"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- records


@dataclass(slots=True)
class GateDecision:
    """The gate's verdict for one promotion, and everything it looked at."""

    image: str
    from_channel: str
    to_channel: str
    ami_id: str | None
    build_id: str | None
    passed: bool
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)
    forced: bool = False
    force_reason: str | None = None

    def line(self) -> str:
        verdict = "PASS" if self.passed else ("FORCED" if self.forced else "REFUSED")
        ev = self.evidence
        parts = [f"{self.image}: {self.from_channel} -> {self.to_channel}: {verdict}"]
        parts.append(f"{self.ami_id or '-'} (build {self.build_id or '?'})")
        if "soaked_seconds" in ev:
            parts.append(f"on {self.from_channel} {_human(ev['soaked_seconds'])} of "
                         f"{_human(ev['soak_seconds'])} since {ev.get('on_since', '?')}")
        if "regions" in ev:
            ok = sum(1 for r in ev["regions"].values() if r.get("ok"))
            parts.append(f"available in {ok}/{len(ev['regions'])} regions")
        parts.append("blocked" if ev.get("blocked") else "not blocked")
        parts.append("rolled back since" if ev.get("rolled_back") else "not rolled back")
        if "health" in ev:
            h = ev["health"]
            parts.append(f"health {h['passing']}/{h['required']} instances passing")
        head = ", ".join(parts)
        tail = f" - {self.reason}" if not self.passed or self.forced else ""
        if self.forced:
            tail += f" (forced: {self.force_reason})"
        return head + tail

    def summary(self) -> str:
        return self.line()

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "from_channel": self.from_channel,
                "to_channel": self.to_channel, "ami_id": self.ami_id, "build_id": self.build_id,
                "passed": self.passed, "reason": self.reason, "forced": self.forced,
                "force_reason": self.force_reason, "line": self.line(),
                "evidence": self.evidence}


@dataclass(slots=True)
class PromotionResult:
    decision: GateDecision
    moved: bool
    pointers: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    manifests: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 0 if self.moved else 1

    def summary(self) -> str:
        lines = [self.decision.line()]
        lines += [f"  pointer {p}" for p in self.pointers]
        lines += [f"  {t}" for t in self.templates]
        lines += [f"  wrote {m}" for m in self.manifests]
        if not self.moved:
            lines.append(f"  nothing moved: {self.decision.to_channel} still serves what it did")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"decision": self.decision.to_dict(), "moved": self.moved,
                "pointers": list(self.pointers), "templates": list(self.templates),
                "manifests": list(self.manifests), "exit_code": self.exit_code}


@dataclass(slots=True)
class ChannelRollbackResult:
    image: str
    channel: str
    from_ami: str | None
    to_ami: str | None
    blocked: bool
    reason: str | None
    pointers: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    tagged: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.image}/{self.channel}: {self.from_ami} -> {self.to_ami}"
                 + (f"; {self.from_ami} BLOCKED ({self.reason})" if self.blocked else "")]
        lines += [f"  pointer {p}" for p in self.pointers]
        lines += [f"  {t}" for t in self.templates]
        if self.tagged:
            lines.append(f"  tagged {T.BLOCKED} on {len(self.tagged)} AMIs/snapshots")
        return "\n".join(lines)


@dataclass(slots=True)
class AutoPromoteResult:
    decisions: list[GateDecision] = field(default_factory=list)
    promoted: list[str] = field(default_factory=list)
    stopped: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.errors else 0

    def summary(self) -> str:
        lines = [d.line() for d in self.decisions] or ["no channel has auto_promote: true"]
        lines += [f"promoted {p}" for p in self.promoted]
        lines += [f"{img}: stopped at {where}" for img, where in self.stopped.items()]
        lines += [f"FAILED: {e}" for e in self.errors]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"decisions": [d.to_dict() for d in self.decisions],
                "promoted": list(self.promoted), "stopped": dict(self.stopped),
                "errors": list(self.errors), "exit_code": self.exit_code}


# --------------------------------------------------------------------------- helpers


def _human(seconds: float) -> str:
    seconds = float(seconds)
    if seconds >= 86400 and seconds % 3600 == 0 and seconds >= 2 * 86400:
        return f"{seconds / 86400:g}d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    if seconds >= 60:
        return f"{seconds / 60:.1f}m"
    return f"{seconds:.0f}s"


def _iso(when: _dt.datetime) -> str:
    return when.astimezone(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _actor() -> str:
    for var in ("GITHUB_ACTOR", "USER"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def train(image: ImageSettings) -> tuple[ChannelSettings, ...]:
    """The image's channels in order; InputError when none are configured."""
    if not image.channels:
        raise InputError(f"images[{image.name}].channels: no release train configured; add "
                         "channels: [{name: candidate}, {name: stable, soak: 24h}]")
    return image.channels


def _stage(image: ImageSettings, to: str) -> tuple[ChannelSettings, ChannelSettings]:
    chans = train(image)
    names = [c.name for c in chans]
    if to not in names:
        raise InputError(f"--to {to!r}: not a channel of image {image.name} "
                         f"(channels: {', '.join(names)})")
    idx = names.index(to)
    if idx == 0:
        raise InputError(f"--to {to}: the first channel of {image.name} is where rebuild "
                         f"publishes; promote to one of {', '.join(names[1:]) or '(none)'}")
    return chans[idx - 1], chans[idx]


def is_blocked(record: BuildRecord | None, image: facts.ImageFacts | None) -> str | None:
    """Why the build or AMI is blocked, or None."""
    if image is not None and image.blocked:
        return image.blocked
    blocked = (record.extra.get("blocked") if record else None) or None
    if isinstance(blocked, dict):
        return f"{blocked.get('at', '?')} {blocked.get('channel', '?')}: {blocked.get('reason', '')}"
    return str(blocked) if blocked else None


def _record_of(settings: Settings, clients: Clients, image_name: str,
               ami: facts.ImageFacts | None) -> BuildRecord | None:
    build_id = ami.tags.get(T.BUILD_ID) if ami else None
    if not build_id:
        return None
    return store.load_build(settings, clients, image_name, build_id)


def _on_since(history: list[facts.PointerVersion], ami_id: str) -> _dt.datetime | None:
    """When the pointer last changed to ``ami_id`` (the start of its latest run)."""
    since = None
    for v in reversed(history):
        if v.ami_id != ami_id:
            break
        since = v.modified_at
    return since


# --------------------------------------------------------------------------- gate


def evaluate_gate(settings: Settings, clients: Clients, image_name: str, to: str, *,
                  clock: Clock | None = None) -> GateDecision:
    """May the AMI on the channel before ``to`` move onto ``to`` now? Read-only."""
    clock = clock or default_clock()
    img = settings.image(image_name)
    prev, nxt = _stage(img, to)
    home = clients.region
    regions = image_regions(img, home)
    now = clock.now()
    ptr_name = pointer_name(settings.ssm_prefix, img.name, prev.name)
    history = facts.pointer_history(clients, ptr_name, region=home)
    decision = GateDecision(image=img.name, from_channel=prev.name, to_channel=nxt.name,
                            ami_id=None, build_id=None, passed=False, reason="")
    ev = decision.evidence
    ev["pointer"] = ptr_name
    if not history:
        decision.reason = f"nothing on {prev.name} yet ({ptr_name} does not exist in {home})"
        return decision
    ami_id = history[-1].ami_id
    decision.ami_id = ami_id
    home_facts = facts.image_facts(clients, home, ami_id)
    record = _record_of(settings, clients, img.name, home_facts)
    decision.build_id = (home_facts.tags.get(T.BUILD_ID) if home_facts else None) or None

    # 1. soak, from the pointer's history (the record only when the history says nothing)
    since = _on_since(history, ami_id)
    ev["soak_seconds"] = nxt.soak_seconds
    ev["soak_source"] = "pointer history"
    if since is None and record is not None and record.finished_at:
        since, ev["soak_source"] = _dt.datetime.fromisoformat(
            record.finished_at.replace("Z", "+00:00")), "build record"
    soaked = (now - since).total_seconds() if since else 0.0
    ev["on_since"] = _iso(since) if since else None
    ev["soaked_seconds"] = round(max(0.0, soaked), 1)
    ev["now"] = _iso(now)

    # 2. blocked / rolled back since it arrived
    blocked = is_blocked(record, home_facts)
    ev["blocked"] = blocked
    rollbacks = [r for r in (record.extra.get("rollbacks") or [] if record else [])
                 if isinstance(r, dict) and since is not None
                 and r.get("at", "") >= _iso(since)]
    ev["rolled_back"] = rollbacks or None

    # 3. every region: the previous channel names an available, undeprecated copy
    def region_facts(region: str) -> dict[str, Any]:
        ami: str | None
        if region == home:
            here, ami = home_facts, ami_id
        else:
            ptr = get_pointer(clients, settings.ssm_prefix, img.name, prev.name, region=region)
            ami = ptr.ami_id if ptr else None
            here = facts.image_facts(clients, region, ami) if ami else None
        out: dict[str, Any] = {"ami_id": ami, "state": here.state if here else None,
                               "deprecated": bool(here and here.deprecated(now))}
        same_build = bool(here and here.tags.get(T.BUILD_ID) == decision.build_id)
        out["ok"] = bool(here and here.state == "available" and not out["deprecated"]
                         and same_build)
        if here is not None and here.blocked:
            out["blocked"] = here.blocked
        if here is not None and not same_build:
            out["build_id"] = here.tags.get(T.BUILD_ID)
        return out

    workers = limits_for(settings.limits).region_workers
    outcomes = per_region(region_facts, regions, workers=workers)
    err = first_error(outcomes)
    if err is not None:
        raise err
    ev["regions"] = {o.region: o.value for o in outcomes}
    blocked = blocked or next((r["blocked"] for r in ev["regions"].values()
                               if isinstance(r, dict) and r.get("blocked")), None)
    ev["blocked"] = blocked

    # 4. health of the instances launched from it during the soak
    health_problem = None
    if nxt.health is not None:
        def region_health(region: str) -> list[facts.InstanceHealth]:
            ami = ev["regions"][region].get("ami_id")
            return facts.instance_health(clients, region, ami) if ami else []

        found = per_region(region_health, regions, workers=workers)
        err = first_error(found)
        if err is not None:
            raise err
        during = [i for o in found for i in cast("list[Any]", o.value or [])
                  if since is None or i.launch_time is None or i.launch_time >= since
                  - _dt.timedelta(seconds=1)]
        running = [i for i in during if i.state == "running"]
        passing = [i for i in running if i.passes_status_checks or not nxt.health.status_checks]
        failing = [i.instance_id for i in running if i not in passing]
        ev["health"] = {"required": nxt.health.min_instances, "status_checks":
                        nxt.health.status_checks, "running": len(running),
                        "passing": len(passing), "failing": failing}
        if failing:
            health_problem = (f"{len(failing)} instance(s) launched from {ami_id} fail EC2 status "
                              f"checks: {', '.join(failing[:5])}")
        elif len(passing) < nxt.health.min_instances:
            health_problem = (f"{len(passing)} healthy instance(s) launched from {ami_id} during "
                              f"the soak; {nxt.health.min_instances} required")

    bad_regions = [r for r, v in ev["regions"].items() if not v.get("ok")]
    if blocked:
        decision.reason = f"{ami_id} is blocked ({blocked}); it is never promoted again"
    elif bad_regions:
        r = bad_regions[0]
        v = ev["regions"][r]
        what = ("not there" if not v.get("ami_id") else
                f"{v['ami_id']} is {'deprecated' if v['deprecated'] else v['state']!r}"
                + (f" from build {v['build_id']}" if v.get("build_id") else ""))
        decision.reason = (f"{prev.name} in {r}: {what}; distribute build "
                           f"{decision.build_id or '?'} to every region first")
    elif rollbacks:
        decision.reason = (f"{ami_id} was rolled back on {rollbacks[-1].get('channel')} at "
                           f"{rollbacks[-1].get('at')} after it reached {prev.name}")
    elif soaked < nxt.soak_seconds:
        decision.reason = (f"soaking: {_human(max(0.0, soaked))} of {_human(nxt.soak_seconds)} on "
                           f"{prev.name}; promotable after "
                           f"{_iso(since + _dt.timedelta(seconds=nxt.soak_seconds)) if since else '?'}")
    elif health_problem:
        decision.reason = health_problem
    else:
        decision.passed, decision.reason = True, "all checks passed"
    return decision


# --------------------------------------------------------------------------- promote


def _templates_following(settings: Settings, image: str, channel: str) -> list[Any]:
    return [lt for lt in settings.launch_templates if lt.image == image and lt.channel == channel]


def _note(settings: Settings, clients: Clients, image_name: str, build_id: str | None,
          key: str, entry: dict[str, Any]) -> None:
    """Append ``entry`` to the build record's ``extra[key]`` list (or set it for 'blocked')."""
    if not build_id:
        return
    record = store.load_build(settings, clients, image_name, build_id)
    if record is None:
        log.warning("build %s has no record; %s not recorded", build_id, key)
        return
    if key == "blocked":
        record.extra["blocked"] = entry
    else:
        record.extra.setdefault(key, []).append(entry)
        record.extra[key] = record.extra[key][-20:]     # keep the record within SSM's size
    store.record_build(settings, clients, record)


def promote(settings: Settings, clients: Clients, image_name: str, to: str, *,
            force: bool = False, reason: str | None = None, clock: Clock | None = None,
            decision: GateDecision | None = None) -> PromotionResult:
    """Move the previous channel's AMI onto ``to`` when the gate passes (see module doc)."""
    from pipeline.publish.release import PublishRequest, publish

    clock = clock or default_clock()
    if force and not (reason or "").strip():
        raise InputError("promote --force: give --reason TEXT (it is recorded in the build record)")
    img = settings.image(image_name)
    decision = decision or evaluate_gate(settings, clients, img.name, to, clock=clock)
    ev = decision.evidence
    if not decision.passed:
        hard = (ev.get("blocked") or not decision.ami_id
                or any(not v.get("ok") for v in (ev.get("regions") or {}).values()))
        if not force or hard:
            if force and hard:
                decision.reason += " (--force does not override this)"
            return PromotionResult(decision=decision, moved=False)
        decision.forced, decision.force_reason = True, reason
    assert decision.ami_id is not None
    pointers: list[str] = []
    templates: list[str] = []
    following = _templates_following(settings, img.name, to)
    for lt in following:
        res = publish(settings, clients, PublishRequest(
            ami_id=decision.ami_id, template=lt.name, set_default=lt.set_default, create=True,
            channel=to))
        templates.append(f"{lt.name} version {res.version}"
                         + ("" if res.version == res.default_version else " (staged)"))
        if res.pointer and res.pointer not in pointers:
            pointers.append(res.pointer)
    if not following:
        moved = point_channel(settings, clients, decision.ami_id, to, image_name=img.name,
                              region=clients.region)
        pointers += [f"{p.name} in {p.region} -> {p.ami_id}" for p in moved]
    _note(settings, clients, img.name, decision.build_id, "promotions", {
        "channel": to, "from": decision.from_channel, "at": _iso(clock.now()),
        "forced": decision.forced, "reason": reason if decision.forced else None,
        "by": _actor()})
    log.info("%s", decision.line())
    manifests = [str(p) for p in channel_manifests(settings, clients, img.name)]
    return PromotionResult(decision=decision, moved=True, pointers=pointers,
                           templates=templates, manifests=manifests)


def auto_promote(settings: Settings, clients: Clients, image: str | None = None, *,
                 clock: Clock | None = None) -> AutoPromoteResult:
    """Promote every ``auto_promote`` channel whose gate passes; stop at the first failure."""
    clock = clock or default_clock()
    images = [settings.image(image)] if image else [i for i in settings.images if i.channels]
    result = AutoPromoteResult()
    for img in images:
        passed: list[GateDecision] = []
        for ch in img.channels[1:]:
            if not ch.auto_promote:
                continue
            try:
                d = evaluate_gate(settings, clients, img.name, ch.name, clock=clock)
            except PipelineError as err:
                result.errors.append(f"{img.name} -> {ch.name}: {err.message}")
                result.stopped[img.name] = ch.name
                break
            result.decisions.append(d)
            if not d.passed:
                result.stopped[img.name] = f"{ch.name} ({d.reason})"
                break
            passed.append(d)
        for d in reversed(passed):            # the last stage first: it takes the old AMI
            try:
                promote(settings, clients, img.name, d.to_channel, clock=clock, decision=d)
                result.promoted.append(f"{img.name}: {d.from_channel} -> {d.to_channel} "
                                       f"{d.ami_id}")
            except PipelineError as err:
                result.errors.append(f"{img.name} -> {d.to_channel}: {err.message}")
                break
    return result


# --------------------------------------------------------------------------- rollback / block


def rollback_channel(settings: Settings, clients: Clients, image_name: str, channel: str, *,
                     block: bool = False, reason: str | None = None,
                     clock: Clock | None = None) -> ChannelRollbackResult:
    """Put ``channel`` back on the AMI it held before; with ``block``, block the current one."""
    from pipeline.publish.release import rollback as template_rollback

    clock = clock or default_clock()
    img = settings.image(image_name)
    names = [c.name for c in train(img)]
    if channel not in names:
        raise InputError(f"--channel {channel!r}: not a channel of image {img.name} "
                         f"(channels: {', '.join(names)})")
    if block and not (reason or "").strip():
        reason = "blocked by rollback --block"
    home = clients.region
    history = facts.pointer_history(clients, pointer_name(settings.ssm_prefix, img.name, channel),
                                    region=home)
    if not history:
        raise InputError(f"{img.name}/{channel}: the pointer was never written; nothing to roll "
                         "back")
    current = history[-1].ami_id
    cur_facts = facts.image_facts(clients, home, current)
    record = _record_of(settings, clients, img.name, cur_facts)
    target = None
    for v in reversed(history[:-1]):
        if v.ami_id == current:
            continue
        candidate = facts.image_facts(clients, home, v.ami_id)
        if candidate is None or candidate.state != "available" or candidate.blocked:
            continue
        target = v.ami_id
        break
    now = _iso(clock.now())
    result = ChannelRollbackResult(image=img.name, channel=channel, from_ami=current,
                                   to_ami=target, blocked=block, reason=reason)
    if target is None and not block:
        raise InputError(f"{img.name}/{channel}: no earlier AMI in the pointer's history is "
                         "available and unblocked; nothing to roll back to")
    if block:
        tagged = _block(settings, clients, img, record, current, channel, reason or "", now)
        result.tagged = tagged
    if target is not None:
        following = _templates_following(settings, img.name, channel)
        for lt in following:
            res = template_rollback(settings, clients, lt.name, channel=channel)
            result.templates.append(f"{lt.name}: default version {res.from_version} -> "
                                    f"{res.to_version} ({res.to_image_id})")
            if res.pointer:
                result.pointers.append(res.pointer)
        if not following:
            moved = point_channel(settings, clients, target, channel, image_name=img.name,
                                  region=home)
            result.pointers += [f"{p.name} in {p.region} -> {p.ami_id}" for p in moved]
    if record is not None:
        _note(settings, clients, img.name, record.build_id, "rollbacks",
              {"channel": channel, "at": now, "to": target, "reason": reason, "by": _actor()})
    return result


def _block(settings: Settings, clients: Clients, img: ImageSettings, record: BuildRecord | None,
           ami_id: str, channel: str, reason: str, now: str) -> list[str]:
    """Tag every copy of the build (and its snapshots) blocked; mark the record."""
    value = f"{now} {channel}: {reason}"[:256]
    copies = dict(record.image_ids) if record else {clients.region: ami_id}
    regions = [r for r in image_regions(img, clients.region) if r in copies] or list(copies)

    def tag(region: str) -> list[str]:
        here = facts.image_facts(clients, region, copies[region])
        if here is None:
            return []
        snaps = list((record.snapshot_ids.get(region) if record else None) or [])
        ids = [copies[region], *snaps]
        facts.tag_resources(clients, region, ids, {T.BLOCKED: value})
        return ids

    outcomes = per_region(tag, regions, workers=limits_for(settings.limits).region_workers)
    err = first_error(outcomes)
    if err is not None:
        raise err
    if record is not None:
        _note(settings, clients, img.name, record.build_id, "blocked",
              {"at": now, "channel": channel, "reason": reason, "ami_id": ami_id,
               "by": _actor()})
    return [i for o in outcomes for i in cast("list[Any]", o.value or [])]


# --------------------------------------------------------------------------- Karpenter


def channel_manifests(settings: Settings, clients: Clients, image_name: str,
                      output_dir: Path | None = None) -> list[Path]:
    """Write one EC2NodeClass + NodePool per channel of ``image_name`` (Karpenter v1),
    selecting the AMI through the channel's SSM pointer. [] when Karpenter v1 is not
    configured for the image (no ``karpenter: true`` template, or version is not v1)."""
    from pipeline.publish import karpenter as kp
    from pipeline.publish import user_data as ud

    img = settings.image(image_name)
    serving = [lt for lt in settings.launch_templates if lt.image == img.name and lt.karpenter]
    if settings.karpenter.version != "v1" or not serving or settings.cluster is None \
            or not img.channels:
        return []
    mechanism = img.require if img.require in ud.MECHANISMS else None
    if mechanism is None:
        ptr = get_pointer(clients, settings.ssm_prefix, img.name, img.channels[0].name)
        here = facts.image_facts(clients, clients.region, ptr.ami_id) if ptr else None
        mechanism = (here.tags.get(T.VERIFY_MECHANISM) if here else None) or None
    if mechanism not in ud.MECHANISMS:
        log.warning("%s: bootstrap mechanism unknown (require: any, no verified AMI on %s); "
                    "no per-channel Karpenter manifests", img.name, img.channels[0].name)
        return []
    out_dir = output_dir or Path(settings.karpenter.output_dir) / "channels"
    manifests = []
    for ch in img.channels:
        lt = next((t for t in serving if t.channel == ch.name), serving[0])
        name = f"{settings.karpenter.name}-{img.name}-{ch.name}"[:63]
        named = replace(settings, karpenter=replace(settings.karpenter, name=name))
        for m in kp.render_manifests(named, "v1", template=lt, ami_id="ami-00000000",
                                     mechanism=mechanism):
            body = m.body
            labels = {"eks-ami-pipeline/image": img.name, "eks-ami-pipeline/channel": ch.name}
            body["metadata"].setdefault("labels", {}).update(labels)
            if m.kind == "EC2NodeClass":
                body["spec"]["amiSelectorTerms"] = [
                    {"ssmParameter": pointer_name(settings.ssm_prefix, img.name, ch.name)}]
            elif m.kind == "NodePool":
                tmpl = body["spec"]["template"]
                tmpl.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
            problems = kp.validate(body)
            if problems:
                raise OperationFailed(f"channel manifest {m.kind}/{name}: {problems[0]}")
            manifests.append(kp.Manifest(m.kind, name, f"{name}-{m.kind.lower()}.yaml", body))
    return kp.write_manifests(manifests, out_dir)
