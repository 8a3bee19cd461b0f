"""The progress interface long operations report to, and its renderers.

Library code takes ``progress: Progress = NO_PROGRESS`` and calls ``start``,
``advance``, ``status`` and ``done``; it never prints. ``tasks.py`` plugs in
:class:`ConsoleProgress` (a bar on stderr when it is a terminal, plain status lines
otherwise) or :data:`NO_PROGRESS` under ``--json``.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Protocol, TextIO

__all__ = ["Progress", "NullProgress", "NO_PROGRESS", "ConsoleProgress"]


class Progress(Protocol):
    def start(self, total: int | None, label: str = "") -> None: ...
    def advance(self, n: int = 1) -> None: ...
    def status(self, message: str) -> None: ...
    def done(self) -> None: ...


class NullProgress:
    """Reports nothing."""

    def start(self, total: int | None, label: str = "") -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def status(self, message: str) -> None:
        pass

    def done(self) -> None:
        pass


NO_PROGRESS: Progress = NullProgress()


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


class ConsoleProgress:
    """A one-line bar on a terminal; status lines on other streams. Thread-safe."""

    def __init__(self, stream: TextIO | None = None, *, bytes_mode: bool = True,
                 min_interval: float = 0.1) -> None:
        self._out = stream or sys.stderr
        self._tty = bool(getattr(self._out, "isatty", lambda: False)())
        self._bytes = bytes_mode
        self._lock = threading.Lock()
        self._total: int | None = None
        self._done = 0
        self._label = ""
        self._t0 = time.monotonic()
        self._last = 0.0
        self._min = min_interval

    def start(self, total: int | None, label: str = "") -> None:
        with self._lock:
            self._total, self._done, self._label = total, 0, label
            self._t0 = time.monotonic()
            if not self._tty and label:
                self._out.write(f"{label}...\n")
                self._out.flush()

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self._done += n
            now = time.monotonic()
            if self._tty and now - self._last >= self._min:
                self._last = now
                self._draw(now)

    def status(self, message: str) -> None:
        with self._lock:
            if self._tty:
                self._out.write("\r\033[K")
            self._out.write(message + "\n")
            self._out.flush()

    def done(self) -> None:
        with self._lock:
            if self._tty and self._label:
                self._draw(time.monotonic())
                self._out.write("\n")
                self._out.flush()
            self._label = ""

    def _draw(self, now: float) -> None:
        fmt = _human if self._bytes else (lambda v: f"{v:.0f}")
        rate = self._done / max(now - self._t0, 1e-6)
        if self._total:
            frac = min(self._done / self._total, 1.0)
            bar = "#" * int(frac * 30)
            text = (f"\r\033[K{self._label} [{bar:<30}] {frac * 100:5.1f}% "
                    f"{fmt(self._done)}/{fmt(self._total)} {fmt(rate)}/s")
        else:
            text = f"\r\033[K{self._label} {fmt(self._done)} {fmt(rate)}/s"
        self._out.write(text)
        self._out.flush()
