"""The agent's allocation reconciler (pure check/diff/apply) and the HostAgent over the simulator backend
and a real state directory: persisted before acknowledged, restored after a restart, rejected whole.
"""

from __future__ import annotations

import json
import random
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridmesh.agent import allocations
from gridmesh.agent.allocations import ForgetAllocation, RecordAllocation, check, diff
from gridmesh.agent.host import HostAgent, inventory_of
from gridmesh.agent.state import AppliedState, LocalState
from gridmesh.common.codec import decode
from gridmesh.common.model import (
    AllocationId,
    AllocationSpec,
    AllocationState,
    GprId,
    GpuUuid,
    HostId,
    HostSpec,
    Inventory,
    Workload,
    WorkspaceName,
)
from gridmesh.hw.model import GpuDevice, HostHardware
from gridmesh.hw.model import GpuUuid as HwGpuUuid
from gridmesh.hw.simulator import SimulatorBackend, simulated_uuid

HOST = HostId("edge-a1")

# -- the pure reconciler ---------------------------------------------------------------------------


def spec_of(alloc_id: str, indexes: Sequence[int], *, gpr: str = "gpr-1", replica: int = 0,
            uuids: Sequence[str] | None = None, workspace: str = "ran") -> AllocationSpec:
    return AllocationSpec(allocation_id=AllocationId(alloc_id), gpr_id=GprId(gpr), workspace=WorkspaceName(workspace),
                          replica=replica, gpu_indexes=tuple(indexes),
                          gpu_uuids=tuple(GpuUuid(u) for u in (uuids if uuids is not None else
                                                               [f"GPU-{i}" for i in indexes])))


allocation_specs = st.builds(
    spec_of,
    st.sampled_from([f"alloc-{c}" for c in "abcdef"]),
    st.lists(st.integers(0, 7), max_size=3),
    gpr=st.sampled_from(["gpr-1", "gpr-2"]),
    replica=st.integers(0, 2),
    workspace=st.sampled_from(["ran", "llm"]),
)


def unique(specs: list[AllocationSpec]) -> tuple[AllocationSpec, ...]:
    """At most one spec per allocation id (the last one wins), as a host's records are."""
    return tuple({s.allocation_id: s for s in specs}.values())


spec_sets = st.lists(allocation_specs, max_size=6).map(unique)


@settings(max_examples=200, deadline=None)
@given(spec_sets, spec_sets)
def test_applying_the_diff_reaches_the_desired_set_and_the_next_diff_is_empty(
    recorded: tuple[AllocationSpec, ...], desired: tuple[AllocationSpec, ...]
) -> None:
    want = HostSpec(host_id=HOST, revision=3, allocations=desired)
    after = allocations.apply(recorded, diff(want, recorded))
    assert set(after) == set(desired) and len(after) == len(desired)
    assert [a.allocation_id for a in after] == sorted(a.allocation_id for a in after)
    assert diff(want, after) == []


@settings(max_examples=200, deadline=None)
@given(spec_sets, spec_sets)
def test_the_diff_touches_only_what_differs(recorded: tuple[AllocationSpec, ...],
                                            desired: tuple[AllocationSpec, ...]) -> None:
    actions = diff(HostSpec(host_id=HOST, revision=1, allocations=desired), recorded)
    unchanged = set(recorded) & set(desired)
    forgotten = {a.allocation_id for a in actions if isinstance(a, ForgetAllocation)}
    recorded_now = {a.spec for a in actions if isinstance(a, RecordAllocation)}
    assert forgotten == {a.allocation_id for a in set(recorded) - unchanged}
    assert recorded_now == set(desired) - unchanged
    # Forgets come first, so a changed allocation is dropped and recorded anew, never the reverse.
    kinds = [isinstance(a, RecordAllocation) for a in actions]
    assert kinds == sorted(kinds)


@settings(max_examples=100, deadline=None)
@given(spec_sets, st.randoms(use_true_random=False))
def test_the_diff_of_equal_sets_is_empty_in_any_order(specs: tuple[AllocationSpec, ...],
                                                     rnd: random.Random) -> None:
    shuffled = list(specs)
    rnd.shuffle(shuffled)
    assert diff(HostSpec(host_id=HOST, revision=1, allocations=tuple(shuffled)), specs) == []


def test_the_diff_of_nothing_against_nothing_is_empty() -> None:
    assert diff(HostSpec(host_id=HOST, revision=0), ()) == []
    assert allocations.apply((), []) == ()


def test_actions_print_stably() -> None:
    a = spec_of("alloc-7", [2, 3], gpr="gpr-9", replica=1, workspace="llm")
    assert str(RecordAllocation(a)) == "record alloc-7 (llm/gpr-9 replica 1) on GPUs [2, 3]"
    assert str(ForgetAllocation(AllocationId("alloc-7"))) == "forget alloc-7"
    changed = spec_of("alloc-1", [0], gpr="gpr-1")
    actions = diff(HostSpec(host_id=HOST, revision=2, allocations=(a, changed)),
                   [spec_of("alloc-1", [1], gpr="gpr-1"), spec_of("alloc-0", [4])])
    assert [str(x) for x in actions] == [
        "forget alloc-0",
        "forget alloc-1",
        "record alloc-1 (ran/gpr-1 replica 0) on GPUs [0]",
        "record alloc-7 (llm/gpr-9 replica 1) on GPUs [2, 3]",
    ]


def test_statuses_report_every_record_as_running_with_its_devices() -> None:
    (s,) = allocations.statuses([spec_of("alloc-1", [0, 1])])
    assert (s.allocation_id, s.state, s.device_uuids) == ("alloc-1", AllocationState.RUNNING, ("GPU-0", "GPU-1"))


# -- check -----------------------------------------------------------------------------------------


def hardware(hostname: str = "edge-a1", gpus: int = 4) -> HostHardware:
    devices = tuple(GpuDevice(index=i, uuid=simulated_uuid(hostname, i, "L4"), model="L4", memory_mib=24576,
                              compute_capability="8.9", pci_bus_id=f"00000000:{i:02X}:00.0", numa_node=0,
                              mig_capable=False, mig_enabled=False) for i in range(gpus))
    return HostHardware(hostname=hostname, backend="simulator", gpus=devices, cpu_count=16, memory_mib=65536)


def inventory() -> Inventory:
    return inventory_of(hardware())


def uuid(i: int, hostname: str = "edge-a1") -> str:
    return str(simulated_uuid(hostname, i, "L4"))


def host_spec(*allocs: AllocationSpec, revision: int = 1) -> HostSpec:
    return HostSpec(host_id=HOST, revision=revision, allocations=allocs)


def test_check_accepts_a_spec_the_host_can_apply() -> None:
    ok = host_spec(spec_of("alloc-1", [0, 1], uuids=[uuid(0), uuid(1)]), spec_of("alloc-2", [3], uuids=[uuid(3)]))
    assert check(ok, inventory()) is None
    assert check(host_spec(), inventory()) is None


@pytest.mark.parametrize(("allocs", "message"), [
    pytest.param([spec_of("alloc-9", [4], uuids=["GPU-x"])],
                 "alloc-9: GPU 4 does not exist on this host (4 GPUs)", id="unknown-index"),
    pytest.param([spec_of("alloc-9", [-1], uuids=["GPU-x"])],
                 "alloc-9: GPU -1 does not exist on this host (4 GPUs)", id="negative-index"),
    pytest.param([spec_of("alloc-9", [1], uuids=[uuid(2)])],
                 f"alloc-9: GPU 1 is {uuid(1)}, not {uuid(2)}", id="uuid-mismatch"),
    pytest.param([spec_of("alloc-9", [1], uuids=[uuid(1, "other-host")])],
                 f"alloc-9: GPU 1 is {uuid(1)}, not {uuid(1, 'other-host')}", id="another-hosts-gpu"),
    pytest.param([spec_of("alloc-1", [0, 1], uuids=[uuid(0), uuid(1)]), spec_of("alloc-2", [1], uuids=[uuid(1)])],
                 "GPU 1 is given to both alloc-1 and alloc-2", id="given-twice"),
    pytest.param([spec_of("alloc-3", [2, 2], uuids=[uuid(2), uuid(2)])],
                 "GPU 2 is given to both alloc-3 and alloc-3", id="twice-in-one"),
    pytest.param([spec_of("alloc-4", [0, 1], uuids=[uuid(0)])],
                 "alloc-4: 2 GPU indexes but 1 UUIDs", id="length-mismatch"),
])
def test_check_rejects_and_names_the_allocation(allocs: list[AllocationSpec], message: str) -> None:
    assert check(host_spec(*allocs), inventory()) == message


# -- the HostAgent on the simulator ----------------------------------------------------------------

HOST_FILE = """
hostname = "edge-a1"
cpu_count = 16
memory_mib = 65536
[[gpus]]
model = "L4"
count = 2
[[gpus]]
model = "H100 80GB HBM3"
count = 2
"""


@pytest.fixture
def backend(tmp_path: Path) -> SimulatorBackend:
    path = tmp_path / "host.toml"
    path.write_text(HOST_FILE)
    return SimulatorBackend.from_file(path)


def sim_uuid(i: int) -> str:
    return str(simulated_uuid("edge-a1", i, "L4" if i < 2 else "H100 80GB HBM3"))


def alloc_on(alloc_id: str, *indexes: int, replica: int = 0) -> AllocationSpec:
    return spec_of(alloc_id, indexes, uuids=[sim_uuid(i) for i in indexes], replica=replica,
                   gpr=f"gpr-{alloc_id}")


def on_disk(state_dir: Path) -> tuple[HostSpec | None, AppliedState | None]:
    """What a restarted agent would read, read independently of LocalState."""
    d, a = state_dir / "desired.json", state_dir / "applied.json"
    return (decode(HostSpec, json.loads(d.read_text())) if d.exists() else None,
            decode(AppliedState, json.loads(a.read_text())) if a.exists() else None)


def test_the_agent_persists_what_it_acknowledges(tmp_path: Path, backend: SimulatorBackend) -> None:
    state_dir = tmp_path / "state"
    agent = HostAgent(HOST, backend, LocalState(state_dir))
    assert agent.desired == HostSpec(host_id=HOST, revision=0) and agent.applied == AppliedState()
    spec = host_spec(alloc_on("a1", 0), alloc_on("a2", 2, 3), revision=5)
    result = agent.apply(spec)
    assert (result.revision, result.accepted, result.reason) == (5, True, "")
    assert sorted((s.allocation_id, s.state) for s in result.statuses) == [
        ("a1", AllocationState.RUNNING), ("a2", AllocationState.RUNNING)]
    desired, applied = on_disk(state_dir)
    assert desired == spec
    assert applied == AppliedState(revision=5, allocations=(alloc_on("a1", 0), alloc_on("a2", 2, 3)))
    assert agent.applied == applied


def test_desired_is_persisted_even_when_recording_applied_fails(tmp_path: Path, backend: SimulatorBackend) -> None:
    # A directory where the applied state's temporary file goes makes that one write fail for real.
    state_dir = tmp_path / "state"
    agent = HostAgent(HOST, backend, LocalState(state_dir))
    (state_dir / ".applied.json.tmp").mkdir()
    spec = host_spec(alloc_on("a1", 1), revision=2)
    result = agent.apply(spec)
    assert result.accepted
    assert on_disk(state_dir) == (spec, None)
    (event,) = agent.take_events()
    assert (event.kind, event.reason, event.subject) == ("host.error", "StateWriteFailed", HOST)
    assert agent.take_events() == []
    # A restart re-applies the persisted desired state (static stability), now that the disk works.
    (state_dir / ".applied.json.tmp").rmdir()
    restarted = HostAgent(HOST, backend, LocalState(state_dir))
    assert restarted.desired == spec and restarted.applied == AppliedState()
    restarted.enforce_persisted()
    assert restarted.applied == AppliedState(revision=2, allocations=(alloc_on("a1", 1),))
    assert on_disk(state_dir)[1] == restarted.applied


def test_a_spec_that_cannot_be_persisted_is_rejected_and_not_applied(tmp_path: Path,
                                                                      backend: SimulatorBackend) -> None:
    state_dir = tmp_path / "state"
    agent = HostAgent(HOST, backend, LocalState(state_dir))
    first = host_spec(alloc_on("a1", 0), revision=1)
    assert agent.apply(first).accepted
    (state_dir / ".desired.json.tmp").mkdir()
    result = agent.apply(host_spec(alloc_on("a2", 1), revision=2))
    assert not result.accepted
    assert result.reason.startswith(f"cannot persist the desired state in {state_dir}")
    assert agent.desired == first
    assert agent.applied == AppliedState(revision=1, allocations=(alloc_on("a1", 0),))
    assert on_disk(state_dir)[0] == first


def test_a_new_agent_on_the_same_state_dir_restores_desired_and_applied(tmp_path: Path,
                                                                        backend: SimulatorBackend) -> None:
    state_dir = tmp_path / "state"
    agent = HostAgent(HOST, backend, LocalState(state_dir))
    agent.apply(host_spec(alloc_on("a1", 0), alloc_on("a2", 1), revision=3))
    agent.apply(host_spec(alloc_on("a2", 1), alloc_on("a3", 2, 3), revision=4))
    restarted = HostAgent(HOST, backend, LocalState(state_dir))
    assert restarted.desired == agent.desired
    assert restarted.applied == agent.applied
    assert restarted.statuses() == agent.statuses()
    # Re-enforcing at start-up changes nothing and reports the same.
    restarted.enforce_persisted()
    assert restarted.applied == agent.applied
    assert restarted.apply(agent.desired).statuses == agent.statuses()


def test_a_spec_naming_a_gpu_the_host_lacks_is_rejected_whole(tmp_path: Path, backend: SimulatorBackend) -> None:
    state_dir = tmp_path / "state"
    agent = HostAgent(HOST, backend, LocalState(state_dir))
    good = host_spec(alloc_on("a1", 0), revision=1)
    agent.apply(good)
    before = on_disk(state_dir)
    # a2 would fit; a3 names GPU 4 of a four-GPU host. Nothing of the spec may land.
    bad = host_spec(alloc_on("a2", 1), spec_of("a3", [4], uuids=["GPU-nope"]), revision=2)
    result = agent.apply(bad)
    assert (result.revision, result.accepted) == (2, False)
    assert result.reason == "a3: GPU 4 does not exist on this host (4 GPUs)"
    assert [s.allocation_id for s in result.statuses] == ["a1"]
    assert agent.desired == good
    assert agent.applied == AppliedState(revision=1, allocations=(alloc_on("a1", 0),))
    assert on_disk(state_dir) == before
    assert HostAgent(HOST, backend, LocalState(state_dir)).desired == good


def test_a_uuid_that_moved_is_rejected(tmp_path: Path, backend: SimulatorBackend) -> None:
    # The controller's view of the host is stale: its GPU 2 is not the GPU the host has at index 2.
    agent = HostAgent(HOST, backend, LocalState(tmp_path / "state"))
    result = agent.apply(host_spec(spec_of("a1", [2], uuids=[sim_uuid(0)])))
    assert not result.accepted and result.reason == f"a1: GPU 2 is {sim_uuid(2)}, not {sim_uuid(0)}"
    assert agent.applied == AppliedState()


def test_an_empty_spec_forgets_everything(tmp_path: Path, backend: SimulatorBackend) -> None:
    state_dir = tmp_path / "state"
    agent = HostAgent(HOST, backend, LocalState(state_dir))
    agent.apply(host_spec(alloc_on("a1", 0), alloc_on("a2", 1), revision=1))
    result = agent.apply(host_spec(revision=2))
    assert result.accepted and result.statuses == ()
    assert on_disk(state_dir) == (host_spec(revision=2), AppliedState(revision=2))


def test_the_agent_reports_the_simulated_inventory(backend: SimulatorBackend, tmp_path: Path) -> None:
    agent = HostAgent(HOST, backend, LocalState(tmp_path / "state"))
    inv = agent.inventory()
    assert [(g.index, g.model, g.uuid) for g in inv.gpus] == [
        (i, "L4" if i < 2 else "H100 80GB HBM3", sim_uuid(i)) for i in range(4)]
    assert (inv.hostname, inv.hw_backend, inv.cpu_count) == ("edge-a1", "simulator", 16)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.sets(st.integers(0, 3), min_size=1,
                                                                                   max_size=2)),
                         max_size=3), min_size=1, max_size=5))
def test_any_sequence_of_specs_ends_in_the_last_accepted_one_after_a_restart(
    rounds: list[list[tuple[str, set[int]]]],
) -> None:
    # Random specs, some of which give a GPU twice (rejected): after each round, and after a restart,
    # the agent holds exactly the last accepted spec.
    hw = HostHardware(hostname="edge-a1", backend="simulator", cpu_count=4, memory_mib=1024, gpus=tuple(
        GpuDevice(index=i, uuid=HwGpuUuid(sim_uuid(i)), model="L4", memory_mib=24576, compute_capability="8.9",
                  pci_bus_id="", numa_node=-1, mig_capable=False, mig_enabled=False) for i in range(4)))
    backend = SimulatorBackend(hw)
    with tempfile.TemporaryDirectory() as d:
        agent = HostAgent(HOST, backend, LocalState(Path(d)))
        last = AppliedState()
        for revision, allocs in enumerate(rounds, start=1):
            spec = host_spec(*unique([alloc_on(name, *sorted(gpus)) for name, gpus in allocs]), revision=revision)
            result = agent.apply(spec)
            taken = [i for a in spec.allocations for i in a.gpu_indexes]
            assert result.accepted == (len(taken) == len(set(taken)))
            if result.accepted:
                last = AppliedState(revision, tuple(sorted(spec.allocations, key=lambda a: a.allocation_id)))
            assert agent.applied == last
        restarted = HostAgent(HOST, backend, LocalState(Path(d)))
        assert restarted.applied == last
        assert restarted.desired.revision == last.revision
        assert {a.allocation_id for a in restarted.desired.allocations} == {a.allocation_id for a in last.allocations}


def test_workloads_survive_persistence(tmp_path: Path, backend: SimulatorBackend) -> None:
    state_dir = tmp_path / "state"
    a = AllocationSpec(allocation_id=AllocationId("a1"), gpr_id=GprId("g"), workspace=WorkspaceName("ran"), replica=0,
                       gpu_indexes=(0,), gpu_uuids=(GpuUuid(sim_uuid(0)),), mig_profile="",
                       workload=Workload(command=("python", "serve.py"), env=(("A", "1"),)))
    HostAgent(HOST, backend, LocalState(state_dir)).apply(host_spec(a))
    assert HostAgent(HOST, backend, LocalState(state_dir)).applied.allocations == (a,)
