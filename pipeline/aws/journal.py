"""The creation journal: every resource a run creates, recorded in AWS the moment its id
is known, so that a run killed on a machine that no longer exists can be cleaned up by
the next one (``invoke reap``).

Where: one SSM String parameter per run in the home region,
``<ssm_prefix>/_journal/<image-name>/<build-id>`` (beside the build records under
``_builds``; the same IAM statement covers it; three levels below the prefix, so it is
never read as a channel pointer). Value, compact JSON::

    {"v": 1, "build": "b-...", "image": "node", "state": "open", "started": "...Z",
     "updated": "...Z", "r": [["instance", "i-...", "us-east-1"], ...], "keep": [...]}

``state``: ``open`` while the run lives (a journal left ``open`` is a dead run once it
is older than the grace period), ``failed`` after a failed or interrupted run whose
own clean-up could not remove everything, ``succeeded`` when the run finished (``keep``
then lists its products: AMIs and snapshots, which reap never removes). ``reap``
removes what remains of the entries (through :mod:`pipeline.aws.cleanup`) and then the
journal itself.

Entries are ``(kind, id, region)`` with the kinds of :data:`pipeline.aws.cleanup.KINDS`;
S3 ids are ``s3://bucket/key`` and uploads ``s3://bucket/key#upload-id``. A value that
outgrows the 4 KB of a Standard parameter is written in the Advanced tier.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable

from botocore.exceptions import BotoCoreError, ClientError

from pipeline.aws.cleanup import Owner, Resource
from pipeline.aws.clients import Clients, error_code
from pipeline.core.clock import utc_now
from pipeline.core.errors import AwsCallError

__all__ = ["JOURNAL_TREE", "Journal", "JournalRecord", "journal_name", "load_journals",
           "memory_journal"]

log = logging.getLogger(__name__)

JOURNAL_TREE = "_journal"
_STANDARD_LIMIT = 4096


def journal_name(ssm_prefix: str, image_name: str, build_id: str) -> str:
    """``<ssm_prefix>/_journal/<image-name>/<build-id>``."""
    return f"{ssm_prefix.rstrip('/')}/{JOURNAL_TREE}/{image_name}/{build_id}"


def _now() -> str:
    return utc_now().strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str) -> _dt.datetime:
    return _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.timezone.utc)


@dataclass(frozen=True, slots=True)
class JournalRecord:
    """One journal as read back from SSM."""

    name: str
    build_id: str
    image_name: str
    state: str
    started: _dt.datetime
    updated: _dt.datetime
    resources: tuple[Resource, ...]
    keep: tuple[Resource, ...] = ()

    def owner(self) -> Owner:
        return Owner(self.build_id, frozenset((r.kind, r.id) for r in self.resources))

    def leftovers(self) -> tuple[Resource, ...]:
        """The entries that are not products to keep."""
        kept = {(r.kind, r.id) for r in self.keep}
        return tuple(r for r in self.resources if (r.kind, r.id) not in kept)


@dataclass(slots=True)
class Journal:
    """The live journal of one run (thread-safe: Packer's stream thread records too).

    :meth:`open` writes it before anything is created; :meth:`record` rewrites it at
    once for each new id; a write that fails is logged and retried with the next one
    (the resources still carry the build-id tag where AWS allows).
    """

    clients: Clients | None
    name: str
    build_id: str
    image_name: str
    region: str
    state: str = "open"
    started: str = field(default_factory=_now)
    entries: list[Resource] = field(default_factory=list)
    keep: list[Resource] = field(default_factory=list)
    dirty: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, clients: Clients, ssm_prefix: str, image_name: str, build_id: str, *,
             region: str | None = None) -> "Journal":
        """Create the run's journal in SSM (raises :class:`AwsCallError` if it cannot be
        written: a run must not create what it could not record)."""
        j = cls(clients, journal_name(ssm_prefix, image_name, build_id), build_id, image_name,
                region or clients.region)
        j._write(strict=True)
        return j

    # ------------------------------------------------------------------ recording

    def record(self, kind: str, rid: str, region: str | None = None) -> None:
        """Record one created resource (no-op when already recorded or ``rid`` empty)."""
        if not rid:
            return
        res = Resource(kind, rid, region or self.region)
        with self._lock:
            if res in self.entries:
                return
            self.entries.append(res)
            self._write()

    def record_many(self, items: Iterable[tuple[str, str, str | None]]) -> None:
        with self._lock:
            new = [Resource(k, i, r or self.region) for k, i, r in items if i]
            new = [r for r in dict.fromkeys(new) if r not in self.entries]
            if not new:
                return
            self.entries += new
            self._write()

    def owner(self) -> Owner:
        with self._lock:
            return Owner(self.build_id, frozenset((r.kind, r.id) for r in self.entries))

    def resources(self, *kinds: str) -> list[Resource]:
        with self._lock:
            return [r for r in self.entries if not kinds or r.kind in kinds]

    def close(self, state: str, keep: Iterable[tuple[str, str, str | None]] = ()) -> None:
        """Mark the run ``succeeded`` (with its products in ``keep``) or ``failed``."""
        with self._lock:
            self.state = state
            self.keep = [Resource(k, i, r or self.region) for k, i, r in keep if i]
            self._write()

    # ------------------------------------------------------------------ SSM

    def value(self) -> str:
        doc: dict[str, Any] = {"v": 1, "build": self.build_id, "image": self.image_name,
                               "state": self.state, "started": self.started, "updated": _now(),
                               "r": [[r.kind, r.id, r.region] for r in self.entries]}
        if self.keep:
            doc["keep"] = [[r.kind, r.id, r.region] for r in self.keep]
        return json.dumps(doc, separators=(",", ":"))

    def _write(self, strict: bool = False) -> None:
        if self.clients is None:
            return
        value = self.value()
        kw: dict[str, Any] = {"Name": self.name, "Value": value, "Type": "String",
                              "Overwrite": True}
        if len(value.encode()) > _STANDARD_LIMIT:
            kw["Tier"] = "Advanced"
        try:
            self.clients.client("ssm", region=self.region).put_parameter(**kw)
            self.dirty = False
        except (ClientError, BotoCoreError) as err:
            self.dirty = True
            msg = (f"could not write the creation journal {self.name}: "
                   f"{error_code(err) or type(err).__name__}: {err}")
            if strict:
                raise AwsCallError(msg + "; check ssm:PutParameter on the prefix") from err
            log.warning("%s (the next record retries)", msg)


def memory_journal(build_id: str, image_name: str = "-", region: str = "") -> Journal:
    """A journal kept in memory only (nothing written to AWS): for callers that prove
    ownership of what they just created without a journal in SSM."""
    return Journal(None, "", build_id, image_name, region)


def _record_from(name: str, value: str) -> JournalRecord | None:
    try:
        doc = json.loads(value)
        res = tuple(Resource(str(k), str(i), str(r)) for k, i, r in doc.get("r", []))
        keep = tuple(Resource(str(k), str(i), str(r)) for k, i, r in doc.get("keep", []))
        return JournalRecord(name=name, build_id=str(doc["build"]),
                             image_name=str(doc.get("image", "")),
                             state=str(doc.get("state", "open")),
                             started=_parse_time(doc["started"]),
                             updated=_parse_time(doc.get("updated", doc["started"])),
                             resources=res, keep=keep)
    except (ValueError, KeyError, TypeError) as err:
        log.warning("journal %s is unreadable (%s); leaving it", name, err)
        return None


def load_journals(clients: Clients, ssm_prefix: str, *,
                  region: str | None = None) -> list[JournalRecord]:
    """Every journal under ``<ssm_prefix>/_journal`` (paged), oldest first."""
    ssm = clients.client("ssm", region=region)
    root = f"{ssm_prefix.rstrip('/')}/{JOURNAL_TREE}"
    out: list[JournalRecord] = []
    try:
        for page in ssm.get_paginator("get_parameters_by_path").paginate(Path=root,
                                                                         Recursive=True):
            for p in page.get("Parameters", []):
                rec = _record_from(p["Name"], p.get("Value", ""))
                if rec is not None:
                    out.append(rec)
    except ClientError as err:
        raise AwsCallError(f"AWS refused listing the creation journals under {root}: "
                           f"{error_code(err)}") from err
    return sorted(out, key=lambda r: (r.started, r.build_id))
