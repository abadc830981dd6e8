"""Clean and healthy after eviction: the agent side of "an evicted tenant's GPU is not reused until clean"."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gridmesh.agent.health import HealthMonitor, HealthTarget, assess
from gridmesh.agent.mig import InstanceState, WantedGpu, WantedInstance, reconcile
from gridmesh.common.model import GpuHealth
from gridmesh.hw.backend import GpuBackend
from gridmesh.hw.fake_nvml import FakeNvml
from gridmesh.hw.model import GpuUuid, HealthReading, RecoveryAction
from gridmesh.hw.nvml import NvmlBackend
from gridmesh.hw.simhost import SimHost
from gridmesh.hw.simulator import SimulatorBackend, parse_host_description

HEALTHY, UNCLEAN, UNHEALTHY = GpuHealth.HEALTHY, GpuHealth.UNCLEAN, GpuHealth.UNHEALTHY


def sim_host(mig: bool) -> SimHost:
    return SimHost(parse_host_description(
        {"hostname": "health", "cpu_count": 8, "gpus": [{"model": "H100 80GB HBM3", "count": 2, "mig_enabled": mig}]},
        "t"))


@pytest.fixture(params=["simulator", "nvml-fake"])
def face(request: pytest.FixtureRequest) -> Iterator[tuple[SimHost, GpuBackend]]:
    host = sim_host(mig=request.param == "nvml-fake")  # MIG on for one face, off for the other: both paths run
    backend: GpuBackend = SimulatorBackend(host) if request.param == "simulator" else NvmlBackend(lib=FakeNvml(host))
    backend.inventory()
    yield host, backend
    backend.close()


def test_a_left_behind_process_makes_the_gpu_unclean_until_it_is_gone(face: tuple[SimHost, GpuBackend]) -> None:
    host, backend = face
    g0, g1 = (g.uuid for g in backend.inventory().gpus)
    mig = backend.mig_state(g0).enabled
    monitor = HealthMonitor(backend)
    device = backend.create_instance(g0, 9, 4).uuid if mig else ""
    target = HealthTarget(g0, device)

    # The allocation starts: baseline, then the tenant's processes.
    monitor.mark(target)
    stuck = host.start_process(g0, 512, mig_device=device)
    killed = host.start_process(g0, 256, mig_device=device)
    # Eviction: the workload reconciler kills the tenant's processes; one survives (stuck in the driver).
    host.end_process(killed)
    host.inject_xid(g0, 45, backend.mig_state(g0).instances[0].gpu_instance_id if mig else None)  # kill cleanup

    verdict = monitor.verify(target)
    assert verdict.health is UNCLEAN
    assert verdict.reason.startswith(f"1 process left: pid {stuck}, 512 MiB")
    assert monitor.status([g0, g1]) == {g0: (UNCLEAN, str(verdict) if mig else verdict.reason), g1: (HEALTHY, "")}
    assert [v.health for v in monitor.recheck()] == [UNCLEAN]  # still there: still unclean

    host.end_process(stuck)
    assert [(v.health, v.reason) for v in monitor.recheck()] == [(HEALTHY, "")]
    assert monitor.status([g0, g1]) == {g0: (HEALTHY, ""), g1: (HEALTHY, "")}
    assert monitor.pending() == {}


def test_a_mig_instance_with_a_leftover_is_kept_from_the_next_tenant_until_clean() -> None:
    host = sim_host(mig=True)
    backend = SimulatorBackend(host)
    gpu = backend.inventory().gpus[0].uuid
    monitor = HealthMonitor(backend)

    first = reconcile(backend, [WantedGpu(gpu, True, (WantedInstance("old/0", "3g.40gb", start=4),))])
    old = first.uuid_of("old/0")
    target = HealthTarget(gpu, old)
    monitor.mark(target)
    pid = host.start_process(gpu, 900, mig_device=old)

    # The old allocation is evicted; the new one wants the same placement. Its process is still there.
    new = [WantedGpu(gpu, True, (WantedInstance("new/0", "3g.40gb", start=4),))]
    blocked = reconcile(backend, new)
    assert blocked.actions == ()
    assert blocked.instances[0].state is InstanceState.PENDING
    assert "waits for busy gi 2 (3g.40gb at 4)" in blocked.instances[0].reason
    assert any("kept gi 2 (3g.40gb at 4): not wanted but busy" in n for n in blocked.notes)
    assert monitor.verify(target).health is UNCLEAN
    assert monitor.status([gpu])[gpu][0] is UNCLEAN

    host.end_process(pid)
    assert [v.health for v in monitor.recheck()] == [HEALTHY]
    ready = reconcile(backend, new)
    assert ready.ok and ready.instances[0].start == 4


def test_an_xid_confined_to_the_instance_is_cleared_by_recreating_it() -> None:
    host = sim_host(mig=True)
    backend = NvmlBackend(lib=FakeNvml(host))
    gpu = backend.inventory().gpus[0].uuid
    gi = backend.create_instance(gpu, 14, 2)
    monitor = HealthMonitor(backend)
    target = HealthTarget(gpu, gi.uuid)
    monitor.mark(target)
    host.inject_xid(gpu, 94, gi.gpu_instance_id)  # contained ECC error, attributed to this instance

    kept = monitor.verify(target, recreate=False)
    assert (kept.health, kept.reason) == (UNCLEAN, "XID 94 in gi 4 (contained ECC error) confined to gi 4 (2g.20gb "
                                                   "at 2): re-create it to clear")
    verdict = monitor.verify(target)
    assert verdict.health is HEALTHY
    assert verdict.recreated_from == gi.uuid and verdict.mig_uuid != gi.uuid
    (now,) = backend.mig_state(gpu).instances
    assert (now.uuid, now.profile, now.start) == (verdict.mig_uuid, "2g.20gb", 2)
    assert monitor.pending() == {}
    # The new device starts clean: the handled XID does not count against it.
    assert monitor.verify(HealthTarget(gpu, now.uuid)).health is HEALTHY
    backend.close()


@pytest.mark.parametrize(
    ("fault", "health", "reason"),
    [
        ("xid-45", HEALTHY, ""),
        ("xid-13", HEALTHY, ""),
        ("xid-79", UNHEALTHY, "XID 79 (GPU has fallen off the bus) since the allocation began"),
        ("xid-other-instance", HEALTHY, ""),
        ("ecc", UNHEALTHY, "2 new uncorrectable ECC errors since the allocation began"),
        ("remap", UNHEALTHY, "a row remap is pending: the GPU needs a reset"),
        ("recovery", UNHEALTHY, "the driver asks for a recovery action: node reboot"),
        ("lost", UNHEALTHY, "the GPU stopped answering: GPU 0 has fallen off the bus"),
    ],
)
def test_after_eviction_verdicts(fault: str, health: GpuHealth, reason: str) -> None:
    host = sim_host(mig=True)
    backend = SimulatorBackend(host)
    gpu = backend.inventory().gpus[0].uuid
    mine = backend.create_instance(gpu, 9, 0)
    theirs = backend.create_instance(gpu, 9, 4)
    monitor = HealthMonitor(backend)
    target = HealthTarget(gpu, mine.uuid)
    monitor.mark(target)
    if fault.startswith("xid-") and fault[4:].isdigit():
        host.inject_xid(gpu, int(fault[4:]))
    elif fault == "xid-other-instance":
        host.inject_xid(gpu, 94, theirs.gpu_instance_id)  # the other tenant's problem, judged on its own eviction
    elif fault == "ecc":
        host.inject_ecc_error(gpu, 2, remap_pending=False)
        host.xids.pop()  # keep the ECC count as the only signal
    elif fault == "remap":
        host.inject_ecc_error(gpu, 1)
    elif fault == "recovery":
        host.set_recovery_action(gpu, RecoveryAction.NODE_REBOOT)
    elif fault == "lost":
        host.fall_off_bus(gpu)
    verdict = monitor.verify(target)
    assert (verdict.health, verdict.reason) == (health, reason)


def test_gpu_wide_trouble_shows_in_status_until_the_operator_resets() -> None:
    host = sim_host(mig=False)
    backend = SimulatorBackend(host)
    g0, g1 = (g.uuid for g in backend.inventory().gpus)
    monitor = HealthMonitor(backend)
    host.set_recovery_action(g1, RecoveryAction.GPU_RESET)
    assert monitor.status([g0, g1]) == {g0: (HEALTHY, ""),
                                        g1: (UNHEALTHY, "the driver asks for a recovery action: gpu reset")}
    host.reset_gpu(g1)
    assert monitor.status([g1]) == {g1: (HEALTHY, "")}


def test_assess_without_a_baseline_judges_by_what_it_sees() -> None:
    gpu = GpuUuid("GPU-5c1f1b2e-6a0d-4c5e-9b7a-3d2f8e1a9c40")
    clean = HealthReading(gpu=gpu, reachable=True, ecc_uncorrectable=7, recovery_action=RecoveryAction.NONE)
    assert assess(HealthTarget(gpu), None, clean, (), None).health is HEALTHY  # old ECC counts are history
