"""The controller's operations on the grid: what every API call, session message and placement round
does to the stored state.

Rules:
- Each public method is one store transaction: it checks everything first and raises a GridError
  (nothing written) or commits all of its changes together.
- GPR state changes go through ``lifecycle.transition`` (recorded as events, with reasons).
- A host's ``desired_revision`` is set to the committing revision whenever its allocations change;
  that is the revision of the HostSpec its session sends next.
- Placement decisions are not made here: ``apply_plan`` only re-checks and commits what the pure
  scheduler proposed (Nomad's plan-apply), dropping what no longer fits.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TypeVar

from gridmesh.common.model import (
    AllocationId,
    AllocationState,
    AllocationStatus,
    Event,
    GprId,
    GprState,
    GpuHealth,
    HostId,
    HostState,
    Inventory,
    SiteName,
)
from gridmesh.controller import lifecycle
from gridmesh.controller.errors import AlreadyExists, FailedPrecondition, NotFound
from gridmesh.controller.model import (
    Allocation,
    BootstrapToken,
    Gpr,
    GprSpec,
    Host,
    OverlayRecord,
    Quota,
    Site,
    Workspace,
)
from gridmesh.controller.overlay import OverlayHost, plan_overlay, reports_from_status
from gridmesh.controller.records import ReservationRecord, reservation_key
from gridmesh.controller.scheduler import Placement, Plan, Snapshot, violations
from gridmesh.controller.scheduler.mig import table_for
from gridmesh.controller.scheduler.types import Eviction, MigSlot
from gridmesh.controller.store import Store, Tx
from gridmesh.dataplane.model import OverlayInterfaceStatus, OverlayStatus

S = GprState
log = logging.getLogger("gridmesh.controller.grid")
# GPRs the scheduler should look at: waiting ones, and held ones short of replicas (scaled up, drained).
NEEDS_PLACEMENT = frozenset({S.PENDING, S.RUNNING, S.PROVISIONING, S.MIGRATING})
T = TypeVar("T")


def groupby_gpr(placements: Iterable[Placement]) -> list[tuple[GprId, list[Placement]]]:
    groups: dict[GprId, list[Placement]] = {}
    for p in placements:
        groups.setdefault(p.gpr_id, []).append(p)
    return list(groups.items())


def mig_slots_of(a: Allocation, host: Host | None) -> tuple[MigSlot, ...]:
    """The MIG instance slots an allocation holds, as committed (profile and start on each GPU)."""
    if not a.mig_profile or host is None or len(a.mig_starts) != len(a.gpu_uuids):
        return ()
    slots = []
    for index, uuid, start in zip(a.gpu_indexes, a.gpu_uuids, a.mig_starts, strict=True):
        gpu = next((g for g in host.inventory.gpus if g.uuid == uuid), None)
        table = table_for(gpu.model) if gpu else None
        profile = table.profile(a.mig_profile) if table else None
        if profile is None:
            return ()
        slots.append(MigSlot(uuid, index, profile.name, start, profile.size, profile.compute_slices))
    return tuple(slots)


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


class Grid:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        # When each host's session last said anything. Liveness is volatile: keeping it out of the
        # store spares a revision bump (and a wake-up of every loop) per heartbeat.
        self.last_heard: dict[str, float] = {}

    def last_seen(self, host: Host) -> float:
        return max(host.last_seen, self.last_heard.get(host.id, 0.0))
    # -- sites and workspaces -----------------------------------------------------------------

    def create_site(self, site: Site) -> Site:
        if self.store.site(site.name):
            raise AlreadyExists("site", site.name)
        with self.store.write() as tx:
            tx.put(site)
            tx.event(self._event("site.created", site.name, "Created", f"site {site.name} ({site.tier.name.lower()}, "
                                 f"region {site.region}) created"))
        return self._must(self.store.site(site.name), "site", site.name)

    def get_site(self, name: str) -> Site:
        return self._must(self.store.site(name), "site", name)

    def create_workspace(self, ws: Workspace) -> Workspace:
        if self.store.workspace(ws.name):
            raise AlreadyExists("workspace", ws.name)
        with self.store.write() as tx:
            tx.put(replace(ws, created_at=self.clock()))
            tx.event(self._event("workspace.created", ws.name, "Created", f"workspace {ws.name} created"))
        return self.get_workspace(ws.name)

    def get_workspace(self, name: str) -> Workspace:
        return self._must(self.store.workspace(name), "workspace", name)

    def update_workspace(self, ws: Workspace) -> Workspace:
        self.get_workspace(ws.name)
        with self.store.write() as tx:
            tx.put(ws)
            tx.event(self._event("workspace.updated", ws.name, "Updated", f"workspace {ws.name} updated"))
        return self.get_workspace(ws.name)

    def set_quota(self, name: str, quota: Quota) -> Workspace:
        return self.update_workspace(replace(self.get_workspace(name), quota=quota))

    def delete_workspace(self, name: str) -> None:
        self.get_workspace(name)
        live = [g.id for g in self.store.all(Gpr) if g.spec.workspace == name and not g.state.terminal]
        if live:
            raise FailedPrecondition(f"workspace {name!r} still has {len(live)} active GPRs "
                                     f"({', '.join(sorted(live)[:5])}); cancel them first")
        with self.store.write() as tx:
            tx.delete(Workspace, name)
            tx.event(self._event("workspace.deleted", name, "Deleted", f"workspace {name} deleted"))

    # -- bootstrap tokens ---------------------------------------------------------------------

    def create_token(self, site: str, ttl_s: float, description: str) -> tuple[BootstrapToken, str]:
        """A new one-time token; the secret is returned here and never again (only its hash is kept)."""
        self.get_site(site)
        secret = secrets.token_urlsafe(24)
        token = BootstrapToken(
            id=_new_id("tok"), site=SiteName(site), secret_sha256=hashlib.sha256(secret.encode()).hexdigest(),
            expires_at=self.clock() + ttl_s, description=description,
        )
        with self.store.write() as tx:
            tx.put(token)
            tx.event(self._event("token.created", token.id, "Created", f"bootstrap token for site {site}"))
        return self._must(self.store.get(BootstrapToken, token.id), "token", token.id), secret

    def revoke_token(self, token_id: str) -> None:
        self._must(self.store.get(BootstrapToken, token_id), "bootstrap token", token_id)
        with self.store.write() as tx:
            tx.delete(BootstrapToken, token_id)
            tx.event(self._event("token.revoked", token_id, "Revoked", "bootstrap token revoked"))

    # -- GPRs ----------------------------------------------------------------------------------

    def submit_gpr(self, spec: GprSpec, request_id: str = "") -> Gpr:
        """Stores a new PENDING GPR. The spec is already validated; references are checked here."""
        if request_id:
            for g in self.store.all(Gpr):
                if g.request_id == request_id and g.spec.workspace == spec.workspace:
                    return g  # an idempotent retry
        self.get_workspace(spec.workspace)
        for site in (spec.placement.site, spec.placement.origin_site):
            if site is not None:
                self.get_site(site)
        now = self.clock()
        gpr = Gpr(id=GprId(_new_id("gpr")), spec=spec, state=S.PENDING, created_at=now, updated_at=now,
                  state_reason="waiting for placement", request_id=request_id)
        with self.store.write() as tx:
            tx.put(gpr)
            tx.event(Event(kind="gpr.state", subject=gpr.id, reason="Submitted",
                           message=f"submitted to workspace {spec.workspace}", time=now, to_state=S.PENDING.name,
                           attributes=(("workspace", spec.workspace),)))
        return self.get_gpr(gpr.id)

    def get_gpr(self, gpr_id: str) -> Gpr:
        return self._must(self.store.gpr(gpr_id), "GPR", gpr_id)

    def cancel_gpr(self, gpr_id: str, reason: str = "") -> Gpr:
        gpr = self.get_gpr(gpr_id)
        if gpr.state.terminal:
            raise FailedPrecondition(f"GPR {gpr_id} is already {gpr.state.name}; nothing to cancel")
        with self.store.write() as tx:
            self._release(tx, self.store.allocations_of_gpr(gpr.id))
            self._drop_reservations(tx, gpr.id)
            lifecycle.transition(tx, gpr, S.CANCELLED, "Cancelled", reason or "cancelled by a client", self.clock())
        return self.get_gpr(gpr_id)

    def scale_gpr(self, gpr_id: str, replicas: int) -> Gpr:
        """Changes the replica count; extra replicas are released at once, missing ones get placed."""
        gpr = self.get_gpr(gpr_id)
        if gpr.state.terminal:
            raise FailedPrecondition(f"GPR {gpr_id} is {gpr.state.name}; it cannot be scaled")
        with self.store.write() as tx:
            tx.put(replace(gpr, spec=replace(gpr.spec, replicas=replicas), updated_at=self.clock()))
            self._release(tx, [a for a in self.store.allocations_of_gpr(gpr.id) if a.replica >= replicas])
            self._drop_reservations(tx, gpr.id, from_replica=replicas)
            tx.event(self._event("gpr.scaled", gpr.id, "Scaled",
                                 f"replicas {gpr.spec.replicas} -> {replicas}"))
        return self.get_gpr(gpr_id)

    def extend_gpr(self, gpr_id: str, extend_by_s: float) -> Gpr:
        gpr = self.get_gpr(gpr_id)
        if gpr.state.terminal:
            raise FailedPrecondition(f"GPR {gpr_id} is {gpr.state.name}; it cannot be extended")
        if gpr.spec.duration_s is None:
            raise FailedPrecondition(f"GPR {gpr_id} has no duration; it runs until cancelled")
        duration = gpr.spec.duration_s + extend_by_s
        expires = gpr.expires_at + extend_by_s if gpr.expires_at is not None else None
        with self.store.write() as tx:
            tx.put(replace(gpr, spec=replace(gpr.spec, duration_s=duration), expires_at=expires,
                           updated_at=self.clock()))
            tx.event(self._event("gpr.extended", gpr.id, "Extended", f"duration extended by {extend_by_s:g}s"))
        return self.get_gpr(gpr_id)

    def expire_due(self) -> int:
        """Ends every GPR whose duration ran out; returns how many."""
        now = self.clock()
        due = [g for g in self.store.all(Gpr) if g.expires_at is not None and g.expires_at <= now
               and not g.state.terminal]
        if due:
            with self.store.write() as tx:
                for gpr in due:
                    self._release(tx, self.store.allocations_of_gpr(gpr.id))
                    self._drop_reservations(tx, gpr.id)
                    lifecycle.transition(tx, gpr, S.EXPIRED, "DurationElapsed",
                                         f"its duration of {gpr.spec.duration_s:g}s elapsed", now)
        return len(due)

    # -- placement --------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        store = self.store
        allocations = tuple(store.all(Allocation))
        reservations = tuple(r.reservation for r in store.all(ReservationRecord))
        held: dict[str, int] = {}
        for a in allocations:
            held[a.gpr_id] = held.get(a.gpr_id, 0) + 1
        for r in reservations:
            held[r.gpr_id] = held.get(r.gpr_id, 0) + 1
        live = {g.id: g for g in store.all(Gpr) if not g.state.terminal}
        # Data locality: a site holds a model artifact once work using it has been placed there.
        artifacts: dict[str, set[SiteName]] = {}
        for a in allocations:
            artifact = live[a.gpr_id].spec.model_artifact if a.gpr_id in live else ""
            if artifact:
                artifacts.setdefault(artifact, set()).add(a.site)
        pending = tuple(g for g in store.all(Gpr) if g.state in NEEDS_PLACEMENT
                        and held.get(g.id, 0) < g.spec.replicas)
        hosts = {h.id: h for h in store.all(Host)}
        return Snapshot(
            revision=store.revision,
            now=self.clock(),
            sites={s.name: s for s in store.all(Site)},
            hosts=tuple(sorted((h.as_scheduled() for h in hosts.values()), key=lambda h: h.id)),
            workspaces={w.name: w for w in store.all(Workspace)},
            allocations=allocations,
            pending=pending,
            allocation_mig={a.id: slots for a in allocations if (slots := mig_slots_of(a, hosts.get(a.host_id)))},
            unclean_gpus=frozenset(u for h in hosts.values() for u, _ in h.released_gpus),
            gprs=live,
            reservations=reservations,
            preempted_at={g.id: g.preempted_at for g in live.values() if g.preempted_at is not None},
            artifacts_at_site={k: frozenset(v) for k, v in artifacts.items()},
        )

    def apply_plan(self, plan: Plan) -> int:
        """Commits what of ``plan`` still holds against the current state; returns how many placements.

        Preemption first: if the plan's evictions, reservations and dropped reservations (with the
        placements) pass ``scheduler.violations`` against the latest snapshot, they are committed
        together. Otherwise, and for plain placements, each GPR's placements are re-verified on top
        of those already accepted and committed whole or not at all; what no longer fits is re-planned
        next round from fresh state (Nomad's plan-apply). A migration is make-before-break: the new
        allocation is committed now, the old one is released once the new one runs.
        """
        snapshot = self.snapshot()
        if plan.evictions or plan.migrations or plan.reservations or plan.dropped_reservations:
            whole = Plan(placements=plan.placements, evictions=plan.evictions, migrations=plan.migrations,
                         reservations=plan.reservations, dropped_reservations=plan.dropped_reservations)
            problems = violations(snapshot, whole)
            if not problems:
                return self._commit(whole)
            log.info("preemption no longer fits; placing what still does", extra={"problems": problems[:3]})
        accepted: list[Placement] = []
        for gpr_id, placements in groupby_gpr(p for p in plan.placements if p.after_eviction is None):
            gpr = self.store.gpr(gpr_id)
            if gpr is None or gpr.state not in NEEDS_PLACEMENT:
                continue
            problems = violations(snapshot, Plan(placements=(*accepted, *placements)))
            if problems:
                log.info("placement no longer fits", extra={"gpr": gpr_id, "problems": problems[:3]})
                continue
            accepted += placements
        return self._commit(Plan(placements=tuple(accepted)))

    def _commit(self, plan: Plan) -> int:
        """Writes a verified plan in one transaction, in the order its elements depend on each other."""
        store = self.store
        now = self.clock()
        with store.write() as tx:
            for r, why in plan.dropped_reservations:
                tx.delete(ReservationRecord, reservation_key(r.gpr_id, r.replica))
                tx.event(self._event("gpr.reservation", r.gpr_id, "ReservationDropped", why))
            evicted: dict[GprId, list[Eviction]] = {}
            for e in plan.evictions:
                victim = tx.get(Allocation, e.allocation_id)
                if victim is not None:
                    self._release(tx, [victim])
                    evicted.setdefault(e.gpr_id, []).append(e)
            for gpr_id, evictions in evicted.items():
                gpr = tx.get(Gpr, gpr_id)
                if gpr is None or gpr.state.terminal:
                    continue
                why = f"{len(evictions)} replica(s) evicted for higher-priority work: {evictions[0].reason}"
                if not [a for a in store.allocations_of_gpr(gpr_id) if tx.get(Allocation, a.id) is not None]:
                    gpr = lifecycle.transition(tx, gpr, S.PREEMPTED, "Preempted", why, now)
                    lifecycle.transition(tx, gpr, S.PENDING, "Requeued", "waiting to run again", now)
                else:  # other replicas still run: the missing ones are placed again
                    tx.event(self._event("gpr.preempted", gpr_id, "ReplicaPreempted", why))
            for m in plan.migrations:
                old = tx.get(Allocation, m.allocation_id)
                gpr = tx.get(Gpr, m.gpr_id)
                if old is None or gpr is None or gpr.state.terminal:
                    continue
                self._allocate(tx, gpr, m.to, now, replaces=old.id)
                if gpr.state is S.RUNNING:
                    lifecycle.transition(tx, gpr, S.MIGRATING, "Migrating", f"{m.reason}: {m}", now)
                else:
                    tx.event(self._event("gpr.migrating", gpr.id, "Migrating", f"{m.reason}: {m}"))
            for r in plan.reservations:
                tx.put(ReservationRecord(reservation_key(r.gpr_id, r.replica), r))
                gpr = tx.get(Gpr, r.gpr_id)
                if gpr is not None and r.cause == "preemption":
                    tx.put(replace(gpr, preempted_at=now))
                tx.event(self._event("gpr.reservation", r.gpr_id, "Reserved", str(r)))
            for gpr_id, placements in groupby_gpr(plan.placements):
                gpr = tx.get(Gpr, gpr_id)
                if gpr is None or gpr.state not in NEEDS_PLACEMENT:
                    continue
                for p in placements:
                    self._allocate(tx, gpr, p, now)
                    if p.reservation:
                        tx.delete(ReservationRecord, reservation_key(p.gpr_id, p.replica))
                hosts = ", ".join(str(p).split(" on ", 1)[1] for p in placements)
                if gpr.state is S.PENDING:
                    lifecycle.transition(tx, gpr, S.PLACED, "Placed", f"placed on {hosts}", now)
                elif gpr.state is S.PROVISIONING:  # already on its way: the new replicas join it
                    tx.event(self._event("gpr.replicas", gpr.id, "ReplicasPlaced", f"replicas placed on {hosts}"))
                else:  # RUNNING (scaled up) or MIGRATING (drained): provisioning again until all run
                    lifecycle.transition(tx, gpr, S.PROVISIONING, "ReplicasPlaced", f"replicas placed on {hosts}", now)
        return len(plan.placements)

    def note_unplaced(self, unplaced: Iterable[tuple[GprId, str]]) -> None:
        """Records why pending GPRs stay pending, once per change of reason (not every round)."""
        now = self.clock()
        changed = []
        for gpr_id, reason in unplaced:
            gpr = self.store.gpr(gpr_id)
            if gpr is not None and gpr.state is S.PENDING and gpr.state_reason != reason:
                changed.append((gpr, reason))
        if changed:
            with self.store.write() as tx:
                for gpr, reason in changed:
                    tx.put(replace(gpr, state_reason=reason, updated_at=now))
                    tx.event(self._event("gpr.unschedulable", gpr.id, "Unschedulable", reason))

    def update_overlays(self) -> int:
        """Re-plans every workspace overlay from the allocations and the hosts' reports (pure plan) and
        gives each host whose interfaces changed a new desired revision; returns how many changed."""
        store = self.store
        hosts = sorted(store.all(Host), key=lambda h: h.id)
        record = store.get(OverlayRecord, "overlay")
        workspaces = {w.name: w for w in store.all(Workspace)}
        plan = plan_overlay(
            [OverlayHost(h.id, h.underlay_address, h.connected) for h in hosts],
            store.all(Allocation),
            [r for h in hosts for r in h.overlay_reports],
            previous=record.state if record else None,
            workspaces=list(workspaces),
        )
        changed = [h for h in hosts if plan.spec_for(h.id).interfaces != h.overlay]
        cidrs = dict(plan.state.workspace_cidrs)
        renumbered = [w for w in workspaces.values() if cidrs.get(w.name, "") != w.overlay_cidr]
        if not changed and not renumbered and record is not None and record.state == plan.state:
            return 0
        with store.write() as tx:
            tx.put(OverlayRecord("overlay", plan.state))
            for h in changed:
                tx.put(replace(h, overlay=plan.spec_for(h.id).interfaces, desired_revision=tx.revision))
            for w in renumbered:
                tx.put(replace(w, overlay_cidr=cidrs.get(w.name, "")))
            for problem in plan.problems:
                tx.event(self._event("overlay.problem", "overlay", "OverlayProblem", problem))
        return len(changed)

    # -- hosts and their sessions -----------------------------------------------------------------

    def get_host(self, host_id: str) -> Host:
        return self._must(self.store.host(host_id), "host", host_id)

    def host_connected(self, host_id: str, site: str, inventory: Inventory, applied_revision: int,
                       underlay_address: str) -> Host:
        """A host opened its session: record it (created on first contact) as connected."""
        if self.store.site(site) is None:
            raise FailedPrecondition(f"site {site!r} is not known to the controller; create it first "
                                     "(gridctl site create)")
        now = self.clock()
        host = self.store.host(host_id)
        if host is not None and host.site != site:
            raise FailedPrecondition(f"host {host_id} is registered at site {host.site}, not {site}; "
                                     "a host changes site only by being removed and enrolled again")
        with self.store.write() as tx:
            if host is None:
                # A new host's first desired state (empty) gets a revision of its own to acknowledge.
                host = Host(id=HostId(host_id), site=SiteName(site), state=HostState.OFFLINE, inventory=inventory,
                            desired_revision=tx.revision)
            new = replace(host, inventory=inventory, connected=True, state=host.admin_state,
                          state_reason="session open", applied_revision=applied_revision, last_seen=now,
                          underlay_address=underlay_address)
            tx.put(new)
            tx.event(self._event("host.state", host_id, "Connected",
                                 f"session open: {len(inventory.gpus)} GPUs, applied revision {applied_revision}",
                                 from_state=host.state.name, to_state=new.state.name))
        return self.get_host(host_id)

    def host_disconnected(self, host_id: str, why: str) -> None:
        """The session ended. Its allocations stay: the agent keeps enforcing them (static stability)."""
        host = self.store.host(host_id)
        if host is None or not host.connected:
            return
        with self.store.write() as tx:
            tx.put(replace(host, connected=False, state=HostState.OFFLINE, state_reason=why, last_seen=self.clock()))
            tx.event(self._event("host.state", host_id, "Disconnected", why, from_state=host.state.name,
                                 to_state=HostState.OFFLINE.name))

    def spec_sent(self, host_id: str, revision: int) -> None:
        """The host's session sent its HostSpec: PLACED GPRs with allocations there are provisioning."""
        now = self.clock()
        placed = {a.gpr_id for a in self.store.allocations_on_host(host_id)}
        gprs = [g for g in (self.store.gpr(i) for i in placed) if g is not None and g.state is S.PLACED]
        if gprs:
            with self.store.write() as tx:
                for gpr in gprs:
                    lifecycle.transition(tx, gpr, S.PROVISIONING, "SpecSent",
                                         f"host {host_id} received HostSpec revision {revision}", now)

    def spec_acknowledged(self, host_id: str, revision: int, accepted: bool, reason: str,
                          statuses: Iterable[AllocationStatus]) -> None:
        """The agent applied (or rejected) a HostSpec revision and reports its allocations."""
        host = self.get_host(host_id)
        now = self.clock()
        self.last_heard[host_id] = now
        with self.store.write() as tx:
            if accepted:
                if revision > host.applied_revision:
                    tx.put(replace(host, applied_revision=revision, last_seen=now))
            else:
                tx.event(self._event("host.error", host_id, "SpecRejected",
                                     f"host rejected HostSpec revision {revision}: {reason}"))
                # Fail what was being provisioned there; what already runs keeps running.
                for a in self.store.allocations_on_host(host_id):
                    if a.state is AllocationState.PENDING:
                        self._fail_gpr(tx, a.gpr_id, "HostRejectedSpec",
                                       f"host {host_id} rejected revision {revision}: {reason}", now)
            self._apply_statuses(tx, host_id, statuses, now)

    def host_status(self, host_id: str, inventory: Inventory, statuses: Iterable[AllocationStatus],
                    events: Iterable[Event], applied_revision: int = 0,
                    overlay: Iterable[OverlayInterfaceStatus] = ()) -> None:
        """A report: allocation states, inventory (with GPU health) and the host's own events.

        A released GPU becomes usable again only here: when the host, having applied the revision
        that released it, reports it HEALTHY.
        """
        host = self.get_host(host_id)
        now = self.clock()
        self.last_heard[host_id] = now
        healthy = {g.uuid for g in inventory.gpus if g.health is GpuHealth.HEALTHY}
        still_released = tuple((u, rev) for u, rev in host.released_gpus
                               if not (rev <= applied_revision and u in healthy))
        reports = reports_from_status(OverlayStatus(HostId(host_id), tuple(overlay)))
        with self.store.write() as tx:
            if (inventory, still_released, reports) != (host.inventory, host.released_gpus, host.overlay_reports):
                tx.put(replace(host, inventory=inventory, last_seen=now, released_gpus=still_released,
                               overlay_reports=reports))
            for s in overlay:
                if s.error:
                    tx.event(self._event("host.error", host_id, "OverlayFailed", f"{s.interface}: {s.error}"))
            for uuid in sorted({u for u, _ in host.released_gpus} - {u for u, _ in still_released}):
                tx.event(self._event("gpu.clean", host_id, "VerifiedClean", f"GPU {uuid} verified clean; back in use"))
            for e in events:
                tx.event(replace(e, subject=host_id, seq=0, revision=0))
            self._apply_statuses(tx, host_id, statuses, now)

    def set_host_admin_state(self, host_id: str, state: HostState, reason: str) -> Host:
        """Cordon (READY -> CORDONED), uncordon (-> READY) or drain (-> DRAINING, moving its work away)."""
        host = self.get_host(host_id)
        now = self.clock()
        with self.store.write() as tx:
            new = replace(host, admin_state=state, state=state if host.connected else HostState.OFFLINE,
                          state_reason=reason or f"set to {state.name.lower()} by an operator")
            tx.put(new)
            tx.event(self._event("host.state", host_id, state.name.capitalize(), new.state_reason,
                                 from_state=host.state.name, to_state=new.state.name))
            if state is HostState.DRAINING:
                # Break before make: the replicas here are released and re-placed elsewhere by the
                # scheduler (make-before-break migration comes with capacity chasing).
                allocations = self.store.allocations_on_host(host_id)
                for gpr_id in sorted({a.gpr_id for a in allocations}):
                    gpr = self.store.gpr(gpr_id)
                    message = f"host {host_id} is draining; moving its replicas"
                    if gpr is not None and gpr.state is S.RUNNING:
                        lifecycle.transition(tx, gpr, S.MIGRATING, "HostDraining", message, now)
                    elif gpr is not None and gpr.state is S.PLACED:  # never started: simply placed again
                        lifecycle.transition(tx, gpr, S.PENDING, "HostDraining", message, now)
                    # PROVISIONING GPRs stay so: the scheduler places their missing replicas.
                self._release(tx, allocations)
        return self.get_host(host_id)

    # -- helpers ---------------------------------------------------------------------------------

    def _apply_statuses(self, tx: Tx, host_id: str, statuses: Iterable[AllocationStatus], now: float) -> None:
        touched: set[GprId] = set()
        for s in statuses:
            alloc = tx.get(Allocation, s.allocation_id)
            if alloc is None or alloc.host_id != host_id:
                continue  # released meanwhile, or not this host's: the host's next spec drops it
            new = replace(alloc, state=s.state, state_reason=s.reason, device_uuids=s.device_uuids or alloc.gpu_uuids)
            if new != alloc:
                tx.put(new)
                touched.add(alloc.gpr_id)
        for gpr_id in sorted(touched):
            gpr = tx.get(Gpr, gpr_id)
            if gpr is None or gpr.state.terminal:
                continue
            allocations = [a for a in (tx.get(Allocation, a.id) for a in self.store.allocations_of_gpr(gpr_id))
                           if a is not None]
            # A move's new allocation runs: the old one goes (its devices become unclean, then free).
            for a in [a for a in allocations if a.replaces and a.state is AllocationState.RUNNING]:
                old = tx.get(Allocation, a.replaces or "")
                if old is not None:
                    self._release(tx, [old])
                    tx.event(self._event("gpr.migrated", gpr_id, "Moved", f"replica {a.replica} moved from "
                                         f"{old.host_id} to {a.host_id}"))
                tx.put(replace(a, replaces=None))
            allocations = [a for a in (tx.get(Allocation, a.id) for a in self.store.allocations_of_gpr(gpr_id))
                           if a is not None]
            failed = [a for a in allocations if a.state is AllocationState.FAILED]
            if failed:
                first = failed[0]
                self._fail_gpr(tx, gpr_id, "AllocationFailed",
                               f"host {first.host_id} could not apply {first.id}: {first.state_reason}", now)
            elif (gpr.state in (S.PROVISIONING, S.MIGRATING) and len(allocations) >= gpr.spec.replicas
                  and all(a.state is AllocationState.RUNNING for a in allocations)):
                hosts = ", ".join(sorted({a.host_id for a in allocations}))
                lifecycle.transition(tx, gpr, S.RUNNING, "Running",
                                     f"all {len(allocations)} replicas running on {hosts}", now)

    def _fail_gpr(self, tx: Tx, gpr_id: str, reason: str, message: str, now: float) -> None:
        gpr = tx.get(Gpr, gpr_id)
        if gpr is None or gpr.state.terminal:
            return
        self._release(tx, self.store.allocations_of_gpr(gpr_id))
        self._drop_reservations(tx, gpr_id)
        lifecycle.transition(tx, gpr, S.FAILED, reason, message, now)

    def _allocate(self, tx: Tx, gpr: Gpr, p: Placement, now: float, replaces: AllocationId | None = None) -> None:
        """A new allocation for placement ``p``; its host gets a new desired revision."""
        host = self._must(tx.get(Host, p.host_id), "host", p.host_id)
        tx.put(Allocation(id=AllocationId(_new_id("alloc")), gpr_id=gpr.id, workspace=gpr.spec.workspace,
                          replica=p.replica, host_id=p.host_id, site=p.site, gpu_indexes=p.gpu_indexes,
                          gpu_uuids=p.gpu_uuids, created_at=now, mig_profile=p.mig_profile,
                          mig_starts=tuple(s.start for s in p.mig_slots), replaces=replaces))
        tx.put(replace(host, desired_revision=tx.revision))

    def _drop_reservations(self, tx: Tx, gpr_id: str, from_replica: int = 0) -> None:
        for r in self.store.all(ReservationRecord):
            if r.reservation.gpr_id == gpr_id and r.reservation.replica >= from_replica:
                tx.delete(ReservationRecord, r.id)

    def _release(self, tx: Tx, allocations: Iterable[Allocation]) -> None:
        """Takes allocations away; their GPUs stay out of use until the host verifies them clean."""
        for a in allocations:
            tx.delete(Allocation, a.id)
            host = tx.get(Host, a.host_id)
            if host is not None:
                released = dict(host.released_gpus)
                released.update((u, tx.revision) for u in a.gpu_uuids)
                tx.put(replace(host, desired_revision=tx.revision, released_gpus=tuple(sorted(released.items()))))

    def _event(self, kind: str, subject: str, reason: str, message: str, from_state: str = "",
               to_state: str = "") -> Event:
        return Event(kind=kind, subject=subject, reason=reason, message=message, time=self.clock(),
                     from_state=from_state, to_state=to_state)

    @staticmethod
    def _must(obj: T | None, kind: str, key: str) -> T:
        if obj is None:
            raise NotFound(kind, key)
        return obj

