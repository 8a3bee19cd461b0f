"""Multipart calls on an unknown, aborted or completed upload id: 404 NoSuchUpload.

Source: the S3 API reference, Error responses (``NoSuchUpload``: "The specified multipart
upload does not exist. The upload ID might be invalid, or the multipart upload might have
been aborted or completed.", 404 Not Found). moto 5.2.5 answered 500 for UploadPart,
UploadPartCopy and CompleteMultipartUpload. Driven with plain boto3, no product code.
"""
from __future__ import annotations

import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError

BUCKET = "multipart-errors"
KEY = "disk.raw"


@pytest.fixture
def s3(endpoint: str):
    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=botocore.config.Config(retries={"total_max_attempts": 1}))
    client.create_bucket(Bucket=BUCKET)
    client.put_object(Bucket=BUCKET, Key="source", Body=b"s" * 1024)
    return client


def _calls(s3, upload_id: str):
    return {
        "UploadPart": lambda: s3.upload_part(Bucket=BUCKET, Key=KEY, UploadId=upload_id,
                                             PartNumber=1, Body=b"x" * 1024),
        "UploadPartCopy": lambda: s3.upload_part_copy(
            Bucket=BUCKET, Key=KEY, UploadId=upload_id, PartNumber=1,
            CopySource={"Bucket": BUCKET, "Key": "source"}),
        "ListParts": lambda: s3.list_parts(Bucket=BUCKET, Key=KEY, UploadId=upload_id),
        "CompleteMultipartUpload": lambda: s3.complete_multipart_upload(
            Bucket=BUCKET, Key=KEY, UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"0" * 32'}]}),
        "AbortMultipartUpload": lambda: s3.abort_multipart_upload(
            Bucket=BUCKET, Key=KEY, UploadId=upload_id),
    }


def _assert_no_such_upload(fn) -> None:
    with pytest.raises(ClientError) as err:
        fn()
    resp = err.value.response
    assert resp["Error"]["Code"] == "NoSuchUpload", resp["Error"]
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 404


@pytest.mark.parametrize("action", ["UploadPart", "UploadPartCopy", "ListParts",
                                    "CompleteMultipartUpload", "AbortMultipartUpload"])
def test_unknown_upload_id_is_404_no_such_upload(s3, action: str) -> None:
    _assert_no_such_upload(_calls(s3, "VXBsb2FkIElEIHRoYXQgbmV2ZXIgZXhpc3RlZA")[action])


def test_aborted_upload_id_is_404_no_such_upload(s3) -> None:
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=KEY)["UploadId"]
    s3.upload_part(Bucket=BUCKET, Key=KEY, UploadId=upload_id, PartNumber=1, Body=b"x")
    s3.abort_multipart_upload(Bucket=BUCKET, Key=KEY, UploadId=upload_id)
    for action, fn in _calls(s3, upload_id).items():
        if action != "CompleteMultipartUpload":        # see the completed-upload test
            _assert_no_such_upload(fn)


def test_upload_part_after_completion_is_404_and_the_object_stays(s3) -> None:
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=KEY)["UploadId"]
    etag = s3.upload_part(Bucket=BUCKET, Key=KEY, UploadId=upload_id, PartNumber=1,
                          Body=b"final")["ETag"]
    s3.complete_multipart_upload(Bucket=BUCKET, Key=KEY, UploadId=upload_id,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    _assert_no_such_upload(_calls(s3, upload_id)["UploadPart"])
    _assert_no_such_upload(_calls(s3, upload_id)["ListParts"])
    assert s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read() == b"final"


def test_unknown_bucket_is_still_no_such_bucket(s3) -> None:
    with pytest.raises(ClientError) as err:
        s3.upload_part(Bucket="no-such-bucket-here", Key=KEY, UploadId="x", PartNumber=1,
                       Body=b"x")
    assert err.value.response["Error"]["Code"] == "NoSuchBucket"


def test_a_live_upload_still_works(s3) -> None:
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=KEY)["UploadId"]
    etag = s3.upload_part(Bucket=BUCKET, Key=KEY, UploadId=upload_id, PartNumber=1,
                          Body=b"abc")["ETag"]
    listed = s3.list_parts(Bucket=BUCKET, Key=KEY, UploadId=upload_id)["Parts"]
    assert [p["PartNumber"] for p in listed] == [1]
    s3.complete_multipart_upload(Bucket=BUCKET, Key=KEY, UploadId=upload_id,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read() == b"abc"
