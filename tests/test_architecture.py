"""The dependency rules of ``pipeline/``, checked by one AST scan (README: Architecture).

Layers, bottom up:

- ``pipeline.core``: config, errors, records, tags, progress. Imports nothing else of the
  package.
- ``pipeline.image``: disk reading and offline verification. Imports only ``core``; never
  boto3 or botocore.
- ``pipeline.aws``: the AWS resource layer. The only layer that imports boto3/botocore.
  Imports ``core`` (and ``image`` to read disks it uploads).
- ``pipeline.lineage``: the build record and lineage store. Imports ``core``, ``image``,
  ``aws``.
- ``pipeline.ingest``, ``pipeline.bake``, ``pipeline.publish``: the stages. Import the
  layers below, never each other, never ``lifecycle``.
- ``pipeline.lifecycle``: distribute, rebuild, prune, reap, locks. May import the stages.
- ``pipeline.cli`` and ``pipeline.tasks``: the entry points, above everything.
- ``pipeline_dev`` (emulator, disk-image factory, demo) is beside the product: nothing in
  ``pipeline`` imports it, except the ``emulator`` and ``demo`` tasks, which load it
  inside the task function (it needs the ``local`` extra).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "pipeline"

LAYERS = ("core", "image", "aws", "lineage", "ingest", "bake", "publish", "lifecycle")
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "image": {"core"},
    "aws": {"core", "image"},
    "lineage": {"core", "image", "aws"},
    "ingest": {"core", "image", "aws", "lineage"},
    "bake": {"core", "image", "aws", "lineage"},
    "publish": {"core", "image", "aws", "lineage"},
    "lifecycle": {"core", "image", "aws", "lineage", "ingest", "bake", "publish"},
}
AWS_SDK = ("boto3", "botocore", "s3transfer")
SUBMODULES = {p.stem for p in PKG.iterdir() if p.suffix == ".py" or p.is_dir()}
#: Modules that still catch botocore's exceptions themselves (issue 13 moves their error
#: handling behind ``pipeline.aws``). The list may only shrink: a listed module that no
#: longer imports the SDK fails ``test_sdk_pending_list_is_current``.
SDK_PENDING = {
    "pipeline/bake/build.py", "pipeline/ingest/importer.py", "pipeline/ingest/vm_import.py",
    "pipeline/lifecycle/distribute.py", "pipeline/lifecycle/locks.py",
    "pipeline/lifecycle/prune.py", "pipeline/lineage/store.py", "pipeline/publish/gate.py",
    "pipeline/publish/release.py",
}
ENTRY = {"pipeline.cli", "pipeline.tasks", "pipeline.__main__", "pipeline"}


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(absolute module, line, inside a function) for every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    me = _module(path)
    pkg_parts = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_func: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_func or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_func) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = pkg_parts[:len(pkg_parts) - child.level + 1]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                found.append((mod, child.lineno, in_func))
                for a in child.names:  # ``from pipeline import bake`` names a module
                    found.append((f"{mod}.{a.name}", child.lineno, in_func))
            visit(child, nested)

    visit(tree, False)
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "pipeline" and len(parts) > 1 and parts[1] in LAYERS:
        return parts[1]
    return None


def _product_files() -> list[Path]:
    return sorted(PKG.rglob("*.py"))


def test_every_product_module_is_in_a_layer_or_an_entry_point() -> None:
    strays = [str(p.relative_to(ROOT)) for p in _product_files()
              if _layer(_module(p)) is None and _module(p) not in ENTRY]
    assert not strays, f"modules outside the layers: {strays}"


@pytest.mark.parametrize("path", _product_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_dependency_rules(path: Path) -> None:
    me = _module(path)
    mine = _layer(me)
    problems = []
    for mod, line, in_func in _imports(path):
        top = mod.split(".")[0]
        if top == "pipeline_dev":
            if not (me == "pipeline.tasks" and in_func):
                problems.append(f"line {line}: imports the dev package {mod}")
            continue
        if top in AWS_SDK and mine not in (None, "aws"):
            if str(path.relative_to(ROOT)) not in SDK_PENDING:
                problems.append(f"line {line}: {mod} outside pipeline.aws")
            continue
        if mine is None or top != "pipeline":
            continue
        target = _layer(mod)
        if target == mine or mod == "pipeline" or mod.count(".") == 1 and mod.split(".")[1] not in SUBMODULES:
            continue  # its own layer, or a name of the package root (__version__, TOOL_NAME)
        if target is None:
            problems.append(f"line {line}: imports entry point {mod}")
        elif target not in ALLOWED[mine]:
            problems.append(f"line {line}: {mine} may not import {target} ({mod})")
    assert not problems, f"{path.relative_to(ROOT)}: " + "; ".join(problems)


def test_sdk_pending_list_is_current() -> None:
    stale = [f for f in sorted(SDK_PENDING)
             if not any(m.split(".")[0] in AWS_SDK for m, _, _ in _imports(ROOT / f))]
    assert not stale, f"remove from SDK_PENDING (no longer imports the AWS SDK): {stale}"


def test_image_layer_never_loads_the_aws_sdk() -> None:
    """Importing the image layer (what ``verify --image`` needs) loads no AWS SDK."""
    import subprocess
    import sys

    code = ("import sys, pipeline.image.verify, pipeline.image.diskread; "
            "print(','.join(m for m in sys.modules if m.split('.')[0] in "
            f"{AWS_SDK!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout.strip()
    assert out == ""


def test_no_circular_imports() -> None:
    """Every module imports on its own in a fresh interpreter (a cycle fails one of them)."""
    import subprocess
    import sys

    mods = [_module(p) for p in _product_files()]
    code = ("import importlib, sys\n"
            "bad = []\n"
            f"for m in {mods!r}:\n"
            "    for k in [k for k in sys.modules if k.startswith('pipeline')]:\n"
            "        del sys.modules[k]\n"
            "    try:\n        importlib.import_module(m)\n"
            "    except ImportError as e:\n        bad.append(f'{m}: {e}')\n"
            "print('\\n'.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout.strip()
    assert out == ""


def _readme_tree() -> dict[str, set[str]]:
    """The README's architecture tree: package (``core``...) -> the module names it lists."""
    text = (ROOT / "README.md").read_text()
    start = text.index("## Architecture")
    block = text[text.index("```\npipeline/\n", start) + 4:]
    block = block[:block.index("```")]
    tree: dict[str, set[str]] = {}
    current = ""
    for line in block.splitlines():
        if not line.startswith("  ") or line.startswith("   " * 2) and not current:
            current = ""
            continue
        words = line[:62].split()   # the first column: package and module names
        if line.startswith("  ") and not line.startswith("   "):
            current = words[0].rstrip("/") if words else ""
            words = words[1:]
        if current:
            tree.setdefault(current, set()).update(w.rstrip("/") for w in words)
    return tree


def test_the_readme_tree_matches_the_code() -> None:
    tree = _readme_tree()
    problems = []
    for layer in LAYERS:
        modules = {p.stem for p in (PKG / layer).glob("*.py") if p.stem != "__init__"}
        modules |= {p.name for p in (PKG / layer).iterdir()
                    if p.is_dir() and (p / "__init__.py").exists()}
        listed = tree.get(layer, set())
        problems += [f"{layer}/{m} is not in the README tree" for m in sorted(modules - listed)]
        problems += [f"{layer}/{m} is in the README tree but not in the code"
                     for m in sorted(listed - modules)]
    for entry in ("cli.py", "tasks.py", "__main__.py"):
        if entry not in tree or not (PKG / entry).exists():
            problems.append(f"pipeline/{entry}: README tree and code disagree")
    assert not problems, problems
