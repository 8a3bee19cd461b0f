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
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

import yaml

from pipeline.aws.templates import decode_user_data
from pipeline.core.config import (ClusterSettings, Settings, UserDataSettings, ca_problem,
                                  dns_problem, endpoint_problem)
from pipeline.core.errors import ConfigError, LintError

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
BOOTSTRAP_PATH = "/etc/eks/bootstrap.sh"
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
        f"--dns-cluster-ip {q(cluster.cluster_dns_ip)}",
    ]
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


def detect_mechanism(text: str) -> str | None:
    """``nodeadm`` if the user data carries a NodeConfig, ``bootstrap.sh`` if it calls it."""
    parts = _split(text)
    if parts.nodeconfigs or re.search(r"^\s*kind:\s*NodeConfig\b", text, re.M):
        return NODEADM
    if any(_bootstrap_calls(s) for s in parts.shell):
        return BOOTSTRAP_SH
    return None


def check(text: str, *, mechanism: str | None, cluster: ClusterSettings | None = None,
          what: str = "user data") -> None:
    """Raise :class:`LintError` (exit 2) with every problem :func:`lint` finds."""
    problems = lint(text, mechanism=mechanism, cluster=cluster)
    if problems:
        lines = [f"{what}: {p}" for p in problems]
        raise LintError(lines[0] if len(lines) == 1 else
                        f"{what}: {len(lines)} problems, first: {problems[0]}", lines)


def lint(text: str, *, mechanism: str | None, cluster: ClusterSettings | None = None) -> list[str]:
    """Every problem in ``text`` that would stop a node joining, one line each.

    ``mechanism`` is the AMI's (``bootstrap.sh``/``nodeadm``/None when unknown); ``cluster``
    enables the checks against the configured cluster (name, service CIDR).
    """
    problems: list[str] = []
    size = len(text.encode("utf-8"))
    if size > MAX_USER_DATA_BYTES:
        problems.append(f"{size} bytes is more than EC2's 16 KB ({MAX_USER_DATA_BYTES} bytes) "
                        "before base64; move large content to S3 and fetch it from the script")
    if not text.strip():
        return problems + ["is empty; the node would never join the cluster"]
    parts = _split(text)
    problems += parts.problems
    for n, script in enumerate(parts.shell):
        problems += _lint_shell(script, cluster, where=_where(parts, "shell", n))
    for n, nodeconfig in enumerate(parts.nodeconfigs):
        problems += _lint_nodeconfig(nodeconfig, cluster, where=_where(parts, "NodeConfig", n))
    problems += _lint_mechanism(parts, mechanism)
    return problems


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


def _split(text: str) -> _Parts:
    """The shell scripts and NodeConfig documents in ``text`` (bare script or MIME)."""
    head = text.lstrip()[:400].lower()
    if not (head.startswith("mime-version:") or head.startswith("content-type:")):
        if re.search(r"^\s*apiVersion:", text, re.M) and "NodeConfig" in text \
                and not text.startswith("#!"):
            return _Parts([], [text], ["a NodeConfig must be sent as MIME multipart "
                                       f"({NODECONFIG_CONTENT_TYPE} part); nodeadm ignores bare YAML "
                                       "in this form"])
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
    if boundary and f"--{boundary}--" not in text:
        out.problems.append(f"malformed MIME: the closing boundary --{boundary}-- is missing")
    for defect in msg.defects:
        name = type(defect).__name__
        if name == "CloseBoundaryNotFoundDefect" and boundary and f"--{boundary}--" not in text:
            continue
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


def _lint_shell(script: str, cluster: ClusterSettings | None, *, where: str) -> list[str]:
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
        problems += [f"{where}line {line_no}: {p}" for p in _bootstrap_args_problems(call, cluster)]
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


def _bootstrap_args_problems(call: str, cluster: ClusterSettings | None) -> list[str]:
    try:
        words = shlex.split(call, comments=True)
    except ValueError:
        return []  # bash -n reports the quoting error
    idx = next((i for i, w in enumerate(words) if w.endswith("bootstrap.sh")), None)
    if idx is None:
        return []
    words = words[idx + 1:]
    for stop in ("|", "||", "&&", ";", "&"):
        if stop in words:
            words = words[:words.index(stop)]
    opts: dict[str, str] = {}
    positional: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        if w.startswith("--"):
            key, eq, val = w.partition("=")
            if eq:
                opts[key] = val
            elif i + 1 < len(words):
                opts[key] = words[i + 1]
                i += 1
            else:
                opts[key] = ""
        else:
            positional.append(w)
        i += 1
    problems: list[str] = []
    if not positional:
        problems.append("/etc/eks/bootstrap.sh has no cluster name argument")
    elif cluster is not None and positional[-1] != cluster.name and "$" not in positional[-1]:
        problems.append(f"bootstrap.sh joins cluster {positional[-1]!r}, but cluster.name is "
                        f"{cluster.name!r}")
    if "--apiserver-endpoint" in opts:
        p = _endpoint_problem(opts["--apiserver-endpoint"], "--apiserver-endpoint")
        if p:
            problems.append(p)
    if "--b64-cluster-ca" in opts:
        p = ca_problem(opts["--b64-cluster-ca"], "--b64-cluster-ca")
        if p:
            problems.append(p)
    if ("--apiserver-endpoint" in opts) != ("--b64-cluster-ca" in opts):
        problems.append("give --apiserver-endpoint and --b64-cluster-ca together (either alone "
                        "makes bootstrap.sh call DescribeCluster at every boot)")
    if "--dns-cluster-ip" in opts:
        p = _dns_problem(opts["--dns-cluster-ip"], cluster.service_cidr if cluster else None,
                         "--dns-cluster-ip")
        if p:
            problems.append(p)
    return problems


# ---- values


# The value checks are the configuration's own (one copy: pipeline.core.config).
_endpoint_problem = endpoint_problem
_dns_problem = dns_problem


# ---- NodeConfig


def _lint_nodeconfig(body: str, cluster: ClusterSettings | None, *, where: str) -> list[str]:
    problems: list[str] = []
    holes = _placeholders(body, shell=False)
    if holes:
        problems.append(f"{where}unfilled placeholder{'s' if len(holes) > 1 else ''} "
                        f"{', '.join(holes)} in the NodeConfig")
    try:
        docs = [d for d in yaml.safe_load_all(body) if d is not None]
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        return problems + [f"{where}NodeConfig is not valid YAML"
                           f"{f' (line {mark.line + 1})' if mark else ''}: "
                           f"{getattr(err, 'problem', err)}"]
    if not docs:
        return problems + [f"{where}the {NODECONFIG_CONTENT_TYPE} part is empty"]
    for doc in docs:
        problems += [where + p for p in _nodeconfig_doc_problems(doc, cluster)]
    return problems


def _mapping(value: Any) -> dict[str, Any]:
    """``value`` if it is a mapping, else an empty one (wrong shapes are reported elsewhere)."""
    return value if isinstance(value, dict) else {}


def _nodeconfig_doc_problems(doc: Any, cluster: ClusterSettings | None) -> list[str]:
    if not isinstance(doc, dict):
        return [f"NodeConfig must be a YAML mapping, got {type(doc).__name__}"]
    out: list[str] = []
    if doc.get("apiVersion") != NODECONFIG_API_VERSION:
        out.append(f"NodeConfig apiVersion is {doc.get('apiVersion')!r}; expected "
                   f"{NODECONFIG_API_VERSION}")
    if doc.get("kind") != "NodeConfig":
        out.append(f"NodeConfig kind is {doc.get('kind')!r}; expected NodeConfig")
    spec = _mapping(doc.get("spec"))
    cl = _mapping(spec.get("cluster"))
    for key in ("name", "apiServerEndpoint", "certificateAuthority", "cidr"):
        if not cl.get(key):
            out.append(f"NodeConfig spec.cluster.{key} is missing; a custom AMI needs name, "
                       "apiServerEndpoint, certificateAuthority and cidr")
    if cl.get("apiServerEndpoint"):
        p = _endpoint_problem(cl["apiServerEndpoint"], "spec.cluster.apiServerEndpoint")
        if p:
            out.append(p)
    if cl.get("certificateAuthority"):
        p = ca_problem(cl["certificateAuthority"], "spec.cluster.certificateAuthority")
        if p:
            out.append(p)
    cidr = cl.get("cidr")
    if cidr:
        try:
            ipaddress.ip_network(str(cidr), strict=False)
        except ValueError:
            out.append(f"spec.cluster.cidr must be a CIDR such as 10.100.0.0/16, got {cidr!r}")
            cidr = None
        if cidr and cluster is not None and str(cidr) != cluster.service_cidr:
            out.append(f"spec.cluster.cidr {cidr} differs from cluster.service_cidr "
                       f"{cluster.service_cidr}")
    if cluster is not None and cl.get("name") and cl["name"] != cluster.name:
        out.append(f"spec.cluster.name {cl['name']!r} differs from cluster.name {cluster.name!r}")
    kconf = _mapping(_mapping(spec.get("kubelet")).get("config"))
    for ip in kconf.get("clusterDNS") or []:
        p = _dns_problem(ip, str(cidr) if cidr else None, "spec.kubelet.config.clusterDNS")
        if p:
            out.append(p)
    return out
