"""What every task does around its one library call: errors, exit codes, output.

``tasks.py`` calls :func:`run_task` with a zero-argument function. The rule:

- success: exit 0; ``--json`` prints the returned record as one JSON document on
  stdout, otherwise its human summary;
- :class:`~pipeline.core.errors.PipelineError`: one line on stderr (one per problem for
  config and lint errors) and the error's exit code (1 failed, 2 bad input); with
  ``--json`` also one JSON document ``{"error": ..., "exit_code": ...}`` on stdout;
- Ctrl-C: exit 130 after the library's own clean-up ran;
- anything else: one line naming the bug and exit 1 (``PIPELINE_DEBUG=1`` shows the
  traceback).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, TextIO

from pipeline.core.errors import (EXIT_BAD_INPUT, ConfigError, LintError, PipelineError,
                                  exit_code_for)
from pipeline.core.progress import NO_PROGRESS, ConsoleProgress, Progress

__all__ = ["run_task", "to_jsonable", "progress_for", "setup_logging", "SCHEMA_VERSION",
           "write_error_document", "run_verify_image", "json_document"]

#: The version of every ``--json`` document's shape (``schema_version`` in each document;
#: the JSON Schemas in ``pipeline/data/schemas/`` describe version 1). It changes only when
#: a key is removed or changes meaning; new keys may appear without a change.
SCHEMA_VERSION = 1


class TaskExit(SystemExit):
    """Raised by :func:`run_task` to end the process with a code."""


def to_jsonable(value: Any) -> Any:
    """Records, paths, datetimes and enums to plain JSON types."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if hasattr(value, "to_dict"):
            return to_jsonable(value.to_dict())
        return {f.name.rstrip("_"): to_jsonable(getattr(value, f.name))
                for f in dataclasses.fields(value) if not f.name.startswith("_")}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes):
        return value.hex()
    return value


def progress_for(as_json: bool, stream: TextIO | None = None) -> Progress:
    """A terminal progress renderer, or nothing under ``--json``."""
    return NO_PROGRESS if as_json else ConsoleProgress(stream or sys.stderr)


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted: while a progress bar is
    live, rich swaps in a proxy that prints the line above the bar instead of through it."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def setup_logging(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose or os.environ.get("PIPELINE_DEBUG") else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", handlers=[_CurrentStderr()])
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "werkzeug", "dissect"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # A failed credential refresh is logged with its traceback, then raised: the raised
    # error becomes the one-line diagnosis (pipeline.aws.clients.diagnose).
    logging.getLogger("botocore.credentials").setLevel(logging.CRITICAL)


def _human(record: Any) -> str:
    if hasattr(record, "summary"):
        return str(record.summary())
    data = to_jsonable(record)
    if isinstance(data, dict):
        return "\n".join(f"{k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}"
                         for k, v in data.items())
    return str(data)


def json_document(record: Any) -> Any:
    """A task's record as its ``--json`` document: a mapping with ``schema_version``
    first (anything else is wrapped as ``{"result": ...}``)."""
    data = to_jsonable(record)
    if not isinstance(data, dict):
        data = {"result": data}
    return {"schema_version": SCHEMA_VERSION, **data}


def write_error_document(out: TextIO, message: str, exit_code: int, *,
                         kind: str = "error", details: Any = None) -> None:
    """The ``--json`` document of a failure: ``{"error", "exit_code", "kind", ...}``."""
    doc: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "error": message,
                           "exit_code": exit_code, "kind": kind}
    if details is not None:
        doc["details"] = to_jsonable(details)
    out.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    out.flush()


def run_verify_image(image: str, *, require: str = "any", as_json: bool = False,
                     cluster_version: str | None = None, strict: bool = False) -> Any:
    """``verify --image``: the task and the console command's fast path both call this."""

    def go() -> Any:
        from pipeline.image import verify as v

        return v.verify_image(image, require=require, cluster_version=cluster_version,
                              strict=strict)

    setup_logging()
    return run_task(go, as_json=as_json)


def _aws_writes() -> int:
    """AWS calls that may have changed something so far (0 before the AWS layer loads)."""
    clients = sys.modules.get("pipeline.aws.clients")
    return int(clients.writes_so_far()) if clients is not None else 0


def _setup_problem(exc: BaseException, writes_before: int) -> PipelineError | None:
    """An AWS set-up problem (credentials, profile, region, endpoint, access denied) behind
    ``exc``, as an exit-2 error, when nothing was changed in AWS since the task started.

    The diagnosis is :func:`pipeline.aws.clients.diagnose` (the one translation); this only
    finds the botocore exception in the cause chain. Loaded only on that error path, so
    ``verify --image`` never imports botocore.
    """
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if type(cause).__module__.split(".")[0] == "botocore":
            from pipeline.aws.clients import diagnose

            found = diagnose(cause)
            if found is not None and _aws_writes() == writes_before:
                return found
            return None
        cause = cause.__cause__ or cause.__context__
    return None


def run_task(fn: Callable[[], Any], *, as_json: bool = False,
             out: TextIO | None = None, err: TextIO | None = None) -> Any:
    """Run one library call under the exit-code rule; see the module docstring."""
    out = out or sys.stdout
    err = err or sys.stderr
    writes_before = _aws_writes()
    try:
        try:
            record = fn()
        except Exception as raw:  # noqa: BLE001 - re-raised unless it is an AWS set-up problem
            setup = _setup_problem(raw, writes_before)
            if setup is None:
                raise
            raise setup from raw
    except PipelineError as exc:
        lines = exc.problems if isinstance(exc, (ConfigError, LintError)) else [exc.message]
        for line in lines:
            err.write(f"error: {line}\n")
        code = exit_code_for(exc)
        if as_json:
            write_error_document(out, exc.message, code,
                                 kind="input" if code == EXIT_BAD_INPUT else "failed",
                                 details=exc.details)
        out.flush()
        raise TaskExit(code) from None
    except KeyboardInterrupt as exc:
        # What the run keeps on purpose (an upload left open for a resume, a detached
        # import task) is attached by the library as ``kept_for_resume``; say so last.
        kept = [str(k) for k in getattr(exc, "kept_for_resume", None) or []]
        if kept:
            for line in kept:
                err.write(f"interrupted: clean-up done; kept {line}\n")
        else:
            err.write("interrupted: clean-up done, nothing left half-created\n")
        if as_json:
            write_error_document(out, "interrupted", 130, kind="interrupted",
                                 details={"kept": kept} if kept else None)
        raise TaskExit(130) from None
    except Exception as exc:  # noqa: BLE001 - the one place that catches everything
        if os.environ.get("PIPELINE_DEBUG"):
            traceback.print_exc(file=err)
        err.write(f"error: unexpected {type(exc).__name__}: {exc} "
                  "(a bug: rerun with PIPELINE_DEBUG=1 and report the traceback)\n")
        code = exit_code_for(exc)
        if as_json:
            write_error_document(out, f"unexpected {type(exc).__name__}: {exc}", code, kind="bug")
        raise TaskExit(code) from None
    if record is not None:
        if as_json:
            out.write(json.dumps(json_document(record), indent=2, sort_keys=True) + "\n")
        else:
            out.write(_human(record) + "\n")
        out.flush()
    exit_code = getattr(record, "exit_code", 0)
    if exit_code:
        raise TaskExit(exit_code)
    return record
