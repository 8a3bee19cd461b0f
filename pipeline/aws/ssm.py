"""SSM pointers: ``/<prefix>/<image-name>/<channel>`` naming the AMI a channel serves.

Pointers have DataType ``aws:ec2:image`` so they work in Karpenter v1 ``amiSelectorTerms``
(``ssmParameter``) and as ``resolve:ssm:<name>`` in launch templates. Channels such as
``candidate`` and ``stable`` are moved by publish, promote and rollback (:mod:`pipeline.publish.release`).
Each call takes an optional ``region``: pointers live in every region an image is in.
"""
from __future__ import annotations

import logging
import re
from datetime import datetime
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipeline.aws.clients import Clients, call, error_code
from pipeline.core.errors import AwsCallError, InputError

__all__ = ["Pointer", "pointer_name", "put_pointer", "get_pointer", "list_pointers",
           "RESOLVE_SSM", "ssm_reference", "ImageIdResolver"]

log = logging.getLogger(__name__)

#: The ``ImageId`` prefix of a launch template that reads its AMI from SSM at launch.
RESOLVE_SSM = "resolve:ssm:"

_SEGMENT = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True, slots=True)
class Pointer:
    """One SSM pointer and the AMI it names."""

    name: str
    image_name: str
    channel: str
    ami_id: str
    version: int
    region: str
    last_modified: str = ""


def pointer_name(prefix: str, image_name: str, channel: str) -> str:
    """``/<prefix>/<image-name>/<channel>`` (prefix with or without its leading slash)."""
    for what, value in (("image name", image_name), ("channel", channel)):
        if not _SEGMENT.match(value or ""):
            raise InputError(f"SSM pointer {what} {value!r}: expected letters, digits, '.', '_' "
                             "or '-' (it becomes one path segment)")
    return "/" + "/".join(p for p in (prefix.strip("/"), image_name, channel) if p)


def put_pointer(clients: Clients, prefix: str, image_name: str, channel: str, ami_id: str,
                region: str | None = None) -> Pointer:
    """Write (overwrite) the pointer; one PutParameter call."""
    name = pointer_name(prefix, image_name, channel)
    resp = call(clients.client("ssm", region=region).put_parameter,
                what=f"writing SSM pointer {name}", Name=name, Value=ami_id, Type="String",
                DataType="aws:ec2:image", Overwrite=True,
                Description=f"eks-ami-pipeline: AMI of {image_name} on channel {channel}")
    return Pointer(name=name, image_name=image_name, channel=channel, ami_id=ami_id,
                   version=int(resp.get("Version", 0)), region=region or clients.region)


def get_pointer(clients: Clients, prefix: str, image_name: str, channel: str,
                region: str | None = None) -> Pointer | None:
    """The pointer, or None if it was never written."""
    name = pointer_name(prefix, image_name, channel)
    try:
        resp = clients.client("ssm", region=region).get_parameter(Name=name)
    except ClientError as err:
        if error_code(err) == "ParameterNotFound":
            return None
        raise _refused(err, f"reading SSM pointer {name}") from err
    return _from_param(resp["Parameter"], prefix, region or clients.region)


def list_pointers(clients: Clients, prefix: str, region: str | None = None) -> list[Pointer]:
    """Every pointer under ``prefix`` (paged), sorted by name."""
    ssm = clients.client("ssm", region=region)
    root = "/" + prefix.strip("/")
    out: list[Pointer] = []
    paginator = ssm.get_paginator("get_parameters_by_path")
    try:
        for page in paginator.paginate(Path=root, Recursive=True):
            for param in page.get("Parameters", []):
                ptr = _from_param(param, prefix, region or clients.region)
                if ptr is not None:
                    out.append(ptr)
    except ClientError as err:
        raise _refused(err, f"listing SSM pointers under {root}") from err
    return sorted(out, key=lambda p: p.name)


def ssm_reference(image_id: str | None) -> str | None:
    """The parameter a ``resolve:ssm:NAME[:version|:label]`` image id reads (its ARN form
    turned into the name), or None for a plain AMI id."""
    if not image_id or not image_id.startswith(RESOLVE_SSM):
        return None
    name = image_id[len(RESOLVE_SSM):]
    if name.startswith("arn:"):
        name = "/" + name.split(":parameter/", 1)[-1]
    return name


class ImageIdResolver:
    """A launch template ``ImageId`` to the AMI id it launches now: plain ids unchanged,
    ``resolve:ssm:`` ids through one GetParameter per parameter (cached), None when the
    parameter does not resolve (logged)."""

    def __init__(self, ssm: Any) -> None:
        self._ssm = ssm
        self._cache: dict[str, str | None] = {}

    def __call__(self, image_id: str | None) -> str | None:
        name = ssm_reference(image_id)
        if name is None:
            return image_id
        if name not in self._cache:
            try:
                value = self._ssm.get_parameter(Name=name)["Parameter"]["Value"]
                self._cache[name] = str(value)
            except (ClientError, BotoCoreError) as err:
                log.info("launch template image %s does not resolve: %s", image_id,
                         error_code(err) or err)
                self._cache[name] = None
        return self._cache[name]


def _refused(err: ClientError, what: str) -> AwsCallError:
    e = err.response.get("Error", {})
    return AwsCallError(f"AWS refused {what}: {e.get('Code')}: {e.get('Message')}",
                        code=str(e.get("Code") or ""),
                        operation=str(getattr(err, "operation_name", "") or ""))


def _from_param(param: dict[str, Any], prefix: str, region: str) -> Pointer | None:
    name = param["Name"]
    rest = name[len("/" + prefix.strip("/")):].strip("/").split("/")
    if len(rest) != 2:
        return None  # not one of ours (a build record or something deeper)
    modified = param.get("LastModifiedDate")
    return Pointer(name=name, image_name=rest[0], channel=rest[1], ami_id=param.get("Value", ""),
                   version=int(param.get("Version", 0)), region=region,
                   last_modified=modified.isoformat() if isinstance(modified, datetime) else "")
