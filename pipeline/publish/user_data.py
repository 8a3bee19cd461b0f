"""EC2 user data for EKS nodes: rendered from config for the AMI's bootstrap mechanism, and linted.

Two mechanisms exist (see ``shared/AWS-FACTS.md`` §4):

- ``bootstrap.sh`` (AL2): a bash script calling ``/etc/eks/bootstrap.sh`` with every value
  shell-quoted, either bare (``fmt="script"``) or wrapped as MIME multipart with one
  ``text/x-shellscript`` part (``fmt="mime"``, what managed node groups need);
- ``nodeadm`` (AL2023): MIME multipart with one ``application/node.eks.aws`` part holding a
  ``node.eks.aws/v1alpha1`` ``NodeConfig``.

:func:`lint` refuses the mistakes that leave a node unable to join, one line per problem: the
seed's own example (a ``bootstrap.sh`` call broken across lines without a trailing backslash,
placeholders left in), ``bash -n`` errors, a CA that is not a base64 PEM certificate, a
non-https endpoint, a DNS IP outside the service CIDR, an incomplete NodeConfig, malformed MIME,
more than 16 KB, and user data written for the other mechanism than the AMI's (AL2023 images
carry a ``bootstrap.sh`` *stub* that only prints a migration banner and exits 1).
"""
from __future__ import annotations

import base64
import email
import email.policy
import ipaddress
import logging
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

import yaml

from pipeline.aws.templates import decode_user_data
from pipeline.core.config import (ClusterSettings, Settings, UserDataSettings, ca_problem,
                                  dns_problem, endpoint_problem)
from pipeline.core.errors import ConfigError, LintError
from pipeline.core.naming import BOOTSTRAP_PATH
from pipeline.publish import bootstrap_sh, nodeadm

log = logging.getLogger(__name__)

__all__ = [
    "BOOTSTRAP_SH",
    "NODEADM",
    "MECHANISMS",
    "MAX_USER_DATA_BYTES",
    "NODEADM_MIGRATION_HINT",
    "RenderedUserData",
    "render",
    "render_for",
    "lint",
    "check",
    "review",
    "Findings",
    "detect_mechanism",
    "decode",
    "encode",
    "ca_problem",
    "mime_multipart",
]

BOOTSTRAP_SH = "bootstrap.sh"
NODEADM = "nodeadm"
MECHANISMS = (BOOTSTRAP_SH, NODEADM)
#: EC2: "User data is limited to 16 KB, in raw form, before it is base64-encoded".
MAX_USER_DATA_BYTES = 16 * 1024
NODEADM_MIGRATION_HINT = ("this AMI boots with nodeadm and its /etc/eks/bootstrap.sh is the AL2023 "
                          "stub that exits 1; migrate the user data to a NodeConfig "
                          "(https://awslabs.github.io/amazon-eks-ami/nodeadm/) or render it "
                          "without --user-data-file")
NODECONFIG_API_VERSION = "node.eks.aws/v1alpha1"
NODECONFIG_CONTENT_TYPE = "application/node.eks.aws"
SHELL_CONTENT_TYPE = "text/x-shellscript"
_BOUNDARY = "//EKS-NODE-BOUNDARY//"
_KNOWN_PART_TYPES = {SHELL_CONTENT_TYPE, NODECONFIG_CONTENT_TYPE, "text/cloud-config",
                     "text/cloud-boothook", "text/x-include-url", "text/part-handler",
                     "text/jinja2", "text/plain"}


@dataclass(frozen=True, slots=True)
class RenderedUserData:
    """User data text plus how it was made."""

    text: str
    mechanism: str
    fmt: str

    @property
    def size(self) -> int:
        return len(self.text.encode("utf-8"))


# --------------------------------------------------------------------------- encoding


def encode(text: str) -> str:
    """The base64 form EC2 launch templates take."""
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def decode(b64: str | None) -> str:
    """Decode launch-template ``UserData`` (base64) back to text ('' when absent)."""
    return decode_user_data(b64)


# --------------------------------------------------------------------------- rendering


def render(settings: Settings, mechanism: str, fmt: str | None = None, *,
           template: str | None = None) -> str:
    """User data for ``mechanism`` from the cluster and launch-template settings.

    ``fmt`` is ``mime`` or ``script`` (default: the template's ``user_data.format``);
    ``script`` exists only for ``bootstrap.sh``. ``template`` picks the launch template's
    user-data settings (default: the only configured template, else plain defaults).
    """
    return render_for(settings.require_cluster(), _ud_settings(settings, template),
                      mechanism, fmt).text


def render_for(cluster: ClusterSettings, ud: UserDataSettings, mechanism: str,
               fmt: str | None = None) -> RenderedUserData:
    """Render from explicit settings (see :func:`render`)."""
    fmt = fmt or ud.format
    if mechanism not in MECHANISMS:
        raise LintError(f"user data: unknown bootstrap mechanism {mechanism!r}; expected "
                        f"{' or '.join(MECHANISMS)} (run `invoke verify --ami` to record it)")
    _require_cluster_values(cluster)
    if mechanism == NODEADM:
        if fmt != "mime":
            raise ConfigError(f"launch_templates.user_data.format: {fmt!r} is only possible for "
                              "bootstrap.sh images; nodeadm reads a NodeConfig from MIME user data, "
                              "use format: mime")
        text = mime_multipart([(NODECONFIG_CONTENT_TYPE, _nodeconfig_yaml(cluster, ud))])
    else:
        script = _bootstrap_script(cluster, ud)
        text = script if fmt == "script" else mime_multipart([(SHELL_CONTENT_TYPE, script)])
    return RenderedUserData(text=text, mechanism=mechanism, fmt=fmt)


def _ud_settings(settings: Settings, template: str | None) -> UserDataSettings:
    if template is None and len(settings.launch_templates) != 1:
        return UserDataSettings()
    return settings.launch_template(template).user_data


def _require_cluster_values(cluster: ClusterSettings) -> None:
    missing = [k for k in ("endpoint", "certificate_authority") if not getattr(cluster, k)]
    if missing:
        raise ConfigError(f"cluster.{missing[0]}: required to render user data for a custom AMI "
                          "(from `aws eks describe-cluster`); nodes cannot look it up themselves")


def _kubelet_flags(ud: UserDataSettings) -> list[str]:
    flags = shlex.split(ud.kubelet_extra_args or "")
    if ud.labels:
        flags.append("--node-labels=" + ",".join(f"{k}={v}" for k, v in sorted(ud.labels.items())))
    if ud.taints:
        flags.append("--register-with-taints=" + ",".join(ud.taints))
    return flags


def _bootstrap_script(cluster: ClusterSettings, ud: UserDataSettings) -> str:
    q = shlex.quote
    args = [
        f"--apiserver-endpoint {q(cluster.endpoint or '')}",
        f"--b64-cluster-ca {q(cluster.certificate_authority or '')}",
    ]
    if _is_ipv6_net(cluster.service_cidr):
        # With the endpoint and CA given, bootstrap.sh skips DescribeCluster and would default
        # to IP family ipv4: say ipv6 and give the service CIDR it derives the DNS IP from.
        args += ["--ip-family ipv6", f"--service-ipv6-cidr {q(cluster.service_cidr)}"]
    args.append(f"--dns-cluster-ip {q(cluster.cluster_dns_ip)}")
    kubelet = _kubelet_flags(ud)
    if ud.max_pods is not None:
        args.append("--use-max-pods false")
        kubelet.insert(0, f"--max-pods={ud.max_pods}")
    if kubelet:
        args.append(f"--kubelet-extra-args {q(' '.join(kubelet))}")
    args.append(q(cluster.name))
    body = " \\\n  ".join([BOOTSTRAP_PATH] + args)
    return ("#!/bin/bash\n"
            "set -o errexit -o nounset -o pipefail\n"
            f"{body}\n")


def _nodeconfig_yaml(cluster: ClusterSettings, ud: UserDataSettings) -> str:
    kubelet_config: dict[str, Any] = {"clusterDNS": [cluster.cluster_dns_ip]}
    if ud.max_pods is not None:
        kubelet_config["maxPods"] = ud.max_pods
    spec: dict[str, Any] = {
        "cluster": {
            "name": cluster.name,
            "apiServerEndpoint": cluster.endpoint,
            "certificateAuthority": cluster.certificate_authority,
            "cidr": cluster.service_cidr,
        },
        "kubelet": {"config": kubelet_config},
    }
    flags = _kubelet_flags(ud)
    if flags:
        spec["kubelet"]["flags"] = flags
    doc = {"apiVersion": NODECONFIG_API_VERSION, "kind": "NodeConfig", "spec": spec}
    return "---\n" + str(yaml.safe_dump(doc, sort_keys=False, width=10_000))


def mime_multipart(parts: list[tuple[str, str]]) -> str:
    """MIME multipart in the exact shape nodeadm's README shows (CRLF-free, fixed boundary)."""
    out = ["MIME-Version: 1.0", f'Content-Type: multipart/mixed; boundary="{_BOUNDARY}"', ""]
    for ctype, body in parts:
        out += [f"--{_BOUNDARY}", f'Content-Type: {ctype}; charset="us-ascii"'
                if ctype == SHELL_CONTENT_TYPE else f"Content-Type: {ctype}", "", body.rstrip("\n")]
    out += [f"--{_BOUNDARY}--", ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- lint


@dataclass(slots=True)
class _Parts:
    shell: list[str]
    nodeconfigs: list[str]
    problems: list[str]
    warnings: list[str] = field(default_factory=list)
    nodeadm: nodeadm.NodeadmView | None = None


@dataclass(frozen=True, slots=True)
class Findings:
    """What :func:`review` found: problems refuse the user data, warnings do not."""

    problems: list[str]
    warnings: list[str]


def detect_mechanism(text: str) -> str | None:
    """``nodeadm`` if the user data carries a NodeConfig, ``bootstrap.sh`` if it calls it."""
    parts = _split(text)
    if parts.nodeconfigs or re.search(r"^\s*kind:\s*NodeConfig\b", text, re.M):
        return NODEADM
    if any(_bootstrap_calls(s) for s in parts.shell):
        return BOOTSTRAP_SH
    return None


def check(text: str, *, mechanism: str | None, cluster: ClusterSettings | None = None,
          what: str = "user data",
          bootstrap_options: bootstrap_sh.BootstrapOptions | None = None) -> list[str]:
    """Raise :class:`LintError` (exit 2) with every problem :func:`review` finds; log and
    return its warnings."""
    found = review(text, mechanism=mechanism, cluster=cluster, bootstrap_options=bootstrap_options)
    if found.problems:
        lines = [f"{what}: {p}" for p in found.problems]
        raise LintError(lines[0] if len(lines) == 1 else
                        f"{what}: {len(lines)} problems, first: {found.problems[0]}", lines)
    for w in found.warnings:
        log.warning("%s: %s", what, w)
    return [f"{what}: {w}" for w in found.warnings]


def lint(text: str, *, mechanism: str | None, cluster: ClusterSettings | None = None,
         bootstrap_options: bootstrap_sh.BootstrapOptions | None = None) -> list[str]:
    """Every problem in ``text`` that would stop a node joining, one line each (see
    :func:`review`)."""
    return review(text, mechanism=mechanism, cluster=cluster,
                  bootstrap_options=bootstrap_options).problems


def review(text: str, *, mechanism: str | None, cluster: ClusterSettings | None = None,
           bootstrap_options: bootstrap_sh.BootstrapOptions | None = None) -> Findings:
    """Problems and warnings of ``text`` as the node's consumers would see it.

    ``mechanism`` is the AMI's (``bootstrap.sh``/``nodeadm``/None when unknown); ``cluster``
    enables the checks against the configured cluster (name, service CIDR);
    ``bootstrap_options`` are the options of the AMI's own bootstrap.sh when verify read it
    (default: the vendored real AL2 script's).
    """
    problems: list[str] = []
    size = len(text.encode("utf-8"))
    if size > MAX_USER_DATA_BYTES:
        problems.append(f"{size} bytes is more than EC2's 16 KB ({MAX_USER_DATA_BYTES} bytes) "
                        "before base64; move large content to S3 and fetch it from the script")
    if not text.strip():
        return Findings(problems + ["is empty; the node would never join the cluster"], [])
    parts = _split(text)
    problems += parts.problems
    for n, script in enumerate(parts.shell):
        problems += _lint_shell(script, cluster, where=_where(parts, "shell", n),
                                options=bootstrap_options)
    if parts.nodeadm is not None:
        problems += _lint_nodeconfigs(parts, cluster)
    problems += _lint_mechanism(parts, mechanism)
    return Findings(problems, list(parts.warnings))


def _where(parts: _Parts, kind: str, n: int) -> str:
    count = len(parts.shell) if kind == "shell" else len(parts.nodeconfigs)
    return f"{kind} part {n + 1}: " if count > 1 else ""


def _lint_mechanism(parts: _Parts, mechanism: str | None) -> list[str]:
    calls = any(_bootstrap_calls(s) for s in parts.shell)
    has_nodeconfig = bool(parts.nodeconfigs)
    if not calls and not has_nodeconfig:
        return ["neither calls /etc/eks/bootstrap.sh nor carries a NodeConfig "
                f"({NODECONFIG_CONTENT_TYPE}); a custom AMI gets no bootstrap from EKS, so the node "
                "would never join"]
    if mechanism == NODEADM and calls:
        return [f"calls /etc/eks/bootstrap.sh, but {NODEADM_MIGRATION_HINT}"]
    if mechanism == BOOTSTRAP_SH and has_nodeconfig and not calls:
        return ["carries a nodeadm NodeConfig, but this AMI boots with /etc/eks/bootstrap.sh "
                "(AL2) and has no nodeadm; use bootstrap.sh user data or an AL2023 image"]
    return []


def _looks_like_nodeconfig(text: str) -> bool:
    return (not text.lstrip().startswith("#!")
            and re.search(r"^\s*[\"']?kind[\"']?\s*:\s*[\"']?NodeConfig\b", text, re.M) is not None)


def _split(text: str) -> _Parts:
    """The shell scripts and NodeConfig documents in ``text`` (bare script, bare NodeConfig
    YAML/JSON, which nodeadm decodes whole, or MIME)."""
    head = text.lstrip()[:400].lower()
    if not (head.startswith("mime-version:") or head.startswith("content-type:")):
        if _looks_like_nodeconfig(text):
            view = nodeadm.read_user_data(text)
            return _Parts([], [text], [], list(view.warnings), view)
        return _Parts([text], [], [])
    return _split_mime(text)


def _split_mime(text: str) -> _Parts:
    out = _Parts([], [], [])
    msg = email.message_from_string(text, policy=email.policy.compat32)
    if msg.get("MIME-Version") is None:
        out.problems.append("malformed MIME: the MIME-Version: 1.0 header is missing")
    if not msg.is_multipart():
        out.problems.append(f"malformed MIME: Content-Type is {msg.get_content_type()!r}, "
                            "expected multipart/mixed with a boundary")
        return out
    boundary = msg.get_boundary()
    for defect in msg.defects:
        name = type(defect).__name__
        if name == "CloseBoundaryNotFoundDefect":
            continue  # a warning from the nodeadm reader, or below
        out.problems.append(f"malformed MIME: {name.removesuffix('Defect')}: {defect}")
    parts = [p for p in msg.get_payload() if isinstance(p, email.message.Message)]
    if not parts:
        out.problems.append(f"malformed MIME: no part found between --{boundary} lines")
    for i, part in enumerate(parts, 1):
        for defect in part.defects:
            out.problems.append(f"malformed MIME: part {i}: {type(defect).__name__}: {defect}")
        ctype = part.get_content_type()
        payload = part.get_payload(decode=True)
        body = payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else ""
        if ctype == SHELL_CONTENT_TYPE:
            out.shell.append(body)
        elif ctype == NODECONFIG_CONTENT_TYPE:
            out.nodeconfigs.append(body)
        elif ctype.startswith("multipart/"):
            out.problems.append(f"malformed MIME: part {i} is nested {ctype}; keep one level")
        elif ctype not in _KNOWN_PART_TYPES:
            out.problems.append(f"malformed MIME: part {i} has Content-Type {ctype!r}; expected "
                                f"{SHELL_CONTENT_TYPE} or {NODECONFIG_CONTENT_TYPE}")
    if out.nodeconfigs:
        out.nodeadm = nodeadm.read_user_data(text)
        out.warnings += out.nodeadm.warnings
    elif boundary and f"--{boundary}--" not in text:
        out.warnings.append(f"MIME: the closing boundary --{boundary}-- is missing; cloud-init "
                            "reads the last part to the end of the user data, but add it")
    return out


# ---- shell


_PLACEHOLDER = re.compile(r"<[A-Za-z][A-Za-z0-9_.-]*>|\{\{[^}]*\}\}|\$\{[A-Za-z_][A-Za-z0-9_:.-]*\}")
_SHELL_BUILTIN_VARS = {"HOME", "PATH", "PWD", "USER", "HOSTNAME", "SHELL", "IFS", "RANDOM",
                       "BASH_SOURCE", "LINENO", "FUNCNAME", "TMPDIR", "UID", "EUID"}


def _placeholders(text: str, *, shell: bool) -> list[str]:
    """Unfilled placeholders: ``<endpoint>``, ``{{ x }}``, and ``${X}`` nothing assigns."""
    assigned = set(re.findall(r"(?:^|[\s;(])(?:export\s+|local\s+|readonly\s+|declare\s+\S*\s*)?"
                              r"([A-Za-z_][A-Za-z0-9_]*)=", text, re.M)) if shell else set()
    assigned |= set(re.findall(r"\b(?:for|read(?:\s+-\w+)*)\s+([A-Za-z_][A-Za-z0-9_]*)", text))
    found: list[str] = []
    for m in _PLACEHOLDER.finditer(text):
        token = m.group(0)
        if token.startswith("${"):
            name = re.split(r"[:.-]", token[2:-1])[0]
            if shell and (name in assigned or name in _SHELL_BUILTIN_VARS or name.isdigit()):
                continue
        if token not in found:
            found.append(token)
    return found


def _logical_lines(script: str) -> list[tuple[int, str]]:
    """(first line number, text) with backslash continuations joined, heredocs skipped."""
    out: list[tuple[int, str]] = []
    lines = script.splitlines()
    i, heredoc = 0, None
    while i < len(lines):
        line = lines[i]
        if heredoc is not None:
            if line.strip() == heredoc:
                heredoc = None
            i += 1
            continue
        start, buf = i + 1, line
        while buf.endswith("\\") and i + 1 < len(lines):
            i += 1
            buf = buf[:-1] + " " + lines[i]
        m = re.search(r"<<-?\s*['\"]?([A-Za-z_][A-Za-z0-9_]*)['\"]?", buf)
        if m:
            heredoc = m.group(1)
        out.append((start, buf))
        i += 1
    return out


def _bootstrap_calls(script: str) -> list[tuple[int, str]]:
    return [(n, ln) for n, ln in _logical_lines(script)
            if re.search(r"(^|[\s;&|(])(/etc/eks/)?bootstrap\.sh\b", ln)
            and not ln.lstrip().startswith("#")]


def _lint_shell(script: str, cluster: ClusterSettings | None, *, where: str,
                options: bootstrap_sh.BootstrapOptions | None = None) -> list[str]:
    problems: list[str] = []
    holes = _placeholders(script, shell=True)
    if holes:
        problems.append(f"{where}unfilled placeholder{'s' if len(holes) > 1 else ''} "
                        f"{', '.join(holes)}; render the user data from config or fill them in")
    problems += [where + p for p in _continuation_problems(script)]
    err = _bash_n(script)
    if err:
        problems.append(f"{where}bash -n: {err}")
    for line_no, call in _bootstrap_calls(script):
        problems += [f"{where}line {line_no}: {p}"
                     for p in _bootstrap_args_problems(call, cluster, options)]
    return problems


def _continuation_problems(script: str) -> list[str]:
    """A line that starts with ``--flag`` after a line without ``\\`` runs as its own command."""
    out: list[str] = []
    lines = script.splitlines()
    heredoc = None
    in_array = False
    for i, line in enumerate(lines):
        if heredoc is not None:
            if line.strip() == heredoc:
                heredoc = None
            continue
        m = re.search(r"<<-?\s*['\"]?([A-Za-z_][A-Za-z0-9_]*)['\"]?", line)
        if m:
            heredoc = m.group(1)
        stripped = line.lstrip()
        if in_array:                       # ARGS=( ... ) spread over lines
            in_array = ")" not in stripped
            continue
        if re.search(r"=\(\s*(#.*)?$", line):
            in_array = True
            continue
        if not stripped.startswith("-") or i == 0:
            continue
        if re.match(r"^-[^\s()]*(\|[^\s()]*)*\)", stripped):   # a case pattern: --help)
            continue
        prev = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        if prev.rstrip().endswith(("\\", "|", "&&", "||")):
            continue
        flag = stripped.split()[0]
        what = "the /etc/eks/bootstrap.sh call" if "bootstrap.sh" in prev else "the command above"
        out.append(f"line {i + 1}: {what} is broken across lines without a trailing backslash, so "
                   f"{flag!r} runs as a separate command; end line {i} with ' \\'")
    return out


def _bash_n(script: str) -> str | None:
    bash = shutil.which("bash")
    if bash is None:  # pragma: no cover - every supported platform has bash
        return None
    proc = subprocess.run([bash, "-n"], input=script.encode("utf-8"), capture_output=True,
                          timeout=30, check=False)
    if proc.returncode == 0:
        return None
    msg = proc.stderr.decode("utf-8", errors="replace").strip().splitlines()
    return re.sub(r"^\S*bash: (line )?", "line ", msg[0]) if msg else f"exit {proc.returncode}"


def _call_words(call: str) -> list[str] | None:
    """The words after ``bootstrap.sh`` up to the first control operator (None: bad quoting)."""
    lex = shlex.shlex(call, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    try:
        words = list(lex)
    except ValueError:
        return None  # bash -n reports the quoting error
    idx = next((i for i, w in enumerate(words) if w.endswith("bootstrap.sh")), None)
    if idx is None:
        return None
    out: list[str] = []
    for w in words[idx + 1:]:
        if w and all(ch in ";&|()<>" for ch in w):
            break
        out.append(w)
    return out


def _bootstrap_args_problems(call: str, cluster: ClusterSettings | None,
                             options: bootstrap_sh.BootstrapOptions | None = None) -> list[str]:
    """What the real bootstrap.sh argument loop would make of this call, and why it is wrong."""
    words = _call_words(call)
    if words is None:
        return []
    options = options or bootstrap_sh.bundled_options()
    parsed = bootstrap_sh.parse_call(words, options)
    problems: list[str] = []
    if parsed.exits_with:
        problems.append(f"bootstrap.sh {parsed.exits_with} prints the usage and exits 1; remove it")
    for w in parsed.positional:
        if not w.startswith("-") or w == "-":
            continue
        key, eq, _ = w.partition("=")
        if eq and key in options.with_value:
            problems.append(f"{_short(w)}: bootstrap.sh does not understand --flag=value (the word "
                            f"becomes a positional argument and the value is lost); write {key} VALUE")
        else:
            problems.append(f"bootstrap.sh has no option {key} (its parser, {options.source}, takes "
                            "the word as a positional argument); known options: "
                            f"{', '.join(sorted(options.with_value))}; kubelet flags go in "
                            "--kubelet-extra-args '...'")
    problems += [f"{opt} is the last word and has no value; bootstrap.sh stops with '$2: unbound "
                 "variable'" for opt in parsed.missing_value]
    if any("$" in w for w in words):
        # An expansion ("${ARGS[@]}", $FLAGS) may stand for any number of words: only the
        # literal words' problems above are certain.
        return problems + _bootstrap_value_problems(parsed.values, cluster, partial=True)
    name = parsed.cluster_name
    if name is None:
        problems.append("/etc/eks/bootstrap.sh has no cluster name argument")
    else:
        extra = parsed.positional[1:]
        expected = cluster.name if cluster is not None else None
        if expected is not None and name != expected and "$" not in name:
            problems.append(f"bootstrap.sh takes {_short(name)!r} as the cluster name (the first word "
                            f"that is neither an option nor its value), but cluster.name is "
                            f"{expected!r}; put the cluster name after the options and remove "
                            "the words before it")
        elif expected is None and name.startswith("-"):
            problems.append(f"bootstrap.sh takes {_short(name)!r} as the cluster name (the first word "
                            "that is neither an option nor its value); put the cluster name after "
                            "the options")
        if extra and not any(w.startswith("-") for w in parsed.positional):
            problems.append(f"bootstrap.sh ignores the words after the cluster name {name!r}: "
                            f"{' '.join(map(_short, extra))}; remove them")
    problems += _bootstrap_value_problems(parsed.values, cluster)
    return problems


def _short(word: str, limit: int = 60) -> str:
    return word if len(word) <= limit else word[:limit] + "..."


def _bootstrap_value_problems(opts: dict[str, str], cluster: ClusterSettings | None, *,
                              partial: bool = False) -> list[str]:
    problems: list[str] = []
    endpoint, ca = opts.get("--apiserver-endpoint"), opts.get("--b64-cluster-ca")
    if endpoint is not None:
        p = _endpoint_problem(endpoint, "--apiserver-endpoint")
        if p:
            problems.append(p)
    if ca is not None:
        p = ca_problem(ca, "--b64-cluster-ca")
        if p:
            problems.append(p)
    if (endpoint is None) != (ca is None) and not partial:
        problems.append("give --apiserver-endpoint and --b64-cluster-ca together (either alone "
                        "makes bootstrap.sh call DescribeCluster at every boot)")
    skips_describe = endpoint is not None and ca is not None and not partial
    family = opts.get("--ip-family")
    v6_cidr = opts.get("--service-ipv6-cidr")
    if family is not None and family.lower() not in ("ipv4", "ipv6") and "$" not in family:
        problems.append(f"--ip-family {family!r}: bootstrap.sh allows only ipv4 or ipv6")
    if v6_cidr is not None and family is not None and family.lower() == "ipv4":
        problems.append("--service-ipv6-cidr with --ip-family ipv4: bootstrap.sh exits "
                        "('--ip-family should be ipv6'); write --ip-family ipv6")
    if v6_cidr is not None and "$" not in v6_cidr:
        try:
            if ipaddress.ip_network(v6_cidr, strict=False).version != 6:
                problems.append(f"--service-ipv6-cidr {v6_cidr!r} is not an IPv6 network")
        except ValueError:
            problems.append(f"--service-ipv6-cidr must be an IPv6 CIDR such as fd00:10:96::/108, "
                            f"got {v6_cidr!r}")
    ipv6 = v6_cidr is not None or (family or "").lower() == "ipv6"
    cidr = v6_cidr if v6_cidr is not None else (cluster.service_cidr if cluster else None)
    dns = opts.get("--dns-cluster-ip")
    if dns is not None:
        for ip in dns.split(","):
            p = _dns_problem(ip, cidr, "--dns-cluster-ip")
            if p:
                problems.append(p)
            elif skips_describe and not ipv6 and _is_ipv6(ip):
                problems.append(f"--dns-cluster-ip {ip} is IPv6, but with --apiserver-endpoint and "
                                "--b64-cluster-ca bootstrap.sh skips DescribeCluster and uses IP "
                                "family ipv4; add --ip-family ipv6 --service-ipv6-cidr CIDR")
    elif ipv6 and v6_cidr is None:
        problems.append("--ip-family ipv6 needs --service-ipv6-cidr CIDR or --dns-cluster-ip "
                        "(bootstrap.sh exits without one)")
    if (cluster is not None and skips_describe and not ipv6 and _is_ipv6_net(cluster.service_cidr)):
        problems.append(f"cluster.service_cidr {cluster.service_cidr} is IPv6, but the call does not "
                        "pass --ip-family ipv6 --service-ipv6-cidr, so bootstrap.sh configures the "
                        "node for ipv4")
    return problems


def _is_ipv6(value: str) -> bool:
    try:
        return ipaddress.ip_address(value.strip()).version == 6
    except ValueError:
        return False


def _is_ipv6_net(value: str | None) -> bool:
    try:
        return value is not None and ipaddress.ip_network(value, strict=False).version == 6
    except ValueError:
        return False


# ---- values


# The value checks are the configuration's own (one copy: pipeline.core.config).
_endpoint_problem = endpoint_problem
_dns_problem = dns_problem


# ---- NodeConfig


def _lint_nodeconfigs(parts: _Parts, cluster: ClusterSettings | None) -> list[str]:
    """nodeadm's own decoding and validation, then what the merged NodeConfig needs to join."""
    view = parts.nodeadm
    assert view is not None
    problems: list[str] = []
    for n, body in enumerate(parts.nodeconfigs):
        holes = _placeholders(body, shell=False)
        if holes:
            problems.append(f"{_where(parts, 'NodeConfig', n)}unfilled placeholder"
                            f"{'s' if len(holes) > 1 else ''} {', '.join(holes)} in the NodeConfig")
    problems += list(view.problems)
    problems += nodeadm.merged_problems(view.config)
    if view.config is not None:
        problems += _nodeconfig_join_problems(view.config, cluster)
    return problems


def _mapping(value: Any) -> dict[str, Any]:
    """``value`` if it is a mapping, else an empty one (wrong shapes are reported elsewhere)."""
    return value if isinstance(value, dict) else {}


def _nodeconfig_join_problems(doc: dict[str, Any], cluster: ClusterSettings | None) -> list[str]:
    """The merged NodeConfig's values against the cluster (nodeadm accepts any string here, but
    the node cannot join with a wrong endpoint, CA, CIDR or DNS IP)."""
    out: list[str] = []
    spec = _mapping(doc.get("spec"))
    cl = _mapping(spec.get("cluster"))
    if isinstance(cl.get("apiServerEndpoint"), str) and cl["apiServerEndpoint"]:
        p = _endpoint_problem(cl["apiServerEndpoint"], "spec.cluster.apiServerEndpoint")
        if p:
            out.append(p)
    if isinstance(cl.get("certificateAuthority"), str) and cl["certificateAuthority"]:
        p = ca_problem(cl["certificateAuthority"], "spec.cluster.certificateAuthority")
        if p:
            out.append(p)
    cidr = cl.get("cidr")
    if isinstance(cidr, str) and cidr and "$" not in cidr:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            out.append(f"spec.cluster.cidr must be a CIDR such as 10.100.0.0/16 or "
                       f"fd00:10:96::/108, got {cidr!r}")
            cidr = None
        if cidr and cluster is not None and cidr != cluster.service_cidr:
            out.append(f"spec.cluster.cidr {cidr} differs from cluster.service_cidr "
                       f"{cluster.service_cidr}")
    else:
        cidr = None
    if cluster is not None and cl.get("name") and cl["name"] != cluster.name:
        out.append(f"spec.cluster.name {cl['name']!r} differs from cluster.name {cluster.name!r}")
    kconf = _mapping(_mapping(spec.get("kubelet")).get("config"))
    dns = kconf.get("clusterDNS")
    for ip in dns if isinstance(dns, list) else []:
        p = _dns_problem(ip, cidr, "spec.kubelet.config.clusterDNS")
        if p:
            out.append(p)
    return out
