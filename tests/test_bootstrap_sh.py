"""The AL2 bootstrap.sh lint against the REAL script: its argument loop and IP-family logic are cut
out of the vendored upstream file and run in bash on the same words the lint judged."""
from __future__ import annotations

import json
import re
import shlex
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.core.config import UserDataSettings
from pipeline.publish import bootstrap_sh as bs
from pipeline.publish import user_data as ud

from test_publish_support import example_raw, settings_for

REAL = bs.BUNDLED_SCRIPT.read_text(encoding="utf-8")
UPSTREAM = Path(__file__).parent / "data" / "upstream" / "karpenter"


def _between(text: str, start: str, end: str) -> str:
    i = text.index(start)
    return text[i:text.index(end, i)]


#: The real script's variables per option, read from its own arms (``--x)\n  VAR=$2``).
ARM_VARS = dict(re.findall(r"^\s*(--[a-z0-9-]+)\)\n\s*([A-Z_0-9]+)=\"?\$2", REAL, re.M))


def run_real_parser(words: list[str], *, ip_logic: bool = False) -> dict[str, object]:
    """Run the real ``while/case`` loop (and optionally its IP-family/DNS logic) on ``words``."""
    loop = _between(REAL, "POSITIONAL=()", "IMDS_TOKEN=")
    body = ["set -o nounset", "set -o errexit", "log() { :; }", "print_help() { :; }",
            "imds() { :; }", loop]
    if ip_logic:
        defaults = [f'{v}="${{{v}:-}}"' for v in ("APISERVER_ENDPOINT", "B64_CLUSTER_CA",
                                                   "IP_FAMILY", "SERVICE_IPV6_CIDR",
                                                   "SERVICE_IPV4_CIDR", "DNS_CLUSTER_IP")]
        body += defaults + [
            _between(REAL, 'if [[ ! -z "${IP_FAMILY}" ]]; then', "AWS_DEFAULT_REGION="),
            _between(REAL, 'if [[ -z "${IP_FAMILY}" ]] || [[ "${IP_FAMILY}" == "None" ]]',
                     'log "INFO: Using IP family'),
            "MAC=", _between(REAL, 'if [[ -z "${DNS_CLUSTER_IP}" ]]; then', "KUBELET_CONFIG=")]
    names = sorted(set(ARM_VARS.values())) + ["CLUSTER_NAME"]
    body.append("for v in " + " ".join(names) + "; do printf '%s=%s\\0' \"$v\" \"${!v-__unset__}\"; "
                "done")
    proc = subprocess.run(["bash", "-c", "\n".join(body), "bootstrap.sh", *words],
                          capture_output=True, check=False, timeout=30)
    out: dict[str, object] = {"exit": proc.returncode, "stderr": proc.stderr.decode()}
    for item in proc.stdout.decode().split("\0"):
        if "=" in item:
            k, _, v = item.partition("=")
            if v != "__unset__":
                out[k] = v
    return out


CASES = [
    ["--apiserver-endpoint", "https://x", "--b64-cluster-ca", "Q0E=", "demo"],
    ["demo", "--apiserver-endpoint", "https://x"],                   # Karpenter's order
    ["--max-pods", "40", "--apiserver-endpoint", "https://x", "demo"],
    ["--apiserver-endpoint=https://x", "demo"],
    ["my-cluster", "--kubelet-extra-args=--node-labels=foo=bar"],   # Karpenter custom-family.yaml
    ["--use-max-pods", "false", "40", "demo"],
    ["--dns-cluster-ip"],
    ["--help", "demo"],
    ["demo", "extra", "words"],
    ["--ip-family", "ipv6", "--service-ipv6-cidr", "fd00::/108", "demo"],
]


@pytest.mark.parametrize("words", CASES, ids=lambda w: " ".join(w)[:40])
def test_replayed_loop_agrees_with_the_real_script(words):
    real = run_real_parser(words)
    ours = bs.parse_call(words, bs.bundled_options())
    if ours.exits_with or ours.missing_value:
        assert real["exit"] != 0
        return
    assert real["exit"] == 0, real["stderr"]
    assert real.get("CLUSTER_NAME") == ours.cluster_name
    assert {ARM_VARS[k]: v for k, v in ours.values.items()} == {
        k: v for k, v in real.items() if k in ARM_VARS.values()}


def test_the_option_list_is_the_real_scripts():
    opts = bs.bundled_options()
    assert opts.with_value == frozenset(ARM_VARS)
    help_flags = set(re.findall(r'echo "(--[a-z0-9-]+) ', REAL))
    assert opts.with_value == help_flags and len(help_flags) == 19
    assert opts.exits == {"-h", "--help"}


def test_an_amis_own_script_sets_the_options():
    """A bootstrap.sh without --local-disks: the lint refuses it there, not with the bundled one."""
    arm = _between(REAL, "    --local-disks)", "    *)")
    older = bs.options_from_script(REAL.replace(arm, ""), source="ami-0123 bootstrap.sh")
    assert older is not None and "--local-disks" not in older.with_value
    call = "/etc/eks/bootstrap.sh --local-disks raid0 demo"
    assert ud._bootstrap_args_problems(call, None) == []
    problems = ud._bootstrap_args_problems(call, None, older)
    assert any("no option --local-disks" in p and "ami-0123 bootstrap.sh" in p for p in problems)
    assert bs.options_from_script("#!/bin/sh\necho hi\n") is None


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bs")
    return settings_for(example_raw(tmp), tmp)


def _lint(settings, args: str) -> list[str]:
    c = settings.cluster
    script = (f"#!/bin/bash\n/etc/eks/bootstrap.sh --apiserver-endpoint {c.endpoint} "
              f"--b64-cluster-ca {c.certificate_authority} {args}\n")
    return ud.lint(script, mechanism=ud.BOOTSTRAP_SH, cluster=c)


def test_flag_equals_value_is_refused_with_the_fix(settings):
    problems = _lint(settings, "--dns-cluster-ip=10.100.0.10 demo")
    assert any("write --dns-cluster-ip VALUE" in p and "value is lost" in p for p in problems)
    assert any("takes '--dns-cluster-ip=10.100.0.10' as the cluster name" in p for p in problems)
    real = run_real_parser(["--dns-cluster-ip=10.100.0.10", "demo"])
    assert "DNS_CLUSTER_IP" not in real and real["CLUSTER_NAME"] == "--dns-cluster-ip=10.100.0.10"


def test_unknown_flag_before_the_name_is_refused_and_names_the_wrong_cluster(settings):
    problems = _lint(settings, "--max-pods 40 demo")
    assert any("no option --max-pods" in p for p in problems)
    assert any("takes '--max-pods' as the cluster name" in p for p in problems)
    assert run_real_parser(["--max-pods", "40", "demo"])["CLUSTER_NAME"] == "--max-pods"


def test_a_stray_word_before_the_name_is_refused(settings):
    problems = _lint(settings, "--use-max-pods false 40 demo")
    assert any("takes '40' as the cluster name" in p for p in problems), problems
    assert run_real_parser(["--use-max-pods", "false", "40", "demo"])["CLUSTER_NAME"] == "40"


def test_name_first_as_karpenter_writes_it_passes(settings):
    assert _lint(settings, "--dns-cluster-ip 10.100.0.10 demo") == []
    c = settings.cluster
    script = (f"#!/bin/bash\n/etc/eks/bootstrap.sh 'demo' --apiserver-endpoint '{c.endpoint}' "
              f"--b64-cluster-ca '{c.certificate_authority}' \\\n--dns-cluster-ip '10.100.0.10' "
              "\\\n--use-max-pods false --kubelet-extra-args '--max-pods=110'\n")
    assert ud.lint(script, mechanism=ud.BOOTSTRAP_SH, cluster=c) == []


def test_karpenters_custom_family_example_is_refused():
    """examples/v1/custom-family.yaml writes --kubelet-extra-args='...': the labels are lost."""
    text = (UPSTREAM / "examples-v1" / "custom-family.yaml").read_text()
    call = next(ln for ln in text.splitlines() if "/etc/eks/bootstrap.sh" in ln)
    problems = ud._bootstrap_args_problems(call.strip(), None)
    assert any("write --kubelet-extra-args VALUE" in p for p in problems), problems
    real = run_real_parser(shlex.split(call.strip())[1:])
    assert "KUBELET_EXTRA_ARGS" not in real and real["CLUSTER_NAME"] == "my-cluster"


def test_karpenters_al2_merged_golden_passes_the_argument_checks():
    text = (UPSTREAM / "launchtemplate-testdata" / "al2_userdata_merged.golden").read_text()
    script = text.split("--//\n")[2]
    (_, call), = ud._bootstrap_calls(script)
    assert [p for p in ud._bootstrap_args_problems(call, None)
            if "PEM" not in p] == []   # its CA is a placeholder ("ca-bundle"), nothing else


def test_missing_value_help_and_trailing_words(settings):
    assert any("has no value" in p for p in _lint(settings, "demo --dns-cluster-ip"))
    assert any("--help prints the usage" in p for p in _lint(settings, "--help demo"))
    assert any("ignores the words after the cluster name 'demo'" in p
               for p in _lint(settings, "demo extra"))


def test_ipv6_rendering_is_what_the_real_script_needs(settings, tmp_path):
    c = replace(settings.cluster, service_cidr="fd7e:1234:5678::/108")
    text = ud.render_for(c, UserDataSettings(format="script"), ud.BOOTSTRAP_SH).text
    assert "--ip-family ipv6" in text and "--service-ipv6-cidr fd7e:1234:5678::/108" in text
    assert ud.lint(text, mechanism=ud.BOOTSTRAP_SH, cluster=c) == []
    fake = tmp_path / "bootstrap.sh"
    out = tmp_path / "argv.json"
    fake.write_text(f"#!/usr/bin/env python3\nimport json, sys\njson.dump(sys.argv[1:], "
                    f"open({str(out)!r}, 'w'))\n")
    fake.chmod(0o755)
    subprocess.run(["bash", "-c", text.replace(ud.BOOTSTRAP_PATH, str(fake))], check=True)
    real = run_real_parser(json.loads(out.read_text()), ip_logic=True)
    assert real["exit"] == 0, real["stderr"]
    assert real["IP_FAMILY"] == "ipv6" and real["DNS_CLUSTER_IP"] == "fd7e:1234:5678::a"


def test_ipv6_dns_alone_is_refused_because_the_real_script_picks_ipv4(settings):
    c = replace(settings.cluster, service_cidr="fd7e:1234:5678::/108")
    words = ["--apiserver-endpoint", c.endpoint, "--b64-cluster-ca", c.certificate_authority,
             "--dns-cluster-ip", "fd7e:1234:5678::a", "demo"]
    real = run_real_parser(words, ip_logic=True)
    assert real["IP_FAMILY"] == "ipv4"
    script = "#!/bin/bash\n/etc/eks/bootstrap.sh " + " ".join(map(shlex.quote, words)) + "\n"
    problems = ud.lint(script, mechanism=ud.BOOTSTRAP_SH, cluster=c)
    assert any("uses IP family ipv4" in p for p in problems), problems
    bad = words[:4] + ["--ip-family", "ipv4", "--service-ipv6-cidr", "fd7e:1234:5678::/108", "demo"]
    assert run_real_parser(bad, ip_logic=True)["exit"] != 0
    script = "#!/bin/bash\n/etc/eks/bootstrap.sh " + " ".join(map(shlex.quote, bad)) + "\n"
    assert any("--ip-family should be ipv6" in p
               for p in ud.lint(script, mechanism=ud.BOOTSTRAP_SH, cluster=c))
