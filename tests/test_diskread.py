"""pipeline.image.diskread and pipeline_dev.lvm_writer on real images from the factory.

One raw disk is converted by ``qemu-img`` into every container; each view must read
back exactly the raw bytes, read lazily, and list allocated ranges outside of which the
disk is all zeros.
"""
from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
import tarfile
from pathlib import Path

import pytest

from pipeline_dev.diskimage import _QEMU_ARGS, ImageSpec, build_image, root_tree
from pipeline.image.diskread import open_disk
from pipeline.image.diskread._io import DiskFile
from pipeline.image.diskread.containers import merge_ranges
from pipeline.image.diskread.fs import candidate_volumes, find_root
from pipeline.core.errors import ImageReadError
from pipeline_dev.lvm_writer import PE_START, calc_crc, lvm_fs_size, pv_bytes

MiB = 1024 * 1024
CONTAINERS = tuple(_QEMU_ARGS) + ("raw", "ova")
EXPECTED_FORMAT = {"raw": "raw", "vmdk-stream": "vmdk-stream", "vmdk-sparse": "vmdk-sparse",
                   "qcow2": "qcow2", "vhd": "vhd", "vhd-fixed": "vhd-fixed", "vhdx": "vhdx",
                   "ova": "ova"}


@pytest.fixture(scope="session")
def raw_disk(image_cache: Path) -> Path:
    """A 64 MiB ext4-on-GPT AL2023 disk with 6 MiB of incompressible filler."""
    out = image_cache / "dr-base.raw"
    if not out.exists():
        tree = root_tree(image_cache / "dr-tree", "al2023", filler_mib=6)
        build_image(tree, out, ImageSpec("ext4", "gpt", "raw", 64 * MiB))
    return out


@pytest.fixture(scope="session")
def containers(raw_disk: Path, image_cache: Path) -> dict[str, Path]:
    """``raw_disk`` in every container format (qemu-img convert), plus an OVA around the VMDK."""
    out = {"raw": raw_disk}
    for fmt, args in _QEMU_ARGS.items():
        dst = image_cache / f"dr-{fmt}.img"
        if not dst.exists():
            subprocess.run(["qemu-img", "convert", "-f", "raw", *args, str(raw_disk), str(dst)],
                           check=True)
        out[fmt] = dst
    ova = image_cache / "dr.ova"
    if not ova.exists():
        ovf = image_cache / "dr.ovf"
        ovf.write_text("<Envelope/>")
        with tarfile.open(ova, "w", format=tarfile.USTAR_FORMAT) as tar:
            tar.add(ovf, arcname="node.ovf")
            tar.add(out["vmdk-stream"], arcname="node-disk1.vmdk")
    out["ova"] = ova
    return out


@pytest.mark.parametrize("fmt", CONTAINERS)
def test_reads_back_raw_bytes(fmt: str, containers: dict[str, Path], raw_disk: Path) -> None:
    raw = raw_disk.read_bytes()
    with open_disk(containers[fmt]) as disk:
        assert disk.format == EXPECTED_FORMAT[fmt]
        # dynamic VHD rounds the size up to a CHS geometry; the extra tail reads as zeros
        assert disk.size >= len(raw) and (fmt == "vhd" or disk.size == len(raw))
        rng = random.Random(fmt)
        for _ in range(150):
            off = rng.randrange(0, len(raw) - 300_000)
            n = rng.randrange(1, 300_000)
            assert disk.read(off, n) == raw[off:off + n], (off, n)
        for mib in range(1, 63, 7):  # across grain/cluster/block boundaries
            off = mib * MiB - 777
            assert disk.read(off, 5000) == raw[off:off + 5000]
        assert disk.read(disk.size - 10, 100) == bytes(10)
        assert disk.read(disk.size, 10) == b""


@pytest.mark.parametrize("fmt", CONTAINERS)
def test_allocated_ranges_cover_all_data(fmt: str, containers: dict[str, Path],
                                         raw_disk: Path) -> None:
    raw = raw_disk.read_bytes()
    with open_disk(containers[fmt]) as disk:
        ranges = list(disk.allocated_ranges())
    assert ranges, "a disk with a filesystem has data"
    pos = 0
    total = 0
    for off, n in ranges:
        assert off >= pos and n > 0, "ascending, disjoint, merged"
        assert not raw[pos:off].strip(b"\0"), f"data outside the ranges at {pos}..{off}"
        pos = off + n
        total += n
    assert not raw[pos:].strip(b"\0")
    assert total <= len(raw) // 2, "sparse: much of the 64 MiB disk is never written"


@pytest.mark.parametrize("fmt", CONTAINERS)
def test_reads_lazily_and_counts_bytes(fmt: str, containers: dict[str, Path]) -> None:
    size = containers[fmt].stat().st_size
    with open_disk(containers[fmt]) as disk:
        opened = disk.bytes_read
        assert opened < 256 * 1024, "opening reads headers and tables only"
        disk.read(40 * MiB, 4096)
        assert disk.bytes_read - opened <= 2 * 65536 + 8192
        fs, _ = find_root(disk)
        assert fs.kind == "ext4"
        assert disk.bytes_read < min(size, 4 * MiB)


@pytest.mark.parametrize("fmt", ["vmdk-stream", "qcow2", "vhdx", "raw"])
def test_concurrent_reads(fmt: str, containers: dict[str, Path], raw_disk: Path) -> None:
    """The import helper reads from several threads; results must not mix."""
    from concurrent.futures import ThreadPoolExecutor

    raw = raw_disk.read_bytes()
    rng = random.Random(7)
    jobs = [(rng.randrange(0, len(raw) - 600_000), rng.randrange(1, 600_000)) for _ in range(64)]
    with open_disk(containers[fmt]) as disk, ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda job: disk.read(*job), jobs))
    assert all(g == raw[o:o + n] for g, (o, n) in zip(got, jobs))


def test_ova_reads_inside_the_tar(containers: dict[str, Path]) -> None:
    with open_disk(containers["ova"]) as disk:
        assert disk.format == "ova"
        assert disk.inner_format == "vmdk-stream"  # type: ignore[attr-defined]
        assert disk.member == "node-disk1.vmdk"  # type: ignore[attr-defined]


def test_stream_vmdk_with_footer(containers: dict[str, Path], raw_disk: Path,
                                 tmp_path: Path) -> None:
    """VMware's layout: grain directory at the end, found through the footer."""
    data = bytearray(containers["vmdk-stream"].read_bytes())
    assert data[-512:] == bytes(512)  # qemu's end-of-stream marker
    header = bytes(data[:512])
    body = data[:-512]
    struct.pack_into("<Q", body, 56, 0xFFFFFFFFFFFFFFFF)  # gdOffset = GD_AT_END
    footer_marker = struct.pack("<QII", 1, 0, 3).ljust(512, b"\0")  # MARKER_FOOTER
    vmw = tmp_path / "vmware.vmdk"
    vmw.write_bytes(bytes(body) + footer_marker + header + bytes(512))
    raw = raw_disk.read_bytes()
    with open_disk(vmw) as disk:
        assert disk.format == "vmdk-stream"
        assert disk.read(0, len(raw)) == raw
    cut = _cut(vmw, tmp_path / "vmware-cut.vmdk", vmw.stat().st_size - 700)
    with pytest.raises(ImageReadError):
        open_disk(cut)


def test_vhdx_read_across_block_boundary(tmp_path: Path) -> None:
    """dissect's VHDX.read_sectors does not stop at a payload block; ours splits there."""
    from dissect.hypervisor.disk.vhdx import VHDX

    raw = tmp_path / "z.raw"
    with open(raw, "wb") as fh:
        fh.truncate(32 * MiB)
        fh.seek(8 * MiB)
        fh.write(b"A" * MiB)
    vhdx = tmp_path / "z.vhdx"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vhdx", str(raw), str(vhdx)],
                   check=True)
    data = raw.read_bytes()
    with open(vhdx, "rb") as fh:
        lib = VHDX(fh)
        off = lib.block_size - 4096
        assert lib.read_sectors(off // 512, 16) != data[off:off + 8192]  # the library gap
    with open_disk(vhdx) as disk:
        assert disk.read(off, 8192) == data[off:off + 8192]
        assert list(disk.allocated_ranges()) == [(8 * MiB, 8 * MiB)]


def test_raw_allocated_ranges_use_seek_data(tmp_path: Path) -> None:
    raw = tmp_path / "s.raw"
    with open(raw, "wb") as fh:
        fh.truncate(16 * MiB)
        fh.seek(4 * MiB)
        fh.write(b"x" * 4096)
    with open_disk(raw) as disk:
        ranges = list(disk.allocated_ranges())
    assert len(ranges) == 1 and ranges[0][0] <= 4 * MiB < sum(ranges[0])
    assert ranges[0][1] <= MiB


def test_one_format_imports_only_its_parser(containers: dict[str, Path]) -> None:
    """open_disk on a VMDK compiles no other hypervisor format; the package stays whole."""
    import sys

    code = (
        "import sys\n"
        "from pipeline.image.diskread import open_disk\n"
        f"open_disk({str(containers['vmdk-stream'])!r}).read(0, 512)\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('dissect.hypervisor.'))\n"
        "assert 'dissect.hypervisor.disk.vmdk' in loaded, loaded\n"
        "others = ('qcow2', 'vhdx', 'vdi', 'hyperv', 'vmx')\n"
        "assert not [m for m in loaded if m.endswith(others)], loaded\n"
        "from dissect.hypervisor import vmx, qcow2\n"
        "import dissect.hypervisor as h\n"
        "assert h.vdi.__name__ == 'dissect.hypervisor.disk.vdi'\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_merge_ranges() -> None:
    assert list(merge_ranges([(0, 10), (10, 5), (20, 1), (21, 4), (30, 0)])) == [(0, 15), (20, 5)]


def test_disk_file_cache_and_seek() -> None:
    data = bytes(range(256)) * 1024
    calls: list[tuple[int, int]] = []

    def read(off: int, n: int) -> bytes:
        calls.append((off, n))
        return data[off:off + n]

    f = DiskFile(read, len(data), cache_chunks=2)
    f.seek(70000)
    assert f.read(100) == data[70000:70100]
    assert f.read(100) == data[70100:70200]
    assert len(calls) == 1
    f.seek(-10, os.SEEK_END)
    assert f.read(100) == data[-10:]


# --------------------------------------------------------------------------- errors


def _cut(src: Path, dst: Path, keep: int) -> Path:
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        fo.write(fi.read(keep))
    return dst


@pytest.mark.parametrize("fmt", ["vmdk-stream", "vmdk-sparse", "qcow2", "vhd", "vhdx", "ova"])
def test_truncated_containers_are_read_errors(fmt: str, containers: dict[str, Path],
                                              tmp_path: Path) -> None:
    src = containers[fmt]
    bad = _cut(src, tmp_path / f"cut-{fmt}", src.stat().st_size // 2)
    with pytest.raises(ImageReadError) as err:
        with open_disk(bad) as disk:
            find_root(disk)
    msg = str(err.value)
    assert str(bad) in msg and "\n" not in msg


@pytest.mark.parametrize("fmt", ["vmdk-sparse", "qcow2"])
def test_large_disk_path_checks_table_offsets_only(fmt: str, containers: dict[str, Path],
                                                   raw_disk: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Above the table budget only table offsets are checked at open; reads still verify."""
    from pipeline.image.diskread import containers as c

    monkeypatch.setattr(c, "_CHECK_BUDGET", 0)
    raw = raw_disk.read_bytes()
    with open_disk(containers[fmt]) as disk:
        assert disk.read(0, len(raw)) == raw
    cut = _cut(containers[fmt], tmp_path / f"cut-{fmt}", containers[fmt].stat().st_size - 70000)
    with pytest.raises(ImageReadError, match="truncated"):
        with open_disk(cut) as disk:
            disk.read(0, disk.size)


def test_truncated_raw_is_a_read_error(containers: dict[str, Path], tmp_path: Path) -> None:
    bad = _cut(containers["raw"], tmp_path / "cut.raw", 3 * MiB)
    with pytest.raises(ImageReadError, match="no Linux root filesystem"):
        with open_disk(bad) as disk:
            find_root(disk)


@pytest.mark.parametrize("fmt,offset", [("qcow2", 40), ("vmdk-sparse", 0x38),
                                        ("vmdk-stream", 0x38), ("vhdx", 196608 + 16)])
def test_corrupt_headers_are_read_errors(fmt: str, offset: int, containers: dict[str, Path],
                                         tmp_path: Path) -> None:
    bad = tmp_path / f"bad-{fmt}"
    shutil.copy(containers[fmt], bad)
    size = bad.stat().st_size
    with open(bad, "r+b") as fh:  # garbage over the table offsets
        fh.seek(offset % size)
        fh.write(b"\xee" * 16)
    with pytest.raises(ImageReadError) as err:
        with open_disk(bad) as disk:
            find_root(disk)
    assert "\n" not in str(err.value)


def test_corrupt_compressed_grain_is_a_read_error(containers: dict[str, Path],
                                                  tmp_path: Path) -> None:
    from dissect.hypervisor.disk.vmdk import SparseDisk

    bad = tmp_path / "bad-grain.vmdk"
    shutil.copy(containers["vmdk-stream"], bad)
    with open(bad, "rb") as fh:
        sector = SparseDisk(fh)._lookup_grain(0)  # the grain holding the partition table
    with open(bad, "r+b") as fh:
        fh.seek(sector * 512 + 12 + 2)  # inside the zlib stream, after the grain marker
        fh.write(b"\xee" * 64)
    with pytest.raises(ImageReadError, match="corrupt") as err:
        with open_disk(bad) as disk:
            find_root(disk)
    assert "\n" not in str(err.value)


def test_missing_directory_and_tiny_files(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="no such file"):
        open_disk(tmp_path / "nope.vmdk")
    with pytest.raises(ImageReadError, match="directory"):
        open_disk(tmp_path)
    (tmp_path / "t").write_bytes(b"KDMV")
    with pytest.raises(ImageReadError, match="too small"):
        open_disk(tmp_path / "t")


def test_unsupported_vmdk_kinds_are_named(tmp_path: Path) -> None:
    desc = tmp_path / "split.vmdk"
    desc.write_text("# Disk DescriptorFile\nversion=1\ncreateType=\"twoGbMaxExtentSparse\"\n"
                    + "#" * 2000 + "\n")
    with pytest.raises(ImageReadError, match="only monolithicSparse and streamOptimized"):
        open_disk(desc)


def test_garbage_is_no_linux_filesystem(tmp_path: Path) -> None:
    junk = tmp_path / "junk.img"
    junk.write_bytes(random.Random(1).randbytes(2 * MiB))
    with pytest.raises(ImageReadError, match="no Linux root filesystem"):
        with open_disk(junk) as disk:
            find_root(disk)


# --------------------------------------------------------------------------- LVM


def test_calc_crc_matches_lvm() -> None:
    # lvm2 lib/misc/crc.c: calc_crc(INITIAL_CRC, buf, 0) == INITIAL_CRC (no final xor)
    assert calc_crc(b"") == 0xF597A6CF
    assert calc_crc(b"abc") != calc_crc(b"abd")


def test_pv_layout_and_dissect_reads_it() -> None:
    from dissect.volume.lvm import LVM2

    part = 62 * MiB
    fs_size = lvm_fs_size(part)
    assert fs_size == 15 * 4 * MiB and PE_START == MiB
    head = pv_bytes(part, fs_size)
    assert head[512:520] == b"LABELONE" and head[536:544] == b"LVM2 001"
    (crc,) = struct.unpack_from("<I", head, 528)
    assert crc == calc_crc(head[532:1024])
    disk = bytearray(head) + bytearray(fs_size)
    disk[PE_START:PE_START + 5] = b"hello"
    import io

    lvm = LVM2(io.BytesIO(bytes(disk)))
    assert lvm.vg.name == "vg0" and [lv.name for lv in lvm.vg.lv] == ["root"]
    assert lvm.vg.lv[0].open().read(5) == b"hello"
    with pytest.raises(ValueError):
        pv_bytes(part, fs_size + 4 * MiB)


@pytest.mark.skipif(shutil.which("pvck") is None, reason="lvm2 pvck not installed")
def test_pvck_accepts_the_pv(tmp_path: Path) -> None:
    pv = tmp_path / "pv.img"
    part = 40 * MiB
    pv.write_bytes(pv_bytes(part, lvm_fs_size(part)))
    with open(pv, "r+b") as fh:
        fh.truncate(part)
    out = subprocess.run(["pvck", "--dump", "headers", str(pv)], capture_output=True, text=True)
    text = out.stdout + out.stderr
    assert "label_header.id LABELONE" in text
    assert "CHECK" not in text and "bad header" not in text.lower(), text
    assert "vgname vg0 seqno 1" in text
    # and pvck notices a flipped byte in the label
    with open(pv, "r+b") as fh:
        fh.seek(700)
        fh.write(b"x")
    bad = subprocess.run(["pvck", "--dump", "headers", str(pv)], capture_output=True, text=True)
    assert "CHECK: label_header.crc" in bad.stdout + bad.stderr


def test_lvm_image_volumes(image_cache: Path) -> None:
    out = image_cache / "dr-lvm.raw"
    if not out.exists():
        build_image(root_tree(image_cache / "dr-lvm-tree", "al2"), out,
                    ImageSpec("ext4", "lvm", "raw", 64 * MiB))
    with open_disk(out) as disk:
        vols = candidate_volumes(disk)
        assert [v.partition for v in vols] == ["lvm:vg0/root@mbr:1"]
        assert vols[0].size == lvm_fs_size(62 * MiB)
        fs, _ = find_root(disk)
        assert fs.kind == "ext4"


@pytest.mark.parametrize("table", ["gpt", "none"])
def test_lvm_on_gpt_and_on_the_whole_disk(table: str, tmp_path: Path) -> None:
    """A PV in a GPT partition (Linux LVM type) or directly on the disk."""
    import os as _os

    from pipeline_dev.diskimage import build_filesystem
    from pipeline_dev.lvm_writer import write_pv

    tree = root_tree(tmp_path / "tree", "al2")
    size = 64 * MiB
    part_off = MiB if table == "gpt" else 0
    part_size = size - 2 * MiB if table == "gpt" else size
    fs_size = lvm_fs_size(part_size)
    fs_img = build_filesystem(tree, tmp_path / "fs.img", "ext4", fs_size)
    disk = tmp_path / f"lvm-{table}.raw"
    with open(disk, "wb") as fh:
        fh.truncate(size)
    if table == "gpt":
        script = (f"label: gpt\nunit: sectors\n\nstart=2048, size={part_size // 512}, "
                  "type=E6D6D379-F507-44C2-A23C-238F2A3DF928\n")
        subprocess.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(disk)],
                       input=script, text=True, check=True, capture_output=True)
    fd = _os.open(disk, _os.O_RDWR)
    try:
        write_pv(fd, part_off, part_size, fs_size)
        _os.pwrite(fd, fs_img.read_bytes(), part_off + PE_START)
    finally:
        _os.close(fd)
    with open_disk(disk) as d:
        fs, _ = find_root(d)
    where = "gpt:1" if table == "gpt" else "none"
    assert fs.volume.partition == f"lvm:vg0/root@{where}" and fs.kind == "ext4"
