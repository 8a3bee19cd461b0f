"""aws.limits: the per-region pool keeps to its bound and hands errors back; the token
bucket paces to its rate (fake clock, no timing); the quotas name their sources."""
from __future__ import annotations

import threading
import time

import pytest

from pipeline.aws.limits import QUOTAS, RateLimiter, first_error, limits_for, per_region
from pipeline.core.config import LimitsSettings


def test_per_region_bounds_concurrency_keeps_order_and_returns_errors() -> None:
    lock, state = threading.Lock(), {"now": 0, "peak": 0}

    def work(region: str) -> str:
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.02)
        with lock:
            state["now"] -= 1
        if region == "r3":
            raise RuntimeError("r3 failed")
        return region.upper()

    regions = [f"r{i}" for i in range(10)]
    out = per_region(work, regions, workers=3)
    assert [o.region for o in out] == regions              # every region ran, in order
    assert 1 <= state["peak"] <= 3
    assert [o.value for o in out if o.error is None] == [r.upper() for r in regions if r != "r3"]
    assert str(first_error(out)) == "r3 failed"


def test_rate_limiter_paces_to_its_rate() -> None:
    now, slept = [0.0], []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    bucket = RateLimiter(10, burst=2, clock=lambda: now[0], sleep=sleep)
    waits = [bucket.acquire() for _ in range(12)]
    assert waits[:2] == [0.0, 0.0]                         # the burst
    assert sum(waits) == pytest.approx(1.0)                # then 10 more at 10/s
    assert all(w == pytest.approx(0.1) for w in waits[2:])
    with pytest.raises(ValueError):
        RateLimiter(0)


def test_documented_quotas_and_overrides() -> None:
    assert QUOTAS["copy_image_per_region"].value == 300
    assert QUOTAS["put_snapshot_block_per_snapshot"].value == 1000
    assert all(q.source for q in QUOTAS.values())
    assert not QUOTAS["import_image_per_region"].documented
    eff = limits_for(LimitsSettings(copy_image_per_region=50, region_workers=2))
    assert (eff.copy_image_per_region, eff.region_workers, eff.import_image_per_region) == (50, 2, 5)
