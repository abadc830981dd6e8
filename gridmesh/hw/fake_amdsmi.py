"""A stand-in for the ``amdsmi`` module, answering from a simulated host's AMD GPUs, for tests.

The real library needs AMD hardware to load, so ``AmdSmiBackend(lib=FakeAmdSmi(host))`` is how the AMD
backend is tested. The fake keeps AMD SMI's conventions where the caller depends on them: answers are
dicts keyed as AMD SMI keys them, "N/A" strings where a value is not reported, errors are
``AmdSmiLibraryException`` with an ``AmdSmiRetCode``, UUIDs come without NVML's ``GPU-`` prefix and bus
ids in AMD's lower-case ``0000:18:00.0`` form. ``calls`` counts every call by name.
"""

from __future__ import annotations

import enum
import functools
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

from gridmesh.hw.model import (
    GpuLostError,
    HardwareError,
    InsufficientResourcesError,
    InUseError,
    InvalidArgumentError,
    NoPermissionError,
    NotFoundError,
    NotSupportedError,
)
from gridmesh.hw.simhost import SimGpu, SimHost

F = TypeVar("F", bound=Callable[..., Any])


class AmdSmiRetCode(enum.IntEnum):
    SUCCESS = 0
    ERR_INVAL = 1
    ERR_NOT_SUPPORTED = 2
    NOT_IMPLEMENTED = 3
    ERR_NO_PERM = 10
    ERR_IO = 12
    ERR_OUT_OF_RESOURCES = 15
    ERR_BUSY = 30
    ERR_NOT_FOUND = 31
    UNKNOWN_ERROR = 0xFFFFFFFF


class AmdSmiLibraryException(Exception):
    def __init__(self, err_code: int) -> None:
        super().__init__(err_code)
        self.err_code = err_code

    def get_error_code(self) -> int:
        return self.err_code

    def __str__(self) -> str:
        try:
            return f"An error occured with code: {self.err_code}({AmdSmiRetCode(self.err_code).name})"
        except ValueError:
            return f"An error occured with code: {self.err_code}"


class AmdSmiMemoryType(enum.IntEnum):
    VRAM = 0
    VIS_VRAM = 1
    GTT = 2


class AmdSmiClkType(enum.IntEnum):
    SYS = 0
    GFX = 0x0
    DF = 1
    MEM = 4


class AmdSmiTemperatureType(enum.IntEnum):
    EDGE = 0
    HOTSPOT = 1
    JUNCTION = 1
    VRAM = 2


class AmdSmiTemperatureMetric(enum.IntEnum):
    CURRENT = 0
    MAX = 1


class AmdSmiComputePartitionType(enum.IntEnum):
    SPX = 1
    DPX = 2
    TPX = 3
    QPX = 4
    CPX = 5


class AmdSmiMemoryPartitionType(enum.IntEnum):
    NPS1 = 1
    NPS2 = 2
    NPS4 = 4
    NPS8 = 8


class AmdSmiMemoryPageStatus(enum.IntEnum):
    RESERVED = 0
    PENDING = 1
    UNRESERVABLE = 2


_CODE_OF: tuple[tuple[type[HardwareError], AmdSmiRetCode], ...] = (
    (NotSupportedError, AmdSmiRetCode.ERR_NOT_SUPPORTED),
    (InUseError, AmdSmiRetCode.ERR_BUSY),
    (NotFoundError, AmdSmiRetCode.ERR_NOT_FOUND),
    (InvalidArgumentError, AmdSmiRetCode.ERR_INVAL),
    (NoPermissionError, AmdSmiRetCode.ERR_NO_PERM),
    (InsufficientResourcesError, AmdSmiRetCode.ERR_OUT_OF_RESOURCES),
    (GpuLostError, AmdSmiRetCode.ERR_IO),
)


def _api(fn: F) -> F:
    @functools.wraps(fn)
    def call(self: FakeAmdSmi, *args: Any) -> Any:
        self.calls[fn.__name__] += 1
        if not self.initialised and fn.__name__ != "amdsmi_init":
            raise AmdSmiLibraryException(32)  # AMDSMI_STATUS_NOT_INIT
        try:
            return fn(self, *args)
        except HardwareError as err:
            code = next((c for kind, c in _CODE_OF if isinstance(err, kind)), AmdSmiRetCode.UNKNOWN_ERROR)
            raise AmdSmiLibraryException(int(code)) from err

    return call  # type: ignore[return-value]


class _Processor:
    __slots__ = ("gpu",)

    def __init__(self, gpu: SimGpu) -> None:
        self.gpu = gpu


class FakeAmdSmi:
    """The subset of ``amdsmi`` the AMD backend uses, over a ``SimHost``'s AMD GPUs."""

    AmdSmiRetCode = AmdSmiRetCode
    AmdSmiLibraryException = AmdSmiLibraryException
    AmdSmiMemoryType = AmdSmiMemoryType
    AmdSmiClkType = AmdSmiClkType
    AmdSmiTemperatureType = AmdSmiTemperatureType
    AmdSmiTemperatureMetric = AmdSmiTemperatureMetric
    AmdSmiComputePartitionType = AmdSmiComputePartitionType
    AmdSmiMemoryPartitionType = AmdSmiMemoryPartitionType
    AmdSmiMemoryPageStatus = AmdSmiMemoryPageStatus

    def __init__(self, host: SimHost) -> None:
        self.host = host
        self.calls: Counter[str] = Counter()
        self.initialised = 0
        self._processors = [_Processor(g) for g in host.gpus if g.device.vendor == "amd"]

    def _gpu(self, handle: Any) -> SimGpu:
        if not isinstance(handle, _Processor):
            raise AmdSmiLibraryException(int(AmdSmiRetCode.ERR_INVAL))
        return self.host.answering(handle.gpu.uuid)

    @_api
    def amdsmi_init(self, flags: int = 0) -> None:
        self.initialised += 1

    @_api
    def amdsmi_shut_down(self) -> None:
        self.initialised -= 1

    @_api
    def amdsmi_get_processor_handles(self) -> list[_Processor]:
        return list(self._processors)

    @_api
    def amdsmi_get_gpu_asic_info(self, handle: Any) -> dict[str, Any]:
        gpu = self._gpu(handle)
        return {"market_name": f"AMD Instinct {gpu.model.model}", "vendor_id": "0x1002", "device_id": "0x74a1",
                "rev_id": "0x00", "asic_serial": "N/A", "num_compute_units": 304}

    @_api
    def amdsmi_get_gpu_device_uuid(self, handle: Any) -> str:
        return self._gpu(handle).uuid.removeprefix("GPU-")

    @_api
    def amdsmi_get_gpu_device_bdf(self, handle: Any) -> str:
        domain, _, rest = self._gpu(handle).device.pci_bus_id.partition(":")
        return f"{int(domain, 16):04x}:{rest.lower()}"

    @_api
    def amdsmi_get_gpu_memory_total(self, handle: Any, kind: int) -> int:
        gpu = self._gpu(handle)
        return gpu.device.memory_mib * 2**20 if kind == AmdSmiMemoryType.VRAM else 0

    @_api
    def amdsmi_get_gpu_memory_usage(self, handle: Any, kind: int) -> int:
        gpu = self._gpu(handle)
        used = self.host.sample(gpu.uuid).memory_used_mib or 0
        return used * 2**20 if kind == AmdSmiMemoryType.VRAM else 0

    @_api
    def amdsmi_topo_get_numa_node_number(self, handle: Any) -> int:
        return self._gpu(handle).device.numa_node

    @_api
    def amdsmi_get_gpu_activity(self, handle: Any) -> dict[str, Any]:
        sample = self.host.sample(self._gpu(handle).uuid)
        return {"gfx_activity": int(sample.gpu_util_pct or 0), "umc_activity": int(sample.mem_bw_util_pct or 0),
                "mm_activity": "N/A"}

    @_api
    def amdsmi_get_power_info(self, handle: Any) -> dict[str, Any]:
        sample = self.host.sample(self._gpu(handle).uuid)
        # MI300X reports the current socket power; the average reads "N/A" there.
        return {"current_socket_power": int(sample.power_w or 0), "average_socket_power": "N/A",
                "gfx_voltage": "N/A", "power_limit": 750}

    @_api
    def amdsmi_get_temp_metric(self, handle: Any, sensor: int, metric: int) -> int:
        sample = self.host.sample(self._gpu(handle).uuid)
        if sensor == AmdSmiTemperatureType.EDGE:
            raise NotSupportedError("MI300X has no edge temperature sensor")
        return int(sample.temperature_c or 0)

    @_api
    def amdsmi_get_clock_info(self, handle: Any, clock: int) -> dict[str, Any]:
        sample = self.host.sample(self._gpu(handle).uuid)
        value = sample.sm_clock_mhz if clock == AmdSmiClkType.GFX else sample.mem_clock_mhz
        return {"clk": value, "min_clk": 500, "max_clk": 2100, "clk_locked": False, "clk_deep_sleep": False}

    @_api
    def amdsmi_get_gpu_process_list(self, handle: Any) -> list[dict[str, Any]]:
        return [
            {"name": "python3", "pid": p.pid, "mem": (p.used_mib or 0) * 2**20,
             "engine_usage": {"gfx": 0, "enc": 0},
             "memory_usage": {"gtt_mem": 0, "cpu_mem": 0, "vram_mem": (p.used_mib or 0) * 2**20}}
            for p in self.host.gpu_processes(self._gpu(handle).uuid)
        ]

    @_api
    def amdsmi_get_gpu_total_ecc_count(self, handle: Any) -> dict[str, int]:
        gpu = self._gpu(handle)
        return {"correctable_count": 0, "uncorrectable_count": gpu.ecc_uncorrectable, "deferred_count": 0}

    @_api
    def amdsmi_get_gpu_bad_page_info(self, handle: Any) -> list[dict[str, Any]]:
        gpu = self._gpu(handle)
        pages = [{"value": i, "page_address": 0x1000 * i, "page_size": 4096, "status": AmdSmiMemoryPageStatus.RESERVED}
                 for i in range(gpu.remapped_uncorrectable)]
        if gpu.remap_pending:
            pages.append({"value": len(pages), "page_address": 0xF000, "page_size": 4096,
                          "status": AmdSmiMemoryPageStatus.PENDING})
        if gpu.remap_failed:
            pages.append({"value": len(pages), "page_address": 0xE000, "page_size": 4096,
                          "status": AmdSmiMemoryPageStatus.UNRESERVABLE})
        return pages

    @_api
    def amdsmi_get_gpu_compute_partition(self, handle: Any) -> str:
        gpu = self._gpu(handle)
        if not gpu.model.compute_partitions:
            raise NotSupportedError(f"{gpu.model.model} has no compute partitions")
        return gpu.compute_partition

    @_api
    def amdsmi_get_gpu_memory_partition(self, handle: Any) -> str:
        gpu = self._gpu(handle)
        if not gpu.model.memory_partitions:
            raise NotSupportedError(f"{gpu.model.model} has no memory partitions")
        return gpu.memory_partition

    @_api
    def amdsmi_set_gpu_compute_partition(self, handle: Any, mode: int) -> None:
        gpu = self._gpu(handle)
        self.host.set_partition_modes(gpu.uuid, AmdSmiComputePartitionType(mode).name, None)

    @_api
    def amdsmi_set_gpu_memory_partition(self, handle: Any, mode: int) -> None:
        gpu = self._gpu(handle)
        self.host.set_partition_modes(gpu.uuid, None, AmdSmiMemoryPartitionType(mode).name)
