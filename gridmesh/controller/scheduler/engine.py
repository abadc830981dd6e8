"""The placement engine: one pass over the pending GPRs in service order, against an index of free capacity.

Rules (besides the hard constraints in ``constraints``):
- Order of service: priority tier, then the number inside it; among GPRs of equal priority, the
  workspace with the lowest weighted dominant share goes next (weighted max-min fairness, DRF over GPU
  models), workspaces still under their guaranteed GPUs before those borrowing; inside a workspace,
  the longest waiting first.
- A GPR is placed whole (every missing replica) or not at all, each replica on one host.
- Where it can go: the hosts in scope ranked by site cost (latency from its origin, preferred
  site/tier then its spill-over tiers, price, data locality) plus packing cost (best fit: partly used
  hosts and GPUs first, whole ones kept free; one NUMA node for a multi-GPU replica; for MIG, the
  GPU and start that strand the least). Weights: ``ScoringWeights``.
- When nothing in scope is free: first move a running redistributable allocation that may migrate
  (for pinned work, or work of higher priority than it) to free room elsewhere in its own scope;
  else preempt. Victims are strictly lower priority, preemptible, running for at least their
  minimum runtime, and not themselves placed by preemption within ``preemption_cooldown_s``; among
  the nearest sites (``preemption_site_window``) the victims losing the fewest GPU-seconds go.
  A freed device is never handed over directly: the requester gets a ``Reservation`` that becomes a
  placement once the device is reported clean. Evicted replicas are queued again in the same pass at
  their own, lower priority; they may in turn preempt strictly lower work (priorities strictly fall
  along such a chain, so it ends, and it is what the next pass would do anyway).
- An allocation that its host does not report RUNNING yet is never preempted or moved: it has lost
  nothing and gained nothing, and it keeps plan -> apply -> plan a fixed point (everything this pass
  places or moves is not running yet, so the next pass cannot undo it).
- Evictions give quota back, and a MIG eviction frees compute slices: GPRs that failed on exactly that
  earlier in the pass are served again at the end of it, so the next pass finds nothing new.
- Everything is a function of the snapshot: hosts, allocations, GPRs and sites are visited in sorted
  order; sets hold integers only (their iteration order does not depend on string hashing); ties go
  to the lower id.

Why an index: with 10,000 hosts and 100,000 pending GPRs, looking at every host for every request is
far too slow (``benchmarks/scheduler.py`` measures both). Hosts are kept per (site, GPU class) in
buckets by their free GPU count, MIG GPUs per (site, class) by their slot state. A request's (site,
class) pairs are streamed cheapest first from per-origin lists sorted by a lower bound (``candidates``)
and the walk stops as soon as no later site can beat the best host found (packing cost is bounded);
late in a busy pass, when few site-classes have room at all, those few are costed directly. Capacity
only shrinks during a pass (evictions hand devices to reservations, never back to the free pool), so a
scope (classes, regions, pins) that had no room once has none for the rest of the pass, and that is
remembered; so are scopes where preemption or moving found nothing, up to the priority that tried
(a lower priority has fewer victims). Undo logs make a GPR whole-or-nothing: what its first replicas
took is given back exactly when a later replica does not fit.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from gridmesh.common.model import (
    AllocationId,
    AllocationState,
    GprId,
    GpuHealth,
    GpuUuid,
    PlacementPolicy,
    PriorityTier,
    SiteTier,
    WorkspaceName,
)
from gridmesh.controller.model import Allocation, Gpr, GpuShape, Host, Site, Workspace
from gridmesh.controller.scheduler import mig
from gridmesh.controller.scheduler.constraints import (
    EPSILON,
    allowed_regions,
    class_exclusion,
    quota_cap,
    wants_mig,
)
from gridmesh.controller.scheduler.types import (
    Eviction,
    Migration,
    MigSlot,
    Placement,
    Plan,
    Reservation,
    ScoringWeights,
    Snapshot,
)
from gridmesh.hw.catalog import fold_model_name

INF = float("inf")
# With this many site-classes (or fewer) holding any free GPU of a request's classes, they are costed
# one by one rather than walked in site order.
_DIRECT_LIMIT = 24
FULL_MASK = (1 << mig.MEMORY_SLICES) - 1


# -- the index's records ------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Class:
    """GPUs that are interchangeable for placement: same model, memory, capability and MIG mode."""

    id: int
    model: str  # as the first host reported it
    folded: str
    memory_mib: int
    compute_capability: str
    mig_enabled: bool
    table: mig.MigTable | None


@dataclass(slots=True, eq=False)
class _Occupant:
    """Something on a MIG GPU's slots: an allocation, a reservation, an unclean range or an idle instance."""

    start: int
    size: int
    compute: int
    profile: str
    kind: str  # "alloc" | "res" | "unclean"
    owner: _Alloc | None = None


@dataclass(slots=True, eq=False)
class _Gpu:
    i: int
    host: int
    index: int
    uuid: GpuUuid
    cls: int
    numa: int
    usable: bool  # healthy, not unclean, on a schedulable host
    owner: object = None  # whole GPU: an _Alloc, a reservation marker, or None when free
    # MIG mode only:
    occupants: list[_Occupant] = field(default_factory=list)
    idle: dict[int, str] = field(default_factory=dict)  # start -> profile of a reusable idle instance
    mask: int = 0
    compute: int = 0
    me: bool = False


@dataclass(slots=True, eq=False)
class _Site:
    i: int
    site: Site
    prices: dict[str, float]
    latency: dict[str, float]


@dataclass(slots=True, eq=False)
class _SiteClass:
    """The hosts of one site with GPUs of one class, indexed by what is free."""

    id: int
    site: int
    cls: int
    # whole GPUs: buckets[f] = host-class ids with f free usable GPUs
    buckets: list[set[int]] = field(default_factory=list)
    # MIG: state (mask, compute, me) -> GPU ids in that state
    states: dict[tuple[int, int, bool], set[int]] = field(default_factory=dict)
    hcs: list[int] = field(default_factory=list)
    # preemption and migration candidates (statically eligible; liveness checked on use)
    victims: list[_Alloc] = field(default_factory=list)
    victims_sorted: bool = False
    vpos: int = 0  # victims[:vpos] are known dead
    victim_hosts: dict[int, list[_Alloc]] = field(default_factory=dict)
    mig_victim_gpus: list[int] = field(default_factory=list)
    movable_hosts: dict[int, list[_Alloc]] = field(default_factory=dict)
    fmax: int = 0  # the most free GPUs on any one host here (whole-GPU classes)
    # Victims by priority, lowest first; by_prio[:ppos] are known dead (see _min_victim_prio).
    by_prio: list[_Alloc] = field(default_factory=list)
    by_prio_sorted: bool = False
    ppos: int = 0
    # Upper bound (fixed at build) on the GPUs free + held by victims on any one host here.
    victim_room: int = 0
    victim_max_prio: tuple[int, int] = (0, 0)
    # Movables by priority, lowest first; mov_by_prio[:mpos] are moved or stuck (see _min_movable_prio).
    mov_by_prio: list[_Alloc] = field(default_factory=list)
    mov_by_prio_sorted: bool = False
    mpos: int = 0


@dataclass(slots=True, eq=False)
class _Alloc:
    a: Allocation
    gpr: Gpr | None
    host: int
    gpus: list[int]
    slots: list[tuple[int, _Occupant]]  # (gpu, occupant) for MIG allocations
    eq: float
    model: str
    prio: tuple[int, int]
    lost: float  # GPU-seconds lost if evicted now
    preemptible: bool
    movable: bool
    alive: bool = True
    gain: dict[int, int] = field(default_factory=dict)  # class -> usable GPUs of it this frees
    stuck: bool = False  # a movable found no room anywhere else in this pass (capacity only shrinks)
    moving: _Req | None = None  # its request, once asked to move


@dataclass(slots=True, eq=False)
class _Ws:
    name: str
    weight: float
    guaranteed: float
    cap: float
    used: float = 0.0
    by_model: dict[str, float] = field(default_factory=dict)
    dominant: float = 0.0


@dataclass(slots=True, eq=False)
class _Req:
    """A GPR's request as the engine works with it."""

    gpr: Gpr
    ws: _Ws
    k: int
    is_mig: bool
    scope: int  # what feasibility depends on (classes, regions, pins): the failure caches' key
    prio: tuple[int, int]
    pinned: bool
    classes: tuple[tuple[int, mig.MigProfile | None], ...] = ()
    regions: frozenset[str] | None = None
    ranks: dict[SiteTier, int] | None = None  # tier -> rank, filled on first use
    requeued: bool = False
    queued: bool = False
    missing: list[int] = field(default_factory=list)
    after: dict[int, AllocationId] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class _Choice:
    """A replica's devices as chosen (already taken in the index)."""

    sc: int
    hc: int
    host: int
    gpus: list[int]
    slots: list[tuple[int, mig.MigProfile, int]]  # (gpu, profile, start)
    eq: float


_RES = object()  # owner marker of a GPU held by a reservation


class Planner:
    """The index over one snapshot and the pass that turns it into a plan. Single use."""

    def __init__(self, snapshot: Snapshot, weights: ScoringWeights | None = None) -> None:
        self.snap = snapshot
        self.w = weights or snapshot.weights
        self.now = snapshot.now
        self.classes: list[_Class] = []
        self.class_ids: dict[tuple[str, int, str, bool], int] = {}
        self._raw_class_ids: dict[tuple[str, int, str, bool], int] = {}  # as reported, before folding
        self.sites: list[_Site] = []
        self.site_ids: dict[str, int] = {}
        self.hosts: list[Host] = []
        self.host_ids: dict[str, int] = {}
        self.host_site: list[int] = []
        self.host_ok: list[bool] = []
        self.gpus: list[_Gpu] = []
        self.gpu_ids: dict[str, int] = {}
        self.scs: list[_SiteClass] = []
        self.sc_ids: dict[tuple[int, int], int] = {}
        self.hc_host: list[int] = []
        self.hc_sc: list[int] = []
        self.hc_gpus: list[list[int]] = []
        self.hc_free: list[list[int]] = []
        self.host_hcs: list[dict[int, int]] = []  # host -> class -> hc
        self.max_per_host = 1
        self.workspaces: dict[str, _Ws] = {}
        self.model_capacity: dict[str, float] = {}
        self.allocs: list[_Alloc] = []
        self.gprs: dict[GprId, Gpr] = dict(snapshot.gprs)
        for g in snapshot.pending:
            self.gprs.setdefault(g.id, g)
        self._scope_ids: dict[tuple[object, ...], int] = {}
        self._scope_site_cache: dict[int, set[int]] = {}
        self._scope_sc_cache: dict[tuple[int, str], list[int]] = {}
        self._scope_min_cache: dict[tuple[int, int, str], tuple[int, int]] = {}
        # class -> site-classes holding preemption victims / movable allocations of it
        self._victim_scs: dict[int, list[int]] = {}
        self._movable_scs: dict[int, list[int]] = {}
        self._lat_cache: dict[str | None, list[float]] = {}
        self._level_cache: dict[tuple[str | None, frozenset[SiteTier]], list[tuple[float, int]]] = {}
        self._site_classes: list[dict[int, int]] = []  # site -> class -> site-class
        self._sc_price: list[float] = []  # site-class -> price cost
        self._site_min_price: list[float] = []  # site -> cheapest price cost of any class there
        # whole-GPU class -> {site-class: most free GPUs on one host there} for those with any free
        self._avail: dict[int, dict[int, int]] = {}
        self.shape_classes: dict[GpuShape, tuple[tuple[int, mig.MigProfile | None], ...]] = {}
        # What did not fit, remembered for the rest of the pass (capacity only shrinks during it):
        # (scope, k) had no free room; preemption / migration found nothing for priorities up to the
        # one stored (a lower priority has fewer victims, and fewer allocations it may move).
        self.free_fail: set[tuple[int, int]] = set()
        self.preempt_fail: dict[tuple[int, int], tuple[int, int]] = {}
        self.migrate_fail: dict[tuple[int, int, bool], tuple[int, int]] = {}
        self.undo_log: list[tuple[object, ...]] | None = None
        # plan output
        self.placements: list[Placement] = []
        self.evictions: list[Eviction] = []
        self.migrations: list[Migration] = []
        self.reservations: list[Reservation] = []
        self.dropped: list[tuple[Reservation, str]] = []
        # the pass's queue and what it learnt
        self._groups: dict[tuple[int, int], dict[str, list[tuple[float, str, _Req]]]] = {}
        self._group_heap: list[tuple[int, int]] = []
        self._reqs: dict[GprId, _Req] = {}
        self._failed: dict[GprId, tuple[_Req, str, str]] = {}
        self._credited: set[str] = set()
        self._mig_freed = False
        self._decision_credit: set[str] = set()
        self._decision_mig_freed = False
        self._kept_reservations: list[Reservation] = []
        self._queued = False
        self.direct_limit = _DIRECT_LIMIT  # a knob for tests: both search paths must agree
        self._clean = True  # nothing tentative taken in the current decision
        self._build()

    # -- building the index ------------------------------------------------------------------------

    def _class_of(self, model: str, memory: int, cc: str, mig_enabled: bool) -> int:
        raw = (model, memory, cc, mig_enabled)
        cid = self._raw_class_ids.get(raw)
        if cid is not None:
            return cid
        key = (fold_model_name(model), memory, cc, mig_enabled)
        cid = self.class_ids.get(key)
        if cid is None:
            cid = len(self.classes)
            table = mig.table_for(model) if mig_enabled else None
            self.classes.append(_Class(cid, model, key[0], memory, cc, mig_enabled, table))
            self.class_ids[key] = cid
        self._raw_class_ids[raw] = cid
        return cid

    def _sc(self, site: int, cls: int) -> int:
        sc = self.sc_ids.get((site, cls))
        if sc is None:
            sc = len(self.scs)
            self.scs.append(_SiteClass(sc, site, cls))
            self.sc_ids[(site, cls)] = sc
        return sc

    def _ws(self, name: str) -> _Ws:
        ws = self.workspaces.get(name)
        if ws is None:
            spec: Workspace | None = self.snap.workspaces.get(WorkspaceName(name))
            weight = spec.fair_share_weight if spec and spec.fair_share_weight > 0 else 1.0
            ws = _Ws(name, weight, float(spec.quota.guaranteed_gpus) if spec else 0.0,
                     quota_cap(spec.quota) if spec else INF)
            self.workspaces[name] = ws
        return ws

    def _build(self) -> None:
        snap = self.snap
        for name in sorted(snap.sites):
            s = snap.sites[name]
            self.site_ids[name] = len(self.sites)
            self.sites.append(_Site(len(self.sites), s, {fold_model_name(m): p for m, p in s.price_per_gpu_hour},
                                    dict(s.latency_ms)))
        unclean = snap.unclean_gpus
        seen_hosts: set[str] = set()
        for host in sorted(snap.hosts, key=lambda h: h.id):
            if host.id in seen_hosts:
                continue
            seen_hosts.add(host.id)
            h = len(self.hosts)
            self.hosts.append(host)
            self.host_ids[host.id] = h
            site = self.site_ids.get(host.site, -1)
            ok = host.schedulable and site >= 0
            self.host_site.append(site)
            self.host_ok.append(ok)
            hcs: dict[int, int] = {}
            self.host_hcs.append(hcs)
            for info in host.inventory.gpus:
                if info.uuid in self.gpu_ids:
                    continue
                cid = self._class_of(info.model, info.memory_mib, info.compute_capability, info.mig_enabled)
                g = len(self.gpus)
                usable = ok and info.health is GpuHealth.HEALTHY and info.uuid not in unclean
                gpu = _Gpu(g, h, info.index, info.uuid, cid, info.numa_node, usable)
                if info.mig_enabled:
                    for inst in info.mig_instances:
                        gpu.idle[inst.start] = inst.profile
                self.gpus.append(gpu)
                self.gpu_ids[info.uuid] = g
                if ok:
                    model = self.classes[cid].folded
                    self.model_capacity[model] = self.model_capacity.get(model, 0.0) + 1.0
                    hc = hcs.get(cid)
                    if hc is None:
                        hc = len(self.hc_host)
                        hcs[cid] = hc
                        self.hc_host.append(h)
                        sc = self._sc(site, cid)
                        self.hc_sc.append(sc)
                        self.hc_gpus.append([])
                        self.hc_free.append([])
                        self.scs[sc].hcs.append(hc)
                    self.hc_gpus[hc].append(g)
        for gpus in self.hc_gpus:
            self.max_per_host = max(self.max_per_host, len(gpus))
        self._load_allocations()
        self._load_unclean_slots()
        self._load_reservations()
        # Free lists and buckets once every claim is known.
        self._site_classes = [{} for _ in self.sites]
        self._site_min_price = [0.0] * len(self.sites)
        for record in self.scs:
            if not self.classes[record.cls].mig_enabled:
                record.buckets = [set() for _ in range(self.max_per_host + 1)]
            price = self.w.price_per_dollar * self.sites[record.site].prices.get(self.classes[record.cls].folded, 0.0)
            self._sc_price.append(price)
            here = self._site_classes[record.site]
            self._site_min_price[record.site] = price if not here else min(self._site_min_price[record.site], price)
            here[record.cls] = record.id
        for hc, members in enumerate(self.hc_gpus):
            sitecls = self.scs[self.hc_sc[hc]]
            if self.classes[sitecls.cls].mig_enabled:
                for g in members:
                    gpu = self.gpus[g]
                    if gpu.usable:
                        sitecls.states.setdefault((gpu.mask, gpu.compute, gpu.me), set()).add(g)
                continue
            free = [g for g in members if self.gpus[g].usable and self.gpus[g].owner is None]
            self.hc_free[hc] = free
            sitecls.buckets[len(free)].add(hc)
            if hc in sitecls.victim_hosts:
                held = sum(1 for r in sitecls.victim_hosts[hc] for g in r.gpus
                           if self.gpus[g].cls == sitecls.cls and self.gpus[g].usable)
                sitecls.victim_room = max(sitecls.victim_room, len(free) + held)
            if len(free) > sitecls.fmax:
                sitecls.fmax = len(free)
                self._avail.setdefault(sitecls.cls, {})[sitecls.id] = sitecls.fmax

    def _prio_of(self, gpr: Gpr | None) -> tuple[int, int]:
        return (int(gpr.spec.priority_tier), gpr.spec.priority) if gpr else (int(PriorityTier.HIGH), 1 << 30)

    def _slots_of(self, a: Allocation) -> list[tuple[int, MigSlot | None]]:
        """The MIG slots an allocation holds: as the controller recorded them, else as the host reports
        its instances, else None for "the whole GPU" (nothing else can be known safely)."""
        recorded = self.snap.allocation_mig.get(a.id)
        if recorded:
            return [(self.gpu_ids[s.gpu_uuid], s) for s in recorded if s.gpu_uuid in self.gpu_ids]
        out: list[tuple[int, MigSlot | None]] = []
        devices = set(a.device_uuids)
        for u in a.gpu_uuids:
            g = self.gpu_ids.get(u)
            if g is None:
                continue
            host = self.hosts[self.gpus[g].host]
            info = next((i for i in host.inventory.gpus if i.uuid == u), None)
            table = mig.table_for(info.model) if info else None
            found = False
            for inst in info.mig_instances if info else ():
                p = table.profile(inst.profile) if table else None
                if inst.uuid in devices and p is not None:
                    out.append((g, MigSlot(u, self.gpus[g].index, p.name, inst.start, p.size, p.compute_slices)))
                    found = True
            if not found:
                out.append((g, None))
        return out

    def _load_allocations(self) -> None:
        w = self.w
        now = self.now
        self.allocated: set[str] = {u for a in self.snap.allocations for u in a.gpu_uuids}
        for a in sorted(self.snap.allocations, key=lambda x: x.id):
            gpr = self.gprs.get(a.gpr_id)
            h = self.host_ids.get(a.host_id, -1)
            rec = _Alloc(a, gpr, h, [], [], 0.0, "", self._prio_of(gpr), 0.0, False, False)
            model = ""
            if a.mig_profile:
                for g, slot in self._slots_of(a):
                    gpu = self.gpus[g]
                    cls = self.classes[gpu.cls]
                    model = cls.folded
                    if slot is None:
                        occ = _Occupant(0, mig.MEMORY_SLICES, mig.COMPUTE_SLICES, a.mig_profile, "alloc", rec)
                        rec.eq += 1.0
                    else:
                        occ = _Occupant(slot.start, slot.size, slot.compute_slices, slot.profile, "alloc", rec)
                        rec.eq += slot.compute_slices / mig.COMPUTE_SLICES
                    self._occupy(gpu, occ)
                    rec.slots.append((g, occ))
                    if g not in rec.gpus:
                        rec.gpus.append(g)
            else:
                for u in a.gpu_uuids:
                    found = self.gpu_ids.get(u)
                    rec.eq += 1.0
                    if found is None:
                        continue
                    g = found
                    gpu = self.gpus[g]
                    model = self.classes[gpu.cls].folded
                    if self.classes[gpu.cls].mig_enabled:
                        self._occupy(gpu, _Occupant(0, mig.MEMORY_SLICES, mig.COMPUTE_SLICES, "", "alloc", rec))
                    else:
                        gpu.owner = rec
                    rec.gpus.append(g)
            if not model:
                model = "?"
            rec.model = model
            self._charge(self._ws(a.workspace), model, rec.eq)
            self.allocs.append(rec)
            if gpr is None or h < 0 or not self.host_ok[h] or not rec.gpus:
                continue
            # Only an allocation its host reports running is running: a replica just placed (or just
            # moved) has nothing to lose yet and must not be undone by the next pass.
            running = gpr.running_since is not None and a.state is AllocationState.RUNNING
            ran = now - max(gpr.running_since, a.created_at) if gpr.running_since is not None else 0.0
            red = gpr.spec.redistribution
            cooling = now - self.snap.preempted_at.get(gpr.id, -INF) < w.preemption_cooldown_s
            rec.lost = rec.eq * max(ran, 0.0)
            rec.preemptible = running and red.preemptible and ran >= red.min_runtime_s and not cooling
            rec.movable = (running and red.may_migrate and gpr.spec.placement.policy is PlacementPolicy.REDISTRIBUTABLE
                           and now - a.created_at >= w.migration_cooldown_s)
            if not (rec.preemptible or rec.movable):
                continue
            for g in rec.gpus:
                if self.gpus[g].usable:
                    rec.gain[self.gpus[g].cls] = rec.gain.get(self.gpus[g].cls, 0) + 1
            for cid in sorted({self.gpus[g].cls for g in rec.gpus}):
                hc = self.host_hcs[h].get(cid)
                if hc is None:
                    continue
                sc = self.scs[self.hc_sc[hc]]
                if rec.preemptible:
                    sc.by_prio.append(rec)
                    sc.victim_max_prio = max(sc.victim_max_prio, rec.prio)
                    self._victim_scs.setdefault(cid, [])
                    if sc.id not in self._victim_scs[cid]:
                        self._victim_scs[cid].append(sc.id)
                    if self.classes[cid].mig_enabled:
                        for g in rec.gpus:
                            if self.gpus[g].cls == cid and g not in sc.mig_victim_gpus:
                                sc.mig_victim_gpus.append(g)
                    else:
                        sc.victims.append(rec)
                        sc.victim_hosts.setdefault(hc, []).append(rec)
                if rec.movable and not self.classes[cid].mig_enabled:
                    sc.mov_by_prio.append(rec)
                    sc.movable_hosts.setdefault(hc, []).append(rec)
                    self._movable_scs.setdefault(cid, [])
                    if sc.id not in self._movable_scs[cid]:
                        self._movable_scs[cid].append(sc.id)

    def _load_unclean_slots(self) -> None:
        for slot in sorted(self.snap.unclean_slots, key=lambda s: (s.gpu_uuid, s.start)):
            g = self.gpu_ids.get(slot.gpu_uuid)
            if g is None:
                continue
            # An unclean range blocks its memory slices; its compute is free once the instance is gone
            # (the agent destroys before it creates, so the count never overlaps physically).
            self._occupy(self.gpus[g], _Occupant(slot.start, slot.size, 0, slot.profile, "unclean"))

    def _load_reservations(self) -> None:
        keep: list[Reservation] = []
        for r in sorted(self.snap.reservations, key=lambda r: (r.gpr_id, r.replica, r.host_id)):
            why = self._reservation_gone(r)
            if why:
                self.dropped.append((r, why))
                continue
            keep.append(r)
            self._hold_reservation(r)
        self._kept_reservations = keep

    def _reservation_gone(self, r: Reservation) -> str:
        if r.gpr_id not in self.gprs:
            return "its GPR is no longer waiting"
        h = self.host_ids.get(r.host_id)
        if h is None or not self.host_ok[h]:
            return f"host {r.host_id} is no longer schedulable"
        host = self.hosts[h]
        infos = {i.uuid: i for i in host.inventory.gpus}
        for u in r.gpu_uuids:
            info = infos.get(u)
            if info is None or info.health is GpuHealth.UNHEALTHY:
                return f"GPU {u} is gone or unhealthy"
        if self.now - r.created_at > self.w.reservation_timeout_s:
            return f"its devices were not reported clean within {self.w.reservation_timeout_s:g}s"
        return ""

    def _hold_reservation(self, r: Reservation) -> None:
        ws = self._ws(r.workspace)
        model = "?"
        if r.mig_slots:
            for s in r.mig_slots:
                g = self.gpu_ids[s.gpu_uuid]
                model = self.classes[self.gpus[g].cls].folded
                self._occupy(self.gpus[g], _Occupant(s.start, s.size, s.compute_slices, s.profile, "res"))
        else:
            for u in r.gpu_uuids:
                g = self.gpu_ids[u]
                model = self.classes[self.gpus[g].cls].folded
                self.gpus[g].owner = _RES
        self._charge(ws, model, r.gpu_equivalents or float(len(r.gpu_uuids)))

    def _reservation_ready(self, r: Reservation) -> bool:
        """Every device free of allocations and clean (the reservation itself is its only claim)."""
        snap = self.snap
        host = self.hosts[self.host_ids[r.host_id]]
        infos = {i.uuid: i for i in host.inventory.gpus}
        for u in r.gpu_uuids:
            info = infos[u]
            if info.health is not GpuHealth.HEALTHY or u in snap.unclean_gpus:
                return False
        if r.mig_slots:
            for s in r.mig_slots:
                gpu = self.gpus[self.gpu_ids[s.gpu_uuid]]
                for occ in gpu.occupants:
                    overlaps = occ.start < s.start + s.size and s.start < occ.start + occ.size
                    if overlaps and occ.kind in ("alloc", "unclean"):
                        return False
            return True
        return not (self.allocated & set(r.gpu_uuids))

    # -- bookkeeping ---------------------------------------------------------------------------------

    def _charge(self, ws: _Ws, model: str, eq: float) -> None:
        ws.used += eq
        m = ws.by_model.get(model, 0.0) + eq
        ws.by_model[model] = m
        cap = self.model_capacity.get(model, 0.0) or 1.0
        if eq >= 0:
            ws.dominant = max(ws.dominant, m / cap)
        else:
            ws.dominant = max((v / (self.model_capacity.get(k, 0.0) or 1.0) for k, v in ws.by_model.items()),
                              default=0.0)
        if self.undo_log is not None:
            self.undo_log.append(("charge", ws, model, eq))

    def _occupy(self, gpu: _Gpu, occ: _Occupant) -> None:
        gpu.occupants.append(occ)
        self._recount(gpu)

    @staticmethod
    def _recount(gpu: _Gpu) -> None:
        mask = 0
        compute = 0
        me = False
        for o in gpu.occupants:
            mask |= mig.slot_mask(o.start, o.size)
            compute += o.compute
            me = me or o.profile.endswith("+me")
        gpu.mask, gpu.compute, gpu.me = mask, min(compute, mig.COMPUTE_SLICES), me

    def _mig_change(self, gpu: _Gpu, add: _Occupant | None, remove: _Occupant | None) -> None:
        """Adds/removes an occupant of a MIG GPU, moving the GPU between its site-class's states."""
        hc = self.host_hcs[gpu.host].get(gpu.cls)
        sc = self.scs[self.hc_sc[hc]] if hc is not None else None
        old = (gpu.mask, gpu.compute, gpu.me)
        if remove is not None:
            gpu.occupants.remove(remove)
        if add is not None:
            gpu.occupants.append(add)
        self._recount(gpu)
        if sc is not None and gpu.usable:
            new = (gpu.mask, gpu.compute, gpu.me)
            if new != old:
                sc.states[old].discard(gpu.i)
                sc.states.setdefault(new, set()).add(gpu.i)
        if self.undo_log is not None:
            self.undo_log.append(("mig", gpu, add, remove))

    def _take_whole(self, hc: int, gpus: list[int], owner: object) -> None:
        free = self.hc_free[hc]
        sc = self.scs[self.hc_sc[hc]]
        before = len(free)
        taken = 0
        for g in gpus:
            gpu = self.gpus[g]
            if gpu.owner is None and g in free:
                free.remove(g)
                taken += 1
            gpu.owner = owner
        if taken:
            self._move(sc, hc, before, before - taken)
        if self.undo_log is not None:
            self.undo_log.append(("whole", hc, gpus, taken))

    def _move(self, sc: _SiteClass, hc: int, old: int, new: int) -> None:
        """Moves a host between its site-class's free-count buckets, keeping ``fmax`` and ``_avail``."""
        buckets = sc.buckets
        buckets[old].discard(hc)
        buckets[new].add(hc)
        fmax = sc.fmax
        if new > fmax:
            fmax = new
        elif old == fmax and not buckets[old]:
            while fmax > 0 and not buckets[fmax]:
                fmax -= 1
        if fmax != sc.fmax:
            sc.fmax = fmax
            avail = self._avail.setdefault(sc.cls, {})
            if fmax:
                avail[sc.id] = fmax
            else:
                avail.pop(sc.id, None)

    def _undo(self, log: list[tuple[object, ...]]) -> None:
        saved, self.undo_log = self.undo_log, None
        for entry in reversed(log):
            kind = entry[0]
            if kind == "whole":
                _, hc, gpus, _taken = entry
                assert isinstance(hc, int) and isinstance(gpus, list)
                free = self.hc_free[hc]
                sc = self.scs[self.hc_sc[hc]]
                before = len(free)
                for g in gpus:
                    self.gpus[g].owner = None
                    free.append(g)
                free.sort()
                self._move(sc, hc, before, len(free))
            elif kind == "owner":
                _, gpu, owner = entry
                assert isinstance(gpu, _Gpu)
                gpu.owner = owner
            elif kind == "mig":
                _, gpu, add, remove = entry
                assert isinstance(gpu, _Gpu)
                self._mig_change(gpu, remove if isinstance(remove, _Occupant) else None,
                                 add if isinstance(add, _Occupant) else None)
            elif kind == "charge":
                _, ws, model, eq = entry
                assert isinstance(ws, _Ws) and isinstance(model, str) and isinstance(eq, float)
                self._charge(ws, model, -eq)
            elif kind == "alive":
                _, rec = entry
                assert isinstance(rec, _Alloc)
                rec.alive = True
                self._scope_min_cache.clear()  # a lower bound no more
            elif kind == "vpos":
                _, sitecls, pos = entry
                assert isinstance(sitecls, _SiteClass) and isinstance(pos, int)
                sitecls.vpos = pos
            elif kind == "mpos":
                _, sitecls, pos = entry
                assert isinstance(sitecls, _SiteClass) and isinstance(pos, int)
                sitecls.mpos = pos
            elif kind == "ppos":
                _, sitecls, pos = entry
                assert isinstance(sitecls, _SiteClass) and isinstance(pos, int)
                sitecls.ppos = pos
            elif kind == "requeue":
                _, req, replica, was_missing, after, requeued = entry
                assert isinstance(req, _Req) and isinstance(replica, int)
                if not was_missing:
                    req.missing.remove(replica)
                if isinstance(after, str):
                    req.after[replica] = AllocationId(after)
                else:
                    req.after.pop(replica, None)
                req.requeued = bool(requeued)
        self.undo_log = saved

    # -- requests and where they may go ------------------------------------------------------------------

    def eligible_classes(self, shape: GpuShape) -> tuple[tuple[int, mig.MigProfile | None], ...]:
        """The GPU classes a shape may use, each with the MIG profile it would get there."""
        got = self.shape_classes.get(shape)
        if got is None:
            out: list[tuple[int, mig.MigProfile | None]] = []
            for c in self.classes:
                if class_exclusion(c.model, c.memory_mib, c.compute_capability, c.mig_enabled, shape) is not None:
                    continue
                if c.mig_enabled:
                    assert c.table is not None
                    out.append((c.id, mig.profile_for(c.table, shape.mig_profile, shape.fraction,
                                                      shape.min_memory_mib)))
                else:
                    out.append((c.id, None))
            got = tuple(out)
            self.shape_classes[shape] = got
        return got

    def latency(self, origin: str | None, site: _Site) -> float:
        """Milliseconds from ``origin`` to ``site`` as either site states it (0 with no origin)."""
        if origin is None or origin == site.site.name:
            return 0.0
        lat = site.latency.get(origin)
        if lat is None:
            o = self.site_ids.get(origin)
            lat = self.sites[o].latency.get(site.site.name) if o is not None else None
        return self.w.unknown_latency_ms if lat is None else lat

    def tier_rank(self, gpr: Gpr, site: _Site) -> int:
        """0 for the preferred site, then 1, 2, ... through its tier and spill-over tiers, then the rest."""
        p = gpr.spec.placement
        if p.site is not None and p.site == site.site.name:
            return 0
        tiers = list(dict.fromkeys(t for t in (p.tier, *p.tier_preference) if t is not None))
        if tiers:
            return 1 + tiers.index(site.site.tier) if site.site.tier in tiers else 1 + len(tiers)
        return 1 if p.site is not None else 0

    def site_cost(self, gpr: Gpr, site: _Site, cls: _Class) -> float:
        """The site part of a host's cost for ``gpr`` (see ``ScoringWeights``): what the engine minimises,
        stated plainly (the candidate stream computes the same sum from precomputed parts)."""
        w = self.w
        cost = w.tier_step * self.tier_rank(gpr, site)
        cost += w.latency_per_ms * self.latency(gpr.spec.placement.origin_site, site)
        cost += w.price_per_dollar * site.prices.get(cls.folded, 0.0)
        artifact = gpr.spec.model_artifact
        if artifact and site.site.name not in self.snap.artifacts_at_site.get(artifact, frozenset()):
            cost += w.locality_miss
        return cost

    def _latency_costs(self, origin: str | None) -> list[float]:
        got = self._lat_cache.get(origin)
        if got is None:
            got = [self.w.latency_per_ms * self.latency(origin, s) for s in self.sites]
            self._lat_cache[origin] = got
        return got

    def _level_list(self, origin: str | None, tiers: frozenset[SiteTier]) -> list[tuple[float, int]]:
        """Sites of ``tiers`` by their lower bound from ``origin``: latency cost plus cheapest price there."""
        key = (origin, tiers)
        got = self._level_cache.get(key)
        if got is None:
            lat = self._latency_costs(origin)
            got = sorted((lat[s.i] + self._site_min_price[s.i], s.i) for s in self.sites if s.site.tier in tiers)
            self._level_cache[key] = got
        return got

    def _scope(self, classes: tuple[tuple[int, mig.MigProfile | None], ...], regions: frozenset[str] | None,
               pinned_site: str | None, pinned_tier: SiteTier | None) -> int:
        """An id for what feasibility depends on: the classes, regions and pins (not the preferences)."""
        key = (classes, regions, pinned_site, pinned_tier)
        sid = self._scope_ids.get(key)
        if sid is None:
            sid = len(self._scope_ids)
            self._scope_ids[key] = sid
        return sid

    def _site_in_scope(self, req: _Req, site: int) -> bool:
        s = self.sites[site].site
        if req.regions is not None and s.region not in req.regions:
            return False
        p = req.gpr.spec.placement
        if req.pinned:
            if p.site is not None and s.name != p.site:
                return False
            if p.tier is not None and s.tier is not p.tier:
                return False
        return True

    def candidates(self, req: _Req, want: Callable[[_SiteClass], bool] | None = None
                   ) -> Iterator[tuple[float, int]]:
        """The (site, class) pairs in scope for ``req`` as (site cost, site-class), cheapest first, lazily.

        Sites come from per-(origin, tier) lists sorted by a lower bound (tier rank, latency, cheapest
        price at the site; locality and packing only add); each is costed exactly and held in a heap
        until no site still to come can be cheaper. So a request that finds room nearby never looks at
        the far sites, and the order is exactly that of ``site_cost``. ``want`` skips site-classes
        that cannot help (no victims, nothing movable) before they are costed.
        """
        gpr = req.gpr
        p = gpr.spec.placement
        w = self.w
        step = w.tier_step
        lat = self._latency_costs(p.origin_site)
        classes = req.classes
        artifact = gpr.spec.model_artifact
        local = self.snap.artifacts_at_site.get(artifact, frozenset()) if artifact else None
        miss = w.locality_miss
        all_tiers = frozenset(SiteTier)
        # (rank, tiers, only this site or -1)
        levels: list[tuple[int, frozenset[SiteTier], int]] = []
        pref = self.site_ids.get(p.site, -1) if p.site is not None else -1
        if pref >= 0:
            levels.append((0, all_tiers, pref))
        tiers = list(dict.fromkeys(t for t in (p.tier, *p.tier_preference) if t is not None))
        if tiers:
            levels += [(1 + i, frozenset({t}), -1) for i, t in enumerate(tiers)]
            levels.append((1 + len(tiers), all_tiers - set(tiers), -1))
        else:
            levels.append((1 if p.site is not None else 0, all_tiers, -1))
        if req.pinned and p.site is not None:
            levels = [lv for lv in levels if lv[2] == pref]
        if req.pinned and p.tier is not None:
            levels = [(r, t & {p.tier}, only) for r, t, only in levels if p.tier in t]
        streams = []
        for n, (rank, level_tiers, only) in enumerate(levels):
            if only >= 0:
                entries = [(lat[only] + self._site_min_price[only], only)]
            else:
                entries = self._level_list(p.origin_site, level_tiers)
            streams.append(_level_stream(entries, step * rank, n, rank))
        ready: list[tuple[float, int]] = []
        seen_pref = pref if pref >= 0 else -1
        site_classes = self._site_classes
        sc_price = self._sc_price
        merged = streams[0] if len(streams) == 1 else heapq.merge(*streams) if streams else iter(())
        for bound, _n, site, rank in merged:
            while ready and ready[0][0] <= bound:
                yield heapq.heappop(ready)
            if rank > 0 and site == seen_pref:
                continue  # the preferred site was costed at rank 0
            if not self._site_in_scope(req, site):
                continue
            here = site_classes[site]
            base = step * rank + lat[site]
            if local is not None and self.sites[site].site.name not in local:
                base += miss
            for cid, _profile in classes:
                sc = here.get(cid)
                if sc is not None and (want is None or want(self.scs[sc])):
                    heapq.heappush(ready, (base + sc_price[sc], sc))
        while ready:
            yield heapq.heappop(ready)

    def request(self, gpr: Gpr) -> _Req:
        """``gpr`` as a request, ready to be placed."""
        return self._prepare(self._bare(gpr))

    def _bare(self, gpr: Gpr) -> _Req:
        """What queueing needs; ``_prepare`` adds the rest when the request's turn comes."""
        shape = gpr.spec.shape
        return _Req(gpr, self._ws(gpr.spec.workspace), max(shape.count, 1), wants_mig(shape), -1,
                    (int(gpr.spec.priority_tier), gpr.spec.priority),
                    gpr.spec.placement.policy is PlacementPolicy.PINNED)

    def _prepare(self, req: _Req) -> _Req:
        if req.scope < 0:
            gpr = req.gpr
            p = gpr.spec.placement
            req.regions = allowed_regions(gpr, self.snap.workspaces.get(gpr.spec.workspace))
            req.classes = self.eligible_classes(gpr.spec.shape)
            req.scope = self._scope(req.classes, req.regions, p.site if req.pinned else None,
                                    p.tier if req.pinned else None)
        return req

    def _scope_scs(self, req: _Req, kind: str) -> list[int]:
        """The site-classes in ``req``'s scope holding victims ("victims") or movables ("movables")."""
        key = (req.scope, kind)
        got = self._scope_sc_cache.get(key)
        if got is None:
            sites = self._scope_sites(req)
            by_class = self._victim_scs if kind == "victims" else self._movable_scs
            got = [sc for cid, _p in req.classes for sc in by_class.get(cid, ()) if self.scs[sc].site in sites]
            self._scope_sc_cache[key] = got
        return got

    def _scope_min(self, req: _Req, kind: str, below: tuple[int, int]) -> tuple[int, int]:
        """The lowest priority of any live victim ("victims") or movable ("movables") in ``req``'s scope
        that could make room for ``req.k`` GPUs, exact when it is below ``below``.

        Victims and movables only go during a pass (an undo brings some back and clears the cache), so
        a remembered minimum is a lower bound: when even that is not below ``below``, nothing is.
        """
        key = (req.scope, req.k, kind)
        cached = self._scope_min_cache.get(key)
        if cached is not None and not cached < below:
            return cached
        scs = self.scs
        if kind == "victims":
            value = min((self._min_victim_prio(scs[sc]) for sc in self._scope_scs(req, kind)
                         if self.classes[scs[sc].cls].mig_enabled or scs[sc].victim_room >= req.k), default=(99, 0))
        else:
            value = min((self._min_movable_prio(scs[sc]) for sc in self._scope_scs(req, kind)), default=(99, 0))
        self._scope_min_cache[key] = value
        return value

    def _scope_sites(self, req: _Req) -> set[int]:
        """The sites in ``req``'s scope (cached per scope)."""
        got = self._scope_site_cache.get(req.scope)
        if got is None:
            got = {s.i for s in self.sites if self._site_in_scope(req, s.i)}
            self._scope_site_cache[req.scope] = got
        return got

    # -- free placement --------------------------------------------------------------------------------

    def _profile(self, shape: GpuShape, cls: int) -> mig.MigProfile | None:
        for cid, profile in self.eligible_classes(shape):
            if cid == cls:
                return profile
        return None

    def find_free(self, req: _Req, exclude_host: int = -1) -> _Choice | None:
        """The cheapest free devices for one replica of ``req`` (taken in the index), or None.

        Where few site-classes have any room left (late in a busy pass), they are costed directly;
        otherwise the candidate stream is walked from the cheapest site. Both find the same minimum
        (ties go to the lower site-class id).
        """
        if req.is_mig:
            return self._find_free_mig(req, exclude_host)
        k = req.k
        if k > self.max_per_host:
            return None
        scs = self.scs
        packing = self.w.packing / self.max_per_host
        best_cost = INF
        best: tuple[int, int] | None = None  # (sc, free count)
        avail = self._avail
        sparse = sum(len(avail.get(cid, ())) for cid, _p in req.classes) <= self.direct_limit

        def consider(cost: float, sc_id: int) -> None:
            nonlocal best_cost, best
            buckets = scs[sc_id].buckets
            for f in range(k, len(buckets)):
                b = buckets[f]
                if b and (exclude_host < 0 or any(self.hc_host[hc] != exclude_host for hc in b)):
                    total = cost + packing * (f - k)
                    if total < best_cost or (total == best_cost and best is not None and sc_id < best[0]):
                        best_cost = total
                        best = (sc_id, f)
                    return

        if sparse:
            for cid, _p in req.classes:
                for sc_id, fmax in avail.get(cid, {}).items():
                    if fmax >= k and self._site_in_scope(req, scs[sc_id].site):
                        cost = self.exact_cost(req, sc_id)
                        if cost <= best_cost:
                            consider(cost, sc_id)
        else:
            for cost, sc_id in self.candidates(req, lambda sc: sc.fmax >= k):
                if cost > best_cost:
                    break
                consider(cost, sc_id)
        if best is None:
            return None
        sc_id, f = best
        bucket = scs[sc_id].buckets[f]
        hc = min(bucket) if exclude_host < 0 else min(x for x in bucket if self.hc_host[x] != exclude_host)
        gpus = self._pick_gpus(self.hc_free[hc], k)
        self._take_whole(hc, gpus, req)
        return _Choice(sc_id, hc, self.hc_host[hc], gpus, [], float(k))

    def exact_cost(self, req: _Req, sc_id: int) -> float:
        """``site_cost`` for ``req`` at a site-class, from the precomputed parts."""
        sc = self.scs[sc_id]
        site = self.sites[sc.site]
        p = req.gpr.spec.placement
        ranks = req.ranks
        if ranks is None:
            tiers = list(dict.fromkeys(t for t in (p.tier, *p.tier_preference) if t is not None))
            base = 1 if p.site is not None else 0
            ranks = req.ranks = {t: (1 + tiers.index(t) if t in tiers else 1 + len(tiers)) if tiers else base
                                 for t in SiteTier}
        rank = 0 if p.site is not None and p.site == site.site.name else ranks[site.site.tier]
        cost = self.w.tier_step * rank + self._latency_costs(p.origin_site)[sc.site] + self._sc_price[sc_id]
        artifact = req.gpr.spec.model_artifact
        if artifact and site.site.name not in self.snap.artifacts_at_site.get(artifact, frozenset()):
            cost += self.w.locality_miss
        return cost

    def _pick_gpus(self, free: list[int], k: int) -> list[int]:
        """``k`` of the free GPUs, on one NUMA node where one has room (the fullest such node)."""
        if k == len(free):
            return list(free)
        by_numa: dict[int, list[int]] = {}
        for g in free:
            by_numa.setdefault(self.gpus[g].numa, []).append(g)
        if len(by_numa) == 1:
            return sorted(free, key=lambda g: self.gpus[g].index)[:k]
        fits = [(len(v), n) for n, v in by_numa.items() if len(v) >= k]
        if fits:
            _, n = min(fits)
            return sorted(by_numa[n], key=lambda g: self.gpus[g].index)[:k]
        out: list[int] = []
        for _n, v in sorted(by_numa.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            out.extend(sorted(v, key=lambda g: self.gpus[g].index))
        return out[:k]

    def _mig_start(self, gpu: _Gpu, profile: mig.MigProfile) -> int | None:
        # An idle instance of exactly this profile is reused as it is (no reconfiguration).
        for start, name in sorted(gpu.idle.items()):
            free = not gpu.mask & mig.slot_mask(start, profile.size)
            room = gpu.compute + profile.compute_slices <= mig.COMPUTE_SLICES and not (profile.media_extensions
                                                                                      and gpu.me)
            if name == profile.name and start in profile.starts and free and room:
                return start
        return mig.best_start(profile, gpu.mask, gpu.compute, gpu.me)

    def _best_mig_gpu(self, sc: _SiteClass, profile: mig.MigProfile, exclude_host: int) -> tuple[float, int] | None:
        """The fullest GPU of a site-class where ``profile`` fits: (packing cost, gpu)."""
        best: tuple[float, tuple[int, int, bool]] | None = None
        for state, gset in sc.states.items():
            if not gset:
                continue
            start = mig.best_start(profile, *state)
            if start is None:
                continue
            left = mig.capacity_left(state[0] | mig.slot_mask(start, profile.size), state[1] + profile.compute_slices)
            cost = self.w.packing * left[0] / mig.COMPUTE_SLICES
            if exclude_host >= 0 and all(self.gpus[g].host == exclude_host for g in gset):
                continue
            if best is None or (cost, state) < best:
                best = (cost, state)
        if best is None:
            return None
        gset = sc.states[best[1]]
        g = min(x for x in gset if self.gpus[x].host != exclude_host)
        return best[0], g

    def _find_free_mig(self, req: _Req, exclude_host: int) -> _Choice | None:
        shape = req.gpr.spec.shape
        if req.k > 1:
            return self._find_free_mig_multi(req, exclude_host)
        best_cost = INF
        best: tuple[int, int, mig.MigProfile] | None = None
        for cost, sc_id in self.candidates(req):
            if cost >= best_cost:
                break
            sc = self.scs[sc_id]
            profile = self._profile(shape, sc.cls)
            if profile is None:
                continue
            found = self._best_mig_gpu(sc, profile, exclude_host)
            if found is not None and cost + found[0] < best_cost:
                best_cost = cost + found[0]
                best = (sc_id, found[1], profile)
        if best is None:
            return None
        sc_id, g, profile = best
        return self._take_mig(sc_id, [g], profile)

    def _take_mig(self, sc_id: int, gpus: list[int], profile: mig.MigProfile) -> _Choice:
        """One instance of ``profile`` on each of ``gpus`` (distinct GPUs of one host), in GPU order."""
        gpus = sorted(gpus, key=lambda g: self.gpus[g].index)
        slots: list[tuple[int, mig.MigProfile, int]] = []
        for g in gpus:
            gpu = self.gpus[g]
            start = self._mig_start(gpu, profile)
            assert start is not None
            self._mig_change(gpu, _Occupant(start, profile.size, profile.compute_slices, profile.name, "alloc"), None)
            slots.append((g, profile, start))
        table = self.classes[self.scs[sc_id].cls].table
        assert table is not None
        host = self.gpus[gpus[0]].host
        hc = self.host_hcs[host][self.scs[sc_id].cls]
        return _Choice(sc_id, hc, host, gpus, slots, len(gpus) * mig.gpu_equivalents(table, profile))

    def _find_free_mig_multi(self, req: _Req, exclude_host: int) -> _Choice | None:
        """Several MIG instances for one replica: one on each of ``k`` GPUs of one host (an allocation
        names one instance per GPU). The rare case, so the simple path: hosts in ranking order."""
        shape = req.gpr.spec.shape
        for _cost, sc_id in self.candidates(req):
            sc = self.scs[sc_id]
            profile = self._profile(shape, sc.cls)
            if profile is None:
                continue
            for hc in sc.hcs:
                if self.hc_host[hc] == exclude_host:
                    continue
                fits = [g for g in self.hc_gpus[hc] if self.gpus[g].usable
                        and mig.best_start(profile, self.gpus[g].mask, self.gpus[g].compute, self.gpus[g].me)
                        is not None]
                if len(fits) >= req.k:
                    # The fullest GPUs first (best fit).
                    fits.sort(key=lambda g: (-self.gpus[g].compute, self.gpus[g].index))
                    return self._take_mig(sc_id, fits[: req.k], profile)
        return None

    # -- preemption -------------------------------------------------------------------------------------

    def _min_victim_prio(self, sc: _SiteClass) -> tuple[int, int]:
        """The lowest priority among the live victims of a site-class ((99, 0) when none)."""
        victims = sc.by_prio
        if not sc.by_prio_sorted:
            victims.sort(key=lambda r: (r.prio, r.a.id))
            sc.by_prio_sorted = True
        start = sc.ppos
        while sc.ppos < len(victims) and not victims[sc.ppos].alive:
            sc.ppos += 1
        if sc.ppos != start and self.undo_log is not None:
            self.undo_log.append(("ppos", sc, start))
        return victims[sc.ppos].prio if sc.ppos < len(victims) else (99, 0)

    def _min_movable_prio(self, sc: _SiteClass) -> tuple[int, int]:
        """The lowest priority among the movables of a site-class still here and not stuck ((99, 0): none)."""
        movables = sc.mov_by_prio
        if not sc.mov_by_prio_sorted:
            movables.sort(key=lambda r: (r.prio, r.a.id))
            sc.mov_by_prio_sorted = True
        start = sc.mpos
        while sc.mpos < len(movables) and (movables[sc.mpos].stuck or not movables[sc.mpos].alive):
            sc.mpos += 1
        if sc.mpos != start and self.undo_log is not None:
            self.undo_log.append(("mpos", sc, start))
        return movables[sc.mpos].prio if sc.mpos < len(movables) else (99, 0)

    def _may_preempt_in(self, sc: _SiteClass, req: _Req) -> bool:
        if self._min_victim_prio(sc) >= req.prio:
            return False
        return self.classes[sc.cls].mig_enabled or sc.victim_room >= req.k

    @staticmethod
    def _evictable(rec: _Alloc, req: _Req) -> bool:
        return rec.alive and rec.preemptible and rec.prio < req.prio and rec.gpr is not req.gpr

    def find_victims(self, req: _Req) -> tuple[_Choice, list[_Alloc]] | None:
        """The cheapest devices for one replica of ``req`` that preemption can free (taken), or None."""
        window = self.w.preemption_site_window
        sites_seen: list[int] = []
        options: list[tuple[float, float, int, int, list[_Alloc], object]] = []
        # Anything at all in scope? (A full walk in site order just to find nothing is the costly case.)
        if not self._scope_min(req, "victims", req.prio) < req.prio:
            return None
        for cost, sc_id in self.candidates(req, lambda sc: self._may_preempt_in(sc, req)):
            sc = self.scs[sc_id]
            if sc.site not in sites_seen and len(sites_seen) >= window:
                break
            opt = self._victims_mig(req, sc) if req.is_mig else self._victims_whole(req, sc)
            if opt is None:
                continue
            lost, where, victims = opt
            if sc.site not in sites_seen:
                sites_seen.append(sc.site)
            options.append((lost, cost, sc_id, len(options), victims, where))
        if not options:
            return None
        lost, _cost, sc_id, _n, victims, where = min(options, key=lambda o: o[:4])
        sc = self.scs[sc_id]
        if req.is_mig:
            assert isinstance(where, tuple)
            g, start = where
            return self._take_mig_over(req, sc_id, g, start, victims), victims
        assert isinstance(where, int)
        hc = where
        return self._take_whole_over(req, hc, victims), victims

    def _victims_whole(self, req: _Req, sc: _SiteClass) -> tuple[float, object, list[_Alloc]] | None:
        k = req.k
        cls = sc.cls
        if k == 1:
            # The common case: the single victim losing the least frees a GPU.
            if sc.victim_max_prio < req.prio:
                # Every victim here is below the requester: the first live one by GPU-seconds lost.
                if not sc.victims_sorted:
                    sc.victims.sort(key=lambda r: (r.lost, r.prio, r.a.id))
                    sc.victims_sorted = True
                victims = sc.victims
                start = sc.vpos
                while sc.vpos < len(victims) and not victims[sc.vpos].alive:
                    sc.vpos += 1
                if sc.vpos != start and self.undo_log is not None:
                    # An undo may bring a victim back to life: the skip must be undone with it.
                    self.undo_log.append(("vpos", sc, start))
                for j in range(sc.vpos, len(victims)):
                    rec = victims[j]
                    if rec.alive and rec.gain.get(cls) and rec.gpr is not req.gpr:
                        return rec.lost, self.host_hcs[rec.host][cls], [rec]
                return None
            # Else only those below it, which the priority order lists first.
            self._min_victim_prio(sc)
            found: _Alloc | None = None
            for j in range(sc.ppos, len(sc.by_prio)):
                rec = sc.by_prio[j]
                if rec.prio >= req.prio:
                    break
                if rec.alive and rec.preemptible and rec.gain.get(cls) and rec.gpr is not req.gpr and (
                        found is None or (rec.lost, rec.prio, rec.a.id) < (found.lost, found.prio, found.a.id)):
                    found = rec
            if found is None:
                return None
            return found.lost, self.host_hcs[found.host][cls], [found]
        best: tuple[float, int, list[_Alloc]] | None = None
        for hc, recs in sc.victim_hosts.items():
            free = len(self.hc_free[hc])
            cands = [r for r in recs if self._evictable(r, req)]
            if not cands:
                continue
            gain = {id(r): r.gain.get(cls, 0) for r in cands}
            if free + sum(gain.values()) < k:
                continue
            cands.sort(key=lambda r: (r.lost / max(gain[id(r)], 1), r.prio, r.a.id))
            chosen: list[_Alloc] = []
            have = free
            for r in cands:
                if have >= k:
                    break
                if gain[id(r)]:
                    chosen.append(r)
                    have += gain[id(r)]
            for r in sorted(chosen, key=lambda r: -r.lost):  # drop any that turned out not to be needed
                if have - gain[id(r)] >= k:
                    chosen.remove(r)
                    have -= gain[id(r)]
            lost = sum(r.lost for r in chosen)
            if best is None or (lost, hc) < (best[0], best[1]):
                best = (lost, hc, chosen)
        return best if best is None else (best[0], best[1], best[2])

    def _victims_mig(self, req: _Req, sc: _SiteClass) -> tuple[float, object, list[_Alloc]] | None:
        if req.k > 1:
            return None  # several instances by preemption: not attempted (documented)
        profile = self._profile(req.gpr.spec.shape, sc.cls)
        if profile is None:
            return None
        best: tuple[float, tuple[int, int], list[_Alloc]] | None = None
        for g in sc.mig_victim_gpus:
            gpu = self.gpus[g]
            if not gpu.usable:
                continue
            for start, smask in zip(profile.starts, profile.mask_at, strict=True):
                blocking = [o for o in gpu.occupants if mig.slot_mask(o.start, o.size) & smask]
                if any(o.kind != "alloc" or o.owner is None or not self._evictable(o.owner, req) for o in blocking):
                    continue
                owners: list[_Alloc] = []
                for o in blocking:
                    assert o.owner is not None
                    if o.owner not in owners:
                        owners.append(o.owner)
                freed = sum(o.compute for rec in owners for gg, o in rec.slots if gg == g)
                if gpu.compute - freed + profile.compute_slices > mig.COMPUTE_SLICES:
                    continue
                if profile.media_extensions and gpu.me and not any(o.profile.endswith("+me") for o in blocking):
                    continue
                lost = sum(r.lost for r in owners)
                if best is None or (lost, g, start) < (best[0], *best[1]):
                    best = (lost, (g, start), owners)
        return best if best is None else (best[0], best[1], best[2])

    def _evict(self, rec: _Alloc, req: _Req) -> None:
        """Marks ``rec`` evicted: its devices stay claimed (by the requester or as unclean)."""
        rec.alive = False
        if self.undo_log is not None:
            self.undo_log.append(("alive", rec))
        self._charge(self._ws(rec.a.workspace), rec.model, -rec.eq)
        self._decision_credit.add(rec.a.workspace)

    def _take_whole_over(self, req: _Req, hc: int, victims: list[_Alloc]) -> _Choice:
        cls = self.scs[self.hc_sc[hc]].cls
        free = list(self.hc_free[hc])
        freed = [g for r in victims for g in r.gpus if self.gpus[g].cls == cls and self.gpus[g].usable]
        use_free = free[: max(req.k - len(freed), 0)]
        use_freed = freed[: req.k - len(use_free)]
        for r in victims:
            self._evict(r, req)
        self._take_whole(hc, use_free, req)
        for g in [g for r in victims for g in r.gpus]:
            gpu = self.gpus[g]
            if self.undo_log is not None:
                self.undo_log.append(("owner", gpu, gpu.owner))
            gpu.owner = req if g in use_freed else _RES
        gpus = sorted(use_free + use_freed, key=lambda g: self.gpus[g].index)
        return _Choice(self.hc_sc[hc], hc, self.hc_host[hc], gpus, [], float(req.k))

    def _take_mig_over(self, req: _Req, sc_id: int, g: int, start: int, victims: list[_Alloc]) -> _Choice:
        gpu = self.gpus[g]
        profile = self._profile(req.gpr.spec.shape, self.scs[sc_id].cls)
        assert profile is not None
        for rec in victims:
            self._evict(rec, req)
            for gg, occ in rec.slots:
                g_gpu = self.gpus[gg]
                # The victim's range stays blocked (unclean, no compute) until reported clean.
                self._mig_change(g_gpu, _Occupant(occ.start, occ.size, 0, occ.profile, "unclean"), occ)
        self._mig_change(gpu, _Occupant(start, profile.size, profile.compute_slices, profile.name, "res"), None)
        # An evicted instance's range stays blocked but its compute is free again: capacity grew, so
        # what was remembered as not fitting may fit now.
        self.free_fail.clear()
        self.preempt_fail.clear()
        self.migrate_fail.clear()
        self._decision_mig_freed = True
        table = self.classes[gpu.cls].table
        assert table is not None
        hc = self.host_hcs[gpu.host][gpu.cls]
        return _Choice(sc_id, hc, gpu.host, [g], [(g, profile, start)], mig.gpu_equivalents(table, profile))

    # -- migration ---------------------------------------------------------------------------------------

    def find_migration(self, req: _Req) -> tuple[_Choice, list[tuple[_Alloc, _Choice]]] | None:
        """Room for one replica of ``req`` made by moving movable allocations elsewhere in their own scope
        (taken), at the first host in ``req``'s site order where that works; or None."""
        if req.is_mig:
            return None
        prio, pinned = req.prio, req.pinned

        def useful(sc: _SiteClass) -> bool:
            lowest = self._min_movable_prio(sc)
            return lowest < prio or (pinned and lowest[0] < 99)

        lowest = self._scope_min(req, "movables", (99, 0) if pinned else prio)
        if not (lowest < prio or (pinned and lowest[0] < 99)):
            return None
        for _cost, sc_id in self.candidates(req, useful):
            sc = self.scs[sc_id]
            for hc, recs in sc.movable_hosts.items():
                if self._clean:
                    for r in recs:
                        if not r.stuck and r.alive and not self._has_room(self._moving(r)):
                            self._stuck(r, sc)
                if len(self.hc_free[hc]) + sum(r.gain.get(sc.cls, 0) for r in recs) < req.k:
                    continue  # not even moving all of them would make room
                cands = [r for r in recs if r.alive and not r.stuck and (req.pinned or r.prio < req.prio)
                         and r.gpr is not None and r.gpr is not req.gpr]
                if not cands:
                    continue
                free = len(self.hc_free[hc])
                gain = {id(r): r.gain.get(sc.cls, 0) for r in cands}
                if free + sum(gain.values()) < req.k:
                    continue
                # Fewest GPUs moved first; every one that can go somewhere goes until there is room.
                cands.sort(key=lambda r: (gain[id(r)], r.prio, r.a.id))
                log_start = len(self.undo_log) if self.undo_log is not None else 0
                moves: list[tuple[_Alloc, _Choice]] = []
                have = free
                for r in cands:
                    if have >= req.k:
                        break
                    if not gain[id(r)]:
                        continue
                    mreq = self._moving(r)
                    if (mreq.scope, mreq.k) in self.free_fail:
                        self._stuck(r, sc)  # its scope had no free room earlier in this pass: none now
                        continue
                    dest = self.find_free(mreq, exclude_host=self.hc_host[hc])
                    if dest is not None:
                        moves.append((r, dest))
                        have += gain[id(r)]
                    elif self._clean and not moves:
                        self._stuck(r, sc)
                if have < req.k:
                    if self.undo_log is not None:
                        self._undo(self.undo_log[log_start:])
                        del self.undo_log[log_start:]
                    continue
                for r, _dest in moves:
                    r.alive = False
                    if self.undo_log is not None:
                        self.undo_log.append(("alive", r))
                choice = self._take_whole_over_moved(req, hc, [r for r, _ in moves])
                return choice, moves
        return None

    def _moving(self, rec: _Alloc) -> _Req:
        """The request that moving ``rec`` elsewhere would be (made once)."""
        if rec.moving is None:
            assert rec.gpr is not None
            rec.moving = self.request(rec.gpr)
            rec.moving.k = len(rec.gpus)
        return rec.moving

    def _has_room(self, req: _Req) -> bool:
        """Whether any host in ``req``'s scope has ``req.k`` free GPUs of its classes (whole GPUs)."""
        sites = self._scope_sites(req)
        scs = self.scs
        return any(fmax >= req.k and scs[sc].site in sites
                   for cid, _p in req.classes for sc, fmax in self._avail.get(cid, {}).items())

    def _stuck(self, rec: _Alloc, sc: _SiteClass) -> None:
        """``rec`` cannot move anywhere for the rest of the pass (found so with nothing tentative
        taken, and capacity only shrinks), so it is not tried again."""
        rec.stuck = True

    def _take_whole_over_moved(self, req: _Req, hc: int, moved: list[_Alloc]) -> _Choice:
        cls = self.scs[self.hc_sc[hc]].cls
        free = list(self.hc_free[hc])
        freed = [g for r in moved for g in r.gpus if self.gpus[g].cls == cls and self.gpus[g].usable]
        use_free = free[: max(req.k - len(freed), 0)]
        use_freed = freed[: req.k - len(use_free)]
        self._take_whole(hc, use_free, req)
        for g in [g for r in moved for g in r.gpus]:
            gpu = self.gpus[g]
            if self.undo_log is not None:
                self.undo_log.append(("owner", gpu, gpu.owner))
            gpu.owner = req if g in use_freed else _RES
        gpus = sorted(use_free + use_freed, key=lambda g: self.gpus[g].index)
        return _Choice(self.hc_sc[hc], hc, self.hc_host[hc], gpus, [], float(req.k))

    # -- output helpers ------------------------------------------------------------------------------------

    def _devices(self, choice: _Choice) -> tuple[tuple[int, ...], tuple[GpuUuid, ...], tuple[MigSlot, ...], str]:
        gpus = [self.gpus[g] for g in choice.gpus]
        slots = tuple(MigSlot(self.gpus[g].uuid, self.gpus[g].index, p.name, s, p.size, p.compute_slices)
                      for g, p, s in choice.slots)
        return (tuple(g.index for g in gpus), tuple(g.uuid for g in gpus), slots,
                choice.slots[0][1].name if choice.slots else "")

    def _placement(self, req: _Req, replica: int, choice: _Choice) -> Placement:
        host = self.hosts[choice.host]
        indexes, uuids, slots, profile = self._devices(choice)
        return Placement(req.gpr.id, replica, host.id, host.site, indexes, uuids, profile, slots,
                         req.gpr.spec.workspace, choice.eq, after_eviction=req.after.get(replica))

    def _reservation(self, req: _Req, replica: int, choice: _Choice, waits: list[_Alloc], cause: str) -> Reservation:
        host = self.hosts[choice.host]
        indexes, uuids, slots, profile = self._devices(choice)
        return Reservation(req.gpr.id, req.gpr.spec.workspace, replica, host.id, host.site, indexes, uuids,
                           tuple(r.a.id for r in waits), self.now, profile, slots, choice.eq, cause)

    # -- the pass ----------------------------------------------------------------------------------------------

    def queue(self) -> None:
        """Turns ready reservations into placements and queues every pending GPR's missing replicas.

        ``run`` does this itself when it was not done; the benchmark calls it first, so that it is not
        charged to the first decision.
        """
        self._queued = True
        held: dict[GprId, set[int]] = {}
        for a in self.snap.allocations:
            held.setdefault(a.gpr_id, set()).add(a.replica)
        for r in self._kept_reservations:
            held.setdefault(r.gpr_id, set()).add(r.replica)
            if self._reservation_ready(r):
                self.placements.append(Placement(r.gpr_id, r.replica, r.host_id, r.site, r.gpu_indexes, r.gpu_uuids,
                                                 r.mig_profile, r.mig_slots, r.workspace, r.gpu_equivalents,
                                                 reservation=True))
        # (The queue orders by priority, workspace, age and id, so the order GPRs arrive in is irrelevant.)
        for gpr in self.snap.pending:
            if gpr.id in self._reqs:
                continue
            have = held.get(gpr.id, set())
            missing = [r for r in range(gpr.spec.replicas) if r not in have]
            if not missing:
                continue
            req = self._bare(gpr)
            req.missing = missing
            self._reqs[gpr.id] = req
            self._requeue(req)

    def run(self, on_decision: Callable[[GprId], None] | None = None) -> Plan:
        """Decides every pending GPR in service order; ``on_decision`` is told after each decision."""
        if not self._queued:
            self.queue()
        self._serve(on_decision)
        # Evictions give quota back to the victims' workspaces, and a MIG eviction frees compute slices:
        # GPRs that failed on exactly that earlier in the pass are served again, so that the next pass
        # would not place them either (plan -> apply -> plan stays a fixed point). Each round places
        # something or stops; the bound is only a guard.
        for _ in range(64):
            credited, mig_freed = self._credited, self._mig_freed
            self._credited, self._mig_freed = set(), False
            retry = [req for req, cause, _why in self._failed.values()
                     if (cause == "quota" and req.ws.name in credited)
                     or (cause == "room" and mig_freed and req.is_mig)]
            if not retry:
                break
            for req in retry:
                del self._failed[req.gpr.id]
                self._requeue(req)
            self._serve(on_decision)
        unplaced = tuple((gid, why) for gid, (_req, _cause, why) in self._failed.items())
        return Plan(tuple(self.placements), unplaced, tuple(self.evictions), tuple(self.migrations),
                    tuple(self.reservations), tuple(self.dropped))

    def _requeue(self, req: _Req) -> None:
        """Queues a request in its priority group (groups of equal priority, highest first; inside one,
        per workspace, the longest waiting first)."""
        req.queued = True
        key = req.prio
        members = self._groups.get(key)
        if members is None:
            members = self._groups[key] = {}
            heapq.heappush(self._group_heap, (-key[0], -key[1]))
        heapq.heappush(members.setdefault(req.gpr.spec.workspace, []), (req.gpr.created_at, req.gpr.id, req))

    def _serve(self, on_decision: Callable[[GprId], None] | None) -> None:
        while self._group_heap:
            neg = heapq.heappop(self._group_heap)
            members = self._groups.pop((-neg[0], -neg[1]))
            # Fair order among workspaces: under-guarantee first, then the lowest weighted dominant share.
            ws_heap = [(self._fair_key(self._ws(name)), name) for name in members]
            heapq.heapify(ws_heap)
            while ws_heap:
                _key, name = heapq.heappop(ws_heap)
                queue = members[name]
                _created, _gid, req = heapq.heappop(queue)
                req.queued = False
                self._decide(req)
                if on_decision is not None:
                    on_decision(req.gpr.id)
                if queue:
                    heapq.heappush(ws_heap, (self._fair_key(self._ws(name)), name))

    def _fair_key(self, ws: _Ws) -> tuple[int, float]:
        return (0 if ws.used < ws.guaranteed - EPSILON else 1, ws.dominant / ws.weight)

    def _decide(self, req: _Req) -> None:
        gpr = req.gpr
        ws = req.ws
        n = len(req.missing)
        if not n:
            return
        self._prepare(req)
        if not req.is_mig:
            need = float(req.k * n)
        else:
            eqs = [mig.gpu_equivalents(self.classes[c].table, p)  # type: ignore[arg-type]
                   for c, p in self.eligible_classes(gpr.spec.shape) if p is not None]
            need = req.k * n * min(eqs, default=1.0)
        if ws.used + need > ws.cap + EPSILON:
            self._failed[gpr.id] = (req, "quota", self._quota_reason(ws, need))
            return
        clean = self._clean = True
        self.undo_log = []
        self._decision_credit = set()
        self._decision_mig_freed = False
        out_marks = (len(self.placements), len(self.evictions), len(self.migrations), len(self.reservations))
        cause = ""
        for replica in req.missing:
            choice: _Choice | None = None
            key = (req.scope, req.k)
            if not (clean and key in self.free_fail):
                choice = self.find_free(req)
                if choice is None and clean:
                    self.free_fail.add(key)
            if choice is not None:
                self.placements.append(self._placement(req, replica, choice))
                self._charge(ws, self.classes[self.scs[choice.sc].cls].folded, choice.eq)
                clean = self._clean = False
                continue
            mkey = (req.scope, req.k, req.pinned)
            failed = self.migrate_fail.get(mkey)
            if not (clean and failed is not None and req.prio <= failed):
                moved = self.find_migration(req)
                if moved is None and clean:
                    self.migrate_fail[mkey] = max(req.prio, failed or req.prio)
                if moved is not None:
                    self._record_migration(req, replica, moved)
                    clean = self._clean = False
                    continue
            pkey = (req.scope, req.k)
            failed = self.preempt_fail.get(pkey)
            if not (clean and failed is not None and req.prio <= failed):
                found = self.find_victims(req)
                if found is None and clean:
                    self.preempt_fail[pkey] = max(req.prio, failed or req.prio)
                if found is not None:
                    self._record_preemption(req, replica, found)
                    clean = self._clean = False
                    continue
            cause = "room"
            break
        if not cause and ws.used > ws.cap + EPSILON:
            cause = "quota"
        if cause:
            self._undo(self.undo_log)
            del self.placements[out_marks[0]:]
            del self.evictions[out_marks[1]:]
            del self.migrations[out_marks[2]:]
            del self.reservations[out_marks[3]:]
            why = self._no_room_reason(req) if cause == "room" else self._quota_reason(ws, 0.0)
            self._failed[gpr.id] = (req, cause, why)
        else:
            self._failed.pop(gpr.id, None)
            self._credited |= self._decision_credit
            self._mig_freed = self._mig_freed or self._decision_mig_freed
        self.undo_log = None

    def _record_migration(self, req: _Req, replica: int, moved: tuple[_Choice, list[tuple[_Alloc, _Choice]]]) -> None:
        choice, moves = moved
        for rec, dest in moves:
            assert rec.gpr is not None
            mreq = self._reqs.get(rec.gpr.id) or self.request(rec.gpr)
            to = self._placement(mreq, rec.a.replica, dest)
            host = self.hosts[rec.host]
            self.migrations.append(Migration(
                rec.a.id, rec.a.gpr_id, rec.a.replica, host.id, rec.a.gpu_uuids, to, req.gpr.id,
                f"moved from {host.site} to {to.site} to make room for {req.gpr.id} "
                f"({'pinned' if req.pinned else 'higher priority'})"))
        self.reservations.append(self._reservation(req, replica, choice, [r for r, _ in moves], "migration"))
        self._charge(req.ws, self.classes[self.scs[choice.sc].cls].folded, choice.eq)

    def _record_preemption(self, req: _Req, replica: int, found: tuple[_Choice, list[_Alloc]]) -> None:
        choice, victims = found
        gpr = req.gpr
        tier = PriorityTier(req.prio[0])
        for rec in victims:
            a = rec.a
            assert rec.gpr is not None
            vt = PriorityTier(rec.prio[0])
            slots = tuple(MigSlot(self.gpus[g].uuid, self.gpus[g].index, o.profile, o.start, o.size, o.compute)
                          for g, o in rec.slots)
            self.evictions.append(Eviction(
                a.id, a.gpr_id, a.workspace, a.replica, a.host_id, a.gpu_indexes, a.gpu_uuids,
                (vt, rec.prio[1]), gpr.id, (tier, req.prio[1]), rec.lost,
                f"preempted by {gpr.id} ({tier.name} {req.prio[1]} outranks {vt.name} {rec.prio[1]}), which found "
                f"no free room in its scope; {rec.lost:.0f} GPU-seconds lost", slots))
            self._requeue_victim(rec)
        self.reservations.append(self._reservation(req, replica, choice, victims, "preemption"))
        self._charge(req.ws, self.classes[self.scs[choice.sc].cls].folded, choice.eq)

    def _requeue_victim(self, rec: _Alloc) -> None:
        """The evicted replica waits again at its own priority, in this pass, without preempting."""
        gpr = rec.gpr
        assert gpr is not None
        req = self._reqs.get(gpr.id)
        if req is None:
            req = self._bare(gpr)
            self._reqs[gpr.id] = req
        if not req.queued:
            # Decided already (and failed) or never queued: it gets another turn, at its own priority.
            # Popped with nothing missing (after an undo) it is simply skipped.
            self._failed.pop(gpr.id, None)
            self._requeue(req)
        replica = rec.a.replica
        if self.undo_log is not None:
            self.undo_log.append(("requeue", req, replica, replica in req.missing, req.after.get(replica),
                                  req.requeued))
        req.requeued = True
        if replica not in req.missing:
            req.missing.append(replica)
            req.missing.sort()
        req.after[replica] = rec.a.id

    # -- reasons -------------------------------------------------------------------------------------------------

    @staticmethod
    def _quota_reason(ws: _Ws, need: float) -> str:
        cap = ws.cap
        if need:
            return f"workspace quota: {ws.used:g} of {cap:g} GPUs in use, {need:g} more asked"
        return f"workspace quota: {cap:g} GPUs at most"

    @staticmethod
    def _no_room_reason(req: _Req) -> str:
        # Kept short and stable (the controller records it once per change); explain has the details.
        if req.requeued:
            return "preempted; no host has room to run it again yet"
        return "no host has room for every replica"


def _level_stream(entries: list[tuple[float, int]], offset: float, n: int, rank: int
                  ) -> Iterator[tuple[float, int, int, int]]:
    # A function, not a generator expression in the loop: that would read ``rank`` late.
    for lb, site in entries:
        yield lb + offset, n, site, rank


def plan_with(snapshot: Snapshot, weights: ScoringWeights | None = None,
              on_decision: Callable[[GprId], None] | None = None) -> Plan:
    """``plan`` with explicit weights and an optional per-decision callback (the benchmark's timer)."""
    return Planner(snapshot, weights).run(on_decision)


def plan(snapshot: Snapshot) -> Plan:
    """The plan for one round: placements, evictions, migrations and reservations (see the module rules)."""
    return Planner(snapshot).run()

