"""HostAgent with the simulated hardware: MIG allocations get exact MIG devices, and a released device
with a tenant's process left behind is reported UNCLEAN until the process is gone."""

from __future__ import annotations

from pathlib import Path

from gridmesh.agent.host import HostAgent
from gridmesh.agent.state import LocalState
from gridmesh.common.model import (
    AllocationId,
    AllocationSpec,
    AllocationState,
    GprId,
    GpuHealth,
    GpuUuid,
    HostId,
    HostSpec,
    WorkspaceName,
)
from gridmesh.hw.simhost import SimHost
from gridmesh.hw.simulator import SimulatorBackend, parse_host_description


def backend() -> SimulatorBackend:
    return SimulatorBackend(SimHost(parse_host_description(
        {"hostname": "h1", "gpus": [{"model": "H100 80GB HBM3", "count": 1, "mig_enabled": True},
                                    {"model": "H100 80GB HBM3", "count": 1}]}, "test")))


def alloc(aid: str, gpu: int, uuid: str, profile: str = "", starts: tuple[int, ...] = ()) -> AllocationSpec:
    return AllocationSpec(AllocationId(aid), GprId("gpr-" + aid), WorkspaceName("ws"), 0, (gpu,), (GpuUuid(uuid),),
                          mig_profile=profile, mig_starts=starts)


def test_mig_allocations_get_their_devices_at_the_chosen_start(tmp_path: Path) -> None:
    sim = backend()
    mig_gpu, _ = (g.uuid for g in sim.inventory().gpus)
    agent = HostAgent(HostId("h1"), sim, LocalState(tmp_path))
    spec = HostSpec(HostId("h1"), 5, (alloc("a1", 0, mig_gpu, "3g.40gb", (4,)), alloc("a2", 0, mig_gpu, "1g.10gb")))
    result = agent.apply(spec)
    assert result.accepted
    statuses = {s.allocation_id: s for s in result.statuses}
    assert {s.state for s in statuses.values()} == {AllocationState.RUNNING}
    assert all(u.startswith("MIG-") for s in statuses.values() for u in s.device_uuids)
    layout = {(i.profile, i.start) for i in agent.inventory().gpus[0].mig_instances}
    assert ("3g.40gb", 4) in layout and len(layout) == 2

    # A restart on the same state directory re-binds the same devices; nothing is re-made.
    again = HostAgent(HostId("h1"), sim, LocalState(tmp_path))
    again.enforce_persisted()
    assert {s.allocation_id: s.device_uuids for s in again.statuses()} == {
        a: s.device_uuids for a, s in statuses.items()}


def test_an_impossible_mig_layout_fails_the_allocation_with_the_reason(tmp_path: Path) -> None:
    sim = backend()
    mig_gpu, _ = (g.uuid for g in sim.inventory().gpus)
    agent = HostAgent(HostId("h1"), sim, LocalState(tmp_path))
    # Two 4g.40gb never fit on one H100 (at most one, at start 0).
    spec = HostSpec(HostId("h1"), 5, (alloc("a1", 0, mig_gpu, "4g.40gb"), alloc("a2", 0, mig_gpu, "4g.40gb")))
    states = {s.allocation_id: s for s in agent.apply(spec).statuses}
    assert sorted(s.state.name for s in states.values()) == ["FAILED", "RUNNING"]
    failed = next(s for s in states.values() if s.state is AllocationState.FAILED)
    assert "4g.40gb" in failed.reason
    assert any(e.reason == "MigFailed" for e in agent.take_events())


def test_a_process_left_after_release_keeps_the_gpu_unclean_until_it_is_gone(tmp_path: Path) -> None:
    sim = backend()
    _, whole = (g.uuid for g in sim.inventory().gpus)
    agent = HostAgent(HostId("h1"), sim, LocalState(tmp_path))
    assert agent.apply(HostSpec(HostId("h1"), 1, (alloc("a1", 1, whole),))).accepted
    pid = sim.host.start_process(whole, 512)

    agent.apply(HostSpec(HostId("h1"), 2, ()))  # released; its workload should be gone, but a process stays
    gpu = agent.inventory().gpus[1]
    assert gpu.health is GpuHealth.UNCLEAN and f"pid {pid}" in gpu.health_reason
    assert [e.reason for e in agent.take_events()] == ["DeviceNotClean"]
    agent.tick()
    assert agent.inventory().gpus[1].health is GpuHealth.UNCLEAN

    sim.host.end_process(pid)
    agent.tick()
    assert agent.inventory().gpus[1].health is GpuHealth.HEALTHY
