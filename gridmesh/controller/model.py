"""The controller's stored objects: sites, hosts, workspaces, GPRs and allocations.

Rules:
- Frozen dataclasses; a change is a new value written through the store in one transaction.
- ``revision`` is the global store revision at which the object last changed; the store sets it.
- Validation of what clients send happens before these are built (``controller.api.validate``);
  a value of these types is always valid.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from gridmesh.common.model import (
    AllocationId,
    AllocationState,
    GprId,
    GprState,
    GpuHealth,
    GpuUuid,
    HostId,
    HostState,
    Inventory,
    PlacementPolicy,
    PriorityTier,
    SharingMode,
    SiteName,
    SiteTier,
    WgInterfaceSpec,
    Workload,
    WorkspaceName,
)
from gridmesh.controller.overlay import MemberReport, OverlayState


@dataclass(frozen=True, slots=True)
class Site:
    name: SiteName
    tier: SiteTier
    region: str
    price_per_gpu_hour: tuple[tuple[str, float], ...] = ()
    latency_ms: tuple[tuple[str, float], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    revision: int = 0


@dataclass(frozen=True, slots=True)
class Host:
    id: HostId
    site: SiteName
    state: HostState
    inventory: Inventory
    state_reason: str = ""
    connected: bool = False
    # The store revision of the host's current desired HostSpec; bumped whenever its allocations change.
    desired_revision: int = 0
    applied_revision: int = 0
    last_seen: float = 0.0
    underlay_address: str = ""
    # The state an operator set (READY, CORDONED or DRAINING); ``state`` is OFFLINE while disconnected.
    admin_state: HostState = HostState.READY
    # GPUs taken from a tenant, with the revision that released them. Each stays out of use until the
    # host reports it HEALTHY in a status sent after applying that revision (verified clean there).
    released_gpus: tuple[tuple[GpuUuid, int], ...] = ()
    # Its overlay interfaces as last planned (part of its HostSpec), and what its agent last reported
    # about them (public keys and ports: what the other members need to reach it).
    overlay: tuple[WgInterfaceSpec, ...] = ()
    overlay_reports: tuple[MemberReport, ...] = ()
    revision: int = 0

    @property
    def schedulable(self) -> bool:
        return self.connected and self.state is HostState.READY

    def as_scheduled(self) -> Host:
        """The host as placement must see it: released GPUs count as UNCLEAN whatever was last reported."""
        if not self.released_gpus:
            return self
        released = {uuid for uuid, _ in self.released_gpus}
        gpus = tuple(
            replace(g, health=GpuHealth.UNCLEAN, health_reason="released; waiting for the host to verify it clean")
            if g.uuid in released and g.health is GpuHealth.HEALTHY else g
            for g in self.inventory.gpus
        )
        return replace(self, inventory=replace(self.inventory, gpus=gpus))


@dataclass(frozen=True, slots=True)
class Quota:
    max_gpus: int = 0  # 0 means unlimited
    guaranteed_gpus: int = 0
    borrow_limit: int = 0


@dataclass(frozen=True, slots=True)
class Workspace:
    name: WorkspaceName
    description: str = ""
    fair_share_weight: float = 1.0
    quota: Quota = field(default_factory=Quota)
    allowed_regions: tuple[str, ...] = ()
    overlay_cidr: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    created_at: float = 0.0
    revision: int = 0


@dataclass(frozen=True, slots=True)
class GpuShape:
    count: int = 1
    models: tuple[str, ...] = ()
    min_memory_mib: int = 0
    min_compute_capability: str = ""
    mig_profile: str = ""
    fraction: float = 0.0


@dataclass(frozen=True, slots=True)
class PlacementSpec:
    policy: PlacementPolicy = PlacementPolicy.REDISTRIBUTABLE
    tier: SiteTier | None = None
    site: SiteName | None = None
    tier_preference: tuple[SiteTier, ...] = ()
    origin_site: SiteName | None = None
    allowed_regions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RedistributionPolicy:
    may_migrate: bool = False
    preemptible: bool = False
    min_runtime_s: float = 0.0


@dataclass(frozen=True, slots=True)
class GprSpec:
    workspace: WorkspaceName
    shape: GpuShape
    priority_tier: PriorityTier
    priority: int
    name: str = ""
    sharing: SharingMode = SharingMode.EXCLUSIVE
    placement: PlacementSpec = field(default_factory=PlacementSpec)
    duration_s: float | None = None
    redistribution: RedistributionPolicy = field(default_factory=RedistributionPolicy)
    replicas: int = 1
    workload: Workload = field(default_factory=Workload)
    labels: tuple[tuple[str, str], ...] = ()
    model_artifact: str = ""


@dataclass(frozen=True, slots=True)
class Gpr:
    id: GprId
    spec: GprSpec
    state: GprState
    created_at: float
    updated_at: float
    state_reason: str = ""
    running_since: float | None = None
    expires_at: float | None = None
    request_id: str = ""
    # When it last got devices by preempting someone (it is not a victim itself for a while).
    preempted_at: float | None = None
    revision: int = 0


@dataclass(frozen=True, slots=True)
class Allocation:
    """One GPR replica bound to a host and its devices."""

    id: AllocationId
    gpr_id: GprId
    workspace: WorkspaceName
    replica: int
    host_id: HostId
    site: SiteName
    gpu_indexes: tuple[int, ...]
    gpu_uuids: tuple[GpuUuid, ...]
    created_at: float
    mig_profile: str = ""
    mig_starts: tuple[int, ...] = ()  # the MIG instance's memory-slice start on each GPU
    device_uuids: tuple[str, ...] = ()
    state: AllocationState = AllocationState.PENDING
    state_reason: str = ""
    # Make-before-break: the allocation this one replaces, released once this one runs.
    replaces: AllocationId | None = None
    revision: int = 0


@dataclass(frozen=True, slots=True)
class BootstrapToken:
    """A one-time enrollment token. Only a hash of the secret is stored; the secret is shown once."""

    id: str
    site: SiteName
    secret_sha256: str
    expires_at: float
    description: str = ""
    used: bool = False
    revision: int = 0


@dataclass(frozen=True, slots=True)
class OverlayRecord:
    """The overlay plan's memory (workspace CIDRs, address leases, key choices); one, with id "overlay"."""

    id: str
    state: OverlayState
    revision: int = 0
