"""Controller configuration: a TOML file, then environment overrides, then command-line flags.

    [controller]
    listen = "0.0.0.0:7443"
    state_dir = "/var/lib/gridmesh-controller"
    status_interval_s = 10
    placement_interval_s = 1.0
    log_level = "info"
    log_format = "json"        # or "text"

    [[sites]]                  # created at start when missing
    name = "edge-paris-1"
    tier = "far_edge"
    region = "eu-fr"

Environment: GRIDMESH_LISTEN, GRIDMESH_STATE_DIR, GRIDMESH_LOG_LEVEL, GRIDMESH_LOG_FORMAT.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gridmesh.common.model import SiteName, SiteTier
from gridmesh.controller.model import Site


class ConfigError(Exception):
    """The configuration is wrong: names the file, the key and what is allowed."""


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    listen: str = "127.0.0.1:7443"
    state_dir: Path = Path("/var/lib/gridmesh-controller")
    status_interval_s: int = 10
    placement_interval_s: float = 1.0
    log_level: str = "info"
    log_format: str = "json"
    sites: tuple[Site, ...] = field(default=())


_ENV = {"GRIDMESH_LISTEN": "listen", "GRIDMESH_STATE_DIR": "state_dir", "GRIDMESH_LOG_LEVEL": "log_level",
        "GRIDMESH_LOG_FORMAT": "log_format"}


def _site(where: str, raw: dict[str, Any]) -> Site:
    try:
        tier = SiteTier[str(raw["tier"]).upper()]
        return Site(name=SiteName(str(raw["name"])), tier=tier, region=str(raw["region"]),
                    price_per_gpu_hour=tuple(sorted((str(k), float(v)) for k, v in raw.get("price", {}).items())),
                    latency_ms=tuple(sorted((str(k), float(v)) for k, v in raw.get("latency_ms", {}).items())))
    except KeyError as e:
        allowed = ", ".join(t.name.lower() for t in SiteTier)
        raise ConfigError(f"{where}: missing or unknown {e} (a site needs name, tier ({allowed}) and region)") from e


def load_config(path: Path | None, env: dict[str, str] | None = None, **flags: Any) -> ControllerConfig:
    values: dict[str, Any] = {}
    sites: list[Site] = []
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"{path}: {e}") from e
        section = raw.get("controller", {})
        known = {f for f in ControllerConfig.__dataclass_fields__ if f != "sites"}
        for key, value in section.items():
            if key not in known:
                raise ConfigError(f"{path}: [controller] {key} is not a setting; known: {', '.join(sorted(known))}")
            values[key] = value
        sites = [_site(f"{path}: [[sites]] #{i + 1}", s) for i, s in enumerate(raw.get("sites", []))]
    for var, key in _ENV.items():
        if (env if env is not None else os.environ).get(var):
            values[key] = (env if env is not None else os.environ)[var]
    values.update({k: v for k, v in flags.items() if v is not None})
    if "state_dir" in values:
        values["state_dir"] = Path(values["state_dir"])
    cfg = replace(ControllerConfig(), **values, sites=tuple(sites))
    if cfg.log_format not in ("json", "text"):
        raise ConfigError(f"log_format {cfg.log_format!r}; allowed json or text")
    return cfg
