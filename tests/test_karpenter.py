"""Karpenter manifests: shapes, family user data, and validation against the vendored CRD schemas."""
from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from pipeline.publish import karpenter as kp
from pipeline.publish import user_data as ud
from pipeline.core.errors import InputError, LintError

from test_publish_support import example_raw, settings_for

AMI = "ami-0123456789abcdef0"


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("karpenter")
    raw = example_raw(tmp, sg_ids=["sg-0123456789abcdef0"], karpenter=True)
    raw["launch_templates"][0]["user_data"]["taints"] = ["dedicated=gpu:NoSchedule"]
    return settings_for(raw, tmp)


def _by_kind(manifests):
    return {m.kind: m.body for m in manifests}


def test_vendored_crds_have_provenance_and_every_schema_loads():
    root = Path(kp.__file__).resolve().parents[1] / "data" / "karpenter-crds"
    note = (root / "PROVENANCE.md").read_text()
    for (api, kind), rel in kp._CRDS.items():
        assert (root / rel).is_file() and rel.split("/")[1] in note
        schema = kp.crd_schema(api, kind)
        assert schema["type"] == "object" and "spec" in schema["properties"]


def test_v1_nodeclass_pins_the_ami_with_al2023_user_data(settings):
    lt = settings.launch_template(None)
    kinds = _by_kind(kp.render_manifests(settings, "v1", template=lt, ami_id=AMI,
                                         mechanism=ud.NODEADM))
    nc, pool = kinds["EC2NodeClass"], kinds["NodePool"]
    assert nc["apiVersion"] == "karpenter.k8s.aws/v1"
    assert nc["spec"]["amiSelectorTerms"] == [{"id": AMI}]
    assert nc["spec"]["amiFamily"] == "AL2023"
    assert nc["spec"]["instanceProfile"] == "eks-node-profile" and "role" not in nc["spec"]
    assert nc["spec"]["securityGroupSelectorTerms"] == [{"id": "sg-0123456789abcdef0"}]
    assert nc["spec"]["metadataOptions"]["httpTokens"] == "required"
    assert ud.lint(nc["spec"]["userData"], mechanism=ud.NODEADM, cluster=settings.cluster) == []
    assert pool["spec"]["template"]["spec"]["nodeClassRef"] == {
        "group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"}
    assert pool["spec"]["template"]["spec"]["taints"] == [
        {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]
    assert kp.validate(nc) == [] and kp.validate(pool) == []


def test_v1_al2_user_data_leaves_bootstrap_to_karpenter(settings):
    lt = settings.launch_template(None)
    nc = _by_kind(kp.render_manifests(settings, "v1", template=lt, ami_id=AMI,
                                      mechanism=ud.BOOTSTRAP_SH))["EC2NodeClass"]
    assert nc["spec"]["amiFamily"] == "AL2"
    text = nc["spec"]["userData"]
    assert text.startswith("MIME-Version: 1.0") and "text/x-shellscript" in text
    # Karpenter appends the bootstrap.sh call; a second one in the user part would double-join
    assert not ud.detect_mechanism(text)


def test_v1alpha5_provisioner_names_the_template(settings, tmp_path):
    lt = settings.launch_template(None)
    (prov,) = kp.render_manifests(settings, "v1alpha5", template=lt, ami_id=AMI,
                                  mechanism=ud.NODEADM)
    assert prov.body["apiVersion"] == "karpenter.sh/v1alpha5"
    assert prov.body["spec"]["provider"] == {"launchTemplate": "eks-nodes"}
    (path,) = kp.write_manifests([prov], tmp_path / "out")
    assert yaml.safe_load(path.read_text()) == prov.body


@pytest.mark.parametrize("edit, expect", [
    (lambda b: b["spec"].update(amiFamily="AL3"), "spec.amiFamily: 'AL3' is not one of"),
    (lambda b: b["spec"].pop("subnetSelectorTerms"), "'subnetSelectorTerms' is a required"),
    (lambda b: b["spec"].update(amiSelectorTerms=[]), "should be non-empty"),
    (lambda b: b["spec"]["metadataOptions"].update(httpTokens="maybe"), "httpTokens"),
    (lambda b: b["spec"].update(role="r"), "exactly one of role or instanceProfile"),
    (lambda b: b["spec"]["amiSelectorTerms"][0].update(name="x"), "mutually exclusive"),
])
def test_schema_refuses_broken_nodeclasses(settings, edit, expect):
    lt = settings.launch_template(None)
    nc = _by_kind(kp.render_manifests(settings, "v1", template=lt, ami_id=AMI,
                                      mechanism=ud.NODEADM))["EC2NodeClass"]
    body = copy.deepcopy(nc)
    edit(body)
    problems = kp.validate(body)
    assert any(expect in p for p in problems), problems


def test_schema_refuses_a_broken_provisioner():
    body = {"apiVersion": "karpenter.sh/v1alpha5", "kind": "Provisioner",
            "metadata": {"name": "x"}, "spec": {"provider": "eks-nodes", "weight": 500}}
    problems = kp.validate(body)
    assert any("spec.provider" in p for p in problems)
    assert any("spec.weight" in p for p in problems)


def test_render_refuses_what_the_schema_refuses(settings):
    lt = replace(settings.launch_template(None),
                 user_data=replace(settings.launch_template(None).user_data,
                                   taints=("dedicated=gpu:Never",)))
    with pytest.raises(LintError) as exc:
        kp.render_manifests(settings, "v1", template=lt, ami_id=AMI, mechanism=ud.NODEADM)
    assert exc.value.exit_code == 2 and any("effect" in p and "Never" in p
                                           for p in exc.value.problems)
    with pytest.raises(InputError, match="expected one of v1, v1alpha5"):
        kp.render_manifests(settings, "v2", template=lt, ami_id=AMI, mechanism=ud.NODEADM)
