"""How gridctl shows what the controller answered: rich tables for people, json and yaml for programs.

Rules:
- json and yaml are ``MessageToDict(preserving_proto_field_name=True)`` and nothing else, so they
  stay the proto3 JSON mapping (enums by wire name, 64-bit numbers as strings) and round-trip.
- Tables show enums short: states upper case (``RUNNING``), kinds lower case (``far_edge``); an
  empty or unset value shows as ``-``.
- Every function here is pure: it takes messages (and the time "now", for ages) and returns text or a
  rich renderable. Printing happens in main.
- Server text never goes through rich markup: the consoles are made with markup off, so a message
  holding ``[bold]`` is shown as written.
"""

from __future__ import annotations

import enum
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import yaml
from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from gridmesh.cli.enums import (
    ALLOCATION_STATE,
    GPR_STATE,
    GPU_HEALTH,
    HOST_STATE,
    PLACEMENT_POLICY,
    PRIORITY_TIER,
    SHARING_MODE,
    SITE_TIER,
)
from gridmesh.cli.parse import format_seconds
from gridmesh.v1 import provision_pb2, types_pb2

# Width of tables when stdout is not a terminal: wide enough that `gridctl ... | grep` sees whole rows.
PIPE_WIDTH = 200


class OutputFormat(enum.StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


def make_console(file: TextIO) -> Console:
    """A console for ``file``: the terminal's width on a terminal, ``PIPE_WIDTH`` otherwise."""
    return Console(
        file=file,
        width=None if file.isatty() else PIPE_WIDTH,
        markup=False,
        emoji=False,
        highlight=False,
    )


# --- json and yaml ---------------------------------------------------------------------------------


def to_data(messages: Message | Sequence[Message]) -> dict[str, Any] | list[dict[str, Any]]:
    """One message -> a dict; a list of messages -> a list of dicts."""
    if isinstance(messages, Message):
        return MessageToDict(messages, preserving_proto_field_name=True)
    return [MessageToDict(m, preserving_proto_field_name=True) for m in messages]


def dump(data: dict[str, Any] | list[dict[str, Any]], fmt: OutputFormat) -> str:
    """Pretty json or block yaml of ``to_data``'s result, ending in a newline."""
    if fmt is OutputFormat.yaml:
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


# --- cells -----------------------------------------------------------------------------------------


def show_time(ts: timestamp_pb2.Timestamp) -> str:
    """``2026-03-01T12:00:05Z`` (UTC, whole seconds), ``-`` when unset."""
    if ts.seconds == 0 and ts.nanos == 0:
        return "-"
    return datetime.fromtimestamp(ts.seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def show_age(ts: timestamp_pb2.Timestamp, now: float) -> str:
    """How long ago ``ts`` was, in at most two units (``3h12m``); ``-`` when unset."""
    if ts.seconds == 0 and ts.nanos == 0:
        return "-"
    return format_seconds(int(now - ts.seconds), max_units=2)


def show_duration(d: duration_pb2.Duration) -> str:
    """``1h30m``, the form the flags take; ``-`` when zero or unset."""
    if d.seconds == 0 and d.nanos == 0:
        return "-"
    if d.nanos:
        return f"{d.seconds + d.nanos / 1e9:g}s"
    return format_seconds(d.seconds)


def show_mib(mib: int) -> str:
    """``80GiB`` when whole GiB, else ``81559MiB``: exact either way."""
    if mib and mib % 1024 == 0:
        return f"{mib // 1024}GiB"
    return f"{mib}MiB"


def show_map(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items()) or "-"


def show_list(values: Iterable[str]) -> str:
    return ", ".join(values) or "-"


def show_priority(spec: types_pb2.GprSpec) -> str:
    """``HIGH:10``; the tier alone when no number was given; ``-`` when neither."""
    if spec.priority_tier == types_pb2.PRIORITY_TIER_UNSPECIFIED:
        return str(spec.priority) if spec.priority else "-"
    tier = PRIORITY_TIER.show(spec.priority_tier)
    return f"{tier}:{spec.priority}" if spec.priority else tier


def show_shape(spec: types_pb2.GprSpec) -> str:
    """What one replica gets, then the replica count: ``2x H100 80GB HBM3``, ``1x 3g.40gb``,
    ``1x 0.25 of A100`` or ``4x any GPU >=40GiB, 3 replicas``."""
    shape = spec.shape
    models = " or ".join(shape.models)
    if shape.mig_profile:
        what = shape.mig_profile
    elif shape.fraction:
        what = f"{shape.fraction:g} of {models or 'a GPU'}"
    else:
        what = models or "any GPU"
    if shape.min_memory_mib and not shape.mig_profile:
        what += f" >={show_mib(shape.min_memory_mib)}"
    text = f"{shape.count}x {what}"
    if spec.replicas > 1:
        text += f", {spec.replicas} replicas"
    return text


def show_hosts(gpr: types_pb2.Gpr) -> str:
    """The hosts its allocations sit on, each once, in allocation order."""
    return show_list(dict.fromkeys(a.host_id for a in gpr.allocations if a.host_id))


def show_gpus(inventory: types_pb2.Inventory) -> str:
    """``8x H100 80GB HBM3``, models in the host's order; unhealthy or unclean GPUs are counted after."""
    if not inventory.gpus:
        return "-"
    by_model = Counter(gpu.model or "unknown" for gpu in inventory.gpus)
    text = ", ".join(f"{count}x {model}" for model, count in by_model.items())
    sick = sum(1 for gpu in inventory.gpus if gpu.health not in (types_pb2.GPU_HEALTH_HEALTHY, 0))
    if sick:
        text += f" ({sick} not healthy)"
    return text


def show_change(from_state: str, to_state: str) -> str:
    """``PENDING->PLACED`` for an event's states, which travel as wire names or short names."""
    if not from_state and not to_state:
        return "-"
    # Events of any subject carry states; strip whichever wire prefix they use. A new object has no
    # "from" state: "->PENDING".
    return f"{_short_state(from_state)}->{_short_state(to_state)}"


def _short_state(name: str) -> str:
    for prefix in (GPR_STATE.prefix, HOST_STATE.prefix, ALLOCATION_STATE.prefix):
        if name.startswith(prefix):
            return name.removeprefix(prefix)
    return name


# --- tables ----------------------------------------------------------------------------------------


def _table(*headers: str) -> Table:
    """A plain, borderless table (like kubectl's) that wraps long cells rather than cutting them."""
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for header in headers:
        # IDs must stay whole to be copied; other columns may fold when a terminal is narrow.
        table.add_column(header, overflow="fold", no_wrap=header in ("ID", "NAME"))
    return table


def _details(rows: Iterable[tuple[str, str]]) -> Table:
    """A two-column ``key  value`` grid; rows with an empty value are left out."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for key, value in rows:
        if value:
            grid.add_row(key, value)
    return grid


def gprs_table(gprs: Sequence[types_pb2.Gpr], now: float) -> Table:
    table = _table("ID", "WORKSPACE", "STATE", "PRIORITY", "SHAPE", "HOSTS", "AGE")
    for gpr in gprs:
        table.add_row(
            gpr.id,
            gpr.spec.workspace,
            GPR_STATE.show(gpr.state),
            show_priority(gpr.spec),
            show_shape(gpr.spec),
            show_hosts(gpr),
            show_age(gpr.created_at, now),
        )
    return table


def gpr_view(gpr: types_pb2.Gpr, now: float) -> RenderableType:
    """One GPR: its spec and state, then a table of its allocations."""
    spec = gpr.spec
    state = GPR_STATE.show(gpr.state) + (f" ({gpr.state_reason})" if gpr.state_reason else "")
    placement = spec.placement
    details = _details(
        [
            ("ID", gpr.id),
            ("Name", spec.name),
            ("Workspace", spec.workspace),
            ("State", state),
            ("Priority", show_priority(spec)),
            ("Shape", show_shape(spec)),
            ("Min compute capability", spec.shape.min_compute_capability),
            ("Sharing", _blank(SHARING_MODE.show(spec.sharing))),
            ("Placement", _blank(PLACEMENT_POLICY.show(placement.policy))),
            ("Tier", _blank(SITE_TIER.show(placement.tier))),
            ("Site", placement.site),
            ("Spill to", ", ".join(SITE_TIER.show(t) for t in placement.tier_preference)),
            ("Origin site", placement.origin_site),
            ("Regions", ", ".join(placement.allowed_regions)),
            ("Duration", show_duration(spec.duration) if spec.HasField("duration") else "until cancelled"),
            ("Preemptible", _yes_no(spec.redistribution.preemptible)),
            ("May migrate", _yes_no(spec.redistribution.may_migrate)),
            ("Min runtime", _blank(show_duration(spec.redistribution.min_runtime))),
            ("Command", " ".join(spec.workload.command)),
            ("Env", ", ".join(spec.workload.env)),  # names only: values may be secrets
            ("Ports", ", ".join(f"{p.name}:{p.port}/{p.protocol}" for p in spec.workload.ports)),
            ("Labels", ", ".join(f"{k}={v}" for k, v in spec.labels.items())),
            ("Model artifact", spec.model_artifact),
            ("Created", _when(gpr.created_at, now)),
            ("Running since", _blank(show_time(gpr.running_since))),
            ("Expires", _blank(show_time(gpr.expires_at))),
            ("Revision", str(gpr.revision)),
        ]
    )
    if not gpr.allocations:
        return details
    allocations = _table("ID", "REPLICA", "HOST", "SITE", "GPUS", "MIG", "STATE", "REASON")
    for a in gpr.allocations:
        allocations.add_row(
            a.id,
            str(a.replica),
            a.host_id or "-",
            a.site or "-",
            ",".join(str(i) for i in a.gpu_indexes) or "-",
            a.mig_profile or "-",
            ALLOCATION_STATE.show(a.state),
            a.state_reason or "-",
        )
    return Group(details, Text(""), allocations)


def hosts_table(hosts: Sequence[types_pb2.Host], now: float) -> Table:
    table = _table("ID", "SITE", "STATE", "CONNECTED", "GPUS", "DESIRED/APPLIED", "LAST SEEN")
    for host in hosts:
        table.add_row(
            host.id,
            host.site,
            HOST_STATE.show(host.state),
            _yes_no(host.connected),
            show_gpus(host.inventory),
            f"{host.desired_revision}/{host.applied_revision}",
            show_age(host.last_seen, now),
        )
    return table


def host_view(host: types_pb2.Host, now: float) -> RenderableType:
    """One host: state and inventory, then a table of its GPUs."""
    inv = host.inventory
    state = HOST_STATE.show(host.state) + (f" ({host.state_reason})" if host.state_reason else "")
    details = _details(
        [
            ("ID", host.id),
            ("Site", host.site),
            ("State", state),
            ("Connected", _yes_no(host.connected)),
            ("Last seen", _when(host.last_seen, now)),
            ("Revisions", f"desired {host.desired_revision}, applied {host.applied_revision}"),
            ("Hostname", inv.hostname),
            ("Underlay address", host.underlay_address),
            ("Hardware", inv.hw_backend),
            ("Agent version", inv.agent_version),
            ("CPUs / memory", f"{inv.cpu_count} / {show_mib(inv.memory_mib)}" if inv.cpu_count else ""),
            ("DPU", _yes_no(inv.has_dpu)),
            ("GPUs", show_gpus(inv)),
            ("Allocations", ", ".join(host.allocation_ids)),
            ("Overlays", "; ".join(
                f"{i.workspace} {i.addresses[0] if i.addresses else '(no address)'} via {i.name}, "
                f"{len([p for p in i.peers if p.allowed_ips])} peers" for i in host.overlay)),
            ("Revision", str(host.revision)),
        ]
    )
    if not inv.gpus:
        return details
    gpus = _table("INDEX", "MODEL", "MEMORY", "CC", "MIG", "HEALTH", "UUID")
    for gpu in inv.gpus:
        if gpu.mig_enabled:
            mig = ", ".join(m.profile for m in gpu.mig_instances) or "enabled, empty"
        else:
            mig = "capable" if gpu.mig_capable else "-"
        health = GPU_HEALTH.show(gpu.health) + (f" ({gpu.health_reason})" if gpu.health_reason else "")
        gpus.add_row(
            str(gpu.index),
            gpu.model,
            show_mib(gpu.memory_mib),
            gpu.compute_capability or "-",
            mig,
            health,
            gpu.uuid,
        )
    return Group(details, Text(""), gpus)


def workspaces_table(workspaces: Sequence[types_pb2.Workspace], now: float) -> Table:
    table = _table("NAME", "WEIGHT", "MAX GPUS", "GUARANTEED", "BORROW LIMIT", "REGIONS", "OVERLAY", "AGE")
    for ws in workspaces:
        table.add_row(
            ws.name,
            f"{ws.fair_share_weight or 1:g}",
            str(ws.quota.max_gpus or "unlimited"),
            str(ws.quota.guaranteed_gpus),
            str(ws.quota.borrow_limit),
            show_list(ws.allowed_regions),
            ws.overlay_cidr or "-",
            show_age(ws.created_at, now),
        )
    return table


def workspace_view(ws: types_pb2.Workspace, now: float) -> RenderableType:
    return _details(
        [
            ("Name", ws.name),
            ("Description", ws.description),
            ("Fair-share weight", f"{ws.fair_share_weight or 1:g}"),
            ("Max GPUs", str(ws.quota.max_gpus or "unlimited")),
            ("Guaranteed GPUs", str(ws.quota.guaranteed_gpus)),
            ("Borrow limit", str(ws.quota.borrow_limit)),
            ("Regions", ", ".join(ws.allowed_regions) or "any"),
            ("Overlay CIDR", ws.overlay_cidr),
            ("Labels", ", ".join(f"{k}={v}" for k, v in ws.labels.items())),
            ("Created", _when(ws.created_at, now)),
            ("Revision", str(ws.revision)),
        ]
    )


def sites_table(sites: Sequence[types_pb2.Site]) -> Table:
    table = _table("NAME", "TIER", "REGION", "PRICE/GPU-HOUR", "LATENCY MS", "LABELS")
    for site in sites:
        table.add_row(
            site.name,
            SITE_TIER.show(site.tier),
            site.region or "-",
            show_map({k: f"{v:g}" for k, v in site.price_per_gpu_hour.items()}),
            show_map({k: f"{v:g}" for k, v in site.latency_ms.items()}),
            show_map(site.labels),
        )
    return table


def site_view(site: types_pb2.Site) -> RenderableType:
    return _details(
        [
            ("Name", site.name),
            ("Tier", SITE_TIER.show(site.tier)),
            ("Region", site.region),
            ("Price per GPU-hour", ", ".join(f"{k}={v:g}" for k, v in site.price_per_gpu_hour.items())),
            ("Latency (ms)", ", ".join(f"{k}={v:g}" for k, v in site.latency_ms.items())),
            ("Labels", ", ".join(f"{k}={v}" for k, v in site.labels.items())),
            ("Revision", str(site.revision)),
        ]
    )


def events_table(events: Sequence[types_pb2.Event]) -> Table:
    table = _table("REV", "TIME", "KIND", "SUBJECT", "CHANGE", "REASON", "MESSAGE")
    for ev in events:
        table.add_row(
            str(ev.revision),
            show_time(ev.time),
            ev.kind or "-",
            ev.subject or "-",
            show_change(ev.from_state, ev.to_state),
            ev.reason or "-",
            ev.message or "-",
        )
    return table


def watch_line(ev: provision_pb2.GprEvent) -> str:
    """One GPR event as one line: revision, time, GPR, state change, reason, message."""
    event = ev.event
    gpr_id = ev.gpr.id or event.subject or "-"
    if event.from_state or event.to_state:
        change = show_change(event.from_state, event.to_state)
    else:
        change = GPR_STATE.show(ev.gpr.state)  # not a state change: say where the GPR stands
    fields = [f"{ev.revision:>8}", show_time(event.time), gpr_id, change, event.reason or "-"]
    if event.message:
        fields.append(event.message)
    return "  ".join(fields)


def explanation_view(ex: provision_pb2.Explanation) -> RenderableType:
    """Why a GPR is where it is: the summary, what ruled hosts out, and what would work instead."""
    headline = f"GPR {ex.gpr_id} is {GPR_STATE.show(ex.state)}"
    if ex.queue_position:
        headline += f", number {ex.queue_position} in the pending queue"
    parts: list[RenderableType] = [Text(headline, style="bold")]
    if ex.summary:
        parts.append(Text(ex.summary))
    parts.append(Text(f"{ex.hosts_considered} hosts considered, {ex.hosts_feasible} feasible."))

    if ex.exclusions:
        exclusions = _table("CONSTRAINT", "HOSTS EXCLUDED", "DETAIL")
        for exc in ex.exclusions:
            exclusions.add_row(exc.constraint, str(exc.hosts_excluded), exc.detail or "-")
        parts += [Text(""), Text("Hosts ruled out", style="bold"), exclusions]

    preemption = "possible" if ex.preemption_possible else "not possible"
    if ex.preemption_detail:
        preemption += f": {ex.preemption_detail}"
    parts += [Text(""), Text(f"Preemption: {preemption}")]

    if ex.alternatives:
        alternatives = _table("KIND", "SUGGESTION", "SITE", "TIER", "MIG PROFILE", "GPU MODEL", "EST. WAIT")
        for alt in ex.alternatives:
            alternatives.add_row(
                alt.kind,
                alt.description or "-",
                alt.site or "-",
                SITE_TIER.show(alt.tier),
                alt.mig_profile or "-",
                alt.gpu_model or "-",
                show_duration(alt.estimated_wait),
            )
        parts += [Text(""), Text("Alternatives", style="bold"), alternatives]
    else:
        parts.append(Text("No alternatives suggested."))
    return Group(*parts)


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def _when(ts: timestamp_pb2.Timestamp, now: float) -> str:
    """``2026-03-01T12:00:05Z (3h2m ago)``, or empty when unset."""
    return _blank(show_time(ts)) and f"{show_time(ts)} ({show_age(ts, now)} ago)"


def _blank(text: str) -> str:
    """``-`` (unset) as empty, so that ``_details`` leaves the row out."""
    return "" if text == "-" else text
