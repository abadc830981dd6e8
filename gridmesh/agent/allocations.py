"""The allocation reconciler: checks a HostSpec against this host's hardware and records its allocations.

For now an allocation is a record that devices belong to a workspace's replica; the MIG, sandbox,
overlay and workload reconcilers build on these records. ``check`` and ``diff`` are pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gridmesh.common.model import AllocationId, AllocationSpec, AllocationState, AllocationStatus, HostSpec, Inventory


@dataclass(frozen=True, slots=True)
class RecordAllocation:
    spec: AllocationSpec

    def __str__(self) -> str:
        a = self.spec
        return f"record {a.allocation_id} ({a.workspace}/{a.gpr_id} replica {a.replica}) on GPUs {list(a.gpu_indexes)}"


@dataclass(frozen=True, slots=True)
class ForgetAllocation:
    allocation_id: AllocationId

    def __str__(self) -> str:
        return f"forget {self.allocation_id}"


Action = RecordAllocation | ForgetAllocation


def check(spec: HostSpec, inventory: Inventory) -> str | None:
    """Why this host cannot apply ``spec`` (devices it does not have, a whole GPU given twice, or a
    MIG slice of a GPU that cannot do MIG), or None. MIG allocations share GPUs; whether their
    instances fit is the MIG reconciler's to say, per allocation."""
    gpus = {g.index: g for g in inventory.gpus}
    owner: dict[int, str] = {}
    sliced: dict[int, str] = {}
    for a in spec.allocations:
        if len(a.gpu_indexes) != len(a.gpu_uuids):
            return f"{a.allocation_id}: {len(a.gpu_indexes)} GPU indexes but {len(a.gpu_uuids)} UUIDs"
        for index, uuid in zip(a.gpu_indexes, a.gpu_uuids, strict=True):
            gpu = gpus.get(index)
            if gpu is None:
                return f"{a.allocation_id}: GPU {index} does not exist on this host ({len(gpus)} GPUs)"
            if gpu.uuid != uuid:
                return f"{a.allocation_id}: GPU {index} is {gpu.uuid}, not {uuid}"
            if a.mig_profile and not gpu.mig_capable:
                return f"{a.allocation_id}: a {a.mig_profile} slice of GPU {index} ({gpu.model}), which has no MIG"
            other = owner.get(index) or (sliced.get(index) if not a.mig_profile else None)
            if other is not None:
                return f"GPU {index} is given to both {other} and {a.allocation_id}"
            (sliced if a.mig_profile else owner)[index] = a.allocation_id
    return None


def diff(desired: HostSpec, recorded: Iterable[AllocationSpec]) -> list[Action]:
    """Actions that turn the recorded allocations into the desired ones; [] when they match."""
    have = {a.allocation_id: a for a in recorded}
    want = {a.allocation_id: a for a in desired.allocations}
    actions: list[Action] = [ForgetAllocation(i) for i in sorted(have) if have[i] != want.get(i)]
    actions += [RecordAllocation(want[i]) for i in sorted(want) if have.get(i) != want[i]]
    return actions


def apply(recorded: Sequence[AllocationSpec], actions: Iterable[Action]) -> tuple[AllocationSpec, ...]:
    """The records after ``actions`` (the I/O of persisting them is the caller's)."""
    current = {a.allocation_id: a for a in recorded}
    for action in actions:
        if isinstance(action, ForgetAllocation):
            current.pop(action.allocation_id, None)
        else:
            current[action.spec.allocation_id] = action.spec
    return tuple(current[i] for i in sorted(current))


def statuses(recorded: Iterable[AllocationSpec]) -> list[AllocationStatus]:
    return [AllocationStatus(a.allocation_id, AllocationState.RUNNING, "", tuple(a.gpu_uuids)) for a in recorded]
