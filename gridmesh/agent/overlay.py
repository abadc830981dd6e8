"""The overlay reconciler: makes a host's WireGuard devices match its ``OverlaySpec``.

    spec ──resolve (keys, ports, namespaces)──> desired ┐
    devices, links ──observe──────────────────> observed ┴─diff (pure)─> actions ─apply─> observe ─> status

Rules:
- Level-triggered: ``reconcile(spec)`` takes the whole overlay spec every time. Interfaces this
  reconciler made and the spec no longer lists are deleted (with their namespace and keys).
- ``diff`` is pure and returns small frozen actions with a stable ``str``; an empty diff does
  nothing. Peers that did not change are never named in an action, so a device is never asked to
  touch them (its sessions and counters go on undisturbed).
- One device's actions are applied as one transaction where the backend has them (one UAPI
  ``set``); a failure on one interface is reported on that interface and never stops the others.
- Private keys are made here, stored 0600 under ``<state>/overlay/keys/<interface>/``, and handed
  only to the device. Actions name keys by their public half; statuses carry public keys only.
- Key rotation, host side: ``begin_rotation`` makes a *next* key and reports it; the controller
  stages it on every peer; when the spec's ``private_key_ref`` names the next key, the device
  switches to it and the old key is destroyed.
- The workspace namespace is ``<netns_prefix><workspace>``; the reconciler creates it when it
  creates the interface, and deletes it with the interface (``manage_namespaces``).
- Blocking: call from a worker thread in an asyncio program (``asyncio.to_thread``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from gridmesh.agent.state import write_atomically
from gridmesh.common.codec import decode, encode
from gridmesh.common.model import HostId, WorkspaceName
from gridmesh.dataplane.device import DataplaneError, DeviceChange, PeerChange, WireGuardBackend
from gridmesh.dataplane.keys import KeyStore, WgKeyError
from gridmesh.dataplane.links import LinkOps
from gridmesh.dataplane.model import (
    LinkState,
    OverlayInterfaceStatus,
    OverlaySpec,
    OverlayStatus,
    WgDeviceState,
    WgPeer,
)
from gridmesh.dataplane.naming import (
    normalize_endpoint,
    normalize_interfaces,
    normalize_networks,
    workspace_netns,
)

log = logging.getLogger("gridmesh.agent.overlay")

DEFAULT_NETNS_PREFIX = "gmws-"

# -- desired and observed --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DesiredInterface:
    """An interface spec resolved on the host: its namespace, the key it must use, its port."""

    name: str
    workspace: WorkspaceName
    netns: str
    public_key: str
    listen_port: int | None  # None: whatever port the device has
    addresses: tuple[str, ...] = ()
    peers: tuple[WgPeer, ...] = ()


@dataclass(frozen=True, slots=True)
class ObservedInterface:
    """What is there for one interface name: the device and its link (either may be missing)."""

    name: str
    netns: str
    device: WgDeviceState | None = None
    link: LinkState | None = None


def normalize_peer(p: WgPeer) -> WgPeer:
    return WgPeer(public_key=p.public_key, endpoint=normalize_endpoint(p.endpoint),
                  allowed_ips=normalize_networks(p.allowed_ips), persistent_keepalive=p.persistent_keepalive)


# -- actions ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreateInterface:
    name: str
    netns: str

    def __str__(self) -> str:
        return f"create wireguard {self.name} in netns {self.netns}"


@dataclass(frozen=True, slots=True)
class DeleteInterface:
    name: str
    netns: str
    delete_netns: bool = False

    def __str__(self) -> str:
        return f"delete wireguard {self.name} from netns {self.netns}" + (" and the netns" if self.delete_netns else "")


@dataclass(frozen=True, slots=True)
class UseKey:
    name: str
    public_key: str

    def __str__(self) -> str:
        return f"use key {self.public_key} on {self.name}"


@dataclass(frozen=True, slots=True)
class SetListenPort:
    name: str
    port: int

    def __str__(self) -> str:
        return f"listen on udp/{self.port} on {self.name}"


def _peer_text(p: WgPeer) -> str:
    return (f"{p.public_key} endpoint {p.endpoint or '-'} allowed {','.join(p.allowed_ips) or '-'} "
            f"keepalive {p.persistent_keepalive or 'off'}")


@dataclass(frozen=True, slots=True)
class AddPeer:
    name: str
    peer: WgPeer

    def __str__(self) -> str:
        return f"add peer {_peer_text(self.peer)} on {self.name}"


@dataclass(frozen=True, slots=True)
class UpdatePeer:
    name: str
    peer: WgPeer

    def __str__(self) -> str:
        return f"update peer {_peer_text(self.peer)} on {self.name}"


@dataclass(frozen=True, slots=True)
class RemovePeer:
    name: str
    public_key: str

    def __str__(self) -> str:
        return f"remove peer {self.public_key} from {self.name}"


@dataclass(frozen=True, slots=True)
class AddAddress:
    name: str
    netns: str
    address: str

    def __str__(self) -> str:
        return f"add address {self.address} to {self.name}"


@dataclass(frozen=True, slots=True)
class RemoveAddress:
    name: str
    netns: str
    address: str

    def __str__(self) -> str:
        return f"remove address {self.address} from {self.name}"


@dataclass(frozen=True, slots=True)
class SetUp:
    name: str
    netns: str

    def __str__(self) -> str:
        return f"bring {self.name} up"


Action = (CreateInterface | DeleteInterface | UseKey | SetListenPort | AddPeer | UpdatePeer | RemovePeer
          | AddAddress | RemoveAddress | SetUp)
DEVICE_ACTIONS = (UseKey, SetListenPort, AddPeer, UpdatePeer, RemovePeer)


def _diff_interface(d: DesiredInterface, o: ObservedInterface | None) -> list[Action]:
    out: list[Action] = []
    device = o.device if o is not None else None
    link = o.link if o is not None else None
    if device is None or link is None or link.netns != d.netns:
        if o is not None and (device is not None or link is not None):
            out.append(DeleteInterface(d.name, o.netns))
        out.append(CreateInterface(d.name, d.netns))
        device = WgDeviceState(name=d.name)
        link = LinkState(name=d.name, netns=d.netns)
    if device.public_key != d.public_key:
        out.append(UseKey(d.name, d.public_key))
    if d.listen_port is not None and d.listen_port != device.listen_port:
        out.append(SetListenPort(d.name, d.listen_port))
    want = {p.public_key: normalize_peer(p) for p in d.peers}
    have = {p.public_key: p for p in device.peers}
    for key in sorted(have.keys() - want.keys()):
        out.append(RemovePeer(d.name, key))
    for key in sorted(want.keys() & have.keys()):
        w, h = want[key], have[key]
        if (w.endpoint, w.allowed_ips, w.persistent_keepalive) != (normalize_endpoint(h.endpoint),
                                                                   normalize_networks(h.allowed_ips),
                                                                   h.persistent_keepalive):
            out.append(UpdatePeer(d.name, w))
    for key in sorted(want.keys() - have.keys()):
        out.append(AddPeer(d.name, want[key]))
    want_addrs = normalize_interfaces(d.addresses)
    have_addrs = normalize_interfaces(link.addresses)
    out += [RemoveAddress(d.name, d.netns, a) for a in have_addrs if a not in want_addrs]
    out += [AddAddress(d.name, d.netns, a) for a in want_addrs if a not in have_addrs]
    if not link.up:
        out.append(SetUp(d.name, d.netns))
    return out


def diff(desired: Sequence[DesiredInterface], observed: Sequence[ObservedInterface],
         delete_namespaces: bool = True) -> tuple[Action, ...]:
    """The actions that turn ``observed`` into ``desired``: deletions first, then each desired
    interface in name order (create, key, port, peers removed/updated/added, addresses, up)."""
    want = {d.name: d for d in desired}
    have = {o.name: o for o in observed}
    out: list[Action] = []
    for name in sorted(have.keys() - want.keys()):
        o = have[name]
        if o.device is not None or o.link is not None or delete_namespaces:
            out.append(DeleteInterface(name, o.netns, delete_netns=delete_namespaces))
    for name in sorted(want):
        out += _diff_interface(want[name], have.get(name))
    return tuple(out)


# -- persisted host-side state (public facts only) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class InterfaceRecord:
    name: str
    workspace: WorkspaceName
    netns: str
    active_key: str = ""
    next_key: str = ""
    listen_port: int = 0


@dataclass(frozen=True, slots=True)
class OverlayRecords:
    interfaces: tuple[InterfaceRecord, ...] = ()


@dataclass
class ApplyResult:
    errors: dict[str, str] = field(default_factory=dict)
    applied: list[Action] = field(default_factory=list)


class OverlayReconciler:
    """The host side of the overlay. ``state_dir`` is the agent's state directory."""

    def __init__(self, host_id: str, state_dir: Path, backend: WireGuardBackend, links: LinkOps,
                 netns_prefix: str = DEFAULT_NETNS_PREFIX, manage_namespaces: bool = True) -> None:
        self.host_id = HostId(host_id)
        self.dir = state_dir / "overlay"
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.backend = backend
        self.links = links
        self.netns_prefix = netns_prefix
        self.manage_namespaces = manage_namespaces
        self._records_path = self.dir / "state.json"
        self.records: dict[str, InterfaceRecord] = {r.name: r for r in self._load().interfaces}
        self.last_errors: dict[str, str] = {}
        self._lock = threading.Lock()

    # -- persistence ------------------------------------------------------------------------------

    def _load(self) -> OverlayRecords:
        if not self._records_path.exists():
            return OverlayRecords()
        return decode(OverlayRecords, json.loads(self._records_path.read_text()))

    def _save(self) -> None:
        records = OverlayRecords(tuple(self.records[n] for n in sorted(self.records)))
        write_atomically(self._records_path, json.dumps(encode(records), indent=1))

    def keys_for(self, name: str) -> KeyStore:
        return KeyStore(self.dir / "keys" / name)

    @property
    def keys_root(self) -> Path:
        """Where every private key of this host lives (the leak check skips it)."""
        return self.dir / "keys"

    # -- resolve ----------------------------------------------------------------------------------

    def _resolve(self, spec: OverlaySpec) -> list[DesiredInterface]:
        """Desired interfaces from the spec, making keys for new interfaces (a local side effect,
        persisted before any device uses the key)."""
        out = []
        changed = False
        for i in sorted(spec.interfaces, key=lambda i: i.name):
            netns = workspace_netns(self.netns_prefix, i.workspace)
            rec = self.records.get(i.name) or InterfaceRecord(name=i.name, workspace=i.workspace, netns=netns)
            store = self.keys_for(i.name)
            if not rec.active_key or not store.has(rec.active_key):
                rec = replace(rec, active_key=store.create().public)
            if rec.next_key and not store.has(rec.next_key):
                rec = replace(rec, next_key="")
            key = rec.active_key
            ref = i.private_key_ref
            if ref and ref != rec.active_key:
                if store.has(ref):
                    key = ref
                else:
                    log.warning("spec names a key this host does not hold; keeping the current one",
                                extra={"interface": i.name, "workspace": i.workspace, "key": ref})
            port: int | None = i.listen_port or rec.listen_port or None
            if rec != self.records.get(i.name):
                self.records[i.name] = rec
                changed = True
            out.append(DesiredInterface(name=i.name, workspace=i.workspace, netns=netns, public_key=key,
                                        listen_port=port, addresses=normalize_interfaces(i.addresses),
                                        peers=tuple(sorted((normalize_peer(p) for p in i.peers),
                                                           key=lambda p: p.public_key))))
        if changed:
            self._save()
        return out

    # -- observe ----------------------------------------------------------------------------------

    def observe(self, names: Iterable[tuple[str, str]] | None = None) -> list[ObservedInterface]:
        """The devices and links of ``names`` ((name, netns) pairs; default: every recorded one)."""
        if names is None:
            names = [(r.name, r.netns) for r in self.records.values()]
        out = []
        for name, netns in sorted(set(names)):
            device = self.backend.get(name, netns)
            link = self.links.get_link(netns, name)
            out.append(ObservedInterface(name=name, netns=netns, device=device, link=link))
        return out

    # -- apply ------------------------------------------------------------------------------------

    def _device_change(self, name: str, actions: list[Action], desired: DesiredInterface | None) -> DeviceChange:
        private: bytes | None = None
        port: int | None = None
        peers: list[PeerChange] = []
        for a in actions:
            if isinstance(a, UseKey):
                private = self.keys_for(name).load(a.public_key).private
            elif isinstance(a, SetListenPort):
                port = a.port
            elif isinstance(a, RemovePeer):
                peers.append(PeerChange(a.public_key, remove=True))
            elif isinstance(a, AddPeer | UpdatePeer):
                peers.append(PeerChange(a.peer.public_key, endpoint=a.peer.endpoint,
                                        persistent_keepalive=a.peer.persistent_keepalive,
                                        allowed_ips=a.peer.allowed_ips))
        if private is not None and desired is not None:
            # A new key drops every session. Switching keepalives off and on again makes the device
            # send a keepalive at once, so it handshakes with every peer under the new key now rather
            # than when traffic or a 5-second retry gets round to it (a rotation barely stalls).
            for p in desired.peers:
                if p.persistent_keepalive and p.allowed_ips:
                    peers.append(PeerChange(p.public_key, update_only=True, persistent_keepalive=0))
                    peers.append(PeerChange(p.public_key, update_only=True,
                                            persistent_keepalive=p.persistent_keepalive))
        return DeviceChange(private_key=private, listen_port=port, peers=tuple(peers))

    def apply(self, actions: Sequence[Action], desired: Sequence[DesiredInterface]) -> ApplyResult:
        """Applies ``actions`` interface by interface; an error stops only that interface's actions."""
        by_desired = {d.name: d for d in desired}
        netns_of = {d.name: d.netns for d in desired}
        netns_of.update({r.name: r.netns for r in self.records.values() if r.name not in netns_of})
        by_name: dict[str, list[Action]] = {}
        for a in actions:
            by_name.setdefault(a.name, []).append(a)
        result = ApplyResult()
        for name, group in by_name.items():
            try:
                self._apply_group(name, group, netns_of.get(name, ""), by_desired.get(name), result)
            except (DataplaneError, WgKeyError, OSError) as e:
                result.errors[name] = str(e)
                log.error("overlay interface failed", extra={"interface": name, "error": str(e)})
        return result

    def _apply_group(self, name: str, group: list[Action], netns: str, desired: DesiredInterface | None,
                     result: ApplyResult) -> None:
        """Applies one interface's actions in order; consecutive device actions go as one change."""
        pending: list[Action] = []

        def flush() -> None:
            if pending:
                self.backend.configure(name, netns, self._device_change(name, pending, desired))
                result.applied.extend(pending)
                peer_changes = sum(1 for a in pending if isinstance(a, AddPeer | UpdatePeer | RemovePeer))
                for a in pending:
                    if not isinstance(a, AddPeer | UpdatePeer | RemovePeer) or peer_changes <= 8:
                        log.info(str(a), extra={"interface": name})
                if peer_changes > 8:
                    log.info("peers changed", extra={"interface": name, "peer_changes": peer_changes})
                pending.clear()

        for a in group:
            if isinstance(a, DEVICE_ACTIONS):
                pending.append(a)
                continue
            flush()
            if isinstance(a, CreateInterface):
                netns = a.netns
                self.links.ensure_netns(a.netns)
                self.backend.create(a.name, a.netns)
            elif isinstance(a, DeleteInterface):
                self.backend.delete(a.name, a.netns)
                if a.delete_netns:
                    self.links.delete_netns(a.netns)
            elif isinstance(a, AddAddress):
                self.links.add_address(a.netns, a.name, a.address)
            elif isinstance(a, RemoveAddress):
                self.links.remove_address(a.netns, a.name, a.address)
            elif isinstance(a, SetUp):
                self.links.set_up(a.netns, a.name)
            result.applied.append(a)
            log.info(str(a), extra={"interface": name})
        flush()

    # -- the loop body ----------------------------------------------------------------------------

    def reconcile(self, spec: OverlaySpec) -> OverlayStatus:
        """Makes the host match ``spec``; returns the status to report (public facts only)."""
        with self._lock:
            desired = self._resolve(spec)
            # Each name is observed where it was made (its record), so an interface recorded in
            # another namespace than the one now desired is deleted there and made anew.
            where = {d.name: d.netns for d in desired}
            where.update({r.name: r.netns for r in self.records.values()})
            observed = self.observe(where.items())
            actions = diff(desired, observed, delete_namespaces=self.manage_namespaces)
            result = self.apply(actions, desired)
            self._after_apply(desired, result)
            self.last_errors = result.errors
            # Nothing done: what was observed is still what is there (saves a second look).
            return self.status(desired, None if actions else observed)

    def _after_apply(self, desired: Sequence[DesiredInterface], result: ApplyResult) -> None:
        before = dict(self.records)
        want = {d.name: d for d in desired}
        for a in result.applied:
            if isinstance(a, DeleteInterface) and a.name not in want:
                self.records.pop(a.name, None)
                shutil.rmtree(self.dir / "keys" / a.name, ignore_errors=True)
        for d in desired:
            rec = self.records.get(d.name)
            if rec is None or d.name in result.errors:
                continue
            rec = replace(rec, netns=d.netns)
            if d.public_key != rec.active_key:
                # Switched (rotation finished, or the controller named another key the host holds):
                # every other key of this interface is destroyed.
                rec = replace(rec, active_key=d.public_key, next_key="")
                log.info("key switched", extra={"interface": d.name, "public_key": d.public_key})
            store = self.keys_for(d.name)
            for old in store.public_keys():
                if old not in (rec.active_key, rec.next_key):
                    store.delete(old)
            self.records[d.name] = rec
        # A recorded interface that is not desired and is gone already is forgotten as well.
        for name in [n for n in self.records if n not in want and n not in result.errors]:
            if not any(isinstance(a, DeleteInterface) and a.name == name for a in result.applied):
                rec = self.records[name]
                if self.backend.get(name, rec.netns) is None and self.links.get_link(rec.netns, name) is None:
                    self.records.pop(name)
                    shutil.rmtree(self.dir / "keys" / name, ignore_errors=True)
        if self.records != before:
            self._save()

    def status(self, desired: Sequence[DesiredInterface],
               observed_now: Sequence[ObservedInterface] | None = None) -> OverlayStatus:
        """The report for ``desired``, from ``observed_now`` or a fresh observation."""
        out = []
        if observed_now is None:
            observed_now = self.observe([(d.name, d.netns) for d in desired])
        observed = {o.name: o for o in observed_now}
        for d in desired:
            rec = self.records.get(d.name)
            o = observed.get(d.name)
            dev = o.device if o is not None else None
            if dev is not None and rec is not None and dev.listen_port and dev.listen_port != rec.listen_port:
                self.records[d.name] = rec = replace(rec, listen_port=dev.listen_port)
                self._save()
            peers = dev.peers if dev is not None else ()
            out.append(OverlayInterfaceStatus(
                workspace=d.workspace, interface=d.name,
                public_key=dev.public_key if dev is not None else "",
                next_public_key=rec.next_key if rec is not None else "",
                listen_port=dev.listen_port if dev is not None else 0,
                staged_peer_keys=tuple(sorted(p.public_key for p in peers if not p.allowed_ips)),
                peer_count=len(peers),
                peers_with_handshake=sum(1 for p in peers if p.last_handshake > 0),
                rx_bytes=sum(p.rx_bytes for p in peers), tx_bytes=sum(p.tx_bytes for p in peers),
                error=self.last_errors.get(d.name, ""),
            ))
        return OverlayStatus(host_id=self.host_id, interfaces=tuple(out), backend=self.backend.name)

    def begin_rotation(self, workspace: str) -> str:
        """Makes (or returns the already made) next key of ``workspace``'s interface; it is used once
        the controller names it in the spec. Returns its public key."""
        with self._lock:
            for rec in self.records.values():
                if rec.workspace == workspace:
                    if rec.next_key and self.keys_for(rec.name).has(rec.next_key):
                        return rec.next_key
                    pair = self.keys_for(rec.name).create()
                    self.records[rec.name] = replace(rec, next_key=pair.public)
                    self._save()
                    log.info("next key made", extra={"interface": rec.name, "public_key": pair.public})
                    return pair.public
        raise DataplaneError(f"no overlay interface of workspace {workspace} on host {self.host_id}")

    def private_keys(self) -> tuple[bytes, ...]:
        """Every private key held (for the leak check in tests only)."""
        out: list[bytes] = []
        for d in sorted((self.dir / "keys").glob("*")):
            out += KeyStore(d).private_keys()
        return tuple(out)


# -- a stand-alone runner: one host's overlay from a spec file ------------------------------------


def run_file_loop(reconciler: OverlayReconciler, spec_file: Path, status_file: Path, rotate_dir: Path,
                  stop: threading.Event, resync_s: float = 5.0, poll_s: float = 0.02) -> None:
    """Reconciles whenever ``spec_file`` changes (and every ``resync_s``), writing ``status_file``:
    ``{"spec_sha256": <digest of the spec file reconciled>, "status": <OverlayStatus>}``.

    A file ``<rotate_dir>/<workspace>`` asks for a rotation of that workspace's key (it is removed
    once the next key is made). This is how the namespace test bed drives one host's reconciler
    without a controller; the agent calls ``reconcile`` from its session instead.
    """
    seen: tuple[float, int, int] | None = None
    last = 0.0
    spec = OverlaySpec(host_id=reconciler.host_id)
    digest = ""
    while not stop.is_set():
        changed = False
        try:
            st = spec_file.stat()
            if (st.st_mtime_ns, st.st_size, st.st_ino) != seen:
                seen = (st.st_mtime_ns, st.st_size, st.st_ino)
                text = spec_file.read_bytes()
                spec = decode(OverlaySpec, json.loads(text))
                digest = hashlib.sha256(text).hexdigest()
                changed = True
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        for req in sorted(rotate_dir.glob("*")) if rotate_dir.exists() else []:
            try:
                reconciler.begin_rotation(req.name)
            except DataplaneError as e:
                log.error("rotation refused", extra={"workspace": req.name, "error": str(e)})
            req.unlink(missing_ok=True)
            changed = True
        if changed or time.monotonic() - last > resync_s:
            last = time.monotonic()
            status = reconciler.reconcile(spec)
            write_atomically(status_file, json.dumps({"spec_sha256": digest, "status": encode(status)}))
        stop.wait(poll_s)


def main(argv: list[str] | None = None) -> None:
    from gridmesh.common.logs import setup_logging
    from gridmesh.dataplane.backend import open_backend
    from gridmesh.dataplane.links import NetlinkLinks

    p = argparse.ArgumentParser(prog="python -m gridmesh.agent.overlay",
                                description="Reconcile this host's overlay from a spec file (test bed and debugging).")
    p.add_argument("--host-id", required=True)
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("--spec-file", type=Path, required=True)
    p.add_argument("--status-file", type=Path, required=True)
    p.add_argument("--rotate-dir", type=Path)
    p.add_argument("--netns-prefix", default=DEFAULT_NETNS_PREFIX)
    p.add_argument("--backend", default="auto", choices=["auto", "kernel", "userspace"])
    p.add_argument("--resync", type=float, default=5.0)
    p.add_argument("--log-format", default="json", choices=["json", "text"])
    p.add_argument("--once", action="store_true", help="reconcile once and exit")
    args = p.parse_args(argv)
    setup_logging("info", args.log_format)
    links = NetlinkLinks()
    backend = open_backend(args.backend, links, log_dir=args.state_dir / "overlay" / "logs")
    rec = OverlayReconciler(args.host_id, args.state_dir, backend, links, netns_prefix=args.netns_prefix)
    log.info("overlay runner started", extra={"host_id": args.host_id, "backend": backend.name})
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if args.once:
        stop.set()
        text = args.spec_file.read_bytes()
        status = rec.reconcile(decode(OverlaySpec, json.loads(text)))
        write_atomically(args.status_file, json.dumps({"spec_sha256": hashlib.sha256(text).hexdigest(),
                                                       "status": encode(status)}))
        return
    run_file_loop(rec, args.spec_file, args.status_file, args.rotate_dir or args.state_dir / "rotate", stop,
                  resync_s=args.resync)
    backend.close()
    log.info("overlay runner stopped")


if __name__ == "__main__":
    main(sys.argv[1:])
