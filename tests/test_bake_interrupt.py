"""Ctrl-C during a real Packer build: SIGINT is forwarded, Packer cleans up, we sweep the
rest, the task exits 1 with nothing left.

Packer talks to the emulator through a small forwarding proxy that holds Packer's
CreateImage request for a moment: that is when the test presses "Ctrl-C" (SIGINT to
the main thread), with the build instance, its volume, key pair and security group live.
"""
from __future__ import annotations

import http.server
import shutil
import signal
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

import pytest

from pipeline.bake.build import plan_bake, run_plan
from pipeline.core.errors import PackerBuildFailed
from tests.test_bake import AL2023_PARAM, _inventory, _settings

pytestmark = [pytest.mark.packer, pytest.mark.usefixtures("neighbours"),
              pytest.mark.skipif(shutil.which("packer") is None, reason="packer not installed")]


class HoldingProxy:
    """Forwards every request to ``target``; holds the first request whose body names
    ``action`` until ``release`` is set, calling ``on_hold`` when it arrives."""

    def __init__(self, target: str, action: str, on_hold: Callable[[], None]) -> None:
        self.release = threading.Event()
        self.held = threading.Event()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if f"Action={action}".encode() in body and not proxy.held.is_set():
                    proxy.held.set()
                    on_hold()
                    proxy.release.wait(timeout=15)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "content-length", "connection")}
                req = urllib.request.Request(target + self.path, data=body or None,
                                             headers=headers, method=self.command)
                try:
                    with urllib.request.urlopen(req, timeout=60) as resp:
                        status, rh, data = resp.status, resp.headers, resp.read()
                except urllib.error.HTTPError as err:
                    status, rh, data = err.code, err.headers, err.read()
                self.send_response(status)
                for k, v in rh.items():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_ctrl_c_mid_build_exits_1_and_leaves_nothing(emulator, clients, tmp_path: Path):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("SIGINT can only be simulated when tests run in the main thread")
    main = threading.main_thread().ident
    assert main is not None

    def press_ctrl_c() -> None:
        signal.pthread_kill(main, signal.SIGINT)
        threading.Timer(1.0, proxy.release.set).start()

    proxy = HoldingProxy(emulator.endpoint, "CreateImage", press_ctrl_c)
    try:
        settings = _settings(emulator.endpoint, tmp_path, {"ssm_parameter": AL2023_PARAM})
        before = _inventory(clients)
        plan = plan_bake(settings, clients, None, workdir=tmp_path / "work")
        plan.variables["custom_endpoint_ec2"] = proxy.url
        plan.write_variables()

        with pytest.raises(PackerBuildFailed) as err:
            run_plan(settings, clients, plan)

        assert proxy.held.is_set(), "Packer never reached CreateImage"
        assert err.value.exit_code == 1
        assert "interrupted" in err.value.message
        # Packer's own lines about the cancelled build are kept for the report.
        assert err.value.details["packer_errors"]
        assert _inventory(clients) == before
    finally:
        proxy.close()
