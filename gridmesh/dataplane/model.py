"""The overlay's vocabulary: what a host should have (specs), what it has (states), what it reports.

Rules:
- Frozen, slotted dataclasses; collections are sorted tuples, so equal configurations compare equal.
- Keys are WireGuard's base64 text (44 characters). Only *public* keys appear in these types: a
  private key never leaves the host's key store, so nothing here can carry one to the controller,
  into a log line or into a store. A spec names the key an interface must use by its public key
  (``private_key_ref``); the host looks the private half up locally.
- Addresses are ``ipaddress`` text: interface addresses with their prefix length
  (``100.64.0.1/20``), allowed IPs as networks (``100.64.0.1/32``), endpoints as ``HOST:PORT`` with
  IPv6 hosts in brackets (``[2001:db8::1]:51820``).

Vocabulary:
- An **overlay interface** is one WireGuard device per (host, workspace). It lives in the workspace's
  network namespace on that host; its UDP socket stays in the host's (underlay) namespace.
- A **peer** is another member host of the same workspace: its public key, its underlay endpoint and
  the overlay addresses it owns (its host address and its workloads' addresses).
- A **staged** peer is a public key published ahead of a key rotation: a peer entry with no allowed
  IPs, which carries no traffic until the controller moves the addresses onto it.
"""

from __future__ import annotations

from dataclasses import dataclass

from gridmesh.common.model import (  # the desired-state types travel in HostSpec, so they live there
    DEFAULT_KEEPALIVE_S as DEFAULT_KEEPALIVE_S,
)
from gridmesh.common.model import HostId, WorkspaceName
from gridmesh.common.model import OverlaySpec as OverlaySpec
from gridmesh.common.model import WgInterfaceSpec as WgInterfaceSpec
from gridmesh.common.model import WgPeer as WgPeer

# -- what a host observes --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WgPeerState:
    """A peer as the WireGuard device reports it, with its counters."""

    public_key: str
    endpoint: str = ""
    allowed_ips: tuple[str, ...] = ()
    persistent_keepalive: int = 0
    last_handshake: float = 0.0  # seconds since the epoch; 0 means never
    rx_bytes: int = 0
    tx_bytes: int = 0


@dataclass(frozen=True, slots=True)
class WgDeviceState:
    """A WireGuard device as its backend reports it. ``public_key`` is empty while it has no key."""

    name: str
    public_key: str = ""
    listen_port: int = 0
    peers: tuple[WgPeerState, ...] = ()

    def peer(self, public_key: str) -> WgPeerState | None:
        for p in self.peers:
            if p.public_key == public_key:
                return p
        return None


@dataclass(frozen=True, slots=True)
class LinkState:
    """The network interface side of a device: its namespace, IPv4 addresses and whether it is up."""

    name: str
    netns: str
    addresses: tuple[str, ...] = ()
    up: bool = False


# -- what a host reports ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OverlayInterfaceStatus:
    """One overlay interface as the host reports it to the controller: public facts only.

    ``public_key``: the key the interface uses now. ``next_public_key``: a key published for a
    rotation, not used yet. ``listen_port``: the UDP port on the host's underlay address.
    ``staged_peer_keys``: the staged peer keys (no allowed IPs) configured here, which is how the
    controller learns that this host is ready for another member's key switch.
    """

    workspace: WorkspaceName
    interface: str
    public_key: str = ""
    next_public_key: str = ""
    listen_port: int = 0
    staged_peer_keys: tuple[str, ...] = ()
    peer_count: int = 0
    peers_with_handshake: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0
    error: str = ""


@dataclass(frozen=True, slots=True)
class OverlayStatus:
    """The overlay part of a host's status report."""

    host_id: HostId
    interfaces: tuple[OverlayInterfaceStatus, ...] = ()
    backend: str = ""

    def interface(self, workspace: str) -> OverlayInterfaceStatus | None:
        for i in self.interfaces:
            if i.workspace == workspace:
                return i
        return None
