"""A table of bad inputs: each exits 2 (InputError/LintError) and leaves no new version or pointer move."""
from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from pipeline.publish import user_data as ud
from pipeline.core.errors import EXIT_BAD_INPUT, InputError
from pipeline.aws.ssm import get_pointer
from pipeline.publish.release import PublishRequest, publish

from test_publish_support import (TEMPLATE, clients, example_raw, module_clients,  # noqa: F401
                                  node_security_group, settings_for,
                                  verified_ami, version_count)

SEED_EXAMPLE = """#!/bin/bash
set -o xtrace
/etc/eks/bootstrap.sh ${ClusterName} --apiserver-endpoint <endpoint>
--dns-cluster-ip 10.100.0.10
"""


@dataclass
class Ctx:
    emulator: Any
    clients: Any
    tmp_path: Path
    raw: dict[str, Any]
    sg: str
    good_ami: str

    def settings(self):
        return settings_for(self.raw, self.tmp_path)

    def file(self, text: str) -> str:
        path = self.tmp_path / "user-data.txt"
        path.write_text(text, encoding="utf-8")
        return str(path)

    def al2_ami(self) -> str:
        return verified_ami(self.emulator, self.clients, "al2", mechanism="bootstrap.sh")

    def pending_ami(self) -> str:
        """A verified AMI caught in ``pending`` (as right after CreateImage/CopyImage).

        The emulator runs in this process; EC2 has no API to put an image back to pending.
        """
        from moto.ec2.models import ec2_backends

        ami = verified_ami(self.emulator, self.clients)
        ec2_backends["123456789012"]["us-east-1"].amis[ami].state = "pending"
        return ami

    def rendered(self, mechanism: str, fmt: str = "mime") -> str:
        return ud.render(self.settings(), mechanism, fmt)

    def source_version(self, **data: Any) -> int:
        """A hand-made version (as another tool would leave it) to publish from."""
        ec2 = self.clients.client("ec2")
        resp = ec2.create_launch_template_version(
            LaunchTemplateName=TEMPLATE, LaunchTemplateData={"ImageId": self.good_ami, **data})
        return int(resp["LaunchTemplateVersion"]["VersionNumber"])


Case = Callable[[Ctx], tuple[Any, PublishRequest, str]]


def _req(ctx: Ctx, **kw: Any) -> PublishRequest:
    return PublishRequest(**{"ami_id": verified_ami(ctx.emulator, ctx.clients), **kw})


CASES: dict[str, Case] = {
    "malformed AMI id": lambda c: (c.settings(), PublishRequest(ami_id="ami-xyz"),
                                   "expected an AMI id"),
    "unknown AMI": lambda c: (c.settings(), PublishRequest(ami_id="ami-0123456789abcdef0"),
                              "not found"),
    "AMI without verification": lambda c: (
        c.settings(), PublishRequest(ami_id=verified_ami(c.emulator, c.clients, verdict=None)),
        "no verification record"),
    "AMI that failed verification": lambda c: (
        c.settings(), PublishRequest(ami_id=verified_ami(c.emulator, c.clients, verdict="stub",
                                                         mechanism=None), allow_unverified=True),
        "failed verification"),
    "AMI still pending": lambda c: (c.settings(), PublishRequest(ami_id=c.pending_ami()),
                                    "not 'available'"),
    "channel that is not one path segment": lambda c: (c.settings(), _req(c, channel="a/b"),
                                                       "one path segment"),
    "AMI whose mechanism the image does not require": lambda c: (
        settings_for({**c.raw, "images": [{**c.raw["images"][0], "require": "nodeadm"},
                                          *c.raw["images"][1:]]}, c.tmp_path),
        PublishRequest(ami_id=c.al2_ami()), "require is nodeadm"),
    "template missing without --create": lambda c: (
        c.settings(), _req(c, template="other-nodes", ad_hoc=True), "pass --create"),
    "template not in the configuration": lambda c: (
        c.settings(), _req(c, template="other-nodes", create=True), "no template named"),
    "unknown source version": lambda c: (c.settings(), _req(c, source_version=9), "not found"),
    "unknown --karpenter": lambda c: (c.settings(), _req(c, karpenter="v2"), "--karpenter"),
    "missing user data file": lambda c: (
        c.settings(), _req(c, user_data_file=str(c.tmp_path / "nope")), "no such file"),
    "the seed's broken example": lambda c: (
        c.settings(), PublishRequest(ami_id=c.al2_ami(), user_data_file=c.file(SEED_EXAMPLE)),
        "without a trailing backslash"),
    "placeholder in a NodeConfig": lambda c: (
        c.settings(), _req(c, user_data_file=c.file(c.rendered("nodeadm").replace(
            c.settings().cluster.endpoint, "<endpoint>"))), "unfilled placeholder"),
    "bash -n error": lambda c: (
        c.settings(), PublishRequest(ami_id=c.al2_ami(), user_data_file=c.file(
            c.rendered("bootstrap.sh", "script") + "if true; then\n  echo unterminated\n")),
        "bash -n"),
    "CA that is not a PEM": lambda c: (
        c.settings(), PublishRequest(ami_id=c.al2_ami(), user_data_file=c.file(
            c.rendered("bootstrap.sh", "script").replace(
                c.settings().cluster.certificate_authority,
                base64.b64encode(b"not a certificate").decode()))), "PEM certificate"),
    "http endpoint": lambda c: (
        c.settings(), _req(c, user_data_file=c.file(c.rendered("nodeadm").replace(
            "https://", "http://"))), "https:// URL"),
    "DNS IP outside the service CIDR": lambda c: (
        c.settings(), PublishRequest(ami_id=c.al2_ami(), user_data_file=c.file(
            c.rendered("bootstrap.sh").replace("10.100.0.10", "172.20.0.10"))),
        "outside the service CIDR"),
    "NodeConfig with a wrong apiVersion": lambda c: (
        c.settings(), _req(c, user_data_file=c.file(c.rendered("nodeadm").replace(
            "node.eks.aws/v1alpha1", "node.eks.aws/v1beta9"))), "apiVersion"),
    "NodeConfig without cidr": lambda c: (
        c.settings(), _req(c, user_data_file=c.file(c.rendered("nodeadm").replace(
            "    cidr: 10.100.0.0/16\n", ""))), "spec.cluster.cidr is missing"),
    "NodeConfig with an unknown field": lambda c: (
        c.settings(), _req(c, user_data_file=c.file(c.rendered("nodeadm").replace(
            "apiServerEndpoint", "apiserverEndpoint"))), "unknown field 'apiserverEndpoint'"),
    "more than 16 KB": lambda c: (
        c.settings(), _req(c, user_data_file=c.file(c.rendered("nodeadm").replace(
            "kind: NodeConfig\n", "kind: NodeConfig\n" + "# padding\n" * 1700))), "16 KB"),
    "bootstrap.sh user data for a nodeadm image": lambda c: (
        c.settings(), _req(c, user_data_file=c.file(c.rendered("bootstrap.sh"))),
        "migrate the user data to a NodeConfig"),
    "NodeConfig for a bootstrap.sh image": lambda c: (
        c.settings(), PublishRequest(ami_id=c.al2_ami(), user_data_file=c.file(
            c.rendered("nodeadm"))), "has no nodeadm"),
    "Karpenter template with an InstanceType": lambda c: (
        c.settings(), _req(c, source_version=c.source_version(InstanceType="m5.large")),
        "InstanceType"),
    "Karpenter template with NetworkInterfaces": lambda c: (
        c.settings(), _req(c, source_version=c.source_version(NetworkInterfaces=[
            {"DeviceIndex": 0, "AssociatePublicIpAddress": True}])), "NetworkInterfaces"),
    "Karpenter template with IMDSv1 allowed": lambda c: (
        c.settings(), _req(c, source_version=c.source_version(
            MetadataOptions={"HttpTokens": "optional"})), "HttpTokens"),
    "Karpenter template with a missing security group": lambda c: (
        settings_for({**c.raw, "launch_templates": [{**c.raw["launch_templates"][0],
                                                      "security_group_ids": ["sg-0123456789abcdef0"]}]},
                     c.tmp_path), _req(c), "do not exist"),
    "Karpenter template whose groups block DNS": lambda c: (
        settings_for({**c.raw, "launch_templates": [{**c.raw["launch_templates"][0],
                                                      "security_group_ids": [node_security_group(
                                                          c.clients, egress="443-only")]}]},
                     c.tmp_path), _req(c), "UDP 53"),
    "cluster without an endpoint": lambda c: (
        settings_for({**c.raw, "cluster": {**c.raw["cluster"], "endpoint": None}}, c.tmp_path),
        _req(c), "cluster.endpoint"),
}


@pytest.fixture
def ctx(emulator, clients, tmp_path) -> Ctx:
    sg = node_security_group(clients)
    raw = example_raw(tmp_path, sg_ids=[sg], karpenter=True)
    raw["images"][0]["require"] = "any"     # AL2 and AL2023 AMIs both publishable
    good = verified_ami(emulator, clients)
    publish(settings_for(raw, tmp_path), clients, PublishRequest(ami_id=good, create=True))
    return Ctx(emulator, clients, tmp_path, raw, sg, good)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_exits_2_and_creates_nothing(ctx: Ctx, name: str) -> None:
    settings, req, expect = CASES[name](ctx)
    outputs = {p: p.stat().st_mtime_ns for p in (ctx.tmp_path / "karpenter").iterdir()}
    before = version_count(ctx.clients)
    assert before >= 1
    with pytest.raises(InputError) as exc:
        publish(settings, ctx.clients, req)
    err = exc.value
    assert err.exit_code == EXIT_BAD_INPUT
    lines = getattr(err, "problems", [err.message])
    assert any(expect in line for line in lines), lines
    assert all("\n" not in line for line in lines)
    assert version_count(ctx.clients) == before
    ptr = get_pointer(ctx.clients, "/eks-ami-pipeline", "eks-node-al2023", "candidate")
    assert ptr is not None and ptr.ami_id == ctx.good_ami
    assert {p: p.stat().st_mtime_ns for p in (ctx.tmp_path / "karpenter").iterdir()} == outputs


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 15
