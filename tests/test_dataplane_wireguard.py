"""The WireGuard backends' pure parts: UAPI requests and answers, the kernel's generic-netlink
messages (built and decoded without the module, which this kernel lacks), the backend choice, and
``wg show`` parsing."""

from __future__ import annotations

import base64
import socket
from typing import Any

import pytest
from pyroute2.netlink.generic.wireguard import (  # type: ignore[import-untyped]
    WG_CMD_GET_DEVICE,
    WGPEER_F_REMOVE_ME,
    WGPEER_F_REPLACE_ALLOWEDIPS,
    wgmsg,
)

from gridmesh.dataplane import backend, kernel
from gridmesh.dataplane.device import DataplaneError, DeviceChange, PeerChange
from gridmesh.dataplane.model import WgInterfaceSpec, WgPeer, WgPeerState
from gridmesh.dataplane.naming import interface_name, normalize_endpoint, parse_endpoint
from gridmesh.dataplane.uapi import encode_set, parse_errno, parse_get
from gridmesh.dataplane.wgshow import intended_text, parse


def key(n: int) -> str:
    return base64.b64encode(bytes([n]) * 32).decode()


def test_interface_names_are_short_stable_and_distinct() -> None:
    names = {interface_name(f"host-{h}", f"ws-{w}") for h in range(50) for w in range(20)}
    assert len(names) == 1000
    assert all(len(n) <= 15 and n.startswith("gm") for n in names)
    assert interface_name("edge-1", "ran") == interface_name("edge-1", "ran") != interface_name("edge-1", "llm")


def test_endpoints() -> None:
    assert parse_endpoint("[2001:db8::1]:51820") == ("2001:db8::1", 51820)
    assert normalize_endpoint("[2001:0db8::0001]:5") == "[2001:db8::1]:5"
    with pytest.raises(ValueError, match="not HOST:PORT"):
        parse_endpoint("198.18.0.1")


# -- UAPI ------------------------------------------------------------------------------------------


def test_encode_set_golden() -> None:
    change = DeviceChange(private_key=bytes([7]) * 32, listen_port=51820, peers=(
        PeerChange(key(1), remove=True),
        PeerChange(key(2), endpoint="198.18.0.2:51820", persistent_keepalive=25,
                   allowed_ips=("100.64.0.2/32", "100.64.0.9/32")),
        PeerChange(key(3), update_only=True, endpoint="[2001:db8::3]:7"),
    ))
    assert encode_set(change) == (
        "set=1\n"
        f"private_key={'07' * 32}\n"
        "listen_port=51820\n"
        f"public_key={'01' * 32}\nremove=true\n"
        f"public_key={'02' * 32}\nendpoint=198.18.0.2:51820\npersistent_keepalive_interval=25\n"
        "replace_allowed_ips=true\nallowed_ip=100.64.0.2/32\nallowed_ip=100.64.0.9/32\n"
        f"public_key={'03' * 32}\nupdate_only=true\nendpoint=[2001:db8::3]:7\n"
        "\n")
    assert "07" * 32 not in repr(change)  # the private key is not in the repr


def test_parse_get() -> None:
    text = (f"private_key={'07' * 32}\nlisten_port=40000\n"
            f"public_key={'02' * 32}\npreshared_key={'00' * 32}\nprotocol_version=1\nendpoint=198.18.0.2:51820\n"
            "last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=500000000\ntx_bytes=10\nrx_bytes=20\n"
            "persistent_keepalive_interval=25\nallowed_ip=100.64.0.9/32\nallowed_ip=100.64.0.2/32\n"
            f"public_key={'01' * 32}\nendpoint=[2001:db8::1]:7\npersistent_keepalive_interval=0\n"
            "errno=0\n\n")
    private, state = parse_get("gm1", text)
    assert private == bytes([7]) * 32
    assert state.listen_port == 40000 and state.public_key == ""
    assert state.peers == (
        WgPeerState(key(1), "[2001:db8::1]:7", (), 0),
        WgPeerState(key(2), "198.18.0.2:51820", ("100.64.0.2/32", "100.64.0.9/32"), 25, 1700000000.5, 20, 10),
    )
    assert parse_get("gm1", "listen_port=1\nerrno=0\n\n")[0] is None
    with pytest.raises(DataplaneError, match="refused get on gm1: errno -2"):
        parse_get("gm1", "errno=-2\n\n")
    assert parse_errno("errno=-22\n\n") == -22


# -- the kernel backend's messages -----------------------------------------------------------------


def roundtrip(msg: Any) -> Any:
    msg.encode()
    back = wgmsg(msg.data)
    back.decode()
    return back


def test_kernel_set_messages_carry_many_peers_per_message() -> None:
    peers = tuple(PeerChange(key(n % 250 + 1), endpoint=f"198.18.0.{n % 250 + 1}:51820", persistent_keepalive=25,
                             allowed_ips=(f"100.64.{n // 250}.{n % 250 + 1}/32",)) for n in range(150))
    change = DeviceChange(private_key=bytes([9]) * 32, listen_port=51820,
                          peers=(PeerChange(key(251), remove=True), *peers))
    msgs = kernel.build_set_messages("gm1", change)
    assert len(msgs) == 3  # 151 peers, 64 per message
    first = roundtrip(msgs[0])
    assert first.get_attr("WGDEVICE_A_IFNAME") == "gm1"
    assert first.get_attr("WGDEVICE_A_LISTEN_PORT") == 51820
    assert base64.b64decode(first.get_attr("WGDEVICE_A_PRIVATE_KEY")) == bytes([9]) * 32
    decoded = first.get_attr("WGDEVICE_A_PEERS")
    assert len(decoded) == 64
    assert decoded[0].get_attr("WGPEER_A_FLAGS") == WGPEER_F_REMOVE_ME
    p = decoded[1]
    assert p.get_attr("WGPEER_A_FLAGS") == WGPEER_F_REPLACE_ALLOWEDIPS
    assert p.get_attr("WGPEER_A_ENDPOINT")["addr"] == "198.18.0.1"
    assert p.get_attr("WGPEER_A_ENDPOINT")["port"] == 51820
    assert [ip["addr"] for ip in p.get_attr("WGPEER_A_ALLOWEDIPS")] == ["100.64.0.1/32"]
    later = roundtrip(msgs[2])
    assert later.get_attr("WGDEVICE_A_PRIVATE_KEY") is None  # device attributes only in the first
    assert len(later.get_attr("WGDEVICE_A_PEERS")) == 151 - 128


def test_kernel_dump_is_parsed_and_split_peers_are_merged() -> None:
    def reply(peers: list[dict[str, Any]]) -> Any:
        msg = wgmsg()
        msg["cmd"] = WG_CMD_GET_DEVICE
        msg["version"] = 1
        msg["attrs"] = [["WGDEVICE_A_IFNAME", "gm1"], ["WGDEVICE_A_PUBLIC_KEY", key(9)],
                        ["WGDEVICE_A_LISTEN_PORT", 40000], ["WGDEVICE_A_PEERS", peers]]
        return roundtrip(msg)

    def allowed(addr: str) -> dict[str, Any]:
        return {"attrs": [["WGALLOWEDIP_A_FAMILY", socket.AF_INET],
                          ["WGALLOWEDIP_A_IPADDR", socket.inet_pton(socket.AF_INET, addr)],
                          ["WGALLOWEDIP_A_CIDR_MASK", 32]]}

    first = reply([{"attrs": [["WGPEER_A_PUBLIC_KEY", key(2)],
                              ["WGPEER_A_ENDPOINT", {"addr": "198.18.0.2", "port": 51820}],
                              ["WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", 25],
                              ["WGPEER_A_RX_BYTES", 5], ["WGPEER_A_TX_BYTES", 6],
                              ["WGPEER_A_ALLOWEDIPS", [allowed("100.64.0.2")]]]}])
    # The kernel continues a peer with many allowed IPs in the next message.
    second = reply([{"attrs": [["WGPEER_A_PUBLIC_KEY", key(2)], ["WGPEER_A_ALLOWEDIPS", [allowed("100.64.0.7")]]]}])
    state = kernel.parse_device("gm1", [first, second])
    assert state.public_key == key(9) and state.listen_port == 40000
    assert state.peers == (WgPeerState(key(2), "198.18.0.2:51820", ("100.64.0.2/32", "100.64.0.7/32"), 25,
                                       0.0, 5, 6),)


# -- choosing a backend ----------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "module", "userspace", "chosen"), [
    ("auto", True, True, "kernel"),
    ("auto", False, True, "userspace"),
    ("userspace", True, True, "userspace"),
    ("kernel", True, False, "kernel"),
    ("auto", False, False, "no WireGuard backend"),
    ("kernel", False, True, "this kernel has no wireguard module"),
    ("bogus", True, True, "allowed auto, kernel, userspace"),
])
def test_backend_choice(kind: str, module: bool, userspace: bool, chosen: str) -> None:
    if chosen in ("kernel", "userspace"):
        assert backend.choose_backend(kind, lambda: module, lambda: userspace) == chosen
    else:
        with pytest.raises(DataplaneError, match=chosen):
            backend.choose_backend(kind, lambda: module, lambda: userspace)


def test_the_probe_chooses_userspace_on_this_kernel() -> None:
    if kernel.module_available():
        pytest.skip("this kernel has the wireguard module")
    assert backend.choose_backend("auto", kernel.module_available, lambda: True) == "userspace"


# -- wg show ---------------------------------------------------------------------------------------

WG_SHOW = f"""interface: gm1
  public key: {key(9)}
  private key: (hidden)
  listening port: 40000

peer: {key(2)}
  endpoint: 198.18.0.2:51820
  allowed ips: 100.64.0.2/32, 100.64.0.9/32
  latest handshake: 3 seconds ago
  transfer: 1.21 KiB received, 3.02 KiB sent
  persistent keepalive: every 25 seconds

peer: {key(3)}
  endpoint: 198.18.0.3:51820
  allowed ips: (none)
"""


def test_wg_show_parses_and_matches_the_intended_config() -> None:
    shown = parse(WG_SHOW)
    assert shown.peers[0].handshake and shown.peers[0].transfer.startswith("1.21 KiB")
    spec = WgInterfaceSpec(name="gm1", workspace="a", peers=(  # type: ignore[arg-type]
        WgPeer(key(3), "198.18.0.3:51820", (), 0),
        WgPeer(key(2), "198.18.0.2:51820", ("100.64.0.9/32", "100.64.0.2/32"), 25)))
    assert shown.config_text() == intended_text(spec, key(9), 40000)
