"""ProvisionService: GPRs for orchestration systems."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from gridmesh.common.convert import event_to_proto
from gridmesh.common.model import GprState
from gridmesh.controller import scheduler
from gridmesh.controller.api import convert
from gridmesh.controller.api.errors import streaming, unary
from gridmesh.controller.api.paging import page
from gridmesh.controller.errors import InvalidArgument
from gridmesh.controller.grid import Grid
from gridmesh.controller.model import Gpr
from gridmesh.controller.scheduler.types import Alternative
from gridmesh.v1 import provision_pb2 as ppb
from gridmesh.v1 import provision_pb2_grpc
from gridmesh.v1 import types_pb2 as pb

Ctx = grpc.aio.ServicerContext[Any, Any]
class ProvisionServicer(provision_pb2_grpc.ProvisionServiceServicer):
    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.store = grid.store

    def _gpr(self, gpr: Gpr) -> pb.Gpr:
        return convert.gpr_to_proto(gpr, self.store.allocations_of_gpr(gpr.id))

    def _id(self, field: str, value: str) -> str:
        if not value:
            raise InvalidArgument(field, "is required")
        return convert.check_text(field, value, 63)

    @unary
    async def SubmitGpr(self, request: ppb.SubmitGprRequest, context: Ctx) -> pb.Gpr:
        if not request.HasField("spec"):
            raise InvalidArgument("spec", "is required")
        spec = convert.gpr_spec_from_proto(request.spec)
        return self._gpr(self.grid.submit_gpr(spec, convert.check_text("request_id", request.request_id, 128)))

    @unary
    async def GetGpr(self, request: ppb.GetGprRequest, context: Ctx) -> pb.Gpr:
        return self._gpr(self.grid.get_gpr(self._id("id", request.id)))

    @unary
    async def ListGprs(self, request: ppb.ListGprsRequest, context: Ctx) -> ppb.ListGprsResponse:
        workspace = convert.check_name("workspace", request.workspace, required=False)
        states = convert.gpr_states_from_proto("states", request.states)
        on_host = {a.gpr_id for a in self.store.allocations_on_host(request.host_id)} if request.host_id else None
        gprs = [g for g in self.store.all(Gpr)
                if (not workspace or g.spec.workspace == workspace) and (not states or g.state in states)
                and (on_host is None or g.id in on_host)]
        chunk, token = page(gprs, lambda g: g.id, request.page_size, request.page_token)
        return ppb.ListGprsResponse(gprs=[self._gpr(g) for g in chunk], next_page_token=token,
                                    revision=self.store.revision)

    @streaming
    async def WatchGprs(self, request: ppb.WatchGprsRequest, context: Ctx) -> AsyncIterator[ppb.GprEvent]:
        workspace = convert.check_name("workspace", request.workspace, required=False)
        if request.gpr_id:
            self.grid.get_gpr(request.gpr_id)  # NOT_FOUND for an unknown id
        since = request.since_revision if request.HasField("since_revision") else self.store.revision
        after_seq = 0
        while True:
            seen = self.store.revision
            events = self.store.events(subject=request.gpr_id, kind="gpr.*", since_revision=since,
                                       after_seq=after_seq, limit=500)
            for e in events:
                after_seq = e.seq
                gpr = self.store.gpr(e.subject)
                if gpr is None or (workspace and gpr.spec.workspace != workspace):
                    continue
                yield ppb.GprEvent(revision=e.revision, event=event_to_proto(e), gpr=self._gpr(gpr))
            if len(events) < 500:
                await self.store.wait_for_change(seen, timeout=30)

    @unary
    async def CancelGpr(self, request: ppb.CancelGprRequest, context: Ctx) -> pb.Gpr:
        reason = convert.check_text("reason", request.reason)
        return self._gpr(self.grid.cancel_gpr(self._id("id", request.id), reason))

    @unary
    async def ExplainGpr(self, request: ppb.ExplainGprRequest, context: Ctx) -> ppb.Explanation:
        gpr = self.grid.get_gpr(self._id("id", request.id))
        ex = scheduler.explain(self.grid.snapshot(), gpr)
        return ppb.Explanation(
            gpr_id=ex.gpr_id, state=int(gpr.state), summary=ex.summary,  # type: ignore[arg-type]
            hosts_considered=ex.hosts_considered, hosts_feasible=ex.hosts_feasible,
            exclusions=[ppb.ConstraintExclusion(constraint=e.constraint, hosts_excluded=e.hosts_excluded,
                                                detail=e.detail) for e in ex.exclusions],
            queue_position=ex.queue_position if gpr.state is GprState.PENDING else 0,
            preemption_possible=ex.preemption_possible, preemption_detail=ex.preemption_detail,
            alternatives=[_alternative(a) for a in ex.alternatives],
        )

    @unary
    async def ScaleGpr(self, request: ppb.ScaleGprRequest, context: Ctx) -> pb.Gpr:
        convert.check_range("replicas", request.replicas, 1, convert.MAX_REPLICAS)
        return self._gpr(self.grid.scale_gpr(self._id("id", request.id), request.replicas))

    @unary
    async def ExtendGpr(self, request: ppb.ExtendGprRequest, context: Ctx) -> pb.Gpr:
        if not request.HasField("extend_by"):
            raise InvalidArgument("extend_by", "is required")
        seconds = convert.duration_from_proto("extend_by", request.extend_by)
        return self._gpr(self.grid.extend_gpr(self._id("id", request.id), seconds))


def _alternative(a: Alternative) -> ppb.Alternative:
    m = ppb.Alternative(kind=a.kind, description=a.description, site=a.site or "",
                        tier=int(a.tier or 0),  # type: ignore[arg-type]
                        mig_profile=a.mig_profile, gpu_model=a.gpu_model)
    if a.estimated_wait_s is not None:
        m.estimated_wait.FromNanoseconds(round(a.estimated_wait_s * 1e9))
    return m
