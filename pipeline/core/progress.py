"""The progress interface long operations report to, and its renderers.

Library code takes ``progress: Progress = NO_PROGRESS`` and calls ``start``,
``advance``, ``status`` and ``done``; it never prints. ``tasks.py`` plugs in
:class:`ConsoleProgress` or :data:`NO_PROGRESS` under ``--json``.

:class:`ConsoleProgress` draws with rich (loaded only when one is made):

- on a terminal: one bar per operation that fits the terminal's width (label, bar,
  percentage, done/total, rate, time left), redrawn in place; status lines (Packer's
  relayed output among them) print above the bar with a timestamp;
- elsewhere (CI logs, a pipe): plain lines, one per event: the start, every quarter of the
  total, each status line, the end with the average rate; every line timestamped;
- ``NO_COLOR`` (any value) turns colour off, as https://no-color.org asks; rich reads it.

Units: a total counts bytes unless the label starts with ``"[%] "`` (a percentage, such as
VM Import's own Progress field) or ``"[#] "`` (a count of things); the renderer strips the
prefix (:func:`percent_label`, :func:`count_label`), other Progress objects may ignore it.

Totals are whatever the caller started with; callers advance by everything that is done,
skipped work included (zero blocks not sent are done), so a finished bar shows 100 %.
"""
from __future__ import annotations

import datetime as _dt
import sys
import threading
import time
from typing import Any, Protocol, TextIO

__all__ = ["Progress", "NullProgress", "NO_PROGRESS", "ConsoleProgress", "human_bytes",
           "percent_label", "count_label"]

_PERCENT, _COUNT = "[%] ", "[#] "


def percent_label(label: str) -> str:
    """A label whose total is 100 percent (the bar shows ``42%`` and no byte amounts)."""
    return _PERCENT + label


def count_label(label: str) -> str:
    """A label whose total counts things (regions, blocks), not bytes."""
    return _COUNT + label


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


def human_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB`` (binary units, as the bars show them)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _stamp() -> str:
    return _dt.datetime.now().strftime("%H:%M:%S")


class ConsoleProgress:
    """A rich bar on a terminal, plain timestamped lines elsewhere. Thread-safe.

    ``force_terminal`` and ``width`` are for tests (a terminal of a known size).
    """

    LABEL_WIDTH = 20          # the label column never takes more (ellipsis after)

    def __init__(self, stream: TextIO | None = None, *, bytes_mode: bool = True,
                 force_terminal: bool | None = None, width: int | None = None) -> None:
        from rich.console import Console

        self._console = Console(file=stream or sys.stderr, force_terminal=force_terminal,
                                width=width, highlight=False, soft_wrap=False,
                                log_path=False)
        self._tty = self._console.is_terminal and not self._console.is_dumb_terminal
        self._bytes = bytes_mode
        self._unit = "bytes" if bytes_mode else "count"
        self._lock = threading.Lock()
        self._bar: Any = None
        self._task: Any = None
        self._total: int | None = None
        self._done = 0
        self._label = ""
        self._t0 = time.monotonic()
        self._next_quarter = 1

    # ------------------------------------------------------------------ the interface

    def start(self, total: int | None, label: str = "") -> None:
        with self._lock:
            self._finish()
            self._unit = "bytes"
            for prefix, unit in ((_PERCENT, "percent"), (_COUNT, "count")):
                if label.startswith(prefix):
                    label, self._unit = label[len(prefix):], unit
            self._bytes = self._unit == "bytes"
            self._total, self._done, self._label = total, 0, label
            self._t0 = time.monotonic()
            self._next_quarter = 1
            if self._tty:
                self._bar = self._make_bar()
                self._bar.start()
                self._task = self._bar.add_task(label, total=total)
            elif label:
                size = f" ({self._fmt(total)})" if total else ""
                self._line(f"{label}: started{size}")

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self._done += n
            if self._bar is not None:
                self._bar.update(self._task, advance=n)
            elif self._total and self._label:
                while (self._next_quarter <= 3
                       and self._done * 4 >= self._next_quarter * self._total):
                    pct = self._next_quarter * 25
                    amount = ("" if self._unit == "percent" else
                              f" ({self._fmt(self._done)} of {self._fmt(self._total)})")
                    self._line(f"{self._label}: {pct}%{amount}")
                    self._next_quarter += 1

    def status(self, message: str) -> None:
        with self._lock:
            for text in message.splitlines() or [""]:
                if self._bar is not None:
                    self._bar.console.print(f"[dim]{_stamp()}[/dim] {self._escape(text)}",
                                            overflow="fold")
                else:
                    self._line(text)

    def done(self) -> None:
        with self._lock:
            self._finish()

    # ------------------------------------------------------------------ helpers

    def _finish(self) -> None:
        if self._bar is not None:
            self._bar.refresh()
            self._bar.stop()
            self._bar = self._task = None
        elif self._label:
            seconds = max(time.monotonic() - self._t0, 1e-6)
            total = f" of {self._fmt(self._total)}" if self._total else ""
            rate = f", {self._fmt(self._done / seconds)}/s" if self._bytes else ""
            amount = "" if self._unit == "percent" else f" {self._fmt(self._done)}{total}"
            self._line(f"{self._label}: done,{amount} in {seconds:.1f} s{rate}")
        self._label = ""

    def _fmt(self, value: float | None) -> str:
        if value is None:
            return "?"
        if self._unit == "percent":
            return f"{value:.0f}%"
        return human_bytes(value) if self._bytes else f"{value:.0f}"

    def _line(self, text: str) -> None:
        self._console.file.write(f"{_stamp()} {text}\n")
        self._console.file.flush()

    @staticmethod
    def _escape(text: str) -> str:
        from rich.markup import escape

        return escape(text)

    def _make_bar(self) -> Any:
        from rich.progress import (BarColumn, Progress as RichProgress, ProgressColumn,
                                   TaskProgressColumn, TextColumn, TimeRemainingColumn)
        from rich.table import Column
        from rich.text import Text

        fmt = self._fmt

        bytes_mode, unit_kind = self._bytes, self._unit

        class Amount(ProgressColumn):
            """``12.5/263.0 MiB`` (or ``3/7``), never wrapped."""

            def render(self, task: Any) -> Text:
                if task.total is None:
                    return Text(fmt(task.completed), no_wrap=True)
                if unit_kind == "percent":
                    return Text("", no_wrap=True)
                if not bytes_mode:
                    return Text(f"{task.completed:.0f}/{task.total:.0f}", no_wrap=True)
                value, unit = fmt(task.total).split(" ")
                scale = float(task.total) / float(value) if float(value) else 1.0
                done = task.completed / scale
                text = f"{done:.0f}/{value} {unit}" if unit == "B" else (
                    f"{done:.1f}/{value} {unit}")
                return Text(text, no_wrap=True)

        class Rate(ProgressColumn):
            """``45.2 MiB/s`` over rich's recent window (blank until known)."""

            def render(self, task: Any) -> Text:
                speed = task.finished_speed or task.speed
                return Text(f"{fmt(speed)}/s" if speed else "", no_wrap=True)

        def col(**kw: Any) -> Column:
            return Column(no_wrap=True, **kw)

        # Everything but the bar has a bounded width; the bar takes what the terminal has
        # left (at least 10 columns), so a line never wraps and each redraw replaces it.
        narrow = self._console.width < 70          # then no rate and no time left
        rate = self._bytes and not narrow
        others = self.LABEL_WIDTH + 4 + 15 + (0 if narrow else 5) + (11 if rate else 0) + 5
        bar_width = max(10, self._console.width - others - 1)
        label = TextColumn("{task.description}", table_column=col(
            overflow="ellipsis", width=self.LABEL_WIDTH))
        columns: list[Any] = [label, BarColumn(bar_width=bar_width),
                              TaskProgressColumn(table_column=col(width=4)),
                              Amount(table_column=col(width=15, justify="right"))]
        if rate:
            columns.append(Rate(table_column=col(width=11, justify="right")))
        if not narrow:
            columns.append(TimeRemainingColumn(compact=True, table_column=col(width=5)))
        return RichProgress(*columns, console=self._console, expand=False,
                            refresh_per_second=8, transient=False)
