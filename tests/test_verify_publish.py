"""publish-template acts on what verify recorded (issue 16): a kubelet that cannot join the
configured cluster is refused, and verify's warnings are repeated.

The AMIs are real emulator AMIs; their verify tags come from ``verify_ami`` on a disk from
the factory, or are written as ``verify_ami`` writes them.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core import tags as T
from pipeline.core.errors import VerificationFailed
from pipeline.lineage.verify_ami import verify_ami
from pipeline.publish.release import PublishRequest, publish
from pipeline_dev.diskimage import ImageSpec, build_image, root_tree

from test_publish_support import (clients, example_raw, module_clients,  # noqa: F401
                                  node_security_group, settings_for, verified_ami,
                                  version_count)
from test_verify_ami import _register, _upload

MiB = 1024 * 1024


@pytest.fixture
def settings(tmp_path, clients):  # noqa: F811
    sg = node_security_group(clients)
    return settings_for(example_raw(tmp_path, sg_ids=[sg], karpenter=False), tmp_path)


def _tag(clients, ami: str, **tags: str) -> None:  # noqa: F811
    clients.client("ec2").create_tags(Resources=[ami], Tags=T.to_tag_list(tags))


def test_kubelet_newer_than_the_cluster_is_refused(emulator, clients, settings):  # noqa: F811
    assert settings.cluster.kubernetes_version == "1.31"
    ami = verified_ami(emulator, clients)
    _tag(clients, ami, **{T.VERIFY_KUBELET_VERSION: "v1.33.1-eks-1234567",
                          T.VERIFY_WARNINGS: "none"})
    with pytest.raises(VerificationFailed) as err:
        publish(settings, clients, PublishRequest(ami_id=ami, create=True))
    msg = str(err.value)
    assert "version-skew" in msg and "v1.33.1-eks-1234567" in msg and "1.31" in msg
    assert err.value.exit_code == 1
    assert version_count(clients) == 0


def test_kubelet_too_old_is_refused_and_in_range_is_published(emulator, clients,  # noqa: F811
                                                               settings):
    old = verified_ami(emulator, clients)
    _tag(clients, old, **{T.VERIFY_KUBELET_VERSION: "v1.27.16-eks-abcdef0"})
    with pytest.raises(VerificationFailed, match="more than 3 minor versions older"):
        publish(settings, clients, PublishRequest(ami_id=old, create=True))
    fine = verified_ami(emulator, clients, build_id="b-20261125170001-abcdef")
    _tag(clients, fine, **{T.VERIFY_KUBELET_VERSION: "v1.28.15-eks-abcdef0"})
    res = publish(settings, clients, PublishRequest(ami_id=fine, create=True))
    assert res.created and not any("verify warned" in w for w in res.warnings)


def test_verify_warnings_are_repeated(emulator, clients, settings, image_cache: Path):  # noqa: F811
    """verify_ami on a real disk with builder leftovers; publish repeats what it found."""
    out = image_cache / "publish-dirty.raw"
    if not out.exists():
        tree = root_tree(image_cache / "publish-dirty-tree", "al2023",
                         extra={"/etc/hostname": "ip-10-0-0-1\n",
                                "/root/.ssh/authorized_keys": "ssh-ed25519 AAAA packer\n"})
        build_image(tree, out, ImageSpec("ext4", "gpt", "raw", 64 * MiB))
    ami = _register(clients, _upload(clients, out.read_bytes()), "publish-dirty")
    _tag(clients, ami, **{T.BUILD_ID: "b-20261125170002-abcdef",
                          T.IMAGE_NAME: "eks-node-al2023"})
    report = verify_ami(clients, ami, cluster_version="1.31")
    assert report.ok and {c.name for c in report.warnings} == {"authorized-keys", "hostname"}
    res = publish(settings, clients, PublishRequest(ami_id=ami, create=True))
    joined = " | ".join(res.warnings)
    assert "verify warned: authorized-keys" in joined and "verify warned: hostname" in joined
    assert res.version == 1
