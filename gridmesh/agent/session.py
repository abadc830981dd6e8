"""The agent's session with the controller: connect, hello, apply specs, acknowledge, report, and
reconnect with exponential backoff and full jitter when anything breaks.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator

import grpc

from gridmesh.agent.host import HostAgent
from gridmesh.common.convert import (
    allocation_status_to_proto,
    event_to_proto,
    gpu_sample_to_proto,
    host_spec_from_proto,
    inventory_to_proto,
    overlay_status_to_proto,
    timestamp,
)
from gridmesh.v1 import agent_pb2 as agpb
from gridmesh.v1 import agent_pb2_grpc

log = logging.getLogger("gridmesh.agent.session")

CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


class Backoff:
    """Exponential backoff with full jitter (each wait uniform in [0, min(cap, base * 2**n)])."""

    def __init__(self, base_s: float = 0.5, cap_s: float = 30.0, rng: random.Random | None = None) -> None:
        self.base_s, self.cap_s = base_s, cap_s
        self.attempt = 0
        self.rng = rng or random.Random()

    def next(self) -> float:
        ceiling = min(self.cap_s, self.base_s * 2**self.attempt)
        self.attempt += 1
        return self.rng.uniform(self.base_s / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class Session:
    def __init__(self, agent: HostAgent, controller: str, site: str, underlay_address: str = "") -> None:
        self.agent = agent
        self.controller = controller
        self.site = site
        self.underlay_address = underlay_address
        self.connected = asyncio.Event()
        self.busy = asyncio.Lock()

    async def run_forever(self) -> None:
        backoff = Backoff()
        while True:
            try:
                await self.run_once(backoff)
                why = "controller closed the session"
            except grpc.aio.AioRpcError as e:
                why = f"{e.code().name}: {e.details()}"
            self.connected.clear()
            wait = backoff.next()
            log.warning("session ended; reconnecting", extra={"why": why, "retry_in_s": round(wait, 2)})
            await asyncio.sleep(wait)

    async def run_once(self, backoff: Backoff) -> None:
        outbox: asyncio.Queue[agpb.AgentMessage] = asyncio.Queue()
        outbox.put_nowait(agpb.AgentMessage(hello=agpb.SessionHello(
            host_id=self.agent.host_id, site=self.site, inventory=inventory_to_proto(self.agent.inventory()),
            applied_revision=self.agent.applied.revision, underlay_address=self.underlay_address)))

        async def outgoing() -> AsyncIterator[agpb.AgentMessage]:
            while True:
                yield await outbox.get()

        reporter: asyncio.Task[None] | None = None
        async with grpc.aio.insecure_channel(self.controller, options=CHANNEL_OPTIONS) as channel:
            call = agent_pb2_grpc.AgentServiceStub(channel).Session(outgoing())
            try:
                async for msg in call:
                    kind = msg.WhichOneof("body")
                    if kind == "welcome":
                        backoff.reset()
                        self.connected.set()
                        interval = msg.welcome.status_interval_seconds or 10
                        log.info("session open", extra={"controller": self.controller,
                                                        "desired_revision": msg.welcome.desired_revision})
                        reporter = asyncio.create_task(self._report(outbox, interval))
                    elif kind == "spec":
                        # Reconcilers block (netlink, the GPU driver): off the event loop, one at a time.
                        async with self.busy:
                            result = await asyncio.to_thread(self.agent.apply, host_spec_from_proto(msg.spec))
                        outbox.put_nowait(agpb.AgentMessage(ack=agpb.SpecAck(
                            revision=result.revision, accepted=result.accepted, reason=result.reason,
                            allocations=[allocation_status_to_proto(s) for s in result.statuses])))
                        # Report at once: GPUs released by this spec are usable again only once the
                        # controller sees them healthy after it; new overlay keys let peers add us.
                        outbox.put_nowait(await self.status_message())
                        log.info("spec applied" if result.accepted else "spec rejected",
                                 extra={"revision": result.revision, "reason": result.reason,
                                        "allocations": len(result.statuses)})
            finally:
                if reporter is not None:
                    reporter.cancel()
                call.cancel()

    async def _report(self, outbox: asyncio.Queue[agpb.AgentMessage], interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            outbox.put_nowait(await self.status_message())

    async def status_message(self) -> agpb.AgentMessage:
        async with self.busy:
            await asyncio.to_thread(self.agent.tick)
        sample = self.agent.latest_sample
        overlay = self.agent.overlay_status
        return agpb.AgentMessage(status=agpb.HostStatus(
            inventory=inventory_to_proto(self.agent.inventory()),
            applied_revision=self.agent.applied.revision,
            allocations=[allocation_status_to_proto(s) for s in self.agent.statuses()],
            events=[event_to_proto(e) for e in self.agent.take_events()],
            observed_at=timestamp(time.time()),
            telemetry=[gpu_sample_to_proto(s) for s in sample.gpus] if sample is not None else [],
            overlay=[overlay_status_to_proto(i) for i in overlay.interfaces] if overlay is not None else [],
            overlay_backend=overlay.backend if overlay is not None else "",
        ))
