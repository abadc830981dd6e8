"""The overlay plan (PURE): workspaces' address plans and every host's WireGuard peers.

    hosts, allocations, agents' reports, previous OverlayState ──plan_overlay──> OverlayPlan
                                                                  (new OverlayState, one OverlaySpec per host)

Rules:
- Pure: no I/O, no clock, no randomness; the same inputs give the same plan, sorted everywhere.
- **Membership** comes from allocations only: a host is a member of a workspace while it holds at
  least one of the workspace's allocations. A host that stops being a member loses its interface,
  and disappears from every other member's peer list in the same plan.
- **Addresses.** Each workspace gets a CIDR (a ``/20`` of ``100.64.0.0/10`` by default, or the one
  the operator set). Each member host gets one address in it, each allocation one more. A lease is
  kept for as long as its owner exists, and a new lease is the lowest address no lease holds, so an
  address is never given to two owners at once (it may be reused once its owner is gone).
- **Peers.** A member appears in the others' peer lists once its agent has reported a public key
  and a listen port, and the host has an underlay address: endpoint ``underlay:port``, allowed IPs
  its host address and its workloads' addresses (``/32`` each).
- **Key rotation.** A member reports a *next* key; every other member gets it as a *staged* peer
  (no allowed IPs, no keepalive), which carries no traffic. Once every other online member reports
  the staged key configured, the plan switches, in one step: the member's spec names the next key
  (``private_key_ref``) and every other member's peer entry moves to it, allowed IPs included. The
  switch is remembered in ``OverlayState`` so it is never taken back while the agent catches up.
  The interruption is one apply on each side; WireGuard handshakes again at once (TCP recovers).
- Private keys never appear here: reports and specs carry public keys only.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gridmesh.common.model import AllocationId, HostId, WorkspaceName
from gridmesh.dataplane.model import (
    DEFAULT_KEEPALIVE_S,
    OverlaySpec,
    OverlayStatus,
    WgInterfaceSpec,
    WgPeer,
)
from gridmesh.dataplane.naming import format_endpoint, interface_name


@dataclass(frozen=True, slots=True)
class OverlayConfig:
    pool: str = "100.64.0.0/10"
    workspace_prefixlen: int = 20
    keepalive_s: int = DEFAULT_KEEPALIVE_S


@dataclass(frozen=True, slots=True)
class OverlayHost:
    """A host as the plan needs it. ``online``: its agent is connected (only rotation waits on it)."""

    host_id: HostId
    underlay_address: str = ""
    online: bool = True


class AllocationLike(Protocol):
    """What the plan reads of an allocation (``controller.model.Allocation`` has it)."""

    @property
    def id(self) -> AllocationId: ...

    @property
    def workspace(self) -> WorkspaceName: ...

    @property
    def host_id(self) -> HostId: ...


@dataclass(frozen=True, slots=True)
class MemberReport:
    """What a member host's agent reported about its interface in one workspace (public facts)."""

    host_id: HostId
    workspace: WorkspaceName
    public_key: str
    listen_port: int
    next_public_key: str = ""
    staged_peer_keys: tuple[str, ...] = ()


def reports_from_status(status: OverlayStatus) -> tuple[MemberReport, ...]:
    """The member reports in one host's overlay status (interfaces without a key are left out)."""
    return tuple(MemberReport(host_id=status.host_id, workspace=i.workspace, public_key=i.public_key,
                              listen_port=i.listen_port, next_public_key=i.next_public_key,
                              staged_peer_keys=i.staged_peer_keys)
                 for i in status.interfaces if i.public_key)


@dataclass(frozen=True, slots=True)
class AddressLease:
    """``owner`` is ``host:<host id>`` or ``alloc:<allocation id>``."""

    workspace: WorkspaceName
    owner: str
    address: str


@dataclass(frozen=True, slots=True)
class KeyChoice:
    """The key the plan told ``host_id`` to use in ``workspace`` (and peers to expect)."""

    host_id: HostId
    workspace: WorkspaceName
    public_key: str


@dataclass(frozen=True, slots=True)
class OverlayState:
    """What the plan remembers between runs; the controller stores it as it is (JSON codec)."""

    workspace_cidrs: tuple[tuple[WorkspaceName, str], ...] = ()
    leases: tuple[AddressLease, ...] = ()
    key_choices: tuple[KeyChoice, ...] = ()


@dataclass(frozen=True, slots=True)
class MemberPlan:
    host_id: HostId
    address: str  # the host's overlay address (no prefix length)
    workloads: tuple[tuple[AllocationId, str], ...] = ()  # (allocation, address)


@dataclass(frozen=True, slots=True)
class WorkspacePlan:
    workspace: WorkspaceName
    cidr: str
    members: tuple[MemberPlan, ...] = ()


@dataclass(frozen=True, slots=True)
class OverlayPlan:
    state: OverlayState
    specs: tuple[OverlaySpec, ...] = ()
    workspaces: tuple[WorkspacePlan, ...] = ()
    problems: tuple[str, ...] = ()

    def spec_for(self, host_id: str) -> OverlaySpec:
        for s in self.specs:
            if s.host_id == host_id:
                return s
        return OverlaySpec(host_id=HostId(host_id))

    def workspace(self, name: str) -> WorkspacePlan | None:
        for w in self.workspaces:
            if w.workspace == name:
                return w
        return None

    def address_of(self, workspace: str, host_id: str) -> str:
        ws = self.workspace(workspace)
        for m in ws.members if ws is not None else ():
            if m.host_id == host_id:
                return m.address
        return ""


@dataclass
class _Pool:
    """Free addresses of one CIDR, lowest first; the network and broadcast addresses never given."""

    net: ipaddress.IPv4Network | ipaddress.IPv6Network
    used: set[str] = field(default_factory=set)
    _cursor: int = 1

    def take(self) -> str | None:
        size = self.net.num_addresses
        while self._cursor < size - 1:
            addr = str(self.net.network_address + self._cursor)
            self._cursor += 1
            if addr not in self.used:
                self.used.add(addr)
                return addr
        return None


def _assign_cidrs(workspaces: Sequence[WorkspaceName], fixed: Mapping[WorkspaceName, str],
                  previous: Mapping[WorkspaceName, str], config: OverlayConfig,
                  problems: list[str]) -> dict[WorkspaceName, str]:
    pool = ipaddress.ip_network(config.pool)
    out: dict[WorkspaceName, str] = {}
    for ws in workspaces:
        if fixed.get(ws):
            out[ws] = str(ipaddress.ip_network(fixed[ws], strict=False))
        elif previous.get(ws):
            out[ws] = previous[ws]
    taken = [ipaddress.ip_network(c) for c in out.values()]
    candidates = pool.subnets(new_prefix=config.workspace_prefixlen)
    for ws in workspaces:
        if ws in out:
            continue
        for cand in candidates:
            if not any(cand.overlaps(t) for t in taken):
                out[ws] = str(cand)
                taken.append(cand)
                break
        else:
            problems.append(f"workspace {ws}: no free /{config.workspace_prefixlen} left in overlay pool {config.pool}")
    return out


def _peer_entries(m: MemberPlan, cidr: ipaddress.IPv4Network | ipaddress.IPv6Network, r: MemberReport | None,
                  host: OverlayHost, key: str, config: OverlayConfig) -> list[WgPeer]:
    """Member ``m`` as a peer of the others: its chosen key, plus its next key staged during a rotation."""
    if r is None or not key or not host.underlay_address or not r.listen_port:
        return []
    endpoint = format_endpoint(host.underlay_address, r.listen_port)
    allowed = (f"{m.address}/{cidr.max_prefixlen}", *(f"{a}/{cidr.max_prefixlen}" for _, a in m.workloads))
    out = [WgPeer(public_key=key, endpoint=endpoint, allowed_ips=allowed, persistent_keepalive=config.keepalive_s)]
    if r.next_public_key and r.next_public_key != key:
        out.append(WgPeer(public_key=r.next_public_key, endpoint=endpoint, persistent_keepalive=0))
    return out


def plan_overlay(hosts: Sequence[OverlayHost], allocations: Iterable[AllocationLike],
                 reports: Iterable[MemberReport], previous: OverlayState | None = None,
                 workspaces: Iterable[WorkspaceName] | None = None,
                 workspace_cidrs: Mapping[WorkspaceName, str] | None = None,
                 config: OverlayConfig | None = None) -> OverlayPlan:
    """The whole overlay for ``hosts``.

    ``workspaces``: every workspace that exists (its CIDR is kept while it exists); by default the
    ones with members plus the ones ``previous`` remembers. ``workspace_cidrs``: CIDRs set by an
    operator (``Workspace.overlay_cidr``), which win over assigned ones. Reports of hosts that are
    not members are ignored.
    """
    previous = previous or OverlayState()
    config = config or OverlayConfig()
    problems: list[str] = []
    host_by_id = {h.host_id: h for h in hosts}

    # Membership and workloads, from allocations on known hosts.
    workloads: dict[WorkspaceName, dict[HostId, list[AllocationId]]] = {}
    for a in allocations:
        if a.host_id in host_by_id:
            workloads.setdefault(a.workspace, {}).setdefault(a.host_id, []).append(a.id)
    members = {ws: sorted(by_host) for ws, by_host in workloads.items()}

    prev_cidrs = dict(previous.workspace_cidrs)
    all_ws = sorted(set(workspaces) | set(members) if workspaces is not None else set(members) | set(prev_cidrs))
    cidrs = _assign_cidrs(all_ws, workspace_cidrs or {}, prev_cidrs, config, problems)

    # Address leases: keep the ones whose owner is still there, then give new owners the lowest free.
    owners: dict[WorkspaceName, list[str]] = {}
    for ws, by_host in sorted(workloads.items()):
        if ws not in cidrs:
            continue
        owners[ws] = [f"host:{h}" for h in sorted(by_host)]
        owners[ws] += sorted(f"alloc:{a}" for h in by_host for a in by_host[h])
    pools = {ws: _Pool(ipaddress.ip_network(c)) for ws, c in cidrs.items()}
    leases: dict[tuple[WorkspaceName, str], str] = {}
    for lease in previous.leases:
        pool = pools.get(lease.workspace)
        if (pool is not None and lease.owner in owners.get(lease.workspace, ())
                and ipaddress.ip_address(lease.address) in pool.net and lease.address not in pool.used):
            pool.used.add(lease.address)
            leases[(lease.workspace, lease.owner)] = lease.address
    for ws, names in owners.items():
        for owner in names:
            if (ws, owner) not in leases:
                addr = pools[ws].take()
                if addr is None:
                    problems.append(f"workspace {ws}: overlay CIDR {cidrs[ws]} is full; {owner} has no address")
                    continue
                leases[(ws, owner)] = addr

    # Reports of members only.
    report: dict[tuple[WorkspaceName, HostId], MemberReport] = {}
    for r in reports:
        if r.host_id in members.get(r.workspace, ()) and r.public_key:
            report[(r.workspace, r.host_id)] = r

    # Which key each member uses (key rotation, see the module docstring).
    prev_choice = {(c.workspace, c.host_id): c.public_key for c in previous.key_choices}
    choice: dict[tuple[WorkspaceName, HostId], str] = {}
    for (ws, h), r in sorted(report.items()):
        prev = prev_choice.get((ws, h), "")
        others = [report[(ws, o)] for o in members[ws]
                  if o != h and (ws, o) in report and host_by_id[o].online]
        if (r.next_public_key and host_by_id[h].online
                and all(r.next_public_key in o.staged_peer_keys for o in others)):
            choice[(ws, h)] = r.next_public_key
        elif prev and prev in (r.public_key, r.next_public_key):
            choice[(ws, h)] = prev
        else:
            choice[(ws, h)] = r.public_key

    # Plans per workspace, then every host's spec.
    ws_plans: list[WorkspacePlan] = []
    interfaces: dict[HostId, list[WgInterfaceSpec]] = {h.host_id: [] for h in hosts}
    for ws in sorted(owners):
        cidr = ipaddress.ip_network(cidrs[ws])
        plan_members: list[MemberPlan] = []
        for h in members[ws]:
            addr = leases.get((ws, f"host:{h}"))
            if addr is None:
                continue
            wl = tuple((a, leases[(ws, f"alloc:{a}")]) for a in sorted(workloads[ws][h])
                       if (ws, f"alloc:{a}") in leases)
            plan_members.append(MemberPlan(host_id=h, address=addr, workloads=wl))
        ws_plans.append(WorkspacePlan(workspace=ws, cidr=str(cidr), members=tuple(plan_members)))

        peer_entries = {m.host_id: _peer_entries(m, cidr, report.get((ws, m.host_id)), host_by_id[m.host_id],
                                                 choice.get((ws, m.host_id), ""), config)
                        for m in plan_members}
        for m in plan_members:
            peers = sorted((p for o in plan_members if o.host_id != m.host_id for p in peer_entries[o.host_id]),
                           key=lambda p: p.public_key)
            interfaces[m.host_id].append(WgInterfaceSpec(
                name=interface_name(m.host_id, ws), workspace=ws,
                private_key_ref=choice.get((ws, m.host_id), ""),
                addresses=(f"{m.address}/{cidr.prefixlen}", *(f"{a}/{cidr.max_prefixlen}" for _, a in m.workloads)),
                peers=tuple(peers)))

    state = OverlayState(
        workspace_cidrs=tuple(sorted(cidrs.items())),
        leases=tuple(AddressLease(ws, owner, addr) for (ws, owner), addr in sorted(leases.items())),
        key_choices=tuple(KeyChoice(h, ws, k) for (ws, h), k in sorted(choice.items())),
    )
    specs = tuple(OverlaySpec(host_id=h, interfaces=tuple(sorted(interfaces[h], key=lambda i: i.workspace)))
                  for h in sorted(interfaces))
    return OverlayPlan(state=state, specs=specs, workspaces=tuple(ws_plans), problems=tuple(problems))
