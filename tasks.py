"""Invoke's entry point in the checkout: the tasks live in :mod:`pipeline.tasks`."""
from pipeline.tasks import ns  # noqa: F401
