"""Publish's steps that do not touch AWS, under failure (issue 12, item 3): a manifest
folder that turns into a file before publish runs, and a manifest rename that fails
after every AWS step succeeded. AWS errors and Ctrl-C at each AWS step are the cells of
tests/test_fault_matrix.py."""
from __future__ import annotations

import shutil
from typing import Any

import pytest

import neighbours as nb
from fault_proxy import FaultProxy
from pipeline.aws.clients import Clients
from pipeline.core.config import AwsSettings
from pipeline.core.errors import InputError, OperationFailed
from pipeline.publish.release import PublishRequest, publish
from test_fault_matrix import (HOME, StopAt, converged, publish_settings, state,
                               two_region_build)
from test_publish_support import node_security_group


@pytest.fixture
def world(emulator: Any, clients: Clients, tmp_path: Any, neighbours: nb.Neighbours) -> Any:
    settings = publish_settings(tmp_path, node_security_group(clients), 1)
    b1 = two_region_build(emulator, clients, "b-20261201000001-aaaaaa")
    b2 = two_region_build(emulator, clients, "b-20261201000002-bbbbbb")
    publish(settings, clients, PublishRequest(ami_id=b1[HOME], create=True))
    return settings, b1, b2


def test_a_manifest_folder_that_is_a_file_creates_nothing(emulator, clients, world):
    settings, _, b2 = world
    folder = settings.karpenter.output_dir
    shutil.rmtree(folder)
    folder.write_text("someone's file")
    before = state(clients, settings)
    with FaultProxy(emulator.endpoint) as proxy:
        proxied = Clients(AwsSettings(region=HOME, endpoint_url=proxy.endpoint, max_attempts=2))
        with pytest.raises(InputError, match="karpenter.output_dir .* is a file") as exc:
            publish(settings, proxied, PublishRequest(ami_id=b2[HOME]))
        assert exc.value.exit_code == 2 and proxy.mutating == []
    assert state(clients, settings) == before and folder.read_text() == "someone's file"


def test_a_failed_manifest_rename_rolls_everything_back(clients, world):
    """The second manifest's path turns into a folder while publish runs: the first
    manifest gets its previous content back, and the version, default and both regions'
    pointers are undone; the error names the step and what was rolled back."""
    settings, _, b2 = world
    folder = settings.karpenter.output_dir
    first, second = sorted(p for p in folder.iterdir())
    before = state(clients, settings)

    def squat() -> None:                 # between staging and the rename into place
        second.unlink()
        second.mkdir()
        (second / "keep").write_text("x")

    with pytest.raises(OperationFailed) as exc:
        publish(settings, clients, PublishRequest(ami_id=b2[HOME]),
                progress=StopAt("Karpenter manifests", squat))
    msg = str(exc.value)
    assert "failed at step 'Karpenter manifests'" in msg and "rolled back:" in msg
    assert "default version back to 1" in msg and "deleted eks-nodes-1 version 2" in msg
    assert "NOT undone" not in msg and exc.value.exit_code == 1
    after = state(clients, settings)
    assert after.pop(f"file:{second.name}") == "<dir>"
    before.pop(f"file:{second.name}")
    assert after == before                                   # first manifest restored too
    shutil.rmtree(second)
    publish(settings, clients, PublishRequest(ami_id=b2[HOME]))      # the rerun converges
    converged(clients, settings, b2)
