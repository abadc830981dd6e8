"""The vocabulary of ``gridmesh.hw``: what a host's hardware looks like, what it measures, and its errors.

Everything here is a frozen value. Backends build these from whatever they read (NVML, AMD SMI, a host
file) and hand them out; nobody mutates them afterwards, so a snapshot can be shared with the agent's
reconcilers and sent to the controller without copying.

Units are the same for every backend: memory in MiB, power in watts, temperatures in degrees Celsius,
clocks in MHz, utilisation in percent (0-100). ``None`` means "this GPU or driver cannot say" (NVML answers
NOT_SUPPORTED for GPU utilisation on a GPU in MIG mode, for example), never zero.

Errors: ``HardwareError`` and one subclass per kind of failure the drivers report. NVML and the simulator
raise the same subclass for the same situation, so callers (the MIG reconciler, health checks) branch on
the class, never on message text.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NewType

# A GPU's UUID as NVML spells it: ``GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`` (AMD UUIDs get the same prefix).
# One type for hw, the agent and the controller, re-exported here for the hardware code.
from gridmesh.common.model import GpuUuid as GpuUuid

MigUuid = NewType("MigUuid", str)
"""A MIG device's UUID as NVML spells it: ``MIG-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx``. What a workload's
``CUDA_VISIBLE_DEVICES`` names, and what allocations record."""


class HardwareError(Exception):
    """The host's hardware, its driver or its description could not be read or changed.

    The message names what failed (the backend call and the GPU, or the host file with the field) so that
    an operator can act on it without a traceback. Subclasses name the kind of failure.
    """


class InsufficientResourcesError(HardwareError):
    """The GPU has no room for what was asked: a MIG placement overlaps another instance, a profile is at its
    maximum count, or the compute slices are used up (NVML_ERROR_INSUFFICIENT_RESOURCES)."""


class InUseError(HardwareError):
    """Something is running where a change was asked: processes on an instance being destroyed, or on a GPU
    whose MIG mode or partitioning was to change (NVML_ERROR_IN_USE, AMDSMI_STATUS_BUSY)."""


class NotSupportedError(HardwareError):
    """This GPU, driver or backend cannot do it: MIG on a GPU without MIG, a profile the GPU lacks, a
    partition mode the model does not offer (NVML_ERROR_NOT_SUPPORTED, AMDSMI_STATUS_NOT_SUPPORTED)."""


class ResetRequiredError(HardwareError):
    """The GPU must be reset first: its MIG mode change is pending a reset, or the driver asks for a reset
    (NVML_ERROR_RESET_REQUIRED). gridmesh never resets a GPU itself; an operator does."""


class NotFoundError(HardwareError):
    """The GPU, instance or process named does not exist (any more) (NVML_ERROR_NOT_FOUND)."""


class InvalidArgumentError(HardwareError):
    """The request itself is malformed for this GPU: a placement start the profile does not allow, or a
    handle to an instance that was destroyed (NVML_ERROR_INVALID_ARGUMENT)."""


class GpuLostError(HardwareError):
    """The GPU stopped answering: it fell off the bus (XID 79) (NVML_ERROR_GPU_IS_LOST)."""


class NoPermissionError(HardwareError):
    """The agent lacks the privilege for the call, e.g. MIG changes without root (NVML_ERROR_NO_PERMISSION)."""


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
    cpu_affinity: tuple[int, ...] = ()
    """The CPUs closest to this GPU (ids as the kernel numbers them); empty when the platform does not say."""
    nvlink_peers: tuple[str, ...] = ()
    """PCI bus ids at the far end of this GPU's active NVLinks (other GPUs or NVSwitches), sorted."""
    mig_instances: tuple[GpuInstance, ...] = ()
    """The MIG instances that exist now (only when ``mig_enabled``), by GPU instance id."""
    vendor: str = "nvidia"

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


@dataclass(frozen=True, slots=True)
class GpuInstance:
    """One MIG GPU instance (GI) and the MIG device (its compute instance) that workloads see.

    ``gpu_instance_id`` is the driver's id: not the creation order, and reused after a destroy (a new
    instance at the same placement may get the same id), so the ``uuid`` is what identifies a MIG device
    over time. ``start``/``size`` are on the memory-slice axis (8 slices on an H100). ``uuid`` is empty
    while the GI has no compute instance (no MIG device yet).
    """

    gpu: GpuUuid
    gpu_instance_id: int
    profile_id: int
    profile: str
    start: int
    size: int
    uuid: MigUuid
    compute_instance_ids: tuple[int, ...] = ()

    def __str__(self) -> str:
        return f"gi {self.gpu_instance_id} ({self.profile} at {self.start})"


@dataclass(frozen=True, slots=True)
class MigState:
    """A GPU's MIG mode and instances.

    ``enabled`` is the mode in effect, ``pending`` the mode after the next GPU reset (equal to ``enabled``
    unless a change waits for a reset).
    """

    gpu: GpuUuid
    capable: bool
    enabled: bool
    pending: bool
    instances: tuple[GpuInstance, ...] = ()

    @property
    def reset_pending(self) -> bool:
        return self.enabled != self.pending

    def instance(self, uuid: str) -> GpuInstance | None:
        """The instance whose MIG device has this UUID, or None."""
        for gi in self.instances:
            if gi.uuid == uuid:
                return gi
        return None


@dataclass(frozen=True, slots=True)
class GpuProcess:
    """A compute process on a GPU. ``gpu_instance_id``/``compute_instance_id`` are None on a GPU not in
    MIG mode (NVML says 0xFFFFFFFF there). ``used_mib`` is None where the driver cannot say."""

    pid: int
    used_mib: int | None
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None

    def __str__(self) -> str:
        used = "" if self.used_mib is None else f", {self.used_mib} MiB"
        where = "" if self.gpu_instance_id is None else f", gi {self.gpu_instance_id}"
        return f"pid {self.pid}{used}{where}"


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One telemetry reading of one GPU, in the units every backend uses (see the module docstring).

    ``mem_bw_util_pct`` is the share of time the memory was being read or written (NVML's
    ``utilization.memory``, AMD's UMC activity), which dashboards show as memory-bandwidth utilisation.
    """

    gpu: GpuUuid
    gpu_util_pct: float | None
    mem_bw_util_pct: float | None
    memory_used_mib: int | None
    memory_free_mib: int | None
    power_w: float | None
    temperature_c: float | None
    sm_clock_mhz: int | None
    mem_clock_mhz: int | None


class RecoveryAction(enum.IntEnum):
    """What the driver says a GPU needs (NVML_FI_DEV_GET_GPU_RECOVERY_ACTION; values are NVML's)."""

    NONE = 0
    GPU_RESET = 1
    NODE_REBOOT = 2
    DRAIN_P2P = 3
    DRAIN_AND_RESET = 4
    RECOVER_IMEX_DOMAIN = 5
    BUS_RESET = 6
    SYSTEM_REBOOT = 7


@dataclass(frozen=True, slots=True)
class XidEvent:
    """An XID (a driver-reported GPU error) seen by a backend.

    ``seq`` increases by one for every event the backend sees, host-wide, so "new since" is a comparison.
    ``gpu_instance_id`` is set when the driver attributes the error to one MIG GPU instance.
    """

    seq: int
    gpu: GpuUuid
    code: int
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None

    def __str__(self) -> str:
        where = "" if self.gpu_instance_id is None else f" in gi {self.gpu_instance_id}"
        return f"XID {self.code}{where}"


@dataclass(frozen=True, slots=True)
class HealthReading:
    """What a GPU's driver says about its health now. Counters are cumulative; compare two readings.

    - ``reachable`` is False when the GPU stopped answering (fell off the bus); the other fields are then
      unknown and ``detail`` says what failed.
    - ``ecc_uncorrectable``: uncorrectable ECC errors since the last reset (volatile), None if unknown.
    - ``remapped_rows_uncorrectable``, ``remap_pending``, ``remap_failed``: row remapping, the Hopper-era
      memory health signal; a pending remap needs a GPU reset to take effect.
    - ``recovery_action``: what the driver asks for (None where the driver cannot say).
    - ``xid_seq``: the ``seq`` of the newest XID this backend has seen on this GPU (0: none);
      ``xids``: the most recent ones (bounded), oldest first.
    """

    gpu: GpuUuid
    reachable: bool
    ecc_uncorrectable: int | None = None
    remapped_rows_uncorrectable: int | None = None
    remap_pending: bool = False
    remap_failed: bool = False
    recovery_action: RecoveryAction | None = None
    xid_seq: int = 0
    xids: tuple[XidEvent, ...] = ()
    detail: str = ""

    def xids_after(self, seq: int) -> tuple[XidEvent, ...]:
        return tuple(x for x in self.xids if x.seq > seq)


@dataclass(frozen=True, slots=True)
class PartitionState:
    """A GPU's compute and memory partition modes (AMD Instinct: SPX/DPX/QPX/CPX and NPS1/NPS4).

    ``compute_modes``/``memory_modes`` list what the model offers; empty where partitioning is not
    supported, and then ``compute``/``memory`` are empty too.
    """

    gpu: GpuUuid
    compute: str
    memory: str
    compute_modes: tuple[str, ...] = ()
    memory_modes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MigModeChange:
    """The answer to a MIG-mode change: the mode in effect and the one pending a reset."""

    gpu: GpuUuid
    enabled: bool
    pending: bool

    @property
    def reset_required(self) -> bool:
        return self.enabled != self.pending
