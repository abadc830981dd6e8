"""Controller and agent configuration: a TOML file, then the environment, then flags; mistakes are
refused with a message that names the key and what is allowed.
"""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridmesh.agent import config as agent_config
from gridmesh.common.model import SiteName, SiteTier
from gridmesh.controller import config as controller_config
from gridmesh.controller.model import Site


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- controller ------------------------------------------------------------------------------------

CONTROLLER_TOML = """
[controller]
listen = "0.0.0.0:7443"
state_dir = "/srv/controller"
status_interval_s = 5
placement_interval_s = 0.5
log_level = "debug"
log_format = "text"

[[sites]]
name = "paris-edge"
tier = "far_edge"
region = "eu-fr"
price = { "L4" = 0.8, "H100 80GB HBM3" = 3.5 }
latency_ms = { "frankfurt-near" = 9 }

[[sites]]
name = "virginia-core"
tier = "CORE"
region = "us-east"
"""


def test_controller_defaults_without_file_env_or_flags() -> None:
    assert controller_config.load_config(None, env={}) == controller_config.ControllerConfig()


def test_controller_file_is_read_whole(tmp_path: Path) -> None:
    cfg = controller_config.load_config(write(tmp_path, CONTROLLER_TOML), env={})
    assert cfg == controller_config.ControllerConfig(
        listen="0.0.0.0:7443", state_dir=Path("/srv/controller"), status_interval_s=5, placement_interval_s=0.5,
        log_level="debug", log_format="text",
        sites=(Site(name=SiteName("paris-edge"), tier=SiteTier.FAR_EDGE, region="eu-fr",
                    price_per_gpu_hour=(("H100 80GB HBM3", 3.5), ("L4", 0.8)),
                    latency_ms=(("frankfurt-near", 9.0),)),
               Site(name=SiteName("virginia-core"), tier=SiteTier.CORE, region="us-east")),
    )


def test_controller_env_beats_file_and_flags_beat_env(tmp_path: Path) -> None:
    path = write(tmp_path, CONTROLLER_TOML)
    env = {"GRIDMESH_LISTEN": "10.0.0.1:1", "GRIDMESH_STATE_DIR": "/env/state", "GRIDMESH_LOG_LEVEL": "warning",
           "GRIDMESH_LOG_FORMAT": "json"}
    from_env = controller_config.load_config(path, env=env)
    assert (from_env.listen, from_env.state_dir, from_env.log_level, from_env.log_format) == (
        "10.0.0.1:1", Path("/env/state"), "warning", "json")
    assert from_env.status_interval_s == 5  # not in the environment: the file's value stays
    flagged = controller_config.load_config(path, env=env, listen="127.0.0.1:9", state_dir=Path("/flag"),
                                            log_level=None, log_format="text")
    assert (flagged.listen, flagged.state_dir, flagged.log_level, flagged.log_format) == (
        "127.0.0.1:9", Path("/flag"), "warning", "text")


def test_controller_reads_os_environ_when_no_env_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDMESH_LISTEN", "192.0.2.1:7443")
    assert controller_config.load_config(None).listen == "192.0.2.1:7443"


def test_controller_unknown_key_is_named_with_the_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, '[controller]\nlisten = "x:1"\nlisten_address = "0.0.0.0:7443"\n')
    with pytest.raises(controller_config.ConfigError) as e:
        controller_config.load_config(path, env={})
    assert str(e.value) == (f"{path}: [controller] listen_address is not a setting; known: listen, log_format, "
                            "log_level, placement_interval_s, state_dir, status_interval_s")


def test_controller_sites_are_not_a_controller_setting(tmp_path: Path) -> None:
    with pytest.raises(controller_config.ConfigError, match=r"\[controller\] sites is not a setting"):
        controller_config.load_config(write(tmp_path, "[controller]\nsites = []\n"), env={})


@pytest.mark.parametrize(("value", "source"), [("yaml", "file"), ("yaml", "env"), ("YAML", "flag")])
def test_controller_bad_log_format(tmp_path: Path, value: str, source: str) -> None:
    path = write(tmp_path, f'[controller]\nlog_format = "{value}"\n' if source == "file" else "")
    env = {"GRIDMESH_LOG_FORMAT": value} if source == "env" else {}
    flags = {"log_format": value} if source == "flag" else {}
    with pytest.raises(controller_config.ConfigError) as e:
        controller_config.load_config(path, env=env, **flags)
    assert str(e.value) == f"log_format {value!r}; allowed json or text"


@pytest.mark.parametrize(("site", "message"), [
    ('name = "a"\nregion = "eu"', "[[sites]] #1: tier is required and must be a string (tier: one of "
                                  "far_edge, near_edge, core, ai_factory, cloud)"),
    ('name = "a"\ntier = "core"', "[[sites]] #1: region is required"),
    ('tier = "core"\nregion = "eu"', "[[sites]] #1: name is required"),
    ('name = "a"\ntier = "edge"\nregion = "eu"', "[[sites]] #1: tier 'edge'; allowed: far_edge, near_edge, core"),
])
def test_controller_bad_site_names_the_site_and_the_problem(tmp_path: Path, site: str, message: str) -> None:
    path = write(tmp_path, f"[[sites]]\n{site}\n")
    with pytest.raises(controller_config.ConfigError) as e:
        controller_config.load_config(path, env={})
    assert str(e.value).startswith(f"{path}: {message}")


def test_controller_unreadable_or_invalid_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(controller_config.ConfigError, match=str(missing)):
        controller_config.load_config(missing, env={})
    broken = write(tmp_path, "[controller\nlisten = ", "broken.toml")
    with pytest.raises(controller_config.ConfigError, match=str(broken)):
        controller_config.load_config(broken, env={})


def test_controller_unknown_site_key_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[[sites]]\nname = "a"\ntier = "core"\nregion = "eu"\nlatency = { b = 3 }\n')
    with pytest.raises(controller_config.ConfigError, match="latency"):
        controller_config.load_config(path, env={})


def test_controller_unknown_table_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[controler]\nlisten = "0.0.0.0:7443"\n')
    with pytest.raises(controller_config.ConfigError, match="controler"):
        controller_config.load_config(path, env={})


def test_controller_state_dir_of_the_wrong_type_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(controller_config.ConfigError, match="state_dir"):
        controller_config.load_config(write(tmp_path, "[controller]\nstate_dir = 5\n"), env={})


def test_controller_value_of_the_wrong_type_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(controller_config.ConfigError, match="status_interval_s"):
        controller_config.load_config(write(tmp_path, '[controller]\nstatus_interval_s = "ten"\n'), env={})


# -- agent -----------------------------------------------------------------------------------------

AGENT_TOML = """
[agent]
host_id = "edge-paris-1-a"
site = "edge-paris-1"
controller = "controller.example:7443"
state_dir = "/var/lib/agent-a"
hw_backend = "simulator"
host_file = "/etc/gridmesh/host.toml"
underlay_address = "192.0.2.10"
log_level = "debug"
log_format = "text"
"""


def test_agent_file_is_read_whole(tmp_path: Path) -> None:
    cfg = agent_config.load_config(write(tmp_path, AGENT_TOML), env={})
    assert cfg == agent_config.AgentConfig(
        host_id="edge-paris-1-a", site="edge-paris-1", controller="controller.example:7443",
        state_dir=Path("/var/lib/agent-a"), hw_backend="simulator", host_file=Path("/etc/gridmesh/host.toml"),
        underlay_address="192.0.2.10", log_level="debug", log_format="text")


def test_agent_env_beats_file_and_flags_beat_env(tmp_path: Path) -> None:
    path = write(tmp_path, AGENT_TOML)
    env = {"GRIDMESH_SITE": "env-site", "GRIDMESH_CONTROLLER": "env:1", "GRIDMESH_HOST_FILE": "/env/host.toml",
           "GRIDMESH_HW_BACKEND": "auto", "GRIDMESH_LOG_FORMAT": "json"}
    from_env = agent_config.load_config(path, env=env)
    assert (from_env.site, from_env.controller, from_env.host_file, from_env.hw_backend, from_env.log_format) == (
        "env-site", "env:1", Path("/env/host.toml"), "auto", "json")
    assert from_env.host_id == "edge-paris-1-a"
    flagged = agent_config.load_config(path, env=env, site="flag-site", controller=None, host_file="/flag.toml",
                                       state_dir=Path("/flag/state"))
    assert (flagged.site, flagged.controller, flagged.host_file, flagged.state_dir) == (
        "flag-site", "env:1", Path("/flag.toml"), Path("/flag/state"))


def test_agent_host_id_defaults_to_the_short_hostname(tmp_path: Path) -> None:
    cfg = agent_config.load_config(None, env={"GRIDMESH_SITE": "s"})
    assert cfg.host_id == socket.gethostname().split(".")[0].lower()
    assert cfg.host_file is None and cfg.state_dir == Path("/var/lib/gridmesh-agent")


def test_agent_without_a_site_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[agent]\nhost_id = "a"\n')
    with pytest.raises(agent_config.ConfigError) as e:
        agent_config.load_config(path, env={})
    assert str(e.value) == "site is required: set [agent] site, GRIDMESH_SITE or --site"
    with pytest.raises(agent_config.ConfigError, match="site is required"):
        agent_config.load_config(path, env={"GRIDMESH_SITE": ""})


def test_agent_unknown_key_is_named_with_the_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, '[agent]\nsite = "s"\nhw_backnd = "nvml"\n')
    with pytest.raises(agent_config.ConfigError) as e:
        agent_config.load_config(path, env={})
    assert str(e.value) == (f"{path}: [agent] hw_backnd is not a setting; known: controller, host_file, "
                            "host_id, hw_backend, log_format, log_level, netns_prefix, overlay_backend, "
                            "overlay_key_rotation_s, site, state_dir, telemetry_hz, "
                            "underlay_address")


@pytest.mark.parametrize(("key", "value", "message"), [
    ("log_format", "yaml", "log_format 'yaml'; allowed json or text"),
    ("hw_backend", "cuda", "hw_backend 'cuda'; allowed auto, nvml, simulator, amd"),
])
def test_agent_bad_choice(tmp_path: Path, key: str, value: str, message: str) -> None:
    for source in ("file", "env", "flag"):
        path = write(tmp_path, '[agent]\nsite = "s"\n' + (f'{key} = "{value}"\n' if source == "file" else ""))
        env = {f"GRIDMESH_{key.upper()}": value} if source == "env" else {}
        flags = {key: value} if source == "flag" else {}
        with pytest.raises(agent_config.ConfigError) as e:
            agent_config.load_config(path, env=env, **flags)
        assert str(e.value) == message, source


def test_agent_unreadable_or_invalid_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(agent_config.ConfigError, match=str(missing)):
        agent_config.load_config(missing, env={"GRIDMESH_SITE": "s"})
    broken = write(tmp_path, 'site = "unterminated', "broken.toml")
    with pytest.raises(agent_config.ConfigError, match=str(broken)):
        agent_config.load_config(broken, env={"GRIDMESH_SITE": "s"})


def test_agent_path_of_the_wrong_type_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(agent_config.ConfigError, match="host_file"):
        agent_config.load_config(write(tmp_path, '[agent]\nsite = "s"\nhost_file = 5\n'), env={})


# -- precedence, as a property ---------------------------------------------------------------------

values = st.from_regex(r"[a-z0-9][a-z0-9.:-]{0,11}", fullmatch=True)
layers = st.tuples(st.none() | values, st.none() | values, st.none() | values)  # file, env, flag


def load_with(load: Any, section: str, env_of: dict[str, str], settings_: dict[str, tuple[str | None, ...]],
              base: str = "") -> Any:
    with tempfile.TemporaryDirectory() as d:
        lines = [f"[{section}]", base]
        env: dict[str, str] = {}
        flags: dict[str, str | None] = {}
        for key, (in_file, in_env, in_flag) in settings_.items():
            if in_file is not None:
                lines.append(f'{key} = "{in_file}"')
            if in_env is not None:
                env[env_of[key]] = in_env
            flags[key] = in_flag
        path = Path(d) / "c.toml"
        path.write_text("\n".join(lines) + "\n")
        return load(path, env=env, **flags)


def expected(default: Any, layer: tuple[str | None, ...]) -> Any:
    present = [v for v in layer if v is not None]
    return present[-1] if present else default


@settings(max_examples=60, deadline=None)
@given(st.fixed_dictionaries({"listen": layers, "log_level": layers}))
def test_controller_the_last_layer_that_sets_a_key_wins(layered: dict[str, tuple[str | None, ...]]) -> None:
    cfg = load_with(controller_config.load_config, "controller",
                    {"listen": "GRIDMESH_LISTEN", "log_level": "GRIDMESH_LOG_LEVEL"}, layered)
    defaults = controller_config.ControllerConfig()
    assert cfg.listen == expected(defaults.listen, layered["listen"])
    assert cfg.log_level == expected(defaults.log_level, layered["log_level"])


@settings(max_examples=60, deadline=None)
@given(st.fixed_dictionaries({"controller": layers, "underlay_address": layers, "site": layers}))
def test_agent_the_last_layer_that_sets_a_key_wins(layered: dict[str, tuple[str | None, ...]]) -> None:
    base = 'host_id = "h"'
    try:
        cfg = load_with(agent_config.load_config, "agent", {k: f"GRIDMESH_{k.upper()}" for k in layered}, layered,
                        base)
    except agent_config.ConfigError as e:
        assert all(v is None for v in layered["site"]) and "site is required" in str(e)
        return
    defaults = agent_config.AgentConfig()
    for key in layered:
        assert getattr(cfg, key) == expected(getattr(defaults, key), layered[key]), key
