"""Content identity (pipeline.image.identity): container-independent, content-sensitive."""
from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from pipeline.image.diskread import open_disk
from pipeline.image.identity import (BLOCK, PREFIX, ZERO_DIGEST, ContentHasher,
                                     content_identity, file_identity)

MiB = 1024 * 1024


def _raw(path: Path, size: int = 48 * MiB, tweak: int | None = None) -> Path:
    with open(path, "wb") as fh:
        fh.truncate(size)
        fh.seek(3 * MiB)
        fh.write(hashlib.sha256(b"seed").digest() * 40000)   # ~1.2 MiB, not zeros
        fh.seek(30 * MiB + 12345)
        fh.write(b"end of data")
        fh.seek(20 * MiB)
        fh.write(bytes(BLOCK))                              # written zeros == a hole
        if tweak is not None:
            fh.seek(tweak)
            fh.write(b"\x01")
    return path


def _convert(src: Path, fmt: str, *opts: str) -> Path:
    out = src.with_suffix("." + fmt)
    subprocess.run(["qemu-img", "convert", "-O", fmt, *opts, str(src), str(out)], check=True,
                   capture_output=True)
    return out


def test_same_content_same_identity_in_every_container(tmp_path: Path) -> None:
    raw = _raw(tmp_path / "disk.raw")
    forms = [raw, _convert(raw, "qcow2"), _convert(raw, "vmdk", "-o", "subformat=streamOptimized"),
             _convert(raw, "vhdx")]
    ids = {p.suffix: file_identity(str(p)) for p in forms}
    assert len(set(ids.values())) == 1, ids
    assert next(iter(ids.values())).startswith(PREFIX)


def test_identity_matches_the_definition(tmp_path: Path) -> None:
    raw = _raw(tmp_path / "disk.raw", size=5 * BLOCK + 1000)
    data = raw.read_bytes()
    digests = []
    for off in range(0, len(data), BLOCK):
        blk = data[off:off + BLOCK].ljust(BLOCK, b"\0")
        digests.append(hashlib.sha256(blk).digest())
    want = hashlib.sha256(b"pipeline-disk-content-v1\0" + len(data).to_bytes(8, "big")
                          + b"".join(digests)).hexdigest()
    assert file_identity(str(raw)) == PREFIX + want
    assert ZERO_DIGEST in digests     # the hole blocks


def test_a_changed_byte_or_size_changes_it(tmp_path: Path) -> None:
    base = file_identity(str(_raw(tmp_path / "a.raw")))
    assert file_identity(str(_raw(tmp_path / "b.raw", tweak=40 * MiB))) != base  # in a hole
    assert file_identity(str(_raw(tmp_path / "c.raw", tweak=3 * MiB + 5))) != base  # in data
    assert file_identity(str(_raw(tmp_path / "d.raw", size=49 * MiB))) != base
    assert file_identity(str(_raw(tmp_path / "e.raw"))) == base


def test_reads_only_allocated_blocks(tmp_path: Path) -> None:
    raw = _raw(tmp_path / "disk.raw", size=1024 * MiB)
    with open_disk(raw) as disk:
        got = content_identity(disk)
    st = os.stat(raw)
    if st.st_blocks * 512 >= st.st_size:
        pytest.skip("filesystem without holes")
    assert got.bytes_read < 16 * MiB, got.bytes_read


def test_hasher_refuses_out_of_order_blocks() -> None:
    h = ContentHasher(4 * BLOCK)
    h.add(2, b"\0" * 32)
    with pytest.raises(ValueError):
        h.add(1, b"\0" * 32)
    with pytest.raises(ValueError):
        h.add(4, b"\0" * 32)
