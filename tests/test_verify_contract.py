"""verify proves the whole offline join contract (issue 16), on images built from the real
upstream files: enabled units, the headline mechanism, kubelet version skew, the runtime,
the builders' image hygiene, and the evidence behind each check.

Trees come from :func:`pipeline_dev.diskimage.root_tree` (the vendored upstream
bootstrap.sh, stub and units, enabled the way ``install-nodeadm.sh`` enables them) and
are changed here the way real builds go wrong.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from pipeline.core.errors import InputError
from pipeline.image.kubelet import READ_BUDGET, SCAN_SMALL, parse_cluster_version, skew_of
from pipeline.image.verify import VERDICTS, VerifyReport, verify_image
from pipeline_dev.diskimage import (FORMATS, KUBELET_VERSION, NODEADM_UNITS, ImageSpec, _data,
                                    build_image, root_tree)

MiB = 1024 * 1024
REPO = Path(__file__).resolve().parent.parent
UPSTREAM = Path(os.environ.get("EKS_UPSTREAM", REPO.parent / "shared" / "upstream"))
DATA = REPO / "pipeline" / "data" / "rootfs"
WANTS = "etc/systemd/system/multi-user.target.wants"

#: vendored file -> its path under /work/shared/upstream (PROVENANCE.md)
VENDORED = {
    "al2-bootstrap.sh": "amazon-eks-ami-al2/templates/al2/runtime/bootstrap.sh",
    "al2023-bootstrap-stub.sh": "amazon-eks-ami/templates/al2023/runtime/rootfs/etc/eks/bootstrap.sh",
    **{u: f"amazon-eks-ami/templates/al2023/runtime/rootfs/etc/systemd/system/{u}"
       for u in (*NODEADM_UNITS, "kubelet.service")},
}


def _tree(cache: Path, tag: str, kind: str, mutate: Callable[[Path], None] | None = None,
          **kw: object) -> Path:
    root = cache / f"contract-tree-{tag}"
    if not root.exists():
        root_tree(root, kind, **kw)  # type: ignore[arg-type]
        if mutate:
            mutate(root)
    return root


def _image(cache: Path, tag: str, kind: str, mutate: Callable[[Path], None] | None = None,
           *, fs: str = "ext4", table: str = "gpt", fmt: str = "raw", **kw: object) -> Path:
    spec = ImageSpec(fs, table, fmt, (320 if fs == "xfs" else 64) * MiB)
    out = cache / f"contract-{tag}-{fs}-{table}-{fmt}{spec.suffix}"
    if not out.exists():
        build_image(_tree(cache, tag, kind, mutate, **kw), out, spec)
    return out


def _check(report: VerifyReport, verdict: str, mechanism: str | None) -> None:
    assert (report.verdict, report.mechanism) == (verdict, mechanism), report.summary()
    assert report.exit_code == (0 if verdict == "ok" else 1)
    assert verdict in VERDICTS


def _by_name(report: VerifyReport, name: str) -> dict[str, object]:
    doc = json.loads(json.dumps(report.to_dict()))
    found = [c for c in doc["checks"] if c["name"] == name]
    assert len(found) == 1, [c["name"] for c in doc["checks"]]
    return found[0]


# --------------------------------------------------------------------------- vendored files


def test_vendored_files_are_the_upstream_bytes() -> None:
    provenance = (DATA / "PROVENANCE.md").read_text()
    for name, rel in VENDORED.items():
        assert f"`{name}`" in provenance and rel.split("/", 1)[1] in provenance, name
        if UPSTREAM.exists():
            assert (DATA / name).read_bytes() == (UPSTREAM / rel).read_bytes(), name
    # the real AL2 script, not a rewrite: 26,507 bytes with its vercmp-based logic
    assert len(_data("al2-bootstrap.sh")) == 26507
    assert b"vercmp" in _data("al2-bootstrap.sh")


# --------------------------------------------------------------------------- every container


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("table", ["gpt", "mbr"])
@pytest.mark.parametrize("kind,mechanism", [("al2023", "nodeadm"), ("al2", "bootstrap.sh")])
def test_upstream_images_in_every_format(kind: str, mechanism: str, fmt: str, table: str,
                                         image_cache: Path) -> None:
    report = verify_image(_image(image_cache, kind, kind, table=table, fmt=fmt),
                          cluster_version="1.31")
    _check(report, "ok", mechanism)
    assert report.source["format"] == fmt and report.source["partition"] == f"{table}:1"
    assert report.warnings == [], report.warning_lines()
    assert report.kubelet_version.version == KUBELET_VERSION
    assert report.bytes_read < 2 * MiB
    if kind == "al2023":
        assert report.nodeadm.enabled == {u: "enabled" for u in NODEADM_UNITS[1:]}
        assert report.nodeadm.boot_hook == "enabled"
    else:
        assert report.bootstrap.sha256 == hashlib.sha256(_data("al2-bootstrap.sh")).hexdigest()


@pytest.mark.parametrize("kind", ["al2023", "al2"])
def test_upstream_images_xfs_on_lvm(kind: str, image_cache: Path) -> None:
    report = verify_image(_image(image_cache, kind, kind, fs="xfs", table="lvm",
                                 fmt="vmdk-stream"), cluster_version="1.31")
    _check(report, "ok", "nodeadm" if kind == "al2023" else "bootstrap.sh")
    assert report.source["filesystem"] == "xfs" and report.warnings == []


# --------------------------------------------------------------------------- failures


def m_not_enabled(r: Path) -> None:
    for unit in NODEADM_UNITS:
        (r / WANTS / unit).unlink()


def m_masked(r: Path) -> None:
    unit = "nodeadm-run.service"
    shutil.move(r / "etc/systemd/system" / unit, r / "usr/lib/systemd/system" / unit)
    (r / "etc/systemd/system" / unit).symlink_to("/dev/null")
    (r / WANTS / unit).unlink()
    (r / WANTS / unit).symlink_to(f"/usr/lib/systemd/system/{unit}")


def m_nodeadm_noexec(r: Path) -> None:
    (r / "usr/bin/nodeadm").chmod(0o644)


def m_boot_hook_masked(r: Path) -> None:
    unit = "nodeadm-boot-hook.service"
    (r / WANTS / unit).unlink()
    (r / "etc/systemd/system" / unit).unlink()
    (r / "etc/systemd/system" / unit).symlink_to("/dev/null")


@pytest.mark.parametrize("fs", ["ext4", "xfs"])
def test_units_present_but_not_enabled(fs: str, image_cache: Path) -> None:
    report = verify_image(_image(image_cache, "not-enabled", "al2023", m_not_enabled, fs=fs))
    _check(report, "not-enabled", "nodeadm")
    ev = _by_name(report, "nodeadm-config.service")
    assert ev["value"] == "disabled" and ev["status"] == "failure"
    assert ev["paths"] == ["/etc/systemd/system/nodeadm-config.service"]
    assert "systemctl enable nodeadm-config.service" in str(ev["detail"])


def test_masked_unit(image_cache: Path) -> None:
    report = verify_image(_image(image_cache, "masked", "al2023", m_masked, fmt="qcow2"))
    _check(report, "not-enabled", "nodeadm")
    ev = _by_name(report, "nodeadm-run.service")
    assert ev["value"] == "masked"
    assert ev["links"] == ["/etc/systemd/system/nodeadm-run.service -> /dev/null"]
    assert report.nodeadm.enabled["nodeadm-config.service"] == "enabled"


def test_nodeadm_not_executable_is_judged_by_nodeadm(image_cache: Path) -> None:
    """Whatever the stub says: the image is built for nodeadm."""
    report = verify_image(_image(image_cache, "nodeadm-noexec", "al2023", m_nodeadm_noexec,
                                 fmt="vhdx"))
    _check(report, "not-executable", "nodeadm")
    ev = _by_name(report, "/usr/bin/nodeadm")
    assert ev["mode"] == "0644" and ev["status"] == "failure"
    assert report.bootstrap.verdict == "stub"


def test_boot_hook_masked_warns_and_fails_strict(image_cache: Path) -> None:
    img = _image(image_cache, "hook-masked", "al2023", m_boot_hook_masked)
    report = verify_image(img)
    _check(report, "ok", "nodeadm")
    assert [c.name for c in report.warnings] == ["nodeadm-boot-hook.service"]
    assert report.nodeadm.boot_hook == "masked"
    _check(verify_image(img, strict=True), "not-enabled", "nodeadm")


# --------------------------------------------------------------------------- version skew


@pytest.mark.parametrize("kubelet,cluster,verdict", [
    ("v1.33.1-eks-1234567", "1.31", "version-skew"),   # newer than the API server
    ("v1.32.0", "1.31", "version-skew"),
    ("v1.31.2-eks-7f9249a", "1.31", "ok"),
    ("v1.28.15-eks-abcdef0", "1.31", "ok"),            # three minors older: allowed
    ("v1.27.16-eks-abcdef0", "1.31", "version-skew"),  # four minors older
])
def test_kubelet_skew(kubelet: str, cluster: str, verdict: str, image_cache: Path) -> None:
    img = _image(image_cache, f"kubelet-{kubelet}", "al2023", kubelet_version=kubelet)
    report = verify_image(img, cluster_version=cluster)
    _check(report, verdict, "nodeadm")
    assert report.kubelet_version.version == kubelet
    assert report.kubelet_version.source == "file"
    ev = _by_name(report, "kubelet-version")
    assert ev["paths"] == ["/etc/eks/kubelet-version.txt"] and ev["value"] == kubelet
    if verdict != "ok":
        assert kubelet in str(ev["detail"]) and cluster in str(ev["detail"])
        assert "kubelet-version" in report.summary()
    # without a cluster version there is nothing to be skewed against
    _check(verify_image(img), "ok", "nodeadm")


def test_kubelet_skew_al2(image_cache: Path) -> None:
    img = _image(image_cache, "al2-old-kubelet", "al2", kubelet_version="v1.26.15-eks-1a2b3c4")
    _check(verify_image(img, cluster_version="1.30"), "version-skew", "bootstrap.sh")
    _check(verify_image(img, cluster_version="1.29"), "ok", "bootstrap.sh")


def _no_version_file(r: Path) -> None:
    (r / "etc/eks/kubelet-version.txt").unlink()


def test_kubelet_version_from_the_binary(image_cache: Path) -> None:
    img = _image(image_cache, "kubelet-bin", "al2", _no_version_file,
                 kubelet_version="v1.34.0-eks-0f0f0f0")
    report = verify_image(img, cluster_version="1.31")
    _check(report, "version-skew", "bootstrap.sh")
    kv = report.kubelet_version
    assert (kv.version, kv.source, kv.paths) == ("v1.34.0-eks-0f0f0f0", "binary",
                                                   ["/usr/bin/kubelet"])


def test_kubelet_version_unknown_is_said(image_cache: Path) -> None:
    img = _image(image_cache, "kubelet-unknown", "al2023", kubelet_version=None)
    report = verify_image(img, cluster_version="1.31")
    _check(report, "ok", "nodeadm")
    assert report.kubelet_version.version is None
    assert report.kubelet_version.source == "unknown"
    ev = _by_name(report, "kubelet-version")
    assert ev["status"] == "warning" and "unknown" in str(ev["detail"])
    assert "kubelet version unknown" in report.summary()


def _go_elf(tmp: Path, modinfo: bytes, pad: int) -> bytes:
    """A real ELF (/bin/true) with a Go 1.18+ ``.go.buildinfo`` section and ``pad`` bytes more."""
    def uvarint(n: int) -> bytes:
        out = b""
        while True:
            b, n = n & 0x7F, n >> 7
            out += bytes([b | (0x80 if n else 0)])
            if not n:
                return out
    version = b"go1.22.8"
    info = (b"\xff Go buildinf:" + bytes([8, 0x2]) + b"\0" * 16
            + uvarint(len(version)) + version + uvarint(len(modinfo)) + modinfo)
    (tmp / "buildinfo").write_bytes(info)
    (tmp / "pad").write_bytes(hashlib.shake_256(b"pad").digest(pad))
    out = tmp / "kubelet"
    subprocess.run(["objcopy", "--add-section", f".go.buildinfo={tmp / 'buildinfo'}",
                    "--add-section", f".pad={tmp / 'pad'}", "/bin/true", str(out)],
                   check=True, capture_output=True)
    return out.read_bytes()


@pytest.mark.skipif(shutil.which("objcopy") is None, reason="binutils objcopy not installed")
def test_kubelet_version_from_go_build_info(image_cache: Path, tmp_path: Path) -> None:
    """A large binary is not scanned: the version comes from its Go build information
    (``-ldflags -X ...gitVersion=``), found through the ELF section headers."""
    modinfo = (b"path\tk8s.io/kubernetes/cmd/kubelet\nmod\tk8s.io/kubernetes\t(devel)\t\n"
               b"dep\tgithub.com/spf13/cobra\tv1.8.1\th1:x=\n"
               b"build\t-ldflags=\"all=-X 'k8s.io/component-base/version.gitVersion="
               b"v1.30.4-eks-a737599' -s -w\"\n")
    binary = _go_elf(tmp_path, modinfo, 3 * MiB)
    assert len(binary) > SCAN_SMALL

    def put(r: Path) -> None:
        _no_version_file(r)
        (r / "usr/bin/kubelet").write_bytes(binary)

    report = verify_image(_image(image_cache, "kubelet-go", "al2023", put),
                          cluster_version="1.31")
    _check(report, "ok", "nodeadm")
    kv = report.kubelet_version
    assert (kv.version, kv.source) == ("v1.30.4-eks-a737599", "binary")
    assert kv.bytes_read < 64 * 1024 <= READ_BUDGET and report.bytes_read < 2 * MiB


def test_skew_helpers() -> None:
    assert parse_cluster_version("1.31") == (1, 31) == parse_cluster_version("v1.31.2")
    assert parse_cluster_version(None) is None
    with pytest.raises(InputError, match="--cluster-version"):
        parse_cluster_version("latest")
    assert skew_of("v1.33.0", "1.31") and "newer" in str(skew_of("v1.33.0", "1.31"))
    assert skew_of("v1.27.0", "1.31") and skew_of("v1.28.0", "1.31") is None
    assert skew_of(None, "1.31") is None and skew_of("v1.31.0", None) is None


# --------------------------------------------------------------------------- runtime


def m_no_containerd(r: Path) -> None:
    (r / "usr/bin/containerd").unlink()


def m_ubuntu_snaps(r: Path) -> None:
    """Ubuntu EKS images: kubelet is the kubelet-eks snap, not /usr/bin/kubelet."""
    (r / "usr/bin/kubelet").unlink()
    snaps = r / "var/lib/snapd/snaps"
    snaps.mkdir(parents=True)
    (snaps / "kubelet-eks_187.snap").write_bytes(b"hsqs" + b"\0" * 4092)
    (r / "snap/kubelet-eks/187").mkdir(parents=True)
    (r / "snap/kubelet-eks/current").symlink_to("187")
    unit = "snap.kubelet-eks.daemon.service"
    (r / "etc/systemd/system" / unit).write_text(
        "[Unit]\nDescription=Service for snap application kubelet-eks.daemon\n\n[Service]\n"
        "ExecStart=/usr/bin/snap run kubelet-eks.daemon\n\n[Install]\n"
        "WantedBy=multi-user.target\n")
    (r / WANTS / unit).symlink_to(f"/etc/systemd/system/{unit}")


def test_runtime_missing_warns_then_fails_strict(image_cache: Path) -> None:
    img = _image(image_cache, "no-containerd", "al2023", m_no_containerd)
    report = verify_image(img)
    _check(report, "ok", "nodeadm")
    ev = _by_name(report, "containerd")
    assert ev["status"] == "warning" and "/usr/bin/containerd" in str(ev["detail"])
    strict = verify_image(img, strict=True)
    _check(strict, "runtime-missing", "nodeadm")
    assert "containerd" in strict.summary()


def test_ubuntu_kubelet_snap(image_cache: Path) -> None:
    report = verify_image(_image(image_cache, "ubuntu-snap", "al2", m_ubuntu_snaps), strict=True)
    _check(report, "ok", "bootstrap.sh")
    ev = _by_name(report, "kubelet")
    assert ev["paths"] == ["/var/lib/snapd/snaps/kubelet-eks_187.snap"]
    assert "/etc/systemd/system/snap.kubelet-eks.daemon.service (enabled)" in ev["value"]


def m_cloud_final_disabled(r: Path) -> None:
    (r / "etc/systemd/system/cloud-init.target.wants/cloud-final.service").unlink()


def test_cloud_init_disabled_warns_for_bootstrap_sh(image_cache: Path) -> None:
    report = verify_image(_image(image_cache, "cloud-final-off", "al2", m_cloud_final_disabled))
    _check(report, "ok", "bootstrap.sh")
    ev = _by_name(report, "cloud-init")
    assert ev["status"] == "warning" and "cloud-final.service is disabled" in str(ev["detail"])


# --------------------------------------------------------------------------- hygiene


LEFT_BEHIND = {
    "/etc/ssh/ssh_host_ed25519_key": "-----BEGIN OPENSSH PRIVATE KEY-----\n",
    "/etc/ssh/ssh_host_ed25519_key.pub": "ssh-ed25519 AAAA builder\n",
    "/root/.ssh/authorized_keys": "ssh-ed25519 AAAA packer\n",
    "/home/ec2-user/.ssh/authorized_keys": "ssh-rsa AAAA packer_6f0c\n",
    "/var/lib/cloud/instances/i-0123456789abcdef0/boot-finished": "1\n",
    "/var/lib/cloud/data/instance-id": "i-0123456789abcdef0\n",
    "/var/log/cloud-init.log": "Cloud-init v. 22.2.2 running 'init'\n",
    "/var/log/cloud-init-output.log": "Cloud-init v. 22.2.2 finished\n",
    "/etc/machine-id": "8d2f0c5a4be44c6f9a1d7e2b3c4d5e6f\n",
    "/etc/hostname": "ip-172-31-5-10.ec2.internal\n",
    "/var/lib/dhclient/dhclient--eth0.lease": "lease {\n}\n",
}


def m_dirty(r: Path) -> None:
    for rel, text in LEFT_BEHIND.items():
        p = r / rel.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    (r / "var/lib/cloud/instance").symlink_to("/var/lib/cloud/instances/i-0123456789abcdef0")


@pytest.mark.parametrize("fs,fmt", [("ext4", "raw"), ("xfs", "vmdk-stream")])
def test_hygiene_findings_with_paths(fs: str, fmt: str, image_cache: Path) -> None:
    img = _image(image_cache, "dirty", "al2023", m_dirty, fs=fs, fmt=fmt)
    report = verify_image(img)
    _check(report, "ok", "nodeadm")  # warnings by default
    found = {c.name: c for c in report.warnings}
    assert set(found) == {"ssh-host-keys", "authorized-keys", "cloud-init-state",
                          "cloud-init-logs", "machine-id", "hostname", "dhcp-leases"}
    assert set(found["ssh-host-keys"].paths) == {"/etc/ssh/ssh_host_ed25519_key",
                                                 "/etc/ssh/ssh_host_ed25519_key.pub"}
    assert set(found["authorized-keys"].paths) == {"/root/.ssh/authorized_keys",
                                                   "/home/ec2-user/.ssh/authorized_keys"}
    assert set(found["cloud-init-state"].paths) == {"/var/lib/cloud/instance",
                                                    "/var/lib/cloud/instances",
                                                    "/var/lib/cloud/data"}
    assert found["dhcp-leases"].paths == ("/var/lib/dhclient/dhclient--eth0.lease",)
    ev = _by_name(report, "machine-id")
    assert ev["value"][0]["value"] == "8d2f0c5a4be44c6f9a1d7e2b3c4d5e6f"  # type: ignore[index]
    inst = next(f for f in _by_name(report, "cloud-init-state")["value"]  # type: ignore[union-attr]
                if f["path"] == "/var/lib/cloud/instance")
    assert inst["kind"] == "lnk" and inst["target"].endswith("i-0123456789abcdef0")
    assert len(report.summary().splitlines()) < 10
    doc = report.to_dict()
    assert any("/etc/hostname" in w for w in doc["warnings"])
    strict = verify_image(img, strict=True)
    _check(strict, "ssh-host-keys", "nodeadm")
    assert {c.name for c in strict.failures} == set(found)
    assert strict.to_verification().warnings == ()


def test_clean_image_has_no_hygiene_findings(image_cache: Path) -> None:
    report = verify_image(_image(image_cache, "al2023", "al2023"), strict=True)
    _check(report, "ok", "nodeadm")
    ev = _by_name(report, "ssh-host-keys")
    assert ev["status"] == "ok" and ev["paths"] == ["/etc/ssh/ssh_host_*"]


# --------------------------------------------------------------------------- the task


def _invoke(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "invoke"), "verify", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def test_task_flags_and_exit_codes(image_cache: Path) -> None:
    img = str(_image(image_cache, "kubelet-v1.33.1-eks-1234567", "al2023",
                     kubelet_version="v1.33.1-eks-1234567"))
    skewed = _invoke("--image", img, "--cluster-version", "1.31", "--json")
    assert skewed.returncode == 1, skewed.stderr
    doc = json.loads(skewed.stdout)
    assert (doc["verdict"], doc["mechanism"], doc["exit_code"]) == ("version-skew", "nodeadm", 1)
    assert doc["kubelet_version"]["version"] == "v1.33.1-eks-1234567"
    assert doc["cluster_version"] == "1.31"
    for check in doc["checks"]:
        assert {"name", "status", "verdict", "paths", "mode", "links", "value"} <= set(check)
    ok = _invoke("--image", img, "--cluster-version", "1.33", "--strict")
    assert ok.returncode == 0 and ok.stdout.startswith("OK "), ok.stdout + ok.stderr
    bad = _invoke("--image", img, "--cluster-version", "one.thirty")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "--cluster-version" in bad.stderr
    dirty = _invoke("--image", str(_image(image_cache, "dirty", "al2023", m_dirty)), "--strict")
    assert dirty.returncode == 1 and "verdict ssh-host-keys" in dirty.stdout


def test_config_key_verify_strict_reaches_import_preflight(image_cache: Path,
                                                           tmp_path: Path) -> None:
    """``images[].verify_strict`` makes import-image's pre-flight refuse hygiene findings,
    and ``cluster.kubernetes_version`` a skewed kubelet."""
    from pipeline.core.config import load_settings
    from pipeline.core.errors import PreflightError
    from pipeline.ingest.importer import _bootstrap, _cluster_version

    cfg = tmp_path / "pipeline.yaml"
    disk = tmp_path / "disk.vmdk"
    disk.write_bytes(b"x")
    cfg.write_text("cluster:\n  name: demo\n  kubernetes_version: \"1.31\"\n"
                   "images:\n  - name: strict\n    verify_strict: true\n"
                   f"    import:\n      source: {disk}\n"
                   f"  - name: lax\n    import:\n      source: {disk}\n")
    settings = load_settings(str(cfg))
    strict, lax = settings.image("strict"), settings.image("lax")
    assert (strict.verify_strict, lax.verify_strict) == (True, False)
    assert _cluster_version(settings) == "1.31"
    dirty = _image(image_cache, "dirty", "al2023", m_dirty)
    assert _bootstrap(dirty, lax.require, "1.31", lax.verify_strict) == ("ok", "nodeadm")
    with pytest.raises(PreflightError, match="ssh-host-keys"):
        _bootstrap(dirty, strict.require, "1.31", strict.verify_strict)
    skewed = _image(image_cache, "kubelet-v1.33.1-eks-1234567", "al2023",
                    kubelet_version="v1.33.1-eks-1234567")
    with pytest.raises(PreflightError, match="version-skew"):
        _bootstrap(skewed, lax.require, _cluster_version(settings))


def m_no_boot_hook(r: Path) -> None:
    unit = "nodeadm-boot-hook.service"
    (r / WANTS / unit).unlink()
    (r / "etc/systemd/system" / unit).unlink()


def test_older_nodeadm_without_boot_hook_passes_strict(image_cache: Path) -> None:
    report = verify_image(_image(image_cache, "no-boot-hook", "al2023", m_no_boot_hook),
                          strict=True)
    _check(report, "ok", "nodeadm")
    assert [c.name for c in report.warnings] == ["nodeadm-boot-hook.service"]


def test_strict_names_hygiene_before_runtime_layout(image_cache: Path) -> None:
    def both(r: Path) -> None:
        m_dirty(r)
        m_no_containerd(r)

    report = verify_image(_image(image_cache, "dirty-no-containerd", "al2023", both),
                          strict=True, cluster_version="1.31")
    _check(report, "ssh-host-keys", "nodeadm")
    assert "containerd" in {c.name for c in report.failures}
    skewed = verify_image(_image(image_cache, "dirty-no-containerd", "al2023", both),
                          strict=True, cluster_version="1.35")
    _check(skewed, "version-skew", "nodeadm")


def test_kubelet_version_from_a_wrapper_script(image_cache: Path) -> None:
    def wrapper(r: Path) -> None:
        _no_version_file(r)
        (r / "usr/bin/kubelet").write_text('#!/bin/sh\n[ "$1" = --version ] && '
                                           'echo "Kubernetes v1.29.8" && exit 0\n'
                                           'exec /opt/kubelet "$@"\n')

    report = verify_image(_image(image_cache, "kubelet-wrapper", "al2023", wrapper),
                          cluster_version="1.31")
    _check(report, "ok", "nodeadm")
    assert report.kubelet_version.version == "v1.29.8"
