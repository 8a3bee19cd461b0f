"""Fault profile: a chosen fraction of calls answer throttling or a server error.

Off by default. With :func:`configure` (``Emulator.set_faults``), each AWS call (not the
``/moto-api`` control paths) answers, with probability ``throttle``, the service's
throttling error, and with probability ``server_errors`` a 5xx -- in the service's own
wire format, so botocore parses and retries them as it does AWS's:

- EC2: ``RequestLimitExceeded`` "Request limit exceeded." (HTTP 503; AWSEC2/latest/APIReference/
  throttling.html) and ``InternalError`` / ``ServiceUnavailable`` (500 / 503;
  errors-overview.html "Server error codes");
- S3: ``SlowDown`` "Please reduce your request rate." (503) and ``InternalError`` (500)
  (AmazonS3/latest/API/ErrorResponses.html);
- IAM, STS (query XML) and SSM, KMS (JSON): ``Throttling`` / ``ThrottlingException`` "Rate
  exceeded" (400) and ``ServiceUnavailable`` / ``InternalFailure`` (503 / 500);
- EBS direct APIs: ``RequestThrottledException`` (400, Reason ``ACCOUNT_THROTTLED``) and
  ``InternalServerException`` (500) (botocore ebs model).

botocore's standard and legacy retry modes retry every one of these codes.

``iam_propagation_seconds``: for that long after CreateRole, VM Import treats the role as
not assumable by ``vmie.amazonaws.com`` (the synchronous "does not exist or does not have
sufficient permissions" error, which terraform-provider-aws retries while IAM propagates:
AWS-FACTS §1). The decision is random with an optional ``seed``.
"""
from __future__ import annotations

import json
import random
import re
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable

__all__ = ["FaultProfile", "configure", "current", "middleware", "role_propagating"]


@dataclass(frozen=True)
class FaultProfile:
    throttle: float = 0.0
    server_errors: float = 0.0
    iam_propagation_seconds: float = 0.0
    seed: int | None = None
    services: tuple[str, ...] = ()      # empty = every service


_state: dict[str, Any] = {"profile": FaultProfile(), "rng": random.Random(),
                          "counts": {"calls": 0, "throttled": 0, "server_errors": 0}}
_lock = threading.Lock()
_SCOPE = re.compile(r"Credential=[^/]+/[^/]+/([^/]+)/([^/]+)/aws4_request")


def configure(profile: FaultProfile | None = None, **fields: Any) -> FaultProfile:
    """Set the fault profile (``FaultProfile`` or its fields); returns it."""
    profile = profile or FaultProfile(**fields)
    for name in ("throttle", "server_errors"):
        if not 0.0 <= getattr(profile, name) <= 1.0:
            raise ValueError(f"{name} must be a fraction between 0 and 1")
    with _lock:
        _state["profile"] = profile
        _state["rng"] = random.Random(profile.seed)
        _state["counts"] = {"calls": 0, "throttled": 0, "server_errors": 0}
    return profile


def current() -> FaultProfile:
    return _state["profile"]  # type: ignore[no-any-return]


def counts() -> dict[str, int]:
    with _lock:
        return dict(_state["counts"])


def role_propagating(role: Any) -> bool:
    """Is ``role`` younger than the profile's IAM propagation time?"""
    import datetime as _dt

    seconds = current().iam_propagation_seconds
    created = getattr(role, "create_date", None)
    if seconds <= 0 or created is None:
        return False
    if created.tzinfo is None:
        created = created.replace(tzinfo=_dt.timezone.utc)
    return (_dt.datetime.now(_dt.timezone.utc) - created).total_seconds() < seconds


def _error(service: str, throttled: bool) -> tuple[str, list[tuple[str, str]], bytes]:
    rid = str(uuid.uuid4())
    if service == "ec2":
        code, status, msg = (("RequestLimitExceeded", "503 Service Unavailable",
                              "Request limit exceeded.") if throttled else
                             ("InternalError", "500 Internal Server Error",
                              "An internal error has occurred"))
        body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error><Code>{code}"
                f"</Code><Message>{msg}</Message></Error></Errors><RequestID>{rid}</RequestID>"
                "</Response>")
        return status, [("Content-Type", "text/xml")], body.encode()
    if service == "s3":
        code, status, msg = (("SlowDown", "503 Slow Down", "Please reduce your request rate.")
                             if throttled else ("InternalError", "500 Internal Server Error",
                                                "We encountered an internal error. Please try "
                                                "again."))
        body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>"
                f"{msg}</Message><RequestId>{rid}</RequestId></Error>")
        return status, [("Content-Type", "application/xml")], body.encode()
    if service in ("iam", "sts"):
        code, status, kind = (("Throttling", "400 Bad Request", "Sender") if throttled else
                              ("ServiceUnavailable", "503 Service Unavailable", "Receiver"))
        body = (f"<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code><Message>"
                f"Rate exceeded</Message></Error><RequestId>{rid}</RequestId></ErrorResponse>")
        return status, [("Content-Type", "text/xml")], body.encode()
    if service == "ebs":
        code, status = (("RequestThrottledException", "400 Bad Request") if throttled else
                        ("InternalServerException", "500 Internal Server Error"))
        doc = {"Message": "Rate exceeded" if throttled else "Internal error"}
        if throttled:
            doc["Reason"] = "ACCOUNT_THROTTLED"
        return status, [("Content-Type", "application/json"), ("x-amzn-ErrorType", code),
                        ("x-amzn-RequestId", rid)], json.dumps(doc).encode()
    code, status = (("ThrottlingException", "400 Bad Request") if throttled else
                    ("InternalFailure", "500 Internal Server Error"))
    return status, [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-RequestId", rid)], \
        json.dumps({"__type": code, "message": "Rate exceeded"}).encode()


def _pick(environ: dict[str, Any]) -> tuple[str, bool] | None:
    profile = current()
    if profile.throttle <= 0 and profile.server_errors <= 0:
        return None
    if str(environ.get("PATH_INFO", "")).startswith("/moto-api"):
        return None
    match = _SCOPE.search(str(environ.get("HTTP_AUTHORIZATION", "")))
    if not match:
        return None
    service = match.group(2)
    if profile.services and service not in profile.services:
        return None
    with _lock:
        _state["counts"]["calls"] += 1
        roll = _state["rng"].random()
        if roll < profile.throttle:
            _state["counts"]["throttled"] += 1
            return service, True
        if roll < profile.throttle + profile.server_errors:
            _state["counts"]["server_errors"] += 1
            return service, False
    return None


def middleware(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """Wrap moto's WSGI app: answer the chosen calls with a fault instead."""

    def faulty(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        fault = _pick(environ)
        if fault is None:
            return app(environ, start_response)
        stream = environ.get("wsgi.input")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if stream is not None and length:
            stream.read(length)              # drain the body: keep-alive stays usable
        status, headers, body = _error(*fault)
        start_response(status, [*headers, ("Content-Length", str(len(body)))])
        return [body]

    return faulty
