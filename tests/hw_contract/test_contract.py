"""The backend contract: what every GPU backend answers, in the same units, names and error kinds.

Read-only tests run everywhere, real NVML included (marker ``gpu``). Tests that change a GPU or inject a
fault call ``rig.sim()`` and run only on simulated hardware.
"""

from __future__ import annotations

import os
import re

import pytest

from gridmesh.hw import GpuUuid, HardwareError
from gridmesh.hw.catalog import find_model, hardware_reading
from gridmesh.hw.model import (
    GpuLostError,
    HostHardware,
    InsufficientResourcesError,
    InUseError,
    InvalidArgumentError,
    NotFoundError,
    NotSupportedError,
    RecoveryAction,
    ResetRequiredError,
)
from tests.hw_contract.conftest import Rig

UUID_RE = re.compile(r"^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
MIG_UUID_RE = re.compile(r"^MIG-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
PCI_RE = re.compile(r"^[0-9A-F]{8}:[0-9A-F]{2}:[0-9A-F]{2}\.[0-7]$")


def mig_gpu(rig: Rig, hw: HostHardware) -> GpuUuid:
    """A GPU in MIG mode with a known profile table, or skip."""
    for gpu in hw.gpus:
        if gpu.mig_enabled:
            try:
                rig.backend.mig_table(gpu.uuid)
            except NotSupportedError:
                continue
            return gpu.uuid
    pytest.skip(f"{rig.kind}: no GPU in MIG mode with a known profile table")


def plain_gpu(rig: Rig, hw: HostHardware, *, mig_capable: bool) -> GpuUuid:
    for gpu in hw.gpus:
        if not gpu.mig_enabled and gpu.mig_capable == mig_capable:
            return gpu.uuid
    pytest.skip(f"{rig.kind}: no GPU with MIG off and mig_capable={mig_capable}")


# --- read-only: runs on real NVML too ------------------------------------------------------------------------


def test_inventory_is_sane_and_reading_it_changes_nothing(rig: Rig) -> None:
    first = rig.backend.inventory()
    second = rig.backend.inventory()
    assert first == second
    assert first.backend == rig.backend.name
    assert [g.index for g in first.gpus] == list(range(len(first.gpus)))
    assert len({g.uuid for g in first.gpus}) == len(first.gpus)
    for gpu in first.gpus:
        assert UUID_RE.match(gpu.uuid), gpu.uuid
        assert PCI_RE.match(gpu.pci_bus_id), gpu.pci_bus_id
        assert gpu.memory_mib > 0
        assert gpu.vendor == rig.vendor
        assert (gpu.compute_capability == "") == (gpu.vendor == "amd")
        assert list(gpu.cpu_affinity) == sorted(set(gpu.cpu_affinity)) and min(gpu.cpu_affinity, default=0) >= 0
        if rig.host is None:
            assert set(gpu.cpu_affinity) <= set(range(os.cpu_count() or 1))
        assert list(gpu.nvlink_peers) == sorted(gpu.nvlink_peers)
        assert gpu.mig_enabled or not gpu.mig_instances
        for gi in gpu.mig_instances:
            assert gi.gpu == gpu.uuid
            assert not gi.uuid or MIG_UUID_RE.match(gi.uuid)
        known = find_model(gpu.model)
        if known is not None:
            assert abs(gpu.memory_mib - known.memory_mib) <= known.memory_mib // 10


def test_fake_surfaces_report_what_the_simulator_reports(rig: Rig) -> None:
    host = rig.sim()
    seen = rig.backend.inventory().gpus
    truth = host.hardware().gpus
    assert len(seen) == len(truth)
    for got, want in zip(seen, truth, strict=True):
        # AMD reads CPU affinity from the kernel's PCI device, which a simulated GPU does not have.
        assert (got.uuid, got.model, got.memory_mib, got.pci_bus_id, got.numa_node, got.mig_capable,
                got.mig_enabled, got.nvlink_peers, got.mig_instances) == (
            want.uuid, want.model, want.memory_mib, want.pci_bus_id, want.numa_node, want.mig_capable,
            want.mig_enabled, want.nvlink_peers, want.mig_instances)
        if rig.vendor == "nvidia":
            assert got == want


def test_samples_come_in_inventory_order_with_sane_units(rig: Rig) -> None:
    hw = rig.backend.inventory()
    samples = rig.backend.sample()
    assert [s.gpu for s in samples] == [g.uuid for g in hw.gpus]
    for gpu, s in zip(hw.gpus, samples, strict=True):
        for pct in (s.gpu_util_pct, s.mem_bw_util_pct):
            assert pct is None or 0.0 <= pct <= 100.0
        if gpu.mig_enabled and gpu.vendor == "nvidia":
            assert s.gpu_util_pct is None  # NVML: whole-GPU utilisation does not work in MIG mode
        if s.memory_used_mib is not None and s.memory_free_mib is not None:
            assert 0 <= s.memory_used_mib <= gpu.memory_mib
            assert abs(s.memory_used_mib + s.memory_free_mib - gpu.memory_mib) <= gpu.memory_mib // 50
        assert s.power_w is None or 0.0 < s.power_w < 2000.0
        assert s.temperature_c is None or 0.0 < s.temperature_c < 120.0
        assert s.sm_clock_mhz is None or 0 < s.sm_clock_mhz < 5000
        assert s.mem_clock_mhz is None or 0 < s.mem_clock_mhz < 20000


def test_mig_state_matches_the_inventory(rig: Rig) -> None:
    hw = rig.backend.inventory()
    for gpu in hw.gpus:
        state = rig.backend.mig_state(gpu.uuid)
        assert (state.gpu, state.capable, state.enabled) == (gpu.uuid, gpu.mig_capable, gpu.mig_enabled)
        assert state.instances == gpu.mig_instances
        if not state.enabled:
            assert state.instances == ()


def test_mig_tables_of_h100s_are_the_hw_facts_reading(rig: Rig) -> None:
    reading = hardware_reading("H100 80GB HBM3")
    assert reading is not None
    want = sorted((p["profile_id"], p["name"], p["slice_count"], p["memory_mib"], p["max_instances"],
                   tuple(p["placement_starts"]), p["placement_size"], p["nvml_enum"])
                  for p in reading["gpu_instance_profiles"])
    h100s = [g for g in rig.backend.inventory().gpus if g.model == "H100 80GB HBM3"]
    if not h100s:
        pytest.skip(f"{rig.kind}: no H100 80GB HBM3 here")
    for gpu in h100s:
        table = rig.backend.mig_table(gpu.uuid)
        got = sorted((p.profile_id, p.name, p.compute_slices, p.memory_mib, p.max_instances, p.starts, p.size,
                      p.nvml_enum) for p in table.profiles)
        assert got == want
        assert (table.memory_slices, table.compute_slices) == (8, 7)


def test_mig_on_a_gpu_without_it_is_not_supported(rig: Rig) -> None:
    hw = rig.backend.inventory()
    plain = [g for g in hw.gpus if not g.mig_capable]
    if not plain:
        pytest.skip(f"{rig.kind}: every GPU here is MIG capable")
    with pytest.raises(NotSupportedError):
        rig.backend.mig_table(plain[0].uuid)


def test_processes_and_health_read_cleanly(rig: Rig) -> None:
    for gpu in rig.backend.inventory().gpus:
        procs = rig.backend.processes(gpu.uuid)
        assert len({p.pid for p in procs}) == len(procs)
        health = rig.backend.health(gpu.uuid)
        assert health.gpu == gpu.uuid
        assert health.reachable
        assert health.xid_seq >= 0
        assert health.recovery_action in (None, *RecoveryAction)


def test_partition_modes_are_reported_where_offered(rig: Rig) -> None:
    for gpu in rig.backend.inventory().gpus:
        state = rig.backend.partition_state(gpu.uuid)
        model = find_model(gpu.model)
        if gpu.vendor == "nvidia" or model is None or not model.compute_partitions:
            assert (state.compute, state.compute_modes) == ("", ())
        else:
            assert state.compute in state.compute_modes
            assert state.memory in state.memory_modes


def test_an_unknown_gpu_is_not_found(rig: Rig) -> None:
    with pytest.raises(NotFoundError):
        rig.backend.processes(GpuUuid("GPU-00000000-0000-0000-0000-000000000000"))


# --- changes and faults: simulated hardware only ----------------------------------------------------------------


def test_instances_are_created_with_mig_uuids_and_destroyed(rig: Rig) -> None:
    rig.sim()
    gpu = mig_gpu(rig, rig.backend.inventory())
    table = rig.backend.mig_table(gpu)
    three = table.profile("3g.40gb")
    assert three is not None
    made = rig.backend.create_instance(gpu, three.profile_id, 4)
    assert (made.profile, made.start, made.size) == ("3g.40gb", 4, 4)
    assert MIG_UUID_RE.match(made.uuid)
    assert rig.backend.mig_state(gpu).instances == (made,)
    assert rig.backend.inventory().gpu(gpu).mig_instances == (made,)  # type: ignore[union-attr]
    rig.backend.destroy_instance(gpu, made.gpu_instance_id)
    assert rig.backend.mig_state(gpu).instances == ()
    again = rig.backend.create_instance(gpu, three.profile_id, 4)
    # The driver's id comes back for the same placement; the MIG device UUID never does.
    assert again.gpu_instance_id == made.gpu_instance_id
    assert again.uuid != made.uuid


@pytest.mark.parametrize(
    ("first", "then", "error"),
    [
        ([], ("3g.40gb", 2), InvalidArgumentError),  # 3g.40gb starts only at 0 or 4
        ([("3g.40gb", 4)], ("2g.20gb", 4), InsufficientResourcesError),  # overlap
        ([("4g.40gb", 0)], ("4g.40gb", 0), InsufficientResourcesError),  # overlap and the cap of 1
        ([("3g.40gb", 0), ("3g.40gb", 4)], ("1g.10gb", 6), InsufficientResourcesError),
        ([("4g.40gb", 0), ("3g.40gb", 4)], ("1g.10gb+me", 6), InsufficientResourcesError),  # 7 compute slices
        ([("1g.10gb+me", 0)], ("1g.10gb+me", 1), InsufficientResourcesError),  # max_instances 1
    ],
)
def test_mig_rules_fail_with_the_drivers_error_kind(
    rig: Rig, first: list[tuple[str, int]], then: tuple[str, int], error: type[HardwareError]
) -> None:
    rig.sim()
    gpu = mig_gpu(rig, rig.backend.inventory())
    table = rig.backend.mig_table(gpu)
    for name, start in first:
        rig.backend.create_instance(gpu, table.profile(name).profile_id, start)  # type: ignore[union-attr]
    before = rig.backend.mig_state(gpu)
    with pytest.raises(error):
        rig.backend.create_instance(gpu, table.profile(then[0]).profile_id, then[1])  # type: ignore[union-attr]
    assert rig.backend.mig_state(gpu) == before  # a refused create leaves nothing behind


def test_a_busy_instance_cannot_be_destroyed_and_its_processes_are_attributed(rig: Rig) -> None:
    host = rig.sim()
    gpu = mig_gpu(rig, rig.backend.inventory())
    made = rig.backend.create_instance(gpu, rig.backend.mig_table(gpu).profile("1g.10gb").profile_id, 3)  # type: ignore[union-attr]
    pid = host.start_process(gpu, 700, mig_device=made.uuid)
    (proc,) = rig.backend.processes(gpu)
    assert (proc.pid, proc.used_mib, proc.gpu_instance_id, proc.compute_instance_id) == (
        pid, 700, made.gpu_instance_id, 0)
    with pytest.raises(InUseError):
        rig.backend.destroy_instance(gpu, made.gpu_instance_id)
    host.end_process(pid)
    rig.backend.destroy_instance(gpu, made.gpu_instance_id)
    with pytest.raises(NotFoundError):
        rig.backend.destroy_instance(gpu, made.gpu_instance_id)


def test_mig_mode_changes_need_an_idle_gpu_and_wait_for_a_reset(rig: Rig) -> None:
    host = rig.sim()
    gpu = plain_gpu(rig, rig.backend.inventory(), mig_capable=True)
    pid = host.start_process(gpu)
    with pytest.raises(InUseError):
        rig.backend.set_mig_mode(gpu, True)
    host.end_process(pid)
    change = rig.backend.set_mig_mode(gpu, True)
    assert (change.enabled, change.pending, change.reset_required) == (False, True, True)
    state = rig.backend.mig_state(gpu)
    assert (state.enabled, state.pending, state.reset_pending) == (False, True, True)
    with pytest.raises(ResetRequiredError):
        rig.backend.create_instance(gpu, 19, 0)
    # Asking for the mode in effect cancels the pending change.
    assert not rig.backend.set_mig_mode(gpu, False).reset_required
    rig.backend.set_mig_mode(gpu, True)
    host.reset_gpu(gpu)  # the operator's reset; gridmesh never does this
    assert rig.backend.mig_state(gpu).enabled
    assert rig.backend.inventory().gpu(gpu).mig_enabled  # type: ignore[union-attr]
    rig.backend.create_instance(gpu, 19, 0)


def test_disabling_mig_needs_the_instances_gone(rig: Rig) -> None:
    rig.sim()
    gpu = mig_gpu(rig, rig.backend.inventory())
    made = rig.backend.create_instance(gpu, 19, 0)
    with pytest.raises(InUseError):
        rig.backend.set_mig_mode(gpu, False)
    rig.backend.destroy_instance(gpu, made.gpu_instance_id)
    assert rig.backend.set_mig_mode(gpu, False).reset_required


def test_mig_changes_on_a_gpu_without_mig_are_not_supported(rig: Rig) -> None:
    rig.sim()
    gpu = plain_gpu(rig, rig.backend.inventory(), mig_capable=False)
    with pytest.raises(NotSupportedError):
        rig.backend.set_mig_mode(gpu, True)
    with pytest.raises(NotSupportedError):
        rig.backend.create_instance(gpu, 19, 0)


def test_faults_show_in_health(rig: Rig) -> None:
    host = rig.sim()
    gpu = rig.backend.inventory().gpus[0].uuid
    before = rig.backend.health(gpu)
    host.inject_xid(gpu, 31)
    host.inject_ecc_error(gpu, 2)  # also reports XID 48
    host.set_recovery_action(gpu, RecoveryAction.GPU_RESET)
    after = rig.backend.health(gpu)
    assert after.ecc_uncorrectable == (before.ecc_uncorrectable or 0) + 2
    assert after.remap_pending
    if rig.vendor == "nvidia":
        assert [x.code for x in after.xids_after(before.xid_seq)] == [31, 48]
        assert after.recovery_action is RecoveryAction.GPU_RESET
    else:
        assert after.xids == () and after.recovery_action is None  # AMD SMI has neither
    host.reset_gpu(gpu)
    cleared = rig.backend.health(gpu)
    assert (cleared.remap_pending, cleared.ecc_uncorrectable) == (False, 0)
    assert cleared.recovery_action in (None, RecoveryAction.NONE)


def test_a_gpu_that_falls_off_the_bus_stays_listed_and_reads_as_lost(rig: Rig) -> None:
    host = rig.sim()
    before = rig.backend.inventory()
    gpu = before.gpus[-1].uuid
    host.fall_off_bus(gpu)
    assert rig.backend.inventory() == before  # its identity stays, so the controller can see it fail
    health = rig.backend.health(gpu)
    assert not health.reachable and health.detail
    assert rig.backend.sample()[-1].memory_used_mib is None
    assert rig.backend.sample()[0].memory_used_mib is not None  # the others go on
    with pytest.raises(GpuLostError):
        rig.backend.processes(gpu)


def test_partition_changes_need_an_idle_gpu_and_a_valid_combination(rig: Rig) -> None:
    host = rig.sim()
    hw = rig.backend.inventory()
    offered = [g for g in hw.gpus if rig.backend.partition_state(g.uuid).compute_modes]
    if not offered:
        with pytest.raises(NotSupportedError):
            rig.backend.set_partition_modes(hw.gpus[0].uuid, "CPX", None)
        return
    gpu = offered[0].uuid
    assert (rig.backend.partition_state(gpu).compute, rig.backend.partition_state(gpu).memory) == ("SPX", "NPS1")
    pid = host.start_process(gpu)
    with pytest.raises(InUseError):
        rig.backend.set_partition_modes(gpu, "CPX", None)
    host.end_process(pid)
    with pytest.raises(NotSupportedError):
        rig.backend.set_partition_modes(gpu, "XPX", None)
    state = rig.backend.set_partition_modes(gpu, "CPX", "NPS4")
    assert (state.compute, state.memory) == ("CPX", "NPS4")
    state = rig.backend.set_partition_modes(gpu, "SPX", "NPS1")
    assert (state.compute, state.memory) == ("SPX", "NPS1")
    with pytest.raises(InvalidArgumentError):  # NPS4 needs CPX
        rig.backend.set_partition_modes(gpu, None, "NPS4")
