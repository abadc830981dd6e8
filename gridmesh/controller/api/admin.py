"""AdminService: sites, hosts, workspaces, quotas, bootstrap tokens and events for operators."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import grpc

from gridmesh.common.convert import event_to_proto
from gridmesh.common.model import HostState, SiteTier
from gridmesh.controller.api import convert
from gridmesh.controller.api.errors import unary
from gridmesh.controller.api.paging import MAX_PAGE, page
from gridmesh.controller.errors import InvalidArgument
from gridmesh.controller.grid import Grid
from gridmesh.controller.model import BootstrapToken, Host, Site, Workspace
from gridmesh.v1 import admin_pb2 as apb
from gridmesh.v1 import admin_pb2_grpc
from gridmesh.v1 import types_pb2 as pb

Ctx = grpc.aio.ServicerContext[Any, Any]
DEFAULT_TOKEN_TTL_S = 24 * 3600
# Workspace fields an UpdateWorkspace mask may name.
UPDATABLE = ("description", "fair_share_weight", "quota", "allowed_regions", "labels")


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.store = grid.store

    def _host(self, host: Host) -> pb.Host:
        return convert.host_to_proto(host, [a.id for a in self.store.allocations_on_host(host.id)],
                                     self.grid.last_seen(host))

    def _host_id(self, value: str) -> str:
        return convert.check_name("id", value)

    # -- sites --

    @unary
    async def CreateSite(self, request: apb.CreateSiteRequest, context: Ctx) -> pb.Site:
        return convert.site_to_proto(self.grid.create_site(convert.site_from_proto(request.site)))

    @unary
    async def GetSite(self, request: apb.GetSiteRequest, context: Ctx) -> pb.Site:
        return convert.site_to_proto(self.grid.get_site(convert.check_name("name", request.name)))

    @unary
    async def ListSites(self, request: apb.ListSitesRequest, context: Ctx) -> apb.ListSitesResponse:
        tier = convert.enum_from_proto("tier", SiteTier, request.tier)
        region = convert.check_name("region", request.region, required=False)
        sites = sorted((s for s in self.store.all(Site) if (tier is None or s.tier is tier)
                        and (not region or s.region == region)), key=lambda s: (s.tier, s.name))
        return apb.ListSitesResponse(sites=[convert.site_to_proto(s) for s in sites])

    # -- hosts --

    @unary
    async def ListHosts(self, request: apb.ListHostsRequest, context: Ctx) -> apb.ListHostsResponse:
        site = convert.check_name("site", request.site, required=False)
        states = convert.host_states_from_proto("states", request.states)
        hosts = [h for h in self.store.all(Host) if (not site or h.site == site) and (not states or h.state in states)]
        chunk, token = page(hosts, lambda h: h.id, request.page_size, request.page_token)
        return apb.ListHostsResponse(hosts=[self._host(h) for h in chunk], next_page_token=token)

    @unary
    async def GetHost(self, request: apb.GetHostRequest, context: Ctx) -> pb.Host:
        return self._host(self.grid.get_host(self._host_id(request.id)))

    @unary
    async def CordonHost(self, request: apb.CordonHostRequest, context: Ctx) -> pb.Host:
        state = HostState.READY if request.uncordon else HostState.CORDONED
        reason = convert.check_text("reason", request.reason)
        return self._host(self.grid.set_host_admin_state(self._host_id(request.id), state, reason))

    @unary
    async def DrainHost(self, request: apb.DrainHostRequest, context: Ctx) -> pb.Host:
        reason = convert.check_text("reason", request.reason)
        return self._host(self.grid.set_host_admin_state(self._host_id(request.id), HostState.DRAINING, reason))

    # -- workspaces --

    @unary
    async def CreateWorkspace(self, request: apb.CreateWorkspaceRequest, context: Ctx) -> pb.Workspace:
        return convert.workspace_to_proto(self.grid.create_workspace(convert.workspace_from_proto(request.workspace)))

    @unary
    async def GetWorkspace(self, request: apb.GetWorkspaceRequest, context: Ctx) -> pb.Workspace:
        return convert.workspace_to_proto(self.grid.get_workspace(convert.check_name("name", request.name)))

    @unary
    async def ListWorkspaces(self, request: apb.ListWorkspacesRequest, context: Ctx) -> apb.ListWorkspacesResponse:
        chunk, token = page(self.store.all(Workspace), lambda w: w.name, request.page_size, request.page_token)
        return apb.ListWorkspacesResponse(workspaces=[convert.workspace_to_proto(w) for w in chunk],
                                          next_page_token=token)

    @unary
    async def UpdateWorkspace(self, request: apb.UpdateWorkspaceRequest, context: Ctx) -> pb.Workspace:
        paths = list(request.update_mask.paths)
        if not paths:
            raise InvalidArgument("update_mask", f"names no field; allowed: {', '.join(UPDATABLE)}")
        for p in paths:
            if p not in UPDATABLE:
                raise InvalidArgument("update_mask", f"{p!r} cannot be updated; allowed: {', '.join(UPDATABLE)}")
        # Validate the whole message as a workspace, then take only the masked fields from it.
        wanted = convert.workspace_from_proto(request.workspace)
        current = self.grid.get_workspace(wanted.name)
        changes = {p: getattr(wanted, p) for p in paths}
        return convert.workspace_to_proto(self.grid.update_workspace(replace(current, **changes)))

    @unary
    async def DeleteWorkspace(self, request: apb.DeleteWorkspaceRequest, context: Ctx) -> apb.DeleteWorkspaceResponse:
        self.grid.delete_workspace(convert.check_name("name", request.name))
        return apb.DeleteWorkspaceResponse()

    @unary
    async def SetWorkspaceQuota(self, request: apb.SetWorkspaceQuotaRequest, context: Ctx) -> pb.Workspace:
        name = convert.check_name("name", request.name)
        quota = convert.quota_from_proto(request.quota)
        return convert.workspace_to_proto(self.grid.set_quota(name, quota))

    # -- bootstrap tokens --

    @unary
    async def CreateBootstrapToken(self, request: apb.CreateBootstrapTokenRequest, context: Ctx) -> pb.BootstrapToken:
        site = convert.check_name("site", request.site)
        ttl = convert.duration_from_proto("ttl", request.ttl) if request.HasField("ttl") else DEFAULT_TOKEN_TTL_S
        description = convert.check_text("description", request.description)
        token, secret = self.grid.create_token(site, ttl, description)
        return convert.token_to_proto(token, secret)

    @unary
    async def ListBootstrapTokens(
        self, request: apb.ListBootstrapTokensRequest, context: Ctx
    ) -> apb.ListBootstrapTokensResponse:
        site = convert.check_name("site", request.site, required=False)
        tokens = sorted((t for t in self.store.all(BootstrapToken) if not site or t.site == site), key=lambda t: t.id)
        return apb.ListBootstrapTokensResponse(tokens=[convert.token_to_proto(t) for t in tokens])

    @unary
    async def RevokeBootstrapToken(
        self, request: apb.RevokeBootstrapTokenRequest, context: Ctx
    ) -> apb.RevokeBootstrapTokenResponse:
        self.grid.revoke_token(convert.check_text("id", request.id, 63))
        return apb.RevokeBootstrapTokenResponse()

    # -- events --

    @unary
    async def ListEvents(self, request: apb.ListEventsRequest, context: Ctx) -> apb.ListEventsResponse:
        if request.page_size > MAX_PAGE:
            raise InvalidArgument("page_size", f"{request.page_size}; at most {MAX_PAGE} allowed")
        size = request.page_size or 100
        try:
            bound = int(request.page_token or "0")
        except ValueError:
            raise InvalidArgument("page_token", "is not a token this service returned") from None
        # The token is the last seq returned: the next page starts after it (or before it, newest first).
        events = self.store.events(subject=convert.check_text("subject", request.subject, 63),
                                   kind=convert.check_text("kind", request.kind, 63),
                                   since_revision=request.since_revision, limit=size + 1,
                                   newest_first=request.newest_first,
                                   **({"before_seq": bound} if request.newest_first else {"after_seq": bound}))
        token = str(events[size - 1].seq) if len(events) > size else ""
        return apb.ListEventsResponse(events=[event_to_proto(e) for e in events[:size]], next_page_token=token)
