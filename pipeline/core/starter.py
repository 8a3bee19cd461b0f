"""``eks-ami init [DIR]``: a starter ``pipeline.yaml`` and a copy of the Packer template.

Both come from the package data (``pipeline/data/``), so an installed ``eks-ami`` can start
a project anywhere. Nothing is overwritten: an existing file is an input error naming it,
unless ``force`` is given.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import InputError

__all__ = ["DATA", "EXAMPLE_CONFIG", "TEMPLATE_DIR", "StarterFiles", "write_starter"]

DATA = Path(__file__).resolve().parents[1] / "data"
EXAMPLE_CONFIG = DATA / "pipeline.example.yaml"
TEMPLATE_DIR = DATA / "packer" / "eks-node"


@dataclass(frozen=True, slots=True)
class StarterFiles:
    """What ``init`` wrote."""

    directory: Path
    config: Path
    template: Path
    files: tuple[Path, ...]

    def summary(self) -> str:
        return (f"wrote {self.config} and the Packer template {self.template}/ "
                f"({len(self.files)} files); edit the cluster, bucket and instance profile, "
                f"then run `eks-ami check-config -c {self.config}`")


def write_starter(directory: str | Path = ".", *, force: bool = False) -> StarterFiles:
    """Write ``DIR/pipeline.yaml`` and ``DIR/packer/eks-node/`` (the packaged template)."""
    root = Path(directory).expanduser()
    if root.exists() and not root.is_dir():
        raise InputError(f"init: {root} exists and is not a directory; give a folder path")
    config = root / "pipeline.yaml"
    template = root / "packer" / "eks-node"
    sources = sorted(p for p in TEMPLATE_DIR.rglob("*") if p.is_file())
    targets = [config] + [template / p.relative_to(TEMPLATE_DIR) for p in sources]
    if not force:
        existing = [t for t in targets if t.exists()]
        if existing:
            raise InputError(f"init: {existing[0]} already exists; pass --force to overwrite "
                             "or choose another folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(EXAMPLE_CONFIG, config)
        for src, dst in zip(sources, targets[1:]):
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            shutil.copymode(src, dst)
    except OSError as err:
        raise InputError(f"init: cannot write into {root}: {err.strerror}; "
                         "choose a writable folder") from err
    return StarterFiles(directory=root, config=config, template=template,
                        files=tuple(targets))
