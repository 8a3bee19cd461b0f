"""The local AWS emulator: moto's server, extended where moto lacks or bends an API.

Product code never imports this package; only the ``emulator`` and ``demo`` tasks and
the tests do. See ``DEVIATIONS.md`` here for where it knowingly differs from AWS.
"""
from __future__ import annotations

from .server import Emulator, serve

__all__ = ["Emulator", "serve"]
