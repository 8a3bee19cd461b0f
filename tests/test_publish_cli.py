"""The tasks as a user runs them: `invoke publish-template` etc. as subprocesses against the emulator."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_publish_support import (ROOT, clients, example_raw, module_clients,  # noqa: F401
                                  node_security_group, verified_ami)

INVOKE = Path(sys.executable).parent / "invoke"
SEED_EXAMPLE = ("#!/bin/bash\n/etc/eks/bootstrap.sh ${ClusterName} --apiserver-endpoint <endpoint>\n"
                "--dns-cluster-ip 10.100.0.10\n")


@pytest.fixture
def run(endpoint, tmp_path, clients):
    """Run an invoke task with a temp config (pipeline.example.yaml + a real security group)."""
    raw = example_raw(tmp_path, sg_ids=[node_security_group(clients)], karpenter=True)
    raw["images"][0]["require"] = "any"
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(raw))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")

    def _run(*args: str) -> tuple[int, dict, str]:
        proc = subprocess.run([str(INVOKE), *args, "--config", str(config), "--json"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {}, proc.stderr

    return _run


def test_publish_json_then_rerun_then_bad_inputs(run, emulator, clients, tmp_path):
    ami = verified_ami(emulator, clients)
    code, doc, err = run("publish-template", "--ami", ami, "--create")
    assert code == 0, err
    for key in ("template_id", "template_name", "version", "default_version", "image_id",
                "user_data_sha256"):
        assert key in doc
    assert (doc["template_name"], doc["version"], doc["default_version"], doc["image_id"],
            doc["created"]) == ("eks-nodes", 1, 1, ami, True)
    assert len(doc["karpenter_manifests"]) == 2

    code, again, _ = run("publish-template", "--ami", ami)
    assert code == 0 and (again["created"], again["version"]) == (False, 1)

    seed = tmp_path / "seed-user-data.sh"
    seed.write_text(SEED_EXAMPLE)
    al2 = verified_ami(emulator, clients, "al2", mechanism="bootstrap.sh")
    code, doc, err = run("publish-template", "--ami", al2, "--user-data-file", str(seed))
    assert code == 2
    assert doc["exit_code"] == 2 and any("trailing backslash" in p
                                         for p in doc["details"]["problems"])
    assert "error: user data" in err and "trailing backslash" in err

    unverified = verified_ami(emulator, clients, verdict=None)
    code, doc, err = run("publish-template", "--ami", unverified)
    assert code == 2 and "no verification record" in doc["error"]
    versions = clients.client("ec2").describe_launch_template_versions(
        LaunchTemplateName="eks-nodes")["LaunchTemplateVersions"]
    assert len(versions) == 1


def test_staged_publish_promote_rollback_and_diff(run, emulator, clients):
    ami1, ami2 = verified_ami(emulator, clients), verified_ami(emulator, clients)
    assert run("publish-template", "--ami", ami1, "--create")[0] == 0
    code, doc, err = run("publish-template", "--ami", ami2, "--no-default")
    assert code == 0, err
    assert (doc["version"], doc["default_version"]) == (2, 1)

    code, diff, _ = run("template-diff", "--template", "eks-nodes")
    assert code == 0 and (diff["from_image_id"], diff["to_image_id"]) == (ami1, ami2)

    code, doc, _ = run("promote", "--template", "eks-nodes", "--version", "2",
                       "--channel", "stable")
    assert code == 0 and doc["changed"] and doc["pointer"].endswith("/stable")

    code, doc, _ = run("rollback", "--template", "eks-nodes")
    assert code == 0 and (doc["from_version"], doc["to_version"]) == (2, 1)
    assert doc["to_image_id"] == ami1
    code, doc, _ = run("rollback", "--template", "eks-nodes")
    assert code == 2 and "nothing to roll back to" in doc["error"]


def test_render_stack_task(tmp_path):
    """`invoke render-stack --output` writes the template; --json reports it (no AWS needed)."""
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(example_raw(tmp_path)))
    out = tmp_path / "stack.yaml"
    proc = subprocess.run([str(INVOKE), "render-stack", "--output", str(out), "--config",
                           str(config), "--json"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["output"] == str(out) and doc["template_name"] == "eks-nodes"
    assert yaml.safe_load(out.read_text())["Resources"]["NodeLaunchTemplate"]
