"""Build real disk images from directory trees, without mounting anything.

Used by the tests, the local emulator (seeded base AMIs) and the demo.

- Filesystems: ext2/3/4 with ``mkfs.ext4 -d`` (e2fsprogs), XFS with a ``mkfs.xfs -p``
  protofile (xfsprogs).
- Partition tables: MBR or GPT written by ``sfdisk`` on the raw file, or none (a bare
  filesystem), or ``lvm``: an MBR partition holding an LVM2 physical volume whose
  logical volume holds the filesystem (see :mod:`pipeline_dev.lvm_writer`).
- Container formats with ``qemu-img convert``: raw, VMDK (streamOptimized,
  monolithicSparse), qcow2, VHD (dynamic, fixed), VHDX, and OVA (a tar holding an OVF
  descriptor and a streamOptimized VMDK).

:func:`root_tree` lays out a small but realistic EKS node root from the real upstream
files: ``al2023`` (the bootstrap.sh stub, nodeadm and its units enabled as
``install-nodeadm.sh`` does), ``al2`` (the real bootstrap.sh) or ``bare``.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pipeline.core.errors import PipelineError

__all__ = [
    "FORMATS",
    "TABLES",
    "FILESYSTEMS",
    "ImageSpec",
    "root_tree",
    "KUBELET_VERSION",
    "NODEADM_UNITS",
    "build_filesystem",
    "build_image",
    "qemu_format_name",
]

MiB = 1024 * 1024
GiB = 1024 * MiB

#: Container formats the factory writes.
FORMATS = ("raw", "vmdk-stream", "vmdk-sparse", "qcow2", "vhd", "vhd-fixed", "vhdx", "ova")
#: Partition layouts.
TABLES = ("mbr", "gpt", "none", "lvm")
#: Filesystems.
FILESYSTEMS = ("ext4", "ext3", "ext2", "xfs")

_QEMU_ARGS = {
    "vmdk-stream": ["-O", "vmdk", "-o", "subformat=streamOptimized"],
    "vmdk-sparse": ["-O", "vmdk", "-o", "subformat=monolithicSparse"],
    "qcow2": ["-O", "qcow2"],
    "vhd": ["-O", "vpc", "-o", "subformat=dynamic"],
    "vhd-fixed": ["-O", "vpc", "-o", "subformat=fixed,force_size=on"],
    "vhdx": ["-O", "vhdx"],
}

_SUFFIX = {"raw": ".raw", "vmdk-stream": ".vmdk", "vmdk-sparse": ".vmdk", "qcow2": ".qcow2",
           "vhd": ".vhd", "vhd-fixed": ".vhd", "vhdx": ".vhdx", "ova": ".ova"}

PART_START = 1 * MiB  # first partition at sector 2048, as every modern partitioner does


def qemu_format_name(fmt: str) -> str:
    """The name ``qemu-img info`` reports for a factory format."""
    return {"raw": "raw", "vmdk-stream": "vmdk", "vmdk-sparse": "vmdk", "qcow2": "qcow2",
            "vhd": "vpc", "vhd-fixed": "vpc", "vhdx": "vhdx", "ova": "raw"}[fmt]


@dataclass(frozen=True, slots=True)
class ImageSpec:
    """What to build. ``size`` is the virtual disk size in bytes."""

    fs: str = "ext4"
    table: str = "gpt"
    fmt: str = "raw"
    size: int = 512 * MiB
    label: str = "root"

    def __post_init__(self) -> None:
        if self.fs not in FILESYSTEMS:
            raise ValueError(f"fs must be one of {FILESYSTEMS}, got {self.fs!r}")
        if self.table not in TABLES:
            raise ValueError(f"table must be one of {TABLES}, got {self.table!r}")
        if self.fmt not in FORMATS:
            raise ValueError(f"fmt must be one of {FORMATS}, got {self.fmt!r}")
        if self.fs == "xfs" and self.size < 320 * MiB:
            raise ValueError("XFS needs at least 300 MiB (xfsprogs >= 5.19); use size >= 320 MiB")

    @property
    def suffix(self) -> str:
        return _SUFFIX[self.fmt]


# --------------------------------------------------------------------------- trees


def _data(name: str) -> bytes:
    return resources.files("pipeline").joinpath("data", "rootfs", name).read_bytes()


def _write(root: Path, rel: str, content: bytes | str, mode: int = 0o644) -> Path:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    path.chmod(mode)
    return path


def _fake_elf(name: str, payload: bytes = b"") -> bytes:
    """A small file that starts like an x86-64 ELF executable (the tree is never run)."""
    header = b"\x7fELF\x02\x01\x01" + b"\x00" * 9 + b"\x02\x00\x3e\x00"
    return header + hashlib.sha256(name.encode()).digest() * 64 + payload


#: The kubelet version the trees carry unless told otherwise (``kubelet --version``).
KUBELET_VERSION = "v1.31.2-eks-7f9249a"

# Units of packages that are not EKS files (the EKS units are the vendored upstream ones).
_CONTAINERD_UNIT = """[Unit]
Description=containerd container runtime
Documentation=https://containerd.io
After=network.target local-fs.target

[Service]
ExecStartPre=-/sbin/modprobe overlay
ExecStart=/usr/bin/containerd
Type=notify
Delegate=yes
KillMode=process
Restart=always

[Install]
WantedBy=multi-user.target
"""
_CLOUD_INIT_UNITS = {
    "cloud-init.service": "[Unit]\nDescription=Cloud-init: Network Stage\n\n[Service]\n"
                          "Type=oneshot\nExecStart=/usr/bin/cloud-init init\n\n"
                          "[Install]\nWantedBy=cloud-init.target\n",
    "cloud-final.service": "[Unit]\nDescription=Cloud-init: Final Stage\n"
                           "After=network-online.target cloud-config.service\n\n[Service]\n"
                           "Type=oneshot\nExecStart=/usr/bin/cloud-init modules --mode=final\n"
                           "\n[Install]\nWantedBy=cloud-init.target\n",
    "cloud-init.target": "[Unit]\nDescription=Cloud-init target\nAfter=multi-user.target\n\n"
                         "[Install]\nWantedBy=multi-user.target\n",
}


def _enable(dest: Path, unit: str, unit_dir: str = "/etc/systemd/system",
            target: str = "multi-user.target") -> None:
    """What ``systemctl enable`` does for ``WantedBy=<target>``: a .wants/ symlink."""
    link = dest / "etc/systemd/system" / f"{target}.wants" / unit
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(f"{unit_dir}/{unit}")


def _runtime(dest: Path, kubelet_version: str | None, enable_containerd: bool) -> None:
    """kubelet, containerd and cloud-init where the EKS AMIs keep them."""
    payload = (f"\0-X 'k8s.io/component-base/version.gitVersion={kubelet_version}'\0".encode()
               if kubelet_version else b"")
    _write(dest, "/usr/bin/kubelet", _fake_elf("kubelet", payload), 0o755)
    if kubelet_version:
        _write(dest, "/etc/eks/kubelet-version.txt", f"Kubernetes {kubelet_version}\n")
    _write(dest, "/usr/bin/containerd", _fake_elf("containerd"), 0o755)
    _write(dest, "/usr/lib/systemd/system/containerd.service", _CONTAINERD_UNIT)
    if enable_containerd:
        _enable(dest, "containerd.service", "/usr/lib/systemd/system")
    _write(dest, "/usr/bin/cloud-init",
           "#!/usr/bin/python3\nimport sys\nfrom cloudinit.cmd.main import main\n"
           "sys.exit(main())\n", 0o755)
    for unit, text in _CLOUD_INIT_UNITS.items():
        _write(dest, f"/usr/lib/systemd/system/{unit}", text)
    _enable(dest, "cloud-init.target", "/usr/lib/systemd/system")
    for unit in ("cloud-init.service", "cloud-final.service"):
        _enable(dest, unit, "/usr/lib/systemd/system", "cloud-init.target")
    _write(dest, "/etc/eks/release",
           'BASE_AMI_ID="ami-0123456789abcdef0"\nBUILD_TIME="Tue Oct 10 00:00:00 UTC 2024"\n'
           'BUILD_KERNEL="6.1.112-122.189.amzn2023.x86_64"\nARCH="x86_64"\n')


#: The nodeadm units as ``install-nodeadm.sh`` installs and enables them.
NODEADM_UNITS = ("nodeadm-boot-hook.service", "nodeadm-config.service", "nodeadm-run.service")


def root_tree(dest: Path, kind: str = "al2023", *, filler_mib: int = 0,
              extra: dict[str, bytes | str] | None = None,
              kubelet_version: str | None = KUBELET_VERSION,
              enable_units: bool = True) -> Path:
    """Lay out a small EKS-node-like root filesystem under ``dest``.

    The EKS files are the real upstream ones (``pipeline/data/rootfs``, see its
    PROVENANCE.md), laid out as the EKS AMI build does. ``al2023``: os-release 2023,
    the bootstrap.sh stub, ``/usr/bin/nodeadm`` and ``nodeadm-internal``, the
    nodeadm-boot-hook/config/run units enabled as ``install-nodeadm.sh`` enables them
    (``multi-user.target.wants/`` links; ``enable_units=False`` leaves them disabled)
    and the kubelet unit. ``al2``: os-release 2 and the real AL2 bootstrap.sh. Both get
    kubelet (``/etc/eks/kubelet-version.txt`` holds ``Kubernetes <kubelet_version>``
    as ``install-worker.sh`` writes it; None writes no version anywhere), containerd,
    cloud-init (enabled through ``cloud-init.target``) and ``/etc/eks/release``.
    ``bare``: a Linux root with neither. All are clean by the builders' hygiene rules
    (no SSH host keys, no /etc/hostname, an empty /etc/machine-id). ``filler_mib``
    adds that much incompressible data under /usr/share/filler (for benchmarks).
    """
    if kind not in ("al2023", "al2", "bare"):
        raise ValueError(f"kind must be al2023, al2 or bare, got {kind!r}")
    dest.mkdir(parents=True, exist_ok=True)
    for d in ("bin", "sbin", "lib", "usr/bin", "usr/sbin", "usr/lib/systemd/system",
              "etc/systemd/system/multi-user.target.wants", "etc/ssh", "var/lib/kubelet",
              "var/lib/cloud", "var/log", "tmp", "root", "home", "opt", "proc", "sys", "dev",
              "run"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    (dest / "tmp").chmod(0o1777)
    _write(dest, "/etc/machine-id", "")
    _write(dest, "/etc/fstab", "LABEL=root / auto defaults,noatime 1 1\n")
    _write(dest, "/etc/ssh/sshd_config", "PermitRootLogin forced-commands-only\n")
    _write(dest, "/usr/bin/bash", _fake_elf("bash"), 0o755)
    if kind == "al2023":
        _write(dest, "/etc/os-release",
               'NAME="Amazon Linux"\nVERSION="2023"\nID="amzn"\nID_LIKE="fedora"\n'
               'VERSION_ID="2023"\nPLATFORM_ID="platform:al2023"\n'
               'PRETTY_NAME="Amazon Linux 2023.6.20241010"\n')
        _write(dest, "/etc/eks/bootstrap.sh", _data("al2023-bootstrap-stub.sh"), 0o755)
        _write(dest, "/usr/bin/nodeadm", _fake_elf("nodeadm"), 0o755)
        _write(dest, "/usr/bin/nodeadm-internal", _fake_elf("nodeadm-internal"), 0o755)
        for unit in (*NODEADM_UNITS, "kubelet.service"):
            _write(dest, f"/etc/systemd/system/{unit}", _data(unit))
        if enable_units:
            for unit in NODEADM_UNITS:
                _enable(dest, unit)
        (dest / "etc/eks/nodeadm.d").mkdir(parents=True, exist_ok=True)
        _runtime(dest, kubelet_version, enable_containerd=False)
    elif kind == "al2":
        _write(dest, "/etc/os-release",
               'NAME="Amazon Linux"\nVERSION="2"\nID="amzn"\nID_LIKE="centos rhel fedora"\n'
               'VERSION_ID="2"\nPRETTY_NAME="Amazon Linux 2"\n')
        _write(dest, "/etc/eks/bootstrap.sh", _data("al2-bootstrap.sh"), 0o755)
        _runtime(dest, kubelet_version, enable_containerd=True)
    else:
        _write(dest, "/etc/os-release",
               'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
               'VERSION_ID="12"\nID=debian\n')
    if filler_mib:
        chunk = 4 * MiB
        seed = hashlib.sha256(b"filler").digest()
        for i in range((filler_mib * MiB + chunk - 1) // chunk):
            block = hashlib.shake_256(seed + i.to_bytes(4, "little")).digest(chunk)
            _write(dest, f"/usr/share/filler/blob{i:04d}.bin", block)
    for rel, content in (extra or {}).items():
        _write(dest, rel, content)
    return dest


# --------------------------------------------------------------------------- filesystems


def _run(args: list[str], what: str) -> None:
    try:
        subprocess.run(args, check=True, capture_output=True, text=True)
    except FileNotFoundError as err:
        raise PipelineError(f"{args[0]} not found while {what}; run scripts/setup.sh "
                            "to install qemu-utils, e2fsprogs and xfsprogs") from err
    except subprocess.CalledProcessError as err:
        tail = (err.stderr or err.stdout or "").strip().splitlines()[-1:] or ["?"]
        raise PipelineError(f"{args[0]} failed while {what}: {tail[0]}") from err


def _xfs_mode(st: os.stat_result, kind: str) -> str:
    suid = "u" if st.st_mode & 0o4000 else "-"
    sgid = "g" if st.st_mode & 0o2000 else "-"
    return f"{kind}{suid}{sgid}{st.st_mode & 0o777:03o}"


def _xfs_protofile(tree: Path) -> str:
    """An mkfs.xfs protofile (see mkfs.xfs(8), PROTOTYPE FILES) for ``tree``."""
    lines = ["/dev/null", "0 0"]
    st = tree.stat()
    lines.append(f"{_xfs_mode(st, 'd')} 0 0")

    def walk(d: Path, depth: int) -> None:
        pad = " " * depth
        for entry in sorted(d.iterdir(), key=lambda p: p.name):
            est = entry.lstat()
            name = entry.name
            if " " in name:
                raise ValueError(f"xfs protofiles cannot hold names with spaces: {entry}")
            if entry.is_symlink():
                lines.append(f"{pad}{name} {_xfs_mode(est, 'l')} 0 0 {os.readlink(entry)}")
            elif entry.is_dir():
                lines.append(f"{pad}{name} {_xfs_mode(est, 'd')} 0 0")
                walk(entry, depth + 1)
                lines.append(f"{pad}$")
            elif entry.is_file():
                lines.append(f"{pad}{name} {_xfs_mode(est, '-')} 0 0 {entry}")
    walk(tree, 1)
    lines.append("$")
    return "\n".join(lines) + "\n"


def build_filesystem(tree: Path, out: Path, fs: str, size: int, label: str = "root") -> Path:
    """Write a ``size``-byte sparse file holding filesystem ``fs`` made from ``tree``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.unlink()
    with open(out, "wb") as fh:
        fh.truncate(size)
    if fs in ("ext2", "ext3", "ext4"):
        _run([f"mkfs.{fs}", "-q", "-F", "-L", label, "-d", str(tree),
              "-E", "root_owner=0:0", "-b", "4096", str(out)], f"making {fs} from {tree}")
    elif fs == "xfs":
        with tempfile.NamedTemporaryFile("w", suffix=".proto", delete=False) as proto:
            proto.write(_xfs_protofile(tree))
        try:
            _run(["mkfs.xfs", "-q", "-f", "-L", label[:12], "-p", proto.name, str(out)],
                 f"making xfs from {tree}")
        finally:
            os.unlink(proto.name)
    else:
        raise ValueError(f"unknown filesystem {fs!r}")
    return out


def _copy_sparse(src: Path, dst_fh: "os.PathLike[str] | int", offset: int) -> None:
    """Copy ``src`` into the open fd ``dst_fh`` at ``offset``, skipping zero chunks."""
    chunk = 1 * MiB
    zero = bytes(chunk)
    with open(src, "rb") as fh:
        pos = 0
        while True:
            buf = fh.read(chunk)
            if not buf:
                break
            if buf != zero[: len(buf)]:
                os.pwrite(dst_fh, buf, offset + pos)  # type: ignore[arg-type]
            pos += len(buf)


def _partition(raw: Path, table: str, size: int, part_size: int, type_code: str | None) -> None:
    label = "gpt" if table == "gpt" else "dos"
    if label == "gpt":
        ptype = type_code or "0FC63DAF-8483-4772-8E79-3D69D8477DE4"  # Linux filesystem
    else:
        ptype = type_code or "83"
    script = (f"label: {label}\nunit: sectors\n\n"
              f"start={PART_START // 512}, size={part_size // 512}, type={ptype}"
              + (", bootable" if label == "dos" else "") + "\n")
    try:
        subprocess.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(raw)],
                       input=script, check=True, capture_output=True, text=True)
    except FileNotFoundError as err:
        raise PipelineError("sfdisk not found; run scripts/setup.sh to install fdisk") from err
    except subprocess.CalledProcessError as err:
        raise PipelineError(f"sfdisk failed on {raw}: {err.stderr.strip()}") from err


def _ovf(disk_name: str, disk_size: int, file_size: int) -> str:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Envelope vmw:buildId="build-0" xmlns="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
  xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References>
    <File ovf:href="{disk_name}" ovf:id="file1" ovf:size="{file_size}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="{disk_size}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1"
      ovf:fileRef="file1"
      ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <VirtualSystem ovf:id="eks-node">
    <Info>An EKS worker node</Info>
    <OperatingSystemSection ovf:id="101"><Info>Linux 64-bit</Info></OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <Item><rasd:ElementName>Hard disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceType>17</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""


def build_image(tree: Path, out: Path, spec: ImageSpec = ImageSpec()) -> Path:
    """Build a disk image of ``spec`` from ``tree`` at ``out`` and return ``out``.

    The raw disk is sparse; other formats come from ``qemu-img convert`` of it.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="diskimage-", dir=out.parent))
    try:
        raw = work / "disk.raw"
        if spec.table == "none":
            build_filesystem(tree, raw, spec.fs, spec.size, spec.label)
        else:
            tail = 1 * MiB  # room for the GPT backup header
            part_size = spec.size - PART_START - tail
            fs_img = work / "fs.img"
            if spec.table == "lvm":
                from pipeline_dev.lvm_writer import PE_START, lvm_fs_size, write_pv

                fs_size = lvm_fs_size(part_size)
                build_filesystem(tree, fs_img, spec.fs, fs_size, spec.label)
                with open(raw, "wb") as fh:
                    fh.truncate(spec.size)
                _partition(raw, "mbr", spec.size, part_size, "8e")
                fd = os.open(raw, os.O_RDWR)
                try:
                    write_pv(fd, PART_START, part_size, fs_size)
                    _copy_sparse(fs_img, fd, PART_START + PE_START)  # type: ignore[arg-type]
                finally:
                    os.close(fd)
            else:
                build_filesystem(tree, fs_img, spec.fs, part_size, spec.label)
                with open(raw, "wb") as fh:
                    fh.truncate(spec.size)
                _partition(raw, spec.table, spec.size, part_size, None)
                fd = os.open(raw, os.O_RDWR)
                try:
                    _copy_sparse(fs_img, fd, PART_START)  # type: ignore[arg-type]
                finally:
                    os.close(fd)
            fs_img.unlink()
        if out.exists():
            out.unlink()
        if spec.fmt == "raw":
            os.replace(raw, out)
        elif spec.fmt == "ova":
            vmdk = work / f"{out.stem}-disk1.vmdk"
            _run(["qemu-img", "convert", "-f", "raw", *_QEMU_ARGS["vmdk-stream"], str(raw),
                  str(vmdk)], f"converting {raw} to streamOptimized VMDK")
            ovf = work / f"{out.stem}.ovf"
            ovf.write_text(_ovf(vmdk.name, spec.size, vmdk.stat().st_size))
            with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tar:
                tar.add(ovf, arcname=ovf.name)  # the OVF descriptor comes first
                tar.add(vmdk, arcname=vmdk.name)
        else:
            _run(["qemu-img", "convert", "-f", "raw", *_QEMU_ARGS[spec.fmt], str(raw), str(out)],
                 f"converting {raw} to {spec.fmt}")
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)
