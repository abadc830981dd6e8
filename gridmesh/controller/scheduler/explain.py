"""Why a GPR is where it is: per constraint how many hosts it excluded, its place in the queue,
whether preemption (or moving someone) could make room and why that was or was not done, and the
nearest request that would fit now.

Rules:
- Pure, like ``plan``: everything comes from the snapshot. It looks at this one GPR against the grid as
  it is (the GPRs ahead of it in the queue may take the room it sees; its queue position says so).
- Alternatives respect every hard constraint: never another region. A sovereign GPR with no room in
  its regions is told how much room lies outside them, and that it stays.
- What-ifs run on the engine's index and are undone, so several can be asked of one index.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from gridmesh.common.model import GprState, PlacementPolicy, SiteName, SiteTier
from gridmesh.controller.model import Gpr, GpuShape
from gridmesh.controller.scheduler import mig
from gridmesh.controller.scheduler.constraints import (
    CONSTRAINTS,
    EPSILON,
    allowed_regions,
    host_exclusion,
    service_order,
    wants_mig,
)
from gridmesh.controller.scheduler.engine import Planner, _Choice
from gridmesh.controller.scheduler.types import Alternative, Exclusion, Explanation, Snapshot

T = TypeVar("T")



def _tier(t: SiteTier | None) -> str:
    return t.name.lower() if t is not None else ""


class _WhatIf:
    """Questions to one Planner's index, each undone after it is answered."""

    def __init__(self, planner: Planner) -> None:
        self.p = planner

    def ask(self, question: Callable[[], T]) -> T:
        self.p.undo_log = []
        try:
            return question()
        finally:
            log, self.p.undo_log = self.p.undo_log, None
            self.p._undo(log)

    def free_site(self, gpr: Gpr) -> _Choice | None:
        req = self.p.request(gpr)
        return self.ask(lambda: self.p.find_free(req))


def _host_reasons(p: Planner, gpr: Gpr, regions: frozenset[str] | None) -> tuple[Counter[str], int, int]:
    """(exclusions by constraint, hosts with room now, hosts outside the regions that would have room)."""
    snap = p.snap
    excluded: Counter[str] = Counter()
    feasible = 0
    outside = 0
    shape = gpr.spec.shape
    classes = dict(p.eligible_classes(shape))
    for h, host in enumerate(p.hosts):
        why = host_exclusion(host, snap.sites.get(host.site), gpr, regions, (), snap.unclean_gpus)
        room = why is None and _room_on(p, h, shape, classes)
        if why is None and not room:
            why = "gpu_count"
        if why is None:
            feasible += 1
        else:
            excluded[why] += 1
            if why == "region":
                anywhere = replace(gpr.spec.placement, allowed_regions=())
                unbound = replace(gpr, spec=replace(gpr.spec, placement=anywhere))
                if (host_exclusion(host, snap.sites.get(host.site), unbound, None, (), snap.unclean_gpus) is None
                        and _room_on(p, h, shape, classes)):
                    outside += 1
    return excluded, feasible, outside


def _room_on(p: Planner, h: int, shape: GpuShape, classes: dict[int, mig.MigProfile | None]) -> bool:
    k = max(shape.count, 1)
    for cid, hc in p.host_hcs[h].items():
        if cid not in classes:
            continue
        profile = classes[cid]
        if profile is None:
            if len(p.hc_free[hc]) >= k:
                return True
            continue
        fits = 0
        for g in p.hc_gpus[hc]:
            gpu = p.gpus[g]
            if gpu.usable and mig.best_start(profile, gpu.mask, gpu.compute, gpu.me) is not None:
                fits += 1
        if fits >= k:  # one instance on each of k GPUs
            return True
    return False


def _queue_position(p: Planner, gpr: Gpr) -> int:
    """1-based place in service order, assuming each GPR ahead gets what it asks for (0: not pending)."""
    pending = sorted(p.snap.pending, key=service_order)
    if gpr.id not in {g.id for g in pending}:
        return 0
    key = (gpr.spec.priority_tier, gpr.spec.priority)
    ahead = sum(1 for g in pending if (g.spec.priority_tier, g.spec.priority) > key)
    group = [g for g in pending if (g.spec.priority_tier, g.spec.priority) == key]
    # The fair interleaving of the group, as the engine serves it.
    queues: dict[str, list[tuple[float, str, Gpr]]] = {}
    for g in group:
        heapq.heappush(queues.setdefault(g.spec.workspace, []), (g.created_at, g.id, g))
    used = {name: (p._ws(name).used, p._ws(name).dominant) for name in queues}
    heap = []
    for name in queues:
        ws = p._ws(name)
        heap.append(((0 if ws.used < ws.guaranteed - EPSILON else 1, ws.dominant / ws.weight), name))
    heapq.heapify(heap)
    n = 0
    while heap:
        _k, name = heapq.heappop(heap)
        _c, gid, g = heapq.heappop(queues[name])
        n += 1
        if gid == gpr.id:
            return ahead + n
        ws = p._ws(name)
        got = float(max(g.spec.shape.count, 1) * g.spec.replicas)
        u, d = used[name]
        cap = max(p.model_capacity.values(), default=1.0)
        used[name] = (u + got, d + got / cap)
        if queues[name]:
            u, d = used[name]
            heapq.heappush(heap, ((0 if u < ws.guaranteed - EPSILON else 1, d / ws.weight), name))
    return ahead + n


def _why_no_victims(p: Planner, gpr: Gpr, regions: frozenset[str] | None) -> str:
    """What kept every allocation in scope from being a victim, counted by reason."""
    snap = p.snap
    mine = (int(gpr.spec.priority_tier), gpr.spec.priority)
    reasons: Counter[str] = Counter()
    earliest: float | None = None
    for rec in p.allocs:
        if rec.host < 0 or not p.host_ok[rec.host]:
            continue
        host = p.hosts[rec.host]
        if host_exclusion(host, snap.sites.get(host.site), gpr, regions, (), snap.unclean_gpus) not in (None,
                                                                                                       "gpu_count"):
            continue
        v = rec.gpr
        if v is None:
            reasons["of unknown GPRs"] += 1
        elif rec.prio >= mine:
            reasons["of equal or higher priority"] += 1
        elif not v.spec.redistribution.preemptible:
            reasons["not preemptible by policy"] += 1
        elif v.running_since is None:
            reasons["not running yet"] += 1
        elif snap.now - v.running_since < v.spec.redistribution.min_runtime_s:
            reasons["inside their minimum runtime"] += 1
            until = v.running_since + v.spec.redistribution.min_runtime_s
            earliest = until if earliest is None else min(earliest, until)
        elif snap.now - snap.preempted_at.get(v.id, -1e18) < p.w.preemption_cooldown_s:
            reasons["placed by preemption moments ago (no ping-pong)"] += 1
        else:
            reasons["preemptible, but evicting them would not free GPUs of its shape"] += 1
    if not reasons:
        return "no allocation in its scope could be evicted: nothing runs there"
    parts = [f"{n} {why}" for why, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))]
    text = "no allocation in its scope may be evicted for it: " + ", ".join(parts)
    if earliest is not None:
        text += f"; the first minimum runtime ends in {earliest - snap.now:.0f}s"
    return text


def _estimated_wait(p: Planner, gpr: Gpr, regions: frozenset[str] | None) -> float | None:
    """Seconds until some host in scope has room as running GPRs reach the end of their duration
    (None: nothing in scope is known to end)."""
    snap = p.snap
    shape = gpr.spec.shape
    k = max(shape.count, 1)
    classes = dict(p.eligible_classes(shape))
    # When each GPU is entirely free again: the last end among the allocations on it.
    ends: dict[int, float] = {}
    endless: set[int] = set()
    for rec in p.allocs:
        end = rec.gpr.expires_at if rec.gpr is not None else None
        for g in rec.gpus:
            if end is None:
                endless.add(g)
            else:
                ends[g] = max(ends.get(g, end), end)
    best: float | None = None
    for h, host in enumerate(p.hosts):
        if host_exclusion(host, snap.sites.get(host.site), gpr, regions, (), snap.unclean_gpus) not in (None,
                                                                                                       "gpu_count"):
            continue
        for cid, hc in p.host_hcs[h].items():
            if cid not in classes:
                continue
            free = len(p.hc_free[hc]) if classes[cid] is None else 0
            times = sorted(ends[g] for g in p.hc_gpus[hc] if g in ends and g not in endless and p.gpus[g].usable)
            need = k - free
            if need <= 0 or len(times) < need:
                continue
            t = times[need - 1]
            best = t if best is None else min(best, t)
    return None if best is None else max(best - snap.now, 0.0)


def _alternatives(p: Planner, gpr: Gpr, regions: frozenset[str] | None) -> list[Alternative]:
    ask = _WhatIf(p)
    out: list[Alternative] = []
    spec = gpr.spec
    placement = spec.placement

    def where(choice: _Choice) -> tuple[SiteName, SiteTier]:
        site = p.sites[p.host_site[choice.host]].site
        return site.name, site.tier

    if placement.policy is PlacementPolicy.PINNED and (placement.site or placement.tier):
        loose = replace(gpr, spec=replace(spec, placement=replace(placement, policy=PlacementPolicy.REDISTRIBUTABLE)))
        got = ask.free_site(loose)
        if got is not None:
            name, tier = where(got)
            pin = f"site {placement.site}" if placement.site else f"tier {_tier(placement.tier)}"
            kind = "site" if placement.site else "tier"
            out.append(Alternative(kind, f"fits now at site {name} ({_tier(tier)}) if it were not pinned to {pin}",
                                   site=name, tier=tier))
    if spec.shape.mig_profile:
        for cid, profile in p.eligible_classes(spec.shape):
            table = p.classes[cid].table
            if table is None or profile is None:
                continue
            for smaller in mig.smaller_profiles(table, profile):
                trial = replace(gpr, spec=replace(spec, shape=replace(spec.shape, mig_profile=smaller.name)))
                got = ask.free_site(trial)
                if got is not None:
                    name, tier = where(got)
                    out.append(Alternative("mig_profile", f"a {smaller.name} instead of a {profile.name} fits now "
                                           f"at site {name}", site=name, tier=tier, mig_profile=smaller.name))
                    break
            break
    if spec.shape.models:
        any_model = replace(gpr, spec=replace(spec, shape=replace(spec.shape, models=())))
        got = ask.free_site(any_model)
        if got is not None:
            name, tier = where(got)
            model = p.classes[p.scs[got.sc].cls].model
            out.append(Alternative("gpu_model", f"a {model} fits now at site {name}", site=name, tier=tier,
                                   gpu_model=model))
    wait = _estimated_wait(p, gpr, regions)
    if wait is not None:
        out.append(Alternative("wait", f"room is expected in about {wait:.0f}s, when running GPRs reach the end of "
                               "their duration", estimated_wait_s=wait))
    else:
        out.append(Alternative("wait", "no running GPR in its scope has a known end; the wait cannot be estimated"))
    return out


def explain(snapshot: Snapshot, gpr: Gpr) -> Explanation:
    """Why ``gpr`` is where it is (see the module rules)."""
    p = Planner(snapshot)
    workspace = snapshot.workspaces.get(gpr.spec.workspace)
    regions = allowed_regions(gpr, workspace)
    excluded, feasible, outside = _host_reasons(p, gpr, regions)
    shape = gpr.spec.shape
    what = (f"a {shape.mig_profile} instance" if shape.mig_profile else
            f"{shape.fraction:g} of a GPU" if shape.fraction else f"{shape.count} matching GPUs")
    details = {
        "host_state": "offline, cordoned or draining",
        "region": f"outside the allowed regions {sorted(regions) if regions is not None else []}",
        "site": f"not the pinned site {gpr.spec.placement.site}",
        "tier": f"not the pinned tier {_tier(gpr.spec.placement.tier)}",
        "gpu_model": f"no GPU of the models {list(shape.models)}",
        "mig_profile": "no GPU model with a MIG profile of that shape" if wants_mig(shape) else "",
        "gpu_memory": f"no GPU with {shape.min_memory_mib} MiB or more",
        "compute_capability": f"no GPU of compute capability {shape.min_compute_capability} or more",
        "gpu_health": ("matching GPUs are not in MIG mode, unclean or unhealthy" if wants_mig(shape)
                       else "matching GPUs are in MIG mode, unclean or unhealthy"),
        "gpu_count": f"fewer than {what} free",
    }
    exclusions = tuple(Exclusion(c, excluded[c], details[c]) for c in CONSTRAINTS if excluded[c])
    position = _queue_position(p, gpr)
    reservations = [r for r in snapshot.reservations if r.gpr_id == gpr.id]
    ws = p._ws(gpr.spec.workspace)
    missing = gpr.spec.replicas - len({a.replica for a in snapshot.allocations if a.gpr_id == gpr.id}) - len(
        reservations)
    need = float(max(shape.count, 1) * max(missing, 0))
    if wants_mig(shape):
        eqs = [mig.gpu_equivalents(p.classes[c].table, pr)  # type: ignore[arg-type]
               for c, pr in p.eligible_classes(shape) if pr is not None]
        need *= min(eqs, default=1.0)
    over_quota = missing > 0 and ws.used + need > ws.cap + EPSILON

    preemption_possible = False
    alternatives: tuple[Alternative, ...] = ()
    if gpr.state is not GprState.PENDING:
        preemption_detail = "not pending"
    elif reservations:
        r = reservations[0]
        preemption_possible = True
        preemption_detail = (f"done: devices on {r.host_id} are reserved for it after {r.cause} of "
                             f"{', '.join(r.waits_for)}; it is placed once they are reported clean")
    elif feasible:
        preemption_detail = "not needed: there is free room in its scope"
    else:
        req = p.request(gpr)
        ask = _WhatIf(p)
        moved = ask.ask(lambda: p.find_migration(req))
        victims = ask.ask(lambda: p.find_victims(req))
        if moved is not None:
            preemption_possible = True
            names = ", ".join(r.a.id for r, _ in moved[1])
            preemption_detail = (f"no eviction needed: moving {names} elsewhere in its own scope makes room; "
                                 "the plan does that when its turn comes")
        elif victims is not None:
            preemption_possible = True
            chosen = victims[1]
            lost = sum(r.lost for r in chosen)
            names = ", ".join(f"{r.a.id} ({r.a.gpr_id}, {r.gpr.spec.priority_tier.name if r.gpr else '?'} "
                              f"{r.prio[1]})" for r in chosen)
            preemption_detail = (f"possible: evicting {names} makes room, losing {lost:.0f} GPU-seconds; it is done "
                                 "when its turn comes, and the devices are its once reported clean")
        else:
            preemption_detail = _why_no_victims(p, gpr, regions)
        alternatives = tuple(_alternatives(p, gpr, regions))

    if gpr.state is not GprState.PENDING:
        summary = f"{gpr.state.name.lower()}: {gpr.state_reason}"
    elif reservations:
        summary = f"pending: {preemption_detail}"
    elif over_quota:
        summary = (f"pending: workspace quota: {ws.used:g} of {ws.cap:g} GPUs in use, {need:g} more asked")
    elif feasible:
        summary = f"pending: {feasible} hosts could take it; waiting for its turn (position {position})"
    else:
        top = max(exclusions, key=lambda e: e.hosts_excluded) if exclusions else None
        summary = "pending: no host fits" + (f"; most excluded by {top.constraint} ({top.detail})" if top else
                                             "; the grid has no hosts")
        if outside:
            summary += (f"; {outside} hosts outside its allowed regions have room, but it stays in "
                        f"{sorted(regions or ())}")
    return Explanation(
        gpr_id=gpr.id,
        summary=summary,
        hosts_considered=len(snapshot.hosts),
        hosts_feasible=feasible,
        exclusions=exclusions,
        queue_position=position,
        preemption_possible=preemption_possible,
        preemption_detail=preemption_detail,
        alternatives=alternatives,
    )

