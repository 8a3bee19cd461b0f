"""The one place that creates AWS clients.

Region, profile, endpoint URL (``aws.endpoint_url`` in the config, overridden by
``$AWS_ENDPOINT_URL``), botocore retry mode and attempts, and a user-agent suffix
naming this tool. Pass a :class:`Clients` to library functions; nothing else in the
project calls ``boto3.client``.
"""
from __future__ import annotations

import threading
from typing import Any, Iterator

import boto3
import botocore.config
import botocore.loaders
import botocore.session
from botocore.exceptions import BotoCoreError, ClientError

from pipeline import TOOL_NAME, __version__
from pipeline.core.config import AwsSettings, region_problem
from pipeline.core.errors import AwsCallError, AwsSetupError

__all__ = ["Clients", "call", "paged", "error_code", "AwsCallError", "diagnose",
           "writes_so_far"]


class Clients:
    """A cache of boto3 clients for one account, built from :class:`AwsSettings`.

    ``client("ec2")`` is the configured region; ``client("ec2", region="eu-west-1")``
    another region with the same credentials, endpoint and retry policy.
    """

    def __init__(self, settings: AwsSettings, *, max_pool_connections: int = 32) -> None:
        self.settings = settings
        self._cache: dict[tuple[str, str], Any] = {}
        self._session = boto3.session.Session(botocore_session=_botocore_session(settings),
                                              region_name=settings.region,
                                              profile_name=settings.profile)
        self._config = botocore.config.Config(
            retries={"mode": settings.retry_mode,
                     # total attempts, first try included (as AWS_MAX_ATTEMPTS)
                     "total_max_attempts": settings.max_attempts},
            user_agent_extra=f"{TOOL_NAME}/{__version__}",
            max_pool_connections=max_pool_connections,
        )

    @property
    def region(self) -> str:
        return self.settings.region

    @property
    def endpoint_url(self) -> str | None:
        return self.settings.endpoint_url

    def client(self, service: str, region: str | None = None) -> Any:
        """A cached client for ``service`` in ``region`` (default: the configured one)."""
        key = (service, region or self.settings.region)
        if key not in self._cache:
            problem = region_problem(key[1], "region" if region else
                                     f"region (from {self.settings.region_from})")
            if problem:
                raise AwsSetupError(f"{problem}; give a region botocore knows (--region or "
                                    "aws.region)")
            self._cache[key] = self._session.client(
                service, region_name=key[1], endpoint_url=self.settings.endpoint_url,
                config=self._config)
        return self._cache[key]

    def account_id(self) -> str:
        """The caller's account id (one STS call, cached)."""
        if ("_account", "") not in self._cache:
            ident = call(self.client("sts").get_caller_identity, what="reading the caller identity")
            self._cache[("_account", "")] = ident["Account"]
        return str(self._cache[("_account", "")])


class _SearchPaths(list):  # type: ignore[type-arg]
    """A loader's search paths; boto3 appends its own data folder for every new Session,
    which on a shared loader would grow the list without end."""

    def append(self, path: Any) -> None:
        if path not in self:
            super().append(path)


_LOADERS: dict[str | None, botocore.loaders.Loader] = {}
_LOADERS_LOCK = threading.Lock()


def _botocore_session(settings: AwsSettings) -> botocore.session.Session:
    """A fresh botocore session (own credentials, profile, region, events) whose data
    loader is shared per process, keyed by the effective ``data_path``.

    Loading and parsing a service model (EC2's is ~550 KB gzipped JSON) costs ~0.1 s of
    CPU per session; the loader only reads packaged, read-only JSON, so sharing it keeps
    every other behaviour of a new session. The profile is set first because
    ``data_path`` may come from the profile's config section.
    """
    session = botocore.session.get_session()
    if settings.profile is not None:
        session.set_config_variable("profile", settings.profile)
    data_path = session.get_config_variable("data_path")
    with _LOADERS_LOCK:
        loader = _LOADERS.get(data_path)
        if loader is None:
            loader = botocore.loaders.create_loader(data_path)
            loader._search_paths = _SearchPaths(loader.search_paths)  # noqa: SLF001
            _LOADERS[data_path] = loader
    session.register_component("data_loader", loader)
    session.register("after-call", _count_write)
    return session


# --------------------------------------------------------------------------- set-up problems

_READ_PREFIXES = ("Describe", "Get", "List", "Head", "Lookup", "Search", "Select", "Check",
                  "Validate", "Estimate", "Simulate")
_WRITES = [0]


def _count_write(http_response: Any = None, model: Any = None, **_: Any) -> None:
    """botocore ``after-call`` hook: count answered calls that may have changed something."""
    name = str(getattr(model, "name", ""))
    status = getattr(http_response, "status_code", 500)
    if status < 300 and not name.startswith(_READ_PREFIXES):
        _WRITES[0] += 1


def writes_so_far() -> int:
    """How many successful AWS calls of this process may have changed something."""
    return _WRITES[0]


_CREDENTIAL_CODES = {"InvalidClientTokenId", "UnrecognizedClientException", "AuthFailure",
                     "InvalidAccessKeyId", "SignatureDoesNotMatch", "IncompleteSignature",
                     "MissingAuthenticationToken", "InvalidSignatureException"}
_EXPIRED_CODES = {"ExpiredToken", "ExpiredTokenException", "RequestExpired", "TokenRefreshRequired"}
_DENIED_CODES = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation",
                 "UnauthorizedAccess", "Forbidden", "AuthorizationError"}
_LOGIN = "set AWS_PROFILE (or --profile / aws.profile) or AWS_ACCESS_KEY_ID and " \
         "AWS_SECRET_ACCESS_KEY, or run `aws sso login`"


def diagnose(err: BaseException) -> AwsSetupError | None:
    """The set-up problem behind a botocore exception, as one line with the fix; None when
    ``err`` is not about credentials, profile, region, endpoint or permissions."""
    from botocore import exceptions as bx

    name = type(err).__name__
    if isinstance(err, (bx.NoCredentialsError, bx.PartialCredentialsError)):
        return AwsSetupError(f"no AWS credentials ({err}): {_LOGIN}")
    if isinstance(err, bx.ProfileNotFound):
        profile = getattr(err, "kwargs", {}).get("profile", "?")
        return AwsSetupError(f"AWS profile {profile!r} not found in the AWS config files; check "
                             "--profile, aws.profile and $AWS_PROFILE (`aws configure "
                             "list-profiles` lists them)")
    if name in ("SSOTokenLoadError", "UnauthorizedSSOTokenError", "TokenRetrievalError",
                "SSOError", "PendingAuthorizationExpiredError"):
        return AwsSetupError(f"the AWS SSO session is missing or expired ({err}); run `aws sso "
                             "login` for the profile and retry")
    if isinstance(err, (bx.InvalidConfigError, bx.ConfigParseError, bx.ConfigNotFound,
                        bx.InvalidRegionError, bx.CredentialRetrievalError,
                        bx.InvalidProxiesConfigError)):
        return AwsSetupError(f"the AWS configuration cannot be used: {err}; fix ~/.aws/config "
                             "(or $AWS_CONFIG_FILE) or the profile's credential_process")
    if isinstance(err, (bx.EndpointConnectionError, bx.ConnectTimeoutError,
                        bx.ConnectionClosedError, bx.ProxyConnectionError)):
        url = getattr(err, "kwargs", {}).get("endpoint_url", "the endpoint")
        return AwsSetupError(f"the AWS endpoint {url} does not answer ({name}); check "
                             "aws.endpoint_url / $AWS_ENDPOINT_URL (is `invoke emulator` "
                             "running?), the region and the network")
    if isinstance(err, bx.ClientError):
        code = error_code(err)
        op = str(err.operation_name or "the call")
        if code in _EXPIRED_CODES:
            return AwsSetupError(f"the AWS credentials have expired ({code} on {op}); refresh "
                                 "them (`aws sso login`, or new session credentials)")
        if code in _CREDENTIAL_CODES:
            return AwsSetupError(f"AWS rejected the credentials ({code} on {op}); check the "
                                 f"access key or profile: {_LOGIN}")
        if code in _DENIED_CODES:
            return AwsSetupError(f"access denied on {op} ({code}): allow the caller {op}; "
                                 "`invoke iam-policy` prints every action the tool needs")
    return None


def error_code(err: BaseException) -> str:
    """The AWS error code of a ``ClientError`` or an :class:`AwsCallError` ('' otherwise)."""
    if isinstance(err, ClientError):
        return str(err.response.get("Error", {}).get("Code", ""))
    if isinstance(err, AwsCallError):
        return err.code
    return ""


def _operation_of(fn: Any) -> str:
    """``DescribeImages`` for ``ec2.describe_images`` (botocore's own name mapping)."""
    client, name = getattr(fn, "__self__", None), getattr(fn, "__name__", "")
    mapping = getattr(getattr(client, "meta", None), "method_to_api_mapping", {}) or {}
    return str(mapping.get(name, name))


def call(fn: Any, *, what: str, **kwargs: Any) -> Any:
    """Call ``fn(**kwargs)``; turn botocore failures into :class:`AwsCallError`.

    ``what`` completes the sentence "failed while ...".
    """
    try:
        return fn(**kwargs)
    except (ClientError, BotoCoreError) as err:
        raise _call_error(err, what, _operation_of(fn)) from err


def paged(client: Any, method: str, key: str, *, what: str, **kwargs: Any) -> Iterator[Any]:
    """Every item under ``key`` of every page of ``client.<method>(**kwargs)``, through
    botocore's paginator; failures become :class:`AwsCallError` as in :func:`call`."""
    pages = iter(client.get_paginator(method).paginate(**kwargs))
    while True:
        try:
            page = next(pages)
        except StopIteration:
            return
        except (ClientError, BotoCoreError) as err:
            raise _call_error(err, what, _operation_of(getattr(client, method, None))) from err
        yield from page.get(key) or []


def _call_error(err: ClientError | BotoCoreError, what: str, operation: str) -> AwsCallError:
    if isinstance(err, ClientError):
        e = err.response.get("Error", {})
        return AwsCallError(f"AWS refused {what}: {e.get('Code')}: {e.get('Message')}",
                            code=str(e.get("Code") or ""),
                            operation=str(err.operation_name or operation))
    return AwsCallError(f"AWS call failed {what}: {err}", operation=operation)
