"""Every task's ``--json`` document matches the JSON Schema that ships in the package.

The tasks run in-process through the ``eks-ami`` Program (the same parser, tasks and
rendering as the console command) against the emulator; each stdout document is validated
against ``pipeline/data/schemas/<task>.schema.json`` or, for failures, ``error.schema.json``.
"""
from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from pipeline.__main__ import _make_program
from pipeline.cli import SCHEMA_VERSION
from pipeline.tasks import ns
from pipeline_dev.diskimage import MiB, ImageSpec, build_image, root_tree
from test_publish_support import example_raw, node_security_group, verified_ami

SCHEMAS = Path(__file__).resolve().parents[1] / "pipeline" / "data" / "schemas"
NO_JSON = {"emulator"}          # serves until stopped; prints no document


def _schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


def run_json(*argv: str) -> tuple[int, dict[str, Any]]:
    """Run ``eks-ami ARGV --json`` in this process: (exit code, the stdout document)."""
    out = io.StringIO()
    code: Any = 0
    with contextlib.redirect_stdout(out):
        try:
            _make_program().run(["eks-ami", *argv, "--json"])
        except SystemExit as stop:
            code = stop.code or 0
    return int(code), json.loads(out.getvalue())


def check(task: str, code: int, doc: dict[str, Any]) -> None:
    assert doc["schema_version"] == SCHEMA_VERSION
    name = "error" if "error" in doc and code != 0 else task
    jsonschema.Draft202012Validator(_schema(name)).validate(doc)


def test_every_task_has_a_valid_schema() -> None:
    for task in ns.task_names:
        if task in NO_JSON:
            continue
        jsonschema.Draft202012Validator.check_schema(_schema(task))
    jsonschema.Draft202012Validator.check_schema(_schema("error"))


def test_usage_and_input_errors_are_error_documents(tmp_path: Path) -> None:
    for argv in (["prune", "--keep", "abc"], ["prune", "--nope"], ["history", "--config"],
                 ["nosuch-task"], ["verify", "--image", str(tmp_path / "missing.raw")],
                 ["check-config", "-c", str(tmp_path / "missing.yaml")]):
        code, doc = run_json(*argv)
        assert code == 2, argv
        jsonschema.Draft202012Validator(_schema("error")).validate(doc)
        assert doc["exit_code"] == 2


@pytest.mark.skipif(shutil.which("packer") is None, reason="packer not installed")
def test_every_task_output_matches_its_schema(emulator, clients, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", emulator.endpoint)
    image = build_image(root_tree(tmp_path / "tree", "al2023"), tmp_path / "node.raw",
                        ImageSpec(table="gpt", size=64 * MiB))
    raw = example_raw(tmp_path, sg_ids=[node_security_group(clients)], karpenter=True)
    raw["images"][0]["require"] = "any"
    raw["images"][0]["bake"].pop("template", None)          # the packaged template
    raw["images"][1]["import"]["source"] = str(image)
    raw["build"]["state_dir"] = str(tmp_path / "build")
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    c = ["-c", str(cfg)]
    seen: set[str] = set()

    def step(task: str, *args: str, expect: int = 0) -> dict[str, Any]:
        code, doc = run_json(task, *args)
        assert code == expect, (task, doc)
        check(task, code, doc)
        seen.add(task)
        return doc

    step("check-config", *c)
    step("iam-policy", *c)
    step("render-stack", *c)
    step("init", "--directory", str(tmp_path / "starter"))
    step("verify", "--image", str(image))
    step("import-image", *c, "--name", "eks-node-imported", "--method", "snapshot")
    first = verified_ami(emulator, clients)
    step("verify", "--ami", first, *c)
    step("publish-template", "--ami", first, "--create", *c)
    second = verified_ami(emulator, clients, build_id="b-20261125170001-abcdef")
    step("publish-template", "--ami", second, "--no-default", *c)
    step("promote", "--template", "eks-nodes", "--version", "2", *c)
    step("template-diff", "--template", "eks-nodes", *c)
    step("rollback", "--template", "eks-nodes", *c)
    # migrate-template: its schema is checked above; its success here depends on the
    # template carrying what an EC2NodeClass needs, so either document must match.
    code, doc = run_json("migrate-template", "--template", "eks-nodes", *c)
    check("migrate-template", code, doc)
    seen.add("migrate-template")
    step("history", *c)
    step("rebuild", "--dry-run", *c)
    step("prune", *c)
    step("reap", *c)
    step("bake", "--dry-run", "--image", "eks-node-al2023", *c)
    # demo: tests/test_demo.py runs it end to end and validates its document.
    assert seen | NO_JSON | {"demo"} == set(ns.task_names)
