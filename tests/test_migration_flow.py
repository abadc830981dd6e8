"""Capacity chasing through the controller and host agents (in process, no gRPC): pinned work arrives
at a full site; a redistributable job that may migrate is moved to another site in its region
(make before break: the new replica runs before the old one is released), and the pinned work gets
the freed GPU once the host reports it clean."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gridmesh.agent.host import HostAgent
from gridmesh.agent.state import LocalState
from gridmesh.common.model import GprState, HostId, PlacementPolicy, PriorityTier, SiteName, SiteTier, WorkspaceName
from gridmesh.controller.grid import Grid
from gridmesh.controller.model import GprSpec, GpuShape, PlacementSpec, RedistributionPolicy, Site, Workspace
from gridmesh.controller.placement import placement_round
from gridmesh.controller.store import Store
from gridmesh.hw.simhost import SimHost
from gridmesh.hw.simulator import SimulatorBackend, parse_host_description
from tests.hostsync import FakeClock, sync

Agents = dict[str, HostAgent]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Grid, Agents, FakeClock]]:
    store = Store(tmp_path / "grid.db")
    clock = FakeClock(1_000_000.0)
    grid = Grid(store, clock)
    grid.create_site(Site(name=SiteName("edge"), tier=SiteTier.FAR_EDGE, region="eu"))
    grid.create_site(Site(name=SiteName("near"), tier=SiteTier.NEAR_EDGE, region="eu"))
    grid.create_workspace(Workspace(name=WorkspaceName("ws")))
    agents: Agents = {}
    for host_id, site in (("edge-1", "edge"), ("near-1", "near")):
        sim = SimulatorBackend(SimHost(parse_host_description(
            {"hostname": host_id, "gpus": [{"model": "L4", "count": 1}]}, "test")))
        agents[host_id] = HostAgent(HostId(host_id), sim, LocalState(tmp_path / host_id))
        grid.host_connected(host_id, site, agents[host_id].inventory(), 0, "")
    yield grid, agents, clock
    store.close()


def test_pinned_work_moves_redistributable_work_make_before_break(world: tuple[Grid, Agents, FakeClock]) -> None:
    grid, agents, clock = world
    # The movable job prefers the far edge and lands there.
    movable = grid.submit_gpr(GprSpec(
        workspace=WorkspaceName("ws"), shape=GpuShape(count=1), priority_tier=PriorityTier.MEDIUM, priority=50,
        placement=PlacementSpec(tier=SiteTier.FAR_EDGE, allowed_regions=("eu",)),
        redistribution=RedistributionPolicy(may_migrate=True)))
    placement_round(grid)
    sync(grid, agents)
    assert [a.host_id for a in grid.store.allocations_of_gpr(movable.id)] == ["edge-1"]
    clock.now += 3600  # older than the migration cooldown

    # Pinned far-edge work can only get the edge GPU by moving the job to the near edge.
    pinned = grid.submit_gpr(GprSpec(
        workspace=WorkspaceName("ws"), shape=GpuShape(count=1), priority_tier=PriorityTier.HIGH, priority=100,
        placement=PlacementSpec(policy=PlacementPolicy.PINNED, site=SiteName("edge"))))
    placement_round(grid)
    assert grid.get_gpr(movable.id).state is GprState.MIGRATING
    # Make before break: both allocations exist until the new one runs.
    assert sorted(a.host_id for a in grid.store.allocations_of_gpr(movable.id)) == ["edge-1", "near-1"]

    sync(grid, agents)  # near-1 runs the new replica; the old one on edge-1 is released
    assert grid.get_gpr(movable.id).state is GprState.RUNNING
    assert [a.host_id for a in grid.store.allocations_of_gpr(movable.id)] == ["near-1"]
    sync(grid, agents)  # edge-1 drops it and reports its GPU clean
    placement_round(grid)
    sync(grid, agents)
    assert grid.get_gpr(pinned.id).state is GprState.RUNNING
    assert [a.host_id for a in grid.store.allocations_of_gpr(pinned.id)] == ["edge-1"]
    reasons = [e.reason for e in grid.store.events(subject=movable.id)]
    assert "Migrating" in reasons and "Moved" in reasons
