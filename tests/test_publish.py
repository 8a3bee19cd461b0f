"""publish/promote/rollback/template-diff against the emulator; versions decoded and asserted."""
from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from pipeline.publish import karpenter as kp
from pipeline.aws.clients import Clients
from pipeline.core.errors import InputError
from pipeline.publish import user_data as ud
from pipeline.aws.templates import list_versions
from pipeline.aws.ssm import get_pointer, list_pointers
from pipeline.publish.release import PublishRequest, promote, publish, rollback, template_diff

from test_publish_support import (TEMPLATE, clients, example_raw, module_clients,  # noqa: F401
                                  node_security_group, settings_for,
                                  verified_ami, version_count)


def _version(clients, number: int) -> dict:
    resp = clients.client("ec2").describe_launch_template_versions(
        LaunchTemplateName=TEMPLATE, Versions=[str(number)])
    return resp["LaunchTemplateVersions"][0]


def _default(clients) -> int:
    resp = clients.client("ec2").describe_launch_templates(LaunchTemplateNames=[TEMPLATE])
    return resp["LaunchTemplates"][0]["DefaultVersionNumber"]


@pytest.fixture
def sg(clients) -> str:
    return node_security_group(clients)


@pytest.fixture
def settings(tmp_path, sg):
    return settings_for(example_raw(tmp_path, sg_ids=[sg], karpenter=True), tmp_path)


def test_create_then_decode_the_version(emulator, realistic_emulator, clients, settings, sg):
    ami = verified_ami(emulator, clients)
    res = publish(settings, clients, PublishRequest(ami_id=ami, create=True))
    assert (res.created, res.template_created, res.version, res.default_version) == (True, True, 1, 1)
    assert res.image_id == ami and res.mechanism == "nodeadm"

    v = _version(clients, 1)
    data = v["LaunchTemplateData"]
    text = base64.b64decode(data["UserData"]).decode()
    assert text == ud.render(settings, "nodeadm", "mime")
    assert res.user_data_sha256 == __import__("hashlib").sha256(text.encode()).hexdigest()
    assert ud.lint(text, mechanism="nodeadm", cluster=settings.cluster) == []
    assert data["ImageId"] == ami
    assert data["IamInstanceProfile"] == {"Name": "eks-node-profile"}
    assert data["SecurityGroupIds"] == [sg]
    assert "InstanceType" not in data and "NetworkInterfaces" not in data
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    root = [b for b in data["BlockDeviceMappings"] if b["Ebs"].get("Encrypted")]
    assert root, data["BlockDeviceMappings"]
    desc = v["VersionDescription"]
    assert len(desc) <= 255
    assert f"ami={ami}" in desc and "build=b-20261125170000-abcdef" in desc
    assert "verify=ok/nodeadm" in desc
    # NodeConfig carries the cluster's values
    nodeconfig = yaml.safe_load(text.split("application/node.eks.aws\n\n", 1)[1].split("\n--", 1)[0])
    assert nodeconfig["spec"]["cluster"]["name"] == "demo"
    assert nodeconfig["spec"]["kubelet"]["config"]["maxPods"] == 110
    # the SSM pointer names the AMI, typed aws:ec2:image
    param = clients.client("ssm").get_parameter(Name="/eks-ami-pipeline/eks-node-al2023/candidate")
    assert param["Parameter"]["Value"] == ami
    assert param["Parameter"]["DataType"] == "aws:ec2:image"
    assert res.pointer == "/eks-ami-pipeline/eks-node-al2023/candidate"
    # Karpenter template with the configured version: manifests written and valid
    assert len(res.karpenter_manifests) == 2
    for path in res.karpenter_manifests:
        assert kp.validate(yaml.safe_load(Path(path).read_text())) == []


def test_second_run_creates_nothing(emulator, clients, settings):
    ami = verified_ami(emulator, clients)
    first = publish(settings, clients, PublishRequest(ami_id=ami, create=True))
    ami2 = verified_ami(emulator, clients)
    second = publish(settings, clients, PublishRequest(ami_id=ami2))
    assert second.created and second.version == 2 and second.default_version == 2
    before = version_count(clients)
    again = publish(settings, clients, PublishRequest(ami_id=ami2))
    assert version_count(clients) == before == 2
    assert (again.created, again.version, again.default_version) == (False, 2, 2)
    assert again.template_id == first.template_id
    # --create on an existing template publishes into it instead of failing
    third = publish(settings, clients, PublishRequest(ami_id=ami2, create=True))
    assert (third.created, third.version) == (False, 2)
    assert version_count(clients) == 2


def test_staged_rerun_returns_the_same_version_by_client_token(emulator, clients, settings):
    """--no-default twice: the same ClientToken returns the existing version (EC2 idempotency)."""
    ami = verified_ami(emulator, clients)
    publish(settings, clients, PublishRequest(ami_id=ami, create=True))
    ami2 = verified_ami(emulator, clients)
    staged = publish(settings, clients, PublishRequest(ami_id=ami2, set_default=False))
    assert staged.created and (staged.version, staged.default_version) == (2, 1)
    assert "invoke promote" in staged.summary()
    again = publish(settings, clients, PublishRequest(ami_id=ami2, set_default=False))
    assert (again.created, again.version) == (False, 2)
    assert version_count(clients) == 2
    assert _default(clients) == 1


def test_source_version_inherits_and_overlays(emulator, clients, settings, sg):
    ec2 = clients.client("ec2")
    ec2.create_launch_template(LaunchTemplateName=TEMPLATE, LaunchTemplateData={
        "ImageId": "ami-00000000000000001", "KeyName": "ops", "Monitoring": {"Enabled": True},
        "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 3}})
    ami = verified_ami(emulator, clients)
    res = publish(settings, clients, PublishRequest(ami_id=ami, source_version=1))
    data = _version(clients, res.version)["LaunchTemplateData"]
    assert data["ImageId"] == ami
    assert data["KeyName"] == "ops" and data["Monitoring"] == {"Enabled": True}
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 3  # kept, not overwritten
    assert res.secure_defaults == ["BlockDeviceMappings[/dev/xvda].Ebs.Encrypted=true"]


def test_promote_rollback_diff_and_pointers(emulator, clients, tmp_path, sg):
    raw = example_raw(tmp_path, sg_ids=[sg], karpenter=True)
    s1 = settings_for(raw, tmp_path)
    raw["launch_templates"][0]["user_data"]["max_pods"] = 58
    s2 = settings_for(raw, tmp_path)
    ami1, ami2 = verified_ami(emulator, clients), verified_ami(emulator, clients)
    publish(s1, clients, PublishRequest(ami_id=ami1, create=True))
    r2 = publish(s2, clients, PublishRequest(ami_id=ami2))
    # a third version with the same AMI as v2 (staged): rollback must skip it
    r3 = publish(s1, clients, PublishRequest(ami_id=ami2, set_default=False, channel="canary"))
    assert (r2.version, r3.version, _default(clients)) == (2, 3, 2)
    prom = promote(s1, clients, TEMPLATE, 3, channel="stable")
    assert prom.changed and (prom.previous_default_version, prom.version) == (2, 3)
    assert _default(clients) == 3
    assert get_pointer(clients, "/eks-ami-pipeline", "eks-node-al2023", "stable").ami_id == ami2

    rb = rollback(s1, clients, TEMPLATE, channel="stable")
    assert (rb.from_version, rb.to_version) == (3, 1)         # v2 has the same AMI as v3
    assert (rb.from_image_id, rb.to_image_id) == (ami2, ami1)
    assert _default(clients) == 1
    assert get_pointer(clients, "/eks-ami-pipeline", "eks-node-al2023", "stable").ami_id == ami1
    assert rb.pointer_previous == ami2 and f"{ami2} -> {ami1}" in rb.summary()
    # only the named channel moved; without --channel the template's own one moves
    channels = {p.channel: p.ami_id for p in list_pointers(clients, "/eks-ami-pipeline")}
    assert channels == {"candidate": ami2, "stable": ami1, "canary": ami2}
    promote(s1, clients, TEMPLATE, 2)
    rb2 = rollback(s1, clients, TEMPLATE)
    assert (rb2.to_version, rb2.pointer) == (1, "/eks-ami-pipeline/eks-node-al2023/candidate")
    assert get_pointer(clients, "/eks-ami-pipeline", "eks-node-al2023", "candidate").ami_id == ami1

    diff = template_diff(clients, TEMPLATE, 1, 2)
    assert (diff.from_image_id, diff.to_image_id) == (ami1, ami2)
    assert "-      maxPods: 110" in diff.user_data_diff and "+      maxPods: 58" in diff.user_data_diff
    same = template_diff(clients, TEMPLATE, 2, 3)
    assert same.user_data_diff != "" and same.from_image_id == same.to_image_id == ami2
    default_vs_latest = template_diff(clients, TEMPLATE)
    assert (default_vs_latest.from_version, default_vs_latest.to_version) == (1, 3)
    assert f"ImageId: {ami1} -> {ami2}" in default_vs_latest.summary()

    with pytest.raises(InputError, match="expected a version number"):
        promote(s1, clients, TEMPLATE, "two")
    with pytest.raises(InputError, match="version not found"):
        promote(s1, clients, TEMPLATE, 42)
    again = promote(s1, clients, TEMPLATE, "1")  # rb2 made v1 the default
    assert not again.changed and "already is the default" in again.summary()


def test_rollback_without_an_earlier_different_ami_is_refused(emulator, clients, settings):
    ami = verified_ami(emulator, clients)
    publish(settings, clients, PublishRequest(ami_id=ami, create=True))
    with pytest.raises(Exception) as exc:
        rollback(settings, clients, TEMPLATE)
    assert getattr(exc.value, "exit_code", None) == 2
    assert "nothing to roll back to" in str(exc.value)
    assert _default(clients) == 1


def test_api_call_budget(emulator, clients, settings):
    """At most 5 EC2 calls for one publish, plus SSM GetParameter (the pointer's undo) and
    PutParameter for the channel."""
    ami = verified_ami(emulator, clients)
    publish(settings, clients, PublishRequest(ami_id=ami, create=True))
    ami2 = verified_ami(emulator, clients)
    calls: list[str] = []
    counted = Clients(clients.settings)   # a fresh factory: the hooks must not outlive the test
    for service in ("ec2", "ssm", "sts", "iam"):
        counted.client(service).meta.events.register(
            "before-call", lambda model, **_: calls.append(model.name))
    clients = counted
    res = publish(settings, clients, PublishRequest(ami_id=ami2))
    assert res.created and res.default_version == 2
    ec2_calls = [c for c in calls if c not in ("GetParameter", "PutParameter")]
    assert ec2_calls == ["DescribeImages", "DescribeLaunchTemplateVersions",
                         "DescribeSecurityGroups", "CreateLaunchTemplateVersion",
                         "ModifyLaunchTemplate"]
    assert calls[-2:] == ["GetParameter", "PutParameter"] and len(calls) == 7
    calls.clear()
    publish(settings, clients, PublishRequest(ami_id=ami2))     # the rerun is cheaper
    assert "CreateLaunchTemplateVersion" not in calls and len(calls) <= 6


def test_unverified_needs_the_flag_and_then_uses_the_configured_mechanism(emulator, clients, settings):
    ami = verified_ami(emulator, clients, verdict=None)
    res = publish(settings, clients, PublishRequest(ami_id=ami, create=True, allow_unverified=True))
    assert res.mechanism == "nodeadm"            # images[].require: nodeadm
    assert "verify=none/nodeadm" in res.description


def test_bootstrap_sh_image_gets_bootstrap_user_data_and_al2_nodeclass(emulator, clients, tmp_path, sg):
    raw = example_raw(tmp_path, sg_ids=[sg], karpenter=False)
    raw["images"][0]["require"] = "bootstrap.sh"
    settings = settings_for(raw, tmp_path)
    ami = verified_ami(emulator, clients, "al2", mechanism="bootstrap.sh")
    res = publish(settings, clients, PublishRequest(ami_id=ami, create=True, karpenter="v1"))
    text = base64.b64decode(_version(clients, 1)["LaunchTemplateData"]["UserData"]).decode()
    assert "Content-Type: text/x-shellscript" in text and "/etc/eks/bootstrap.sh \\" in text
    docs = [yaml.safe_load(Path(p).read_text()) for p in res.karpenter_manifests]
    nodeclass = next(d for d in docs if d["kind"] == "EC2NodeClass")
    assert nodeclass["spec"]["amiFamily"] == "AL2"
    assert nodeclass["spec"]["amiSelectorTerms"] == [   # follows the channel's pointer
        {"ssmParameter": "/eks-ami-pipeline/eks-node-al2023/candidate"}]
    assert "bootstrap.sh" not in nodeclass["spec"]["userData"].replace("# eks-ami", "")  \
        or "appends the /etc/eks/bootstrap.sh" in nodeclass["spec"]["userData"]
    res2 = publish(settings, clients, PublishRequest(ami_id=ami, karpenter="v1alpha5"))
    prov = yaml.safe_load(Path(res2.karpenter_manifests[0]).read_text())
    assert prov["kind"] == "Provisioner" and prov["spec"]["provider"]["launchTemplate"] == TEMPLATE
    assert res2.created is False


def test_rules_only_warn_for_a_template_not_configured_for_karpenter(emulator, clients, tmp_path):
    raw = example_raw(tmp_path, karpenter=False, instance_profile=None)
    settings = settings_for(raw, tmp_path)
    ami = verified_ami(emulator, clients)
    res = publish(settings, clients, PublishRequest(ami_id=ami, create=True))
    assert res.created
    joined = " | ".join(res.warnings)
    assert "IamInstanceProfile is missing" in joined and "no SecurityGroupIds" in joined


def test_end_to_end_with_verify_on_the_seeded_al2023_base(emulator, clients, settings):
    """The real verify step tags the public AL2023 base; publish trusts only those tags."""
    from pipeline.lineage.verify_ami import verify_ami

    name = "/aws/service/eks/optimized-ami/1.31/amazon-linux-2023/x86_64/standard/recommended/image_id"
    base = clients.client("ssm").get_parameter(Name=name)["Parameter"]["Value"]
    with pytest.raises(Exception) as exc:
        publish(settings, clients, PublishRequest(ami_id=base, create=True))
    assert "no verification record" in str(exc.value)
    assert version_count(clients) == 0
    report = verify_ami(clients, base, tag=True)
    assert report.verdict == "ok" and report.mechanism == "nodeadm"
    res = publish(settings, clients, PublishRequest(ami_id=base, create=True))
    assert res.mechanism == "nodeadm" and res.version == 1
    desc = _version(clients, 1)["VersionDescription"]
    assert "verify=ok/nodeadm" in desc


def test_a_failure_after_creating_undoes_the_version_and_the_default(emulator, clients, tmp_path, sg):
    """IAM denying ssm:PutParameter (here: the reserved /aws prefix) must not leave v2 behind."""
    raw = example_raw(tmp_path, sg_ids=[sg], karpenter=True)
    ok = settings_for(raw, tmp_path)
    ami1 = verified_ami(emulator, clients)
    publish(ok, clients, PublishRequest(ami_id=ami1, create=True))
    raw["build"]["ssm_prefix"] = "/aws/reserved"
    raw["launch_templates"].append(dict(raw["launch_templates"][0], name="other-nodes"))
    denied = settings_for(raw, tmp_path)
    with pytest.raises(Exception) as exc:
        publish(denied, clients, PublishRequest(ami_id=verified_ami(emulator, clients),
                                                template=TEMPLATE))
    assert getattr(exc.value, "exit_code", None) == 1 and "SSM pointer" in str(exc.value)
    assert [v.version for v in list_versions(clients.client("ec2"), TEMPLATE)] == [1]
    assert _default(clients) == 1
    # a template created by the failed run is removed as a whole
    with pytest.raises(Exception, match="SSM pointer"):
        publish(denied, clients, PublishRequest(ami_id=ami1, template="other-nodes", create=True,
                                                channel="candidate"))
    assert clients.client("ec2").describe_launch_templates(
        Filters=[{"Name": "launch-template-name", "Values": ["other-nodes"]}])["LaunchTemplates"] == []


def test_listing_pages_through_many_versions(emulator, clients):
    """Rollback reads every version: DescribeLaunchTemplateVersions pages (MaxResults/NextToken)."""
    ec2 = clients.client("ec2")
    ec2.create_launch_template(LaunchTemplateName=TEMPLATE,
                               LaunchTemplateData={"ImageId": "ami-00000000000000001"})
    for _ in range(21):
        ec2.create_launch_template_version(LaunchTemplateName=TEMPLATE, SourceVersion="1",
                                           LaunchTemplateData={"ImageId": "ami-00000000000000002"})
    pages: list[int] = []

    def count(parsed, **_):
        pages.append(len(parsed["LaunchTemplateVersions"]))

    event = "after-call.ec2.DescribeLaunchTemplateVersions"
    ec2.meta.events.register(event, count)
    try:
        versions = list_versions(ec2, TEMPLATE, page_size=5)
    finally:
        ec2.meta.events.unregister(event, count)
    assert [v.version for v in versions] == list(range(1, 23))
    assert pages == [5, 5, 5, 5, 2]
    assert versions[0].image_id == "ami-00000000000000001" and versions[0].default


def test_republishing_an_older_ami_names_the_version_to_promote(emulator, clients, settings):
    """Same ClientToken, other SourceVersion: EC2 answers IdempotentParameterMismatch."""
    ami1, ami2 = verified_ami(emulator, clients), verified_ami(emulator, clients)
    publish(settings, clients, PublishRequest(ami_id=ami1, create=True))
    publish(settings, clients, PublishRequest(ami_id=ami2))
    with pytest.raises(InputError, match=r"already version 1 .*--version 1` to serve it"):
        publish(settings, clients, PublishRequest(ami_id=ami1))      # now from v2, not v1
    assert version_count(clients) == 2 and _default(clients) == 2
