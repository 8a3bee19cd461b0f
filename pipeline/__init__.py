"""eks-ami-pipeline: build, import, verify and publish EKS worker-node AMIs.

The library behind ``tasks.py``. Modules, one concern each:

- ``config``: the YAML configuration, validated into typed settings.
- ``aws``: the one factory that creates boto3 clients.
- ``errors``: the domain errors and the exit-code rule.
- ``progress``: the progress interface long operations report to.
- ``diskimage``: builds real disk images from directory trees (tests, emulator, demo).
- ``emulator``: the local AWS emulator (moto server plus extensions); product code
  never imports it.
"""
from __future__ import annotations

__version__ = "0.1.0"
TOOL_NAME = "eks-ami-pipeline"

__all__ = ["__version__", "TOOL_NAME"]
