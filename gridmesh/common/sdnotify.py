"""A small systemd notification client (``sd_notify(3)``), with no dependencies.

Rules:
- Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op returning False, so the same binary runs
  under systemd, in a container, or from a terminal.
- Notification failures never raise: a service must not die because its supervisor's socket is gone.
  They return False and log a warning, because under ``Type=notify`` a lost ``READY=1`` means systemd
  will time the start out, and the operator needs to see why.
- The watchdog is kept alive from the asyncio event loop on purpose: if the loop wedges, the pings stop
  and systemd restarts the service, which is exactly what the watchdog is for. Do not move the pings to
  a thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

log = logging.getLogger(__name__)

NOTIFY_VARIABLES: tuple[str, ...] = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
"""Environment variables systemd hands the service. Strip them from processes the service starts, or a
child could speak for the service (``NotifyAccess=main`` makes systemd ignore it, but it still confuses)."""

# A notification is one datagram; if systemd's queue is full a blocking send would stall the event loop
# indefinitely. Waiting a little is fine; waiting forever is not.
_SEND_TIMEOUT_S = 1.0


def _address() -> str | None:
    raw = os.environ.get("NOTIFY_SOCKET")
    if not raw:
        return None
    if raw.startswith("@"):
        # Linux abstract namespace: the name starts with a NUL byte instead of '@'.
        return "\0" + raw[1:]
    if raw.startswith("/"):
        return raw
    # systemd 253+ may also hand out "vsock:CID:PORT" (for VMs); gridmesh services run on the host.
    log.warning("NOTIFY_SOCKET=%r is not a unix socket address; systemd notifications disabled", raw)
    return None


def notify(state: str) -> bool:
    """Send ``state`` (``"READY=1"``, newline-separated assignments) to systemd.

    True when the datagram was sent; False outside systemd or when sending failed.
    """
    address = _address()
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(_SEND_TIMEOUT_S)
            sock.sendto(state.encode("utf-8"), address)
    except OSError as err:
        log.warning("systemd notification %r to %r failed: %s", state, os.environ.get("NOTIFY_SOCKET"), err)
        return False
    return True


def ready() -> bool:
    """Tell systemd start-up is complete (``Type=notify`` waits for this)."""
    return notify("READY=1")


def stopping() -> bool:
    """Tell systemd the service is shutting down on purpose."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """Set the one-line status ``systemctl status`` shows."""
    # Each line of a notification is an assignment; a newline in the text would start a new one.
    return notify("STATUS=" + " ".join(text.splitlines()))


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings (half of ``WatchdogSec=``), or None when no watchdog is ours.

    ``WATCHDOG_PID`` names the process the watchdog is meant for; a child that inherited the environment
    must not ping on its parent's behalf.
    """
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            log.warning("WATCHDOG_PID=%r is not a process id; watchdog disabled", pid)
            return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not a number of microseconds; watchdog disabled", usec)
        return None
    if value <= 0:
        return None
    # Half the timeout, as sd_watchdog_enabled(3) recommends: one late ping must not be fatal.
    return value / 2 / 1_000_000


async def watchdog_loop() -> None:
    """Send ``WATCHDOG=1`` every ``watchdog_interval()`` seconds until cancelled.

    Returns at once when systemd runs no watchdog for this process.
    """
    interval = watchdog_interval()
    if interval is None:
        return
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)
