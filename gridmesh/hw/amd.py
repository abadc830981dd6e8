"""AMD Instinct GPUs, through AMD SMI (``import amdsmi``, the ROCm AMD SMI Python library).

Rules:
- The same inventory and telemetry as NVML, in the same units and names (``gridmesh.hw.model``): GPU
  utilisation is graphics-engine activity, memory-bandwidth utilisation is memory-controller (UMC)
  activity, power is the socket power in watts, temperature the hotspot (junction) temperature, clocks the
  GFX and memory clocks in MHz. GPU UUIDs get NVML's ``GPU-`` prefix so one format holds grid-wide.
- AMD GPUs have no MIG: the MIG methods raise ``NotSupportedError``. They have compute partitions
  (SPX/DPX/QPX/CPX) and memory partitions (NPS1/NPS4) where the model offers them (MI300X); changing one
  needs an idle GPU and is never forced.
- Health: uncorrectable ECC counts and retired memory pages (a page pending retirement reads as a pending
  remap: it needs a GPU reset, as on NVIDIA). AMD SMI has no XIDs and no recovery-action field: those stay
  empty and None.
- Errors: ``AmdSmiLibraryException`` codes map to the same ``HardwareError`` subclasses NVML's do. An
  I/O error from a GPU is taken as the GPU having gone (``GpuLostError``).
- The library needs AMD hardware to load, so it is injectable (``AmdSmiBackend(lib=...)``) and tested
  through ``gridmesh.hw.fake_amdsmi.FakeAmdSmi``; by default ``amdsmi`` is imported on open.
- CPU affinity is the kernel's ``local_cpulist`` of the GPU's PCI device; AMD SMI's XGMI links are not
  read yet (``nvlink_peers`` stays empty).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gridmesh.hw.backend import local_cpu_count, local_memory_mib
from gridmesh.hw.catalog import find_model
from gridmesh.hw.mig import MigTable
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
    NoPermissionError,
    NotFoundError,
    NotSupportedError,
    PartitionState,
)

SYSFS_PCI_DEVICES = Path("/sys/bus/pci/devices")

# AmdSmiRetCode member name -> error kind. Names, not numbers: the numbers differ between releases.
_ERROR_NAMES: dict[str, type[HardwareError]] = {
    "ERR_NOT_SUPPORTED": NotSupportedError,
    "NOT_IMPLEMENTED": NotSupportedError,
    "ERR_BUSY": InUseError,
    "ERR_NOT_FOUND": NotFoundError,
    "ERR_INVAL": InvalidArgumentError,
    "ERR_NO_PERM": NoPermissionError,
    "ERR_OUT_OF_RESOURCES": InsufficientResourcesError,
    "ERR_IO": GpuLostError,
}


def parse_cpulist(text: str) -> tuple[int, ...]:
    """``"0-3,8,10-11"`` -> (0, 1, 2, 3, 8, 10, 11); the kernel's list format."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        cpus.extend(range(int(low), int(high or low) + 1))
    return tuple(cpus)


def _number(value: Any) -> float | None:
    # AMD SMI answers "N/A" (a string) for values a GPU does not report.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class AmdSmiBackend:
    """A ``GpuBackend`` over the host's AMD GPUs. Opening it initialises AMD SMI."""

    name = "amd"

    def __init__(self, lib: Any = None, sysfs_pci: Path | None = None) -> None:
        if lib is None:
            try:
                import amdsmi  # type: ignore[import-not-found]  # only on AMD hosts
            except (ImportError, OSError, KeyError) as err:
                raise HardwareError(f"AMD SMI backend unavailable: cannot import amdsmi: {err}") from err
            lib = amdsmi
        self._amd: Any = lib
        self._sysfs = sysfs_pci or SYSFS_PCI_DEVICES
        self._errors = {int(getattr(lib.AmdSmiRetCode, name)): kind for name, kind in _ERROR_NAMES.items()
                        if hasattr(lib.AmdSmiRetCode, name)}
        self._open = False
        self._call("amdsmi_init", None, lib.amdsmi_init)
        self._open = True
        self._handles: dict[GpuUuid, tuple[int, Any]] = {}
        self._order: list[GpuUuid] = []
        self._seen: dict[int, GpuDevice] = {}

    def _call(self, what: str, index: int | None, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except self._amd.AmdSmiLibraryException as err:
            target = "" if index is None else f" for GPU {index}"
            kind = self._errors.get(int(err.get_error_code()), HardwareError)
            raise kind(f"AMD SMI {what} failed{target}: {err}") from err

    def _optional(self, what: str, index: int, fn: Callable[..., Any], *args: Any) -> Any | None:
        try:
            return self._call(what, index, fn, *args)
        except NotSupportedError:
            return None

    def _require_open(self) -> None:
        if not self._open:
            raise HardwareError("AMD SMI backend used after close()")

    def _handle(self, gpu: GpuUuid) -> tuple[int, Any]:
        self._require_open()
        if gpu not in self._handles:
            self.inventory()
        known = self._handles.get(gpu)
        if known is None:
            raise NotFoundError(f"AMD SMI: no GPU {gpu} on this host")
        return known

    def device_count(self) -> int:
        self._require_open()
        return len(self._call("amdsmi_get_processor_handles", None, self._amd.amdsmi_get_processor_handles))

    # --- inventory and telemetry

    def inventory(self) -> HostHardware:
        self._require_open()
        handles = self._call("amdsmi_get_processor_handles", None, self._amd.amdsmi_get_processor_handles)
        devices = []
        for index, handle in enumerate(handles):
            try:
                devices.append(self._device(index, handle))
            except GpuLostError:
                if index not in self._seen:
                    raise
                devices.append(self._seen[index])
        self._order = [d.uuid for d in devices]
        return HostHardware(hostname=socket.gethostname(), backend=self.name, gpus=tuple(devices),
                            cpu_count=local_cpu_count(), memory_mib=local_memory_mib())

    def _device(self, index: int, handle: Any) -> GpuDevice:
        amd = self._amd
        asic = self._call("amdsmi_get_gpu_asic_info", index, amd.amdsmi_get_gpu_asic_info, handle)
        raw_uuid = str(self._call("amdsmi_get_gpu_device_uuid", index, amd.amdsmi_get_gpu_device_uuid, handle))
        uuid = GpuUuid(raw_uuid if raw_uuid.startswith("GPU-") else f"GPU-{raw_uuid.lower()}")
        self._handles[uuid] = (index, handle)
        bdf = str(self._call("amdsmi_get_gpu_device_bdf", index, amd.amdsmi_get_gpu_device_bdf, handle))
        total = int(self._call("amdsmi_get_gpu_memory_total", index, amd.amdsmi_get_gpu_memory_total, handle,
                               amd.AmdSmiMemoryType.VRAM))
        numa = self._optional("amdsmi_topo_get_numa_node_number", index, amd.amdsmi_topo_get_numa_node_number,
                              handle)
        name = str(asic.get("market_name", "")) if isinstance(asic, dict) else ""
        known = find_model(name)
        device = GpuDevice(
            index=index,
            uuid=uuid,
            model=known.model if known is not None else name,
            memory_mib=total // 2**20,
            compute_capability="",
            # NVML spells bus ids with an 8-digit domain in capitals; so do we, whoever reports them.
            pci_bus_id=self._nvml_bus_id(bdf),
            numa_node=max(int(numa), -1) if isinstance(numa, int) else -1,
            mig_capable=False,
            mig_enabled=False,
            cpu_affinity=self._cpu_affinity(bdf),
            vendor="amd",
        )
        self._seen[index] = device
        return device

    @staticmethod
    def _nvml_bus_id(bdf: str) -> str:
        domain, _, rest = bdf.partition(":")
        return f"{int(domain, 16):08X}:{rest.upper()}" if rest else bdf.upper()

    def _cpu_affinity(self, bdf: str) -> tuple[int, ...]:
        try:
            return parse_cpulist((self._sysfs / bdf.lower() / "local_cpulist").read_text())
        except (OSError, ValueError):
            return ()

    def sample(self) -> tuple[GpuSample, ...]:
        self._require_open()
        if not self._order:
            self.inventory()
        return tuple(self._sample(gpu) for gpu in self._order)

    def _sample(self, gpu: GpuUuid) -> GpuSample:
        amd = self._amd
        index, handle = self._handles[gpu]
        try:
            activity = self._optional("amdsmi_get_gpu_activity", index, amd.amdsmi_get_gpu_activity, handle) or {}
            used = self._optional("amdsmi_get_gpu_memory_usage", index, amd.amdsmi_get_gpu_memory_usage, handle,
                                  amd.AmdSmiMemoryType.VRAM)
            total = self._seen[index].memory_mib if index in self._seen else None
            power = self._optional("amdsmi_get_power_info", index, amd.amdsmi_get_power_info, handle) or {}
            hotspot = getattr(amd.AmdSmiTemperatureType, "HOTSPOT", None) or amd.AmdSmiTemperatureType.JUNCTION
            temp = self._optional("amdsmi_get_temp_metric", index, amd.amdsmi_get_temp_metric, handle, hotspot,
                                  amd.AmdSmiTemperatureMetric.CURRENT)
            gfx = self._optional("amdsmi_get_clock_info", index, amd.amdsmi_get_clock_info, handle,
                                 amd.AmdSmiClkType.GFX) or {}
            mem = self._optional("amdsmi_get_clock_info", index, amd.amdsmi_get_clock_info, handle,
                                 amd.AmdSmiClkType.MEM) or {}
        except HardwareError:
            return GpuSample(gpu, None, None, None, None, None, None, None, None)
        used_mib = None if used is None else int(used) // 2**20
        watts = _number(power.get("current_socket_power"))
        if watts is None:
            watts = _number(power.get("average_socket_power"))
        sm = _number(gfx.get("clk"))
        mclk = _number(mem.get("clk"))
        return GpuSample(
            gpu=gpu,
            gpu_util_pct=_number(activity.get("gfx_activity")),
            mem_bw_util_pct=_number(activity.get("umc_activity")),
            memory_used_mib=used_mib,
            memory_free_mib=None if used_mib is None or total is None else total - used_mib,
            power_w=watts,
            temperature_c=_number(temp),
            sm_clock_mhz=None if sm is None else int(sm),
            mem_clock_mhz=None if mclk is None else int(mclk),
        )

    # --- MIG: not on AMD

    def mig_table(self, gpu: GpuUuid) -> MigTable:
        self._handle(gpu)
        raise NotSupportedError(f"AMD SMI: GPU {gpu}: AMD GPUs have no MIG; use compute/memory partitions")

    def mig_state(self, gpu: GpuUuid) -> MigState:
        self._handle(gpu)
        return MigState(gpu=gpu, capable=False, enabled=False, pending=False)

    def set_mig_mode(self, gpu: GpuUuid, enabled: bool) -> MigModeChange:
        raise self._no_mig(gpu)

    def create_instance(self, gpu: GpuUuid, profile_id: int, start: int) -> GpuInstance:
        raise self._no_mig(gpu)

    def destroy_instance(self, gpu: GpuUuid, gpu_instance_id: int) -> None:
        raise self._no_mig(gpu)

    def _no_mig(self, gpu: GpuUuid) -> NotSupportedError:
        return NotSupportedError(f"AMD SMI: GPU {gpu}: AMD GPUs have no MIG; use compute/memory partitions")

    # --- health

    def processes(self, gpu: GpuUuid) -> tuple[GpuProcess, ...]:
        index, handle = self._handle(gpu)
        raw = self._call("amdsmi_get_gpu_process_list", index, self._amd.amdsmi_get_gpu_process_list, handle)
        result = []
        for p in raw:
            if not isinstance(p, dict):
                p = self._call("amdsmi_get_gpu_process_info", index, self._amd.amdsmi_get_gpu_process_info,
                               handle, p)
            usage = p.get("memory_usage") or {}
            vram = usage.get("vram_mem", p.get("mem"))
            result.append(GpuProcess(pid=int(p["pid"]), used_mib=None if _number(vram) is None else int(vram) // 2**20))
        return tuple(sorted(result, key=lambda p: p.pid))

    def health(self, gpu: GpuUuid) -> HealthReading:
        amd = self._amd
        index, handle = self._handle(gpu)
        try:
            ecc = self._optional("amdsmi_get_gpu_total_ecc_count", index, amd.amdsmi_get_gpu_total_ecc_count,
                                 handle) or {}
            pages = self._optional("amdsmi_get_gpu_bad_page_info", index, amd.amdsmi_get_gpu_bad_page_info,
                                   handle) or []
        except GpuLostError as err:
            return HealthReading(gpu=gpu, reachable=False, detail=str(err))
        status = amd.AmdSmiMemoryPageStatus
        pending = [p for p in pages if isinstance(p, dict) and p.get("status") == status.PENDING]
        retired = [p for p in pages if isinstance(p, dict) and p.get("status") == status.RESERVED]
        failed = [p for p in pages if isinstance(p, dict) and p.get("status") == status.UNRESERVABLE]
        unc = _number(ecc.get("uncorrectable_count"))
        return HealthReading(
            gpu=gpu,
            reachable=True,
            ecc_uncorrectable=None if unc is None else int(unc),
            remapped_rows_uncorrectable=len(retired),
            remap_pending=bool(pending),
            remap_failed=bool(failed),
            recovery_action=None,
        )

    # --- partitions

    def partition_state(self, gpu: GpuUuid) -> PartitionState:
        amd = self._amd
        index, handle = self._handle(gpu)
        compute = self._optional("amdsmi_get_gpu_compute_partition", index, amd.amdsmi_get_gpu_compute_partition,
                                 handle)
        memory = self._optional("amdsmi_get_gpu_memory_partition", index, amd.amdsmi_get_gpu_memory_partition,
                                handle)
        model = find_model(self._seen[index].model) if index in self._seen else None
        return PartitionState(
            gpu=gpu,
            compute=str(compute or ""),
            memory=str(memory or ""),
            compute_modes=model.compute_partitions if model is not None and compute else (),
            memory_modes=model.memory_partitions if model is not None and memory else (),
        )

    def set_partition_modes(self, gpu: GpuUuid, compute: str | None, memory: str | None) -> PartitionState:
        amd = self._amd
        index, handle = self._handle(gpu)
        state = self.partition_state(gpu)
        for kind, mode, offered in (("compute", compute, state.compute_modes),
                                    ("memory", memory, state.memory_modes)):
            if mode is not None and mode not in offered:
                raise NotSupportedError(f"AMD SMI: GPU {index} has no {kind} partition mode {mode!r}; "
                                        f"offered: {list(offered)}")
        # Memory first: NPS4 on an MI300X needs CPX, and CPX is valid with NPS1, so going to CPX+NPS4 from
        # SPX+NPS1 works compute-first while going back needs memory-first. Order by what is valid now.
        steps: list[tuple[str, str]] = []
        if compute is not None and compute != state.compute:
            steps.append(("compute", compute))
        if memory is not None and memory != state.memory:
            steps.append(("memory", memory))
        if memory == "NPS1":
            steps.reverse()
        for kind, mode in steps:
            if kind == "compute":
                self._call("amdsmi_set_gpu_compute_partition", index, amd.amdsmi_set_gpu_compute_partition, handle,
                           getattr(amd.AmdSmiComputePartitionType, mode))
            else:
                self._call("amdsmi_set_gpu_memory_partition", index, amd.amdsmi_set_gpu_memory_partition, handle,
                           getattr(amd.AmdSmiMemoryPartitionType, mode))
        return self.partition_state(gpu)

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        self._call("amdsmi_shut_down", None, self._amd.amdsmi_shut_down)
