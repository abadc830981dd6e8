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

Environment: GRIDMESH_ and the key in capitals (GRIDMESH_LISTEN, GRIDMESH_STATE_DIR, ...).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from gridmesh.common.model import SiteName, SiteTier
from gridmesh.common.settings import ENV_SOURCE, FLAGS_SOURCE, ConfigError, build, from_env, read_toml
from gridmesh.controller.model import Site

__all__ = ["ConfigError", "ControllerConfig", "load_config"]


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    listen: str = "127.0.0.1:7443"
    state_dir: Path = Path("/var/lib/gridmesh-controller")
    status_interval_s: int = 10
    placement_interval_s: float = 1.0
    log_level: str = "info"
    log_format: str = "json"
    sites: tuple[Site, ...] = field(default=())


_SITE_KEYS = ("name", "tier", "region", "price", "latency_ms")


def _site(where: str, raw: dict[str, Any]) -> Site:
    for key in raw:
        if key not in _SITE_KEYS:
            raise ConfigError(f"{where}: {key} is not a site setting; known: {', '.join(_SITE_KEYS)}")
    tiers = ", ".join(t.name.lower() for t in SiteTier)
    for key in ("name", "tier", "region"):
        if not isinstance(raw.get(key), str):
            raise ConfigError(f"{where}: {key} is required and must be a string (tier: one of {tiers})")
    try:
        tier = SiteTier[raw["tier"].upper()]
    except KeyError:
        raise ConfigError(f"{where}: tier {raw['tier']!r}; allowed: {tiers}") from None
    try:
        prices = tuple(sorted((str(k), float(v)) for k, v in raw.get("price", {}).items()))
        latency = tuple(sorted((str(k), float(v)) for k, v in raw.get("latency_ms", {}).items()))
    except (AttributeError, TypeError, ValueError):
        raise ConfigError(f"{where}: price and latency_ms must be tables of numbers") from None
    return Site(name=SiteName(raw["name"]), tier=tier, region=raw["region"], price_per_gpu_hour=prices,
                latency_ms=latency)


def load_config(path: Path | None, env: Mapping[str, str] | None = None, **flags: Any) -> ControllerConfig:
    env = os.environ if env is None else env
    layers: list[tuple[str, Mapping[str, Any]]] = []
    sites: list[Site] = []
    if path is not None:
        raw = read_toml(path, ("controller", "sites"))
        layers.append((f"{path}: [controller]", raw.get("controller", {})))
        sites = [_site(f"{path}: [[sites]] #{i + 1}", s) for i, s in enumerate(raw.get("sites", []))]
    settings = [f.name for f in fields(ControllerConfig) if f.name != "sites"]
    layers.append((ENV_SOURCE, from_env(env, settings)))
    layers.append((FLAGS_SOURCE, flags))
    cfg = replace(build(ControllerConfig, layers, exclude=("sites",)), sites=tuple(sites))
    if cfg.log_format not in ("json", "text"):
        raise ConfigError(f"log_format {cfg.log_format!r}; allowed json or text")
    return cfg
