"""``gridmesh-controller``: the controller daemon.

With no config file, ``gridmesh-controller --listen 127.0.0.1:PORT --state-dir DIR`` serves on the
embedded default (SQLite in DIR). ``--listen HOST:0`` picks a free port; the address actually bound
is written to ``DIR/controller.addr`` for scripts and tests.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from gridmesh.common.daemon import run_until_signalled
from gridmesh.common.logs import setup_logging
from gridmesh.controller.config import ConfigError, ControllerConfig, load_config
from gridmesh.controller.server import start_controller

log = logging.getLogger("gridmesh.controller")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gridmesh-controller", description="The gridmesh controller.")
    p.add_argument("--config", type=Path, help="TOML config file")
    p.add_argument("--listen", help="address to serve gRPC on, HOST:PORT (port 0 picks one)")
    p.add_argument("--state-dir", type=Path, help="directory of the embedded store")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=["json", "text"])
    return p.parse_args(argv)


async def serve(cfg: ControllerConfig) -> None:
    controller = await start_controller(cfg)
    host = cfg.listen.rsplit(":", 1)[0]
    address = f"{host}:{controller.port}"
    (cfg.state_dir / "controller.addr").write_text(address + "\n")
    log.info("serving", extra={"address": address, "state_dir": str(cfg.state_dir),
                               "revision": controller.store.revision})
    await run_until_signalled()
    log.info("stopping")
    await controller.stop()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, listen=args.listen, state_dir=args.state_dir, log_level=args.log_level,
                          log_format=args.log_format)
    except ConfigError as e:
        print(f"gridmesh-controller: {e}", file=sys.stderr)
        sys.exit(2)
    setup_logging(cfg.log_level, cfg.log_format)
    try:
        asyncio.run(serve(cfg))
    except OSError as e:
        log.error("cannot start: %s", e)
        sys.exit(1)


if __name__ == "__main__":
    main()
