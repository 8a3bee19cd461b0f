"""systemd unit state read offline, the way ``systemctl --root=TREE is-enabled`` sees it.

A unit starts at boot only when it is *enabled*: a ``.wants/`` (or ``.requires/``)
symlink named after the unit sits in a target directory that boot reaches, pointing at
the unit file. ``systemctl enable U`` creates
``/etc/systemd/system/<T>.wants/U -> <unit file>`` for every ``WantedBy=T`` of the
unit's ``[Install]`` section (``RequiredBy=`` gives ``.requires/``). A unit is *masked*
when its name in ``/etc/systemd/system`` (which overrides ``/usr/lib/systemd/system``)
is a symlink to ``/dev/null`` or an empty file; a masked unit never starts.

Everything resolves inside the image (:meth:`RootFs.resolve`); the host is never read.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.image.diskread.fs import Resolved, RootFs

__all__ = ["UnitState", "unit_state", "UNIT_DIRS", "BOOT_TARGETS"]

#: Unit search path in precedence order (``/lib`` for distributions without merged /usr).
UNIT_DIRS = ("/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")
#: Targets a normal boot reaches, besides the unit's own ``WantedBy=``/``RequiredBy=``.
BOOT_TARGETS = ("multi-user.target", "default.target", "graphical.target", "basic.target",
                "sysinit.target", "cloud-init.target", "network-online.target")
_MAX_UNIT = 65536


@dataclass
class UnitState:
    """Where a unit file is and whether boot starts it.

    ``state``: enabled | disabled | masked | missing | broken (a dangling unit link).
    """

    name: str
    state: str = "missing"
    path: str | None = None                  # the unit file that wins (search order)
    resolved: str | None = None              # after symlinks, inside the image
    mode: str | None = None
    wanted_by: list[str] = field(default_factory=list)   # [Install] WantedBy=/RequiredBy=
    enabled_by: list[str] = field(default_factory=list)  # ".wants/" links that reach it
    links: list[str] = field(default_factory=list)       # every hop followed
    detail: str = ""

    @property
    def present(self) -> bool:
        return self.state != "missing"

    @property
    def enabled(self) -> bool:
        return self.state == "enabled"


def _install_targets(text: str) -> list[str]:
    out: list[str] = []
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        if section != "Install":
            continue
        key, sep, val = line.partition("=")
        if sep and key.strip() in ("WantedBy", "RequiredBy"):
            suffix = ".wants" if key.strip() == "WantedBy" else ".requires"
            out.extend(f"{t}{suffix}" for t in val.split())
    return out


def _is_null(fs: RootFs, res: Resolved) -> bool:
    """``res`` (not followed) is a symlink to /dev/null."""
    node = res.node
    return node is not None and node.kind == "lnk" and fs.readlink(node) == "/dev/null"


def _find_file(fs: RootFs, st: UnitState) -> None:
    for d in UNIT_DIRS:
        where = f"{d}/{st.name}"
        raw = fs.resolve(where, follow=False)
        if raw.node is None:
            continue
        if _is_null(fs, raw):
            st.state, st.path, st.resolved = "masked", where, "/dev/null"
            st.links = [f"{where} -> /dev/null"]
            st.detail = f"{where} is masked (a symlink to /dev/null)"
            return
        res = fs.resolve(where)
        st.links = list(res.links)
        if res.node is None:
            if res.target == "/dev/null":
                st.state, st.path, st.resolved = "masked", where, "/dev/null"
                st.detail = f"{where} is masked ({' -> '.join(res.links)} leads to /dev/null)"
            else:
                st.state, st.path, st.resolved = "broken", where, res.target
                st.detail = res.detail or f"{where} does not resolve"
            return
        st.path, st.resolved, st.mode = where, res.target, f"{res.node.perms:04o}"
        if res.node.kind != "reg":
            st.state, st.detail = "broken", f"{res.target} is not a regular file"
            return
        if res.node.size == 0:
            st.state = "masked"
            st.detail = f"{res.target} is empty (systemd treats an empty unit file as masked)"
            return
        text = fs.read_file(res.node, limit=_MAX_UNIT).decode(errors="replace")
        st.wanted_by = _install_targets(text)
        st.state = "disabled"
        return


def _dirs_of(fs: RootFs, st: UnitState) -> list[str]:
    wanted = list(dict.fromkeys(st.wanted_by + [f"{t}.wants" for t in BOOT_TARGETS]
                                + [f"{t}.requires" for t in BOOT_TARGETS]))
    out: list[str] = []
    for d in UNIT_DIRS:
        base = fs.resolve(d)
        if base.node is None or base.node.kind != "dir":
            continue
        names = set(fs.listdir(base.node))
        out.extend(f"{d}/{w}" for w in wanted if w in names)
    return out


def unit_state(fs: RootFs, name: str) -> UnitState:
    """The state of unit ``name`` (e.g. ``nodeadm-config.service``) in the image."""
    st = UnitState(name)
    _find_file(fs, st)
    if st.state != "disabled":
        return st
    masks: list[str] = []
    broken: list[str] = []
    for wants in _dirs_of(fs, st):
        where = f"{wants}/{name}"
        raw = fs.resolve(where, follow=False)
        if raw.node is None:
            continue
        if _is_null(fs, raw):
            masks.append(f"{where} -> /dev/null")
            continue
        res = fs.resolve(where)
        hops = res.links or [where]
        if res.node is not None and res.node.kind == "reg" and res.node.size > 0 \
                and res.target is not None and res.target.rsplit("/", 1)[-1] == name:
            st.enabled_by.append(where)
            st.links.extend(h for h in hops if h not in st.links)
        else:
            broken.append(res.detail or f"{where} does not lead to the {name} unit file")
    if st.enabled_by:
        st.state = "enabled"
        st.detail = ""
        return st
    wants_hint = ", ".join(w for w in st.wanted_by) or "no [Install] WantedBy="
    st.detail = (f"{name} is not enabled: no .wants/ or .requires/ link to {st.path} "
                 f"(its [Install]: {wants_hint}); run `systemctl enable {name}` in the build")
    if masks:
        st.detail += f"; {', '.join(masks)}"
    if broken:
        st.detail += f"; {'; '.join(broken)}"
    return st
