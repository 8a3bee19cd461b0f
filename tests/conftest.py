"""Shared fixtures: one emulator (moto server + extensions) per session, reset per test.

Tests speak HTTP to it through the production client factory; nothing patches boto3.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.aws.clients import Clients
from pipeline.core.config import AwsSettings
from pipeline_dev.emulator import Emulator

REGION = "us-east-1"


@pytest.fixture(autouse=True)
def _fake_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials, no profile and no stray endpoint from the caller's shell."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "PIPELINE_CONFIG"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="session")
def emulator_server() -> Emulator:
    """One emulator on a free port for the whole run (fast VM Import tasks)."""
    emu = Emulator("127.0.0.1", 0, import_seconds=float(os.environ.get("TEST_IMPORT_SECONDS", "1.5")),
                   timing=os.environ.get("EMULATOR_TIMING", "instant"))
    emu.start()
    yield emu
    emu.stop()


@pytest.fixture
def emulator(emulator_server: Emulator) -> Emulator:
    """The session emulator with every backend wiped and the AWS seeds restored."""
    emulator_server.reset()
    return emulator_server


@pytest.fixture
def realistic_emulator(emulator: Emulator) -> Emulator:
    """The emulator in the ``realistic`` timing profile for one test (AMIs, snapshots and
    instances pass through pending/shutting-down), then back to the session's profile."""
    emulator.set_timing("realistic")
    yield emulator
    emulator.set_timing(os.environ.get("EMULATOR_TIMING", "instant"))


@pytest.fixture
def endpoint(emulator: Emulator) -> str:
    return emulator.endpoint


@pytest.fixture
def aws_settings(endpoint: str) -> AwsSettings:
    """Settings pointing at the emulator, one attempt per call (no retry storms on bugs)."""
    return AwsSettings(region=REGION, endpoint_url=endpoint, max_attempts=2)


@pytest.fixture
def clients(aws_settings: AwsSettings) -> Clients:
    """The production client factory, wired to the freshly reset emulator."""
    return Clients(aws_settings)


@pytest.fixture(scope="session")
def image_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session folder for disk images that several tests share (built once)."""
    return tmp_path_factory.mktemp("images")


@pytest.fixture
def neighbours(emulator: Emulator, clients: Clients):
    """An account full of resources the pipeline did not create (tests/neighbours.py);
    after the test every one of them must still be there, unchanged.

    Add an import bucket's neighbours with ``add_bucket(clients, neighbours, name)``.
    """
    from tests import neighbours as nb

    seeded = nb.seed(clients)
    yield seeded
    nb.assert_untouched(clients, seeded)
