"""The ``eks-ami`` console command (also ``python -m pipeline``).

An Invoke :class:`~invoke.program.Program` over the same namespace as ``invoke`` in the
checkout (:data:`pipeline.tasks.ns`), so tasks, flags, help and ``--json`` are identical.
Two things differ, both about usage errors and speed:

- a usage error (unknown task or flag, a flag without its value, ``--keep abc``) is one
  line on stderr and exit 2; with ``--json`` also ``{"error": ..., "exit_code": 2}`` on
  stdout (``invoke`` itself prints Invoke's message and exits 1);
- ``eks-ami verify --image PATH [--require R] [--cluster-version V] [--strict] [--json]``
  does not load Invoke at all:
  :func:`_verify_fast_path` reads exactly those flags (with the same long and short names
  as the task, checked by a test) and calls the same function the task does. Any other
  argument, ``--help`` included, goes through the Program.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NoReturn

from pipeline import __version__

__all__ = ["main", "VERIFY_FAST_FLAGS"]   # and `program`, built on first use

#: The ``verify`` flags the fast path understands: name -> (long, short, takes a value).
VERIFY_FAST_FLAGS: dict[str, tuple[str, str, bool]] = {
    "image": ("--image", "-i", True),
    "require": ("--require", "-r", True),
    "json": ("--json", "-j", False),
    "cluster_version": ("--cluster-version", "-l", True),
    "strict": ("--strict", "-s", False),
}


def _verify_fast_path(args: list[str]) -> dict[str, Any] | None:
    """``verify --image`` arguments as keywords, or None when anything else is there."""
    if not args or args[0] != "verify":
        return None
    lookup = {}
    for name, (long_, short, value) in VERIFY_FAST_FLAGS.items():
        lookup[long_] = lookup[short] = (name, value)
    got: dict[str, Any] = {"require": "any", "json": False, "cluster_version": None,
                           "strict": False}
    seen: set[str] = set()
    rest = args[1:]
    i = 0
    while i < len(rest):
        token, inline = rest[i], None
        if token.startswith("--") and "=" in token:
            token, inline = token.split("=", 1)
        entry = lookup.get(token)
        if entry is None or entry[0] in seen:
            return None                      # anything else, or a repeated flag: Invoke
        name, takes_value = entry
        seen.add(name)
        if takes_value:
            if inline is None:
                i += 1
                if i >= len(rest) or rest[i].startswith("-"):
                    return None
                inline = rest[i]
            got[name] = inline
        elif inline is not None:
            return None
        else:
            got[name] = True
        i += 1
    return got if got.get("image") else None


def _init_positional(argv: list[str]) -> list[str]:
    """``eks-ami init DIR`` as ``init --directory DIR`` (Invoke has no optional positional
    arguments); anything else unchanged."""
    if len(argv) < 3 or argv[1] != "init":
        return argv
    out, i = argv[:2], 2
    while i < len(argv):
        token = argv[i]
        if token in ("--directory", "-d") and i + 1 < len(argv):
            out += [token, argv[i + 1]]
            i += 2
            continue
        if not token.startswith("-") and "--directory" not in out and "-d" not in out:
            out += ["--directory", token]
        else:
            out.append(token)
        i += 1
    return out


def _json_requested(argv: list[str]) -> bool:
    return any(a in ("--json", "-j") for a in argv[1:])


def _usage_error(message: str, argv: list[str]) -> NoReturn:
    """One line on stderr (and a JSON error document with ``--json``), exit 2."""
    from pipeline.cli import write_error_document

    line = " ".join(str(message).split())
    binary = "invoke" if Path(argv[0] if argv else "").name in ("invoke", "inv") else "eks-ami"
    sys.stderr.write(f"error: {line} (see `{binary} --help TASK`)\n")
    if _json_requested(argv):
        write_error_document(sys.stdout, line, 2, kind="usage")
    sys.stdout.flush()
    raise SystemExit(2)


def _parse_error_text(err: Exception) -> str:
    """Invoke's ParseError as one sentence naming the task, the flag and what to do."""
    import re

    context = getattr(err, "context", None)
    task = getattr(context, "name", None)
    where = f"{task}: " if task else ""
    text = str(err)
    text = re.sub(r"<Argument: (\w+)[^>]*>", lambda m: "--" + m.group(1).replace("_", "-"),
                  text)
    m = re.match(r"Flag '?(--[\w-]+)'? needed value and was not given one", text)
    if m:
        return f"{where}{m.group(1)} needs a value"
    m = re.match(r"No idea what '(.*)' is", text)
    if m:
        thing = m.group(1)
        if thing.startswith("-"):
            return f"{where}unknown flag {thing!r}"
        return f"unknown task {thing!r}"
    m = re.match(r"'([\w-]+)' did not receive required positional arguments: (.*)", text)
    if m:
        flags = ", ".join("--" + a.strip(" '").replace("_", "-") for a in m.group(2).split(","))
        return f"{m.group(1)}: missing required {flags}"
    return where + text.rstrip("!")


def _make_program() -> Any:
    from invoke.program import Program
    from invoke.exceptions import Exit, ParseError, UnexpectedExit

    from pipeline.tasks import ns

    class EksAmiProgram(Program):
        """Program whose usage errors exit 2 with one line (Invoke's own exit 1)."""

        def run(self, argv: Any = None, exit: bool = True) -> None:  # noqa: A002
            argv_list = list(sys.argv if argv is None else
                             (argv.split() if isinstance(argv, str) else argv))
            try:
                self.create_config()
                self.parse_core(argv_list)
                self.parse_collection()
                self.parse_tasks()
                self.parse_cleanup()
                self.update_config()
                self.execute()
            except ParseError as e:
                _usage_error(_parse_error_text(e), argv_list)
            except Exit as e:
                if e.message:
                    sys.stderr.write(f"{e.message}\n")
                if exit:
                    raise SystemExit(e.code) from None
            except UnexpectedExit as e:
                if exit:
                    raise SystemExit(e.result.exited) from None
            except KeyboardInterrupt:
                raise SystemExit(130) from None

    return EksAmiProgram(namespace=ns, version=__version__, name="eks-ami",
                         binary="eks-ami", binary_names=["eks-ami"])


def __getattr__(name: str) -> Any:
    if name == "program":            # built on first use: the fast path never needs it
        return _make_program()
    raise AttributeError(name)


def main(argv: list[str] | None = None) -> None:
    """The console script's entry point."""
    argv = list(sys.argv if argv is None else argv)
    fast = _verify_fast_path(argv[1:])
    if fast is not None:
        from pipeline.cli import run_verify_image

        run_verify_image(fast["image"], require=fast["require"], as_json=fast["json"],
                         cluster_version=fast["cluster_version"], strict=fast["strict"])
        return
    _make_program().run(_init_positional(argv))


if __name__ == "__main__":
    main()
