"""The demo grid: a controller and four agents with simulated GPUs at four tiers, driven with gridctl.

    python -m gridmesh.testbed.demo [--keep] [--state DIR] [--loopback]

Each host is a network namespace on a shared underlay (as root, with wireguard-go; ``--loopback`` or
a machine without them runs every agent on loopback instead, without overlays). Every step is a real
``gridctl`` command against the real controller, printed as a person would type it. With ``--keep``
the grid stays up until Ctrl-C, and the address to point gridctl at is printed.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gridmesh.testbed.local import LocalGrid, env_with_controller
from gridmesh.testbed.netns import NetnsTestbed, udp_reachability
from gridmesh.testbed.netns import available as netns_available

SITES = [
    ("paris-edge", "far_edge", "eu-fr"),
    ("frankfurt-near", "near_edge", "eu-de"),
    ("virginia-core", "core", "us-east"),
    ("oregon-factory", "ai_factory", "us-west"),
]
HOSTS = [
    ("edge-paris-1", "paris-edge", [{"model": "L4", "count": 2}]),
    ("near-frankfurt-1", "frankfurt-near", [{"model": "A100-SXM4-80GB", "count": 4}]),
    ("core-virginia-1", "virginia-core", [{"model": "H100 80GB HBM3", "count": 8}]),
    ("factory-oregon-1", "oregon-factory", [{"model": "H200", "count": 8}]),
]


class Demo:
    def __init__(self, grid: LocalGrid | NetnsTestbed) -> None:
        self.grid = grid

    def gridctl(self, *args: str, show: bool = True) -> str:
        if show:
            print(f"\n$ gridctl {shlex.join(args)}", flush=True)
        done = subprocess.run([sys.executable, "-m", "gridmesh.cli.main", *args], capture_output=True, text=True,
                              env=env_with_controller(self.grid.address), check=False)
        if show:
            print(done.stdout, end="", flush=True)
            print(done.stderr, end="", file=sys.stderr, flush=True)
        if done.returncode != 0:
            raise SystemExit(f"demo: gridctl {shlex.join(args)} exited {done.returncode}")
        return done.stdout

    def submit(self, *args: str) -> str:
        """Submits a GPR, returns its id (read from JSON output)."""
        out = self.gridctl("-o", "json", "gpr", "submit", *args, show=False)
        gpr_id = str(json.loads(out)["id"])
        print(f"\n$ gridctl gpr submit {shlex.join(args)}\nsubmitted {gpr_id}", flush=True)
        return gpr_id

    def wait_hosts(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hosts = json.loads(self.gridctl("-o", "json", "host", "list", show=False))
            if sum(1 for h in hosts if h.get("connected")) >= count:
                return
            time.sleep(0.2)
        raise SystemExit("demo: the agents did not connect; see the logs under " + str(self.grid.root))

    def wait_states(self, gpr_ids: list[str], timeout: float = 30.0) -> None:
        """Waits until none of ``gpr_ids`` is still on its way to RUNNING."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = {g["id"]: g["state"] for g in json.loads(self.gridctl("-o", "json", "gpr", "list", show=False))}
            if all(states.get(i) not in ("GPR_STATE_PENDING", "GPR_STATE_PLACED", "GPR_STATE_PROVISIONING")
                   for i in gpr_ids):
                return
            time.sleep(0.2)
        raise SystemExit("demo: GPRs did not settle; see the logs under " + str(self.grid.root))

    def run(self) -> None:
        where = "hosts in network namespaces" if isinstance(self.grid, NetnsTestbed) else "hosts on loopback"
        print(f"== a controller (SQLite store, the embedded default), {where}")
        print(f"controller listening on {self.grid.start_controller()}, state in {self.grid.root}")
        print("\n== sites at four tiers, and three workspaces")
        for name, tier, region in SITES:
            self.gridctl("site", "create", name, "--tier", tier, "--region", region)
        self.gridctl("workspace", "create", "ran", "--weight", "2", "--description", "AI-RAN at the far edge")
        self.gridctl("workspace", "create", "llm", "--description", "LLM inference", "--region", "eu-fr",
                     "--region", "eu-de", "--region", "us-east", "--region", "us-west")
        self.gridctl("workspace", "create", "batch", "--max-gpus", "8", "--description", "batch training")
        print("\n== four GPU hosts with simulated GPUs, one agent process each")
        for host_id, site, gpus in HOSTS:
            self.grid.start_agent(host_id, site, gpus)
        self.wait_hosts(len(HOSTS))
        self.gridctl("host", "list")

        print("\n== GPU provision requests")
        ids = [
            self.submit("-w", "ran", "--name", "du-scheduler", "--priority", "high:200", "--pinned", "--tier",
                        "far_edge", "--model", "L4", "--count", "1", "--", "/opt/ran/du", "--cell", "7"),
            self.submit("-w", "llm", "--name", "chat-eu", "--priority", "medium:100", "--region", "eu-fr",
                        "--region", "eu-de", "--min-memory", "70GiB", "--count", "2", "--replicas", "2"),
            self.submit("-w", "llm", "--name", "chat-us", "--priority", "medium:80", "--model", "H100 80GB HBM3",
                        "--count", "4", "--duration", "8h"),
            self.submit("-w", "batch", "--name", "finetune", "--priority", "low:10", "--model", "H200",
                        "--count", "8", "--preemptible"),
        ]
        sovereign = self.submit("-w", "llm", "--name", "sovereign-fr", "--priority", "medium:150", "--region",
                                "eu-fr", "--model", "H200", "--count", "1")
        self.wait_states(ids)
        self.gridctl("gpr", "list")
        print("\n== why is one pending? (H200s exist only outside its region)")
        self.gridctl("gpr", "explain", sovereign)
        self.gridctl("gpr", "get", ids[1])
        self.gridctl("host", "get", "core-virginia-1")
        self.gridctl("event", "list", "--subject", ids[0])
        if isinstance(self.grid, NetnsTestbed):
            self.show_overlay("llm", "near-frankfurt-1", "core-virginia-1")

    def show_overlay(self, workspace: str, client: str, server: str) -> None:
        """Proves the workspace's overlay: a UDP echo between its namespaces on two hosts."""
        print(f"\n== workspace {workspace}'s encrypted overlay between {client} and {server}")
        bed = self.grid
        assert isinstance(bed, NetnsTestbed)
        deadline = time.monotonic() + 30
        address = ""
        while time.monotonic() < deadline and not address:
            host = json.loads(self.gridctl("-o", "json", "host", "get", server, show=False))
            ifaces = [i for i in host.get("overlay", []) if i["workspace"] == workspace and len(i.get("peers", []))]
            address = ifaces[0]["addresses"][0].split("/")[0] if ifaces else ""
            time.sleep(0.2)
        if not address:
            raise SystemExit(f"demo: the {workspace} overlay did not form; see the logs under {bed.root}")
        self.gridctl("workspace", "get", workspace)
        self.gridctl("host", "get", server)
        took = udp_reachability(bed.host(server).workspace_netns(workspace), address,
                                {bed.host(client).workspace_netns(workspace): client}, timeout=30)
        print(f"\n{client} reached {address} ({server}) through WireGuard in {took[client] * 1000:.0f} ms")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="gridmesh-demo", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--keep", action="store_true", help="keep the grid running until Ctrl-C")
    p.add_argument("--state", type=Path, help="where state and logs go (default: a temporary directory)")
    p.add_argument("--loopback", action="store_true", help="all agents on loopback, no namespaces or overlays")
    args = p.parse_args(argv)
    root = args.state or Path(tempfile.mkdtemp(prefix="gridmesh-demo-"))
    why_not = "asked for loopback" if args.loopback else netns_available()
    if why_not:
        print(f"(hosts run on loopback without overlays: {why_not})")
    grid: LocalGrid | NetnsTestbed = (LocalGrid(root) if why_not else
                                      NetnsTestbed(root, hosts=len(HOSTS), host_ids=[h for h, _, _ in HOSTS]))
    with grid:
        Demo(grid).run()
        if args.keep:
            print(f"\nthe grid keeps running: export GRIDMESH_CONTROLLER={grid.address}; Ctrl-C stops it")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    print("\n== grid stopped; every process it started is gone")
    if args.state is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
