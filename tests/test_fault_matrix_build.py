"""The fault matrix for import-image (both methods) and bake (issue 12, item 7).

A clean run through :class:`fault_proxy.FaultProxy` lists the operation's mutating AWS
calls; each cell then runs it again in an account full of neighbours with

- an AWS error injected at one mutating call (every distinct action, first occurrence),
- a real SIGINT arriving right after AWS applied one mutating call (phase boundaries),
- SIGKILL of the whole process (a CI runner that vanished) right after one call.

After each cell: the run succeeded, or everything it created is gone or recorded in its
creation journal (kept on purpose, e.g. an upload for a resume, and reported); every
neighbour is untouched; ``reap --apply`` with the clock moved past the grace converges
to the account as it was (plus the products of a run that succeeded) with no journal
left. Each test prints how many cells it ran.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

import neighbours as nb
from fault_proxy import Fault, FaultProxy
from pipeline.aws.clients import Clients
from pipeline.aws.journal import load_journals
from pipeline.core import tags as T
from pipeline.core.config import AwsSettings, ImageSettings, ImportSettings, Settings
from pipeline.core.errors import PipelineError
from pipeline.lifecycle.prune import reap
from test_import_e2e import good_raw  # noqa: F401 - the factory image fixture

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "matrix-imports"
PREFIX = "/eks-ami-pipeline"
LATER = dt.timedelta(hours=7)


def _settings(endpoint: str, tmp: Path, source: Path, method: str) -> Settings:
    img = ImageSettings(name="node", require="nodeadm", boot_mode="legacy-bios",
                        architecture="x86_64", import_=ImportSettings(source=source,
                                                                      method=method))
    return Settings(aws=AwsSettings(region="us-east-1", endpoint_url=endpoint,
                                    max_attempts=1),
                    images=(img,), s3_bucket=BUCKET, state_dir=tmp / "build")


def account(clients: Clients) -> dict[str, set[str]]:
    """What a run can leave (by id), terminated instances and finished tasks aside."""
    ec2, s3, ssm = clients.client("ec2"), clients.client("s3"), clients.client("ssm")
    out = {
        "instances": {i["InstanceId"] for r in ec2.describe_instances()["Reservations"]
                      for i in r["Instances"] if i["State"]["Name"] != "terminated"},
        "images": {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]},
        "snapshots": {s["SnapshotId"]
                      for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]},
        "volumes": {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]},
        "security_groups": {g["GroupId"] for g in ec2.describe_security_groups()[
            "SecurityGroups"] if g["GroupName"] != "default"},
        "key_pairs": {k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]},
        "objects": {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])},
        "uploads": {u["UploadId"] for u in
                    s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])},
        "journals": {p["Name"] for p in ssm.get_parameters_by_path(
            Path=f"{PREFIX}/_journal", Recursive=True)["Parameters"]},
    }
    try:
        out["tasks"] = {t["ImportTaskId"] for t in ec2.describe_import_image_tasks()[
            "ImportImageTasks"] if t.get("Status") == "active"}
    except Exception:  # noqa: BLE001
        out["tasks"] = set()
    return out


def _new(before: dict[str, set[str]], after: dict[str, set[str]]) -> dict[str, set[str]]:
    return {k: after[k] - before.get(k, set()) for k in after if after[k] - before.get(k, set())}


def _recorded(clients: Clients) -> set[str]:
    """Every id (or name, url) that a journal in the account records."""
    from pipeline.aws import cleanup

    out = set()
    ec2 = clients.client("ec2")
    for j in load_journals(clients, PREFIX):
        for r in j.resources:
            out.add(r.id)
            # Names stand for ids (Packer's group, the AMI before CreateImage answered),
            # resolved as reap resolves them; an AMI brings its snapshots.
            if r.kind == "security-group-name":
                out |= set(cleanup.security_group_ids(clients, None, [r.id]).values())
            if r.kind in ("image-name", "image"):
                images = list(cleanup.image_ids_named(clients, None, [r.id])) \
                    if r.kind == "image-name" else [r.id]
                out |= set(images)
                for img in ec2.describe_images(ImageIds=images)["Images"] if images else []:
                    out |= set(cleanup.snapshots_of(img))
            if "#" in r.id:
                out.add(r.id.rpartition("#")[2])
            if r.id.startswith("s3://"):
                out.add(r.id.split("/", 3)[3].partition("#")[0])
    return out


def _tagged_ids(clients: Clients) -> set[str]:
    ec2 = clients.client("ec2")
    flt = [{"Name": "tag-key", "Values": [T.BUILD_ID]}]
    ids = {i["InstanceId"] for r in ec2.describe_instances(Filters=flt)["Reservations"]
           for i in r["Instances"]}
    ids |= {i["ImageId"] for i in ec2.describe_images(Owners=["self"], Filters=flt)["Images"]}
    ids |= {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"],
                                                            Filters=flt)["Snapshots"]}
    ids |= {v["VolumeId"] for v in ec2.describe_volumes(Filters=flt)["Volumes"]}
    try:   # import tasks carry the build id: their AMI and snapshots are the build's
        for t in ec2.describe_import_image_tasks()["ImportImageTasks"]:
            if T.BUILD_ID in T.from_tag_list(t.get("Tags")):
                ids |= {t["ImportTaskId"], t.get("ImageId") or ""}
                ids |= {d.get("SnapshotId") or "" for d in t.get("SnapshotDetails") or ()}
    except Exception:  # noqa: BLE001
        pass
    return ids


class Matrix:
    """Runs cells and checks the three promises after each one."""

    def __init__(self, clients: Clients, settings: Settings, neighbours: nb.Neighbours,
                 name: str) -> None:
        self.clients, self.settings, self.neighbours, self.name = (clients, settings,
                                                                   neighbours, name)
        self.cells: list[str] = []
        self.times: list[float] = []
        self.t0 = time.monotonic()

    def check(self, label: str, before: dict[str, set[str]], ok: bool,
              products: set[str] = frozenset()) -> None:
        after = account(self.clients)
        new = _new(before, after)
        # 1. Nothing unreported: every new resource (the products of a success aside) is
        #    recorded in a journal or carries a build id reap can find.
        known = _recorded(self.clients) | _tagged_ids(self.clients) | set(products)
        journals = new.pop("journals", set())
        unreported = {k: {i for i in v if i not in known and not any(i in p for p in known)}
                      for k, v in new.items()}
        unreported = {k: v for k, v in unreported.items() if v}
        assert not unreported, f"{self.name} {label}: left without a record: {unreported}"
        # 2. reap after the grace converges (the products of a success stay).
        later = dt.datetime.now(dt.timezone.utc) + LATER
        result = reap(self.settings, self.clients, apply=True, now=later)
        assert result.exit_code == 0, f"{self.name} {label}: {result.summary()}"
        end = account(self.clients)
        left = _new(before, end)
        left.pop("tasks", None)          # a cancelled task may still be 'deleting'
        if ok:
            extra = {k: {i for i in v if i not in products} for k, v in left.items()
                     if k != "journals"}
            assert not any(extra.values()), f"{self.name} {label}: after reap: {extra}"
        else:
            assert not left, f"{self.name} {label}: reap left {left}\n{result.summary()}"
        assert not [w for w in result.waiting], result.summary()
        # 3. Neighbours untouched by the run and by reap.
        nb.assert_untouched(self.clients, self.neighbours)
        del journals
        self.cells.append(label)
        self.times.append(time.monotonic() - self.t0)
        self.t0 = time.monotonic()


def _clean_up_products(clients: Clients, products: set[str]) -> None:
    """Remove a succeeded cell's AMI and snapshots so the next cell starts alike."""
    from pipeline.aws import cleanup

    ec2 = clients.client("ec2")
    images = [p for p in products if p.startswith("ami-")]
    for img in ec2.describe_images(ImageIds=images)["Images"] if images else []:
        bid = T.from_tag_list(img.get("Tags")).get(T.BUILD_ID, "")
        cleanup.deregister_images(clients, None, cleanup.Owner(bid), [img["ImageId"]],
                                  with_snapshots=True)
    ssm = clients.client("ssm")
    for p in ssm.get_parameters_by_path(Path=PREFIX, Recursive=True)["Parameters"]:
        if "/_builds/" in p["Name"] or "/_journal/" in p["Name"]:
            cleanup.delete_parameters(clients, None, cleanup.Owner(p["Name"].rsplit("/", 1)[1]),
                                      [p["Name"]])


def _run(fn: Callable[[], Any]) -> tuple[bool, Any]:
    try:
        return True, fn()
    except (PipelineError, KeyboardInterrupt) as err:
        return False, err


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Packer runs in its own session)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def kill_at(proxy: FaultProxy, action: str, cmd: list[str], env: dict[str, str],
            log: Path, timeout: float = 60.0) -> bool:
    """Start ``cmd``; SIGKILL it and its children once ``action`` went through the proxy."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    hit = False
    while time.monotonic() < deadline and proc.poll() is None:
        if any(a == action for a, _ in list(proxy.calls)):
            hit = True
            break
        time.sleep(0.02)
    kids = _children(proc.pid)
    for pid in [proc.pid, *kids, *[g for k in kids for g in _children(k)]]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    time.sleep(0.3)   # let the emulator finish the request the kill cut off
    return hit


_IMPORT_CHILD = """
import sys, json
from pathlib import Path
from pipeline.aws.clients import Clients
from pipeline.core.config import AwsSettings, ImageSettings, ImportSettings, Settings
from pipeline.ingest.importer import ImportRequest, import_image
a = json.loads(sys.argv[1])
img = ImageSettings(name="node", require="nodeadm", boot_mode="legacy-bios",
                    architecture="x86_64",
                    import_=ImportSettings(source=Path(a["source"]), method=a["method"]))
aws = AwsSettings(region="us-east-1", endpoint_url=a["endpoint"], max_attempts=2)
s = Settings(aws=aws, images=(img,), s3_bucket=a["bucket"], state_dir=Path(a["state"]))
import_image(s, Clients(aws), ImportRequest(create_role=a["method"] == "vm-import",
                                          role_grace=0, poll_interval=0.2, poll_max=0.5))
"""


@pytest.fixture
def proxy(emulator: Any):
    with FaultProxy(emulator.endpoint) as p:
        yield p


def _in_main_thread() -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("SIGINT can only be simulated when tests run in the main thread")


# Phase boundaries for SIGINT (after AWS applied the call) and SIGKILL.
#: The vmimport role is account set-up (made once, by the clean run), not a run's resource.
_ACCOUNT_SETUP = ("CreateRole", "PutRolePolicy", "UpdateAssumeRolePolicy", "TagRole",
                  "AttachRolePolicy")
# (EBS and S3 are REST: the proxy names their calls "ebs:POST" - StartSnapshot first,
# "S3:POST" - CreateMultipartUpload first.)
_INTERRUPT_AT = {"snapshot": ["ebs:POST", "RegisterImage"],
                 "vm-import": ["S3:POST", "S3:PUT", "ImportImage"]}
_KILL_AT = {"snapshot": "ebs:POST", "vm-import": "ImportImage"}


@pytest.mark.parametrize("method", ["snapshot", "vm-import"])
def test_import_fault_matrix(method, emulator, clients, proxy, neighbours, tmp_path, good_raw,
                             capsys):
    from pipeline.ingest.importer import ImportRequest, import_image

    _in_main_thread()
    clients.client("s3").create_bucket(Bucket=BUCKET)
    nb.add_bucket(clients, neighbours, BUCKET)
    settings = _settings(emulator.endpoint, tmp_path, good_raw, method)
    proxied = Clients(AwsSettings(region="us-east-1", endpoint_url=proxy.endpoint,
                                  max_attempts=1))
    run_settings = _settings(proxy.endpoint, tmp_path, good_raw, method)
    matrix = Matrix(clients, settings, neighbours, f"import {method}")

    def once() -> Any:
        return import_image(run_settings, proxied, ImportRequest(   # --create-role is
            create_role=method == "vm-import", role_grace=0,     # vm-import's flag only
            poll_interval=0.2, poll_max=0.5))

    # The clean run lists the mutating calls (and proves the path works).
    before = account(clients)
    proxy.reset()
    ok, result = _run(once)
    assert ok, result
    actions = [a for a in dict.fromkeys(a for a, _ in proxy.mutating)
               if not a.endswith((":GET", ":HEAD"))            # REST reads (verify's)
               and a not in _ACCOUNT_SETUP]
    products = {result.image_id, *result.snapshot_ids}
    matrix.check("clean", before, True, products)
    _clean_up_products(clients, products)

    cells = [("error", a) for a in actions] + [("interrupt", a)
                                               for a in _INTERRUPT_AT[method] if a in actions]
    for kind, action in cells:
        before = account(clients)
        proxy.reset([Fault(action, kind=kind, code="InternalFailure", status=500)
                     if kind == "error" else Fault(action, kind="interrupt")])
        ok, result = _run(once)
        assert proxy.hits, f"{kind} at {action}: the fault never fired"
        products = {result.image_id, *result.snapshot_ids} if ok else set()
        if isinstance(result, KeyboardInterrupt) and getattr(result, "kept_for_resume", None):
            assert any(BUCKET in k and "abort-multipart-upload" in k
                       for k in result.kept_for_resume)
        matrix.check(f"{kind}@{action}", before, ok, products)
        if ok:
            _clean_up_products(clients, products)

    # SIGKILL of the whole run right after one call: only the journal is left to tell.
    before = account(clients)
    proxy.reset()
    args = json.dumps({"source": str(good_raw), "method": method, "endpoint": proxy.endpoint,
                       "bucket": BUCKET, "state": str(tmp_path / "child")})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = tmp_path / "child.log"
    assert kill_at(proxy, _KILL_AT[method], [sys.executable, "-c", _IMPORT_CHILD, args], env,
                   log), log.read_text()[-2000:]
    matrix.check(f"sigkill@{_KILL_AT[method]}", before, False)

    with capsys.disabled():
        print(f"\nimport {method} fault matrix: {len(matrix.cells)} cells "
              f"({', '.join(f'{c} {t:.1f}s' for c, t in zip(matrix.cells, matrix.times))})")
    assert len(matrix.cells) >= 6


_BAKE_CHILD = """
import sys, json
from pathlib import Path
from pipeline.aws.clients import Clients
from pipeline.bake.build import plan_bake, run_plan
from tests.test_bake import _settings
a = json.loads(sys.argv[1])
s = _settings(a["emulator"], Path(a["tmp"]), {"ssm_parameter": a["param"]})
clients = Clients(s.aws)
plan = plan_bake(s, clients, None, workdir=Path(a["tmp"]) / "work")
plan.variables["custom_endpoint_ec2"] = a["proxy"]
plan.write_variables()
run_plan(s, clients, plan)
"""


#: SIGINT cells of bake: (label, fault). The verify boundary is the CreateTags call that
#: writes the verdict (Packer's own CreateTags carry no verdict).
_BAKE_INTERRUPT_AT = (
    ("interrupt@RunInstances", Fault("RunInstances", kind="interrupt")),
    ("interrupt@CreateImage", Fault("CreateImage", kind="interrupt")),
    ("interrupt@CreateTags(verify)", Fault("CreateTags", kind="interrupt", body=b"verdict")),
)


@pytest.mark.packer
@pytest.mark.skipif(__import__("shutil").which("packer") is None, reason="packer not installed")
def test_bake_fault_matrix(emulator, clients, proxy, neighbours, tmp_path, capsys):
    """Packer failing after its instance started (AWS error at CreateImage), our own
    first write refused (the journal: nothing may be created), SIGINT right after
    RunInstances, CreateImage and the verdict tags of verify, and SIGKILL of the whole
    bake (Python and Packer) right after RunInstances and CreateImage: only the journal
    tells."""
    from pipeline.bake.build import plan_bake, run_plan
    from tests.test_bake import AL2023_PARAM, _settings as bake_settings

    clients.client("s3").create_bucket(Bucket=BUCKET)
    settings = bake_settings(emulator.endpoint, tmp_path, {"ssm_parameter": AL2023_PARAM})
    matrix = Matrix(clients, settings, neighbours, "bake")
    proxied = Clients(AwsSettings(region="us-east-1", endpoint_url=proxy.endpoint,
                                  max_attempts=1))

    def bake_once(cell: str) -> tuple[bool, Any]:
        plan = plan_bake(settings, proxied, None, workdir=tmp_path / cell)
        plan.variables["custom_endpoint_ec2"] = proxy.endpoint
        plan.write_variables()
        return _run(lambda: run_plan(settings, proxied, plan))

    for label, fault in (("error@CreateImage", Fault("CreateImage",
                                                     code="InvalidParameterValue")),
                         ("error@PutParameter(journal)", Fault("PutParameter"))):
        before = account(clients)
        proxy.reset([fault])
        ok, result = bake_once(label.replace("@", "-").replace("(", "").replace(")", ""))
        assert not ok and proxy.hits, (label, result)
        matrix.check(label, before, False)

    # SIGINT at the phase boundaries, right after AWS applied the call: Packer's instance
    # started, its CreateImage, and our verification tags on the available AMI (verify).
    _in_main_thread()
    for label, fault in _BAKE_INTERRUPT_AT:
        before = account(clients)
        proxy.reset([fault])
        ok, result = bake_once(label.replace("@", "-").replace("(", "").replace(")", ""))
        assert not ok and proxy.hits, (label, result)
        assert isinstance(result, KeyboardInterrupt) or "interrupted" in str(result), result
        matrix.check(label, before, False)

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # One SIGKILL cell: a SIGKILL right after RunInstances was tried, but a Packer that
    # outlives the kill (it runs in its own session) goes on to make an AMI during the next
    # cell, so the cells are not independent; see the issue note.
    action = "CreateImage"
    before = account(clients)
    proxy.reset()
    args = json.dumps({"emulator": emulator.endpoint, "proxy": proxy.endpoint,
                       "tmp": str(tmp_path / f"child-{action}"), "param": AL2023_PARAM})
    log = tmp_path / f"bake-child-{action}.log"
    assert kill_at(proxy, action, [sys.executable, "-c", _BAKE_CHILD, args], env, log,
                   timeout=120), log.read_text()[-2000:]
    matrix.check(f"sigkill@{action}", before, False)

    with capsys.disabled():
        print(f"\nbake fault matrix: {len(matrix.cells)} cells "
              f"({', '.join(f'{c} {t:.1f}s' for c, t in zip(matrix.cells, matrix.times))})")
    assert len(matrix.cells) == 6
