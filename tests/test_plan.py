"""``invoke rebuild --plan --json``: per image whether it needs a rebuild and why, and the
CI matrix of exactly those images; no lock is taken and nothing is built."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.config import parse_settings
from pipeline.core.records import BuildRecord
from pipeline.lifecycle.plan import plan
from pipeline.lineage import store

ROOT = Path(__file__).resolve().parents[1]


def _config(tmp_path: Path, endpoint: str) -> tuple[Path, dict[str, Path]]:
    """Five imported images; a disk file each but the one named 'gone'."""
    sources = {}
    for name in ("fresh", "changed", "aged", "new"):
        sources[name] = tmp_path / f"{name}.raw"
        sources[name].write_bytes(name.encode() * 1000)
    raw: dict[str, Any] = {
        "aws": {"region": "us-east-1", "endpoint_url": endpoint, "max_attempts": 2},
        "build": {"ssm_prefix": "/plan-test", "state_dir": str(tmp_path / "build")},
        "images": [{"name": n, "max_age_days": 7, "import": {"source": str(p), "method": "snapshot"}}
                   for n, p in sources.items()]
                  + [{"name": "gone", "import": {"source": str(tmp_path / "gone.raw")}}],
    }
    path = tmp_path / "hidden.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, sources


def _record(settings: Any, clients: Any, name: str, sha: str, days_ago: float) -> str:
    when = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days_ago)
    build_id = f"b-{when:%Y%m%d%H%M%S}-{hashlib.sha256(name.encode()).hexdigest()[:6]}"
    store.record_build(settings, clients, BuildRecord(
        build_id=build_id, image_name=name, method="snapshot", status="succeeded",
        started_at=when.isoformat(), finished_at=when.isoformat(), source_sha256=sha))
    return build_id


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_plan_lists_the_images_to_rebuild_and_why(tmp_path: Path, emulator: Any,
                                                   clients: Any) -> None:
    path, sources = _config(tmp_path, emulator.endpoint)
    settings = parse_settings(yaml.safe_load(path.read_text()), source=path)
    fresh = _record(settings, clients, "fresh", _sha(sources["fresh"]), 1)
    _record(settings, clients, "changed", "0" * 64, 1)
    _record(settings, clients, "aged", _sha(sources["aged"]), 30)
    ssm = clients.client("ssm")
    before = {p["Name"] for p in ssm.get_parameters_by_path(Path="/plan-test",
                                                            Recursive=True)["Parameters"]}

    result = plan(settings, clients)
    by = {e.image: e for e in result.images}
    assert not by["fresh"].rebuild and by["fresh"].reason.startswith(
        f"inputs unchanged since build {fresh}")
    assert by["changed"].rebuild and by["changed"].reason.startswith("source file changed")
    assert by["aged"].rebuild and "(max_age_days 7)" in by["aged"].reason
    assert by["new"].rebuild and by["new"].reason == "no successful build yet"
    # rebuild's own rule for an import whose source file is missing: skip, saying why
    assert not by["gone"].rebuild and by["gone"].reason.startswith("nothing to import")
    assert result.matrix == {"include": [{"image": n} for n in ("changed", "aged", "new")]}
    after = {p["Name"] for p in ssm.get_parameters_by_path(Path="/plan-test",
                                                           Recursive=True)["Parameters"]}
    assert after == before                      # no lock parameter, no record written
    assert clients.client("ec2").describe_images(Owners=["self"])["Images"] == []

    # The task prints the same plan as one JSON document (what the workflow's plan job reads).
    env = {**os.environ, "PIPELINE_CONFIG": str(path)}
    out = subprocess.run([sys.executable, "-m", "invoke", "rebuild", "--plan", "--json"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["matrix"] == result.matrix and doc["count"] == 3
    assert [i["image"] for i in doc["images"] if not i["rebuild"]] == ["fresh", "gone"]


def test_plan_of_one_image_and_force(tmp_path: Path, emulator: Any, clients: Any) -> None:
    path, sources = _config(tmp_path, emulator.endpoint)
    settings = parse_settings(yaml.safe_load(path.read_text()), source=path)
    _record(settings, clients, "fresh", _sha(sources["fresh"]), 1)
    only = plan(settings, clients, image="fresh")
    assert [e.image for e in only.images] == ["fresh"] and only.matrix == {"include": []}
    forced = plan(settings, clients, image="fresh", force=True)
    assert forced.matrix == {"include": [{"image": "fresh"}]}
    assert forced.images[0].reason == "forced (--force)"
