"""S3 multipart calls on an unknown upload id answer ``404 NoSuchUpload``, as S3 does.

moto 5.2.5 looks the upload up with ``bucket.multiparts[upload_id]`` in UploadPart,
UploadPartCopy and CompleteMultipartUpload, so an upload id that was never created, or
was aborted or completed, raises ``KeyError`` and the server answers HTTP 500 (which
botocore then retries as a server fault). S3's API reference (Error responses, and the
UploadPart / CompleteMultipartUpload / UploadPartCopy pages) lists ``NoSuchUpload``:
"The specified multipart upload does not exist. The upload ID might be invalid, or the
multipart upload might have been aborted or completed." -- HTTP 404 Not Found. moto
already answers that for ListParts and AbortMultipartUpload; this module makes the other
three agree.

:func:`install` wraps the three ``S3Backend`` methods; it is idempotent.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

__all__ = ["install"]

_PATCHED = ("upload_part", "upload_part_copy", "complete_multipart_upload")


def _checks_upload_id(method: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap an ``S3Backend`` method whose 2nd and 3rd arguments are bucket and upload id."""

    @functools.wraps(method)
    def wrapper(self: Any, bucket_name: str, multipart_id: str, *args: Any,
                **kwargs: Any) -> Any:
        from moto.s3.exceptions import NoSuchUpload

        bucket = self.get_bucket(bucket_name)           # NoSuchBucket first, as S3
        if multipart_id not in bucket.multiparts:
            raise NoSuchUpload(upload_id=multipart_id)
        return method(self, bucket_name, multipart_id, *args, **kwargs)

    wrapper._emu_checks_upload_id = True  # type: ignore[attr-defined]
    return wrapper


def install() -> list[str]:
    """Patch moto's S3 backend; returns the names patched now (empty when already done)."""
    from moto.s3.models import S3Backend

    patched = []
    for name in _PATCHED:
        current = getattr(S3Backend, name)
        if getattr(current, "_emu_checks_upload_id", False):
            continue
        setattr(S3Backend, name, _checks_upload_id(current))
        patched.append(name)
    return patched
