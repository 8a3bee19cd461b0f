"""The command's conventions: flags, usage errors, the verify fast path, AWS precedence."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from pipeline import __main__ as entry
from pipeline.core.config import load_settings
from pipeline.core.errors import ConfigError
from pipeline.tasks import SHORT_FLAGS, ns

ROOT = Path(__file__).resolve().parents[1]
EKS_AMI = [sys.executable, "-m", "pipeline"]


def _eks_ami(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PIPELINE_"))}
    return subprocess.run([*EKS_AMI, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_one_short_flag_per_meaning_and_c_is_config_everywhere() -> None:
    shorts: dict[str, set[str | None]] = defaultdict(set)
    for name in ns.task_names:
        args = {a.name: a for a in ns[name].get_arguments()}
        for arg in args.values():
            nick = next(iter(arg.nicknames), None)
            shorts[arg.name].add(nick)
            if nick in SHORT_FLAGS.values() and arg.name not in SHORT_FLAGS:
                pytest.fail(f"{name}: --{arg.name} took -{nick}, reserved for another meaning")
        if "config" in args:
            assert args["config"].nicknames == ("c",), name
    assert {k: v for k, v in shorts.items() if len(v) > 1} == {}


@pytest.mark.parametrize("argv, needle", [
    (["prune", "--keep", "abc"], "prune: --keep: 'abc' is not a whole number"),
    (["import-image", "--timeout", "abc"], "import-image: --timeout: 'abc' is not a whole number"),
    (["emulator", "--port", "abc"], "emulator: --port: 'abc' is not a whole number"),
    (["emulator", "--import-seconds", "soon"], "--import-seconds: 'soon' is not a number"),
    (["prune", "--no-such-flag"], "prune: unknown flag '--no-such-flag'"),
    (["prune", "--keep"], "prune: --keep needs a value"),
    (["no-such-task"], "unknown task 'no-such-task'"),
    (["publish-template"], "publish-template: missing required --ami"),
])
def test_usage_errors_exit_2_with_one_line(argv: list[str], needle: str, tmp_path: Path) -> None:
    for as_json in (False, True):
        res = _eks_ami(*argv, *(["--json"] if as_json else []), cwd=tmp_path)
        assert res.returncode == 2, res.stderr
        assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: "), res.stderr
        assert needle in res.stderr and "Traceback" not in res.stderr
        if as_json:
            doc = json.loads(res.stdout)
            assert doc["exit_code"] == 2 and doc["kind"] == "usage" and needle in doc["error"]
        else:
            assert res.stdout == ""


@pytest.mark.parametrize("argv, needle", [
    (["prune", "--no-such-flag"], "prune: unknown flag '--no-such-flag'"),
    (["prune", "--keep"], "prune: --keep needs a value"),
    (["import-image", "--timeout", "abc"], "import-image: --timeout: 'abc' is not a whole number"),
    (["publish-template"], "publish-template: missing required --ami"),
])
def test_invoke_in_the_checkout_also_exits_2_on_usage_errors(argv: list[str],
                                                             needle: str) -> None:
    """``invoke TASK`` (Invoke's own Program exits 1 here) behaves as ``eks-ami TASK``."""
    invoke = Path(sys.executable).with_name("invoke")
    res = subprocess.run([str(invoke), *argv], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: "), res.stderr
    assert needle in res.stderr and "invoke --help TASK" in res.stderr


def test_the_verify_fast_path_reads_the_tasks_own_flag_names() -> None:
    args = {a.name: a for a in ns["verify"].get_arguments()}
    for name, (long_, short, takes_value) in entry.VERIFY_FAST_FLAGS.items():
        assert long_ == "--" + name.replace("_", "-") and args[name].nicknames == (short[1:],)
        assert args[name].takes_value == takes_value
    fast = entry._verify_fast_path
    assert fast(["verify", "--image", "a.raw"])["image"] == "a.raw"
    got = fast(["verify", "-i", "a.raw", "-r", "nodeadm", "-j"])
    assert got is not None and (got["image"], got["require"], got["json"]) == (
        "a.raw", "nodeadm", True)
    assert fast(["verify", "--image=a.raw", "--require=bootstrap.sh"])["require"] == "bootstrap.sh"
    for other in (["verify", "--ami", "ami-1"], ["verify", "--image", "a", "--no-tag"],
                  ["verify", "--image", "a", "--image", "b"], ["verify", "--image"],
                  ["verify", "--help"], ["verify", "--image", "a", "-c", "x.yaml"], ["prune"]):
        assert fast(other) is None, other


def test_verify_image_through_the_command_loads_no_aws_sdk_and_no_invoke(tmp_path: Path) -> None:
    code = ("import sys; from pipeline.__main__ import main\n"
            "try:\n    main(['eks-ami', 'verify', '--image', sys.argv[1], '--json'])\n"
            "except SystemExit: pass\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('boto3', 'botocore', 'invoke', 'moto', 'rich'))\n"
            "print(bad, file=sys.stderr)")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "missing.raw")],
                         capture_output=True, text=True, timeout=60)
    assert res.stderr.strip().splitlines()[-1] == "[]", res.stderr
    assert json.loads(res.stdout)["exit_code"] == 2


def test_init_positional_directory() -> None:
    assert entry._init_positional(["eks-ami", "init", "proj", "--force"]) == [
        "eks-ami", "init", "--directory", "proj", "--force"]
    assert entry._init_positional(["eks-ami", "init", "-d", "x"]) == ["eks-ami", "init", "-d", "x"]
    assert entry._init_positional(["eks-ami", "verify", "x"]) == ["eks-ami", "verify", "x"]


# --------------------------------------------------------------------------- AWS precedence


@pytest.fixture
def no_region_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(var, raising=False)
    aws_config = tmp_path / "aws-config"
    aws_config.write_text("[default]\nregion = ap-southeast-2\n\n"
                          "[profile team]\nregion = sa-east-1\n\n[profile bare]\noutput = json\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(aws_config))
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text("aws: {max_attempts: 2}\n")
    return cfg


def test_region_precedence(no_region_config: Path, monkeypatch: pytest.MonkeyPatch,
                           tmp_path: Path) -> None:
    def region(**kw: str) -> tuple[str, str]:
        aws = load_settings(no_region_config, **kw).aws
        return aws.region, aws.region_from

    assert region() == ("ap-southeast-2", "the region of profile default")
    monkeypatch.setenv("AWS_PROFILE", "team")
    assert region() == ("sa-east-1", "the region of profile team")
    assert region(profile="bare") == ("us-east-1", "default")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-2")
    assert region() == ("eu-west-2", "$AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert region() == ("eu-west-1", "$AWS_REGION")
    with_region = tmp_path / "with-region.yaml"
    with_region.write_text("aws: {region: us-west-2}\n")
    assert load_settings(with_region).aws.region == "us-west-2"
    assert load_settings(with_region).aws.region_from == "aws.region"
    assert load_settings(with_region, region="ca-central-1").aws.region == "ca-central-1"
    assert region(region="ca-central-1") == ("ca-central-1", "--region")
    monkeypatch.setenv("AWS_REGION", "us-eest-1")
    with pytest.raises(ConfigError, match=r"\$AWS_REGION: 'us-eest-1' is not an AWS region"):
        load_settings(no_region_config)


def test_profile_and_endpoint_precedence(no_region_config: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    named = tmp_path / "named.yaml"
    named.write_text("aws: {profile: from-file, endpoint_url: 'http://127.0.0.1:1'}\n")
    assert load_settings(no_region_config).aws.profile is None
    monkeypatch.setenv("AWS_PROFILE", "team")
    assert load_settings(no_region_config).aws.profile == "team"
    assert load_settings(named).aws.profile == "from-file"
    assert load_settings(named, profile="cli").aws.profile == "cli"
    assert load_settings(named).aws.endpoint_url == "http://127.0.0.1:1"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:2")
    assert load_settings(named).aws.endpoint_url == "http://127.0.0.1:2"


def test_region_flag_through_the_command(no_region_config: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PIPELINE_"))}
    env.update(AWS_REGION="eu-north-1", AWS_CONFIG_FILE=str(tmp_path / "none"))

    def run(*args: str) -> dict[str, str]:
        res = subprocess.run([*EKS_AMI, "check-config", "-c", str(no_region_config), "--json",
                              *args], env=env, capture_output=True, text=True, timeout=60,
                             cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)["aws"]

    assert run()["region"] == "eu-north-1"
    assert run("--region", "eu-south-1")["region_from"] == "--region"


def test_arm64_bakes_on_graviton_by_default(tmp_path: Path) -> None:
    import yaml

    from pipeline.core.config import parse_settings

    raw = yaml.safe_load((ROOT / "pipeline.example.yaml").read_text())
    img = raw["images"][0]
    img.update(architecture="arm64", boot_mode="uefi")
    img["bake"].pop("instance_type", None)
    img["bake"]["base"]["ssm_parameter"] = img["bake"]["base"]["ssm_parameter"].replace(
        "x86_64", "arm64")
    settings = parse_settings(raw, source=ROOT / "pipeline.example.yaml")
    assert settings.images[0].bake is not None
    assert settings.images[0].bake.instance_type == "m6g.large"
    img["architecture"] = "x86_64"
    img["bake"]["base"]["ssm_parameter"] = img["bake"]["base"]["ssm_parameter"].replace(
        "arm64", "x86_64")
    settings = parse_settings(raw, source=ROOT / "pipeline.example.yaml")
    assert settings.images[0].bake is not None
    assert settings.images[0].bake.instance_type == "m5.large"
