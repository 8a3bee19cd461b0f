"""``invoke import-image`` as a subprocess: exit codes and ``--json`` output."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from test_import_e2e import BUCKET, _inventory, good_raw  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
INVOKE = Path(sys.executable).with_name("invoke")


def _config(tmp_path: Path, endpoint: str, source: Path) -> Path:
    cfg = {
        "aws": {"region": "us-east-1", "endpoint_url": endpoint, "max_attempts": 2},
        "build": {"s3_bucket": BUCKET, "state_dir": str(tmp_path / "build")},
        "images": [{"name": "node", "require": "nodeadm",
                    "import": {"source": str(source), "method": "vm-import"}}],
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _invoke(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1")
    return subprocess.run([str(INVOKE), "import-image", "--config", str(cfg), "--json", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_snapshot_import_prints_the_json_record(clients, endpoint, tmp_path, good_raw) -> None:
    proc = _invoke(_config(tmp_path, endpoint, good_raw), "--method", "snapshot")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    for key in ("image_id", "snapshot_ids", "method", "build_id", "source_sha256",
                "bytes_sent", "seconds"):
        assert key in doc, key
    assert doc["method"] == "snapshot" and doc["image_id"].startswith("ami-")
    assert doc["verification"]["verdict"] == "ok"
    images = clients.client("ec2").describe_images(ImageIds=[doc["image_id"]])["Images"]
    assert images[0]["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"] == doc["snapshot_ids"][0]


def test_bad_inputs_exit_2_with_one_line(clients, endpoint, tmp_path, good_raw) -> None:
    cfg = _config(tmp_path, endpoint, good_raw)
    missing = _invoke(cfg, "--image", str(tmp_path / "nope.vmdk"))
    assert missing.returncode == 2
    assert json.loads(missing.stdout)["exit_code"] == 2
    assert missing.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "nope.vmdk: no such file" in missing.stderr

    no_bucket = _invoke(cfg)                                         # bucket not created
    assert no_bucket.returncode == 2 and "does not exist" in no_bucket.stderr

    clients.client("s3").create_bucket(Bucket=BUCKET)
    before = _inventory(clients)
    no_role = _invoke(cfg)
    assert no_role.returncode == 2 and "--create-role" in no_role.stderr
    assert _inventory(clients) == before


def test_timeout_cancels_and_exits_1(clients, endpoint, tmp_path, good_raw) -> None:
    clients.client("s3").create_bucket(Bucket=BUCKET)
    proc = _invoke(_config(tmp_path, endpoint, good_raw), "--create-role", "--timeout", "1")
    assert proc.returncode == 1, proc.stderr
    assert "did not finish within 1s" in json.loads(proc.stdout)["error"]
    task = clients.client("ec2").describe_import_image_tasks()["ImportImageTasks"][0]
    assert task["Status"] in ("deleting", "deleted")
