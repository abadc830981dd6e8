"""First-fit placement: the naive baseline the placement engine is measured against.

Order of service: priority tier, then the number inside it, then submission time. Each GPR is placed
whole (all replicas) or not at all, each replica on the first host (by preferred site, tier, then host
id) with enough free whole GPUs that match its shape; every host is looked at for every request. It
neither preempts, nor moves, nor places MIG profiles or fractions (they stay pending with that reason).
The hard constraints are the engine's (``constraints``), re-exported here for older callers.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from gridmesh.common.model import GprId, GprState, GpuInfo, GpuUuid, HostId
from gridmesh.controller.model import Gpr, Host
from gridmesh.controller.scheduler.constraints import (
    CONSTRAINTS,
    allowed_regions,
    gpu_exclusion,
    host_exclusion,
    service_order,
)
from gridmesh.controller.scheduler.types import Exclusion, Explanation, Placement, Plan, Snapshot
from gridmesh.hw.catalog import fold_model_name

__all__ = ["CONSTRAINTS", "allowed_regions", "explain", "host_exclusion", "plan", "service_order"]


def _unsupported(gpr: Gpr) -> str | None:
    if gpr.spec.shape.mig_profile or gpr.spec.shape.fraction:
        return "MIG profiles and fractions are not placed by first-fit yet"
    return None


def _host_order(snapshot: Snapshot, gpr: Gpr) -> list[Host]:
    """Preferred site first (the GPR's site, then its tier, then its spill-over tiers), then by id."""
    placement = gpr.spec.placement
    tiers = [t for t in (placement.tier, *placement.tier_preference) if t is not None]

    def key(h: Host) -> tuple[int, int, int, str]:
        site = snapshot.sites.get(h.site)
        tier_rank = tiers.index(site.tier) if site and site.tier in tiers else len(tiers)
        return (0 if h.site == placement.site else 1, tier_rank, int(site.tier) if site else 99, h.id)

    return sorted(snapshot.hosts, key=key)


def plan(snapshot: Snapshot) -> Plan:
    used: dict[HostId, set[GpuUuid]] = defaultdict(set)
    gpus_by_workspace: Counter[str] = Counter()
    held: dict[GprId, set[int]] = defaultdict(set)
    for a in snapshot.allocations:
        used[a.host_id].update(a.gpu_uuids)
        gpus_by_workspace[a.workspace] += len(a.gpu_uuids)
        held[a.gpr_id].add(a.replica)
    placements: list[Placement] = []
    unplaced: list[tuple[GprId, str]] = []
    for gpr in sorted(snapshot.pending, key=service_order):
        reason = _unsupported(gpr)
        if reason:
            unplaced.append((gpr.id, reason))
            continue
        workspace = snapshot.workspaces.get(gpr.spec.workspace)
        shape = gpr.spec.shape
        # Only the replicas it does not hold yet (all of them when new; some after a scale-up or drain).
        missing = [r for r in range(gpr.spec.replicas) if r not in held[gpr.id]]
        if not missing:
            continue
        need = shape.count * len(missing)
        limit = workspace.quota.max_gpus if workspace else 0
        ws_gpus = gpus_by_workspace[gpr.spec.workspace]
        if limit and ws_gpus + need > limit:
            unplaced.append((gpr.id, f"workspace quota: {ws_gpus} of {limit} GPUs in use, {need} more asked"))
            continue
        regions = allowed_regions(gpr, workspace)
        chosen: list[Placement] = []
        taken: dict[HostId, set[GpuUuid]] = defaultdict(set)
        for replica in missing:
            for host in _host_order(snapshot, gpr):
                in_use = used[host.id] | taken[host.id]
                site = snapshot.sites.get(host.site)
                if host_exclusion(host, site, gpr, regions, in_use) is not None:
                    continue
                fitting = [g for g in host.inventory.gpus if gpu_exclusion(g, shape) is None and g.uuid not in in_use]
                # One kind of GPU per replica (constraints): the first kind with enough of them.
                kinds: dict[tuple[str, int, str], list[GpuInfo]] = {}
                for g in fitting:
                    kinds.setdefault((fold_model_name(g.model), g.memory_mib, g.compute_capability), []).append(g)
                gpus = next(v for v in kinds.values() if len(v) >= shape.count)[: shape.count]
                taken[host.id].update(g.uuid for g in gpus)
                chosen.append(Placement(gpr.id, replica, host.id, host.site,
                                        tuple(g.index for g in gpus), tuple(g.uuid for g in gpus)))
                break
            else:
                break
        if len(chosen) < len(missing):
            unplaced.append((gpr.id, "no host has room for every replica"))
            continue
        placements.extend(chosen)
        for host_id, uuids in taken.items():
            used[host_id].update(uuids)
        gpus_by_workspace[gpr.spec.workspace] += need
    return Plan(tuple(placements), tuple(unplaced))


def explain(snapshot: Snapshot, gpr: Gpr) -> Explanation:
    """Why ``gpr`` is where it is: per constraint, how many hosts it excluded."""
    used: dict[HostId, set[GpuUuid]] = defaultdict(set)
    for a in snapshot.allocations:
        used[a.host_id].update(a.gpu_uuids)
    workspace = snapshot.workspaces.get(gpr.spec.workspace)
    regions = allowed_regions(gpr, workspace)
    excluded: Counter[str] = Counter()
    for host in snapshot.hosts:
        why = host_exclusion(host, snapshot.sites.get(host.site), gpr, regions, used[host.id])
        if why is not None:
            excluded[why] += 1
    feasible = len(snapshot.hosts) - sum(excluded.values())
    details = {
        "host_state": "offline, cordoned or draining",
        "region": f"outside the allowed regions {sorted(regions) if regions is not None else []}",
        "site": f"not the pinned site {gpr.spec.placement.site}",
        "tier": f"not the pinned tier {gpr.spec.placement.tier.name.lower() if gpr.spec.placement.tier else ''}",
        "gpu_model": f"no GPU of the models {list(gpr.spec.shape.models)}",
        "gpu_memory": f"no GPU with {gpr.spec.shape.min_memory_mib} MiB or more",
        "compute_capability": f"no GPU of compute capability {gpr.spec.shape.min_compute_capability} or more",
        "mig_profile": "no MIG profile of that shape on the GPU model",
        "gpu_health": "matching GPUs are in MIG mode, unclean or unhealthy",
        "gpu_count": f"fewer than {gpr.spec.shape.count} matching GPUs free",
    }
    exclusions = tuple(Exclusion(c, excluded[c], details[c]) for c in CONSTRAINTS if excluded[c])
    pending = sorted(snapshot.pending, key=service_order)
    position = next((i + 1 for i, p in enumerate(pending) if p.id == gpr.id), 0)
    unsupported = _unsupported(gpr)
    if gpr.state is not GprState.PENDING:
        summary = f"{gpr.state.name.lower()}: {gpr.state_reason}"
    elif unsupported:
        summary = f"pending: {unsupported}"
    elif feasible:
        summary = f"pending: {feasible} hosts could take it; waiting for its turn (position {position})"
    else:
        top = max(exclusions, key=lambda e: e.hosts_excluded) if exclusions else None
        summary = "pending: no host fits" + (f"; most excluded by {top.constraint} ({top.detail})" if top else
                                             "; the grid has no hosts")
    return Explanation(
        gpr_id=gpr.id,
        summary=summary,
        hosts_considered=len(snapshot.hosts),
        hosts_feasible=feasible,
        exclusions=exclusions,
        queue_position=position,
        preemption_possible=False,
        preemption_detail="first-fit never preempts; preemption comes with the placement engine",
    )
