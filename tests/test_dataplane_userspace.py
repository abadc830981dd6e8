"""The wireguard-go backend against real wireguard-go in throwaway namespaces: create and move,
get/set over UAPI (1,000 peers in one set, replace_allowed_ips, update_only, remove), what ``wg show``
says, and deletion ending the daemon and its socket."""

from __future__ import annotations

import base64
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gridmesh.dataplane import links as L
from gridmesh.dataplane.device import DataplaneError, DeviceChange, PeerChange
from gridmesh.dataplane.keys import generate_private_key, public_key
from gridmesh.dataplane.links import NetlinkLinks
from gridmesh.dataplane.uapi import DEFAULT_RUN_DIR
from gridmesh.dataplane.userspace import UserspaceBackend, daemon_pid
from gridmesh.dataplane.wgshow import wg_show
from gridmesh.testbed.netns import available

pytestmark = [pytest.mark.netns, pytest.mark.skipif(bool(available()), reason=available() or "available")]


@dataclass
class Bed:
    backend: UserspaceBackend
    underlay: str
    ws: str
    name: str


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Bed]:
    tag = secrets.token_hex(2)
    underlay, ws = f"gmt{tag}-u", f"gmt{tag}-w"
    L.create_netns(underlay)
    L.create_netns(ws)
    backend = UserspaceBackend(NetlinkLinks(underlay_netns=underlay), log_dir=tmp_path / "wg")
    name = f"gmt{tag}x"
    try:
        yield Bed(backend, underlay, ws, name)
    finally:
        try:
            backend.delete(name, ws)
        finally:
            L.delete_netns(ws)
            L.delete_netns(underlay)
            (DEFAULT_RUN_DIR / f"{name}.sock").unlink(missing_ok=True)


def peer_key(n: int) -> str:
    return base64.b64encode(n.to_bytes(4, "big") * 8).decode()


def test_create_moves_the_device_and_keeps_the_socket_in_the_underlay(bed: Bed) -> None:
    bed.backend.create(bed.name, bed.ws)
    link = bed.backend.links.get_link(bed.ws, bed.name)
    assert link is not None and link.netns == bed.ws
    assert bed.backend.links.get_link(bed.underlay, bed.name) is None
    state = bed.backend.get(bed.name, bed.ws)
    assert state is not None and state.public_key == "" and state.listen_port > 0
    # The UDP socket is in the underlay namespace, the workspace one has none.
    port = f":{state.listen_port:04X}"
    underlay_udp = L.in_netns(bed.underlay, lambda: Path("/proc/thread-self/net/udp").read_text())
    ws_udp = L.in_netns(bed.ws, lambda: Path("/proc/thread-self/net/udp").read_text())
    assert port in underlay_udp and port not in ws_udp
    with pytest.raises(DataplaneError, match="already answers"):
        bed.backend.create(bed.name, bed.ws)


def test_set_and_get_over_uapi(bed: Bed) -> None:
    bed.backend.create(bed.name, bed.ws)
    private = generate_private_key()
    peers = tuple(PeerChange(peer_key(n), endpoint=f"192.0.2.{n % 250 + 1}:51820", persistent_keepalive=0,
                             allowed_ips=(f"100.64.{n // 250}.{n % 250 + 1}/32",)) for n in range(1000))
    started = time.perf_counter()
    bed.backend.configure(bed.name, bed.ws, DeviceChange(private_key=private, listen_port=0, peers=peers))
    elapsed = time.perf_counter() - started
    state = bed.backend.get(bed.name, bed.ws)
    assert state is not None
    assert state.public_key == public_key(private) and len(state.peers) == 1000
    assert elapsed < 5.0  # the benchmark measures it properly; this guards against one set per peer

    # replace_allowed_ips moves an address; update_only never creates; remove deletes.
    bed.backend.configure(bed.name, bed.ws, DeviceChange(peers=(
        PeerChange(peer_key(1), allowed_ips=("100.64.0.1/32", "100.64.9.9/32")),  # takes peer 0's address
        PeerChange(peer_key(5000), update_only=True, endpoint="192.0.2.1:1"),
        PeerChange(peer_key(2), remove=True),
    )))
    state = bed.backend.get(bed.name, bed.ws)
    assert state is not None
    p0, p1 = state.peer(peer_key(0)), state.peer(peer_key(1))
    assert p0 is not None and p0.allowed_ips == ()
    assert p1 is not None and p1.allowed_ips == ("100.64.0.1/32", "100.64.9.9/32")
    assert state.peer(peer_key(5000)) is None and state.peer(peer_key(2)) is None
    assert len(state.peers) == 999

    shown = wg_show(bed.name, bed.ws)
    assert shown.public_key == public_key(private) and shown.listen_port == state.listen_port
    assert {p.public_key: p.allowed_ips for p in shown.peers} == {p.public_key: p.allowed_ips for p in state.peers}

    with pytest.raises(DataplaneError, match="refused set"):
        bed.backend.configure(bed.name, bed.ws, DeviceChange(listen_port=-1))


def test_delete_ends_the_daemon_and_a_stale_socket_is_cleared(bed: Bed) -> None:
    bed.backend.create(bed.name, bed.ws)
    pid = daemon_pid(bed.name)
    assert pid is not None and Path(f"/proc/{pid}/status").read_text().count("PPid:\t1\n") == 1
    bed.backend.delete(bed.name, bed.ws)
    assert bed.backend.get(bed.name, bed.ws) is None
    assert not (DEFAULT_RUN_DIR / f"{bed.name}.sock").exists()
    assert daemon_pid(bed.name) is None or "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    # A daemon killed hard leaves its socket behind (and its device); create clears both.
    bed.backend.create(bed.name, bed.ws)
    pid = daemon_pid(bed.name)
    assert pid is not None
    os.kill(pid, 9)
    deadline = time.monotonic() + 5
    while bed.backend.links.get_link(bed.ws, bed.name) is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert (DEFAULT_RUN_DIR / f"{bed.name}.sock").exists()
    assert bed.backend.get(bed.name, bed.ws) is None
    bed.backend.create(bed.name, bed.ws)
    assert bed.backend.get(bed.name, bed.ws) is not None
