"""Both daemons speak the systemd notify protocol: READY once serving, WATCHDOG, STOPPING on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def receive_until(sock: socket.socket, wanted: str, timeout: float = 20.0) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while wanted not in got:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            got += sock.recv(4096).decode().split("\n")
        except TimeoutError:
            pytest.fail(f"no {wanted} in {got}")
    return got


@pytest.mark.parametrize("daemon", ["controller", "agent"])
def test_daemon_notifies_systemd(tmp_path: Path, daemon: str) -> None:
    sock_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        args = {
            "controller": ["--listen", "127.0.0.1:0", "--state-dir", str(tmp_path / "c")],
            # The agent is ready without a controller: it enforces its persisted state first.
            "agent": ["--site", "s1", "--host-id", "h1", "--controller", "127.0.0.1:1", "--hw-backend",
                      "simulator", "--state-dir", str(tmp_path / "a")],
        }[daemon]
        env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "200000"}
        proc = subprocess.Popen([sys.executable, "-m", f"gridmesh.{daemon}", *args], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            receive_until(sock, "READY=1")
            receive_until(sock, "WATCHDOG=1")
            receive_until(sock, "WATCHDOG=1")
            proc.send_signal(signal.SIGTERM)
            receive_until(sock, "STOPPING=1")
            assert proc.wait(timeout=20) == 0
        finally:
            proc.kill()
            proc.wait()
