"""First-fit placement, the naive baseline the placement engine replaced (and is benchmarked against):
one table row per hard constraint (the host is excluded and ``explain`` counts it under that
constraint), then properties over random small grids that no plan may break. The engine's own tests
are the other ``test_scheduler_*`` files; the same constraint table runs against it in
``test_scheduler_constraints.py``.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Sequence
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridmesh.common.model import (
    AllocationId,
    GprId,
    GprState,
    GpuHealth,
    GpuInfo,
    GpuUuid,
    HostId,
    HostState,
    Inventory,
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
    Site,
    Workspace,
)
from gridmesh.controller.scheduler import Exclusion, Placement, Plan, Snapshot
from gridmesh.controller.scheduler.firstfit import CONSTRAINTS, allowed_regions, explain, host_exclusion, plan

T = TypeVar("T")

# Real models as NVML and the catalog name them: (model, memory MiB, compute capability, MIG capable).
H100 = ("H100 80GB HBM3", 81559, "9.0", True)
H100_NVML = ("NVIDIA H100 80GB HBM3", 81559, "9.0", True)
A100 = ("A100-SXM4-80GB", 81920, "8.0", True)
L4 = ("L4", 24576, "8.9", False)
B200 = ("B200", 184320, "10.0", True)
MODELS = (H100, H100_NVML, A100, L4, B200)


# -- builders --------------------------------------------------------------------------------------


def gpu(host_id: str, index: int, model: tuple[str, int, str, bool] = H100, *, mig_enabled: bool = False,
        health: GpuHealth = GpuHealth.HEALTHY) -> GpuInfo:
    name, memory, cc, mig_capable = model
    return GpuInfo(index=index, uuid=GpuUuid(f"GPU-{host_id}-{index}"), model=name, memory_mib=memory,
                   compute_capability=cc, mig_capable=mig_capable, mig_enabled=mig_enabled, health=health)


def make_host(host_id: str, site: str = "core", gpus: Sequence[GpuInfo] | None = None, *,
              state: HostState = HostState.READY, connected: bool = True) -> Host:
    if gpus is None:
        gpus = [gpu(host_id, i) for i in range(2)]
    return Host(id=HostId(host_id), site=SiteName(site), state=state, connected=connected,
                inventory=Inventory(hostname=host_id, gpus=tuple(gpus)))


def make_gpr(gpr_id: str = "g1", *, count: int = 1, replicas: int = 1, workspace: str = "ws",
             models: tuple[str, ...] = (), min_memory_mib: int = 0, min_cc: str = "", mig_profile: str = "",
             fraction: float = 0.0, tier: PriorityTier = PriorityTier.MEDIUM, priority: int = 50,
             created_at: float = 0.0, placement: PlacementSpec | None = None,
             state: GprState = GprState.PENDING) -> Gpr:
    spec = GprSpec(workspace=WorkspaceName(workspace),
                   shape=GpuShape(count=count, models=models, min_memory_mib=min_memory_mib,
                                  min_compute_capability=min_cc, mig_profile=mig_profile, fraction=fraction),
                   priority_tier=tier, priority=priority, replicas=replicas, placement=placement or PlacementSpec())
    return Gpr(id=GprId(gpr_id), spec=spec, state=state, created_at=created_at, updated_at=created_at)


def alloc(gpr_id: str, host: Host, indexes: Sequence[int], workspace: str = "ws", replica: int = 0) -> Allocation:
    by_index = {g.index: g for g in host.inventory.gpus}
    return Allocation(id=AllocationId(f"alloc-{gpr_id}-{replica}"), gpr_id=GprId(gpr_id),
                      workspace=WorkspaceName(workspace), replica=replica, host_id=host.id, site=host.site,
                      gpu_indexes=tuple(indexes), gpu_uuids=tuple(by_index[i].uuid for i in indexes), created_at=0.0)


CORE = Site(name=SiteName("core"), tier=SiteTier.CORE, region="eu")


def snapshot(hosts: Sequence[Host], pending: Sequence[Gpr], *, sites: Sequence[Site] = (CORE,),
             workspaces: Sequence[Workspace] = (Workspace(name=WorkspaceName("ws")),),
             allocations: Sequence[Allocation] = ()) -> Snapshot:
    return Snapshot(revision=1, now=100.0, sites={s.name: s for s in sites}, hosts=tuple(hosts),
                    workspaces={w.name: w for w in workspaces}, allocations=tuple(allocations), pending=tuple(pending))


# -- one constraint at a time ------------------------------------------------------------------------


def test_the_base_case_fits() -> None:
    # Every row below changes one thing about this case; it must fit, or the rows prove nothing.
    h = make_host("h1")
    snap = snapshot([h], [make_gpr()])
    assert plan(snap) == Plan(placements=(Placement(GprId("g1"), 0, HostId("h1"), SiteName("core"), (0,),
                                                    (GpuUuid("GPU-h1-0"),)),))
    e = explain(snap, make_gpr())
    assert (e.hosts_considered, e.hosts_feasible, e.exclusions) == (1, 1, ())


EU_US = (CORE, Site(name=SiteName("edge"), tier=SiteTier.FAR_EDGE, region="us"))

EXCLUDED = [
    # id, constraint, hosts, gpr, sites, workspaces, allocations
    ("offline", "host_state", [make_host("h1", state=HostState.OFFLINE, connected=False)], make_gpr(), None, None,
     None),
    ("cordoned", "host_state", [make_host("h1", state=HostState.CORDONED)], make_gpr(), None, None, None),
    ("draining", "host_state", [make_host("h1", state=HostState.DRAINING)], make_gpr(), None, None, None),
    ("ready-but-disconnected", "host_state", [make_host("h1", connected=False)], make_gpr(), None, None, None),
    ("unknown-site", "host_state", [make_host("h1", site="nowhere")], make_gpr(), None, None, None),
    ("gpr-regions", "region", [make_host("h1")], make_gpr(placement=PlacementSpec(allowed_regions=("us",))),
     None, None, None),
    ("workspace-regions", "region", [make_host("h1")], make_gpr(), None,
     [Workspace(name=WorkspaceName("ws"), allowed_regions=("us",))], None),
    # Both lists allow eu alone, but the workspace narrows the GPR's {eu, us} to {us}.
    ("regions-narrowed", "region", [make_host("h1")],
     make_gpr(placement=PlacementSpec(allowed_regions=("eu", "us"))), None,
     [Workspace(name=WorkspaceName("ws"), allowed_regions=("us", "ap"))], None),
    ("pinned-site", "site", [make_host("h1")],
     make_gpr(placement=PlacementSpec(policy=PlacementPolicy.PINNED, site=SiteName("edge"))), EU_US, None, None),
    ("pinned-tier", "tier", [make_host("h1")],
     make_gpr(placement=PlacementSpec(policy=PlacementPolicy.PINNED, tier=SiteTier.FAR_EDGE)), EU_US, None, None),
    ("model", "gpu_model", [make_host("h1")], make_gpr(models=("L4", "A100-SXM4-80GB")), None, None, None),
    ("no-gpus", "gpu_model", [make_host("h1", gpus=[])], make_gpr(), None, None, None),
    ("memory", "gpu_memory", [make_host("h1")], make_gpr(min_memory_mib=81560), None, None, None),
    ("compute-capability", "compute_capability", [make_host("h1")], make_gpr(min_cc="10.0"), None, None, None),
    ("mig-enabled", "gpu_health", [make_host("h1", gpus=[gpu("h1", 0, mig_enabled=True)])], make_gpr(), None, None,
     None),
    ("unhealthy", "gpu_health", [make_host("h1", gpus=[gpu("h1", 0, health=GpuHealth.UNHEALTHY)])], make_gpr(),
     None, None, None),
    ("unclean", "gpu_health", [make_host("h1", gpus=[gpu("h1", 0, health=GpuHealth.UNCLEAN)])], make_gpr(), None,
     None, None),
    ("too-few-gpus", "gpu_count", [make_host("h1")], make_gpr(count=3), None, None, None),
    ("gpus-in-use", "gpu_count", [make_host("h1")], make_gpr(count=2), None, None,
     [alloc("other", make_host("h1"), [1])]),
    # Two healthy GPUs, but only one of them outside MIG mode: counts, not just presence, must match.
    ("one-usable-of-two", "gpu_count", [make_host("h1", gpus=[gpu("h1", 0), gpu("h1", 1, mig_enabled=True)])],
     make_gpr(count=2), None, None, None),
    # The first constraint in order is the one reported: offline *and* the wrong model.
    ("first-constraint-wins", "host_state", [make_host("h1", state=HostState.OFFLINE, connected=False)],
     make_gpr(models=("L4",)), None, None, None),
]


@pytest.mark.parametrize(("constraint", "hosts", "gpr", "sites", "workspaces", "allocations"),
                         [pytest.param(*row[1:], id=row[0]) for row in EXCLUDED])
def test_each_constraint_excludes_the_host_and_is_explained(
    constraint: str, hosts: list[Host], gpr: Gpr, sites: list[Site] | None, workspaces: list[Workspace] | None,
    allocations: list[Allocation] | None,
) -> None:
    snap = snapshot(hosts, [gpr], sites=sites or (CORE,),
                    workspaces=workspaces or (Workspace(name=WorkspaceName("ws")),), allocations=allocations or ())
    result = plan(snap)
    assert result.placements == ()
    assert [gid for gid, _ in result.unplaced] == [gpr.id]
    e = explain(snap, gpr)
    assert e.hosts_considered == 1 and e.hosts_feasible == 0
    assert [(x.constraint, x.hosts_excluded) for x in e.exclusions] == [(constraint, 1)]
    assert e.summary.startswith("pending: no host fits; most excluded by " + constraint)


def test_explain_counts_each_host_under_its_own_constraint() -> None:
    hosts = [make_host("a", state=HostState.CORDONED), make_host("b", site="edge"),
             make_host("c", gpus=[gpu("c", 0, L4)]), make_host("d", gpus=[gpu("d", 0, L4)]), make_host("e")]
    gpr = make_gpr(models=("H100 80GB HBM3",), placement=PlacementSpec(allowed_regions=("eu",)))
    e = explain(snapshot(hosts, [gpr], sites=EU_US), gpr)
    assert e.exclusions == (
        Exclusion("host_state", 1, "offline, cordoned or draining"),
        Exclusion("region", 1, "outside the allowed regions ['eu']"),
        Exclusion("gpu_model", 2, "no GPU of the models ['H100 80GB HBM3']"),
    )
    assert (e.hosts_considered, e.hosts_feasible) == (5, 1)
    assert e.summary == "pending: 1 hosts could take it; waiting for its turn (position 1)"


def test_redistributable_site_and_tier_are_preferences_not_constraints() -> None:
    h = make_host("h1")
    gpr = make_gpr(placement=PlacementSpec(site=SiteName("edge"), tier=SiteTier.FAR_EDGE))
    assert [p.host_id for p in plan(snapshot([h], [gpr], sites=EU_US)).placements] == ["h1"]


def test_preferred_site_then_tier_then_id() -> None:
    sites = (CORE, Site(name=SiteName("edge"), tier=SiteTier.FAR_EDGE, region="eu"),
             Site(name=SiteName("cloud"), tier=SiteTier.CLOUD, region="eu"))
    hosts = [make_host("a-cloud", "cloud"), make_host("b-core", "core"), make_host("c-edge", "edge")]
    any_ = make_gpr("g-any")
    pinned_site = make_gpr("g-site", placement=PlacementSpec(site=SiteName("cloud")))
    tiered = make_gpr("g-tier", placement=PlacementSpec(tier=SiteTier.CORE))
    for g, expected in ((any_, "c-edge"), (pinned_site, "a-cloud"), (tiered, "b-core")):
        assert plan(snapshot(hosts, [g], sites=sites)).placements[0].host_id == expected, g.id


@pytest.mark.parametrize(("gpu_model", "requested"), [
    ("NVIDIA H100 80GB HBM3", "H100 80GB HBM3"),
    ("H100 80GB HBM3", "NVIDIA H100 80GB HBM3"),
    ("NVIDIA  H100 80GB  HBM3", "h100 80gb hbm3"),
])
def test_gpu_model_names_are_normalised(gpu_model: str, requested: str) -> None:
    h = make_host("h1", gpus=[gpu("h1", 0, (gpu_model, 81559, "9.0", True))])
    assert len(plan(snapshot([h], [make_gpr(models=(requested,))])).placements) == 1


def test_vendor_prefixes_the_catalog_knows_are_normalised_too() -> None:
    h = make_host("h1", gpus=[gpu("h1", 0, ("Tesla T4", 16384, "7.5", False))])
    assert len(plan(snapshot([h], [make_gpr(models=("T4",))])).placements) == 1


def test_compute_capability_compares_as_numbers() -> None:
    # As strings "12.0" < "9.0" and "10.0" < "9.0"; as numbers both are newer.
    h = make_host("h1", gpus=[gpu("h1", 0, ("RTX PRO 6000 Blackwell Server", 98304, "12.0", True))])
    assert len(plan(snapshot([h], [make_gpr(min_cc="9.0")])).placements) == 1
    h2 = make_host("h2", gpus=[gpu("h2", 0, A100)])
    assert plan(snapshot([h2], [make_gpr(min_cc="10.0")])).placements == ()
    assert len(plan(snapshot([h2], [make_gpr(min_cc="8.0")])).placements) == 1


def test_only_matching_gpus_are_handed_out() -> None:
    # The host qualifies through its H100s; the L4 and the MIG-mode H100 in front of them must be skipped.
    h = make_host("h1", gpus=[gpu("h1", 0, L4), gpu("h1", 1, mig_enabled=True), gpu("h1", 2), gpu("h1", 3)])
    (p,) = plan(snapshot([h], [make_gpr(count=2, models=("H100 80GB HBM3",))])).placements
    assert p.gpu_indexes == (2, 3)


def test_quota_counts_existing_allocations() -> None:
    h = make_host("h1", gpus=[gpu("h1", i) for i in range(4)])
    ws = Workspace(name=WorkspaceName("ws"), quota=Quota(max_gpus=3))
    snap = snapshot([h], [make_gpr(count=2)], workspaces=[ws], allocations=[alloc("old", h, [0, 1])])
    result = plan(snap)
    assert result.placements == ()
    assert result.unplaced == ((GprId("g1"), "workspace quota: 2 of 3 GPUs in use, 2 more asked"),)
    # Another workspace's allocations do not count, and a quota of 0 means unlimited.
    other = snapshot([h], [make_gpr(count=2)], workspaces=[ws], allocations=[alloc("old", h, [0, 1], "other")])
    assert len(plan(other).placements) == 1
    unlimited = snapshot([h], [make_gpr(count=2)], allocations=[alloc("old", h, [0, 1])])
    assert len(plan(unlimited).placements) == 1


def test_quota_counts_every_replica() -> None:
    h = make_host("h1", gpus=[gpu("h1", i) for i in range(4)])
    ws = Workspace(name=WorkspaceName("ws"), quota=Quota(max_gpus=3))
    assert plan(snapshot([h], [make_gpr(count=1, replicas=4)], workspaces=[ws])).placements == ()
    assert len(plan(snapshot([h], [make_gpr(count=1, replicas=3)], workspaces=[ws])).placements) == 3


def test_mig_profiles_and_fractions_stay_pending_with_a_reason() -> None:
    h = make_host("h1")
    for g in (make_gpr("mig", mig_profile="1g.10gb"), make_gpr("frac", fraction=0.5)):
        snap = snapshot([h], [g])
        result = plan(snap)
        assert result.placements == ()
        assert result.unplaced == ((g.id, "MIG profiles and fractions are not placed by first-fit yet"),)
        assert explain(snap, g).summary == "pending: MIG profiles and fractions are not placed by first-fit yet"


def test_all_replicas_or_none() -> None:
    h1 = make_host("h1", gpus=[gpu("h1", 0)])
    h2 = make_host("h2", gpus=[gpu("h2", 0)])
    assert plan(snapshot([h1, h2], [make_gpr(replicas=3)])).placements == ()
    spread = plan(snapshot([h1, h2], [make_gpr(replicas=2)])).placements
    assert [(p.replica, p.host_id) for p in spread] == [(0, "h1"), (1, "h2")]
    # What a GPR that did not fit would have taken stays free for the next one in line.
    both = plan(snapshot([h1, h2], [make_gpr("big", replicas=3, priority=90), make_gpr("small", priority=10)]))
    assert [(p.gpr_id, p.host_id) for p in both.placements] == [("small", "h1")]
    assert [gid for gid, _ in both.unplaced] == ["big"]


def test_replicas_of_one_gpr_share_a_host_without_sharing_gpus() -> None:
    h = make_host("h1", gpus=[gpu("h1", i) for i in range(4)])
    placements = plan(snapshot([h], [make_gpr(count=2, replicas=2)])).placements
    assert [(p.replica, p.gpu_indexes) for p in placements] == [(0, (0, 1)), (1, (2, 3))]


@pytest.mark.parametrize(("winner", "loser"), [
    (make_gpr("high-1", tier=PriorityTier.HIGH, priority=1), make_gpr("medium-200", priority=200)),
    (make_gpr("medium-200", tier=PriorityTier.MEDIUM, priority=200), make_gpr("low-100", tier=PriorityTier.LOW,
                                                                                priority=100)),
    (make_gpr("number-60", priority=60, created_at=50.0), make_gpr("number-50", priority=50, created_at=1.0)),
    (make_gpr("older", priority=50, created_at=1.0), make_gpr("newer", priority=50, created_at=2.0)),
])
def test_service_order_tier_then_number_then_age(winner: Gpr, loser: Gpr) -> None:
    h = make_host("h1", gpus=[gpu("h1", 0)])
    for pending in ([winner, loser], [loser, winner]):
        result = plan(snapshot([h], pending))
        assert [p.gpr_id for p in result.placements] == [winner.id]
        assert [gid for gid, _ in result.unplaced] == [loser.id]
        assert explain(snapshot([h], pending), loser).queue_position == 2


def test_a_gpr_that_holds_some_replicas_gets_only_the_missing_ones() -> None:
    h = make_host("h1", gpus=[gpu("h1", i) for i in range(4)])
    running = make_gpr("g1", replicas=3, state=GprState.RUNNING)
    held = [alloc("g1", h, [0], replica=0)]
    result = plan(snapshot([h], [running], allocations=held))
    assert sorted(p.replica for p in result.placements) == [1, 2]


# -- properties over random grids ------------------------------------------------------------------

REGIONS = ("eu", "us", "ap")


def sometimes(draw: st.DrawFn, strategy: st.SearchStrategy[T], default: T, odds: int = 3) -> T:
    """``strategy`` one time in ``odds``, else ``default``: keeps most cases placeable."""
    return draw(strategy) if draw(st.integers(1, odds)) == 1 else default


@st.composite
def grids(draw: st.DrawFn) -> Snapshot:
    """A small random grid with random pending GPRs (none of which holds an allocation yet).

    Each obstacle (a host state, a region list, a pinned site, an unhealthy GPU, a quota...) appears
    in a minority of cases, so that plans place something most of the time and every constraint
    still shows up (``test_the_property_generators_cover_the_cases_they_claim`` checks both).
    """
    sites = [Site(name=SiteName(f"s{i}"), tier=draw(st.sampled_from(SiteTier)), region=draw(st.sampled_from(REGIONS)))
             for i in range(draw(st.integers(1, 3)))]
    site_names = [s.name for s in sites]
    hosts = []
    for i in range(draw(st.integers(1, 5))):
        hid = f"h{i}"
        gpus = []
        for j in range(sometimes(draw, st.integers(0, 2), draw(st.integers(2, 6)), 5)):
            model = draw(st.sampled_from(MODELS))
            gpus.append(gpu(hid, j, model, mig_enabled=model[3] and sometimes(draw, st.booleans(), False),
                            health=sometimes(draw, st.sampled_from(GpuHealth), GpuHealth.HEALTHY, 6)))
        state = sometimes(draw, st.sampled_from(HostState), HostState.READY, 4)
        connected = state is not HostState.OFFLINE and sometimes(draw, st.booleans(), True, 6)
        site = sometimes(draw, st.just("unknown"), draw(st.sampled_from(site_names)), 10)
        hosts.append(make_host(hid, site, gpus, state=state, connected=connected))
    workspaces = [Workspace(name=WorkspaceName(w), quota=Quota(max_gpus=sometimes(draw, st.integers(1, 6), 0, 4)),
                            allowed_regions=tuple(sorted(sometimes(draw, st.sets(st.sampled_from(REGIONS),
                                                                                 min_size=1, max_size=2), set(), 5))))
                  for w in ("ws", "ws2")]
    # Existing allocations: some GPUs of some hosts, each taken by an earlier GPR once.
    allocations = []
    for h in hosts:
        for g in h.inventory.gpus:
            if draw(st.integers(0, 3)) == 0:
                allocations.append(alloc(f"old-{g.uuid}", h, [g.index], workspace=draw(st.sampled_from(["ws", "ws2"]))))
    pending = []
    for k in range(draw(st.integers(1, 6))):
        placement = PlacementSpec(
            policy=sometimes(draw, st.just(PlacementPolicy.PINNED), PlacementPolicy.REDISTRIBUTABLE),
            site=sometimes(draw, st.sampled_from(site_names), None),
            tier=sometimes(draw, st.sampled_from(SiteTier), None),
            tier_preference=tuple(draw(st.lists(st.sampled_from(SiteTier), max_size=2))),
            allowed_regions=tuple(sorted(sometimes(draw, st.sets(st.sampled_from(REGIONS), min_size=1, max_size=2),
                                                   set(), 5))),
        )
        pending.append(make_gpr(
            f"g{k}", count=sometimes(draw, st.integers(2, 3), 1), replicas=sometimes(draw, st.integers(2, 3), 1, 2),
            workspace=sometimes(draw, st.just("ws-unknown"), draw(st.sampled_from(["ws", "ws2"])), 8),
            models=tuple(sorted(sometimes(draw, st.sets(st.sampled_from([m[0] for m in MODELS] + ["nvidia l4"]),
                                                         min_size=1, max_size=2), set()))),
            min_memory_mib=sometimes(draw, st.sampled_from([30000, 81560]), 0),
            min_cc=sometimes(draw, st.sampled_from(["8.0", "9.0", "10.0"]), ""),
            mig_profile=sometimes(draw, st.just("1g.10gb"), "", 8),
            tier=draw(st.sampled_from(PriorityTier)), priority=draw(st.integers(1, 3)),
            created_at=float(draw(st.integers(0, 3))), placement=placement,
        ))
    return snapshot(hosts, pending, sites=sites, workspaces=workspaces, allocations=allocations)


def normalized(name: str) -> str:
    return " ".join(name.lower().split()).removeprefix("nvidia ")


def cc(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(".")) if text else ()


def gpu_fits(g: GpuInfo, shape: GpuShape) -> bool:
    """An independent statement of what a whole-GPU request may be given."""
    return ((not shape.models or normalized(g.model) in {normalized(m) for m in shape.models})
            and g.memory_mib >= shape.min_memory_mib
            and (not shape.min_compute_capability or cc(g.compute_capability) >= cc(shape.min_compute_capability))
            and not g.mig_enabled and g.health is GpuHealth.HEALTHY)


PROPS = settings(max_examples=80, deadline=None)


@PROPS
@given(grids())
def test_no_placement_breaks_a_hard_constraint(snap: Snapshot) -> None:
    gprs = {g.id: g for g in snap.pending}
    hosts = {h.id: h for h in snap.hosts}
    result = plan(snap)
    used_by_others = Counter(u for a in snap.allocations for u in a.gpu_uuids)
    used_by_others.update(u for p in result.placements for u in p.gpu_uuids)
    for p in result.placements:
        gpr, host = gprs[p.gpr_id], hosts[p.host_id]
        site = snap.sites.get(host.site)
        assert site is not None and p.site == host.site
        ws = snap.workspaces.get(gpr.spec.workspace)
        regions = allowed_regions(gpr, ws)
        others = [u for u in used_by_others if u not in p.gpu_uuids]
        assert host_exclusion(host, site, gpr, regions, others) is None, str(p)
        # The same facts, stated independently of the scheduler's own checks.
        assert host.connected and host.state is HostState.READY
        assert regions is None or site.region in regions
        placement = gpr.spec.placement
        if placement.policy is PlacementPolicy.PINNED:
            assert placement.site is None or host.site == placement.site
            assert placement.tier is None or site.tier is placement.tier
        assert not gpr.spec.shape.mig_profile
        by_uuid = {g.uuid: g for g in host.inventory.gpus}
        assert len(p.gpu_uuids) == gpr.spec.shape.count
        assert len(p.gpu_indexes) == len(p.gpu_uuids)
        for index, uuid in zip(p.gpu_indexes, p.gpu_uuids, strict=True):
            assert uuid in by_uuid and by_uuid[uuid].index == index
            assert gpu_fits(by_uuid[uuid], gpr.spec.shape), (str(p), by_uuid[uuid])


@PROPS
@given(grids())
def test_no_gpu_is_given_twice(snap: Snapshot) -> None:
    taken = [u for a in snap.allocations for u in a.gpu_uuids]
    taken += [u for p in plan(snap).placements for u in p.gpu_uuids]
    assert len(taken) == len(set(taken))


@PROPS
@given(grids())
def test_quotas_are_never_exceeded(snap: Snapshot) -> None:
    before = Counter({w: 0 for w in snap.workspaces})
    for a in snap.allocations:
        before[a.workspace] += len(a.gpu_uuids)
    after = before.copy()
    gprs = {g.id: g for g in snap.pending}
    for p in plan(snap).placements:
        after[gprs[p.gpr_id].spec.workspace] += len(p.gpu_uuids)
    for name, ws in snap.workspaces.items():
        if ws.quota.max_gpus and after[name] > before[name]:
            assert after[name] <= ws.quota.max_gpus, (name, before[name], after[name])


@PROPS
@given(grids())
def test_each_placed_gpr_gets_exactly_all_its_replicas_and_the_rest_are_unplaced(snap: Snapshot) -> None:
    result = plan(snap)
    replicas: dict[GprId, list[int]] = {}
    for p in result.placements:
        replicas.setdefault(p.gpr_id, []).append(p.replica)
    gprs = {g.id: g for g in snap.pending}
    for gpr_id, got in replicas.items():
        assert sorted(got) == list(range(gprs[gpr_id].spec.replicas)), gpr_id
    unplaced = [gid for gid, _ in result.unplaced]
    assert len(unplaced) == len(set(unplaced))
    assert set(unplaced).isdisjoint(replicas)
    assert set(unplaced) | set(replicas) == set(gprs)
    assert all(reason for _, reason in result.unplaced)


@PROPS
@given(grids(), st.randoms(use_true_random=False))
def test_the_same_snapshot_gives_the_same_plan_in_any_order(snap: Snapshot, rnd: random.Random) -> None:
    first = plan(snap)
    assert plan(snap) == first
    hosts, pending, allocs = list(snap.hosts), list(snap.pending), list(snap.allocations)
    rnd.shuffle(hosts)
    rnd.shuffle(pending)
    rnd.shuffle(allocs)
    shuffled = dataclasses.replace(snap, hosts=tuple(hosts), pending=tuple(pending), allocations=tuple(allocs),
                                   sites=dict(reversed(list(snap.sites.items()))))
    assert plan(shuffled).placements == first.placements
    assert sorted(plan(shuffled).unplaced) == sorted(first.unplaced)


@st.composite
def one_host_queues(draw: st.DrawFn) -> tuple[Snapshot, int]:
    """One host, GPRs that all ask for the same shape (no quota, no regions), some GPUs already taken.

    Here "who fits" depends only on order, so the placed GPRs must be a prefix of the service order.
    """
    n_gpus = draw(st.integers(0, 8))
    h = make_host("h1", gpus=[gpu("h1", i) for i in range(n_gpus)])
    taken = draw(st.sets(st.integers(0, max(n_gpus - 1, 0)), max_size=n_gpus)) if n_gpus else set()
    allocations = [alloc(f"old{i}", h, [i]) for i in sorted(taken)]
    count, replicas = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    n = draw(st.integers(0, 6))
    ages = draw(st.lists(st.integers(0, 1000), min_size=n, max_size=n, unique=True))
    pending = [make_gpr(f"g{k}", count=count, replicas=replicas, tier=draw(st.sampled_from(PriorityTier)),
                        priority=draw(st.integers(1, 3)), created_at=float(age)) for k, age in enumerate(ages)]
    free = n_gpus - len(taken)
    return snapshot([h], pending, allocations=allocations), free // (count * replicas)


@PROPS
@given(one_host_queues())
def test_on_one_host_a_lower_priority_gpr_never_jumps_a_higher_one(case: tuple[Snapshot, int]) -> None:
    snap, room = case
    # Written out rather than borrowed from the scheduler: tier, then number, highest first; then oldest.
    order = sorted(snap.pending, key=lambda g: (-int(g.spec.priority_tier), -g.spec.priority, g.created_at))
    placed = {p.gpr_id for p in plan(snap).placements}
    assert placed == {g.id for g in order[:room]}


def test_the_property_generators_cover_the_cases_they_claim() -> None:
    # A property that never sees a placement, or never sees an exclusion, proves nothing.
    seen: Counter[str] = Counter()

    @settings(max_examples=100, deadline=None, database=None, derandomize=True)
    @given(grids())
    def survey(snap: Snapshot) -> None:
        result = plan(snap)
        if result.placements:
            seen["placed"] += 1
        if len({p.gpr_id for p in result.placements}) > 1:
            seen["several placed"] += 1
        if any(len([p for p in result.placements if p.gpr_id == g]) > 1 for g in {p.gpr_id for p in result.placements}):
            seen["multi-replica placed"] += 1
        if result.unplaced:
            seen["unplaced"] += 1
        if any(reason.startswith("workspace quota") for _, reason in result.unplaced):
            seen["quota"] += 1
        for g in snap.pending:
            for x in explain(snap, g).exclusions:
                seen[x.constraint] += 1

    survey()
    # First-fit never gets as far as a MIG profile (it keeps MIG requests pending), so "mig_profile" is
    # covered by the engine's tests instead.
    missing = [k for k in ("placed", "several placed", "multi-replica placed", "unplaced", "quota", *CONSTRAINTS)
               if not seen[k] and k != "mig_profile"]
    assert not missing, (missing, seen)

