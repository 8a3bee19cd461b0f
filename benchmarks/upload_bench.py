"""S3 upload throughput: our uploader vs ``aws s3 cp``, same file, same emulator, same run.

The emulator runs in its own process so neither client shares a GIL with the server.
Our figure includes the hash pass (the key is derived from the SHA-256), so it is the
time a user waits; a second ratio adds ``sha256sum`` to the CLI's time, which is what
the CLI needs for the same content-addressed key. Each client uploads ``--rounds`` times (alternating); the best round
of each is compared.

    .venv/bin/python benchmarks/upload_bench.py [--size-mib 1024] [--rounds 2]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

MiB = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_emulator(port: int) -> subprocess.Popen[bytes]:
    code = f"from pipeline.emulator import serve; serve(host='127.0.0.1', port={port})"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1)
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("emulator did not start")


def _make_file(path: Path, size: int) -> None:
    seed = hashlib.sha256(b"upload-bench").digest()
    with open(path, "wb") as fh:
        for i in range(size // (4 * MiB)):
            fh.write(hashlib.shake_256(seed + i.to_bytes(4, "little")).digest(4 * MiB))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=10)
    args = ap.parse_args()

    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1")
    os.environ.pop("AWS_PROFILE", None)
    from pipeline.aws import Clients
    from pipeline.config import AwsSettings
    from pipeline.s3_upload import upload_file

    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    emu = _start_emulator(port)
    try:
        with tempfile.TemporaryDirectory(prefix="upload-bench-") as tmp:
            src = Path(tmp) / "disk.raw"
            _make_file(src, args.size_mib * MiB)
            size = src.stat().st_size
            s3 = Clients(AwsSettings(endpoint_url=endpoint)).client("s3")
            bucket = "upload-bench"
            s3.create_bucket(Bucket=bucket)
            ours: list[float] = []
            cli: list[float] = []
            shasum: list[float] = []
            skips: list[float] = []
            for r in range(args.rounds):
                t = time.perf_counter()
                subprocess.run(["sha256sum", str(src)], check=True, capture_output=True)
                shasum.append(time.perf_counter() - t)
                t = time.perf_counter()
                subprocess.run(["aws", "--endpoint-url", endpoint, "s3", "cp", "--only-show-errors",
                                str(src), f"s3://{bucket}/cli/{r}/disk.raw"], check=True)
                cli.append(time.perf_counter() - t)
                s3.delete_object(Bucket=bucket, Key=f"cli/{r}/disk.raw")

                t = time.perf_counter()
                res = upload_file(s3, src, bucket, workers=args.workers)
                ours.append(time.perf_counter() - t)
                assert not res.skipped and res.bytes_sent == size
                t = time.perf_counter()
                again = upload_file(s3, src, bucket)
                skip = time.perf_counter() - t
                skips.append(skip)
                assert again.skipped
                s3.delete_object(Bucket=bucket, Key=res.key)
                print(f"round {r + 1}: aws s3 cp {cli[-1]:.2f} s, ours {ours[-1]:.2f} s "
                      f"(re-run skipped in {skip:.2f} s)")
            mib = size / MiB
            best_cli, best_ours = min(cli), min(ours)
            print(f"file: {mib:.0f} MiB, part size {res.size // res.parts_total // MiB} MiB, "
                  f"{args.workers} workers")
            print(f"aws s3 cp : {mib / best_cli:7.1f} MiB/s (best of {args.rounds})")
            print(f"ours      : {mib / best_ours:7.1f} MiB/s (best of {args.rounds}, hash pass "
                  "included)")
            print(f"ratio ours/aws-cli: {best_cli / best_ours:.2f}")
            # What the CLI needs for the same content addressing: hash, then copy.
            best_cli_sha = min(c + h for c, h in zip(cli, shasum))
            print(f"ratio ours/(sha256sum + aws s3 cp): {best_cli_sha / best_ours:.2f}")
            print(f"our hash pass + HeadObject (a re-run, nothing sent): {min(skips):.2f} s")
    finally:
        emu.terminate()
        emu.wait(timeout=30)


if __name__ == "__main__":
    main()
