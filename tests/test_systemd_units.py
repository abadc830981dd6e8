"""The systemd units: systemd-analyze accepts them silently, and they keep the settings gridmesh relies on."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNITS = {
    "controller": ROOT / "systemd" / "gridmesh-controller.service",
    "agent": ROOT / "systemd" / "gridmesh-agent.service",
}
EXEC_START = re.compile(
    r"^ExecStart=(?P<binary>/usr/local/bin/gridmesh-[a-z]+)(?P<args>( .*)?)$", re.MULTILINE
)

# Settings that give a service its own mount namespace (systemd.exec(5), PrivateMounts=). The agent must
# have none: mounts under /run/netns made inside such a namespace never reach the host.
MOUNT_NAMESPACE_SETTINGS = (
    "BindPaths",
    "BindReadOnlyPaths",
    "InaccessiblePaths",
    "MountAPIVFS",
    "PrivateDevices",
    "PrivateMounts",
    "PrivateTmp",
    "ProcSubset",
    "ProtectControlGroups",
    "ProtectHome",
    "ProtectKernelLogs",
    "ProtectKernelModules",
    "ProtectKernelTunables",
    "ProtectProc",
    "ProtectSystem",
    "ReadOnlyPaths",
    "ReadWritePaths",
    "RootDirectory",
    "TemporaryFileSystem",
    "DynamicUser",
)


def settings(unit: Path) -> dict[str, dict[str, list[str]]]:
    """Section -> key -> every value, in order (systemd keys may repeat, so configparser will not do)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in unit.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{unit.name}: setting outside a section: {line!r}"
        assert not line.endswith("\\"), f"{unit.name}: keep settings on one line: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"{unit.name}: not a setting: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.mark.parametrize("role", sorted(UNITS))
def test_units_are_type_notify_with_a_watchdog(role: str) -> None:
    service = settings(UNITS[role])["Service"]
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert service["WatchdogSec"] == ["30"]
    assert service["Restart"] == ["on-failure"]
    assert service["StateDirectory"] == [f"gridmesh-{role}"]
    assert service["ExecStart"] == [f"/usr/local/bin/gridmesh-{role} --config /etc/gridmesh/{role}.toml"]


def test_exec_start_binaries_are_the_projects_entry_points() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    for role, unit in UNITS.items():
        match = EXEC_START.search(unit.read_text(encoding="utf-8"))
        assert match is not None, unit.name
        assert Path(match["binary"]).name == f"gridmesh-{role}"
        assert f"gridmesh-{role}" in scripts


def test_controller_holds_no_privilege() -> None:
    service = settings(UNITS["controller"])["Service"]
    assert service["DynamicUser"] == ["yes"]
    assert service["CapabilityBoundingSet"] == [""]
    assert service["AmbientCapabilities"] == [""]
    assert service["PrivateDevices"] == ["yes"]
    assert service["ProtectSystem"] == ["strict"]
    assert service["NoNewPrivileges"] == ["yes"]
    assert service["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]


def test_agent_is_bounded_and_keeps_mounts_visible_to_the_host() -> None:
    service = settings(UNITS["agent"])["Service"]
    assert "User" not in service  # root, bounded by the capability set below
    capabilities = {cap for value in service["CapabilityBoundingSet"] for cap in value.split()}
    assert {"CAP_NET_ADMIN", "CAP_SYS_ADMIN"} <= capabilities
    assert not capabilities & {"CAP_SYS_PTRACE", "CAP_NET_RAW", "CAP_SYS_MODULE", "CAP_SYS_TIME"}
    assert service["Delegate"] == ["yes"]
    assert service["DevicePolicy"] == ["closed"]
    assert "AF_NETLINK" in service["RestrictAddressFamilies"][0].split()
    assert "user" not in service["RestrictNamespaces"][0].split()
    present = sorted(set(MOUNT_NAMESPACE_SETTINGS) & set(service))
    assert present == [], f"these give the agent a private mount namespace: {present}"


def stub_units(directory: Path) -> list[Path]:
    """Copies of the units whose ExecStart runs a stub that exists here, flags kept.

    ``systemd-analyze verify`` refuses an ExecStart binary that does not exist, and the real binaries
    are installed only on deployed hosts.
    """
    stub = directory / "gridmesh-stub"
    stub.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    stub.chmod(0o755)
    copies = []
    for unit in UNITS.values():
        text, replaced = EXEC_START.subn(lambda m: f"ExecStart={stub}{m['args']}", unit.read_text("utf-8"))
        assert replaced == 1, f"{unit.name}: expected one ExecStart of a gridmesh binary"
        copy = directory / unit.name  # the file name is the unit name; keep it
        copy.write_text(text, encoding="utf-8")
        copies.append(copy)
    return copies


def verify(units: list[Path]) -> tuple[int, str]:
    """Run ``systemd-analyze verify`` on the units; its exit status and everything it printed."""
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", "--recursive-errors=yes", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0", "LC_ALL": "C"},
        check=False,
    )
    return result.returncode, (result.stdout + result.stderr).strip()


needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


@needs_systemd_analyze
def test_systemd_analyze_verify_prints_nothing(tmp_path: Path) -> None:
    # Unknown keys are only warnings (exit status 0), so any output at all counts as a failure.
    returncode, output = verify(stub_units(tmp_path))
    assert output == "", output
    assert returncode == 0


@needs_systemd_analyze
def test_systemd_analyze_verify_does_report_here(tmp_path: Path) -> None:
    # Guards the test above: an empty answer must mean "clean", not "systemd-analyze checked nothing".
    agent = next(unit for unit in stub_units(tmp_path) if unit.name == "gridmesh-agent.service")
    agent.write_text(agent.read_text(encoding="utf-8") + "\n[Service]\nWatchdogSecs=30\n", encoding="utf-8")
    _, output = verify([agent])
    assert "WatchdogSecs" in output
