"""Agent configuration: a TOML file, then environment overrides, then command-line flags.

    [agent]
    host_id = "edge-paris-1-a"          # defaults to the hostname
    site = "edge-paris-1"
    controller = "controller.example:7443"
    state_dir = "/var/lib/gridmesh-agent"
    hw_backend = "auto"                 # auto (NVML, then AMD SMI, then the simulator), nvml, amd or simulator
    host_file = "/etc/gridmesh/host.toml"  # the simulator's description of the host's GPUs
    underlay_address = "192.0.2.10"
    log_level = "info"
    log_format = "json"
    telemetry_hz = 1.0                  # GPU telemetry samples per second; 0 turns sampling off
    overlay_backend = "auto"            # workspace overlays: auto, kernel, userspace (wireguard-go) or off
    netns_prefix = "gmws-"              # workspace network namespaces are named <prefix><workspace>
    overlay_key_rotation_s = 86400      # rotate each workspace's WireGuard key this often (0: never)

Environment: GRIDMESH_ and the key in capitals (GRIDMESH_CONTROLLER, GRIDMESH_SITE, ...).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from gridmesh.agent.telemetry import MAX_RATE_HZ
from gridmesh.common.settings import ENV_SOURCE, FLAGS_SOURCE, ConfigError, build, from_env, read_toml
from gridmesh.hw.backend import BACKEND_KINDS

__all__ = ["AgentConfig", "ConfigError", "load_config"]
OVERLAY_BACKENDS = ("auto", "kernel", "userspace", "off")


@dataclass(frozen=True, slots=True)
class AgentConfig:
    host_id: str = ""
    site: str = ""
    controller: str = "127.0.0.1:7443"
    state_dir: Path = Path("/var/lib/gridmesh-agent")
    hw_backend: str = "auto"
    host_file: Path | None = None
    underlay_address: str = ""
    log_level: str = "info"
    log_format: str = "json"
    telemetry_hz: float = 1.0  # GPU telemetry samples per second; 0 turns sampling off
    overlay_backend: str = "auto"  # WireGuard: auto, kernel, userspace (wireguard-go) or off
    netns_prefix: str = "gmws-"  # workspace namespaces are <prefix><workspace>
    overlay_key_rotation_s: float = 0.0  # rotate each workspace key this often; 0: never


def load_config(path: Path | None, env: Mapping[str, str] | None = None, **flags: Any) -> AgentConfig:
    env = os.environ if env is None else env
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if path is not None:
        layers.append((f"{path}: [agent]", read_toml(path, ("agent",)).get("agent", {})))
    layers.append((ENV_SOURCE, from_env(env, [f.name for f in fields(AgentConfig)])))
    layers.append((FLAGS_SOURCE, flags))
    cfg = build(AgentConfig, layers)
    if not cfg.host_id:
        cfg = replace(cfg, host_id=socket.gethostname().split(".")[0].lower())
    if not cfg.site:
        raise ConfigError("site is required: set [agent] site, GRIDMESH_SITE or --site")
    if cfg.hw_backend not in BACKEND_KINDS:
        raise ConfigError(f"hw_backend {cfg.hw_backend!r}; allowed {', '.join(BACKEND_KINDS)}")
    if cfg.overlay_backend not in OVERLAY_BACKENDS:
        raise ConfigError(f"overlay_backend {cfg.overlay_backend!r}; allowed {', '.join(OVERLAY_BACKENDS)}")
    if cfg.overlay_key_rotation_s < 0:
        raise ConfigError(f"overlay_key_rotation_s {cfg.overlay_key_rotation_s:g}; must be 0 (never) or more")
    if not 0 <= cfg.telemetry_hz <= MAX_RATE_HZ:
        raise ConfigError(f"telemetry_hz {cfg.telemetry_hz:g}; allowed 0 (off) to {MAX_RATE_HZ:g}")
    if cfg.log_format not in ("json", "text"):
        raise ConfigError(f"log_format {cfg.log_format!r}; allowed json or text")
    return cfg
