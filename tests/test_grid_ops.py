"""The controller's grid operations over a real store with a fake clock: a GPR's whole life, the
plan-apply re-check, cancel, expiry, rejected specs and draining.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from gridmesh.common.model import (
    AllocationState,
    AllocationStatus,
    Event,
    GprId,
    GprState,
    GpuHealth,
    GpuInfo,
    GpuUuid,
    HostState,
    Inventory,
    PlacementPolicy,
    PriorityTier,
    SiteName,
    SiteTier,
    WorkspaceName,
)
from gridmesh.controller import lifecycle, scheduler
from gridmesh.controller.errors import FailedPrecondition, NotFound
from gridmesh.controller.grid import Grid
from gridmesh.controller.model import Gpr, GprSpec, GpuShape, PlacementSpec, Site, Workspace
from gridmesh.controller.scheduler import Plan
from gridmesh.controller.store import Store
from tests.hostsync import FakeClock

S = GprState


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "grid.db")
    yield s
    s.close()


@pytest.fixture
def grid(store: Store, clock: FakeClock) -> Grid:
    g = Grid(store, clock)
    g.create_site(Site(name=SiteName("core"), tier=SiteTier.CORE, region="eu"))
    g.create_workspace(Workspace(name=WorkspaceName("ws")))
    return g


def inventory(host_id: str, gpus: int) -> Inventory:
    return Inventory(hostname=host_id, gpus=tuple(
        GpuInfo(index=i, uuid=GpuUuid(f"GPU-{host_id}-{i}"), model="H100 80GB HBM3", memory_mib=81559,
                compute_capability="9.0") for i in range(gpus)))


def connect(grid: Grid, host_id: str, gpus: int = 2) -> None:
    grid.host_connected(host_id, "core", inventory(host_id, gpus), applied_revision=0, underlay_address="192.0.2.1")


def submit(grid: Grid, *, count: int = 1, replicas: int = 1, duration_s: float | None = None,
           tier: PriorityTier = PriorityTier.MEDIUM, priority: int = 50) -> Gpr:
    return grid.submit_gpr(GprSpec(workspace=WorkspaceName("ws"), shape=GpuShape(count=count), priority_tier=tier,
                                   priority=priority, replicas=replicas, duration_s=duration_s))


def place(grid: Grid) -> int:
    """One placement round as the controller runs it: snapshot, pure plan, re-checked apply."""
    return grid.apply_plan(scheduler.plan(grid.snapshot()))


def ack(grid: Grid, host_id: str, state: AllocationState = AllocationState.RUNNING) -> None:
    """The host sent its spec and acknowledges it, reporting every allocation it holds in ``state``."""
    host = grid.get_host(host_id)
    grid.spec_sent(host_id, host.desired_revision)
    statuses = [AllocationStatus(a.id, state) for a in grid.store.allocations_on_host(host_id)]
    grid.spec_acknowledged(host_id, host.desired_revision, True, "", statuses)


def transitions(grid: Grid, gpr_id: str) -> list[tuple[str, str, str]]:
    return [(e.from_state, e.to_state, e.reason) for e in grid.store.events(subject=gpr_id, kind="gpr.state")]


def hosts_of(grid: Grid, gpr_id: str) -> list[str]:
    return [a.host_id for a in grid.store.allocations_of_gpr(gpr_id)]


def running(grid: Grid, *, hosts: Sequence[str] = ("h1",), gpus: int = 2, **kw: object) -> Gpr:
    for h in hosts:
        connect(grid, h, gpus)
    gpr = submit(grid, **kw)  # type: ignore[arg-type]
    assert place(grid) >= 1
    for h in sorted(set(hosts_of(grid, gpr.id))):
        ack(grid, h)
    gpr = grid.get_gpr(gpr.id)
    assert gpr.state is S.RUNNING
    return gpr


# -- the happy path --------------------------------------------------------------------------------


def test_a_gpr_goes_pending_placed_provisioning_running(grid: Grid, clock: FakeClock) -> None:
    connect(grid, "h1")
    gpr = submit(grid, count=2)
    assert gpr.state is S.PENDING and gpr.created_at == 1000.0

    clock.advance(1)
    snap = grid.snapshot()
    assert [g.id for g in snap.pending] == [gpr.id]
    p = scheduler.plan(snap)
    assert grid.apply_plan(p) == 1
    placed = grid.get_gpr(gpr.id)
    assert placed.state is S.PLACED
    (a,) = grid.store.allocations_of_gpr(gpr.id)
    assert (a.host_id, a.gpu_indexes, a.state) == ("h1", (0, 1), AllocationState.PENDING)
    host = grid.get_host("h1")
    assert host.desired_revision == grid.store.revision == a.revision

    clock.advance(1)
    grid.spec_sent("h1", host.desired_revision)
    assert grid.get_gpr(gpr.id).state is S.PROVISIONING

    clock.advance(1)
    grid.spec_acknowledged("h1", host.desired_revision, True, "",
                           [AllocationStatus(a.id, AllocationState.RUNNING, device_uuids=("GPU-h1-0", "GPU-h1-1"))])
    done = grid.get_gpr(gpr.id)
    assert done.state is S.RUNNING
    assert done.running_since == 1003.0 and done.expires_at is None
    assert grid.get_host("h1").applied_revision == host.desired_revision
    assert grid.store.allocation(a.id).state is AllocationState.RUNNING  # type: ignore[union-attr]

    assert transitions(grid, gpr.id) == [
        ("", "PENDING", "Submitted"),
        ("PENDING", "PLACED", "Placed"),
        ("PLACED", "PROVISIONING", "SpecSent"),
        ("PROVISIONING", "RUNNING", "Running"),
    ]
    times = [e.time for e in grid.store.events(subject=gpr.id, kind="gpr.state")]
    assert times == [1000.0, 1001.0, 1002.0, 1003.0]


def test_replanning_right_after_applying_places_nothing_new(grid: Grid) -> None:
    connect(grid, "h1", gpus=4)
    connect(grid, "h2", gpus=1)
    for _ in range(3):
        submit(grid, count=2)  # room for two of the three
    assert place(grid) == 2
    again = scheduler.plan(grid.snapshot())
    assert again.placements == ()
    assert len(again.unplaced) == 1
    revision = grid.store.revision
    assert grid.apply_plan(again) == 0
    assert grid.store.revision == revision


def test_a_repeated_ack_changes_nothing(grid: Grid) -> None:
    gpr = running(grid)
    revision = grid.store.revision
    ack(grid, "h1")
    assert grid.store.revision == revision
    assert len(transitions(grid, gpr.id)) == 4


def test_a_multi_replica_gpr_runs_only_when_every_replica_does(grid: Grid) -> None:
    connect(grid, "h1", gpus=1)
    connect(grid, "h2", gpus=1)
    gpr = submit(grid, replicas=2)
    assert place(grid) == 2
    assert sorted(hosts_of(grid, gpr.id)) == ["h1", "h2"]
    ack(grid, "h1")
    assert grid.get_gpr(gpr.id).state is S.PROVISIONING
    ack(grid, "h2")
    assert grid.get_gpr(gpr.id).state is S.RUNNING


def test_submit_with_a_request_id_is_idempotent(grid: Grid) -> None:
    spec = GprSpec(workspace=WorkspaceName("ws"), shape=GpuShape(), priority_tier=PriorityTier.LOW, priority=1)
    first = grid.submit_gpr(spec, request_id="r-1")
    assert grid.submit_gpr(spec, request_id="r-1") == first
    assert grid.submit_gpr(spec, request_id="r-2").id != first.id


def test_submit_checks_references(grid: Grid) -> None:
    revision = grid.store.revision
    with pytest.raises(NotFound, match="workspace 'nope'"):
        grid.submit_gpr(GprSpec(workspace=WorkspaceName("nope"), shape=GpuShape(), priority_tier=PriorityTier.LOW,
                                priority=1))
    assert grid.store.revision == revision


# -- plan-apply re-checks --------------------------------------------------------------------------


def test_a_stale_plan_whose_gpu_was_taken_is_dropped_whole(grid: Grid) -> None:
    connect(grid, "h1", gpus=1)
    connect(grid, "h2", gpus=1)
    wide = submit(grid, replicas=2)
    stale = scheduler.plan(grid.snapshot())
    assert sorted(p.host_id for p in stale.placements) == ["h1", "h2"]
    urgent = submit(grid, tier=PriorityTier.HIGH)
    fresh = scheduler.plan(grid.snapshot())
    assert [(p.gpr_id, p.host_id) for p in fresh.placements] == [(urgent.id, "h1")]
    assert grid.apply_plan(fresh) == 1

    revision = grid.store.revision
    assert grid.apply_plan(stale) == 0
    # Whole: the replica on h2, which still fits, is not committed alone.
    assert grid.store.allocations_of_gpr(wide.id) == []
    assert grid.store.allocations_on_host("h2") == []
    assert grid.get_gpr(wide.id).state is S.PENDING
    assert grid.store.revision == revision


def test_a_stale_plan_for_a_disconnected_host_is_dropped_whole(grid: Grid) -> None:
    connect(grid, "h1", gpus=1)
    connect(grid, "h2", gpus=1)
    gpr = submit(grid, replicas=2)
    stale = scheduler.plan(grid.snapshot())
    grid.host_disconnected("h2", "keepalive timeout")
    assert grid.apply_plan(stale) == 0
    assert grid.store.allocations_of_gpr(gpr.id) == []
    assert grid.get_gpr(gpr.id).state is S.PENDING


def test_a_stale_plan_for_a_cancelled_gpr_is_dropped(grid: Grid) -> None:
    connect(grid, "h1")
    gpr = submit(grid)
    stale = scheduler.plan(grid.snapshot())
    grid.cancel_gpr(gpr.id)
    revision = grid.store.revision
    assert grid.apply_plan(stale) == 0
    assert grid.store.allocations_on_host("h1") == []
    assert grid.store.revision == revision
    assert grid.get_gpr(gpr.id).state is S.CANCELLED


def test_a_stale_plan_keeps_the_gprs_that_still_fit(grid: Grid) -> None:
    connect(grid, "h1", gpus=1)
    connect(grid, "h2", gpus=1)
    a = submit(grid, priority=90)
    b = submit(grid, priority=10)
    p = scheduler.plan(grid.snapshot())
    assert {pl.gpr_id: pl.host_id for pl in p.placements} == {a.id: "h1", b.id: "h2"}
    grid.host_disconnected("h1", "gone")
    assert grid.apply_plan(p) == 1
    assert grid.get_gpr(a.id).state is S.PENDING
    assert grid.get_gpr(b.id).state is S.PLACED


def test_apply_plan_refuses_a_placement_twice(grid: Grid) -> None:
    connect(grid, "h1", gpus=4)
    submit(grid)
    p = scheduler.plan(grid.snapshot())
    assert grid.apply_plan(p) == 1
    assert grid.apply_plan(p) == 0
    assert len(grid.store.allocations_on_host("h1")) == 1


# -- cancel, expire, scale -------------------------------------------------------------------------


def test_cancel_releases_allocations_and_bumps_the_hosts_desired_revision(grid: Grid) -> None:
    gpr = running(grid, hosts=("h1", "h2"), gpus=1, replicas=2)
    before = {h: grid.get_host(h).desired_revision for h in ("h1", "h2")}
    grid.cancel_gpr(gpr.id, "no longer needed")
    cancelled = grid.get_gpr(gpr.id)
    assert cancelled.state is S.CANCELLED and cancelled.state_reason == "no longer needed"
    assert grid.store.allocations_of_gpr(gpr.id) == []
    for h in ("h1", "h2"):
        assert grid.get_host(h).desired_revision == grid.store.revision > before[h]
    assert transitions(grid, gpr.id)[-1] == ("RUNNING", "CANCELLED", "Cancelled")
    with pytest.raises(FailedPrecondition, match="already CANCELLED"):
        grid.cancel_gpr(gpr.id)


def test_a_gpr_expires_after_its_duration(grid: Grid, clock: FakeClock) -> None:
    gpr = running(grid, duration_s=60.0)
    assert gpr.expires_at == gpr.running_since + 60.0  # type: ignore[operator]
    clock.advance(59.5)
    assert grid.expire_due() == 0
    assert grid.get_gpr(gpr.id).state is S.RUNNING
    clock.advance(0.5)
    desired = grid.get_host("h1").desired_revision
    assert grid.expire_due() == 1
    expired = grid.get_gpr(gpr.id)
    assert expired.state is S.EXPIRED and "60s elapsed" in expired.state_reason
    assert grid.store.allocations_of_gpr(gpr.id) == []
    assert grid.get_host("h1").desired_revision > desired
    assert transitions(grid, gpr.id)[-1] == ("RUNNING", "EXPIRED", "DurationElapsed")
    assert grid.expire_due() == 0


def test_extending_moves_the_expiry(grid: Grid, clock: FakeClock) -> None:
    gpr = running(grid, duration_s=60.0)
    grid.extend_gpr(gpr.id, 30.0)
    clock.advance(60)
    assert grid.expire_due() == 0
    clock.advance(30)
    assert grid.expire_due() == 1
    forever = running(grid)
    with pytest.raises(FailedPrecondition, match="no duration"):
        grid.extend_gpr(forever.id, 10.0)


def test_a_gpr_without_duration_never_expires(grid: Grid, clock: FakeClock) -> None:
    gpr = running(grid)
    clock.advance(10**9)
    assert grid.expire_due() == 0
    assert grid.get_gpr(gpr.id).state is S.RUNNING


def test_scaling_down_releases_the_highest_replicas(grid: Grid) -> None:
    gpr = running(grid, hosts=("h1",), gpus=4, replicas=3)
    grid.scale_gpr(gpr.id, 1)
    assert [a.replica for a in grid.store.allocations_of_gpr(gpr.id)] == [0]
    assert grid.get_gpr(gpr.id).spec.replicas == 1
    assert scheduler.plan(grid.snapshot()).placements == ()


def test_scaling_up_places_the_missing_replica(grid: Grid) -> None:
    gpr = running(grid, hosts=("h1",), gpus=4)
    grid.scale_gpr(gpr.id, 2)
    assert place(grid) == 1
    assert sorted(a.replica for a in grid.store.allocations_of_gpr(gpr.id)) == [0, 1]
    ack(grid, "h1")
    assert grid.get_gpr(gpr.id).state is S.RUNNING


# -- the state machine -----------------------------------------------------------------------------


def _a_gpr(state: GprState) -> Gpr:
    spec = GprSpec(workspace=WorkspaceName("ws"), shape=GpuShape(), priority_tier=PriorityTier.LOW, priority=1)
    return Gpr(id=GprId("g"), spec=spec, state=state, created_at=0.0, updated_at=0.0)


ILLEGAL = [(a, b) for a in GprState for b in GprState if b not in lifecycle.ALLOWED[a]]


def test_the_rules_the_state_machine_keeps() -> None:
    # Spelled out, so that a careless edit of ALLOWED fails here.
    for terminal in (S.RELEASED, S.EXPIRED, S.FAILED, S.CANCELLED):
        assert terminal.terminal and lifecycle.ALLOWED[terminal] == frozenset()
    for never in [(S.PENDING, S.RUNNING), (S.PENDING, S.PROVISIONING), (S.RUNNING, S.PENDING),
                  (S.PLACED, S.RUNNING), (S.PREEMPTED, S.RUNNING)]:
        assert never in ILLEGAL
    assert all(not a.terminal for a in GprState for b in lifecycle.ALLOWED[a])


@pytest.mark.parametrize(("start", "to"), ILLEGAL, ids=[f"{a.name}->{b.name}" for a, b in ILLEGAL])
def test_an_illegal_transition_raises_and_writes_nothing(store: Store, start: GprState, to: GprState) -> None:
    gpr = _a_gpr(start)
    with store.write() as tx:
        tx.put(gpr)
    with pytest.raises(lifecycle.IllegalTransition, match=f"{start.name} -> {to.name}"), store.write() as tx:
        lifecycle.transition(tx, gpr, to, "Test", "test", 5.0)
    assert store.revision == 1
    assert store.gpr("g") == dataclasses.replace(gpr, revision=1)
    assert store.events() == []


def test_a_legal_transition_records_one_event_in_the_same_transaction(store: Store) -> None:
    gpr = _a_gpr(S.PROVISIONING)
    gpr = dataclasses.replace(gpr, spec=dataclasses.replace(gpr.spec, duration_s=30.0))
    with store.write() as tx:
        new = lifecycle.transition(tx, gpr, S.RUNNING, "Running", "all replicas running", 7.0)
    assert store.gpr("g") == dataclasses.replace(new, revision=1)
    assert (new.state, new.running_since, new.expires_at, new.updated_at) == (S.RUNNING, 7.0, 37.0, 7.0)
    (e,) = store.events()
    assert (e.kind, e.subject, e.from_state, e.to_state, e.reason, e.revision) == (
        "gpr.state", "g", "PROVISIONING", "RUNNING", "Running", 1)
    # Running again later (after a migration) keeps the first start and the expiry.
    with store.write() as tx:
        again = lifecycle.transition(tx, dataclasses.replace(new, state=S.MIGRATING), S.RUNNING, "Running", "x", 9.0)
    assert (again.running_since, again.expires_at) == (7.0, 37.0)


# -- hosts: rejected specs and draining ------------------------------------------------------------


def test_a_rejected_ack_fails_provisioning_gprs_with_the_agents_reason(grid: Grid) -> None:
    old = running(grid, gpus=2)
    new = submit(grid)
    assert place(grid) == 1
    host = grid.get_host("h1")
    grid.spec_sent("h1", host.desired_revision)
    assert grid.get_gpr(new.id).state is S.PROVISIONING
    reason = "alloc-x: GPU 7 does not exist on this host (2 GPUs)"
    statuses = [AllocationStatus(a.id, AllocationState.RUNNING) for a in grid.store.allocations_of_gpr(old.id)]
    grid.spec_acknowledged("h1", host.desired_revision, False, reason, statuses)

    failed = grid.get_gpr(new.id)
    assert failed.state is S.FAILED
    assert reason in failed.state_reason and "h1" in failed.state_reason
    assert transitions(grid, new.id)[-1] == ("PROVISIONING", "FAILED", "HostRejectedSpec")
    assert grid.store.allocations_of_gpr(new.id) == []
    # What already ran there keeps running, and the host is not recorded as having applied the revision.
    assert grid.get_gpr(old.id).state is S.RUNNING
    assert len(grid.store.allocations_of_gpr(old.id)) == 1
    assert grid.get_host("h1").applied_revision < host.desired_revision
    (err,) = grid.store.events(subject="h1", kind="host.error")
    assert err.reason == "SpecRejected" and reason in err.message


def test_a_failed_allocation_fails_its_gpr(grid: Grid) -> None:
    connect(grid, "h1")
    gpr = submit(grid)
    place(grid)
    host = grid.get_host("h1")
    grid.spec_sent("h1", host.desired_revision)
    (a,) = grid.store.allocations_of_gpr(gpr.id)
    grid.spec_acknowledged("h1", host.desired_revision, True, "",
                           [AllocationStatus(a.id, AllocationState.FAILED, "device busy")])
    failed = grid.get_gpr(gpr.id)
    assert failed.state is S.FAILED and "device busy" in failed.state_reason
    assert grid.store.allocations_of_gpr(gpr.id) == []


def test_drain_migrates_running_gprs_and_they_run_again_elsewhere(grid: Grid, clock: FakeClock) -> None:
    gpr = running(grid, hosts=("h1",), gpus=2)
    connect(grid, "h2", gpus=2)
    desired = grid.get_host("h1").desired_revision

    clock.advance(5)
    grid.set_host_admin_state("h1", HostState.DRAINING, "maintenance")
    h1 = grid.get_host("h1")
    assert (h1.state, h1.admin_state, h1.state_reason) == (HostState.DRAINING, HostState.DRAINING, "maintenance")
    assert h1.desired_revision > desired
    moving = grid.get_gpr(gpr.id)
    assert moving.state is S.MIGRATING
    assert grid.store.allocations_of_gpr(gpr.id) == []

    assert place(grid) == 1
    assert hosts_of(grid, gpr.id) == ["h2"]
    assert grid.get_gpr(gpr.id).state is S.PROVISIONING
    ack(grid, "h2")
    back = grid.get_gpr(gpr.id)
    assert back.state is S.RUNNING
    assert back.running_since == gpr.running_since
    assert [t[:2] for t in transitions(grid, gpr.id)][-3:] == [
        ("RUNNING", "MIGRATING"), ("MIGRATING", "PROVISIONING"), ("PROVISIONING", "RUNNING")]
    # A draining host gets nothing new.
    submit(grid)
    place(grid)
    assert grid.store.allocations_on_host("h1") == []


def test_a_disconnected_host_keeps_its_allocations_and_comes_back_cordoned(grid: Grid) -> None:
    gpr = running(grid)
    grid.set_host_admin_state("h1", HostState.CORDONED, "")
    grid.host_disconnected("h1", "network down")
    h1 = grid.get_host("h1")
    assert (h1.state, h1.connected) == (HostState.OFFLINE, False)
    assert len(grid.store.allocations_of_gpr(gpr.id)) == 1
    assert grid.get_gpr(gpr.id).state is S.RUNNING
    connect(grid, "h1")
    h1 = grid.get_host("h1")
    assert (h1.state, h1.connected) == (HostState.CORDONED, True)


def test_drain_under_a_provisioning_gpr_replaces_it(grid: Grid) -> None:
    connect(grid, "h1")
    connect(grid, "h2")
    gpr = submit(grid)
    place(grid)
    (host_id,) = hosts_of(grid, gpr.id)
    grid.spec_sent(host_id, grid.get_host(host_id).desired_revision)
    assert grid.get_gpr(gpr.id).state is S.PROVISIONING
    grid.set_host_admin_state(host_id, HostState.DRAINING, "")
    other = submit(grid)  # an unrelated GPR in the same round must not be lost either
    assert place(grid) == 2
    assert hosts_of(grid, gpr.id) != [host_id] and hosts_of(grid, other.id)


def test_drain_under_a_placed_gpr_replaces_it(grid: Grid) -> None:
    connect(grid, "h1")
    gpr = submit(grid)
    place(grid)
    assert grid.get_gpr(gpr.id).state is S.PLACED
    connect(grid, "h2")
    grid.set_host_admin_state("h1", HostState.DRAINING, "")
    place(grid)
    assert hosts_of(grid, gpr.id) == ["h2"]


def test_drain_under_one_replica_of_two_replaces_that_replica(grid: Grid) -> None:
    gpr = running(grid, hosts=("h1", "h2"), gpus=1, replicas=2)
    connect(grid, "h3", gpus=1)
    grid.set_host_admin_state("h1", HostState.DRAINING, "")
    assert grid.get_gpr(gpr.id).state is S.MIGRATING
    assert place(grid) == 1
    assert sorted(hosts_of(grid, gpr.id)) == ["h2", "h3"]


def test_a_migrating_gpr_whose_time_is_up_expires(grid: Grid, clock: FakeClock) -> None:
    gpr = running(grid, duration_s=60.0)
    grid.set_host_admin_state("h1", HostState.DRAINING, "")  # nowhere to go: it stays MIGRATING
    clock.advance(61)
    assert grid.expire_due() == 1
    assert grid.get_gpr(gpr.id).state is S.EXPIRED


def test_note_unplaced_records_a_reason_once(grid: Grid) -> None:
    gpr = submit(grid, count=9)
    p = scheduler.plan(grid.snapshot())
    grid.note_unplaced(p.unplaced)
    grid.note_unplaced(p.unplaced)
    events: list[Event] = grid.store.events(subject=gpr.id, kind="gpr.unschedulable")
    assert [e.message for e in events] == ["no host has room for every replica"]
    assert grid.get_gpr(gpr.id).state_reason == "no host has room for every replica"


def test_an_empty_plan_writes_nothing(grid: Grid) -> None:
    revision = grid.store.revision
    assert grid.apply_plan(Plan()) == 0
    assert grid.store.revision == revision


# -- released GPUs stay out of use until the host verifies them clean -----------------------------------


def report(grid: Grid, host_id: str, *, unclean: Sequence[int] = (), applied: int | None = None) -> None:
    """A status from the host: GPUs at ``unclean`` indexes fail the host's clean check."""
    host = grid.get_host(host_id)
    gpus = tuple(dataclasses.replace(g, health=GpuHealth.UNCLEAN if g.index in unclean else GpuHealth.HEALTHY)
                 for g in host.inventory.gpus)
    grid.host_status(host_id, dataclasses.replace(host.inventory, gpus=gpus), [], [],
                     host.applied_revision if applied is None else applied)


def test_a_released_gpu_is_not_reused_until_the_host_reports_it_clean(grid: Grid) -> None:
    first = running(grid, gpus=1)
    grid.cancel_gpr(first.id)
    released_at = grid.get_host("h1").desired_revision
    assert [u for u, _ in grid.get_host("h1").released_gpus] == ["GPU-h1-0"]
    second = submit(grid)
    assert place(grid) == 0
    assert scheduler.explain(grid.snapshot(), grid.get_gpr(second.id)).exclusions[0].constraint == "gpu_health"

    # A status from before the host applied the release proves nothing: still out of use.
    report(grid, "h1", applied=released_at - 1)
    assert place(grid) == 0
    # The host applied it but its check found a leftover process: still out of use.
    ack(grid, "h1")
    report(grid, "h1", unclean=[0])
    assert place(grid) == 0 and grid.get_host("h1").released_gpus
    # Verified clean after the release: back in use, and said so.
    report(grid, "h1")
    assert grid.get_host("h1").released_gpus == ()
    assert [e.reason for e in grid.store.events(kind="gpu.clean")] == ["VerifiedClean"]
    assert place(grid) == 1 and hosts_of(grid, second.id) == ["h1"]


def test_work_goes_where_its_model_artifact_already_is(store: Store, clock: FakeClock) -> None:
    g = Grid(store, clock)
    for site in ("a", "b"):
        g.create_site(Site(name=SiteName(site), tier=SiteTier.CORE, region="eu"))
        g.host_connected(f"{site}-1", site, inventory(f"{site}-1", 2), 0, "")
    g.create_workspace(Workspace(name=WorkspaceName("ws")))

    def gpr(site: str | None, artifact: str) -> Gpr:
        placement = PlacementSpec(policy=PlacementPolicy.PINNED, site=SiteName(site)) if site else PlacementSpec()
        return g.submit_gpr(GprSpec(workspace=WorkspaceName("ws"), shape=GpuShape(count=1),
                                    priority_tier=PriorityTier.MEDIUM, priority=50, placement=placement,
                                    model_artifact=artifact))

    gpr("a", "")  # both hosts equally full, so only locality tells them apart
    gpr("b", "llama-70b")
    place(g)
    follower = gpr(None, "llama-70b")
    place(g)
    assert hosts_of(g, follower.id) == ["b-1"]
