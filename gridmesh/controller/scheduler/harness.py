"""A pure stand-in for the controller around the scheduler, for tests and the benchmark (Nomad's
``scheduler/testing.go``): builders for grids and GPRs, and ``apply`` that commits a plan to a snapshot
the way plan_apply and the agents will (evictions release and leave devices unclean; reservations wait;
devices become clean only when ``report_clean`` says so; GPRs start running when ``start_running`` does).

Rules:
- It follows the plan's own order (dropped reservations, evictions, migrations, reservations,
  placements) and trusts the plan: checking plans is ``verify``'s job, not this module's.
- Migrations are applied as completed at once (make, then break): the new allocation exists, the old
  one is gone and its devices are unclean.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from gridmesh.common.model import (
    AllocationId,
    AllocationState,
    GprId,
    GprState,
    GpuHealth,
    GpuInfo,
    GpuUuid,
    HostId,
    HostState,
    Inventory,
    MigInstance,
    PlacementPolicy,
    PriorityTier,
    SiteName,
    SiteTier,
    WorkspaceName,
)
from gridmesh.controller.model import (
    Allocation,
    Gpr,
    GprSpec,
    GpuShape,
    Host,
    PlacementSpec,
    RedistributionPolicy,
    Site,
    Workspace,
)
from gridmesh.controller.scheduler.types import MigSlot, Plan, Reservation, Snapshot

# Real models as NVML and the catalog name them: (model, memory MiB, compute capability, MIG capable).
H100 = ("H100 80GB HBM3", 81559, "9.0", True)
A100 = ("A100-SXM4-80GB", 81920, "8.0", True)
A100_40 = ("A100-SXM4-40GB", 40960, "8.0", True)
H200 = ("H200", 144384, "9.0", True)
L4 = ("L4", 24576, "8.9", False)
L40S = ("L40S", 49152, "8.9", False)
B200 = ("B200", 184320, "10.0", True)
Model = tuple[str, int, str, bool]


def gpu(host_id: str, index: int, model: Model = H100, *, mig_enabled: bool = False, numa: int = -1,
        health: GpuHealth = GpuHealth.HEALTHY, instances: Sequence[tuple[str, int]] = ()) -> GpuInfo:
    name, memory, cc, mig_capable = model
    uuid = f"GPU-{host_id}-{index}"
    return GpuInfo(index=index, uuid=GpuUuid(uuid), model=name, memory_mib=memory, compute_capability=cc,
                   mig_capable=mig_capable, mig_enabled=mig_enabled, numa_node=numa, health=health,
                   mig_instances=tuple(MigInstance(f"MIG-{uuid}-{s}", p, s, i + 1)
                                       for i, (p, s) in enumerate(instances)))


def host(host_id: str, site: str = "core", gpus: Sequence[GpuInfo] | int | None = None, *,
         model: Model = H100, mig_enabled: bool = False, state: HostState = HostState.READY,
         connected: bool = True) -> Host:
    if gpus is None:
        gpus = 2
    if isinstance(gpus, int):
        gpus = [gpu(host_id, i, model, mig_enabled=mig_enabled) for i in range(gpus)]
    return Host(id=HostId(host_id), site=SiteName(site), state=state, connected=connected,
                inventory=Inventory(hostname=host_id, gpus=tuple(gpus)))


def site(name: str, tier: SiteTier = SiteTier.CORE, region: str = "eu", *,
         latency: Iterable[tuple[str, float]] = (), prices: Iterable[tuple[str, float]] = ()) -> Site:
    return Site(name=SiteName(name), tier=tier, region=region, latency_ms=tuple(latency),
                price_per_gpu_hour=tuple(prices))


def gpr(gpr_id: str = "g1", *, count: int = 1, replicas: int = 1, workspace: str = "ws",
        models: tuple[str, ...] = (), min_memory_mib: int = 0, min_cc: str = "", mig_profile: str = "",
        fraction: float = 0.0, tier: PriorityTier = PriorityTier.MEDIUM, priority: int = 50,
        created_at: float = 0.0, placement: PlacementSpec | None = None, pinned_site: str | None = None,
        regions: tuple[str, ...] = (), preemptible: bool = False, may_migrate: bool = False,
        min_runtime_s: float = 0.0, artifact: str = "", state: GprState = GprState.PENDING,
        running_since: float | None = None, expires_at: float | None = None) -> Gpr:
    if placement is None:
        placement = (PlacementSpec(policy=PlacementPolicy.PINNED, site=SiteName(pinned_site), allowed_regions=regions)
                     if pinned_site else PlacementSpec(allowed_regions=regions))
    spec = GprSpec(workspace=WorkspaceName(workspace),
                   shape=GpuShape(count=count, models=models, min_memory_mib=min_memory_mib,
                                  min_compute_capability=min_cc, mig_profile=mig_profile, fraction=fraction),
                   priority_tier=tier, priority=priority, replicas=replicas, placement=placement,
                   redistribution=RedistributionPolicy(may_migrate=may_migrate, preemptible=preemptible,
                                                       min_runtime_s=min_runtime_s),
                   model_artifact=artifact)
    return Gpr(id=GprId(gpr_id), spec=spec, state=state, created_at=created_at, updated_at=created_at,
               running_since=running_since, expires_at=expires_at)


def allocation(g: Gpr, h: Host, indexes: Sequence[int], replica: int = 0, *, created_at: float = 0.0,
               mig_profile: str = "", state: AllocationState | None = None) -> Allocation:
    """An allocation of ``g`` on ``h``; RUNNING when ``g`` runs, unless ``state`` says otherwise."""
    by_index = {x.index: x for x in h.inventory.gpus}
    return Allocation(id=AllocationId(f"alloc-{g.id}-{replica}"), gpr_id=g.id, workspace=g.spec.workspace,
                      replica=replica, host_id=h.id, site=h.site, gpu_indexes=tuple(indexes),
                      gpu_uuids=tuple(by_index[i].uuid for i in indexes), created_at=created_at,
                      mig_profile=mig_profile,
                      state=state or (AllocationState.RUNNING if g.running_since is not None
                                      else AllocationState.PENDING))


def running(g: Gpr, since: float, expires_at: float | None = None) -> Gpr:
    return replace(g, state=GprState.RUNNING, running_since=since, expires_at=expires_at)


def snapshot(hosts: Sequence[Host], pending: Sequence[Gpr] = (), *, sites: Sequence[Site] = (site("core"),),
             workspaces: Sequence[Workspace] = (Workspace(name=WorkspaceName("ws")),),
             allocations: Sequence[Allocation] = (), gprs: Sequence[Gpr] = (), now: float = 100_000.0,
             **more: object) -> Snapshot:
    return Snapshot(revision=1, now=now, sites={s.name: s for s in sites}, hosts=tuple(hosts),
                    workspaces={w.name: w for w in workspaces}, allocations=tuple(allocations),
                    pending=tuple(pending), gprs={g.id: g for g in gprs}, **more)  # type: ignore[arg-type]


# -- the controller's side -----------------------------------------------------------------------------


def _pending(gprs: dict[GprId, Gpr], allocations: Sequence[Allocation], reservations: Sequence[Reservation],
             candidates: Iterable[Gpr]) -> tuple[Gpr, ...]:
    held: dict[GprId, set[int]] = {}
    for a in allocations:
        held.setdefault(a.gpr_id, set()).add(a.replica)
    for r in reservations:
        held.setdefault(r.gpr_id, set()).add(r.replica)
    out: dict[GprId, Gpr] = {}
    for g in candidates:
        g = gprs.get(g.id, g)
        if not g.state.terminal and len(held.get(g.id, ())) < g.spec.replicas:
            out[g.id] = g
    return tuple(sorted(out.values(), key=lambda g: g.id))


def apply(snap: Snapshot, plan: Plan, *, now: float | None = None) -> Snapshot:
    """The snapshot after a controller committed all of ``plan`` (see the module rules)."""
    now = snap.now if now is None else now
    gprs: dict[GprId, Gpr] = dict(snap.gprs)
    for g in snap.pending:
        gprs.setdefault(g.id, g)
    allocations = {a.id: a for a in snap.allocations}
    allocation_mig = dict(snap.allocation_mig)
    reservations = list(snap.reservations)
    unclean_gpus = set(snap.unclean_gpus)
    unclean_slots = set(snap.unclean_slots)
    preempted_at = dict(snap.preempted_at)
    requeue: list[Gpr] = []
    serial = [0]

    def new_id(g: GprId, replica: int) -> AllocationId:
        serial[0] += 1
        return AllocationId(f"alloc-{g}-{replica}-r{snap.revision}-{serial[0]}")

    def release(a: Allocation) -> None:
        slots = allocation_mig.pop(a.id, ())
        if slots:
            unclean_slots.update(slots)
        else:
            unclean_gpus.update(a.gpu_uuids)
        del allocations[a.id]

    for r, _why in plan.dropped_reservations:
        reservations.remove(r)
        requeue.append(gprs[r.gpr_id])
    for e in plan.evictions:
        release(allocations[e.allocation_id])
        victim = gprs[e.gpr_id]
        still = any(a.gpr_id == e.gpr_id for a in allocations.values())
        gprs[e.gpr_id] = replace(victim, state=victim.state if still else GprState.PENDING,
                                 running_since=victim.running_since if still else None,
                                 expires_at=victim.expires_at if still else None)
        requeue.append(gprs[e.gpr_id])
    for m in plan.migrations:
        old = allocations[m.allocation_id]
        release(old)
        t = m.to
        aid = new_id(t.gpr_id, t.replica)
        allocations[aid] = replace(
            old, id=aid, host_id=t.host_id, site=t.site, gpu_indexes=t.gpu_indexes,
            gpu_uuids=t.gpu_uuids, created_at=now, state=AllocationState.PENDING)
    for r in plan.reservations:
        reservations.append(r)
        preempted_at[r.gpr_id] = now
    for p in plan.placements:
        if p.reservation:
            match = next(r for r in reservations if (r.gpr_id, r.replica, r.host_id) == (p.gpr_id, p.replica,
                                                                                      p.host_id))
            reservations.remove(match)
        g = gprs[p.gpr_id]
        aid = new_id(p.gpr_id, p.replica)
        allocations[aid] = Allocation(id=aid, gpr_id=p.gpr_id, workspace=g.spec.workspace, replica=p.replica,
                                      host_id=p.host_id, site=p.site, gpu_indexes=p.gpu_indexes,
                                      gpu_uuids=p.gpu_uuids, created_at=now, mig_profile=p.mig_profile)
        if p.mig_slots:
            allocation_mig[aid] = p.mig_slots
        if g.state is GprState.PENDING:
            gprs[p.gpr_id] = replace(g, state=GprState.PLACED)
    live = {a.gpr_id for a in allocations.values()} | {r.gpr_id for r in reservations}
    pending = _pending(gprs, list(allocations.values()), reservations, [*snap.pending, *requeue])
    return replace(
        snap, revision=snap.revision + 1, now=now,
        allocations=tuple(sorted(allocations.values(), key=lambda a: a.id)),
        pending=pending,
        gprs={k: v for k, v in sorted(gprs.items()) if k in live},
        allocation_mig=allocation_mig, reservations=tuple(reservations),
        unclean_gpus=frozenset(unclean_gpus), unclean_slots=frozenset(unclean_slots), preempted_at=preempted_at,
    )


def report_clean(snap: Snapshot, now: float | None = None) -> Snapshot:
    """Every unclean device was scrubbed and reported clean by its agent."""
    return replace(snap, unclean_gpus=frozenset(), unclean_slots=frozenset(),
                   now=snap.now if now is None else now)


def start_running(snap: Snapshot, now: float | None = None) -> Snapshot:
    """Every allocation runs now, and every placed GPR with it (its hosts acknowledged the spec)."""
    now = snap.now if now is None else now
    allocations = tuple(replace(a, state=AllocationState.RUNNING) for a in snap.allocations)
    gprs = {k: (replace(g, state=GprState.RUNNING, running_since=now,
                        expires_at=now + g.spec.duration_s if g.spec.duration_s else None)
                if g.state in (GprState.PLACED, GprState.PROVISIONING) else g)
            for k, g in snap.gprs.items()}
    pending = tuple(gprs.get(g.id, g) for g in snap.pending)
    return replace(snap, gprs=gprs, pending=pending, now=now, allocations=allocations)


def slot(h: Host, index: int, profile: str, start: int, size: int, compute: int) -> MigSlot:
    by_index = {x.index: x for x in h.inventory.gpus}
    return MigSlot(by_index[index].uuid, index, profile, start, size, compute)
