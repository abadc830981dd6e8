"""Protobuf <-> controller domain, validating everything a client sends.

Rules:
- ``*_from_proto`` functions validate every field and raise ``InvalidArgument`` naming the field
  path (``spec.shape.count``), the value, and what is allowed. They never consult the store:
  references to other objects (workspace, site) are checked by ``Grid`` and give NOT_FOUND.
- ``*_to_proto`` functions trust their input.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf.duration_pb2 import Duration

from gridmesh.common.convert import inventory_to_proto, overlay_interface_to_proto, timestamp, workload_to_proto
from gridmesh.common.model import (
    AllocationState,
    GprState,
    HostState,
    PlacementPolicy,
    Port,
    PriorityTier,
    SharingMode,
    SiteName,
    SiteTier,
    Workload,
    WorkspaceName,
)
from gridmesh.controller.errors import InvalidArgument
from gridmesh.controller.model import (
    Allocation,
    BootstrapToken,
    Gpr,
    GprSpec,
    GpuShape,
    Host,
    PlacementSpec,
    Quota,
    RedistributionPolicy,
    Site,
    Workspace,
)
from gridmesh.hw.catalog import find_model, known_models
from gridmesh.v1 import types_pb2 as pb

# Names of sites, workspaces and regions: DNS labels, so they work as hostnames and interface suffixes.
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
NAME_RULE = "1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit"
MAX_TEXT = 256
MAX_COUNT = 64
MAX_REPLICAS = 1000
MAX_DURATION_S = 366 * 24 * 3600
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MIG_PROFILE_RE = re.compile(r"^[1-7]g\.\d{1,3}gb(\+me)?$")
CC_RE = re.compile(r"^\d{1,2}\.\d$")


# -- field checks ---------------------------------------------------------------------------------


def check_name(field: str, value: str, *, required: bool = True) -> str:
    if not value:
        if required:
            raise InvalidArgument(field, f"is required ({NAME_RULE})")
        return value
    if len(value) > 63:
        raise InvalidArgument(field, f"{len(value)} characters; at most 63 allowed")
    if not NAME_RE.match(value):
        raise InvalidArgument(field, f"{value!r} is not a valid name ({NAME_RULE})")
    return value


def check_text(field: str, value: str, limit: int = MAX_TEXT) -> str:
    if len(value) > limit:
        raise InvalidArgument(field, f"{len(value)} characters; at most {limit} allowed")
    if any(ord(c) < 32 for c in value):
        raise InvalidArgument(field, "contains control characters")
    return value


def check_range(field: str, value: int | float, low: int | float, high: int | float) -> None:
    if not low <= value <= high:
        raise InvalidArgument(field, f"{value:g} is out of range; allowed {low:g} to {high:g}")


def _enum_names(enum_cls: Any) -> str:
    return ", ".join(m.name for m in enum_cls)


def enum_from_proto(field: str, enum_cls: Any, value: int, *, required: bool = False) -> Any:
    """Wire enum value -> domain enum; 0 (UNSPECIFIED) is None unless required."""
    if value == 0:
        if required:
            raise InvalidArgument(field, f"is required; one of {_enum_names(enum_cls)}")
        return None
    try:
        return enum_cls(value)
    except ValueError:
        raise InvalidArgument(field, f"{value} is not a known value; one of {_enum_names(enum_cls)}") from None


def duration_from_proto(field: str, d: Duration, *, allow_zero: bool = False) -> float:
    """A protobuf Duration as seconds, rejecting the malformed ones protobuf itself would accept."""
    if not -999_999_999 <= d.nanos <= 999_999_999 or (d.seconds > 0 > d.nanos) or (d.seconds < 0 < d.nanos):
        raise InvalidArgument(field, f"malformed duration (seconds={d.seconds}, nanos={d.nanos}): nanos must "
                              "be within +-999999999 and have the sign of seconds")
    seconds = d.seconds + d.nanos / 1e9
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise InvalidArgument(field, f"{seconds:g}s; must be positive")
    if seconds > MAX_DURATION_S:
        raise InvalidArgument(field, f"{seconds:g}s is longer than the {MAX_DURATION_S}s (366 days) allowed")
    return seconds


def pairs(field: str, m: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    if len(m) > 64:
        raise InvalidArgument(field, f"{len(m)} entries; at most 64 allowed")
    for k, v in m.items():
        check_text(f"{field}[{k[:40]!r}]", k, 63)
        if not k:
            raise InvalidArgument(field, "keys must not be empty")
        check_text(f"{field}[{k!r}]", v)
    return tuple(sorted(m.items()))


def _regions(field: str, values: Iterable[str]) -> tuple[str, ...]:
    out = []
    for i, r in enumerate(values):
        out.append(check_name(f"{field}[{i}]", r))
    if len(set(out)) != len(out):
        raise InvalidArgument(field, "lists a region twice")
    return tuple(out)


# -- GPR ------------------------------------------------------------------------------------------


def shape_from_proto(field: str, m: pb.GpuShape) -> GpuShape:
    check_range(f"{field}.count", m.count, 1, MAX_COUNT)
    models = []
    for i, name in enumerate(m.models):
        known = find_model(name)
        if known is None:
            raise InvalidArgument(f"{field}.models[{i}]", f"unknown GPU model {name[:80]!r}; known models: "
                                  f"{', '.join(known_models())}")
        models.append(known.model)
    check_range(f"{field}.min_memory_mib", m.min_memory_mib, 0, 1 << 22)
    if m.min_compute_capability and not CC_RE.match(m.min_compute_capability):
        raise InvalidArgument(f"{field}.min_compute_capability",
                              f"{m.min_compute_capability[:20]!r} is not a compute capability like '8.0'")
    if m.mig_profile and not MIG_PROFILE_RE.match(m.mig_profile):
        raise InvalidArgument(f"{field}.mig_profile",
                              f"{m.mig_profile[:20]!r} is not a MIG profile name like '1g.10gb' or '3g.40gb'")
    if not (math.isfinite(m.fraction) and 0 <= m.fraction < 1):
        raise InvalidArgument(f"{field}.fraction", f"{m.fraction:g}; allowed 0 < fraction < 1 (0 means whole GPUs)")
    if m.mig_profile and m.fraction:
        raise InvalidArgument(f"{field}.fraction", "give either a MIG profile or a fraction, not both")
    return GpuShape(count=m.count, models=tuple(models), min_memory_mib=m.min_memory_mib,
                    min_compute_capability=m.min_compute_capability, mig_profile=m.mig_profile, fraction=m.fraction)


def workload_from_proto(field: str, m: pb.Workload) -> Workload:
    if len(m.command) > 256:
        raise InvalidArgument(f"{field}.command", f"{len(m.command)} arguments; at most 256 allowed")
    for i, arg in enumerate(m.command):
        if len(arg) > 4096:
            raise InvalidArgument(f"{field}.command[{i}]", f"{len(arg)} characters; at most 4096 allowed")
    if len(m.env) > 256:
        raise InvalidArgument(f"{field}.env", f"{len(m.env)} variables; at most 256 allowed")
    for k, v in m.env.items():
        if not ENV_RE.match(k):
            raise InvalidArgument(f"{field}.env", f"{k[:40]!r} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)")
        if len(v) > 4096:
            raise InvalidArgument(f"{field}.env[{k!r}]", f"{len(v)} characters; at most 4096 allowed")
    ports = []
    for i, p in enumerate(m.ports):
        check_range(f"{field}.ports[{i}].port", p.port, 1, 65535)
        proto = p.protocol or "tcp"
        if proto not in ("tcp", "udp"):
            raise InvalidArgument(f"{field}.ports[{i}].protocol", f"{proto[:10]!r}; allowed tcp or udp")
        ports.append(Port(check_text(f"{field}.ports[{i}].name", p.name, 63), p.port, proto))
    return Workload(command=tuple(m.command), env=tuple(sorted(m.env.items())), ports=tuple(ports))


def gpr_spec_from_proto(m: pb.GprSpec, field: str = "spec") -> GprSpec:
    workspace = check_name(f"{field}.workspace", m.workspace)
    check_text(f"{field}.name", m.name, 63)
    if not m.HasField("shape"):
        raise InvalidArgument(f"{field}.shape", "is required (at least a count)")
    shape = shape_from_proto(f"{field}.shape", m.shape)
    sharing = enum_from_proto(f"{field}.sharing", SharingMode, m.sharing)
    wants_mig = bool(shape.mig_profile or shape.fraction)
    if sharing is None:
        sharing = SharingMode.MIG if wants_mig else SharingMode.EXCLUSIVE
    elif wants_mig and sharing is not SharingMode.MIG:
        raise InvalidArgument(f"{field}.sharing", f"{sharing.name} conflicts with a MIG profile or fraction; use MIG")
    elif sharing is SharingMode.MIG and not wants_mig:
        raise InvalidArgument(f"{field}.shape.mig_profile", "sharing MIG needs a MIG profile or a fraction")

    p = m.placement
    policy = enum_from_proto(f"{field}.placement.policy", PlacementPolicy, p.policy) or PlacementPolicy.REDISTRIBUTABLE
    tier = enum_from_proto(f"{field}.placement.tier", SiteTier, p.tier)
    site = check_name(f"{field}.placement.site", p.site, required=False) or None
    if policy is PlacementPolicy.PINNED and tier is None and site is None:
        raise InvalidArgument(f"{field}.placement", "a pinned GPR needs a tier or a site to be pinned to")
    spill = tuple(enum_from_proto(f"{field}.placement.tier_preference[{i}]", SiteTier, t, required=True)
                  for i, t in enumerate(p.tier_preference))
    if len(set(spill)) != len(spill):
        raise InvalidArgument(f"{field}.placement.tier_preference", "lists a tier twice")
    origin = check_name(f"{field}.placement.origin_site", p.origin_site, required=False) or None
    placement = PlacementSpec(policy=policy, tier=tier, site=SiteName(site) if site else None, tier_preference=spill,
                              origin_site=SiteName(origin) if origin else None,
                              allowed_regions=_regions(f"{field}.placement.allowed_regions", p.allowed_regions))

    priority_tier: PriorityTier = enum_from_proto(f"{field}.priority_tier", PriorityTier, m.priority_tier,
                                                  required=True)
    if not 1 <= m.priority <= priority_tier.max_number:
        raise InvalidArgument(f"{field}.priority", f"{m.priority} is out of range for {priority_tier.name}; "
                              f"allowed 1 to {priority_tier.max_number}")
    duration = duration_from_proto(f"{field}.duration", m.duration) if m.HasField("duration") else None
    r = m.redistribution
    min_runtime = (duration_from_proto(f"{field}.redistribution.min_runtime", r.min_runtime, allow_zero=True)
                   if r.HasField("min_runtime") else 0.0)
    replicas = m.replicas or 1
    check_range(f"{field}.replicas", replicas, 1, MAX_REPLICAS)
    return GprSpec(
        workspace=WorkspaceName(workspace),
        name=m.name,
        shape=shape,
        sharing=sharing,
        placement=placement,
        priority_tier=priority_tier,
        priority=m.priority,
        duration_s=duration,
        redistribution=RedistributionPolicy(may_migrate=r.may_migrate, preemptible=r.preemptible,
                                            min_runtime_s=min_runtime),
        replicas=replicas,
        workload=workload_from_proto(f"{field}.workload", m.workload),
        labels=pairs(f"{field}.labels", m.labels),
        model_artifact=check_text(f"{field}.model_artifact", m.model_artifact),
    )


def _duration(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def gpr_spec_to_proto(s: GprSpec) -> pb.GprSpec:
    m = pb.GprSpec(
        workspace=s.workspace,
        name=s.name,
        shape=pb.GpuShape(models=list(s.shape.models), min_memory_mib=s.shape.min_memory_mib,
                          min_compute_capability=s.shape.min_compute_capability, count=s.shape.count,
                          mig_profile=s.shape.mig_profile, fraction=s.shape.fraction),
        sharing=int(s.sharing),  # type: ignore[arg-type]
        placement=pb.PlacementSpec(
            policy=int(s.placement.policy),  # type: ignore[arg-type]
            tier=int(s.placement.tier or 0),  # type: ignore[arg-type]
            site=s.placement.site or "",
            tier_preference=[int(t) for t in s.placement.tier_preference],  # type: ignore[misc]
            origin_site=s.placement.origin_site or "",
            allowed_regions=list(s.placement.allowed_regions),
        ),
        priority_tier=int(s.priority_tier),  # type: ignore[arg-type]
        priority=s.priority,
        redistribution=pb.RedistributionPolicy(may_migrate=s.redistribution.may_migrate,
                                               preemptible=s.redistribution.preemptible,
                                               min_runtime=_duration(s.redistribution.min_runtime_s)),
        replicas=s.replicas,
        workload=workload_to_proto(s.workload),
        labels=dict(s.labels),
        model_artifact=s.model_artifact,
    )
    if s.duration_s is not None:
        m.duration.CopyFrom(_duration(s.duration_s))
    return m


def allocation_to_proto(a: Allocation) -> pb.Allocation:
    return pb.Allocation(
        id=a.id, gpr_id=a.gpr_id, workspace=a.workspace, replica=a.replica, host_id=a.host_id, site=a.site,
        gpu_indexes=list(a.gpu_indexes), device_uuids=list(a.device_uuids or a.gpu_uuids), mig_profile=a.mig_profile,
        mig_starts=list(a.mig_starts),
        state=int(a.state or AllocationState.PENDING),  # type: ignore[arg-type]
        state_reason=a.state_reason, revision=a.revision, created_at=timestamp(a.created_at),
    )


def gpr_to_proto(g: Gpr, allocations: Iterable[Allocation]) -> pb.Gpr:
    m = pb.Gpr(
        id=g.id, spec=gpr_spec_to_proto(g.spec), state=int(g.state),  # type: ignore[arg-type]
        state_reason=g.state_reason, allocations=[allocation_to_proto(a) for a in allocations],
        revision=g.revision, created_at=timestamp(g.created_at), updated_at=timestamp(g.updated_at),
    )
    if g.running_since is not None:
        m.running_since.CopyFrom(timestamp(g.running_since))
    if g.expires_at is not None:
        m.expires_at.CopyFrom(timestamp(g.expires_at))
    return m


def gpr_states_from_proto(field: str, values: Iterable[int]) -> frozenset[GprState]:
    return frozenset(enum_from_proto(f"{field}[{i}]", GprState, v, required=True) for i, v in enumerate(values))


# -- sites, hosts, workspaces ---------------------------------------------------------------------


def site_from_proto(m: pb.Site, field: str = "site") -> Site:
    name = check_name(f"{field}.name", m.name)
    tier = enum_from_proto(f"{field}.tier", SiteTier, m.tier, required=True)
    region = check_name(f"{field}.region", m.region)
    prices = []
    for model, price in sorted(m.price_per_gpu_hour.items()):
        known = find_model(model)
        if known is None:
            raise InvalidArgument(f"{field}.price_per_gpu_hour", f"unknown GPU model {model[:80]!r}; known models: "
                                  f"{', '.join(known_models())}")
        if not (math.isfinite(price) and price >= 0):
            raise InvalidArgument(f"{field}.price_per_gpu_hour[{model!r}]", f"{price:g}; must be 0 or more")
        prices.append((known.model, price))
    latency = []
    for other, ms in sorted(m.latency_ms.items()):
        check_name(f"{field}.latency_ms", other)
        if not (math.isfinite(ms) and ms >= 0):
            raise InvalidArgument(f"{field}.latency_ms[{other!r}]", f"{ms:g}; must be 0 or more")
        latency.append((other, ms))
    return Site(name=SiteName(name), tier=tier, region=region, price_per_gpu_hour=tuple(prices),
                latency_ms=tuple(latency), labels=pairs(f"{field}.labels", m.labels))


def site_to_proto(s: Site) -> pb.Site:
    return pb.Site(name=s.name, tier=int(s.tier), region=s.region,  # type: ignore[arg-type]
                   price_per_gpu_hour=dict(s.price_per_gpu_hour), latency_ms=dict(s.latency_ms),
                   labels=dict(s.labels), revision=s.revision)


def host_to_proto(h: Host, allocation_ids: Iterable[str], last_seen: float) -> pb.Host:
    return pb.Host(
        id=h.id, site=h.site, state=int(h.state),  # type: ignore[arg-type]
        state_reason=h.state_reason, inventory=inventory_to_proto(h.inventory), connected=h.connected,
        desired_revision=h.desired_revision, applied_revision=h.applied_revision,
        last_seen=timestamp(last_seen), allocation_ids=list(allocation_ids),
        underlay_address=h.underlay_address, revision=h.revision,
        overlay=[overlay_interface_to_proto(i) for i in h.overlay],
    )


def host_states_from_proto(field: str, values: Iterable[int]) -> frozenset[HostState]:
    return frozenset(enum_from_proto(f"{field}[{i}]", HostState, v, required=True) for i, v in enumerate(values))


def quota_from_proto(m: pb.Quota, field: str = "quota") -> Quota:
    for name in ("max_gpus", "guaranteed_gpus", "borrow_limit"):
        check_range(f"{field}.{name}", getattr(m, name), 0, 1_000_000)
    if m.max_gpus and m.guaranteed_gpus > m.max_gpus:
        raise InvalidArgument(f"{field}.guaranteed_gpus", f"{m.guaranteed_gpus} is more than max_gpus {m.max_gpus}")
    return Quota(max_gpus=m.max_gpus, guaranteed_gpus=m.guaranteed_gpus, borrow_limit=m.borrow_limit)


def weight_from_proto(field: str, value: float) -> float:
    if value == 0:
        return 1.0
    if not (math.isfinite(value) and 0 < value <= 1000):
        raise InvalidArgument(field, f"{value:g}; allowed more than 0 and at most 1000")
    return value


def workspace_from_proto(m: pb.Workspace, field: str = "workspace") -> Workspace:
    if m.overlay_cidr:
        raise InvalidArgument(f"{field}.overlay_cidr", "is assigned by the controller; leave it empty")
    return Workspace(
        name=WorkspaceName(check_name(f"{field}.name", m.name)),
        description=check_text(f"{field}.description", m.description),
        fair_share_weight=weight_from_proto(f"{field}.fair_share_weight", m.fair_share_weight),
        quota=quota_from_proto(m.quota, f"{field}.quota"),
        allowed_regions=_regions(f"{field}.allowed_regions", m.allowed_regions),
        labels=pairs(f"{field}.labels", m.labels),
    )


def workspace_to_proto(w: Workspace) -> pb.Workspace:
    return pb.Workspace(
        name=w.name, description=w.description, fair_share_weight=w.fair_share_weight,
        quota=pb.Quota(max_gpus=w.quota.max_gpus, guaranteed_gpus=w.quota.guaranteed_gpus,
                       borrow_limit=w.quota.borrow_limit),
        allowed_regions=list(w.allowed_regions), overlay_cidr=w.overlay_cidr, labels=dict(w.labels),
        revision=w.revision, created_at=timestamp(w.created_at),
    )


def token_to_proto(t: BootstrapToken, secret: str = "") -> pb.BootstrapToken:
    return pb.BootstrapToken(id=t.id, site=t.site, secret=secret, expires_at=timestamp(t.expires_at), used=t.used,
                             description=t.description)

