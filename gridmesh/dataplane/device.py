"""One interface to WireGuard devices, whichever implementation runs them.

Two backends implement ``WireGuardBackend``: ``kernel`` (the in-kernel module, driven through its
generic-netlink API with pyroute2) and ``wireguard-go`` (the userspace daemon, driven through its
UAPI socket); ``fake`` implements it in memory for tests. ``backend.open_backend`` picks one at
start-up.

Rules:
- A device is created in the host's (underlay) namespace, then moved into the workspace's
  namespace. Its UDP socket stays where it was created, so the workspace namespace holds only the
  tunnel and never touches the underlay.
- ``configure`` takes one ``DeviceChange`` and applies it in one transaction where the backend has
  them (one UAPI ``set``; netlink messages of many peers each). Peers not named in the change are
  not touched.
- ``DeviceChange`` is the only type that carries a private key, and its ``repr`` hides it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from gridmesh.dataplane.model import WgDeviceState


class DataplaneError(Exception):
    """The host refused or failed an operation; the message names the device and what was asked."""


class DeviceNotFound(DataplaneError):
    pass


@dataclass(frozen=True, slots=True)
class PeerChange:
    """One peer in a ``DeviceChange``.

    ``remove``: delete the peer. ``update_only``: change it only if it exists. Fields left ``None``
    stay as they are; ``allowed_ips`` not ``None`` *replaces* the peer's allowed IPs.
    """

    public_key: str
    remove: bool = False
    update_only: bool = False
    endpoint: str | None = None
    persistent_keepalive: int | None = None
    allowed_ips: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class DeviceChange:
    """What to change on one device. ``private_key`` is raw bytes and never shown by ``repr``."""

    private_key: bytes | None = field(default=None, repr=False)
    listen_port: int | None = None
    peers: tuple[PeerChange, ...] = ()
    replace_peers: bool = False

    @property
    def empty(self) -> bool:
        return self.private_key is None and self.listen_port is None and not self.peers and not self.replace_peers


class WireGuardBackend(Protocol):
    """WireGuard devices on one host. ``netns`` is the namespace the device lives (or will live) in."""

    name: str

    def create(self, name: str, netns: str) -> None:
        """Creates device ``name`` in the underlay namespace and moves it into ``netns``."""

    def delete(self, name: str, netns: str) -> None:
        """Deletes device ``name`` wherever it is (its namespace or, half-made, the underlay)."""

    def get(self, name: str, netns: str) -> WgDeviceState | None:
        """The device's configuration and counters; ``None`` when there is no such device."""

    def configure(self, name: str, netns: str, change: DeviceChange) -> None:
        """Applies ``change``; DeviceNotFound when the device is gone, DataplaneError otherwise."""

    def close(self) -> None:
        """Releases what the backend holds (never the devices: they outlive the agent)."""
