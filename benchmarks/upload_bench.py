"""S3 upload throughput: our uploader vs ``aws s3 cp``, same file, same emulator, same run.

The emulator runs in its own process, so neither client shares a GIL with the server.
Every round uploads the same file once with each contender, in an order rotated from
round to round (each contender takes each position equally often), and deletes the
object afterwards. Contenders:

- ``aws s3 cp``: the installed AWS CLI, as a user runs it (its start-up included; the
  start-up alone is measured once and printed, not subtracted).
- ``ours upload``: :func:`upload_file` given the :class:`FileDigest` computed before
  the clock starts. This is the upload as a user waits for it inside ``import-image``,
  whose pre-flight hashes the file before the bucket and role checks.
- ``ours hash+upload``: :func:`upload_file` on the bare path: the SHA-256 pass the
  content-addressed key needs, then the upload (what a stand-alone upload costs).
- ``ours process``: hash+upload in a fresh Python process (interpreter start, imports,
  client creation included), the like-for-like counterpart of the CLI's process.
- ``before ...`` (with ``--before FILE``): the same two with another version of
  ``s3_upload.py`` (e.g. ``git show HEAD~3:pipeline/s3_upload.py > /tmp/before.py``).

Printed: every round (wall seconds, client and emulator CPU seconds, load average),
then per contender the median wall time and throughput, and the ratio
``median(aws s3 cp) / median(contender)`` (throughput ours / throughput CLI; >= 1 means
at least as fast), with the median of the per-round ratios next to it.

    .venv/bin/python benchmarks/upload_bench.py [--size-mib 1024] [--rounds 5]
        [--workers 10] [--part-mib N] [--checksum CRC32|SHA256] [--before FILE]
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emulator_process import free_port, start_emulator  # noqa: E402
from types import ModuleType
from typing import Any, Callable

MiB = 1024 * 1024
_TICK = os.sysconf("SC_CLK_TCK")




def _make_file(path: Path, size: int) -> None:
    seed = hashlib.sha256(b"upload-bench").digest()
    with open(path, "wb") as fh:
        for i in range(size // (4 * MiB)):
            fh.write(hashlib.shake_256(seed + i.to_bytes(4, "little")).digest(4 * MiB))


def _proc_cpu(pid: int) -> float:
    """User+system CPU seconds of process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _own_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _load_module(path: str) -> ModuleType:
    """Another version of pipeline/s3_upload.py, importable next to the current one."""
    spec = importlib.util.spec_from_file_location("pipeline._s3_upload_before", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _child(args: argparse.Namespace) -> None:
    """``ours process``: one hash+upload in this fresh process; prints the key and the
    peak RSS in KiB."""
    from pipeline.aws.clients import Clients
    from pipeline.core.config import AwsSettings
    from pipeline.aws.s3 import upload_file

    src, bucket, endpoint = args.child
    s3 = Clients(AwsSettings(endpoint_url=endpoint)).client("s3")
    res = upload_file(s3, src, bucket, workers=args.workers,
                      part_size=args.part_mib * MiB or None, checksum=args.checksum)
    print(res.key, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


@dataclass
class Contender:
    name: str
    run: Callable[[], object]        # one upload of the file; leaves the object in place
    key: Callable[[], str]           # where it landed
    wall: list[float] = field(default_factory=list)
    client_cpu: list[float] = field(default_factory=list)
    server_cpu: list[float] = field(default_factory=list)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=10)
    ap.add_argument("--part-mib", type=int, default=0, help="0: part_size_for(size)")
    ap.add_argument("--checksum", default="CRC32", help="per-part checksum: CRC32 or SHA256")
    ap.add_argument("--before", help="another s3_upload.py to measure in the same run")
    ap.add_argument("--only", default="", help="comma list of contender names to run")
    ap.add_argument("--child", nargs=3, metavar=("FILE", "BUCKET", "ENDPOINT"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args)
        return

    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1")
    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        os.environ.pop(var, None)
    from pipeline.aws import s3 as s3_upload
    from pipeline.aws.clients import Clients
    from pipeline.core.config import AwsSettings

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    emu = start_emulator(port)
    try:
        with tempfile.TemporaryDirectory(prefix="upload-bench-") as tmp:
            src = Path(tmp) / "disk.raw"
            _make_file(src, args.size_mib * MiB)
            size = src.stat().st_size
            s3 = Clients(AwsSettings(endpoint_url=endpoint)).client("s3")
            bucket = "upload-bench"
            s3.create_bucket(Bucket=bucket)
            part = args.part_mib * MiB or s3_upload.part_size_for(size)
            cli_cmd = ["aws", "--endpoint-url", endpoint, "s3", "cp", "--only-show-errors",
                       str(src), f"s3://{bucket}/cli/disk.raw"]
            kw: dict[str, Any] = {"workers": args.workers, "part_size": part}
            contenders: list[Contender] = [
                Contender("aws s3 cp", lambda: subprocess.run(cli_cmd, check=True),
                          lambda: "cli/disk.raw")]

            def ours(mod: ModuleType, label: str, extra: dict[str, Any]) -> None:
                digest_kw = {"checksum": args.checksum} if "checksum" in extra else {}
                digest = mod.hash_file(src, part, **digest_kw)   # before the clock
                last: dict[str, str] = {}

                def upload_only() -> None:
                    res = mod.upload_file(s3, src, bucket, digest=digest, **kw, **extra)
                    assert not res.skipped and res.bytes_sent == size, res
                    last["key"] = res.key

                def hash_and_upload() -> None:
                    res = mod.upload_file(s3, src, bucket, **kw, **extra)
                    assert not res.skipped and res.bytes_sent == size, res
                    last["key"] = res.key

                contenders.append(Contender(f"{label} upload", upload_only,
                                            lambda: last["key"]))
                contenders.append(Contender(f"{label} hash+upload", hash_and_upload,
                                            lambda: last["key"]))

            ours(s3_upload, "ours", {"checksum": args.checksum})
            child_key: dict[str, str] = {}
            child_rss: list[int] = []

            def ours_process() -> None:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", str(src), bucket, endpoint,
                     "--workers", str(args.workers), "--part-mib", str(part // MiB),
                     "--checksum", args.checksum], check=True, capture_output=True)
                key, rss = out.stdout.decode().strip().splitlines()[-1].split()
                child_key["key"] = key
                child_rss.append(int(rss))

            contenders.append(Contender("ours process", ours_process, lambda: child_key["key"]))
            if args.before:
                ours(_load_module(args.before), "before", {})
            if args.only:
                wanted = {n.strip() for n in args.only.split(",")}
                contenders = [c for c in contenders if c.name in wanted]

            t = time.perf_counter()
            subprocess.run(["aws", "--endpoint-url", endpoint, "s3", "ls", f"s3://{bucket}"],
                           check=True, capture_output=True)
            cli_start = time.perf_counter() - t
            print(f"file {size / MiB:.0f} MiB; ours: part {part // MiB} MiB, {args.workers} "
                  f"workers, part checksum {args.checksum}; {os.cpu_count()} CPUs; "
                  f"`aws s3 ls` (CLI start-up + one request): {cli_start:.2f} s")
            for r in range(args.rounds):
                shift = r % len(contenders)
                order = contenders[shift:] + contenders[:shift]
                cells = []
                for c in order:
                    cpu0, ccpu0, scpu0 = _own_cpu(), _children_cpu(), _proc_cpu(emu.pid)
                    t = time.perf_counter()
                    c.run()
                    wall = time.perf_counter() - t
                    client = (_own_cpu() - cpu0) + (_children_cpu() - ccpu0)
                    server = _proc_cpu(emu.pid) - scpu0
                    c.wall.append(wall)
                    c.client_cpu.append(client)
                    c.server_cpu.append(server)
                    head = s3.head_object(Bucket=bucket, Key=c.key())
                    assert head["ContentLength"] == size, head
                    s3.delete_object(Bucket=bucket, Key=c.key())
                    cells.append(f"{c.name} {wall:.2f}s (cpu {client:.1f}+{server:.1f})")
                load = " ".join(f"{x:.2f}" for x in os.getloadavg())
                print(f"round {r + 1} [load {load}]: " + "; ".join(cells), flush=True)

            mib = size / MiB
            cli = contenders[0] if contenders[0].name == "aws s3 cp" else None
            print(f"\nmedians over {args.rounds} rounds (cpu = client + emulator seconds):")
            for c in contenders:
                med = statistics.median(c.wall)
                line = (f"  {c.name:<20} {med:6.2f} s {mib / med:7.1f} MiB/s  cpu "
                        f"{statistics.median(c.client_cpu):.1f}+"
                        f"{statistics.median(c.server_cpu):.1f}")
                if cli is not None and c is not cli:
                    per_round = [a / b for a, b in zip(cli.wall, c.wall)]
                    line += (f"  ratio vs aws s3 cp {statistics.median(cli.wall) / med:.2f} "
                             f"(per-round median {statistics.median(per_round):.2f}, "
                             f"range {min(per_round):.2f}-{max(per_round):.2f})")
                print(line)
            if child_rss:
                print(f"ours process peak RSS: {max(child_rss) / 1024:.0f} MiB (workers x part "
                      f"= {args.workers * part // MiB} MiB of part buffers)")
            print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        emu.terminate()
        emu.wait(timeout=30)


if __name__ == "__main__":
    main()
