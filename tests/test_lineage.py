"""Lineage against the emulator: tags, SSM records, manifest, template-version links, history."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.lineage import store as lineage
from pipeline.core import tags as T
from pipeline.aws.clients import Clients
from pipeline.core.config import AwsSettings, ImageSettings, LaunchTemplateSettings, Settings
from pipeline.aws.ssm import put_pointer
from pipeline.core.records import BuildRecord, Verification

HOME = "us-east-1"
PREFIX = "/eks-ami-pipeline"


@pytest.fixture
def settings(aws_settings: AwsSettings, tmp_path: Path) -> Settings:
    """One image, one launch template, state in a temp folder."""
    return Settings(aws=aws_settings,
                    images=(ImageSettings(name="eks-node", regions=(HOME,)),
                            ImageSettings(name="other")),
                    launch_templates=(LaunchTemplateSettings(name="eks-nodes", image="eks-node"),),
                    ssm_prefix=PREFIX, state_dir=tmp_path / "build")


def make_ami(clients: Clients, name: str, region: str = HOME) -> tuple[str, list[str]]:
    """An AMI registered in ``region`` and its snapshot ids."""
    ec2 = clients.client("ec2", region=region)
    ami = ec2.register_image(Name=name, Architecture="x86_64", VirtualizationType="hvm",
                             RootDeviceName="/dev/xvda")["ImageId"]
    img = ec2.describe_images(ImageIds=[ami])["Images"][0]
    snaps = [m["Ebs"]["SnapshotId"] for m in img["BlockDeviceMappings"] if "Ebs" in m]
    return ami, snaps


def make_record(clients: Clients, build_id: str, *, image: str = "eks-node",
                status: str = "succeeded", method: str = "bake",
                verdict: str | None = "ok") -> BuildRecord:
    ami, snaps = make_ami(clients, f"{image}-{build_id}")
    ver = (Verification(verdict=verdict, mechanism="nodeadm", checked_at="2026-11-25T10:00:00+00:00",
                        tool_version="0.1.0") if verdict else None)
    stamp = build_id[2:16]
    started = f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[8:10]}:{stamp[10:12]}:{stamp[12:14]}+00:00"
    return BuildRecord(
        build_id=build_id, image_name=image, method=method, status=status, started_at=started,
        finished_at=started, base_ami="ami-0123456789abcdef0" if method == "bake" else None,
        source_file="/tmp/images/eks-node.vmdk" if method != "bake" else None,
        source_sha256="ab" * 32 if method != "bake" else None,
        inputs_sha256="cd" * 32 if method == "bake" else None, tool_version="0.1.0",
        git_commit="0123abcd", packer_version="1.6.6" if method == "bake" else None,
        image_ids={HOME: ami}, snapshot_ids={HOME: snaps}, verification=ver)


def tags_of(clients: Clients, resource: str, region: str = HOME) -> dict[str, str]:
    ec2 = clients.client("ec2", region=region)
    resp = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [resource]}])
    return {t["Key"]: t["Value"] for t in resp["Tags"]}


# --------------------------------------------------------------------------- records


def test_record_build_tags_ami_and_snapshots_and_writes_ssm_and_manifest(settings, clients):
    rec = make_record(clients, "b-20261125100000-aaaaaa", method="vm-import")
    lineage.record_build(settings, clients, rec)

    ami = rec.image_ids[HOME]
    for resource in [ami, *rec.snapshot_ids[HOME]]:
        t = tags_of(clients, resource)
        assert t[T.BUILD_ID] == rec.build_id
        assert t[T.IMAGE_NAME] == "eks-node"
        assert t[T.SOURCE_SHA256] == "ab" * 32
        assert t[T.SOURCE_FILE] == "eks-node.vmdk"
        assert t[T.VERIFY_VERDICT] == "ok" and t[T.VERIFY_MECHANISM] == "nodeadm"
        assert all(len(k) <= 128 and len(v) <= 256 for k, v in t.items())

    param = clients.client("ssm").get_parameter(
        Name=f"{PREFIX}/_builds/eks-node/{rec.build_id}")["Parameter"]
    stored = BuildRecord.from_dict(json.loads(param["Value"]))
    assert stored.to_dict() == rec.to_dict()

    doc = json.loads((settings.state_dir / "manifest.json").read_text())
    assert [b["build_id"] for b in doc["builds"]] == [rec.build_id]


def test_manifest_merges_newest_first_and_replaces_by_build_id(settings, clients):
    old = make_record(clients, "b-20261120100000-000001")
    new = make_record(clients, "b-20261125100000-000002")
    lineage.record_build(settings, clients, new)
    lineage.record_build(settings, clients, old)
    old.status = "failed"
    lineage.record_build(settings, clients, old)
    builds = lineage.read_manifest(settings)
    assert [(b.build_id, b.status) for b in builds] == [(new.build_id, "succeeded"),
                                                       (old.build_id, "failed")]


def test_load_builds_newest_first_and_latest_successful(settings, clients):
    a = make_record(clients, "b-20261101000000-00000a")
    b = make_record(clients, "b-20261110000000-00000b")
    c = make_record(clients, "b-20261120000000-00000c", status="failed")
    o = make_record(clients, "b-20261121000000-00000d", image="other")
    for r in (b, a, c, o):
        lineage.record_build(settings, clients, r)
    got = lineage.load_builds(settings, clients, "eks-node")
    assert [r.build_id for r in got] == [c.build_id, b.build_id, a.build_id]
    assert [r.build_id for r in lineage.load_builds(settings, clients)] == \
        [o.build_id, c.build_id, b.build_id, a.build_id]
    latest = lineage.latest_successful(settings, clients, "eks-node")
    assert latest is not None and latest.build_id == b.build_id
    assert latest.inputs_sha256 == "cd" * 32 and latest.base_ami == "ami-0123456789abcdef0"
    assert lineage.latest_successful(settings, clients, "nothing-built") is None


def test_fresh_run_finds_a_build_from_tags_when_its_record_is_missing(settings, clients):
    rec = make_record(clients, "b-20261125110000-abcdef")
    lineage.tag_build(clients, rec, region=HOME)  # tagged, but the run died before SSM
    found = lineage.load_builds(settings, clients, "eks-node")
    assert [(r.build_id, r.status, r.image_ids) for r in found] == \
        [(rec.build_id, "unknown", rec.image_ids)]
    assert found[0].verification == rec.verification
    assert lineage.latest_successful(settings, clients, "eks-node") is None


def test_large_record_goes_to_advanced_tier(settings, clients):
    rec = make_record(clients, "b-20261125120000-bbbbbb")
    rec.extra["notes"] = "x" * 5000
    lineage.record_build(settings, clients, rec)
    ssm = clients.client("ssm")
    name = f"{PREFIX}/_builds/eks-node/{rec.build_id}"
    meta = ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [name]}])
    assert meta["Parameters"][0]["Tier"] == "Advanced"
    assert lineage.load_build(settings, clients, "eks-node", rec.build_id).extra["notes"] == "x" * 5000

    rec.extra["notes"] = "short"  # shrinking again must not ask SSM for a downgrade
    lineage.record_build(settings, clients, rec)
    meta = ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [name]}])
    assert meta["Parameters"][0]["Tier"] != "Standard"

    rec.extra["notes"] = "y" * 9000  # over 8 KB: extra is dropped, the lineage kept
    lineage.record_build(settings, clients, rec)
    back = lineage.load_build(settings, clients, "eks-node", rec.build_id)
    assert back.extra == {} and back.image_ids == rec.image_ids


def test_tag_limit_drops_optional_keys_first(settings, clients):
    rec = make_record(clients, "b-20261125130000-cccccc")
    ami = rec.image_ids[HOME]
    ec2 = clients.client("ec2")
    ec2.create_tags(Resources=[ami], Tags=[{"Key": f"team:{i}", "Value": "x"} for i in range(36)])
    lineage.tag_build(clients, rec, region=HOME)
    t = tags_of(clients, ami)
    assert len(t) <= 50
    assert t[T.BUILD_ID] == rec.build_id and t[T.VERIFY_VERDICT] == "ok"
    assert T.SOURCE_FILE not in t or T.PACKER_VERSION not in t


# --------------------------------------------------------------------------- template versions


def test_find_template_versions_pages_through_more_than_200_versions(clients):
    ec2 = clients.client("ec2")
    target, _ = make_ami(clients, "target")
    other, _ = make_ami(clients, "other")
    uses = {1, 3, 50, 100, 150, 200, 229}  # 1 and 229 never share one page of 200 out of 230
    lt = ec2.create_launch_template(LaunchTemplateName="big",
                                    LaunchTemplateData={"ImageId": target})["LaunchTemplate"]
    for n in range(2, 231):
        ec2.create_launch_template_version(LaunchTemplateId=lt["LaunchTemplateId"],
                                           LaunchTemplateData={"ImageId": target if n in uses
                                                               else other},
                                           VersionDescription=f"v{n}")
    ec2.modify_launch_template(LaunchTemplateId=lt["LaunchTemplateId"], DefaultVersion="229")
    ec2.create_launch_template(LaunchTemplateName="small", LaunchTemplateData={"ImageId": target})
    pages: list[dict] = []
    ec2.meta.events.register("provide-client-params.ec2.DescribeLaunchTemplateVersions",
                             lambda params, **_: pages.append(dict(params)))

    found = lineage.find_template_versions(clients, target)
    got = sorted((v.template_name, v.version, v.is_default) for v in found)
    assert got == sorted([("big", n, n == 229) for n in uses] + [("small", 1, True)])
    big = [p for p in pages if p["LaunchTemplateId"] == lt["LaunchTemplateId"]]
    assert len(big) == 2 and "NextToken" in big[1] and big[0]["MaxResults"] == 200


def test_version_resolving_through_ssm_counts_as_using_the_ami(settings, clients):
    ec2 = clients.client("ec2")
    ami, _ = make_ami(clients, "pointed")
    put_pointer(clients, PREFIX, "eks-node", "stable", ami)
    ec2.create_launch_template(
        LaunchTemplateName="via-ssm",
        LaunchTemplateData={"ImageId": f"resolve:ssm:{PREFIX}/eks-node/stable"})
    found = lineage.find_template_versions(clients, ami)
    assert [(v.template_name, v.version, v.via_pointer) for v in found] == \
        [("via-ssm", 1, f"{PREFIX}/eks-node/stable")]
    other, _ = make_ami(clients, "moved-to")
    put_pointer(clients, PREFIX, "eks-node", "stable", other)
    assert lineage.find_template_versions(clients, ami) == []


def test_build_for_template_version_reads_description_and_ami_tag(settings, clients):
    rec = make_record(clients, "b-20261125140000-dddddd")
    lineage.record_build(settings, clients, rec)
    ami = rec.image_ids[HOME]
    ec2 = clients.client("ec2")
    ec2.create_launch_template(
        LaunchTemplateName="eks-nodes", LaunchTemplateData={"ImageId": ami},
        VersionDescription=f"build={rec.build_id} ami={ami} verify=ok/nodeadm ud=0123456789ab")
    link = lineage.build_for_template_version(clients, "eks-nodes", 1, settings=settings)
    assert (link.build_id, link.build_id_from_description, link.build_id_from_tag) == \
        (rec.build_id, rec.build_id, rec.build_id)
    assert link.image_id == ami and link.is_default and link.problems == []
    assert link.build is not None and link.build.status == "succeeded"  # the SSM record

    # A description that disagrees with the AMI's tags is reported, the tag wins.
    ec2.create_launch_template_version(
        LaunchTemplateName="eks-nodes", LaunchTemplateData={"ImageId": ami},
        VersionDescription="build=b-20260101000000-ffffff ami=ami-0000000000000000f")
    link = lineage.build_for_template_version(clients, "eks-nodes", 2)
    assert link.build_id == rec.build_id and not link.is_default
    assert len(link.problems) == 2
    assert link.build is not None and link.build.status == "unknown"  # tags only
    by_id = lineage.build_for_template_version(clients, link.template_id, "$Default")
    assert (by_id.version, by_id.build_id, by_id.problems) == (1, rec.build_id, [])
    assert lineage.build_for_template_version(clients, "eks-nodes", "$Latest").version == 2


def test_build_for_unknown_template_is_input_error(clients):
    from pipeline.core.errors import InputError

    with pytest.raises(InputError, match="no-such-template"):
        lineage.build_for_template_version(clients, "no-such-template", 1)


# --------------------------------------------------------------------------- history


def test_history_links_builds_versions_and_pointers(settings, clients):
    ec2 = clients.client("ec2")
    first = make_record(clients, "b-20261120000000-111111", method="vm-import")
    second = make_record(clients, "b-20261125000000-222222")
    unused = make_record(clients, "b-20261122000000-333333", status="failed", verdict=None)
    for r in (first, second, unused):
        lineage.record_build(settings, clients, r)
    a1, a2 = first.image_ids[HOME], second.image_ids[HOME]
    lt = ec2.create_launch_template(LaunchTemplateName="eks-nodes",
                                    LaunchTemplateData={"ImageId": a1},
                                    VersionDescription=f"build={first.build_id} ami={a1}")
    lt_id = lt["LaunchTemplate"]["LaunchTemplateId"]
    ec2.create_launch_template_version(LaunchTemplateId=lt_id, LaunchTemplateData={"ImageId": a2},
                                       VersionDescription=f"build={second.build_id} ami={a2}")
    ec2.modify_launch_template(LaunchTemplateId=lt_id, DefaultVersion="2")
    put_pointer(clients, PREFIX, "eks-node", "candidate", a2)
    put_pointer(clients, PREFIX, "eks-node", "stable", a1)

    result = lineage.history(settings, clients)
    assert [r.build_id for r in result.rows] == [second.build_id, unused.build_id, first.build_id]
    by_id = {r.build_id: r for r in result.rows}
    assert [(v.version, v.is_default) for v in by_id[second.build_id].template_versions] == [(2, True)]
    assert [(v.version, v.is_default) for v in by_id[first.build_id].template_versions] == [(1, False)]
    assert by_id[unused.build_id].template_versions == []
    assert [p.channel for p in by_id[second.build_id].pointers] == ["candidate"]
    assert [p.channel for p in by_id[first.build_id].pointers] == ["stable"]
    assert by_id[first.build_id].source.startswith("eks-node.vmdk sha256:abababab")
    assert by_id[second.build_id].source == "base ami-0123456789abcdef0"

    text = result.summary()
    assert "eks-nodes:v2*" in text and "eks-nodes:v1" in text and "eks-nodes:v1*" not in text
    assert "eks-node/candidate" in text and "[failed]" in text
    doc = json.loads(json.dumps(result.to_dict()))
    assert doc["builds"][0]["template_versions"][0]["is_default"] is True
    assert doc["builds"][0]["pointers"][0]["ami_id"] == a2

    links = lineage.ami_links(settings, clients, a1)
    assert links.build is not None and links.build.build_id == first.build_id
    assert links.build.source_sha256 == "ab" * 32 and links.build.status == "succeeded"
    assert [(v.version, v.is_default) for v in links.template_versions] == [(1, False)]
    assert [p.channel for p in links.pointers] == ["stable"]

    only = lineage.history(settings, clients, template="eks-nodes")
    assert {r.build_id for r in only.rows} == {first.build_id, second.build_id, unused.build_id}
    assert lineage.history(settings, clients, image="other").rows == []


def test_invoke_history_json(settings, clients, endpoint, tmp_path):
    """The real task over the real CLI: config file in, one JSON document out."""
    import os
    import subprocess
    import sys

    import yaml

    rec = make_record(clients, "b-20261125150000-eeeeee")
    lineage.record_build(settings, clients, rec)
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump({
        "aws": {"region": HOME, "endpoint_url": endpoint, "max_attempts": 2},
        "build": {"ssm_prefix": PREFIX, "state_dir": str(tmp_path / "state")},
        "images": [{"name": "eks-node", "import": {"source": "disk.raw"}}]}))
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(root), "history", "--json",
         "--config", str(cfg), "--image", "eks-node"],
        capture_output=True, text=True, timeout=120, env={**os.environ})
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [b["build_id"] for b in doc["builds"]] == [rec.build_id]
    assert doc["builds"][0]["image_ids"] == rec.image_ids

    bad = subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(root), "history", "--config",
         str(cfg), "--image", "nope"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no image named 'nope'" in bad.stderr


def test_record_build_fills_git_commit_and_tool_versions(settings, clients, monkeypatch):
    rec = make_record(clients, "b-20261125160000-ffffff")
    rec.git_commit, rec.tool_version = None, ""
    monkeypatch.setenv("GITHUB_SHA", "9" * 40)
    lineage.record_build(settings, clients, rec)
    stored = lineage.load_build(settings, clients, "eks-node", rec.build_id)
    assert stored.git_commit == "9" * 40 and stored.tool_version
    versions = stored.extra["tool_versions"]
    assert {"eks-ami-pipeline", "python", "boto3", "botocore", "packer"} <= set(versions)
    assert tags_of(clients, rec.image_ids[HOME])[T.GIT_COMMIT] == "9" * 40


def test_git_commit_comes_from_the_checkout_outside_ci(monkeypatch, tmp_path):
    import subprocess

    for var in ("GITHUB_SHA", "CI_COMMIT_SHA", "GIT_COMMIT"):
        monkeypatch.delenv(var, raising=False)
    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    assert lineage._git_commit() == (head.stdout.strip() if head.returncode == 0 else None)
    monkeypatch.chdir(tmp_path)  # not a checkout
    assert lineage._git_commit() is None
