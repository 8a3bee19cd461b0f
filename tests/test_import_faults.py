"""Imports under faults: throttled block writes are retried; a failed RegisterImage
deletes the snapshot; VM Import survives a few failed DescribeImportImageTasks polls
and cancels the task when it has to give up.

Faults come from a small HTTP proxy in front of the emulator that answers some requests
with AWS-shaped errors and forwards everything else unchanged (no boto3 patching).
"""
from __future__ import annotations

import http.client
import re
import threading
from collections import Counter
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import pytest

from pipeline.aws.clients import Clients
from pipeline.core.config import AwsSettings
from pipeline.image.diskread import open_disk
from pipeline.core.errors import AwsCallError
from pipeline.ingest.importer import ImportRequest, import_image
from pipeline.aws.ebs import write_snapshot
from test_import_e2e import _inventory, _settings, good_raw  # noqa: F401

#: Every test here runs beside resources the pipeline did not create (tests/neighbours.py).
pytestmark = pytest.mark.usefixtures("neighbours")

_BLOCK = re.compile(r"^/snapshots/[^/]+/blocks/(\d+)$")


class FaultProxy:
    """Forward to ``upstream``; throttle each block's first ``throttle`` PUTs; fail the
    first N calls of EC2 actions: ``fail_actions={"RegisterImage": (N, status)}``."""

    def __init__(self, upstream: str, *, throttle: int = 0,
                 fail_actions: dict[str, tuple[int, int]] | None = None,
                 message: bytes = b"injected by the test proxy"):
        self.message = message
        self.upstream = urlparse(upstream)
        self.throttle = throttle
        self.fail_actions = dict(fail_actions or {})
        self.failed: Counter[str] = Counter()
        self.seen: Counter[str] = Counter()
        self.throttled = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy.fault(self.command, self.path, body)
                if fault:
                    status, headers, payload = fault
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(proxy.upstream.hostname,
                                                  proxy.upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("connection", "transfer-encoding")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def fault(self, method: str, path: str, body: bytes):
        m = _BLOCK.match(path.split("?")[0])
        if method == "PUT" and m:
            self.seen[m.group(1)] += 1
            if self.seen[m.group(1)] <= self.throttle:
                self.throttled += 1
                return (400, {"x-amzn-ErrorType": "ThrottlingException",
                              "Content-Type": "application/json"},
                        b'{"message": "Rate exceeded"}')
        for action, (times, status) in self.fail_actions.items():
            if f"Action={action}&".encode() in body + b"&" and self.failed[action] < times:
                self.failed[action] += 1
                code = b"InvalidParameter" if status < 500 else b"Unavailable"
                return (status, {"Content-Type": "text/xml"},
                        b"<Response><Errors><Error><Code>" + code + b"</Code><Message>"
                        + self.message + b"</Message></Error></Errors>"
                        b"<RequestID>x</RequestID></Response>")
        return None

    def __enter__(self) -> "FaultProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_throttled_blocks_are_retried_until_written(emulator, good_raw) -> None:
    with FaultProxy(emulator.endpoint, throttle=2) as proxy:
        clients = Clients(AwsSettings(endpoint_url=proxy.endpoint, max_attempts=1))
        with ExitStack() as undo, open_disk(good_raw) as disk:
            written = write_snapshot(clients, disk, tags={}, client_token="retry-test",
                                     workers=8, undo=undo)
            undo.pop_all()
    assert written.blocks_sent > 0
    assert proxy.throttled == 2 * written.blocks_sent           # every block failed twice
    snap = clients.client("ec2").describe_snapshots(SnapshotIds=[written.snapshot_id])
    assert snap["Snapshots"][0]["State"] == "completed"


def test_failed_registration_deletes_the_snapshot(emulator, aws_settings, tmp_path,
                                                  good_raw) -> None:
    with FaultProxy(emulator.endpoint, fail_actions={"RegisterImage": (99, 400)}) as proxy:
        settings_aws = AwsSettings(endpoint_url=proxy.endpoint, max_attempts=1)
        clients = Clients(settings_aws)
        before = _inventory(clients)
        with pytest.raises(AwsCallError, match="injected by the test proxy"):
            import_image(_settings(settings_aws, tmp_path, good_raw, method="snapshot"),
                         clients, ImportRequest())
        assert _inventory(clients) == before


def _vm_import_settings(proxy, tmp_path, image, bucket="eks-imports"):
    aws = AwsSettings(endpoint_url=proxy.endpoint, max_attempts=1)
    clients = Clients(aws)
    clients.client("s3").create_bucket(Bucket=bucket)
    return clients, _settings(aws, tmp_path, image)


def test_vm_import_survives_failed_polls(emulator, tmp_path, good_raw) -> None:
    fails = {"DescribeImportImageTasks": (3, 503)}
    with FaultProxy(emulator.endpoint, fail_actions=fails) as proxy:
        clients, settings = _vm_import_settings(proxy, tmp_path, good_raw)
        result = import_image(settings, clients, ImportRequest(
            create_role=True, poll_interval=0.1, poll_max=0.2))
    assert proxy.failed["DescribeImportImageTasks"] == 3
    assert result.image_id.startswith("ami-")


def test_vm_import_gives_up_after_repeated_failed_polls_and_cancels(
        emulator, tmp_path, good_raw) -> None:
    fails = {"DescribeImportImageTasks": (99, 503)}
    with FaultProxy(emulator.endpoint, fail_actions=fails) as proxy:
        clients, settings = _vm_import_settings(proxy, tmp_path, good_raw)
        with pytest.raises(AwsCallError, match="gave up following import task .* cancelled it"):
            import_image(settings, clients, ImportRequest(
                create_role=True, poll_interval=0.05, poll_max=0.05))
    direct = Clients(AwsSettings(endpoint_url=emulator.endpoint))
    tasks = direct.client("ec2").describe_import_image_tasks()["ImportImageTasks"]
    assert tasks[0]["Status"] in ("deleting", "deleted")
    assert _inventory(direct)["objects"] == []


def test_import_image_waits_for_a_freshly_created_role_to_propagate(
        emulator, tmp_path, good_raw) -> None:
    """AWS answers "service role ... does not exist" until IAM catches up."""
    msg = (b"The service role vmimport provided does not exist or does not have sufficient "
           b"permissions")
    with FaultProxy(emulator.endpoint, fail_actions={"ImportImage": (2, 400)},
                    message=msg) as proxy:
        clients, settings = _vm_import_settings(proxy, tmp_path, good_raw)
        result = import_image(settings, clients, ImportRequest(
            create_role=True, poll_interval=0.1, poll_max=0.2, role_grace=3))
    assert proxy.failed["ImportImage"] == 2 and result.image_id.startswith("ami-")
