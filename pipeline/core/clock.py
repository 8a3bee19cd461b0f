"""The one clock the release train reads (soak times, promotion and block stamps).

Every rollout decision asks a :class:`Clock` for "now" instead of calling
``datetime.now`` itself, so a test (or a what-if run) can move time forward without
touching AWS: pass ``ShiftedClock(hours=25)`` and a pointer moved a minute ago looks 25
hours old. ``$PIPELINE_CLOCK_OFFSET`` (seconds, for the emulator demo and the scale
benchmark's child processes) shifts :data:`SYSTEM_CLOCK` for a whole process.
"""
from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from typing import Protocol

from pipeline.core.errors import InputError

__all__ = ["Clock", "SystemClock", "ShiftedClock", "FixedClock", "SYSTEM_CLOCK",
           "OFFSET_ENV", "default_clock", "utc_now", "now_iso"]

OFFSET_ENV = "PIPELINE_CLOCK_OFFSET"


class Clock(Protocol):
    def now(self) -> _dt.datetime:
        """The current time, timezone-aware UTC."""


@dataclass(frozen=True, slots=True)
class SystemClock:
    """The machine's clock, UTC."""

    def now(self) -> _dt.datetime:
        return _dt.datetime.now(_dt.timezone.utc)


@dataclass(frozen=True, slots=True)
class ShiftedClock:
    """The machine's clock moved by a fixed amount (positive: the future)."""

    seconds: float = 0.0
    hours: float = 0.0

    def now(self) -> _dt.datetime:
        return _dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(seconds=self.seconds,
                                                                  hours=self.hours)


@dataclass(frozen=True, slots=True)
class FixedClock:
    """Always the same instant."""

    at: _dt.datetime

    def now(self) -> _dt.datetime:
        return self.at if self.at.tzinfo else self.at.replace(tzinfo=_dt.timezone.utc)


SYSTEM_CLOCK = SystemClock()


def utc_now() -> _dt.datetime:
    """The machine's time, UTC, to the second: the one "now" of stamps and build ids
    (rollout decisions read a :class:`Clock` instead, so tests can move it)."""
    return SYSTEM_CLOCK.now().replace(microsecond=0)


def now_iso() -> str:
    """:func:`utc_now` as ISO 8601 (``2026-12-02T01:23:45+00:00``), the stamp of records."""
    return utc_now().isoformat()


def default_clock() -> Clock:
    """:data:`SYSTEM_CLOCK`, shifted by ``$PIPELINE_CLOCK_OFFSET`` seconds when set."""
    raw = os.environ.get(OFFSET_ENV)
    if not raw:
        return SYSTEM_CLOCK
    try:
        return ShiftedClock(seconds=float(raw))
    except ValueError as err:
        raise InputError(f"${OFFSET_ENV}={raw!r}: expected a number of seconds; unset it "
                         "to use the real clock") from err
