"""The one place that creates AWS clients.

Region, profile, endpoint URL (``aws.endpoint_url`` in the config, overridden by
``$AWS_ENDPOINT_URL``), botocore retry mode and attempts, and a user-agent suffix
naming this tool. Pass a :class:`Clients` to library functions; nothing else in the
project calls ``boto3.client``.
"""
from __future__ import annotations

from typing import Any

import boto3
import botocore.config
from botocore.exceptions import BotoCoreError, ClientError

from . import TOOL_NAME, __version__
from .config import AwsSettings
from .errors import AwsCallError

__all__ = ["Clients", "call", "error_code", "AwsCallError"]


class Clients:
    """A cache of boto3 clients for one account, built from :class:`AwsSettings`.

    ``client("ec2")`` is the configured region; ``client("ec2", region="eu-west-1")``
    another region with the same credentials, endpoint and retry policy.
    """

    def __init__(self, settings: AwsSettings, *, max_pool_connections: int = 32) -> None:
        self.settings = settings
        self._cache: dict[tuple[str, str], Any] = {}
        self._session = boto3.session.Session(region_name=settings.region,
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


def error_code(err: BaseException) -> str:
    """The AWS error code of a ``ClientError`` ('' otherwise)."""
    if isinstance(err, ClientError):
        return str(err.response.get("Error", {}).get("Code", ""))
    return ""


def call(fn: Any, *, what: str, **kwargs: Any) -> Any:
    """Call ``fn(**kwargs)``; turn botocore failures into :class:`AwsCallError`.

    ``what`` completes the sentence "failed while ...".
    """
    try:
        return fn(**kwargs)
    except ClientError as err:
        e = err.response.get("Error", {})
        raise AwsCallError(f"AWS refused {what}: {e.get('Code')}: {e.get('Message')}") from err
    except BotoCoreError as err:
        raise AwsCallError(f"AWS call failed {what}: {err}") from err
