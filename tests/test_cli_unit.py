"""Unit tests of gridctl: flag parsing, rendering, paging and the exit-code rules. No controller runs here;
the one test that touches the network dials a closed loopback port to see exit code 5.
"""

from __future__ import annotations

import io
import json
import re
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf.json_format import MessageToDict
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console, RenderableType
from typer.testing import CliRunner

from gridmesh.cli import client, enums, output, parse
from gridmesh.cli.exits import EXIT_CODE_MEANINGS, CliError, ExitCode, exit_code_for, rpc_error_line, status_of
from gridmesh.cli.main import app
from gridmesh.v1 import provision_pb2
from gridmesh.v1 import types_pb2 as pb

NOW = 1_800_000_000.0


def render(renderable: RenderableType, width: int = output.PIPE_WIDTH) -> str:
    console = Console(file=io.StringIO(), width=width, markup=False, emoji=False, highlight=False)
    console.print(renderable)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(text, str)
    return "\n".join(line.rstrip() for line in text.splitlines())


def cells(line: str) -> list[str]:
    """The cells of a rendered table row: columns are at least two spaces apart."""
    return re.split(r"\s{2,}", line.strip())


def ts(seconds: float) -> Any:
    stamp = pb.Gpr().created_at
    stamp.seconds = int(seconds)
    return stamp


# --- durations -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("1d", 86400), ("1d2h3m4s", 93784), (" 2H ", 7200)],
)
def test_parse_duration_accepts_units_largest_first(text: str, seconds: int) -> None:
    assert parse.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "90", "5x", "30m1h", "1.5h", "-1m", "1 h", "0s", "0h0m"])
def test_parse_duration_refuses_other_forms_and_says_which_are_accepted(text: str) -> None:
    with pytest.raises(parse.ParseError) as err:
        parse.parse_duration(text)
    assert "90s" in str(err.value) or "zero" in str(err.value)


@given(st.integers(min_value=1, max_value=10**8))
def test_format_seconds_is_the_inverse_of_parse_duration(seconds: int) -> None:
    assert parse.parse_duration(parse.format_seconds(seconds)) == seconds


@pytest.mark.parametrize(
    ("seconds", "units", "text"),
    [(0, 2, "0s"), (59, 2, "59s"), (90061, 2, "1d1h"), (86400 + 300, 2, "1d"), (3 * 3600 + 125, 2, "3h2m")],
)
def test_format_seconds_rounds_down_to_the_largest_units(seconds: int, units: int, text: str) -> None:
    assert parse.format_seconds(seconds, max_units=units) == text


# --- GPU shape values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mib"),
    [("40GiB", 40960), ("40960MiB", 40960), ("40960", 40960), ("1.5gib", 1536), ("1TiB", 1048576), ("80 GiB", 81920)],
)
def test_parse_memory_reads_binary_units_and_bare_mib(text: str, mib: int) -> None:
    assert parse.parse_memory_mib(text) == mib


@pytest.mark.parametrize("text", ["40GB", "40G", "lots", "0", "0.1MiB", "-1GiB", ""])
def test_parse_memory_refuses_decimal_units_and_partial_mib(text: str) -> None:
    with pytest.raises(parse.ParseError):
        parse.parse_memory_mib(text)


def test_parse_compute_capability() -> None:
    assert parse.parse_compute_capability("8.0") == "8.0"
    for bad in ("8", "sm_80", "8.0.1", ""):
        with pytest.raises(parse.ParseError, match=r"MAJOR\.MINOR"):
            parse.parse_compute_capability(bad)


# --- priority --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tier", "number"),
    [
        ("high:10", pb.PRIORITY_TIER_HIGH, 10),
        ("HIGH:10", pb.PRIORITY_TIER_HIGH, 10),
        ("Medium:200", pb.PRIORITY_TIER_MEDIUM, 200),
        ("low:1", pb.PRIORITY_TIER_LOW, 1),
    ],
)
def test_parse_priority(text: str, tier: int, number: int) -> None:
    assert parse.parse_priority(text) == (tier, number)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("medium", "TIER:N"),
        ("urgent:1", "TIER:N"),
        ("high:x", "TIER:N"),
        ("high:-1", "TIER:N"),
        ("high:0", "1 to 300"),
        ("low:101", "1 to 100"),
        ("medium:201", "1 to 200"),
    ],
)
def test_parse_priority_refuses_with_the_accepted_form(text: str, says: str) -> None:
    with pytest.raises(parse.ParseError, match=says):
        parse.parse_priority(text)


# --- key=value and ports ---------------------------------------------------------------------------


def test_key_values_keep_equals_in_values_and_refuse_repeats() -> None:
    assert parse.parse_key_values(["A=1=2", "B=", "team=ran"]) == {"A": "1=2", "B": "", "team": "ran"}
    for bad in (["novalue"], ["=x"], ["a=1", "a=2"]):
        with pytest.raises(parse.ParseError):
            parse.parse_key_values(bad)


def test_key_numbers_split_at_the_last_equals_for_model_names() -> None:
    assert parse.parse_key_numbers(["H100 80GB HBM3=2.5", "edge-1=3"], "price") == {
        "H100 80GB HBM3": 2.5,
        "edge-1": 3.0,
    }
    for bad in (["a=-1"], ["a=nan"], ["a=b"], ["=1"], ["a=1", "a=2"]):
        with pytest.raises(parse.ParseError):
            parse.parse_key_numbers(bad, "price")


def test_parse_port() -> None:
    assert parse.parse_port("http:8000/tcp") == pb.Port(name="http", port=8000, protocol="tcp")
    assert parse.parse_port("dns:53/udp") == pb.Port(name="dns", port=53, protocol="udp")
    assert parse.parse_port("metrics:9100") == pb.Port(name="metrics", port=9100, protocol="tcp")
    for bad in ("http", "http:0", "http:70000", "http:80/sctp", ":80"):
        with pytest.raises(parse.ParseError):
            parse.parse_port(bad)


# --- enums -----------------------------------------------------------------------------------------

ALL_ENUMS = [
    enums.SITE_TIER,
    enums.PRIORITY_TIER,
    enums.SHARING_MODE,
    enums.PLACEMENT_POLICY,
    enums.GPR_STATE,
    enums.HOST_STATE,
    enums.GPU_HEALTH,
    enums.ALLOCATION_STATE,
]


@pytest.mark.parametrize("enum", ALL_ENUMS, ids=lambda e: e.noun)
def test_every_enum_value_reads_back_from_what_is_shown(enum: enums.ProtoEnum[Any]) -> None:
    values = [v.number for v in enum.wrapper.DESCRIPTOR.values if v.number != 0]
    assert values, "the contract has values beyond UNSPECIFIED"
    for value in values:
        shown = enum.show(value)
        assert enum.parse(shown) == value
        assert enum.parse(shown.lower()) == value
        assert enum.parse(enum.wrapper.Name(value)) == value  # the wire name works too
    assert enum.show(0) == "-"


def test_enum_spelling() -> None:
    assert enums.SHARING_MODE.parse("time-sliced") == pb.SHARING_MODE_TIME_SLICED
    assert enums.SITE_TIER.show(pb.SITE_TIER_FAR_EDGE) == "far_edge"
    assert enums.GPR_STATE.show(pb.GPR_STATE_RUNNING) == "RUNNING"
    assert enums.GPR_STATE.show(pb.GprState.ValueType(99)) == "99"  # a value newer than this gridctl
    with pytest.raises(enums.EnumParseError, match="pending, placed"):
        enums.GPR_STATE.parse("runing")
    with pytest.raises(enums.EnumParseError):
        enums.GPR_STATE.parse("unspecified")


# --- controller address ----------------------------------------------------------------------------


def write_config(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_controller_address_flag_then_env_then_config_then_default(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_config(home / ".config/gridmesh/gridctl.toml", 'controller = "home:1"\n')
    explicit = write_config(tmp_path / "other.toml", 'controller = "explicit:2"\n')
    env = {"GRIDMESH_CONTROLLER": "env:3", "GRIDMESH_CONFIG": str(explicit)}

    assert parse.resolve_controller("flag:4", env, home).address == "flag:4"
    assert parse.resolve_controller(None, env, home).address == "env:3"
    assert parse.resolve_controller(None, {"GRIDMESH_CONFIG": str(explicit)}, home).address == "explicit:2"
    resolved = parse.resolve_controller(None, {"GRIDMESH_CONTROLLER": ""}, home)
    assert resolved.address == "home:1"
    assert str(resolved).endswith("(from " + str(home / ".config/gridmesh/gridctl.toml") + ")")
    assert parse.resolve_controller(None, {}, tmp_path / "nobody") == parse.ControllerAddress(
        "127.0.0.1:7443", "default"
    )


def test_config_without_controller_key_falls_back_to_the_default(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", "[tls]\nca = 'x'\n")
    assert parse.resolve_controller(None, {"GRIDMESH_CONFIG": str(config)}, tmp_path).address == "127.0.0.1:7443"


@pytest.mark.parametrize("text", ["controller = ", "controller = 5", 'controller = ""'])
def test_bad_config_is_a_usage_error(tmp_path: Path, text: str) -> None:
    config = write_config(tmp_path / "c.toml", text)
    with pytest.raises(CliError) as err:
        parse.resolve_controller(None, {"GRIDMESH_CONFIG": str(config)}, tmp_path)
    assert err.value.exit_code is ExitCode.USAGE
    assert str(config) in str(err.value)


def test_missing_explicit_config_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="does not exist") as err:
        parse.resolve_controller(None, {"GRIDMESH_CONFIG": str(tmp_path / "none.toml")}, tmp_path)
    assert err.value.exit_code is ExitCode.USAGE


# --- building requests -----------------------------------------------------------------------------


def test_submit_flags_fill_every_field_of_the_spec() -> None:
    spec = parse.build_gpr_spec(
        parse.SubmitOptions(
            workspace="ran",
            name="demo",
            models=["H100 80GB HBM3", "A100"],
            count=2,
            min_memory="40GiB",
            min_cc="8.0",
            sharing="time-sliced",
            pinned=True,
            tier="far_edge",
            site="edge-1",
            spill=["near_edge", "CORE"],
            origin_site="edge-1",
            regions=["eu"],
            priority="HIGH:10",
            duration="1h30m",
            preemptible=True,
            may_migrate=True,
            min_runtime="10m",
            replicas=3,
            model_artifact="s3://models/llama",
            labels=["team=ran"],
            env=["A=1=2"],
            ports=["http:8000/tcp"],
            command=["python", "serve.py", "--port", "8000"],
        )
    )
    want = pb.GprSpec(
        workspace="ran",
        name="demo",
        shape=pb.GpuShape(
            models=["H100 80GB HBM3", "A100"], count=2, min_memory_mib=40960, min_compute_capability="8.0"
        ),
        sharing=pb.SHARING_MODE_TIME_SLICED,
        placement=pb.PlacementSpec(
            policy=pb.PLACEMENT_POLICY_PINNED,
            tier=pb.SITE_TIER_FAR_EDGE,
            site="edge-1",
            tier_preference=[pb.SITE_TIER_NEAR_EDGE, pb.SITE_TIER_CORE],
            origin_site="edge-1",
            allowed_regions=["eu"],
        ),
        priority_tier=pb.PRIORITY_TIER_HIGH,
        priority=10,
        replicas=3,
        labels={"team": "ran"},
        model_artifact="s3://models/llama",
        workload=pb.Workload(
            command=["python", "serve.py", "--port", "8000"],
            env={"A": "1=2"},
            ports=[pb.Port(name="http", port=8000, protocol="tcp")],
        ),
    )
    want.duration.seconds = 5400
    want.redistribution.preemptible = True
    want.redistribution.may_migrate = True
    want.redistribution.min_runtime.seconds = 600
    assert spec == want


def test_unset_submit_flags_stay_unset_on_the_wire() -> None:
    spec = parse.build_gpr_spec(parse.SubmitOptions(workspace="ran"))
    assert spec.shape.count == 1
    assert not spec.HasField("duration")  # unset means until cancelled: not "zero seconds"
    assert spec.placement.policy == pb.PLACEMENT_POLICY_UNSPECIFIED
    assert spec.priority_tier == pb.PRIORITY_TIER_UNSPECIFIED
    assert spec.replicas == 0
    assert spec.shape.fraction == 0


def test_redistributable_flag() -> None:
    spec = parse.build_gpr_spec(parse.SubmitOptions(workspace="ran", pinned=False, fraction=0.25))
    assert spec.placement.policy == pb.PLACEMENT_POLICY_REDISTRIBUTABLE
    assert spec.shape.fraction == 0.25


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        ({"duration": "5x"}, "--duration"),
        ({"min_runtime": "soon"}, "--min-runtime"),
        ({"spill": ["core", "moon"]}, "--spill"),
        ({"labels": ["a=1", "a=2"]}, "--label"),
        ({"fraction": 1.5}, "--fraction"),
        ({"priority": "medium"}, "--priority"),
        ({"min_memory": "40GB"}, "--min-memory"),
        ({"sharing": "shared"}, "--sharing"),
        ({"ports": ["http"]}, "--port"),
    ],
)
def test_submit_errors_name_the_flag(options: dict[str, Any], flag: str) -> None:
    with pytest.raises(parse.FlagError) as err:
        parse.build_gpr_spec(parse.SubmitOptions(workspace="ran", **options))
    assert err.value.flag == flag


def test_build_workspace_and_site() -> None:
    ws = parse.build_workspace("ml", weight=2, max_gpus=16, guaranteed=4, regions=["eu"])
    assert ws == pb.Workspace(
        name="ml", fair_share_weight=2, quota=pb.Quota(max_gpus=16, guaranteed_gpus=4), allowed_regions=["eu"]
    )
    with pytest.raises(parse.FlagError) as err:
        parse.build_workspace("ml", weight=0)
    assert err.value.flag == "--weight"

    site = parse.build_site("edge-2", tier="FAR-EDGE", region="eu", prices=["H100 80GB HBM3=2.5"])
    assert site.tier == pb.SITE_TIER_FAR_EDGE
    assert dict(site.price_per_gpu_hour) == {"H100 80GB HBM3": 2.5}
    with pytest.raises(parse.FlagError) as err:
        parse.build_site("edge-2", tier="edge", region="eu")
    assert err.value.flag == "--tier"


# --- exit codes ------------------------------------------------------------------------------------

EXPECTED_EXIT = {
    grpc.StatusCode.OK: 0,
    grpc.StatusCode.INVALID_ARGUMENT: 2,
    grpc.StatusCode.NOT_FOUND: 3,
    grpc.StatusCode.FAILED_PRECONDITION: 4,
    grpc.StatusCode.ALREADY_EXISTS: 4,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 4,
    grpc.StatusCode.PERMISSION_DENIED: 4,
    grpc.StatusCode.ABORTED: 4,
    grpc.StatusCode.UNAVAILABLE: 5,
    grpc.StatusCode.DEADLINE_EXCEEDED: 5,
}


@pytest.mark.parametrize("status", list(grpc.StatusCode), ids=lambda s: s.name)
def test_exit_code_for_every_status(status: grpc.StatusCode) -> None:
    assert exit_code_for(status) == EXPECTED_EXIT.get(status, 1)


def test_error_lines_are_one_line_and_name_the_status() -> None:
    assert (
        rpc_error_line(grpc.StatusCode.NOT_FOUND, "gpr g-1 does not exist", "c:1 (from default)")
        == "error: NOT_FOUND: gpr g-1 does not exist"
    )
    assert (
        rpc_error_line(grpc.StatusCode.FAILED_PRECONDITION, "host h1 is offline;\n  not drained", "c")
        == "error: FAILED_PRECONDITION: host h1 is offline; not drained"
    )
    assert rpc_error_line(grpc.StatusCode.INTERNAL, "", "c") == "error: INTERNAL: (no details)"
    # When the controller is unreachable, say which address was tried and where it came from.
    assert (
        rpc_error_line(grpc.StatusCode.UNAVAILABLE, "connection refused", "10.0.0.1:7443 (from --controller)")
        == "error: UNAVAILABLE: controller 10.0.0.1:7443 (from --controller): connection refused"
    )


def test_status_of_an_error_that_is_not_a_call() -> None:
    assert status_of(grpc.RpcError("odd")) == (grpc.StatusCode.UNKNOWN, "odd")


def test_every_exit_code_is_explained() -> None:
    assert set(EXIT_CODE_MEANINGS) == set(ExitCode)


# --- rendering -------------------------------------------------------------------------------------


def gpr(**spec: Any) -> pb.Gpr:
    return pb.Gpr(id="gpr-1", spec=pb.GprSpec(workspace="ran", **spec))


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        ({"shape": pb.GpuShape(count=2, models=["H100 80GB HBM3"])}, "2x H100 80GB HBM3"),
        ({"shape": pb.GpuShape(count=1, mig_profile="3g.40gb", models=["A100"])}, "1x 3g.40gb"),
        ({"shape": pb.GpuShape(count=1, fraction=0.25)}, "1x 0.25 of a GPU"),
        ({"shape": pb.GpuShape(count=1, models=["A100", "H100"])}, "1x A100 or H100"),
        ({"shape": pb.GpuShape(count=4, min_memory_mib=40960), "replicas": 3}, "4x any GPU >=40GiB, 3 replicas"),
    ],
)
def test_show_shape(spec: dict[str, Any], text: str) -> None:
    assert output.show_shape(gpr(**spec).spec) == text


def test_show_priority() -> None:
    assert output.show_priority(pb.GprSpec(priority_tier=pb.PRIORITY_TIER_HIGH, priority=10)) == "HIGH:10"
    assert output.show_priority(pb.GprSpec(priority_tier=pb.PRIORITY_TIER_LOW)) == "LOW"
    assert output.show_priority(pb.GprSpec()) == "-"


def test_show_cells() -> None:
    assert output.show_age(ts(NOW - 3 * 3600 - 125), NOW) == "3h2m"
    assert output.show_age(ts(NOW + 10), NOW) == "0s"  # clock skew is not a negative age
    assert output.show_age(pb.Gpr().created_at, NOW) == "-"
    assert output.show_time(ts(0)) == "-"
    assert output.show_time(ts(1_700_000_000)) == "2023-11-14T22:13:20Z"
    assert output.show_mib(81920) == "80GiB"
    assert output.show_mib(81559) == "81559MiB"
    duration = pb.GprSpec().duration
    duration.seconds, duration.nanos = 1, 500_000_000
    assert output.show_duration(duration) == "1.5s"


def test_show_change_strips_any_state_prefix() -> None:
    assert output.show_change("HOST_STATE_READY", "HOST_STATE_CORDONED") == "READY->CORDONED"
    assert output.show_change("", "GPR_STATE_PENDING") == "->PENDING"  # a new GPR has no "from"
    assert output.show_change("PENDING", "PLACED") == "PENDING->PLACED"
    assert output.show_change("", "") == "-"


def test_show_gpus_groups_by_model_and_counts_the_unwell() -> None:
    inv = pb.Inventory()
    for i in range(8):
        inv.gpus.add(index=i, model="H100 80GB HBM3", health=pb.GPU_HEALTH_HEALTHY)
    inv.gpus.add(index=8, model="L4", health=pb.GPU_HEALTH_UNHEALTHY)
    assert output.show_gpus(inv) == "8x H100 80GB HBM3, 1x L4 (1 not healthy)"
    assert output.show_gpus(pb.Inventory()) == "-"


def test_gprs_table_columns_and_cells() -> None:
    g = gpr(
        shape=pb.GpuShape(count=2, models=["H100 80GB HBM3"]),
        priority_tier=pb.PRIORITY_TIER_HIGH,
        priority=10,
    )
    g.state = pb.GPR_STATE_RUNNING
    g.created_at.seconds = int(NOW - 300)
    g.allocations.add(host_id="host-b")
    g.allocations.add(host_id="host-a")
    g.allocations.add(host_id="host-b")
    header, row = render(output.gprs_table([g], NOW)).splitlines()
    assert cells(header) == ["ID", "WORKSPACE", "STATE", "PRIORITY", "SHAPE", "HOSTS", "AGE"]
    assert cells(row) == ["gpr-1", "ran", "RUNNING", "HIGH:10", "2x H100 80GB HBM3", "host-b, host-a", "5m"]


def test_hosts_table() -> None:
    host = pb.Host(id="host-a", site="edge-1", state=pb.HOST_STATE_CORDONED, connected=True)
    host.desired_revision, host.applied_revision = 12, 11
    for i in range(8):
        host.inventory.gpus.add(index=i, model="H100 80GB HBM3", health=pb.GPU_HEALTH_HEALTHY)
    header, row = render(output.hosts_table([host], NOW)).splitlines()
    assert cells(header) == ["ID", "SITE", "STATE", "CONNECTED", "GPUS", "DESIRED/APPLIED", "LAST SEEN"]
    assert cells(row) == ["host-a", "edge-1", "CORDONED", "yes", "8x H100 80GB HBM3", "12/11", "-"]


def test_server_text_is_never_read_as_markup() -> None:
    g = pb.Gpr(id="[bold]gpr-1[/bold]", state=pb.GPR_STATE_PENDING)
    assert "[bold]gpr-1[/bold]" in render(output.gprs_table([g], NOW))


def test_piped_tables_are_wide_enough_not_to_cut_rows() -> None:
    console = output.make_console(io.StringIO())  # a StringIO is not a terminal
    assert console.width == output.PIPE_WIDTH
    long_id = "gpr-" + "x" * 100
    console.print(output.gprs_table([pb.Gpr(id=long_id)], NOW))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert long_id in text and "…" not in text


def test_watch_line() -> None:
    ev = provision_pb2.GprEvent(revision=42, gpr=pb.Gpr(id="gpr-1", state=pb.GPR_STATE_PLACED))
    ev.event.time.seconds = 1_700_000_000
    ev.event.from_state, ev.event.to_state = "GPR_STATE_PENDING", "GPR_STATE_PLACED"
    ev.event.reason, ev.event.message = "Placed", "on host-a"
    assert output.watch_line(ev) == "      42  2023-11-14T22:13:20Z  gpr-1  PENDING->PLACED  Placed  on host-a"
    # An event that is not a state change says where the GPR stands instead.
    other = provision_pb2.GprEvent(revision=43, gpr=pb.Gpr(id="gpr-1", state=pb.GPR_STATE_RUNNING))
    other.event.reason = "Scaled"
    assert output.watch_line(other) == "      43  -  gpr-1  RUNNING  Scaled"


def test_explanation_view() -> None:
    ex = provision_pb2.Explanation(
        gpr_id="gpr-1",
        state=pb.GPR_STATE_PENDING,
        summary="No host in eu has 2 free H100s.",
        hosts_considered=12,
        queue_position=3,
        preemption_possible=True,
        preemption_detail="would evict gpr-9 (LOW:5)",
    )
    ex.exclusions.add(constraint="region", hosts_excluded=8, detail="outside eu")
    alt = ex.alternatives.add(kind="wait", description="gpr-7 expires soon")
    alt.estimated_wait.seconds = 1800
    text = render(output.explanation_view(ex))
    assert "GPR gpr-1 is PENDING, number 3 in the pending queue" in text
    assert "No host in eu has 2 free H100s." in text
    assert "12 hosts considered, 0 feasible." in text
    assert ["region", "8", "outside eu"] in [cells(line) for line in text.splitlines()]
    assert "Preemption: possible: would evict gpr-9 (LOW:5)" in text
    assert ["wait", "gpr-7 expires soon", "-", "-", "-", "-", "30m"] in [cells(line) for line in text.splitlines()]
    assert "No alternatives suggested." in render(output.explanation_view(provision_pb2.Explanation()))


def test_json_and_yaml_are_message_to_dict_with_proto_field_names() -> None:
    g = pb.Gpr(id="gpr-1", state=pb.GPR_STATE_FAILED, state_reason="host rejected it", revision=7)
    one = json.loads(output.dump(output.to_data(g), output.OutputFormat.json))
    assert one == MessageToDict(g, preserving_proto_field_name=True)
    assert one["state_reason"] == "host rejected it" and one["state"] == "GPR_STATE_FAILED"
    many = yaml.safe_load(output.dump(output.to_data([g, g]), output.OutputFormat.yaml))
    assert many == [one, one]
    assert output.to_data([]) == []


def test_detail_views_leave_out_unset_rows() -> None:
    text = render(output.gpr_view(gpr(shape=pb.GpuShape(count=1)), NOW))
    assert "Workspace" in text and "until cancelled" in text
    for unset in ("Created", "Expires", "Tier", "Command"):
        assert unset not in text
    ws = render(output.workspace_view(pb.Workspace(name="ml", allowed_regions=["eu-west-1"]), NOW))
    assert "eu-west-1" in ws and "unlimited" in ws


# --- paging and waiting ----------------------------------------------------------------------------


class PagedList:
    """A fake list RPC over ``total`` items, recording the page sizes asked for."""

    def __init__(self, total: int, server_page: int = 100) -> None:
        self.items = list(range(total))
        self.server_page = server_page
        self.sizes: list[int] = []

    def __call__(self, token: str, size: int) -> tuple[Sequence[int], str]:
        self.sizes.append(size)
        start = int(token or 0)
        end = start + min(size or self.server_page, self.server_page)
        return self.items[start:end], (str(end) if end < len(self.items) else "")


def test_collect_pages_follows_tokens_to_the_end() -> None:
    fetch = PagedList(250)
    assert client.collect_pages(fetch) == list(range(250))
    assert fetch.sizes == [0, 0, 0]  # 0: the server's default page


def test_collect_pages_respects_the_limit_and_asks_for_no_more() -> None:
    fetch = PagedList(250)
    assert client.collect_pages(fetch, limit=150) == list(range(150))
    assert fetch.sizes == [150, 50]
    small = PagedList(250)
    assert client.collect_pages(small, limit=5) == list(range(5))
    assert small.sizes == [5]
    huge = PagedList(10)
    assert client.collect_pages(huge, limit=5000) == list(range(10))
    assert huge.sizes == [client.MAX_PAGE_SIZE]


def test_collect_pages_stops_on_a_repeated_token() -> None:
    with pytest.raises(CliError, match="twice"):
        client.collect_pages(lambda token, size: ([1], "same"))


@pytest.mark.parametrize("state", [v.number for v in pb.GprState.DESCRIPTOR.values])
def test_settled_states(state: int) -> None:
    name = pb.GprState.Name(state)  # type: ignore[arg-type]
    settled = name in {"GPR_STATE_RUNNING", "GPR_STATE_RELEASED", "GPR_STATE_EXPIRED", "GPR_STATE_FAILED"}
    settled |= name == "GPR_STATE_CANCELLED"
    assert client.is_settled(state) is settled  # type: ignore[arg-type]


def test_check_outcome() -> None:
    client.check_outcome(pb.Gpr(id="g", state=pb.GPR_STATE_RUNNING))
    client.check_outcome(pb.Gpr(id="g", state=pb.GPR_STATE_RELEASED))
    with pytest.raises(CliError, match="GPR g ended FAILED: no GPU fits") as err:
        client.check_outcome(pb.Gpr(id="g", state=pb.GPR_STATE_FAILED, state_reason="no GPU fits"))
    assert err.value.exit_code is ExitCode.ERROR


class FakeWatch:
    """Stands in for the WatchGprs stub method: replays events and records the request and cancel."""

    def __init__(self, events: Sequence[provision_pb2.GprEvent]) -> None:
        self.events = events
        self.requests: list[provision_pb2.WatchGprsRequest] = []
        self.cancelled = False

    def WatchGprs(self, request: provision_pb2.WatchGprsRequest, timeout: float) -> FakeWatch:
        self.requests.append(request)
        return self

    def __iter__(self) -> Iterator[provision_pb2.GprEvent]:
        return iter(self.events)

    def cancel(self) -> None:
        self.cancelled = True


def state_event(revision: int, gpr_id: str, state: int) -> provision_pb2.GprEvent:
    return provision_pb2.GprEvent(revision=revision, gpr=pb.Gpr(id=gpr_id, state=state))  # type: ignore[arg-type]


def test_wait_follows_the_gpr_from_its_submit_revision_until_it_runs() -> None:
    submitted = pb.Gpr(id="g", state=pb.GPR_STATE_PENDING, revision=500)
    watch = FakeWatch(
        [
            state_event(501, "g", pb.GPR_STATE_PLACED),
            state_event(502, "g", pb.GPR_STATE_RUNNING),
            state_event(503, "g", pb.GPR_STATE_RELEASED),  # never read: the wait stops at RUNNING
        ]
    )
    seen: list[int] = []
    final = client.wait_for_gpr(watch, submitted, 60, lambda ev: seen.append(ev.revision))  # type: ignore[arg-type]
    assert final.state == pb.GPR_STATE_RUNNING
    assert seen == [501, 502]
    assert watch.requests == [provision_pb2.WatchGprsRequest(gpr_id="g", since_revision=500)]
    assert watch.cancelled


def test_wait_reports_a_watch_that_ends_early() -> None:
    watch = FakeWatch([state_event(501, "g", pb.GPR_STATE_PLACED)])
    with pytest.raises(CliError, match="ended the watch while GPR g was PLACED"):
        client.wait_for_gpr(watch, pb.Gpr(id="g", state=pb.GPR_STATE_PENDING), 60, lambda ev: None)  # type: ignore[arg-type]


def test_wait_on_a_settled_gpr_does_not_watch() -> None:
    watch = FakeWatch([])
    running = pb.Gpr(id="g", state=pb.GPR_STATE_RUNNING)
    assert client.wait_for_gpr(watch, running, 60, lambda ev: None) is running  # type: ignore[arg-type]
    assert watch.requests == []


# --- the command line as a whole -------------------------------------------------------------------


def gridctl(*args: str, env: dict[str, str] | None = None) -> Any:
    # No config file from the developer's home may leak in: point GRIDMESH_CONFIG at nothing usable.
    base = {"GRIDMESH_CONTROLLER": "", "GRIDMESH_CONFIG": "", "HOME": "/nonexistent"}
    return CliRunner().invoke(app, list(args), env={**base, **(env or {})}, prog_name="gridctl")


def test_help_lists_the_exit_codes() -> None:
    result = gridctl("--help", env={"TERMINAL_WIDTH": "200"})
    assert result.exit_code == 0
    assert "Exit codes" in result.stdout
    for code in ExitCode:
        assert f"{int(code)}  " in result.stdout


def test_malformed_duration_is_a_usage_error_naming_the_flag() -> None:
    result = gridctl("gpr", "submit", "-w", "ran", "--duration", "5x", "--", "python", "serve.py")
    assert result.exit_code == 2
    assert "--duration" in result.stderr and "1h30m" in result.stderr


def test_missing_workspace_is_a_usage_error() -> None:
    assert gridctl("gpr", "submit", "--", "python").exit_code == 2


def test_bad_config_is_a_one_line_usage_error(tmp_path: Path) -> None:
    result = gridctl("gpr", "list", env={"GRIDMESH_CONFIG": str(tmp_path / "none.toml")})
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: config {tmp_path / 'none.toml'} (from GRIDMESH_CONFIG) does not exist"
    ]


def test_unreachable_controller_exits_5_with_one_line() -> None:
    with socket.socket() as sock:  # a port nobody listens on: bind, note it, close
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    result = gridctl("--controller", f"127.0.0.1:{port}", "--timeout", "5", "gpr", "get", "gpr-1")
    assert result.exit_code == 5
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: UNAVAILABLE: controller 127.0.0.1:{port} (from --controller): ")
    assert time.monotonic() - started < 5  # a refused connection fails fast, not at the deadline
