"""Start moto's server in-process with our extensions installed, reset and re-seed it."""
from __future__ import annotations

import logging
import sys
import time
import urllib.request

from moto.moto_server.threaded_moto_server import ThreadedMotoServer

__all__ = ["Emulator", "serve"]

log = logging.getLogger(__name__)

ACCOUNT_ID = "123456789012"


class Emulator:
    """moto's threaded server plus our extensions, on ``host:port`` (0 = a free port).

    ``import_seconds`` is how long a VM Import task takes from pending to completed.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 import_seconds: float = 2.0) -> None:
        self.host, self.port = host, port
        self.import_seconds = import_seconds
        self._server: ThreadedMotoServer | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> str:
        self._server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        self._server.start()
        self.host, self.port = self._server.get_host_and_port()
        self.reset()
        return self.endpoint

    def reset(self) -> None:
        """Wipe every backend, then seed again what AWS always has."""
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=30).read()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> "Emulator":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(host: str = "127.0.0.1", port: int = 5077, import_seconds: float = 20.0) -> None:
    """Run the emulator in the foreground until Ctrl-C (the ``emulator`` task)."""
    emu = Emulator(host, port, import_seconds=import_seconds)
    emu.start()
    out = sys.stdout
    out.write(f"AWS emulator listening on {emu.endpoint}\n"
              "Export this to point the AWS CLI, boto3 and this tool at it:\n"
              f"  export AWS_ENDPOINT_URL={emu.endpoint}\n"
              "  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing\n"
              "  export AWS_DEFAULT_REGION=us-east-1\n"
              "Ctrl-C stops it (state lives in memory only).\n")
    out.flush()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        emu.stop()
