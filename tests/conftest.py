"""Shared fixtures: a real controller process on loopback and gRPC stubs for it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from gridmesh.testbed.local import LocalGrid
from gridmesh.v1 import admin_pb2, admin_pb2_grpc, provision_pb2_grpc
from gridmesh.v1 import types_pb2 as pb

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], timeout: float = 20.0, what: str = "condition") -> T:
    """Polls ``check`` until it returns something truthy; fails the test with ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@dataclass
class Clients:
    channel: grpc.Channel
    admin: admin_pb2_grpc.AdminServiceStub
    provision: provision_pb2_grpc.ProvisionServiceStub


@pytest.fixture
def grid(tmp_path: Path) -> Iterator[LocalGrid]:
    with LocalGrid(tmp_path / "grid") as g:
        g.start_controller()
        yield g


@pytest.fixture
def clients(grid: LocalGrid) -> Iterator[Clients]:
    with grpc.insecure_channel(grid.address) as channel:
        yield Clients(channel, admin_pb2_grpc.AdminServiceStub(channel),
                      provision_pb2_grpc.ProvisionServiceStub(channel))


def create_site(c: Clients, name: str, tier: int, region: str) -> pb.Site:
    site: pb.Site = c.admin.CreateSite(admin_pb2.CreateSiteRequest(site=pb.Site(name=name, tier=tier,  # type: ignore[arg-type]
                                                                              region=region)))
    return site
