"""``gridmesh-agent``: the host agent daemon."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from gridmesh.agent.config import OVERLAY_BACKENDS, AgentConfig, ConfigError, load_config
from gridmesh.agent.host import HostAgent
from gridmesh.agent.overlay import OverlayReconciler
from gridmesh.agent.session import Session
from gridmesh.agent.state import LocalState
from gridmesh.agent.telemetry import TelemetrySampler
from gridmesh.common.daemon import run_until_signalled
from gridmesh.common.logs import setup_logging
from gridmesh.common.model import HostId
from gridmesh.dataplane.backend import open_backend as open_dataplane
from gridmesh.dataplane.device import DataplaneError
from gridmesh.dataplane.links import NetlinkLinks
from gridmesh.hw.backend import BACKEND_KINDS, open_backend
from gridmesh.hw.model import HardwareError

log = logging.getLogger("gridmesh.agent")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gridmesh-agent", description="The gridmesh host agent.")
    p.add_argument("--config", type=Path, help="TOML config file")
    p.add_argument("--host-id")
    p.add_argument("--site")
    p.add_argument("--controller", help="controller address, HOST:PORT")
    p.add_argument("--state-dir", type=Path)
    p.add_argument("--hw-backend", choices=list(BACKEND_KINDS))
    p.add_argument("--telemetry-hz", type=float, help="GPU telemetry samples per second (0: off)")
    p.add_argument("--overlay-backend", choices=list(OVERLAY_BACKENDS), help="workspace overlays (off: none)")
    p.add_argument("--netns-prefix", help="workspace network namespaces are <prefix><workspace>")
    p.add_argument("--overlay-key-rotation-s", type=float, help="rotate workspace keys this often (0: never)")
    p.add_argument("--host-file", type=Path, help="simulated host description (TOML)")
    p.add_argument("--underlay-address")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=["json", "text"])
    return p.parse_args(argv)


async def run(cfg: AgentConfig) -> None:
    backend = open_backend(cfg.hw_backend, cfg.host_file)
    # pyroute2's synchronous API refuses to run inside a running event loop: open it off the loop.
    overlay, overlay_problem = await asyncio.to_thread(open_overlay, cfg)
    agent = HostAgent(HostId(cfg.host_id), backend, LocalState(cfg.state_dir), overlay,
                      key_rotation_s=cfg.overlay_key_rotation_s)
    if overlay_problem:
        agent.report_error("OverlayUnavailable", overlay_problem)
    agent.enforce_persisted()
    log.info("agent started", extra={"host_id": cfg.host_id, "site": cfg.site, "backend": backend.name,
                                     "applied_revision": agent.applied.revision, "controller": cfg.controller})
    session = Session(agent, cfg.controller, cfg.site, cfg.underlay_address)
    task = asyncio.create_task(session.run_forever(), name="session")
    sampler: asyncio.Task[None] | None = None
    if cfg.telemetry_hz > 0:
        telemetry = TelemetrySampler(backend, cfg.telemetry_hz,
                                     on_sample=lambda s: setattr(agent, "latest_sample", s))
        sampler = asyncio.create_task(telemetry.run(), name="telemetry")
    # Ready once local state is enforced: the host is safe even while the controller is away.
    await run_until_signalled()
    log.info("stopping")
    task.cancel()
    if sampler is not None:
        sampler.cancel()
    backend.close()


def open_overlay(cfg: AgentConfig) -> tuple[OverlayReconciler | None, str]:
    """The overlay reconciler, or None with why (turned off, or no WireGuard on this host)."""
    if cfg.overlay_backend == "off":
        return None, ""
    try:
        links = NetlinkLinks()
        wg = open_dataplane(cfg.overlay_backend, links, log_dir=cfg.state_dir / "overlay" / "logs")
        return OverlayReconciler(cfg.host_id, cfg.state_dir, wg, links, netns_prefix=cfg.netns_prefix), ""
    except (DataplaneError, OSError) as e:
        return None, f"workspace overlays are unavailable on this host: {e}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, host_id=args.host_id, site=args.site, controller=args.controller,
                          state_dir=args.state_dir, hw_backend=args.hw_backend, host_file=args.host_file,
                          underlay_address=args.underlay_address, log_level=args.log_level,
                          log_format=args.log_format, telemetry_hz=args.telemetry_hz,
                          overlay_backend=args.overlay_backend, netns_prefix=args.netns_prefix,
                          overlay_key_rotation_s=args.overlay_key_rotation_s)
    except ConfigError as e:
        print(f"gridmesh-agent: {e}", file=sys.stderr)
        sys.exit(2)
    setup_logging(cfg.log_level, cfg.log_format)
    try:
        asyncio.run(run(cfg))
    except HardwareError as e:
        log.error("cannot read the host's hardware: %s", e)
        sys.exit(1)


if __name__ == "__main__":
    main()
