"""The agent's persisted state: the last accepted HostSpec and what has been applied.

Files in the state directory are replaced atomically (write, fsync, rename), so a crash at any
point leaves either the old or the new state, never a torn one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from gridmesh.common.codec import decode, encode
from gridmesh.common.model import AllocationSpec, HostId, HostSpec


@dataclass(frozen=True, slots=True)
class AppliedState:
    """What the agent has applied: the revision, the allocations it records, and the MIG device UUID
    each of their MIG instances was given (by instance key), so a restart re-binds the same devices."""

    revision: int = 0
    allocations: tuple[AllocationSpec, ...] = ()
    mig_uuids: tuple[tuple[str, str], ...] = ()


def write_atomically(path: Path, text: str, mode: int = 0o600) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class LocalState:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._desired = state_dir / "desired.json"
        self._applied = state_dir / "applied.json"

    def load_desired(self, host_id: HostId) -> HostSpec:
        if not self._desired.exists():
            return HostSpec(host_id=host_id, revision=0)
        return decode(HostSpec, json.loads(self._desired.read_text()))

    def save_desired(self, spec: HostSpec) -> None:
        write_atomically(self._desired, json.dumps(encode(spec), indent=1))

    def load_applied(self) -> AppliedState:
        if not self._applied.exists():
            return AppliedState()
        return decode(AppliedState, json.loads(self._applied.read_text()))

    def save_applied(self, applied: AppliedState) -> None:
        write_atomically(self._applied, json.dumps(encode(applied), indent=1))
