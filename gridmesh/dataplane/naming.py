"""Names and address text that both the controller and the host must agree on.

Rules: pure functions; the same input always gives the same name on every machine and every
Python version (SHA-256, never ``hash()``).
"""

from __future__ import annotations

import hashlib
import ipaddress

IFNAME_MAX = 15  # IFNAMSIZ - 1
INTERFACE_PREFIX = "gm"


def interface_name(host_id: str, workspace: str) -> str:
    """The overlay device name of ``workspace`` on ``host_id``: ``gm`` and 12 hex digits.

    Unique per (host, workspace) rather than per workspace, because wireguard-go's control socket
    (``/var/run/wireguard/<name>.sock``) is per kernel: hosts simulated as namespaces on one machine
    share it. 48 bits of hash make a collision on one machine practically impossible.
    """
    digest = hashlib.sha256(f"{host_id}\0{workspace}".encode()).hexdigest()
    return f"{INTERFACE_PREFIX}{digest[:IFNAME_MAX - len(INTERFACE_PREFIX) - 1]}"


def workspace_netns(prefix: str, workspace: str) -> str:
    """The network namespace of ``workspace`` on a host whose agent uses ``prefix`` (``gmws-``)."""
    return f"{prefix}{workspace}"


def format_endpoint(host: str, port: int) -> str:
    """``HOST:PORT``, with an IPv6 host in brackets."""
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """The inverse of ``format_endpoint``; raises ValueError naming the bad text."""
    host, sep, port = endpoint.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"endpoint {endpoint!r} is not HOST:PORT")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    ipaddress.ip_address(host)
    return host, int(port)


def normalize_endpoint(endpoint: str) -> str:
    """An endpoint in canonical text (compressed IPv6), or "" for none."""
    if not endpoint:
        return ""
    host, port = parse_endpoint(endpoint)
    return format_endpoint(str(ipaddress.ip_address(host)), port)


def normalize_networks(networks: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Allowed IPs in canonical text, without duplicates, sorted by family and address."""
    nets = {ipaddress.ip_network(n, strict=False) for n in networks}
    return tuple(str(n) for n in sorted(nets, key=lambda n: (n.version, n.network_address, n.prefixlen)))


def normalize_interfaces(addresses: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Interface addresses (``ADDR/LEN``) in canonical text, in the given order, without duplicates."""
    seen: dict[str, None] = {}
    for a in addresses:
        seen.setdefault(str(ipaddress.ip_interface(a)), None)
    return tuple(seen)
