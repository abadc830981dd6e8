"""The agent's view of its host: hardware, persisted state and the reconcilers, no gRPC.

Per HostSpec (``apply``) and per status tick (``tick``), in this order:
1. allocations: check the spec against the hardware, persist it, record its allocations;
2. health: devices of released allocations are verified clean (no process left, no new XID or ECC
   error, no pending remap; a MIG instance is re-created where that clears it); devices of new ones
   get a baseline to compare against later;
3. MIG: instances are made to match the allocations that ask for a profile; each allocation learns
   the MIG device UUIDs it was given;
4. overlay: each workspace's WireGuard interface and peers (only public keys leave the host).
An allocation is RUNNING once all its devices exist, PENDING while they are being made, FAILED with
the driver's reason otherwise. GPU health (HEALTHY / UNCLEAN / UNHEALTHY) goes into the inventory, so
the controller keeps a released GPU out of use until it is verified clean.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

from gridmesh.agent import allocations
from gridmesh.agent.health import HealthMonitor, HealthTarget
from gridmesh.agent.mig import InstanceState, MigReport, instance_key, reconcile, wanted_from_allocations
from gridmesh.agent.overlay import OverlayReconciler
from gridmesh.agent.state import AppliedState, LocalState
from gridmesh.agent.telemetry import HostSample
from gridmesh.common.model import (
    AllocationSpec,
    AllocationState,
    AllocationStatus,
    Event,
    GpuInfo,
    GpuUuid,
    HostId,
    HostSpec,
    Inventory,
    MigInstance,
    OverlaySpec,
)
from gridmesh.dataplane.device import DataplaneError
from gridmesh.dataplane.model import OverlayStatus
from gridmesh.hw.backend import GpuBackend
from gridmesh.hw.model import HardwareError, HostHardware

log = logging.getLogger("gridmesh.agent")
AGENT_VERSION = "0.1.0"


def inventory_of(hw: HostHardware, health: HealthMonitor | None = None) -> Inventory:
    verdicts = health.status([g.uuid for g in hw.gpus]) if health is not None else {}
    gpus = []
    for g in hw.gpus:
        info = GpuInfo(index=g.index, uuid=GpuUuid(g.uuid), model=g.model, memory_mib=g.memory_mib,
                       compute_capability=g.compute_capability, pci_bus_id=g.pci_bus_id, numa_node=g.numa_node,
                       mig_capable=g.mig_capable, mig_enabled=g.mig_enabled,
                       mig_instances=tuple(MigInstance(i.uuid, i.profile, i.start, i.gpu_instance_id)
                                           for i in g.mig_instances))
        if g.uuid in verdicts:
            state, reason = verdicts[g.uuid]
            info = replace(info, health=state, health_reason=reason)
        gpus.append(info)
    return Inventory(hostname=hw.hostname, gpus=tuple(gpus), hw_backend=hw.backend, agent_version=AGENT_VERSION,
                     cpu_count=hw.cpu_count, memory_mib=hw.memory_mib)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    revision: int
    accepted: bool
    reason: str
    statuses: tuple[AllocationStatus, ...]


def _targets(a: AllocationSpec, mig_uuids: dict[str, str]) -> list[HealthTarget]:
    return [HealthTarget(GpuUuid(gpu), mig_uuids.get(instance_key(a, i), "") if a.mig_profile else "")
            for i, gpu in enumerate(a.gpu_uuids)]


class HostAgent:
    def __init__(self, host_id: HostId, backend: GpuBackend, state: LocalState,
                 overlay: OverlayReconciler | None = None, key_rotation_s: float = 0.0) -> None:
        self.host_id = host_id
        self.backend = backend
        self.state = state
        self.overlay = overlay
        self.overlay_status: OverlayStatus | None = None
        self._overlay_refused = False
        self.key_rotation_s = key_rotation_s
        self._key_since: dict[str, float] = {}  # workspace -> when its current key came into use (monotonic)
        self.health = HealthMonitor(backend)
        self.desired = state.load_desired(host_id)
        self.applied = state.load_applied()
        self.mig: MigReport | None = None
        self.latest_sample: HostSample | None = None
        # Events for the controller, sent with the next status report.
        self.pending_events: list[Event] = []
        for a in self.applied.allocations:  # baselines for what already runs here (after a restart)
            for target in _targets(a, dict(self.applied.mig_uuids)):
                self._mark(target)

    def inventory(self) -> Inventory:
        return inventory_of(self.backend.inventory(), self.health)

    def statuses(self) -> tuple[AllocationStatus, ...]:
        """Every recorded allocation with its devices: RUNNING, or PENDING/FAILED while its MIG devices are not."""
        mig_uuids = dict(self.applied.mig_uuids)
        out = []
        for a in self.applied.allocations:
            if not a.mig_profile:
                out.append(AllocationStatus(a.allocation_id, AllocationState.RUNNING, "", tuple(a.gpu_uuids)))
                continue
            keys = [instance_key(a, i) for i in range(len(a.gpu_uuids))]
            results = {r.key: r for r in self.mig.instances} if self.mig is not None else {}
            failed = [results[k] for k in keys if k in results and results[k].state is InstanceState.FAILED]
            if failed:
                out.append(AllocationStatus(a.allocation_id, AllocationState.FAILED, failed[0].reason))
            elif all(mig_uuids.get(k) for k in keys):
                out.append(AllocationStatus(a.allocation_id, AllocationState.RUNNING, "",
                                            tuple(mig_uuids[k] for k in keys)))
            else:
                why = next((results[k].reason for k in keys if k in results), "MIG devices not made yet")
                out.append(AllocationStatus(a.allocation_id, AllocationState.PENDING, why))
        return tuple(out)

    def enforce_persisted(self) -> None:
        """At start-up, before any controller contact: re-apply the last accepted desired state."""
        if self.desired.revision:
            self.apply(self.desired)

    def apply(self, spec: HostSpec) -> ApplyResult:
        """Checks, persists and reconciles ``spec``; a spec this host cannot apply is rejected whole."""
        if spec.host_id != self.host_id:
            return self._reject(spec, f"the spec is for host {spec.host_id}, this is {self.host_id}")
        try:
            hardware = self.backend.inventory()
        except HardwareError as e:
            return self._reject(spec, f"cannot read the host's GPUs: {e}")
        reason = allocations.check(spec, inventory_of(hardware))
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
        mig_uuids = dict(self.applied.mig_uuids)
        for action in actions:
            if isinstance(action, allocations.ForgetAllocation):
                self._release(action.allocation_id, mig_uuids)
        records = allocations.apply(self.applied.allocations, actions)
        self._reconcile_mig(records, hardware, mig_uuids)
        for action in actions:
            if isinstance(action, allocations.RecordAllocation):
                for target in _targets(action.spec, mig_uuids):
                    self._mark(target)
        self._save(AppliedState(revision=spec.revision, allocations=records,
                                mig_uuids=tuple(sorted(mig_uuids.items()))))
        self._reconcile_overlay()
        return ApplyResult(spec.revision, True, "", self.statuses())

    def tick(self) -> None:
        """The periodic pass before a status report: re-check unclean devices, retry unmade MIG devices,
        and re-assert the overlay (level-triggered: whatever changed underneath is put back)."""
        self._reconcile_overlay()
        for verdict in self.health.recheck():
            if verdict.clean:
                log.info("verified clean", extra={"gpu": verdict.gpu, "device": verdict.mig_uuid})
        if any(a.mig_profile for a in self.applied.allocations) and not (self.mig and self.mig.ok):
            try:
                hardware = self.backend.inventory()
            except HardwareError as e:
                self.report_error("HardwareUnreadable", f"cannot read the host's GPUs: {e}")
                return
            mig_uuids = dict(self.applied.mig_uuids)
            self._reconcile_mig(self.applied.allocations, hardware, mig_uuids)
            self._save(replace(self.applied, mig_uuids=tuple(sorted(mig_uuids.items()))))

    def _reconcile_overlay(self) -> None:
        """The workspace overlay interfaces the desired state names (errors come back in the status)."""
        if self.overlay is None:
            if self.desired.overlay and not self._overlay_refused:
                self._overlay_refused = True
                self.report_error("OverlayUnavailable", f"{len(self.desired.overlay)} workspace overlays asked "
                                  "for, but this agent runs no overlay backend")
            return
        try:
            self.overlay_status = self.overlay.reconcile(OverlaySpec(self.host_id, self.desired.overlay))
            self._rotate_due_keys()
        except (DataplaneError, OSError) as e:
            self.report_error("OverlayFailed", f"cannot reconcile the workspace overlays: {e}")

    def _rotate_due_keys(self) -> None:
        """Publishes a next key for each workspace whose key is older than ``key_rotation_s``. The switch
        is the controller's to order, once every peer has the new key staged, so no tunnel drops."""
        if not self.key_rotation_s or self.overlay is None or self.overlay_status is None:
            return
        now = time.monotonic()
        for i in self.overlay_status.interfaces:
            if not i.public_key:
                continue
            since = self._key_since.setdefault(f"{i.workspace}/{i.public_key}", now)
            if not i.next_public_key and now - since >= self.key_rotation_s:
                log.info("key rotation", extra={"workspace": i.workspace, "interface": i.interface})
                self.overlay.begin_rotation(i.workspace)

    def _release(self, allocation_id: str, mig_uuids: dict[str, str]) -> None:
        """An allocation left this host: verify its devices clean before anyone else gets them."""
        gone = next((a for a in self.applied.allocations if a.allocation_id == allocation_id), None)
        if gone is None:
            return
        for target in _targets(gone, mig_uuids):
            verdict = self.health.verify(target)
            log.info("released", extra={"allocation": allocation_id, "verdict": str(verdict)})
            if not verdict.clean:
                self.report_error("DeviceNotClean", f"{allocation_id} released: {verdict}")
            elif verdict.recreated_from:
                log.info("re-created MIG instance", extra={"old": verdict.recreated_from, "new": verdict.mig_uuid})
        for i in range(len(gone.gpu_uuids)):
            mig_uuids.pop(instance_key(gone, i), None)

    def _reconcile_mig(self, records: tuple[AllocationSpec, ...], hardware: HostHardware,
                       mig_uuids: dict[str, str]) -> None:
        """MIG instances for the allocations that ask for a profile; GPUs not in MIG mode are left alone."""
        mig_gpus = [g.uuid for g in hardware.gpus if g.mig_enabled]
        if not mig_gpus and not any(a.mig_profile for a in records):
            self.mig = None
            return
        starts = {instance_key(a, i): s for a in records for i, s in enumerate(a.mig_starts)}
        report = reconcile(self.backend, wanted_from_allocations(records, mig_gpus, mig_uuids, starts))
        for line in report.errors():
            self.report_error("MigFailed", line)
        for r in report.instances:
            if r.state is InstanceState.READY:
                mig_uuids[r.key] = r.uuid
        self.mig = report

    def _mark(self, target: HealthTarget) -> None:
        try:
            self.health.mark(target)
        except HardwareError as e:
            self.report_error("HealthBaselineFailed", f"cannot read the health of {target}: {e}")

    def _save(self, new: AppliedState) -> None:
        if new == self.applied:
            return
        try:
            self.state.save_applied(new)
        except OSError as e:
            # Applied but not recorded: say so; the persisted desired state re-applies it at start-up.
            self.report_error("StateWriteFailed", f"cannot record applied state: {e}")
        self.applied = new

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
