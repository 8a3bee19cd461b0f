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

    .venv/bin/python benchmarks/import_bench.py --memory [--sizes-gib 2,8] [--filler-mib 300]

Same-run speed (the default): one 8 GiB GPT/ext4 image with ``--filler-mib`` of data, in
raw, qcow2 and streamOptimized VMDK form; contenders, each in a fresh child process
against the same emulator, rotated ``--runs`` times (medians reported, with the load
average before and after):

- ``plain``: a plain EBS direct uploader (``_plain_upload`` below: boto3, 8 threads,
  SEEK_DATA/SEEK_HOLE, SHA-256 per block, LINEAR aggregate) on the raw file; it only
  writes the snapshot. Benchmark-only code, never imported by the product;
- ``tool-raw``/``tool-qcow2``/``tool-vmdk``: ``import_image(method="snapshot")`` (pre-flight,
  write, register, tag, verify --ami, record), as ``invoke import-image`` runs it.

Ratios are of process wall times (Python start-up and imports included, as for
``invoke import-image``), tool / plain-on-raw (targets: raw <= 1.3, qcow2 and VMDK <=
1.5); "in-process" excludes start-up; "read" is the child's ``rchar`` (bytes through
read syscalls, sockets included).

    .venv/bin/python benchmarks/import_bench.py [--runs 5] [--filler-mib 256] [--size-gib 8]
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


def _plain_upload(image: str) -> dict[str, object]:
    """The plain uploader: the whole job in ~40 lines of boto3 (benchmark only)."""
    import base64
    import hashlib
    from concurrent.futures import ThreadPoolExecutor

    import boto3

    bs = 512 * 1024
    ebs = boto3.client("ebs")
    fd = os.open(image, os.O_RDONLY)
    size = os.fstat(fd).st_size
    blocks: dict[int, None] = {}
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:
            break
        end = os.lseek(fd, start, os.SEEK_HOLE)
        blocks.update(dict.fromkeys(range(start // bs, -(-end // bs))))
        pos = end
    snap = ebs.start_snapshot(VolumeSize=-(-size // GiB), Timeout=60)["SnapshotId"]

    def put(index: int) -> tuple[int, bytes]:
        data = os.pread(fd, bs, index * bs).ljust(bs, b"\0")
        digest = hashlib.sha256(data).digest()
        ebs.put_snapshot_block(SnapshotId=snap, BlockIndex=index, BlockData=data,
                               DataLength=bs, Checksum=base64.b64encode(digest).decode(),
                               ChecksumAlgorithm="SHA256")
        return index, digest

    with ThreadPoolExecutor(8) as pool:
        done = sorted(pool.map(put, blocks))
    aggregate = base64.b64encode(hashlib.sha256(b"".join(d for _, d in done)).digest())
    ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=len(done),
                          Checksum=aggregate.decode(), ChecksumAlgorithm="SHA256",
                          ChecksumAggregationMethod="LINEAR")
    os.close(fd)
    return {"snapshot_id": snap, "bytes_sent": len(done) * bs}


def _rchar() -> int:
    try:
        with open("/proc/self/io") as fh:
            return int(next(line for line in fh if line.startswith("rchar:")).split()[1])
    except (OSError, StopIteration):
        return -1


def _child(mode: str, image: str, state: str) -> None:
    if mode == "plain":
        t = time.perf_counter()
        out = _plain_upload(image)
        out.update(seconds=time.perf_counter() - t, rchar=_rchar(),
                   maxrss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        print(json.dumps(out))
        return
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
                      "content_id": getattr(res.record, "source_content_id", None),
                      "rchar": _rchar(), "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes-gib", default="2,8")
    ap.add_argument("--filler-mib", type=int, default=300)
    ap.add_argument("--memory", action="store_true",
                    help="bytes sent and peak RSS at --sizes-gib instead of the speed race")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size-gib", type=int, default=8)
    ap.add_argument("--contenders", default="plain,tool-raw,tool-qcow2,tool-vmdk")
    ap.add_argument("--child", nargs=3, metavar=("MODE", "IMAGE", "STATE"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(*args.child)
        return
    if not args.memory:
        _race(args)
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


def _median(xs: list[float]) -> float:
    ys = sorted(xs)
    n = len(ys)
    return ys[n // 2] if n % 2 else (ys[n // 2 - 1] + ys[n // 2]) / 2


def _race(args: argparse.Namespace) -> None:
    import urllib.request

    from pipeline_dev.diskimage import ImageSpec, build_image, root_tree

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    emu = start_emulator(port)
    env = _child_env(endpoint)
    names = args.contenders.split(",")
    try:
        with tempfile.TemporaryDirectory(prefix="import-race-") as tmp:
            work = Path(tmp)
            tree = root_tree(work / "tree", "al2023", filler_mib=args.filler_mib)
            raw = work / f"node-{args.size_gib}g.raw"
            t = time.perf_counter()
            build_image(tree, raw, ImageSpec(table="gpt", size=args.size_gib * GiB))
            files = {"plain": raw, "tool-raw": raw}
            for name, opts in (("tool-qcow2", ["-O", "qcow2"]),
                               ("tool-vmdk", ["-O", "vmdk", "-o", "subformat=streamOptimized"])):
                if name in names:
                    out = work / f"node.{name[5:]}"
                    subprocess.run(["qemu-img", "convert", *opts, str(raw), str(out)], check=True)
                    files[name] = out
            print(f"{args.size_gib} GiB image built in {time.perf_counter() - t:.0f} s: "
                  f"{raw.stat().st_blocks * 512 / MiB:.0f} MiB allocated; "
                  + ", ".join(f"{n} {files[n].stat().st_size / MiB:.0f} MiB"
                              for n in names if n.startswith("tool-") and n != "tool-raw"))
            print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())} "
                  f"on {os.cpu_count()} CPUs")
            runs: dict[str, list[dict[str, object]]] = {n: [] for n in names}
            for r in range(args.runs):
                order = names[r % len(names):] + names[:r % len(names)]   # rotated
                for name in order:
                    mode = "plain" if name == "plain" else "import"
                    t = time.perf_counter()
                    res, _ = _run_child(["--child", mode, str(files[name]),
                                         str(work / f"state-{name}-{r}")], env)
                    res["inner"] = res["seconds"]            # inside the child, imports excluded
                    res["seconds"] = time.perf_counter() - t  # process wall time: the figure
                    runs[name].append(res)
                    urllib.request.urlopen(urllib.request.Request(
                        f"{endpoint}/moto-api/reset", method="POST"), timeout=60).read()
            print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
            base = _median([float(str(x["seconds"])) for x in runs.get("plain", [])] or [0])
            ids = {n: {x.get("content_id") for x in rs} for n, rs in runs.items()
                   if n.startswith("tool-")}
            for name in names:
                secs = [float(str(x["seconds"])) for x in runs[name]]
                med = _median(secs)
                sent = int(str(runs[name][0]["bytes_sent"]))
                read = _median([float(str(x["rchar"])) for x in runs[name]])
                ratio = f"{med / base:.2f}x plain" if base and name != "plain" else "1.00x"
                inner = _median([float(str(x["inner"])) for x in runs[name]])
                print(f"{name:11s} wall median {med:6.2f} s ({ratio}; in-process {inner:.2f} s); "
                      "runs " + " ".join(f"{s:.2f}" for s in secs)
                      + f"; sent {sent / MiB:.0f} MiB; read {read / MiB:.0f} MiB")
            if len({i for s in ids.values() for i in s}) > 1:
                print(f"WARNING: content identities differ between forms: {ids}")
            elif ids:
                print(f"content identity (all forms): {next(iter(next(iter(ids.values()))))}")
    finally:
        emu.terminate()
        emu.wait(timeout=30)


if __name__ == "__main__":
    main()
