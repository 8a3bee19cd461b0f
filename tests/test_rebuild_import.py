"""rebuild for an imported image: re-imports only when the source file changes."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.lineage import store as lineage
from pipeline.core.config import parse_settings
from pipeline_dev.diskimage import ImageSpec, build_image, root_tree
from pipeline.lifecycle.rebuild import rebuild

MiB = 1024 * 1024


def _disk(tmp_path: Path, extra: dict[str, bytes | str] | None = None) -> Path:
    tree = root_tree(tmp_path / "root", "al2023", extra=extra)
    return build_image(tree, tmp_path / "node.raw", ImageSpec(fs="ext4", table="gpt",
                                                              fmt="raw", size=64 * MiB))


def _settings(tmp_path: Path, endpoint: str, source: Path) -> Any:
    raw = {"aws": {"region": "us-east-1", "endpoint_url": endpoint, "max_attempts": 2},
           "build": {"ssm_prefix": "/eks-ami-pipeline", "state_dir": str(tmp_path / "build")},
           "images": [{"name": "imported", "require": "nodeadm", "max_age_days": 30,
                       "import": {"source": str(source), "method": "snapshot"}}]}
    return parse_settings(raw, source=tmp_path / "pipeline.yaml")


def test_import_rebuild_follows_the_source_file(tmp_path: Path, endpoint: str,
                                                clients: Any) -> None:
    source = _disk(tmp_path)
    settings = _settings(tmp_path, endpoint, source)

    first = rebuild(settings, clients).images[0]
    assert (first.decision, first.status) == ("rebuild", "succeeded"), first.error
    assert first.reason == "no successful build yet"
    built = lineage.latest_successful(settings, clients, "imported")
    assert built is not None and built.build_id == first.build_id

    again = rebuild(settings, clients).images[0]
    assert (again.decision, again.status) == ("skip", "skipped")

    _disk(tmp_path, extra={"etc/motd": "patched\n"})          # same path, new content
    changed = rebuild(settings, clients).images[0]
    assert (changed.decision, changed.status) == ("rebuild", "succeeded"), changed.error
    assert changed.reason.startswith("source file changed")
    assert changed.image_ids["us-east-1"] != first.image_ids["us-east-1"]
    assert changed.inputs["source_content_id"] != first.inputs["source_content_id"]
