"""A grid on loopback: one controller process and agent processes with simulated GPUs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any


@dataclass
class Proc:
    name: str
    args: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        # A new session, so that stopping the test bed never signals whoever started it.
        self.popen = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, kill: bool = False, timeout: float = 10.0) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class LocalGrid:
    """Starts processes under ``root`` (state directories, host files and logs all live there)."""

    def __init__(self, root: Path, log_format: str = "json") -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_format = log_format
        self.controller: Proc | None = None
        self.address = ""
        self.agents: dict[str, Proc] = {}

    def __enter__(self) -> LocalGrid:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _python(self, module: str, *args: str) -> list[str]:
        return [sys.executable, "-m", module, "--log-format", self.log_format, *args]

    def start_controller(self, timeout: float = 20.0) -> str:
        state = self.root / "controller"
        state.mkdir(exist_ok=True)
        addr_file = state / "controller.addr"
        addr_file.unlink(missing_ok=True)
        self.controller = Proc("controller", self._python("gridmesh.controller", "--listen", "127.0.0.1:0",
                                                          "--state-dir", str(state)), self.root / "controller.log")
        self.controller.start()
        deadline = time.monotonic() + timeout
        while not addr_file.exists():
            if not self.controller.running or time.monotonic() > deadline:
                raise RuntimeError(f"controller did not start:\n{self.controller.log_tail()}")
            time.sleep(0.05)
        self.address = addr_file.read_text().strip()
        return self.address

    def write_host_file(self, host_id: str, gpus: list[dict[str, Any]]) -> Path:
        lines = [f'hostname = "{host_id}"', "cpu_count = 32", "memory_mib = 262144"]
        for g in gpus:
            lines.append("[[gpus]]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in g.items()]  # JSON scalars are valid TOML
        path = self.root / f"{host_id}.host.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start_agent(self, host_id: str, site: str, gpus: list[dict[str, Any]] | None = None) -> Proc:
        """Starts (or restarts, keeping its state directory) the agent of ``host_id``."""
        host_file = self.root / f"{host_id}.host.toml"
        if gpus is not None or not host_file.exists():
            host_file = self.write_host_file(host_id, gpus or [])
        proc = Proc(host_id, self._python(
            "gridmesh.agent", "--host-id", host_id, "--site", site, "--controller", self.address,
            "--state-dir", str(self.root / "agents" / host_id), "--hw-backend", "simulator",
            # Every agent here shares one kernel and one loopback: overlays need the namespace test bed.
            "--host-file", str(host_file), "--overlay-backend", "off"), self.root / f"agent-{host_id}.log")
        proc.start()
        self.agents[host_id] = proc
        return proc

    def stop_agent(self, host_id: str, kill: bool = False) -> None:
        self.agents[host_id].stop(kill=kill)

    def close(self) -> None:
        for proc in self.agents.values():
            proc.stop()
        if self.controller is not None:
            self.controller.stop()


def env_with_controller(address: str) -> dict[str, str]:
    return {**os.environ, "GRIDMESH_CONTROLLER": address}
