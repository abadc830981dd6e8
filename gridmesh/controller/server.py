"""Wires the controller together: store, grid, gRPC services (with health and reflection), placement."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gridmesh.controller.api.admin import AdminServicer
from gridmesh.controller.api.agent import AgentServicer
from gridmesh.controller.api.provision import ProvisionServicer
from gridmesh.controller.config import ControllerConfig
from gridmesh.controller.grid import Grid
from gridmesh.controller.placement import placement_loop
from gridmesh.controller.store import Store
from gridmesh.v1 import admin_pb2, admin_pb2_grpc, agent_pb2, agent_pb2_grpc, provision_pb2, provision_pb2_grpc

log = logging.getLogger("gridmesh.controller")

SERVICES = (
    agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name,
    provision_pb2.DESCRIPTOR.services_by_name["ProvisionService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
)

# Keepalive pings find agents that vanished without closing their connection (power loss, partition).
SERVER_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
]


@dataclass
class Controller:
    server: grpc.aio.Server
    store: Store
    grid: Grid
    port: int
    placement: asyncio.Task[None]
    health: health.aio.HealthServicer

    async def stop(self, grace_s: float = 5.0) -> None:
        for name in ("", *SERVICES):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.placement.cancel()
        await self.server.stop(grace_s)
        self.store.close()


async def start_controller(cfg: ControllerConfig) -> Controller:
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    store = Store(cfg.state_dir / "gridmesh.sqlite3")
    grid = Grid(store)
    for site in cfg.sites:
        if store.site(site.name) is None:
            grid.create_site(site)
    server = grpc.aio.server(options=SERVER_OPTIONS)
    agent_pb2_grpc.add_AgentServiceServicer_to_server(AgentServicer(grid, cfg.status_interval_s), server)
    provision_pb2_grpc.add_ProvisionServiceServicer_to_server(ProvisionServicer(grid), server)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(grid), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(cfg.listen)
    if port == 0:
        raise OSError(f"cannot listen on {cfg.listen}")
    await server.start()
    for name in ("", *SERVICES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    placement = asyncio.create_task(placement_loop(grid, cfg.placement_interval_s), name="placement")
    return Controller(server, store, grid, port, placement, health_servicer)
