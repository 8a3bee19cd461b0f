"""ConsoleProgress: bars that fit the terminal, plain lines elsewhere, NO_COLOR honoured."""
from __future__ import annotations

import io
import re

import pytest

from pipeline.core.progress import ConsoleProgress, count_label, percent_label

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _frames(raw: str) -> list[str]:
    """What a terminal shows line by line: every redraw, control sequences removed."""
    text = ANSI.sub("", raw.replace("\r", "\n"))
    return [ln for ln in text.split("\n") if ln.strip()]


@pytest.mark.parametrize("width", [80, 100, 60])
def test_bar_fits_the_terminal_and_reaches_100(width: int, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    out = _Tty()
    p = ConsoleProgress(out, force_terminal=True, width=width)
    total = 263 * 2**20
    p.start(total, "write snap-0123456789abcdef0 (a long label that must be cut)")
    for _ in range(10):
        p.advance(total // 10)
    p.advance(total - 10 * (total // 10))
    p.status("packer: Creating temporary keypair")
    p.done()
    frames = _frames(out.getvalue())
    assert frames and all(len(f) <= width for f in frames), max(frames, key=len)
    bars = [f for f in frames if "write snap" in f]
    assert "100%" in bars[-1] and "263.0/263.0 MiB" in bars[-1]
    if width >= 70:
        assert re.search(r"[KMGT]iB/s", bars[-1])
    stamped = [f for f in frames if "Creating temporary keypair" in f]
    assert stamped and re.match(r"\d\d:\d\d:\d\d ", stamped[0])


def test_percent_and_count_bars_show_no_bytes() -> None:
    out = _Tty()
    p = ConsoleProgress(out, force_terminal=True, width=80)
    p.start(100, percent_label("VM Import import-ami-0123"))
    p.advance(40)
    p.advance(60)
    p.done()
    p.start(3, count_label("waiting for every region"))
    p.advance(3)
    p.done()
    frames = _frames(out.getvalue())
    vm = [f for f in frames if "VM Import" in f]
    assert "100%" in vm[-1] and " B" not in vm[-1] and "[%]" not in vm[-1]
    regions = [f for f in frames if "waiting for" in f]
    assert "3/3" in regions[-1] and " B" not in regions[-1]


def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    p = ConsoleProgress(out)
    p.start(1000, "hashing disk.raw")
    for _ in range(10):
        p.advance(100)
    p.status("a status line")
    p.done()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert all(re.match(r"\d\d:\d\d:\d\d ", ln) for ln in lines)
    body = [ln[9:] for ln in lines]
    assert body[0] == "hashing disk.raw: started (1000 B)"
    assert [b for b in body if "%" in b] == ["hashing disk.raw: 25% (300 B of 1000 B)",
                                             "hashing disk.raw: 50% (500 B of 1000 B)",
                                             "hashing disk.raw: 75% (800 B of 1000 B)"]
    assert body[-2] == "a status line"
    assert body[-1].startswith("hashing disk.raw: done, 1000 B of 1000 B in ")


def test_no_color_means_no_colour(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    out = _Tty()
    p = ConsoleProgress(out, force_terminal=True, width=80)
    p.start(10, count_label("things"))
    p.advance(10)
    p.status("hello")
    p.done()
    colours = re.findall(r"\x1b\[([0-9;]*)m", out.getvalue())
    assert not [c for c in colours if re.search(r"(^|;)(3[0-9]|9[0-7]|38)(;|$)", c)], colours
