"""Invoke tasks: thin wrappers over the ``pipeline`` library.

Each task parses its flags, loads the settings, calls one library function under
:func:`pipeline.cli.run_task` (exit 0 ok, 1 failed, 2 bad input; ``--json`` prints one
JSON document) and renders the result. Library modules are imported inside the tasks
so that ``invoke verify --image`` starts fast and never loads boto3.
"""
from __future__ import annotations

from typing import Any, Callable

from invoke.collection import Collection
from invoke.exceptions import ParseError
from invoke.tasks import Task
from invoke.tasks import task as _invoke_task

CONFIG_HELP = "Configuration file (default: $PIPELINE_CONFIG, then ./pipeline.yaml)"
JSON_HELP = "Print one JSON document on stdout instead of the human summary"
#: --region and --profile: the flag beats aws.region/aws.profile in the config, which beat
#: $AWS_REGION, $AWS_DEFAULT_REGION (resp. $AWS_PROFILE) and the profile's own region.
AWS_HELP = {
    "region": "AWS region (default: aws.region in the config, then $AWS_REGION, "
              "$AWS_DEFAULT_REGION, the profile's region, us-east-1)",
    "profile": "AWS profile (default: aws.profile in the config, then $AWS_PROFILE)",
}


class _Number:
    """An Invoke argument kind for a whole-number (or decimal) flag: a word that is not a
    number is a usage error naming the flag (exit 2 under ``eks-ami``), not a traceback.

    Equal to ``int`` (``str`` for decimals) so that Invoke's help shows ``INT``/``STRING``.
    """

    def __init__(self, kind: type, flag: str, task: str = "") -> None:
        self.kind, self.flag, self.task = kind, flag, task
        self.__name__ = kind.__name__
        self._shown: type = int if kind is int else str

    def __call__(self, value: str) -> Any:
        try:
            return self.kind(value)
        except (TypeError, ValueError):
            what = "a whole number" if self.kind is int else "a number"
            where = f"{self.task}: " if self.task else ""
            raise ParseError(f"{where}--{self.flag}: {value!r} is not {what}; "
                             f"give e.g. --{self.flag} {'3' if self.kind is int else '2.5'}"
                             ) from None

    def __eq__(self, other: object) -> bool:
        return other is self._shown or other is self

    def __hash__(self) -> int:
        return hash(self._shown)


#: One short option per meaning in every task that has the flag; no other flag of any task
#: takes the letter. The rest get Invoke's automatic letters (the first free one).
SHORT_FLAGS = {"config": "c", "json": "j", "region": "e", "profile": "p"}


class PipelineTask(Task):  # type: ignore[type-arg]
    """An Invoke task with the project's flag conventions (:data:`SHORT_FLAGS`; numbers
    are checked while parsing, so ``--keep abc`` is a usage error, not a traceback)."""

    def arg_opts(self, name: str, default: Any, taken_names: set[str]) -> dict[str, Any]:
        reserved = {short for long_, short in SHORT_FLAGS.items() if long_ != name}
        opts: dict[str, Any] = super().arg_opts(name, default, set(taken_names) | reserved)
        if name in SHORT_FLAGS:
            opts["names"] = [opts["names"][0], SHORT_FLAGS[name]]
        if opts.get("kind") in (int, float) and not isinstance(default, bool):
            opts["kind"] = _Number(type(default), opts["names"][0],
                                   str(self.name or "").replace("_", "-"))
        return opts


def task(**kwargs: Any) -> Callable[[Callable[..., Any]], Task]:  # type: ignore[type-arg]
    """``invoke.task`` with :class:`PipelineTask`."""
    return _invoke_task(klass=PipelineTask, **kwargs)


def _settings(config: str | None, required: bool = True, *, region: str | None = None,
              profile: str | None = None) -> Any:
    from pipeline.core.config import load_settings

    return load_settings(config, required=required, region=region, profile=profile)


def _clients(settings: Any) -> Any:
    from pipeline.aws.clients import Clients

    return Clients(settings.aws)


def _run(fn: Any, json: bool) -> Any:
    from pipeline.cli import run_task, setup_logging

    setup_logging()
    return run_task(fn, as_json=json)


@task(help={"port": "Port to listen on (default 5077; 0 picks a free one)",
            "host": "Address to bind (default 127.0.0.1)",
            "import_seconds": "Seconds a VM Import task takes from pending to completed",
            "timing": "instant (default: resources ready at once) or realistic (AMIs, "
                      "snapshots and instances pass through pending/shutting-down)",
            "throttle": "Fraction of AWS calls answered with throttling (0-1, default 0)",
            "server_errors": "Fraction of AWS calls answered with a 5xx (0-1, default 0)"})
def emulator(c, port=5077, host="127.0.0.1", import_seconds=20.0, timing="instant",
             throttle=0.0, server_errors=0.0):
    """Run the local AWS emulator (moto server plus VM Import, EBS data, EKS SSM params)."""
    from pipeline_dev.emulator import serve
    from pipeline_dev.emulator.timing import PROFILES

    if timing not in PROFILES:
        import sys

        sys.stderr.write(f"--timing {timing}: use one of {', '.join(PROFILES)}\n")
        raise SystemExit(2)
    for flag, value in (("--throttle", throttle), ("--server-errors", server_errors)):
        if not 0.0 <= float(value) <= 1.0:
            import sys

            sys.stderr.write(f"{flag} {value}: give a fraction between 0 and 1\n")
            raise SystemExit(2)
    serve(host=host, port=int(port), import_seconds=float(import_seconds), timing=timing,
          throttle=float(throttle), server_errors=float(server_errors))


@task(help={"workdir": "Folder for the sample image and build outputs (default: a temp dir)",
            "json": JSON_HELP})
def demo(c, workdir=None, json=False):
    """Run the whole pipeline on the embedded local AWS emulator and tell the story."""
    from pipeline_dev.demo import run_demo

    _run(lambda: run_demo(workdir=workdir, as_json=json), json)


@task(help={"image": "Local disk image: raw, VMDK, VHD/VHDX, qcow2 or OVA",
            "ami": "AMI id: read its root snapshot through the EBS direct APIs",
            "require": "Bootstrap mechanism to require: any (default), bootstrap.sh or nodeadm",
            "no_tag": "With --ami: do not record the result as tags on the AMI",
            "region": "With --ami: the AMI's region (default: the configured region)",
            "cluster_version": "Kubernetes minor version of the cluster (1.31): a kubelet newer "
                               "than it or more than 3 minors older fails (version-skew)",
            "strict": "Runtime and image-hygiene findings fail instead of warning",
            "config": CONFIG_HELP, "json": JSON_HELP})
def verify(c, image=None, ami=None, require="any", no_tag=False, region=None, config=None,
           json=False, cluster_version=None, strict=False):
    """Prove offline that a disk image or AMI can join an EKS cluster as a node."""

    if image and not (ami or no_tag or region or config):
        from pipeline.cli import run_verify_image   # the same call as `eks-ami verify --image`

        run_verify_image(image, require=require, as_json=json,
                         cluster_version=cluster_version, strict=strict)
        return

    def go() -> Any:
        from pipeline.core.errors import InputError

        if bool(image) == bool(ami):
            raise InputError("verify: give exactly one of --image PATH or --ami AMI_ID")
        idle = [f for f, given in (("--no-tag", no_tag), ("--region", region)) if given]
        if image and idle:
            raise InputError(f"verify --image: {', '.join(idle)} only apply to --ami (a local "
                             "image is read offline, nothing is tagged); drop them")
        if image:
            from pipeline.image import verify as v

            return v.verify_image(image, require=require, cluster_version=cluster_version,
                                  strict=strict)
        settings = _settings(config, required=False)
        from pipeline.lineage.verify_ami import verify_ami

        return verify_ami(_clients(settings), ami, require=require, tag=not no_tag,
                            region=region, cluster_version=cluster_version, strict=strict)

    _run(go, json)


@task(help={"image": "Disk image to import (default: the configured image's import.source)",
            "name": "Configured image name (default: the only one with an import section)",
            "method": "vm-import (default) or snapshot (EBS direct APIs + RegisterImage)",
            "bucket": "S3 bucket for the VM Import upload (default: from config)",
            "create_role": "Create the vmimport service role, scoped to the bucket, if missing",
            "keep_upload": "Keep the S3 object after a successful import",
            "detach": "Do not cancel the import task on Ctrl-C; leave it running",
            "timeout": "Seconds to wait for the import task (default 7200)",
            "kms_key": "KMS key id for an encrypted import (default: AWS managed key)",
            "config": CONFIG_HELP, **AWS_HELP, "json": JSON_HELP})
def import_image(c, image=None, name=None, method=None, bucket=None, create_role=False,
                 keep_upload=False, detach=False, timeout=7200, kms_key=None, config=None, region=None,
                 profile=None, json=False):
    """Import a VM disk image into EC2 as a verified AMI."""

    def go() -> Any:
        from pipeline import cli
        from pipeline.ingest.importer import ImportRequest, import_image as run

        settings = _settings(config, region=region, profile=profile)
        req = ImportRequest(image=image, name=name, method=method, bucket=bucket,
                            create_role=create_role, keep_upload=keep_upload, detach=detach,
                            timeout=float(timeout), kms_key_id=kms_key)
        return run(settings, _clients(settings), req, progress=cli.progress_for(json))

    _run(go, json)


@task(help={"image": "Configured image name to bake (default: the only one with a bake section)",
            "dry_run": "Print the Packer command and variables, run nothing",
            "config": CONFIG_HELP, **AWS_HELP, "json": JSON_HELP})
def bake(c, image=None, dry_run=False, config=None, region=None, profile=None, json=False):
    """Build an AMI with Packer from packer/, then verify it offline."""

    def go() -> Any:
        import gc

        # This process ends after one bake, which makes few reference cycles: no cyclic
        # GC while it runs (~240 collections, 0.04-0.1 s, mostly over boto3's and
        # dissect's import-time objects) and none over everything at exit (~0.2 s).
        gc.disable()
        from pipeline.bake import packer

        packer.prefetch_version()   # `packer version` runs while boto3 and the rest load
        from pipeline import cli
        from pipeline.bake.build import bake as run

        settings = _settings(config, region=region, profile=profile)
        result = run(settings, _clients(settings), image, dry_run=dry_run,
                     progress=cli.progress_for(json))
        gc.freeze()
        return result

    _run(go, json)


@task(help={"ami": "AMI id to publish (must be available and verified)",
            "template": "Launch template name (default: the only configured one)",
            "source_version": "Version to inherit from (default: the template's default)",
            "no_default": "Create the version without making it the default",
            "create": "Create the launch template from config if it does not exist",
            "user_data_file": "Use this user data file instead of rendering it (still linted)",
            "allow_unverified": "Publish an AMI that has no verification record",
            "karpenter": "Also write Karpenter manifests: v1 or v1alpha5",
            "channel": "SSM pointer channel to move (default: the template's channel)",
            "ad_hoc": "Allow a --template the configuration does not list (the template "
                      "rules are then refused, not warned)",
            "config": CONFIG_HELP, **AWS_HELP, "json": JSON_HELP})
def publish_template(c, ami, template=None, source_version=None, no_default=False, create=False,
                     user_data_file=None, allow_unverified=False, karpenter=None, channel=None,
                     config=None, region=None, profile=None, json=False, ad_hoc=False):
    """Publish an AMI with rendered, linted user data as a new launch template version."""

    def go() -> Any:
        from pipeline.publish.release import PublishRequest, publish

        settings = _settings(config, region=region, profile=profile)
        req = PublishRequest(ami_id=ami, template=template, source_version=source_version,
                             set_default=not no_default, create=create,
                             user_data_file=user_data_file, allow_unverified=allow_unverified,
                             karpenter=karpenter, channel=channel, ad_hoc=ad_hoc)
        return publish(settings, _clients(settings), req)

    _run(go, json)


@task(help={"template": "Launch template name (with --version)",
            "version": "Version number to make the default (with --template)",
            "channel": "Also point this SSM channel at the version's AMI (with --template)",
            "image": "Release train: the configured image to promote (with --to)",
            "to": "Release train: the channel to move (the AMI of the channel before it)",
            "force": "Promote even if the soak, rollback or health gate refuses (needs --reason)",
            "reason": "Why --force overrides the gate (recorded in the build record)",
            "auto": "Promote every auto_promote channel whose gate passes (scheduled step)",
            "config": CONFIG_HELP, **AWS_HELP, "json": JSON_HELP})
def promote(c, template=None, version=None, channel=None, image=None, to=None, force=False,
            reason=None, auto=False, config=None, region=None, profile=None, json=False):
    """Promote along the release train (--image NAME --to CHANNEL, or --auto) through the
    soak/health/blocklist gate, or make a template version the default (--template --version)."""

    def go() -> Any:
        from pipeline.core.errors import InputError

        if auto or image or to:
            from pipeline.lifecycle import rollout

            if template or version:
                raise InputError("promote: --template/--version and --image/--to/--auto are two "
                                 "different promotions; give one of them")
            settings = _settings(config, region=region, profile=profile)
            if auto:
                return rollout.auto_promote(settings, _clients(settings), image=image)
            if not (image and to):
                raise InputError("promote: give --image NAME and --to CHANNEL together")
            return rollout.promote(settings, _clients(settings), image, to, force=force,
                                   reason=reason)
        if not (template and version):
            raise InputError("promote: give --image NAME --to CHANNEL, --auto, or --template "
                             "NAME --version N")
        from pipeline.publish.release import promote as run

        settings = _settings(config, region=region, profile=profile)
        return run(settings, _clients(settings), template, version, channel=channel)

    _run(go, json)


@task(help={"template": "Launch template name",
            "channel": "Also point this SSM channel at the restored AMI (with --image: the "
                       "channel to roll back)",
            "image": "Release train: roll this image's --channel back to its previous AMI",
            "block": "With --image: also block the current AMI (never promoted or published "
                     "again)",
            "reason": "Why (recorded with the rollback and the block)",
            "config": CONFIG_HELP, **AWS_HELP, "json": JSON_HELP})
def rollback(c, template=None, channel=None, image=None, block=False, reason=None, config=None, region=None,
             profile=None, json=False):
    """Make the previous version with a different AMI the default, and show what changed;
    or with --image NAME --channel CHANNEL [--block] move a channel back (and block)."""

    def go() -> Any:
        from pipeline.core.errors import InputError

        if image or block:
            if not (image and channel):
                raise InputError("rollback --block/--image: give --image NAME and --channel CHANNEL")
            from pipeline.lifecycle.rollout import rollback_channel

            settings = _settings(config, region=region, profile=profile)
            return rollback_channel(settings, _clients(settings), image, channel, block=block,
                                    reason=reason)
        if not template:
            raise InputError("rollback: give --template NAME, or --image NAME --channel CHANNEL")
        from pipeline.publish.release import rollback as run

        settings = _settings(config, region=region, profile=profile)
        return run(settings, _clients(settings), template, channel=channel)

    _run(go, json)


@task(help={"template": "Launch template name", "from_version": "Older version (default: default)",
            "to_version": "Newer version (default: $Latest)",
            "config": CONFIG_HELP, **AWS_HELP, "json": JSON_HELP})
def template_diff(c, template, from_version=None, to_version=None, config=None, region=None, profile=None, json=False):
    """Show AMI and decoded user-data differences between two launch template versions."""

    def go() -> Any:
        from pipeline.publish.release import template_diff as run

        settings = _settings(config, region=region, profile=profile)
        return run(_clients(settings), template, from_version, to_version)

    _run(go, json)


@task(help={"output": "Write the template here (default: stdout)",
            "template": "Only this configured launch template (default: every configured one)",
            "no_access_entry": "Leave out the EC2_LINUX EKS access entry (aws-auth-only clusters)",
            "config": CONFIG_HELP, **AWS_HELP, "json": JSON_HELP})
def render_stack(c, output=None, template=None, no_access_entry=False, config=None, region=None,
                 profile=None, json=False):
    """Emit the CloudFormation stack: node role and its access entry, instance profile(s),
    launch template(s); create it with --capabilities CAPABILITY_NAMED_IAM."""

    def go() -> Any:
        from pipeline.publish.stack import render_stack as run

        return run(_settings(config, region=region, profile=profile), output=output,
                   template=template, access_entry=not no_access_entry)

    _run(go, json)


@task(help={"template": "Launch template to read (name)",
            "version": "Version to migrate (default: the template's default version)",
            "output": "Folder for the manifests (default: <karpenter.output_dir>/migrated)",
            "ami_selector": "ssm, id or tags (default: karpenter.ami_selector)",
            "config": CONFIG_HELP, **AWS_HELP, "json": JSON_HELP})
def migrate_template(c, template, version=None, output=None, ami_selector=None, config=None,
                     region=None, profile=None, json=False):
    """Write the Karpenter v1 EC2NodeClass + NodePool equivalent to a launch template version,
    and list what cannot be carried over."""

    def go() -> Any:
        from pathlib import Path

        from pipeline.publish.migrate import migrate_template as run

        settings = _settings(config, region=region, profile=profile)
        return run(settings, _clients(settings), template, version,
                   output_dir=Path(output) if output else None, ami_selector=ami_selector)

    _run(go, json)


@task(help={"image": "Only builds of this configured image", "template": "Only this template",
            "config": CONFIG_HELP, **AWS_HELP, "json": JSON_HELP})
def history(c, image=None, template=None, config=None, region=None, profile=None, json=False):
    """One row per build, newest first, with the template versions and pointers using it."""

    def go() -> Any:
        from pipeline.lineage.store import history as run

        settings = _settings(config, region=region, profile=profile)
        return run(settings, _clients(settings), image=image, template=template)

    _run(go, json)


@task(help={"image": "Only this configured image", "force": "Rebuild even if nothing changed",
            "dry_run": "Decide and print the reason per image; build nothing",
            "plan": "Per image: needs a rebuild and why, plus the CI matrix (no locks, no build)",
            "config": CONFIG_HELP, **AWS_HELP, "json": JSON_HELP})
def rebuild(c, image=None, force=False, dry_run=False, plan=False, config=None, region=None, profile=None, json=False):
    """Rebuild images whose inputs changed or aged, then verify, distribute and publish."""

    def go() -> Any:
        from pipeline import cli

        if plan:
            from pipeline.lifecycle.plan import plan as run_plan

            settings = _settings(config, region=region, profile=profile)
            return run_plan(settings, _clients(settings), image=image, force=force)
        from pipeline.lifecycle.rebuild import rebuild as run

        settings = _settings(config, region=region, profile=profile)
        return run(settings, _clients(settings), image=image, force=force,
                   progress=cli.progress_for(json), dry_run=dry_run)

    _run(go, json)


@task(help={"keep": "Keep the newest N builds per image (default 3)",
            "older_than": "Only builds older than DAYS (default 0)",
            "apply": "Really delete (default: dry run)",
            "deprecate": "Set DeprecateAt instead of deregistering",
            "config": CONFIG_HELP, **AWS_HELP, "json": JSON_HELP})
def prune(c, keep=3, older_than=0, apply=False, deprecate=False, config=None, region=None, profile=None, json=False):
    """Remove unreferenced pipeline AMIs and old template versions (dry run by default)."""

    def go() -> Any:
        from pipeline.lifecycle.prune import prune as run

        settings = _settings(config, region=region, profile=profile)
        return run(settings, _clients(settings), keep=int(keep), older_than_days=int(older_than),
                   apply=apply, deprecate=deprecate)

    _run(go, json)


@task(help={"apply": "Really delete (default: dry run)",
            "grace": "Hours a run without a final record is left alone (default 6)",
            "now": "Decide as if it were this UTC time (ISO 8601; also $PIPELINE_NOW)",
            "config": CONFIG_HELP, **AWS_HELP, "json": JSON_HELP})
def reap(c, apply=False, grace=6.0, now=None, config=None, region=None, profile=None,
         json=False):
    """Remove what runs that did not succeed left (creation journals and build-id tags;
    dry run by default); say what still waits out the grace period."""

    def go() -> Any:
        from pipeline.core.errors import InputError
        from pipeline.lifecycle.prune import reap as run, reap_now

        if float(grace) < 0:
            raise InputError(f"reap: --grace {grace}: expected 0 or more hours")
        try:
            when = reap_now(now)
        except ValueError as err:
            raise InputError(f"reap: --now {now!r}: expected an ISO 8601 time such as "
                             "2026-12-02T14:05:00Z") from err
        settings = _settings(config, region=region, profile=profile)
        return run(settings, _clients(settings), apply=apply, grace_hours=float(grace),
                   now=when)

    _run(go, json)


@task(help={"config": CONFIG_HELP, **AWS_HELP, "json": JSON_HELP})
def iam_policy(c, config=None, region=None, profile=None, json=False):
    """Print the least-privilege IAM policy this tool needs against real AWS."""

    def go() -> Any:
        from pipeline.aws.iam_policy import policy_document

        return policy_document(_settings(config, required=False, region=region, profile=profile))

    _run(go, json)


@task(help={"config": CONFIG_HELP, **AWS_HELP, "json": JSON_HELP})
def check_config(c, config=None, region=None, profile=None, json=False):
    """Validate the configuration file and print the settings it resolves to."""
    _run(lambda: _settings(config, region=region, profile=profile), json)


@task(help={"directory": "Folder to write pipeline.yaml and packer/eks-node/ into (default: "
                         "the current one; `eks-ami init DIR` works too)",
            "force": "Overwrite files that exist", "json": JSON_HELP})
def init(c, directory=None, force=False, json=False):
    """Write a starter pipeline.yaml and a copy of the Packer template for customising."""

    def go() -> Any:
        from pipeline.core.starter import write_starter

        return write_starter(directory or ".", force=force)

    _run(go, json)


ns = Collection(init, emulator, demo, verify, import_image, bake, publish_template, promote, rollback,
                template_diff, render_stack, history, rebuild, prune, reap, iam_policy,
                check_config, migrate_template)
