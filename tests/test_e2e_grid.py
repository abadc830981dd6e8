"""The whole path, for real: a controller process, three agent processes with simulated GPUs at
different tiers, GPRs submitted over gRPC, placed, sent to hosts, acknowledged and RUNNING.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import grpc
import pytest

from gridmesh.testbed.local import LocalGrid
from gridmesh.v1 import admin_pb2, provision_pb2
from gridmesh.v1 import types_pb2 as pb
from tests.conftest import Clients, create_site, wait_for

pytestmark = pytest.mark.slow

HOSTS = {
    # host id: (site, GPUs)
    "edge-a": ("paris-edge", [{"model": "L4", "count": 2}]),
    "near-b": ("frankfurt-near", [{"model": "A100-SXM4-80GB", "count": 4}]),
    "core-c": ("virginia-core", [{"model": "H100 80GB HBM3", "count": 8}]),
}


def start_three_hosts(grid: LocalGrid, c: Clients) -> None:
    create_site(c, "paris-edge", pb.SITE_TIER_FAR_EDGE, "eu-fr")
    create_site(c, "frankfurt-near", pb.SITE_TIER_NEAR_EDGE, "eu-de")
    create_site(c, "virginia-core", pb.SITE_TIER_CORE, "us-east")
    c.admin.CreateWorkspace(admin_pb2.CreateWorkspaceRequest(workspace=pb.Workspace(name="ran")))
    c.admin.CreateWorkspace(admin_pb2.CreateWorkspaceRequest(workspace=pb.Workspace(name="llm")))
    for host_id, (site, gpus) in HOSTS.items():
        grid.start_agent(host_id, site, gpus)
    wait_for(lambda: len([h for h in c.admin.ListHosts(admin_pb2.ListHostsRequest()).hosts if h.connected]) == 3,
             what="three connected hosts")


def submit(c: Clients, workspace: str, **shape: object) -> pb.Gpr:
    placement = shape.pop("placement", None)
    spec = pb.GprSpec(workspace=workspace, shape=pb.GpuShape(**shape),  # type: ignore[arg-type]
                      priority_tier=pb.PRIORITY_TIER_MEDIUM, priority=50,
                      placement=placement)  # type: ignore[arg-type]
    gpr: pb.Gpr = c.provision.SubmitGpr(provision_pb2.SubmitGprRequest(spec=spec))
    return gpr


def wait_running(c: Clients, gpr_id: str) -> pb.Gpr:
    def running() -> pb.Gpr | None:
        g: pb.Gpr = c.provision.GetGpr(provision_pb2.GetGprRequest(id=gpr_id))
        assert g.state not in (pb.GPR_STATE_FAILED, pb.GPR_STATE_CANCELLED), g.state_reason
        return g if g.state == pb.GPR_STATE_RUNNING else None

    return wait_for(running, what=f"{gpr_id} RUNNING")


def host(c: Clients, host_id: str) -> pb.Host:
    h: pb.Host = c.admin.GetHost(admin_pb2.GetHostRequest(id=host_id))
    return h


def converged(c: Clients, host_id: str) -> pb.Host | None:
    try:
        h = host(c, host_id)
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise
    return h if h.connected and h.applied_revision == h.desired_revision else None


def agent_applied(grid: LocalGrid, host_id: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((grid.root / "agents" / host_id / "applied.json").read_text())
    return data


def test_gprs_reach_running_on_hosts_that_satisfy_them(grid: LocalGrid, clients: Clients) -> None:
    c = clients
    start_three_hosts(grid, c)
    h100 = submit(c, "llm", models=["H100 80GB HBM3"], count=4)
    edge = submit(c, "ran", count=1, placement=pb.PlacementSpec(policy=pb.PLACEMENT_POLICY_PINNED,
                                                                tier=pb.SITE_TIER_FAR_EDGE))
    eu_big = submit(c, "llm", count=2, min_memory_mib=70_000,
                    placement=pb.PlacementSpec(allowed_regions=["eu-de", "eu-fr"]))
    watch = c.provision.WatchGprs(provision_pb2.WatchGprsRequest(since_revision=1))

    expect = {h100.id: "core-c", edge.id: "edge-a", eu_big.id: "near-b"}
    for gpr_id, host_id in expect.items():
        gpr = wait_running(c, gpr_id)
        assert {a.host_id for a in gpr.allocations} == {host_id}
        assert all(a.state == pb.ALLOCATION_STATE_RUNNING for a in gpr.allocations)
        assert sum(len(a.device_uuids) for a in gpr.allocations) == gpr.spec.shape.count
    # The three allocations' GPUs on core-c and near-b are distinct devices of the host.
    for host_id in ("core-c", "near-b", "edge-a"):
        h = wait_for(functools.partial(converged, c, host_id), what=f"{host_id} converged")
        assert agent_applied(grid, host_id)["revision"] == h.applied_revision == h.desired_revision
        uuids = {g.uuid for g in h.inventory.gpus}
        allocated = [u for g in (h100, edge, eu_big) for a in c.provision.GetGpr(
            provision_pb2.GetGprRequest(id=g.id)).allocations if a.host_id == host_id for u in a.device_uuids]
        assert len(allocated) == len(set(allocated)) and set(allocated) <= uuids

    # Every transition was streamed with its reason, in order, ending in RUNNING.
    seen: dict[str, list[str]] = {}
    for ev in watch:
        seen.setdefault(ev.event.subject, []).append(ev.event.to_state)
        if all(seen.get(i, [""])[-1] == "RUNNING" for i in expect):
            break
    watch.cancel()
    for gpr_id in expect:
        assert seen[gpr_id] == ["PENDING", "PLACED", "PROVISIONING", "RUNNING"]


def test_killed_agent_resumes_without_losing_or_duplicating_allocations(grid: LocalGrid, clients: Clients) -> None:
    c = clients
    start_three_hosts(grid, c)
    gprs = [submit(c, "llm", models=["H100 80GB HBM3"], count=2) for _ in range(3)]
    for g in gprs:
        wait_running(c, g.id)
    before = {g.id: [(a.id, a.host_id, tuple(a.device_uuids)) for a in wait_running(c, g.id).allocations]
              for g in gprs}
    wait_for(lambda: converged(c, "core-c"), what="core-c converged")
    applied_before = agent_applied(grid, "core-c")

    grid.stop_agent("core-c", kill=True)
    wait_for(lambda: host(c, "core-c").state == pb.HOST_STATE_OFFLINE, what="core-c offline")
    # Static stability: the controller keeps its allocations while the host is away.
    for g in gprs:
        assert c.provision.GetGpr(provision_pb2.GetGprRequest(id=g.id)).state == pb.GPR_STATE_RUNNING
    # Work that needs that host waits, and says why.
    waiting = submit(c, "llm", models=["H100 80GB HBM3"], count=1)
    def explained() -> provision_pb2.Explanation | None:
        e: provision_pb2.Explanation = c.provision.ExplainGpr(provision_pb2.ExplainGprRequest(id=waiting.id))
        return e if e.hosts_considered == 3 else None

    explanation = wait_for(explained, what="explanation")
    assert explanation.hosts_feasible == 0
    assert {x.constraint: x.hosts_excluded for x in explanation.exclusions} == {"host_state": 1, "gpu_model": 2}

    grid.start_agent("core-c", "virginia-core")
    wait_running(c, waiting.id)
    h = wait_for(lambda: converged(c, "core-c"), what="core-c converged after restart")
    after = {g.id: [(a.id, a.host_id, tuple(a.device_uuids)) for a in c.provision.GetGpr(
        provision_pb2.GetGprRequest(id=g.id)).allocations] for g in gprs}
    assert after == before
    applied = agent_applied(grid, "core-c")
    assert applied["revision"] == h.applied_revision == h.desired_revision
    ids = [a["allocation_id"] for a in applied["allocations"]]  # type: ignore[attr-defined]
    assert len(ids) == len(set(ids)) == 4
    assert set(ids) == {a[0] for v in before.values() for a in v} | {
        a.id for a in c.provision.GetGpr(provision_pb2.GetGprRequest(id=waiting.id)).allocations}
    assert int(applied_before["revision"]) <= int(applied["revision"])  # type: ignore[call-overload]


def test_cancel_releases_devices_on_the_host(grid: LocalGrid, clients: Clients) -> None:
    c = clients
    start_three_hosts(grid, c)
    gpr = wait_running(c, submit(c, "ran", models=["L4"], count=2).id)
    cancelled = c.provision.CancelGpr(provision_pb2.CancelGprRequest(id=gpr.id, reason="done"))
    assert cancelled.state == pb.GPR_STATE_CANCELLED and not cancelled.allocations
    wait_for(lambda: converged(c, "edge-a"), what="edge-a converged")
    assert agent_applied(grid, "edge-a")["allocations"] == []
    with pytest.raises(grpc.RpcError) as err:
        c.provision.CancelGpr(provision_pb2.CancelGprRequest(id=gpr.id))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # The freed GPUs are placed again.
    wait_running(c, submit(c, "ran", models=["L4"], count=2).id)


def test_agent_of_unknown_site_is_refused_and_keeps_retrying(grid: LocalGrid, clients: Clients) -> None:
    proc = grid.start_agent("lost-host", "atlantis", [{"model": "T4", "count": 1}])
    wait_for(lambda: "FAILED_PRECONDITION" in proc.log_tail(), what="the refusal in the agent log")
    assert "atlantis" in proc.log_tail()
    assert proc.running
    create_site(clients, "atlantis", pb.SITE_TIER_CLOUD, "sea")
    wait_for(lambda: converged(clients, "lost-host"), timeout=40, what="the agent to connect once the site exists")


def test_state_dir_layout(grid: LocalGrid) -> None:
    assert (Path(grid.root) / "controller" / "gridmesh.sqlite3").exists()


def test_watch_replays_from_a_revision_or_starts_now(grid: LocalGrid, clients: Clients) -> None:
    c = clients
    c.admin.CreateWorkspace(admin_pb2.CreateWorkspaceRequest(workspace=pb.Workspace(name="ran")))
    first = submit(c, "ran", count=1)
    history = c.provision.WatchGprs(provision_pb2.WatchGprsRequest(since_revision=0))
    event = next(history)
    assert (event.event.subject, event.event.reason, event.event.to_state) == (first.id, "Submitted", "PENDING")
    history.cancel()

    live = c.provision.WatchGprs(provision_pb2.WatchGprsRequest(workspace="ran"))
    time.sleep(0.5)  # let the server start the stream before the next change
    second = submit(c, "ran", count=1)
    event = next(live)
    assert (event.event.subject, event.event.reason) == (second.id, "Submitted")
    assert event.revision > first.revision
    live.cancel()


def test_mig_requests_run_on_exact_mig_devices(grid: LocalGrid, clients: Clients) -> None:
    c = clients
    create_site(c, "lab", pb.SITE_TIER_CORE, "eu")
    c.admin.CreateWorkspace(admin_pb2.CreateWorkspaceRequest(workspace=pb.Workspace(name="ml")))
    grid.start_agent("mig-host", "lab", [{"model": "H100 80GB HBM3", "count": 1, "mig_enabled": True}])
    wait_for(lambda: converged(c, "mig-host"), what="mig-host connected")
    big = submit(c, "ml", count=1, mig_profile="3g.40gb")
    small = [submit(c, "ml", count=1, fraction=0.1) for _ in range(3)]
    for g in (big, *small):
        running = wait_running(c, g.id)
        (alloc,) = running.allocations
        assert alloc.host_id == "mig-host" and len(alloc.device_uuids) == 1
        assert alloc.device_uuids[0].startswith("MIG-")
    layout = sorted((i.profile, i.start) for i in host(c, "mig-host").inventory.gpus[0].mig_instances)
    # The smallest profile that holds a tenth of the GPU is 1g.10gb; the 3g.40gb leaves room for more.
    assert [p for p, _ in layout].count("1g.10gb") == 3 and ("3g.40gb" in [p for p, _ in layout])
    assert len({s for _, s in layout}) == len(layout)
