"""Snapshot import of sparse images: bytes sent vs data, and peak memory vs image size.

Builds GPT/ext4 AL2023-like images holding ~300 MiB of incompressible data
(``root_tree(..., filler_mib=300)``) at two virtual sizes (default 2 and 8 GiB), then
runs ``import_image(method="snapshot")`` for each in a fresh child process against an
emulator running in its own process, and reports:

- bytes sent / non-zero data, where non-zero data is the image's non-zero 4 KiB pages
  (the target is ≤ 1.05; blocks are 512 KiB, so scattered metadata costs a little);
- the child's peak RSS (its own ``ru_maxrss``) next to an idle child that only
  imports the same modules, so the difference is what the import itself holds. It
  should not grow with the image size.

    .venv/bin/python benchmarks/import_bench.py [--sizes-gib 2,8] [--filler-mib 300]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emulator_process import free_port, start_emulator  # noqa: E402

MiB = 1024 * 1024
GiB = 1024 * MiB




def _nonzero_bytes(path: Path, page: int = 4096) -> int:
    """Bytes in non-zero 4 KiB pages, reading only the data extents (SEEK_DATA)."""
    total = 0
    zero = bytes(page)
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            off = start
            while off < end:
                buf = os.pread(fd, min(8 * MiB, end - off), off)
                for i in range(0, len(buf), page):
                    if buf[i:i + page] != zero[: len(buf[i:i + page])]:
                        total += page
                off += len(buf)
            pos = end
    finally:
        os.close(fd)
    return total


def _child_env(endpoint: str) -> dict[str, str]:
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint)
    env.pop("AWS_PROFILE", None)
    return env


def _run_child(args: list[str], env: dict[str, str]) -> tuple[dict[str, object], int]:
    """Run this script as a child; return its JSON line and its peak RSS in KiB."""
    proc = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True)
    if proc.returncode:
        raise SystemExit(f"child failed: {proc.stderr.decode()[-2000:]}")
    doc = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    return doc, int(doc["maxrss_kib"])


def _child(mode: str, image: str, state: str) -> None:
    from pipeline.aws.clients import Clients
    from pipeline.core.config import AwsSettings, ImageSettings, ImportSettings, Settings
    from pipeline.ingest.importer import ImportRequest, import_image

    if mode == "idle":
        print(json.dumps({"maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
        return
    aws = AwsSettings(endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    img = ImageSettings(name="bench", require="nodeadm",
                        import_=ImportSettings(source=Path(image), method="snapshot"))
    settings = Settings(aws=aws, images=(img,), state_dir=Path(state))
    t = time.perf_counter()
    res = import_image(settings, Clients(aws), ImportRequest())
    print(json.dumps({"image_id": res.image_id, "bytes_sent": res.bytes_sent,
                      "seconds": time.perf_counter() - t,
                      "verdict": (res.verification or {}).get("verdict"),
                      "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes-gib", default="2,8")
    ap.add_argument("--filler-mib", type=int, default=300)
    ap.add_argument("--child", nargs=3, metavar=("MODE", "IMAGE", "STATE"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(*args.child)
        return

    from pipeline_dev.diskimage import ImageSpec, build_image, root_tree

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    emu = start_emulator(port)
    env = _child_env(endpoint)
    try:
        with tempfile.TemporaryDirectory(prefix="import-bench-") as tmp:
            work = Path(tmp)
            tree = root_tree(work / "tree", "al2023", filler_mib=args.filler_mib)
            _, idle_rss = _run_child(["--child", "idle", "-", str(work)], env)
            print("idle child (modules imported, nothing done): peak RSS "
                  f"{idle_rss / 1024:.0f} MiB")
            for gib in (int(g) for g in args.sizes_gib.split(",")):
                image = work / f"node-{gib}g.raw"
                t = time.perf_counter()
                build_image(tree, image, ImageSpec(table="gpt", size=gib * GiB))
                built = time.perf_counter() - t
                data = _nonzero_bytes(image)
                res, rss = _run_child(["--child", "import", str(image), str(work / "state")], env)
                sent = int(str(res["bytes_sent"]))
                seconds = float(str(res["seconds"]))
                allocated = image.stat().st_blocks * 512 / MiB
                print(f"{gib} GiB image (built in {built:.1f} s, {allocated:.0f} MiB allocated): "
                      f"non-zero data {data / MiB:.1f} MiB, sent {sent / MiB:.1f} MiB, ratio "
                      f"{sent / data:.3f}; import {seconds:.1f} s ({res['verdict']}); peak RSS "
                      f"{rss / 1024:.0f} MiB (+{(rss - idle_rss) / 1024:.0f} MiB over idle)")
                image.unlink()
    finally:
        emu.terminate()
        emu.wait(timeout=30)


if __name__ == "__main__":
    main()
