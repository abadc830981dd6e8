"""The vocabulary of ``gridmesh.hw``: what a host's hardware looks like, and the one error type.

Everything here is a frozen value. Backends build these from whatever they read (NVML, a host file) and
hand them out; nobody mutates them afterwards, so a snapshot can be shared with the agent's reconcilers
and sent to the controller without copying.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NewType

GpuUuid = NewType("GpuUuid", str)
"""A GPU's UUID as NVML spells it: ``GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx``."""


class HardwareError(Exception):
    """The host's hardware, its driver or its description could not be read.

    The message names what failed (the backend call, or the host file with the field) so that an
    operator can act on it without a traceback.
    """


def parse_compute_capability(text: str) -> tuple[int, int] | None:
    """``"9.0"`` -> ``(9, 0)``; ``""`` (not a CUDA device) or anything malformed -> ``None``.

    Compute capabilities must be compared as numbers: as strings ``"10.0" < "9.0"``.
    """
    major, sep, minor = text.partition(".")
    if not sep or not major.isdigit() or not minor.isdigit():
        return None
    return int(major), int(minor)


@dataclass(frozen=True, slots=True)
class GpuDevice:
    """One physical GPU as the host's driver (or the simulator) reports it.

    ``compute_capability`` is the CUDA compute capability (``"9.0"``), or ``""`` for a GPU that is not a
    CUDA device (AMD). ``numa_node`` is -1 when the platform does not say. ``mig_capable`` says whether
    the GPU can be partitioned with MIG at all; ``mig_enabled`` is the *current* MIG mode.
    """

    index: int
    uuid: GpuUuid
    model: str
    memory_mib: int
    compute_capability: str
    pci_bus_id: str
    numa_node: int
    mig_capable: bool
    mig_enabled: bool

    def __post_init__(self) -> None:
        # A backend that reports MIG on a GPU that cannot do MIG is broken; fail where it happens
        # rather than in a MIG planner much later.
        if self.mig_enabled and not self.mig_capable:
            raise ValueError(f"GPU {self.index} ({self.uuid}): mig_enabled on a GPU that is not MIG capable")
        if self.index < 0 or self.memory_mib < 0 or self.numa_node < -1:
            raise ValueError(
                f"GPU {self.index} ({self.uuid}): index and memory_mib must be >= 0, numa_node >= -1"
            )


@dataclass(frozen=True, slots=True)
class HostHardware:
    """A snapshot of one host: its GPUs (in driver index order), CPUs and memory.

    ``backend`` names where the snapshot came from (``"nvml"``, ``"simulator"``), so that a simulated
    host is never mistaken for a real one in reports.
    """

    hostname: str
    backend: str
    gpus: tuple[GpuDevice, ...]
    cpu_count: int
    memory_mib: int

    def gpu(self, uuid: GpuUuid) -> GpuDevice | None:
        """The GPU with this UUID, or None."""
        for device in self.gpus:
            if device.uuid == uuid:
                return device
        return None
