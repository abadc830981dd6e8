"""The agent's view of its host: hardware inventory, persisted state and the reconcilers, no gRPC."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from gridmesh.agent import allocations
from gridmesh.agent.state import AppliedState, LocalState
from gridmesh.common.model import AllocationStatus, Event, GpuInfo, GpuUuid, HostId, HostSpec, Inventory
from gridmesh.hw.backend import GpuBackend
from gridmesh.hw.model import HardwareError, HostHardware

log = logging.getLogger("gridmesh.agent")
AGENT_VERSION = "0.1.0"


def inventory_of(hw: HostHardware) -> Inventory:
    return Inventory(
        hostname=hw.hostname,
        gpus=tuple(GpuInfo(index=g.index, uuid=GpuUuid(g.uuid), model=g.model, memory_mib=g.memory_mib,
                           compute_capability=g.compute_capability, pci_bus_id=g.pci_bus_id, numa_node=g.numa_node,
                           mig_capable=g.mig_capable, mig_enabled=g.mig_enabled) for g in hw.gpus),
        hw_backend=hw.backend,
        agent_version=AGENT_VERSION,
        cpu_count=hw.cpu_count,
        memory_mib=hw.memory_mib,
    )


@dataclass(frozen=True, slots=True)
class ApplyResult:
    revision: int
    accepted: bool
    reason: str
    statuses: tuple[AllocationStatus, ...]


class HostAgent:
    def __init__(self, host_id: HostId, backend: GpuBackend, state: LocalState) -> None:
        self.host_id = host_id
        self.backend = backend
        self.state = state
        self.desired = state.load_desired(host_id)
        self.applied = state.load_applied()
        # Events for the controller, sent with the next status report.
        self.pending_events: list[Event] = []

    def inventory(self) -> Inventory:
        return inventory_of(self.backend.inventory())

    def statuses(self) -> tuple[AllocationStatus, ...]:
        return tuple(allocations.statuses(self.applied.allocations))

    def enforce_persisted(self) -> None:
        """At start-up, before any controller contact: re-apply the last accepted desired state."""
        if self.desired.revision:
            self.apply(self.desired)

    def apply(self, spec: HostSpec) -> ApplyResult:
        """Checks, persists and reconciles ``spec``; a spec this host cannot apply is rejected whole."""
        if spec.host_id != self.host_id:
            return self._reject(spec, f"the spec is for host {spec.host_id}, this is {self.host_id}")
        try:
            inventory = self.inventory()
        except HardwareError as e:
            return self._reject(spec, f"cannot read the host's GPUs: {e}")
        reason = allocations.check(spec, inventory)
        if reason is not None:
            return self._reject(spec, reason)
        try:
            # Persist first: once acknowledged, a restart must find this spec (static stability).
            self.state.save_desired(spec)
        except OSError as e:
            return self._reject(spec, f"cannot persist the desired state in {self.state.dir}: {e}")
        self.desired = spec
        actions = allocations.diff(spec, self.applied.allocations)
        for action in actions:
            log.info("apply", extra={"action": str(action), "revision": spec.revision})
        records = allocations.apply(self.applied.allocations, actions)
        new = AppliedState(revision=spec.revision, allocations=records)
        if new != self.applied:
            try:
                self.state.save_applied(new)
            except OSError as e:
                # Applied but not recorded: say so; the persisted desired state re-applies it at start-up.
                self.report_error("StateWriteFailed", f"cannot record applied state: {e}")
            self.applied = new
        return ApplyResult(spec.revision, True, "", self.statuses())

    def _reject(self, spec: HostSpec, reason: str) -> ApplyResult:
        """The controller records the rejection from the acknowledgement; the agent keeps its last spec."""
        log.warning("spec rejected", extra={"revision": spec.revision, "reason": reason})
        return ApplyResult(spec.revision, False, reason, self.statuses())

    def report_error(self, reason: str, message: str) -> None:
        """Queues an error for the controller; it travels with the next status report."""
        log.error(message, extra={"reason": reason})
        self.pending_events.append(Event(kind="host.error", subject=self.host_id, reason=reason, message=message,
                                         time=time.time()))

    def take_events(self) -> list[Event]:
        events, self.pending_events = self.pending_events, []
        return events
