"""The local AWS emulator: moto's server, extended where moto lacks or bends an API.

Product code never imports this package; only the ``emulator`` and ``demo`` tasks and
the tests do. See ``DEVIATIONS.md`` here for where it knowingly differs from AWS.

Public API:

- :class:`Emulator` ``(host, port=0, *, import_seconds=2.0)``: ``start()`` → endpoint,
  ``reset()`` (wipe, then re-seed; also on any ``POST /moto-api/reset``), ``stop()``,
  ``endpoint``, ``seed_image(kind, *, region="us-east-1", name=None, arch="x86_64")`` →
  AMI id (``kind`` al2023 | al2 | bare; owned by 123456789012), context manager.
- :func:`serve`: the ``invoke emulator`` foreground loop.
- Modules: ``blockstore`` (``STORE``, ``Block``, ``BLOCK_SIZE``: every snapshot's and
  volume's bytes), ``ebs`` (EBS direct APIs), ``amis`` (AMIs/snapshots/volumes/instances
  carrying data), ``launch_templates``, ``vmimport``, ``seeds`` (``SEED_REGIONS``,
  ``K8S_VERSIONS``, ``ssm_name``, ``ami_name``), ``image_references``.
"""
from __future__ import annotations

from pipeline_dev.emulator.server import Emulator, serve

__all__ = ["Emulator", "serve"]
