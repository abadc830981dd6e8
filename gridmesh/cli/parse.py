"""Flag values and the config file, turned into gridmesh.v1 messages.

Rules:
- Each ``parse_*`` takes the text a person typed and returns the wire value, or raises ``ParseError``
  saying what was wrong and what form is accepted. It does not know the flag's name.
- The ``build_*`` functions know the flags: they raise ``FlagError`` naming the flag, which main turns
  into a usage error (exit 2).
- Only syntax and the ranges the contract states are checked here. Whether a request makes sense
  (a MIG profile on a model without MIG, an unknown workspace) is the controller's call.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TypeVar

from google.protobuf import duration_pb2

from gridmesh.cli.enums import PLACEMENT_POLICY, PRIORITY_TIER, SHARING_MODE, SITE_TIER, EnumParseError
from gridmesh.cli.exits import CliError, ExitCode
from gridmesh.v1 import types_pb2

T = TypeVar("T")
R = TypeVar("R")


class ParseError(ValueError):
    """A value is malformed; the message says what is accepted."""


class FlagError(ValueError):
    """A flag's value is malformed; ``flag`` names the flag to blame."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"{flag}: {message}")
        self.flag = flag
        self.message = message


# --- durations -------------------------------------------------------------------------------------

DURATION_FORM = "a whole number of d, h, m, s, largest unit first: 90s, 30m, 2h, 1h30m, 1d"
_DURATION_RE = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_UNIT_SECONDS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def parse_duration(text: str) -> int:
    """``1h30m`` -> 5400 seconds. A bare number is refused: seconds or minutes would be a guess."""
    match = _DURATION_RE.fullmatch(text.strip().lower())
    if not text.strip() or match is None:
        raise ParseError(f"{text!r} is not a duration; write {DURATION_FORM}")
    seconds = sum(int(part) * unit for part, (_, unit) in zip(match.groups(), _UNIT_SECONDS, strict=True) if part)
    if seconds == 0:
        raise ParseError(f"{text!r} is zero; a duration must be longer than that")
    return seconds


def format_seconds(seconds: int, max_units: int = 4) -> str:
    """5400 -> ``1h30m``; the inverse of ``parse_duration``.

    ``max_units`` counts units from the largest one present and rounds down, so an age of 1d0h5m
    with two units reads ``1d`` rather than the misleading ``1d5m``.
    """
    if seconds <= 0:
        return "0s"
    counts: list[tuple[str, int]] = []
    for suffix, unit in _UNIT_SECONDS:
        count, seconds = divmod(seconds, unit)
        counts.append((suffix, count))
    first = next(i for i, (_, count) in enumerate(counts) if count)
    return "".join(f"{count}{suffix}" for suffix, count in counts[first : first + max_units] if count)


def duration_message(seconds: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=seconds)


# --- GPU shape ---------------------------------------------------------------------------------------

MEMORY_FORM = "a number with MiB, GiB or TiB (binary units), e.g. 40GiB or 40960MiB; a bare number is MiB"
_MEMORY_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(mib|gib|tib)?")
_MIB_PER_UNIT = {None: 1, "mib": 1, "gib": 1024, "tib": 1024 * 1024}


def parse_memory_mib(text: str) -> int:
    """``40GiB`` -> 40960. Decimal units (GB) are refused rather than guessed at."""
    match = _MEMORY_RE.fullmatch(text.strip().lower())
    if match is None:
        raise ParseError(f"{text!r} is not an amount of memory; write {MEMORY_FORM}")
    mib = Fraction(match.group(1)) * _MIB_PER_UNIT[match.group(2)]
    if mib.denominator != 1:
        raise ParseError(f"{text!r} is not a whole number of MiB")
    if mib <= 0:
        raise ParseError(f"{text!r} must be more than zero")
    return int(mib)


_CC_RE = re.compile(r"\d+\.\d+")


def parse_compute_capability(text: str) -> str:
    """``8.0`` stays ``8.0``; the wire carries it as text."""
    if _CC_RE.fullmatch(text.strip()) is None:
        raise ParseError(f"{text!r} is not a compute capability; write MAJOR.MINOR, e.g. 8.0 or 9.0")
    return text.strip()


def parse_fraction(value: float) -> float:
    if not 0 < value < 1:
        raise ParseError(f"{value:g} is not a fraction of a GPU; it must be above 0 and below 1")
    return value


# --- priority ----------------------------------------------------------------------------------------

# The ranges the contract states for the number inside each tier (types.proto, PriorityTier).
PRIORITY_RANGES: Mapping[str, int] = {"low": 100, "medium": 200, "high": 300}
PRIORITY_FORM = "TIER:N, e.g. high:10 (low 1-100, medium 1-200, high 1-300)"


def parse_priority(text: str) -> tuple[types_pb2.PriorityTier.ValueType, int]:
    """``high:10`` (any case) -> (PRIORITY_TIER_HIGH, 10). A tier alone is refused: its number matters."""
    tier_text, sep, number_text = text.strip().partition(":")
    if not sep:
        raise ParseError(f"{text!r} has no number; write {PRIORITY_FORM}")
    try:
        tier = PRIORITY_TIER.parse(tier_text)
    except EnumParseError:
        raise ParseError(f"{tier_text!r} is not a priority tier; write {PRIORITY_FORM}") from None
    if not number_text.strip().isdigit():
        raise ParseError(f"{number_text!r} is not a whole number; write {PRIORITY_FORM}")
    number = int(number_text)
    tier_name = PRIORITY_TIER.show(tier).lower()
    highest = PRIORITY_RANGES[tier_name]
    if not 1 <= number <= highest:
        raise ParseError(f"{tier_name} priority runs from 1 to {highest}, not {number}")
    return tier, number


# --- key=value lists ---------------------------------------------------------------------------------


def parse_key_value(text: str) -> tuple[str, str]:
    """``K=V`` -> (K, V); the value may itself hold ``=``, the key may not be empty."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ParseError(f"{text!r} is not KEY=VALUE")
    return key.strip(), value


def parse_key_values(texts: Sequence[str]) -> dict[str, str]:
    """Repeated ``K=V`` flags -> a dict; a key given twice is refused rather than silently replaced."""
    result: dict[str, str] = {}
    for text in texts:
        key, value = parse_key_value(text)
        if key in result:
            raise ParseError(f"key {key!r} is given twice")
        result[key] = value
    return result


def parse_key_numbers(texts: Sequence[str], what: str) -> dict[str, float]:
    """Repeated ``NAME=NUMBER`` flags (prices, latencies) -> a dict.

    The split is at the last ``=`` because GPU model names hold spaces and could hold anything else.
    """
    result: dict[str, float] = {}
    for text in texts:
        key, sep, number = text.rpartition("=")
        if not sep or not key.strip():
            raise ParseError(f"{text!r} is not NAME={what.upper()}")
        try:
            value = float(number)
        except ValueError:
            raise ParseError(f"{number!r} in {text!r} is not a {what}") from None
        if not value >= 0:  # also refuses nan
            raise ParseError(f"{what} {number!r} in {text!r} must not be negative")
        if key.strip() in result:
            raise ParseError(f"{key.strip()!r} is given twice")
        result[key.strip()] = value
    return result


PORT_FORM = "NAME:PORT or NAME:PORT/tcp or NAME:PORT/udp, e.g. http:8000/tcp"
_PORT_RE = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.-]*):(\d+)(?:/(tcp|udp))?")


def parse_port(text: str) -> types_pb2.Port:
    """``http:8000/tcp`` -> Port; the protocol defaults to tcp."""
    match = _PORT_RE.fullmatch(text.strip().lower())
    if match is None:
        raise ParseError(f"{text!r} is not a port; write {PORT_FORM}")
    number = int(match.group(2))
    if not 1 <= number <= 65535:
        raise ParseError(f"port {number} is outside 1-65535")
    return types_pb2.Port(name=match.group(1), port=number, protocol=match.group(3) or "tcp")


# --- controller address ------------------------------------------------------------------------------

DEFAULT_CONTROLLER = "127.0.0.1:7443"
DEFAULT_CONFIG = Path(".config/gridmesh/gridctl.toml")  # under the home directory


@dataclass(frozen=True, slots=True)
class ControllerAddress:
    address: str
    source: str  # where it came from, for error messages: "--controller", "GRIDMESH_CONTROLLER", a path

    def __str__(self) -> str:
        return f"{self.address} (from {self.source})"


def resolve_controller(flag: str | None, environ: Mapping[str, str], home: Path) -> ControllerAddress:
    """The flag, else env GRIDMESH_CONTROLLER, else the config file, else 127.0.0.1:7443.

    A config file named by GRIDMESH_CONFIG must exist (the person asked for it); the default one is
    optional. A config file that cannot be read or holds a non-string ``controller`` is a usage
    error: silently falling back to the default address would send commands to the wrong grid.
    """
    if flag:
        return ControllerAddress(flag, "--controller")
    if environ.get("GRIDMESH_CONTROLLER"):
        return ControllerAddress(environ["GRIDMESH_CONTROLLER"], "GRIDMESH_CONTROLLER")
    explicit = environ.get("GRIDMESH_CONFIG")
    path = Path(explicit) if explicit else home / DEFAULT_CONFIG
    if not path.exists():
        if explicit:
            raise CliError(f"config {path} (from GRIDMESH_CONFIG) does not exist", ExitCode.USAGE)
        return ControllerAddress(DEFAULT_CONTROLLER, "default")
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"config {path}: {exc}", ExitCode.USAGE) from None
    address = config.get("controller")
    if address is None:
        return ControllerAddress(DEFAULT_CONTROLLER, "default")
    if not isinstance(address, str) or not address:
        raise CliError(f'config {path}: controller must be a string "host:port"', ExitCode.USAGE)
    return ControllerAddress(address, str(path))


# --- whole requests ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubmitOptions:
    """The flags of ``gridctl gpr submit`` as typed, before any parsing."""

    workspace: str
    name: str = ""
    models: Sequence[str] = ()
    count: int = 1
    min_memory: str | None = None
    min_cc: str | None = None
    mig_profile: str = ""
    fraction: float | None = None
    sharing: str | None = None
    pinned: bool | None = None  # --pinned True, --redistributable False, neither None
    tier: str | None = None
    site: str = ""
    spill: Sequence[str] = ()
    origin_site: str = ""
    regions: Sequence[str] = ()
    priority: str | None = None
    duration: str | None = None
    preemptible: bool = False
    may_migrate: bool = False
    min_runtime: str | None = None
    replicas: int | None = None
    model_artifact: str = ""
    labels: Sequence[str] = ()
    env: Sequence[str] = ()
    ports: Sequence[str] = ()
    command: Sequence[str] = ()


def build_gpr_spec(opts: SubmitOptions) -> types_pb2.GprSpec:
    """The GprSpec the flags ask for; unset flags stay unset on the wire so server defaults apply."""
    spec = types_pb2.GprSpec(workspace=opts.workspace, name=opts.name, model_artifact=opts.model_artifact)

    shape = spec.shape
    shape.models.extend(opts.models)
    shape.count = opts.count
    shape.mig_profile = opts.mig_profile
    if opts.min_memory is not None:
        shape.min_memory_mib = parse_flag("--min-memory", parse_memory_mib, opts.min_memory)
    if opts.min_cc is not None:
        shape.min_compute_capability = parse_flag("--min-cc", parse_compute_capability, opts.min_cc)
    if opts.fraction is not None:
        shape.fraction = parse_flag("--fraction", parse_fraction, opts.fraction)
    if opts.sharing is not None:
        spec.sharing = parse_flag("--sharing", SHARING_MODE.parse, opts.sharing)

    placement = spec.placement
    if opts.pinned is not None:
        placement.policy = PLACEMENT_POLICY.parse("pinned" if opts.pinned else "redistributable")
    if opts.tier is not None:
        placement.tier = parse_flag("--tier", SITE_TIER.parse, opts.tier)
    placement.site = opts.site
    placement.tier_preference.extend(parse_flag("--spill", SITE_TIER.parse, tier) for tier in opts.spill)
    placement.origin_site = opts.origin_site
    placement.allowed_regions.extend(opts.regions)

    if opts.priority is not None:
        spec.priority_tier, spec.priority = parse_flag("--priority", parse_priority, opts.priority)
    if opts.duration is not None:
        spec.duration.CopyFrom(duration_message(parse_flag("--duration", parse_duration, opts.duration)))

    redistribution = spec.redistribution
    redistribution.preemptible = opts.preemptible
    redistribution.may_migrate = opts.may_migrate
    if opts.min_runtime is not None:
        seconds = parse_flag("--min-runtime", parse_duration, opts.min_runtime)
        redistribution.min_runtime.CopyFrom(duration_message(seconds))

    if opts.replicas is not None:
        spec.replicas = opts.replicas
    spec.labels.update(parse_flag("--label", parse_key_values, opts.labels))

    workload = spec.workload
    workload.command.extend(opts.command)
    workload.env.update(parse_flag("--env", parse_key_values, opts.env))
    workload.ports.extend(parse_flag("--port", parse_port, port) for port in opts.ports)
    return spec


def build_workspace(
    name: str,
    *,
    description: str = "",
    weight: float | None = None,
    max_gpus: int | None = None,
    guaranteed: int | None = None,
    borrow_limit: int | None = None,
    regions: Sequence[str] = (),
) -> types_pb2.Workspace:
    """The Workspace ``gridctl workspace create`` asks for."""
    workspace = types_pb2.Workspace(name=name, description=description, allowed_regions=list(regions))
    if weight is not None:
        if not weight > 0:
            raise FlagError("--weight", f"{weight:g} is not a fair-share weight; it must be above 0")
        workspace.fair_share_weight = weight
    quota = workspace.quota
    if max_gpus is not None:
        quota.max_gpus = max_gpus
    if guaranteed is not None:
        quota.guaranteed_gpus = guaranteed
    if borrow_limit is not None:
        quota.borrow_limit = borrow_limit
    return workspace


def build_site(
    name: str, *, tier: str, region: str, prices: Sequence[str] = (), latencies: Sequence[str] = ()
) -> types_pb2.Site:
    """The Site ``gridctl site create`` asks for."""
    site = types_pb2.Site(name=name, tier=parse_flag("--tier", SITE_TIER.parse, tier), region=region)
    site.price_per_gpu_hour.update(parse_flag("--price", _prices, prices))
    site.latency_ms.update(parse_flag("--latency", _latencies, latencies))
    return site


def _prices(texts: Sequence[str]) -> dict[str, float]:
    return parse_key_numbers(texts, "price")


def _latencies(texts: Sequence[str]) -> dict[str, float]:
    return parse_key_numbers(texts, "ms")


def parse_flag(flag: str, parse: Callable[[T], R], value: T) -> R:
    """``parse(value)``, with a failure blamed on ``flag``."""
    try:
        return parse(value)
    except (ParseError, EnumParseError) as exc:
        raise FlagError(flag, str(exc)) from None
