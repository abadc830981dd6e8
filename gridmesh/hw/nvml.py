"""The real GPUs, through NVML (``import pynvml``, distribution ``nvidia-ml-py``).

Rules:
- Reading never changes a GPU. The only calls that change one are ``set_mig_mode``, ``create_instance``
  and ``destroy_instance``, made by the MIG reconciler and the health check's instance re-creation. The
  read-only paths (inventory, telemetry, MIG state and profiles, processes, health) are what the ``gpu``
  tests run on real hardware. Nothing here resets a GPU or touches clocks, power or ECC settings.
- Every ``pynvml.NVMLError`` becomes the ``HardwareError`` subclass for its kind (``ERROR_KINDS``), with a
  message naming the call and the GPU: "NVML nvmlDeviceGetUUID failed for GPU 3: GPU is lost".
- A capability the GPU or driver does not have (NOT_SUPPORTED, or a function missing from an old driver)
  is an answer, not an error: no NUMA information reads as -1, no MIG mode as "not MIG capable", no GPU
  utilisation (a GPU in MIG mode) as None.
- Model names are reported under the catalog's canonical name where the catalog knows the GPU, so that
  requests naming a model match real and simulated hosts alike; unknown GPUs keep NVML's name.
- ``nvmlDeviceGetGpuInstancePossiblePlacements`` fills a caller-allocated array: it is sized for every
  memory slice (8), never by the profile's instance count (that overflowed and crashed a process on a real
  H100: profile 1g.10gb+me has 1 instance but 7 placements).
- The library is injectable (``NvmlBackend(lib=...)``) so that this code runs unchanged against
  ``gridmesh.hw.fake_nvml.FakeNvml`` in tests; by default it is the ``pynvml`` module.
- Costs (H100, Python binding): memory info 7.8 us, utilisation 3.5, power 2.6, processes 9.7, MIG mode
  158. Telemetry therefore never reads the MIG mode; inventory does (it runs every status report).
"""

from __future__ import annotations

import contextlib
import ctypes
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pynvml

from gridmesh.hw.backend import local_cpu_count, local_memory_mib
from gridmesh.hw.catalog import find_model
from gridmesh.hw.mig import MEMORY_SLICES, MigProfile, MigTable
from gridmesh.hw.model import (
    GpuDevice,
    GpuInstance,
    GpuLostError,
    GpuProcess,
    GpuSample,
    GpuUuid,
    HardwareError,
    HealthReading,
    HostHardware,
    InsufficientResourcesError,
    InUseError,
    InvalidArgumentError,
    MigModeChange,
    MigState,
    MigUuid,
    NoPermissionError,
    NotFoundError,
    NotSupportedError,
    PartitionState,
    RecoveryAction,
    ResetRequiredError,
    XidEvent,
)

# Answers that mean "this GPU or driver cannot tell you", as opposed to a failure.
_UNSUPPORTED = (pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)

ERROR_KINDS: Mapping[int, type[HardwareError]] = {
    pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES: InsufficientResourcesError,
    pynvml.NVML_ERROR_IN_USE: InUseError,
    pynvml.NVML_ERROR_NOT_SUPPORTED: NotSupportedError,
    pynvml.NVML_ERROR_FUNCTION_NOT_FOUND: NotSupportedError,
    pynvml.NVML_ERROR_RESET_REQUIRED: ResetRequiredError,
    pynvml.NVML_ERROR_NOT_FOUND: NotFoundError,
    pynvml.NVML_ERROR_INVALID_ARGUMENT: InvalidArgumentError,
    pynvml.NVML_ERROR_GPU_IS_LOST: GpuLostError,
    pynvml.NVML_ERROR_NO_PERMISSION: NoPermissionError,
}
"""NVML return codes -> the ``HardwareError`` subclass every backend raises for that kind of failure."""

# NVML says "not in a MIG instance" with all bits set.
_NO_INSTANCE = 0xFFFFFFFF

SYSFS_PCI_DEVICES = Path("/sys/bus/pci/devices")
"""Where NUMA nodes are read when NVML cannot say (``nvmlDeviceGetNumaNodeId`` is NOT_SUPPORTED on an H100)."""

# The GPU-instance profile constants, by value, for naming what was read (NVML_GPU_INSTANCE_PROFILE_1_SLICE).
_GI_PROFILE_ENUMS = {
    getattr(pynvml, name): name
    for name in dir(pynvml)
    if name.startswith("NVML_GPU_INSTANCE_PROFILE_") and name != "NVML_GPU_INSTANCE_PROFILE_COUNT"
}

# A compute instance spanning a whole GPU instance of N compute slices uses this compute-instance profile.
_CI_PROFILE_FOR_SLICES = {
    1: pynvml.NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE,
    2: pynvml.NVML_COMPUTE_INSTANCE_PROFILE_2_SLICE,
    3: pynvml.NVML_COMPUTE_INSTANCE_PROFILE_3_SLICE,
    4: pynvml.NVML_COMPUTE_INSTANCE_PROFILE_4_SLICE,
    6: pynvml.NVML_COMPUTE_INSTANCE_PROFILE_6_SLICE,
    7: pynvml.NVML_COMPUTE_INSTANCE_PROFILE_7_SLICE,
    8: pynvml.NVML_COMPUTE_INSTANCE_PROFILE_8_SLICE,
}

# Health fields, read in one nvmlDeviceGetFieldValues call.
_HEALTH_FIELDS = (
    pynvml.NVML_FI_DEV_ECC_DBE_VOL_TOTAL,
    pynvml.NVML_FI_DEV_REMAPPED_UNC,
    pynvml.NVML_FI_DEV_REMAPPED_PENDING,
    pynvml.NVML_FI_DEV_REMAPPED_FAILURE,
    pynvml.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION,
)

_XID_HISTORY = 64
_EVENTS_PER_DRAIN = 1000


def _text(value: Any) -> str:
    # nvidia-ml-py decodes most strings, but older releases and some struct fields hand back bytes.
    return value.decode() if isinstance(value, bytes) else str(value)


_CODE_NAMES = {
    getattr(pynvml, name): name[len("NVML_ERROR_"):].replace("_", " ").lower()
    for name in dir(pynvml)
    if name.startswith("NVML_ERROR_")
}


def _error(err: pynvml.NVMLError, message: str) -> HardwareError:
    code = getattr(err, "value", -1)
    kind = ERROR_KINDS.get(code, HardwareError)
    text = str(err)
    if text.startswith("NVML Error with code"):
        # pynvml names only some codes without the library's help; name the rest ourselves.
        text = _CODE_NAMES.get(code, text)
    return kind(f"{message}: {text}")


def _field_value(field: Any) -> int | float | None:
    if int(field.nvmlReturn) != pynvml.NVML_SUCCESS:
        return None
    kind = int(field.valueType)
    value = field.value
    if kind == pynvml.NVML_VALUE_TYPE_DOUBLE:
        return float(value.dVal)
    if kind == pynvml.NVML_VALUE_TYPE_UNSIGNED_INT:
        return int(value.uiVal)
    if kind == pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG:
        return int(value.ulVal)
    if kind == pynvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG:
        return int(value.sllVal)
    if kind == pynvml.NVML_VALUE_TYPE_SIGNED_INT:
        return int(value.siVal)
    if kind == pynvml.NVML_VALUE_TYPE_UNSIGNED_SHORT:
        return int(value.usVal)
    return int(value.ullVal)


def _profile_name(raw: Any, slices: int, memory_mib: int) -> str:
    name = _text(raw).strip() if raw else ""
    # NVML's v2 profile info names profiles the way nvidia-smi prints them, with a "MIG " prefix.
    if name.startswith("MIG "):
        name = name[4:]
    return name or f"{slices}g.{round(memory_mib / 1024)}gb"


def sysfs_numa_node(pci_bus_id: str, root: Path | None = None) -> int:
    """The NUMA node the kernel gives a PCI device (``00000000:1B:00.0``), -1 when it does not say."""
    domain, _, rest = pci_bus_id.partition(":")
    name = f"{domain[-4:]}:{rest}".lower()
    try:
        return max(int((root or SYSFS_PCI_DEVICES).joinpath(name, "numa_node").read_text().strip()), -1)
    except (OSError, ValueError):
        return -1


class NvmlBackend:
    """A ``GpuBackend`` over the host's real NVIDIA GPUs. Opening it initialises NVML."""

    name = "nvml"

    def __init__(self, lib: Any = None) -> None:
        self._nv: Any = pynvml if lib is None else lib
        self._open = False
        self._call("nvmlInit", None, self._nv.nvmlInit)
        self._open = True
        self._handles: dict[GpuUuid, tuple[int, Any]] = {}  # uuid -> (index, device handle)
        self._order: list[GpuUuid] = []  # inventory order
        self._seen: dict[int, GpuDevice] = {}  # last good read of each index
        self._tables: dict[GpuUuid, MigTable] = {}
        self._events: Any = None
        self._events_tried = False
        self._events_state = "not registered"
        self._event_owner: dict[Any, GpuUuid] = {}
        self._xids: dict[GpuUuid, list[XidEvent]] = {}
        self._seq = 0

    # --- calling NVML

    def _call(self, what: str, index: int | None, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except pynvml.NVMLError as err:
            target = "" if index is None else f" for GPU {index}"
            raise _error(err, f"NVML {what} failed{target}") from err

    def _optional(self, what: str, index: int, fn: Callable[..., Any] | None, *args: Any) -> Any | None:
        """Like ``_call``, but None where the GPU or driver does not support the query."""
        if fn is None:  # an nvidia-ml-py too old to know the function
            return None
        try:
            return fn(*args)
        except pynvml.NVMLError as err:
            if getattr(err, "value", None) in _UNSUPPORTED:
                return None
            raise _error(err, f"NVML {what} failed for GPU {index}") from err

    def _fn(self, name: str) -> Callable[..., Any] | None:
        return getattr(self._nv, name, None)

    def _require_open(self) -> None:
        if not self._open:
            raise HardwareError("NVML backend used after close()")

    def _handle(self, gpu: GpuUuid) -> tuple[int, Any]:
        self._require_open()
        known = self._handles.get(gpu)
        if known is not None:
            return known
        self.inventory()
        known = self._handles.get(gpu)
        if known is None:
            raise NotFoundError(f"NVML: no GPU {gpu} on this host")
        return known

    # --- inventory

    def device_count(self) -> int:
        """How many GPUs NVML sees."""
        self._require_open()
        return int(self._call("nvmlDeviceGetCount", None, self._nv.nvmlDeviceGetCount))

    def inventory(self) -> HostHardware:
        self._require_open()
        devices = []
        for index in range(self.device_count()):
            try:
                devices.append(self._device(index))
            except GpuLostError:
                # A GPU that was seen and then fell off the bus stays in the inventory under the identity read
                # before, so its UUID does not vanish from the controller; health() says it is unreachable.
                if index not in self._seen:
                    raise
                devices.append(self._seen[index])
        self._order = [d.uuid for d in devices]
        if not self._events_tried:
            # XIDs are collected from the first inventory on (the agent reads one at start-up).
            self._register_events()
        return HostHardware(
            hostname=socket.gethostname(),
            backend=self.name,
            gpus=tuple(devices),
            cpu_count=local_cpu_count(),
            memory_mib=local_memory_mib(),
        )

    def _device(self, index: int) -> GpuDevice:
        nv = self._nv
        handle = self._call("nvmlDeviceGetHandleByIndex", index, nv.nvmlDeviceGetHandleByIndex, index)
        name = _text(self._call("nvmlDeviceGetName", index, nv.nvmlDeviceGetName, handle))
        uuid = GpuUuid(_text(self._call("nvmlDeviceGetUUID", index, nv.nvmlDeviceGetUUID, handle)))
        self._handles[uuid] = (index, handle)
        pci = self._call("nvmlDeviceGetPciInfo", index, nv.nvmlDeviceGetPciInfo, handle)
        memory = self._call("nvmlDeviceGetMemoryInfo", index, nv.nvmlDeviceGetMemoryInfo, handle)
        major, minor = self._call(
            "nvmlDeviceGetCudaComputeCapability", index, nv.nvmlDeviceGetCudaComputeCapability, handle
        )
        numa = self._optional("nvmlDeviceGetNumaNodeId", index, self._fn("nvmlDeviceGetNumaNodeId"), handle)
        mig = self._optional("nvmlDeviceGetMigMode", index, self._fn("nvmlDeviceGetMigMode"), handle)
        bus_id = _text(pci.busId)
        mig_enabled = mig is not None and int(mig[0]) == pynvml.NVML_DEVICE_MIG_ENABLE

        known = find_model(name)
        device = GpuDevice(
            index=index,
            uuid=uuid,
            model=known.model if known is not None else name,
            memory_mib=int(memory.total) // 2**20,
            compute_capability=f"{int(major)}.{int(minor)}",
            pci_bus_id=bus_id,
            # NVML answers -1 itself on platforms without NUMA; keep anything below that as unknown too. Where
            # NVML cannot say (an H100 answers NOT_SUPPORTED), the kernel knows the PCI device's node.
            numa_node=max(int(numa), -1) if numa is not None else sysfs_numa_node(bus_id),
            mig_capable=mig is not None,
            # [current, pending]: a pending change needs a GPU reset and is not in effect yet.
            mig_enabled=mig_enabled,
            cpu_affinity=self._cpu_affinity(index, handle),
            nvlink_peers=self._nvlink_peers(index, handle),
            mig_instances=self._instances(uuid, index, handle) if mig_enabled else (),
        )
        self._seen[index] = device
        return device

    def _cpu_affinity(self, index: int, handle: Any) -> tuple[int, ...]:
        words = (local_cpu_count() + 63) // 64
        mask = self._optional("nvmlDeviceGetCpuAffinity", index, self._fn("nvmlDeviceGetCpuAffinity"), handle, words)
        if mask is None:
            return ()
        # One 64-bit word per 64 CPUs, lowest CPUs in the first word.
        return tuple(w * 64 + bit for w, word in enumerate(mask) for bit in range(64) if int(word) >> bit & 1)

    def _nvlink_peers(self, index: int, handle: Any) -> tuple[str, ...]:
        state_fn = self._fn("nvmlDeviceGetNvLinkState")
        remote_fn = self._fn("nvmlDeviceGetNvLinkRemotePciInfo")
        if state_fn is None or remote_fn is None:
            return ()
        peers = set()
        for link in range(int(getattr(self._nv, "NVML_NVLINK_MAX_LINKS", 18))):
            try:
                active = state_fn(handle, link)
                if active:
                    peers.add(_text(remote_fn(handle, link).busId))
            except pynvml.NVMLError as err:
                # A PCIe card answers NOT_SUPPORTED on link 0; past the last link NVML says INVALID_ARGUMENT.
                if getattr(err, "value", None) in (*_UNSUPPORTED, pynvml.NVML_ERROR_INVALID_ARGUMENT):
                    break
                raise _error(err, f"NVML nvmlDeviceGetNvLinkState failed for GPU {index} link {link}") from err
        return tuple(sorted(peers))

    # --- telemetry

    def sample(self) -> tuple[GpuSample, ...]:
        self._require_open()
        if not self._order:
            self.inventory()
        return tuple(self._sample(gpu) for gpu in self._order)

    def _sample(self, gpu: GpuUuid) -> GpuSample:
        nv = self._nv
        index, handle = self._handles[gpu]
        try:
            memory = self._optional("nvmlDeviceGetMemoryInfo", index, nv.nvmlDeviceGetMemoryInfo, handle)
            util = self._optional("nvmlDeviceGetUtilizationRates", index, nv.nvmlDeviceGetUtilizationRates, handle)
            power = self._optional("nvmlDeviceGetPowerUsage", index, nv.nvmlDeviceGetPowerUsage, handle)
            temp = self._optional("nvmlDeviceGetTemperature", index, nv.nvmlDeviceGetTemperature, handle,
                                  pynvml.NVML_TEMPERATURE_GPU)
            sm = self._optional("nvmlDeviceGetClockInfo", index, nv.nvmlDeviceGetClockInfo, handle,
                                pynvml.NVML_CLOCK_SM)
            mem_clock = self._optional("nvmlDeviceGetClockInfo", index, nv.nvmlDeviceGetClockInfo, handle,
                                       pynvml.NVML_CLOCK_MEM)
        except HardwareError:
            # A GPU that stopped answering gives an empty sample; health() reports why.
            return GpuSample(gpu, None, None, None, None, None, None, None, None)
        return GpuSample(
            gpu=gpu,
            gpu_util_pct=None if util is None else float(util.gpu),
            mem_bw_util_pct=None if util is None else float(util.memory),
            memory_used_mib=None if memory is None else int(memory.used) // 2**20,
            memory_free_mib=None if memory is None else int(memory.free) // 2**20,
            power_w=None if power is None else int(power) / 1000.0,
            temperature_c=None if temp is None else float(temp),
            sm_clock_mhz=None if sm is None else int(sm),
            mem_clock_mhz=None if mem_clock is None else int(mem_clock),
        )

    # --- MIG

    def mig_table(self, gpu: GpuUuid) -> MigTable:
        cached = self._tables.get(gpu)
        if cached is not None:
            return cached
        index, handle = self._handle(gpu)
        nv = self._nv
        info_fn = self._fn("nvmlDeviceGetGpuInstanceProfileInfo")
        profiles: list[MigProfile] = []
        if info_fn is not None:
            for value in range(int(nv.NVML_GPU_INSTANCE_PROFILE_COUNT)):
                try:
                    info = info_fn(handle, value)
                except pynvml.NVMLError as err:
                    if getattr(err, "value", None) in (*_UNSUPPORTED, pynvml.NVML_ERROR_INVALID_ARGUMENT):
                        continue  # a profile this GPU does not have
                    raise _error(err, f"NVML nvmlDeviceGetGpuInstanceProfileInfo failed for GPU {index}") from err
                starts, size = self._placements(index, handle, int(info.id))
                memory_mib = int(info.memorySizeMB)
                profiles.append(MigProfile(
                    profile_id=int(info.id),
                    name=_profile_name(getattr(info, "name", b""), int(info.sliceCount), memory_mib),
                    compute_slices=int(info.sliceCount),
                    memory_mib=memory_mib,
                    max_instances=int(info.instanceCount),
                    starts=starts,
                    size=size,
                    nvml_enum=_GI_PROFILE_ENUMS.get(value, str(value)),
                ))
        if not profiles:
            raise NotSupportedError(f"NVML: GPU {index} ({gpu}) reports no MIG profiles")
        profiles.sort(key=lambda p: p.profile_id)
        model = next((d.model for d in self._seen.values() if d.uuid == gpu), str(gpu))
        table = MigTable(
            model=model,
            memory_slices=max(max(p.starts) + p.size for p in profiles),
            compute_slices=max(p.compute_slices for p in profiles),
            profiles=tuple(profiles),
            read_from_hardware=True,
            source=f"read from GPU {index} through NVML",
        )
        self._tables[gpu] = table
        return table

    def _placements(self, index: int, handle: Any, profile_id: int) -> tuple[tuple[int, ...], int]:
        fn = self._nv.nvmlDeviceGetGpuInstancePossiblePlacements
        what = "nvmlDeviceGetGpuInstancePossiblePlacements"
        # Ask for the count first (NULL array); whatever it says, never allocate fewer than one entry per memory
        # slice: the function writes every placement it has, whatever the array's size (see the module rules).
        count = ctypes.c_uint(0)
        try:
            fn(handle, profile_id, None, ctypes.byref(count))
        except pynvml.NVMLError:
            count.value = 0
        capacity = max(int(count.value), MEMORY_SLICES)
        array = (pynvml.c_nvmlGpuInstancePlacement_t * capacity)()
        count = ctypes.c_uint(capacity)
        self._call(what, index, fn, handle, profile_id, array, ctypes.byref(count))
        found = [array[i] for i in range(min(int(count.value), capacity))]
        if not found:
            return (), 0
        return tuple(sorted(int(p.start) for p in found)), int(found[0].size)

    def mig_state(self, gpu: GpuUuid) -> MigState:
        index, handle = self._handle(gpu)
        mode = self._optional("nvmlDeviceGetMigMode", index, self._fn("nvmlDeviceGetMigMode"), handle)
        if mode is None:
            return MigState(gpu=gpu, capable=False, enabled=False, pending=False)
        enabled = int(mode[0]) == pynvml.NVML_DEVICE_MIG_ENABLE
        pending = int(mode[1]) == pynvml.NVML_DEVICE_MIG_ENABLE
        instances = self._instances(gpu, index, handle) if enabled else ()
        return MigState(gpu=gpu, capable=True, enabled=enabled, pending=pending, instances=instances)

    def _instances(self, gpu: GpuUuid, index: int, handle: Any) -> tuple[GpuInstance, ...]:
        nv = self._nv
        try:
            table = self.mig_table(gpu)
        except NotSupportedError:
            return ()
        found: dict[int, tuple[MigProfile, int, int]] = {}
        for profile in table.profiles:
            capacity = max(profile.max_instances, MEMORY_SLICES)
            array = (pynvml.c_nvmlGpuInstance_t * capacity)()
            count = ctypes.c_uint(capacity)
            self._call("nvmlDeviceGetGpuInstances", index, nv.nvmlDeviceGetGpuInstances, handle,
                       profile.profile_id, array, ctypes.byref(count))
            for i in range(min(int(count.value), capacity)):
                info = self._call("nvmlGpuInstanceGetInfo", index, nv.nvmlGpuInstanceGetInfo, array[i])
                found[int(info.id)] = (profile, int(info.placement.start), int(info.placement.size))
        devices: dict[int, list[tuple[int, str]]] = {}
        for slot in range(int(self._call("nvmlDeviceGetMaxMigDeviceCount", index,
                                         nv.nvmlDeviceGetMaxMigDeviceCount, handle))):
            try:
                mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except pynvml.NVMLError as err:
                if getattr(err, "value", None) in (pynvml.NVML_ERROR_NOT_FOUND, pynvml.NVML_ERROR_INVALID_ARGUMENT):
                    continue  # no MIG device in this slot
                raise _error(err, f"NVML nvmlDeviceGetMigDeviceHandleByIndex failed for GPU {index}") from err
            gi_id = int(self._call("nvmlDeviceGetGpuInstanceId", index, nv.nvmlDeviceGetGpuInstanceId, mig))
            ci_id = int(self._call("nvmlDeviceGetComputeInstanceId", index, nv.nvmlDeviceGetComputeInstanceId, mig))
            uuid = _text(self._call("nvmlDeviceGetUUID", index, nv.nvmlDeviceGetUUID, mig))
            devices.setdefault(gi_id, []).append((ci_id, uuid))
        result = []
        for gi_id in sorted(found):
            profile, start, size = found[gi_id]
            cis = sorted(devices.get(gi_id, []))
            result.append(GpuInstance(
                gpu=gpu, gpu_instance_id=gi_id, profile_id=profile.profile_id, profile=profile.name,
                start=start, size=size, uuid=MigUuid(cis[0][1] if cis else ""),
                compute_instance_ids=tuple(ci for ci, _ in cis),
            ))
        return tuple(result)

    def set_mig_mode(self, gpu: GpuUuid, enabled: bool) -> MigModeChange:
        index, handle = self._handle(gpu)
        mode = pynvml.NVML_DEVICE_MIG_ENABLE if enabled else pynvml.NVML_DEVICE_MIG_DISABLE
        self._call("nvmlDeviceSetMigMode", index, self._nv.nvmlDeviceSetMigMode, handle, mode)
        state = self._call("nvmlDeviceGetMigMode", index, self._nv.nvmlDeviceGetMigMode, handle)
        return MigModeChange(gpu=gpu, enabled=int(state[0]) == pynvml.NVML_DEVICE_MIG_ENABLE,
                             pending=int(state[1]) == pynvml.NVML_DEVICE_MIG_ENABLE)

    def create_instance(self, gpu: GpuUuid, profile_id: int, start: int) -> GpuInstance:
        nv = self._nv
        index, handle = self._handle(gpu)
        profile = self.mig_table(gpu).profile(profile_id)
        if profile is None:
            raise NotSupportedError(f"NVML: GPU {index} has no MIG profile id {profile_id}")
        placement = pynvml.c_nvmlGpuInstancePlacement_t(start, profile.size)
        gi = self._call("nvmlDeviceCreateGpuInstanceWithPlacement", index,
                        nv.nvmlDeviceCreateGpuInstanceWithPlacement, handle, profile_id, ctypes.byref(placement))
        try:
            ci_profile = _CI_PROFILE_FOR_SLICES[profile.compute_slices]
            info = self._call("nvmlGpuInstanceGetComputeInstanceProfileInfo", index,
                              nv.nvmlGpuInstanceGetComputeInstanceProfileInfo, gi, ci_profile,
                              pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
            self._call("nvmlGpuInstanceCreateComputeInstance", index, nv.nvmlGpuInstanceCreateComputeInstance,
                       gi, int(info.id))
        except (HardwareError, KeyError):
            # Half-made instances strand capacity: take the GPU instance away again, then report.
            self._call("nvmlGpuInstanceDestroy", index, nv.nvmlGpuInstanceDestroy, gi)
            raise
        gi_id = int(self._call("nvmlGpuInstanceGetInfo", index, nv.nvmlGpuInstanceGetInfo, gi).id)
        made = next((i for i in self._instances(gpu, index, handle) if i.gpu_instance_id == gi_id), None)
        if made is None:
            raise NotFoundError(f"NVML: GPU {index}: gi {gi_id} vanished right after it was created")
        return made

    def destroy_instance(self, gpu: GpuUuid, gpu_instance_id: int) -> None:
        nv = self._nv
        index, handle = self._handle(gpu)
        existing = next((i for i in self._instances(gpu, index, handle) if i.gpu_instance_id == gpu_instance_id),
                        None)
        gi = self._call("nvmlDeviceGetGpuInstanceById", index, nv.nvmlDeviceGetGpuInstanceById, handle,
                        gpu_instance_id)
        for ci_id in existing.compute_instance_ids if existing is not None else ():
            ci = self._call("nvmlGpuInstanceGetComputeInstanceById", index,
                            nv.nvmlGpuInstanceGetComputeInstanceById, gi, ci_id)
            self._call("nvmlComputeInstanceDestroy", index, nv.nvmlComputeInstanceDestroy, ci)
        self._call("nvmlGpuInstanceDestroy", index, nv.nvmlGpuInstanceDestroy, gi)

    # --- health

    def processes(self, gpu: GpuUuid) -> tuple[GpuProcess, ...]:
        index, handle = self._handle(gpu)
        raw = self._call("nvmlDeviceGetComputeRunningProcesses", index,
                         self._nv.nvmlDeviceGetComputeRunningProcesses, handle)
        result = []
        for p in raw:
            used = getattr(p, "usedGpuMemory", None)
            gi = getattr(p, "gpuInstanceId", _NO_INSTANCE)
            ci = getattr(p, "computeInstanceId", _NO_INSTANCE)
            result.append(GpuProcess(
                pid=int(p.pid),
                used_mib=None if used is None else int(used) // 2**20,
                gpu_instance_id=None if gi is None or int(gi) == _NO_INSTANCE else int(gi),
                compute_instance_id=None if ci is None or int(ci) == _NO_INSTANCE else int(ci),
            ))
        return tuple(sorted(result, key=lambda p: p.pid))

    def health(self, gpu: GpuUuid) -> HealthReading:
        index, handle = self._handle(gpu)
        self._drain_events()
        xids = tuple(self._xids.get(gpu, ())[-_XID_HISTORY:])
        seq = xids[-1].seq if xids else 0
        try:
            fields = self._call("nvmlDeviceGetFieldValues", index, self._nv.nvmlDeviceGetFieldValues, handle,
                                list(_HEALTH_FIELDS))
        except GpuLostError as err:
            return HealthReading(gpu=gpu, reachable=False, xid_seq=seq, xids=xids, detail=str(err))
        except NotSupportedError:
            fields = []
        values: dict[int, int | float | None] = {int(f.fieldId): _field_value(f) for f in fields}
        ecc = values.get(pynvml.NVML_FI_DEV_ECC_DBE_VOL_TOTAL)
        remapped = values.get(pynvml.NVML_FI_DEV_REMAPPED_UNC)
        action = values.get(pynvml.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION)
        try:
            recovery = None if action is None else RecoveryAction(int(action))
        except ValueError:
            # A recovery action this code does not know yet: something is asked of the operator.
            recovery = RecoveryAction.GPU_RESET
        return HealthReading(
            gpu=gpu,
            reachable=True,
            ecc_uncorrectable=None if ecc is None else int(ecc),
            remapped_rows_uncorrectable=None if remapped is None else int(remapped),
            remap_pending=bool(values.get(pynvml.NVML_FI_DEV_REMAPPED_PENDING) or 0),
            remap_failed=bool(values.get(pynvml.NVML_FI_DEV_REMAPPED_FAILURE) or 0),
            recovery_action=recovery,
            xid_seq=seq,
            xids=xids,
            detail="" if self._events is not None else f"XID events: {self._events_state}",
        )

    def _register_events(self) -> None:
        """One event set for XIDs on every GPU, made on first use. Failing to register is reported, not fatal."""
        nv = self._nv
        self._events_tried = True
        self._events_state = "registration failed"
        try:
            events = nv.nvmlEventSetCreate()
        except pynvml.NVMLError as err:
            self._events_state = f"cannot create an event set: {err}"
            return
        wanted = pynvml.nvmlEventTypeXidCriticalError
        for gpu in self._order or list(self._handles):
            index, handle = self._handles[gpu]
            try:
                supported = int(nv.nvmlDeviceGetSupportedEventTypes(handle))
                if supported & wanted:
                    nv.nvmlDeviceRegisterEvents(handle, wanted, events)
                    self._event_owner[_handle_key(handle)] = gpu
            except pynvml.NVMLError as err:
                self._events_state = f"GPU {index}: {err}"
        self._events = events

    def _drain_events(self) -> None:
        if self._events is None:
            if not self._events_tried:
                self.inventory()
            if self._events is None:
                return
        for _ in range(_EVENTS_PER_DRAIN):
            try:
                data = self._nv.nvmlEventSetWait_v2(self._events, 0)
            except pynvml.NVMLError as err:
                if getattr(err, "value", None) != pynvml.NVML_ERROR_TIMEOUT:
                    self._events_state = f"waiting for events failed: {err}"
                return  # TIMEOUT: nothing (more) pending
            if not int(data.eventType) & pynvml.nvmlEventTypeXidCriticalError:
                continue
            gpu = self._event_owner.get(_handle_key(data.device))
            if gpu is None:
                continue
            self._seq += 1
            gi = int(data.gpuInstanceId)
            ci = int(data.computeInstanceId)
            log = self._xids.setdefault(gpu, [])
            log.append(XidEvent(seq=self._seq, gpu=gpu, code=int(data.eventData),
                                gpu_instance_id=None if gi == _NO_INSTANCE else gi,
                                compute_instance_id=None if ci == _NO_INSTANCE else ci))
            del log[:-_XID_HISTORY]

    # --- partitions (AMD only)

    def partition_state(self, gpu: GpuUuid) -> PartitionState:
        self._handle(gpu)
        return PartitionState(gpu=gpu, compute="", memory="")

    def set_partition_modes(self, gpu: GpuUuid, compute: str | None, memory: str | None) -> PartitionState:
        raise NotSupportedError(f"NVML: GPU {gpu}: partition modes are an AMD feature; NVIDIA GPUs use MIG")

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        if self._events is not None:
            with contextlib.suppress(pynvml.NVMLError):  # shutting down anyway
                self._nv.nvmlEventSetFree(self._events)
            self._events = None
        self._call("nvmlShutdown", None, self._nv.nvmlShutdown)


def _handle_key(handle: Any) -> Any:
    """A hashable identity for a device handle: the address behind a ctypes pointer, else the object."""
    if isinstance(handle, ctypes._Pointer):
        return ctypes.cast(handle, ctypes.c_void_p).value
    return handle
