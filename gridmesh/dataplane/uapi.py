"""wireguard-go's cross-platform UAPI protocol: text requests over a Unix socket.

A request is a command line (``get=1`` or ``set=1``), ``key=value`` lines, and an empty line. A
``set`` answers ``errno=0`` (or a negative errno); a ``get`` answers the device's keys, then each
peer (starting at its ``public_key``), then ``errno=0``. Keys are lowercase hex, not base64.

Rules: ``encode_set`` and ``parse_get`` are pure. A ``get`` answer contains the device's private
key: ``parse_get`` returns it apart from the state, and ``UapiClient`` never logs what it reads.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from gridmesh.dataplane.device import DataplaneError, DeviceChange, DeviceNotFound
from gridmesh.dataplane.keys import b64_to_hex, hex_to_b64
from gridmesh.dataplane.model import WgDeviceState, WgPeerState
from gridmesh.dataplane.naming import normalize_endpoint, normalize_networks

DEFAULT_RUN_DIR = Path("/var/run/wireguard")


def encode_set(change: DeviceChange) -> str:
    """The ``set`` request for ``change``, ending with the empty line."""
    lines = ["set=1"]
    if change.private_key is not None:
        lines.append(f"private_key={change.private_key.hex()}")
    if change.listen_port is not None:
        lines.append(f"listen_port={change.listen_port}")
    if change.replace_peers:
        lines.append("replace_peers=true")
    for p in change.peers:
        lines.append(f"public_key={b64_to_hex(p.public_key)}")
        if p.remove:
            lines.append("remove=true")
            continue
        if p.update_only:
            lines.append("update_only=true")
        if p.endpoint is not None and p.endpoint:
            lines.append(f"endpoint={p.endpoint}")
        if p.persistent_keepalive is not None:
            lines.append(f"persistent_keepalive_interval={p.persistent_keepalive}")
        if p.allowed_ips is not None:
            lines.append("replace_allowed_ips=true")
            lines += [f"allowed_ip={ip}" for ip in p.allowed_ips]
    return "\n".join(lines) + "\n\n"


def parse_errno(text: str) -> int:
    for line in reversed(text.splitlines()):
        if line.startswith("errno="):
            return int(line[len("errno="):])
    raise DataplaneError(f"UAPI answer without errno ({len(text)} bytes)")


def parse_get(name: str, text: str) -> tuple[bytes | None, WgDeviceState]:
    """The private key (or ``None``) and the device state (with ``public_key`` still empty)."""
    private: bytes | None = None
    listen_port = 0
    peers: list[WgPeerState] = []
    peer: dict[str, object] | None = None
    allowed: list[str] = []

    def close_peer() -> None:
        if peer is not None:
            peers.append(WgPeerState(
                public_key=str(peer["public_key"]),
                endpoint=normalize_endpoint(str(peer.get("endpoint", ""))),
                allowed_ips=normalize_networks(allowed),
                persistent_keepalive=int(str(peer.get("persistent_keepalive_interval", 0))),
                last_handshake=int(str(peer.get("last_handshake_time_sec", 0)))
                + int(str(peer.get("last_handshake_time_nsec", 0))) / 1e9,
                rx_bytes=int(str(peer.get("rx_bytes", 0))),
                tx_bytes=int(str(peer.get("tx_bytes", 0))),
            ))

    for line in text.splitlines():
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise DataplaneError(f"UAPI answer of {name}: malformed line (no '='), key {key[:20]!r}")
        if key == "errno":
            if int(value) != 0:
                raise DataplaneError(f"wireguard-go refused get on {name}: errno {value}")
            continue
        if key == "public_key":
            close_peer()
            peer = {"public_key": hex_to_b64(value)}
            allowed = []
        elif peer is None:
            if key == "private_key":
                private = bytes.fromhex(value)
                if private == bytes(32):
                    private = None
            elif key == "listen_port":
                listen_port = int(value)
        elif key == "allowed_ip":
            allowed.append(value)
        else:
            peer[key] = value
    close_peer()
    peers.sort(key=lambda p: p.public_key)
    return private, WgDeviceState(name=name, listen_port=listen_port, peers=tuple(peers))


class UapiClient:
    """Requests to one device's UAPI socket. Each request is its own connection."""

    def __init__(self, name: str, run_dir: Path = DEFAULT_RUN_DIR, timeout: float = 10.0) -> None:
        self.name = name
        self.path = run_dir / f"{name}.sock"
        self.timeout = timeout

    def exists(self) -> bool:
        return self.path.exists()

    def alive(self) -> bool:
        """Whether a daemon answers on the socket (a socket file may outlive a killed daemon)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(str(self.path))
            return True
        except OSError:
            return False

    def remove_stale(self) -> None:
        if self.exists() and not self.alive():
            self.path.unlink(missing_ok=True)

    def request(self, text: str) -> str:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(str(self.path))
                s.sendall(text.encode())
                chunks: list[bytes] = []
                while True:
                    data = s.recv(1 << 16)
                    if not data:
                        break
                    chunks.append(data)
                    # Every answer ends with "errno=N\n\n"; peek at the tail only.
                    tail = b"".join(chunks[-2:])[-32:]
                    if tail.endswith(b"\n\n") and b"errno=" in tail:
                        break
        except (FileNotFoundError, ConnectionRefusedError):
            raise DeviceNotFound(f"WireGuard device {self.name}: no wireguard-go answers on {self.path}") from None
        except OSError as e:
            reason = os.strerror(e.errno) if e.errno else str(e)
            raise DataplaneError(f"WireGuard device {self.name}: UAPI socket {self.path}: {reason}") from None
        return b"".join(chunks).decode()

    def get(self) -> tuple[bytes | None, WgDeviceState]:
        return parse_get(self.name, self.request("get=1\n\n"))

    def set(self, change: DeviceChange) -> None:
        errno = parse_errno(self.request(encode_set(change)))
        if errno != 0:
            raise DataplaneError(f"wireguard-go refused set on {self.name}: errno {errno} "
                                 f"({os.strerror(-errno) if errno < 0 else errno}); "
                                 f"{len(change.peers)} peer change(s), listen_port={change.listen_port}")
