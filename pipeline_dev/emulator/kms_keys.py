"""KMS keys as EBS, CopyImage and CopySnapshot check them (moto records any string).

Sources: botocore models -- ebs ``StartSnapshotRequest.KmsKeyArn`` (pattern
``arn:aws[a-z\\-]*:kms:.*:[0-9]{12}:key/.*``; ``ValidationExceptionReason``
``INVALID_CUSTOMER_KEY``; ``StartSnapshotResponse.KmsKeyArn``/``SseType`` sse-ebs | sse-kms
| none), ec2 ``CopyImage.KmsKeyId`` / ``CopySnapshot.KmsKeyId`` ("If you specify a KMS key,
you must also set the encrypted state to true"; key id, alias, key ARN or alias ARN; "Amazon
Web Services authenticates the KMS key asynchronously. Therefore, if you specify an
identifier that is not valid, the action can appear to complete, but eventually fails. The
specified KMS key must exist in the destination Region"), ``CopySnapshot.Encrypted``
("Copies of encrypted snapshots are encrypted ... You cannot set this parameter to false").
"""
from __future__ import annotations

import re
from typing import Any

__all__ = ["ARN_RE", "resolve", "default_key_arn", "install"]

ARN_RE = re.compile(r"^arn:aws[a-z\-]*:kms:.*:[0-9]{12}:key/.*$")


def resolve(account: str, region: str, ref: str | None) -> Any:
    """The enabled KMS key ``ref`` names in ``region`` (id, alias, key or alias ARN), or None."""
    from moto.kms.models import kms_backends

    if not ref:
        return None
    backend = kms_backends[account][region]
    if ref.startswith("arn:"):
        parts = ref.split(":")
        if len(parts) < 6 or parts[3] != region or parts[4] != account:
            return None
    try:
        key_id = backend.any_id_to_key_id(ref)
    except Exception:  # noqa: BLE001 - moto raises NotFound in several shapes
        return None
    key = backend.keys.get(key_id)
    if key is None or getattr(key, "key_state", "Enabled") != "Enabled":
        return None
    return key


def default_key_arn(account: str, region: str) -> str:
    """The ARN of the account's AWS managed EBS key (alias aws/ebs) in ``region``.

    Not created in the emulator's KMS (AWS lists it as an AWS managed key; see DEVIATIONS.md).
    """
    import uuid

    return f"arn:aws:kms:{region}:{account}:key/{uuid.uuid5(uuid.NAMESPACE_URL, account + region)}"


def _err(code: str, message: str) -> Exception:
    from moto.ec2.exceptions import EC2ClientError

    return EC2ClientError(code, message)


def check_copy_parameters(encrypted_param: Any, kms_key_id: str | None) -> bool:
    """KmsKeyId needs Encrypted=true; returns the Encrypted flag."""
    encrypted = str(encrypted_param).lower() == "true"
    if kms_key_id and not encrypted:
        raise _err("InvalidParameterDependency",
                   "The parameter KmsKeyId requires the parameter Encrypted to be set.")
    return encrypted


def _copy_snapshot(original: Any) -> Any:

    def copy_snapshot(self: Any) -> Any:
        kms = self._get_param("KmsKeyId")
        encrypted = check_copy_parameters(self._get_param("Encrypted"), kms)
        result = original(self)
        snap = self.ec2_backend.snapshots[result.result["SnapshotId"]]
        from moto.ec2.models import ec2_backends

        src = ec2_backends[self.current_account][self._get_param("SourceRegion")].snapshots.get(
            self._get_param("SourceSnapshotId"))
        snap.encrypted = bool(encrypted or (src is not None and src.encrypted))
        if snap.encrypted:
            key = resolve(self.current_account, self.region, kms) if kms else None
            if kms and key is None:
                snap.status = "error"        # authenticated asynchronously: fails later
                snap.kms_key_id = kms
            else:
                snap.kms_key_id = key.arn if key is not None else (
                    getattr(src, "kms_key_id", None) if src is not None and src.encrypted
                    and not kms else default_key_arn(self.current_account, self.region))
        return result

    copy_snapshot._emu_kms = True  # type: ignore[attr-defined]
    return copy_snapshot


def install() -> None:
    from moto.ec2.responses import EC2Response

    current = EC2Response.copy_snapshot
    if not getattr(current, "_emu_kms", False):
        EC2Response.copy_snapshot = _copy_snapshot(current)  # type: ignore[method-assign]
