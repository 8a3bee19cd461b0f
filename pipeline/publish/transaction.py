"""A publication as one transaction: steps in a fixed order, each with its undo registered
before it runs, all undone (newest first) when a step fails or the run is interrupted.

Publish, promote and rollback use it the same way::

    with Transaction(f"publishing {ami} to {template}") as tx:
        tx.step("new template version")
        tx.on_undo("delete version 7", undo_fn)   # idempotent; registered *before* the call
        create_version(...)
        ...
        tx.commit()

An undo is registered before its step because a call can be applied by AWS and still
fail on our side (a lost answer, Ctrl-C while waiting): the undo then finds out what
is there and removes only what this run made. Every undo is idempotent and re-reads AWS.

On failure the original error is re-raised with one line appended naming the step that
failed, what was rolled back and what could *not* be undone (so nothing is left
unreported). An error that is not one of ours (``OSError`` while renaming a manifest)
becomes :class:`~pipeline.core.errors.OperationFailed`. ``KeyboardInterrupt`` is
re-raised after the undo, which is logged as a warning.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from types import TracebackType
from typing import Callable

from pipeline.core.errors import OperationFailed, PipelineError
from pipeline.core.progress import NO_PROGRESS, Progress

__all__ = ["Transaction", "RolledBack"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RolledBack:
    """What an aborted transaction undid and what it could not."""

    step: str
    undone: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def line(self) -> str:
        text = f"failed at step '{self.step}'"
        text += f"; rolled back: {', '.join(self.undone)}" if self.undone else \
            "; nothing had changed"
        if self.failed:
            text += f"; NOT undone (check by hand): {'; '.join(self.failed)}"
        return text


class Transaction:
    """See the module docstring."""

    def __init__(self, what: str, progress: Progress = NO_PROGRESS) -> None:
        self.what = what
        self.progress = progress
        self.current = "checks"
        self.steps: list[str] = []
        self._undos: list[tuple[str, Callable[[], str | None]]] = []
        self._committed = False
        self.rolled_back: RolledBack | None = None

    def step(self, name: str) -> None:
        """Start the next step (for the failure message and the log)."""
        self.current = name
        self.steps.append(name)
        log.debug("%s: %s", self.what, name)
        self.progress.status(name)

    def on_undo(self, what: str, fn: Callable[[], str | None]) -> None:
        """Register the undo of the step about to run. ``fn`` returns what it did (or
        None when there was nothing to undo) and raises when it could not."""
        self._undos.append((what, fn))

    def commit(self) -> None:
        self._committed = True
        self._undos.clear()

    def __enter__(self) -> "Transaction":
        return self

    def _undo(self) -> RolledBack:
        result = RolledBack(self.current)
        for what, fn in reversed(self._undos):
            try:
                done = fn()
            except Exception as err:  # noqa: BLE001 - every undo is tried and reported
                msg = getattr(err, "message", None) or f"{type(err).__name__}: {err}"
                result.failed.append(f"{what}: {msg}")
                log.warning("%s: could not %s: %s", self.what, what, msg)
                continue
            if done:
                result.undone.append(done)
        self._undos.clear()
        return result

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            if not self._committed:
                self.commit()
            return None
        self.rolled_back = rb = self._undo()
        note = f"{self.what} {rb.line()}"
        if isinstance(exc, PipelineError):
            exc.message = f"{exc.message}; {note}"
            exc.args = (exc.message,)
            return None
        if isinstance(exc, Exception):
            cause = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            filename = getattr(exc, "filename", None)
            raise OperationFailed(f"{cause}{f': {filename}' if filename else ''}; {note}",
                                  details={"rolled_back": rb.undone,
                                           "not_undone": rb.failed}) from exc
        log.warning("interrupted: %s", note)
        return None
