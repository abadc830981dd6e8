"""The scheduler's input (a snapshot of the grid) and outputs (a plan, an explanation)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gridmesh.common.model import GprId, GpuUuid, HostId, SiteName, WorkspaceName
from gridmesh.controller.model import Allocation, Gpr, Host, Site, Workspace


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An immutable view of the grid at one store revision."""

    revision: int
    now: float
    sites: Mapping[SiteName, Site]
    hosts: tuple[Host, ...]
    workspaces: Mapping[WorkspaceName, Workspace]
    allocations: tuple[Allocation, ...]
    pending: tuple[Gpr, ...]


@dataclass(frozen=True, slots=True)
class Placement:
    """One GPR replica bound to devices on a host."""

    gpr_id: GprId
    replica: int
    host_id: HostId
    site: SiteName
    gpu_indexes: tuple[int, ...]
    gpu_uuids: tuple[GpuUuid, ...]

    def __str__(self) -> str:
        return f"place {self.gpr_id}/{self.replica} on {self.host_id} gpus {list(self.gpu_indexes)}"


@dataclass(frozen=True, slots=True)
class Plan:
    placements: tuple[Placement, ...] = ()
    # GPRs that stay pending this round, with the reason a person would want to read.
    unplaced: tuple[tuple[GprId, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Exclusion:
    constraint: str
    hosts_excluded: int
    detail: str


@dataclass(frozen=True, slots=True)
class Explanation:
    gpr_id: GprId
    summary: str
    hosts_considered: int
    hosts_feasible: int
    exclusions: tuple[Exclusion, ...]
    queue_position: int
    preemption_possible: bool
    preemption_detail: str
