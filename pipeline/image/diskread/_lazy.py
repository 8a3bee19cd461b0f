"""Import one dissect.hypervisor format without compiling all the others.

``dissect/hypervisor/__init__.py`` imports every disk format and VM descriptor it
knows (VMDK, qcow2, VHD, VHDX, VDI, HDD, ASIF, Hyper-V, OVF, VirtualBox, Parallels,
VMX, vmtar), and each compiles its ``cstruct`` definitions at import: about 0.1 s of
CPU that ``invoke verify --image`` (target: 1 s including Python start-up) does not
need when it reads one VMDK.

:func:`hypervisor_module` registers the package without running its ``__init__`` and
gives it a PEP 562 ``__getattr__`` that runs the real ``__init__`` on the first
attribute the stub lacks, so ``import dissect.hypervisor`` elsewhere still sees the
whole package.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from types import ModuleType

__all__ = ["hypervisor_module"]

_PKG = "dissect.hypervisor"
_lock = threading.RLock()


def _install_stub() -> None:
    spec = importlib.util.find_spec(_PKG)
    if spec is None or spec.loader is None:  # pragma: no cover - dependency missing
        raise ImportError(f"{_PKG} is not installed")
    pkg = importlib.util.module_from_spec(spec)
    state = {"done": False}

    def __getattr__(name: str) -> object:
        # PEP 562: only called for attributes the stub does not have yet.
        if name.startswith("__") or state["done"]:
            raise AttributeError(f"module {_PKG!r} has no attribute {name!r}")
        with _lock:
            if not state["done"]:
                state["done"] = True
                spec.loader.exec_module(pkg)  # type: ignore[union-attr]
        return pkg.__dict__[name] if name in pkg.__dict__ else _missing(name)

    pkg.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules[_PKG] = pkg
    parent = sys.modules.get("dissect")
    if parent is None:
        parent = importlib.import_module("dissect")
    setattr(parent, "hypervisor", pkg)


def _missing(name: str) -> object:
    raise AttributeError(f"module {_PKG!r} has no attribute {name!r}")


def hypervisor_module(sub: str) -> ModuleType:
    """``dissect.hypervisor.<sub>`` (e.g. ``disk.vmdk``), importing only what it needs."""
    with _lock:
        if _PKG not in sys.modules:
            _install_stub()
    return importlib.import_module(f"{_PKG}.{sub}")
