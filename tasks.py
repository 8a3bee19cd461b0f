"""Invoke's entry point in the checkout: the tasks live in :mod:`pipeline.tasks`.

``invoke TASK`` behaves as ``eks-ami TASK`` on usage errors too: an unknown flag, a
missing value or a missing argument is one line on stderr (a JSON error document with
``--json``) and exit 2, where Invoke's own Program exits 1. Invoke parses the task's
flags after it has loaded this file, so wrapping ``Program.parse_tasks`` here is enough.
"""
from __future__ import annotations

import sys

from invoke.exceptions import ParseError
from invoke.program import Program

from pipeline.__main__ import _parse_error_text, _usage_error
from pipeline.tasks import ns  # noqa: F401

_invoke_parse_tasks = Program.parse_tasks


def _parse_tasks_exit_2(self: Program) -> None:
    try:
        _invoke_parse_tasks(self)
    except ParseError as err:
        _usage_error(_parse_error_text(err), list(getattr(self, "argv", None) or sys.argv))


if getattr(Program.parse_tasks, "__name__", "") != "_parse_tasks_exit_2":
    Program.parse_tasks = _parse_tasks_exit_2  # type: ignore[method-assign]
