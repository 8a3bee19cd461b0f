"""`invoke demo` runs end to end on a fresh emulator and exits 0, in well under 60 s."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.packer
@pytest.mark.skipif(shutil.which("packer") is None, reason="packer not installed")
def test_invoke_demo_exits_0_and_tells_every_step(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") and k != "PIPELINE_CONFIG"}
    env["PATH"] = env.get("PATH", "") + ":/usr/sbin:/sbin"
    invoke = Path(sys.executable).with_name("invoke")
    proc = subprocess.run([str(invoke), "demo", "--json", "--workdir", str(tmp_path / "demo")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    import jsonschema  # noqa: PLC0415 - the shipped schema of the demo's document

    jsonschema.validate(doc, json.loads(
        (ROOT / "pipeline" / "data" / "schemas" / "demo.schema.json").read_text()))
    steps = doc["steps"]
    assert [s["status"] for s in steps] == ["ok"] * len(steps)
    titles = " | ".join(s["title"] for s in steps)
    for needle in ("Verify", "VM Import", "EBS snapshot", "Bake", "new launch template",
                   "nothing is built", "version 2 (staged)", "Promote", "History",
                   "Roll back"):
        assert needle in titles, needle
    # The narration went to stderr and ends with the way to real AWS.
    assert "== 10. " in proc.stderr
    assert "Run the same against real AWS" in proc.stderr
    assert "invoke iam-policy" in proc.stderr
    # The forced rebuild published version 2, and the work folder holds the config used.
    published = next(s for s in steps if "version 2" in s["title"])["details"]["published"]
    assert "eks-nodes version 2 (staged, not default)" in published[0]
    assert (tmp_path / "demo" / "pipeline.yaml").is_file()
