"""Properties of the placement engine over random grids and random request streams.

Whatever the grid and the requests: no plan breaks a hard constraint or overcommits a GPU, a MIG slot
or a quota (checked by ``verify`` and, for the core facts, independently here); preemption never evicts
equal or higher priority; the same snapshot gives the same plan in any input order; and planning again
right after applying a plan proposes nothing new.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Sequence
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridmesh.common.model import (
    GprId,
    GprState,
    GpuHealth,
    GpuInfo,
    GpuUuid,
    HostState,
    PlacementPolicy,
    PriorityTier,
    SiteName,
    SiteTier,
    WorkspaceName,
)
from gridmesh.controller.model import Allocation, Gpr, PlacementSpec, Quota, Workspace
from gridmesh.controller.scheduler import Plan, Snapshot, mig, plan, violations
from gridmesh.controller.scheduler import harness as h
from gridmesh.controller.scheduler.constraints import site_exclusion
from gridmesh.controller.scheduler.engine import Planner
from gridmesh.controller.scheduler.types import MigSlot

T = TypeVar("T")
REGIONS = ("eu", "us")
MODELS = (h.H100, h.A100, h.L4)
WORKSPACES = ("ws", "ws2", "ws3")


def sometimes(draw: st.DrawFn, strategy: st.SearchStrategy[T], default: T, odds: int = 3) -> T:
    return draw(strategy) if draw(st.integers(1, odds)) == 1 else default


def _mig_state(draw: st.DrawFn, gpu: GpuInfo) -> list[tuple[mig.MigProfile, int]]:
    """A valid set of instances on a MIG GPU, built one profile at a time at an allowed free start."""
    table = mig.table_for(gpu.model)
    assert table is not None
    mask, compute, me = 0, 0, False
    out = []
    for _ in range(draw(st.integers(0, 6))):
        p = draw(st.sampled_from(table.profiles))
        starts = mig.starts_free(p, mask, compute, me)
        if not starts:
            continue
        s = draw(st.sampled_from(starts))
        mask |= mig.slot_mask(s, p.size)
        compute += p.compute_slices
        me = me or p.media_extensions
        out.append((p, s))
    return out


@st.composite
def grids(draw: st.DrawFn, max_pending: int = 8) -> Snapshot:
    sites = []
    for i in range(draw(st.integers(1, 4))):
        lat = [(f"s{j}", float(draw(st.integers(1, 80)))) for j in range(i)]
        sites.append(h.site(f"s{i}", draw(st.sampled_from(SiteTier)), draw(st.sampled_from(REGIONS)), latency=lat,
                            prices=[(m[0], float(draw(st.integers(0, 4)))) for m in MODELS]))
    names = [s.name for s in sites]
    now = 100_000.0
    hosts = []
    unclean: set[GpuUuid] = set()
    allocations: list[Allocation] = []
    allocation_mig: dict[str, tuple[MigSlot, ...]] = {}
    gprs: list[Gpr] = []

    def owner(gid: str, count: int = 1) -> Gpr:
        since = sometimes(draw, st.just(None), now - draw(st.sampled_from([10.0, 400.0, 5000.0])), 4)
        # Mostly low-priority, preemptible work, so that the pending GPRs have something to preempt.
        g = h.gpr(gid, count=count, workspace=draw(st.sampled_from(WORKSPACES)),
                  tier=sometimes(draw, st.sampled_from(PriorityTier), PriorityTier.LOW),
                  priority=draw(st.integers(1, 3)),
                  preemptible=sometimes(draw, st.booleans(), True), may_migrate=sometimes(draw, st.booleans(), True),
                  min_runtime_s=sometimes(draw, st.sampled_from([300.0, 9000.0]), 0.0),
                  expires_at=sometimes(draw, st.just(now + 600.0), None),
                  state=GprState.RUNNING if since is not None else GprState.PLACED)
        return dataclasses.replace(g, running_since=since)

    for i in range(draw(st.integers(1, 6))):
        hid = f"h{i}"
        gpus = []
        for j in range(draw(st.integers(0, 4))):
            model = draw(st.sampled_from(MODELS))
            gpus.append(h.gpu(hid, j, model, mig_enabled=model[3] and sometimes(draw, st.booleans(), False, 2),
                              numa=j % 2, health=sometimes(draw, st.sampled_from(GpuHealth), GpuHealth.HEALTHY, 8)))
        state = sometimes(draw, st.sampled_from(HostState), HostState.READY, 6)
        host = h.host(hid, draw(st.sampled_from(names)), gpus, state=state, connected=state is not HostState.OFFLINE)
        hosts.append(host)
        whole = [g for g in gpus if not g.mig_enabled]
        taken: set[int] = set()
        for g in whole:
            if g.index in taken:
                continue
            roll = draw(st.integers(0, 4))
            if roll == 0:
                unclean.add(g.uuid)
            elif roll in (1, 2):
                mates = [x for x in whole if x.index not in taken and x.index != g.index and x.model == g.model]
                idx = [g.index] + ([mates[0].index] if mates and roll == 2 else [])
                taken.update(idx)
                o = owner(f"run-{hid}-{g.index}", len(idx))
                gprs.append(o)
                allocations.append(h.allocation(o, host, idx, created_at=sometimes(draw, st.just(now - 50), 0.0)))
        for g in gpus:
            if not g.mig_enabled:
                continue
            for p, s in _mig_state(draw, g):
                o = owner(f"run-{hid}-{g.index}-{s}")
                o = dataclasses.replace(o, spec=dataclasses.replace(o.spec, shape=dataclasses.replace(
                    o.spec.shape, mig_profile=p.name)))
                gprs.append(o)
                a = h.allocation(o, host, [g.index], mig_profile=p.name)
                allocations.append(a)
                allocation_mig[a.id] = (MigSlot(g.uuid, g.index, p.name, s, p.size, p.compute_slices),)
    workspaces = []
    for w in WORKSPACES:
        quota = Quota(max_gpus=sometimes(draw, st.integers(2, 12), 0, 6),
                      guaranteed_gpus=sometimes(draw, st.integers(0, 3), 0, 3),
                      borrow_limit=sometimes(draw, st.integers(1, 4), 0, 8))
        workspaces.append(Workspace(name=WorkspaceName(w), quota=quota, fair_share_weight=draw(st.sampled_from([1.0,
                                                                                                               2.0])),
                                    allowed_regions=tuple(sometimes(draw, st.sampled_from([("eu",), ("us",)]), (), 5))))
    pending = [_pending_gpr(draw, f"p{k}", names, now) for k in range(draw(st.integers(1, max_pending)))]
    return h.snapshot(hosts, pending, sites=sites, workspaces=workspaces, allocations=allocations, gprs=gprs,
                      now=now, allocation_mig=allocation_mig, unclean_gpus=frozenset(unclean),
                      preempted_at={GprId(g.id): now - 100 for g in gprs if draw(st.integers(0, 5)) == 0},
                      artifacts_at_site={"llama": frozenset({names[0]})})


def _pending_gpr(draw: st.DrawFn, gid: str, names: Sequence[SiteName], now: float) -> Gpr:
    kind = draw(st.sampled_from(["whole", "whole", "profile", "fraction"]))
    placement = PlacementSpec(
        policy=sometimes(draw, st.just(PlacementPolicy.PINNED), PlacementPolicy.REDISTRIBUTABLE),
        site=sometimes(draw, st.sampled_from(names), None),
        tier=sometimes(draw, st.sampled_from(SiteTier), None),
        tier_preference=tuple(draw(st.lists(st.sampled_from(SiteTier), max_size=2))),
        origin_site=sometimes(draw, st.sampled_from(names), None, 2),
        allowed_regions=tuple(sometimes(draw, st.sampled_from([("eu",), ("us",)]), (), 4)),
    )
    return h.gpr(
        gid, count=sometimes(draw, st.integers(2, 3), 1), replicas=sometimes(draw, st.integers(2, 3), 1),
        workspace=draw(st.sampled_from(WORKSPACES)),
        models=tuple(sometimes(draw, st.sets(st.sampled_from([m[0] for m in MODELS]), min_size=1, max_size=2)
                               .map(sorted), [])),
        min_memory_mib=sometimes(draw, st.sampled_from([20000, 30000, 81560]), 0, 5),
        min_cc=sometimes(draw, st.sampled_from(["8.0", "9.0"]), "", 5),
        mig_profile=draw(st.sampled_from(["1g.10gb", "3g.40gb", "2g.20gb", "1g.10gb+me", "7g.80gb", "1g.5gb"]))
        if kind == "profile" else "",
        fraction=draw(st.sampled_from([0.1, 0.25, 0.5])) if kind == "fraction" else 0.0,
        tier=sometimes(draw, st.sampled_from(PriorityTier), PriorityTier.HIGH, 2), priority=draw(st.integers(1, 3)),
        created_at=now - draw(st.integers(0, 100)), placement=placement,
        artifact=sometimes(draw, st.just("llama"), ""),
    )


# -- independent statements of the invariants --------------------------------------------------------------


def overcommitted(snap: Snapshot) -> list[str]:
    """Devices claimed twice in a snapshot (allocations and reservations; unclean ranges are not claims)."""
    out = []
    whole: Counter[str] = Counter()
    slots: dict[str, list[MigSlot]] = {}
    for a in snap.allocations:
        if a.mig_profile:
            recorded = snap.allocation_mig.get(a.id)
            assert recorded, f"MIG allocation {a.id} without recorded slots"
            for s in recorded:
                slots.setdefault(s.gpu_uuid, []).append(s)
        else:
            whole.update(a.gpu_uuids)
    for r in snap.reservations:
        if r.mig_slots:
            for s in r.mig_slots:
                slots.setdefault(s.gpu_uuid, []).append(s)
        else:
            whole.update(r.gpu_uuids)
    out += [f"GPU {u} claimed {n} times" for u, n in whole.items() if n > 1]
    for u, taken in slots.items():
        if u in whole:
            out.append(f"GPU {u} is claimed whole and as MIG slots")
        for i, first in enumerate(taken):
            out += [f"{first} overlaps {b}" for b in taken[i + 1:] if first.overlaps(b)]
        if sum(s.compute_slices for s in taken) > 7:
            out.append(f"GPU {u}: more than 7 compute slices")
    return out


def usage(snap: Snapshot) -> Counter[str]:
    used: Counter[str] = Counter()
    for a in snap.allocations:
        recorded = snap.allocation_mig.get(a.id)
        used[a.workspace] += sum(s.compute_slices for s in recorded) / 7 if recorded else len(a.gpu_uuids)  # type: ignore[assignment]
    for r in snap.reservations:
        used[r.workspace] += r.gpu_equivalents  # type: ignore[assignment]
    return used


def check_round(snap: Snapshot, result: Plan) -> Snapshot:
    """Every invariant of one plan; returns the snapshot after applying it."""
    assert violations(snap, result) == [], violations(snap, result)
    gprs = {**{g.id: g for g in snap.pending}, **snap.gprs}
    hosts = {x.id: x for x in snap.hosts}
    for e in result.evictions:
        victim, winner = gprs[e.gpr_id], gprs[e.for_gpr]
        # Written out: tier first, then the number; strictly lower, preemptible, past its minimum runtime.
        assert (int(victim.spec.priority_tier), victim.spec.priority) < (int(winner.spec.priority_tier),
                                                                         winner.spec.priority), str(e)
        assert victim.spec.redistribution.preemptible
        assert victim.running_since is not None
        assert snap.now - victim.running_since >= victim.spec.redistribution.min_runtime_s
    for p in [*result.placements, *(m.to for m in result.migrations)]:
        g, host = gprs[p.gpr_id], hosts[p.host_id]
        site = snap.sites[host.site]
        assert host.connected and host.state is HostState.READY
        regions = [set(r) for r in (g.spec.placement.allowed_regions,
                                    snap.workspaces[g.spec.workspace].allowed_regions) if r]
        assert all(site.region in r for r in regions), str(p)
        if g.spec.placement.policy is PlacementPolicy.PINNED:
            assert g.spec.placement.site in (None, host.site)
            assert g.spec.placement.tier in (None, site.tier)
        infos = {x.uuid: x for x in host.inventory.gpus}
        for u in p.gpu_uuids:
            info = infos[u]
            assert info.health is GpuHealth.HEALTHY and u not in snap.unclean_gpus, str(p)
            assert info.mig_enabled == bool(g.spec.shape.mig_profile or g.spec.shape.fraction)
        assert bool(p.mig_slots) == bool(g.spec.shape.mig_profile or g.spec.shape.fraction)
    after = h.apply(snap, result)
    assert overcommitted(after) == []
    before_use, after_use = usage(snap), usage(after)
    for name, ws in snap.workspaces.items():
        cap = ws.quota.max_gpus or float("inf")
        if ws.quota.borrow_limit:
            cap = min(cap, ws.quota.guaranteed_gpus + ws.quota.borrow_limit)
        if after_use[name] > before_use[name] + 1e-9:
            assert after_use[name] <= cap + 1e-9, (name, before_use[name], after_use[name], cap)
    again = plan(after)
    assert again.empty, ("re-planning after apply proposed something new", again)
    return after


PROPS = settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(grids())
def test_a_plan_keeps_every_invariant_and_replanning_after_apply_adds_nothing(snap: Snapshot) -> None:
    assert overcommitted(snap) == []
    check_round(snap, plan(snap))


@PROPS
@given(grids(), st.randoms(use_true_random=False))
def test_the_same_snapshot_gives_the_same_plan_in_any_order(snap: Snapshot, rnd: random.Random) -> None:
    first = plan(snap)
    hosts, pending, allocs = list(snap.hosts), list(snap.pending), list(snap.allocations)
    rnd.shuffle(hosts)
    rnd.shuffle(pending)
    rnd.shuffle(allocs)
    shuffled = dataclasses.replace(snap, hosts=tuple(hosts), pending=tuple(pending), allocations=tuple(allocs),
                                   sites=dict(reversed(list(snap.sites.items()))),
                                   gprs=dict(reversed(list(snap.gprs.items()))))
    assert plan(shuffled) == first


@st.composite
def streams(draw: st.DrawFn) -> tuple[Snapshot, list[tuple[list[Gpr], str]]]:
    snap = draw(grids(max_pending=4))
    names = list(snap.sites)
    rounds = []
    for r in range(draw(st.integers(2, 4))):
        arrivals = [_pending_gpr(draw, f"r{r}-{k}", names, snap.now + 60 * r) for k in range(draw(st.integers(0, 4)))]
        rounds.append((arrivals, draw(st.sampled_from(["nothing", "clean", "run", "clean+run"]))))
    return snap, rounds


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(streams())
def test_request_streams_keep_every_invariant_round_after_round(case: tuple[Snapshot, list[tuple[list[Gpr], str]]]
                                                                ) -> None:
    snap, rounds = case
    for arrivals, then in rounds:
        snap = dataclasses.replace(snap, pending=(*snap.pending, *arrivals))
        snap = check_round(snap, plan(snap))
        now = snap.now + 60
        if "clean" in then:
            snap = h.report_clean(snap, now)
        if "run" in then:
            snap = h.start_running(snap, now)
        snap = dataclasses.replace(snap, now=now)


def test_the_generators_cover_what_the_properties_claim() -> None:
    """Properties that never see a preemption, a MIG placement or a migration prove nothing about them."""
    seen: Counter[str] = Counter()

    @settings(max_examples=300, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(grids())
    def survey(snap: Snapshot) -> None:
        result = plan(snap)
        seen["placed"] += bool(result.placements)
        seen["mig placed"] += any(p.mig_slots for p in result.placements)
        seen["evicted"] += bool(result.evictions)
        seen["mig evicted"] += any(e.mig_slots for e in result.evictions)
        seen["moved"] += bool(result.migrations)
        seen["victim placed again"] += any(p.after_eviction for p in result.placements)
        seen["unplaced"] += bool(result.unplaced)
        seen["quota"] += any(r.startswith("workspace quota") for _, r in result.unplaced)
        seen["multi-replica"] += any(p.replica > 0 for p in result.placements)

    survey()
    assert all(seen[k] for k in ("placed", "mig placed", "evicted", "mig evicted", "moved", "victim placed again",
                                 "unplaced", "quota", "multi-replica")), seen


# -- the index against the plain statement of the cost ------------------------------------------------------


@PROPS
@given(grids())
def test_candidates_come_in_exactly_the_order_of_site_cost(snap: Snapshot) -> None:
    p = Planner(snap)
    for g in snap.pending:
        req = p.request(g)
        got = list(p.candidates(req))
        # Brute force: every (site, class) in scope, costed by the plain formula, sorted.
        want = []
        for site in p.sites:
            if site_exclusion(site.site, g, req.regions) is not None:
                continue
            for cid, _profile in req.classes:
                sc = p.sc_ids.get((site.i, cid))
                if sc is not None:
                    want.append((p.site_cost(g, site, p.classes[cid]), sc))
        want.sort()
        # The same pairs, each at the same cost, in ascending order (equal costs may come in any order).
        assert sorted(sc for _c, sc in got) == sorted(sc for _c, sc in want)
        assert all(abs(a[0] - b[0]) < 1e-6 for a, b in zip(got, want, strict=True))
        assert all(dict((sc, c) for c, sc in want)[sc] == pytest.approx(c) for c, sc in got)


@PROPS
@given(grids())
def test_walking_sites_in_order_and_costing_the_few_with_room_give_the_same_plan(snap: Snapshot) -> None:
    walk, direct = Planner(snap), Planner(snap)
    walk.direct_limit, direct.direct_limit = 0, 1 << 30
    assert walk.run() == direct.run()
