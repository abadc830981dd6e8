"""Network namespaces and links: create, delete, move, address, bring up.

Rules:
- Namespaces are named, in ``/var/run/netns`` (what ``ip netns`` uses), and made and removed with
  ``ip netns``, so operators see exactly what the agent made.
- Link work goes through pyroute2's RTNL API from a short-lived thread that has joined the target
  namespace (``setns`` moves only the calling thread). A netlink socket stays in the namespace it
  was created in, so everything done through it lands there. No fork, no change to the process's
  own namespace, and safe to call from a worker thread of an asyncio program (pyroute2's
  synchronous API runs its own event loop, so it must not be called from a running loop's thread).
- ``None`` as a namespace means the caller's own (the host's underlay namespace for the agent).
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import ipaddress
import os
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pyroute2 import IPRoute  # type: ignore[import-untyped]
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

from gridmesh.dataplane.device import DataplaneError
from gridmesh.dataplane.model import LinkState

T = TypeVar("T")

NETNS_DIR = Path("/var/run/netns")
CLONE_NEWNET = 0x40000000

_libc: ctypes.CDLL | None = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    """Runs ``fn`` in a thread that has joined namespace ``netns`` (or here, for ``None``)."""
    if netns is None:
        return fn()
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(NETNS_DIR / netns, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            error.append(DataplaneError(f"network namespace {netns} does not exist"))
            return
        try:
            _setns(fd)
            result.append(fn())
        except BaseException as e:  # handed to the caller's thread
            error.append(e)
        finally:
            os.close(fd)

    t = threading.Thread(target=run, name=f"netns-{netns}")
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def socket_in_netns(netns: str | None, family: int = socket.AF_INET, type_: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket that lives in ``netns``: it binds, connects and routes there."""
    return in_netns(netns, lambda: socket.socket(family, type_))


def netns_exists(netns: str) -> bool:
    return (NETNS_DIR / netns).exists()


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)
    if done.returncode != 0:
        raise DataplaneError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def create_netns(netns: str) -> None:
    """Creates ``netns`` if it is missing, with its loopback up. Idempotent."""
    if not netns_exists(netns):
        _ip("netns", "add", netns)
    in_netns(netns, lambda: _with_ipr(lambda ipr: ipr.link("set", index=1, state="up")))


def delete_netns(netns: str) -> None:
    """Deletes ``netns`` if it exists. Devices in it go with it (a veth takes its peer along)."""
    if netns_exists(netns):
        _ip("netns", "delete", netns)


def list_netns() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def _with_ipr(fn: Callable[[Any], T]) -> T:
    with IPRoute() as ipr:
        return fn(ipr)


def _index(ipr: Any, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


class LinkOps(Protocol):
    """Namespaces and the links in them, as the overlay reconciler needs them."""

    def ensure_netns(self, netns: str) -> None: ...

    def delete_netns(self, netns: str) -> None: ...

    def netns_exists(self, netns: str) -> bool: ...

    def get_link(self, netns: str, name: str) -> LinkState | None: ...

    def add_address(self, netns: str, name: str, address: str) -> None: ...

    def remove_address(self, netns: str, name: str, address: str) -> None: ...

    def set_up(self, netns: str, name: str) -> None: ...


class NetlinkLinks:
    """``LinkOps`` on the real kernel. ``underlay_netns`` is where devices are born (``None``: here)."""

    def __init__(self, underlay_netns: str | None = None) -> None:
        self.underlay_netns = underlay_netns

    def ensure_netns(self, netns: str) -> None:
        create_netns(netns)

    def delete_netns(self, netns: str) -> None:
        delete_netns(netns)

    def netns_exists(self, netns: str) -> bool:
        return netns_exists(netns)

    def get_link(self, netns: str | None, name: str) -> LinkState | None:
        if netns is not None and not netns_exists(netns):
            return None

        def read(ipr: Any) -> LinkState | None:
            index = _index(ipr, name)
            if index is None:
                return None
            link = ipr.get_links(index)[0]
            addrs = []
            for a in ipr.get_addr(index=index, family=socket.AF_INET):
                addrs.append(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
            return LinkState(name=name, netns=netns or "", addresses=tuple(sorted(addrs)),
                             up=bool(link["flags"] & 1))

        return in_netns(netns, lambda: _with_ipr(read))

    def add_address(self, netns: str, name: str, address: str) -> None:
        iface = ipaddress.ip_interface(address)

        def add(ipr: Any) -> None:
            index = self._need(ipr, netns, name)
            try:
                ipr.addr("add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
            except NetlinkError as e:
                if e.code != errno_mod.EEXIST:
                    raise DataplaneError(f"add address {address} to {name} in {netns}: {e}") from None

        in_netns(netns, lambda: _with_ipr(add))

    def remove_address(self, netns: str, name: str, address: str) -> None:
        iface = ipaddress.ip_interface(address)

        def remove(ipr: Any) -> None:
            index = self._need(ipr, netns, name)
            try:
                ipr.addr("del", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
            except NetlinkError as e:
                if e.code != errno_mod.EADDRNOTAVAIL:
                    raise DataplaneError(f"remove address {address} from {name} in {netns}: {e}") from None

        in_netns(netns, lambda: _with_ipr(remove))

    def set_up(self, netns: str, name: str) -> None:
        in_netns(netns, lambda: _with_ipr(lambda ipr: ipr.link("set", index=self._need(ipr, netns, name),
                                                               state="up")))

    def move_link(self, name: str, to_netns: str) -> None:
        """Moves ``name`` from the underlay namespace into ``to_netns``."""
        if not netns_exists(to_netns):
            raise DataplaneError(f"cannot move {name}: network namespace {to_netns} does not exist")

        def move(ipr: Any) -> None:
            index = self._need(ipr, self.underlay_netns or "the underlay namespace", name)
            fd = os.open(NETNS_DIR / to_netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                ipr.link("set", index=index, net_ns_fd=fd)
            finally:
                os.close(fd)

        in_netns(self.underlay_netns, lambda: _with_ipr(move))

    def delete_link(self, netns: str | None, name: str) -> bool:
        """Deletes ``name`` from ``netns``; False when it is not there."""
        if netns is not None and not netns_exists(netns):
            return False

        def delete(ipr: Any) -> bool:
            index = _index(ipr, name)
            if index is None:
                return False
            try:
                ipr.link("del", index=index)
            except NetlinkError as e:
                if e.code == errno_mod.ENODEV:
                    return False
                raise DataplaneError(f"delete link {name} in {netns}: {e}") from None
            return True

        return in_netns(netns, lambda: _with_ipr(delete))

    def create_wireguard_link(self, name: str) -> None:
        """Creates a kernel WireGuard link in the underlay namespace."""

        def create(ipr: Any) -> None:
            try:
                ipr.link("add", ifname=name, kind="wireguard")
            except NetlinkError as e:
                raise DataplaneError(f"create kernel WireGuard device {name}: {e}") from None

        in_netns(self.underlay_netns, lambda: _with_ipr(create))

    @staticmethod
    def _need(ipr: Any, netns: str, name: str) -> int:
        index = _index(ipr, name)
        if index is None:
            raise DataplaneError(f"no link {name} in network namespace {netns}")
        return index
