"""Controller and agent together (in process, no gRPC): a tenant's process left behind after its
allocation is cancelled makes the host report the GPU unclean; the controller keeps the GPU from the
next GPR until the process is gone and the host reports it clean."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gridmesh.agent.host import HostAgent
from gridmesh.agent.state import LocalState
from gridmesh.common.model import GpuHealth, HostId, PriorityTier, SiteName, SiteTier, WorkspaceName
from gridmesh.controller import scheduler
from gridmesh.controller.grid import Grid
from gridmesh.controller.model import Gpr, GprSpec, GpuShape, Site, Workspace
from gridmesh.controller.store import Store
from gridmesh.hw.simhost import SimHost
from gridmesh.hw.simulator import SimulatorBackend, parse_host_description
from tests.hostsync import sync


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Grid, HostAgent, SimulatorBackend]]:
    store = Store(tmp_path / "grid.db")
    grid = Grid(store)
    grid.create_site(Site(name=SiteName("core"), tier=SiteTier.CORE, region="eu"))
    grid.create_workspace(Workspace(name=WorkspaceName("ws")))
    sim = SimulatorBackend(SimHost(parse_host_description(
        {"hostname": "h1", "gpus": [{"model": "L4", "count": 1}]}, "test")))
    agent = HostAgent(HostId("h1"), sim, LocalState(tmp_path / "agent"))
    grid.host_connected("h1", "core", agent.inventory(), 0, "")
    yield grid, agent, sim
    store.close()


def submit(grid: Grid) -> Gpr:
    gpr = grid.submit_gpr(GprSpec(workspace=WorkspaceName("ws"), shape=GpuShape(count=1),
                                  priority_tier=PriorityTier.MEDIUM, priority=10))
    grid.apply_plan(scheduler.plan(grid.snapshot()))
    return gpr


def test_a_left_behind_process_keeps_the_gpu_from_the_next_tenant(
        world: tuple[Grid, HostAgent, SimulatorBackend]) -> None:
    grid, agent, sim = world
    first = submit(grid)
    sync(grid, {"h1": agent})
    assert grid.get_gpr(first.id).state.name == "RUNNING"
    gpu = agent.inventory().gpus[0].uuid
    pid = sim.host.start_process(gpu, 512)  # the tenant's workload

    grid.cancel_gpr(first.id)
    sync(grid, {"h1": agent})  # released on the host; the workload's process did not go away
    reported = grid.get_host("h1").inventory.gpus[0]
    assert reported.health is GpuHealth.UNCLEAN and f"pid {pid}" in reported.health_reason
    assert [e.reason for e in grid.store.events(kind="host.error")] == ["DeviceNotClean"]

    second = submit(grid)
    sync(grid, {"h1": agent})
    assert grid.get_gpr(second.id).state.name == "PENDING"  # not given the unclean GPU
    explained = scheduler.explain(grid.snapshot(), grid.get_gpr(second.id))
    assert [(e.constraint, e.hosts_excluded) for e in explained.exclusions] == [("gpu_health", 1)]

    sim.host.end_process(pid)
    sync(grid, {"h1": agent})  # the agent re-checks, finds it clean, reports it; the controller lets it go
    assert grid.get_host("h1").released_gpus == ()
    grid.apply_plan(scheduler.plan(grid.snapshot()))
    sync(grid, {"h1": agent})
    assert grid.get_gpr(second.id).state.name == "RUNNING"
