"""Scenarios as an operator would tell them: preemption at a saturated cell site, capacity chasing to the
near edge, sovereignty that keeps a GPR waiting, moving work to make room, and the guards against
preemption ping-pong. Each runs the real scheduler through the harness (plan, apply, report clean, plan).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gridmesh.common.model import (
    AllocationId,
    GprId,
    GprState,
    HostState,
    PlacementPolicy,
    PriorityTier,
    SiteName,
    SiteTier,
    WorkspaceName,
)
from gridmesh.controller.model import Gpr, PlacementSpec, Workspace
from gridmesh.controller.scheduler import ScoringWeights, Snapshot, explain, plan, violations
from gridmesh.controller.scheduler import harness as h

HIGH, MEDIUM, LOW = PriorityTier.HIGH, PriorityTier.MEDIUM, PriorityTier.LOW
NOW = 100_000.0
WORKSPACES = tuple(Workspace(name=WorkspaceName(n)) for n in ("ran", "batch", "llm", "health"))


# -- (a) preemption at a saturated far-edge site --------------------------------------------------------------

CELL = h.site("cell-7", SiteTier.FAR_EDGE, "eu", latency=[("metro", 4.0)])
METRO = h.site("metro", SiteTier.NEAR_EDGE, "eu")


def saturated_cell_site() -> tuple[Snapshot, Gpr]:
    """Two L4 hosts at the cell site, all four GPUs busy; one spare L4 host at the metro near edge."""
    e1, e2 = h.host("cell-7-a", "cell-7", 2, model=h.L4), h.host("cell-7-b", "cell-7", 2, model=h.L4)
    metro = h.host("metro-a", "metro", 2, model=h.L4)
    batch = h.running(h.gpr("batch-train", workspace="batch", tier=LOW, priority=10, preemptible=True), NOW - 7200)
    young = h.running(h.gpr("batch-young", workspace="batch", tier=LOW, priority=20, preemptible=True,
                            min_runtime_s=3600), NOW - 600)
    video = h.running(h.gpr("video", workspace="ran", tier=MEDIUM, priority=100), NOW - 60, expires_at=NOW + 1800)
    ran = h.gpr("ai-ran-du", workspace="ran", tier=HIGH, priority=250, models=("L4",), pinned_site="cell-7",
                created_at=NOW - 1)
    snap = h.snapshot([e1, e2, metro], [ran], sites=(CELL, METRO), workspaces=WORKSPACES, now=NOW,
                      allocations=[h.allocation(batch, e1, [0]), h.allocation(young, e1, [1]),
                                   h.allocation(video, e2, [0, 1])],
                      gprs=[batch, young, video])
    return snap, ran


def test_a_high_ai_ran_gpr_evicts_a_low_batch_job_and_gets_the_gpu_only_once_it_is_clean() -> None:
    snap, _ran = saturated_cell_site()
    first = plan(snap)
    assert violations(snap, first) == []
    # The only eligible victim: LOW, preemptible and past its minimum runtime (the young job is not).
    (e,) = first.evictions
    assert (e.gpr_id, e.host_id, e.gpu_indexes, e.for_gpr) == ("batch-train", "cell-7-a", (0,), "ai-ran-du")
    assert e.lost_gpu_seconds == 7200.0
    assert str(e) == ("evict alloc-batch-train-0 (batch/batch-train replica 0, LOW 10) on cell-7-a gpus [0] "
                      "for ai-ran-du (HIGH 250)")
    # Not handed over now: reserved until the host reports the GPU clean.
    (r,) = first.reservations
    assert (r.gpr_id, r.host_id, r.gpu_indexes, r.waits_for) == ("ai-ran-du", "cell-7-a", (0,),
                                                                 ("alloc-batch-train-0",))
    assert [p.gpr_id for p in first.placements] == ["batch-train"]  # the batch job runs again at the metro site
    assert first.placements[0].site == "metro" and first.placements[0].after_eviction == "alloc-batch-train-0"

    waiting = h.apply(snap, first)
    assert plan(waiting).empty  # nothing new: the reservation waits, nobody else gets the GPU
    # Another tenant's request for that site does not get the unclean GPU either.
    other = h.gpr("other-du", workspace="health", tier=HIGH, priority=1, pinned_site="cell-7", created_at=NOW)
    with_other = replace(waiting, pending=(*waiting.pending, other))
    assert plan(with_other).placements == ()
    summary = explain(waiting, waiting.gprs[GprId("ai-ran-du")]).summary
    assert summary.startswith("pending: done: devices on cell-7-a are reserved for it after preemption")

    clean = h.report_clean(waiting, NOW + 30)
    (placed,) = plan(clean).placements
    assert (placed.gpr_id, placed.host_id, placed.gpu_indexes, placed.reservation) == ("ai-ran-du", "cell-7-a",
                                                                                       (0,), True)
    assert violations(clean, plan(clean)) == []
    assert plan(h.apply(clean, plan(clean))).empty


def test_preemption_takes_the_victim_that_loses_the_fewest_gpu_seconds() -> None:
    host = h.host("e1", "cell-7", 2, model=h.L4)
    # Equal priorities, so that the evicted one cannot in turn preempt the other.
    old = h.running(h.gpr("old", tier=LOW, priority=5, preemptible=True), NOW - 20_000)
    new = h.running(h.gpr("new", tier=LOW, priority=5, preemptible=True), NOW - 300)
    ran = h.gpr("ran", tier=HIGH, priority=1, pinned_site="cell-7")
    snap = h.snapshot([host], [ran], sites=(CELL,), now=NOW, gprs=[old, new],
                      allocations=[h.allocation(old, host, [0]), h.allocation(new, host, [1])])
    assert [e.gpr_id for e in plan(snap).evictions] == ["new"]


def test_preemption_never_evicts_equal_or_higher_priority_and_explains_why() -> None:
    host = h.host("e1", "cell-7", 3, model=h.L4)
    same = h.running(h.gpr("same", tier=HIGH, priority=250, preemptible=True), NOW - 9000)
    pinned_protected = h.running(h.gpr("protected", tier=LOW, priority=1, preemptible=False), NOW - 9000)
    starting = h.gpr("starting", tier=LOW, priority=1, preemptible=True, state=GprState.PLACED)
    ran = h.gpr("ran", tier=HIGH, priority=250, pinned_site="cell-7")
    snap = h.snapshot([host], [ran], sites=(CELL,), now=NOW, gprs=[same, pinned_protected, starting],
                      allocations=[h.allocation(same, host, [0]), h.allocation(pinned_protected, host, [1]),
                                   h.allocation(starting, host, [2])])
    result = plan(snap)
    assert result.evictions == () and result.reservations == ()
    e = explain(snap, ran)
    assert not e.preemption_possible
    assert e.preemption_detail == ("no allocation in its scope may be evicted for it: 1 not preemptible by policy, "
                                   "1 not running yet, 1 of equal or higher priority")


def test_no_ping_pong_a_gpr_that_just_preempted_is_not_itself_a_victim() -> None:
    host = h.host("e1", "cell-7", 1, model=h.L4)
    winner = h.running(h.gpr("winner", tier=MEDIUM, priority=10, preemptible=True), NOW - 900)
    ran = h.gpr("ran", tier=HIGH, priority=1, pinned_site="cell-7")
    base = h.snapshot([host], [ran], sites=(CELL,), now=NOW, gprs=[winner],
                      allocations=[h.allocation(winner, host, [0])])
    cooling = replace(base, preempted_at={winner.id: NOW - 60})
    assert plan(cooling).evictions == ()
    assert "placed by preemption moments ago" in explain(cooling, ran).preemption_detail
    # Once the cooldown has passed it is an ordinary victim again.
    assert [e.gpr_id for e in plan(replace(cooling, weights=ScoringWeights(preemption_cooldown_s=30))).evictions] == [
        "winner"]
    assert [e.gpr_id for e in plan(base).evictions] == ["winner"]


def test_minimum_runtime_is_honoured_and_its_end_is_reported() -> None:
    host = h.host("e1", "cell-7", 1, model=h.L4)
    job = h.running(h.gpr("job", tier=LOW, priority=1, preemptible=True, min_runtime_s=3600), NOW - 3000)
    ran = h.gpr("ran", tier=HIGH, priority=1, pinned_site="cell-7")
    snap = h.snapshot([host], [ran], sites=(CELL,), now=NOW, gprs=[job], allocations=[h.allocation(job, host, [0])])
    assert plan(snap).evictions == ()
    assert explain(snap, ran).preemption_detail.endswith("the first minimum runtime ends in 600s")
    assert [e.gpr_id for e in plan(replace(snap, now=NOW + 600)).evictions] == ["job"]


def test_a_reservation_is_given_up_when_its_host_goes_away_or_it_waits_too_long() -> None:
    snap, _ran = saturated_cell_site()
    waiting = h.apply(snap, plan(snap))
    gone = replace(waiting, hosts=tuple(replace(x, state=HostState.OFFLINE, connected=False)
                                        if x.id == "cell-7-a" else x for x in waiting.hosts))
    result = plan(gone)
    assert [(r.gpr_id, why) for r, why in result.dropped_reservations] == [
        ("ai-ran-du", "host cell-7-a is no longer schedulable")]
    late = replace(waiting, now=NOW + 901)
    assert [why for _r, why in plan(late).dropped_reservations] == [
        "its devices were not reported clean within 900s"]


# -- (b) capacity chasing ----------------------------------------------------------------------------------------

EU_EDGE = h.site("eu-edge", SiteTier.FAR_EDGE, "eu", latency=[("eu-near", 8.0), ("us-near", 3.0), ("eu-core", 25.0)])
EU_NEAR = h.site("eu-near", SiteTier.NEAR_EDGE, "eu", prices=[("H100 80GB HBM3", 4.0)])
US_NEAR = h.site("us-near", SiteTier.NEAR_EDGE, "us", prices=[("H100 80GB HBM3", 1.0)])
EU_CORE = h.site("eu-core", SiteTier.CORE, "eu", prices=[("H100 80GB HBM3", 0.5)])


def test_a_redistributable_llm_gpr_spills_from_the_far_edge_to_the_near_edge_and_stays_in_its_region() -> None:
    edge = h.host("eu-edge-a", "eu-edge", 1)
    busy = h.running(h.gpr("busy", workspace="health", tier=HIGH, priority=300), NOW - 10)
    llm = h.gpr("llm-inference", workspace="llm", tier=MEDIUM, priority=150, models=("H100 80GB HBM3",),
                placement=PlacementSpec(tier_preference=(SiteTier.FAR_EDGE, SiteTier.NEAR_EDGE, SiteTier.CORE),
                                        origin_site=SiteName("eu-edge"), allowed_regions=("eu",)))
    snap = h.snapshot([edge, h.host("eu-near-a", "eu-near"), h.host("us-near-a", "us-near"),
                       h.host("eu-core-a", "eu-core")], [llm], sites=(EU_EDGE, EU_NEAR, US_NEAR, EU_CORE),
                      workspaces=WORKSPACES, now=NOW, gprs=[busy], allocations=[h.allocation(busy, edge, [0])])
    result = plan(snap)
    # Not the closer and cheaper us-near (another region), not the cheaper eu-core (a later tier).
    (p,) = result.placements
    assert (p.gpr_id, p.site) == ("llm-inference", "eu-near")
    assert result.evictions == () and violations(snap, result) == []
    assert plan(h.apply(snap, result)).empty


def test_a_movable_allocation_is_moved_to_make_room_for_pinned_work() -> None:
    edge = h.host("eu-edge-a", "eu-edge", 1)
    movable = h.running(h.gpr("llm-replica", workspace="llm", tier=MEDIUM, priority=150, may_migrate=True,
                              placement=PlacementSpec(allowed_regions=("eu",))), NOW - 5000)
    pinned = h.gpr("ran", workspace="ran", tier=LOW, priority=5, pinned_site="eu-edge")
    snap = h.snapshot([edge, h.host("eu-near-a", "eu-near")], [pinned], sites=(EU_EDGE, EU_NEAR),
                      workspaces=WORKSPACES, now=NOW, gprs=[movable],
                      allocations=[h.allocation(movable, edge, [0], created_at=NOW - 5000)])
    result = plan(snap)
    assert violations(snap, result) == []
    assert result.evictions == ()  # nothing lost: moved, not preempted (it is not even preemptible)
    (m,) = result.migrations
    assert (m.gpr_id, m.from_host, m.to.host_id, m.for_gpr) == ("llm-replica", "eu-edge-a", "eu-near-a", "ran")
    assert str(m) == "move alloc-llm-replica-0 (llm-replica replica 0) from eu-edge-a to eu-near-a gpus [0] for ran"
    (r,) = result.reservations
    assert (r.gpr_id, r.host_id, r.cause, r.waits_for) == ("ran", "eu-edge-a", "migration",
                                                           (AllocationId("alloc-llm-replica-0"),))
    after = h.apply(snap, result)
    assert plan(after).empty  # the moved replica is not running yet: it is not moved again
    assert [p.gpr_id for p in plan(h.report_clean(after)).placements] == ["ran"]


def test_pinned_work_never_moves_and_a_recent_allocation_is_not_moved() -> None:
    edge = h.host("eu-edge-a", "eu-edge", 1)
    pinned_running = h.running(h.gpr("pinned", tier=LOW, priority=1, may_migrate=True, pinned_site="eu-edge"),
                               NOW - 5000)
    asker = h.gpr("ran", tier=HIGH, priority=5, pinned_site="eu-edge")
    hosts = [edge, h.host("eu-near-a", "eu-near")]
    snap = h.snapshot(hosts, [asker], sites=(EU_EDGE, EU_NEAR), now=NOW, gprs=[pinned_running],
                      allocations=[h.allocation(pinned_running, edge, [0], created_at=NOW - 5000)])
    assert plan(snap).migrations == ()
    fresh = h.running(h.gpr("fresh", tier=LOW, priority=1, may_migrate=True), NOW - 5000)
    snap2 = h.snapshot(hosts, [asker], sites=(EU_EDGE, EU_NEAR), now=NOW, gprs=[fresh],
                       allocations=[h.allocation(fresh, edge, [0], created_at=NOW - 60)])
    assert plan(snap2).migrations == ()


# -- (c) sovereignty ----------------------------------------------------------------------------------------------

DE = h.site("de-core", SiteTier.CORE, "de")
FR = h.site("fr-core", SiteTier.CORE, "fr", latency=[("de-core", 9.0)])


def test_a_sovereign_gpr_stays_pending_with_an_explanation_rather_than_leaving_its_region() -> None:
    de = h.host("de-core-a", "de-core", 2)
    patients = h.running(h.gpr("patients-etl", workspace="health", tier=HIGH, priority=300, count=2),
                         NOW - 100, expires_at=NOW + 1200)
    sovereign = h.gpr("health-records-llm", workspace="health", tier=HIGH, priority=200, regions=("de",),
                      placement=PlacementSpec(allowed_regions=("de",), origin_site=SiteName("de-core")))
    workspaces = (Workspace(name=WorkspaceName("health"), allowed_regions=("de",)),)
    snap = h.snapshot([de, h.host("fr-core-a", "fr-core", 8)], [sovereign], sites=(DE, FR), workspaces=workspaces,
                      now=NOW, gprs=[patients], allocations=[h.allocation(patients, de, [0, 1])])
    result = plan(snap)
    assert result.placements == () and result.reservations == () and result.evictions == ()
    assert result.unplaced == ((GprId("health-records-llm"), "no host has room for every replica"),)
    e = explain(snap, sovereign)
    assert e.hosts_feasible == 0
    assert [(x.constraint, x.hosts_excluded) for x in e.exclusions] == [("region", 1), ("gpu_count", 1)]
    assert e.summary == ("pending: no host fits; most excluded by region (outside the allowed regions ['de']); "
                         "1 hosts outside its allowed regions have room, but it stays in ['de']")
    # Every alternative keeps to the region: the nearest is to wait for the running job's end.
    assert [(a.kind, a.estimated_wait_s, a.site) for a in e.alternatives] == [("wait", 1200.0, None)]
    assert e.queue_position == 1


# -- explain, more ----------------------------------------------------------------------------------------------


def test_explain_gives_the_queue_position_in_fair_service_order() -> None:
    host = h.host("h1", gpus=1)
    # Equal priority: the workspace with less in use goes first, whatever the ages.
    heavy_owner = h.running(h.gpr("running", workspace="batch"), NOW - 100)
    mine = h.gpr("mine", workspace="batch", created_at=NOW - 500)
    theirs = h.gpr("theirs", workspace="llm", created_at=NOW - 10)
    urgent = h.gpr("urgent", workspace="batch", tier=HIGH, created_at=NOW)
    two = h.host("h2", gpus=1)
    snap = h.snapshot([host, two], [mine, theirs, urgent], workspaces=WORKSPACES, now=NOW, gprs=[heavy_owner],
                      allocations=[h.allocation(heavy_owner, two, [0])])
    assert [explain(snap, g).queue_position for g in (urgent, theirs, mine)] == [1, 2, 3]
    assert explain(snap, mine).summary == "pending: 1 hosts could take it; waiting for its turn (position 3)"


def test_explain_offers_another_site_to_pinned_work_and_another_gpu_model() -> None:
    edge = h.host("eu-edge-a", "eu-edge", 1, model=h.L4)
    busy = h.running(h.gpr("busy", tier=HIGH, priority=300), NOW - 10)
    hosts = [edge, h.host("eu-near-a", "eu-near", 1, model=h.L4), h.host("eu-core-a", "eu-core", 1)]
    extras: dict[str, Any] = {"sites": (EU_EDGE, EU_NEAR, EU_CORE), "now": NOW, "gprs": [busy],
              "allocations": [h.allocation(busy, edge, [0])]}
    pinned = h.gpr("pinned", models=("L4",), pinned_site="eu-edge")
    site_alt = {a.kind: a for a in explain(h.snapshot(hosts, [pinned], **extras), pinned).alternatives}["site"]
    assert (site_alt.site, site_alt.tier) == ("eu-near", SiteTier.NEAR_EDGE)
    assert site_alt.description == "fits now at site eu-near (near_edge) if it were not pinned to site eu-edge"
    # No L4 is free anywhere once the near edge is busy too; an H100 is, at the core.
    near_busy = h.running(h.gpr("near-busy", tier=HIGH, priority=300), NOW - 10)
    extras["gprs"] = [busy, near_busy]
    extras["allocations"] = [h.allocation(busy, edge, [0]), h.allocation(near_busy, hosts[1], [0])]
    l4_only = h.gpr("l4-only", models=("L4",))
    model_alt = {a.kind: a for a in explain(h.snapshot(hosts, [l4_only], **extras), l4_only).alternatives}
    assert (model_alt["gpu_model"].gpu_model, model_alt["gpu_model"].site) == ("H100 80GB HBM3", "eu-core")
    loose = replace(pinned, spec=replace(pinned.spec, placement=PlacementSpec(policy=PlacementPolicy.REDISTRIBUTABLE)))
    assert explain(h.snapshot(hosts, [loose], sites=(EU_EDGE, EU_NEAR, EU_CORE), now=NOW, gprs=[busy],
                              allocations=[h.allocation(busy, edge, [0])]), loose).hosts_feasible == 1
