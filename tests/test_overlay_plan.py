"""The controller's overlay plan (pure): addresses, membership, peer lists, leaving hosts, endpoint
changes and the staged key rotation, plus invariants over random histories (Hypothesis)."""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from gridmesh.common.codec import decode, encode
from gridmesh.common.model import AllocationId, HostId, WorkspaceName
from gridmesh.controller.overlay import (
    MemberReport,
    OverlayConfig,
    OverlayHost,
    OverlayPlan,
    OverlayState,
    plan_overlay,
    reports_from_status,
)
from gridmesh.dataplane.model import OverlayInterfaceStatus, OverlayStatus, WgPeer
from gridmesh.dataplane.naming import interface_name


@dataclass(frozen=True)
class Alloc:
    id: AllocationId
    workspace: WorkspaceName
    host_id: HostId


def alloc(i: str, ws: str, host: str) -> Alloc:
    return Alloc(AllocationId(i), WorkspaceName(ws), HostId(host))


def key(name: str) -> str:
    return base64.b64encode(name.encode().ljust(32, b".")).decode()


HOSTS = [OverlayHost(HostId(f"h{i}"), f"198.18.0.{i}") for i in (1, 2, 3)]


def report(host: str, ws: str, port: int = 51820, next_key: str = "", staged: tuple[str, ...] = (),
           pub: str | None = None) -> MemberReport:
    return MemberReport(HostId(host), WorkspaceName(ws), pub or key(f"{host}-{ws}"), port, next_key, staged)


def peers_of(plan: OverlayPlan, host: str, ws: str) -> tuple[WgPeer, ...]:
    for i in plan.spec_for(host).interfaces:
        if i.workspace == ws:
            return i.peers
    raise AssertionError(f"{host} has no interface in {ws}")


def test_membership_addresses_and_specs_before_any_report() -> None:
    plan = plan_overlay(HOSTS, [alloc("a1", "a", "h1"), alloc("a2", "a", "h2"), alloc("a3", "a", "h2")], [])
    assert plan.state.workspace_cidrs == (("a", "100.64.0.0/20"),)
    ws = plan.workspace("a")
    assert ws is not None
    assert [(m.host_id, m.address, m.workloads) for m in ws.members] == [
        ("h1", "100.64.0.1", (("a1", "100.64.0.3"),)),
        ("h2", "100.64.0.2", (("a2", "100.64.0.4"), ("a3", "100.64.0.5"))),
    ]
    (iface,) = plan.spec_for("h2").interfaces
    assert iface.name == interface_name("h2", "a") and len(iface.name) <= 15
    assert iface.addresses == ("100.64.0.2/20", "100.64.0.4/32", "100.64.0.5/32")
    assert iface.private_key_ref == "" and iface.peers == ()  # nobody reported a key yet
    assert plan.spec_for("h3").interfaces == ()


def test_peers_appear_once_reported_with_endpoint_and_owned_addresses() -> None:
    allocs = [alloc("a1", "a", "h1"), alloc("a2", "a", "h2"), alloc("b1", "b", "h2")]
    plan = plan_overlay(HOSTS, allocs, [report("h1", "a", 40001), report("h2", "a", 40002), report("h2", "b", 40003)])
    assert peers_of(plan, "h1", "a") == (
        WgPeer(key("h2-a"), "198.18.0.2:40002", ("100.64.0.2/32", "100.64.0.4/32"), 25),)
    assert peers_of(plan, "h2", "a") == (
        WgPeer(key("h1-a"), "198.18.0.1:40001", ("100.64.0.1/32", "100.64.0.3/32"), 25),)
    assert peers_of(plan, "h2", "b") == ()
    assert plan.state.workspace_cidrs == (("a", "100.64.0.0/20"), ("b", "100.64.16.0/20"))
    # Nothing of workspace a is in any b interface and the other way round.
    b_iface = next(i for i in plan.spec_for("h2").interfaces if i.workspace == "b")
    assert all(ipaddress.ip_interface(a) in ipaddress.ip_network("100.64.16.0/20") or
               ipaddress.ip_interface(a).ip in ipaddress.ip_network("100.64.16.0/20") for a in b_iface.addresses)


def test_a_host_leaving_disappears_from_every_peer_list_and_loses_its_interface() -> None:
    allocs = [alloc(f"a{h}", "a", f"h{h}") for h in (1, 2, 3)]
    reports = [report(f"h{h}", "a", 40000 + h) for h in (1, 2, 3)]
    first = plan_overlay(HOSTS, allocs, reports)
    assert len(peers_of(first, "h1", "a")) == 2
    second = plan_overlay(HOSTS, allocs[:2], reports, first.state)
    assert [p.public_key for p in peers_of(second, "h1", "a")] == [key("h2-a")]
    assert [p.public_key for p in peers_of(second, "h2", "a")] == [key("h1-a")]
    assert second.spec_for("h3").interfaces == ()
    # Its addresses are free again, the others keep theirs.
    assert second.address_of("a", "h1") == first.address_of("a", "h1")
    assert all(lease.owner not in ("host:h3", "alloc:a3") for lease in second.state.leases)


def test_endpoint_changes_are_followed() -> None:
    allocs = [alloc("a1", "a", "h1"), alloc("a2", "a", "h2")]
    plan = plan_overlay(HOSTS, allocs, [report("h1", "a", 40001), report("h2", "a", 40002)])
    moved = [OverlayHost(HostId("h1"), "198.18.0.1"), OverlayHost(HostId("h2"), "2001:db8::2")]
    again = plan_overlay(moved, allocs, [report("h1", "a", 40001), report("h2", "a", 40009)], plan.state)
    assert peers_of(again, "h1", "a")[0].endpoint == "[2001:db8::2]:40009"


def test_addresses_are_kept_and_never_given_twice() -> None:
    allocs = [alloc("a1", "a", "h1"), alloc("a2", "a", "h2")]
    first = plan_overlay(HOSTS, allocs, [])
    # a1 ends and a4 starts on h3: the others keep their addresses; a4 gets the lowest free one.
    second = plan_overlay(HOSTS, [allocs[1], alloc("a4", "a", "h3")], [], first.state)
    by_owner = {lease.owner: lease.address for lease in second.state.leases}
    assert by_owner["host:h2"] == "100.64.0.2" and by_owner["alloc:a2"] == "100.64.0.4"
    assert len(set(by_owner.values())) == len(by_owner)


def test_operator_cidr_wins_and_a_full_cidr_is_reported() -> None:
    allocs = [alloc(f"x{i}", "a", "h1") for i in range(6)]  # 1 host + 6 > 6 usable
    plan = plan_overlay(HOSTS, allocs, [], workspace_cidrs={WorkspaceName("a"): "10.99.0.0/29"})
    assert plan.state.workspace_cidrs == (("a", "10.99.0.0/29"),)
    assert plan.problems == ("workspace a: overlay CIDR 10.99.0.0/29 is full; alloc:x5 has no address",)


def test_workspace_cidrs_stay_stable_and_pool_exhaustion_is_a_problem() -> None:
    cfg = OverlayConfig(pool="100.64.0.0/19", workspace_prefixlen=20)
    allocs = [alloc("b1", "b", "h1")]
    first = plan_overlay(HOSTS, allocs, [], config=cfg)
    later = plan_overlay(HOSTS, [*allocs, alloc("a1", "a", "h1"), alloc("c1", "c", "h1")], [], first.state, config=cfg)
    cidrs: dict[str, str] = dict(later.state.workspace_cidrs)
    assert cidrs["b"] == "100.64.0.0/20" and cidrs["a"] == "100.64.16.0/20"
    assert later.problems == ("workspace c: no free /20 left in overlay pool 100.64.0.0/19",)


def test_key_rotation_stages_then_switches_in_one_step_and_never_goes_back() -> None:
    allocs = [alloc(f"a{h}", "a", f"h{h}") for h in (1, 2, 3)]
    old, new = key("h1-a"), key("h1-a-next")
    base = [report("h2", "a", 40002), report("h3", "a", 40003)]
    p0 = plan_overlay(HOSTS, allocs, [report("h1", "a", 40001), *base])
    # 1. h1 publishes its next key: the others get it staged (no allowed IPs, no keepalive).
    p1 = plan_overlay(HOSTS, allocs, [report("h1", "a", 40001, next_key=new), *base], p0.state)
    assert [(p.public_key, p.allowed_ips, p.persistent_keepalive) for p in peers_of(p1, "h2", "a")
            if p.public_key in (old, new)] == sorted([(old, ("100.64.0.1/32", "100.64.0.4/32"), 25), (new, (), 0)])
    assert p1.spec_for("h1").interfaces[0].private_key_ref == old
    # 2. Only h2 has it so far: no switch yet.
    part = [report("h2", "a", 40002, staged=(new,)), report("h3", "a", 40003)]
    p2 = plan_overlay(HOSTS, allocs, [report("h1", "a", 40001, next_key=new), *part], p1.state)
    assert p2.spec_for("h1").interfaces[0].private_key_ref == old
    # 3. Every other member has it: h1 is told to switch and the others move the addresses, together.
    done = [report("h2", "a", 40002, staged=(new,)), report("h3", "a", 40003, staged=(new,))]
    p3 = plan_overlay(HOSTS, allocs, [report("h1", "a", 40001, next_key=new), *done], p2.state)
    assert p3.spec_for("h1").interfaces[0].private_key_ref == new
    for other in ("h2", "h3"):
        keys = {p.public_key: p.allowed_ips for p in peers_of(p3, other, "a")}
        assert old not in keys and keys[new] == ("100.64.0.1/32", "100.64.0.4/32")
    # 4. The others no longer report it staged (it has addresses now) and h1 has not switched yet:
    #    the plan remembers the switch.
    p4 = plan_overlay(HOSTS, allocs, [report("h1", "a", 40001, next_key=new), *base], p3.state)
    assert p4.spec_for("h1").interfaces[0].private_key_ref == new
    # 5. h1 reports the new key in use: steady again.
    p5 = plan_overlay(HOSTS, allocs, [report("h1", "a", 40001, pub=new), *base], p4.state)
    assert p5.specs == p4.specs


def test_rotation_waits_for_online_members_only_and_an_offline_rotator_never_switches() -> None:
    allocs = [alloc(f"a{h}", "a", f"h{h}") for h in (1, 2, 3)]
    new = key("h1-a-next")
    hosts = [HOSTS[0], HOSTS[1], OverlayHost(HostId("h3"), "198.18.0.3", online=False)]
    reports = [report("h1", "a", 40001, next_key=new), report("h2", "a", 40002, staged=(new,)),
               report("h3", "a", 40003)]
    assert plan_overlay(hosts, allocs, reports).spec_for("h1").interfaces[0].private_key_ref == new
    offline_h1 = [OverlayHost(HostId("h1"), "198.18.0.1", online=False), *HOSTS[1:]]
    reports[2] = report("h3", "a", 40003, staged=(new,))
    assert plan_overlay(offline_h1, allocs, reports).spec_for("h1").interfaces[0].private_key_ref == key("h1-a")


def test_a_host_that_lost_its_keys_is_followed() -> None:
    allocs = [alloc("a1", "a", "h1"), alloc("a2", "a", "h2")]
    p0 = plan_overlay(HOSTS, allocs, [report("h1", "a"), report("h2", "a")])
    fresh = key("h1-fresh")
    p1 = plan_overlay(HOSTS, allocs, [report("h1", "a", pub=fresh), report("h2", "a")], p0.state)
    assert p1.spec_for("h1").interfaces[0].private_key_ref == fresh
    assert peers_of(p1, "h2", "a")[0].public_key == fresh


def test_reports_of_non_members_are_ignored_and_status_maps_to_reports() -> None:
    status = OverlayStatus(HostId("h3"), (
        OverlayInterfaceStatus(WorkspaceName("a"), "gmx", public_key=key("h3-a"), listen_port=5),
        OverlayInterfaceStatus(WorkspaceName("b"), "gmy"),  # no key yet: not a report
    ))
    reports = reports_from_status(status)
    assert reports == (MemberReport(HostId("h3"), WorkspaceName("a"), key("h3-a"), 5),)
    plan = plan_overlay(HOSTS, [alloc("a1", "a", "h1")], reports)
    assert peers_of(plan, "h1", "a") == ()


def test_state_round_trips_through_the_json_codec() -> None:
    plan = plan_overlay(HOSTS, [alloc("a1", "a", "h1"), alloc("a2", "a", "h2")], [report("h1", "a")])
    assert decode(OverlayState, encode(plan.state)) == plan.state
    assert plan_overlay(HOSTS, [alloc("a1", "a", "h1"), alloc("a2", "a", "h2")], [report("h1", "a")],
                        decode(OverlayState, encode(plan.state))) == plan


# -- invariants over random histories ------------------------------------------------------------------

step = st.lists(st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["h1", "h2", "h3"]),
                          st.integers(0, 3)), max_size=10)


@settings(max_examples=150, deadline=None)
@given(st.lists(step, min_size=1, max_size=6))
def test_invariants_over_histories(history: list[list[tuple[str, str, int]]]) -> None:
    state = OverlayState()
    in_use: dict[tuple[WorkspaceName, str], str] = {}
    for allocs_now in history:
        allocs = [alloc(f"{ws}-{h}-{n}", ws, h) for ws, h, n in {(w, h, n) for w, h, n in allocs_now}]
        reports = [report(h, ws, 40000 + i) for i, (ws, h) in enumerate(sorted({(a.workspace, a.host_id)
                                                                               for a in allocs}))]
        plan = plan_overlay(HOSTS, allocs, reports, state)
        owners = {(lease.workspace, lease.owner): lease.address for lease in plan.state.leases}
        # No address is held by two owners of a workspace; an owner present before keeps its address.
        for ws in ("a", "b"):
            addrs = [a for (w, _), a in owners.items() if w == ws]
            assert len(addrs) == len(set(addrs))
        for k, a in owners.items():
            if k in in_use:
                assert in_use[k] == a
        in_use = owners
        members = {(a.workspace, a.host_id) for a in allocs}
        for spec in plan.specs:
            for iface in spec.interfaces:
                assert (iface.workspace, spec.host_id) in members
                cidr = ipaddress.ip_network(dict(plan.state.workspace_cidrs)[iface.workspace])
                peer_hosts = {p.endpoint for p in iface.peers}
                # Peers are exactly the other members; allowed IPs stay inside the workspace CIDR and
                # no two peers share one.
                others = {f"198.18.0.{h[1]}" for (w, h) in members if w == iface.workspace and h != spec.host_id}
                assert {e.split(":")[0] for e in peer_hosts} == others
                seen: set[str] = set()
                for p in iface.peers:
                    for ip in p.allowed_ips:
                        assert ipaddress.ip_network(ip).subnet_of(cidr)  # type: ignore[arg-type]
                        assert ip not in seen
                        seen.add(ip)
        state = plan.state
