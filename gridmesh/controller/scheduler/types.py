"""The scheduler's input (a snapshot of the grid, scoring weights) and outputs (a plan, an explanation).

Rules:
- Everything here is a frozen, slotted value; collections are tuples (or read-only mappings in the
  snapshot), so a plan can be compared, hashed, logged and golden-tested.
- Every plan element is self-describing: it names the devices it touches, the GPRs on both sides and
  the priorities it relied on, so ``plan_apply`` can re-verify it against fresh state without asking
  the scheduler again (``scheduler.verify`` does exactly that, purely).
- New snapshot fields all have defaults that mean "nothing known": no running GPRs known (so nothing is
  preemptible or movable), no reservations, nothing unclean beyond what the inventory says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gridmesh.common.model import AllocationId, GprId, GpuUuid, HostId, PriorityTier, SiteName, SiteTier, WorkspaceName
from gridmesh.controller.model import Allocation, Gpr, Host, Site, Workspace


@dataclass(frozen=True, slots=True)
class ScoringWeights:
    """How feasible hosts are ranked (lower cost wins), and the knobs of preemption and migration.

    The cost of a host is ``site cost + packing cost``; the site cost sums, for the GPR's origin, its
    preferences and the GPU model: ``latency_per_ms * latency`` + ``tier_step * rank`` (0 for the
    preferred site, then 1, 2, ... through the GPR's tier, its spill-over tiers, then any other tier) +
    ``price_per_dollar * price per GPU-hour`` + ``locality_miss`` when the GPR's model artifact is not
    at the site. The packing cost is ``packing * free GPUs left on the host after placing /
    the largest host``, so partly used hosts fill first and whole hosts stay free.
    """

    latency_per_ms: float = 1.0
    # Latency assumed between sites that state none (and no origin means no latency term at all).
    unknown_latency_ms: float = 250.0
    tier_step: float = 100.0
    price_per_dollar: float = 10.0
    locality_miss: float = 40.0
    packing: float = 20.0
    # A GPR that got its devices by preempting someone is not itself a victim for this long.
    preemption_cooldown_s: float = 600.0
    # An allocation younger than this (``Allocation.created_at``) is never moved to make room.
    migration_cooldown_s: float = 600.0
    # Victims are sought in the first sites (by the GPR's own ranking) where preemption can make
    # room; among those, the set losing the fewest GPU-seconds wins.
    preemption_site_window: int = 3
    # A reservation whose devices are not clean after this long is dropped and its GPR re-planned.
    reservation_timeout_s: float = 900.0


@dataclass(frozen=True, slots=True)
class MigSlot:
    """One MIG GPU instance: a profile at a start position on the GPU's memory-slice axis.

    ``size`` (memory slices) and ``compute_slices`` are carried so that overlap and the compute sum
    can be re-checked without the profile table.
    """

    gpu_uuid: GpuUuid
    gpu_index: int
    profile: str
    start: int
    size: int
    compute_slices: int

    @property
    def slices(self) -> range:
        return range(self.start, self.start + self.size)

    def overlaps(self, other: MigSlot) -> bool:
        return (self.gpu_uuid == other.gpu_uuid and self.start < other.start + other.size
                and other.start < self.start + self.size)

    def __str__(self) -> str:
        return f"{self.profile} at {self.start} on GPU {self.gpu_index}"


@dataclass(frozen=True, slots=True)
class Reservation:
    """Devices set aside for a GPR replica until they are reported clean (after an eviction or a move).

    The controller stores it when it commits the evictions/migration it came with. While it is in
    the snapshot, the devices are held for the GPR (they count against its workspace's quota and
    nobody else is placed on them). Once every device is free and clean, ``plan`` returns a
    ``Placement`` with ``reservation=True`` for it, which the controller commits as the allocation
    (and deletes the reservation).
    """

    gpr_id: GprId
    workspace: WorkspaceName
    replica: int
    host_id: HostId
    site: SiteName
    gpu_indexes: tuple[int, ...]
    gpu_uuids: tuple[GpuUuid, ...]
    # The allocations whose devices it takes over (evicted, or moved away by a migration).
    waits_for: tuple[AllocationId, ...]
    created_at: float
    mig_profile: str = ""
    mig_slots: tuple[MigSlot, ...] = ()
    gpu_equivalents: float = 0.0
    cause: str = "preemption"  # or "migration"

    def __str__(self) -> str:
        devices = ", ".join(map(str, self.mig_slots)) if self.mig_slots else f"gpus {list(self.gpu_indexes)}"
        return (f"reserve {self.gpr_id}/{self.replica} on {self.host_id} {devices} until clean "
                f"(after {', '.join(self.waits_for)})")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An immutable view of the grid at one store revision.

    ``pending``: GPRs that hold fewer allocations (plus reservations) than replicas.
    ``gprs``: every live GPR that holds allocations or reservations (their priority, redistribution
    policy, ``running_since`` and ``expires_at`` decide preemption, migration and estimated waits).
    Allocations count as running (victims, movable) only in state RUNNING.
    ``allocation_mig``: for MIG allocations, the instance slots they hold (else they are found by
    ``device_uuids`` in the GPUs' reported instances; else the whole GPU counts as taken).
    ``reservations``: committed reservations still waiting for clean devices.
    ``unclean_gpus`` / ``unclean_slots``: devices released from a tenant and not yet reported clean
    (in addition to ``GpuInfo.health``, which the agent reports).
    ``artifacts_at_site``: model artifact name -> sites that hold it (data locality).
    ``preempted_at``: GPR -> when it last got devices by preempting someone (ping-pong guard).
    """

    revision: int
    now: float
    sites: Mapping[SiteName, Site]
    hosts: tuple[Host, ...]
    workspaces: Mapping[WorkspaceName, Workspace]
    allocations: tuple[Allocation, ...]
    pending: tuple[Gpr, ...]
    gprs: Mapping[GprId, Gpr] = field(default_factory=dict)
    allocation_mig: Mapping[AllocationId, tuple[MigSlot, ...]] = field(default_factory=dict)
    reservations: tuple[Reservation, ...] = ()
    unclean_gpus: frozenset[GpuUuid] = frozenset()
    unclean_slots: frozenset[MigSlot] = frozenset()
    artifacts_at_site: Mapping[str, frozenset[SiteName]] = field(default_factory=dict)
    preempted_at: Mapping[GprId, float] = field(default_factory=dict)
    weights: ScoringWeights = field(default_factory=ScoringWeights)


@dataclass(frozen=True, slots=True)
class Placement:
    """One GPR replica bound to devices on a host.

    ``mig_profile``/``mig_slots``: for MIG requests, the instance to create (or reuse) on each GPU.
    ``gpu_equivalents``: what it counts against the workspace's quota (1 per whole GPU; a MIG instance
    counts its compute slices over the GPU's).
    ``reservation``: it commits a reservation from an earlier round (its devices are clean now).
    ``after_eviction``: this is a preempted replica placed again; commit it only if that eviction
    (of the same GPR and replica) was committed first.
    """

    gpr_id: GprId
    replica: int
    host_id: HostId
    site: SiteName
    gpu_indexes: tuple[int, ...]
    gpu_uuids: tuple[GpuUuid, ...]
    mig_profile: str = ""
    mig_slots: tuple[MigSlot, ...] = ()
    workspace: WorkspaceName = field(default=WorkspaceName(""))
    gpu_equivalents: float = 0.0
    reservation: bool = False
    after_eviction: AllocationId | None = None

    def __str__(self) -> str:
        if self.mig_slots:
            return f"place {self.gpr_id}/{self.replica} on {self.host_id} {', '.join(map(str, self.mig_slots))}"
        return f"place {self.gpr_id}/{self.replica} on {self.host_id} gpus {list(self.gpu_indexes)}"


@dataclass(frozen=True, slots=True)
class Eviction:
    """Preempt one allocation: release it now; its devices go to ``for_gpr`` once reported clean.

    Re-verify before committing: the allocation still exists on that host with those devices, the
    victim is still strictly lower priority than ``for_gpr`` and preemptible, and (if it has a minimum
    runtime) has run at least that long.
    """

    allocation_id: AllocationId
    gpr_id: GprId
    workspace: WorkspaceName
    replica: int
    host_id: HostId
    gpu_indexes: tuple[int, ...]
    gpu_uuids: tuple[GpuUuid, ...]
    victim_priority: tuple[PriorityTier, int]
    for_gpr: GprId
    for_priority: tuple[PriorityTier, int]
    lost_gpu_seconds: float
    reason: str
    mig_slots: tuple[MigSlot, ...] = ()

    def __str__(self) -> str:
        return (f"evict {self.allocation_id} ({self.workspace}/{self.gpr_id} replica {self.replica}, "
                f"{self.victim_priority[0].name} {self.victim_priority[1]}) on {self.host_id} gpus "
                f"{list(self.gpu_indexes)} for {self.for_gpr} ({self.for_priority[0].name} {self.for_priority[1]})")


@dataclass(frozen=True, slots=True)
class Migration:
    """Move one allocation (make before break): place ``to``, and once it runs release the old one.

    The devices it leaves are reserved for ``for_gpr`` (a ``Reservation`` in the same plan).
    """

    allocation_id: AllocationId
    gpr_id: GprId
    replica: int
    from_host: HostId
    from_gpu_uuids: tuple[GpuUuid, ...]
    to: Placement
    for_gpr: GprId
    reason: str

    def __str__(self) -> str:
        return (f"move {self.allocation_id} ({self.gpr_id} replica {self.replica}) from {self.from_host} to "
                f"{self.to.host_id} gpus {list(self.to.gpu_indexes)} for {self.for_gpr}")


@dataclass(frozen=True, slots=True)
class Plan:
    """What one scheduling round proposes. Apply in this order: dropped reservations, evictions,
    migrations, reservations, placements (victims' own re-placements come after their evictions)."""

    placements: tuple[Placement, ...] = ()
    # GPRs that stay pending this round, with the reason a person would want to read.
    unplaced: tuple[tuple[GprId, str], ...] = ()
    evictions: tuple[Eviction, ...] = ()
    migrations: tuple[Migration, ...] = ()
    reservations: tuple[Reservation, ...] = ()
    # Reservations from the snapshot given up (host gone, device unhealthy, timed out), with why.
    dropped_reservations: tuple[tuple[Reservation, str], ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.placements or self.evictions or self.migrations or self.reservations
                    or self.dropped_reservations)


@dataclass(frozen=True, slots=True)
class Exclusion:
    constraint: str
    hosts_excluded: int
    detail: str


@dataclass(frozen=True, slots=True)
class Alternative:
    """A nearby request that would fit now (gridmesh.v1 ``Alternative``).

    ``kind`` is one of "site", "tier", "mig_profile", "gpu_model", "wait"; ``estimated_wait_s`` is set
    for "wait" (None when nothing is known to end).
    """

    kind: str
    description: str
    site: SiteName | None = None
    tier: SiteTier | None = None
    mig_profile: str = ""
    gpu_model: str = ""
    estimated_wait_s: float | None = None


@dataclass(frozen=True, slots=True)
class Explanation:
    gpr_id: GprId
    summary: str
    hosts_considered: int
    hosts_feasible: int
    exclusions: tuple[Exclusion, ...]
    queue_position: int
    preemption_possible: bool
    preemption_detail: str
    alternatives: tuple[Alternative, ...] = ()
