"""First-fit placement: the simplest placement that keeps every hard constraint.

Order of service: priority tier, then the number inside the tier, then submission time. Each GPR is
placed whole (all replicas) or not at all, each replica on the first host (by site tier, then host
id) with enough free whole GPUs that match its shape. The placement engine replaces this module;
the constraint checks (``host_exclusion``) are what it must keep.

Not handled here yet, and so left pending with that reason: MIG profiles and fractions (they need
the MIG-aware packer), preemption and capacity chasing.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

from gridmesh.common.model import GprId, GprState, GpuHealth, GpuInfo, GpuUuid, HostId, PlacementPolicy
from gridmesh.controller.model import Gpr, GpuShape, Host, Site, Workspace
from gridmesh.controller.scheduler.types import Exclusion, Explanation, Placement, Plan, Snapshot
from gridmesh.hw.catalog import fold_model_name

# Constraints in the order they are checked; the first that excludes a host is the one reported.
CONSTRAINTS = ("host_state", "region", "site", "tier", "gpu_model", "gpu_memory", "compute_capability",
               "gpu_health", "gpu_count")


def _cc(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".")) if text else ()


def service_order(gpr: Gpr) -> tuple[int, int, float, str]:
    """Higher tier first, then the higher number inside it, then the longest waiting."""
    return (-int(gpr.spec.priority_tier), -gpr.spec.priority, gpr.created_at, gpr.id)


def allowed_regions(gpr: Gpr, workspace: Workspace | None) -> frozenset[str] | None:
    """The regions a GPR may run in: its own list narrowed by its workspace's; None means any."""
    sets = [set(r) for r in (gpr.spec.placement.allowed_regions, workspace.allowed_regions if workspace else ())
            if r]
    if not sets:
        return None
    return frozenset(set.intersection(*sets))


def _gpu_matches(gpu: GpuInfo, shape: GpuShape) -> str | None:
    """The constraint a single GPU fails for a whole-GPU request, or None."""
    # NVML says "NVIDIA H100 80GB HBM3" or "Tesla T4"; requests say "H100 80GB HBM3" and "T4".
    if shape.models and fold_model_name(gpu.model) not in {fold_model_name(m) for m in shape.models}:
        return "gpu_model"
    if gpu.memory_mib < shape.min_memory_mib:
        return "gpu_memory"
    if shape.min_compute_capability and _cc(gpu.compute_capability) < _cc(shape.min_compute_capability):
        return "compute_capability"
    if gpu.mig_enabled or gpu.health is not GpuHealth.HEALTHY:
        return "gpu_health"
    return None


def host_exclusion(
    host: Host, site: Site | None, gpr: Gpr, regions: frozenset[str] | None, used: Iterable[GpuUuid]
) -> str | None:
    """The first constraint in CONSTRAINTS that keeps ``gpr`` off ``host``, or None if it fits."""
    if not host.schedulable or site is None:
        return "host_state"
    if regions is not None and site.region not in regions:
        return "region"
    placement = gpr.spec.placement
    pinned = placement.policy is PlacementPolicy.PINNED
    if placement.site is not None and pinned and host.site != placement.site:
        return "site"
    if placement.tier is not None and pinned and site.tier is not placement.tier:
        return "tier"
    shape = gpr.spec.shape
    failures = [_gpu_matches(g, shape) for g in host.inventory.gpus]
    if not any(f is None for f in failures):
        # Report the most specific reason: how far the best GPU on the host got through the checks.
        if not failures:
            return "gpu_model"
        return max(failures, key=lambda f: CONSTRAINTS.index(f or "gpu_count"))
    used_set = set(used)
    free = [g for g, f in zip(host.inventory.gpus, failures, strict=True) if f is None and g.uuid not in used_set]
    if len(free) < shape.count:
        return "gpu_count"
    return None


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
                gpus = [g for g in host.inventory.gpus if _gpu_matches(g, shape) is None and g.uuid not in in_use]
                gpus = gpus[: shape.count]
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
