"""pipeline.core.naming: one expression per identifier, and the values it must refuse."""
from __future__ import annotations

import pytest

from pipeline.core import naming
from pipeline.core.tags import new_build_id


@pytest.mark.parametrize("value,ok", [
    ("ami-0123456789abcdef0", True), ("ami-12c6146b", True),
    ("ami-0123456789abcdef", False), ("ami-0123456789ABCDEF0", False), ("ami-", False),
    ("snap-0123456789abcdef0", False), (" ami-12c6146b", False), (None, False),
])
def test_ami_id(value: object, ok: bool) -> None:
    assert naming.is_ami_id(value) is ok


def test_snapshot_and_build_ids() -> None:
    assert naming.is_snapshot_id("snap-0123456789abcdef0")
    assert not naming.is_snapshot_id("snap-xyz")
    bid = new_build_id()
    assert naming.is_build_id(bid)
    assert naming.build_time_text(bid) == bid[2:16]
    assert naming.build_time_text("build-1") is None
    assert not naming.is_build_id("b-2026-abc")


def test_in_text_and_image_name() -> None:
    text = "copy of ami-0123456789abcdef0 (build b-20261202012345-a1b2c3)"
    assert naming.AMI_ID_IN_TEXT.search(text).group(0) == "ami-0123456789abcdef0"
    assert naming.BUILD_ID_IN_TEXT.search(text).group(0) == "b-20261202012345-a1b2c3"
    assert naming.is_image_name("eks-1.31_gpu.v2")
    assert not naming.is_image_name("-leading-dash")
    assert not naming.is_image_name("x" * 64)
