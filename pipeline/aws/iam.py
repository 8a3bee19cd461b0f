"""Pre-flight of the ``vmimport`` service role that EC2 VM Import assumes to read S3.

A missing or wrong role is the most common VM Import failure, and AWS reports it only
after the upload (``InvalidParameter: The service role vmimport provided does not exist
or does not have sufficient permissions``). This module checks it first, from IAM alone:

- the role exists;
- its trust policy lets ``vmie.amazonaws.com`` call ``sts:AssumeRole`` under an
  ``sts:ExternalId`` condition (IAM condition keys are case-insensitive; the AWS docs
  spell it ``sts:Externalid``) that accepts ``vmimport``;
- its inline and attached policies grant ``s3:GetObject`` on the object to import and
  ``s3:ListBucket`` + ``s3:GetBucketLocation`` on the bucket. Wildcards (``*``, ``?``)
  in actions and resources are honoured, ``NotAction``/``NotResource`` too, and an
  explicit ``Deny`` wins. Conditions on Allow statements are not evaluated (counted as
  granting; they are rare on this role).

With ``create=True`` a missing role is created with the documented trust policy and a
policy scoped to the bucket (AWS-FACTS §1, ``doc_source/required-permissions.md``); an
existing role that trusts VM Import but cannot read the bucket gets one more inline
policy scoped to it. An existing role with a wrong trust policy is never rewritten.
Every refusal is a :class:`~pipeline.core.errors.PreflightError` (exit 2).
"""
from __future__ import annotations

import json
import logging
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Iterable

from botocore.exceptions import BotoCoreError, ClientError

from pipeline.core import tags
from pipeline.aws.clients import call, error_code
from pipeline.core.errors import PreflightError

__all__ = [
    "ROLE_NAME",
    "RoleCheck",
    "trust_policy",
    "bucket_policy",
    "allows",
    "check_role",
]

log = logging.getLogger(__name__)

ROLE_NAME = "vmimport"
SERVICE = "vmie.amazonaws.com"
EXTERNAL_ID = "vmimport"


@dataclass(frozen=True, slots=True)
class RoleCheck:
    """The outcome of :func:`check_role`."""

    role_name: str
    role_arn: str
    bucket: str
    created: bool = False
    policy_added: str | None = None          # name of an inline policy we added
    policies_read: tuple[str, ...] = field(default_factory=tuple)


def trust_policy() -> dict[str, Any]:
    """The trust policy the VM Import docs prescribe."""
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": SERVICE}, "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"sts:Externalid": EXTERNAL_ID}}}]}


def bucket_policy(bucket: str, *, kms_key_arn: str | None = None) -> dict[str, Any]:
    """The role policy from the docs, scoped to ``bucket`` (no export bucket)."""
    statements: list[dict[str, Any]] = [
        {"Effect": "Allow", "Action": ["s3:GetBucketLocation", "s3:GetObject", "s3:ListBucket"],
         "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]},
        {"Effect": "Allow",
         "Action": ["ec2:ModifySnapshotAttribute", "ec2:CopySnapshot", "ec2:RegisterImage",
                    "ec2:Describe*"],
         "Resource": "*"},
    ]
    if kms_key_arn:
        statements.append({"Effect": "Allow",
                           "Action": ["kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey",
                                      "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*"],
                           "Resource": kms_key_arn})
    return {"Version": "2012-10-17", "Statement": statements}


# --------------------------------------------------------------------------- evaluation


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _glob(pattern: str, value: str, *, fold: bool) -> bool:
    """IAM wildcard match: ``*`` any run, ``?`` one character."""
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, value, re.IGNORECASE if fold else 0) is not None


def _any_glob(patterns: Iterable[Any], value: str, *, fold: bool) -> bool:
    return any(_glob(str(p), value, fold=fold) for p in patterns)


def _statement_matches(st: dict[str, Any], action: str, resource: str | None) -> bool:
    if "Action" in st:
        act_ok = _any_glob(_list(st["Action"]), action, fold=True)
    elif "NotAction" in st:
        act_ok = not _any_glob(_list(st["NotAction"]), action, fold=True)
    else:
        act_ok = False
    if not act_ok or resource is None:
        return act_ok
    if "Resource" in st:
        return _any_glob(_list(st["Resource"]), resource, fold=False)
    if "NotResource" in st:
        return not _any_glob(_list(st["NotResource"]), resource, fold=False)
    return False


def allows(documents: Iterable[dict[str, Any]], action: str, resource: str | None) -> bool:
    """Do these identity policies allow ``action`` on ``resource`` (explicit Deny wins)?"""
    allowed = False
    for doc in documents:
        for st in _list(doc.get("Statement")):
            if not isinstance(st, dict) or not _statement_matches(st, action, resource):
                continue
            if st.get("Effect") == "Deny":
                return False
            if st.get("Effect") == "Allow":
                allowed = True
    return allowed


def _trust_problem(doc: dict[str, Any]) -> str | None:
    """None when ``doc`` lets VM Import assume the role with external id vmimport.

    Like the documented trust policy, the statement must carry an ``sts:ExternalId``
    condition (key case-insensitive) that accepts ``vmimport``; VM Import presents that
    external id and the docs require the condition.
    """
    for st in _list(doc.get("Statement")):
        if not isinstance(st, dict) or st.get("Effect") != "Allow":
            continue
        principal = st.get("Principal") or {}
        services = _list(principal.get("Service")) if isinstance(principal, dict) else []
        if SERVICE not in services:
            continue
        if not _any_glob(_list(st.get("Action")), "sts:AssumeRole", fold=True):
            continue
        for op, keys in (st.get("Condition") or {}).items():
            for k, v in (keys or {}).items():
                if k.lower() != "sts:externalid":
                    continue
                fold = "IgnoreCase" in op
                if (op.startswith("String") and "Not" not in op
                        and _any_glob(_list(v), EXTERNAL_ID, fold=fold)):
                    return None
                return (f"its trust policy's {op} {k} condition does not accept "
                        f"{EXTERNAL_ID!r}")
        return (f"its trust policy lets {SERVICE} assume it without the sts:Externalid "
                f"{EXTERNAL_ID!r} condition the VM Import docs require")
    return (f"its trust policy does not allow {SERVICE} to call sts:AssumeRole "
            f"(with sts:Externalid {EXTERNAL_ID!r})")


def _doc(value: Any) -> dict[str, Any]:
    """boto3 decodes IAM policy documents to dicts; be safe with URL-encoded strings."""
    if isinstance(value, dict):
        return value
    text = str(value)
    if text.startswith("%7B") or text.startswith("%7b"):
        text = urllib.parse.unquote(text)
    parsed = json.loads(text)
    return parsed if isinstance(parsed, dict) else {}


def _role_policies(iam: Any, role: str) -> list[tuple[str, dict[str, Any]]]:
    """(name, document) of every inline and attached policy of ``role``."""
    out: list[tuple[str, dict[str, Any]]] = []
    try:
        for page in iam.get_paginator("list_role_policies").paginate(RoleName=role):
            for name in page.get("PolicyNames") or ():
                doc = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
                out.append((f"inline:{name}", _doc(doc)))
        for page in iam.get_paginator("list_attached_role_policies").paginate(RoleName=role):
            for att in page.get("AttachedPolicies") or ():
                arn = att["PolicyArn"]
                pol = iam.get_policy(PolicyArn=arn)["Policy"]
                ver = iam.get_policy_version(PolicyArn=arn, VersionId=pol["DefaultVersionId"])
                out.append((f"attached:{arn}", _doc(ver["PolicyVersion"]["Document"])))
    except (ClientError, BotoCoreError) as err:
        raise PreflightError(
            f"cannot read the policies of IAM role {role}: {error_code(err) or err}; the "
            "caller needs iam:ListRolePolicies, iam:GetRolePolicy, "
            "iam:ListAttachedRolePolicies, iam:GetPolicy and iam:GetPolicyVersion") from err
    return out


def _missing_grants(docs: list[dict[str, Any]], bucket: str, key: str) -> list[str]:
    obj = f"arn:aws:s3:::{bucket}/{key}"
    need = [("s3:GetObject", obj), ("s3:ListBucket", f"arn:aws:s3:::{bucket}"),
            ("s3:GetBucketLocation", f"arn:aws:s3:::{bucket}")]
    return [f"{a} on {r}" for a, r in need if not allows(docs, a, r)]


# --------------------------------------------------------------------------- check


def check_role(iam: Any, bucket: str, *, role_name: str = ROLE_NAME, create: bool = False,
               key: str = "imports/probe.vmdk", kms_key_arn: str | None = None) -> RoleCheck:
    """Check (and with ``create`` create or extend) the VM Import role; see module doc.

    ``key`` is the object VM Import will read (the import's content-addressed key).
    """
    created = False
    try:
        role = iam.get_role(RoleName=role_name)["Role"]
    except ClientError as err:
        if error_code(err) != "NoSuchEntity":
            raise PreflightError(f"cannot read IAM role {role_name}: {error_code(err)}; the "
                                 "caller needs iam:GetRole") from err
        if not create:
            raise PreflightError(
                f"the VM Import service role {role_name!r} does not exist; re-run with "
                f"--create-role to create it scoped to s3://{bucket}, or create it as in "
                "https://docs.aws.amazon.com/vm-import/latest/userguide/required-permissions.html"
            ) from err
        role = _create_role(iam, role_name, bucket, kms_key_arn)
        created = True

    problem = _trust_problem(_doc(role.get("AssumeRolePolicyDocument") or {}))
    if problem:
        raise PreflightError(f"IAM role {role_name} cannot be used by VM Import: {problem}; "
                             f"fix its trust policy to: {json.dumps(trust_policy())}")

    policies = _role_policies(iam, role_name)
    missing = _missing_grants([d for _, d in policies], bucket, key)
    added: str | None = None
    if missing and create:
        added = f"vmimport-{bucket}"[:128]
        call(iam.put_role_policy, what=f"adding policy {added} to role {role_name}",
             RoleName=role_name, PolicyName=added,
             PolicyDocument=json.dumps(bucket_policy(bucket, kms_key_arn=kms_key_arn)))
        log.info("added inline policy %s to role %s so it can read s3://%s",
                 added, role_name, bucket)
        policies = _role_policies(iam, role_name)
        missing = _missing_grants([d for _, d in policies], bucket, key)
    if missing:
        raise PreflightError(
            f"IAM role {role_name} cannot read s3://{bucket}: its policies do not grant "
            f"{'; '.join(missing)}; re-run with --create-role to add a policy scoped to the "
            "bucket, or grant them yourself")
    return RoleCheck(role_name=role_name, role_arn=str(role.get("Arn", "")), bucket=bucket,
                     created=created, policy_added=added,
                     policies_read=tuple(n for n, _ in policies))


def _create_role(iam: Any, role_name: str, bucket: str,
                 kms_key_arn: str | None) -> dict[str, Any]:
    resp = call(iam.create_role, what=f"creating IAM role {role_name}", RoleName=role_name,
                AssumeRolePolicyDocument=json.dumps(trust_policy()),
                Description="EC2 VM Import service role (created by eks-ami-pipeline)",
                Tags=[{"Key": tags.MANAGED_BY, "Value": "eks-ami-pipeline"}])
    call(iam.put_role_policy, what=f"adding policy vmimport to role {role_name}",
         RoleName=role_name, PolicyName="vmimport",
         PolicyDocument=json.dumps(bucket_policy(bucket, kms_key_arn=kms_key_arn)))
    log.info("created IAM role %s for VM Import, scoped to s3://%s", role_name, bucket)
    return dict(resp["Role"])
