"""Prove the EKS node bootstrap contract offline, from a disk image or an AMI.

A bare "is /etc/eks/bootstrap.sh there" check is worthless on AL2023-based EKS AMIs:
they ship a stub bootstrap.sh that prints "bootstrap.sh has been removed" and exits 1,
and join the cluster through nodeadm. So this module checks the contract:

- mechanism ``bootstrap.sh``: ``/etc/eks/bootstrap.sh`` resolves (symlinks followed
  inside the image) to a regular, non-empty file with an execute bit and a ``#!``
  line, and is not the AL2023/RHEL stub;
- mechanism ``nodeadm``: ``/usr/bin/nodeadm`` is an executable regular file and the
  ``nodeadm-config.service`` and ``nodeadm-run.service`` units exist in
  ``/etc/systemd/system`` or ``/usr/lib/systemd/system``.

``require`` is ``any`` (default), ``bootstrap.sh`` or ``nodeadm``. Verdicts: ok,
missing, not-executable, stub, dangling-symlink, not-regular-file, empty.
Nothing is booted, mounted or converted: :mod:`pipeline.image.diskread` reads the container,
partition table, LVM and filesystem lazily.

``verify_image``/``verify_disk`` never import boto3 (``invoke verify --image`` must
start fast); :func:`pipeline.lineage.verify_ami.verify_ami` reads an AMI's root snapshot
through the AWS layer and tags the AMI.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.image.diskread import Disk, open_disk
from pipeline.image.diskread.fs import Resolved, RootFs, find_root
from pipeline.core.errors import ImageReadError, InputError
from pipeline.core.records import Verification

__all__ = ["VerifyReport", "BootstrapInfo", "NodeadmInfo", "verify_disk", "verify_image",
           "is_stub", "VERDICTS", "REQUIRES", "BOOTSTRAP_PATH", "NODEADM_PATH",
           "NODEADM_UNITS"]

log = logging.getLogger(__name__)

VERDICTS = ("ok", "missing", "not-executable", "stub", "dangling-symlink",
            "not-regular-file", "empty")
REQUIRES = ("any", "bootstrap.sh", "nodeadm")
BOOTSTRAP_PATH = "/etc/eks/bootstrap.sh"
NODEADM_PATH = "/usr/bin/nodeadm"
NODEADM_UNITS = ("nodeadm-config.service", "nodeadm-run.service")
UNIT_DIRS = ("/etc/systemd/system", "/usr/lib/systemd/system")
KUBELET_PATHS = ("/usr/bin/kubelet", "/usr/local/bin/kubelet")

#: bootstrap.sh content read in full up to this size (the real AL2 script is ~30 KiB).
_MAX_SCRIPT = 4 * 1024 * 1024
#: Larger files cannot be the stub (it is about 330 bytes).
_STUB_MAX = 4096
_STUB_MARK = b"bootstrap.sh has been removed"
_EXIT_1 = re.compile(rb"^\s*exit\s+1\b", re.MULTILINE)


def is_stub(content: bytes) -> bool:
    """The AL2023/RHEL EKS stub: a small script saying it was removed, ending in exit 1."""
    return (len(content) <= _STUB_MAX and _STUB_MARK in content
            and _EXIT_1.search(content) is not None)


@dataclass
class BootstrapInfo:
    """What ``/etc/eks/bootstrap.sh`` turned out to be."""

    path: str = BOOTSTRAP_PATH
    verdict: str = "missing"
    resolved: str | None = None        # the path inside the image after symlinks
    mode: str | None = None            # "0755"
    size: int | None = None
    sha256: str | None = None
    shebang: str | None = None
    stub: bool = False
    links: list[str] = field(default_factory=list)
    detail: str = ""


@dataclass
class NodeadmInfo:
    """What the nodeadm mechanism needs: the binary and its two systemd units."""

    verdict: str = "missing"
    binary: str | None = None
    mode: str | None = None
    units: dict[str, str | None] = field(default_factory=dict)   # unit -> path found
    detail: str = ""


@dataclass
class VerifyReport:
    """The outcome of one check; ``exit_code`` 0 when the contract holds, else 1."""

    verdict: str
    mechanism: str | None
    require: str
    os: dict[str, str | None]
    bootstrap: BootstrapInfo
    nodeadm: NodeadmInfo
    kubelet: bool
    source: dict[str, Any]
    bytes_read: int
    seconds: float
    checked_at: str
    tool_version: str = __version__
    api_calls: int | None = None
    notes: list[str] = field(default_factory=list)
    tags_written: bool = False

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["exit_code"] = self.exit_code
        if data["api_calls"] is None:
            del data["api_calls"]
        return data

    def to_verification(self) -> Verification:
        return Verification(verdict=self.verdict, mechanism=self.mechanism,
                            checked_at=self.checked_at, tool_version=self.tool_version,
                            os_id=self.os.get("id"), os_version=self.os.get("version_id"))

    def summary(self) -> str:
        src = self.source
        where = src.get("ami") or src.get("snapshot") or src.get("image")
        head = (f"{'OK' if self.ok else 'FAIL'} {where}: verdict {self.verdict}"
                + (f", mechanism {self.mechanism}" if self.mechanism else "")
                + f" (require {self.require})")
        osl = f"{self.os.get('id') or '?'} {self.os.get('version_id') or '?'}"
        b = self.bootstrap
        bline = f"{b.path}: {b.verdict}"
        if b.size is not None:
            bline += f", {b.size} bytes, mode {b.mode}, sha256 {(b.sha256 or '')[:16]}"
        if b.detail:
            bline += f" ({b.detail})"
        n = self.nodeadm
        nline = f"nodeadm: {n.verdict}" + (f" ({n.detail})" if n.detail else "")
        read = f"{self.bytes_read / 1048576:.1f} MiB read in {self.seconds:.2f} s"
        if self.api_calls is not None:
            read += f", {self.api_calls} GetSnapshotBlock calls"
        lines = [head,
                 f"  os {osl}; {src.get('format')} / {src.get('partition')} / "
                 f"{src.get('filesystem')}; kubelet {'present' if self.kubelet else 'absent'}",
                 f"  {bline}", f"  {nline}", f"  {read}"]
        return "\n".join(lines)


# --------------------------------------------------------------------------- checks


def _mode(perms: int) -> str:
    return f"{perms:04o}"


def _link_verdict(res: Resolved) -> tuple[str, str]:
    """Verdict and detail for a path that did not resolve to a node."""
    if res.status == "missing":
        return "missing", res.detail
    if res.status in ("dangling", "loop", "escape"):
        return "dangling-symlink", res.detail
    return "missing", res.detail  # a path component is not a directory


def _check_bootstrap(fs: RootFs) -> BootstrapInfo:
    info = BootstrapInfo()
    res = fs.resolve(BOOTSTRAP_PATH)
    info.links = res.links
    info.resolved = res.target
    if res.node is None:
        info.verdict, info.detail = _link_verdict(res)
        return info
    node = res.node
    info.mode = _mode(node.perms)
    info.size = node.size
    if node.kind != "reg":
        info.verdict = "not-regular-file"
        info.detail = f"{res.target} is a {'directory' if node.kind == 'dir' else 'special file'}"
        return info
    if node.size == 0:
        info.verdict, info.detail = "empty", "the file is empty"
        info.sha256 = hashlib.sha256(b"").hexdigest()
        return info
    if node.size > _MAX_SCRIPT:
        info.verdict = "not-executable"
        info.detail = f"{node.size} bytes is too large for a bootstrap script"
        return info
    content = fs.read_file(node)
    info.sha256 = hashlib.sha256(content).hexdigest()
    first = content.split(b"\n", 1)[0]
    info.shebang = first.decode(errors="replace")[:200] if first.startswith(b"#!") else None
    info.stub = is_stub(content)
    if not node.perms & 0o111:
        info.verdict, info.detail = "not-executable", f"mode {info.mode} has no execute bit"
    elif info.shebang is None:
        info.verdict, info.detail = "not-executable", "no #! interpreter line"
    elif info.shebang.endswith("\r"):
        info.verdict = "not-executable"
        info.detail = "the #! line ends in a carriage return (CRLF line endings): bad interpreter"
    elif info.stub:
        info.verdict = "stub"
        info.detail = "the AL2023/RHEL stub that only says bootstrap.sh has been removed"
    else:
        info.verdict = "ok"
    return info


def _check_file(fs: RootFs, path: str) -> tuple[str, str, Resolved]:
    """Verdict for an executable regular file at ``path``."""
    res = fs.resolve(path)
    if res.node is None:
        verdict, detail = _link_verdict(res)
        return verdict, detail, res
    node = res.node
    if node.kind != "reg":
        return "not-regular-file", f"{res.target} is not a regular file", res
    if node.size == 0:
        return "empty", f"{res.target} is empty", res
    if not node.perms & 0o111:
        return "not-executable", f"{res.target} mode {_mode(node.perms)}", res
    return "ok", "", res


def _check_nodeadm(fs: RootFs) -> NodeadmInfo:
    info = NodeadmInfo()
    verdict, detail, res = _check_file(fs, NODEADM_PATH)
    if res.node is not None:
        info.binary = res.target
        info.mode = _mode(res.node.perms)
    problems = [] if verdict == "ok" else [f"{NODEADM_PATH}: {detail or verdict}"]
    unit_verdicts = []
    for unit in NODEADM_UNITS:
        found = None
        uverdict, udetail = "missing", f"{unit} in neither {' nor '.join(UNIT_DIRS)}"
        for d in UNIT_DIRS:
            ures = fs.resolve(f"{d}/{unit}")
            if ures.node is not None and ures.node.kind == "reg" and ures.node.size > 0:
                found, uverdict, udetail = ures.target, "ok", ""
                break
            if ures.status != "missing" and uverdict == "missing":
                if ures.node is None:
                    uverdict, udetail = _link_verdict(ures)
                elif ures.node.kind != "reg":
                    uverdict, udetail = "not-regular-file", f"{d}/{unit} is not a regular file"
                else:
                    uverdict, udetail = "empty", f"{d}/{unit} is empty"
        info.units[unit] = found
        unit_verdicts.append(uverdict)
        if uverdict != "ok":
            problems.append(udetail)
    if verdict == "ok":
        verdict = next((v for v in unit_verdicts if v != "ok"), "ok")
    info.verdict = verdict
    info.detail = "; ".join(problems)
    return info


def _os_release(fs: RootFs) -> dict[str, str | None]:
    res = fs.resolve("/etc/os-release")
    values: dict[str, str] = {}
    if res.node is not None and res.node.kind == "reg":
        text = fs.read_file(res.node, limit=65536).decode(errors="replace")
        for line in text.splitlines():
            key, sep, val = line.partition("=")
            if sep and key.strip().isidentifier():
                val = val.strip()
                if len(val) >= 2 and val[0] == val[-1] and val[0] in "\"'":
                    val = val[1:-1]
                values[key.strip()] = val
    return {"id": values.get("ID"), "version_id": values.get("VERSION_ID"),
            "pretty_name": values.get("PRETTY_NAME")}


def _kubelet(fs: RootFs) -> bool:
    return any(_check_file(fs, p)[0] == "ok" for p in KUBELET_PATHS)


def _decide(require: str, boot: BootstrapInfo, node: NodeadmInfo) -> tuple[str, str | None]:
    if require == "bootstrap.sh":
        return boot.verdict, "bootstrap.sh" if boot.verdict == "ok" else None
    if require == "nodeadm":
        return node.verdict, "nodeadm" if node.verdict == "ok" else None
    if boot.verdict == "ok":
        return "ok", "bootstrap.sh"
    if node.verdict == "ok":
        return "ok", "nodeadm"
    if boot.verdict != "missing":
        return boot.verdict, None
    return node.verdict, None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def verify_disk(disk: Disk, require: str = "any", *, source: dict[str, Any] | None = None,
                started: float | None = None) -> VerifyReport:
    """Check the bootstrap contract on an open disk (image file or snapshot)."""
    if require not in REQUIRES:
        raise InputError(f"--require must be one of {', '.join(REQUIRES)}, got {require!r}")
    t0 = time.perf_counter() if started is None else started
    fs, notes = find_root(disk)
    try:
        os_info = _os_release(fs)
        boot = _check_bootstrap(fs)
        nodeadm = _check_nodeadm(fs)
        kubelet = _kubelet(fs)
    except ImageReadError:
        raise
    except Exception as err:  # noqa: BLE001 - a corrupt filesystem shows up as anything
        raise ImageReadError(f"{disk.name}: {fs.kind} filesystem on {fs.volume.partition} is "
                             f"corrupt: {type(err).__name__}: {err}") from err
    verdict, mechanism = _decide(require, boot, nodeadm)
    src = {"format": disk.format, "partition": fs.volume.partition, "filesystem": fs.kind}
    inner = getattr(disk, "inner_format", None)
    if inner:
        src["inner_format"] = inner
    src.update(source or {})
    report = VerifyReport(
        verdict=verdict, mechanism=mechanism, require=require, os=os_info, bootstrap=boot,
        nodeadm=nodeadm, kubelet=kubelet, source=src, bytes_read=disk.bytes_read,
        seconds=round(time.perf_counter() - t0, 4), checked_at=_now(), notes=notes,
        api_calls=getattr(disk, "api_calls", None))
    log.debug("verify %s: %s", src, verdict)
    return report


def verify_image(path: str | Path, require: str = "any") -> VerifyReport:
    """Check a local disk image (raw, VMDK, qcow2, VHD, VHDX or OVA)."""
    t0 = time.perf_counter()
    if require not in REQUIRES:
        raise InputError(f"--require must be one of {', '.join(REQUIRES)}, got {require!r}")
    with open_disk(path) as disk:
        return verify_disk(disk, require, source={"image": str(path)}, started=t0)
