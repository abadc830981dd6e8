"""The hard constraints, stated once: what may never be broken, whatever the scores say.

Rules:
- A host is usable only when connected and READY, at a known site, inside the GPR's allowed regions
  (its own list narrowed by its workspace's; none means any), and at the pinned site/tier of a PINNED
  GPR (for a REDISTRIBUTABLE GPR, site and tier are preferences, scored elsewhere).
- A whole-GPU request takes GPUs not in MIG mode; a MIG profile or fraction takes an instance on a GPU
  in MIG mode whose model has a table with a profile that satisfies it (``mig.profile_for``).
- Models are compared folded (case, spacing, vendor prefix); compute capabilities as numbers; a MIG
  request's minimum memory is the instance's memory, a whole GPU's the GPU's.
- A GPU is given out only while HEALTHY and not known to be unclean (evicted from a tenant and not yet
  reported clean): ``Snapshot.unclean_gpus`` / ``unclean_slots`` on top of ``GpuInfo.health``.
- All GPUs of one replica are on one host and of one class (same model, memory, capability): a
  multi-GPU job across mixed models is not what anyone asked for.
- ``CONSTRAINTS`` is the order checks run in; the first that excludes a host is the one reported, and
  for GPUs the one the best GPU on the host got furthest through.
"""

from __future__ import annotations

from collections.abc import Iterable

from gridmesh.common.model import GpuHealth, GpuInfo, GpuUuid, PlacementPolicy, PriorityTier
from gridmesh.controller.model import Gpr, GpuShape, Host, Quota, Site, Workspace
from gridmesh.controller.scheduler import mig
from gridmesh.hw.catalog import fold_model_name

CONSTRAINTS = ("host_state", "region", "site", "tier", "gpu_model", "mig_profile", "gpu_memory",
               "compute_capability", "gpu_health", "gpu_count")

# Slack for comparing sums of GPU-equivalents (sevenths) with whole-number quotas.
EPSILON = 1e-9


def cc_tuple(text: str) -> tuple[int, ...]:
    """A compute capability as numbers: "12.0" > "9.0" (as strings it would not be)."""
    return tuple(int(p) for p in text.split(".")) if text else ()


def priority(gpr: Gpr) -> tuple[PriorityTier, int]:
    """Priority tier first, then the number inside it; compare as a tuple (higher wins)."""
    return (gpr.spec.priority_tier, gpr.spec.priority)


def service_order(gpr: Gpr) -> tuple[int, int, float, str]:
    """Higher tier first, then the higher number inside it, then the longest waiting."""
    return (-int(gpr.spec.priority_tier), -gpr.spec.priority, gpr.created_at, gpr.id)


def wants_mig(shape: GpuShape) -> bool:
    return bool(shape.mig_profile or shape.fraction)


def allowed_regions(gpr: Gpr, workspace: Workspace | None) -> frozenset[str] | None:
    """The regions a GPR may run in: its own list narrowed by its workspace's; None means any."""
    sets = [set(r) for r in (gpr.spec.placement.allowed_regions, workspace.allowed_regions if workspace else ())
            if r]
    if not sets:
        return None
    return frozenset(set.intersection(*sets))


def quota_cap(quota: Quota | None) -> float:
    """The most GPU-equivalents a workspace may hold: ``max_gpus`` (0: unlimited), and, when a
    borrow limit is set, its guarantee plus that limit (a borrow limit of 0 means no borrowing cap)."""
    if quota is None:
        return float("inf")
    cap = float(quota.max_gpus) if quota.max_gpus else float("inf")
    if quota.borrow_limit:
        cap = min(cap, float(quota.guaranteed_gpus + quota.borrow_limit))
    return cap


def site_exclusion(site: Site | None, gpr: Gpr, regions: frozenset[str] | None) -> str | None:
    """The site-level constraint that keeps ``gpr`` off ``site`` (None: the site is in scope)."""
    if site is None:
        return "host_state"
    if regions is not None and site.region not in regions:
        return "region"
    placement = gpr.spec.placement
    if placement.policy is PlacementPolicy.PINNED:
        if placement.site is not None and site.name != placement.site:
            return "site"
        if placement.tier is not None and site.tier is not placement.tier:
            return "tier"
    return None


def class_exclusion(model: str, memory_mib: int, compute_capability: str, mig_enabled: bool,
                    shape: GpuShape) -> str | None:
    """What a GPU of this kind fails for ``shape``, ignoring its health (None: the kind fits)."""
    if shape.models and fold_model_name(model) not in {fold_model_name(m) for m in shape.models}:
        return "gpu_model"
    if wants_mig(shape):
        table = mig.table_for(model)
        if table is None:
            return "mig_profile"
        if shape.mig_profile and table.profile(shape.mig_profile) is None:
            return "mig_profile"
        if mig.profile_for(table, shape.mig_profile, shape.fraction, 0) is None:
            return "mig_profile"
        if mig.profile_for(table, shape.mig_profile, shape.fraction, shape.min_memory_mib) is None:
            return "gpu_memory"
    elif memory_mib < shape.min_memory_mib:
        return "gpu_memory"
    if shape.min_compute_capability and cc_tuple(compute_capability) < cc_tuple(shape.min_compute_capability):
        return "compute_capability"
    if mig_enabled != wants_mig(shape):
        return "gpu_health"
    return None


def gpu_exclusion(gpu: GpuInfo, shape: GpuShape, unclean: frozenset[GpuUuid] = frozenset()) -> str | None:
    """The constraint a single GPU fails for ``shape``, or None."""
    why = class_exclusion(gpu.model, gpu.memory_mib, gpu.compute_capability, gpu.mig_enabled, shape)
    if why is not None:
        return why
    if gpu.health is not GpuHealth.HEALTHY or gpu.uuid in unclean:
        return "gpu_health"
    return None


def host_exclusion(
    host: Host, site: Site | None, gpr: Gpr, regions: frozenset[str] | None, used: Iterable[GpuUuid],
    unclean: frozenset[GpuUuid] = frozenset(),
) -> str | None:
    """The first constraint in CONSTRAINTS that keeps ``gpr`` off ``host``, or None if it fits.

    ``used`` are GPUs taken whole; for a MIG request only GPUs free of any claim are counted here
    (slot-level packing is the engine's), so this is the static check plan-apply can always make.
    """
    if not host.schedulable or site is None:
        return "host_state"
    why = site_exclusion(site, gpr, regions)
    if why is not None:
        return why
    shape = gpr.spec.shape
    failures = [gpu_exclusion(g, shape, unclean) for g in host.inventory.gpus]
    if not any(f is None for f in failures):
        # Report the most specific reason: how far the best GPU on the host got through the checks.
        if not failures:
            return "gpu_model"
        return max(failures, key=lambda f: CONSTRAINTS.index(f or "gpu_count"))
    used_set = set(used)
    fitting = [g for g, f in zip(host.inventory.gpus, failures, strict=True) if f is None and g.uuid not in used_set]
    if wants_mig(shape):
        return None if fitting else "gpu_count"
    by_class: dict[tuple[str, int, str], int] = {}
    for g in fitting:
        key = (fold_model_name(g.model), g.memory_mib, g.compute_capability)
        by_class[key] = by_class.get(key, 0) + 1
    if max(by_class.values(), default=0) < shape.count:
        return "gpu_count"
    return None
