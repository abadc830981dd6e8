"""MIG-aware packing: the scheduler's profile tables against the hardware reading, the placement rules,
the smallest profile for a fraction, and the engine packing instances where the real rules allow.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from gridmesh.common.model import GpuUuid, PriorityTier, WorkspaceName
from gridmesh.controller.model import Workspace
from gridmesh.controller.scheduler import explain, mig, plan, violations
from gridmesh.controller.scheduler import harness as h
from gridmesh.controller.scheduler.types import MigSlot
from gridmesh.hw import mig as hw_mig
from gridmesh.hw.catalog import hardware_reading

# -- the tables ------------------------------------------------------------------------------------------


def test_the_h100_constants_equal_the_reading_from_a_real_card() -> None:
    reading = hardware_reading("H100 80GB HBM3")
    assert reading is not None
    assert reading["memory_slices"] == mig.MEMORY_SLICES and reading["compute_slices"] == mig.COMPUTE_SLICES
    read = {(p["name"], p["profile_id"], p["slice_count"], p["placement_size"], p["memory_mib"],
             tuple(p["placement_starts"]), p["max_instances"]) for p in reading["gpu_instance_profiles"]}
    ours = {(p.name, p.profile_id, p.compute_slices, p.size, p.memory_mib, p.starts, p.max_instances)
            for p in mig.H100_80GB.profiles}
    assert ours == read
    assert mig.H100_80GB.read_from_hardware


@pytest.mark.parametrize("table", mig.TABLES, ids=lambda t: t.name)
def test_every_table_agrees_with_the_hw_layers_own_tables(table: mig.MigTable) -> None:
    # Two implementations of the same facts (the agent's MIG planner uses gridmesh.hw.mig).
    theirs = hw_mig.mig_table(table.name)
    assert theirs is not None
    assert {(p.name, p.profile_id, p.compute_slices, p.size, p.starts, p.max_instances, p.memory_mib)
            for p in table.profiles} == {(p.name, p.profile_id, p.compute_slices, p.size, p.starts, p.max_instances,
                                          p.memory_mib) for p in theirs.profiles}
    assert table.read_from_hardware == theirs.read_from_hardware


def test_documented_tables_are_marked_so_and_use_the_guides_names() -> None:
    assert not mig.A100_40GB.read_from_hardware and "not read" in mig.A100_40GB.source
    assert [p.name for p in mig.A100_40GB.profiles] == ["7g.40gb", "4g.20gb", "3g.20gb", "2g.10gb", "1g.10gb",
                                                        "1g.5gb", "1g.5gb+me"]
    assert [p.name for p in mig.H200_141GB.profiles][:2] == ["7g.141gb", "4g.71gb"]
    assert mig.table_for("NVIDIA H100 80GB HBM3") is mig.H100_80GB
    assert mig.table_for("L4") is None


# -- placement rules (hw-facts) ---------------------------------------------------------------------------

P = {p.name: p for p in mig.H100_80GB.profiles}


def fill(profile: mig.MigProfile, mask: int, compute: int) -> int:
    """How many instances of ``profile`` still fit, placing each at the first free start."""
    n = 0
    while (starts := mig.starts_free(profile, mask, compute, False)):
        mask |= mig.slot_mask(starts[0], profile.size)
        compute += profile.compute_slices
        n += 1
    return n


def test_a_3g_at_start_0_leaves_three_1g_and_at_start_4_leaves_four() -> None:
    three = P["3g.40gb"]
    assert fill(P["1g.10gb"], mig.slot_mask(0, 4), three.compute_slices) == 3
    assert fill(P["1g.10gb"], mig.slot_mask(4, 4), three.compute_slices) == 4
    # So the planner puts a 3g.40gb on an empty GPU at start 4, never stranding a slice.
    assert mig.best_start(three, 0, 0, False) == 4


@pytest.mark.parametrize(("profile", "mask", "compute", "me", "starts"), [
    ("7g.80gb", 0, 0, False, [0]),
    ("7g.80gb", mig.slot_mask(7, 1), 0, False, []),
    ("4g.40gb", mig.slot_mask(4, 4), 3, False, [0]),
    ("2g.20gb", mig.slot_mask(0, 2), 1, False, [2, 4]),  # never at 6: not an allowed start
    ("1g.20gb", 0, 0, False, [0, 2, 4, 6]),
    ("1g.10gb", mig.slot_mask(0, 7), 7, False, []),  # slice 7 is free but compute is spent
    ("1g.10gb+me", 0, 1, True, []),  # only one +me per GPU
])
def test_allowed_starts_follow_overlap_compute_and_limits(profile: str, mask: int, compute: int, me: bool,
                                                          starts: list[int]) -> None:
    assert mig.starts_free(P[profile], mask, compute, me) == starts


@pytest.mark.parametrize(("fraction", "min_memory", "expected"), [
    (0.1, 0, "1g.10gb"), (0.125, 0, "1g.10gb"), (0.2, 0, "2g.20gb"), (0.25, 0, "2g.20gb"), (0.3, 0, "3g.40gb"),
    (0.5, 0, "4g.40gb"), (0.9, 0, "7g.80gb"), (0.1, 15000, "1g.20gb"),
])
def test_a_fraction_gets_the_smallest_profile_with_that_much_compute_and_memory(fraction: float, min_memory: int,
                                                                                expected: str) -> None:
    got = mig.profile_for(mig.H100_80GB, "", fraction, min_memory)
    assert got is not None and got.name == expected


# -- the engine ---------------------------------------------------------------------------------------------


def test_instances_pack_onto_one_gpu_where_the_rules_allow_and_spill_to_the_next() -> None:
    host = h.host("h1", gpus=2, mig_enabled=True)
    pending = [h.gpr("big", mig_profile="3g.40gb", priority=90)] + [
        h.gpr(f"small{i}", mig_profile="1g.10gb", priority=50, created_at=i) for i in range(5)]
    snap = h.snapshot([host], pending)
    result = plan(snap)
    assert violations(snap, result) == []
    slots = {str(p.gpr_id): p.mig_slots[0] for p in result.placements}
    assert (slots["big"].gpu_index, slots["big"].start) == (0, 4)
    # Four 1g.10gb fill starts 0-3 beside it (the fullest GPU first), the fifth goes to the other GPU.
    assert sorted((s.gpu_index, s.start) for n, s in slots.items() if n != "big") == [(0, 0), (0, 1), (0, 2), (0, 3),
                                                                                      (1, 0)]


def test_existing_instances_are_respected_and_an_idle_one_of_the_profile_is_reused() -> None:
    host = h.host("h1", gpus=[h.gpu("h1", 0, mig_enabled=True, instances=[("3g.40gb", 4), ("1g.10gb", 2)])])
    owner = h.running(h.gpr("owner", mig_profile="3g.40gb"), 0.0)
    taken = h.allocation(owner, host, [0], mig_profile="3g.40gb")
    slot = MigSlot(GpuUuid("GPU-h1-0"), 0, "3g.40gb", 4, 4, 3)
    snap = h.snapshot([host], [h.gpr(mig_profile="1g.10gb")], allocations=[taken], gprs=[owner],
                      allocation_mig={taken.id: (slot,)})
    (p,) = plan(snap).placements
    assert p.mig_slots[0].start == 2  # the idle 1g.10gb at start 2 is used as it is
    assert p.mig_profile == "1g.10gb" and p.gpu_equivalents == pytest.approx(1 / 7)


def test_a_mig_allocation_without_recorded_slots_is_found_by_its_instances_or_takes_the_gpu() -> None:
    host = h.host("h1", gpus=[h.gpu("h1", 0, mig_enabled=True, instances=[("4g.40gb", 0)])])
    owner = h.running(h.gpr("owner", mig_profile="4g.40gb"), 0.0)
    found = replace(h.allocation(owner, host, [0], mig_profile="4g.40gb"), device_uuids=("MIG-GPU-h1-0-0",))
    (p,) = plan(h.snapshot([host], [h.gpr(mig_profile="3g.40gb")], allocations=[found], gprs=[owner])).placements
    assert p.mig_slots[0].start == 4
    unknown = h.allocation(owner, host, [0], mig_profile="4g.40gb")  # nothing says where: the GPU is taken
    assert plan(h.snapshot([host], [h.gpr(mig_profile="1g.10gb")], allocations=[unknown],
                           gprs=[owner])).placements == ()


def test_several_instances_of_one_replica_go_on_distinct_gpus_of_one_host() -> None:
    host = h.host("h1", gpus=3, mig_enabled=True)
    (p,) = plan(h.snapshot([host], [h.gpr(mig_profile="2g.20gb", count=2)])).placements
    assert len({s.gpu_uuid for s in p.mig_slots}) == 2 and p.gpu_indexes == tuple(s.gpu_index for s in p.mig_slots)


def test_a_fraction_lands_on_every_model_with_the_profile_that_model_calls_it() -> None:
    hosts = [h.host("a", gpus=[h.gpu("a", 0, h.A100_40, mig_enabled=True)])]
    (p,) = plan(h.snapshot(hosts, [h.gpr(fraction=0.25)])).placements
    assert p.mig_profile == "2g.10gb"


def test_explain_offers_a_smaller_profile_that_fits_now() -> None:
    host = h.host("h1", gpus=1, mig_enabled=True)
    owner = h.running(h.gpr("owner", mig_profile="4g.40gb", tier=PriorityTier.HIGH), 0.0)
    taken = h.allocation(owner, host, [0], mig_profile="4g.40gb")
    snap = h.snapshot([host], [h.gpr(mig_profile="4g.40gb")], allocations=[taken], gprs=[owner],
                      allocation_mig={taken.id: (MigSlot(GpuUuid("GPU-h1-0"), 0, "4g.40gb", 0, 4, 4),)},
                      workspaces=(Workspace(name=WorkspaceName("ws")),))
    e = explain(snap, snap.pending[0])
    kinds = {a.kind: a for a in e.alternatives}
    assert kinds["mig_profile"].mig_profile == "3g.40gb"
    assert e.exclusions[0].constraint == "gpu_count"
