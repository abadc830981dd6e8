"""Agent footprint: memory and CPU of a real agent process at idle, and the cost of sampling 8 GPUs at 1 Hz.

    python -m benchmarks.agent [--quick] [--gpus 8] [--hz 1]

Goal: under 80 MB RSS and under 1 % of a core. Everything runs on loopback; nothing needs a GPU or root.

- ``baseline_rss_mb`` / ``baseline_cpu_pct``: a bare ``python -c "sleep"`` process, measured in the same run,
  so the agent's figures can be read against what the interpreter alone costs here.
- ``idle_rss_mb`` / ``idle_cpu_pct``: a real ``python -m gridmesh.agent`` process with a host file of N simulated
  H100s, connected to a real controller process (its session open, reporting status every 10 s), measured
  over the window after it connected.
- ``sampling_cpu_pct`` / ``sampling_rss_mb``: telemetry at ``--hz`` over the N GPUs. While the agent does not
  yet take a telemetry rate (``sampling_mode: "loop"``), this is a child process that imports the agent's
  modules (``gridmesh.agent.main``: the same footprint) and runs ``TelemetrySampler`` on an asyncio loop over
  the real NVML backend code with the simulated ``pynvml`` surface (``FakeNvml``), so the Python side of a real
  host's sampling is what is measured. Once the agent has a ``telemetry_hz`` setting, the real agent is
  measured with it instead (``sampling_mode: "agent"``).
- ``sample_cpu_us``: CPU time of one sample of N GPUs through that code path, from the sampler's own
  accounting. It includes the simulated driver answering each call (the fake recomputes the GPU's state),
  so it is an upper bound for the Python side of a real host's sample. ``nvml_driver_us_est``: what the
  driver calls would add per sample on an H100, from the call latencies read on one (hw-facts: memory
  7.8 us, utilisation 3.5, power 2.6; temperature and the two clocks assumed like power): an estimate,
  not a measurement.

CPU is read from ``/proc/<pid>/task/*/schedstat`` (nanoseconds, every thread), falling back to the clock
ticks in ``/proc/<pid>/stat``; RSS from ``VmRSS``. The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path

NVML_US_PER_GPU_EST = 7.8 + 3.5 + 2.6 + 3 * 2.6  # memory, utilisation, power, temperature + 2 clocks (assumed)


# --- measuring a process ---------------------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """CPU time of all the process's threads so far: precise where schedstat exists, else clock ticks."""
    ticks = os.sysconf("SC_CLK_TCK")
    stat = Path(f"/proc/{pid}/stat").read_text()
    parts = stat[stat.rindex(")") + 2:].split()
    coarse = (int(parts[11]) + int(parts[12])) / ticks  # utime + stime, every thread, dead ones included
    precise = 0.0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                precise += int((task / "schedstat").read_text().split()[0]) / 1e9
            except (OSError, ValueError, IndexError):
                continue
    except OSError:
        return coarse
    # schedstat misses threads that exited; ticks are coarse. Whichever saw more CPU is closer to the truth.
    return max(precise, coarse)


def measure(pid: int, seconds: float) -> tuple[float, float, float]:
    """(CPU % of one core over the window, RSS at the end in MB, peak RSS in MB)."""
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    peak = rss_mb(pid)
    while time.monotonic() - t0 < seconds:
        time.sleep(min(1.0, seconds))
        peak = max(peak, rss_mb(pid))
    cpu1, t1 = cpu_seconds(pid), time.monotonic()
    return 100.0 * (cpu1 - cpu0) / (t1 - t0), rss_mb(pid), peak


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- the sampling child ------------------------------------------------------------------------------------------


def sampler_child(host_file: Path, hz: float, report: Path) -> None:
    """Runs in the child process: the agent's imports, then telemetry sampling until SIGTERM."""
    import gridmesh.agent.main  # noqa: F401  # the agent's module footprint (grpc, protobuf, ...)
    from gridmesh.agent.telemetry import TelemetrySampler
    from gridmesh.hw.fake_nvml import FakeNvml
    from gridmesh.hw.nvml import NvmlBackend
    from gridmesh.hw.simhost import SimHost
    from gridmesh.hw.simulator import load_host_file

    backend = NvmlBackend(lib=FakeNvml(SimHost(load_host_file(host_file))))
    backend.inventory()
    sampler = TelemetrySampler(backend, hz)

    async def run() -> None:
        task = asyncio.create_task(sampler.run())
        stopping = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
        await stopping.wait()
        task.cancel()

    asyncio.run(run())
    cost = sampler.cost
    report.write_text(json.dumps({f.name: getattr(cost, f.name) for f in fields(cost)}))


# --- the phases ---------------------------------------------------------------------------------------------------


def write_host_file(root: Path, gpus: int) -> Path:
    path = root / "bench.host.toml"
    path.write_text(f'hostname = "bench-host"\ncpu_count = 64\nmemory_mib = 524288\n'
                    f'[[gpus]]\nmodel = "H100 80GB HBM3"\ncount = {gpus}\nnuma_node = 0\n')
    return path


def baseline(window: float) -> tuple[float, float]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    try:
        time.sleep(0.5)
        cpu, rss, _ = measure(proc.pid, window)
        return cpu, rss
    finally:
        stop(proc)


def agent_supports_telemetry() -> bool:
    from gridmesh.agent.config import AgentConfig

    return "telemetry_hz" in {f.name for f in fields(AgentConfig)}


def idle_and_agent_sampling(root: Path, host_file: Path, window: float,
                            hz: float) -> tuple[tuple[float, float, float], tuple[float, float, float] | None]:
    import grpc

    from gridmesh.testbed.local import LocalGrid
    from gridmesh.v1 import admin_pb2, admin_pb2_grpc
    from gridmesh.v1 import types_pb2 as pb

    with LocalGrid(root / "grid", log_format="text") as grid:
        grid.start_controller()
        with grpc.insecure_channel(grid.address) as channel:
            admin = admin_pb2_grpc.AdminServiceStub(channel)
            admin.CreateSite(admin_pb2.CreateSiteRequest(site=pb.Site(name="bench-site", tier=pb.SITE_TIER_CORE,
                                                                      region="bench")))

            def start(extra: list[str]) -> subprocess.Popen[bytes]:
                log = (root / "agent.log").open("ab")
                return subprocess.Popen(
                    [sys.executable, "-m", "gridmesh.agent", "--host-id", "bench-host", "--site", "bench-site",
                     "--controller", grid.address, "--state-dir", str(root / "agent-state"), "--hw-backend",
                     "simulator", "--host-file", str(host_file), "--log-format", "text", *extra],
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

            def connected() -> bool:
                hosts = admin.ListHosts(admin_pb2.ListHostsRequest()).hosts
                return any(h.connected for h in hosts)

            def wait_connected(proc: subprocess.Popen[bytes]) -> None:
                deadline = time.monotonic() + 30
                while not connected():
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"the agent did not connect; see {root / 'agent.log'}")
                    time.sleep(0.1)
                time.sleep(1.0)  # let start-up settle: the window measures the steady state

            agent = start([])
            try:
                wait_connected(agent)
                idle = measure(agent.pid, window)
            finally:
                stop(agent)
            sampling = None
            if agent_supports_telemetry():
                agent = start(["--telemetry-hz", str(hz)])
                try:
                    wait_connected(agent)
                    sampling = measure(agent.pid, window)
                finally:
                    stop(agent)
            return idle, sampling


def loop_sampling(root: Path, host_file: Path, window: float,
                  hz: float) -> tuple[tuple[float, float, float], dict[str, float]]:
    report = root / "sampler-cost.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.agent", "--sampler-child", str(host_file),
                             "--hz", str(hz), "--report", str(report)], env=env)
    try:
        time.sleep(2.0)  # imports and the first samples: the window measures the steady state
        figures = measure(proc.pid, window)
    finally:
        stop(proc)
    cost = json.loads(report.read_text()) if report.exists() else {}
    return figures, cost


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.agent", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="10-second windows (under a minute in all)")
    p.add_argument("--gpus", type=int, default=8, help="simulated H100s on the host (default 8)")
    p.add_argument("--hz", type=float, default=1.0, help="telemetry rate (default 1)")
    p.add_argument("--sampler-child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--report", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.sampler_child is not None:
        sampler_child(args.sampler_child, args.hz, args.report)
        return

    window = 10.0 if args.quick else 60.0
    with tempfile.TemporaryDirectory(prefix="gridmesh-bench-agent-") as tmp:
        root = Path(tmp)
        host_file = write_host_file(root, args.gpus)
        base_cpu, base_rss = baseline(min(window, 5.0))
        print(f"baseline python: {base_rss:.1f} MB RSS, {base_cpu:.3f} % CPU", file=sys.stderr)
        (idle_cpu, idle_rss, idle_peak), agent_sampling = idle_and_agent_sampling(root, host_file, window, args.hz)
        print(f"agent idle ({args.gpus} simulated H100s, session open): {idle_rss:.1f} MB RSS "
              f"(peak {idle_peak:.1f}), {idle_cpu:.3f} % CPU", file=sys.stderr)
        cost: dict[str, float] = {}
        if agent_sampling is not None:
            mode = "agent"
            samp_cpu, samp_rss, _ = agent_sampling
        else:
            mode = "loop"
            (samp_cpu, samp_rss, _), cost = loop_sampling(root, host_file, window, args.hz)
        print(f"sampling {args.gpus} GPUs at {args.hz} Hz ({mode}): {samp_rss:.1f} MB RSS, {samp_cpu:.3f} % CPU; "
              f"{cost.get('mean_cpu_us', 0):.0f} us CPU a sample", file=sys.stderr)

    result = {
        "idle_rss_mb": round(idle_rss, 1),
        "idle_cpu_pct": round(idle_cpu, 3),
        "sampling_cpu_pct": round(samp_cpu, 3),
        "sampling_rss_mb": round(samp_rss, 1),
        "sampling_mode": mode,
        "baseline_rss_mb": round(base_rss, 1),
        "baseline_cpu_pct": round(base_cpu, 3),
        "sample_cpu_us": round(float(cost.get("mean_cpu_us", 0.0)), 1),
        "sample_wall_us": round(float(cost.get("mean_wall_us", 0.0)), 1),
        "nvml_driver_us_est": round(NVML_US_PER_GPU_EST * args.gpus, 1),
        "gpus": args.gpus,
        "hz": args.hz,
        "window_s": window,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
