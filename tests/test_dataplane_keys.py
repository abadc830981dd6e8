"""WireGuard keys: derivation against RFC 7748's vector, the 0600 key store, and the leak check."""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path

import pytest

from gridmesh.dataplane import keys
from gridmesh.dataplane.keys import KeyStore, WgKeyError, find_key_material, find_key_material_in_bytes


def test_public_key_matches_rfc7748() -> None:
    # RFC 7748 section 6.1, Alice's key pair (WireGuard clamps the same way as X25519).
    private = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    public = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    assert keys.public_key(private) == base64.b64encode(public).decode()


def test_generated_keys_are_clamped_and_distinct() -> None:
    a, b = keys.generate_private_key(), keys.generate_private_key()
    assert a != b and len(a) == 32
    assert a[0] & 7 == 0 and a[31] & 128 == 0 and a[31] & 64


def test_encodings() -> None:
    k = bytes(range(32))
    assert keys.hex_to_b64(keys.b64_to_hex(keys.b64(k))) == keys.b64(k)
    with pytest.raises(WgKeyError, match="decodes to 3 bytes"):
        keys.from_b64("YWJj")
    with pytest.raises(WgKeyError, match="not base64"):
        keys.from_b64("not base64!")


def test_key_store_files_are_private_and_never_overwritten(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")
    pair = store.create()
    assert repr(pair) == f"KeyPair(public={pair.public!r})" and str(pair) == repr(pair)
    path = store.dir / f"{keys.b64_to_hex(pair.public)}.key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert store.dir.stat().st_mode & 0o777 == 0o700
    assert store.load(pair.public).private == pair.private
    assert store.public_keys() == (pair.public,)
    with pytest.raises(WgKeyError, match="holds no private key"):
        store.load(keys.b64(bytes(32)))
    store.delete(pair.public)
    assert store.public_keys() == ()


def test_leak_check_finds_every_encoding_and_nothing_in_clean_data(tmp_path: Path) -> None:
    private = keys.generate_private_key()
    other = keys.generate_private_key()
    (tmp_path / "clean.log").write_text('{"msg": "use key ' + keys.public_key(private) + '"}\n')
    (tmp_path / "hex.log").write_text(f"private_key={private.hex()}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b64.json").write_text(f'{{"k": "{keys.b64(private)}"}}')
    db = tmp_path / "store.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (v BLOB)")
        conn.execute("INSERT INTO t VALUES (?)", (private,))
    conn.close()
    store = KeyStore(tmp_path / "keys")
    store.create()
    leaks = find_key_material(tmp_path, [private, other], exclude=[store.dir])
    where = sorted((Path(leak.where).name, leak.encoding) for leak in leaks)
    assert where == [("b64.json", "base64"), ("hex.log", "hex"), ("store.sqlite", "raw bytes")]
    assert all(leak.public_key == keys.public_key(private) for leak in leaks)
    assert "private key of" in str(leaks[0])
    # The key store itself is where keys belong; without the exclusion it is found too.
    assert any("keys" in leak.where for leak in find_key_material(tmp_path, store.private_keys()))
    slashy = bytes([0xFB, 0xFF] * 16)  # base64 with '+' and '/', which URL-safe base64 replaces
    assert [leak.encoding for leak in find_key_material_in_bytes(base64.urlsafe_b64encode(slashy), [slashy])] == [
        "url-safe base64"]
    assert find_key_material_in_bytes(b"nothing here", [private, other]) == []
