"""What the release train's gate reads from AWS, as typed records.

- :func:`pointer_history`: every version of a channel pointer (SSM GetParameterHistory,
  paged), oldest first: when each AMI arrived on the channel. Soak time is measured
  from here, never from the AMI's CreationDate (a copy or an old AMI put back on a
  channel is "new" to the channel, not to EC2).
- :func:`image_facts`: one DescribeImages of an AMI in one Region: state, DeprecationTime,
  tags (the blocklist tag among them).
- :func:`instance_health`: instances launched from an AMI and their EC2 status checks.
  DescribeInstanceStatus has no ``image-id`` filter (its filters are zone, event,
  state and status ones, botocore model), so the instances are found with
  DescribeInstances ``Filters=[image-id, instance-state-name]`` and their checks read
  with DescribeInstanceStatus by id (100 ids a call).
- :func:`tag_resources`: CreateTags on AMIs and snapshots (the blocklist mark).
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any, Sequence

from botocore.exceptions import ClientError

from pipeline.aws.clients import Clients, call, error_code
from pipeline.core import tags as T
from pipeline.core.errors import AwsCallError

__all__ = ["PointerVersion", "ImageFacts", "InstanceHealth", "pointer_history", "image_facts",
           "instance_health", "tag_resources"]

_STATUS_PAGE = 100


@dataclass(frozen=True, slots=True)
class PointerVersion:
    """One value a pointer held, and since when."""

    version: int
    ami_id: str
    modified_at: _dt.datetime


@dataclass(frozen=True, slots=True)
class ImageFacts:
    region: str
    image_id: str
    state: str
    deprecation_time: str | None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def blocked(self) -> str | None:
        return self.tags.get(T.BLOCKED) or None

    def deprecated(self, now: _dt.datetime) -> bool:
        if not self.deprecation_time:
            return False
        when = _dt.datetime.fromisoformat(self.deprecation_time.replace("Z", "+00:00"))
        return when <= now


@dataclass(frozen=True, slots=True)
class InstanceHealth:
    instance_id: str
    state: str
    launch_time: _dt.datetime | None
    instance_status: str          # ok | impaired | initializing | insufficient-data | not-applicable
    system_status: str

    @property
    def passes_status_checks(self) -> bool:
        return self.state == "running" and self.instance_status == "ok" \
            and self.system_status == "ok"


def _aware(value: Any) -> _dt.datetime:
    if isinstance(value, _dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)
    return _dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def pointer_history(clients: Clients, name: str, region: str | None = None) -> list[PointerVersion]:
    """Every version of the SSM parameter ``name``, oldest first ([] if it never existed)."""
    ssm = clients.client("ssm", region=region)
    out: list[PointerVersion] = []
    try:
        for page in ssm.get_paginator("get_parameter_history").paginate(Name=name):
            for p in page.get("Parameters") or []:
                out.append(PointerVersion(version=int(p.get("Version", 0)),
                                          ami_id=str(p.get("Value", "")),
                                          modified_at=_aware(p["LastModifiedDate"])))
    except ClientError as err:
        if error_code(err) == "ParameterNotFound":
            return []
        raise AwsCallError(f"AWS refused reading the history of {name} in "
                           f"{region or clients.region}: {error_code(err)}") from err
    return sorted(out, key=lambda v: v.version)


def image_facts(clients: Clients, region: str, image_id: str) -> ImageFacts | None:
    """The AMI's state, deprecation time and tags in ``region`` (None when it is not there)."""
    ec2 = clients.client("ec2", region=region)
    try:
        images = ec2.describe_images(ImageIds=[image_id]).get("Images") or []
    except ClientError as err:
        if error_code(err).startswith("InvalidAMIID"):
            return None
        raise AwsCallError(f"AWS refused describing {image_id} in {region}: "
                           f"{error_code(err)}") from err
    if not images:
        return None
    img = images[0]
    return ImageFacts(region=region, image_id=image_id, state=str(img.get("State", "")),
                      deprecation_time=img.get("DeprecationTime") or None,
                      tags=T.from_tag_list(img.get("Tags")))


def instance_health(clients: Clients, region: str, image_id: str) -> list[InstanceHealth]:
    """Pending or running instances launched from ``image_id`` with their status checks."""
    ec2 = clients.client("ec2", region=region)
    found: dict[str, dict[str, Any]] = {}
    try:
        for page in ec2.get_paginator("describe_instances").paginate(Filters=[
                {"Name": "image-id", "Values": [image_id]},
                {"Name": "instance-state-name", "Values": ["pending", "running"]}]):
            for res in page.get("Reservations") or []:
                for inst in res.get("Instances") or []:
                    found[inst["InstanceId"]] = inst
    except ClientError as err:
        raise AwsCallError(f"AWS refused listing the instances of {image_id} in {region}: "
                           f"{error_code(err)}") from err
    ids = sorted(found)
    statuses: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), _STATUS_PAGE):
        resp = call(ec2.describe_instance_status, InstanceIds=ids[start:start + _STATUS_PAGE],
                    IncludeAllInstances=True,
                    what=f"reading the status checks of the instances of {image_id} in {region}")
        for s in resp.get("InstanceStatuses") or []:
            statuses[s["InstanceId"]] = s
    out = []
    for iid in ids:
        inst, st = found[iid], statuses.get(iid, {})
        launched = inst.get("LaunchTime")
        out.append(InstanceHealth(
            instance_id=iid, state=str((inst.get("State") or {}).get("Name", "")),
            launch_time=_aware(launched) if launched else None,
            instance_status=str((st.get("InstanceStatus") or {}).get("Status", "insufficient-data")),
            system_status=str((st.get("SystemStatus") or {}).get("Status", "insufficient-data"))))
    return out


def tag_resources(clients: Clients, region: str, resource_ids: Sequence[str],
                  tags: dict[str, str]) -> None:
    """CreateTags on the given AMIs/snapshots in ``region``."""
    if not resource_ids:
        raise ValueError("tag_resources: no resource ids")
    call(clients.client("ec2", region=region).create_tags, Resources=list(resource_ids),
         Tags=T.to_tag_list(tags), what=f"tagging {', '.join(resource_ids)} in {region}")
