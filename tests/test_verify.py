"""pipeline.image.verify on real images from the factory: every verdict, layout and format.

Images are built once per session (``image_cache``) from small trees; ext4 images are
64 MiB and XFS images 320 MiB, both sparse.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from pipeline_dev.diskimage import (FORMATS, NODEADM_UNITS, ImageSpec, _data, build_filesystem,
    build_image, root_tree)
from pipeline.core.errors import ImageReadError, InputError
from pipeline.image.verify import VerifyReport, is_stub, verify_image

MiB = 1024 * 1024
REPO = Path(__file__).resolve().parent.parent
BOOT = "etc/eks/bootstrap.sh"


# --------------------------------------------------------------------------- trees


def _replace(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _link(root: Path, rel: str, target: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    _replace(p)
    p.symlink_to(target)


def _move_script(root: Path, new_rel: str) -> None:
    dst = root / new_rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(root / BOOT, dst)


def m_noexec(r: Path) -> None:
    (r / BOOT).chmod(0o644)


def m_noshebang(r: Path) -> None:
    (r / BOOT).write_text("/usr/bin/kubelet --node-ip=1.2.3.4\n")


def m_crlf(r: Path) -> None:
    (r / BOOT).write_bytes((r / BOOT).read_bytes().replace(b"\n", b"\r\n"))


def m_empty(r: Path) -> None:
    (r / BOOT).write_bytes(b"")


def m_dir(r: Path) -> None:
    _replace(r / BOOT)
    (r / BOOT).mkdir()
    (r / BOOT / "README").write_text("not a script\n")


def m_dangling(r: Path) -> None:
    _link(r, BOOT, "/opt/eks/bootstrap.sh")


def m_host_only(r: Path) -> None:
    # exists on every build host, never in the image: must not resolve on the host
    _link(r, BOOT, "/etc/passwd")


def m_abs_link(r: Path) -> None:
    _move_script(r, "opt/eks/bootstrap.sh")
    _link(r, BOOT, "/opt/eks/bootstrap.sh")


def m_rel_link(r: Path) -> None:
    _move_script(r, "opt/eks/bootstrap.sh")
    _link(r, BOOT, "../../opt/eks/bootstrap.sh")


def m_dir_link(r: Path) -> None:
    shutil.move(r / "etc/eks", r / "usr/share/eks")
    _link(r, "etc/eks", "../usr/share/eks")


def m_dir_link_no_script(r: Path) -> None:
    m_dir_link(r)
    (r / "usr/share/eks/bootstrap.sh").unlink()


def m_escape(r: Path) -> None:
    _move_script(r, "opt/eks/bootstrap.sh")
    _link(r, BOOT, "../../../../../opt/eks/bootstrap.sh")


def m_loop(r: Path) -> None:
    _link(r, BOOT, "bootstrap2.sh")
    _link(r, "etc/eks/bootstrap2.sh", "/etc/eks/bootstrap.sh")


def m_no_nodeadm(r: Path) -> None:
    (r / "usr/bin/nodeadm").unlink()


def m_nodeadm_noexec(r: Path) -> None:
    (r / "usr/bin/nodeadm").chmod(0o644)


def m_nodeadm_no_unit(r: Path) -> None:
    (r / "etc/systemd/system/nodeadm-run.service").unlink()
    (r / "etc/systemd/system/multi-user.target.wants/nodeadm-run.service").unlink()


def m_units_in_usr_lib(r: Path) -> None:
    for unit in ("nodeadm-config.service", "nodeadm-run.service"):
        shutil.move(r / "etc/systemd/system" / unit, r / "usr/lib/systemd/system" / unit)
        _link(r, f"etc/systemd/system/multi-user.target.wants/{unit}",
              f"/usr/lib/systemd/system/{unit}")


def m_nodeadm_link(r: Path) -> None:
    shutil.move(r / "usr/bin/nodeadm", r / "opt/nodeadm")
    _link(r, "usr/bin/nodeadm", "../../opt/nodeadm")


def m_os_release_link(r: Path) -> None:
    # as on AL2023 and most systemd distributions
    shutil.move(r / "etc/os-release", r / "usr/lib/os-release")
    _link(r, "etc/os-release", "../usr/lib/os-release")


def m_no_kubelet(r: Path) -> None:
    (r / "usr/bin/kubelet").unlink()


WANTS = "etc/systemd/system/multi-user.target.wants"


def m_stub_only(r: Path) -> None:
    """An AL2023 root without nodeadm at all: only the stub is left to judge."""
    for rel in ("usr/bin/nodeadm", "usr/bin/nodeadm-internal"):
        (r / rel).unlink()
    for unit in NODEADM_UNITS:
        (r / "etc/systemd/system" / unit).unlink()
        (r / WANTS / unit).unlink()


def m_units_not_enabled(r: Path) -> None:
    """Units installed but never `systemctl enable`d (systemctl is-enabled: disabled)."""
    for unit in NODEADM_UNITS:
        (r / WANTS / unit).unlink()


def m_run_not_enabled(r: Path) -> None:
    (r / WANTS / "nodeadm-run.service").unlink()


def m_config_masked(r: Path) -> None:
    """`systemctl mask`: the unit lives in /usr/lib, /etc links its name to /dev/null."""
    unit = "nodeadm-config.service"
    shutil.move(r / "etc/systemd/system" / unit, r / "usr/lib/systemd/system" / unit)
    _link(r, f"etc/systemd/system/{unit}", "/dev/null")
    _link(r, f"{WANTS}/{unit}", f"/usr/lib/systemd/system/{unit}")


def m_config_masked_empty(r: Path) -> None:
    (r / "etc/systemd/system/nodeadm-config.service").write_bytes(b"")


def m_wants_dangling(r: Path) -> None:
    _link(r, f"{WANTS}/nodeadm-run.service", "/usr/lib/systemd/system/nodeadm-run.service")


def m_wants_relative(r: Path) -> None:
    for unit in NODEADM_UNITS:
        _link(r, f"{WANTS}/{unit}", f"../{unit}")


def m_requires_link(r: Path) -> None:
    unit = "nodeadm-config.service"
    (r / WANTS / unit).unlink()
    _link(r, f"etc/systemd/system/multi-user.target.requires/{unit}",
          f"/etc/systemd/system/{unit}")


def m_boot_hook_disabled(r: Path) -> None:
    (r / WANTS / "nodeadm-boot-hook.service").unlink()


#: case -> (tree kind, mutation, require, verdict, mechanism). The mechanism is the one
#: the image is built for, also when it fails; None when there is nothing to judge.
CASES: dict[str, tuple[str, Callable[[Path], None] | None, str, str, str | None]] = {
    "al2": ("al2", None, "any", "ok", "bootstrap.sh"),
    "al2023": ("al2023", None, "any", "ok", "nodeadm"),
    "bare": ("bare", None, "any", "missing", None),
    "noexec": ("al2", m_noexec, "any", "not-executable", "bootstrap.sh"),
    "noshebang": ("al2", m_noshebang, "any", "not-executable", "bootstrap.sh"),
    "crlf": ("al2", m_crlf, "any", "not-executable", "bootstrap.sh"),
    "empty": ("al2", m_empty, "any", "empty", "bootstrap.sh"),
    "dir": ("al2", m_dir, "any", "not-regular-file", "bootstrap.sh"),
    "dangling": ("al2", m_dangling, "any", "dangling-symlink", "bootstrap.sh"),
    "host-only": ("al2", m_host_only, "any", "dangling-symlink", "bootstrap.sh"),
    "abs-link": ("al2", m_abs_link, "any", "ok", "bootstrap.sh"),
    "rel-link": ("al2", m_rel_link, "any", "ok", "bootstrap.sh"),
    "dir-link": ("al2", m_dir_link, "any", "ok", "bootstrap.sh"),
    "dir-link-no-script": ("al2", m_dir_link_no_script, "any", "missing", None),
    "escape": ("al2", m_escape, "any", "dangling-symlink", "bootstrap.sh"),
    "loop": ("al2", m_loop, "any", "dangling-symlink", "bootstrap.sh"),
    "stub": ("al2023", m_stub_only, "any", "stub", None),
    "nodeadm-binary-gone": ("al2023", m_no_nodeadm, "any", "missing", "nodeadm"),
    "al2023-require-bootstrap": ("al2023", None, "bootstrap.sh", "stub", None),
    "al2-require-nodeadm": ("al2", None, "nodeadm", "missing", None),
    "al2-require-bootstrap": ("al2", None, "bootstrap.sh", "ok", "bootstrap.sh"),
    "al2023-require-nodeadm": ("al2023", None, "nodeadm", "ok", "nodeadm"),
    "nodeadm-noexec": ("al2023", m_nodeadm_noexec, "nodeadm", "not-executable", "nodeadm"),
    "nodeadm-noexec-any": ("al2023", m_nodeadm_noexec, "any", "not-executable", "nodeadm"),
    "nodeadm-no-unit": ("al2023", m_nodeadm_no_unit, "nodeadm", "missing", "nodeadm"),
    "units-in-usr-lib": ("al2023", m_units_in_usr_lib, "nodeadm", "ok", "nodeadm"),
    "nodeadm-link": ("al2023", m_nodeadm_link, "nodeadm", "ok", "nodeadm"),
    "units-not-enabled": ("al2023", m_units_not_enabled, "any", "not-enabled", "nodeadm"),
    "run-not-enabled": ("al2023", m_run_not_enabled, "any", "not-enabled", "nodeadm"),
    "unit-masked": ("al2023", m_config_masked, "any", "not-enabled", "nodeadm"),
    "unit-masked-empty": ("al2023", m_config_masked_empty, "any", "not-enabled", "nodeadm"),
    "wants-dangling": ("al2023", m_wants_dangling, "any", "not-enabled", "nodeadm"),
    "wants-relative": ("al2023", m_wants_relative, "any", "ok", "nodeadm"),
    "requires-link": ("al2023", m_requires_link, "any", "ok", "nodeadm"),
    "boot-hook-disabled": ("al2023", m_boot_hook_disabled, "any", "ok", "nodeadm"),
    "no-kubelet": ("al2", m_no_kubelet, "any", "ok", "bootstrap.sh"),
    "os-release-link": ("al2023", m_os_release_link, "any", "ok", "nodeadm"),
}
#: The cases also run on XFS (ext4 runs them all).
XFS_CASES = ("al2", "al2023", "stub", "noexec", "dangling", "loop", "dir", "empty", "rel-link",
             "os-release-link", "units-not-enabled", "unit-masked", "nodeadm-noexec-any")


def _tree(cache: Path, kind: str, mutate: Callable[[Path], None] | None, tag: str) -> Path:
    root = cache / f"tree-{tag}"
    if not root.exists():
        root_tree(root, kind)
        if mutate:
            mutate(root)
    return root


def _image(cache: Path, tag: str, kind: str, mutate: Callable[[Path], None] | None = None,
           fs: str = "ext4", table: str = "gpt", fmt: str = "raw") -> Path:
    spec = ImageSpec(fs, table, fmt, (320 if fs == "xfs" else 64) * MiB)
    out = cache / f"v-{tag}-{fs}-{table}-{fmt}{spec.suffix}"
    if not out.exists():
        build_image(_tree(cache, kind, mutate, tag), out, spec)
    return out


# --------------------------------------------------------------------------- verdicts


def _check(report: VerifyReport, verdict: str, mechanism: str | None) -> None:
    assert (report.verdict, report.mechanism) == (verdict, mechanism), report.summary()
    assert report.exit_code == (0 if verdict == "ok" else 1)


@pytest.mark.parametrize("case", list(CASES))
def test_verdicts_ext4(case: str, image_cache: Path) -> None:
    kind, mutate, require, verdict, mechanism = CASES[case]
    report = verify_image(_image(image_cache, case, kind, mutate), require=require)
    _check(report, verdict, mechanism)


@pytest.mark.parametrize("case", XFS_CASES)
def test_verdicts_xfs(case: str, image_cache: Path) -> None:
    kind, mutate, require, verdict, mechanism = CASES[case]
    report = verify_image(_image(image_cache, case, kind, mutate, fs="xfs"), require=require)
    _check(report, verdict, mechanism)
    assert report.source["filesystem"] == "xfs"


def test_ok_bootstrap_report_fields(image_cache: Path) -> None:
    report = verify_image(_image(image_cache, "al2", "al2"))
    script = _data("al2-bootstrap.sh")
    import hashlib

    b = report.bootstrap
    assert (b.path, b.mode, b.size, b.stub) == ("/etc/eks/bootstrap.sh", "0755", len(script), False)
    assert b.sha256 == hashlib.sha256(script).hexdigest()
    assert b.shebang and b.shebang.startswith("#!")
    assert report.os == {"id": "amzn", "version_id": "2", "pretty_name": "Amazon Linux 2"}
    assert report.kubelet is True
    assert report.source == {"format": "raw", "partition": "gpt:1", "filesystem": "ext4",
                             "image": str(_image(image_cache, "al2", "al2"))}
    assert 0 < report.bytes_read < 2 * MiB and report.seconds < 5
    doc = json.loads(json.dumps(report.to_dict()))
    for key in ("verdict", "mechanism", "os", "bootstrap", "nodeadm", "kubelet", "source",
                "bytes_read", "seconds"):
        assert key in doc
    for key in ("path", "mode", "size", "sha256", "stub"):
        assert key in doc["bootstrap"]
    for key in ("format", "partition", "filesystem"):
        assert key in doc["source"]
    ver = report.to_verification()
    assert (ver.verdict, ver.mechanism, ver.os_id, ver.os_version) == ("ok", "bootstrap.sh",
                                                                       "amzn", "2")


def test_stub_report(image_cache: Path) -> None:
    report = verify_image(_image(image_cache, "al2023", "al2023"))
    assert report.bootstrap.verdict == "stub" and report.bootstrap.stub
    assert report.nodeadm.units == {
        "nodeadm-config.service": "/etc/systemd/system/nodeadm-config.service",
        "nodeadm-run.service": "/etc/systemd/system/nodeadm-run.service"}
    assert report.os["id"] == "amzn" and report.os["version_id"] == "2023"
    assert "stub" in report.summary() and report.summary().count("\n") < 8


def test_symlink_details(image_cache: Path) -> None:
    abs_ = verify_image(_image(image_cache, "abs-link", "al2", m_abs_link))
    assert abs_.bootstrap.resolved == "/opt/eks/bootstrap.sh"
    assert abs_.bootstrap.links == ["/etc/eks/bootstrap.sh -> /opt/eks/bootstrap.sh"]
    esc = verify_image(_image(image_cache, "escape", "al2", m_escape))
    assert "above the image root" in esc.bootstrap.detail
    loop = verify_image(_image(image_cache, "loop", "al2", m_loop))
    assert "loop" in loop.bootstrap.detail
    host = verify_image(_image(image_cache, "host-only", "al2", m_host_only))
    assert host.bootstrap.resolved == "/etc/passwd" and host.bootstrap.size is None
    assert "points at /etc/passwd, which does not exist" in host.bootstrap.detail
    gone = verify_image(_image(image_cache, "dir-link-no-script", "al2", m_dir_link_no_script))
    assert gone.bootstrap.links == ["/etc/eks -> ../usr/share/eks"]
    assert gone.bootstrap.detail == "/usr/share/eks/bootstrap.sh does not exist"
    nok = verify_image(_image(image_cache, "no-kubelet", "al2", m_no_kubelet))
    assert nok.kubelet is False
    osl = verify_image(_image(image_cache, "os-release-link", "al2023", m_os_release_link))
    assert osl.os["version_id"] == "2023"


def test_is_stub() -> None:
    stub = _data("al2023-bootstrap-stub.sh")
    assert is_stub(stub)
    assert not is_stub(_data("al2-bootstrap.sh"))
    assert not is_stub(stub.replace(b"exit 1", b"exit 0"))
    assert not is_stub(stub + b"# padding\n" * 1000)
    # same behaviour, different banner bytes: still the stub (content, not hash)
    assert is_stub(b"#!/bin/bash\necho 'bootstrap.sh has been removed' >&2\nexit 1\n")


def test_bad_require(image_cache: Path) -> None:
    with pytest.raises(InputError, match="--require"):
        verify_image(_image(image_cache, "al2", "al2"), require="cloud-init")


# --------------------------------------------------------------------------- layouts, formats


@pytest.mark.parametrize("fs", ["ext4", "xfs"])
@pytest.mark.parametrize("table", ["mbr", "gpt", "none", "lvm"])
def test_layouts(fs: str, table: str, image_cache: Path) -> None:
    report = verify_image(_image(image_cache, "al2", "al2", fs=fs, table=table))
    _check(report, "ok", "bootstrap.sh")
    expected = {"mbr": "mbr:1", "gpt": "gpt:1", "none": "none", "lvm": "lvm:vg0/root@mbr:1"}
    assert report.source["partition"] == expected[table]
    assert report.source["filesystem"] == fs


@pytest.mark.parametrize("fmt", FORMATS)
def test_formats_ext4(fmt: str, image_cache: Path) -> None:
    report = verify_image(_image(image_cache, "al2023", "al2023", fmt=fmt))
    _check(report, "ok", "nodeadm")
    assert report.source["format"] == fmt
    if fmt == "ova":
        assert report.source["inner_format"] == "vmdk-stream"


@pytest.mark.parametrize("fmt,table,case", [("vmdk-stream", "lvm", "al2"), ("vhd", "gpt", "stub"),
                                            ("vhdx", "mbr", "dangling")])
def test_formats_xfs(fmt: str, table: str, case: str, image_cache: Path) -> None:
    kind, mutate, require, verdict, mechanism = CASES[case]
    report = verify_image(_image(image_cache, case, kind, mutate, fs="xfs", table=table, fmt=fmt),
                          require=require)
    _check(report, verdict, mechanism)
    assert report.source["format"] == fmt and report.source["filesystem"] == "xfs"


def test_ext2_and_ext3(image_cache: Path) -> None:
    for fs in ("ext2", "ext3"):
        report = verify_image(_image(image_cache, "al2", "al2", fs=fs, table="mbr"))
        _check(report, "ok", "bootstrap.sh")
        assert report.source["filesystem"] == fs


@pytest.mark.parametrize("inode_size", ["256", "1024"])
def test_inline_data_ext4(inode_size: str, image_cache: Path, tmp_path: Path) -> None:
    """ext4 with inline_data: small files and directories live in the inode."""
    tree = shutil.copytree(_tree(image_cache, "al2", None, "al2"), tmp_path / "tree",
                           symlinks=True)
    for rel in ("etc/eks/release", "etc/eks/kubelet-version.txt"):  # keep /etc/eks inline
        (tree / rel).unlink()
    fs_img = tmp_path / "inline.ext4"
    fs_img.write_bytes(b"")
    os.truncate(fs_img, 64 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "inline_data", "-I", inode_size, "-d", str(tree),
                    "-E", "root_owner=0:0", str(fs_img)], check=True)
    for path in ("/etc/eks", "/etc/os-release"):  # the case really is inline
        stat = subprocess.run(["debugfs", "-R", f"stat {path}", str(fs_img)],
                              capture_output=True, text=True, check=True).stdout
        assert "Flags: 0x10000000" in stat, stat
    report = verify_image(fs_img)
    _check(report, "ok", "bootstrap.sh")
    assert report.os["version_id"] == "2"
    assert report.bootstrap.size == len(_data("al2-bootstrap.sh"))


def test_root_is_the_filesystem_with_os_release(image_cache: Path, tmp_path: Path) -> None:
    """A boot partition first, the root second: every candidate is tried."""
    boot_tree = tmp_path / "boot"
    (boot_tree / "grub2").mkdir(parents=True)
    (boot_tree / "grub2" / "grub.cfg").write_text("set timeout=0\n")
    boot = build_filesystem(boot_tree, tmp_path / "boot.img", "ext4", 16 * MiB, "boot")
    root = build_filesystem(_tree(image_cache, "al2", None, "al2"), tmp_path / "root.img", "ext4",
                            40 * MiB)
    disk = tmp_path / "two.raw"
    with open(disk, "wb") as fh:
        fh.truncate(64 * MiB)
    script = ("label: gpt\nunit: sectors\n\nstart=2048, size=32768\n"
              "start=34816, size=81920\n")
    subprocess.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(disk)],
                   input=script, text=True, check=True, capture_output=True)
    with open(disk, "r+b") as fh:
        fh.seek(MiB)
        fh.write(boot.read_bytes())
        fh.seek(34816 * 512)
        fh.write(root.read_bytes())
    report = verify_image(disk)
    _check(report, "ok", "bootstrap.sh")
    assert report.source["partition"] == "gpt:2"
    assert report.notes == ["gpt:1: ext4 without /etc/os-release"]


def test_root_in_a_logical_partition(image_cache: Path, tmp_path: Path) -> None:
    """MBR: primary boot partition, extended partition, root in logical partition 5."""
    boot_tree = tmp_path / "boot"
    boot_tree.mkdir()
    (boot_tree / "grub.cfg").write_text("set timeout=0\n")
    boot = build_filesystem(boot_tree, tmp_path / "boot.img", "ext4", 10 * MiB)
    root = build_filesystem(_tree(image_cache, "al2", None, "al2"), tmp_path / "root.img", "ext4",
                            56 * MiB)
    disk = tmp_path / "logical.raw"
    with open(disk, "wb") as fh:
        fh.truncate(80 * MiB)
    script = ("label: dos\nunit: sectors\n\nstart=2048, size=20480, type=83\n"
              "start=22528, size=131072, type=5\nstart=24576, size=114688, type=83\n")
    subprocess.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(disk)],
                   input=script, text=True, check=True, capture_output=True)
    with open(disk, "r+b") as fh:
        fh.seek(2048 * 512)
        fh.write(boot.read_bytes())
        fh.seek(24576 * 512)
        fh.write(root.read_bytes())
    report = verify_image(disk)
    _check(report, "ok", "bootstrap.sh")
    assert report.source["partition"] == "mbr:5"
    assert report.notes == ["mbr:1: ext4 without /etc/os-release"]


def test_no_root_filesystem_is_a_read_error(tmp_path: Path) -> None:
    tree = tmp_path / "data"
    (tree / "x").mkdir(parents=True)
    img = build_filesystem(tree, tmp_path / "data.img", "ext4", 16 * MiB)
    with pytest.raises(ImageReadError, match="no Linux root filesystem"):
        verify_image(img)


def test_corrupt_filesystem_is_a_read_error(image_cache: Path, tmp_path: Path) -> None:
    src = _image(image_cache, "al2", "al2", table="none")
    bad = tmp_path / "badfs.raw"
    shutil.copy(src, bad)
    with open(bad, "r+b") as fh:  # wipe the block group descriptors and first inode table
        fh.seek(4096)
        fh.write(b"\xa5" * (256 * 1024))
    with pytest.raises(ImageReadError) as err:
        verify_image(bad)
    assert "\n" not in str(err.value) and str(bad) in str(err.value)


# --------------------------------------------------------------------------- the task


def _invoke(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "invoke"), "verify", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_task_exit_codes(image_cache: Path, tmp_path: Path) -> None:
    ok = _invoke("--image", str(_image(image_cache, "al2", "al2")),
                 env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert ok.stdout.startswith("OK ")
    imported = [line for line in ok.stderr.splitlines() if line.startswith("import time:")]
    assert imported and not [x for x in imported if "boto3" in x or "botocore" in x]

    stub = _invoke("--image", str(_image(image_cache, "al2023", "al2023")),
                   "--require", "bootstrap.sh", "--json")
    assert stub.returncode == 1
    doc = json.loads(stub.stdout)
    assert doc["verdict"] == "stub" and doc["bootstrap"]["stub"] is True

    missing = _invoke("--image", str(tmp_path / "nope.qcow2"))
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "no such file" in missing.stderr

    qcow = _image(image_cache, "al2", "al2", fmt="qcow2")
    cut = tmp_path / "cut.qcow2"
    cut.write_bytes(qcow.read_bytes()[: qcow.stat().st_size // 2])
    truncated = _invoke("--image", str(cut), "--json")
    assert truncated.returncode == 2
    assert "truncated" in truncated.stderr and truncated.stderr.strip().count("\n") == 0
    assert json.loads(truncated.stdout)["exit_code"] == 2

    junk = tmp_path / "junk.vmdk"
    junk.write_bytes(b"KDMV" + os.urandom(8192))
    corrupt = _invoke("--image", str(junk))
    assert corrupt.returncode == 2, corrupt.stderr
    assert corrupt.stderr.strip().count("\n") == 0 and "Traceback" not in corrupt.stderr


@pytest.fixture(scope="session")
def big_dir_tree(image_cache: Path) -> Path:
    """An AL2023 tree whose /usr/bin and /etc/systemd/system are large (multi-block) dirs."""
    root = image_cache / "tree-bigdirs"
    if not root.exists():
        root_tree(root, "al2023")
        for i in range(3000):
            (root / "usr/bin" / f"tool-with-a-longish-name-{i:05d}").write_bytes(b"#!/bin/sh\n")
        for i in range(500):
            (root / "etc/systemd/system" / f"unit-{i:04d}.service").write_text("[Unit]\n")
    return root


def test_large_directories(big_dir_tree: Path, image_cache: Path) -> None:
    """Hash-indexed ext4 directories (e2fsck -D) and XFS node-format directories."""
    ext = build_image(big_dir_tree, image_cache / "bigdirs-ext4.raw",
                      ImageSpec("ext4", "none", "raw", 128 * MiB))
    subprocess.run(["e2fsck", "-fyD", str(ext)], capture_output=True)
    htree = subprocess.run(["debugfs", "-R", "htree /usr/bin", str(ext)], capture_output=True,
                           text=True).stdout
    assert "Root node dump" in htree, "the directory really is hash-indexed"
    xfs = build_image(big_dir_tree, image_cache / "bigdirs-xfs.img",
                      ImageSpec("xfs", "none", "qcow2", 320 * MiB))
    for image in (ext, xfs):
        report = verify_image(image)
        _check(report, "ok", "nodeadm")
        assert report.kubelet and report.bytes_read < 4 * MiB
