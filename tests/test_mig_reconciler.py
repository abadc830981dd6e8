"""The MIG reconciler end to end: observe -> plan -> apply -> observe, over the simulator and over NVML code."""

from __future__ import annotations

from gridmesh.agent.mig import (
    InstanceState,
    WantedGpu,
    WantedInstance,
    instance_key,
    reconcile,
    wanted_from_allocations,
)
from gridmesh.common.model import AllocationId, AllocationSpec, GprId, WorkspaceName
from gridmesh.common.model import GpuUuid as ModelGpuUuid
from gridmesh.hw.fake_nvml import FakeNvml
from gridmesh.hw.model import GpuInstance, GpuUuid
from gridmesh.hw.nvml import NvmlBackend
from gridmesh.hw.simhost import SimHost
from gridmesh.hw.simulator import SimulatorBackend, parse_host_description

W = WantedInstance


def host(mig: bool = True, count: int = 2) -> SimHost:
    return SimHost(parse_host_description(
        {"hostname": "rec", "cpu_count": 8, "gpus": [{"model": "H100 80GB HBM3", "count": count, "mig_enabled": mig}]},
        "t"))


def test_wanted_instances_come_back_with_their_mig_uuids_and_a_second_round_does_nothing() -> None:
    b = SimulatorBackend(host())
    g0, g1 = (g.uuid for g in b.inventory().gpus)
    want = [WantedGpu(g0, True, (W("a/0", "3g.40gb"), W("b/0", "1g.10gb"))),
            WantedGpu(g1, True, (W("c/0", "7g.80gb"),))]
    report = reconcile(b, want)
    assert report.ok, report.errors()
    assert [str(r.action).split(" on ")[0] for r in report.actions] == [
        "create gi 3g.40gb at 4", "create gi 1g.10gb at 0", "create gi 7g.80gb at 0"]
    uuids = {r.key: r.uuid for r in report.instances}
    live = {gi.uuid: gi for g in (g0, g1) for gi in b.mig_state(g).instances}
    assert set(uuids.values()) == set(live)
    assert live[uuids["a/0"]].profile == "3g.40gb" and live[uuids["c/0"]].gpu == g1
    again = reconcile(b, want)
    assert again.actions == () and again.ok
    assert {r.key: r.uuid for r in again.instances} == uuids


def test_the_nvml_backend_reconciles_the_same_way() -> None:
    sim = host()
    nvml = NvmlBackend(lib=FakeNvml(sim))
    g0 = nvml.inventory().gpus[0].uuid
    report = reconcile(nvml, [WantedGpu(g0, True, (W("a", "3g.40gb"), W("b", "2g.20gb", start=0)))])
    assert report.ok, report.errors()
    truth = {gi.uuid: gi for gi in SimulatorBackend(sim).mig_state(g0).instances}
    assert {r.uuid for r in report.instances} == set(truth)
    assert (truth[report.uuid_of("b")].start, truth[report.uuid_of("a")].start) == (0, 4)
    nvml.close()


class Interfering(SimulatorBackend):
    """Someone else (an operator with nvidia-smi) creates an instance between our observe and our create."""

    def create_instance(self, gpu: GpuUuid, profile_id: int, start: int) -> GpuInstance:
        if gpu == self.host.gpus[0].uuid and not self.host.gpus[0].gis:
            gi = self.host.create_gpu_instance(gpu, 19, start)
            self.host.create_compute_instance(gi)
        return super().create_instance(gpu, profile_id, start)


def test_a_failed_action_is_a_result_that_names_the_error_and_other_gpus_go_on() -> None:
    b = Interfering(host())
    g0, g1 = (g.uuid for g in b.inventory().gpus)
    report = reconcile(b, [WantedGpu(g0, True, (W("a", "3g.40gb"), W("b", "1g.10gb"))),
                           WantedGpu(g1, True, (W("c", "1g.10gb"),))])
    assert not report.ok
    first, second, third = report.actions
    assert (first.ok, first.error_kind) == (False, "InsufficientResourcesError")
    assert (second.ok, second.error_kind) == (False, "Skipped")  # after a failure, the rest of that GPU waits
    assert third.ok  # the other GPU is not held up
    states = {r.key: r.state for r in report.instances}
    # "b" is served by the stranger's instance: idle, the right profile, so re-used rather than left stranded.
    assert states == {"a": InstanceState.FAILED, "b": InstanceState.READY, "c": InstanceState.READY}
    assert report.instances[1].start == 4
    assert "InsufficientResourcesError" in report.instances[0].reason
    assert any("create gi 3g.40gb at 4" in e for e in report.errors())
    # The next round places the 3g.40gb beside it.
    assert [str(a).split(" on ")[0] for a in report.remaining] == ["create gi 3g.40gb at 0"]
    assert reconcile(b, [WantedGpu(g0, True, (W("a", "3g.40gb"), W("b", "1g.10gb", uuid=report.uuid_of("b"))))]).ok


def test_unreadable_and_unknown_gpus_fail_with_why() -> None:
    sim = host()
    b = SimulatorBackend(sim)
    g0 = b.inventory().gpus[0].uuid
    sim.fall_off_bus(g0)
    report = reconcile(b, [WantedGpu(g0, True, (W("a", "1g.10gb"),)),
                           WantedGpu(GpuUuid("GPU-00000000-0000-0000-0000-000000000000"), True, (W("b", "1g.10gb"),))])
    assert [r.state for r in report.instances] == [InstanceState.FAILED, InstanceState.FAILED]
    assert "GpuLostError" in report.instances[0].reason
    assert "not on this host" in report.instances[1].reason


def test_enabling_mig_waits_for_the_operators_reset_then_completes() -> None:
    sim = host(mig=False, count=1)
    b = SimulatorBackend(sim)
    g0 = b.inventory().gpus[0].uuid
    want = [WantedGpu(g0, True, (W("a", "1g.10gb"),))]
    report = reconcile(b, want)
    assert [str(r) for r in report.actions] == [f"enable mig on {g0}"]
    assert report.instances[0].state is InstanceState.PENDING
    assert report.instances[0].reason == "MIG mode enable waits for a GPU reset"
    assert reconcile(b, want).actions == ()  # nothing forced while it waits
    sim.reset_gpu(g0)
    done = reconcile(b, want)
    assert done.ok and done.uuid_of("a").startswith("MIG-")


def test_wanted_layout_from_allocations() -> None:
    gpu = ModelGpuUuid("GPU-11111111-2222-3333-4444-555555555555")
    other = ModelGpuUuid("GPU-99999999-2222-3333-4444-555555555555")
    allocs = [
        AllocationSpec(AllocationId("alloc-1"), GprId("gpr-1"), WorkspaceName("ws"), 0, (0,), (gpu,), "3g.40gb"),
        AllocationSpec(AllocationId("alloc-2"), GprId("gpr-2"), WorkspaceName("ws"), 0, (1,), (other,)),
    ]
    key = instance_key(allocs[0], 0)
    assert key == "alloc-1/0"
    assert wanted_from_allocations(allocs, [GpuUuid(gpu), GpuUuid("GPU-a")], {key: "MIG-x"}, {key: 4}) == [
        WantedGpu(GpuUuid(gpu), True, (W(key, "3g.40gb", 4, "MIG-x"),)),
        WantedGpu(GpuUuid("GPU-a"), True, ()),
    ]
