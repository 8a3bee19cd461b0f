"""Start-up of ``verify --image``: the console command and ``invoke`` against a minimal
dissect-based checker process, same run, same 8 GiB sparse image (issue 20, item 3).

Contenders, each a fresh process, in rotated order, median of ``--runs``:

- ``python -c pass``: the interpreter's own floor on this machine (site-packages included);
- ``checker``: a minimal dissect checker (``CHECKER`` below): open the raw disk, take the
  first Linux partition, open ext4, stat ``/etc/eks/bootstrap.sh`` and ``/usr/bin/nodeadm``;
  it checks much less than ``verify`` (no os-release, no units, no kubelet, no report);
- ``eks-ami verify --image`` (the console command: its fast path loads no Invoke, no
  boto3/botocore, no rich);
- ``invoke verify --image`` in the checkout (Invoke's Program, then the same call).

Prints the medians, the ratios to the checker, the load average, and which heavy modules
the console command's process imported. Not a test: it prints figures.

    .venv/bin/python benchmarks/startup_bench.py [--image RAW] [--runs 7] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
BIN = Path(sys.executable).parent
GiB = 1024 ** 3

CHECKER = r"""
import sys
from dissect.volume.disk import Disk
from dissect.extfs import ExtFS
with open(sys.argv[1], "rb") as fh:
    disk = Disk(fh)
    part = max(disk.partitions, key=lambda p: p.size)
    fs = ExtFS(part.open())
    found = []
    for path in ("/etc/eks/bootstrap.sh", "/usr/bin/nodeadm"):
        try:
            inode = fs.get(path)
            found.append(f"{path} {oct(inode.mode)}")
        except Exception:
            pass
    print("ok" if found else "missing", *found)
"""


def _image(work: Path) -> Path:
    from pipeline_dev.diskimage import ImageSpec, build_image, root_tree

    raw = work / "startup-8g.raw"
    if not raw.exists():
        t0 = time.perf_counter()
        build_image(root_tree(work / "tree", "al2023"), raw, ImageSpec("ext4", "gpt", "raw",
                                                                       8 * GiB))
        print(f"built {raw} (8 GiB virtual, {raw.stat().st_blocks * 512 // 2**20} MiB "
              f"allocated) in {time.perf_counter() - t0:.1f} s")
    return raw


def _time(cmd: list[str], cwd: Path) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PIPELINE_"))}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-500:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path, help="an existing raw ext4 image (default: build one)")
    ap.add_argument("--workdir", type=Path, help="where to build the image (default: a temp dir)")
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="startup-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    image = args.image or _image(work)
    py = sys.executable
    contenders = {
        "python -c pass": ([py, "-c", "pass"], work),
        "checker": ([py, "-c", CHECKER, str(image)], work),
        "eks-ami verify": ([str(BIN / "eks-ami"), "verify", "--image", str(image)], work),
        "invoke verify": ([str(BIN / "invoke"), "verify", "--image", str(image)], REPO),
    }
    for cmd, cwd in contenders.values():          # warm the page cache and .pyc files
        _time(cmd, cwd)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for i in range(args.runs):
        for name in names[i % len(names):] + names[:i % len(names)]:
            times[name].append(_time(*contenders[name]))
    med = {name: statistics.median(v) for name, v in times.items()}
    load = os.getloadavg()
    print(f"{image} ({image.stat().st_size / GiB:.0f} GiB virtual); median of {args.runs}, "
          f"load average {load[0]:.2f} {load[1]:.2f} on {os.cpu_count()} CPUs")
    for name, value in med.items():
        ratio = f"  {value / med['checker']:.2f}x the checker" if name != "checker" else ""
        spread = f"{min(times[name]):.3f}-{max(times[name]):.3f}"
        print(f"  {name:16} {value:.3f} s  ({spread}){ratio}")
    probe = ("import sys, runpy; sys.argv = ['eks-ami', 'verify', '--image', sys.argv[1]]\n"
             "try:\n    runpy.run_module('pipeline', run_name='__main__')\n"
             "except SystemExit: pass\n"
             "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
             "{'boto3', 'botocore', 'invoke', 'rich', 'moto', 'yaml', 'jsonschema'})\n"
             "print('eks-ami verify --image imported:', heavy or 'none of boto3, botocore, "
             "invoke, rich, moto, yaml, jsonschema', file=sys.stderr)")
    subprocess.run([py, "-c", probe, str(image)], stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
