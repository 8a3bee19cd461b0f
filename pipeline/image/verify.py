"""Prove the EKS node join contract offline, from a disk image or an AMI.

A bare "is /etc/eks/bootstrap.sh there" check is worthless on AL2023-based EKS AMIs:
they ship a stub bootstrap.sh that prints "bootstrap.sh has been removed" and exits 1,
and join the cluster through nodeadm. So this module checks the contract as systemd
and cloud-init would run it:

- mechanism ``bootstrap.sh``: ``/etc/eks/bootstrap.sh`` resolves (symlinks followed
  inside the image) to a regular, non-empty file with an execute bit and a ``#!``
  line, and is not the AL2023/RHEL stub;
- mechanism ``nodeadm``: ``/usr/bin/nodeadm`` is an executable regular file and the
  ``nodeadm-config.service`` and ``nodeadm-run.service`` units exist and are *enabled*
  (a ``.wants/``/``.requires/`` link of a boot target reaching the unit file; masked
  or disabled units never start: verdict ``not-enabled``). ``nodeadm-boot-hook`` is
  reported, and warns when it is absent or not enabled;
- the runtime around it (kubelet, containerd, cloud-init for bootstrap.sh user data) in
  the places real images keep them, Ubuntu's snaps included;
- the kubelet version (:mod:`pipeline.image.kubelet`) against ``cluster_version``:
  newer than the cluster or more than three minors older is ``version-skew``;
- image hygiene (:mod:`pipeline.image.hygiene`): the builders' own checks.

The image is judged by the mechanism it is built for: an image with nodeadm's binary or
units is judged by nodeadm (``require any``), otherwise by bootstrap.sh; the reported
``mechanism`` names it, also when it fails (``not-executable`` / ``nodeadm``). It is
None when there is nothing to judge (no bootstrap.sh, or only the stub, and no nodeadm).
Runtime and hygiene findings are warnings unless ``strict``: then the first one is the
verdict. Verdicts: :data:`VERDICTS`.

Every check is also a :class:`Check` in ``report.checks`` with the paths read, mode,
link chain and value found (the ``--json`` evidence); the human summary stays short.
Nothing is booted, mounted or converted: :mod:`pipeline.image.diskread` reads the
container, partition table, LVM and filesystem lazily.

``verify_image``/``verify_disk`` never import boto3 (``invoke verify --image`` must
start fast); :func:`pipeline.lineage.verify_ami.verify_ami` reads an AMI's root snapshot
through the AWS layer and tags the AMI.
"""
from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.core.clock import now_iso
from pipeline.core.errors import ImageReadError, InputError
from pipeline.core.naming import BOOTSTRAP_PATH
from pipeline.core.inputs import check_file
from pipeline.core.records import Verification
from pipeline.image.diskread import Disk, open_disk
from pipeline.image.diskread.fs import Resolved, RootFs, find_root
from pipeline.image.hygiene import HYGIENE_CHECKS, hygiene
from pipeline.image.kubelet import (KubeletVersion, kubelet_version, parse_cluster_version,
                                    skew)
from pipeline.image.systemd import UNIT_DIRS, UnitState, unit_state

__all__ = ["VerifyReport", "BootstrapInfo", "NodeadmInfo", "Check", "verify_disk",
           "verify_image", "is_stub", "VERDICTS", "REQUIRES", "BOOTSTRAP_PATH",
           "NODEADM_PATH", "NODEADM_UNITS", "BOOT_HOOK_UNIT", "RUNTIME"]

log = logging.getLogger(__name__)

#: Every headline verdict; exit code 0 for ``ok``, 1 for any other.
VERDICTS = ("ok", "missing", "not-executable", "stub", "dangling-symlink",
            "not-regular-file", "empty", "not-enabled", "version-skew", "runtime-missing",
            *HYGIENE_CHECKS)
REQUIRES = ("any", "bootstrap.sh", "nodeadm")
NODEADM_PATH = "/usr/bin/nodeadm"
NODEADM_INTERNAL_PATH = "/usr/bin/nodeadm-internal"
NODEADM_UNITS = ("nodeadm-config.service", "nodeadm-run.service")
BOOT_HOOK_UNIT = "nodeadm-boot-hook.service"

#: The runtime around the mechanism: binaries, Ubuntu snaps (``/var/lib/snapd/snaps``
#: holds ``<name>_<revision>.snap``), and systemd units, where real images keep them.
RUNTIME: dict[str, dict[str, tuple[str, ...]]] = {
    "kubelet": {"binaries": ("/usr/bin/kubelet", "/usr/local/bin/kubelet",
                             "/snap/kubelet-eks/current/kubelet"),
                "snaps": ("kubelet-eks", "kubelet"),
                "units": ("kubelet.service", "snap.kubelet-eks.daemon.service",
                          "snap.kubelet.daemon.service")},
    "containerd": {"binaries": ("/usr/bin/containerd", "/usr/local/bin/containerd",
                                "/usr/sbin/containerd"),
                   "snaps": (),
                   "units": ("containerd.service",)},
    "cloud-init": {"binaries": ("/usr/bin/cloud-init", "/usr/local/bin/cloud-init"),
                   "snaps": (),
                   "units": ("cloud-final.service", "cloud-init.service")},
}
_SNAP_DIR = "/var/lib/snapd/snaps"
KUBELET_PATHS = RUNTIME["kubelet"]["binaries"][:2]

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


@dataclass(frozen=True, slots=True)
class Check:
    """One check and its evidence.

    ``kind``: mechanism | unit | runtime | version | hygiene. ``status``: ok | warning |
    failure | info. ``verdict`` is what the check makes the headline when it fails.
    """

    name: str
    kind: str
    status: str
    verdict: str = "ok"
    paths: tuple[str, ...] = ()
    mode: str | None = None
    links: tuple[str, ...] = ()
    value: Any = None
    detail: str = ""


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
    """What the nodeadm mechanism needs: the binary and its units, enabled."""

    verdict: str = "missing"
    present: bool = False              # binary or any nodeadm unit in the image
    binary: str | None = None
    mode: str | None = None
    links: list[str] = field(default_factory=list)
    units: dict[str, str | None] = field(default_factory=dict)   # unit -> file found
    enabled: dict[str, str] = field(default_factory=dict)        # unit -> unit state
    boot_hook: str = "missing"         # the boot hook's unit state
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
    kubelet_version: KubeletVersion = field(default_factory=KubeletVersion)
    cluster_version: str | None = None
    strict: bool = False
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if c.status == "warning"]

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "failure"]

    def warning_lines(self) -> list[str]:
        """One line per warning, naming the check and its paths."""
        return [f"{c.name}: {c.detail}" for c in self.warnings]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["exit_code"] = self.exit_code
        data["warnings"] = self.warning_lines()
        data["failures"] = [f"{c.name}: {c.detail}" for c in self.failures]
        if data["api_calls"] is None:
            del data["api_calls"]
        return data

    def to_verification(self) -> Verification:
        return Verification(verdict=self.verdict, mechanism=self.mechanism,
                            checked_at=self.checked_at, tool_version=self.tool_version,
                            os_id=self.os.get("id"), os_version=self.os.get("version_id"),
                            kubelet_version=self.kubelet_version.version,
                            warnings=tuple(dict.fromkeys(c.name for c in self.warnings)))

    def summary(self) -> str:
        src = self.source
        where = src.get("ami") or src.get("snapshot") or src.get("image")
        head = (f"{'OK' if self.ok else 'FAIL'} {where}: verdict {self.verdict}"
                + (f", mechanism {self.mechanism}" if self.mechanism else "")
                + f" (require {self.require}" + (", strict" if self.strict else "") + ")")
        osl = f"{self.os.get('id') or '?'} {self.os.get('version_id') or '?'}"
        b = self.bootstrap
        bline = f"{b.path}: {b.verdict}"
        if b.size is not None:
            bline += f", {b.size} bytes, mode {b.mode}, sha256 {(b.sha256 or '')[:16]}"
        if b.detail:
            bline += f" ({b.detail})"
        n = self.nodeadm
        nline = (f"nodeadm: {n.verdict}" + (f" ({n.detail})" if n.detail else "")
                 if n.present or self.require == "nodeadm" else "nodeadm: not in the image")
        kv = self.kubelet_version
        kline = (f"kubelet {kv.version} (from {kv.source})" if kv.version
                 else f"kubelet version unknown ({kv.detail})")
        if self.cluster_version:
            kline += f"; cluster {self.cluster_version}"
        read = f"{self.bytes_read / 1048576:.1f} MiB read in {self.seconds:.2f} s"
        if self.api_calls is not None:
            read += f", {self.api_calls} GetSnapshotBlock calls"
        lines = [head,
                 f"  os {osl}; {src.get('format')} / {src.get('partition')} / "
                 f"{src.get('filesystem')}; kubelet {'present' if self.kubelet else 'absent'}",
                 f"  {bline}", f"  {nline}", f"  {kline}"]
        lines += [f"  FAIL {c.name}: {c.detail}" for c in self.failures
                  if c.kind not in ("mechanism", "unit")]
        warns = self.warnings
        if warns:
            lines.append(f"  {len(warns)} warning(s): "
                         + "; ".join(f"{c.name} ({', '.join(c.paths[:2]) or c.value or c.verdict})"
                                     for c in warns[:6])
                         + (" ..." if len(warns) > 6 else ""))
        lines.append(f"  {read}")
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


def _unit_verdict(st: UnitState) -> str:
    if st.state == "enabled":
        return "ok"
    if st.state in ("masked", "disabled"):
        return "not-enabled"
    if st.state == "broken":
        return "not-regular-file" if "not a regular file" in st.detail else "dangling-symlink"
    return "missing"


def _unit_check(st: UnitState, kind: str, status: str) -> Check:
    detail = st.detail if st.state != "missing" else (
        f"{st.name} in none of {', '.join(UNIT_DIRS)}")
    if st.state == "enabled":
        detail = f"enabled by {', '.join(st.enabled_by)}"
    return Check(st.name, kind, status, _unit_verdict(st),
                 paths=tuple(p for p in (st.path, *st.enabled_by) if p), mode=st.mode,
                 links=tuple(st.links), value=st.state, detail=detail)


def _exists(fs: RootFs, path: str) -> bool:
    return fs.resolve(path, follow=False).node is not None


def _check_nodeadm(fs: RootFs, strict: bool) -> tuple[NodeadmInfo, list[Check]]:
    info = NodeadmInfo()
    checks: list[Check] = []
    verdict, detail, res = _check_file(fs, NODEADM_PATH)
    info.links = res.links
    if res.node is not None:
        info.binary = res.target
        info.mode = _mode(res.node.perms)
    checks.append(Check(NODEADM_PATH, "mechanism", "ok" if verdict == "ok" else "failure",
                        verdict, paths=tuple(dict.fromkeys(p for p in (NODEADM_PATH, res.target)
                                                           if p)),
                        mode=info.mode, links=tuple(res.links),
                        value=res.node.size if res.node is not None else None,
                        detail=detail))
    present = _exists(fs, NODEADM_PATH)
    problems = [] if verdict == "ok" else [f"{NODEADM_PATH}: {detail or verdict}"]
    unit_verdicts = []
    for unit in NODEADM_UNITS:
        st = unit_state(fs, unit)
        present = present or st.present
        uverdict = _unit_verdict(st)
        info.units[unit] = st.resolved if st.state in ("enabled", "disabled") else None
        info.enabled[unit] = st.state
        unit_verdicts.append(uverdict)
        checks.append(_unit_check(st, "unit", "ok" if uverdict == "ok" else "failure"))
        if uverdict != "ok":
            problems.append(checks[-1].detail)
    hook = unit_state(fs, BOOT_HOOK_UNIT)
    info.boot_hook = hook.state
    present = present or hook.present
    hook_check = _unit_check(hook, "unit", "ok" if hook.enabled else
                             ("failure" if strict else "warning"))
    if hook.state == "missing":  # a warning even with --strict: older nodeadm has none
        hook_check = Check(BOOT_HOOK_UNIT, "unit", "warning", "missing",
                           detail=f"{BOOT_HOOK_UNIT} is absent (nodeadm releases before the "
                                  "boot hook; current AMIs enable it)")
    elif hook.enabled:
        ires = _check_file(fs, NODEADM_INTERNAL_PATH)
        if ires[0] != "ok":
            hook_check = Check(BOOT_HOOK_UNIT, "unit", "failure" if strict else "warning",
                               ires[0], paths=hook_check.paths, links=hook_check.links,
                               value=hook.state,
                               detail=f"enabled, but it runs {NODEADM_INTERNAL_PATH}: "
                                      f"{ires[1] or ires[0]}")
    checks.append(hook_check)
    if verdict == "ok":
        verdict = next((v for v in unit_verdicts if v != "ok"), "ok")
    info.verdict = verdict
    info.present = present
    info.detail = "; ".join(problems)
    return info, checks


def _os_release_check(fs: RootFs, values: dict[str, str | None]) -> Check:
    res = fs.resolve("/etc/os-release")
    return Check("/etc/os-release", "info", "info", paths=("/etc/os-release",),
                 links=tuple(res.links), value=values)


def _runtime(fs: RootFs, strict: bool, mechanism: str | None) -> tuple[list[Check], str | None]:
    """Checks for kubelet, containerd and cloud-init, and the kubelet binary's path."""
    checks = []
    kubelet_bin = None
    snaps = None
    for name, where in RUNTIME.items():
        found: list[str] = []
        links: list[str] = []
        mode = None
        problems: list[str] = []
        for path in where["binaries"]:
            verdict, detail, res = _check_file(fs, path)
            if verdict == "ok":
                found.append(path if not res.links else f"{path} ({res.target})")
                links += res.links
                mode = mode or _mode(res.node.perms) if res.node else mode
                if name == "kubelet" and kubelet_bin is None:
                    kubelet_bin = path
            elif res.node is not None or res.status not in ("missing", "not-dir"):
                problems.append(f"{path}: {detail or verdict}")
        if where["snaps"]:
            if snaps is None:
                sres = fs.resolve(_SNAP_DIR)
                snaps = fs.listdir(sres.node) if sres.node is not None else []
            for snap in snaps:
                if snap.endswith(".snap") and snap.rsplit("_", 1)[0] in where["snaps"]:
                    found.append(f"{_SNAP_DIR}/{snap}")
        units = []
        for unit in where["units"]:
            st = unit_state(fs, unit)
            if st.present:
                units.append(f"{st.path} ({st.state})")
                links += [x for x in st.links if x not in links]
                if name == "cloud-init" and st.state in ("disabled", "masked"):
                    problems.append(f"{unit} is {st.state}: user data would not run")
        needed = name != "cloud-init" or mechanism == "bootstrap.sh"
        if found and not problems:
            status, detail = "ok", f"found {', '.join(found)}"
        elif not needed:
            status = "info"
            detail = (f"found {', '.join(found)}" if found else
                      f"not found in {', '.join(where['binaries'])}")
        else:
            status = "failure" if strict else "warning"
            detail = ("; ".join(problems) if problems else
                      f"not found in {', '.join(where['binaries'])}"
                      + (f" or {_SNAP_DIR}/{{{','.join(where['snaps'])}}}_*.snap"
                         if where["snaps"] else ""))
            if found:
                detail = f"found {', '.join(found)}; {detail}"
        checks.append(Check(name, "runtime", status, "ok" if status in ("ok", "info")
                            else "runtime-missing", paths=tuple(found), mode=mode,
                            links=tuple(links), value=units or None, detail=detail))
    return checks, kubelet_bin


def _version_check(kv: KubeletVersion, cluster: str | None) -> Check:
    paths = tuple(kv.paths)
    if not kv.version:
        return Check("kubelet-version", "version", "warning" if cluster else "info",
                     "ok", paths=paths, value=None,
                     detail=f"unknown: {kv.detail}" + (
                         f"; cannot check skew against the cluster's {cluster}"
                         if cluster else ""))
    if cluster is None:
        return Check("kubelet-version", "version", "info", "ok", paths=paths,
                     value=kv.version, detail=f"{kv.version} from {kv.source}; no cluster "
                                              "version given (--cluster-version)")
    major_minor = parse_cluster_version(cluster)
    assert major_minor is not None
    why = skew(kv, major_minor)
    if why:
        return Check("kubelet-version", "version", "failure", "version-skew", paths=paths,
                     value=kv.version, detail=why)
    return Check("kubelet-version", "version", "ok", "ok", paths=paths, value=kv.version,
                 detail=f"kubelet {kv.version} can join a {cluster} cluster")


def _hygiene_checks(fs: RootFs, strict: bool) -> list[Check]:
    out = []
    for f in hygiene(fs):
        if f.clean:
            out.append(Check(f.check, "hygiene", "ok", "ok", paths=tuple(f.looked_at),
                             detail="absent"))
            continue
        out.append(Check(f.check, "hygiene", "failure" if strict else "warning", f.check,
                         paths=tuple(f.paths), value=f.found,
                         detail=f"{HYGIENE_CHECKS[f.check]}: {', '.join(f.paths)}"))
    return out


def _judged(require: str, boot: BootstrapInfo, node: NodeadmInfo) -> str | None:
    """The mechanism the image is judged by (see the module docstring)."""
    if require != "any":
        return require
    if node.present:
        return "nodeadm"
    if boot.verdict not in ("missing", "stub"):
        return "bootstrap.sh"
    return None


def _decide(require: str, boot: BootstrapInfo, node: NodeadmInfo) -> tuple[str, str | None]:
    judged = _judged(require, boot, node)
    if judged == "nodeadm":
        return node.verdict, "nodeadm" if node.present else None
    if judged == "bootstrap.sh":
        return boot.verdict, "bootstrap.sh" if boot.verdict not in ("missing", "stub") else None
    return boot.verdict, None


def _bootstrap_check(b: BootstrapInfo, judged: bool) -> Check:
    status = "ok" if b.verdict == "ok" else ("failure" if judged else "info")
    return Check(BOOTSTRAP_PATH, "mechanism", status, b.verdict,
                 paths=tuple(dict.fromkeys(p for p in (b.path, b.resolved) if p)), mode=b.mode,
                 links=tuple(b.links), value=b.sha256, detail=b.detail)


def _validate(require: str, cluster_version: str | None) -> None:
    if require not in REQUIRES:
        raise InputError(f"--require must be one of {', '.join(REQUIRES)}, got {require!r}")
    parse_cluster_version(cluster_version)


def verify_disk(disk: Disk, require: str = "any", *, source: dict[str, Any] | None = None,
                started: float | None = None, cluster_version: str | None = None,
                strict: bool = False) -> VerifyReport:
    """Check the join contract on an open disk (image file or snapshot).

    ``cluster_version`` (``"1.31"``) turns on the kubelet skew check; ``strict`` makes
    runtime and hygiene findings failures instead of warnings.
    """
    _validate(require, cluster_version)
    t0 = time.perf_counter() if started is None else started
    fs, notes = find_root(disk)
    try:
        os_info = _os_release(fs)
        boot = _check_bootstrap(fs)
        nodeadm, unit_checks = _check_nodeadm(fs, strict)
        verdict, mechanism = _decide(require, boot, nodeadm)
        judged = _judged(require, boot, nodeadm)
        runtime, kubelet_bin = _runtime(fs, strict, judged)
        kv = kubelet_version(fs, kubelet_bin)
        version = _version_check(kv, cluster_version)
        clean = _hygiene_checks(fs, strict)
    except ImageReadError:
        raise
    except Exception as err:  # noqa: BLE001 - a corrupt filesystem shows up as anything
        raise ImageReadError(f"{disk.name}: {fs.kind} filesystem on {fs.volume.partition} is "
                             f"corrupt: {type(err).__name__}: {err}") from err
    if judged != "nodeadm":
        unit_checks = [c if c.status != "failure" or c.name == BOOT_HOOK_UNIT else
                       Check(c.name, c.kind, "info", c.verdict, c.paths, c.mode, c.links,
                             c.value, c.detail) for c in unit_checks]
        if not nodeadm.present:
            unit_checks = [c for c in unit_checks if c.name != BOOT_HOOK_UNIT
                           or c.status == "ok"] + [
                Check(BOOT_HOOK_UNIT, "unit", "info", "missing", detail="no nodeadm")]
    checks = [_bootstrap_check(boot, judged == "bootstrap.sh"), *unit_checks, *runtime,
              version, *clean, _os_release_check(fs, os_info)]
    if verdict == "ok":
        # the mechanism first (above), then what cannot be argued (skew), then what the
        # builders check (hygiene), then what depends on the layout (runtime, boot hook)
        order = {"mechanism": 0, "version": 1, "hygiene": 2, "unit": 3, "runtime": 4}
        failed = sorted((c for c in checks if c.status == "failure"),
                        key=lambda c: order.get(c.kind, 5))
        if failed:
            verdict = failed[0].verdict
    src = {"format": disk.format, "partition": fs.volume.partition, "filesystem": fs.kind}
    inner = getattr(disk, "inner_format", None)
    if inner:
        src["inner_format"] = inner
    src.update(source or {})
    report = VerifyReport(
        verdict=verdict, mechanism=mechanism, require=require, os=os_info, bootstrap=boot,
        nodeadm=nodeadm, kubelet=kubelet_bin is not None or runtime[0].status == "ok",
        source=src, bytes_read=disk.bytes_read,
        seconds=round(time.perf_counter() - t0, 4), checked_at=now_iso(), notes=notes,
        api_calls=getattr(disk, "api_calls", None), kubelet_version=kv,
        cluster_version=cluster_version, strict=strict, checks=checks)
    log.debug("verify %s: %s", src, verdict)
    return report


def verify_image(path: str | Path, require: str = "any", *, cluster_version: str | None = None,
                 strict: bool = False) -> VerifyReport:
    """Check a local disk image (raw, VMDK, qcow2, VHD, VHDX or OVA)."""
    t0 = time.perf_counter()
    _validate(require, cluster_version)
    check_file(path, what="--image", hint="give the path of a disk image file (raw, VMDK, "
               "VHD/VHDX, qcow2 or OVA)")
    with open_disk(path) as disk:
        return verify_disk(disk, require, source={"image": str(path)}, started=t0,
                           cluster_version=cluster_version, strict=strict)
