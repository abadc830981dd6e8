"""AgentService: the session between each host's agent and the controller.

Rules of a session:
- The agent's first message is a SessionHello; anything else ends the call with INVALID_ARGUMENT.
- The controller answers with a SessionWelcome, then sends the host's whole HostSpec: once at the
  start (whatever revision the agent says it applied: level-triggered, never a delta), and again
  whenever the host's desired revision changes.
- One session per host: a newer session for the same host replaces the older one, which ends.
- When the session ends the host goes OFFLINE, but its allocations stay: the agent keeps enforcing
  its last desired state (static stability) and re-reports on reconnect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from gridmesh.common.convert import (
    allocation_status_from_proto,
    event_from_proto,
    host_spec_to_proto,
    inventory_from_proto,
    overlay_status_from_proto,
)
from gridmesh.controller.api import convert
from gridmesh.controller.api.errors import abort_for, unary
from gridmesh.controller.errors import InvalidArgument, Unimplemented
from gridmesh.controller.grid import Grid
from gridmesh.controller.hostspec import build_host_spec
from gridmesh.controller.model import Gpr
from gridmesh.v1 import agent_pb2 as agpb
from gridmesh.v1 import agent_pb2_grpc

log = logging.getLogger("gridmesh.controller.session")
Ctx = grpc.aio.ServicerContext[Any, Any]


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    def __init__(self, grid: Grid, status_interval_s: int = 10) -> None:
        self.grid = grid
        self.store = grid.store
        self.status_interval_s = status_interval_s
        # host id -> the event that ends its current session (set when a newer one replaces it)
        self._sessions: dict[str, asyncio.Event] = {}

    @unary
    async def Enroll(self, request: agpb.EnrollRequest, context: Ctx) -> agpb.EnrollResponse:
        raise Unimplemented("enrollment (bootstrap token + CSR -> certificate) is not served yet; "
                            "agents open their session with their host id")

    async def Session(
        self, request_iterator: AsyncIterator[agpb.AgentMessage], context: Ctx
    ) -> AsyncIterator[agpb.ControllerMessage]:
        messages = aiter(request_iterator)
        host_id = ""
        try:
            first = await anext(messages, None)
            if first is None:
                return
            if first.WhichOneof("body") != "hello":
                raise InvalidArgument("body", "the first message of a session must be a hello")
            hello = first.hello
            host_id = convert.check_name("hello.host_id", hello.host_id)
            site = convert.check_name("hello.site", hello.site)
            host = self.grid.host_connected(host_id, site, inventory_from_proto(hello.inventory),
                                            hello.applied_revision, convert.check_text("hello.underlay_address",
                                                                                      hello.underlay_address, 64))
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort_for(context, exc, "Session")
            return

        previous = self._sessions.get(host_id)
        if previous is not None:
            previous.set()  # the newer session wins
        ended = asyncio.Event()
        self._sessions[host_id] = ended
        log.info("session open", extra={"host_id": host_id, "applied_revision": hello.applied_revision})
        reader = asyncio.create_task(self._read(host_id, messages))
        why = "session closed"
        try:
            yield agpb.ControllerMessage(welcome=agpb.SessionWelcome(
                host_id=host_id, desired_revision=host.desired_revision,
                status_interval_seconds=self.status_interval_s))
            sent = -1
            while True:
                # Read the revision before the host: a change while the spec is being sent (the
                # yield below lets other tasks run) then wakes the wait at once instead of being lost.
                seen = self.store.revision
                host = self.grid.get_host(host_id)
                if host.desired_revision != sent:
                    spec = build_host_spec(host, self.store.allocations_on_host(host_id),
                                           {g.id: g for g in self.store.all(Gpr)})
                    self.grid.spec_sent(host_id, spec.revision)
                    yield agpb.ControllerMessage(spec=host_spec_to_proto(spec))
                    sent = spec.revision
                    log.info("spec sent", extra={"host_id": host_id, "revision": spec.revision,
                                                 "allocations": len(spec.allocations)})
                change = asyncio.create_task(self.store.wait_for_change(seen))
                replaced = asyncio.create_task(ended.wait())
                done, _ = await asyncio.wait({change, replaced, reader}, return_when=asyncio.FIRST_COMPLETED)
                change.cancel()
                replaced.cancel()
                if reader in done:
                    error = reader.exception()
                    why = "agent closed the session" if error is None else f"session lost: {error}"
                    break
                if replaced in done:
                    why = "replaced by a newer session of the same host"
                    break
        finally:
            reader.cancel()
            if self._sessions.get(host_id) is ended:
                del self._sessions[host_id]
                self.grid.host_disconnected(host_id, why)
            log.info("session end", extra={"host_id": host_id, "why": why})

    async def _read(self, host_id: str, messages: AsyncIterator[agpb.AgentMessage]) -> None:
        async for msg in messages:
            kind = msg.WhichOneof("body")
            try:
                if kind == "ack":
                    ack = msg.ack
                    self.grid.spec_acknowledged(host_id, ack.revision, ack.accepted, ack.reason,
                                                [allocation_status_from_proto(s) for s in ack.allocations])
                elif kind == "status":
                    st = msg.status
                    self.grid.host_status(host_id, inventory_from_proto(st.inventory),
                                          [allocation_status_from_proto(s) for s in st.allocations],
                                          [event_from_proto(e) for e in st.events], st.applied_revision,
                                          [overlay_status_from_proto(o) for o in st.overlay])
                else:
                    log.warning("unexpected message in session", extra={"host_id": host_id, "kind": kind})
            except Exception:
                # A message the controller cannot take must not end the host's session.
                log.exception("could not process a session message", extra={"host_id": host_id, "kind": kind})
