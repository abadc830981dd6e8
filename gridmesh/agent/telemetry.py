"""Telemetry: sample every GPU at a configurable rate for the agent's status and metrics, and know the cost.

Rules:
- Sampling reads only the cheap per-GPU values (``TelemetryBackend.sample``: memory, utilisation, power,
  temperature, clocks; 2-10 us each on an H100). It never reads the MIG mode (~160 us a GPU), processes or
  health; those belong to inventory and health checks, which run far less often.
- It runs on the agent's event loop, inline: a sample of 8 GPUs is a few hundred microseconds of driver
  calls, less than a thread hand-off would cost. Deadlines are kept on the monotonic clock so the rate does
  not drift, and a late sample is skipped rather than bunched.
- A backend error never stops the sampler: the sample records the error and the loop goes on.
- The cost is measured, not assumed: wall time and thread CPU time per sample, kept in ``cost``.
- Metric names are the ones existing GPU dashboards use (DCGM exporter's), see ``metric_values``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from gridmesh.hw.backend import TelemetryBackend
from gridmesh.hw.model import GpuSample, HardwareError

MAX_RATE_HZ = 50.0


@dataclass(frozen=True, slots=True)
class HostSample:
    """One sample of every GPU, stamped with the wall-clock time it was taken."""

    time: float
    gpus: tuple[GpuSample, ...]
    error: str = ""


@dataclass(frozen=True, slots=True)
class SamplingCost:
    """What sampling has cost so far: per sample, wall time and this thread's CPU time, in microseconds."""

    samples: int = 0
    mean_wall_us: float = 0.0
    max_wall_us: float = 0.0
    mean_cpu_us: float = 0.0
    skipped: int = 0

    def cpu_share(self, rate_hz: float) -> float:
        """The share of one core sampling takes at ``rate_hz`` (0.001 = 0.1 % of a core)."""
        return self.mean_cpu_us * rate_hz / 1e6


class TelemetrySampler:
    """Samples a backend at ``rate_hz``; ``latest`` is the newest sample, ``cost`` what sampling costs.

    ``on_sample`` (optional) is called with every sample, e.g. to update Prometheus gauges or publish to MQTT.
    """

    def __init__(self, backend: TelemetryBackend, rate_hz: float, *,
                 on_sample: Callable[[HostSample], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if not (0 < rate_hz <= MAX_RATE_HZ) or math.isnan(rate_hz):
            raise ValueError(f"telemetry rate {rate_hz} Hz is out of range; allowed: above 0 up to {MAX_RATE_HZ}")
        self.backend = backend
        self.rate_hz = rate_hz
        self.on_sample = on_sample
        self._clock = clock
        self.latest: HostSample | None = None
        self._count = 0
        self._wall_ns = 0
        self._max_wall_ns = 0
        self._cpu_ns = 0
        self._skipped = 0

    @property
    def cost(self) -> SamplingCost:
        n = self._count
        if n == 0:
            return SamplingCost(skipped=self._skipped)
        return SamplingCost(samples=n, mean_wall_us=self._wall_ns / n / 1e3, max_wall_us=self._max_wall_ns / 1e3,
                            mean_cpu_us=self._cpu_ns / n / 1e3, skipped=self._skipped)

    def sample_once(self) -> HostSample:
        """Take one sample now (also what ``run`` does at every tick)."""
        wall0, cpu0 = time.perf_counter_ns(), time.thread_time_ns()
        try:
            sample = HostSample(self._clock(), self.backend.sample())
        except HardwareError as err:
            sample = HostSample(self._clock(), (), f"{type(err).__name__}: {err}")
        wall = time.perf_counter_ns() - wall0
        self._count += 1
        self._wall_ns += wall
        self._max_wall_ns = max(self._max_wall_ns, wall)
        self._cpu_ns += time.thread_time_ns() - cpu0
        self.latest = sample
        if self.on_sample is not None:
            self.on_sample(sample)
        return sample

    async def run(self) -> None:
        """Sample at ``rate_hz`` until cancelled."""
        period = 1.0 / self.rate_hz
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            self.sample_once()
            deadline += period
            now = loop.time()
            if now > deadline:
                # Late (a blocked loop, a slow driver): skip the missed ticks instead of catching up in a burst.
                missed = int((now - deadline) / period) + 1
                self._skipped += missed
                deadline += missed * period
            await asyncio.sleep(deadline - now)


# DCGM exporter names, which Grafana's NVIDIA dashboards query; the same names serve AMD GPUs in gridmesh.
METRICS: tuple[tuple[str, str, str], ...] = (
    ("DCGM_FI_DEV_GPU_UTIL", "gpu_util_pct", "GPU utilisation (%)"),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", "mem_bw_util_pct", "memory bandwidth utilisation (%)"),
    ("DCGM_FI_DEV_FB_USED", "memory_used_mib", "frame buffer memory used (MiB)"),
    ("DCGM_FI_DEV_FB_FREE", "memory_free_mib", "frame buffer memory free (MiB)"),
    ("DCGM_FI_DEV_POWER_USAGE", "power_w", "power draw (W)"),
    ("DCGM_FI_DEV_GPU_TEMP", "temperature_c", "GPU temperature (C)"),
    ("DCGM_FI_DEV_SM_CLOCK", "sm_clock_mhz", "SM clock (MHz)"),
    ("DCGM_FI_DEV_MEM_CLOCK", "mem_clock_mhz", "memory clock (MHz)"),
)


def metric_values(sample: HostSample, labels: dict[str, str] | None = None) -> list[tuple[str, dict[str, str], float]]:
    """``(metric name, labels, value)`` for every value the sample has; values a GPU cannot report are left out
    (an absent series, not a zero)."""
    out: list[tuple[str, dict[str, str], float]] = []
    for gpu_index, gpu in enumerate(sample.gpus):
        gpu_labels = {**(labels or {}), "gpu": str(gpu_index), "UUID": gpu.gpu}
        for name, attribute, _ in METRICS:
            value = getattr(gpu, attribute)
            if value is not None:
                out.append((name, gpu_labels, float(value)))
    return out
