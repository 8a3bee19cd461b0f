"""The AWS limits this tool plans its concurrency around, with their sources, in one place.

Each :class:`Quota` names its value, what it counts, where AWS documents it, and the
``limits:`` key that overrides it (an account can have raised quotas). Three of them
bound what one run may start at once:

- **CopyImage per destination Region**: 300 concurrent AMI copy operations
  (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/how-ami-copy-works.html,
  "Limitations": "Destination Regions are limited to 300 concurrent AMI copy
  operations"). Shared by every process of the account, so a matrix of N images
  copying into one Region uses N of them.
- **ImportImage tasks per Region**: AWS documents no number (AWS-FACTS §1: "The
  sources give no concurrent-task quota: keep it configurable"); the default here is a
  conservative 5, override it with ``limits.import_image_per_region``.
- **PutSnapshotBlock per snapshot**: 1,000 requests per second per snapshot, and 1,000
  per second per account (Service Quotas L-1774F84A / L-AFAE1BE8, "Amazon EBS endpoints
  and quotas", https://docs.aws.amazon.com/general/latest/gr/ebs-service.html; the EBS
  guide's performance page works the same figure through: 100 ms per request x 100
  connections = 1,000 requests/s, about 500 MB/s,
  https://docs.aws.amazon.com/ebs/latest/userguide/ebsapi-performance.html).

And one rate the projection uses: EC2 throttles per API, per account and Region, with
a token bucket; a non-mutating action such as DescribeImages/DescribeHosts has a bucket
of 100 tokens refilled at 20 per second
(https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html). Throttled
calls answer ``RequestLimitExceeded``; botocore's standard retry mode backs off on it,
and :func:`backoff_call` does the same for a quota error botocore does not retry.

:func:`per_region` runs one function per Region in a bounded thread pool (distribution,
the publication gate and the promotion gate call it); :func:`region_slot` holds one of a
quota's slots for the duration of a call, process-wide (CopyImage per destination);
:func:`snapshot_block_rate` paces PutSnapshotBlock per snapshot at the documented rate
(the EBS block writer has no settings, so ``limits.put_snapshot_block_per_snapshot``
only changes :func:`limits_for`, which the scale benchmark's projection reads). The
ImportImage figure is not enforced in a process (a run starts one import task); keep the
rebuild matrix's ``max-parallel`` at or under it when the images are imported.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence, TypeVar

from botocore.exceptions import ClientError

from pipeline.aws.clients import error_code
from pipeline.core.config import LimitsSettings
from pipeline.core.errors import AwsCallError

#: What EC2 answers when an account is over a resource quota such as concurrent AMI copies.
QUOTA_CODES = frozenset({"ResourceLimitExceeded"})

__all__ = ["QUOTA_CODES", "Quota", "QUOTAS", "Limits", "limits_for", "per_region", "Outcome", "region_slot",
           "backoff_call", "first_error", "RateLimiter", "snapshot_block_rate",
           "DEFAULT_REGION_WORKERS"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Threads one run uses for per-Region work (each is one HTTP connection at a time).
DEFAULT_REGION_WORKERS = 8


@dataclass(frozen=True, slots=True)
class Quota:
    """One documented AWS limit."""

    key: str                # the limits: key that overrides it
    api: str
    value: float
    unit: str
    scope: str
    source: str
    documented: bool = True


QUOTAS: dict[str, Quota] = {q.key: q for q in (
    Quota("copy_image_per_region", "CopyImage", 300, "concurrent copies",
          "per account and destination Region",
          "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/how-ami-copy-works.html"),
    Quota("import_image_per_region", "ImportImage", 5, "concurrent import tasks",
          "per account and Region (no documented figure; conservative default)",
          "AWS-FACTS.md §1 (no documented concurrent-task quota)", documented=False),
    Quota("put_snapshot_block_per_snapshot", "PutSnapshotBlock", 1000, "requests per second",
          "per snapshot (and 1,000/s per account)",
          "https://docs.aws.amazon.com/general/latest/gr/ebs-service.html (L-1774F84A)"),
    Quota("ec2_non_mutating_refill", "DescribeImages", 20, "requests per second (bucket 100)",
          "per API, account and Region",
          "https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html"),
)}


@dataclass(frozen=True, slots=True)
class Limits:
    """The effective limits of a run: the documented values unless ``limits:`` says otherwise."""

    copy_image_per_region: int
    import_image_per_region: int
    put_snapshot_block_per_snapshot: int
    region_workers: int


def limits_for(overrides: LimitsSettings | None = None) -> Limits:
    o = overrides or LimitsSettings()

    def pick(key: str, value: int | None) -> int:
        return int(value) if value is not None else int(QUOTAS[key].value)

    return Limits(
        copy_image_per_region=pick("copy_image_per_region", o.copy_image_per_region),
        import_image_per_region=pick("import_image_per_region", o.import_image_per_region),
        put_snapshot_block_per_snapshot=pick("put_snapshot_block_per_snapshot",
                                             o.put_snapshot_block_per_snapshot),
        region_workers=o.region_workers or DEFAULT_REGION_WORKERS)


# --------------------------------------------------------------------------- per-region pool


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one Region's call returned or raised."""

    region: str
    value: object = None
    error: BaseException | None = None


def per_region(fn: Callable[[str], T], regions: Sequence[str], *,
               workers: int = DEFAULT_REGION_WORKERS) -> list[Outcome]:
    """``fn(region)`` for every Region, at most ``workers`` at once, in ``regions`` order.

    Every call runs to its end even when another fails (the caller registers the undo of
    each success before it raises the first error); one Region runs inline, no thread.
    """
    regions = list(regions)
    if not regions:
        return []

    def one(region: str) -> Outcome:
        try:
            return Outcome(region, fn(region))
        except BaseException as err:  # noqa: BLE001 - handed back to the caller to raise
            return Outcome(region, error=err)

    if len(regions) == 1 or workers <= 1:
        return [one(r) for r in regions]
    with ThreadPoolExecutor(max_workers=min(workers, len(regions)),
                            thread_name_prefix="region") as pool:
        return list(pool.map(one, regions))


def first_error(outcomes: Sequence[Outcome]) -> BaseException | None:
    return next((o.error for o in outcomes if o.error is not None), None)


# --------------------------------------------------------------------------- slots


_SLOTS: dict[tuple[str, str], threading.BoundedSemaphore] = {}
_SLOTS_LOCK = threading.Lock()


@contextmanager
def region_slot(api: str, region: str, limit: int) -> Iterator[None]:
    """Hold one of ``limit`` process-wide slots for ``api`` in ``region``."""
    key = (api, region)
    with _SLOTS_LOCK:
        sem = _SLOTS.get(key)
        if sem is None:
            sem = _SLOTS[key] = threading.BoundedSemaphore(max(1, limit))
    with sem:
        yield


class RateLimiter:
    """A token bucket: at most ``rate`` acquisitions per second on average, bursts of
    up to ``burst`` (default ``rate``). Thread-safe; ``clock``/``sleep`` injectable."""

    def __init__(self, rate: float, burst: float | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate, self.burst = float(rate), float(burst if burst is not None else rate)
        self._clock, self._sleep = clock, sleep
        self._tokens, self._at = self.burst, clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping until there is one; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            self._tokens -= 1.0
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait


_RATES: dict[tuple[str, str], RateLimiter] = {}


def snapshot_block_rate(snapshot_id: str) -> RateLimiter:
    """The process-wide PutSnapshotBlock pacer of one snapshot (1,000/s, documented)."""
    key = ("PutSnapshotBlock", snapshot_id)
    with _SLOTS_LOCK:
        limiter = _RATES.get(key)
        if limiter is None:
            limiter = _RATES[key] = RateLimiter(
                QUOTAS["put_snapshot_block_per_snapshot"].value)
        return limiter


def backoff_call(fn: Callable[[], T], *, codes: frozenset[str], what: str, attempts: int = 6,
                 base: float = 1.0, cap: float = 30.0) -> T:
    """``fn()``, retried with full-jitter exponential backoff while AWS answers one of
    ``codes`` (a quota such as ``ResourceLimitExceeded`` that botocore does not retry),
    raised as a ``ClientError`` or as the cause of an :class:`AwsCallError`."""
    for attempt in range(attempts):
        try:
            return fn()
        except (ClientError, AwsCallError) as err:
            cause = err if isinstance(err, ClientError) else err.__cause__
            code = error_code(cause) if isinstance(cause, BaseException) else ""
            if code not in codes or attempt == attempts - 1:
                raise
            delay = random.uniform(0, min(cap, base * 2 ** attempt))
            log.info("%s: %s; retrying in %.1fs", what, code, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")
