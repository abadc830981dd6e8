"""The SQLite store: one revision per committed transaction, all-or-nothing in the database and in memory,
the same state after a restart, events paged from disk, and waiting for a change.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridmesh.common.model import (
    AllocationId,
    AllocationState,
    Event,
    GprId,
    GprState,
    GpuInfo,
    GpuUuid,
    HostId,
    HostState,
    Inventory,
    PriorityTier,
    SiteName,
    SiteTier,
    WorkspaceName,
)
from gridmesh.controller.model import (
    Allocation,
    BootstrapToken,
    Gpr,
    GprSpec,
    GpuShape,
    Host,
    PlacementSpec,
    Quota,
    Site,
    Workspace,
)
from gridmesh.controller.store import Store, StoredObject


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "state" / "grid.db")
    yield s
    s.close()


def site(name: str = "paris", region: str = "eu-fr") -> Site:
    return Site(name=SiteName(name), tier=SiteTier.FAR_EDGE, region=region, price_per_gpu_hour=(("L4", 0.8),))


def host(host_id: str = "h1", gpus: int = 2) -> Host:
    inv = Inventory(hostname=host_id, gpus=tuple(
        GpuInfo(index=i, uuid=GpuUuid(f"GPU-{host_id}-{i}"), model="L4", memory_mib=24576, compute_capability="8.9")
        for i in range(gpus)))
    return Host(id=HostId(host_id), site=SiteName("paris"), state=HostState.READY, inventory=inv, connected=True)


def gpr(gpr_id: str = "gpr-1") -> Gpr:
    spec = GprSpec(workspace=WorkspaceName("ran"), shape=GpuShape(count=1, models=("L4",)),
                   priority_tier=PriorityTier.HIGH, priority=7, duration_s=60.0,
                   placement=PlacementSpec(tier=SiteTier.FAR_EDGE, site=SiteName("paris")))
    return Gpr(id=GprId(gpr_id), spec=spec, state=GprState.PENDING, created_at=1.0, updated_at=1.0)


def allocation(alloc_id: str = "alloc-1") -> Allocation:
    return Allocation(id=AllocationId(alloc_id), gpr_id=GprId("gpr-1"), workspace=WorkspaceName("ran"), replica=0,
                      host_id=HostId("h1"), site=SiteName("paris"), gpu_indexes=(1,),
                      gpu_uuids=(GpuUuid("GPU-h1-1"),), created_at=2.0, state=AllocationState.RUNNING)


def every_kind() -> list[StoredObject]:
    return [site(), host(), Workspace(name=WorkspaceName("ran"), quota=Quota(max_gpus=4), allowed_regions=("eu-fr",)),
            gpr(), allocation(),
            BootstrapToken(id="tok-1", site=SiteName("paris"), secret_sha256="ab" * 32, expires_at=99.0)]


def event(kind: str = "gpr.state", subject: str = "gpr-1", reason: str = "Placed") -> Event:
    return Event(kind=kind, subject=subject, reason=reason, message=f"{subject} {reason}", time=3.0)


def state_of(s: Store) -> dict[type, dict[str, Any]]:
    """Everything a store holds in memory, by kind and key."""
    return {
        Site: {o.name: o for o in s.all(Site)},
        Host: {o.id: o for o in s.all(Host)},
        Workspace: {o.name: o for o in s.all(Workspace)},
        Gpr: {o.id: o for o in s.all(Gpr)},
        Allocation: {o.id: o for o in s.all(Allocation)},
        BootstrapToken: {o.id: o for o in s.all(BootstrapToken)},
    }


# -- revisions -------------------------------------------------------------------------------------


def test_a_new_store_is_at_revision_zero_and_empty(store: Store) -> None:
    assert store.revision == 0
    assert all(not objs for objs in state_of(store).values())
    assert store.events() == []


def test_an_empty_transaction_does_not_bump_the_revision(store: Store) -> None:
    with store.write() as tx:
        tx.put(site())
    with store.write():
        pass
    with store.write() as tx:
        assert tx.get(Site, "paris") == store.site("paris")  # reading alone is not a change
    assert store.revision == 1


def test_one_transaction_bumps_the_revision_once_and_stamps_everything_in_it(store: Store) -> None:
    with store.write() as tx:
        tx.put(site())
    with store.write() as tx:
        assert tx.revision == 2
        for obj in every_kind()[1:]:
            tx.put(obj)
        tx.event(event(reason="A"))
        tx.event(event(reason="B"))
    assert store.revision == 2
    assert store.site("paris") is not None and store.site("paris").revision == 1  # type: ignore[union-attr]
    for objs in state_of(store).values():
        for key, obj in objs.items():
            if key != "paris":
                assert obj.revision == 2, obj
    evs = store.events()
    assert [(e.reason, e.revision) for e in evs] == [("A", 2), ("B", 2)]
    assert evs[0].seq < evs[1].seq


@pytest.mark.parametrize("change", ["put", "delete", "event"])
def test_every_kind_of_change_bumps_the_revision_once(store: Store, change: str) -> None:
    with store.write() as tx:
        tx.put(site())
    with store.write() as tx:
        if change == "put":
            tx.put(site("lyon"))
        elif change == "delete":
            tx.delete(Site, "paris")
        else:
            tx.event(event())
    assert store.revision == 2


def test_objects_keep_the_revision_they_last_changed_at(store: Store) -> None:
    with store.write() as tx:
        tx.put(site("paris"))
        tx.put(site("lyon"))
    with store.write() as tx:
        tx.put(site("lyon", region="eu-fr-2"))
    assert store.site("paris").revision == 1  # type: ignore[union-attr]
    assert store.site("lyon").revision == 2  # type: ignore[union-attr]
    assert store.site("lyon").region == "eu-fr-2"  # type: ignore[union-attr]


def test_a_transaction_reads_its_own_writes_and_the_store_does_not_until_commit(store: Store) -> None:
    with store.write() as tx:
        tx.put(site("paris"))
    with store.write() as tx:
        tx.put(site("lyon"))
        tx.delete(Site, "paris")
        assert tx.get(Site, "lyon") == site("lyon")
        assert tx.get(Site, "paris") is None
        # Memory changes only after the database commit.
        assert store.site("lyon") is None
        assert store.site("paris") is not None
        assert store.revision == 1
    assert store.site("paris") is None
    assert store.site("lyon") is not None


# -- all or nothing --------------------------------------------------------------------------------


class Boom(Exception):
    pass


def test_an_exception_inside_the_block_leaves_disk_and_memory_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "grid.db"
    s = Store(path)
    with s.write() as tx:
        tx.put(site())
        tx.event(event(reason="First"))
    before = state_of(s)
    with pytest.raises(Boom), s.write() as tx:
        tx.put(host())
        tx.put(site(region="changed"))
        tx.delete(Site, "paris")
        tx.event(event(reason="Lost"))
        raise Boom
    assert s.revision == 1
    assert state_of(s) == before
    assert [e.reason for e in s.events()] == ["First"]
    s.close()
    again = Store(path)
    assert again.revision == 1
    assert state_of(again) == before
    assert [e.reason for e in again.events()] == ["First"]
    again.close()


def test_a_failure_in_the_middle_of_a_commit_writes_nothing(tmp_path: Path) -> None:
    # The second object cannot be encoded, so the database fails after the first one was written in
    # the same SQLite transaction: the rollback must take the first one back too.
    path = tmp_path / "grid.db"
    s = Store(path)
    with s.write() as tx:
        tx.put(site())
    before = state_of(s)
    unencodable = cast(str, object())
    with pytest.raises(TypeError), s.write() as tx:
        tx.put(host("h-good"))
        tx.put(site(region="changed"))
        tx.put(Site(name=SiteName("bad"), tier=SiteTier.CORE, region="x", labels=(("k", unencodable),)))
        tx.event(event(reason="Lost"))
    assert s.revision == 1
    assert state_of(s) == before
    assert s.events() == []
    # The store is still usable and the next commit takes the next revision (no gap, no reuse).
    with s.write() as tx:
        tx.put(host("h2"))
    assert s.revision == 2
    s.close()
    again = Store(path)
    assert again.revision == 2
    assert again.host("h-good") is None
    assert again.site("paris") == before[Site]["paris"]
    assert again.host("h2") is not None and again.host("h2").revision == 2  # type: ignore[union-attr]
    again.close()


# -- restarts --------------------------------------------------------------------------------------


def test_reopening_gives_identical_objects_revision_and_events(tmp_path: Path) -> None:
    path = tmp_path / "grid.db"
    s = Store(path)
    for obj in every_kind():
        with s.write() as tx:
            tx.put(obj)
            tx.event(event(subject=str(type(obj).__name__)))
    with s.write() as tx:
        tx.delete(BootstrapToken, "tok-1")
    state, revision, evs = state_of(s), s.revision, s.events()
    s.close()
    again = Store(path)
    assert again.revision == revision == len(every_kind()) + 1
    assert state_of(again) == state
    assert again.get(BootstrapToken, "tok-1") is None
    assert again.events() == evs
    again.close()


Op = tuple[str, str, str]  # (put|delete|event, site name, region)
ops = st.tuples(st.sampled_from(["put", "delete", "event"]), st.sampled_from(["a", "b", "c"]),
                st.sampled_from(["eu", "us"]))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(ops, max_size=4), max_size=8))
def test_revision_counts_non_empty_transactions_and_survives_reopen(txs: list[list[Op]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "grid.db"
        s = Store(path)
        expected_rev = 0
        model: dict[str, Site] = {}  # what the store must hold, with the revision each site last changed at
        n_events = 0
        for changes in txs:
            with s.write() as tx:
                for kind, name, region in changes:
                    if kind == "put":
                        tx.put(site(name, region))
                    elif kind == "delete":
                        tx.delete(Site, name)
                    else:
                        tx.event(event(subject=name))
            if changes:
                expected_rev += 1
                for kind, name, region in changes:
                    if kind == "put":
                        model[name] = Site(name=SiteName(name), tier=SiteTier.FAR_EDGE, region=region,
                                           price_per_gpu_hour=(("L4", 0.8),), revision=expected_rev)
                    elif kind == "delete":
                        model.pop(name, None)
                    else:
                        n_events += 1
            assert s.revision == expected_rev
        assert {x.name: x for x in s.all(Site)} == model
        s.close()
        again = Store(path)
        assert again.revision == expected_rev
        assert {x.name: x for x in again.all(Site)} == model
        assert len(again.events(limit=1000)) == n_events
        again.close()


def test_the_database_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "grid.db"
    s = Store(path)
    with s.write() as tx:
        tx.put(site())
    # WAL mode is a property of the database file: a second, independent connection sees it.
    other = sqlite3.connect(path)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        other.close()
        s.close()


# -- events ----------------------------------------------------------------------------------------


@pytest.fixture
def with_events(store: Store) -> Store:
    """Revision 1: two gpr events for gpr-1; 2: a host event; 3: gpr-2's events and a gprs.* look-alike."""
    with store.write() as tx:
        tx.event(event("gpr.state", "gpr-1", "Submitted"))
        tx.event(event("gpr.state", "gpr-1", "Placed"))
    with store.write() as tx:
        tx.event(event("host.state", "h1", "Connected"))
    with store.write() as tx:
        tx.event(event("gpr.scaled", "gpr-2", "Scaled"))
        tx.event(event("gprs.other", "gpr-2", "LookAlike"))
        tx.event(event("gpr.state", "gpr-2", "Cancelled"))
    return store


def test_events_come_in_commit_order_with_seq_and_revision(with_events: Store) -> None:
    evs = with_events.events()
    assert [(e.reason, e.revision) for e in evs] == [
        ("Submitted", 1), ("Placed", 1), ("Connected", 2), ("Scaled", 3), ("LookAlike", 3), ("Cancelled", 3)]
    seqs = [e.seq for e in evs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and seqs[0] > 0


def test_events_page_by_after_seq(with_events: Store) -> None:
    everything = with_events.events()
    pages: list[list[Event]] = []
    after = 0
    while page := with_events.events(after_seq=after, limit=4):
        assert len(page) <= 4
        pages.append(page)
        after = page[-1].seq
    assert [len(p) for p in pages] == [4, 2]
    assert [e for p in pages for e in p] == everything


def test_events_page_newest_first_by_before_seq(with_events: Store) -> None:
    everything = with_events.events()
    pages: list[list[Event]] = []
    before = 0
    while page := with_events.events(newest_first=True, before_seq=before, limit=4):
        pages.append(page)
        before = page[-1].seq
    assert [len(p) for p in pages] == [4, 2]
    assert [e for p in pages for e in p] == everything[::-1]
    assert [e.reason for e in with_events.events(newest_first=True, subject="gpr-1")] == ["Placed", "Submitted"]


def test_since_revision_is_exclusive(with_events: Store) -> None:
    assert [e.reason for e in with_events.events(since_revision=1)] == ["Connected", "Scaled", "LookAlike",
                                                                        "Cancelled"]
    assert [e.reason for e in with_events.events(since_revision=2)] == ["Scaled", "LookAlike", "Cancelled"]
    assert with_events.events(since_revision=3) == []


def test_events_filter_by_subject_and_kind(with_events: Store) -> None:
    s = with_events
    assert [e.reason for e in s.events(subject="gpr-1")] == ["Submitted", "Placed"]
    assert [e.reason for e in s.events(kind="gpr.state")] == ["Submitted", "Placed", "Cancelled"]
    # A family is the kinds under a dotted prefix; "gprs.other" only looks alike.
    assert [e.reason for e in s.events(kind="gpr.*")] == ["Submitted", "Placed", "Scaled", "Cancelled"]
    assert [e.reason for e in s.events(kind="host.*")] == ["Connected"]
    assert s.events(kind="gpr") == []
    assert [e.reason for e in s.events(subject="gpr-2", kind="gpr.*", since_revision=2)] == ["Scaled", "Cancelled"]
    first = s.events(subject="gpr-2", kind="gpr.*", limit=1)
    assert [e.reason for e in s.events(subject="gpr-2", kind="gpr.*", after_seq=first[0].seq)] == ["Cancelled"]


# -- waiting for a change --------------------------------------------------------------------------


def test_wait_for_change_wakes_on_commit(store: Store) -> None:
    async def scenario() -> tuple[bool, bool]:
        waiter = asyncio.create_task(store.wait_for_change(store.revision, timeout=5))
        await asyncio.sleep(0.01)
        still_waiting = not waiter.done()
        with store.write() as tx:
            tx.put(site())
        return still_waiting, await asyncio.wait_for(waiter, 1)

    assert asyncio.run(scenario()) == (True, True)


def test_wait_for_change_waits_for_the_asked_revision(store: Store) -> None:
    # A commit that does not pass ``after_revision`` wakes the waiter, which must go back to waiting.
    async def scenario() -> tuple[bool, bool]:
        waiter = asyncio.create_task(store.wait_for_change(store.revision + 1, timeout=5))
        await asyncio.sleep(0.01)
        with store.write() as tx:
            tx.put(site("a"))
        await asyncio.sleep(0.01)
        after_one = waiter.done()
        with store.write() as tx:
            tx.put(site("b"))
        return after_one, await asyncio.wait_for(waiter, 1)

    assert asyncio.run(scenario()) == (False, True)


def test_wait_for_change_times_out_without_a_commit(store: Store) -> None:
    async def scenario() -> bool:
        with store.write():
            pass  # an empty transaction is not a change
        return await store.wait_for_change(store.revision, timeout=0.05)

    assert asyncio.run(scenario()) is False


def test_wait_for_change_returns_at_once_when_already_past(store: Store) -> None:
    with store.write() as tx:
        tx.put(site())

    async def scenario() -> bool:
        return await asyncio.wait_for(store.wait_for_change(0, timeout=None), 1)

    assert asyncio.run(scenario()) is True
