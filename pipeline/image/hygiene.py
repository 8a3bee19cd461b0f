"""What the AMI builders check before they ship an image, read offline.

From amazon-eks-ami ``templates/al2023/provisioners/validate.sh``
(``validate_file_nonexists``) and the Kubernetes image-builder's Goss checks: an
image must not carry the build instance's identity or state, or every node started
from it shares it (one SSH host key for the fleet, the builder's ``authorized_keys``,
cloud-init believing it already ran so user data is skipped, one machine-id, a fixed
hostname, stale DHCP leases).

Each check is a :class:`Finding` naming every path found; :func:`hygiene` returns one
per check, ``found`` empty when the image is clean.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.image.diskread.fs import RootFs

__all__ = ["Finding", "hygiene", "HYGIENE_CHECKS"]

#: check id -> what it means (the ids are also the verdicts under --strict).
HYGIENE_CHECKS = {
    "ssh-host-keys": "SSH host keys of the build instance (/etc/ssh/ssh_host_*)",
    "authorized-keys": "authorized_keys of root or a default user",
    "cloud-init-state": "cloud-init instance state (/var/lib/cloud/instance(s), data, sem)",
    "cloud-init-logs": "cloud-init logs of the build instance",
    "machine-id": "a non-empty /etc/machine-id (every node would share it)",
    "hostname": "an /etc/hostname (every node would start with the builder's name)",
    "dhcp-leases": "DHCP client leases of the build instance",
}


@dataclass
class Finding:
    """One hygiene check: ``found`` lists ``{path, kind, mode, size, links, value}``."""

    check: str
    looked_at: list[str] = field(default_factory=list)
    found: list[dict[str, object]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.found

    @property
    def paths(self) -> list[str]:
        return [str(f["path"]) for f in self.found]


def _entry(fs: RootFs, path: str, finding: Finding, *, value: bool = False) -> bool:
    """Record ``path`` in ``finding`` when it exists (links not followed at the end)."""
    res = fs.resolve(path, follow=False)
    if res.node is None:
        return False
    node = res.node
    item: dict[str, object] = {"path": path, "kind": node.kind, "mode": f"{node.perms:04o}",
                               "size": node.size}
    if res.links:
        item["links"] = res.links
    if node.kind == "lnk":
        item["target"] = fs.readlink(node)
    if value and node.kind == "reg":
        item["value"] = fs.read_file(node, limit=128).decode(errors="replace").strip()
    finding.found.append(item)
    return True


def _listing(fs: RootFs, path: str) -> list[str]:
    res = fs.resolve(path)
    return fs.listdir(res.node) if res.node is not None and res.node.kind == "dir" else []


def _glob(fs: RootFs, finding: Finding, directory: str, match: tuple[str, ...],
          suffix: tuple[str, ...] = ()) -> None:
    pattern = ", ".join(f"{directory}/{m}*{''.join(suffix[:1])}" for m in match)
    finding.looked_at.append(pattern)
    for name in _listing(fs, directory):
        if name.startswith(match) and (not suffix or name.endswith(suffix)):
            _entry(fs, f"{directory}/{name}", finding)


def hygiene(fs: RootFs) -> list[Finding]:
    """Every hygiene check of the image (see :data:`HYGIENE_CHECKS`)."""
    out = []

    keys = Finding("ssh-host-keys")
    _glob(fs, keys, "/etc/ssh", ("ssh_host_",))
    out.append(keys)

    auth = Finding("authorized-keys")
    homes = ["/root"] + [f"/home/{h}" for h in _listing(fs, "/home")]
    for home in homes:
        for name in ("authorized_keys", "authorized_keys2"):
            auth.looked_at.append(f"{home}/.ssh/{name}")
            _entry(fs, f"{home}/.ssh/{name}", auth)
    out.append(auth)

    state = Finding("cloud-init-state")
    for path in ("/var/lib/cloud/instance", "/var/lib/cloud/instances", "/var/lib/cloud/data",
                 "/var/lib/cloud/sem"):
        state.looked_at.append(path)
        _entry(fs, path, state)
    out.append(state)

    logs = Finding("cloud-init-logs")
    for path in ("/var/log/cloud-init.log", "/var/log/cloud-init-output.log"):
        logs.looked_at.append(path)
        _entry(fs, path, logs)
    out.append(logs)

    mid = Finding("machine-id", looked_at=["/etc/machine-id"])
    res = fs.resolve("/etc/machine-id")
    if res.node is not None and res.node.kind == "reg" and res.node.size > 0:
        text = fs.read_file(res.node, limit=128).decode(errors="replace").strip()
        if text and text != "uninitialized":  # systemd's first-boot marker is clean
            _entry(fs, "/etc/machine-id", mid, value=True)
    out.append(mid)

    host = Finding("hostname", looked_at=["/etc/hostname"])
    _entry(fs, "/etc/hostname", host, value=True)
    out.append(host)

    leases = Finding("dhcp-leases")
    _glob(fs, leases, "/var/lib/dhclient", ("",))
    _glob(fs, leases, "/var/lib/dhcp", ("dhclient",))
    _glob(fs, leases, "/var/lib/NetworkManager", ("",), (".lease", ".leases"))
    out.append(leases)
    return out
