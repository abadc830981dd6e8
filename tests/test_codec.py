"""The JSON codec of the domain dataclasses: every stored value survives a trip through JSON text, enums
are stored by name, unknown keys are ignored and missing keys take the field default.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from gridmesh.common.codec import decode, encode
from gridmesh.common.model import (
    AllocationId,
    AllocationSpec,
    AllocationState,
    AllocationStatus,
    Event,
    GprId,
    GprState,
    GpuHealth,
    GpuInfo,
    GpuUuid,
    HostId,
    HostSpec,
    HostState,
    Inventory,
    MigInstance,
    PlacementPolicy,
    Port,
    PriorityTier,
    SharingMode,
    SiteName,
    SiteTier,
    Workload,
    WorkspaceName,
)
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

T = TypeVar("T")
FAST = settings(max_examples=60, deadline=None)

# -- strategies ------------------------------------------------------------------------------------

text = st.text(max_size=12)
floats = st.floats(allow_nan=False)  # NaN != NaN, so it cannot round-trip to an equal value
ints = st.integers(min_value=-(2**53), max_value=2**53)
pairs = st.lists(st.tuples(text, text), max_size=3).map(tuple)
opt_float = st.none() | floats
site_names = text.map(SiteName)

ports = st.builds(Port, name=text, port=st.integers(0, 65535), protocol=st.sampled_from(["tcp", "udp"]))
workloads = st.builds(Workload, command=st.lists(text, max_size=3).map(tuple), env=pairs,
                      ports=st.lists(ports, max_size=2).map(tuple))
shapes = st.builds(GpuShape, count=st.integers(0, 8), models=st.lists(text, max_size=3).map(tuple),
                   min_memory_mib=ints, min_compute_capability=text, mig_profile=text, fraction=floats)
placements = st.builds(
    PlacementSpec,
    policy=st.sampled_from(PlacementPolicy),
    tier=st.none() | st.sampled_from(SiteTier),
    site=st.none() | site_names,
    tier_preference=st.lists(st.sampled_from(SiteTier), max_size=3).map(tuple),
    origin_site=st.none() | site_names,
    allowed_regions=st.lists(text, max_size=3).map(tuple),
)
gpr_specs = st.builds(
    GprSpec,
    workspace=text.map(WorkspaceName),
    shape=shapes,
    priority_tier=st.sampled_from(PriorityTier),
    priority=ints,
    name=text,
    sharing=st.sampled_from(SharingMode),
    placement=placements,
    duration_s=opt_float,
    redistribution=st.builds(RedistributionPolicy, may_migrate=st.booleans(), preemptible=st.booleans(),
                             min_runtime_s=floats),
    replicas=st.integers(0, 16),
    workload=workloads,
    labels=pairs,
    model_artifact=text,
)
gprs = st.builds(Gpr, id=text.map(GprId), spec=gpr_specs, state=st.sampled_from(GprState), created_at=floats,
                 updated_at=floats, state_reason=text, running_since=opt_float, expires_at=opt_float,
                 request_id=text, revision=ints)
mig_instances = st.builds(MigInstance, uuid=text, profile=text, start=ints, gpu_instance_id=ints)
gpu_infos = st.builds(
    GpuInfo, index=ints, uuid=text.map(GpuUuid), model=text, memory_mib=ints, compute_capability=text,
    pci_bus_id=text, numa_node=ints, mig_capable=st.booleans(), mig_enabled=st.booleans(),
    mig_instances=st.lists(mig_instances, max_size=2).map(tuple), health=st.sampled_from(GpuHealth),
    health_reason=text,
)
inventories = st.builds(Inventory, hostname=text, gpus=st.lists(gpu_infos, max_size=3).map(tuple), hw_backend=text,
                        agent_version=text, cpu_count=ints, memory_mib=ints, has_dpu=st.booleans())
hosts = st.builds(Host, id=text.map(HostId), site=site_names, state=st.sampled_from(HostState),
                  inventory=inventories, state_reason=text, connected=st.booleans(), desired_revision=ints,
                  applied_revision=ints, last_seen=floats, underlay_address=text,
                  admin_state=st.sampled_from(HostState), revision=ints)
allocations = st.builds(
    Allocation, id=text.map(AllocationId), gpr_id=text.map(GprId), workspace=text.map(WorkspaceName), replica=ints,
    host_id=text.map(HostId), site=site_names, gpu_indexes=st.lists(ints, max_size=4).map(tuple),
    gpu_uuids=st.lists(text.map(GpuUuid), max_size=4).map(tuple), created_at=floats, mig_profile=text,
    device_uuids=st.lists(text, max_size=3).map(tuple), state=st.sampled_from(AllocationState), state_reason=text,
    revision=ints,
)
events = st.builds(Event, kind=text, subject=text, reason=text, message=text, time=floats, from_state=text,
                   to_state=text, attributes=pairs, seq=ints, revision=ints)
sites = st.builds(Site, name=site_names, tier=st.sampled_from(SiteTier), region=text,
                  price_per_gpu_hour=st.lists(st.tuples(text, floats), max_size=3).map(tuple),
                  latency_ms=st.lists(st.tuples(text, floats), max_size=3).map(tuple), labels=pairs, revision=ints)
workspaces = st.builds(
    Workspace, name=text.map(WorkspaceName), description=text, fair_share_weight=floats,
    quota=st.builds(Quota, max_gpus=ints, guaranteed_gpus=ints, borrow_limit=ints),
    allowed_regions=st.lists(text, max_size=3).map(tuple), overlay_cidr=text, labels=pairs, created_at=floats,
    revision=ints,
)
tokens = st.builds(BootstrapToken, id=text, site=site_names, secret_sha256=text, expires_at=floats, description=text,
                   used=st.booleans(), revision=ints)
allocation_specs = st.builds(
    AllocationSpec, allocation_id=text.map(AllocationId), gpr_id=text.map(GprId), workspace=text.map(WorkspaceName),
    replica=ints, gpu_indexes=st.lists(ints, max_size=4).map(tuple),
    gpu_uuids=st.lists(text.map(GpuUuid), max_size=4).map(tuple), mig_profile=text, workload=workloads,
)
host_specs = st.builds(HostSpec, host_id=text.map(HostId), revision=ints,
                       allocations=st.lists(allocation_specs, max_size=3).map(tuple))
statuses = st.builds(AllocationStatus, allocation_id=text.map(AllocationId), state=st.sampled_from(AllocationState),
                     reason=text, device_uuids=st.lists(text, max_size=3).map(tuple))


def through_json(cls: type[T], value: T) -> T:
    """What a store does: encode, write JSON text, read it back, decode."""
    return decode(cls, json.loads(json.dumps(encode(value))))


# -- round trips -----------------------------------------------------------------------------------


@FAST
@given(gprs)
def test_gpr_round_trips(gpr: Gpr) -> None:
    assert through_json(Gpr, gpr) == gpr


@FAST
@given(hosts)
def test_host_round_trips(host: Host) -> None:
    assert through_json(Host, host) == host


@FAST
@given(allocations)
def test_allocation_round_trips(alloc: Allocation) -> None:
    assert through_json(Allocation, alloc) == alloc


@FAST
@given(events)
def test_event_round_trips(event: Event) -> None:
    assert through_json(Event, event) == event


@FAST
@given(st.one_of(sites.map(lambda v: (Site, v)), workspaces.map(lambda v: (Workspace, v)),
                 tokens.map(lambda v: (BootstrapToken, v)), host_specs.map(lambda v: (HostSpec, v)),
                 statuses.map(lambda v: (AllocationStatus, v))))
def test_other_stored_values_round_trip(case: tuple[type[Any], Any]) -> None:
    cls, value = case
    assert through_json(cls, value) == value


@FAST
@given(gprs)
def test_decoded_values_have_the_declared_types(gpr: Gpr) -> None:
    # Equality alone would pass with lists for tuples or ints for IntEnums; a frozen value must hash and
    # its enums must be real members.
    back = through_json(Gpr, gpr)
    hash(back)
    assert type(back.state) is GprState
    assert type(back.spec.priority_tier) is PriorityTier
    assert type(back.spec.placement.policy) is PlacementPolicy
    assert back.spec.placement.tier is None or type(back.spec.placement.tier) is SiteTier
    assert all(type(t) is SiteTier for t in back.spec.placement.tier_preference)
    assert isinstance(back.spec.labels, tuple) and all(isinstance(p, tuple) for p in back.spec.labels)
    assert isinstance(back.spec.shape.models, tuple)


# -- the stored form -------------------------------------------------------------------------------


def test_enums_are_stored_by_name_and_collections_as_lists() -> None:
    spec = GprSpec(workspace=WorkspaceName("ran"), shape=GpuShape(count=2, models=("L4",)),
                   priority_tier=PriorityTier.HIGH, priority=250,
                   placement=PlacementSpec(tier=SiteTier.FAR_EDGE, tier_preference=(SiteTier.CORE,)))
    data = encode(spec)
    assert data["priority_tier"] == "HIGH"
    assert data["placement"]["tier"] == "FAR_EDGE"
    assert data["placement"]["tier_preference"] == ["CORE"]
    assert data["placement"]["site"] is None
    assert data["shape"]["models"] == ["L4"]
    assert data["duration_s"] is None
    # The stored form is plain JSON: nothing needs a custom encoder.
    assert json.loads(json.dumps(data)) == data


def test_an_enum_is_read_by_name_not_by_number() -> None:
    # Stored by name, so a value renumbered in a later version still reads as the same state.
    host = encode(Host(id=HostId("h"), site=SiteName("s"), state=HostState.DRAINING, inventory=Inventory("h"),
                       admin_state=HostState.CORDONED))
    assert (host["state"], host["admin_state"]) == ("DRAINING", "CORDONED")
    back = decode(Host, host)
    assert back.state is HostState.DRAINING and back.admin_state is HostState.CORDONED


def test_an_integer_in_a_float_field_reads_back_as_float() -> None:
    data = encode(Event(kind="k", subject="s", reason="r", message="m", time=5.0))
    data["time"] = 5  # what another writer (or JSON text "5") may leave
    back = decode(Event, data)
    assert back.time == 5.0 and type(back.time) is float


# -- evolving the schema ---------------------------------------------------------------------------


@FAST
@given(gprs, st.dictionaries(st.text(min_size=1, max_size=8).map(lambda s: "future_" + s), st.integers(),
                             min_size=1, max_size=3))
def test_unknown_keys_are_ignored_at_every_level(gpr: Gpr, extra: dict[str, int]) -> None:
    data = json.loads(json.dumps(encode(gpr)))
    data.update(extra)
    data["spec"].update(extra)
    data["spec"]["shape"].update(extra)
    data["spec"]["placement"].update(extra)
    assert decode(Gpr, data) == gpr


def _defaults(cls: type[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


@FAST
@given(st.data())
def test_missing_keys_take_the_field_default(data: st.DataObject) -> None:
    cls, value = data.draw(st.one_of(gprs.map(lambda v: (Gpr, v)), hosts.map(lambda v: (Host, v)),
                                     allocations.map(lambda v: (Allocation, v)), events.map(lambda v: (Event, v)),
                                     gpr_specs.map(lambda v: (GprSpec, v)), gpu_infos.map(lambda v: (GpuInfo, v))))
    defaults = _defaults(cls)
    dropped = data.draw(st.sets(st.sampled_from(sorted(defaults))))
    stored = json.loads(json.dumps(encode(value)))
    for name in dropped:
        del stored[name]
    assert decode(cls, stored) == dataclasses.replace(value, **{n: defaults[n] for n in dropped})


def test_an_old_gpr_without_newer_fields_reads_with_defaults() -> None:
    # A GPR as an early store wrote it: only the required fields, nested ones minimal too.
    old = {"id": "gpr-1", "state": "PENDING", "created_at": 10, "updated_at": 10,
           "spec": {"workspace": "ran", "priority_tier": "LOW", "priority": 5, "shape": {"count": 2}}}
    gpr = decode(Gpr, old)
    assert gpr == Gpr(id=GprId("gpr-1"), state=GprState.PENDING, created_at=10.0, updated_at=10.0,
                      spec=GprSpec(workspace=WorkspaceName("ran"), priority_tier=PriorityTier.LOW, priority=5,
                                   shape=GpuShape(count=2)))
    assert gpr.spec.placement == PlacementSpec()
    assert gpr.spec.duration_s is None
