"""The GPR state machine. Everything that changes a GPR's state goes through ``transition``.

Rules:
- Only the transitions in ``ALLOWED`` happen; anything else is a controller bug and raises.
- Every transition is recorded as a ``gpr.state`` event with a machine-readable reason
  (CamelCase) and a message for people, in the same transaction as the state change.
- Terminal states (RELEASED, EXPIRED, FAILED, CANCELLED) are final.
- Time runs out in any state: every non-terminal state may go to EXPIRED.
"""

from __future__ import annotations

from dataclasses import replace

from gridmesh.common.model import Event, GprState
from gridmesh.controller.model import Gpr
from gridmesh.controller.store import Tx

S = GprState
ALLOWED: dict[GprState, frozenset[GprState]] = {
    S.PENDING: frozenset({S.PLACED, S.CANCELLED, S.FAILED, S.EXPIRED}),
    S.PLACED: frozenset({S.PROVISIONING, S.PENDING, S.CANCELLED, S.FAILED, S.PREEMPTED, S.EXPIRED}),
    S.PROVISIONING: frozenset({S.RUNNING, S.PENDING, S.CANCELLED, S.FAILED, S.PREEMPTED, S.EXPIRED}),
    S.RUNNING: frozenset({S.PROVISIONING, S.PREEMPTED, S.MIGRATING, S.RELEASED, S.EXPIRED, S.FAILED,
                          S.CANCELLED}),
    S.PREEMPTED: frozenset({S.PENDING, S.CANCELLED, S.EXPIRED}),
    S.MIGRATING: frozenset({S.PROVISIONING, S.RUNNING, S.FAILED, S.CANCELLED, S.EXPIRED}),
    S.RELEASED: frozenset(),
    S.EXPIRED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}


class IllegalTransition(RuntimeError):
    pass


def transition(tx: Tx, gpr: Gpr, to: GprState, reason: str, message: str, now: float) -> Gpr:
    """Moves ``gpr`` to ``to`` inside ``tx`` and records why; returns the new value."""
    if to not in ALLOWED[gpr.state]:
        raise IllegalTransition(f"GPR {gpr.id}: {gpr.state.name} -> {to.name} is not allowed ({reason})")
    running_since = gpr.running_since
    expires_at = gpr.expires_at
    if to is S.RUNNING and running_since is None:
        running_since = now
        if gpr.spec.duration_s is not None:
            expires_at = now + gpr.spec.duration_s
    new = replace(gpr, state=to, state_reason=message, updated_at=now, running_since=running_since,
                  expires_at=expires_at)
    tx.put(new)
    tx.event(Event(kind="gpr.state", subject=gpr.id, reason=reason, message=message, time=now,
                   from_state=gpr.state.name, to_state=to.name,
                   attributes=(("workspace", gpr.spec.workspace),)))
    return new
