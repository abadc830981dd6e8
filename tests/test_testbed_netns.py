"""The namespace test bed: hosts on an underlay bridge, a controller the hosts and the tests both
reach, agents inside the host namespaces, and a tear-down that leaves nothing, also after a failure."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import grpc
import pytest

from gridmesh.common.model import HostId, WorkspaceName
from gridmesh.dataplane.links import in_netns, socket_in_netns
from gridmesh.dataplane.model import OverlaySpec, WgInterfaceSpec
from gridmesh.dataplane.naming import interface_name
from gridmesh.dataplane.uapi import DEFAULT_RUN_DIR
from gridmesh.testbed.netns import NetnsTestbed, available
from gridmesh.v1 import admin_pb2, admin_pb2_grpc
from gridmesh.v1 import types_pb2 as pb
from tests.conftest import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.skipif(bool(available()), reason=available() or "available")]


def leftovers(bed: NetnsTestbed, interfaces: tuple[str, ...] | list[str] = ()) -> list[str]:
    out = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    out += [f"netns {n}" for n in netns.split() if n.startswith(bed.id)]
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    out += [f"link {line.split()[0]}" for line in links.splitlines() if line.startswith(bed.id)]
    for name in interfaces:
        if (DEFAULT_RUN_DIR / f"{name}.sock").exists():
            out.append(f"socket {name}")
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                cmdline = (status.parent / "cmdline").read_bytes().split(b"\0")
                state = status.read_text()
            except OSError:
                continue
            if cmdline[:2] == [b"wireguard-go", name.encode()] and "State:\tZ" not in state:
                out.append(f"wireguard-go {name}")
    return out


def test_hosts_reach_each_other_on_the_underlay_and_nothing_is_left(tmp_path: Path) -> None:
    with NetnsTestbed(tmp_path, 2) as bed:
        h1, h2 = bed.hosts
        assert h1.underlay_address != h2.underlay_address
        with socket_in_netns(h2.netns, socket.AF_INET, socket.SOCK_DGRAM) as server, \
                socket_in_netns(h1.netns, socket.AF_INET, socket.SOCK_DGRAM) as client:
            server.bind((h2.underlay_address, 7000))
            server.settimeout(5)
            client.sendto(b"ping", (h2.underlay_address, 7000))
            data, (src, _) = server.recvfrom(10)
            assert (data, src) == (b"ping", h1.underlay_address)
        # The root namespace is not on the underlay unless a controller needs it.
        assert not in_netns(None, lambda: bed.root_address in subprocess.run(
            ["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout)
    assert leftovers(bed) == []


def test_tear_down_after_a_failure_removes_tunnels_daemons_and_namespaces(tmp_path: Path) -> None:
    names: list[str] = []
    with pytest.raises(RuntimeError, match="the test failed here"), NetnsTestbed(tmp_path, 2) as bed:
        for h in bed.hosts:
            runner = bed.start_overlay_runner(h.host_id)
            name = interface_name(h.host_id, "a")
            names.append(name)
            runner.write_spec(OverlaySpec(HostId(h.host_id), (WgInterfaceSpec(
                name=name, workspace=WorkspaceName("a"), addresses=("100.64.0.1/20",)),)))
        wait_for(lambda: all(r.caught_up for r in bed.runners.values()), 20, "the runners to make their interfaces")
        assert all(Path(f"/var/run/netns/{h.workspace_netns('a')}").exists() for h in bed.hosts)
        assert all((DEFAULT_RUN_DIR / f"{n}.sock").exists() for n in names)
        raise RuntimeError("the test failed here")
    wait_for(lambda: not leftovers(bed, names), 10, "nothing left")


def test_controller_and_agents_in_host_namespaces(tmp_path: Path) -> None:
    with NetnsTestbed(tmp_path, 2) as bed:
        address = bed.start_controller()
        assert address.startswith(bed.root_address)
        with grpc.insecure_channel(address) as channel:
            admin = admin_pb2_grpc.AdminServiceStub(channel)
            admin.CreateSite(admin_pb2.CreateSiteRequest(site=pb.Site(
                name="edge", tier=pb.SITE_TIER_FAR_EDGE, region="eu-fr")))
            for h in bed.hosts:
                bed.start_agent(h.host_id, "edge", [{"model": "L4", "count": 1}])

            def connected() -> dict[str, str] | None:
                hosts = admin.ListHosts(admin_pb2.ListHostsRequest()).hosts
                found = {h.id: h.underlay_address for h in hosts if h.connected}
                return found if len(found) == 2 else None

            found = wait_for(connected, 30, "both agents connected from their namespaces")
            assert found == {h.host_id: h.underlay_address for h in bed.hosts}
        # The agents run in their hosts' namespaces, not in the root one.
        for h in bed.hosts:
            popen = bed.agents[h.host_id].popen
            assert popen is not None
            assert Path(f"/proc/{popen.pid}/ns/net").stat().st_ino == Path(f"/var/run/netns/{h.netns}").stat().st_ino
    assert leftovers(bed) == []
