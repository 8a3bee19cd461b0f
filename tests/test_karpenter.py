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


def test_v1_nodeclass_follows_the_channel_pointer_with_al2023_user_data(settings):
    lt = settings.launch_template(None)
    kinds = _by_kind(kp.render_manifests(settings, "v1", template=lt, ami_id=AMI,
                                         mechanism=ud.NODEADM))
    nc, pool = kinds["EC2NodeClass"], kinds["NodePool"]
    assert nc["apiVersion"] == "karpenter.k8s.aws/v1"
    assert nc["spec"]["amiSelectorTerms"] == [
        {"ssmParameter": "/eks-ami-pipeline/eks-node-al2023/candidate"}]
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
    (lambda b: b["spec"].update(role="r"), "must specify exactly one of ['role', 'instanceProfile']"),
    (lambda b: b["spec"].update(amiSelectorTerms=[{"id": AMI, "name": "x"}]), "mutually exclusive"),
    (lambda b: b["spec"].update(amiSelectorTerm=[{"id": AMI}]), "spec.amiSelectorTerm: unknown field"),
    (lambda b: b["spec"]["metadataOptions"].update(httpToken="required"),
     "spec.metadataOptions.httpToken: unknown field"),
    (lambda b: b["spec"].update(tags={"karpenter.sh/nodepool": "x"}), "restricted tag"),
    (lambda b: b["metadata"].update(label={"a": "b"}), "metadata.label: unknown field"),
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


# --------------------------------------------------------------------------- CRD + CEL

EXAMPLES = Path(__file__).parent / "data" / "upstream" / "karpenter" / "examples-v1"
V1 = [("karpenter.k8s.aws/v1", "EC2NodeClass"), ("karpenter.sh/v1", "NodePool")]


def _examples():
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path.name, doc


def test_karpenters_own_v1_examples_are_accepted():
    seen = [(name, doc["kind"], kp.validate(doc)) for name, doc in _examples()]
    assert len(seen) == 10
    assert [s for s in seen if s[2]] == []


def test_every_cel_rule_of_the_v1_crds_is_evaluated():
    from pipeline.publish import crd_schema
    rules = [r for api, kind in V1 for r in crd_schema.cel_rules(kp.crd_schema(api, kind))]
    assert len(rules) == 74 and sum(r.transition for r in rules) == 3
    for rule in rules:
        if not rule.transition:
            crd_schema._program(rule.rule)  # compiles with cel-python plus the k8s functions
    # no rule errors on Karpenter's examples (an evaluation error would be reported as a problem)
    assert not [p for _, doc in _examples() for p in kp.validate(doc) if "could not be" in p]


@pytest.mark.parametrize("labels, expect", [
    ({"karpenter.sh/nodepool": "x"}, 'label "karpenter.sh/nodepool" is restricted'),
    ({"kubernetes.io/hostname": "x"}, 'label "kubernetes.io/hostname" is restricted'),
    ({"karpenter.sh/custom": "x"}, 'label domain "karpenter.sh" is restricted'),
    ({"karpenter.k8s.aws/custom": "4"}, 'label domain "karpenter.k8s.aws" is restricted'),
])
def test_restricted_labels_from_the_config_are_refused(settings, labels, expect):
    lt = settings.launch_template(None)
    lt = replace(lt, user_data=replace(lt.user_data, labels=labels))
    with pytest.raises(LintError) as exc:
        kp.render_manifests(settings, "v1", template=lt, ami_id=AMI, mechanism=ud.NODEADM)
    assert any(expect in p for p in exc.value.problems), exc.value.problems


def test_nodepool_requirement_rules(settings):
    lt = settings.launch_template(None)
    pool = _by_kind(kp.render_manifests(settings, "v1", template=lt, ami_id=AMI,
                                        mechanism=ud.NODEADM))["NodePool"]
    body = copy.deepcopy(pool)
    body["spec"]["template"]["spec"]["requirements"] += [
        {"key": "karpenter.k8s.aws/instance-cpu", "operator": "Gt", "values": ["a", "b"]},
        {"key": "kubernetes.io/arch", "operator": "In", "values": []}]
    problems = kp.validate(body)
    assert any("'Gt', 'Lt', 'Gte', or 'Lte' must have" in p for p in problems), problems
    assert any("operator 'In' must have a value" in p for p in problems), problems


def test_v1alpha5_refuses_unknown_fields():
    body = {"apiVersion": "karpenter.sh/v1alpha5", "kind": "Provisioner", "metadata": {"name": "x"},
            "spec": {"provider": {"launchTemplate": "t"}, "ttlSecondsAfterEmpt": 30}}
    assert any("spec.ttlSecondsAfterEmpt: unknown field" in p for p in kp.validate(body))


@pytest.mark.parametrize("selector, terms", [
    ("id", [{"id": AMI}]),
    ("tags", [{"tags": {"eks-ami-pipeline:image-name": "eks-node-al2023"}, "owner": "self"}]),
    ("ssm", [{"ssmParameter": "/eks-ami-pipeline/eks-node-al2023/stable"}]),
])
def test_ami_selector_options(settings, selector, terms, tmp_path):
    lt = settings.launch_template(None)
    nc_m = next(m for m in kp.render_manifests(settings, "v1", template=lt, ami_id=AMI,
                                               mechanism=ud.NODEADM, ami_selector=selector,
                                               channel="stable")
                if m.kind == "EC2NodeClass")
    assert nc_m.body["spec"]["amiSelectorTerms"] == terms
    (path,) = kp.write_manifests([nc_m], tmp_path)
    text = path.read_text()
    assert yaml.safe_load(text) == nc_m.body and "&id" not in text   # no YAML anchors
    if selector == "ssm":
        assert "caches custom parameters for 5 minutes" in text and "--ami-refresh-interval" in text
    with pytest.raises(InputError, match="karpenter.ami_selector"):
        kp.render_manifests(settings, "v1", template=lt, ami_id=AMI, mechanism=ud.NODEADM,
                            ami_selector="name")


def test_config_selects_the_ami_selector(tmp_path):
    raw = example_raw(tmp_path, sg_ids=["sg-0123456789abcdef0"], karpenter=True)
    raw["karpenter"]["ami_selector"] = "id"
    s = settings_for(raw, tmp_path)
    assert s.karpenter.ami_selector == "id"
    raw["karpenter"]["ami_selector"] = "alias"
    with pytest.raises(Exception, match="ami_selector"):
        settings_for(raw, tmp_path)
