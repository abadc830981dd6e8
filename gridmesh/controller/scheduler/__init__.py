"""Placement decisions, pure: ``plan(snapshot) -> Plan`` and ``explain(snapshot, gpr) -> Explanation``.

Rules (ARCHITECTURE.md rule 1): no I/O, no clock (time comes in the snapshot), no unseeded
randomness; the same snapshot always gives the same plan. The controller's ``plan_apply``
re-checks a plan against the latest state before committing it.
"""

from gridmesh.controller.scheduler.firstfit import explain, plan
from gridmesh.controller.scheduler.types import Exclusion, Explanation, Placement, Plan, Snapshot

__all__ = ["Exclusion", "Explanation", "Placement", "Plan", "Snapshot", "explain", "plan"]
