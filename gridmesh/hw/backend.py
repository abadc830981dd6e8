"""The interface every GPU backend implements, and the one place that chooses a backend.

``GpuBackend`` is what the agent programs against. It is the union of five small protocols, one per
capability, so that a piece of the agent can ask for only what it uses (the telemetry sampler takes a
``TelemetryBackend``, the MIG reconciler a ``MigBackend``):

- ``InventoryBackend``: what GPUs the host has (read-only).
- ``TelemetryBackend``: cheap readings for the agent's status and metrics (never reads MIG mode, which
  costs ~160 us a GPU on an H100 where the other reads cost 2-10 us).
- ``MigBackend``: MIG mode, profiles and instances; the only methods that change a GPU's layout.
- ``HealthBackend``: processes, ECC, row remapping, recovery action, XID events.
- ``PartitionBackend``: AMD compute/memory partition modes.

Every backend (NVML, AMD SMI, simulator) implements all of it; a capability a GPU or backend lacks raises
``NotSupportedError`` saying so rather than pretending. GPUs are named by UUID everywhere. Errors are
``HardwareError`` subclasses (``gridmesh.hw.model``), the same class for the same failure on every backend.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from gridmesh.hw.model import (
    GpuInstance,
    GpuProcess,
    GpuSample,
    GpuUuid,
    HardwareError,
    HealthReading,
    HostHardware,
    MigModeChange,
    MigState,
    PartitionState,
)

if TYPE_CHECKING:
    from gridmesh.hw.amd import AmdSmiBackend
    from gridmesh.hw.mig import MigTable
    from gridmesh.hw.nvml import NvmlBackend

log = logging.getLogger(__name__)

BACKEND_KINDS: tuple[str, ...] = ("auto", "nvml", "simulator", "amd")


class InventoryBackend(Protocol):
    """A source of truth about one host's GPUs."""

    name: str
    """Short backend name, also recorded in ``HostHardware.backend``."""

    def inventory(self) -> HostHardware:
        """Read the host's hardware now. Read-only: never changes anything on a GPU.

        A GPU that stopped answering after it was first seen keeps being reported (with what was read
        before) so that its UUID does not vanish; ``HealthBackend.health`` says it is unreachable.
        """
        ...

    def close(self) -> None:
        """Release what the backend holds (the NVML library, ...). Calling it twice is harmless."""
        ...


class TelemetryBackend(Protocol):
    def sample(self) -> tuple[GpuSample, ...]:
        """One telemetry reading of every GPU, in inventory order. Read-only and cheap: a few driver reads
        per GPU, never the MIG mode. A GPU that cannot be read gives a sample of ``None`` values."""
        ...


class MigBackend(Protocol):
    def mig_table(self, gpu: GpuUuid) -> MigTable:
        """The GPU's MIG profiles and placements (read from the driver on NVML). ``NotSupportedError`` for a
        GPU without MIG or without a known table. Read-only; works with MIG mode off."""
        ...

    def mig_state(self, gpu: GpuUuid) -> MigState:
        """MIG mode (in effect and pending) and the instances with their MIG device UUIDs. Read-only."""
        ...

    def set_mig_mode(self, gpu: GpuUuid, enabled: bool) -> MigModeChange:
        """Ask for MIG mode on or off. Never forced: ``InUseError`` when processes run on the GPU or (to
        disable) instances exist. The answer says whether the change waits for a GPU reset, which gridmesh
        never does itself. Asking for the mode in effect cancels a pending change."""
        ...

    def create_instance(self, gpu: GpuUuid, profile_id: int, start: int) -> GpuInstance:
        """Create a GPU instance of ``profile_id`` (NVML's profile id) at ``start``, with one compute instance
        spanning it, and return it with its MIG device UUID. ``InsufficientResourcesError`` when it does not
        fit, ``InvalidArgumentError`` for a start the profile does not allow, ``ResetRequiredError`` while a
        MIG-mode change waits for a reset, ``NotSupportedError`` when MIG is off."""
        ...

    def destroy_instance(self, gpu: GpuUuid, gpu_instance_id: int) -> None:
        """Destroy a GPU instance and its compute instances. ``InUseError`` while processes run in it,
        ``NotFoundError`` when it does not exist."""
        ...


class HealthBackend(Protocol):
    def processes(self, gpu: GpuUuid) -> tuple[GpuProcess, ...]:
        """The compute processes on the GPU (all MIG instances included), by pid."""
        ...

    def health(self, gpu: GpuUuid) -> HealthReading:
        """ECC, row remapping, recovery action and XIDs seen so far. Never raises for a GPU that stopped
        answering: the reading says ``reachable=False``."""
        ...


class PartitionBackend(Protocol):
    def partition_state(self, gpu: GpuUuid) -> PartitionState:
        """Compute and memory partition modes (AMD); empty modes where partitioning is not supported."""
        ...

    def set_partition_modes(self, gpu: GpuUuid, compute: str | None, memory: str | None) -> PartitionState:
        """Change the compute and/or memory partition mode. Never forced: ``InUseError`` while processes run;
        ``NotSupportedError`` for a mode the GPU does not offer."""
        ...


class GpuBackend(InventoryBackend, TelemetryBackend, MigBackend, HealthBackend, PartitionBackend, Protocol):
    """Everything the agent uses; every backend implements all of it."""


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
    - ``"amd"``: the real AMD GPUs through AMD SMI (``import amdsmi``); fails like ``"nvml"``.
    - ``"auto"``: NVML when it loads, initialises and reports at least one GPU; else AMD SMI likewise;
      otherwise the simulator as for ``"simulator"``. A host whose driver is broken therefore comes up as a
      simulated (by default GPU-less) host, and its inventory says ``backend="simulator"`` so that nobody
      mistakes it.
    """
    # Imported here so that a host without nvidia-ml-py can still run the simulator, and so that importing
    # gridmesh.hw never loads libnvidia-ml.
    from gridmesh.hw.simulator import SimulatorBackend

    if kind == "simulator":
        return SimulatorBackend.from_file(host_file) if host_file is not None else SimulatorBackend.empty()
    if kind == "nvml":
        return _open_nvml()
    if kind == "amd":
        return _open_amd()
    if kind == "auto":
        try:
            nvml = _open_nvml()
        except HardwareError as err:
            log.info("GPU backend: NVML not usable (%s)", err)
        else:
            try:
                count = nvml.device_count()
            except HardwareError as err:
                nvml.close()
                log.info("GPU backend: NVML cannot count GPUs (%s)", err)
            else:
                if count > 0:
                    return nvml
                nvml.close()
                log.info("GPU backend: NVML reports no GPUs")
        try:
            amd = _open_amd()
        except HardwareError as err:
            log.info("GPU backend: AMD SMI not usable (%s); using the simulator", err)
        else:
            try:
                count = amd.device_count()
            except HardwareError as err:
                count = 0
                log.info("GPU backend: AMD SMI cannot count GPUs (%s)", err)
            if count > 0:
                return amd
            amd.close()
            log.info("GPU backend: AMD SMI reports no GPUs; using the simulator")
        return SimulatorBackend.from_file(host_file) if host_file is not None else SimulatorBackend.empty()
    raise HardwareError(f"unknown GPU backend kind {kind!r}; allowed: {', '.join(BACKEND_KINDS)}")


def _open_nvml() -> NvmlBackend:
    try:
        from gridmesh.hw.nvml import NvmlBackend
    except ImportError as err:
        raise HardwareError(f"NVML backend unavailable: cannot import pynvml (nvidia-ml-py): {err}") from err
    return NvmlBackend()


def _open_amd() -> AmdSmiBackend:
    from gridmesh.hw.amd import AmdSmiBackend

    return AmdSmiBackend()
