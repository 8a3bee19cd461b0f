"""The GitHub workflows parse, call only invoke tasks and flags that exist, and use OIDC."""
from __future__ import annotations

import fnmatch
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
    assert len(creds) == len(doc["jobs"])          # one per job, every job the same role
    for job in doc["jobs"].values():
        assert sum(str(s.get("uses", "")).startswith("aws-actions/configure-aws-credentials@")
                   for s in job["steps"]) == 1
    assert {c["with"]["role-to-assume"].replace(" ", "") for c in creds} == {
        "${{vars.AWS_ROLE_ARN}}"}
    text = (WORKFLOWS / "rebuild.yml").read_text()
    for static in ("aws-access-key-id", "aws-secret-access-key", "AWS_SECRET_ACCESS_KEY"):
        assert static not in text
    summary = [s for s in steps if "GITHUB_STEP_SUMMARY" in (s.get("run") or "")]
    assert summary and "invoke history" in summary[0]["run"]
    upload = [s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
    assert "build/manifest.json" in upload[-1]["with"]["path"]
    run = next(s["run"] for s in steps if "invoke rebuild" in (s.get("run") or ""))
    assert "inputs.image" in str(next(s for s in steps if s.get("run") == run).get("env"))


def test_rebuild_workflow_fans_out_plan_matrix_summary_through_outputs() -> None:
    """plan -> one matrix job per image from the plan's output -> summary (issue 19)."""
    doc = _load("rebuild.yml")
    jobs = doc["jobs"]
    assert list(jobs) == ["plan", "rebuild", "summary"]
    plan, matrix, summary = jobs["plan"], jobs["rebuild"], jobs["summary"]
    plan_step = next(s for s in plan["steps"] if "invoke rebuild --plan --json" in s.get("run", ""))
    sid = plan_step["id"]
    for key in ("matrix", "count"):
        assert plan["outputs"][key].replace(" ", "") == f"${{{{steps.{sid}.outputs.{key}}}}}"
        assert f'echo "{key}=' in plan_step["run"] and "$GITHUB_OUTPUT" in plan_step["run"]
    assert matrix["needs"] == "plan"
    assert matrix["if"].replace(" ", "") == "needs.plan.outputs.count!='0'"  # no empty matrix
    strategy = matrix["strategy"]
    assert strategy["matrix"].replace(" ", "") == "${{fromJSON(needs.plan.outputs.matrix)}}"
    assert strategy["fail-fast"] is False
    assert "vars.REBUILD_MAX_PARALLEL" in str(strategy["max-parallel"])
    build = next(s for s in matrix["steps"] if "invoke rebuild" in s.get("run", ""))
    assert build["env"]["IMAGE"].replace(" ", "") == "${{matrix.image}}"
    assert '--image "$IMAGE"' in build["run"] and "--plan" not in build["run"]
    assert set(summary["needs"]) == {"plan", "rebuild"} and "always()" in summary["if"]
    runs = "\n".join(s.get("run", "") for s in summary["steps"])
    assert "invoke promote --auto" in runs and "invoke history" in runs
    assert "GITHUB_STEP_SUMMARY" in runs
    uploads = [s for s in summary["steps"] if str(s.get("uses", "")).startswith(
        "actions/upload-artifact@")]
    assert uploads and "build/manifest.json" in uploads[-1]["with"]["path"]
    downloads = [s for s in summary["steps"] if str(s.get("uses", "")).startswith(
        "actions/download-artifact@")]
    names = [s["with"]["name"] for job in (plan, matrix) for s in job["steps"]
             if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
    pattern = downloads[0]["with"]["pattern"].replace("${{ github.run_id }}", "1")
    assert all(fnmatch.fnmatch(n.replace("${{ matrix.image }}", "img")
                               .replace("${{ github.run_id }}", "1"), pattern) for n in names)


def test_tests_workflow_runs_the_readme_command_on_pull_requests() -> None:
    doc = _load("tests.yml")
    assert "pull_request" in doc["on"]
    runs = [s.get("run", "") for s in _steps(doc)]
    assert "./scripts/test.sh" in runs
    assert any("invoke demo" in r for r in runs)
