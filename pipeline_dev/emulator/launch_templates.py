"""Launch templates as EC2 documents them, where moto 5.2 bends them (AWS-FACTS §3).

- CreateLaunchTemplate / CreateLaunchTemplateVersion: ``ClientToken`` idempotency (same
  token and parameters → the same template/version; other parameters →
  ``IdempotentParameterMismatch``), ``VersionDescription`` ≤ 255 characters, ``UserData``
  base64 and ≤ 16 KB decoded (AWSEC2/latest/UserGuide/instancedata-add-user-data.html:
  "limited to 16 KB, in raw form, before it is base64-encoded"); ``SourceVersion``
  (number, ``$Latest`` or ``$Default``): the new version inherits that version's
  parameters and the request's ``LaunchTemplateData`` overrides them one by one.
- DescribeLaunchTemplateVersions: newest first (as the AWS CLI example shows),
  ``Versions`` with numbers/``$Latest``/``$Default``, ``MinVersion``/``MaxVersion``,
  ``MaxResults`` 1–200 with ``NextToken``, a few filters (image-id, instance-type,
  is-default-version); without an id/name only ``$Latest``/``$Default`` across all
  templates. Deleted versions are gone (numbers are never reused). ``ResolveAlias`` (also
  on CreateLaunchTemplateVersion) shows the AMI id behind a ``resolve:ssm:`` ImageId.
- DescribeLaunchTemplates: ``MaxResults`` 5–200 / ``NextToken`` instead of moto's silent 15.
- ModifyLaunchTemplate: ``DefaultVersion`` a number, ``$Latest`` or ``$Default``.
- DeleteLaunchTemplateVersions: at most 200; the default version is refused and unknown or
  already-deleted ones reported per version (codes from the botocore model enum).

Deleted versions are recorded in ``template._emu_deleted_versions`` (shared with
:mod:`.image_references`, which reads it).
"""
from __future__ import annotations

import base64
import binascii
import copy
import json
from typing import Any

from moto.core.responses import ActionResult
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.responses import EC2Response
from moto.ec2.utils import parse_user_data

__all__ = ["install"]

USER_DATA_LIMIT = 16 * 1024
_orig: dict[str, Any] = {}


def _err(code: str, message: str) -> EC2ClientError:
    return EC2ClientError(code, message)


def _deleted(template: Any) -> set[int]:
    if not hasattr(template, "_emu_deleted_versions"):
        template._emu_deleted_versions = set()
    return template._emu_deleted_versions  # type: ignore[no-any-return]


def _live(template: Any) -> list[Any]:
    gone = _deleted(template)
    return [v for v in template.versions if v.number not in gone]


def _resolve(template: Any, ref: Any) -> Any:
    """A version by number, ``$Latest`` or ``$Default``, among the live versions."""
    live = _live(template)
    text = str(ref)
    if text.lower() == "$latest":
        return live[-1]
    if text.lower() == "$default":
        return template.versions[template.default_version_number - 1]
    for v in live:
        if text.isdigit() and v.number == int(text):
            return v
    raise _err("InvalidLaunchTemplateId.VersionNotFound",
               f"Could not find launch template version {text} for launch template "
               f"{template.id}.")


def _template(self: Any) -> Any:
    name = self._get_param("LaunchTemplateName")
    tid = self._get_param("LaunchTemplateId")
    if name and tid:
        raise _err("InvalidParameterCombination",
                   "You can specify either a launch template ID or a launch template name "
                   "in the request, but not both.")
    if not name and not tid:
        raise _err("MissingParameter",
                   "The request must contain the parameter LaunchTemplateName or "
                   "LaunchTemplateId")
    return (self.ec2_backend.get_launch_template_by_name(name) if name
            else self.ec2_backend.get_launch_template(tid))


def _check_description(desc: Any) -> None:
    if desc is not None and len(str(desc)) > 255:
        raise _err("InvalidParameterValue",
                   f"Value for parameter VersionDescription is too long ({len(str(desc))} "
                   "characters); the maximum is 255.")


def _check_user_data(data: dict[str, Any]) -> None:
    raw = data.get("UserData")
    if raw is None:
        return
    try:
        decoded = base64.b64decode(str(raw), validate=True)
    except (binascii.Error, ValueError):
        raise _err("InvalidUserData.Malformed", "Invalid BASE64 encoding of user data.")
    if len(decoded) > USER_DATA_LIMIT:
        raise _err("InvalidParameterValue",
                   f"User data is limited to {USER_DATA_LIMIT} bytes (got {len(decoded)}).")


def _tokens(backend: Any) -> dict[str, tuple[str, Any]]:
    return backend.__dict__.setdefault("_emu_lt_tokens", {})  # type: ignore[no-any-return]


def _fingerprint(*parts: Any) -> str:
    return json.dumps(parts, sort_keys=True, default=str)


def _resolved(self: Any, data: dict[str, Any]) -> dict[str, Any]:
    """``ResolveAlias``: show the AMI id behind a ``resolve:ssm:`` ImageId."""
    image = str(data.get("ImageId") or "")
    if not image.startswith("resolve:ssm:"):
        return data
    from pipeline_dev.emulator.amis import _resolve_ssm_image

    return {**data, "ImageId": _resolve_ssm_image(self.ec2_backend, image)}


def _version_view(self: Any, template: Any, v: Any) -> dict[str, Any]:
    data = v.data
    if str(self._get_param("ResolveAlias", "false")).lower() == "true":
        data = _resolved(self, data)
    return {
        "CreateTime": v.create_time,
        "CreatedBy": f"arn:{self.partition}:iam::{self.current_account}:root",
        "DefaultVersion": template.is_default(v),
        "LaunchTemplateData": data,
        "LaunchTemplateId": template.id,
        "LaunchTemplateName": template.name,
        "VersionDescription": v.description,
        "VersionNumber": v.number,
    }


def _template_view(self: Any, t: Any) -> dict[str, Any]:
    return {
        "CreateTime": t.create_time,
        "CreatedBy": f"arn:{self.partition}:iam::{self.current_account}:root",
        "DefaultVersionNumber": t.default_version_number,
        "LatestVersionNumber": _live(t)[-1].number,
        "LaunchTemplateId": t.id, "LaunchTemplateName": t.name, "Tags": t.tags,
    }


def _page(items: list[Any], token: str | None, max_results: int | None,
          default: int) -> tuple[list[Any], str | None]:
    try:
        start = int(base64.b64decode(token).decode()) if token else 0
    except (ValueError, binascii.Error):
        raise _err("InvalidPaginationToken", f"Invalid pagination token: {token}")
    size = max_results or default
    page = items[start:start + size]
    nxt = start + size
    return page, (base64.b64encode(str(nxt).encode()).decode() if nxt < len(items) else None)


# --------------------------------------------------------------------------- handlers


def create_launch_template(self: Any) -> ActionResult:
    name = self._get_param("LaunchTemplateName")
    data = self._get_param("LaunchTemplateData", {}) or {}
    _check_description(self._get_param("VersionDescription"))
    _check_user_data(data)
    token = self._get_param("ClientToken")
    fp = _fingerprint("create", name, data, self._get_param("VersionDescription"),
                      self._get_param("TagSpecifications"))
    tokens = _tokens(self.ec2_backend)
    if token and token in tokens:
        old_fp, tid = tokens[token]
        if old_fp != fp:
            raise _err("IdempotentParameterMismatch",
                       f"The client token {token} was already used with different parameters.")
        if tid in self.ec2_backend.launch_templates:
            t = self.ec2_backend.launch_templates[tid]
            return ActionResult({"LaunchTemplate": _template_view(self, t)})
    result = _orig["create_launch_template"](self)
    if token:
        tokens[token] = (fp, result.result["LaunchTemplate"]["LaunchTemplateId"])
    return result  # type: ignore[no-any-return]


def create_launch_template_version(self: Any) -> ActionResult:
    template = _template(self)
    desc = self._get_param("VersionDescription")
    _check_description(desc)
    data = self._get_param("LaunchTemplateData", {}) or {}
    _check_user_data(data)
    source = self._get_param("SourceVersion")
    token = self._get_param("ClientToken")
    fp = _fingerprint("version", template.id, data, desc, source)
    tokens = _tokens(self.ec2_backend)
    if token and token in tokens:
        old_fp, ref = tokens[token]
        if old_fp != fp:
            raise _err("IdempotentParameterMismatch",
                       f"The client token {token} was already used with different parameters.")
        tmpl, number = ref
        if tmpl == template.id and number not in _deleted(template):
            v = template.versions[number - 1]
            return ActionResult({"LaunchTemplateVersion": _version_view(self, template, v)})
    self.error_on_dryrun()
    if source is not None:
        merged = copy.deepcopy(_resolve(template, source).data)
        merged.update(data)
        data = merged
    if data.get("UserData") is not None and not hasattr(data["UserData"], "decode"):
        data["UserData"] = parse_user_data(data["UserData"])
    version = template.create_version(data, desc)
    if token:
        tokens[token] = (fp, (template.id, version.number))
    return ActionResult({"LaunchTemplateVersion": _version_view(self, template, version)})


def _matches(template: Any, v: Any, filters: dict[str, list[str]]) -> bool:
    for name, values in filters.items():
        if name == "image-id":
            got = v.data.get("ImageId")
        elif name == "instance-type":
            got = v.data.get("InstanceType")
        elif name == "is-default-version":
            got = str(template.is_default(v)).lower()
        else:
            raise _err("InvalidParameterValue", f"The filter '{name}' is not supported here.")
        if got not in values:
            return False
    return True


def describe_launch_template_versions(self: Any) -> ActionResult:
    self.error_on_dryrun()
    versions = [str(v) for v in self._get_param("Versions", []) or []]
    min_v = self._get_param("MinVersion")
    max_v = self._get_param("MaxVersion")
    max_results = self._get_int_param("MaxResults")
    if max_results is not None and not 1 <= max_results <= 200:
        raise _err("InvalidParameterValue",
                   f"Value ( {max_results} ) for parameter maxResults is invalid. "
                   "Expecting a value between 1 and 200.")
    filters = {f["Name"]: list(f.get("Values") or [])
               for f in self._get_param("Filters", []) or []}
    has_template = bool(self._get_param("LaunchTemplateName")
                        or self._get_param("LaunchTemplateId"))
    pairs: list[tuple[Any, Any]] = []
    if not has_template:
        if not versions or any(v.lower() not in ("$latest", "$default") for v in versions):
            raise _err("InvalidParameterValue",
                       "To describe the launch template data for all your launch templates, "
                       "for 'Versions' specify '$Latest', '$Default', or both, and omit "
                       "'LaunchTemplateId', 'LaunchTemplateName', and version numbers.")
        for t in self.ec2_backend.launch_templates.values():
            seen = set()
            for ref in versions:
                v = _resolve(t, ref)
                if v.number not in seen:
                    seen.add(v.number)
                    pairs.append((t, v))
    else:
        template = _template(self)
        if versions:
            chosen = {}
            for ref in versions:
                v = _resolve(template, ref)
                chosen[v.number] = v
            candidates = list(chosen.values())
        else:
            candidates = _live(template)
        if min_v is not None:
            candidates = [v for v in candidates if v.number >= int(min_v)]
        if max_v is not None:
            candidates = [v for v in candidates if v.number <= int(max_v)]
        candidates.sort(key=lambda v: v.number, reverse=True)  # newest first
        pairs = [(template, v) for v in candidates]
    pairs = [(t, v) for t, v in pairs if _matches(t, v, filters)]
    page, token = _page(pairs, self._get_param("NextToken"), max_results, 1000)
    result: dict[str, Any] = {
        "LaunchTemplateVersions": [_version_view(self, t, v) for t, v in page]}
    if token:
        result["NextToken"] = token
    return ActionResult(result)


describe_launch_template_versions._emu_hides_deleted = True  # type: ignore[attr-defined]


def describe_launch_templates(self: Any) -> ActionResult:
    self.error_on_dryrun()
    max_results = self._get_int_param("MaxResults")
    if max_results is not None and not 5 <= max_results <= 200:
        raise _err("InvalidParameterValue",
                   f"Value ( {max_results} ) for parameter maxResults is invalid. "
                   "Expecting a value between 5 and 200.")
    names = self._get_param("LaunchTemplateNames", []) or []
    ids = self._get_param("LaunchTemplateIds", []) or []
    backend = self.ec2_backend
    for n in names:
        if n not in backend.launch_template_name_to_ids:
            raise _err("InvalidLaunchTemplateName.NotFoundException",
                       "At least one of the launch templates specified in the request does "
                       "not exist.")
    for i in ids:
        if i not in backend.launch_templates:
            raise _err("InvalidLaunchTemplateId.NotFound",
                       f"The specified launch template, with template ID {i}, does not exist.")
    templates = backend.describe_launch_templates(
        template_names=names, template_ids=ids, filters=self._filters_from_querystring())
    page, token = _page(templates, self._get_param("NextToken"), max_results, 1000)
    result: dict[str, Any] = {"LaunchTemplates": [_template_view(self, t) for t in page]}
    if token:
        result["NextToken"] = token
    return ActionResult(result)


def modify_launch_template(self: Any) -> ActionResult:
    self.error_on_dryrun()
    template = _template(self)
    ref = self._get_param("DefaultVersion")
    if ref is not None:
        template.default_version_number = _resolve(template, ref).number
    return ActionResult({"LaunchTemplate": _template_view(self, template)})


def delete_launch_template_versions(self: Any) -> ActionResult:
    self.error_on_dryrun()
    template = _template(self)
    numbers = [str(v) for v in self._get_param("Versions", []) or []]
    if not numbers or len(numbers) > 200:
        raise _err("InvalidParameterValue",
                   f"You can delete between 1 and 200 launch template versions per request "
                   f"(got {len(numbers)}).")
    gone = _deleted(template)
    ok, bad = [], []
    base = {"LaunchTemplateId": template.id, "LaunchTemplateName": template.name}
    for raw in numbers:
        num = int(raw) if raw.isdigit() else 0
        if num < 1 or num > len(template.versions) or num in gone:
            bad.append({**base, "VersionNumber": num, "ResponseError": {
                "Code": "launchTemplateVersionDoesNotExist",
                "Message": f"The specified launch template version {raw} does not exist"}})
        elif num == template.default_version_number:
            bad.append({**base, "VersionNumber": num, "ResponseError": {
                "Code": "unexpectedError",
                "Message": "You cannot delete the default version of a launch template. To "
                           "delete it, delete the launch template."}})
        else:
            gone.add(num)
            ok.append({**base, "VersionNumber": num})
    return ActionResult({"SuccessfullyDeletedLaunchTemplateVersions": ok,
                         "UnsuccessfullyDeletedLaunchTemplateVersions": bad})


def install() -> None:
    """Replace moto's launch-template handlers on ``EC2Response`` (idempotent)."""
    if not _orig:
        _orig["create_launch_template"] = EC2Response.create_launch_template
    for fn in (create_launch_template, create_launch_template_version,
               describe_launch_template_versions, describe_launch_templates,
               modify_launch_template, delete_launch_template_versions):
        setattr(EC2Response, fn.__name__, fn)
