"""The AL2 ``/etc/eks/bootstrap.sh`` argument parser, read from the real script and replayed.

The real script (``pipeline/data/rootfs/al2-bootstrap.sh``, vendored byte for byte from
awslabs/amazon-eks-ami branch ``al2``; see PROVENANCE.md there) parses its arguments with one
``while [[ $# -gt 0 ]]; do case $key in ... esac; done`` loop:

- an arm such as ``--apiserver-endpoint)`` assigns ``$2`` and shifts twice: the option's value is
  always the *next word*; ``--apiserver-endpoint=https://...`` matches no arm;
- ``-h | --help)`` prints the help and exits 1;
- every other word (``*)``) is appended to ``POSITIONAL``, and ``CLUSTER_NAME`` is the first
  positional word. So ``bootstrap.sh --max-pods 40 demo`` joins a cluster named ``--max-pods``,
  and ``--kubelet-extra-args='--node-labels=a=b'`` silently loses the kubelet flags.

:func:`options_from_script` derives the option list from the script's own ``case`` arms (so an
AMI whose bootstrap.sh was read by verify can be checked against *its* options), and
:func:`parse_call` replays the loop on a call's words. ``tests/test_bootstrap_sh.py`` runs the
real script's loop in bash on the same words and compares.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BootstrapOptions", "ParsedCall", "BUNDLED_SCRIPT", "bundled_options",
           "options_from_script", "parse_call"]

#: The real AL2 bootstrap.sh (vendored; provenance in the same folder).
BUNDLED_SCRIPT = Path(__file__).resolve().parents[1] / "data" / "rootfs" / "al2-bootstrap.sh"

_LOOP = re.compile(r"while\s+\[\[\s*\$#\s+-gt\s+0\s*\]\];\s*do\s*\n(?P<body>.*?)\n\s*done\b", re.S)
_CASE = re.compile(r"\bcase\s+\"?\$\w+\"?\s+in\b(?P<arms>.*?)\besac\b", re.S)
_ARM = re.compile(r"^[ \t]*(?P<pat>[^\s()#][^)\n]*)\)[ \t]*(?:#[^\n]*)?$", re.M)


@dataclass(frozen=True, slots=True)
class BootstrapOptions:
    """What one bootstrap.sh's argument loop understands."""

    with_value: frozenset[str]   # arms that take ``$2`` and shift twice
    flags: frozenset[str]        # arms that shift once and take no value
    exits: frozenset[str]        # arms that exit (``-h | --help``)
    source: str                  # where the list was read

    @property
    def known(self) -> frozenset[str]:
        return self.with_value | self.flags | self.exits


@dataclass(frozen=True, slots=True)
class ParsedCall:
    """What the real loop makes of a call's words."""

    values: dict[str, str]            # option -> value (the last one given wins, as in the script)
    positional: tuple[str, ...]       # words no arm matched, in order
    missing_value: tuple[str, ...]    # options given as the last word (``$2`` unbound: exit)
    exits_with: str | None            # ``--help`` reached: prints help and exits 1

    @property
    def cluster_name(self) -> str | None:
        """``CLUSTER_NAME="$1"`` after ``set -- "${POSITIONAL[@]}"``."""
        return self.positional[0] if self.positional else None


def options_from_script(text: str, source: str = "bootstrap.sh") -> BootstrapOptions | None:
    """The options of the script's ``while``/``case`` argument loop; None if it has none."""
    loop = _LOOP.search(text)
    case = _CASE.search(loop.group("body")) if loop else None
    if case is None:
        return None
    arms_text = case.group("arms")
    matches = list(_ARM.finditer(arms_text))
    with_value: set[str] = set()
    flags: set[str] = set()
    exits: set[str] = set()
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(arms_text)
        body = arms_text[m.end():end].split(";;")[0]
        patterns = [p.strip().strip("'\"") for p in m.group("pat").split("|")]
        if any(p == "*" or not p.startswith("-") for p in patterns):
            continue
        if re.search(r"^\s*exit\b", body, re.M):
            exits.update(patterns)
        elif len(re.findall(r"^\s*shift\b", body, re.M)) >= 2 or re.search(r"\bshift\s+2\b", body):
            with_value.update(patterns)
        else:
            flags.update(patterns)
    if not (with_value or flags):
        return None
    return BootstrapOptions(frozenset(with_value), frozenset(flags), frozenset(exits), source)


@functools.cache
def bundled_options() -> BootstrapOptions:
    """The options of the vendored real AL2 bootstrap.sh."""
    opts = options_from_script(BUNDLED_SCRIPT.read_text(encoding="utf-8"),
                               source=f"{BUNDLED_SCRIPT.name} (awslabs/amazon-eks-ami al2)")
    if opts is None:  # pragma: no cover - the vendored file is checked by a test
        raise RuntimeError(f"{BUNDLED_SCRIPT}: no argument loop found")
    return opts


def parse_call(words: list[str], options: BootstrapOptions) -> ParsedCall:
    """Replay the script's ``while [[ $# -gt 0 ]]; case`` loop on ``words``."""
    values: dict[str, str] = {}
    positional: list[str] = []
    missing: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word in options.exits:
            return ParsedCall(values, tuple(positional), tuple(missing), word)
        if word in options.with_value:
            if i + 1 >= len(words):
                missing.append(word)
                break
            values[word] = words[i + 1]
            i += 2
            continue
        if word in options.flags:
            values[word] = ""
        else:
            positional.append(word)
        i += 1
    return ParsedCall(values, tuple(positional), tuple(missing), None)
