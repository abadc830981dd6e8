"""The MIG reconciler: make each managed GPU's MIG mode and instances what the allocations want.

observe (backend) -> plan (pure) -> apply (backend) -> observe again -> report.

Vocabulary:
- A *wanted instance* is a key (the caller's name for it, e.g. an allocation and GPU), a profile name, an
  optional explicit start (the controller's chosen placement), and optionally the MIG UUID that key was
  given before. A *wanted GPU* lists the wanted instances of one GPU and whether MIG should be on. GPUs
  not listed are not touched.
- The answer is, per wanted instance, READY with the MIG device UUID (so allocations name exact devices),
  PENDING with why (a MIG-mode change waiting for a reset, a busy GPU), or FAILED with why (the error the
  driver gave, no room, a profile the GPU lacks). Errors are results, never exceptions, and never dropped.

Rules the planner keeps (and the property tests hold it to):
- It never destroys or re-uses a *busy* instance (one with processes) that is not bound to the key asking
  for it by UUID: a busy instance no wanted key owns belongs to an evicted tenant whose process is still
  there, and it stays until the health check sees it clean. A busy instance is bound only by UUID, so
  pass back the UUIDs this module returned.
- It never destroys an instance a wanted key is bound to. It destroys idle instances nobody wants.
- Explicit starts are used as given. Other instances get the starts that leave the most room afterwards
  (``gridmesh.hw.mig.pack``: the largest profiles still possible, then the most small ones), so a 3g.40gb
  goes to start 4 and leaves room for four 1g.10gb, not three.
- A MIG-mode change on a GPU with processes is reported as pending, never forced; a change the driver
  accepted waits for a GPU reset, which gridmesh never does. Disabling MIG destroys idle instances first
  and waits while busy ones remain.
- Actions are small frozen values with a stable ``__str__`` (``create gi 3g.40gb at 4 on GPU-…``), applied in
  order: destroys, mode change, creates. A failed action stops the remaining actions on that GPU only.
- After ``apply`` the next plan against the new observation is empty (a property test checks this from any
  reachable layout to any valid target).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from gridmesh.common.model import AllocationSpec
from gridmesh.hw.backend import HealthBackend, MigBackend
from gridmesh.hw.mig import MigProfile, MigTable, Placed, occupied, pack, pack_most, why_not
from gridmesh.hw.model import (
    GpuInstance,
    GpuProcess,
    GpuUuid,
    HardwareError,
    MigState,
    MigUuid,
    NotFoundError,
    NotSupportedError,
)

NO_DEVICE = MigUuid("")
"""The MIG UUID of an instance that is not ready."""


class MigHost(MigBackend, HealthBackend, Protocol):
    """What the reconciler needs of a backend: MIG control, and processes to know what is busy."""


# --- what is wanted, what is observed ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WantedInstance:
    key: str
    profile: str
    start: int | None = None
    uuid: str = ""
    """The MIG UUID this key was given before: keeps its instance bound across reconciles (and restarts)."""


@dataclass(frozen=True, slots=True)
class WantedGpu:
    gpu: GpuUuid
    mig_enabled: bool = True
    instances: tuple[WantedInstance, ...] = ()


@dataclass(frozen=True, slots=True)
class ObservedGpu:
    """One GPU as read: its MIG state, profile table and processes; ``error`` when it could not be read."""

    gpu: GpuUuid
    state: MigState | None
    table: MigTable | None = None
    processes: tuple[GpuProcess, ...] = ()
    error: str = ""

    def pids_in(self, gpu_instance_id: int) -> tuple[int, ...]:
        return tuple(p.pid for p in self.processes if p.gpu_instance_id == gpu_instance_id)


# --- actions ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetMigMode:
    gpu: GpuUuid
    enabled: bool

    def __str__(self) -> str:
        return f"{'enable' if self.enabled else 'disable'} mig on {self.gpu}"


@dataclass(frozen=True, slots=True)
class DestroyInstance:
    gpu: GpuUuid
    gpu_instance_id: int
    profile: str
    start: int

    def __str__(self) -> str:
        return f"destroy gi {self.gpu_instance_id} ({self.profile} at {self.start}) on {self.gpu}"


@dataclass(frozen=True, slots=True)
class CreateInstance:
    gpu: GpuUuid
    profile: str
    profile_id: int
    start: int
    key: str

    def __str__(self) -> str:
        return f"create gi {self.profile} at {self.start} on {self.gpu}"


MigAction = SetMigMode | DestroyInstance | CreateInstance


class InstanceState(enum.Enum):
    READY = "ready"
    PENDING = "pending"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Binding:
    """An existing instance that serves a wanted key."""

    key: str
    instance: GpuInstance


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a wanted instance is not ready and will not be made by this plan."""

    key: str
    gpu: GpuUuid
    state: InstanceState
    reason: str


@dataclass(frozen=True, slots=True)
class MigPlan:
    """Every wanted key is in exactly one of: ``bindings``, a ``CreateInstance`` in ``actions``, ``problems``."""

    actions: tuple[MigAction, ...] = ()
    bindings: tuple[Binding, ...] = ()
    problems: tuple[Problem, ...] = ()
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        return "\n".join(str(a) for a in self.actions) if self.actions else "no changes"


# --- the planner (pure) -----------------------------------------------------------------------------------------


def plan(wanted: Sequence[WantedGpu], observed: Mapping[GpuUuid, ObservedGpu]) -> MigPlan:
    """The actions that make the observed GPUs what ``wanted`` asks; pure."""
    actions: list[MigAction] = []
    bindings: list[Binding] = []
    problems: list[Problem] = []
    notes: list[str] = []
    for w in wanted:
        part = _plan_gpu(w, observed.get(w.gpu))
        actions += part.actions
        bindings += part.bindings
        problems += part.problems
        notes += part.notes
    return MigPlan(tuple(actions), tuple(bindings), tuple(problems), tuple(notes))


def _plan_gpu(w: WantedGpu, o: ObservedGpu | None) -> MigPlan:
    problems: list[Problem] = []

    def every(state: InstanceState, reason: str) -> tuple[Problem, ...]:
        return tuple(Problem(i.key, w.gpu, state, reason) for i in w.instances)

    if o is None or o.state is None:
        why = o.error if o is not None and o.error else f"{w.gpu} is not on this host"
        return MigPlan(problems=every(InstanceState.FAILED, f"cannot read the GPU's MIG state: {why}"))
    st = o.state
    if not st.capable:
        return MigPlan(problems=every(InstanceState.FAILED, f"{w.gpu} does not support MIG"))
    busy_pids = sorted(p.pid for p in o.processes)

    if not w.mig_enabled:
        if w.instances:
            problems += every(InstanceState.FAILED, "instances are wanted on a GPU whose MIG mode is to be off")
        return _plan_disable(w.gpu, st, o, busy_pids, problems)

    if not st.enabled:
        if st.pending:
            return MigPlan(problems=every(InstanceState.PENDING, "MIG mode enable waits for a GPU reset"),
                           notes=(f"{w.gpu}: MIG mode enable waits for a GPU reset",))
        if busy_pids:
            why = f"MIG mode cannot be enabled while processes run on the GPU (pids {busy_pids}); not forced"
            return MigPlan(problems=every(InstanceState.PENDING, why), notes=(f"{w.gpu}: {why}",))
        return MigPlan(actions=(SetMigMode(w.gpu, True),),
                       problems=every(InstanceState.PENDING, "MIG mode is being enabled"))

    actions: list[MigAction] = []
    if not st.pending:
        # Enabled now, a disable waits for a reset: asking for the mode in effect cancels it (no reset needed).
        actions.append(SetMigMode(w.gpu, True))
    if o.table is None:
        return MigPlan(actions=tuple(actions),
                       problems=every(InstanceState.FAILED, f"no MIG profile table is known for {w.gpu}"))
    part = _plan_instances(w, o, o.table)
    return MigPlan(actions=(*[a for a in part.actions if isinstance(a, DestroyInstance)], *actions,
                            *[a for a in part.actions if not isinstance(a, DestroyInstance)]),
                   bindings=part.bindings, problems=part.problems, notes=part.notes)


def _plan_disable(gpu: GpuUuid, st: MigState, o: ObservedGpu, busy_pids: list[int],
                  problems: list[Problem]) -> MigPlan:
    if not st.enabled:
        # Off now; an enable waiting for a reset is cancelled by asking for the mode in effect.
        return MigPlan(actions=(SetMigMode(gpu, False),) if st.pending else (), problems=tuple(problems))
    actions: list[MigAction] = []
    notes: list[str] = []
    kept = []
    for gi in st.instances:
        pids = o.pids_in(gi.gpu_instance_id)
        if pids:
            kept.append(gi)
            notes.append(f"{gpu}: kept {gi}: busy (pids {list(pids)}) while MIG is to be disabled")
        else:
            actions.append(DestroyInstance(gpu, gi.gpu_instance_id, gi.profile, gi.start))
    if kept or busy_pids:
        notes.append(f"{gpu}: MIG mode cannot be disabled while processes run (pids {busy_pids}); not forced")
    elif st.pending:
        actions.append(SetMigMode(gpu, False))
    else:
        notes.append(f"{gpu}: MIG mode disable waits for a GPU reset")
    return MigPlan(actions=tuple(actions), problems=tuple(problems), notes=tuple(notes))


def _plan_instances(w: WantedGpu, o: ObservedGpu, table: MigTable) -> MigPlan:
    assert o.state is not None
    problems: list[Problem] = []
    notes: list[str] = []
    valid: list[tuple[WantedInstance, MigProfile]] = []
    for wi in w.instances:
        profile = table.profile(wi.profile)
        if profile is None:
            problems.append(Problem(wi.key, w.gpu, InstanceState.FAILED,
                                    f"{w.gpu} has no MIG profile {wi.profile!r}; it offers {list(table.names())}"))
        elif wi.start is not None and wi.start not in profile.starts:
            problems.append(Problem(wi.key, w.gpu, InstanceState.FAILED,
                                    f"{profile.name} cannot start at {wi.start}; allowed starts "
                                    f"{list(profile.starts)}"))
        else:
            valid.append((wi, profile))

    # Instances without a compute instance have no MIG device to give anyone; they are never bound.
    usable = [gi for gi in o.state.instances if gi.uuid]
    bound: dict[str, GpuInstance] = {}
    used: set[int] = set()

    def take(wi: WantedInstance, gi: GpuInstance) -> None:
        bound[wi.key] = gi
        used.add(gi.gpu_instance_id)

    def fits(wi: WantedInstance, gi: GpuInstance) -> bool:
        return (gi.gpu_instance_id not in used and gi.profile == wi.profile
                and (wi.start is None or gi.start == wi.start))

    # 1. By UUID: the instance this key already has, busy or not.
    for wi, _ in valid:
        if wi.uuid:
            gi = next((g for g in usable if g.uuid == wi.uuid and fits(wi, g)), None)
            if gi is not None:
                take(wi, gi)
    # 2. An explicit start with an idle instance of the profile already there. (Busy instances are bound only
    #    by UUID: one nobody claims belongs to an evicted tenant whose process is still running.)
    for wi, _ in valid:
        if wi.key not in bound and wi.start is not None:
            gi = next((g for g in usable if fits(wi, g) and not o.pids_in(g.gpu_instance_id)), None)
            if gi is not None:
                take(wi, gi)

    kept: list[GpuInstance] = []
    for gi in o.state.instances:
        pids = o.pids_in(gi.gpu_instance_id)
        if gi.gpu_instance_id not in used and pids:
            kept.append(gi)
            notes.append(f"{w.gpu}: kept {gi}: not wanted but busy (pids {list(pids)}); not destroyed")
    idle = [g for g in usable if g.gpu_instance_id not in used and not o.pids_in(g.gpu_instance_id)]

    def placed(instances: Iterable[GpuInstance]) -> list[Placed]:
        result = []
        for gi in instances:
            profile = table.profile(gi.profile_id)
            if profile is not None:
                result.append(Placed(profile, gi.start))
        return result

    owned = placed(bound.values())
    fixed = owned + placed(kept)
    todo = [(wi, profile) for wi, profile in valid if wi.key not in bound]
    # 3. Everything else is placed in one search that prefers the positions of idle instances (re-used rather
    #    than re-created) but never places fewer for it, so an idle instance in the wrong spot cannot block
    #    a layout that fits once it is gone.
    starts = pack_most(table, fixed, [(profile, wi.start) for wi, profile in todo],
                       prefer={(g.profile_id, g.start) for g in idle})
    creates: list[MigAction] = []
    made: list[Placed] = []
    for (wi, profile), start in zip(todo, starts, strict=True):
        if start is None:
            continue
        reuse = next((g for g in idle if g.gpu_instance_id not in used and g.profile_id == profile.profile_id
                      and g.start == start), None)
        if reuse is not None:
            take(wi, reuse)
        else:
            creates.append(CreateInstance(w.gpu, profile.name, profile.profile_id, start, wi.key))
            made.append(Placed(profile, start))
    destroys: list[MigAction] = [DestroyInstance(w.gpu, gi.gpu_instance_id, gi.profile, gi.start)
                                 for gi in o.state.instances
                                 if gi.gpu_instance_id not in used and not o.pids_in(gi.gpu_instance_id)]
    owned = placed(bound.values())
    fixed = owned + placed(kept)
    for (wi, profile), start in zip(todo, starts, strict=True):
        if start is not None:
            continue
        beside = fixed + made
        if wi.start is not None:
            reason = why_not(table, beside, profile, wi.start) or f"{profile.name} does not fit at {wi.start}"
        else:
            taken = [i for i in range(table.memory_slices) if occupied(beside) >> i & 1]
            compute = sum(p.profile.compute_slices for p in beside)
            reason = (f"no room for {profile.name}: memory slices {taken} taken, {compute} of "
                      f"{table.compute_slices} compute slices used")
        if kept and pack(table, owned + made, [(profile, wi.start)]) is not None:
            blockers = ", ".join(str(gi) for gi in kept)
            problems.append(Problem(wi.key, w.gpu, InstanceState.PENDING,
                                    f"{reason}; waits for busy {blockers} to be released"))
        else:
            problems.append(Problem(wi.key, w.gpu, InstanceState.FAILED, reason))

    return MigPlan(actions=tuple(destroys) + tuple(creates),
                   bindings=tuple(Binding(k, gi) for k, gi in bound.items()),
                   problems=tuple(problems), notes=tuple(notes))


# --- observe and apply (I/O) ------------------------------------------------------------------------------------


def observe(backend: MigHost, gpus: Iterable[GpuUuid]) -> dict[GpuUuid, ObservedGpu]:
    """Read each GPU's MIG state, table and processes. A GPU that cannot be read says why."""
    result: dict[GpuUuid, ObservedGpu] = {}
    for gpu in gpus:
        try:
            state = backend.mig_state(gpu)
            table = None
            if state.capable:
                try:
                    table = backend.mig_table(gpu)
                except NotSupportedError:
                    table = None
            result[gpu] = ObservedGpu(gpu, state, table, backend.processes(gpu))
        except NotFoundError as err:
            result[gpu] = ObservedGpu(gpu, None, error=f"{gpu} is not on this host ({err})")
        except HardwareError as err:
            result[gpu] = ObservedGpu(gpu, None, error=f"{type(err).__name__}: {err}")
    return result


@dataclass(frozen=True, slots=True)
class ActionResult:
    action: MigAction
    error: str = ""
    error_kind: str = ""
    """The ``HardwareError`` subclass name (``InsufficientResourcesError``, ...), for branching and metrics."""
    created: GpuInstance | None = None

    @property
    def ok(self) -> bool:
        return not self.error

    def __str__(self) -> str:
        return str(self.action) if self.ok else f"{self.action}: {self.error_kind}: {self.error}"


def apply(backend: MigHost, actions: Iterable[MigAction]) -> tuple[ActionResult, ...]:
    """Carry out the actions in order. After a failure on a GPU the rest of that GPU's actions are skipped
    (they may depend on it) and say so; other GPUs go on. Nothing raises: every outcome is a result."""
    results: list[ActionResult] = []
    failed: dict[GpuUuid, str] = {}
    for action in actions:
        if action.gpu in failed:
            results.append(ActionResult(action, f"skipped: {failed[action.gpu]} failed first", "Skipped"))
            continue
        try:
            created = None
            if isinstance(action, SetMigMode):
                backend.set_mig_mode(action.gpu, action.enabled)
            elif isinstance(action, DestroyInstance):
                backend.destroy_instance(action.gpu, action.gpu_instance_id)
            else:
                created = backend.create_instance(action.gpu, action.profile_id, action.start)
            results.append(ActionResult(action, created=created))
        except HardwareError as err:
            failed[action.gpu] = str(action)
            results.append(ActionResult(action, str(err), type(err).__name__))
    return tuple(results)


# --- the reconciler -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InstanceResult:
    key: str
    gpu: GpuUuid
    profile: str
    state: InstanceState
    uuid: MigUuid = NO_DEVICE
    gpu_instance_id: int | None = None
    start: int | None = None
    reason: str = ""

    def __str__(self) -> str:
        if self.state is InstanceState.READY:
            return f"{self.key}: {self.profile} at {self.start} on {self.gpu} is {self.uuid}"
        return f"{self.key}: {self.profile} on {self.gpu} {self.state.value}: {self.reason}"


@dataclass(frozen=True, slots=True)
class MigReport:
    """The outcome of one reconcile: per wanted instance (in wanted order), the actions taken, the notes
    (busy instances kept, pending mode changes), and the actions a next round would still take."""

    instances: tuple[InstanceResult, ...]
    actions: tuple[ActionResult, ...]
    notes: tuple[str, ...] = ()
    remaining: tuple[MigAction, ...] = ()

    @property
    def ok(self) -> bool:
        return all(a.ok for a in self.actions) and all(i.state is InstanceState.READY for i in self.instances)

    def uuid_of(self, key: str) -> MigUuid:
        """The MIG UUID given to ``key``, or "" when it is not ready."""
        return next((i.uuid for i in self.instances if i.key == key and i.state is InstanceState.READY), NO_DEVICE)

    def errors(self) -> tuple[str, ...]:
        """Everything that went wrong, as lines for the controller's events."""
        return (tuple(str(a) for a in self.actions if not a.ok)
                + tuple(str(i) for i in self.instances if i.state is InstanceState.FAILED))


def reconcile(backend: MigHost, wanted: Sequence[WantedGpu]) -> MigReport:
    """observe -> plan -> apply -> observe; the report says per wanted instance what it is now."""
    gpus = [w.gpu for w in wanted]
    first = plan(wanted, observe(backend, gpus))
    results = apply(backend, first.actions)

    # Bind what was just made to the key it was made for, whatever the second matching would prefer.
    made = {r.action.key: r.created.uuid for r in results
            if isinstance(r.action, CreateInstance) and r.created is not None and r.created.uuid}
    failed = {r.action.key: r for r in results if isinstance(r.action, CreateInstance) and not r.ok}
    hinted = [replace(w, instances=tuple(replace(i, uuid=made.get(i.key, i.uuid)) for i in w.instances))
              for w in wanted]
    after = plan(hinted, observe(backend, gpus))

    bound = {b.key: b.instance for b in after.bindings}
    problems = {p.key: p for p in after.problems}
    instances = []
    for w in wanted:
        for wi in w.instances:
            gi = bound.get(wi.key)
            if gi is not None:
                instances.append(InstanceResult(wi.key, w.gpu, wi.profile, InstanceState.READY, gi.uuid,
                                                gi.gpu_instance_id, gi.start))
            elif wi.key in failed:
                r = failed[wi.key]
                instances.append(InstanceResult(wi.key, w.gpu, wi.profile, InstanceState.FAILED,
                                                reason=f"{r.action}: {r.error_kind}: {r.error}"))
            elif wi.key in problems:
                p = problems[wi.key]
                instances.append(InstanceResult(wi.key, w.gpu, wi.profile, p.state, reason=p.reason))
            else:
                # Planned but not made this round (an earlier action on its GPU failed): the next round retries.
                why = next((str(r) for r in results if not r.ok and r.action.gpu == w.gpu), "not made yet")
                instances.append(InstanceResult(wi.key, w.gpu, wi.profile, InstanceState.PENDING, reason=why))
    return MigReport(tuple(instances), results, after.notes, after.actions)


# --- from allocations ---------------------------------------------------------------------------------------------


def instance_key(allocation: AllocationSpec, position: int) -> str:
    """The key of the MIG instance an allocation has on its ``position``-th GPU."""
    return f"{allocation.allocation_id}/{position}"


def wanted_from_allocations(
    allocations: Iterable[AllocationSpec],
    mig_gpus: Iterable[GpuUuid],
    given: Mapping[str, str] | None = None,
    starts: Mapping[str, int] | None = None,
) -> list[WantedGpu]:
    """The wanted layout of the GPUs that should be in MIG mode, from the allocations that ask for a profile.

    ``given`` maps instance keys to the MIG UUIDs returned before (persist them with the allocation records);
    ``starts`` maps keys to the controller's explicit placements, where it chose one.
    """
    given = given or {}
    starts = starts or {}
    per_gpu: dict[GpuUuid, list[WantedInstance]] = {GpuUuid(g): [] for g in mig_gpus}
    for a in allocations:
        if not a.mig_profile:
            continue
        for position, gpu in enumerate(a.gpu_uuids):
            key = instance_key(a, position)
            per_gpu.setdefault(GpuUuid(gpu), []).append(
                WantedInstance(key, a.mig_profile, starts.get(key), given.get(key, "")))
    return [WantedGpu(gpu, True, tuple(instances)) for gpu, instances in per_gpu.items()]
