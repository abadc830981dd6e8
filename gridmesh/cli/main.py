"""The ``gridctl`` command tree: typer wiring between the flags (parse), the controller (client) and the
screen (output). Decisions live in those modules; this one only connects them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any

import grpc
import typer
from google.protobuf.message import Message
from rich.console import RenderableType
from typer.core import TyperGroup

from gridmesh.cli.client import Session, check_outcome, collect_pages, wait_for_gpr
from gridmesh.cli.enums import GPR_STATE, HOST_STATE, SHARING_MODE, SITE_TIER
from gridmesh.cli.exits import (
    EXIT_CODE_MEANINGS,
    CliError,
    ExitCode,
    exit_code_for,
    rpc_error_line,
    status_of,
)
from gridmesh.cli.output import (
    OutputFormat,
    dump,
    events_table,
    explanation_view,
    gpr_view,
    gprs_table,
    host_view,
    hosts_table,
    make_console,
    site_view,
    sites_table,
    to_data,
    watch_line,
    workspace_view,
    workspaces_table,
)
from gridmesh.cli.parse import (
    DEFAULT_CONTROLLER,
    DURATION_FORM,
    FlagError,
    SubmitOptions,
    build_gpr_spec,
    build_site,
    build_workspace,
    format_seconds,
    parse_duration,
    parse_flag,
)
from gridmesh.v1 import admin_pb2, provision_pb2, types_pb2


class _GridctlGroup(TyperGroup):
    """The root command group; it turns failures into one line on stderr and an exit code.

    Catching here, rather than around ``app()``, keeps the behaviour for every way the app is
    invoked (the console script and tests alike) and still has the session at hand to name the
    controller address in the message.
    """

    # The context is typer's vendored click.Context, which typer does not export: hence Any.
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except grpc.RpcError as err:
            status, details = status_of(err)
            session = ctx.find_object(Session)
            controller = str(session.controller) if session is not None else "?"
            _stderr(rpc_error_line(status, details, controller))
            raise typer.Exit(exit_code_for(status)) from None
        except CliError as err:
            _stderr(f"error: {err}")
            raise typer.Exit(err.exit_code) from None


def _epilog() -> str:
    codes = "\n".join(f"{int(code)}  {meaning}" for code, meaning in EXIT_CODE_MEANINGS.items())
    return (
        f'Controller address: --controller, else $GRIDMESH_CONTROLLER, else controller = "host:port" '
        f"in $GRIDMESH_CONFIG or ~/.config/gridmesh/gridctl.toml, else {DEFAULT_CONTROLLER}.\n\n"
        f"Exit codes:\n{codes}"
    )


app = typer.Typer(
    cls=_GridctlGroup,
    name="gridctl",
    help="Operate a gridmesh GPU grid: provision requests, hosts, workspaces, sites and events.",
    epilog=_epilog(),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
gpr_app = typer.Typer(help="GPU provision requests (GPRs).", no_args_is_help=True)
host_app = typer.Typer(help="GPU hosts.", no_args_is_help=True)
workspace_app = typer.Typer(help="Workspaces and their quotas.", no_args_is_help=True)
site_app = typer.Typer(help="Sites.", no_args_is_help=True)
event_app = typer.Typer(help="The event log.", no_args_is_help=True)
app.add_typer(gpr_app, name="gpr")
app.add_typer(host_app, name="host")
app.add_typer(workspace_app, name="workspace")
app.add_typer(site_app, name="site")
app.add_typer(event_app, name="event")


@app.callback()
def root(
    ctx: typer.Context,
    controller: Annotated[
        str | None,
        typer.Option("--controller", metavar="ADDR", help="Controller address, host:port."),
    ] = None,
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", case_sensitive=False, help="Output format.")
    ] = OutputFormat.table,
    timeout: Annotated[float, typer.Option("--timeout", metavar="SECONDS", help="Deadline of each call.")] = 10.0,
) -> None:
    """Operate a gridmesh GPU grid."""
    if not timeout > 0:
        raise typer.BadParameter(f"{timeout:g} is not a number of seconds above 0", param_hint="'--timeout'")
    session = Session(controller, output, timeout)
    ctx.obj = session
    ctx.call_on_close(session.close)


# --- helpers -----------------------------------------------------------------------------------------


def _session(ctx: typer.Context) -> Session:
    session = ctx.find_object(Session)
    if session is None:  # only when a subcommand is invoked without the root callback
        raise CliError("gridctl was started without its root command")
    return session


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@contextmanager
def _blame_flags() -> Iterator[None]:
    """A FlagError from the parsers becomes typer's usage error (exit 2), naming the flag."""
    try:
        yield
    except FlagError as err:
        raise typer.BadParameter(err.message, param_hint=f"'{err.flag}'") from None


def _show(session: Session, result: Message | Sequence[Message], view: Callable[[], RenderableType]) -> None:
    """Print a result: ``view()`` as a table, or the messages as json or yaml."""
    if session.output is OutputFormat.table:
        make_console(sys.stdout).print(view())
    else:
        sys.stdout.write(dump(to_data(result), session.output))


def _show_line(session: Session, result: Message, line: str) -> None:
    """Print an action's result: one line for people, the whole message for programs."""
    if session.output is OutputFormat.table:
        print(line)
    else:
        sys.stdout.write(dump(to_data(result), session.output))


def _state_help(noun: str, choices: Sequence[str]) -> str:
    return f"Only {noun} in this state; repeatable. One of: {', '.join(choices)}."


# --- gpr -----------------------------------------------------------------------------------------------

_LIMIT_HELP = "Show at most this many; 0 shows all."


@gpr_app.command("submit", context_settings={"allow_interspersed_args": False})
def gpr_submit(
    ctx: typer.Context,
    workspace: Annotated[str, typer.Option("--workspace", "-w", help="Workspace to charge.")],
    command: Annotated[
        list[str] | None,
        typer.Argument(metavar="COMMAND", help="The workload's command, after --.", show_default=False),
    ] = None,
    name: Annotated[str, typer.Option(help="A name for people.")] = "",
    model: Annotated[
        list[str] | None,
        typer.Option("--model", metavar="MODEL", help="An acceptable GPU model; repeatable."),
    ] = None,
    count: Annotated[int, typer.Option(min=1, help="GPUs (or MIG instances) per replica.")] = 1,
    min_memory: Annotated[
        str | None, typer.Option(metavar="SIZE", help="Memory per GPU: 40GiB, 40960MiB; bare numbers: MiB.")
    ] = None,
    min_cc: Annotated[str | None, typer.Option(metavar="X.Y", help="Minimum compute capability, e.g. 8.0.")] = None,
    mig_profile: Annotated[str, typer.Option(help="MIG profile, e.g. 3g.40gb.")] = "",
    fraction: Annotated[float | None, typer.Option(help="Fraction of one GPU, between 0 and 1.")] = None,
    sharing: Annotated[
        str | None, typer.Option(metavar="MODE", help=f"One of: {', '.join(SHARING_MODE.choices())}.")
    ] = None,
    pinned: Annotated[
        bool | None,
        typer.Option(
            "--pinned/--redistributable",
            help="Pin to --tier/--site, or let the grid place it elsewhere.",
            show_default=False,
        ),
    ] = None,
    tier: Annotated[str | None, typer.Option(metavar="TIER", help=f"One of: {', '.join(SITE_TIER.choices())}.")] = None,
    site: Annotated[str, typer.Option(help="Pinned or preferred site.")] = "",
    spill: Annotated[
        list[str] | None, typer.Option(metavar="TIER", help="Tier to spill over to, in order; repeatable.")
    ] = None,
    origin_site: Annotated[str, typer.Option(help="Site latency is measured from.")] = "",
    region: Annotated[list[str] | None, typer.Option(metavar="REGION", help="Allowed region; repeatable.")] = None,
    priority: Annotated[
        str | None, typer.Option(metavar="TIER:N", help="e.g. high:10; low 1-100, medium 1-200, high 1-300.")
    ] = None,
    duration: Annotated[str | None, typer.Option(metavar="DURATION", help=f"How long; {DURATION_FORM}.")] = None,
    preemptible: Annotated[
        bool, typer.Option("--preemptible", help="May be preempted by higher-priority work.")
    ] = False,
    may_migrate: Annotated[bool, typer.Option("--may-migrate", help="May be moved to another host or site.")] = False,
    min_runtime: Annotated[
        str | None, typer.Option(metavar="DURATION", help="Not preempted before running this long.")
    ] = None,
    replicas: Annotated[int | None, typer.Option(min=1, help="Replicas, each with the full shape.")] = None,
    model_artifact: Annotated[str, typer.Option(help="Model artifact, for data locality.")] = "",
    label: Annotated[list[str] | None, typer.Option(metavar="K=V", help="Label; repeatable.")] = None,
    request_id: Annotated[str, typer.Option(help="Idempotency key: a retry returns the first GPR.")] = "",
    env: Annotated[list[str] | None, typer.Option(metavar="K=V", help="Environment variable; repeatable.")] = None,
    port: Annotated[
        list[str] | None, typer.Option(metavar="NAME:PORT/PROTO", help="Port like http:8000/tcp; repeatable.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it runs or ends; progress goes to stderr.")] = False,
    wait_timeout: Annotated[str, typer.Option(metavar="DURATION", help="Give up waiting after this long.")] = "10m",
) -> None:
    """Submit a GPR. The workload's command goes last, after --:

    gridctl gpr submit -w ran --count 1 -- python serve.py
    """
    session = _session(ctx)
    with _blame_flags():
        spec = build_gpr_spec(
            SubmitOptions(
                workspace=workspace,
                name=name,
                models=model or (),
                count=count,
                min_memory=min_memory,
                min_cc=min_cc,
                mig_profile=mig_profile,
                fraction=fraction,
                sharing=sharing,
                pinned=pinned,
                tier=tier,
                site=site,
                spill=spill or (),
                origin_site=origin_site,
                regions=region or (),
                priority=priority,
                duration=duration,
                preemptible=preemptible,
                may_migrate=may_migrate,
                min_runtime=min_runtime,
                replicas=replicas,
                model_artifact=model_artifact,
                labels=label or (),
                env=env or (),
                ports=port or (),
                command=command or (),
            )
        )
        wait_seconds = parse_flag("--wait-timeout", parse_duration, wait_timeout)
    stub = session.provision()
    gpr = stub.SubmitGpr(provision_pb2.SubmitGprRequest(spec=spec, request_id=request_id), timeout=session.timeout)
    if wait:
        _stderr(
            f"submitted GPR {gpr.id} ({GPR_STATE.show(gpr.state)}); "
            f"waiting up to {format_seconds(wait_seconds)} for it to run"
        )
        gpr = wait_for_gpr(stub, gpr, wait_seconds, lambda ev: _stderr(watch_line(ev)))
    final = gpr
    _show(session, final, lambda: gpr_view(final, time.time()))
    if wait:
        check_outcome(final)


@gpr_app.command("get")
def gpr_get(ctx: typer.Context, gpr_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Show one GPR and its allocations."""
    session = _session(ctx)
    gpr = session.provision().GetGpr(provision_pb2.GetGprRequest(id=gpr_id), timeout=session.timeout)
    _show(session, gpr, lambda: gpr_view(gpr, time.time()))


@gpr_app.command("list")
def gpr_list(
    ctx: typer.Context,
    workspace: Annotated[str, typer.Option("--workspace", "-w", help="Only this workspace's GPRs.")] = "",
    state: Annotated[list[str] | None, typer.Option(help=_state_help("GPRs", GPR_STATE.choices()))] = None,
    host: Annotated[str, typer.Option(help="Only GPRs with an allocation on this host.")] = "",
    limit: Annotated[int, typer.Option(min=0, help=_LIMIT_HELP)] = 0,
) -> None:
    """List GPRs, all pages."""
    session = _session(ctx)
    with _blame_flags():
        states = [parse_flag("--state", GPR_STATE.parse, s) for s in state or ()]
    stub = session.provision()

    def fetch(token: str, size: int) -> tuple[Sequence[types_pb2.Gpr], str]:
        request = provision_pb2.ListGprsRequest(
            workspace=workspace, states=states, host_id=host, page_size=size, page_token=token
        )
        page = stub.ListGprs(request, timeout=session.timeout)
        return page.gprs, page.next_page_token

    gprs = collect_pages(fetch, limit)
    _show(session, gprs, lambda: gprs_table(gprs, time.time()))


@gpr_app.command("watch")
def gpr_watch(
    ctx: typer.Context,
    gpr_id: Annotated[str, typer.Argument(metavar="ID", help="Only this GPR.", show_default=False)] = "",
    workspace: Annotated[str, typer.Option("--workspace", "-w", help="Only this workspace's GPRs.")] = "",
    since: Annotated[
        int | None,
        typer.Option(metavar="REV", min=0, help="Replay changes after this revision (0: all); default: from now on."),
    ] = None,
) -> None:
    """Print one line per GPR event until Ctrl-C (json: one object per line)."""
    session = _session(ctx)
    request = provision_pb2.WatchGprsRequest(workspace=workspace, gpr_id=gpr_id, since_revision=since)
    # No deadline: a watch runs until the person stops it. An unreachable controller still fails fast.
    stream = session.provision().WatchGprs(request)
    try:
        for ev in stream:
            if session.output is OutputFormat.table:
                line = watch_line(ev)
            elif session.output is OutputFormat.json:
                line = json.dumps(to_data(ev), ensure_ascii=False)
            else:
                line = "---\n" + dump(to_data(ev), session.output).rstrip("\n")
            print(line, flush=True)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch ends: not an error
    finally:
        stream.cancel()


@gpr_app.command("cancel")
def gpr_cancel(
    ctx: typer.Context,
    gpr_id: Annotated[str, typer.Argument(metavar="ID")],
    reason: Annotated[str, typer.Option(help="Why; kept in the event log.")] = "",
) -> None:
    """Cancel a GPR; its allocations are released."""
    session = _session(ctx)
    request = provision_pb2.CancelGprRequest(id=gpr_id, reason=reason)
    gpr = session.provision().CancelGpr(request, timeout=session.timeout)
    _show_line(session, gpr, f"GPR {gpr.id}: {GPR_STATE.show(gpr.state)}")


@gpr_app.command("explain")
def gpr_explain(ctx: typer.Context, gpr_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Explain why a GPR is where it is: what ruled hosts out, and what would work instead."""
    session = _session(ctx)
    ex = session.provision().ExplainGpr(provision_pb2.ExplainGprRequest(id=gpr_id), timeout=session.timeout)
    _show(session, ex, lambda: explanation_view(ex))


# --- host ----------------------------------------------------------------------------------------------


@host_app.command("list")
def host_list(
    ctx: typer.Context,
    site: Annotated[str, typer.Option(help="Only hosts of this site.")] = "",
    state: Annotated[list[str] | None, typer.Option(help=_state_help("hosts", HOST_STATE.choices()))] = None,
    limit: Annotated[int, typer.Option(min=0, help=_LIMIT_HELP)] = 0,
) -> None:
    """List hosts, all pages."""
    session = _session(ctx)
    with _blame_flags():
        states = [parse_flag("--state", HOST_STATE.parse, s) for s in state or ()]
    stub = session.admin()

    def fetch(token: str, size: int) -> tuple[Sequence[types_pb2.Host], str]:
        request = admin_pb2.ListHostsRequest(site=site, states=states, page_size=size, page_token=token)
        page = stub.ListHosts(request, timeout=session.timeout)
        return page.hosts, page.next_page_token

    hosts = collect_pages(fetch, limit)
    _show(session, hosts, lambda: hosts_table(hosts, time.time()))


@host_app.command("get")
def host_get(ctx: typer.Context, host_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Show one host and its GPUs."""
    session = _session(ctx)
    host = session.admin().GetHost(admin_pb2.GetHostRequest(id=host_id), timeout=session.timeout)
    _show(session, host, lambda: host_view(host, time.time()))


@host_app.command("cordon")
def host_cordon(
    ctx: typer.Context,
    host_id: Annotated[str, typer.Argument(metavar="ID")],
    reason: Annotated[str, typer.Option(help="Why; kept in the event log.")] = "",
) -> None:
    """Cordon a host: it keeps what it runs and takes nothing new."""
    _cordon(ctx, admin_pb2.CordonHostRequest(id=host_id, reason=reason))


@host_app.command("uncordon")
def host_uncordon(ctx: typer.Context, host_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Put a cordoned host back to READY."""
    _cordon(ctx, admin_pb2.CordonHostRequest(id=host_id, uncordon=True))


def _cordon(ctx: typer.Context, request: admin_pb2.CordonHostRequest) -> None:
    session = _session(ctx)
    host = session.admin().CordonHost(request, timeout=session.timeout)
    _show_line(session, host, _host_line(host.id, HOST_STATE.show(host.state), host.state_reason))


@host_app.command("drain")
def host_drain(
    ctx: typer.Context,
    host_id: Annotated[str, typer.Argument(metavar="ID")],
    reason: Annotated[str, typer.Option(help="Why; kept in the event log.")] = "",
) -> None:
    """Drain a host: it takes nothing new and its work is moved away."""
    session = _session(ctx)
    request = admin_pb2.DrainHostRequest(id=host_id, reason=reason)
    host = session.admin().DrainHost(request, timeout=session.timeout)
    _show_line(session, host, _host_line(host.id, HOST_STATE.show(host.state), host.state_reason))


def _host_line(host_id: str, state: str, reason: str) -> str:
    return f"host {host_id}: {state}" + (f" ({reason})" if reason else "")


# --- workspace -----------------------------------------------------------------------------------------


@workspace_app.command("create")
def workspace_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument()],
    weight: Annotated[float | None, typer.Option(help="Fair-share weight, above 0; 1 when unset.")] = None,
    max_gpus: Annotated[int | None, typer.Option(min=0, help="Hard limit in GPUs; 0 is unlimited.")] = None,
    guaranteed: Annotated[int | None, typer.Option(min=0, help="GPUs served before borrowing.")] = None,
    borrow_limit: Annotated[int | None, typer.Option(min=0, help="GPUs it may borrow beyond that.")] = None,
    region: Annotated[list[str] | None, typer.Option(help="Allowed region; repeatable; none: any.")] = None,
    description: Annotated[str, typer.Option(help="For people.")] = "",
) -> None:
    """Create a workspace."""
    session = _session(ctx)
    with _blame_flags():
        workspace = build_workspace(
            name,
            description=description,
            weight=weight,
            max_gpus=max_gpus,
            guaranteed=guaranteed,
            borrow_limit=borrow_limit,
            regions=region or (),
        )
    request = admin_pb2.CreateWorkspaceRequest(workspace=workspace)
    created = session.admin().CreateWorkspace(request, timeout=session.timeout)
    _show(session, created, lambda: workspace_view(created, time.time()))


@workspace_app.command("get")
def workspace_get(ctx: typer.Context, name: Annotated[str, typer.Argument()]) -> None:
    """Show one workspace."""
    session = _session(ctx)
    ws = session.admin().GetWorkspace(admin_pb2.GetWorkspaceRequest(name=name), timeout=session.timeout)
    _show(session, ws, lambda: workspace_view(ws, time.time()))


@workspace_app.command("list")
def workspace_list(ctx: typer.Context, limit: Annotated[int, typer.Option(min=0, help=_LIMIT_HELP)] = 0) -> None:
    """List workspaces, all pages."""
    session = _session(ctx)
    stub = session.admin()

    def fetch(token: str, size: int) -> tuple[Sequence[types_pb2.Workspace], str]:
        request = admin_pb2.ListWorkspacesRequest(page_size=size, page_token=token)
        page = stub.ListWorkspaces(request, timeout=session.timeout)
        return page.workspaces, page.next_page_token

    workspaces = collect_pages(fetch, limit)
    _show(session, workspaces, lambda: workspaces_table(workspaces, time.time()))


# --- site ----------------------------------------------------------------------------------------------


@site_app.command("create")
def site_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument()],
    tier: Annotated[str, typer.Option(help=f"One of: {', '.join(SITE_TIER.choices())}.")],
    region: Annotated[str, typer.Option(help="Region, for data sovereignty.")],
    price: Annotated[
        list[str] | None, typer.Option(metavar="MODEL=PRICE", help="Price per GPU-hour; repeatable.")
    ] = None,
    latency: Annotated[
        list[str] | None, typer.Option(metavar="SITE=MS", help="Latency to another site; repeatable.")
    ] = None,
) -> None:
    """Create a site."""
    session = _session(ctx)
    with _blame_flags():
        site = build_site(name, tier=tier, region=region, prices=price or (), latencies=latency or ())
    created = session.admin().CreateSite(admin_pb2.CreateSiteRequest(site=site), timeout=session.timeout)
    _show(session, created, lambda: site_view(created))


@site_app.command("list")
def site_list(
    ctx: typer.Context,
    tier: Annotated[str | None, typer.Option(help="Only sites of this tier.")] = None,
    region: Annotated[str, typer.Option(help="Only sites in this region.")] = "",
) -> None:
    """List sites."""
    session = _session(ctx)
    with _blame_flags():
        tier_value = (
            parse_flag("--tier", SITE_TIER.parse, tier) if tier is not None else types_pb2.SITE_TIER_UNSPECIFIED
        )
    request = admin_pb2.ListSitesRequest(tier=tier_value, region=region)
    sites = session.admin().ListSites(request, timeout=session.timeout).sites
    _show(session, sites, lambda: sites_table(sites))


# --- event ---------------------------------------------------------------------------------------------


@event_app.command("list")
def event_list(
    ctx: typer.Context,
    subject: Annotated[str, typer.Option(help="Only events about this GPR, host, workspace or site.")] = "",
    kind: Annotated[str, typer.Option(help="Only events of this kind, e.g. gpr.state.")] = "",
    since: Annotated[int, typer.Option(metavar="REV", min=0, help="Only events after this revision.")] = 0,
    limit: Annotated[int, typer.Option(min=0, help=_LIMIT_HELP)] = 0,
    newest: Annotated[bool, typer.Option("--newest", help="Latest first (with --limit: the last N).")] = False,
) -> None:
    """List events, oldest first (or newest first), all pages."""
    session = _session(ctx)
    stub = session.admin()

    def fetch(token: str, size: int) -> tuple[Sequence[types_pb2.Event], str]:
        request = admin_pb2.ListEventsRequest(
            subject=subject, kind=kind, since_revision=since, page_size=size, page_token=token, newest_first=newest
        )
        page = stub.ListEvents(request, timeout=session.timeout)
        return page.events, page.next_page_token

    events = collect_pages(fetch, limit)
    _show(session, events, lambda: events_table(events))


def main() -> None:
    """The ``gridctl`` console script."""
    try:
        app(prog_name="gridctl")
    except Exception as exc:
        # A bug in gridctl itself. The rules hold even then: one line, no traceback, unless asked.
        if os.environ.get("GRIDCTL_DEBUG"):
            raise
        _stderr(f"error: gridctl failed: {type(exc).__name__}: {exc} (GRIDCTL_DEBUG=1 shows the traceback)")
        sys.exit(ExitCode.ERROR)


if __name__ == "__main__":
    main()
