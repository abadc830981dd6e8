"""A stand-in for the ``pynvml`` module, answering from a simulated host, for tests and benchmarks.

``NvmlBackend(lib=FakeNvml(host))`` runs the real NVML backend code against simulated hardware, so the
NVML backend is tested on every machine, GPU or not. The fake keeps NVML's calling conventions where they
matter to the caller:

- errors are real ``pynvml.NVMLError`` values with NVML's codes (the simulator's error kinds translated
  back), so the backend's mapping of codes to error classes is exercised;
- caller-allocated arrays are filled in place (``nvmlDeviceGetGpuInstancePossiblePlacements``,
  ``nvmlDeviceGetGpuInstances``), and an array too small for what NVML would write raises
  ``BufferOverflow`` where the real library would corrupt memory (the hw-facts pitfall);
- GPU-instance handles are opaque ctypes pointers; handles to destroyed instances are dead;
- structs are pynvml's own ctypes structs where the caller reads fields from them.

Constants, struct types and error classes are pynvml's own (they import without a driver). Functions the
fake does not define are missing, as from an old driver (the backend treats that as NOT_SUPPORTED).
``calls`` counts every call by function name, so tests can hold the backend to what it may read (for
example: telemetry never reads the MIG mode).
"""

from __future__ import annotations

import ctypes
import functools
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import pynvml

from gridmesh.hw.mig import MigProfile
from gridmesh.hw.model import GpuUuid, HardwareError
from gridmesh.hw.nvml import ERROR_KINDS
from gridmesh.hw.simhost import SimComputeInstance, SimGpu, SimGpuInstance, SimHost

F = TypeVar("F", bound=Callable[..., Any])

_CODE_OF: dict[type[HardwareError], int] = {}
for _code, _kind in ERROR_KINDS.items():
    _CODE_OF.setdefault(_kind, _code)

_NO_INSTANCE = 0xFFFFFFFF
_PASSTHROUGH = ("NVML_", "c_nvml", "nvmlEventType", "NVMLError")

# The compute-instance profile that spans a GPU instance of N compute slices.
_CI_PROFILE = {
    1: pynvml.NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE,
    2: pynvml.NVML_COMPUTE_INSTANCE_PROFILE_2_SLICE,
    3: pynvml.NVML_COMPUTE_INSTANCE_PROFILE_3_SLICE,
    4: pynvml.NVML_COMPUTE_INSTANCE_PROFILE_4_SLICE,
    7: pynvml.NVML_COMPUTE_INSTANCE_PROFILE_7_SLICE,
}


class BufferOverflow(AssertionError):
    """The caller's array is smaller than what NVML writes into it: on real hardware, memory corruption."""


def _nvml_error(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)


def _api(fn: F) -> F:
    """Counts the call and turns the simulator's error kinds into NVMLError codes, as the driver answers."""

    @functools.wraps(fn)
    def call(self: FakeNvml, *args: Any) -> Any:
        self.calls[fn.__name__] += 1
        if not self.initialised and fn.__name__ != "nvmlInit":
            raise _nvml_error(pynvml.NVML_ERROR_UNINITIALIZED)
        try:
            return fn(self, *args)
        except HardwareError as err:
            code = next((c for kind, c in _CODE_OF.items() if isinstance(err, kind)), pynvml.NVML_ERROR_UNKNOWN)
            raise _nvml_error(code) from err

    return call  # type: ignore[return-value]


def _deref(ref: Any) -> Any:
    """The object behind ``byref(x)`` or ``pointer(x)``."""
    if hasattr(ref, "contents"):
        return ref.contents
    return getattr(ref, "_obj", ref)


class _Device:
    __slots__ = ("gpu",)

    def __init__(self, gpu: SimGpu) -> None:
        self.gpu = gpu


class _MigDevice:
    __slots__ = ("ci",)

    def __init__(self, ci: SimComputeInstance) -> None:
        self.ci = ci


class _ComputeInstance:
    __slots__ = ("ci",)

    def __init__(self, ci: SimComputeInstance) -> None:
        self.ci = ci


class _Pci:
    def __init__(self, bus_id: str) -> None:
        self.busId = bus_id


class _Process:
    def __init__(self, pid: int, used: int | None, gi: int, ci: int) -> None:
        self.pid = pid
        self.usedGpuMemory = used
        self.gpuInstanceId = gi
        self.computeInstanceId = ci


class _EventSet:
    def __init__(self, cursor: int) -> None:
        self.cursor = cursor
        self.gpus: set[GpuUuid] = set()
        self.freed = False


class _Event:
    def __init__(self, device: _Device, code: int, gi: int | None, ci: int | None) -> None:
        self.device = device
        self.eventType = pynvml.nvmlEventTypeXidCriticalError
        self.eventData = code
        self.gpuInstanceId = _NO_INSTANCE if gi is None else gi
        self.computeInstanceId = _NO_INSTANCE if ci is None else ci


class FakeNvml:
    """The subset of ``pynvml`` the NVML backend uses, over a ``SimHost`` (its NVIDIA GPUs, in order)."""

    NVMLError = pynvml.NVMLError

    def __init__(self, host: SimHost) -> None:
        self.host = host
        self.calls: Counter[str] = Counter()
        self.initialised = 0
        self.shutdowns = 0
        self._devices = [_Device(g) for g in host.gpus if g.device.vendor == "nvidia"]
        self._gis: dict[int, SimGpuInstance] = {}

    def __getattr__(self, name: str) -> Any:
        # pynvml's constants, structs and error classes; any function not defined here is "missing".
        if name.startswith(_PASSTHROUGH):
            return getattr(pynvml, name)
        raise AttributeError(name)

    # --- handles ---------------------------------------------------------------------------------------------

    def _gpu(self, handle: Any) -> SimGpu:
        if not isinstance(handle, _Device):
            raise _nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self.host.answering(handle.gpu.uuid)

    def _gi_handle(self, gi: SimGpuInstance) -> Any:
        self._gis[gi.key] = gi
        return ctypes.cast(ctypes.c_void_p(gi.key), pynvml.c_nvmlGpuInstance_t)

    def _gi(self, handle: Any) -> SimGpuInstance:
        key = ctypes.cast(handle, ctypes.c_void_p).value
        gi = self._gis.get(key or 0)
        if gi is None:
            raise _nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return gi

    def _profile(self, gpu: SimGpu, profile_id: int) -> MigProfile:
        table = self.host.mig_table(gpu.uuid)
        profile = table.profile(profile_id)
        if profile is None:
            raise _nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return profile

    # --- library and devices ---------------------------------------------------------------------------------

    @_api
    def nvmlInit(self) -> None:
        self.initialised += 1

    @_api
    def nvmlShutdown(self) -> None:
        self.shutdowns += 1
        self.initialised -= 1

    @_api
    def nvmlDeviceGetCount(self) -> int:
        return len(self._devices)

    @_api
    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Device:
        if not 0 <= index < len(self._devices):
            raise _nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self._devices[index]

    @_api
    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> _Device:
        for device in self._devices:
            if device.gpu.uuid == uuid:
                return device
        raise _nvml_error(pynvml.NVML_ERROR_NOT_FOUND)

    @_api
    def nvmlDeviceGetName(self, handle: Any) -> str:
        return f"NVIDIA {self._gpu(handle).model.model}"

    @_api
    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        if isinstance(handle, _MigDevice):
            self.host.compute_instance(handle.ci.gi, handle.ci.ci_id)
            return str(handle.ci.uuid)
        return str(self._gpu(handle).uuid)

    @_api
    def nvmlDeviceGetPciInfo(self, handle: Any) -> _Pci:
        return _Pci(self._gpu(handle).device.pci_bus_id)

    @_api
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        gpu = self._gpu(handle)
        sample = self.host.sample(gpu.uuid)
        total = gpu.device.memory_mib * 2**20
        used = (sample.memory_used_mib or 0) * 2**20
        return pynvml.c_nvmlMemory_t(total, total - used, used)

    @_api
    def nvmlDeviceGetCudaComputeCapability(self, handle: Any) -> tuple[int, int]:
        major, _, minor = self._gpu(handle).device.compute_capability.partition(".")
        return int(major), int(minor)

    @_api
    def nvmlDeviceGetNumaNodeId(self, handle: Any) -> int:
        node = self._gpu(handle).device.numa_node
        if node < 0:
            raise _nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return node

    @_api
    def nvmlDeviceGetCpuAffinity(self, handle: Any, words: int) -> Any:
        mask = (ctypes.c_ulonglong * words)()
        for cpu in self._gpu(handle).device.cpu_affinity:
            if cpu // 64 < words:
                mask[cpu // 64] |= 1 << (cpu % 64)
        return mask

    @_api
    def nvmlDeviceGetNvLinkState(self, handle: Any, link: int) -> int:
        peers = self._gpu(handle).device.nvlink_peers
        if not peers:
            raise _nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if link >= len(peers):
            raise _nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return 1

    @_api
    def nvmlDeviceGetNvLinkRemotePciInfo(self, handle: Any, link: int) -> _Pci:
        peers = self._gpu(handle).device.nvlink_peers
        if link >= len(peers):
            raise _nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return _Pci(peers[link])

    # --- telemetry --------------------------------------------------------------------------------------------

    @_api
    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        sample = self.host.sample(self._gpu(handle).uuid)
        if sample.gpu_util_pct is None or sample.mem_bw_util_pct is None:
            raise _nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return pynvml.c_nvmlUtilization_t(int(sample.gpu_util_pct), int(sample.mem_bw_util_pct))

    @_api
    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        return int((self.host.sample(self._gpu(handle).uuid).power_w or 0.0) * 1000)

    @_api
    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        return int(self.host.sample(self._gpu(handle).uuid).temperature_c or 0)

    @_api
    def nvmlDeviceGetClockInfo(self, handle: Any, clock: int) -> int:
        sample = self.host.sample(self._gpu(handle).uuid)
        if clock == pynvml.NVML_CLOCK_SM:
            return sample.sm_clock_mhz or 0
        if clock == pynvml.NVML_CLOCK_MEM:
            return sample.mem_clock_mhz or 0
        raise _nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)

    # --- MIG ----------------------------------------------------------------------------------------------------

    @_api
    def nvmlDeviceGetMigMode(self, handle: Any) -> list[int]:
        gpu = self._gpu(handle)
        if not gpu.device.mig_capable:
            raise _nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return [int(gpu.mig_enabled), int(gpu.mig_pending)]

    @_api
    def nvmlDeviceSetMigMode(self, handle: Any, mode: int) -> int:
        change = self.host.set_mig_mode(self._gpu(handle).uuid, mode == pynvml.NVML_DEVICE_MIG_ENABLE)
        return int(pynvml.NVML_ERROR_RESET_REQUIRED if change.reset_required else pynvml.NVML_SUCCESS)

    @_api
    def nvmlDeviceGetGpuInstanceProfileInfo(self, handle: Any, profile: int, version: int = 2) -> Any:
        gpu = self._gpu(handle)
        if not gpu.device.mig_capable or gpu.table is None:
            raise _nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        wanted = next((name for name in dir(pynvml) if name.startswith("NVML_GPU_INSTANCE_PROFILE_")
                       and getattr(pynvml, name) == profile and not name.endswith("COUNT")), None)
        found = next((p for p in gpu.table.profiles if p.nvml_enum == wanted), None)
        if found is None:
            raise _nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        info = pynvml.c_nvmlGpuInstanceProfileInfo_v2_t()
        info.id = found.profile_id
        info.sliceCount = found.compute_slices
        info.instanceCount = found.max_instances
        info.memorySizeMB = found.memory_mib
        info.name = f"MIG {found.name}".encode()
        return info

    @_api
    def nvmlDeviceGetGpuInstancePossiblePlacements(self, handle: Any, profile_id: int, placements: Any,
                                                   count_ref: Any) -> int:
        profile = self._profile(self._gpu(handle), profile_id)
        count = _deref(count_ref)
        if placements is None:
            count.value = len(profile.starts)
            return int(pynvml.NVML_SUCCESS)
        if len(placements) < len(profile.starts):
            raise BufferOverflow(f"{profile.name} has {len(profile.starts)} placements but the caller's array "
                                 f"holds {len(placements)}: the real library would overwrite memory")
        for i, start in enumerate(profile.starts):
            placements[i].start = start
            placements[i].size = profile.size
        count.value = len(profile.starts)
        return int(pynvml.NVML_SUCCESS)

    @_api
    def nvmlDeviceGetGpuInstances(self, handle: Any, profile_id: int, array: Any, count_ref: Any) -> int:
        gpu = self._gpu(handle)
        if not gpu.mig_enabled:
            raise _nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        self._profile(gpu, profile_id)
        found = [gi for gi in self.host.gpu_instances(gpu.uuid) if gi.profile.profile_id == profile_id]
        count = _deref(count_ref)
        if len(array) < len(found):
            count.value = len(found)
            raise _nvml_error(pynvml.NVML_ERROR_INSUFFICIENT_SIZE)
        for i, gi in enumerate(found):
            array[i] = self._gi_handle(gi)
        count.value = len(found)
        return int(pynvml.NVML_SUCCESS)

    @_api
    def nvmlDeviceGetGpuInstanceById(self, handle: Any, gi_id: int) -> Any:
        return self._gi_handle(self.host.gpu_instance(self._gpu(handle).uuid, gi_id))

    @_api
    def nvmlGpuInstanceGetInfo(self, gi_handle: Any) -> Any:
        gi = self.host.live_gi(self._gi(gi_handle))
        info = pynvml.c_nvmlGpuInstanceInfo_t()
        info.id = gi.gi_id
        info.profileId = gi.profile.profile_id
        info.placement.start = gi.start
        info.placement.size = gi.profile.size
        return info

    @_api
    def nvmlDeviceCreateGpuInstanceWithPlacement(self, handle: Any, profile_id: int, placement_ref: Any) -> Any:
        gpu = self._gpu(handle)
        placement = _deref(placement_ref)
        if int(placement.size) != self._profile(gpu, profile_id).size:
            raise _nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self._gi_handle(self.host.create_gpu_instance(gpu.uuid, profile_id, int(placement.start)))

    @_api
    def nvmlGpuInstanceDestroy(self, gi_handle: Any) -> int:
        self.host.destroy_gpu_instance(self._gi(gi_handle))
        return int(pynvml.NVML_SUCCESS)

    @_api
    def nvmlGpuInstanceGetComputeInstanceProfileInfo(self, gi_handle: Any, profile: int, engine: int,
                                                     version: int = 2) -> Any:
        gi = self.host.live_gi(self._gi(gi_handle))
        if _CI_PROFILE.get(gi.profile.compute_slices) != profile:
            raise _nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        info = pynvml.c_nvmlComputeInstanceProfileInfo_v2_t()
        info.id = profile
        info.sliceCount = gi.profile.compute_slices
        info.instanceCount = 1
        return info

    @_api
    def nvmlGpuInstanceCreateComputeInstance(self, gi_handle: Any, profile_id: int) -> _ComputeInstance:
        gi = self._gi(gi_handle)
        if _CI_PROFILE.get(gi.profile.compute_slices) != profile_id:
            raise _nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return _ComputeInstance(self.host.create_compute_instance(gi))

    @_api
    def nvmlGpuInstanceGetComputeInstanceById(self, gi_handle: Any, ci_id: int) -> _ComputeInstance:
        return _ComputeInstance(self.host.compute_instance(self._gi(gi_handle), ci_id))

    @_api
    def nvmlComputeInstanceDestroy(self, ci_handle: Any) -> int:
        if not isinstance(ci_handle, _ComputeInstance):
            raise _nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        self.host.destroy_compute_instance(ci_handle.ci)
        return int(pynvml.NVML_SUCCESS)

    @_api
    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Any) -> int:
        gpu = self._gpu(handle)
        return gpu.table.compute_slices if gpu.mig_enabled and gpu.table is not None else 0

    @_api
    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Any, index: int) -> _MigDevice:
        gpu = self._gpu(handle)
        cis = [ci for gi in self.host.gpu_instances(gpu.uuid) for _, ci in sorted(gi.cis.items())]
        if not 0 <= index < len(cis):
            raise _nvml_error(pynvml.NVML_ERROR_NOT_FOUND)
        return _MigDevice(cis[index])

    @_api
    def nvmlDeviceGetGpuInstanceId(self, mig: Any) -> int:
        if not isinstance(mig, _MigDevice) or not mig.ci.alive:
            raise _nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return mig.ci.gi.gi_id

    @_api
    def nvmlDeviceGetComputeInstanceId(self, mig: Any) -> int:
        if not isinstance(mig, _MigDevice) or not mig.ci.alive:
            raise _nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return mig.ci.ci_id

    # --- processes and health -----------------------------------------------------------------------------------

    @_api
    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[_Process]:
        return [
            _Process(p.pid, None if p.used_mib is None else p.used_mib * 2**20,
                     _NO_INSTANCE if p.gpu_instance_id is None else p.gpu_instance_id,
                     _NO_INSTANCE if p.compute_instance_id is None else p.compute_instance_id)
            for p in self.host.gpu_processes(self._gpu(handle).uuid)
        ]

    @_api
    def nvmlDeviceGetFieldValues(self, handle: Any, field_ids: list[int]) -> Any:
        gpu = self._gpu(handle)
        known: dict[int, tuple[int, int]] = {
            pynvml.NVML_FI_DEV_ECC_DBE_VOL_TOTAL: (pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG, gpu.ecc_uncorrectable),
            pynvml.NVML_FI_DEV_REMAPPED_UNC: (pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, gpu.remapped_uncorrectable),
            pynvml.NVML_FI_DEV_REMAPPED_PENDING: (pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, int(gpu.remap_pending)),
            pynvml.NVML_FI_DEV_REMAPPED_FAILURE: (pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, int(gpu.remap_failed)),
            pynvml.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION: (pynvml.NVML_VALUE_TYPE_UNSIGNED_INT,
                                                         int(gpu.recovery_action)),
        }
        values = (pynvml.c_nvmlFieldValue_t * len(field_ids))()
        for i, field_id in enumerate(field_ids):
            values[i].fieldId = field_id
            if field_id not in known:
                values[i].nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
                continue
            kind, value = known[field_id]
            values[i].nvmlReturn = pynvml.NVML_SUCCESS
            values[i].valueType = kind
            if kind == pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG:
                values[i].value.ullVal = value
            else:
                values[i].value.uiVal = value
        return values

    @_api
    def nvmlEventSetCreate(self) -> _EventSet:
        return _EventSet(len(self.host.xids))

    @_api
    def nvmlDeviceGetSupportedEventTypes(self, handle: Any) -> int:
        self._gpu(handle)
        return int(pynvml.nvmlEventTypeXidCriticalError | pynvml.nvmlEventTypeDoubleBitEccError)

    @_api
    def nvmlDeviceRegisterEvents(self, handle: Any, types: int, events: _EventSet) -> None:
        events.gpus.add(self._gpu(handle).uuid)

    @_api
    def nvmlEventSetWait_v2(self, events: _EventSet, timeout_ms: int) -> _Event:
        # Never sleeps: a simulated event either happened already or does not come in this call.
        while events.cursor < len(self.host.xids):
            xid = self.host.xids[events.cursor]
            events.cursor += 1
            if xid.gpu in events.gpus:
                device = next(d for d in self._devices if d.gpu.uuid == xid.gpu)
                return _Event(device, xid.code, xid.gpu_instance_id, xid.compute_instance_id)
        raise _nvml_error(pynvml.NVML_ERROR_TIMEOUT)

    @_api
    def nvmlEventSetFree(self, events: _EventSet) -> None:
        events.freed = True
