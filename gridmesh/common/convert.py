"""Protobuf <-> domain conversion for the messages both the controller and the agent speak.

This module and ``gridmesh.controller.api.convert`` are the only places outside the CLI that touch
generated ``*_pb2`` code. Conversions here trust their input: validation of client requests lives
with the controller's API.
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from gridmesh.common.model import (
    AllocationId,
    AllocationSpec,
    AllocationState,
    AllocationStatus,
    Event,
    GprId,
    GpuHealth,
    GpuInfo,
    GpuUuid,
    HostId,
    HostSpec,
    Inventory,
    MigInstance,
    Port,
    WgInterfaceSpec,
    WgPeer,
    Workload,
    WorkspaceName,
)
from gridmesh.dataplane.model import OverlayInterfaceStatus
from gridmesh.hw.model import GpuSample
from gridmesh.v1 import types_pb2 as pb


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(round(seconds * 1e9))
    return ts


def seconds_of(ts: Timestamp) -> float:
    return ts.ToNanoseconds() / 1e9


def workload_to_proto(w: Workload) -> pb.Workload:
    return pb.Workload(
        command=list(w.command),
        env=dict(w.env),
        ports=[pb.Port(name=p.name, port=p.port, protocol=p.protocol) for p in w.ports],
    )


def workload_from_proto(m: pb.Workload) -> Workload:
    return Workload(
        command=tuple(m.command),
        env=tuple(sorted(m.env.items())),
        ports=tuple(Port(p.name, p.port, p.protocol or "tcp") for p in m.ports),
    )


def gpu_to_proto(g: GpuInfo) -> pb.Gpu:
    return pb.Gpu(
        index=g.index,
        uuid=g.uuid,
        model=g.model,
        memory_mib=g.memory_mib,
        compute_capability=g.compute_capability,
        pci_bus_id=g.pci_bus_id,
        numa_node=g.numa_node,
        mig_capable=g.mig_capable,
        mig_enabled=g.mig_enabled,
        mig_instances=[
            pb.MigInstance(uuid=m.uuid, profile=m.profile, start=m.start, gpu_instance_id=m.gpu_instance_id)
            for m in g.mig_instances
        ],
        health=int(g.health),  # type: ignore[arg-type]
        health_reason=g.health_reason,
    )


def gpu_from_proto(m: pb.Gpu) -> GpuInfo:
    return GpuInfo(
        index=m.index,
        uuid=GpuUuid(m.uuid),
        model=m.model,
        memory_mib=m.memory_mib,
        compute_capability=m.compute_capability,
        pci_bus_id=m.pci_bus_id,
        numa_node=m.numa_node,
        mig_capable=m.mig_capable,
        mig_enabled=m.mig_enabled,
        mig_instances=tuple(
            MigInstance(i.uuid, i.profile, i.start, i.gpu_instance_id) for i in m.mig_instances
        ),
        health=GpuHealth(m.health) if m.health else GpuHealth.HEALTHY,
        health_reason=m.health_reason,
    )


def inventory_to_proto(inv: Inventory) -> pb.Inventory:
    return pb.Inventory(
        hostname=inv.hostname,
        gpus=[gpu_to_proto(g) for g in inv.gpus],
        hw_backend=inv.hw_backend,
        agent_version=inv.agent_version,
        cpu_count=inv.cpu_count,
        memory_mib=inv.memory_mib,
        has_dpu=inv.has_dpu,
    )


def inventory_from_proto(m: pb.Inventory) -> Inventory:
    return Inventory(
        hostname=m.hostname,
        gpus=tuple(gpu_from_proto(g) for g in m.gpus),
        hw_backend=m.hw_backend,
        agent_version=m.agent_version,
        cpu_count=m.cpu_count,
        memory_mib=m.memory_mib,
        has_dpu=m.has_dpu,
    )


def host_spec_to_proto(spec: HostSpec) -> pb.HostSpec:
    return pb.HostSpec(
        host_id=spec.host_id,
        revision=spec.revision,
        allocations=[
            pb.AllocationSpec(
                allocation_id=a.allocation_id,
                gpr_id=a.gpr_id,
                workspace=a.workspace,
                replica=a.replica,
                gpu_indexes=list(a.gpu_indexes),
                gpu_uuids=list(a.gpu_uuids),
                mig_profile=a.mig_profile,
                workload=workload_to_proto(a.workload),
                mig_starts=list(a.mig_starts),
            )
            for a in spec.allocations
        ],
        overlay=[overlay_interface_to_proto(i) for i in spec.overlay],
    )


def host_spec_from_proto(m: pb.HostSpec) -> HostSpec:
    return HostSpec(
        host_id=HostId(m.host_id),
        revision=m.revision,
        allocations=tuple(
            AllocationSpec(
                allocation_id=AllocationId(a.allocation_id),
                gpr_id=GprId(a.gpr_id),
                workspace=WorkspaceName(a.workspace),
                replica=a.replica,
                gpu_indexes=tuple(a.gpu_indexes),
                gpu_uuids=tuple(GpuUuid(u) for u in a.gpu_uuids),
                mig_profile=a.mig_profile,
                workload=workload_from_proto(a.workload),
                mig_starts=tuple(a.mig_starts),
            )
            for a in m.allocations
        ),
        overlay=tuple(overlay_interface_from_proto(i) for i in m.overlay),
    )


def allocation_status_to_proto(s: AllocationStatus) -> pb.AllocationStatus:
    return pb.AllocationStatus(
        allocation_id=s.allocation_id,
        state=int(s.state),  # type: ignore[arg-type]
        reason=s.reason,
        device_uuids=list(s.device_uuids),
    )


def allocation_status_from_proto(m: pb.AllocationStatus) -> AllocationStatus:
    state = AllocationState(m.state) if m.state else AllocationState.PENDING
    return AllocationStatus(AllocationId(m.allocation_id), state, m.reason, tuple(m.device_uuids))


def event_to_proto(e: Event) -> pb.Event:
    return pb.Event(
        seq=e.seq,
        revision=e.revision,
        time=timestamp(e.time),
        kind=e.kind,
        subject=e.subject,
        reason=e.reason,
        message=e.message,
        from_state=e.from_state,
        to_state=e.to_state,
        attributes=dict(e.attributes),
    )


def event_from_proto(m: pb.Event) -> Event:
    return Event(
        kind=m.kind,
        subject=m.subject,
        reason=m.reason,
        message=m.message,
        time=seconds_of(m.time),
        from_state=m.from_state,
        to_state=m.to_state,
        attributes=tuple(sorted(m.attributes.items())),
        seq=m.seq,
        revision=m.revision,
    )


def gpu_sample_to_proto(s: GpuSample) -> pb.GpuSample:
    """Unread values (None) stay unset on the wire."""
    m = pb.GpuSample(gpu_uuid=s.gpu)
    for name in ("gpu_util_pct", "mem_bw_util_pct", "memory_used_mib", "memory_free_mib", "power_w",
                 "temperature_c", "sm_clock_mhz", "mem_clock_mhz"):
        value = getattr(s, name)
        if value is not None:
            setattr(m, name, value)
    return m


def overlay_interface_to_proto(i: WgInterfaceSpec) -> pb.OverlayInterface:
    return pb.OverlayInterface(
        name=i.name, workspace=i.workspace, private_key_ref=i.private_key_ref, listen_port=i.listen_port,
        addresses=list(i.addresses),
        peers=[pb.WireGuardPeer(public_key=p.public_key, endpoint=p.endpoint, allowed_ips=list(p.allowed_ips),
                                persistent_keepalive_seconds=p.persistent_keepalive) for p in i.peers],
    )


def overlay_interface_from_proto(m: pb.OverlayInterface) -> WgInterfaceSpec:
    return WgInterfaceSpec(
        name=m.name, workspace=WorkspaceName(m.workspace), private_key_ref=m.private_key_ref,
        listen_port=m.listen_port, addresses=tuple(m.addresses),
        peers=tuple(WgPeer(p.public_key, p.endpoint, tuple(p.allowed_ips), p.persistent_keepalive_seconds)
                    for p in m.peers),
    )


def overlay_status_to_proto(s: OverlayInterfaceStatus) -> pb.OverlayInterfaceStatus:
    return pb.OverlayInterfaceStatus(
        workspace=s.workspace, interface=s.interface, public_key=s.public_key, next_public_key=s.next_public_key,
        listen_port=s.listen_port, staged_peer_keys=list(s.staged_peer_keys), peer_count=s.peer_count,
        peers_with_handshake=s.peers_with_handshake, rx_bytes=s.rx_bytes, tx_bytes=s.tx_bytes, error=s.error,
    )


def overlay_status_from_proto(m: pb.OverlayInterfaceStatus) -> OverlayInterfaceStatus:
    return OverlayInterfaceStatus(
        workspace=WorkspaceName(m.workspace), interface=m.interface, public_key=m.public_key,
        next_public_key=m.next_public_key, listen_port=m.listen_port, staged_peer_keys=tuple(m.staged_peer_keys),
        peer_count=m.peer_count, peers_with_handshake=m.peers_with_handshake, rx_bytes=m.rx_bytes,
        tx_bytes=m.tx_bytes, error=m.error,
    )
