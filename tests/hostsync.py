"""Controller and host agents in one process, without gRPC: what a session would carry, done by hand."""

from __future__ import annotations

from collections.abc import Mapping

from gridmesh.agent.host import HostAgent
from gridmesh.controller.grid import Grid
from gridmesh.controller.hostspec import build_host_spec
from gridmesh.controller.model import Gpr


class FakeClock:
    """Time that moves only when the test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def sync(grid: Grid, agents: Mapping[str, HostAgent]) -> None:
    """One session exchange per host: its spec to the agent, the ack and a status report back."""
    for host_id, agent in agents.items():
        spec = build_host_spec(grid.get_host(host_id), grid.store.allocations_on_host(host_id),
                               {g.id: g for g in grid.store.all(Gpr)})
        grid.spec_sent(host_id, spec.revision)
        result = agent.apply(spec)
        grid.spec_acknowledged(host_id, result.revision, result.accepted, result.reason, result.statuses)
        agent.tick()
        grid.host_status(host_id, agent.inventory(), agent.statuses(), agent.take_events(), agent.applied.revision)
