"""Benchmark ``invoke bake`` against a bare ``packer build`` of the same template, same run.

Both build ``packer/eks-node`` from the emulator's seeded AL2023-like base AMI on the local
emulator (started in this process on a free port):

- **bare**: ``packer build -machine-readable`` with exactly the command line, staged
  template folder and var files ``invoke bake`` would use (planned once per run);
- **invoke bake**: ``invoke bake --config <cfg> --json`` as a fresh process, which adds
  Python start-up, base AMI resolution, ``packer version``, ``packer validate``, the live
  stream parser, the manifest, the offline check of the new AMI's snapshot through the
  EBS direct APIs and the lineage record.

Each round runs both, alternating which goes first, and starts every measured run on a
whole second (the wait is not timed) so that no two builds share the timestamp in the AMI
name. Prints per side the median wall time, the median CPU time (the process and all its
children: Python, every packer process), the ratio of the medians (goal <= 1.5x) and the
machine's load average before and after. ``--repo`` adds a third side, ``invoke bake``
from another checkout (e.g. ``git archive`` of an older commit), for before/after
figures in the same run. Not a test: it prints figures.

    .venv/bin/python benchmarks/bake_bench.py [--runs 5] [--repo /tmp/old-checkout]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.aws.clients import Clients  # noqa: E402
from pipeline.bake.build import plan_bake  # noqa: E402
from pipeline.core.config import load_settings  # noqa: E402
from pipeline_dev.emulator import Emulator  # noqa: E402
from pipeline.bake.packer import packer_env  # noqa: E402

INVOKE = str(Path(sys.executable).parent / "invoke")
PARAM = "/aws/service/eks/optimized-ami/1.31/amazon-linux-2023/x86_64/standard/recommended/image_id"

CONFIG = """
aws: {{region: us-east-1, endpoint_url: "{endpoint}", max_attempts: 2}}
build: {{state_dir: "{state}"}}
cluster: {{name: demo, kubernetes_version: "1.31"}}
images:
  - name: eks-node-al2023
    require: nodeadm
    bake:
      template: {template}
      base: {{ssm_parameter: {param}}}
"""


def _env() -> dict[str, str]:
    env = packer_env({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                      "AWS_DEFAULT_REGION": "us-east-1"})
    env.pop("AWS_ENDPOINT_URL", None)
    return env


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _on_next_second() -> None:
    time.sleep(1.0 - (time.time() % 1.0) + 0.01)


def _timed(cmd: list[str], **kw: object) -> tuple[float, float, subprocess.CompletedProcess]:
    _on_next_second()
    cpu0, t0 = _children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True,
                          **kw)  # type: ignore[call-overload]
    return time.perf_counter() - t0, _children_cpu() - cpu0, proc


def _bare(cfg: Path, work: Path, floor: dict[str, list[float]]) -> tuple[float, float]:
    """``packer build`` of exactly what ``invoke bake`` would run (planned, not timed).

    Also times, into ``floor``, two things ``invoke bake`` cannot skip: ``packer validate``
    of the same files and a Python start that imports what the task imports.
    """
    settings = load_settings(cfg)
    plan = plan_bake(settings, Clients(settings.aws), None, workdir=work)
    took, cpu, proc = _timed(plan.invocation.build_cmd, cwd=work)
    if proc.returncode != 0:
        raise SystemExit(f"bare packer build failed:\n{proc.stdout[-2000:]}")
    floor.setdefault("packer validate", []).append(
        _timed(plan.invocation.validate_cmd, cwd=work)[0])
    floor.setdefault("python start + imports + exit", []).append(_timed(
        [sys.executable, "-c", "import invoke.main, pipeline.core.config, pipeline.aws.clients, "
         "pipeline.bake.build, pipeline.lineage.store"], cwd=REPO)[0])   # verify loads during the build
    return took, cpu


def _invoke(cfg: Path, repo: Path) -> tuple[float, float, dict]:
    took, cpu, proc = _timed([INVOKE, "-r", str(repo), "bake", "--config", str(cfg), "--json"])
    if proc.returncode != 0:
        raise SystemExit(f"invoke bake ({repo}) failed ({proc.returncode}):\n{proc.stdout}\n"
                         f"{proc.stderr[-2000:]}")
    return took, cpu, json.loads(proc.stdout)


def _line(name: str, walls: list[float], cpus: list[float]) -> str:
    return (f"{name:22s}: median {statistics.median(walls):5.2f} s wall, "
            f"{statistics.median(cpus):5.2f} s CPU   runs "
            + ", ".join(f"{w:.2f}" for w in walls))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--repo", type=Path, default=None,
                    help="another checkout whose invoke bake runs as a third side")
    args = ap.parse_args()
    load_before = os.getloadavg()
    with Emulator("127.0.0.1", 0) as emu, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cfg = work / "pipeline.yaml"
        cfg.write_text(CONFIG.format(endpoint=emu.endpoint, state=work / "state",
                                     template=REPO / "packer" / "eks-node", param=PARAM))
        sides: dict[str, tuple[list[float], list[float]]] = {}
        last: dict = {}
        inner: list[float] = []
        phases: dict[str, list[float]] = {}
        floor: dict[str, list[float]] = {}
        for i in range(args.runs):
            order = ["bare", "invoke"] + (["other"] if args.repo else [])
            # Rotate the order so no side always runs first on a warmer emulator.
            order = order[i % len(order):] + order[:i % len(order)]
            for side in order:
                if side == "bare":
                    wall, cpu = _bare(cfg, work / f"bare-{i}", floor)
                elif side == "invoke":
                    wall, cpu, last = _invoke(cfg, REPO)
                    inner.append(float(last["seconds"]))
                    for k, x in last.get("phases", {}).items():
                        phases.setdefault(k, []).append(float(x))
                else:
                    wall, cpu, _ = _invoke(cfg, args.repo)
                walls, cpus = sides.setdefault(side, ([], []))
                walls.append(wall)
                cpus.append(cpu)
        b = statistics.median(sides["bare"][0])
        v = statistics.median(sides["invoke"][0])
        print(f"packer {last.get('packer_version')}, {args.runs} rounds, emulator {emu.endpoint}")
        print(_line("bare packer build", *sides["bare"]))
        print(_line("invoke bake", *sides["invoke"]))
        if args.repo:
            o = statistics.median(sides["other"][0])
            print(_line(f"invoke bake ({args.repo.name})", *sides["other"])
                  + f"   ratio {o / b:.2f}x")
        print(f"  inside bake() (its 'seconds'): median {statistics.median(inner):.2f} s; "
              f"process start, imports, config and exit: {v - statistics.median(inner):.2f} s; "
              f"verification {last['verification']['verdict']}/"
              f"{last['verification']['mechanism']}")
        if phases:
            steps = ["plan", "validate", "packer_build", "image", "verify", "record"]
            print("  invoke bake by step (medians, s): " + ", ".join(
                f"{k} {statistics.median(phases[k]):.3f}" for k in steps if k in phases)
                + f"; outside bake() {v - statistics.median(inner):.3f} s")
        print("  cannot be skipped (medians): " + ", ".join(
            f"{k} {statistics.median(x):.3f} s" for k, x in floor.items())
            + f"; 1.5x leaves {0.5 * b:.3f} s for everything around packer build")
        print(f"ratio invoke/bare     : {v / b:.2f}x (goal <= 1.5x)")
        print(f"fixed overhead        : {v - b:.2f} s per bake (start-up, base look-up, packer "
              "version/validate, manifest, offline check, lineage record); on the emulator a "
              "Packer build takes well under a second, on AWS it takes minutes")
        print(f"load average          : before {', '.join(f'{x:.1f}' for x in load_before)}; "
              f"after {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    os.environ.pop("AWS_ENDPOINT_URL", None)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(key, "testing")   # the emulator takes any credentials
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    main()
