"""A simulated GPU host, described by a TOML file, that behaves like the NVML backend.

Host file (every top-level key optional; no ``[[gpus]]`` means a host without GPUs)::

    hostname = "edge-a1"       # default: this machine's hostname
    cpu_count = 32             # default: this machine's CPU count
    memory_mib = 262144        # default: this machine's memory
    [[gpus]]
    model = "H100 80GB HBM3"   # a catalog model (any letter case, vendor prefix allowed)
    count = 4                  # >= 1, default 1
    mig_enabled = true         # default false; only for MIG-capable models
    numa_node = 0              # >= -1, default -1 (unknown)
    nvlink = true              # default false; all GPUs of all groups with nvlink = true are NVLink peers

CPU affinity is derived: the CPUs are split evenly over the NUMA nodes the file names, and a GPU is
closest to its node's share (all CPUs when its node is unknown).

The hardware's behaviour (MIG rules, processes, telemetry, faults) lives in ``gridmesh.hw.simhost``;
``SimulatorBackend.host`` is that state, where tests inject faults.

Rules the simulator keeps:
- The same file on the same hostname gives the same inventory, UUIDs included, across restarts: the agent
  and the controller key state on GPU UUIDs, so a restart must not look like a hardware swap. A changed
  model at an index *does* give a new UUID, as a real swap would.
- Facts come from the catalog (memory, compute capability, MIG capability), never from the file, so a
  simulated H100 cannot claim 100 GB.
- A bad file is refused whole, with an error naming the file, the field, and what is allowed. Unknown keys
  are errors too: a typo (``mig_enable``) must not silently give a non-MIG host.
"""

from __future__ import annotations

import socket
import tomllib
import uuid
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from gridmesh.hw.backend import local_cpu_count, local_memory_mib
from gridmesh.hw.catalog import catalog, find_model, known_models
from gridmesh.hw.mig import MigTable
from gridmesh.hw.model import (
    GpuDevice,
    GpuInstance,
    GpuProcess,
    GpuSample,
    GpuUuid,
    HardwareError,
    HealthReading,
    HostHardware,
    MigModeChange,
    MigState,
    NotSupportedError,
    PartitionState,
)
from gridmesh.hw.simhost import XID_HISTORY, SimHost

# Fixed namespace for simulated GPU UUIDs. Changing it changes every simulated UUID, so never do.
_UUID_NAMESPACE = uuid.UUID("5c1f1b2e-6a0d-4c5e-9b7a-3d2f8e1a9c40")

# PCI buses of the eight GPUs on an HGX H100 board, so simulated bus ids look like real ones. A host with
# more than eight GPUs continues in the next PCI domain, which keeps every id distinct.
_HGX_BUSES = (0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)

_HOST_KEYS = ("hostname", "cpu_count", "memory_mib", "gpus")
_GPU_KEYS = ("model", "count", "mig_enabled", "numa_node", "nvlink")


def simulated_uuid(hostname: str, index: int, model: str) -> GpuUuid:
    """A stable NVML-style UUID for GPU ``index`` of ``model`` on ``hostname``."""
    # NUL separators: no hostname or model name can contain one, so distinct inputs never collide.
    derived = uuid.uuid5(_UUID_NAMESPACE, f"{hostname}\0{index}\0{model}")
    return GpuUuid(f"GPU-{derived}")


def simulated_pci_bus_id(index: int) -> str:
    """An NVML-style PCI bus id (``00000000:18:00.0``), distinct for every index."""
    domain, slot = divmod(index, len(_HGX_BUSES))
    return f"{domain:08X}:{_HGX_BUSES[slot]:02X}:00.0"


def parse_host_description(data: Mapping[str, Any], source: str) -> HostHardware:
    """Validate a parsed host file and build the host it describes.

    ``source`` names the file in error messages.
    """
    _reject_unknown(data, _HOST_KEYS, source, "")

    hostname = data.get("hostname", None)
    if hostname is None:
        hostname = socket.gethostname()
    elif not isinstance(hostname, str) or not hostname.strip():
        raise HardwareError(f"{source}: hostname: must be a non-empty string, got {hostname!r}")
    cpu_count = _int(data, "cpu_count", local_cpu_count(), 1, source, "")
    # 0 reads as "unknown", as on the real backend when the platform cannot say.
    memory_mib = _int(data, "memory_mib", local_memory_mib(), 0, source, "")

    groups = data.get("gpus", [])
    if not isinstance(groups, list):
        raise HardwareError(f"{source}: gpus: must be an array of tables ([[gpus]]), got {groups!r}")

    devices: list[GpuDevice] = []
    linked: list[int] = []
    for position, group in enumerate(groups):
        where = f"gpus[{position}]."
        if not isinstance(group, dict):
            raise HardwareError(f"{source}: gpus[{position}]: must be a table, got {group!r}")
        _reject_unknown(group, _GPU_KEYS, source, where)

        name = group.get("model")
        if not isinstance(name, str):
            raise HardwareError(
                f"{source}: {where}model: required, a GPU model name; known: {', '.join(known_models())}"
            )
        model = find_model(name)
        if model is None:
            raise HardwareError(
                f"{source}: {where}model: unknown GPU model {name!r}; known: {', '.join(known_models())}"
            )
        count = _int(group, "count", 1, 1, source, where)
        numa_node = _int(group, "numa_node", -1, -1, source, where)
        mig_enabled = group.get("mig_enabled", False)
        if not isinstance(mig_enabled, bool):
            raise HardwareError(f"{source}: {where}mig_enabled: must be true or false, got {mig_enabled!r}")
        if mig_enabled and not model.mig_capable:
            capable = [m.model for m in catalog().values() if m.mig_capable]
            raise HardwareError(
                f"{source}: {where}mig_enabled: {model.model} does not support MIG; "
                f"MIG-capable models: {', '.join(capable)}"
            )

        nvlink = group.get("nvlink", False)
        if not isinstance(nvlink, bool):
            raise HardwareError(f"{source}: {where}nvlink: must be true or false, got {nvlink!r}")

        for _ in range(count):
            index = len(devices)
            if nvlink:
                linked.append(index)
            devices.append(
                GpuDevice(
                    index=index,
                    uuid=simulated_uuid(hostname, index, model.model),
                    model=model.model,
                    memory_mib=model.memory_mib,
                    compute_capability=model.compute_capability,
                    pci_bus_id=simulated_pci_bus_id(index),
                    numa_node=numa_node,
                    mig_capable=model.mig_capable,
                    mig_enabled=mig_enabled,
                    vendor=model.vendor,
                )
            )

    nodes = max((d.numa_node for d in devices), default=-1) + 1
    share = cpu_count // nodes if nodes else 0
    finished = []
    for d in devices:
        if d.numa_node >= 0 and share > 0:
            cpus = tuple(range(d.numa_node * share, (d.numa_node + 1) * share))
        else:
            cpus = tuple(range(cpu_count))
        peers = tuple(sorted(devices[i].pci_bus_id for i in linked if i != d.index)) if d.index in linked else ()
        finished.append(replace(d, cpu_affinity=cpus, nvlink_peers=peers))

    return HostHardware(
        hostname=hostname,
        backend=SimulatorBackend.name,
        gpus=tuple(finished),
        cpu_count=cpu_count,
        memory_mib=memory_mib,
    )


def load_host_file(path: Path) -> HostHardware:
    """Read and validate a host file. Errors name the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise HardwareError(f"host file {path}: cannot be read: {err}") from err
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise HardwareError(f"host file {path}: not valid TOML: {err}") from err
    return parse_host_description(data, f"host file {path}")


class SimulatorBackend:
    """A ``GpuBackend`` over a simulated host (``gridmesh.hw.simhost``), with the real rules and errors.

    ``host`` is the simulated hardware: tests start processes and inject faults there.
    """

    name = "simulator"

    def __init__(self, hardware: HostHardware | SimHost) -> None:
        self.host = hardware if isinstance(hardware, SimHost) else SimHost(hardware)
        # XIDs are those seen since the backend was opened, as with a real driver's event set.
        self._xid_start = len(self.host.xids)

    @classmethod
    def from_file(cls, path: Path) -> SimulatorBackend:
        """The host described by the TOML file at ``path``."""
        return cls(load_host_file(path))

    @classmethod
    def empty(cls) -> SimulatorBackend:
        """This machine, simulated with no GPUs."""
        return cls(parse_host_description({}, "empty simulated host"))

    # --- inventory and telemetry

    def inventory(self) -> HostHardware:
        return self.host.hardware()

    def sample(self) -> tuple[GpuSample, ...]:
        samples = []
        for gpu in self.host.gpus:
            if gpu.lost:
                samples.append(GpuSample(gpu.uuid, None, None, None, None, None, None, None, None))
            else:
                samples.append(self.host.sample(gpu.uuid))
        return tuple(samples)

    # --- MIG

    def mig_table(self, gpu: GpuUuid) -> MigTable:
        return self.host.mig_table(gpu)

    def mig_state(self, gpu: GpuUuid) -> MigState:
        sim = self.host.answering(gpu)
        return MigState(
            gpu=sim.uuid,
            capable=sim.device.mig_capable,
            enabled=sim.mig_enabled,
            pending=sim.mig_pending,
            instances=tuple(gi.view() for gi in self.host.gpu_instances(gpu)) if sim.mig_enabled else (),
        )

    def set_mig_mode(self, gpu: GpuUuid, enabled: bool) -> MigModeChange:
        return self.host.set_mig_mode(gpu, enabled)

    def create_instance(self, gpu: GpuUuid, profile_id: int, start: int) -> GpuInstance:
        gi = self.host.create_gpu_instance(gpu, profile_id, start)
        try:
            self.host.create_compute_instance(gi)
        except HardwareError:
            self.host.destroy_gpu_instance(gi)
            raise
        return gi.view()

    def destroy_instance(self, gpu: GpuUuid, gpu_instance_id: int) -> None:
        gi = self.host.gpu_instance(gpu, gpu_instance_id)
        for ci_id in sorted(gi.cis):
            self.host.destroy_compute_instance(self.host.compute_instance(gi, ci_id))
        self.host.destroy_gpu_instance(gi)

    # --- health

    def processes(self, gpu: GpuUuid) -> tuple[GpuProcess, ...]:
        return self.host.gpu_processes(gpu)

    def health(self, gpu: GpuUuid) -> HealthReading:
        sim = self.host.gpu(gpu)
        xids = tuple(self.host.xids_of(gpu, self._xid_start))
        seq = xids[-1].seq if xids else 0
        if sim.lost:
            return HealthReading(gpu=sim.uuid, reachable=False, xid_seq=seq, xids=xids[-XID_HISTORY:],
                                 detail=f"GPU {sim.index} has fallen off the bus")
        return HealthReading(
            gpu=sim.uuid,
            reachable=True,
            ecc_uncorrectable=sim.ecc_uncorrectable,
            remapped_rows_uncorrectable=sim.remapped_uncorrectable,
            remap_pending=sim.remap_pending,
            remap_failed=sim.remap_failed,
            recovery_action=sim.recovery_action,
            xid_seq=seq,
            xids=xids[-XID_HISTORY:],
        )

    # --- partitions

    def partition_state(self, gpu: GpuUuid) -> PartitionState:
        return self.host.partition_state(gpu)

    def set_partition_modes(self, gpu: GpuUuid, compute: str | None, memory: str | None) -> PartitionState:
        state = self.host.partition_state(gpu)
        if not state.compute_modes and not state.memory_modes:
            raise NotSupportedError(f"GPU {gpu} ({self.host.gpu(gpu).model.model}) has no partition modes")
        return self.host.set_partition_modes(gpu, compute, memory)

    def close(self) -> None:
        # Nothing is held; present because every backend has it.
        pass


def _reject_unknown(table: Mapping[str, Any], allowed: tuple[str, ...], source: str, where: str) -> None:
    for key in table:
        if key not in allowed:
            raise HardwareError(f"{source}: {where}{key}: unknown field; allowed: {', '.join(allowed)}")


def _int(table: Mapping[str, Any], key: str, default: int, minimum: int, source: str, where: str) -> int:
    value = table.get(key, default)
    # TOML booleans arrive as bool, which Python counts as int; `count = true` is a mistake.
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise HardwareError(f"{source}: {where}{key}: must be an integer >= {minimum}, got {value!r}")
    return value
