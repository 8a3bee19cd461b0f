"""Every bad input: exit 2, one clean line naming it, nothing created (issue 15).

One table of bad inputs across every task, each run in-process through the console
command (``pipeline.__main__.main``: Invoke's Program, the same parser and tasks as the
``eks-ami`` script) against the emulator. Each case asserts: exit code 2; stderr is
only ``error:`` lines, one (or one per problem for a configuration file); no traceback,
no "a bug"; the message names the input (``expect``); and a census of the account (S3
objects and uploads, snapshots, images, volumes, instances, security groups, key pairs,
launch template versions, SSM parameters, import tasks, IAM roles) is the same before
and after.
"""
from __future__ import annotations

import base64
import contextlib
import copy
import gzip
import io
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from pipeline.aws.clients import Clients
from pipeline.core.config import AwsSettings
from tests.fault_proxy import Fault, FaultProxy

ROOT = Path(__file__).resolve().parents[1]
REGION = "us-east-1"
NO_AMI = "ami-0123456789abcdef0"
TEMPLATE = "eks-nodes"


# --------------------------------------------------------------------------- the world


@dataclass
class World:
    """A folder of awkward files, a good base configuration and a seeded emulator."""

    tmp: Path
    endpoint: str
    base: dict[str, Any]
    clients: Clients
    proxy: FaultProxy
    files: dict[str, Path] = field(default_factory=dict)
    n: int = 0
    last_census: dict[str, Any] | None = None

    def config(self, edit: Callable[[dict[str, Any]], Any] | str | bytes | None = None,
               endpoint: str | None = None) -> Path:
        """A configuration file: the base with ``edit`` applied, or the given content."""
        self.n += 1
        path = self.tmp / f"case-{self.n}.yaml"
        if isinstance(edit, bytes):
            path.write_bytes(edit)
        elif isinstance(edit, str):
            path.write_text(edit.replace("{endpoint}", self.endpoint), encoding="utf-8")
        else:
            raw = copy.deepcopy(self.base)
            if endpoint:
                raw["aws"]["endpoint_url"] = endpoint
            if edit is not None:
                edit(raw)
            path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
        return path


def _census(clients: Clients) -> dict[str, Any]:
    """What exists in the account: compared before and after every bad input."""
    ec2, s3, ssm = clients.client("ec2"), clients.client("s3"), clients.client("ssm")
    out: dict[str, Any] = {}
    buckets = sorted(b["Name"] for b in s3.list_buckets().get("Buckets", []))
    out["s3"] = {b: (sorted(o["Key"] for o in s3.list_objects_v2(Bucket=b).get("Contents", [])),
                     sorted(u["UploadId"] for u in
                            s3.list_multipart_uploads(Bucket=b).get("Uploads", [])))
                 for b in buckets}
    out["snapshots"] = sorted(s["SnapshotId"] for s in
                              ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"])
    out["images"] = sorted(i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"])
    out["volumes"] = sorted(v["VolumeId"] for v in ec2.describe_volumes()["Volumes"])
    out["instances"] = sorted((i["InstanceId"], i["State"]["Name"])
                              for r in ec2.describe_instances()["Reservations"]
                              for i in r["Instances"])
    out["security_groups"] = sorted(g["GroupId"] for g in
                                    ec2.describe_security_groups()["SecurityGroups"])
    out["key_pairs"] = sorted(k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"])
    templates = ec2.describe_launch_templates().get("LaunchTemplates", [])
    out["templates"] = sorted(
        (t["LaunchTemplateName"], t["LatestVersionNumber"], t["DefaultVersionNumber"],
         len(ec2.describe_launch_template_versions(
             LaunchTemplateId=t["LaunchTemplateId"])["LaunchTemplateVersions"]))
        for t in templates)
    params = ssm.describe_parameters(MaxResults=50)
    names = [p["Name"] for p in params["Parameters"]]
    while params.get("NextToken"):
        params = ssm.describe_parameters(MaxResults=50, NextToken=params["NextToken"])
        names += [p["Name"] for p in params["Parameters"]]
    out["ssm"] = sorted(names)
    out["import_tasks"] = sorted((t["ImportTaskId"], t.get("Status"))
                                 for t in ec2.describe_import_image_tasks()["ImportImageTasks"])
    out["roles"] = sorted(r["RoleName"] for r in clients.client("iam").list_roles()["Roles"])
    return out


@pytest.fixture(scope="module")
def world(emulator_server: Any, tmp_path_factory: pytest.TempPathFactory) -> World:
    env = pytest.MonkeyPatch()     # module scope: the autouse fake credentials come later
    env.setenv("AWS_ACCESS_KEY_ID", "testing")
    env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        env.delenv(name, raising=False)
    emulator_server.reset()
    tmp = tmp_path_factory.mktemp("bad-inputs")
    shutil.copytree(ROOT / "pipeline" / "data" / "packer" / "eks-node", tmp / "packer" / "eks-node")
    base = yaml.safe_load((ROOT / "pipeline.example.yaml").read_text())
    base["aws"]["endpoint_url"] = emulator_server.endpoint
    base["aws"]["max_attempts"] = 1
    clients = Clients(AwsSettings(region=REGION, endpoint_url=emulator_server.endpoint,
                                  max_attempts=2))
    # Seeds: a bucket with an object, a launch template with one version.
    s3, ec2 = clients.client("s3"), clients.client("ec2")
    s3.create_bucket(Bucket=base["build"]["s3_bucket"])
    s3.put_object(Bucket=base["build"]["s3_bucket"], Key="seed", Body=b"x")
    seed_ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    ec2.create_launch_template(LaunchTemplateName=TEMPLATE,
                               LaunchTemplateData={"ImageId": seed_ami})
    f: dict[str, Path] = {}
    f["dir"] = tmp / "a-folder"
    f["dir"].mkdir()
    f["fifo"] = tmp / "a-fifo"
    os.mkfifo(f["fifo"])
    f["loop"] = tmp / "loop-a"
    os.symlink(tmp / "loop-b", f["loop"])
    os.symlink(tmp / "loop-a", tmp / "loop-b")
    f["dangling"] = tmp / "dangling"
    os.symlink(tmp / "nowhere", f["dangling"])
    f["missing"] = tmp / "missing.vmdk"
    f["empty"] = tmp / "empty.raw"
    f["empty"].write_bytes(b"")
    f["tiny"] = tmp / "tiny.raw"
    f["tiny"].write_bytes(b"not a disk")
    f["garbage"] = tmp / "garbage.raw"
    f["garbage"].write_bytes(os.urandom(4096) * 64)
    f["gzip"] = tmp / "disk.raw.gz"
    f["gzip"].write_bytes(gzip.compress(b"\0" * 1_048_576))
    f["binary"] = tmp / "binary.txt"
    f["binary"].write_bytes(b"\x00\x01\x02binary\x00" * 10)
    f["latin1"] = tmp / "latin1.txt"
    f["latin1"].write_bytes("#!/bin/bash\necho caf\xe9\n".encode("latin-1"))
    f["big"] = tmp / "big.txt"
    f["big"].write_text("#" * (2 * 1024 * 1024), encoding="utf-8")
    f["file"] = tmp / "a-file"
    f["file"].write_text("x")
    f["unknown_var"] = tmp / "typo.pkrvars.hcl"
    f["unknown_var"].write_text('instnace_type = "m5.large"\n')
    f["broken_hcl"] = tmp / "broken-tpl"
    shutil.copytree(tmp / "packer" / "eks-node", f["broken_hcl"])
    tpl = f["broken_hcl"] / "eks-node.pkr.hcl"
    tpl.write_text(tpl.read_text() + '\nsource "amazon-ebs" "oops" {\n  ami_name = \n}\n')
    f["aws_bad"] = tmp / "aws-broken.ini"
    f["aws_bad"].write_text("[profile broken\nregion = us-east-1\n")
    f["aws_sso"] = tmp / "aws-sso.ini"
    f["aws_sso"].write_text("[profile sso]\nsso_start_url = https://example.awsapps.com/start\n"
                            "sso_region = us-east-1\nsso_account_id = 123456789012\n"
                            "sso_role_name = Admin\nregion = us-east-1\n")
    f["aws_cp"] = tmp / "aws-cp.ini"
    f["aws_cp"].write_text("[profile cp]\ncredential_process = /bin/false\n")
    (tmp / "build").mkdir()
    f["ud_ok_dir"] = tmp / "build"
    proxy = FaultProxy(emulator_server.endpoint)
    proxy.__enter__()
    w = World(tmp=tmp, endpoint=emulator_server.endpoint, base=base, clients=clients,
              proxy=proxy, files=f)
    env.undo()
    yield w
    proxy.__exit__(None, None, None)


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    id: str
    argv: list[str]
    expect: tuple[str, ...]
    #: The configuration: None (the base), an edit of the parsed base, or file content.
    config: Callable[[dict[str, Any]], Any] | str | bytes | None = None
    #: "{cfg}" is replaced by the configuration's path, "{NAME}" by world.files[NAME].
    env: dict[str, str | None] = field(default_factory=dict)
    lines: int = 1
    #: "proxy": the configuration points at the fault proxy, with these faults.
    faults: tuple[Fault, ...] = ()
    #: A real bake reports its steps on stderr before ``packer validate`` answers.
    progress: bool = False


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """An edit setting ``a.b[0].c`` to ``value`` (``...`` deletes it)."""
    def edit(raw: dict[str, Any]) -> None:
        node: Any = raw
        parts = path.replace("]", "").replace("[", ".").split(".")
        for p in parts[:-1]:
            node = node[int(p)] if p.isdigit() else node.setdefault(p, {})
        last = parts[-1]
        if value is ...:
            del node[int(last) if last.isdigit() else last]
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value
    return edit


def _many(*edits: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def edit(raw: dict[str, Any]) -> None:
        for e in edits:
            e(raw)
    return edit


CA_TEXT = base64.b64encode(b"hello, not a certificate").decode()
CA_BAD_BODY = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"
                               ).decode()
CA_NOT_DER = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n"
                              + base64.b64encode(b"\x30\x03\x02\x01\x01")
                              + b"\n-----END CERTIFICATE-----\n").decode()
LT = "launch_templates[0]"
UD = f"{LT}.user_data"
IMG0, IMG1 = "images[0]", "images[1]"
CHECK = ["check-config", "-c", "{cfg}"]
KARPENTER_LT = _many(_set(f"{LT}.karpenter", True), _set(f"{LT}.security_group_ids", []))

CASES: list[Case] = [
    # ---- the configuration file itself
    Case("config missing", ["check-config", "-c", "{missing}"], ("missing.vmdk", "no such file")),
    Case("config is a directory", ["check-config", "-c", "{dir}"], ("a-folder", "directory")),
    Case("config is a FIFO", ["check-config", "-c", "{fifo}"], ("a-fifo", "FIFO")),
    Case("config is /dev/null", ["check-config", "-c", "/dev/null"], ("/dev/null", "device")),
    Case("config is a symlink loop", ["check-config", "-c", "{loop}"], ("loop-a", "symlink loop")),
    Case("config is a dangling symlink", ["check-config", "-c", "{dangling}"],
         ("dangling", "dangling symlink")),
    Case("config is empty", CHECK, ("empty",), config=""),
    Case("config has only comments", CHECK, ("no settings",), config="# nothing\n\n# here\n"),
    Case("config is binary", CHECK, ("binary",), config=b"\x00\x01aws:\x00"),
    Case("config is Latin-1", CHECK, ("not UTF-8", "line 2"),
         config="aws:\n  profile: caf\xe9\n".encode("latin-1")),
    Case("config is UTF-16", CHECK, ("UTF-16",), config="aws: {}\n".encode("utf-16")),
    Case("config too big", CHECK, ("bytes",), config="#" * (2 * 1024 * 1024)),
    Case("config is not YAML", CHECK, ("line 3", "not valid YAML"), config="aws:\n  - [\n"),
    Case("config with a tab", CHECK, ("not valid YAML",), config="aws:\n\tregion: us-east-1\n"),
    Case("config top level is a list", CHECK, ("top level", "mapping"), config="- aws\n- x\n"),
    Case("config top level is a scalar", CHECK, ("top level", "mapping"), config="hello\n"),
    Case("config with two documents", CHECK, ("2 YAML documents",), config="aws: {}\n---\naws: {}\n"),
    Case("duplicate top-level key", CHECK, ("line 3", "duplicate key 'aws'", "line 1"),
         config="aws: {region: us-east-1}\nbuild: {}\naws: {region: eu-west-1}\n"),
    Case("duplicate nested keys", CHECK, ("duplicate key 'region'", "duplicate key 'profile'"),
         lines=2, config="aws:\n  region: us-east-1\n  region: eu-west-1\n  profile: a\n"
                         "  profile: b\n"),
    Case("unknown top-level key", CHECK, ("imagez", "unknown key"), config=_set("imagez", [])),
    Case("unknown aws key", CHECK, ("aws.colour", "unknown key"), config=_set("aws.colour", 1)),
    # ---- aws:
    Case("region typo", CHECK, ("aws.region", "us-eest-1", "did you mean 'us-east-1'"),
         config=_set("aws.region", "us-eest-1")),
    Case("region nonsense", CHECK, ("aws.region", "mars"), config=_set("aws.region", "mars")),
    Case("region not a string", CHECK, ("aws.region", "string"), config=_set("aws.region", 12)),
    Case("retry mode unknown", CHECK, ("aws.retry_mode",), config=_set("aws.retry_mode", "often")),
    Case("max_attempts a word", CHECK, ("aws.max_attempts", "integer"),
         config=_set("aws.max_attempts", "five")),
    Case("max_attempts 0", CHECK, ("aws.max_attempts", "minimum"), config=_set("aws.max_attempts", 0)),
    Case("max_attempts a float", CHECK, ("aws.max_attempts", "integer", "2.0"),
         config=_set("aws.max_attempts", 2.0)),
    Case("max_attempts true", CHECK, ("aws.max_attempts", "integer"),
         config=_set("aws.max_attempts", True)),
    Case("endpoint_url ftp", CHECK, ("aws.endpoint_url",), config=_set("aws.endpoint_url", "ftp://x")),
    Case("endpoint_url without host", CHECK, ("aws.endpoint_url",),
         config=_set("aws.endpoint_url", "http://")),
    Case("endpoint_url bad port", CHECK, ("aws.endpoint_url",),
         config=_set("aws.endpoint_url", "http://127.0.0.1:99999")),
    # ---- build:
    Case("bucket upper case", CHECK, ("build.s3_bucket",), config=_set("build.s3_bucket", "My_Bucket")),
    Case("ssm_prefix relative", CHECK, ("build.ssm_prefix",), config=_set("build.ssm_prefix", "eks")),
    Case("ssm_prefix trailing slash", CHECK, ("build.ssm_prefix",),
         config=_set("build.ssm_prefix", "/eks/")),
    Case("state_dir is a file", CHECK, ("build.state_dir", "not a directory"),
         config=_set("build.state_dir", "{file}")),
    # ---- cluster:
    Case("cluster without name", CHECK, ("cluster.name", "required"), config=_set("cluster.name", ...)),
    Case("cluster name bad", CHECK, ("cluster.name",), config=_set("cluster.name", "-bad name")),
    Case("kubernetes_version patch", CHECK, ("cluster.kubernetes_version",),
         config=_set("cluster.kubernetes_version", "1.31.2")),
    Case("kubernetes_version a float", CHECK, ("cluster.kubernetes_version", "string"),
         config=_set("cluster.kubernetes_version", 1.31)),
    Case("service_cidr not a network", CHECK, ("cluster.service_cidr", "CIDR"),
         config=_set("cluster.service_cidr", "10.100.0.0/33")),
    Case("service_cidr host bits", CHECK, ("cluster.service_cidr",),
         config=_set("cluster.service_cidr", "10.100.0.1/16")),
    Case("dns ip outside the cidr", CHECK, ("cluster.dns_cluster_ip", "inside"),
         config=_set("cluster.dns_cluster_ip", "172.20.0.10")),
    Case("dns ip not an ip", CHECK, ("cluster.dns_cluster_ip", "IP address"),
         config=_set("cluster.dns_cluster_ip", "ten.ten")),
    Case("endpoint http", CHECK, ("cluster.endpoint", "https://"),
         config=_set("cluster.endpoint", "http://example.com")),
    Case("endpoint without host", CHECK, ("cluster.endpoint", "host"),
         config=_set("cluster.endpoint", "https://")),
    Case("endpoint bare word", CHECK, ("cluster.endpoint",), config=_set("cluster.endpoint", "cluster")),
    Case("CA not base64", CHECK, ("cluster.certificate_authority", "base64"),
         config=_set("cluster.certificate_authority", "not*base64!")),
    Case("CA base64 of text", CHECK, ("cluster.certificate_authority", "PEM"),
         config=_set("cluster.certificate_authority", CA_TEXT)),
    Case("CA PEM body not base64", CHECK, ("cluster.certificate_authority",),
         config=_set("cluster.certificate_authority", CA_BAD_BODY)),
    Case("CA PEM not a certificate", CHECK, ("cluster.certificate_authority", "X.509"),
         config=_set("cluster.certificate_authority", CA_NOT_DER)),
    Case("CA empty", CHECK, ("cluster.certificate_authority",),
         config=_set("cluster.certificate_authority", "")),
    # ---- images:
    Case("images not a list", CHECK, ("images", "array"), config=_set("images", {"a": 1})),
    Case("image name bad", CHECK, (f"{IMG1}.name",), config=_set(f"{IMG1}.name", "bad name")),
    Case("image without name", CHECK, (f"{IMG1}.name", "required"), config=_set(f"{IMG1}.name", ...)),
    Case("duplicate image names", CHECK, (f"{IMG1}.name", "unique"),
         config=_set(f"{IMG1}.name", "eks-node-al2023")),
    Case("image with bake and import", CHECK, (IMG0, "exactly one"),
         config=_set(f"{IMG0}.import", {"source": "x.raw"})),
    Case("image with neither", CHECK, (IMG1, "exactly one"), config=_set(f"{IMG1}.import", ...)),
    Case("require unknown", CHECK, (f"{IMG0}.require",), config=_set(f"{IMG0}.require", "systemd")),
    Case("architecture unknown", CHECK, (f"{IMG0}.architecture",),
         config=_set(f"{IMG0}.architecture", "amd64")),
    Case("boot_mode unknown", CHECK, (f"{IMG0}.boot_mode",), config=_set(f"{IMG0}.boot_mode", "bios")),
    Case("images region typo", CHECK, (f"{IMG0}.regions[0]", "us-eest-2"),
         config=_set(f"{IMG0}.regions", ["us-eest-2"])),
    Case("images region listed twice", CHECK, (f"{IMG0}.regions", "twice"),
         config=_set(f"{IMG0}.regions", ["us-east-1", "us-east-1"])),
    Case("kms key for a region not built", CHECK, (f"{IMG0}.kms_key_ids.eu-west-1", "not in regions"),
         config=_set(f"{IMG0}.kms_key_ids", {"eu-west-1": "alias/x"})),
    Case("kms key bad form", CHECK, (f"{IMG0}.kms_key_ids.us-east-1", "KMS key id"),
         config=_set(f"{IMG0}.kms_key_ids", {"us-east-1": "my-key"})),
    Case("kms key ARN of another region", CHECK, (f"{IMG0}.kms_key_ids.us-east-1", "eu-west-1"),
         config=_set(f"{IMG0}.kms_key_ids", {"us-east-1": "arn:aws:kms:eu-west-1:123456789012:key/"
                                                          "1234abcd-12ab-34cd-56ef-1234567890ab"})),
    Case("kms key region typo", CHECK, (f"{IMG0}.kms_key_ids.us-eest-1",),
         config=_set(f"{IMG0}.kms_key_ids", {"us-eest-1": "alias/x"})),
    Case("share_with not an account", CHECK, (f"{IMG0}.share_with[0]",),
         config=_set(f"{IMG0}.share_with", ["all"])),
    Case("max_age_days 0", CHECK, (f"{IMG0}.max_age_days",), config=_set(f"{IMG0}.max_age_days", 0)),
    Case("max_age_days a float", CHECK, (f"{IMG0}.max_age_days", "integer"),
         config=_set(f"{IMG0}.max_age_days", 1.5)),
    Case("bake without base", CHECK, (f"{IMG0}.bake.base", "required"),
         config=_set(f"{IMG0}.bake.base", ...)),
    Case("bake base two ways", CHECK, (f"{IMG0}.bake.base", "exactly one"),
         config=_set(f"{IMG0}.bake.base.ami_id", "ami-0123456789abcdef0")),
    Case("bake base ami_id bad", CHECK, (f"{IMG0}.bake.base.ami_id",),
         config=_many(_set(f"{IMG0}.bake.base.ssm_parameter", ...),
                      _set(f"{IMG0}.bake.base.ami_id", "ami-xyz"))),
    Case("name_filter without owners", CHECK, (f"{IMG0}.bake.base.owners",),
         config=_many(_set(f"{IMG0}.bake.base.ssm_parameter", ...),
                      _set(f"{IMG0}.bake.base.name_filter", "amazon-eks-*"))),
    Case("var file missing", CHECK, (f"{IMG0}.bake.var_files[0]", "not found"),
         config=_set(f"{IMG0}.bake.var_files", ["nope.pkrvars.hcl"])),
    Case("var file is a FIFO", CHECK, (f"{IMG0}.bake.var_files[0]", "not a regular file"),
         config=_set(f"{IMG0}.bake.var_files", ["{fifo}"])),
    Case("bake variables a list", CHECK, (f"{IMG0}.bake.variables",),
         config=_set(f"{IMG0}.bake.variables", ["a"])),
    Case("import method unknown", CHECK, (f"{IMG1}.import.method",),
         config=_set(f"{IMG1}.import.method", "ftp")),
    Case("import without source", CHECK, (f"{IMG1}.import.source", "required"),
         config=_set(f"{IMG1}.import.source", ...)),
    Case("import bucket bad", CHECK, (f"{IMG1}.import.bucket",),
         config=_set(f"{IMG1}.import.bucket", "Bad_Bucket")),
    Case("import kms key bad", CHECK, (f"{IMG1}.import.kms_key_id",),
         config=_set(f"{IMG1}.import.kms_key_id", "key")),
    # ---- launch_templates:
    Case("template image unknown", CHECK, (f"{LT}.image", "configured image"),
         config=_set(f"{LT}.image", "nope")),
    Case("template name too short", CHECK, (f"{LT}.name",), config=_set(f"{LT}.name", "lt")),
    Case("duplicate template names", CHECK, ("launch_templates[1].name", "unique"),
         config=lambda r: r["launch_templates"].append(dict(r["launch_templates"][0]))),
    Case("template sg id bad", CHECK, (f"{LT}.security_group_ids[0]",),
         config=_set(f"{LT}.security_group_ids", ["default"])),
    Case("karpenter template without groups", CHECK, (f"{LT}.security_group_ids", "karpenter"),
         config=KARPENTER_LT),
    Case("karpenter template without profile", CHECK, (f"{LT}.instance_profile", "karpenter"),
         config=_many(_set(f"{LT}.karpenter", True), _set(f"{LT}.security_group_ids", ["sg-0123"]),
                      _set(f"{LT}.instance_profile", ...))),
    Case("karpenter not a boolean", CHECK, (f"{LT}.karpenter", "boolean"),
         config=_set(f"{LT}.karpenter", "yes")),
    Case("channel bad", CHECK, (f"{LT}.channel",), config=_set(f"{LT}.channel", "bad channel")),
    Case("kubelet args unbalanced quote", CHECK, (f"{UD}.kubelet_extra_args", "quot"),
         config=_set(f"{UD}.kubelet_extra_args", "--node-labels='a=b")),
    Case("max_pods a float", CHECK, (f"{UD}.max_pods", "integer", "110.0"),
         config=_set(f"{UD}.max_pods", 110.0)),
    Case("max_pods a string", CHECK, (f"{UD}.max_pods", "integer"), config=_set(f"{UD}.max_pods", "110")),
    Case("max_pods too many", CHECK, (f"{UD}.max_pods", "maximum"), config=_set(f"{UD}.max_pods", 1000)),
    Case("max_pods zero", CHECK, (f"{UD}.max_pods", "minimum"), config=_set(f"{UD}.max_pods", 0)),
    Case("user data format unknown", CHECK, (f"{UD}.format",), config=_set(f"{UD}.format", "cloud")),
    Case("taint without effect", CHECK, (f"{UD}.taints[0]", "EFFECT"),
         config=_set(f"{UD}.taints", ["dedicated=gpu"])),
    Case("label value with a comma", CHECK, (f"{UD}.labels",),
         config=_set(f"{UD}.labels", {"pool": "a,b"})),
    Case("label value not a string", CHECK, (f"{UD}.labels",), config=_set(f"{UD}.labels", {"n": 1})),
    # ---- karpenter:
    Case("karpenter version unknown", CHECK, ("karpenter.version",),
         config=_set("karpenter.version", "v2")),
    Case("karpenter output_dir is a file", CHECK, ("karpenter.output_dir", "not a directory"),
         config=_set("karpenter.output_dir", "{file}")),
    # ---- several problems: one line each
    Case("three problems, three lines", CHECK, ("aws.region", f"{UD}.max_pods", "cluster.endpoint"),
         lines=3, config=_many(_set("aws.region", "us-eest-1"), _set(f"{UD}.max_pods", 110.0),
                               _set("cluster.endpoint", "http://x"))),
    # ---- the configuration checked at the start of every task that loads it
    Case("publish with a bad CA", ["publish-template", "-c", "{cfg}", "--ami", NO_AMI],
         ("cluster.certificate_authority",), config=_set("cluster.certificate_authority", CA_TEXT)),
    Case("publish with bad kubelet args", ["publish-template", "-c", "{cfg}", "--ami", NO_AMI],
         (f"{UD}.kubelet_extra_args",), config=_set(f"{UD}.kubelet_extra_args", '"unbalanced')),
    Case("rebuild with an endpoint without host", ["rebuild", "-c", "{cfg}"], ("cluster.endpoint",),
         config=_set("cluster.endpoint", "https://")),
    Case("rebuild with a region typo", ["rebuild", "-c", "{cfg}"], (f"{IMG0}.regions[0]",),
         config=_set(f"{IMG0}.regions", ["us-eest-2"])),
    Case("bake with a region typo", ["bake", "-c", "{cfg}", "--dry-run"], (f"{IMG0}.regions[0]",),
         config=_set(f"{IMG0}.regions", ["us-eest-2"])),
    Case("import with max_pods float", ["import-image", "-c", "{cfg}"], (f"{UD}.max_pods",),
         config=_set(f"{UD}.max_pods", 110.0)),
    Case("history with a duplicate key", ["history", "-c", "{cfg}"], ("duplicate key",),
         config="aws: {region: us-east-1}\naws: {region: us-east-1}\n"),
    Case("prune with an empty config", ["prune", "-c", "{cfg}"], ("empty",), config=""),
    Case("reap with a config FIFO", ["reap", "-c", "{fifo}"], ("FIFO",)),
    Case("promote with a binary config", ["promote", "-c", "{cfg}", "--template", TEMPLATE,
                                          "--version", "1"], ("binary",), config=b"\x00\x00"),
    Case("iam-policy with a config directory", ["iam-policy", "-c", "{dir}"], ("directory",)),
    Case("render-stack with a bad CA", ["render-stack", "-c", "{cfg}"],
         ("cluster.certificate_authority",), config=_set("cluster.certificate_authority", "x")),
    Case("template-diff with a symlink-loop config", ["template-diff", "-c", "{loop}",
                                                      "--template", TEMPLATE], ("symlink loop",)),
    Case("rollback with only comments", ["rollback", "-c", "{cfg}", "--template", TEMPLATE],
         ("no settings",), config="# empty\n"),
    Case("PIPELINE_CONFIG names a FIFO", ["check-config"], ("a-fifo", "FIFO"),
         env={"PIPELINE_CONFIG": "{fifo}"}),
    # ---- verify --image
    Case("verify image missing", ["verify", "--image", "{missing}"], ("--image", "no such file")),
    Case("verify image a directory", ["verify", "--image", "{dir}"], ("--image", "directory")),
    Case("verify image a FIFO", ["verify", "--image", "{fifo}"], ("--image", "FIFO")),
    Case("verify image /dev/null", ["verify", "--image", "/dev/null"], ("--image", "character device")),
    Case("verify image /dev/zero", ["verify", "--image", "/dev/zero"], ("--image", "device")),
    Case("verify image symlink loop", ["verify", "--image", "{loop}"], ("--image", "symlink loop")),
    Case("verify image dangling symlink", ["verify", "--image", "{dangling}"], ("dangling",)),
    Case("verify image empty", ["verify", "--image", "{empty}"], ("--image", "empty")),
    Case("verify image tiny", ["verify", "--image", "{tiny}"], ("tiny.raw",)),
    Case("verify image garbage", ["verify", "--image", "{garbage}"], ("garbage.raw",)),
    Case("verify image gzip", ["verify", "--image", "{gzip}"], ("disk.raw.gz",)),
    Case("verify require unknown", ["verify", "--image", "{garbage}", "--require", "systemd"],
         ("--require",)),
    Case("verify image and ami", ["verify", "--image", "{garbage}", "--ami", NO_AMI],
         ("exactly one",)),
    Case("verify neither", ["verify"], ("exactly one",)),
    Case("verify image with --no-tag and --region",
         ["verify", "--image", "{garbage}", "--no-tag", "--region", "eu-west-1"],
         ("--no-tag", "--region", "only apply to --ami")),
    Case("verify image with --region", ["verify", "--image", "{garbage}", "--region", "eu-west-1"],
         ("--region", "only apply to --ami")),
    # ---- verify --ami
    Case("verify ami bad id", ["verify", "--ami", "ami-xyz", "-c", "{cfg}"], ("ami-xyz",)),
    Case("verify ami not found", ["verify", "--ami", NO_AMI, "-c", "{cfg}"], (NO_AMI,)),
    Case("verify ami region typo", ["verify", "--ami", NO_AMI, "--region", "us-eest-1", "-c", "{cfg}"],
         ("us-eest-1", "not an AWS region")),
    Case("verify ami region typo, no config", ["verify", "--ami", NO_AMI, "--region", "us-eest-1"],
         ("us-eest-1", "not an AWS region")),
    # ---- import-image
    Case("import image missing", ["import-image", "-c", "{cfg}", "--image", "{missing}"],
         ("missing.vmdk", "no such file")),
    Case("import image a FIFO", ["import-image", "-c", "{cfg}", "--image", "{fifo}"], ("FIFO",)),
    Case("import image a directory", ["import-image", "-c", "{cfg}", "--image", "{dir}"],
         ("directory",)),
    Case("import image a symlink loop", ["import-image", "-c", "{cfg}", "--image", "{loop}"],
         ("symlink loop",)),
    Case("import image empty", ["import-image", "-c", "{cfg}", "--image", "{empty}"], ("empty",)),
    Case("import image gzip", ["import-image", "-c", "{cfg}", "--image", "{gzip}"],
         ("disk.raw.gz", "compressed")),
    Case("import image garbage", ["import-image", "-c", "{cfg}", "--image", "{garbage}"],
         ("garbage.raw",)),
    Case("import method unknown flag", ["import-image", "-c", "{cfg}", "--image", "{garbage}",
                                        "--method", "ftp"], ("--method",)),
    Case("import snapshot with --detach --keep-upload --bucket",
         ["import-image", "-c", "{cfg}", "--image", "{garbage}", "--method", "snapshot", "--detach",
          "--keep-upload", "--bucket", "no-such-bucket"],
         ("--method snapshot", "--bucket", "--keep-upload", "--detach")),
    Case("import snapshot with --create-role", ["import-image", "-c", "{cfg}", "--image",
                                                "{garbage}", "--method", "snapshot",
                                                "--create-role"], ("--create-role",)),
    Case("import unknown name", ["import-image", "-c", "{cfg}", "--name", "nope"], ("nope",)),
    Case("import timeout a word", ["import-image", "-c", "{cfg}", "--timeout", "abc"], ("--timeout",)),
    Case("import --name of a baked image", ["import-image", "-c", "{cfg}", "--name",
                                            "eks-node-al2023"], ("eks-node-al2023",)),
    # ---- bake
    Case("bake unknown image", ["bake", "-c", "{cfg}", "--image", "nope"], ("nope",)),
    Case("bake an imported image", ["bake", "-c", "{cfg}", "--image", "eks-node-imported"],
         ("eks-node-imported", "bake")),
    Case("bake template folder missing", ["bake", "-c", "{cfg}", "--dry-run"],
         ("no-such-folder", "not found"), config=_set(f"{IMG0}.bake.template", "no-such-folder")),
    Case("bake template folder without templates", ["bake", "-c", "{cfg}", "--dry-run"],
         ("a-folder",), config=_set(f"{IMG0}.bake.template", "{dir}")),
    Case("bake variable typo", ["bake", "-c", "{cfg}", "--dry-run"],
         ("bake.variables.instnace_type", "did you mean 'instance_type'"),
         config=_set(f"{IMG0}.bake.variables", {"instnace_type": "m5.xlarge"})),
    Case("bake variable typo, real bake", ["bake", "-c", "{cfg}"], ("instnace_type",),
         config=_set(f"{IMG0}.bake.variables", {"instnace_type": "m5.xlarge"})),
    Case("bake var file with an unknown variable", ["bake", "-c", "{cfg}", "--dry-run"],
         ("typo.pkrvars.hcl line 1", "instnace_type"),
         config=_set(f"{IMG0}.bake.var_files", ["{unknown_var}"])),
    Case("bake reserved variable", ["bake", "-c", "{cfg}", "--dry-run"], ("build_id",),
         config=_set(f"{IMG0}.bake.variables", {"build_id": "mine"})),
    Case("bake syntax error, dry run", ["bake", "-c", "{cfg}", "--dry-run"],
         ("broken-tpl/eks-node.pkr.hcl line",), config=_set(f"{IMG0}.bake.template", "{broken_hcl}")),
    Case("bake syntax error", ["bake", "-c", "{cfg}"], ("broken-tpl/eks-node.pkr.hcl line",),
         config=_set(f"{IMG0}.bake.template", "{broken_hcl}"), progress=True),
    Case("bake base AMI not found", ["bake", "-c", "{cfg}", "--dry-run"], (NO_AMI,),
         config=_many(_set(f"{IMG0}.bake.base.ssm_parameter", ...),
                      _set(f"{IMG0}.bake.base.ami_id", NO_AMI))),
    Case("bake base SSM parameter missing", ["bake", "-c", "{cfg}", "--dry-run"], ("/no/such",),
         config=_set(f"{IMG0}.bake.base.ssm_parameter", "/no/such/parameter")),
    # ---- publish-template
    Case("publish to a template not configured", ["publish-template", "-c", "{cfg}", "--ami", NO_AMI,
                                                  "--template", "no-such-lt"],
         ("no-such-lt", "--ad-hoc")),
    Case("publish --create a template not configured",
         ["publish-template", "-c", "{cfg}", "--ami", NO_AMI, "--template", "no-such-lt", "--create"],
         ("no-such-lt", "not configured" if False else "no template named")),
    Case("publish --ad-hoc with a configured name",
         ["publish-template", "-c", "{cfg}", "--ami", NO_AMI, "--template", TEMPLATE, "--ad-hoc"],
         ("--ad-hoc", TEMPLATE)),
    Case("publish ami bad id", ["publish-template", "-c", "{cfg}", "--ami", "ami-xyz"], ("ami-xyz",)),
    Case("publish ami not found", ["publish-template", "-c", "{cfg}", "--ami", NO_AMI], (NO_AMI,)),
    Case("publish ami missing flag", ["publish-template", "-c", "{cfg}"], ("ami",)),
    Case("publish user data missing", ["publish-template", "-c", "{cfg}", "--ami", NO_AMI,
                                       "--user-data-file", "{missing}"],
         ("--user-data-file", "no such file")),
    Case("publish user data a FIFO", ["publish-template", "-c", "{cfg}", "--ami", NO_AMI,
                                      "--user-data-file", "{fifo}"], ("--user-data-file", "FIFO")),
    Case("publish user data a directory", ["publish-template", "-c", "{cfg}", "--ami", NO_AMI,
                                           "--user-data-file", "{dir}"], ("directory",)),
    Case("publish user data /dev/null", ["publish-template", "-c", "{cfg}", "--ami", NO_AMI,
                                         "--user-data-file", "/dev/null"], ("device",)),
    Case("publish user data symlink loop", ["publish-template", "-c", "{cfg}", "--ami", NO_AMI,
                                            "--user-data-file", "{loop}"], ("symlink loop",)),
    Case("publish user data empty", ["publish-template", "-c", "{cfg}", "--ami", NO_AMI,
                                     "--user-data-file", "{empty}"], ("empty",)),
    Case("publish user data binary", ["publish-template", "-c", "{cfg}", "--ami", NO_AMI,
                                      "--user-data-file", "{binary}"], ("binary",)),
    Case("publish user data gzip", ["publish-template", "-c", "{cfg}", "--ami", NO_AMI,
                                    "--user-data-file", "{gzip}"], ("disk.raw.gz",)),
    Case("publish user data Latin-1", ["publish-template", "-c", "{cfg}", "--ami", NO_AMI,
                                       "--user-data-file", "{latin1}"], ("not UTF-8",)),
    Case("publish user data too big", ["publish-template", "-c", "{cfg}", "--ami", NO_AMI,
                                       "--user-data-file", "{big}"], ("big.txt", "bytes")),
    Case("publish karpenter version unknown", ["publish-template", "-c", "{cfg}", "--ami", NO_AMI,
                                               "--karpenter", "v2"], ("--karpenter",)),
    Case("publish source version a word", ["publish-template", "-c", "{cfg}", "--ami", NO_AMI,
                                           "--source-version", "latest"], ("--source-version",)),
    # ---- promote / rollback / template-diff / history
    Case("promote unknown template", ["promote", "-c", "{cfg}", "--template", "never-made-lt",
                                      "--version", "1"], ("never-made-lt",)),
    Case("promote version a word", ["promote", "-c", "{cfg}", "--template", TEMPLATE, "--version",
                                    "two"], ("--version",)),
    Case("promote version not found", ["promote", "-c", "{cfg}", "--template", TEMPLATE,
                                       "--version", "99"], ("99",)),
    Case("promote without version", ["promote", "-c", "{cfg}", "--template", TEMPLATE],
         ("version",)),
    Case("rollback unknown template", ["rollback", "-c", "{cfg}", "--template", "never-made-lt"],
         ("never-made-lt",)),
    Case("rollback with nothing earlier", ["rollback", "-c", "{cfg}", "--template", TEMPLATE],
         (TEMPLATE,)),
    Case("template-diff unknown template", ["template-diff", "-c", "{cfg}", "--template",
                                            "never-made-lt"], ("never-made-lt",)),
    Case("template-diff bad version", ["template-diff", "-c", "{cfg}", "--template", TEMPLATE,
                                       "--from-version", "old"], ("old",)),
    Case("template-diff missing version", ["template-diff", "-c", "{cfg}", "--template", TEMPLATE,
                                           "--to-version", "7"], ("7",)),
    Case("history unknown template", ["history", "-c", "{cfg}", "--template", "never-made-lt"],
         ("never-made-lt",)),
    Case("history unknown image", ["history", "-c", "{cfg}", "--image", "nope"], ("nope",)),
    Case("migrate-template unknown template", ["migrate-template", "-c", "{cfg}", "--template",
                                               "never-made-lt"], ("never-made-lt",)),
    Case("migrate-template bad selector", ["migrate-template", "-c", "{cfg}", "--template",
                                           TEMPLATE, "--ami-selector", "magic"],
         ("ami_selector", "magic")),
    Case("migrate-template version a word", ["migrate-template", "-c", "{cfg}", "--template",
                                             TEMPLATE, "--version", "newest"], ("newest",)),
    # ---- rebuild / prune / reap / render-stack / emulator
    Case("rebuild unknown image", ["rebuild", "-c", "{cfg}", "--image", "nope"], ("nope",)),
    Case("prune keep 0", ["prune", "-c", "{cfg}", "--keep", "0"], ("--keep",)),
    Case("prune keep a word", ["prune", "-c", "{cfg}", "--keep", "abc"], ("--keep",)),
    Case("prune older-than negative", ["prune", "-c", "{cfg}", "--older-than", "-1"],
         ("--older-than",)),
    Case("prune older-than a word", ["prune", "-c", "{cfg}", "--older-than", "soon"],
         ("--older-than",)),
    Case("render-stack output a directory", ["render-stack", "-c", "{cfg}", "--output", "{dir}"],
         ("--output",)),
    Case("render-stack without templates", ["render-stack", "-c", "{cfg}"], ("launch_templates",),
         config=_set("launch_templates", [])),
    Case("emulator port a word", ["emulator", "--port", "abc"], ("--port",)),
    # ---- usage
    Case("unknown flag", ["check-config", "--colour"], ("--colour",)),
    Case("missing flag value", ["prune", "-c", "{cfg}", "--keep"], ("--keep",)),
    Case("unknown task", ["bakee"], ("bakee",)),
    # ---- AWS set-up
    Case("no credentials", ["history", "-c", "{cfg}"], ("no AWS credentials", "aws sso login"),
         env={"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None,
              "AWS_SHARED_CREDENTIALS_FILE": "{missing}", "AWS_CONFIG_FILE": "{missing}"}),
    Case("partial credentials", ["reap", "-c", "{cfg}"], ("AWS_SECRET_ACCESS_KEY",),
         env={"AWS_SECRET_ACCESS_KEY": None, "AWS_SHARED_CREDENTIALS_FILE": "{missing}"}),
    Case("unknown profile flag", ["history", "-c", "{cfg}", "--profile", "nope"],
         ("profile 'nope'", "--profile"), env={"AWS_CONFIG_FILE": "{missing}"}),
    Case("unknown profile env", ["prune", "-c", "{cfg}"], ("profile 'nope'",),
         env={"AWS_PROFILE": "nope", "AWS_CONFIG_FILE": "{missing}"}),
    Case("unknown profile in the config", ["history", "-c", "{cfg}"], ("profile 'nope'",),
         config=_set("aws.profile", "nope"), env={"AWS_CONFIG_FILE": "{missing}"}),
    Case("broken AWS config file", ["history", "-c", "{cfg}"], ("aws-broken.ini",),
         env={"AWS_CONFIG_FILE": "{aws_bad}"}),
    Case("SSO token missing", ["history", "-c", "{cfg}", "--profile", "sso"], ("aws sso login",),
         env={"AWS_CONFIG_FILE": "{aws_sso}", "AWS_ACCESS_KEY_ID": None,
              "AWS_SECRET_ACCESS_KEY": None}),
    Case("credential_process failing", ["history", "-c", "{cfg}", "--profile", "cp"],
         ("credential_process",), env={"AWS_CONFIG_FILE": "{aws_cp}", "AWS_ACCESS_KEY_ID": None,
                                       "AWS_SECRET_ACCESS_KEY": None}),
    Case("endpoint not answering", ["history", "-c", "{cfg}"], ("127.0.0.1:9", "does not answer"),
         config=_set("aws.endpoint_url", "http://127.0.0.1:9")),
    Case("endpoint not answering, publish", ["publish-template", "-c", "{cfg}", "--ami", NO_AMI],
         ("does not answer",), config=_set("aws.endpoint_url", "http://127.0.0.1:9")),
    Case("AWS_ENDPOINT_URL not answering", ["prune", "-c", "{cfg}"], ("does not answer",),
         env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}),
    Case("region flag typo", ["history", "-c", "{cfg}", "--region", "eu-wset-1"],
         ("eu-wset-1", "eu-west-1")),
    Case("AWS_REGION typo", ["history", "-c", "{cfg}"], ("us-eest-1",),
         config=_set("aws.region", ...), env={"AWS_REGION": "us-eest-1"}),
    Case("access denied on a read", ["history", "-c", "{cfg}"], ("access denied", "iam-policy"),
         faults=(Fault("DescribeLaunchTemplates", status=403, code="UnauthorizedOperation"),)),
    Case("access denied on publish's first call", ["publish-template", "-c", "{cfg}", "--ami",
                                                    NO_AMI], ("access denied", "DescribeImages"),
         faults=(Fault("DescribeImages", status=403, code="UnauthorizedOperation"),)),
    Case("expired credentials", ["reap", "-c", "{cfg}"], ("expired",),
         faults=(Fault("DescribeImages", status=400, code="RequestExpired"),)),
    Case("rejected credentials", ["prune", "-c", "{cfg}"], ("rejected the credentials",),
         faults=(Fault("DescribeImages", status=401, code="AuthFailure"),)),
]

IDS = [c.id for c in CASES]
assert len(set(IDS)) == len(IDS), "case ids must be unique"


def test_the_table_covers_every_task_with_150_bad_inputs() -> None:
    from pipeline.tasks import ns

    tasks = {c.argv[0] for c in CASES if c.argv}
    missing = set(ns.task_names) - tasks - {"demo", "init"}
    assert not missing, missing
    assert len(CASES) >= 150


def _fill(text: str, world: World, cfg: Path | None) -> str:
    out = text.replace("{cfg}", str(cfg) if cfg else "")
    for name, path in world.files.items():
        out = out.replace("{" + name + "}", str(path))
    return out


def _run(argv: list[str]) -> tuple[int, str, str]:
    from pipeline.__main__ import main

    root = logging.getLogger()
    for handler in list(root.handlers):     # setup_logging binds the stderr of its first call
        root.removeHandler(handler)
    out, err = io.StringIO(), io.StringIO()
    code: Any = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(["eks-ami", *argv])
        except SystemExit as exc:
            code = exc.code
    for handler in list(root.handlers):
        root.removeHandler(handler)
    return (code if isinstance(code, int) else 1), out.getvalue(), err.getvalue()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_bad_input(case: Case, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    edit = case.config
    if callable(edit):
        original = edit

        def edit(raw: dict[str, Any]) -> None:      # noqa: F811 - fill paths after editing
            original(raw)
            filled = yaml.safe_load(_fill(yaml.safe_dump(raw), world, None))
            raw.clear()
            raw.update(filled)
    endpoint = None
    if case.faults:
        world.proxy.reset(list(case.faults))
        endpoint = world.proxy.endpoint
    cfg = world.config(edit, endpoint=endpoint) if "{cfg}" in " ".join(case.argv) else None
    for name, value in case.env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, _fill(value, world, cfg))
    argv = [_fill(a, world, cfg) for a in case.argv]
    with monkeypatch.context() as m:        # the census itself uses the test credentials
        for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            m.delenv(name, raising=False)
        m.setenv("AWS_ACCESS_KEY_ID", "testing")
        m.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        # The state before this case is the state after the previous one (nothing else
        # touches this emulator in between); the first case takes its own.
        before = world.last_census if world.last_census is not None else _census(world.clients)
    code, out, err = _run(argv)
    with monkeypatch.context() as m:
        for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            m.delenv(name, raising=False)
        m.setenv("AWS_ACCESS_KEY_ID", "testing")
        m.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        after = _census(world.clients)
    world.last_census = after
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if case.progress:
        lines = [ln for ln in lines if ln.startswith("error: ")]
    assert code == 2, (code, err, out)
    assert "Traceback" not in err + out and "a bug" not in err, err
    assert all(ln.startswith("error: ") for ln in lines), lines
    assert len(lines) == case.lines, lines
    for word in case.expect:
        assert _fill(word, world, cfg) in err, (word, err)
    assert after == before
