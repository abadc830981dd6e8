"""Overlay benchmarks: applying 1,000 peers to one interface, and how long a joining host takes to
be reachable from every other member of a mesh of 10 and of 50 hosts.

    python -m benchmarks.overlay [--quick]

Needs root, wireguard-go, wg and iproute2 (what the namespace test bed needs). Everything runs in
network namespaces this script makes and removes; nothing is sent outside them.

- ``apply_1000_peers_s``: the overlay reconciler making a wireguard-go interface match a spec of
  1,000 peers (observe, diff, one UAPI ``set``, observe again for the status). Baselines measured
  in the same run: one UAPI ``set`` per peer, and one ``wg set`` command per peer (the way a shell
  script would do it; in ``--quick`` mode timed on 100 peers and scaled to 1,000).
- ``join_converge_s_N``: a mesh of N-1 hosts of one workspace is up (each host's reconciler runs
  as a process in its namespace; the controller's part is the pure plan driven by ``OverlayMesh``).
  The clock starts when host N becomes a member and stops when every other member has had a UDP
  echo from host N's overlay address. This includes the plan rounds, the new host's interface and
  key, its report, the others applying the new peer, and the WireGuard handshakes.

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gridmesh.agent.overlay import OverlayReconciler
from gridmesh.common.model import HostId, WorkspaceName
from gridmesh.dataplane import links as L
from gridmesh.dataplane.device import DeviceChange, PeerChange
from gridmesh.dataplane.links import NetlinkLinks
from gridmesh.dataplane.model import OverlaySpec, WgInterfaceSpec, WgPeer
from gridmesh.dataplane.uapi import UapiClient
from gridmesh.dataplane.userspace import UserspaceBackend
from gridmesh.testbed.netns import NetnsTestbed, OverlayMesh, available, udp_reachability


def fake_peers(n: int) -> list[WgPeer]:
    """Peers that exist nowhere: random keys, endpoints in TEST-NET-1 (192.0.2.0/24, unrouted in
    the benchmark's namespace, and keepalives off so nothing is ever sent), one /32 each."""
    return [WgPeer(public_key=base64.b64encode(secrets.token_bytes(32)).decode(),
                   endpoint=f"192.0.2.{i % 254 + 1}:{51820 + i // 254}",
                   allowed_ips=(f"100.64.{i // 250}.{i % 250 + 1}/32",), persistent_keepalive=0)
            for i in range(n)]


def bench_apply(quick: bool) -> dict[str, float]:
    tag = secrets.token_hex(2)
    underlay = f"gmb{tag}-u"
    prefix = f"gmb{tag}-"
    root = Path(tempfile.mkdtemp(prefix="gm-bench-"))
    L.create_netns(underlay)
    links = NetlinkLinks(underlay_netns=underlay)
    backend = UserspaceBackend(links)
    rec = OverlayReconciler(f"bench-{tag}", root, backend, links, netns_prefix=prefix)
    name = f"gmb{tag}"
    out: dict[str, float] = {}
    try:
        peers = fake_peers(1000)
        base = WgInterfaceSpec(name=name, workspace=WorkspaceName("bench"), addresses=("100.64.255.1/16",))
        rec.reconcile(OverlaySpec(HostId("bench"), (base,)))  # the device exists, no peers
        full = OverlaySpec(HostId("bench"), (WgInterfaceSpec(name=name, workspace=base.workspace,
                                                             addresses=base.addresses, peers=tuple(peers)),))
        started = time.perf_counter()
        status = rec.reconcile(full)
        out["apply_1000_peers_s"] = time.perf_counter() - started
        assert status.interfaces[0].peer_count == 1000, status

        # One peer changed among 1,000: only it is sent.
        changed = list(peers)
        changed[500] = WgPeer(changed[500].public_key, "192.0.2.9:9999", changed[500].allowed_ips, 0)
        started = time.perf_counter()
        rec.reconcile(OverlaySpec(HostId("bench"), (WgInterfaceSpec(name=name, workspace=base.workspace,
                                                                    addresses=base.addresses,
                                                                    peers=tuple(changed)),)))
        out["update_1_of_1000_s"] = time.perf_counter() - started

        netns = f"{prefix}bench"
        client = UapiClient(name)

        def clear() -> None:
            backend.configure(name, netns, DeviceChange(replace_peers=True))

        # The backend alone: one set of 1,000 peers.
        clear()
        changes = tuple(PeerChange(p.public_key, endpoint=p.endpoint, persistent_keepalive=0,
                                   allowed_ips=p.allowed_ips) for p in peers)
        started = time.perf_counter()
        backend.configure(name, netns, DeviceChange(peers=changes))
        out["backend_one_set_1000_peers_s"] = time.perf_counter() - started

        # Baseline 1: one UAPI set per peer.
        clear()
        started = time.perf_counter()
        for c in changes:
            client.set(DeviceChange(peers=(c,)))
        out["baseline_uapi_set_per_peer_1000_s"] = time.perf_counter() - started

        # Baseline 2: one `wg set` command per peer.
        clear()
        count = 100 if quick else 1000
        started = time.perf_counter()
        for p in peers[:count]:
            subprocess.run(["wg", "set", name, "peer", p.public_key, "endpoint", p.endpoint,
                            "allowed-ips", ",".join(p.allowed_ips)], check=True, capture_output=True)
        out["baseline_wg_set_per_peer_1000_s"] = (time.perf_counter() - started) * (1000 / count)
    finally:
        rec.reconcile(OverlaySpec(HostId("bench")))
        L.delete_netns(underlay)
        shutil.rmtree(root, ignore_errors=True)
    return out


def bench_join(n: int, repeats: int) -> tuple[float, float]:
    """(median seconds for host n to be reached by all n-1 others, seconds the n-1 mesh took to form)."""
    root = Path(tempfile.mkdtemp(prefix=f"gm-bench-{n}-"))
    try:
        with NetnsTestbed(root, n) as bed:
            # Long resyncs: the runners reconcile on spec changes, not on a timer, during the run.
            for h in bed.hosts:
                bed.start_overlay_runner(h.host_id, resync_s=60.0)
            mesh = OverlayMesh(bed)
            ids = [h.host_id for h in bed.hosts]
            started = time.perf_counter()
            mesh.set_members("w", ids[:-1])
            mesh.converge(timeout=60.0 + 3.0 * n)
            formed = time.perf_counter() - started
            new = bed.hosts[-1]
            others = {bed.host(h).workspace_netns("w"): h for h in ids[:-1]}
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                mesh.set_members("w", ids)
                mesh.step()
                ns_file = Path(f"/var/run/netns/{new.workspace_netns('w')}")
                while not ns_file.exists() or not mesh.plan or not mesh.plan.address_of("w", new.host_id):
                    if time.perf_counter() - t0 > 60:
                        raise TimeoutError(f"{new.host_id} did not make its interface")
                    time.sleep(0.005)
                    mesh.step()
                t_iface = time.perf_counter() - t0
                assert mesh.plan is not None
                reached = udp_reachability(new.workspace_netns("w"), mesh.plan.address_of("w", new.host_id), others,
                                           timeout=60.0, interval=0.01, on_tick=mesh.step)
                times.append(time.perf_counter() - t0)
                print(f"  join of {new.host_id}: its interface after {t_iface:.3f} s; first member reached it after "
                      f"{t_iface + min(reached.values()):.3f} s, the last after {times[-1]:.3f} s", flush=True)
                # Leave again for the next repeat, and let the mesh settle.
                mesh.set_members("w", ids[:-1])
                mesh.converge(timeout=60.0)
            return statistics.median(times), formed
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.overlay", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats, a shorter baseline (under a minute)")
    args = p.parse_args(argv)
    why = available()
    if why:
        print(f"benchmarks.overlay: cannot run here: {why}", file=sys.stderr)
        sys.exit(2)
    repeats = 1 if args.quick else 3
    result: dict[str, float] = {}
    t = time.perf_counter()
    result.update(bench_apply(args.quick))
    print(f"apply 1,000 peers (reconciler, one UAPI set): {result['apply_1000_peers_s']:.3f} s; "
          f"backend set alone {result['backend_one_set_1000_peers_s']:.3f} s; "
          f"1 changed of 1,000: {result['update_1_of_1000_s']:.3f} s", flush=True)
    print(f"  baselines: one UAPI set per peer {result['baseline_uapi_set_per_peer_1000_s']:.3f} s; "
          f"one `wg set` per peer {result['baseline_wg_set_per_peer_1000_s']:.3f} s"
          f"{' (timed on 100, scaled)' if args.quick else ''}", flush=True)
    for n in (10, 50):
        join, formed = bench_join(n, repeats)
        result[f"join_converge_s_{n}"] = join
        result[f"mesh_formed_s_{n - 1}"] = formed
        print(f"mesh of {n}: {n - 1} hosts meshed in {formed:.2f} s; host {n} reachable from all others "
              f"in {join:.3f} s (median of {repeats})", flush=True)
    result["total_s"] = time.perf_counter() - t
    result["cpus"] = float(os.cpu_count() or 0)
    print(json.dumps({k: round(v, 4) for k, v in result.items()}))


if __name__ == "__main__":
    main()
