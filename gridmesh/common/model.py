"""The domain vocabulary shared by the controller and the agent.

Rules:
- Frozen, slotted dataclasses only; collections are tuples so values hash and compare.
- Enum values equal the gridmesh.v1 wire values, so conversion is a plain cast.
- Times are float seconds since the epoch; durations are float seconds.
- Nothing here imports generated protobuf code (see gridmesh.common.convert for that edge).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NewType

HostId = NewType("HostId", str)
GprId = NewType("GprId", str)
AllocationId = NewType("AllocationId", str)
WorkspaceName = NewType("WorkspaceName", str)
SiteName = NewType("SiteName", str)
GpuUuid = NewType("GpuUuid", str)


class SiteTier(enum.IntEnum):
    FAR_EDGE = 1
    NEAR_EDGE = 2
    CORE = 3
    AI_FACTORY = 4
    CLOUD = 5


class PriorityTier(enum.IntEnum):
    LOW = 1
    MEDIUM = 2
    HIGH = 3

    @property
    def max_number(self) -> int:
        """The highest priority number allowed inside this tier (the lowest is 1)."""
        return _PRIORITY_MAX[self]


_PRIORITY_MAX = {PriorityTier.LOW: 100, PriorityTier.MEDIUM: 200, PriorityTier.HIGH: 300}


class SharingMode(enum.IntEnum):
    EXCLUSIVE = 1
    MIG = 2
    TIME_SLICED = 3


class PlacementPolicy(enum.IntEnum):
    PINNED = 1
    REDISTRIBUTABLE = 2


class GprState(enum.IntEnum):
    PENDING = 1
    PLACED = 2
    PROVISIONING = 3
    RUNNING = 4
    PREEMPTED = 5
    MIGRATING = 6
    RELEASED = 7
    EXPIRED = 8
    FAILED = 9
    CANCELLED = 10

    @property
    def terminal(self) -> bool:
        """A terminal GPR holds no allocation and never changes state again."""
        return self in _TERMINAL_GPR_STATES

    @property
    def holds_allocations(self) -> bool:
        return self in (GprState.PLACED, GprState.PROVISIONING, GprState.RUNNING, GprState.MIGRATING)


_TERMINAL_GPR_STATES = frozenset(
    {GprState.RELEASED, GprState.EXPIRED, GprState.FAILED, GprState.CANCELLED}
)


class HostState(enum.IntEnum):
    READY = 1
    CORDONED = 2
    DRAINING = 3
    OFFLINE = 4


class GpuHealth(enum.IntEnum):
    HEALTHY = 1
    UNCLEAN = 2
    UNHEALTHY = 3


class AllocationState(enum.IntEnum):
    PENDING = 1
    RUNNING = 2
    FAILED = 3


@dataclass(frozen=True, slots=True)
class Port:
    name: str
    port: int
    protocol: str = "tcp"


@dataclass(frozen=True, slots=True)
class Workload:
    """What a replica runs. An empty command means the allocation only reserves devices."""

    command: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    ports: tuple[Port, ...] = ()


@dataclass(frozen=True, slots=True)
class MigInstance:
    uuid: str
    profile: str
    start: int
    gpu_instance_id: int


@dataclass(frozen=True, slots=True)
class GpuInfo:
    index: int
    uuid: GpuUuid
    model: str
    memory_mib: int
    compute_capability: str
    pci_bus_id: str = ""
    numa_node: int = -1
    mig_capable: bool = False
    mig_enabled: bool = False
    mig_instances: tuple[MigInstance, ...] = ()
    health: GpuHealth = GpuHealth.HEALTHY
    health_reason: str = ""


@dataclass(frozen=True, slots=True)
class Inventory:
    hostname: str
    gpus: tuple[GpuInfo, ...] = ()
    hw_backend: str = "simulator"
    agent_version: str = ""
    cpu_count: int = 0
    memory_mib: int = 0
    has_dpu: bool = False


@dataclass(frozen=True, slots=True)
class AllocationSpec:
    """One allocation as a host's desired state names it."""

    allocation_id: AllocationId
    gpr_id: GprId
    workspace: WorkspaceName
    replica: int
    gpu_indexes: tuple[int, ...]
    gpu_uuids: tuple[GpuUuid, ...]
    mig_profile: str = ""
    workload: Workload = field(default_factory=Workload)
    # The memory-slice start of the MIG instance on each GPU, where the scheduler chose one.
    mig_starts: tuple[int, ...] = ()


# -- workspace overlays (see gridmesh.dataplane.model for the rules and the observed state) -------------

DEFAULT_KEEPALIVE_S = 25


@dataclass(frozen=True, slots=True)
class WgPeer:
    """One peer of an overlay interface, as desired.

    ``allowed_ips`` empty means a staged key, published ahead of a key rotation (see
    ``gridmesh.dataplane.model``); ``persistent_keepalive`` 0 turns keepalives off.
    """

    public_key: str
    endpoint: str = ""
    allowed_ips: tuple[str, ...] = ()
    persistent_keepalive: int = DEFAULT_KEEPALIVE_S


@dataclass(frozen=True, slots=True)
class WgInterfaceSpec:
    """One workspace's overlay interface on one host, as the controller wants it.

    ``name``: the device name, unique across every host that may share a kernel (see
    ``naming.interface_name``), at most 15 characters.
    ``private_key_ref``: the public key of the key pair to use; empty means "the key you have"
    (the host makes one on first use). Naming a key the host published as its *next* key is how the
    controller tells the host to switch to it (key rotation).
    ``listen_port``: 0 lets the host choose (and keep) a port; it reports the port it uses.
    ``addresses``: the host's overlay address with the workspace prefix length first, then the
    addresses of the host's workloads in the workspace (``/32``).
    """

    name: str
    workspace: WorkspaceName
    private_key_ref: str = ""
    listen_port: int = 0
    addresses: tuple[str, ...] = ()
    peers: tuple[WgPeer, ...] = ()


@dataclass(frozen=True, slots=True)
class OverlaySpec:
    """Every overlay interface one host should have; an interface not listed here is removed."""

    host_id: HostId
    interfaces: tuple[WgInterfaceSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class HostSpec:
    """The whole desired state of one host at one revision (level-triggered: never a delta)."""

    host_id: HostId
    revision: int
    allocations: tuple[AllocationSpec, ...] = ()
    # The host's overlay interfaces, one per workspace it serves; an interface not listed is removed.
    overlay: tuple[WgInterfaceSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class AllocationStatus:
    """One allocation as the host observes it."""

    allocation_id: AllocationId
    state: AllocationState
    reason: str = ""
    device_uuids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened, with why. ``seq`` and ``revision`` are set by the store."""

    kind: str
    subject: str
    reason: str
    message: str
    time: float
    from_state: str = ""
    to_state: str = ""
    attributes: tuple[tuple[str, str], ...] = ()
    seq: int = 0
    revision: int = 0
