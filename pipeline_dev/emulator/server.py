"""Start moto's server in-process with our extensions installed, reset and re-seed it.

Every extension module has an idempotent ``install()``; :func:`install_all` runs them on
:meth:`Emulator.start`. A reset (``POST /moto-api/reset``, which :meth:`Emulator.reset`
sends) clears moto's backends; a hook on moto's reset then clears the block store and
the extensions' own state and seeds the public EKS AMIs and SSM parameters again, so a
reset from any client restores the seeds.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
import urllib.request
from typing import Any, Callable

__all__ = ["Emulator", "serve", "ACCOUNT_ID", "install_all"]

log = logging.getLogger(__name__)

ACCOUNT_ID = "123456789012"

# moto loads ~1300 default AMIs per region on first use (slow, and not what a fresh
# account sees from DescribeImages --owners self). Must be set before moto's EC2 backends
# are built; an explicit value in the environment wins.
os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")

_installed = False
_install_lock = threading.Lock()
_reset_hooks: list[Callable[[], None]] = []


def _after_reset() -> None:
    for hook in _reset_hooks:
        hook()


def install_all() -> None:
    """Install every extension into moto's classes once per process."""
    global _installed
    with _install_lock:
        if _installed:
            return
        from moto.moto_api._internal.models import MotoAPIBackend

        from pipeline_dev.emulator import (ami_features, amis, blockstore, ebs, image_references,
            kms_keys, launch_templates, s3_checksums, s3_multipart, seeds, timing, vmimport)

        ebs.install()
        vmimport.install()
        amis.install()
        launch_templates.install()
        image_references.install()  # DescribeImageReferences, image deprecation
        ami_features.install()      # Allowed AMIs, deregistration protection, ancestry
        kms_keys.install()          # CopySnapshot: Encrypted, KmsKeyId checked
        timing.install()            # after amis: wraps its RunInstances
        s3_multipart.install()      # unknown UploadId: 404 NoSuchUpload, not 500
        s3_checksums.install()      # BadDigest, part checksums, InvalidPartOrder
        _reset_hooks.extend([timing.reset, vmimport.reset, blockstore.STORE.clear, ebs.reset,
                             lambda: None if seeds.seed_all(ACCOUNT_ID) else None])
        original = MotoAPIBackend.reset

        def reset(self: Any) -> None:
            original(self)
            _after_reset()

        MotoAPIBackend.reset = reset  # type: ignore[method-assign]
        _installed = True


class _Server:
    """moto's WSGI app on a werkzeug threaded server in a daemon thread (quiet)."""

    def __init__(self, host: str, port: int) -> None:
        from moto.moto_server.werkzeug_app import (DomainDispatcherApplication,
                                                   MotoRequestHandler, create_backend_app)
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        from pipeline_dev.emulator.faults import middleware

        app = middleware(DomainDispatcherApplication(create_backend_app))
        self.httpd = make_server(host, port, app, threaded=True,
                                 request_handler=MotoRequestHandler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True,
                                       name="aws-emulator")
        self.thread.start()

    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.thread.join(timeout=10)


class Emulator:
    """moto's threaded server plus our extensions, on ``host:port`` (0 = a free port).

    ``import_seconds`` is how long a VM Import task takes from pending to completed;
    ``timing`` is ``instant`` (resources are ready at once) or ``realistic`` (AMIs,
    snapshots and instances go through their transitional states: :mod:`.timing`).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 import_seconds: float | None = 2.0, timing: str | None = None) -> None:
        from pipeline_dev.emulator.timing import PROFILES

        # The environment picks the profiles of emulators started without them (the demo):
        # EMULATOR_TIMING=instant|realistic, EMULATOR_THROTTLE / EMULATOR_SERVER_ERRORS
        # (fractions of calls), EMULATOR_IAM_PROPAGATION (seconds).
        timing = timing or os.environ.get("EMULATOR_TIMING") or "instant"

        if timing not in PROFILES:
            raise ValueError(f"timing must be one of {', '.join(PROFILES)}, got {timing!r}")
        self.host, self.port = host, port
        self.import_seconds = import_seconds
        self.timing = timing
        self._server: _Server | None = None

    def set_faults(self, throttle: float = 0.0, server_errors: float = 0.0, *,
                   iam_propagation_seconds: float = 0.0, seed: int | None = None,
                   services: tuple[str, ...] = ()) -> None:
        """Answer that fraction of calls with throttling / 5xx (:mod:`.faults`); 0 = off."""
        from pipeline_dev.emulator import faults

        faults.configure(throttle=throttle, server_errors=server_errors,
                         iam_propagation_seconds=iam_propagation_seconds, seed=seed,
                         services=tuple(services))

    def set_timing(self, name: str, **seconds: float) -> None:
        """Switch the timing profile of the running emulator (tests)."""
        from pipeline_dev.emulator import timing

        seconds.setdefault("import_seconds", self.import_seconds)  # type: ignore[arg-type]
        timing.configure(name, **seconds)
        self.timing = name

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> str:
        from pipeline_dev.emulator import seeds

        from pipeline_dev.emulator import timing

        install_all()
        timing.configure(self.timing, import_seconds=self.import_seconds)
        env = os.environ
        if any(env.get(k) for k in ("EMULATOR_THROTTLE", "EMULATOR_SERVER_ERRORS",
                                    "EMULATOR_IAM_PROPAGATION")):
            self.set_faults(float(env.get("EMULATOR_THROTTLE") or 0),
                            float(env.get("EMULATOR_SERVER_ERRORS") or 0),
                            iam_propagation_seconds=float(env.get("EMULATOR_IAM_PROPAGATION")
                                                          or 0))
        for kind in ("al2023", "al2"):
            seeds.base_disk(kind)  # build once per process, before the first reset
        self._server = _Server(self.host, self.port)
        self.host, self.port = self._server.address()
        self.reset()
        return self.endpoint

    def reset(self) -> None:
        """Wipe every backend, then seed again what AWS always has."""
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=30).read()

    def seed_image(self, kind: str, *, region: str = "us-east-1", name: str | None = None,
                   arch: str = "x86_64") -> str:
        """Make one more base AMI owned by the emulator's account and return its id.

        ``kind`` is ``al2023`` (bootstrap.sh stub + nodeadm), ``al2`` (real bootstrap.sh)
        or ``bare`` (no bootstrap contract). Its root snapshot holds the real disk image.
        """
        from moto.ec2.models import ec2_backends

        from pipeline_dev.emulator import seeds

        if kind not in ("al2023", "al2", "bare"):
            raise ValueError(f"kind must be al2023, al2 or bare, got {kind!r}")
        ami = seeds.seed_image(ec2_backends[ACCOUNT_ID][region], kind, name=name, arch=arch,
                               owner_id=ACCOUNT_ID)
        return str(ami.id)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> "Emulator":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(host: str = "127.0.0.1", port: int = 5077, import_seconds: float | None = 20.0,
          timing: str = "instant", throttle: float = 0.0, server_errors: float = 0.0) -> None:
    """Run the emulator in the foreground until Ctrl-C (the ``emulator`` task)."""
    emu = Emulator(host, port, import_seconds=import_seconds, timing=timing)
    emu.start()
    if throttle or server_errors:
        emu.set_faults(throttle, server_errors)
    out = sys.stdout
    out.write(f"AWS emulator listening on {emu.endpoint} (timing: {emu.timing})\n"
              "Export this to point the AWS CLI, boto3 and this tool at it:\n"
              f"  export AWS_ENDPOINT_URL={emu.endpoint}\n"
              "  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing\n"
              "  export AWS_DEFAULT_REGION=us-east-1\n"
              "Seeded: /aws/service/eks/optimized-ami/<1.29-1.34>/amazon-linux-2023/"
              "{x86_64,arm64}/standard/recommended/image_id and .../amazon-linux-2/"
              "recommended/image_id (1.29-1.32) in us-east-1, us-east-2, us-west-2, eu-west-1\n"
              "Ctrl-C stops it (state lives in memory only).\n")
    out.flush()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        emu.stop()
