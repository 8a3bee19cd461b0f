"""Plain boto3 clients on the emulator for the emulator's own tests (no product code)."""
from __future__ import annotations

from typing import Any, Callable

import boto3
import botocore.config
import pytest


@pytest.fixture
def boto(endpoint: str) -> Callable[..., Any]:
    """``boto("ec2", region="us-west-2")``: a plain boto3 client, one attempt per call."""

    def make(service: str, region: str = "us-east-1", **config: Any) -> Any:
        return boto3.client(
            service, endpoint_url=endpoint, region_name=region, aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=botocore.config.Config(**{"retries": {"total_max_attempts": 1}, **config}))

    return make
