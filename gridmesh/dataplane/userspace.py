"""The userspace backend: one ``wireguard-go`` process per device, driven through its UAPI socket.

Rules:
- ``wireguard-go NAME`` is started in the underlay namespace (its UDP socket stays there) and
  daemonizes itself, so stopping the agent never stops a tunnel (static stability). Once its UAPI
  socket answers, the device is moved into the workspace namespace.
- Deleting the link ends the daemon (its TUN device is gone) and it removes its socket; a daemon
  that outlives that is terminated, and a socket left by a killed daemon is removed.
- wireguard-go logs at ``error`` level only, to a file per device when a log directory is given.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from gridmesh.dataplane import keys
from gridmesh.dataplane.device import DataplaneError, DeviceChange, DeviceNotFound
from gridmesh.dataplane.links import NETNS_DIR, NetlinkLinks
from gridmesh.dataplane.model import WgDeviceState
from gridmesh.dataplane.uapi import DEFAULT_RUN_DIR, UapiClient

START_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 3.0


def daemon_pid(name: str, binary: str = "wireguard-go") -> int | None:
    """The pid of the wireguard-go daemon of device ``name`` (its command line is exactly
    ``wireguard-go NAME``; device names are unique on a machine)."""
    want = [os.path.basename(binary).encode(), name.encode()]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")[:-1]
        except OSError:
            continue
        if len(argv) == 2 and [os.path.basename(argv[0]), argv[1]] == want:
            return int(entry.name)
    return None


class UserspaceBackend:
    name = "wireguard-go"

    def __init__(self, links: NetlinkLinks | None = None, log_dir: Path | None = None,
                 run_dir: Path = DEFAULT_RUN_DIR, binary: str = "wireguard-go") -> None:
        self.links = links or NetlinkLinks()
        self.log_dir = log_dir
        self.run_dir = run_dir
        self.binary = binary

    def _client(self, name: str) -> UapiClient:
        return UapiClient(name, self.run_dir)

    def create(self, name: str, netns: str) -> None:
        client = self._client(name)
        client.remove_stale()
        if client.exists():
            raise DataplaneError(f"cannot create {name}: a wireguard-go already answers on {client.path}")
        # wireguard-go daemonizes itself: it returns once the device and its socket exist, and the
        # daemon is nobody's child here, so it outlives the agent and is never left a zombie of it.
        argv = [self.binary, name]
        if self.links.underlay_netns is not None:
            # Only the network namespace: ``ip netns exec`` would add a private mount namespace.
            argv = ["nsenter", f"--net={NETNS_DIR / self.links.underlay_netns}", "--", *argv]
        log_path = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_path = self.log_dir / f"{name}.log"
        try:
            # GRIDMESH_WG_LOG_LEVEL=verbose makes the daemons log every handshake (for debugging).
            env = {**os.environ, "LOG_LEVEL": os.environ.get("GRIDMESH_WG_LOG_LEVEL", "error")}
            with open(log_path or os.devnull, "ab") as log:
                done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, check=False,
                                      timeout=START_TIMEOUT_S, env=env)
        except FileNotFoundError:
            raise DataplaneError(f"cannot create {name}: {self.binary} is not installed") from None
        except subprocess.TimeoutExpired:
            raise DataplaneError(f"wireguard-go for {name} did not start in {START_TIMEOUT_S}s") from None
        # Ready means a served request, not a connectable socket: the socket is made (and listens)
        # before the daemonized child has finished setting up the TUN device, which it looks up by
        # name in *its* namespace. Moving the link before that makes the child fail and exit.
        ready = False
        if done.returncode == 0:
            try:
                UapiClient(name, self.run_dir, timeout=START_TIMEOUT_S).get()
                ready = True
            except DataplaneError:
                pass
        if not ready:
            self.delete(name, netns)
            raise DataplaneError(f"wireguard-go for {name} did not start (exit status {done.returncode}); "
                                 f"see {log_path or 'its output'}")
        try:
            self.links.move_link(name, netns)
        except DataplaneError:
            self.delete(name, netns)
            raise

    def delete(self, name: str, netns: str) -> None:
        """Deleting the link ends the daemon; one that outlives it is terminated."""
        if not self.links.delete_link(netns, name):
            self.links.delete_link(self.links.underlay_netns, name)
        client = self._client(name)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while client.exists() and client.alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if client.exists() and client.alive():
            pid = daemon_pid(name, self.binary)
            if pid is not None:
                os.kill(pid, signal.SIGTERM)
                while client.alive() and time.monotonic() < deadline + STOP_TIMEOUT_S:
                    time.sleep(0.01)
        client.remove_stale()

    def get(self, name: str, netns: str) -> WgDeviceState | None:
        client = self._client(name)
        if not client.exists():
            return None
        try:
            private, state = client.get()
        except DeviceNotFound:
            return None
        if private is None:
            return state
        # Only the public half leaves this function.
        public = keys.public_key(private)
        del private
        return WgDeviceState(name=state.name, public_key=public, listen_port=state.listen_port, peers=state.peers)

    def configure(self, name: str, netns: str, change: DeviceChange) -> None:
        if change.empty:
            return
        self._client(name).set(change)

    def close(self) -> None:
        pass
