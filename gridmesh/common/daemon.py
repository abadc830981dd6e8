"""The life of a daemon's main task under systemd: READY, WATCHDOG while alive, STOPPING on a signal."""

from __future__ import annotations

import asyncio
import contextlib
import signal

from gridmesh.common import sdnotify


async def run_until_signalled() -> None:
    """Says READY, feeds the watchdog from the event loop (so a wedged loop gets restarted), and
    returns after SIGTERM or SIGINT, having said STOPPING. Call it once the daemon is able to serve.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sdnotify.ready()
    watchdog = asyncio.create_task(sdnotify.watchdog_loop(), name="watchdog")
    try:
        await stop.wait()
    finally:
        sdnotify.stopping()
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
