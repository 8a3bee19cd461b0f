"""``import-image`` end to end against the emulator, on images from the factory.

Both methods produce a verified, lineage-tagged AMI; bad inputs exit 2 and leave
nothing behind (S3 objects, multipart uploads, snapshots, images, import tasks are
listed before and after).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from pipeline.core import tags
from pipeline.core.config import ImageSettings, ImportSettings, Settings
from pipeline_dev.diskimage import ImageSpec, build_image, root_tree
from pipeline.core.errors import PreflightError
from pipeline.ingest.importer import ImportRequest, disk_layout, import_image, preflight

MiB = 1024 * 1024
BUCKET = "eks-imports"


# --------------------------------------------------------------------------- images


def _image(cache: Path, name: str, kind: str, spec: ImageSpec) -> Path:
    """Build once per session (atomic rename: safe with pytest-xdist)."""
    out = cache / name
    if not out.exists():
        tree = root_tree(cache / f"tree-{kind}", kind)
        tmp = cache / f".{name}.{os.getpid()}"
        build_image(tree, tmp, spec)
        os.replace(tmp, out)
    return out


@pytest.fixture(scope="session")
def good_raw(image_cache: Path) -> Path:
    return _image(image_cache, "node-gpt.raw", "al2023", ImageSpec(table="gpt", size=64 * MiB))


@pytest.fixture(scope="session")
def good_qcow2(image_cache: Path) -> Path:
    return _image(image_cache, "node-mbr.qcow2", "al2023",
                  ImageSpec(table="mbr", fmt="qcow2", size=64 * MiB))


@pytest.fixture(scope="session")
def bare_raw(image_cache: Path) -> Path:
    """A Linux root with neither bootstrap.sh nor nodeadm."""
    return _image(image_cache, "bare-gpt.raw", "bare", ImageSpec(table="gpt", size=64 * MiB))


@pytest.fixture(scope="session")
def no_table_raw(image_cache: Path) -> Path:
    """A bare ext4 filesystem: no partition table."""
    return _image(image_cache, "node-fs-only.raw", "al2023",
                  ImageSpec(table="none", size=64 * MiB))


def _raw_sha256(path: Path, tmp: Path) -> tuple[str, int]:
    raw = tmp / "readback-source.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(path), str(raw)], check=True)
    data = raw.read_bytes()
    raw.unlink()
    return hashlib.sha256(data).hexdigest(), len(data)


# --------------------------------------------------------------------------- AWS state


def _settings(aws_settings, tmp_path: Path, source: Path, method: str = "vm-import",
              require: str = "nodeadm", boot_mode: str = "legacy-bios",
              architecture: str = "x86_64") -> Settings:
    img = ImageSettings(name="node", require=require, boot_mode=boot_mode,
                        architecture=architecture,
                        import_=ImportSettings(source=source, method=method))
    return Settings(aws=aws_settings, images=(img,), s3_bucket=BUCKET,
                    state_dir=tmp_path / "build")


def _inventory(clients) -> dict[str, list[str]]:
    """Everything an import can create, by id."""
    ec2, s3, ebs = clients.client("ec2"), clients.client("s3"), clients.client("ebs")
    out: dict[str, list[str]] = {
        "images": sorted(i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]),
        "snapshots": sorted(s["SnapshotId"] for s in
                            ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]),
        "objects": [], "uploads": [],
    }
    try:
        tasks = ec2.describe_import_image_tasks().get("ImportImageTasks", [])
        out["active_tasks"] = sorted(t["ImportTaskId"] for t in tasks
                                     if t.get("Status") not in ("deleted", "deleting"))
    except Exception:  # noqa: BLE001 - emulator without VM Import yet
        out["active_tasks"] = []
    del ebs
    for b in s3.list_buckets().get("Buckets", []):
        out["objects"] += [o["Key"] for o in
                           s3.list_objects_v2(Bucket=b["Name"]).get("Contents", [])]
        out["uploads"] += [u["Key"] for u in
                           s3.list_multipart_uploads(Bucket=b["Name"]).get("Uploads", [])]
    return out


def _snapshot_sha256(clients, snapshot_id: str, size: int) -> tuple[str, int]:
    """Read a snapshot back through ListSnapshotBlocks/GetSnapshotBlock."""
    ebs = clients.client("ebs")
    blocks: dict[int, bytes] = {}
    bs = 0
    kwargs = {"SnapshotId": snapshot_id, "MaxResults": 1000}
    while True:
        page = ebs.list_snapshot_blocks(**kwargs)
        bs = page["BlockSize"]
        for b in page.get("Blocks", []):
            blocks[b["BlockIndex"]] = ebs.get_snapshot_block(
                SnapshotId=snapshot_id, BlockIndex=b["BlockIndex"],
                BlockToken=b["BlockToken"])["BlockData"].read()
        if not page.get("NextToken"):
            break
        kwargs["NextToken"] = page["NextToken"]
    h = hashlib.sha256()
    for idx in range(-(-size // bs)):
        h.update(blocks.get(idx, bytes(bs))[: min(bs, size - idx * bs)])
    beyond = [i for i in blocks if i * bs >= size]
    assert not beyond, f"blocks written past the end of the image: {beyond[:5]}"
    return h.hexdigest(), len(blocks)


@pytest.fixture
def bucket(clients) -> str:
    clients.client("s3").create_bucket(Bucket=BUCKET)
    return BUCKET


# --------------------------------------------------------------------------- snapshot


def test_snapshot_method_registers_a_verified_ami_holding_the_raw_bytes(
        realistic_emulator, clients, aws_settings, tmp_path, good_qcow2) -> None:
    settings = _settings(aws_settings, tmp_path, good_qcow2, method="snapshot")
    result = import_image(settings, clients, ImportRequest())
    ec2 = clients.client("ec2")
    image = ec2.describe_images(ImageIds=[result.image_id])["Images"][0]
    assert image["Architecture"] == "x86_64" and image["VirtualizationType"] == "hvm"
    assert image["RootDeviceName"] == "/dev/xvda" and image.get("EnaSupport") is True
    assert image.get("BootMode") == "legacy-bios" and image.get("ImdsSupport") == "v2.0"
    bdm = image["BlockDeviceMappings"][0]
    assert bdm["DeviceName"] == "/dev/xvda"
    assert bdm["Ebs"]["VolumeType"] == "gp3" and bdm["Ebs"]["DeleteOnTermination"] is True
    assert result.snapshot_ids == [bdm["Ebs"]["SnapshotId"]]

    # The snapshot method records the content identity from its upload pass, no
    # whole-file hash (pipeline.image.identity).
    from pipeline.image.identity import file_identity

    tagged = tags.from_tag_list(image.get("Tags"))
    assert tagged[tags.SOURCE_CONTENT] == file_identity(str(good_qcow2)) == \
        result.source_content_id == result.record.source_content_id
    assert tags.SOURCE_SHA256 not in tagged and result.source_sha256 is None
    assert tagged[tags.BUILD_ID] == result.build_id and tagged[tags.METHOD] == "snapshot"
    assert tagged[tags.SOURCE_FILE] == good_qcow2.name
    assert tagged[tags.VERIFY_VERDICT] == "ok"
    snap = ec2.describe_snapshots(SnapshotIds=result.snapshot_ids)["Snapshots"][0]
    assert tags.from_tag_list(snap.get("Tags"))[tags.BUILD_ID] == result.build_id

    raw_sha, raw_size = _raw_sha256(good_qcow2, tmp_path)
    snap_sha, written = _snapshot_sha256(clients, result.snapshot_ids[0], raw_size)
    assert snap_sha == raw_sha
    assert result.bytes_sent == written * 524288 < raw_size      # zero blocks skipped
    assert result.verification == {"verdict": "ok", "mechanism": "nodeadm"}


# --------------------------------------------------------------------------- pre-flight


def test_layout_of_factory_images(good_raw, good_qcow2, no_table_raw) -> None:
    assert disk_layout(good_raw).table == "gpt" and not disk_layout(good_raw).has_esp
    assert disk_layout(good_qcow2).table == "mbr"
    assert disk_layout(no_table_raw).table == "none"


def _bad(tmp_path: Path, kind: str, good_raw: Path, bare_raw: Path,
         no_table_raw: Path) -> tuple[Path, dict[str, object], str]:
    """(image, request overrides, expected words in the message) for one bad input."""
    if kind == "missing file":
        return tmp_path / "missing.raw", {}, "no such file"
    if kind == "compressed":
        p = tmp_path / "node.raw.gz"
        p.write_bytes(gzip.compress(good_raw.read_bytes()[: 4 * MiB]))
        return p, {}, "gzip-compressed"
    if kind == "unsupported format":
        p = tmp_path / "node.vdi"
        subprocess.run(["qemu-img", "convert", "-O", "vdi", str(good_raw), str(p)], check=True)
        return p, {}, "unsupported disk format 'vdi'"
    if kind == "missing contract":
        return bare_raw, {}, "bootstrap contract"
    if kind == "no partition table":
        return no_table_raw, {}, "partition table"
    if kind == "missing bucket":
        return good_raw, {"bucket": "no-such-bucket"}, "does not exist"
    if kind == "missing role":
        return good_raw, {}, "--create-role"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing file", "compressed", "unsupported format",
                                  "missing contract", "no partition table", "missing bucket",
                                  "missing role"])
def test_bad_input_exits_2_and_leaves_nothing(kind, clients, aws_settings, tmp_path, bucket,
                                              good_raw, bare_raw, no_table_raw) -> None:
    image, overrides, words = _bad(tmp_path, kind, good_raw, bare_raw, no_table_raw)
    settings = _settings(aws_settings, tmp_path, image)
    before = _inventory(clients)
    with pytest.raises(PreflightError) as err:
        import_image(settings, clients, ImportRequest(image=str(image), **overrides))
    assert err.value.exit_code == 2
    assert words in str(err.value)
    assert _inventory(clients) == before
    assert clients.client("iam").list_roles()["Roles"] == []


def test_uefi_boot_mode_needs_an_esp(clients, aws_settings, tmp_path, bucket, good_raw) -> None:
    settings = _settings(aws_settings, tmp_path, good_raw, boot_mode="uefi")
    with pytest.raises(PreflightError, match="EFI System Partition"):
        preflight(settings, clients, ImportRequest(create_role=True))


def test_preflight_creates_the_role_and_plans_the_conversion(
        clients, aws_settings, tmp_path, bucket, good_qcow2) -> None:
    settings = _settings(aws_settings, tmp_path, good_qcow2)
    pf = preflight(settings, clients, ImportRequest(create_role=True))
    assert pf.role.created and pf.needs_conversion and pf.qemu_format == "qcow2"
    assert pf.verdict == "ok" and pf.mechanism == "nodeadm"
    assert _inventory(clients)["objects"] == []


@pytest.mark.parametrize("fmt, qemu_args, expected", [
    ("vmdk-stream", ["-O", "vmdk", "-o", "subformat=streamOptimized"], ("vmdk", "VMDK")),
    ("vmdk-sparse", ["-O", "vmdk", "-o", "subformat=monolithicSparse"], ("vmdk", None)),
    ("vhd", ["-O", "vpc"], ("vpc", "VHD")),
    ("vhdx", ["-O", "vhdx"], ("vhdx", "VHDX")),
    ("raw", None, ("raw", "RAW")),
])
def test_preflight_maps_formats_to_what_vm_import_takes(
        fmt, qemu_args, expected, clients, aws_settings, tmp_path, bucket, good_raw) -> None:
    """Only streamOptimized VMDK, VHD/VHDX, raw and OVA go as they are; others convert."""
    image = good_raw
    if qemu_args:
        image = tmp_path / f"node.{fmt}"
        subprocess.run(["qemu-img", "convert", "-f", "raw", *qemu_args, str(good_raw),
                        str(image)], check=True)
    pf = preflight(_settings(aws_settings, tmp_path, image), clients,
                   ImportRequest(create_role=True))
    assert (pf.qemu_format, pf.vmimport_format) == expected
    assert pf.needs_conversion == (expected[1] is None)
    assert pf.upload_key.endswith(".vmdk" if expected[1] is None else image.name)


def test_esp_decides_the_boot_mode(clients, aws_settings, tmp_path, bucket, good_raw) -> None:
    """A GPT disk whose only partition is an EFI System Partition boots UEFI only."""
    esp = tmp_path / "node-esp.raw"
    subprocess.run(["cp", "--sparse=always", str(good_raw), str(esp)], check=True)
    subprocess.run(["sgdisk", "--typecode=1:EF00", str(esp)], check=True, capture_output=True)
    layout = disk_layout(esp)
    assert layout.has_esp and not layout.has_bios_boot
    with pytest.raises(PreflightError, match="set boot_mode: uefi"):
        preflight(_settings(aws_settings, tmp_path, esp), clients,
                  ImportRequest(create_role=True))
    pf = preflight(_settings(aws_settings, tmp_path, esp, boot_mode="uefi"), clients,
                   ImportRequest(create_role=True))
    assert pf.image.boot_mode == "uefi"
    with pytest.raises(PreflightError, match="cannot encrypt UEFI"):
        preflight(_settings(aws_settings, tmp_path, esp, boot_mode="uefi"), clients,
                  ImportRequest(kms_key_id="alias/amis"))


def test_ova_goes_as_is_unless_its_disk_is_not_stream_optimized(
        clients, aws_settings, tmp_path, bucket, image_cache, good_raw) -> None:
    ova = _image(image_cache, "node.ova", "al2023", ImageSpec(table="gpt", fmt="ova",
                                                               size=64 * MiB))
    pf = preflight(_settings(aws_settings, tmp_path, ova), clients,
                   ImportRequest(create_role=True))
    assert pf.vmimport_format == "OVA" and not pf.needs_conversion

    import tarfile
    sparse = tmp_path / "disk1.vmdk"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o",
                    "subformat=monolithicSparse", str(good_raw), str(sparse)], check=True)
    (tmp_path / "node.ovf").write_text("<Envelope/>")
    bad = tmp_path / "bad.ova"
    with tarfile.open(bad, "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.add(tmp_path / "node.ovf", arcname="node.ovf")
        tar.add(sparse, arcname="disk1.vmdk")
    before = _inventory(clients)
    with pytest.raises(PreflightError, match="not a streamOptimized VMDK"):
        import_image(_settings(aws_settings, tmp_path, bad), clients,
                     ImportRequest(create_role=True))
    assert _inventory(clients) == before


class _CtrlCWhileWriting:
    """Ctrl-C at the first block written to the snapshot."""

    def start(self, total, label: str = "") -> None:
        self.writing = label.startswith("write snap-")

    def advance(self, n: int = 1) -> None:
        if getattr(self, "writing", False) and n:
            raise KeyboardInterrupt

    def status(self, message: str) -> None:
        pass

    def done(self) -> None:
        pass


def test_ctrl_c_during_a_snapshot_import_deletes_the_snapshot(
        clients, aws_settings, tmp_path, good_raw) -> None:
    before = _inventory(clients)
    with pytest.raises(KeyboardInterrupt):
        import_image(_settings(aws_settings, tmp_path, good_raw, method="snapshot"), clients,
                     ImportRequest(), progress=_CtrlCWhileWriting())
    assert _inventory(clients) == before


def test_arm64_needs_uefi(clients, aws_settings, tmp_path, good_raw) -> None:
    settings = _settings(aws_settings, tmp_path, good_raw, method="snapshot",
                         architecture="arm64")
    with pytest.raises(PreflightError, match="arm64 .* UEFI only"):
        preflight(settings, clients, ImportRequest())
