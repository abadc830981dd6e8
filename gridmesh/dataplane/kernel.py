"""The kernel backend: the in-kernel WireGuard module, driven through its generic-netlink family.

pyroute2's ``WireGuard`` socket resolves the ``wireguard`` family; its ``set`` sends one peer per
message, so the messages here are built directly with pyroute2's ``wgmsg``: many peers in one
``WGDEVICE_A_PEERS`` list (the kernel reads only one such attribute per message), split into
messages of at most ``PEERS_PER_MESSAGE`` peers, device attributes in the first.

Rules: ``build_set_messages`` and ``parse_device`` are pure (tested without the module, which this
project's CI kernel lacks). The generic-netlink socket is opened inside the device's namespace:
the family addresses devices by name *within the socket's namespace*.
"""

from __future__ import annotations

import socket
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST  # type: ignore[import-untyped]
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]
from pyroute2.netlink.generic import GenericNetlinkSocket  # type: ignore[import-untyped]
from pyroute2.netlink.generic.wireguard import (  # type: ignore[import-untyped]
    WG_CMD_GET_DEVICE,
    WG_CMD_SET_DEVICE,
    WG_GENL_NAME,
    WG_GENL_VERSION,
    WGDEVICE_F_REPLACE_PEERS,
    WGPEER_F_REMOVE_ME,
    WGPEER_F_REPLACE_ALLOWEDIPS,
    WGPEER_F_UPDATE_ONLY,
    WireGuard,
    wgmsg,
)

from gridmesh.dataplane import keys
from gridmesh.dataplane.device import DataplaneError, DeviceChange, PeerChange
from gridmesh.dataplane.links import NetlinkLinks, in_netns
from gridmesh.dataplane.model import WgDeviceState, WgPeerState
from gridmesh.dataplane.naming import format_endpoint, normalize_networks, parse_endpoint

PEERS_PER_MESSAGE = 64


def _peer_attrs(p: PeerChange) -> list[list[Any]]:
    attrs: list[list[Any]] = [["WGPEER_A_PUBLIC_KEY", p.public_key]]
    if p.remove:
        attrs.append(["WGPEER_A_FLAGS", WGPEER_F_REMOVE_ME])
        return attrs
    flags = 0
    if p.update_only:
        flags |= WGPEER_F_UPDATE_ONLY
    if p.allowed_ips is not None:
        flags |= WGPEER_F_REPLACE_ALLOWEDIPS
    attrs.append(["WGPEER_A_FLAGS", flags])
    if p.endpoint:
        host, port = parse_endpoint(p.endpoint)
        attrs.append(["WGPEER_A_ENDPOINT", {"addr": host, "port": port}])
    if p.persistent_keepalive is not None:
        attrs.append(["WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", p.persistent_keepalive])
    if p.allowed_ips is not None:
        ips = []
        for net in normalize_networks(p.allowed_ips):
            addr, _, mask = net.partition("/")
            family = socket.AF_INET6 if ":" in addr else socket.AF_INET
            ips.append({"attrs": [["WGALLOWEDIP_A_FAMILY", family],
                                  ["WGALLOWEDIP_A_IPADDR", socket.inet_pton(family, addr)],
                                  ["WGALLOWEDIP_A_CIDR_MASK", int(mask)]]})
        attrs.append(["WGPEER_A_ALLOWEDIPS", ips])
    return attrs


def build_set_messages(name: str, change: DeviceChange) -> list[Any]:
    """The ``WG_CMD_SET_DEVICE`` messages (not yet encoded) that apply ``change`` to device ``name``."""
    messages = []
    chunks = [change.peers[i:i + PEERS_PER_MESSAGE] for i in range(0, len(change.peers), PEERS_PER_MESSAGE)] or [()]
    for n, chunk in enumerate(chunks):
        msg = wgmsg()
        msg["cmd"] = WG_CMD_SET_DEVICE
        msg["version"] = WG_GENL_VERSION
        msg["attrs"].append(["WGDEVICE_A_IFNAME", name])
        if n == 0:
            if change.private_key is not None:
                msg["attrs"].append(["WGDEVICE_A_PRIVATE_KEY", keys.b64(change.private_key)])
            if change.listen_port is not None:
                msg["attrs"].append(["WGDEVICE_A_LISTEN_PORT", change.listen_port])
            if change.replace_peers:
                msg["attrs"].append(["WGDEVICE_A_FLAGS", WGDEVICE_F_REPLACE_PEERS])
        if chunk:
            msg["attrs"].append(["WGDEVICE_A_PEERS", [{"attrs": _peer_attrs(p)} for p in chunk]])
        messages.append(msg)
    return messages


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_device(name: str, messages: list[Any]) -> WgDeviceState:
    """The device state from the (decoded) ``WG_CMD_GET_DEVICE`` dump. A peer with many allowed IPs
    continues in the next message under the same public key, so peers are merged by key."""
    public = ""
    port = 0
    peers: dict[str, dict[str, Any]] = {}
    for msg in messages:
        pub = msg.get_attr("WGDEVICE_A_PUBLIC_KEY")
        if pub is not None:
            public = _text(pub)
        lp = msg.get_attr("WGDEVICE_A_LISTEN_PORT")
        if lp is not None:
            port = int(lp)
        for peer in msg.get_attr("WGDEVICE_A_PEERS") or []:
            key = _text(peer.get_attr("WGPEER_A_PUBLIC_KEY"))
            entry = peers.setdefault(key, {"allowed": []})
            endpoint = peer.get_attr("WGPEER_A_ENDPOINT")
            if endpoint is not None and endpoint.get("port"):
                entry["endpoint"] = format_endpoint(str(endpoint["addr"]), int(endpoint["port"]))
            for attr, field in (("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", "keepalive"),
                                ("WGPEER_A_RX_BYTES", "rx"), ("WGPEER_A_TX_BYTES", "tx")):
                value = peer.get_attr(attr)
                if value is not None:
                    entry[field] = int(value)
            hs = peer.get_attr("WGPEER_A_LAST_HANDSHAKE_TIME")
            if hs is not None:
                entry["handshake"] = hs["tv_sec"] + hs["tv_nsec"] / 1e9
            for ip in peer.get_attr("WGPEER_A_ALLOWEDIPS") or []:
                entry["allowed"].append(ip["addr"])
    return WgDeviceState(name=name, public_key=public, listen_port=port, peers=tuple(
        WgPeerState(public_key=k, endpoint=e.get("endpoint", ""), allowed_ips=normalize_networks(e["allowed"]),
                    persistent_keepalive=e.get("keepalive", 0), last_handshake=e.get("handshake", 0.0),
                    rx_bytes=e.get("rx", 0), tx_bytes=e.get("tx", 0))
        for k, e in sorted(peers.items())))


def module_available() -> bool:
    """Whether the kernel offers the ``wireguard`` generic-netlink family (the module is loaded or loadable)."""
    # Binding a plain generic-netlink socket (rather than constructing ``WireGuard``, whose failed
    # constructor leaves its socket and event loop open) and always closing it.
    try:
        sock = GenericNetlinkSocket()
    except OSError:
        return False
    try:
        sock.bind(WG_GENL_NAME, wgmsg)
        return True
    except (NetlinkError, OSError):
        return False
    finally:
        sock.close()


class KernelBackend:
    name = "kernel"

    def __init__(self, links: NetlinkLinks | None = None) -> None:
        self.links = links or NetlinkLinks()

    def create(self, name: str, netns: str) -> None:
        self.links.create_wireguard_link(name)
        try:
            self.links.move_link(name, netns)
        except DataplaneError:
            self.delete(name, netns)
            raise

    def delete(self, name: str, netns: str) -> None:
        if not self.links.delete_link(netns, name):
            self.links.delete_link(self.links.underlay_netns, name)

    def get(self, name: str, netns: str) -> WgDeviceState | None:
        if self.links.get_link(netns, name) is None:
            return None

        def dump() -> list[Any]:
            with WireGuard() as wg:
                msg = wgmsg()
                msg["cmd"] = WG_CMD_GET_DEVICE
                msg["version"] = WG_GENL_VERSION
                msg["attrs"].append(["WGDEVICE_A_IFNAME", name])
                return list(wg.nlm_request(msg, msg_type=wg.prid, msg_flags=NLM_F_REQUEST | NLM_F_DUMP))

        try:
            return parse_device(name, in_netns(netns, dump))
        except NetlinkError as e:
            raise DataplaneError(f"read kernel WireGuard device {name} in {netns}: {e}") from None

    def configure(self, name: str, netns: str, change: DeviceChange) -> None:
        if change.empty:
            return

        def send() -> None:
            with WireGuard() as wg:
                for msg in build_set_messages(name, change):
                    list(wg.nlm_request(msg, msg_type=wg.prid, msg_flags=NLM_F_REQUEST | NLM_F_ACK))

        try:
            in_netns(netns, send)
        except NetlinkError as e:
            raise DataplaneError(f"configure kernel WireGuard device {name} in {netns}: {e}; "
                                 f"{len(change.peers)} peer change(s)") from None

    def close(self) -> None:
        pass
