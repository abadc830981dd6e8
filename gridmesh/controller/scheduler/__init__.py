"""Placement decisions, pure: ``plan(snapshot) -> Plan`` and ``explain(snapshot, gpr) -> Explanation``.

Rules (ARCHITECTURE.md rule 1): no I/O, no clock (time comes in the snapshot), no unseeded
randomness; the same snapshot always gives the same plan, whatever order its collections are in.
The controller's ``plan_apply`` re-checks a plan against the latest state before committing it
(``violations`` states every rule it must re-check, and can be run on the fresh snapshot).

Modules: ``constraints`` (the hard constraints), ``mig`` (MIG profile tables and placement rules),
``engine`` (the indexed planner: order of service, scoring, preemption, migration), ``explain``,
``verify`` (re-checking a plan), ``harness`` (a pure fake controller for tests and the benchmark),
``firstfit`` (the naive baseline the engine replaced; its names are kept for older callers).

What the controller supplies (``Snapshot``; every new field defaults to "nothing known"):
- ``pending``: live GPRs holding fewer distinct replicas (allocations + reservations) than asked;
  ``gprs``: every live GPR holding an allocation or a reservation (priority, redistribution policy,
  ``running_since``, ``expires_at``); without it nothing is preemptible or movable.
- ``Allocation.state`` RUNNING once the host says so: only running allocations are victims or movable.
- ``allocation_mig``: the ``MigSlot``s each MIG allocation holds (what its placement said).
- ``reservations``: those committed and not yet turned into allocations or dropped.
- ``unclean_gpus`` / ``unclean_slots``: devices released from a tenant and not yet reported clean (or
  mark them UNCLEAN in the inventory, as ``Host.as_scheduled`` does; either keeps them out of use).
- ``artifacts_at_site``, ``preempted_at`` (when a GPR last got devices by preempting), ``weights``.

What the controller does with a plan, in this order, each GPR's part whole or not at all:
``dropped_reservations`` (delete them), ``evictions`` (release, mark the devices unclean, re-queue the
victim's replica), ``migrations`` (place ``to``; release the old allocation once ``to`` runs),
``reservations`` (store; note ``preempted_at``), ``placements`` (commit; one with ``reservation=True``
replaces its reservation; one with ``after_eviction`` only if that eviction was committed).
"""

from gridmesh.controller.scheduler.engine import plan, plan_with
from gridmesh.controller.scheduler.explain import explain
from gridmesh.controller.scheduler.types import (
    Alternative,
    Eviction,
    Exclusion,
    Explanation,
    Migration,
    MigSlot,
    Placement,
    Plan,
    Reservation,
    ScoringWeights,
    Snapshot,
)
from gridmesh.controller.scheduler.verify import violations

__all__ = [
    "Alternative",
    "Eviction",
    "Exclusion",
    "Explanation",
    "MigSlot",
    "Migration",
    "Placement",
    "Plan",
    "Reservation",
    "ScoringWeights",
    "Snapshot",
    "explain",
    "plan",
    "plan_with",
    "violations",
]
