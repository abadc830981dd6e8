"""The placement engine at grid scale, against a naive baseline, in one run.

    python -m benchmarks.scheduler           # 100 sites, 10,000 hosts, 80,000 GPUs, 100,000 pending GPRs
    python -m benchmarks.scheduler --quick   # a tenth of that, under a minute

A seeded synthetic grid (10 regions of 10 sites across all five tiers; hosts of 8 GPUs of one model each,
H100 / A100 / H200 / L40S / L4, some H100 and A100 hosts in MIG mode with instances already running; 50
workspaces with weights, quotas and some sovereign regions; a tenth of the GPUs held by running low-priority
work, most of it preemptible, some movable) and 100,000 pending GPRs of mixed shapes (1-8 whole GPUs, MIG
profiles, fractions, replicas), priorities and placement policies (pinned to a site or tier, or
redistributable from an origin site, some with model artifacts). Demand is well above capacity, so the
engine places, preempts, moves and refuses.

Measured, single process (one core): the engine's whole ``plan`` (index build included) as placements per
second, the latency of each GPR's decision (time between consecutive decisions, 100,000 pending), peak
RSS; then ``verify.violations`` re-checks every placement, eviction, migration and reservation against
the snapshot and the count of violations is reported. The baseline filters and scores every host for every
request (what first-fit does, with the engine's scoring) on the first GPRs in service order, against the
same grid, and is reported as placements per second and as the engine's speed-up over it.

The last line printed is one JSON object (keys: placements_per_s, p50_decision_ms, p99_decision_ms,
peak_rss_mb, baseline_placements_per_s, violations, and more).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import random
import resource
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass

from gridmesh.common.model import (
    AllocationId,
    AllocationState,
    GprId,
    GprState,
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
    Quota,
    RedistributionPolicy,
    Site,
    Workspace,
)
from gridmesh.controller.scheduler import mig
from gridmesh.controller.scheduler.constraints import allowed_regions, host_exclusion, service_order
from gridmesh.controller.scheduler.engine import Planner
from gridmesh.controller.scheduler.types import MigSlot, Plan, Snapshot
from gridmesh.controller.scheduler.verify import violations

# (model, memory MiB, compute capability, share of hosts)
MODELS = (("H100 80GB HBM3", 81559, "9.0", 0.35), ("A100-SXM4-80GB", 81920, "8.0", 0.2), ("H200", 144384, "9.0", 0.1),
          ("L40S", 49152, "8.9", 0.15), ("L4", 24576, "8.9", 0.2))
TIERS = [SiteTier.FAR_EDGE] * 4 + [SiteTier.NEAR_EDGE] * 3 + [SiteTier.CORE] * 2 + [SiteTier.AI_FACTORY]
NOW = 1_000_000.0


@dataclass
class Scale:
    regions: int
    sites_per_region: int
    hosts_per_site: int
    workspaces: int
    gprs: int
    baseline_gprs: int


FULL = Scale(10, 10, 100, 50, 100_000, 300)
QUICK = Scale(5, 2, 100, 20, 10_000, 100)


def build(scale: Scale, seed: int = 7) -> Snapshot:
    """The synthetic grid and its pending GPRs (see the module docstring)."""
    rnd = random.Random(seed)
    regions = [f"r{i}" for i in range(scale.regions)]
    names = [f"{r}-s{j}" for r in regions for j in range(scale.sites_per_region)]
    region_of = {n: n.split("-")[0] for n in names}
    sites = []
    for i, n in enumerate(names):
        lat = tuple((m, float(rnd.randint(2, 20) if region_of[m] == region_of[n] else rnd.randint(40, 200)))
                    for m in names[:i])
        prices = tuple((m[0], round(rnd.uniform(0.5, 4.0), 2)) for m in MODELS)
        sites.append(Site(name=SiteName(n), tier=TIERS[i % len(TIERS)], region=region_of[n], latency_ms=lat,
                          price_per_gpu_hour=prices))
    workspaces = []
    for w in range(scale.workspaces):
        sovereign = (rnd.choice(regions),) if w % 10 == 0 else ()
        quota = Quota(max_gpus=rnd.choice([0, 0, 0, 2000, 5000]), guaranteed_gpus=rnd.choice([0, 200, 500]),
                      borrow_limit=rnd.choice([0, 0, 3000]))
        workspaces.append(Workspace(name=WorkspaceName(f"ws{w}"), fair_share_weight=float(rnd.randint(1, 3)),
                                    quota=quota, allowed_regions=sovereign))
    hosts: list[Host] = []
    allocations: list[Allocation] = []
    allocation_mig: dict[AllocationId, tuple[MigSlot, ...]] = {}
    gprs: dict[GprId, Gpr] = {}
    weights = [m[3] for m in MODELS]
    serial = 0

    def running_gpr(shape: GpuShape, site: str) -> Gpr:
        nonlocal serial
        serial += 1
        since = NOW - rnd.uniform(100, 20_000)
        spec = GprSpec(workspace=WorkspaceName(f"ws{rnd.randrange(scale.workspaces)}"), shape=shape,
                       priority_tier=PriorityTier.LOW, priority=rnd.randint(1, 100),
                       placement=PlacementSpec(origin_site=SiteName(site)),
                       redistribution=RedistributionPolicy(may_migrate=rnd.random() < 0.3,
                                                           preemptible=rnd.random() < 0.7,
                                                           min_runtime_s=rnd.choice([0.0, 600.0, 3600.0])))
        g = Gpr(id=GprId(f"run-{serial}"), spec=spec, state=GprState.RUNNING, created_at=since - 10,
                updated_at=since, running_since=since, expires_at=since + rnd.uniform(3600, 40_000))
        gprs[g.id] = g
        return g

    for s in sites:
        for k in range(scale.hosts_per_site):
            hid = f"{s.name}-h{k:03d}"
            name, memory, cc, _share = rnd.choices(MODELS, weights)[0]
            mig_mode = name in ("H100 80GB HBM3", "A100-SXM4-80GB") and rnd.random() < 0.15
            gpus = []
            host_allocs: list[tuple[Gpr, list[int], tuple[MigSlot, ...]]] = []
            for i in range(8):
                uuid = GpuUuid(f"GPU-{hid}-{i}")
                instances: list[MigInstance] = []
                if mig_mode and rnd.random() < 0.5:
                    table = mig.table_for(name)
                    assert table is not None
                    p = rnd.choice([table.profile("1g.10gb"), table.profile("3g.40gb"), table.profile("2g.20gb")])
                    assert p is not None
                    start = mig.best_start(p, 0, 0, False)
                    assert start is not None
                    instances.append(MigInstance(f"MIG-{uuid}-{start}", p.name, start, 1))
                    g = running_gpr(GpuShape(mig_profile=p.name), s.name)
                    host_allocs.append((g, [i], (MigSlot(uuid, i, p.name, start, p.size, p.compute_slices),)))
                gpus.append(GpuInfo(index=i, uuid=uuid, model=name, memory_mib=memory, compute_capability=cc,
                                    numa_node=i // 4, mig_capable=name != "L4" and name != "L40S",
                                    mig_enabled=mig_mode, mig_instances=tuple(instances)))
            if not mig_mode and rnd.random() < 0.2:
                count = rnd.choice([1, 2, 4])
                g = running_gpr(GpuShape(count=count), s.name)
                host_allocs.append((g, list(range(count)), ()))
            host = Host(id=HostId(hid), site=s.name, state=HostState.READY, connected=True,
                        inventory=Inventory(hostname=hid, gpus=tuple(gpus)))
            hosts.append(host)
            for g, idx, slots in host_allocs:
                a = Allocation(id=AllocationId(f"alloc-{g.id}"), gpr_id=g.id, workspace=g.spec.workspace, replica=0,
                               host_id=host.id, site=s.name, gpu_indexes=tuple(idx),
                               gpu_uuids=tuple(gpus[i].uuid for i in idx), created_at=g.created_at,
                               mig_profile=slots[0].profile if slots else "", state=AllocationState.RUNNING,
                               device_uuids=tuple(f"MIG-{gpus[i].uuid}-{slots[0].start}" for i in idx) if slots
                               else ())
                allocations.append(a)
                if slots:
                    allocation_mig[a.id] = slots
    artifacts = {f"model-{i}": frozenset(SiteName(n) for n in rnd.sample(names, max(1, len(names) // 10)))
                 for i in range(5)}
    pending = [_pending(rnd, i, names, regions, scale) for i in range(scale.gprs)]
    return Snapshot(revision=1, now=NOW, sites={s.name: s for s in sites}, hosts=tuple(hosts),
                    workspaces={w.name: w for w in workspaces}, allocations=tuple(allocations),
                    pending=tuple(pending), gprs=gprs, allocation_mig=allocation_mig,
                    artifacts_at_site=artifacts)


def _pending(rnd: random.Random, i: int, names: list[str], regions: list[str], scale: Scale) -> Gpr:
    kind = rnd.random()
    models: tuple[str, ...] = ()
    if kind < 0.10:
        shape = GpuShape(mig_profile=rnd.choice(["1g.10gb", "1g.10gb", "2g.20gb", "3g.40gb"]))
    elif kind < 0.13:
        shape = GpuShape(fraction=rnd.choice([0.1, 0.25, 0.5]))
    else:
        if rnd.random() < 0.5:
            models = tuple(rnd.sample([m[0] for m in MODELS], rnd.randint(1, 2)))
        count = rnd.choices([1, 2, 4, 8], [0.68, 0.17, 0.1, 0.05])[0]
        shape = GpuShape(count=count, models=models, min_memory_mib=rnd.choice([0, 0, 0, 40000]),
                         min_compute_capability=rnd.choice(["", "", "8.9"]))
    tier = rnd.choices(list(PriorityTier), [0.5, 0.4, 0.1])[0]
    origin = SiteName(rnd.choice(names))
    roll = rnd.random()
    if roll < 0.1:
        placement = PlacementSpec(policy=PlacementPolicy.PINNED, site=origin, origin_site=origin)
    elif roll < 0.2:
        placement = PlacementSpec(policy=PlacementPolicy.PINNED, tier=rnd.choice(list(SiteTier)[:3]),
                                  origin_site=origin, allowed_regions=(origin.split("-")[0],))
    else:
        prefs = tuple(rnd.sample(list(SiteTier), rnd.randint(0, 3)))
        regions_allowed = (origin.split("-")[0],) if rnd.random() < 0.3 else ()
        placement = PlacementSpec(tier_preference=prefs, origin_site=origin, allowed_regions=regions_allowed)
    spec = GprSpec(workspace=WorkspaceName(f"ws{rnd.randrange(scale.workspaces)}"), shape=shape, priority_tier=tier,
                   priority=rnd.randint(1, tier.max_number), placement=placement,
                   replicas=rnd.choices([1, 2, 3], [0.85, 0.1, 0.05])[0],
                   model_artifact=rnd.choice(["", "", "", "model-1", "model-3"]),
                   redistribution=RedistributionPolicy(preemptible=tier is PriorityTier.LOW, may_migrate=True))
    created = NOW - rnd.uniform(0, 3600)
    return Gpr(id=GprId(f"gpr-{i:06d}"), spec=spec, state=GprState.PENDING, created_at=created, updated_at=created)


def measure_engine(snap: Snapshot) -> tuple[Plan, dict[str, float]]:
    stamps: list[float] = []
    gc.collect()
    gc.disable()  # the collector's pauses would be charged to whichever decision they hit
    try:
        start = time.perf_counter()
        planner = Planner(snap)
        planner.queue()
        built = time.perf_counter()
        stamps.append(built)
        plan = planner.run(lambda _gid: stamps.append(time.perf_counter()))
        end = time.perf_counter()
    finally:
        gc.enable()
    latencies = sorted((b - a) * 1000 for a, b in itertools.pairwise(stamps))
    placed = len(plan.placements) + len(plan.reservations)
    return plan, {
        "plan_s": end - start,
        "index_build_s": built - start,  # the index and the queue
        "decisions": float(len(latencies)),
        "placements": float(placed),
        "placements_per_s": placed / (end - start),
        "decisions_per_s": len(latencies) / (end - built),
        "p50_decision_ms": statistics.median(latencies) if latencies else 0.0,
        "p99_decision_ms": latencies[int(len(latencies) * 0.99)] if latencies else 0.0,
        "max_decision_ms": latencies[-1] if latencies else 0.0,
    }


def measure_baseline(snap: Snapshot, n: int) -> dict[str, float]:
    """Filter and score every host for each request, for the first ``n`` GPRs in service order."""
    planner = Planner(snap)  # for the same scoring function only; its index is not used
    sites = {s.site.name: s for s in planner.sites}
    used: dict[str, set[GpuUuid]] = {}
    for a in snap.allocations:
        used.setdefault(a.host_id, set()).update(a.gpu_uuids)
    placed = 0
    latencies = []
    start = time.perf_counter()
    for gpr in sorted(snap.pending, key=service_order)[:n]:
        t0 = time.perf_counter()
        regions = allowed_regions(gpr, snap.workspaces.get(gpr.spec.workspace))
        for _replica in range(gpr.spec.replicas):
            best: tuple[float, Host] | None = None
            for host in snap.hosts:
                site = snap.sites.get(host.site)
                taken = used.get(host.id, set())
                if host_exclusion(host, site, gpr, regions, taken) is not None:
                    continue
                free = sum(1 for g in host.inventory.gpus if g.uuid not in taken)
                cls = planner.classes[planner.gpus[planner.gpu_ids[host.inventory.gpus[0].uuid]].cls]
                cost = planner.site_cost(gpr, sites[host.site], cls) + planner.w.packing * free / 8
                if best is None or cost < best[0]:
                    best = (cost, host)
            if best is None:
                break
            host = best[1]
            taken = used.setdefault(host.id, set())
            free_gpus = [g.uuid for g in host.inventory.gpus if g.uuid not in taken]
            taken.update(free_gpus[: max(gpr.spec.shape.count, 1)])
            placed += 1
        latencies.append((time.perf_counter() - t0) * 1000)
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {"baseline_gprs": float(n), "baseline_placements": float(placed),
            "baseline_placements_per_s": placed / elapsed,
            "baseline_p50_decision_ms": statistics.median(latencies),
            "baseline_p99_decision_ms": latencies[int(len(latencies) * 0.99)]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the grid and requests (under a minute)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    scale = QUICK if args.quick else FULL
    t0 = time.perf_counter()
    snap = build(scale, args.seed)
    gpus = sum(len(h.inventory.gpus) for h in snap.hosts)
    mig_gpus = sum(1 for h in snap.hosts for g in h.inventory.gpus if g.mig_enabled)
    print(f"grid: {len(snap.sites)} sites, {len(snap.hosts)} hosts, {gpus} GPUs ({mig_gpus} in MIG mode), "
          f"{len(snap.workspaces)} workspaces, {len(snap.allocations)} running allocations, "
          f"{len(snap.pending)} pending GPRs (built in {time.perf_counter() - t0:.1f}s)", flush=True)

    plan, engine = measure_engine(snap)
    print(f"engine: {engine['placements']:.0f} placements (incl. {len(plan.reservations)} reservations) in "
          f"{engine['plan_s']:.2f}s (index {engine['index_build_s']:.2f}s): {engine['placements_per_s']:,.0f} "
          f"placements/s, {engine['decisions_per_s']:,.0f} decisions/s; decision p50 "
          f"{engine['p50_decision_ms']:.3f} ms, p99 {engine['p99_decision_ms']:.3f} ms, max "
          f"{engine['max_decision_ms']:.1f} ms", flush=True)
    print(f"        {len(plan.evictions)} evictions, {len(plan.migrations)} migrations, {len(plan.unplaced)} GPRs "
          f"unplaced ({Counter(r.split(':')[0] for _, r in plan.unplaced).most_common(3)})", flush=True)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t1 = time.perf_counter()
    found = violations(snap, plan)
    print(f"verify: {len(found)} violations in {time.perf_counter() - t1:.1f}s", flush=True)
    for v in found[:10]:
        print(f"  {v}", flush=True)

    base = measure_baseline(snap, scale.baseline_gprs)
    speedup = engine["placements_per_s"] / base["baseline_placements_per_s"] if base["baseline_placements_per_s"] else 0
    print(f"baseline (every host for every request, first {scale.baseline_gprs} GPRs): "
          f"{base['baseline_placements_per_s']:,.0f} placements/s, decision p50 {base['baseline_p50_decision_ms']:.1f}"
          f" ms, p99 {base['baseline_p99_decision_ms']:.1f} ms; the engine is {speedup:,.0f}x faster", flush=True)
    result = {
        "placements_per_s": round(engine["placements_per_s"]),
        "p50_decision_ms": round(engine["p50_decision_ms"], 4),
        "p99_decision_ms": round(engine["p99_decision_ms"], 4),
        "peak_rss_mb": round(rss_mb, 1),
        "baseline_placements_per_s": round(base["baseline_placements_per_s"], 1),
        "violations": len(found),
        "speedup": round(speedup, 1),
        "placements": int(engine["placements"]),
        "evictions": len(plan.evictions),
        "migrations": len(plan.migrations),
        "unplaced": len(plan.unplaced),
        "decisions": int(engine["decisions"]),
        "decisions_per_s": round(engine["decisions_per_s"]),
        "plan_s": round(engine["plan_s"], 3),
        "index_build_s": round(engine["index_build_s"], 3),
        "max_decision_ms": round(engine["max_decision_ms"], 3),
        "hosts": len(snap.hosts),
        "gpus": gpus,
        "pending": len(snap.pending),
        "quick": args.quick,
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
