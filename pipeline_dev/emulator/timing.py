"""Timing profiles: how long EC2 resources stay in their transitional states.

``instant`` (the default) keeps moto's behaviour: AMIs are ``available``, snapshots
``completed`` and instances ``running`` as soon as the call returns. ``realistic`` walks
them through AWS's states, scaled down so that a whole demo still runs in seconds:

- AMIs from CreateImage, RegisterImage and VM Import are ``pending`` for ``ami_seconds``,
  CopyImage copies for ``copy_seconds`` (their snapshots too), then ``available``
  (AWSEC2/latest/UserGuide/creating-an-ami-ebs.html, CopyingAMIs.html: "pending" until the
  copy completes);
- snapshots from CreateSnapshot, CopySnapshot and CreateImage are ``pending`` with
  ``Progress`` rising from ``0%`` to ``100%`` over ``snapshot_seconds``; EBS direct
  CompleteSnapshot answers ``pending`` and the snapshot completes ``snapshot_seconds`` later
  (ebs/latest/APIReference/API_CompleteSnapshot.html: Status completed | pending | error);
- instances are ``pending`` for ``instance_seconds`` after RunInstances/StartInstances,
  ``shutting-down`` for ``instance_seconds`` after TerminateInstances and ``stopping`` after
  StopInstances (AWSEC2/latest/UserGuide/ec2-instance-lifecycle.html);
- VM Import tasks take ``import_seconds``.

Transitions are carried out by one scheduler thread; a reset of the emulator drops the
pending ones. :func:`configure` sets the profile; :func:`install` patches moto.
"""
from __future__ import annotations

import heapq
import itertools
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

__all__ = ["Profile", "PROFILES", "configure", "current", "install", "reset", "ami_pending",
           "snapshot_pending"]


@dataclass(frozen=True)
class Profile:
    """Seconds each transitional state lasts (0 = instant)."""

    name: str
    ami_seconds: float = 0.0
    copy_seconds: float = 0.0
    snapshot_seconds: float = 0.0
    instance_seconds: float = 0.0
    import_seconds: float = 1.5


PROFILES = {
    "instant": Profile("instant"),
    "realistic": Profile("realistic", ami_seconds=0.6, copy_seconds=1.0, snapshot_seconds=0.5,
                         instance_seconds=0.3, import_seconds=2.0),
}

_profile = [PROFILES["instant"]]
_lock = threading.Condition()
_queue: list[tuple[float, int, int, Callable[[], None]]] = []
_counter = itertools.count()
_generation = [0]
_thread: list[threading.Thread] = []


def configure(name: str = "instant", **seconds: float) -> Profile:
    """Select a profile by name, optionally overriding its durations; returns it."""
    if name not in PROFILES:
        raise ValueError(f"timing must be one of {', '.join(PROFILES)}, got {name!r}")
    profile = replace(PROFILES[name], **{k: float(v) for k, v in seconds.items()
                                        if v is not None})
    _profile[0] = profile
    from pipeline_dev.emulator import vmimport

    vmimport.configure(profile.import_seconds)
    return profile


def current() -> Profile:
    return _profile[0]


def reset() -> None:
    """Forget scheduled transitions (their objects are gone after a reset)."""
    with _lock:
        _generation[0] += 1
        _queue.clear()


def _worker() -> None:
    while True:
        with _lock:
            while not _queue or _queue[0][0] > time.monotonic():
                _lock.wait(timeout=None if not _queue else max(0.0, _queue[0][0] -
                                                               time.monotonic()))
            _, _, generation, fn = heapq.heappop(_queue)
            stale = generation != _generation[0]
        if not stale:
            try:
                fn()
            except Exception:  # noqa: BLE001 - an object removed meanwhile; nothing to do
                pass


def later(seconds: float, fn: Callable[[], None]) -> None:
    """Run ``fn`` on the scheduler thread ``seconds`` from now."""
    with _lock:
        if not _thread:
            t = threading.Thread(target=_worker, daemon=True, name="emulator-timing")
            t.start()
            _thread.append(t)
        heapq.heappush(_queue, (time.monotonic() + seconds, next(_counter), _generation[0], fn))
        _lock.notify()


# --------------------------------------------------------------------------- resources


def ami_pending(ami: Any, *, copy: bool = False) -> None:
    """Hold a new AMI in ``pending`` for the profile's time (no-op when instant)."""
    seconds = current().copy_seconds if copy else current().ami_seconds
    if seconds <= 0 or getattr(ami, "state", None) != "available":
        return
    ami.state = "pending"

    def done() -> None:
        if ami.state == "pending":
            ami.state = "available"

    later(seconds, done)


def snapshot_pending(snap: Any, seconds: float | None = None) -> None:
    """Hold a snapshot in ``pending`` with rising Progress, then ``completed``."""
    seconds = current().snapshot_seconds if seconds is None else seconds
    if seconds <= 0:
        return
    snap.status = "pending"
    snap._emu_progress = (time.monotonic(), seconds)

    def done() -> None:
        if snap.status == "pending":
            snap.status = "completed"

    later(seconds, done)


def _snapshot_progress(self: Any) -> str:
    window = getattr(self, "_emu_progress", None)
    if self.status == "completed" or window is None:
        return "100%" if self.status == "completed" else "0%"
    started, seconds = window
    return f"{min(99, int(100 * (time.monotonic() - started) / seconds))}%"


def _instance_transition(inst: Any, interim: tuple[str, int], final: tuple[str, int]) -> None:
    seconds = current().instance_seconds
    if seconds <= 0:
        return
    inst._state.name, inst._state.code = interim

    def done() -> None:
        if inst._state.name == interim[0]:
            inst._state.name, inst._state.code = final

    later(seconds, done)


_patched: dict[str, Any] = {}


def install() -> None:
    """Patch moto's snapshots and instances (idempotent)."""
    from moto.ec2.models import EC2Backend
    from moto.ec2.models.elastic_block_store import Snapshot

    if _patched:
        return
    Snapshot.progress = property(_snapshot_progress)  # type: ignore[assignment,method-assign]
    for name in ("run_instances", "start_instances", "stop_instances", "terminate_instances"):
        _patched[name] = getattr(EC2Backend, name)

    def run_instances(self: Any, *args: Any, **kwargs: Any) -> Any:
        reservation = _patched["run_instances"](self, *args, **kwargs)
        for inst in reservation.instances:
            _instance_transition(inst, ("pending", 0), ("running", 16))
        return reservation

    def start_instances(self: Any, instance_ids: list[str]) -> Any:
        out = _patched["start_instances"](self, instance_ids)
        for inst, _ in out:
            _instance_transition(inst, ("pending", 0), ("running", 16))
        return out

    def stop_instances(self: Any, instance_ids: list[str]) -> Any:
        out = _patched["stop_instances"](self, instance_ids)
        for inst, _ in out:
            _instance_transition(inst, ("stopping", 64), ("stopped", 80))
        return out

    def terminate_instances(self: Any, instance_ids: list[str]) -> Any:
        out = _patched["terminate_instances"](self, instance_ids)
        for inst, _ in out:
            _instance_transition(inst, ("shutting-down", 32), ("terminated", 48))
        return out

    EC2Backend.run_instances = run_instances  # type: ignore[method-assign]
    EC2Backend.start_instances = start_instances  # type: ignore[method-assign]
    EC2Backend.stop_instances = stop_instances  # type: ignore[method-assign]
    EC2Backend.terminate_instances = terminate_instances  # type: ignore[method-assign]
