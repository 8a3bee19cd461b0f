"""``invoke demo``: the whole pipeline on the embedded local AWS emulator, told as a story.

Nothing here talks to real AWS: the demo starts :class:`pipeline_dev.emulator.Emulator` on a
free port, points this process at it (``AWS_ENDPOINT_URL`` and fake credentials), writes
a configuration based on ``pipeline.example.yaml`` into its work folder, makes a small
AL2023-like sample disk (GPT, ext4, streamOptimized VMDK) with :mod:`pipeline_dev.diskimage`,
and then runs the same library calls the tasks run:

verify the disk offline -> import it (VM Import, then EBS direct snapshot) -> bake from
the seeded EKS AL2023 base with Packer -> publish a launch template (creating it) ->
rebuild (nothing changed: skip; forced: bake and publish a second, staged version) ->
promote -> history -> rollback.

It ends with how to run the same against real AWS. The narration is written to the
``stream`` passed in (stdout, or stderr under ``--json``); library logging stays quiet.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

import yaml

__all__ = ["DemoStep", "DemoResult", "Narrator", "run_demo", "REAL_AWS_STEPS"]

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "pipeline" / "data" / "pipeline.example.yaml"   # packaged (a link in the checkout)
TEMPLATE = ROOT / "pipeline" / "data" / "packer" / "eks-node"   # the packaged template
BUCKET = "eks-ami-pipeline-imports"
BAKED = "eks-node-al2023"
IMPORTED = "eks-node-imported"
LAUNCH_TEMPLATE = "eks-nodes"

REAL_AWS_STEPS = """\
Run the same against real AWS:
  1. cp pipeline.example.yaml pipeline.yaml, delete aws.endpoint_url, and fill in your
     cluster (endpoint, certificate_authority, service_cidr), build.s3_bucket, the node
     instance_profile and security_group_ids.
  2. Give your credentials the least privilege this tool needs:
       invoke iam-policy > policy.json     # attach it to your role or CI's OIDC role
  3. export AWS_PROFILE=...  (or run in CI with OIDC: .github/workflows/rebuild.yml)
  4. invoke check-config
     invoke verify --image disk.vmdk --require nodeadm
     invoke import-image --image disk.vmdk --create-role      # or: invoke bake
     invoke publish-template --ami ami-... --create --no-default
     invoke promote --template eks-nodes --version N
     invoke history; invoke rollback --template eks-nodes
     invoke rebuild            # what the scheduled workflow runs
     invoke prune; invoke reap # dry runs; add --apply
"""


@dataclass(slots=True)
class DemoStep:
    title: str
    command: str
    status: str                    # ok | skipped | failed
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)
    note: str | None = None


@dataclass(slots=True)
class DemoResult:
    workdir: str
    endpoint: str
    steps: list[DemoStep] = field(default_factory=list)
    seconds: float = 0.0
    workdir_kept: bool = True

    @property
    def exit_code(self) -> int:
        return 1 if any(s.status != "ok" for s in self.steps) else 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["exit_code"] = self.exit_code
        return out

    def summary(self) -> str:
        ok = sum(1 for s in self.steps if s.status == "ok")
        where = (f"work folder kept: {self.workdir}" if self.workdir_kept
                 else "temporary work folder removed; pass --workdir DIR to keep it")
        head = (f"demo finished in {self.seconds:.1f} s: {ok} of {len(self.steps)} steps ok "
                f"({where})")
        bad = [f"  {s.status}: {s.title}: {s.note}" for s in self.steps if s.status != "ok"]
        return "\n".join([head, *bad])


class Narrator:
    """Tells the story on a text stream: a heading, the equivalent command, the outcome."""

    def __init__(self, stream: TextIO) -> None:
        self.out = stream
        self._n = 0

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def step(self, title: str, command: str) -> None:
        self._n += 1
        self.say()
        self.say(f"== {self._n}. {title}")
        self.say(f"   $ {command}")

    def result(self, text: str) -> None:
        for line in str(text).splitlines():
            self.say(f"   {line}")

    def skipped(self, reason: str) -> None:
        self.say(f"   !!! SKIPPED: {reason}")


# --------------------------------------------------------------------------- set-up


@contextlib.contextmanager
def _emulated_env(endpoint: str) -> Iterator[None]:
    """Point this process at the emulator with fake credentials; restore afterwards."""
    wanted = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
              "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
              "AWS_PROFILE": None, "AWS_SESSION_TOKEN": None, "PIPELINE_CONFIG": None}
    saved = {k: os.environ.get(k) for k in wanted}
    try:
        for k, v in wanted.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    if os.environ.get("PIPELINE_DEBUG"):
        yield
        return
    logger = logging.getLogger("pipeline")
    before = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(before)


def _write_config(workdir: Path, endpoint: str, sample: Path, security_group: str) -> Path:
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["aws"]["endpoint_url"] = endpoint
    raw["build"].update({"s3_bucket": BUCKET, "state_dir": str(workdir / "build")})
    raw["karpenter"]["output_dir"] = str(workdir / "build" / "karpenter")
    for img in raw["images"]:
        if img["name"] == BAKED:
            img["bake"]["template"] = str(TEMPLATE)
        if img["name"] == IMPORTED:
            img["import"]["source"] = str(sample)
            img["require"] = "nodeadm"
    for lt in raw["launch_templates"]:
        lt["security_group_ids"] = [security_group]
        lt["set_default"] = False      # rebuilds stage a version; promote switches traffic
    path = workdir / "pipeline.yaml"
    path.write_text("# Written by `invoke demo` from pipeline.example.yaml for the local "
                    "emulator.\n" + yaml.safe_dump(raw, sort_keys=False))
    return path


def _make_sample(workdir: Path) -> Path:
    from pipeline_dev.diskimage import ImageSpec, build_image, root_tree

    tree = root_tree(workdir / "sample" / "root", "al2023")
    out = workdir / "sample" / "eks-node.vmdk"
    build_image(tree, out, ImageSpec(fs="ext4", table="gpt", fmt="vmdk-stream",
                                     size=64 * 1024 * 1024))
    shutil.rmtree(tree, ignore_errors=True)
    return out


def _node_security_group(clients: Any) -> str:
    """A node security group like the one a cluster has (default egress: everything)."""
    ec2 = clients.client("ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    kw = {"VpcId": vpc[0]["VpcId"]} if vpc else {}
    return str(ec2.create_security_group(GroupName="eks-nodes", Description="EKS nodes (demo)",
                                         **kw)["GroupId"])


# --------------------------------------------------------------------------- steps


class _Story:
    def __init__(self, narrator: Narrator, result: DemoResult) -> None:
        self.n = narrator
        self.result = result

    def run(self, title: str, command: str, fn: Callable[[], Any],
            details: Callable[[Any], dict[str, Any]] | None = None) -> Any:
        """Run one step; a missing module is skipped loudly, any failure stops the story."""
        self.n.step(title, command)
        t0 = time.monotonic()
        try:
            value = fn()
        except ModuleNotFoundError as err:
            note = f"{err.name} is not available in this checkout"
            self.n.skipped(note)
            self.result.steps.append(DemoStep(title, command, "skipped",
                                              time.monotonic() - t0, note=note))
            return None
        except Exception as err:
            msg = getattr(err, "message", None) or f"{type(err).__name__}: {err}"
            self.n.say(f"   FAILED: {msg}")
            self.result.steps.append(DemoStep(title, command, "failed", time.monotonic() - t0,
                                              note=msg))
            raise
        seconds = time.monotonic() - t0
        text = value.summary() if hasattr(value, "summary") else str(value)
        self.n.result(text)
        self.n.say(f"   ({seconds:.1f} s)")
        self.result.steps.append(DemoStep(title, command, "ok", seconds,
                                          (details or (lambda v: {}))(value)))
        return value


def _story(story: _Story, settings: Any, clients: Any, sample: Path) -> None:
    n = story.n
    from pipeline.ingest.importer import ImportRequest, import_image
    from pipeline.image.verify import verify_image

    story.run("Verify the sample disk offline: can it join a cluster?",
              f"invoke verify --image {sample.name} --require nodeadm",
              lambda: verify_image(sample, require="nodeadm"),
              lambda r: {"verdict": getattr(r, "verdict", None)})
    n.say("   The disk is read in place (no mount, no root): the AL2023 bootstrap.sh is the")
    n.say("   stub, so the node must start through nodeadm, and nodeadm is there.")

    clients.client("s3").create_bucket(Bucket=BUCKET)
    story.run("Import it with VM Import (upload to S3, ImportImage, wait, verify the AMI)",
              f"invoke import-image --name {IMPORTED} --method vm-import --create-role",
              lambda: import_image(settings, clients, ImportRequest(
                  name=IMPORTED, method="vm-import", create_role=True, poll_interval=0.5,
                  poll_max=1.0)),
              lambda r: {"image_id": r.image_id, "build_id": r.build_id})
    story.run("Import it again, the fast way: straight into an EBS snapshot (coldsnap-style)",
              f"invoke import-image --name {IMPORTED} --method snapshot",
              lambda: import_image(settings, clients, ImportRequest(
                  name=IMPORTED, method="snapshot")),
              lambda r: {"image_id": r.image_id, "bytes_sent": r.bytes_sent})

    from pipeline.bake.build import bake

    baked = story.run("Bake with Packer from the EKS-optimized AL2023 base (seeded SSM parameter)",
                      f"invoke bake --image {BAKED}",
                      lambda: bake(settings, clients, BAKED),
                      lambda r: {"image_ids": r.image_ids, "build_id": r.build_id})
    if baked is None:
        return
    ami = baked.image_ids[settings.aws.region]
    n.say("   On the emulator nothing runs inside the build instance, so the offline check")
    n.say("   of the new AMI's snapshot is what proves the bootstrap contract.")

    from pipeline.publish.release import PublishRequest, publish, rollback

    story.run("Publish it into a new launch template (user data rendered for nodeadm, linted)",
              f"invoke publish-template --ami {ami} --template {LAUNCH_TEMPLATE} --create "
              "--karpenter v1",
              lambda: publish(settings, clients, PublishRequest(
                  ami_id=ami, template=LAUNCH_TEMPLATE, create=True, karpenter="v1")),
              lambda r: {"version": r.version, "template_id": r.template_id})

    from pipeline.lifecycle.rebuild import rebuild

    story.run("The scheduled rebuild: nothing changed, so nothing is built",
              f"invoke rebuild --image {BAKED}",
              lambda: rebuild(settings, clients, image=BAKED))
    story.run("A forced rebuild: bake, verify, distribute, publish version 2 (staged)",
              f"invoke rebuild --image {BAKED} --force",
              lambda: rebuild(settings, clients, image=BAKED, force=True),
              lambda r: {"published": r.images[0].published})
    n.say("   The template says set_default: false, so version 2 is staged: nodes keep")
    n.say("   launching version 1 until someone promotes it.")

    from pipeline.publish.release import promote

    story.run("Promote version 2: new nodes now launch from it",
              f"invoke promote --template {LAUNCH_TEMPLATE} --version 2",
              lambda: promote(settings, clients, LAUNCH_TEMPLATE, 2))

    from pipeline.lineage.store import history

    story.run("History: every build, its AMIs, the template versions and pointers using it",
              "invoke history", lambda: history(settings, clients))
    story.run("Something is wrong with version 2? Roll back",
              f"invoke rollback --template {LAUNCH_TEMPLATE}",
              lambda: rollback(settings, clients, LAUNCH_TEMPLATE))


def run_demo(workdir: str | os.PathLike[str] | None = None, as_json: bool = False,
             stream: TextIO | None = None) -> DemoResult:
    """Run the story against a fresh embedded emulator; returns what each step did."""
    import sys

    from pipeline.aws.clients import Clients
    from pipeline.core.config import load_settings
    from pipeline_dev.emulator import Emulator

    narrator = Narrator(stream or (sys.stderr if as_json else sys.stdout))
    own = workdir is None
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="eks-ami-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    emu = Emulator("127.0.0.1", 0, import_seconds=2.0)
    narrator.say("eks-ami-pipeline demo: the whole pipeline against a local AWS emulator")
    narrator.say("(moto plus VM Import, EBS direct APIs and the public EKS AMIs; nothing leaves "
                 "this machine)")
    emu.start()
    result = DemoResult(workdir=str(work), endpoint=emu.endpoint)
    try:
        with _emulated_env(emu.endpoint), _quiet_logs():
            narrator.say(f"emulator: {emu.endpoint}   work folder: {work}")
            sample = _make_sample(work)
            narrator.say(f"sample disk: {sample} ({sample.stat().st_size // 1024} KiB on disk, "
                         "AL2023-like root, GPT, ext4, streamOptimized VMDK)")
            boot_clients = Clients(load_settings(_write_config(
                work, emu.endpoint, sample, "sg-00000000")).aws)
            sg = _node_security_group(boot_clients)
            config = _write_config(work, emu.endpoint, sample, sg)
            narrator.say(f"configuration: {config} (pipeline.example.yaml, pointed at the "
                         "emulator)")
            settings = load_settings(config)
            clients = Clients(settings.aws)
            _story(_Story(narrator, result), settings, clients, sample)
    finally:
        emu.stop()
        result.seconds = time.monotonic() - t0
        if own and result.exit_code == 0 and not os.environ.get("PIPELINE_KEEP_DEMO"):
            shutil.rmtree(work, ignore_errors=True)
            result.workdir_kept = False
    narrator.say()
    narrator.say(REAL_AWS_STEPS)
    return result
