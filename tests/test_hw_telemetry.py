"""Telemetry sampling: rate, cost, what it reads (never the MIG mode), and metric names."""

from __future__ import annotations

import asyncio

import pytest

from gridmesh.agent.telemetry import METRICS, HostSample, TelemetrySampler, metric_values
from gridmesh.hw.fake_nvml import FakeNvml
from gridmesh.hw.model import GpuLostError, GpuSample
from gridmesh.hw.nvml import NvmlBackend
from gridmesh.hw.simhost import SimHost
from gridmesh.hw.simulator import parse_host_description

EIGHT_H100 = {"hostname": "tele", "cpu_count": 16, "gpus": [
    {"model": "H100 80GB HBM3", "count": 4, "mig_enabled": True},
    {"model": "H100 80GB HBM3", "count": 4},
]}


def nvml_over_sim() -> tuple[SimHost, FakeNvml, NvmlBackend]:
    host = SimHost(parse_host_description(EIGHT_H100, "t"))
    fake = FakeNvml(host)
    backend = NvmlBackend(lib=fake)
    backend.inventory()
    return host, fake, backend


def test_sampling_reads_only_the_cheap_values_never_the_mig_mode() -> None:
    host, fake, backend = nvml_over_sim()
    host.start_process(host.gpus[5].uuid, 2048)
    before = fake.calls.copy()
    sample = TelemetrySampler(backend, 1.0).sample_once()
    read = fake.calls - before
    assert set(read) == {"nvmlDeviceGetMemoryInfo", "nvmlDeviceGetUtilizationRates", "nvmlDeviceGetPowerUsage",
                         "nvmlDeviceGetTemperature", "nvmlDeviceGetClockInfo"}
    assert read["nvmlDeviceGetClockInfo"] == 16 and read["nvmlDeviceGetMemoryInfo"] == 8
    assert len(sample.gpus) == 8 and sample.error == ""
    busy = sample.gpus[5]
    assert (busy.gpu_util_pct, busy.memory_used_mib, busy.sm_clock_mhz) == (40.0, 2048, 1980)
    assert sample.gpus[0].gpu_util_pct is None  # MIG mode: NVML has no whole-GPU utilisation
    backend.close()


def test_the_sampler_keeps_its_rate_and_measures_its_cost() -> None:
    _, _, backend = nvml_over_sim()
    seen: list[HostSample] = []
    sampler = TelemetrySampler(backend, 20.0, on_sample=seen.append)

    async def run_for(seconds: float) -> None:
        task = asyncio.create_task(sampler.run())
        await asyncio.sleep(seconds)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run_for(0.5))
    assert 7 <= len(seen) <= 12  # 20 Hz for half a second, first sample at once
    cost = sampler.cost
    assert cost.samples == len(seen)
    assert cost.mean_cpu_us > 0 and 0 < cost.mean_wall_us <= cost.max_wall_us
    assert sampler.latest is seen[-1]
    # 8 GPUs through the NVML code path stay far below a per-cent of a core at 1 Hz.
    assert cost.cpu_share(1.0) < 0.01
    backend.close()


class FailingBackend:
    """A telemetry backend whose GPU fell off the bus between two reads."""

    def __init__(self) -> None:
        self.calls = 0

    def sample(self) -> tuple[GpuSample, ...]:
        self.calls += 1
        raise GpuLostError("NVML nvmlDeviceGetCount failed: GPU is lost")


def test_a_failing_backend_gives_an_error_sample_and_the_loop_goes_on() -> None:
    failing = FailingBackend()
    sampler = TelemetrySampler(failing, 50.0)

    async def run_for(seconds: float) -> None:
        task = asyncio.create_task(sampler.run())
        await asyncio.sleep(seconds)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run_for(0.1))
    assert failing.calls >= 3
    assert sampler.latest is not None and sampler.latest.error.startswith("GpuLostError: NVML nvmlDeviceGetCount")


@pytest.mark.parametrize("rate", [0.0, -1.0, 51.0, float("nan")])
def test_rates_out_of_range_are_refused(rate: float) -> None:
    with pytest.raises(ValueError, match="allowed: above 0 up to 50"):
        TelemetrySampler(FailingBackend(), rate)


def test_metrics_use_the_dcgm_names_and_leave_out_what_a_gpu_cannot_report() -> None:
    _, _, backend = nvml_over_sim()
    sample = TelemetrySampler(backend, 1.0).sample_once()
    values = metric_values(sample, {"host": "tele"})
    names = {name for name, _, _ in values}
    assert names == {name for name, _, _ in METRICS}
    mig_gpu = sample.gpus[0].gpu
    assert not any(n == "DCGM_FI_DEV_GPU_UTIL" and labels["UUID"] == mig_gpu for n, labels, _ in values)
    power = [(labels["gpu"], v) for n, labels, v in values if n == "DCGM_FI_DEV_POWER_USAGE"]
    assert power[0] == ("0", 65.0) and len(power) == 8
    backend.close()
