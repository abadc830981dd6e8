"""The interface every GPU backend implements, and the one place that chooses a backend.

``GpuBackend`` is what the agent programs against. The real backend (NVML) and the simulator implement
the same protocol, so one contract test suite runs against both. Later capabilities (MIG layout,
telemetry, health) are added to this protocol and to every backend together; a backend that cannot do
something raises ``HardwareError`` saying so rather than pretending.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from gridmesh.hw.model import HardwareError, HostHardware

if TYPE_CHECKING:
    from gridmesh.hw.nvml import NvmlBackend

log = logging.getLogger(__name__)

BACKEND_KINDS: tuple[str, ...] = ("auto", "nvml", "simulator")


class GpuBackend(Protocol):
    """A source of truth about one host's GPUs."""

    name: str
    """Short backend name, also recorded in ``HostHardware.backend``."""

    def inventory(self) -> HostHardware:
        """Read the host's hardware now. Read-only: never changes anything on a GPU."""
        ...

    def close(self) -> None:
        """Release what the backend holds (the NVML library, ...). Calling it twice is harmless."""
        ...


def local_cpu_count() -> int:
    """Logical CPUs of the machine we run on (the whole host, not our affinity mask)."""
    return os.cpu_count() or 1


def local_memory_mib() -> int:
    """Physical memory of the machine we run on, in MiB."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20
    except (ValueError, OSError):
        # Not every platform names these sysconf keys; 0 reads as "unknown" in reports.
        return 0


def open_backend(kind: str, host_file: Path | None) -> GpuBackend:
    """Open the GPU backend of the given kind.

    - ``"simulator"``: the host described by ``host_file`` (TOML); no file means a host with no GPUs.
    - ``"nvml"``: the real GPUs through NVML; ``host_file`` is not used. Fails with ``HardwareError`` when
      NVML cannot be loaded or initialised.
    - ``"auto"``: NVML when it loads, initialises and reports at least one GPU; otherwise the simulator
      as for ``"simulator"``. A host whose driver is broken therefore comes up as a simulated (by default
      GPU-less) host, and its inventory says ``backend="simulator"`` so that nobody mistakes it.
    """
    # Imported here so that a host without nvidia-ml-py can still run the simulator, and so that importing
    # gridmesh.hw never loads libnvidia-ml.
    from gridmesh.hw.simulator import SimulatorBackend

    if kind == "simulator":
        return SimulatorBackend.from_file(host_file) if host_file is not None else SimulatorBackend.empty()
    if kind == "nvml":
        return _open_nvml()
    if kind == "auto":
        try:
            nvml = _open_nvml()
        except HardwareError as err:
            log.info("GPU backend: NVML not usable (%s); using the simulator", err)
        else:
            try:
                count = nvml.device_count()
            except HardwareError as err:
                nvml.close()
                log.info("GPU backend: NVML cannot count GPUs (%s); using the simulator", err)
            else:
                if count > 0:
                    return nvml
                nvml.close()
                log.info("GPU backend: NVML reports no GPUs; using the simulator")
        return SimulatorBackend.from_file(host_file) if host_file is not None else SimulatorBackend.empty()
    raise HardwareError(f"unknown GPU backend kind {kind!r}; allowed: {', '.join(BACKEND_KINDS)}")


def _open_nvml() -> NvmlBackend:
    try:
        from gridmesh.hw.nvml import NvmlBackend
    except ImportError as err:
        raise HardwareError(f"NVML backend unavailable: cannot import pynvml (nvidia-ml-py): {err}") from err
    return NvmlBackend()
