"""migrate-template: a v0.x-style custom launch template (the seed's KarpenterCustomLaunchTemplate
shape: instance profile, AMI, bootstrap.sh user data with kubelet labels, a gp3 root volume,
security groups) read from the emulator and written as a validated Karpenter v1 EC2NodeClass."""
from __future__ import annotations

import base64

import pytest
import yaml

from pipeline.core.errors import InputError
from pipeline.publish import karpenter as kp
from pipeline.publish import user_data as ud
from pipeline.publish.migrate import migrate_template

from test_publish_support import (clients, example_raw, module_clients,  # noqa: F401
                                  node_security_group, settings_for, verified_ami)

SEED = "KarpenterCustomLaunchTemplate"


@pytest.fixture
def settings(tmp_path, clients):
    raw = example_raw(tmp_path, sg_ids=[node_security_group(clients)], karpenter=True)
    return settings_for(raw, tmp_path)


def _seed_template(clients, settings, ami: str, sg: str, **extra) -> None:
    c = settings.cluster
    script = ("#!/bin/bash\nset -o xtrace\necho 'custom set-up'\n"
              f"/etc/eks/bootstrap.sh '{c.name}' \\\n"
              f"  --apiserver-endpoint '{c.endpoint}' --b64-cluster-ca '{c.certificate_authority}' \\\n"
              "  --kubelet-extra-args '--node-labels=karpenter.sh/provisioner-name=default,team=web "
              "--register-with-taints=dedicated=web:NoSchedule --max-pods=58 --v=2'\n")
    data = {
        "IamInstanceProfile": {"Name": "KarpenterNodeInstanceProfile"},
        "ImageId": ami,
        "UserData": base64.b64encode(script.encode()).decode(),
        "BlockDeviceMappings": [{"DeviceName": "/dev/xvda",
                                 "Ebs": {"VolumeSize": 80, "VolumeType": "gp3", "Encrypted": True}}],
        "SecurityGroupIds": [sg],
        "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 2},
        "TagSpecifications": [{"ResourceType": "instance", "Tags": [
            {"Key": "team", "Value": "web"},
            {"Key": f"kubernetes.io/cluster/{c.name}", "Value": "owned"}]}],
        **extra,
    }
    clients.client("ec2").create_launch_template(LaunchTemplateName=SEED, LaunchTemplateData=data)


def test_seed_template_becomes_a_valid_ec2nodeclass(emulator, clients, settings, tmp_path):
    ami = verified_ami(emulator, clients, "al2", mechanism="bootstrap.sh")
    sg = settings.launch_templates[0].security_group_ids[0]
    _seed_template(clients, settings, ami, sg, InstanceType="m5.large",
                   Placement={"AvailabilityZone": "us-east-1a"},
                   NetworkInterfaces=[{"DeviceIndex": 0, "AssociatePublicIpAddress": False}])
    res = migrate_template(settings, clients, SEED, output_dir=tmp_path / "out")
    nc, pool = res.nodeclass["spec"], res.nodepool["spec"]["template"]
    assert res.nodeclass["metadata"]["name"] == "karpentercustomlaunchtemplate"
    assert nc["amiFamily"] == "AL2" and nc["amiSelectorTerms"] == [{"id": ami}]
    assert nc["instanceProfile"] == "KarpenterNodeInstanceProfile"
    assert nc["securityGroupSelectorTerms"] == [{"id": sg}]
    assert nc["blockDeviceMappings"] == [{"deviceName": "/dev/xvda", "rootVolume": True, "ebs": {
        "volumeSize": "80Gi", "volumeType": "gp3", "encrypted": True}}]
    assert nc["metadataOptions"] == {"httpTokens": "required", "httpPutResponseHopLimit": 2}
    assert nc["tags"] == {"team": "web"}
    assert nc["kubelet"] == {"maxPods": 58}
    assert pool["metadata"]["labels"] == {"team": "web"}
    assert pool["spec"]["taints"] == [{"key": "dedicated", "value": "web", "effect": "NoSchedule"}]
    # the user part keeps the custom set-up and loses the bootstrap call Karpenter appends
    assert "custom set-up" in nc["userData"] and ud.detect_mechanism(nc["userData"]) is None
    lost = "\n".join(res.not_carried)
    for what in ("NetworkInterfaces", "Placement", "kubernetes.io/cluster/",
                 "karpenter.sh/provisioner-name", "--v=2"):
        assert what in lost, what
    assert any(n.startswith("InstanceType:") and "m5.large" in n for n in res.not_carried)
    assert all("instance-type" not in r["key"] for r in pool["spec"]["requirements"])
    assert kp.validate(res.nodeclass) == [] and kp.validate(res.nodepool) == []
    written = [yaml.safe_load(open(p)) for p in res.manifests]
    assert written == [res.nodeclass, res.nodepool]
    assert "not carried over: NetworkInterfaces" in res.summary()


def test_a_configured_template_follows_its_channel(emulator, clients, settings, tmp_path):
    ami = verified_ami(emulator, clients)
    lt = settings.launch_templates[0]
    text = ud.render(settings, ud.NODEADM, "mime")
    clients.client("ec2").create_launch_template(LaunchTemplateName=lt.name, LaunchTemplateData={
        "ImageId": ami, "UserData": ud.encode(text), "SecurityGroupIds": list(lt.security_group_ids),
        "IamInstanceProfile": {"Arn": "arn:aws:iam::123456789012:instance-profile/eks-node-profile"}})
    res = migrate_template(settings, clients, lt.name, 1, output_dir=tmp_path)
    assert res.nodeclass["spec"]["amiFamily"] == "AL2023"
    assert res.nodeclass["spec"]["amiSelectorTerms"] == [
        {"ssmParameter": "/eks-ami-pipeline/eks-node-al2023/candidate"}]
    assert res.nodeclass["spec"]["instanceProfile"] == "eks-node-profile"
    assert res.nodeclass["spec"]["userData"] == text
    pinned = migrate_template(settings, clients, lt.name, output_dir=tmp_path, ami_selector="id")
    assert pinned.nodeclass["spec"]["amiSelectorTerms"] == [{"id": ami}]


def test_resolve_ssm_image_ids_become_ssm_parameter_terms(emulator, clients, settings, tmp_path):
    clients.client("ec2").create_launch_template(LaunchTemplateName="from-ssm", LaunchTemplateData={
        "ImageId": "resolve:ssm:/my/amis/eks:3"})
    res = migrate_template(settings, clients, "from-ssm", output_dir=tmp_path)
    assert res.nodeclass["spec"]["amiSelectorTerms"] == [{"ssmParameter": "/my/amis/eks"}]
    assert any(":3" in n for n in res.not_carried)
    assert res.nodeclass["spec"]["role"] == "KarpenterNodeRole-demo"


def test_bad_inputs(emulator, clients, settings):
    with pytest.raises(InputError, match="does not exist"):
        migrate_template(settings, clients, "no-such-template")
    with pytest.raises(InputError, match="expected a version number"):
        migrate_template(settings, clients, "no-such-template", "two")
