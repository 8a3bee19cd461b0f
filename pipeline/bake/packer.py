"""Running Packer: version detection, command lines, validate, a live build stream, manifests.

Two Packer generations run the same ``packer/<image>/`` templates (AWS-FACTS §5):

- **Packer >= 1.7** (plugins split out; >= 1.10 ships none): ``packer init <dir>`` installs
  what ``plugins.pkr.hcl`` requires, then ``packer build <dir>`` builds every file.
- **Packer 1.6.x** (Debian's 1.6.6, amazon builder bundled): it rejects ``required_plugins``
  and ``packer init`` does not exist. We stage a folder with every ``*.pkr.hcl`` except
  ``plugins.pkr.hcl``, drop blocks fenced by ``# amazon-plugin>=X begin`` / ``end`` comments
  (settings the bundled builder does not know), link ``provisioners/`` and ``files/`` and
  build that folder.

Variables are passed in one documented order: the template's ``defaults.pkrvars.hcl``,
the configured var files, then one generated JSON var file (the build's own values).

``packer build -machine-readable`` lines are ``timestamp,target,type,data...`` with commas
in data written as ``%!(PACKER_COMMA)`` and newlines as a literal ``\\n``. :func:`run_build`
reads them live: ``ui`` lines go to the log and the progress status, error lines are kept
for the report. AMI ids come from the ``manifest`` post-processor's JSON, selected by its
``last_run_uuid``, never from the log.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pipeline.core.errors import InputError, PackerBuildFailed
from pipeline.core.inputs import read_text
from pipeline.core.progress import NO_PROGRESS, Progress

__all__ = [
    "PackerVersion", "PackerEvent", "PackerRun", "Manifest", "TemplateFiles", "Invocation",
    "PLUGINS_FILE", "VARIABLES_FILE", "DEFAULTS_FILE",
    "find_packer", "detect_version", "prefetch_version", "parse_version", "template_files",
    "plan_invocation",
    "stage_legacy", "parse_line", "decode", "run_build", "validate", "init",
    "parse_manifest", "packer_env", "strip_fenced", "new_workdir", "INTERRUPT_GRACE",
    "declared_variables", "check_variables",
]

log = logging.getLogger(__name__)

PLUGINS_FILE = "plugins.pkr.hcl"
VARIABLES_FILE = "variables.pkr.hcl"
DEFAULTS_FILE = "defaults.pkrvars.hcl"
_FENCE = re.compile(r"^\s*#\s*amazon-plugin>=(?P<ver>[\d.]+)\s+begin\s*$")
_FENCE_END = re.compile(r"^\s*#\s*amazon-plugin>=(?P<ver>[\d.]+)\s+end\s*$")
_VERSION = re.compile(r"Packer v?(\d+)\.(\d+)\.(\d+)")
#: Seconds Packer gets to clean up after SIGINT before it is killed.
INTERRUPT_GRACE = 300.0


# --------------------------------------------------------------------------- version


@dataclass(frozen=True, slots=True, order=True)
class PackerVersion:
    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def has_init(self) -> bool:
        """``packer init`` and ``required_plugins`` arrived in 1.7.0."""
        return (self.major, self.minor) >= (1, 7)

    @property
    def bundles_amazon(self) -> bool:
        """Bundled plugins were removed in 1.10.0; before that amazon came with Packer."""
        return (self.major, self.minor) < (1, 10)

    @property
    def legacy(self) -> bool:
        return not self.has_init

    @property
    def supports_imds_support(self) -> bool:
        """``imds_support`` on amazon-ebs needs amazon plugin >= 1.2.2; on >= 1.7 we
        ``packer init`` a plugin that new (plugins.pkr.hcl asks for it), 1.6.x has none."""
        return self.has_init


def parse_version(text: str) -> PackerVersion:
    """``Packer v1.6.6`` (possibly followed by an out-of-date notice) to a version."""
    m = _VERSION.search(text)
    if not m:
        raise InputError(f"cannot read the Packer version from {text.strip()[:80]!r}; "
                         "check that `packer version` runs")
    return PackerVersion(int(m[1]), int(m[2]), int(m[3]))


def find_packer(binary: str | None = None) -> str:
    """The packer executable: ``binary``, ``$PACKER_BINARY`` or ``packer`` on PATH."""
    name = binary or os.environ.get("PACKER_BINARY") or "packer"
    path = shutil.which(name)
    if path is None:
        raise InputError(f"packer not found ({name!r}); install Packer (Debian: apt-get install "
                         "packer; or https://developer.hashicorp.com/packer/install) or set "
                         "PACKER_BINARY")
    return path


def packer_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment Packer runs with: no update check over the network, no debug log."""
    env = dict(os.environ)
    env.setdefault("CHECKPOINT_DISABLE", "1")
    env.setdefault("PACKER_LOG", "0")
    env.update(extra or {})
    return env


_PREFETCHED: dict[tuple[str, int, int], "Future[PackerVersion]"] = {}
_PREFETCH_LOCK = threading.Lock()


def _binary_key(packer: str) -> tuple[str, int, int]:
    st = os.stat(packer)
    return os.path.realpath(packer), st.st_mtime_ns, st.st_size


def prefetch_version(binary: str | None = None) -> bool:
    """Start ``packer version`` in the background (the ``invoke bake`` task does this
    before it imports boto3, so the process overlaps ~0.1 s of imports).

    The next :func:`detect_version` of the same, unchanged binary takes the result,
    once. Any problem (no packer, ...) only means nothing is prefetched: the real call
    reports it. Returns whether a detection was started.
    """
    try:
        packer = find_packer(binary)
        key = _binary_key(packer)
    except (InputError, OSError):
        return False
    fut: Future[PackerVersion] = Future()

    def run() -> None:
        try:
            fut.set_result(_run_version(packer))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            fut.set_exception(err)

    with _PREFETCH_LOCK:
        if key in _PREFETCHED:
            return False
        _PREFETCHED[key] = fut
    threading.Thread(target=run, name="packer-version", daemon=True).start()
    return True


def detect_version(packer: str) -> PackerVersion:
    """``packer version``, parsed (a prefetched result for this binary if there is one)."""
    try:
        key = _binary_key(packer)
    except OSError:
        key = None
    with _PREFETCH_LOCK:
        fut = _PREFETCHED.pop(key, None) if key else None
    if fut is not None:
        return fut.result()
    return _run_version(packer)


def _run_version(packer: str) -> PackerVersion:
    try:
        out = subprocess.run([packer, "version"], capture_output=True, text=True, timeout=60,
                             env=packer_env(), check=False)
    except OSError as err:
        raise InputError(f"cannot run {packer} version: {err.strerror}; check the install") from err
    return parse_version(out.stdout + out.stderr)


# --------------------------------------------------------------------------- templates


@dataclass(frozen=True, slots=True)
class TemplateFiles:
    """The files of one template folder, as Packer and the inputs hash see them."""

    root: Path
    templates: tuple[Path, ...]        # *.pkr.hcl without plugins.pkr.hcl
    plugins: Path | None
    defaults: Path | None
    assets: tuple[Path, ...]           # provisioners/**, files/**

    def all_inputs(self) -> list[Path]:
        files = list(self.templates) + list(self.assets)
        files += [p for p in (self.plugins, self.defaults) if p is not None]
        return sorted(files)


def template_files(root: Path) -> TemplateFiles:
    """Check a template folder and list its files."""
    if not root.is_dir():
        raise InputError(f"{root}: Packer template folder not found; check images[].bake.template")
    templates = tuple(sorted(p for p in root.glob("*.pkr.hcl") if p.name != PLUGINS_FILE))
    if not templates:
        raise InputError(f"{root}: no *.pkr.hcl template in the folder; "
                         "check images[].bake.template")
    if not (root / VARIABLES_FILE).is_file():
        raise InputError(f"{root}: {VARIABLES_FILE} missing; declare every variable there")
    assets = tuple(sorted(p for sub in ("provisioners", "files") if (root / sub).is_dir()
                          for p in (root / sub).rglob("*") if p.is_file()))
    plugins = root / PLUGINS_FILE
    defaults = root / DEFAULTS_FILE
    return TemplateFiles(root=root, templates=templates,
                         plugins=plugins if plugins.is_file() else None,
                         defaults=defaults if defaults.is_file() else None, assets=assets)


def strip_fenced(text: str) -> tuple[str, list[str]]:
    """Drop ``# amazon-plugin>=X begin`` ... ``end`` blocks; return the text and the fences."""
    out: list[str] = []
    dropped: list[str] = []
    inside: str | None = None
    for line in text.splitlines(keepends=True):
        blank = "\n" if line.endswith("\n") else ""
        if inside is None:
            m = _FENCE.match(line)
            if m:
                inside = m["ver"]
                dropped.append(inside)
                out.append(blank)
                continue
            out.append(line)
        else:
            # Dropped lines stay as blank lines: Packer's "line N" is the user's line N.
            out.append(blank)
            if _FENCE_END.match(line):
                inside = None
    if inside is not None:
        raise InputError(f"unterminated '# amazon-plugin>={inside} begin' block in a template; "
                         "add the matching end comment")
    return "".join(out), dropped


def stage_legacy(files: TemplateFiles, dest: Path) -> list[str]:
    """Lay out the folder Packer 1.6.x builds: templates minus fenced blocks, no plugins file.

    Returns the plugin versions whose fenced settings were left out.
    """
    dest.mkdir(parents=True, exist_ok=True)
    dropped: list[str] = []
    for tpl in files.templates:
        text, fences = strip_fenced(tpl.read_text(encoding="utf-8"))
        dropped += fences
        (dest / tpl.name).write_text(text, encoding="utf-8")
    for sub in ("provisioners", "files"):
        if (files.root / sub).is_dir() and not (dest / sub).exists():
            (dest / sub).symlink_to((files.root / sub).resolve(), target_is_directory=True)
    return dropped


@dataclass(slots=True)
class Invocation:
    """How one template is validated and built with one Packer version."""

    packer: str
    version: PackerVersion
    template_dir: Path                 # the folder Packer is pointed at
    var_files: list[Path]
    init_cmd: list[str] | None
    validate_cmd: list[str]
    build_cmd: list[str]
    workdir: Path
    dropped_fences: list[str] = field(default_factory=list)
    #: The user's template folder (``template_dir`` is a staged copy for Packer 1.6.x).
    source_dir: Path | None = None


def plan_invocation(packer: str, version: PackerVersion, files: TemplateFiles,
                    var_files: Sequence[Path], workdir: Path, *, stage: bool = True) -> Invocation:
    """The init/validate/build command lines for ``version`` (stages the 1.6.x folder).

    ``stage=False`` plans without writing anything (``--dry-run``, unit tests).
    """
    dropped: list[str] = []
    if version.has_init:
        target = files.root
        init_cmd: list[str] | None = [packer, "init", str(target)]
    else:
        target = workdir / "template"
        init_cmd = None
        if stage:
            dropped = stage_legacy(files, target)
        else:
            dropped = [f for t in files.templates
                       for f in strip_fenced(t.read_text(encoding="utf-8"))[1]]
    args = [f"-var-file={p}" for p in var_files]
    validate_cmd = [packer, "validate", *args, str(target)]
    build_cmd = [packer, "build", "-machine-readable", "-color=false", *args, str(target)]
    return Invocation(packer=packer, version=version, template_dir=target,
                      var_files=list(var_files), init_cmd=init_cmd, validate_cmd=validate_cmd,
                      build_cmd=build_cmd, workdir=workdir, dropped_fences=dropped,
                      source_dir=files.root)


# --------------------------------------------------------------------------- stream


@dataclass(frozen=True, slots=True)
class PackerEvent:
    """One machine-readable line, decoded."""

    timestamp: int
    target: str
    type: str
    data: tuple[str, ...]

    @property
    def ui_kind(self) -> str | None:
        return self.data[0] if self.type == "ui" and self.data else None

    @property
    def message(self) -> str:
        if self.type == "ui":
            return self.data[1] if len(self.data) > 1 else ""
        return ",".join(self.data)


def decode(field_text: str) -> str:
    """Undo Packer's machine-readable escaping of commas, newlines and carriage returns."""
    return (field_text.replace("%!(PACKER_COMMA)", ",").replace("\\n", "\n")
            .replace("\\r", "\r"))


def parse_line(line: str) -> PackerEvent | None:
    """``timestamp,target,type,data...`` to an event; None for anything else."""
    parts = line.rstrip("\r\n").split(",")
    if len(parts) < 3 or not parts[0].isdigit():
        return None
    return PackerEvent(int(parts[0]), parts[1], parts[2], tuple(decode(p) for p in parts[3:]))


@dataclass(slots=True)
class PackerRun:
    """What one ``packer build`` said and did."""

    exit_code: int
    seconds: float
    errors: list[str] = field(default_factory=list)
    ui: list[str] = field(default_factory=list)
    artifacts: dict[str, list[str]] = field(default_factory=dict)   # target -> ids
    interrupted: bool = False
    instance_ids: list[str] = field(default_factory=list)
    key_pairs: list[str] = field(default_factory=list)
    security_groups: list[str] = field(default_factory=list)
    amis: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.interrupted


#: What the stream names: (PackerRun attribute, pattern); the journal reads it too.
SEEN = [
    ("instance_ids", re.compile(r"Instance ID: (i-[0-9a-f]+)")),
    ("key_pairs", re.compile(r"Creating temporary keypair: (\S+)")),
    ("security_groups", re.compile(r"temporary security group for this instance: (\S+)")),
    # The AMI CreateImage made, and the encrypted copy (only tagged at the very end).
    ("amis", re.compile(r"(?:\bAMI: |Encrypting AMI \(|attributes on AMI \()(ami-[0-9a-f]+)")),
]


def _note(run: PackerRun, ev: PackerEvent, progress: Progress) -> None:
    """Route one event: ui to log/progress, errors kept, resources Packer names remembered."""
    if ev.type == "ui":
        text = ev.message.strip("\n")
        kind = ev.ui_kind
        if kind == "error":
            if text.strip():
                run.errors.append(text.strip())
                log.error("packer: %s", text.strip())
            return
        if not text.strip():
            return
        run.ui.append(text)
        for attr, rx in SEEN:
            for m in rx.finditer(text):
                if m[1] not in getattr(run, attr):
                    getattr(run, attr).append(m[1])
        # The log keeps every line (PIPELINE_DEBUG=1 shows them); the console gets them
        # once, through the progress renderer.
        log.debug("packer: %s", text.strip())
        progress.status(text.rstrip())
    elif ev.type == "error":
        msg = ev.message.strip()
        if msg:
            run.errors.append(f"{ev.target}: {msg}" if ev.target else msg)
    elif ev.type == "artifact" and len(ev.data) >= 3 and ev.data[1] == "id":
        run.artifacts.setdefault(ev.target, []).append(ev.data[2])


def run_build(cmd: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None,
              progress: Progress = NO_PROGRESS,
              on_event: Callable[[PackerEvent], None] | None = None,
              grace: float = INTERRUPT_GRACE) -> PackerRun:
    """Run ``packer build -machine-readable`` and parse its stream while it runs.

    A reader thread parses every line as it arrives (``ui`` lines to the log and
    ``progress.status``, errors kept, the temporary resources Packer names remembered;
    ``on_event`` sees each event, from that thread). The calling thread only waits, in
    short slices, so Ctrl-C is noticed at once even while Packer prints nothing.

    Packer runs in its own session so that a terminal Ctrl-C reaches only us; we forward
    SIGINT to it and wait (up to ``grace`` seconds) while it cleans up ("Terminating the
    source AWS instance..."), then re-raise :class:`KeyboardInterrupt` with the run
    attached as ``err.packer_run``. A second Ctrl-C kills Packer.
    """
    t0 = time.monotonic()
    run = PackerRun(exit_code=-1, seconds=0.0)
    try:
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=dict(env or packer_env()),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True, bufsize=1,
                                start_new_session=True)
    except OSError as err:
        raise PackerBuildFailed(f"cannot start {cmd[0]}: {err.strerror}") from err
    assert proc.stdout is not None
    stdout = proc.stdout

    def consume() -> None:
        for line in iter(stdout.readline, ""):
            ev = parse_line(line)
            if ev is None:
                if line.strip():
                    run.ui.append(line.rstrip())
                    log.debug("packer: %s", line.rstrip())
                continue
            _note(run, ev, progress)
            if on_event is not None:
                try:
                    on_event(ev)
                except Exception:  # noqa: BLE001 - a callback bug must not stop the reader
                    log.exception("packer event callback failed")

    reader = threading.Thread(target=consume, name="packer-stream", daemon=True)
    reader.start()
    try:
        run.exit_code = _wait(proc, None)
    except KeyboardInterrupt as interrupt:
        run.interrupted = True
        log.warning("interrupted: asking Packer to stop and clean up (up to %.0f s)", grace)
        progress.status("interrupted: waiting for Packer to clean up (Ctrl-C again to kill it)")
        _send(proc, signal.SIGINT)
        try:
            run.exit_code = _wait(proc, grace)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            log.error("Packer did not finish cleaning up; killing it")
            _send(proc, signal.SIGKILL)
            run.exit_code = proc.wait()
        reader.join(timeout=10)
        run.seconds = time.monotonic() - t0
        interrupt.packer_run = run  # type: ignore[attr-defined]
        raise
    finally:
        if proc.poll() is None:
            _send(proc, signal.SIGKILL)
            proc.wait()
        reader.join(timeout=10)
        stdout.close()
    run.seconds = time.monotonic() - t0
    return run


def _wait(proc: subprocess.Popen[str], timeout: float | None) -> int:
    """``proc.wait``; with a timeout in short slices, so a KeyboardInterrupt is raised
    promptly.

    Without a timeout a plain blocking ``waitpid`` returns the moment Packer exits
    (``wait(timeout=...)`` polls with sleeps of up to 50 ms) and is still interrupted by
    Ctrl-C: the SIGINT handler raises KeyboardInterrupt out of the system call (PEP 475).
    """
    if timeout is None:
        return proc.wait()
    deadline = time.monotonic() + timeout
    while True:
        try:
            return proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                raise


def _send(proc: subprocess.Popen[str], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _run_simple(cmd: Sequence[str], cwd: Path, what: str, timeout: float = 600) -> str:
    try:
        out = subprocess.run(list(cmd), cwd=cwd, env=packer_env(), capture_output=True,
                             text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as err:
        raise PackerBuildFailed(f"{what} did not finish in {timeout:.0f} s") from err
    text = (out.stdout + out.stderr).strip()
    if out.returncode != 0:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        raise PackerBuildFailed(f"{what} failed: " + " | ".join(lines[:12]),
                                details={"command": list(cmd), "output": text})
    return text


def validate(inv: Invocation) -> str:
    """``packer validate`` with the build's var files.

    A template or variable error is bad input (exit 2, nothing was created): one line
    naming the user's own file and line (never the staged copy) and Packer's summary.
    """
    source = inv.source_dir or inv.template_dir
    try:
        return _run_simple(inv.validate_cmd, inv.workdir, f"packer validate {source}")
    except PackerBuildFailed as err:
        output = str((err.details or {}).get("output", "")) if isinstance(err.details, dict) \
            else ""
        if not output:
            raise
        raise InputError(validation_problem(output, inv.template_dir, source),
                         details=err.details) from err


_PACKER_ERROR = re.compile(r"^Error: (?P<summary>.+?)\s*$", re.M)
_PACKER_WHERE = re.compile(r"^\s*on (?P<file>.+?) line (?P<line>\d+)", re.M)


def validation_problem(output: str, staged: Path, source: Path) -> str:
    """One line from ``packer validate``'s output: ``FILE line N: summary (+k more)``."""
    text = output.replace(str(staged), str(source))
    errors = list(_PACKER_ERROR.finditer(text))
    if not errors:
        line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "failed")
        return f"packer validate {source}: {line}; fix the template"
    first = errors[0]
    tail = text[first.end():errors[1].start() if len(errors) > 1 else len(text)]
    where = _PACKER_WHERE.search(tail)
    loc = source
    if where:
        f = Path(where["file"])
        loc = f if f.is_absolute() else source / f
        loc_text = f"{loc} line {where['line']}"
    else:
        loc_text = str(loc)
    summary = first["summary"]
    bullets = re.findall(r"^\* (.+?)\s*$", tail, re.M)
    if bullets:   # "3 error(s) occurred:" then one "* ..." line each
        summary = bullets[0] + (f" (+{len(bullets) - 1} more)" if len(bullets) > 1 else "")
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return (f"packer validate: {loc_text}: {summary}{more}; fix the template "
            "(`packer validate` on the folder shows every error)")


# --------------------------------------------------------------------------- variables

_VARIABLE_BLOCK = re.compile(r'^\s*variable\s+"(?P<name>[^"]+)"\s*\{', re.M)
_ASSIGNMENT = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_-]*)\s*=")


def declared_variables(files: TemplateFiles) -> set[str]:
    """The variable names the template's HCL ``variable "NAME" {`` blocks declare."""
    names: set[str] = set()
    for tpl in files.templates:
        names |= {m["name"] for m in _VARIABLE_BLOCK.finditer(tpl.read_text(encoding="utf-8"))}
    return names


def _var_file_names(path: Path, what: str) -> list[tuple[str, int]]:
    """(variable, line) set at the top level of an HCL or JSON var file."""
    text = read_text(path, what=what, hint="give a Packer var file (NAME = VALUE lines)")
    if path.suffix == ".json":
        try:
            doc = json.loads(text)
        except ValueError as err:
            raise InputError(f"{what} {path}: not valid JSON ({err}); fix the file") from err
        if not isinstance(doc, dict):
            raise InputError(f"{what} {path}: expected a JSON object of variables")
        return [(str(k), 0) for k in doc]
    out: list[tuple[str, int]] = []
    depth = 0
    for n, line in enumerate(text.splitlines(), 1):
        code = re.sub(r'"(?:[^"\\]|\\.)*"', '""', line.split("#", 1)[0].split("//", 1)[0])
        if depth == 0:
            m = _ASSIGNMENT.match(code.strip())
            if m:
                out.append((m["name"], n))
        depth = max(0, depth + code.count("{") + code.count("[") + code.count("(")
                    - code.count("}") - code.count("]") - code.count(")"))
    return out


def check_variables(files: TemplateFiles, var_files: Sequence[Path],
                    variables: Mapping[str, Any], *, where: str = "bake") -> None:
    """Refuse a variable the template does not declare (Packer only warns, then builds).

    ``var_files`` are the user's var files (the defaults file included); ``variables``
    the configured ``bake.variables`` (and ``instance_type``).
    """
    declared = declared_variables(files)
    if not declared:
        return
    problems: list[str] = []
    for vf in var_files:
        for name, line in _var_file_names(vf, f"{where}.var_files"):
            if name not in declared:
                at = f"{vf} line {line}" if line else str(vf)
                problems.append(f"{at}: {_unknown(name, declared, files)}")
    for name in variables:
        if name not in declared:
            problems.append(f"{where}.variables.{name}: {_unknown(name, declared, files)}")
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InputError(problems[0] + more)


def _unknown(name: str, declared: set[str], files: TemplateFiles) -> str:
    import difflib

    close = difflib.get_close_matches(name, sorted(declared), n=1, cutoff=0.7)
    hint = f"did you mean {close[0]!r}?" if close else f"declare it in {VARIABLES_FILE} or remove it"
    return (f"variable {name!r} is not declared by the Packer template {files.root} ({hint}); "
            "Packer would only warn and build without it")


def init(inv: Invocation) -> str | None:
    """``packer init`` on Packer >= 1.7 (installs the amazon plugin); nothing on 1.6.x."""
    if inv.init_cmd is None:
        return None
    return _run_simple(inv.init_cmd, inv.workdir, f"packer init {inv.template_dir}")


# --------------------------------------------------------------------------- manifest


@dataclass(frozen=True, slots=True)
class Manifest:
    """The manifest post-processor's entry for one run."""

    run_uuid: str
    image_ids: dict[str, str]          # region -> ami
    custom_data: dict[str, Any]
    build_time: int | None


def parse_manifest(path: Path, run_uuid: str | None = None) -> Manifest:
    """The builds of ``last_run_uuid`` (or ``run_uuid``); ``artifact_id`` is sorted
    ``region:ami`` pairs joined by commas (packer-plugin-amazon builder/common/artifact.go)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise PackerBuildFailed(f"{path}: Packer wrote no manifest; check the manifest "
                                "post-processor's output variable") from err
    except json.JSONDecodeError as err:
        raise PackerBuildFailed(f"{path}: manifest is not JSON ({err.msg})") from err
    uuid = run_uuid or doc.get("last_run_uuid")
    builds = [b for b in doc.get("builds", []) if b.get("packer_run_uuid") == uuid]
    if not builds:
        raise PackerBuildFailed(f"{path}: no build of run {uuid} in the manifest")
    images: dict[str, str] = {}
    custom: dict[str, Any] = {}
    for b in builds:
        custom.update(b.get("custom_data") or {})
        for pair in str(b.get("artifact_id", "")).split(","):
            region, _, ami = pair.strip().partition(":")
            if region and ami.startswith("ami-"):
                images[region] = ami
    if not images:
        raise PackerBuildFailed(f"{path}: run {uuid} has no region:ami artifact")
    return Manifest(run_uuid=str(uuid), image_ids=images, custom_data=custom,
                    build_time=builds[-1].get("build_time"))


def new_workdir(prefix: str = "bake-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
