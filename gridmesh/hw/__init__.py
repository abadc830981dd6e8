"""gridmesh.hw: a host's GPUs through NVML, AMD SMI or a simulator: inventory, telemetry, MIG and health.

Rules:
- One interface, ``GpuBackend`` (``backend.py``), made of small protocols (inventory, telemetry, MIG,
  health, partitions); every backend implements all of it, and one contract test suite
  (``tests/hw_contract``) runs against the simulator, the NVML and AMD backends over simulated driver
  surfaces, and, where a GPU is present, real NVML (read-only).
- Reading is read-only. Nothing in an inventory, telemetry or health path changes a GPU; changes are the
  explicit MIG and partition methods. Nothing here resets a GPU or touches clocks or power.
- Data out is frozen dataclasses (``model.py``) in one set of units; the agent turns them into protobuf,
  never this package.
- Failures are ``HardwareError`` subclasses, one per kind (insufficient resources, in use, not supported,
  reset required, not found, invalid argument, GPU lost, no permission), the same class for the same
  failure on every backend, with a message naming what failed (the call and GPU, or the host file field).
- Facts about GPU models come from the packaged catalog and readings (``catalog.py``, ``mig.py``), never
  from guesses in code; tables that are documented rather than read say so.
- The simulated hardware (``simhost.py``) enforces the real MIG rules; ``fake_nvml.py`` and
  ``fake_amdsmi.py`` put the ``pynvml``/``amdsmi`` surfaces over it so the real backend code is tested
  on every machine.
- Imports go one way: this package imports nothing from controller, agent, dataplane or cli. ``pynvml`` is
  imported only by the NVML modules and ``amdsmi`` only by ``amd.py`` when an AMD backend is opened.
"""

from gridmesh.hw.backend import (
    BACKEND_KINDS,
    GpuBackend,
    HealthBackend,
    InventoryBackend,
    MigBackend,
    PartitionBackend,
    TelemetryBackend,
    open_backend,
)
from gridmesh.hw.catalog import GpuModel, catalog, find_model, known_models
from gridmesh.hw.mig import MigProfile, MigTable, mig_table
from gridmesh.hw.model import (
    GpuDevice,
    GpuInstance,
    GpuLostError,
    GpuProcess,
    GpuSample,
    GpuUuid,
    HardwareError,
    HealthReading,
    HostHardware,
    InsufficientResourcesError,
    InUseError,
    InvalidArgumentError,
    MigModeChange,
    MigState,
    MigUuid,
    NoPermissionError,
    NotFoundError,
    NotSupportedError,
    PartitionState,
    RecoveryAction,
    ResetRequiredError,
    XidEvent,
    parse_compute_capability,
)

__all__ = [
    "BACKEND_KINDS",
    "GpuBackend",
    "GpuDevice",
    "GpuInstance",
    "GpuLostError",
    "GpuModel",
    "GpuProcess",
    "GpuSample",
    "GpuUuid",
    "HardwareError",
    "HealthBackend",
    "HealthReading",
    "HostHardware",
    "InUseError",
    "InsufficientResourcesError",
    "InvalidArgumentError",
    "InventoryBackend",
    "MigBackend",
    "MigModeChange",
    "MigProfile",
    "MigState",
    "MigTable",
    "MigUuid",
    "NoPermissionError",
    "NotFoundError",
    "NotSupportedError",
    "PartitionBackend",
    "PartitionState",
    "RecoveryAction",
    "ResetRequiredError",
    "TelemetryBackend",
    "XidEvent",
    "catalog",
    "find_model",
    "known_models",
    "mig_table",
    "open_backend",
    "parse_compute_capability",
]
