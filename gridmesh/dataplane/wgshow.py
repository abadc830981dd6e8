"""What ``wg show`` says about a device, as canonical text, next to what was intended.

The tests compare the two: ``wg show`` is the operator's view and is independent of this package's
own observation code (it reads the kernel over netlink or wireguard-go over its socket itself).
The human format is parsed, never ``wg show dump``, because ``dump`` prints the private key.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from gridmesh.dataplane.device import DataplaneError
from gridmesh.dataplane.model import WgInterfaceSpec
from gridmesh.dataplane.naming import normalize_endpoint, normalize_networks


@dataclass(frozen=True, slots=True)
class ShownPeer:
    public_key: str
    endpoint: str = ""
    allowed_ips: tuple[str, ...] = ()
    persistent_keepalive: int = 0
    handshake: bool = False
    transfer: str = ""


@dataclass(frozen=True, slots=True)
class ShownDevice:
    interface: str
    public_key: str = ""
    listen_port: int = 0
    peers: tuple[ShownPeer, ...] = ()

    def config_text(self) -> str:
        """The configuration part (no counters), peers sorted by key: comparable with ``intended_text``."""
        return _text(self.interface, self.public_key, self.listen_port,
                     [(p.public_key, p.endpoint, p.allowed_ips, p.persistent_keepalive) for p in self.peers])


def _text(name: str, public_key: str, port: int, peers: list[tuple[str, str, tuple[str, ...], int]]) -> str:
    lines = [f"interface {name} key {public_key} port {port}"]
    for key, endpoint, allowed, keepalive in sorted(peers):
        lines.append(f"  peer {key} endpoint {endpoint or '-'} allowed {','.join(allowed) or '-'} "
                     f"keepalive {keepalive or 'off'}")
    return "\n".join(lines) + "\n"


def intended_text(spec: WgInterfaceSpec, public_key: str, listen_port: int) -> str:
    """What ``config_text`` of a device configured from ``spec`` must be."""
    return _text(spec.name, public_key, listen_port,
                 [(p.public_key, normalize_endpoint(p.endpoint), normalize_networks(p.allowed_ips),
                   p.persistent_keepalive) for p in spec.peers])


def parse(text: str) -> ShownDevice:
    """Parses ``wg show IFACE`` (the human format) for one interface."""
    interface = public = ""
    port = 0
    peers: list[ShownPeer] = []
    cur: dict[str, str] | None = None

    def close() -> None:
        if cur is not None:
            allowed = cur.get("allowed ips", "(none)")
            keepalive = cur.get("persistent keepalive", "")
            peers.append(ShownPeer(
                public_key=cur["peer"],
                endpoint=normalize_endpoint(cur.get("endpoint", "")),
                allowed_ips=() if allowed == "(none)" else normalize_networks([a.strip() for a in allowed.split(",")]),
                persistent_keepalive=int(keepalive.split()[1]) if keepalive.startswith("every") else 0,
                handshake="latest handshake" in cur,
                transfer=cur.get("transfer", ""),
            ))

    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        key, _, value = line.partition(": ")
        if key == "interface":
            interface = value
        elif key == "peer":
            close()
            cur = {"peer": value}
        elif cur is not None:
            cur[key] = value
        elif key == "public key":
            public = value
        elif key == "listening port":
            port = int(value)
    close()
    return ShownDevice(interface=interface, public_key=public, listen_port=port, peers=tuple(peers))


def wg_show(interface: str, netns: str | None = None) -> ShownDevice:
    """Runs ``wg show INTERFACE`` (inside ``netns`` when given) and parses it."""
    argv = ["wg", "show", interface]
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "WG_HIDE_KEYS": "always"})
    if done.returncode != 0:
        raise DataplaneError(f"wg show {interface}: {done.stderr.strip()}")
    return parse(done.stdout)
