"""An in-memory host for tests: WireGuard devices and namespaces with the real rules.

``FakeDataplane`` implements both ``WireGuardBackend`` and ``LinkOps``. It keeps the rules the
reconciler relies on, the ones a mock would let slip:
- a device is created in a namespace that exists; names are unique on the host;
- an allowed IP belongs to one peer at a time: giving it to a peer takes it from any other
  (WireGuard's routing table of allowed IPs), ``replace_allowed_ips`` replaces a peer's set;
- ``update_only`` never creates a peer; ``remove`` of an absent peer is a no-op;
- a device with listen port 0 gets a port of its own; deleting a namespace deletes its devices.
``render()`` prints the whole host as stable text, so tests compare states as strings.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from gridmesh.dataplane import keys
from gridmesh.dataplane.device import DataplaneError, DeviceChange, DeviceNotFound
from gridmesh.dataplane.model import LinkState, WgDeviceState, WgPeerState
from gridmesh.dataplane.naming import normalize_endpoint, normalize_interfaces, normalize_networks


@dataclass
class _Peer:
    endpoint: str = ""
    keepalive: int = 0
    allowed: list[str] = field(default_factory=list)


@dataclass
class _Device:
    netns: str
    listen_port: int
    private_key: bytes | None = None
    peers: dict[str, _Peer] = field(default_factory=dict)
    addresses: list[str] = field(default_factory=list)
    up: bool = False


class FakeDataplane:
    name = "fake"

    def __init__(self) -> None:
        self.namespaces: set[str] = set()
        self.devices: dict[str, _Device] = {}
        self.calls: list[str] = []  # what was done, for tests that count operations
        self._next_port = 40000
        self.fail_next: str = ""  # set to an operation name to make its next call fail (once)

    def _maybe_fail(self, op: str) -> None:
        if self.fail_next == op:
            self.fail_next = ""
            raise DataplaneError(f"injected failure of {op}")

    def _device(self, name: str, netns: str | None = None) -> _Device:
        dev = self.devices.get(name)
        if dev is None or (netns is not None and dev.netns != netns):
            raise DeviceNotFound(f"no WireGuard device {name} in {netns}")
        return dev

    # -- LinkOps ------------------------------------------------------------------------------------

    def ensure_netns(self, netns: str) -> None:
        self.calls.append(f"ensure_netns {netns}")
        self.namespaces.add(netns)

    def delete_netns(self, netns: str) -> None:
        self.calls.append(f"delete_netns {netns}")
        self.namespaces.discard(netns)
        for name in [n for n, d in self.devices.items() if d.netns == netns]:
            del self.devices[name]

    def netns_exists(self, netns: str) -> bool:
        return netns in self.namespaces

    def get_link(self, netns: str, name: str) -> LinkState | None:
        dev = self.devices.get(name)
        if dev is None or dev.netns != netns:
            return None
        return LinkState(name=name, netns=netns, addresses=tuple(sorted(dev.addresses)), up=dev.up)

    def add_address(self, netns: str, name: str, address: str) -> None:
        self.calls.append(f"add_address {name} {address}")
        self._maybe_fail("add_address")
        dev = self._device(name, netns)
        (text,) = normalize_interfaces([address])
        if text not in dev.addresses:
            dev.addresses.append(text)

    def remove_address(self, netns: str, name: str, address: str) -> None:
        self.calls.append(f"remove_address {name} {address}")
        dev = self._device(name, netns)
        (text,) = normalize_interfaces([address])
        if text in dev.addresses:
            dev.addresses.remove(text)

    def set_up(self, netns: str, name: str) -> None:
        self.calls.append(f"set_up {name}")
        self._device(name, netns).up = True

    # -- WireGuardBackend ---------------------------------------------------------------------------

    def create(self, name: str, netns: str) -> None:
        self.calls.append(f"create {name} {netns}")
        self._maybe_fail("create")
        if len(name) > 15:
            raise DataplaneError(f"device name {name!r} is longer than 15 characters")
        if name in self.devices:
            raise DataplaneError(f"device {name} exists")
        if netns not in self.namespaces:
            raise DataplaneError(f"network namespace {netns} does not exist")
        self._next_port += 1
        self.devices[name] = _Device(netns=netns, listen_port=self._next_port)

    def delete(self, name: str, netns: str) -> None:
        self.calls.append(f"delete {name}")
        self.devices.pop(name, None)

    def get(self, name: str, netns: str) -> WgDeviceState | None:
        dev = self.devices.get(name)
        if dev is None:
            return None
        return WgDeviceState(
            name=name,
            public_key=keys.public_key(dev.private_key) if dev.private_key else "",
            listen_port=dev.listen_port,
            peers=tuple(WgPeerState(public_key=k, endpoint=p.endpoint, allowed_ips=normalize_networks(p.allowed),
                                    persistent_keepalive=p.keepalive)
                        for k, p in sorted(dev.peers.items())))

    def configure(self, name: str, netns: str, change: DeviceChange) -> None:
        self.calls.append(f"configure {name} peers={len(change.peers)}")
        self._maybe_fail("configure")
        dev = self._device(name, netns)
        if change.private_key is not None:
            dev.private_key = change.private_key
        if change.listen_port is not None:
            if change.listen_port == 0:
                self._next_port += 1
            dev.listen_port = change.listen_port or self._next_port
        if change.replace_peers:
            dev.peers.clear()
        for pc in change.peers:
            keys.from_b64(pc.public_key)
            if pc.remove:
                dev.peers.pop(pc.public_key, None)
                continue
            peer = dev.peers.get(pc.public_key)
            if peer is None:
                if pc.update_only:
                    continue
                peer = dev.peers[pc.public_key] = _Peer()
            if pc.endpoint:
                peer.endpoint = normalize_endpoint(pc.endpoint)
            if pc.persistent_keepalive is not None:
                peer.keepalive = pc.persistent_keepalive
            if pc.allowed_ips is not None:
                nets = list(normalize_networks(pc.allowed_ips))
                for other_key, other in dev.peers.items():
                    if other_key != pc.public_key:
                        other.allowed = [a for a in other.allowed if a not in nets]
                peer.allowed = nets

    def close(self) -> None:
        pass

    # -- for tests ----------------------------------------------------------------------------------

    def render(self) -> str:
        """The whole host as text: namespaces, then each device with its key, port, addresses and peers."""
        lines = [f"netns {ns}" for ns in sorted(self.namespaces)]
        for name, dev in sorted(self.devices.items()):
            pub = keys.public_key(dev.private_key) if dev.private_key else "-"
            addrs = sorted(dev.addresses, key=lambda a: ipaddress.ip_interface(a))
            lines.append(f"dev {name} in {dev.netns} key {pub} port {dev.listen_port} "
                         f"{'up' if dev.up else 'down'} addr {','.join(addrs) or '-'}")
            for k, p in sorted(dev.peers.items()):
                lines.append(f"  peer {k} endpoint {p.endpoint or '-'} keepalive {p.keepalive} "
                             f"allowed {','.join(normalize_networks(p.allowed)) or '-'}")
        return "\n".join(lines) + "\n"
