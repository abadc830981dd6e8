"""The thin edge between gridctl and the controller: the channel, paging, and waiting on a GPR.

``open_channel`` is the only place that decides how gridctl connects, so mTLS replaces one function.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import grpc

from gridmesh.cli.enums import GPR_STATE
from gridmesh.cli.exits import CliError, ExitCode
from gridmesh.cli.output import OutputFormat
from gridmesh.cli.parse import ControllerAddress, format_seconds, resolve_controller
from gridmesh.v1 import admin_pb2_grpc, provision_pb2, provision_pb2_grpc, types_pb2

T = TypeVar("T")

# The contract caps pages at 1000 items (provision.proto, ListGprsRequest.page_size).
MAX_PAGE_SIZE = 1000


def open_channel(address: str) -> grpc.Channel:
    """A channel to the controller. Insecure for now; mTLS will be set up here and nowhere else."""
    return grpc.insecure_channel(address)


class Session:
    """What every command needs: the global options and, once asked for, a channel.

    The address is resolved lazily so that ``gridctl gpr --help`` works with a broken config file.
    """

    def __init__(self, controller_flag: str | None, output: OutputFormat, timeout: float) -> None:
        self.output = output
        self.timeout = timeout
        self._controller_flag = controller_flag
        self._controller: ControllerAddress | None = None
        self._channel: grpc.Channel | None = None

    @property
    def controller(self) -> ControllerAddress:
        if self._controller is None:
            self._controller = resolve_controller(self._controller_flag, os.environ, Path.home())
        return self._controller

    def _open(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = open_channel(self.controller.address)
        return self._channel

    def provision(self) -> provision_pb2_grpc.ProvisionServiceStub:
        return provision_pb2_grpc.ProvisionServiceStub(self._open())

    def admin(self) -> admin_pb2_grpc.AdminServiceStub:
        return admin_pb2_grpc.AdminServiceStub(self._open())

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None


def collect_pages(fetch: Callable[[str, int], tuple[Sequence[T], str]], limit: int = 0) -> list[T]:
    """Every item of a paged list, or the first ``limit`` of them (0: no limit).

    ``fetch(page_token, page_size)`` returns one page and the next token ("" at the end). The page
    size asked for never exceeds what is still wanted, so a small ``--limit`` costs one small call.
    A controller that hands back a token it already gave would loop forever; that is reported.
    """
    items: list[T] = []
    token = ""
    seen: set[str] = set()
    while True:
        page_size = min(limit - len(items), MAX_PAGE_SIZE) if limit else 0  # 0: the server's default
        page, token = fetch(token, page_size)
        items.extend(page)
        if limit and len(items) >= limit:
            return items[:limit]
        if not token:
            return items
        if token in seen:
            raise CliError(f"the controller returned page token {token!r} twice; stopped listing")
        seen.add(token)


# --- waiting for a GPR -------------------------------------------------------------------------------

TERMINAL_STATES = frozenset(
    {
        types_pb2.GPR_STATE_RELEASED,
        types_pb2.GPR_STATE_EXPIRED,
        types_pb2.GPR_STATE_FAILED,
        types_pb2.GPR_STATE_CANCELLED,
    }
)
# What `submit --wait` counts as success. RELEASED is in: the GPR ran and finished before we saw it run.
SUCCESS_STATES = frozenset({types_pb2.GPR_STATE_RUNNING, types_pb2.GPR_STATE_RELEASED})


def is_settled(state: types_pb2.GprState.ValueType) -> bool:
    """Whether ``submit --wait`` stops here: the GPR runs, or it never will."""
    return state == types_pb2.GPR_STATE_RUNNING or state in TERMINAL_STATES


def wait_for_gpr(
    stub: provision_pb2_grpc.ProvisionServiceStub,
    gpr: types_pb2.Gpr,
    timeout: float,
    progress: Callable[[provision_pb2.GprEvent], None],
) -> types_pb2.Gpr:
    """Follow ``gpr`` until it is settled; return it as last seen.

    Watching from the revision Submit returned misses nothing that happened in between. A wait that
    runs out, or a stream the controller ends early, is a CliError (exit 1) naming the last state.
    """
    if is_settled(gpr.state):
        return gpr
    request = provision_pb2.WatchGprsRequest(gpr_id=gpr.id, since_revision=gpr.revision)
    stream = stub.WatchGprs(request, timeout=timeout)
    try:
        for ev in stream:
            progress(ev)
            if ev.HasField("gpr") and ev.gpr.id == gpr.id:
                gpr = ev.gpr
                if is_settled(gpr.state):
                    return gpr
    except grpc.RpcError as err:
        # Our own deadline is not the controller being unreachable: say the wait ran out instead.
        if isinstance(err, grpc.Call) and err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise CliError(
                f"gave up after {format_seconds(int(timeout))} waiting for GPR {gpr.id} to run; it is "
                f"{GPR_STATE.show(gpr.state)} (see `gridctl gpr explain {gpr.id}`)"
            ) from None
        raise
    finally:
        stream.cancel()
    raise CliError(f"the controller ended the watch while GPR {gpr.id} was {GPR_STATE.show(gpr.state)}")


def check_outcome(gpr: types_pb2.Gpr) -> None:
    """Raise (exit 1) when a waited-for GPR ended without running."""
    if gpr.state not in SUCCESS_STATES:
        reason = f": {gpr.state_reason}" if gpr.state_reason else ""
        raise CliError(f"GPR {gpr.id} ended {GPR_STATE.show(gpr.state)}{reason}", ExitCode.ERROR)
