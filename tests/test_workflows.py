"""The GitHub workflows parse, call only invoke tasks and flags that exist, and use OIDC."""
from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

import tasks

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
INVOKE = re.compile(r"(?:^|[\s/])invoke\s+([a-z][a-z0-9-]*)([^\n|;&>]*)")


def _load(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    assert isinstance(doc, dict), name
    # YAML 1.1 reads the bare key `on` as True.
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


def _steps(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for job in doc["jobs"].values() for s in job.get("steps", [])]


def _task_flags(name: str) -> set[str]:
    task = tasks.ns[name]
    flags = set()
    for arg in task.get_arguments():
        for n in arg.names:
            flags.add(f"--{n.replace('_', '-')}" if len(n) > 1 else f"-{n}")
    flags.add("--help")
    return flags


def invoke_calls() -> list[tuple[str, str, set[str]]]:
    """(workflow, task, flags) for every ``invoke <task> ...`` in a ``run:`` script.

    Flags gathered into a bash array in the same step (``args+=(--image ...)``) count
    as flags of the invoke call that expands the array.
    """
    out = []
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for step in _steps(_load(path.name)):
            script = step.get("run") or ""
            array_flags = {tok for m in re.finditer(r"args\+=\(([^)]*)\)", script)
                           for tok in shlex.split(m.group(1)) if tok.startswith("-")}
            for m in INVOKE.finditer(script):
                rest = m.group(2)
                flags = {tok.split("=")[0] for tok in shlex.split(rest, comments=True)
                         if tok.startswith("-")}
                if "${args[@]}" in rest:
                    flags |= array_flags
                out.append((path.name, m.group(1), flags))
    return out


def test_workflows_exist_and_parse() -> None:
    names = sorted(p.name for p in WORKFLOWS.glob("*.yml"))
    assert names == ["rebuild.yml", "tests.yml"]
    for name in names:
        doc = _load(name)
        assert doc["jobs"] and doc["on"]


def test_every_invoke_task_and_flag_exists() -> None:
    calls = invoke_calls()
    called = {t for _, t, _ in calls}
    assert {"rebuild", "history", "reap", "demo"} <= called
    for workflow, task, flags in calls:
        assert task in tasks.ns.task_names, f"{workflow}: invoke {task}: no such task"
        unknown = flags - _task_flags(task)
        assert not unknown, f"{workflow}: invoke {task}: unknown flags {sorted(unknown)}"


def test_scanner_catches_a_bad_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check itself can fail: a made-up task or flag is reported."""
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  j:\n    steps:\n"
                   "      - run: .venv/bin/invoke rebuild --no-such-flag\n"
                   "      - run: invoke frobnicate\n")
    monkeypatch.setattr(f"{__name__}.WORKFLOWS", tmp_path)
    calls = invoke_calls()
    assert ("bad.yml", "rebuild", {"--no-such-flag"}) in calls
    assert "--no-such-flag" not in _task_flags("rebuild")
    assert "frobnicate" not in tasks.ns.task_names


def test_rebuild_workflow_schedule_dispatch_oidc_concurrency_summary_artifact() -> None:
    doc = _load("rebuild.yml")
    on = doc["on"]
    assert on["schedule"][0]["cron"]
    inputs = on["workflow_dispatch"]["inputs"]
    assert inputs["force"]["type"] == "boolean" and "image" in inputs
    assert doc["permissions"]["id-token"] == "write"
    assert doc["concurrency"]["group"] and doc["concurrency"]["cancel-in-progress"] is False
    steps = _steps(doc)
    creds = [s for s in steps if str(s.get("uses", "")).startswith(
        "aws-actions/configure-aws-credentials@")]
    assert len(creds) == 1
    assert creds[0]["with"]["role-to-assume"].replace(" ", "") == "${{vars.AWS_ROLE_ARN}}"
    text = (WORKFLOWS / "rebuild.yml").read_text()
    for static in ("aws-access-key-id", "aws-secret-access-key", "AWS_SECRET_ACCESS_KEY"):
        assert static not in text
    summary = [s for s in steps if "GITHUB_STEP_SUMMARY" in (s.get("run") or "")]
    assert summary and "invoke history" in summary[0]["run"]
    upload = [s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
    assert "build/manifest.json" in upload[0]["with"]["path"]
    run = next(s["run"] for s in steps if "invoke rebuild" in (s.get("run") or ""))
    assert "inputs.image" in str(next(s for s in steps if s.get("run") == run).get("env"))


def test_tests_workflow_runs_the_readme_command_on_pull_requests() -> None:
    doc = _load("tests.yml")
    assert "pull_request" in doc["on"]
    runs = [s.get("run", "") for s in _steps(doc)]
    assert "./scripts/test.sh" in runs
    assert any("invoke demo" in r for r in runs)
