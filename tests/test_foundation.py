"""Foundation: configuration, client factory, exit-code rule, task surface, image factory."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import cli
from pipeline_dev import diskimage
from pipeline.aws.clients import Clients
from pipeline.core.config import AwsSettings, load_settings, parse_settings
from pipeline.core.errors import ConfigError, ImageReadError, VerificationFailed

ROOT = Path(__file__).resolve().parents[1]
INVOKE = [sys.executable, "-m", "invoke"]
MiB = diskimage.MiB


def _invoke(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*INVOKE, "-r", str(ROOT), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=120)


# --------------------------------------------------------------------------- config


def test_example_config_loads_and_resolves_paths() -> None:
    s = load_settings(ROOT / "pipeline.example.yaml")
    assert s.aws.region == "us-east-1"
    assert s.cluster is not None and s.cluster.cluster_dns_ip == "10.100.0.10"
    bake = s.image("eks-node-al2023").bake
    assert bake is not None and bake.template == ROOT / "packer/eks-node"
    assert s.image("eks-node-imported").method == "import"
    assert s.launch_template("eks-nodes").image == "eks-node-al2023"


def test_lookup_order_flag_then_env_then_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    for name, region in (("flag.yaml", "eu-west-1"), ("env.yaml", "us-west-2"),
                         ("pipeline.yaml", "ap-south-1")):
        (tmp_path / name).write_text(f"aws: {{region: {region}}}\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings().aws.region == "ap-south-1"
    monkeypatch.setenv("PIPELINE_CONFIG", str(tmp_path / "env.yaml"))
    assert load_settings().aws.region == "us-west-2"
    assert load_settings(tmp_path / "flag.yaml").aws.region == "eu-west-1"


def test_missing_config_says_where_to_put_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="--config PATH, set PIPELINE_CONFIG"):
        load_settings()
    assert load_settings(required=False).aws.region == "us-east-1"


def test_endpoint_env_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("aws: {endpoint_url: 'http://127.0.0.1:1'}\n")
    assert load_settings(cfg).aws.endpoint_url == "http://127.0.0.1:1"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:2")
    assert load_settings(cfg).aws.endpoint_url == "http://127.0.0.1:2"


@pytest.mark.parametrize("doc, key, expected", [
    ({"aws": {"region": "mars"}}, "aws.region", "is not an AWS region"),
    ({"aws": {"region": "us-eest-1"}}, "aws.region", "did you mean 'us-east-1'"),
    ({"aws": {"max_attempts": "five"}}, "aws.max_attempts", "expected integer"),
    ({"aws": {"colour": 1}}, "aws.colour", "unknown key"),
    ({"images": [{"name": "a"}]}, "images[0]", "exactly one of 'bake' or 'import'"),
    ({"images": [{"name": "a", "bake": {"template": "t", "base": {}}}]},
     "images[0].bake.base", "exactly one of ssm_parameter"),
    ({"images": [{"name": "a", "import": {"source": "x", "method": "ftp"}}]},
     "images[0].import.method", "expected one of 'vm-import', 'snapshot'"),
    ({"cluster": {"name": "c", "kubernetes_version": "1.31", "service_cidr": "10.0.0.0/33"}},
     "cluster.service_cidr", "CIDR"),
    ({"cluster": {"name": "c", "kubernetes_version": "1.31", "service_cidr": "10.100.0.0/16",
                  "dns_cluster_ip": "172.20.0.10"}}, "cluster.dns_cluster_ip", "inside"),
    ({"cluster": {"name": "c", "kubernetes_version": "1.31", "endpoint": "http://x"}},
     "cluster.endpoint", "https://"),
    ({"cluster": {"name": "c"}}, "cluster.kubernetes_version", "required key is missing"),
    ({"launch_templates": [{"name": "lt-one", "image": "nope"}]},
     "launch_templates[0].image", "configured image"),
    ({"images": [{"name": "a", "import": {"source": "x"}}, {"name": "a", "import": {"source": "y"}}]},
     "images[1].name", "unique"),
])
def test_each_problem_is_one_line_naming_file_and_key(doc: dict, key: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(doc, source=Path("cfg.yaml"))
    lines = [p for p in info.value.problems if f"cfg.yaml: {key}:" in p]
    assert lines, info.value.problems
    assert expected in lines[0]
    assert info.value.exit_code == 2


def test_bad_config_through_invoke_exits_2_with_one_line_per_problem(tmp_path: Path) -> None:
    bad = tmp_path / "pipeline.yaml"
    bad.write_text("aws:\n  region: mars\n  retry_mode: sometimes\n")
    res = _invoke("check-config", "--config", str(bad))
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 2
    assert f"{bad}: aws.region:" in lines[0] and f"{bad}: aws.retry_mode:" in lines[1]
    assert "Traceback" not in res.stderr


def test_unparseable_yaml_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("aws:\n  region: [unclosed\n")
    with pytest.raises(ConfigError, match=r"c.yaml: line \d+: not valid YAML"):
        load_settings(bad)


# --------------------------------------------------------------------------- AWS factory


def test_factory_honours_endpoint_region_retries_and_user_agent(endpoint: str) -> None:
    c = Clients(AwsSettings(region="eu-west-1", endpoint_url=endpoint, max_attempts=3,
                            retry_mode="adaptive"))
    ec2 = c.client("ec2")
    assert ec2.meta.region_name == "eu-west-1"
    assert ec2.meta.endpoint_url == endpoint
    assert ec2.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 3}
    assert c.client("ec2") is ec2 and c.client("ec2", region="us-west-2") is not ec2
    seen: list[str] = []
    ec2.meta.events.register("before-send.ec2.*",
                             lambda request, **_: seen.append(request.headers["User-Agent"].decode()
                                                              if isinstance(request.headers["User-Agent"], bytes)
                                                              else request.headers["User-Agent"]))
    ec2.describe_regions()  # a real HTTP round trip to the emulator
    assert seen and "eks-ami-pipeline/" in seen[0]


def test_account_id_comes_from_sts(clients: Clients) -> None:
    assert clients.account_id() == "123456789012"


def test_no_other_module_creates_boto3_clients() -> None:
    offenders = []
    for path in ROOT.joinpath("pipeline").rglob("*.py"):
        if path.relative_to(ROOT).as_posix() == "pipeline/aws/clients.py":
            continue
        text = path.read_text()
        if "boto3.client(" in text or "boto3.session.Session(" in text or "boto3.Session(" in text:
            offenders.append(str(path))
    assert offenders == []


def test_no_print_in_the_library() -> None:
    offenders = []
    for path in ROOT.joinpath("pipeline").rglob("*.py"):
        if "emulator" in path.parts:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip().startswith("print("):
                offenders.append(f"{path}:{n}")
    assert offenders == []


# --------------------------------------------------------------------------- exit codes


@pytest.mark.parametrize("exc, code", [
    (ConfigError("cfg.yaml: aws.region: bad"), 2),
    (ImageReadError("disk.vmdk: truncated"), 2),
    (VerificationFailed("stub"), 1),
    (RuntimeError("boom"), 1),
])
def test_run_task_maps_errors_to_exit_codes_and_json(exc: Exception, code: int) -> None:
    out, err = io.StringIO(), io.StringIO()

    def fail() -> None:
        raise exc

    with pytest.raises(SystemExit) as info:
        cli.run_task(fail, as_json=True, out=out, err=err)
    assert info.value.code == code
    assert err.getvalue().count("\n") == 1 and err.getvalue().startswith("error:")
    doc = json.loads(out.getvalue()) if out.getvalue() else None
    if code == 2 or isinstance(exc, VerificationFailed):
        assert doc is not None and doc["exit_code"] == code


def test_run_task_emits_one_json_document() -> None:
    out = io.StringIO()
    cli.run_task(lambda: {"image_id": "ami-1", "path": Path("/x")}, as_json=True, out=out)
    assert json.loads(out.getvalue()) == {"schema_version": cli.SCHEMA_VERSION,
                                          "image_id": "ami-1", "path": "/x"}


# --------------------------------------------------------------------------- task surface


def test_invoke_list_shows_every_task_with_help() -> None:
    res = _invoke("--list")
    assert res.returncode == 0, res.stderr
    for name in ("demo", "emulator", "verify", "import-image", "bake", "publish-template",
                 "promote", "rollback", "template-diff", "render-stack", "history", "rebuild",
                 "prune", "reap", "iam-policy", "check-config"):
        line = next((ln for ln in res.stdout.splitlines() if ln.strip().startswith(name + " ")), "")
        assert line.strip() != name and len(line.split()) > 1, f"{name} has no one-line help"


def test_every_flag_of_every_task_is_documented() -> None:
    # In a fresh interpreter: Invoke pops a task's help entries when it builds the task's
    # arguments, so a test that parsed a command in this process would hide them.
    code = (
        "import inspect, tasks\n"
        "missing = []\n"
        "for name in tasks.ns.task_names:\n"
        "    t = tasks.ns[name]\n"
        "    assert t.__doc__ and t.__doc__.strip(), f'{name} has no docstring'\n"
        "    params = [p for p in inspect.signature(t.body).parameters if p != 'c']\n"
        "    missing += [f'{name} --{p}' for p in params if p not in t.help]\n"
        "print(missing)\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_every_task_takes_config_and_json_except_local_ones() -> None:
    import inspect

    sys.path.insert(0, str(ROOT))
    import tasks  # noqa: PLC0415

    for name in tasks.ns.task_names:
        params = inspect.signature(tasks.ns[name].body).parameters
        if name in ("emulator", "demo", "init"):
            continue  # they make (or write) their own configuration
        assert "config" in params and "json" in params, name


# --------------------------------------------------------------------------- image factory


def _blkid(path: Path, offset: int = 0) -> dict[str, str]:
    args = ["blkid", "-p", "-o", "export"] + (["-O", str(offset)] if offset else []) + [str(path)]
    out = subprocess.run(args, capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.fixture(scope="session")
def al2023_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return diskimage.root_tree(tmp_path_factory.mktemp("tree") / "root", "al2023")


@pytest.mark.parametrize("fs, table", [("ext4", "gpt"), ("ext4", "mbr"), ("ext4", "none"),
                                       ("xfs", "gpt"), ("xfs", "mbr"), ("xfs", "none")])
def test_factory_tables_and_filesystems_are_recognised(al2023_tree: Path, tmp_path: Path,
                                                       fs: str, table: str) -> None:
    size = 400 * MiB if fs == "xfs" else 96 * MiB
    img = diskimage.build_image(al2023_tree, tmp_path / "d.raw",
                                diskimage.ImageSpec(fs=fs, table=table, fmt="raw", size=size))
    assert img.stat().st_size == size
    whole = _blkid(img)
    if table == "none":
        assert whole.get("TYPE") == fs
    else:
        assert whole.get("PTTYPE") == {"gpt": "gpt", "mbr": "dos"}[table]
        described = subprocess.run(["file", "-b", str(img)], capture_output=True,
                                   text=True).stdout
        assert "DOS/MBR boot sector" in described
        # GPT disks carry a protective MBR whose only partition has type 0xee
        assert ("ID=0xee" in described) == (table == "gpt"), described
        assert _blkid(img, diskimage.PART_START).get("TYPE") == fs
    # the tree went in without mounting: debugfs reads the stub back from ext4
    if fs == "ext4":
        off = 0 if table == "none" else diskimage.PART_START
        raw_fs = tmp_path / "fs.img"
        with open(img, "rb") as src, open(raw_fs, "wb") as dst:
            src.seek(off)
            dst.write(src.read(size - off))
        cat = subprocess.run(["debugfs", "-R", "cat /etc/eks/bootstrap.sh", str(raw_fs)],
                             capture_output=True, text=True).stdout
        assert "bootstrap.sh has been removed" in cat


@pytest.mark.parametrize("fmt, qemu_fmt, subformat", [
    ("vmdk-stream", "vmdk", "streamOptimized"),
    ("vmdk-sparse", "vmdk", "monolithicSparse"),
    ("qcow2", "qcow2", None),
    ("vhd", "vpc", None),
    ("vhd-fixed", "vpc", None),
    ("vhdx", "vhdx", None),
])
def test_factory_container_formats_are_recognised_by_qemu_img(
        al2023_tree: Path, tmp_path: Path, fmt: str, qemu_fmt: str, subformat: str | None) -> None:
    spec = diskimage.ImageSpec(fs="ext4", table="gpt", fmt=fmt, size=64 * MiB)
    img = diskimage.build_image(al2023_tree, tmp_path / f"d{spec.suffix}", spec)
    # A fixed VHD has its footer only at the end, so qemu-img's probe sees raw; name it.
    forced = ["-f", "vpc"] if fmt == "vhd-fixed" else []
    info = json.loads(subprocess.run(["qemu-img", "info", *forced, "--output=json", str(img)],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["format"] == qemu_fmt == diskimage.qemu_format_name(fmt)
    if fmt == "vhd-fixed":
        with open(img, "rb") as fh:
            fh.seek(-512, 2)
            assert fh.read(8) == b"conectix"
    assert info["virtual-size"] >= 64 * MiB
    if subformat:
        assert info["format-specific"]["data"]["create-type"] == subformat
    # converting back gives a disk with the same GPT and filesystem
    back = tmp_path / "back.raw"
    subprocess.run(["qemu-img", "convert", *forced, "-O", "raw", str(img), str(back)], check=True)
    assert _blkid(back).get("PTTYPE") == "gpt"
    assert _blkid(back, diskimage.PART_START).get("TYPE") == "ext4"


def test_factory_ova_is_a_tar_with_ovf_first_and_a_stream_vmdk(al2023_tree: Path,
                                                                tmp_path: Path) -> None:
    import tarfile

    img = diskimage.build_image(al2023_tree, tmp_path / "node.ova",
                                diskimage.ImageSpec(fmt="ova", size=64 * MiB))
    with tarfile.open(img) as tar:
        names = tar.getnames()
        assert names[0].endswith(".ovf") and names[1].endswith(".vmdk")
        tar.extract(names[1], tmp_path, filter="data")
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json",
                                      str(tmp_path / names[1])],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["format-specific"]["data"]["create-type"] == "streamOptimized"


def test_root_trees_carry_their_bootstrap_contract(tmp_path: Path) -> None:
    al2023 = diskimage.root_tree(tmp_path / "a", "al2023")
    al2 = diskimage.root_tree(tmp_path / "b", "al2")
    bare = diskimage.root_tree(tmp_path / "c", "bare")
    stub = (al2023 / "etc/eks/bootstrap.sh").read_text()
    assert "bootstrap.sh has been removed" in stub and stub.rstrip().endswith("exit 1")
    assert os.access(al2023 / "usr/bin/nodeadm", os.X_OK)
    assert (al2023 / "etc/systemd/system/nodeadm-run.service").is_file()
    real = (al2 / "etc/eks/bootstrap.sh").read_text()
    assert real.startswith("#!/usr/bin/env bash") and "--apiserver-endpoint" in real
    assert subprocess.run(["bash", "-n", str(al2 / "etc/eks/bootstrap.sh")]).returncode == 0
    assert not (bare / "etc/eks").exists()
