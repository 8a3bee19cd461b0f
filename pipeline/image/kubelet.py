"""The kubelet version in an image, and Kubernetes' version skew rule against a cluster.

Where the version comes from, in order:

1. ``/etc/eks/kubelet-version.txt``: the real EKS AMIs write ``kubelet --version``
   there (``Kubernetes v1.31.2-eks-7f9249a``; see amazon-eks-ami
   ``templates/al2023/provisioners/install-worker.sh``);
2. the kubelet binary, read in a bounded way: a Go ELF binary's build information
   (the ``.go.buildinfo`` section, found through the section headers at the end of the
   file) holds the ``-ldflags`` of the build, where Kubernetes sets
   ``k8s.io/component-base/version.gitVersion``; a binary of at most
   :data:`SCAN_SMALL` bytes is scanned whole for a ``gitVersion=`` or
   ``Kubernetes vX.Y.Z`` string. At most :data:`READ_BUDGET` bytes are read;
3. otherwise the version is unknown, and the report says so.

Skew (https://kubernetes.io/releases/version-skew-policy/#kubelet): the kubelet must
not be newer than the API server and may be up to three minor versions older.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

from pipeline.core.errors import InputError
from pipeline.image.diskread.fs import Node, RootFs

__all__ = ["KubeletVersion", "kubelet_version", "parse_cluster_version", "skew", "skew_of",
           "VERSION_FILE", "MAX_OLDER_MINORS", "SCAN_SMALL", "READ_BUDGET"]

VERSION_FILE = "/etc/eks/kubelet-version.txt"
MAX_OLDER_MINORS = 3
#: A kubelet file up to this size is scanned whole (real kubelets are ~80-120 MiB).
SCAN_SMALL = 1024 * 1024
#: Most bytes read from a large binary (ELF header, section headers, names, build info).
READ_BUDGET = 512 * 1024

_VERSION = re.compile(rb"v?(\d+)\.(\d+)\.(\d+)([-+][0-9A-Za-z.+\-]*)?")
_PATTERNS = (
    re.compile(rb"gitVersion[\"']?\s*[:=]\s*[\"']?(v\d+\.\d+\.\d+[0-9A-Za-z.+\-]*)"),
    re.compile(rb"Kubernetes (v\d+\.\d+\.\d+[0-9A-Za-z.+\-]*)"),
    re.compile(rb"(v1\.\d+\.\d+-eks-[0-9a-f]{6,40})"),
)
#: Last resort, small files only: a lone ``v1.NN.N`` (a fake or wrapper kubelet).
_LONE = re.compile(rb"(?<![\w.])(v1\.\d{1,2}\.\d{1,3}(?:-[0-9A-Za-z.]+)?)(?![\w.])")
_BUILDINFO_MAGIC = b"\xff Go buildinf:"


@dataclass
class KubeletVersion:
    """``version`` like ``v1.31.2-eks-7f9249a`` (None when unknown) and where it came from."""

    version: str | None = None
    major: int | None = None
    minor: int | None = None
    source: str = "unknown"            # file | binary | unknown
    paths: list[str] = field(default_factory=list)
    bytes_read: int = 0
    detail: str = ""

    @property
    def minor_version(self) -> str | None:
        return None if self.major is None else f"{self.major}.{self.minor}"


def _parse(text: bytes) -> tuple[str, int, int] | None:
    m = _VERSION.search(text)
    if m is None:
        return None
    version = m.group(0).decode()
    if not version.startswith("v"):
        version = "v" + version
    return version, int(m.group(1)), int(m.group(2))


def parse_cluster_version(value: str | None) -> tuple[int, int] | None:
    """``"1.31"`` (or ``v1.31``, ``1.31.2``) -> ``(1, 31)``; None stays None."""
    if value is None or value == "":
        return None
    m = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.\d+)?", str(value).strip())
    if m is None:
        raise InputError(f"--cluster-version must look like 1.31, got {value!r}; "
                         "give the cluster's Kubernetes minor version")
    return int(m.group(1)), int(m.group(2))


def skew(kubelet: KubeletVersion, cluster: tuple[int, int]) -> str | None:
    """Why the kubelet cannot join a cluster of version ``cluster``, or None."""
    if kubelet.major is None or kubelet.minor is None:
        return None
    cv = f"{cluster[0]}.{cluster[1]}"
    if (kubelet.major, kubelet.minor) > cluster:
        return (f"kubelet {kubelet.version} is newer than the cluster's Kubernetes {cv} "
                "(a kubelet must not be newer than the API server)")
    if kubelet.major != cluster[0] or cluster[1] - kubelet.minor > MAX_OLDER_MINORS:
        return (f"kubelet {kubelet.version} is more than {MAX_OLDER_MINORS} minor versions "
                f"older than the cluster's Kubernetes {cv}")
    return None


def skew_of(kubelet: str | None, cluster: str | None) -> str | None:
    """:func:`skew` for a recorded version string (an AMI tag); None when either is unknown."""
    if not kubelet or cluster is None:
        return None
    parsed = _parse(kubelet.encode())
    major_minor = parse_cluster_version(cluster)
    if parsed is None or major_minor is None:
        return None
    return skew(KubeletVersion(parsed[0], parsed[1], parsed[2]), major_minor)


class _Budget:
    def __init__(self, fs: RootFs, node: Node) -> None:
        self.fs, self.node, self.used = fs, node, 0
        self.fh = None if node.size <= SCAN_SMALL else node.raw.open()

    def read(self, offset: int, size: int) -> bytes:
        size = max(0, min(size, self.node.size - offset, READ_BUDGET - self.used))
        if size <= 0:
            return b""
        if self.fh is None:  # small (maybe ext4 inline) file: the filesystem reads it
            data = self.fs.read_file(self.node)[offset:offset + size]
            self.used += len(data)
            return data
        self.fh.seek(offset)
        data = bytes(self.fh.read(size))
        self.used += len(data)
        return data


def _uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(buf):
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
    raise ValueError("truncated varint")


def _go_buildinfo(rd: _Budget) -> bytes | None:
    """The Go build info strings (version + modinfo) of an ELF binary, or None."""
    hdr = rd.read(0, 64)
    if len(hdr) < 52 or hdr[:4] != b"\x7fELF":
        return None
    is64, little = hdr[4] == 2, hdr[5] == 1
    e = "<" if little else ">"
    if is64:
        shoff, = struct.unpack_from(e + "Q", hdr, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", hdr, 0x3A)
    else:
        shoff, = struct.unpack_from(e + "I", hdr, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", hdr, 0x2E)
    if not shoff or not shnum or shnum > 512 or shstrndx >= shnum:
        return None
    table = rd.read(shoff, shentsize * shnum)
    if len(table) < shentsize * shnum:
        return None

    def section(i: int) -> tuple[int, int, int]:
        base = i * shentsize
        if is64:
            name, = struct.unpack_from(e + "I", table, base)
            off, size = struct.unpack_from(e + "QQ", table, base + 0x18)
        else:
            name, = struct.unpack_from(e + "I", table, base)
            off, size = struct.unpack_from(e + "II", table, base + 0x10)
        return name, off, size

    _, stroff, strsize = section(shstrndx)
    names = rd.read(stroff, min(strsize, 64 * 1024))
    for i in range(shnum):
        name, off, size = section(i)
        end = names.find(b"\0", name)
        if names[name:end if end >= 0 else None] != b".go.buildinfo":
            continue
        data = rd.read(off, min(size, 256 * 1024))
        if not data.startswith(_BUILDINFO_MAGIC) or len(data) < 32:
            return None
        if not data[15] & 0x2:  # pre-1.18 layout: strings behind pointers; not read
            return None
        try:
            n, pos = _uvarint(data, 32)
            version = data[pos:pos + n]
            n, pos = _uvarint(data, pos + n)
            return version + b"\n" + data[pos:pos + n]
        except ValueError:
            return None
    return None


def _from_binary(fs: RootFs, path: str, node: Node, out: KubeletVersion) -> bool:
    rd = _Budget(fs, node)
    try:
        blobs = []
        if node.size <= SCAN_SMALL:
            blobs.append(rd.read(0, node.size))
        else:
            info = _go_buildinfo(rd)
            if info:
                blobs.append(info)
    except Exception as err:  # noqa: BLE001 - an odd binary is "unknown", not an error
        out.detail = f"{path}: could not read its build information ({type(err).__name__})"
        return False
    finally:
        out.bytes_read += rd.used
    patterns = _PATTERNS + ((_LONE,) if node.size <= SCAN_SMALL else ())
    for blob in blobs:
        for pat in patterns:
            m = pat.search(blob)
            if m and (parsed := _parse(m.group(1))):
                out.version, out.major, out.minor = parsed
                out.source = "binary"
                return True
    how = ("scanned whole" if node.size <= SCAN_SMALL
           else "its Go build information has no gitVersion")
    out.detail = (f"{path} ({node.size} bytes): no version string found ({how}); write "
                  f"`kubelet --version` to {VERSION_FILE} in the build, as the EKS AMIs do")
    return False


def kubelet_version(fs: RootFs, binary: str | None) -> KubeletVersion:
    """The kubelet version of the image (see the module docstring)."""
    out = KubeletVersion()
    res = fs.resolve(VERSION_FILE)
    if res.node is not None and res.node.kind == "reg":
        out.paths.append(VERSION_FILE if not res.links else f"{VERSION_FILE} ({res.target})")
        text = fs.read_file(res.node, limit=4096)
        out.bytes_read += len(text)
        parsed = _parse(text)
        if parsed:
            out.version, out.major, out.minor = parsed
            out.source = "file"
            return out
        out.detail = f"{VERSION_FILE} holds no version ({text[:60]!r}); "
    if binary is not None:
        bres = fs.resolve(binary)
        if bres.node is not None and bres.node.kind == "reg":
            out.paths.append(bres.target or binary)
            prefix = out.detail
            if _from_binary(fs, binary, bres.node, out):
                return out
            out.detail = prefix + out.detail
            return out
    out.detail += (f"no {VERSION_FILE} and no kubelet binary to read" if not out.detail
                   else "and no kubelet binary to read")
    return out
