"""Allocations and the planned overlay -> the desired HostSpec of one host (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gridmesh.common.model import AllocationSpec, GprId, HostSpec, Workload
from gridmesh.controller.model import Allocation, Gpr, Host


def build_host_spec(host: Host, allocations: Iterable[Allocation], gprs: Mapping[GprId, Gpr]) -> HostSpec:
    """The whole desired state of ``host``: every allocation bound to it, at its desired revision."""
    specs = []
    for a in sorted(allocations, key=lambda a: a.id):
        gpr = gprs.get(a.gpr_id)
        specs.append(AllocationSpec(
            allocation_id=a.id,
            gpr_id=a.gpr_id,
            workspace=a.workspace,
            replica=a.replica,
            gpu_indexes=a.gpu_indexes,
            gpu_uuids=a.gpu_uuids,
            mig_profile=a.mig_profile,
            workload=gpr.spec.workload if gpr else Workload(),
            mig_starts=a.mig_starts,
        ))
    return HostSpec(host_id=host.id, revision=host.desired_revision, allocations=tuple(specs), overlay=host.overlay)
