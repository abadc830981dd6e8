"""Backends for the contract suite: the same tests run against every face of the hardware.

- ``simulator``: ``SimulatorBackend`` over a simulated host.
- ``nvml-fake``: the real ``NvmlBackend`` code over ``FakeNvml`` (the ``pynvml`` surface, simulated).
- ``amd-fake``: the real ``AmdSmiBackend`` code over ``FakeAmdSmi``.
- ``nvml`` (marker ``gpu``): the real NVML on this machine, read-only. Tests that change a GPU (MIG layout,
  MIG mode, partitions) or inject faults need ``rig.host`` and skip here: nothing in this suite ever changes
  a real GPU's MIG mode, resets it, or touches clocks or power.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from gridmesh.hw import HardwareError, open_backend
from gridmesh.hw.amd import AmdSmiBackend
from gridmesh.hw.backend import GpuBackend
from gridmesh.hw.fake_amdsmi import FakeAmdSmi
from gridmesh.hw.fake_nvml import FakeNvml
from gridmesh.hw.nvml import NvmlBackend
from gridmesh.hw.simhost import SimHost
from gridmesh.hw.simulator import SimulatorBackend, parse_host_description

NVIDIA_HOST = {
    "hostname": "contract-nv",
    "cpu_count": 64,
    "memory_mib": 524288,
    "gpus": [
        {"model": "H100 80GB HBM3", "count": 2, "mig_enabled": True, "numa_node": 0, "nvlink": True},
        {"model": "H100 80GB HBM3", "count": 1, "numa_node": 1},
        {"model": "L4", "count": 1, "numa_node": 1},
    ],
}
AMD_HOST = {
    "hostname": "contract-amd",
    "cpu_count": 64,
    "memory_mib": 524288,
    "gpus": [{"model": "MI300X", "count": 2, "numa_node": 0}, {"model": "MI250X", "count": 1, "numa_node": 1}],
}


@dataclass
class Rig:
    """A backend under test; ``host`` is the simulated hardware behind it (None on real hardware)."""

    kind: str
    backend: GpuBackend
    host: SimHost | None

    @property
    def vendor(self) -> str:
        return "amd" if self.kind == "amd-fake" else "nvidia"

    def sim(self) -> SimHost:
        """The simulated hardware, for tests that change a GPU or inject faults; skips on real hardware."""
        if self.host is None:
            pytest.skip("changes a GPU or injects a fault: simulated backends only (real GPUs are read-only here)")
        return self.host


def real_nvml_or_skip() -> GpuBackend:
    try:
        backend = open_backend("nvml", None)
    except HardwareError as err:
        pytest.skip(f"NVML is not usable here: {err}")
    if not backend.inventory().gpus:
        backend.close()
        pytest.skip("NVML reports no GPU here")
    return backend


@pytest.fixture(params=["simulator", "nvml-fake", "amd-fake", pytest.param("nvml", marks=pytest.mark.gpu)])
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    kind: str = request.param
    backend: GpuBackend
    host: SimHost | None = None
    if kind == "simulator":
        host = SimHost(parse_host_description(NVIDIA_HOST, "contract"))
        backend = SimulatorBackend(host)
    elif kind == "nvml-fake":
        host = SimHost(parse_host_description(NVIDIA_HOST, "contract"))
        backend = NvmlBackend(lib=FakeNvml(host))
    elif kind == "amd-fake":
        host = SimHost(parse_host_description(AMD_HOST, "contract"))
        backend = AmdSmiBackend(lib=FakeAmdSmi(host))
    else:
        backend = real_nvml_or_skip()
    try:
        yield Rig(kind, backend, host)
    finally:
        backend.close()
