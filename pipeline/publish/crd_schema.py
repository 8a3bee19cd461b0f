"""Validate an object as the Kubernetes API server validates a custom resource.

Given the ``openAPIV3Schema`` of a served CRD version, :func:`validate`:

1. applies the schema's ``default`` values to absent fields (the API server defaults before it
   validates, and some CEL rules read defaulted fields);
2. checks the OpenAPI keywords (type, enum, pattern, bounds, required, ...) with
   :mod:`jsonschema`;
3. refuses unknown fields, with their path, as ``kubectl apply`` (server-side field validation
   ``Strict``, the default since Kubernetes 1.27) does: a field is unknown where the schema
   lists ``properties`` and neither ``additionalProperties`` nor
   ``x-kubernetes-preserve-unknown-fields`` allow more;
4. evaluates every ``x-kubernetes-validations`` CEL rule at its node with cel-python
   (:mod:`celpy`), plus the two functions of the Kubernetes CEL libraries the vendored CRDs use
   (``string.find(regex)`` from the regex library, ``string.split(sep)`` from the strings
   extension). Transition rules (those reading ``oldSelf``) run only on update, so a create is
   checked without them, as the API server does.

``metadata`` is checked as ``ObjectMeta``: a name, and only ObjectMeta's fields.
"""
from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass
from typing import Any

import celpy
import jsonschema
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

__all__ = ["CelRule", "validate", "cel_rules", "OBJECT_META_FIELDS"]

#: ObjectMeta's fields (k8s.io/apimachinery/pkg/apis/meta/v1 ObjectMeta json names).
OBJECT_META_FIELDS = frozenset({
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
    "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels",
    "annotations", "ownerReferences", "finalizers", "managedFields"})
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True, slots=True)
class CelRule:
    """One ``x-kubernetes-validations`` entry and the schema path it sits at."""

    path: str
    rule: str
    message: str
    transition: bool


def validate(body: dict[str, Any], schema: dict[str, Any], *, who: str = "",
             check_metadata: bool = True) -> list[str]:
    """Every problem the API server would report creating ``body``, one line each."""
    prefix = f"{who}: " if who else ""
    obj = copy.deepcopy(body)
    _apply_defaults(obj, schema)
    out: list[str] = []
    for err in sorted(jsonschema.Draft7Validator(_for_jsonschema(schema)).iter_errors(obj),
                      key=lambda e: [str(p) for p in e.absolute_path]):
        out.append(f"{prefix}{_path(err.absolute_path)}: {err.message}")
    out += [f"{prefix}{p}" for p in _unknown_fields(obj, schema, "")]
    if check_metadata:
        out += [f"{prefix}{p}" for p in _metadata_problems(obj.get("metadata"))]
    out += [f"{prefix}{p}" for p in _cel_problems(obj, schema, "")]
    return out


def cel_rules(schema: dict[str, Any], path: str = "") -> list[CelRule]:
    """Every CEL rule in ``schema`` with the path it applies to (for tests and docs)."""
    out = [CelRule(path or "(top level)", r["rule"], r.get("message", r["rule"]),
                   "oldSelf" in r["rule"]) for r in schema.get("x-kubernetes-validations") or []]
    for name, sub in (schema.get("properties") or {}).items():
        out += cel_rules(sub, f"{path}.{name}" if path else name)
    if isinstance(schema.get("additionalProperties"), dict):
        out += cel_rules(schema["additionalProperties"], f"{path}[*]")
    if isinstance(schema.get("items"), dict):
        out += cel_rules(schema["items"], f"{path}[*]")
    return out


# --------------------------------------------------------------------------- structure


def _path(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _for_jsonschema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema without the Kubernetes ``nullable`` quirk: nullable fields also take null."""
    def fix(s: Any) -> Any:
        if isinstance(s, dict):
            s = {k: fix(v) for k, v in s.items() if k != "x-kubernetes-validations"}
            if s.get("nullable") and isinstance(s.get("type"), str):
                s["type"] = [s["type"], "null"]
            return s
        if isinstance(s, list):
            return [fix(v) for v in s]
        return s
    return dict(fix(schema))


def _apply_defaults(value: Any, schema: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                _apply_defaults(value[name], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for k, v in value.items():
                if k not in (schema.get("properties") or {}):
                    _apply_defaults(v, extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _apply_defaults(item, schema["items"])


def _unknown_fields(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    out: list[str] = []
    if path == "metadata":
        return out  # ObjectMeta: checked by _metadata_problems
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
        for k, v in value.items():
            where = f"{path}.{k}" if path else str(k)
            if k in props:
                out += _unknown_fields(v, props[k], where)
            elif isinstance(extra, dict):
                out += _unknown_fields(v, extra, where)
            elif not (extra is True or preserve):
                known = ", ".join(sorted(props)) or "none"
                out.append(f"{where}: unknown field {k!r} (known here: {known})")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            out += _unknown_fields(item, schema["items"], f"{path}[{i}]")
    return out


def _metadata_problems(meta: Any) -> list[str]:
    if not isinstance(meta, dict):
        return ["metadata: required (an object with a name)"]
    out = [f"metadata.{k}: unknown field {k!r} (ObjectMeta has no such field)"
           for k in meta if k not in OBJECT_META_FIELDS]
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        out.append("metadata.name: required")
    elif len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        out.append(f"metadata.name: {name!r} is not a DNS subdomain (lower case a-z, 0-9, '-', "
                   "'.', at most 253 characters)")
    for key in ("labels", "annotations"):
        m = meta.get(key)
        if m is not None and (not isinstance(m, dict)
                              or not all(isinstance(v, str) for v in m.values())):
            out.append(f"metadata.{key}: expected a map of strings")
    return out


# --------------------------------------------------------------------------- CEL


def _k8s_find(s: celtypes.StringType, regex: celtypes.StringType) -> celtypes.StringType:
    """Kubernetes regex library: the first match of ``regex`` in ``s``, or ''."""
    m = re.search(str(regex), str(s))
    return celtypes.StringType(m.group(0) if m else "")


def _k8s_split(s: celtypes.StringType, sep: celtypes.StringType,
               limit: celtypes.IntType | None = None) -> celtypes.ListType:
    """Kubernetes strings extension: ``split(sep)`` / ``split(sep, n)``."""
    text, sep_s = str(s), str(sep)
    if limit is None or int(limit) < 0:
        parts = text.split(sep_s) if sep_s else list(text)
    elif int(limit) == 0:
        parts = []
    else:
        parts = text.split(sep_s, int(limit) - 1) if sep_s else list(text)
    return celtypes.ListType([celtypes.StringType(p) for p in parts])


_FUNCTIONS: dict[str, Any] = {"find": _k8s_find, "split": _k8s_split}


@functools.cache
def _program(rule: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(rule), functions=_FUNCTIONS)


def _cel_problems(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    out: list[str] = []
    for r in schema.get("x-kubernetes-validations") or []:
        rule = r["rule"]
        if "oldSelf" in rule:
            continue  # a transition rule: evaluated on update only
        where = path or "(top level)"
        try:
            result = _program(rule).evaluate({"self": json_to_cel(value)})
        except CELEvalError as err:
            out.append(f"{where}: CEL rule {rule!r} could not be evaluated: {err.args[0]}")
            continue
        if isinstance(result, CELEvalError):
            out.append(f"{where}: CEL rule {rule!r} could not be evaluated: {result.args[0]}")
        elif not bool(result):
            out.append(f"{where}: {r.get('message') or 'failed rule: ' + rule}")
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for k, v in value.items():
            sub = props.get(k) or (extra if isinstance(extra, dict) else None)
            if sub is not None:
                out += _cel_problems(v, sub, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            out += _cel_problems(item, schema["items"], f"{path}[{i}]")
    return out
