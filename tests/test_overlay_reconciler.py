"""The host's overlay reconciler over the in-memory fake host: the pure diff as golden text,
unchanged peers untouched, every transition between random specs clean, failures isolated per
interface, key rotation on the host side, and no private key in state, actions or logs."""

from __future__ import annotations

import base64
import logging
import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridmesh.agent.overlay import (
    DesiredInterface,
    ObservedInterface,
    OverlayReconciler,
    diff,
)
from gridmesh.common.model import HostId, WorkspaceName
from gridmesh.dataplane.fake import FakeDataplane
from gridmesh.dataplane.keys import find_key_material, find_key_material_in_bytes
from gridmesh.dataplane.model import LinkState, OverlaySpec, WgDeviceState, WgInterfaceSpec, WgPeer, WgPeerState

HOST = HostId("h1")


def key(name: str) -> str:
    return base64.b64encode(name.encode().ljust(32, b".")).decode()


def peer(n: int, endpoint_port: int = 51820, allowed: tuple[str, ...] | None = None, keepalive: int = 25) -> WgPeer:
    return WgPeer(key(f"peer{n}"), f"198.18.0.{n}:{endpoint_port}",
                  allowed if allowed is not None else (f"100.64.0.{n}/32",), keepalive)


def iface(ws: str, peers: tuple[WgPeer, ...] = (), addresses: tuple[str, ...] = ("100.64.0.100/20",),
          ref: str = "", port: int = 0) -> WgInterfaceSpec:
    return WgInterfaceSpec(name=f"gm-{ws}", workspace=WorkspaceName(ws), private_key_ref=ref, listen_port=port,
                           addresses=addresses, peers=peers)


def spec(*interfaces: WgInterfaceSpec) -> OverlaySpec:
    return OverlaySpec(HOST, tuple(interfaces))


@pytest.fixture
def fake() -> FakeDataplane:
    return FakeDataplane()


def reconciler(tmp_path: Path, fake: FakeDataplane) -> OverlayReconciler:
    return OverlayReconciler(HOST, tmp_path / "state", fake, fake, netns_prefix="ws-")


# -- the pure diff ---------------------------------------------------------------------------------


def test_diff_golden() -> None:
    desired = [DesiredInterface(
        name="gm-a", workspace=WorkspaceName("a"), netns="ws-a", public_key=key("me"), listen_port=51820,
        addresses=("100.64.0.1/20", "100.64.0.9/32"),
        peers=(peer(2), peer(3, allowed=("100.64.0.3/32", "100.64.0.7/32")), peer(4)))]
    observed = [
        ObservedInterface("gm-a", "ws-a", WgDeviceState("gm-a", key("me"), 40000, peers=(
            WgPeerState(key("peer2"), "198.18.0.2:51820", ("100.64.0.2/32",), 25),  # unchanged
            WgPeerState(key("peer3"), "198.18.0.3:51820", ("100.64.0.3/32",), 25),  # gains an address
            WgPeerState(key("peer9"), "198.18.0.9:51820", ("100.64.0.9/32",), 25),  # left
        )), LinkState("gm-a", "ws-a", ("100.64.0.1/20", "100.64.0.8/32"), up=True)),
        ObservedInterface("gm-old", "ws-old", WgDeviceState("gm-old"), LinkState("gm-old", "ws-old")),
    ]
    assert [str(a) for a in diff(desired, observed)] == [
        "delete wireguard gm-old from netns ws-old and the netns",
        "listen on udp/51820 on gm-a",
        f"remove peer {key('peer9')} from gm-a",
        f"update peer {key('peer3')} endpoint 198.18.0.3:51820 allowed 100.64.0.3/32,100.64.0.7/32 "
        "keepalive 25 on gm-a",
        f"add peer {key('peer4')} endpoint 198.18.0.4:51820 allowed 100.64.0.4/32 keepalive 25 on gm-a",
        "remove address 100.64.0.8/32 from gm-a",
        "add address 100.64.0.9/32 to gm-a",
    ]


def test_diff_of_a_missing_or_misplaced_device_recreates_it() -> None:
    d = DesiredInterface("gm-a", WorkspaceName("a"), "ws-a", key("me"), None, ("100.64.0.1/20",), (peer(2),))
    fresh = [str(a) for a in diff([d], [])]
    assert fresh == ["create wireguard gm-a in netns ws-a", f"use key {key('me')} on gm-a",
                     f"add peer {key('peer2')} endpoint 198.18.0.2:51820 allowed 100.64.0.2/32 keepalive 25 on gm-a",
                     "add address 100.64.0.1/20 to gm-a", "bring gm-a up"]
    half = [ObservedInterface("gm-a", "ws-a", WgDeviceState("gm-a", key("me")), None)]  # device, no link
    assert [str(a) for a in diff([d], half)][:2] == ["delete wireguard gm-a from netns ws-a",
                                                     "create wireguard gm-a in netns ws-a"]


# -- reconcile over the fake host ------------------------------------------------------------------


def test_reconcile_creates_then_does_nothing(tmp_path: Path, fake: FakeDataplane) -> None:
    r = reconciler(tmp_path, fake)
    want = spec(iface("a", (peer(2), peer(3))), iface("b", (peer(4),), ("100.64.16.1/20",)))
    status = r.reconcile(want)
    assert [i.workspace for i in status.interfaces] == ["a", "b"]
    assert all(i.public_key and i.listen_port and not i.error for i in status.interfaces)
    a = status.interface("a")
    assert a is not None and a.peer_count == 2
    assert fake.render().splitlines()[:2] == ["netns ws-a", "netns ws-b"]
    calls = len(fake.calls)
    again = r.reconcile(want)
    assert fake.calls[calls:] == []  # an empty diff touches nothing
    assert again == status


def test_unchanged_peers_are_never_touched(tmp_path: Path, fake: FakeDataplane) -> None:
    r = reconciler(tmp_path, fake)
    peers = tuple(peer(n) for n in range(2, 202))
    r.reconcile(spec(iface("a", peers)))
    fake.calls.clear()
    changed = (*peers[:-1], peer(201, endpoint_port=6000))
    r.reconcile(spec(iface("a", changed)))
    assert fake.calls == ["configure gm-a peers=1"]  # one peer, one transaction


def test_a_failing_interface_does_not_stop_the_others_and_is_retried(tmp_path: Path, fake: FakeDataplane) -> None:
    r = reconciler(tmp_path, fake)
    fake.fail_next = "create"
    status = r.reconcile(spec(iface("a", (peer(2),)), iface("b", (peer(3),), ("100.64.16.1/20",))))
    a, b = status.interface("a"), status.interface("b")
    assert a is not None and "injected failure of create" in a.error
    assert b is not None and not b.error and b.peer_count == 1
    status = r.reconcile(spec(iface("a", (peer(2),)), iface("b", (peer(3),), ("100.64.16.1/20",))))
    assert all(not i.error and i.peer_count == 1 for i in status.interfaces)


def test_removed_interfaces_go_with_their_namespace_and_keys(tmp_path: Path, fake: FakeDataplane) -> None:
    r = reconciler(tmp_path, fake)
    r.reconcile(spec(iface("a", (peer(2),)), iface("b")))
    assert (r.keys_root / "gm-b").exists()
    r.reconcile(spec(iface("a", (peer(2),))))
    assert fake.namespaces == {"ws-a"} and set(fake.devices) == {"gm-a"}
    assert not (r.keys_root / "gm-b").exists()
    assert [rec.name for rec in r.records.values()] == ["gm-a"]


def test_a_vanished_device_comes_back_with_its_key_and_port(tmp_path: Path, fake: FakeDataplane) -> None:
    r = reconciler(tmp_path, fake)
    want = spec(iface("a", (peer(2),)))
    before = r.reconcile(want).interfaces[0]
    del fake.devices["gm-a"]
    after = r.reconcile(want).interfaces[0]
    assert (after.public_key, after.listen_port, after.peer_count) == (before.public_key, before.listen_port, 1)


def test_state_survives_a_restart(tmp_path: Path, fake: FakeDataplane) -> None:
    want = spec(iface("a", (peer(2),)))
    first = reconciler(tmp_path, fake).reconcile(want)
    fake.calls.clear()
    second = reconciler(tmp_path, fake).reconcile(want)
    assert second == first and fake.calls == []


def test_rotation_on_the_host(tmp_path: Path, fake: FakeDataplane) -> None:
    r = reconciler(tmp_path, fake)
    old = r.reconcile(spec(iface("a", (peer(2),)))).interfaces[0].public_key
    new = r.begin_rotation("a")
    assert r.begin_rotation("a") == new  # asking twice makes one key
    status = r.reconcile(spec(iface("a", (peer(2),), ref=old)))
    assert (status.interfaces[0].public_key, status.interfaces[0].next_public_key) == (old, new)
    status = r.reconcile(spec(iface("a", (peer(2),), ref=new)))
    assert (status.interfaces[0].public_key, status.interfaces[0].next_public_key) == (new, "")
    assert r.keys_for("gm-a").public_keys() == (new,)  # the old private key is destroyed
    with pytest.raises(Exception, match="no overlay interface of workspace zz"):
        r.begin_rotation("zz")


def test_a_ref_to_an_unknown_key_keeps_the_current_one(tmp_path: Path, fake: FakeDataplane) -> None:
    r = reconciler(tmp_path, fake)
    cur = r.reconcile(spec(iface("a"))).interfaces[0].public_key
    assert r.reconcile(spec(iface("a", ref=key("someone else")))).interfaces[0].public_key == cur


def test_no_private_key_in_state_actions_or_logs(tmp_path: Path, fake: FakeDataplane,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    r = reconciler(tmp_path, fake)
    r.reconcile(spec(iface("a", (peer(2),))))
    r.begin_rotation("a")
    status = r.reconcile(spec(iface("a", (peer(2),))))
    r.reconcile(spec(iface("a", (peer(2),), ref=status.interfaces[0].next_public_key)))
    keys = r.private_keys()
    assert keys
    assert find_key_material(tmp_path, keys, exclude=[r.keys_root]) == []
    text = "\n".join(f"{rec.getMessage()} {rec.__dict__}" for rec in caplog.records).encode()
    assert find_key_material_in_bytes(text + repr(status).encode(), keys) == []
    for store in sorted(r.keys_root.iterdir()):
        assert store.stat().st_mode & 0o777 == 0o700
        assert all(f.stat().st_mode & 0o777 == 0o600 for f in store.iterdir())


# -- every transition between random specs is clean ------------------------------------------------

def peer_variant(n: int, port: int, variant: int, keepalive: int) -> WgPeer:
    # Allowed IPs derive from the peer's number, so no two peers of a spec claim the same one
    # (the plan never does; WireGuard would give it to the last peer that names it).
    allowed = [(f"100.64.0.{n}/32",), (), (f"100.64.0.{n}/32", f"100.64.1.{n}/32")][variant]
    return peer(n, port, allowed, keepalive)


peer_strategy = st.builds(peer_variant, st.integers(2, 9), st.sampled_from([51820, 51821]), st.integers(0, 2),
                          st.sampled_from([0, 25]))
iface_strategy = st.builds(iface, st.sampled_from(["a", "b", "c"]),
                           st.lists(peer_strategy, max_size=4).map(lambda ps: tuple({p.public_key: p for p in ps}
                                                                                    .values())),
                           st.sampled_from([("100.64.0.1/20",), ("100.64.0.1/20", "100.64.0.7/32"), ()]))
spec_strategy = st.lists(iface_strategy, max_size=3).map(
    lambda ifs: spec(*{i.workspace: i for i in ifs}.values()))


def expected(spec_: OverlaySpec) -> set[tuple[str, str, tuple[str, ...], tuple[str, ...]]]:
    return {(i.name, f"ws-{i.workspace}", tuple(sorted(i.addresses)),
             tuple(sorted(f"{p.public_key} {p.endpoint} {','.join(p.allowed_ips)} {p.persistent_keepalive}"
                          for p in i.peers)))
            for i in spec_.interfaces}


def actual(fake: FakeDataplane) -> set[tuple[str, str, tuple[str, ...], tuple[str, ...]]]:
    return {(name, dev.netns, tuple(sorted(dev.addresses)),
             tuple(sorted(f"{k} {p.endpoint} {','.join(p.allowed)} {p.keepalive}" for k, p in dev.peers.items())))
            for name, dev in fake.devices.items()}


@settings(max_examples=25, deadline=None)
@given(st.lists(spec_strategy, min_size=1, max_size=5), st.randoms(use_true_random=False))
def test_every_transition_is_clean(specs: list[OverlaySpec], rnd: random.Random) -> None:
    """Tailscale's router test idea: go through the specs, then through them again in random order;
    after each reconcile the host is exactly the spec, and reconciling again does nothing."""
    with tempfile.TemporaryDirectory() as d:
        fake = FakeDataplane()
        r = OverlayReconciler(HOST, Path(d), fake, fake, netns_prefix="ws-")
        for s in [*specs, *rnd.sample(specs, len(specs))]:
            status = r.reconcile(s)
            assert actual(fake) == expected(s)
            assert fake.namespaces == {f"ws-{i.workspace}" for i in s.interfaces}
            assert all(dev.up and dev.private_key for dev in fake.devices.values())
            assert [i.workspace for i in status.interfaces] == sorted(i.workspace for i in s.interfaces)
            fake.calls.clear()
            r.reconcile(s)
            assert fake.calls == []
