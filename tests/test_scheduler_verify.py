"""``verify.violations``: what plan-apply re-checks. Each row is a plan that breaks one rule; the check must
name it. (The property tests show that the engine's own plans never trip it.)
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from gridmesh.common.model import AllocationId, GprId, GpuUuid, HostId, PriorityTier, SiteName, WorkspaceName
from gridmesh.controller.model import Quota, Workspace
from gridmesh.controller.scheduler import (
    Eviction,
    MigSlot,
    Placement,
    Plan,
    Reservation,
    Snapshot,
    plan,
    violations,
)
from gridmesh.controller.scheduler import harness as h

NOW = 100_000.0
HOST = h.host("h1", gpus=2)
MIG_HOST = h.host("m1", gpus=1, mig_enabled=True)
VICTIM = h.running(h.gpr("victim", tier=PriorityTier.LOW, priority=5, preemptible=True), NOW - 1000)
ALLOC = h.allocation(VICTIM, HOST, [0])


def base(**more: object) -> Snapshot:
    pending = [h.gpr("g1"), h.gpr("mig", mig_profile="1g.10gb"), h.gpr("high", tier=PriorityTier.HIGH),
               h.gpr("low", tier=PriorityTier.LOW, priority=1)]
    return replace(h.snapshot([HOST, MIG_HOST], pending, allocations=[ALLOC], gprs=[VICTIM], now=NOW),
                   **more)  # type: ignore[arg-type]


def place(gpr: str, host: str, index: int, **kw: object) -> Placement:
    return Placement(GprId(gpr), 0, HostId(host), SiteName("core"), (index,), (GpuUuid(f"GPU-{host}-{index}"),),
                     workspace=WorkspaceName("ws"), **kw)  # type: ignore[arg-type]


def slot(start: int, profile: str = "1g.10gb", size: int = 1, compute: int = 1) -> MigSlot:
    return MigSlot(GpuUuid("GPU-m1-0"), 0, profile, start, size, compute)


def evict(for_gpr: str = "high", victim_prio: tuple[PriorityTier, int] = (PriorityTier.LOW, 5)) -> Eviction:
    return Eviction(ALLOC.id, VICTIM.id, WorkspaceName("ws"), 0, HostId("h1"), (0,), (GpuUuid("GPU-h1-0"),),
                    victim_prio, GprId(for_gpr), (PriorityTier.HIGH, 50), 1000.0, "test")


def reserve(gpr: str = "high", waits: tuple[str, ...] = ("alloc-victim-0",)) -> Reservation:
    return Reservation(GprId(gpr), WorkspaceName("ws"), 0, HostId("h1"), SiteName("core"), (0,),
                       (GpuUuid("GPU-h1-0"),), tuple(AllocationId(w) for w in waits), NOW, gpu_equivalents=1.0)


CASES = [
    ("gpu-given-twice", base(), Plan(placements=(place("g1", "h1", 0),)), "is held by allocation alloc-victim-0"),
    ("two-placements-one-gpu", base(), Plan(placements=(place("g1", "h1", 1), replace(place("high", "h1", 1)))),
     "is held by new g1/0"),
    ("unclean-gpu", base(unclean_gpus=frozenset({GpuUuid("GPU-h1-1")})), Plan(placements=(place("g1", "h1", 1),)),
     "GPU GPU-h1-1 is not reported clean"),
    ("wrong-region", base(workspaces={WorkspaceName("ws"): Workspace(name=WorkspaceName("ws"),
                                                                    allowed_regions=("us",))}),
     Plan(placements=(place("g1", "h1", 1),)), "breaks the region constraint"),
    ("quota", base(workspaces={WorkspaceName("ws"): Workspace(name=WorkspaceName("ws"), quota=Quota(max_gpus=1))}),
     Plan(placements=(place("g1", "h1", 1),)), "would exceed its quota of 1"),
    ("mig-overlap", base(), Plan(placements=(
        place("mig", "m1", 0, mig_profile="1g.10gb", mig_slots=(slot(0),), gpu_equivalents=1 / 7),
        replace(place("g1", "m1", 0, mig_profile="1g.10gb", mig_slots=(slot(0),)), gpr_id=GprId("mig"), replica=0))),
     "overlaps new mig/0"),
    ("mig-invalid-start", base(), Plan(placements=(
        place("mig", "m1", 0, mig_profile="1g.10gb", mig_slots=(slot(7),), gpu_equivalents=1 / 7),)),
     "is not a valid placement of 1g.10gb"),
    ("mig-not-the-smallest", base(), Plan(placements=(
        place("mig", "m1", 0, mig_profile="2g.20gb", mig_slots=(slot(0, "2g.20gb", 2, 2),), gpu_equivalents=2 / 7),)),
     "is not the profile the request gets (1g.10gb)"),
    ("evict-for-lower", base(), Plan(evictions=(evict(for_gpr="low"),)), "is not strictly lower"),
    ("evict-not-preemptible", base(gprs={VICTIM.id: replace(VICTIM, spec=replace(
        VICTIM.spec, redistribution=replace(VICTIM.spec.redistribution, preemptible=False)))}),
     Plan(evictions=(evict(),)), "the victim is not preemptible"),
    ("evict-cooling", base(preempted_at={VICTIM.id: NOW - 10}), Plan(evictions=(evict(),)),
     "got its devices by preemption less than the cooldown ago"),
    ("reserve-a-held-gpu", base(), Plan(reservations=(reserve(),)), "GPU GPU-h1-0 is held by allocation"),
    ("commit-before-clean", base(reservations=(reserve(),), unclean_gpus=frozenset({GpuUuid("GPU-h1-0")})),
     Plan(placements=(place("high", "h1", 0, reservation=True, gpu_equivalents=1.0),)),
     "is not reported clean and healthy yet"),
    ("commit-an-unknown-reservation", base(), Plan(placements=(place("high", "h1", 1, reservation=True),)),
     "commits a reservation that does not exist"),
]


@pytest.mark.parametrize(("snap", "bad", "message"), [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_each_broken_rule_is_named(snap: Snapshot, bad: Plan, message: str) -> None:
    found = violations(snap, bad)
    assert any(message in v for v in found), found


def test_the_good_version_of_each_passes() -> None:
    snap = base()
    assert violations(snap, Plan(evictions=(evict(),), reservations=(reserve(),))) == []
    assert violations(snap, plan(snap)) == []
    waiting = h.report_clean(h.apply(snap, Plan(evictions=(evict(),), reservations=(reserve(),))))
    (ready,) = [p for p in plan(waiting).placements if p.reservation]
    assert ready.gpr_id == "high" and violations(waiting, plan(waiting)) == []
