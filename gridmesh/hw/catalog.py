"""The GPU catalog: models gridmesh knows, with memory, compute capability and MIG limits.

The data ships inside the package (``gridmesh/hw/data/``, byte-identical copies of the project's
``hw-facts``) and is read through ``importlib.resources`` so that it works from a wheel or a zip as well as
from a checkout. ``gpu-catalog.json`` holds vendor specifications; a *reading* (``h100-80gb-hbm3.json``) was
taken from a real card and wins over the specification where both say something, because GiB in a data
sheet is rounded and the real memory total is not.

Names: the controller validates model names in requests against ``known_models()``, and NVML reports names
with a vendor prefix (``"NVIDIA H100 80GB HBM3"``). ``find_model`` therefore accepts the exact name, the
name in any letter case, and the name behind a vendor prefix.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Any

from gridmesh.hw.model import HardwareError

CATALOG_FILE = "gpu-catalog.json"
# Readings taken from real hardware, one file per model. Listed rather than globbed so that a stray file
# in data/ cannot silently change what the simulator reports.
READING_FILES: tuple[str, ...] = ("h100-80gb-hbm3.json",)

# Prefixes drivers put in front of a marketing name; "Tesla T4" is what NVML says for a T4.
_VENDOR_PREFIXES = ("nvidia ", "tesla ", "amd instinct ", "amd ")


@dataclass(frozen=True, slots=True)
class GpuModel:
    """One GPU model.

    ``compute_capability`` is the CUDA compute capability (``"9.0"``), ``""`` for non-CUDA GPUs (AMD).
    ``mig_max_instances`` is 0 for GPUs without MIG. ``memory_mib`` is what a device of this model reports:
    the real total where a reading from hardware exists, else ``memory_gib * 1024``. ``compute_partitions``
    and ``memory_partitions`` are the AMD partition modes the model offers (empty: none).
    """

    model: str
    vendor: str
    memory_gib: int
    compute_capability: str
    mig_max_instances: int
    memory_mib: int
    read_from_hardware: bool
    compute_partitions: tuple[str, ...] = ()
    memory_partitions: tuple[str, ...] = ()

    @property
    def mig_capable(self) -> bool:
        return self.mig_max_instances > 0


@dataclass(frozen=True, slots=True)
class _Loaded:
    models: Mapping[str, GpuModel]
    readings: Mapping[str, Mapping[str, Any]]
    # casefolded name -> canonical name, for find_model
    folded: Mapping[str, str]


def _read_json(name: str) -> dict[str, Any]:
    resource = resources.files("gridmesh.hw") / "data" / name
    try:
        data = json.loads(resource.read_bytes())
    except (OSError, ValueError) as err:
        raise HardwareError(f"packaged GPU data gridmesh/hw/data/{name} cannot be read: {err}") from err
    if not isinstance(data, dict):
        raise HardwareError(f"packaged GPU data gridmesh/hw/data/{name}: top level is not an object")
    return data


def _field(entry: Mapping[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
    value = entry.get(key, default)
    # bool is an int in Python; a catalog saying `"memory_gib": true` is a typo, not a size.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise HardwareError(f"{where}: field {key!r} must be {kind.__name__}, got {value!r}")
    return value


def _modes(entry: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    modes = _field(entry, key, list, [], where)
    if not all(isinstance(m, str) for m in modes):
        raise HardwareError(f"{where}: field {key!r} must be a list of strings, got {modes!r}")
    return tuple(modes)


def fold_model_name(name: str) -> str:
    """The form model names are compared in: case and spacing folded, vendor prefix dropped.

    Pure (no catalog needed): "NVIDIA H100 80GB HBM3", "Tesla T4" and "h100  80gb hbm3" fold to what
    the catalog's names fold to, so the scheduler can compare what hosts report with what requests ask.
    """
    return _strip_vendor(" ".join(name.split()).casefold())


def _strip_vendor(folded: str) -> str:
    for prefix in _VENDOR_PREFIXES:
        if folded.startswith(prefix):
            return folded[len(prefix) :].strip()
    return folded


@functools.cache
def _load() -> _Loaded:
    raw = _read_json(CATALOG_FILE)
    entries = raw.get("models")
    if not isinstance(entries, list):
        raise HardwareError(f"packaged GPU data gridmesh/hw/data/{CATALOG_FILE}: 'models' is not a list")

    # Readings first: they override the specification's rounded memory size.
    readings: dict[str, Mapping[str, Any]] = {}
    measured_mib: dict[str, int] = {}
    for name in READING_FILES:
        reading = _read_json(name)
        where = f"packaged GPU data gridmesh/hw/data/{name}"
        device = _field(reading, "device", dict, None, where)
        device_name = _field(device, "name", str, None, f"{where}: device")
        total = _field(device, "memory_total_bytes", int, None, f"{where}: device")
        key = _strip_vendor(device_name.casefold())
        readings[key] = MappingProxyType(reading)
        measured_mib[key] = total // 2**20

    models: dict[str, GpuModel] = {}
    folded: dict[str, str] = {}
    for position, entry in enumerate(entries):
        where = f"packaged GPU data gridmesh/hw/data/{CATALOG_FILE}: models[{position}]"
        if not isinstance(entry, dict):
            raise HardwareError(f"{where}: not an object")
        name = _field(entry, "model", str, None, where)
        memory_gib = _field(entry, "memory_gib", int, None, where)
        key = name.casefold()
        if key in folded:
            raise HardwareError(f"{where}: model {name!r} is listed twice (names are case-insensitive)")
        models[name] = GpuModel(
            model=name,
            vendor=_field(entry, "vendor", str, None, where),
            memory_gib=memory_gib,
            compute_capability=_field(entry, "compute_capability", str, "", where),
            mig_max_instances=_field(entry, "mig_max_instances", int, 0, where),
            memory_mib=measured_mib.get(key, memory_gib * 1024),
            read_from_hardware=key in measured_mib,
            compute_partitions=_modes(entry, "compute_partitions", where),
            memory_partitions=_modes(entry, "memory_partitions", where),
        )
        folded[key] = name

    readings_by_model: dict[str, Mapping[str, Any]] = {}
    for key, parsed in readings.items():
        if key not in folded:
            raise HardwareError(f"packaged GPU reading for {key!r} matches no model in {CATALOG_FILE}")
        readings_by_model[folded[key]] = parsed

    return _Loaded(
        models=MappingProxyType(models),
        readings=MappingProxyType(readings_by_model),
        folded=MappingProxyType(folded),
    )


def catalog() -> Mapping[str, GpuModel]:
    """All known GPU models by canonical name, in catalog order. Loaded once, read-only."""
    return _load().models


def known_models() -> tuple[str, ...]:
    """The canonical names of all known GPU models, in catalog order."""
    return tuple(_load().models)


def find_model(name: str) -> GpuModel | None:
    """The model called ``name``: exact, any letter case, or behind a vendor prefix; else None.

    ``find_model("h100 80gb hbm3")`` and ``find_model("NVIDIA H100 80GB HBM3")`` (what NVML reports) both
    give the ``"H100 80GB HBM3"`` entry.
    """
    loaded = _load()
    exact = loaded.models.get(name)
    if exact is not None:
        return exact
    folded = " ".join(name.split()).casefold()
    canonical = loaded.folded.get(folded) or loaded.folded.get(_strip_vendor(folded))
    return None if canonical is None else loaded.models[canonical]


def hardware_reading(name: str) -> Mapping[str, Any] | None:
    """The reading taken from a real card of this model (parsed JSON, treat as read-only), or None.

    This is the ground truth for MIG profiles and placements where one exists (H100 80GB HBM3).
    """
    model = find_model(name)
    return None if model is None else _load().readings.get(model.model)
