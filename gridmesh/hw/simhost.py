"""Simulated GPU hardware: the state of a host's GPUs and the rules their drivers enforce.

One ``SimHost`` is the "hardware" behind three faces: ``SimulatorBackend`` (calls it directly), ``FakeNvml``
(a stand-in for the ``pynvml`` module, so the real NVML backend code runs against it) and ``FakeAmdSmi``
(likewise for ``amdsmi``). Tests inject faults here and every face sees them.

Rules it enforces, as the real drivers do (H100 facts from hw-facts; see ``gridmesh.hw.mig``):
- MIG instances only at a profile's allowed starts (``InvalidArgumentError`` otherwise), never overlapping
  on the 8 memory slices, at most ``max_instances`` per profile, at most 7 compute slices in all
  (``InsufficientResourcesError``). These checks are written here independently of ``gridmesh.hw.mig`` so
  that tests pitting the planner against the simulator compare two implementations.
- GPU instance ids are the driver's placement-derived ids (a binary tree over the memory slices: the full
  GPU is 0, halves 1-2, quarters 3-6, single slices 7-14), so they are not creation order, and an id comes
  back when an instance at the same placement is re-created; MIG device UUIDs never come back.
- A handle to a destroyed GPU or compute instance is dead: using it raises ``InvalidArgumentError`` even if
  a new instance got the same id.
- A GPU instance with compute instances, or a compute instance with processes, cannot be destroyed
  (``InUseError``).
- MIG mode changes need an idle GPU (no processes; no instances to disable) and, by default, take effect
  only at the next GPU reset: the mode reads as pending until then, and instances cannot be created while a
  change is pending (``ResetRequiredError``). ``reset_gpu`` is the operator's reset; gridmesh never calls it.
- A GPU that fell off the bus answers every call with ``GpuLostError``.
- Telemetry values are plausible and deterministic (derived from the processes running), not measured.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace

from gridmesh.hw.catalog import GpuModel, find_model
from gridmesh.hw.mig import MigProfile, MigTable, mig_table
from gridmesh.hw.model import (
    GpuDevice,
    GpuInstance,
    GpuLostError,
    GpuProcess,
    GpuSample,
    GpuUuid,
    HostHardware,
    InsufficientResourcesError,
    InUseError,
    InvalidArgumentError,
    MigModeChange,
    MigUuid,
    NotFoundError,
    NotSupportedError,
    PartitionState,
    RecoveryAction,
    ResetRequiredError,
    XidEvent,
)

# Fixed namespace for simulated MIG device UUIDs. Changing it changes every simulated MIG UUID.
_MIG_NAMESPACE = uuid.UUID("0b7d3f0e-91c4-4a57-8d7e-5f1e2c3b4a69")

# How AMD partition modes combine (MI300X, documented, not read): NPS4 memory needs CPX compute.
_AMD_COMPATIBLE = {"NPS1": ("SPX", "DPX", "QPX", "CPX"), "NPS4": ("CPX",)}

XID_HISTORY = 64
"""XIDs kept per GPU in a health reading."""


@dataclass(eq=False)
class SimComputeInstance:
    """A compute instance: one MIG device, with the UUID workloads see. Dead once destroyed."""

    gi: SimGpuInstance
    ci_id: int
    uuid: MigUuid
    alive: bool = True


@dataclass(eq=False)
class SimGpuInstance:
    """A GPU instance. ``alive`` turns False on destroy, which kills every handle to it."""

    gpu: SimGpu
    gi_id: int
    profile: MigProfile
    start: int
    key: int
    cis: dict[int, SimComputeInstance] = field(default_factory=dict)
    alive: bool = True

    def view(self) -> GpuInstance:
        cis = sorted(self.cis)
        return GpuInstance(
            gpu=self.gpu.uuid,
            gpu_instance_id=self.gi_id,
            profile_id=self.profile.profile_id,
            profile=self.profile.name,
            start=self.start,
            size=self.profile.size,
            uuid=self.cis[cis[0]].uuid if cis else MigUuid(""),
            compute_instance_ids=tuple(cis),
        )


@dataclass(eq=False)
class SimProcess:
    pid: int
    gpu: SimGpu
    used_mib: int
    ci: SimComputeInstance | None


@dataclass(eq=False)
class SimGpu:
    """One simulated GPU's mutable state."""

    device: GpuDevice
    model: GpuModel
    table: MigTable | None
    mig_enabled: bool
    mig_pending: bool
    gis: dict[int, SimGpuInstance] = field(default_factory=dict)
    lost: bool = False
    ecc_uncorrectable: int = 0
    remapped_uncorrectable: int = 0
    remap_pending: bool = False
    remap_failed: bool = False
    recovery_action: RecoveryAction = RecoveryAction.NONE
    compute_partition: str = ""
    memory_partition: str = ""

    @property
    def uuid(self) -> GpuUuid:
        return self.device.uuid

    @property
    def index(self) -> int:
        return self.device.index


def gpu_instance_id(memory_slices: int, start: int, size: int) -> int:
    """The placement-derived GPU instance id: node number in a binary tree over the memory slices."""
    level_nodes = memory_slices // size  # 1 for the whole GPU, 2 for halves, ...
    return (level_nodes - 1) + start // size


class SimHost:
    """The simulated hardware of one host. Mutable; every method enforces the driver's rules."""

    def __init__(self, hardware: HostHardware, *, mig_change_needs_reset: bool = True) -> None:
        self.hostname = hardware.hostname
        self.cpu_count = hardware.cpu_count
        self.memory_mib = hardware.memory_mib
        self.mig_change_needs_reset = mig_change_needs_reset
        self.gpus: list[SimGpu] = []
        self.xids: list[XidEvent] = []
        self.processes: dict[int, SimProcess] = {}
        self._next_pid = 4000
        self._next_key = 1
        self._mig_generation = 0
        for device in hardware.gpus:
            # A host built in code may name a model the catalog lacks: it gets what the device says of itself.
            model = find_model(device.model) or GpuModel(
                model=device.model, vendor=device.vendor, memory_gib=device.memory_mib // 1024,
                compute_capability=device.compute_capability, mig_max_instances=7 if device.mig_capable else 0,
                memory_mib=device.memory_mib, read_from_hardware=False)
            table = mig_table(model.model) if device.mig_capable else None
            gpu = SimGpu(device=replace(device, mig_instances=()), model=model, table=table,
                         mig_enabled=device.mig_enabled, mig_pending=device.mig_enabled)
            if model.compute_partitions:
                gpu.compute_partition = model.compute_partitions[0]
            if model.memory_partitions:
                gpu.memory_partition = model.memory_partitions[0]
            self.gpus.append(gpu)

    # --- lookups ------------------------------------------------------------------------------------------

    def gpu(self, key: GpuUuid | str | int) -> SimGpu:
        """The GPU with this UUID or index (lost or not). ``NotFoundError`` if there is none."""
        for gpu in self.gpus:
            if gpu.uuid == key or (isinstance(key, int) and gpu.index == key):
                return gpu
        raise NotFoundError(f"no GPU {key} on simulated host {self.hostname}")

    def answering(self, key: GpuUuid | str | int) -> SimGpu:
        """Like ``gpu``, but ``GpuLostError`` for a GPU that fell off the bus."""
        gpu = self.gpu(key)
        if gpu.lost:
            raise GpuLostError(f"GPU {gpu.index} ({gpu.uuid}) has fallen off the bus")
        return gpu

    def hardware(self) -> HostHardware:
        """The inventory now: current MIG mode and instances."""
        return HostHardware(
            hostname=self.hostname,
            backend="simulator",
            gpus=tuple(
                replace(g.device, mig_enabled=g.mig_enabled,
                        mig_instances=tuple(gi.view() for _, gi in sorted(g.gis.items())) if g.mig_enabled else ())
                for g in self.gpus
            ),
            cpu_count=self.cpu_count,
            memory_mib=self.memory_mib,
        )

    # --- MIG ------------------------------------------------------------------------------------------------

    def mig_table(self, key: GpuUuid | str | int) -> MigTable:
        gpu = self.answering(key)
        if not gpu.device.mig_capable:
            raise NotSupportedError(f"GPU {gpu.index} ({gpu.model.model}) does not support MIG")
        if gpu.table is None:
            raise NotSupportedError(f"GPU {gpu.index}: no MIG profile table is known for {gpu.model.model}")
        return gpu.table

    def set_mig_mode(self, key: GpuUuid | str | int, enabled: bool) -> MigModeChange:
        gpu = self.answering(key)
        if not gpu.device.mig_capable:
            raise NotSupportedError(f"GPU {gpu.index} ({gpu.model.model}) does not support MIG")
        if enabled == gpu.mig_enabled:
            # Asking for the mode in effect cancels a pending change; nothing is reset, so no idle GPU needed.
            gpu.mig_pending = enabled
            return MigModeChange(gpu.uuid, gpu.mig_enabled, gpu.mig_pending)
        busy = self._pids(gpu)
        if busy:
            raise InUseError(f"GPU {gpu.index}: MIG mode cannot change while processes run on it (pids {busy})")
        if not enabled and gpu.gis:
            raise InUseError(f"GPU {gpu.index}: MIG mode cannot be disabled while {len(gpu.gis)} GPU instances "
                             f"exist; destroy them first")
        gpu.mig_pending = enabled
        if not self.mig_change_needs_reset:
            gpu.mig_enabled = enabled
        return MigModeChange(gpu.uuid, gpu.mig_enabled, gpu.mig_pending)

    def _mig_ready(self, gpu: SimGpu) -> MigTable:
        table = self.mig_table(gpu.uuid)
        if gpu.mig_enabled != gpu.mig_pending:
            raise ResetRequiredError(f"GPU {gpu.index}: a MIG mode change waits for a GPU reset")
        if not gpu.mig_enabled:
            raise NotSupportedError(f"GPU {gpu.index}: MIG mode is disabled")
        return table

    def create_gpu_instance(self, key: GpuUuid | str | int, profile_id: int, start: int) -> SimGpuInstance:
        gpu = self.answering(key)
        table = self._mig_ready(gpu)
        profile = next((p for p in table.profiles if p.profile_id == profile_id), None)
        if profile is None:
            raise NotSupportedError(f"GPU {gpu.index}: no MIG profile id {profile_id}; "
                                    f"known: {[p.profile_id for p in table.profiles]}")
        if start not in profile.starts:
            raise InvalidArgumentError(f"GPU {gpu.index}: {profile.name} cannot start at {start}; "
                                       f"allowed starts {list(profile.starts)}")
        wanted = set(range(start, start + profile.size))
        for other in gpu.gis.values():
            if wanted & set(range(other.start, other.start + other.profile.size)):
                raise InsufficientResourcesError(
                    f"GPU {gpu.index}: {profile.name} at {start} overlaps gi {other.gi_id} "
                    f"({other.profile.name} at {other.start})")
        same = [gi for gi in gpu.gis.values() if gi.profile.profile_id == profile_id]
        if len(same) >= profile.max_instances:
            raise InsufficientResourcesError(
                f"GPU {gpu.index}: {profile.name} already has its maximum of {profile.max_instances} instances")
        used = sum(gi.profile.compute_slices for gi in gpu.gis.values())
        if used + profile.compute_slices > table.compute_slices:
            raise InsufficientResourcesError(
                f"GPU {gpu.index}: {profile.name} needs {profile.compute_slices} compute slices, "
                f"{table.compute_slices - used} free")
        gi_id = gpu_instance_id(table.memory_slices, start, profile.size)
        gi = SimGpuInstance(gpu=gpu, gi_id=gi_id, profile=profile, start=start, key=self._next_key)
        self._next_key += 1
        gpu.gis[gi_id] = gi
        return gi

    def gpu_instances(self, key: GpuUuid | str | int) -> list[SimGpuInstance]:
        gpu = self.answering(key)
        return [gi for _, gi in sorted(gpu.gis.items())]

    def gpu_instance(self, key: GpuUuid | str | int, gi_id: int) -> SimGpuInstance:
        gpu = self.answering(key)
        gi = gpu.gis.get(gi_id)
        if gi is None:
            raise NotFoundError(f"GPU {gpu.index}: no GPU instance {gi_id}")
        return gi

    def live_gi(self, gi: SimGpuInstance) -> SimGpuInstance:
        if not gi.alive:
            raise InvalidArgumentError(f"GPU {gi.gpu.index}: handle to GPU instance {gi.gi_id} is dead "
                                       f"(the instance was destroyed)")
        self.answering(gi.gpu.uuid)
        return gi

    def create_compute_instance(self, gi: SimGpuInstance) -> SimComputeInstance:
        """A compute instance spanning the whole GPU instance (the only kind gridmesh creates)."""
        self.live_gi(gi)
        if gi.cis:
            raise InsufficientResourcesError(f"GPU {gi.gpu.index}: gi {gi.gi_id} already has a compute "
                                             f"instance spanning it")
        self._mig_generation += 1
        mig = uuid.uuid5(_MIG_NAMESPACE, f"{gi.gpu.uuid}\0{gi.gi_id}\0{self._mig_generation}")
        ci = SimComputeInstance(gi=gi, ci_id=0, uuid=MigUuid(f"MIG-{mig}"))
        gi.cis[0] = ci
        return ci

    def compute_instance(self, gi: SimGpuInstance, ci_id: int) -> SimComputeInstance:
        self.live_gi(gi)
        ci = gi.cis.get(ci_id)
        if ci is None:
            raise NotFoundError(f"GPU {gi.gpu.index}: gi {gi.gi_id} has no compute instance {ci_id}")
        return ci

    def destroy_compute_instance(self, ci: SimComputeInstance) -> None:
        if not ci.alive:
            raise InvalidArgumentError(f"GPU {ci.gi.gpu.index}: handle to compute instance {ci.ci_id} of gi "
                                       f"{ci.gi.gi_id} is dead (it was destroyed)")
        self.live_gi(ci.gi)
        busy = [p.pid for p in self.processes.values() if p.ci is ci]
        if busy:
            raise InUseError(f"GPU {ci.gi.gpu.index}: gi {ci.gi.gi_id} ci {ci.ci_id} has processes (pids {busy})")
        ci.alive = False
        del ci.gi.cis[ci.ci_id]

    def destroy_gpu_instance(self, gi: SimGpuInstance) -> None:
        self.live_gi(gi)
        if gi.cis:
            raise InUseError(f"GPU {gi.gpu.index}: gi {gi.gi_id} still has compute instances "
                             f"{sorted(gi.cis)}; destroy them first")
        gi.alive = False
        del gi.gpu.gis[gi.gi_id]

    def mig_device(self, uuid_: str) -> SimComputeInstance:
        for gpu in self.gpus:
            for gi in gpu.gis.values():
                for ci in gi.cis.values():
                    if ci.uuid == uuid_:
                        return ci
        raise NotFoundError(f"no MIG device {uuid_} on simulated host {self.hostname}")

    # --- processes --------------------------------------------------------------------------------------------

    def start_process(self, key: GpuUuid | str | int, used_mib: int = 512, *, mig_device: str = "",
                      pid: int | None = None) -> int:
        """A compute process on a GPU, or on one of its MIG devices (by MIG UUID). Returns the pid."""
        gpu = self.answering(key)
        ci = None
        if mig_device:
            ci = self.mig_device(mig_device)
            if ci.gi.gpu is not gpu:
                raise InvalidArgumentError(f"MIG device {mig_device} is not on GPU {gpu.index}")
        elif gpu.mig_enabled:
            raise InvalidArgumentError(f"GPU {gpu.index} is in MIG mode: a process runs on a MIG device")
        if pid is None:
            pid = self._next_pid
            self._next_pid += 1
        if pid in self.processes:
            raise InvalidArgumentError(f"pid {pid} already runs")
        self.processes[pid] = SimProcess(pid=pid, gpu=gpu, used_mib=used_mib, ci=ci)
        return pid

    def end_process(self, pid: int) -> None:
        if self.processes.pop(pid, None) is None:
            raise NotFoundError(f"no process {pid}")

    def _pids(self, gpu: SimGpu) -> list[int]:
        return sorted(p.pid for p in self.processes.values() if p.gpu is gpu)

    def gpu_processes(self, key: GpuUuid | str | int) -> tuple[GpuProcess, ...]:
        gpu = self.answering(key)
        return tuple(
            GpuProcess(pid=p.pid, used_mib=p.used_mib,
                       gpu_instance_id=None if p.ci is None else p.ci.gi.gi_id,
                       compute_instance_id=None if p.ci is None else p.ci.ci_id)
            for p in sorted(self.processes.values(), key=lambda p: p.pid) if p.gpu is gpu
        )

    # --- telemetry ----------------------------------------------------------------------------------------------

    def sample(self, key: GpuUuid | str | int) -> GpuSample:
        gpu = self.answering(key)
        procs = [p for p in self.processes.values() if p.gpu is gpu]
        load = min(100.0, 40.0 * len(procs))
        used = min(gpu.device.memory_mib, sum(p.used_mib for p in procs))
        return GpuSample(
            gpu=gpu.uuid,
            # As on NVML: the whole-GPU utilisation counters do not work on a GPU in MIG mode.
            gpu_util_pct=None if gpu.mig_enabled else load,
            mem_bw_util_pct=None if gpu.mig_enabled else load * 0.4,
            memory_used_mib=used,
            memory_free_mib=gpu.device.memory_mib - used,
            power_w=65.0 + 5.0 * load,
            temperature_c=32.0 + 0.4 * load,
            sm_clock_mhz=1980 if procs else 345,
            mem_clock_mhz=2619,
        )

    # --- health and faults ---------------------------------------------------------------------------------------

    def inject_xid(self, key: GpuUuid | str | int, code: int, gpu_instance_id: int | None = None) -> XidEvent:
        """The driver reports an XID on this GPU (optionally attributed to one GPU instance)."""
        gpu = self.gpu(key)
        event = XidEvent(seq=len(self.xids) + 1, gpu=gpu.uuid, code=code, gpu_instance_id=gpu_instance_id,
                         compute_instance_id=None if gpu_instance_id is None else 0)
        self.xids.append(event)
        return event

    def inject_ecc_error(self, key: GpuUuid | str | int, count: int = 1, *, remap_pending: bool = True,
                         remap_failed: bool = False) -> None:
        """Uncorrectable ECC errors; by default the driver queues a row remap that needs a GPU reset."""
        gpu = self.gpu(key)
        gpu.ecc_uncorrectable += count
        gpu.remap_pending = gpu.remap_pending or remap_pending
        gpu.remap_failed = gpu.remap_failed or remap_failed
        self.inject_xid(gpu.uuid, 48)

    def set_recovery_action(self, key: GpuUuid | str | int, action: RecoveryAction) -> None:
        self.gpu(key).recovery_action = action

    def fall_off_bus(self, key: GpuUuid | str | int) -> None:
        """The GPU stops answering (XID 79). Only a node reboot brings it back; ``reset_gpu`` does not."""
        gpu = self.gpu(key)
        self.inject_xid(gpu.uuid, 79)
        gpu.lost = True

    def reset_gpu(self, key: GpuUuid | str | int) -> None:
        """An operator's GPU reset (never called by gridmesh): applies a pending MIG mode change (losing the
        instances), clears volatile ECC counts and a pending row remap, and the recovery action."""
        gpu = self.answering(key)
        busy = self._pids(gpu)
        if busy:
            raise InUseError(f"GPU {gpu.index} cannot be reset while processes run on it (pids {busy})")
        if gpu.mig_enabled != gpu.mig_pending:
            for gi in gpu.gis.values():
                gi.alive = False
                for ci in gi.cis.values():
                    ci.alive = False
            gpu.gis.clear()
            gpu.mig_enabled = gpu.mig_pending
        gpu.ecc_uncorrectable = 0
        if gpu.remap_pending:
            gpu.remapped_uncorrectable += 1
            gpu.remap_pending = False
        gpu.recovery_action = RecoveryAction.NONE

    def xids_of(self, key: GpuUuid | str | int, after: int = 0) -> list[XidEvent]:
        gpu = self.gpu(key)
        return [x for x in self.xids[after:] if x.gpu == gpu.uuid]

    # --- AMD partitions -----------------------------------------------------------------------------------------

    def partition_state(self, key: GpuUuid | str | int) -> PartitionState:
        gpu = self.answering(key)
        return PartitionState(gpu=gpu.uuid, compute=gpu.compute_partition, memory=gpu.memory_partition,
                              compute_modes=gpu.model.compute_partitions, memory_modes=gpu.model.memory_partitions)

    def set_partition_modes(self, key: GpuUuid | str | int, compute: str | None, memory: str | None) -> PartitionState:
        gpu = self.answering(key)
        for kind, mode, offered in (("compute", compute, gpu.model.compute_partitions),
                                    ("memory", memory, gpu.model.memory_partitions)):
            if mode is not None and mode not in offered:
                raise NotSupportedError(f"GPU {gpu.index} ({gpu.model.model}) has no {kind} partition mode "
                                        f"{mode!r}; offered: {list(offered)}")
        new_compute = compute if compute is not None else gpu.compute_partition
        new_memory = memory if memory is not None else gpu.memory_partition
        if (new_compute, new_memory) == (gpu.compute_partition, gpu.memory_partition):
            return self.partition_state(key)
        busy = self._pids(gpu)
        if busy:
            raise InUseError(f"GPU {gpu.index}: partitioning cannot change while processes run (pids {busy})")
        allowed = _AMD_COMPATIBLE.get(new_memory, ())
        if new_compute not in allowed:
            raise InvalidArgumentError(f"GPU {gpu.index}: compute partition {new_compute} cannot combine with "
                                       f"memory partition {new_memory}; allowed with it: {list(allowed)}")
        gpu.compute_partition, gpu.memory_partition = new_compute, new_memory
        return self.partition_state(key)
