"""An HTTP proxy in front of the emulator that injects AWS errors and Ctrl-C (no tests here).

botocore builds and parses every request; the proxy reads the action of each request
(EC2/IAM query ``Action=...`` in the body, JSON protocols' ``X-Amz-Target``, S3's
method + path) and the region (from the SigV4 ``Authorization`` credential scope), and
either forwards it unchanged or, for the calls a :class:`Fault` names:

- ``kind="error"``: answers an AWS-shaped error (the call is *not* applied);
- ``kind="interrupt"``: forwards the call (AWS applied it), then sends SIGINT to the
  main thread before answering: a real Ctrl-C arriving while the client waits for the
  answer of a call that already happened (the hardest moment for an undo).

``calls`` lists every (action, region) in order, ``mutating`` the ones that are not
Describe/Get/List/Head, which is how the fault matrix enumerates its cells.
"""
from __future__ import annotations

import http.client
import json
import re
import signal
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

__all__ = ["Fault", "FaultProxy", "READ_PREFIXES", "is_mutating"]

READ_PREFIXES = ("Describe", "Get", "List", "Head", "Lookup", "Search")
_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/([a-z0-9-]+)/aws4_request")


def is_mutating(action: str) -> bool:
    return not action.startswith(READ_PREFIXES) and action not in ("S3:GET", "S3:HEAD")


@dataclass(frozen=True, slots=True)
class Fault:
    """Hit the ``nth`` (1-based) call of ``action`` (in ``region`` when given, whose
    body contains ``body`` when given)."""

    action: str
    nth: int = 1
    region: str | None = None
    kind: str = "error"              # error | interrupt
    status: int = 400
    code: str = "InternalFailure"
    body: bytes = b""                # and the request body contains this (e.g. a name)


class FaultProxy:
    """``with FaultProxy(emulator.endpoint, [Fault(...)]) as proxy:`` point clients at
    ``proxy.endpoint``. ``hits`` counts the faults that fired."""

    def __init__(self, upstream: str, faults: list[Fault] | tuple[Fault, ...] = ()) -> None:
        self.upstream = urlparse(upstream)
        self.faults = list(faults)
        self.calls: list[tuple[str, str]] = []
        self.hits: list[Fault] = []
        self._count: dict[tuple[Any, str | None], int] = {}
        self._lock = threading.Lock()
        self._main = threading.main_thread().ident
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                action, region = proxy._identify(self.command, self.path, self.headers, body)
                fault = proxy._match(action, region, body)
                if fault is not None and fault.kind == "error":
                    self._answer(*proxy._error(fault, self.headers))
                    return
                status, headers, data = proxy._upstream(self.command, self.path,
                                                        self.headers, body)
                if fault is not None:            # interrupt: applied, answer late
                    signal.pthread_kill(proxy._main, signal.SIGINT)
                    time.sleep(0.05)
                try:
                    self._answer(status, headers, data)
                except OSError:
                    pass                          # the interrupted client went away

            def _answer(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
                self.send_response(status)
                for k, v in headers:
                    if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def reset(self, faults: list[Fault] | tuple[Fault, ...] = ()) -> "FaultProxy":
        """New faults, counters and call log (one proxy serves many cells)."""
        with self._lock:
            self.faults = list(faults)
            self.calls.clear()
            self.hits.clear()
            self._count.clear()
        return self

    @property
    def mutating(self) -> list[tuple[str, str]]:
        return [c for c in self.calls if is_mutating(c[0])]

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _identify(method: str, path: str, headers: Any, body: bytes) -> tuple[str, str]:
        scope = _SCOPE.search(headers.get("Authorization") or "")
        region = scope.group(1) if scope else ""
        service = scope.group(2) if scope else ""
        target = headers.get("X-Amz-Target")
        if target:
            return target.rsplit(".", 1)[-1], region
        if service == "s3":
            return f"S3:{method}", region
        form = parse_qs(body.decode("utf-8", "replace")) if body else {}
        action = (form.get("Action") or parse_qs(urlparse(path).query).get("Action") or [""])[0]
        return action or f"{service}:{method}", region

    def _match(self, action: str, region: str, body: bytes = b"") -> Fault | None:
        with self._lock:
            self.calls.append((action, region))
            for f in self.faults:
                if f.action != action or (f.region is not None and f.region != region) \
                        or (f.body and f.body not in body):
                    continue
                self._count[(f, None)] = self._count.get((f, None), 0) + 1  # type: ignore
                if self._count[(f, None)] == f.nth and f not in self.hits:  # type: ignore
                    self.hits.append(f)
                    return f
        return None

    @staticmethod
    def _error(fault: Fault, headers: Any) -> tuple[int, list[tuple[str, str]], bytes]:
        message = f"injected by the test proxy ({fault.action} #{fault.nth})"
        if headers.get("X-Amz-Target"):
            payload = json.dumps({"__type": fault.code, "message": message}).encode()
            return fault.status, [("Content-Type", "application/x-amz-json-1.1"),
                                  ("x-amzn-ErrorType", fault.code)], payload
        return fault.status, [("Content-Type", "text/xml")], (
            f"<Response><Errors><Error><Code>{fault.code}</Code><Message>{message}</Message>"
            "</Error></Errors><RequestID>x</RequestID></Response>").encode()

    def _upstream(self, method: str, path: str, headers: Any,
                  body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        fwd = {k: v for k, v in headers.items()
               if k.lower() not in ("connection", "transfer-encoding")}
        conn.request(method, path, body=body, headers=fwd)
        resp = conn.getresponse()
        data = resp.read()
        out = (resp.status, list(resp.getheaders()), data)
        conn.close()
        return out

    def __enter__(self) -> "FaultProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
