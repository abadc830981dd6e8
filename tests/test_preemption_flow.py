"""The seed scenario through the controller and a host agent (in process, no gRPC): a HIGH AI-RAN GPR
at a saturated far-edge site evicts a LOW preemptible batch job, and gets the GPU only after the host
reports it clean. The batch job is re-queued, not lost."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gridmesh.agent.host import HostAgent
from gridmesh.agent.state import LocalState
from gridmesh.common.model import (
    GprState,
    HostId,
    PlacementPolicy,
    PriorityTier,
    SiteName,
    SiteTier,
    WorkspaceName,
)
from gridmesh.controller.grid import Grid
from gridmesh.controller.model import GprSpec, GpuShape, PlacementSpec, RedistributionPolicy, Site, Workspace
from gridmesh.controller.placement import placement_round
from gridmesh.controller.records import ReservationRecord
from gridmesh.controller.store import Store
from gridmesh.hw.simhost import SimHost
from gridmesh.hw.simulator import SimulatorBackend, parse_host_description
from tests.hostsync import FakeClock, sync


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Grid, HostAgent, SimulatorBackend, FakeClock]]:
    store = Store(tmp_path / "grid.db")
    clock = FakeClock(1_000_000.0)
    grid = Grid(store, clock)
    grid.create_site(Site(name=SiteName("edge"), tier=SiteTier.FAR_EDGE, region="eu"))
    for ws in ("ran", "batch"):
        grid.create_workspace(Workspace(name=WorkspaceName(ws)))
    sim = SimulatorBackend(SimHost(parse_host_description(
        {"hostname": "edge-1", "gpus": [{"model": "L4", "count": 1}]}, "test")))
    agent = HostAgent(HostId("edge-1"), sim, LocalState(tmp_path / "agent"))
    grid.host_connected("edge-1", "edge", agent.inventory(), 0, "")
    yield grid, agent, sim, clock
    store.close()


def spec(ws: str, tier: PriorityTier, priority: int, preemptible: bool) -> GprSpec:
    return GprSpec(workspace=WorkspaceName(ws), shape=GpuShape(count=1), priority_tier=tier, priority=priority,
                   placement=PlacementSpec(policy=PlacementPolicy.PINNED, tier=SiteTier.FAR_EDGE),
                   redistribution=RedistributionPolicy(preemptible=preemptible))


def test_high_ai_ran_evicts_low_batch_and_waits_for_a_clean_gpu(
        world: tuple[Grid, HostAgent, SimulatorBackend, FakeClock]) -> None:
    grid, agent, sim, clock = world
    batch = grid.submit_gpr(spec("batch", PriorityTier.LOW, 10, preemptible=True))
    placement_round(grid)
    sync(grid, {"edge-1": agent})
    assert grid.get_gpr(batch.id).state is GprState.RUNNING
    gpu = agent.inventory().gpus[0].uuid
    pid = sim.host.start_process(gpu, 512)  # the batch job's process, slow to die
    clock.now += 3600

    ran = grid.submit_gpr(spec("ran", PriorityTier.HIGH, 200, preemptible=False))
    placement_round(grid)
    assert grid.get_gpr(batch.id).state is GprState.PENDING  # preempted, re-queued
    states = [(e.from_state, e.to_state, e.reason) for e in grid.store.events(subject=batch.id, kind="gpr.state")]
    assert states[-2:] == [("RUNNING", "PREEMPTED", "Preempted"), ("PREEMPTED", "PENDING", "Requeued")]
    assert grid.get_gpr(ran.id).state is GprState.PENDING
    assert [r.reservation.gpr_id for r in grid.store.all(ReservationRecord)] == [ran.id]

    sync(grid, {"edge-1": agent})  # the host drops the batch allocation; its process is still there
    placement_round(grid)
    assert grid.get_gpr(ran.id).state is GprState.PENDING  # the GPU is not clean yet
    assert grid.store.allocations_on_host("edge-1") == []

    sim.host.end_process(pid)
    sync(grid, {"edge-1": agent})  # verified clean and reported
    placement_round(grid)
    sync(grid, {"edge-1": agent})
    assert grid.get_gpr(ran.id).state is GprState.RUNNING
    assert grid.store.all(ReservationRecord) == []
    # The batch job waits for room, it is not evicted back and forth.
    placement_round(grid)
    assert grid.get_gpr(batch.id).state is GprState.PENDING
    assert grid.get_gpr(ran.id).state is GprState.RUNNING
