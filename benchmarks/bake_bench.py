"""Benchmark ``invoke bake`` against a bare ``packer build`` of the same template, same run.

Both build ``packer/eks-node`` from the emulator's seeded AL2023-like base AMI on the local
emulator (started in this process on a free port):

- **bare**: ``packer build -machine-readable`` with exactly the command line, staged
  template folder and var files ``invoke bake`` would use (planned once per run);
- **invoke bake**: ``invoke bake --config <cfg> --json`` as a fresh process, which adds
  Python start-up, base AMI resolution, ``packer version``, ``packer validate``, the live
  stream parser, the manifest, the offline check of the new AMI's snapshot through the
  EBS direct APIs and the lineage record.

Prints the median of each and the ratio (goal <= 1.5x). Not a test: it prints figures.

    .venv/bin/python benchmarks/bake_bench.py [--runs 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.aws import Clients  # noqa: E402
from pipeline.bake import plan_bake  # noqa: E402
from pipeline.config import load_settings  # noqa: E402
from pipeline.emulator import Emulator  # noqa: E402
from pipeline.packer import packer_env  # noqa: E402

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


def _bare(cfg: Path, work: Path) -> float:
    settings = load_settings(cfg)
    plan = plan_bake(settings, Clients(settings.aws), None, workdir=work)
    t0 = time.perf_counter()
    proc = subprocess.run(plan.invocation.build_cmd, cwd=work, env=_env(), capture_output=True,
                          text=True)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bare packer build failed:\n{proc.stdout[-2000:]}")
    return took


def _invoke(cfg: Path) -> tuple[float, dict]:
    t0 = time.perf_counter()
    proc = subprocess.run([INVOKE, "-r", str(REPO), "bake", "--config", str(cfg), "--json"],
                          env=_env(), capture_output=True, text=True)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"invoke bake failed ({proc.returncode}):\n{proc.stdout}\n"
                         f"{proc.stderr[-2000:]}")
    return took, json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with Emulator("127.0.0.1", 0) as emu, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cfg = work / "pipeline.yaml"
        cfg.write_text(CONFIG.format(endpoint=emu.endpoint, state=work / "state",
                                     template=REPO / "packer" / "eks-node", param=PARAM))
        bare, inv = [], []
        last: dict = {}
        for i in range(args.runs):
            # Alternate the order so neither side always runs on a warmer emulator.
            if i % 2 == 0:
                bare.append(_bare(cfg, work / f"bare-{i}"))
                t, last = _invoke(cfg)
                inv.append(t)
            else:
                t, last = _invoke(cfg)
                inv.append(t)
                bare.append(_bare(cfg, work / f"bare-{i}"))
        b, v = statistics.median(bare), statistics.median(inv)
        print(f"packer {last.get('packer_version')}, {args.runs} runs each, emulator "
              f"{emu.endpoint}")
        print(f"bare packer build : median {b:6.2f} s  runs {', '.join(f'{x:.2f}' for x in bare)}")
        print(f"invoke bake       : median {v:6.2f} s  runs {', '.join(f'{x:.2f}' for x in inv)}")
        print(f"  (invoke bake's own 'seconds': {last.get('seconds')}, verification "
              f"{last['verification']['verdict']}/{last['verification']['mechanism']}, "
              f"{last['verification'].get('api_calls')} GetSnapshotBlock calls)")
        print(f"ratio invoke/bare : {v / b:.2f}x (goal <= 1.5x)")
        print(f"fixed overhead    : {v - b:.2f} s per bake (start-up, base look-up, packer "
              "version/validate, manifest, offline check, lineage record); on the emulator a "
              "Packer build takes well under a second, on AWS it takes minutes")
        print(f"load average      : {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
              f"on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    os.environ.pop("AWS_ENDPOINT_URL", None)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(key, "testing")   # the emulator takes any credentials
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    main()
