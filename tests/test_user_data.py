"""User data rendering (run for real through bash) and every lint rule, one assertion each."""
from __future__ import annotations

import base64
import email
import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from pipeline.publish import user_data as ud
from pipeline.core.config import ClusterSettings, UserDataSettings
from pipeline.core.errors import ConfigError, LintError

from test_publish_support import example_raw, settings_for

SEED_EXAMPLE = """#!/bin/bash
/etc/eks/bootstrap.sh ${ClusterName} --apiserver-endpoint <endpoint>
--dns-cluster-ip 10.100.0.10
"""


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ud")
    return settings_for(example_raw(tmp), tmp)


@pytest.fixture(scope="module")
def cluster(settings) -> ClusterSettings:
    return settings.cluster


def _run_with_fake_bootstrap(script: str, tmp_path: Path) -> list[str]:
    """Run the rendered script with /etc/eks/bootstrap.sh replaced by an argv recorder."""
    fake = tmp_path / "bootstrap.sh"
    out = tmp_path / "argv.json"
    fake.write_text("#!/usr/bin/env python3\nimport json, sys\n"
                    f"json.dump(sys.argv[1:], open({str(out)!r}, 'w'))\n")
    fake.chmod(0o755)
    body = script.replace(ud.BOOTSTRAP_PATH, str(fake))
    subprocess.run(["bash", "-c", body], check=True, env={**os.environ})
    return json.loads(out.read_text())


def test_bootstrap_script_passes_every_value_intact_through_bash(tmp_path, cluster):
    nasty = replace(cluster, name="demo; touch /tmp/pwned-$(id -u)")
    uds = UserDataSettings(format="script", kubelet_extra_args="--v=2 --node-ip='10.0.0.5'",
                           max_pods=58, labels={"team": "a b", "tier": "x"},
                           taints=("dedicated=gpu:NoSchedule",))
    text = ud.render_for(nasty, uds, ud.BOOTSTRAP_SH, "script").text
    argv = _run_with_fake_bootstrap(text, tmp_path)
    assert argv == [
        "--apiserver-endpoint", cluster.endpoint,
        "--b64-cluster-ca", cluster.certificate_authority,
        "--dns-cluster-ip", "10.100.0.10",
        "--use-max-pods", "false",
        "--kubelet-extra-args", "--max-pods=58 --v=2 --node-ip=10.0.0.5 "
                                "--node-labels=team=a b,tier=x "
                                "--register-with-taints=dedicated=gpu:NoSchedule",
        "demo; touch /tmp/pwned-$(id -u)",
    ]
    assert not Path(f"/tmp/pwned-{os.getuid()}").exists()
    assert ud.lint(text, mechanism=ud.BOOTSTRAP_SH) == []


def test_bootstrap_mime_wraps_one_shell_part(settings, tmp_path):
    text = ud.render(settings, ud.BOOTSTRAP_SH, "mime")
    msg = email.message_from_string(text)
    parts = msg.get_payload()
    assert msg.get_content_type() == "multipart/mixed" and len(parts) == 1
    assert parts[0].get_content_type() == "text/x-shellscript"
    argv = _run_with_fake_bootstrap(parts[0].get_payload(), tmp_path)
    assert argv[-1] == "demo"
    assert ud.lint(text, mechanism=ud.BOOTSTRAP_SH, cluster=settings.cluster) == []


def test_nodeadm_mime_carries_a_complete_nodeconfig(settings):
    text = ud.render(settings, ud.NODEADM, "mime")
    msg = email.message_from_string(text)
    assert msg["MIME-Version"] == "1.0"
    (part,) = msg.get_payload()
    assert part.get_content_type() == "application/node.eks.aws"
    doc = yaml.safe_load(part.get_payload())
    assert doc["apiVersion"] == "node.eks.aws/v1alpha1" and doc["kind"] == "NodeConfig"
    assert doc["spec"]["cluster"] == {
        "name": "demo", "apiServerEndpoint": settings.cluster.endpoint,
        "certificateAuthority": settings.cluster.certificate_authority, "cidr": "10.100.0.0/16"}
    assert doc["spec"]["kubelet"]["config"] == {"clusterDNS": ["10.100.0.10"], "maxPods": 110}
    assert doc["spec"]["kubelet"]["flags"] == ["--node-labels=node.kubernetes.io/pool=general"]
    assert ud.lint(text, mechanism=ud.NODEADM, cluster=settings.cluster) == []
    assert ud.detect_mechanism(text) == ud.NODEADM
    assert len(text.encode()) < ud.MAX_USER_DATA_BYTES


def test_nodeadm_cannot_be_a_bare_script(settings):
    with pytest.raises(ConfigError, match="format: mime"):
        ud.render(settings, ud.NODEADM, "script")


def test_render_needs_endpoint_and_ca(settings):
    bare = replace(settings, cluster=replace(settings.cluster, certificate_authority=None))
    with pytest.raises(ConfigError, match="cluster.certificate_authority"):
        ud.render(bare, ud.NODEADM, "mime")


def test_the_seeds_example_is_refused_with_each_reason(cluster):
    problems = ud.lint(SEED_EXAMPLE, mechanism=ud.BOOTSTRAP_SH, cluster=cluster)
    text = "\n".join(problems)
    assert "unfilled placeholders ${ClusterName}, <endpoint>" in text
    assert ("line 3: the /etc/eks/bootstrap.sh call is broken across lines without a trailing "
            "backslash, so '--dns-cluster-ip' runs as a separate command; end line 2 with ' \\'"
            in problems)
    assert any(p.startswith("bash -n: line 2") for p in problems)
    with pytest.raises(LintError) as exc:
        ud.check(SEED_EXAMPLE, mechanism=ud.BOOTSTRAP_SH, cluster=cluster)
    assert exc.value.exit_code == 2 and len(exc.value.problems) == len(problems)


def test_the_seeds_example_fixed_passes(cluster):
    fixed = ("#!/bin/bash\n/etc/eks/bootstrap.sh demo --apiserver-endpoint "
             f"{cluster.endpoint} \\\n  --b64-cluster-ca {cluster.certificate_authority} \\\n"
             "  --dns-cluster-ip 10.100.0.10\n")
    assert ud.lint(fixed, mechanism=ud.BOOTSTRAP_SH, cluster=cluster) == []


def test_shell_variables_and_heredocs_are_not_mistaken(cluster):
    script = (f"#!/bin/bash\nCLUSTER=demo\nexport CA={cluster.certificate_authority}\n"
              "cat > /etc/motd <<EOF\n--this line is text\nEOF\n"
              f"/etc/eks/bootstrap.sh \"${{CLUSTER}}\" --apiserver-endpoint {cluster.endpoint} "
              "--b64-cluster-ca \"${CA}\"\n")
    assert ud.lint(script, mechanism=ud.BOOTSTRAP_SH, cluster=cluster) == []


def test_arrays_and_case_patterns_are_not_broken_lines(cluster):
    script = ("#!/bin/bash\nARGS=(\n  --apiserver-endpoint " + cluster.endpoint + "\n)\n"
              "case \"${1:-}\" in\n  --dry-run|-n) exit 0 ;;\n  --help)\n    echo usage ;;\nesac\n"
              "/etc/eks/bootstrap.sh \"${ARGS[@]}\" demo\n")
    assert ud.lint(script, mechanism=ud.BOOTSTRAP_SH, cluster=cluster) == []


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize("value, expect", [
    ("not base64!", "does not decode as base64"),
    (_b64("hello"), "no -----BEGIN CERTIFICATE-----"),
    (_b64("-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----\n"), "body is not base64"),
    (_b64("-----BEGIN CERTIFICATE-----\nMIIBfjCCASWgAwIBAgIU\n-----END CERTIFICATE-----\n"),
     "not a DER X.509 certificate"),
    ("", "is empty"),
])
def test_bad_certificate_authorities(value, expect):
    assert expect in (ud.ca_problem(value) or "")


def test_the_example_ca_is_a_certificate(cluster):
    assert ud.ca_problem(cluster.certificate_authority) is None


@pytest.mark.parametrize("old, new, expect", [
    ("node.eks.aws/v1alpha1", "node.eks.aws/v1", "apiVersion"),
    ("kind: NodeConfig", "kind: NodeConfiguration", "kind is 'NodeConfiguration'"),
    ("    name: demo\n", "", "spec.cluster.name is missing"),
    ("    cidr: 10.100.0.0/16\n", "", "spec.cluster.cidr is missing"),
    ("apiServerEndpoint: https://", "apiServerEndpoint: http://", "must be an https:// URL"),
    ("- 10.100.0.10", "- 172.20.0.10", "outside the service CIDR 10.100.0.0/16"),
    ("  kubelet:\n", "  kubelet: [\n", "not valid YAML"),
    ("certificateAuthority: LS0t", "certificateAuthority: AAAA", "PEM certificate"),
])
def test_nodeconfig_rules(settings, old, new, expect):
    text = ud.render(settings, ud.NODEADM, "mime")
    assert old in text
    problems = ud.lint(text.replace(old, new), mechanism=ud.NODEADM, cluster=settings.cluster)
    assert any(expect in p for p in problems), problems


@pytest.mark.parametrize("edit, expect", [
    (lambda t: t.replace("MIME-Version: 1.0\n", ""), "MIME-Version"),
    (lambda t: t.replace("application/node.eks.aws", "application/x-yaml"), "Content-Type"),
    (lambda t: t.replace('multipart/mixed; boundary="//EKS-NODE-BOUNDARY//"', "text/plain"),
     "expected multipart/mixed"),
    (lambda t: t.replace("kind: NodeConfig\n", "kind: NodeConfig\n" + "#" * 17000 + "\n"),
     "16 KB"),
])
def test_mime_and_size_rules(settings, edit, expect):
    problems = ud.lint(edit(ud.render(settings, ud.NODEADM, "mime")), mechanism=ud.NODEADM)
    assert any(expect in p for p in problems), problems


def test_missing_closing_boundary_is_a_warning_not_a_refusal(settings):
    text = ud.render(settings, ud.NODEADM, "mime").replace("--//EKS-NODE-BOUNDARY//--", "")
    found = ud.review(text, mechanism=ud.NODEADM, cluster=settings.cluster)
    assert found.problems == []
    assert [w for w in found.warnings if "closing boundary --//EKS-NODE-BOUNDARY//-- is missing"
            in w], found.warnings
    assert ud.check(text, mechanism=ud.NODEADM, cluster=settings.cluster) == [
        f"user data: {w}" for w in found.warnings]


def test_bootstrap_value_rules(settings):
    script = ud.render(settings, ud.BOOTSTRAP_SH, "script")
    outside = script.replace("--dns-cluster-ip 10.100.0.10", "--dns-cluster-ip 172.20.0.10")
    assert any("outside the service CIDR" in p
               for p in ud.lint(outside, mechanism=ud.BOOTSTRAP_SH, cluster=settings.cluster))
    http = script.replace("https://", "http://")
    assert any("https:// URL" in p for p in ud.lint(http, mechanism=ud.BOOTSTRAP_SH))
    other = script.replace("  demo\n", "  prod\n")
    assert any("takes 'prod' as the cluster name" in p
               for p in ud.lint(other, mechanism=ud.BOOTSTRAP_SH, cluster=settings.cluster))
    broken = script.replace("set -o errexit -o nounset -o pipefail\n", "if [ -x /x ]; then\n")
    assert any(p.startswith("bash -n:") for p in ud.lint(broken, mechanism=ud.BOOTSTRAP_SH))


def test_mechanism_must_match_the_ami(settings):
    boot = ud.render(settings, ud.BOOTSTRAP_SH, "mime")
    nodeadm = ud.render(settings, ud.NODEADM, "mime")
    (stub,) = ud.lint(boot, mechanism=ud.NODEADM)
    assert "stub that exits 1" in stub and "amazon-eks-ami/nodeadm" in stub
    (al2,) = ud.lint(nodeadm, mechanism=ud.BOOTSTRAP_SH)
    assert "has no nodeadm" in al2
    (neither,) = ud.lint("#!/bin/bash\necho hello\n", mechanism=None)
    assert "neither calls /etc/eks/bootstrap.sh nor carries a NodeConfig" in neither
    assert ud.lint("", mechanism=ud.NODEADM) == ["is empty; the node would never join the cluster"]


def test_encode_decode_round_trip(settings):
    text = ud.render(settings, ud.NODEADM, "mime")
    assert ud.decode(ud.encode(text)) == text and ud.decode(None) == ""
