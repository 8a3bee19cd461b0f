"""``invoke bake``: build an EKS node AMI with Packer, verify it offline, leave no orphans.

Steps: resolve the base AMI (SSM parameter, explicit id, or name filter + owners; only
``available`` images) → detect the Packer version → compute the inputs hash (template
files, var files, provisioners, base AMI id, Packer version, configured variables) →
``packer init`` (>= 1.7) and ``packer validate`` → ``packer build -machine-readable``,
parsed live → AMI ids per region from the manifest → on Packer 1.6.x set ``ImdsSupport``
ourselves → offline check of the new AMI's root snapshot (:func:`pipeline.lineage.verify_ami.verify_ami`)
→ lineage record (:func:`pipeline.lineage.store.record_build`).

What runs side by side (the fixed cost around Packer, see ``benchmarks/bake_bench.py``):
``packer version`` with the SSM read of the base id (the ``invoke bake`` task starts it
before boto3 is imported); ``packer init``/``validate`` with the EC2 client creation and
the base AMI's ``available`` check; ``packer build`` with loading the offline checker.
:attr:`BakeResult.phases` reports each step's wall time.

Everything Packer creates carries the build id (``run_tags``, ``run_volume_tags``,
``snapshot_tags``, ``tags``) so that a failed or interrupted build can be swept by tag:
instances, volumes, snapshots, AMIs, security groups and key pairs. Packer 1.6.6 does not
tag its temporary key pair and security group, so the sweep also takes the names Packer
printed and the groups of the build's instances. A failed verification removes the new
AMI and its snapshots and exits 1 with the verdict.

Against the local emulator (``aws.endpoint_url`` set) the build passes the custom EC2
endpoint, skips Packer's STS/metadata/region checks and uses ``communicator = "none"``,
so the in-instance provisioners (including the in-instance bootstrap contract check)
cannot run there; :attr:`BakeResult.checks_run` says which checks ran.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipeline import __version__
from pipeline.aws import cleanup
from pipeline.aws.journal import Journal, memory_journal
from pipeline.bake import packer as P
from pipeline.core import tags as T
from pipeline.aws.clients import Clients, call, error_code
from pipeline.core.config import BaseImage, ImageSettings, Settings
from pipeline.core.errors import (AwsCallError, InputError, PackerBuildFailed, PipelineError,
                                  UnsafeSelection, VerificationFailed)
from pipeline.core.inputs import check_file
from pipeline.core.progress import NO_PROGRESS, Progress
from pipeline.core.records import BuildRecord

__all__ = ["BakePlan", "BakeResult", "SweepReport", "bake", "plan_bake", "resolve_base_ami",
           "inputs_sha256", "sweep_build", "run_plan", "RESERVED_VARIABLES"]

log = logging.getLogger(__name__)

#: Variables the pipeline sets for every build; the configuration may not override them.
RESERVED_VARIABLES = frozenset({"build_id", "build_tags", "source_ami_id", "manifest_output",
                                "image_name", "require"})
_GENERATED_VARS = "bake.auto.pkrvars.json"
_PROVISIONERS = ("write-build-info.sh", "validate-bootstrap.sh", "cleanup.sh")


# --------------------------------------------------------------------------- records


@dataclass(slots=True)
class BakePlan:
    """Everything decided before Packer runs (what ``--dry-run`` prints)."""

    image: ImageSettings
    region: str
    build_id: str
    base_ami: str
    base_ami_name: str | None
    packer: str
    packer_version: P.PackerVersion
    files: P.TemplateFiles
    inputs_sha256: str
    variables: dict[str, Any]
    invocation: P.Invocation
    emulated: bool
    record: BuildRecord
    #: False when the base id came from SSM or the configuration and its ``available``
    #: state is checked by :func:`run_plan`, alongside ``packer validate``.
    base_checked: bool = True
    #: Where the base id came from (for the error message of a deferred check).
    base_source: str = ""

    @property
    def variables_file(self) -> Path:
        return self.invocation.workdir / _GENERATED_VARS

    def write_variables(self) -> Path:
        """Write :attr:`variables` as the last ``-var-file`` of the invocation."""
        self.invocation.workdir.mkdir(parents=True, exist_ok=True)
        self.variables_file.write_text(json.dumps(self.variables, indent=2, sort_keys=True),
                                       encoding="utf-8")
        return self.variables_file

    def to_dict(self) -> dict[str, Any]:
        inv = self.invocation
        return {
            "dry_run": True, "image_name": self.image.name, "region": self.region,
            "build_id": self.build_id, "base_ami": self.base_ami,
            "base_ami_name": self.base_ami_name, "packer_version": str(self.packer_version),
            "inputs_sha256": self.inputs_sha256,
            "init_command": inv.init_cmd, "validate_command": inv.validate_cmd,
            "build_command": inv.build_cmd,
            "var_files": [str(p) for p in inv.var_files], "variables": self.variables,
            "left_out_for_this_packer": [f"settings fenced for amazon plugin >= {v}"
                                         for v in inv.dropped_fences],
        }

    def summary(self) -> str:
        d = self.to_dict()
        lines = [f"dry run: bake {self.image.name} from {self.base_ami}"
                 f" ({self.base_ami_name or 'name unknown'}) with Packer {self.packer_version}"]
        if d["init_command"]:
            lines.append("  " + " ".join(d["init_command"]))
        lines.append("  " + " ".join(d["validate_command"]))
        lines.append("  " + " ".join(d["build_command"]))
        lines.append(f"variables ({_GENERATED_VARS}, after the var files above):")
        lines += [f"  {k} = {json.dumps(v)}" for k, v in sorted(self.variables.items())]
        lines.append(f"inputs sha256 {self.inputs_sha256}")
        return "\n".join(lines)


@dataclass(slots=True)
class BakeResult:
    """A successful bake: ``--json`` prints :meth:`to_dict`."""

    image_name: str
    build_id: str
    base_ami: str
    image_ids: dict[str, str]
    snapshot_ids: dict[str, list[str]]
    inputs_sha256: str
    packer_version: str
    verification: dict[str, Any]
    seconds: float
    checks_run: list[str]
    checks_skipped: list[str]
    imds_support: str | None
    record: BuildRecord
    lineage_recorded: bool
    exit_code: int = 0
    #: Wall seconds per step (plan, validate, packer_build, image, verify, record): where
    #: a bake's time goes around Packer.
    phases: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_name": self.image_name, "build_id": self.build_id, "base_ami": self.base_ami,
            "image_ids": self.image_ids, "snapshot_ids": self.snapshot_ids,
            "inputs_sha256": self.inputs_sha256, "packer_version": self.packer_version,
            "verification": self.verification, "seconds": round(self.seconds, 2),
            "checks_run": self.checks_run, "checks_skipped": self.checks_skipped,
            "imds_support": self.imds_support, "lineage_recorded": self.lineage_recorded,
            "exit_code": self.exit_code,
            "phases": {k: round(v, 3) for k, v in self.phases.items()},
        }

    def summary(self) -> str:
        amis = ", ".join(f"{r}: {a}" for r, a in sorted(self.image_ids.items()))
        v = self.verification
        return "\n".join([
            f"baked {self.image_name} build {self.build_id}: {amis}",
            f"  base {self.base_ami}, Packer {self.packer_version}, {self.seconds:.1f} s",
            f"  verification: {v.get('verdict')} (mechanism {v.get('mechanism')})",
            "  checks run: " + "; ".join(self.checks_run),
            *(["  checks skipped: " + "; ".join(self.checks_skipped)]
              if self.checks_skipped else []),
            f"  inputs sha256 {self.inputs_sha256}",
        ])


# --------------------------------------------------------------------------- base AMI


def resolve_base_ami(clients: Clients, base: BaseImage, *,
                     region: str | None = None) -> tuple[str, str | None]:
    """``(ami_id, name)`` of the base image; only an ``available`` image is accepted."""
    candidate = _base_candidate(clients, base, region=region)
    ec2 = clients.client("ec2", region=region)
    if candidate is not None:
        return _available(ec2, *candidate)
    if base.name_filter:
        resp = call(ec2.describe_images, what=f"listing AMIs named {base.name_filter}",
                    Owners=list(base.owners),
                    Filters=[{"Name": "name", "Values": [base.name_filter]},
                             {"Name": "state", "Values": ["available"]}])
        images = [i for i in resp.get("Images", []) if i.get("State") == "available"]
        if not images:
            raise InputError(f"bake.base.name_filter {base.name_filter!r} (owners "
                             f"{', '.join(base.owners)}): no available AMI matches; check the "
                             "pattern and owners")
        newest = max(images, key=lambda i: (i.get("CreationDate", ""), i["ImageId"]))
        return newest["ImageId"], newest.get("Name")
    raise InputError("bake.base: expected one of ssm_parameter, ami_id or name_filter")


def _base_candidate(clients: Clients, base: BaseImage, *,
                    region: str | None = None) -> tuple[str, str] | None:
    """``(ami_id, where)`` when the id is known without EC2 (SSM parameter or explicit id),
    not yet checked for ``available``; None for a name filter."""
    if base.ssm_parameter:
        ssm = clients.client("ssm", region=region)
        try:
            value = ssm.get_parameter(Name=base.ssm_parameter)["Parameter"]["Value"]
        except ClientError as err:
            if error_code(err) == "ParameterNotFound":
                raise InputError(f"bake.base.ssm_parameter {base.ssm_parameter}: no such SSM "
                                 "parameter in the region; check the Kubernetes version and "
                                 "architecture in the name") from err
            raise AwsCallError(f"reading SSM parameter {base.ssm_parameter}: {err}") from err
        return value.strip(), f"SSM parameter {base.ssm_parameter}"
    if base.ami_id:
        return base.ami_id, "bake.base.ami_id"
    return None


def _available(ec2: Any, ami_id: str, where: str) -> tuple[str, str | None]:
    try:
        images = ec2.describe_images(ImageIds=[ami_id]).get("Images", [])
    except ClientError as err:
        if error_code(err).startswith("InvalidAMIID"):
            images = []
        else:
            raise AwsCallError(f"describing base AMI {ami_id}: {err}") from err
    if not images:
        raise InputError(f"{where}: base AMI {ami_id} not found in the region; check the id")
    state = images[0].get("State")
    if state != "available":
        raise InputError(f"{where}: base AMI {ami_id} is {state!r}, not 'available'; "
                         "wait for it or pick another")
    return ami_id, images[0].get("Name")


# --------------------------------------------------------------------------- inputs


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def inputs_sha256(files: P.TemplateFiles, var_files: list[Path], base_ami: str,
                  packer_version: str, variables: dict[str, Any]) -> str:
    """One digest over everything that decides what the bake produces.

    Template files and provisioners by path relative to the template folder, configured
    var files by name, the base AMI id, the Packer version and the configured variables.
    Per-build values (build id, timestamps, tags) are not inputs.
    """
    doc = {
        "template": {str(p.relative_to(files.root)): _sha256(p) for p in files.all_inputs()},
        "var_files": [[p.name, _sha256(p)] for p in var_files],
        "base_ami": base_ami,
        "packer_version": packer_version,
        "variables": {k: variables[k] for k in sorted(variables)},
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------- plan


def _bake_image(settings: Settings, image_name: str | None) -> ImageSettings:
    if image_name is None:
        baked = [i for i in settings.images if i.bake is not None]
        if len(baked) != 1:
            raise InputError(f"bake: {len(baked)} images have a bake section; pass --image NAME "
                             f"({', '.join(i.name for i in baked) or 'none configured'})")
        return baked[0]
    image = settings.image(image_name)
    if image.bake is None:
        raise InputError(f"images: {image.name!r} has no bake section (it is imported); "
                         "use invoke import-image, or add bake: {template, base}")
    return image


def plan_bake(settings: Settings, clients: Clients, image_name: str | None = None, *,
              workdir: Path | None = None, build_id: str | None = None,
              packer_binary: str | None = None, stage: bool = True,
              defer_base_check: bool = False) -> BakePlan:
    """Resolve everything a bake needs (read-only in AWS; stages files under ``workdir``).

    With ``defer_base_check`` a base id that is known without EC2 (SSM parameter, explicit
    id) is taken as is and :func:`run_plan` checks that it exists and is ``available``
    while ``packer validate`` runs (``plan.base_checked`` False): the EC2 client (loading
    its ~550 KB service model) and DescribeImages then overlap the validate process.
    """
    image = _bake_image(settings, image_name)
    bake = image.bake
    assert bake is not None
    files = P.template_files(Path(bake.template))
    for vf in bake.var_files:
        check_file(vf, what="bake.var_files", hint="fix the path in the configuration")
    # Packer only warns about a variable no block declares, then builds without it.
    P.check_variables(files, ([files.defaults] if files.defaults else []) + list(bake.var_files),
                      bake.variables)
    reserved = sorted(RESERVED_VARIABLES & set(bake.variables))
    if reserved:
        raise InputError(f"bake.variables: {', '.join(reserved)} are set by the pipeline for "
                         "every build; remove them from the configuration")
    region = image.regions[0] if image.regions else settings.aws.region
    packer = P.find_packer(packer_binary)
    # `packer version` (a process start) overlaps the base AMI look-up.
    base_checked, base_source, base_name = True, "", None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="packer-version") as pool:
        pending_version = pool.submit(P.detect_version, packer)
        candidate = _base_candidate(clients, bake.base, region=region) if defer_base_check \
            else None
        if candidate is not None:
            (base_ami, base_source), base_checked = candidate, False
        else:
            base_ami, base_name = resolve_base_ami(clients, bake.base, region=region)
        version = pending_version.result()
    build_id = build_id or T.new_build_id()
    configured: dict[str, Any] = {"instance_type": bake.instance_type, **bake.variables}
    if settings.cluster is not None:
        configured.setdefault("kubernetes_version", settings.cluster.kubernetes_version)
    digest = inputs_sha256(files, list(bake.var_files), base_ami, str(version), configured)
    if workdir is None:   # planning only (dry run, rebuild's inputs check) writes nothing
        workdir = P.new_workdir() if stage else Path(tempfile.gettempdir()) / f"bake-{build_id}"
    emulated = bool(settings.aws.endpoint_url)
    record = _record(image, build_id, base_ami, digest, str(version))
    from pipeline.lineage.store import lineage_tags

    variables: dict[str, Any] = {
        "aws_region": region,
        "source_ami_id": base_ami,
        "image_name": image.name,
        "build_id": build_id,
        "require": image.require,
        "ami_name_prefix": image.name,
        "manifest_output": str(workdir / "manifest.json"),
        "build_tags": lineage_tags(record),
        **configured,
    }
    kms = image.kms_key_ids.get(region)
    if kms:
        variables["kms_key_id"] = kms
    if emulated:
        variables.update({
            "custom_endpoint_ec2": settings.aws.endpoint_url,
            "skip_aws_validation": True,
            "communicator": "none",
            "aws_poll_delay_seconds": 1,
            "aws_poll_max_attempts": 60,
        })
    gen = workdir / _GENERATED_VARS
    var_files = ([files.defaults] if files.defaults else []) + list(bake.var_files) + [gen]
    inv = P.plan_invocation(packer, version, files, var_files, workdir, stage=stage)
    plan = BakePlan(image=image, region=region, build_id=build_id, base_ami=base_ami,
                    base_ami_name=base_name, packer=packer, packer_version=version, files=files,
                    inputs_sha256=digest, variables=variables, invocation=inv, emulated=emulated,
                    record=record, base_checked=base_checked, base_source=base_source)
    if stage:
        plan.write_variables()
    return plan


def _record(image: ImageSettings, build_id: str, base_ami: str, digest: str,
            packer_version: str) -> BuildRecord:
    return BuildRecord(build_id=build_id, image_name=image.name, method="bake",
                       started_at=BuildRecord.now(), base_ami=base_ami, inputs_sha256=digest,
                       tool_version=__version__, packer_version=packer_version)


# --------------------------------------------------------------------------- bake


def bake(settings: Settings, clients: Clients, image_name: str | None = None,
         dry_run: bool = False, progress: Progress = NO_PROGRESS, *,
         workdir: Path | None = None, packer_binary: str | None = None) -> BakeResult | BakePlan:
    """Bake, verify and record one configured image; see the module docstring."""
    t0 = time.monotonic()
    own_workdir = workdir is None
    plan = plan_bake(settings, clients, image_name, workdir=workdir,
                     packer_binary=packer_binary, stage=not dry_run,
                     defer_base_check=not dry_run)
    if dry_run:
        _dry_validate(plan)
        return plan
    planned = time.monotonic() - t0
    try:
        result = run_plan(settings, clients, plan, progress, started=t0)
        result.phases = {"plan": planned, **result.phases}
        return result
    finally:
        if own_workdir:
            shutil.rmtree(plan.invocation.workdir, ignore_errors=True)


def _dry_validate(plan: BakePlan) -> None:
    """``bake --dry-run`` runs ``packer init``/``validate`` on a throw-away staging folder
    (the plan itself wrote nothing); a failure is bad input (exit 2)."""
    workdir = P.new_workdir("bake-dry-")
    try:
        gen = workdir / _GENERATED_VARS
        gen.write_text(json.dumps(plan.variables, indent=2, sort_keys=True), encoding="utf-8")
        inv = P.plan_invocation(plan.packer, plan.packer_version, plan.files,
                                list(plan.invocation.var_files[:-1]) + [gen], workdir)
        if inv.init_cmd:
            P.init(inv)
        P.validate(inv)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_plan(settings: Settings, clients: Clients, plan: BakePlan,
             progress: Progress = NO_PROGRESS, *, started: float | None = None) -> BakeResult:
    """Run a staged :class:`BakePlan`: validate, build, verify, record (or sweep and raise)."""
    t0 = time.monotonic() if started is None else started
    phases: dict[str, float] = {}
    mark = time.monotonic()

    def lap(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        phases[name], mark = now - mark, now

    inv = plan.invocation
    checks: list[str] = []
    skipped: list[str] = []
    log.info("bake %s: build %s from %s with Packer %s", plan.image.name, plan.build_id,
             plan.base_ami, plan.packer_version)
    progress.status(f"bake {plan.image.name}: build {plan.build_id} from {plan.base_ami}")
    if inv.init_cmd:
        progress.status("packer init (amazon plugin)")
    _validate_and_check_base(clients, plan)
    checks.append("packer validate")
    lap("validate")
    for v in inv.dropped_fences:
        log.warning("Packer %s: left out the template settings that need amazon plugin >= %s "
                    "(metadata_options, imds_support); ImdsSupport is set on the AMI afterwards",
                    plan.packer_version, v)

    progress.status("packer build")
    imds = _BuildInstanceImds(clients, plan)
    journal = _open_journal(settings, clients, plan)
    recorder = _Recorder(clients, plan, journal)

    def on_event(ev: P.PackerEvent) -> None:
        imds.on_event(ev)
        recorder.on_event(ev)

    warm = _warm_verify(clients, plan.region)
    try:
        run = P.run_build(inv.build_cmd, cwd=inv.workdir, env=_packer_aws_env(settings),
                          progress=progress, on_event=on_event)
    except KeyboardInterrupt as err:
        warm.join()
        partial: P.PackerRun | None = getattr(err, "packer_run", None)
        sweep = sweep_build(clients, plan.build_id, region=plan.region, run=partial,
                            protect=frozenset({plan.base_ami}), journal=journal)
        _close_after_sweep(clients, journal, sweep)
        lines = (partial.errors if partial else []) or ["interrupted before Packer reported "
                                                        "an error"]
        raise PackerBuildFailed(
            f"bake {plan.image.name}: interrupted (Ctrl-C); Packer cleaned up and "
            f"{sweep.sentence(plan.build_id)}: " + " | ".join(lines[:5]),
            details={"packer_errors": lines, "swept": sweep.removed,
                     "sweep_failed": sweep.failed, "build_id": plan.build_id,
                     "journal": journal.name if sweep.failed else None}) from None
    warm.join()
    lap("packer_build")
    if not run.ok:
        sweep = sweep_build(clients, plan.build_id, region=plan.region, run=run,
                            protect=frozenset({plan.base_ami}), journal=journal)
        _close_after_sweep(clients, journal, sweep)
        lines = run.errors or [f"packer build exited {run.exit_code}"]
        raise PackerBuildFailed(
            f"bake {plan.image.name}: packer build failed: " + " | ".join(_unique(lines)[:5])
            + f" ({sweep.sentence(plan.build_id)})",
            details={"packer_errors": lines, "swept": sweep.removed,
                     "sweep_failed": sweep.failed, "build_id": plan.build_id,
                     "journal": journal.name if sweep.failed else None})

    checks += imds.done
    with _SweepOnError(clients, plan, journal):
        manifest = P.parse_manifest(Path(plan.variables["manifest_output"]))
        image_ids = manifest.image_ids
        journal.record_many([("image", ami, r) for r, ami in image_ids.items()])
        if plan.variables.get("communicator") == "none":
            skipped += [f"in-instance provisioners/{p} (communicator none: nothing can run "
                        "inside the build instance on the emulator)" for p in _PROVISIONERS]
        else:
            checks += [f"in-instance provisioners/{p}" for p in _PROVISIONERS]
        facts = {r: _new_image(clients, r, ami, plan.packer_version)
                 for r, ami in image_ids.items()}
        snapshots = {r: f[0] for r, f in facts.items()}
        imds_values = {r: f[1] for r, f in facts.items()}
        journal.record_many([("snapshot", s, r) for r, snaps in snapshots.items()
                             for s in snaps])
    lap("image")

    reports = {}
    for region, ami in sorted(image_ids.items()):
        progress.status(f"offline check of {ami} in {region}")
        from pipeline.lineage.verify_ami import verify_ami

        with _SweepOnError(clients, plan, journal):
            report = verify_ami(clients, ami, require=plan.image.require, tag=True,
                                region=region, cluster_version=(
                                    settings.cluster.kubernetes_version
                                    if settings.cluster is not None else None),
                                strict=plan.image.verify_strict)
        reports[region] = report
        checks.append(f"offline verify {ami} ({region}): verdict {report.verdict}"
                      + (f", mechanism {report.mechanism}" if report.mechanism else ""))
        if not report.ok:
            removed = _remove_amis(clients, journal, image_ids)
            raise VerificationFailed(
                f"bake {plan.image.name}: AMI {ami} failed the offline check: verdict "
                f"{report.verdict} (require {plan.image.require}); removed "
                f"{', '.join(removed)}; check the base AMI and the provisioners",
                details={"verification": report.to_dict(), "removed": removed,
                         "build_id": plan.build_id})

    lap("verify")
    home = reports.get(plan.region) or next(iter(reports.values()))
    record = plan.record
    record.status = "succeeded"
    record.finished_at = BuildRecord.now()
    record.image_ids = dict(image_ids)
    record.snapshot_ids = snapshots
    record.verification = home.to_verification()
    record.extra = {"packer_run_uuid": manifest.run_uuid, "checks_run": checks,
                    "base_ami_name": plan.base_ami_name}
    recorded = _record_lineage(settings, clients, record)
    journal.close("succeeded", keep=[("image", a, r) for r, a in image_ids.items()]
                  + [("snapshot", sn, r) for r, snaps in snapshots.items() for sn in snaps])
    lap("record")
    return BakeResult(
        image_name=plan.image.name, build_id=plan.build_id, base_ami=plan.base_ami,
        image_ids=dict(image_ids), snapshot_ids=snapshots, inputs_sha256=plan.inputs_sha256,
        packer_version=str(plan.packer_version), verification=home.to_dict(),
        seconds=time.monotonic() - t0, checks_run=checks, checks_skipped=skipped,
        imds_support=next(iter(imds_values.values()), None), record=record,
        lineage_recorded=recorded, phases=phases)


def _validate_and_check_base(clients: Clients, plan: BakePlan) -> None:
    """``packer init`` (>= 1.7) and ``packer validate`` and, at the same time, the
    deferred base AMI check.

    Init and validate are separate processes that create nothing in AWS; meanwhile this
    thread creates the EC2 client and checks that the base AMI exists and is
    ``available``. Both finish before :func:`run_plan` goes on; a base that is not
    available is an input error (exit 2, nothing was created) and wins over a Packer
    failure.
    """
    def packer_checks() -> None:
        P.init(plan.invocation)        # nothing on Packer 1.6.x
        P.validate(plan.invocation)

    if plan.base_checked:
        packer_checks()
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="packer-validate") as pool:
        pending = pool.submit(packer_checks)
        ec2 = clients.client("ec2", region=plan.region)
        _, plan.base_ami_name = _available(ec2, plan.base_ami, plan.base_source)
        plan.base_checked = True
        pending.result()


def _packer_aws_env(settings: Settings) -> dict[str, str]:
    """Packer reads credentials like the AWS CLI: hand it the configured profile and region."""
    extra = {"AWS_REGION": settings.aws.region, "AWS_DEFAULT_REGION": settings.aws.region}
    if settings.aws.profile:
        extra["AWS_PROFILE"] = settings.aws.profile
    return P.packer_env(extra)


class _BuildInstanceImds:
    """Packer 1.6.x has no ``metadata_options``: require IMDSv2 on the build instance
    ourselves as soon as the stream names it ("Instance ID: i-..."), before any
    provisioner can connect (SSH takes far longer than one API call)."""

    def __init__(self, clients: Clients, plan: BakePlan) -> None:
        self.active = not plan.packer_version.supports_imds_support
        self.ec2 = clients.client("ec2", region=plan.region) if self.active else None
        self.done: list[str] = []

    def on_event(self, ev: P.PackerEvent) -> None:
        if self.ec2 is None or ev.type != "ui":
            return
        m = re.search(r"Instance ID: (i-[0-9a-f]+)", ev.message)
        if not m:
            return
        try:
            self.ec2.modify_instance_metadata_options(
                InstanceId=m[1], HttpTokens="required", HttpEndpoint="enabled",
                HttpPutResponseHopLimit=2)
            self.done.append(f"IMDSv2 required on build instance {m[1]} (set by the pipeline: "
                             "Packer 1.6.x has no metadata_options)")
        except ClientError as err:
            log.warning("could not require IMDSv2 on build instance %s: %s", m[1], err)


def _warm_verify(clients: Clients, region: str) -> threading.Thread:
    """Load the offline checker and the EBS client while Packer builds.

    That includes the dissect readers :mod:`pipeline.image.diskread.fs` imports only when it
    meets a partition table, ext4 or XFS (their ``cstruct`` definitions compile at import:
    ~0.1 s of CPU, measured 0.10-0.16 s -> 0.04 s for the offline check on the emulator).
    Joined before anything else touches ``clients`` again: client creation on one boto3
    session is not safe from two threads at once.
    """
    def warm() -> None:
        try:
            from pipeline.aws import snapshot_read as snapshot  # noqa: F401 - import cost only
            from pipeline.image import verify  # noqa: F401
            import dissect.extfs  # noqa: F401
            import dissect.volume.disk  # noqa: F401
            import dissect.xfs  # noqa: F401

            clients.client("ebs", region=region)
        except Exception:  # noqa: BLE001 - warming is an optimisation; the real call reports
            log.debug("warming the offline check failed", exc_info=True)

    thread = threading.Thread(target=warm, name="warm-verify", daemon=True)
    thread.start()
    return thread


def _record_lineage(settings: Settings, clients: Clients, record: BuildRecord) -> bool:
    """The one call site of the lineage record (tags, SSM record, local manifest)."""
    from pipeline.lineage import store as lineage

    lineage.record_build(settings, clients, record)
    return True


class _SweepOnError:
    """Remove everything of the build when a step after a successful Packer run fails
    (or is interrupted); the error then names what was removed and what stays."""

    def __init__(self, clients: Clients, plan: BakePlan, journal: Journal) -> None:
        self.clients, self.plan, self.journal = clients, plan, journal

    def __enter__(self) -> "_SweepOnError":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None or issubclass(exc_type, VerificationFailed):
            return
        rep = sweep_build(self.clients, self.plan.build_id, region=self.plan.region,
                          protect=frozenset({self.plan.base_ami}), journal=self.journal)
        _close_after_sweep(self.clients, self.journal, rep)
        if isinstance(exc, PipelineError):
            exc.message = f"{exc.message}; {rep.sentence(self.plan.build_id)}"
            exc.args = (exc.message,)


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _new_image(clients: Clients, region: str, ami: str,
               version: P.PackerVersion) -> tuple[list[str], str | None]:
    """The new AMI's snapshot ids and its ``ImdsSupport``, from one DescribeImages.

    Packer 1.6.x cannot set ``imds_support``, so ``ImdsSupport=v2.0`` is set on the AMI
    first (AWS accepts it on existing AMIs, hashicorp/packer-plugin-amazon#346). The value
    is what DescribeImages reports afterwards (None when the endpoint does not keep it).
    """
    ec2 = clients.client("ec2", region=region)
    if not version.supports_imds_support:
        try:
            ec2.modify_image_attribute(ImageId=ami, ImdsSupport={"Value": "v2.0"})
        except ClientError as err:
            log.warning("could not set ImdsSupport v2.0 on %s: %s", ami, err)
    images = call(ec2.describe_images, what=f"describing the new AMI {ami}",
                  ImageIds=[ami])["Images"]
    snapshots = cleanup.snapshots_of(images[0]) if images else []
    value = images[0].get("ImdsSupport") if images else None
    if value != "v2.0":
        log.warning("AMI %s reports ImdsSupport %r (the local emulator does not keep it)",
                    ami, value)
    return snapshots, value


def _remove_amis(clients: Clients, journal: Journal, image_ids: dict[str, str]) -> list[str]:
    """Deregister the build's AMIs and their snapshots (a failed verification)."""
    owner = journal.owner()
    removed: list[str] = []
    failed: list[str] = []
    for region, ami in image_ids.items():
        for r in cleanup.deregister_images(clients, region, owner, [ami], with_snapshots=True):
            (removed if r.outcome == "removed" else failed if not r.ok else []).append(r.id)
    rep = SweepReport()
    rep.failed = failed
    _close_after_sweep(clients, journal, rep)
    return removed


# --------------------------------------------------------------------------- journal


class _Recorder:
    """Journal every resource Packer names, from its stream, as soon as it is named.

    The key pair name is fixed by the template (``packer_<build id>``) and recorded when
    the journal opens; the temporary security group by the name Packer prints (resolved
    to its id when it exists); the instance by its id, and with it (one DescribeInstances
    by id) its volumes, security groups and key pair; every AMI id Packer prints.
    """

    def __init__(self, clients: Clients, plan: BakePlan, journal: Journal) -> None:
        self.clients, self.plan, self.journal = clients, plan, journal
        self.region = plan.region

    def on_event(self, ev: P.PackerEvent) -> None:
        if ev.type != "ui":
            return
        text = ev.message
        for attr, rx in P.SEEN:
            for m in rx.finditer(text):
                self._note(attr, m[1])

    def _note(self, attr: str, value: str) -> None:
        j = self.journal
        if attr == "key_pairs":
            j.record("key-pair", value, self.region)
        elif attr == "security_groups":
            j.record("security-group-name", value, self.region)
        elif attr == "amis" and value != self.plan.base_ami:
            j.record("image", value, self.region)
        elif attr == "instance_ids":
            j.record("instance", value, self.region)
            self._attached(value)

    def _attached(self, instance_id: str) -> None:
        try:
            resp = self.clients.client("ec2", region=self.region).describe_instances(
                InstanceIds=[instance_id])
        except (ClientError, BotoCoreError) as err:
            log.warning("could not describe build instance %s for the journal: %s",
                        instance_id, err)
            return
        items: list[tuple[str, str, str | None]] = []
        for res in resp.get("Reservations", []):
            for inst in res.get("Instances", []):
                for g in inst.get("SecurityGroups", []):
                    if g.get("GroupName", "").startswith("packer_"):
                        items.append(("security-group", g["GroupId"], self.region))
                if inst.get("KeyName", "").startswith("packer_"):
                    items.append(("key-pair", inst["KeyName"], self.region))
                for m in inst.get("BlockDeviceMappings", []):
                    vol = (m.get("Ebs") or {}).get("VolumeId")
                    if vol:
                        items.append(("volume", vol, self.region))
        self.journal.record_many(items)


def _open_journal(settings: Settings, clients: Clients, plan: BakePlan) -> Journal:
    journal = Journal.open(clients, settings.ssm_prefix, plan.image.name, plan.build_id,
                           region=settings.aws.region)
    journal.record_many([
        ("key-pair", f"packer_{plan.build_id}", plan.region),
        # The template names the AMI <prefix>-<time>-<build id tail>: found by name even
        # when the run dies before Packer hears CreateImage's answer (untagged till the end).
        ("image-name", f"{plan.variables.get('ami_name_prefix') or plan.image.name}-*-"
                       f"{plan.build_id[-6:]}", plan.region)])
    return journal


def _close_after_sweep(clients: Clients, journal: Journal, rep: "SweepReport") -> None:
    """All removed: the journal goes too; otherwise it stays ``failed`` for reap."""
    if rep.failed or journal.clients is None:
        journal.close("failed")
        return
    try:
        cleanup.delete_parameters(clients, journal.region, cleanup.Owner(journal.build_id),
                                  [journal.name])
    except (ClientError, BotoCoreError) as err:
        log.warning("could not delete the journal %s: %s", journal.name, err)


# --------------------------------------------------------------------------- sweep


@dataclass(slots=True)
class SweepReport:
    """What a clean-up of one build removed, found already gone, or could not remove."""

    removed: dict[str, list[str]] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)

    def add(self, kind: str, rid: str) -> None:
        self.removed.setdefault(kind, []).append(rid)

    def count(self) -> int:
        return sum(len(v) for v in self.removed.values())

    def sentence(self, build_id: str, journal: str = "") -> str:
        """One clause for the error line: removed N; or what stays and where it is recorded."""
        text = f"removed {self.count()} leftover resource(s) of build {build_id}"
        if self.failed:
            text += (f"; {len(self.failed)} could not be removed and stay recorded in the "
                     f"creation journal for `invoke reap --apply`: " + ", ".join(self.failed[:6]))
        return text


_KIND_KEYS = {"instance": "instances", "image": "images", "snapshot": "snapshots",
              "volume": "volumes", "security-group": "security_groups",
              "key-pair": "key_pairs"}


def _tagged(build_id: str) -> list[dict[str, Any]]:
    return [{"Name": f"tag:{T.BUILD_ID}", "Values": [build_id]}]


def _all(ec2: Any, op: str, key: str, **kw: Any) -> list[dict[str, Any]]:
    """Every item of a paginated, filtered Describe call."""
    return [item for page in ec2.get_paginator(op).paginate(**kw) for item in page[key]]


def tagged_resources(clients: Clients, build_id: str,
                     region: str | None = None) -> list[cleanup.Resource]:
    """Everything in ``region`` tagged with ``build_id`` (filtered describes only)."""
    if not build_id:
        raise UnsafeSelection("listing a build's resources: no build id")
    ec2 = clients.client("ec2", region=region)
    reg = region or clients.region
    flt = _tagged(build_id)
    out = [cleanup.Resource("instance", i["InstanceId"], reg)
           for r in _all(ec2, "describe_instances", "Reservations", Filters=flt)
           for i in r["Instances"] if i["State"]["Name"] != "terminated"]
    out += [cleanup.Resource("image", i["ImageId"], reg)
            for i in _all(ec2, "describe_images", "Images", Owners=["self"], Filters=flt)]
    out += [cleanup.Resource("snapshot", s["SnapshotId"], reg)
            for s in _all(ec2, "describe_snapshots", "Snapshots", OwnerIds=["self"],
                          Filters=flt)]
    out += [cleanup.Resource("volume", v["VolumeId"], reg)
            for v in _all(ec2, "describe_volumes", "Volumes", Filters=flt)]
    out += [cleanup.Resource("security-group", g["GroupId"], reg)
            for g in _all(ec2, "describe_security_groups", "SecurityGroups", Filters=flt)]
    out += [cleanup.Resource("key-pair", k["KeyName"], reg)
            for k in ec2.describe_key_pairs(Filters=flt)["KeyPairs"]]
    return out


def sweep_build(clients: Clients, build_id: str, *, region: str | None = None,
                run: P.PackerRun | None = None, protect: frozenset[str] = frozenset(),
                settle_seconds: float = 120, journal: Journal | None = None) -> SweepReport:
    """Remove everything of ``build_id``: instances, AMIs, snapshots, volumes, groups, keys.

    What: the resources tagged with the build id (filtered describes), everything the
    build's journal recorded (Packer 1.6.x does not tag its key pair and security
    group), the names Packer printed in ``run``, and the key pair ``packer_<build id>``
    the template names. How: :func:`pipeline.aws.cleanup.remove`, which re-checks each
    one's ownership with a describe by id just before its call. AMIs in ``protect``
    (the base AMI) and their snapshots are never touched.
    """
    reg = region or clients.region
    journal = journal or memory_journal(build_id, region=reg)
    journal.record("key-pair", f"packer_{build_id}", reg)
    if run is not None:
        journal.record_many([("instance", i, reg) for i in run.instance_ids]
                            + [("key-pair", k, reg) for k in run.key_pairs]
                            + [("security-group-name", g, reg) for g in run.security_groups]
                            + [("image", a, reg) for a in run.amis])
    found = tagged_resources(clients, build_id, region)
    resources = [r for r in journal.resources() + found if r.id not in protect]
    protected = _protected_snapshots(clients, reg, protect)
    resources = [r for r in dict.fromkeys(resources) if r.id not in protected]
    rep = SweepReport()
    if not resources:
        return rep
    owner = journal.owner()
    for r in cleanup.remove(clients, owner, resources, settle=settle_seconds,
                            protect=protect | protected):
        if r.outcome == "removed":
            rep.add(_KIND_KEYS.get(r.kind, r.kind), r.id)
        elif r.outcome == "gone":
            rep.gone.append(f"{r.kind} {r.id}")
        elif r.outcome == "kept":        # protected AMI, or a snapshot another AMI uses
            log.info("sweep of build %s keeps %s %s: %s", build_id, r.kind, r.id, r.note)
        else:
            rep.failed.append(f"{r.kind} {r.id}: {r.error}")
    if rep.count():
        log.info("sweep of build %s removed %s", build_id,
                 {k: len(v) for k, v in rep.removed.items()})
    return rep


def _protected_snapshots(clients: Clients, region: str, protect: frozenset[str]) -> set[str]:
    amis = sorted(a for a in protect if a.startswith("ami-"))
    if not amis:
        return set()
    try:
        images = clients.client("ec2", region=region).describe_images(ImageIds=amis)["Images"]
    except ClientError:
        return set()
    return {s for img in images for s in cleanup.snapshots_of(img)}


def _wait_terminated(ec2: Any, ids: list[str], timeout: float) -> None:
    """Until every instance in ``ids`` is ``terminated`` (or gone): the one waiter."""
    cleanup.wait_terminated(ec2, ids, timeout)
