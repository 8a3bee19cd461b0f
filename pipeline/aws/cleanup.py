"""The one door for destructive AWS calls.

Every terminate, deregister, delete, abort and cancel of the project goes through this
module (``tests/test_cleanup_door.py`` scans ``pipeline/`` and fails on any other).
A call acts only on resources proven to be the run's own, re-checked with a fresh
``Describe*`` *by id* just before the destructive call:

- recorded in the run's creation journal (:class:`Owner.journal`, see
  :mod:`pipeline.aws.journal`): Packer's untagged key pair and security group, the
  instance it printed, an upload id, an import task; or
- tagged with the run's build id (:data:`pipeline.core.tags.BUILD_ID`).

A resource that the fresh describe shows tagged with *another* build id is never
owned, whatever a journal says. An empty selection (``InstanceIds=[]`` means *every*
instance), a selection that is not proven, or an owner without a build id raises
:class:`~pipeline.core.errors.UnsafeSelection` and deletes nothing. Ids that the
describe no longer finds are reported as ``gone`` (removing them is already done).

One rule retries a ``DependencyViolation`` (a security group still held by a
terminating instance's interface) and one waiter waits for termination; both take
their patience from :data:`SETTLE_SECONDS`.

Results are :class:`Removal` records (``removed`` | ``gone`` | ``kept`` | ``failed``); an
AWS refusal of the destructive call itself is reported, not raised, so a sweep goes on.
``kept`` (with a ``note``) is an AMI the fresh describe shows protected against
deregistration (AWS-FACTS §7: never tried), or a snapshot that another AMI still uses.
"""
from __future__ import annotations

import logging
import time
from functools import partial
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

from pipeline.aws.clients import Clients, error_code
from pipeline.aws.images import snapshots_of
from pipeline.core import tags as T
from pipeline.core.errors import UnsafeSelection

__all__ = [
    "KINDS", "SETTLE_SECONDS", "Owner", "Resource", "Removal",
    "terminate_instances", "deregister_images", "delete_snapshots", "delete_volumes",
    "delete_security_groups", "delete_key_pairs", "delete_launch_templates",
    "delete_launch_template_versions", "delete_parameters", "delete_s3_objects",
    "abort_multipart_uploads", "cancel_import_tasks", "remove", "wait_terminated",
    "release_s3_lock", "release_ssm_lock", "delete_lock_parameter", "snapshots_of",
    "security_group_ids", "open_uploads", "object_build", "existing", "image_ids_named",
    "delete_new_template_versions", "delete_new_template", "delete_pointer_if_ours",
    "deregistration_protection", "protected_images",
]

log = logging.getLogger(__name__)

#: Resource kinds, in the order :func:`remove` acts on them (dependencies first).
KINDS = ("import-task", "instance", "image-name", "image", "snapshot", "volume", "security-group",
         "security-group-name", "key-pair", "launch-template", "parameter", "s3-object",
         "multipart-upload")

#: How long the termination wait and the DependencyViolation retry keep trying.
SETTLE_SECONDS = 120.0
_FIRST_POLL, _MAX_POLL = 0.25, 5.0


@dataclass(frozen=True, slots=True)
class Owner:
    """Who may be cleaned up: one build id and what its journal recorded.

    ``journal`` holds ``(kind, id)`` pairs; a pair there proves ownership of a resource
    that carries no build-id tag (and no other build's tag).
    """

    build_id: str
    journal: frozenset[tuple[str, str]] = frozenset()

    def recorded(self, kind: str, rid: str) -> bool:
        return (kind, rid) in self.journal


@dataclass(frozen=True, slots=True)
class Resource:
    """One resource to remove: ``kind`` (see :data:`KINDS`), id and region.

    S3 ids are ``s3://bucket/key``; a multipart upload is ``s3://bucket/key#upload-id``.
    A launch template version is not a Resource (see
    :func:`delete_launch_template_versions`).
    """

    kind: str
    id: str
    region: str = ""


@dataclass(frozen=True, slots=True)
class Removal:
    """What happened to one resource."""

    kind: str
    id: str
    region: str
    outcome: str                     # removed | gone | kept | failed
    error: str | None = None
    #: Why a resource was ``kept`` (e.g. "protected against deregistration (enabled)").
    note: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome != "failed"


# --------------------------------------------------------------------------- helpers


def _client_of(clients: Clients | Any, service: str, region: str | None) -> Any:
    """The ``service`` client of :class:`Clients` in ``region``, or the client given."""
    return clients.client(service, region=region) if isinstance(clients, Clients) else clients


def _region_of(clients: Clients | Any, region: str | None) -> str:
    if region:
        return region
    if isinstance(clients, Clients):
        return clients.region
    return str(getattr(getattr(clients, "meta", None), "region_name", "") or "")


def _refuse_empty(what: str, ids: Sequence[str]) -> list[str]:
    out = list(dict.fromkeys(i for i in ids if i))
    if not out or any(not i or not str(i).strip() for i in ids):
        raise UnsafeSelection(f"{what}: refused an empty or blank selection {list(ids)!r} "
                              "(an empty id list means every resource); nothing was deleted")
    return out


def _check_owner(owner: Owner, what: str) -> None:
    if not owner.build_id or not owner.build_id.strip():
        raise UnsafeSelection(f"{what}: refused without a build id to prove ownership; "
                              "nothing was deleted")


def _owned(owner: Owner, kind: str, rid: str, tagged: str | None) -> bool:
    """A fresh describe saw ``rid`` carrying build id ``tagged`` (None: no such tag)."""
    if tagged is not None:
        return tagged == owner.build_id
    return owner.recorded(kind, rid)


def _verify(owner: Owner, kind: str, what: str, found: Mapping[str, str | None],
            ids: Sequence[str]) -> None:
    """Raise unless every found id is the owner's (before anything is deleted)."""
    foreign = sorted(i for i in ids if i in found and not _owned(owner, kind, i, found[i]))
    if foreign:
        detail = ", ".join(f"{i} (tagged {found[i]})" if found[i] else f"{i} (untagged, "
                           "not in the journal)" for i in foreign)
        raise UnsafeSelection(f"{what}: refused: not proven to be build {owner.build_id}'s: "
                              f"{detail}; nothing was deleted", details={"refused": foreign})


def _build_tag(tag_list: Iterable[Mapping[str, str]] | None) -> str | None:
    return T.from_tag_list(tag_list).get(T.BUILD_ID)


def _not_found(err: BaseException) -> bool:
    code = error_code(err)
    return (code.endswith("NotFound") or code.endswith(".Malformed") or code in
            ("NoSuchKey", "NoSuchUpload", "404", "ParameterNotFound", "NoSuchBucket"))


def _describe_each(fn: Callable[[list[str]], dict[str, str | None]],
                   ids: list[str]) -> dict[str, str | None]:
    """``fn(ids)`` -> {id: build tag}; on a NotFound for the batch, one id at a time."""
    try:
        return fn(ids)
    except ClientError as err:
        if not _not_found(err) or len(ids) == 1:
            if _not_found(err):
                return {}
            raise
    out: dict[str, str | None] = {}
    for rid in ids:
        try:
            out.update(fn([rid]))
        except ClientError as err:
            if not _not_found(err):
                raise
    return out


def _act(kind: str, rid: str, region: str, fn: Callable[..., Any], **kw: Any) -> Removal:
    """Run one destructive call; NotFound counts as gone, anything else is reported."""
    try:
        fn(**kw)
        return Removal(kind, rid, region, "removed")
    except (ClientError, BotoCoreError) as err:
        if isinstance(err, ClientError) and _not_found(err):
            return Removal(kind, rid, region, "gone")
        msg = f"{error_code(err) or type(err).__name__}: {err}"
        log.warning("could not remove %s %s in %s: %s", kind, rid, region or "-", msg)
        return Removal(kind, rid, region, "failed", msg)


def _gone(kind: str, ids: Iterable[str], region: str) -> list[Removal]:
    return [Removal(kind, i, region, "gone") for i in ids]


def _delays() -> Iterator[float]:
    delay = _FIRST_POLL
    while True:
        yield delay
        delay = min(delay * 2, _MAX_POLL)


def _retry_dependency(attempt: Callable[[], Removal], settle: float) -> Removal:
    """The one DependencyViolation rule: retry with backoff until ``settle`` s passed."""
    deadline = time.monotonic() + settle
    for delay in _delays():
        result = attempt()
        if result.ok or "DependencyViolation" not in (result.error or "") \
                or time.monotonic() + delay > deadline:
            return result
        time.sleep(delay)
    raise AssertionError("unreachable")


def wait_terminated(ec2: Any, ids: Sequence[str], settle: float | None = None) -> None:
    """The one termination wait: until every instance in ``ids`` is terminated or gone."""
    ids = _refuse_empty("waiting for termination", ids)
    timeout = SETTLE_SECONDS if settle is None else settle
    deadline = time.monotonic() + timeout
    for delay in _delays():
        states = {i: s for i, (_, s) in _instances(ec2, list(ids)).items()}
        waiting = [i for i in ids if states.get(i, "terminated") != "terminated"]
        if not waiting:
            return
        if time.monotonic() + delay > deadline:
            raise TimeoutError(f"{', '.join(waiting)} not terminated after {timeout:.0f} s")
        time.sleep(delay)


# --------------------------------------------------------------------------- EC2


def _instances(ec2: Any, ids: list[str]) -> dict[str, tuple[str | None, str]]:
    """{id: (build tag, state)} of the instances among ``ids`` that still exist."""
    def one(batch: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for page in ec2.get_paginator("describe_instances").paginate(InstanceIds=batch):
            for res in page.get("Reservations", []):
                for inst in res.get("Instances", []):
                    out[inst["InstanceId"]] = (_build_tag(inst.get("Tags")),
                                               inst.get("State", {}).get("Name", ""))
        return out
    return _describe_each(one, ids)  # type: ignore[return-value]


def terminate_instances(clients: Clients, region: str | None, owner: Owner,
                        ids: Sequence[str], *, wait: bool = True,
                        settle: float | None = None) -> list[Removal]:
    """Terminate the owner's instances ``ids`` and (``wait``) wait until terminated."""
    what = "terminating instances"
    _check_owner(owner, what)
    ids = _refuse_empty(what, ids)
    ec2 = _client_of(clients, "ec2", region)
    reg = _region_of(clients, region)
    found = _instances(ec2, ids)
    _verify(owner, "instance", what, {i: t for i, (t, _) in found.items()}, ids)
    live = [i for i in ids if i in found and found[i][1] not in ("terminated",)]
    out = _gone("instance", [i for i in ids if i not in live], reg)
    if not live:
        return out
    res = _act("instance", ",".join(live), reg, ec2.terminate_instances, InstanceIds=live)
    if res.outcome == "failed":
        return out + [Removal("instance", i, reg, "failed", res.error) for i in live]
    if wait:
        try:
            wait_terminated(ec2, live, settle)
        except (TimeoutError, ClientError, BotoCoreError) as err:
            return out + [Removal("instance", i, reg, "failed", f"waiting for termination: {err}")
                          for i in live]
    return out + [Removal("instance", i, reg, "removed") for i in live]


def _images(ec2: Any, ids: list[str]) -> dict[str, tuple[str | None, list[str], str]]:
    """{id: (build tag, snapshots, DeregistrationProtection)} of the AMIs still there."""
    def one(batch: list[str]) -> dict[str, Any]:
        resp = ec2.describe_images(ImageIds=batch, Owners=["self"])
        return {i["ImageId"]: (_build_tag(i.get("Tags")), snapshots_of(i),
                               str(i.get("DeregistrationProtection") or "disabled"))
                for i in resp.get("Images", [])}
    return _describe_each(one, ids)  # type: ignore[return-value]


def deregistration_protection(image: Mapping[str, Any]) -> str | None:
    """The AMI's protection state when it refuses DeregisterImage, else None.

    ``DeregistrationProtection`` is ``disabled``, ``enabled``, ``enabled-with-cooldown`` or
    ``disabled-until <time>`` (the cooldown after disabling still refuses)."""
    state = str(image.get("DeregistrationProtection") or "disabled").strip()
    return None if state in ("", "disabled") else state


def protected_images(clients: Clients | Any, region: str | None,
                     ids: Sequence[str]) -> dict[str, tuple[str, list[str]]]:
    """{id: (protection state, snapshots behind it)} of the AMIs among ``ids`` that are
    protected against deregistration (a fresh describe by id; nothing is changed)."""
    if not ids:
        return {}
    found = _images(_client_of(clients, "ec2", region), list(dict.fromkeys(ids)))
    return {i: (state, snaps) for i, (_, snaps, state) in found.items()
            if deregistration_protection({"DeregistrationProtection": state})}


#: DeregisterImage errors meaning "this endpoint does not know DeleteAssociatedSnapshots".
_NO_ASSOCIATED = ("InvalidParameter", "UnknownParameter", "InvalidParameterValue",
                  "InvalidParameterCombination")


def _deregister_with_snapshots(ec2: Any, reg: str, image_id: str
                               ) -> tuple[Removal, dict[str, str] | None]:
    """DeregisterImage with ``DeleteAssociatedSnapshots=True``: (the AMI's removal,
    {snapshot: ReturnCode}); the codes are None when the endpoint does not support the
    parameter (then the AMI was deregistered without it, or not at all on failure)."""
    try:
        resp = ec2.deregister_image(ImageId=image_id, DeleteAssociatedSnapshots=True)
    except ParamValidationError:                    # an SDK that predates the parameter
        return _act("image", image_id, reg, ec2.deregister_image, ImageId=image_id), None
    except (ClientError, BotoCoreError) as err:
        if isinstance(err, ClientError) and error_code(err) in _NO_ASSOCIATED:
            return _act("image", image_id, reg, ec2.deregister_image, ImageId=image_id), None
        if isinstance(err, ClientError) and _not_found(err):
            return Removal("image", image_id, reg, "gone"), None
        msg = f"{error_code(err) or type(err).__name__}: {err}"
        log.warning("could not remove image %s in %s: %s", image_id, reg or "-", msg)
        return Removal("image", image_id, reg, "failed", msg), None
    results = resp.get("DeleteSnapshotResults")
    if results is None:                              # parameter ignored: fall back
        return Removal("image", image_id, reg, "removed"), None
    return Removal("image", image_id, reg, "removed"), {
        str(r.get("SnapshotId")): str(r.get("ReturnCode") or "") for r in results}


def deregister_images(clients: Clients, region: str | None, owner: Owner,
                      ids: Sequence[str], *, with_snapshots: bool = False) -> list[Removal]:
    """Deregister the owner's AMIs; ``with_snapshots`` also deletes the snapshots behind
    them that are the owner's (tagged or journaled) and that no other AMI uses.

    An AMI the fresh describe shows protected against deregistration is ``kept`` (never
    tried). With ``with_snapshots``, when every snapshot behind an AMI is the owner's, one
    ``DeregisterImage(DeleteAssociatedSnapshots=True)`` removes both (AWS skips snapshots
    another AMI uses: those are ``kept``); a snapshot AWS did not delete for another
    reason, or every snapshot when the endpoint does not support the parameter, goes the
    explicit way (DeleteSnapshot after the same ownership and in-use checks)."""
    what = "deregistering AMIs"
    _check_owner(owner, what)
    ids = _refuse_empty(what, ids)
    ec2 = _client_of(clients, "ec2", region)
    reg = _region_of(clients, region)
    found = _images(ec2, ids)
    _verify(owner, "image", what, {i: t for i, (t, _, _) in found.items()}, ids)
    out = _gone("image", [i for i in ids if i not in found], reg)
    present = [i for i in ids if i in found]
    snaps: dict[str, str | None] = {}
    if with_snapshots:
        behind_all = list(dict.fromkeys(s for i in present for s in found[i][1]))
        snaps = _snapshots(ec2, behind_all) if behind_all else {}
    behind: list[str] = []
    for image_id in present:
        _, image_snaps, state = found[image_id]
        guard = deregistration_protection({"DeregistrationProtection": state})
        if guard:
            note = f"protected against deregistration ({guard})"
            log.info("AMI %s in %s kept: %s", image_id, reg or "-", note)
            out.append(Removal("image", image_id, reg, "kept", note=note))
            continue
        # DeleteAssociatedSnapshots deletes every snapshot behind the AMI that no other AMI
        # uses: only when each one is proven the owner's (or untagged: the AMI's own).
        whole = with_snapshots and bool(image_snaps) and all(
            s in snaps and (_owned(owner, "snapshot", s, snaps[s]) or snaps[s] is None)
            for s in image_snaps)
        if not whole:
            out.append(_act("image", image_id, reg, ec2.deregister_image, ImageId=image_id))
            behind += image_snaps
            continue
        removal, codes = _deregister_with_snapshots(ec2, reg, image_id)
        out.append(removal)
        if removal.outcome == "failed":
            continue
        if codes is None:
            behind += image_snaps
            continue
        for sid in image_snaps:
            code = codes.get(sid)
            if code == "success":
                out.append(Removal("snapshot", sid, reg, "removed"))
            elif code == "skipped":
                note = "used by another AMI (DeleteAssociatedSnapshots: skipped)"
                log.info("snapshot %s stays: %s", sid, note)
                out.append(Removal("snapshot", sid, reg, "kept", note=note))
            else:                        # missing-permissions | internal-error | client-error
                log.info("snapshot %s not deleted with %s (%s): deleting it explicitly",
                         sid, image_id, code or "not reported")
                behind.append(sid)
    if with_snapshots and behind:
        mine = [s for s in dict.fromkeys(behind) if s in snaps
                and (_owned(owner, "snapshot", s, snaps[s]) or snaps[s] is None)]
        # An untagged snapshot behind the owner's own AMI is the AMI's (CreateImage and
        # RegisterImage make it); one tagged for another build is never touched.
        in_use = _snapshots_in_use(ec2, mine)
        keep = [s for s in mine if s in in_use]
        if keep:
            log.info("snapshots %s stay: another AMI uses them", ", ".join(keep))
            out += [Removal("snapshot", s, reg, "kept", note="used by another AMI")
                    for s in keep]
        todo = [s for s in mine if s not in in_use]
        if todo:
            out += _delete_snapshots_verified(ec2, reg, Owner(owner.build_id, owner.journal
                                                              | {("snapshot", s) for s in todo
                                                                 if snaps[s] is None}), todo)
    return out


def _snapshots_in_use(ec2: Any, snaps: list[str]) -> set[str]:
    if not snaps:
        return set()
    used: set[str] = set()
    for page in ec2.get_paginator("describe_images").paginate(
            Owners=["self"], Filters=[{"Name": "block-device-mapping.snapshot-id",
                                       "Values": snaps}]):
        for img in page.get("Images", []):
            if img.get("State") in ("deregistered",):
                continue
            used.update(s for s in snapshots_of(img) if s in snaps)
    return used


def _snapshots(ec2: Any, ids: list[str]) -> dict[str, str | None]:
    def one(batch: list[str]) -> dict[str, str | None]:
        resp = ec2.describe_snapshots(SnapshotIds=batch, OwnerIds=["self"])
        return {s["SnapshotId"]: _build_tag(s.get("Tags")) for s in resp.get("Snapshots", [])}
    return _describe_each(one, ids)


def _delete_snapshots_verified(ec2: Any, reg: str, owner: Owner,
                               ids: list[str]) -> list[Removal]:
    found = _snapshots(ec2, ids)
    _verify(owner, "snapshot", "deleting snapshots", found, ids)
    return _gone("snapshot", [i for i in ids if i not in found], reg) + [
        _act("snapshot", s, reg, ec2.delete_snapshot, SnapshotId=s) for s in ids if s in found]


def delete_snapshots(clients: Clients, region: str | None, owner: Owner,
                     ids: Sequence[str]) -> list[Removal]:
    """Delete the owner's snapshots."""
    what = "deleting snapshots"
    _check_owner(owner, what)
    ids = _refuse_empty(what, ids)
    return _delete_snapshots_verified(_client_of(clients, "ec2", region),
                                      _region_of(clients, region), owner, ids)


def delete_volumes(clients: Clients, region: str | None, owner: Owner,
                   ids: Sequence[str]) -> list[Removal]:
    """Delete the owner's volumes (an attached one fails and is reported)."""
    what = "deleting volumes"
    _check_owner(owner, what)
    ids = _refuse_empty(what, ids)
    ec2 = _client_of(clients, "ec2", region)
    reg = _region_of(clients, region)
    return _delete_verified(
        owner, what, "volume", reg, ids,
        lambda batch: _build_tags(ec2.describe_volumes(VolumeIds=batch), "Volumes", "VolumeId"),
        lambda v: _retry_dependency(partial(_act, "volume", v, reg, ec2.delete_volume,
                                            VolumeId=v), SETTLE_SECONDS))


def _build_tags(resp: Mapping[str, Any], items: str, id_key: str) -> dict[str, str | None]:
    """{resource id: its build-id tag} of one Describe answer."""
    return {x[id_key]: _build_tag(x.get("Tags")) for x in resp.get(items, [])}


def _delete_verified(owner: Owner, what: str, kind: str, region: str, ids: list[str],
                     describe: Callable[[list[str]], dict[str, str | None]],
                     delete: Callable[[str], Removal]) -> list[Removal]:
    """Describe ``ids`` afresh (``describe`` a batch to {id: build tag}), refuse unless all
    found are the owner's, then ``delete`` each one found; the rest are ``gone``."""
    found = _describe_each(describe, ids)
    _verify(owner, kind, what, found, ids)
    return _gone(kind, [i for i in ids if i not in found], region) + [
        delete(i) for i in ids if i in found]


def delete_security_groups(clients: Clients, region: str | None, owner: Owner,
                           ids: Sequence[str], *, settle: float | None = None) -> list[Removal]:
    """Delete the owner's security groups (by group id), retrying DependencyViolation."""
    what = "deleting security groups"
    _check_owner(owner, what)
    ids = _refuse_empty(what, ids)
    ec2 = _client_of(clients, "ec2", region)
    reg = _region_of(clients, region)
    wait = SETTLE_SECONDS if settle is None else settle
    return _delete_verified(
        owner, what, "security-group", reg, ids,
        lambda batch: _build_tags(ec2.describe_security_groups(GroupIds=batch),
                                  "SecurityGroups", "GroupId"),
        lambda g: _retry_dependency(partial(_act, "security-group", g, reg,
                                            ec2.delete_security_group, GroupId=g), wait))


def image_ids_named(clients: Clients | Any, region: str | None,
                    patterns: Sequence[str]) -> dict[str, str]:
    """{AMI id: name} of this account's AMIs whose name matches one of ``patterns``
    (a filtered describe; a bake journals its AMI name pattern, which ends with the
    build id's random tail, before Packer's CreateImage can answer)."""
    patterns = [p for p in patterns if p and p.strip("*")]
    if not patterns:
        return {}
    ec2 = _client_of(clients, "ec2", region)
    resp = ec2.describe_images(Owners=["self"], Filters=[{"Name": "name",
                                                          "Values": list(patterns)}])
    return {i["ImageId"]: i.get("Name", "") for i in resp.get("Images", [])
            if i.get("State") != "deregistered"}


def security_group_ids(clients: Clients, region: str | None, names: Sequence[str]) -> dict[str, str]:
    """{group name: group id} for the groups named ``names`` (a filtered describe)."""
    names = [n for n in names if n]
    if not names:
        return {}
    ec2 = _client_of(clients, "ec2", region)
    resp = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": list(names)}])
    return {g["GroupName"]: g["GroupId"] for g in resp.get("SecurityGroups", [])}


def delete_key_pairs(clients: Clients, region: str | None, owner: Owner,
                     names: Sequence[str]) -> list[Removal]:
    """Delete the owner's key pairs (by name)."""
    what = "deleting key pairs"
    _check_owner(owner, what)
    names = _refuse_empty(what, names)
    ec2 = _client_of(clients, "ec2", region)
    reg = _region_of(clients, region)
    return _delete_verified(
        owner, what, "key-pair", reg, names,
        lambda batch: _build_tags(ec2.describe_key_pairs(KeyNames=batch), "KeyPairs", "KeyName"),
        lambda n: _act("key-pair", n, reg, ec2.delete_key_pair, KeyName=n))


def delete_launch_templates(clients: Clients, region: str | None, owner: Owner,
                            ids: Sequence[str]) -> list[Removal]:
    """Delete the owner's launch templates (by template id)."""
    what = "deleting launch templates"
    _check_owner(owner, what)
    ids = _refuse_empty(what, ids)
    ec2 = _client_of(clients, "ec2", region)
    reg = _region_of(clients, region)

    def one(batch: list[str]) -> dict[str, str | None]:
        resp = ec2.describe_launch_templates(LaunchTemplateIds=batch)
        return {t["LaunchTemplateId"]: _build_tag(t.get("Tags"))
                for t in resp.get("LaunchTemplates", [])}
    found = _describe_each(one, ids)
    _verify(owner, "launch-template", what, found, ids)
    return _gone("launch-template", [i for i in ids if i not in found], reg) + [
        _act("launch-template", t, reg, ec2.delete_launch_template, LaunchTemplateId=t)
        for t in ids if t in found]


_VERSION_BATCH = 200     # DeleteLaunchTemplateVersions takes at most 200 versions


def delete_launch_template_versions(clients: Clients, region: str | None, template_id: str,
                                    versions: Sequence[int], *, managed_names: Iterable[str],
                                    protect_default: bool = True) -> dict[int, str | None]:
    """Delete ``versions`` of a launch template this tool manages (prune's old versions).

    Proof: a fresh DescribeLaunchTemplates by id shows the template's name among
    ``managed_names`` (the configured templates) and its default/latest versions, which
    are never deleted. Returns {version: None (deleted) | error text}.
    """
    what = f"deleting versions of launch template {template_id}"
    if not template_id:
        raise UnsafeSelection(f"{what}: no template id; nothing was deleted")
    numbers = sorted({int(v) for v in versions})
    if not numbers:
        raise UnsafeSelection(f"{what}: refused an empty version list; nothing was deleted")
    ec2 = _client_of(clients, "ec2", region)
    resp = ec2.describe_launch_templates(LaunchTemplateIds=[template_id])
    found = resp.get("LaunchTemplates") or []
    if not found or found[0].get("LaunchTemplateName") not in set(managed_names):
        raise UnsafeSelection(f"{what}: refused: the template is not one of the configured "
                              "templates; nothing was deleted")
    lt = found[0]
    fixed = {int(lt["DefaultVersionNumber"]), int(lt["LatestVersionNumber"])} \
        if protect_default else set()
    if fixed & set(numbers):
        raise UnsafeSelection(f"{what}: refused: versions {sorted(fixed & set(numbers))} are "
                              "the default or latest; nothing was deleted")
    out: dict[int, str | None] = {}
    for i in range(0, len(numbers), _VERSION_BATCH):
        batch = numbers[i:i + _VERSION_BATCH]
        try:
            r = ec2.delete_launch_template_versions(LaunchTemplateId=template_id,
                                                    Versions=[str(n) for n in batch])
        except (ClientError, BotoCoreError) as err:
            out.update({n: f"{error_code(err) or type(err).__name__}: {err}" for n in batch})
            continue
        for ok in r.get("SuccessfullyDeletedLaunchTemplateVersions", []):
            out[int(ok["VersionNumber"])] = None
        for bad in r.get("UnsuccessfullyDeletedLaunchTemplateVersions", []):
            info = bad.get("ResponseError", {})
            out[int(bad["VersionNumber"])] = f"{info.get('Code')}: {info.get('Message')}"
    return out


def cancel_import_tasks(clients: Clients, region: str | None, owner: Owner,
                        ids: Sequence[str], *, reason: str = "cancelled by eks-ami-pipeline"
                        ) -> list[Removal]:
    """Cancel the owner's active VM Import tasks."""
    what = "cancelling import tasks"
    _check_owner(owner, what)
    ids = _refuse_empty(what, ids)
    ec2 = _client_of(clients, "ec2", region)
    reg = _region_of(clients, region)

    def one(batch: list[str]) -> dict[str, Any]:
        resp = ec2.describe_import_image_tasks(ImportTaskIds=batch)
        return {t["ImportTaskId"]: (_build_tag(t.get("Tags")), t.get("Status", ""))
                for t in resp.get("ImportImageTasks", [])}
    try:
        found: dict[str, Any] = _describe_each(one, ids)
    except (ClientError, BotoCoreError) as err:
        # The journal alone proves a task this run started; a cancel names one task, so
        # a failing describe (the reason the run gives up on it) must not block it.
        if not all(owner.recorded("import-task", i) for i in ids):
            raise
        log.warning("describing import tasks %s failed (%s); cancelling the journaled "
                    "task(s) anyway", ", ".join(ids), error_code(err) or err)
        found = {i: (None, "active") for i in ids}
    _verify(owner, "import-task", what, {i: t for i, (t, _) in found.items()}, ids)
    out = []
    for tid in ids:
        if tid not in found or found[tid][1] not in ("active", ""):
            out.append(Removal("import-task", tid, reg, "gone"))
            continue
        out.append(_act("import-task", tid, reg, ec2.cancel_import_task, ImportTaskId=tid,
                        CancelReason=reason[:255]))
    return out


# --------------------------------------------------------------------------- SSM


def delete_parameters(clients: Clients, region: str | None, owner: Owner,
                      names: Sequence[str]) -> list[Removal]:
    """Delete the owner's SSM parameters.

    Proof: recorded in the journal, tagged with the build id, or named for the build
    (the last path segment is the build id: its journal and build record).
    """
    what = "deleting SSM parameters"
    _check_owner(owner, what)
    names = _refuse_empty(what, names)
    ssm = _client_of(clients, "ssm", region)
    reg = _region_of(clients, region)
    found: dict[str, str | None] = {}
    for i in range(0, len(names), 10):                 # GetParameters takes 10 names
        resp = ssm.get_parameters(Names=names[i:i + 10])
        for p in resp.get("Parameters", []):
            found[p["Name"]] = None
    for name in found:
        if name.rstrip("/").rsplit("/", 1)[-1] == owner.build_id \
                or owner.recorded("parameter", name):
            found[name] = owner.build_id if not owner.recorded("parameter", name) else None
            continue
        try:
            tl = ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=name)
            found[name] = _build_tag(tl.get("TagList"))
        except ClientError:
            found[name] = None
    _verify(owner, "parameter", what, found, names)
    return _gone("parameter", [n for n in names if n not in found], reg) + [
        _act("parameter", n, reg, ssm.delete_parameter, Name=n) for n in names if n in found]


def release_ssm_lock(clients: Clients | Any, name: str, token: str) -> bool:
    """Delete the lock parameter ``name`` if (fresh read) it still holds ``token``.

    False when the lock is gone or held by someone else (nothing deleted).
    """
    if not name or not token:
        raise UnsafeSelection("releasing an SSM lock: no parameter name or token; nothing "
                              "was deleted")
    ssm = _client_of(clients, "ssm", None)
    try:
        value = ssm.get_parameter(Name=name)["Parameter"]["Value"]
    except ClientError as err:
        if _not_found(err):
            return False
        raise
    if token not in value:
        return False
    ssm.delete_parameter(Name=name)
    return True


def _delete_parameter_reading(ssm: Any, name: str, value: str) -> bool:
    """Delete parameter ``name`` only while a fresh read shows ``value``; False when it is
    gone or reads something else (nothing deleted)."""
    try:
        current = ssm.get_parameter(Name=name)["Parameter"]["Value"]
    except ClientError as err:
        if _not_found(err):
            return False
        raise
    if current != value:
        return False
    try:
        ssm.delete_parameter(Name=name)
    except ClientError as err:
        if _not_found(err):
            return False
        raise
    return True


def delete_lock_parameter(clients: Clients | Any, name: str, value: str) -> bool:
    """Delete the (stale) lock parameter ``name`` only if it still reads ``value``."""
    if not name or not value:
        raise UnsafeSelection("removing a stale SSM lock: no name or value; nothing deleted")
    return _delete_parameter_reading(_client_of(clients, "ssm", None), name, value)


# --------------------------------------------------------------------------- S3


def _split_s3(url: str) -> tuple[str, str, str]:
    """``s3://bucket/key[#upload]`` -> (bucket, key, upload id or '')."""
    if not url.startswith("s3://"):
        raise UnsafeSelection(f"{url!r}: expected s3://bucket/key; nothing was deleted")
    bucket, _, rest = url[len("s3://"):].partition("/")
    key, sep, upload = rest.rpartition("#") if "#" in rest else (rest, "", "")
    if not bucket or not key:
        raise UnsafeSelection(f"{url!r}: no bucket or key; nothing was deleted")
    return bucket, key, upload


def release_s3_lock(clients: Clients | Any, bucket: str, key: str, etag: str) -> bool:
    """Delete the lock object only while its ETag is still ``etag`` (conditional delete).

    False when the lock was taken over or is gone.
    """
    if not bucket or not key or not etag:
        raise UnsafeSelection("releasing an S3 lock: bucket, key and ETag are required; "
                              "nothing was deleted")
    s3 = _s3_of(clients)
    try:
        s3.delete_object(Bucket=bucket, Key=key, IfMatch=etag)
    except ClientError as err:
        if error_code(err) in ("PreconditionFailed", "412", "NoSuchKey", "404"):
            return False
        raise
    return True


def _s3_of(clients: Any) -> Any:
    """An S3 client from :class:`Clients` (or the S3 client itself)."""
    return clients.client("s3") if isinstance(clients, Clients) else clients


def _object_build(s3: Any, bucket: str, key: str) -> tuple[bool, str | None]:
    """(exists, build id from the object tag or ``build-id`` metadata)."""
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as err:
        if _not_found(err):
            return False, None
        raise
    meta = {k.lower(): v for k, v in (head.get("Metadata") or {}).items()}
    if meta.get("build-id"):
        return True, meta["build-id"]
    try:
        tagset = s3.get_object_tagging(Bucket=bucket, Key=key).get("TagSet", [])
    except ClientError:
        tagset = []
    return True, _build_tag(tagset)


#: (exists, build id) of an S3 object, from its ``build-id`` metadata or build-id tag.
object_build = _object_build


def delete_s3_objects(clients: Clients | Any, owner: Owner,
                      urls: Sequence[str]) -> list[Removal]:
    """Delete the owner's objects ``s3://bucket/key`` (tagged/metadata build id, or journal).

    ``clients`` may also be an S3 client."""
    what = "deleting S3 objects"
    _check_owner(owner, what)
    urls = _refuse_empty(what, urls)
    s3 = _s3_of(clients)
    found: dict[str, str | None] = {}
    for url in urls:
        bucket, key, _ = _split_s3(url)
        exists, build = _object_build(s3, bucket, key)
        if exists:
            found[url] = build
    _verify(owner, "s3-object", what, found, urls)
    out = _gone("s3-object", [u for u in urls if u not in found], "s3")
    for url in [u for u in urls if u in found]:
        bucket, key, _ = _split_s3(url)
        out.append(_act("s3-object", url, "s3", s3.delete_object, Bucket=bucket, Key=key))
    return out


def open_uploads(clients: Clients | Any, bucket: str, key: str) -> list[dict[str, Any]]:
    """The open multipart uploads on exactly ``key`` (ListMultipartUploads by prefix)."""
    s3 = _s3_of(clients)
    out: list[dict[str, Any]] = []
    kw: dict[str, Any] = {"Bucket": bucket, "Prefix": key}
    while True:
        try:
            resp = s3.list_multipart_uploads(**kw)
        except ClientError as err:
            if _not_found(err):
                return out
            raise
        out += [u for u in resp.get("Uploads", []) if u.get("Key") == key]
        if not resp.get("IsTruncated"):
            return out
        kw.update(KeyMarker=resp.get("NextKeyMarker"),
                  UploadIdMarker=resp.get("NextUploadIdMarker"))


def abort_multipart_uploads(clients: Clients | Any, owner: Owner,
                            urls: Sequence[str]) -> list[Removal]:
    """Abort the owner's multipart uploads ``s3://bucket/key#upload-id``.

    S3 cannot tag an open upload, so only the journal proves it (``multipart-upload``
    entries), re-checked against ListMultipartUploads.
    """
    what = "aborting multipart uploads"
    _check_owner(owner, what)
    urls = _refuse_empty(what, urls)
    s3 = _s3_of(clients)
    found: dict[str, str | None] = {}
    for url in urls:
        bucket, key, upload = _split_s3(url)
        if not upload:
            raise UnsafeSelection(f"{what}: {url} names no upload id; nothing was deleted")
        if any(u["UploadId"] == upload for u in open_uploads(s3, bucket, key)):
            found[url] = None
    _verify(owner, "multipart-upload", what, found, urls)
    out = _gone("multipart-upload", [u for u in urls if u not in found], "s3")
    for url in [u for u in urls if u in found]:
        bucket, key, upload = _split_s3(url)
        out.append(_act("multipart-upload", url, "s3", s3.abort_multipart_upload,
                        Bucket=bucket, Key=key, UploadId=upload))
    return out


# --------------------------------------------------------------------------- all kinds


def existing(clients: Clients, resources: Iterable[Resource]) -> set[tuple[str, str]]:
    """Which of ``resources`` still exist (describes by id only; nothing is changed).

    A ``security-group-name`` exists when a group of that name does; an instance that is
    terminated and an import task that is no longer active count as gone."""
    out: set[tuple[str, str]] = set()
    groups: dict[tuple[str, str], list[str]] = {}
    for r in resources:
        groups.setdefault((r.kind, r.region), [])
        if r.id and r.id not in groups[(r.kind, r.region)]:
            groups[(r.kind, r.region)].append(r.id)
    for (kind, region), ids in groups.items():
        if not ids:
            continue
        reg = region or None
        try:
            if kind == "instance":
                found = {i for i, (_, st) in _instances(_client_of(clients, "ec2", reg),
                                                         ids).items() if st != "terminated"}
            elif kind == "image":
                found = set(_images(_client_of(clients, "ec2", reg), ids))
            elif kind == "snapshot":
                found = set(_snapshots(_client_of(clients, "ec2", reg), ids))
            elif kind == "security-group-name":
                found = set(security_group_ids(clients, reg, ids))
            elif kind == "image-name":
                found = {p for p in ids if image_ids_named(clients, reg, [p])}
            elif kind in ("volume", "security-group", "key-pair", "launch-template"):
                ec2 = _client_of(clients, "ec2", reg)
                op, arg, key, field_ = {
                    "volume": ("describe_volumes", "VolumeIds", "Volumes", "VolumeId"),
                    "security-group": ("describe_security_groups", "GroupIds",
                                       "SecurityGroups", "GroupId"),
                    "key-pair": ("describe_key_pairs", "KeyNames", "KeyPairs", "KeyName"),
                    "launch-template": ("describe_launch_templates", "LaunchTemplateIds",
                                        "LaunchTemplates", "LaunchTemplateId")}[kind]

                def one(batch: list[str], op: str = op, arg: str = arg, key: str = key,
                        field_: str = field_, ec2: Any = ec2) -> dict[str, str | None]:
                    return {x[field_]: None for x in getattr(ec2, op)(**{arg: batch})[key]}
                found = set(_describe_each(one, ids))
            elif kind == "parameter":
                ssm = _client_of(clients, "ssm", reg)
                found = {p["Name"] for i in range(0, len(ids), 10)
                         for p in ssm.get_parameters(Names=ids[i:i + 10])["Parameters"]}
            elif kind == "s3-object":
                s3 = _s3_of(clients)
                found = {u for u in ids if _object_build(s3, *_split_s3(u)[:2])[0]}
            elif kind == "multipart-upload":
                found = set()
                for u in ids:
                    bucket, key, upload = _split_s3(u)
                    if any(x["UploadId"] == upload for x in open_uploads(clients, bucket, key)):
                        found.add(u)
            elif kind == "import-task":
                ec2 = _client_of(clients, "ec2", reg)
                found = set()
                for tid in ids:
                    try:
                        tasks = ec2.describe_import_image_tasks(ImportTaskIds=[tid])
                    except ClientError as err:
                        if _not_found(err):
                            continue
                        raise
                    if any(t.get("Status") == "active" for t in tasks.get("ImportImageTasks", [])):
                        found.add(tid)
            else:
                found = set(ids)
        except (ClientError, BotoCoreError) as err:
            log.warning("could not check %s %s: %s (counted as existing)", kind, ids, err)
            found = set(ids)
        out.update((kind, i) for i in found)
    return out


def remove(clients: Clients, owner: Owner, resources: Iterable[Resource], *,
           settle: float | None = None, protect: Iterable[str] = ()) -> list[Removal]:
    """Remove ``resources`` of ``owner`` in dependency order (import tasks and instances
    first, security groups after the instances, uploads last).

    Ownership is checked per kind and region before that kind's calls; a refusal
    (:class:`UnsafeSelection`) of one group is reported as ``failed`` for its members and
    the other groups still run. A ``security-group-name`` (the name Packer prints for its
    temporary group) is resolved to the group's id by a filtered describe and that id
    counts as journaled. Ids in ``protect`` are never acted on.
    """
    groups: dict[tuple[str, str], list[str]] = {}
    keep = set(protect)
    resources = [r for r in resources if r.id not in keep]
    named = [r for r in resources if r.kind == "security-group-name"]
    if named:
        extra: set[tuple[str, str]] = set()
        for region in sorted({r.region for r in named}):
            names = [r.id for r in named if r.region == region]
            try:
                found = security_group_ids(clients, region or None, names)
            except (ClientError, BotoCoreError) as err:
                log.warning("could not look up security groups %s: %s", names, err)
                continue
            for gid in found.values():
                extra.add(("security-group", gid))
                resources.append(Resource("security-group", gid, region))
        owner = Owner(owner.build_id, owner.journal | frozenset(extra))
        resources = [r for r in resources if r.kind != "security-group-name"]
    patterns = [r for r in resources if r.kind == "image-name"]
    if patterns:
        more: set[tuple[str, str]] = set()
        for region in sorted({r.region for r in patterns}):
            try:
                found_images = image_ids_named(clients, region or None,
                                               [r.id for r in patterns if r.region == region])
            except (ClientError, BotoCoreError) as err:
                log.warning("could not look up AMIs by name: %s", err)
                continue
            for image_id in found_images:
                if image_id not in keep:
                    more.add(("image", image_id))
                    resources.append(Resource("image", image_id, region))
        owner = Owner(owner.build_id, owner.journal | frozenset(more))
        resources = [r for r in resources if r.kind != "image-name"]
    for r in resources:
        if r.kind not in KINDS:
            raise UnsafeSelection(f"removing {r.kind} {r.id}: unknown kind; nothing was deleted")
        groups.setdefault((r.kind, r.region), [])
        if r.id not in groups[(r.kind, r.region)]:
            groups[(r.kind, r.region)].append(r.id)
    out: list[Removal] = []
    for kind in KINDS:
        for (k, region), ids in sorted(groups.items()):
            if k != kind:
                continue
            reg = region or None
            try:
                if kind == "instance":
                    out += terminate_instances(clients, reg, owner, ids, settle=settle)
                elif kind == "image":
                    out += deregister_images(clients, reg, owner, ids, with_snapshots=True)
                elif kind == "snapshot":
                    out += delete_snapshots(clients, reg, owner, ids)
                elif kind == "volume":
                    out += delete_volumes(clients, reg, owner, ids)
                elif kind == "security-group":
                    out += delete_security_groups(clients, reg, owner, ids, settle=settle)
                elif kind == "key-pair":
                    out += delete_key_pairs(clients, reg, owner, ids)
                elif kind == "launch-template":
                    out += delete_launch_templates(clients, reg, owner, ids)
                elif kind == "parameter":
                    out += delete_parameters(clients, reg, owner, ids)
                elif kind == "s3-object":
                    out += delete_s3_objects(clients, owner, ids)
                elif kind == "multipart-upload":
                    out += abort_multipart_uploads(clients, owner, ids)
                elif kind == "import-task":
                    out += cancel_import_tasks(clients, reg, owner, ids)
            except UnsafeSelection as err:
                log.error("%s", err)
                out += [Removal(kind, i, region, "failed", str(err)) for i in ids]
            except (ClientError, BotoCoreError) as err:
                msg = f"describing before removal: {error_code(err) or type(err).__name__}: {err}"
                out += [Removal(kind, i, region, "failed", msg) for i in ids]
    return out


# =========================================================================== publish
# Section owned by the publish-safety work (launch template versions, parameter
# restore/delete for publish/promote/rollback). Functions below are appended there.


# --- publish transaction undo
# (publish, promote and rollback undo only what their own transaction created, re-read
# just before the destructive call; see pipeline/publish/transaction.py)


def delete_new_template_versions(clients: Clients, region: str | None, template_name: str,
                                 after_version: int, description: str) -> list[int]:
    """Delete the versions of ``template_name`` numbered above ``after_version`` whose
    description is exactly ``description`` (the version a publish transaction created:
    its description names the AMI, build and user-data hash) and that are not the
    default. Re-read just before the delete; [] when there is none (the create never
    reached AWS). Raises when AWS refuses the delete."""
    if not template_name or not description or after_version < 0:
        raise UnsafeSelection("undoing a publish: no template, description or version "
                              "bound; nothing was deleted")
    ec2 = clients.client("ec2", region=region)
    try:
        resp = ec2.describe_launch_template_versions(
            LaunchTemplateName=template_name, MinVersion=str(after_version + 1))
    except ClientError as err:
        if _not_found(err) or "NotFound" in error_code(err):
            return []
        raise
    ours = [v for v in resp.get("LaunchTemplateVersions", [])
            if int(v["VersionNumber"]) > after_version and not v.get("DefaultVersion")
            and (v.get("VersionDescription") or "") == description]
    if not ours:
        return []
    tid = ours[0]["LaunchTemplateId"]
    numbers = sorted(int(v["VersionNumber"]) for v in ours)
    r = ec2.delete_launch_template_versions(LaunchTemplateId=tid,
                                            Versions=[str(n) for n in numbers])
    bad = r.get("UnsuccessfullyDeletedLaunchTemplateVersions") or []
    if bad:
        info = bad[0].get("ResponseError", {})
        raise UnsafeSelection(f"deleting version {bad[0].get('VersionNumber')} of "
                              f"{template_name}: {info.get('Code')}: {info.get('Message')}")
    return numbers


def delete_new_template(clients: Clients, region: str | None, template_name: str,
                        description: str, managed_by: str) -> str | None:
    """Delete launch template ``template_name`` that a publish transaction created: a
    fresh describe shows it tagged ``managed_by``, with one version whose description is
    ``description``. None when it does not exist; raises (nothing deleted) otherwise."""
    if not template_name or not description:
        raise UnsafeSelection("undoing a publish: no template name or description; "
                              "nothing was deleted")
    ec2 = clients.client("ec2", region=region)
    try:
        lt = ec2.describe_launch_templates(LaunchTemplateNames=[template_name])[
            "LaunchTemplates"][0]
    except ClientError as err:
        if "NotFound" in error_code(err) or _not_found(err):
            return None
        raise
    except IndexError:
        return None
    tags = {t["Key"]: t["Value"] for t in lt.get("Tags") or []}
    versions = ec2.describe_launch_template_versions(
        LaunchTemplateId=lt["LaunchTemplateId"]).get("LaunchTemplateVersions", [])
    if tags.get(T.MANAGED_BY) != managed_by or len(versions) != 1 \
            or (versions[0].get("VersionDescription") or "") != description:
        raise UnsafeSelection(f"undoing a publish: launch template {template_name} is not the "
                              "one this run created; it was left alone")
    ec2.delete_launch_template(LaunchTemplateId=lt["LaunchTemplateId"])
    return str(lt["LaunchTemplateId"])


def delete_pointer_if_ours(clients: Clients, name: str, value: str, *,
                           region: str | None = None) -> bool:
    """Delete the channel pointer ``name`` that a publish transaction created, only while
    a fresh read shows it still names ``value`` (our AMI). False when it is gone or
    names another AMI (nothing deleted)."""
    if not name or not value:
        raise UnsafeSelection("undoing a pointer move: no name or value; nothing deleted")
    return _delete_parameter_reading(clients.client("ssm", region=region), name, value)
