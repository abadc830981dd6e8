"""Clean and healthy: whether a GPU (or MIG instance) can be given to the next tenant after an eviction.

The controller may only place work on a GPU the agent reports HEALTHY. After an allocation is evicted or
released, the agent checks its devices against a *baseline* reading taken when the allocation started:

- UNHEALTHY, the GPU itself is in trouble, and an operator must act (never cleared by gridmesh):
  it stopped answering (fell off the bus); the driver asks for a recovery action (GPU reset, node reboot,
  ...: NVML_FI_DEV_GET_GPU_RECOVERY_ACTION); a row remap is pending (needs a reset) or failed; new
  uncorrectable ECC errors; a new XID that is not the tenant's own doing and not confined to the
  tenant's MIG instance.
- UNCLEAN, the tenant left something behind: processes still on the GPU (or in its MIG instance). This
  clears by itself once they are gone: ``recheck`` re-verifies every device not yet healthy.
- HEALTHY otherwise. A new XID confined to the tenant's MIG GPU instance (the driver attributes it to that
  instance) is cleared by re-creating the instance at the same placement, which this module does when the
  instance is idle and the GPU is otherwise fine; the verdict then carries the new MIG UUID.

XIDs a program causes, or that killing it causes, do not count against the GPU: 13 (graphics engine
exception), 31 (memory page fault), 43 (GPU stopped processing), 45 (preemptive cleanup) and 68 (video
processor exception) are what an evicted tenant's workload leaves in the log.

``assess`` is the pure decision; ``HealthMonitor`` does the reading, re-creating and bookkeeping. Output
is ``gridmesh.common.model.GpuHealth`` with a reason, per GPU UUID (``status``) and per target (``verify``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from gridmesh.common.model import GpuHealth
from gridmesh.hw.backend import HealthBackend, MigBackend
from gridmesh.hw.model import (
    GpuInstance,
    GpuProcess,
    GpuUuid,
    HardwareError,
    HealthReading,
    RecoveryAction,
    XidEvent,
)

BENIGN_XIDS = frozenset({13, 31, 43, 45, 68})
"""XIDs a tenant's program (or killing it) causes; they say nothing about the GPU."""

XID_MEANING = {
    13: "graphics engine exception",
    31: "GPU memory page fault",
    43: "GPU stopped processing",
    45: "preemptive cleanup",
    48: "double-bit ECC error",
    63: "row remapping recorded",
    64: "row remapping failed",
    68: "video processor exception",
    74: "NVLink error",
    79: "GPU has fallen off the bus",
    92: "high single-bit ECC error rate",
    94: "contained ECC error",
    95: "uncontained ECC error",
    119: "GSP RPC timeout",
    120: "GSP error",
}


def describe(xids: Iterable[XidEvent]) -> str:
    parts = []
    for x in xids:
        meaning = XID_MEANING.get(x.code)
        parts.append(f"{x}" + (f" ({meaning})" if meaning else ""))
    return ", ".join(parts)


class HealthHost(HealthBackend, MigBackend, Protocol):
    """What the checks need: health readings and processes, and MIG to find and re-create instances."""


@dataclass(frozen=True, slots=True)
class HealthTarget:
    """What an allocation held: a whole GPU, or one MIG device on it (``mig_uuid``)."""

    gpu: GpuUuid
    mig_uuid: str = ""

    def __str__(self) -> str:
        return f"{self.mig_uuid} on {self.gpu}" if self.mig_uuid else str(self.gpu)


@dataclass(frozen=True, slots=True)
class Assessment:
    """The pure verdict; ``recreate`` names the instance to re-create when that clears the problem."""

    health: GpuHealth
    reason: str = ""
    recreate: GpuInstance | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """A device's health after a check. ``mig_uuid`` is the device's UUID now: a new one when the instance
    was re-created (``recreated_from`` is then the old one, which no longer exists)."""

    gpu: GpuUuid
    health: GpuHealth
    reason: str = ""
    mig_uuid: str = ""
    recreated_from: str = ""

    @property
    def clean(self) -> bool:
        return self.health is GpuHealth.HEALTHY

    def __str__(self) -> str:
        target = f"{self.mig_uuid} on {self.gpu}" if self.mig_uuid else str(self.gpu)
        return f"{target}: {self.health.name}" + (f": {self.reason}" if self.reason else "")


def gpu_level(reading: HealthReading) -> Assessment | None:
    """The GPU-wide signals that make it UNHEALTHY now, whatever the baseline; None when there are none."""
    if not reading.reachable:
        return Assessment(GpuHealth.UNHEALTHY, f"the GPU stopped answering: {reading.detail or 'lost'}")
    action = reading.recovery_action
    if action is not None and action is not RecoveryAction.NONE:
        return Assessment(GpuHealth.UNHEALTHY,
                          f"the driver asks for a recovery action: {action.name.lower().replace('_', ' ')}")
    if reading.remap_failed:
        return Assessment(GpuHealth.UNHEALTHY, "row remapping failed: the GPU's memory needs servicing")
    if reading.remap_pending:
        return Assessment(GpuHealth.UNHEALTHY, "a row remap is pending: the GPU needs a reset")
    return None


def assess(
    target: HealthTarget,
    baseline: HealthReading | None,
    reading: HealthReading,
    processes: Sequence[GpuProcess],
    instance: GpuInstance | None,
) -> Assessment:
    """Judge ``target`` after its allocation ended. Pure.

    ``baseline`` is the reading from when the allocation started (None: judge by the current state and by
    all XIDs the backend has seen). ``instance`` is the target's MIG instance as it exists now (None for a
    whole GPU, or when the instance is gone).
    """
    trouble = gpu_level(reading)
    if trouble is not None:
        return trouble
    if baseline is not None and baseline.ecc_uncorrectable is not None and reading.ecc_uncorrectable is not None:
        new = reading.ecc_uncorrectable - baseline.ecc_uncorrectable
        if new > 0:
            return Assessment(GpuHealth.UNHEALTHY, f"{new} new uncorrectable ECC errors since the allocation began")

    if target.mig_uuid:
        left = [p for p in processes if instance is not None and p.gpu_instance_id == instance.gpu_instance_id]
    else:
        left = list(processes)
    if left:
        pids = ", ".join(str(p) for p in left)
        return Assessment(GpuHealth.UNCLEAN, f"{len(left)} process{'es' if len(left) > 1 else ''} left: {pids}")

    since = baseline.xid_seq if baseline is not None else 0
    new_xids = [x for x in reading.xids_after(since) if x.code not in BENIGN_XIDS]
    gpu_wide = [x for x in new_xids if x.gpu_instance_id is None]
    if gpu_wide:
        return Assessment(GpuHealth.UNHEALTHY, f"{describe(gpu_wide)} since the allocation began")
    if target.mig_uuid and instance is not None:
        mine = [x for x in new_xids if x.gpu_instance_id == instance.gpu_instance_id]
        if mine:
            return Assessment(GpuHealth.HEALTHY, f"{describe(mine)} confined to {instance}", recreate=instance)
    return Assessment(GpuHealth.HEALTHY)


class HealthMonitor:
    """Baselines, post-eviction checks and the per-GPU health the agent reports.

    Call ``mark(target)`` when a device is given to an allocation (and for every GPU at start-up),
    ``verify(target)`` after the allocation is evicted or released (its workload stopped), ``recheck()`` on
    every status tick, and ``status(gpus)`` for the inventory's per-GPU health and reason.
    """

    def __init__(self, backend: HealthHost) -> None:
        self.backend = backend
        self._baselines: dict[HealthTarget, HealthReading] = {}
        self._open: dict[HealthTarget, Verdict] = {}

    def mark(self, target: HealthTarget) -> HealthReading:
        """Take the baseline a later ``verify`` compares against."""
        reading = self.backend.health(target.gpu)
        self._baselines[target] = reading
        return reading

    def baseline(self, target: HealthTarget) -> HealthReading | None:
        return self._baselines.get(target) or self._baselines.get(HealthTarget(target.gpu))

    def verify(self, target: HealthTarget, *, recreate: bool = True) -> Verdict:
        """Check a device after its allocation ended; re-create its MIG instance where that clears it.

        A verdict that is not HEALTHY is remembered and re-checked by ``recheck`` until it is.
        """
        verdict = self._check(target, recreate)
        if verdict.clean:
            self._open.pop(target, None)
            self._baselines.pop(target, None)
        else:
            self._open[target] = verdict
        return verdict

    def recheck(self) -> list[Verdict]:
        """Re-verify every device not yet healthy (the leftover process may have exited)."""
        return [self.verify(target) for target in list(self._open)]

    def pending(self) -> dict[HealthTarget, Verdict]:
        """The devices not yet healthy, with why."""
        return dict(self._open)

    def status(self, gpus: Iterable[GpuUuid]) -> dict[GpuUuid, tuple[GpuHealth, str]]:
        """Per GPU: the worst of its GPU-wide state now and its devices' open verdicts, with the reasons."""
        result: dict[GpuUuid, tuple[GpuHealth, str]] = {}
        for gpu in gpus:
            verdicts = [v for t, v in self._open.items() if t.gpu == gpu]
            try:
                trouble = gpu_level(self.backend.health(gpu))
            except HardwareError as err:
                trouble = Assessment(GpuHealth.UNHEALTHY, f"cannot read the GPU's health: {err}")
            if trouble is not None:
                verdicts.append(Verdict(gpu, trouble.health, trouble.reason))
            if not verdicts:
                result[gpu] = (GpuHealth.HEALTHY, "")
                continue
            worst = max(v.health for v in verdicts)
            reasons = sorted({str(v) if v.mig_uuid else v.reason for v in verdicts if v.health == worst})
            result[gpu] = (worst, "; ".join(reasons))
        return result

    def _check(self, target: HealthTarget, recreate: bool) -> Verdict:
        backend = self.backend
        try:
            reading = backend.health(target.gpu)
            trouble = gpu_level(reading)
            if trouble is not None:
                return Verdict(target.gpu, trouble.health, trouble.reason, target.mig_uuid)
            processes = backend.processes(target.gpu)
            instance = backend.mig_state(target.gpu).instance(target.mig_uuid) if target.mig_uuid else None
        except HardwareError as err:
            return Verdict(target.gpu, GpuHealth.UNHEALTHY, f"cannot check the GPU: {type(err).__name__}: {err}",
                           target.mig_uuid)
        found = assess(target, self.baseline(target), reading, processes, instance)
        if found.recreate is None:
            return Verdict(target.gpu, found.health, found.reason, target.mig_uuid)
        gi = found.recreate
        if not recreate:
            return Verdict(target.gpu, GpuHealth.UNCLEAN, f"{found.reason}: re-create it to clear", target.mig_uuid)
        try:
            backend.destroy_instance(target.gpu, gi.gpu_instance_id)
            new = backend.create_instance(target.gpu, gi.profile_id, gi.start)
        except HardwareError as err:
            return Verdict(target.gpu, GpuHealth.UNCLEAN,
                           f"{found.reason}; re-creating it failed: {type(err).__name__}: {err}", target.mig_uuid)
        # The XIDs up to now are handled: the new instance starts from this reading.
        self._baselines[HealthTarget(target.gpu, new.uuid)] = reading
        return Verdict(target.gpu, GpuHealth.HEALTHY,
                       f"{found.reason}: re-created it as gi {new.gpu_instance_id} ({new.uuid})",
                       new.uuid, recreated_from=target.mig_uuid)
