"""Benchmark ``invoke verify`` on an 8 GiB sparse image in every container format.

Prints, per format: the wall time of ``invoke verify --image`` as a fresh process
(Python start-up included; target <= 1 s) and the bytes it read from the file
(target <= 32 MiB); ``debugfs -R "stat /etc/eks/bootstrap.sh"`` on the raw ext4 case
and the ratio; and ``verify --ami`` against the local emulator (GetSnapshotBlock calls,
target <= 200) for the same disk written as an 8 GiB EBS snapshot and for the seeded
EKS AMIs. Not a test: it prints figures.

    .venv/bin/python benchmarks/verify_bench.py [--workdir DIR [--reuse]] [--filler-mib 300]
                                                [--runs 3] [--no-ami] [--before OLD_TREE]

``--before OLD_TREE`` (a ``git archive`` of an older commit) runs both checkouts on the
same images, alternating, and prints the after/before wall-time ratio per format.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline_dev.diskimage import _QEMU_ARGS, ImageSpec, build_image, root_tree  # noqa: E402

GiB = 1024 ** 3
MiB = 1024 ** 2
INVOKE = str(Path(sys.executable).parent / "invoke")


def _existing(work: Path) -> dict[str, Path] | None:
    names = {"raw": "disk-8g.raw", **{f: f"disk-8g.{f}" for f in _QEMU_ARGS},
             "ova": "disk-8g.ova", "vmdk-stream (xfs on lvm)": "disk-8g-xfs-lvm.vmdk"}
    found = {k: work / v for k, v in names.items()}
    return found if all(p.exists() for p in found.values()) else None


def _build(work: Path, filler_mib: int) -> dict[str, Path]:
    tree = root_tree(work / "tree", "al2", filler_mib=filler_mib)
    raw = work / "disk-8g.raw"
    t0 = time.perf_counter()
    build_image(tree, raw, ImageSpec("ext4", "gpt", "raw", 8 * GiB))
    print(f"built 8 GiB ext4/GPT raw with {filler_mib} MiB of files in "
          f"{time.perf_counter() - t0:.1f} s")
    out = {"raw": raw}
    for fmt, args in _QEMU_ARGS.items():
        dst = work / f"disk-8g.{fmt}"
        subprocess.run(["qemu-img", "convert", "-f", "raw", *args, str(raw), str(dst)],
                       check=True)
        out[fmt] = dst
    ova = work / "disk-8g.ova"
    ovf = work / "disk-8g.ovf"
    ovf.write_text('<?xml version="1.0"?><Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1">'
                   '<References><File href="disk-8g-disk1.vmdk" id="file1"/></References>'
                   "</Envelope>\n")
    with tarfile.open(ova, "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.add(ovf, arcname=ovf.name)
        tar.add(out["vmdk-stream"], arcname="disk-8g-disk1.vmdk")
    out["ova"] = ova
    xfs = work / "disk-8g-xfs-lvm.vmdk"
    build_image(tree, xfs, ImageSpec("xfs", "lvm", "vmdk-stream", 8 * GiB))
    out["vmdk-stream (xfs on lvm)"] = xfs
    return out


def _child_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _verify_once(path: Path, tree: Path | None = None) -> tuple[float, float, dict[str, object]]:
    """One fresh ``invoke verify --image --json`` process of this checkout or of ``tree``."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    c0 = _child_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run([INVOKE, "verify", "--image", str(path), "--json"],
                          cwd=tree or REPO, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise SystemExit(f"verify failed on {path}: {proc.stderr.strip()}")
    return wall, _child_cpu() - c0, json.loads(proc.stdout)


def _compare(images: dict[str, Path], before: Path, runs: int) -> None:
    """Same-run peer: this checkout vs ``before`` (an older tree), rotated, medians."""
    print(f"\nthis checkout vs --before {before} (median of {runs} rounds, order rotated; "
          f"load average {os.getloadavg()[0]:.1f})")
    print(f"{'format':26} {'before s':>9} {'after s':>8} {'ratio':>6} {'before MiB':>10} "
          f"{'after MiB':>9}  target (ratio <= 1.5, <= 2 MiB read)")
    ratios = []
    for fmt, path in images.items():
        walls: dict[str, list[float]] = {"before": [], "after": []}
        read: dict[str, int] = {}
        for i in range(runs):
            order = [("before", before), ("after", None)]
            for label, tree in order if i % 2 == 0 else order[::-1]:
                wall, _cpu, doc = _verify_once(path, tree)
                walls[label].append(wall)
                read[label] = int(doc["bytes_read"])  # type: ignore[call-overload]
        b, a = statistics.median(walls["before"]), statistics.median(walls["after"])
        ratios.append(a / b)
        ok = "ok" if a / b <= 1.5 and read["after"] <= 2 * MiB else "MISSED"
        print(f"{fmt:26} {b:>9.3f} {a:>8.3f} {a / b:>6.2f} {read['before'] / MiB:>10.2f} "
              f"{read['after'] / MiB:>9.2f}  {ok}")
    print(f"median ratio after/before: {statistics.median(ratios):.2f}")


def _run_verify(path: Path, runs: int) -> tuple[float, float, dict[str, object]]:
    times, cpus = [], []
    doc: dict[str, object] = {}
    for _ in range(runs):
        c0 = _child_cpu()
        t0 = time.perf_counter()
        proc = subprocess.run([INVOKE, "verify", "--image", str(path), "--json"], cwd=REPO,
                              capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        cpus.append(_child_cpu() - c0)
        if proc.returncode not in (0, 1):
            raise SystemExit(f"verify failed on {path}: {proc.stderr.strip()}")
        doc = json.loads(proc.stdout)
    return statistics.median(times), statistics.median(cpus), doc


def _debugfs(raw: Path, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(["debugfs", "-R", "stat /etc/eks/bootstrap.sh", f"{raw}?offset={MiB}"],
                       check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _ami_bench(raw: Path, filler_mib: int) -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.pop("AWS_PROFILE", None)
    from pipeline.aws.clients import Clients
    from pipeline.core.config import AwsSettings
    from pipeline_dev.emulator import Emulator
    from pipeline.image.diskread import open_disk
    from pipeline.aws.ebs import register_root_image, write_snapshot
    from pipeline.lineage.verify_ami import verify_ami

    with Emulator("127.0.0.1", 0) as emu:
        clients = Clients(AwsSettings(region="us-east-1", endpoint_url=emu.endpoint))
        t0 = time.perf_counter()
        # The project's own snapshot writer (what `import-image --method snapshot` uses).
        with open_disk(raw) as disk, ExitStack() as undo:
            snap = write_snapshot(clients, disk, tags={}, client_token="verify-bench-8g",
                                  undo=undo)
            ami = register_root_image(clients.client("ec2"), snap.snapshot_id, name="bench-8g",
                                      size_gib=snap.volume_size_gib, architecture="x86_64",
                                      boot_mode="legacy-bios", tags={})
            undo.pop_all()
        written = snap.blocks_sent
        print(f"\n--ami against the emulator (8 GiB snapshot, {written} written blocks, "
              f"uploaded in {time.perf_counter() - t0:.1f} s)")
        print(f"{'AMI':40} {'verdict':22} {'GetSnapshotBlock':>16} {'target':>6} "
              f"{'MiB fetched':>11} {'seconds':>8}")
        ssm = clients.client("ssm")
        cases = [(f"8 GiB bench disk ({filler_mib} MiB of files)", ami)]
        for label, name in (
                ("seeded EKS AL2023 1.31", "/aws/service/eks/optimized-ami/1.31/amazon-linux-2023/"
                                           "x86_64/standard/recommended/image_id"),
                ("seeded EKS AL2 1.31", "/aws/service/eks/optimized-ami/1.31/amazon-linux-2/"
                                        "recommended/image_id")):
            cases.append((label, ssm.get_parameter(Name=name)["Parameter"]["Value"]))
        for label, image_id in cases:
            rep = verify_ami(clients, image_id)
            ok = "ok" if (rep.api_calls or 0) <= 200 else "MISSED"
            print(f"{label:40} {rep.verdict + '/' + str(rep.mechanism):22} "
                  f"{rep.api_calls:>16} {ok:>6} {rep.bytes_read / MiB:>11.1f} {rep.seconds:>8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--filler-mib", type=int, default=300)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-ami", action="store_true")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse the images already in --workdir instead of building them")
    ap.add_argument("--before", type=Path, default=None,
                    help="an older checkout (e.g. from `git archive`): time both, interleaved, "
                         "and print after/before ratios instead of the absolute table")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="verify-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        images = (_existing(work) if args.reuse else None) or _build(work, args.filler_mib)
        if args.before is not None:
            _compare(images, args.before.resolve(), args.runs)
            return
        print(f"\ninvoke verify --image (median of {args.runs} fresh processes; "
              f"targets: <= 1 s, <= 32 MiB read; load average {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} CPUs)")
        print("  wall = process wall time incl. Python + invoke start-up; cpu = its user+sys "
              "time; in-proc = verify_image itself")
        print(f"{'format':26} {'file MiB':>9} {'verdict':22} {'wall s':>7} {'cpu s':>6} "
              f"{'in-proc s':>9} {'MiB read':>9}  targets")
        walls = {}
        for fmt, path in images.items():
            wall, cpu, doc = _run_verify(path, args.runs)
            walls[fmt] = wall
            read = int(doc["bytes_read"])  # type: ignore[call-overload]
            ok = "ok" if wall <= 1.0 and read <= 32 * MiB else "MISSED"
            verdict = f"{doc['verdict']}/{doc['mechanism']}"
            print(f"{fmt:26} {path.stat().st_blocks * 512 / MiB:>9.1f} {verdict:22} {wall:>7.3f} "
                  f"{cpu:>6.3f} {float(str(doc['seconds'])):>9.3f} {read / MiB:>9.2f}  {ok}")
        dbg = _debugfs(images["raw"], args.runs)
        print(f"\ndebugfs -R 'stat /etc/eks/bootstrap.sh' on the raw ext4 case: {dbg:.3f} s; "
              f"invoke verify / debugfs = {walls['raw'] / dbg:.1f}x "
              "(verify also reads and hashes the script, checks nodeadm, kubelet, os-release "
              "and starts Python + invoke)")
        if not args.no_ami:
            _ami_bench(images["raw"], args.filler_mib)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
