"""S3 additional checksums, driven with plain boto3 (no product code).

Sources, per test: the S3 user guide *Checking object integrity*
(https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html:
"If the two values don't match, S3 fails the request with a BadDigest error"); the
PutObject, UploadPart, ListParts and CompleteMultipartUpload API reference pages; and the
error texts real S3 answered in aws/aws-sdk-ruby#3322 (BadDigest "The CRC32 you specified
did not match the calculated checksum."), ceph/s3-tests#644 (a malformed value is
InvalidRequest), versity/versitygw#1342 (Checksum Type mismatch), aws/aws-sdk-php#2648
(a part checksum missing from the complete request).
"""
from __future__ import annotations

import base64
import binascii
import hashlib

import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError

from pipeline_dev.emulator.s3_checksums import crc32c

BUCKET = "checksums"
MiB = 1024 * 1024


@pytest.fixture
def s3(endpoint: str):
    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=botocore.config.Config(retries={"total_max_attempts": 1}))
    client.create_bucket(Bucket=BUCKET)
    return client


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _crc32(data: bytes) -> str:
    return _b64((binascii.crc32(data) & 0xFFFFFFFF).to_bytes(4, "big"))


def _error(err: pytest.ExceptionInfo[ClientError]) -> tuple[str, int, str]:
    resp = err.value.response
    return resp["Error"]["Code"], resp["ResponseMetadata"]["HTTPStatusCode"], \
        resp["Error"].get("Message", "")


GOOD = {
    "CRC32": _crc32,
    "CRC32C": lambda d: _b64(crc32c(d).to_bytes(4, "big")),
    "SHA1": lambda d: _b64(hashlib.sha1(d).digest()),
    "SHA256": lambda d: _b64(hashlib.sha256(d).digest()),
}


def test_crc32c_known_vector() -> None:
    """RFC 3720 B.4: CRC32C of 32 zero bytes is 0x8A9136AA."""
    assert crc32c(b"\x00" * 32) == 0x8A9136AA


@pytest.mark.parametrize("algorithm", sorted(GOOD))
def test_put_object_right_checksum_is_stored(s3, algorithm: str) -> None:
    body = b"the right bytes"
    value = GOOD[algorithm](body)
    resp = s3.put_object(Bucket=BUCKET, Key="k", Body=body, **{f"Checksum{algorithm}": value})
    assert resp[f"Checksum{algorithm}"] == value


@pytest.mark.parametrize("algorithm", sorted(GOOD))
def test_put_object_wrong_checksum_is_bad_digest_and_nothing_stored(s3, algorithm: str) -> None:
    """BadDigest 400 "The <ALG> you specified did not match the calculated checksum."."""
    wrong = GOOD[algorithm](b"other bytes")
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=BUCKET, Key="k", Body=b"the bytes",
                      **{f"Checksum{algorithm}": wrong})
    code, status, message = _error(err)
    assert (code, status) == ("BadDigest", 400)
    assert message == f"The {algorithm} you specified did not match the calculated checksum."
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_put_object_malformed_checksum_is_invalid_request(s3) -> None:
    """ceph/s3-tests#644: ChecksumSHA256='bad' is InvalidRequest on AWS, not BadDigest."""
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=BUCKET, Key="k", Body=b"x", ChecksumSHA256="bad")
    code, status, message = _error(err)
    assert (code, status) == ("InvalidRequest", 400)
    assert "x-amz-checksum-sha256" in message


def test_sdk_default_crc32_still_passes(s3) -> None:
    """botocore >= 1.36 sends x-amz-checksum-crc32 by default; it is right, so accepted."""
    s3.put_object(Bucket=BUCKET, Key="k", Body=b"payload")
    assert s3.get_object(Bucket=BUCKET, Key="k")["Body"].read() == b"payload"


def _upload(s3, algorithm: str | None = "CRC32") -> str:
    kwargs = {"ChecksumAlgorithm": algorithm} if algorithm else {}
    return s3.create_multipart_upload(Bucket=BUCKET, Key="mp", **kwargs)["UploadId"]


@pytest.mark.parametrize("algorithm", sorted(GOOD))
def test_upload_part_wrong_checksum_is_bad_digest(s3, algorithm: str) -> None:
    upload_id = _upload(s3, algorithm)
    with pytest.raises(ClientError) as err:
        s3.upload_part(Bucket=BUCKET, Key="mp", UploadId=upload_id, PartNumber=1,
                       Body=b"part one", **{f"Checksum{algorithm}": GOOD[algorithm](b"nope")})
    assert _error(err)[:2] == ("BadDigest", 400)
    assert s3.list_parts(Bucket=BUCKET, Key="mp", UploadId=upload_id).get("Parts", []) == []


def test_upload_part_other_algorithm_than_the_upload_is_invalid_request(s3) -> None:
    """versity/versitygw#1342 quotes S3: "Checksum Type mismatch occurred, expected checksum
    Type: crc32, actual checksum Type: null" for a COMPOSITE upload."""
    upload_id = _upload(s3, "SHA256")
    with pytest.raises(ClientError) as err:
        s3.upload_part(Bucket=BUCKET, Key="mp", UploadId=upload_id, PartNumber=1,
                       Body=b"part", ChecksumCRC32=_crc32(b"part"))
    code, status, message = _error(err)
    assert (code, status) == ("InvalidRequest", 400)
    assert message == ("Checksum Type mismatch occurred, expected checksum Type: sha256, "
                       "actual checksum Type: crc32")


def test_list_parts_reports_part_checksums_and_the_upload_algorithm(s3) -> None:
    """ListParts API page: Part.ChecksumCRC32 etc., ChecksumAlgorithm, ChecksumType."""
    upload_id = _upload(s3, "SHA256")
    body = b"a" * 100
    s3.upload_part(Bucket=BUCKET, Key="mp", UploadId=upload_id, PartNumber=1, Body=body,
                   ChecksumSHA256=GOOD["SHA256"](body))
    listed = s3.list_parts(Bucket=BUCKET, Key="mp", UploadId=upload_id)
    assert listed["Parts"][0]["ChecksumSHA256"] == GOOD["SHA256"](body)
    assert listed["ChecksumAlgorithm"] == "SHA256"
    assert listed["ChecksumType"] == "COMPOSITE"


def _two_parts(s3, algorithm: str = "CRC32") -> tuple[str, list[dict]]:
    upload_id = _upload(s3, algorithm)
    parts = []
    for number, body in ((1, b"1" * (5 * MiB)), (2, b"2" * 100)):
        value = GOOD[algorithm](body)
        etag = s3.upload_part(Bucket=BUCKET, Key="mp", UploadId=upload_id, PartNumber=number,
                              Body=body, **{f"Checksum{algorithm}": value})["ETag"]
        parts.append({"PartNumber": number, "ETag": etag, f"Checksum{algorithm}": value})
    return upload_id, parts


def test_complete_out_of_order_is_invalid_part_order(s3) -> None:
    """CompleteMultipartUpload error list: InvalidPartOrder "The list of parts was not in
    ascending order. The parts list must be specified in order by part number." (moto
    answered EntityTooSmall)."""
    upload_id, parts = _two_parts(s3)
    with pytest.raises(ClientError) as err:
        s3.complete_multipart_upload(Bucket=BUCKET, Key="mp", UploadId=upload_id,
                                     MultipartUpload={"Parts": parts[::-1]})
    assert _error(err)[:2] == ("InvalidPartOrder", 400)


def test_complete_without_part_checksum_is_invalid_request(s3) -> None:
    """aws/aws-sdk-php#2648: "The upload was created using a sha1 checksum. The complete
    request must include the checksum for each part. It was missing for part 1 ..."."""
    upload_id, parts = _two_parts(s3)
    bare = [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in parts]
    with pytest.raises(ClientError) as err:
        s3.complete_multipart_upload(Bucket=BUCKET, Key="mp", UploadId=upload_id,
                                     MultipartUpload={"Parts": bare})
    code, _, message = _error(err)
    assert code == "InvalidRequest"
    assert "It was missing for part 1 in the request." in message


def test_complete_with_wrong_part_checksum_is_invalid_part(s3) -> None:
    upload_id, parts = _two_parts(s3)
    parts[1]["ChecksumCRC32"] = _crc32(b"not part two")
    with pytest.raises(ClientError) as err:
        s3.complete_multipart_upload(Bucket=BUCKET, Key="mp", UploadId=upload_id,
                                     MultipartUpload={"Parts": parts})
    assert _error(err)[:2] == ("InvalidPart", 400)


def test_complete_answers_the_composite_checksum(s3) -> None:
    """Checking object integrity: a multipart object's checksum is the checksum of the
    concatenated part checksums, followed by -<number of parts> (type COMPOSITE)."""
    upload_id, parts = _two_parts(s3)
    resp = s3.complete_multipart_upload(Bucket=BUCKET, Key="mp", UploadId=upload_id,
                                        MultipartUpload={"Parts": parts})
    raw = b"".join(base64.b64decode(p["ChecksumCRC32"]) for p in parts)
    assert resp["ChecksumCRC32"] == f"{_crc32(raw)}-2"
    assert resp["ChecksumType"] == "COMPOSITE"
    body = s3.get_object(Bucket=BUCKET, Key="mp")["Body"].read()
    assert body == b"1" * (5 * MiB) + b"2" * 100
