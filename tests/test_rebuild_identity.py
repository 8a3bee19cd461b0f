"""rebuild's source comparison across the switch to the content identity (disk-v1)."""
from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

from pipeline.core.records import BuildRecord
from pipeline.image.identity import file_identity
from pipeline.lifecycle.rebuild import Inputs, decide, source_change

MiB = 1024 * 1024
IMG = type("Img", (), {"max_age_days": 30})()
NOW = dt.datetime(2026, 11, 25, tzinfo=dt.timezone.utc)


def _disk(path: Path, byte: bytes = b"a") -> Path:
    with open(path, "wb") as fh:
        fh.truncate(16 * MiB)
        fh.seek(MiB)
        fh.write(byte * 300000)
    return path


def _record(**kw: str) -> BuildRecord:
    return BuildRecord(build_id="b-20261120000000-abcdef", image_name="x", method="snapshot",
                       status="succeeded", finished_at="2026-11-20T00:00:00+00:00", **kw)


def _now(path: Path) -> Inputs:      # what current_inputs gives for an imported image
    return Inputs(method="import", source_content_id=file_identity(str(path)),
                  source_path=str(path))


def test_old_record_with_only_the_whole_file_sha(tmp_path: Path) -> None:
    src = _disk(tmp_path / "node.raw")
    old = _record(source_sha256=hashlib.sha256(src.read_bytes()).hexdigest())
    assert source_change(old, _now(src)) is None
    assert not decide(IMG, _now(src), old, now=NOW).rebuild
    _disk(src, b"b")
    changed = decide(IMG, _now(src), old, now=NOW)
    assert changed.rebuild and changed.reason.startswith("source file changed (sha256")


def test_new_record_compares_the_content_identity(tmp_path: Path) -> None:
    src = _disk(tmp_path / "node.raw")
    new = _record(source_content_id=file_identity(str(src)), source_sha256="f" * 64)
    assert not decide(IMG, _now(src), new, now=NOW).rebuild   # identity wins, no full hash
    _disk(src, b"b")
    changed = decide(IMG, _now(src), new, now=NOW)
    assert changed.rebuild and "content disk-v1:" in changed.reason


def test_record_without_any_identity_rebuilds_once_and_says_so(tmp_path: Path) -> None:
    src = _disk(tmp_path / "node.raw")
    got = decide(IMG, _now(src), _record(), now=NOW)
    assert got.rebuild and "no source identity" in got.reason
