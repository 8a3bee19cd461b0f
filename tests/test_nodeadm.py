"""NodeConfig user data read as nodeadm reads it, on nodeadm's and Karpenter's own test inputs."""
from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

import pytest
import yaml

from pipeline.publish import nodeadm
from pipeline.publish import user_data as ud

from test_publish_support import example_raw, settings_for

DATA = Path(__file__).parent / "data" / "upstream"
NODEADM_CASES = DATA / "nodeadm"
GOLDENS = DATA / "karpenter" / "launchtemplate-testdata"


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nodeadm")
    return settings_for(example_raw(tmp), tmp)


def test_mime_userdata_merge_case_gives_nodeadms_expected_kubelet_drop_in():
    """nodeadm e2e case mime-userdata-merge: two NodeConfig parts and a shell part."""
    view = nodeadm.read_user_data((NODEADM_CASES / "mime-userdata-merge" / "config.yaml").read_bytes())
    assert view.problems == () and view.warnings == ()
    assert view.documents == 2 and view.mime and len(view.shell) == 1
    drop_in = json.loads((NODEADM_CASES / "mime-userdata-merge" /
                          "expected-kubelet-config-drop-in.json").read_text())
    expected = {k: v for k, v in drop_in.items() if k not in ("kind", "apiVersion")}
    assert view.config is not None
    assert view.config["spec"]["kubelet"]["config"] == expected
    assert nodeadm.merged_problems(view.config) == []


def test_config_check_case_good_passes_and_bad_is_refused_with_the_path():
    good = nodeadm.read_user_data((NODEADM_CASES / "config-check" / "config-good.yaml").read_bytes())
    assert good.problems == () and nodeadm.merged_problems(good.config) == []
    bad = nodeadm.read_user_data((NODEADM_CASES / "config-check" / "config-bad.yaml").read_bytes())
    assert any("spec.cluster.name-not-real: unknown field" in p for p in bad.problems)
    assert any("spec.cluster.name is missing" in p for p in nodeadm.merged_problems(bad.config))


def test_karpenters_bare_yaml_golden_is_read_whole_and_its_typo_found():
    """al2023_yaml_userdata_input.golden is bare NodeConfig YAML: no MIME needed. Its
    ``clusterEndpoint`` is not a NodeConfig field, and ``cluster-ca`` is not base64."""
    text = (GOLDENS / "al2023_yaml_userdata_input.golden").read_text()
    view = nodeadm.read_user_data(text)
    assert not view.mime and view.documents == 1
    assert [p.split(": ", 1)[1] for p in view.problems] == [
        "spec.cluster.clusterEndpoint: unknown field 'clusterEndpoint' (known here: "
        "apiServerEndpoint, certificateAuthority, cidr, enableOutpost, id, name)",
        "spec.cluster.certificateAuthority: not base64 (the field is bytes; nodeadm cannot "
        "decode it)"]
    fixed = text.replace("clusterEndpoint", "apiServerEndpoint").replace(
        "cluster-ca", base64.b64encode(b"ca").decode())
    fixed_view = nodeadm.read_user_data(fixed)
    assert fixed_view.problems == () and nodeadm.merged_problems(fixed_view.config) == []


def test_karpenters_mime_golden_without_closing_boundary_is_a_warning():
    text = (GOLDENS / "al2023_mime_userdata_input.golden").read_text()
    assert "--//--" not in text
    view = nodeadm.read_user_data(text)
    assert any("closing boundary --//-- is missing" in w for w in view.warnings)
    assert view.documents == 1 and len(view.shell) == 1


def test_karpenters_merged_golden_merges_karpenters_part_last():
    view = nodeadm.read_user_data((GOLDENS / "al2023_mime_userdata_merged.golden").read_text())
    assert view.documents == 2
    assert view.config["spec"]["kubelet"]["config"]["maxPods"] == 110   # Karpenter's part wins
    assert view.config["spec"]["cluster"]["apiServerEndpoint"] == "https://test-cluster"


def _doc(spec: dict) -> str:
    return yaml.safe_dump({"apiVersion": nodeadm.API_VERSION, "kind": "NodeConfig", "spec": spec})


CLUSTER = {"name": "my-cluster", "apiServerEndpoint": "https://example.com",
           "certificateAuthority": base64.b64encode(b"certificateAuthority").decode(),
           "cidr": "10.100.0.0/16"}


def _mime(*parts: tuple[str, bytes]) -> bytes:
    out = b'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="BOUNDARY"\n\n'
    for ctype, body in parts:
        out += b"--BOUNDARY\nContent-Type: " + ctype.encode() + b"\n\n" + body + b"\n"
    return out + b"--BOUNDARY--\n"


def test_parts_merge_in_order_flags_append_config_deep_merges():
    first = _doc({"cluster": CLUSTER, "kubelet": {"config": {"port": 1010, "maxPods": 120},
                                                  "flags": ["--v=2"]}})
    second = _doc({"kubelet": {"config": {"maxPods": 150, "podsPerCore": 20}, "flags": ["--v=5"]}})
    view = nodeadm.read_user_data(_mime((nodeadm.CONTENT_TYPE, first.encode()),
                                        (nodeadm.CONTENT_TYPE, second.encode())))
    assert view.problems == ()
    kubelet = view.config["spec"]["kubelet"]
    assert kubelet["config"] == {"port": 1010, "maxPods": 150, "podsPerCore": 20}
    assert kubelet["flags"] == ["--v=2", "--v=5"]


def test_gzip_and_base64_parts_and_whole_documents():
    doc = _doc({"cluster": CLUSTER}).encode()
    for data in (gzip.compress(doc), base64.b64encode(gzip.compress(doc)),
                 _mime((nodeadm.CONTENT_TYPE, gzip.compress(doc))),
                 _mime((nodeadm.CONTENT_TYPE, base64.b64encode(doc))),
                 base64.b64encode(gzip.compress(_mime((nodeadm.CONTENT_TYPE, doc)))),
                 json.dumps(yaml.safe_load(doc)).encode()):
        view = nodeadm.read_user_data(data)
        assert view.problems == (), data[:40]
        assert view.config["spec"]["cluster"] == CLUSTER


def test_a_multipart_without_a_nodeconfig_part_fails_as_in_nodeadm():
    view = nodeadm.read_user_data(_mime(("text/x-shellscript", b"#!/bin/bash\necho hi")))
    assert view.config is None and "could not find NodeConfig" in view.problems[0]


@pytest.mark.parametrize("spec, expect", [
    ({"kubelet": {"featureGates": {"X": True}}}, "spec.kubelet.featureGates: unknown field"),
    ({"kubelet": {"config": {"featureGates": {"InstanceIdNodeName": True}}}},
     "InstanceIdNodeName is a nodeadm feature gate"),
    ({"featureGates": {"DisableKubeletCloudCredentialProviders": True}},
     "not a nodeadm feature gate"),
    ({"instance": {"localStorage": {"strategy": "RAID5"}}},
     "spec.instance.localStorage.strategy: 'RAID5' is not one of"),
    ({"kubelet": {"flags": "--v=2"}}, "spec.kubelet.flags: '--v=2' is not of type 'array'"),
])
def test_misplaced_and_unknown_fields_are_refused_with_their_path(spec, expect):
    view = nodeadm.read_user_data(_doc({"cluster": CLUSTER, **spec}))
    assert any(expect in p for p in view.problems), view.problems


def test_typo_in_cluster_key_is_refused_then_required_field_missing(settings):
    c = settings.cluster
    cluster = {"name": c.name, "apiserverEndpoint": c.endpoint,
               "certificateAuthority": c.certificate_authority, "cidr": c.service_cidr}
    problems = ud.lint(_doc({"cluster": cluster}), mechanism=ud.NODEADM, cluster=c)
    assert any("spec.cluster.apiserverEndpoint: unknown field" in p for p in problems)
    assert any("spec.cluster.apiServerEndpoint is missing" in p for p in problems)


def test_lint_accepts_bare_yaml_and_a_nodeconfig_split_across_parts(settings):
    c = settings.cluster
    cluster = {"name": c.name, "apiServerEndpoint": c.endpoint,
               "certificateAuthority": c.certificate_authority, "cidr": c.service_cidr}
    kubelet = {"kubelet": {"config": {"clusterDNS": [c.cluster_dns_ip], "maxPods": 58}}}
    assert ud.lint(_doc({"cluster": cluster, **kubelet}), mechanism=ud.NODEADM, cluster=c) == []
    split = _mime((nodeadm.CONTENT_TYPE, _doc({"cluster": cluster}).encode()),
                  (nodeadm.CONTENT_TYPE, _doc(kubelet).encode()),
                  ("text/x-shellscript", b"#!/bin/bash\necho hi")).decode()
    assert ud.lint(split, mechanism=ud.NODEADM, cluster=c) == []
    part_two_only = _mime((nodeadm.CONTENT_TYPE, _doc(kubelet).encode())).decode()
    assert any("spec.cluster.name is missing" in p
               for p in ud.lint(part_two_only, mechanism=ud.NODEADM, cluster=c))


def test_rendered_nodeconfig_passes_nodeadms_reading(settings):
    view = nodeadm.read_user_data(ud.render(settings, ud.NODEADM, "mime"))
    assert view.problems == () and view.documents == 1
    assert nodeadm.merged_problems(view.config) == []


def test_ipv6_service_cidr_nodeconfig(settings):
    from dataclasses import replace
    from pipeline.core.config import UserDataSettings
    c = replace(settings.cluster, service_cidr="fd7e:1234:5678::/108")
    text = ud.render_for(c, UserDataSettings(), ud.NODEADM).text
    view = nodeadm.read_user_data(text)
    assert view.config["spec"]["cluster"]["cidr"] == "fd7e:1234:5678::/108"
    assert view.config["spec"]["kubelet"]["config"]["clusterDNS"] == ["fd7e:1234:5678::a"]
    assert ud.lint(text, mechanism=ud.NODEADM, cluster=c) == []
    outside = text.replace("fd7e:1234:5678::a", "fd00::a")
    assert any("outside the service CIDR" in p for p in ud.lint(outside, mechanism=ud.NODEADM,
                                                                  cluster=c))
