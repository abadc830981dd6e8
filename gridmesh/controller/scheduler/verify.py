"""Re-checking a plan against a snapshot: every hard constraint, every device, every quota.

``violations(snapshot, plan)`` lists, in words, everything in ``plan`` that the snapshot does not
allow; an empty list means it may be committed whole. It is what plan_apply can run against the
*latest* snapshot before committing (Nomad's plan-apply), what the property tests assert on, and what
the benchmark counts. It shares only ``constraints`` (the statement of the rules) and ``mig`` (the
profile tables) with the engine, never its index, so a bug in the index cannot hide here.

Rules it checks:
- placements, reservations and migration targets: host usable, site known, region, pinned site/tier,
  GPU kind (model, memory, capability, MIG mode, profile = the smallest that satisfies the request),
  one class per replica, valid MIG start for the profile;
- devices: a whole GPU has at most one claim; MIG instances on a GPU never overlap, use at most 7
  compute slices and at most one ``+me``; nothing lands on an unclean or unhealthy device except a
  reservation's own devices, and a reservation is committed only once they are clean and free;
- evictions: the victim allocation exists and runs, is strictly lower priority than the GPR it is
  evicted for, preemptible, past its minimum runtime, and not placed by preemption within the cooldown;
- migrations: the allocation exists and has run past the cooldown, its GPR is redistributable and may
  migrate, the GPR it makes room for is pinned or of higher priority, and the target is another host;
- quotas: no workspace that grows ends above its cap;
- replicas: each (GPR, replica) is given at most once and only when it is missing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from gridmesh.common.model import (
    AllocationState,
    GpuHealth,
    GpuInfo,
    GpuUuid,
    PlacementPolicy,
    PriorityTier,
    WorkspaceName,
)
from gridmesh.controller.model import Gpr, Host
from gridmesh.controller.scheduler import mig
from gridmesh.controller.scheduler.constraints import (
    EPSILON,
    allowed_regions,
    gpu_exclusion,
    quota_cap,
    site_exclusion,
    wants_mig,
)
from gridmesh.controller.scheduler.types import MigSlot, Placement, Plan, Snapshot
from gridmesh.hw.catalog import fold_model_name


@dataclass
class _Claims:
    whole: dict[GpuUuid, str] = field(default_factory=dict)
    # gpu -> [(start, size, compute, +me, owner)]
    slots: dict[GpuUuid, list[tuple[int, int, int, bool, str]]] = field(default_factory=dict)


def _prio(g: Gpr) -> tuple[PriorityTier, int]:
    return (g.spec.priority_tier, g.spec.priority)


def violations(snap: Snapshot, plan: Plan) -> list[str]:
    """Everything ``plan`` does that ``snap`` does not allow (empty: commit it)."""
    out: list[str] = []
    hosts: dict[str, Host] = {h.id: h for h in snap.hosts}
    gpus: dict[GpuUuid, tuple[Host, GpuInfo]] = {g.uuid: (h, g) for h in snap.hosts for g in h.inventory.gpus}
    gprs: dict[str, Gpr] = {str(k): v for k, v in snap.gprs.items()}
    for g in snap.pending:
        gprs.setdefault(g.id, g)
    allocations = {a.id: a for a in snap.allocations}
    claims = _Claims()
    unclean = set(snap.unclean_gpus)

    def claim_slot(u: GpuUuid, start: int, size: int, compute: int, me: bool, owner: str) -> str | None:
        taken = claims.slots.setdefault(u, [])
        for s, z, _c, _m, who in taken:
            if start < s + z and s < start + size:
                return who
        taken.append((start, size, compute, me, owner))
        return None

    # What the snapshot already holds.
    for a in snap.allocations:
        owner = f"allocation {a.id}"
        recorded = snap.allocation_mig.get(a.id)
        if a.mig_profile and recorded:
            for s in recorded:
                claim_slot(s.gpu_uuid, s.start, s.size, s.compute_slices, s.profile.endswith("+me"), owner)
        elif a.mig_profile:
            for u in a.gpu_uuids:
                info = gpus.get(u)
                found = [i for i in (info[1].mig_instances if info else ()) if i.uuid in a.device_uuids]
                table = mig.table_for(info[1].model) if info else None
                if found and table:
                    for inst in found:
                        prof = table.profile(inst.profile)
                        if prof:
                            claim_slot(u, inst.start, prof.size, prof.compute_slices, prof.media_extensions, owner)
                else:
                    claim_slot(u, 0, mig.MEMORY_SLICES, mig.COMPUTE_SLICES, False, owner)
        else:
            for u in a.gpu_uuids:
                claims.whole[u] = owner
    for r in snap.reservations:
        owner = f"reservation {r.gpr_id}/{r.replica}"
        for s in r.mig_slots:
            claim_slot(s.gpu_uuid, s.start, s.size, s.compute_slices, s.profile.endswith("+me"), owner)
        if not r.mig_slots:
            for u in r.gpu_uuids:
                claims.whole.setdefault(u, owner)
    for s in snap.unclean_slots:
        claims.slots.setdefault(s.gpu_uuid, []).append((s.start, s.size, 0, False, "unclean"))

    usage_before: dict[str, float] = {}
    for a in snap.allocations:
        slots = snap.allocation_mig.get(a.id)
        usage_before[a.workspace] = usage_before.get(a.workspace, 0.0) + (
            sum(s.compute_slices for s in slots) / mig.COMPUTE_SLICES if slots else float(len(a.gpu_uuids)))
    for r in snap.reservations:
        usage_before[r.workspace] = usage_before.get(r.workspace, 0.0) + (r.gpu_equivalents or
                                                                          float(len(r.gpu_uuids)))
    usage: defaultdict[str, float] = defaultdict(float, usage_before)

    held: dict[str, set[int]] = {}
    for a in snap.allocations:
        held.setdefault(a.gpr_id, set()).add(a.replica)
    for r in snap.reservations:
        held.setdefault(r.gpr_id, set()).add(r.replica)

    # Dropped reservations free their claims (their devices stay as unclean as they were).
    for r, _why in plan.dropped_reservations:
        owner = f"reservation {r.gpr_id}/{r.replica}"
        _release(claims, owner, "")
        held.get(r.gpr_id, set()).discard(r.replica)
        usage[r.workspace] -= r.gpu_equivalents or float(len(r.gpu_uuids))

    evicted: set[str] = set()
    for e in plan.evictions:
        ea = allocations.get(e.allocation_id)
        victim = gprs.get(e.gpr_id)
        me = gprs.get(e.for_gpr)
        where = f"{e}"
        if ea is None or ea.host_id != e.host_id or ea.gpu_uuids != e.gpu_uuids or ea.gpr_id != e.gpr_id:
            out.append(f"{where}: the allocation is not (or no longer) as described")
            continue
        if victim is None or me is None:
            out.append(f"{where}: the victim's or the requester's GPR is unknown")
            continue
        if not _prio(victim) < _prio(me):
            out.append(f"{where}: victim priority {_prio(victim)} is not strictly lower than {_prio(me)}")
        red = victim.spec.redistribution
        if not red.preemptible:
            out.append(f"{where}: the victim is not preemptible")
        if victim.running_since is None or snap.now - victim.running_since < red.min_runtime_s:
            out.append(f"{where}: the victim has not run its minimum runtime of {red.min_runtime_s:g}s")
        if ea.state is not AllocationState.RUNNING:
            out.append(f"{where}: the allocation is not running yet")
        if snap.now - snap.preempted_at.get(victim.id, -1e18) < snap.weights.preemption_cooldown_s:
            out.append(f"{where}: the victim got its devices by preemption less than the cooldown ago")
        if e.allocation_id in evicted:
            out.append(f"{where}: evicted twice")
        evicted.add(e.allocation_id)
        _release(claims, f"allocation {ea.id}", f"freed for {e.for_gpr}")
        held.get(ea.gpr_id, set()).discard(ea.replica)
        slots = snap.allocation_mig.get(ea.id)
        usage[ea.workspace] -= (sum(s.compute_slices for s in slots) / mig.COMPUTE_SLICES if slots
                               else float(len(ea.gpu_uuids)))

    for m in plan.migrations:
        ma = allocations.get(m.allocation_id)
        moved = gprs.get(m.gpr_id)
        asker = gprs.get(m.for_gpr)
        if ma is None or ma.host_id != m.from_host or moved is None or asker is None:
            out.append(f"{m}: the allocation is not (or no longer) as described")
            continue
        red = moved.spec.redistribution
        if not red.may_migrate or moved.spec.placement.policy is not PlacementPolicy.REDISTRIBUTABLE:
            out.append(f"{m}: the GPR may not be moved")
        if asker.spec.placement.policy is not PlacementPolicy.PINNED and not _prio(moved) < _prio(asker):
            out.append(f"{m}: moved for {m.for_gpr}, which is neither pinned nor of higher priority")
        if ma.state is not AllocationState.RUNNING or snap.now - ma.created_at < snap.weights.migration_cooldown_s:
            out.append(f"{m}: the allocation is not running, or was placed less than the cooldown ago")
        if m.to.host_id == m.from_host:
            out.append(f"{m}: moved onto the host it leaves")
        _release(claims, f"allocation {ma.id}", f"freed for {m.for_gpr}")
        out.extend(_check_target(snap, hosts, gpus, gprs, claims, unclean, m.to, f"{m}"))

    for r in plan.reservations:
        rg = gprs.get(r.gpr_id)
        if rg is None:
            out.append(f"{r}: unknown GPR")
            continue
        if r.replica in held.get(r.gpr_id, set()) or not 0 <= r.replica < rg.spec.replicas:
            out.append(f"{r}: replica {r.replica} is not missing")
        held.setdefault(r.gpr_id, set()).add(r.replica)
        out.extend(_check_static(snap, hosts, gpus, rg, r.host_id, r.gpu_uuids, r.mig_profile, r.mig_slots, f"{r}"))
        owner = f"reservation {r.gpr_id}/{r.replica}"
        mine = f"freed for {r.gpr_id}"
        for u in r.gpu_uuids if not r.mig_slots else ():
            who = claims.whole.get(u)
            if who is not None and who != mine:
                out.append(f"{r}: GPU {u} is held by {who}")
            claims.whole[u] = owner
        for s in r.mig_slots:
            taken = claims.slots.setdefault(s.gpu_uuid, [])
            for st, z, _c, _me, who in taken:
                if s.start < st + z and st < s.start + s.size and who != mine:
                    out.append(f"{r}: {s} overlaps {who}")
            taken.append((s.start, s.size, s.compute_slices, s.profile.endswith("+me"), owner))
        usage[r.workspace] += r.gpu_equivalents or float(len(r.gpu_uuids))

    given: set[tuple[str, int]] = set()
    for pl in plan.placements:
        pg = gprs.get(pl.gpr_id)
        where = f"{pl}"
        if pg is None:
            out.append(f"{where}: unknown GPR")
            continue
        if (pl.gpr_id, pl.replica) in given:
            out.append(f"{where}: replica given twice")
        given.add((pl.gpr_id, pl.replica))
        if pl.reservation:
            match = [r for r in snap.reservations if (r.gpr_id, r.replica, r.host_id, r.gpu_uuids, r.mig_slots)
                     == (pl.gpr_id, pl.replica, pl.host_id, pl.gpu_uuids, pl.mig_slots)]
            if not match:
                out.append(f"{where}: commits a reservation that does not exist")
                continue
            for u in pl.gpu_uuids:
                info = gpus.get(u)
                if info is None or info[1].health is not GpuHealth.HEALTHY or u in unclean:
                    out.append(f"{where}: GPU {u} is not reported clean and healthy yet")
                if not pl.mig_slots and any(u in a.gpu_uuids for a in snap.allocations):
                    out.append(f"{where}: GPU {u} is still allocated")
            for s in pl.mig_slots:
                for st, z, _c, _me, who in claims.slots.get(s.gpu_uuid, []):
                    if s.start < st + z and st < s.start + s.size and (who == "unclean" or
                                                                       who.startswith("allocation")):
                        out.append(f"{where}: {s} still overlaps {who}")
            continue
        if pl.after_eviction is not None:
            if pl.after_eviction not in evicted or allocations[pl.after_eviction].replica != pl.replica:
                out.append(f"{where}: placed again after an eviction that is not in the plan")
        elif pl.replica in held.get(pl.gpr_id, set()):
            out.append(f"{where}: replica {pl.replica} is already held")
        if not 0 <= pl.replica < pg.spec.replicas:
            out.append(f"{where}: no replica {pl.replica}")
        held.setdefault(pl.gpr_id, set()).add(pl.replica)
        out.extend(_check_target(snap, hosts, gpus, gprs, claims, unclean, pl, where))
        usage[pg.spec.workspace] += pl.gpu_equivalents or float(len(pl.gpu_uuids))

    for name, after in usage.items():
        ws = snap.workspaces.get(WorkspaceName(name))
        cap = quota_cap(ws.quota) if ws else float("inf")
        if after > usage_before.get(name, 0.0) + EPSILON and after > cap + EPSILON:
            out.append(f"workspace {name}: {after:g} GPU-equivalents would exceed its quota of {cap:g}")
    for u, taken in claims.slots.items():
        compute = sum(c for _s, _z, c, _m, who in taken if not who.startswith("freed") and who != "unclean")
        if compute > mig.COMPUTE_SLICES:
            out.append(f"GPU {u}: {compute} compute slices in use, at most {mig.COMPUTE_SLICES}")
        if sum(1 for *_x, me, _w in taken if me) > 1:
            out.append(f"GPU {u}: more than one +me instance")
    return out


def _release(claims: _Claims, owner: str, to: str) -> None:
    for u, who in list(claims.whole.items()):
        if who == owner:
            if to:
                claims.whole[u] = to
            else:
                del claims.whole[u]
    for _u, taken in claims.slots.items():
        for i, (s, z, _c, _me, who) in enumerate(taken):
            if who == owner:
                taken[i] = (s, z, 0, False, to or "released")


def _check_target(snap: Snapshot, hosts: dict[str, Host], gpus: dict[GpuUuid, tuple[Host, GpuInfo]],
                  gprs: dict[str, Gpr], claims: _Claims, unclean: set[GpuUuid], p: Placement, where: str) -> list[str]:
    out: list[str] = []
    g = gprs[p.gpr_id]
    out.extend(_check_static(snap, hosts, gpus, g, p.host_id, p.gpu_uuids, p.mig_profile, p.mig_slots, where))
    owner = f"new {p.gpr_id}/{p.replica}"
    for u in p.gpu_uuids:
        if u in unclean:
            out.append(f"{where}: GPU {u} is not reported clean")
    if not p.mig_slots:
        for u in p.gpu_uuids:
            who = claims.whole.get(u)
            if who is not None:
                out.append(f"{where}: GPU {u} is held by {who}")
            claims.whole[u] = owner
            if claims.slots.get(u):
                out.append(f"{where}: GPU {u} has MIG instances")
    for s in p.mig_slots:
        taken = claims.slots.setdefault(s.gpu_uuid, [])
        for st, z, _c, _m, who in taken:
            if s.start < st + z and st < s.start + s.size:
                out.append(f"{where}: {s} overlaps {who}")
        if s.gpu_uuid in claims.whole:
            out.append(f"{where}: GPU {s.gpu_uuid} is held whole by {claims.whole[s.gpu_uuid]}")
        taken.append((s.start, s.size, s.compute_slices, s.profile.endswith("+me"), owner))
    return out


def _check_static(snap: Snapshot, hosts: dict[str, Host], gpus: dict[GpuUuid, tuple[Host, GpuInfo]], g: Gpr,
                  host_id: str, uuids: tuple[GpuUuid, ...], mig_profile: str, slots: tuple[MigSlot, ...],
                  where: str) -> list[str]:
    out: list[str] = []
    h = hosts.get(host_id)
    if h is None or not h.schedulable:
        return [f"{where}: host {host_id} is not schedulable"]
    site = snap.sites.get(h.site)
    why = site_exclusion(site, g, allowed_regions(g, snap.workspaces.get(g.spec.workspace)))
    if why is not None:
        return [f"{where}: host {host_id} at site {h.site} breaks the {why} constraint"]
    shape = g.spec.shape
    infos = []
    for u in uuids:
        got = gpus.get(u)
        if got is None or got[0].id != host_id:
            out.append(f"{where}: GPU {u} is not on host {host_id}")
            continue
        info = got[1]
        infos.append(info)
        bad = gpu_exclusion(info, shape)
        if bad is not None:
            out.append(f"{where}: GPU {u} breaks the {bad} constraint")
    if wants_mig(shape):
        if len(slots) != max(shape.count, 1):
            out.append(f"{where}: {len(slots)} MIG instances for a count of {shape.count}")
        for s in slots:
            located = gpus.get(s.gpu_uuid)
            table = mig.table_for(located[1].model) if located else None
            want = mig.profile_for(table, shape.mig_profile, shape.fraction, shape.min_memory_mib) if table else None
            if want is None or s.profile != want.name or s.profile != mig_profile:
                out.append(f"{where}: {s.profile} is not the profile the request gets ({want.name if want else None})")
                continue
            if s.start not in want.starts or s.size != want.size or s.compute_slices != want.compute_slices:
                out.append(f"{where}: {s} is not a valid placement of {want.name}")
    else:
        if len(uuids) != max(shape.count, 1) or len(set(uuids)) != len(uuids):
            out.append(f"{where}: {len(uuids)} GPUs for a count of {shape.count}")
        kinds = {(fold_model_name(i.model), i.memory_mib, i.compute_capability) for i in infos}
        if len(kinds) > 1:
            out.append(f"{where}: GPUs of different kinds in one replica")
        if slots:
            out.append(f"{where}: MIG instances for a whole-GPU request")
    return out


__all__ = ["violations"]
