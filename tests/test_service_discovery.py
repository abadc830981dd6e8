"""Generic gRPC tools work against the controller: health checking and server reflection."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gridmesh.testbed.local import LocalGrid

SERVICES = {"gridmesh.v1.AgentService", "gridmesh.v1.ProvisionService", "gridmesh.v1.AdminService"}


def test_health_and_reflection(grid: LocalGrid) -> None:
    with grpc.insecure_channel(grid.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", *SERVICES):
            assert health.Check(health_pb2.HealthCheckRequest(service=name)).status == \
                health_pb2.HealthCheckResponse.SERVING

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = list(reflection.ServerReflectionInfo(iter([
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="gridmesh.v1.ProvisionService"),
        ])))
        listed = {s.name for s in replies[0].list_services_response.service}
        assert SERVICES | {"grpc.health.v1.Health"} <= listed
        # Descriptors come back too, so a tool can build requests without our .proto files.
        assert replies[1].file_descriptor_response.file_descriptor_proto
