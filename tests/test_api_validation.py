"""Bad requests over real gRPC: each gets the right status and a message naming the field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask

from gridmesh.testbed.local import LocalGrid
from gridmesh.v1 import admin_pb2, admin_pb2_grpc, provision_pb2, provision_pb2_grpc
from gridmesh.v1 import types_pb2 as pb

OK = pb.GprSpec(workspace="ran", shape=pb.GpuShape(count=1), priority_tier=pb.PRIORITY_TIER_HIGH, priority=10)


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[admin_pb2_grpc.AdminServiceStub,
                                                                     provision_pb2_grpc.ProvisionServiceStub]]:
    with LocalGrid(Path(tmp_path_factory.mktemp("validation"))) as grid:
        grid.start_controller()
        with grpc.insecure_channel(grid.address) as channel:
            admin = admin_pb2_grpc.AdminServiceStub(channel)
            admin.CreateSite(admin_pb2.CreateSiteRequest(site=pb.Site(name="edge1", tier=pb.SITE_TIER_FAR_EDGE,
                                                                      region="eu-fr")))
            admin.CreateWorkspace(admin_pb2.CreateWorkspaceRequest(workspace=pb.Workspace(name="ran")))
            yield admin, provision_pb2_grpc.ProvisionServiceStub(channel)


def spec(**changes: object) -> pb.GprSpec:
    s = pb.GprSpec()
    s.CopyFrom(OK)
    for path, value in changes.items():
        target: object = s
        *parents, leaf = path.split("__")
        for p in parents:
            target = getattr(target, p)
        field = getattr(target, leaf)
        if isinstance(value, dict):
            field.update(value)
        elif isinstance(value, list):
            del field[:]
            field.extend(value)
        elif hasattr(field, "CopyFrom"):
            field.CopyFrom(value)
        else:
            setattr(target, leaf, value)
    return s


def dur(seconds: int, nanos: int = 0) -> Duration:
    return Duration(seconds=seconds, nanos=nanos)


BAD_SUBMITS = [
    # (case, spec, status, words the message must contain)
    ("missing workspace", spec(workspace=""), "INVALID_ARGUMENT", ["spec.workspace", "required"]),
    ("unknown workspace", spec(workspace="nobody"), "NOT_FOUND", ["workspace", "nobody"]),
    ("bad workspace name", spec(workspace="Bad_Name"), "INVALID_ARGUMENT", ["spec.workspace", "Bad_Name"]),
    ("zero count", spec(shape__count=0), "INVALID_ARGUMENT", ["spec.shape.count", "0", "1 to 64"]),
    ("too many", spec(shape__count=65), "INVALID_ARGUMENT", ["spec.shape.count", "65"]),
    ("unknown model", spec(shape__models=["H100 NVL", "RTX 9999"]), "INVALID_ARGUMENT",
     ["spec.shape.models[1]", "RTX 9999", "known models", "H100 80GB HBM3"]),
    ("priority over HIGH range", spec(priority=301), "INVALID_ARGUMENT", ["spec.priority", "301", "HIGH", "1 to 300"]),
    ("priority over LOW range", spec(priority_tier=pb.PRIORITY_TIER_LOW, priority=150), "INVALID_ARGUMENT",
     ["spec.priority", "150", "LOW", "1 to 100"]),
    ("priority zero", spec(priority=0), "INVALID_ARGUMENT", ["spec.priority", "0"]),
    ("no priority tier", spec(priority_tier=pb.PRIORITY_TIER_UNSPECIFIED), "INVALID_ARGUMENT",
     ["spec.priority_tier", "required", "HIGH"]),
    ("unknown enum value", spec(priority_tier=9), "INVALID_ARGUMENT", ["spec.priority_tier", "9"]),
    ("negative duration", spec(duration=dur(-5)), "INVALID_ARGUMENT", ["spec.duration", "positive"]),
    ("malformed duration", spec(duration=dur(10, -5)), "INVALID_ARGUMENT", ["spec.duration", "malformed"]),
    ("nanos out of range", spec(duration=dur(0, 2_000_000_000)), "INVALID_ARGUMENT", ["spec.duration", "malformed"]),
    ("zero duration", spec(duration=dur(0)), "INVALID_ARGUMENT", ["spec.duration", "positive"]),
    ("duration too long", spec(duration=dur(400 * 86400)), "INVALID_ARGUMENT", ["spec.duration", "366 days"]),
    ("oversized name", spec(name="x" * 300), "INVALID_ARGUMENT", ["spec.name", "300 characters", "at most 63"]),
    ("oversized workspace", spec(workspace="w" * 100), "INVALID_ARGUMENT", ["spec.workspace", "100 characters"]),
    ("oversized artifact", spec(model_artifact="a" * 5000), "INVALID_ARGUMENT", ["spec.model_artifact", "5000"]),
    ("oversized command arg", spec(workload__command=["x" * 5000]), "INVALID_ARGUMENT",
     ["spec.workload.command[0]", "5000"]),
    ("bad env name", spec(workload__env={"1BAD": "x"}), "INVALID_ARGUMENT", ["spec.workload.env", "1BAD"]),
    ("bad port", spec(workload__ports=[pb.Port(name="http", port=70000)]), "INVALID_ARGUMENT",
     ["spec.workload.ports[0].port", "70000"]),
    ("bad min cc", spec(shape__min_compute_capability="nine"), "INVALID_ARGUMENT",
     ["spec.shape.min_compute_capability", "nine"]),
    ("bad MIG profile", spec(shape__mig_profile="9g.1tb"), "INVALID_ARGUMENT", ["spec.shape.mig_profile", "9g.1tb"]),
    ("fraction of 1", spec(shape__fraction=1.0), "INVALID_ARGUMENT", ["spec.shape.fraction"]),
    ("MIG and exclusive", spec(shape__mig_profile="1g.10gb", sharing=pb.SHARING_MODE_EXCLUSIVE), "INVALID_ARGUMENT",
     ["spec.sharing", "EXCLUSIVE"]),
    ("pinned to nothing", spec(placement__policy=pb.PLACEMENT_POLICY_PINNED), "INVALID_ARGUMENT",
     ["spec.placement", "pinned"]),
    ("unknown site", spec(placement__site="mars-1"), "NOT_FOUND", ["site", "mars-1"]),
    ("bad region", spec(placement__allowed_regions=["EU FR"]), "INVALID_ARGUMENT",
     ["spec.placement.allowed_regions[0]", "EU FR"]),
    ("replicas over limit", spec(replicas=5000), "INVALID_ARGUMENT", ["spec.replicas", "5000"]),
    ("unspecified spill tier", spec(placement__tier_preference=[0]), "INVALID_ARGUMENT",
     ["spec.placement.tier_preference[0]"]),
]


@pytest.mark.parametrize(("case", "bad", "status", "words"), BAD_SUBMITS, ids=[c[0] for c in BAD_SUBMITS])
def test_bad_submit(stubs: tuple[admin_pb2_grpc.AdminServiceStub, provision_pb2_grpc.ProvisionServiceStub],
                    case: str, bad: pb.GprSpec, status: str, words: list[str]) -> None:
    _, provision = stubs
    before = provision.ListGprs(provision_pb2.ListGprsRequest()).revision
    with pytest.raises(grpc.RpcError) as err:
        provision.SubmitGpr(provision_pb2.SubmitGprRequest(spec=bad))
    assert err.value.code() == grpc.StatusCode[status], err.value.details()
    details = err.value.details() or ""
    for w in words:
        assert w in details, f"{w!r} not in {details!r}"
    assert "Traceback" not in details
    # Nothing was written.
    assert provision.ListGprs(provision_pb2.ListGprsRequest()).revision == before


def test_a_good_submit_passes(stubs: tuple[admin_pb2_grpc.AdminServiceStub,
                                           provision_pb2_grpc.ProvisionServiceStub]) -> None:
    _, provision = stubs
    gpr = provision.SubmitGpr(provision_pb2.SubmitGprRequest(spec=spec(shape__models=["h100 80gb hbm3"]),
                                                             request_id="once"))
    assert gpr.state == pb.GPR_STATE_PENDING
    assert list(gpr.spec.shape.models) == ["H100 80GB HBM3"]  # canonical catalog name
    again = provision.SubmitGpr(provision_pb2.SubmitGprRequest(spec=spec(shape__models=["h100 80gb hbm3"]),
                                                               request_id="once"))
    assert again.id == gpr.id  # idempotent retry


UNKNOWN_IDS = [
    ("GetGpr", lambda p, a: p.GetGpr(provision_pb2.GetGprRequest(id="gpr-nope"))),
    ("CancelGpr", lambda p, a: p.CancelGpr(provision_pb2.CancelGprRequest(id="gpr-nope"))),
    ("ExplainGpr", lambda p, a: p.ExplainGpr(provision_pb2.ExplainGprRequest(id="gpr-nope"))),
    ("ScaleGpr", lambda p, a: p.ScaleGpr(provision_pb2.ScaleGprRequest(id="gpr-nope", replicas=2))),
    ("GetHost", lambda p, a: a.GetHost(admin_pb2.GetHostRequest(id="host-nope"))),
    ("CordonHost", lambda p, a: a.CordonHost(admin_pb2.CordonHostRequest(id="host-nope"))),
    ("GetWorkspace", lambda p, a: a.GetWorkspace(admin_pb2.GetWorkspaceRequest(name="nope"))),
    ("GetSite", lambda p, a: a.GetSite(admin_pb2.GetSiteRequest(name="nope"))),
    ("RevokeBootstrapToken", lambda p, a: a.RevokeBootstrapToken(admin_pb2.RevokeBootstrapTokenRequest(id="tok-x"))),
]


@pytest.mark.parametrize(("name", "call"), UNKNOWN_IDS, ids=[u[0] for u in UNKNOWN_IDS])
def test_unknown_ids_are_not_found(stubs: tuple[admin_pb2_grpc.AdminServiceStub,
                                                provision_pb2_grpc.ProvisionServiceStub], name: str,
                                   call: object) -> None:
    admin, provision = stubs
    with pytest.raises(grpc.RpcError) as err:
        call(provision, admin)  # type: ignore[operator]
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "nope" in (err.value.details() or "") or "tok-x" in (err.value.details() or "")


BAD_ADMIN = [
    ("site without tier", lambda a: a.CreateSite(admin_pb2.CreateSiteRequest(site=pb.Site(name="s1", region="eu"))),
     "INVALID_ARGUMENT", ["site.tier", "required"]),
    ("site price for unknown model", lambda a: a.CreateSite(admin_pb2.CreateSiteRequest(site=pb.Site(
        name="s2", tier=pb.SITE_TIER_CORE, region="eu", price_per_gpu_hour={"Voodoo 5": 1.0}))),
     "INVALID_ARGUMENT", ["site.price_per_gpu_hour", "Voodoo 5"]),
    ("duplicate site", lambda a: a.CreateSite(admin_pb2.CreateSiteRequest(site=pb.Site(
        name="edge1", tier=pb.SITE_TIER_CORE, region="eu"))), "ALREADY_EXISTS", ["edge1"]),
    ("negative weight", lambda a: a.CreateWorkspace(admin_pb2.CreateWorkspaceRequest(workspace=pb.Workspace(
        name="w1", fair_share_weight=-1))), "INVALID_ARGUMENT", ["workspace.fair_share_weight", "-1"]),
    ("guarantee over max", lambda a: a.CreateWorkspace(admin_pb2.CreateWorkspaceRequest(workspace=pb.Workspace(
        name="w2", quota=pb.Quota(max_gpus=2, guaranteed_gpus=5)))), "INVALID_ARGUMENT",
     ["workspace.quota.guaranteed_gpus", "5"]),
    ("update of an unknown field", lambda a: a.UpdateWorkspace(admin_pb2.UpdateWorkspaceRequest(
        workspace=pb.Workspace(name="ran"), update_mask=FieldMask(paths=["name"]))), "INVALID_ARGUMENT",
     ["update_mask", "'name'"]),
    ("page too large", lambda a: a.ListHosts(admin_pb2.ListHostsRequest(page_size=5000)), "INVALID_ARGUMENT",
     ["page_size", "5000"]),
    ("token for unknown site", lambda a: a.CreateBootstrapToken(admin_pb2.CreateBootstrapTokenRequest(site="nope")),
     "NOT_FOUND", ["nope"]),
]


@pytest.mark.parametrize(("case", "call", "status", "words"), BAD_ADMIN, ids=[c[0] for c in BAD_ADMIN])
def test_bad_admin_requests(stubs: tuple[admin_pb2_grpc.AdminServiceStub, provision_pb2_grpc.ProvisionServiceStub],
                            case: str, call: object, status: str, words: list[str]) -> None:
    admin, _ = stubs
    with pytest.raises(grpc.RpcError) as err:
        call(admin)  # type: ignore[operator]
    assert err.value.code() == grpc.StatusCode[status], err.value.details()
    for w in words:
        assert w in (err.value.details() or "")


def test_events_newest_first_page_backwards(stubs: tuple[admin_pb2_grpc.AdminServiceStub,
                                                         provision_pb2_grpc.ProvisionServiceStub]) -> None:
    admin, _ = stubs
    oldest_first = list(admin.ListEvents(admin_pb2.ListEventsRequest(page_size=1000)).events)
    seen = []
    token = ""
    while True:
        page = admin.ListEvents(admin_pb2.ListEventsRequest(page_size=2, newest_first=True, page_token=token))
        seen += list(page.events)
        token = page.next_page_token
        if not token:
            break
    assert [e.seq for e in seen] == [e.seq for e in reversed(oldest_first)]
    assert len(seen) >= 3
