"""Newer EC2 AMI features moto 5.2 lacks: Allowed AMIs, deregistration protection, ancestry.

Sources: the botocore ec2 model (operations and shapes named below, their documentation),
AWSEC2/latest/UserGuide/ec2-allowed-amis.html, ami-deregistration-protection.html and
ami-ancestry.html (AWS-FACTS §7).

- **Allowed AMIs** (per account and Region): ``GetAllowedImagesSettings`` → ``State``
  (``disabled`` until enabled), ``ImageCriteria``, ``ManagedBy`` ``account``;
  ``EnableAllowedImagesSettings`` (``enabled`` | ``audit-mode``), ``DisableAllowedImagesSettings``,
  ``ReplaceImageCriteriaInAllowedImagesSettings`` (≤ 10 criteria; ≤ 200 providers, ≤ 50
  names, ≤ 50 product codes each). An image is allowed when it matches any criterion, a
  criterion when every field it sets matches: ``ImageProviders`` (``amazon`` = owner alias
  amazon, ``aws-marketplace``, ``aws-backup-vault``, 12-digit owner ids), ``ImageNames``
  (``*``/``?`` wildcards), ``MarketplaceProductCodes``, ``CreationDateCondition.
  MaximumDaysSinceCreated``, ``DeprecationTimeCondition.MaximumDaysSinceDeprecated`` (0
  excludes deprecated images). "The Allowed AMIs feature does not restrict the AMIs owned by
  your account" (model): those are always allowed. With the state ``enabled`` or
  ``audit-mode`` DescribeImages carries ``ImageAllowed``; with ``enabled`` images that are
  not allowed are not listed ("can't be discovered").
- **Deregistration protection**: ``EnableImageDeregistrationProtection(ImageId,
  WithCooldown)`` / ``DisableImageDeregistrationProtection`` → ``Return "true"``;
  ``Image.DeregistrationProtection`` and DescribeImageAttribute ``deregistrationProtection``
  read ``disabled``, ``enabled``, ``enabled-with-cooldown`` or, for 24 h after disabling
  protection that had the cooldown, ``disabled-until <time>``; DeregisterImage of a
  protected image is refused (see :func:`refuse_deregistration`).
- **Ancestry**: ``SourceImageId``/``SourceImageRegion`` on CreateImage and CopyImage AMIs,
  ``SourceInstanceId`` on CreateImage AMIs; ``GetImageAncestry(ImageId)`` →
  ``ImageAncestryEntries`` from the image back to its root (``CreationDate``,
  ``ImageOwnerAlias``), stopping at a source that no longer exists.
- **LastLaunchedTime**: set by RunInstances (AWS reports it about 24 h late; here at once),
  shown by DescribeImages and DescribeImageAttribute ``lastLaunchedTime``.

:func:`install` is idempotent.
"""
from __future__ import annotations

import datetime as _dt
import fnmatch
import re
from typing import Any

__all__ = ["install", "refuse_deregistration", "configure", "record_launch"]

_config = {"cooldown_seconds": 24 * 3600.0}
_PROVIDER_RE = re.compile(r"^(amazon|aws-marketplace|aws-backup-vault|none|\d{12})$")
_NAME_RE = re.compile(r"^[A-Za-z0-9()\[\]./\-'@_*? ]{1,128}$")


def configure(*, cooldown_seconds: float | None = None) -> None:
    """The deregistration-protection cooldown (24 h on AWS; the timing profile may scale it)."""
    if cooldown_seconds is not None:
        _config["cooldown_seconds"] = float(cooldown_seconds)


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _iso(when: _dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _parse(text: str | None) -> _dt.datetime | None:
    if not text:
        return None
    try:
        when = _dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=_dt.timezone.utc)


def _err(code: str, message: str) -> Exception:
    from moto.ec2.exceptions import EC2ClientError

    return EC2ClientError(code, message)


# --------------------------------------------------------------------------- Allowed AMIs


def _settings(backend: Any) -> dict[str, Any]:
    return backend.__dict__.setdefault(  # type: ignore[no-any-return]
        "_emu_allowed_images", {"State": "disabled", "ImageCriteria": []})


def _criterion_matches(ami: Any, criterion: dict[str, Any]) -> bool:
    providers = criterion.get("ImageProviders")
    if providers:
        alias = getattr(ami, "owner_alias", None) or ""
        if not any(p == ami.owner_id or (p in ("amazon", "aws-marketplace",
                                               "aws-backup-vault") and p == alias)
                   for p in providers):
            return False
    names = criterion.get("ImageNames")
    if names and not any(fnmatch.fnmatchcase(ami.name or "", n) for n in names):
        return False
    codes = criterion.get("MarketplaceProductCodes")
    if codes and not set(codes) & set(getattr(ami, "product_codes", None) or []):
        return False
    created = (criterion.get("CreationDateCondition") or {}).get("MaximumDaysSinceCreated")
    if created is not None:
        when = _parse(ami.creation_date)
        if when is None or (_now() - when).days > int(created):
            return False
    deprecated = (criterion.get("DeprecationTimeCondition") or {}).get(
        "MaximumDaysSinceDeprecated")
    if deprecated is not None:
        when = _parse(getattr(ami, "deprecation_time", None))
        if when is not None and when <= _now() and (
                int(deprecated) == 0 or (_now() - when).days > int(deprecated)):
            return False
    return True


def image_allowed(ami: Any) -> bool | None:
    """``ImageAllowed`` as DescribeImages shows it (None while Allowed AMIs is disabled)."""
    settings = _settings(ami.ec2_backend)
    if settings["State"] == "disabled":
        return None
    if ami.owner_id == ami.ec2_backend.account_id:
        return True
    return any(_criterion_matches(ami, c) for c in settings["ImageCriteria"])


def _get_allowed_images_settings(self: Any) -> Any:
    from moto.core.responses import ActionResult

    s = _settings(self.ec2_backend)
    return ActionResult({"State": s["State"], "ImageCriteria": s["ImageCriteria"],
                         "ManagedBy": "account"})


def _enable_allowed_images_settings(self: Any) -> Any:
    from moto.core.responses import ActionResult

    state = self._get_param("AllowedImagesSettingsState")
    if state not in ("enabled", "audit-mode"):
        raise _err("InvalidParameterValue", f"Value ({state}) for parameter "
                   "AllowedImagesSettingsState is invalid. Valid values: enabled, audit-mode.")
    _settings(self.ec2_backend)["State"] = state
    return ActionResult({"AllowedImagesSettingsState": state})


def _disable_allowed_images_settings(self: Any) -> Any:
    from moto.core.responses import ActionResult

    _settings(self.ec2_backend)["State"] = "disabled"
    return ActionResult({"AllowedImagesSettingsState": "disabled"})


def _replace_image_criteria(self: Any) -> Any:
    from moto.core.responses import ActionResult

    raw = self._get_param("ImageCriteria", []) or []
    if len(raw) > 10:
        raise _err("InvalidParameterValue", f"ImageCriteria: at most 10 criteria, got {len(raw)}.")
    criteria = []
    for c in raw:
        providers = list(c.get("ImageProviders") or [])
        names = list(c.get("ImageNames") or [])
        codes = list(c.get("MarketplaceProductCodes") or [])
        if len(providers) > 200 or len(names) > 50 or len(codes) > 50:
            raise _err("InvalidParameterValue", "An image criterion allows at most 200 "
                       "ImageProviders, 50 ImageNames and 50 MarketplaceProductCodes.")
        for p in providers:
            if not _PROVIDER_RE.match(str(p)):
                raise _err("InvalidParameterValue", f"Value ({p}) for parameter ImageProviders "
                           "is invalid: use amazon, aws-marketplace, aws-backup-vault, none or "
                           "a 12-digit account ID.")
        for n in names:
            if not _NAME_RE.match(str(n)) or ("?" in n and len(n) < 3):
                raise _err("InvalidParameterValue", f"Value ({n}) for parameter ImageNames is "
                           "invalid.")
        item: dict[str, Any] = {}
        if providers:
            item["ImageProviders"] = providers
        if names:
            item["ImageNames"] = names
        if codes:
            item["MarketplaceProductCodes"] = codes
        for key, field in (("CreationDateCondition", "MaximumDaysSinceCreated"),
                           ("DeprecationTimeCondition", "MaximumDaysSinceDeprecated")):
            cond = c.get(key) or {}
            if cond.get(field) is not None:
                item[key] = {field: int(cond[field])}
        criteria.append(item)
    _settings(self.ec2_backend)["ImageCriteria"] = criteria
    return ActionResult({"ReturnValue": True})


# --------------------------------------------------------------------------- protection


def _protection(ami: Any) -> str:
    state = getattr(ami, "_emu_protection", "disabled")
    until = getattr(ami, "_emu_protection_until", None)
    if state == "cooldown":
        if until is not None and _now() < until:
            return f"disabled-until {until.strftime('%Y-%m-%dT%H:%M:%SZ')}"
        return "disabled"
    return str(state)


def refuse_deregistration(ami: Any) -> None:
    """DeregisterImage of a protected image (also during the cooldown) is refused."""
    state = _protection(ami)
    if state != "disabled":
        raise _err("OperationNotPermitted",
                   f"The image {ami.id} has deregistration protection enabled ({state}). "
                   "Disable it with DisableImageDeregistrationProtection first"
                   + (" and wait for the cooldown to end." if "until" in state else "."))


def _image(self: Any) -> Any:
    from pipeline_dev.emulator.amis import find_image

    return find_image(self.current_account, self.region, self._get_param("ImageId"))


def _enable_protection(self: Any) -> Any:
    from moto.core.responses import ActionResult

    ami = _image(self)
    cooldown = str(self._get_param("WithCooldown", "false")).lower() == "true"
    ami._emu_protection = "enabled-with-cooldown" if cooldown else "enabled"
    ami._emu_protection_until = None
    return ActionResult({"Return": "true"})


def _disable_protection(self: Any) -> Any:
    from moto.core.responses import ActionResult

    ami = _image(self)
    if getattr(ami, "_emu_protection", "disabled") == "enabled-with-cooldown":
        ami._emu_protection = "cooldown"
        ami._emu_protection_until = _now() + _dt.timedelta(seconds=_config["cooldown_seconds"])
    elif getattr(ami, "_emu_protection", "disabled") == "enabled":
        ami._emu_protection = "disabled"
    return ActionResult({"Return": "true"})


# --------------------------------------------------------------------------- ancestry


def _get_image_ancestry(self: Any) -> Any:
    from moto.core.responses import ActionResult
    from moto.ec2.models import ec2_backends

    from pipeline_dev.emulator.amis import find_image

    ami = find_image(self.current_account, self.region, self._get_param("ImageId"))
    entries, seen = [], set()
    while ami is not None and ami.id not in seen:
        seen.add(ami.id)
        entry: dict[str, Any] = {"ImageId": ami.id, "CreationDate": _parse(ami.creation_date)}
        if getattr(ami, "owner_alias", None) in ("amazon", "aws-backup-vault", "aws-marketplace"):
            entry["ImageOwnerAlias"] = ami.owner_alias
        src_id = getattr(ami, "source_image_id", None)
        src_region = getattr(ami, "source_image_region", None) or ami.ec2_backend.region_name
        if src_id:
            entry["SourceImageId"], entry["SourceImageRegion"] = src_id, src_region
        entries.append(entry)
        ami = ec2_backends[self.current_account][src_region].amis.get(src_id) if src_id else None
    return ActionResult({"ImageAncestryEntries": entries})


# --------------------------------------------------------------------------- launches


def record_launch(ec2: Any, image_id: str) -> None:
    """RunInstances: the AMI's LastLaunchedTime (AWS: about 24 h later; here at once)."""
    ami = ec2.amis.get(image_id)
    if ami is not None:
        ami._emu_last_launched = _iso(_now())


def _with_describe_images(original: Any) -> Any:

    def describe_images(self: Any) -> Any:
        from moto.core.responses import ActionResult

        result = original(self)
        if _settings(self.ec2_backend)["State"] != "enabled":
            return result
        data = dict(result.result)
        data["Images"] = [i for i in data["Images"] if image_allowed(i) is not False]
        return ActionResult(data)

    describe_images._emu_ami_features = True  # type: ignore[attr-defined]
    return describe_images


def _with_describe_image_attribute(original: Any) -> Any:

    def describe_image_attribute(self: Any) -> Any:
        from moto.core.responses import ActionResult

        name = self._get_param("Attribute")
        if name == "deregistrationProtection":
            ami = _image(self)
            return ActionResult({"ImageId": ami.id,
                                 "DeregistrationProtection": {"Value": _protection(ami)}})
        if name == "lastLaunchedTime":
            ami = _image(self)
            value = getattr(ami, "_emu_last_launched", None)
            return ActionResult({"ImageId": ami.id, "LastLaunchedTime":
                                 {"Value": value} if value else {}})
        return original(self)

    describe_image_attribute._emu_ami_features = True  # type: ignore[attr-defined]
    return describe_image_attribute


_ACTIONS = {
    "get_allowed_images_settings": _get_allowed_images_settings,
    "enable_allowed_images_settings": _enable_allowed_images_settings,
    "disable_allowed_images_settings": _disable_allowed_images_settings,
    "replace_image_criteria_in_allowed_images_settings": _replace_image_criteria,
    "enable_image_deregistration_protection": _enable_protection,
    "disable_image_deregistration_protection": _disable_protection,
    "get_image_ancestry": _get_image_ancestry,
}


def install() -> None:
    """Add the actions to ``EC2Response`` and the attributes to moto's ``Ami``."""
    from moto.ec2.models.amis import Ami
    from moto.ec2.responses import EC2Response

    for name, fn in _ACTIONS.items():
        setattr(EC2Response, name, fn)
    for name, wrap in (("describe_images", _with_describe_images),
                       ("describe_image_attribute", _with_describe_image_attribute)):
        current = getattr(EC2Response, name)
        if not getattr(current, "_emu_ami_features", False):
            setattr(EC2Response, name, wrap(current))
    Ami.image_allowed = property(image_allowed)  # type: ignore[attr-defined]
    Ami.deregistration_protection = property(_protection)  # type: ignore[attr-defined]
    Ami.last_launched_time = property(  # type: ignore[attr-defined]
        lambda self: getattr(self, "_emu_last_launched", None))
    Ami.source_instance_id = property(  # type: ignore[attr-defined]
        lambda self: getattr(self, "instance_id", None))
