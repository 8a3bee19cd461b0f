"""Build lineage: where a build's record lives, and the links between builds, AMIs,
launch template versions and SSM pointers.

A CI run is stateless, so every link lives in AWS itself:

- **AMI and snapshot tags** (:mod:`pipeline.core.tags` keys) on every regional copy. They
  answer "which build made this AMI?" from the AMI alone, in any region, with one
  DescribeImages call. Tags are bounded (50 per resource, 256 characters per value), so
  they hold the lineage *keys*, not the whole record.
- **One durable record per build** in SSM Parameter Store, in the configured home region
  (``aws.region``), as compact JSON at::

      <ssm_prefix>/_builds/<image-name>/<build-id>

  Why SSM and not S3: the pointers Karpenter and ``resolve:ssm:`` read already live
  under ``<ssm_prefix>``, so one service, one path and one IAM statement
  (``ssm:*Parameter*`` on ``parameter<ssm_prefix>/*``) cover both; SSM needs no bucket
  (``build.s3_bucket`` is only required for VM Import, so a bake-only setup has none);
  every overwrite keeps a parameter version, which gives an audit trail of a record's
  life (started, distributed, verified) for free; GetParametersByPath lists one image's
  builds without a separate index. The cost is the size limit: 4 KB (Standard tier) is
  plenty for a record (about 1-1.5 KB), the rare larger one is written in the Advanced
  tier (8 KB, billed per parameter-month), and ``extra`` is dropped above that. Records
  up to 4 KB are written with Intelligent-Tiering (Standard, free), so a record that once
  needed Advanced can still be rewritten smaller (SSM never downgrades a parameter). Records
  sit under ``_builds`` because image names must start with a letter or digit, so the
  record tree can never collide with a pointer ``<ssm_prefix>/<image>/<channel>``.
- **The local** ``<state_dir>/manifest.json`` for CI artefacts: every build this
  workspace recorded, newest first.

Launch template versions point back at their build through their VersionDescription
(the publish step writes the build id and AMI id there) and the AMI's build-id tag.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from botocore.exceptions import ClientError

from pipeline import TOOL_NAME, __version__
from pipeline.core import tags as T
from pipeline.aws.clients import Clients, call, error_code, paged
from pipeline.aws.images import snapshots_of
from pipeline.core.config import Settings
from pipeline.core.errors import InputError, OperationFailed
from pipeline.aws.ssm import ImageIdResolver, Pointer, list_pointers, ssm_reference
from pipeline.core.naming import AMI_ID_IN_TEXT, BUILD_ID_IN_TEXT, is_image_name
from pipeline.core.records import BuildRecord, Verification

__all__ = [
    "RECORD_TREE",
    "MANIFEST_NAME",
    "TemplateVersionRef",
    "VersionLink",
    "HistoryRow",
    "HistoryResult",
    "lineage_tags",
    "record_from_tags",
    "record_parameter_name",
    "record_build",
    "tag_build",
    "write_manifest",
    "read_manifest",
    "load_build",
    "load_builds",
    "latest_successful",
    "delete_build_record",
    "find_template_versions",
    "template_version_index",
    "build_for_template_version",
    "read_pointers",
    "AmiLinks",
    "ami_links",
    "history",
]

log = logging.getLogger(__name__)

RECORD_TREE = "_builds"
MANIFEST_NAME = "manifest.json"
STANDARD_TIER_LIMIT = 4096
ADVANCED_TIER_LIMIT = 8192
EC2_TAG_LIMIT = 50
VERSIONS_PAGE = 200            # DescribeLaunchTemplateVersions MaxResults upper bound
BUILD_ID_RE = BUILD_ID_IN_TEXT
AMI_ID_RE = AMI_ID_IN_TEXT


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class TemplateVersionRef:
    """One launch template version and the AMI it launches."""

    region: str
    template_id: str
    template_name: str
    version: int
    is_default: bool
    image_id: str | None           # as stored: ami-... or resolve:ssm:<name>
    resolved_image_id: str | None  # the AMI it launches now (the pointer's value for ssm)
    description: str = ""
    created_at: str | None = None

    @property
    def via_pointer(self) -> str | None:
        """The SSM parameter the version resolves at launch, if any."""
        return ssm_reference(self.image_id)

    def label(self) -> str:
        star = "*" if self.is_default else ""
        via = f" via {self.via_pointer}" if self.via_pointer else ""
        return f"{self.template_name}:v{self.version}{star}{via}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["via_pointer"] = self.via_pointer
        return d


@dataclass(slots=True)
class VersionLink:
    """What stands behind one launch template version: its AMI and build."""

    region: str
    template_id: str
    template_name: str
    version: int
    is_default: bool
    image_id: str | None
    build_id: str | None
    build_id_from_description: str | None
    build_id_from_tag: str | None
    image_id_from_description: str | None
    build: BuildRecord | None = None
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["build"] = self.build.to_dict() if self.build else None
        return d

    def summary(self) -> str:
        head = (f"{self.template_name} v{self.version}{' (default)' if self.is_default else ''}"
                f" in {self.region}: {self.image_id or '-'} from build {self.build_id or 'unknown'}")
        return "\n".join([head] + [f"  warning: {p}" for p in self.problems])


@dataclass(slots=True)
class HistoryRow:
    """One build and everything that uses it."""

    build_id: str
    image_name: str
    method: str
    status: str
    started_at: str
    finished_at: str | None
    source: str
    image_ids: dict[str, str]
    snapshot_ids: dict[str, list[str]]
    verification: Verification | None
    template_versions: list[TemplateVersionRef] = field(default_factory=list)
    pointers: list[Pointer] = field(default_factory=list)
    recorded_in: str = "ssm"       # ssm | ami-tags
    blocked: str | None = None     # why the build is blocked (rollback --block), if it is

    @property
    def verification_label(self) -> str:
        v = self.verification
        if v is None:
            return "unverified"
        return f"{v.verdict} ({v.mechanism})" if v.mechanism else v.verdict

    @property
    def kubelet_label(self) -> str:
        v = self.verification
        return (v.kubelet_version or "unknown") if v is not None else "-"

    def to_dict(self) -> dict[str, Any]:
        return {
            "build_id": self.build_id, "image_name": self.image_name, "method": self.method,
            "status": self.status, "started_at": self.started_at,
            "finished_at": self.finished_at, "source": self.source,
            "image_ids": dict(self.image_ids), "snapshot_ids": dict(self.snapshot_ids),
            "verification": asdict(self.verification) if self.verification else None,
            "template_versions": [v.to_dict() for v in self.template_versions],
            "pointers": [asdict(p) for p in self.pointers],
            "recorded_in": self.recorded_in,
            "blocked": self.blocked,
        }


@dataclass(slots=True)
class HistoryResult:
    """``invoke history``: one row per build, newest first."""

    rows: list[HistoryRow]
    image: str | None = None
    template: str | None = None
    regions: list[str] = field(default_factory=list)
    pointer_prefix: str = ""
    exit_code: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "template": self.template, "regions": list(self.regions),
                "builds": [r.to_dict() for r in self.rows]}

    def summary(self) -> str:
        if not self.rows:
            what = f" of image {self.image}" if self.image else ""
            return f"no builds{what} recorded under this configuration"
        head = ("BUILD", "TIME", "IMAGE", "SOURCE", "REGION", "AMI", "VERIFY", "KUBELET",
                "TEMPLATE VERSIONS", "POINTERS")
        lines: list[tuple[str, ...]] = []
        for r in self.rows:
            regions = sorted(r.image_ids) or ["-"]
            for i, region in enumerate(regions):
                ami = r.image_ids.get(region, "-")
                versions = ", ".join(v.label() for v in r.template_versions
                                     if v.region == region) or "-"
                pointers = ", ".join(f"{p.image_name}/{p.channel}" for p in r.pointers
                                     if p.region == region) or "-"
                first = i == 0
                status = "" if r.status == "succeeded" else f" [{r.status}]"
                status += " [BLOCKED]" if r.blocked else ""
                lines.append((r.build_id + status if first else "",
                              _short_time(r.started_at) if first else "",
                              r.image_name if first else "",
                              r.source if first else "",
                              region, ami,
                              r.verification_label if first else "",
                              r.kubelet_label if first else "",
                              versions, pointers))
        widths = [max(len(row[i]) for row in [head, *lines]) for i in range(len(head) - 1)]
        out = []
        for row in [head, *lines]:
            cells = [c.ljust(w) for c, w in zip(row[:-1], widths)] + [row[-1]]
            out.append("  ".join(cells).rstrip())
        out.append("(* = the template's default version; pointers are "
                   f"{self.pointer_prefix}/<image>/<channel>)")
        return "\n".join(out)


def _short_time(iso: str) -> str:
    return iso.replace("T", " ")[:16] if iso else "-"


# --------------------------------------------------------------------------- tags


def lineage_tags(record: BuildRecord) -> dict[str, str]:
    """The lineage tag set of a build (keys from :mod:`pipeline.core.tags`, values <= 256)."""
    out: dict[str, str] = {
        T.MANAGED_BY: TOOL_NAME,
        T.BUILD_ID: record.build_id,
        T.IMAGE_NAME: record.image_name,
        T.METHOD: record.method,
        T.CREATED_AT: record.started_at,
        T.TOOL_VERSION: record.tool_version,
    }
    optional = {
        T.SOURCE_SHA256: record.source_sha256,
        T.SOURCE_CONTENT: record.source_content_id,
        T.SOURCE_FILE: os.path.basename(record.source_file) if record.source_file else None,
        T.BASE_AMI: record.base_ami,
        T.INPUTS_SHA256: record.inputs_sha256,
        T.GIT_COMMIT: record.git_commit,
        T.PACKER_VERSION: record.packer_version,
    }
    v = record.verification
    if v is not None:
        optional.update({T.VERIFY_VERDICT: v.verdict, T.VERIFY_MECHANISM: v.mechanism,
                         T.VERIFY_TIME: v.checked_at, T.VERIFY_TOOL_VERSION: v.tool_version,
                         T.VERIFY_KUBELET_VERSION: v.kubelet_version or "unknown",
                         T.VERIFY_WARNINGS: " ".join(v.warnings) or "none"})
    out.update({k: val for k, val in optional.items() if val})
    return {k[:128]: str(val)[:256] for k, val in out.items() if val is not None and val != ""}


def _known(value: str | None) -> str | None:
    return None if value in (None, "", "unknown") else value


def record_from_tags(tags: dict[str, str], *, region: str, image_id: str,
                     snapshot_ids: list[str] | None = None) -> BuildRecord | None:
    """Rebuild what the tags know of a build (None when the AMI has no build id)."""
    build_id = tags.get(T.BUILD_ID)
    if not build_id:
        return None
    verification = None
    if tags.get(T.VERIFY_VERDICT):
        verification = Verification(verdict=tags[T.VERIFY_VERDICT],
                                    mechanism=tags.get(T.VERIFY_MECHANISM) or None,
                                    checked_at=tags.get(T.VERIFY_TIME, ""),
                                    tool_version=tags.get(T.VERIFY_TOOL_VERSION, ""),
                                    kubelet_version=_known(tags.get(T.VERIFY_KUBELET_VERSION)),
                                    warnings=tuple(w for w in tags.get(
                                        T.VERIFY_WARNINGS, "").split() if w != "none"))
    return BuildRecord(
        build_id=build_id, image_name=tags.get(T.IMAGE_NAME, ""),
        method=tags.get(T.METHOD, ""), status="unknown",
        started_at=tags.get(T.CREATED_AT, ""), source_file=tags.get(T.SOURCE_FILE),
        source_sha256=tags.get(T.SOURCE_SHA256), base_ami=tags.get(T.BASE_AMI),
        source_content_id=tags.get(T.SOURCE_CONTENT),
        inputs_sha256=tags.get(T.INPUTS_SHA256), tool_version=tags.get(T.TOOL_VERSION, ""),
        git_commit=tags.get(T.GIT_COMMIT), packer_version=tags.get(T.PACKER_VERSION),
        image_ids={region: image_id}, snapshot_ids={region: list(snapshot_ids or [])},
        verification=verification, extra={"recorded_in": "ami-tags"},
    )


def _describe_image(ec2: Any, image_id: str) -> dict[str, Any] | None:
    try:
        images = ec2.describe_images(ImageIds=[image_id]).get("Images") or []
    except ClientError as err:
        if error_code(err).startswith("InvalidAMIID"):
            return None
        raise
    return images[0] if images else None


def tag_build(clients: Clients, record: BuildRecord, *, region: str,
              extra_tags: dict[str, str] | None = None) -> list[str]:
    """Write the lineage tags on the build's AMI in ``region`` and on its snapshots.

    Returns the resource ids tagged. Existing tags of other tools are kept; the total
    stays within EC2's 50 tags per resource (optional lineage keys are dropped first).
    """
    image_id = record.image_ids.get(region)
    if not image_id:
        return []
    ec2 = clients.client("ec2", region=region)
    image = call(_describe_image, ec2=ec2, image_id=image_id,
                 what=f"describing {image_id} in {region} to tag its lineage")
    if image is None:
        raise OperationFailed(f"AMI {image_id} of build {record.build_id} is not in {region}; "
                              "it may have been deregistered: run `invoke history` to check")
    snapshots = sorted(set(record.snapshot_ids.get(region) or []) | set(snapshots_of(image)))
    record.snapshot_ids[region] = snapshots
    wanted = lineage_tags(record)
    wanted.update(extra_tags or {})
    existing = T.from_tag_list(image.get("Tags"))
    wanted = _fit_tag_limit(wanted, existing)
    resources = [image_id, *snapshots]
    call(ec2.create_tags, Resources=resources, Tags=T.to_tag_list(wanted),
         what=f"tagging {image_id} and its snapshots in {region} with build {record.build_id}")
    return resources


_DROPPABLE = (T.SOURCE_FILE, T.PACKER_VERSION, T.VERIFY_TOOL_VERSION, T.VERIFY_TIME,
              T.TOOL_VERSION, T.GIT_COMMIT, T.CREATED_AT)


def _fit_tag_limit(wanted: dict[str, str], existing: dict[str, str]) -> dict[str, str]:
    """Drop optional lineage keys until existing + new keys fit EC2's 50-tag limit."""
    out = dict(wanted)
    for key in _DROPPABLE:
        if len(set(existing) | set(out)) <= EC2_TAG_LIMIT:
            break
        if key in out and key not in existing:
            del out[key]
    if len(set(existing) | set(out)) > EC2_TAG_LIMIT:
        raise OperationFailed(f"the AMI already carries {len(existing)} tags; the lineage needs "
                              f"{len(set(out) - set(existing))} more and EC2 allows "
                              f"{EC2_TAG_LIMIT}: remove unused tags from the AMI and retry")
    return out


# --------------------------------------------------------------------------- durable record


def record_parameter_name(settings: Settings, image_name: str, build_id: str) -> str:
    """``<ssm_prefix>/_builds/<image-name>/<build-id>``."""
    return f"{settings.ssm_prefix.rstrip('/')}/{RECORD_TREE}/{image_name}/{build_id}"


def _record_tree(settings: Settings, image_name: str | None = None) -> str:
    base = f"{settings.ssm_prefix.rstrip('/')}/{RECORD_TREE}"
    return f"{base}/{image_name}" if image_name else base


def _compact(record: BuildRecord, *, drop_extra: bool = False) -> str:
    data = {k: v for k, v in record.to_dict().items() if v not in (None, "", {}, [])}
    if drop_extra:
        data.pop("extra", None)
        data["extra_dropped"] = True
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def _put_record(settings: Settings, clients: Clients, record: BuildRecord) -> str:
    if not is_image_name(record.image_name):
        raise InputError(f"build {record.build_id}: image name {record.image_name!r} cannot name "
                         "an SSM parameter; use a configured image name")
    body = _compact(record)
    if len(body.encode()) > ADVANCED_TIER_LIMIT:
        log.warning("build %s: record is %d bytes; dropping 'extra' to fit SSM's 8 KB",
                    record.build_id, len(body.encode()))
        body = _compact(record, drop_extra=True)
    size = len(body.encode())
    if size > ADVANCED_TIER_LIMIT:
        raise OperationFailed(f"build {record.build_id}: the record is {size} bytes, over SSM's "
                              f"{ADVANCED_TIER_LIMIT}; shorten the source file name or inputs")
    # Over 4 KB: Advanced. Otherwise Intelligent-Tiering, which stores it as Standard but,
    # unlike Tier=Standard, does not fail on a record that an earlier write made Advanced
    # (SSM never downgrades a parameter).
    tier = "Intelligent-Tiering" if size <= STANDARD_TIER_LIMIT else "Advanced"
    name = record_parameter_name(settings, record.image_name, record.build_id)
    ssm = clients.client("ssm")
    call(ssm.put_parameter, Name=name, Value=body, Type="String", Overwrite=True, Tier=tier,
         Description=f"{TOOL_NAME} build record", DataType="text",
         what=f"writing the build record {name}")
    return name


def _git_commit() -> str | None:
    """The commit this run builds from: CI's variable, else ``git rev-parse HEAD`` here."""
    for var in ("GITHUB_SHA", "CI_COMMIT_SHA", "GIT_COMMIT"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        out = subprocess.run(["git", "rev-parse", "--verify", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", sha) else None


def _tool_versions(record: BuildRecord) -> dict[str, str]:
    import boto3
    import botocore

    versions = {TOOL_NAME: record.tool_version or __version__, "python": platform.python_version(),
                "boto3": boto3.__version__, "botocore": botocore.__version__}
    if record.packer_version:
        versions["packer"] = record.packer_version
    return versions


def record_build(settings: Settings, clients: Clients, record: BuildRecord) -> None:
    """Record one build durably: lineage tags in every region that holds an AMI of it,
    the SSM record in the home region, and the local manifest.

    Fills what the caller left out and only this module can know: the tool version,
    the git commit (``$GITHUB_SHA`` or ``git rev-parse HEAD``) and the versions of the
    tools involved (``extra["tool_versions"]``). Safe to call again as the build
    progresses (started, verified, distributed): tags are overwritten, the SSM record
    gains a new parameter version, the manifest entry is replaced.
    """
    record.tool_version = record.tool_version or __version__
    if record.git_commit is None:
        record.git_commit = _git_commit()
    record.extra.setdefault("tool_versions", _tool_versions(record))
    for region in sorted(record.image_ids):
        tag_build(clients, record, region=region)
    _put_record(settings, clients, record)
    write_manifest(settings, [record])


def delete_build_record(settings: Settings, clients: Clients, image_name: str,
                        build_id: str) -> bool:
    """Delete a build's SSM record (prune calls this after deregistering its AMIs)."""
    from pipeline.aws import cleanup

    name = record_parameter_name(settings, image_name, build_id)
    try:   # the name ends with the build id: cleanup's proof of ownership
        [done] = cleanup.delete_parameters(clients, None, cleanup.Owner(build_id), [name])
    except ClientError as err:
        raise OperationFailed(f"deleting the record of build {build_id}: {err}") from err
    if done.outcome == "gone":
        return False
    if not done.ok:
        raise OperationFailed(f"deleting the record of build {build_id}: {done.error}")
    return True


# --------------------------------------------------------------------------- manifest


def _manifest_path(settings: Settings) -> Path:
    return Path(settings.state_dir) / MANIFEST_NAME


def read_manifest(settings: Settings) -> list[BuildRecord]:
    """The builds in ``<state_dir>/manifest.json`` (empty when there is none)."""
    path = _manifest_path(settings)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable build manifest ({err}); "
                         "delete it and rerun to start a new one") from err
    return [BuildRecord.from_dict(b) for b in doc.get("builds", [])]


def write_manifest(settings: Settings, records: Iterable[BuildRecord]) -> Path:
    """Merge ``records`` into ``<state_dir>/manifest.json`` (by build id, newest first).

    The file is replaced atomically, so a CI artefact is never half-written.
    """
    path = _manifest_path(settings)
    by_id = {r.build_id: r for r in read_manifest(settings)}
    for r in records:
        by_id[r.build_id] = r
    builds = _newest_first(by_id.values())
    doc = {"tool": TOOL_NAME, "schema": 1, "updated_at": BuildRecord.now(),
           "builds": [b.to_dict() for b in builds]}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)
    return path


def _newest_first(records: Iterable[BuildRecord]) -> list[BuildRecord]:
    # Build ids start with a UTC timestamp; started_at breaks nothing when absent.
    return sorted(records, key=lambda r: (r.started_at or "", r.build_id), reverse=True)


# --------------------------------------------------------------------------- loading


def _iter_parameters(ssm: Any, path: str) -> Iterator[dict[str, Any]]:
    pages = ssm.get_paginator("get_parameters_by_path").paginate(Path=path, Recursive=True)
    try:
        for page in pages:
            yield from page.get("Parameters") or []
    except ClientError as err:
        raise OperationFailed(f"reading SSM parameters under {path}: {error_code(err)}: "
                              f"{err.response.get('Error', {}).get('Message')}") from err


def _parse_record(param: dict[str, Any]) -> BuildRecord | None:
    try:
        return BuildRecord.from_dict(json.loads(param["Value"]))
    except (ValueError, TypeError, KeyError) as err:
        log.warning("ignoring unreadable build record %s: %s", param.get("Name"), err)
        return None


def load_build(settings: Settings, clients: Clients, image_name: str,
               build_id: str) -> BuildRecord | None:
    """One build's durable record, or None."""
    ssm = clients.client("ssm")
    try:
        param = ssm.get_parameter(Name=record_parameter_name(settings, image_name, build_id))
    except ClientError as err:
        if error_code(err) == "ParameterNotFound":
            return None
        raise OperationFailed(f"reading the record of build {build_id}: {err}") from err
    return _parse_record(param["Parameter"])


def _builds_from_tags(clients: Clients, image: str | None) -> list[BuildRecord]:
    """Pipeline AMIs in the home region, as records rebuilt from their tags."""
    ec2 = clients.client("ec2")
    filters = [{"Name": "tag-key", "Values": [T.BUILD_ID]}]
    if image:
        filters.append({"Name": f"tag:{T.IMAGE_NAME}", "Values": [image]})
    out = []
    images: list[dict[str, Any]] = []
    try:
        for page in ec2.get_paginator("describe_images").paginate(Owners=["self"],
                                                                  Filters=filters):
            images.extend(page.get("Images") or [])
    except ClientError as err:
        raise OperationFailed(f"listing this account's pipeline AMIs in {clients.region}: "
                              f"{error_code(err)}") from err
    for img in images:
        rec = record_from_tags(T.from_tag_list(img.get("Tags")), region=clients.region,
                               image_id=img["ImageId"], snapshot_ids=snapshots_of(img))
        if rec is not None and (image is None or rec.image_name == image):
            out.append(rec)
    return out


def load_builds(settings: Settings, clients: Clients, image: str | None = None, *,
                include_untracked: bool = True) -> list[BuildRecord]:
    """Every recorded build (of ``image``), newest first.

    The SSM records are the source of truth. With ``include_untracked`` a pipeline AMI
    in the home region whose record is missing (say the run died between tagging and
    writing) still shows up, rebuilt from its tags with status ``unknown``.
    """
    ssm = clients.client("ssm")
    found: dict[str, BuildRecord] = {}
    for param in _iter_parameters(ssm, _record_tree(settings, image)):
        rec = _parse_record(param)
        if rec is not None and (image is None or rec.image_name == image):
            found[rec.build_id] = rec
    if include_untracked:
        for rec in _builds_from_tags(clients, image):
            if rec.build_id not in found:
                found[rec.build_id] = rec
            else:
                known = found[rec.build_id]
                for region, ami in rec.image_ids.items():
                    known.image_ids.setdefault(region, ami)
    return _newest_first(found.values())


def latest_successful(settings: Settings, clients: Clients, image: str) -> BuildRecord | None:
    """The newest build of ``image`` whose status is ``succeeded`` (None if there is none)."""
    for rec in load_builds(settings, clients, image, include_untracked=False):
        if rec.status == "succeeded":
            return rec
    return None


# --------------------------------------------------------------------------- template versions


def _iter_templates(ec2: Any) -> Iterator[dict[str, Any]]:
    for page in ec2.get_paginator("describe_launch_templates").paginate(
            PaginationConfig={"PageSize": 200}):
        yield from page.get("LaunchTemplates") or []


def _iter_versions(ec2: Any, template_id: str) -> Iterator[dict[str, Any]]:
    """Every version of one template, 200 at a time (templates hold up to 10,000)."""
    yield from paged(ec2, "describe_launch_template_versions", "LaunchTemplateVersions",
                     what=f"listing the versions of launch template {template_id}",
                     LaunchTemplateId=template_id,
                     PaginationConfig={"PageSize": VERSIONS_PAGE})


def _resolver(ssm: Any) -> ImageIdResolver:
    return ImageIdResolver(ssm)


def _version_ref(region: str, v: dict[str, Any], resolve: Any) -> TemplateVersionRef:
    image_id = (v.get("LaunchTemplateData") or {}).get("ImageId")
    created = v.get("CreateTime")
    return TemplateVersionRef(
        region=region, template_id=v["LaunchTemplateId"],
        template_name=v.get("LaunchTemplateName", ""), version=int(v["VersionNumber"]),
        is_default=bool(v.get("DefaultVersion")), image_id=image_id,
        resolved_image_id=resolve(image_id), description=v.get("VersionDescription") or "",
        created_at=created.isoformat() if isinstance(created, _dt.datetime) else created)


def template_version_index(clients: Clients, region: str | None = None, *,
                           template: str | None = None) -> list[TemplateVersionRef]:
    """Every version of every launch template in ``region`` (or of one ``template``)."""
    region = region or clients.region
    ec2 = clients.client("ec2", region=region)
    resolve = _resolver(clients.client("ssm", region=region))
    templates = [t for t in _iter_templates(ec2)
                 if template is None or template in (t["LaunchTemplateName"],
                                                     t["LaunchTemplateId"])]
    out: list[TemplateVersionRef] = []
    for t in templates:
        out.extend(_version_ref(region, v, resolve) for v in _iter_versions(ec2, t["LaunchTemplateId"]))
    return out


def find_template_versions(clients: Clients, ami_id: str,
                           region: str | None = None) -> list[TemplateVersionRef]:
    """Every launch template version in ``region`` that launches ``ami_id``.

    Pages through all templates and all of their versions; a version whose ImageId is
    ``resolve:ssm:<name>`` counts when that parameter names the AMI now.
    """
    return [v for v in template_version_index(clients, region)
            if v.resolved_image_id == ami_id]


def build_for_template_version(clients: Clients, template: str, version: int | str = "$Default",
                               *, region: str | None = None,
                               settings: Settings | None = None) -> VersionLink:
    """The build behind one launch template version.

    Read from two independent places: the version's description (the publish step writes
    the build id and AMI id there) and the ``build-id`` tag of the AMI the version
    launches; a disagreement is reported in ``problems``. With ``settings`` the durable
    record is loaded, otherwise what the AMI's tags know.
    """
    region = region or clients.region
    ec2 = clients.client("ec2", region=region)
    by = {"LaunchTemplateId" if template.startswith("lt-") else "LaunchTemplateName": template}
    try:
        resp = ec2.describe_launch_template_versions(Versions=[str(version)], **by)
    except ClientError as err:
        raise InputError(f"launch template {template} version {version} in {region}: "
                         f"{error_code(err)}; check the name with `aws ec2 "
                         "describe-launch-templates`") from err
    versions = resp.get("LaunchTemplateVersions") or []
    if not versions:
        raise InputError(f"launch template {template} has no version {version} in {region}")
    ref = _version_ref(region, versions[0], _resolver(clients.client("ssm", region=region)))
    desc_build = _described(ref.description, "build", BUILD_ID_RE)
    desc_ami = _described(ref.description, "ami", AMI_ID_RE)
    problems: list[str] = []
    tag_build_id: str | None = None
    build: BuildRecord | None = None
    image = _describe_image(ec2, ref.resolved_image_id) if ref.resolved_image_id else None
    if ref.resolved_image_id and image is None:
        problems.append(f"AMI {ref.resolved_image_id} no longer exists in {region}")
    if image is not None:
        tags = T.from_tag_list(image.get("Tags"))
        tag_build_id = tags.get(T.BUILD_ID)
        build = record_from_tags(tags, region=region, image_id=image["ImageId"],
                                 snapshot_ids=snapshots_of(image))
    if desc_build and tag_build_id and desc_build != tag_build_id:
        problems.append(f"the description names build {desc_build} but the AMI is tagged "
                        f"{tag_build_id}")
    if desc_ami and ref.resolved_image_id and desc_ami != ref.resolved_image_id:
        problems.append(f"the description names {desc_ami} but the version launches "
                        f"{ref.resolved_image_id}")
    build_id = tag_build_id or desc_build
    if settings is not None and build_id:
        image_name = build.image_name if build else None
        full = load_build(settings, clients, image_name, build_id) if image_name else None
        if full is None:
            full = next((b for b in load_builds(settings, clients, include_untracked=False)
                         if b.build_id == build_id), None)
        build = full or build
    return VersionLink(region=region, template_id=ref.template_id,
                       template_name=ref.template_name, version=ref.version,
                       is_default=ref.is_default, image_id=ref.resolved_image_id,
                       build_id=build_id, build_id_from_description=desc_build,
                       build_id_from_tag=tag_build_id, image_id_from_description=desc_ami,
                       build=build, problems=problems)


def _described(description: str, key: str, pattern: re.Pattern[str]) -> str | None:
    """``key=<value>`` from a version description written by the publish step
    (``build=<id> ami=<ami> verify=... ud=...``), else the first id-shaped word."""
    m = re.search(rf"(?:^|\s){key}=(\S+)", description or "")
    if m:
        return m.group(1) if pattern.fullmatch(m.group(1)) else None
    found = pattern.search(description or "")
    return found.group(0) if found else None


# --------------------------------------------------------------------------- pointers


def read_pointers(settings: Settings, clients: Clients,
                  region: str | None = None) -> list[Pointer]:
    """The SSM pointers ``<ssm_prefix>/<image>/<channel>`` in ``region`` (build records,
    which sit one level deeper under ``_builds``, are not pointers)."""
    return [p for p in list_pointers(clients, settings.ssm_prefix, region=region)
            if not p.image_name.startswith("_") and AMI_ID_RE.fullmatch(p.ami_id or "")]


@dataclass(slots=True)
class AmiLinks:
    """Everything linked to one AMI: its build (and inputs), the template versions that
    launch it and the pointers that name it."""

    region: str
    image_id: str
    build: BuildRecord | None
    template_versions: list[TemplateVersionRef]
    pointers: list[Pointer]

    def to_dict(self) -> dict[str, Any]:
        return {"region": self.region, "image_id": self.image_id,
                "build": self.build.to_dict() if self.build else None,
                "template_versions": [v.to_dict() for v in self.template_versions],
                "pointers": [asdict(p) for p in self.pointers]}


def ami_links(settings: Settings, clients: Clients, ami_id: str,
              region: str | None = None) -> AmiLinks:
    """From an AMI to its build (durable record, else its tags), the template versions
    that launch it and the SSM pointers that name it, in ``region``."""
    region = region or clients.region
    ec2 = clients.client("ec2", region=region)
    image = call(_describe_image, ec2=ec2, image_id=ami_id, what=f"describing {ami_id}")
    if image is None:
        raise InputError(f"AMI {ami_id} does not exist in {region}; check the id and region")
    build = record_from_tags(T.from_tag_list(image.get("Tags")), region=region,
                             image_id=ami_id, snapshot_ids=snapshots_of(image))
    if build is not None and build.image_name:
        build = load_build(settings, clients, build.image_name, build.build_id) or build
    return AmiLinks(region=region, image_id=ami_id, build=build,
                    template_versions=find_template_versions(clients, ami_id, region),
                    pointers=[p for p in read_pointers(settings, clients, region)
                              if p.ami_id == ami_id])


# --------------------------------------------------------------------------- history


def _source(rec: BuildRecord) -> str:
    if rec.source_sha256 or rec.source_content_id:
        name = os.path.basename(rec.source_file) if rec.source_file else "file"
        if rec.source_sha256:
            return f"{name} sha256:{rec.source_sha256[:12]}"
        return f"{name} {str(rec.source_content_id)[:20]}"    # disk-v1:<12 hex>
    if rec.base_ami:
        return f"base {rec.base_ami}"
    return "-"


def _blocked_label(blocked: Any) -> str | None:
    if isinstance(blocked, dict):
        return f"{blocked.get('at', '?')} {blocked.get('channel', '?')}: {blocked.get('reason', '')}"
    return str(blocked) if blocked else None


def history(settings: Settings, clients: Clients, image: str | None = None,
            template: str | None = None) -> HistoryResult:
    """One row per build, newest first, with the template versions and pointers using it.

    ``image`` keeps that image's builds. ``template`` keeps the builds that template
    uses or that were built for it (its configured image), and shows only its versions.
    """
    if image is not None:
        settings.image(image)  # ConfigError (exit 2) for an unknown name
    builds = load_builds(settings, clients, image)
    regions = sorted({clients.region, *(r for b in builds for r in b.image_ids)})
    versions: list[TemplateVersionRef] = []
    pointers: list[Pointer] = []
    for region in regions:
        versions.extend(template_version_index(clients, region, template=template))
        pointers.extend(read_pointers(settings, clients, region))
    if template is not None:
        configured = next((lt.image for lt in settings.launch_templates if lt.name == template),
                          None)
        if configured is None and not versions:
            known = ", ".join(lt.name for lt in settings.launch_templates) or "none"
            raise InputError(f"--template {template!r}: not in launch_templates (configured: "
                             f"{known}) and no such launch template in {', '.join(regions)}; "
                             "check the name")
        used = {v.resolved_image_id for v in versions}
        builds = [b for b in builds if b.image_name == configured
                  or used & set(b.image_ids.values())]
    rows = []
    for b in builds:
        amis = set(b.image_ids.values())
        rows.append(HistoryRow(
            build_id=b.build_id, image_name=b.image_name, method=b.method, status=b.status,
            started_at=b.started_at, finished_at=b.finished_at, source=_source(b),
            image_ids=dict(b.image_ids), snapshot_ids=dict(b.snapshot_ids),
            verification=b.verification,
            template_versions=sorted((v for v in versions if v.resolved_image_id in amis),
                                     key=lambda v: (v.region, v.template_name, -v.version)),
            pointers=sorted((p for p in pointers if p.ami_id in amis),
                            key=lambda p: (p.region, p.name)),
            recorded_in=str(b.extra.get("recorded_in", "ssm")),
            blocked=_blocked_label(b.extra.get("blocked"))))
    return HistoryResult(rows=rows, image=image, template=template, regions=regions,
                         pointer_prefix=settings.ssm_prefix.rstrip("/"))
