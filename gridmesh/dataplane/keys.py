"""WireGuard keys: making them, storing them on the host, and proving they never leaked.

Rules:
- A private key is made on the host (``os.urandom``), written once to the key store with mode 0600
  in a 0700 directory, and read back only to hand it to the WireGuard device. It is never logged,
  never put in a ``repr``, never returned by anything that reports.
- Keys are identified by their *public* key everywhere else (file names included).
- The public key is derived by ``wg pubkey`` (wireguard-tools' constant-time Curve25519), the
  private key passed on stdin, never on a command line (``/proc/*/cmdline`` is world-readable).
- ``find_key_material`` is the check the tests run over logs, stores and captured messages: it
  looks for every encoding a key could take on the way out (raw, base64, URL-safe base64, hex).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

KEY_LEN = 32


class WgKeyError(Exception):
    """A key is malformed or the key tools failed (the message says which key, by its public half)."""


def generate_private_key() -> bytes:
    """32 random bytes, clamped as Curve25519 expects (what ``wg genkey`` does)."""
    k = bytearray(os.urandom(KEY_LEN))
    k[0] &= 248
    k[31] = (k[31] & 127) | 64
    return bytes(k)


def b64(key: bytes) -> str:
    if len(key) != KEY_LEN:
        raise WgKeyError(f"a WireGuard key is {KEY_LEN} bytes, got {len(key)}")
    return base64.b64encode(key).decode()


def from_b64(text: str) -> bytes:
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise WgKeyError(f"{text!r} is not base64: {e}") from None
    if len(key) != KEY_LEN:
        raise WgKeyError(f"{text!r} decodes to {len(key)} bytes; a WireGuard key is {KEY_LEN}")
    return key


def b64_to_hex(text: str) -> str:
    """WireGuard's base64 key text as the hex that the UAPI protocol uses."""
    return from_b64(text).hex()


def hex_to_b64(text: str) -> str:
    try:
        return b64(bytes.fromhex(text))
    except ValueError as e:
        raise WgKeyError(f"{text!r} is not a hex key: {e}") from None


_public_cache: dict[bytes, str] = {}


def public_key(private: bytes) -> str:
    """The base64 public key of ``private``, computed by ``wg pubkey``.

    Cached by the SHA-256 of the private key (not the key itself) for the life of the process, as
    observing a device derives the same public key again and again.
    """
    if len(private) != KEY_LEN:
        raise WgKeyError(f"a private key is {KEY_LEN} bytes, got {len(private)}")
    digest = hashlib.sha256(private).digest()
    cached = _public_cache.get(digest)
    if cached is not None:
        return cached
    try:
        done = subprocess.run(["wg", "pubkey"], input=base64.b64encode(private) + b"\n", capture_output=True,
                              check=False, timeout=10)
    except FileNotFoundError:
        raise WgKeyError("the wg tool (wireguard-tools) is not installed; it derives public keys") from None
    if done.returncode != 0:
        raise WgKeyError(f"wg pubkey failed: {done.stderr.decode(errors='replace').strip()}")
    result = done.stdout.decode().strip()
    from_b64(result)
    _public_cache[digest] = result
    return result


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A private key and its public half. ``repr`` shows only the public half."""

    public: str
    private: bytes

    def __repr__(self) -> str:
        return f"KeyPair(public={self.public!r})"

    __str__ = __repr__


class KeyStore:
    """Private keys on disk under ``directory``: one ``<public key hex>.key`` file each, mode 0600.

    Files are created with ``O_EXCL`` and fsynced before they are used, so a key the device uses is
    always on disk, and an existing key file is never overwritten.
    """

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)

    def _path(self, public: str) -> Path:
        return self.dir / f"{b64_to_hex(public)}.key"

    def create(self) -> KeyPair:
        private = generate_private_key()
        pair = KeyPair(public_key(private), private)
        path = self._path(pair.public)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, base64.b64encode(private) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return pair

    def has(self, public: str) -> bool:
        try:
            return self._path(public).exists()
        except WgKeyError:
            return False

    def load(self, public: str) -> KeyPair:
        """The pair whose public half is ``public``; WgKeyError if this host does not hold it."""
        path = self._path(public)
        try:
            private = from_b64(path.read_text().strip())
        except FileNotFoundError:
            raise WgKeyError(f"this host holds no private key for public key {public}") from None
        return KeyPair(public, private)

    def delete(self, public: str) -> None:
        self._path(public).unlink(missing_ok=True)

    def public_keys(self) -> tuple[str, ...]:
        out = []
        for p in sorted(self.dir.glob("*.key")):
            try:
                out.append(hex_to_b64(p.stem))
            except WgKeyError:
                continue
        return tuple(out)

    def private_keys(self) -> tuple[bytes, ...]:
        """Every private key held here; for the leak check in tests, never for reporting."""
        return tuple(self.load(pub).private for pub in self.public_keys())


# -- the leak check --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyLeak:
    """Where private key material was found: the file (or label), the encoding, the byte offset."""

    where: str
    encoding: str
    offset: int
    public_key: str

    def __str__(self) -> str:
        return f"{self.where}: private key of {self.public_key} found as {self.encoding} at byte {self.offset}"


def _encodings(private: bytes) -> list[tuple[str, bytes]]:
    std = base64.b64encode(private).rstrip(b"=")
    url = base64.urlsafe_b64encode(private).rstrip(b"=")
    out = [("raw bytes", private), ("base64", std)]
    if url != std:
        out.append(("url-safe base64", url))
    return [*out, ("hex", private.hex().encode()), ("HEX", private.hex().upper().encode())]


def find_key_material_in_bytes(data: bytes, private_keys: Iterable[bytes], where: str = "<bytes>") -> list[KeyLeak]:
    """Every place ``data`` holds one of ``private_keys`` in any encoding a leak would use."""
    leaks = []
    for private in private_keys:
        # A public key is derived only if something was found, so that a clean scan never needs wg.
        for encoding, needle in _encodings(private):
            offset = data.find(needle)
            if offset >= 0:
                leaks.append(KeyLeak(where, encoding, offset, public_key(private)))
    return leaks


def find_key_material(root: Path, private_keys: Iterable[bytes], exclude: Iterable[Path] = ()) -> list[KeyLeak]:
    """Scans every regular file under ``root`` (logs, SQLite databases and their WAL files, JSON state)
    for ``private_keys``, skipping the directories in ``exclude`` (the key stores themselves)."""
    keys = list(private_keys)
    skip = [p.resolve() for p in exclude]
    leaks: list[KeyLeak] = []
    for path in sorted(root.rglob("*")):
        resolved = path.resolve()
        if any(resolved == s or s in resolved.parents for s in skip):
            continue
        if not path.is_file() or path.is_symlink():
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        leaks += find_key_material_in_bytes(data, keys, str(path))
    return leaks
