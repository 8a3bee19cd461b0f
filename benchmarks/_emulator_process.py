"""Run the local AWS emulator in a separate process for benchmarks.

A separate process keeps the emulator's CPU out of the measured client's own figures
(peak RSS, CPU time), as a real endpoint would be.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_emulator(port: int, timeout: float = 30.0, *,
                   timing: str = "instant") -> subprocess.Popen[bytes]:
    """Start ``pipeline_dev.emulator.serve`` on ``port`` and wait until it answers.

    ``timing`` is the emulator's timing profile (``instant`` or ``realistic``:
    :mod:`pipeline_dev.emulator.timing`).
    """
    code = ("from pipeline_dev.emulator import serve; "
            f"serve(host='127.0.0.1', port={port}, timing={timing!r})")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1)
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("emulator did not start")
