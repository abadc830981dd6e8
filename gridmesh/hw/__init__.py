"""gridmesh.hw: what GPUs a host has, read from the real driver (NVML) or from a simulator.

Rules:
- One interface, ``GpuBackend`` (``backend.py``); every backend implements all of it, and one contract test
  suite runs against the simulator and, where a GPU is present, NVML. MIG, telemetry and health join the
  same protocol later, for every backend at once.
- Reading is read-only. Nothing in an inventory path changes a GPU; changes are explicit backend methods.
- Data out is frozen dataclasses (``model.py``); the agent turns them into protobuf, never this package.
- Failures are ``HardwareError`` with a message naming what failed (the NVML call and GPU, or the host
  file and field, and what is allowed).
- Facts about GPU models come from the packaged catalog (``catalog.py``), never from guesses in code.
- Imports go one way: this package imports nothing from controller, agent, dataplane or cli. ``pynvml`` is
  imported only by ``nvml.py``, and only when an NVML backend is asked for.
"""

from gridmesh.hw.backend import BACKEND_KINDS, GpuBackend, open_backend
from gridmesh.hw.catalog import GpuModel, catalog, find_model, known_models
from gridmesh.hw.model import GpuDevice, GpuUuid, HardwareError, HostHardware, parse_compute_capability

__all__ = [
    "BACKEND_KINDS",
    "GpuBackend",
    "GpuDevice",
    "GpuModel",
    "GpuUuid",
    "HardwareError",
    "HostHardware",
    "catalog",
    "find_model",
    "known_models",
    "open_backend",
    "parse_compute_capability",
]
