"""The fault matrix for publish, promote, rollback and distribute (issue 12, item 7).

For each operation a clean run through :class:`fault_proxy.FaultProxy` lists its
mutating AWS calls; then every cell runs the operation again on a fresh account, with
neighbours, and either

- an AWS error injected at one mutating call (``UnauthorizedOperation``, not retried),
- a real SIGINT arriving right after AWS applied one mutating call (its answer lost), or
- Ctrl-C at a step boundary (KeyboardInterrupt from the progress hook the transaction
  reports each step to).

After each cell: the operation failed, the AWS state it owns is exactly as before (for
distribute: no copy left but one a rerun reuses), every neighbour is untouched, and a
rerun without faults converges to the state of the clean run. Each test prints how many
cells it ran.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable

import pytest

import neighbours as nb
from fault_proxy import Fault, FaultProxy
from pipeline.aws.clients import Clients
from pipeline.core import tags as T
from pipeline.core.config import AwsSettings, ImageSettings, Settings, parse_settings
from pipeline.core.errors import PipelineError
from pipeline.core.records import BuildRecord, Verification
from pipeline.lifecycle.distribute import distribute
from pipeline.publish.release import PublishRequest, promote, publish, rollback
from test_publish_support import example_raw, node_security_group

HOME, WEST = "us-east-1", "us-west-2"
REGIONS = (HOME, WEST)
IMAGE = "eks-node-al2023"
TEMPLATE = "eks-nodes"
SHARE = "111122223333"
#: ``FAULT_MATRIX=full`` runs every cell; by default the columns other than publish skip
#: the interrupt cells that repeat an error cell's boundary (each skipped one is counted).
FULL = os.environ.get("FAULT_MATRIX") == "full"


class StopAt:
    """A progress object that raises KeyboardInterrupt when step ``at`` starts."""

    def __init__(self, at: str | None = None,
                 action: Callable[[], None] | None = None) -> None:
        self.at, self.action, self.seen = at, action, []

    def start(self, total: int | None, label: str = "") -> None: ...
    def advance(self, n: int = 1) -> None: ...
    def done(self) -> None: ...

    def status(self, message: str) -> None:
        self.seen.append(message)
        if message == self.at:
            if self.action is not None:
                self.action()
            else:
                raise KeyboardInterrupt


# --------------------------------------------------------------------------- the world


def two_region_build(emulator: Any, clients: Clients, build_id: str) -> dict[str, str]:
    """A verified build available in both regions (as distribute leaves it)."""
    out = {}
    for region in REGIONS:
        ami = emulator.seed_image("al2023", region=region)
        clients.client("ec2", region=region).create_tags(Resources=[ami], Tags=T.to_tag_list({
            T.BUILD_ID: build_id, T.IMAGE_NAME: IMAGE, T.VERIFY_VERDICT: "ok",
            T.VERIFY_MECHANISM: "nodeadm"}))
        out[region] = ami
    return out


def publish_settings(tmp_path: Path, sg: str, cell: int) -> Settings:
    """The example configuration, two regions; cell ``cell`` has its own template, SSM
    prefix and manifest folder (the cells share one account and its neighbours)."""
    raw = example_raw(tmp_path / f"c{cell}", sg_ids=[sg], karpenter=True)
    raw["build"]["ssm_prefix"] = f"/fm{cell}"
    raw["images"] = [i for i in raw["images"] if i["name"] == IMAGE]
    raw["images"][0]["regions"] = list(REGIONS)
    raw["launch_templates"][0].update(set_default=True, name=f"{TEMPLATE}-{cell}")
    return parse_settings(raw, source=tmp_path / "pipeline.yaml")


@dataclasses.dataclass
class World:
    settings: Settings
    builds: dict[str, dict[str, str]]
    neighbours: nb.Neighbours
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def state(clients: Clients, settings: Settings) -> dict[str, Any]:
    """What publish/promote/rollback own in this cell: its template's versions and
    default, every SSM parameter under its prefix in both regions, and the manifest
    folder's files (temporary ones too). The neighbours are checked by their census."""
    out: dict[str, Any] = {}
    name = settings.launch_templates[0].name
    for region in REGIONS:
        ec2 = clients.client("ec2", region=region)
        for lt in ec2.describe_launch_templates(Filters=[
                {"Name": "launch-template-name", "Values": [name]}])["LaunchTemplates"]:
            versions = ec2.describe_launch_template_versions(
                LaunchTemplateId=lt["LaunchTemplateId"], MaxResults=200)["LaunchTemplateVersions"]
            out[f"{region}:lt:{lt['LaunchTemplateName']}"] = (
                lt["DefaultVersionNumber"],
                sorted((v["VersionNumber"], v.get("VersionDescription", ""),
                        v["LaunchTemplateData"].get("ImageId")) for v in versions))
        for page in clients.client("ssm", region=region).get_paginator(
                "get_parameters_by_path").paginate(Path=settings.ssm_prefix, Recursive=True):
            for p in page["Parameters"]:
                out[f"{region}:ssm:{p['Name']}"] = p["Value"]
    folder = settings.karpenter.output_dir
    if folder.is_dir():
        for f in sorted(folder.iterdir()):
            out[f"file:{f.name}"] = f.read_bytes() if f.is_file() else "<dir>"
    return out


def converged(clients: Clients, settings: Settings, ami: dict[str, str]) -> None:
    """The template's default launches ``ami``, exactly one version has it, and every
    region's pointer names that region's copy."""
    ec2 = clients.client("ec2")
    name = settings.launch_templates[0].name
    lt = ec2.describe_launch_templates(LaunchTemplateNames=[name])["LaunchTemplates"][0]
    versions = ec2.describe_launch_template_versions(
        LaunchTemplateId=lt["LaunchTemplateId"], MaxResults=200)["LaunchTemplateVersions"]
    default = next(v for v in versions if v["DefaultVersion"])
    assert default["LaunchTemplateData"]["ImageId"] == ami[HOME]
    assert [v["LaunchTemplateData"]["ImageId"] for v in versions].count(ami[HOME]) == 1
    for region in REGIONS:
        value = clients.client("ssm", region=region).get_parameter(
            Name=f"{settings.ssm_prefix}/{IMAGE}/candidate")["Parameter"]["Value"]
        assert value == ami[region], region


def run_matrix(emulator: Any, clients: Clients, proxied: Clients, proxy: FaultProxy,
               make_world: Callable[[int], World], operation: Callable[[World, Clients, Any], Any],
               check_converged: Callable[[World], None], snapshot: Callable[[World], Any],
               steps: list[str], name: str, sample: Callable[[str, Any], bool] | None = None
               ) -> int:
    """Run every cell of one operation's column; return the number of cells.

    The cells share one account (seeding neighbours costs seconds): each builds its own
    world (``make_world(cell)``) beside the neighbours and the earlier cells' leftovers,
    and the snapshot before/after covers all of it."""
    world = make_world(0)
    proxy.reset()
    operation(world, proxied, StopAt())
    calls = list(dict.fromkeys(proxy.mutating))
    counts: dict[tuple[str, str], int] = {}
    for call in proxy.mutating:
        counts[call] = counts.get(call, 0) + 1
    cells: list[tuple[str, Any]] = []
    for action, region in calls:
        for nth in range(1, counts[(action, region)] + 1):
            for kind in ("error", "interrupt"):
                cells.append((kind, Fault(action, nth=nth, region=region, kind=kind,
                                          code="UnauthorizedOperation")))
    cells += [("step", step) for step in steps]
    assert calls, f"{name}: the clean run made no mutating call"
    every = len(cells)
    if sample is not None and not FULL:
        cells = [(k, w) for k, w in cells if sample(k, w)]
    for cell, (kind, what) in enumerate(cells, start=1):
        world = make_world(cell)
        before = snapshot(world)
        if kind == "step":
            proxy.reset()
            progress: Any = StopAt(what)
        else:
            proxy.reset([what])
            progress = StopAt()
        expected: Any = KeyboardInterrupt if kind != "error" else PipelineError
        with pytest.raises(expected) as exc:
            operation(world, proxied, progress)
        label = f"{name} {kind} at {what}"
        if kind != "step":
            assert proxy.hits == [what], label
        if kind == "error":
            assert "rolled back" in str(exc.value) or "nothing had changed" in str(exc.value) \
                or name == "distribute", (label, str(exc.value))
        assert snapshot(world) == before, label
        nb.assert_untouched(clients, world.neighbours)
        operation(world, clients, StopAt())                  # the next run converges
        check_converged(world)
        nb.assert_untouched(clients, world.neighbours)
    print(f"\nfault matrix: {name}: {len(cells)} cells "
          f"({len(calls)} mutating calls x error/interrupt, {len(steps)} step interrupts"
          + (f"; {every - len(cells)} more with FAULT_MATRIX=full" if every > len(cells) else "")
          + ")")
    return len(cells)


@pytest.fixture
def proxy(emulator: Any):
    with FaultProxy(emulator.endpoint) as p:
        yield p


@pytest.fixture
def proxied(proxy: FaultProxy) -> Clients:
    return Clients(AwsSettings(region=HOME, endpoint_url=proxy.endpoint, max_attempts=2))


PUBLISH_STEPS = ["new template version", "default version", f"channel pointer in {HOME}",
                 f"channel pointer in {WEST}", "Karpenter manifests"]
MOVE_STEPS = ["default version", f"channel pointer in {HOME}", f"channel pointer in {WEST}"]


@pytest.fixture
def account(emulator: Any, clients: Clients) -> dict[str, Any]:
    """One account for a whole column: neighbours and the nodes' security group."""
    return {"neighbours": nb.seed(clients), "sg": node_security_group(clients)}


def _published_world(emulator: Any, clients: Clients, tmp_path: Path, account: dict[str, Any],
                     cell: int, *, second: bool) -> World:
    settings = publish_settings(tmp_path, account["sg"], cell)
    b1 = two_region_build(emulator, clients, f"b-20261201{cell:06d}-aaaaaa")
    b2 = two_region_build(emulator, clients, f"b-20261202{cell:06d}-bbbbbb")
    publish(settings, clients, PublishRequest(ami_id=b1[HOME], create=True))
    if second:
        publish(settings, clients, PublishRequest(ami_id=b2[HOME]))
    return World(settings, {"b1": b1, "b2": b2}, account["neighbours"])


def test_publish_fault_matrix(emulator, clients, proxy, proxied, tmp_path, account):
    def op(w: World, c: Clients, progress: Any) -> Any:
        return publish(w.settings, c, PublishRequest(ami_id=w.builds["b2"][HOME]),
                       progress=progress)

    n = run_matrix(emulator, clients, proxied, proxy,
                   lambda i: _published_world(emulator, clients, tmp_path, account, i, second=False), op,
                   lambda w: converged(clients, w.settings, w.builds["b2"]),
                   lambda w: state(clients, w.settings), PUBLISH_STEPS, "publish")
    assert n >= 8 + len(PUBLISH_STEPS)


def test_promote_fault_matrix(emulator, clients, proxy, proxied, tmp_path, account):
    def op(w: World, c: Clients, progress: Any) -> Any:
        return promote(w.settings, c, w.settings.launch_templates[0].name, 1, progress=progress)

    n = run_matrix(emulator, clients, proxied, proxy,
                   lambda i: _published_world(emulator, clients, tmp_path, account, i, second=True), op,
                   lambda w: converged(clients, w.settings, w.builds["b1"]),
                   lambda w: state(clients, w.settings), MOVE_STEPS, "promote",
                   sample=lambda kind, what: kind != "step")
    assert n >= 6


def test_rollback_fault_matrix(emulator, clients, proxy, proxied, tmp_path, account):
    def op(w: World, c: Clients, progress: Any) -> Any:
        return rollback(w.settings, c, w.settings.launch_templates[0].name, progress=progress)

    def rolled_back(w: World) -> None:
        converged(clients, w.settings, w.builds["b1"])

    n = run_matrix(emulator, clients, proxied, proxy,
                   lambda i: _published_world(emulator, clients, tmp_path, account, i, second=True), op,
                   rolled_back, lambda w: state(clients, w.settings), MOVE_STEPS, "rollback",
                   sample=lambda kind, what: kind != "step")
    assert n >= 6


# --------------------------------------------------------------------------- distribute


def _build_images(clients: Clients, region: str, build_id: str) -> list[dict[str, Any]]:
    return [i for i in clients.client("ec2", region=region).describe_images(
        Owners=["self"], Filters=[{"Name": f"tag:{T.BUILD_ID}", "Values": [build_id]}])["Images"]
        if i.get("State") != "deregistered"]


def test_distribute_fault_matrix(emulator, clients, proxy, proxied, tmp_path, account):
    settings = Settings(aws=clients.settings, ssm_prefix="/eks-ami-pipeline",
                        state_dir=tmp_path / "build",
                        images=(ImageSettings(name=IMAGE, regions=REGIONS, share_with=(SHARE,)),))

    def world(cell: int) -> World:
        ami = clients.client("ec2").register_image(
            Name=f"eks-node-b{cell}", Architecture="x86_64", VirtualizationType="hvm",
            RootDeviceName="/dev/xvda")["ImageId"]
        record = BuildRecord(
            build_id=T.new_build_id(), image_name=IMAGE, method="bake", status="succeeded",
            started_at=BuildRecord.now(), tool_version="0.1.0", image_ids={HOME: ami},
            verification=Verification(verdict="ok", mechanism="nodeadm",
                                      checked_at=BuildRecord.now(), tool_version="0.1.0"))
        return World(settings, {}, account["neighbours"], extra={"record": record, "ami": ami})

    def op(w: World, c: Clients, progress: Any) -> Any:
        rec = w.extra["record"]
        try:
            return distribute(w.settings, c, rec, progress=progress, wait_delay=0.05)
        finally:
            w.extra["left"] = dict(rec.image_ids)

    def snapshot(w: World) -> Any:
        """What a failed distribution may leave: the source untouched and unshared, and
        in the target region no copy, or the one tagged copy a rerun reuses."""
        rid = w.extra["record"].build_id
        src = clients.client("ec2").describe_image_attribute(
            ImageId=w.extra["ami"], Attribute="launchPermission")["LaunchPermissions"]
        return src, len(_build_images(clients, WEST, rid)) <= 1

    def done(w: World) -> None:
        rid = w.extra["record"].build_id
        for region in REGIONS:
            (img,) = _build_images(clients, region, rid)
            perms = clients.client("ec2", region=region).describe_image_attribute(
                ImageId=img["ImageId"], Attribute="launchPermission")["LaunchPermissions"]
            assert perms == [{"UserId": SHARE}], region

    n = run_matrix(emulator, clients, proxied, proxy, world, op, done, snapshot, [], "distribute",
                   sample=lambda kind, what: kind == "error" or what.action == "CopyImage")
    assert n >= 8
