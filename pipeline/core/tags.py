"""Tag keys this tool writes on AWS resources, and small helpers around tags.

Every resource a build creates carries :data:`BUILD_ID`; AMIs and their snapshots also
carry the lineage keys, and verified AMIs the ``verify:*`` keys, so a fresh CI run can
find everything from AWS alone. Keys stay within EC2's limits (128 chars per key, 256
per value, 50 tags per resource).
"""
from __future__ import annotations

import datetime as _dt
import secrets
from typing import Iterable, Mapping

from pipeline.core.clock import utc_now

__all__ = [
    "PREFIX", "BUILD_ID", "IMAGE_NAME", "METHOD", "SOURCE_SHA256", "SOURCE_CONTENT", "SOURCE_FILE", "BASE_AMI",
    "INPUTS_SHA256", "TOOL_VERSION", "GIT_COMMIT", "PACKER_VERSION", "CREATED_AT",
    "VERIFY_VERDICT", "VERIFY_MECHANISM", "VERIFY_TIME", "VERIFY_TOOL_VERSION", "MANAGED_BY",
    "VERIFY_KUBELET_VERSION", "VERIFY_WARNINGS",
    "BLOCKED",
    "new_build_id", "to_tag_list", "from_tag_list", "tag_specifications", "utc_now",
]

PREFIX = "eks-ami-pipeline:"
MANAGED_BY = "managed-by"              # value: eks-ami-pipeline
BUILD_ID = PREFIX + "build-id"
IMAGE_NAME = PREFIX + "image-name"
METHOD = PREFIX + "method"             # vm-import | snapshot | bake | copy
SOURCE_SHA256 = PREFIX + "source-sha256"
SOURCE_CONTENT = PREFIX + "source-content"   # pipeline.image.identity (disk-v1:...)
SOURCE_FILE = PREFIX + "source-file"
BASE_AMI = PREFIX + "base-ami"
INPUTS_SHA256 = PREFIX + "inputs-sha256"
TOOL_VERSION = PREFIX + "tool-version"
GIT_COMMIT = PREFIX + "git-commit"
PACKER_VERSION = PREFIX + "packer-version"
CREATED_AT = PREFIX + "created-at"
VERIFY_VERDICT = PREFIX + "verify:verdict"
VERIFY_MECHANISM = PREFIX + "verify:mechanism"
VERIFY_TIME = PREFIX + "verify:time"
VERIFY_TOOL_VERSION = PREFIX + "verify:tool-version"
VERIFY_KUBELET_VERSION = PREFIX + "verify:kubelet-version"   # v1.31.2-eks-... | unknown
VERIFY_WARNINGS = PREFIX + "verify:warnings"   # space-separated check ids | none
#: On an AMI and its snapshots: ``<UTC time> <channel>: <reason>``; never promoted or
#: published again (``invoke rollback --block``).
BLOCKED = PREFIX + "blocked"


def new_build_id(now: _dt.datetime | None = None) -> str:
    """``b-YYYYMMDDhhmmss-<6 hex>``: sortable by time, unique across parallel runs."""
    now = now or utc_now()
    return f"b-{now:%Y%m%d%H%M%S}-{secrets.token_hex(3)}"


def to_tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    """``{"k": "v"}`` to EC2's ``[{"Key": "k", "Value": "v"}]`` (values cut to 256)."""
    return [{"Key": k[:128], "Value": str(v)[:256]} for k, v in tags.items() if v is not None]


def from_tag_list(tags: Iterable[Mapping[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t.get("Value", "") for t in tags or ()}


def tag_specifications(tags: Mapping[str, str], *resource_types: str) -> list[dict[str, object]]:
    """EC2 ``TagSpecifications`` carrying ``tags`` for each resource type."""
    return [{"ResourceType": rt, "Tags": to_tag_list(tags)} for rt in resource_types]
