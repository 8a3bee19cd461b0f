"""EC2 actions moto 5.2 lacks that ``prune`` needs: image references and AMI deprecation.

- ``DescribeImageReferences`` (AWSEC2/latest/APIReference/API_DescribeImageReferences.html,
  botocore model): 1-10 ``ImageIds``; ``IncludeAllResourceTypes`` (every type with the
  defaults) and/or ``ResourceTypes`` (their options override the defaults); unknown types,
  options on other types, bad ``state-name`` values and ``version-depth`` outside 1-10000
  are InvalidParameterValue. ``ec2:Instance``: instances in every state by default
  (terminated included) or the ``state-name`` ones; ``ec2:LaunchTemplate``: the newest
  ``version-depth`` versions (default 10); ``ssm:Parameter``: the account's parameters
  whose current value is the image id (the public ``/aws/...`` ones are AWS's, not the
  account's); Image Builder recipes do not exist here. ``MaxResults`` >= 5 with
  ``NextToken`` paging. Each reference is ``{ImageId, ResourceType, Arn}``.
- ``EnableImageDeprecation`` / ``DisableImageDeprecation``: store ``DeprecationTime`` on
  the image (shown by DescribeImages); ``DeprecateAt`` must be in the future, as on AWS.
- ``DeleteLaunchTemplateVersions`` (moto answers HTTP 500): at most 200 versions per
  call; the default version cannot be deleted (``unexpectedError`` in the unsuccessful
  list), unknown ones are ``launchTemplateVersionDoesNotExist`` (the model's error codes).
  Deleted versions disappear from DescribeLaunchTemplateVersions. moto keeps versions in
  a list indexed by number, so they are hidden rather than removed.

- ``ListMultipartUploads``: moto reports every upload as initiated in 2010; the real
  start time is recorded when the upload is created and reported instead, so the age
  of an unfinished upload (``reap``) means something.

:func:`install` patches moto's ``EC2Response`` class; it is idempotent and works on a
running in-process server (moto looks actions up on every request). Actions another
emulator module already provides are left alone.
"""
from __future__ import annotations

import datetime as _dt
from typing import Any

__all__ = ["install"]

_DEFAULT_VERSION_DEPTH = 10  # ResourceTypeOption: version-depth default 10
_MAX_IMAGE_IDS = 10


def _ssm_parameters(account: str, region: str) -> list[tuple[str, str]]:
    from moto.ssm.models import ssm_backends

    params = ssm_backends[account][region]._parameters
    out = []
    for name, versions in dict.items(params):
        if versions:
            out.append((name, str(versions[-1].value)))
    return out


_TYPES = ("ec2:Instance", "ec2:LaunchTemplate", "ssm:Parameter", "imagebuilder:ImageRecipe",
          "imagebuilder:ContainerRecipe")
_STATES = ("pending", "running", "shutting-down", "terminated", "stopping", "stopped")
_OPTIONS = {"ec2:Instance": "state-name", "ec2:LaunchTemplate": "version-depth"}


def _bad(message: str) -> Exception:
    from moto.ec2.exceptions import InvalidParameterValueError

    return InvalidParameterValueError(message)


def _reference_types(self: Any) -> dict[str, dict[str, list[str]]]:
    """The resource types to check with their options (model defaults, then the request's)."""
    include_all = str(self._get_param("IncludeAllResourceTypes", "false")).lower() == "true"
    requested = self._get_param("ResourceTypes", []) or []
    if not include_all and not requested:
        raise _bad("Either IncludeAllResourceTypes or ResourceTypes must be specified")
    types: dict[str, dict[str, list[str]]] = {t: {} for t in _TYPES} if include_all else {}
    for rt in requested:
        rtype = rt.get("ResourceType")
        if rtype not in _TYPES:
            raise _bad(f"Value ({rtype}) for parameter ResourceType is invalid. Valid values: "
                       f"{', '.join(_TYPES)}")
        opts: dict[str, list[str]] = {}
        for o in rt.get("ResourceTypeOptions") or []:
            name, values = o.get("OptionName"), [str(v) for v in o.get("OptionValues") or []]
            if _OPTIONS.get(rtype) != name:
                raise _bad(f"The option {name} is not valid for resource type {rtype}; "
                           "options are valid only for ec2:Instance (state-name) and "
                           "ec2:LaunchTemplate (version-depth)")
            if name == "state-name" and (not values or set(values) - set(_STATES)):
                raise _bad(f"Invalid state-name values {values}: use {', '.join(_STATES)}")
            if name == "version-depth" and (len(values) != 1 or not values[0].isdigit()
                                            or not 1 <= int(values[0]) <= 10000):
                raise _bad(f"Invalid version-depth {values}: one integer between 1 and 10000")
            opts[name] = values
        types[rtype] = opts
    return types


def _describe_image_references(self: Any) -> Any:
    import base64
    import binascii
    import hashlib
    import json

    from moto.core.responses import ActionResult

    image_ids = self._get_param("ImageIds", []) or []
    if not image_ids or len(image_ids) > _MAX_IMAGE_IDS:
        raise _bad(f"ImageIds: expected 1 to {_MAX_IMAGE_IDS} image ids, got {len(image_ids)}")
    max_results = self._get_int_param("MaxResults")
    if max_results is not None and max_results < 5:
        raise _bad(f"MaxResults must be at least 5, got {max_results}")
    types = _reference_types(self)
    wanted = set(image_ids)
    acct, region, part = self.current_account, self.region, self.partition
    refs: list[dict[str, str]] = []
    if "ec2:Instance" in types:
        states = set(types["ec2:Instance"].get("state-name") or _STATES)   # all by default
        for inst in self.ec2_backend.all_instances():
            if inst.image_id in wanted and inst.state in states:
                refs.append({"ImageId": inst.image_id, "ResourceType": "ec2:Instance",
                             "Arn": f"arn:{part}:ec2:{region}:{acct}:instance/{inst.id}"})
    if "ec2:LaunchTemplate" in types:
        depth = int((types["ec2:LaunchTemplate"].get("version-depth") or
                     [str(_DEFAULT_VERSION_DEPTH)])[0])
        for template in self.ec2_backend.launch_templates.values():
            seen = set()
            live = [v for v in template.versions if v.number not in _deleted(template)]
            for version in live[-depth:]:
                image = version.data.get("ImageId", "")
                if image in wanted and image not in seen:
                    seen.add(image)
                    refs.append({"ImageId": image, "ResourceType": "ec2:LaunchTemplate",
                                 "Arn": f"arn:{part}:ec2:{region}:{acct}:launch-template/"
                                        f"{template.id}"})
    if "ssm:Parameter" in types:
        for name, value in _ssm_parameters(acct, region):
            if value in wanted and not name.startswith("/aws/"):   # public ones are AWS's
                refs.append({"ImageId": value, "ResourceType": "ssm:Parameter",
                             "Arn": f"arn:{part}:ssm:{region}:{acct}:parameter"
                                    f"{name if name.startswith('/') else '/' + name}"})
    # Paging: the token names the offset and the request it belongs to.
    request = hashlib.sha256(json.dumps([sorted(image_ids), sorted(types)],
                                        default=str).encode()).hexdigest()[:12]
    start = 0
    token = self._get_param("NextToken")
    if token:
        try:
            fp, offset = base64.urlsafe_b64decode(token.encode()).decode().split(":")
            start = int(offset)
            if fp != request:
                raise ValueError(token)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            from moto.ec2.exceptions import EC2ClientError

            raise EC2ClientError("InvalidPaginationToken", f"Invalid pagination token: {token}")
    size = max_results or 1000
    result: dict[str, Any] = {"ImageReferences": refs[start:start + size]}
    if start + size < len(refs):
        result["NextToken"] = base64.urlsafe_b64encode(
            f"{request}:{start + size}".encode()).decode()
    return ActionResult(result)


def _enable_image_deprecation(self: Any) -> Any:
    from moto.core.responses import ActionResult
    from moto.ec2.exceptions import InvalidParameterValueError

    image = self.ec2_backend.describe_images(ami_ids=[self._get_param("ImageId")])[0]
    raw = self._get_param("DeprecateAt")
    when = raw if isinstance(raw, _dt.datetime) else _dt.datetime.fromisoformat(
        str(raw).replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    if when <= _dt.datetime.now(_dt.timezone.utc):
        raise InvalidParameterValueError("DeprecateAt: you can't specify a date in the past")
    when = when.replace(second=0, microsecond=0)  # AWS rounds to the minute
    image.deprecation_time = when.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return ActionResult({"Return": True})


def _disable_image_deprecation(self: Any) -> Any:
    from moto.core.responses import ActionResult

    image = self.ec2_backend.describe_images(ami_ids=[self._get_param("ImageId")])[0]
    image.deprecation_time = None
    return ActionResult({"Return": True})


def _deleted(template: Any) -> set[int]:
    if not hasattr(template, "_emu_deleted_versions"):
        template._emu_deleted_versions = set()
    return template._emu_deleted_versions  # type: ignore[no-any-return]


def _delete_launch_template_versions(self: Any) -> Any:
    from moto.core.responses import ActionResult
    from moto.ec2.exceptions import InvalidParameterValueError

    name = self._get_param("LaunchTemplateName")
    tid = self._get_param("LaunchTemplateId")
    backend = self.ec2_backend
    template = (backend.get_launch_template_by_name(name) if name
                else backend.get_launch_template(tid))
    numbers = [str(v) for v in self._get_param("Versions", [])]
    if not numbers or len(numbers) > 200:
        raise InvalidParameterValueError(
            f"Versions: expected 1 to 200 version numbers, got {len(numbers)}")
    gone = _deleted(template)
    ok, bad = [], []
    for raw in numbers:
        base = {"LaunchTemplateId": template.id, "LaunchTemplateName": template.name}
        try:
            num = int(raw)
        except ValueError:
            num = -1
        if num < 1 or num > len(template.versions) or num in gone:
            bad.append({**base, "VersionNumber": max(num, 0), "ResponseError": {
                "Code": "launchTemplateVersionDoesNotExist",
                "Message": f"The specified launch template version {raw} does not exist"}})
        elif num == template.default_version_number:
            bad.append({**base, "VersionNumber": num, "ResponseError": {
                "Code": "unexpectedError",
                "Message": "You cannot delete the default version of a launch template"}})
        else:
            gone.add(num)
            ok.append({**base, "VersionNumber": num})
    return ActionResult({"SuccessfullyDeletedLaunchTemplateVersions": ok,
                         "UnsuccessfullyDeletedLaunchTemplateVersions": bad})


def _hide_deleted(original: Any) -> Any:
    """Wrap DescribeLaunchTemplateVersions so deleted versions are not listed."""

    def describe_launch_template_versions(self: Any) -> Any:
        from moto.core.responses import ActionResult

        result = original(self)
        data = dict(result.result)
        hidden = {t.id: _deleted(t) for t in self.ec2_backend.launch_templates.values()}
        data["LaunchTemplateVersions"] = [
            v for v in data.get("LaunchTemplateVersions", [])
            if v["VersionNumber"] not in hidden.get(v["LaunchTemplateId"], set())]
        return ActionResult(data)

    describe_launch_template_versions._emu_hides_deleted = True  # type: ignore[attr-defined]
    return describe_launch_template_versions


_ACTIONS = {
    "describe_image_references": _describe_image_references,
    "enable_image_deprecation": _enable_image_deprecation,
    "disable_image_deprecation": _disable_image_deprecation,
    "delete_launch_template_versions": _delete_launch_template_versions,
}


def _record_multipart_start() -> None:
    from moto.s3.models import FakeMultipart

    if getattr(FakeMultipart.__init__, "_emu_records_start", False):
        return
    original = FakeMultipart.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.initiated = _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)

    __init__._emu_records_start = True  # type: ignore[attr-defined]
    FakeMultipart.__init__ = __init__  # type: ignore[method-assign]

    from moto.s3.responses import S3Response

    listing = S3Response.list_multipart_uploads

    def list_multipart_uploads(self: Any) -> Any:
        serialized = self.serialized

        def with_start_times(action_result: Any) -> Any:
            from moto.core.responses import ActionResult

            if not isinstance(action_result.result, dict) or \
                    "Uploads" not in action_result.result:
                return serialized(action_result)          # an error, say NoSuchBucket
            data = dict(action_result.result)
            uploads = self.backend.list_multipart_uploads(self.bucket_name)
            fixed = []
            for item in data.get("Uploads", []):
                mp = uploads.get(item["UploadId"])
                when = getattr(mp, "initiated", None)
                if when is not None:
                    item = {**item, "Initiated": when.strftime("%Y-%m-%dT%H:%M:%S.000Z")}
                fixed.append(item)
            data["Uploads"] = fixed
            return serialized(ActionResult(data))

        self.serialized = with_start_times
        try:
            return listing(self)
        finally:
            self.serialized = serialized

    S3Response.list_multipart_uploads = list_multipart_uploads  # type: ignore[method-assign]


def install() -> list[str]:
    """Add the actions moto lacks to ``EC2Response``; returns the names installed now."""
    from moto.ec2.responses import EC2Response

    _record_multipart_start()
    added = []
    for name, fn in _ACTIONS.items():
        if getattr(EC2Response, name, None) is None:
            setattr(EC2Response, name, fn)
            added.append(name)
    if getattr(EC2Response, "delete_launch_template_versions") is \
            _delete_launch_template_versions:
        current = EC2Response.describe_launch_template_versions
        if not getattr(current, "_emu_hides_deleted", False):
            setattr(EC2Response, "describe_launch_template_versions", _hide_deleted(current))
    return added
