"""pipeline.bake.packer: versions, command lines for both Packer generations, the stream format,
manifests; and the templates themselves (`packer validate`, `packer fmt`, declared variables).

Only Debian's Packer 1.6.6 is installed here; the >= 1.7 path is checked by building its
command lines from a version string (it is not run against a real >= 1.10 binary).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import hcl2
import pytest

from pipeline.bake import packer as P
from pipeline.core.errors import InputError, PackerBuildFailed

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "packer" / "eks-node"
_no_packer = pytest.mark.skipif(shutil.which("packer") is None, reason="packer not installed")


def needs_packer(fn):  # type: ignore[no-untyped-def]
    """Runs the real packer binary: marked ``packer``, skipped where it is not installed."""
    return pytest.mark.packer(_no_packer(fn))


# --------------------------------------------------------------------------- versions


@pytest.mark.parametrize("text, want, init, bundled", [
    ("Packer v1.6.6\n", (1, 6, 6), False, True),
    ("Packer v1.7.10\n\nYour version of Packer is out of date! The latest version\nis 1.11.2.",
     (1, 7, 10), True, True),
    ("Packer v1.11.2\n", (1, 11, 2), True, False),
    ("1.10.0", None, None, None),
])
def test_parse_version(text, want, init, bundled):
    if want is None:
        with pytest.raises(InputError):
            P.parse_version(text)
        return
    v = P.parse_version(text)
    assert (v.major, v.minor, v.patch) == want
    assert v.has_init is init and v.legacy is (not init)
    assert v.bundles_amazon is bundled
    assert v.supports_imds_support is init


@needs_packer
def test_detect_version_of_installed_packer():
    v = P.detect_version(P.find_packer())
    assert str(v) == re.search(r"v(\d+\.\d+\.\d+)", subprocess.run(
        ["packer", "version"], capture_output=True, text=True).stdout)[1]


def test_missing_packer_is_bad_input():
    with pytest.raises(InputError, match="packer not found"):
        P.find_packer("packer-that-does-not-exist")


# --------------------------------------------------------------------------- commands


def test_modern_packer_inits_and_builds_the_folder(tmp_path):
    files = P.template_files(TEMPLATE)
    v = P.parse_version("Packer v1.11.2")
    vf = [TEMPLATE / "defaults.pkrvars.hcl", tmp_path / "bake.auto.pkrvars.json"]
    inv = P.plan_invocation("/usr/bin/packer", v, files, vf, tmp_path)
    assert inv.init_cmd == ["/usr/bin/packer", "init", str(TEMPLATE)]
    assert inv.validate_cmd == ["/usr/bin/packer", "validate", f"-var-file={vf[0]}",
                                f"-var-file={vf[1]}", str(TEMPLATE)]
    assert inv.build_cmd == ["/usr/bin/packer", "build", "-machine-readable", "-color=false",
                             f"-var-file={vf[0]}", f"-var-file={vf[1]}", str(TEMPLATE)]
    assert inv.dropped_fences == []
    assert not (tmp_path / "template").exists()   # the real folder is built as is


def test_legacy_packer_builds_a_staged_folder_without_plugins(tmp_path):
    files = P.template_files(TEMPLATE)
    v = P.parse_version("Packer v1.6.6")
    inv = P.plan_invocation("packer", v, files, [TEMPLATE / "defaults.pkrvars.hcl"], tmp_path)
    staged = tmp_path / "template"
    assert inv.init_cmd is None
    assert inv.build_cmd[-1] == str(staged) and inv.validate_cmd[-1] == str(staged)
    assert sorted(p.name for p in staged.glob("*.pkr.hcl")) == ["eks-node.pkr.hcl",
                                                                "variables.pkr.hcl"]
    main = (staged / "eks-node.pkr.hcl").read_text()
    assert "metadata_options" not in main and "imds_support" not in main
    assert "required_plugins" not in main
    assert inv.dropped_fences == ["1.2.2"]
    assert (staged / "provisioners" / "validate-bootstrap.sh").is_file()
    # Dry-run planning lays out nothing.
    inv2 = P.plan_invocation("packer", v, files, [], tmp_path / "dry", stage=False)
    assert inv2.dropped_fences == ["1.2.2"] and not (tmp_path / "dry").exists()


def test_fences_must_be_closed():
    text = "a\n# amazon-plugin>=1.2.2 begin\nimds_support = \"v2.0\"\n"
    with pytest.raises(InputError, match="unterminated"):
        P.strip_fenced(text)
    kept, dropped = P.strip_fenced(text + "# amazon-plugin>=1.2.2 end\nb\n")
    assert kept == "a\n\n\n\nb\n" and dropped == ["1.2.2"]   # line numbers kept


def test_template_folder_problems_are_bad_input(tmp_path):
    with pytest.raises(InputError, match="not found"):
        P.template_files(tmp_path / "nope")
    (tmp_path / "main.pkr.hcl").write_text("")
    with pytest.raises(InputError, match="variables.pkr.hcl missing"):
        P.template_files(tmp_path)


# --------------------------------------------------------------------------- stream


def test_parse_line_decodes_commas_and_newlines():
    ev = P.parse_line("1795627947,,ui,say,==> amazon-ebs.eks-node: No volumes to clean up"
                      "%!(PACKER_COMMA) skipping\n")
    assert ev is not None and ev.type == "ui" and ev.ui_kind == "say"
    assert ev.message == "==> amazon-ebs.eks-node: No volumes to clean up, skipping"
    art = P.parse_line("1795627947,amazon-ebs.eks-node,artifact,0,string,AMIs were created:"
                       "\\nus-east-1: ami-f6b0d1f3509f4c278\\n")
    assert art is not None and art.target == "amazon-ebs.eks-node"
    assert art.data == ("0", "string", "AMIs were created:\nus-east-1: ami-f6b0d1f3509f4c278\n")
    assert P.parse_line("not machine readable") is None


@needs_packer
def test_run_build_streams_real_packer_errors(tmp_path, emulator):
    """A real failing build: the error lines are Packer's own, decoded, and kept."""
    (tmp_path / "t.pkr.hcl").write_text(f'''
source "amazon-ebs" "x" {{
  region = "us-east-1"
  source_ami = "ami-0badc0ffee0000000"
  instance_type = "m5.large"
  ami_name = "x-{{{{timestamp}}}}"
  communicator = "none"
  custom_endpoint_ec2 = "{emulator.endpoint}"
  skip_credential_validation = true
  skip_metadata_api_check = true
  skip_region_validation = true
}}
build {{ sources = ["source.amazon-ebs.x"] }}
''')
    seen: list[P.PackerEvent] = []
    statuses: list[str] = []

    class Rec:
        def start(self, total, label=""): pass
        def advance(self, n=1): pass
        def status(self, message): statuses.append(message)
        def done(self): pass

    run = P.run_build(["packer", "build", "-machine-readable", "-color=false", "t.pkr.hcl"],
                      cwd=tmp_path, progress=Rec(), on_event=seen.append)
    assert run.exit_code == 1 and not run.ok
    assert any(e.type == "error" and e.target == "amazon-ebs.x" for e in seen)
    assert any("amazon-ebs.x" in line for line in run.errors)
    assert all("%!(PACKER_COMMA)" not in line for line in run.errors + run.ui)
    assert statuses and statuses[0].startswith("==> amazon-ebs.x")


# --------------------------------------------------------------------------- manifest


def test_manifest_selects_last_run_and_splits_regions(tmp_path):
    doc = {"builds": [
        {"name": "eks-node", "artifact_id": "us-east-1:ami-0000000000000000a",
         "packer_run_uuid": "old", "custom_data": {"build_id": "b-old"}},
        {"name": "eks-node", "artifact_id": "eu-west-1:ami-0000000000000000c,"
         "us-east-1:ami-0000000000000000b", "packer_run_uuid": "new", "build_time": 7,
         "custom_data": {"build_id": "b-new"}},
    ], "last_run_uuid": "new"}
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(doc))
    m = P.parse_manifest(path)
    assert m.image_ids == {"us-east-1": "ami-0000000000000000b",
                           "eu-west-1": "ami-0000000000000000c"}
    assert m.custom_data == {"build_id": "b-new"} and m.build_time == 7
    assert P.parse_manifest(path, "old").image_ids == {"us-east-1": "ami-0000000000000000a"}
    with pytest.raises(PackerBuildFailed, match="no build of run"):
        P.parse_manifest(path, "missing")
    with pytest.raises(PackerBuildFailed, match="no manifest"):
        P.parse_manifest(tmp_path / "absent.json")


# --------------------------------------------------------------------------- templates


def _var_refs(text: str) -> set[str]:
    return set(re.findall(r"\bvar\.([A-Za-z_][A-Za-z0-9_]*)", text))


def test_every_variable_is_declared_in_variables_file():
    declared: set[str] = set()
    for block in hcl2.load((TEMPLATE / "variables.pkr.hcl").open())["variable"]:
        declared.update(k.strip('"') for k in block)
    for tpl in TEMPLATE.glob("*.pkr.hcl"):
        if tpl.name == "variables.pkr.hcl":
            continue
        assert "variable " not in re.sub(r"#.*", "", tpl.read_text()), f"{tpl.name} declares"
        assert _var_refs(tpl.read_text()) <= declared, tpl.name
    defaults = hcl2.load((TEMPLATE / "defaults.pkrvars.hcl").open())
    assert set(defaults) - {"__comments__"} <= declared
    plugins = hcl2.load((TEMPLATE / "plugins.pkr.hcl").open())
    assert set(plugins) == {"packer", "__comments__"}
    amazon = plugins["packer"][0]["required_plugins"][0]["amazon"]
    assert amazon["source"].strip('"') == "github.com/hashicorp/amazon"


def test_provisioners_run_in_strict_mode_and_check_their_env():
    scripts = sorted((TEMPLATE / "provisioners").glob("*.sh"))
    assert len(scripts) >= 3
    main = (TEMPLATE / "eks-node.pkr.hcl").read_text()
    for script in scripts:
        text = script.read_text()
        assert "set -o errexit -o nounset -o pipefail" in text, script.name
        assert f"provisioners/{script.name}" in main, f"{script.name} is not used"
        subprocess.run(["bash", "-n", str(script)], check=True)
    for script in ("write-build-info.sh", "validate-bootstrap.sh"):
        assert ':?' in (TEMPLATE / "provisioners" / script).read_text()


def _contract_tree(tmp_path: Path, kind: str) -> Path:
    root = tmp_path / kind
    (root / "etc/eks").mkdir(parents=True)
    (root / "usr/bin").mkdir(parents=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    data = ROOT / "pipeline" / "data" / "rootfs"
    if kind in ("al2023", "stub-only"):
        shutil.copy(data / "al2023-bootstrap-stub.sh", root / "etc/eks/bootstrap.sh")
    if kind == "al2023":
        (root / "usr/bin/nodeadm").write_text("#!/bin/sh\n")
        for unit in ("nodeadm-config.service", "nodeadm-run.service"):
            shutil.copy(data / unit, root / "etc/systemd/system" / unit)
    if kind == "al2":
        shutil.copy(data / "al2-bootstrap.sh", root / "etc/eks/bootstrap.sh")
    for f in (root / "etc/eks").glob("*.sh"):
        f.chmod(0o755)
    if (root / "usr/bin/nodeadm").exists():
        (root / "usr/bin/nodeadm").chmod(0o755)
    return root


@pytest.mark.parametrize("kind, require, ok", [
    ("al2023", "nodeadm", True), ("al2023", "any", True), ("al2023", "bootstrap.sh", False),
    ("al2", "bootstrap.sh", True), ("al2", "any", True), ("al2", "nodeadm", False),
    ("stub-only", "any", False), ("bare", "any", False),
])
def test_in_instance_contract_check(tmp_path, kind, require, ok):
    """validate-bootstrap.sh run against real trees (paths rooted in a chroot-like copy)."""
    root = _contract_tree(tmp_path, kind)
    script = (TEMPLATE / "provisioners" / "validate-bootstrap.sh").read_text()
    script = (script.replace("BOOTSTRAP=/etc", f"BOOTSTRAP={root}/etc")
              .replace("NODEADM=/usr", f"NODEADM={root}/usr")
              .replace('"/etc/systemd/system/', f'"{root}/etc/systemd/system/')
              .replace('"/usr/lib/systemd/system/', f'"{root}/usr/lib/systemd/system/'))
    rooted = tmp_path / "check.sh"
    rooted.write_text(script)
    proc = subprocess.run(["bash", str(rooted)], env={"REQUIRE": require, "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True)
    assert (proc.returncode == 0) is ok, proc.stdout + proc.stderr
    if kind in ("stub-only", "al2023") and require == "bootstrap.sh":
        assert "stub" in proc.stdout
    missing = subprocess.run(["bash", str(rooted)], env={"PATH": "/usr/bin:/bin"},
                             capture_output=True, text=True)
    assert missing.returncode != 0 and "REQUIRE is required" in missing.stderr


@needs_packer
def test_packer_validate_passes_on_the_templates(tmp_path):
    """What CI runs: `packer validate` with the defaults and a base AMI id, plus `packer fmt`."""
    packer = P.find_packer()
    version = P.detect_version(packer)
    files = P.template_files(TEMPLATE)
    extra = tmp_path / "ci.pkrvars.json"
    extra.write_text(json.dumps({"source_ami_id": "ami-0123456789abcdef0", "build_id": "b-ci"}))
    inv = P.plan_invocation(packer, version, files, [files.defaults, extra], tmp_path)
    P.init(inv)
    P.validate(inv)
    fmt = subprocess.run([packer, "fmt", "-check", str(inv.template_dir)], capture_output=True,
                         text=True, env=P.packer_env())
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


@needs_packer
def test_packer_validate_failure_reports_packer_lines(tmp_path):
    packer = P.find_packer()
    files = P.template_files(TEMPLATE)
    bad = tmp_path / "bad.pkrvars.json"
    bad.write_text(json.dumps({"volume_type": "gp3", "volume_throughput": 5}))
    inv = P.plan_invocation(packer, P.detect_version(packer), files, [files.defaults, bad],
                            tmp_path)
    # bad input (exit 2): nothing was created, the message is Packer's summary
    with pytest.raises(InputError, match="packer validate: .*[Tt]hroughput") as info:
        P.validate(inv)
    assert info.value.exit_code == 2
