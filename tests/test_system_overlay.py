"""The whole system in the namespace test bed: a controller, three agents each in its own host
namespace, GPRs in two workspaces over real gRPC. The controller plans each workspace's overlay from
the allocations; the agents build it with wireguard-go; workloads' namespaces reach each other only
within their workspace, and no private key ever reaches the controller.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from gridmesh.dataplane import keys as wgkeys
from gridmesh.dataplane.links import socket_in_netns
from gridmesh.testbed.netns import NetnsTestbed, available, udp_reachability
from gridmesh.v1 import admin_pb2, admin_pb2_grpc, provision_pb2, provision_pb2_grpc
from gridmesh.v1 import types_pb2 as pb
from tests.conftest import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.slow,
              pytest.mark.skipif(bool(available()), reason=available() or "available")]


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[NetnsTestbed]:
    with NetnsTestbed(tmp_path / "bed", hosts=3) as b:
        b.start_controller()
        yield b


def overlay_address(admin: admin_pb2_grpc.AdminServiceStub, host_id: str, workspace: str) -> str:
    host = admin.GetHost(admin_pb2.GetHostRequest(id=host_id))
    for i in host.overlay:
        if i.workspace == workspace and i.addresses:
            return str(i.addresses[0]).split("/")[0]
    return ""


def test_workspaces_get_encrypted_overlays_through_the_real_controller(bed: NetnsTestbed) -> None:
    h1, h2, h3 = bed.hosts
    with grpc.insecure_channel(bed.address) as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        provision = provision_pb2_grpc.ProvisionServiceStub(channel)
        for i, h in enumerate(bed.hosts):
            admin.CreateSite(admin_pb2.CreateSiteRequest(site=pb.Site(name=f"s{i + 1}", tier=pb.SITE_TIER_CORE,
                                                                      region="eu")))
            bed.start_agent(h.host_id, f"s{i + 1}", [{"model": "L4", "count": 2}])
        for ws in ("a", "b"):
            admin.CreateWorkspace(admin_pb2.CreateWorkspaceRequest(workspace=pb.Workspace(name=ws)))
        # Workspace a on every host, b on h2 and h3 only.
        gprs = []
        for ws, sites in (("a", ("s1", "s2", "s3")), ("b", ("s2", "s3"))):
            for site in sites:
                spec = pb.GprSpec(workspace=ws, shape=pb.GpuShape(count=1), priority_tier=pb.PRIORITY_TIER_LOW,
                                  priority=1, placement=pb.PlacementSpec(policy=pb.PLACEMENT_POLICY_PINNED, site=site))
                gprs.append(provision.SubmitGpr(provision_pb2.SubmitGprRequest(spec=spec)).id)
        def all_running() -> bool:
            return all(provision.GetGpr(provision_pb2.GetGprRequest(id=g)).state == pb.GPR_STATE_RUNNING
                       for g in gprs)

        wait_for(all_running, 30, "every GPR running")

        def planned() -> bool:
            # Every member has the others as peers (their keys and ports reported and planned).
            for h, ws, peers in ((h1, "a", 2), (h2, "a", 2), (h3, "a", 2), (h2, "b", 1), (h3, "b", 1)):
                host = admin.GetHost(admin_pb2.GetHostRequest(id=h.host_id))
                ifaces = [i for i in host.overlay if i.workspace == ws]
                if len(ifaces) != 1 or len([p for p in ifaces[0].peers if p.allowed_ips]) != peers:
                    return False
            return True

        wait_for(planned, 40, "every overlay planned with every peer")
        a1 = overlay_address(admin, h1.host_id, "a")
        b2 = overlay_address(admin, h2.host_id, "b")
        assert a1 and b2
        workspace = admin.GetWorkspace(admin_pb2.GetWorkspaceRequest(name="a"))
        assert workspace.overlay_cidr and a1.startswith(workspace.overlay_cidr.split(".")[0])

        # a's namespaces on h2 and h3 reach a's address on h1 through the tunnels.
        reached = udp_reachability(h1.workspace_netns("a"), a1, {h2.workspace_netns("a"): "h2",
                                                                  h3.workspace_netns("a"): "h3"}, timeout=40)
        assert set(reached) == {"h2", "h3"}
        # b cannot reach a: from b's namespace on h2 nothing arrives at a's address on h1.
        with socket_in_netns(h1.workspace_netns("a"), socket.AF_INET, socket.SOCK_DGRAM) as server, \
                socket_in_netns(h2.workspace_netns("b"), socket.AF_INET, socket.SOCK_DGRAM) as client:
            server.bind(("0.0.0.0", 7788))
            server.settimeout(1.0)
            with contextlib.suppress(OSError):  # no route: as good as dropped
                client.sendto(b"from b", (a1, 7788))
            with pytest.raises(TimeoutError):
                server.recvfrom(100)

        # No private key anywhere the controller keeps things, nor in what it serves.
        served = b"".join(admin.GetHost(admin_pb2.GetHostRequest(id=h.host_id)).SerializeToString()
                          for h in bed.hosts)
        private = bed.private_keys()
        assert len(private) >= 5
        assert wgkeys.find_key_material_in_bytes(served, private, "GetHost") == []
        assert bed.find_key_leaks() == []


def test_agents_rotate_keys_and_the_overlay_keeps_working(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDMESH_STATUS_INTERVAL_S", "1")  # agents report (and check key age) every second
    with NetnsTestbed(tmp_path / "bed", hosts=2) as bed, grpc.insecure_channel(bed.start_controller()) as channel:
        h1, h2 = bed.hosts
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        provision = provision_pb2_grpc.ProvisionServiceStub(channel)
        admin.CreateSite(admin_pb2.CreateSiteRequest(site=pb.Site(name="s1", tier=pb.SITE_TIER_CORE, region="eu")))
        admin.CreateWorkspace(admin_pb2.CreateWorkspaceRequest(workspace=pb.Workspace(name="a")))
        bed.start_agent(h1.host_id, "s1", [{"model": "L4", "count": 1}], ["--overlay-key-rotation-s", "3"])
        bed.start_agent(h2.host_id, "s1", [{"model": "L4", "count": 1}])
        wait_for(lambda: len([h for h in admin.ListHosts(admin_pb2.ListHostsRequest()).hosts if h.connected]) == 2,
                 30, "both hosts connected")
        spec = pb.GprSpec(workspace="a", shape=pb.GpuShape(count=1), priority_tier=pb.PRIORITY_TIER_LOW,
                          priority=1, replicas=2)
        provision.SubmitGpr(provision_pb2.SubmitGprRequest(spec=spec))

        def h1_key_at_h2() -> str:
            peers = [p for i in admin.GetHost(admin_pb2.GetHostRequest(id=h2.host_id)).overlay for p in i.peers
                     if p.allowed_ips]
            return str(peers[0].public_key) if peers else ""

        first = wait_for(h1_key_at_h2, 40, "h2 to have h1 as a peer")
        a1 = wait_for(lambda: overlay_address(admin, h1.host_id, "a"), 10, "h1's address in a")
        udp_reachability(h1.workspace_netns("a"), a1, {h2.workspace_netns("a"): "h2"}, timeout=30)
        # h1's key is older than 3 s: it publishes a next key, h2 stages it, the controller switches.
        second = wait_for(lambda: (k := h1_key_at_h2()) != first and k, 40, "h1's key to be rotated")
        assert second != first
        reached = udp_reachability(h1.workspace_netns("a"), a1, {h2.workspace_netns("a"): "h2"}, port=7778,
                                   timeout=30)
        assert "h2" in reached
        assert bed.find_key_leaks() == []
