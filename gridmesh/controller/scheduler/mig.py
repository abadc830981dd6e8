"""MIG profile tables and the placement rules the scheduler packs by, as pure constants and functions.

Rules:
- A GPU in MIG mode has 8 memory slices and 7 compute slices (every table here). A GPU instance of a
  profile occupies ``size`` memory slices from one of the profile's allowed ``starts``; two instances
  conflict when their slices overlap, the compute slices of all instances add up to at most 7, and a
  profile has at most ``max_instances`` instances (only the ``+me`` profiles are limited beyond what
  their placements already imply).
- The H100 80GB table is the reading in ``gridmesh/hw/data/h100-80gb-hbm3.json`` (a test checks that the
  constants below equal it). The A100 and H200 tables are *documented, not read*: NVIDIA's MIG user
  guide gives their names, and their placement shapes are assumed equal to H100's; their memory sizes
  are estimates scaled from the H100 reading. Where a real reading becomes available it replaces them.
  (``gridmesh.hw.mig`` builds the same tables from the JSON at run time for the agent; the scheduler
  keeps constants so that it needs no data file, and a test checks that the two agree.)
- A GPU's state is ``(mask, compute_used, me_used)``: a bit per occupied memory slice, the compute
  slices in use, and whether a ``+me`` instance exists. Every decision below is a function of it.
- Where a profile fits at several starts, the start that keeps the most capacity usable afterwards
  wins (the most compute still allocatable, then the most 1-slice instances, then the lowest start):
  a 3g.40gb on an empty H100 goes to start 4, which leaves room for four 1g.10gb instead of three.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from gridmesh.hw.catalog import fold_model_name

MEMORY_SLICES = 8
COMPUTE_SLICES = 7


@dataclass(frozen=True, slots=True)
class MigProfile:
    name: str
    profile_id: int
    compute_slices: int
    size: int  # memory slices occupied
    memory_mib: int
    starts: tuple[int, ...]
    max_instances: int

    @property
    def media_extensions(self) -> bool:
        return self.name.endswith("+me")

    @property
    def mask_at(self) -> tuple[int, ...]:
        """The memory-slice bit mask this profile occupies at each allowed start."""
        return tuple(((1 << self.size) - 1) << s for s in self.starts)


@dataclass(frozen=True, slots=True)
class MigTable:
    """The GPU-instance profiles of one GPU model (``models``: the folded names it applies to)."""

    name: str
    models: tuple[str, ...]
    profiles: tuple[MigProfile, ...]
    read_from_hardware: bool
    source: str
    memory_slices: int = MEMORY_SLICES
    compute_slices: int = COMPUTE_SLICES

    def profile(self, name: str) -> MigProfile | None:
        folded = name.strip().lower()
        return next((p for p in self.profiles if p.name == folded), None)


# The placement shapes, shared by every table here: (compute slices, memory slices, starts, max).
_SHAPES: dict[str, tuple[int, int, int, tuple[int, ...], int]] = {
    # key: (profile id, compute slices, size, starts, max instances)
    "7": (0, 7, 8, (0,), 1),
    "4": (5, 4, 4, (0,), 1),
    "3": (9, 3, 4, (0, 4), 2),
    "2": (14, 2, 2, (0, 2, 4), 3),
    "1x2": (15, 1, 2, (0, 2, 4, 6), 4),
    "1": (19, 1, 1, (0, 1, 2, 3, 4, 5, 6), 7),
    "1me": (20, 1, 1, (0, 1, 2, 3, 4, 5, 6), 1),
}
_SHAPE_ORDER = ("7", "4", "3", "2", "1x2", "1", "1me")


def _table(name: str, models: tuple[str, ...], names: tuple[str, ...], memory: tuple[int, ...], read: bool,
           source: str) -> MigTable:
    profiles = []
    for shape, profile_name, mib in zip(_SHAPE_ORDER, names, memory, strict=True):
        pid, cs, size, starts, most = _SHAPES[shape]
        profiles.append(MigProfile(profile_name, pid, cs, size, mib, starts, most))
    return MigTable(name, tuple(fold_model_name(m) for m in models), tuple(profiles), read, source)


# Read from a real H100 80GB HBM3 (gridmesh/hw/data/h100-80gb-hbm3.json); a test compares them.
_H100_MIB = (81152, 40448, 40448, 20096, 20096, 9984, 9984)
H100_80GB = _table(
    "H100 80GB HBM3", ("H100 80GB HBM3", "H100 PCIe", "H100 SXM5 80GB"),
    ("7g.80gb", "4g.40gb", "3g.40gb", "2g.20gb", "1g.20gb", "1g.10gb", "1g.10gb+me"), _H100_MIB,
    True, "read from a real H100 80GB HBM3 (hw-facts/h100-80gb-hbm3.json)",
)


def _scaled(gib: int) -> tuple[int, ...]:
    # Documented, not read: the H100 reading scaled by the card's memory, the same estimate the hw
    # layer makes (gridmesh.hw.mig), so that the agent and the scheduler agree on what a profile holds.
    return tuple(int(m * (gib / 80)) for m in _H100_MIB)


A100_40GB = _table(
    "A100-SXM4-40GB", ("A100-SXM4-40GB", "A100-PCIE-40GB", "A100 40GB"),
    ("7g.40gb", "4g.20gb", "3g.20gb", "2g.10gb", "1g.10gb", "1g.5gb", "1g.5gb+me"), _scaled(40),
    False, "documented in NVIDIA's MIG user guide, not read; placements assumed equal to H100's",
)
A100_80GB = _table(
    "A100-SXM4-80GB", ("A100-SXM4-80GB", "A100 80GB PCIe", "A100 80GB"),
    ("7g.80gb", "4g.40gb", "3g.40gb", "2g.20gb", "1g.20gb", "1g.10gb", "1g.10gb+me"), _scaled(80),
    False, "documented in NVIDIA's MIG user guide, not read; placements assumed equal to H100's",
)
H200_141GB = _table(
    "H200", ("H200", "H200 141GB", "H200 NVL"),
    ("7g.141gb", "4g.71gb", "3g.71gb", "2g.35gb", "1g.35gb", "1g.18gb", "1g.18gb+me"), _scaled(141),
    False, "documented in NVIDIA's MIG user guide, not read; placements assumed equal to H100's",
)

TABLES: tuple[MigTable, ...] = (H100_80GB, A100_40GB, A100_80GB, H200_141GB)
_BY_MODEL = {m: t for t in TABLES for m in t.models}


def table_for(model: str) -> MigTable | None:
    """The MIG table of a GPU model as a host reports it (vendor prefix and case ignored), or None."""
    return _BY_MODEL.get(fold_model_name(model))


def gpu_equivalents(table: MigTable, profile: MigProfile) -> float:
    """What one instance counts against quotas and fair shares: its share of the GPU's compute."""
    return profile.compute_slices / table.compute_slices


def profile_for(table: MigTable, mig_profile: str, fraction: float, min_memory_mib: int) -> MigProfile | None:
    """The smallest profile of ``table`` that satisfies a request, or None.

    A named profile must exist in the table (and hold ``min_memory_mib``). A fraction ``f`` needs at
    least ``f`` of the GPU's compute and of its memory; the ``+me`` profiles are only given by name.
    """
    if mig_profile:
        p = table.profile(mig_profile)
        return p if p is not None and p.memory_mib >= min_memory_mib else None
    fits = [p for p in table.profiles
            if not p.media_extensions
            and p.compute_slices >= fraction * table.compute_slices - 1e-9
            and p.size >= fraction * table.memory_slices - 1e-9
            and p.memory_mib >= min_memory_mib]
    return min(fits, key=lambda p: (p.compute_slices, p.size, p.memory_mib), default=None)


def smaller_profiles(table: MigTable, profile: MigProfile) -> list[MigProfile]:
    """Profiles strictly smaller than ``profile`` (fewer compute or memory slices), largest first."""
    smaller = [p for p in table.profiles if not p.media_extensions and p != profile
               and p.compute_slices <= profile.compute_slices and p.size <= profile.size]
    return sorted(smaller, key=lambda p: (-p.compute_slices, -p.size))


def starts_free(profile: MigProfile, mask: int, compute_used: int, me_used: bool) -> list[int]:
    """Every start at which ``profile`` can be created on a GPU in state (mask, compute_used, me_used)."""
    if compute_used + profile.compute_slices > COMPUTE_SLICES or (profile.media_extensions and me_used):
        return []
    return [s for s, m in zip(profile.starts, profile.mask_at, strict=True) if not mask & m]


@functools.cache
def capacity_left(mask: int, compute_used: int) -> tuple[int, int]:
    """What a GPU state can still hold: (most compute slices allocatable, most 1-slice instances)."""
    best = 0
    for p in H100_80GB.profiles:  # every table shares these shapes
        if p.media_extensions:
            continue
        for s in starts_free(p, mask, compute_used, True):
            after = mask | slot_mask(s, p.size)
            got = p.compute_slices + capacity_left(after, compute_used + p.compute_slices)[0]
            best = max(best, got)
    one = H100_80GB.profiles[5]
    small = min(len(starts_free(one, mask, compute_used, True)), COMPUTE_SLICES - compute_used)
    return best, small


@functools.cache
def best_start(profile: MigProfile, mask: int, compute_used: int, me_used: bool) -> int | None:
    """The start that strands the least capacity (see the module rules), or None if none is free."""
    starts = starts_free(profile, mask, compute_used, me_used)
    if not starts:
        return None
    size_mask = (1 << profile.size) - 1

    def left(s: int) -> tuple[int, int, int]:
        compute, small = capacity_left(mask | (size_mask << s), compute_used + profile.compute_slices)
        return (-compute, -small, s)

    return min(starts, key=left)


def slot_mask(start: int, size: int) -> int:
    return ((1 << size) - 1) << start
