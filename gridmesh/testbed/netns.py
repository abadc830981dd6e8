"""A grid of hosts as network namespaces on one machine, joined by an underlay bridge.

    root namespace ── <id>r ─┐ (only with a controller: it serves on the root side's address)
                             │
    <id>-ul:  br0 ───────────┼── h1 ── eth0 in <id>-h1  (agent / overlay runner, wireguard-go)
                             ├── h2 ── eth0 in <id>-h2
                             └── ...

Every name starts with the test bed's id (``gm`` and 4 random hex digits): namespaces ``<id>-ul``
(the underlay, holding the bridge), ``<id>-hN`` (host N, host id ``<id>-hN``) and ``<id>-hN-<ws>``
(workspace namespaces, made by the overlay reconciler with the prefix ``<id>-hN-``). The underlay is
a ``/24`` of the benchmarking range 198.18.0.0/15; overlays use 100.64.0.0/10.

Rules:
- ``close()`` (also on ``with`` exit after a failure) removes everything the bed made: it stops
  its processes, then ends every process left inside its namespaces (wireguard-go daemons
  outlive agents by design), deletes its namespaces and the root link, and removes control sockets
  left by killed daemons. Everything is found by the bed's id, never by a broad process name.
- The test bed drives both sides of the grid, like tests do; it is not part of the daemons' import
  graph (nothing in ``controller``/``agent`` imports it).
- ``OverlayMesh`` stands in for the controller's overlay work in tests and benchmarks: it runs the
  pure plan over the runners' reports and writes each host's spec, without gRPC.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import secrets
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from gridmesh.common.codec import decode, encode
from gridmesh.common.model import AllocationId, HostId, WorkspaceName
from gridmesh.controller.overlay import OverlayHost, OverlayPlan, OverlayState, plan_overlay, reports_from_status
from gridmesh.dataplane import keys as wgkeys
from gridmesh.dataplane import links as L
from gridmesh.dataplane.model import OverlaySpec, OverlayStatus
from gridmesh.dataplane.uapi import DEFAULT_RUN_DIR
from gridmesh.testbed.local import LocalGrid, Proc

UNDERLAY_POOL = ipaddress.IPv4Network("198.18.0.0/15")


def available() -> str:
    """Why namespace test beds cannot run here, or "" when they can (root, ``ip netns``, wireguard-go)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "wg", "wireguard-go", "nft"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode != 0:
            return f"{tool} is not installed"
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if done.returncode != 0:
        return f"ip netns is unavailable: {done.stderr.strip()}"
    return ""


def _ip(netns: str | None, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = ["ip", *args] if netns is None else ["ip", "-n", netns, *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done


def in_host_netns(netns: str, argv: list[str]) -> list[str]:
    """``argv`` run in network namespace ``netns`` *only*.

    Not ``ip netns exec``: that also gives the process a private mount namespace, and the
    namespaces an agent makes for its workspaces (bind mounts under /var/run/netns) would then be
    visible to that process alone, and lost when it restarts. A real agent shares the host's
    mounts; ``nsenter --net`` keeps it so.
    """
    return ["nsenter", f"--net={L.NETNS_DIR / netns}", "--", *argv]


@dataclass
class NetnsHost:
    host_id: str
    netns: str
    underlay_address: str
    state_dir: Path

    @property
    def workspace_prefix(self) -> str:
        """The agent's ``netns_prefix``: workspace namespaces are ``<host netns>-<workspace>``."""
        return f"{self.netns}-"

    def workspace_netns(self, workspace: str) -> str:
        return f"{self.workspace_prefix}{workspace}"


@dataclass
class OverlayRunner:
    """One host's overlay reconciler, run as ``python -m gridmesh.agent.overlay`` inside the host."""

    host: NetnsHost
    proc: Proc
    spec_file: Path
    status_file: Path
    rotate_dir: Path
    spec_digest: str = ""
    last_spec: OverlaySpec | None = None

    def write_spec(self, spec: OverlaySpec) -> bool:
        """Writes ``spec`` if it differs from the last one written; True when it did."""
        if spec == self.last_spec:
            return False
        self.last_spec = spec
        text = json.dumps(encode(spec), sort_keys=True).encode()
        digest = hashlib.sha256(text).hexdigest()
        if digest == self.spec_digest:
            return False
        tmp = self.spec_file.with_name(f".{self.spec_file.name}.tmp")
        tmp.write_bytes(text)
        os.replace(tmp, self.spec_file)
        self.spec_digest = digest
        return True

    def read(self) -> tuple[str, OverlayStatus] | None:
        """(digest of the spec it reconciled, status), or None before the first status."""
        try:
            data = json.loads(self.status_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return str(data["spec_sha256"]), decode(OverlayStatus, data["status"])

    def status(self) -> OverlayStatus | None:
        got = self.read()
        return got[1] if got is not None else None

    @property
    def caught_up(self) -> bool:
        got = self.read()
        return got is not None and got[0] == self.spec_digest

    def rotate(self, workspace: str) -> None:
        self.rotate_dir.mkdir(parents=True, exist_ok=True)
        (self.rotate_dir / workspace).touch()


class NetnsTestbed:
    """``hosts`` hosts on an underlay. Use as a context manager; see the module docstring."""

    def __init__(self, root: Path, hosts: int = 3, log_format: str = "json", bed_id: str | None = None,
                 host_ids: Sequence[str] = ()) -> None:
        """``host_ids`` names the hosts (default ``<bed id>-h<N>``); namespaces are ``<bed id>-h<N>`` either way."""
        if hosts < 1 or hosts > 250:
            raise ValueError(f"hosts: {hosts}; allowed 1 to 250")
        if host_ids and len(host_ids) != hosts:
            raise ValueError(f"host_ids: {len(host_ids)} names for {hosts} hosts")
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.id = bed_id or f"gm{secrets.token_hex(2)}"
        self.log_format = log_format
        self.n_hosts = hosts
        self.underlay_netns = f"{self.id}-ul"
        self.subnet = self._pick_subnet()
        addrs = list(self.subnet.hosts())
        self.root_address = str(addrs[0])
        self.hosts = [NetnsHost(host_id=host_ids[i - 1] if host_ids else f"{self.id}-h{i}", netns=f"{self.id}-h{i}",
                                underlay_address=str(addrs[i]), state_dir=self.root / f"h{i}")
                      for i in range(1, hosts + 1)]
        self.root_link = f"{self.id}r"
        self._root_connected = False
        self.procs: list[Proc] = []
        self.runners: dict[str, OverlayRunner] = {}
        self.agents: dict[str, Proc] = {}
        self.controller: Proc | None = None
        self.address = ""
        self._local = LocalGrid(self.root, log_format)

    def _pick_subnet(self) -> ipaddress.IPv4Network:
        """A /24 of 198.18.0.0/15 that no address of the root namespace is in (several beds may coexist)."""
        used = _ip(None, "-4", "-o", "addr", "show").stdout
        subnets: list[ipaddress.IPv4Network] = list(UNDERLAY_POOL.subnets(new_prefix=24))
        start = int(self.id[2:], 16) % len(subnets)
        for k in range(len(subnets)):
            net = subnets[(start + k) % len(subnets)]
            if f" {str(net.network_address)[:-1]}" not in used:
                return net
        raise RuntimeError("no free /24 in 198.18.0.0/15 for the underlay")

    # -- set-up -----------------------------------------------------------------------------------

    def __enter__(self) -> NetnsTestbed:
        try:
            self.setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def setup(self) -> None:
        ul = self.underlay_netns
        L.create_netns(ul)
        _ip(ul, "link", "add", "br0", "type", "bridge")
        _ip(ul, "link", "set", "br0", "up")
        for i, h in enumerate(self.hosts, start=1):
            L.create_netns(h.netns)
            h.state_dir.mkdir(parents=True, exist_ok=True)
            _ip(ul, "link", "add", f"h{i}", "type", "veth", "peer", "name", "eth0", "netns", h.netns)
            _ip(ul, "link", "set", f"h{i}", "master", "br0", "up")
            _ip(h.netns, "addr", "add", f"{h.underlay_address}/{self.subnet.prefixlen}", "dev", "eth0")
            _ip(h.netns, "link", "set", "eth0", "up")
        self._static_neighbours()

    def _mac(self, netns: str | None, dev: str) -> str:
        return str(json.loads(_ip(netns, "-j", "link", "show", dev).stdout)[0]["address"])

    def _static_neighbours(self) -> None:
        """Permanent ARP entries between all hosts (and the root side, once connected).

        The kernel's ARP table is one table for all namespaces, with one size limit
        (``net.ipv4.neigh.default.gc_thresh3``, 1024 by default): 50 hosts that all talk to each
        other need 2,450 entries, and learned ones then overflow ("neighbor table overflow"), losing
        packets. Permanent entries are not counted against that limit, and this bed's addresses
        never move, so the bed writes them instead of changing a machine-wide setting.
        """
        macs = {h.underlay_address: self._mac(h.netns, "eth0") for h in self.hosts}
        if self._root_connected:
            macs[self.root_address] = self._mac(None, self.root_link)
        for h in self.hosts:
            lines = [f"neigh replace {addr} lladdr {mac} dev eth0 nud permanent"
                     for addr, mac in macs.items() if addr != h.underlay_address]
            done = subprocess.run(["ip", "-n", h.netns, "-batch", "-"], input="\n".join(lines) + "\n",
                                  capture_output=True, text=True, check=False, timeout=30)
            if done.returncode != 0:
                raise RuntimeError(f"static neighbours in {h.netns}: {done.stderr.strip()}")

    def connect_root(self) -> None:
        """Joins the root namespace to the underlay (for a controller that tests can reach too)."""
        if self._root_connected:
            return
        _ip(None, "link", "add", self.root_link, "type", "veth", "peer", "name", "ctl", "netns", self.underlay_netns)
        self._root_connected = True
        _ip(self.underlay_netns, "link", "set", "ctl", "master", "br0", "up")
        _ip(None, "addr", "add", f"{self.root_address}/{self.subnet.prefixlen}", "dev", self.root_link)
        _ip(None, "link", "set", self.root_link, "up")
        self._static_neighbours()

    def host(self, host_id: str) -> NetnsHost:
        for h in self.hosts:
            if h.host_id == host_id:
                return h
        raise KeyError(f"no host {host_id} in test bed {self.id}")

    def exec(self, netns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, check=False,
                              timeout=60)
        if check and done.returncode != 0:
            raise RuntimeError(f"in {netns}: {' '.join(argv)}: {done.stderr.strip()}")
        return done

    # -- processes --------------------------------------------------------------------------------

    def _python(self, netns: str | None, module: str, *args: str) -> list[str]:
        argv = [sys.executable, "-m", module, "--log-format", self.log_format, *args]
        return argv if netns is None else in_host_netns(netns, argv)

    def _start(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        proc.start()
        return proc

    def start_controller(self, timeout: float = 30.0) -> str:
        """Starts the controller in the root namespace, serving on the underlay; returns its address."""
        self.connect_root()
        state = self.root / "controller"
        state.mkdir(exist_ok=True)
        addr_file = state / "controller.addr"
        addr_file.unlink(missing_ok=True)
        self.controller = self._start(Proc("controller", self._python(
            None, "gridmesh.controller", "--listen", f"{self.root_address}:0", "--state-dir", str(state)),
            self.root / "controller.log"))
        deadline = time.monotonic() + timeout
        while not addr_file.exists():
            if not self.controller.running or time.monotonic() > deadline:
                raise RuntimeError(f"controller did not start:\n{self.controller.log_tail()}")
            time.sleep(0.05)
        self.address = addr_file.read_text().strip()
        return self.address

    def start_agent(self, host_id: str, site: str, gpus: list[dict[str, Any]] | None = None,
                    extra_args: Sequence[str] = ()) -> Proc:
        """Starts (or restarts) the agent of ``host_id`` inside its namespace."""
        if not self.address:
            raise RuntimeError("start the controller first")
        h = self.host(host_id)
        host_file = self.root / f"{host_id}.host.toml"
        if gpus is not None or not host_file.exists():
            host_file = self._local.write_host_file(host_id, gpus or [])
        proc = self._start(Proc(host_id, self._python(
            h.netns, "gridmesh.agent", "--host-id", host_id, "--site", site, "--controller", self.address,
            "--state-dir", str(h.state_dir), "--hw-backend", "simulator", "--host-file", str(host_file),
            "--underlay-address", h.underlay_address, "--netns-prefix", h.workspace_prefix, "--overlay-backend",
            "userspace", *extra_args), self.root / f"agent-{host_id}.log"))
        self.agents[host_id] = proc
        return proc

    def start_overlay_runner(self, host_id: str, resync_s: float = 5.0) -> OverlayRunner:
        h = self.host(host_id)
        d = h.state_dir
        runner = OverlayRunner(host=h, proc=Proc(f"overlay-{host_id}", self._python(
            h.netns, "gridmesh.agent.overlay", "--host-id", host_id, "--state-dir", str(d),
            "--spec-file", str(d / "overlay-spec.json"), "--status-file", str(d / "overlay-status.json"),
            "--rotate-dir", str(d / "rotate"), "--netns-prefix", h.workspace_prefix, "--resync", str(resync_s)),
            self.root / f"overlay-{host_id}.log"), spec_file=d / "overlay-spec.json",
            status_file=d / "overlay-status.json", rotate_dir=d / "rotate")
        runner.write_spec(OverlaySpec(host_id=HostId(host_id)))
        self._start(runner.proc)
        self.runners[host_id] = runner
        return runner

    # -- underlay observation ---------------------------------------------------------------------

    def install_underlay_counters(self) -> None:
        """nftables counters on the bridge: every IPv4 packet, WireGuard messages (UDP whose payload
        starts with message type 1-4 and three zero bytes), and cleartext overlay addresses."""
        rules = """
table bridge gmcount {
  chain bridged {
    type filter hook forward priority 0; policy accept;
    meta protocol ip counter comment "ipv4"
    meta protocol ip ip protocol udp @th,64,32 { 0x01000000, 0x02000000, 0x03000000, 0x04000000 } \\
      counter comment "wireguard"
    meta protocol ip ip protocol tcp counter comment "tcp"
    meta protocol ip ip saddr 100.64.0.0/10 counter comment "overlay-source"
    meta protocol ip ip daddr 100.64.0.0/10 counter comment "overlay-destination"
  }
}
"""
        done = subprocess.run(["ip", "netns", "exec", self.underlay_netns, "nft", "-f", "-"], input=rules,
                              capture_output=True, text=True, check=False, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"nft: {done.stderr.strip()}")

    def underlay_counters(self) -> dict[str, int]:
        """Packets per counter comment of ``install_underlay_counters``."""
        done = self.exec(self.underlay_netns, "nft", "-j", "list", "table", "bridge", "gmcount")
        out: dict[str, int] = {}
        for item in json.loads(done.stdout)["nftables"]:
            rule = item.get("rule")
            if not rule:
                continue
            packets = next((e["counter"]["packets"] for e in rule["expr"] if "counter" in e), 0)
            out[str(rule.get("comment", ""))] = int(packets)
        return out

    # -- secrets ----------------------------------------------------------------------------------

    def private_keys(self) -> list[bytes]:
        """Every WireGuard private key held by any host of the bed (for the leak check)."""
        out: list[bytes] = []
        for h in self.hosts:
            keys_root = h.state_dir / "overlay" / "keys"
            for d in sorted(keys_root.glob("*")) if keys_root.exists() else []:
                out += wgkeys.KeyStore(d).private_keys()
        return out

    def key_stores(self) -> list[Path]:
        return [h.state_dir / "overlay" / "keys" for h in self.hosts]

    def find_key_leaks(self, extra_roots: Iterable[Path] = ()) -> list[wgkeys.KeyLeak]:
        """Private key material anywhere under the bed's root (logs, stores, state, specs, statuses)
        or ``extra_roots``, outside the hosts' key stores."""
        keys = self.private_keys()
        leaks = wgkeys.find_key_material(self.root, keys, exclude=self.key_stores())
        for r in extra_roots:
            leaks += wgkeys.find_key_material(r, keys, exclude=self.key_stores())
        return leaks

    # -- tear-down --------------------------------------------------------------------------------

    def our_namespaces(self) -> list[str]:
        return [n for n in L.list_netns() if n.startswith(f"{self.id}-")]

    def close(self) -> None:
        """Removes everything the bed made; never raises (problems go to stderr)."""
        problems: list[str] = []
        for proc in reversed(self.procs):
            try:
                proc.stop(timeout=5)
            except Exception as e:  # keep tearing down
                problems.append(f"stop {proc.name}: {e}")
        interfaces = self._recorded_interfaces()
        namespaces = self.our_namespaces()
        self._end_processes_in(namespaces, problems)
        # Workspace namespaces first: their devices go before the hosts' ones.
        for ns in sorted(namespaces, key=lambda n: (-n.count("-"), n)):
            try:
                L.delete_netns(ns)
            except Exception as e:
                problems.append(f"delete netns {ns}: {e}")
        if self._root_connected:
            _ip(None, "link", "del", self.root_link, check=False)
        for name in interfaces:
            path = DEFAULT_RUN_DIR / f"{name}.sock"
            if path.exists():
                try:
                    with socket.socket(socket.AF_UNIX) as s:
                        s.settimeout(1)
                        s.connect(str(path))
                except OSError:
                    path.unlink(missing_ok=True)
        left = self.our_namespaces()
        if left:
            problems.append(f"namespaces left: {left}")
        if problems:
            print(f"test bed {self.id} tear-down: " + "; ".join(problems), file=sys.stderr)

    def _recorded_interfaces(self) -> list[str]:
        names = []
        for path in self.root.rglob("overlay/state.json"):
            try:
                names += [i["name"] for i in json.loads(path.read_text()).get("interfaces", [])]
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return names

    @staticmethod
    def _end_processes_in(namespaces: list[str], problems: list[str]) -> None:
        """SIGTERM, then SIGKILL, every process inside ``namespaces`` (all of them the bed's own)."""

        def pids() -> set[int]:
            out: set[int] = set()
            for ns in namespaces:
                done = _ip(None, "netns", "pids", ns, check=False)
                out |= {int(p) for p in done.stdout.split() if p.isdigit()}
            return out - {os.getpid()}

        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            targets = pids()
            if not targets:
                return
            for pid in targets:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and pids():
                time.sleep(0.05)
        if pids():
            problems.append(f"processes still running in the bed's namespaces: {sorted(pids())}")


# -- the controller's overlay work, without a controller ----------------------------------------------


@dataclass(frozen=True)
class _Alloc:
    id: AllocationId
    workspace: WorkspaceName
    host_id: HostId


@dataclass
class OverlayMesh:
    """Plans overlays over a bed's runners the way the controller does: reports in, specs out.

    Membership is given per workspace (one allocation per member host), as a placement would.
    """

    bed: NetnsTestbed
    members: dict[str, list[str]] = field(default_factory=dict)
    state: OverlayState = field(default_factory=OverlayState)
    plan: OverlayPlan | None = None
    offline: set[str] = field(default_factory=set)
    _inputs: tuple[object, ...] = ()

    def set_members(self, workspace: str, host_ids: Sequence[str]) -> None:
        self.members[workspace] = list(host_ids)

    def allocations(self) -> list[_Alloc]:
        return [_Alloc(AllocationId(f"{ws}-{h}"), WorkspaceName(ws), HostId(h))
                for ws, hs in sorted(self.members.items()) for h in hs]

    def statuses(self) -> dict[str, OverlayStatus]:
        out = {}
        for h, r in self.bed.runners.items():
            st = r.status()
            if st is not None:
                out[h] = st
        return out

    def _status_stamps(self) -> tuple[tuple[str, int], ...]:
        out = []
        for h, r in sorted(self.bed.runners.items()):
            try:
                out.append((h, r.status_file.stat().st_mtime_ns))
            except FileNotFoundError:
                out.append((h, 0))
        return tuple(out)

    def step(self) -> OverlayPlan:
        """One controller round: plan from the latest reports, write every changed spec. A round
        whose inputs (membership, reports) did not change since the last one does nothing."""
        inputs = (self._status_stamps(), tuple((k, tuple(v)) for k, v in sorted(self.members.items())),
                  tuple(sorted(self.offline)))
        if self.plan is not None and inputs == self._inputs:
            return self.plan
        self._inputs = inputs
        reports = [r for st in self.statuses().values() for r in reports_from_status(st)]
        hosts = [OverlayHost(HostId(h.host_id), h.underlay_address, online=h.host_id not in self.offline)
                 for h in self.bed.hosts if h.host_id in self.bed.runners]
        self.plan = plan_overlay(hosts, self.allocations(), reports, self.state)
        self.state = self.plan.state
        for spec in self.plan.specs:
            self.bed.runners[spec.host_id].write_spec(spec)
        return self.plan

    def converged(self) -> bool:
        """Every runner applied its latest spec without error, and a new plan would change nothing."""
        if self.plan is None:
            return False
        for h, r in self.bed.runners.items():
            got = r.read()
            if got is None or got[0] != r.spec_digest or any(i.error for i in got[1].interfaces):
                return False
            spec = self.plan.spec_for(h)
            if len(got[1].interfaces) != len(spec.interfaces):
                return False
        before = self.plan
        after = self.step()
        return after.specs == before.specs

    def converge(self, timeout: float = 60.0, poll: float = 0.02,
                 until: Callable[[], bool] | None = None) -> OverlayPlan:
        deadline = time.monotonic() + timeout
        self.step()
        while True:
            if self.converged() and (until is None or until()):
                assert self.plan is not None
                return self.plan
            if time.monotonic() > deadline:
                errors = {h: [i.error for i in st.interfaces if i.error] for h, st in self.statuses().items()}
                tails = {h: r.proc.log_tail(5) for h, r in self.bed.runners.items() if not r.proc.running}
                raise TimeoutError(f"overlay did not converge in {timeout}s; errors {errors}; exited runners {tails}")
            time.sleep(poll)
            self.step()

    def rotate(self, host_id: str, workspace: str, timeout: float = 30.0) -> tuple[str, str]:
        """Rotates ``host_id``'s key in ``workspace`` through the staged protocol; (old, new) keys."""
        runner = self.bed.runners[host_id]
        st = runner.status()
        iface = st.interface(workspace) if st is not None else None
        if iface is None:
            raise RuntimeError(f"{host_id} has no interface in {workspace}")
        old = iface.public_key
        runner.rotate(workspace)

        def switched() -> bool:
            st = runner.status()
            i = st.interface(workspace) if st is not None else None
            return i is not None and i.public_key != old and not i.next_public_key

        self.converge(timeout, until=switched)
        st = runner.status()
        assert st is not None
        new = st.interface(workspace)
        assert new is not None
        return old, new.public_key


# -- reachability -------------------------------------------------------------------------------------


def udp_reachability(server_netns: str, server_address: str, clients: dict[str, str], port: int = 7777,
                     timeout: float = 30.0, interval: float = 0.02, on_tick: Callable[[], None] | None = None,
                     ) -> dict[str, float]:
    """Echoes UDP probes from each client namespace (name -> label) to ``server_address`` in
    ``server_netns`` until every client got an answer; returns seconds until each did.

    The server socket is bound to the wildcard address so it exists before the address does.
    """
    sel = selectors.DefaultSelector()
    server = L.socket_in_netns(server_netns, socket.AF_INET, socket.SOCK_DGRAM)
    server.setblocking(False)
    server.bind(("0.0.0.0", port))
    sel.register(server, selectors.EVENT_READ, "server")
    socks: dict[str, socket.socket] = {}
    start = time.monotonic()
    reached: dict[str, float] = {}
    try:
        for ns, label in clients.items():
            s = L.socket_in_netns(ns, socket.AF_INET, socket.SOCK_DGRAM)
            s.setblocking(False)
            socks[label] = s
            sel.register(s, selectors.EVENT_READ, label)
        next_probe = 0.0
        while len(reached) < len(socks):
            now = time.monotonic()
            if now - start > timeout:
                raise TimeoutError(f"not reached {server_address} from {sorted(set(socks) - set(reached))} "
                                   f"in {timeout}s")
            if now >= next_probe:
                for label, s in socks.items():
                    if label not in reached:
                        with contextlib.suppress(OSError):  # no route or no key yet
                            s.sendto(label.encode(), (server_address, port))
                next_probe = now + interval
                if on_tick is not None:
                    on_tick()
            for key, _ in sel.select(timeout=interval / 2):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data, addr = sock.recvfrom(2048)
                except OSError:
                    continue
                if key.data == "server":
                    sock.sendto(data, addr)
                elif key.data not in reached:
                    reached[str(key.data)] = time.monotonic() - start
        return reached
    finally:
        sel.close()
        server.close()
        for s in socks.values():
            s.close()
