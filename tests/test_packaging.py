"""The built wheel works outside the checkout: ``eks-ami`` from a fresh virtualenv.

Builds the wheel from a copy of the source (as a clean clone would), installs it without
dependencies into a new virtualenv whose dependencies come from this test run's own
site-packages (a path line in a ``.pth``; nothing is downloaded, so this runs offline), and
runs the command from an empty folder. The checkout's own ``pipeline`` is not importable
there: the test asserts that the imported package is the installed copy.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from pipeline_dev.diskimage import MiB, ImageSpec, build_image, root_tree

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "pipeline.example.yaml", "pipeline",
           "pipeline_dev")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built with ``python -m build --no-isolation`` from a copy of the source."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name, follow_symlinks=False)
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--wheel",
                           "--outdir", str(out), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (whl,) = out.glob("eks_ami_pipeline-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv with the wheel installed (no dependencies: those come from ours)."""
    env_dir = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True,
                   timeout=120)
    py = env_dir / "bin" / "python"
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install",
                           "--quiet", "--no-deps", "--no-index", "--disable-pip-version-check",
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    site = Path(subprocess.check_output(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        text=True).strip())
    # Our site-packages as a plain path: its .pth files (the editable checkout) stay unread.
    (site / "zz_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env_dir


def _run(venv: Path, cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "PIPELINE_", "PYTHON"))}
    env.update(PATH=f"{venv / 'bin'}:{env.get('PATH', '')}", AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", NO_COLOR="1")
    return subprocess.run([str(venv / "bin" / "eks-ami"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_wheel_ships_the_data_the_command_needs(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("pipeline/__main__.py", "pipeline/py.typed",
                   "pipeline/data/pipeline.example.yaml",
                   "pipeline/data/packer/eks-node/eks-node.pkr.hcl",
                   "pipeline/data/packer/eks-node/variables.pkr.hcl",
                   "pipeline/data/packer/eks-node/provisioners/validate-bootstrap.sh",
                   "pipeline/data/rootfs/al2-bootstrap.sh",
                   "pipeline/data/schemas/verify.schema.json",
                   "pipeline/data/schemas/error.schema.json",
                   "pipeline_dev/demo.py", "pipeline_dev/emulator/server.py"):
        assert needed in names, needed
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert "License-Expression: Apache-2.0" in text
    requires = [ln for ln in text.splitlines() if ln.startswith("Requires-Dist:")]
    runtime = [r for r in requires if "extra ==" not in r]
    assert not any("hcl2" in r or "moto" in r or "pytest" in r for r in runtime), runtime
    assert any("moto" in r and 'extra == "local"' in r for r in requires)
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "eks-ami = pipeline.__main__:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_installed_command_works_outside_the_checkout(venv: Path, tmp_path: Path) -> None:
    work = tmp_path / "empty"
    work.mkdir()
    res = _run(venv, work, "--version")
    assert res.returncode == 0 and res.stdout.startswith("eks-ami "), res.stderr
    where = subprocess.check_output([str(venv / "bin" / "python"), "-c",
                                     "import pipeline, pipeline_dev; print(pipeline.__file__)"],
                                    cwd=work, text=True).strip()
    assert str(venv) in where and str(ROOT) not in where

    res = _run(venv, work, "--help")
    assert res.returncode == 0 and "verify" in res.stdout and "init" in res.stdout

    # verify --image: the fast path and the Program path give the same document.
    image = build_image(root_tree(tmp_path / "tree", "al2023"), tmp_path / "node.raw",
                        ImageSpec(table="gpt", size=64 * MiB))
    fast = _run(venv, work, "verify", "--image", str(image), "--json")
    assert fast.returncode == 0, fast.stderr
    doc = json.loads(fast.stdout)
    assert doc["schema_version"] == 1 and doc["verdict"] == "ok"
    slow = _run(venv, work, "verify", "--image", str(image), "--json", "--require", "nodeadm",
                "-c", str(work / "none.yaml"))    # -c: not the fast path
    assert slow.returncode in (0, 2), slow.stderr

    # init writes a config and the packaged template; check-config accepts it; a bake's
    # template without bake.template is the packaged one.
    res = _run(venv, work, "init", "proj")
    assert res.returncode == 0, res.stderr
    assert (work / "proj" / "pipeline.yaml").is_file()
    assert (work / "proj" / "packer" / "eks-node" / "eks-node.pkr.hcl").is_file()
    again = _run(venv, work, "init", "proj")
    assert again.returncode == 2 and "already exists" in again.stderr
    res = _run(venv, work / "proj", "check-config", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["images"][0]["bake"]["template"] == str(work / "proj" / "packer" / "eks-node")

    # Usage errors: exit 2, one line, a JSON document with --json.
    res = _run(venv, work, "prune", "--keep", "abc", "--json")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert json.loads(res.stdout)["exit_code"] == 2

    # The emulator task loads pipeline_dev from the wheel (local extra: moto from our env).
    res = _run(venv, work, "emulator", "--help")
    assert res.returncode == 0 and "--port" in res.stdout
