"""The local AWS emulator: moto's server, extended where moto lacks or bends an API.

Product code never imports this package; only the ``emulator`` and ``demo`` tasks and
the tests do. See ``DEVIATIONS.md`` here for where it knowingly differs from AWS.

Public API:

- :class:`Emulator` ``(host, port=0, *, import_seconds=2.0, timing=None)``: ``start()`` →
  endpoint, ``reset()`` (wipe, then re-seed; also on any ``POST /moto-api/reset``),
  ``stop()``, ``endpoint``, ``seed_image(kind, *, region="us-east-1", name=None,
  arch="x86_64")`` → AMI id (``kind`` al2023 | al2 | bare; owned by 123456789012),
  ``set_timing("instant" | "realistic", **seconds)``, ``set_faults(throttle, server_errors,
  *, iam_propagation_seconds, seed, services)``, context manager. ``timing`` defaults to
  ``$EMULATOR_TIMING`` or ``instant``; ``$EMULATOR_THROTTLE``, ``$EMULATOR_SERVER_ERRORS``
  and ``$EMULATOR_IAM_PROPAGATION`` switch faults on at start.
- :func:`serve`: the ``invoke emulator`` foreground loop.
- Modules: ``blockstore`` (``STORE``, ``Block``, ``BLOCK_SIZE``: every snapshot's and
  volume's bytes), ``ebs`` (EBS direct APIs), ``amis`` (AMIs/snapshots/volumes/instances
  carrying data), ``launch_templates``, ``vmimport``, ``seeds`` (``SEED_REGIONS``,
  ``K8S_VERSIONS``, ``ssm_name``, ``ami_name``), ``image_references``, ``ami_features``
  (Allowed AMIs, deregistration protection, ancestry, LastLaunchedTime), ``kms_keys``,
  ``s3_checksums``, ``s3_multipart``, ``timing`` (profiles), ``faults`` (fault profile).
"""
from __future__ import annotations

from pipeline_dev.emulator.server import Emulator, serve

__all__ = ["Emulator", "serve"]
