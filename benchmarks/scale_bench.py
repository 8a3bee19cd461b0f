"""Scale benchmark (issue 19): 50 images x 10 Regions on the emulator.

Phases, each timed, every AWS call recorded (operation, Region, start, end) through
botocore's ``before-call``/``after-call`` events in every process:

1. **plan**: ``rebuild --plan`` over all images (one process, as the workflow's plan job);
2. **matrix**: the images the plan selects, rebuilt in a simulated GitHub Actions matrix
   of ``--parallel`` worker processes, each running what ``invoke rebuild --image NAME``
   runs (the per-image AWS lock, a snapshot import of a real GPT/ext4 AL2023-like disk
   from the disk-image factory, offline verification, distribution to every Region,
   publish to the image's launch template and its ``candidate`` pointers);
3. **promote**: ``promote --image NAME --to stable`` for each rebuilt image, in worker
   processes whose clock is shifted past the 24 h soak (``$PIPELINE_CLOCK_OFFSET``):
   the gate reads the pointer history, every Region's copy, then moves 10 pointers.

Which images change: all images get a previous successful build record first (not
measured); ``--changed`` of them record another source checksum, so the plan selects
exactly those. The rest share the unchanged source file.

It prints the wall time per phase, AWS calls per rebuilt image and per Region, the peak
concurrency per API across all processes, and a projection for real AWS from the
documented quotas in :mod:`pipeline.aws.limits` and the stated per-step durations.

    .venv/bin/python benchmarks/scale_bench.py [--images 50] [--regions 10] [--changed 10]
                                              [--parallel 4] [--timing realistic] [--json]

``--timing`` picks the emulator's timing profile (:mod:`pipeline_dev.emulator.timing`):
``realistic`` (the default) keeps AMIs, copies and snapshots ``pending`` for a scaled-down
second or so, so the waits and polls run as they do on AWS; ``instant`` makes every
resource ready at once. Either way the figures are the tool's own overhead, call counts
and concurrency, not AWS's latencies; the projection supplies those.
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emulator_process import free_port, start_emulator  # noqa: E402

MiB = 1024 * 1024
REGIONS = ["us-east-1", "us-east-2", "us-west-1", "us-west-2", "eu-west-1", "eu-west-2",
           "eu-central-1", "ap-northeast-1", "ap-southeast-1", "ap-southeast-2"]


# --------------------------------------------------------------------------- worker side


def _instrument(clients: Any, log: list[dict[str, Any]]) -> None:
    """Record every API call of ``clients`` (operation, Region, start, end, error)."""
    events = clients._session.events  # noqa: SLF001 - benchmark-only instrumentation

    def before(model: Any, context: dict[str, Any], **_: Any) -> None:
        context["_bench_t0"] = time.time()

    def after(model: Any, context: dict[str, Any], **kw: Any) -> None:
        http = kw.get("http_response")
        log.append({"op": model.name, "service": model.service_model.service_name,
                    "region": context.get("client_region"), "t0": context.get("_bench_t0"),
                    "t1": time.time(),
                    "status": getattr(http, "status_code", None)})

    events.register("before-call.*.*", before)
    events.register("after-call.*.*", after)


def worker(kind: str, image: str | None, config: str, out: str) -> int:
    from pipeline.aws.clients import Clients
    from pipeline.core.config import load_settings

    settings = load_settings(config)
    clients = Clients(settings.aws)
    calls: list[dict[str, Any]] = []
    _instrument(clients, calls)
    started = time.time()
    code = 0
    detail: Any = None
    if kind == "plan":
        from pipeline.lifecycle.plan import plan

        result = plan(settings, clients)
        detail = result.matrix
    elif kind == "rebuild":
        from pipeline.lifecycle.rebuild import rebuild

        result = rebuild(settings, clients, image=image)
        code = result.exit_code
        detail = [{"status": i.status, "error": i.error} for i in result.images]
    else:
        from pipeline.lifecycle.rollout import promote

        res = promote(settings, clients, str(image), "stable")
        code = res.exit_code
        detail = res.decision.line()
    Path(out).write_text(json.dumps({"kind": kind, "image": image, "t0": started,
                                     "t1": time.time(), "exit": code, "detail": detail,
                                     "calls": calls}))
    return code


# --------------------------------------------------------------------------- driver side


def _config(work: Path, endpoint: str, images: int, regions: list[str], source: Path) -> Path:
    import yaml

    example = yaml.safe_load((ROOT / "pipeline.example.yaml").read_text())
    raw = {
        "aws": {"region": regions[0], "endpoint_url": endpoint, "max_attempts": 3},
        "build": {"ssm_prefix": "/scale", "state_dir": str(work / "build")},
        "cluster": example["cluster"],
        "images": [{"name": f"img{i:02d}", "require": "nodeadm", "regions": regions,
                    "import": {"source": str(source), "method": "snapshot"},
                    "channels": [{"name": "candidate"},
                                 {"name": "stable", "soak": "24h", "auto_promote": True}]}
                   for i in range(images)],
        "launch_templates": [{"name": f"lt-img{i:02d}", "image": f"img{i:02d}",
                              "channel": "candidate", "instance_profile": "eks-node-profile"}
                             for i in range(images)],
        "karpenter": {"version": "none"},
    }
    path = work / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _seed_previous_builds(config: Path, names: list[str], changed: set[str], sha: str) -> None:
    """Every image had a successful build 1 day ago; the changed ones from other bytes."""
    import datetime as dt

    from pipeline.aws.clients import Clients
    from pipeline.core.config import load_settings
    from pipeline.core.records import BuildRecord
    from pipeline.lineage import store

    settings = load_settings(config)
    clients = Clients(settings.aws)
    when = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    for i, name in enumerate(names):
        store.record_build(settings, clients, BuildRecord(
            build_id=f"b-{when:%Y%m%d%H%M%S}-{i:06x}", image_name=name, method="snapshot",
            status="succeeded", started_at=when.isoformat(), finished_at=when.isoformat(),
            source_sha256=("0" * 64) if name in changed else sha))


def _spawn(kind: str, image: str | None, config: Path, out: Path,
           env: dict[str, str]) -> subprocess.Popen[bytes]:
    args = [sys.executable, __file__, "--worker", kind, "--config", str(config), "--out", str(out)]
    if image:
        args += ["--image", image]
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _run_matrix(kind: str, names: list[str], config: Path, work: Path, parallel: int,
                env: dict[str, str]) -> tuple[float, list[dict[str, Any]]]:
    """Run one worker per image, ``parallel`` at a time (GitHub's max-parallel)."""
    pending, running, results = list(names), [], []
    started = time.time()
    while pending or running:
        while pending and len(running) < parallel:
            name = pending.pop(0)
            out = work / f"{kind}-{name}.json"
            running.append((name, out, _spawn(kind, name, config, out, env)))
        time.sleep(0.05)
        for item in list(running):
            name, out, proc = item
            if proc.poll() is not None:
                running.remove(item)
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                if not out.exists():
                    raise SystemExit(f"{kind} {name}: worker died (exit {proc.returncode}): "
                                     f"{err[-2000:]}")
                results.append(json.loads(out.read_text()))
    return time.time() - started, results


def _peak(calls: list[dict[str, Any]]) -> dict[str, int]:
    """Peak number of calls of each API in flight at once, across all processes."""
    edges: dict[str, list[tuple[float, int]]] = collections.defaultdict(list)
    for c in calls:
        if c["t0"] is None:
            continue
        edges[c["op"]] += [(c["t0"], 1), (c["t1"], -1)]
    out = {}
    for op, ev in edges.items():
        level = peak = 0
        for _, d in sorted(ev, key=lambda e: (e[0], e[1])):
            level += d
            peak = max(peak, level)
        out[op] = peak
    return out


def _projection(args: argparse.Namespace, n_changed: int, per_image: dict[str, float],
                regions: int) -> dict[str, Any]:
    from pipeline.aws.limits import QUOTAS

    copy_quota = QUOTAS["copy_image_per_region"].value
    describe_rate = QUOTAS["ec2_non_mutating_refill"].value
    psb = QUOTAS["put_snapshot_block_per_snapshot"].value
    waves = math.ceil(n_changed / max(1, args.parallel)) if n_changed else 0
    blocks = args.image_data_gib * 1024 * 2                   # 512 KiB blocks
    upload_min = blocks / psb / 60 / 1.0                       # at the per-snapshot cap
    in_flight_copies = min(args.parallel, n_changed)
    copy_waves = math.ceil(in_flight_copies / copy_quota) if in_flight_copies else 0
    per_job = args.bake_minutes + upload_min + copy_waves * args.copy_minutes + 1.0
    polls_per_s = in_flight_copies / 15.0                      # gate/distribute poll every 15 s
    serial = n_changed * per_job
    return {
        "assumptions": {
            "bake_minutes": args.bake_minutes, "copy_minutes": args.copy_minutes,
            "image_data_gib": args.image_data_gib, "max_parallel": args.parallel,
            "source": "bake 15-30 min per image (issue 19); copy time is an assumption; "
                      "quotas from pipeline.aws.limits"},
        "matrix_waves": waves,
        "per_job_minutes": round(per_job, 1),
        "snapshot_upload_minutes_at_quota": round(upload_min, 2),
        "concurrent_copies_per_region": in_flight_copies,
        "copy_quota_per_region": copy_quota,
        "describe_images_per_second_per_region": round(polls_per_s, 2),
        "describe_images_refill_per_second": describe_rate,
        "api_calls_per_region_per_image": round(per_image.get("per_region", 0.0), 1),
        "wall_minutes_matrix": round(waves * per_job, 1),
        "wall_minutes_one_job_serial": round(serial, 1),
        "max_parallel_before_copy_quota": int(copy_quota),
        "regions": regions,
        "all_images_changed": {
            str(p): {"waves": math.ceil(args.images / p),
                     "wall_minutes": round(math.ceil(args.images / p) * (
                         per_job + (math.ceil(p / copy_quota) - 1) * args.copy_minutes), 1)}
            for p in (1, 4, 10, 25, 50) if p <= args.images},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--regions", type=int, default=10)
    ap.add_argument("--changed", type=int, default=10)
    ap.add_argument("--parallel", type=int, default=4, help="matrix max-parallel")
    ap.add_argument("--bake-minutes", type=float, default=20.0)
    ap.add_argument("--copy-minutes", type=float, default=15.0)
    ap.add_argument("--image-data-gib", type=float, default=4.0)
    ap.add_argument("--timing", choices=["instant", "realistic"], default="realistic",
                    help="emulator timing profile (default realistic)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", choices=["plan", "rebuild", "promote"])
    ap.add_argument("--image")
    ap.add_argument("--config")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.image, args.config, args.out)

    from pipeline_dev.diskimage import ImageSpec, build_image, root_tree

    regions = REGIONS[:args.regions]
    names = [f"img{i:02d}" for i in range(args.images)]
    changed = set(names[:args.changed])
    work = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    port = free_port()
    emulator = start_emulator(port, timing=args.timing)
    try:
        source = work / "node.raw"
        build_image(root_tree(work / "tree", "al2023"), source, ImageSpec(table="gpt", size=64 * MiB))
        sha = hashlib.sha256(source.read_bytes()).hexdigest()
        endpoint = f"http://127.0.0.1:{port}"
        config = _config(work, endpoint, args.images, regions, source)
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": regions[0], "PIPELINE_CONFIG": str(config)}
        env.pop("AWS_PROFILE", None)
        env.pop(OFFSET := "PIPELINE_CLOCK_OFFSET", None)
        os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                               "AWS_DEFAULT_REGION")})
        _seed_previous_builds(config, names, changed, sha)

        t_plan, plan_res = _run_matrix("plan", ["all"], config, work, 1, env)
        selected = [m["image"] for m in plan_res[0]["detail"]["include"]]
        t_matrix, built = _run_matrix("rebuild", selected, config, work, args.parallel, env)
        failed = [b["image"] for b in built if b["exit"]]
        ok = [b["image"] for b in built if not b["exit"]]
        t_promote, promoted = _run_matrix("promote", ok, config, work, args.parallel,
                                          {**env, OFFSET: str(25 * 3600)})
    finally:
        emulator.terminate()
        emulator.wait(timeout=30)

    phases = {"plan": plan_res, "matrix": built, "promote": promoted}
    all_calls = [c for res in phases.values() for r in res for c in r["calls"]]
    n = max(1, len(ok))
    by_phase = {p: sum(len(r["calls"]) for r in res) for p, res in phases.items()}
    by_region = collections.Counter(c["region"] for c in all_calls)
    per_image_ops = collections.Counter(c["op"] for r in built + promoted for c in r["calls"])
    build_region = collections.Counter(c["region"] for r in built + promoted for c in r["calls"])
    per_image = {"total": (by_phase["matrix"] + by_phase["promote"]) / n,
                 "per_region": sum(build_region.values()) / n / len(regions)}
    report = {
        "profile": args.timing,
        "profile_seconds": _profile_seconds(args.timing),
        "images": args.images, "regions": len(regions), "changed": args.changed,
        "parallel": args.parallel,
        "plan_selected": selected, "rebuilt": ok, "failed": failed,
        "wall_seconds": {"plan": round(t_plan, 2), "matrix": round(t_matrix, 2),
                         "promote": round(t_promote, 2),
                         "total": round(t_plan + t_matrix + t_promote, 2)},
        "job_seconds": {"rebuild_median": _median([b["t1"] - b["t0"] for b in built]),
                        "promote_median": _median([p["t1"] - p["t0"] for p in promoted])},
        "calls": {"total": len(all_calls), "by_phase": by_phase,
                  "plan_per_configured_image": round(by_phase["plan"] / args.images, 1),
                  "per_rebuilt_image": round(per_image["total"], 1),
                  "per_rebuilt_image_by_api": {k: round(v / n, 1)
                                               for k, v in per_image_ops.most_common()},
                  "by_region": dict(sorted(by_region.items(), key=lambda kv: str(kv[0]))),
                  "per_region_per_rebuilt_image": round(per_image["per_region"], 1)},
        "peak_concurrency": dict(sorted(_peak(all_calls).items(), key=lambda kv: -kv[1])),
        "promotions": [p["detail"] for p in promoted][:3],
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "projection_real_aws": _projection(args, len(ok), per_image, len(regions)),
    }
    shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report)
    return 1 if failed or len(ok) != args.changed else 0


def _profile_seconds(name: str) -> dict[str, float]:
    """The transitional-state durations of the emulator's profile ``name``."""
    import dataclasses

    from pipeline_dev.emulator.timing import PROFILES

    return {k: v for k, v in dataclasses.asdict(PROFILES[name]).items()
            if k not in ("name", "import_seconds")}


def _median(values: list[float]) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    mid = len(s) // 2
    return round(s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2, 2)


def _print(r: dict[str, Any]) -> None:
    w = r["wall_seconds"]
    print(f"scale bench: {r['images']} images x {r['regions']} regions, {r['changed']} changed, "
          f"matrix max-parallel {r['parallel']}; emulator timing profile: {r['profile']} ("
          + ", ".join(f"{k} {v}" for k, v in r["profile_seconds"].items()) + ")")
    print(f"plan selected {len(r['plan_selected'])}: {', '.join(r['plan_selected'])}")
    print(f"wall time: plan {w['plan']} s, matrix {w['matrix']} s, promote {w['promote']} s, "
          f"total {w['total']} s (median job: rebuild {r['job_seconds']['rebuild_median']} s, "
          f"promote {r['job_seconds']['promote_median']} s)")
    c = r["calls"]
    print(f"AWS calls: {c['total']} ({', '.join(f'{k} {v}' for k, v in c['by_phase'].items())}); "
          f"plan {c['plan_per_configured_image']} per configured image; "
          f"{c['per_rebuilt_image']} per rebuilt image (rebuild+distribute+publish+promote), "
          f"{c['per_region_per_rebuilt_image']} per region per rebuilt image")
    print("  per rebuilt image by API: " + ", ".join(
        f"{k} {v}" for k, v in list(c["per_rebuilt_image_by_api"].items())[:14]))
    print("  by region: " + ", ".join(f"{k} {v}" for k, v in c["by_region"].items()))
    print("peak concurrency per API: " + ", ".join(
        f"{k} {v}" for k, v in list(r["peak_concurrency"].items())[:14]))
    for line in r["promotions"]:
        print(f"  {line}")
    p = r["projection_real_aws"]
    a = p["assumptions"]
    print(f"projection for real AWS (bake {a['bake_minutes']} min, copy {a['copy_minutes']} min, "
          f"{a['image_data_gib']} GiB image data, max-parallel {a['max_parallel']}): "
          f"{p['matrix_waves']} matrix wave(s) x {p['per_job_minutes']} min = "
          f"{p['wall_minutes_matrix']} min (one job in series: "
          f"{p['wall_minutes_one_job_serial']} min); {p['concurrent_copies_per_region']} "
          f"concurrent copies per region of the {p['copy_quota_per_region']:.0f} allowed; "
          f"DescribeImages {p['describe_images_per_second_per_region']}/s per region of "
          f"{p['describe_images_refill_per_second']:.0f}/s refill; snapshot upload "
          f"{p['snapshot_upload_minutes_at_quota']} min at 1,000 PutSnapshotBlock/s")
    print(f"  all {r['images']} images changed, by max-parallel: " + ", ".join(
        f"{k}: {v['waves']} wave(s) {v['wall_minutes']} min"
        for k, v in p["all_images_changed"].items()))
    print(f"load average at the end: {r['load_average']} (a shared machine: wall times vary)")


if __name__ == "__main__":
    sys.exit(main())
