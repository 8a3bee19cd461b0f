"""Allowed AMIs: would the account's setting block the AMI publish is about to name?

EC2's Allowed AMIs setting (per account and Region; AWS-FACTS §7,
AWSEC2/latest/UserGuide/ec2-allowed-amis.html): ``GetAllowedImagesSettings`` answers ``State``
``disabled | audit-mode | enabled`` and up to 10 ``ImageCriteria``. An AMI is allowed when it
matches *any* criterion, and a criterion when *every* field it sets matches (``ImageProviders``:
``amazon``/``aws-marketplace``/``aws-backup-vault`` by owner alias or a 12-digit owner id;
``ImageNames`` with ``*``/``?``; ``MarketplaceProductCodes``; ``CreationDateCondition.
MaximumDaysSinceCreated``; ``DeprecationTimeCondition.MaximumDaysSinceDeprecated``). AMIs owned
by the calling account are never restricted.

Publish costs nothing extra while the setting is ``disabled``: ``DescribeImages`` (publish's first
call) carries ``ImageAllowed`` only when the setting is ``enabled`` or ``audit-mode``. Only an
``ImageAllowed: false`` (or an AMI that cannot be found) makes :func:`image_problem` read the
setting, to say which criterion blocks it: ``enabled`` refuses the publish (exit 2, nothing
created), ``audit-mode`` is a warning (instances would still launch, and are logged).

The other regions of a build hold copies this account made (CopyImage), which it owns, so the
setting cannot block them.
"""
from __future__ import annotations

import datetime as _dt
import fnmatch
from dataclasses import dataclass
from typing import Any

from pipeline.aws.clients import call

__all__ = ["AllowedVerdict", "FACTS", "image_problem", "hidden_problem", "blocking_reasons",
           "settings"]

#: The DescribeImages fields the check reads.
FACTS = ("ImageId", "ImageAllowed", "OwnerId", "ImageOwnerAlias", "Name", "CreationDate",
         "DeprecationTime", "ProductCodes")


@dataclass(frozen=True, slots=True)
class AllowedVerdict:
    """What the setting means for one AMI: a refusal, a warning, or neither."""

    state: str
    refusal: str | None = None
    warning: str | None = None


def settings(ec2: Any) -> dict[str, Any]:
    """GetAllowedImagesSettings of ``ec2``'s region (``State``, ``ImageCriteria``)."""
    resp = call(ec2.get_allowed_images_settings, what="reading the Allowed AMIs setting")
    return {"State": resp.get("State", "disabled"), "ImageCriteria": resp.get("ImageCriteria") or []}


def _parse(text: Any) -> _dt.datetime | None:
    if not text:
        return None
    if isinstance(text, _dt.datetime):
        return text if text.tzinfo else text.replace(tzinfo=_dt.timezone.utc)
    try:
        when = _dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=_dt.timezone.utc)


def _unmet(image: dict[str, Any], c: dict[str, Any], now: _dt.datetime) -> str | None:
    """The first field of criterion ``c`` that ``image`` does not meet (None: it matches)."""
    providers = c.get("ImageProviders") or []
    alias = image.get("ImageOwnerAlias") or ""
    if providers and not any(p == image.get("OwnerId") or p == alias for p in providers):
        return f"ImageProviders {providers} (the AMI's owner is {image.get('OwnerId')}" + \
            (f", alias {alias})" if alias else ")")
    names = c.get("ImageNames") or []
    if names and not any(fnmatch.fnmatchcase(image.get("Name") or "", n) for n in names):
        return f"ImageNames {names} (the AMI is named {image.get('Name')!r})"
    codes = c.get("MarketplaceProductCodes") or []
    own = {p.get("ProductCodeId") for p in image.get("ProductCodes") or []}
    if codes and not own & set(codes):
        return f"MarketplaceProductCodes {codes}"
    days = (c.get("CreationDateCondition") or {}).get("MaximumDaysSinceCreated")
    created = _parse(image.get("CreationDate"))
    if days is not None and (created is None or (now - created).days > int(days)):
        age = f"{(now - created).days} days old" if created else "no creation date"
        return f"CreationDateCondition.MaximumDaysSinceCreated {days} (the AMI is {age})"
    dep_days = (c.get("DeprecationTimeCondition") or {}).get("MaximumDaysSinceDeprecated")
    deprecated = _parse(image.get("DeprecationTime"))
    if dep_days is not None and deprecated is not None and deprecated <= now and (
            int(dep_days) == 0 or (now - deprecated).days > int(dep_days)):
        return f"DeprecationTimeCondition.MaximumDaysSinceDeprecated {dep_days} (deprecated " \
               f"{deprecated:%Y-%m-%d})"
    return None


def blocking_reasons(image: dict[str, Any], criteria: list[dict[str, Any]],
                     now: _dt.datetime | None = None) -> list[str]:
    """Why no criterion allows ``image``: one line per criterion (empty: one allows it)."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    if not criteria:
        return ["no image criteria are set, so only this account's own AMIs are allowed"]
    out = []
    for i, c in enumerate(criteria, 1):
        why = _unmet(image, c, now)
        if why is None:
            return []
        out.append(f"criterion {i}: {why}")
    return out


def image_problem(ec2: Any, image: dict[str, Any], region: str) -> AllowedVerdict:
    """The verdict for a DescribeImages ``image`` (no call unless ``ImageAllowed`` is false)."""
    allowed = image.get("ImageAllowed")
    if allowed is None or allowed is True:
        return AllowedVerdict("disabled" if allowed is None else "allows it")
    s = settings(ec2)
    reasons = "; ".join(blocking_reasons(image, s["ImageCriteria"])) or "no criterion matches"
    what = (f"AMI {image.get('ImageId')} is not allowed by the Allowed AMIs setting in {region} "
            f"({reasons})")
    if s["State"] == "enabled":
        return AllowedVerdict("enabled", refusal=(
            f"{what}; instances cannot launch from it: add a criterion that allows it "
            "(aws ec2 replace-image-criteria-in-allowed-images-settings) or publish an AMI "
            "this account owns"))
    return AllowedVerdict(s["State"], warning=(
        f"{what}; the setting is in audit-mode, so launches are only logged; they will fail "
        "once it is enabled"))


def hidden_problem(ec2: Any, image_id: str, region: str) -> str | None:
    """For an AMI DescribeImages did not return: the setting's explanation, if it hides it."""
    try:
        s = settings(ec2)
    except Exception:  # noqa: BLE001 - the not-found error stays the main message
        return None
    if s["State"] != "enabled":
        return None
    return (f"AMI {image_id} is not visible in {region}: the Allowed AMIs setting is enabled and "
            "hides AMIs no image criterion allows; add a criterion for it (aws ec2 "
            "get-allowed-images-settings shows them) or publish an AMI this account owns")
