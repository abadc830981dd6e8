"""Choosing the WireGuard backend at start-up: the kernel module where the kernel has it, else
wireguard-go. The choice is made once and logged; a host never mixes the two."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from gridmesh.dataplane import kernel
from gridmesh.dataplane.device import DataplaneError, WireGuardBackend
from gridmesh.dataplane.links import NetlinkLinks
from gridmesh.dataplane.userspace import UserspaceBackend

KINDS = ("auto", "kernel", "userspace")


def choose_backend(kind: str, module_available: Callable[[], bool],
                   userspace_available: Callable[[], bool]) -> str:
    """``kernel`` or ``userspace`` for the configured ``kind``; DataplaneError when neither can run."""
    if kind not in KINDS:
        raise DataplaneError(f"WireGuard backend {kind!r}; allowed {', '.join(KINDS)}")
    if kind in ("auto", "kernel") and module_available():
        return "kernel"
    if kind == "kernel":
        raise DataplaneError("WireGuard backend 'kernel' asked for, but this kernel has no wireguard module")
    if userspace_available():
        return "userspace"
    raise DataplaneError("no WireGuard backend: the kernel has no wireguard module and wireguard-go is not installed")


def wireguard_go_available(binary: str = "wireguard-go") -> bool:
    return shutil.which(binary) is not None


def open_backend(kind: str = "auto", links: NetlinkLinks | None = None,
                 log_dir: Path | None = None) -> WireGuardBackend:
    chosen = choose_backend(kind, kernel.module_available, wireguard_go_available)
    links = links or NetlinkLinks()
    if chosen == "kernel":
        return kernel.KernelBackend(links)
    return UserspaceBackend(links, log_dir=log_dir)
