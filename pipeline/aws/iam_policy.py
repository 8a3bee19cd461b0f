"""The least-privilege IAM policy this tool needs against real AWS (``invoke iam-policy``).

Every AWS API the library calls is listed in :data:`OPERATION_ACTIONS` (boto3 operation
name to the IAM actions it needs); ``tests/test_iam_policy.py`` scans ``pipeline/`` for
client calls and fails when one is missing here or not granted by :func:`policy_document`,
so the policy cannot silently rot as code changes. Packer's own EC2 calls (the
``amazon-ebs`` builder runs outside Python) are listed in :data:`PACKER_ACTIONS`.

Scoping, where AWS supports it:

- every EC2/EBS/SSM statement is limited to the configured regions (``aws:RequestedRegion``);
- destructive EC2 actions on AMIs, snapshots, volumes and instances require the
  resource to carry this tool's build-id tag (:data:`pipeline.core.tags.BUILD_ID`);
- S3 is limited to the configured bucket(s), and left out when none is configured; IAM
  to the ``vmimport`` role; SSM writes to
  ``<ssm_prefix>/*``, SSM reads to that prefix and the public ``/aws/service/*`` tree;
- KMS, only when keys are configured, to those keys.

Describe/List calls and a few creates (key pairs, security groups, launch templates) do
not support resource-level permissions or tag conditions in a way Packer can satisfy;
they stay on ``"*"`` within the regions.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable

from pipeline.core import tags
from pipeline.core.config import Settings

__all__ = [
    "Statement",
    "IamPolicy",
    "OPERATION_ACTIONS",
    "PACKER_ACTIONS",
    "NO_PERMISSION",
    "actions_for",
    "policy_document",
]

#: boto3 operations that need no IAM permission at all.
NO_PERMISSION: frozenset[tuple[str, str]] = frozenset({("sts", "get_caller_identity")})

#: Operations whose IAM action is not simply ``<service>:<OperationName>``.
#: S3's data-plane calls map onto a few coarse actions (multipart parts are PutObject).
OPERATION_ACTIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("s3", "head_bucket"): ("s3:ListBucket",),
    ("s3", "list_objects_v2"): ("s3:ListBucket",),
    ("s3", "list_objects"): ("s3:ListBucket",),
    ("s3", "head_object"): ("s3:GetObject",),
    ("s3", "get_object"): ("s3:GetObject",),
    ("s3", "get_object_tagging"): ("s3:GetObjectTagging",),
    ("s3", "put_object_tagging"): ("s3:PutObjectTagging",),
    ("s3", "put_object"): ("s3:PutObject",),
    ("s3", "upload_file"): ("s3:PutObject", "s3:AbortMultipartUpload"),
    ("s3", "upload_fileobj"): ("s3:PutObject", "s3:AbortMultipartUpload"),
    ("s3", "create_multipart_upload"): ("s3:PutObject",),
    ("s3", "upload_part"): ("s3:PutObject",),
    ("s3", "complete_multipart_upload"): ("s3:PutObject",),
    ("s3", "abort_multipart_upload"): ("s3:AbortMultipartUpload",),
    ("s3", "list_parts"): ("s3:ListMultipartUploadParts",),
    ("s3", "list_multipart_uploads"): ("s3:ListBucketMultipartUploads",),
    ("s3", "delete_object"): ("s3:DeleteObject",),
    ("s3", "delete_objects"): ("s3:DeleteObject",),
    ("s3", "get_bucket_location"): ("s3:GetBucketLocation",),
    ("s3", "get_bucket_encryption"): ("s3:GetEncryptionConfiguration",),
    ("s3", "get_bucket_policy"): ("s3:GetBucketPolicy",),
    ("s3", "create_bucket"): ("s3:CreateBucket",),
    ("ssm", "get_parameters"): ("ssm:GetParameters",),
    ("ec2", "import_image"): ("ec2:ImportImage", "iam:PassRole"),
    ("ec2", "create_launch_template_version"): ("ec2:CreateLaunchTemplateVersion",),
    # cleanup.deregister_images passes DeleteAssociatedSnapshots=True: AWS then deletes the
    # snapshots with the caller's ec2:DeleteSnapshot (a missing one: "missing-permissions").
    ("ec2", "deregister_image"): ("ec2:DeregisterImage", "ec2:DeleteSnapshot"),
}

#: What the Packer amazon-ebs builder calls (from Packer's documented minimal policy).
PACKER_ACTIONS: tuple[str, ...] = (
    "ec2:AttachVolume", "ec2:AuthorizeSecurityGroupIngress", "ec2:CopyImage",
    "ec2:CreateImage", "ec2:CreateKeyPair", "ec2:CreateSecurityGroup", "ec2:CreateSnapshot",
    "ec2:CreateTags", "ec2:CreateVolume", "ec2:DeleteKeyPair", "ec2:DeleteSecurityGroup",
    "ec2:DeleteSnapshot", "ec2:DeleteVolume", "ec2:DeregisterImage",
    "ec2:DescribeImageAttribute", "ec2:DescribeImages", "ec2:DescribeInstances",
    "ec2:DescribeInstanceStatus", "ec2:DescribeRegions", "ec2:DescribeSecurityGroups",
    "ec2:DescribeSnapshots", "ec2:DescribeSubnets", "ec2:DescribeVpcs", "ec2:DescribeTags",
    "ec2:DescribeVolumes", "ec2:DetachVolume", "ec2:ModifyImageAttribute",
    "ec2:ModifyInstanceAttribute", "ec2:ModifySnapshotAttribute", "ec2:RegisterImage",
    "ec2:RunInstances", "ec2:StopInstances", "ec2:TerminateInstances",
)

_EC2_READ = (
    "ec2:DescribeImages", "ec2:DescribeImageAttribute", "ec2:DescribeImageReferences",
    "ec2:DescribeImportImageTasks", "ec2:DescribeInstances", "ec2:DescribeInstanceStatus",
    "ec2:DescribeKeyPairs", "ec2:DescribeLaunchTemplates", "ec2:DescribeLaunchTemplateVersions",
    "ec2:DescribeRegions", "ec2:DescribeSecurityGroups", "ec2:DescribeSecurityGroupRules",
    "ec2:DescribeSnapshots", "ec2:DescribeSnapshotAttribute", "ec2:DescribeSubnets",
    "ec2:DescribeTags", "ec2:DescribeVolumes", "ec2:DescribeVpcs",
    "ec2:DescribeAvailabilityZones",
    "ec2:GetAllowedImagesSettings",        # publish: which criterion blocks a shared AMI
)

#: Creating things: the build tags them on creation (``TagSpecifications``).
_EC2_CREATE = (
    "ec2:ImportImage", "ec2:CancelImportTask", "ec2:RegisterImage", "ec2:CopyImage",
    "ec2:CreateImage", "ec2:CreateSnapshot", "ec2:CreateVolume", "ec2:RunInstances",
    "ec2:CreateKeyPair", "ec2:CreateSecurityGroup", "ec2:AuthorizeSecurityGroupIngress",
    "ec2:CreateTags", "ec2:CreateLaunchTemplate", "ec2:CreateLaunchTemplateVersion",
    "ec2:DeleteLaunchTemplate",       # only the undo of a template this run created
    "ec2:ModifyLaunchTemplate", "ec2:DeleteLaunchTemplateVersions",
    "ec2:DeleteKeyPair", "ec2:DeleteSecurityGroup", "ec2:AttachVolume", "ec2:DetachVolume",
    "ec2:ModifyInstanceAttribute",
)

#: Changing or deleting pipeline-built things: only when they carry the build-id tag.
_EC2_OWNED = (
    "ec2:DeregisterImage", "ec2:DeleteSnapshot", "ec2:DeleteVolume", "ec2:TerminateInstances",
    "ec2:StopInstances", "ec2:ModifyImageAttribute", "ec2:ModifySnapshotAttribute",
    "ec2:EnableImageDeprecation", "ec2:DisableImageDeprecation", "ec2:DeleteTags",
    "ec2:ModifyInstanceMetadataOptions",   # IMDSv2 on Packer 1.6's build instance
    # build.protect_live_amis: protection follows the live AMIs (pipeline/publish/protect.py)
    "ec2:EnableImageDeregistrationProtection", "ec2:DisableImageDeregistrationProtection",
)

_EBS = (
    "ebs:StartSnapshot", "ebs:PutSnapshotBlock", "ebs:CompleteSnapshot",
    "ebs:ListSnapshotBlocks", "ebs:GetSnapshotBlock", "ebs:ListChangedBlocks",
)

_S3_BUCKET = ("s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:GetBucketLocation",
              "s3:GetEncryptionConfiguration")
_S3_OBJECT = ("s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
              "s3:ListMultipartUploadParts", "s3:GetObjectTagging", "s3:PutObjectTagging")

_IAM_ROLE = ("iam:GetRole", "iam:CreateRole", "iam:TagRole", "iam:PutRolePolicy",
             "iam:GetRolePolicy", "iam:ListRolePolicies", "iam:ListAttachedRolePolicies",
             "iam:UpdateAssumeRolePolicy", "iam:PassRole")
_IAM_READ = ("iam:GetInstanceProfile",)
#: The vmimport pre-flight reads the role's attached (managed) policies too.
_IAM_POLICY_READ = ("iam:GetPolicy", "iam:GetPolicyVersion")

_SSM_PUBLIC_READ = ("ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath")
_SSM_OWN = ("ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath",
            "ssm:GetParameterHistory", "ssm:PutParameter", "ssm:DeleteParameter",
            "ssm:DeleteParameters", "ssm:AddTagsToResource", "ssm:ListTagsForResource",
            "ssm:LabelParameterVersion")
_SSM_ANY = ("ssm:DescribeParameters",)

_KMS = ("kms:DescribeKey", "kms:CreateGrant", "kms:Decrypt", "kms:Encrypt",
        "kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncryptFrom", "kms:ReEncryptTo")

VMIMPORT_ROLE = "vmimport"


@dataclass(frozen=True, slots=True)
class Statement:
    """One IAM policy statement (Effect is always Allow)."""

    sid: str
    actions: tuple[str, ...]
    resources: tuple[str, ...] = ("*",)
    condition: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Sid": self.sid, "Effect": "Allow",
                               "Action": sorted(set(self.actions)),
                               "Resource": list(self.resources) if len(self.resources) > 1
                               else self.resources[0]}
        if self.condition:
            out["Condition"] = self.condition
        return out


@dataclass(frozen=True, slots=True)
class IamPolicy:
    """An identity policy document; ``summary()`` is the JSON to paste into IAM."""

    statements: tuple[Statement, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"Version": "2012-10-17", "Statement": [s.to_dict() for s in self.statements]}

    def summary(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def actions(self) -> set[str]:
        return {a for s in self.statements for a in s.actions}

    def grants(self, action: str) -> bool:
        """Whether some statement names ``action`` (IAM actions are case-insensitive)."""
        want = action.lower()
        for granted in self.actions():
            g = granted.lower()
            if g == want or (g.endswith("*") and want.startswith(g[:-1])):
                return True
        return False


def _pascal(op: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in op.split("_"))


def actions_for(service: str, operation: str) -> tuple[str, ...]:
    """The IAM actions a boto3 ``operation`` of ``service`` needs (``()`` for none)."""
    if (service, operation) in NO_PERMISSION:
        return ()
    if (service, operation) in OPERATION_ACTIONS:
        return OPERATION_ACTIONS[(service, operation)]
    if service == "s3":
        raise KeyError(f"s3 operation {operation!r} has no IAM mapping in "
                       "pipeline.aws.iam_policy.OPERATION_ACTIONS")
    return (f"{service}:{_pascal(operation)}",)


def _buckets(settings: Settings) -> list[str]:
    names = [settings.s3_bucket] if settings.s3_bucket else []
    for img in settings.images:
        if img.import_ is not None and img.import_.bucket:
            names.append(img.import_.bucket)
    return sorted(set(names))


def _regions(settings: Settings) -> list[str]:
    regions = {settings.aws.region}
    for img in settings.images:
        regions.update(img.regions)
    return sorted(regions)


def _kms_keys(settings: Settings) -> list[str]:
    keys: set[str] = set()
    for img in settings.images:
        for region, key in img.kms_key_ids.items():
            keys.add(key if key.startswith("arn:") else f"arn:aws:kms:{region}:*:key/{key}")
        if img.import_ is not None and img.import_.kms_key_id:
            key = img.import_.kms_key_id
            keys.add(key if key.startswith("arn:")
                     else f"arn:aws:kms:{settings.aws.region}:*:key/{key}")
    return sorted(keys)


def _uniq(*groups: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted({a for g in groups for a in g}))


def policy_document(settings: Settings) -> IamPolicy:
    """The least-privilege identity policy for ``settings`` (regions, buckets, prefix, keys)."""
    in_regions: dict[str, dict[str, Any]] = {
        "StringEquals": {"aws:RequestedRegion": _regions(settings)}}
    owned: dict[str, dict[str, Any]] = {
        "StringEquals": {"aws:RequestedRegion": _regions(settings)},
        "Null": {f"aws:ResourceTag/{tags.BUILD_ID}": "false"}}
    packer_owned = set(PACKER_ACTIONS) & set(_EC2_OWNED)
    packer_rest = set(PACKER_ACTIONS) - packer_owned
    statements = [
        Statement("Ec2Read", _uniq(_EC2_READ, (a for a in packer_rest if ":Describe" in a)),
                  condition=in_regions),
        Statement("Ec2CreateAndPublish",
                  _uniq(_EC2_CREATE, (a for a in packer_rest if ":Describe" not in a)),
                  condition=in_regions),
        Statement("Ec2ChangeOnlyPipelineBuilt", _uniq(_EC2_OWNED, packer_owned),
                  condition=owned),
        Statement("EbsDirectSnapshots", _EBS, ("arn:aws:ec2:*::snapshot/*",),
                  condition=in_regions),
    ]
    buckets = _buckets(settings)
    if buckets:   # no bucket configured: nothing is uploaded, no S3 access at all
        statements += [
            Statement("S3Bucket", _S3_BUCKET, tuple(f"arn:aws:s3:::{b}" for b in buckets)),
            Statement("S3Objects", _S3_OBJECT, tuple(f"arn:aws:s3:::{b}/*" for b in buckets)),
        ]
    statements += [
        Statement("VmImportRole", _IAM_ROLE, (f"arn:aws:iam::*:role/{VMIMPORT_ROLE}",)),
        Statement("InstanceProfileRead", _IAM_READ, ("arn:aws:iam::*:instance-profile/*",)),
        Statement("VmImportRolePolicyRead", _IAM_POLICY_READ, ("arn:aws:iam::*:policy/*",)),
        Statement("SsmPublicParameters", _SSM_PUBLIC_READ,
                  ("arn:aws:ssm:*::parameter/aws/service/*",), condition=in_regions),
        Statement("SsmOwnParameters", _SSM_OWN,
                  (f"arn:aws:ssm:*:*:parameter{settings.ssm_prefix}/*",), condition=in_regions),
        Statement("SsmDescribe", _SSM_ANY, condition=in_regions),
    ]
    keys = _kms_keys(settings)
    if keys:
        statements.append(Statement("KmsConfiguredKeys", _KMS, tuple(keys)))
    return IamPolicy(tuple(statements))
