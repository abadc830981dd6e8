"""The placement engine's hard constraints, one row each, and the preferences it scores by.

The rows of ``test_scheduler_firstfit.EXCLUDED`` (the baseline's table) run here against the engine, plus
the rows only the engine has (MIG shapes, devices known to be unclean). Then the scoring: preferred site,
tier spill-over in order, latency from the origin, price, data locality, packing and NUMA.
"""

from __future__ import annotations

from typing import Any

import pytest

from gridmesh.common.model import (
    GprId,
    GpuHealth,
    GpuUuid,
    HostId,
    PlacementPolicy,
    PriorityTier,
    SiteName,
    SiteTier,
    WorkspaceName,
)
from gridmesh.controller.model import Allocation, Gpr, Host, PlacementSpec, Quota, Site, Workspace
from gridmesh.controller.scheduler import Placement, ScoringWeights, explain, plan, violations
from gridmesh.controller.scheduler import harness as h
from tests.test_scheduler_firstfit import CORE, EXCLUDED

WS = (Workspace(name=WorkspaceName("ws")),)

ENGINE_ONLY = [
    # id, constraint, hosts, gpr, snapshot extras
    ("no-mig-table-for-the-model", "mig_profile", [h.host("h1", gpus=[h.gpu("h1", 0, h.L4)])],
     h.gpr(mig_profile="1g.10gb"), {}),
    ("profile-unknown-to-the-model", "mig_profile", [h.host("h1", gpus=1, mig_enabled=True)],
     h.gpr(mig_profile="1g.5gb"), {}),  # an A100-40GB name asked of an H100
    ("instance-memory", "gpu_memory", [h.host("h1", gpus=1, mig_enabled=True)],
     h.gpr(mig_profile="1g.10gb", min_memory_mib=10000), {}),
    ("mig-request-on-a-whole-gpu", "gpu_health", [h.host("h1", gpus=1)], h.gpr(fraction=0.25), {}),
    ("controller-knows-it-unclean", "gpu_health", [h.host("h1", gpus=1)], h.gpr(),
     {"unclean_gpus": frozenset({GpuUuid("GPU-h1-0")})}),
    ("reported-unclean", "gpu_health", [h.host("h1", gpus=[h.gpu("h1", 0, health=GpuHealth.UNCLEAN)])], h.gpr(), {}),
    ("no-free-mig-slot", "gpu_count",
     [h.host("h1", gpus=[h.gpu("h1", 0, mig_enabled=True)])], h.gpr(mig_profile="4g.40gb"),
     {"unclean_slots": frozenset({h.slot(h.host("h1", gpus=[h.gpu("h1", 0, mig_enabled=True)]), 0, "1g.10gb", 0, 1,
                                         1)})}),
    ("one-class-per-replica", "gpu_count", [h.host("h1", gpus=[h.gpu("h1", 0), h.gpu("h1", 1, h.A100)])],
     h.gpr(count=2), {}),
]


@pytest.mark.parametrize(("constraint", "hosts", "gpr", "sites", "workspaces", "allocations"),
                         [pytest.param(*row[1:], id=row[0]) for row in EXCLUDED])
def test_the_baselines_constraint_table_holds_for_the_engine(
    constraint: str, hosts: list[Host], gpr: Gpr, sites: list[Site] | None, workspaces: list[Workspace] | None,
    allocations: list[Allocation] | None,
) -> None:
    snap = h.snapshot(hosts, [gpr], sites=sites or (CORE,), workspaces=workspaces or WS,
                      allocations=allocations or ())
    result = plan(snap)
    assert result.placements == () and result.reservations == ()
    assert [gid for gid, _ in result.unplaced] == [gpr.id]
    e = explain(snap, gpr)
    assert e.hosts_considered == 1 and e.hosts_feasible == 0
    assert [(x.constraint, x.hosts_excluded) for x in e.exclusions] == [(constraint, 1)]
    assert e.summary.startswith("pending: no host fits; most excluded by " + constraint)


@pytest.mark.parametrize(("constraint", "hosts", "gpr", "extras"),
                         [pytest.param(*row[1:], id=row[0]) for row in ENGINE_ONLY])
def test_the_engines_own_constraints(constraint: str, hosts: list[Host], gpr: Gpr, extras: dict[str, Any]) -> None:
    snap = h.snapshot(hosts, [gpr], **extras)
    result = plan(snap)
    assert result.placements == () and result.reservations == ()
    assert [gid for gid, _ in result.unplaced] == [gpr.id]
    e = explain(snap, gpr)
    assert [(x.constraint, x.hosts_excluded) for x in e.exclusions] == [(constraint, 1)]


def test_the_base_case_fits_with_everything_plan_apply_needs() -> None:
    snap = h.snapshot([h.host("h1")], [h.gpr()])
    assert plan(snap).placements == (Placement(GprId("g1"), 0, HostId("h1"), SiteName("core"), (0,),
                                               (GpuUuid("GPU-h1-0"),), workspace=WorkspaceName("ws"),
                                               gpu_equivalents=1.0),)
    assert str(plan(snap).placements[0]) == "place g1/0 on h1 gpus [0]"
    assert violations(snap, plan(snap)) == []


# -- quotas -------------------------------------------------------------------------------------------


def test_max_gpus_counts_existing_allocations_and_every_replica() -> None:
    host = h.host("h1", gpus=4)
    old = h.running(h.gpr("old", count=2), 0.0)
    ws = (Workspace(name=WorkspaceName("ws"), quota=Quota(max_gpus=3)),)
    snap = h.snapshot([host], [h.gpr(count=2)], workspaces=ws, allocations=[h.allocation(old, host, [0, 1])],
                      gprs=[old])
    assert plan(snap).unplaced == ((GprId("g1"), "workspace quota: 2 of 3 GPUs in use, 2 more asked"),)
    assert plan(h.snapshot([host], [h.gpr(replicas=4)], workspaces=ws)).placements == ()
    assert len(plan(h.snapshot([host], [h.gpr(replicas=3)], workspaces=ws)).placements) == 3


def test_borrowing_stops_at_the_guarantee_plus_the_borrow_limit() -> None:
    host = h.host("h1", gpus=8)
    ws = (Workspace(name=WorkspaceName("ws"), quota=Quota(guaranteed_gpus=2, borrow_limit=3)),)
    result = plan(h.snapshot([host], [h.gpr(f"g{i}", created_at=i) for i in range(8)], workspaces=ws))
    assert len(result.placements) == 5
    # A borrow limit of 0 means no borrowing cap (as max_gpus 0 means no cap).
    open_ws = (Workspace(name=WorkspaceName("ws"), quota=Quota(guaranteed_gpus=2)),)
    assert len(plan(h.snapshot([host], [h.gpr(f"g{i}") for i in range(8)], workspaces=open_ws)).placements) == 8


def test_a_mig_instance_counts_its_share_of_the_gpu_against_the_quota() -> None:
    host = h.host("h1", gpus=2, mig_enabled=True)
    ws = (Workspace(name=WorkspaceName("ws"), quota=Quota(max_gpus=1)),)
    # 3g.40gb is 3/7 of a GPU: two fit under a quota of one GPU, a third does not.
    pending = [h.gpr(f"g{i}", mig_profile="3g.40gb", created_at=i) for i in range(3)]
    result = plan(h.snapshot([host], pending, workspaces=ws))
    assert [p.gpr_id for p in result.placements] == ["g0", "g1"]
    assert result.placements[0].gpu_equivalents == pytest.approx(3 / 7)
    assert result.unplaced[0][1].startswith("workspace quota")


# -- replicas -------------------------------------------------------------------------------------------


def test_all_replicas_or_none_and_what_a_failed_gpr_would_have_taken_stays_free() -> None:
    h1, h2 = h.host("h1", gpus=1), h.host("h2", gpus=1)
    assert plan(h.snapshot([h1, h2], [h.gpr(replicas=3)])).placements == ()
    both = plan(h.snapshot([h1, h2], [h.gpr("big", replicas=3, priority=90), h.gpr("small", priority=10)]))
    assert [p.gpr_id for p in both.placements] == ["small"]
    assert [gid for gid, _ in both.unplaced] == ["big"]


def test_a_gpr_that_holds_some_replicas_gets_only_the_missing_ones() -> None:
    host = h.host("h1", gpus=4)
    g = h.running(h.gpr("g1", replicas=3), 0.0)
    result = plan(h.snapshot([host], [g], allocations=[h.allocation(g, host, [0])], gprs=[g]))
    assert sorted(p.replica for p in result.placements) == [1, 2]


# -- scoring -------------------------------------------------------------------------------------------


SITES = (h.site("edge", SiteTier.FAR_EDGE, latency=[("near", 5.0), ("core", 20.0), ("cloud", 60.0)]),
         h.site("near", SiteTier.NEAR_EDGE, latency=[("core", 15.0), ("cloud", 55.0)]),
         h.site("core", SiteTier.CORE, latency=[("cloud", 40.0)]),
         h.site("cloud", SiteTier.CLOUD))
HOSTS = [h.host(f"{s.name}-h", s.name, gpus=2) for s in SITES]


def where(g: Gpr, hosts: list[Host] = HOSTS, sites: tuple[Site, ...] = SITES, **extras: Any) -> str:
    (p,) = plan(h.snapshot(hosts, [g], sites=sites, **extras)).placements
    return p.site


@pytest.mark.parametrize(("placement", "expected"), [
    (PlacementSpec(site=SiteName("cloud")), "cloud"),
    (PlacementSpec(tier=SiteTier.CORE), "core"),
    (PlacementSpec(tier_preference=(SiteTier.NEAR_EDGE, SiteTier.CLOUD)), "near"),
    (PlacementSpec(origin_site=SiteName("core")), "core"),
    (PlacementSpec(origin_site=SiteName("edge")), "edge"),
    # Preference beats latency: the tier step (100) is larger than any latency here.
    (PlacementSpec(origin_site=SiteName("edge"), tier_preference=(SiteTier.CLOUD,)), "cloud"),
])
def test_preferred_site_then_tiers_in_order_then_latency(placement: PlacementSpec, expected: str) -> None:
    assert where(h.gpr(placement=placement)) == expected


def test_spill_over_follows_the_tier_preference_in_order_when_the_first_is_full() -> None:
    hosts = [h.host("near-h", "near", gpus=1), *[x for x in HOSTS if x.site != "near"]]
    taker = h.running(h.gpr("taker"), 0.0)
    prefs = PlacementSpec(tier_preference=(SiteTier.NEAR_EDGE, SiteTier.CLOUD, SiteTier.CORE))
    assert where(h.gpr(placement=prefs), hosts, allocations=[h.allocation(taker, hosts[0], [0])],
                 gprs=[taker]) == "cloud"


def test_price_and_data_locality_break_ties_between_equal_sites() -> None:
    sites = (h.site("a", prices=[("H100 80GB HBM3", 3.0)]), h.site("b", prices=[("H100 80GB HBM3", 1.0)]))
    hosts = [h.host("a-h", "a"), h.host("b-h", "b")]
    assert where(h.gpr(), hosts, sites) == "b"
    # The model artifact is at a; a locality miss (40) outweighs a price difference of 2 $/h (20).
    assert where(h.gpr(artifact="llama"), hosts, sites, artifacts_at_site={"llama": frozenset({SiteName("a")})}) == "a"
    # The weights are configuration.
    heavy_price = ScoringWeights(price_per_dollar=100.0)
    assert where(h.gpr(artifact="llama"), hosts, sites, artifacts_at_site={"llama": frozenset({SiteName("a")})},
                 weights=heavy_price) == "b"


def test_packing_fills_partly_used_hosts_and_keeps_whole_ones_free() -> None:
    busy, empty = h.host("a-busy", gpus=4), h.host("b-empty", gpus=4)
    taker = h.running(h.gpr("taker"), 0.0)
    snap = h.snapshot([busy, empty], [h.gpr("g1"), h.gpr("g2", count=4, priority=10)],
                      allocations=[h.allocation(taker, busy, [0])], gprs=[taker])
    placed = {p.gpr_id: p.host_id for p in plan(snap).placements}
    # Best fit: the single GPU goes to the host already in use, so the 4-GPU request still fits.
    assert placed == {"g1": "a-busy", "g2": "b-empty"}


def test_a_multi_gpu_replica_gets_gpus_on_one_numa_node() -> None:
    host = h.host("h1", gpus=[h.gpu("h1", i, numa=i % 2) for i in range(6)])
    (p,) = plan(h.snapshot([host], [h.gpr(count=2)])).placements
    assert p.gpu_indexes in ((0, 2), (1, 3))
    (p3,) = plan(h.snapshot([host], [h.gpr(count=3)])).placements
    assert p3.gpu_indexes in ((0, 2, 4), (1, 3, 5))


def test_pinned_never_leaves_its_site_and_nothing_crosses_regions() -> None:
    sites = (h.site("eu-edge", SiteTier.FAR_EDGE, "eu"), h.site("eu-core", SiteTier.CORE, "eu"),
             h.site("us-core", SiteTier.CORE, "us"))
    full = h.host("eu-edge-h", "eu-edge", gpus=1)
    taker = h.running(h.gpr("taker", tier=PriorityTier.HIGH), 0.0)
    hosts = [full, h.host("eu-core-h", "eu-core"), h.host("us-core-h", "us-core")]
    extras: dict[str, Any] = {"allocations": [h.allocation(taker, full, [0])], "gprs": [taker]}
    pinned = h.gpr(placement=PlacementSpec(policy=PlacementPolicy.PINNED, site=SiteName("eu-edge")))
    assert plan(h.snapshot(hosts, [pinned], sites=sites, **extras)).placements == ()
    sovereign = h.gpr(regions=("us",), placement=PlacementSpec(allowed_regions=("us",), site=SiteName("eu-edge")))
    assert where(sovereign, hosts, sites, **extras) == "us-core"
