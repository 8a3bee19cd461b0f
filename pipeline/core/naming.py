"""The shape of every identifier the tool reads or writes, each defined once.

The ``*_PATTERN`` strings are bare (no anchors) so the configuration's JSON Schema and
the compiled expressions below share them; match a whole value with ``fullmatch``
(or :func:`is_ami_id`...), find one in free text with the ``*_IN_TEXT`` forms.
"""
from __future__ import annotations

import re

__all__ = [
    "AMI_ID_PATTERN", "SNAPSHOT_ID_PATTERN", "BUILD_ID_PATTERN", "IMAGE_NAME_PATTERN",
    "AMI_ID_RE", "SNAPSHOT_ID_RE", "BUILD_ID_RE", "IMAGE_NAME_RE",
    "AMI_ID_IN_TEXT", "SNAPSHOT_ID_IN_TEXT", "BUILD_ID_IN_TEXT",
    "is_ami_id", "is_snapshot_id", "is_build_id", "is_image_name", "build_time_text",
    "BOOTSTRAP_PATH",
]

#: ``ami-`` and 8 or 17 lower-case hex digits (EC2's short and long resource ids).
AMI_ID_PATTERN = r"ami-(?:[0-9a-f]{17}|[0-9a-f]{8})"
#: ``snap-`` and 8 or 17 lower-case hex digits.
SNAPSHOT_ID_PATTERN = r"snap-(?:[0-9a-f]{17}|[0-9a-f]{8})"
#: ``b-YYYYMMDDhhmmss-<6 hex>`` (:func:`pipeline.core.tags.new_build_id`).
BUILD_ID_PATTERN = r"b-(?P<time>\d{14})-[0-9a-f]{6}"
#: A configured image name: what the ``image-name`` tag, SSM paths and AMI names carry.
IMAGE_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}"

AMI_ID_RE = re.compile(AMI_ID_PATTERN)
SNAPSHOT_ID_RE = re.compile(SNAPSHOT_ID_PATTERN)
BUILD_ID_RE = re.compile(BUILD_ID_PATTERN)
IMAGE_NAME_RE = re.compile(IMAGE_NAME_PATTERN)

AMI_ID_IN_TEXT = re.compile(rf"\b{AMI_ID_PATTERN}\b")
SNAPSHOT_ID_IN_TEXT = re.compile(rf"\b{SNAPSHOT_ID_PATTERN}\b")
BUILD_ID_IN_TEXT = re.compile(rf"\b{BUILD_ID_PATTERN}\b")

#: The AL2 node bootstrap script: what verify looks for and user data calls.
BOOTSTRAP_PATH = "/etc/eks/bootstrap.sh"


def is_ami_id(value: object) -> bool:
    return isinstance(value, str) and AMI_ID_RE.fullmatch(value) is not None


def is_snapshot_id(value: object) -> bool:
    return isinstance(value, str) and SNAPSHOT_ID_RE.fullmatch(value) is not None


def is_build_id(value: object) -> bool:
    return isinstance(value, str) and BUILD_ID_RE.fullmatch(value) is not None


def is_image_name(value: object) -> bool:
    return isinstance(value, str) and IMAGE_NAME_RE.fullmatch(value) is not None


def build_time_text(build_id: str) -> str | None:
    """The ``YYYYMMDDhhmmss`` a build id starts with, or None for another shape."""
    m = BUILD_ID_RE.match(build_id)
    return m.group("time") if m else None
