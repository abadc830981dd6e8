"""The MIG planner: golden plans for the cases that matter, and the properties that must hold for any case.

Golden cases are tables of {layout on the GPU, wanted layout} -> {plan as text, what each key gets}, in the
Tailscale router-test style. The property test starts from any layout the simulator can reach (some
instances busy) and asks for any valid target: every plan is accepted by the simulator, keeps every busy
instance, and the next plan is empty.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridmesh.agent.mig import (
    CreateInstance,
    DestroyInstance,
    InstanceState,
    MigPlan,
    SetMigMode,
    WantedGpu,
    WantedInstance,
    observe,
    plan,
    reconcile,
)
from gridmesh.hw.mig import mig_table
from gridmesh.hw.model import GpuUuid, HardwareError
from gridmesh.hw.simulator import SimulatorBackend, parse_host_description

TABLE = mig_table("H100 80GB HBM3")
assert TABLE is not None
PROFILES = [p.name for p in TABLE.profiles]


def backend(mig_enabled: bool = True) -> SimulatorBackend:
    return SimulatorBackend(parse_host_description(
        {"hostname": "plan", "cpu_count": 8, "gpus": [{"model": "H100 80GB HBM3", "mig_enabled": mig_enabled}]},
        "t"))


def gpu_of(b: SimulatorBackend) -> GpuUuid:
    return b.inventory().gpus[0].uuid


def layout(b: SimulatorBackend, *instances: tuple[str, int, bool]) -> dict[int, str]:
    """Creates (profile, start, busy) instances; returns start -> MIG UUID."""
    gpu = gpu_of(b)
    made: dict[int, str] = {}
    for name, start, busy in instances:
        gi = b.create_instance(gpu, TABLE.profile(name).profile_id, start)  # type: ignore[union-attr]
        made[start] = gi.uuid
        if busy:
            b.host.start_process(gpu, 1000, mig_device=gi.uuid)
    return made


def render(b: SimulatorBackend, p: MigPlan) -> list[str]:
    gpu = gpu_of(b)
    lines = [str(a).replace(gpu, "GPU-0") for a in p.actions]
    lines += [f"{pr.key}: {pr.state.value}: {pr.reason.replace(gpu, 'GPU-0')}" for pr in p.problems]
    return lines


def wanted(b: SimulatorBackend, *instances: WantedInstance, mig: bool = True) -> list[WantedGpu]:
    return [WantedGpu(gpu_of(b), mig, tuple(instances))]


W = WantedInstance


@dataclass
class Case:
    name: str
    have: list[tuple[str, int, bool]]
    want: list[WantedInstance]
    plan: list[str]


CASES = [
    Case("an empty GPU gets the 3g.40gb where it leaves most room", [], [W("a", "3g.40gb")],
         ["create gi 3g.40gb at 4 on GPU-0"]),
    Case("big first, small ones beside it", [],
         [W("s1", "1g.10gb"), W("big", "3g.40gb"), W("s2", "1g.10gb")],
         ["create gi 1g.10gb at 0 on GPU-0", "create gi 3g.40gb at 4 on GPU-0", "create gi 1g.10gb at 1 on GPU-0"]),
    Case("explicit starts are used as given", [], [W("a", "3g.40gb", start=0), W("b", "1g.10gb", start=6)],
         ["create gi 3g.40gb at 0 on GPU-0", "create gi 1g.10gb at 6 on GPU-0"]),
    Case("matching idle instances are re-used, unwanted idle ones destroyed",
         [("1g.10gb", 5, False), ("2g.20gb", 0, False)], [W("a", "1g.10gb")],
         ["destroy gi 3 (2g.20gb at 0) on GPU-0"]),
    Case("an idle instance in the way is re-created where the whole target fits",
         [("3g.40gb", 0, False)], [W("a", "3g.40gb"), W("b", "4g.40gb")],
         ["destroy gi 1 (3g.40gb at 0) on GPU-0", "create gi 3g.40gb at 4 on GPU-0",
          "create gi 4g.40gb at 0 on GPU-0"]),
    Case("a busy instance nobody claims is kept, never re-used", [("1g.10gb", 0, True)], [W("a", "1g.10gb")],
         ["create gi 1g.10gb at 1 on GPU-0"]),
    Case("a busy instance blocking an explicit start makes it wait", [("1g.10gb", 5, True)],
         [W("a", "3g.40gb", start=4)],
         ["a: pending: 3g.40gb at 4 overlaps 1g.10gb at 5; waits for busy gi 12 (1g.10gb at 5) to be released"]),
    Case("what does not fit at all fails with why", [], [W("a", "4g.40gb"), W("b", "4g.40gb")],
         ["create gi 4g.40gb at 0 on GPU-0",
          "b: failed: no room for 4g.40gb: memory slices [0, 1, 2, 3] taken, 4 of 7 compute slices used"]),
    Case("unknown profiles and starts fail", [], [W("a", "5g.50gb"), W("b", "3g.40gb", start=2)],
         ["a: failed: GPU-0 has no MIG profile '5g.50gb'; it offers ['7g.80gb', '4g.40gb', '3g.40gb', "
          "'2g.20gb', '1g.20gb', '1g.10gb', '1g.10gb+me']",
          "b: failed: 3g.40gb cannot start at 2; allowed starts [0, 4]"]),
    Case("nothing wanted: idle instances go, busy ones stay", [("1g.10gb", 0, False), ("1g.10gb", 1, True)], [],
         ["destroy gi 7 (1g.10gb at 0) on GPU-0"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden_plans(case: Case) -> None:
    b = backend()
    layout(b, *case.have)
    p = plan(wanted(b, *case.want), observe(b, [gpu_of(b)]))
    assert render(b, p) == case.plan


def test_a_busy_instance_stays_with_the_key_that_holds_its_uuid() -> None:
    b = backend()
    made = layout(b, ("3g.40gb", 0, True), ("1g.10gb", 4, False))
    p = plan(wanted(b, W("mine", "3g.40gb", uuid=made[0]), W("new", "4g.40gb")), observe(b, [gpu_of(b)]))
    assert [(x.key, x.instance.uuid) for x in p.bindings] == [("mine", made[0])]
    assert render(b, p) == [
        "destroy gi 11 (1g.10gb at 4) on GPU-0",
        "new: failed: no room for 4g.40gb: memory slices [0, 1, 2, 3] taken, 3 of 7 compute slices used",
    ]


def test_mig_mode_changes_are_planned_and_never_forced() -> None:
    b = backend(mig_enabled=False)
    gpu = gpu_of(b)
    p = plan(wanted(b, W("a", "1g.10gb")), observe(b, [gpu]))
    assert p.actions == (SetMigMode(gpu, True),)
    assert render(b, p) == ["enable mig on GPU-0", "a: pending: MIG mode is being enabled"]

    pid = b.host.start_process(gpu)
    p = plan(wanted(b, W("a", "1g.10gb")), observe(b, [gpu]))
    assert p.actions == ()
    assert p.problems[0].state is InstanceState.PENDING
    assert "not forced" in p.problems[0].reason and str(pid) in p.problems[0].reason
    b.host.end_process(pid)

    b.set_mig_mode(gpu, True)
    p = plan(wanted(b, W("a", "1g.10gb")), observe(b, [gpu]))
    assert render(b, p) == ["a: pending: MIG mode enable waits for a GPU reset"]


def test_disabling_mig_destroys_idle_instances_first_and_waits_for_busy_ones() -> None:
    b = backend()
    layout(b, ("1g.10gb", 0, False), ("1g.10gb", 1, True))
    p = plan(wanted(b, mig=False), observe(b, [gpu_of(b)]))
    assert render(b, p) == ["destroy gi 7 (1g.10gb at 0) on GPU-0"]
    assert any("not forced" in n for n in p.notes)

    b2 = backend()
    layout(b2, ("1g.10gb", 0, False))
    p = plan(wanted(b2, mig=False), observe(b2, [gpu_of(b2)]))
    assert render(b2, p) == ["destroy gi 7 (1g.10gb at 0) on GPU-0", "disable mig on GPU-0"]


def test_action_text_is_stable() -> None:
    gpu = GpuUuid("GPU-5c1f1b2e-6a0d-4c5e-9b7a-3d2f8e1a9c40")
    assert str(CreateInstance(gpu, "3g.40gb", 9, 4, "k")) == f"create gi 3g.40gb at 4 on {gpu}"
    assert str(DestroyInstance(gpu, 2, "3g.40gb", 4)) == f"destroy gi 2 (3g.40gb at 4) on {gpu}"
    assert str(SetMigMode(gpu, False)) == f"disable mig on {gpu}"


# --- the property ------------------------------------------------------------------------------------------------

# Small profiles more often than big ones (a 7g.80gb fills the GPU and ends the story); starts from each
# profile's allowed starts, plus the odd invalid one the simulator must refuse.
WEIGHTED = ["1g.10gb"] * 4 + ["1g.20gb"] * 2 + ["2g.20gb"] * 2 + ["3g.40gb"] * 2 + ["4g.40gb", "7g.80gb",
                                                                                   "1g.10gb+me"]
attempt = st.sampled_from(WEIGHTED).flatmap(
    lambda name: st.tuples(st.just(name), st.sampled_from(TABLE.profile(name).starts) | st.integers(0, 7)))  # type: ignore[union-attr]
attempts = st.lists(attempt, max_size=10)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[tuple[str, int]], list[bool], list[tuple[str, int, bool]], list[int]]:
    """A reachable layout (what the simulator accepted of random creates), which of it is busy, a valid target
    (what an empty GPU accepted of other random creates) with explicit starts or not, and which busy
    instances the target claims by UUID (a tenant still running)."""
    have = draw(attempts)
    busy = draw(st.lists(st.booleans(), min_size=len(have), max_size=len(have)))
    target = draw(attempts)
    explicit = draw(st.lists(st.booleans(), min_size=len(target), max_size=len(target)))
    claims = draw(st.lists(st.integers(0, 8), max_size=3))
    return have, busy, [(n, s, e) for (n, s), e in zip(target, explicit, strict=True)], claims


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_any_plan_is_accepted_keeps_busy_instances_and_converges(
    scenario: tuple[list[tuple[str, int]], list[bool], list[tuple[str, int, bool]], list[int]],
) -> None:
    have, busy, target, claims = scenario
    b = backend()
    gpu = gpu_of(b)
    existing = []
    for (name, start), is_busy in zip(have, busy, strict=True):
        try:
            gi = b.create_instance(gpu, TABLE.profile(name).profile_id, start)  # type: ignore[union-attr]
        except HardwareError:
            continue  # not reachable: the simulator refused it
        existing.append(gi)
        if is_busy:
            b.host.start_process(gpu, 100, mig_device=gi.uuid)
    busy_uuids = {gi.uuid for gi in existing if b.host.mig_device(gi.uuid) and
                  any(p.gpu_instance_id == gi.gpu_instance_id for p in b.processes(gpu))}

    scratch = backend()
    valid: list[WantedInstance] = []
    for i, (name, start, explicit) in enumerate(target):
        try:
            scratch.create_instance(gpu_of(scratch), TABLE.profile(name).profile_id, start)  # type: ignore[union-attr]
        except HardwareError:
            continue
        valid.append(W(f"t{i}", name, start if explicit else None))
    busy_list = sorted(busy_uuids)
    for n, c in enumerate(claims):
        if c < len(busy_list):
            gi = next(g for g in existing if g.uuid == busy_list[c])
            valid.append(W(f"claim{n}", gi.profile, None, gi.uuid))
    want = [WantedGpu(gpu, True, tuple(valid))]

    first = plan(want, observe(b, [gpu]))
    keys = [w.key for w in valid]
    placed = ([x.key for x in first.bindings] + [a.key for a in first.actions if isinstance(a, CreateInstance)]
              + [p.key for p in first.problems])
    assert sorted(placed) == sorted(keys)  # every key: bound, created or explained, exactly once

    report = reconcile(b, want)
    assert all(r.ok for r in report.actions), [str(r) for r in report.actions if not r.ok]  # the simulator accepts
    after = {gi.uuid for gi in b.mig_state(gpu).instances}
    assert busy_uuids <= after  # every busy instance kept
    assert report.remaining == ()  # the next plan is empty
    ready = [r for r in report.instances if r.state is InstanceState.READY]
    assert len({r.uuid for r in ready}) == len(ready) and {r.uuid for r in ready} <= after
    for r, w in zip(report.instances, valid, strict=True):
        if r.state is InstanceState.READY and w.start is not None:
            assert r.start == w.start
    # With nothing busy in the way, any valid target is reached whole.
    if not busy_uuids:
        assert all(r.state is InstanceState.READY for r in report.instances), [str(r) for r in report.instances]
    # Reconciling again changes nothing and gives every key the same device.
    again = reconcile(b, [WantedGpu(gpu, True, tuple(
        W(w.key, w.profile, w.start, report.uuid_of(w.key) or w.uuid) for w in valid))])
    assert again.actions == ()
    assert [r.uuid for r in again.instances] == [r.uuid for r in report.instances]


mode_states = st.sampled_from(["off", "on", "off->on", "on->off"])


@settings(max_examples=60, deadline=None)
@given(mode_states, st.booleans(), st.booleans(), st.lists(st.tuples(st.sampled_from(PROFILES), st.integers(0, 7)),
                                                             max_size=4))
def test_any_mode_change_plan_is_accepted_and_converges(
    mode: str, want_on: bool, busy: bool, have: list[tuple[str, int]]
) -> None:
    b = backend(mig_enabled=mode in ("on", "on->off"))
    gpu = gpu_of(b)
    if mode == "on":
        for name, start in have:
            try:
                gi = b.create_instance(gpu, TABLE.profile(name).profile_id, start)  # type: ignore[union-attr]
            except HardwareError:
                continue
            if busy:
                b.host.start_process(gpu, 10, mig_device=gi.uuid)
                busy = False
    elif mode == "off->on":
        b.set_mig_mode(gpu, True)
    elif mode == "on->off":
        b.set_mig_mode(gpu, False)
    if busy and mode == "off":
        b.host.start_process(gpu, 10)
    want = [WantedGpu(gpu, want_on, (W("a", "1g.10gb"),) if want_on else ())]
    report = reconcile(b, want)
    assert all(r.ok for r in report.actions), [str(r) for r in report.actions]
    assert report.remaining == ()
