"""The real GPUs, read through NVML (``import pynvml``, distribution ``nvidia-ml-py``).

Rules:
- Read-only. This module only calls NVML getters; it never sets a mode, clock, limit or MIG layout.
  Changing a GPU is the MIG reconciler's job, through its own, explicit backend methods.
- Every ``pynvml.NVMLError`` becomes a ``HardwareError`` naming the call and the GPU index, so the agent
  reports "NVML nvmlDeviceGetUUID failed for GPU 3: GPU is lost" instead of a bare "GPU is lost".
- A capability the GPU or driver does not have (NOT_SUPPORTED, or a function missing from an old driver)
  is an answer, not an error: no NUMA information reads as -1, no MIG mode as "not MIG capable".
- Model names are reported under the catalog's canonical name where the catalog knows the GPU, so that
  requests naming a model match real and simulated hosts alike; unknown GPUs keep NVML's name.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pynvml

from gridmesh.hw.backend import local_cpu_count, local_memory_mib
from gridmesh.hw.catalog import find_model
from gridmesh.hw.model import GpuDevice, GpuUuid, HardwareError, HostHardware

# Answers that mean "this GPU or driver cannot tell you", as opposed to a failure.
_UNSUPPORTED = (pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)


def _text(value: Any) -> str:
    # nvidia-ml-py decodes most strings, but older releases and some struct fields hand back bytes.
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlBackend:
    """A ``GpuBackend`` over the host's real NVIDIA GPUs. Opening it initialises NVML."""

    name = "nvml"

    def __init__(self) -> None:
        self._open = False
        self._call("nvmlInit", None, pynvml.nvmlInit)
        self._open = True

    def _call(self, what: str, index: int | None, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except pynvml.NVMLError as err:
            target = "" if index is None else f" for GPU {index}"
            raise HardwareError(f"NVML {what} failed{target}: {err}") from err

    def _optional(self, what: str, index: int, fn: Callable[..., Any] | None, *args: Any) -> Any | None:
        """Like ``_call``, but None where the GPU or driver does not support the query."""
        if fn is None:  # an nvidia-ml-py too old to know the function
            return None
        try:
            return fn(*args)
        except pynvml.NVMLError as err:
            if getattr(err, "value", None) in _UNSUPPORTED:
                return None
            raise HardwareError(f"NVML {what} failed for GPU {index}: {err}") from err

    def _require_open(self) -> None:
        if not self._open:
            raise HardwareError("NVML backend used after close()")

    def device_count(self) -> int:
        """How many GPUs NVML sees."""
        self._require_open()
        return int(self._call("nvmlDeviceGetCount", None, pynvml.nvmlDeviceGetCount))

    def inventory(self) -> HostHardware:
        self._require_open()
        devices = tuple(self._device(index) for index in range(self.device_count()))
        return HostHardware(
            hostname=socket.gethostname(),
            backend=self.name,
            gpus=devices,
            cpu_count=local_cpu_count(),
            memory_mib=local_memory_mib(),
        )

    def _device(self, index: int) -> GpuDevice:
        handle = self._call("nvmlDeviceGetHandleByIndex", index, pynvml.nvmlDeviceGetHandleByIndex, index)
        name = _text(self._call("nvmlDeviceGetName", index, pynvml.nvmlDeviceGetName, handle))
        uuid = _text(self._call("nvmlDeviceGetUUID", index, pynvml.nvmlDeviceGetUUID, handle))
        pci = self._call("nvmlDeviceGetPciInfo", index, pynvml.nvmlDeviceGetPciInfo, handle)
        memory = self._call("nvmlDeviceGetMemoryInfo", index, pynvml.nvmlDeviceGetMemoryInfo, handle)
        major, minor = self._call(
            "nvmlDeviceGetCudaComputeCapability", index, pynvml.nvmlDeviceGetCudaComputeCapability, handle
        )
        numa = self._optional(
            "nvmlDeviceGetNumaNodeId", index, getattr(pynvml, "nvmlDeviceGetNumaNodeId", None), handle
        )
        mig = self._optional("nvmlDeviceGetMigMode", index, pynvml.nvmlDeviceGetMigMode, handle)

        known = find_model(name)
        return GpuDevice(
            index=index,
            uuid=GpuUuid(uuid),
            model=known.model if known is not None else name,
            memory_mib=int(memory.total) // 2**20,
            compute_capability=f"{int(major)}.{int(minor)}",
            pci_bus_id=_text(pci.busId),
            # NVML answers -1 itself on platforms without NUMA; keep anything below that as unknown too.
            numa_node=max(int(numa), -1) if numa is not None else -1,
            mig_capable=mig is not None,
            # [current, pending]: a pending change needs a GPU reset and is not in effect yet.
            mig_enabled=mig is not None and int(mig[0]) == pynvml.NVML_DEVICE_MIG_ENABLE,
        )

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        self._call("nvmlShutdown", None, pynvml.nvmlShutdown)
