"""Read user data the way nodeadm does, and validate the NodeConfig it would use.

nodeadm (awslabs/amazon-eks-ami ``nodeadm/internal/configprovider``):

1. base64-decodes the whole user data if it is base64, then gunzips it if it starts with the
   gzip magic;
2. if it is a MIME document whose ``Content-Type`` is ``multipart/*``, takes every part of type
   ``application/node.eks.aws`` (each again base64-decoded and gunzipped if so), decodes each as
   a NodeConfig and merges them in order (``mergo`` with override: later non-empty values win;
   ``spec.kubelet.flags`` are appended; ``spec.kubelet.config`` documents are deep-merged);
   a multipart document without such a part is an error;
3. otherwise decodes the whole body as one NodeConfig (YAML or JSON).

Each document is decoded strictly against the vendored CRD
(``pipeline/data/nodeadm/node.eks.aws_nodeconfigs.yaml``): unknown fields are refused with their
path. The merged result must carry ``spec.cluster.{name, apiServerEndpoint,
certificateAuthority, cidr}`` (and ``id`` with ``enableOutpost``), as ``ValidateNodeConfig``
requires. A MIME document without its closing ``--boundary--`` is read to the end, as
cloud-init does, with a warning.
"""
from __future__ import annotations

import base64
import binascii
import copy
import email
import email.message
import email.policy
import functools
import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.publish import crd_schema

__all__ = ["API_VERSION", "CONTENT_TYPE", "FEATURE_GATES", "NodeadmView", "read_user_data",
           "merge", "document_problems", "merged_problems", "schema"]

API_VERSION = "node.eks.aws/v1alpha1"
CONTENT_TYPE = "application/node.eks.aws"
#: nodeadm's own gates (``Feature`` enum in nodeadm/doc/api.md); they go in ``spec.featureGates``.
FEATURE_GATES = ("InstanceIdNodeName", "FastImagePull")
REQUIRED = ("name", "apiServerEndpoint", "certificateAuthority", "cidr")
_CRD = Path(__file__).resolve().parents[1] / "data" / "nodeadm" / "node.eks.aws_nodeconfigs.yaml"
_SHELL = "text/x-shellscript"


@dataclass(frozen=True, slots=True)
class NodeadmView:
    """What nodeadm makes of one user data document."""

    config: dict[str, Any] | None      # the merged NodeConfig (None: nodeadm finds none)
    documents: int                     # NodeConfig documents merged
    mime: bool                         # read as MIME multipart
    shell: tuple[str, ...]             # text/x-shellscript parts, in order (cloud-init runs them)
    problems: tuple[str, ...]          # why nodeadm (or the join) would fail
    warnings: tuple[str, ...]


@functools.cache
def schema() -> dict[str, Any]:
    """The v1alpha1 ``openAPIV3Schema``, with RawExtension maps taking any JSON value."""
    crd = yaml.safe_load(_CRD.read_text(encoding="utf-8"))
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")

    def raw_ext(s: Any) -> Any:
        if isinstance(s, dict):
            if (s.get("x-kubernetes-preserve-unknown-fields") is True and s.get("type") == "object"
                    and "properties" not in s):
                return {"x-kubernetes-preserve-unknown-fields": True}
            return {k: raw_ext(v) for k, v in s.items()}
        return s
    return dict(raw_ext(version["schema"]["openAPIV3Schema"]))


def _maybe_base64(data: bytes) -> bytes:
    """nodeadm's decodeIfBase64: Go StdEncoding (CR/LF ignored, padding required)."""
    compact = data.replace(b"\r", b"").replace(b"\n", b"")
    if not compact:
        return data
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return data


def _maybe_gunzip(data: bytes, what: str) -> bytes:
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{what} starts like gzip but does not decompress ({err})") from err


def read_user_data(data: bytes | str) -> NodeadmView:
    """Decode ``data`` as nodeadm would; never raises for bad input (see ``problems``)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    problems: list[str] = []
    warnings: list[str] = []
    try:
        raw = _maybe_gunzip(_maybe_base64(raw), "the user data")
    except ValueError as err:
        return NodeadmView(None, 0, False, (), (str(err),), ())
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    if msg.get("Content-Type") is not None and msg.get_content_maintype() == "multipart":
        return _read_multipart(msg, raw)
    doc, doc_problems = _decode_document(raw, "the user data")
    problems += doc_problems
    return NodeadmView(doc, 1 if doc is not None else 0, False, (), tuple(problems),
                       tuple(warnings))


def _read_multipart(msg: email.message.Message, raw: bytes) -> NodeadmView:
    problems: list[str] = []
    warnings: list[str] = []
    boundary = msg.get_boundary()
    if not boundary:
        return NodeadmView(None, 0, True, (), ("MIME: multipart Content-Type without a boundary "
                                               "parameter; nodeadm cannot find the parts",), ())
    if f"--{boundary}--".encode() not in raw:
        warnings.append(f"MIME: the closing boundary --{boundary}-- is missing; cloud-init and "
                        "this check read the last part to the end of the user data, but add it")
    docs: list[dict[str, Any]] = []
    shell: list[str] = []
    payload = msg.get_payload()
    parts = [p for p in payload if isinstance(p, email.message.Message)] \
        if isinstance(payload, list) else []
    for i, part in enumerate(parts, 1):
        if part.get("Content-Type") is None:
            continue  # nodeadm skips parts without a Content-Type header
        ctype = part.get_content_type()
        body = part.get_payload(decode=True)
        body = body if isinstance(body, bytes) else b""
        if ctype == _SHELL:
            shell.append(body.decode("utf-8", errors="replace"))
        if ctype != CONTENT_TYPE:
            continue
        what = f"MIME part {i} ({CONTENT_TYPE})"
        try:
            body = _maybe_gunzip(_maybe_base64(body), what)
        except ValueError as err:
            problems.append(str(err))
            continue
        doc, doc_problems = _decode_document(body, what)
        problems += doc_problems
        if doc is not None:
            docs.append(doc)
    if not docs and not problems:
        problems.append(f"MIME: no {CONTENT_TYPE} part; nodeadm stops with 'could not find "
                        "NodeConfig within UserData'")
    merged: dict[str, Any] | None = None
    for doc in docs:
        if merged is None:
            merged = copy.deepcopy(doc)
        else:
            warnings += _merge_into(merged, doc, "")
    return NodeadmView(merged, len(docs), True, tuple(shell), tuple(problems), tuple(warnings))


def _decode_document(body: bytes, what: str) -> tuple[dict[str, Any] | None, list[str]]:
    text = body.decode("utf-8", errors="replace")
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        return None, [f"{what} is not valid YAML or JSON{where}: {getattr(err, 'problem', err)}"]
    if not docs:
        return None, [f"{what} is empty; nodeadm stops with \"Object 'Kind' is missing\""]
    problems: list[str] = []
    if len(docs) > 1:
        problems.append(f"{what} holds {len(docs)} YAML documents, but nodeadm decodes only the "
                        f"first; put each NodeConfig in its own {CONTENT_TYPE} MIME part")
    doc = docs[0]
    problems += [f"{what}: {p}" for p in document_problems(doc)]
    return (doc if isinstance(doc, dict) else None), problems


def document_problems(doc: Any) -> list[str]:
    """What nodeadm's decoder refuses in one NodeConfig document (before merging)."""
    if not isinstance(doc, dict):
        return [f"a NodeConfig must be a mapping, got {type(doc).__name__}"]
    out: list[str] = []
    if doc.get("kind") != "NodeConfig":
        out.append(f"kind is {doc.get('kind')!r}; expected NodeConfig")
    if doc.get("apiVersion") != API_VERSION:
        out.append(f"apiVersion is {doc.get('apiVersion')!r}; expected {API_VERSION}")
    out += crd_schema.validate(doc, schema(), check_metadata=False)
    ca = ((doc.get("spec") or {}).get("cluster") or {}).get("certificateAuthority") \
        if isinstance(doc.get("spec"), dict) and isinstance(doc["spec"].get("cluster"), dict) \
        else None
    if isinstance(ca, str) and "$" not in ca:
        try:
            base64.b64decode("".join(ca.split()), validate=True)
        except (binascii.Error, ValueError):
            out.append("spec.cluster.certificateAuthority: not base64 (the field is bytes; "
                       "nodeadm cannot decode it)")
    kconf = _get(doc, "spec", "kubelet", "config")
    gates = kconf.get("featureGates") if isinstance(kconf, dict) else None
    if isinstance(gates, dict):
        for gate in gates:
            if gate in FEATURE_GATES:
                out.append(f"spec.kubelet.config.featureGates.{gate}: {gate} is a nodeadm feature "
                           "gate, and the kubelet refuses gates it does not know; move it to "
                           "spec.featureGates")
    own = _get(doc, "spec", "featureGates")
    if isinstance(own, dict):
        for gate in own:
            if gate not in FEATURE_GATES:
                out.append(f"spec.featureGates.{gate}: not a nodeadm feature gate (known: "
                           f"{', '.join(FEATURE_GATES)}); nodeadm ignores it; kubelet gates go in "
                           "spec.kubelet.config.featureGates")
    return out


def merged_problems(config: dict[str, Any] | None) -> list[str]:
    """``ValidateNodeConfig`` on the merged result: the cluster coordinates it requires."""
    if config is None:
        return []
    cluster = _get(config, "spec", "cluster")
    cluster = cluster if isinstance(cluster, dict) else {}
    out = [f"spec.cluster.{k} is missing after merging the NodeConfig parts; a custom AMI needs "
           "name, apiServerEndpoint, certificateAuthority and cidr" for k in REQUIRED
           if not cluster.get(k)]
    if cluster.get("enableOutpost") is True and not cluster.get("id"):
        out.append("spec.cluster.id is required with spec.cluster.enableOutpost: true")
    return out


def merge(dst: dict[str, Any], src: dict[str, Any]) -> dict[str, Any]:
    """``dst`` merged with ``src`` as nodeadm's ``NodeConfig.Merge`` does (a new dict)."""
    out = copy.deepcopy(dst)
    _merge_into(out, src, "")
    return out


def _empty(v: Any) -> bool:
    return v is None or v == "" or v is False or v == 0 or v == [] or v == {}


def _merge_into(dst: dict[str, Any], src: dict[str, Any], path: str) -> list[str]:
    warnings: list[str] = []
    for k, v in src.items():
        where = f"{path}.{k}" if path else k
        if where == "spec.kubelet.flags":
            dst[k] = list(dst.get(k) or []) + list(v or [])
        elif where == "spec.kubelet.config" and isinstance(v, dict):
            prev = dst.get(k)
            dst[k] = _document_merge(prev if isinstance(prev, dict) else {}, v)
        elif where == "spec.containerd.config" and v and dst.get(k):
            warnings.append("two NodeConfig parts set spec.containerd.config; nodeadm's merge of "
                            "containerd TOML is unimplemented and leaves it empty; keep it in one "
                            "part")
            dst[k] = ""
        elif isinstance(v, dict) and isinstance(dst.get(k), dict):
            warnings += _merge_into(dst[k], v, where)
        elif not _empty(v) or k not in dst:
            dst[k] = copy.deepcopy(v)
    return warnings


def _document_merge(dst: dict[str, Any], src: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dst)
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _document_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _get(doc: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(k)
    return doc
