"""systemd notifications over real unix datagram sockets, checked byte for byte."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridmesh.common import sdnotify


@pytest.fixture(autouse=True)
def no_systemd_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests may themselves run under systemd; never let them talk to the real manager.
    for name in sdnotify.NOTIFY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def listener(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A bound datagram socket standing in for systemd, with NOTIFY_SOCKET pointing at it."""
    # Not tmp_path: unix socket paths are limited to 107 bytes and pytest's paths can be long.
    with tempfile.TemporaryDirectory(prefix="gm-sd-") as directory:
        path = str(Path(directory) / "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            sock.settimeout(5)
            monkeypatch.setenv("NOTIFY_SOCKET", path)
            yield sock


@pytest.fixture
def abstract_listener(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    name = f"gridmesh-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        yield sock


def test_notify_sends_the_exact_state(listener: socket.socket) -> None:
    assert sdnotify.notify("READY=1\nSTATUS=up")
    assert listener.recv(4096) == b"READY=1\nSTATUS=up"


def test_helpers_send_the_documented_assignments(listener: socket.socket) -> None:
    assert sdnotify.ready()
    assert sdnotify.status("serving 3 hosts\nsecond line")
    assert sdnotify.status("grille über alles")
    assert sdnotify.stopping()
    assert [listener.recv(4096) for _ in range(4)] == [
        b"READY=1",
        b"STATUS=serving 3 hosts second line",
        "STATUS=grille über alles".encode(),
        b"STOPPING=1",
    ]


def test_abstract_namespace_socket(abstract_listener: socket.socket) -> None:
    assert sdnotify.ready()
    assert abstract_listener.recv(4096) == b"READY=1"


def test_no_socket_returns_false() -> None:
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.ready() is False
    assert sdnotify.stopping() is False
    assert sdnotify.status("x") is False


def test_unreachable_or_unsupported_socket_returns_false(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/gridmesh/notify")
    assert sdnotify.ready() is False
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert sdnotify.ready() is False
    assert "failed" in caplog.text
    assert "not a unix socket address" in caplog.text


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        (None, None, None),
        ("30000000", None, 15.0),
        ("30000000", "self", 15.0),
        ("30000000", "other", None),
        ("30000000", "nope", None),
        ("0", None, None),
        ("soon", None, None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    if usec is not None:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is not None:
        value = {"self": str(os.getpid()), "other": str(os.getpid() + 1)}.get(pid, pid)
        monkeypatch.setenv("WATCHDOG_PID", value)
    assert sdnotify.watchdog_interval() == expected


def test_watchdog_loop_pings_until_cancelled(
    listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000")  # a ping every 10 ms
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    listener.setblocking(False)

    async def scenario() -> list[bytes]:
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(sdnotify.watchdog_loop())
        try:
            return [await asyncio.wait_for(loop.sock_recv(listener, 4096), 5) for _ in range(3)]
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    assert asyncio.run(scenario()) == [b"WATCHDOG=1"] * 3


def test_watchdog_loop_returns_at_once_without_a_watchdog(listener: socket.socket) -> None:
    asyncio.run(asyncio.wait_for(sdnotify.watchdog_loop(), 1))
    listener.settimeout(0.05)
    with pytest.raises(TimeoutError):
        listener.recv(4096)
