"""Agent configuration: a TOML file, then environment overrides, then command-line flags.

    [agent]
    host_id = "edge-paris-1-a"          # defaults to the hostname
    site = "edge-paris-1"
    controller = "controller.example:7443"
    state_dir = "/var/lib/gridmesh-agent"
    hw_backend = "auto"                 # auto (NVML when a GPU is present), nvml or simulator
    host_file = "/etc/gridmesh/host.toml"  # the simulator's description of the host's GPUs
    underlay_address = "192.0.2.10"
    log_level = "info"
    log_format = "json"

Environment: GRIDMESH_CONTROLLER, GRIDMESH_HOST_ID, GRIDMESH_SITE, GRIDMESH_STATE_DIR,
GRIDMESH_HW_BACKEND, GRIDMESH_HOST_FILE, GRIDMESH_LOG_LEVEL, GRIDMESH_LOG_FORMAT.
"""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """The configuration is wrong: names the file, the key and what is allowed."""


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


_KEYS = tuple(AgentConfig.__dataclass_fields__)
_PATHS = ("state_dir", "host_file")


def load_config(path: Path | None, env: Mapping[str, str] | None = None, **flags: Any) -> AgentConfig:
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    if path is not None:
        try:
            section = tomllib.loads(path.read_text()).get("agent", {})
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"{path}: {e}") from e
        for key, value in section.items():
            if key not in _KEYS:
                raise ConfigError(f"{path}: [agent] {key} is not a setting; known: {', '.join(_KEYS)}")
            values[key] = value
    for key in _KEYS:
        if env.get(f"GRIDMESH_{key.upper()}"):
            values[key] = env[f"GRIDMESH_{key.upper()}"]
    values.update({k: v for k, v in flags.items() if v is not None})
    for key in _PATHS:
        if values.get(key) is not None:
            values[key] = Path(values[key])
    cfg = replace(AgentConfig(), **values)
    if not cfg.host_id:
        cfg = replace(cfg, host_id=socket.gethostname().split(".")[0].lower())
    if not cfg.site:
        raise ConfigError("site is required: set [agent] site, GRIDMESH_SITE or --site")
    if cfg.hw_backend not in ("auto", "nvml", "simulator"):
        raise ConfigError(f"hw_backend {cfg.hw_backend!r}; allowed auto, nvml or simulator")
    if cfg.log_format not in ("json", "text"):
        raise ConfigError(f"log_format {cfg.log_format!r}; allowed json or text")
    return cfg
