"""MIG profile tables and the pure placement arithmetic built on them.

Rules:
- Facts, not guesses. The H100 80GB HBM3 table is the reading in ``data/h100-80gb-hbm3.json`` (taken from a
  real card through NVML), used exactly: profile ids, names, memory, maximum counts and placements. The
  A100-40GB, A100-80GB and H200 tables are *documented, not read*: NVIDIA's MIG user guide gives their
  profile names; their placement shapes and counts are assumed equal to the H100's, and their memory sizes
  are the H100 reading scaled by the model's memory. ``MigTable.read_from_hardware`` says which is which.
- Geometry: a GPU has ``memory_slices`` (8) on one axis and ``compute_slices`` (7) to share. A profile may
  start only at its listed starts and then covers ``size`` memory slices. Two instances conflict when their
  memory spans overlap; the compute slices of all instances add up to at most ``compute_slices``; and no
  profile exceeds its ``max_instances``.
- Everything below the tables is pure (no I/O, no clock) so that the agent's MIG planner and the
  controller's placement can share it. The simulator enforces the same rules with its own code, so a test
  that the simulator accepts the planner's plans checks two implementations against each other.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gridmesh.hw.catalog import find_model, hardware_reading
from gridmesh.hw.model import HardwareError

MEMORY_SLICES = 8
"""Memory slices of every MIG-capable GPU in the tables; also the size of the placement array handed to
``nvmlDeviceGetGpuInstancePossiblePlacements`` (a profile has at most one placement per slice)."""


@dataclass(frozen=True, slots=True)
class MigProfile:
    """One GPU-instance profile as NVML reports it.

    ``profile_id`` is NVML's ``ProfileInfo.id`` (19 for 1g.10gb on an H100), which is what instance
    creation takes; the ``NVML_GPU_INSTANCE_PROFILE_*`` constant used to look it up is another number,
    kept in ``nvml_enum`` by name.
    """

    profile_id: int
    name: str
    compute_slices: int
    memory_mib: int
    max_instances: int
    starts: tuple[int, ...]
    size: int
    nvml_enum: str = ""

    def span(self, start: int) -> int:
        """The memory slices an instance at ``start`` covers, as a bit mask."""
        return ((1 << self.size) - 1) << start


@dataclass(frozen=True, slots=True)
class MigTable:
    """The MIG profiles of one GPU model."""

    model: str
    memory_slices: int
    compute_slices: int
    profiles: tuple[MigProfile, ...]
    read_from_hardware: bool
    source: str

    def profile(self, key: str | int) -> MigProfile | None:
        """The profile with this name (``"3g.40gb"``) or NVML profile id (``9``), or None."""
        for p in self.profiles:
            if p.name == key or (isinstance(key, int) and p.profile_id == key):
                return p
        return None

    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.profiles)


@dataclass(frozen=True, slots=True)
class Placed:
    """An instance of ``profile`` at ``start`` (existing, or planned)."""

    profile: MigProfile
    start: int


# --- the tables ------------------------------------------------------------------------------------------

# Documented (NVIDIA MIG user guide), not read: the profile names of other models, keyed by the H100 name in
# the same position. Shapes and counts are the H100's (an assumption the hw-facts README states).
_DOCUMENTED_NAMES: Mapping[str, Mapping[str, str]] = {
    "A100-SXM4-40GB": {
        "1g.10gb": "1g.5gb", "1g.10gb+me": "1g.5gb+me", "1g.20gb": "1g.10gb", "2g.20gb": "2g.10gb",
        "3g.40gb": "3g.20gb", "4g.40gb": "4g.20gb", "7g.80gb": "7g.40gb",
    },
    "A100-SXM4-80GB": {},  # the H100-80GB names
    "H200": {
        "1g.10gb": "1g.18gb", "1g.10gb+me": "1g.18gb+me", "1g.20gb": "1g.35gb", "2g.20gb": "2g.35gb",
        "3g.40gb": "3g.71gb", "4g.40gb": "4g.71gb", "7g.80gb": "7g.141gb",
    },
}


def _field(entry: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = entry.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise HardwareError(f"{where}: field {key!r} must be {kind.__name__}, got {value!r}")
    return value


def _from_reading(model: str, reading: Mapping[str, Any]) -> MigTable:
    where = f"packaged GPU reading for {model}"
    profiles = []
    for position, entry in enumerate(_field(reading, "gpu_instance_profiles", list, where)):
        at = f"{where}: gpu_instance_profiles[{position}]"
        starts = _field(entry, "placement_starts", list, at)
        if not all(isinstance(s, int) for s in starts):
            raise HardwareError(f"{at}: placement_starts must be integers, got {starts!r}")
        profiles.append(MigProfile(
            profile_id=_field(entry, "profile_id", int, at),
            name=_field(entry, "name", str, at),
            compute_slices=_field(entry, "slice_count", int, at),
            memory_mib=_field(entry, "memory_mib", int, at),
            max_instances=_field(entry, "max_instances", int, at),
            starts=tuple(starts),
            size=_field(entry, "placement_size", int, at),
            nvml_enum=_field(entry, "nvml_enum", str, at),
        ))
    return MigTable(
        model=model,
        memory_slices=_field(reading, "memory_slices", int, where),
        compute_slices=_field(reading, "compute_slices", int, where),
        profiles=tuple(profiles),
        read_from_hardware=True,
        source=f"read from a real {model} through NVML (hw-facts)",
    )


def _documented(model: str, h100: MigTable, names: Mapping[str, str], memory_gib: int) -> MigTable:
    # Memory scaled from the H100 reading by the model's memory: 1g.10gb on an 80 GB card is 9984 MiB, so the
    # 1g.5gb of a 40 GB card is taken as 4992 MiB. Documented shapes, derived sizes: not a reading.
    scale = memory_gib / 80
    return MigTable(
        model=model,
        memory_slices=h100.memory_slices,
        compute_slices=h100.compute_slices,
        profiles=tuple(
            MigProfile(
                profile_id=p.profile_id,
                name=names.get(p.name, p.name),
                compute_slices=p.compute_slices,
                memory_mib=int(p.memory_mib * scale),
                max_instances=p.max_instances,
                starts=p.starts,
                size=p.size,
                nvml_enum=p.nvml_enum,
            )
            for p in h100.profiles
        ),
        read_from_hardware=False,
        source=f"documented, not read: {model} profile names from NVIDIA's MIG user guide; placements assumed "
        f"equal to the H100 80GB reading; memory scaled from it",
    )


@functools.cache
def _tables() -> Mapping[str, MigTable]:
    reading = hardware_reading("H100 80GB HBM3")
    if reading is None:
        raise HardwareError("packaged GPU reading for H100 80GB HBM3 is missing")
    h100 = _from_reading("H100 80GB HBM3", reading)
    tables = {h100.model: h100}
    for model, names in _DOCUMENTED_NAMES.items():
        known = find_model(model)
        if known is None:
            raise HardwareError(f"MIG table for {model}: the GPU catalog has no such model")
        tables[known.model] = _documented(known.model, h100, names, known.memory_gib)
    return tables


def mig_table(model: str) -> MigTable | None:
    """The MIG table of a GPU model (any spelling ``find_model`` accepts), or None where none is known."""
    known = find_model(model)
    return None if known is None else _tables().get(known.model)


def mig_tables() -> Mapping[str, MigTable]:
    """Every known MIG table by canonical model name."""
    return _tables()


# --- placement arithmetic (pure) --------------------------------------------------------------------------


def occupied(placed: Iterable[Placed]) -> int:
    """The memory slices the instances cover, as a bit mask."""
    mask = 0
    for p in placed:
        mask |= p.profile.span(p.start)
    return mask


def why_not(table: MigTable, placed: Sequence[Placed], profile: MigProfile, start: int) -> str | None:
    """Why ``profile`` cannot be created at ``start`` beside ``placed``, or None when it can."""
    if start not in profile.starts:
        return f"{profile.name} cannot start at {start}; allowed starts: {list(profile.starts)}"
    for p in placed:
        if p.profile.span(p.start) & profile.span(start):
            return f"{profile.name} at {start} overlaps {p.profile.name} at {p.start}"
    count = sum(1 for p in placed if p.profile.profile_id == profile.profile_id)
    if count >= profile.max_instances:
        return f"{profile.name} is at its maximum of {profile.max_instances} instances"
    used = sum(p.profile.compute_slices for p in placed)
    if used + profile.compute_slices > table.compute_slices:
        return (f"{profile.name} needs {profile.compute_slices} compute slices; "
                f"{table.compute_slices - used} of {table.compute_slices} are free")
    return None


def headroom(table: MigTable, placed: Sequence[Placed]) -> tuple[int, ...]:
    """How many more instances of each profile would still fit (each counted alone), largest profile first.

    This is how "free space" is measured when choosing placements: comparing these tuples prefers layouts
    that keep the largest profiles possible, then the most small ones. A 3g.40gb at start 4 (0-3 free: a
    4g.40gb, a 3g.40gb or four 1g.10gb still fit) scores above one at start 0 (4-7 free, but slice 7 is
    usable only by the full GPU, so at most three 1g.10gb).
    """
    taken = occupied(placed)
    compute_left = table.compute_slices - sum(p.profile.compute_slices for p in placed)
    result = []
    for profile in sorted(table.profiles, key=lambda p: (-p.size, -p.compute_slices, p.profile_id)):
        count = sum(1 for p in placed if p.profile.profile_id == profile.profile_id)
        fits = 0
        mask = taken
        for start in profile.starts:
            if not mask & profile.span(start):
                mask |= profile.span(start)
                fits += 1
        result.append(min(fits, profile.max_instances - count, compute_left // profile.compute_slices))
    return tuple(result)


def pack(
    table: MigTable,
    fixed: Sequence[Placed],
    wanted: Sequence[tuple[MigProfile, int | None]],
    prefer: Collection[tuple[int, int]] = (),
) -> tuple[int, ...] | None:
    """Starts for every wanted instance beside ``fixed``, leaving the most room; None if they cannot all fit.

    A wanted instance with a start keeps it; the others get the starts that, in this order, land on the most
    ``prefer`` positions (``(profile_id, start)``: existing idle instances worth re-using rather than
    re-creating), then maximise ``headroom`` afterwards, then are lowest (so the answer is deterministic).
    Instances of one profile are interchangeable, so among them the earlier one in ``wanted`` gets the
    lower start.
    """
    base = list(fixed)
    for profile, start in wanted:
        if start is not None:
            if why_not(table, base, profile, start) is not None:
                return None
            base.append(Placed(profile, start))
    free = [i for i, (_, start) in enumerate(wanted) if start is None]
    # Bigger profiles first: they have the fewest choices, which prunes the search early.
    free.sort(key=lambda i: (-wanted[i][0].size, -wanted[i][0].compute_slices, wanted[i][0].profile_id, i))

    best: tuple[int, tuple[int, ...], tuple[int, ...]] | None = None
    preferred = set(prefer)
    best_starts: dict[int, int] = {}
    chosen: dict[int, int] = {}

    def search(depth: int, placed: list[Placed]) -> None:
        nonlocal best, best_starts
        if depth == len(free):
            # More re-use wins, then more headroom, then lower starts (negated so that ">" compares them).
            starts = tuple(chosen[i] for i in free)
            reused = sum(1 for i in free if (wanted[i][0].profile_id, chosen[i]) in preferred)
            key = (reused, headroom(table, placed), tuple(-s for s in starts))
            if best is None or key > best:
                best, best_starts = key, dict(chosen)
            return
        index = free[depth]
        profile = wanted[index][0]
        previous = free[depth - 1] if depth else None
        # Symmetry: the same profile twice in a row takes increasing starts only.
        floor = (chosen[previous] + 1
                 if previous is not None and wanted[previous][0].profile_id == profile.profile_id else 0)
        for start in profile.starts:
            if start < floor or why_not(table, placed, profile, start) is not None:
                continue
            chosen[index] = start
            placed.append(Placed(profile, start))
            search(depth + 1, placed)
            placed.pop()
            del chosen[index]

    search(0, base)
    if best is None:
        return None
    return tuple(start if start is not None else best_starts[i] for i, (_, start) in enumerate(wanted))


def pack_most(
    table: MigTable,
    fixed: Sequence[Placed],
    wanted: Sequence[tuple[MigProfile, int | None]],
    prefer: Collection[tuple[int, int]] = (),
) -> tuple[int | None, ...]:
    """Like ``pack``, but when not everything fits, places as many as it can in ``wanted`` order.

    The longest prefix of ``wanted`` that fits is placed; then each later instance is added if it still
    fits beside what is placed. Earlier entries are never given up for later ones. ``None`` marks the
    instances left out.
    """
    n = len(wanted)
    prefix = n
    while prefix > 0 and pack(table, fixed, wanted[:prefix]) is None:
        prefix -= 1
    taken = list(range(prefix))
    for i in range(prefix, n):
        if pack(table, fixed, [wanted[j] for j in [*taken, i]]) is not None:
            taken.append(i)
    starts = pack(table, fixed, [wanted[j] for j in taken], prefer) if taken else ()
    assert starts is not None  # every step above checked that this set fits
    result: list[int | None] = [None] * n
    for j, start in zip(taken, starts, strict=True):
        result[j] = start
    return tuple(result)
