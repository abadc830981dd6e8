"""MIG facts: the profile tables, the placement arithmetic, and the simulator's driver-like behaviour."""

from __future__ import annotations

import ctypes

import pynvml
import pytest

from gridmesh.hw.catalog import hardware_reading
from gridmesh.hw.fake_nvml import BufferOverflow, FakeNvml
from gridmesh.hw.mig import MEMORY_SLICES, MigTable, Placed, headroom, mig_table, mig_tables, pack, pack_most, why_not
from gridmesh.hw.model import (
    GpuLostError,
    HardwareError,
    InsufficientResourcesError,
    InUseError,
    InvalidArgumentError,
    NoPermissionError,
    NotFoundError,
    NotSupportedError,
    ResetRequiredError,
)
from gridmesh.hw.nvml import ERROR_KINDS, NvmlBackend
from gridmesh.hw.simhost import SimHost, gpu_instance_id
from gridmesh.hw.simulator import parse_host_description


def h100() -> MigTable:
    table = mig_table("NVIDIA H100 80GB HBM3")
    assert table is not None
    return table


def mig_host(count: int = 1, model: str = "H100 80GB HBM3") -> SimHost:
    return SimHost(parse_host_description(
        {"hostname": "mig", "cpu_count": 8, "gpus": [{"model": model, "count": count, "mig_enabled": True}]}, "t"))


def test_the_h100_table_is_the_reading_exactly() -> None:
    reading = hardware_reading("H100 80GB HBM3")
    assert reading is not None
    table = h100()
    assert table.read_from_hardware
    assert (table.memory_slices, table.compute_slices) == (reading["memory_slices"], reading["compute_slices"])
    assert [(p.profile_id, p.name, p.compute_slices, p.memory_mib, p.max_instances, list(p.starts), p.size)
            for p in table.profiles] == [
        (p["profile_id"], p["name"], p["slice_count"], p["memory_mib"], p["max_instances"], p["placement_starts"],
         p["placement_size"]) for p in reading["gpu_instance_profiles"]]
    # The README's table, spelled out: a regression in the data file shows here by name.
    assert {p.name: (p.profile_id, p.compute_slices, p.max_instances, p.starts, p.size) for p in table.profiles} == {
        "1g.10gb": (19, 1, 7, (0, 1, 2, 3, 4, 5, 6), 1),
        "1g.10gb+me": (20, 1, 1, (0, 1, 2, 3, 4, 5, 6), 1),
        "1g.20gb": (15, 1, 4, (0, 2, 4, 6), 2),
        "2g.20gb": (14, 2, 3, (0, 2, 4), 2),
        "3g.40gb": (9, 3, 2, (0, 4), 4),
        "4g.40gb": (5, 4, 1, (0,), 4),
        "7g.80gb": (0, 7, 1, (0,), 8),
    }


@pytest.mark.parametrize(
    ("model", "names"),
    [
        ("A100-SXM4-40GB", ["7g.40gb", "4g.20gb", "3g.20gb", "2g.10gb", "1g.10gb", "1g.5gb", "1g.5gb+me"]),
        ("A100-SXM4-80GB", ["7g.80gb", "4g.40gb", "3g.40gb", "2g.20gb", "1g.20gb", "1g.10gb", "1g.10gb+me"]),
        ("H200", ["7g.141gb", "4g.71gb", "3g.71gb", "2g.35gb", "1g.35gb", "1g.18gb", "1g.18gb+me"]),
    ],
)
def test_documented_tables_are_marked_and_share_the_h100_shapes(model: str, names: list[str]) -> None:
    table = mig_table(model)
    assert table is not None
    assert not table.read_from_hardware
    assert "documented, not read" in table.source
    assert list(table.names()) == names
    assert [(p.profile_id, p.starts, p.size, p.max_instances) for p in table.profiles] == [
        (p.profile_id, p.starts, p.size, p.max_instances) for p in h100().profiles]
    assert set(mig_tables()) == {"H100 80GB HBM3", "A100-SXM4-40GB", "A100-SXM4-80GB", "H200"}
    assert mig_table("L4") is None


@pytest.mark.parametrize(("big_start", "small_starts"), [(0, [4, 5, 6]), (4, [0, 1, 2, 3])])
def test_readme_case_on_the_simulator(big_start: int, small_starts: list[int]) -> None:
    # 3g.40gb at 0 leaves room for three 1g.10gb (4, 5, 6: slice 7 is no 1g start); at 4 for four (0-3).
    host = mig_host()
    host.create_gpu_instance(0, 9, big_start)
    made = []
    for start in range(MEMORY_SLICES):
        try:
            host.create_gpu_instance(0, 19, start)
            made.append(start)
        except (InsufficientResourcesError, InvalidArgumentError):
            pass
    assert made == small_starts


def test_readme_case_in_the_placement_arithmetic() -> None:
    table = h100()
    three, one = table.profile("3g.40gb"), table.profile("1g.10gb")
    assert three is not None and one is not None
    assert pack_most(table, [Placed(three, 0)], [(one, None)] * 4) == (4, 5, 6, None)
    assert pack(table, [Placed(three, 4)], [(one, None)] * 4) == (0, 1, 2, 3)
    # Choosing the 3g.40gb's start leaves the most room: start 4, so four 1g.10gb still fit beside it.
    assert pack(table, [], [(three, None)]) == (4,)
    assert pack(table, [], [(three, None), (one, None), (one, None), (one, None), (one, None)]) == (4, 0, 1, 2, 3)
    assert headroom(table, [Placed(three, 4)]) > headroom(table, [Placed(three, 0)])
    assert why_not(table, [Placed(three, 4)], one, 5) == "1g.10gb at 5 overlaps 3g.40gb at 4"
    assert "allowed starts: [0, 4]" in (why_not(table, [], three, 2) or "")


def test_gpu_instance_ids_follow_placement_not_creation_order() -> None:
    host = mig_host()
    ids = [host.create_gpu_instance(0, 19, start).gi_id for start in (6, 0, 3)]
    assert ids == [13, 7, 10]
    assert host.create_gpu_instance(0, 14, 4).gi_id == 5
    assert [gpu_instance_id(8, s, size) for s, size in ((0, 8), (0, 4), (4, 4), (2, 2))] == [0, 1, 2, 4]


def test_handles_die_when_their_instance_is_destroyed_even_if_the_id_returns() -> None:
    host = mig_host()
    old = host.create_gpu_instance(0, 9, 4)
    host.destroy_gpu_instance(old)
    new = host.create_gpu_instance(0, 9, 4)
    assert new.gi_id == old.gi_id
    with pytest.raises(InvalidArgumentError, match="dead"):
        host.create_compute_instance(old)
    with pytest.raises(InvalidArgumentError):
        host.destroy_gpu_instance(old)
    host.create_compute_instance(new)
    with pytest.raises(InUseError):  # compute instances first
        host.destroy_gpu_instance(new)


def test_dead_handles_through_the_nvml_surface() -> None:
    host = mig_host()
    fake = FakeNvml(host)
    backend = NvmlBackend(lib=fake)
    gpu = backend.inventory().gpus[0].uuid
    made = backend.create_instance(gpu, 9, 0)
    device = fake.nvmlDeviceGetHandleByIndex(0)
    handle = fake.nvmlDeviceGetGpuInstanceById(device, made.gpu_instance_id)
    backend.destroy_instance(gpu, made.gpu_instance_id)
    backend.create_instance(gpu, 9, 0)  # same placement, same id
    with pytest.raises(pynvml.NVMLError) as caught:
        fake.nvmlGpuInstanceGetInfo(handle)
    assert caught.value.value == pynvml.NVML_ERROR_INVALID_ARGUMENT
    backend.close()


def test_placements_arrays_are_sized_for_every_memory_slice() -> None:
    # The hw-facts pitfall: 1g.10gb+me has instanceCount 1 but 7 placements. An array sized by instanceCount
    # overflows (a segfault on real hardware; BufferOverflow here); the backend sizes by the 8 memory slices.
    host = mig_host()
    fake = FakeNvml(host)
    backend = NvmlBackend(lib=fake)
    gpu = backend.inventory().gpus[0].uuid
    assert backend.mig_table(gpu).profile("1g.10gb+me").starts == (0, 1, 2, 3, 4, 5, 6)  # type: ignore[union-attr]
    device = fake.nvmlDeviceGetHandleByIndex(0)
    too_small = (pynvml.c_nvmlGpuInstancePlacement_t * 1)()
    with pytest.raises(BufferOverflow):
        fake.nvmlDeviceGetGpuInstancePossiblePlacements(device, 20, too_small, ctypes.byref(ctypes.c_uint(1)))
    backend.close()


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES, InsufficientResourcesError),
        (pynvml.NVML_ERROR_IN_USE, InUseError),
        (pynvml.NVML_ERROR_NOT_SUPPORTED, NotSupportedError),
        (pynvml.NVML_ERROR_RESET_REQUIRED, ResetRequiredError),
        (pynvml.NVML_ERROR_NOT_FOUND, NotFoundError),
        (pynvml.NVML_ERROR_INVALID_ARGUMENT, InvalidArgumentError),
        (pynvml.NVML_ERROR_GPU_IS_LOST, GpuLostError),
        (pynvml.NVML_ERROR_NO_PERMISSION, NoPermissionError),
    ],
)
def test_every_nvml_error_kind_has_its_own_class(code: int, kind: type[HardwareError]) -> None:
    assert ERROR_KINDS[code] is kind
    assert issubclass(kind, HardwareError)


def test_a_mig_mode_change_takes_effect_at_once_where_the_platform_allows() -> None:
    host = SimHost(parse_host_description({"gpus": [{"model": "A100-SXM4-80GB"}]}, "t"), mig_change_needs_reset=False)
    change = host.set_mig_mode(0, True)
    assert (change.enabled, change.reset_required) == (True, False)
    assert host.create_gpu_instance(0, 19, 0).profile.name == "1g.10gb"
