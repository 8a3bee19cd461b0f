"""The content-addressed, resumable multipart uploader against the emulator's S3."""
from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path

import pytest

from pipeline.aws import s3 as s3_upload
from pipeline.aws.s3 import MAX_PARTS, MiB, FileChangedError, part_size_for, upload_file

BUCKET = "import-bucket"


class Interrupt(Exception):
    """Raised from the progress callback to stop an upload mid-way."""


class StopAfter:
    """A Progress that raises after ``n`` acknowledged parts."""

    def __init__(self, n: int) -> None:
        self.n, self.parts, self.uploading = n, 0, False

    def start(self, total: int | None, label: str = "") -> None:
        self.uploading = label.startswith("upload")        # not the hash pass

    def advance(self, n: int = 1) -> None:
        if n and self.uploading:
            self.parts += 1
            if self.parts >= self.n:
                raise Interrupt(f"stopped after {self.parts} parts")

    def status(self, message: str) -> None:
        pass

    def done(self) -> None:
        pass


@pytest.fixture
def s3(clients):
    """The emulator's S3 with one bucket."""
    client = clients.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


def _random_file(path: Path, size: int, seed: bytes = b"x") -> Path:
    with open(path, "wb") as fh:
        written = 0
        while written < size:
            block = hashlib.shake_256(seed + written.to_bytes(8, "little")).digest(
                min(MiB, size - written))
            fh.write(block)
            written += len(block)
    return path


def _object_sha(s3, key: str) -> str:
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return hashlib.sha256(body).hexdigest()


def _open_uploads(s3) -> list[dict]:
    return s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])


def test_part_size_is_at_least_8_mib_and_keeps_parts_under_the_limit() -> None:
    assert part_size_for(1) == 8 * MiB
    assert part_size_for(1023 * MiB) == 8 * MiB
    assert part_size_for(1024 * MiB) == 16 * MiB
    assert part_size_for(200 * 1024 * MiB) == 21 * MiB        # 200 GiB needs > 16 MiB parts
    for size in (8 * MiB * MAX_PARTS + 1, 5 * 1024**4):
        ps = part_size_for(size)
        assert ps % MiB == 0 and -(-size // ps) <= MAX_PARTS


def test_upload_is_content_addressed_encrypted_and_skipped_on_rerun(s3, tmp_path) -> None:
    src = _random_file(tmp_path / "disk.raw", 20 * MiB + 123)
    first = upload_file(s3, src, BUCKET, workers=4)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    assert first.key == f"imports/{sha}/disk.raw" and first.sha256 == sha
    assert (first.parts_total, first.parts_sent, first.bytes_sent) == (3, 3, src.stat().st_size)
    assert _object_sha(s3, first.key) == sha
    head = s3.head_object(Bucket=BUCKET, Key=first.key)
    assert head["Metadata"]["sha256"] == sha
    assert head["ServerSideEncryption"] == "AES256"
    assert _open_uploads(s3) == []

    again = upload_file(s3, src, BUCKET)
    assert again.skipped and again.bytes_sent == 0 and again.parts_sent == 0


def test_interrupted_upload_resumes_sending_only_missing_parts(s3, tmp_path) -> None:
    src = _random_file(tmp_path / "big.vmdk", 6 * 8 * MiB + 5)   # 7 parts
    with pytest.raises(Interrupt):
        upload_file(s3, src, BUCKET, workers=1, progress=StopAfter(3))
    uploads = _open_uploads(s3)
    assert len(uploads) == 1, "an interrupted upload is left open to resume"
    key, upload_id = uploads[0]["Key"], uploads[0]["UploadId"]
    kept = len(s3.list_parts(Bucket=BUCKET, Key=key, UploadId=upload_id)["Parts"])
    assert 3 <= kept < 7

    result = upload_file(s3, src, BUCKET, workers=4)
    assert result.resumed and result.upload_id == upload_id
    assert result.parts_sent == 7 - kept
    assert result.bytes_sent < src.stat().st_size
    assert _object_sha(s3, key) == result.sha256
    assert _open_uploads(s3) == []


def test_resume_resends_a_part_that_does_not_match(s3, tmp_path) -> None:
    src = _random_file(tmp_path / "disk.raw", 3 * 8 * MiB)
    digest = s3_upload.hash_file(src)
    key = s3_upload.object_key(digest.sha256, src.name)
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    data = src.read_bytes()
    s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=1,
                   Body=data[: 8 * MiB])                               # good
    s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=2,
                   Body=b"\0" * (8 * MiB))                             # wrong content

    result = upload_file(s3, src, BUCKET, digest=digest)
    assert result.resumed and result.parts_sent == 2                   # parts 2 and 3
    assert _object_sha(s3, key) == digest.sha256


def test_file_changed_during_upload_aborts_it(s3, tmp_path) -> None:
    src = _random_file(tmp_path / "disk.raw", 17 * MiB)
    digest = s3_upload.hash_file(src)
    with open(src, "r+b") as fh:
        fh.seek(16 * MiB)
        fh.write(b"changed")
    with pytest.raises(FileChangedError) as err:
        upload_file(s3, src, BUCKET, digest=digest, workers=2)
    assert err.value.exit_code == 2
    assert _open_uploads(s3) == []
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_kms_encryption_and_delete_upload(s3, tmp_path) -> None:
    src = _random_file(tmp_path / "disk.raw", 3 * MiB)
    result = upload_file(s3, src, BUCKET, kms_key_id="alias/imports",
                         metadata={"build-id": "b-20260101000000-aaaaaa"})
    head = s3.head_object(Bucket=BUCKET, Key=result.key)
    assert head["ServerSideEncryption"] == "aws:kms"
    # Another build's clean-up leaves the object alone (same content, same key).
    kept = s3_upload.delete_upload(s3, BUCKET, result.key, build_id="b-20260101000000-bbbbbb")
    assert [r.outcome for r in kept] == ["failed"] and "kept" in (kept[0].error or "")
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 1
    s3_upload.delete_upload(s3, BUCKET, result.key, build_id="b-20260101000000-aaaaaa")
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_missing_file_is_bad_input(s3, tmp_path) -> None:
    with pytest.raises(s3_upload.InputError) as err:
        upload_file(s3, tmp_path / "nope.raw", BUCKET)
    assert "nope.raw" in str(err.value)
    assert not os.path.exists(tmp_path / "nope.raw")


def test_a_concurrent_run_completing_the_same_upload_counts_as_done(s3, tmp_path) -> None:
    """Run B resumes run A's open upload, but a third run C completes it first."""
    src = _random_file(tmp_path / "disk.raw", 5 * 8 * MiB)
    with pytest.raises(Interrupt):
        upload_file(s3, src, BUCKET, workers=1, progress=StopAfter(1))     # run A

    class OtherRunFinishes(StopAfter):
        def start(self, total, label: str = "") -> None:
            if label.startswith("upload") and not getattr(self, "fired", False):
                self.fired = True
                upload_file(s3, src, BUCKET, workers=2)                      # run C

    result = upload_file(s3, src, BUCKET, workers=2, progress=OtherRunFinishes(99))  # B
    assert result.skipped and result.resumed
    assert _object_sha(s3, result.key) == result.sha256
    assert _open_uploads(s3) == []


def test_file_rewritten_during_the_upload_is_aborted(s3, tmp_path) -> None:
    src = _random_file(tmp_path / "disk.raw", 3 * 8 * MiB)

    class Rewrite(StopAfter):
        def advance(self, n: int = 1) -> None:
            if self.uploading and n and not getattr(self, "fired", False):
                self.fired = True
                with open(src, "r+b") as fh:                 # same size, new content
                    fh.write(b"rewritten")

    with pytest.raises(FileChangedError):
        upload_file(s3, src, BUCKET, workers=1, progress=Rewrite(99))
    assert _open_uploads(s3) == []
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def _composite(algorithm: str, data: bytes, part_size: int) -> str:
    """S3's composite checksum of a multipart object: checksum of the part checksums, -N."""
    import base64
    import zlib

    parts = [data[i:i + part_size] for i in range(0, len(data), part_size)]
    if algorithm == "CRC32":
        raw = b"".join(zlib.crc32(p).to_bytes(4, "big") for p in parts)
        top = zlib.crc32(raw).to_bytes(4, "big")
    else:
        raw = b"".join(hashlib.sha256(p).digest() for p in parts)
        top = hashlib.sha256(raw).digest()
    return f"{base64.b64encode(top).decode()}-{len(parts)}"


def _head_checksum(s3, key: str, algorithm: str) -> str:
    """The object's checksum without the ``-N`` part count (moto's HeadObject omits it)."""
    head = s3.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
    return str(head[f"Checksum{algorithm}"]).split("-")[0]


@pytest.mark.parametrize("algorithm", ["CRC32", "SHA256"])
def test_parts_carry_the_chosen_checksum(s3, tmp_path, algorithm: str) -> None:
    src = _random_file(tmp_path / "disk.raw", 2 * 8 * MiB + 77)
    data = src.read_bytes()
    digest = s3_upload.hash_file(src, checksum=algorithm)
    assert digest.part_algorithm == algorithm and digest.parts == 3
    for i, got in enumerate(digest.part_checksums):
        part = data[i * 8 * MiB:(i + 1) * 8 * MiB]
        want = (zlib.crc32(part).to_bytes(4, "big") if algorithm == "CRC32"
                else hashlib.sha256(part).digest())
        assert got == want
    result = upload_file(s3, src, BUCKET, digest=digest)
    assert _head_checksum(s3, result.key, algorithm) == \
        _composite(algorithm, data, 8 * MiB).split("-")[0]


def test_new_uploads_use_crc32_parts_by_default(s3, tmp_path) -> None:
    src = _random_file(tmp_path / "disk.raw", 9 * MiB)
    result = upload_file(s3, src, BUCKET)
    assert _head_checksum(s3, result.key, "CRC32") == \
        _composite("CRC32", src.read_bytes(), 8 * MiB).split("-")[0]


def test_resume_keeps_the_open_uploads_checksum_algorithm(s3, tmp_path) -> None:
    """An upload started with SHA-256 parts (an older version) is resumed with SHA-256."""
    import base64

    src = _random_file(tmp_path / "disk.raw", 3 * 8 * MiB)
    digest = s3_upload.hash_file(src)                       # CRC32 parts by default
    assert digest.part_algorithm == "CRC32"
    key = s3_upload.object_key(digest.sha256, src.name)
    upload_id = s3.create_multipart_upload(
        Bucket=BUCKET, Key=key, ChecksumAlgorithm="SHA256",
        Metadata={"sha256": digest.sha256})["UploadId"]
    first = src.read_bytes()[: 8 * MiB]
    s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=1, Body=first,
                   ChecksumSHA256=base64.b64encode(hashlib.sha256(first).digest()).decode())

    result = upload_file(s3, src, BUCKET, digest=digest)
    assert result.resumed and result.upload_id == upload_id and result.parts_sent == 2
    assert _head_checksum(s3, key, "SHA256") == \
        _composite("SHA256", src.read_bytes(), 8 * MiB).split("-")[0]
    assert _object_sha(s3, key) == digest.sha256


def test_an_upload_aborted_by_someone_else_is_started_again(s3, tmp_path) -> None:
    """The emulator answers 404 NoSuchUpload, as S3, once the upload is gone."""
    src = _random_file(tmp_path / "disk.raw", 4 * 8 * MiB)

    class AbortAfterOne(StopAfter):
        def advance(self, n: int = 1) -> None:
            if self.uploading and n and not getattr(self, "fired", False):
                self.fired = True
                for up in _open_uploads(s3):                 # a cleanup job, say
                    s3.abort_multipart_upload(Bucket=BUCKET, Key=up["Key"],
                                              UploadId=up["UploadId"])

    result = upload_file(s3, src, BUCKET, workers=1, progress=AbortAfterOne(99))
    assert not result.skipped and result.parts_sent == 4
    assert _object_sha(s3, result.key) == result.sha256
    assert _open_uploads(s3) == []


def test_part_reader_reuses_one_buffer_per_thread(tmp_path) -> None:
    src = _random_file(tmp_path / "disk.raw", 2 * 8 * MiB + 10)
    digest = s3_upload.hash_file(src)
    data = src.read_bytes()
    fd = os.open(src, os.O_RDONLY)
    try:
        reader = s3_upload._PartReader(fd, digest)
        one = reader.read(1)
        assert bytes(one) == data[: 8 * MiB]
        two = reader.read(2)
        assert two is one and bytes(two) == data[8 * MiB: 16 * MiB]
        last = reader.read(3)
        assert last is not one and bytes(last) == data[16 * MiB:]
    finally:
        os.close(fd)


def test_workers_are_capped_at_the_clients_connection_pool(aws_settings, tmp_path,
                                                           caplog) -> None:
    from pipeline.aws.clients import Clients

    s3 = Clients(aws_settings, max_pool_connections=2).client("s3")
    s3.create_bucket(Bucket=BUCKET)
    src = _random_file(tmp_path / "disk.raw", 4 * 8 * MiB)
    with caplog.at_level("INFO", logger="pipeline.aws.s3"):
        result = upload_file(s3, src, BUCKET, workers=10)
    assert "10 workers but the S3 client pools 2 connections: using 2" in caplog.text
    assert _object_sha(s3, result.key) == result.sha256
